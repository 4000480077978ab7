/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Persistent sessions. tshost keeps each session's pty master, so the
 * shell outlives the connection that started it:
 *
 *   tshost ──fork──> leader (root): PAM session open ──fork──> shell (the user)
 *     │ master                 │ waits, then PAM session close     │ setsid, slave as ctty
 *     └── reads output into the scrollback, forwards it to the attached client
 *
 * The leader reports the shell's pid on a pipe once the PAM session is
 * open, and exits when the shell has; that exit ends the session (LOGOFF
 * to an attached client, `logoff` to the agent). Output read while no one
 * is attached stays in the scrollback and is replayed on reattach.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pty.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <security/pam_appl.h>

#include "tools/tshost/tshost.h"
#include "tsfarm/cleanup.h"
#include "tsfarm/list.h"
#include "tsfarm/log.h"

#define COOKIE_SIZE 32
#define READ_CHUNK TSF_PROTO_DATA_MAX
#define HANGUP_GRACE (5 * USEC_PER_SEC)

struct session {
        struct server *srv;
        struct session *prev, *next;
        uint32_t id;
        char user[TSHOST_USER_MAX + 1];
        char logon_name[TSHOST_USER_MAX + 1];
        uid_t uid;
        gid_t gid;
        char *home, *shell;
        pid_t leader, shell_pid;
        int master, report_fd;
        sd_event_source *master_source, *report_source, *leader_source, *kill_timer;
        struct scrollback scrollback;
        struct bytequeue input;
        struct conn *conn;     /* attached */
        struct conn *starting; /* waits for the shell to run */
        bool running;          /* the shell's pid came */
        bool ending;           /* logged off: no more reports */
        bool master_hup;       /* the slave side is gone */
        bool output_paused;    /* the client is backlogged */
        uint8_t cookie[COOKIE_SIZE];
        bool cookie_set;
        uint8_t hwid[TSF_PROTO_HWID_MAX];
        size_t hwid_len;
        char device[TSF_PROTO_DEVICE_NAME_MAX + 1];
        char client_address[INET6_ADDRSTRLEN];
};

struct session *session_find(struct server *srv, const char *user) {
        for (struct session *s = srv->sessions; s; s = s->next)
                if (!s->ending && strcmp(s->user, user) == 0)
                        return s;
        return NULL;
}

uint32_t session_id(const struct session *s) {
        return s->id;
}
pid_t session_shell_pid(const struct session *s) {
        return s->shell_pid;
}
const char *session_user(const struct session *s) {
        return s->user;
}
const char *session_logon_name(const struct session *s) {
        return s->logon_name;
}

static void session_report(struct session *s, const char *event) {
        agent_report(s->srv, event, s->user, s->id, s->device, s->client_address);
}

static struct session *session_free(struct session *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct session *, session_free);

static struct session *session_free(struct session *s) {
        if (!s)
                return NULL;
        if (s->srv) {
                LIST_REMOVE(s->srv->sessions, s);
                s->srv->n_sessions--;
        }
        sd_event_source_disable_unref(s->master_source);
        sd_event_source_disable_unref(s->report_source);
        sd_event_source_disable_unref(s->leader_source);
        sd_event_source_disable_unref(s->kill_timer);
        safe_close(s->master);
        safe_close(s->report_fd);
        scrollback_done(&s->scrollback);
        bytequeue_done(&s->input);
        explicit_bzero(s->cookie, sizeof(s->cookie));
        free(s->home);
        free(s->shell);
        free(s);
        return NULL;
}

static void session_update_io(struct session *s) {
        uint32_t events = 0;

        if (!s->master_source)
                return;
        if (s->master_hup) {
                (void)sd_event_source_set_enabled(s->master_source, SD_EVENT_OFF);
                return;
        }
        if (!s->output_paused)
                events |= EPOLLIN;
        if (bytequeue_len(&s->input) > 0)
                events |= EPOLLOUT;
        (void)sd_event_source_set_io_events(s->master_source, events);
        (void)sd_event_source_set_enabled(s->master_source, events ? SD_EVENT_ON : SD_EVENT_OFF);
}

/* Reads what the shell wrote: into the scrollback, and to the client. */
static void session_read_output(struct session *s, size_t budget) {
        uint8_t buf[READ_CHUNK];

        while (budget > 0 && !s->master_hup && !s->output_paused) {
                ssize_t n = read(s->master, buf, MIN(sizeof(buf), budget));

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN)
                        break;
                if (n <= 0) {
                        /* EIO: every slave fd is closed, the shell is gone. */
                        log_debug("Session %" PRIu32 ": pty closed (%s).", s->id,
                                  n < 0 ? strerror(errno) : "EOF");
                        s->master_hup = true;
                        break;
                }
                budget -= (size_t)n;
                scrollback_write(&s->scrollback, buf, (size_t)n);
                if (s->conn && !conn_send_terminal(s->conn, buf, (size_t)n))
                        s->output_paused = true;
        }
}

static void session_write_input(struct session *s) {
        while (bytequeue_len(&s->input) > 0) {
                ssize_t n = write(s->master, bytequeue_peek(&s->input), bytequeue_len(&s->input));

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN)
                        break;
                if (n < 0) {
                        log_debug("Session %" PRIu32 ": writing to the pty failed: %m; dropping input.",
                                  s->id);
                        bytequeue_consume(&s->input, bytequeue_len(&s->input));
                        break;
                }
                bytequeue_consume(&s->input, (size_t)n);
        }
}

static int on_master(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        struct session *s = userdata;
        struct conn *c = s->conn;
        bool was_full = session_input_full(s);

        if (revents & EPOLLOUT)
                session_write_input(s);
        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR))
                session_read_output(s, 4 * READ_CHUNK);
        session_update_io(s);
        if (c) {
                if (was_full && !session_input_full(s))
                        conn_input_drained(c);
                conn_kick(c);
        }
        return 0;
}

/* The leader's report: the shell's pid (> 0), or why it could not start. */
static int on_report(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        struct session *s = userdata;
        struct conn *c = s->starting;
        int32_t v = 0;
        ssize_t n = read(fd, &v, sizeof(v));

        if (n < 0 && errno == EAGAIN)
                return 0;
        s->report_source = sd_event_source_disable_unref(s->report_source);
        s->report_fd = safe_close(s->report_fd);
        s->starting = NULL;
        if (n == (ssize_t)sizeof(v) && v > 0) {
                s->shell_pid = v;
                s->running = true;
                log_info("Session %" PRIu32 " of %s: login shell %s running, pid %d.", s->id, s->user,
                         s->shell, (int)v);
                if (c) {
                        conn_session_started(c, s, 0);
                        conn_kick(c);
                } else {
                        /* Its client left while it started: it runs, disconnected. */
                        session_report(s, "logon");
                        session_report(s, "disconnect");
                }
                return 0;
        }
        if (n == (ssize_t)sizeof(v) && v < 0)
                log_error("Session %" PRIu32 " of %s: PAM refused to open the session: %s.", s->id, s->user,
                          pam_strerror(NULL, -v));
        else
                log_error("Session %" PRIu32 " of %s: the session leader ended before starting a shell.",
                          s->id, s->user);
        s->ending = true; /* freed when the leader is reaped */
        if (c) {
                conn_session_started(c, NULL, -EIO);
                conn_kick(c);
        }
        return 0;
}

static void session_end(struct session *s, const char *why) {
        struct conn *c = s->conn;

        if (!s->master_hup && s->master >= 0) {
                s->output_paused = false; /* the last words go out whatever the backlog */
                session_read_output(s, 16 * READ_CHUNK);
        }
        if (s->starting) {
                struct conn *st = TAKE_PTR(s->starting);

                conn_session_started(st, NULL, -EIO);
                conn_kick(st);
        }
        if (s->running && !s->ending) {
                log_info("Session %" PRIu32 " of %s ended: %s.", s->id, s->user, why);
                session_report(s, "logoff");
        }
        s->ending = true;
        s->conn = NULL;
        if (c) {
                conn_session_ended(c);
                conn_kick(c);
        }
        session_free(s);
}

static int on_leader_exit(sd_event_source *src, const siginfo_t *si, void *userdata) {
        struct session *s = userdata;

        log_debug("Session %" PRIu32 ": leader %d %s %d.", s->id, (int)si->si_pid,
                  si->si_code == CLD_EXITED ? "exited with status" : "killed by signal", si->si_status);
        s->leader_source = sd_event_source_disable_unref(s->leader_source);
        session_end(s, "the shell exited");
        return 0;
}

static int null_conv(int n, const struct pam_message **msg, struct pam_response **resp, void *appdata) {
        return PAM_CONV_ERR;
}

static void child_signals_default(void) {
        sigset_t none;

        sigemptyset(&none);
        (void)sigprocmask(SIG_SETMASK, &none, NULL);
        for (int sig = 1; sig < NSIG; sig++)
                if (sig != SIGKILL && sig != SIGSTOP)
                        (void)signal(sig, SIG_DFL);
}

static void report_and_exit(int fd, int32_t v) {
        (void)!write(fd, &v, sizeof(v));
        _exit(EXIT_FAILURE);
}

/* In the shell: the slave is fd 3. Never returns. */
_Noreturn static void shell_main(const struct session *s, const char *term, char **pam_env) {
        char *env[128];
        size_t n = 0;
        char arg0[PATH_MAX];
        const char *base = strrchr(s->shell, '/');
        char *argv[] = {arg0, NULL};
        static char e_home[PATH_MAX + 8], e_shell[PATH_MAX + 8], e_user[TSHOST_USER_MAX + 8],
                e_logname[TSHOST_USER_MAX + 16], e_term[TSF_PROTO_TERM_MAX + 8], e_path[128], e_id[64];

        if (setsid() < 0 || ioctl(3, TIOCSCTTY, 0) < 0)
                _exit(126);
        if (dup2(3, 0) < 0 || dup2(3, 1) < 0 || dup2(3, 2) < 0)
                _exit(126);
        (void)close_range(3, ~0U, 0);
        if (initgroups(s->user, s->gid) < 0 || setgid(s->gid) < 0 || setuid(s->uid) < 0)
                _exit(126);
        if (s->uid != 0 && setuid(0) == 0) /* dropping must be for good */
                _exit(126);
        if (chdir(s->home) < 0 && chdir("/") < 0)
                _exit(126);
        snprintf(e_home, sizeof(e_home), "HOME=%s", s->home);
        snprintf(e_shell, sizeof(e_shell), "SHELL=%s", s->shell);
        snprintf(e_user, sizeof(e_user), "USER=%s", s->user);
        snprintf(e_logname, sizeof(e_logname), "LOGNAME=%s", s->user);
        snprintf(e_term, sizeof(e_term), "TERM=%s", term);
        snprintf(e_path, sizeof(e_path), "PATH=%s",
                 s->uid == 0 ? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
                             : "/usr/local/bin:/usr/bin:/bin");
        snprintf(e_id, sizeof(e_id), "TSHOST_SESSION_ID=%" PRIu32, s->id);
        env[n++] = e_home;
        env[n++] = e_shell;
        env[n++] = e_user;
        env[n++] = e_logname;
        env[n++] = e_term;
        env[n++] = e_path;
        env[n++] = e_id;
        for (size_t i = 0; pam_env && pam_env[i] && n < ELEMENTSOF(env) - 1; i++)
                env[n++] = pam_env[i];
        env[n] = NULL;
        /* A login shell: argv[0] is "-" + its name. */
        snprintf(arg0, sizeof(arg0), "-%s", base ? base + 1 : s->shell);
        execve(s->shell, argv, env);
        _exit(127);
}

/* In the leader: the slave is fd 3, the report pipe fd 4. Never returns. */
_Noreturn static void leader_main(const struct session *s, const char *service, const char *tty,
                                  const char *term) {
        struct pam_conv conv = {.conv = null_conv};
        pam_handle_t *pamh = NULL;
        char **pam_env;
        pid_t shell;
        int r, status;

        r = pam_start(service, s->user, &conv, &pamh);
        if (r == PAM_SUCCESS)
                r = pam_set_item(pamh, PAM_TTY, tty);
        if (r == PAM_SUCCESS && s->client_address[0])
                r = pam_set_item(pamh, PAM_RHOST, s->client_address);
        if (r == PAM_SUCCESS)
                r = pam_setcred(pamh, PAM_ESTABLISH_CRED);
        if (r == PAM_SUCCESS)
                r = pam_open_session(pamh, 0);
        if (r != PAM_SUCCESS) {
                if (pamh)
                        pam_end(pamh, r);
                report_and_exit(4, -r);
        }
        pam_env = pam_getenvlist(pamh);

        shell = fork();
        if (shell < 0)
                report_and_exit(4, -PAM_SYSTEM_ERR);
        if (shell == 0)
                shell_main(s, term, pam_env);
        (void)close(3); /* only the shell holds the slave: its exit hangs the master up */
        int32_t v = shell;
        (void)!write(4, &v, sizeof(v));
        (void)close(4);
        while (waitpid(shell, &status, 0) < 0 && errno == EINTR)
                ;
        r = pam_close_session(pamh, 0);
        (void)pam_setcred(pamh, PAM_DELETE_CRED);
        pam_end(pamh, r);
        _exit(EXIT_SUCCESS);
}

static uint32_t session_new_id(struct server *srv) {
        for (;;) {
                uint32_t id = srv->next_session_id++;
                bool used = false;

                if (id == 0)
                        continue;
                for (struct session *s = srv->sessions; s; s = s->next)
                        used = used || s->id == id;
                if (!used)
                        return id;
        }
}

int session_start(struct server *srv, struct conn *c, const struct session_params *p, struct session **ret) {
        _cleanup_(session_freep) struct session *s = NULL;
        struct winsize ws = {.ws_row = p->rows, .ws_col = p->cols};
        struct passwd *pw;
        char tty[64];
        int slave = -1, rep[2], r;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->master = s->report_fd = -1;
        bytequeue_init(&s->input, TSHOST_IN_HARD);
        r = scrollback_init(&s->scrollback, srv->config->scrollback);
        if (r < 0)
                return r;
        snprintf(s->user, sizeof(s->user), "%s", p->user);
        snprintf(s->logon_name, sizeof(s->logon_name), "%s", p->logon_name);
        snprintf(s->device, sizeof(s->device), "%s", p->device ?: "");
        snprintf(s->client_address, sizeof(s->client_address), "%s", p->client_address ?: "");
        errno = 0;
        pw = getpwnam(p->user);
        if (!pw)
                return log_error_errno(errno > 0 ? -errno : -ENOENT, "User %s has no passwd entry: %m",
                                       p->user);
        s->uid = pw->pw_uid;
        s->gid = pw->pw_gid;
        s->home = strdup(pw->pw_dir && *pw->pw_dir ? pw->pw_dir : "/");
        s->shell = strdup(pw->pw_shell && *pw->pw_shell ? pw->pw_shell : "/bin/sh");
        if (!s->home || !s->shell)
                return -ENOMEM;
        s->id = session_new_id(srv);

        if (openpty(&s->master, &slave, tty, NULL, &ws) < 0)
                return log_error_errno(negative_errno(), "Failed to allocate a pty: %m");
        (void)fcntl(s->master, F_SETFD, FD_CLOEXEC);
        (void)fcntl(s->master, F_SETFL, O_NONBLOCK);
        if (pipe2(rep, O_CLOEXEC) < 0) {
                r = negative_errno();
                safe_close(slave);
                return log_error_errno(r, "Failed to create a pipe: %m");
        }
        s->leader = fork();
        if (s->leader < 0) {
                r = negative_errno();
                safe_close(slave);
                safe_close(rep[0]);
                safe_close(rep[1]);
                return log_error_errno(r, "Failed to fork the session leader: %m");
        }
        if (s->leader == 0) {
                int a = fcntl(slave, F_DUPFD, 10), b = fcntl(rep[1], F_DUPFD, 10);

                child_signals_default();
                if (a < 0 || b < 0 || dup2(a, 3) < 0 || dup2(b, 4) < 0)
                        _exit(EXIT_FAILURE);
                (void)close_range(5, ~0U, 0);
                leader_main(s, srv->config->pam_service, tty, p->term);
        }
        safe_close(slave);
        safe_close(rep[1]);
        s->report_fd = rep[0];
        (void)fcntl(s->report_fd, F_SETFL, O_NONBLOCK);

        r = sd_event_add_child(srv->event, &s->leader_source, s->leader, WEXITED, on_leader_exit, s);
        if (r < 0) {
                (void)kill(s->leader, SIGKILL);
                (void)waitpid(s->leader, NULL, 0);
                return log_error_errno(r, "Failed to watch the session leader: %m");
        }
        r = sd_event_add_io(srv->event, &s->report_source, s->report_fd, EPOLLIN, on_report, s);
        if (r >= 0)
                r = sd_event_add_io(srv->event, &s->master_source, s->master, EPOLLIN, on_master, s);
        if (r < 0) {
                (void)kill(s->leader, SIGKILL);
                (void)waitpid(s->leader, NULL, 0);
                s->leader_source = sd_event_source_disable_unref(s->leader_source);
                return log_error_errno(r, "Failed to watch the session's pty: %m");
        }
        s->srv = srv;
        s->starting = c;
        LIST_PREPEND(srv->sessions, s);
        srv->n_sessions++;
        log_info("Session %" PRIu32 " of %s: starting a login shell on %s.", s->id, s->user, tty);
        *ret = TAKE_PTR(s);
        return 0;
}

void session_attach(struct session *s, struct conn *c, const struct session_params *p, bool reattached) {
        struct conn *old = s->conn;
        uint8_t buf[TSF_PROTO_DATA_MAX];
        size_t off = 0, n;

        s->conn = c;
        if (old && old != c) {
                log_info("Session %" PRIu32 " of %s: taken over by a new connection.", s->id, s->user);
                conn_session_replaced(old);
                conn_kick(old);
        }
        snprintf(s->device, sizeof(s->device), "%s", p->device ?: "");
        snprintf(s->client_address, sizeof(s->client_address), "%s", p->client_address ?: "");
        if (p->hwid_len <= sizeof(s->hwid)) {
                memcpy(s->hwid, p->hwid, p->hwid_len);
                s->hwid_len = p->hwid_len;
        }
        (void)session_resize(s, p->rows, p->cols);
        if (reattached) {
                /* Replay what the shell wrote meanwhile (and before). */
                while ((n = scrollback_read(&s->scrollback, off, buf, sizeof(buf))) > 0) {
                        (void)conn_send_terminal(c, buf, n);
                        off += n;
                }
        }
        s->output_paused = !conn_output_room(c);
        session_update_io(s);
        session_report(s, reattached ? "reconnect" : "logon");
}

void session_detach(struct session *s) {
        if (!s->conn)
                return;
        s->conn = NULL;
        s->output_paused = false; /* keep reading into the scrollback */
        bytequeue_consume(&s->input, bytequeue_len(&s->input));
        session_update_io(s);
        if (!s->ending && s->running) {
                log_info("Session %" PRIu32 " of %s: disconnected; the shell keeps running.", s->id,
                         s->user);
                session_report(s, "disconnect");
        }
}

static int on_kill_timer(sd_event_source *src, uint64_t usec, void *userdata) {
        struct session *s = userdata;

        log_warning("Session %" PRIu32 " of %s: the shell did not end after SIGHUP; killing it.", s->id,
                    s->user);
        if (s->shell_pid > 0)
                (void)kill(-s->shell_pid, SIGKILL);
        (void)kill(s->leader, SIGKILL);
        s->kill_timer = sd_event_source_disable_unref(s->kill_timer);
        return 0;
}

static void session_hangup(struct session *s) {
        /* The shell's process group and the tty: as when a modem hangs up. */
        if (s->shell_pid > 0) {
                (void)kill(-s->shell_pid, SIGHUP);
                (void)kill(-s->shell_pid, SIGCONT);
        }
        s->master_source = sd_event_source_disable_unref(s->master_source);
        s->master = safe_close(s->master);
        s->master_hup = true;
        if (!s->kill_timer)
                (void)sd_event_add_time_relative(s->srv->event, &s->kill_timer, CLOCK_MONOTONIC,
                                                 HANGUP_GRACE, 0, on_kill_timer, s);
}

void session_logoff(struct session *s, const char *why) {
        if (s->ending)
                return;
        log_info("Session %" PRIu32 " of %s: logged off (%s).", s->id, s->user, why);
        s->conn = NULL;
        if (s->running)
                session_report(s, "logoff");
        s->ending = true;
        session_hangup(s);
}

void session_forget_conn(struct session *s, struct conn *c) {
        if (s->starting == c)
                s->starting = NULL;
        if (s->conn == c)
                session_detach(s);
}

bool session_input_full(const struct session *s) {
        return bytequeue_len(&s->input) >= TSHOST_IN_SOFT;
}

int session_input(struct session *s, const uint8_t *data, size_t len) {
        int r;

        if (s->master < 0 || s->master_hup)
                return 0; /* the shell is gone; its end is on the way */
        r = bytequeue_append(&s->input, data, len);
        if (r < 0)
                return r;
        session_write_input(s);
        session_update_io(s);
        return 0;
}

int session_resize(struct session *s, uint16_t rows, uint16_t cols) {
        struct winsize ws = {.ws_row = rows, .ws_col = cols};

        if (s->master < 0)
                return 0;
        if (ioctl(s->master, TIOCSWINSZ, &ws) < 0)
                return log_debug_errno(negative_errno(), "Session %" PRIu32 ": TIOCSWINSZ failed: %m",
                                       s->id);
        return 0;
}

void session_output_resume(struct session *s) {
        if (!s->output_paused)
                return;
        s->output_paused = false;
        session_read_output(s, 4 * READ_CHUNK);
        session_update_io(s);
}

void session_new_cookie(struct session *s, uint8_t *buf, size_t len) {
        if (len != COOKIE_SIZE || getrandom(s->cookie, sizeof(s->cookie), 0) != (ssize_t)sizeof(s->cookie)) {
                s->cookie_set = false;
                return;
        }
        memcpy(buf, s->cookie, len);
        s->cookie_set = true;
}

struct session *session_claim_cookie(struct server *srv, const char *user, const uint8_t *cookie, size_t len,
                                     const uint8_t *hwid, size_t hwid_len) {
        for (struct session *s = srv->sessions; s; s = s->next) {
                if (s->ending || !s->running || !s->cookie_set)
                        continue;
                if (strcmp(s->logon_name, user) != 0 && strcmp(s->user, user) != 0)
                        continue;
                if (len != COOKIE_SIZE || hwid_len != s->hwid_len ||
                    CRYPTO_memcmp(cookie, s->cookie, COOKIE_SIZE) != 0 ||
                    CRYPTO_memcmp(hwid, s->hwid, hwid_len) != 0)
                        continue;
                /* One use. */
                explicit_bzero(s->cookie, sizeof(s->cookie));
                s->cookie_set = false;
                return s;
        }
        return NULL;
}

void sessions_hangup_all(struct server *srv) {
        for (struct session *s = srv->sessions; s; s = s->next)
                if (!s->ending)
                        session_logoff(s, "tshost is shutting down");
}

void sessions_free(struct server *srv) {
        while (srv->sessions) {
                struct session *s = srv->sessions;

                if (s->shell_pid > 0)
                        (void)kill(-s->shell_pid, SIGKILL);
                if (s->leader > 0 && s->leader_source) {
                        (void)kill(s->leader, SIGKILL);
                        (void)waitpid(s->leader, NULL, 0);
                }
                session_free(s);
        }
}
