/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The directory role's store (DESIGN 2.2; docs/directory.md): nodes,
 * sessions indexed by user key, a revision every change bumps, the change
 * feed, and placement. SQLite in WAL mode; no networking here.
 *
 * Every function returns a negative errno on failure and changes nothing
 * then: each write is one transaction. Callbacks run inside a read
 * transaction and must not call back into the store. Not thread-safe: one
 * store belongs to one event loop. Times are CLOCK_REALTIME microseconds
 * from tsf_now_realtime().
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "tsfarm/clock.h"
#include "tsfarm/userkey.h"

/* Longest node name (letters, digits, '.', '-', '_'), boot id, address list
 * (addresses separated by spaces), device name and client address. */
#define DIR_NODE_NAME_MAX 63
#define DIR_BOOT_ID_MAX 63
#define DIR_ADDRESSES_MAX 511
#define DIR_DEVICE_MAX 255
#define DIR_CLIENT_ADDR_MAX 63
#define DIR_WEIGHT_MAX 10000u

/* How long a placement answer holds a slot on its node for the logon that
 * should follow it. */
#define DIR_PENDING_TTL_DEFAULT (30 * USEC_PER_SEC)
/* Pending logons tracked at once; placements beyond this are answered but
 * not reserved (the reservation only refines balance, it is no promise). */
#define DIR_PENDING_MAX 65536u

/* Like `change logon /enable | /disable | /drainuntilrestart`. */
enum dir_drain {
        DIR_DRAIN_ENABLED = 0,
        DIR_DRAIN_DISABLED = 1,      /* no new sessions; reconnects still go there */
        DIR_DRAIN_UNTIL_RESTART = 2, /* like DISABLED until the node boots again */
        _DIR_DRAIN_MAX,
};

enum dir_session_state {
        DIR_SESSION_ACTIVE = 0,
        DIR_SESSION_DISCONNECTED = 1,
        DIR_SESSION_LOST = 2, /* its node went down; nobody is sent there */
        _DIR_SESSION_STATE_MAX,
};

enum dir_event {
        DIR_EVENT_LOGON = 0,
        DIR_EVENT_DISCONNECT,
        DIR_EVENT_RECONNECT,
        DIR_EVENT_LOGOFF,
        _DIR_EVENT_MAX,
};

enum dir_policy {
        DIR_POLICY_ONE_SESSION = 0, /* a user with a session is sent back to it */
        DIR_POLICY_ALLOW_MULTIPLE,  /* only a disconnected session is reconnected */
};

struct dir_store;

/* What a node says about itself when it registers. */
struct dir_node_info {
        const char *name;
        const char *addresses; /* "10.0.0.1 fd00::1", may be NULL */
        uint16_t rdp_port;
        uint32_t weight;        /* 1..DIR_WEIGHT_MAX */
        uint32_t session_limit; /* 0: none */
        const char *boot_id;    /* /proc/sys/kernel/random/boot_id */
};

struct dir_node {
        uint64_t revision;
        char name[DIR_NODE_NAME_MAX + 1];
        char addresses[DIR_ADDRESSES_MAX + 1];
        char boot_id[DIR_BOOT_ID_MAX + 1];
        uint16_t rdp_port;
        uint32_t weight;
        uint32_t session_limit;
        uint32_t sessions; /* active + disconnected */
        enum dir_drain drain;
        bool up;
        usec_t last_heartbeat;
};

struct dir_session {
        uint64_t id; /* the directory's, stable for the session's life */
        uint64_t revision;
        char node[DIR_NODE_NAME_MAX + 1];
        uint32_t node_session;                    /* the session id on that node */
        char user[TSF_USERKEY_INPUT_MAX + 1];     /* as reported */
        char user_key[TSF_USERKEY_INPUT_MAX + 1]; /* tsf_userkey_index() */
        char domain[TSF_USERKEY_INPUT_MAX + 1];   /* folded, may be "" */
        enum dir_session_state state;
        char device[DIR_DEVICE_MAX + 1];
        char client_addr[DIR_CLIENT_ADDR_MAX + 1];
        usec_t logon_time;
        usec_t state_time;
};

/* A session event as a node reports it. user is required for LOGON; for
 * the others it may be NULL, and must name the session's user if given. */
struct dir_event_info {
        enum dir_event event;
        uint32_t node_session;
        const char *user;
        const char *device;
        const char *client_addr;
};

enum dir_answer_kind {
        DIR_ANSWER_SESSION = 0, /* the user has a session: go there */
        DIR_ANSWER_PLACED,      /* a new session: go to this node (a slot is held) */
        DIR_ANSWER_AMBIGUOUS,   /* a cut cookie matches several users: no answer */
        DIR_ANSWER_NO_NODE,     /* no node can take a new session */
};

struct dir_answer {
        enum dir_answer_kind kind;
        /* SESSION and PLACED: */
        char node[DIR_NODE_NAME_MAX + 1];
        char addresses[DIR_ADDRESSES_MAX + 1];
        uint16_t rdp_port;
        bool redirect; /* node differs from the entry node */
        /* SESSION: */
        uint64_t session_id;
        uint32_t node_session;
        enum dir_session_state state;
        /* PLACED: the reservation lapses then */
        usec_t reserved_until;
};

enum dir_change_kind {
        DIR_CHANGE_NODE = 0,     /* .node is the node as it is now */
        DIR_CHANGE_SESSION,      /* .session is the session as it is now */
        DIR_CHANGE_SESSION_GONE, /* .session: id, node, node_session, user, user_key */
};

struct dir_change {
        uint64_t revision;
        enum dir_change_kind kind;
        const struct dir_node *node;
        const struct dir_session *session;
};

/* Returns < 0 to stop the iteration; that value is returned. */
typedef int (*dir_change_cb)(const struct dir_change *c, void *userdata);

/* Opens (creating and migrating as needed) the store at path. -EPROTONOSUPPORT
 * for a database written by a newer tsfarm, -EMEDIUMTYPE for an SQLite file
 * that is not a directory store or no database at all. */
int dir_store_open(const char *path, struct dir_store **ret);
struct dir_store *dir_store_close(struct dir_store *s);
static inline void dir_store_closep(struct dir_store **s) {
        if (*s)
                dir_store_close(*s);
}

/* The schema version this code writes (PRAGMA user_version). */
int dir_store_schema_version(void);
void dir_store_set_pending_ttl(struct dir_store *s, usec_t ttl);
/* The newest revision handed out. */
uint64_t dir_store_revision(struct dir_store *s);

/* Groups many operations into one transaction (one fsync); each operation
 * inside stays atomic on its own. A batch that is not committed when the
 * store closes is rolled back. */
int dir_store_batch_begin(struct dir_store *s);
int dir_store_batch_commit(struct dir_store *s);
int dir_store_batch_abort(struct dir_store *s);

/* Registers or re-registers a node: it is up and its heartbeat is now. A
 * new boot id clears DRAIN_UNTIL_RESTART and drops the node's sessions
 * (they died with the old boot). The drain state survives otherwise. */
int dir_node_register(struct dir_store *s, const struct dir_node_info *info);
/* -ENOENT for an unknown node, -EHOSTDOWN for one marked down: it has to
 * register again (and report its sessions) before it counts as up. A
 * heartbeat is no change: it does not bump the revision. */
int dir_node_heartbeat(struct dir_store *s, const char *name);
/* Marks nodes whose last heartbeat is more than lapse before now down and
 * their sessions lost. Returns the number of nodes marked down. */
int dir_nodes_expire(struct dir_store *s, usec_t now, usec_t lapse);
int dir_node_set_drain(struct dir_store *s, const char *name, enum dir_drain drain);
int dir_node_get(struct dir_store *s, const char *name, struct dir_node *ret);

/* Applies an event reported by node (the authenticated caller). -ENOENT for
 * an unknown node or session, -EHOSTDOWN for a node marked down, -EINVAL
 * for bad arguments and for state-machine violations; *reason (if not NULL)
 * then says why, in a static string. */
int dir_session_event(struct dir_store *s, const char *node, const struct dir_event_info *ev,
                      const char **reason);
int dir_session_get(struct dir_store *s, const char *node, uint32_t node_session, struct dir_session *ret);

/* Where should user_or_cookie (a reported user name or an mstshash cookie;
 * NULL or one that does not parse: nobody in particular) go, connecting
 * at entry_node (NULL: not at a node)? -ENOENT for an unknown entry node. */
int dir_logon_query(struct dir_store *s, const char *user_or_cookie, const char *entry_node,
                    enum dir_policy policy, struct dir_answer *ret);

/* Every change after revision since, oldest first, at most max of them: the
 * objects' current state (intermediate states are folded) and tombstones.
 * Returns how many were delivered; -ESTALE when since is older than the
 * retained history or newer than the store: resynchronise with
 * dir_snapshot(). */
int dir_changes_since(struct dir_store *s, uint64_t since, unsigned max, dir_change_cb cb, void *userdata);
/* Every node and session, consistent as of *ret_revision; resume the feed
 * from there. Paged for large farms: sessions with id > after, at most
 * limit (0: all); nodes only with the first page (after 0). Returns how
 * many sessions were delivered. Pages read at different revisions still
 * add up: resume the feed from the first page's revision, and it replays
 * (folded) whatever changed while the later pages were read. */
int dir_snapshot(struct dir_store *s, uint64_t after, unsigned limit, dir_change_cb cb, void *userdata,
                 uint64_t *ret_revision);
/* Sessions per state (counts[DIR_SESSION_ACTIVE], ...), as of *ret_revision. */
int dir_session_counts(struct dir_store *s, uint64_t counts[static _DIR_SESSION_STATE_MAX],
                       uint64_t *ret_revision);
/* Forgets tombstones up to revision through; clients behind it get -ESTALE.
 * Returns the number of tombstones removed. */
int dir_changes_compact(struct dir_store *s, uint64_t through);

const char *dir_drain_to_string(enum dir_drain d);
const char *dir_session_state_to_string(enum dir_session_state st);
const char *dir_event_to_string(enum dir_event e);
