/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * SQLite plumbing shared by the stores; tsfarm/sqlite.h says what it does.
 * docs/directory.md ("Files and durability", "Schema and migrations") is
 * the contract for the settings and the migration rules.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tsfarm/log.h"
#include "tsfarm/macro.h"
#include "tsfarm/sqlite.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(sqlite3 *, sqlite3_close);
DEFINE_TRIVIAL_CLEANUP_FUNC(sqlite3_stmt *, sqlite3_finalize);

/* A second process (tsctl, a backup) makes writers wait, not fail. */
#define BUSY_TIMEOUT_MS 5000

/* The transaction statements, cached after the store's own. */
enum {
        TX_BEGIN,
        TX_BEGIN_READ,
        TX_COMMIT,
        TX_ROLLBACK,
        TX_SAVEPOINT,
        TX_RELEASE,
        TX_ROLLBACK_TO,
        _TX_MAX,
};

static const char *const tx_sql[_TX_MAX] = {
        /* IMMEDIATE: take the write lock first, so two writers queue on the
         * busy timeout instead of one failing at its first write. */
        [TX_BEGIN] = "BEGIN IMMEDIATE",      [TX_BEGIN_READ] = "BEGIN",       [TX_COMMIT] = "COMMIT",
        [TX_ROLLBACK] = "ROLLBACK",          [TX_SAVEPOINT] = "SAVEPOINT op", [TX_RELEASE] = "RELEASE op",
        [TX_ROLLBACK_TO] = "ROLLBACK TO op",
};

int tsf_sqlite_errno(sqlite3 *db, int rc) {
        int e;

        switch (rc & 0xff) {
        case SQLITE_OK:
        case SQLITE_ROW:
        case SQLITE_DONE:
                return 0;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_READONLY:
                return -EROFS;
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_CONSTRAINT:
                return (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) ? -EEXIST
                                                                                              : -EINVAL;
        case SQLITE_NOTADB:
                return -EMEDIUMTYPE;
        case SQLITE_CORRUPT:
                return -EBADMSG;
        case SQLITE_TOOBIG:
                return -E2BIG;
        case SQLITE_PERM:
        case SQLITE_AUTH:
                return -EPERM;
        case SQLITE_INTERRUPT:
                return -EINTR;
        case SQLITE_IOERR:
        case SQLITE_CANTOPEN:
                /* The system call's own errno says more (ENOENT, EACCES). */
                e = db ? sqlite3_system_errno(db) : 0;
                return e > 0 ? -e : ((rc & 0xff) == SQLITE_CANTOPEN ? -EACCES : -EIO);
        default:
                return -EIO;
        }
}

/* ---- statements ---------------------------------------------------------- */

/* id counts the store's statements, then tx_sql's. */
static int stmt_get(struct tsf_sqlite *q, size_t id, sqlite3_stmt **ret) {
        size_t n = q->spec->n_stmts;

        if (!q->stmts[id]) {
                const char *sql = id < n ? q->spec->stmt_sql[id] : tx_sql[id - n];
                int rc = sqlite3_prepare_v3(q->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &q->stmts[id], NULL);

                if (rc != SQLITE_OK)
                        return log_debug_errno(tsf_sqlite_errno(q->db, rc), "Failed to prepare %s: %s", sql,
                                               sqlite3_errmsg(q->db));
        }
        *ret = q->stmts[id];
        return 0;
}

int tsf_sqlite_stmt(struct tsf_sqlite *q, unsigned id, sqlite3_stmt **ret) {
        if (id >= q->spec->n_stmts)
                return -EINVAL;
        return stmt_get(q, id, ret);
}

void tsf_sqlite_stmt_donep(sqlite3_stmt **st) {
        if (*st) {
                sqlite3_reset(*st);
                sqlite3_clear_bindings(*st);
        }
}

int tsf_sqlite_bind_va(sqlite3_stmt *st, const char *fmt, va_list ap) {
        int rc = SQLITE_OK, i = 0;

        for (const char *f = fmt; *f && rc == SQLITE_OK; f++) {
                i++;
                if (*f == 't') {
                        const char *v = va_arg(ap, const char *);
                        rc = v ? sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC) : sqlite3_bind_null(st, i);
                } else if (*f == 'b') {
                        const uint8_t *v = va_arg(ap, const uint8_t *);
                        size_t n = va_arg(ap, size_t);
                        rc = v ? sqlite3_bind_blob(st, i, v, (int)n, SQLITE_STATIC)
                               : sqlite3_bind_null(st, i);
                } else {
                        rc = sqlite3_bind_int64(st, i, va_arg(ap, int64_t));
                }
        }
        return rc == SQLITE_OK ? 0 : tsf_sqlite_errno(sqlite3_db_handle(st), rc);
}

int tsf_sqlite_bind(sqlite3_stmt *st, const char *fmt, ...) {
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = tsf_sqlite_bind_va(st, fmt, ap);
        va_end(ap);
        return r;
}

int tsf_sqlite_step(sqlite3_stmt *st) {
        int rc = sqlite3_step(st);

        if (rc == SQLITE_ROW)
                return 1;
        if (rc == SQLITE_DONE)
                return 0;
        return log_debug_errno(tsf_sqlite_errno(sqlite3_db_handle(st), rc), "SQLite: %s (%s)",
                               sqlite3_errmsg(sqlite3_db_handle(st)), sqlite3_sql(st));
}

static int exec_stmt(struct tsf_sqlite *q, size_t id) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = stmt_get(q, id, &st);
        if (r < 0)
                return r;
        r = tsf_sqlite_step(st);
        return r < 0 ? r : 0;
}

/* The transaction statement k. */
static int exec_tx(struct tsf_sqlite *q, size_t k) {
        return exec_stmt(q, q->spec->n_stmts + k);
}

int tsf_sqlite_query_va(struct tsf_sqlite *q, unsigned id, sqlite3_stmt **ret, const char *fmt, va_list ap) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = tsf_sqlite_stmt(q, id, &st);
        if (r < 0)
                return r;
        r = tsf_sqlite_bind_va(st, fmt, ap);
        if (r < 0)
                return r;
        r = tsf_sqlite_step(st);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(st);
        return r;
}

int tsf_sqlite_query(struct tsf_sqlite *q, unsigned id, sqlite3_stmt **ret, const char *fmt, ...) {
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = tsf_sqlite_query_va(q, id, ret, fmt, ap);
        va_end(ap);
        return r;
}

int tsf_sqlite_run(struct tsf_sqlite *q, unsigned id, const char *fmt, ...) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = tsf_sqlite_query_va(q, id, &st, fmt, ap);
        va_end(ap);
        return r < 0 ? r : sqlite3_changes(q->db);
}

void tsf_sqlite_copy_text(sqlite3_stmt *st, int col, char *buf, size_t size) {
        const unsigned char *t = sqlite3_column_text(st, col);
        size_t n = t ? (size_t)sqlite3_column_bytes(st, col) : 0;

        n = MIN(n, size - 1);
        if (n > 0)
                memcpy(buf, t, n);
        buf[n] = '\0';
}

/* ---- transactions -------------------------------------------------------- */

int tsf_sqlite_tx_begin(struct tsf_sqlite *q) {
        int r;

        if (q->in_tx)
                return -EBUSY;
        r = exec_tx(q, q->batch ? TX_SAVEPOINT : TX_BEGIN);
        if (r < 0)
                return r;
        q->in_tx = true;
        return 0;
}

void tsf_sqlite_tx_abort(struct tsf_sqlite *q) {
        if (!q->in_tx)
                return;
        if (q->batch) {
                (void)exec_tx(q, TX_ROLLBACK_TO);
                (void)exec_tx(q, TX_RELEASE);
        } else
                (void)exec_tx(q, TX_ROLLBACK);
        q->in_tx = false;
}

int tsf_sqlite_tx_commit(struct tsf_sqlite *q) {
        int r;

        r = exec_tx(q, q->batch ? TX_RELEASE : TX_COMMIT);
        if (r < 0) {
                tsf_sqlite_tx_abort(q);
                return r;
        }
        q->in_tx = false;
        return 0;
}

int tsf_sqlite_read_begin(struct tsf_sqlite *q, bool *began) {
        int r;

        *began = false;
        if (q->batch || q->in_tx)
                return 0;
        r = exec_tx(q, TX_BEGIN_READ);
        if (r < 0)
                return r;
        *began = true;
        return 0;
}

/* A read transaction ends cleanly only without statements still stepping:
 * hence the callers reset theirs first. */
void tsf_sqlite_read_end(struct tsf_sqlite *q, bool began) {
        if (began && exec_tx(q, TX_COMMIT) < 0)
                (void)exec_tx(q, TX_ROLLBACK);
}

int tsf_sqlite_batch_begin(struct tsf_sqlite *q) {
        int r;

        if (q->batch || q->in_tx)
                return -EINVAL;
        r = exec_tx(q, TX_BEGIN);
        if (r < 0)
                return r;
        q->batch = true;
        return 0;
}

int tsf_sqlite_batch_commit(struct tsf_sqlite *q) {
        int r;

        if (!q->batch)
                return -EINVAL;
        r = exec_tx(q, TX_COMMIT);
        if (r < 0) {
                (void)tsf_sqlite_batch_abort(q);
                return r;
        }
        q->batch = false;
        return 0;
}

int tsf_sqlite_batch_abort(struct tsf_sqlite *q) {
        if (!q->batch)
                return -EINVAL;
        (void)exec_tx(q, TX_ROLLBACK);
        q->batch = false;
        return 0;
}

/* ---- open, migrate, close ------------------------------------------------ */

static int pragma_get(sqlite3 *db, const char *sql, int64_t *ret) {
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        int rc;

        rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
        if (rc != SQLITE_OK)
                return log_debug_errno(tsf_sqlite_errno(db, rc), "%s: %s", sql, sqlite3_errmsg(db));
        rc = sqlite3_step(st);
        if (rc != SQLITE_ROW)
                return log_debug_errno(rc == SQLITE_DONE ? -EIO : tsf_sqlite_errno(db, rc), "%s: %s", sql,
                                       sqlite3_errmsg(db));
        *ret = sqlite3_column_int64(st, 0);
        return 0;
}

static int exec_sql(sqlite3 *db, const char *sql) {
        int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);

        if (rc != SQLITE_OK)
                return log_debug_errno(tsf_sqlite_errno(db, rc), "SQLite: %s (%.60s...)", sqlite3_errmsg(db),
                                       sql);
        return 0;
}

/* Refuses databases that are not ours or are newer than this code. */
static int check_version(sqlite3 *db, const struct tsf_sqlite_spec *spec, int64_t *ret_version) {
        int64_t version, app_id, objects;
        int r;

        r = pragma_get(db, "PRAGMA user_version", &version);
        if (r < 0)
                return r;
        r = pragma_get(db, "PRAGMA application_id", &app_id);
        if (r < 0)
                return r;
        if (version > (int64_t)spec->n_migrations)
                /* A downgraded agent must not write into a schema it does
                 * not know. */
                return log_debug_errno(-EPROTONOSUPPORT,
                                       "The %s database has schema version %" PRIi64
                                       ", this code knows up to %zu; refusing to open it.",
                                       spec->what, version, spec->n_migrations);
        if (version > 0 && app_id != spec->application_id)
                return log_debug_errno(-EMEDIUMTYPE, "Database is not a tsfarm %s store.", spec->what);
        if (version == 0) {
                r = pragma_get(db, "SELECT count(*) FROM sqlite_schema", &objects);
                if (r < 0)
                        return r;
                if (objects > 0)
                        return log_debug_errno(-EMEDIUMTYPE, "Database has tables but no schema version.");
        }
        *ret_version = version;
        return 0;
}

/* All due steps in one IMMEDIATE transaction that sets user_version last:
 * the whole migration lands or none of it, and two processes opening the
 * file at once do not both migrate it. */
static int migrate(sqlite3 *db, const struct tsf_sqlite_spec *spec) {
        int64_t version;
        int r;

        r = exec_sql(db, "BEGIN IMMEDIATE");
        if (r < 0)
                return r;
        /* Again under the write lock: another process may have migrated. */
        r = check_version(db, spec, &version);
        for (int64_t v = version; r >= 0 && v < (int64_t)spec->n_migrations; v++) {
                log_debug("Migrating %s schema from version %" PRIi64 " to %" PRIi64 ".", spec->what, v,
                          v + 1);
                r = exec_sql(db, spec->migrations[v]);
        }
        if (r >= 0 && version < (int64_t)spec->n_migrations) {
                char sql[96];

                snprintf(sql, sizeof(sql), "PRAGMA user_version = %zu; PRAGMA application_id = %" PRIi32,
                         spec->n_migrations, spec->application_id);
                r = exec_sql(db, sql);
        }
        if (r >= 0)
                r = exec_sql(db, "COMMIT");
        if (r < 0)
                (void)sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return r;
}

static int open_db(const char *path, const struct tsf_sqlite_spec *spec, sqlite3 **ret) {
        _cleanup_(sqlite3_closep) sqlite3 *db = NULL;
        const char *mode = NULL;
        char pragmas[160];
        int64_t version, fk;
        int rc, r;

        rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
        if (rc != SQLITE_OK)
                return log_debug_errno(tsf_sqlite_errno(db, rc), "Failed to open %s: %s", path,
                                       db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_extended_result_codes(db, 1);
        sqlite3_busy_timeout(db, BUSY_TIMEOUT_MS);

        /* Before anything writes to the file (WAL mode is persistent). */
        r = check_version(db, spec, &version);
        if (r < 0)
                return r;

        /* WAL: readers never wait for the writer. FULL (below): a commit
         * returns only once the WAL is on disk, so what a store acknowledged
         * survives a power cut, not just a crash. The stores say what that
         * is worth to them. */
        rc = sqlite3_exec(db, "PRAGMA journal_mode = WAL", NULL, NULL, NULL);
        if (rc != SQLITE_OK)
                return log_debug_errno(tsf_sqlite_errno(db, rc), "Failed to enable WAL: %s",
                                       sqlite3_errmsg(db));
        {
                _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;

                rc = sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL);
                if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
                        mode = (const char *)sqlite3_column_text(st, 0);
                if (!mode || strcmp(mode, "wal") != 0)
                        return log_debug_errno(-EOPNOTSUPP, "%s: WAL mode not available.", path);
        }
        /* temp_store: the savepoint journals of batched operations stay in
         * memory instead of costing a write per changed page. A negative
         * cache_size is in KiB. */
        if (spec->cache_size_kib > 0)
                snprintf(pragmas, sizeof(pragmas),
                         "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY; "
                         "PRAGMA cache_size = -%u",
                         spec->cache_size_kib);
        else
                snprintf(pragmas, sizeof(pragmas),
                         "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY");
        r = exec_sql(db, pragmas);
        if (r < 0)
                return r;
        r = pragma_get(db, "PRAGMA foreign_keys", &fk);
        if (r < 0)
                return r;
        if (fk != 1)
                return log_debug_errno(-EOPNOTSUPP, "SQLite built without foreign keys.");

        r = migrate(db, spec);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(db);
        return 0;
}

int tsf_sqlite_open(struct tsf_sqlite *q, const char *path, const struct tsf_sqlite_spec *spec) {
        if (!q || !path || !spec)
                return -EINVAL;
        *q = (struct tsf_sqlite){.spec = spec};
        q->stmts = calloc(spec->n_stmts + _TX_MAX, sizeof(*q->stmts));
        if (!q->stmts)
                return -ENOMEM;
        return open_db(path, spec, &q->db);
}

void tsf_sqlite_close(struct tsf_sqlite *q) {
        if (!q)
                return;
        if (q->batch)
                (void)tsf_sqlite_batch_abort(q);
        for (size_t i = 0; q->stmts && i < q->spec->n_stmts + _TX_MAX; i++)
                sqlite3_finalize(q->stmts[i]);
        free(q->stmts);
        /* Closing the last connection checkpoints the WAL into the
         * database and removes it; nothing is lost if it cannot. */
        sqlite3_close(q->db);
        *q = (struct tsf_sqlite){};
}
