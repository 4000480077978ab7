/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gateway.h"
#include "relay.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"

/* "255.255.255.255:65535" */
#define ADDR_STR_MAX (INET_ADDRSTRLEN + 6)
/* How many connections one wake-up accepts before other work gets a turn. */
#define ACCEPT_BATCH 64
/* After EMFILE and friends, stop accepting for a while instead of spinning
 * on a listening socket that stays readable. */
#define ACCEPT_PAUSE (100 * USEC_PER_MSEC)
#define WARNING_INTERVAL (10 * USEC_PER_SEC)

struct gateway_conn {
        struct gateway *gateway;
        struct gateway_conn *prev, *next;
        uint64_t id;
        enum gateway_conn_state state;

        int client_fd;  /* until the relay owns it */
        int backend_fd; /* likewise */
        struct sockaddr_in client, local;
        char client_str[ADDR_STR_MAX];
        char backend_str[ADDR_STR_MAX];

        sd_event_source *io;    /* client while reading, backend while connecting */
        sd_event_source *timer; /* the current state's deadline */
        struct relay *relay;

        /* What the client sent before the decision, replayed to the backend. */
        uint8_t *buf;
        size_t len;

        struct gateway_decision decision;
        usec_t accepted_mono, accepted_real;
};

struct gateway {
        sd_event *event;
        struct gateway_config config;
        gateway_decide_fn decide;
        void *userdata;

        int fd;
        sd_event_source *listen_source;
        sd_event_source *resume_source;

        struct gateway_conn *first, *last;
        unsigned n_conns;
        uint64_t next_id;

        gateway_relay_fn on_relay;
        void *relay_userdata;

        /* Counters; the "now" fields are computed in gateway_get_stats(). */
        struct gateway_stats stats;
        usec_t last_full_warning, last_accept_warning;
};

static const char *const verdict_table[_GATEWAY_VERDICT_MAX] = {
        [GATEWAY_REFUSE] = "refuse",
        [GATEWAY_LOCAL] = "local",
        [GATEWAY_PEER] = "peer",
};

const char *gateway_verdict_to_string(enum gateway_verdict v) {
        return (unsigned)v < _GATEWAY_VERDICT_MAX ? verdict_table[v] : "unknown";
}

static const char *const state_table[_GATEWAY_CONN_STATE_MAX] = {
        [GATEWAY_CONN_FIRST_PDU] = "first-pdu",
        [GATEWAY_CONN_DECIDING] = "deciding",
        [GATEWAY_CONN_CONNECTING] = "connecting",
        [GATEWAY_CONN_RELAYING] = "relaying",
};

const char *gateway_conn_state_to_string(enum gateway_conn_state s) {
        return (unsigned)s < _GATEWAY_CONN_STATE_MAX ? state_table[s] : "unknown";
}

void gateway_config_init(struct gateway_config *c) {
        *c = (struct gateway_config){
                .listen = {.sin_family = AF_INET, .sin_port = htons(3389)},
                .backend_source = {.sin_family = AF_INET},
                .first_pdu_timeout = GATEWAY_FIRST_PDU_TIMEOUT_DEFAULT,
                .first_pdu_max = TSF_FIRST_PDU_MAX,
                .decide_timeout = GATEWAY_DECIDE_TIMEOUT_DEFAULT,
                .connect_timeout = GATEWAY_CONNECT_TIMEOUT_DEFAULT,
                .idle_timeout = GATEWAY_IDLE_TIMEOUT_DEFAULT,
                .buffer_size = RELAY_BUFFER_SIZE_DEFAULT,
                .max_connections = GATEWAY_MAX_CONNECTIONS_DEFAULT,
                .backlog = SOMAXCONN,
        };
}

static const char *format_addr(const struct sockaddr_in *a, char *buf, size_t size) {
        char ip[INET_ADDRSTRLEN];

        if (!inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip)))
                snprintf(ip, sizeof(ip), "?");
        snprintf(buf, size, "%s:%u", ip, ntohs(a->sin_port));
        return buf;
}

static const char *format_seconds(usec_t t, char *buf, size_t size) {
        snprintf(buf, size, "%.1fs", (double)t / USEC_PER_SEC);
        return buf;
}

static usec_t timer_accuracy(usec_t timeout) {
        return MAX(MIN(timeout / 10, USEC_PER_SEC), (usec_t)1);
}

static usec_t loop_now(sd_event *e) {
        usec_t now = 0;

        (void)sd_event_now(e, CLOCK_MONOTONIC, &now);
        return now;
}

static bool warning_due(struct gateway *g, usec_t *last) {
        usec_t now = loop_now(g->event);

        if (*last != 0 && now < *last + WARNING_INTERVAL)
                return false;
        *last = now;
        return true;
}

static void set_nodelay(int fd) {
        int one = 1;

        /* RDP is interactive: a keystroke must not wait for Nagle. Best
         * effort; a relay without it is slower, not wrong. */
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void close_reset(int fd) {
        struct linger l = {.l_onoff = 1, .l_linger = 0};

        if (fd < 0)
                return;
        (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
        safe_close(fd);
}

/* ---- connections ------------------------------------------------------------------------------- */

/* Frees c and everything it holds. `reset` sends RSTs instead of FINs: for
 * connections we abort (stale legs, forced logoff, shutdown), as opposed to
 * refusals, where a plain close is the honest answer. */
static void conn_free(struct gateway_conn *c, bool reset) {
        struct gateway *g = c->gateway;

        if (c->relay) {
                struct relay_info info;

                relay_get_info(c->relay, &info);
                g->stats.bytes_to_backend += info.bytes_out[RELAY_A_TO_B];
                g->stats.bytes_to_client += info.bytes_out[RELAY_B_TO_A];
                g->stats.buffered_peak = MAX(g->stats.buffered_peak, (uint64_t)info.buffered_peak);
                /* An unfinished relay resets both legs when freed. */
                c->relay = relay_free(c->relay);
        }
        c->io = sd_event_source_disable_unref(c->io);
        c->timer = sd_event_source_disable_unref(c->timer);
        if (reset) {
                close_reset(c->client_fd);
                close_reset(c->backend_fd);
        } else {
                safe_close(c->client_fd);
                safe_close(c->backend_fd);
        }
        free(c->buf);

        if (c->prev)
                c->prev->next = c->next;
        else
                g->first = c->next;
        if (c->next)
                c->next->prev = c->prev;
        else
                g->last = c->prev;
        g->n_conns--;
        if (c->state == GATEWAY_CONN_RELAYING) {
                g->stats.active_relays--;
                if (g->on_relay)
                        g->on_relay(g->relay_userdata, c->id, &c->decision, &c->client, false);
        }
        free(c);
}

static int on_conn_timeout(sd_event_source *s, uint64_t usec, void *userdata);

static int conn_set_deadline(struct gateway_conn *c, usec_t timeout) {
        usec_t when = loop_now(c->gateway->event) + timeout;
        int r;

        if (!c->timer)
                return sd_event_add_time(c->gateway->event, &c->timer, CLOCK_MONOTONIC, when,
                                         timer_accuracy(timeout), on_conn_timeout, c);
        r = sd_event_source_set_time(c->timer, when);
        if (r < 0)
                return r;
        r = sd_event_source_set_time_accuracy(c->timer, timer_accuracy(timeout));
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
}

static void conn_backend_failed(struct gateway_conn *c, int error) {
        c->gateway->stats.backend_failed++;
        log_warning_errno(error, "Closing %s: %s backend %s is unreachable: %m", c->client_str,
                          gateway_verdict_to_string(c->decision.verdict), c->backend_str);
        conn_free(c, false);
}

/* An older relayed connection for the same user is a stale leg (DESIGN
 * 2.5): with one session per user, a reconnect means the old link is dead
 * even if TCP has not noticed yet, and the RDP server keeps the session's
 * channels (xrdp: a black screen for the new client) until it goes away. */
static void conn_close_stale(struct gateway_conn *c) {
        struct gateway *g = c->gateway;
        struct gateway_conn *o, *next;

        if (!c->decision.user_key[0] || c->decision.keep_others)
                return;
        for (o = g->first; o; o = next) {
                next = o->next;
                if (o == c || o->state != GATEWAY_CONN_RELAYING ||
                    strcmp(o->decision.user_key, c->decision.user_key) != 0)
                        continue;
                log_info("Resetting stale connection %s -> %s of user %s: the user reconnected from %s.",
                         o->client_str, o->backend_str, o->decision.user_key, c->client_str);
                g->stats.stale_closed++;
                conn_free(o, true);
        }
}

static void on_relay_end(struct relay *r, enum relay_end end, enum relay_side side, int error,
                         void *userdata) {
        struct gateway_conn *c = userdata;
        struct gateway *g = c->gateway;
        struct relay_info info;
        char age[32];
        const char *how;

        relay_get_info(r, &info);
        format_seconds(loop_now(g->event) - c->accepted_mono, age, sizeof(age));
        switch (end) {
        case RELAY_END_CLOSED:
                g->stats.ended_closed++;
                how = "closed";
                break;
        case RELAY_END_RESET:
                if (side == RELAY_SIDE_A)
                        g->stats.ended_reset_client++;
                else
                        g->stats.ended_reset_backend++;
                how = side == RELAY_SIDE_A ? "reset by the client" : "reset by the backend";
                break;
        case RELAY_END_IDLE:
                g->stats.ended_idle++;
                how = "idle, reset";
                break;
        default:
                g->stats.ended_error++;
                how = "failed";
                break;
        }
        if (error != 0)
                log_info_errno(error,
                               "Connection %s -> %s%s%s %s after %s (%m): %" PRIu64
                               " bytes to the backend, %" PRIu64 " to the client.",
                               c->client_str, c->backend_str, c->decision.user_key[0] ? " of user " : "",
                               c->decision.user_key, how, age, info.bytes_out[RELAY_A_TO_B],
                               info.bytes_out[RELAY_B_TO_A]);
        else
                log_info("Connection %s -> %s%s%s %s after %s: %" PRIu64 " bytes to the backend, %" PRIu64
                         " to the client.",
                         c->client_str, c->backend_str, c->decision.user_key[0] ? " of user " : "",
                         c->decision.user_key, how, age, info.bytes_out[RELAY_A_TO_B],
                         info.bytes_out[RELAY_B_TO_A]);
        conn_free(c, false);
}

static void conn_start_relay(struct gateway_conn *c) {
        struct gateway *g = c->gateway;
        struct relay_config rc = {.buffer_size = g->config.buffer_size,
                                  .idle_timeout = g->config.idle_timeout};
        int r;

        /* The relay registers these descriptors itself. */
        c->io = sd_event_source_disable_unref(c->io);
        c->timer = sd_event_source_disable_unref(c->timer);

        r = relay_new(g->event, c->client_fd, c->backend_fd, &rc, c->buf, c->len, on_relay_end, c,
                      &c->relay);
        if (r < 0) {
                g->stats.refused_error++;
                log_error_errno(r, "Closing %s: failed to start relaying to %s: %m", c->client_str,
                                c->backend_str);
                conn_free(c, true);
                return;
        }
        c->client_fd = c->backend_fd = -1;
        free(c->buf);
        c->buf = NULL;
        c->state = GATEWAY_CONN_RELAYING;
        g->stats.active_relays++;
        g->stats.relayed++;
        if (c->decision.verdict == GATEWAY_LOCAL)
                g->stats.relayed_local++;
        else
                g->stats.relayed_peer++;

        log_info("Relaying %s to %s backend %s%s%s: %s.", c->client_str,
                 gateway_verdict_to_string(c->decision.verdict), c->backend_str,
                 c->decision.user_key[0] ? ", user " : "", c->decision.user_key,
                 c->decision.reason[0] ? c->decision.reason : "no reason given");
        conn_close_stale(c);
        if (g->on_relay)
                g->on_relay(g->relay_userdata, c->id, &c->decision, &c->client, true);
}

static int on_backend_connected(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct gateway_conn *c = userdata;
        int error = 0;
        socklen_t len = sizeof(error);

        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0)
                error = errno;
        if (error != 0) {
                conn_backend_failed(c, -error);
                return 0;
        }
        conn_start_relay(c);
        return 0;
}

static void conn_connect(struct gateway_conn *c) {
        struct gateway *g = c->gateway;
        int r;

        c->backend_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->backend_fd < 0)
                return conn_backend_failed(c, negative_errno());
        set_nodelay(c->backend_fd);

        /* Only the leg to our own RDP server needs the bypassed source: a
         * peer is reached from whatever address routes there (one the peer
         * knows as a farm node), and 127.0.0.1 would not route at all. */
        if (c->decision.verdict == GATEWAY_LOCAL &&
            g->config.backend_source.sin_addr.s_addr != htonl(INADDR_ANY)) {
                struct sockaddr_in src = g->config.backend_source;
                int one = 1;

                /* Without this, bind() picks the port alone and a farm's worth
                 * of connections to the same backend runs out of ports; with
                 * it, connect() picks it per 4-tuple. */
                (void)setsockopt(c->backend_fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
                src.sin_family = AF_INET;
                src.sin_port = 0;
                if (bind(c->backend_fd, (const struct sockaddr *)&src, sizeof(src)) < 0)
                        return conn_backend_failed(c, negative_errno());
        }

        if (connect(c->backend_fd, (const struct sockaddr *)&c->decision.backend,
                    sizeof(c->decision.backend)) == 0)
                return conn_start_relay(c);
        if (errno != EINPROGRESS)
                return conn_backend_failed(c, negative_errno());

        c->state = GATEWAY_CONN_CONNECTING;
        r = sd_event_add_io(g->event, &c->io, c->backend_fd, EPOLLOUT, on_backend_connected, c);
        if (r >= 0)
                r = conn_set_deadline(c, g->config.connect_timeout);
        if (r < 0) {
                g->stats.refused_error++;
                log_error_errno(r, "Closing %s: failed to watch the backend connection: %m", c->client_str);
                conn_free(c, false);
        }
}

static void conn_apply_decision(struct gateway_conn *c, const struct gateway_decision *d) {
        struct gateway *g = c->gateway;

        c->decision = *d;
        c->decision.user_key[sizeof(c->decision.user_key) - 1] = 0;
        c->decision.reason[sizeof(c->decision.reason) - 1] = 0;

        switch (c->decision.verdict) {
        case GATEWAY_REFUSE:
                g->stats.refused_decision++;
                log_info("Refusing %s%s%s: %s.", c->client_str, c->decision.user_key[0] ? ", user " : "",
                         c->decision.user_key,
                         c->decision.reason[0] ? c->decision.reason : "refused by policy");
                conn_free(c, false);
                return;
        case GATEWAY_LOCAL:
        case GATEWAY_PEER:
                if (c->decision.backend.sin_family != AF_INET || c->decision.backend.sin_port == 0 ||
                    c->decision.backend.sin_addr.s_addr == htonl(INADDR_ANY)) {
                        g->stats.refused_error++;
                        log_error("Refusing %s: the decision (%s) names no usable backend address.",
                                  c->client_str, gateway_verdict_to_string(c->decision.verdict));
                        conn_free(c, false);
                        return;
                }
                format_addr(&c->decision.backend, c->backend_str, sizeof(c->backend_str));
                conn_connect(c);
                return;
        default:
                g->stats.refused_error++;
                log_error("Refusing %s: the decision has an unknown verdict %d.", c->client_str,
                          (int)c->decision.verdict);
                conn_free(c, false);
                return;
        }
}

static void conn_decide(struct gateway_conn *c, const struct tsf_cr *cr) {
        struct gateway *g = c->gateway;
        struct gateway_request req = {.id = c->id, .cr = cr, .client = c->client, .local = c->local};
        struct gateway_decision d = {};
        int r;

        log_debug("First PDU from %s complete: %zu bytes (%zu read), cookie %s.", c->client_str,
                  cr->consumed, c->len, tsf_cookie_kind_to_string(cr->cookie_kind));

        /* Whatever the client sends next stays in the kernel until the relay
         * reads it, so the replay keeps the client's order. */
        c->io = sd_event_source_disable_unref(c->io);

        r = g->decide(g->userdata, &req, &d);
        if (r < 0) {
                g->stats.refused_error++;
                log_warning_errno(r, "Refusing %s: the decision failed: %m", c->client_str);
                conn_free(c, false);
                return;
        }
        if (r == GATEWAY_DECIDE_LATER) {
                c->state = GATEWAY_CONN_DECIDING;
                r = conn_set_deadline(c, g->config.decide_timeout);
                if (r < 0) {
                        g->stats.refused_error++;
                        log_error_errno(r, "Refusing %s: failed to arm the decision deadline: %m",
                                        c->client_str);
                        conn_free(c, false);
                }
                return;
        }
        conn_apply_decision(c, &d);
}

static int on_client_first_pdu(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct gateway_conn *c = userdata;
        struct gateway *g = c->gateway;
        struct tsf_cr cr;
        ssize_t n;

        n = read(fd, c->buf + c->len, g->config.first_pdu_max - c->len);
        if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                        return 0;
                g->stats.refused_eof++;
                log_info_errno(negative_errno(),
                               "Closing %s: read failed after %zu bytes, before a first PDU: %m",
                               c->client_str, c->len);
                conn_free(c, false);
                return 0;
        }
        if (n == 0) {
                g->stats.refused_eof++;
                /* Load balancers' health checks connect and leave; that is
                 * not worth an operator's attention. */
                if (c->len == 0)
                        log_debug("Connection from %s closed without sending anything.", c->client_str);
                else
                        log_info("Closing %s: it closed after %zu bytes, before a complete first PDU.",
                                 c->client_str, c->len);
                conn_free(c, false);
                return 0;
        }
        c->len += (size_t)n;

        switch (tsf_cr_parse(c->buf, c->len, &cr)) {
        case TSF_CR_COMPLETE:
                conn_decide(c, &cr);
                return 0;
        case TSF_CR_NEED_MORE:
                if (c->len < g->config.first_pdu_max)
                        return 0;
                g->stats.refused_oversize++;
                log_info("Refusing %s: no complete first PDU in %zu bytes.", c->client_str, c->len);
                conn_free(c, false);
                return 0;
        case TSF_CR_INVALID:
        default:
                g->stats.refused_invalid++;
                log_info("Refusing %s: invalid first PDU: %s at offset %zu (%s)", c->client_str,
                         tsf_cr_error_to_string(cr.error), cr.error_offset, tsf_cr_error_describe(cr.error));
                conn_free(c, false);
                return 0;
        }
}

static int on_conn_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        struct gateway_conn *c = userdata;
        struct gateway *g = c->gateway;
        char t[32];

        switch (c->state) {
        case GATEWAY_CONN_FIRST_PDU:
                g->stats.refused_timeout++;
                log_info("Closing %s: no complete first PDU within %s (%zu bytes received).", c->client_str,
                         format_seconds(g->config.first_pdu_timeout, t, sizeof(t)), c->len);
                conn_free(c, false);
                break;
        case GATEWAY_CONN_DECIDING:
                g->stats.refused_error++;
                log_warning("Refusing %s: no decision within %s.", c->client_str,
                            format_seconds(g->config.decide_timeout, t, sizeof(t)));
                conn_free(c, false);
                break;
        case GATEWAY_CONN_CONNECTING:
                conn_backend_failed(c, -ETIMEDOUT);
                break;
        default:
                break;
        }
        return 0;
}

static int conn_new(struct gateway *g, int fd, const struct sockaddr_in *client) {
        struct gateway_conn *c;
        socklen_t len = sizeof(struct sockaddr_in);
        int r;

        c = calloc(1, sizeof(*c));
        if (!c) {
                safe_close(fd);
                return -ENOMEM;
        }
        c->gateway = g;
        c->client_fd = fd;
        c->backend_fd = -1;
        c->client = *client;
        c->id = ++g->next_id;
        c->accepted_mono = loop_now(g->event);
        c->accepted_real = tsf_now_realtime();
        format_addr(client, c->client_str, sizeof(c->client_str));
        c->prev = g->last;
        if (g->last)
                g->last->next = c;
        else
                g->first = c;
        g->last = c;
        g->n_conns++;

        /* With sk_lookup this is the address the client asked for, not ours. */
        if (getsockname(fd, (struct sockaddr *)&c->local, &len) < 0)
                c->local = (struct sockaddr_in){.sin_family = AF_INET};
        set_nodelay(fd);

        c->buf = malloc(g->config.first_pdu_max);
        if (!c->buf) {
                conn_free(c, false);
                return -ENOMEM;
        }
        r = sd_event_add_io(g->event, &c->io, fd, EPOLLIN, on_client_first_pdu, c);
        if (r >= 0)
                r = conn_set_deadline(c, g->config.first_pdu_timeout);
        if (r < 0) {
                conn_free(c, false);
                return r;
        }
        log_debug("Accepted %s on %s (connection %" PRIu64 ").", c->client_str,
                  format_addr(&c->local, (char[ADDR_STR_MAX]){}, ADDR_STR_MAX), c->id);
        return 0;
}

/* ---- the listening socket ---------------------------------------------------------------------- */

static int on_resume_accept(sd_event_source *s, uint64_t usec, void *userdata) {
        struct gateway *g = userdata;

        (void)sd_event_source_set_enabled(g->listen_source, SD_EVENT_ON);
        return 0;
}

static void pause_accepting(struct gateway *g) {
        usec_t when = loop_now(g->event) + ACCEPT_PAUSE;
        int r;

        r = sd_event_source_set_enabled(g->listen_source, SD_EVENT_OFF);
        if (r < 0)
                return;
        if (!g->resume_source)
                r = sd_event_add_time(g->event, &g->resume_source, CLOCK_MONOTONIC, when, 0,
                                      on_resume_accept, g);
        else {
                r = sd_event_source_set_time(g->resume_source, when);
                if (r >= 0)
                        r = sd_event_source_set_enabled(g->resume_source, SD_EVENT_ONESHOT);
        }
        if (r < 0) {
                /* Better a busy loop than a gateway that never accepts again. */
                log_error_errno(r, "Failed to schedule accepting again, resuming at once: %m");
                (void)sd_event_source_set_enabled(g->listen_source, SD_EVENT_ON);
        }
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct gateway *g = userdata;
        int r;

        for (unsigned i = 0; i < ACCEPT_BATCH; i++) {
                struct sockaddr_in sa = {};
                socklen_t salen = sizeof(sa);
                int cfd;

                cfd = accept4(fd, (struct sockaddr *)&sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0) {
                        switch (errno) {
                        case EAGAIN:
                                return 0;
                        /* accept(2): errors pending on the new connection
                         * come out of accept(); the next one may be fine. */
                        case EINTR:
                        case ECONNABORTED:
                        case EPROTO:
                        case ENETDOWN:
                        case ENOPROTOOPT:
                        case EHOSTDOWN:
                        case ENONET:
                        case EHOSTUNREACH:
                        case EOPNOTSUPP:
                        case ENETUNREACH:
                        case EPERM:
                                continue;
                        default:
                                if (warning_due(g, &g->last_accept_warning))
                                        log_warning_errno(
                                                negative_errno(),
                                                "Failed to accept a connection, pausing for %s: %m", "0.1s");
                                pause_accepting(g);
                                return 0;
                        }
                }

                g->stats.accepted++;
                if (g->n_conns >= g->config.max_connections) {
                        char addr[ADDR_STR_MAX];

                        g->stats.refused_full++;
                        if (warning_due(g, &g->last_full_warning))
                                log_warning("Refusing %s: %u connections open, the maximum (and maybe more "
                                            "refusals in the next 10s, see the stats).",
                                            format_addr(&sa, addr, sizeof(addr)), g->n_conns);
                        safe_close(cfd);
                        continue;
                }
                r = conn_new(g, cfd, &sa);
                if (r < 0) {
                        char addr[ADDR_STR_MAX];

                        g->stats.refused_error++;
                        log_error_errno(r, "Refusing %s: failed to set up the connection: %m",
                                        format_addr(&sa, addr, sizeof(addr)));
                }
        }
        return 0;
}

/* ---- the API ----------------------------------------------------------------------------------- */

static int config_validate(const struct gateway_config *c) {
        if (c->listen.sin_family != AF_INET)
                return -EAFNOSUPPORT;
        if (c->first_pdu_timeout == 0 || c->decide_timeout == 0 || c->connect_timeout == 0)
                return -EINVAL;
        if (c->buffer_size < RELAY_BUFFER_SIZE_MIN || c->buffer_size > RELAY_BUFFER_SIZE_MAX)
                return -EINVAL;
        /* The replay goes through the relay's ring, so it must fit. */
        if (c->first_pdu_max < TSF_TPKT_HEADER_SIZE + TSF_X224_CR_FIXED_SIZE ||
            c->first_pdu_max > c->buffer_size)
                return -EINVAL;
        if (c->max_connections == 0 || c->backlog <= 0)
                return -EINVAL;
        return 0;
}

int gateway_new(sd_event *e, const struct gateway_config *c, gateway_decide_fn decide, void *userdata,
                struct gateway **ret) {
        _cleanup_(gateway_freep) struct gateway *g = NULL;
        int one = 1, r;

        if (!e || !c || !decide || !ret)
                return -EINVAL;
        r = config_validate(c);
        if (r < 0)
                return r;

        g = calloc(1, sizeof(*g));
        if (!g)
                return -ENOMEM;
        g->event = sd_event_ref(e);
        g->config = *c;
        g->decide = decide;
        g->userdata = userdata;

        g->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (g->fd < 0)
                return negative_errno();
        if (setsockopt(g->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
                return negative_errno();
        if (bind(g->fd, (const struct sockaddr *)&c->listen, sizeof(c->listen)) < 0)
                return negative_errno();
        if (listen(g->fd, c->backlog) < 0)
                return negative_errno();

        r = sd_event_add_io(e, &g->listen_source, g->fd, EPOLLIN, on_accept, g);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(g);
        return 0;
}

struct gateway *gateway_free(struct gateway *g) {
        if (!g)
                return NULL;
        while (g->first)
                conn_free(g->first, true);
        g->listen_source = sd_event_source_disable_unref(g->listen_source);
        g->resume_source = sd_event_source_disable_unref(g->resume_source);
        safe_close(g->fd);
        sd_event_unref(g->event);
        free(g);
        return NULL;
}

int gateway_fd(const struct gateway *g) {
        return g->fd;
}

int gateway_get_address(const struct gateway *g, struct sockaddr_in *ret) {
        socklen_t len = sizeof(*ret);

        if (getsockname(g->fd, (struct sockaddr *)ret, &len) < 0)
                return negative_errno();
        return 0;
}

static struct gateway_conn *conn_find(const struct gateway *g, uint64_t id) {
        for (struct gateway_conn *c = g->first; c; c = c->next)
                if (c->id == id)
                        return c;
        return NULL;
}

int gateway_complete_decision(struct gateway *g, uint64_t id, const struct gateway_decision *d) {
        struct gateway_conn *c = conn_find(g, id);

        if (!c)
                return -ESRCH;
        if (c->state != GATEWAY_CONN_DECIDING)
                return -EBUSY;
        c->timer = sd_event_source_disable_unref(c->timer);
        conn_apply_decision(c, d);
        return 0;
}

void gateway_get_stats(const struct gateway *g, struct gateway_stats *ret) {
        *ret = g->stats;
        ret->active = g->n_conns;
        for (const struct gateway_conn *c = g->first; c; c = c->next) {
                struct relay_info info;

                if (!c->relay)
                        continue;
                relay_get_info(c->relay, &info);
                ret->bytes_to_backend += info.bytes_out[RELAY_A_TO_B];
                ret->bytes_to_client += info.bytes_out[RELAY_B_TO_A];
                ret->buffered += info.buffered[RELAY_A_TO_B] + info.buffered[RELAY_B_TO_A];
                ret->buffered_peak = MAX(ret->buffered_peak, (uint64_t)info.buffered_peak);
        }
}

void gateway_set_relay_observer(struct gateway *g, gateway_relay_fn fn, void *userdata) {
        g->on_relay = fn;
        g->relay_userdata = userdata;
}

int gateway_foreach_conn(const struct gateway *g, gateway_conn_fn fn, void *userdata) {
        usec_t now = loop_now(g->event);
        int r;

        for (const struct gateway_conn *c = g->first; c; c = c->next) {
                struct gateway_conn_info info = {
                        .id = c->id,
                        .state = c->state,
                        .verdict = c->decision.verdict,
                        .client = c->client,
                        .local = c->local,
                        .backend = c->decision.backend,
                        .user_key = c->decision.user_key,
                        .accepted_realtime = c->accepted_real,
                        .age = now - MIN(now, c->accepted_mono),
                        .idle = now - MIN(now, c->accepted_mono),
                };
                if (c->relay) {
                        struct relay_info ri;

                        relay_get_info(c->relay, &ri);
                        info.bytes_to_backend = ri.bytes_out[RELAY_A_TO_B];
                        info.bytes_to_client = ri.bytes_out[RELAY_B_TO_A];
                        info.buffered = ri.buffered[RELAY_A_TO_B] + ri.buffered[RELAY_B_TO_A];
                        info.client_eof = ri.eof[RELAY_A_TO_B];
                        info.backend_eof = ri.eof[RELAY_B_TO_A];
                        info.idle = now - MIN(now, ri.last_activity);
                }
                r = fn(&info, userdata);
                if (r < 0)
                        return r;
        }
        return 0;
}

int gateway_close_user(struct gateway *g, const char *user_key) {
        struct gateway_conn *c, *next;
        int n = 0;

        if (!user_key || !user_key[0])
                return -EINVAL;
        for (c = g->first; c; c = next) {
                next = c->next;
                if (strcmp(c->decision.user_key, user_key) != 0)
                        continue;
                log_info("Resetting connection %s -> %s of user %s on request.", c->client_str,
                         c->backend_str[0] ? c->backend_str : "(no backend yet)", user_key);
                g->stats.user_closed++;
                conn_free(c, true);
                n++;
        }
        return n;
}
