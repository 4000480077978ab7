/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <ini.h>

#include "tsfarm/cleanup.h"
#include "tsfarm/clock.h"
#include "tsfarm/config.h"
#include "tsfarm/log.h"

struct parse_state {
        const struct tsf_config_spec *spec;
        void *data;
        bool *seen; /* one per item: a scalar key set twice is a mistake */
        char *err;  /* first error, without the file:line prefix */
        size_t err_size;
        bool failed;
        int failed_line;
        /* The text, fed to inih line by line so we know which line the
         * handler is looking at (inih only reports the first bad line). */
        const char *next;
        int line;
};

static char *ini_reader_cb(char *buf, int size, void *stream) {
        struct parse_state *st = stream;
        size_t n = 0;

        if (!*st->next)
                return NULL;
        while (st->next[n] && st->next[n] != '\n' && n + 2 < (size_t)size)
                n++;
        if (st->next[n] == '\n')
                n++;
        memcpy(buf, st->next, n);
        buf[n] = '\0';
        st->next += n;
        st->line++;
        return buf;
}

static int state_fail(struct parse_state *st, const char *section, const char *key, const char *reason) {
        if (!st->failed) {
                snprintf(st->err, st->err_size, "[%s] %s: %s", section, key, reason);
                st->failed = true;
                st->failed_line = st->line;
        }
        return 0; /* inih: 0 stops nothing but records this line as the error */
}

static int ini_handler_cb(void *user, const char *section, const char *key, const char *value) {
        struct parse_state *st = user;
        char reason[256] = "";
        int r;

        if (st->failed)
                return 1; /* report only the first error; later lines are moot */
        if (!section[0])
                return state_fail(st, section, key, "key outside any [section]");

        for (size_t i = 0; i < st->spec->n_items; i++) {
                const struct tsf_config_item *it = &st->spec->items[i];

                if (strcmp(it->section, section) != 0 || strcmp(it->key, key) != 0)
                        continue;
                if (st->seen[i] && it->parse != tsf_config_parse_strv)
                        return state_fail(st, section, key, "set more than once");
                st->seen[i] = true;
                r = it->parse(it, value, st->data, reason, sizeof(reason));
                if (r < 0)
                        return state_fail(st, section, key, reason[0] ? reason : strerror(-r));
                return 1;
        }

        if (st->spec->fallback) {
                r = st->spec->fallback(st->data, section, key, value, reason, sizeof(reason));
                if (r >= 0)
                        return 1;
                if (r != -ENOENT)
                        return state_fail(st, section, key, reason[0] ? reason : strerror(-r));
        }
        return state_fail(st, section, key, "unknown key (misspelt, or in the wrong section?)");
}

/* The first line longer than inih's buffer, or 0. */
static unsigned long first_long_line(const char *text) {
        unsigned long line = 1;
        size_t len = 0;

        for (const char *p = text; *p; p++) {
                if (*p == '\n') {
                        line++;
                        len = 0;
                } else if (++len > TSF_CONFIG_LINE_MAX) {
                        return line;
                }
        }
        return 0;
}

int tsf_config_load_string(const char *text, const char *name, const struct tsf_config_spec *spec,
                           void *data, char *err, size_t err_size) {
        _cleanup_free_ bool *seen = NULL;
        char reason[TSF_CONFIG_ERROR_MAX] = "";
        struct parse_state st;
        unsigned long long_line;
        int line;

        seen = calloc(spec->n_items ? spec->n_items : 1, sizeof(bool));
        if (!seen)
                return -ENOMEM;

        long_line = first_long_line(text);
        if (long_line > 0) {
                snprintf(err, err_size, "%s:%lu: line longer than %d characters", name, long_line,
                         TSF_CONFIG_LINE_MAX);
                return -EINVAL;
        }

        st = (struct parse_state){
                .spec = spec,
                .data = data,
                .seen = seen,
                .err = reason,
                .err_size = sizeof(reason),
                .next = text,
        };
        line = ini_parse_stream(ini_reader_cb, &st, ini_handler_cb, &st);
        if (line < 0) {
                snprintf(err, err_size, "%s: cannot parse (inih error %d)", name, line);
                return -ENOMEM;
        }
        if (line > 0) {
                if (st.failed && st.failed_line == line)
                        snprintf(err, err_size, "%s:%d: %s", name, line, reason);
                else
                        snprintf(err, err_size, "%s:%d: syntax error (expected [section] or key = value)",
                                 name, line);
                return -EINVAL;
        }
        return 0;
}

int tsf_config_load_file(const char *path, const struct tsf_config_spec *spec, void *data, char *err,
                         size_t err_size) {
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *text = NULL;
        struct stat st;
        size_t have = 0;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
                int r = negative_errno();
                snprintf(err, err_size, "%s: %s", path, strerror(-r));
                return r;
        }
        if (fstat(fd, &st) < 0) {
                int r = negative_errno();
                snprintf(err, err_size, "%s: %s", path, strerror(-r));
                return r;
        }
        if (!S_ISREG(st.st_mode)) {
                snprintf(err, err_size, "%s: not a regular file", path);
                return -EINVAL;
        }
        if (st.st_size > TSF_CONFIG_FILE_MAX) {
                snprintf(err, err_size, "%s: larger than %d bytes", path, TSF_CONFIG_FILE_MAX);
                return -EFBIG;
        }
        text = malloc((size_t)st.st_size + 1);
        if (!text)
                return -ENOMEM;
        while (have < (size_t)st.st_size) {
                ssize_t n = read(fd, text + have, (size_t)st.st_size - have);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        int r = negative_errno();
                        snprintf(err, err_size, "%s: %s", path, strerror(-r));
                        return r;
                }
                if (n == 0)
                        break; /* shrank while we read: parse what is there */
                have += (size_t)n;
        }
        text[have] = '\0';
        if (memchr(text, '\0', have)) {
                snprintf(err, err_size, "%s: contains a NUL byte, not a text file", path);
                return -EINVAL;
        }
        log_debug("Parsing configuration %s (%zu bytes).", path, have);
        return tsf_config_load_string(text, path, spec, data, err, err_size);
}

#define FIELD(item, data, type) ((type *)((char *)(data) + (item)->offset))

int tsf_parse_boolean(const char *s) {
        static const char *const yes[] = {"1", "yes", "y", "true", "t", "on"};
        static const char *const no[] = {"0", "no", "n", "false", "f", "off"};

        for (size_t i = 0; i < ELEMENTSOF(yes); i++) {
                if (strcasecmp(s, yes[i]) == 0)
                        return 1;
                if (strcasecmp(s, no[i]) == 0)
                        return 0;
        }
        return -EINVAL;
}

int tsf_parse_u64(const char *s, uint64_t *ret) {
        uint64_t v = 0;

        if (!s || !*s)
                return -EINVAL;
        for (const char *p = s; *p; p++) {
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
                        return -ERANGE;
                v = v * 10 + (uint64_t)(*p - '0');
        }
        *ret = v;
        return 0;
}

int tsf_config_parse_string(const struct tsf_config_item *item, const char *value, void *data, char *err,
                            size_t err_size) {
        char **field = FIELD(item, data, char *);
        char *copy = strdup(value);

        if (!copy)
                return -ENOMEM;
        free(*field);
        *field = copy;
        return 0;
}

int tsf_config_parse_path(const struct tsf_config_item *item, const char *value, void *data, char *err,
                          size_t err_size) {
        if (value[0] != '/') {
                snprintf(err, err_size, "'%s' is not an absolute path", value);
                return -EINVAL;
        }
        return tsf_config_parse_string(item, value, data, err, err_size);
}

int tsf_config_parse_bool(const struct tsf_config_item *item, const char *value, void *data, char *err,
                          size_t err_size) {
        int b = tsf_parse_boolean(value);

        if (b < 0) {
                snprintf(err, err_size, "'%s' is not a boolean (yes/no, true/false, on/off, 1/0)", value);
                return -EINVAL;
        }
        *FIELD(item, data, bool) = b;
        return 0;
}

static int parse_ranged(const struct tsf_config_item *item, const char *value, uint64_t type_max,
                        uint64_t *ret, char *err, size_t err_size) {
        uint64_t lo = item->min, hi = item->max ? item->max : type_max, v;
        int r;

        r = tsf_parse_u64(value, &v);
        if (r < 0 || v < lo || v > hi) {
                snprintf(err, err_size, "'%s' is not a number in %llu..%llu", value, (unsigned long long)lo,
                         (unsigned long long)hi);
                return r < 0 ? r : -ERANGE;
        }
        *ret = v;
        return 0;
}

int tsf_config_parse_uint(const struct tsf_config_item *item, const char *value, void *data, char *err,
                          size_t err_size) {
        uint64_t v;
        int r = parse_ranged(item, value, UINT32_MAX, &v, err, err_size);

        if (r < 0)
                return r;
        *FIELD(item, data, uint32_t) = (uint32_t)v;
        return 0;
}

int tsf_config_parse_u64(const struct tsf_config_item *item, const char *value, void *data, char *err,
                         size_t err_size) {
        return parse_ranged(item, value, UINT64_MAX, FIELD(item, data, uint64_t), err, err_size);
}

int tsf_config_parse_port(const struct tsf_config_item *item, const char *value, void *data, char *err,
                          size_t err_size) {
        struct tsf_config_item ranged = *item;
        uint64_t v;
        int r;

        if (ranged.min == 0)
                ranged.min = 1; /* port 0 means "any" to bind(): never what a config wants */
        r = parse_ranged(&ranged, value, UINT16_MAX, &v, err, err_size);
        if (r < 0)
                return r;
        *FIELD(item, data, uint16_t) = (uint16_t)v;
        return 0;
}

int tsf_config_parse_duration(const struct tsf_config_item *item, const char *value, void *data, char *err,
                              size_t err_size) {
        usec_t v;
        int r = tsf_parse_duration(value, &v);

        if (r < 0 || v < item->min || (item->max && v > item->max)) {
                snprintf(err, err_size, "'%s' is not a valid duration%s (e.g. 500ms, 5s, 2min, 90d)", value,
                         r < 0 ? "" : " in the allowed range");
                return r < 0 ? r : -ERANGE;
        }
        *FIELD(item, data, usec_t) = v;
        return 0;
}

int tsf_config_parse_log_level(const struct tsf_config_item *item, const char *value, void *data, char *err,
                               size_t err_size) {
        int level = tsf_log_level_from_string(value);

        if (level < 0) {
                snprintf(err, err_size, "'%s' is not a log level (err, warning, notice, info, debug)",
                         value);
                return level;
        }
        *FIELD(item, data, int) = level;
        return 0;
}

size_t tsf_strv_length(char *const *l) {
        size_t n = 0;

        while (l && l[n])
                n++;
        return n;
}

void tsf_strv_free(char **l) {
        for (size_t i = 0; l && l[i]; i++)
                free(l[i]);
        free(l);
}

int tsf_config_parse_strv(const struct tsf_config_item *item, const char *value, void *data, char *err,
                          size_t err_size) {
        char ***field = FIELD(item, data, char **);
        const char *p = value;

        while (*p) {
                size_t n = tsf_strv_length(*field), w;
                char **grown;

                p += strspn(p, " \t");
                w = strcspn(p, " \t");
                if (w == 0)
                        break;
                grown = realloc(*field, (n + 2) * sizeof(char *));
                if (!grown)
                        return -ENOMEM;
                *field = grown;
                grown[n] = strndup(p, w);
                grown[n + 1] = NULL;
                if (!grown[n])
                        return -ENOMEM;
                p += w;
        }
        return 0;
}

int tsf_parse_endpoint(const char *s, uint32_t *addr_be, uint16_t *port) {
        char host[INET_ADDRSTRLEN];
        const char *colon = strchr(s, ':');
        size_t n = colon ? (size_t)(colon - s) : strlen(s);
        struct in_addr a;
        uint64_t p;

        if (n == 0 || n >= sizeof(host))
                return -EINVAL;
        memcpy(host, s, n);
        host[n] = '\0';
        /* inet_pton, not inet_aton: "10.1" is not an address in a config. */
        if (inet_pton(AF_INET, host, &a) != 1)
                return -EINVAL;
        if (colon) {
                if (tsf_parse_u64(colon + 1, &p) < 0 || p == 0 || p > UINT16_MAX)
                        return -EINVAL;
                *port = (uint16_t)p;
        }
        *addr_be = a.s_addr;
        return 0;
}

int tsf_config_parse_ipv4(const struct tsf_config_item *item, const char *value, void *data, char *err,
                          size_t err_size) {
        struct in_addr *field = FIELD(item, data, struct in_addr);
        uint16_t unused = 0;

        if (strchr(value, ':') || tsf_parse_endpoint(value, &field->s_addr, &unused) < 0) {
                snprintf(err, err_size, "'%s' is not an IPv4 address", value);
                return -EINVAL;
        }
        return 0;
}

int tsf_config_parse_endpoint(const struct tsf_config_item *item, const char *value, void *data, char *err,
                              size_t err_size) {
        struct sockaddr_in *field = FIELD(item, data, struct sockaddr_in);
        uint32_t addr;
        uint16_t port = ntohs(field->sin_port);

        if (tsf_parse_endpoint(value, &addr, &port) < 0) {
                snprintf(err, err_size, "'%s' is not an IPv4 address with an optional :port (1..65535)",
                         value);
                return -EINVAL;
        }
        field->sin_family = AF_INET;
        field->sin_addr.s_addr = addr;
        field->sin_port = htons(port);
        return 0;
}

int tsf_parse_size(const char *s, uint64_t *ret) {
        static const struct {
                const char *suffix;
                uint64_t factor;
        } units[] = {
                {"", 1},
                {"K", 1ULL << 10},
                {"KiB", 1ULL << 10},
                {"M", 1ULL << 20},
                {"MiB", 1ULL << 20},
                {"G", 1ULL << 30},
                {"GiB", 1ULL << 30},
        };
        char digits[24];
        size_t n = strspn(s, "0123456789");
        uint64_t v;

        if (n == 0 || n >= sizeof(digits))
                return -EINVAL;
        memcpy(digits, s, n);
        digits[n] = '\0';
        if (tsf_parse_u64(digits, &v) < 0)
                return -ERANGE;
        for (size_t i = 0; i < ELEMENTSOF(units); i++) {
                if (strcmp(s + n, units[i].suffix) != 0)
                        continue;
                if (v > UINT64_MAX / units[i].factor)
                        return -ERANGE;
                *ret = v * units[i].factor;
                return 0;
        }
        return -EINVAL;
}

int tsf_config_parse_size(const struct tsf_config_item *item, const char *value, void *data, char *err,
                          size_t err_size) {
        uint64_t v;
        int r = tsf_parse_size(value, &v);

        if (r < 0 || v < item->min || (item->max && v > item->max)) {
                snprintf(err, err_size, "'%s' is not a size in %llu..%llu bytes (e.g. 64K, 1M)", value,
                         (unsigned long long)item->min, (unsigned long long)item->max);
                return r < 0 ? r : -ERANGE;
        }
        *FIELD(item, data, uint64_t) = v;
        return 0;
}
