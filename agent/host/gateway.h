/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The host role's RDP gateway (DESIGN 2.1, 2.5; docs/gateway.md).
 *
 * sk_lookup hands RDP-port connections that need a decision to the
 * gateway's listening socket. For each one the gateway
 *
 *   accept ─► read the first PDU ─► decide() ─► connect the backend ─► relay
 *             (deadline, size cap,  (caller's     (bound to              (relay.h: bounded
 *              tsf_cr_parse)         policy)       backend_source,        buffers, half-close,
 *                                                  deadline)              resets, idle timeout)
 *
 * and replays to the backend exactly the bytes it read from the client
 * (the first PDU and anything after it) before relaying both ways.
 *
 * The gateway knows no policy: the caller's decide() says where a
 * connection goes (and must refuse routing tokens that name anything but a
 * farm node; the gateway relays wherever it is told). Everything runs on
 * the sd-event loop given to gateway_new(); nothing here is thread-safe.
 */
#pragma once

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <systemd/sd-event.h>

#include "tsfarm/cleanup.h"
#include "tsfarm/clock.h"
#include "tsfarm/userkey.h"
#include "tsfarm/x224.h"

#define GATEWAY_FIRST_PDU_TIMEOUT_DEFAULT (5 * USEC_PER_SEC)
#define GATEWAY_DECIDE_TIMEOUT_DEFAULT (3 * USEC_PER_SEC)
#define GATEWAY_CONNECT_TIMEOUT_DEFAULT (5 * USEC_PER_SEC)
#define GATEWAY_IDLE_TIMEOUT_DEFAULT (2 * USEC_PER_HOUR)
#define GATEWAY_MAX_CONNECTIONS_DEFAULT 4096u
#define GATEWAY_USER_KEY_MAX (TSF_USERKEY_INPUT_MAX + 1)
#define GATEWAY_REASON_MAX 128

struct gateway_config {
        /* Where the gateway listens. With sk_lookup the address hardly
         * matters (the program assigns connections to the socket whatever
         * it is bound to); port 0 picks one, see gateway_get_address(). */
        struct sockaddr_in listen;
        /* Outgoing connections to the LOCAL backend are bound here (the port is ignored:
         * IP_BIND_ADDRESS_NO_PORT defers it to connect()). It must be an
         * address the sk_lookup program lets through, or the agent's own
         * connection to the local RDP port is steered back into the gateway.
         * INADDR_ANY = no bind. */
        struct sockaddr_in backend_source;
        usec_t first_pdu_timeout; /* from accept to a complete first PDU */
        size_t first_pdu_max;     /* bytes read before giving up; at most buffer_size */
        usec_t decide_timeout;    /* for a decide() that answers later */
        usec_t connect_timeout;   /* backend connect */
        usec_t idle_timeout;      /* relay: both directions silent; 0 = none */
        size_t buffer_size;       /* relay: per direction and connection */
        unsigned max_connections; /* in any state; more are accepted and closed at once */
        int backlog;              /* listen(2) */
};

/* Fills in the defaults: 0.0.0.0:3389, no source bind, 5 s first PDU,
 * TSF_FIRST_PDU_MAX, 3 s decision, 5 s connect, 2 h idle, 256 KiB buffers,
 * 4096 connections, SOMAXCONN. */
void gateway_config_init(struct gateway_config *c);

enum gateway_verdict {
        GATEWAY_REFUSE = 0, /* close the client (the zero value, so a half-filled decision refuses) */
        GATEWAY_LOCAL,      /* relay to this host's RDP server */
        GATEWAY_PEER,       /* relay to another farm node */
        _GATEWAY_VERDICT_MAX,
};

struct gateway_request {
        uint64_t id;               /* for gateway_complete_decision() */
        const struct tsf_cr *cr;   /* the parsed first PDU */
        struct sockaddr_in client; /* the client's address */
        struct sockaddr_in local;  /* the address the client connected to (sk_lookup keeps it) */
};

struct gateway_decision {
        enum gateway_verdict verdict;
        struct sockaddr_in backend; /* LOCAL / PEER: where to connect */
        /* Normalised user key ("" if unknown): shown by gateway_foreach_conn(),
         * matched by gateway_close_user(), and used for stale legs: when a
         * connection for a key starts relaying, older relayed connections
         * with the same key are reset (DESIGN 2.5) unless keep_others. */
        char user_key[GATEWAY_USER_KEY_MAX];
        bool keep_others;                /* the user may hold several sessions: no stale-leg closing */
        char reason[GATEWAY_REASON_MAX]; /* for the log: "mstshash alice: session on node2" */
};

/* Decides where a connection goes. Returns 0 with `out` filled (it starts
 * zeroed, i.e. REFUSE), GATEWAY_DECIDE_LATER to answer later through
 * gateway_complete_decision() (e.g. after asking the directory; `req` is
 * only valid during the call), or a negative errno (the client is refused
 * and the error logged). Must not call back into the gateway. */
#define GATEWAY_DECIDE_LATER 1
typedef int (*gateway_decide_fn)(void *userdata, const struct gateway_request *req,
                                 struct gateway_decision *out);

struct gateway;

/* Creates the listening socket (non-blocking, SO_REUSEADDR) and starts
 * accepting on `e`. Returns 0 or a negative errno: -EINVAL for a bad
 * config (first_pdu_max larger than buffer_size, ...), or what socket(),
 * bind() or listen() said. Logs nothing: the caller knows what it was for. */
int gateway_new(sd_event *e, const struct gateway_config *c, gateway_decide_fn decide, void *userdata,
                struct gateway **ret);
/* Resets every connection still open (relayed or not) and closes the
 * listening socket. */
struct gateway *gateway_free(struct gateway *g);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct gateway *, gateway_free);

/* The listening socket, for the BPF `gateway` sockmap. Owned by the gateway. */
int gateway_fd(const struct gateway *g);
/* The address it is bound to (the real port when the config said 0). */
int gateway_get_address(const struct gateway *g, struct sockaddr_in *ret);

/* Answers a GATEWAY_DECIDE_LATER. Returns 0, -ESRCH if the connection is gone
 * (the client left, or the decide deadline passed: it was refused), -EBUSY if
 * it was not waiting for a decision. */
int gateway_complete_decision(struct gateway *g, uint64_t id, const struct gateway_decision *d);

struct gateway_stats {
        uint64_t accepted;
        /* Closed before a decision. */
        uint64_t refused_timeout;  /* no complete first PDU by the deadline */
        uint64_t refused_invalid;  /* the parser said invalid */
        uint64_t refused_oversize; /* first_pdu_max bytes and still incomplete */
        uint64_t refused_eof;      /* the client closed (or reset) first */
        uint64_t refused_full;     /* max_connections reached */
        uint64_t refused_error;    /* out of memory, decide() failed or was too slow, ... */
        /* decide() said REFUSE. */
        uint64_t refused_decision;
        /* decide() said LOCAL / PEER but the backend could not be reached. */
        uint64_t backend_failed;
        /* Relays. */
        uint64_t relayed; /* started */
        uint64_t relayed_local;
        uint64_t relayed_peer;
        uint64_t ended_closed; /* both directions ended with EOF */
        uint64_t ended_reset_client;
        uint64_t ended_reset_backend;
        uint64_t ended_idle;
        uint64_t ended_error;
        uint64_t stale_closed; /* reset because the same user connected again */
        uint64_t user_closed;  /* reset by gateway_close_user() */
        /* Bytes written to the backend / to the client, finished and live
         * connections; client→backend includes the replayed first PDU. */
        uint64_t bytes_to_backend;
        uint64_t bytes_to_client;
        /* Now. */
        uint64_t active;        /* connections in any state */
        uint64_t active_relays; /* of which relaying */
        uint64_t buffered;      /* bytes in relay buffers */
        uint64_t buffered_peak; /* largest per-connection buffered amount seen (<= 2 * buffer_size) */
};

void gateway_get_stats(const struct gateway *g, struct gateway_stats *ret);

enum gateway_conn_state {
        GATEWAY_CONN_FIRST_PDU = 0, /* reading the first PDU */
        GATEWAY_CONN_DECIDING,      /* waiting for a GATEWAY_DECIDE_LATER answer */
        GATEWAY_CONN_CONNECTING,    /* connecting to the backend */
        GATEWAY_CONN_RELAYING,
        _GATEWAY_CONN_STATE_MAX,
};

struct gateway_conn_info {
        uint64_t id;
        enum gateway_conn_state state;
        enum gateway_verdict verdict; /* REFUSE until decided */
        struct sockaddr_in client;
        struct sockaddr_in local;
        struct sockaddr_in backend; /* zero until decided */
        const char *user_key;       /* "" if unknown; valid during the callback */
        uint64_t bytes_to_backend;
        uint64_t bytes_to_client;
        size_t buffered;
        bool client_eof;          /* the client has finished sending (half-closed) */
        bool backend_eof;         /* the backend has finished sending */
        usec_t accepted_realtime; /* CLOCK_REALTIME, for display */
        usec_t age;               /* since accept */
        usec_t idle;              /* since the last byte moved (since accept before relaying) */
};

/* Calls fn for every connection, oldest first; a negative return from fn
 * stops the walk and is returned. fn must not call back into the gateway. */
typedef int (*gateway_conn_fn)(const struct gateway_conn_info *info, void *userdata);
int gateway_foreach_conn(const struct gateway *g, gateway_conn_fn fn, void *userdata);

/* Told when a relay starts (started) and when it ends, however it ends
 * (gateway_free() included). Must not call back into the gateway. */
typedef void (*gateway_relay_fn)(void *userdata, uint64_t id, const struct gateway_decision *d,
                                 const struct sockaddr_in *client, bool started);
void gateway_set_relay_observer(struct gateway *g, gateway_relay_fn fn, void *userdata);

/* Resets every connection whose decision named `user_key` (forced logoff,
 * session moved). Returns how many. */
int gateway_close_user(struct gateway *g, const char *user_key);

const char *gateway_verdict_to_string(enum gateway_verdict v);
const char *gateway_conn_state_to_string(enum gateway_conn_state s);
