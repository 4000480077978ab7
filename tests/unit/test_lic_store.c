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
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <sqlite3.h>

#include "agent/licensing/store.h"
#include "tsfarm/clock.h"
#include "tsfarm/macro.h"

#define T0 (1795000000ULL * USEC_PER_SEC)

struct fixture {
        char dir[64];
        char path[96];
        struct tsf_fake_clock clock;
        uint64_t rng; /* splitmix64 state */
        struct lic_store *s;
};

/* splitmix64: a seeded source, so a failing run can be repeated. */
static int test_random(void *buf, size_t n, void *userdata) {
        uint64_t *state = userdata;
        uint8_t *p = buf;

        while (n > 0) {
                uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
                size_t k = MIN(n, sizeof(z));

                z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
                z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
                z ^= z >> 31;
                memcpy(p, &z, k);
                p += k;
                n -= k;
        }
        return 0;
}

/* A broken source: always the same bytes. */
static int stuck_random(void *buf, size_t n, void *userdata) {
        memset(buf, 0x5a, n);
        return 0;
}

static int failing_random(void *buf, size_t n, void *userdata) {
        return -EIO;
}

static void store_open(struct fixture *f) {
        assert_int_equal(lic_store_open(f->path, &f->s), 0);
        lic_store_set_random(f->s, test_random, &f->rng);
}

static int setup(void **state) {
        struct fixture *f = calloc(1, sizeof(*f));

        assert_non_null(f);
        snprintf(f->dir, sizeof(f->dir), "%s/tsfarm-lic-XXXXXX", getenv("TMPDIR") ?: "/tmp");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->path, sizeof(f->path), "%s/licensing.db", f->dir);
        tsf_fake_clock_init(&f->clock, T0, 1000 * USEC_PER_SEC);
        tsf_clock_install(&f->clock.base);
        f->rng = 20261123;
        store_open(f);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        struct fixture *f = *state;
        char cmd[128];

        lic_store_close(f->s);
        tsf_clock_install(NULL);
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
        assert_int_equal(system(cmd), 0);
        free(f);
        return 0;
}

static void reopen(struct fixture *f) {
        f->s = lic_store_close(f->s);
        store_open(f);
}

static void clock_set(struct fixture *f, usec_t t) {
        assert_true(t >= f->clock.realtime);
        tsf_fake_clock_advance(&f->clock, t - f->clock.realtime);
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

static void sql_text(const char *path, const char *sql, char *buf, size_t size) {
        sqlite3 *db = NULL;
        sqlite3_stmt *st = NULL;

        assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        snprintf(buf, size, "%s", (const char *)sqlite3_column_text(st, 0) ?: "");
        sqlite3_finalize(st);
        sqlite3_close(db);
}

static void sql_exec(const char *path, const char *sql) {
        sqlite3 *db = NULL;

        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
        sqlite3_close(db);
}

/* ---- devices ------------------------------------------------------------- */

struct dev {
        uint8_t hw[20];
        char name[32];
        char user[32];
        struct lic_device d;
};

static void dev_init(struct dev *d, unsigned i) {
        memset(d, 0, sizeof(*d));
        snprintf((char *)d->hw, sizeof(d->hw), "hwid-%08u-xxxxx", i);
        snprintf(d->name, sizeof(d->name), "PC-%04u", i);
        snprintf(d->user, sizeof(d->user), "CORP\\user%u", i);
        d->d = (struct lic_device){
                .hardware_id = d->hw,
                .hardware_id_len = sizeof(d->hw),
                .device_name = d->name,
                .user_name = d->user,
        };
}

static void check(struct lic_store *s) {
        char bad[LIC_PACK_ID_MAX + 1] = "";

        assert_int_equal(lic_store_check(s, bad, sizeof(bad)), 0);
}

/* Temporary token, validation, CAL: the whole first-contact flow. Returns
 * lic_cal_issue()'s answer. */
static int get_cal(struct lic_store *s, struct dev *d, const char *version, struct lic_token *ret) {
        struct lic_token tmp;
        int r;

        r = lic_temporary_issue(s, &d->d, NULL, NULL, &tmp);
        assert_true(r >= 0);
        r = lic_temporary_validate(s, tmp.token_id, d->hw, sizeof(d->hw), NULL);
        assert_true(r >= 0);
        return lic_cal_issue(s, &d->d, version, tmp.token_id, NULL, ret, NULL);
}

static uint32_t available(struct lic_store *s, const char *pack) {
        struct lic_pack p;

        assert_int_equal(lic_pack_get(s, pack, &p), 0);
        assert_int_equal(p.available + p.issued, p.count);
        return p.available;
}

/* ---- snapshots: "changes nothing" is checked byte for byte --------------- */

static int audit_dump(const struct lic_audit *a, void *userdata) {
        FILE *f = userdata;

        fprintf(f, "%" PRIu64 " %" PRIu64 " %s %d %s|%s|%s|%s\n", a->seq, a->time,
                lic_action_to_string(a->action), a->has_token, a->pack_id, a->device, a->user, a->detail);
        return 0;
}

static char *snapshot(struct lic_store *s) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);

        assert_non_null(f);
        assert_int_equal(lic_report_write(s, f, LIC_FORMAT_JSON, LIC_REPORT_PACKS | LIC_REPORT_TOKENS, NULL),
                         0);
        assert_int_equal(lic_report_write(s, f, LIC_FORMAT_CSV, LIC_REPORT_PACKS | LIC_REPORT_TOKENS, NULL),
                         0);
        assert_int_equal(
                lic_report_write(s, f, LIC_FORMAT_TABLE, LIC_REPORT_PACKS | LIC_REPORT_TOKENS, NULL), 0);
        assert_true(lic_audit_list(s, 0, 0, audit_dump, f) >= 0);
        fclose(f);
        return buf;
}

static void assert_unchanged(struct lic_store *s, const char *before) {
        char *after = snapshot(s);

        assert_string_equal(before, after);
        free(after);
}

static int count_actions(struct lic_store *s, enum lic_action a);

/* ---- schema -------------------------------------------------------------- */

static void test_migrate_from_empty_and_reopen(void **state) {
        struct fixture *f = *state;
        char mode[16];

        assert_true(lic_store_schema_version() >= 1);
        assert_int_equal(sql_int(f->path, "PRAGMA user_version"), lic_store_schema_version());
        assert_int_equal(sql_int(f->path, "PRAGMA application_id"), 0x7473666c);
        sql_text(f->path, "PRAGMA journal_mode", mode, sizeof(mode));
        assert_string_equal(mode, "wal");
        assert_int_equal(sql_int(f->path, "SELECT count(*) FROM packs"), 0);
        assert_int_equal(sql_int(f->path, "SELECT count(*) FROM tokens"), 0);
        assert_int_equal(sql_int(f->path, "SELECT count(*) FROM audit"), 0);

        assert_int_equal(lic_pack_install(f->s, "pack-1", "2025", 10), 0);
        reopen(f);
        reopen(f);
        assert_int_equal(sql_int(f->path, "PRAGMA user_version"), lic_store_schema_version());
        assert_int_equal(available(f->s, "pack-1"), 10);
        assert_int_equal(count_actions(f->s, LIC_ACTION_INSTALL), 1);
}

static void test_refuses_newer_and_foreign(void **state) {
        struct fixture *f = *state;
        char path[160], sql[96];
        struct lic_store *s = NULL;
        FILE *fp;

        assert_int_equal(lic_pack_install(f->s, "pack-1", "2025", 10), 0);
        f->s = lic_store_close(f->s);
        snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", lic_store_schema_version() + 1);
        sql_exec(f->path, sql);
        assert_int_equal(lic_store_open(f->path, &s), -EPROTONOSUPPORT);
        assert_null(s);
        /* ...and left as it was. */
        assert_int_equal(sql_int(f->path, "PRAGMA user_version"), lic_store_schema_version() + 1);
        assert_int_equal(sql_int(f->path, "SELECT count(*) FROM packs"), 1);

        /* Some other program's database, or another tsfarm store. */
        snprintf(path, sizeof(path), "%s/other.db", f->dir);
        sql_exec(path, "CREATE TABLE t (x)");
        assert_int_equal(lic_store_open(path, &s), -EMEDIUMTYPE);
        snprintf(path, sizeof(path), "%s/dir.db", f->dir);
        sql_exec(path, "PRAGMA application_id = 1953719908; PRAGMA user_version = 1");
        assert_int_equal(lic_store_open(path, &s), -EMEDIUMTYPE);

        /* Not a database at all. */
        snprintf(path, sizeof(path), "%s/garbage.db", f->dir);
        fp = fopen(path, "w");
        assert_non_null(fp);
        for (int i = 0; i < 256; i++)
                fputs("not a database ", fp);
        fclose(fp);
        assert_int_equal(lic_store_open(path, &s), -EMEDIUMTYPE);

        snprintf(path, sizeof(path), "%s/missing/x.db", f->dir);
        assert_true(lic_store_open(path, &s) < 0);
        assert_null(s);

        snprintf(path, sizeof(path), "%s/fresh.db", f->dir);
        assert_int_equal(lic_store_open(path, &f->s), 0);
}

/* ---- packs --------------------------------------------------------------- */

static int collect_pack_ids(const struct lic_pack *p, void *userdata) {
        char *out = userdata;

        strcat(out, p->id);
        strcat(out, " ");
        return 0;
}

static void test_pack_install_get_list(void **state) {
        struct fixture *f = *state;
        struct lic_pack p;
        char ids[128] = "";
        char *before;

        assert_int_equal(lic_pack_install(f->s, "B-2025", "2025", 25), 0);
        tsf_fake_clock_advance(&f->clock, USEC_PER_SEC);
        assert_int_equal(lic_pack_install(f->s, "A-2022", "2022", 1), 0);
        assert_int_equal(lic_pack_get(f->s, "B-2025", &p), 0);
        assert_string_equal(p.id, "B-2025");
        assert_string_equal(p.product_version, "2025");
        assert_int_equal(p.count, 25);
        assert_int_equal(p.available, 25);
        assert_int_equal(p.issued, 0);
        assert_int_equal(p.installed, T0);
        assert_int_equal(p.revocable, 5);
        assert_int_equal(lic_pack_get(f->s, "nope", &p), -ENOENT);
        /* Oldest installed first. */
        assert_int_equal(lic_packs_list(f->s, collect_pack_ids, ids), 2);
        assert_string_equal(ids, "B-2025 A-2022 ");

        before = snapshot(f->s);
        assert_int_equal(lic_pack_install(f->s, "B-2025", "2025", 5), -EEXIST);
        assert_int_equal(lic_pack_install(f->s, "B-2025", "2022", 25), -EEXIST);
        assert_unchanged(f->s, before);
        free(before);
        check(f->s);
}

/* ---- temporary tokens ---------------------------------------------------- */

static void test_temporary_expires_at_90_days(void **state) {
        struct fixture *f = *state;
        struct lic_token t, again, fresh;
        struct dev d;
        char *before;

        dev_init(&d, 1);
        assert_int_equal(lic_temporary_issue(f->s, &d.d, "2025", NULL, &t), 0);
        assert_int_equal(t.kind, LIC_KIND_TEMPORARY);
        assert_int_equal(t.state, LIC_STATE_TEMPORARY);
        assert_int_equal(t.issued, T0);
        assert_int_equal(t.expires, T0 + 90 * USEC_PER_DAY);
        assert_string_equal(t.device_name, "PC-0001");
        assert_string_equal(t.user_name, "CORP\\user1");
        assert_string_equal(t.product_version, "2025");
        assert_string_equal(t.pack_id, "");
        assert_int_equal(t.hardware_id_len, sizeof(d.hw));
        assert_memory_equal(t.hardware_id, d.hw, sizeof(d.hw));

        /* A microsecond before: still live, asking again gives the same. */
        clock_set(f, T0 + 90 * USEC_PER_DAY - 1);
        assert_int_equal(lic_temporary_issue(f->s, &d.d, NULL, NULL, &again), 1);
        assert_memory_equal(again.token_id, t.token_id, LIC_TOKEN_ID_SIZE);
        assert_int_equal(again.expires, t.expires);
        assert_int_equal(lic_expire(f->s), 0);

        /* At 90 days: expired. A refused validation rolls back the lazy
         * expiry with everything else... */
        clock_set(f, T0 + 90 * USEC_PER_DAY);
        before = snapshot(f->s);
        assert_int_equal(lic_temporary_validate(f->s, t.token_id, d.hw, sizeof(d.hw), NULL), -EKEYEXPIRED);
        assert_unchanged(f->s, before);
        free(before);
        /* ...and the explicit call does it. */
        assert_int_equal(lic_expire(f->s), 1);
        assert_int_equal(lic_token_get(f->s, t.token_id, &again), 0);
        assert_int_equal(again.state, LIC_STATE_EXPIRED);
        assert_int_equal(again.state_time, T0 + 90 * USEC_PER_DAY);
        assert_int_equal(lic_expire(f->s), 0);
        assert_int_equal(count_actions(f->s, LIC_ACTION_EXPIRE), 1);

        /* The device now gets a new one. */
        assert_int_equal(lic_temporary_issue(f->s, &d.d, NULL, NULL, &fresh), 0);
        assert_memory_not_equal(fresh.token_id, t.token_id, LIC_TOKEN_ID_SIZE);
        assert_int_equal(fresh.expires, T0 + 180 * USEC_PER_DAY);
}

static void test_temporary_ids_and_one_per_device(void **state) {
        struct fixture *f = *state;
        static const uint8_t id1[LIC_TOKEN_ID_SIZE] = {1, 2,  3,  4,  5,  6,  7,  8,
                                                       9, 10, 11, 12, 13, 14, 15, 16};
        static const uint8_t id2[LIC_TOKEN_ID_SIZE] = {16, 15, 14};
        struct lic_token t, u;
        struct dev a, b, c;
        char *before;

        dev_init(&a, 1);
        dev_init(&b, 2);
        dev_init(&c, 3);
        /* The caller's id is the record's id. */
        assert_int_equal(lic_temporary_issue(f->s, &a.d, NULL, id1, &t), 0);
        assert_memory_equal(t.token_id, id1, LIC_TOKEN_ID_SIZE);
        /* Asked again (with another id): the same record. */
        assert_int_equal(lic_temporary_issue(f->s, &a.d, NULL, id2, &u), 1);
        assert_memory_equal(u.token_id, id1, LIC_TOKEN_ID_SIZE);
        assert_int_equal(lic_token_get(f->s, id2, &u), -ENOENT);
        /* Validated, it is still the device's live temporary token. */
        assert_int_equal(lic_temporary_validate(f->s, id1, a.hw, sizeof(a.hw), NULL), 0);
        assert_int_equal(lic_temporary_issue(f->s, &a.d, NULL, NULL, &u), 1);
        assert_int_equal(u.state, LIC_STATE_TEMPORARY_VALIDATED);

        /* An id that exists is never issued again: not from the caller... */
        before = snapshot(f->s);
        assert_int_equal(lic_temporary_issue(f->s, &b.d, NULL, id1, &u), -EEXIST);
        assert_unchanged(f->s, before);
        free(before);
        /* ...nor from a broken random source. */
        lic_store_set_random(f->s, stuck_random, NULL);
        assert_int_equal(lic_temporary_issue(f->s, &b.d, NULL, NULL, &u), 0);
        before = snapshot(f->s);
        assert_int_equal(lic_temporary_issue(f->s, &c.d, NULL, NULL, &u), -EEXIST);
        assert_unchanged(f->s, before);
        /* A failing source fails the operation, and changes nothing. */
        lic_store_set_random(f->s, failing_random, NULL);
        assert_int_equal(lic_temporary_issue(f->s, &c.d, NULL, NULL, &u), -EIO);
        assert_unchanged(f->s, before);
        free(before);
        lic_store_set_random(f->s, test_random, &f->rng);
        assert_int_equal(lic_temporary_issue(f->s, &c.d, NULL, NULL, &u), 0);
}

static void test_validate_rules(void **state) {
        struct fixture *f = *state;
        static const uint8_t unknown[LIC_TOKEN_ID_SIZE] = {0xff};
        struct lic_token t, cal;
        const char *reason = NULL;
        struct dev a, b;
        char *before;

        dev_init(&a, 1);
        dev_init(&b, 2);
        assert_int_equal(lic_pack_install(f->s, "p", "2025", 5), 0);
        assert_int_equal(lic_temporary_issue(f->s, &a.d, NULL, NULL, &t), 0);

        before = snapshot(f->s);
        assert_int_equal(lic_temporary_validate(f->s, t.token_id, b.hw, sizeof(b.hw), &reason), -EPERM);
        assert_string_equal(reason, "token issued to another device");
        assert_int_equal(lic_temporary_validate(f->s, unknown, a.hw, sizeof(a.hw), &reason), -ENOENT);
        assert_int_equal(lic_temporary_validate(f->s, t.token_id, a.hw, 15, NULL), -EINVAL);
        assert_int_equal(lic_temporary_validate(f->s, t.token_id, NULL, 20, NULL), -EINVAL);
        assert_unchanged(f->s, before);
        free(before);

        assert_int_equal(lic_temporary_validate(f->s, t.token_id, a.hw, sizeof(a.hw), NULL), 0);
        assert_int_equal(lic_token_get(f->s, t.token_id, &t), 0);
        assert_int_equal(t.state, LIC_STATE_TEMPORARY_VALIDATED);
        before = snapshot(f->s);
        assert_int_equal(lic_temporary_validate(f->s, t.token_id, a.hw, sizeof(a.hw), NULL), 1);
        assert_unchanged(f->s, before);
        free(before);

        assert_int_equal(lic_cal_issue(f->s, &a.d, NULL, t.token_id, NULL, &cal, NULL), 0);
        assert_int_equal(lic_temporary_validate(f->s, cal.token_id, a.hw, sizeof(a.hw), &reason),
                         -EMEDIUMTYPE);
        assert_int_equal(count_actions(f->s, LIC_ACTION_VALIDATE), 1);
}

/* ---- Device CALs --------------------------------------------------------- */

static void test_cal_issue(void **state) {
        struct fixture *f = *state;
        struct lic_token tmp, cal, again;
        const char *reason = NULL;
        struct dev a, b;
        char *before;

        dev_init(&a, 1);
        dev_init(&b, 2);
        assert_int_equal(lic_pack_install(f->s, "p", "2025", 5), 0);
        assert_int_equal(lic_temporary_issue(f->s, &a.d, NULL, NULL, &tmp), 0);

        /* Not validated yet: no CAL, nothing changes. */
        before = snapshot(f->s);
        assert_int_equal(lic_cal_issue(f->s, &a.d, NULL, tmp.token_id, NULL, &cal, &reason), -EACCES);
        assert_string_equal(reason, "temporary token not validated yet");
        assert_unchanged(f->s, before);
        free(before);

        assert_int_equal(lic_temporary_validate(f->s, tmp.token_id, a.hw, sizeof(a.hw), NULL), 0);
        /* Another device cannot use it. */
        before = snapshot(f->s);
        assert_int_equal(lic_cal_issue(f->s, &b.d, NULL, tmp.token_id, NULL, &cal, &reason), -EPERM);
        assert_unchanged(f->s, before);
        free(before);

        tsf_fake_clock_advance(&f->clock, 1234567);
        assert_int_equal(lic_cal_issue(f->s, &a.d, NULL, tmp.token_id, NULL, &cal, &reason), 0);
        assert_int_equal(cal.kind, LIC_KIND_CAL);
        assert_int_equal(cal.state, LIC_STATE_ACTIVE);
        assert_string_equal(cal.pack_id, "p");
        assert_string_equal(cal.product_version, "2025");
        assert_string_equal(cal.device_name, "PC-0001");
        assert_string_equal(cal.user_name, "CORP\\user1");
        assert_memory_equal(cal.hardware_id, a.hw, sizeof(a.hw));
        assert_int_equal(cal.issued, T0 + 1234567);
        assert_true(cal.expires - cal.issued >= 52 * USEC_PER_DAY);
        assert_true(cal.expires - cal.issued <= 89 * USEC_PER_DAY);
        assert_int_equal((cal.expires - cal.issued) % USEC_PER_SEC, 0);
        assert_false(cal.renewed);
        assert_int_equal(available(f->s, "p"), 4);
        assert_int_equal(count_actions(f->s, LIC_ACTION_ISSUE), 1);
        check(f->s);

        /* Asking again (the answer got lost): the same CAL, pool unchanged. */
        before = snapshot(f->s);
        assert_int_equal(lic_cal_issue(f->s, &a.d, NULL, tmp.token_id, NULL, &again, NULL), 1);
        assert_memory_equal(again.token_id, cal.token_id, LIC_TOKEN_ID_SIZE);
        assert_int_equal(again.expires, cal.expires);
        assert_unchanged(f->s, before);
        free(before);

        /* A caller-chosen id for the CAL. */
        {
                static const uint8_t want[LIC_TOKEN_ID_SIZE] = {0xca, 0x2};
                struct lic_token t3, c3;
                struct dev c;

                dev_init(&c, 3);
                assert_int_equal(lic_temporary_issue(f->s, &c.d, NULL, NULL, &t3), 0);
                assert_int_equal(lic_temporary_validate(f->s, t3.token_id, c.hw, sizeof(c.hw), NULL), 0);
                assert_int_equal(lic_cal_issue(f->s, &c.d, NULL, t3.token_id, want, &c3, NULL), 0);
                assert_memory_equal(c3.token_id, want, LIC_TOKEN_ID_SIZE);
        }
        assert_int_equal(available(f->s, "p"), 3);
        check(f->s);
}

static void test_cal_pick_pack(void **state) {
        struct fixture *f = *state;
        struct lic_token cal;
        struct dev d;
        unsigned n = 0;

        assert_int_equal(lic_pack_install(f->s, "A", "2025", 5), 0);
        tsf_fake_clock_advance(&f->clock, USEC_PER_SEC);
        assert_int_equal(lic_pack_install(f->s, "B", "2025", 10), 0);
        tsf_fake_clock_advance(&f->clock, USEC_PER_SEC);
        assert_int_equal(lic_pack_install(f->s, "C", "2022", 3), 0);

        /* The most available first: B until it is level with A... */
        for (; n < 5; n++) {
                dev_init(&d, n);
                assert_int_equal(get_cal(f->s, &d, "2025", &cal), 0);
                assert_string_equal(cal.pack_id, "B");
        }
        /* ...then ties go to the older pack. */
        dev_init(&d, n++);
        assert_int_equal(get_cal(f->s, &d, "2025", &cal), 0);
        assert_string_equal(cal.pack_id, "A");
        /* Any version: C has 3, A 4, B 5. */
        dev_init(&d, n++);
        assert_int_equal(get_cal(f->s, &d, NULL, &cal), 0);
        assert_string_equal(cal.pack_id, "B");
        /* A version: only its packs. */
        dev_init(&d, n++);
        assert_int_equal(get_cal(f->s, &d, "2022", &cal), 0);
        assert_string_equal(cal.pack_id, "C");
        assert_string_equal(cal.product_version, "2022");
        dev_init(&d, n++);
        assert_int_equal(get_cal(f->s, &d, "2019", &cal), -ENOSPC);
        /* One active CAL per device and version: the same device can hold a
         * 2022 and a 2025 CAL. */
        dev_init(&d, 0);
        assert_int_equal(get_cal(f->s, &d, "2025", &cal), 1);
        assert_int_equal(get_cal(f->s, &d, "2022", &cal), 0);
        assert_string_equal(cal.pack_id, "C");
        check(f->s);
}

static void test_cal_expiry_distribution(void **state) {
        enum { N = 10000, BUCKETS = 37 };
        struct fixture *f = *state;
        unsigned buckets[BUCKETS] = {};
        usec_t lo = USEC_INFINITY, hi = 0;
        double sum = 0;

        assert_int_equal(lic_pack_install(f->s, "big", "2025", N), 0);
        assert_int_equal(lic_store_batch_begin(f->s), 0);
        for (unsigned i = 0; i < N; i++) {
                struct lic_token cal;
                struct dev d;
                usec_t life;

                dev_init(&d, i);
                assert_int_equal(get_cal(f->s, &d, NULL, &cal), 0);
                life = cal.expires - cal.issued;
                assert_true(life >= LIC_CAL_LIFETIME_MIN);
                assert_true(life <= LIC_CAL_LIFETIME_MAX);
                assert_int_equal(life % USEC_PER_SEC, 0);
                lo = MIN(lo, life);
                hi = MAX(hi, life);
                sum += (double)life;
                /* Day buckets 52..88; exactly 89 days goes in the last. */
                buckets[MIN((life - LIC_CAL_LIFETIME_MIN) / USEC_PER_DAY, (usec_t)BUCKETS - 1)]++;
        }
        assert_int_equal(lic_store_batch_commit(f->s), 0);
        assert_int_equal(available(f->s, "big"), 0);

        for (unsigned b = 0; b < BUCKETS; b++) {
                /* N / 37 = 270 expected; a uniform draw stays well inside. */
                assert_true(buckets[b] > 170);
                assert_true(buckets[b] < 380);
        }
        assert_true(lo < LIC_CAL_LIFETIME_MIN + 12 * USEC_PER_HOUR);
        assert_true(hi > LIC_CAL_LIFETIME_MAX - 12 * USEC_PER_HOUR);
        assert_true(sum / N > 70.0 * USEC_PER_DAY && sum / N < 71.0 * USEC_PER_DAY);
        print_message("CAL lifetimes: min %.3f d, max %.3f d, mean %.3f d over %d\n",
                      (double)lo / USEC_PER_DAY, (double)hi / USEC_PER_DAY, sum / N / USEC_PER_DAY, N);
}

static void test_renewal_window(void **state) {
        struct fixture *f = *state;
        struct lic_token cal, renewed, old;
        const char *reason = NULL;
        struct dev d, other;
        char *before;

        dev_init(&d, 1);
        dev_init(&other, 2);
        assert_int_equal(lic_pack_install(f->s, "p", "2025", 3), 0);
        assert_int_equal(get_cal(f->s, &d, NULL, &cal), 0);

        /* 8 days left, and 7 days and a second: too early. */
        clock_set(f, cal.expires - 8 * USEC_PER_DAY);
        before = snapshot(f->s);
        assert_int_equal(lic_cal_renew(f->s, &d.d, cal.token_id, NULL, &renewed, &reason), -EAGAIN);
        assert_string_equal(reason, "renewal only when 7 days or fewer remain");
        assert_int_equal(lic_cal_issue(f->s, &d.d, NULL, cal.token_id, NULL, &renewed, NULL), -EAGAIN);
        assert_unchanged(f->s, before);
        free(before);
        clock_set(f, cal.expires - 7 * USEC_PER_DAY - USEC_PER_SEC);
        assert_int_equal(lic_cal_renew(f->s, &d.d, cal.token_id, NULL, &renewed, NULL), -EAGAIN);
        /* Not by another device. */
        clock_set(f, cal.expires - 7 * USEC_PER_DAY);
        assert_int_equal(lic_cal_renew(f->s, &other.d, cal.token_id, NULL, &renewed, NULL), -EPERM);

        /* 7 days left: renewed, from the same pack, pool unchanged. */
        assert_int_equal(available(f->s, "p"), 2);
        assert_int_equal(lic_cal_renew(f->s, &d.d, cal.token_id, NULL, &renewed, NULL), 0);
        assert_int_equal(renewed.state, LIC_STATE_ACTIVE);
        assert_string_equal(renewed.pack_id, "p");
        assert_true(renewed.renewed);
        assert_memory_equal(renewed.renewed_from, cal.token_id, LIC_TOKEN_ID_SIZE);
        assert_memory_not_equal(renewed.token_id, cal.token_id, LIC_TOKEN_ID_SIZE);
        assert_int_equal(renewed.issued, cal.expires - 7 * USEC_PER_DAY);
        assert_true(renewed.expires - renewed.issued >= LIC_CAL_LIFETIME_MIN);
        assert_true(renewed.expires - renewed.issued <= LIC_CAL_LIFETIME_MAX);
        assert_int_equal(lic_token_get(f->s, cal.token_id, &old), 0);
        assert_int_equal(old.state, LIC_STATE_EXPIRED);
        assert_int_equal(available(f->s, "p"), 2);
        assert_int_equal(count_actions(f->s, LIC_ACTION_RENEW), 1);
        check(f->s);

        /* The old one cannot be renewed again; the new one not yet. */
        assert_int_equal(lic_cal_renew(f->s, &d.d, cal.token_id, NULL, &old, &reason), -EKEYEXPIRED);
        assert_int_equal(lic_cal_renew(f->s, &d.d, renewed.token_id, NULL, &old, NULL), -EAGAIN);

        /* Through lic_cal_issue with the CAL presented: the same rule. */
        clock_set(f, renewed.expires - 3 * USEC_PER_DAY);
        assert_int_equal(lic_cal_issue(f->s, &d.d, NULL, renewed.token_id, NULL, &cal, NULL), 0);
        assert_memory_equal(cal.renewed_from, renewed.token_id, LIC_TOKEN_ID_SIZE);
        assert_int_equal(available(f->s, "p"), 2);
        check(f->s);
}

static void test_expired_cals_return_to_pool(void **state) {
        struct fixture *f = *state;
        struct lic_token cal[3], t;
        struct dev d[4];

        assert_int_equal(lic_pack_install(f->s, "p", "2025", 3), 0);
        for (unsigned i = 0; i < 4; i++)
                dev_init(&d[i], i);
        for (unsigned i = 0; i < 3; i++)
                assert_int_equal(get_cal(f->s, &d[i], NULL, &cal[i]), 0);
        assert_int_equal(get_cal(f->s, &d[3], NULL, &t), -ENOSPC);
        assert_int_equal(available(f->s, "p"), 0);

        /* The device that asks after the others lapsed gets one: expiry runs
         * inside the issuance. */
        clock_set(f, T0 + 89 * USEC_PER_DAY);
        assert_int_equal(get_cal(f->s, &d[3], NULL, &t), 0);
        for (unsigned i = 0; i < 3; i++) {
                struct lic_token x;

                assert_int_equal(lic_token_get(f->s, cal[i].token_id, &x), 0);
                assert_int_equal(x.state, LIC_STATE_EXPIRED);
        }
        assert_int_equal(count_actions(f->s, LIC_ACTION_EXPIRE), 3);
        assert_int_equal(available(f->s, "p"), 2);
        check(f->s);

        /* And from the explicit call, which also lapses the temporary
         * tokens (issued at T0, 90 days). */
        clock_set(f, t.expires);
        assert_int_equal(lic_expire(f->s), 5);
        assert_int_equal(available(f->s, "p"), 3);
        assert_int_equal(count_actions(f->s, LIC_ACTION_EXPIRE), 8);
        check(f->s);
}

static void test_pool_exhaustion_changes_nothing(void **state) {
        struct fixture *f = *state;
        struct lic_token tmp, cal;
        const char *reason = NULL;
        struct dev d[4];
        char *before;

        assert_int_equal(lic_pack_install(f->s, "p", "2025", 2), 0);
        for (unsigned i = 0; i < 4; i++)
                dev_init(&d[i], i);
        /* Something is due for expiry when the refusal comes (d[3]'s
         * temporary token): the refusal rolls that back too. */
        assert_int_equal(lic_temporary_issue(f->s, &d[3].d, NULL, NULL, &tmp), 0);
        clock_set(f, T0 + 40 * USEC_PER_DAY);
        assert_int_equal(get_cal(f->s, &d[0], NULL, &cal), 0);
        assert_int_equal(get_cal(f->s, &d[1], NULL, &cal), 0);
        assert_int_equal(lic_temporary_issue(f->s, &d[2].d, NULL, NULL, &tmp), 0);
        assert_int_equal(lic_temporary_validate(f->s, tmp.token_id, d[2].hw, sizeof(d[2].hw), NULL), 0);
        clock_set(f, T0 + 90 * USEC_PER_DAY);

        before = snapshot(f->s);
        assert_int_equal(lic_cal_issue(f->s, &d[2].d, NULL, tmp.token_id, NULL, &cal, &reason), -ENOSPC);
        assert_string_equal(reason, "no key pack has a CAL available");
        assert_unchanged(f->s, before);
        free(before);
        assert_int_equal(available(f->s, "p"), 0);
        /* The device keeps its temporary token. */
        assert_int_equal(lic_token_get(f->s, tmp.token_id, &cal), 0);
        assert_int_equal(cal.state, LIC_STATE_TEMPORARY_VALIDATED);
        check(f->s);
}

static void test_revocation_bound(void **state) {
        struct fixture *f = *state;
        struct lic_token cal[6], tmp, t;
        const char *reason = NULL;
        usec_t possible = 0, first, second;
        struct lic_pack p;
        struct dev d[9];
        char *before;

        assert_int_equal(lic_pack_install(f->s, "p", "2025", 10), 0); /* 2 per 60 days */
        for (unsigned i = 0; i < 9; i++)
                dev_init(&d[i], i);
        for (unsigned i = 0; i < 4; i++)
                assert_int_equal(get_cal(f->s, &d[i], NULL, &cal[i]), 0);
        assert_int_equal(available(f->s, "p"), 6);

        first = f->clock.realtime;
        assert_int_equal(lic_revoke(f->s, cal[0].token_id, &possible, NULL), 0);
        assert_int_equal(available(f->s, "p"), 7);
        assert_int_equal(lic_token_get(f->s, cal[0].token_id, &t), 0);
        assert_int_equal(t.state, LIC_STATE_REVOKED);
        assert_int_equal(lic_pack_get(f->s, "p", &p), 0);
        assert_int_equal(p.revocable, 1);
        check(f->s);

        tsf_fake_clock_advance(&f->clock, 10 * USEC_PER_DAY);
        second = f->clock.realtime;
        assert_int_equal(lic_revoke(f->s, cal[1].token_id, NULL, NULL), 0);
        assert_int_equal(available(f->s, "p"), 8);

        /* The third within 60 days: refused, with the date it works. */
        tsf_fake_clock_advance(&f->clock, 10 * USEC_PER_DAY);
        before = snapshot(f->s);
        assert_int_equal(lic_revoke(f->s, cal[2].token_id, &possible, &reason), -EDQUOT);
        assert_string_equal(reason, "20% of the pack's CALs revoked in the last 60 days");
        assert_int_equal(possible, first + 60 * USEC_PER_DAY);
        assert_unchanged(f->s, before);
        free(before);
        assert_int_equal(lic_pack_get(f->s, "p", &p), 0);
        assert_int_equal(p.revocable, 0);

        /* A microsecond before the first leaves the window: still refused.
         * The first CALs may have lapsed by then (52 days), so fresh ones. */
        clock_set(f, possible - 1);
        assert_int_equal(get_cal(f->s, &d[4], NULL, &cal[4]), 0);
        assert_int_equal(get_cal(f->s, &d[5], NULL, &cal[5]), 0);
        assert_int_equal(lic_revoke(f->s, cal[4].token_id, NULL, NULL), -EDQUOT);
        clock_set(f, possible);
        assert_int_equal(lic_revoke(f->s, cal[4].token_id, NULL, NULL), 0);
        /* Now the second one is the oldest in the window. */
        assert_int_equal(lic_revoke(f->s, cal[5].token_id, &possible, NULL), -EDQUOT);
        assert_int_equal(possible, second + 60 * USEC_PER_DAY);
        clock_set(f, possible);
        assert_int_equal(lic_revoke(f->s, cal[5].token_id, NULL, NULL), 0);
        assert_int_equal(count_actions(f->s, LIC_ACTION_REVOKE), 4);
        check(f->s);

        /* What cannot be revoked. */
        assert_int_equal(lic_revoke(f->s, cal[0].token_id, NULL, &reason), -EALREADY);
        assert_int_equal(lic_temporary_issue(f->s, &d[8].d, NULL, NULL, &tmp), 0);
        assert_int_equal(lic_revoke(f->s, tmp.token_id, NULL, &reason), -EMEDIUMTYPE);
        {
                static const uint8_t unknown[LIC_TOKEN_ID_SIZE] = {0xee};

                assert_int_equal(lic_revoke(f->s, unknown, NULL, &reason), -ENOENT);
        }
        /* A revoked CAL is no basis for renewal. */
        assert_int_equal(lic_cal_renew(f->s, &d[0].d, cal[0].token_id, NULL, &t, &reason), -EKEYREVOKED);

        /* A pack of 4: 20% is under one CAL, so never. */
        assert_int_equal(lic_pack_install(f->s, "small", "2022", 4), 0);
        assert_int_equal(lic_temporary_validate(f->s, tmp.token_id, d[8].hw, sizeof(d[8].hw), NULL), 0);
        assert_int_equal(lic_cal_issue(f->s, &d[8].d, "2022", tmp.token_id, NULL, &t, NULL), 0);
        assert_int_equal(lic_revoke(f->s, t.token_id, &possible, &reason), -EDQUOT);
        assert_int_equal(possible, USEC_INFINITY);
        assert_int_equal(count_actions(f->s, LIC_ACTION_REVOKE), 4);
        check(f->s);
}

/* Many devices, time moving on, renewals and revocations mixed in: no token
 * id twice, and the pool adds up after every operation. */
static int collect_ids(const struct lic_token *t, void *userdata) {
        uint8_t **p = userdata;

        memcpy(*p, t->token_id, LIC_TOKEN_ID_SIZE);
        *p += LIC_TOKEN_ID_SIZE;
        return 0;
}

static int cmp_id(const void *a, const void *b) {
        return memcmp(a, b, LIC_TOKEN_ID_SIZE);
}

static void test_no_token_twice_2000_devices(void **state) {
        enum { DEVICES = 2000 };
        struct fixture *f = *state;
        struct lic_token *cals = calloc(DEVICES, sizeof(*cals));
        unsigned issued = 0, refused = 0, renewed = 0, revoked = 0;
        uint8_t *ids, *p;
        int n;

        assert_non_null(cals);
        assert_int_equal(lic_pack_install(f->s, "a", "2025", 400), 0);
        assert_int_equal(lic_pack_install(f->s, "b", "2025", 500), 0);
        for (unsigned i = 0; i < DEVICES; i++) {
                struct lic_token tmp, t;
                struct dev d;
                int r;

                if (i % 100 == 0)
                        assert_int_equal(lic_store_batch_begin(f->s), 0);
                /* An hour between devices: 83 days in all, so the first
                 * CALs lapse and return while later devices ask. */
                tsf_fake_clock_advance(&f->clock, USEC_PER_HOUR);
                dev_init(&d, i);
                assert_true(lic_temporary_issue(f->s, &d.d, NULL, NULL, &tmp) >= 0);
                check(f->s);
                assert_int_equal(lic_temporary_validate(f->s, tmp.token_id, d.hw, sizeof(d.hw), NULL), 0);
                check(f->s);
                r = lic_cal_issue(f->s, &d.d, NULL, tmp.token_id, NULL, &cals[i], NULL);
                check(f->s);
                if (r == -ENOSPC) {
                        refused++;
                        memset(&cals[i], 0, sizeof(cals[i]));
                } else {
                        assert_int_equal(r, 0);
                        issued++;
                }
                /* Now and then an earlier device renews or is revoked. */
                if (i % 7 == 3) {
                        struct lic_token *c = &cals[(i * 31) % (i + 1)];
                        struct dev e;

                        dev_init(&e, (unsigned)(c - cals));
                        r = c->kind ? lic_cal_renew(f->s, &e.d, c->token_id, NULL, &t, NULL) : -ENOENT;
                        if (r == 0) {
                                *c = t;
                                renewed++;
                        } else
                                assert_true(r == -EAGAIN || r == -EKEYEXPIRED || r == -EKEYREVOKED ||
                                            r == -ENOENT);
                        check(f->s);
                }
                if (i % 50 == 25) {
                        r = cals[i - 10].kind ? lic_revoke(f->s, cals[i - 10].token_id, NULL, NULL)
                                              : -ENOENT;
                        if (r == 0) {
                                cals[i - 10].state = LIC_STATE_REVOKED;
                                revoked++;
                        }
                        check(f->s);
                }
                /* Every third device comes back in its last 7 days and
                 * renews, as the agent does; the others lapse. */
                for (unsigned j = 0; j <= i; j += 3) {
                        struct lic_token *c = &cals[j];
                        usec_t now = f->clock.realtime;
                        struct dev e;

                        if (!c->kind || c->state != LIC_STATE_ACTIVE || c->expires <= now ||
                            c->expires - now > LIC_RENEW_WINDOW)
                                continue;
                        dev_init(&e, j);
                        assert_int_equal(lic_cal_renew(f->s, &e.d, c->token_id, NULL, &t, NULL), 0);
                        *c = t;
                        renewed++;
                        check(f->s);
                }
                if (i % 100 == 99)
                        assert_int_equal(lic_store_batch_commit(f->s), 0);
        }
        print_message("%d devices: %u CALs issued, %u refused (pool empty), %u renewed, %u revoked\n",
                      DEVICES, issued, refused, renewed, revoked);
        assert_true(refused > 0);
        assert_true(renewed > 0);
        assert_true(revoked > 0);

        n = (int)sql_int(f->path, "SELECT count(*) FROM tokens");
        ids = p = calloc((size_t)n, LIC_TOKEN_ID_SIZE);
        assert_non_null(ids);
        assert_int_equal(lic_tokens_list(f->s, NULL, collect_ids, &p), n);
        qsort(ids, (size_t)n, LIC_TOKEN_ID_SIZE, cmp_id);
        for (int i = 1; i < n; i++)
                assert_true(memcmp(ids + (size_t)(i - 1) * LIC_TOKEN_ID_SIZE,
                                   ids + (size_t)i * LIC_TOKEN_ID_SIZE, LIC_TOKEN_ID_SIZE) != 0);
        /* Every record has its audit row. */
        assert_int_equal(sql_int(f->path, "SELECT count(*) FROM tokens t WHERE NOT EXISTS (SELECT 1 FROM "
                                          "audit a WHERE a.token_id = t.token_id AND a.action IN "
                                          "('temporary', 'issue', 'renew'))"),
                         0);
        free(ids);
        free(cals);
}

/* A writer killed with SIGKILL mid-run, three times at different points:
 * every CAL it acknowledged is there, nothing is half-written, and the pool
 * adds up after each restart. */
static void kill9_round(struct fixture *f, unsigned first, unsigned after_acks, useconds_t delay,
                        uint32_t *on_disk) {
        unsigned acked = first, got;
        int fds[2], status;
        struct lic_pack p;
        pid_t pid;

        assert_int_equal(pipe(fds), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                struct lic_store *s = NULL;

                close(fds[0]);
                if (lic_store_open(f->path, &s) < 0)
                        _exit(1);
                for (unsigned i = first; i < first + 10000; i++) {
                        struct lic_token tmp, cal;
                        struct dev d;

                        dev_init(&d, i);
                        if (lic_temporary_issue(s, &d.d, NULL, NULL, &tmp) < 0 ||
                            lic_temporary_validate(s, tmp.token_id, d.hw, sizeof(d.hw), NULL) < 0 ||
                            lic_cal_issue(s, &d.d, NULL, tmp.token_id, NULL, &cal, NULL) != 0)
                                _exit(1);
                        /* Acknowledge only after the commit returned. */
                        if (write(fds[1], &i, sizeof(i)) != sizeof(i))
                                _exit(1);
                }
                _exit(2);
        }
        close(fds[1]);
        while (acked < first + after_acks && read(fds[0], &got, sizeof(got)) == sizeof(got))
                acked = got + 1;
        usleep(delay);
        assert_int_equal(kill(pid, SIGKILL), 0);
        while (read(fds[0], &got, sizeof(got)) == sizeof(got))
                acked = got + 1;
        close(fds[0]);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status));
        assert_int_equal(WTERMSIG(status), SIGKILL);
        assert_true(acked >= first + after_acks);

        store_open(f);
        check(f->s);
        {
                char ok[16];

                sql_text(f->path, "PRAGMA integrity_check", ok, sizeof(ok));
                assert_string_equal(ok, "ok");
        }
        for (unsigned i = first; i < acked; i++) {
                struct lic_token t;
                struct dev d;

                dev_init(&d, i);
                assert_int_equal(lic_temporary_issue(f->s, &d.d, NULL, NULL, &t), 1);
                assert_int_equal(t.state, LIC_STATE_TEMPORARY_VALIDATED);
                assert_int_equal(lic_cal_issue(f->s, &d.d, NULL, t.token_id, NULL, &t, NULL), 1);
        }
        /* At most the one in flight beyond what was acknowledged; each
         * record with its audit row; the pool adds up. */
        assert_int_equal(lic_pack_get(f->s, "p", &p), 0);
        assert_true(p.issued - *on_disk >= acked - first && p.issued - *on_disk <= acked - first + 1);
        assert_int_equal(p.available, 100000 - p.issued);
        assert_int_equal(sql_int(f->path, "SELECT count(*) FROM audit WHERE action = 'issue'"), p.issued);
        assert_int_equal(sql_int(f->path, "SELECT count(*) FROM tokens t WHERE NOT EXISTS (SELECT 1 FROM "
                                          "audit a WHERE a.token_id = t.token_id AND a.action IN "
                                          "('temporary', 'issue'))"),
                         0);
        assert_int_equal(sql_int(f->path, "SELECT count(*) FROM tokens WHERE state = 1"),
                         sql_int(f->path, "SELECT count(*) FROM audit WHERE action = 'validate'"));
        *on_disk = p.issued;
        f->s = lic_store_close(f->s);
}

static void test_kill9_mid_run(void **state) {
        enum { ROUNDS = 16 };
        struct fixture *f = *state;
        uint32_t on_disk = 0;

        assert_int_equal(lic_pack_install(f->s, "p", "2025", 100000), 0);
        f->s = lic_store_close(f->s);
        /* The kills land at different phases of an issuance: right after
         * an acknowledgement, and then later and later into the next. */
        for (unsigned r = 0; r < ROUNDS; r++)
                kill9_round(f, r * 1000, 10 + r, (useconds_t)(r * 170), &on_disk);
        store_open(f);
}

/* ---- reports ------------------------------------------------------------- */

static char *report(struct lic_store *s, enum lic_format fmt, unsigned what,
                    const struct lic_token_filter *flt) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);

        assert_non_null(f);
        assert_int_equal(lic_report_write(s, f, fmt, what, flt), 0);
        fclose(f);
        return buf;
}

static void test_report_csv_quoting(void **state) {
        struct fixture *f = *state;
        static const char name[] = "Kiosk, \"Lobby\"\nfloor 2";
        struct lic_token cal;
        struct dev d;
        char *csv, *table, *js;
        json_t *root, *tok;
        json_error_t err;

        assert_int_equal(lic_pack_install(f->s, "p", "2025", 5), 0);
        dev_init(&d, 1);
        d.d.device_name = name;
        assert_int_equal(get_cal(f->s, &d, NULL, &cal), 0);

        csv = report(f->s, LIC_FORMAT_CSV, LIC_REPORT_TOKENS, NULL);
        assert_non_null(strstr(csv, "token_id,kind,state,pack_id,product_version,device_name,hardware_id,"
                                    "user_name,issued,expires,state_time,renewed_from,lent_to\r\n"));
        assert_non_null(strstr(csv, ",\"Kiosk, \"\"Lobby\"\"\nfloor 2\","));
        /* The user name has a backslash and nothing to quote. */
        assert_non_null(strstr(csv, ",CORP\\user1,"));
        assert_non_null(strstr(csv, ",device-cal,active,p,2025,"));
        assert_non_null(strstr(csv, ",temporary,temporary-validated,,,"));

        /* Tables show it on one line, escaped. */
        table = report(f->s, LIC_FORMAT_TABLE, LIC_REPORT_TOKENS, NULL);
        assert_non_null(strstr(table, "Kiosk, \"Lobby\"\\nfloor 2"));
        assert_null(strstr(table, "\nfloor"));
        assert_non_null(strstr(table, "CORP\\\\user1"));

        /* JSON carries it exactly. */
        js = report(f->s, LIC_FORMAT_JSON, LIC_REPORT_TOKENS, NULL);
        root = json_loads(js, 0, &err);
        assert_non_null(root);
        assert_int_equal(json_array_size(json_object_get(root, "tokens")), 2);
        tok = json_array_get(json_object_get(root, "tokens"), 0);
        if (strcmp(json_string_value(json_object_get(tok, "kind")), "device-cal") != 0)
                tok = json_array_get(json_object_get(root, "tokens"), 1);
        assert_string_equal(json_string_value(json_object_get(tok, "device_name")), name);
        assert_string_equal(json_string_value(json_object_get(tok, "state")), "active");
        assert_int_equal(json_integer_value(json_object_get(tok, "expires_usec")), cal.expires);
        json_decref(root);
        free(csv);
        free(table);
        free(js);
}

static void test_report_formats(void **state) {
        struct fixture *f = *state;
        struct lic_token cal;
        struct dev d[3];
        char *out;
        json_t *root, *totals, *pack;
        json_error_t err;

        assert_int_equal(lic_pack_install(f->s, "pack-a", "2025", 10), 0);
        assert_int_equal(lic_pack_install(f->s, "pack-b", "2022", 5), 0);
        for (unsigned i = 0; i < 3; i++)
                dev_init(&d[i], i);
        assert_int_equal(get_cal(f->s, &d[0], "2025", &cal), 0);
        assert_int_equal(get_cal(f->s, &d[1], "2022", &cal), 0);
        assert_int_equal(lic_temporary_issue(f->s, &d[2].d, NULL, NULL, &cal), 0);

        out = report(f->s, LIC_FORMAT_TABLE, LIC_REPORT_PACKS, NULL);
        print_message("%s", out);
        assert_non_null(strstr(out,
                               "PACK    VERSION  INSTALLED             COUNT  AVAILABLE  ISSUED  REVOKED  "
                               "EXPIRED  REVOCABLE\n"));
        assert_non_null(strstr(out,
                               "pack-a  2025     2026-11-18T11:06:40Z     10          9       1        0  "
                               "      0          2\n"));
        assert_non_null(strstr(out, "\ntotal   -        -                        15         13       2"));
        assert_non_null(strstr(out, "packs: 2; temporary tokens: 3 live, 2 of them validated\n"));
        free(out);

        out = report(f->s, LIC_FORMAT_CSV, LIC_REPORT_PACKS | LIC_REPORT_TOKENS, NULL);
        {
                static const char head[] =
                        "pack_id,product_version,installed,count,available,issued,revoked,"
                        "expired,revocable\r\npack-a,2025,2026-11-18T11:06:40Z,10,9,1,0,0,2\r\n";

                assert_true(strncmp(out, head, strlen(head)) == 0);
        }
        assert_non_null(strstr(out, "\r\n\r\ntoken_id,"));
        free(out);

        out = report(f->s, LIC_FORMAT_JSON, LIC_REPORT_PACKS, NULL);
        root = json_loads(out, 0, &err);
        assert_non_null(root);
        totals = json_object_get(root, "totals");
        assert_int_equal(json_integer_value(json_object_get(totals, "count")), 15);
        assert_int_equal(json_integer_value(json_object_get(totals, "available")), 13);
        assert_int_equal(json_integer_value(json_object_get(totals, "issued")), 2);
        assert_int_equal(json_integer_value(json_object_get(totals, "temporary")), 3);
        assert_int_equal(json_integer_value(json_object_get(totals, "temporary_validated")), 2);
        pack = json_array_get(json_object_get(root, "packs"), 1);
        assert_string_equal(json_string_value(json_object_get(pack, "id")), "pack-b");
        assert_int_equal(json_integer_value(json_object_get(pack, "revocable")), 1);
        assert_null(json_object_get(root, "tokens"));
        json_decref(root);
        free(out);

        /* Filters: by pack, by state, by device. */
        {
                struct lic_token_filter flt = {.pack_id = "pack-b"};

                out = report(f->s, LIC_FORMAT_JSON, LIC_REPORT_TOKENS, &flt);
                root = json_loads(out, 0, &err);
                assert_int_equal(json_array_size(json_object_get(root, "tokens")), 1);
                json_decref(root);
                free(out);
                flt = (struct lic_token_filter){.states = 1u << LIC_STATE_TEMPORARY};
                out = report(f->s, LIC_FORMAT_JSON, LIC_REPORT_TOKENS, &flt);
                root = json_loads(out, 0, &err);
                assert_int_equal(json_array_size(json_object_get(root, "tokens")), 1);
                json_decref(root);
                free(out);
                flt = (struct lic_token_filter){.device_name = "PC-0001"};
                out = report(f->s, LIC_FORMAT_CSV, LIC_REPORT_TOKENS, &flt);
                assert_non_null(strstr(out, ",temporary-validated,"));
                assert_non_null(strstr(out, ",active,pack-b,2022,PC-0001,"));
                assert_null(strstr(out, "PC-0000"));
                free(out);
                flt = (struct lic_token_filter){.hardware_id = d[0].hw,
                                                .hardware_id_len = sizeof(d[0].hw),
                                                .states = 1u << LIC_STATE_ACTIVE};
                out = report(f->s, LIC_FORMAT_CSV, LIC_REPORT_TOKENS, &flt);
                assert_non_null(strstr(out, ",active,pack-a,2025,PC-0000,"));
                assert_null(strstr(out, "temporary"));
                free(out);
        }
}

/* ---- malformed input ----------------------------------------------------- */

static void test_malformed_inputs_change_nothing(void **state) {
        struct fixture *f = *state;
        char big[LIC_DEVICE_NAME_MAX + 2], bigid[LIC_PACK_ID_MAX + 2];
        static const uint8_t id[LIC_TOKEN_ID_SIZE] = {7};
        struct lic_token tmp, t;
        struct lic_device bad;
        struct dev d;
        char *before;
        FILE *null;

        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        memset(bigid, 'p', sizeof(bigid) - 1);
        bigid[sizeof(bigid) - 1] = '\0';
        assert_int_equal(lic_pack_install(f->s, "p", "2025", 5), 0);
        dev_init(&d, 1);
        assert_int_equal(lic_temporary_issue(f->s, &d.d, NULL, NULL, &tmp), 0);
        before = snapshot(f->s);

        /* Packs. */
        assert_int_equal(lic_pack_install(f->s, "q", "2025", 0), -EINVAL);
        assert_int_equal(lic_pack_install(f->s, "q", "2025", LIC_PACK_COUNT_MAX + 1), -EINVAL);
        assert_int_equal(lic_pack_install(f->s, "", "2025", 5), -EINVAL);
        assert_int_equal(lic_pack_install(f->s, NULL, "2025", 5), -EINVAL);
        assert_int_equal(lic_pack_install(f->s, "with space", "2025", 5), -EINVAL);
        assert_int_equal(lic_pack_install(f->s, bigid, "2025", 5), -EINVAL);
        assert_int_equal(lic_pack_install(f->s, "q", "", 5), -EINVAL);
        assert_int_equal(lic_pack_install(f->s, "q", "20\n25", 5), -EINVAL);
        assert_int_equal(lic_pack_install(NULL, "q", "2025", 5), -EINVAL);

        /* Devices. */
        bad = d.d;
        bad.device_name = "";
        assert_int_equal(lic_temporary_issue(f->s, &bad, NULL, NULL, &t), -EINVAL);
        bad.device_name = NULL;
        assert_int_equal(lic_temporary_issue(f->s, &bad, NULL, NULL, &t), -EINVAL);
        bad.device_name = big;
        assert_int_equal(lic_temporary_issue(f->s, &bad, NULL, NULL, &t), -EINVAL);
        bad.device_name = "PC\xc3\x28"; /* not UTF-8 */
        assert_int_equal(lic_temporary_issue(f->s, &bad, NULL, NULL, &t), -EINVAL);
        bad.device_name = "PC\xed\xa0\x80"; /* a surrogate */
        assert_int_equal(lic_temporary_issue(f->s, &bad, NULL, NULL, &t), -EINVAL);
        bad.device_name = "PC\xc0\xaf"; /* overlong */
        assert_int_equal(lic_temporary_issue(f->s, &bad, NULL, NULL, &t), -EINVAL);
        bad = d.d;
        memset(big, 'u', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        bad.user_name = big;
        assert_int_equal(lic_temporary_issue(f->s, &bad, NULL, NULL, &t), -EINVAL);
        bad = d.d;
        bad.hardware_id_len = LIC_HARDWARE_ID_MIN - 1;
        assert_int_equal(lic_temporary_issue(f->s, &bad, NULL, NULL, &t), -EINVAL);
        bad.hardware_id_len = LIC_HARDWARE_ID_MAX + 1;
        assert_int_equal(lic_temporary_issue(f->s, &bad, NULL, NULL, &t), -EINVAL);
        bad.hardware_id = NULL;
        bad.hardware_id_len = 20;
        assert_int_equal(lic_temporary_issue(f->s, &bad, NULL, NULL, &t), -EINVAL);
        assert_int_equal(lic_temporary_issue(f->s, NULL, NULL, NULL, &t), -EINVAL);
        assert_int_equal(lic_temporary_issue(f->s, &d.d, "bad version", NULL, &t), -EINVAL);
        assert_int_equal(lic_temporary_issue(f->s, &d.d, NULL, NULL, NULL), -EINVAL);

        /* Token operations. */
        bad = d.d;
        bad.device_name = "";
        assert_int_equal(lic_cal_issue(f->s, &bad, NULL, tmp.token_id, NULL, &t, NULL), -EINVAL);
        assert_int_equal(lic_cal_issue(f->s, &d.d, "x y", tmp.token_id, NULL, &t, NULL), -EINVAL);
        assert_int_equal(lic_cal_issue(f->s, &d.d, NULL, id, NULL, &t, NULL), -ENOENT);
        assert_int_equal(lic_cal_renew(f->s, &bad, tmp.token_id, NULL, &t, NULL), -EINVAL);
        assert_int_equal(lic_cal_renew(f->s, &d.d, tmp.token_id, NULL, &t, NULL), -EMEDIUMTYPE);
        assert_int_equal(lic_cal_renew(f->s, &d.d, id, NULL, &t, NULL), -ENOENT);
        assert_int_equal(lic_revoke(f->s, id, NULL, NULL), -ENOENT);

        /* Queries and reports. */
        {
                struct lic_token_filter flt = {.states = 1u << _LIC_STATE_MAX};

                null = fopen("/dev/null", "w");
                assert_non_null(null);
                assert_int_equal(lic_report_write(f->s, null, LIC_FORMAT_JSON, LIC_REPORT_TOKENS, &flt),
                                 -EINVAL);
                flt = (struct lic_token_filter){.pack_id = "a b"};
                assert_int_equal(lic_report_write(f->s, null, LIC_FORMAT_CSV, LIC_REPORT_TOKENS, &flt),
                                 -EINVAL);
                flt = (struct lic_token_filter){.hardware_id = d.hw, .hardware_id_len = 3};
                assert_int_equal(lic_report_write(f->s, null, LIC_FORMAT_CSV, LIC_REPORT_TOKENS, &flt),
                                 -EINVAL);
                assert_int_equal(lic_report_write(f->s, null, _LIC_FORMAT_MAX, LIC_REPORT_TOKENS, NULL),
                                 -EINVAL);
                assert_int_equal(lic_report_write(f->s, null, LIC_FORMAT_CSV, 0, NULL), -EINVAL);
                assert_int_equal(lic_report_write(f->s, null, LIC_FORMAT_CSV, 1u << 5, NULL), -EINVAL);
                assert_int_equal(lic_report_write(f->s, NULL, LIC_FORMAT_CSV, LIC_REPORT_PACKS, NULL),
                                 -EINVAL);
                fclose(null);
        }
        assert_int_equal(lic_pack_get(f->s, "", &(struct lic_pack){}), -EINVAL);

        assert_unchanged(f->s, before);
        free(before);
        check(f->s);
}

/* ---- batches, audit, consistency ----------------------------------------- */

static void test_batch(void **state) {
        struct fixture *f = *state;
        struct lic_token cal;
        struct dev d[4];

        for (unsigned i = 0; i < 4; i++)
                dev_init(&d[i], i);
        assert_int_equal(lic_pack_install(f->s, "p", "2025", 2), 0);

        /* A failing operation inside a batch undoes only itself. */
        assert_int_equal(lic_store_batch_begin(f->s), 0);
        assert_int_equal(lic_store_batch_begin(f->s), -EINVAL);
        assert_int_equal(get_cal(f->s, &d[0], NULL, &cal), 0);
        assert_int_equal(lic_pack_install(f->s, "p", "2025", 2), -EEXIST);
        assert_int_equal(get_cal(f->s, &d[1], NULL, &cal), 0);
        assert_int_equal(get_cal(f->s, &d[2], NULL, &cal), -ENOSPC);
        check(f->s);
        assert_int_equal(lic_store_batch_commit(f->s), 0);
        assert_int_equal(available(f->s, "p"), 0);
        assert_int_equal(count_actions(f->s, LIC_ACTION_ISSUE), 2);

        /* An aborted batch leaves nothing. */
        assert_int_equal(lic_store_batch_begin(f->s), 0);
        assert_int_equal(lic_pack_install(f->s, "q", "2025", 2), 0);
        assert_int_equal(get_cal(f->s, &d[2], NULL, &cal), 0);
        assert_int_equal(lic_store_batch_abort(f->s), 0);
        assert_int_equal(lic_pack_get(f->s, "q", &(struct lic_pack){}), -ENOENT);
        assert_int_equal(lic_token_get(f->s, cal.token_id, &cal), -ENOENT);

        /* A batch left open at close is rolled back. */
        assert_int_equal(lic_store_batch_begin(f->s), 0);
        assert_int_equal(lic_pack_install(f->s, "r", "2025", 2), 0);
        reopen(f);
        assert_int_equal(lic_pack_get(f->s, "r", &(struct lic_pack){}), -ENOENT);
        check(f->s);
}

struct actions {
        unsigned n;
        enum lic_action a[32];
        char rows[32][160];
};

static int collect_audit(const struct lic_audit *a, void *userdata) {
        struct actions *x = userdata;

        if (x->n < ELEMENTSOF(x->a)) {
                x->a[x->n] = a->action;
                snprintf(x->rows[x->n], sizeof(x->rows[0]), "%s %s %s %s %d",
                         lic_action_to_string(a->action), a->pack_id, a->device, a->user, a->has_token);
        }
        x->n++;
        return 0;
}

static int count_action_cb(const struct lic_audit *a, void *userdata) {
        unsigned *n = userdata;

        n[0] += a->action == (enum lic_action)n[1];
        return 0;
}

static int count_actions(struct lic_store *s, enum lic_action a) {
        unsigned n[2] = {0, a};

        assert_true(lic_audit_list(s, 0, 0, count_action_cb, n) >= 0);
        return (int)n[0];
}

static void test_audit_log(void **state) {
        struct fixture *f = *state;
        static const enum lic_action want[] = {
                LIC_ACTION_INSTALL, LIC_ACTION_TEMPORARY, LIC_ACTION_VALIDATE, LIC_ACTION_ISSUE,
                LIC_ACTION_RENEW,   LIC_ACTION_TEMPORARY, LIC_ACTION_VALIDATE, LIC_ACTION_ISSUE,
                LIC_ACTION_REVOKE,  LIC_ACTION_EXPIRE,    LIC_ACTION_EXPIRE,
        };
        struct lic_token cal, cal2;
        struct actions x = {};
        struct dev a, b;

        dev_init(&a, 1);
        dev_init(&b, 2);
        assert_int_equal(lic_pack_install(f->s, "p", "2025", 5), 0);
        assert_int_equal(get_cal(f->s, &a, NULL, &cal), 0);
        clock_set(f, cal.expires - USEC_PER_DAY);
        assert_int_equal(lic_cal_renew(f->s, &a.d, cal.token_id, NULL, &cal, NULL), 0);
        assert_int_equal(get_cal(f->s, &b, NULL, &cal2), 0);
        assert_int_equal(lic_revoke(f->s, cal2.token_id, NULL, NULL), 0);
        /* a's temporary token (T0 + 90 d) and a's CAL; b's temporary token
         * was issued with a's renewal and lives 90 days, longer. */
        clock_set(f, cal.expires);
        assert_int_equal(lic_expire(f->s), 2);

        assert_int_equal(lic_audit_list(f->s, 0, 0, collect_audit, &x), ELEMENTSOF(want));
        for (unsigned i = 0; i < ELEMENTSOF(want); i++)
                assert_int_equal(x.a[i], want[i]);
        assert_string_equal(x.rows[0], "install p   0");
        assert_string_equal(x.rows[1], "temporary  PC-0001 CORP\\user1 1");
        assert_string_equal(x.rows[3], "issue p PC-0001 CORP\\user1 1");
        assert_string_equal(x.rows[8], "revoke p PC-0002 CORP\\user2 1");
        /* Paging. */
        x = (struct actions){};
        assert_int_equal(lic_audit_list(f->s, 3, 2, collect_audit, &x), 2);
        assert_int_equal(x.a[0], LIC_ACTION_ISSUE);
        assert_int_equal(x.a[1], LIC_ACTION_RENEW);
        check(f->s);
}

static void test_check_detects_tampering(void **state) {
        struct fixture *f = *state;
        char bad[LIC_PACK_ID_MAX + 1] = "";
        struct lic_token cal;
        struct dev d;

        dev_init(&d, 1);
        assert_int_equal(lic_pack_install(f->s, "a", "2025", 5), 0);
        assert_int_equal(lic_pack_install(f->s, "b", "2025", 5), 0);
        assert_int_equal(get_cal(f->s, &d, NULL, &cal), 0);
        check(f->s);
        /* Someone edits the pool behind the store's back. */
        sql_exec(f->path, "UPDATE packs SET available = available - 1 WHERE id = 'b'");
        assert_int_equal(lic_store_check(f->s, bad, sizeof(bad)), -EUCLEAN);
        assert_string_equal(bad, "b");
        /* The schema keeps the pool within 0..count whatever runs. */
        {
                sqlite3 *db;

                assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
                assert_int_not_equal(
                        sqlite3_exec(db, "UPDATE packs SET available = count + 1", NULL, NULL, NULL),
                        SQLITE_OK);
                assert_int_not_equal(sqlite3_exec(db,
                                                  "UPDATE tokens SET state = 2 WHERE kind = 1; "
                                                  "INSERT INTO tokens SELECT * FROM tokens",
                                                  NULL, NULL, NULL),
                                     SQLITE_OK);
                sqlite3_close(db);
        }
}

/* ---- schema 2: lending between license servers --------------------------- */

/* The released schema 1 exactly as migrations[0] wrote it, with a few rows:
 * what a server upgraded from the first release has on disk. */
static const char schema1_sql[] =
        "PRAGMA journal_mode = WAL;"
        "CREATE TABLE packs (id TEXT PRIMARY KEY NOT NULL, product_version TEXT NOT NULL,"
        " count INTEGER NOT NULL CHECK (count BETWEEN 1 AND 1000000),"
        " available INTEGER NOT NULL CHECK (available BETWEEN 0 AND count), installed INTEGER NOT NULL);"
        "CREATE TABLE tokens (token_id BLOB PRIMARY KEY NOT NULL CHECK (length(token_id) = 16),"
        " kind INTEGER NOT NULL CHECK (kind IN (1, 2)), state INTEGER NOT NULL CHECK (state BETWEEN 0 AND "
        "4),"
        " pack_id TEXT REFERENCES packs (id), product_version TEXT NOT NULL, device_name TEXT NOT NULL,"
        " hardware_id BLOB NOT NULL CHECK (length(hardware_id) BETWEEN 16 AND 64), user_name TEXT NOT NULL,"
        " issued INTEGER NOT NULL, expires INTEGER NOT NULL CHECK (expires > issued),"
        " state_time INTEGER NOT NULL, renewed_from BLOB REFERENCES tokens (token_id),"
        " CHECK ((kind = 1 AND pack_id IS NULL AND state IN (0, 1, 4)) OR"
        " (kind = 2 AND pack_id IS NOT NULL AND state IN (2, 3, 4))));"
        "CREATE UNIQUE INDEX tokens_live_temporary ON tokens (hardware_id) WHERE state IN (0, 1);"
        "CREATE UNIQUE INDEX tokens_active_cal ON tokens (hardware_id, product_version) WHERE state = 2;"
        "CREATE INDEX tokens_device ON tokens (hardware_id, state);"
        "CREATE INDEX tokens_pack ON tokens (pack_id, state, state_time);"
        "CREATE INDEX tokens_due ON tokens (state, expires);"
        "CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL,"
        " action TEXT NOT NULL CHECK (action IN ('install', 'temporary', 'validate', 'issue',"
        " 'renew', 'expire', 'revoke')), token_id BLOB, pack_id TEXT, device TEXT, user TEXT,"
        " detail TEXT NOT NULL);"
        /* A pack of 3 with one CAL issued on a validated temporary token. */
        "INSERT INTO packs VALUES ('old-pack', '2025', 3, 2, 1794000000000000);"
        "INSERT INTO tokens VALUES (x'01010101010101010101010101010101', 1, 1, NULL, '', 'PC-OLD',"
        " x'6f6c642d6465766963652d30303030303031', 'alice', 1794000000000000, 1801776000000000,"
        " 1794000000000000, NULL);"
        "INSERT INTO tokens VALUES (x'02020202020202020202020202020202', 2, 2, 'old-pack', '2025', 'PC-OLD',"
        " x'6f6c642d6465766963652d30303030303031', 'alice', 1794000000000000, 1799000000000000,"
        " 1794000000000000, NULL);"
        "INSERT INTO audit (time, action, pack_id, detail) VALUES (1794000000000000, 'install', 'old-pack',"
        " '3 CALs, product version 2025');"
        "INSERT INTO audit (time, action, token_id, device, user, detail) VALUES (1794000000000000,"
        " 'temporary', x'01010101010101010101010101010101', 'PC-OLD', 'alice', 'expires x');"
        "INSERT INTO audit (time, action, token_id, pack_id, device, user, detail) VALUES"
        " (1794000000000000, 'issue', x'02020202020202020202020202020202', 'old-pack', 'PC-OLD', 'alice',"
        " 'expires y');"
        "PRAGMA application_id = 1953719916; PRAGMA user_version = 1;";

static void test_migrate_from_schema_1(void **state) {
        struct fixture *f = *state;
        static const uint8_t old_cal[LIC_TOKEN_ID_SIZE] = {2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2};
        char path[160], text[64];
        struct lic_store *s = NULL;
        struct lic_token t;
        struct actions x = {};
        struct dev d;

        assert_int_equal(lic_store_schema_version(), 2);
        snprintf(path, sizeof(path), "%s/v1.db", f->dir);
        sql_exec(path, schema1_sql);
        assert_int_equal(sql_int(path, "PRAGMA user_version"), 1);
        /* Schema 1 refuses the new audit actions... */
        {
                sqlite3 *db;

                assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
                assert_int_not_equal(sqlite3_exec(db,
                                                  "INSERT INTO audit (time, action, detail) VALUES "
                                                  "(1, 'lend', 'x')",
                                                  NULL, NULL, NULL),
                                     SQLITE_OK);
                sqlite3_close(db);
        }

        assert_int_equal(lic_store_open(path, &s), 0);
        lic_store_set_random(s, test_random, &f->rng);
        assert_int_equal(sql_int(path, "PRAGMA user_version"), 2);
        assert_int_equal(sql_int(path, "PRAGMA application_id"), 0x7473666c);
        /* ... the data is all there, lent_to NULL for what was issued before. */
        assert_int_equal(sql_int(path, "SELECT count(*) FROM tokens WHERE lent_to IS NULL"), 2);
        assert_int_equal(sql_int(path, "SELECT count(*) FROM audit"), 3);
        assert_int_equal(sql_int(path, "SELECT max(seq) FROM audit"), 3);
        sql_text(path, "SELECT group_concat(action, ',') FROM (SELECT action FROM audit ORDER BY seq)", text,
                 sizeof(text));
        assert_string_equal(text, "install,temporary,issue");
        sql_text(path, "SELECT name FROM sqlite_schema WHERE name LIKE 'audit%' ORDER BY name", text,
                 sizeof(text));
        assert_string_equal(text, "audit");
        assert_int_equal(lic_token_get(s, old_cal, &t), 0);
        assert_string_equal(t.pack_id, "old-pack");
        assert_string_equal(t.lent_to, "");
        assert_int_equal(t.state, LIC_STATE_ACTIVE);
        assert_int_equal(available(s, "old-pack"), 2);
        check(s);

        /* The new actions are accepted, and seq goes on from the old rows
         * (sqlite_sequence followed the rename). */
        dev_init(&d, 7);
        assert_int_equal(lic_cal_lend(s, &d.d, "2025", "lic-a", NULL, &t, NULL), 0);
        assert_string_equal(t.lent_to, "lic-a");
        assert_int_equal(lic_audit_list(s, 3, 0, collect_audit, &x), 1);
        assert_int_equal(x.a[0], LIC_ACTION_LEND);
        assert_int_equal(sql_int(path, "SELECT max(seq) FROM audit"), 4);
        assert_int_equal(available(s, "old-pack"), 1);
        check(s);
        lic_store_close(s);

        /* Reopening migrates nothing again. */
        assert_int_equal(lic_store_open(path, &s), 0);
        assert_int_equal(sql_int(path, "PRAGMA user_version"), 2);
        assert_int_equal(sql_int(path, "SELECT count(*) FROM audit"), 4);
        lic_store_close(s);
}

static void test_lend(void **state) {
        struct fixture *f = *state;
        struct lic_token a, again, b, own, renewed;
        struct dev d[4];
        const char *reason = NULL;
        char *before, *out;

        for (unsigned i = 0; i < 4; i++)
                dev_init(&d[i], i);
        assert_int_equal(lic_pack_install(f->s, "small", "2025", 1), 0);
        assert_int_equal(lic_pack_install(f->s, "big", "2025", 2), 0);
        assert_int_equal(lic_pack_install(f->s, "other", "2022", 1), 0);

        /* From the pack with the most available, recorded as lent. */
        assert_int_equal(lic_cal_lend(f->s, &d[0].d, "2025", "lic-a", NULL, &a, &reason), 0);
        assert_string_equal(a.pack_id, "big");
        assert_string_equal(a.lent_to, "lic-a");
        assert_int_equal(a.kind, LIC_KIND_CAL);
        assert_int_equal(a.state, LIC_STATE_ACTIVE);
        assert_false(a.renewed);
        assert_true(a.expires - a.issued >= LIC_CAL_LIFETIME_MIN &&
                    a.expires - a.issued <= LIC_CAL_LIFETIME_MAX);
        assert_int_equal(count_actions(f->s, LIC_ACTION_LEND), 1);
        assert_int_equal(available(f->s, "big"), 1);
        check(f->s);

        /* Idempotent: the same record, nothing written. */
        before = snapshot(f->s);
        assert_int_equal(lic_cal_lend(f->s, &d[0].d, "2025", "lic-a", NULL, &again, NULL), 1);
        assert_memory_equal(again.token_id, a.token_id, LIC_TOKEN_ID_SIZE);
        assert_unchanged(f->s, before);
        free(before);
        /* Any version: the active CAL of 2025 answers too. */
        assert_int_equal(lic_cal_lend(f->s, &d[0].d, NULL, "lic-b", NULL, &again, NULL), 1);
        assert_memory_equal(again.token_id, a.token_id, LIC_TOKEN_ID_SIZE);

        /* A device with a CAL issued here for our own terminal servers gets
         * that one, not a second. */
        assert_int_equal(get_cal(f->s, &d[1], "2025", &own), 0);
        assert_string_equal(own.lent_to, "");
        assert_int_equal(lic_cal_lend(f->s, &d[1].d, "2025", "lic-a", NULL, &again, NULL), 1);
        assert_memory_equal(again.token_id, own.token_id, LIC_TOKEN_ID_SIZE);
        assert_string_equal(again.lent_to, "");

        /* The version asked for: 2022 comes from "other" only. */
        assert_int_equal(lic_cal_lend(f->s, &d[2].d, "2022", "lic-a", NULL, &b, NULL), 0);
        assert_string_equal(b.pack_id, "other");
        assert_string_equal(b.product_version, "2022");

        /* 2025 pools empty now: -ENOSPC, nothing changes. */
        assert_int_equal(lic_cal_lend(f->s, &d[3].d, "2025", "lic-a", NULL, &b, NULL), 0);
        assert_int_equal(available(f->s, "small") + available(f->s, "big"), 0);
        dev_init(&d[3], 9);
        before = snapshot(f->s);
        assert_int_equal(lic_cal_lend(f->s, &d[3].d, "2025", "lic-a", NULL, &b, &reason), -ENOSPC);
        assert_non_null(reason);
        assert_int_equal(lic_cal_lend(f->s, &d[3].d, NULL, "lic-a", NULL, &b, NULL), -ENOSPC);
        assert_unchanged(f->s, before);
        free(before);

        /* Bad arguments: nothing looked up. */
        assert_int_equal(lic_cal_lend(f->s, &d[3].d, "2025", "", NULL, &b, NULL), -EINVAL);
        assert_int_equal(lic_cal_lend(f->s, &d[3].d, "2025", NULL, NULL, &b, NULL), -EINVAL);
        assert_int_equal(lic_cal_lend(f->s, &d[3].d, "2025", "lic a", NULL, &b, NULL), -EINVAL);
        assert_int_equal(lic_cal_lend(f->s, &d[3].d, "2025",
                                      "a123456789b123456789c123456789d123456789e123456789f123456789g123",
                                      NULL, &b, NULL),
                         -EINVAL);
        assert_int_equal(lic_cal_lend(f->s, &d[3].d, "20 25", "lic-a", NULL, &b, NULL), -EINVAL);

        /* Renewal of a lent CAL: the device presents it here, as any other. */
        clock_set(f, a.expires - 8 * USEC_PER_DAY);
        assert_int_equal(lic_cal_issue(f->s, &d[0].d, NULL, a.token_id, NULL, &renewed, NULL), -EAGAIN);
        clock_set(f, a.expires - 7 * USEC_PER_DAY);
        assert_int_equal(lic_cal_issue(f->s, &d[0].d, NULL, a.token_id, NULL, &renewed, NULL), 0);
        assert_true(renewed.renewed);
        assert_memory_equal(renewed.renewed_from, a.token_id, LIC_TOKEN_ID_SIZE);
        assert_string_equal(renewed.pack_id, "big");
        assert_string_equal(renewed.lent_to, "lic-a");
        assert_int_equal(lic_token_get(f->s, a.token_id, &again), 0);
        assert_int_equal(again.state, LIC_STATE_EXPIRED);
        check(f->s);

        /* Reports show lent_to. */
        out = report(f->s, LIC_FORMAT_JSON, LIC_REPORT_TOKENS, NULL);
        assert_non_null(strstr(out, "\"lent_to\": \"lic-a\""));
        assert_non_null(strstr(out, "\"lent_to\": null"));
        free(out);
        out = report(f->s, LIC_FORMAT_CSV, LIC_REPORT_TOKENS, NULL);
        assert_non_null(strstr(out, ",renewed_from,lent_to\r\n"));
        assert_non_null(strstr(out, ",lic-a\r\n"));
        free(out);
        out = report(f->s, LIC_FORMAT_TABLE, LIC_REPORT_TOKENS, NULL);
        assert_non_null(strstr(out, "LENT TO"));
        free(out);

        /* Lent CALs lapse back into their pools like the others. */
        clock_set(f, renewed.expires);
        assert_true(lic_expire(f->s) >= 1);
        check(f->s);
}

static void test_audit_borrow(void **state) {
        struct fixture *f = *state;
        static const uint8_t id[LIC_TOKEN_ID_SIZE] = {0xab, 1, 2, 3};
        struct actions x = {};
        char *before;

        assert_int_equal(lic_pack_install(f->s, "p", "2025", 1), 0);
        assert_int_equal(lic_audit_borrow(f->s, id, "their-pack", "PC-1", "alice", "lic-b", "for node ts1"),
                         0);
        assert_int_equal(lic_audit_borrow(f->s, id, "their-pack", "PC-1", NULL, "lic-b", NULL), 0);
        assert_int_equal(lic_audit_list(f->s, 1, 0, collect_audit, &x), 2);
        assert_int_equal(x.a[0], LIC_ACTION_BORROW);
        assert_string_equal(x.rows[0], "borrow their-pack PC-1 alice 1");
        assert_string_equal(lic_action_to_string(LIC_ACTION_BORROW), "borrow");
        assert_string_equal(lic_action_to_string(LIC_ACTION_LEND), "lend");
        /* No pool change, no record. */
        assert_int_equal(available(f->s, "p"), 1);
        assert_int_equal(sql_int(f->path, "SELECT count(*) FROM tokens"), 0);
        assert_int_equal(sql_int(f->path, "SELECT count(*) FROM audit WHERE detail = "
                                          "'borrowed from lic-b; for node ts1'"),
                         1);

        before = snapshot(f->s);
        assert_int_equal(lic_audit_borrow(f->s, id, "bad pack", "PC-1", NULL, "lic-b", NULL), -EINVAL);
        assert_int_equal(lic_audit_borrow(f->s, id, "p", "", NULL, "lic-b", NULL), -EINVAL);
        assert_int_equal(lic_audit_borrow(f->s, id, "p", "PC-1", NULL, "", NULL), -EINVAL);
        assert_int_equal(lic_audit_borrow(f->s, id, "p", "PC-1", "\xff", "lic-b", NULL), -EINVAL);
        assert_unchanged(f->s, before);
        free(before);
        check(f->s);
}

/* A device that came without a cookie: its temporary token has no user;
 * the logon names the user, the Device CAL records them, and a later
 * logon by someone else does not rename the record. */
static void test_logon_names_the_user_of_a_cookieless_device(void **state) {
        struct fixture *f = *state;
        struct lic_token tmp, cal, got;
        struct dev a;

        dev_init(&a, 1);
        a.d.user_name = NULL;
        assert_int_equal(lic_pack_install(f->s, "P1", "2025", 2), 0);
        assert_int_equal(lic_temporary_issue(f->s, &a.d, NULL, NULL, &tmp), 0);
        assert_string_equal(tmp.user_name, "");
        assert_int_equal(lic_temporary_validate_user(f->s, tmp.token_id, a.hw, sizeof(a.hw), "bob", NULL),
                         0);
        assert_int_equal(lic_token_get(f->s, tmp.token_id, &got), 0);
        assert_string_equal(got.user_name, "bob");
        /* Validated again by another user: already validated, name kept. */
        assert_int_equal(lic_temporary_validate_user(f->s, tmp.token_id, a.hw, sizeof(a.hw), "eve", NULL),
                         1);
        assert_int_equal(lic_token_get(f->s, tmp.token_id, &got), 0);
        assert_string_equal(got.user_name, "bob");
        /* The CAL asked for without a user records the logon's. */
        assert_int_equal(lic_cal_issue(f->s, &a.d, NULL, tmp.token_id, NULL, &cal, NULL), 0);
        assert_string_equal(cal.user_name, "bob");
        /* Too long a name changes nothing. */
        {
                char longname[LIC_USER_NAME_MAX + 2];

                memset(longname, 'x', sizeof(longname) - 1);
                longname[sizeof(longname) - 1] = '\0';
                assert_int_equal(
                        lic_temporary_validate_user(f->s, tmp.token_id, a.hw, sizeof(a.hw), longname, NULL),
                        -EINVAL);
        }
        check(f->s);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_migrate_from_empty_and_reopen, setup, teardown),
                cmocka_unit_test_setup_teardown(test_logon_names_the_user_of_a_cookieless_device, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_refuses_newer_and_foreign, setup, teardown),
                cmocka_unit_test_setup_teardown(test_pack_install_get_list, setup, teardown),
                cmocka_unit_test_setup_teardown(test_temporary_expires_at_90_days, setup, teardown),
                cmocka_unit_test_setup_teardown(test_temporary_ids_and_one_per_device, setup, teardown),
                cmocka_unit_test_setup_teardown(test_validate_rules, setup, teardown),
                cmocka_unit_test_setup_teardown(test_cal_issue, setup, teardown),
                cmocka_unit_test_setup_teardown(test_cal_pick_pack, setup, teardown),
                cmocka_unit_test_setup_teardown(test_cal_expiry_distribution, setup, teardown),
                cmocka_unit_test_setup_teardown(test_renewal_window, setup, teardown),
                cmocka_unit_test_setup_teardown(test_expired_cals_return_to_pool, setup, teardown),
                cmocka_unit_test_setup_teardown(test_pool_exhaustion_changes_nothing, setup, teardown),
                cmocka_unit_test_setup_teardown(test_revocation_bound, setup, teardown),
                cmocka_unit_test_setup_teardown(test_no_token_twice_2000_devices, setup, teardown),
                cmocka_unit_test_setup_teardown(test_kill9_mid_run, setup, teardown),
                cmocka_unit_test_setup_teardown(test_report_csv_quoting, setup, teardown),
                cmocka_unit_test_setup_teardown(test_report_formats, setup, teardown),
                cmocka_unit_test_setup_teardown(test_malformed_inputs_change_nothing, setup, teardown),
                cmocka_unit_test_setup_teardown(test_batch, setup, teardown),
                cmocka_unit_test_setup_teardown(test_audit_log, setup, teardown),
                cmocka_unit_test_setup_teardown(test_check_detects_tampering, setup, teardown),
                cmocka_unit_test_setup_teardown(test_migrate_from_schema_1, setup, teardown),
                cmocka_unit_test_setup_teardown(test_lend, setup, teardown),
                cmocka_unit_test_setup_teardown(test_audit_borrow, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
