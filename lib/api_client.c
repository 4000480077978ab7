/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The API client on libcurl. https:// URLs present our node certificate
 * and verify the server against the farm CA, host name included; a
 * unix_path sends plain HTTP over the local socket instead.
 *
 * Two ways to call:
 *  - tsf_api_client_call(): synchronous, on the client's own easy handle
 *    (tsctl, tests), keeping the connection for the next call;
 *  - tsf_api_client_start(): asynchronous on an sd-event loop through the
 *    multi interface. curl tells us which sockets to watch
 *    (CURLMOPT_SOCKETFUNCTION: one sd-event io source per socket) and when
 *    to call it back (CURLMOPT_TIMERFUNCTION: one timer source); the loop
 *    drives curl_multi_socket_action(). Calls run concurrently and share
 *    the multi handle's connection cache, so a long poll, a heartbeat and a
 *    logon query proceed side by side without a thread.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "tsfarm/api.h"
#include "tsfarm/cleanup.h"
#include "tsfarm/list.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"

#define CLIENT_TIMEOUT_DEFAULT (30 * USEC_PER_SEC)
#define CLIENT_RESPONSE_MAX_DEFAULT ((size_t)16 * 1024 * 1024)

struct buffer {
        char *data;
        size_t len, max;
        bool overflow;
};

struct tsf_api_call {
        struct tsf_api_client *client;
        struct tsf_api_call *prev, *next;
        CURL *easy;
        struct curl_slist *headers;
        char *body;
        struct buffer answer;
        char error[CURL_ERROR_SIZE];
        char *what; /* "METHOD URL", for the debug log */
        tsf_api_done_t done;
        void *userdata;
};

struct tsf_api_client {
        CURL *curl;
        char *ca_file, *cert_file, *key_file, *unix_path;
        usec_t timeout;
        size_t response_max;
        char error[CURL_ERROR_SIZE];

        /* Asynchronous calls (tsf_api_client_attach_event). */
        sd_event *event;
        CURLM *multi;
        sd_event_source *timer;
        struct tsf_api_call *calls;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result = CURLE_FAILED_INIT;

/* curl_global_init() is not thread-safe in every libcurl, and a library
 * cannot know who else calls it; once per process, never cleaned up. */
static void curl_init(void) {
        curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int strdup_opt(const char *s, char **ret) {
        if (!s)
                return 0;
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

int tsf_api_client_new(const struct tsf_api_client_config *config, struct tsf_api_client **ret) {
        _cleanup_(tsf_api_client_freep) struct tsf_api_client *c = NULL;
        int r;

        if (!config || (!!config->cert_file != !!config->key_file))
                return -EINVAL;
        (void)pthread_once(&curl_once, curl_init);
        if (curl_init_result != CURLE_OK)
                return log_debug_errno(-EIO, "api: curl_global_init failed: %s",
                                       curl_easy_strerror(curl_init_result));

        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->timeout = config->timeout ? config->timeout : CLIENT_TIMEOUT_DEFAULT;
        c->response_max = config->response_max ? config->response_max : CLIENT_RESPONSE_MAX_DEFAULT;
        r = strdup_opt(config->ca_file, &c->ca_file);
        if (r >= 0)
                r = strdup_opt(config->cert_file, &c->cert_file);
        if (r >= 0)
                r = strdup_opt(config->key_file, &c->key_file);
        if (r >= 0)
                r = strdup_opt(config->unix_path, &c->unix_path);
        if (r < 0)
                return r;
        c->curl = curl_easy_init();
        if (!c->curl)
                return -ENOMEM;
        *ret = TAKE_PTR(c);
        return 0;
}

static void call_free(struct tsf_api_call *call) {
        struct tsf_api_client *c = call->client;

        LIST_REMOVE(c->calls, call);
        if (call->easy) {
                if (c->multi)
                        (void)curl_multi_remove_handle(c->multi, call->easy);
                curl_easy_cleanup(call->easy);
        }
        curl_slist_free_all(call->headers);
        free(call->body);
        free(call->answer.data);
        free(call->what);
        free(call);
}

struct tsf_api_client *tsf_api_client_free(struct tsf_api_client *c) {
        if (!c)
                return NULL;
        while (c->calls)
                call_free(c->calls);
        /* Closes the cached connections; their io sources go through the
         * socket callback (CURL_POLL_REMOVE) while the multi still exists. */
        if (c->multi)
                (void)curl_multi_cleanup(c->multi);
        sd_event_source_disable_unref(c->timer);
        sd_event_unref(c->event);
        if (c->curl)
                curl_easy_cleanup(c->curl);
        free(c->ca_file);
        free(c->cert_file);
        free(c->key_file);
        free(c->unix_path);
        free(c);
        return NULL;
}

const char *tsf_api_client_error(const struct tsf_api_client *c) {
        return c->error;
}

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *userdata) {
        struct buffer *b = userdata;
        size_t n = size * nmemb;
        char *p;

        if (n > b->max - b->len) {
                b->overflow = true;
                return 0; /* makes curl fail with CURLE_WRITE_ERROR */
        }
        p = realloc(b->data, b->len + n + 1);
        if (!p)
                return 0;
        b->data = p;
        memcpy(b->data + b->len, ptr, n);
        b->len += n;
        b->data[b->len] = '\0';
        return n;
}

static int curl_to_errno(CURLcode code) {
        switch (code) {
        case CURLE_OPERATION_TIMEDOUT:
                return -ETIMEDOUT;
        case CURLE_COULDNT_CONNECT:
                return -ECONNREFUSED;
        case CURLE_COULDNT_RESOLVE_HOST:
                return -EHOSTUNREACH;
        case CURLE_OUT_OF_MEMORY:
                return -ENOMEM;
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_SSL_CIPHER:
                return -EKEYREJECTED;
        case CURLE_URL_MALFORMAT:
        case CURLE_UNSUPPORTED_PROTOCOL:
                return -EINVAL;
        default:
                return -EIO;
        }
}

DEFINE_TRIVIAL_CLEANUP_FUNC(struct curl_slist *, curl_slist_free_all);

static struct curl_slist *build_headers(bool has_body) {
        static const char *const always[] = {"Accept: application/json"};
        /* curl's "Expect: 100-continue" costs a round trip (or a second)
         * for every body over 1 KiB; our bodies are small. */
        static const char *const with_body[] = {"Content-Type: application/json", "Expect:"};
        _cleanup_(curl_slist_free_allp) struct curl_slist *list = NULL;

        for (size_t i = 0; i < ELEMENTSOF(always) + (has_body ? ELEMENTSOF(with_body) : 0); i++) {
                const char *h = i < ELEMENTSOF(always) ? always[i] : with_body[i - ELEMENTSOF(always)];
                struct curl_slist *grown = curl_slist_append(list, h);

                if (!grown)
                        return NULL;
                list = grown;
        }
        return TAKE_PTR(list);
}

/* Every option of one call. The handle is fresh or reset, so nothing of
 * a previous call leaks into this one. */
static CURLcode setup_easy(const struct tsf_api_client *c, CURL *h, const char *method, const char *url,
                           const char *body, struct curl_slist *headers, struct buffer *answer, char *error,
                           usec_t timeout) {
        long timeout_ms = (long)MAX((timeout ? timeout : c->timeout) / USEC_PER_MSEC, (usec_t)1);
        CURLcode code;

        code = curl_easy_setopt(h, CURLOPT_URL, url);
        if (code == CURLE_OK)
                code = curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        if (code == CURLE_OK)
                code = curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
        if (code == CURLE_OK)
                code = curl_easy_setopt(h, CURLOPT_ERRORBUFFER, error);
        if (code == CURLE_OK)
                code = curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L); /* threads, and no SIGALRM games */
        if (code == CURLE_OK)
                code = curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
        /* Only our two schemes; never follow a redirect somewhere else. */
        if (code == CURLE_OK)
                code = curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
        if (code == CURLE_OK)
                code = curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
        if (code == CURLE_OK)
                code = curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
        if (code == CURLE_OK)
                code = curl_easy_setopt(h, CURLOPT_WRITEDATA, answer);
        if (code == CURLE_OK && body) {
                code = curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
                if (code == CURLE_OK)
                        code = curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
        }
        if (code == CURLE_OK && c->unix_path)
                code = curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, c->unix_path);
        /* The farm CA only, not the system's store: a certificate from a
         * public CA for the same host name must not pass. */
        if (code == CURLE_OK && c->ca_file) {
                code = curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
                if (code == CURLE_OK)
                        code = curl_easy_setopt(h, CURLOPT_CAPATH, NULL);
        }
        if (code == CURLE_OK)
                code = curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
        if (code == CURLE_OK)
                code = curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
        if (code == CURLE_OK)
                code = curl_easy_setopt(h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
        if (code == CURLE_OK && c->cert_file) {
                code = curl_easy_setopt(h, CURLOPT_SSLCERT, c->cert_file);
                if (code == CURLE_OK)
                        code = curl_easy_setopt(h, CURLOPT_SSLKEY, c->key_file);
        }
        if (code != CURLE_OK)
                snprintf(error, CURL_ERROR_SIZE, "curl_easy_setopt: %s", curl_easy_strerror(code));
        return code;
}

/* The outcome of a finished transfer, the same for both ways to call. */
static int finish(CURL *h, CURLcode code, struct buffer *answer, size_t response_max, char *error,
                  const char *what, long *ret_status, json_t **ret_reply) {
        long status = 0;

        /* The error buffer must not point at the caller's after this. */
        (void)curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
        if (ret_reply)
                *ret_reply = NULL;
        if (answer->overflow) {
                snprintf(error, CURL_ERROR_SIZE, "the answer is larger than %zu bytes", response_max);
                return log_debug_errno(-EFBIG, "api: %s: %s", what, error);
        }
        if (code != CURLE_OK) {
                if (!error[0])
                        snprintf(error, CURL_ERROR_SIZE, "%s", curl_easy_strerror(code));
                return log_debug_errno(curl_to_errno(code), "api: %s: %s", what, error);
        }
        (void)curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        if (answer->len > 0 && ret_reply) {
                json_error_t e;
                json_t *v = json_loadb(answer->data, answer->len, JSON_REJECT_DUPLICATES, &e);

                if (!v) {
                        snprintf(error, CURL_ERROR_SIZE, "HTTP %ld with a body that is not JSON: %s", status,
                                 e.text);
                        return log_debug_errno(-EBADMSG, "api: %s: %s", what, error);
                }
                *ret_reply = v;
        }
        if (ret_status)
                *ret_status = status;
        return 0;
}

int tsf_api_client_call(struct tsf_api_client *c, const char *method, const char *url, json_t *in,
                        long *ret_status, json_t **ret_reply) {
        _cleanup_(curl_slist_free_allp) struct curl_slist *headers = NULL;
        _cleanup_free_ char *body = NULL, *what = NULL;
        struct buffer b = {.max = c->response_max};
        CURLcode code;
        int r;

        c->error[0] = '\0';
        if (in) {
                body = json_dumps(in, JSON_COMPACT);
                if (!body)
                        return -ENOMEM;
        }
        headers = build_headers(body);
        if (!headers || asprintf(&what, "%s %s", method, url) < 0)
                return -ENOMEM;
        /* Options of the previous call must not leak into this one, but the
         * connection cache must survive: curl_easy_reset() keeps it. */
        curl_easy_reset(c->curl);
        code = setup_easy(c, c->curl, method, url, body, headers, &b, c->error, 0);
        if (code != CURLE_OK)
                return log_debug_errno(curl_to_errno(code), "api: %s", c->error);
        code = curl_easy_perform(c->curl);
        r = finish(c->curl, code, &b, c->response_max, c->error, what, ret_status, ret_reply);
        free(b.data);
        return r;
}

/* ---- asynchronous calls ------------------------------------------------- */

static void process_done(struct tsf_api_client *c) {
        CURLMsg *m;
        int left;

        while ((m = curl_multi_info_read(c->multi, &left))) {
                _cleanup_(json_decrefp) json_t *reply = NULL;
                struct tsf_api_call *call = NULL;
                CURLcode code = m->data.result;
                long status = 0;
                int r;

                if (m->msg != CURLMSG_DONE)
                        continue;
                (void)curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&call);
                /* m is invalid after this. */
                (void)curl_multi_remove_handle(c->multi, call->easy);
                r = finish(call->easy, code, &call->answer, c->response_max, call->error, call->what,
                           &status, &reply);
                call->done(r, status, reply, call->error, call->userdata);
                call_free(call);
        }
}

static int on_curl_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct tsf_api_client *c = userdata;
        int action = 0, running;

        if (revents & (EPOLLIN | EPOLLHUP))
                action |= CURL_CSELECT_IN;
        if (revents & EPOLLOUT)
                action |= CURL_CSELECT_OUT;
        if (revents & EPOLLERR)
                action |= CURL_CSELECT_ERR;
        (void)curl_multi_socket_action(c->multi, fd, action, &running);
        process_done(c);
        return 0;
}

static int on_curl_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        struct tsf_api_client *c = userdata;
        int running;

        (void)curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        process_done(c);
        return 0;
}

/* curl says which events it wants on a socket: one io source per socket,
 * kept as the socket's curl_multi_assign() pointer. */
static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
        struct tsf_api_client *c = userp;
        sd_event_source *source = socketp;
        uint32_t events = 0;
        int r;

        if (what == CURL_POLL_REMOVE) {
                if (source) {
                        (void)curl_multi_assign(c->multi, fd, NULL);
                        sd_event_source_disable_unref(source);
                }
                return 0;
        }
        if (what & CURL_POLL_IN)
                events |= EPOLLIN;
        if (what & CURL_POLL_OUT)
                events |= EPOLLOUT;
        if (source) {
                r = sd_event_source_set_io_events(source, events);
                if (r >= 0)
                        r = sd_event_source_set_enabled(source, SD_EVENT_ON);
        } else {
                r = sd_event_add_io(c->event, &source, fd, events, on_curl_io, c);
                if (r >= 0 && curl_multi_assign(c->multi, fd, source) != CURLM_OK) {
                        sd_event_source_disable_unref(source);
                        r = -ENOMEM;
                }
        }
        if (r < 0) {
                log_debug_errno(r, "api: failed to watch a socket for curl: %m");
                return -1; /* curl fails the transfers on that socket */
        }
        return 0;
}

/* curl asks to be called back in timeout_ms (-1: never). It must not be
 * called from inside this callback, hence the timer even for 0. */
static int on_curl_timeout(CURLM *multi, long timeout_ms, void *userp) {
        struct tsf_api_client *c = userp;
        uint64_t now;
        int r;

        if (timeout_ms < 0)
                return sd_event_source_set_enabled(c->timer, SD_EVENT_OFF) < 0 ? -1 : 0;
        r = sd_event_now(c->event, CLOCK_MONOTONIC, &now);
        if (r >= 0)
                r = sd_event_source_set_time(c->timer, now + (uint64_t)timeout_ms * USEC_PER_MSEC);
        if (r >= 0)
                r = sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
        if (r < 0) {
                log_debug_errno(r, "api: failed to arm curl's timer: %m");
                return -1;
        }
        return 0;
}

int tsf_api_client_attach_event(struct tsf_api_client *c, sd_event *event) {
        int r;

        if (c->event)
                return -EBUSY;
        c->multi = curl_multi_init();
        if (!c->multi)
                return -ENOMEM;
        /* Accuracy 1 µs: curl asks for 0 ms to start a call, and a 1 ms
         * slack let the loop sit on every new call for up to a millisecond
         * (a borrowed CAL, two calls deep, lost a quarter of its rate). */
        r = sd_event_add_time(event, &c->timer, CLOCK_MONOTONIC, UINT64_MAX, 1, on_curl_timer, c);
        if (r < 0)
                return r;
        r = sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
        if (r < 0)
                return r;
        if (curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket) != CURLM_OK ||
            curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c) != CURLM_OK ||
            curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timeout) != CURLM_OK ||
            curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c) != CURLM_OK)
                return -EIO;
        c->event = sd_event_ref(event);
        return 0;
}

int tsf_api_client_start(struct tsf_api_client *c, const char *method, const char *url, json_t *in,
                         usec_t timeout, tsf_api_done_t done, void *userdata, struct tsf_api_call **ret) {
        struct tsf_api_call *call;
        CURLcode code;

        if (!c->multi || !done)
                return -EINVAL;
        call = calloc(1, sizeof(*call));
        if (!call)
                return -ENOMEM;
        call->client = c;
        call->done = done;
        call->userdata = userdata;
        call->answer.max = c->response_max;
        LIST_PREPEND(c->calls, call);

        if (in && !(call->body = json_dumps(in, JSON_COMPACT)))
                goto oom;
        call->headers = build_headers(call->body);
        call->easy = curl_easy_init();
        if (!call->headers || !call->easy || asprintf(&call->what, "%s %s", method, url) < 0) {
                call->what = NULL;
                goto oom;
        }
        code = setup_easy(c, call->easy, method, url, call->body, call->headers, &call->answer, call->error,
                          timeout);
        if (code == CURLE_OK)
                code = curl_easy_setopt(call->easy, CURLOPT_PRIVATE, call);
        if (code != CURLE_OK) {
                int r = log_debug_errno(curl_to_errno(code), "api: %s", call->error);

                call_free(call);
                return r;
        }
        if (curl_multi_add_handle(c->multi, call->easy) != CURLM_OK) {
                call_free(call);
                return -ENOMEM;
        }
        if (ret)
                *ret = call;
        return 0;
oom:
        call_free(call);
        return -ENOMEM;
}

void tsf_api_call_cancel(struct tsf_api_call *call) {
        if (call)
                call_free(call);
}
