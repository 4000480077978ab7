/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * tsctl: the operator's command line. main() parses the global options and
 * hands the rest to dispatch(), which finds the verb in a table (systemd's
 * dispatch_verb, xdp-tools' command tables), parses that verb's options and
 * checks its argument count. --help for every level is generated from the
 * same tables, so a verb cannot exist without its usage line and examples.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "bpf/abi/tsfarm_abi.h"
#include "tsfarm/api.h"
#include "tsfarm/cleanup.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"
#include "tsctl.h"

bool arg_json = false;

/* ---- the command-line surface ------------------------------------------ */

static int verb_help(int argc, char *argv[]);

static const struct tsctl_option decode_cr_options[] = {
        {"hex", NULL, DECODE_CR_OPT_HEX, "Read the input as hex text (default: detect)"},
        {"raw", NULL, DECODE_CR_OPT_RAW, "Read the input as raw bytes (default: detect)"},
        {},
};

#define PIN_ROOT_HELP "Directory of the host role's pinned maps"

static const struct tsctl_option host_options[] = {
        {"pin-root", "DIR", HOST_OPT_PIN_ROOT, PIN_ROOT_HELP},
        {},
};

static const struct tsctl_option host_sessions_set_options[] = {
        {"state", "STATE", HOST_OPT_STATE, "active (default) or disconnected"},
        {"session-id", "N", HOST_OPT_SESSION_ID, "The session's id on that node (default: kept, or 0)"},
        {"pin-root", "DIR", HOST_OPT_PIN_ROOT, PIN_ROOT_HELP},
        {},
};

/* Said once, shown by every host command. */
#define HOST_HELP_PINS                                                               \
        "tsagent's host role pins the maps under the pin root: --pin-root, else\n"   \
        "$TSFARM_PIN_ROOT, else " TSF_PIN_ROOT " ([host] pin-root in\n"              \
        "tsagent.conf). tsagent owns them; tsctl opens them read-only, except the\n" \
        "sessions map for \"sessions set\" and \"sessions del\". Needs root (or\n"   \
        "CAP_BPF and access to the pin root). Exit status: 0 success, 1 no maps\n"   \
        "under the pin root (or the negative answer the command describes), 2\n"     \
        "usage error or failure.\n"

static const struct tsctl_verb host_sessions_verbs[] = {
        {
                .name = "set",
                .synopsis = "USER NODE_ID [--state=active|disconnected] [--session-id=N] [--json]",
                .min_args = 2,
                .max_args = 2,
                .fn = verb_host_sessions_set,
                .options = host_sessions_set_options,
                .parse_option = host_parse_option,
                .summary = "Set the session of a user by hand",
                .help = "Writes USER's entry in the sessions map: the user's session is on node\n"
                        "NODE_ID, in state --state (default active), with id --session-id on that\n"
                        "node (default: the previous id if the node is the same, else 0 =\n"
                        "unknown). The revision is the previous one plus 1 (1 for a new entry),\n"
                        "the change time is now. Prints the entry as written.\n"
                        "\n"
                        "USER is folded as the gateway folds a cookie (docs/userkey.md): the key\n"
                        "is the user part, lower case, so \"CORP\\Alice\", \"alice@corp.example\"\n"
                        "and \"alice\" are one entry. NODE_ID must be in the node table (see\n"
                        "\"tsctl host nodes\"); an unknown id is refused with exit status 1.\n"
                        "\n"
                        "Until the directory role exists, sessions are set by hand with this\n"
                        "command; once it runs, tsagent mirrors the directory into the map and\n"
                        "overwrites hand-made entries.\n"
                        "\n" HOST_HELP_PINS,
                .examples = "tsctl host sessions set alice 2\n"
                            "tsctl host sessions set 'CORP\\bob' 3 --state=disconnected --session-id=12\n"
                            "tsctl host sessions set alice 2 --pin-root=/sys/fs/bpf/tsfarm-test\n",
        },
        {
                .name = "del",
                .synopsis = "USER",
                .min_args = 1,
                .max_args = 1,
                .fn = verb_host_sessions_del,
                .options = host_options,
                .parse_option = host_parse_option,
                .summary = "Delete the session of a user",
                .help = "Deletes USER's entry (folded as for \"set\") from the sessions map.\n"
                        "Prints nothing on success; a user without an entry is reported with\n"
                        "exit status 1.\n"
                        "\n" HOST_HELP_PINS,
                .examples = "tsctl host sessions del alice\n"
                            "tsctl host sessions del 'CORP\\bob' || echo 'bob had no session'\n",
        },
        {},
};

static const struct tsctl_verb host_verbs[] = {
        {
                .name = "stats",
                .synopsis = "[--json]",
                .fn = verb_host_stats,
                .options = host_options,
                .parse_option = host_parse_option,
                .summary = "Show the BPF counters and the data path's config",
                .help = "Shows the config entry the agent wrote (ABI version, this node's id, the\n"
                        "RDP port) and the counters of the steer and track programs, summed over\n"
                        "all CPUs. Every RDP-port lookup counts in lookup_total and in exactly\n"
                        "one of to_local_peer, to_local_affinity, to_gateway, fail_open,\n"
                        "assign_failed; docs/bpf.md explains each counter.\n"
                        "\n" HOST_HELP_PINS,
                .examples = "tsctl host stats\n"
                            "tsctl host stats --json | jq .stats.to_gateway\n"
                            "watch -n1 tsctl host stats\n",
        },
        {
                .name = "nodes",
                .synopsis = "[--json]",
                .fn = verb_host_nodes,
                .options = host_options,
                .parse_option = host_parse_option,
                .summary = "Show the node table",
                .help = "Shows every address in the nodes map: its node id (0 for a pure bypass\n"
                        "entry), the node's RDP port, its flags (self: an address of this node,\n"
                        "peer: of another farm node, draining: takes no new sessions, down:\n"
                        "heartbeat lapsed, bypass: a trusted source the gateway must not see)\n"
                        "and its placement weight. Sorted by node id, then address. Connections\n"
                        "from any address listed here go straight to the local RDP server.\n"
                        "\n" HOST_HELP_PINS,
                .examples = "tsctl host nodes\n"
                            "tsctl host nodes --json | jq -r '.nodes[] | select(.flags | index(\"down\")) | "
                            ".address'\n",
        },
        {
                .name = "sessions",
                .synopsis = "[--json]",
                .fn = verb_host_sessions,
                .options = host_options,
                .parse_option = host_parse_option,
                .sub = host_sessions_verbs,
                .summary = "Show the sessions map",
                .help = "Shows the farm's sessions as mirrored into the sessions map: user (the\n"
                        "folded user part; a name of 64 bytes or more shows as its first 56\n"
                        "bytes, \"...#\" and the hash that completes the key), node id, session id\n"
                        "on that node, state (active, disconnected, or lost: its node went\n"
                        "down), revision and the time of the last state change (UTC). Sorted by\n"
                        "user.\n"
                        "\n" HOST_HELP_PINS,
                .examples = "tsctl host sessions\n"
                            "tsctl host sessions --json | jq '.sessions[] | select(.node_id == 2)'\n"
                            "tsctl host sessions set alice 2\n"
                            "tsctl host sessions del alice\n",
        },
        {
                .name = "affinity",
                .synopsis = "[--json]",
                .fn = verb_host_affinity,
                .options = host_options,
                .parse_option = host_parse_option,
                .summary = "Show the client address affinity table",
                .help = "Shows which node served each client address last: node id, flags\n"
                        "(multi-user: the address was seen with two different users, e.g. an\n"
                        "office behind NAT, and never takes the fast path), the hash of the\n"
                        "user key last seen, and how long the entry stays fresh (\"expired\" once\n"
                        "past). A fresh entry for this node lets a reconnecting client skip the\n"
                        "gateway. Sorted by address.\n"
                        "\n" HOST_HELP_PINS,
                .examples = "tsctl host affinity\n"
                            "tsctl host affinity --json | jq -r '.affinity[] | select(.expired | not) | "
                            ".client'\n",
        },
        {
                .name = "conns",
                .synopsis = "[--json]",
                .fn = verb_host_conns,
                .options = host_options,
                .parse_option = host_parse_option,
                .summary = "Show the tracked RDP connections",
                .help = "Shows the RDP-port connections the track program follows: local and\n"
                        "remote address and port, direction (passive: accepted on the RDP port;\n"
                        "active: the gateway's leg to an RDP server), last TCP state, age, bytes\n"
                        "acknowledged and received, smoothed RTT and retransmissions. Counters are\n"
                        "those of the last TCP state change or RTO, not live: \"ss -ti\" has live\n"
                        "figures. Sorted by local, then remote address.\n"
                        "\n" HOST_HELP_PINS,
                .examples = "tsctl host conns\n"
                            "tsctl host conns --json | jq '.conns[] | select(.total_retrans > 0)'\n",
        },
        {},
};

static const struct tsctl_option pki_init_options[] = {
        {"dir", "DIR", PKI_OPT_DIR, "Directory of the CA's files (must exist)"},
        {"name", "FARM", PKI_OPT_NAME, "The farm's name, in the CA's subject (default: tsfarm)"},
        {"days", "N", PKI_OPT_DAYS, "Validity in days (default: 3650)"},
        {"force", NULL, PKI_OPT_FORCE, "Replace existing files"},
        {},
};

static const struct tsctl_option pki_issue_options[] = {
        {"dir", "DIR", PKI_OPT_DIR, "Directory of the CA's files; the node's go there too"},
        {"ip", "ADDR", PKI_OPT_IP, "An IPv4/IPv6 address the node is reached at (repeatable)"},
        {"dns", "NAME", PKI_OPT_DNS, "A DNS name the node is reached at (repeatable)"},
        {"days", "N", PKI_OPT_DAYS, "Validity in days (default: 825, never past the CA's)"},
        {"force", NULL, PKI_OPT_FORCE, "Replace existing files"},
        {},
};

#define PKI_HELP_COMMON                                                               \
        "Keys are ECDSA P-256, unencrypted PEM, mode 0600; certificates are PEM,\n"   \
        "0644. Existing files are never replaced without --force. A farm with a CA\n" \
        "of its own does not need this: docs/api.md says what a node certificate\n"   \
        "must contain. Exit status: 0 success, 2 failure (nothing half-written).\n"

static const struct tsctl_verb pki_verbs[] = {
        {
                .name = "init",
                .synopsis = "--dir DIR [--name FARM] [--days N] [--force]",
                .fn = verb_pki_init,
                .options = pki_init_options,
                .parse_option = pki_parse_option,
                .summary = "Create a farm CA",
                .help = "Creates DIR/ca.key and DIR/ca.crt: a self-signed CA (CN \"FARM farm CA\",\n"
                        "pathlen 0) that signs the farm's node certificates. Keep ca.key off the\n"
                        "nodes: only ca.crt is installed on them. Prints the files written.\n"
                        "\n" PKI_HELP_COMMON,
                .examples = "mkdir -m 0700 /root/farm-ca\n"
                            "tsctl pki init --dir /root/farm-ca --name acme\n",
        },
        {
                .name = "issue",
                .synopsis = "--dir DIR NODE [--ip ADDR]... [--dns NAME]... [--days N] [--force]",
                .min_args = 1,
                .max_args = 1,
                .fn = verb_pki_issue,
                .options = pki_issue_options,
                .parse_option = pki_parse_option,
                .summary = "Issue a node certificate",
                .help = "Creates DIR/NODE.key and DIR/NODE.crt, signed by DIR/ca.{crt,key}: CN =\n"
                        "NODE (tsagent's node-name, which is how its peers know it), subject\n"
                        "alternative names DNS:NODE (when NODE is a host name) and every --dns and\n"
                        "--ip given, extended key usage serverAuth and clientAuth (every node both\n"
                        "serves the API and calls its peers). Prints the files written.\n"
                        "\n" PKI_HELP_COMMON,
                .examples = "tsctl pki issue --dir /root/farm-ca ts1 --ip 10.0.0.1 --dns ts1.corp.example\n"
                            "tsctl pki issue --dir /root/farm-ca ts2 --ip 10.0.0.2 --ip fd00::2\n"
                            "openssl verify -CAfile /root/farm-ca/ca.crt /root/farm-ca/ts1.crt\n",
        },
        {},
};

static const struct tsctl_option directory_options[] = {
        {"directory-socket", "PATH", DIRECTORY_OPT_SOCKET, "The directory's UNIX socket"},
        {},
};

static const struct tsctl_option drain_options[] = {
        {"until-restart", NULL, DIRECTORY_OPT_UNTIL_RESTART, "Until the node's tsagent restarts"},
        {"directory-socket", "PATH", DIRECTORY_OPT_SOCKET, "The directory's UNIX socket"},
        {},
};

/* Said once, shown by every directory command. */
#define DIRECTORY_HELP_SOCKET                                                           \
        "Talks to tsagent's directory role over its UNIX socket: --directory-socket,\n" \
        "else $TSFARM_DIRECTORY_SOCKET, else /run/tsfarm/directory.sock ([directory]\n" \
        "socket in tsagent.conf). The socket admits root only. Times are UTC.\n"        \
        "Exit status: 0 success, 1 the directory refused (its reason is printed)\n"     \
        "or could not be reached, 2 usage error or failure.\n"

static const struct tsctl_option license_options[] = {
        {"licensing-socket", "PATH", LICENSE_OPT_SOCKET, "The license server's UNIX socket"},
        {},
};

static const struct tsctl_option license_install_options[] = {
        {"version", "V", LICENSE_OPT_VERSION, "The product version the CALs are for (required)"},
        {"count", "N", LICENSE_OPT_COUNT, "How many Device CALs, 1..1000000 (required)"},
        {"licensing-socket", "PATH", LICENSE_OPT_SOCKET, "The license server's UNIX socket"},
        {},
};

static const struct tsctl_option license_filter_options[] = {
        {"state", "S[,S...]", LICENSE_OPT_STATE, "temporary, temporary-validated, active, revoked, expired"},
        {"device", "NAME", LICENSE_OPT_DEVICE, "Only this device name (exact)"},
        {"hardware-id", "HEX", LICENSE_OPT_HARDWARE_ID, "Only this hardware id"},
        {"pack", "ID", LICENSE_OPT_PACK, "Only records of this key pack"},
        {"licensing-socket", "PATH", LICENSE_OPT_SOCKET, "The license server's UNIX socket"},
        {},
};

static const struct tsctl_option license_report_options[] = {
        {"csv", NULL, LICENSE_OPT_CSV, "CSV (RFC 4180, CRLF) instead of a table"},
        {"state", "S[,S...]", LICENSE_OPT_STATE, "Only records in these states"},
        {"device", "NAME", LICENSE_OPT_DEVICE, "Only this device name (exact)"},
        {"hardware-id", "HEX", LICENSE_OPT_HARDWARE_ID, "Only this hardware id"},
        {"pack", "ID", LICENSE_OPT_PACK, "Only records of this key pack"},
        {"licensing-socket", "PATH", LICENSE_OPT_SOCKET, "The license server's UNIX socket"},
        {},
};

static const struct tsctl_option license_diagnose_options[] = {
        {"agent-socket", "PATH", LICDIAG_OPT_SOCKET, "The host agent's local API socket"},
        {},
};

static const struct tsctl_option license_verify_options[] = {
        {"trust", "DIR", LICENSE_OPT_TRUST, "Directory of trusted license-server keys (*.pem)"},
        {"hardware-id", "HEX", LICENSE_OPT_HARDWARE_ID, "The device's hardware id (16..64 bytes)"},
        {},
};

/* Said once, shown by every license command that talks to the server. */
#define LICENSE_HELP_SOCKET                                                             \
        "Talks to tsagent's licensing role over its UNIX socket: --licensing-socket,\n" \
        "else $TSFARM_LICENSING_SOCKET, else /run/tsfarm/licensing.sock ([licensing]\n" \
        "socket in tsagent.conf). The socket admits root only. Times are UTC.\n"        \
        "Exit status: 0 success, 1 the license server refused (its reason is\n"         \
        "printed) or could not be reached, 2 usage error or failure.\n"

static const struct tsctl_verb license_verbs[] = {
        {
                .name = "install-pack",
                .synopsis = "ID --version V --count N [--licensing-socket PATH] [--json]",
                .min_args = 1,
                .max_args = 1,
                .fn = verb_license_install_pack,
                .options = license_install_options,
                .parse_option = license_parse_option,
                .summary = "Install a key pack of Device CALs",
                .help = "Installs key pack ID (1..64 of A-Z a-z 0-9 . - _, unique) of N Device\n"
                        "CALs for product version V, all available. Terminal servers then get\n"
                        "Device CALs out of it for devices whose temporary token was validated.\n"
                        "An id installed already is refused. Prints the pack.\n"
                        "\n" LICENSE_HELP_SOCKET,
                .examples = "tsctl license install-pack ACME-2025-001 --version 2025 --count 250\n",
        },
        {
                .name = "packs",
                .synopsis = "[--licensing-socket PATH] [--json]",
                .fn = verb_license_packs,
                .options = license_options,
                .parse_option = license_parse_option,
                .summary = "Show the installed key packs",
                .help = "Shows every key pack: product version, count, available (in the pool),\n"
                        "issued (active CALs; available + issued = count), revoked and expired\n"
                        "records, revocations the 20 % / 60-day bound allows now, and when it was\n"
                        "installed; a total row, and how many temporary tokens are live.\n"
                        "\n" LICENSE_HELP_SOCKET,
                .examples = "tsctl license packs\n"
                            "tsctl license packs --json | jq .totals.available\n",
        },
        {
                .name = "issued",
                .synopsis = "[--state S[,S...]] [--device NAME] [--hardware-id HEX] [--pack ID] [--json]",
                .fn = verb_license_issued,
                .options = license_filter_options,
                .parse_option = license_parse_option,
                .summary = "Show the issuance records (temporary tokens and Device CALs)",
                .help = "Shows the license server's records, oldest issued first: token id, kind\n"
                        "(temporary, device-cal), state, pack, device name, user name, issued,\n"
                        "expires and hardware id. Records are never deleted: this is the\n"
                        "issuance log. Filters combine.\n"
                        "\n" LICENSE_HELP_SOCKET,
                .examples =
                        "tsctl license issued --state active\n"
                        "tsctl license issued --device PC-0042\n"
                        "tsctl license issued --json | jq -r '.tokens[] | select(.user_name == \"alice\") | "
                        ".token_id'\n",
        },
        {
                .name = "report",
                .synopsis = "[--csv|--json] [--state S[,S...]] [--device NAME] [--pack ID]",
                .fn = verb_license_report,
                .options = license_report_options,
                .parse_option = license_parse_option,
                .summary = "Print the license report (packs and records)",
                .help = "Prints the license server's report: the packs with their counts and the\n"
                        "totals, then the records. A table by default (control characters in\n"
                        "names escaped), --csv for a spreadsheet (RFC 4180, CRLF line ends, one\n"
                        "header line per section, an empty line between them, ISO 8601 UTC\n"
                        "times), --json for scripts. The filters apply to the records.\n"
                        "\n" LICENSE_HELP_SOCKET,
                .examples = "tsctl license report\n"
                            "tsctl license report --csv > licenses-$(date +%F).csv\n"
                            "tsctl license report --json | jq .totals\n",
        },
        {
                .name = "revoke",
                .synopsis = "TOKEN_ID [--licensing-socket PATH] [--json]",
                .min_args = 1,
                .max_args = 1,
                .fn = verb_license_revoke,
                .options = license_options,
                .parse_option = license_parse_option,
                .summary = "Return a Device CAL to its pack",
                .help = "Revokes the active Device CAL TOKEN_ID (32 hex digits, see \"issued\"):\n"
                        "it goes back to its pack's pool. A pack allows at most 20 % of its\n"
                        "count (rounded down) revocations in any 60 days; beyond that the\n"
                        "server refuses and says when the next one becomes possible (never, for\n"
                        "a pack of fewer than 5: the CAL lapses by itself within 89 days).\n"
                        "Temporary tokens are not revoked; they lapse.\n"
                        "\n" LICENSE_HELP_SOCKET,
                .examples = "tsctl license revoke 5f0c6a1e2b3d4c5e6f708192a3b4c5d6\n",
        },
        {
                .name = "verify",
                .synopsis = "TOKEN|- --trust DIR --hardware-id HEX [--json]",
                .min_args = 1,
                .max_args = 1,
                .fn = verb_license_verify,
                .options = license_verify_options,
                .parse_option = license_parse_option,
                .summary = "Verify a license token offline, as a terminal server does",
                .help = "Judges TOKEN (the tsl1. text; \"-\" reads it from standard input) against\n"
                        "the trusted license-server keys in DIR (every *.pem, as on a terminal\n"
                        "server) for the device with hardware id HEX, at the current time. The\n"
                        "verdict is one of ok, malformed, unsupported-version, unknown-issuer,\n"
                        "bad-signature, other-device, expired (docs/licensing.md). An authentic\n"
                        "token's content is shown; for an unknown issuer, the key id it claims.\n"
                        "No license server is needed.\n"
                        "\n"
                        "Exit status: 0 the verdict is ok, 1 any other verdict, 2 usage error or\n"
                        "failure.\n",
                .examples =
                        "tsctl license verify \"$TOKEN\" --trust /etc/tsfarm/license-keys --hardware-id "
                        "00112233445566778899aabbccddeeff\n"
                        "echo \"$TOKEN\" | tsctl license verify - --trust keys --hardware-id $HWID --json\n",
        },
        {
                .name = "diagnose",
                .synopsis = "[--agent-socket PATH] [--json]",
                .fn = verb_license_diagnose,
                .options = license_diagnose_options,
                .parse_option = licdiag_parse_option,
                .summary = "On a terminal server: the license servers found and the grace period",
                .help = "Asks this terminal server's host agent (its licensing client) which\n"
                        "license servers it found (multicast, DNS SRV, configuration), asks\n"
                        "each for its inventory now, and shows whether each is reachable,\n"
                        "trusted (its signing key is in the trusted-keys directory) and has\n"
                        "Device CALs available, with the grace period's state. Every problem\n"
                        "has a reason code: unreachable, tls-rejected, untrusted,\n"
                        "no-inventory for a server; no-license-server, none-usable,\n"
                        "no-trusted-keys, grace-active, grace-expired for the host.\n"
                        "\n"
                        "Talks to the host agent over its UNIX socket: --agent-socket, else\n"
                        "$TSFARM_AGENT_SOCKET, else /run/tsfarm/agent.sock ([host] socket).\n"
                        "Exit status: 0 this host can license devices, 1 a host problem is\n"
                        "listed (or the agent could not be reached), 2 usage error or failure.\n",
                .examples = "tsctl license diagnose\n"
                            "tsctl license diagnose --json | jq '.servers[] | select(.reachable | not)'\n",
        },
        {},
};

static const struct tsctl_verb verbs[] = {
        {
                .name = "decode-cr",
                .synopsis = "[--hex|--raw] [--json] [FILE|-]",
                .min_args = 0,
                .max_args = 1,
                .fn = verb_decode_cr,
                .options = decode_cr_options,
                .parse_option = decode_cr_parse_option,
                .summary = "Decode a client's first PDU (X.224 Connection Request)",
                .help = "Reads the first PDU an RDP client sends (optional Preconnection PDU,\n"
                        "then TPKT + X.224 Connection Request) from FILE, or standard input\n"
                        "when FILE is missing or \"-\", and shows what tsfarm's gateway sees in\n"
                        "it: cookie or routing token, requested security protocols,\n"
                        "correlation id. The input is hex text (\"0300002e...\", \"03 00 00\n"
                        "2e\", \"03:00:00:2e\", \"0x03 0x00\") or raw bytes; the format is\n"
                        "detected unless --hex or --raw says. At most 64 KiB is read.\n"
                        "\n"
                        "A PDU that tsfarm would refuse is reported with the parser's reason\n"
                        "and the offset of the offending byte in a hexdump. Exit status: 0\n"
                        "the PDU is complete and valid, 1 it is invalid or truncated, 2 usage\n"
                        "or input error.\n",
                .examples = "# A PDU saved as hex (one of the test vectors, a paste):\n"
                            "tsctl decode-cr cr.hex\n"
                            "# From standard input:\n"
                            "echo 0300002c27e00000000000436f6f6b69653a206d737473686173683d656c746f6e730d0a"
                            "0100080000000000 | tsctl decode-cr\n"
                            "# Raw bytes, e.g. cut out of a capture with xxd -r -p:\n"
                            "tsctl decode-cr --raw cr.bin\n"
                            "# The first client PDU in a capture (docs/tsctl.md has tcpdump too):\n"
                            "tshark -r rdp.pcap -Y 'tcp.dstport==3389 && tpkt' -T fields -e tcp.payload \\\n"
                            "        | head -1 | tsctl decode-cr\n"
                            "# Just the user name, for a script:\n"
                            "tsctl decode-cr --json cr.hex | jq -r .cookie.value\n",
        },
        {
                .name = "host",
                .options = host_options,
                .parse_option = host_parse_option,
                .sub = host_verbs,
                .summary = "Inspect the host role's BPF maps; set sessions by hand",
                .help = "Reads the eBPF maps tsagent's host role pins: counters and config,\n"
                        "node table, sessions, client affinity, tracked connections. A table by\n"
                        "default, --json for scripts.\n"
                        "\n" HOST_HELP_PINS,
                .examples = "tsctl host stats\n"
                            "tsctl host nodes\n"
                            "tsctl host sessions set alice 2\n"
                            "tsctl --pin-root=/sys/fs/bpf/tsfarm-test host conns --json\n",
        },
        {
                .name = "pki",
                .sub = pki_verbs,
                .summary = "Create a farm CA and node certificates",
                .help = "Makes the certificates the roles authenticate each other with (mutual\n"
                        "TLS, docs/api.md): \"init\" a farm CA once, then \"issue\" a certificate\n"
                        "for every node.\n"
                        "\n" PKI_HELP_COMMON,
                .examples = "tsctl pki init --dir /root/farm-ca\n"
                            "tsctl pki issue --dir /root/farm-ca ts1 --ip 10.0.0.1\n",
        },
        {
                .name = "nodes",
                .synopsis = "[--directory-socket PATH] [--json]",
                .fn = verb_nodes,
                .options = directory_options,
                .parse_option = directory_parse_option,
                .summary = "Show the farm's nodes as the directory sees them",
                .help = "Shows every node registered with the directory: up or down (its\n"
                        "heartbeats), drain state (enabled, disabled, drain-until-restart),\n"
                        "placement weight, sessions and session limit (\"-\": none), addresses and\n"
                        "last heartbeat. --json prints the directory's node objects.\n"
                        "\n" DIRECTORY_HELP_SOCKET,
                .examples = "tsctl nodes\n"
                            "tsctl nodes --json | jq -r '.nodes[] | select(.up | not) | .name'\n"
                            "tsctl --json nodes --directory-socket /run/tsfarm-test/directory.sock\n",
        },
        {
                .name = "sessions",
                .synopsis = "[USER] [--directory-socket PATH] [--json]",
                .min_args = 0,
                .max_args = 1,
                .fn = verb_sessions,
                .options = directory_options,
                .parse_option = directory_parse_option,
                .summary = "Show the farm's sessions, or one user's",
                .help = "Shows the sessions the directory knows, or only USER's (compared\n"
                        "without regard to case): user, node, the session's id on that node,\n"
                        "state (active, disconnected, lost: its node went down), device, client\n"
                        "address, logon time and when the state last changed. --json prints the\n"
                        "directory's session objects.\n"
                        "\n" DIRECTORY_HELP_SOCKET,
                .examples =
                        "tsctl sessions\n"
                        "tsctl sessions alice\n"
                        "tsctl sessions --json | jq -r '.sessions[] | select(.state == \"lost\") | .user'\n",
        },
        {
                .name = "drain",
                .synopsis = "NODE [--until-restart] [--directory-socket PATH] [--json]",
                .min_args = 1,
                .max_args = 1,
                .fn = verb_drain,
                .options = drain_options,
                .parse_option = directory_parse_option,
                .summary = "Stop placing new sessions on a node",
                .help = "Tells the directory to place no new logons on NODE (state \"disabled\");\n"
                        "users with a session there still reconnect to it. With --until-restart\n"
                        "(\"drain-until-restart\") the node takes logons again once its tsagent\n"
                        "restarts and registers anew, e.g. after a reboot for updates. Prints the\n"
                        "node's row as the directory now has it.\n"
                        "\n" DIRECTORY_HELP_SOCKET,
                .examples =
                        "tsctl drain ts2\n"
                        "tsctl drain ts2 --until-restart && ssh ts2 reboot\n"
                        "tsctl sessions --json | jq '[.sessions[] | select(.node == \"ts2\")] | length'\n",
        },
        {
                .name = "undrain",
                .synopsis = "NODE [--directory-socket PATH] [--json]",
                .min_args = 1,
                .max_args = 1,
                .fn = verb_undrain,
                .options = directory_options,
                .parse_option = directory_parse_option,
                .summary = "Place new sessions on a drained node again",
                .help = "Tells the directory to place new logons on NODE again (state\n"
                        "\"enabled\"), ending \"tsctl drain\" with or without --until-restart.\n"
                        "Prints the node's row as the directory now has it.\n"
                        "\n" DIRECTORY_HELP_SOCKET,
                .examples = "tsctl undrain ts2\n",
        },
        {
                .name = "license",
                .options = license_options,
                .parse_option = license_parse_option,
                .sub = license_verbs,
                .summary = "Manage the license server: key packs, records, report, revoke",
                .help = "Administers tsagent's licensing role (the license server) over its local\n"
                        "socket: install key packs of Device CALs, list packs and issuance\n"
                        "records, print the report, revoke a CAL. \"verify\" checks a token\n"
                        "offline against trusted keys, like a terminal server; \"diagnose\" asks a\n"
                        "terminal server's licensing client what it found.\n"
                        "\n" LICENSE_HELP_SOCKET,
                .examples = "tsctl license install-pack ACME-2025-001 --version 2025 --count 250\n"
                            "tsctl license packs\n"
                            "tsctl license issued --state active\n"
                            "tsctl license report --csv > licenses.csv\n",
        },
        {
                .name = "help",
                .synopsis = "[COMMAND...]",
                .min_args = 0,
                .max_args = TSCTL_ARGS_ANY,
                .fn = verb_help,
                .summary = "Show this help, or a command's",
                .help = "Shows the list of commands, or the help of the named command\n"
                        "(the same as \"tsctl COMMAND --help\").\n",
                .examples = "tsctl help\n"
                            "tsctl help decode-cr\n",
        },
        {},
};

/* Valid before the verb (global parse) and after it (every verb). */
enum {
        OPT_JSON = 0x80,
        OPT_VERSION,
};

static const struct tsctl_option common_options[] = {
        {"json", NULL, OPT_JSON, "Print JSON (for scripts) instead of tables"},
        {"help", NULL, 'h', "Show this help"},
        {},
};

/* Only before the verb. */
static const struct tsctl_option global_options[] = {
        {"version", NULL, OPT_VERSION, "Print the version and exit"},
        {"pin-root", "DIR", HOST_OPT_PIN_ROOT, PIN_ROOT_HELP},
        {"directory-socket", "PATH", DIRECTORY_OPT_SOCKET, "The directory's UNIX socket"},
        {},
};

/* ---- help -------------------------------------------------------------- */

/* Prints each line of `text` with `indent` in front; empty lines stay empty. */
static void print_indented(FILE *f, const char *indent, const char *text) {
        const char *p = text;

        while (*p) {
                size_t n = strcspn(p, "\n");

                if (n > 0)
                        fprintf(f, "%s%.*s\n", indent, (int)n, p);
                else
                        fputc('\n', f);
                p += n;
                if (*p == '\n')
                        p++;
        }
}

static void print_option_rows(FILE *f, const struct tsctl_option *options) {
        for (const struct tsctl_option *o = options; o && o->name; o++) {
                char left[64];

                if (o->val == 'h')
                        snprintf(left, sizeof(left), "-h, --%s", o->name);
                else if (o->arg)
                        snprintf(left, sizeof(left), "    --%s=%s", o->name, o->arg);
                else
                        snprintf(left, sizeof(left), "    --%s", o->name);
                fprintf(f, "  %-20s %s\n", left, o->help);
        }
}

/* One "  path name   summary" line per verb, groups expanded, so the
 * top-level help shows every command there is; usage lines with the
 * arguments are in each command's own help. */
static void print_command_rows(FILE *f, const char *prefix, const struct tsctl_verb *table) {
        for (const struct tsctl_verb *v = table; v->name; v++) {
                char name[128];

                snprintf(name, sizeof(name), "%s%s", prefix, v->name);
                /* A group that is also a command ("host sessions") comes
                 * before its sub-commands ("host sessions set"). */
                if (v->fn) {
                        if (strlen(name) <= 18)
                                fprintf(f, "  %-18s  %s\n", name, v->summary);
                        else
                                fprintf(f, "  %s\n  %-18s  %s\n", name, "", v->summary);
                }
                if (v->sub) {
                        char sub_prefix[128];

                        snprintf(sub_prefix, sizeof(sub_prefix), "%s%s ", prefix, v->name);
                        print_command_rows(f, sub_prefix, v->sub);
                }
        }
}

static void print_main_help(FILE *f) {
        fprintf(f, "Usage: tsctl [--json] COMMAND [ARGS...]\n"
                   "\n"
                   "Inspect and manage a tsfarm RDP terminal-server farm.\n"
                   "\n"
                   "Commands:\n");
        print_command_rows(f, "", verbs);
        fprintf(f, "\nOptions:\n");
        print_option_rows(f, common_options);
        print_option_rows(f, global_options);
        fprintf(f, "\n"
                   "Exit status: 0 success, 1 a negative answer (such as an invalid PDU),\n"
                   "2 usage error or failure (such as unreadable input).\n"
                   "\n"
                   "Examples:\n"
                   "  tsctl decode-cr cr.hex\n"
                   "  tsctl --json decode-cr cr.hex | jq .cookie\n"
                   "  tsctl help decode-cr\n"
                   "  tsctl host sessions\n"
                   "  tsctl host sessions set alice 2\n"
                   "\n"
                   "See 'tsctl COMMAND --help' and tsctl(1).\n");
}

/* `path` is how the user reached the verb: "tsctl", "tsctl host". */
static void print_verb_help(FILE *f, const char *path, const struct tsctl_verb *v) {
        if (v->sub && !v->fn)
                fprintf(f, "Usage: %s %s COMMAND [ARGS...]\n\n", path, v->name);
        else
                fprintf(f, "Usage: %s %s%s%s\n\n", path, v->name, v->synopsis ? " " : "", v->synopsis ?: "");
        fprintf(f, "%s.\n", v->summary);
        if (v->help) {
                fputc('\n', f);
                print_indented(f, "", v->help);
        }
        if (v->sub) {
                fprintf(f, "\nCommands:\n");
                print_command_rows(f, "", v->sub);
        }
        fprintf(f, "\nOptions:\n");
        print_option_rows(f, v->options);
        print_option_rows(f, common_options);
        fprintf(f, "\nExamples:\n");
        print_indented(f, "  ", v->examples);
        fprintf(f, "\nSee tsctl(1).\n");
}

/* ---- dispatch ---------------------------------------------------------- */

static const struct tsctl_verb *find_verb(const struct tsctl_verb *table, const char *name) {
        for (const struct tsctl_verb *v = table; v->name; v++)
                if (strcmp(v->name, name) == 0)
                        return v;
        return NULL;
}

static void list_names(char *buf, size_t size, const struct tsctl_verb *table) {
        size_t n = 0;

        buf[0] = '\0';
        for (const struct tsctl_verb *v = table; v->name && n < size; v++)
                n += (size_t)snprintf(buf + n, size - n, "%s%s", n ? ", " : "", v->name);
}

/* "tsctl host conns" -> "host conns": the log line already says "tsctl:". */
static const char *short_path(const char *path) {
        return strncmp(path, "tsctl ", 6) == 0 ? path + 6 : "";
}

static int unknown_verb(const char *path, const char *name, const struct tsctl_verb *table) {
        char names[512];

        list_names(names, sizeof(names), table);
        log_error("Unknown command '%s%s%s'. Commands: %s. See '%s --help'.", short_path(path),
                  *short_path(path) ? " " : "", name, names, path);
        return TSCTL_EXIT_TROUBLE;
}

/* Fills a getopt_long table from ours. `out` holds `n` entries. */
static void build_longopts(struct option *out, size_t n, const struct tsctl_option *a,
                           const struct tsctl_option *b) {
        size_t i = 0;

        for (const struct tsctl_option *o = a; o && o->name && i + 1 < n; o++, i++)
                out[i] = (struct option){o->name, o->arg ? required_argument : no_argument, NULL, o->val};
        for (const struct tsctl_option *o = b; o && o->name && i + 1 < n; o++, i++)
                out[i] = (struct option){o->name, o->arg ? required_argument : no_argument, NULL, o->val};
        out[i] = (struct option){};
}

/* After getopt_long returned '?': an unknown option, or a known one
 * without its argument. optopt is the short option character, if any. */
static int bad_option(const char *path, const struct option *longopts, int argc, char *argv[]) {
        const char *what = optind > 0 && optind <= argc ? argv[optind - 1] : "?";
        const char *where = short_path(path), *colon = *where ? ": " : "";
        bool known = false;

        if (optopt > 0 && optopt < 0x80 && optopt != '?') {
                log_error("%s%sunknown option '-%c'. See '%s --help'.", where, colon, optopt, path);
                return TSCTL_EXIT_TROUBLE;
        }
        if (strncmp(what, "--", 2) == 0)
                for (const struct option *o = longopts; o->name; o++)
                        if (strncmp(what + 2, o->name, strcspn(what + 2, "=")) == 0 &&
                            o->name[strcspn(what + 2, "=")] == '\0')
                                known = true;
        if (known)
                log_error("%s%soption '%s' needs an argument. See '%s --help'.", where, colon, what, path);
        else
                log_error("%s%sunknown option '%s'. See '%s --help'.", where, colon, what, path);
        return TSCTL_EXIT_TROUBLE;
}

/* Parses the options of one level. At a group (`stop` true) parsing ends at
 * the first non-option, the sub-verb; at a leaf GNU permutation lets options
 * follow the arguments ("decode-cr cr.hex --json"). Returns 0 and sets
 * *ret_help, or an exit status. argv[0] is the verb name. */
static int parse_level(const char *path, const struct tsctl_verb *v, bool stop, int argc, char *argv[],
                       bool *ret_help) {
        struct option longopts[32];
        int c;

        /* A group's own options (host --pin-root) are valid at its level too. */
        build_longopts(longopts, ELEMENTSOF(longopts), common_options, v->options);
        *ret_help = false;
        optind = 0; /* GNU: start afresh, forget the previous level's state */
        opterr = 0; /* our messages name the command and point at its help */
        while ((c = getopt_long(argc, argv, stop ? "+h" : "h", longopts, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        *ret_help = true;
                        break;
                case OPT_JSON:
                        arg_json = true;
                        break;
                case '?':
                        return bad_option(path, longopts, argc, argv);
                default:
                        if (!v->parse_option || v->parse_option(c, optarg) < 0)
                                return TSCTL_EXIT_TROUBLE;
                }
        }
        return 0;
}

static int dispatch(const char *parent, const struct tsctl_verb *table, int argc, char *argv[]) {
        const struct tsctl_verb *v;
        char path[256];
        unsigned nargs;
        bool help;
        int r;

        v = find_verb(table, argv[0]);
        if (!v)
                return unknown_verb(parent, argv[0], table);
        snprintf(path, sizeof(path), "%s %s", parent, v->name);

        if (v->sub) {
                r = parse_level(path, v, true, argc, argv, &help);
                if (r != 0)
                        return r;
                if (help) {
                        print_verb_help(stdout, parent, v);
                        return TSCTL_EXIT_OK;
                }
                if (optind < argc)
                        return dispatch(path, v->sub, argc - optind, argv + optind);
                if (!v->fn) {
                        char names[512];

                        list_names(names, sizeof(names), v->sub);
                        log_error("%s: missing command (%s). See '%s --help'.", short_path(path), names,
                                  path);
                        return TSCTL_EXIT_TROUBLE;
                }
        }

        r = parse_level(path, v, false, argc, argv, &help);
        if (r != 0)
                return r;
        if (help) {
                print_verb_help(stdout, parent, v);
                return TSCTL_EXIT_OK;
        }

        nargs = (unsigned)(argc - optind);
        if (nargs < v->min_args) {
                log_error("%s: expected %s%u argument%s, got %u. See '%s --help'.", short_path(path),
                          v->max_args == v->min_args ? "" : "at least ", v->min_args,
                          v->min_args == 1 ? "" : "s", nargs, path);
                return TSCTL_EXIT_TROUBLE;
        }
        if (nargs > v->max_args) {
                log_error("%s: expected %s%u argument%s, got %u (first extra: '%s'). See '%s --help'.",
                          short_path(path), v->max_args == v->min_args ? "" : "at most ", v->max_args,
                          v->max_args == 1 ? "" : "s", nargs, argv[optind + v->max_args], path);
                return TSCTL_EXIT_TROUBLE;
        }

        r = v->fn((int)nargs, argv + optind);
        return r < 0 ? TSCTL_EXIT_TROUBLE : r;
}

static int verb_help(int argc, char *argv[]) {
        const struct tsctl_verb *table = verbs, *v = NULL;
        char path[256] = "tsctl";

        if (argc == 0) {
                print_main_help(stdout);
                return TSCTL_EXIT_OK;
        }
        /* Walk "help host conns" down the groups. */
        for (int i = 0; i < argc; i++) {
                size_t n = strlen(path);

                if (!table) {
                        log_error("'%s' has no sub-commands. See '%s --help'.", short_path(path), path);
                        return TSCTL_EXIT_TROUBLE;
                }
                v = find_verb(table, argv[i]);
                if (!v)
                        return unknown_verb(path, argv[i], table);
                if (i + 1 < argc)
                        snprintf(path + n, sizeof(path) - n, " %s", v->name);
                table = v->sub;
        }
        print_verb_help(stdout, path, v);
        return TSCTL_EXIT_OK;
}

/* ---- main -------------------------------------------------------------- */

/* Returns > 0 to go on to the verb, 0 when done (--help, --version), or
 * TSCTL_EXIT_TROUBLE negated. */
static int parse_global(int argc, char *argv[]) {
        struct option longopts[8];
        int c;

        build_longopts(longopts, ELEMENTSOF(longopts), common_options, global_options);
        opterr = 0;
        /* "+": stop at the verb; what follows is the verb's to parse. */
        while ((c = getopt_long(argc, argv, "+h", longopts, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        print_main_help(stdout);
                        return 0;
                case OPT_VERSION:
                        printf("tsctl (tsfarm) %s\n", TSFARM_VERSION);
                        return 0;
                case OPT_JSON:
                        arg_json = true;
                        break;
                case HOST_OPT_PIN_ROOT:
                        if (host_parse_option(c, optarg) < 0)
                                return -TSCTL_EXIT_TROUBLE;
                        break;
                case DIRECTORY_OPT_SOCKET:
                        if (directory_parse_option(c, optarg) < 0)
                                return -TSCTL_EXIT_TROUBLE;
                        break;
                default:
                        return -bad_option("tsctl", longopts, argc, argv);
                }
        }
        return 1;
}

int main(int argc, char *argv[]) {
        int r;

        tsf_log_set_ident("tsctl");
        tsf_log_parse_environment();

        r = parse_global(argc, argv);
        if (r <= 0) {
                r = -r;
                goto finish;
        }
        if (optind >= argc) {
                print_main_help(stderr);
                fputc('\n', stderr);
                log_error("Missing command.");
                r = TSCTL_EXIT_TROUBLE;
                goto finish;
        }
        r = dispatch("tsctl", verbs, argc - optind, argv + optind);

finish:
        /* Output that could not be written is a failure, not a success
         * with a short table ("tsctl ... > /full/disk"). */
        if (fflush(stdout) != 0 || ferror(stdout)) {
                log_error_errno(errno ? -errno : -EIO, "Failed to write output: %m");
                return TSCTL_EXIT_TROUBLE;
        }
        return r;
}

/* ---- output helpers ---------------------------------------------------- */

struct tsctl_row {
        char *key;
        char *value;
};

struct tsctl_table {
        struct tsctl_row *rows;
        size_t n, allocated;
        bool oom;
};

struct tsctl_table *tsctl_table_new(void) {
        return calloc(1, sizeof(struct tsctl_table));
}

void tsctl_table_free(struct tsctl_table *t) {
        if (!t)
                return;
        for (size_t i = 0; i < t->n; i++) {
                free(t->rows[i].key);
                free(t->rows[i].value);
        }
        free(t->rows);
        free(t);
}

/* Takes ownership of value; NULL means it could not be made. */
static void table_add_row(struct tsctl_table *t, const char *key, char *value) {
        _cleanup_free_ char *k = NULL, *v = value;

        if (v && t->n == t->allocated) {
                size_t m = t->allocated ? 2 * t->allocated : 16;
                struct tsctl_row *rows = reallocarray(t->rows, m, sizeof(*rows));

                if (!rows) {
                        t->oom = true;
                        return;
                }
                t->rows = rows;
                t->allocated = m;
        }
        k = v ? strdup(key) : NULL;
        if (!k) {
                t->oom = true;
                return;
        }
        t->rows[t->n++] = (struct tsctl_row){TAKE_PTR(k), TAKE_PTR(v)};
}

void tsctl_table_add(struct tsctl_table *t, const char *key, const char *format, ...) {
        char *value;
        va_list ap;
        int r;

        va_start(ap, format);
        r = vasprintf(&value, format, ap);
        va_end(ap);
        table_add_row(t, key, r < 0 ? NULL : value); /* vasprintf leaves value undefined on failure */
}

void tsctl_table_add_text(struct tsctl_table *t, const char *key, const char *s, size_t len) {
        _cleanup_free_ char *e = tsctl_escape(s, len);
        char *value;

        if (!e || asprintf(&value, "\"%s\"", e) < 0)
                value = NULL;
        table_add_row(t, key, value);
}

int tsctl_table_print(const struct tsctl_table *t, FILE *f) {
        size_t width = 0;

        if (t->oom)
                return log_oom();
        for (size_t i = 0; i < t->n; i++)
                width = MAX(width, strlen(t->rows[i].key));
        for (size_t i = 0; i < t->n; i++)
                fprintf(f, "%-*s  %s\n", (int)width, t->rows[i].key, t->rows[i].value);
        return 0;
}

/* Length of the UTF-8 sequence at s (up to `len` bytes) and its code
 * point; 0 when it is not valid (truncated, overlong, surrogate, above
 * U+10FFFF). RFC 3629 table 3. */
static size_t utf8_char(const unsigned char *s, size_t len, uint32_t *cp) {
        size_t n;
        uint32_t c, min;

        if (s[0] < 0x80) {
                *cp = s[0];
                return 1;
        }
        if (s[0] >= 0xc2 && s[0] <= 0xdf)
                n = 2, c = s[0] & 0x1f, min = 0x80;
        else if (s[0] >= 0xe0 && s[0] <= 0xef)
                n = 3, c = s[0] & 0x0f, min = 0x800;
        else if (s[0] >= 0xf0 && s[0] <= 0xf4)
                n = 4, c = s[0] & 0x07, min = 0x10000;
        else
                return 0;
        if (len < n)
                return 0;
        for (size_t i = 1; i < n; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                c = c << 6 | (s[i] & 0x3f);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
                return 0;
        *cp = c;
        return n;
}

bool tsctl_utf8_valid(const char *s, size_t len) {
        const unsigned char *p = (const unsigned char *)s;
        uint32_t cp;

        for (size_t i = 0; i < len;) {
                size_t n = utf8_char(p + i, len - i, &cp);

                if (n == 0 || cp == 0)
                        return false;
                i += n;
        }
        return true;
}

char *tsctl_escape(const char *s, size_t len) {
        const unsigned char *p = (const unsigned char *)s;
        char *out, *o;

        /* Worst case every byte becomes \xNN. */
        out = malloc(4 * len + 1);
        if (!out)
                return NULL;
        o = out;
        for (size_t i = 0; i < len;) {
                uint32_t cp = 0;
                size_t n = utf8_char(p + i, len - i, &cp);

                if (n == 0 || cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f)) {
                        /* Escape the sequence byte by byte (or the one bad byte). */
                        size_t m = n ? n : 1;

                        for (size_t j = 0; j < m; j++)
                                o += sprintf(o, "\\x%02x", p[i + j]);
                        i += m;
                        continue;
                }
                memcpy(o, p + i, n);
                o += n;
                i += n;
        }
        *o = '\0';
        return out;
}

void tsctl_hexdump_excerpt(FILE *f, const uint8_t *buf, size_t len, size_t mark, unsigned context,
                           const char *indent) {
        size_t row, first, last;

        if (len == 0)
                return;
        if (mark >= len) {
                fprintf(f, "%s(offset %zu is past the end of the %zu bytes)\n", indent, mark, len);
                mark = len - 1;
        }
        row = mark / 16;
        first = row > context ? row - context : 0;
        last = MIN(row + context, (len - 1) / 16);

        for (size_t r = first; r <= last; r++) {
                size_t start = r * 16, end = MIN(start + 16, len);

                fprintf(f, "%s%08zx ", indent, start);
                for (size_t i = start; i < start + 16; i++) {
                        if (i % 16 == 8)
                                fputc(' ', f);
                        if (i < end)
                                fprintf(f, " %02x", buf[i]);
                        else
                                fputs("   ", f);
                }
                fputs("  |", f);
                for (size_t i = start; i < end; i++)
                        fputc(buf[i] >= 0x20 && buf[i] < 0x7f ? buf[i] : '.', f);
                fputs("|\n", f);

                if (r == row) {
                        /* 8 offset digits, 1 space, then " xx" per byte and one
                         * extra space in the middle. */
                        size_t col = mark % 16;
                        size_t pad = 8 + 1 + 3 * col + (col >= 8 ? 1 : 0) + 1;

                        fprintf(f, "%s%*s^^\n", indent, (int)pad, "");
                }
        }
}

int tsctl_json_print(json_t *v) {
        if (json_dumpf(v, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0)
                return log_error_errno(-EIO, "Failed to write JSON output.");
        fputc('\n', stdout);
        return 0;
}

/* ---- fields of the roles' JSON answers -------------------------------------- */

void tsctl_format_usec(json_t *v, char *buf, size_t size) {
        json_int_t usec = json_integer_value(v);
        time_t t = (time_t)(usec / 1000000);
        struct tm tm;

        if (usec <= 0 || !gmtime_r(&t, &tm) || strftime(buf, size, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
                snprintf(buf, size, "-");
}

char *tsctl_text_field(json_t *o, const char *key) {
        const char *s = json_string_value(json_object_get(o, key));

        if (!s || !*s)
                s = "-";
        return tsctl_escape(s, strlen(s));
}

/* ---- calls to an agent role over its UNIX socket --------------------------- */

const char *tsctl_socket_path(const char *arg, const char *env, const char *fallback) {
        const char *e;

        if (arg)
                return arg;
        e = getenv(env);
        return e && *e ? e : fallback;
}

int tsctl_role_call(const struct tsctl_role *role, const char *socket, const char *method, const char *path,
                    json_t *in, json_t **ret_reply) {
        _cleanup_(tsf_api_client_freep) struct tsf_api_client *c = NULL;
        _cleanup_(json_decrefp) json_t *reply = NULL;
        struct tsf_api_client_config config = {.unix_path = socket};
        _cleanup_free_ char *url = NULL;
        long status = 0;
        int r;

        r = tsf_api_client_new(&config, &c);
        if (r < 0)
                return log_error_errno(r, "Failed to set up an API client: %m");
        if (asprintf(&url, "http://localhost%s", path) < 0)
                return log_oom();
        r = tsf_api_client_call(c, method, url, in, &status, &reply);
        if (r == -EBADMSG || r == -EFBIG) {
                /* Reached, but the answer is unusable: not a socket problem. */
                log_error("%s at %s gave an unusable answer to %s %s: %s", role->what, socket, method, path,
                          tsf_api_client_error(c));
                return TSCTL_EXIT_NEGATIVE;
        }
        if (r < 0) {
                /* The errno, not libcurl's text: that names "localhost port
                 * 80", the URL's placeholder host, not the socket. */
                log_error("cannot reach %s at %s: %s (is tsagent running with the %s role? see %s)",
                          role->what, socket, strerror(-r), role->role, role->option);
                log_debug("API client: %s", tsf_api_client_error(c));
                return TSCTL_EXIT_NEGATIVE;
        }
        if (status < 200 || status > 299) {
                const char *reason = json_string_value(json_object_get(reply, "reason"));
                /* Escaped: the reason can quote what we sent (a node name). */
                _cleanup_free_ char *text = reason ? tsctl_escape(reason, strlen(reason)) : NULL;

                if (text)
                        log_error("%s", text);
                else
                        log_error("%s answered %s %s with HTTP status %ld", role->what, method, path,
                                  status);
                return TSCTL_EXIT_NEGATIVE;
        }
        if (!json_is_object(reply)) {
                log_error("%s's answer to %s %s is not a JSON object", role->what, method, path);
                return TSCTL_EXIT_NEGATIVE;
        }
        *ret_reply = TAKE_PTR(reply);
        return 0;
}
