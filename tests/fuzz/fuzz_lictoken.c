/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target for license tokens (lib/lictoken.c). Each input is used
 * twice:
 *
 *   as text   a NUL-terminated copy goes to tsf_lic_token_parse() and
 *             tsf_lic_token_verify(): no crash, no system error, the two
 *             agree on malformed/unsupported-version, only authentic tokens
 *             are handed back, a parsed token's body is the canonical
 *             encoding of what was parsed, and a token that verifies
 *             re-signs to exactly the same text.
 *
 *   as a body the harness puts the fuzz key's id and the device's hash in
 *             place and signs the bytes itself, so random bodies get past
 *             the issuer and signature checks into the layout checks: the
 *             verdict is never unknown-issuer, bad-signature or
 *             other-device, and an accepted body encodes back to exactly
 *             the input bytes and signs to the same text.
 *
 * The key is fixed (a constant seed), so corpus entries signed with it stay
 * meaningful from run to run; tests/fuzz/seeds/fuzz_lictoken/ has a few.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "tsfarm/lictoken.h"
#include "tsfarm/macro.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define CHECK(cond)                                                                                   \
        do {                                                                                          \
                if (!(cond)) {                                                                        \
                        fprintf(stderr, "fuzz_lictoken: invariant violated at %s:%d: %s\n", __FILE__, \
                                __LINE__, #cond);                                                     \
                        abort();                                                                      \
                }                                                                                     \
        } while (0)

/* Seeds in tests/fuzz/seeds/fuzz_lictoken/ were made with these. */
static const uint8_t KEY_SEED[32] = "tsfarm fuzz_lictoken fixed key!";
static const uint8_t HWID[] = "fuzz-hardware-id-0123456789";
#define NOW (1795000000ULL * USEC_PER_SEC)

static EVP_PKEY *pkey;
static struct tsf_lic_key *key;
static struct tsf_lic_trust *trust;
static uint8_t device_hash[TSF_LIC_DEVICE_HASH_SIZE];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        char path[64];
        FILE *f;
        int fd;

        pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, KEY_SEED, sizeof(KEY_SEED));
        CHECK(pkey);
        /* Through a PEM file, the way the license server loads its key. */
        fd = memfd_create("fuzz_lictoken.key", MFD_CLOEXEC);
        CHECK(fd >= 0);
        f = fdopen(dup(fd), "w");
        CHECK(f);
        CHECK(PEM_write_PKCS8PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL) == 1);
        CHECK(fclose(f) == 0);
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        CHECK(tsf_lic_key_load_private(path, &key) == 0);
        close(fd);
        CHECK(tsf_lic_trust_new(&trust) == 0);
        CHECK(tsf_lic_trust_add(trust, key) == 0);
        CHECK(tsf_lic_hardware_hash(HWID, sizeof(HWID) - 1, device_hash) == 0);
        return 0;
}

/* base64url without padding, through OpenSSL's base64: independent of the
 * library's own encoder. */
static char *enc(const uint8_t *data, size_t len) {
        char *out = malloc(4 * (len / 3 + 1) + 1);

        CHECK(out);
        EVP_EncodeBlock((unsigned char *)out, data, (int)len);
        for (char *p = out; *p; p++)
                *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
        *strchrnul(out, '=') = '\0';
        return out;
}

static bool is_zero(const void *p, size_t n) {
        const uint8_t *b = p;

        for (size_t i = 0; i < n; i++)
                if (b[i])
                        return false;
        return true;
}

static bool authentic(int v) {
        return v == TSF_LIC_VERDICT_OK || v == TSF_LIC_VERDICT_OTHER_DEVICE || v == TSF_LIC_VERDICT_EXPIRED;
}

static bool token_equal(const struct tsf_lic_token *a, const struct tsf_lic_token *b) {
        return a->version == b->version && a->kind == b->kind &&
               memcmp(a->token_id, b->token_id, sizeof(a->token_id)) == 0 &&
               memcmp(a->issuer_key_id, b->issuer_key_id, sizeof(a->issuer_key_id)) == 0 &&
               memcmp(a->device_hash, b->device_hash, sizeof(a->device_hash)) == 0 &&
               a->issued == b->issued && a->expires == b->expires && strcmp(a->pack_id, b->pack_id) == 0 &&
               strcmp(a->product_version, b->product_version) == 0;
}

/* What an accepted token must satisfy, whichever way it came in. */
static void check_authentic(const char *text, int v, const struct tsf_lic_token *t, const uint8_t *body,
                            size_t body_len) {
        uint8_t again[TSF_LIC_BODY_MAX];
        char *resigned = NULL;
        ssize_t n;

        CHECK(tsf_lic_token_valid(t));
        CHECK(memcmp(t->issuer_key_id, tsf_lic_key_id(key), TSF_LIC_KEY_ID_SIZE) == 0);
        CHECK((v == TSF_LIC_VERDICT_OTHER_DEVICE) ==
              (memcmp(t->device_hash, device_hash, sizeof(device_hash)) != 0));
        if (v != TSF_LIC_VERDICT_OTHER_DEVICE)
                CHECK((v == TSF_LIC_VERDICT_EXPIRED) == (NOW >= t->expires));
        n = tsf_lic_token_body(t, again, sizeof(again));
        CHECK(n > 0 && n <= TSF_LIC_BODY_MAX);
        if (body)
                CHECK((size_t)n == body_len && memcmp(again, body, body_len) == 0);
        CHECK(tsf_lic_token_sign(t, key, &resigned) == 0);
        CHECK(strcmp(resigned, text) == 0);
        CHECK(strlen(text) <= TSF_LIC_TEXT_MAX);
        free(resigned);
}

static void as_text(const uint8_t *data, size_t size) {
        struct tsf_lic_token p, t;
        char *text = malloc(size + 1);
        int pv, v;

        CHECK(text);
        memcpy(text, data, size);
        text[size] = '\0';

        pv = tsf_lic_token_parse(text, &p);
        CHECK(pv == TSF_LIC_VERDICT_OK || pv == TSF_LIC_VERDICT_MALFORMED ||
              pv == TSF_LIC_VERDICT_UNSUPPORTED_VERSION);
        if (pv == TSF_LIC_VERDICT_OK) {
                /* Canonical: the text's body is the encoding of the token. */
                uint8_t body[TSF_LIC_BODY_MAX];
                ssize_t n = tsf_lic_token_body(&p, body, sizeof(body));
                char *b;

                CHECK(tsf_lic_token_valid(&p));
                CHECK(n > 0);
                b = enc(body, (size_t)n);
                CHECK(strncmp(text, "tsl1.", 5) == 0 && strncmp(text + 5, b, strlen(b)) == 0 &&
                      text[5 + strlen(b)] == '.');
                CHECK(strlen(text) <= TSF_LIC_TEXT_MAX);
                free(b);
        } else
                CHECK(is_zero(&p, sizeof(p)));

        v = tsf_lic_token_verify(text, trust, HWID, sizeof(HWID) - 1, NOW, &t);
        CHECK(v >= 0 && v < _TSF_LIC_VERDICT_MAX);
        if (pv != TSF_LIC_VERDICT_OK)
                CHECK(v == pv);
        else
                CHECK(v != TSF_LIC_VERDICT_MALFORMED && v != TSF_LIC_VERDICT_UNSUPPORTED_VERSION);
        if (authentic(v)) {
                CHECK(token_equal(&t, &p));
                check_authentic(text, v, &t, NULL, 0);
        } else
                CHECK(is_zero(&t, sizeof(t)));
        free(text);
}

static void as_body(const uint8_t *data, size_t size) {
        uint8_t sig[TSF_LIC_SIGNATURE_SIZE], *body = malloc(size ? size : 1);
        size_t siglen = sizeof(sig);
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        struct tsf_lic_token t;
        char *b, *s, *text;
        int v;

        CHECK(body && ctx);
        memcpy(body, data, size);
        if (size >= 50)
                memcpy(body + 18, tsf_lic_key_id(key), TSF_LIC_KEY_ID_SIZE);
        if (size >= 82)
                memcpy(body + 50, device_hash, sizeof(device_hash));
        /* Signing is most of the cost: skip it where the verdict comes
         * before the signature check anyway (wrong length or version). */
        memset(sig, 0, sizeof(sig));
        if (size >= TSF_LIC_BODY_MIN && size <= TSF_LIC_BODY_MAX && body[0] == TSF_LIC_TOKEN_VERSION) {
                CHECK(EVP_DigestSignInit(ctx, NULL, NULL, NULL, pkey) == 1);
                CHECK(EVP_DigestSign(ctx, sig, &siglen, body, size) == 1 && siglen == sizeof(sig));
        }
        EVP_MD_CTX_free(ctx);
        b = enc(body, size);
        s = enc(sig, sizeof(sig));
        CHECK(asprintf(&text, "tsl1.%s.%s", b, s) > 0);
        free(b);
        free(s);

        v = tsf_lic_token_verify(text, trust, HWID, sizeof(HWID) - 1, NOW, &t);
        CHECK(v == TSF_LIC_VERDICT_OK || v == TSF_LIC_VERDICT_EXPIRED || v == TSF_LIC_VERDICT_MALFORMED ||
              v == TSF_LIC_VERDICT_UNSUPPORTED_VERSION);
        CHECK((v == TSF_LIC_VERDICT_UNSUPPORTED_VERSION) ==
              (size > 0 && body[0] != TSF_LIC_TOKEN_VERSION && size <= TSF_LIC_BODY_MAX));
        if (authentic(v))
                check_authentic(text, v, &t, body, size);
        free(text);
        free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        as_text(data, size);
        as_body(data, size);
        return 0;
}
