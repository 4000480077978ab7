/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * tsctl license ...: the license server (tsagent's licensing role) over its
 * local UNIX socket (docs/licensing.md, "The API"): install-pack, packs,
 * issued, report, revoke. These routes are local-only: an operator on the
 * license server's machine, as root. And `verify`, which needs no server:
 * it judges a token offline against a directory of trusted keys, as a
 * terminal server does.
 *
 * tsctl adds nothing to the answers: --json prints the server's own
 * objects, tables show the same fields.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tsfarm/api.h"
#include "tsfarm/cleanup.h"
#include "tsfarm/clock.h"
#include "tsfarm/config.h"
#include "tsfarm/hex.h"
#include "tsfarm/lictoken.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"
#include "tsctl.h"

#define LICENSING_SOCKET_DEFAULT "/run/tsfarm/licensing.sock"
#define HARDWARE_ID_MIN 16
#define HARDWARE_ID_MAX 64

static const char *arg_socket = NULL;
static const char *arg_version = NULL;
static uint64_t arg_count = 0;
static const char *arg_state = NULL;
static const char *arg_device = NULL;
static const char *arg_pack = NULL;
static const char *arg_hardware_id = NULL;
static const char *arg_trust = NULL;
static bool arg_csv = false;

int license_parse_option(int val, const char *arg) {
        switch (val) {
        case LICENSE_OPT_SOCKET:
                if (!arg || !*arg)
                        return log_error_errno(-EINVAL, "--licensing-socket needs a path.");
                arg_socket = arg;
                return 0;
        case LICENSE_OPT_VERSION:
                arg_version = arg;
                return 0;
        case LICENSE_OPT_COUNT:
                if (tsf_parse_u64(arg, &arg_count) < 0 || arg_count == 0 || arg_count > 1000000)
                        return log_error_errno(-EINVAL, "--count '%s' is not a number from 1 to 1000000.",
                                               arg);
                return 0;
        case LICENSE_OPT_STATE:
                arg_state = arg;
                return 0;
        case LICENSE_OPT_DEVICE:
                arg_device = arg;
                return 0;
        case LICENSE_OPT_PACK:
                arg_pack = arg;
                return 0;
        case LICENSE_OPT_HARDWARE_ID:
                arg_hardware_id = arg;
                return 0;
        case LICENSE_OPT_TRUST:
                if (!arg || !*arg)
                        return log_error_errno(-EINVAL, "--trust needs a directory.");
                arg_trust = arg;
                return 0;
        case LICENSE_OPT_CSV:
                arg_csv = true;
                return 0;
        }
        return -EINVAL;
}

static const struct tsctl_role role = {"the license server", "licensing", "--licensing-socket"};

static const char *licensing_socket(void) {
        return tsctl_socket_path(arg_socket, "TSFARM_LICENSING_SOCKET", LICENSING_SOCKET_DEFAULT);
}

static int licensing_call(const char *method, const char *path, json_t *in, json_t **ret_reply) {
        return tsctl_role_call(&role, licensing_socket(), method, path, in, ret_reply);
}

/* Appends "&key=value" (or "?key=value" first), value percent-encoded. */
static int query_add(char **url, const char *key, const char *value) {
        static const char hex[] = "0123456789ABCDEF";
        _cleanup_free_ char *enc = NULL;
        char *joined, *o;

        if (!value)
                return 0;
        enc = malloc(3 * strlen(value) + 1);
        if (!enc)
                return log_oom();
        o = enc;
        for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
                if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                    strchr("-._~", *p))
                        *o++ = (char)*p;
                else {
                        *o++ = '%';
                        *o++ = hex[*p >> 4];
                        *o++ = hex[*p & 15];
                }
        }
        *o = '\0';
        if (asprintf(&joined, "%s%s%s=%s", *url, strchr(*url, '?') ? "&" : "?", key, enc) < 0)
                return log_oom();
        free(*url);
        *url = joined;
        return 0;
}

static json_int_t int_field(json_t *o, const char *key) {
        return json_integer_value(json_object_get(o, key));
}

/* ---- packs, install-pack ------------------------------------------------ */

static const struct column pack_cols[] = {
        {"PACK", false},   {"VERSION", false}, {"COUNT", true},     {"AVAILABLE", true},  {"ISSUED", true},
        {"REVOKED", true}, {"EXPIRED", true},  {"REVOCABLE", true}, {"INSTALLED", false},
};

static void pack_add_row(struct columns *t, json_t *p) {
        _cleanup_free_ char *id = tsctl_text_field(p, "id"),
                            *version = tsctl_text_field(p, "product_version");
        char installed[64];

        tsctl_format_usec(json_object_get(p, "installed_usec"), installed, sizeof(installed));
        columns_add(t, "%s", tsctl_strna(id));
        columns_add(t, "%s", tsctl_strna(version));
        columns_add(t, "%" JSON_INTEGER_FORMAT, int_field(p, "count"));
        columns_add(t, "%" JSON_INTEGER_FORMAT, int_field(p, "available"));
        columns_add(t, "%" JSON_INTEGER_FORMAT, int_field(p, "issued"));
        columns_add(t, "%" JSON_INTEGER_FORMAT, int_field(p, "revoked"));
        columns_add(t, "%" JSON_INTEGER_FORMAT, int_field(p, "expired"));
        columns_add(t, "%" JSON_INTEGER_FORMAT, int_field(p, "revocable"));
        columns_add(t, "%s", installed);
}

int verb_license_packs(int argc, char *argv[]) {
        _cleanup_(columns_done) struct columns t = {.cols = pack_cols, .ncols = ELEMENTSOF(pack_cols)};
        _cleanup_json_ json_t *reply = NULL;
        json_t *packs, *p, *totals;
        size_t i;
        int r;

        r = licensing_call("GET", "/v1/packs", NULL, &reply);
        if (r != 0)
                return r;
        if (arg_json)
                return tsctl_json_print(reply);
        packs = json_object_get(reply, "packs");
        totals = json_object_get(reply, "totals");
        if (!json_is_array(packs)) {
                log_error("the license server's answer has no 'packs' list");
                return TSCTL_EXIT_NEGATIVE;
        }
        if (json_array_size(packs) == 0) {
                printf("No key packs installed on the license server at %s.\n", licensing_socket());
                return 0;
        }
        json_array_foreach(packs, i, p) pack_add_row(&t, p);
        if (json_is_object(totals)) {
                columns_add(&t, "total");
                columns_add(&t, "-");
                columns_add(&t, "%" JSON_INTEGER_FORMAT, int_field(totals, "count"));
                columns_add(&t, "%" JSON_INTEGER_FORMAT, int_field(totals, "available"));
                columns_add(&t, "%" JSON_INTEGER_FORMAT, int_field(totals, "issued"));
                columns_add(&t, "%" JSON_INTEGER_FORMAT, int_field(totals, "revoked"));
                columns_add(&t, "%" JSON_INTEGER_FORMAT, int_field(totals, "expired"));
                columns_add(&t, "-");
                columns_add(&t, "-");
        }
        r = columns_print(&t, stdout);
        if (r < 0)
                return r;
        if (json_is_object(totals))
                printf("\nTemporary tokens live: %" JSON_INTEGER_FORMAT " (%" JSON_INTEGER_FORMAT
                       " validated by a logon).\n",
                       int_field(totals, "temporary"), int_field(totals, "temporary_validated"));
        return 0;
}

int verb_license_install_pack(int argc, char *argv[]) {
        _cleanup_(columns_done) struct columns t = {.cols = pack_cols, .ncols = ELEMENTSOF(pack_cols)};
        _cleanup_json_ json_t *in = NULL, *reply = NULL;
        int r;

        if (!arg_version || arg_count == 0) {
                log_error("license install-pack: --version and --count are required. See 'tsctl license "
                          "install-pack --help'.");
                return TSCTL_EXIT_TROUBLE;
        }
        in = json_pack("{s:s, s:s, s:I}", "id", argv[0], "product_version", arg_version, "count",
                       (json_int_t)arg_count);
        if (!in)
                return log_oom();
        r = licensing_call("POST", "/v1/packs", in, &reply);
        if (r != 0)
                return r;
        if (arg_json)
                return tsctl_json_print(reply);
        pack_add_row(&t, reply);
        return columns_print(&t, stdout);
}

/* ---- issued --------------------------------------------------------------- */

static const struct column token_cols[] = {
        {"TOKEN ID", false}, {"KIND", false},    {"STATE", false},
        {"PACK", false},     {"DEVICE", false},  {"USER", false},
        {"ISSUED", false},   {"EXPIRES", false}, {"HARDWARE ID", false},
};

static void token_add_row(struct columns *t, json_t *k) {
        _cleanup_free_ char *id = tsctl_text_field(k, "token_id"), *kind = tsctl_text_field(k, "kind"),
                            *state = tsctl_text_field(k, "state"), *pack = tsctl_text_field(k, "pack_id"),
                            *device = tsctl_text_field(k, "device_name"),
                            *user = tsctl_text_field(k, "user_name"),
                            *hwid = tsctl_text_field(k, "hardware_id");
        char issued[64], expires[64];

        tsctl_format_usec(json_object_get(k, "issued_usec"), issued, sizeof(issued));
        tsctl_format_usec(json_object_get(k, "expires_usec"), expires, sizeof(expires));
        columns_add(t, "%s", tsctl_strna(id));
        columns_add(t, "%s", tsctl_strna(kind));
        columns_add(t, "%s", tsctl_strna(state));
        columns_add(t, "%s", tsctl_strna(pack));
        columns_add(t, "%s", tsctl_strna(device));
        columns_add(t, "%s", tsctl_strna(user));
        columns_add(t, "%s", issued);
        columns_add(t, "%s", expires);
        columns_add(t, "%s", tsctl_strna(hwid));
}

/* The filter options, as the query of /v1/issued and /v1/report. */
static int filter_url(const char *path, char **ret) {
        _cleanup_free_ char *url = strdup(path);
        int r;

        if (!url)
                return log_oom();
        if ((r = query_add(&url, "state", arg_state)) < 0 ||
            (r = query_add(&url, "device", arg_device)) < 0 ||
            (r = query_add(&url, "hardware_id", arg_hardware_id)) < 0 ||
            (r = query_add(&url, "pack", arg_pack)) < 0)
                return r;
        *ret = TAKE_PTR(url);
        return 0;
}

int verb_license_issued(int argc, char *argv[]) {
        _cleanup_(columns_done) struct columns t = {.cols = token_cols, .ncols = ELEMENTSOF(token_cols)};
        _cleanup_json_ json_t *reply = NULL;
        _cleanup_free_ char *url = NULL;
        json_t *tokens, *k;
        size_t i;
        int r;

        r = filter_url("/v1/issued", &url);
        if (r < 0)
                return r;
        r = licensing_call("GET", url, NULL, &reply);
        if (r != 0)
                return r;
        if (arg_json)
                return tsctl_json_print(reply);
        tokens = json_object_get(reply, "tokens");
        if (!json_is_array(tokens)) {
                log_error("the license server's answer has no 'tokens' list");
                return TSCTL_EXIT_NEGATIVE;
        }
        if (json_array_size(tokens) == 0) {
                printf("No license records%s.\n", arg_state || arg_device || arg_hardware_id || arg_pack
                                                          ? " match"
                                                          : " on the license server");
                return 0;
        }
        json_array_foreach(tokens, i, k) token_add_row(&t, k);
        return columns_print(&t, stdout);
}

/* ---- report --------------------------------------------------------------- */

int verb_license_report(int argc, char *argv[]) {
        _cleanup_json_ json_t *reply = NULL;
        _cleanup_free_ char *url = NULL, *path = NULL;
        const char *text;
        int r;

        if (arg_csv && arg_json) {
                log_error("license report: --csv and --json exclude each other.");
                return TSCTL_EXIT_TROUBLE;
        }
        if (asprintf(&path, "/v1/report?format=%s", arg_json ? "json" : arg_csv ? "csv" : "table") < 0)
                return log_oom();
        r = filter_url(path, &url);
        if (r < 0)
                return r;
        r = licensing_call("GET", url, NULL, &reply);
        if (r != 0)
                return r;
        if (arg_json)
                return tsctl_json_print(reply);
        /* The store's own rendering (table cells escaped, CSV per RFC 4180):
         * printed as it is, so a CSV file is exactly the server's. */
        text = json_string_value(json_object_get(reply, "report"));
        if (!text) {
                log_error("the license server's answer has no 'report' text");
                return TSCTL_EXIT_NEGATIVE;
        }
        fputs(text, stdout);
        return 0;
}

/* ---- revoke --------------------------------------------------------------- */

int verb_license_revoke(int argc, char *argv[]) {
        _cleanup_json_ json_t *in = NULL, *reply = NULL;
        _cleanup_free_ char *pack = NULL, *device = NULL;
        int r;

        in = json_pack("{s:s}", "token_id", argv[0]);
        if (!in)
                return log_oom();
        r = licensing_call("POST", "/v1/revoke", in, &reply);
        if (r != 0)
                return r;
        if (arg_json)
                return tsctl_json_print(reply);
        pack = tsctl_text_field(reply, "pack");
        device = tsctl_text_field(reply, "device_name");
        printf("Revoked Device CAL %s of device %s; pack %s has %" JSON_INTEGER_FORMAT
               " of %" JSON_INTEGER_FORMAT " available.\n",
               argv[0], tsctl_strna(device), tsctl_strna(pack), int_field(reply, "available"),
               int_field(reply, "count"));
        return 0;
}

/* ---- verify (offline) ----------------------------------------------------- */

static void on_trust_skip(const char *path, int error, void *userdata) {
        log_warning_errno(error, "Skipping %s: %s", path,
                          error == -EEXIST ? "that key is trusted already" : strerror(-error));
}

static int read_token(const char *arg, char *buf, size_t size) {
        size_t n;

        if (strcmp(arg, "-") != 0) {
                if (strlen(arg) >= size)
                        return log_error_errno(-EINVAL,
                                               "The token is longer than any token (%d characters).",
                                               TSF_LIC_TEXT_MAX);
                strcpy(buf, arg);
                return 0;
        }
        n = fread(buf, 1, size - 1, stdin);
        if (ferror(stdin))
                return log_error_errno(-EIO, "Failed to read the token from standard input.");
        buf[n] = '\0';
        /* One final newline ("echo TOKEN |"), nothing else, is forgiven. */
        if (n > 0 && buf[n - 1] == '\n')
                buf[--n] = '\0';
        return 0;
}

int verb_license_verify(int argc, char *argv[]) {
        _cleanup_(tsf_lic_trust_freep) struct tsf_lic_trust *trust = NULL;
        _cleanup_(tsctl_table_freep) struct tsctl_table *t = NULL;
        uint8_t hwid[HARDWARE_ID_MAX];
        char text[TSF_LIC_TEXT_MAX + 2], hex[2 * TSF_LIC_KEY_ID_SIZE + 1], when[TSF_TIMESTAMP_MAX];
        struct tsf_lic_token tok = {}, claimed = {};
        bool authentic;
        ssize_t n;
        int r, verdict;

        if (!arg_trust || !arg_hardware_id) {
                log_error(
                        "license verify: --trust and --hardware-id are required. See 'tsctl license verify "
                        "--help'.");
                return TSCTL_EXIT_TROUBLE;
        }
        n = tsf_hex_decode(arg_hardware_id, strlen(arg_hardware_id), hwid, sizeof(hwid), NULL);
        if (n < HARDWARE_ID_MIN) {
                log_error("license verify: --hardware-id must be %d to %d bytes of hex.", HARDWARE_ID_MIN,
                          HARDWARE_ID_MAX);
                return TSCTL_EXIT_TROUBLE;
        }
        r = read_token(argv[0], text, sizeof(text));
        if (r < 0)
                return r;

        r = tsf_lic_trust_new(&trust);
        if (r < 0)
                return log_error_errno(r, "Failed to set up a trust store: %m");
        r = tsf_lic_trust_load_dir(trust, arg_trust, on_trust_skip, NULL);
        if (r < 0)
                return log_error_errno(r, "Failed to read the trusted keys in %s: %m", arg_trust);
        if (r == 0)
                log_warning("No trusted keys (*.pem) in %s: every token is unknown-issuer.", arg_trust);

        verdict = tsf_lic_token_verify(text, trust, hwid, (size_t)n, tsf_now_realtime(), &tok);
        if (verdict < 0)
                return log_error_errno(verdict, "Failed to verify the token: %m");
        authentic = verdict == TSF_LIC_VERDICT_OK || verdict == TSF_LIC_VERDICT_OTHER_DEVICE ||
                    verdict == TSF_LIC_VERDICT_EXPIRED;
        /* What an unauthentic token claims, for diagnosis only (which key
         * signed it?): never shown as the token's content. */
        if (!authentic && tsf_lic_token_parse(text, &claimed) != TSF_LIC_VERDICT_OK)
                claimed = (struct tsf_lic_token){};

        if (arg_json) {
                _cleanup_json_ json_t *o = json_pack(
                        "{s:s, s:b}", "verdict", tsf_lic_verdict_to_string(verdict), "authentic", authentic);
                json_t *v = NULL;

                if (!o)
                        return log_oom();
                if (authentic) {
                        char id[2 * TSF_LIC_TOKEN_ID_SIZE + 1];

                        tsf_hex_encode(tok.token_id, sizeof(tok.token_id), id);
                        tsf_hex_encode(tok.issuer_key_id, sizeof(tok.issuer_key_id), hex);
                        v = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s, s:s}", "kind",
                                      tsf_lic_kind_to_string(tok.kind), "token_id", id, "issuer_key_id", hex,
                                      "issued_usec", (json_int_t)tok.issued, "expires_usec",
                                      (json_int_t)tok.expires, "pack_id", tok.pack_id, "product_version",
                                      tok.product_version);
                } else if (claimed.version) {
                        tsf_hex_encode(claimed.issuer_key_id, sizeof(claimed.issuer_key_id), hex);
                        v = json_pack("{s:s}", "issuer_key_id", hex);
                }
                if (json_object_set_new(o, authentic ? "token" : "claimed", v ? v : json_null()) < 0)
                        return log_oom();
                r = tsctl_json_print(o);
                return r < 0 ? r : verdict == TSF_LIC_VERDICT_OK ? TSCTL_EXIT_OK : TSCTL_EXIT_NEGATIVE;
        }

        t = tsctl_table_new();
        if (!t)
                return log_oom();
        tsctl_table_add(t, "verdict", "%s", tsf_lic_verdict_to_string(verdict));
        if (authentic) {
                char id[2 * TSF_LIC_TOKEN_ID_SIZE + 1];

                tsf_hex_encode(tok.token_id, sizeof(tok.token_id), id);
                tsf_hex_encode(tok.issuer_key_id, sizeof(tok.issuer_key_id), hex);
                tsctl_table_add(t, "kind", "%s", tsf_lic_kind_to_string(tok.kind));
                tsctl_table_add(t, "token id", "%s", id);
                tsctl_table_add(t, "issuer key id", "%s", hex);
                tsctl_table_add(t, "issued", "%s", tsf_format_timestamp(tok.issued, when, sizeof(when)));
                tsctl_table_add(t, "expires", "%s", tsf_format_timestamp(tok.expires, when, sizeof(when)));
                tsctl_table_add(t, "pack", "%s", tok.pack_id[0] ? tok.pack_id : "-");
                tsctl_table_add(t, "product version", "%s",
                                tok.product_version[0] ? tok.product_version : "any");
        } else if (claimed.version) {
                tsf_hex_encode(claimed.issuer_key_id, sizeof(claimed.issuer_key_id), hex);
                tsctl_table_add(t, "claimed issuer", "%s (not verified)", hex);
        }
        r = tsctl_table_print(t, stdout);
        if (r < 0)
                return r;
        return verdict == TSF_LIC_VERDICT_OK ? TSCTL_EXIT_OK : TSCTL_EXIT_NEGATIVE;
}
