/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Scripts of input and expectations (docs/tsclient.md "Scripts"):
 *
 *   # a comment; blank lines are ignored
 *   send TEXT          TEXT and a newline ("\n")
 *   sendraw TEXT       TEXT alone
 *   expect TEXT        wait until the output since the last match holds TEXT
 *   timeout DURATION   deadline of the expects that follow (default 10s)
 *   sleep DURATION
 *   window ROWS COLS   a WINDOW_SIZE
 *   disconnect | drop | logoff    end the session that way, now
 *
 * TEXT runs to the end of the line; escapes: \n \r \t \e \\ \xHH.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tsfarm/cleanup.h"
#include "tsfarm/macro.h"
#include "tsclient.h"

static int hexval(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

/* Decodes escapes of s[0..len) into a new NUL-terminated buffer; the
 * result may hold NULs (\x00), so its length is returned in *ret_len. */
static int unescape(const char *s, size_t len, bool newline, char **ret, size_t *ret_len) {
        _cleanup_free_ char *out = malloc(len + 2);
        size_t n = 0;

        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < len; i++) {
                if (s[i] != '\\') {
                        out[n++] = s[i];
                        continue;
                }
                if (++i >= len)
                        return -EINVAL;
                switch (s[i]) {
                case 'n':
                        out[n++] = '\n';
                        break;
                case 'r':
                        out[n++] = '\r';
                        break;
                case 't':
                        out[n++] = '\t';
                        break;
                case 'e':
                        out[n++] = '\033';
                        break;
                case '\\':
                        out[n++] = '\\';
                        break;
                case 'x':
                        if (i + 2 >= len || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0)
                                return -EINVAL;
                        out[n++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
                        i += 2;
                        break;
                default:
                        return -EINVAL;
                }
        }
        if (newline)
                out[n++] = '\n';
        out[n] = '\0';
        *ret_len = n;
        *ret = TAKE_PTR(out);
        return 0;
}

static int parse_u16(const char *s, uint16_t min, uint16_t max, uint16_t *ret) {
        char *end;
        unsigned long v;

        if (!s || *s < '0' || *s > '9')
                return -EINVAL;
        errno = 0;
        v = strtoul(s, &end, 10);
        if (errno || *end || v < min || v > max)
                return -EINVAL;
        *ret = (uint16_t)v;
        return 0;
}

static int parse_line(const char *line, size_t len, struct tsc_script_step *st) {
        char word[16], rest[64];
        size_t w = 0;
        const char *arg;
        size_t arg_len;

        while (w < len && line[w] != ' ')
                w++;
        if (w == 0 || w >= sizeof(word))
                return -EINVAL;
        memcpy(word, line, w);
        word[w] = '\0';
        arg = w < len ? line + w + 1 : line + len;
        arg_len = w < len ? len - w - 1 : 0;

        if (streq_ptr(word, "send") || streq_ptr(word, "sendraw") || streq_ptr(word, "expect")) {
                st->op = streq_ptr(word, "expect") ? TSC_SCRIPT_EXPECT : TSC_SCRIPT_SEND;
                if (arg_len == 0 && !streq_ptr(word, "send"))
                        return -EINVAL;
                return unescape(arg, arg_len, streq_ptr(word, "send"), &st->text, &st->len);
        }
        if (arg_len >= sizeof(rest))
                return -EINVAL;
        memcpy(rest, arg, arg_len);
        rest[arg_len] = '\0';
        if (streq_ptr(word, "timeout") || streq_ptr(word, "sleep")) {
                st->op = streq_ptr(word, "sleep") ? TSC_SCRIPT_SLEEP : TSC_SCRIPT_TIMEOUT;
                return tsf_parse_duration(rest, &st->usec) < 0 ? -EINVAL : 0;
        }
        if (streq_ptr(word, "window")) {
                char *sp = strchr(rest, ' ');

                st->op = TSC_SCRIPT_WINDOW;
                if (!sp)
                        return -EINVAL;
                *sp = '\0';
                if (parse_u16(rest, 1, TSF_PROTO_DIMENSION_MAX, &st->rows) < 0 ||
                    parse_u16(sp + 1, 1, TSF_PROTO_DIMENSION_MAX, &st->cols) < 0)
                        return -EINVAL;
                return 0;
        }
        if (arg_len > 0)
                return -EINVAL;
        st->op = TSC_SCRIPT_END;
        if (streq_ptr(word, "disconnect"))
                st->end = TSC_END_DISCONNECT;
        else if (streq_ptr(word, "drop"))
                st->end = TSC_END_DROP;
        else if (streq_ptr(word, "logoff"))
                st->end = TSC_END_LOGOFF;
        else
                return -EINVAL;
        return 0;
}

int tsc_script_parse(const char *text, struct tsc_script *ret, unsigned *bad_line) {
        struct tsc_script s = {};
        unsigned line = 0;
        int r;

        for (const char *p = text; *p;) {
                const char *nl = strchrnul(p, '\n');
                size_t len = (size_t)(nl - p);
                struct tsc_script_step *steps;

                line++;
                if (len > 0 && p[len - 1] == '\r')
                        len--;
                if (len > 0 && p[0] != '#') {
                        steps = realloc(s.steps, (s.n_steps + 1) * sizeof(*steps));
                        if (!steps) {
                                tsc_script_done(&s);
                                return -ENOMEM;
                        }
                        s.steps = steps;
                        s.steps[s.n_steps] = (struct tsc_script_step){.line = line};
                        r = parse_line(p, len, &s.steps[s.n_steps]);
                        s.n_steps++;
                        if (r < 0) {
                                if (bad_line)
                                        *bad_line = line;
                                tsc_script_done(&s);
                                return r;
                        }
                }
                p = *nl ? nl + 1 : nl;
        }
        *ret = s;
        return 0;
}

void tsc_script_done(struct tsc_script *s) {
        for (size_t i = 0; i < s->n_steps; i++)
                free(s->steps[i].text);
        free(s->steps);
        *s = (struct tsc_script){};
}
