/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * License tokens: signed, versioned, device-bound, verified offline
 * (docs/licensing.md, "Token format (version 1)", is the contract).
 *
 *   tsl1.<base64url body>.<base64url Ed25519 signature over the body>
 *
 * A license server holds an Ed25519 key pair (struct tsf_lic_key) and signs
 * tokens with tsf_lic_token_sign(); a terminal server holds the farm's
 * trusted public keys (struct tsf_lic_trust, a directory of PEM files) and
 * judges a token with tsf_lic_token_verify(), which gives one verdict an
 * operator can act on. Nothing here logs above debug level: callers log at
 * the boundary, with tsf_lic_verdict_to_string().
 *
 * Errors: functions return a negative errno for system failures (files,
 * memory, OpenSSL), and judgements about a token as enum tsf_lic_verdict.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tsfarm/cleanup.h"
#include "tsfarm/clock.h"

#define TSF_LIC_TOKEN_VERSION 1
#define TSF_LIC_TOKEN_ID_SIZE 16
#define TSF_LIC_KEY_ID_SIZE 32      /* SHA-256 of the raw Ed25519 public key */
#define TSF_LIC_DEVICE_HASH_SIZE 32 /* SHA-256 of the hardware id */
#define TSF_LIC_SIGNATURE_SIZE 64
/* Text limits in bytes, without the NUL. Both strings are made of letters,
 * digits, '.', '-' and '_' (as the license store's pack ids): they end up
 * in logs, reports and SQL. */
#define TSF_LIC_PACK_ID_MAX 64
#define TSF_LIC_PRODUCT_VERSION_MAX 32

/* Sizes of the binary body and of the text form (without the NUL). */
#define TSF_LIC_BODY_FIXED 98
#define TSF_LIC_BODY_MIN (TSF_LIC_BODY_FIXED + 1 + 1)
#define TSF_LIC_BODY_MAX (TSF_LIC_BODY_FIXED + 1 + TSF_LIC_PACK_ID_MAX + 1 + TSF_LIC_PRODUCT_VERSION_MAX)
#define TSF_LIC_TEXT_MAX 354 /* "tsl1." + 262 + "." + 86 */

enum tsf_lic_kind {
        TSF_LIC_TEMPORARY = 1, /* first contact; no key pack */
        TSF_LIC_CAL = 2,       /* a Device CAL out of a key pack */
};

struct tsf_lic_token {
        uint8_t version; /* TSF_LIC_TOKEN_VERSION */
        enum tsf_lic_kind kind;
        uint8_t token_id[TSF_LIC_TOKEN_ID_SIZE];
        uint8_t issuer_key_id[TSF_LIC_KEY_ID_SIZE];
        uint8_t device_hash[TSF_LIC_DEVICE_HASH_SIZE];
        /* CLOCK_REALTIME µs. The token is valid while issued <= ... < expires:
         * `expires` is the first instant it is no longer valid. Both below
         * 2^63 (they are stored as SQLite integers), issued < expires. */
        usec_t issued;
        usec_t expires;
        /* NUL-terminated. A Device CAL has both; a temporary token has no
         * pack id and may have no product version (any version). */
        char pack_id[TSF_LIC_PACK_ID_MAX + 1];
        char product_version[TSF_LIC_PRODUCT_VERSION_MAX + 1];
};

enum tsf_lic_verdict {
        TSF_LIC_VERDICT_OK = 0,
        TSF_LIC_VERDICT_MALFORMED,           /* not tsl1., bad base64url, bad or missing or extra bytes */
        TSF_LIC_VERDICT_UNSUPPORTED_VERSION, /* "tslN." or a body version byte other than 1 */
        TSF_LIC_VERDICT_UNKNOWN_ISSUER,      /* issuer key id not among the trusted keys */
        TSF_LIC_VERDICT_BAD_SIGNATURE,       /* forged or altered */
        TSF_LIC_VERDICT_OTHER_DEVICE,        /* issued to another hardware id */
        TSF_LIC_VERDICT_EXPIRED,             /* now >= expires */
        _TSF_LIC_VERDICT_MAX,
};

/* "ok", "malformed", "unsupported-version", "unknown-issuer",
 * "bad-signature", "other-device", "expired"; NULL for anything else. */
const char *tsf_lic_verdict_to_string(int verdict);
/* "temporary", "device-cal"; NULL for anything else. */
const char *tsf_lic_kind_to_string(int kind);

/* ---- keys ---------------------------------------------------------------- */

/* An Ed25519 key: a private one (can sign) or a public one (can verify). */
struct tsf_lic_key;

/* A fresh key pair from OpenSSL's CSPRNG. -ENOMEM, -EIO. */
int tsf_lic_key_generate(struct tsf_lic_key **ret);

/* Writes the private key (PKCS#8 PEM, mode 0600) to private_path and the
 * public key (SubjectPublicKeyInfo PEM, mode 0644) to public_path; either
 * path may be NULL to skip that file. Each file is written to a temporary
 * name and renamed into place, so a reader never sees half a key. Nothing
 * is replaced unless `force`: -EEXIST if a file exists, and then neither is
 * written. -EINVAL if private_path is given for a public-only key. */
int tsf_lic_key_write(const struct tsf_lic_key *key, const char *private_path, const char *public_path,
                      bool force);

/* Loads a PEM private key (PKCS#8; an encrypted one is refused, never
 * prompted for) or a PEM public key (SubjectPublicKeyInfo). The errno of
 * open()/read() (-ENOENT, -EACCES, ...), -EISDIR or -EINVAL for something
 * other than a regular file, -EFBIG for a file over 64 KiB, -EBADMSG when
 * there is no key of that kind in the file, -EKEYREJECTED when the key is
 * not Ed25519. */
int tsf_lic_key_load_private(const char *path, struct tsf_lic_key **ret);
int tsf_lic_key_load_public(const char *path, struct tsf_lic_key **ret);

/* The key id (TSF_LIC_KEY_ID_SIZE bytes): SHA-256 of the raw public key.
 * Valid as long as the key. */
const uint8_t *tsf_lic_key_id(const struct tsf_lic_key *key);
bool tsf_lic_key_has_private(const struct tsf_lic_key *key);

struct tsf_lic_key *tsf_lic_key_free(struct tsf_lic_key *key);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct tsf_lic_key *, tsf_lic_key_free);

/* ---- trust store --------------------------------------------------------- */

/* The license-server public keys a terminal server accepts, by key id.
 * Read-only once loaded, so verification may run from several threads. */
struct tsf_lic_trust;

int tsf_lic_trust_new(struct tsf_lic_trust **ret);

/* Adds the public half of `key`. -EEXIST if a key with its id is there. */
int tsf_lic_trust_add(struct tsf_lic_trust *trust, const struct tsf_lic_key *key);

/* Called for each *.pem file that is not loaded, with its path and why
 * (an error of tsf_lic_key_load_public(), or -EEXIST for a key already
 * trusted through another file). */
typedef void (*tsf_lic_trust_skip_fn)(const char *path, int error, void *userdata);

/* Adds every DIR/<name>.pem that holds an Ed25519 public key, in name
 * order. Names starting with '.' (editors' and installers' temporary
 * files) and names not ending in ".pem" are ignored silently; a file that
 * cannot be loaded is reported through on_skip (may be NULL) and skipped,
 * so one broken file does not take the farm's other keys with it. Returns
 * the number of keys added, or the errno of opening or reading DIR. */
int tsf_lic_trust_load_dir(struct tsf_lic_trust *trust, const char *dir, tsf_lic_trust_skip_fn on_skip,
                           void *userdata);

size_t tsf_lic_trust_size(const struct tsf_lic_trust *trust);
/* The trusted key with this id, or NULL. */
const struct tsf_lic_key *tsf_lic_trust_find(const struct tsf_lic_trust *trust,
                                             const uint8_t key_id[TSF_LIC_KEY_ID_SIZE]);

struct tsf_lic_trust *tsf_lic_trust_free(struct tsf_lic_trust *trust);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct tsf_lic_trust *, tsf_lic_trust_free);

/* ---- tokens -------------------------------------------------------------- */

/* SHA-256 of a hardware id (any length; the licensing store bounds it). */
int tsf_lic_hardware_hash(const uint8_t *hwid, size_t len, uint8_t out[TSF_LIC_DEVICE_HASH_SIZE]);

/* Whether `t` obeys the format's rules (version, kind, strings, times), so
 * that its body encodes and parses back to the same token. */
bool tsf_lic_token_valid(const struct tsf_lic_token *t);

/* The binary body of `t` exactly as in the contract, issuer key id taken
 * from `t`. Returns its length, -EINVAL for a token that is not valid, or
 * -ENOBUFS when `size` is too small (TSF_LIC_BODY_MAX always suffices). */
ssize_t tsf_lic_token_body(const struct tsf_lic_token *t, uint8_t *buf, size_t size);

/* Signs `t` with `key` (which must hold a private key), the issuer key id
 * being set from the key whatever `t` says, and returns the text form in
 * *ret_text (free()). Ed25519 is deterministic: the same token and key
 * always give the same text. -EINVAL for a token that is not valid or a
 * public-only key, -ENOMEM, -EIO. */
int tsf_lic_token_sign(const struct tsf_lic_token *t, const struct tsf_lic_key *key, char **ret_text);

/* Decodes a token's text without checking its signature, for display and
 * diagnosis only: nothing in it is authentic. Returns OK, MALFORMED or
 * UNSUPPORTED_VERSION; *ret is filled on OK and zeroed otherwise. The text
 * must be exactly the token: no whitespace or newline around it. */
enum tsf_lic_verdict tsf_lic_token_parse(const char *text, struct tsf_lic_token *ret);

/* Judges a token offline: well-formed, a supported version, issued by a
 * trusted key, signature valid, bound to the device whose hardware id is
 * hwid[0..hwid_len), and not expired at `now` (CLOCK_REALTIME µs; callers
 * pass tsf_now_realtime(), tests a fake clock). Checked in that order; the
 * first failure is the verdict. `issued` is not compared with `now`: a
 * license server's clock a little ahead of the terminal server's must not
 * refuse fresh tokens.
 *
 * Returns a verdict (>= 0) or a negative errno when the check itself could
 * not run (-ENOMEM, -EIO from OpenSSL); anything but TSF_LIC_VERDICT_OK
 * means "not licensed". *ret (may be NULL) is filled only for authentic
 * tokens, that is for OK, OTHER_DEVICE and EXPIRED, and zeroed otherwise. */
int tsf_lic_token_verify(const char *text, const struct tsf_lic_trust *trust, const uint8_t *hwid,
                         size_t hwid_len, usec_t now, struct tsf_lic_token *ret);
