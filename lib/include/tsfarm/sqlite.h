/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The SQLite plumbing the stores share (agent/directory/store.c,
 * agent/licensing/store.c): opening a database in WAL mode with
 * synchronous=FULL, migrating its schema by PRAGMA user_version and
 * refusing a file that is newer or not ours, a cache of prepared
 * statements, and operations as transactions or, in a batch, savepoints.
 * What each store keeps in its database, and why these settings suit it,
 * stays in the store. Every function returns a negative errno on failure.
 */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "tsfarm/cleanup.h"

/* What tells one store's database from another's. */
struct tsf_sqlite_spec {
        const char *what;       /* "directory", "license": for messages */
        int32_t application_id; /* PRAGMA application_id: marks the file as the store's */
        /* migrations[i] takes the schema from version i to i + 1. */
        const char *const *migrations;
        size_t n_migrations;
        /* The statements tsf_sqlite_stmt() prepares once and keeps, by the
         * store's own ids 0..n_stmts-1. */
        const char *const *stmt_sql;
        size_t n_stmts;
        unsigned cache_size_kib; /* page cache; 0 for SQLite's default */
};

struct tsf_sqlite {
        sqlite3 *db;
        const struct tsf_sqlite_spec *spec;
        sqlite3_stmt **stmts; /* the store's, then the transaction statements */
        bool in_tx;           /* in an operation: a transaction, or a savepoint in a batch */
        bool batch;
};

/* An SQLite result code (extended or not) as an errno: 0 for OK, ROW and
 * DONE; a unique or primary key constraint is -EEXIST, a file that is not
 * a database -EMEDIUMTYPE, an I/O failure the system call's own errno. */
int tsf_sqlite_errno(sqlite3 *db, int rc);

/* Opens (creates) the database at path and migrates it to the newest
 * schema. -EPROTONOSUPPORT for a schema newer than spec knows (the file is
 * left untouched), -EMEDIUMTYPE for a file that is not this store's. q is
 * zeroed first; call tsf_sqlite_close() on failure too. spec must outlive q. */
int tsf_sqlite_open(struct tsf_sqlite *q, const char *path, const struct tsf_sqlite_spec *spec);
/* Rolls back an open batch, then closes. Fine on a zeroed q. */
void tsf_sqlite_close(struct tsf_sqlite *q);

/* The cached statement id, prepared on first use. Give it back with
 * _cleanup_stmt_ (it is reset, not finalized). */
int tsf_sqlite_stmt(struct tsf_sqlite *q, unsigned id, sqlite3_stmt **ret);
void tsf_sqlite_stmt_donep(sqlite3_stmt **st);
#define _cleanup_stmt_ _cleanup_(tsf_sqlite_stmt_donep)

/* Binds parameters 1.. in order: 't' text (NULL binds NULL), 'i' int64,
 * 'b' blob as (const uint8_t *, size_t) (NULL binds NULL). The values must
 * outlive the statement's use (SQLITE_STATIC). */
int tsf_sqlite_bind_va(sqlite3_stmt *st, const char *fmt, va_list ap);
int tsf_sqlite_bind(sqlite3_stmt *st, const char *fmt, ...);
/* 1 for a row, 0 when done. */
int tsf_sqlite_step(sqlite3_stmt *st);
/* The cached statement id with fmt's parameters bound, stepped once:
 * 1 with *ret on the first row, 0 when there is none (*ret is set in both
 * cases: the caller releases it with _cleanup_stmt_), or a negative errno. */
int tsf_sqlite_query_va(struct tsf_sqlite *q, unsigned id, sqlite3_stmt **ret, const char *fmt, va_list ap);
int tsf_sqlite_query(struct tsf_sqlite *q, unsigned id, sqlite3_stmt **ret, const char *fmt, ...);
/* Runs the cached write statement id; returns the number of rows it changed. */
int tsf_sqlite_run(struct tsf_sqlite *q, unsigned id, const char *fmt, ...);
/* A text column into buf, cut to fit, always terminated; NULL is "". */
void tsf_sqlite_copy_text(sqlite3_stmt *st, int col, char *buf, size_t size);

/* Every write operation is one transaction, or inside a batch one
 * savepoint, so that a failing operation leaves nothing behind. Operations
 * do not nest (-EBUSY). A failing commit rolls the operation back. */
int tsf_sqlite_tx_begin(struct tsf_sqlite *q);
void tsf_sqlite_tx_abort(struct tsf_sqlite *q); /* nothing outside an operation */
int tsf_sqlite_tx_commit(struct tsf_sqlite *q);
static inline void tsf_sqlite_tx_abortp(struct tsf_sqlite **q) {
        if (*q)
                tsf_sqlite_tx_abort(*q);
}

/* Reads that span several statements see one snapshot: *began says whether
 * this started a read transaction (inside a batch or an operation they
 * already have one). Reset the statements before read_end(). */
int tsf_sqlite_read_begin(struct tsf_sqlite *q, bool *began);
void tsf_sqlite_read_end(struct tsf_sqlite *q, bool began);

/* A batch: one transaction, one fsync, for many operations. -EINVAL when
 * one is (begin) or is not (commit, abort) open, or inside an operation.
 * A failing commit rolls the batch back. */
int tsf_sqlite_batch_begin(struct tsf_sqlite *q);
int tsf_sqlite_batch_commit(struct tsf_sqlite *q);
int tsf_sqlite_batch_abort(struct tsf_sqlite *q);
