/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* tsctl license diagnose: what a terminal server's licensing client knows
 * (GET /v1/license/diagnose on the host role's local socket). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "tools/tsctl/tsctl.h"
#include "tsfarm/clock.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"

#define AGENT_SOCKET_DEFAULT "/run/tsfarm/agent.sock"

static const char *arg_agent_socket;

int licdiag_parse_option(int val, const char *arg) {
        if (val == LICDIAG_OPT_SOCKET) {
                arg_agent_socket = arg;
                return 0;
        }
        return -EINVAL;
}

static const struct tsctl_role host_role = {"the host agent", "host", "--agent-socket"};

static const char *str(json_t *o, const char *key) {
        return tsctl_strna(json_string_value(json_object_get(o, key)));
}

static void print_grace(json_t *g) {
        const char *state = str(g, "state");

        printf("Grace period: %s", state);
        if (strcmp(state, "active") == 0)
                printf(", until %s (started %s)", str(g, "deadline"), str(g, "started"));
        else if (strcmp(state, "expired") == 0)
                printf(", since %s", str(g, "deadline"));
        else if (strcmp(state, "ended") == 0)
                printf(" by the first Device CAL (started %s)", str(g, "started"));
        else if (strcmp(state, "not-started") == 0)
                printf(" (starts with the first client connection)");
        printf("\n");
}

static int print_text(json_t *r) {
        static const struct column cols[] = {
                {"SERVER", false},    {"ENDPOINT", false}, {"SITE", false},     {"FOUND BY", false},
                {"REACHABLE", false}, {"TRUSTED", false},  {"AVAILABLE", true}, {"PROBLEMS", false},
        };
        struct columns t = {.cols = cols, .ncols = ELEMENTSOF(cols)};
        json_t *servers = json_object_get(r, "servers"), *problems = json_object_get(r, "problems"), *s, *p;
        size_t i, j, n_problems = json_array_size(problems);
        int ret;

        print_grace(json_object_get(r, "grace"));
        printf("Trusted keys: %" JSON_INTEGER_FORMAT " in %s\n",
               json_integer_value(json_object_get(r, "trusted_keys")), str(r, "trusted_keys_directory"));
        printf("Site: %s\n\n", *str(r, "site") ? str(r, "site") : "(none)");
        json_array_foreach(servers, i, s) {
                json_t *origins = json_object_get(s, "origins"), *o;
                char found[64] = "", probs[256] = "";
                size_t k;

                json_array_foreach(origins, k, o) {
                        strncat(found, k ? "," : "", sizeof(found) - strlen(found) - 1);
                        strncat(found, tsctl_strna(json_string_value(o)), sizeof(found) - strlen(found) - 1);
                }
                json_array_foreach(json_object_get(s, "problems"), k, o) {
                        strncat(probs, k ? "," : "", sizeof(probs) - strlen(probs) - 1);
                        strncat(probs, str(o, "code"), sizeof(probs) - strlen(probs) - 1);
                }
                columns_add(&t, "%s", *str(s, "name") ? str(s, "name") : "-");
                columns_add(&t, "%s", str(s, "endpoint"));
                columns_add(&t, "%s", *str(s, "site") ? str(s, "site") : "-");
                columns_add(&t, "%s", found);
                columns_add(&t, "%s", json_is_true(json_object_get(s, "reachable")) ? "yes" : "no");
                columns_add(&t, "%s", json_is_true(json_object_get(s, "trusted")) ? "yes" : "no");
                columns_add(&t, "%" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT,
                            json_integer_value(json_object_get(s, "available")),
                            json_integer_value(json_object_get(s, "installed")));
                columns_add(&t, "%s", *probs ? probs : "-");
        }
        if (json_array_size(servers) > 0) {
                ret = columns_print(&t, stdout);
                columns_done(&t);
                if (ret < 0)
                        return ret;
        } else {
                columns_done(&t);
                printf("No license server found.\n");
        }
        /* Every problem with its reason: the codes above say which. */
        json_array_foreach(servers, i, s) n_problems += json_array_size(json_object_get(s, "problems"));
        if (n_problems > 0)
                printf("\nProblems:\n");
        json_array_foreach(servers, i, s) json_array_foreach(json_object_get(s, "problems"), j, p)
                printf("  %s %s: %s\n", *str(s, "name") ? str(s, "name") : str(s, "endpoint"),
                       str(p, "code"), str(p, "reason"));
        json_array_foreach(problems, i, p) printf("  %s: %s\n", str(p, "code"), str(p, "reason"));
        return 0;
}

int verb_license_diagnose(int argc, char *argv[]) {
        _cleanup_(json_decrefp) json_t *reply = NULL;
        const char *socket =
                tsctl_socket_path(arg_agent_socket, "TSFARM_AGENT_SOCKET", AGENT_SOCKET_DEFAULT);
        int r;

        r = tsctl_role_call(&host_role, socket, "GET", "/v1/license/diagnose", NULL, &reply);
        if (r != 0)
                return r;
        r = arg_json ? tsctl_json_print(reply) : print_text(reply);
        if (r < 0)
                return r;
        /* 1 when this host cannot license a new device right now. */
        return json_array_size(json_object_get(reply, "problems")) > 0 ? TSCTL_EXIT_NEGATIVE : TSCTL_EXIT_OK;
}
