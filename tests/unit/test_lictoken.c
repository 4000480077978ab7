/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for license tokens (lib/lictoken.c, docs/licensing.md "Token
 * format (version 1)"): the round trip, the exact body layout, every
 * verdict, forged and altered tokens, the strictness of the text form, the
 * trust store directory and the key files.
 *
 * Forgeries and hand-made bodies are built here with OpenSSL directly and
 * an independent base64url (OpenSSL's EVP_EncodeBlock with the alphabet
 * translated), so the library is never checked against itself alone.
 */

#include <errno.h>
#include <limits.h>
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
#include <openssl/pem.h>

#include "tsfarm/cleanup.h"
#include "tsfarm/clock.h"
#include "tsfarm/lictoken.h"
#include "tsfarm/macro.h"

#define T0 (1795000000ULL * USEC_PER_SEC)

static const uint8_t HWID[] = "hwid-0123456789abcdef-device-one";
static const uint8_t HWID_OTHER[] = "hwid-0123456789abcdef-device-two";

/* Keys made once for the whole run: A and B are trusted, U is not. */
static char dir[128];
static struct tsf_lic_key *key_a, *key_b, *key_u;
static EVP_PKEY *pkey_a, *pkey_u; /* the same keys, for signing by hand */
static struct tsf_lic_trust *trust;

DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_PKEY *, EVP_PKEY_free);

/* ---- helpers ------------------------------------------------------------- */

/* base64url without padding, through OpenSSL's standard base64. */
static char *enc(const uint8_t *data, size_t len) {
        char *out = malloc(4 * (len / 3 + 1) + 1);

        assert_non_null(out);
        EVP_EncodeBlock((unsigned char *)out, data, (int)len);
        for (char *p = out; *p; p++)
                *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
        *strchrnul(out, '=') = '\0';
        return out;
}

/* The inverse, for well-formed input only (the tests feed it the
 * library's own output). Returns the number of bytes. */
static size_t dec(const char *text, size_t len, uint8_t *out, size_t size) {
        char buf[512];
        uint8_t tmp[512];
        size_t pad = (4 - len % 4) % 4;
        int n;

        assert_true(len + pad < sizeof(buf));
        for (size_t i = 0; i < len; i++)
                buf[i] = text[i] == '-' ? '+' : text[i] == '_' ? '/' : text[i];
        memset(buf + len, '=', pad);
        n = EVP_DecodeBlock(tmp, (const unsigned char *)buf, (int)(len + pad));
        assert_true(n >= 0 && (size_t)n >= pad);
        n -= (int)pad; /* EVP_DecodeBlock counts the padding as zero bytes */
        assert_true((size_t)n <= size);
        memcpy(out, tmp, (size_t)n);
        return (size_t)n;
}

/* Splits a token's text into its body and signature. */
static size_t split(const char *text, uint8_t *body, uint8_t *sig) {
        const char *b = text + 5, *dot = strchr(b, '.');
        size_t n;

        assert_memory_equal(text, "tsl1.", 5);
        assert_non_null(dot);
        n = dec(b, (size_t)(dot - b), body, TSF_LIC_BODY_MAX + 8);
        assert_int_equal(dec(dot + 1, strlen(dot + 1), sig, TSF_LIC_SIGNATURE_SIZE), TSF_LIC_SIGNATURE_SIZE);
        return n;
}

static char *join(const char *prefix, const uint8_t *body, size_t len, const uint8_t *sig) {
        _cleanup_free_ char *b = enc(body, len), *s = enc(sig, TSF_LIC_SIGNATURE_SIZE);
        char *text = NULL;

        assert_true(asprintf(&text, "%s%s.%s", prefix, b, s) > 0);
        return text;
}

static void raw_sign(EVP_PKEY *pkey, const uint8_t *body, size_t len, uint8_t *sig) {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        size_t n = TSF_LIC_SIGNATURE_SIZE;

        assert_non_null(ctx);
        assert_int_equal(EVP_DigestSignInit(ctx, NULL, NULL, NULL, pkey), 1);
        assert_int_equal(EVP_DigestSign(ctx, sig, &n, body, len), 1);
        assert_int_equal(n, TSF_LIC_SIGNATURE_SIZE);
        EVP_MD_CTX_free(ctx);
}

/* A token text over an arbitrary body, signed by `pkey`. */
static char *signed_text(EVP_PKEY *pkey, const uint8_t *body, size_t len) {
        uint8_t sig[TSF_LIC_SIGNATURE_SIZE];

        raw_sign(pkey, body, len, sig);
        return join("tsl1.", body, len, sig);
}

static void make_token(struct tsf_lic_token *t, enum tsf_lic_kind kind) {
        memset(t, 0, sizeof(*t));
        t->version = TSF_LIC_TOKEN_VERSION;
        t->kind = kind;
        for (size_t i = 0; i < TSF_LIC_TOKEN_ID_SIZE; i++)
                t->token_id[i] = (uint8_t)(0x10 + i);
        assert_int_equal(tsf_lic_hardware_hash(HWID, sizeof(HWID) - 1, t->device_hash), 0);
        t->issued = T0;
        t->expires = T0 + (kind == TSF_LIC_CAL ? 60 : 90) * USEC_PER_DAY;
        if (kind == TSF_LIC_CAL)
                strcpy(t->pack_id, "pack-2025-a");
        strcpy(t->product_version, "2025");
}

static void assert_token_equal(const struct tsf_lic_token *a, const struct tsf_lic_token *b) {
        assert_int_equal(a->version, b->version);
        assert_int_equal(a->kind, b->kind);
        assert_memory_equal(a->token_id, b->token_id, TSF_LIC_TOKEN_ID_SIZE);
        assert_memory_equal(a->issuer_key_id, b->issuer_key_id, TSF_LIC_KEY_ID_SIZE);
        assert_memory_equal(a->device_hash, b->device_hash, TSF_LIC_DEVICE_HASH_SIZE);
        assert_int_equal(a->issued, b->issued);
        assert_int_equal(a->expires, b->expires);
        assert_string_equal(a->pack_id, b->pack_id);
        assert_string_equal(a->product_version, b->product_version);
}

static int verify(const char *text, usec_t now, struct tsf_lic_token *ret) {
        return tsf_lic_token_verify(text, trust, HWID, sizeof(HWID) - 1, now, ret);
}

static char *sign_ok(const struct tsf_lic_token *t, const struct tsf_lic_key *key) {
        char *text = NULL;

        assert_int_equal(tsf_lic_token_sign(t, key, &text), 0);
        assert_non_null(text);
        return text;
}

static void write_text(const char *path, const char *data, size_t len, mode_t mode) {
        FILE *f = fopen(path, "we");

        assert_non_null(f);
        assert_int_equal(fwrite(data, 1, len, f), len);
        assert_int_equal(fclose(f), 0);
        assert_int_equal(chmod(path, mode), 0);
}

static EVP_PKEY *read_private_pem(const char *path) {
        FILE *f = fopen(path, "re");
        EVP_PKEY *k;

        assert_non_null(f);
        k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
        assert_non_null(k);
        return k;
}

/* ---- tests --------------------------------------------------------------- */

static void test_strings(void **state) {
        static const char *const names[] = {
                "ok",           "malformed", "unsupported-version", "unknown-issuer", "bad-signature",
                "other-device", "expired"};

        assert_int_equal(ELEMENTSOF(names), _TSF_LIC_VERDICT_MAX);
        for (int v = 0; v < _TSF_LIC_VERDICT_MAX; v++)
                assert_string_equal(tsf_lic_verdict_to_string(v), names[v]);
        assert_null(tsf_lic_verdict_to_string(-1));
        assert_null(tsf_lic_verdict_to_string(_TSF_LIC_VERDICT_MAX));
        assert_string_equal(tsf_lic_kind_to_string(TSF_LIC_TEMPORARY), "temporary");
        assert_string_equal(tsf_lic_kind_to_string(TSF_LIC_CAL), "device-cal");
        assert_null(tsf_lic_kind_to_string(0));
        assert_null(tsf_lic_kind_to_string(3));
}

static void test_hardware_hash(void **state) {
        /* FIPS 180-2's "abc" vector: the hash is plain SHA-256, which a
         * client or another implementation can reproduce. */
        static const uint8_t abc[32] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40,
                                        0xde, 0x5d, 0xae, 0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17,
                                        0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
        uint8_t out[32];

        assert_int_equal(tsf_lic_hardware_hash((const uint8_t *)"abc", 3, out), 0);
        assert_memory_equal(out, abc, 32);
}

static void test_round_trip(void **state) {
        static const enum tsf_lic_kind kinds[] = {TSF_LIC_CAL, TSF_LIC_TEMPORARY};

        for (size_t k = 0; k < ELEMENTSOF(kinds); k++) {
                struct tsf_lic_token t, v, p, expect;
                _cleanup_free_ char *text = NULL, *again = NULL;

                make_token(&t, kinds[k]);
                memset(t.issuer_key_id, 0xee, sizeof(t.issuer_key_id)); /* overwritten by sign */
                text = sign_ok(&t, key_a);
                expect = t;
                memcpy(expect.issuer_key_id, tsf_lic_key_id(key_a), TSF_LIC_KEY_ID_SIZE);

                assert_int_equal(verify(text, T0 + USEC_PER_DAY, &v), TSF_LIC_VERDICT_OK);
                assert_token_equal(&v, &expect);
                assert_int_equal(tsf_lic_token_parse(text, &p), TSF_LIC_VERDICT_OK);
                assert_token_equal(&p, &expect);

                /* Deterministic: the same token and key give the same text. */
                again = sign_ok(&p, key_a);
                assert_string_equal(again, text);
        }

        /* A temporary token for any product version. */
        {
                _cleanup_free_ char *text = NULL;
                struct tsf_lic_token t, v;

                make_token(&t, TSF_LIC_TEMPORARY);
                t.product_version[0] = '\0';
                text = sign_ok(&t, key_b);
                assert_int_equal(verify(text, T0, &v), TSF_LIC_VERDICT_OK);
                assert_string_equal(v.product_version, "");
                assert_string_equal(v.pack_id, "");
        }
}

static void test_longest(void **state) {
        struct tsf_lic_token t, v;
        _cleanup_free_ char *text = NULL;

        make_token(&t, TSF_LIC_CAL);
        memset(t.pack_id, 'P', TSF_LIC_PACK_ID_MAX);
        memset(t.product_version, '_', TSF_LIC_PRODUCT_VERSION_MAX);
        text = sign_ok(&t, key_b);
        assert_int_equal(strlen(text), TSF_LIC_TEXT_MAX);
        assert_int_equal(verify(text, T0, &v), TSF_LIC_VERDICT_OK);
        assert_string_equal(v.pack_id, t.pack_id);
        assert_string_equal(v.product_version, t.product_version);
}

/* The contract's table, byte by byte. */
static void test_body_layout(void **state) {
        static const uint8_t expected[] = {/* version, kind */
                                           0x01, 0x02,
                                           /* token id */
                                           0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a,
                                           0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
                                           /* issuer key id */
                                           0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a,
                                           0x2b, 0x2c, 0x2d, 0x2e, 0x2f, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35,
                                           0x36, 0x37, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f,
                                           /* device hash */
                                           0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a,
                                           0x4b, 0x4c, 0x4d, 0x4e, 0x4f, 0x50, 0x51, 0x52, 0x53, 0x54, 0x55,
                                           0x56, 0x57, 0x58, 0x59, 0x5a, 0x5b, 0x5c, 0x5d, 0x5e, 0x5f,
                                           /* issued, big-endian */
                                           0x00, 0x06, 0x61, 0xcc, 0x2b, 0x2f, 0x4a, 0x80,
                                           /* expires, big-endian */
                                           0x00, 0x06, 0x62, 0xf1, 0x0b, 0x2c, 0x1c, 0x01,
                                           /* pack id */
                                           0x03, 'p', 'k', '1',
                                           /* product version */
                                           0x04, '2', '0', '2', '5'};
        struct tsf_lic_token t = {
                .version = 1,
                .kind = TSF_LIC_CAL,
                .issued = 0x000661cc2b2f4a80ULL,
                .expires = 0x000662f10b2c1c01ULL,
                .pack_id = "pk1",
                .product_version = "2025",
        };
        uint8_t body[TSF_LIC_BODY_MAX + 8], sig[TSF_LIC_SIGNATURE_SIZE], want[sizeof(expected)];
        _cleanup_free_ char *text = NULL;
        EVP_MD_CTX *ctx;
        ssize_t n;

        for (size_t i = 0; i < 16; i++)
                t.token_id[i] = (uint8_t)(0x10 + i);
        for (size_t i = 0; i < 32; i++) {
                t.issuer_key_id[i] = (uint8_t)(0x20 + i);
                t.device_hash[i] = (uint8_t)(0x40 + i);
        }
        n = tsf_lic_token_body(&t, body, sizeof(body));
        assert_int_equal(n, sizeof(expected));
        assert_memory_equal(body, expected, sizeof(expected));
        assert_int_equal(tsf_lic_token_body(&t, body, sizeof(expected) - 1), -ENOBUFS);

        /* Signed: the same bytes with the signer's key id, under a
         * signature OpenSSL verifies on its own. */
        text = sign_ok(&t, key_a);
        assert_int_equal(strlen(text), 5 + (sizeof(expected) * 4 + 2) / 3 + 1 + 86);
        memcpy(want, expected, sizeof(want));
        memcpy(want + 18, tsf_lic_key_id(key_a), 32);
        assert_int_equal(split(text, body, sig), sizeof(want));
        assert_memory_equal(body, want, sizeof(want));
        ctx = EVP_MD_CTX_new();
        assert_non_null(ctx);
        assert_int_equal(EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pkey_a), 1);
        assert_int_equal(EVP_DigestVerify(ctx, sig, sizeof(sig), want, sizeof(want)), 1);
        EVP_MD_CTX_free(ctx);
}

static void test_unknown_issuer(void **state) {
        _cleanup_(tsf_lic_trust_freep) struct tsf_lic_trust *empty = NULL;
        _cleanup_free_ char *text = NULL;
        struct tsf_lic_token t, v;

        make_token(&t, TSF_LIC_CAL);
        text = sign_ok(&t, key_u);
        assert_int_equal(verify(text, T0, &v), TSF_LIC_VERDICT_UNKNOWN_ISSUER);
        /* Not authentic: nothing is handed back. */
        assert_true(v.version == 0 && v.pack_id[0] == '\0' && v.expires == 0);
        /* Parsing still works, for "tsctl license diagnose". */
        assert_int_equal(tsf_lic_token_parse(text, &v), TSF_LIC_VERDICT_OK);
        assert_memory_equal(v.issuer_key_id, tsf_lic_key_id(key_u), TSF_LIC_KEY_ID_SIZE);

        free(TAKE_PTR(text));
        text = sign_ok(&t, key_a);
        assert_int_equal(tsf_lic_trust_new(&empty), 0);
        assert_int_equal(tsf_lic_token_verify(text, empty, HWID, sizeof(HWID) - 1, T0, NULL),
                         TSF_LIC_VERDICT_UNKNOWN_ISSUER);
        assert_int_equal(tsf_lic_token_verify(text, NULL, HWID, sizeof(HWID) - 1, T0, NULL),
                         TSF_LIC_VERDICT_UNKNOWN_ISSUER);
}

/* Signed by an untrusted key, claiming to be from a trusted one. */
static void test_forged(void **state) {
        uint8_t body[TSF_LIC_BODY_MAX + 8], body2[TSF_LIC_BODY_MAX + 8], sig[TSF_LIC_SIGNATURE_SIZE],
                sig2[TSF_LIC_SIGNATURE_SIZE];
        _cleanup_free_ char *text = NULL, *forged = NULL, *other = NULL, *swapped = NULL;
        struct tsf_lic_token t, v;
        size_t n;

        make_token(&t, TSF_LIC_CAL);
        text = sign_ok(&t, key_u);
        n = split(text, body, sig);
        memcpy(body + 18, tsf_lic_key_id(key_a), TSF_LIC_KEY_ID_SIZE);
        forged = signed_text(pkey_u, body, n);
        assert_int_equal(verify(forged, T0, &v), TSF_LIC_VERDICT_BAD_SIGNATURE);
        assert_true(v.version == 0 && v.expires == 0);

        /* A genuine signature of A's, from another of its tokens. */
        free(TAKE_PTR(text));
        text = sign_ok(&t, key_a);
        t.token_id[0] ^= 1;
        other = sign_ok(&t, key_a);
        n = split(text, body, sig);
        assert_int_equal(split(other, body2, sig2), n);
        swapped = join("tsl1.", body, n, sig2);
        assert_int_equal(verify(swapped, T0, NULL), TSF_LIC_VERDICT_BAD_SIGNATURE);
        assert_int_equal(verify(text, T0, NULL), TSF_LIC_VERDICT_OK);
        assert_int_equal(verify(other, T0, NULL), TSF_LIC_VERDICT_OK);
}

/* Every byte of the body flipped, one at a time, with three masks: never
 * ok, and the verdict names the field that changed. */
static void test_altered_body(void **state) {
        static const uint8_t masks[] = {0x01, 0x80, 0xff};
        uint8_t body[TSF_LIC_BODY_MAX + 8], sig[TSF_LIC_SIGNATURE_SIZE];
        _cleanup_free_ char *text = NULL;
        struct tsf_lic_token t;
        unsigned count[_TSF_LIC_VERDICT_MAX] = {0};
        size_t n;

        make_token(&t, TSF_LIC_CAL);
        text = sign_ok(&t, key_a);
        n = split(text, body, sig);
        for (size_t i = 0; i < n; i++)
                for (size_t m = 0; m < ELEMENTSOF(masks); m++) {
                        _cleanup_free_ char *altered = NULL;
                        int v;

                        body[i] ^= masks[m];
                        altered = join("tsl1.", body, n, sig);
                        body[i] ^= masks[m];
                        v = verify(altered, T0, NULL);
                        if (v == TSF_LIC_VERDICT_OK)
                                fail_msg("byte %zu ^ 0x%02x verifies", i, masks[m]);
                        assert_in_range(v, TSF_LIC_VERDICT_MALFORMED, TSF_LIC_VERDICT_BAD_SIGNATURE);
                        count[v]++;
                        if (i == 0)
                                assert_int_equal(v, TSF_LIC_VERDICT_UNSUPPORTED_VERSION);
                        else if (i == 1)
                                assert_int_equal(v, TSF_LIC_VERDICT_MALFORMED); /* kind 3, 0x82, 0xfd */
                        else if (i < 18)
                                assert_int_equal(v, TSF_LIC_VERDICT_BAD_SIGNATURE);
                        else if (i < 50)
                                assert_int_equal(v, TSF_LIC_VERDICT_UNKNOWN_ISSUER);
                        else if (i < 82)
                                assert_int_equal(v, TSF_LIC_VERDICT_BAD_SIGNATURE);
                }
        assert_true(count[TSF_LIC_VERDICT_BAD_SIGNATURE] > 0 && count[TSF_LIC_VERDICT_MALFORMED] > 0);
        print_message("altered body: %u bad-signature, %u malformed, %u unknown-issuer, %u unsupported\n",
                      count[TSF_LIC_VERDICT_BAD_SIGNATURE], count[TSF_LIC_VERDICT_MALFORMED],
                      count[TSF_LIC_VERDICT_UNKNOWN_ISSUER], count[TSF_LIC_VERDICT_UNSUPPORTED_VERSION]);

        /* And every byte of the signature. */
        for (size_t i = 0; i < sizeof(sig); i++)
                for (size_t m = 0; m < ELEMENTSOF(masks); m++) {
                        _cleanup_free_ char *altered = NULL;

                        sig[i] ^= masks[m];
                        altered = join("tsl1.", body, n, sig);
                        sig[i] ^= masks[m];
                        assert_int_equal(verify(altered, T0, NULL), TSF_LIC_VERDICT_BAD_SIGNATURE);
                }
}

/* Every character of the text replaced: never ok. */
static void test_altered_text(void **state) {
        static const char repl[] = "A-_.=+/ \n\x80";
        _cleanup_free_ char *text = NULL;
        struct tsf_lic_token t;
        size_t len;

        make_token(&t, TSF_LIC_TEMPORARY);
        text = sign_ok(&t, key_a);
        len = strlen(text);
        for (size_t i = 0; i < len; i++)
                for (const char *r = repl; *r; r++) {
                        char saved = text[i];
                        int v;

                        if (*r == saved)
                                continue;
                        text[i] = *r;
                        v = verify(text, T0, NULL);
                        text[i] = saved;
                        if (v == TSF_LIC_VERDICT_OK)
                                fail_msg("text[%zu] = '%c' verifies", i, *r);
                }
        assert_int_equal(verify(text, T0, NULL), TSF_LIC_VERDICT_OK);
}

static int both(const char *text) {
        struct tsf_lic_token p, v;
        int r = verify(text, T0, &v);

        /* parse() agrees with verify() on what is not about trust. */
        if (r == TSF_LIC_VERDICT_MALFORMED || r == TSF_LIC_VERDICT_UNSUPPORTED_VERSION)
                assert_int_equal(tsf_lic_token_parse(text, &p), r);
        else
                assert_int_equal(tsf_lic_token_parse(text, &p), TSF_LIC_VERDICT_OK);
        /* Only authentic tokens are handed back. */
        if (r != TSF_LIC_VERDICT_OK && r != TSF_LIC_VERDICT_OTHER_DEVICE && r != TSF_LIC_VERDICT_EXPIRED)
                assert_true(v.version == 0 && v.expires == 0 && v.pack_id[0] == '\0');
        return r;
}

/* The character after `c` in the base64url alphabet. */
static char next_b64(char c) {
        static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        const char *p = strchr(a, c);

        assert_non_null(p);
        return a[(p - a + 1) % 64];
}

static void test_malformed_text(void **state) {
        _cleanup_free_ char *text = NULL;
        struct tsf_lic_token t;
        char buf[TSF_LIC_TEXT_MAX + 64];
        const char *sig;
        size_t len;

        make_token(&t, TSF_LIC_CAL); /* 115-byte body, 64-byte signature: both end in 2-bit groups */
        text = sign_ok(&t, key_a);
        len = strlen(text);
        sig = strrchr(text, '.') + 1;
        assert_int_equal(both(text), TSF_LIC_VERDICT_OK);

        /* Truncated anywhere. */
        for (size_t i = 0; i < len; i++) {
                memcpy(buf, text, i);
                buf[i] = '\0';
                if (both(buf) != TSF_LIC_VERDICT_MALFORMED)
                        fail_msg("truncated to %zu: %s", i, tsf_lic_verdict_to_string(both(buf)));
        }

        /* Trailing bytes, leading bytes, padding, other alphabets. */
        {
                static const char *const suffixes[] = {"\n", " ",  "=",    "==",    ".",
                                                       "A",  "AA", "AAAA", ".AAAA", "\r\n"};
                static const char *const prefixes[] = {" ", "\n", "TSL1.", "tsl1.", "x"};

                for (size_t i = 0; i < ELEMENTSOF(suffixes); i++) {
                        snprintf(buf, sizeof(buf), "%s%s", text, suffixes[i]);
                        assert_int_equal(both(buf), TSF_LIC_VERDICT_MALFORMED);
                }
                for (size_t i = 0; i < ELEMENTSOF(prefixes); i++) {
                        snprintf(buf, sizeof(buf), "%s%s", prefixes[i], text);
                        assert_int_equal(both(buf), TSF_LIC_VERDICT_MALFORMED);
                }
        }
        /* "TSL1." instead of "tsl1.". */
        snprintf(buf, sizeof(buf), "TSL1.%s", text + 5);
        assert_int_equal(both(buf), TSF_LIC_VERDICT_MALFORMED);
        /* Padding inside: the body padded to a multiple of 4. */
        snprintf(buf, sizeof(buf), "%.*s=.%s", (int)(sig - 1 - text), text, sig);
        assert_int_equal(both(buf), TSF_LIC_VERDICT_MALFORMED);
        /* One character more after a body of 3k bytes (4k characters): a
         * length no encoder writes, even though the extra character holds
         * only zero bits and the bytes before it are a valid token. */
        {
                _cleanup_free_ char *t117 = NULL;
                const char *s117;

                strcpy(t.pack_id, "pack-2025-abc"); /* 100 + 13 + 4 = 117 bytes */
                t117 = sign_ok(&t, key_a);
                s117 = strrchr(t117, '.') + 1;
                assert_int_equal(s117 - 1 - (t117 + 5), 156);
                assert_int_equal(both(t117), TSF_LIC_VERDICT_OK);
                snprintf(buf, sizeof(buf), "%.*sA.%s", (int)(s117 - 1 - t117), t117, s117);
                assert_int_equal(both(buf), TSF_LIC_VERDICT_MALFORMED);
        }
        /* Standard base64 characters instead of -_. */
        strcpy(buf, text);
        buf[len - 3] = '+';
        assert_int_equal(both(buf), TSF_LIC_VERDICT_MALFORMED);
        buf[len - 3] = '/';
        assert_int_equal(both(buf), TSF_LIC_VERDICT_MALFORMED);
        /* Non-canonical: the unused low bits of the last character set.
         * OpenSSL's decoder would take these; ours must not. */
        strcpy(buf, text);
        buf[len - 1] = next_b64(buf[len - 1]);
        assert_int_equal(both(buf), TSF_LIC_VERDICT_MALFORMED);
        strcpy(buf, text);
        buf[sig - text - 2] = next_b64(buf[sig - text - 2]);
        assert_int_equal(both(buf), TSF_LIC_VERDICT_MALFORMED);

        {
                static const char *const texts[] = {
                        "",
                        "t",
                        "tsl",
                        "tsl1",
                        "tsl1.",
                        "tsl1..",
                        "tsl.",
                        "tsl.AAAA.AAAA",
                        "tsl1.A.A",
                        "tsl1.AAAA",
                        "tsl1...",
                        "tslx.AAAA.AAAA",
                        "tsl0001.AAAA.AAAA",
                        "tsl1x.AAAA.AAAA",
                };

                for (size_t i = 0; i < ELEMENTSOF(texts); i++)
                        if (both(texts[i]) != TSF_LIC_VERDICT_MALFORMED)
                                fail_msg("\"%s\" is %s", texts[i],
                                         tsf_lic_verdict_to_string(both(texts[i])));
        }
        assert_int_equal(tsf_lic_token_verify(NULL, trust, HWID, sizeof(HWID) - 1, T0, NULL),
                         TSF_LIC_VERDICT_MALFORMED);
}

/* Bodies with a valid signature by a trusted key that still break the
 * layout's rules: the signature does not make a bad body good. */
static void test_malformed_body(void **state) {
        uint8_t body[TSF_LIC_BODY_MAX + 8], sig[TSF_LIC_SIGNATURE_SIZE];
        struct tsf_lic_token t;
        _cleanup_free_ char *text = NULL;
        size_t n;

        make_token(&t, TSF_LIC_CAL);
        text = sign_ok(&t, key_a);
        n = split(text, body, sig); /* 98 + 1 + 11 + 1 + 4 */
        assert_int_equal(n, 115);

        struct {
                const char *what;
                size_t at; /* byte to set, or SIZE_MAX */
                uint8_t value;
                ssize_t delta; /* bytes added (0xaa) or removed at the end */
        } cases[] = {
                {"one trailing byte", SIZE_MAX, 0, 1},
                {"last byte missing", SIZE_MAX, 0, -1},
                {"strings missing", SIZE_MAX, 0, -17},
                {"product version missing, its length too", SIZE_MAX, 0, -5},
                {"only the fixed part and np", SIZE_MAX, 0, -16},
                {"kind 0", 1, 0, 0},
                {"kind 3", 1, 3, 0},
                {"NUL in the pack id", 100, 0, 0},
                {"space in the pack id", 100, ' ', 0},
                {"DEL in the product version", 114, 0x7f, 0},
                {"'/' in the pack id", 105, '/', 0},
                {"'~' in the product version", 111, '~', 0},
                {"byte 0x80 in the product version", 114, 0x80, 0},
                {"pack id length past the end", 98, 200, 0},
                {"pack id length 65", 98, 65, 0},
                {"product version length short", 110, 3, 0},
                {"product version length long", 110, 5, 0},
                {"issued == expires", SIZE_MAX, 0, 0}, /* patched below */
                {"temporary with a pack id", 1, TSF_LIC_TEMPORARY, 0},
                {"expires >= 2^63", 90, 0x80, 0},
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                uint8_t b[TSF_LIC_BODY_MAX + 8];
                size_t len = (size_t)((ssize_t)n + cases[i].delta);
                _cleanup_free_ char *bad = NULL;

                memcpy(b, body, n);
                if (cases[i].delta > 0)
                        memset(b + n, 0xaa, (size_t)cases[i].delta);
                if (cases[i].at != SIZE_MAX)
                        b[cases[i].at] = cases[i].value;
                if (strcmp(cases[i].what, "issued == expires") == 0)
                        memcpy(b + 82, b + 90, 8);
                bad = signed_text(pkey_a, b, len);
                if (both(bad) != TSF_LIC_VERDICT_MALFORMED)
                        fail_msg("%s: %s", cases[i].what, tsf_lic_verdict_to_string(both(bad)));
        }

        /* A CAL without a pack: np = 0, the pack id's bytes removed. */
        {
                uint8_t b[TSF_LIC_BODY_MAX];
                _cleanup_free_ char *bad = NULL;

                memcpy(b, body, 98);
                b[98] = 0;
                memcpy(b + 99, body + 110, 5);
                bad = signed_text(pkey_a, b, 104);
                assert_int_equal(both(bad), TSF_LIC_VERDICT_MALFORMED);
                /* ...which as a temporary token is fine. */
                free(TAKE_PTR(bad));
                b[1] = TSF_LIC_TEMPORARY;
                bad = signed_text(pkey_a, b, 104);
                assert_int_equal(both(bad), TSF_LIC_VERDICT_OK);
                /* So is a temporary token for any product version... */
                free(TAKE_PTR(bad));
                b[99] = 0;
                bad = signed_text(pkey_a, b, TSF_LIC_BODY_MIN);
                assert_int_equal(both(bad), TSF_LIC_VERDICT_OK);
                /* ...but not a CAL without one. */
                free(TAKE_PTR(bad));
                memcpy(b, body, 110);
                b[110] = 0;
                bad = signed_text(pkey_a, b, 111);
                assert_int_equal(both(bad), TSF_LIC_VERDICT_MALFORMED);
        }
        /* A body of more than TSF_LIC_BODY_MAX bytes. */
        {
                uint8_t b[TSF_LIC_BODY_MAX + 1];
                _cleanup_free_ char *bad = NULL;

                memset(b, 'x', sizeof(b));
                memcpy(b, body, 98);
                bad = signed_text(pkey_a, b, sizeof(b));
                assert_int_equal(both(bad), TSF_LIC_VERDICT_MALFORMED);
        }
}

static void test_unsupported_version(void **state) {
        uint8_t body[TSF_LIC_BODY_MAX + 8], sig[TSF_LIC_SIGNATURE_SIZE];
        _cleanup_free_ char *text = NULL, *v2 = NULL, *v0 = NULL;
        struct tsf_lic_token t;
        char buf[TSF_LIC_TEXT_MAX + 8];
        size_t n;

        make_token(&t, TSF_LIC_CAL);
        text = sign_ok(&t, key_a);

        /* A version 2 token as a future server would write it. */
        n = split(text, body, sig);
        body[0] = 2;
        v2 = signed_text(pkey_a, body, n);
        snprintf(buf, sizeof(buf), "tsl2.%s", v2 + 5);
        assert_int_equal(both(buf), TSF_LIC_VERDICT_UNSUPPORTED_VERSION);
        /* Whatever follows the prefix: it may be another layout. */
        assert_int_equal(both("tsl2.!!!"), TSF_LIC_VERDICT_UNSUPPORTED_VERSION);
        assert_int_equal(both("tsl10."), TSF_LIC_VERDICT_UNSUPPORTED_VERSION);
        assert_int_equal(both("tsl255.x"), TSF_LIC_VERDICT_UNSUPPORTED_VERSION);
        assert_int_equal(both("tsl0.x"), TSF_LIC_VERDICT_UNSUPPORTED_VERSION);
        /* The version byte decides too, even under "tsl1.". */
        assert_int_equal(both(v2), TSF_LIC_VERDICT_UNSUPPORTED_VERSION);
        body[0] = 0;
        v0 = signed_text(pkey_a, body, n);
        assert_int_equal(both(v0), TSF_LIC_VERDICT_UNSUPPORTED_VERSION);

        /* And sign() writes version 1 only. */
        t.version = 2;
        assert_int_equal(tsf_lic_token_sign(&t, key_a, &(char *){NULL}), -EINVAL);
}

static void test_other_device(void **state) {
        _cleanup_free_ char *text = NULL;
        struct tsf_lic_token t, v;

        make_token(&t, TSF_LIC_CAL);
        text = sign_ok(&t, key_a);
        assert_int_equal(tsf_lic_token_verify(text, trust, HWID_OTHER, sizeof(HWID_OTHER) - 1, T0, &v),
                         TSF_LIC_VERDICT_OTHER_DEVICE);
        /* Authentic, so shown. */
        assert_string_equal(v.pack_id, "pack-2025-a");
        assert_int_equal(tsf_lic_token_verify(text, trust, HWID, sizeof(HWID) - 2, T0, NULL),
                         TSF_LIC_VERDICT_OTHER_DEVICE);
        assert_int_equal(tsf_lic_token_verify(text, trust, NULL, 0, T0, NULL), TSF_LIC_VERDICT_OTHER_DEVICE);
        /* The device check comes before the expiry. */
        assert_int_equal(
                tsf_lic_token_verify(text, trust, HWID_OTHER, sizeof(HWID_OTHER) - 1, t.expires, NULL),
                TSF_LIC_VERDICT_OTHER_DEVICE);
}

/* `expires` is exclusive: the token is valid up to the microsecond before
 * it. */
static void test_expired(void **state) {
        _cleanup_free_ char *text = NULL;
        struct tsf_fake_clock clock;
        struct tsf_lic_token t, v;

        make_token(&t, TSF_LIC_TEMPORARY);
        text = sign_ok(&t, key_a);
        assert_int_equal(verify(text, t.expires - 1, NULL), TSF_LIC_VERDICT_OK);
        assert_int_equal(verify(text, t.expires, &v), TSF_LIC_VERDICT_EXPIRED);
        assert_int_equal(v.expires, t.expires);
        assert_int_equal(verify(text, USEC_INFINITY, NULL), TSF_LIC_VERDICT_EXPIRED);
        /* Not yet issued by our clock: accepted (clock skew between servers). */
        assert_int_equal(verify(text, t.issued - USEC_PER_HOUR, NULL), TSF_LIC_VERDICT_OK);
        assert_int_equal(verify(text, 0, NULL), TSF_LIC_VERDICT_OK);

        /* The way callers use it: the process clock, 90 days in a line. */
        tsf_fake_clock_init(&clock, T0, 1000 * USEC_PER_SEC);
        tsf_clock_install(&clock.base);
        assert_int_equal(verify(text, tsf_now_realtime(), NULL), TSF_LIC_VERDICT_OK);
        tsf_fake_clock_advance(&clock, 90 * USEC_PER_DAY - 1);
        assert_int_equal(verify(text, tsf_now_realtime(), NULL), TSF_LIC_VERDICT_OK);
        tsf_fake_clock_advance(&clock, 1);
        assert_int_equal(verify(text, tsf_now_realtime(), NULL), TSF_LIC_VERDICT_EXPIRED);
        tsf_clock_install(NULL);
}

/* Breaks rule `i` of the format in `t`; false past the last rule. */
static bool break_rule(size_t i, struct tsf_lic_token *t, const char **what) {
        switch (i) {
        case 0:
                *what = "version 0";
                t->version = 0;
                return true;
        case 1:
                *what = "kind 0";
                t->kind = 0;
                return true;
        case 2:
                *what = "kind 3";
                t->kind = 3;
                return true;
        case 3:
                *what = "temporary with a pack id";
                t->kind = TSF_LIC_TEMPORARY;
                return true;
        case 4:
                *what = "CAL without a pack id";
                t->pack_id[0] = '\0';
                return true;
        case 5:
                *what = "CAL without a product version";
                t->product_version[0] = '\0';
                return true;
        case 6:
                *what = "space in the pack id";
                t->pack_id[4] = ' ';
                return true;
        case 7:
                *what = "newline in the product version";
                t->product_version[1] = '\n';
                return true;
        case 8:
                *what = "UTF-8 in the product version";
                strcpy(t->product_version, "v\xc3\xa9");
                return true;
        case 9:
                *what = "pack id not terminated";
                memset(t->pack_id, 'a', sizeof(t->pack_id));
                return true;
        case 10:
                *what = "product version not terminated";
                memset(t->product_version, 'a', sizeof(t->product_version));
                return true;
        case 11:
                *what = "issued == expires";
                t->issued = t->expires;
                return true;
        case 12:
                *what = "issued > expires";
                t->issued = t->expires + 1;
                return true;
        case 13:
                *what = "expires >= 2^63";
                t->expires = (usec_t)INT64_MAX + 1;
                return true;
        case 14:
                *what = "'/' in the pack id";
                t->pack_id[0] = '/';
                return true;
        case 15:
                *what = "'~' in the product version";
                t->product_version[0] = '~';
                return true;
        case 16:
                *what = "temporary with a bad product version";
                t->kind = TSF_LIC_TEMPORARY;
                t->pack_id[0] = '\0';
                t->product_version[0] = ' ';
                return true;
        default:
                return false;
        }
}

static void test_sign_refuses(void **state) {
        struct tsf_lic_token t;
        const char *what = NULL;

        make_token(&t, TSF_LIC_CAL);
        assert_true(tsf_lic_token_valid(&t));
        for (size_t i = 0; make_token(&t, TSF_LIC_CAL), break_rule(i, &t, &what); i++) {
                uint8_t body[TSF_LIC_BODY_MAX];
                char *text = NULL;

                if (tsf_lic_token_valid(&t) || tsf_lic_token_sign(&t, key_a, &text) != -EINVAL ||
                    tsf_lic_token_body(&t, body, sizeof(body)) != -EINVAL)
                        fail_msg("%s: accepted", what);
                assert_null(text);
        }

        /* The limits themselves are fine. */
        {
                _cleanup_free_ char *text = NULL;

                make_token(&t, TSF_LIC_CAL);
                t.issued = 0;
                t.expires = (usec_t)INT64_MAX;
                strcpy(t.pack_id, "-");
                text = sign_ok(&t, key_a);
                assert_int_equal(verify(text, (usec_t)INT64_MAX - 1, NULL), TSF_LIC_VERDICT_OK);
        }
}

static void test_key_files(void **state) {
        _cleanup_(tsf_lic_key_freep) struct tsf_lic_key *k = NULL, *priv = NULL, *pub = NULL, *k2 = NULL,
                                                        *x = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *ec = NULL;
        char kp[PATH_MAX], pp[PATH_MAX], other[PATH_MAX], buf[256];
        uint8_t raw[32], id[32];
        size_t rawlen = sizeof(raw);
        struct stat st;
        FILE *f;
        char *text = NULL;
        mode_t old_umask;

        snprintf(kp, sizeof(kp), "%s/keys/server.key", dir);
        snprintf(pp, sizeof(pp), "%s/keys/server.pem", dir);
        snprintf(other, sizeof(other), "%s/keys/other.key", dir);
        snprintf(buf, sizeof(buf), "%s/keys", dir);
        assert_int_equal(mkdir(buf, 0700), 0);

        assert_int_equal(tsf_lic_key_generate(&k), 0);
        assert_true(tsf_lic_key_has_private(k));
        /* Modes are exact whatever the umask. */
        old_umask = umask(0);
        assert_int_equal(tsf_lic_key_write(k, kp, pp, false), 0);
        umask(old_umask);
        assert_int_equal(stat(kp, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0600);
        assert_int_equal(stat(pp, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0644);

        f = fopen(kp, "re");
        assert_non_null(f);
        assert_non_null(fgets(buf, sizeof(buf), f));
        fclose(f);
        assert_string_equal(buf, "-----BEGIN PRIVATE KEY-----\n"); /* PKCS#8 */
        f = fopen(pp, "re");
        assert_non_null(f);
        assert_non_null(fgets(buf, sizeof(buf), f));
        fclose(f);
        assert_string_equal(buf, "-----BEGIN PUBLIC KEY-----\n"); /* SubjectPublicKeyInfo */

        assert_int_equal(tsf_lic_key_load_private(kp, &priv), 0);
        assert_true(tsf_lic_key_has_private(priv));
        assert_int_equal(tsf_lic_key_load_public(pp, &pub), 0);
        assert_false(tsf_lic_key_has_private(pub));
        assert_memory_equal(tsf_lic_key_id(priv), tsf_lic_key_id(k), 32);
        assert_memory_equal(tsf_lic_key_id(pub), tsf_lic_key_id(k), 32);

        /* The key id is SHA-256 of the raw public key, computed here by
         * OpenSSL from the file. */
        f = fopen(pp, "re");
        assert_non_null(f);
        {
                _cleanup_(EVP_PKEY_freep) EVP_PKEY *p = PEM_read_PUBKEY(f, NULL, NULL, NULL);

                fclose(f);
                assert_non_null(p);
                assert_int_equal(EVP_PKEY_get_raw_public_key(p, raw, &rawlen), 1);
                assert_int_equal(rawlen, 32);
        }
        assert_int_equal(EVP_Digest(raw, 32, id, NULL, EVP_sha256(), NULL), 1);
        assert_memory_equal(tsf_lic_key_id(k), id, 32);

        /* A loaded private key signs what the public one verifies. */
        {
                _cleanup_(tsf_lic_trust_freep) struct tsf_lic_trust *tr = NULL;
                _cleanup_free_ char *tok = NULL;
                struct tsf_lic_token t;

                make_token(&t, TSF_LIC_CAL);
                tok = sign_ok(&t, priv);
                assert_int_equal(tsf_lic_trust_new(&tr), 0);
                assert_int_equal(tsf_lic_trust_add(tr, pub), 0);
                assert_int_equal(tsf_lic_token_verify(tok, tr, HWID, sizeof(HWID) - 1, T0, NULL),
                                 TSF_LIC_VERDICT_OK);
                /* A public key cannot sign. */
                assert_int_equal(tsf_lic_token_sign(&t, pub, &text), -EINVAL);
                assert_null(text);
        }

        /* Nothing replaced without force, and no half pair written. */
        assert_int_equal(tsf_lic_key_generate(&k2), 0);
        assert_int_equal(tsf_lic_key_write(k2, kp, pp, false), -EEXIST);
        assert_int_equal(tsf_lic_key_write(k2, other, pp, false), -EEXIST);
        assert_int_equal(access(other, F_OK), -1);
        assert_int_equal(tsf_lic_key_load_public(pp, &x), 0);
        assert_memory_equal(tsf_lic_key_id(x), tsf_lic_key_id(k), 32);
        x = tsf_lic_key_free(x);
        assert_int_equal(tsf_lic_key_write(k2, kp, pp, true), 0);
        assert_int_equal(tsf_lic_key_load_public(pp, &x), 0);
        assert_memory_equal(tsf_lic_key_id(x), tsf_lic_key_id(k2), 32);
        x = tsf_lic_key_free(x);
        assert_int_equal(stat(kp, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0600);
        /* A public-only key has no private file to write. */
        assert_int_equal(tsf_lic_key_write(pub, other, NULL, false), -EINVAL);
        assert_int_equal(tsf_lic_key_write(k, NULL, NULL, false), -EINVAL);
        snprintf(buf, sizeof(buf), "%s/keys/pub-only.pem", dir);
        assert_int_equal(tsf_lic_key_write(pub, NULL, buf, false), 0);
        /* Temporary files all gone. */
        {
                int count = 0;
                FILE *p;
                char cmd[PATH_MAX + 32];

                snprintf(cmd, sizeof(cmd), "ls -A '%s/keys' | wc -l", dir);
                p = popen(cmd, "r");
                assert_non_null(p);
                assert_int_equal(fscanf(p, "%d", &count), 1);
                pclose(p);
                assert_int_equal(count, 3);
        }

        /* Loading the wrong thing. */
        snprintf(buf, sizeof(buf), "%s/keys/missing.key", dir);
        assert_int_equal(tsf_lic_key_load_private(buf, &x), -ENOENT);
        assert_int_equal(tsf_lic_key_load_public(kp, &x), -EBADMSG);
        assert_int_equal(tsf_lic_key_load_private(pp, &x), -EBADMSG);
        snprintf(buf, sizeof(buf), "%s/keys", dir);
        assert_int_equal(tsf_lic_key_load_public(buf, &x), -EISDIR);
        assert_int_equal(tsf_lic_key_load_public("/dev/null", &x), -EINVAL);
        assert_null(x);

        /* An encrypted private key is refused, never prompted for. */
        {
                _cleanup_(EVP_PKEY_freep) EVP_PKEY *p = read_private_pem(kp);

                snprintf(buf, sizeof(buf), "%s/keys/encrypted.key", dir);
                f = fopen(buf, "we");
                assert_non_null(f);
                assert_int_equal(
                        PEM_write_PKCS8PrivateKey(f, p, EVP_aes_256_cbc(), NULL, 0, NULL, (void *)"secret"),
                        1);
                fclose(f);
                assert_int_equal(tsf_lic_key_load_private(buf, &x), -EBADMSG);
        }
        /* A P-256 key is not an Ed25519 key. */
        ec = EVP_EC_gen("P-256");
        assert_non_null(ec);
        snprintf(buf, sizeof(buf), "%s/keys/ec.key", dir);
        f = fopen(buf, "we");
        assert_non_null(f);
        assert_int_equal(PEM_write_PKCS8PrivateKey(f, ec, NULL, NULL, 0, NULL, NULL), 1);
        fclose(f);
        assert_int_equal(tsf_lic_key_load_private(buf, &x), -EKEYREJECTED);
        snprintf(buf, sizeof(buf), "%s/keys/ec.pem", dir);
        f = fopen(buf, "we");
        assert_non_null(f);
        assert_int_equal(PEM_write_PUBKEY(f, ec), 1);
        fclose(f);
        assert_int_equal(tsf_lic_key_load_public(buf, &x), -EKEYREJECTED);
        assert_null(x);
}

struct skipped {
        char name[64];
        int error;
};
struct skips {
        struct skipped s[16];
        size_t n;
};

static void on_skip(const char *path, int error, void *userdata) {
        struct skips *k = userdata;

        assert_true(k->n < ELEMENTSOF(k->s));
        snprintf(k->s[k->n].name, sizeof(k->s[k->n].name), "%s", strrchr(path, '/') + 1);
        k->s[k->n++].error = error;
}

static void test_trust_dir(void **state) {
        _cleanup_(tsf_lic_trust_freep) struct tsf_lic_trust *tr = NULL;
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *ec = NULL;
        _cleanup_free_ char *text_a = NULL, *text_b = NULL, *text_u = NULL;
        char td[PATH_MAX], p[PATH_MAX + 64];
        struct skips skips = {};
        struct tsf_lic_token t;
        bool root = geteuid() == 0;
        FILE *f;
        int r;

        snprintf(td, sizeof(td), "%s/trusted", dir);
        assert_int_equal(mkdir(td, 0755), 0);

#define PATH(name) (snprintf(p, sizeof(p), "%s/%s", td, name), p)
        assert_int_equal(tsf_lic_key_write(key_a, NULL, PATH("a.pem"), false), 0);
        assert_int_equal(tsf_lic_key_write(key_b, NULL, PATH("b.pem"), false), 0);
        assert_int_equal(tsf_lic_key_write(key_a, NULL, PATH("c-copy-of-a.pem"), false), 0);
        {
                static const char broken[] =
                        "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n";

                write_text(PATH("broken.pem"), broken, strlen(broken), 0644);
        }
        write_text(PATH("empty.pem"), "", 0, 0644);
        assert_int_equal(tsf_lic_key_write(key_a, PATH("private.pem"), NULL, false), 0);
        ec = EVP_EC_gen("P-256");
        assert_non_null(ec);
        f = fopen(PATH("p256.pem"), "we");
        assert_non_null(f);
        assert_int_equal(PEM_write_PUBKEY(f, ec), 1);
        fclose(f);
        assert_int_equal(mkdir(PATH("subdir.pem"), 0755), 0);
        assert_int_equal(mkfifo(PATH("fifo.pem"), 0644), 0);
        assert_int_equal(symlink("no-such-file", PATH("dangling.pem")), 0);
        assert_int_equal(tsf_lic_key_write(key_u, NULL, PATH("unreadable.pem"), false), 0);
        assert_int_equal(chmod(p, 0), 0);
        /* Ignored silently: not *.pem, or hidden. */
        assert_int_equal(tsf_lic_key_write(key_u, NULL, PATH("u.pub"), false), 0);
        assert_int_equal(tsf_lic_key_write(key_u, NULL, PATH(".u.pem"), false), 0);
        write_text(PATH("README"), "x", 1, 0644);
        write_text(PATH(".pem"), "x", 1, 0644);
#undef PATH

        assert_int_equal(tsf_lic_trust_new(&tr), 0);
        r = tsf_lic_trust_load_dir(tr, td, on_skip, &skips);
        /* root reads a mode-0 file: then the untrusted key U is in. */
        assert_int_equal(r, root ? 3 : 2);
        assert_int_equal(tsf_lic_trust_size(tr), (size_t)r);
        {
                const struct skipped want[] = {
                        {"broken.pem", -EBADMSG},  {"c-copy-of-a.pem", -EEXIST}, {"dangling.pem", -ENOENT},
                        {"empty.pem", -EBADMSG},   {"fifo.pem", -EINVAL},        {"p256.pem", -EKEYREJECTED},
                        {"private.pem", -EBADMSG}, {"subdir.pem", -EISDIR},      {"unreadable.pem", -EACCES},
                };
                size_t nwant = ELEMENTSOF(want) - (root ? 1 : 0);

                for (size_t i = 0; i < skips.n; i++)
                        print_message("skipped %s: %s\n", skips.s[i].name, strerror(-skips.s[i].error));
                assert_int_equal(skips.n, nwant);
                for (size_t i = 0; i < nwant; i++) {
                        assert_string_equal(skips.s[i].name, want[i].name);
                        assert_int_equal(skips.s[i].error, want[i].error);
                }
        }
        assert_non_null(tsf_lic_trust_find(tr, tsf_lic_key_id(key_a)));
        assert_non_null(tsf_lic_trust_find(tr, tsf_lic_key_id(key_b)));
        assert_true(root || !tsf_lic_trust_find(tr, tsf_lic_key_id(key_u)));

        make_token(&t, TSF_LIC_CAL);
        text_a = sign_ok(&t, key_a);
        text_b = sign_ok(&t, key_b);
        text_u = sign_ok(&t, key_u);
        assert_int_equal(tsf_lic_token_verify(text_a, tr, HWID, sizeof(HWID) - 1, T0, NULL),
                         TSF_LIC_VERDICT_OK);
        assert_int_equal(tsf_lic_token_verify(text_b, tr, HWID, sizeof(HWID) - 1, T0, NULL),
                         TSF_LIC_VERDICT_OK);
        if (!root)
                assert_int_equal(tsf_lic_token_verify(text_u, tr, HWID, sizeof(HWID) - 1, T0, NULL),
                                 TSF_LIC_VERDICT_UNKNOWN_ISSUER);

        /* Loading again adds nothing; every key is a duplicate. */
        skips.n = 0;
        r = tsf_lic_trust_load_dir(tr, td, NULL, NULL);
        assert_int_equal(r, 0);

        /* The directory itself missing is the caller's error. */
        snprintf(p, sizeof(p), "%s/no-such-dir", dir);
        assert_int_equal(tsf_lic_trust_load_dir(tr, p, on_skip, &skips), -ENOENT);
        assert_int_equal(skips.n, 0);

        /* A trust store keeps only the public half of what it is given. */
        assert_int_equal(tsf_lic_trust_add(tr, key_a), -EEXIST);
        {
                _cleanup_(tsf_lic_trust_freep) struct tsf_lic_trust *t2 = NULL;

                assert_int_equal(tsf_lic_trust_new(&t2), 0);
                assert_int_equal(tsf_lic_trust_add(t2, key_u), 0);
                assert_false(tsf_lic_key_has_private(tsf_lic_trust_find(t2, tsf_lic_key_id(key_u))));
        }
}

/* ---- main ---------------------------------------------------------------- */

static int group_setup(void **state) {
        char path[PATH_MAX + 16];

        snprintf(dir, sizeof(dir), "%s/tsfarm-lictoken-XXXXXX", getenv("TMPDIR") ?: "/tmp");
        if (!mkdtemp(dir))
                return -1;
        if (tsf_lic_key_generate(&key_a) < 0 || tsf_lic_key_generate(&key_b) < 0 ||
            tsf_lic_key_generate(&key_u) < 0)
                return -1;
        /* A and U's EVP_PKEYs for signing by hand, through their files. */
        snprintf(path, sizeof(path), "%s/a.key", dir);
        if (tsf_lic_key_write(key_a, path, NULL, false) < 0)
                return -1;
        pkey_a = read_private_pem(path);
        snprintf(path, sizeof(path), "%s/u.key", dir);
        if (tsf_lic_key_write(key_u, path, NULL, false) < 0)
                return -1;
        pkey_u = read_private_pem(path);
        if (tsf_lic_trust_new(&trust) < 0 || tsf_lic_trust_add(trust, key_a) < 0 ||
            tsf_lic_trust_add(trust, key_b) < 0)
                return -1;
        return 0;
}

static int group_teardown(void **state) {
        char cmd[PATH_MAX + 16];

        trust = tsf_lic_trust_free(trust);
        key_a = tsf_lic_key_free(key_a);
        key_b = tsf_lic_key_free(key_b);
        key_u = tsf_lic_key_free(key_u);
        EVP_PKEY_free(pkey_a);
        EVP_PKEY_free(pkey_u);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_strings),        cmocka_unit_test(test_hardware_hash),
                cmocka_unit_test(test_round_trip),     cmocka_unit_test(test_longest),
                cmocka_unit_test(test_body_layout),    cmocka_unit_test(test_unknown_issuer),
                cmocka_unit_test(test_forged),         cmocka_unit_test(test_altered_body),
                cmocka_unit_test(test_altered_text),   cmocka_unit_test(test_malformed_text),
                cmocka_unit_test(test_malformed_body), cmocka_unit_test(test_unsupported_version),
                cmocka_unit_test(test_other_device),   cmocka_unit_test(test_expired),
                cmocka_unit_test(test_sign_refuses),   cmocka_unit_test(test_key_files),
                cmocka_unit_test(test_trust_dir),
        };

        return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
