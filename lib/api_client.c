/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The API client: libcurl's easy interface, one handle per client so that
 * consecutive calls reuse the connection (and the TLS session). https://
 * URLs present our node certificate and verify the server against the farm
 * CA, host name included; a unix_path sends plain HTTP over the local
 * socket instead.
 *
 * Synchronous on purpose for now: tsctl is its first user. An agent role
 * calling peers from its event loop needs the multi interface on sd-event
 * (CURLMOPT_SOCKETFUNCTION/TIMERFUNCTION), which is not written yet.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "tsfarm/api.h"
#include "tsfarm/cleanup.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"

#define CLIENT_TIMEOUT_DEFAULT (30 * USEC_PER_SEC)
#define CLIENT_RESPONSE_MAX_DEFAULT ((size_t)16 * 1024 * 1024)

struct tsf_api_client {
        CURL *curl;
        char *ca_file, *cert_file, *key_file, *unix_path;
        usec_t timeout;
        size_t response_max;
        char error[CURL_ERROR_SIZE];
};

struct buffer {
        char *data;
        size_t len, max;
        bool overflow;
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

struct tsf_api_client *tsf_api_client_free(struct tsf_api_client *c) {
        if (!c)
                return NULL;
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

int tsf_api_client_call(struct tsf_api_client *c, const char *method, const char *url, json_t *in,
                        long *ret_status, json_t **ret_reply) {
        _cleanup_(curl_slist_free_allp) struct curl_slist *headers = NULL;
        _cleanup_free_ char *body = NULL;
        struct buffer b = {.max = c->response_max};
        _cleanup_free_ char *data = NULL;
        long status = 0, timeout_ms = (long)MAX(c->timeout / USEC_PER_MSEC, (usec_t)1);
        CURL *h = c->curl;
        CURLcode code;

        c->error[0] = '\0';
        if (in) {
                body = json_dumps(in, JSON_COMPACT);
                if (!body)
                        return -ENOMEM;
        }
        /* Options of the previous call must not leak into this one, but the
         * connection cache must survive: curl_easy_reset() keeps it. */
        curl_easy_reset(h);
        headers = curl_slist_append(NULL, "Accept: application/json");
        if (headers && body) {
                struct curl_slist *h2 = curl_slist_append(headers, "Content-Type: application/json");

                headers = h2 ? h2 : headers;
                if (!h2)
                        return -ENOMEM;
        }
        /* curl's "Expect: 100-continue" costs a round trip (or a second)
         * for every body over 1 KiB; our bodies are small. */
        if (headers && body) {
                struct curl_slist *h2 = curl_slist_append(headers, "Expect:");

                headers = h2 ? h2 : headers;
                if (!h2)
                        return -ENOMEM;
        }
        if (!headers)
                return -ENOMEM;

        code = curl_easy_setopt(h, CURLOPT_URL, url);
        if (code == CURLE_OK)
                code = curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
        if (code == CURLE_OK)
                code = curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
        if (code == CURLE_OK)
                code = curl_easy_setopt(h, CURLOPT_ERRORBUFFER, c->error);
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
                code = curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
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
        if (code != CURLE_OK) {
                snprintf(c->error, sizeof(c->error), "curl_easy_setopt: %s", curl_easy_strerror(code));
                return log_debug_errno(curl_to_errno(code), "api: %s", c->error);
        }

        code = curl_easy_perform(h);
        data = b.data;
        /* The error buffer must not point at us after we return. */
        (void)curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
        if (b.overflow) {
                snprintf(c->error, sizeof(c->error), "the answer is larger than %zu bytes", c->response_max);
                return log_debug_errno(-EFBIG, "api: %s %s: %s", method, url, c->error);
        }
        if (code != CURLE_OK) {
                if (!c->error[0])
                        snprintf(c->error, sizeof(c->error), "%s", curl_easy_strerror(code));
                return log_debug_errno(curl_to_errno(code), "api: %s %s: %s", method, url, c->error);
        }
        (void)curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);

        if (ret_reply)
                *ret_reply = NULL;
        if (b.len > 0 && ret_reply) {
                json_error_t e;
                json_t *v = json_loadb(data, b.len, JSON_REJECT_DUPLICATES, &e);

                if (!v) {
                        snprintf(c->error, sizeof(c->error), "HTTP %ld with a body that is not JSON: %s",
                                 status, e.text);
                        return log_debug_errno(-EBADMSG, "api: %s %s: %s", method, url, c->error);
                }
                *ret_reply = v;
        }
        if (ret_status)
                *ret_status = status;
        return 0;
}
