/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The licensing role's store (DESIGN 2.3 and 3; docs/licensing.md, "License
 * store"): key packs, issuance records (temporary tokens and Device CALs)
 * and an audit log, in SQLite (WAL, synchronous=FULL). No networking and no
 * signing here: the role signs what a record says (token id, issued,
 * expires, pack, product version) after the store has committed it.
 *
 * Every function returns a negative errno on failure and then changes
 * nothing: each write is one transaction (inside a batch, one savepoint),
 * and every write first expires what is due (see lic_expire()), in that
 * same transaction. Refusals come with a static reason string where a
 * `reason` argument is given. Not thread-safe: one store belongs to one
 * event loop. Times are CLOCK_REALTIME microseconds from tsf_now_realtime().
 *
 * Error codes shared by the token operations:
 *   -EINVAL       malformed arguments (nothing looked up)
 *   -ENOENT       unknown token or pack
 *   -EPERM        the token belongs to another device (hardware id)
 *   -EMEDIUMTYPE  the wrong kind of token for the operation
 *   -EACCES       a temporary token not validated yet
 *   -EKEYEXPIRED  the token has expired (or was renewed)
 *   -EKEYREVOKED  the token was revoked
 *   -ENOSPC       no key pack has a CAL available
 *   -EAGAIN       renewal asked for more than LIC_RENEW_WINDOW before expiry
 *   -EDQUOT       revocation beyond the 20% / 60-day bound
 *   -EALREADY     revocation of a CAL that is no longer active
 *   -EEXIST       a pack id or token id that exists already
 *   -ERANGE       the clock reads before March 1970 or absurdly far ahead
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tsfarm/clock.h"

#define LIC_TOKEN_ID_SIZE 16
#define LIC_HARDWARE_ID_MIN 16
#define LIC_HARDWARE_ID_MAX 64
/* Pack ids and product versions: letters, digits, '.', '-', '_'. */
#define LIC_PACK_ID_MAX 64
#define LIC_PRODUCT_VERSION_MAX 32
/* Device and user names: valid UTF-8 without NUL, at most this many bytes.
 * They come from clients and are stored as given; outputs escape them. */
#define LIC_DEVICE_NAME_MAX 255
#define LIC_USER_NAME_MAX 255
#define LIC_PACK_COUNT_MAX 1000000u
/* A peer license server's name: its node name (certificate CN), 1..63 of
 * letters, digits, '.', '-', '_'. */
#define LIC_PEER_NAME_MAX 63

#define LIC_TEMPORARY_LIFETIME (90 * USEC_PER_DAY)
#define LIC_CAL_LIFETIME_MIN (52 * USEC_PER_DAY) /* a CAL lives uniform(MIN, MAX) */
#define LIC_CAL_LIFETIME_MAX (89 * USEC_PER_DAY) /* inclusive, whole seconds */
#define LIC_RENEW_WINDOW (7 * USEC_PER_DAY)      /* renewal when expires - now <= this */
#define LIC_REVOKE_WINDOW (60 * USEC_PER_DAY)
#define LIC_REVOKE_PERCENT 20 /* of a pack's count, floor, per LIC_REVOKE_WINDOW */

/* The token format's kind byte (docs/licensing.md, "Token format"). */
enum lic_kind {
        LIC_KIND_TEMPORARY = 1,
        LIC_KIND_CAL = 2,
};

/* Stored as these numbers (tokens.state). */
enum lic_state {
        LIC_STATE_TEMPORARY = 0,
        LIC_STATE_TEMPORARY_VALIDATED = 1,
        LIC_STATE_ACTIVE = 2,  /* a Device CAL taken from its pack */
        LIC_STATE_REVOKED = 3, /* returned to the pool by an operator */
        LIC_STATE_EXPIRED = 4, /* lapsed or renewed; a CAL returned to the pool */
        _LIC_STATE_MAX,
};

enum lic_action {
        LIC_ACTION_INSTALL = 0,
        LIC_ACTION_TEMPORARY,
        LIC_ACTION_VALIDATE,
        LIC_ACTION_ISSUE,
        LIC_ACTION_RENEW,
        LIC_ACTION_EXPIRE,
        LIC_ACTION_REVOKE,
        LIC_ACTION_LEND,   /* a CAL issued for a peer license server's device (schema 2) */
        LIC_ACTION_BORROW, /* a peer's CAL relayed to our terminal server; no pool change */
        _LIC_ACTION_MAX,
};

enum lic_format {
        LIC_FORMAT_TABLE = 0, /* for people; control characters escaped */
        LIC_FORMAT_CSV,       /* RFC 4180: CRLF, fields quoted when needed */
        LIC_FORMAT_JSON,      /* one object, 2-space indent */
        _LIC_FORMAT_MAX,
};

/* What a report holds (lic_report_write()). */
#define LIC_REPORT_PACKS (1u << 0)  /* per pack counts, and the totals */
#define LIC_REPORT_TOKENS (1u << 1) /* one row per issuance record */

struct lic_store;

/* The device a request is for, as the terminal server reports it. */
struct lic_device {
        const uint8_t *hardware_id; /* LIC_HARDWARE_ID_MIN..MAX bytes */
        size_t hardware_id_len;
        const char *device_name; /* 1..LIC_DEVICE_NAME_MAX bytes */
        const char *user_name;   /* NULL or "": not known */
};

struct lic_pack {
        char id[LIC_PACK_ID_MAX + 1];
        char product_version[LIC_PRODUCT_VERSION_MAX + 1];
        usec_t installed;
        uint32_t count;     /* installed CALs */
        uint32_t available; /* in the pool */
        uint32_t issued;    /* active CALs; available + issued == count */
        uint32_t revoked;   /* records, all time */
        uint32_t expired;   /* records, all time (lapsed and renewed) */
        uint32_t revocable; /* revocations the 20% / 60-day bound allows now */
};

struct lic_token {
        uint8_t token_id[LIC_TOKEN_ID_SIZE];
        enum lic_kind kind;
        enum lic_state state;
        char pack_id[LIC_PACK_ID_MAX + 1]; /* "" for temporary tokens */
        char product_version[LIC_PRODUCT_VERSION_MAX + 1];
        char device_name[LIC_DEVICE_NAME_MAX + 1];
        uint8_t hardware_id[LIC_HARDWARE_ID_MAX];
        size_t hardware_id_len;
        char user_name[LIC_USER_NAME_MAX + 1];
        usec_t issued;
        usec_t expires;
        usec_t state_time; /* when it entered its state */
        bool renewed;      /* renewed_from is set: this CAL renewed that one */
        uint8_t renewed_from[LIC_TOKEN_ID_SIZE];
        /* The peer license server this CAL was lent to (lic_cal_lend());
         * "" = issued for our own terminal servers. A renewal keeps it. */
        char lent_to[LIC_PEER_NAME_MAX + 1];
};

struct lic_audit {
        uint64_t seq;
        usec_t time;
        enum lic_action action;
        bool has_token;
        uint8_t token_id[LIC_TOKEN_ID_SIZE];
        const char *pack_id; /* "" when none; valid during the callback */
        const char *device;
        const char *user;
        const char *detail;
};

/* Which records lic_tokens_list() and reports show; NULL or zeroed: all. */
struct lic_token_filter {
        const char *pack_id;     /* NULL: any */
        unsigned states;         /* bit (1u << enum lic_state) per state; 0: any */
        const char *device_name; /* exact; NULL: any */
        const uint8_t *hardware_id;
        size_t hardware_id_len; /* 0: any */
};

/* Callbacks return < 0 to stop; that value is returned. They run inside a
 * read transaction and must not call back into the store. */
typedef int (*lic_pack_cb)(const struct lic_pack *p, void *userdata);
typedef int (*lic_token_cb)(const struct lic_token *t, void *userdata);
typedef int (*lic_audit_cb)(const struct lic_audit *a, void *userdata);
/* Fills buf with n random bytes; 0 or a negative errno. */
typedef int (*lic_random_fn)(void *buf, size_t n, void *userdata);

/* Opens (creating and migrating as needed) the store at path.
 * -EPROTONOSUPPORT for a database written by a newer tsfarm (left
 * untouched), -EMEDIUMTYPE for an SQLite file that is not a license store
 * or no database at all. */
int lic_store_open(const char *path, struct lic_store **ret);
struct lic_store *lic_store_close(struct lic_store *s);
static inline void lic_store_closep(struct lic_store **s) {
        if (*s)
                lic_store_close(*s);
}
/* The schema version this code writes (PRAGMA user_version). */
int lic_store_schema_version(void);
/* Token ids and CAL lifetimes come from fn (NULL: getrandom()). Tests
 * install a seeded generator. */
void lic_store_set_random(struct lic_store *s, lic_random_fn fn, void *userdata);

/* Groups operations into one transaction (one fsync); each operation inside
 * stays atomic on its own. A batch not committed at close is rolled back. */
int lic_store_batch_begin(struct lic_store *s);
int lic_store_batch_commit(struct lic_store *s);
int lic_store_batch_abort(struct lic_store *s);

/* Installs a key pack of count (1..LIC_PACK_COUNT_MAX) CALs, all available.
 * -EEXIST for an id installed already. */
int lic_pack_install(struct lic_store *s, const char *id, const char *product_version, uint32_t count);
int lic_pack_get(struct lic_store *s, const char *id, struct lic_pack *ret);
/* Every pack, oldest installed first. Returns how many were delivered. */
int lic_packs_list(struct lic_store *s, lic_pack_cb cb, void *userdata);

/* A temporary token for a device on first contact: state temporary,
 * expires now + LIC_TEMPORARY_LIFETIME. token_id: the id to use (the caller
 * generated it), or NULL for a random one. A device has at most one live
 * temporary token (temporary or temporary-validated, not expired): asking
 * again returns that record unchanged, whatever token_id says, and returns
 * 1; a new record returns 0. product_version: NULL or the version asked
 * for, recorded as given. */
int lic_temporary_issue(struct lic_store *s, const struct lic_device *dev, const char *product_version,
                        const uint8_t *token_id, struct lic_token *ret);

/* After a successful logon: temporary -> temporary-validated, only for the
 * device it was issued to and before it expires. 1 if it was validated
 * already (nothing changes). */
/* The same, naming the user who logged on: recorded on the token when it
 * has no user yet (a client that sent no cookie), so that the Device CAL
 * issued on it records them (lic_cal_issue takes the token's user when
 * the request names none). */
int lic_temporary_validate_user(struct lic_store *s, const uint8_t token_id[static LIC_TOKEN_ID_SIZE],
                                const uint8_t *hardware_id, size_t hardware_id_len, const char *user_name,
                                const char **reason);
int lic_temporary_validate(struct lic_store *s, const uint8_t token_id[static LIC_TOKEN_ID_SIZE],
                           const uint8_t *hardware_id, size_t hardware_id_len, const char **reason);

/* A Device CAL for a device presenting token `presented`:
 *   - a validated temporary token: if the device has an active CAL (of
 *     product_version, when given) that record is returned unchanged (1);
 *     otherwise, in one transaction, one CAL is taken from the pack with the
 *     most available (of product_version, when given; ties: oldest
 *     installed, then id), the record written (state active, expires issued
 *     + uniform(52 d, 89 d) in whole seconds) and audited (0).
 *   - an active CAL of the device: lic_cal_renew().
 * new_id: the new record's token id, or NULL for a random one. -ENOSPC when
 * no pack has one available: the caller borrows from a peer, or the device
 * keeps its temporary token. */
int lic_cal_issue(struct lic_store *s, const struct lic_device *dev, const char *product_version,
                  const uint8_t presented[static LIC_TOKEN_ID_SIZE], const uint8_t *new_id,
                  struct lic_token *ret, const char **reason);

/* A Device CAL lent to peer license server peer_name, which relays it to
 * its own terminal server (the device has no temporary token here). In one
 * transaction: if the device has an active CAL here (of product_version,
 * when given) that record is returned unchanged (1); otherwise one CAL is
 * taken from the pack with the most available, exactly as lic_cal_issue()
 * does, the record written with lent_to = peer_name and a 'lend' audit row
 * added (0). -ENOSPC when no pack has one. Renewal of a lent CAL is
 * lic_cal_issue() presenting it, like any other. */
int lic_cal_lend(struct lic_store *s, const struct lic_device *dev, const char *product_version,
                 const char *peer_name, const uint8_t *new_id, struct lic_token *ret, const char **reason);

/* Records in the audit log that we relayed a CAL borrowed from peer_name
 * (token_id and pack_id are the lender's); detail: NULL or up to 128 bytes
 * more. No record and no pool change here: the CAL lives at the lender. */
int lic_audit_borrow(struct lic_store *s, const uint8_t token_id[static LIC_TOKEN_ID_SIZE],
                     const char *pack_id, const char *device, const char *user, const char *peer_name,
                     const char *detail);

/* Renews the device's active CAL `token_id` when LIC_RENEW_WINDOW or less
 * remains (else -EAGAIN): a new active record from the same pack (device
 * and user names from dev), the old one expired, the pool unchanged, in one
 * transaction. ret->renewed_from names the old one. */
int lic_cal_renew(struct lic_store *s, const struct lic_device *dev,
                  const uint8_t token_id[static LIC_TOKEN_ID_SIZE], const uint8_t *new_id,
                  struct lic_token *ret, const char **reason);

/* Expires what is due at now: active CALs and live temporary tokens whose
 * expires <= now become expired; the CALs return to their packs. Every
 * write does this first; the role also calls it from a timer. Returns how
 * many records expired. */
int lic_expire(struct lic_store *s);

/* Revokes an active Device CAL: it returns to its pool. At most
 * LIC_REVOKE_PERCENT % of the pack's count (rounded down) may be revoked in
 * any LIC_REVOKE_WINDOW; beyond that -EDQUOT, and *ret_possible_at (if not
 * NULL) says when the next revocation in that pack becomes possible
 * (USEC_INFINITY: never, the pack is too small for any). */
int lic_revoke(struct lic_store *s, const uint8_t token_id[static LIC_TOKEN_ID_SIZE],
               usec_t *ret_possible_at, const char **reason);

int lic_token_get(struct lic_store *s, const uint8_t token_id[static LIC_TOKEN_ID_SIZE],
                  struct lic_token *ret);
/* Records matching filter (NULL: all), oldest issued first. Returns how
 * many were delivered. */
int lic_tokens_list(struct lic_store *s, const struct lic_token_filter *filter, lic_token_cb cb,
                    void *userdata);
/* Audit rows with seq > after, oldest first, at most limit (0: all).
 * Returns how many were delivered. */
int lic_audit_list(struct lic_store *s, uint64_t after, unsigned limit, lic_audit_cb cb, void *userdata);

/* Writes a report of what (LIC_REPORT_*) to f, from one snapshot: packs
 * with their counts and the totals (temporary tokens live and validated),
 * and the records that match filter. CSV writes one table per section,
 * each with its header line, separated by an empty line. -EIO when f fails. */
int lic_report_write(struct lic_store *s, FILE *f, enum lic_format format, unsigned what,
                     const struct lic_token_filter *filter);

/* For every pack, available + issued == count, where issued counts its
 * active CALs. 0 when that holds; -EUCLEAN otherwise, with the first
 * pack that breaks it in bad_pack (if not NULL). */
int lic_store_check(struct lic_store *s, char *bad_pack, size_t size);

const char *lic_state_to_string(enum lic_state st);
int lic_state_from_string(const char *s); /* enum lic_state or -EINVAL */
const char *lic_kind_to_string(enum lic_kind k);
const char *lic_action_to_string(enum lic_action a);
