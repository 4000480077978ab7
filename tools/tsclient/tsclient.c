/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * tsclient: the reference client of the tsfarm protocol (docs/tsclient.md,
 * docs/protocol.md) and its load generator.
 *
 *   tsclient [connect] --server HOST[:PORT] --ca FILE [--user USER] ...
 *   tsclient load --server HOST[:PORT] --ca FILE --devices N --users M ...
 *   tsclient device [--store DIR]
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "tsfarm/cleanup.h"
#include "tsfarm/hex.h"
#include "tsfarm/lictoken.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"
#include "load.h"
#include "tsclient.h"

static const char *arg_server;
static const char *arg_ca;
static const char *arg_tls_name;
static const char *arg_user;
static char *arg_password; /* owned; wiped at exit */
static const char *arg_password_file;
static const char *arg_store;
static const char *arg_machine_id_file;
static const char *arg_device_name;
static const char *arg_script;
static const char *arg_term;
static bool arg_no_cookie, arg_direct, arg_quiet, arg_json;
static unsigned arg_max_redirects = TSC_MAX_REDIRECTS;
static enum tsc_end arg_end = TSC_END_DISCONNECT;
static usec_t arg_expect_timeout, arg_timeout;
static uint16_t arg_rows, arg_cols;
/* load */
static unsigned arg_devices = 10, arg_users = 10, arg_concurrency;
static double arg_rate = 10;
static usec_t arg_duration = 10 * USEC_PER_SEC, arg_hold;
static const char *arg_mix = "connect=60,disconnect=15,reconnect=15,logoff=10";
static const char *arg_user_prefix = "user";
static const char *arg_device_prefix = "device";

enum {
        OPT_SERVER = 0x100,
        OPT_CA,
        OPT_TLS_NAME,
        OPT_USER,
        OPT_PASSWORD,
        OPT_PASSWORD_FILE,
        OPT_STORE,
        OPT_MACHINE_ID_FILE,
        OPT_DEVICE_NAME,
        OPT_NO_COOKIE,
        OPT_DIRECT,
        OPT_MAX_REDIRECTS,
        OPT_SCRIPT,
        OPT_DISCONNECT,
        OPT_DROP,
        OPT_LOGOFF,
        OPT_QUIET,
        OPT_JSON,
        OPT_EXPECT_TIMEOUT,
        OPT_TIMEOUT,
        OPT_TERM,
        OPT_SIZE,
        OPT_DEVICES,
        OPT_USERS,
        OPT_DURATION,
        OPT_RATE,
        OPT_MIX,
        OPT_CONCURRENCY,
        OPT_HOLD,
        OPT_USER_PREFIX,
        OPT_DEVICE_PREFIX,
        OPT_VERSION,
};

static const struct option options[] = {
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},
        {"server", required_argument, NULL, OPT_SERVER},
        {"ca", required_argument, NULL, OPT_CA},
        {"tls-name", required_argument, NULL, OPT_TLS_NAME},
        {"user", required_argument, NULL, OPT_USER},
        {"password", required_argument, NULL, OPT_PASSWORD},
        {"password-file", required_argument, NULL, OPT_PASSWORD_FILE},
        {"store", required_argument, NULL, OPT_STORE},
        {"machine-id-file", required_argument, NULL, OPT_MACHINE_ID_FILE},
        {"device-name", required_argument, NULL, OPT_DEVICE_NAME},
        {"no-cookie", no_argument, NULL, OPT_NO_COOKIE},
        {"direct", no_argument, NULL, OPT_DIRECT},
        {"max-redirects", required_argument, NULL, OPT_MAX_REDIRECTS},
        {"script", required_argument, NULL, OPT_SCRIPT},
        {"disconnect", no_argument, NULL, OPT_DISCONNECT},
        {"drop", no_argument, NULL, OPT_DROP},
        {"logoff", no_argument, NULL, OPT_LOGOFF},
        {"quiet", no_argument, NULL, OPT_QUIET},
        {"json", no_argument, NULL, OPT_JSON},
        {"expect-timeout", required_argument, NULL, OPT_EXPECT_TIMEOUT},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"term", required_argument, NULL, OPT_TERM},
        {"size", required_argument, NULL, OPT_SIZE},
        {"devices", required_argument, NULL, OPT_DEVICES},
        {"users", required_argument, NULL, OPT_USERS},
        {"duration", required_argument, NULL, OPT_DURATION},
        {"rate", required_argument, NULL, OPT_RATE},
        {"mix", required_argument, NULL, OPT_MIX},
        {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
        {"hold", required_argument, NULL, OPT_HOLD},
        {"user-prefix", required_argument, NULL, OPT_USER_PREFIX},
        {"device-prefix", required_argument, NULL, OPT_DEVICE_PREFIX},
        {},
};

static void help(void) {
        printf("Usage:\n"
               "  tsclient [connect] --server HOST[:PORT] --ca FILE [--user USER] [OPTIONS]\n"
               "  tsclient load --server HOST[:PORT] --ca FILE --devices N --users M [OPTIONS]\n"
               "  tsclient device [--store DIR] [--machine-id-file FILE] [--json]\n"
               "\n"
               "The client of the tsfarm protocol (docs/protocol.md): X.224 with the cookie,\n"
               "TLS verified against the farm CA, the license exchange against the device\n"
               "store, logon, redirects, then the terminal (interactive; \"~.\" after a\n"
               "newline disconnects), a --script, or stdin's bytes.\n"
               "\n"
               "Connection:\n"
               "  --server HOST[:PORT]      The farm's address (port 3389 by default)\n"
               "  --ca FILE                 CA certificates (PEM) the server must chain to\n"
               "  --tls-name NAME|any       Name the certificate must carry (default: HOST;\n"
               "                            any: any certificate the CA signed)\n"
               "  --user USER               User to log on as (default: $USER); sent as the\n"
               "                            cookie \"mstshash=USER\"\n"
               "  --password PW | --password-file FILE   (default: prompt on the terminal)\n"
               "  --no-cookie               Send no cookie in the Connection Request\n"
               "  --direct                  Follow a redirect to its target, not the farm address\n"
               "  --max-redirects N         Redirects followed in a row (default 3)\n"
               "  --timeout DURATION        Cap every protocol deadline (default: the protocol's)\n"
               "Device:\n"
               "  --store DIR               Device store (default ~/.local/share/tsfarm/device)\n"
               "  --machine-id-file FILE    Machine id the hardware id derives from\n"
               "                            (default /etc/machine-id)\n"
               "  --device-name NAME        Device name for license reports (default: host name)\n"
               "Session:\n"
               "  --script FILE|-           Run a script of input and expectations\n"
               "  --expect-timeout DURATION Default deadline of an \"expect\" (10s)\n"
               "  --disconnect | --drop | --logoff   How to end when the input or script ends:\n"
               "                            DISCONNECT (default), close without a word, LOGOFF\n"
               "  --term TERM, --size ROWSxCOLS      Terminal type and initial size\n"
               "  --quiet                   Do not copy the terminal's output to stdout\n"
               "  --json                    Print a one-line JSON summary at the end\n"
               "Load generator:\n"
               "  --devices N --users M     Simulated devices (a store each under --store,\n"
               "                            default ./tsclient-load) and users USER_PREFIX1..M\n"
               "  --duration DURATION       How long to start connections (default 10s)\n"
               "  --rate R                  Connections started per second (default 10; 0: max)\n"
               "  --concurrency C           Connections at once (default: min(devices, 64))\n"
               "  --mix connect=W,disconnect=W,reconnect=W,logoff=W\n"
               "  --hold DURATION           Time attached before ending each session (default 0)\n"
               "  --user-prefix P, --device-prefix P\n"
               "\n"
               "Exit status: 0 ok, 1 usage or local error, 2 connection or protocol failure,\n"
               "3 license refused, 4 wrong password, 5 logon refused, 6 redirect loop,\n"
               "7 script expectation failed, 8 session lost after logon. load: 0 all\n"
               "succeeded, 1 some failed or a local error.\n"
               "\n"
               "Examples:\n"
               "  tsclient --server farm.example:3389 --ca /etc/tsfarm/pki/ca.crt --user alice\n"
               "  tsclient --server 10.0.0.5 --ca ca.crt --user bob --password-file pw --script t.txt "
               "--json\n"
               "  tsclient --server farm --ca ca.crt --user bob --password-file pw --disconnect </dev/null\n"
               "  tsclient load --server farm --ca ca.crt --password-file pw --devices 200 --users 50 \\\n"
               "          --duration 60s --rate 20 --mix connect=50,disconnect=20,reconnect=20,logoff=10\n"
               "  tsclient device --store ~/.local/share/tsfarm/device\n");
}

static int parse_unsigned(const char *s, unsigned min, unsigned max, unsigned *ret) {
        char *end;
        unsigned long v;

        if (!s || *s < '0' || *s > '9')
                return -EINVAL;
        errno = 0;
        v = strtoul(s, &end, 10);
        if (errno || *end || v < min || v > max)
                return -EINVAL;
        *ret = (unsigned)v;
        return 0;
}

static int parse_duration_arg(const char *name, const char *s, usec_t *ret) {
        if (tsf_parse_duration(s, ret) < 0)
                return log_error_errno(-EINVAL, "Invalid duration for --%s: %s", name, s);
        return 0;
}

static int read_password_file(const char *path) {
        _cleanup_fclose_ FILE *f = fopen(path, "re");
        char buf[TSF_PROTO_PASSWORD_MAX + 2];
        size_t n;

        if (!f)
                return log_error_errno(negative_errno(), "Failed to open %s: %m", path);
        n = fread(buf, 1, sizeof(buf) - 1, f);
        buf[n] = '\0';
        buf[strcspn(buf, "\n")] = '\0';
        if (strlen(buf) > TSF_PROTO_PASSWORD_MAX) {
                OPENSSL_cleanse(buf, sizeof(buf));
                return log_error_errno(-EINVAL, "The password in %s is too long.", path);
        }
        free(arg_password);
        arg_password = strdup(buf);
        OPENSSL_cleanse(buf, sizeof(buf));
        return arg_password ? 0 : log_oom();
}

static int prompt_password(const char *user) {
        _cleanup_fclose_ FILE *tty = fopen("/dev/tty", "r+e");
        struct termios old, t;
        char buf[TSF_PROTO_PASSWORD_MAX + 2];
        bool echo_off;

        if (!tty)
                return log_error_errno(-ENOTTY, "No password given (--password, --password-file) and no "
                                                "terminal to ask for one.");
        fprintf(tty, "Password for %s: ", user);
        fflush(tty);
        echo_off = tcgetattr(fileno(tty), &old) == 0;
        if (echo_off) {
                t = old;
                t.c_lflag &= ~(tcflag_t)ECHO;
                (void)tcsetattr(fileno(tty), TCSAFLUSH, &t);
        }
        if (!fgets(buf, sizeof(buf), tty))
                buf[0] = '\0';
        if (echo_off)
                (void)tcsetattr(fileno(tty), TCSAFLUSH, &old);
        fputc('\n', tty);
        buf[strcspn(buf, "\n")] = '\0';
        arg_password = strdup(buf);
        OPENSSL_cleanse(buf, sizeof(buf));
        return arg_password ? 0 : log_oom();
}

static void wipe_password(void) {
        if (arg_password) {
                OPENSSL_cleanse(arg_password, strlen(arg_password));
                free(arg_password);
                arg_password = NULL;
        }
}

static int parse_argv(int argc, char *argv[]) {
        int c, r;

        while ((c = getopt_long(argc, argv, "+h", options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case OPT_VERSION:
                        printf("tsclient %s\n", TSFARM_VERSION);
                        return 0;
                case OPT_SERVER:
                        arg_server = optarg;
                        break;
                case OPT_CA:
                        arg_ca = optarg;
                        break;
                case OPT_TLS_NAME:
                        arg_tls_name = optarg;
                        break;
                case OPT_USER:
                        arg_user = optarg;
                        break;
                case OPT_PASSWORD:
                        free(arg_password);
                        arg_password = strdup(optarg);
                        if (!arg_password)
                                return log_oom();
                        OPENSSL_cleanse(optarg, strlen(optarg)); /* out of ps(1) */
                        break;
                case OPT_PASSWORD_FILE:
                        arg_password_file = optarg;
                        break;
                case OPT_STORE:
                        arg_store = optarg;
                        break;
                case OPT_MACHINE_ID_FILE:
                        arg_machine_id_file = optarg;
                        break;
                case OPT_DEVICE_NAME:
                        arg_device_name = optarg;
                        break;
                case OPT_NO_COOKIE:
                        arg_no_cookie = true;
                        break;
                case OPT_DIRECT:
                        arg_direct = true;
                        break;
                case OPT_MAX_REDIRECTS:
                        if (parse_unsigned(optarg, 0, 16, &arg_max_redirects) < 0)
                                return log_error_errno(-EINVAL, "Invalid --max-redirects: %s", optarg);
                        break;
                case OPT_SCRIPT:
                        arg_script = optarg;
                        break;
                case OPT_DISCONNECT:
                        arg_end = TSC_END_DISCONNECT;
                        break;
                case OPT_DROP:
                        arg_end = TSC_END_DROP;
                        break;
                case OPT_LOGOFF:
                        arg_end = TSC_END_LOGOFF;
                        break;
                case OPT_QUIET:
                        arg_quiet = true;
                        break;
                case OPT_JSON:
                        arg_json = true;
                        break;
                case OPT_EXPECT_TIMEOUT:
                        r = parse_duration_arg("expect-timeout", optarg, &arg_expect_timeout);
                        if (r < 0)
                                return r;
                        break;
                case OPT_TIMEOUT:
                        r = parse_duration_arg("timeout", optarg, &arg_timeout);
                        if (r < 0)
                                return r;
                        break;
                case OPT_HOLD:
                        r = parse_duration_arg("hold", optarg, &arg_hold);
                        if (r < 0)
                                return r;
                        break;
                case OPT_DURATION:
                        r = parse_duration_arg("duration", optarg, &arg_duration);
                        if (r < 0)
                                return r;
                        break;
                case OPT_TERM:
                        arg_term = optarg;
                        break;
                case OPT_SIZE: {
                        unsigned rows, cols;
                        char *x = strchr(optarg, 'x');

                        if (!x)
                                return log_error_errno(-EINVAL, "Invalid --size, expected ROWSxCOLS: %s",
                                                       optarg);
                        *x = '\0';
                        if (parse_unsigned(optarg, 1, TSF_PROTO_DIMENSION_MAX, &rows) < 0 ||
                            parse_unsigned(x + 1, 1, TSF_PROTO_DIMENSION_MAX, &cols) < 0)
                                return log_error_errno(-EINVAL,
                                                       "Invalid --size: rows and columns are 1..%d.",
                                                       TSF_PROTO_DIMENSION_MAX);
                        arg_rows = (uint16_t)rows;
                        arg_cols = (uint16_t)cols;
                        break;
                }
                case OPT_DEVICES:
                        if (parse_unsigned(optarg, 1, 1000000, &arg_devices) < 0)
                                return log_error_errno(-EINVAL, "Invalid --devices: %s", optarg);
                        break;
                case OPT_USERS:
                        if (parse_unsigned(optarg, 1, 1000000, &arg_users) < 0)
                                return log_error_errno(-EINVAL, "Invalid --users: %s", optarg);
                        break;
                case OPT_CONCURRENCY:
                        if (parse_unsigned(optarg, 1, 4096, &arg_concurrency) < 0)
                                return log_error_errno(-EINVAL, "Invalid --concurrency (1..4096): %s",
                                                       optarg);
                        break;
                case OPT_RATE: {
                        char *end;

                        errno = 0;
                        arg_rate = strtod(optarg, &end);
                        if (errno || *end || !(arg_rate >= 0) || arg_rate > 1e6)
                                return log_error_errno(-EINVAL, "Invalid --rate: %s", optarg);
                        break;
                }
                case OPT_MIX:
                        arg_mix = optarg;
                        break;
                case OPT_USER_PREFIX:
                        arg_user_prefix = optarg;
                        break;
                case OPT_DEVICE_PREFIX:
                        arg_device_prefix = optarg;
                        break;
                default:
                        return -EINVAL;
                }
        }
        return 1;
}

static int default_store(char *buf, size_t size) {
        const char *data = getenv("XDG_DATA_HOME"), *home = getenv("HOME");

        if (data && *data == '/')
                return snprintf(buf, size, "%s/tsfarm/device", data) < (int)size ? 0 : -ENAMETOOLONG;
        if (!home || *home != '/')
                return log_error_errno(-ENOENT, "No $HOME: give the device store with --store.");
        return snprintf(buf, size, "%s/.local/share/tsfarm/device", home) < (int)size ? 0 : -ENAMETOOLONG;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(DIR *, closedir);

static int open_store(const char *dir, struct tsc_store **ret) {
        uint8_t id[TSC_MACHINE_ID_SIZE];
        int r;

        r = tsc_machine_id_read(arg_machine_id_file, id);
        if (r < 0)
                return log_error_errno(r, "No usable machine id in %s: %s",
                                       arg_machine_id_file ?: TSC_MACHINE_ID_DEFAULT,
                                       r == -EBADMSG ? "malformed" : strerror(-r));
        r = tsc_store_open(dir, arg_machine_id_file, true, ret);
        if (r == -EBADMSG)
                return log_error_errno(r, "The device store %s is malformed (its salt), refusing it.", dir);
        if (r < 0)
                return log_error_errno(r, "Failed to open the device store %s: %m", dir);
        return 0;
}

/* Common checks and the TLS context for connect and load. */
static int prepare(struct tsc_params *p, char *host, size_t host_size, char *port, size_t port_size,
                   struct tsc_tls **tls) {
        char err[TSC_ERR_MAX] = "";
        int r;

        if (!arg_server)
                return log_error_errno(-EINVAL, "--server is required.");
        if (!arg_ca)
                return log_error_errno(-EINVAL,
                                       "--ca is required: the server's certificate is always verified.");
        if (tsc_split_host_port(arg_server, host, host_size, port, port_size) < 0) {
                if (strlen(arg_server) >= host_size || strchr(arg_server, ':'))
                        return log_error_errno(-EINVAL, "Invalid --server, expected HOST[:PORT]: %s",
                                               arg_server);
                snprintf(host, host_size, "%s", arg_server);
                snprintf(port, port_size, "3389");
        }
        r = tsc_tls_new(arg_ca, tls, err, sizeof(err));
        if (r < 0)
                return log_error_errno(r, "%s", err);
        if (arg_password_file) {
                r = read_password_file(arg_password_file);
                if (r < 0)
                        return r;
        }
        *p = (struct tsc_params){
                .tls = *tls,
                .host = host,
                .port = port,
                .tls_name = arg_tls_name,
                .password = arg_password,
                .no_cookie = arg_no_cookie,
                .direct = arg_direct,
                .max_redirects = arg_max_redirects,
                .timeout = arg_timeout,
                .rows = arg_rows,
                .cols = arg_cols,
                .term = arg_term,
        };
        return 0;
}

static bool term_valid(const char *t) {
        if (!t || strlen(t) > TSF_PROTO_TERM_MAX)
                return false;
        for (; *t; t++)
                if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._+-", *t))
                        return false;
        return true;
}

static int verb_connect(void) {
        _cleanup_(tsc_tls_freep) struct tsc_tls *tls = NULL;
        _cleanup_(tsc_store_freep) struct tsc_store *store = NULL;
        char host[TSF_PROTO_TARGET_MAX + 1], port[8], dir[PATH_MAX], hostname[HOST_NAME_MAX + 1];
        struct tsc_session_opts so = {.script = arg_script,
                                      .end = arg_end,
                                      .quiet = arg_quiet,
                                      .expect_timeout = arg_expect_timeout};
        struct tsc_result res = {};
        struct tsc_conn *conn = NULL;
        struct tsc_params p;
        struct winsize ws;
        enum tsc_outcome o;
        int r;

        r = prepare(&p, host, sizeof(host), port, sizeof(port), &tls);
        if (r < 0)
                return TSC_LOCAL;
        p.user = arg_user ?: getenv("USER");
        if (!p.user || !*p.user)
                return log_error_errno(-EINVAL, "No user: give one with --user."), TSC_LOCAL;
        if (!arg_store && default_store(dir, sizeof(dir)) < 0)
                return TSC_LOCAL;
        if (open_store(arg_store ?: dir, &store) < 0)
                return TSC_LOCAL;
        p.store = store;
        if (!arg_device_name && gethostname(hostname, sizeof(hostname)) < 0)
                snprintf(hostname, sizeof(hostname), "tsclient");
        hostname[sizeof(hostname) - 1] = '\0';
        p.device_name = arg_device_name ?: hostname;
        if (!p.term && term_valid(getenv("TERM")))
                p.term = getenv("TERM");
        if (!arg_rows && isatty(STDIN_FILENO) && ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0 &&
            ws.ws_row > 0 && ws.ws_col > 0 && ws.ws_row <= TSF_PROTO_DIMENSION_MAX &&
            ws.ws_col <= TSF_PROTO_DIMENSION_MAX) {
                p.rows = ws.ws_row;
                p.cols = ws.ws_col;
        }
        if (!arg_password) {
                r = prompt_password(p.user);
                if (r < 0)
                        return TSC_LOCAL;
                p.password = arg_password;
        }

        o = tsc_logon(&p, &res, &conn);
        wipe_password();
        if (o == TSC_OK) {
                log_debug("Logged on to %s (%s) as %s, session %u%s.", res.server, res.address, p.user,
                          res.session_id, res.reattached ? ", reattached" : "");
                o = tsc_session_run(conn, &so, &res);
        }
        if (o != TSC_OK && res.error_text[0])
                log_error("%s", res.error_text);
        if (res.token_ignored)
                log_warning("The stored token for farm %s was malformed and was not presented.",
                            res.farm_id);
        if (arg_json) {
                _cleanup_free_ char *json = tsc_result_to_json(&res);

                printf("%s\n", json ?: "{}");
                fflush(stdout);
        }
        return o;
}

static int verb_load(void) {
        _cleanup_(tsc_tls_freep) struct tsc_tls *tls = NULL;
        char host[TSF_PROTO_TARGET_MAX + 1], port[8];
        struct tsc_load_opts lo = {};
        int r;

        r = prepare(&lo.params, host, sizeof(host), port, sizeof(port), &tls);
        if (r < 0)
                return TSC_LOCAL;
        if (!arg_password)
                return log_error_errno(-EINVAL, "load needs --password or --password-file."), TSC_LOCAL;
        if (tsc_load_mix_parse(arg_mix, &lo.mix) < 0)
                return log_error_errno(-EINVAL,
                                       "Invalid --mix (connect=W,disconnect=W,reconnect=W,logoff=W): %s",
                                       arg_mix),
                       TSC_LOCAL;
        lo.store_dir = arg_store ?: "tsclient-load";
        lo.machine_id_file = arg_machine_id_file;
        lo.user_prefix = arg_user_prefix;
        lo.device_prefix = arg_device_prefix;
        lo.devices = arg_devices;
        lo.users = arg_users;
        lo.concurrency = arg_concurrency ?: MIN(arg_devices, 64u);
        lo.rate = arg_rate;
        lo.duration = arg_duration;
        lo.hold = arg_hold;
        lo.json = arg_json;
        r = tsc_load_run(&lo, stdout);
        wipe_password();
        return r < 0 ? TSC_LOCAL : r;
}

static int verb_device(void) {
        _cleanup_(tsc_store_freep) struct tsc_store *store = NULL;
        _cleanup_(json_decrefp) json_t *farms = json_object();
        _cleanup_(closedirp) DIR *d = NULL;
        char dir[PATH_MAX], hwid[2 * TSC_HWID_SIZE + 1];
        struct dirent *de;

        if (!farms)
                return log_oom(), TSC_LOCAL;
        if (!arg_store && default_store(dir, sizeof(dir)) < 0)
                return TSC_LOCAL;
        if (open_store(arg_store ?: dir, &store) < 0)
                return TSC_LOCAL;
        tsf_hex_encode(store->hwid, TSC_HWID_SIZE, hwid);
        d = opendir(store->dir);
        if (!d)
                return log_error_errno(negative_errno(), "Failed to read %s: %m", store->dir), TSC_LOCAL;
        if (!arg_json)
                printf("store        %s\nhardware id  %s\n", store->dir, hwid);
        while ((de = readdir(d))) {
                char token[TSF_PROTO_TOKEN_MAX + 1], exp[TSF_TIMESTAMP_MAX] = "";
                const char *farm;
                struct tsf_lic_token t = {};
                int r;

                if (strncmp(de->d_name, "farm.", 5) != 0 || !tsc_farm_id_valid(de->d_name + 5))
                        continue;
                farm = de->d_name + 5;
                r = tsc_store_token_load(store, farm, token, sizeof(token));
                if (r >= 0 && tsf_lic_token_parse(token, &t) == TSF_LIC_VERDICT_OK)
                        tsf_format_timestamp(t.expires, exp, sizeof(exp));
                if (arg_json)
                        json_object_set_new(farms, farm,
                                            json_pack("{s:s, s:s?, s:s?}", "state",
                                                      r < 0 ? "malformed" : "ok", "kind",
                                                      t.kind ? tsf_lic_kind_to_string(t.kind) : NULL,
                                                      "expires", exp[0] ? exp : NULL));
                else
                        printf("farm %-22s %s%s%s\n", farm,
                               r < 0    ? "malformed (refused)"
                               : t.kind ? tsf_lic_kind_to_string(t.kind)
                                        : "token",
                               exp[0] ? ", expires " : "", exp);
        }
        if (arg_json) {
                _cleanup_(json_decrefp) json_t *o = json_pack("{s:s, s:s, s:O}", "store", store->dir,
                                                              "hardware_id", hwid, "farms", farms);
                _cleanup_free_ char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;

                printf("%s\n", text ?: "{}");
        }
        return TSC_OK;
}

int main(int argc, char *argv[]) {
        const char *verb = "connect";
        int r;

        tsf_log_set_ident("tsclient");
        /* OpenSSL writes to the socket with write(): a server that closed
         * must be an error (-EPIPE), not a signal that kills every thread. */
        signal(SIGPIPE, SIG_IGN);
        tsf_log_parse_environment();
        if (argc > 1 && argv[1][0] != '-') {
                verb = argv[1];
                argv++;
                argc--;
        }
        r = parse_argv(argc, argv);
        if (r <= 0) {
                wipe_password();
                return r < 0 ? TSC_LOCAL : TSC_OK;
        }
        if (optind < argc) {
                wipe_password();
                log_error("Unexpected argument: %s", argv[optind]);
                return TSC_LOCAL;
        }
        if (streq_ptr(verb, "connect"))
                r = verb_connect();
        else if (streq_ptr(verb, "load"))
                r = verb_load();
        else if (streq_ptr(verb, "device"))
                r = verb_device();
        else {
                log_error("Unknown command \"%s\" (connect, load, device; --help).", verb);
                r = TSC_LOCAL;
        }
        wipe_password();
        return r;
}
