/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The API plumbing end to end on loopback: a farm CA and certificates made
 * by lib/pki.c, the server on an sd-event loop in a second thread, the
 * client (and raw libcurl, for bodies the client would never send) in the
 * test's thread. Every refusal is checked twice: the status and reason the
 * client sees, and that no handler ran.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>
#include <systemd/sd-event.h>

#include "tsfarm/api.h"
#include "tsfarm/cleanup.h"
#include "tsfarm/clock.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"
#include "tsfarm/pki.h"

#define TEST_GROUP 4242

static char dir[64] = "/tmp/tsf-api-XXXXXX";
static char other_dir[PATH_MAX]; /* a second, foreign CA */
static char path_buf[8][PATH_MAX];
/* raw_call() sends "Expect: 100-continue" with its body. */
static bool raw_expect;

struct fixture {
        sd_event *event;
        struct tsf_api_server *server;
        pthread_t thread;
        int stop_fd;
        uint16_t port;
        char sock[PATH_MAX];
        char base[64];
        bool stopped; /* the loop ended and the server is freed already */

        /* Written by handlers in the server thread. */
        atomic_int calls;
        atomic_int cancels;
        atomic_int waiting;
        /* The long poll a timer resumes (server thread only). */
        struct tsf_api_request *waiter;
        sd_event_source *resume_timer;
};

static const char *p(int i, const char *d, const char *name) {
        snprintf(path_buf[i], sizeof(path_buf[i]), "%s/%s", d, name);
        return path_buf[i];
}

/* ---- handlers ---------------------------------------------------------- */

static int on_echo(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer, json_t **ret,
                   void *userdata) {
        struct fixture *f = userdata;

        atomic_fetch_add(&f->calls, 1);
        *ret = json_pack("{s:s, s:s, s:i, s:O?}", "node", peer->node, "transport",
                         peer->transport == TSF_API_TRANSPORT_TLS ? "tls" : "unix", "uid",
                         (json_int_t)peer->uid, "body", body);
        return *ret ? 200 : -ENOMEM;
}

static int on_item(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer, json_t **ret,
                   void *userdata) {
        struct fixture *f = userdata;

        atomic_fetch_add(&f->calls, 1);
        *ret = json_pack("{s:s}", "path", tsf_api_request_path(req));
        return 200;
}

static int on_fail(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer, json_t **ret,
                   void *userdata) {
        struct fixture *f = userdata;

        atomic_fetch_add(&f->calls, 1);
        return -EIO;
}

static int on_resume_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        struct fixture *f = userdata;

        f->resume_timer = sd_event_source_unref(f->resume_timer);
        if (f->waiter) {
                assert_int_equal(tsf_api_request_resume(f->waiter, 200, json_pack("{s:i}", "data", 42)), 0);
                f->waiter = NULL;
                atomic_fetch_sub(&f->waiting, 1);
        }
        return 0;
}

static void on_wait_cancel(struct tsf_api_request *req, void *userdata) {
        struct fixture *f = userdata;

        assert_ptr_equal(req, f->waiter);
        f->waiter = NULL;
        f->resume_timer = sd_event_source_disable_unref(f->resume_timer);
        atomic_fetch_add(&f->cancels, 1);
        atomic_fetch_sub(&f->waiting, 1);
}

/* GET /wait?timeout_ms=N[&resume_ms=M]: a long poll that a timer answers
 * after M ms, or that hits its deadline after N ms. */
static int on_wait(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer, json_t **ret,
                   void *userdata) {
        struct fixture *f = userdata;
        const char *t = tsf_api_request_query(req, "timeout_ms"),
                   *rs = tsf_api_request_query(req, "resume_ms");
        int r;

        atomic_fetch_add(&f->calls, 1);
        if (!t || f->waiter) {
                *ret = tsf_api_error("bad-request", "timeout_ms missing, or a poll is waiting already");
                return 400;
        }
        r = tsf_api_request_suspend(req, strtoull(t, NULL, 10) * USEC_PER_MSEC, on_wait_cancel, f);
        if (r < 0)
                return r;
        f->waiter = req;
        if (rs)
                assert_int_equal(sd_event_add_time_relative(f->event, &f->resume_timer, CLOCK_MONOTONIC,
                                                            strtoull(rs, NULL, 10) * USEC_PER_MSEC, 1,
                                                            on_resume_timer, f),
                                 0);
        atomic_fetch_add(&f->waiting, 1);
        return TSF_API_SUSPENDED;
}

static const struct tsf_api_route routes[] = {
        {"POST", "/echo", TSF_API_BODY, on_echo},
        {"GET", "/echo", 0, on_echo},
        {"GET", "/items/", TSF_API_PREFIX, on_item},
        {"GET", "/items/special", 0, on_echo},
        {"GET", "/local", TSF_API_LOCAL, on_echo},
        {"GET", "/fail", 0, on_fail},
        {"GET", "/wait", 0, on_wait},
        {},
};

static double things(void *userdata) {
        return 7;
}

/* ---- the server thread ------------------------------------------------- */

static int on_stop(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        return sd_event_exit(sd_event_source_get_event(s), 0);
}

static void *server_thread(void *arg) {
        struct fixture *f = arg;

        assert_int_equal(sd_event_loop(f->event), 0);
        return NULL;
}

static int setup(void **state) {
        struct fixture *f = calloc(1, sizeof(*f));
        struct tsf_api_server_config c = {
                .cert_file = p(0, dir, "server.crt"),
                .key_file = p(1, dir, "server.key"),
                .ca_file = p(2, dir, "ca.crt"),
                .listen_address = "127.0.0.1",
                .unix_group = TEST_GROUP,
                .unix_group_set = true,
        };

        assert_non_null(f);
        snprintf(f->sock, sizeof(f->sock), "%s/api.sock", dir);
        c.unix_path = f->sock;
        assert_int_equal(sd_event_new(&f->event), 0);
        f->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        assert_true(f->stop_fd >= 0);
        assert_int_equal(sd_event_add_io(f->event, NULL, f->stop_fd, EPOLLIN, on_stop, f), 0);
        assert_int_equal(tsf_api_server_new(f->event, &c, &f->server), 0);
        assert_int_equal(tsf_api_server_add_routes(f->server, routes, f), 0);
        assert_int_equal(tsf_api_metric_add(f->server, "test_things_total", "Things.\nCounted.",
                                            TSF_METRIC_COUNTER, things, NULL),
                         0);
        assert_int_equal(tsf_api_metric_add(f->server, "test_things_total", "Again", TSF_METRIC_COUNTER,
                                            things, NULL),
                         -EEXIST);
        assert_int_equal(tsf_api_metric_add(f->server, "0bad", "Bad", TSF_METRIC_GAUGE, things, NULL),
                         -EINVAL);
        assert_int_equal(tsf_api_server_start(f->server), 0);
        f->port = tsf_api_server_port(f->server);
        assert_true(f->port > 0);
        snprintf(f->base, sizeof(f->base), "https://127.0.0.1:%u", f->port);
        assert_int_equal(pthread_create(&f->thread, NULL, server_thread, f), 0);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        struct fixture *f = *state;
        uint64_t one = 1;

        if (!f->stopped) {
                assert_int_equal(write(f->stop_fd, &one, sizeof(one)), sizeof(one));
                assert_int_equal(pthread_join(f->thread, NULL), 0);
        }
        f->resume_timer = sd_event_source_disable_unref(f->resume_timer);
        tsf_api_server_free(f->server);
        sd_event_unref(f->event);
        close(f->stop_fd);
        free(f);
        return 0;
}

/* ---- clients ----------------------------------------------------------- */

static struct tsf_api_client *client(const char *cert_dir, const char *node) {
        char crt[PATH_MAX], key[PATH_MAX];
        struct tsf_api_client_config c = {.ca_file = p(3, dir, "ca.crt"), .timeout = 10 * USEC_PER_SEC};
        struct tsf_api_client *cl = NULL;

        if (node) {
                snprintf(crt, sizeof(crt), "%s/%s.crt", cert_dir, node);
                snprintf(key, sizeof(key), "%s/%s.key", cert_dir, node);
                c.cert_file = crt;
                c.key_file = key;
        }
        assert_int_equal(tsf_api_client_new(&c, &cl), 0);
        return cl;
}

static struct tsf_api_client *unix_client(const struct fixture *f) {
        struct tsf_api_client_config c = {.unix_path = f->sock, .timeout = 10 * USEC_PER_SEC};
        struct tsf_api_client *cl = NULL;

        assert_int_equal(tsf_api_client_new(&c, &cl), 0);
        return cl;
}

static int call(struct tsf_api_client *cl, const char *method, const char *url, json_t *in, long *status,
                json_t **out) {
        int r = tsf_api_client_call(cl, method, url, in, status, out);

        if (r < 0)
                print_message("call %s %s: %s\n", method, url, tsf_api_client_error(cl));
        return r;
}

static void assert_error(json_t *reply, const char *error) {
        assert_non_null(reply);
        assert_string_equal(json_string_value(json_object_get(reply, "error")), error);
        /* Every refusal says why, in words. */
        assert_true(json_string_length(json_object_get(reply, "reason")) > 0);
}

struct raw {
        const char *data;
        size_t len, off;
};

static size_t raw_read(char *buf, size_t size, size_t n, void *userdata) {
        struct raw *r = userdata;
        size_t m = MIN(size * n, r->len - r->off);

        memcpy(buf, r->data + r->off, m);
        r->off += m;
        return m;
}

static size_t raw_write(char *ptr, size_t size, size_t n, void *userdata) {
        FILE *f = userdata;

        return fwrite(ptr, size, n, f);
}

/* A request as a misbehaving client sends it, with the good certificate:
 * any body, any Content-Type, chunked if asked. Returns the status; the
 * body is in *ret_text. */
static long raw_call(const struct fixture *f, const char *method, const char *path, const char *content_type,
                     const char *body, size_t len, bool chunked, char **ret_text) {
        CURL *h = curl_easy_init();
        struct curl_slist *headers = NULL;
        char url[256], ct[128];
        struct raw r = {body, len, 0};
        char *text = NULL;
        size_t text_len = 0;
        FILE *out = open_memstream(&text, &text_len);
        long status = 0;
        CURLcode code;

        assert_non_null(h);
        assert_non_null(out);
        snprintf(url, sizeof(url), "%s%s", f->base, path);
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(h, CURLOPT_CAINFO, p(4, dir, "ca.crt"));
        curl_easy_setopt(h, CURLOPT_SSLCERT, p(5, dir, "client1.crt"));
        curl_easy_setopt(h, CURLOPT_SSLKEY, p(6, dir, "client1.key"));
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, raw_write);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
        if (content_type) {
                snprintf(ct, sizeof(ct), "Content-Type: %s", content_type);
                headers = curl_slist_append(headers, ct);
        }
        if (body) {
                curl_easy_setopt(h, CURLOPT_POST, 1L);
                curl_easy_setopt(h, CURLOPT_READFUNCTION, raw_read);
                curl_easy_setopt(h, CURLOPT_READDATA, &r);
                if (chunked)
                        headers = curl_slist_append(headers, "Transfer-Encoding: chunked");
                else
                        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
                headers = curl_slist_append(headers, raw_expect ? "Expect: 100-continue" : "Expect:");
        }
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
        code = curl_easy_perform(h);
        if (code != CURLE_OK)
                print_message("raw %s %s: %s\n", method, path, curl_easy_strerror(code));
        assert_int_equal(code, CURLE_OK);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        fclose(out);
        curl_slist_free_all(headers);
        curl_easy_cleanup(h);
        *ret_text = text;
        return status;
}

/* ---- tests: TLS authentication ----------------------------------------- */

static void test_valid_certificate_reaches_handler(void **state) {
        struct fixture *f = *state;
        _cleanup_(tsf_api_client_freep) struct tsf_api_client *cl = client(dir, "client1");
        json_t *in = json_pack("{s:i}", "a", 1), *out = NULL;
        char url[128];
        long status = 0;

        snprintf(url, sizeof(url), "%s/echo", f->base);
        assert_int_equal(call(cl, "POST", url, in, &status, &out), 0);
        assert_int_equal(status, 200);
        /* The identity is the certificate's CN. */
        assert_string_equal(json_string_value(json_object_get(out, "node")), "client1");
        assert_string_equal(json_string_value(json_object_get(out, "transport")), "tls");
        assert_true(json_equal(json_object_get(out, "body"), in));
        assert_int_equal(atomic_load(&f->calls), 1);
        json_decref(out);

        /* The same connection again (kept alive), no body this time. */
        assert_int_equal(call(cl, "GET", url, NULL, &status, &out), 0);
        assert_int_equal(status, 200);
        assert_true(json_is_null(json_object_get(out, "body")) || !json_object_get(out, "body"));
        assert_int_equal(atomic_load(&f->calls), 2);
        json_decref(out);
        json_decref(in);
}

static void test_no_certificate_is_refused(void **state) {
        struct fixture *f = *state;
        _cleanup_(tsf_api_client_freep) struct tsf_api_client *cl = client(dir, NULL);
        json_t *in = json_pack("{s:i}", "a", 1), *out = NULL;
        char url[128];
        long status = 0;
        int r;

        snprintf(url, sizeof(url), "%s/echo", f->base);
        r = call(cl, "POST", url, in, &status, &out);
        /* Either the handshake fails or we answer 403; never the handler. */
        if (r == 0) {
                assert_int_equal(status, 403);
                assert_error(out, "certificate-required");
        }
        assert_int_equal(atomic_load(&f->calls), 0);
        json_decref(out);
        json_decref(in);
}

static void test_foreign_ca_is_refused(void **state) {
        struct fixture *f = *state;
        /* Same CN as the good client, from another CA. */
        _cleanup_(tsf_api_client_freep) struct tsf_api_client *cl = client(other_dir, "client1");
        json_t *in = json_pack("{s:i}", "a", 1), *out = NULL;
        char url[128];
        long status = 0;
        int r;

        snprintf(url, sizeof(url), "%s/echo", f->base);
        r = call(cl, "POST", url, in, &status, &out);
        if (r == 0) {
                assert_int_equal(status, 403);
                assert_error(out, "certificate-rejected");
        }
        json_decref(out);
        out = NULL;
        snprintf(url, sizeof(url), "%s/metrics", f->base);
        r = call(cl, "GET", url, NULL, &status, &out);
        if (r == 0)
                assert_int_equal(status, 403);
        assert_int_equal(atomic_load(&f->calls), 0);
        json_decref(out);
        json_decref(in);
}

static void test_server_must_be_farm_node(void **state) {
        struct fixture *f = *state;
        /* A client that trusts only the foreign CA must not talk to us. */
        struct tsf_api_client_config c = {.ca_file = p(3, other_dir, "ca.crt"),
                                          .cert_file = p(4, other_dir, "client1.crt"),
                                          .key_file = p(5, other_dir, "client1.key")};
        _cleanup_(tsf_api_client_freep) struct tsf_api_client *cl = NULL;
        char url[128];
        long status = 0;

        assert_int_equal(tsf_api_client_new(&c, &cl), 0);
        snprintf(url, sizeof(url), "%s/echo", f->base);
        assert_int_equal(tsf_api_client_call(cl, "GET", url, NULL, &status, NULL), -EKEYREJECTED);
        assert_int_equal(atomic_load(&f->calls), 0);
}

/* ---- tests: malformed requests ----------------------------------------- */

static void check_raw(struct fixture *f, const char *method, const char *path, const char *ct,
                      const char *body, size_t len, bool chunked, long want, const char *error) {
        char *text = NULL;
        long status = raw_call(f, method, path, ct, body, len, chunked, &text);
        json_t *v = json_loads(text, 0, NULL);

        if (status != want)
                print_message("%s %s: got %ld %s\n", method, path, status, text);
        assert_int_equal(status, want);
        assert_error(v, error);
        json_decref(v);
        free(text);
}

static void test_invalid_json(void **state) {
        struct fixture *f = *state;
        static const char *bad[] = {
                "{\"a\":",             /* truncated */
                "{\"a\":1} trailing",  /* garbage after the value */
                "{\"a\":1,\"a\":2}",   /* duplicate key */
                "\"just a string\"",   /* not an object or array */
                "{\"a\":\"\\u0000\"}", /* NUL in a string */
                "\xff\xfe{}",          /* not UTF-8 */
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                check_raw(f, "POST", "/echo", "application/json", bad[i], strlen(bad[i]), false, 400,
                          "invalid-json");
        /* Chunked too (no Content-Length to check early). */
        check_raw(f, "POST", "/echo", "application/json", bad[0], strlen(bad[0]), true, 400, "invalid-json");
        assert_int_equal(atomic_load(&f->calls), 0);
}

static void test_oversized_body(void **state) {
        struct fixture *f = *state;
        size_t len = TSF_API_BODY_MAX_DEFAULT + 1;
        char *big = malloc(32 * len);

        assert_non_null(big);
        /* Valid JSON, one byte too many: the size alone decides. */
        memset(big, ' ', 32 * len);
        big[0] = '[';
        big[len - 1] = ']';
        check_raw(f, "POST", "/echo", "application/json", big, len, false, 413, "too-large");
        check_raw(f, "POST", "/echo", "application/json", big, len, true, 413, "too-large");
        check_raw(f, "POST", "/echo", "application/json", big, 4 * len, false, 413, "too-large");
        /* A client that waits for "100 Continue" gets the 413 instead, and
         * never sends the body (a big one: past what the server drains). */
        raw_expect = true;
        check_raw(f, "POST", "/echo", "application/json", big, 32 * len, false, 413, "too-large");
        raw_expect = false;
        /* Exactly at the limit is fine. */
        big[len - 2] = ']';
        {
                char *text = NULL;

                assert_int_equal(
                        raw_call(f, "POST", "/echo", "application/json", big, len - 1, false, &text), 200);
                free(text);
        }
        assert_int_equal(atomic_load(&f->calls), 1);
        free(big);
}

static void test_content_type_method_route(void **state) {
        struct fixture *f = *state;
        char *text = NULL;

        check_raw(f, "POST", "/echo", "text/plain", "{}", 2, false, 415, "unsupported-media-type");
        check_raw(f, "POST", "/echo", NULL, "{}", 2, false, 415, "unsupported-media-type");
        check_raw(f, "POST", "/echo", "application/jsonx", "{}", 2, false, 415, "unsupported-media-type");
        check_raw(f, "GET", "/nowhere", NULL, NULL, 0, false, 404, "not-found");
        check_raw(f, "DELETE", "/echo", NULL, NULL, 0, false, 405, "method-not-allowed");
        check_raw(f, "POST", "/items/x", "application/json", "{}", 2, false, 405, "method-not-allowed");
        /* A route without TSF_API_BODY takes no body. */
        check_raw(f, "GET", "/items/x", "application/json", "{}", 2, false, 400, "unexpected-body");
        /* Local-only routes are not served over TLS. */
        check_raw(f, "GET", "/local", NULL, NULL, 0, false, 403, "local-only");
        /* A failing handler is a 500 with a reason, not a hang. */
        check_raw(f, "GET", "/fail", NULL, NULL, 0, false, 500, "internal");
        assert_int_equal(atomic_load(&f->calls), 1);

        /* "application/json; charset=utf-8" is JSON. */
        assert_int_equal(
                raw_call(f, "POST", "/echo", "application/json; charset=utf-8", "{}", 2, false, &text), 200);
        free(text);
        /* Prefix routes; the exact route wins over the prefix. */
        assert_int_equal(raw_call(f, "GET", "/items/a/b", NULL, NULL, 0, false, &text), 200);
        assert_non_null(strstr(text, "\"path\":\"/items/a/b\""));
        free(text);
        assert_int_equal(raw_call(f, "GET", "/items/special", NULL, NULL, 0, false, &text), 200);
        assert_non_null(strstr(text, "\"node\":\"client1\""));
        free(text);
}

/* ---- tests: /metrics --------------------------------------------------- */

static void test_metrics(void **state) {
        struct fixture *f = *state;
        char *text = NULL;

        check_raw(f, "GET", "/nowhere", NULL, NULL, 0, false, 404, "not-found");
        assert_int_equal(raw_call(f, "GET", "/metrics", NULL, NULL, 0, false, &text), 200);
        assert_non_null(strstr(text, "# HELP tsfarm_api_requests_total "));
        assert_non_null(strstr(text, "# TYPE tsfarm_api_requests_total counter\n"));
        /* This request counts too: the 404 and itself. */
        assert_non_null(strstr(text, "\ntsfarm_api_requests_total 2\n"));
        assert_non_null(strstr(text, "\ntsfarm_api_invalid_total 1\n"));
        assert_non_null(strstr(text, "# TYPE tsfarm_api_long_polls gauge\n"));
        assert_non_null(strstr(text, "# HELP test_things_total Things.\\nCounted.\n"));
        assert_non_null(strstr(text, "\ntest_things_total 7\n"));
        free(text);
        check_raw(f, "POST", "/metrics", NULL, NULL, 0, false, 405, "method-not-allowed");
}

/* ---- tests: the UNIX socket -------------------------------------------- */

static void test_unix_root(void **state) {
        struct fixture *f = *state;
        _cleanup_(tsf_api_client_freep) struct tsf_api_client *cl = unix_client(f);
        json_t *out = NULL;
        long status = 0;

        if (geteuid() != 0)
                skip();
        assert_int_equal(call(cl, "GET", "http://localhost/local", NULL, &status, &out), 0);
        assert_int_equal(status, 200);
        assert_string_equal(json_string_value(json_object_get(out, "transport")), "unix");
        assert_int_equal(json_integer_value(json_object_get(out, "uid")), 0);
        json_decref(out);
        assert_int_equal(atomic_load(&f->calls), 1);
}

/* In a child: become uid 65534 with group gid, call GET /local; exits 0
 * if the status was `want`. */
static void child_call(struct fixture *f, gid_t gid, long want) {
        pid_t pid = fork();
        int wstatus;

        assert_true(pid >= 0);
        if (pid == 0) {
                struct tsf_api_client *cl = NULL;
                json_t *out = NULL;
                long status = 0;

                if (setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid(65534) < 0)
                        _exit(3);
                if (tsf_api_client_new(&(struct tsf_api_client_config){.unix_path = f->sock}, &cl) < 0 ||
                    tsf_api_client_call(cl, "GET", "http://localhost/local", NULL, &status, &out) < 0)
                        _exit(2);
                if (want == 403 && strcmp(json_string_value(json_object_get(out, "error"))
                                                  ? json_string_value(json_object_get(out, "error"))
                                                  : "",
                                          "peer-not-allowed") != 0)
                        _exit(4);
                /* _exit: no LeakSanitizer run, no cmocka summary in the child. */
                _exit(status == want ? 0 : 1);
        }
        assert_int_equal(waitpid(pid, &wstatus, 0), pid);
        assert_true(WIFEXITED(wstatus));
        assert_int_equal(WEXITSTATUS(wstatus), 0);
}

static void test_unix_policy(void **state) {
        struct fixture *f = *state;

        if (geteuid() != 0)
                skip();
        /* The child must reach the socket to be refused by the policy, not by
         * the file system. */
        assert_int_equal(chmod(dir, 0755), 0);
        child_call(f, 65534, 403);
        assert_int_equal(atomic_load(&f->calls), 0);
        child_call(f, TEST_GROUP, 200);
        assert_int_equal(atomic_load(&f->calls), 1);
        assert_int_equal(chmod(dir, 0700), 0);
}

/* ---- tests: long poll -------------------------------------------------- */

static void test_long_poll_resumed(void **state) {
        struct fixture *f = *state;
        _cleanup_(tsf_api_client_freep) struct tsf_api_client *cl = client(dir, "client1");
        json_t *out = NULL;
        char url[128];
        long status = 0;

        snprintf(url, sizeof(url), "%s/wait?timeout_ms=5000&resume_ms=100", f->base);
        assert_int_equal(call(cl, "GET", url, NULL, &status, &out), 0);
        assert_int_equal(status, 200);
        assert_int_equal(json_integer_value(json_object_get(out, "data")), 42);
        assert_int_equal(atomic_load(&f->cancels), 0);
        json_decref(out);
}

static void test_long_poll_deadline(void **state) {
        struct fixture *f = *state;
        _cleanup_(tsf_api_client_freep) struct tsf_api_client *cl = client(dir, "client1");
        json_t *out = NULL;
        char url[128];
        long status = 0;
        usec_t t0 = tsf_now_monotonic();

        snprintf(url, sizeof(url), "%s/wait?timeout_ms=200", f->base);
        assert_int_equal(call(cl, "GET", url, NULL, &status, &out), 0);
        /* The deadline's answer: 204, no body. */
        assert_int_equal(status, 204);
        assert_null(out);
        assert_true(tsf_now_monotonic() - t0 >= 200 * USEC_PER_MSEC);
        assert_int_equal(atomic_load(&f->cancels), 1);

        /* The connection is still good for the next poll. */
        snprintf(url, sizeof(url), "%s/wait?timeout_ms=5000&resume_ms=10", f->base);
        assert_int_equal(call(cl, "GET", url, NULL, &status, &out), 0);
        assert_int_equal(status, 200);
        json_decref(out);
}

struct poll_thread {
        struct fixture *f;
        int r;
        long status;
};

static void *poll_thread(void *arg) {
        struct poll_thread *t = arg;
        struct tsf_api_client *cl = client(dir, "client1");
        json_t *out = NULL;
        char url[128];

        snprintf(url, sizeof(url), "%s/wait?timeout_ms=30000", t->f->base);
        t->r = tsf_api_client_call(cl, "GET", url, NULL, &t->status, &out);
        json_decref(out);
        tsf_api_client_free(cl);
        return NULL;
}

/* Freeing the server with a long poll waiting ends it (503 or a closed
 * connection), runs on_cancel, and leaks nothing (ASan says). */
static void test_long_poll_server_stops(void **state) {
        struct fixture *f = *state;
        struct poll_thread t = {.f = f};
        pthread_t th;
        uint64_t one = 1;

        assert_int_equal(pthread_create(&th, NULL, poll_thread, &t), 0);
        for (int i = 0; i < 500 && atomic_load(&f->waiting) == 0; i++)
                usleep(10 * 1000);
        assert_int_equal(atomic_load(&f->waiting), 1);

        assert_int_equal(write(f->stop_fd, &one, sizeof(one)), sizeof(one));
        assert_int_equal(pthread_join(f->thread, NULL), 0);
        f->server = tsf_api_server_free(f->server);
        assert_int_equal(atomic_load(&f->cancels), 1);
        assert_int_equal(pthread_join(th, NULL), 0);
        assert_true(t.r < 0 || t.status == 503);
        f->stopped = true;
}

/* ---- tests: asynchronous calls on an sd-event loop ---------------------- */

struct async_result {
        int done, r;
        long status;
        json_t *reply;
        char error[256];
        usec_t at;
};

static void on_async_done(int r, long status, json_t *reply, const char *error, void *userdata) {
        struct async_result *a = userdata;

        a->done++;
        a->r = r;
        a->status = status;
        a->reply = json_incref(reply);
        a->at = tsf_now_monotonic();
        snprintf(a->error, sizeof(a->error), "%s", error);
}

/* Runs the client's loop until every result is done, or fails at the deadline. */
static void run_until_done(sd_event *e, struct async_result *a, size_t n, usec_t deadline) {
        usec_t end = tsf_now_monotonic() + deadline;

        for (;;) {
                size_t done = 0;

                for (size_t i = 0; i < n; i++)
                        done += a[i].done > 0;
                if (done == n)
                        return;
                assert_true(tsf_now_monotonic() < end);
                assert_true(sd_event_run(e, 50 * USEC_PER_MSEC) >= 0);
        }
}

/* A long poll, an echo with a body and a refusal run side by side on one
 * loop: the quick calls finish while the poll still waits. */
static void test_async_concurrent(void **state) {
        struct fixture *f = *state;
        _cleanup_(tsf_api_client_freep) struct tsf_api_client *cl = client(dir, "client1");
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_(json_decrefp) json_t *in = json_pack("{s:s}", "hello", "world");
        struct async_result a[3] = {};
        char url[3][128];
        usec_t t0;

        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(tsf_api_client_attach_event(cl, e), 0);
        assert_int_equal(tsf_api_client_attach_event(cl, e), -EBUSY);
        snprintf(url[0], sizeof(url[0]), "%s/wait?timeout_ms=5000&resume_ms=400", f->base);
        snprintf(url[1], sizeof(url[1]), "%s/echo", f->base);
        snprintf(url[2], sizeof(url[2]), "%s/nowhere", f->base);
        t0 = tsf_now_monotonic();
        assert_int_equal(tsf_api_client_start(cl, "GET", url[0], NULL, 0, on_async_done, &a[0], NULL), 0);
        assert_int_equal(tsf_api_client_start(cl, "POST", url[1], in, 0, on_async_done, &a[1], NULL), 0);
        assert_int_equal(tsf_api_client_start(cl, "GET", url[2], NULL, 0, on_async_done, &a[2], NULL), 0);
        /* Never from inside start. */
        assert_int_equal(a[0].done + a[1].done + a[2].done, 0);
        run_until_done(e, a, 3, 10 * USEC_PER_SEC);

        assert_int_equal(a[0].r, 0);
        assert_int_equal(a[0].status, 200);
        assert_int_equal(json_integer_value(json_object_get(a[0].reply, "data")), 42);
        assert_int_equal(a[1].r, 0);
        assert_int_equal(a[1].status, 200);
        assert_string_equal(json_string_value(json_object_get(json_object_get(a[1].reply, "body"), "hello")),
                            "world");
        assert_int_equal(a[2].r, 0);
        assert_int_equal(a[2].status, 404);
        assert_true(a[1].at < a[0].at && a[2].at < a[0].at);
        assert_true(a[0].at - t0 >= 400 * USEC_PER_MSEC);
        for (size_t i = 0; i < 3; i++) {
                assert_int_equal(a[i].done, 1);
                json_decref(a[i].reply);
        }
}

/* A call's own deadline, and a port nobody listens on. */
static void test_async_failures(void **state) {
        struct fixture *f = *state;
        _cleanup_(tsf_api_client_freep) struct tsf_api_client *cl = client(dir, "client1");
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        struct async_result a[2] = {};
        char url[2][128];
        usec_t t0;

        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(tsf_api_client_attach_event(cl, e), 0);
        snprintf(url[0], sizeof(url[0]), "%s/wait?timeout_ms=5000", f->base);
        snprintf(url[1], sizeof(url[1]), "https://127.0.0.1:1/echo");
        t0 = tsf_now_monotonic();
        assert_int_equal(tsf_api_client_start(cl, "GET", url[0], NULL, 300 * USEC_PER_MSEC, on_async_done,
                                              &a[0], NULL),
                         0);
        assert_int_equal(tsf_api_client_start(cl, "GET", url[1], NULL, 0, on_async_done, &a[1], NULL), 0);
        run_until_done(e, a, 2, 10 * USEC_PER_SEC);
        assert_int_equal(a[0].r, -ETIMEDOUT);
        assert_true(a[0].at - t0 >= 300 * USEC_PER_MSEC && a[0].at - t0 < 4 * USEC_PER_SEC);
        assert_true(a[0].error[0] != '\0');
        assert_int_equal(a[1].r, -ECONNREFUSED);
        assert_null(a[0].reply);
        assert_null(a[1].reply);
}

/* A cancelled call never calls back; freeing the client with a call in
 * flight cancels it too. The server sees the poll go away. */
static void test_async_cancel(void **state) {
        struct fixture *f = *state;
        struct tsf_api_client *cl = client(dir, "client1");
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        struct async_result a[3] = {};
        struct tsf_api_call *poll = NULL;
        char url[128];

        assert_int_equal(sd_event_new(&e), 0);
        assert_int_equal(tsf_api_client_attach_event(cl, e), 0);
        snprintf(url, sizeof(url), "%s/wait?timeout_ms=30000", f->base);
        assert_int_equal(tsf_api_client_start(cl, "GET", url, NULL, 0, on_async_done, &a[0], &poll), 0);
        for (int i = 0; i < 200 && atomic_load(&f->waiting) == 0; i++)
                assert_true(sd_event_run(e, 10 * USEC_PER_MSEC) >= 0);
        assert_int_equal(atomic_load(&f->waiting), 1);
        /* (libmicrohttpd does not watch a suspended connection, so the
         * server's side lasts until its deadline; the wait is bounded.) */
        tsf_api_call_cancel(poll);

        snprintf(url, sizeof(url), "%s/echo", f->base);
        assert_int_equal(tsf_api_client_start(cl, "GET", url, NULL, 0, on_async_done, &a[1], NULL), 0);
        run_until_done(e, &a[1], 1, 10 * USEC_PER_SEC);
        assert_int_equal(a[1].status, 200);
        json_decref(a[1].reply);
        assert_int_equal(tsf_api_client_start(cl, "GET", url, NULL, 0, on_async_done, &a[2], NULL), 0);
        tsf_api_client_free(cl);
        assert_int_equal(a[0].done, 0);
        assert_int_equal(a[2].done, 0);
}

/* ---- tests: pki -------------------------------------------------------- */

static void test_pki_refusals(void **state) {
        char err[TSF_PKI_ERROR_MAX];
        char *ips[] = {"10.0.0.1", "not-an-ip"}, *dns[] = {"bad..name"}, *inject[] = {"a,IP:1.1.1.1"};

        /* Nothing is overwritten without force. */
        assert_int_equal(tsf_pki_init_ca(dir, "test", 0, false, err, sizeof(err)), -EEXIST);
        assert_non_null(strstr(err, "already exists"));
        assert_int_equal(tsf_pki_issue(dir, "client1", NULL, 0, NULL, 0, 0, false, err, sizeof(err)),
                         -EEXIST);
        assert_int_equal(tsf_pki_issue(dir, "ca", NULL, 0, NULL, 0, 0, true, err, sizeof(err)), -EINVAL);
        assert_int_equal(tsf_pki_issue(dir, "x/y", NULL, 0, NULL, 0, 0, false, err, sizeof(err)), -EINVAL);
        assert_int_equal(tsf_pki_issue(dir, "", NULL, 0, NULL, 0, 0, false, err, sizeof(err)), -EINVAL);
        assert_int_equal(tsf_pki_issue(dir, "n1", ips, 2, NULL, 0, 0, false, err, sizeof(err)), -EINVAL);
        assert_non_null(strstr(err, "not-an-ip"));
        assert_int_equal(tsf_pki_issue(dir, "n1", NULL, 0, dns, 1, 0, false, err, sizeof(err)), -EINVAL);
        assert_int_equal(tsf_pki_issue(dir, "n1", NULL, 0, inject, 1, 0, false, err, sizeof(err)), -EINVAL);
        assert_int_equal(access(p(0, dir, "n1.key"), F_OK), -1);
        assert_int_equal(tsf_pki_issue(other_dir, "n1", NULL, 0, NULL, 0, 0, false, err, sizeof(err)), 0);
        assert_int_equal(tsf_pki_issue(other_dir, "n1", NULL, 0, NULL, 0, 0, true, err, sizeof(err)), 0);
        /* No CA there. */
        assert_int_equal(tsf_pki_issue("/nonexistent", "n1", NULL, 0, NULL, 0, 0, false, err, sizeof(err)),
                         -ENOENT);
}

/* ---- main -------------------------------------------------------------- */

static int group_setup(void **state) {
        char err[TSF_PKI_ERROR_MAX];
        char *ips[] = {"127.0.0.1", "::1"}, *dns[] = {"localhost"};

        if (!mkdtemp(dir))
                return -1;
        snprintf(other_dir, sizeof(other_dir), "%s/other", dir);
        if (mkdir(other_dir, 0700) < 0)
                return -1;
        if (tsf_pki_init_ca(dir, "test", 1, false, err, sizeof(err)) < 0 ||
            tsf_pki_issue(dir, "server", ips, 2, dns, 1, 1, false, err, sizeof(err)) < 0 ||
            tsf_pki_issue(dir, "client1", NULL, 0, NULL, 0, 1, false, err, sizeof(err)) < 0 ||
            tsf_pki_init_ca(other_dir, "other", 1, false, err, sizeof(err)) < 0 ||
            tsf_pki_issue(other_dir, "client1", NULL, 0, NULL, 0, 1, false, err, sizeof(err)) < 0) {
                fprintf(stderr, "pki: %s\n", err);
                return -1;
        }
        return 0;
}

static int group_teardown(void **state) {
        char cmd[PATH_MAX + 16];

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_valid_certificate_reaches_handler, setup, teardown),
                cmocka_unit_test_setup_teardown(test_no_certificate_is_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(test_foreign_ca_is_refused, setup, teardown),
                cmocka_unit_test_setup_teardown(test_server_must_be_farm_node, setup, teardown),
                cmocka_unit_test_setup_teardown(test_invalid_json, setup, teardown),
                cmocka_unit_test_setup_teardown(test_oversized_body, setup, teardown),
                cmocka_unit_test_setup_teardown(test_content_type_method_route, setup, teardown),
                cmocka_unit_test_setup_teardown(test_metrics, setup, teardown),
                cmocka_unit_test_setup_teardown(test_unix_root, setup, teardown),
                cmocka_unit_test_setup_teardown(test_unix_policy, setup, teardown),
                cmocka_unit_test_setup_teardown(test_long_poll_resumed, setup, teardown),
                cmocka_unit_test_setup_teardown(test_long_poll_deadline, setup, teardown),
                cmocka_unit_test_setup_teardown(test_long_poll_server_stops, setup, teardown),
                cmocka_unit_test_setup_teardown(test_async_concurrent, setup, teardown),
                cmocka_unit_test_setup_teardown(test_async_failures, setup, teardown),
                cmocka_unit_test_setup_teardown(test_async_cancel, setup, teardown),
                cmocka_unit_test(test_pki_refusals),
        };

        /* TSFARM_LOG_LEVEL=debug shows the server's reasons and MHD's messages. */
        tsf_log_parse_environment();
        return cmocka_run_group_tests_name("api", tests, group_setup, group_teardown);
}
