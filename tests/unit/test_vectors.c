/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The captured Connection Requests in ../shared/vectors (real FreeRDP and
 * rdesktop clients, and the MS-RDPBCGR 4.1.1 sample) against the table in
 * that directory's README, which is copied below. A vector without a table
 * entry, or an entry without a vector, is a failure: the two are kept in
 * step by hand, and this is where a mismatch shows.
 *
 * The directory is $TSFARM_VECTORS (tests/run.sh sets it), else
 * $TSFARM_SRC/../shared/vectors, else ../shared/vectors from the current
 * directory (the repository root, where make runs the tests).
 */

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tsfarm/hex.h"
#include "tsfarm/macro.h"
#include "tsfarm/x224.h"

struct vector {
        const char *file;
        const char *cookie_value; /* all of them are mstshash cookies */
        uint32_t requested_protocols;
};

/* /work/shared/vectors/README.md, "file | cookie value | requestedProtocols". */
static const struct vector vectors[] = {
        {"freerdp-2.11-tls.hex", "rdpuser1", TSF_PROTOCOL_SSL},
        {"rdesktop-1.9-hybrid.hex", "rdpuser1", TSF_PROTOCOL_SSL | TSF_PROTOCOL_HYBRID},
        {"freerdp-2.11-longname.hex", "averylongusername01", TSF_PROTOCOL_SSL},
        {"rdesktop-1.9-domain-backslash.hex", "CORP\\rdpuser1", TSF_PROTOCOL_SSL | TSF_PROTOCOL_HYBRID},
        {"freerdp-2.11-upn.hex", "rdpuser1@corp.example", TSF_PROTOCOL_SSL},
        {"ms-rdpbcgr-4.1.1-sample.hex", "eltons", 0},
};

static char vectors_dir[PATH_MAX];

static void find_vectors_dir(void) {
        const char *env = getenv("TSFARM_VECTORS"), *src = getenv("TSFARM_SRC");

        if (env && *env)
                snprintf(vectors_dir, sizeof(vectors_dir), "%s", env);
        else if (src && *src)
                snprintf(vectors_dir, sizeof(vectors_dir), "%s/../shared/vectors", src);
        else
                snprintf(vectors_dir, sizeof(vectors_dir), "../shared/vectors");
}

static bool has_suffix(const char *s, const char *suffix) {
        size_t n = strlen(s), k = strlen(suffix);

        return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Reads and decodes one vector; returns its length. cmocka's failures
 * longjmp past cleanup handlers, so nothing is asserted while the file is
 * open. */
static size_t load_vector(const char *file, uint8_t *buf, size_t size) {
        char path[PATH_MAX + 256], text[4 * TSF_FIRST_PDU_MAX];
        size_t len;
        ssize_t n;
        int err;
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s", vectors_dir, file);
        f = fopen(path, "re");
        if (!f)
                fail_msg("%s: no such vector (the README table lists it): %s", path, strerror(errno));
        len = fread(text, 1, sizeof(text), f);
        err = ferror(f);
        fclose(f);
        if (err || len == sizeof(text))
                fail_msg("%s: unreadable or longer than any first PDU", path);
        n = tsf_hex_decode(text, len, buf, size, NULL);
        if (n <= 0)
                fail_msg("%s: not hex (%zd)", path, n);
        return (size_t)n;
}

/* A fresh heap buffer of exactly `len` bytes per call, as a gateway's
 * growing read buffer would be: ASan catches a read past the end. */
static enum tsf_cr_status parse_exact(const uint8_t *bytes, size_t len, struct tsf_cr *cr) {
        uint8_t *copy = len > 0 ? malloc(len) : NULL;
        enum tsf_cr_status s;

        if (len > 0) {
                assert_non_null(copy);
                memcpy(copy, bytes, len);
        }
        s = tsf_cr_parse(copy, len, cr);
        free(copy);
        return s;
}

static void test_vector(void **state) {
        const struct vector *v = *state;
        uint8_t b[TSF_FIRST_PDU_MAX], enc[TSF_FIRST_PDU_MAX];
        size_t n = load_vector(v->file, b, sizeof(b));
        struct tsf_cr cr;
        ssize_t m;

        if (parse_exact(b, n, &cr) != TSF_CR_COMPLETE)
                fail_msg("%s: %s at offset %zu: %s", v->file, tsf_cr_error_to_string(cr.error),
                         cr.error_offset, tsf_cr_error_describe(cr.error));
        assert_int_equal(cr.consumed, n);
        assert_false(cr.has_pcb);
        assert_int_equal(cr.cookie_kind, TSF_COOKIE_MSTSHASH);
        assert_int_equal(cr.cookie_value_len, strlen(v->cookie_value));
        assert_memory_equal(cr.cookie + cr.cookie_value_offset, v->cookie_value, cr.cookie_value_len);
        assert_true(cr.has_neg_req);
        assert_int_equal(cr.requested_protocols, v->requested_protocols);
        assert_false(cr.has_correlation);

        /* One byte at a time: need more until the last byte completes it. */
        for (size_t k = 0; k < n; k++) {
                struct tsf_cr partial;
                enum tsf_cr_status s = parse_exact(b, k, &partial);

                if (s != TSF_CR_NEED_MORE)
                        fail_msg("%s: after %zu of %zu bytes: %s (%s at %zu)", v->file, k, n,
                                 tsf_cr_status_to_string(s), tsf_cr_error_to_string(partial.error),
                                 partial.error_offset);
        }

        /* encode(parse(v)) == v, byte for byte. */
        m = tsf_cr_encode(&cr, enc, sizeof(enc));
        assert_int_equal(m, (ssize_t)n);
        assert_memory_equal(enc, b, n);
}

static void test_every_vector_listed(void **state) {
        char unlisted[NAME_MAX + 1] = "";
        size_t seen = 0;
        struct dirent *de;
        DIR *d = opendir(vectors_dir);

        if (!d)
                fail_msg("%s: %s (set TSFARM_VECTORS)", vectors_dir, strerror(errno));
        while ((de = readdir(d))) {
                bool listed = false;

                if (!has_suffix(de->d_name, ".hex"))
                        continue;
                for (size_t i = 0; i < ELEMENTSOF(vectors); i++)
                        listed = listed || strcmp(vectors[i].file, de->d_name) == 0;
                if (!listed)
                        snprintf(unlisted, sizeof(unlisted), "%s", de->d_name);
                seen++;
        }
        closedir(d);
        if (unlisted[0])
                fail_msg("%s/%s has no entry in the table in tests/unit/test_vectors.c", vectors_dir,
                         unlisted);
        /* And every entry has its file (test_vector says which is missing). */
        assert_int_equal(seen, ELEMENTSOF(vectors));
}

int main(void) {
        struct CMUnitTest tests[ELEMENTSOF(vectors) + 1];

        find_vectors_dir();
        printf("vectors: %s\n", vectors_dir);
        for (size_t i = 0; i < ELEMENTSOF(vectors); i++)
                tests[i] = (struct CMUnitTest){
                        .name = vectors[i].file,
                        .test_func = test_vector,
                        .initial_state = (void *)&vectors[i],
                };
        tests[ELEMENTSOF(vectors)] = (struct CMUnitTest){
                .name = "every .hex file is in the table",
                .test_func = test_every_vector_listed,
        };
        return _cmocka_run_group_tests("test_vectors", tests, ELEMENTSOF(tests), NULL, NULL);
}
