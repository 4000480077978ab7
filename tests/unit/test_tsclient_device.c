/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for tsclient's device store (tools/tsclient/device.c,
 * docs/protocol.md 9.2): the machine id file, the hardware id derivation
 * (checked against an independent HMAC through OpenSSL's EVP_MAC), salts,
 * a copied store on another machine, atomic token files, and malformed
 * files refused.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "tsfarm/cleanup.h"
#include "tsfarm/macro.h"
#include "tools/tsclient/device.h"

#define MID_A "0123456789abcdef0123456789abcdef\n"
#define MID_B "fedcba9876543210fedcba9876543210\n"

static char root[128];
static char mid_a[192], mid_b[192];

static void put(const char *path, const char *text) {
        FILE *f = fopen(path, "we");

        assert_non_null(f);
        assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
        assert_int_equal(fclose(f), 0);
}

static char *path_of(const char *dir, const char *name) {
        static char buf[512];

        snprintf(buf, sizeof(buf), "%s/%s", dir, name);
        return buf;
}

static int setup(void **state) {
        snprintf(root, sizeof(root), "/tmp/test-tsclient-device-XXXXXX");
        if (!mkdtemp(root))
                return -1;
        snprintf(mid_a, sizeof(mid_a), "%s/machine-id-a", root);
        snprintf(mid_b, sizeof(mid_b), "%s/machine-id-b", root);
        put(mid_a, MID_A);
        put(mid_b, MID_B);
        return 0;
}

static int teardown(void **state) {
        char cmd[256];

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
        return system(cmd) == 0 ? 0 : -1;
}

static void test_machine_id(void **state) {
        static const struct {
                const char *text;
                int ret;
        } cases[] = {
                {MID_A, 0},
                {"0123456789abcdef0123456789abcdef", -EBADMSG},    /* no newline */
                {"0123456789ABCDEF0123456789ABCDEF\n", -EBADMSG},  /* machine-id(5) is lower case */
                {"0123456789abcdef0123456789abcde\n", -EBADMSG},   /* short */
                {"0123456789abcdef0123456789abcdef0\n", -EBADMSG}, /* long */
                {"0123456789abcdef0123456789abcdeg\n", -EBADMSG},  /* not hex */
                {"00000000000000000000000000000000\n", -EBADMSG},  /* all zero: every machine alike */
                {MID_A MID_A, -EBADMSG},                           /* two lines */
                {"", -ENOMEDIUM},                                  /* not yet booted */
                {"uninitialized\n", -ENOMEDIUM},
        };
        uint8_t id[TSC_MACHINE_ID_SIZE];
        char path[256];

        snprintf(path, sizeof(path), "%s/mid", root);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                put(path, cases[i].text);
                assert_int_equal(tsc_machine_id_read(path, id), cases[i].ret);
        }
        put(path, MID_A);
        assert_int_equal(tsc_machine_id_read(path, id), 0);
        assert_memory_equal(id, "\x01\x23\x45\x67\x89\xab\xcd\xef\x01\x23\x45\x67\x89\xab\xcd\xef", 16);
        snprintf(path, sizeof(path), "%s/none", root);
        assert_int_equal(tsc_machine_id_read(path, id), -ENOENT);
        assert_int_equal(tsc_machine_id_read(root, id), -EBADMSG); /* a directory */
}

/* The derivation, computed independently through EVP_MAC. */
static void test_hwid_derive(void **state) {
        uint8_t mid[16], salt[16], got[TSC_HWID_SIZE], want[32], data[64];
        size_t len = 0, n = strlen(TSC_HWID_CONTEXT);
        EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
        EVP_MAC_CTX *ctx;
        OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
                               OSSL_PARAM_END};

        for (int i = 0; i < 16; i++) {
                mid[i] = (uint8_t)(i * 7 + 1);
                salt[i] = (uint8_t)(0xa0 + i);
        }
        memcpy(data, TSC_HWID_CONTEXT, n);
        memcpy(data + n, salt, 16);
        assert_non_null(mac);
        ctx = EVP_MAC_CTX_new(mac);
        assert_non_null(ctx);
        assert_int_equal(EVP_MAC_init(ctx, mid, sizeof(mid), params), 1);
        assert_int_equal(EVP_MAC_update(ctx, data, n + 16), 1);
        assert_int_equal(EVP_MAC_final(ctx, want, &len, sizeof(want)), 1);
        EVP_MAC_CTX_free(ctx);
        EVP_MAC_free(mac);
        assert_int_equal(len, 32);

        assert_int_equal(tsc_hwid_derive(mid, salt, got), 0);
        assert_memory_equal(got, want, 32);

        /* Another machine id, or another salt: another hardware id. */
        mid[0] ^= 1;
        assert_int_equal(tsc_hwid_derive(mid, salt, got), 0);
        assert_memory_not_equal(got, want, 32);
        mid[0] ^= 1;
        salt[15] ^= 0x80;
        assert_int_equal(tsc_hwid_derive(mid, salt, got), 0);
        assert_memory_not_equal(got, want, 32);
}

static void test_store_create_and_reopen(void **state) {
        _cleanup_(tsc_store_freep) struct tsc_store *a = NULL, *again = NULL, *b = NULL;
        char dir[256], dir2[256];
        struct stat st;

        snprintf(dir, sizeof(dir), "%s/home/.local/share/tsfarm/device", root);
        /* Without create, a missing store is an error, and nothing is made. */
        assert_int_equal(tsc_store_open(dir, mid_a, false, &a), -ENOENT);
        assert_int_equal(tsc_store_open(dir, mid_a, true, &a), 0);
        assert_int_equal(stat(dir, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0700);
        assert_int_equal(stat(path_of(dir, "salt"), &st), 0);
        assert_int_equal(st.st_mode & 07777, 0600);
        assert_int_equal(st.st_size, 33);

        /* The same store on the same machine: the same hardware id. */
        assert_int_equal(tsc_store_open(dir, mid_a, false, &again), 0);
        assert_memory_equal(again->salt, a->salt, TSC_SALT_SIZE);
        assert_memory_equal(again->hwid, a->hwid, TSC_HWID_SIZE);

        /* A second store on the same machine is another device. */
        snprintf(dir2, sizeof(dir2), "%s/other-store", root);
        assert_int_equal(tsc_store_open(dir2, mid_a, true, &b), 0);
        assert_memory_not_equal(b->salt, a->salt, TSC_SALT_SIZE);
        assert_memory_not_equal(b->hwid, a->hwid, TSC_HWID_SIZE);

        /* No machine id: refused. */
        b = tsc_store_free(b);
        assert_int_equal(tsc_store_open(dir2, path_of(root, "missing"), true, &b), -ENOENT);
}

/* The scenario of docs/protocol.md 9.2: the store directory copied onto
 * another machine keeps its salt and its tokens but not its hardware id. */
static void test_copied_store(void **state) {
        _cleanup_(tsc_store_freep) struct tsc_store *orig = NULL, *copy = NULL;
        char dir[256], copied[256], cmd[700], token[TSF_PROTO_TOKEN_MAX + 1];

        snprintf(dir, sizeof(dir), "%s/orig", root);
        snprintf(copied, sizeof(copied), "%s/copied", root);
        assert_int_equal(tsc_store_open(dir, mid_a, true, &orig), 0);
        assert_int_equal(tsc_store_token_save(orig, "farm1", "tsl1.abc.def"), 0);
        snprintf(cmd, sizeof(cmd), "cp -a '%s' '%s'", dir, copied);
        assert_int_equal(system(cmd), 0);

        assert_int_equal(tsc_store_open(copied, mid_b, false, &copy), 0);
        assert_memory_equal(copy->salt, orig->salt, TSC_SALT_SIZE);
        assert_memory_not_equal(copy->hwid, orig->hwid, TSC_HWID_SIZE);
        /* It still presents the token, which the server refuses as other-device. */
        assert_int_equal(tsc_store_token_load(copy, "farm1", token, sizeof(token)), 0);
        assert_string_equal(token, "tsl1.abc.def");

        /* Copied back onto the first machine: the first device again. */
        copy = tsc_store_free(copy);
        assert_int_equal(tsc_store_open(copied, mid_a, false, &copy), 0);
        assert_memory_equal(copy->hwid, orig->hwid, TSC_HWID_SIZE);
}

static void test_tokens(void **state) {
        _cleanup_(tsc_store_freep) struct tsc_store *s = NULL;
        char dir[256], token[TSF_PROTO_TOKEN_MAX + 1], big[TSF_PROTO_TOKEN_MAX + 2];
        struct stat st;

        snprintf(dir, sizeof(dir), "%s/tokens", root);
        assert_int_equal(tsc_store_open(dir, mid_a, true, &s), 0);
        assert_int_equal(tsc_store_token_load(s, "farm1", token, sizeof(token)), -ENOENT);
        assert_int_equal(tsc_store_token_save(s, "farm1", "tsl1.first"), 0);
        assert_int_equal(tsc_store_token_save(s, "farm-2_x.y", "tsl1.second"), 0);
        assert_int_equal(tsc_store_token_load(s, "farm1", token, sizeof(token)), 0);
        assert_string_equal(token, "tsl1.first");
        assert_int_equal(stat(path_of(dir, "farm.farm1"), &st), 0);
        assert_int_equal(st.st_mode & 07777, 0600);

        /* Replaced atomically: no temporary file left behind. */
        assert_int_equal(tsc_store_token_save(s, "farm1", "tsl1.replaced"), 0);
        assert_int_equal(tsc_store_token_load(s, "farm1", token, sizeof(token)), 0);
        assert_string_equal(token, "tsl1.replaced");
        {
                char cmd[400];

                snprintf(cmd, sizeof(cmd), "test $(ls -A '%s' | wc -l) -eq 3", dir); /* salt + 2 farms */
                assert_int_equal(system(cmd), 0);
        }
        assert_int_equal(tsc_store_token_load(s, "farm-2_x.y", token, sizeof(token)), 0);
        assert_string_equal(token, "tsl1.second");

        /* Bad farm ids never become paths; bad tokens are never written. */
        assert_int_equal(tsc_store_token_save(s, "../evil", "tsl1.x"), -EINVAL);
        assert_int_equal(tsc_store_token_save(s, "a/b", "tsl1.x"), -EINVAL);
        assert_int_equal(tsc_store_token_save(s, "", "tsl1.x"), -EINVAL);
        assert_int_equal(tsc_store_token_load(s, "a b", token, sizeof(token)), -EINVAL);
        assert_int_equal(tsc_store_token_save(s, "farm1", ""), -EINVAL);
        assert_int_equal(tsc_store_token_save(s, "farm1", "xyz1.abc"), -EINVAL);
        assert_int_equal(tsc_store_token_save(s, "farm1", "tsl1.a\nb"), -EINVAL);
        assert_int_equal(tsc_store_token_save(s, "farm1", "tsl1.a b"), -EINVAL);
        memset(big, 'a', sizeof(big) - 1);
        memcpy(big, "tsl1.", 5);
        big[sizeof(big) - 1] = '\0';
        assert_int_equal(tsc_store_token_save(s, "farm1", big), -EINVAL);
        assert_int_equal(tsc_store_token_load(s, "farm1", token, sizeof(token)), 0);
        assert_string_equal(token, "tsl1.replaced");

        assert_int_equal(tsc_store_token_remove(s, "farm1"), 0);
        assert_int_equal(tsc_store_token_remove(s, "farm1"), 0);
        assert_int_equal(tsc_store_token_load(s, "farm1", token, sizeof(token)), -ENOENT);
}

static void test_malformed_refused(void **state) {
        _cleanup_(tsc_store_freep) struct tsc_store *s = NULL;
        static const char *const bad_tokens[] = {
                "tsl1.abc",     /* no newline */
                "tsl1.abc\n\n", /* two lines */
                "\n",           /* empty */
                "tsl1.a\tb\n",  /* control character */
                "hello\n",      /* not a token */
                "tsl1.abc\r\n", /* CR */
                " tsl1.abc\n",  /* space */
        };
        char dir[256], token[TSF_PROTO_TOKEN_MAX + 1], big[TSC_STORE_FILE_MAX + 10];

        snprintf(dir, sizeof(dir), "%s/malformed", root);
        assert_int_equal(tsc_store_open(dir, mid_a, true, &s), 0);
        for (size_t i = 0; i < ELEMENTSOF(bad_tokens); i++) {
                put(path_of(dir, "farm.f"), bad_tokens[i]);
                assert_int_equal(tsc_store_token_load(s, "f", token, sizeof(token)), -EBADMSG);
        }
        /* A NUL inside. */
        {
                int fd = open(path_of(dir, "farm.f"), O_WRONLY | O_TRUNC | O_CLOEXEC);

                assert_true(fd >= 0);
                assert_int_equal(write(fd, "tsl1.a\0b\n", 9), 9);
                close(fd);
                assert_int_equal(tsc_store_token_load(s, "f", token, sizeof(token)), -EBADMSG);
        }
        /* Too large to be a token line. */
        memset(big, 'a', sizeof(big) - 2);
        memcpy(big, "tsl1.", 5);
        big[sizeof(big) - 2] = '\n';
        big[sizeof(big) - 1] = '\0';
        put(path_of(dir, "farm.f"), big);
        assert_int_equal(tsc_store_token_load(s, "f", token, sizeof(token)), -EBADMSG);
        /* A symbolic link and a directory are not token files. */
        unlink(path_of(dir, "farm.f"));
        assert_int_equal(symlink(mid_a, path_of(dir, "farm.f")), 0);
        assert_int_equal(tsc_store_token_load(s, "f", token, sizeof(token)), -EBADMSG);
        unlink(path_of(dir, "farm.f"));
        assert_int_equal(mkdir(path_of(dir, "farm.f"), 0700), 0);
        assert_int_equal(tsc_store_token_load(s, "f", token, sizeof(token)), -EBADMSG);

        /* A malformed salt makes the whole store refused, not repaired. */
        s = tsc_store_free(s);
        put(path_of(dir, "salt"), "not hex at all, no\n");
        assert_int_equal(tsc_store_open(dir, mid_a, true, &s), -EBADMSG);
        put(path_of(dir, "salt"), "00112233445566778899aabbccddeeff"); /* no newline */
        assert_int_equal(tsc_store_open(dir, mid_a, true, &s), -EBADMSG);
        put(path_of(dir, "salt"), "00112233445566778899aabbccddeeff00\n"); /* long */
        assert_int_equal(tsc_store_open(dir, mid_a, true, &s), -EBADMSG);
        unlink(path_of(dir, "salt"));
        assert_int_equal(symlink(mid_a, path_of(dir, "salt")), 0);
        assert_int_equal(tsc_store_open(dir, mid_a, true, &s), -EBADMSG);
        unlink(path_of(dir, "salt"));
        put(path_of(dir, "salt"), "00112233445566778899aabbccddeeff\n");
        assert_int_equal(tsc_store_open(dir, mid_a, true, &s), 0);
        assert_memory_equal(s->salt, "\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\xcc\xdd\xee\xff", 16);
}

static void test_validators(void **state) {
        assert_true(tsc_farm_id_valid("farm1"));
        assert_true(tsc_farm_id_valid("a"));
        assert_true(tsc_farm_id_valid("..")); /* safe: the file is "farm.." */
        assert_false(tsc_farm_id_valid(""));
        assert_false(tsc_farm_id_valid(NULL));
        assert_false(tsc_farm_id_valid("a/b"));
        assert_false(tsc_farm_id_valid("a b"));
        assert_false(tsc_farm_id_valid("0123456789012345678901234567890123456789012345678901234567890123"));
        assert_true(tsc_token_text_valid("tsl1.x"));
        assert_false(tsc_token_text_valid("tsl"));
        assert_false(tsc_token_text_valid("TSL1.x"));
        assert_false(tsc_token_text_valid(NULL));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_machine_id),
                cmocka_unit_test(test_hwid_derive),
                cmocka_unit_test(test_store_create_and_reopen),
                cmocka_unit_test(test_copied_store),
                cmocka_unit_test(test_tokens),
                cmocka_unit_test(test_malformed_refused),
                cmocka_unit_test(test_validators),
        };

        return cmocka_run_group_tests(tests, setup, teardown);
}
