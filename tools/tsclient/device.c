/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The per-device store (device.h says what is in it and why). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "tsfarm/cleanup.h"
#include "tsfarm/fs.h"
#include "tsfarm/hex.h"
#include "tsfarm/macro.h"
#include "device.h"

/* Reads a small regular file (not through a symbolic link) into buf as a
 * NUL-terminated string. -EBADMSG when it is larger than `max` bytes, not
 * a regular file or holds a NUL. */
static int read_small_file(const char *path, char *buf, size_t max) {
        _cleanup_close_ int fd = -1;
        struct stat st;
        size_t have = 0;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
        if (fd < 0)
                return errno == ELOOP ? -EBADMSG : negative_errno();
        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode))
                return -EBADMSG;
        for (;;) {
                ssize_t n = read(fd, buf + have, max + 1 - have);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (n == 0)
                        break;
                have += (size_t)n;
                if (have > max)
                        return -EBADMSG;
        }
        buf[have] = '\0';
        if (strlen(buf) != have)
                return -EBADMSG;
        return (int)have;
}

/* Strips exactly one trailing newline; a file without one is malformed
 * (a line that was cut short must not pass for a shorter value). */
static int strip_newline(char *s, size_t len) {
        if (len == 0 || s[len - 1] != '\n')
                return -EBADMSG;
        s[len - 1] = '\0';
        return 0;
}

int tsc_machine_id_read(const char *path, uint8_t ret[TSC_MACHINE_ID_SIZE]) {
        char buf[64];
        int r;

        r = read_small_file(path ?: TSC_MACHINE_ID_DEFAULT, buf, sizeof(buf) - 1);
        if (r < 0)
                return r;
        if (r == 0)
                return -ENOMEDIUM;
        if (strip_newline(buf, (size_t)r) < 0)
                return -EBADMSG;
        if (streq_ptr(buf, "uninitialized"))
                return -ENOMEDIUM;
        if (strlen(buf) != 2 * TSC_MACHINE_ID_SIZE)
                return -EBADMSG;
        for (const char *p = buf; *p; p++)
                if (!strchr("0123456789abcdef", *p)) /* machine-id(5): lower case */
                        return -EBADMSG;
        if (tsf_hex_decode_strict(buf, ret, TSC_MACHINE_ID_SIZE, TSC_MACHINE_ID_SIZE) != TSC_MACHINE_ID_SIZE)
                return -EBADMSG;
        /* An all-zero id is what a broken image has: every machine the same. */
        for (size_t i = 0; i < TSC_MACHINE_ID_SIZE; i++)
                if (ret[i])
                        return 0;
        return -EBADMSG;
}

int tsc_hwid_derive(const uint8_t machine_id[TSC_MACHINE_ID_SIZE], const uint8_t salt[TSC_SALT_SIZE],
                    uint8_t ret[TSC_HWID_SIZE]) {
        uint8_t data[sizeof(TSC_HWID_CONTEXT) - 1 + TSC_SALT_SIZE];
        unsigned len = 0;

        memcpy(data, TSC_HWID_CONTEXT, sizeof(TSC_HWID_CONTEXT) - 1);
        memcpy(data + sizeof(TSC_HWID_CONTEXT) - 1, salt, TSC_SALT_SIZE);
        if (!HMAC(EVP_sha256(), machine_id, TSC_MACHINE_ID_SIZE, data, sizeof(data), ret, &len) ||
            len != TSC_HWID_SIZE)
                return -EIO;
        return 0;
}

bool tsc_farm_id_valid(const char *farm_id) {
        size_t n = farm_id ? strlen(farm_id) : 0;

        if (n < 1 || n > TSF_PROTO_FARM_ID_MAX)
                return false;
        for (const char *p = farm_id; *p; p++)
                if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                      *p == '.' || *p == '_' || *p == '-'))
                        return false;
        return true;
}

bool tsc_token_text_valid(const char *token) {
        size_t n = token ? strlen(token) : 0;

        if (n < 4 || n > TSF_PROTO_TOKEN_MAX || strncmp(token, "tsl", 3) != 0)
                return false;
        for (const char *p = token + 3; *p; p++)
                if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                      *p == '.' || *p == '_' || *p == '-'))
                        return false;
        return true;
}

/* mkdir -p with `mode` for what it makes. */
static int mkdir_parents(const char *dir, mode_t mode) {
        char path[PATH_MAX];

        if (snprintf(path, sizeof(path), "%s", dir) >= (int)sizeof(path))
                return -ENAMETOOLONG;
        for (char *p = path + 1; *p; p++) {
                if (*p != '/')
                        continue;
                *p = '\0';
                if (mkdir(path, mode) < 0 && errno != EEXIST)
                        return negative_errno();
                *p = '/';
        }
        if (mkdir(path, mode) < 0 && errno != EEXIST)
                return negative_errno();
        return 0;
}

static int path_in(const struct tsc_store *s, const char *name, char *buf, size_t size) {
        if (snprintf(buf, size, "%s/%s", s->dir, name) >= (int)size)
                return -ENAMETOOLONG;
        return 0;
}

static int salt_load(const struct tsc_store *s, uint8_t salt[TSC_SALT_SIZE]) {
        char path[PATH_MAX], buf[2 * TSC_SALT_SIZE + 2];
        int r;

        r = path_in(s, "salt", path, sizeof(path));
        if (r < 0)
                return r;
        r = read_small_file(path, buf, sizeof(buf) - 1);
        if (r < 0)
                return r;
        if (strip_newline(buf, (size_t)r) < 0 || strlen(buf) != 2 * TSC_SALT_SIZE ||
            tsf_hex_decode_strict(buf, salt, TSC_SALT_SIZE, TSC_SALT_SIZE) != TSC_SALT_SIZE)
                return -EBADMSG;
        return 0;
}

static int salt_make(const struct tsc_store *s) {
        uint8_t salt[TSC_SALT_SIZE];
        char path[PATH_MAX], text[2 * TSC_SALT_SIZE + 2];
        int r;

        r = path_in(s, "salt", path, sizeof(path));
        if (r < 0)
                return r;
        if (getrandom(salt, sizeof(salt), 0) != (ssize_t)sizeof(salt))
                return -EIO;
        tsf_hex_encode(salt, sizeof(salt), text);
        strcat(text, "\n");
        /* Not forced: two clients starting on a fresh store at once agree
         * on the first salt written. */
        r = tsf_write_file_atomic(path, text, strlen(text), 0600, false);
        return r == -EEXIST ? 0 : r;
}

int tsc_store_open(const char *dir, const char *machine_id_file, bool create, struct tsc_store **ret) {
        _cleanup_(tsc_store_freep) struct tsc_store *s = NULL;
        uint8_t machine_id[TSC_MACHINE_ID_SIZE];
        int r;

        if (!dir || !*dir)
                return -EINVAL;
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->dir = strdup(dir);
        if (!s->dir)
                return -ENOMEM;
        r = tsc_machine_id_read(machine_id_file, machine_id);
        if (r < 0)
                return r;
        if (create) {
                r = mkdir_parents(dir, 0700);
                if (r < 0)
                        return r;
        }
        r = salt_load(s, s->salt);
        if (r == -ENOENT && create) {
                r = salt_make(s);
                if (r < 0)
                        return r;
                r = salt_load(s, s->salt);
        }
        if (r < 0)
                return r;
        r = tsc_hwid_derive(machine_id, s->salt, s->hwid);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(s);
        return 0;
}

struct tsc_store *tsc_store_free(struct tsc_store *s) {
        if (s) {
                free(s->dir);
                free(s);
        }
        return NULL;
}

static int token_path(const struct tsc_store *s, const char *farm_id, char *buf, size_t size) {
        if (!tsc_farm_id_valid(farm_id))
                return -EINVAL;
        if (snprintf(buf, size, "%s/farm.%s", s->dir, farm_id) >= (int)size)
                return -ENAMETOOLONG;
        return 0;
}

int tsc_store_token_load(const struct tsc_store *s, const char *farm_id, char *buf, size_t size) {
        char path[PATH_MAX], text[TSC_STORE_FILE_MAX + 1];
        int r;

        r = token_path(s, farm_id, path, sizeof(path));
        if (r < 0)
                return r;
        r = read_small_file(path, text, TSC_STORE_FILE_MAX);
        if (r < 0)
                return r;
        if (strip_newline(text, (size_t)r) < 0 || !tsc_token_text_valid(text))
                return -EBADMSG;
        if (strlen(text) >= size)
                return -ENOBUFS;
        strcpy(buf, text);
        return 0;
}

int tsc_store_token_save(const struct tsc_store *s, const char *farm_id, const char *token) {
        char path[PATH_MAX], text[TSC_STORE_FILE_MAX + 1];
        int r;

        if (!tsc_token_text_valid(token))
                return -EINVAL;
        r = token_path(s, farm_id, path, sizeof(path));
        if (r < 0)
                return r;
        snprintf(text, sizeof(text), "%s\n", token);
        return tsf_write_file_atomic(path, text, strlen(text), 0600, true);
}

int tsc_store_token_remove(const struct tsc_store *s, const char *farm_id) {
        char path[PATH_MAX];
        int r;

        r = token_path(s, farm_id, path, sizeof(path));
        if (r < 0)
                return r;
        if (unlink(path) < 0 && errno != ENOENT)
                return negative_errno();
        return 0;
}
