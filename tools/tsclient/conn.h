/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One tsclient connection (docs/protocol.md sections 2, 3, 8): TCP, the
 * X.224 Connection Request and Confirm, TLS verified against the farm CA,
 * then TSRP frames through lib/tsproto's reader, with the state machine's
 * table checked both ways. Every call takes an absolute deadline on the
 * monotonic clock, so a thread of the load generator never hangs.
 *
 * Errors (negative errno): -ETIMEDOUT past the deadline; -ECONNRESET the
 * peer closed or reset; -EPROTO a frame the table forbids (ERROR
 * unexpected-pdu was sent); the reader's errors for a broken stream (ERROR
 * sent too); -ECONNREFUSED, -EHOSTUNREACH, ... from connect();
 * -EKEYREJECTED the certificate did not verify; -ENOPROTOOPT the server
 * refused TLS in its Connection Confirm. A text for the user is in the
 * caller's err buffer.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tsfarm/cleanup.h"
#include "tsfarm/clock.h"
#include "tsfarm/tsproto.h"
#include "tsfarm/x224.h"

#define TSC_ERR_MAX 640
#define TSC_NAME_MAX 256
#define TSC_ADDRESS_MAX 300

struct tsc_tls;

/* A TLS client context trusting the CA certificates in `ca_file` (PEM),
 * TLS 1.2 or newer. */
int tsc_tls_new(const char *ca_file, struct tsc_tls **ret, char *err, size_t err_size);
struct tsc_tls *tsc_tls_free(struct tsc_tls *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct tsc_tls *, tsc_tls_free);

struct tsc_conn;

/* Name the certificate must carry: NULL checks `host` (DNS name or IP
 * address); "any" accepts any certificate the CA signed (a farm CA signs
 * only farm nodes, and behind a gateway the node answering is not known
 * in advance). */
#define TSC_TLS_NAME_ANY "any"

/* Connects to host:port, sends `cr`, reads the Confirm, and runs TLS. On
 * success the connection is in the license-request phase. */
int tsc_conn_open(struct tsc_tls *tls, const char *host, const char *port, const char *tls_name,
                  const struct tsf_cr *cr, usec_t deadline, struct tsc_conn **ret, char *err,
                  size_t err_size);

/* Closes: with a TLS close_notify when `graceful`, else just the socket
 * (what a pulled cable or a killed client leaves the server with). */
void tsc_conn_close(struct tsc_conn *c, bool graceful);
static inline void tsc_conn_closep(struct tsc_conn **c) {
        if (*c)
                tsc_conn_close(*c, true);
}

/* Sends one PDU (the table must allow it in the current phase: -EINVAL). */
int tsc_conn_send(struct tsc_conn *c, const struct tsf_pdu *pdu, usec_t deadline);

/* Receives one PDU the table allows; answers KEEPALIVE requests itself
 * and drops replies. deadline 0: do not wait (-EAGAIN when no whole frame
 * is there). TERMINAL_DATA points into the connection's reader, valid
 * until the next call. */
int tsc_conn_recv(struct tsc_conn *c, struct tsf_pdu *pdu, usec_t deadline);

/* Sends ERROR (or DISCONNECT) with a reason, best effort (short deadline). */
void tsc_conn_send_reason(struct tsc_conn *c, enum tsf_pdu_type type, uint16_t reason, const char *text);

int tsc_conn_fd(const struct tsc_conn *c);
/* Whether bytes are already buffered (poll() on the fd would not see them). */
bool tsc_conn_pending(const struct tsc_conn *c);
enum tsf_proto_phase tsc_conn_phase(const struct tsc_conn *c);
/* The verified certificate's common name (the node that answered). */
const char *tsc_conn_peer_name(const struct tsc_conn *c);
/* "ADDRESS:PORT" actually connected to. */
const char *tsc_conn_address(const struct tsc_conn *c);
/* Monotonic time of the last frame sent / received (keepalive timing). */
usec_t tsc_conn_last_send(const struct tsc_conn *c);
usec_t tsc_conn_last_recv(const struct tsc_conn *c);

/* Splits "host:port" / "[v6]:port" (the protocol's target form). */
int tsc_split_host_port(const char *s, char *host, size_t host_size, char *port, size_t port_size);
