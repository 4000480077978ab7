/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * tsctl pki init|issue: a farm CA and node certificates for small farms.
 * The certificate work is lib/pki.c's (the unit tests use it too); this
 * file parses options and prints what was written.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "tsfarm/log.h"
#include "tsfarm/macro.h"
#include "tsfarm/pki.h"
#include "tsctl.h"

#define PKI_LIST_MAX 32

static const char *arg_dir = NULL;
static const char *arg_name = NULL;
static unsigned arg_days = 0;
static bool arg_force = false;
/* Point into argv, which outlives the verb. */
static char *arg_ips[PKI_LIST_MAX], *arg_dns[PKI_LIST_MAX];
static size_t arg_n_ips = 0, arg_n_dns = 0;

int pki_parse_option(int val, const char *arg) {
        char *end;
        unsigned long v;

        switch (val) {
        case PKI_OPT_DIR:
                if (!*arg)
                        return log_error_errno(-EINVAL, "pki: --dir needs a directory.");
                arg_dir = arg;
                return 0;
        case PKI_OPT_NAME:
                if (!tsf_pki_node_name_valid(arg))
                        return log_error_errno(-EINVAL,
                                               "pki: --name '%s' is not a valid farm name (1-63 of A-Z a-z "
                                               "0-9 . _ -, a letter or digit first).",
                                               arg);
                arg_name = arg;
                return 0;
        case PKI_OPT_DAYS:
                errno = 0;
                v = strtoul(arg, &end, 10);
                if (errno != 0 || end == arg || *end || arg[0] == '-' || v == 0 || v > 36500)
                        return log_error_errno(-EINVAL, "pki: --days '%s' is not a number from 1 to 36500.",
                                               arg);
                arg_days = (unsigned)v;
                return 0;
        case PKI_OPT_FORCE:
                arg_force = true;
                return 0;
        case PKI_OPT_IP:
        case PKI_OPT_DNS: {
                char **list = val == PKI_OPT_IP ? arg_ips : arg_dns;
                size_t *n = val == PKI_OPT_IP ? &arg_n_ips : &arg_n_dns;

                if (*n >= PKI_LIST_MAX)
                        return log_error_errno(-E2BIG, "pki: at most %d --%s options.", PKI_LIST_MAX,
                                               val == PKI_OPT_IP ? "ip" : "dns");
                list[(*n)++] = (char *)arg;
                return 0;
        }
        }
        return log_error_errno(-EINVAL, "pki: unhandled option %d.", val);
}

static int need_dir(const char *verb) {
        struct stat st;

        if (!arg_dir)
                return log_error_errno(-EINVAL, "pki %s: --dir is required. See 'tsctl pki %s --help'.",
                                       verb, verb);
        if (stat(arg_dir, &st) < 0)
                return log_error_errno(negative_errno(), "pki %s: %s: %m", verb, arg_dir);
        if (!S_ISDIR(st.st_mode))
                return log_error_errno(-ENOTDIR, "pki %s: %s is not a directory.", verb, arg_dir);
        return 0;
}

static int print_written(const char *name) {
        if (arg_json) {
                json_t *v = json_pack("{s:s, s:s+, s:s+}", "dir", arg_dir, "certificate", name, ".crt",
                                      "key", name, ".key");
                int r;

                if (!v)
                        return log_oom();
                r = tsctl_json_print(v);
                json_decref(v);
                return r;
        }
        printf("%s/%s.crt\n%s/%s.key\n", arg_dir, name, arg_dir, name);
        return 0;
}

int verb_pki_init(int argc, char *argv[]) {
        char err[TSF_PKI_ERROR_MAX];
        int r;

        r = need_dir("init");
        if (r < 0)
                return r;
        r = tsf_pki_init_ca(arg_dir, arg_name, arg_days, arg_force, err, sizeof(err));
        if (r < 0)
                return log_error_errno(r, "pki init: %s", err);
        return print_written("ca");
}

int verb_pki_issue(int argc, char *argv[]) {
        char err[TSF_PKI_ERROR_MAX];
        int r;

        r = need_dir("issue");
        if (r < 0)
                return r;
        r = tsf_pki_issue(arg_dir, argv[0], arg_ips, arg_n_ips, arg_dns, arg_n_dns, arg_days, arg_force, err,
                          sizeof(err));
        if (r < 0)
                return log_error_errno(r, "pki issue: %s", err);
        return print_written(argv[0]);
}
