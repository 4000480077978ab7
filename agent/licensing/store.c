/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The license store: SQLite in WAL mode. docs/licensing.md ("License
 * store") has the schema and the rules; keep the two in step.
 *
 * The pool is a number, packs.available, changed in the same transaction as
 * the record that takes or returns a CAL; issued is counted from the
 * records (state active). lic_store_check() compares the two, so a bug that
 * moved one without the other shows up instead of being papered over by a
 * trigger. Partial unique indexes make "one live temporary token per device"
 * and "one active CAL per device and product version" hold whatever
 * statement runs, and the CHECK on available keeps the pool within 0..count.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <jansson.h>
#include <sqlite3.h>

#include "store.h"
#include "tsfarm/cleanup.h"
#include "tsfarm/hex.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"
#include "tsfarm/sqlite.h"

/* 'tsfl': marks the file as a license store, so we refuse to migrate some
 * other program's SQLite database into ours. */
#define LIC_APPLICATION_ID 0x7473666c
/* Times beyond this are refused: expiries are added to them. */
#define TIME_MAX ((usec_t)INT64_MAX / 2)

/*
 * Migrations, in order: migrations[i] takes the schema from version i to
 * i + 1. Never edit a released step; append a new one.
 */
static const char *const migrations[] = {
        /* 0 -> 1: the initial schema. */
        "CREATE TABLE packs (\n"
        "        id TEXT PRIMARY KEY NOT NULL,\n"
        "        product_version TEXT NOT NULL,\n"
        "        count INTEGER NOT NULL CHECK (count BETWEEN 1 AND 1000000),\n"
        "        available INTEGER NOT NULL CHECK (available BETWEEN 0 AND count),\n"
        "        installed INTEGER NOT NULL\n"
        ");\n"
        "CREATE TABLE tokens (\n"
        "        token_id BLOB PRIMARY KEY NOT NULL CHECK (length(token_id) = 16),\n"
        "        kind INTEGER NOT NULL CHECK (kind IN (1, 2)), -- 1 temporary, 2 Device CAL\n"
        "        state INTEGER NOT NULL CHECK (state BETWEEN 0 AND 4),\n"
        "        pack_id TEXT REFERENCES packs (id),\n"
        "        product_version TEXT NOT NULL,\n"
        "        device_name TEXT NOT NULL,\n"
        "        hardware_id BLOB NOT NULL CHECK (length(hardware_id) BETWEEN 16 AND 64),\n"
        "        user_name TEXT NOT NULL,\n"
        "        issued INTEGER NOT NULL,\n"
        "        expires INTEGER NOT NULL CHECK (expires > issued),\n"
        "        state_time INTEGER NOT NULL,\n"
        "        renewed_from BLOB REFERENCES tokens (token_id),\n"
        "        CHECK ((kind = 1 AND pack_id IS NULL AND state IN (0, 1, 4)) OR\n"
        "               (kind = 2 AND pack_id IS NOT NULL AND state IN (2, 3, 4)))\n"
        ");\n"
        "CREATE UNIQUE INDEX tokens_live_temporary ON tokens (hardware_id) WHERE state IN (0, 1);\n"
        "CREATE UNIQUE INDEX tokens_active_cal ON tokens (hardware_id, product_version) WHERE state = 2;\n"
        "CREATE INDEX tokens_device ON tokens (hardware_id, state);\n"
        "CREATE INDEX tokens_pack ON tokens (pack_id, state, state_time);\n"
        "CREATE INDEX tokens_due ON tokens (state, expires);\n"
        "CREATE TABLE audit (\n"
        "        seq INTEGER PRIMARY KEY AUTOINCREMENT,\n"
        "        time INTEGER NOT NULL,\n"
        "        action TEXT NOT NULL CHECK (action IN ('install', 'temporary', 'validate', 'issue',\n"
        "                                               'renew', 'expire', 'revoke')),\n"
        "        token_id BLOB,\n"
        "        pack_id TEXT,\n"
        "        device TEXT,\n"
        "        user TEXT,\n"
        "        detail TEXT NOT NULL\n"
        ");\n",
        /* 1 -> 2: borrowing between license servers. tokens.lent_to names
         * the peer license server a CAL was lent to (NULL: issued for our
         * own terminal servers); the audit log gains 'lend' and 'borrow'.
         * SQLite cannot alter a CHECK, so the audit table is rebuilt: new
         * table, copy (seq kept), drop, rename (sqlite_sequence follows). */
        "ALTER TABLE tokens ADD COLUMN lent_to TEXT\n"
        "        CHECK (lent_to IS NULL OR (kind = 2 AND length(lent_to) BETWEEN 1 AND 63));\n"
        "CREATE TABLE audit_v2 (\n"
        "        seq INTEGER PRIMARY KEY AUTOINCREMENT,\n"
        "        time INTEGER NOT NULL,\n"
        "        action TEXT NOT NULL CHECK (action IN ('install', 'temporary', 'validate', 'issue',\n"
        "                                               'renew', 'expire', 'revoke', 'lend', 'borrow')),\n"
        "        token_id BLOB,\n"
        "        pack_id TEXT,\n"
        "        device TEXT,\n"
        "        user TEXT,\n"
        "        detail TEXT NOT NULL\n"
        ");\n"
        "INSERT INTO audit_v2 (seq, time, action, token_id, pack_id, device, user, detail)\n"
        "        SELECT seq, time, action, token_id, pack_id, device, user, detail FROM audit ORDER BY "
        "seq;\n"
        "DROP TABLE audit;\n"
        "ALTER TABLE audit_v2 RENAME TO audit;\n",
};

#define TOKEN_COLUMNS                                                                                    \
        "token_id, kind, state, pack_id, product_version, device_name, hardware_id, user_name, issued, " \
        "expires, state_time, renewed_from, lent_to"
/* ?1: the start of the revocation window. */
#define PACK_SELECT                                                                          \
        "SELECT p.id, p.product_version, p.installed, p.count, p.available, "                \
        "(SELECT count(*) FROM tokens t WHERE t.pack_id = p.id AND t.state = 2), "           \
        "(SELECT count(*) FROM tokens t WHERE t.pack_id = p.id AND t.state = 3), "           \
        "(SELECT count(*) FROM tokens t WHERE t.pack_id = p.id AND t.state = 4), "           \
        "max(0, p.count * 20 / 100 - (SELECT count(*) FROM tokens t WHERE t.pack_id = p.id " \
        "AND t.state = 3 AND t.state_time > ?1)) FROM packs p "
_Static_assert(LIC_REVOKE_PERCENT == 20, "PACK_SELECT spells out the revocation bound");

/* The statements lib/sqlite.c caches for us; it has the transactions'. */
enum stmt {
        ST_EXPIRE_AUDIT,
        ST_EXPIRE_POOL,
        ST_EXPIRE_TOKENS,
        ST_PACK_INSERT,
        ST_PACK_GET,
        ST_PACKS_ALL,
        ST_PACK_PICK,
        ST_PACK_TAKE,
        ST_PACK_RETURN,
        ST_TOKEN_GET,
        ST_TOKEN_INSERT,
        ST_TOKEN_SET_STATE,
        ST_TOKEN_SET_USER,
        ST_LIVE_TEMPORARY,
        ST_ACTIVE_CAL,
        ST_TOKENS_FILTER,
        ST_REVOCATIONS_COUNT,
        ST_REVOCATION_NTH,
        ST_AUDIT_INSERT,
        ST_AUDIT_LIST,
        ST_CHECK,
        ST_TEMPORARY_COUNTS,
        _ST_MAX,
};

static const char *const stmt_sql[_ST_MAX] = {
        /* Lazy expiry, ?1 = now: audit rows first (they read the records
         * as they were), then the pool, then the records. */
        [ST_EXPIRE_AUDIT] =
                "INSERT INTO audit (time, action, token_id, pack_id, device, user, detail) "
                "SELECT ?1, 'expire', token_id, pack_id, device_name, user_name, "
                "CASE kind WHEN 2 THEN 'lapsed; returned to the pool' ELSE 'lapsed' END "
                "FROM tokens WHERE state IN (0, 1, 2) AND expires <= ?1 ORDER BY expires, token_id",
        [ST_EXPIRE_POOL] = "UPDATE packs SET available = available + (SELECT count(*) FROM tokens t "
                           "WHERE t.pack_id = packs.id AND t.state = 2 AND t.expires <= ?1) "
                           "WHERE id IN (SELECT pack_id FROM tokens WHERE state = 2 AND expires <= ?1)",
        [ST_EXPIRE_TOKENS] =
                "UPDATE tokens SET state = 4, state_time = ?1 WHERE state IN (0, 1, 2) AND expires <= ?1",
        [ST_PACK_INSERT] = "INSERT INTO packs (id, product_version, count, available, installed) "
                           "VALUES (?1, ?2, ?3, ?3, ?4)",
        [ST_PACK_GET] = PACK_SELECT "WHERE p.id = ?2",
        [ST_PACKS_ALL] = PACK_SELECT "ORDER BY p.installed, p.id",
        [ST_PACK_PICK] = "SELECT id, product_version FROM packs WHERE available > 0 AND (?1 IS NULL OR "
                         "product_version = ?1) "
                         "ORDER BY available DESC, installed, id LIMIT 1",
        [ST_PACK_TAKE] = "UPDATE packs SET available = available - 1 WHERE id = ?1 AND available > 0",
        [ST_PACK_RETURN] = "UPDATE packs SET available = available + 1 WHERE id = ?1 AND available < count",
        [ST_TOKEN_GET] = "SELECT " TOKEN_COLUMNS " FROM tokens WHERE token_id = ?1",
        [ST_TOKEN_INSERT] = "INSERT INTO tokens (" TOKEN_COLUMNS ") "
                            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?9, ?11, ?12)",
        [ST_TOKEN_SET_STATE] =
                "UPDATE tokens SET state = ?3, state_time = ?4 WHERE token_id = ?1 AND state = ?2",
        [ST_TOKEN_SET_USER] = "UPDATE tokens SET user_name = ?2 WHERE token_id = ?1 AND user_name = ''",
        [ST_LIVE_TEMPORARY] =
                "SELECT " TOKEN_COLUMNS " FROM tokens WHERE hardware_id = ?1 AND state IN (0, 1)",
        [ST_ACTIVE_CAL] = "SELECT " TOKEN_COLUMNS " FROM tokens WHERE hardware_id = ?1 AND state = 2 "
                          "AND (?2 IS NULL OR product_version = ?2) ORDER BY issued DESC LIMIT 1",
        [ST_TOKENS_FILTER] = "SELECT " TOKEN_COLUMNS " FROM tokens WHERE (?1 IS NULL OR pack_id = ?1) "
                             "AND (?2 = 0 OR (?2 >> state) & 1) AND (?3 IS NULL OR device_name = ?3) "
                             "AND (?4 IS NULL OR hardware_id = ?4) ORDER BY issued, token_id",
        [ST_REVOCATIONS_COUNT] =
                "SELECT count(*) FROM tokens WHERE pack_id = ?1 AND state = 3 AND state_time > ?2",
        [ST_REVOCATION_NTH] = "SELECT state_time FROM tokens WHERE pack_id = ?1 AND state = 3 "
                              "AND state_time > ?2 ORDER BY state_time LIMIT 1 OFFSET ?3",
        [ST_AUDIT_INSERT] = "INSERT INTO audit (time, action, token_id, pack_id, device, user, detail) "
                            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        [ST_AUDIT_LIST] = "SELECT seq, time, action, token_id, pack_id, device, user, detail FROM audit "
                          "WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        [ST_CHECK] = "SELECT p.id, p.count, p.available, "
                     "(SELECT count(*) FROM tokens t WHERE t.pack_id = p.id AND t.state = 2) "
                     "FROM packs p ORDER BY p.id",
        [ST_TEMPORARY_COUNTS] = "SELECT state, count(*) FROM tokens WHERE state IN (0, 1) GROUP BY state",
};

struct lic_store {
        struct tsf_sqlite sql;

        lic_random_fn random;
        void *random_userdata;
};

static const char *const action_names[_LIC_ACTION_MAX] = {
        [LIC_ACTION_INSTALL] = "install",   [LIC_ACTION_TEMPORARY] = "temporary",
        [LIC_ACTION_VALIDATE] = "validate", [LIC_ACTION_ISSUE] = "issue",
        [LIC_ACTION_RENEW] = "renew",       [LIC_ACTION_EXPIRE] = "expire",
        [LIC_ACTION_REVOKE] = "revoke",     [LIC_ACTION_LEND] = "lend",
        [LIC_ACTION_BORROW] = "borrow",
};

/* Sets *reason (if asked for) and returns the error. */
static int refuse(const char **reason, int error, const char *why) {
        if (reason)
                *reason = why;
        log_debug("License store: %s", why);
        return error;
}

/* ---- SQLite plumbing ----------------------------------------------------- */

/* Runs a cached query that yields one integer. */
static int query_int(struct lic_store *s, enum stmt id, int64_t *ret, const char *fmt, ...) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = tsf_sqlite_query_va(&s->sql, id, &st, fmt, ap);
        va_end(ap);
        if (r <= 0)
                return r < 0 ? r : -ENOENT;
        *ret = sqlite3_column_int64(st, 0);
        return 0;
}

/* Copies a blob column; returns its length (0 for NULL or oversize). */
static size_t copy_blob(sqlite3_stmt *st, int col, uint8_t *buf, size_t size) {
        const void *b = sqlite3_column_blob(st, col);
        size_t n = b ? (size_t)sqlite3_column_bytes(st, col) : 0;

        if (n == 0 || n > size)
                return 0;
        memcpy(buf, b, n);
        return n;
}

/* ---- batches ------------------------------------------------------------- */

int lic_store_batch_begin(struct lic_store *s) {
        return s ? tsf_sqlite_batch_begin(&s->sql) : -EINVAL;
}

int lic_store_batch_commit(struct lic_store *s) {
        return s ? tsf_sqlite_batch_commit(&s->sql) : -EINVAL;
}

int lic_store_batch_abort(struct lic_store *s) {
        return s ? tsf_sqlite_batch_abort(&s->sql) : -EINVAL;
}

/* ---- open, migrate, close ------------------------------------------------ */

int lic_store_schema_version(void) {
        return (int)ELEMENTSOF(migrations);
}

/* lib/sqlite.c opens the file in WAL mode with synchronous = FULL. WAL:
 * reports never wait for an issuance. FULL: a commit returns only once the
 * WAL is on disk, so a CAL we signed and handed out is still recorded after
 * a power cut, not just after a crash. */
static const struct tsf_sqlite_spec spec = {
        .what = "license",
        .application_id = LIC_APPLICATION_ID,
        .migrations = migrations,
        .n_migrations = ELEMENTSOF(migrations),
        .stmt_sql = stmt_sql,
        .n_stmts = _ST_MAX,
};

static int random_getrandom(void *buf, size_t n, void *userdata) {
        uint8_t *p = buf;

        while (n > 0) {
                ssize_t k = getrandom(p, n, 0);

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                p += k;
                n -= (size_t)k;
        }
        return 0;
}

int lic_store_open(const char *path, struct lic_store **ret) {
        _cleanup_(lic_store_closep) struct lic_store *s = NULL;
        int r;

        if (!path || !ret)
                return -EINVAL;
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->random = random_getrandom;
        r = tsf_sqlite_open(&s->sql, path, &spec);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(s);
        return 0;
}

struct lic_store *lic_store_close(struct lic_store *s) {
        if (!s)
                return NULL;
        tsf_sqlite_close(&s->sql);
        free(s);
        return NULL;
}

void lic_store_set_random(struct lic_store *s, lic_random_fn fn, void *userdata) {
        s->random = fn ?: random_getrandom;
        s->random_userdata = fn ? userdata : NULL;
}

/* ---- validation ---------------------------------------------------------- */

/* Pack ids and product versions: what an operator types. */
static bool valid_ident(const char *n, size_t max) {
        size_t len;

        if (!n)
                return false;
        len = strlen(n);
        if (len == 0 || len > max)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= 'A' && n[i] <= 'Z') ||
                      (n[i] >= '0' && n[i] <= '9') || n[i] == '.' || n[i] == '-' || n[i] == '_'))
                        return false;
        return true;
}

/* NULL and "" mean "any version" where a version is optional. */
static bool valid_version_opt(const char *v) {
        return !v || !*v || valid_ident(v, LIC_PRODUCT_VERSION_MAX);
}

static const char *version_or_null(const char *v) {
        return v && *v ? v : NULL;
}

/* Strict UTF-8: no overlong forms, no surrogates, nothing beyond U+10FFFF. */
static bool valid_utf8(const char *t, size_t len) {
        const unsigned char *p = (const unsigned char *)t, *end = p + len;

        while (p < end) {
                unsigned char c = *p;
                size_t n;
                uint32_t cp;

                if (c < 0x80) {
                        p++;
                        continue;
                }
                if (c >= 0xc2 && c <= 0xdf) {
                        n = 1;
                        cp = c & 0x1f;
                } else if (c >= 0xe0 && c <= 0xef) {
                        n = 2;
                        cp = c & 0x0f;
                } else if (c >= 0xf0 && c <= 0xf4) {
                        n = 3;
                        cp = c & 0x07;
                } else
                        return false;
                if ((size_t)(end - p) <= n)
                        return false;
                for (size_t i = 1; i <= n; i++) {
                        if ((p[i] & 0xc0) != 0x80)
                                return false;
                        cp = (cp << 6) | (p[i] & 0x3f);
                }
                if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
                    (cp >= 0xd800 && cp <= 0xdfff))
                        return false;
                p += n + 1;
        }
        return true;
}

/* Names from clients: valid UTF-8 (JSON needs it), at most max bytes. */
static bool valid_name(const char *t, size_t max, bool required) {
        size_t len;

        if (!t)
                return !required;
        len = strnlen(t, max + 1);
        if (len > max || (required && len == 0))
                return false;
        return valid_utf8(t, len);
}

static bool valid_hardware_id(const uint8_t *h, size_t len) {
        return h && len >= LIC_HARDWARE_ID_MIN && len <= LIC_HARDWARE_ID_MAX;
}

static bool valid_device(const struct lic_device *d) {
        return d && valid_hardware_id(d->hardware_id, d->hardware_id_len) &&
               valid_name(d->device_name, LIC_DEVICE_NAME_MAX, true) &&
               valid_name(d->user_name, LIC_USER_NAME_MAX, false);
}

static bool valid_filter(const struct lic_token_filter *f) {
        if (!f)
                return true;
        if (f->pack_id && !valid_ident(f->pack_id, LIC_PACK_ID_MAX))
                return false;
        if (f->states >> _LIC_STATE_MAX)
                return false;
        if (f->device_name && !valid_name(f->device_name, LIC_DEVICE_NAME_MAX, true))
                return false;
        if (f->hardware_id_len > 0 && !valid_hardware_id(f->hardware_id, f->hardware_id_len))
                return false;
        return true;
}

static usec_t now_checked(void) {
        usec_t now = tsf_now_realtime();

        return now > LIC_REVOKE_WINDOW && now < TIME_MAX ? now : 0;
}

/* ---- rows ---------------------------------------------------------------- */

static void row_to_token(sqlite3_stmt *st, struct lic_token *t) {
        memset(t, 0, sizeof(*t));
        (void)copy_blob(st, 0, t->token_id, sizeof(t->token_id));
        t->kind = (enum lic_kind)sqlite3_column_int(st, 1);
        t->state = (enum lic_state)sqlite3_column_int(st, 2);
        tsf_sqlite_copy_text(st, 3, t->pack_id, sizeof(t->pack_id));
        tsf_sqlite_copy_text(st, 4, t->product_version, sizeof(t->product_version));
        tsf_sqlite_copy_text(st, 5, t->device_name, sizeof(t->device_name));
        t->hardware_id_len = copy_blob(st, 6, t->hardware_id, sizeof(t->hardware_id));
        tsf_sqlite_copy_text(st, 7, t->user_name, sizeof(t->user_name));
        t->issued = (usec_t)sqlite3_column_int64(st, 8);
        t->expires = (usec_t)sqlite3_column_int64(st, 9);
        t->state_time = (usec_t)sqlite3_column_int64(st, 10);
        t->renewed = copy_blob(st, 11, t->renewed_from, sizeof(t->renewed_from)) == LIC_TOKEN_ID_SIZE;
        tsf_sqlite_copy_text(st, 12, t->lent_to, sizeof(t->lent_to));
}

static void row_to_pack(sqlite3_stmt *st, struct lic_pack *p) {
        memset(p, 0, sizeof(*p));
        tsf_sqlite_copy_text(st, 0, p->id, sizeof(p->id));
        tsf_sqlite_copy_text(st, 1, p->product_version, sizeof(p->product_version));
        p->installed = (usec_t)sqlite3_column_int64(st, 2);
        p->count = (uint32_t)sqlite3_column_int64(st, 3);
        p->available = (uint32_t)sqlite3_column_int64(st, 4);
        p->issued = (uint32_t)sqlite3_column_int64(st, 5);
        p->revoked = (uint32_t)sqlite3_column_int64(st, 6);
        p->expired = (uint32_t)sqlite3_column_int64(st, 7);
        p->revocable = (uint32_t)sqlite3_column_int64(st, 8);
}

/* 0 and the record, -ENOENT, or another error; stmt takes ?1 (and ?2). */
static int token_query(struct lic_store *s, enum stmt id, struct lic_token *ret, const char *fmt, ...) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = tsf_sqlite_query_va(&s->sql, id, &st, fmt, ap);
        va_end(ap);
        if (r <= 0)
                return r < 0 ? r : -ENOENT;
        row_to_token(st, ret);
        return 0;
}

static int token_lookup(struct lic_store *s, const uint8_t *id, struct lic_token *ret) {
        return token_query(s, ST_TOKEN_GET, ret, "b", id, (size_t)LIC_TOKEN_ID_SIZE);
}

static int pack_lookup(struct lic_store *s, const char *id, usec_t now, struct lic_pack *ret) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = tsf_sqlite_query(&s->sql, ST_PACK_GET, &st, "it", (int64_t)(now - LIC_REVOKE_WINDOW), id);
        if (r <= 0)
                return r < 0 ? r : -ENOENT;
        row_to_pack(st, ret);
        return 0;
}

static bool same_device(const struct lic_token *t, const uint8_t *hw, size_t len) {
        return t->hardware_id_len == len && memcmp(t->hardware_id, hw, len) == 0;
}

/* The record of token `id`, refused (with *reason) unless it exists and
 * belongs to the device with that hardware id: what every request that
 * presents a token starts with. */
static int device_token_lookup(struct lic_store *s, const uint8_t *id, const uint8_t *hw, size_t len,
                               struct lic_token *ret, const char **reason) {
        int r = token_lookup(s, id, ret);

        if (r == -ENOENT)
                return refuse(reason, r, "unknown token");
        if (r < 0)
                return r;
        if (!same_device(ret, hw, len))
                return refuse(reason, -EPERM, "token issued to another device");
        return 0;
}

static int audit(struct lic_store *s, usec_t now, enum lic_action a, const uint8_t *token_id,
                 const char *pack_id, const char *device, const char *user, const char *fmt, ...)
        _printf_(8, 9);

static int audit(struct lic_store *s, usec_t now, enum lic_action a, const uint8_t *token_id,
                 const char *pack_id, const char *device, const char *user, const char *fmt, ...) {
        char detail[256];
        va_list ap;
        int r;

        va_start(ap, fmt);
        vsnprintf(detail, sizeof(detail), fmt, ap);
        va_end(ap);
        r = tsf_sqlite_run(&s->sql, ST_AUDIT_INSERT, "itbtttt", (int64_t)now, action_names[a], token_id,
                           (size_t)(token_id ? LIC_TOKEN_ID_SIZE : 0), pack_id, device, user, detail);
        return r < 0 ? r : 0;
}

/* A random id, or the caller's. */
static int token_id_make(struct lic_store *s, const uint8_t *given, uint8_t ret[static LIC_TOKEN_ID_SIZE]) {
        if (given) {
                memcpy(ret, given, LIC_TOKEN_ID_SIZE);
                return 0;
        }
        return s->random(ret, LIC_TOKEN_ID_SIZE, s->random_userdata);
}

/* Uniform in [0, n) by rejection, n > 0. */
static int random_below(struct lic_store *s, uint64_t n, uint64_t *ret) {
        uint64_t limit = UINT64_MAX - UINT64_MAX % n, v;
        int r;

        for (unsigned tries = 0; tries < 64; tries++) {
                r = s->random(&v, sizeof(v), s->random_userdata);
                if (r < 0)
                        return r;
                if (v < limit) {
                        *ret = v % n;
                        return 0;
                }
        }
        return -EIO; /* a source that keeps answering the top of the range */
}

/* A CAL's lifetime: uniform over [52 d, 89 d] in whole seconds. */
static int cal_lifetime(struct lic_store *s, usec_t *ret) {
        const uint64_t lo = LIC_CAL_LIFETIME_MIN / USEC_PER_SEC, hi = LIC_CAL_LIFETIME_MAX / USEC_PER_SEC;
        uint64_t v;
        int r;

        r = random_below(s, hi - lo + 1, &v);
        if (r < 0)
                return r;
        *ret = (lo + v) * USEC_PER_SEC;
        return 0;
}

/* ---- expiry -------------------------------------------------------------- */

/* Returns how many records expired. */
static int expire_due(struct lic_store *s, usec_t now) {
        int r;

        r = tsf_sqlite_run(&s->sql, ST_EXPIRE_AUDIT, "i", (int64_t)now);
        if (r <= 0)
                return r;
        r = tsf_sqlite_run(&s->sql, ST_EXPIRE_POOL, "i", (int64_t)now);
        if (r < 0)
                return r;
        r = tsf_sqlite_run(&s->sql, ST_EXPIRE_TOKENS, "i", (int64_t)now);
        if (r > 0)
                log_debug("License store: %d records expired.", r);
        return r;
}

/* Begins a write operation: the transaction, then lazy expiry. */
static int op_begin(struct lic_store *s, usec_t now) {
        int r;

        if (now == 0)
                return -ERANGE; /* a clock we cannot compute expiries from */
        r = tsf_sqlite_tx_begin(&s->sql);
        if (r < 0)
                return r;
        r = expire_due(s, now);
        if (r < 0) {
                tsf_sqlite_tx_abort(&s->sql);
                return r;
        }
        return r;
}

int lic_expire(struct lic_store *s) {
        _cleanup_(tsf_sqlite_tx_abortp) struct tsf_sqlite *tx = NULL;
        int r, n;

        if (!s)
                return -EINVAL;
        n = op_begin(s, now_checked());
        if (n < 0)
                return n;
        tx = &s->sql;
        r = tsf_sqlite_tx_commit(TAKE_PTR(tx));
        return r < 0 ? r : n;
}

/* ---- packs --------------------------------------------------------------- */

int lic_pack_install(struct lic_store *s, const char *id, const char *product_version, uint32_t count) {
        _cleanup_(tsf_sqlite_tx_abortp) struct tsf_sqlite *tx = NULL;
        usec_t now = now_checked();
        struct lic_pack p;
        int r;

        if (!s || !valid_ident(id, LIC_PACK_ID_MAX) ||
            !valid_ident(product_version, LIC_PRODUCT_VERSION_MAX) || count == 0 ||
            count > LIC_PACK_COUNT_MAX)
                return -EINVAL;
        r = op_begin(s, now);
        if (r < 0)
                return r;
        tx = &s->sql;
        r = pack_lookup(s, id, now, &p);
        if (r >= 0)
                return -EEXIST;
        if (r != -ENOENT)
                return r;
        r = tsf_sqlite_run(&s->sql, ST_PACK_INSERT, "ttii", id, product_version, (int64_t)count,
                           (int64_t)now);
        if (r < 0)
                return r;
        r = audit(s, now, LIC_ACTION_INSTALL, NULL, id, NULL, NULL, "%" PRIu32 " CALs, product version %s",
                  count, product_version);
        if (r < 0)
                return r;
        return tsf_sqlite_tx_commit(TAKE_PTR(tx));
}

int lic_pack_get(struct lic_store *s, const char *id, struct lic_pack *ret) {
        usec_t now = now_checked();

        if (!s || !ret || !valid_ident(id, LIC_PACK_ID_MAX))
                return -EINVAL;
        if (now == 0)
                return -ERANGE;
        return pack_lookup(s, id, now, ret);
}

/* Inside a read transaction or an operation; returns how many were delivered. */
static int packs_foreach(struct lic_store *s, usec_t now, lic_pack_cb cb, void *userdata) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r, n = 0;

        r = tsf_sqlite_stmt(&s->sql, ST_PACKS_ALL, &st);
        if (r >= 0)
                r = tsf_sqlite_bind(st, "i", (int64_t)(now - LIC_REVOKE_WINDOW));
        while (r >= 0 && (r = tsf_sqlite_step(st)) > 0) {
                struct lic_pack p;

                row_to_pack(st, &p);
                r = cb(&p, userdata);
                if (r >= 0)
                        n++;
        }
        return r < 0 ? r : n;
}

int lic_packs_list(struct lic_store *s, lic_pack_cb cb, void *userdata) {
        usec_t now = now_checked();
        bool began;
        int r;

        if (!s || !cb)
                return -EINVAL;
        if (now == 0)
                return -ERANGE;
        r = tsf_sqlite_read_begin(&s->sql, &began);
        if (r < 0)
                return r;
        r = packs_foreach(s, now, cb, userdata);
        tsf_sqlite_read_end(&s->sql, began);
        return r;
}

/* ---- temporary tokens ---------------------------------------------------- */

int lic_temporary_issue(struct lic_store *s, const struct lic_device *dev, const char *product_version,
                        const uint8_t *token_id, struct lic_token *ret) {
        _cleanup_(tsf_sqlite_tx_abortp) struct tsf_sqlite *tx = NULL;
        usec_t now = now_checked();
        uint8_t id[LIC_TOKEN_ID_SIZE];
        char when[TSF_TIMESTAMP_MAX];
        int r;

        if (!s || !valid_device(dev) || !valid_version_opt(product_version) || !ret)
                return -EINVAL;
        r = op_begin(s, now);
        if (r < 0)
                return r;
        tx = &s->sql;

        /* One live temporary token per device: a retry gets the same. */
        r = token_query(s, ST_LIVE_TEMPORARY, ret, "b", dev->hardware_id, dev->hardware_id_len);
        if (r >= 0) {
                r = tsf_sqlite_tx_commit(TAKE_PTR(tx));
                return r < 0 ? r : 1;
        }
        if (r != -ENOENT)
                return r;

        r = token_id_make(s, token_id, id);
        if (r < 0)
                return r;
        r = tsf_sqlite_run(&s->sql, ST_TOKEN_INSERT, "biitttbtiibt", id, sizeof(id),
                           (int64_t)LIC_KIND_TEMPORARY, (int64_t)LIC_STATE_TEMPORARY, NULL,
                           product_version ?: "", dev->device_name, dev->hardware_id, dev->hardware_id_len,
                           dev->user_name ?: "", (int64_t)now, (int64_t)(now + LIC_TEMPORARY_LIFETIME), NULL,
                           (size_t)0, NULL);
        if (r < 0)
                return r;
        r = audit(s, now, LIC_ACTION_TEMPORARY, id, NULL, dev->device_name, dev->user_name, "expires %s",
                  tsf_format_timestamp(now + LIC_TEMPORARY_LIFETIME, when, sizeof(when)));
        if (r < 0)
                return r;
        r = token_lookup(s, id, ret);
        if (r < 0)
                return r;
        return tsf_sqlite_tx_commit(TAKE_PTR(tx));
}

int lic_temporary_validate_user(struct lic_store *s, const uint8_t token_id[static LIC_TOKEN_ID_SIZE],
                                const uint8_t *hardware_id, size_t hardware_id_len, const char *user_name,
                                const char **reason) {
        _cleanup_(tsf_sqlite_tx_abortp) struct tsf_sqlite *tx = NULL;
        usec_t now = now_checked();
        struct lic_token t;
        int r;

        if (!s || !token_id || !valid_hardware_id(hardware_id, hardware_id_len) ||
            (user_name && strlen(user_name) > LIC_USER_NAME_MAX))
                return -EINVAL;
        r = op_begin(s, now);
        if (r < 0)
                return r;
        tx = &s->sql;

        r = device_token_lookup(s, token_id, hardware_id, hardware_id_len, &t, reason);
        if (r < 0)
                return r;
        if (t.kind != LIC_KIND_TEMPORARY)
                return refuse(reason, -EMEDIUMTYPE, "not a temporary token");
        /* A device that connected without saying who (no cookie) is
         * issued its temporary token before the logon: the logon names the
         * user, and the Device CAL taken on it records them. */
        if (user_name && *user_name && !t.user_name[0] &&
            (t.state == LIC_STATE_TEMPORARY || t.state == LIC_STATE_TEMPORARY_VALIDATED)) {
                r = tsf_sqlite_run(&s->sql, ST_TOKEN_SET_USER, "bt", token_id, (size_t)LIC_TOKEN_ID_SIZE,
                                   user_name);
                if (r < 0)
                        return r;
                snprintf(t.user_name, sizeof(t.user_name), "%s", user_name);
        }
        if (t.state == LIC_STATE_TEMPORARY_VALIDATED) {
                r = tsf_sqlite_tx_commit(TAKE_PTR(tx));
                return r < 0 ? r : 1;
        }
        if (t.state != LIC_STATE_TEMPORARY)
                return refuse(reason, -EKEYEXPIRED, "temporary token expired");

        r = tsf_sqlite_run(&s->sql, ST_TOKEN_SET_STATE, "biii", token_id, (size_t)LIC_TOKEN_ID_SIZE,
                           (int64_t)LIC_STATE_TEMPORARY, (int64_t)LIC_STATE_TEMPORARY_VALIDATED,
                           (int64_t)now);
        if (r < 0)
                return r;
        if (r != 1)
                return -EIO;
        r = audit(s, now, LIC_ACTION_VALIDATE, token_id, NULL, t.device_name, t.user_name,
                  "validated after logon");
        if (r < 0)
                return r;
        return tsf_sqlite_tx_commit(TAKE_PTR(tx));
}

int lic_temporary_validate(struct lic_store *s, const uint8_t token_id[static LIC_TOKEN_ID_SIZE],
                           const uint8_t *hardware_id, size_t hardware_id_len, const char **reason) {
        return lic_temporary_validate_user(s, token_id, hardware_id, hardware_id_len, NULL, reason);
}

/* ---- Device CALs --------------------------------------------------------- */

/* Writes a new active CAL from pack (already taken from its pool, or
 * unchanged for a renewal) and reads it back into ret. lent_to: NULL, or
 * the peer license server it is lent to. */
static int cal_write(struct lic_store *s, usec_t now, const struct lic_device *dev, const char *pack_id,
                     const char *product_version, const uint8_t *new_id, const uint8_t *renewed_from,
                     const char *lent_to, struct lic_token *ret) {
        uint8_t id[LIC_TOKEN_ID_SIZE];
        usec_t lifetime;
        int r;

        r = token_id_make(s, new_id, id);
        if (r < 0)
                return r;
        r = cal_lifetime(s, &lifetime);
        if (r < 0)
                return r;
        r = tsf_sqlite_run(&s->sql, ST_TOKEN_INSERT, "biitttbtiibt", id, sizeof(id), (int64_t)LIC_KIND_CAL,
                           (int64_t)LIC_STATE_ACTIVE, pack_id, product_version, dev->device_name,
                           dev->hardware_id, dev->hardware_id_len, dev->user_name ?: "", (int64_t)now,
                           (int64_t)(now + lifetime), renewed_from,
                           (size_t)(renewed_from ? LIC_TOKEN_ID_SIZE : 0),
                           lent_to && *lent_to ? lent_to : NULL);
        if (r < 0)
                return r;
        return token_lookup(s, id, ret);
}

static int renew_locked(struct lic_store *s, usec_t now, const struct lic_device *dev,
                        const struct lic_token *old, const uint8_t *new_id, struct lic_token *ret,
                        const char **reason) {
        char when[TSF_TIMESTAMP_MAX], old_hex[2 * LIC_TOKEN_ID_SIZE + 1];
        int r;

        /* Active after lazy expiry, so old->expires > now. */
        if (old->expires - now > LIC_RENEW_WINDOW)
                return refuse(reason, -EAGAIN, "renewal only when 7 days or fewer remain");

        /* The old record first: one active CAL per device and version. A
         * lent CAL stays lent: it still serves the borrower's terminal
         * servers, only the device now asks us directly. */
        r = tsf_sqlite_run(&s->sql, ST_TOKEN_SET_STATE, "biii", old->token_id, sizeof(old->token_id),
                           (int64_t)LIC_STATE_ACTIVE, (int64_t)LIC_STATE_EXPIRED, (int64_t)now);
        if (r < 0)
                return r;
        if (r != 1)
                return -EIO;
        r = cal_write(s, now, dev, old->pack_id, old->product_version, new_id, old->token_id, old->lent_to,
                      ret);
        if (r < 0)
                return r;
        tsf_hex_encode(old->token_id, sizeof(old->token_id), old_hex);
        return audit(s, now, LIC_ACTION_RENEW, ret->token_id, ret->pack_id, ret->device_name, ret->user_name,
                     "renews %s; expires %s", old_hex,
                     tsf_format_timestamp(ret->expires, when, sizeof(when)));
}

/* The refusal for a record that is not (or no longer) usable. */
static int refuse_state(const struct lic_token *t, const char **reason) {
        switch (t->state) {
        case LIC_STATE_TEMPORARY:
                return refuse(reason, -EACCES, "temporary token not validated yet");
        case LIC_STATE_REVOKED:
                return refuse(reason, -EKEYREVOKED, "token revoked");
        case LIC_STATE_EXPIRED:
                return refuse(reason, -EKEYEXPIRED,
                              t->kind == LIC_KIND_CAL ? "CAL expired or renewed"
                                                      : "temporary token expired");
        default:
                return refuse(reason, -EINVAL, "token in an unexpected state");
        }
}

/* Takes one CAL from the pack with the most available (of product_version
 * when given; ties: oldest installed, then id) and writes its record.
 * -ENOSPC when no pack has one. Inside an operation. */
static int cal_take(struct lic_store *s, usec_t now, const struct lic_device *dev,
                    const char *product_version, const uint8_t *new_id, const char *lent_to,
                    struct lic_token *ret, const char **reason) {
        char pack_id[LIC_PACK_ID_MAX + 1], version[LIC_PRODUCT_VERSION_MAX + 1];
        int r;

        {
                _cleanup_stmt_ sqlite3_stmt *st = NULL;

                r = tsf_sqlite_query(&s->sql, ST_PACK_PICK, &st, "t", product_version);
                if (r < 0)
                        return r;
                if (r == 0)
                        return refuse(reason, -ENOSPC, "no key pack has a CAL available");
                tsf_sqlite_copy_text(st, 0, pack_id, sizeof(pack_id));
                tsf_sqlite_copy_text(st, 1, version, sizeof(version));
        }
        r = tsf_sqlite_run(&s->sql, ST_PACK_TAKE, "t", pack_id);
        if (r < 0)
                return r;
        if (r != 1)
                return -EIO;
        return cal_write(s, now, dev, pack_id, version, new_id, NULL, lent_to, ret);
}

int lic_cal_issue(struct lic_store *s, const struct lic_device *dev, const char *product_version,
                  const uint8_t presented[static LIC_TOKEN_ID_SIZE], const uint8_t *new_id,
                  struct lic_token *ret, const char **reason) {
        _cleanup_(tsf_sqlite_tx_abortp) struct tsf_sqlite *tx = NULL;
        usec_t now = now_checked();
        char when[TSF_TIMESTAMP_MAX], presented_hex[2 * LIC_TOKEN_ID_SIZE + 1];
        struct lic_device named;
        struct lic_token p;
        int r;

        if (!s || !valid_device(dev) || !valid_version_opt(product_version) || !presented || !ret)
                return -EINVAL;
        product_version = version_or_null(product_version);
        r = op_begin(s, now);
        if (r < 0)
                return r;
        tx = &s->sql;

        r = device_token_lookup(s, presented, dev->hardware_id, dev->hardware_id_len, &p, reason);
        if (r < 0)
                return r;
        if (p.kind == LIC_KIND_CAL && p.state == LIC_STATE_ACTIVE) {
                r = renew_locked(s, now, dev, &p, new_id, ret, reason);
                if (r < 0)
                        return r;
                return tsf_sqlite_tx_commit(TAKE_PTR(tx));
        }
        if (p.state != LIC_STATE_TEMPORARY_VALIDATED)
                return refuse_state(&p, reason);
        if ((!dev->user_name || !*dev->user_name) && p.user_name[0]) {
                /* The logon that validated the temporary token named the user. */
                named = *dev;
                named.user_name = p.user_name;
                dev = &named;
        }

        /* It has one already (the answer got lost): the same again. */
        r = token_query(s, ST_ACTIVE_CAL, ret, "bt", dev->hardware_id, dev->hardware_id_len,
                        product_version);
        if (r >= 0) {
                r = tsf_sqlite_tx_commit(TAKE_PTR(tx));
                return r < 0 ? r : 1;
        }
        if (r != -ENOENT)
                return r;

        r = cal_take(s, now, dev, product_version, new_id, NULL, ret, reason);
        if (r < 0)
                return r;
        tsf_hex_encode(presented, LIC_TOKEN_ID_SIZE, presented_hex);
        r = audit(s, now, LIC_ACTION_ISSUE, ret->token_id, ret->pack_id, ret->device_name, ret->user_name,
                  "expires %s; temporary token %s", tsf_format_timestamp(ret->expires, when, sizeof(when)),
                  presented_hex);
        if (r < 0)
                return r;
        return tsf_sqlite_tx_commit(TAKE_PTR(tx));
}

int lic_cal_renew(struct lic_store *s, const struct lic_device *dev,
                  const uint8_t token_id[static LIC_TOKEN_ID_SIZE], const uint8_t *new_id,
                  struct lic_token *ret, const char **reason) {
        _cleanup_(tsf_sqlite_tx_abortp) struct tsf_sqlite *tx = NULL;
        usec_t now = now_checked();
        struct lic_token old;
        int r;

        if (!s || !valid_device(dev) || !token_id || !ret)
                return -EINVAL;
        r = op_begin(s, now);
        if (r < 0)
                return r;
        tx = &s->sql;

        r = device_token_lookup(s, token_id, dev->hardware_id, dev->hardware_id_len, &old, reason);
        if (r < 0)
                return r;
        if (old.kind != LIC_KIND_CAL)
                return refuse(reason, -EMEDIUMTYPE, "not a Device CAL");
        if (old.state != LIC_STATE_ACTIVE)
                return refuse_state(&old, reason);
        r = renew_locked(s, now, dev, &old, new_id, ret, reason);
        if (r < 0)
                return r;
        return tsf_sqlite_tx_commit(TAKE_PTR(tx));
}

/* Peer names: node names (certificate CNs), 1..63 of letters, digits, '.',
 * '-', '_'. */
static bool valid_peer(const char *n) {
        return valid_ident(n, LIC_PEER_NAME_MAX);
}

int lic_cal_lend(struct lic_store *s, const struct lic_device *dev, const char *product_version,
                 const char *peer_name, const uint8_t *new_id, struct lic_token *ret, const char **reason) {
        _cleanup_(tsf_sqlite_tx_abortp) struct tsf_sqlite *tx = NULL;
        usec_t now = now_checked();
        char when[TSF_TIMESTAMP_MAX];
        int r;

        if (!s || !valid_device(dev) || !valid_version_opt(product_version) || !valid_peer(peer_name) ||
            !ret)
                return -EINVAL;
        product_version = version_or_null(product_version);
        r = op_begin(s, now);
        if (r < 0)
                return r;
        tx = &s->sql;

        /* The device has one here already (an answer lost on the way, or a
         * CAL it got from us some other way): the same again. */
        r = token_query(s, ST_ACTIVE_CAL, ret, "bt", dev->hardware_id, dev->hardware_id_len,
                        product_version);
        if (r >= 0) {
                r = tsf_sqlite_tx_commit(TAKE_PTR(tx));
                return r < 0 ? r : 1;
        }
        if (r != -ENOENT)
                return r;

        r = cal_take(s, now, dev, product_version, new_id, peer_name, ret, reason);
        if (r < 0)
                return r;
        r = audit(s, now, LIC_ACTION_LEND, ret->token_id, ret->pack_id, ret->device_name, ret->user_name,
                  "lent to %s; expires %s", peer_name,
                  tsf_format_timestamp(ret->expires, when, sizeof(when)));
        if (r < 0)
                return r;
        return tsf_sqlite_tx_commit(TAKE_PTR(tx));
}

int lic_audit_borrow(struct lic_store *s, const uint8_t token_id[static LIC_TOKEN_ID_SIZE],
                     const char *pack_id, const char *device, const char *user, const char *peer_name,
                     const char *detail) {
        _cleanup_(tsf_sqlite_tx_abortp) struct tsf_sqlite *tx = NULL;
        usec_t now = now_checked();
        int r;

        if (!s || !token_id || !valid_ident(pack_id, LIC_PACK_ID_MAX) ||
            !valid_name(device, LIC_DEVICE_NAME_MAX, true) || !valid_name(user, LIC_USER_NAME_MAX, false) ||
            !valid_peer(peer_name) || !valid_name(detail, 128, false))
                return -EINVAL;
        r = op_begin(s, now);
        if (r < 0)
                return r;
        tx = &s->sql;
        r = audit(s, now, LIC_ACTION_BORROW, token_id, pack_id, device, user, "borrowed from %s%s%s",
                  peer_name, detail && *detail ? "; " : "", detail ?: "");
        if (r < 0)
                return r;
        return tsf_sqlite_tx_commit(TAKE_PTR(tx));
}

/* ---- revocation ---------------------------------------------------------- */

int lic_revoke(struct lic_store *s, const uint8_t token_id[static LIC_TOKEN_ID_SIZE],
               usec_t *ret_possible_at, const char **reason) {
        _cleanup_(tsf_sqlite_tx_abortp) struct tsf_sqlite *tx = NULL;
        usec_t now = now_checked(), since;
        struct lic_token t;
        struct lic_pack p;
        int64_t in_window, oldest;
        uint32_t limit;
        int r;

        if (!s || !token_id)
                return -EINVAL;
        r = op_begin(s, now);
        if (r < 0)
                return r;
        tx = &s->sql;
        since = now - LIC_REVOKE_WINDOW;

        r = token_lookup(s, token_id, &t);
        if (r == -ENOENT)
                return refuse(reason, r, "unknown token");
        if (r < 0)
                return r;
        if (t.kind != LIC_KIND_CAL)
                return refuse(reason, -EMEDIUMTYPE, "only Device CALs are revoked; temporary tokens lapse");
        if (t.state != LIC_STATE_ACTIVE)
                return refuse(reason, -EALREADY, "CAL not active: expired, renewed or revoked already");
        r = pack_lookup(s, t.pack_id, now, &p);
        if (r < 0)
                return r;

        /* At most 20% of the pack in any 60-day window: with k revocations
         * in the window, the next one is possible once the (k - limit + 1)th
         * oldest of them leaves it. */
        limit = p.count * LIC_REVOKE_PERCENT / 100;
        r = query_int(s, ST_REVOCATIONS_COUNT, &in_window, "ti", t.pack_id, (int64_t)since);
        if (r < 0)
                return r;
        if (in_window >= (int64_t)limit) {
                if (limit == 0) {
                        if (ret_possible_at)
                                *ret_possible_at = USEC_INFINITY;
                        return refuse(reason, -EDQUOT,
                                      "pack too small to revoke from (20% of its count is under one CAL)");
                }
                r = query_int(s, ST_REVOCATION_NTH, &oldest, "tii", t.pack_id, (int64_t)since,
                              in_window - (int64_t)limit);
                if (r < 0)
                        return r;
                if (ret_possible_at)
                        *ret_possible_at = (usec_t)oldest + LIC_REVOKE_WINDOW;
                return refuse(reason, -EDQUOT, "20% of the pack's CALs revoked in the last 60 days");
        }

        r = tsf_sqlite_run(&s->sql, ST_TOKEN_SET_STATE, "biii", token_id, (size_t)LIC_TOKEN_ID_SIZE,
                           (int64_t)LIC_STATE_ACTIVE, (int64_t)LIC_STATE_REVOKED, (int64_t)now);
        if (r < 0)
                return r;
        if (r != 1)
                return -EIO;
        r = tsf_sqlite_run(&s->sql, ST_PACK_RETURN, "t", t.pack_id);
        if (r < 0)
                return r;
        if (r != 1)
                return -EIO;
        r = audit(s, now, LIC_ACTION_REVOKE, token_id, t.pack_id, t.device_name, t.user_name,
                  "returned to the pool; %" PRIi64 " of %" PRIu32 " revocations in the 60-day window",
                  in_window + 1, limit);
        if (r < 0)
                return r;
        return tsf_sqlite_tx_commit(TAKE_PTR(tx));
}

/* ---- queries ------------------------------------------------------------- */

int lic_token_get(struct lic_store *s, const uint8_t token_id[static LIC_TOKEN_ID_SIZE],
                  struct lic_token *ret) {
        if (!s || !token_id || !ret)
                return -EINVAL;
        return token_lookup(s, token_id, ret);
}

/* Inside a read transaction or an operation. */
static int tokens_foreach(struct lic_store *s, const struct lic_token_filter *f, lic_token_cb cb,
                          void *userdata) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        const struct lic_token_filter none = {};
        int r, n = 0;

        f = f ?: &none;
        r = tsf_sqlite_stmt(&s->sql, ST_TOKENS_FILTER, &st);
        if (r < 0)
                return r;
        r = tsf_sqlite_bind(st, "titb", f->pack_id, (int64_t)f->states, f->device_name,
                            f->hardware_id_len ? f->hardware_id : NULL, f->hardware_id_len);
        while (r >= 0 && (r = tsf_sqlite_step(st)) > 0) {
                struct lic_token t;

                row_to_token(st, &t);
                r = cb(&t, userdata);
                if (r >= 0)
                        n++;
        }
        return r < 0 ? r : n;
}

int lic_tokens_list(struct lic_store *s, const struct lic_token_filter *filter, lic_token_cb cb,
                    void *userdata) {
        bool began;
        int r;

        if (!s || !cb || !valid_filter(filter))
                return -EINVAL;
        r = tsf_sqlite_read_begin(&s->sql, &began);
        if (r < 0)
                return r;
        r = tokens_foreach(s, filter, cb, userdata);
        tsf_sqlite_read_end(&s->sql, began);
        return r;
}

static int action_from_string(const char *a) {
        for (size_t i = 0; i < _LIC_ACTION_MAX; i++)
                if (a && strcmp(a, action_names[i]) == 0)
                        return (int)i;
        return -EINVAL;
}

int lic_audit_list(struct lic_store *s, uint64_t after, unsigned limit, lic_audit_cb cb, void *userdata) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r, n = 0;
        bool began;

        if (!s || !cb || after > INT64_MAX)
                return -EINVAL;
        r = tsf_sqlite_read_begin(&s->sql, &began);
        if (r < 0)
                return r;
        r = tsf_sqlite_stmt(&s->sql, ST_AUDIT_LIST, &st);
        if (r >= 0)
                r = tsf_sqlite_bind(st, "ii", (int64_t)after, limit ? (int64_t)limit : (int64_t)-1);
        while (r >= 0 && (r = tsf_sqlite_step(st)) > 0) {
                struct lic_audit a = {};
                int action = action_from_string((const char *)sqlite3_column_text(st, 2));

                a.seq = (uint64_t)sqlite3_column_int64(st, 0);
                a.time = (usec_t)sqlite3_column_int64(st, 1);
                a.action = action < 0 ? _LIC_ACTION_MAX : (enum lic_action)action;
                a.has_token = copy_blob(st, 3, a.token_id, sizeof(a.token_id)) == LIC_TOKEN_ID_SIZE;
                a.pack_id = (const char *)sqlite3_column_text(st, 4) ?: "";
                a.device = (const char *)sqlite3_column_text(st, 5) ?: "";
                a.user = (const char *)sqlite3_column_text(st, 6) ?: "";
                a.detail = (const char *)sqlite3_column_text(st, 7) ?: "";
                r = cb(&a, userdata);
                if (r >= 0)
                        n++;
        }
        tsf_sqlite_stmt_donep(&st);
        tsf_sqlite_read_end(&s->sql, began);
        return r < 0 ? r : n;
}

int lic_store_check(struct lic_store *s, char *bad_pack, size_t size) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        bool began, bad = false;
        int r;

        if (!s)
                return -EINVAL;
        r = tsf_sqlite_read_begin(&s->sql, &began);
        if (r < 0)
                return r;
        r = tsf_sqlite_stmt(&s->sql, ST_CHECK, &st);
        while (r >= 0 && (r = tsf_sqlite_step(st)) > 0) {
                int64_t count = sqlite3_column_int64(st, 1), available = sqlite3_column_int64(st, 2),
                        issued = sqlite3_column_int64(st, 3);

                if (available < 0 || available + issued != count) {
                        log_debug("License store: pack %s has %" PRIi64 " available + %" PRIi64
                                  " issued != %" PRIi64 " installed.",
                                  (const char *)sqlite3_column_text(st, 0), available, issued, count);
                        if (!bad && bad_pack && size > 0)
                                tsf_sqlite_copy_text(st, 0, bad_pack, size);
                        bad = true;
                }
        }
        tsf_sqlite_stmt_donep(&st);
        tsf_sqlite_read_end(&s->sql, began);
        return r < 0 ? r : bad ? -EUCLEAN : 0;
}

/* ---- reports ------------------------------------------------------------- */

enum { PACK_COLS = 9, TOKEN_COLS = 13 };
/* The widest cell: a device name with every byte escaped as \xNN. */
#define CELL_MAX (4 * LIC_DEVICE_NAME_MAX + 1)

static const char *const pack_headers[PACK_COLS] = {
        "pack_id", "product_version", "installed", "count",     "available",
        "issued",  "revoked",         "expired",   "revocable",
};
static const char *const pack_titles[PACK_COLS] = {
        "PACK", "VERSION", "INSTALLED", "COUNT", "AVAILABLE", "ISSUED", "REVOKED", "EXPIRED", "REVOCABLE",
};
static const bool pack_numeric[PACK_COLS] = {false, false, false, true, true, true, true, true, true};

static const char *const token_headers[TOKEN_COLS] = {
        "token_id",  "kind",   "state",   "pack_id",    "product_version", "device_name", "hardware_id",
        "user_name", "issued", "expires", "state_time", "renewed_from",    "lent_to",
};
static const char *const token_titles[TOKEN_COLS] = {
        "TOKEN", "KIND",   "STATE",   "PACK",  "VERSION", "DEVICE",  "HARDWARE ID",
        "USER",  "ISSUED", "EXPIRES", "SINCE", "RENEWS",  "LENT TO",
};

struct cells {
        char v[TOKEN_COLS][CELL_MAX];
};

/* For tables: backslash escapes for control characters and '\'. */
static void escape_cell(const char *in, char *out, size_t size) {
        size_t o = 0;

        for (const unsigned char *p = (const unsigned char *)in; *p && o + 5 < size; p++) {
                if (*p == '\\') {
                        out[o++] = '\\';
                        out[o++] = '\\';
                } else if (*p == '\n') {
                        out[o++] = '\\';
                        out[o++] = 'n';
                } else if (*p == '\r') {
                        out[o++] = '\\';
                        out[o++] = 'r';
                } else if (*p == '\t') {
                        out[o++] = '\\';
                        out[o++] = 't';
                } else if (*p < 0x20 || *p == 0x7f)
                        o += (size_t)snprintf(out + o, size - o, "\\x%02x", *p);
                else
                        out[o++] = (char)*p;
        }
        out[o] = '\0';
}

/* Columns a cell takes: code points, not bytes. */
static size_t cell_width(const char *c) {
        size_t w = 0;

        for (const unsigned char *p = (const unsigned char *)c; *p; p++)
                if ((*p & 0xc0) != 0x80)
                        w++;
        return w;
}

static void timestamp_cell(usec_t t, char *buf, size_t size) {
        char ts[TSF_TIMESTAMP_MAX];

        snprintf(buf, size, "%s", tsf_format_timestamp(t, ts, sizeof(ts)));
}

static void pack_cells(const struct lic_pack *p, struct cells *c) {
        snprintf(c->v[0], CELL_MAX, "%s", p->id);
        snprintf(c->v[1], CELL_MAX, "%s", p->product_version);
        timestamp_cell(p->installed, c->v[2], CELL_MAX);
        snprintf(c->v[3], CELL_MAX, "%" PRIu32, p->count);
        snprintf(c->v[4], CELL_MAX, "%" PRIu32, p->available);
        snprintf(c->v[5], CELL_MAX, "%" PRIu32, p->issued);
        snprintf(c->v[6], CELL_MAX, "%" PRIu32, p->revoked);
        snprintf(c->v[7], CELL_MAX, "%" PRIu32, p->expired);
        snprintf(c->v[8], CELL_MAX, "%" PRIu32, p->revocable);
}

/* Raw values (CSV quotes them; tables escape them). */
static void token_cells(const struct lic_token *t, struct cells *c) {
        tsf_hex_encode(t->token_id, sizeof(t->token_id), c->v[0]);
        snprintf(c->v[1], CELL_MAX, "%s", lic_kind_to_string(t->kind) ?: "?");
        snprintf(c->v[2], CELL_MAX, "%s", lic_state_to_string(t->state) ?: "?");
        snprintf(c->v[3], CELL_MAX, "%s", t->pack_id);
        snprintf(c->v[4], CELL_MAX, "%s", t->product_version);
        snprintf(c->v[5], CELL_MAX, "%s", t->device_name);
        tsf_hex_encode(t->hardware_id, t->hardware_id_len, c->v[6]);
        snprintf(c->v[7], CELL_MAX, "%s", t->user_name);
        timestamp_cell(t->issued, c->v[8], CELL_MAX);
        timestamp_cell(t->expires, c->v[9], CELL_MAX);
        timestamp_cell(t->state_time, c->v[10], CELL_MAX);
        if (t->renewed)
                tsf_hex_encode(t->renewed_from, sizeof(t->renewed_from), c->v[11]);
        else
                c->v[11][0] = '\0';
        snprintf(c->v[12], CELL_MAX, "%s", t->lent_to);
}

/* RFC 4180: a field with a comma, a quote, CR or LF is quoted, and its
 * quotes doubled; records end in CRLF. */
static void csv_field(FILE *f, const char *v, bool last) {
        if (strpbrk(v, ",\"\r\n")) {
                fputc('"', f);
                for (const char *p = v; *p; p++) {
                        if (*p == '"')
                                fputc('"', f);
                        fputc(*p, f);
                }
                fputc('"', f);
        } else
                fputs(v, f);
        fputs(last ? "\r\n" : ",", f);
}

static void csv_row(FILE *f, const char *const *v, size_t n) {
        for (size_t i = 0; i < n; i++)
                csv_field(f, v[i], i + 1 == n);
}

/* Tables: measured in one pass, printed in the next. */
struct table {
        FILE *f;
        size_t n;
        const bool *numeric;
        size_t width[TOKEN_COLS];
        bool printing;
};

static void table_row(struct table *t, const char *const *v) {
        char cell[CELL_MAX];

        for (size_t i = 0; i < t->n; i++) {
                size_t w;

                escape_cell(v[i], cell, sizeof(cell));
                if (!cell[0])
                        snprintf(cell, sizeof(cell), "-");
                w = cell_width(cell);
                if (!t->printing) {
                        t->width[i] = MAX(t->width[i], w);
                        continue;
                }
                if (i > 0)
                        fputs("  ", t->f);
                if (t->numeric && t->numeric[i])
                        fprintf(t->f, "%*s%s", (int)(t->width[i] - w), "", cell);
                else if (i + 1 < t->n)
                        fprintf(t->f, "%s%*s", cell, (int)(t->width[i] - w), "");
                else
                        fputs(cell, t->f);
        }
        if (t->printing)
                fputc('\n', t->f);
}

struct report {
        struct lic_store *s;
        FILE *f;
        enum lic_format format;
        struct table table;
        json_t *array;
        uint64_t count, available, issued, revoked, expired;
        unsigned packs;
};

static const char *const *cell_ptrs(const struct cells *c, const char **p, size_t n) {
        for (size_t i = 0; i < n; i++)
                p[i] = c->v[i];
        return p;
}

static json_t *json_time(usec_t t) {
        char ts[TSF_TIMESTAMP_MAX];

        return json_string(tsf_format_timestamp(t, ts, sizeof(ts)));
}

static int json_set(json_t *o, const char *key, json_t *v) {
        return v && json_object_set_new(o, key, v) == 0 ? 0 : -ENOMEM;
}

static int report_pack(const struct lic_pack *p, void *userdata) {
        struct report *rp = userdata;
        _cleanup_(json_decrefp) json_t *o = NULL;
        struct cells c;
        const char *v[PACK_COLS];
        int r = 0;

        rp->packs++;
        rp->count += p->count;
        rp->available += p->available;
        rp->issued += p->issued;
        rp->revoked += p->revoked;
        rp->expired += p->expired;
        if (rp->format != LIC_FORMAT_JSON) {
                pack_cells(p, &c);
                if (rp->format == LIC_FORMAT_CSV)
                        csv_row(rp->f, cell_ptrs(&c, v, PACK_COLS), PACK_COLS);
                else
                        table_row(&rp->table, cell_ptrs(&c, v, PACK_COLS));
                return 0;
        }
        o = json_object();
        if (!o)
                return -ENOMEM;
        r = json_set(o, "id", json_string(p->id));
        if (r >= 0)
                r = json_set(o, "product_version", json_string(p->product_version));
        if (r >= 0)
                r = json_set(o, "installed", json_time(p->installed));
        if (r >= 0)
                r = json_set(o, "installed_usec", json_integer((json_int_t)p->installed));
        if (r >= 0)
                r = json_set(o, "count", json_integer(p->count));
        if (r >= 0)
                r = json_set(o, "available", json_integer(p->available));
        if (r >= 0)
                r = json_set(o, "issued", json_integer(p->issued));
        if (r >= 0)
                r = json_set(o, "revoked", json_integer(p->revoked));
        if (r >= 0)
                r = json_set(o, "expired", json_integer(p->expired));
        if (r >= 0)
                r = json_set(o, "revocable", json_integer(p->revocable));
        if (r >= 0 && json_array_append(rp->array, o) < 0)
                r = -ENOMEM;
        return r;
}

static json_t *json_hex(const uint8_t *b, size_t n) {
        char hex[2 * LIC_HARDWARE_ID_MAX + 1];

        tsf_hex_encode(b, n, hex);
        return json_string(hex);
}

static int report_token(const struct lic_token *t, void *userdata) {
        struct report *rp = userdata;
        _cleanup_(json_decrefp) json_t *o = NULL;
        const char *v[TOKEN_COLS];
        struct cells c;
        int r = 0;

        if (rp->format != LIC_FORMAT_JSON) {
                token_cells(t, &c);
                if (rp->format == LIC_FORMAT_CSV)
                        csv_row(rp->f, cell_ptrs(&c, v, TOKEN_COLS), TOKEN_COLS);
                else
                        table_row(&rp->table, cell_ptrs(&c, v, TOKEN_COLS));
                return 0;
        }
        o = json_object();
        if (!o)
                return -ENOMEM;
        r = json_set(o, "token_id", json_hex(t->token_id, sizeof(t->token_id)));
        if (r >= 0)
                r = json_set(o, "kind", json_string(lic_kind_to_string(t->kind) ?: "?"));
        if (r >= 0)
                r = json_set(o, "state", json_string(lic_state_to_string(t->state) ?: "?"));
        if (r >= 0)
                r = json_set(o, "pack_id", t->pack_id[0] ? json_string(t->pack_id) : json_null());
        if (r >= 0)
                r = json_set(o, "product_version", json_string(t->product_version));
        if (r >= 0)
                r = json_set(o, "device_name", json_string(t->device_name));
        if (r >= 0)
                r = json_set(o, "hardware_id", json_hex(t->hardware_id, t->hardware_id_len));
        if (r >= 0)
                r = json_set(o, "user_name", json_string(t->user_name));
        if (r >= 0)
                r = json_set(o, "issued", json_time(t->issued));
        if (r >= 0)
                r = json_set(o, "issued_usec", json_integer((json_int_t)t->issued));
        if (r >= 0)
                r = json_set(o, "expires", json_time(t->expires));
        if (r >= 0)
                r = json_set(o, "expires_usec", json_integer((json_int_t)t->expires));
        if (r >= 0)
                r = json_set(o, "state_time", json_time(t->state_time));
        if (r >= 0)
                r = json_set(o, "state_time_usec", json_integer((json_int_t)t->state_time));
        if (r >= 0)
                r = json_set(o, "renewed_from",
                             t->renewed ? json_hex(t->renewed_from, sizeof(t->renewed_from)) : json_null());
        if (r >= 0)
                r = json_set(o, "lent_to", t->lent_to[0] ? json_string(t->lent_to) : json_null());
        if (r >= 0 && json_array_append(rp->array, o) < 0)
                r = -ENOMEM;
        return r;
}

static int temporary_counts(struct lic_store *s, uint64_t *live, uint64_t *validated) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        *live = *validated = 0;
        r = tsf_sqlite_stmt(&s->sql, ST_TEMPORARY_COUNTS, &st);
        while (r >= 0 && (r = tsf_sqlite_step(st)) > 0) {
                int64_t n = sqlite3_column_int64(st, 1);

                *live += (uint64_t)n;
                if (sqlite3_column_int(st, 0) == LIC_STATE_TEMPORARY_VALIDATED)
                        *validated += (uint64_t)n;
        }
        return r;
}

static int report_packs(struct report *rp, usec_t now, json_t *root) {
        uint64_t live, validated;
        int r;

        r = temporary_counts(rp->s, &live, &validated);
        if (r < 0)
                return r;
        if (rp->format == LIC_FORMAT_JSON) {
                _cleanup_(json_decrefp) json_t *totals = json_object();

                rp->array = json_array();
                if (!totals || json_object_set_new(root, "packs", rp->array) < 0)
                        return -ENOMEM;
                r = packs_foreach(rp->s, now, report_pack, rp);
                if (r < 0)
                        return r;
                r = json_set(totals, "packs", json_integer(rp->packs));
                if (r >= 0)
                        r = json_set(totals, "count", json_integer((json_int_t)rp->count));
                if (r >= 0)
                        r = json_set(totals, "available", json_integer((json_int_t)rp->available));
                if (r >= 0)
                        r = json_set(totals, "issued", json_integer((json_int_t)rp->issued));
                if (r >= 0)
                        r = json_set(totals, "revoked", json_integer((json_int_t)rp->revoked));
                if (r >= 0)
                        r = json_set(totals, "expired", json_integer((json_int_t)rp->expired));
                if (r >= 0)
                        r = json_set(totals, "temporary", json_integer((json_int_t)live));
                if (r >= 0)
                        r = json_set(totals, "temporary_validated", json_integer((json_int_t)validated));
                if (r >= 0 && json_object_set(root, "totals", totals) < 0)
                        r = -ENOMEM;
                return r;
        }
        if (rp->format == LIC_FORMAT_CSV) {
                csv_row(rp->f, pack_headers, PACK_COLS);
                r = packs_foreach(rp->s, now, report_pack, rp);
                return r < 0 ? r : 0;
        }

        rp->table = (struct table){.f = rp->f, .n = PACK_COLS, .numeric = pack_numeric};
        for (int pass = 0; pass < 2; pass++) {
                char total[5][24];
                const char *v[PACK_COLS] = {"total", "", ""};

                rp->table.printing = pass == 1;
                rp->packs = 0;
                rp->count = rp->available = rp->issued = rp->revoked = rp->expired = 0;
                table_row(&rp->table, pack_titles);
                r = packs_foreach(rp->s, now, report_pack, rp);
                if (r < 0)
                        return r;
                snprintf(total[0], sizeof(total[0]), "%" PRIu64, rp->count);
                snprintf(total[1], sizeof(total[1]), "%" PRIu64, rp->available);
                snprintf(total[2], sizeof(total[2]), "%" PRIu64, rp->issued);
                snprintf(total[3], sizeof(total[3]), "%" PRIu64, rp->revoked);
                snprintf(total[4], sizeof(total[4]), "%" PRIu64, rp->expired);
                for (size_t i = 0; i < 5; i++)
                        v[3 + i] = total[i];
                v[8] = "";
                table_row(&rp->table, v);
        }
        fprintf(rp->f, "\npacks: %u; temporary tokens: %" PRIu64 " live, %" PRIu64 " of them validated\n",
                rp->packs, live, validated);
        return 0;
}

static int report_tokens(struct report *rp, const struct lic_token_filter *filter, json_t *root) {
        int r;

        if (rp->format == LIC_FORMAT_JSON) {
                rp->array = json_array();
                if (json_object_set_new(root, "tokens", rp->array) < 0)
                        return -ENOMEM;
                r = tokens_foreach(rp->s, filter, report_token, rp);
                return r < 0 ? r : 0;
        }
        if (rp->format == LIC_FORMAT_CSV) {
                csv_row(rp->f, token_headers, TOKEN_COLS);
                r = tokens_foreach(rp->s, filter, report_token, rp);
                return r < 0 ? r : 0;
        }
        rp->table = (struct table){.f = rp->f, .n = TOKEN_COLS};
        for (int pass = 0; pass < 2; pass++) {
                rp->table.printing = pass == 1;
                table_row(&rp->table, token_titles);
                r = tokens_foreach(rp->s, filter, report_token, rp);
                if (r < 0)
                        return r;
        }
        return 0;
}

int lic_report_write(struct lic_store *s, FILE *f, enum lic_format format, unsigned what,
                     const struct lic_token_filter *filter) {
        _cleanup_(json_decrefp) json_t *root = NULL;
        struct report rp = {.s = s, .f = f, .format = format};
        usec_t now = now_checked();
        bool began;
        int r;

        if (!s || !f || (unsigned)format >= _LIC_FORMAT_MAX || what == 0 ||
            (what & ~(LIC_REPORT_PACKS | LIC_REPORT_TOKENS)) || !valid_filter(filter))
                return -EINVAL;
        if (now == 0)
                return -ERANGE;
        if (format == LIC_FORMAT_JSON) {
                root = json_object();
                if (!root)
                        return -ENOMEM;
        }

        r = tsf_sqlite_read_begin(&s->sql, &began);
        if (r < 0)
                return r;
        if (what & LIC_REPORT_PACKS)
                r = report_packs(&rp, now, root);
        if (r >= 0 && (what & LIC_REPORT_TOKENS)) {
                if ((what & LIC_REPORT_PACKS) && format != LIC_FORMAT_JSON)
                        fputs(format == LIC_FORMAT_CSV ? "\r\n" : "\n", f);
                r = report_tokens(&rp, filter, root);
        }
        tsf_sqlite_read_end(&s->sql, began);
        if (r < 0)
                return r;

        if (root) {
                if (json_dumpf(root, f, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0)
                        return -EIO;
                fputc('\n', f);
        }
        if (fflush(f) != 0 || ferror(f))
                return -EIO;
        return 0;
}

/* ---- names --------------------------------------------------------------- */

static const char *const state_names[_LIC_STATE_MAX] = {
        "temporary", "temporary-validated", "active", "revoked", "expired",
};

const char *lic_state_to_string(enum lic_state st) {
        return (unsigned)st < _LIC_STATE_MAX ? state_names[st] : NULL;
}

int lic_state_from_string(const char *s) {
        for (size_t i = 0; s && i < _LIC_STATE_MAX; i++)
                if (strcmp(s, state_names[i]) == 0)
                        return (int)i;
        return -EINVAL;
}

const char *lic_kind_to_string(enum lic_kind k) {
        return k == LIC_KIND_TEMPORARY ? "temporary" : k == LIC_KIND_CAL ? "device-cal" : NULL;
}

const char *lic_action_to_string(enum lic_action a) {
        return (unsigned)a < _LIC_ACTION_MAX ? action_names[a] : NULL;
}
