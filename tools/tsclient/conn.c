/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* One connection: TCP, X.224, TLS, frames (conn.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tsfarm/cleanup.h"
#include "tsfarm/macro.h"
#include "conn.h"

struct tsc_tls {
        SSL_CTX *ctx;
};

struct tsc_conn {
        int fd;
        SSL *ssl;
        enum tsf_proto_phase phase;
        uint8_t version;
        char peer_name[TSC_NAME_MAX];
        char address[TSC_ADDRESS_MAX];
        usec_t last_send, last_recv;
        /* Bytes TLS gave that the reader has not taken yet. */
        uint8_t in[TSF_PROTO_FRAME_MAX];
        size_t in_off, in_len;
        uint8_t out[TSF_PROTO_FRAME_MAX];
        struct tsf_proto_reader reader;
};

_printf_(3, 4) static void set_err(char *err, size_t size, const char *fmt, ...) {
        va_list ap;

        if (!err || size == 0)
                return;
        va_start(ap, fmt);
        vsnprintf(err, size, fmt, ap);
        va_end(ap);
}

/* The first OpenSSL error on the queue as text (and the queue cleared). */
static const char *ssl_error_text(char *buf, size_t size) {
        unsigned long e = ERR_get_error();

        if (e == 0)
                snprintf(buf, size, "no details");
        else
                ERR_error_string_n(e, buf, size);
        ERR_clear_error();
        return buf;
}

int tsc_tls_new(const char *ca_file, struct tsc_tls **ret, char *err, size_t err_size) {
        _cleanup_free_ struct tsc_tls *t = NULL;
        char buf[256];

        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->ctx = SSL_CTX_new(TLS_client_method());
        if (!t->ctx) {
                set_err(err, err_size, "OpenSSL: %s", ssl_error_text(buf, sizeof(buf)));
                return -EIO;
        }
        if (SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION) != 1 ||
            SSL_CTX_load_verify_locations(t->ctx, ca_file, NULL) != 1) {
                set_err(err, err_size, "cannot load the CA certificates from %s: %s", ca_file,
                        ssl_error_text(buf, sizeof(buf)));
                SSL_CTX_free(t->ctx);
                return -EINVAL;
        }
        SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
        /* The same buffer may be retried after WANT_WRITE from another
         * address (the conn's out buffer is stable, but be lenient). */
        SSL_CTX_set_mode(t->ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        *ret = TAKE_PTR(t);
        return 0;
}

struct tsc_tls *tsc_tls_free(struct tsc_tls *t) {
        if (t) {
                SSL_CTX_free(t->ctx);
                free(t);
        }
        return NULL;
}

/* Waits until fd is ready for `events` or the deadline passes (0: do not
 * wait). 0, -ETIMEDOUT (-EAGAIN for deadline 0), or poll's error. */
static int wait_fd(int fd, short events, usec_t deadline) {
        for (;;) {
                struct pollfd p = {.fd = fd, .events = events};
                usec_t now = tsf_now_monotonic();
                int timeout, r;

                if (deadline == 0)
                        timeout = 0;
                else if (now >= deadline)
                        return -ETIMEDOUT;
                else
                        timeout = (int)MIN((deadline - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC,
                                           (usec_t)INT32_MAX);
                r = poll(&p, 1, timeout);
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (r > 0)
                        return 0;
                if (deadline == 0)
                        return -EAGAIN;
        }
}

static int write_all_plain(int fd, const uint8_t *p, size_t len, usec_t deadline) {
        while (len > 0) {
                ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
                int r;

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno != EAGAIN)
                                return negative_errno();
                        r = wait_fd(fd, POLLOUT, deadline);
                        if (r < 0)
                                return r;
                        continue;
                }
                p += n;
                len -= (size_t)n;
        }
        return 0;
}

static int read_exact_plain(int fd, uint8_t *p, size_t len, usec_t deadline) {
        while (len > 0) {
                ssize_t n = recv(fd, p, len, 0);
                int r;

                if (n == 0)
                        return -ECONNRESET;
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno != EAGAIN)
                                return negative_errno();
                        r = wait_fd(fd, POLLIN, deadline);
                        if (r < 0)
                                return r;
                        continue;
                }
                p += n;
                len -= (size_t)n;
        }
        return 0;
}

int tsc_split_host_port(const char *s, char *host, size_t host_size, char *port, size_t port_size) {
        const char *colon, *h = s;
        size_t hlen;

        if (!s || !*s)
                return -EINVAL;
        if (*s == '[') {
                const char *close = strchr(s, ']');

                if (!close || close[1] != ':')
                        return -EINVAL;
                h = s + 1;
                hlen = (size_t)(close - h);
                colon = close + 1;
        } else {
                colon = strrchr(s, ':');
                if (!colon || strchr(s, ':') != colon)
                        return -EINVAL;
                hlen = (size_t)(colon - s);
        }
        if (hlen == 0 || hlen >= host_size || strlen(colon + 1) == 0 || strlen(colon + 1) >= port_size)
                return -EINVAL;
        for (const char *p = colon + 1; *p; p++)
                if (*p < '0' || *p > '9')
                        return -EINVAL;
        if (atoi(colon + 1) < 1 || atoi(colon + 1) > 65535)
                return -EINVAL;
        memcpy(host, h, hlen);
        host[hlen] = '\0';
        strcpy(port, colon + 1);
        return 0;
}

static int tcp_connect(struct tsc_conn *c, const char *host, const char *port, usec_t deadline, char *err,
                       size_t err_size) {
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG};
        struct addrinfo *ai = NULL;
        int r, last = -EHOSTUNREACH;

        r = getaddrinfo(host, port, &hints, &ai);
        if (r != 0) {
                set_err(err, err_size, "cannot resolve %s: %s", host, gai_strerror(r));
                return -EHOSTUNREACH;
        }
        for (struct addrinfo *a = ai; a; a = a->ai_next) {
                _cleanup_close_ int fd = -1;
                char addr[INET6_ADDRSTRLEN] = "?";
                int one = 1, soerr = 0;
                socklen_t sl = sizeof(soerr);

                if (a->ai_family == AF_INET)
                        inet_ntop(AF_INET, &((struct sockaddr_in *)a->ai_addr)->sin_addr, addr,
                                  sizeof(addr));
                else if (a->ai_family == AF_INET6)
                        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)a->ai_addr)->sin6_addr, addr,
                                  sizeof(addr));
                snprintf(c->address, sizeof(c->address), a->ai_family == AF_INET6 ? "[%s]:%s" : "%s:%s",
                         addr, port);

                fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
                if (fd < 0) {
                        last = negative_errno();
                        continue;
                }
                (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                if (connect(fd, a->ai_addr, a->ai_addrlen) < 0) {
                        if (errno != EINPROGRESS) {
                                last = negative_errno();
                                continue;
                        }
                        r = wait_fd(fd, POLLOUT, deadline);
                        if (r < 0) {
                                last = r;
                                continue;
                        }
                        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
                                soerr = errno;
                        if (soerr != 0) {
                                last = -soerr;
                                continue;
                        }
                }
                c->fd = TAKE_FD(fd);
                freeaddrinfo(ai);
                return 0;
        }
        freeaddrinfo(ai);
        set_err(err, err_size, "cannot connect to %s port %s: %s", host, port, strerror(-last));
        return last;
}

static int x224_exchange(struct tsc_conn *c, const struct tsf_cr *cr, usec_t deadline, char *err,
                         size_t err_size) {
        uint8_t buf[TSF_CR_TPKT_MAX];
        struct tsf_cc cc;
        ssize_t n;
        int r;

        n = tsf_cr_encode(cr, buf, sizeof(buf));
        if (n < 0) {
                set_err(err, err_size, "cannot encode the Connection Request");
                return (int)n;
        }
        r = write_all_plain(c->fd, buf, (size_t)n, deadline);
        if (r < 0) {
                set_err(err, err_size, "cannot send the Connection Request to %s: %s", c->address,
                        strerror(-r));
                return r;
        }
        /* The TPKT header says how long the confirm is; read exactly that,
         * nothing of what TLS will send. */
        r = read_exact_plain(c->fd, buf, TSF_TPKT_HEADER_SIZE, deadline);
        if (r >= 0) {
                size_t len = get_be16(buf + 2);

                if (buf[0] != TSF_TPKT_VERSION || len < TSF_CC_SIZE_MIN || len > TSF_CC_SIZE_MAX)
                        r = -EBADMSG;
                else
                        r = read_exact_plain(c->fd, buf + TSF_TPKT_HEADER_SIZE, len - TSF_TPKT_HEADER_SIZE,
                                             deadline);
                if (r >= 0 && tsf_cc_decode(buf, len, &cc) != (ssize_t)len)
                        r = -EBADMSG;
        }
        if (r == -EBADMSG) {
                set_err(err, err_size, "%s answered something that is not an X.224 Connection Confirm",
                        c->address);
                return r;
        }
        if (r < 0) {
                set_err(err, err_size, "no Connection Confirm from %s: %s", c->address, strerror(-r));
                return r;
        }
        if (cc.neg == TSF_CC_NEG_FAILURE) {
                set_err(err, err_size, "%s refused the connection: RDP_NEG_FAILURE code %u", c->address,
                        cc.failure_code);
                return -ENOPROTOOPT;
        }
        if (cc.neg != TSF_CC_NEG_RESPONSE || cc.selected_protocol != TSF_PROTOCOL_SSL) {
                set_err(err, err_size, "%s did not select TLS in its Connection Confirm", c->address);
                return -ENOPROTOOPT;
        }
        return 0;
}

static int is_ip_literal(const char *host) {
        uint8_t b[16];

        return inet_pton(AF_INET, host, b) == 1 || inet_pton(AF_INET6, host, b) == 1;
}

/* Runs an SSL operation on the non-blocking socket until it completes or
 * the deadline passes. Returns its positive result, -ETIMEDOUT, -EAGAIN
 * (deadline 0 and it would block), -ECONNRESET (closed), or -EIO. */
static int ssl_io(struct tsc_conn *c, int (*op)(SSL *, void *, int), void *buf, int len, usec_t deadline) {
        for (;;) {
                int n, e, r;

                ERR_clear_error();
                n = op(c->ssl, buf, len);
                if (n > 0)
                        return n;
                e = SSL_get_error(c->ssl, n);
                if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                        r = wait_fd(c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (e == SSL_ERROR_ZERO_RETURN)
                        return -ECONNRESET;
                if (e == SSL_ERROR_SYSCALL && errno == EINTR)
                        continue;
                ERR_clear_error();
                return -ECONNRESET;
        }
}

static int op_connect(SSL *ssl, void *buf, int len) {
        return SSL_connect(ssl);
}
static int op_read(SSL *ssl, void *buf, int len) {
        return SSL_read(ssl, buf, len);
}
static int op_write(SSL *ssl, void *buf, int len) {
        return SSL_write(ssl, buf, len);
}

static int tls_start(struct tsc_conn *c, struct tsc_tls *tls, const char *host, const char *tls_name,
                     usec_t deadline, char *err, size_t err_size) {
        const char *name = tls_name ?: host;
        char buf[256];
        X509 *peer;
        long v;
        int r;

        c->ssl = SSL_new(tls->ctx);
        if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
                set_err(err, err_size, "OpenSSL: %s", ssl_error_text(buf, sizeof(buf)));
                return -EIO;
        }
        if (!streq_ptr(name, TSC_TLS_NAME_ANY)) {
                if (is_ip_literal(name))
                        r = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), name);
                else
                        r = SSL_set1_host(c->ssl, name) && SSL_set_tlsext_host_name(c->ssl, name);
                if (r != 1) {
                        set_err(err, err_size, "cannot check the certificate for \"%s\"", name);
                        return -EINVAL;
                }
        }
        r = ssl_io(c, op_connect, NULL, 0, deadline);
        if (r < 0) {
                v = SSL_get_verify_result(c->ssl);
                if (v != X509_V_OK) {
                        set_err(err, err_size, "the certificate of %s did not verify: %s", c->address,
                                X509_verify_cert_error_string(v));
                        return -EKEYREJECTED;
                }
                set_err(err, err_size, "TLS handshake with %s failed: %s", c->address,
                        r == -ETIMEDOUT ? "timed out" : "connection closed");
                return r;
        }
        /* VERIFY_PEER failed the handshake already; this is belt and braces:
         * nothing is sent unless the certificate verified. */
        peer = SSL_get1_peer_certificate(c->ssl);
        if (!peer || SSL_get_verify_result(c->ssl) != X509_V_OK) {
                X509_free(peer);
                set_err(err, err_size, "the certificate of %s did not verify", c->address);
                return -EKEYREJECTED;
        }
        if (X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName, c->peer_name,
                                      sizeof(c->peer_name)) < 0)
                c->peer_name[0] = '\0';
        X509_free(peer);
        return 0;
}

int tsc_conn_open(struct tsc_tls *tls, const char *host, const char *port, const char *tls_name,
                  const struct tsf_cr *cr, usec_t deadline, struct tsc_conn **ret, char *err,
                  size_t err_size) {
        struct tsc_conn *c;
        int r;

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->fd = -1;
        c->version = TSF_PROTO_VERSION;
        c->phase = TSF_PHASE_LICENSE_REQUEST;
        tsf_proto_reader_init(&c->reader);

        r = tcp_connect(c, host, port, deadline, err, err_size);
        if (r >= 0)
                r = x224_exchange(c, cr, deadline, err, err_size);
        if (r >= 0)
                r = tls_start(c, tls, host, tls_name, deadline, err, err_size);
        if (r < 0) {
                tsc_conn_close(c, false);
                return r;
        }
        c->last_send = c->last_recv = tsf_now_monotonic();
        *ret = c;
        return 0;
}

void tsc_conn_close(struct tsc_conn *c, bool graceful) {
        if (!c)
                return;
        if (c->ssl) {
                if (graceful)
                        (void)SSL_shutdown(c->ssl); /* close_notify; not waiting for the peer's */
                SSL_free(c->ssl);
        }
        safe_close(c->fd);
        tsf_proto_reader_wipe(&c->reader);
        OPENSSL_cleanse(c->in, sizeof(c->in));
        OPENSSL_cleanse(c->out, sizeof(c->out));
        free(c);
}

/* Phase changes (docs/protocol.md section 8), for either direction. */
static void advance(struct tsc_conn *c, const struct tsf_pdu *pdu) {
        switch (pdu->type) {
        case TSF_PDU_LICENSE_REQUEST:
                c->phase = TSF_PHASE_LICENSE_INFO;
                break;
        case TSF_PDU_CLIENT_LICENSE_INFO:
                c->phase = TSF_PHASE_LICENSE_RESPONSE;
                break;
        case TSF_PDU_LICENSE_RESPONSE:
                if (pdu->license_response.status != TSF_LICENSE_ERROR)
                        c->phase = TSF_PHASE_LOGON;
                break;
        case TSF_PDU_LOGON_RESULT:
                if (pdu->logon_result.status == TSF_LOGON_OK)
                        c->phase = TSF_PHASE_SESSION;
                break;
        default:
                break;
        }
}

static int send_frame(struct tsc_conn *c, const struct tsf_pdu *pdu, usec_t deadline) {
        ssize_t n;
        int r;

        n = tsf_pdu_encode(pdu, c->out, sizeof(c->out));
        if (n < 0)
                return (int)n;
        r = ssl_io(c, op_write, c->out, (int)n, deadline);
        OPENSSL_cleanse(c->out, (size_t)n); /* a CLIENT_INFO holds the password */
        if (r < 0)
                return r;
        c->last_send = tsf_now_monotonic();
        return 0;
}

int tsc_conn_send(struct tsc_conn *c, const struct tsf_pdu *pdu, usec_t deadline) {
        int r;

        if (!tsf_pdu_allowed(TSF_PROTO_CLIENT, c->phase, pdu->type))
                return -EINVAL;
        r = send_frame(c, pdu, deadline);
        if (r < 0)
                return r;
        advance(c, pdu);
        return 0;
}

void tsc_conn_send_reason(struct tsc_conn *c, enum tsf_pdu_type type, uint16_t reason, const char *text) {
        struct tsf_pdu pdu;

        tsf_pdu_init(&pdu, type);
        pdu.error.reason = reason;
        snprintf(pdu.error.reason_text, sizeof(pdu.error.reason_text), "%s", text ?: "");
        (void)send_frame(c, &pdu, tsf_now_monotonic() + 2 * USEC_PER_SEC);
}

int tsc_conn_recv(struct tsc_conn *c, struct tsf_pdu *pdu, usec_t deadline) {
        for (;;) {
                int r;

                while (c->in_off < c->in_len) {
                        size_t used = 0;

                        r = tsf_proto_reader_feed(&c->reader, c->in + c->in_off, c->in_len - c->in_off,
                                                  &used, pdu);
                        c->in_off += used;
                        if (r == -EAGAIN)
                                continue;
                        if (r < 0) {
                                tsc_conn_send_reason(c, TSF_PDU_ERROR,
                                                     r == -EPROTONOSUPPORT ? TSF_REASON_UNSUPPORTED_VERSION
                                                     : r == -EMSGSIZE      ? TSF_REASON_TOO_LARGE
                                                                           : TSF_REASON_MALFORMED,
                                                     "tsclient: malformed frame");
                                return r;
                        }
                        c->last_recv = tsf_now_monotonic();
                        if (!tsf_pdu_allowed(TSF_PROTO_SERVER, c->phase, pdu->type)) {
                                tsc_conn_send_reason(c, TSF_PDU_ERROR, TSF_REASON_UNEXPECTED_PDU,
                                                     "tsclient: unexpected PDU");
                                return -EPROTO;
                        }
                        if (pdu->type == TSF_PDU_KEEPALIVE) {
                                if (!pdu->keepalive.reply) {
                                        struct tsf_pdu reply;

                                        tsf_pdu_init(&reply, TSF_PDU_KEEPALIVE);
                                        reply.keepalive.reply = true;
                                        reply.keepalive.echo = pdu->keepalive.echo;
                                        r = send_frame(c, &reply, tsf_now_monotonic() + 5 * USEC_PER_SEC);
                                        if (r < 0)
                                                return r;
                                }
                                continue;
                        }
                        advance(c, pdu);
                        return 0;
                }
                c->in_off = c->in_len = 0;
                r = ssl_io(c, op_read, c->in, sizeof(c->in), deadline);
                if (r < 0)
                        return r;
                c->in_len = (size_t)r;
        }
}

int tsc_conn_fd(const struct tsc_conn *c) {
        return c->fd;
}

bool tsc_conn_pending(const struct tsc_conn *c) {
        return c->in_off < c->in_len || SSL_pending(c->ssl) > 0;
}

enum tsf_proto_phase tsc_conn_phase(const struct tsc_conn *c) {
        return c->phase;
}

const char *tsc_conn_peer_name(const struct tsc_conn *c) {
        return c->peer_name;
}

const char *tsc_conn_address(const struct tsc_conn *c) {
        return c->address;
}

usec_t tsc_conn_last_send(const struct tsc_conn *c) {
        return c->last_send;
}

usec_t tsc_conn_last_recv(const struct tsc_conn *c) {
        return c->last_recv;
}
