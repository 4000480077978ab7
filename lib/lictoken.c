/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * License tokens (docs/licensing.md, "Token format (version 1)"), with
 * OpenSSL 3's EVP API for Ed25519 and SHA-256, like lib/pki.c.
 *
 * Ed25519 because its signatures are small (64 bytes keep a token inside
 * one HTTP header line), deterministic (the same token signs to the same
 * text, which the fuzzer checks), and have no parameters to get wrong.
 *
 * The parser is strict on purpose: one token has exactly one text form
 * (canonical base64url, no padding, no whitespace, no trailing bytes), so
 * two different strings never name the same token and a verifier cannot
 * be talked into accepting a variant the issuer never wrote.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>

#include "tsfarm/cleanup.h"
#include "tsfarm/fs.h"
#include "tsfarm/lictoken.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_PKEY *, EVP_PKEY_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_MD_CTX *, EVP_MD_CTX_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(BIO *, BIO_free);

#define ED25519_RAW_SIZE 32
#define TEXT_PREFIX "tsl1."
#define TEXT_PREFIX_LEN (sizeof(TEXT_PREFIX) - 1)
/* A key file is a few hundred bytes; anything much larger is not one. */
#define KEY_FILE_MAX (64 * 1024)

/* Body offsets, as in the contract's table. */
#define OFF_VERSION 0
#define OFF_KIND 1
#define OFF_TOKEN_ID 2
#define OFF_ISSUER 18
#define OFF_DEVICE 50
#define OFF_ISSUED 82
#define OFF_EXPIRES 90
#define OFF_STRINGS 98

_Static_assert(OFF_STRINGS == TSF_LIC_BODY_FIXED, "fixed part of the body");
_Static_assert(OFF_ISSUER == OFF_TOKEN_ID + TSF_LIC_TOKEN_ID_SIZE, "token id");
_Static_assert(OFF_DEVICE == OFF_ISSUER + TSF_LIC_KEY_ID_SIZE, "issuer key id");
_Static_assert(OFF_ISSUED == OFF_DEVICE + TSF_LIC_DEVICE_HASH_SIZE, "device hash");
#define B64URL_LEN(n) ((n) / 3 * 4 + ((n) % 3 ? (n) % 3 + 1 : 0))
_Static_assert(TSF_LIC_TEXT_MAX == TEXT_PREFIX_LEN + B64URL_LEN(TSF_LIC_BODY_MAX) + 1 +
                                           B64URL_LEN(TSF_LIC_SIGNATURE_SIZE),
               "longest text");
/* One length byte per string. */
_Static_assert(TSF_LIC_PACK_ID_MAX <= UINT8_MAX && TSF_LIC_PRODUCT_VERSION_MAX <= UINT8_MAX, "length bytes");

struct tsf_lic_key {
        EVP_PKEY *pkey;
        bool has_private;
        uint8_t id[TSF_LIC_KEY_ID_SIZE];
};

struct tsf_lic_trust {
        struct tsf_lic_key **keys;
        size_t n_keys;
};

/* Clears OpenSSL's error queue and returns r: a stale entry left behind
 * would be reported later by an unrelated TLS call in the same thread. */
static int ossl_fail(int r, const char *what) {
        unsigned long e = ERR_peek_last_error();
        char buf[160] = "";

        if (e != 0)
                ERR_error_string_n(e, buf, sizeof(buf));
        ERR_clear_error();
        return log_debug_errno(r, "lictoken: %s failed%s%s", what, buf[0] ? ": " : "", buf);
}

const char *tsf_lic_verdict_to_string(int verdict) {
        static const char *const table[_TSF_LIC_VERDICT_MAX] = {
                [TSF_LIC_VERDICT_OK] = "ok",
                [TSF_LIC_VERDICT_MALFORMED] = "malformed",
                [TSF_LIC_VERDICT_UNSUPPORTED_VERSION] = "unsupported-version",
                [TSF_LIC_VERDICT_UNKNOWN_ISSUER] = "unknown-issuer",
                [TSF_LIC_VERDICT_BAD_SIGNATURE] = "bad-signature",
                [TSF_LIC_VERDICT_OTHER_DEVICE] = "other-device",
                [TSF_LIC_VERDICT_EXPIRED] = "expired",
        };

        return verdict >= 0 && verdict < _TSF_LIC_VERDICT_MAX ? table[verdict] : NULL;
}

const char *tsf_lic_kind_to_string(int kind) {
        switch (kind) {
        case TSF_LIC_TEMPORARY:
                return "temporary";
        case TSF_LIC_CAL:
                return "device-cal";
        default:
                return NULL;
        }
}

/* ---- base64url ----------------------------------------------------------- */

/* RFC 4648 section 5, without padding. Hand-written rather than OpenSSL's
 * EVP_EncodeBlock()/EVP_DecodeBlock(): those speak the other alphabet, pad,
 * and the decoder skips whitespace and ignores non-zero trailing bits,
 * all of which would need undoing around it. */
static const char b64url_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b64url_value(unsigned char c) {
        if (c >= 'A' && c <= 'Z')
                return c - 'A';
        if (c >= 'a' && c <= 'z')
                return c - 'a' + 26;
        if (c >= '0' && c <= '9')
                return c - '0' + 52;
        if (c == '-')
                return 62;
        if (c == '_')
                return 63;
        return -1;
}

static size_t b64url_len(size_t n) {
        return B64URL_LEN(n);
}

/* Writes b64url_len(n) characters, no NUL. */
static char *b64url_encode(const uint8_t *in, size_t n, char *out) {
        size_t i = 0;

        for (; i + 3 <= n; i += 3) {
                uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

                *out++ = b64url_alphabet[v >> 18];
                *out++ = b64url_alphabet[(v >> 12) & 63];
                *out++ = b64url_alphabet[(v >> 6) & 63];
                *out++ = b64url_alphabet[v & 63];
        }
        if (n - i == 1) {
                *out++ = b64url_alphabet[in[i] >> 2];
                *out++ = b64url_alphabet[(in[i] & 3) << 4];
        } else if (n - i == 2) {
                uint32_t v = (uint32_t)in[i] << 8 | in[i + 1];

                *out++ = b64url_alphabet[v >> 10];
                *out++ = b64url_alphabet[(v >> 4) & 63];
                *out++ = b64url_alphabet[(v & 15) << 2];
        }
        return out;
}

/* Decodes exactly `len` characters. Refuses padding, any byte outside the
 * alphabet, a length no encoder produces (4k+1), and non-zero bits in the
 * last character beyond the data ("QQ" is "A" but "QR" is refused): each
 * byte string has exactly one encoding. Returns the number of bytes,
 * -EINVAL, or -ENOBUFS. */
static ssize_t b64url_decode(const char *in, size_t len, uint8_t *out, size_t size) {
        size_t n = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0), o = 0;
        uint32_t acc = 0;
        unsigned bits = 0;

        if (len % 4 == 1)
                return -EINVAL;
        if (n > size)
                return -ENOBUFS;
        for (size_t i = 0; i < len; i++) {
                int v = b64url_value((unsigned char)in[i]);

                if (v < 0)
                        return -EINVAL;
                acc = acc << 6 | (uint32_t)v;
                bits += 6;
                if (bits >= 8) {
                        bits -= 8;
                        out[o++] = (uint8_t)(acc >> bits);
                        acc &= (1u << bits) - 1;
                }
        }
        /* Left over: 0, 2 or 4 bits, which must be zero. */
        if (acc != 0)
                return -EINVAL;
        return (ssize_t)o;
}

/* ---- body ---------------------------------------------------------------- */

static void put_be64(uint8_t *p, uint64_t v) {
        for (int i = 7; i >= 0; i--, v >>= 8)
                p[i] = (uint8_t)v;
}

static uint64_t get_be64(const uint8_t *p) {
        uint64_t v = 0;

        for (int i = 0; i < 8; i++)
                v = v << 8 | p[i];
        return v;
}

/* Letters, digits, '.', '-', '_', as the license store accepts for pack
 * ids and product versions: the strings go into logs, CSV reports, SQL and
 * file names, where anything else only invites confusion. */
static bool text_valid(const char *s, size_t len, size_t min, size_t max) {
        if (len < min || len > max)
                return false;
        for (size_t i = 0; i < len; i++) {
                char c = s[i];

                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '-' || c == '_'))
                        return false;
        }
        return true;
}

bool tsf_lic_token_valid(const struct tsf_lic_token *t) {
        size_t np, nv;

        if (!t || t->version != TSF_LIC_TOKEN_VERSION)
                return false;
        if (t->kind != TSF_LIC_TEMPORARY && t->kind != TSF_LIC_CAL)
                return false;
        /* Below 2^63: the store keeps times as SQLite's signed integers. */
        if (t->issued >= t->expires || t->expires > (usec_t)INT64_MAX)
                return false;
        np = strnlen(t->pack_id, sizeof(t->pack_id));
        nv = strnlen(t->product_version, sizeof(t->product_version));
        /* A temporary token comes from no pack and may be for any product
         * version (empty); a CAL always comes from a pack, and a pack is
         * for one product version. */
        if (t->kind == TSF_LIC_CAL)
                return text_valid(t->pack_id, np, 1, TSF_LIC_PACK_ID_MAX) &&
                       text_valid(t->product_version, nv, 1, TSF_LIC_PRODUCT_VERSION_MAX);
        return np == 0 && text_valid(t->product_version, nv, 0, TSF_LIC_PRODUCT_VERSION_MAX);
}

/*
 *  0        1      2          18              50            82       90        98
 *  +--------+------+----------+---------------+-------------+--------+---------+----+-------+----+-------+
 *  |version | kind | token id | issuer key id | device hash | issued | expires | np | pack  | nv | prod. |
 *  |   1    |  1   |    16    |      32       |     32      |  8 BE  |  8 BE   | 1  | np    | 1  | nv    |
 *  +--------+------+----------+---------------+-------------+--------+---------+----+-------+----+-------+
 */
ssize_t tsf_lic_token_body(const struct tsf_lic_token *t, uint8_t *buf, size_t size) {
        size_t np, nv, n;

        if (!tsf_lic_token_valid(t))
                return -EINVAL;
        np = strlen(t->pack_id);
        nv = strlen(t->product_version);
        n = TSF_LIC_BODY_FIXED + 1 + np + 1 + nv;
        if (n > size)
                return -ENOBUFS;

        buf[OFF_VERSION] = t->version;
        buf[OFF_KIND] = (uint8_t)t->kind;
        memcpy(buf + OFF_TOKEN_ID, t->token_id, TSF_LIC_TOKEN_ID_SIZE);
        memcpy(buf + OFF_ISSUER, t->issuer_key_id, TSF_LIC_KEY_ID_SIZE);
        memcpy(buf + OFF_DEVICE, t->device_hash, TSF_LIC_DEVICE_HASH_SIZE);
        put_be64(buf + OFF_ISSUED, t->issued);
        put_be64(buf + OFF_EXPIRES, t->expires);
        buf[OFF_STRINGS] = (uint8_t)np;
        memcpy(buf + OFF_STRINGS + 1, t->pack_id, np);
        buf[OFF_STRINGS + 1 + np] = (uint8_t)nv;
        memcpy(buf + OFF_STRINGS + 2 + np, t->product_version, nv);
        return (ssize_t)n;
}

/* The inverse of tsf_lic_token_body(), with one remaining-bytes count
 * checked before every read. The version byte is the caller's business
 * (it decides between MALFORMED and UNSUPPORTED_VERSION). */
static enum tsf_lic_verdict body_decode(const uint8_t *buf, size_t len, struct tsf_lic_token *t) {
        size_t np, nv, left;
        const uint8_t *p;

        memset(t, 0, sizeof(*t));
        if (len < TSF_LIC_BODY_FIXED + 1)
                return TSF_LIC_VERDICT_MALFORMED;
        t->version = buf[OFF_VERSION];
        t->kind = (enum tsf_lic_kind)buf[OFF_KIND];
        memcpy(t->token_id, buf + OFF_TOKEN_ID, TSF_LIC_TOKEN_ID_SIZE);
        memcpy(t->issuer_key_id, buf + OFF_ISSUER, TSF_LIC_KEY_ID_SIZE);
        memcpy(t->device_hash, buf + OFF_DEVICE, TSF_LIC_DEVICE_HASH_SIZE);
        t->issued = get_be64(buf + OFF_ISSUED);
        t->expires = get_be64(buf + OFF_EXPIRES);

        p = buf + OFF_STRINGS;
        left = len - OFF_STRINGS;
        np = *p++, left--;
        if (np > TSF_LIC_PACK_ID_MAX || np >= left) /* >=: nv's byte must follow */
                goto malformed;
        memcpy(t->pack_id, p, np);
        p += np, left -= np;
        nv = *p++, left--;
        /* Exactly the product version left: no missing or trailing bytes. */
        if (nv > TSF_LIC_PRODUCT_VERSION_MAX || nv != left)
                goto malformed;
        memcpy(t->product_version, p, nv);

        /* Also refuses NULs inside the strings, which memcpy let in: the
         * struct's C strings must say what the body says. */
        if (strlen(t->pack_id) != np || strlen(t->product_version) != nv || !tsf_lic_token_valid(t))
                goto malformed;
        return TSF_LIC_VERDICT_OK;
malformed:
        memset(t, 0, sizeof(*t));
        return TSF_LIC_VERDICT_MALFORMED;
}

/* ---- text ---------------------------------------------------------------- */

/* Splits and decodes "tsl1.<body>.<sig>" into body (TSF_LIC_BODY_MAX) and
 * sig, and decodes the body into *t. */
static enum tsf_lic_verdict text_decode(const char *text, uint8_t *body, size_t *ret_body_len, uint8_t *sig,
                                        struct tsf_lic_token *t) {
        const char *b, *dot, *s;
        size_t nd = 0;
        ssize_t n;

        memset(t, 0, sizeof(*t));
        if (!text)
                return TSF_LIC_VERDICT_MALFORMED;
        /* "tsl<N>." with another N is a token of a format this code does
         * not know: say so rather than "malformed", it tells the operator
         * to upgrade. Up to three digits: the version is one byte. */
        if (strncmp(text, "tsl", 3) != 0)
                return TSF_LIC_VERDICT_MALFORMED;
        while (nd < 3 && text[3 + nd] >= '0' && text[3 + nd] <= '9')
                nd++;
        if (nd == 0 || text[3 + nd] != '.')
                return TSF_LIC_VERDICT_MALFORMED;
        if (strncmp(text, TEXT_PREFIX, TEXT_PREFIX_LEN) != 0)
                return TSF_LIC_VERDICT_UNSUPPORTED_VERSION;

        b = text + TEXT_PREFIX_LEN;
        dot = strchr(b, '.');
        if (!dot)
                return TSF_LIC_VERDICT_MALFORMED;
        s = dot + 1;
        if (strlen(s) != b64url_len(TSF_LIC_SIGNATURE_SIZE) ||
            b64url_decode(s, strlen(s), sig, TSF_LIC_SIGNATURE_SIZE) != TSF_LIC_SIGNATURE_SIZE)
                return TSF_LIC_VERDICT_MALFORMED;
        n = b64url_decode(b, (size_t)(dot - b), body, TSF_LIC_BODY_MAX);
        if (n <= 0)
                return TSF_LIC_VERDICT_MALFORMED;
        /* Before the layout: another version may have another one. */
        if (body[OFF_VERSION] != TSF_LIC_TOKEN_VERSION)
                return TSF_LIC_VERDICT_UNSUPPORTED_VERSION;
        *ret_body_len = (size_t)n;
        return body_decode(body, (size_t)n, t);
}

enum tsf_lic_verdict tsf_lic_token_parse(const char *text, struct tsf_lic_token *ret) {
        uint8_t body[TSF_LIC_BODY_MAX], sig[TSF_LIC_SIGNATURE_SIZE];
        size_t len;

        return text_decode(text, body, &len, sig, ret);
}

/* ---- hashing, signing, verifying ----------------------------------------- */

static int sha256(const void *data, size_t len, uint8_t out[32]) {
        unsigned n = 0;

        if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1 || n != 32)
                return ossl_fail(-EIO, "SHA-256");
        return 0;
}

int tsf_lic_hardware_hash(const uint8_t *hwid, size_t len, uint8_t out[TSF_LIC_DEVICE_HASH_SIZE]) {
        static const uint8_t empty = 0;

        /* EVP_Digest() wants a pointer even for zero bytes. */
        return sha256(hwid && len > 0 ? hwid : &empty, len, out);
}

int tsf_lic_token_sign(const struct tsf_lic_token *t, const struct tsf_lic_key *key, char **ret_text) {
        uint8_t body[TSF_LIC_BODY_MAX], sig[TSF_LIC_SIGNATURE_SIZE];
        _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *ctx = NULL;
        _cleanup_free_ char *text = NULL;
        struct tsf_lic_token copy;
        size_t siglen = sizeof(sig);
        ssize_t n;
        char *p;

        if (!t || !key || !ret_text || !key->has_private)
                return -EINVAL;
        copy = *t;
        memcpy(copy.issuer_key_id, key->id, TSF_LIC_KEY_ID_SIZE);
        n = tsf_lic_token_body(&copy, body, sizeof(body));
        if (n < 0)
                return (int)n;

        ctx = EVP_MD_CTX_new();
        if (!ctx)
                return -ENOMEM;
        /* Ed25519 is one-shot and hashes internally: no digest named. */
        if (EVP_DigestSignInit(ctx, NULL, NULL, NULL, key->pkey) != 1 ||
            EVP_DigestSign(ctx, sig, &siglen, body, (size_t)n) != 1 || siglen != sizeof(sig))
                return ossl_fail(-EIO, "Ed25519 signing");

        text = malloc(TEXT_PREFIX_LEN + b64url_len((size_t)n) + 1 + b64url_len(sizeof(sig)) + 1);
        if (!text)
                return -ENOMEM;
        p = stpcpy(text, TEXT_PREFIX);
        p = b64url_encode(body, (size_t)n, p);
        *p++ = '.';
        p = b64url_encode(sig, sizeof(sig), p);
        *p = '\0';
        *ret_text = TAKE_PTR(text);
        return 0;
}

/* 1 valid, 0 not, or a negative errno when the check could not run. */
static int signature_check(EVP_PKEY *pkey, const uint8_t *body, size_t len, const uint8_t *sig) {
        _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        int r;

        if (!ctx)
                return -ENOMEM;
        if (EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pkey) != 1)
                return ossl_fail(-EIO, "Ed25519 verification setup");
        r = EVP_DigestVerify(ctx, sig, TSF_LIC_SIGNATURE_SIZE, body, len);
        if (r == 1)
                return 1;
        /* 0 is "does not verify"; OpenSSL's Ed25519 also reports a
         * non-canonical signature (S >= L) that way, which is what we want:
         * it is a forgery attempt, not a system failure. */
        ERR_clear_error();
        return r == 0 ? 0 : -EIO;
}

int tsf_lic_token_verify(const char *text, const struct tsf_lic_trust *trust, const uint8_t *hwid,
                         size_t hwid_len, usec_t now, struct tsf_lic_token *ret) {
        uint8_t body[TSF_LIC_BODY_MAX], sig[TSF_LIC_SIGNATURE_SIZE], device[TSF_LIC_DEVICE_HASH_SIZE];
        const struct tsf_lic_key *issuer;
        struct tsf_lic_token t;
        enum tsf_lic_verdict v;
        size_t len = 0;
        int r;

        if (ret)
                memset(ret, 0, sizeof(*ret));
        v = text_decode(text, body, &len, sig, &t);
        if (v != TSF_LIC_VERDICT_OK)
                return v;
        issuer = trust ? tsf_lic_trust_find(trust, t.issuer_key_id) : NULL;
        if (!issuer)
                return TSF_LIC_VERDICT_UNKNOWN_ISSUER;
        r = signature_check(issuer->pkey, body, len, sig);
        if (r < 0)
                return r;
        if (r == 0)
                return TSF_LIC_VERDICT_BAD_SIGNATURE;

        /* Authentic from here on: the caller may show what it says. */
        if (ret)
                *ret = t;
        r = tsf_lic_hardware_hash(hwid, hwid_len, device);
        if (r < 0) {
                if (ret)
                        memset(ret, 0, sizeof(*ret));
                return r;
        }
        if (memcmp(device, t.device_hash, sizeof(device)) != 0)
                return TSF_LIC_VERDICT_OTHER_DEVICE;
        if (now >= t.expires)
                return TSF_LIC_VERDICT_EXPIRED;
        return TSF_LIC_VERDICT_OK;
}

/* ---- keys ---------------------------------------------------------------- */

struct tsf_lic_key *tsf_lic_key_free(struct tsf_lic_key *key) {
        if (key) {
                EVP_PKEY_free(key->pkey);
                free(key);
        }
        return NULL;
}

const uint8_t *tsf_lic_key_id(const struct tsf_lic_key *key) {
        return key->id;
}

bool tsf_lic_key_has_private(const struct tsf_lic_key *key) {
        return key->has_private;
}

/* Wraps an EVP_PKEY (taking it) after checking it is Ed25519. */
static int key_new(EVP_PKEY **pkey, bool has_private, struct tsf_lic_key **ret) {
        _cleanup_(tsf_lic_key_freep) struct tsf_lic_key *key = NULL;
        uint8_t raw[ED25519_RAW_SIZE];
        size_t n = sizeof(raw);
        int r;

        if (EVP_PKEY_get_id(*pkey) != EVP_PKEY_ED25519)
                return log_debug_errno(-EKEYREJECTED, "lictoken: not an Ed25519 key (%s)",
                                       OBJ_nid2sn(EVP_PKEY_get_id(*pkey)));
        key = calloc(1, sizeof(*key));
        if (!key)
                return -ENOMEM;
        key->pkey = TAKE_PTR(*pkey);
        key->has_private = has_private;
        if (EVP_PKEY_get_raw_public_key(key->pkey, raw, &n) != 1 || n != sizeof(raw))
                return ossl_fail(-EIO, "reading the raw public key");
        r = sha256(raw, sizeof(raw), key->id);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(key);
        return 0;
}

int tsf_lic_key_generate(struct tsf_lic_key **ret) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");

        if (!pkey)
                return ossl_fail(-EIO, "Ed25519 key generation");
        return key_new(&pkey, true, ret);
}

/* Reads a whole small regular file. O_NONBLOCK so that a FIFO named
 * "x.pem" in a trust directory cannot hang the agent. */
static int read_small_file(const char *path, char **ret, size_t *ret_len) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        _cleanup_free_ char *buf = NULL;
        size_t len = 0;
        struct stat st;

        if (fd < 0)
                return negative_errno();
        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (S_ISDIR(st.st_mode))
                return -EISDIR;
        if (!S_ISREG(st.st_mode))
                return -EINVAL;
        if (st.st_size > KEY_FILE_MAX)
                return -EFBIG;
        buf = malloc(KEY_FILE_MAX + 1);
        if (!buf)
                return -ENOMEM;
        /* Until EOF, not st_size: the file may change under us. */
        for (;;) {
                ssize_t n = read(fd, buf + len, KEY_FILE_MAX + 1 - len);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        OPENSSL_cleanse(buf, len);
                        return negative_errno();
                }
                if (n == 0)
                        break;
                len += (size_t)n;
                if (len > KEY_FILE_MAX) {
                        OPENSSL_cleanse(buf, len);
                        return -EFBIG;
                }
        }
        *ret = TAKE_PTR(buf);
        *ret_len = len;
        return 0;
}

/* Never prompts: without this, OpenSSL would ask for an encrypted key's
 * passphrase on the controlling terminal, which a daemon does not have. */
static int no_passphrase(char *buf, int size, int rwflag, void *u) {
        return 0;
}

static int key_load(const char *path, bool private, struct tsf_lic_key **ret) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *pkey = NULL;
        _cleanup_(BIO_freep) BIO *bio = NULL;
        _cleanup_free_ char *data = NULL;
        size_t len = 0;
        int r;

        r = read_small_file(path, &data, &len);
        if (r < 0)
                return r;
        bio = BIO_new_mem_buf(data, (int)len);
        if (!bio) {
                OPENSSL_cleanse(data, len);
                return -ENOMEM;
        }
        pkey = private ? PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL)
                       : PEM_read_bio_PUBKEY(bio, NULL, no_passphrase, NULL);
        OPENSSL_cleanse(data, len);
        if (!pkey)
                return ossl_fail(-EBADMSG,
                                 private ? "reading a PEM private key" : "reading a PEM public key");
        return key_new(&pkey, private, ret);
}

int tsf_lic_key_load_private(const char *path, struct tsf_lic_key **ret) {
        return key_load(path, true, ret);
}

int tsf_lic_key_load_public(const char *path, struct tsf_lic_key **ret) {
        return key_load(path, false, ret);
}

static int write_pem(const char *path, EVP_PKEY *pkey, bool private, bool force) {
        _cleanup_(BIO_freep) BIO *bio = BIO_new(BIO_s_mem());
        char *data;
        long len;
        int r;

        if (!bio)
                return -ENOMEM;
        /* PKCS#8 explicitly ("BEGIN PRIVATE KEY"), unencrypted: the key
         * file's protection is its mode and its directory's. */
        if (private ? !PEM_write_bio_PKCS8PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL)
                    : !PEM_write_bio_PUBKEY(bio, pkey))
                return ossl_fail(-EIO, "writing PEM");
        len = BIO_get_mem_data(bio, &data);
        if (len <= 0)
                return -EIO;
        r = tsf_write_file_atomic(path, data, (size_t)len, private ? 0600 : 0644, force);
        if (private)
                OPENSSL_cleanse(data, (size_t)len);
        return r;
}

int tsf_lic_key_write(const struct tsf_lic_key *key, const char *private_path, const char *public_path,
                      bool force) {
        int r;

        if (!key || (!private_path && !public_path))
                return -EINVAL;
        if (private_path && !key->has_private)
                return -EINVAL;
        /* Both or neither: checked first, so that a refusal leaves no half
         * pair behind. The renames below still refuse to replace a file
         * created in between. */
        if (!force)
                for (int i = 0; i < 2; i++) {
                        const char *p = i == 0 ? private_path : public_path;

                        if (!p)
                                continue;
                        if (access(p, F_OK) == 0)
                                return -EEXIST;
                        if (errno != ENOENT)
                                return negative_errno();
                }

        if (private_path) {
                r = write_pem(private_path, key->pkey, true, force);
                if (r < 0)
                        return r;
        }
        if (public_path) {
                r = write_pem(public_path, key->pkey, false, force);
                if (r < 0) {
                        /* Ours, and useless without its public half. */
                        if (private_path && !force)
                                (void)unlink(private_path);
                        return r;
                }
        }
        return 0;
}

/* ---- trust store --------------------------------------------------------- */

int tsf_lic_trust_new(struct tsf_lic_trust **ret) {
        struct tsf_lic_trust *t = calloc(1, sizeof(*t));

        if (!t)
                return -ENOMEM;
        *ret = t;
        return 0;
}

struct tsf_lic_trust *tsf_lic_trust_free(struct tsf_lic_trust *trust) {
        if (trust) {
                for (size_t i = 0; i < trust->n_keys; i++)
                        tsf_lic_key_free(trust->keys[i]);
                free(trust->keys);
                free(trust);
        }
        return NULL;
}

size_t tsf_lic_trust_size(const struct tsf_lic_trust *trust) {
        return trust ? trust->n_keys : 0;
}

/* A linear scan: a farm trusts a handful of license servers. */
const struct tsf_lic_key *tsf_lic_trust_find(const struct tsf_lic_trust *trust,
                                             const uint8_t key_id[TSF_LIC_KEY_ID_SIZE]) {
        for (size_t i = 0; trust && i < trust->n_keys; i++)
                if (memcmp(trust->keys[i]->id, key_id, TSF_LIC_KEY_ID_SIZE) == 0)
                        return trust->keys[i];
        return NULL;
}

/* Takes *key on success. */
static int trust_take(struct tsf_lic_trust *trust, struct tsf_lic_key **key) {
        struct tsf_lic_key **keys;

        if (tsf_lic_trust_find(trust, (*key)->id))
                return -EEXIST;
        keys = reallocarray(trust->keys, trust->n_keys + 1, sizeof(*keys));
        if (!keys)
                return -ENOMEM;
        trust->keys = keys;
        trust->keys[trust->n_keys++] = TAKE_PTR(*key);
        return 0;
}

int tsf_lic_trust_add(struct tsf_lic_trust *trust, const struct tsf_lic_key *key) {
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *pub = NULL;
        _cleanup_(tsf_lic_key_freep) struct tsf_lic_key *copy = NULL;
        uint8_t raw[ED25519_RAW_SIZE];
        size_t n = sizeof(raw);
        int r;

        if (!trust || !key)
                return -EINVAL;
        /* Only the public half: a trust store never holds a signing key,
         * even when the caller hands it one. */
        if (EVP_PKEY_get_raw_public_key(key->pkey, raw, &n) != 1 || n != sizeof(raw))
                return ossl_fail(-EIO, "reading the raw public key");
        pub = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, raw, sizeof(raw));
        if (!pub)
                return ossl_fail(-EIO, "making a public key");
        r = key_new(&pub, false, &copy);
        if (r < 0)
                return r;
        return trust_take(trust, &copy);
}

static int trust_entry_filter(const struct dirent *de) {
        size_t n = strlen(de->d_name);

        return de->d_name[0] != '.' && n > 4 && strcmp(de->d_name + n - 4, ".pem") == 0;
}

int tsf_lic_trust_load_dir(struct tsf_lic_trust *trust, const char *dir, tsf_lic_trust_skip_fn on_skip,
                           void *userdata) {
        struct dirent **names = NULL;
        int n, added = 0, r = 0;

        if (!trust || !dir)
                return -EINVAL;
        /* Sorted, so that which of two files with the same key wins (and is
         * not reported) does not depend on the file system's order. */
        n = scandir(dir, &names, trust_entry_filter, alphasort);
        if (n < 0)
                return negative_errno();
        for (int i = 0; i < n; i++) {
                _cleanup_(tsf_lic_key_freep) struct tsf_lic_key *key = NULL;
                char path[PATH_MAX];
                int k;

                if (r < 0)
                        goto next;
                if (snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name) >= (int)sizeof(path))
                        k = -ENAMETOOLONG;
                else {
                        k = tsf_lic_key_load_public(path, &key);
                        if (k >= 0)
                                k = trust_take(trust, &key);
                }
                if (k == -ENOMEM) {
                        r = k; /* not the file's fault: give up */
                } else if (k < 0) {
                        log_debug_errno(k, "lictoken: skipping %s: %m", path);
                        if (on_skip)
                                on_skip(path, k, userdata);
                } else
                        added++;
next:
                free(names[i]);
        }
        free(names);
        return r < 0 ? r : added;
}
