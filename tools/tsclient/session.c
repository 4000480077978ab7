/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The attached session: the terminal's output to stdout, input from the
 * keyboard (raw mode, SIGWINCH -> WINDOW_SIZE, "~." after a newline to
 * disconnect, as ssh), from stdin's bytes, or from a script with
 * expectations. Keepalives both ways (docs/protocol.md 5.11).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <unistd.h>

#include "tsfarm/cleanup.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"
#include "tsclient.h"

#define MATCH_WINDOW (64 * 1024) /* output kept for expectations */
#define EXPECT_TIMEOUT_DEFAULT (10 * USEC_PER_SEC)

struct sess {
        struct tsc_conn *conn;
        struct tsc_result *res;
        bool quiet;
        bool out_nl; /* the last byte written to stdout was a newline (or none was written) */
        char *match; /* output since the last matched expectation */
        size_t match_len;
        bool ended; /* the server ended it (LOGOFF) */
};

static void write_stdout(struct sess *s, const uint8_t *p, size_t len) {
        if (s->quiet || len == 0)
                return;
        fwrite(p, 1, len, stdout);
        fflush(stdout);
        s->out_nl = p[len - 1] == '\n';
}

static void keep_for_match(struct sess *s, const uint8_t *p, size_t len) {
        if (len >= MATCH_WINDOW) {
                p += len - MATCH_WINDOW;
                len = MATCH_WINDOW;
        }
        if (s->match_len + len > MATCH_WINDOW) {
                size_t drop = s->match_len + len - MATCH_WINDOW;

                memmove(s->match, s->match + drop, s->match_len - drop);
                s->match_len -= drop;
        }
        memcpy(s->match + s->match_len, p, len);
        s->match_len += len;
}

static int send_pdu(struct sess *s, const struct tsf_pdu *pdu) {
        return tsc_conn_send(s->conn, pdu, tsf_now_monotonic() + 10 * USEC_PER_SEC);
}

static int send_data(struct sess *s, const void *data, size_t len) {
        const uint8_t *p = data;

        while (len > 0) {
                struct tsf_pdu pdu;
                size_t n = MIN(len, (size_t)TSF_PROTO_DATA_MAX);
                int r;

                tsf_pdu_init(&pdu, TSF_PDU_TERMINAL_DATA);
                pdu.terminal_data.data = p;
                pdu.terminal_data.len = n;
                r = send_pdu(s, &pdu);
                if (r < 0)
                        return r;
                p += n;
                len -= n;
        }
        return 0;
}

static int send_window(struct sess *s, uint16_t rows, uint16_t cols) {
        struct tsf_pdu pdu;

        tsf_pdu_init(&pdu, TSF_PDU_WINDOW_SIZE);
        pdu.window_size.rows = rows;
        pdu.window_size.cols = cols;
        return send_pdu(s, &pdu);
}

/* What the session is lost to; sets the result's text. */
static int lost(struct sess *s, int r, const struct tsf_pdu *pdu) {
        char b[16];

        s->res->outcome = TSC_LOST;
        s->res->error = r < 0 ? r : -ECONNRESET;
        if (r >= 0) {
                const char *name = tsf_proto_reason_to_string(pdu->disconnect.reason);

                if (!name)
                        snprintf(b, sizeof(b), "0x%04x", pdu->disconnect.reason), name = b;
                snprintf(s->res->error_text, sizeof(s->res->error_text), "the server sent %s %s%s%s",
                         tsf_pdu_type_to_string(pdu->type), name, pdu->disconnect.reason_text[0] ? ": " : "",
                         pdu->disconnect.reason_text);
                s->res->end = pdu->type == TSF_PDU_DISCONNECT ? "disconnected-by-server" : "error";
        } else {
                snprintf(s->res->error_text, sizeof(s->res->error_text), "connection lost: %s",
                         r == -ETIMEDOUT ? "the server is silent" : strerror(-r));
                s->res->end = "lost";
        }
        return -ECONNRESET;
}

/* Receives, keeping the keepalive going: with deadline 0 everything that
 * is buffered or readable now, else until the first terminal output or the
 * deadline. Returns 0 (deadline, or nothing more now), 2 (output arrived),
 * 1 when the server logged the session off, or -ECONNRESET (res says why). */
static int pump(struct sess *s, usec_t deadline) {
        for (;;) {
                usec_t now = tsf_now_monotonic(), wake = deadline;
                struct tsf_pdu pdu;
                int r;

                if (now - tsc_conn_last_recv(s->conn) >= TSC_PEER_SILENT)
                        return lost(s, -ETIMEDOUT, NULL);
                if (now - tsc_conn_last_send(s->conn) >= TSC_KEEPALIVE_INTERVAL) {
                        tsf_pdu_init(&pdu, TSF_PDU_KEEPALIVE);
                        pdu.keepalive.echo = now;
                        r = send_pdu(s, &pdu);
                        if (r < 0)
                                return lost(s, r, NULL);
                }
                if (wake != 0)
                        wake = MIN(wake, tsc_conn_last_send(s->conn) + TSC_KEEPALIVE_INTERVAL);
                r = tsc_conn_recv(s->conn, &pdu, wake);
                if (r == -EAGAIN)
                        return 0;
                if (r == -ETIMEDOUT) {
                        if (tsf_now_monotonic() >= deadline)
                                return 0;
                        continue;
                }
                if (r < 0)
                        return lost(s, r, NULL);
                switch (pdu.type) {
                case TSF_PDU_TERMINAL_DATA:
                        write_stdout(s, pdu.terminal_data.data, pdu.terminal_data.len);
                        keep_for_match(s, pdu.terminal_data.data, pdu.terminal_data.len);
                        if (deadline != 0)
                                return 2;
                        break;
                case TSF_PDU_LOGOFF:
                        s->ended = true;
                        s->res->end = "logoff-by-server";
                        return 1;
                default: /* DISCONNECT, ERROR: the table allows nothing else */
                        return lost(s, 0, &pdu);
                }
        }
}

int tsc_session_end(struct tsc_conn *conn, enum tsc_end end, usec_t deadline) {
        struct tsf_pdu pdu;
        int r = 0;

        switch (end) {
        case TSC_END_DROP:
                tsc_conn_close(conn, false);
                return 0;
        case TSC_END_DISCONNECT:
                tsf_pdu_init(&pdu, TSF_PDU_DISCONNECT);
                pdu.disconnect.reason = TSF_REASON_USER_REQUEST;
                r = tsc_conn_send(conn, &pdu, deadline);
                break;
        case TSC_END_LOGOFF:
                tsf_pdu_init(&pdu, TSF_PDU_LOGOFF);
                r = tsc_conn_send(conn, &pdu, deadline);
                /* The server answers LOGOFF and closes; output may come first. */
                while (r >= 0) {
                        r = tsc_conn_recv(conn, &pdu, deadline);
                        if (r >= 0 && pdu.type != TSF_PDU_TERMINAL_DATA)
                                break;
                }
                if (r >= 0 && pdu.type != TSF_PDU_LOGOFF)
                        r = -ECONNRESET;
                if (r == -ECONNRESET && pdu.type == TSF_PDU_LOGOFF)
                        r = 0;
                break;
        }
        tsc_conn_close(conn, true);
        return r < 0 ? r : 0;
}

static const char *end_name(enum tsc_end end) {
        return end == TSC_END_LOGOFF ? "logoff" : end == TSC_END_DROP ? "drop" : "disconnect";
}

static enum tsc_outcome finish(struct sess *s, enum tsc_end end) {
        int r;

        if (s->ended) {
                tsc_conn_close(s->conn, true);
                return s->res->outcome;
        }
        s->res->end = end_name(end);
        r = tsc_session_end(s->conn, end, tsf_now_monotonic() + 10 * USEC_PER_SEC);
        if (r < 0 && s->res->outcome == TSC_OK) {
                s->res->outcome = TSC_LOST;
                s->res->error = r;
                snprintf(s->res->error_text, sizeof(s->res->error_text), "%s failed: %s", end_name(end),
                         strerror(-r));
        }
        return s->res->outcome;
}

/* ---- scripts --------------------------------------------------------------- */

static int read_all(const char *path, char **ret) {
        _cleanup_fclose_ FILE *f = NULL;
        _cleanup_free_ char *buf = NULL;
        size_t len = 0, size = 0;

        f = streq_ptr(path, "-") ? fdopen(dup(STDIN_FILENO), "r") : fopen(path, "re");
        if (!f)
                return negative_errno();
        for (;;) {
                size_t n;

                if (size - len < 4096) {
                        char *b;

                        if (size > 1024 * 1024)
                                return -EFBIG;
                        b = realloc(buf, size + 65536);
                        if (!b)
                                return -ENOMEM;
                        buf = b;
                        size += 65536;
                }
                n = fread(buf + len, 1, size - len - 1, f);
                if (n == 0)
                        break;
                len += n;
        }
        if (ferror(f))
                return -EIO;
        buf[len] = '\0';
        if (strlen(buf) != len)
                return -EBADMSG;
        *ret = TAKE_PTR(buf);
        return 0;
}

static enum tsc_outcome run_script(struct sess *s, const struct tsc_session_opts *o) {
        _cleanup_free_ char *text = NULL;
        struct tsc_script script = {};
        usec_t expect_timeout = o->expect_timeout ?: EXPECT_TIMEOUT_DEFAULT;
        enum tsc_end end = o->end;
        unsigned bad = 0;
        int r;

        r = read_all(o->script, &text);
        if (r >= 0)
                r = tsc_script_parse(text, &script, &bad);
        if (r < 0) {
                s->res->outcome = TSC_LOCAL;
                s->res->error = r;
                if (bad)
                        snprintf(s->res->error_text, sizeof(s->res->error_text), "%s:%u: not a script line",
                                 o->script, bad);
                else
                        snprintf(s->res->error_text, sizeof(s->res->error_text),
                                 "cannot read the script %s: %s", o->script, strerror(-r));
                return finish(s, TSC_END_DISCONNECT);
        }

        for (size_t i = 0; i < script.n_steps && s->res->outcome == TSC_OK; i++) {
                const struct tsc_script_step *st = &script.steps[i];
                usec_t deadline;
                char *hit;

                /* The server logged the session off (the shell exited):
                 * what is left of the script can only be an expectation
                 * met by output already here, a sleep, or the end. */
                if (s->ended && (st->op == TSC_SCRIPT_SEND || st->op == TSC_SCRIPT_WINDOW)) {
                        s->res->outcome = TSC_SCRIPT_FAILED;
                        s->res->error = -ECONNRESET;
                        snprintf(s->res->error_text, sizeof(s->res->error_text),
                                 "%s:%u: the server ended the session before this line", o->script,
                                 st->line);
                        break;
                }
                switch (st->op) {
                case TSC_SCRIPT_SEND:
                        r = pump(s, 0);
                        if (r == 0)
                                r = send_data(s, st->text, st->len);
                        if (r < 0 && s->res->outcome == TSC_OK)
                                lost(s, r, NULL);
                        break;
                case TSC_SCRIPT_WINDOW:
                        r = send_window(s, st->rows, st->cols);
                        if (r < 0)
                                lost(s, r, NULL);
                        break;
                case TSC_SCRIPT_TIMEOUT:
                        expect_timeout = st->usec;
                        break;
                case TSC_SCRIPT_SLEEP:
                        deadline = tsf_now_monotonic() + st->usec;
                        do
                                r = s->ended ? 0 : pump(s, deadline);
                        while (r == 2);
                        break;
                case TSC_SCRIPT_EXPECT:
                        deadline = tsf_now_monotonic() + expect_timeout;
                        for (;;) {
                                hit = memmem(s->match, s->match_len, st->text, st->len);
                                if (hit) {
                                        size_t used = (size_t)(hit - s->match) + st->len;

                                        memmove(s->match, s->match + used, s->match_len - used);
                                        s->match_len -= used;
                                        break;
                                }
                                if (tsf_now_monotonic() >= deadline || s->ended) {
                                        s->res->outcome = TSC_SCRIPT_FAILED;
                                        s->res->error = -ETIMEDOUT;
                                        snprintf(s->res->error_text, sizeof(s->res->error_text),
                                                 "%s:%u: expected \"%s\", %s", o->script, st->line, st->text,
                                                 s->ended ? "but the server ended the session"
                                                          : "not seen in time");
                                        break;
                                }
                                r = pump(s, deadline);
                                if (r < 0)
                                        break;
                        }
                        break;
                case TSC_SCRIPT_END:
                        end = st->end;
                        i = script.n_steps - 1; /* stop here */
                        break;
                }
        }
        tsc_script_done(&script);
        if (s->res->outcome == TSC_LOST) {
                tsc_conn_close(s->conn, false);
                return TSC_LOST;
        }
        if (s->res->outcome == TSC_SCRIPT_FAILED) {
                enum tsc_outcome failed = s->res->outcome;

                (void)finish(s, TSC_END_DISCONNECT); /* the session stays for a look */
                s->res->outcome = failed;
                return failed;
        }
        return finish(s, end);
}

/* ---- interactive and piped input ------------------------------------------ */

static struct termios saved_tio;
static bool tio_saved;

static void tty_restore(void) {
        if (tio_saved)
                (void)tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_tio);
        tio_saved = false;
}

static int tty_raw(void) {
        struct termios t;

        if (tcgetattr(STDIN_FILENO, &saved_tio) < 0)
                return negative_errno();
        tio_saved = true;
        t = saved_tio;
        cfmakeraw(&t);
        if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &t) < 0)
                return negative_errno();
        return 0;
}

/* The ssh-style escape: "~." at the start of a line disconnects, "~~"
 * sends one "~". Returns true when the user asked to disconnect; the bytes
 * to send are written to out (at most 2 * len). */
static bool escape_filter(const uint8_t *in, size_t len, uint8_t *out, size_t *out_len, bool *line_start,
                          bool *tilde) {
        size_t n = 0;

        for (size_t i = 0; i < len; i++) {
                uint8_t c = in[i];

                if (*tilde) {
                        *tilde = false;
                        if (c == '.') {
                                *out_len = n;
                                return true;
                        }
                        if (c != '~')
                                out[n++] = '~';
                        out[n++] = c;
                } else if (*line_start && c == '~') {
                        *tilde = true;
                        continue;
                } else
                        out[n++] = c;
                *line_start = c == '\r' || c == '\n';
        }
        *out_len = n;
        return false;
}

static enum tsc_outcome run_input(struct sess *s, const struct tsc_session_opts *o) {
        bool tty = isatty(STDIN_FILENO), line_start = true, tilde = false, input_open = true;
        _cleanup_close_ int sfd = -1;
        sigset_t mask;
        int r;

        sigemptyset(&mask);
        sigaddset(&mask, SIGWINCH);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGHUP);
        sigaddset(&mask, SIGINT);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0 ||
            (sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK)) < 0) {
                s->res->outcome = TSC_LOCAL;
                s->res->error = negative_errno();
                snprintf(s->res->error_text, sizeof(s->res->error_text), "cannot set up signals");
                return finish(s, TSC_END_DISCONNECT);
        }
        if (tty) {
                r = tty_raw();
                if (r < 0)
                        log_warning_errno(r, "Cannot put the terminal into raw mode, ignoring: %m");
                else
                        atexit(tty_restore);
        }

        for (;;) {
                struct pollfd p[3] = {
                        {.fd = tsc_conn_fd(s->conn), .events = POLLIN},
                        {.fd = sfd, .events = POLLIN},
                        {.fd = input_open ? STDIN_FILENO : -1, .events = POLLIN},
                };
                usec_t now = tsf_now_monotonic();
                usec_t next = tsc_conn_last_send(s->conn) + TSC_KEEPALIVE_INTERVAL;
                int timeout = next > now ? (int)((next - now) / USEC_PER_MSEC) + 1 : 0;

                if (tsc_conn_pending(s->conn))
                        timeout = 0;
                r = poll(p, 3, timeout);
                if (r < 0 && errno != EINTR) {
                        r = negative_errno();
                        lost(s, r, NULL);
                        break;
                }
                /* Output, keepalives, the server's LOGOFF or DISCONNECT. */
                r = pump(s, 0);
                if (r != 0)
                        break;
                if (p[1].revents & POLLIN) {
                        struct signalfd_siginfo si;

                        while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
                                struct winsize ws;

                                if (si.ssi_signo == SIGWINCH) {
                                        if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 &&
                                            ws.ws_col > 0 && ws.ws_row <= TSF_PROTO_DIMENSION_MAX &&
                                            ws.ws_col <= TSF_PROTO_DIMENSION_MAX)
                                                (void)send_window(s, ws.ws_row, ws.ws_col);
                                } else {
                                        tty_restore();
                                        return finish(s, o->end);
                                }
                        }
                }
                if (p[2].revents & (POLLIN | POLLHUP)) {
                        uint8_t in[4096], out[8192];
                        size_t n_out = 0;
                        ssize_t n = read(STDIN_FILENO, in, sizeof(in));

                        if (n < 0 && errno != EINTR && errno != EAGAIN)
                                n = 0;
                        if (n == 0) {
                                /* End of input: end the session as asked. */
                                input_open = false;
                                tty_restore();
                                return finish(s, o->end);
                        }
                        if (n > 0) {
                                bool quit = tty &&
                                            escape_filter(in, (size_t)n, out, &n_out, &line_start, &tilde);

                                if (!tty) {
                                        memcpy(out, in, (size_t)n);
                                        n_out = (size_t)n;
                                }
                                if (n_out > 0 && send_data(s, out, n_out) < 0) {
                                        lost(s, -ECONNRESET, NULL);
                                        break;
                                }
                                if (quit) {
                                        tty_restore();
                                        fputs("\r\n[tsclient: disconnected]\r\n", stderr);
                                        return finish(s, TSC_END_DISCONNECT);
                                }
                        }
                }
        }
        tty_restore();
        if (s->ended) {
                tsc_conn_close(s->conn, true);
                return s->res->outcome;
        }
        tsc_conn_close(s->conn, false);
        return s->res->outcome;
}

enum tsc_outcome tsc_session_run(struct tsc_conn *conn, const struct tsc_session_opts *o,
                                 struct tsc_result *res) {
        _cleanup_free_ char *match = malloc(MATCH_WINDOW);
        struct sess s = {.conn = conn, .res = res, .quiet = o->quiet, .out_nl = true, .match = match};
        enum tsc_outcome r;

        if (!match) {
                tsc_conn_close(conn, false);
                res->outcome = TSC_LOCAL;
                res->error = -ENOMEM;
                snprintf(res->error_text, sizeof(res->error_text), "out of memory");
                return TSC_LOCAL;
        }
        r = o->script ? run_script(&s, o) : run_input(&s, o);
        if (!s.out_nl && !o->quiet) {
                fputc('\n', stdout);
                fflush(stdout);
        }
        return r;
}
