/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "agent/directory/store.h"
#include "tsfarm/cleanup.h"
#include "tsfarm/clock.h"
#include "tsfarm/macro.h"

#define T0 (1795000000ULL * USEC_PER_SEC)

struct fixture {
        char dir[64];
        char path[96];
        struct tsf_fake_clock clock;
        struct dir_store *s;
};

static int setup(void **state) {
        struct fixture *f = calloc(1, sizeof(*f));

        assert_non_null(f);
        snprintf(f->dir, sizeof(f->dir), "%s/tsfarm-dir-XXXXXX", getenv("TMPDIR") ?: "/tmp");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->path, sizeof(f->path), "%s/directory.db", f->dir);
        tsf_fake_clock_init(&f->clock, T0, 1000 * USEC_PER_SEC);
        tsf_clock_install(&f->clock.base);
        assert_int_equal(dir_store_open(f->path, &f->s), 0);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        struct fixture *f = *state;
        char cmd[128];

        dir_store_close(f->s);
        tsf_clock_install(NULL);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
        assert_int_equal(system(cmd), 0);
        free(f);
        return 0;
}

static void reopen(struct fixture *f) {
        f->s = dir_store_close(f->s);
        assert_int_equal(dir_store_open(f->path, &f->s), 0);
}

static int reg(struct dir_store *s, const char *name, uint32_t weight, uint32_t limit, const char *boot) {
        struct dir_node_info i = {
                .name = name,
                .addresses = "10.0.0.1 fd00::1",
                .rdp_port = 3389,
                .weight = weight,
                .session_limit = limit,
                .boot_id = boot,
        };
        return dir_node_register(s, &i);
}

static int ev(struct dir_store *s, const char *node, enum dir_event e, uint32_t sid, const char *user,
              const char **reason) {
        struct dir_event_info i = {
                .event = e,
                .node_session = sid,
                .user = user,
                .device = "DEVICE-1",
                .client_addr = "192.0.2.7",
        };
        return dir_session_event(s, node, &i, reason);
}

static int logon(struct dir_store *s, const char *node, uint32_t sid, const char *user) {
        return ev(s, node, DIR_EVENT_LOGON, sid, user, NULL);
}

static enum dir_session_state state_of(struct dir_store *s, const char *node, uint32_t sid) {
        struct dir_session x;

        assert_int_equal(dir_session_get(s, node, sid, &x), 0);
        return x.state;
}

static int64_t sql_int(const char *path, const char *sql) {
        sqlite3 *db = NULL;
        sqlite3_stmt *st = NULL;
        int64_t v;

        assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(db);
        return v;
}

/* ---- schema -------------------------------------------------------------- */

static void test_migrate_from_empty_and_reopen(void **state) {
        struct fixture *f = *state;
        uint64_t rev;

        assert_true(dir_store_schema_version() >= 1);
        assert_int_equal(sql_int(f->path, "PRAGMA user_version"), dir_store_schema_version());
        assert_int_equal(sql_int(f->path, "PRAGMA application_id"), 0x74736664);
        assert_int_equal(sql_int(f->path, "SELECT count(*) FROM nodes"), 0);
        assert_int_equal(dir_store_revision(f->s), 0);

        assert_int_equal(reg(f->s, "ts1", 100, 0, "boot-a"), 0);
        rev = dir_store_revision(f->s);
        assert_true(rev > 0);

        /* Reopening migrates nothing and keeps everything. */
        reopen(f);
        reopen(f);
        assert_int_equal(sql_int(f->path, "PRAGMA user_version"), dir_store_schema_version());
        assert_int_equal(sql_int(f->path, "SELECT count(*) FROM nodes"), 1);
        assert_int_equal(dir_store_revision(f->s), rev);
}

static void test_refuses_newer_and_foreign(void **state) {
        struct fixture *f = *state;
        char path[160], sql[96];
        sqlite3 *db;
        struct dir_store *s = NULL;
        FILE *fp;

        /* Written by a newer tsfarm. */
        f->s = dir_store_close(f->s);
        assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
        snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", dir_store_schema_version() + 1);
        assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
        assert_int_equal(dir_store_open(f->path, &s), -EPROTONOSUPPORT);
        assert_null(s);
        /* ...and left as it was. */
        assert_int_equal(sql_int(f->path, "PRAGMA user_version"), dir_store_schema_version() + 1);

        /* Some other program's database. */
        snprintf(path, sizeof(path), "%s/other.db", f->dir);
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db, "CREATE TABLE t (x)", NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
        assert_int_equal(dir_store_open(path, &s), -EMEDIUMTYPE);

        /* Not a database at all. */
        snprintf(path, sizeof(path), "%s/garbage.db", f->dir);
        fp = fopen(path, "w");
        assert_non_null(fp);
        for (int i = 0; i < 256; i++)
                fputs("not a database ", fp);
        fclose(fp);
        assert_int_equal(dir_store_open(path, &s), -EMEDIUMTYPE);

        /* A directory that does not exist. */
        snprintf(path, sizeof(path), "%s/missing/x.db", f->dir);
        assert_true(dir_store_open(path, &s) < 0);
        assert_null(s);

        /* The fixture's teardown wants a store. */
        snprintf(path, sizeof(path), "%s/fresh.db", f->dir);
        assert_int_equal(dir_store_open(path, &f->s), 0);
}

/* ---- nodes --------------------------------------------------------------- */

static void test_node_register_validation(void **state) {
        struct fixture *f = *state;
        struct dir_node_info i = {.name = "ts1", .rdp_port = 3389, .weight = 100, .boot_id = "b"};
        struct dir_node n;
        uint64_t rev;

        assert_int_equal(dir_node_register(f->s, &i), 0);
        rev = dir_store_revision(f->s);

        i.name = "bad name";
        assert_int_equal(dir_node_register(f->s, &i), -EINVAL);
        i.name = "";
        assert_int_equal(dir_node_register(f->s, &i), -EINVAL);
        i.name = "ts1";
        i.weight = 0;
        assert_int_equal(dir_node_register(f->s, &i), -EINVAL);
        i.weight = DIR_WEIGHT_MAX + 1;
        assert_int_equal(dir_node_register(f->s, &i), -EINVAL);
        i.weight = 100;
        i.rdp_port = 0;
        assert_int_equal(dir_node_register(f->s, &i), -EINVAL);
        i.rdp_port = 3389;
        i.boot_id = "";
        assert_int_equal(dir_node_register(f->s, &i), -EINVAL);
        i.boot_id = "b";
        i.addresses = "10.0.0.1\n10.0.0.2";
        assert_int_equal(dir_node_register(f->s, &i), -EINVAL);
        assert_int_equal(dir_store_revision(f->s), rev);

        assert_int_equal(dir_node_get(f->s, "ts1", &n), 0);
        assert_string_equal(n.name, "ts1");
        assert_string_equal(n.addresses, "");
        assert_int_equal(n.weight, 100);
        assert_true(n.up);
        assert_int_equal(n.drain, DIR_DRAIN_ENABLED);
        assert_int_equal(n.last_heartbeat, T0);
        assert_int_equal(dir_node_get(f->s, "nope", &n), -ENOENT);
        assert_int_equal(dir_node_heartbeat(f->s, "nope"), -ENOENT);
        assert_int_equal(dir_node_set_drain(f->s, "nope", DIR_DRAIN_DISABLED), -ENOENT);
        assert_int_equal(dir_node_set_drain(f->s, "ts1", (enum dir_drain)7), -EINVAL);
}

static void test_heartbeat_expiry_marks_sessions_lost(void **state) {
        struct fixture *f = *state;
        struct dir_answer a;
        struct dir_node n;
        uint64_t rev;

        assert_int_equal(reg(f->s, "ts1", 100, 0, "boot-1"), 0);
        assert_int_equal(reg(f->s, "ts2", 100, 0, "boot-2"), 0);
        assert_int_equal(logon(f->s, "ts1", 1, "alice"), 0);
        assert_int_equal(logon(f->s, "ts1", 2, "bob"), 0);
        assert_int_equal(ev(f->s, "ts1", DIR_EVENT_DISCONNECT, 2, NULL, NULL), 0);
        assert_int_equal(logon(f->s, "ts2", 1, "carol"), 0);

        /* ts2 keeps beating, ts1 goes quiet. */
        tsf_fake_clock_advance(&f->clock, 10 * USEC_PER_SEC);
        assert_int_equal(dir_node_heartbeat(f->s, "ts2"), 0);
        assert_int_equal(dir_node_heartbeat(f->s, "ts1"), 0);
        rev = dir_store_revision(f->s);
        assert_int_equal(dir_nodes_expire(f->s, tsf_now_realtime(), 15 * USEC_PER_SEC), 0);
        assert_int_equal(dir_store_revision(f->s), rev); /* heartbeats are no changes */

        tsf_fake_clock_advance(&f->clock, 10 * USEC_PER_SEC);
        assert_int_equal(dir_node_heartbeat(f->s, "ts2"), 0);
        tsf_fake_clock_advance(&f->clock, 6 * USEC_PER_SEC);
        assert_int_equal(dir_nodes_expire(f->s, tsf_now_realtime(), 15 * USEC_PER_SEC), 1);
        assert_true(dir_store_revision(f->s) >= rev + 3); /* the node and its two sessions */

        assert_int_equal(dir_node_get(f->s, "ts1", &n), 0);
        assert_false(n.up);
        assert_int_equal(n.sessions, 0);
        assert_int_equal(state_of(f->s, "ts1", 1), DIR_SESSION_LOST);
        assert_int_equal(state_of(f->s, "ts1", 2), DIR_SESSION_LOST);
        assert_int_equal(state_of(f->s, "ts2", 1), DIR_SESSION_ACTIVE);
        assert_int_equal(dir_node_get(f->s, "ts2", &n), 0);
        assert_true(n.up);
        /* Once is enough. */
        assert_int_equal(dir_nodes_expire(f->s, tsf_now_realtime(), 15 * USEC_PER_SEC), 0);
        {
                /* The per-state counts (triggers) follow every change, and a
                 * reopen (the migration's initial fill is not redone). */
                uint64_t counts[_DIR_SESSION_STATE_MAX], rc;

                assert_int_equal(dir_session_counts(f->s, counts, &rc), 0);
                assert_int_equal(counts[DIR_SESSION_ACTIVE], 1);
                assert_int_equal(counts[DIR_SESSION_DISCONNECTED], 0);
                assert_int_equal(counts[DIR_SESSION_LOST], 2);
                assert_int_equal(rc, dir_store_revision(f->s));
                reopen(f);
                assert_int_equal(dir_session_counts(f->s, counts, NULL), 0);
                assert_int_equal(counts[DIR_SESSION_ACTIVE] + counts[DIR_SESSION_LOST], 3);
        }

        /* bob's session is lost: he is placed anew, on the node that is up. */
        assert_int_equal(dir_logon_query(f->s, "bob", NULL, DIR_POLICY_ONE_SESSION, &a), 0);
        assert_int_equal(a.kind, DIR_ANSWER_PLACED);
        assert_string_equal(a.node, "ts2");

        /* A down node must register again; events and beats are refused. */
        assert_int_equal(dir_node_heartbeat(f->s, "ts1"), -EHOSTDOWN);
        assert_int_equal(ev(f->s, "ts1", DIR_EVENT_RECONNECT, 1, NULL, NULL), -EHOSTDOWN);

        /* Same boot: the node was cut off, not rebooted. Its sessions stay
         * lost until it reports them again. */
        assert_int_equal(reg(f->s, "ts1", 100, 0, "boot-1"), 0);
        assert_int_equal(state_of(f->s, "ts1", 1), DIR_SESSION_LOST);
        assert_int_equal(ev(f->s, "ts1", DIR_EVENT_RECONNECT, 1, NULL, NULL), 0);
        assert_int_equal(ev(f->s, "ts1", DIR_EVENT_DISCONNECT, 2, NULL, NULL), 0);
        assert_int_equal(state_of(f->s, "ts1", 1), DIR_SESSION_ACTIVE);
        assert_int_equal(state_of(f->s, "ts1", 2), DIR_SESSION_DISCONNECTED);
        assert_int_equal(dir_node_get(f->s, "ts1", &n), 0);
        assert_int_equal(n.sessions, 2);

        /* A new boot: its sessions died with the old one. */
        assert_int_equal(reg(f->s, "ts1", 100, 0, "boot-1b"), 0);
        struct dir_session x;
        assert_int_equal(dir_session_get(f->s, "ts1", 1, &x), -ENOENT);
        assert_int_equal(dir_session_get(f->s, "ts1", 2, &x), -ENOENT);
        assert_int_equal(dir_node_get(f->s, "ts1", &n), 0);
        assert_int_equal(n.sessions, 0);
}

/* ---- sessions ------------------------------------------------------------ */

static void test_session_state_machine(void **state) {
        static const struct {
                enum dir_event event;
                const char *user;
                int r;
                int state; /* after; -1: gone */
        } steps[] = {
                {DIR_EVENT_DISCONNECT, NULL, -ENOENT, -1}, /* unknown session */
                {DIR_EVENT_LOGOFF, NULL, -ENOENT, -1},
                {DIR_EVENT_RECONNECT, NULL, -ENOENT, -1},
                {DIR_EVENT_LOGON, NULL, -EINVAL, -1}, /* a logon names its user */
                {DIR_EVENT_LOGON, "CORP\\a\\b", -EINVAL, -1},
                {DIR_EVENT_LOGON, "CORP\\Alice", 0, DIR_SESSION_ACTIVE},
                {DIR_EVENT_LOGON, "CORP\\Alice", -EINVAL, DIR_SESSION_ACTIVE}, /* exists */
                {DIR_EVENT_RECONNECT, NULL, -EINVAL, DIR_SESSION_ACTIVE},      /* already active */
                {DIR_EVENT_DISCONNECT, "bob", -EINVAL, DIR_SESSION_ACTIVE},    /* not bob's */
                {DIR_EVENT_DISCONNECT, "OTHER\\alice", -EINVAL, DIR_SESSION_ACTIVE},
                {DIR_EVENT_DISCONNECT, "alice@corp.example", 0, DIR_SESSION_DISCONNECTED},
                {DIR_EVENT_DISCONNECT, NULL, -EINVAL, DIR_SESSION_DISCONNECTED}, /* already */
                {DIR_EVENT_RECONNECT, "ALICE", 0, DIR_SESSION_ACTIVE},
                {DIR_EVENT_DISCONNECT, NULL, 0, DIR_SESSION_DISCONNECTED},
                {DIR_EVENT_LOGOFF, NULL, 0, -1},
                {DIR_EVENT_LOGOFF, NULL, -ENOENT, -1},
                {DIR_EVENT_LOGON, "alice", 0, DIR_SESSION_ACTIVE}, /* the id can be used again */
                {(enum dir_event)9, NULL, -EINVAL, DIR_SESSION_ACTIVE},
        };
        struct fixture *f = *state;
        struct dir_session x;
        struct dir_node n;

        assert_int_equal(reg(f->s, "ts1", 100, 0, "boot"), 0);
        for (size_t i = 0; i < ELEMENTSOF(steps); i++) {
                uint64_t rev = dir_store_revision(f->s);
                const char *reason = NULL;
                int r;

                tsf_fake_clock_advance(&f->clock, USEC_PER_SEC);
                r = ev(f->s, "ts1", steps[i].event, 7, steps[i].user, &reason);
                print_message("step %zu: %s %s -> %d (%s)\n", i, dir_event_to_string(steps[i].event) ?: "?",
                              steps[i].user ?: "-", r, reason ?: "ok");
                assert_int_equal(r, steps[i].r);
                if (r < 0) {
                        /* Refused: a reason, and nothing changed. */
                        assert_non_null(reason);
                        assert_int_equal(dir_store_revision(f->s), rev);
                } else {
                        assert_null(reason);
                        assert_true(dir_store_revision(f->s) > rev);
                }
                r = dir_session_get(f->s, "ts1", 7, &x);
                if (steps[i].state < 0) {
                        assert_int_equal(r, -ENOENT);
                        continue;
                }
                assert_int_equal(r, 0);
                assert_int_equal(x.state, steps[i].state);
                if (steps[i].r == 0)
                        assert_int_equal(x.state_time, tsf_now_realtime());
        }
        assert_string_equal(x.user, "alice");
        assert_string_equal(x.user_key, "alice");
        assert_string_equal(x.device, "DEVICE-1");
        assert_string_equal(x.client_addr, "192.0.2.7");
        assert_string_equal(x.node, "ts1");
        assert_int_equal(dir_node_get(f->s, "ts1", &n), 0);
        assert_int_equal(n.sessions, 1);

        /* Unknown node; bad device and address. */
        assert_int_equal(logon(f->s, "ts9", 1, "alice"), -ENOENT);
        struct dir_event_info bad = {
                .event = DIR_EVENT_LOGON, .node_session = 8, .user = "x", .client_addr = "a b"};
        assert_int_equal(dir_session_event(f->s, "ts1", &bad, NULL), -EINVAL);
        bad.client_addr = NULL;
        bad.device = "tab\there";
        assert_int_equal(dir_session_event(f->s, "ts1", &bad, NULL), -EINVAL);
}

static void test_node_cannot_touch_other_nodes_sessions(void **state) {
        struct fixture *f = *state;
        const char *reason = NULL;
        struct dir_session before, after;
        uint64_t rev;

        assert_int_equal(reg(f->s, "ts1", 100, 0, "b1"), 0);
        assert_int_equal(reg(f->s, "ts2", 100, 0, "b2"), 0);
        assert_int_equal(logon(f->s, "ts1", 5, "alice"), 0);
        assert_int_equal(dir_session_get(f->s, "ts1", 5, &before), 0);
        rev = dir_store_revision(f->s);

        assert_int_equal(ev(f->s, "ts2", DIR_EVENT_DISCONNECT, 5, "alice", &reason), -ENOENT);
        assert_non_null(reason);
        assert_int_equal(ev(f->s, "ts2", DIR_EVENT_LOGOFF, 5, NULL, NULL), -ENOENT);
        assert_int_equal(ev(f->s, "ts2", DIR_EVENT_RECONNECT, 5, NULL, NULL), -ENOENT);
        assert_int_equal(dir_store_revision(f->s), rev);
        assert_int_equal(dir_session_get(f->s, "ts1", 5, &after), 0);
        assert_memory_equal(&before, &after, sizeof(before));

        /* ts2 may have its own session 5: a different session. */
        assert_int_equal(logon(f->s, "ts2", 5, "bob"), 0);
        assert_int_equal(dir_session_get(f->s, "ts1", 5, &after), 0);
        assert_string_equal(after.user, "alice");
}

/* ---- logon query --------------------------------------------------------- */

static void test_logon_query_finds_user_forms(void **state) {
        static const struct {
                const char *cookie;
                enum dir_answer_kind kind;
                const char *node;
        } cases[] = {
                {"rdpuser1", DIR_ANSWER_SESSION, "ts1"},
                {"RDPUSER1", DIR_ANSWER_SESSION, "ts1"},
                {"CORP\\rdpuser1", DIR_ANSWER_SESSION, "ts1"},
                {"rdpuser1@corp.example", DIR_ANSWER_SESSION, "ts1"},
                {"rdpuser1@", DIR_ANSWER_SESSION, "ts1"},     /* cut after the '@' */
                {"corp\\rdpu", DIR_ANSWER_SESSION, "ts1"},    /* cut DOMAIN\user */
                {"OTHER\\rdpuser1", DIR_ANSWER_PLACED, NULL}, /* another domain */
                {"averylong", DIR_ANSWER_AMBIGUOUS, NULL},    /* two users */
                {"averylongusername01", DIR_ANSWER_SESSION, "ts1"},
                {"averylongusername02", DIR_ANSWER_SESSION, "ts2"},
                {"averylon", DIR_ANSWER_PLACED, NULL},     /* 8 bytes: not cut, nobody */
                {"uniquelon", DIR_ANSWER_SESSION, "ts2"},  /* cut, one user */
                {"corpo\\uni", DIR_ANSWER_SESSION, "ts2"}, /* netbios\user of a DNS domain */
                {"CORPORAT\\", DIR_ANSWER_PLACED, NULL},   /* names nobody here */
                {"", DIR_ANSWER_PLACED, NULL},             /* does not parse: nobody */
                {NULL, DIR_ANSWER_PLACED, NULL},
        };
        struct fixture *f = *state;
        struct dir_answer a;

        assert_int_equal(reg(f->s, "ts1", 100, 0, "b1"), 0);
        assert_int_equal(reg(f->s, "ts2", 100, 0, "b2"), 0);
        /* xrdp reports the plain name, Windows DOMAIN\user. */
        assert_int_equal(logon(f->s, "ts1", 1, "CORP\\RdpUser1"), 0);
        assert_int_equal(logon(f->s, "ts1", 2, "averylongusername01"), 0);
        assert_int_equal(logon(f->s, "ts2", 3, "averylongusername02"), 0);
        assert_int_equal(logon(f->s, "ts2", 4, "uniquelongname@corpo.example"), 0);
        assert_int_equal(ev(f->s, "ts1", DIR_EVENT_DISCONNECT, 1, NULL, NULL), 0);

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                print_message("%s\n", cases[i].cookie ?: "(null)");
                assert_int_equal(dir_logon_query(f->s, cases[i].cookie, "ts2", DIR_POLICY_ONE_SESSION, &a),
                                 0);
                assert_int_equal(a.kind, cases[i].kind);
                if (cases[i].node)
                        assert_string_equal(a.node, cases[i].node);
                if (a.kind == DIR_ANSWER_AMBIGUOUS)
                        assert_string_equal(a.node, "");
        }

        assert_int_equal(dir_logon_query(f->s, "corp\\rdpuser1", "ts2", DIR_POLICY_ONE_SESSION, &a), 0);
        assert_int_equal(a.kind, DIR_ANSWER_SESSION);
        assert_int_equal(a.state, DIR_SESSION_DISCONNECTED);
        assert_int_equal(a.node_session, 1);
        assert_int_equal(a.rdp_port, 3389);
        assert_string_equal(a.addresses, "10.0.0.1 fd00::1");
        assert_true(a.redirect);
        assert_int_equal(dir_logon_query(f->s, "rdpuser1", "ts1", DIR_POLICY_ONE_SESSION, &a), 0);
        assert_false(a.redirect);

        /* Two different users with the same name in different domains:
         * "bob" could be either, so no answer. */
        assert_int_equal(logon(f->s, "ts1", 10, "CORP\\bob"), 0);
        assert_int_equal(logon(f->s, "ts2", 11, "OTHER\\bob"), 0);
        assert_int_equal(dir_logon_query(f->s, "bob", NULL, DIR_POLICY_ONE_SESSION, &a), 0);
        assert_int_equal(a.kind, DIR_ANSWER_AMBIGUOUS);
        assert_int_equal(dir_logon_query(f->s, "other\\BOB", NULL, DIR_POLICY_ONE_SESSION, &a), 0);
        assert_int_equal(a.kind, DIR_ANSWER_SESSION);
        assert_string_equal(a.node, "ts2");

        assert_int_equal(dir_logon_query(f->s, "bob", "nosuchnode", DIR_POLICY_ONE_SESSION, &a), -ENOENT);
        assert_int_equal(dir_logon_query(f->s, "bob", NULL, (enum dir_policy)5, &a), -EINVAL);
}

static void test_one_session_policy_and_allow_multiple(void **state) {
        struct fixture *f = *state;
        struct dir_answer a;

        assert_int_equal(reg(f->s, "ts1", 100, 0, "b1"), 0);
        assert_int_equal(reg(f->s, "ts2", 100, 0, "b2"), 0);
        assert_int_equal(logon(f->s, "ts1", 1, "alice"), 0);

        /* One session per user: alice is sent to her active session, even
         * though ts2 is emptier and she entered at ts2. */
        assert_int_equal(dir_logon_query(f->s, "alice", "ts2", DIR_POLICY_ONE_SESSION, &a), 0);
        assert_int_equal(a.kind, DIR_ANSWER_SESSION);
        assert_string_equal(a.node, "ts1");
        assert_int_equal(a.state, DIR_SESSION_ACTIVE);
        assert_true(a.redirect);

        /* Several allowed: an active session does not call her back... */
        assert_int_equal(dir_logon_query(f->s, "alice", "ts2", DIR_POLICY_ALLOW_MULTIPLE, &a), 0);
        assert_int_equal(a.kind, DIR_ANSWER_PLACED);
        assert_string_equal(a.node, "ts2");
        assert_int_equal(logon(f->s, "ts2", 1, "alice"), 0);

        /* ...a disconnected one does, under either policy, and it wins over
         * her active one. */
        assert_int_equal(ev(f->s, "ts1", DIR_EVENT_DISCONNECT, 1, NULL, NULL), 0);
        assert_int_equal(dir_logon_query(f->s, "alice", "ts2", DIR_POLICY_ALLOW_MULTIPLE, &a), 0);
        assert_int_equal(a.kind, DIR_ANSWER_SESSION);
        assert_string_equal(a.node, "ts1");
        assert_int_equal(dir_logon_query(f->s, "alice", "ts2", DIR_POLICY_ONE_SESSION, &a), 0);
        assert_int_equal(a.kind, DIR_ANSWER_SESSION);
        assert_string_equal(a.node, "ts1");
        assert_int_equal(a.state, DIR_SESSION_DISCONNECTED);

        /* Both active: the one that changed last. */
        tsf_fake_clock_advance(&f->clock, USEC_PER_SEC);
        assert_int_equal(ev(f->s, "ts1", DIR_EVENT_RECONNECT, 1, NULL, NULL), 0);
        assert_int_equal(dir_logon_query(f->s, "alice", NULL, DIR_POLICY_ONE_SESSION, &a), 0);
        assert_int_equal(a.kind, DIR_ANSWER_SESSION);
        assert_string_equal(a.node, "ts1");

        /* The host reports what happened; the policy steers, it does not
         * refuse facts: a second logon is recorded. */
        assert_int_equal(logon(f->s, "ts1", 2, "alice"), 0);
}

/* ---- placement ----------------------------------------------------------- */

static void test_placement_by_weight(void **state) {
        struct fixture *f = *state;
        unsigned count[3] = {};
        char user[32];
        struct dir_answer a;
        struct dir_node n;

        assert_int_equal(reg(f->s, "ts1", 100, 0, "b1"), 0);
        assert_int_equal(reg(f->s, "ts2", 200, 0, "b2"), 0);
        assert_int_equal(reg(f->s, "ts3", 100, 0, "b3"), 0);
        assert_int_equal(dir_node_set_drain(f->s, "ts3", DIR_DRAIN_DISABLED), 0);

        assert_int_equal(dir_store_batch_begin(f->s), 0);
        for (unsigned i = 0; i < 3000; i++) {
                snprintf(user, sizeof(user), "user%u", i);
                assert_int_equal(dir_logon_query(f->s, user, NULL, DIR_POLICY_ONE_SESSION, &a), 0);
                assert_int_equal(a.kind, DIR_ANSWER_PLACED);
                assert_true(a.reserved_until > tsf_now_realtime());
                count[a.node[2] - '1']++;
                /* Every other placement is followed by its logon; the rest
                 * are only pending. Both count. */
                if (i % 2 == 0)
                        assert_int_equal(logon(f->s, a.node, i, user), 0);
        }
        assert_int_equal(dir_store_batch_commit(f->s), 0);
        print_message("weights 100/200: %u/%u placements\n", count[0], count[1]);
        assert_int_equal(count[0], 1000);
        assert_int_equal(count[1], 2000);
        assert_int_equal(count[2], 0);
        assert_int_equal(dir_node_get(f->s, "ts2", &n), 0);
        assert_int_equal(n.sessions, 1000);
}

static void test_drain_states(void **state) {
        struct fixture *f = *state;
        struct dir_answer a;
        struct dir_node n;
        uint64_t rev;

        assert_int_equal(reg(f->s, "ts1", 100, 0, "b1"), 0);
        assert_int_equal(reg(f->s, "ts2", 100, 0, "b2"), 0);
        assert_int_equal(logon(f->s, "ts1", 1, "alice"), 0);
        assert_int_equal(ev(f->s, "ts1", DIR_EVENT_DISCONNECT, 1, NULL, NULL), 0);
        assert_int_equal(logon(f->s, "ts2", 1, "bob"), 0);
        assert_int_equal(logon(f->s, "ts2", 2, "carol"), 0);

        for (enum dir_drain d = DIR_DRAIN_DISABLED; d <= DIR_DRAIN_UNTIL_RESTART; d++) {
                rev = dir_store_revision(f->s);
                assert_int_equal(dir_node_set_drain(f->s, "ts1", d), 0);
                assert_true(dir_store_revision(f->s) > rev);
                rev = dir_store_revision(f->s);
                assert_int_equal(dir_node_set_drain(f->s, "ts1", d), 0);
                assert_int_equal(dir_store_revision(f->s), rev); /* no change */

                /* ts1 is emptier but takes no new sessions... */
                for (int i = 0; i < 5; i++) {
                        char user[32];

                        snprintf(user, sizeof(user), "new%d-%d", (int)d, i);
                        assert_int_equal(dir_logon_query(f->s, user, "ts1", DIR_POLICY_ONE_SESSION, &a), 0);
                        assert_int_equal(a.kind, DIR_ANSWER_PLACED);
                        assert_string_equal(a.node, "ts2");
                }
                /* ...but alice still reconnects there. */
                assert_int_equal(dir_logon_query(f->s, "alice", "ts2", DIR_POLICY_ONE_SESSION, &a), 0);
                assert_int_equal(a.kind, DIR_ANSWER_SESSION);
                assert_string_equal(a.node, "ts1");
                assert_int_equal(ev(f->s, "ts1", DIR_EVENT_RECONNECT, 1, NULL, NULL), 0);
                assert_int_equal(ev(f->s, "ts1", DIR_EVENT_DISCONNECT, 1, NULL, NULL), 0);
        }

        /* Only node left, and drained: nobody new is placed. */
        assert_int_equal(dir_node_set_drain(f->s, "ts2", DIR_DRAIN_DISABLED), 0);
        assert_int_equal(dir_logon_query(f->s, "dave", NULL, DIR_POLICY_ONE_SESSION, &a), 0);
        assert_int_equal(a.kind, DIR_ANSWER_NO_NODE);
        assert_int_equal(dir_node_set_drain(f->s, "ts2", DIR_DRAIN_ENABLED), 0);

        /* Re-registering after an agent restart (same boot) keeps the drain
         * and alice's session; a reboot clears drain-until-restart. */
        assert_int_equal(reg(f->s, "ts1", 100, 0, "b1"), 0);
        assert_int_equal(dir_node_get(f->s, "ts1", &n), 0);
        assert_int_equal(n.drain, DIR_DRAIN_UNTIL_RESTART);
        assert_int_equal(state_of(f->s, "ts1", 1), DIR_SESSION_DISCONNECTED);
        assert_int_equal(reg(f->s, "ts1", 100, 0, "b1-rebooted"), 0);
        assert_int_equal(dir_node_get(f->s, "ts1", &n), 0);
        assert_int_equal(n.drain, DIR_DRAIN_ENABLED);
        assert_string_equal(n.boot_id, "b1-rebooted");
        assert_int_equal(dir_logon_query(f->s, "erin", NULL, DIR_POLICY_ONE_SESSION, &a), 0);
        assert_string_equal(a.node, "ts1");

        /* Disabled is the operator's and survives a reboot. */
        assert_int_equal(dir_node_set_drain(f->s, "ts1", DIR_DRAIN_DISABLED), 0);
        assert_int_equal(reg(f->s, "ts1", 100, 0, "b1-again"), 0);
        assert_int_equal(dir_node_get(f->s, "ts1", &n), 0);
        assert_int_equal(n.drain, DIR_DRAIN_DISABLED);
        assert_string_equal(dir_drain_to_string(n.drain), "disabled");
}

static void test_session_limit(void **state) {
        struct fixture *f = *state;
        struct dir_answer a;

        assert_int_equal(reg(f->s, "ts1", 1000, 2, "b1"), 0); /* heavy but small */
        assert_int_equal(reg(f->s, "ts2", 1, 0, "b2"), 0);
        assert_int_equal(logon(f->s, "ts1", 1, "alice"), 0);
        assert_int_equal(logon(f->s, "ts1", 2, "bob"), 0);
        assert_int_equal(ev(f->s, "ts1", DIR_EVENT_DISCONNECT, 2, NULL, NULL), 0);

        /* Disconnected sessions hold their slot. */
        assert_int_equal(dir_logon_query(f->s, "carol", NULL, DIR_POLICY_ONE_SESSION, &a), 0);
        assert_int_equal(a.kind, DIR_ANSWER_PLACED);
        assert_string_equal(a.node, "ts2");
        /* A full node still takes its own users back. */
        assert_int_equal(dir_logon_query(f->s, "bob", NULL, DIR_POLICY_ONE_SESSION, &a), 0);
        assert_int_equal(a.kind, DIR_ANSWER_SESSION);
        assert_string_equal(a.node, "ts1");

        /* A logoff frees the slot. */
        assert_int_equal(ev(f->s, "ts1", DIR_EVENT_LOGOFF, 2, NULL, NULL), 0);
        assert_int_equal(dir_logon_query(f->s, "dave", NULL, DIR_POLICY_ONE_SESSION, &a), 0);
        assert_string_equal(a.node, "ts1");
        /* Held by dave's pending logon now: ts1 is full again. */
        assert_int_equal(dir_logon_query(f->s, "erin", NULL, DIR_POLICY_ONE_SESSION, &a), 0);
        assert_string_equal(a.node, "ts2");

        assert_int_equal(dir_node_set_drain(f->s, "ts2", DIR_DRAIN_DISABLED), 0);
        assert_int_equal(dir_logon_query(f->s, "frank", NULL, DIR_POLICY_ONE_SESSION, &a), 0);
        assert_int_equal(a.kind, DIR_ANSWER_NO_NODE);
}

static void test_pending_reservations(void **state) {
        struct fixture *f = *state;
        struct dir_answer a, b;
        struct dir_node n;

        dir_store_set_pending_ttl(f->s, 20 * USEC_PER_SEC);
        assert_int_equal(reg(f->s, "ts1", 100, 0, "b1"), 0);
        assert_int_equal(reg(f->s, "ts2", 100, 0, "b2"), 0);

        /* Without logons yet, placements still spread: each holds a slot. */
        assert_int_equal(dir_logon_query(f->s, "alice", NULL, DIR_POLICY_ONE_SESSION, &a), 0);
        assert_int_equal(dir_logon_query(f->s, "bob", NULL, DIR_POLICY_ONE_SESSION, &b), 0);
        assert_int_equal(a.kind, DIR_ANSWER_PLACED);
        assert_int_equal(b.kind, DIR_ANSWER_PLACED);
        assert_string_not_equal(a.node, b.node);
        assert_int_equal(a.reserved_until, T0 + 20 * USEC_PER_SEC);

        /* Asking again before the logon: the same node, no second slot. */
        tsf_fake_clock_advance(&f->clock, 5 * USEC_PER_SEC);
        for (int i = 0; i < 3; i++) {
                struct dir_answer again;

                assert_int_equal(dir_logon_query(f->s, "ALICE", NULL, DIR_POLICY_ONE_SESSION, &again), 0);
                assert_string_equal(again.node, a.node);
                assert_int_equal(again.reserved_until, a.reserved_until);
        }
        /* Both nodes hold one; the next two go one each. */
        assert_int_equal(dir_logon_query(f->s, "carol", NULL, DIR_POLICY_ONE_SESSION, &a), 0);
        assert_int_equal(dir_logon_query(f->s, "dave", NULL, DIR_POLICY_ONE_SESSION, &b), 0);
        assert_string_not_equal(a.node, b.node);

        /* alice's logon turns her reservation into a session: ts? keeps one
         * slot, not two. */
        assert_int_equal(dir_logon_query(f->s, "alice", NULL, DIR_POLICY_ONE_SESSION, &a), 0);
        assert_int_equal(logon(f->s, a.node, 1, "CORP\\alice"), 0);
        assert_int_equal(dir_node_get(f->s, a.node, &n), 0);
        assert_int_equal(n.sessions, 1);

        /* Reservations lapse: after the TTL only real sessions count. ts1
         * or ts2 has alice; everything else expired, so the other node
         * gets the next two placements' first. */
        tsf_fake_clock_advance(&f->clock, 30 * USEC_PER_SEC);
        assert_int_equal(dir_logon_query(f->s, "erin", NULL, DIR_POLICY_ONE_SESSION, &b), 0);
        assert_string_not_equal(b.node, a.node);
        assert_int_equal(dir_logon_query(f->s, "frank", NULL, DIR_POLICY_ONE_SESSION, &b), 0);
        /* 1 session + 0 pending vs 0 sessions + 1 pending: a tie; ts1 by name. */
        assert_string_equal(b.node, "ts1");

        /* Anonymous placements (no cookie) hold slots too, and a logon on
         * their node consumes one. */
        tsf_fake_clock_advance(&f->clock, 30 * USEC_PER_SEC);
        assert_int_equal(dir_logon_query(f->s, NULL, NULL, DIR_POLICY_ONE_SESSION, &a), 0);
        assert_int_equal(dir_logon_query(f->s, NULL, NULL, DIR_POLICY_ONE_SESSION, &b), 0);
        assert_string_not_equal(a.node, b.node);
}

/* ---- change feed --------------------------------------------------------- */

struct seen {
        unsigned n;
        uint64_t last;
        uint64_t last_session_id;
        char log[64][512];
};

static int collect(const struct dir_change *c, void *userdata) {
        struct seen *s = userdata;

        assert_true(c->revision > s->last); /* strictly in order */
        s->last = c->revision;
        if (c->kind != DIR_CHANGE_NODE)
                s->last_session_id = c->session->id;
        if (s->n < ELEMENTSOF(s->log)) {
                if (c->kind == DIR_CHANGE_NODE)
                        snprintf(s->log[s->n], sizeof(s->log[0]), "node %s %s", c->node->name,
                                 c->node->up ? "up" : "down");
                else
                        snprintf(s->log[s->n], sizeof(s->log[0]), "%s %s/%u %s",
                                 c->kind == DIR_CHANGE_SESSION ? "session" : "gone", c->session->node,
                                 c->session->node_session,
                                 c->kind == DIR_CHANGE_SESSION
                                         ? dir_session_state_to_string(c->session->state)
                                         : c->session->user);
        }
        s->n++;
        return 0;
}

static int stop_after_one(const struct dir_change *c, void *userdata) {
        return -ECANCELED;
}

static void test_change_feed(void **state) {
        struct fixture *f = *state;
        struct seen all = {}, page = {}, tail = {}, snap = {};
        uint64_t r0, r1, rsnap;
        int n;

        assert_int_equal(reg(f->s, "ts1", 100, 0, "b1"), 0);
        assert_int_equal(logon(f->s, "ts1", 1, "alice"), 0);
        assert_int_equal(logon(f->s, "ts1", 2, "bob"), 0);
        r0 = dir_store_revision(f->s);
        assert_int_equal(ev(f->s, "ts1", DIR_EVENT_DISCONNECT, 1, NULL, NULL), 0);
        assert_int_equal(ev(f->s, "ts1", DIR_EVENT_LOGOFF, 2, NULL, NULL), 0);
        assert_int_equal(logon(f->s, "ts1", 3, "carol"), 0);
        r1 = dir_store_revision(f->s);

        /* From the start: the node, alice (as she is now), bob's tombstone,
         * carol. Folded: alice's logon is not repeated. */
        n = dir_changes_since(f->s, 0, 100, collect, &all);
        assert_int_equal(n, 4);
        assert_string_equal(all.log[0], "node ts1 up");
        assert_string_equal(all.log[1], "session ts1/1 disconnected");
        assert_string_equal(all.log[2], "gone ts1/2 bob");
        assert_string_equal(all.log[3], "session ts1/3 active");
        assert_int_equal(all.last, r1);

        /* Resuming from r0 sees exactly what happened after it, including
         * the deletion. */
        n = dir_changes_since(f->s, r0, 100, collect, &tail);
        assert_int_equal(n, 3);
        assert_string_equal(tail.log[0], "session ts1/1 disconnected");
        assert_string_equal(tail.log[1], "gone ts1/2 bob");
        /* Nothing new after the newest. */
        assert_int_equal(dir_changes_since(f->s, r1, 100, collect, &page), 0);

        /* Paging: max per call, resumable from the last revision seen. */
        page = (struct seen){};
        while ((n = dir_changes_since(f->s, page.last, 1, collect, &page)) > 0)
                assert_int_equal(n, 1);
        assert_int_equal(n, 0);
        assert_int_equal(page.n, 4);
        assert_string_equal(page.log[2], "gone ts1/2 bob");

        /* A callback can stop the feed. */
        assert_int_equal(dir_changes_since(f->s, 0, 100, stop_after_one, NULL), -ECANCELED);
        assert_int_equal(dir_changes_since(f->s, 0, 0, collect, &page), -EINVAL);
        /* From a future the store never had: resync. */
        assert_int_equal(dir_changes_since(f->s, r1 + 1, 10, collect, &page), -ESTALE);

        /* Compaction forgets tombstones; clients behind it must resync. */
        assert_int_equal(dir_changes_compact(f->s, r1 + 1), -EINVAL);
        assert_int_equal(dir_changes_compact(f->s, r1), 1);
        assert_int_equal(dir_changes_since(f->s, r0, 10, collect, &page), -ESTALE);
        assert_int_equal(dir_changes_since(f->s, 0, 10, collect, &page), -ESTALE);
        assert_int_equal(dir_changes_compact(f->s, r0), 0); /* already */

        /* The resync: a snapshot and the revision to resume from. */
        n = dir_snapshot(f->s, 0, 0, collect, &snap, &rsnap);
        assert_int_equal(n, 2); /* sessions; the node comes too */
        assert_int_equal(snap.n, 3);
        assert_int_equal(rsnap, r1);
        assert_string_equal(snap.log[0], "node ts1 up");
        {
                /* Paged: nodes with the first page only, then by session id. */
                struct seen p1 = {}, p2 = {}, p3 = {};
                uint64_t rp;

                assert_int_equal(dir_snapshot(f->s, 0, 1, collect, &p1, &rp), 1);
                assert_int_equal(p1.n, 2);
                assert_string_equal(p1.log[0], snap.log[0]);
                assert_string_equal(p1.log[1], snap.log[1]);
                assert_int_equal(dir_snapshot(f->s, p1.last_session_id, 1, collect, &p2, &rp), 1);
                assert_int_equal(p2.n, 1);
                assert_string_equal(p2.log[0], snap.log[2]);
                assert_int_equal(dir_snapshot(f->s, p2.last_session_id, 1, collect, &p3, &rp), 0);
                assert_int_equal(p3.n, 0);
                assert_int_equal(rp, r1);
        }
        assert_int_equal(ev(f->s, "ts1", DIR_EVENT_LOGOFF, 3, NULL, NULL), 0);
        tail = (struct seen){};
        assert_int_equal(dir_changes_since(f->s, rsnap, 10, collect, &tail), 1);
        assert_string_equal(tail.log[0], "gone ts1/3 carol");

        /* The horizon survives a restart. */
        reopen(f);
        assert_int_equal(dir_changes_since(f->s, r0, 10, collect, &page), -ESTALE);
        tail = (struct seen){};
        assert_int_equal(dir_changes_since(f->s, r1, 10, collect, &tail), 1);
}

/* ---- batches and durability ---------------------------------------------- */

static void test_batch(void **state) {
        struct fixture *f = *state;
        struct dir_session x;
        uint64_t rev;

        assert_int_equal(reg(f->s, "ts1", 100, 0, "b1"), 0);
        rev = dir_store_revision(f->s);

        /* A failing operation inside a batch undoes only itself. */
        assert_int_equal(dir_store_batch_begin(f->s), 0);
        assert_int_equal(dir_store_batch_begin(f->s), -EINVAL);
        assert_int_equal(logon(f->s, "ts1", 1, "alice"), 0);
        assert_int_equal(logon(f->s, "ts1", 1, "alice"), -EINVAL);
        assert_int_equal(logon(f->s, "ts1", 2, "bob"), 0);
        assert_int_equal(dir_store_batch_commit(f->s), 0);
        assert_int_equal(dir_store_revision(f->s), rev + 2);
        assert_int_equal(dir_session_get(f->s, "ts1", 2, &x), 0);
        assert_int_equal(x.revision, rev + 2);

        /* An aborted batch leaves nothing, revision included. */
        assert_int_equal(dir_store_batch_begin(f->s), 0);
        assert_int_equal(logon(f->s, "ts1", 3, "carol"), 0);
        assert_int_equal(dir_store_batch_abort(f->s), 0);
        assert_int_equal(dir_store_revision(f->s), rev + 2);
        assert_int_equal(dir_session_get(f->s, "ts1", 3, &x), -ENOENT);
        assert_int_equal(logon(f->s, "ts1", 3, "carol"), 0);
        assert_int_equal(dir_store_revision(f->s), rev + 3);

        /* A batch left open at close is rolled back. */
        assert_int_equal(dir_store_batch_begin(f->s), 0);
        assert_int_equal(logon(f->s, "ts1", 4, "dave"), 0);
        reopen(f);
        assert_int_equal(dir_session_get(f->s, "ts1", 4, &x), -ENOENT);
        assert_int_equal(dir_store_revision(f->s), rev + 3);
}

struct image {
        unsigned n;
        char rows[16][1600];
};

static int image_add(const struct dir_change *c, void *userdata) {
        struct image *im = userdata;

        assert_true(im->n < ELEMENTSOF(im->rows));
        if (c->kind == DIR_CHANGE_NODE)
                snprintf(im->rows[im->n++], sizeof(im->rows[0]), "%" PRIu64 " node %s %s w%u l%u %s %d",
                         c->revision, c->node->name, c->node->addresses, c->node->weight,
                         c->node->session_limit, dir_drain_to_string(c->node->drain), c->node->up);
        else
                snprintf(im->rows[im->n++], sizeof(im->rows[0]),
                         "%" PRIu64 " session %" PRIu64 " %s/%u %s %s %s %s %" PRIu64 " %" PRIu64,
                         c->revision, c->session->id, c->session->node, c->session->node_session,
                         c->session->user, dir_session_state_to_string(c->session->state),
                         c->session->device, c->session->client_addr, c->session->logon_time,
                         c->session->state_time);
        return 0;
}

static void test_reopen_loses_nothing(void **state) {
        struct fixture *f = *state;
        struct image before = {}, after = {};
        uint64_t rb, ra;

        assert_int_equal(reg(f->s, "ts1", 100, 5, "b1"), 0);
        assert_int_equal(reg(f->s, "ts2", 300, 0, "b2"), 0);
        assert_int_equal(dir_node_set_drain(f->s, "ts2", DIR_DRAIN_UNTIL_RESTART), 0);
        assert_int_equal(logon(f->s, "ts1", 1, "CORP\\alice"), 0);
        tsf_fake_clock_advance(&f->clock, USEC_PER_SEC);
        assert_int_equal(logon(f->s, "ts2", 1, "bob@corp.example"), 0);
        assert_int_equal(ev(f->s, "ts2", DIR_EVENT_DISCONNECT, 1, NULL, NULL), 0);
        assert_int_equal(logon(f->s, "ts1", 2, "carol"), 0);
        assert_int_equal(ev(f->s, "ts1", DIR_EVENT_LOGOFF, 2, NULL, NULL), 0);

        assert_int_equal(dir_snapshot(f->s, 0, 0, image_add, &before, &rb), 2);
        reopen(f);
        assert_int_equal(dir_snapshot(f->s, 0, 0, image_add, &after, &ra), 2);
        assert_int_equal(ra, rb);
        assert_int_equal(dir_store_revision(f->s), rb);
        for (unsigned i = 0; i < before.n; i++)
                assert_string_equal(before.rows[i], after.rows[i]);

        /* Revisions keep counting from where they were. */
        assert_int_equal(logon(f->s, "ts1", 3, "dave"), 0);
        assert_int_equal(dir_store_revision(f->s), rb + 1);
        /* The deletion survived too. */
        struct seen feed = {};
        assert_int_equal(dir_changes_since(f->s, 0, 100, collect, &feed), 6);
}

/* A writer killed with SIGKILL (no close, no checkpoint): every event it
 * had been told was stored is there after reopening. */
static void test_kill9_loses_nothing_acknowledged(void **state) {
        struct fixture *f = *state;
        unsigned acked = 0, got;
        int fds[2], status;
        pid_t pid;
        char user[16];

        f->s = dir_store_close(f->s);
        assert_int_equal(pipe(fds), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct dir_store *s = NULL;

                close(fds[0]);
                if (dir_store_open(f->path, &s) < 0 || reg(s, "ts1", 100, 0, "b1") < 0)
                        _exit(1);
                for (unsigned i = 0; i < 200; i++) {
                        snprintf(user, sizeof(user), "u%u", i);
                        if (logon(s, "ts1", i, user) < 0)
                                _exit(1);
                        /* Acknowledge only after the commit returned. */
                        if (write(fds[1], &i, sizeof(i)) != sizeof(i))
                                _exit(1);
                }
                raise(SIGKILL);
                _exit(2);
        }
        close(fds[1]);
        while (read(fds[0], &got, sizeof(got)) == sizeof(got))
                acked = got + 1;
        close(fds[0]);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status));
        assert_int_equal(acked, 200);

        assert_int_equal(dir_store_open(f->path, &f->s), 0);
        for (unsigned i = 0; i < acked; i++)
                assert_int_equal(state_of(f->s, "ts1", i), DIR_SESSION_ACTIVE);
        struct dir_node n;
        assert_int_equal(dir_node_get(f->s, "ts1", &n), 0);
        assert_int_equal(n.sessions, acked);
        assert_int_equal(dir_store_revision(f->s), acked + 1);
}

/* ---- scale --------------------------------------------------------------- */

static double elapsed_ms(const struct timespec *a, const struct timespec *b) {
        return (double)(b->tv_sec - a->tv_sec) * 1e3 + (double)(b->tv_nsec - a->tv_nsec) / 1e6;
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *)a, y = *(const double *)b;
        return x < y ? -1 : x > y;
}

static void test_scale_100k(void **state) {
        enum { SESSIONS = 100000, QUERIES = 20000 };
        struct fixture *f = *state;
        struct timespec t0, t1;
        struct dir_answer a;
        char user[64];
        double *lat;

        for (int i = 0; i < 10; i++) {
                char name[16];

                snprintf(name, sizeof(name), "ts%d", i);
                assert_int_equal(reg(f->s, name, 100, 0, "boot"), 0);
        }
        clock_gettime(CLOCK_MONOTONIC, &t0);
        assert_int_equal(dir_store_batch_begin(f->s), 0);
        for (unsigned i = 0; i < SESSIONS; i++) {
                char node[8];

                snprintf(node, sizeof(node), "ts%u", i % 10);
                snprintf(user, sizeof(user), "CORP\\user%06u", i);
                assert_int_equal(logon(f->s, node, i, user), 0);
        }
        assert_int_equal(dir_store_batch_commit(f->s), 0);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        print_message("scale: %d sessions inserted in one transaction in %.0f ms\n", SESSIONS,
                      elapsed_ms(&t0, &t1));

        lat = calloc(QUERIES, sizeof(*lat));
        assert_non_null(lat);
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (unsigned i = 0; i < QUERIES; i++) {
                struct timespec q0, q1;
                unsigned u = (i * 7919u) % SESSIONS;

                /* Mix the forms a cookie arrives in. */
                if (i % 3 == 0)
                        snprintf(user, sizeof(user), "user%06u", u);
                else if (i % 3 == 1)
                        snprintf(user, sizeof(user), "CORP\\USER%06u", u);
                else
                        snprintf(user, sizeof(user), "user%06u@corp.example", u);
                clock_gettime(CLOCK_MONOTONIC, &q0);
                assert_int_equal(dir_logon_query(f->s, user, "ts0", DIR_POLICY_ONE_SESSION, &a), 0);
                clock_gettime(CLOCK_MONOTONIC, &q1);
                lat[i] = elapsed_ms(&q0, &q1);
                assert_int_equal(a.kind, DIR_ANSWER_SESSION);
                assert_int_equal(a.node_session, u);
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        qsort(lat, QUERIES, sizeof(*lat), cmp_double);
        print_message("scale: %d logon queries in %.0f ms (%.0f/s), p50 %.3f ms, p99 %.3f ms "
                      "(ASan build; not asserted)\n",
                      QUERIES, elapsed_ms(&t0, &t1), QUERIES / (elapsed_ms(&t0, &t1) / 1e3),
                      lat[QUERIES / 2], lat[QUERIES * 99 / 100]);

        /* Truncated cookies take the prefix path: "user00001" is the start
         * of ten users, so it is ambiguous; a placement for nobody costs a
         * node scan. */
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (unsigned i = 0; i < 1000; i++) {
                assert_int_equal(dir_logon_query(f->s, "user00001", NULL, DIR_POLICY_ONE_SESSION, &a), 0);
                assert_int_equal(a.kind, DIR_ANSWER_AMBIGUOUS);
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        print_message("scale: truncated-cookie query %.3f ms each\n", elapsed_ms(&t0, &t1) / 1000);
        free(lat);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_migrate_from_empty_and_reopen, setup, teardown),
                cmocka_unit_test_setup_teardown(test_refuses_newer_and_foreign, setup, teardown),
                cmocka_unit_test_setup_teardown(test_node_register_validation, setup, teardown),
                cmocka_unit_test_setup_teardown(test_heartbeat_expiry_marks_sessions_lost, setup, teardown),
                cmocka_unit_test_setup_teardown(test_session_state_machine, setup, teardown),
                cmocka_unit_test_setup_teardown(test_node_cannot_touch_other_nodes_sessions, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_logon_query_finds_user_forms, setup, teardown),
                cmocka_unit_test_setup_teardown(test_one_session_policy_and_allow_multiple, setup, teardown),
                cmocka_unit_test_setup_teardown(test_placement_by_weight, setup, teardown),
                cmocka_unit_test_setup_teardown(test_drain_states, setup, teardown),
                cmocka_unit_test_setup_teardown(test_session_limit, setup, teardown),
                cmocka_unit_test_setup_teardown(test_pending_reservations, setup, teardown),
                cmocka_unit_test_setup_teardown(test_change_feed, setup, teardown),
                cmocka_unit_test_setup_teardown(test_batch, setup, teardown),
                cmocka_unit_test_setup_teardown(test_reopen_loses_nothing, setup, teardown),
                cmocka_unit_test_setup_teardown(test_kill9_loses_nothing_acknowledged, setup, teardown),
                cmocka_unit_test_setup_teardown(test_scale_100k, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
