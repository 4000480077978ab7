/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * tsctl nodes|sessions|drain|undrain: the farm as the directory role sees
 * it, over the directory's local UNIX socket (docs/directory.md, "The
 * API"). The UNIX socket, not mutual TLS: drain is refused over TLS, and an
 * operator on the directory's machine has no node certificate anyway.
 *
 * tsctl adds nothing to the answers: --json prints the directory's own
 * objects (filtered for `sessions USER`), tables show the same fields.
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
#include "tsfarm/log.h"
#include "tsfarm/macro.h"
#include "tsctl.h"

#define DIRECTORY_SOCKET_DEFAULT "/run/tsfarm/directory.sock"

static const char *arg_directory_socket = NULL;
static bool arg_until_restart = false;

int directory_parse_option(int val, const char *arg) {
        switch (val) {
        case DIRECTORY_OPT_SOCKET:
                if (!arg || !*arg) {
                        log_error("--directory-socket needs a path.");
                        return -EINVAL;
                }
                arg_directory_socket = arg;
                return 0;
        case DIRECTORY_OPT_UNTIL_RESTART:
                arg_until_restart = true;
                return 0;
        }
        return -EINVAL;
}

static const struct tsctl_role role = {"the directory", "directory", "--directory-socket"};

static const char *directory_socket(void) {
        return tsctl_socket_path(arg_directory_socket, "TSFARM_DIRECTORY_SOCKET", DIRECTORY_SOCKET_DEFAULT);
}

static int directory_call(const char *method, const char *path, json_t *in, json_t **ret_reply) {
        return tsctl_role_call(&role, directory_socket(), method, path, in, ret_reply);
}

static int print_json_list(const char *name, json_t *array) {
        _cleanup_json_ json_t *o = json_object();

        if (!o || json_object_set(o, name, array) < 0)
                return log_oom();
        return tsctl_json_print(o);
}

/* ---- nodes ------------------------------------------------------------- */

static const struct column node_cols[] = {
        {"NODE", false},    {"STATE", false}, {"DRAIN", false},     {"WEIGHT", true},
        {"SESSIONS", true}, {"LIMIT", true},  {"ADDRESSES", false}, {"LAST HEARTBEAT", false},
};

static void node_add_row(struct columns *t, json_t *n) {
        _cleanup_free_ char *name = tsctl_text_field(n, "name"), *drain = tsctl_text_field(n, "drain");
        char addresses[512] = "", heartbeat[64];
        size_t used = 0;
        json_int_t limit = json_integer_value(json_object_get(n, "session_limit"));
        json_t *a;
        size_t i;

        json_array_foreach(json_object_get(n, "addresses"), i, a) {
                _cleanup_free_ char *s = NULL;
                const char *v = json_string_value(a);

                if (!v)
                        continue;
                s = tsctl_escape(v, strlen(v));
                if (s && used < sizeof(addresses))
                        used += (size_t)snprintf(addresses + used, sizeof(addresses) - used, "%s%s",
                                                 used ? "," : "", s);
        }
        tsctl_format_usec(json_object_get(n, "last_heartbeat_usec"), heartbeat, sizeof(heartbeat));

        columns_add(t, "%s", tsctl_strna(name));
        columns_add(t, "%s", json_is_true(json_object_get(n, "up")) ? "up" : "down");
        columns_add(t, "%s", tsctl_strna(drain));
        columns_add(t, "%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(n, "weight")));
        columns_add(t, "%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(n, "sessions")));
        /* 0 is "no limit" in the directory. */
        if (limit > 0)
                columns_add(t, "%" JSON_INTEGER_FORMAT, limit);
        else
                columns_add(t, "-");
        columns_add(t, "%s", addresses[0] ? addresses : "-");
        columns_add(t, "%s", heartbeat);
}

static int print_nodes(json_t *nodes) {
        _cleanup_(columns_done) struct columns t = {.cols = node_cols, .ncols = ELEMENTSOF(node_cols)};
        json_t *n;
        size_t i;

        if (arg_json)
                return print_json_list("nodes", nodes);
        if (json_array_size(nodes) == 0) {
                printf("No nodes registered with the directory at %s.\n", directory_socket());
                return 0;
        }
        json_array_foreach(nodes, i, n) node_add_row(&t, n);
        return columns_print(&t, stdout);
}

int verb_nodes(int argc, char *argv[]) {
        _cleanup_json_ json_t *reply = NULL;
        json_t *nodes;
        int r;

        r = directory_call("GET", "/v1/nodes", NULL, &reply);
        if (r != 0)
                return r;
        nodes = json_object_get(reply, "nodes");
        if (!json_is_array(nodes)) {
                log_error("the directory's answer has no 'nodes' list");
                return TSCTL_EXIT_NEGATIVE;
        }
        return print_nodes(nodes);
}

/* ---- sessions ---------------------------------------------------------- */

static const struct column session_cols[] = {
        {"USER", false},   {"NODE", false},   {"SESSION", true},     {"STATE", false},
        {"DEVICE", false}, {"CLIENT", false}, {"LOGON TIME", false}, {"STATE CHANGED", false},
};

static void session_add_row(struct columns *t, json_t *s) {
        _cleanup_free_ char *user = tsctl_text_field(s, "user"), *node = tsctl_text_field(s, "node"),
                            *state = tsctl_text_field(s, "state"), *device = tsctl_text_field(s, "device"),
                            *client = tsctl_text_field(s, "client_address");
        char logon[64], changed[64];

        tsctl_format_usec(json_object_get(s, "logon_time_usec"), logon, sizeof(logon));
        tsctl_format_usec(json_object_get(s, "state_time_usec"), changed, sizeof(changed));
        columns_add(t, "%s", tsctl_strna(user));
        columns_add(t, "%s", tsctl_strna(node));
        columns_add(t, "%" JSON_INTEGER_FORMAT, json_integer_value(json_object_get(s, "session_id")));
        columns_add(t, "%s", tsctl_strna(state));
        columns_add(t, "%s", tsctl_strna(device));
        columns_add(t, "%s", tsctl_strna(client));
        columns_add(t, "%s", logon);
        columns_add(t, "%s", changed);
}

int verb_sessions(int argc, char *argv[]) {
        _cleanup_(columns_done) struct columns t = {.cols = session_cols, .ncols = ELEMENTSOF(session_cols)};
        _cleanup_json_ json_t *reply = NULL, *picked = json_array();
        const char *user = argc > 0 ? argv[0] : NULL;
        json_t *sessions, *s;
        size_t i;
        int r;

        if (!picked)
                return log_oom();
        /* The snapshot is the one answer that lists sessions; the nodes in
         * it are ignored here. */
        r = directory_call("GET", "/v1/snapshot", NULL, &reply);
        if (r != 0)
                return r;
        sessions = json_object_get(reply, "sessions");
        if (!json_is_array(sessions)) {
                log_error("the directory's answer has no 'sessions' list");
                return TSCTL_EXIT_NEGATIVE;
        }
        json_array_foreach(sessions, i, s) {
                const char *u = json_string_value(json_object_get(s, "user"));

                /* Case-insensitive, as Windows compares user names. */
                if (user && (!u || strcasecmp(u, user) != 0))
                        continue;
                if (json_array_append(picked, s) < 0)
                        return log_oom();
                if (!arg_json)
                        session_add_row(&t, s);
        }
        if (arg_json)
                return print_json_list("sessions", picked);
        if (json_array_size(picked) == 0) {
                if (user)
                        printf("No sessions of %s in the directory.\n", user);
                else
                        printf("No sessions in the directory.\n");
                return 0;
        }
        return columns_print(&t, stdout);
}

/* ---- drain, undrain ---------------------------------------------------- */

/* Sets the node's drain state, then shows its row as the directory now
 * has it: read back rather than assumed, so what is printed is what
 * placement will use. */
static int set_drain(const char *node, const char *state) {
        _cleanup_json_ json_t *in = NULL, *reply = NULL, *list = json_array();
        json_t *n;
        size_t i;
        int r;

        in = json_pack("{s:s, s:s}", "node", node, "state", state);
        if (!in || !list)
                return log_oom();
        r = directory_call("POST", "/v1/nodes/drain", in, &reply);
        if (r != 0)
                return r;
        json_decref(TAKE_PTR(reply));
        r = directory_call("GET", "/v1/nodes", NULL, &reply);
        if (r != 0)
                return r;
        json_array_foreach(json_object_get(reply, "nodes"), i, n) {
                const char *name = json_string_value(json_object_get(n, "name"));

                if (name && strcmp(name, node) == 0 && json_array_append(list, n) < 0)
                        return log_oom();
        }
        return print_nodes(list);
}

int verb_drain(int argc, char *argv[]) {
        return set_drain(argv[0], arg_until_restart ? "drain-until-restart" : "disable");
}

int verb_undrain(int argc, char *argv[]) {
        return set_drain(argv[0], "enable");
}
