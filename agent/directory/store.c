/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The directory store: SQLite in WAL mode. docs/directory.md has the schema,
 * the change feed and the placement rules; keep the two in step.
 *
 * Revisions: every row a write touches gets a fresh revision from one
 * counter (the SQL function next_revision(), which counts in memory; the
 * newest value is written to `meta` in the same transaction and restored on
 * rollback). So the change feed is "rows WHERE revision > R, in order",
 * plus tombstones for deleted sessions.
 *
 * Pending logons (placement reservations) live in memory only: they last
 * seconds, and losing them in a restart costs a little balance, never a
 * session. Keeping them out of the database keeps logon queries read-only,
 * so they never wait for an fsync.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "store.h"
#include "tsfarm/cleanup.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"
#include "tsfarm/sqlite.h"

/* 'tsfd': marks the file as a directory store, so we refuse to migrate
 * some other program's SQLite database into ours. */
#define DIR_APPLICATION_ID 0x74736664
/* 64 MiB page cache: the user-key index of a million sessions stays hot. */
#define CACHE_SIZE_KIB 65536
/* Candidates one lookup considers; more means ambiguous anyway. */
#define LOOKUP_LIMIT 64
#define IDENTITIES_MAX 8

/*
 * Migrations, in order: migrations[i] takes the schema from version i to
 * i + 1. Never edit a released step; append a new one.
 */
static const char *const migrations[] = {
        /* 0 -> 1: the initial schema. */
        "CREATE TABLE meta (\n"
        "        id INTEGER PRIMARY KEY CHECK (id = 1),\n"
        "        revision INTEGER NOT NULL, -- the newest revision handed out\n"
        "        horizon INTEGER NOT NULL   -- tombstones up to here are compacted\n"
        ");\n"
        "INSERT INTO meta (id, revision, horizon) VALUES (1, 0, 0);\n"
        "CREATE TABLE nodes (\n"
        "        id INTEGER PRIMARY KEY,\n"
        "        name TEXT NOT NULL UNIQUE,\n"
        "        addresses TEXT NOT NULL,\n"
        "        rdp_port INTEGER NOT NULL CHECK (rdp_port BETWEEN 1 AND 65535),\n"
        "        weight INTEGER NOT NULL CHECK (weight BETWEEN 1 AND 10000),\n"
        "        session_limit INTEGER NOT NULL CHECK (session_limit >= 0),\n"
        "        drain INTEGER NOT NULL CHECK (drain IN (0, 1, 2)),\n"
        "        boot_id TEXT NOT NULL,\n"
        "        up INTEGER NOT NULL CHECK (up IN (0, 1)),\n"
        "        last_heartbeat INTEGER NOT NULL,\n"
        "        sessions INTEGER NOT NULL DEFAULT 0, -- active + disconnected, kept by triggers\n"
        "        revision INTEGER NOT NULL UNIQUE\n"
        ");\n"
        "CREATE TABLE sessions (\n"
        "        id INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: tombstones name it\n"
        "        node_id INTEGER NOT NULL REFERENCES nodes (id),\n"
        "        node_session INTEGER NOT NULL,\n"
        "        user TEXT NOT NULL,\n"
        "        user_key TEXT NOT NULL,\n"
        "        domain TEXT NOT NULL,\n"
        "        state INTEGER NOT NULL CHECK (state IN (0, 1, 2)),\n"
        "        device TEXT NOT NULL,\n"
        "        client_addr TEXT NOT NULL,\n"
        "        logon_time INTEGER NOT NULL,\n"
        "        state_time INTEGER NOT NULL,\n"
        "        revision INTEGER NOT NULL UNIQUE,\n"
        "        UNIQUE (node_id, node_session)\n"
        ");\n"
        "CREATE INDEX sessions_user_key ON sessions (user_key);\n"
        /* The first 9 bytes of every folded form of the user that is at
         * least 9 long: what a cookie cut by a Windows client can be. */
        "CREATE TABLE session_prefixes (\n"
        "        prefix TEXT NOT NULL,\n"
        "        session_id INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,\n"
        "        PRIMARY KEY (prefix, session_id)\n"
        ") WITHOUT ROWID;\n"
        "CREATE INDEX session_prefixes_session ON session_prefixes (session_id);\n"
        "CREATE TABLE tombstones (\n"
        "        revision INTEGER PRIMARY KEY,\n"
        "        session_id INTEGER NOT NULL,\n"
        "        node TEXT NOT NULL,\n"
        "        node_session INTEGER NOT NULL,\n"
        "        user TEXT NOT NULL,\n"
        "        user_key TEXT NOT NULL\n"
        ");\n"
        /* Placement reads nodes.sessions instead of counting a million rows;
         * triggers keep it right whatever statement changes a session. */
        "CREATE TRIGGER sessions_count_insert AFTER INSERT ON sessions WHEN NEW.state < 2 BEGIN\n"
        "        UPDATE nodes SET sessions = sessions + 1 WHERE id = NEW.node_id;\n"
        "END;\n"
        "CREATE TRIGGER sessions_count_delete AFTER DELETE ON sessions WHEN OLD.state < 2 BEGIN\n"
        "        UPDATE nodes SET sessions = sessions - 1 WHERE id = OLD.node_id;\n"
        "END;\n"
        "CREATE TRIGGER sessions_count_update AFTER UPDATE OF state ON sessions\n"
        "        WHEN (OLD.state < 2) != (NEW.state < 2) BEGIN\n"
        "        UPDATE nodes SET sessions = sessions + (CASE WHEN NEW.state < 2 THEN 1 ELSE -1 END)\n"
        "                WHERE id = NEW.node_id;\n"
        "END;\n",
        /* 1 -> 2: sessions per state, kept by triggers, so that /metrics
         * reads three rows instead of scanning a million (432 ms with 1M
         * sessions, on the loop that answers logon queries). */
        "CREATE TABLE session_counts (\n"
        "        state INTEGER PRIMARY KEY,\n"
        "        n INTEGER NOT NULL\n"
        ");\n"
        "INSERT INTO session_counts (state, n) VALUES (0, 0), (1, 0), (2, 0);\n"
        "UPDATE session_counts SET n = (SELECT count(*) FROM sessions s WHERE s.state = "
        "session_counts.state);\n"
        "CREATE TRIGGER session_counts_insert AFTER INSERT ON sessions BEGIN\n"
        "        UPDATE session_counts SET n = n + 1 WHERE state = NEW.state;\n"
        "END;\n"
        "CREATE TRIGGER session_counts_delete AFTER DELETE ON sessions BEGIN\n"
        "        UPDATE session_counts SET n = n - 1 WHERE state = OLD.state;\n"
        "END;\n"
        "CREATE TRIGGER session_counts_update AFTER UPDATE OF state ON sessions\n"
        "        WHEN OLD.state != NEW.state BEGIN\n"
        "        UPDATE session_counts SET n = n - 1 WHERE state = OLD.state;\n"
        "        UPDATE session_counts SET n = n + 1 WHERE state = NEW.state;\n"
        "END;\n",
};

#define NODE_COLUMNS                                                                                 \
        "id, name, addresses, rdp_port, weight, session_limit, drain, boot_id, up, last_heartbeat, " \
        "sessions, revision"
#define SESSION_COLUMNS                                                                                  \
        "s.id, n.name, s.node_session, s.user, s.user_key, s.domain, s.state, s.device, s.client_addr, " \
        "s.logon_time, s.state_time, s.revision"
#define SESSION_FROM " FROM sessions s JOIN nodes n ON n.id = s.node_id "
/* What a logon query needs of a candidate session and its node. */
#define CANDIDATE_COLUMNS                                                                  \
        "s.id, s.user, s.state, s.state_time, s.node_session, n.id, n.name, n.addresses, " \
        "n.rdp_port " SESSION_FROM
#define TOMBSTONE_SELECT                                                                     \
        "INSERT INTO tombstones (revision, session_id, node, node_session, user, user_key) " \
        "SELECT next_revision(), s.id, n.name, s.node_session, s.user, s.user_key" SESSION_FROM

/* The statements lib/sqlite.c caches for us; it has the transactions'. */
enum stmt {
        ST_META_GET,
        ST_META_SET_REVISION,
        ST_META_SET_HORIZON,
        ST_NODE_BY_NAME,
        ST_NODE_INSERT,
        ST_NODE_REREGISTER,
        ST_NODE_HEARTBEAT,
        ST_NODE_SET_DRAIN,
        ST_NODES_EXPIRE_SESSIONS,
        ST_NODES_EXPIRE,
        ST_NODE_TOMBSTONE_SESSIONS,
        ST_NODE_DELETE_SESSIONS,
        ST_NODES_ALL,
        ST_NODES_SINCE,
        ST_SESSION_BY_NODE,
        ST_SESSION_INSERT,
        ST_PREFIX_INSERT,
        ST_SESSION_SET_STATE,
        ST_SESSION_TOMBSTONE,
        ST_SESSION_DELETE,
        ST_SESSIONS_ALL,
        ST_SESSIONS_SINCE,
        ST_SESSIONS_PAGE,
        ST_SESSION_COUNTS,
        ST_LOOKUP_KEY,
        ST_LOOKUP_PREFIX,
        ST_TOMBSTONES_SINCE,
        ST_TOMBSTONES_COMPACT,
        _ST_MAX,
};

static const char *const stmt_sql[_ST_MAX] = {
        [ST_META_GET] = "SELECT revision, horizon FROM meta WHERE id = 1",
        [ST_META_SET_REVISION] = "UPDATE meta SET revision = ?1 WHERE id = 1",
        [ST_META_SET_HORIZON] = "UPDATE meta SET horizon = ?1 WHERE id = 1",
        [ST_NODE_BY_NAME] = "SELECT " NODE_COLUMNS " FROM nodes WHERE name = ?1",
        [ST_NODE_INSERT] = "INSERT INTO nodes (name, addresses, rdp_port, weight, session_limit, drain, "
                           "boot_id, up, last_heartbeat, revision) "
                           "VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, 1, ?7, next_revision())",
        [ST_NODE_REREGISTER] =
                "UPDATE nodes SET addresses = ?2, rdp_port = ?3, weight = ?4, session_limit = ?5, "
                "drain = ?6, boot_id = ?7, up = 1, last_heartbeat = ?8, "
                "revision = next_revision() WHERE id = ?1",
        [ST_NODE_HEARTBEAT] = "UPDATE nodes SET last_heartbeat = ?2 WHERE id = ?1",
        [ST_NODE_SET_DRAIN] = "UPDATE nodes SET drain = ?2, revision = next_revision() WHERE id = ?1",
        [ST_NODES_EXPIRE_SESSIONS] =
                "UPDATE sessions SET state = 2, state_time = ?1, revision = next_revision() "
                "WHERE state < 2 AND node_id IN "
                "(SELECT id FROM nodes WHERE up = 1 AND last_heartbeat < ?2)",
        [ST_NODES_EXPIRE] = "UPDATE nodes SET up = 0, revision = next_revision() "
                            "WHERE up = 1 AND last_heartbeat < ?1",
        [ST_NODE_TOMBSTONE_SESSIONS] = TOMBSTONE_SELECT "WHERE s.node_id = ?1",
        [ST_NODE_DELETE_SESSIONS] = "DELETE FROM sessions WHERE node_id = ?1",
        [ST_NODES_ALL] = "SELECT " NODE_COLUMNS " FROM nodes ORDER BY name",
        [ST_NODES_SINCE] =
                "SELECT " NODE_COLUMNS " FROM nodes WHERE revision > ?1 ORDER BY revision LIMIT ?2",
        [ST_SESSION_BY_NODE] =
                "SELECT " SESSION_COLUMNS SESSION_FROM "WHERE s.node_id = ?1 AND s.node_session = ?2",
        [ST_SESSION_INSERT] =
                "INSERT INTO sessions (node_id, node_session, user, user_key, domain, state, device, "
                "client_addr, logon_time, state_time, revision) "
                "VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?8, ?8, next_revision())",
        [ST_PREFIX_INSERT] = "INSERT OR IGNORE INTO session_prefixes (prefix, session_id) VALUES (?1, ?2)",
        [ST_SESSION_SET_STATE] =
                "UPDATE sessions SET state = ?2, state_time = ?3, device = coalesce(?4, device), "
                "client_addr = coalesce(?5, client_addr), revision = next_revision() "
                "WHERE id = ?1",
        [ST_SESSION_TOMBSTONE] = TOMBSTONE_SELECT "WHERE s.id = ?1",
        [ST_SESSION_DELETE] = "DELETE FROM sessions WHERE id = ?1",
        [ST_SESSIONS_ALL] = "SELECT " SESSION_COLUMNS SESSION_FROM "ORDER BY s.id",
        [ST_SESSIONS_PAGE] = "SELECT " SESSION_COLUMNS SESSION_FROM "WHERE s.id > ?1 ORDER BY s.id LIMIT ?2",
        [ST_SESSION_COUNTS] = "SELECT state, n FROM session_counts",
        [ST_SESSIONS_SINCE] =
                "SELECT " SESSION_COLUMNS SESSION_FROM "WHERE s.revision > ?1 ORDER BY s.revision LIMIT ?2",
        [ST_LOOKUP_KEY] = "SELECT " CANDIDATE_COLUMNS "WHERE s.user_key = ?1 AND s.state < 2 LIMIT ?2",
        [ST_LOOKUP_PREFIX] = "SELECT " CANDIDATE_COLUMNS "JOIN session_prefixes p ON p.session_id = s.id "
                             "WHERE p.prefix = ?1 AND s.state < 2 LIMIT ?2",
        [ST_TOMBSTONES_SINCE] =
                "SELECT revision, session_id, node, node_session, user, user_key FROM tombstones "
                "WHERE revision > ?1 ORDER BY revision LIMIT ?2",
        [ST_TOMBSTONES_COMPACT] = "DELETE FROM tombstones WHERE revision <= ?1",
};

/* A placement answer's hold on a slot. folded is NULL for a placement that
 * named nobody (no or unparsable cookie). Reservations are kept oldest
 * first (a constant TTL makes that expiry order), named ones also in a
 * hash by user part, anonymous ones in their own list, and counted per
 * node: a placement costs O(nodes), not O(reservations), with tens of
 * thousands of them during a logon storm. */
#define PENDING_BUCKETS 4096

struct pending {
        struct pending *prev, *next;           /* every reservation, oldest first */
        struct pending *hnext;                 /* the bucket's chain (named ones) */
        struct pending *anon_prev, *anon_next; /* anonymous ones, oldest first */
        int64_t node_id;
        usec_t expires;
        char *folded; /* the cookie as the client sent it, folded */
        char *user;   /* its index key */
};

struct pending_node {
        int64_t node_id;
        uint64_t n;
};

struct dir_store {
        struct tsf_sqlite sql;

        uint64_t revision;       /* the newest handed out, in this transaction too */
        uint64_t tx_revision;    /* at the start of the current operation */
        uint64_t batch_revision; /* at the start of the batch */

        usec_t pending_ttl;
        struct pending *pending_first, *pending_last;
        struct pending *anon_first, *anon_last;
        struct pending *buckets[PENDING_BUCKETS];
        size_t n_pending;
        struct pending_node *pending_nodes;
        size_t n_pending_nodes;
};

/* ---- SQLite plumbing ----------------------------------------------------- */

/* The SQL function next_revision(): one fresh revision per call. */
static void sql_next_revision(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
        struct dir_store *s = sqlite3_user_data(ctx);

        sqlite3_result_int64(ctx, (sqlite3_int64)++s->revision);
}

/* ---- transactions -------------------------------------------------------- */

/* lib/sqlite.c's operations and batches, with the revision counter kept in
 * step: what a rollback undoes hands its revisions out again. */
static int tx_begin(struct dir_store *s) {
        int r;

        r = tsf_sqlite_tx_begin(&s->sql);
        if (r < 0)
                return r;
        s->tx_revision = s->revision;
        return 0;
}

static void tx_abort(struct dir_store *s) {
        if (!s->sql.in_tx)
                return;
        tsf_sqlite_tx_abort(&s->sql);
        s->revision = s->tx_revision;
}

static void tx_abortp(struct dir_store **s) {
        if (*s)
                tx_abort(*s);
}

static int meta_write_revision(struct dir_store *s) {
        int r = tsf_sqlite_run(&s->sql, ST_META_SET_REVISION, "i", (int64_t)s->revision);

        return r < 0 ? r : 0;
}

static int tx_commit(struct dir_store *s) {
        int r = 0;

        /* A batch writes the counter once, when it commits. */
        if (!s->sql.batch && s->revision != s->tx_revision)
                r = meta_write_revision(s);
        if (r < 0) {
                tx_abort(s);
                return r;
        }
        r = tsf_sqlite_tx_commit(&s->sql);
        if (r < 0)
                /* Rolled back by lib/sqlite.c: so are the revisions. */
                s->revision = s->tx_revision;
        return r;
}

int dir_store_batch_begin(struct dir_store *s) {
        int r;

        if (!s)
                return -EINVAL;
        r = tsf_sqlite_batch_begin(&s->sql);
        if (r < 0)
                return r;
        s->batch_revision = s->revision;
        return 0;
}

int dir_store_batch_commit(struct dir_store *s) {
        int r;

        if (!s || !s->sql.batch)
                return -EINVAL;
        r = s->revision != s->batch_revision ? meta_write_revision(s) : 0;
        if (r < 0) {
                (void)dir_store_batch_abort(s);
                return r;
        }
        r = tsf_sqlite_batch_commit(&s->sql);
        if (r < 0)
                /* Rolled back by lib/sqlite.c: so are the revisions. */
                s->revision = s->batch_revision;
        return r;
}

int dir_store_batch_abort(struct dir_store *s) {
        if (!s || !s->sql.batch)
                return -EINVAL;
        (void)tsf_sqlite_batch_abort(&s->sql);
        s->revision = s->batch_revision;
        return 0;
}

/* ---- open, migrate, close ------------------------------------------------ */

int dir_store_schema_version(void) {
        return (int)ELEMENTSOF(migrations);
}

/*
 * lib/sqlite.c opens the file in WAL mode with synchronous = FULL. WAL:
 * readers (logon queries) never wait for the writer. FULL: a commit
 * returns only after the WAL is on disk, so an event we acknowledged
 * survives a power cut, not just a crash; NORMAL could lose the last
 * commits, and a lost logon is a user sent to a fresh session. Writes are
 * events, not queries, so the fsync is cheap at their rate; batches share
 * one.
 */
static const struct tsf_sqlite_spec spec = {
        .what = "directory",
        .application_id = DIR_APPLICATION_ID,
        .migrations = migrations,
        .n_migrations = ELEMENTSOF(migrations),
        .stmt_sql = stmt_sql,
        .n_stmts = _ST_MAX,
        .cache_size_kib = CACHE_SIZE_KIB,
};

int dir_store_open(const char *path, struct dir_store **ret) {
        _cleanup_(dir_store_closep) struct dir_store *s = NULL;
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int rc, r;

        if (!path || !ret)
                return -EINVAL;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->pending_ttl = DIR_PENDING_TTL_DEFAULT;

        r = tsf_sqlite_open(&s->sql, path, &spec);
        if (r < 0)
                return r;
        /* DIRECTONLY: only our statements, not a schema's triggers or views,
         * may hand out revisions. */
        rc = sqlite3_create_function(s->sql.db, "next_revision", 0, SQLITE_UTF8 | SQLITE_DIRECTONLY, s,
                                     sql_next_revision, NULL, NULL);
        if (rc != SQLITE_OK)
                return log_debug_errno(tsf_sqlite_errno(s->sql.db, rc),
                                       "Failed to register next_revision(): %s", sqlite3_errmsg(s->sql.db));

        r = tsf_sqlite_stmt(&s->sql, ST_META_GET, &st);
        if (r < 0)
                return r;
        r = tsf_sqlite_step(st);
        if (r <= 0)
                return r < 0 ? r : -EBADMSG;
        s->revision = (uint64_t)sqlite3_column_int64(st, 0);

        *ret = TAKE_PTR(s);
        return 0;
}

static void pending_remove(struct dir_store *s, struct pending *p);

static void pending_clear(struct dir_store *s) {
        while (s->pending_first)
                pending_remove(s, s->pending_first);
        free(s->pending_nodes);
        s->pending_nodes = NULL;
        s->n_pending_nodes = 0;
}

struct dir_store *dir_store_close(struct dir_store *s) {
        if (!s)
                return NULL;
        tsf_sqlite_close(&s->sql);
        pending_clear(s);
        free(s);
        return NULL;
}

void dir_store_set_pending_ttl(struct dir_store *s, usec_t ttl) {
        s->pending_ttl = ttl;
}

uint64_t dir_store_revision(struct dir_store *s) {
        return s->revision;
}

/* ---- validation and rows ------------------------------------------------- */

static bool valid_name(const char *n) {
        size_t len;

        if (!n)
                return false;
        len = strlen(n);
        if (len == 0 || len > DIR_NODE_NAME_MAX)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= 'A' && n[i] <= 'Z') ||
                      (n[i] >= '0' && n[i] <= '9') || n[i] == '.' || n[i] == '-' || n[i] == '_'))
                        return false;
        return true;
}

/* Printable ASCII, at most max bytes; NULL is fine (an empty value). */
static bool valid_text(const char *t, size_t max, bool spaces) {
        size_t len;

        if (!t)
                return true;
        len = strlen(t);
        if (len > max)
                return false;
        for (size_t i = 0; i < len; i++)
                if (t[i] < (spaces ? 0x20 : 0x21) || t[i] > 0x7e)
                        return false;
        return true;
}

/* Device names come from clients and may carry any non-control bytes. */
static bool valid_device(const char *t) {
        if (!t)
                return true;
        if (strlen(t) > DIR_DEVICE_MAX)
                return false;
        for (const unsigned char *p = (const unsigned char *)t; *p; p++)
                if (*p < 0x20 || *p == 0x7f)
                        return false;
        return true;
}

static void row_to_node(sqlite3_stmt *st, int64_t *ret_id, struct dir_node *n) {
        memset(n, 0, sizeof(*n));
        if (ret_id)
                *ret_id = sqlite3_column_int64(st, 0);
        tsf_sqlite_copy_text(st, 1, n->name, sizeof(n->name));
        tsf_sqlite_copy_text(st, 2, n->addresses, sizeof(n->addresses));
        n->rdp_port = (uint16_t)sqlite3_column_int(st, 3);
        n->weight = (uint32_t)sqlite3_column_int64(st, 4);
        n->session_limit = (uint32_t)sqlite3_column_int64(st, 5);
        n->drain = (enum dir_drain)sqlite3_column_int(st, 6);
        tsf_sqlite_copy_text(st, 7, n->boot_id, sizeof(n->boot_id));
        n->up = sqlite3_column_int(st, 8) != 0;
        n->last_heartbeat = (usec_t)sqlite3_column_int64(st, 9);
        n->sessions = (uint32_t)sqlite3_column_int64(st, 10);
        n->revision = (uint64_t)sqlite3_column_int64(st, 11);
}

static void row_to_session(sqlite3_stmt *st, struct dir_session *x) {
        memset(x, 0, sizeof(*x));
        x->id = (uint64_t)sqlite3_column_int64(st, 0);
        tsf_sqlite_copy_text(st, 1, x->node, sizeof(x->node));
        x->node_session = (uint32_t)sqlite3_column_int64(st, 2);
        tsf_sqlite_copy_text(st, 3, x->user, sizeof(x->user));
        tsf_sqlite_copy_text(st, 4, x->user_key, sizeof(x->user_key));
        tsf_sqlite_copy_text(st, 5, x->domain, sizeof(x->domain));
        x->state = (enum dir_session_state)sqlite3_column_int(st, 6);
        tsf_sqlite_copy_text(st, 7, x->device, sizeof(x->device));
        tsf_sqlite_copy_text(st, 8, x->client_addr, sizeof(x->client_addr));
        x->logon_time = (usec_t)sqlite3_column_int64(st, 9);
        x->state_time = (usec_t)sqlite3_column_int64(st, 10);
        x->revision = (uint64_t)sqlite3_column_int64(st, 11);
}

/* 0 and the node, -ENOENT, or another error. */
static int node_lookup(struct dir_store *s, const char *name, int64_t *ret_id, struct dir_node *ret) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        struct dir_node dummy;
        int r;

        r = tsf_sqlite_query(&s->sql, ST_NODE_BY_NAME, &st, "t", name);
        if (r <= 0)
                return r < 0 ? r : -ENOENT;
        row_to_node(st, ret_id, ret ?: &dummy);
        return 0;
}

static int session_lookup(struct dir_store *s, int64_t node_id, uint32_t node_session,
                          struct dir_session *ret) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = tsf_sqlite_query(&s->sql, ST_SESSION_BY_NODE, &st, "ii", node_id, (int64_t)node_session);
        if (r <= 0)
                return r < 0 ? r : -ENOENT;
        row_to_session(st, ret);
        return 0;
}

/* ---- nodes --------------------------------------------------------------- */

int dir_node_register(struct dir_store *s, const struct dir_node_info *info) {
        _cleanup_(tx_abortp) struct dir_store *tx = NULL;
        struct dir_node old;
        int64_t id;
        usec_t now = tsf_now_realtime();
        int r;

        if (!s || !info || !valid_name(info->name) ||
            !valid_text(info->addresses, DIR_ADDRESSES_MAX, true) || !info->boot_id || !*info->boot_id ||
            !valid_text(info->boot_id, DIR_BOOT_ID_MAX, false) || info->rdp_port == 0 || info->weight == 0 ||
            info->weight > DIR_WEIGHT_MAX)
                return -EINVAL;

        r = tx_begin(s);
        if (r < 0)
                return r;
        tx = s;

        r = node_lookup(s, info->name, &id, &old);
        if (r == -ENOENT) {
                r = tsf_sqlite_run(&s->sql, ST_NODE_INSERT, "ttiiiti", info->name, info->addresses ?: "",
                                   (int64_t)info->rdp_port, (int64_t)info->weight,
                                   (int64_t)info->session_limit, info->boot_id, (int64_t)now);
                if (r < 0)
                        return r;
                log_debug("Directory: node %s registered.", info->name);
                return tx_commit(TAKE_PTR(tx));
        }
        if (r < 0)
                return r;

        if (strcmp(old.boot_id, info->boot_id) != 0) {
                /* The node booted again: its sessions died with the old
                 * boot, and "drain until restart" has run its course. */
                if (old.drain == DIR_DRAIN_UNTIL_RESTART)
                        old.drain = DIR_DRAIN_ENABLED;
                r = tsf_sqlite_run(&s->sql, ST_NODE_TOMBSTONE_SESSIONS, "i", id);
                if (r < 0)
                        return r;
                r = tsf_sqlite_run(&s->sql, ST_NODE_DELETE_SESSIONS, "i", id);
                if (r < 0)
                        return r;
                log_debug("Directory: node %s rebooted, %d sessions dropped.", info->name, r);
        }
        r = tsf_sqlite_run(&s->sql, ST_NODE_REREGISTER, "itiiiiti", id, info->addresses ?: "",
                           (int64_t)info->rdp_port, (int64_t)info->weight, (int64_t)info->session_limit,
                           (int64_t)old.drain, info->boot_id, (int64_t)now);
        if (r < 0)
                return r;
        return tx_commit(TAKE_PTR(tx));
}

int dir_node_heartbeat(struct dir_store *s, const char *name) {
        _cleanup_(tx_abortp) struct dir_store *tx = NULL;
        struct dir_node n;
        int64_t id;
        int r;

        if (!s || !valid_name(name))
                return -EINVAL;
        r = tx_begin(s);
        if (r < 0)
                return r;
        tx = s;
        r = node_lookup(s, name, &id, &n);
        if (r < 0)
                return r;
        /* Its sessions were marked lost when it went down; only a
         * registration (followed by its report) brings them back. */
        if (!n.up)
                return -EHOSTDOWN;
        r = tsf_sqlite_run(&s->sql, ST_NODE_HEARTBEAT, "ii", id, (int64_t)tsf_now_realtime());
        if (r < 0)
                return r;
        return tx_commit(TAKE_PTR(tx));
}

int dir_nodes_expire(struct dir_store *s, usec_t now, usec_t lapse) {
        _cleanup_(tx_abortp) struct dir_store *tx = NULL;
        usec_t cutoff = now > lapse ? now - lapse : 0;
        int r, lost, down;

        if (!s || cutoff > INT64_MAX)
                return -EINVAL;
        r = tx_begin(s);
        if (r < 0)
                return r;
        tx = s;
        lost = tsf_sqlite_run(&s->sql, ST_NODES_EXPIRE_SESSIONS, "ii", (int64_t)now, (int64_t)cutoff);
        if (lost < 0)
                return lost;
        down = tsf_sqlite_run(&s->sql, ST_NODES_EXPIRE, "i", (int64_t)cutoff);
        if (down < 0)
                return down;
        r = tx_commit(TAKE_PTR(tx));
        if (r < 0)
                return r;
        if (down > 0)
                log_debug("Directory: %d nodes missed their heartbeat, %d sessions lost.", down, lost);
        return down;
}

int dir_node_set_drain(struct dir_store *s, const char *name, enum dir_drain drain) {
        _cleanup_(tx_abortp) struct dir_store *tx = NULL;
        struct dir_node n;
        int64_t id;
        int r;

        if (!s || !valid_name(name) || (unsigned)drain >= _DIR_DRAIN_MAX)
                return -EINVAL;
        r = tx_begin(s);
        if (r < 0)
                return r;
        tx = s;
        r = node_lookup(s, name, &id, &n);
        if (r < 0)
                return r;
        if (n.drain == drain)
                return tx_commit(TAKE_PTR(tx)); /* no change, no revision */
        r = tsf_sqlite_run(&s->sql, ST_NODE_SET_DRAIN, "ii", id, (int64_t)drain);
        if (r < 0)
                return r;
        return tx_commit(TAKE_PTR(tx));
}

int dir_node_get(struct dir_store *s, const char *name, struct dir_node *ret) {
        if (!s || !name || !ret)
                return -EINVAL;
        return node_lookup(s, name, NULL, ret);
}

/* ---- pending logons ------------------------------------------------------ */

static struct pending **bucket_of(struct dir_store *s, const char *user, size_t len) {
        uint32_t h = 2166136261u; /* FNV-1a */

        for (size_t i = 0; i < len && user[i]; i++)
                h = (h ^ (uint8_t)user[i]) * 16777619u;
        return &s->buckets[h % PENDING_BUCKETS];
}

static uint64_t *pending_node_count(struct dir_store *s, int64_t node_id, bool add) {
        for (size_t i = 0; i < s->n_pending_nodes; i++)
                if (s->pending_nodes[i].node_id == node_id)
                        return &s->pending_nodes[i].n;
        if (add) {
                struct pending_node *a = reallocarray(s->pending_nodes, s->n_pending_nodes + 1, sizeof(*a));

                if (!a)
                        return NULL;
                s->pending_nodes = a;
                a[s->n_pending_nodes] = (struct pending_node){.node_id = node_id};
                return &a[s->n_pending_nodes++].n;
        }
        return NULL;
}

static void pending_remove(struct dir_store *s, struct pending *p) {
        uint64_t *n = pending_node_count(s, p->node_id, false);

        if (p->prev)
                p->prev->next = p->next;
        else
                s->pending_first = p->next;
        if (p->next)
                p->next->prev = p->prev;
        else
                s->pending_last = p->prev;
        if (p->user) {
                for (struct pending **q = bucket_of(s, p->user, SIZE_MAX); *q; q = &(*q)->hnext)
                        if (*q == p) {
                                *q = p->hnext;
                                break;
                        }
        } else {
                if (p->anon_prev)
                        p->anon_prev->anon_next = p->anon_next;
                else
                        s->anon_first = p->anon_next;
                if (p->anon_next)
                        p->anon_next->anon_prev = p->anon_prev;
                else
                        s->anon_last = p->anon_prev;
        }
        if (n && *n > 0)
                (*n)--;
        s->n_pending--;
        free(p->folded);
        free(p->user);
        free(p);
}

static void pending_expire(struct dir_store *s, usec_t now) {
        while (s->pending_first && s->pending_first->expires <= now)
                pending_remove(s, s->pending_first);
}

static struct pending *pending_find(struct dir_store *s, const struct tsf_userkey *key) {
        for (struct pending *p = *bucket_of(s, key->user, SIZE_MAX); p; p = p->hnext)
                if (strcmp(p->folded, key->folded) == 0)
                        return p;
        return NULL;
}

static int pending_add(struct dir_store *s, int64_t node_id, const struct tsf_userkey *key, usec_t expires,
                       struct pending **ret) {
        _cleanup_free_ struct pending *p = NULL;
        uint64_t *n;

        if (s->n_pending >= DIR_PENDING_MAX)
                return -ENOBUFS;
        p = calloc(1, sizeof(*p));
        n = pending_node_count(s, node_id, true);
        if (!p || !n)
                return -ENOMEM;
        p->node_id = node_id;
        p->expires = expires;
        if (key) {
                p->folded = strdup(key->folded);
                p->user = strdup(key->user);
                if (!p->folded || !p->user) {
                        free(p->folded);
                        free(p->user);
                        return -ENOMEM;
                }
                struct pending **b = bucket_of(s, p->user, SIZE_MAX);

                p->hnext = *b;
                *b = p;
        } else {
                p->anon_prev = s->anon_last;
                if (s->anon_last)
                        s->anon_last->anon_next = p;
                else
                        s->anon_first = p;
                s->anon_last = p;
        }
        p->prev = s->pending_last;
        if (s->pending_last)
                s->pending_last->next = p;
        else
                s->pending_first = p;
        s->pending_last = p;
        (*n)++;
        s->n_pending++;
        *ret = TAKE_PTR(p);
        return 0;
}

/* The logon a placement was waiting for arrived: its slot is now a session.
 * Prefer the reservation made for this user (wherever it pointed: they
 * will not use it now); else one made for nobody in particular on this
 * node, the oldest first since it would lapse first. */
static void pending_consume(struct dir_store *s, int64_t node_id, const struct tsf_userkey *user) {
        size_t len = strlen(user->user);
        bool found = false;

        pending_expire(s, tsf_now_realtime());
        /* Reservations for this user part, and for cookies a Windows client
         * cut, whose user part is then a prefix of this one: at most 9
         * buckets (the cut is 9 bytes). */
        for (size_t cut = 0; cut <= MIN(len, (size_t)TSF_USERKEY_TRUNCATED_LEN); cut++) {
                struct pending **q = bucket_of(s, user->user, cut == 0 ? SIZE_MAX : cut);

                while (*q) {
                        struct pending *p = *q;
                        struct tsf_userkey cookie;
                        bool exact = cut == 0 && strcmp(p->user, user->user) == 0;
                        bool cut_match = cut > 0 && strlen(p->user) == cut &&
                                         strncmp(p->user, user->user, cut) == 0 &&
                                         strlen(p->folded) == TSF_USERKEY_TRUNCATED_LEN;

                        if ((exact || cut_match) &&
                            tsf_userkey_parse_cookie(p->folded, strlen(p->folded), &cookie) >= 0 &&
                            tsf_userkey_match(&cookie, user)) {
                                pending_remove(s, p); /* unlinks it: *q is the next one now */
                                found = true;
                                continue;
                        }
                        q = &p->hnext;
                }
        }
        if (found)
                return;
        /* Else the oldest made for nobody in particular on this node. */
        for (struct pending *p = s->anon_first; p; p = p->anon_next)
                if (p->node_id == node_id) {
                        pending_remove(s, p);
                        return;
                }
}

/* ---- sessions ------------------------------------------------------------ */

/* Files the first 9 bytes of each way the user can be typed (docs/userkey.md)
 * that is at least that long: a cookie Windows cut is one of them. */
static int insert_prefixes(struct dir_store *s, int64_t session_id, const struct tsf_userkey *k) {
        char forms[4][2 * TSF_USERKEY_INPUT_MAX + 2];
        const char *dot = strchr(k->domain, '.');
        size_t n = 0;
        int r;

        snprintf(forms[n++], sizeof(forms[0]), "%s", k->user);
        if (k->domain[0]) {
                snprintf(forms[n++], sizeof(forms[0]), "%s\\%s", k->domain, k->user);
                snprintf(forms[n++], sizeof(forms[0]), "%s@%s", k->user, k->domain);
                if (dot)
                        snprintf(forms[n++], sizeof(forms[0]), "%.*s\\%s", (int)(dot - k->domain), k->domain,
                                 k->user);
        }
        for (size_t i = 0; i < n; i++) {
                if (strlen(forms[i]) < TSF_USERKEY_TRUNCATED_LEN)
                        continue;
                forms[i][TSF_USERKEY_TRUNCATED_LEN] = '\0';
                r = tsf_sqlite_run(&s->sql, ST_PREFIX_INSERT, "ti", forms[i], session_id);
                if (r < 0)
                        return r;
        }
        return 0;
}

static bool same_user(const char *user_a, const char *domain_a, const char *user_b, const char *domain_b) {
        return strcmp(user_a, user_b) == 0 && tsf_userkey_domain_match(domain_a, domain_b);
}

#define FAIL(e, why)                              \
        ({                                        \
                *reason = (why);                  \
                log_debug("Directory: %s.", why); \
                (e);                              \
        })

int dir_session_event(struct dir_store *s, const char *node, const struct dir_event_info *ev,
                      const char **reason) {
        _cleanup_(tx_abortp) struct dir_store *tx = NULL;
        struct tsf_userkey key;
        struct dir_session cur;
        struct dir_node n;
        const char *unused;
        int64_t node_id;
        usec_t now;
        bool have_key = false, exists;
        int r;

        if (!reason)
                reason = &unused;
        *reason = NULL;
        if (!s || !ev)
                return FAIL(-EINVAL, "missing arguments");
        if (!valid_name(node))
                return FAIL(-EINVAL, "invalid node name");
        if ((unsigned)ev->event >= _DIR_EVENT_MAX)
                return FAIL(-EINVAL, "unknown event");
        if (!valid_device(ev->device))
                return FAIL(-EINVAL, "invalid device name");
        if (!valid_text(ev->client_addr, DIR_CLIENT_ADDR_MAX, false))
                return FAIL(-EINVAL, "invalid client address");
        if (ev->user) {
                if (tsf_userkey_parse(ev->user, strlen(ev->user), &key) < 0)
                        return FAIL(-EINVAL, "user name does not parse");
                have_key = true;
        } else if (ev->event == DIR_EVENT_LOGON)
                return FAIL(-EINVAL, "a logon must name its user");

        now = tsf_now_realtime();
        r = tx_begin(s);
        if (r < 0)
                return r;
        tx = s;

        r = node_lookup(s, node, &node_id, &n);
        if (r == -ENOENT)
                return FAIL(-ENOENT, "unknown node");
        if (r < 0)
                return r;
        if (!n.up)
                return FAIL(-EHOSTDOWN, "node is marked down; it must register again");

        /* Sessions are found by (reporting node, its session id): a node
         * cannot name, and so cannot touch, another node's sessions. */
        r = session_lookup(s, node_id, ev->node_session, &cur);
        if (r < 0 && r != -ENOENT)
                return r;
        exists = r >= 0;

        if (ev->event == DIR_EVENT_LOGON) {
                if (exists)
                        return FAIL(-EINVAL, "session already exists");
                r = tsf_sqlite_run(&s->sql, ST_SESSION_INSERT, "iittttti", node_id,
                                   (int64_t)ev->node_session, ev->user, key.user, key.domain,
                                   ev->device ?: "", ev->client_addr ?: "", (int64_t)now);
                if (r < 0)
                        return r;
                r = insert_prefixes(s, sqlite3_last_insert_rowid(s->sql.db), &key);
                if (r < 0)
                        return r;
                r = tx_commit(TAKE_PTR(tx));
                if (r < 0)
                        return r;
                pending_consume(s, node_id, &key);
                return 0;
        }

        if (!exists)
                return FAIL(-ENOENT, "unknown session");
        if (have_key && !same_user(key.user, key.domain, cur.user_key, cur.domain))
                return FAIL(-EINVAL, "user does not match the session");

        switch (ev->event) {
        case DIR_EVENT_DISCONNECT:
                if (cur.state == DIR_SESSION_DISCONNECTED)
                        return FAIL(-EINVAL, "session already disconnected");
                r = tsf_sqlite_run(&s->sql, ST_SESSION_SET_STATE, "iiitt", (int64_t)cur.id,
                                   (int64_t)DIR_SESSION_DISCONNECTED, (int64_t)now, ev->device,
                                   ev->client_addr);
                break;
        case DIR_EVENT_RECONNECT:
                if (cur.state == DIR_SESSION_ACTIVE)
                        return FAIL(-EINVAL, "session already active");
                r = tsf_sqlite_run(&s->sql, ST_SESSION_SET_STATE, "iiitt", (int64_t)cur.id,
                                   (int64_t)DIR_SESSION_ACTIVE, (int64_t)now, ev->device, ev->client_addr);
                break;
        case DIR_EVENT_LOGOFF:
                r = tsf_sqlite_run(&s->sql, ST_SESSION_TOMBSTONE, "i", (int64_t)cur.id);
                if (r >= 0)
                        r = tsf_sqlite_run(&s->sql, ST_SESSION_DELETE, "i", (int64_t)cur.id);
                break;
        default:
                r = -EINVAL; /* checked above */
        }
        if (r < 0)
                return r;
        return tx_commit(TAKE_PTR(tx));
}

int dir_session_get(struct dir_store *s, const char *node, uint32_t node_session, struct dir_session *ret) {
        int64_t node_id;
        bool began;
        int r;

        if (!s || !node || !ret)
                return -EINVAL;
        r = tsf_sqlite_read_begin(&s->sql, &began);
        if (r < 0)
                return r;
        r = node_lookup(s, node, &node_id, NULL);
        if (r >= 0)
                r = session_lookup(s, node_id, node_session, ret);
        tsf_sqlite_read_end(&s->sql, began);
        return r;
}

/* ---- logon query --------------------------------------------------------- */

struct identity {
        char user[TSF_USERKEY_INPUT_MAX + 1];
        char domain[TSF_USERKEY_INPUT_MAX + 1];
};

struct lookup {
        const struct tsf_userkey *cookie;
        enum dir_policy policy;
        int64_t entry_id;
        /* Sessions seen (a session can come from both lookups). */
        int64_t seen[2 * LOOKUP_LIMIT];
        size_t n_seen;
        /* The different users the cookie matched. */
        struct identity ids[IDENTITIES_MAX];
        size_t n_ids;
        bool ambiguous;
        bool have_best;
        usec_t best_time;
        struct dir_answer *ret;
};

static void lookup_identity(struct lookup *l, const struct tsf_userkey *full) {
        for (size_t i = 0; i < l->n_ids; i++) {
                if (strcmp(l->ids[i].user, full->user) == 0 && strcmp(l->ids[i].domain, full->domain) == 0)
                        return;
                if (!same_user(l->ids[i].user, l->ids[i].domain, full->user, full->domain))
                        l->ambiguous = true;
        }
        if (l->n_ids == IDENTITIES_MAX) {
                l->ambiguous = true;
                return;
        }
        snprintf(l->ids[l->n_ids].user, sizeof(l->ids[0].user), "%s", full->user);
        snprintf(l->ids[l->n_ids].domain, sizeof(l->ids[0].domain), "%s", full->domain);
        l->n_ids++;
}

static int lookup_run(struct dir_store *s, struct lookup *l, enum stmt id, const char *value, size_t len) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int rc, r;

        r = tsf_sqlite_stmt(&s->sql, id, &st);
        if (r < 0)
                return r;
        rc = sqlite3_bind_text(st, 1, value, (int)len, SQLITE_STATIC);
        if (rc == SQLITE_OK)
                rc = sqlite3_bind_int(st, 2, LOOKUP_LIMIT);
        if (rc != SQLITE_OK)
                return tsf_sqlite_errno(s->sql.db, rc);

        while ((r = tsf_sqlite_step(st)) > 0) {
                int64_t sid = sqlite3_column_int64(st, 0);
                const char *user = (const char *)sqlite3_column_text(st, 1);
                enum dir_session_state state = (enum dir_session_state)sqlite3_column_int(st, 2);
                usec_t t = (usec_t)sqlite3_column_int64(st, 3);
                struct tsf_userkey full;
                bool dup = false, better;

                for (size_t i = 0; i < l->n_seen && !dup; i++)
                        dup = l->seen[i] == sid;
                if (dup || l->n_seen == ELEMENTSOF(l->seen))
                        continue;
                l->seen[l->n_seen++] = sid;

                if (!user || tsf_userkey_parse(user, strlen(user), &full) < 0 ||
                    !tsf_userkey_match(l->cookie, &full))
                        continue;
                lookup_identity(l, &full);

                /* With several sessions allowed, only a disconnected one
                 * calls its user back; an active one is left alone. */
                if (l->policy == DIR_POLICY_ALLOW_MULTIPLE && state != DIR_SESSION_DISCONNECTED)
                        continue;
                /* A disconnected session first (that is the one to resume),
                 * then the most recently changed. */
                better = !l->have_best ||
                         (state == DIR_SESSION_DISCONNECTED && l->ret->state != DIR_SESSION_DISCONNECTED) ||
                         (state == l->ret->state && t > l->best_time);
                if (!better)
                        continue;
                l->have_best = true;
                l->best_time = t;
                l->ret->session_id = (uint64_t)sid;
                l->ret->state = state;
                l->ret->node_session = (uint32_t)sqlite3_column_int64(st, 4);
                l->ret->redirect = sqlite3_column_int64(st, 5) != l->entry_id;
                tsf_sqlite_copy_text(st, 6, l->ret->node, sizeof(l->ret->node));
                tsf_sqlite_copy_text(st, 7, l->ret->addresses, sizeof(l->ret->addresses));
                l->ret->rdp_port = (uint16_t)sqlite3_column_int(st, 8);
        }
        return r;
}

/* 1 if answered (a session or ambiguous), 0 if the user has no session. */
static int find_sessions(struct dir_store *s, const struct tsf_userkey *cookie, enum dir_policy policy,
                         int64_t entry_id, struct dir_answer *ret) {
        struct lookup l = {.cookie = cookie, .policy = policy, .entry_id = entry_id, .ret = ret};
        bool began;
        int r = 0;

        r = tsf_sqlite_read_begin(&s->sql, &began);
        if (r < 0)
                return r;
        if (cookie->user[0])
                r = lookup_run(s, &l, ST_LOOKUP_KEY, cookie->user, strlen(cookie->user));
        /* A cookie of exactly 9 bytes may have been cut by the client. */
        if (r >= 0 && !l.ambiguous && tsf_userkey_maybe_truncated(cookie))
                r = lookup_run(s, &l, ST_LOOKUP_PREFIX, cookie->folded, cookie->folded_len);
        tsf_sqlite_read_end(&s->sql, began);
        if (r < 0)
                return r;

        if (l.ambiguous) {
                /* Never guess between users: no answer (docs/userkey.md). */
                memset(ret, 0, sizeof(*ret));
                ret->kind = DIR_ANSWER_AMBIGUOUS;
                return 1;
        }
        if (!l.have_best)
                return 0;
        ret->kind = DIR_ANSWER_SESSION;
        return 1;
}

struct candidate {
        int64_t id;
        struct dir_node node;
        uint64_t load; /* sessions + pending logons */
};

static bool takes_new_sessions(const struct dir_node *n) {
        return n->up && n->drain == DIR_DRAIN_ENABLED;
}

static int place(struct dir_store *s, const struct tsf_userkey *key, int64_t entry_id,
                 struct dir_answer *ret) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        _cleanup_free_ struct candidate *c = NULL;
        size_t n = 0, n_alloc = 0, best = SIZE_MAX;
        usec_t now = tsf_now_realtime();
        struct pending *p;
        int r;

        pending_expire(s, now);

        r = tsf_sqlite_stmt(&s->sql, ST_NODES_ALL, &st);
        if (r < 0)
                return r;
        while ((r = tsf_sqlite_step(st)) > 0) {
                if (n == n_alloc) {
                        size_t k = MAX(n_alloc * 2, (size_t)8);
                        struct candidate *a = reallocarray(c, k, sizeof(*a));

                        if (!a)
                                return -ENOMEM;
                        c = a;
                        n_alloc = k;
                }
                row_to_node(st, &c[n].id, &c[n].node);
                c[n].load = c[n].node.sessions;
                n++;
        }
        if (r < 0)
                return r;

        /* Asked again before the logon arrived: the same answer, if that
         * node still takes sessions (one session per user covers logons in
         * flight, and a client retrying must not take two slots). */
        p = key ? pending_find(s, key) : NULL;
        if (p) {
                for (size_t i = 0; i < n; i++)
                        if (c[i].id == p->node_id && takes_new_sessions(&c[i].node))
                                best = i;
                if (best == SIZE_MAX) {
                        pending_remove(s, p);
                        p = NULL;
                }
        }

        if (best == SIZE_MAX) {
                for (size_t i = 0; i < n; i++) {
                        uint64_t *held = pending_node_count(s, c[i].id, false);

                        c[i].load += held ? *held : 0;
                }
                /* Fewest sessions relative to weight: the node whose load
                 * after this placement, (load + 1) / weight, is smallest;
                 * compared as cross products to stay in integers. Ties go
                 * to the entry node (no redirect), then by name. */
                for (size_t i = 0; i < n; i++) {
                        const struct dir_node *nd = &c[i].node;
                        uint64_t a, b;

                        if (!takes_new_sessions(nd))
                                continue;
                        if (nd->session_limit > 0 && c[i].load >= nd->session_limit)
                                continue;
                        if (best == SIZE_MAX) {
                                best = i;
                                continue;
                        }
                        a = (c[i].load + 1) * c[best].node.weight;
                        b = (c[best].load + 1) * nd->weight;
                        if (a < b || (a == b && c[i].id == entry_id))
                                best = i;
                }
                if (best == SIZE_MAX) {
                        memset(ret, 0, sizeof(*ret));
                        ret->kind = DIR_ANSWER_NO_NODE;
                        return 0;
                }
                /* A full reservation table only costs balance. */
                if (pending_add(s, c[best].id, key, now + s->pending_ttl, &p) < 0)
                        p = NULL;
        }

        memset(ret, 0, sizeof(*ret));
        ret->kind = DIR_ANSWER_PLACED;
        memcpy(ret->node, c[best].node.name, sizeof(ret->node));
        memcpy(ret->addresses, c[best].node.addresses, sizeof(ret->addresses));
        ret->rdp_port = c[best].node.rdp_port;
        ret->redirect = c[best].id != entry_id;
        ret->reserved_until = p ? p->expires : 0;
        return 0;
}

int dir_logon_query(struct dir_store *s, const char *user_or_cookie, const char *entry_node,
                    enum dir_policy policy, struct dir_answer *ret) {
        struct tsf_userkey key;
        bool have_key = false;
        int64_t entry_id = -1;
        int r;

        if (!s || !ret || (policy != DIR_POLICY_ONE_SESSION && policy != DIR_POLICY_ALLOW_MULTIPLE))
                return -EINVAL;
        memset(ret, 0, sizeof(*ret));
        if (entry_node) {
                r = node_lookup(s, entry_node, &entry_id, NULL);
                if (r < 0)
                        return r;
        }
        /* A cookie that does not parse names nobody: placement only. */
        if (user_or_cookie && tsf_userkey_parse_cookie(user_or_cookie, strlen(user_or_cookie), &key) >= 0)
                have_key = true;

        if (have_key) {
                r = find_sessions(s, &key, policy, entry_id, ret);
                if (r != 0)
                        return r < 0 ? r : 0;
        }
        return place(s, have_key ? &key : NULL, entry_id, ret);
}

/* ---- change feed --------------------------------------------------------- */

static int meta_get(struct dir_store *s, uint64_t *ret_revision, uint64_t *ret_horizon) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        int r;

        r = tsf_sqlite_stmt(&s->sql, ST_META_GET, &st);
        if (r < 0)
                return r;
        r = tsf_sqlite_step(st);
        if (r <= 0)
                return r < 0 ? r : -EBADMSG;
        *ret_revision = (uint64_t)sqlite3_column_int64(st, 0);
        *ret_horizon = (uint64_t)sqlite3_column_int64(st, 1);
        return 0;
}

struct feed {
        sqlite3_stmt *st;
        int more; /* tsf_sqlite_step()'s last answer */
};

static int feed_open(struct dir_store *s, struct feed *f, enum stmt id, uint64_t since, unsigned max) {
        int r;

        r = tsf_sqlite_stmt(&s->sql, id, &f->st);
        if (r < 0)
                return r;
        r = tsf_sqlite_bind(f->st, "ii", (int64_t)since, (int64_t)max);
        if (r < 0)
                return r;
        f->more = tsf_sqlite_step(f->st);
        return f->more < 0 ? f->more : 0;
}

int dir_changes_since(struct dir_store *s, uint64_t since, unsigned max, dir_change_cb cb, void *userdata) {
        /* Nodes, sessions and tombstones, each in revision order, merged. */
        enum { F_NODES, F_SESSIONS, F_TOMBSTONES, _F_MAX };
        static const enum stmt ids[_F_MAX] = {ST_NODES_SINCE, ST_SESSIONS_SINCE, ST_TOMBSTONES_SINCE};
        _cleanup_stmt_ sqlite3_stmt *st_n = NULL, *st_s = NULL, *st_t = NULL;
        struct feed f[_F_MAX] = {};
        uint64_t revision, horizon;
        int delivered = 0, r;
        bool began;

        if (!s || !cb || max == 0 || since > INT64_MAX)
                return -EINVAL;
        max = MIN(max, (unsigned)INT32_MAX);

        r = tsf_sqlite_read_begin(&s->sql, &began);
        if (r < 0)
                return r;
        r = meta_get(s, &revision, &horizon);
        if (r >= 0 && (since < horizon || since > revision))
                /* Older than the tombstones we kept, or from another
                 * history (a restored backup): only a snapshot is right. */
                r = log_debug_errno(-ESTALE,
                                    "Change feed from revision %" PRIu64 " not available (%" PRIu64
                                    "..%" PRIu64 "); resync from a snapshot.",
                                    since, horizon, revision);
        for (size_t i = 0; r >= 0 && i < _F_MAX; i++)
                r = feed_open(s, &f[i], ids[i], since, max);
        st_n = f[F_NODES].st;
        st_s = f[F_SESSIONS].st;
        st_t = f[F_TOMBSTONES].st;

        while (r >= 0 && (unsigned)delivered < max) {
                struct dir_change c = {};
                struct dir_session x;
                struct dir_node nd;
                size_t next = SIZE_MAX;
                uint64_t rev[_F_MAX];

                rev[F_NODES] = f[F_NODES].more > 0 ? (uint64_t)sqlite3_column_int64(st_n, 11) : UINT64_MAX;
                rev[F_SESSIONS] =
                        f[F_SESSIONS].more > 0 ? (uint64_t)sqlite3_column_int64(st_s, 11) : UINT64_MAX;
                rev[F_TOMBSTONES] =
                        f[F_TOMBSTONES].more > 0 ? (uint64_t)sqlite3_column_int64(st_t, 0) : UINT64_MAX;
                for (size_t i = 0; i < _F_MAX; i++)
                        if (rev[i] != UINT64_MAX && (next == SIZE_MAX || rev[i] < rev[next]))
                                next = i;
                if (next == SIZE_MAX)
                        break;

                c.revision = rev[next];
                if (next == F_NODES) {
                        row_to_node(st_n, NULL, &nd);
                        c.kind = DIR_CHANGE_NODE;
                        c.node = &nd;
                } else if (next == F_SESSIONS) {
                        row_to_session(st_s, &x);
                        c.kind = DIR_CHANGE_SESSION;
                        c.session = &x;
                } else {
                        memset(&x, 0, sizeof(x));
                        x.revision = c.revision;
                        x.id = (uint64_t)sqlite3_column_int64(st_t, 1);
                        tsf_sqlite_copy_text(st_t, 2, x.node, sizeof(x.node));
                        x.node_session = (uint32_t)sqlite3_column_int64(st_t, 3);
                        tsf_sqlite_copy_text(st_t, 4, x.user, sizeof(x.user));
                        tsf_sqlite_copy_text(st_t, 5, x.user_key, sizeof(x.user_key));
                        c.kind = DIR_CHANGE_SESSION_GONE;
                        c.session = &x;
                }
                r = cb(&c, userdata);
                if (r < 0)
                        break;
                delivered++;
                f[next].more = tsf_sqlite_step(f[next].st);
                r = f[next].more;
        }
        tsf_sqlite_stmt_donep(&st_n);
        tsf_sqlite_stmt_donep(&st_s);
        tsf_sqlite_stmt_donep(&st_t);
        tsf_sqlite_read_end(&s->sql, began);
        return r < 0 ? r : delivered;
}

int dir_snapshot(struct dir_store *s, uint64_t after, unsigned limit, dir_change_cb cb, void *userdata,
                 uint64_t *ret_revision) {
        _cleanup_stmt_ sqlite3_stmt *st_n = NULL, *st_s = NULL;
        uint64_t revision, horizon;
        int count = 0, r;
        bool began;

        if (!s || !cb || limit > INT_MAX)
                return -EINVAL;
        r = tsf_sqlite_read_begin(&s->sql, &began);
        if (r < 0)
                return r;
        r = meta_get(s, &revision, &horizon);
        /* The nodes come with the first page. */
        if (r >= 0 && after == 0)
                r = tsf_sqlite_stmt(&s->sql, ST_NODES_ALL, &st_n);
        while (r >= 0 && st_n && (r = tsf_sqlite_step(st_n)) > 0) {
                struct dir_node nd;
                struct dir_change c = {.kind = DIR_CHANGE_NODE, .node = &nd};

                row_to_node(st_n, NULL, &nd);
                c.revision = nd.revision;
                r = cb(&c, userdata);
        }
        if (r >= 0)
                r = tsf_sqlite_stmt(&s->sql, ST_SESSIONS_PAGE, &st_s);
        if (r >= 0)
                r = tsf_sqlite_bind(st_s, "ii", (int64_t)after, limit ? (int64_t)limit : (int64_t)-1);
        while (r >= 0 && (r = tsf_sqlite_step(st_s)) > 0) {
                struct dir_session x;
                struct dir_change c = {.kind = DIR_CHANGE_SESSION, .session = &x};

                row_to_session(st_s, &x);
                c.revision = x.revision;
                r = cb(&c, userdata);
                count++;
        }
        tsf_sqlite_stmt_donep(&st_n);
        tsf_sqlite_stmt_donep(&st_s);
        tsf_sqlite_read_end(&s->sql, began);
        if (r < 0)
                return r;
        if (ret_revision)
                *ret_revision = revision;
        return count;
}

int dir_session_counts(struct dir_store *s, uint64_t counts[static _DIR_SESSION_STATE_MAX],
                       uint64_t *ret_revision) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        uint64_t revision, horizon;
        bool began;
        int r;

        if (!s)
                return -EINVAL;
        memset(counts, 0, sizeof(uint64_t) * _DIR_SESSION_STATE_MAX);
        r = tsf_sqlite_read_begin(&s->sql, &began);
        if (r < 0)
                return r;
        r = meta_get(s, &revision, &horizon);
        if (r >= 0)
                r = tsf_sqlite_stmt(&s->sql, ST_SESSION_COUNTS, &st);
        while (r >= 0 && (r = tsf_sqlite_step(st)) > 0) {
                int64_t state = sqlite3_column_int64(st, 0);

                if (state >= 0 && state < _DIR_SESSION_STATE_MAX)
                        counts[state] = (uint64_t)sqlite3_column_int64(st, 1);
        }
        tsf_sqlite_stmt_donep(&st);
        tsf_sqlite_read_end(&s->sql, began);
        if (r < 0)
                return r;
        if (ret_revision)
                *ret_revision = revision;
        return 0;
}

int dir_changes_compact(struct dir_store *s, uint64_t through) {
        _cleanup_(tx_abortp) struct dir_store *tx = NULL;
        uint64_t revision, horizon;
        int r, removed;

        if (!s)
                return -EINVAL;
        r = tx_begin(s);
        if (r < 0)
                return r;
        tx = s;
        r = meta_get(s, &revision, &horizon);
        if (r < 0)
                return r;
        if (through > revision)
                return -EINVAL;
        if (through <= horizon)
                return tx_commit(TAKE_PTR(tx));
        removed = tsf_sqlite_run(&s->sql, ST_TOMBSTONES_COMPACT, "i", (int64_t)through);
        if (removed < 0)
                return removed;
        r = tsf_sqlite_run(&s->sql, ST_META_SET_HORIZON, "i", (int64_t)through);
        if (r < 0)
                return r;
        r = tx_commit(TAKE_PTR(tx));
        return r < 0 ? r : removed;
}

/* ---- names --------------------------------------------------------------- */

const char *dir_drain_to_string(enum dir_drain d) {
        static const char *const t[_DIR_DRAIN_MAX] = {"enabled", "disabled", "drain-until-restart"};
        return (unsigned)d < _DIR_DRAIN_MAX ? t[d] : NULL;
}

const char *dir_session_state_to_string(enum dir_session_state st) {
        static const char *const t[_DIR_SESSION_STATE_MAX] = {"active", "disconnected", "lost"};
        return (unsigned)st < _DIR_SESSION_STATE_MAX ? t[st] : NULL;
}

const char *dir_event_to_string(enum dir_event e) {
        static const char *const t[_DIR_EVENT_MAX] = {"logon", "disconnect", "reconnect", "logoff"};
        return (unsigned)e < _DIR_EVENT_MAX ? t[e] : NULL;
}
