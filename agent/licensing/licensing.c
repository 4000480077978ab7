/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>
#include <systemd/sd-event.h>

#include "agent/licensing/licensing.h"
#include "agent/licensing/peers.h"
#include "agent/licensing/store.h"
#include "agent/service.h"
#include "tsfarm/api.h"
#include "tsfarm/cleanup.h"
#include "tsfarm/clock.h"
#include "tsfarm/fs.h"
#include "tsfarm/hex.h"
#include "tsfarm/lictoken.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"

#define LICENSING_EXPIRE_INTERVAL USEC_PER_MINUTE
#define TOKEN_ID_HEX (2 * LIC_TOKEN_ID_SIZE)

_Static_assert(LIC_TOKEN_ID_SIZE == TSF_LIC_TOKEN_ID_SIZE, "the store's and the token's ids differ");
_Static_assert(LIC_PACK_ID_MAX == TSF_LIC_PACK_ID_MAX, "pack id limits differ");
_Static_assert(LIC_PRODUCT_VERSION_MAX == TSF_LIC_PRODUCT_VERSION_MAX, "product version limits differ");

/* Pack totals for /metrics, read again after anything changed them. */
struct counts {
        bool valid;
        uint64_t packs, count, available, issued;
};

struct licensing {
        struct manager *manager;
        struct lic_store *store;
        struct tsf_lic_key *key;
        char key_id[2 * TSF_LIC_KEY_ID_SIZE + 1];
        struct tsf_api_server *api;
        sd_event_source *expire_timer;
        struct counts counts;
        struct lic_peers *peers; /* other license servers: borrowing and lending */

        /* Counters since start, for /metrics. */
        uint64_t n_temporary, n_cal, n_renewed, n_revoked, n_no_inventory, n_borrowed, n_lent;
};

/* "n1" for a node over TLS, "uid 0" for the local socket: for the log. */
static const char *peer_name(const struct tsf_api_peer *peer, char *buf, size_t size) {
        if (peer->transport == TSF_API_TRANSPORT_TLS)
                snprintf(buf, size, "node %s", peer->node);
        else
                snprintf(buf, size, "uid %u on the local socket", (unsigned)peer->uid);
        return buf;
}

/* Pack ids and product versions: the store's and the token format's rule. */
static bool valid_ident(const char *s, size_t max) {
        size_t n = strlen(s);

        if (n == 0 || n > max)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = s[i];

                if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '-' || c == '_'))
                        return false;
        }
        return true;
}

/* ---- request fields --------------------------------------------------------- */

/* Hex text of min..max bytes: digits and letters a-f/A-F only, two per byte
 * (no separators, no "0x": ids have exactly one spelling on the wire). */
static int parse_hex(const char *s, size_t min, size_t max, uint8_t *buf, size_t *ret_len) {
        ssize_t n = tsf_hex_decode_strict(s, buf, min, max);

        if (n < 0)
                return (int)n;
        *ret_len = (size_t)n;
        return 0;
}

static int field_hex(json_t *body, const char *key, size_t min, size_t max, uint8_t *buf, size_t *ret_len,
                     json_t **ret_reply) {
        const char *s;
        int r;

        r = tsf_api_field_string(body, key, true, 0, 2 * max, &s, ret_reply);
        if (r != 0)
                return r;
        if (parse_hex(s, min, max, buf, ret_len) < 0) {
                if (min == max)
                        *ret_reply = tsf_api_error("invalid-request", "'%s' must be %zu hex digits", key,
                                                   2 * min);
                else
                        *ret_reply = tsf_api_error("invalid-request",
                                                   "'%s' must be %zu to %zu hex digits (%zu to %zu bytes)",
                                                   key, 2 * min, 2 * max, min, max);
                return 400;
        }
        return 0;
}

static int field_token_id(json_t *body, const char *key, uint8_t id[static LIC_TOKEN_ID_SIZE],
                          json_t **ret_reply) {
        size_t n;

        return field_hex(body, key, LIC_TOKEN_ID_SIZE, LIC_TOKEN_ID_SIZE, id, &n, ret_reply);
}

/* An optional product version: absent or "" means any. */
static int field_version(json_t *body, const char *key, const char **ret, json_t **ret_reply) {
        int r;

        r = tsf_api_field_string(body, key, false, 0, LIC_PRODUCT_VERSION_MAX, ret, ret_reply);
        if (r != 0)
                return r;
        if (*ret && **ret && !valid_ident(*ret, LIC_PRODUCT_VERSION_MAX)) {
                *ret_reply = tsf_api_error("invalid-request",
                                           "'%s' may hold only letters, digits, '.', '-' and '_'", key);
                return 400;
        }
        return 0;
}

static int require_body(json_t *body, json_t **ret_reply) {
        if (json_is_object(body))
                return 0;
        *ret_reply = tsf_api_error("invalid-request", "the request needs a JSON object as its body");
        return 400;
}

/* The device a request is about: hardware id, device name, user name. */
struct device_fields {
        uint8_t hardware_id[LIC_HARDWARE_ID_MAX];
        struct lic_device dev;
};

static int field_device(json_t *body, bool user_required, struct device_fields *d, json_t **ret_reply) {
        int r;

        *d = (struct device_fields){};
        d->dev.hardware_id = d->hardware_id;
        if ((r = field_hex(body, "hardware_id", LIC_HARDWARE_ID_MIN, LIC_HARDWARE_ID_MAX, d->hardware_id,
                           &d->dev.hardware_id_len, ret_reply)) ||
            (r = tsf_api_field_string(body, "device_name", true, 1, LIC_DEVICE_NAME_MAX, &d->dev.device_name,
                                      ret_reply)) ||
            (r = tsf_api_field_string(body, "user_name", user_required, 0, LIC_USER_NAME_MAX,
                                      &d->dev.user_name, ret_reply)))
                return r;
        return 0;
}

/* ---- answers ---------------------------------------------------------------- */

/* Maps a store refusal to a 4xx answer; anything else is the caller's
 * failure (a 500), logged here once since the API server logs it at debug
 * level only. */
static int store_refusal(int r, const char *reason, const char *what, json_t **ret_reply) {
        static const struct {
                int error;
                int status;
                const char *code;
                const char *reason;
        } table[] = {
                {-EINVAL, 400, "invalid-request", "invalid arguments"},
                {-ENOENT, 404, "unknown-token", "unknown token"},
                {-EPERM, 403, "other-device", "the token was issued to another device"},
                {-EMEDIUMTYPE, 409, "wrong-kind", "the wrong kind of token for this request"},
                {-EACCES, 409, "not-validated", "the temporary token has not been validated by a logon yet"},
                {-EKEYEXPIRED, 409, "expired", "the token has expired (or was renewed)"},
                {-EKEYREVOKED, 409, "revoked", "the token was revoked"},
                {-ENOSPC, 409, "no-inventory", "no key pack has a CAL available"},
                {-EAGAIN, 409, "too-early", "renewal only when 7 days or fewer remain"},
                {-EDQUOT, 409, "revocation-limit", "20% of the pack's CALs revoked in the last 60 days"},
                {-EALREADY, 409, "not-active", "the CAL is not active"},
                {-EEXIST, 409, "exists", "it exists already"},
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (table[i].error == r) {
                        *ret_reply = tsf_api_error(table[i].code, "%s", reason ? reason : table[i].reason);
                        return table[i].status;
                }
        return log_warning_errno(r, "Failed to %s in the license store: %m", what);
}

static json_t *json_hex(const uint8_t *b, size_t n) {
        char hex[2 * LIC_HARDWARE_ID_MAX + 1];

        if (n > LIC_HARDWARE_ID_MAX)
                return NULL;
        tsf_hex_encode(b, n, hex);
        return json_string(hex);
}

/* The token text for a committed record: signed exactly as the record says,
 * bound to the record's hardware id. */
static int sign_record(struct licensing *l, const struct lic_token *rec, char **ret) {
        struct tsf_lic_token t = {
                .version = TSF_LIC_TOKEN_VERSION,
                .kind = rec->kind == LIC_KIND_CAL ? TSF_LIC_CAL : TSF_LIC_TEMPORARY,
                .issued = rec->issued,
                .expires = rec->expires,
        };
        int r;

        memcpy(t.token_id, rec->token_id, sizeof(t.token_id));
        r = tsf_lic_hardware_hash(rec->hardware_id, rec->hardware_id_len, t.device_hash);
        if (r < 0)
                return r;
        snprintf(t.pack_id, sizeof(t.pack_id), "%s", rec->pack_id);
        snprintf(t.product_version, sizeof(t.product_version), "%s", rec->product_version);
        return tsf_lic_token_sign(&t, l->key, ret);
}

/* {token, token_id, kind, state, pack, product_version, issued_usec,
 * expires_usec[, renewed_from]}: what a terminal server hands the device. */
static int token_answer(struct licensing *l, const struct lic_token *rec, json_t **ret_reply) {
        _cleanup_free_ char *text = NULL;
        json_t *reply;
        int r;

        r = sign_record(l, rec, &text);
        if (r < 0)
                return log_error_errno(r, "Failed to sign a license token: %m");
        reply = json_pack("{s:s, s:o, s:s, s:s, s:o, s:s, s:I, s:I}", "token", text, "token_id",
                          json_hex(rec->token_id, sizeof(rec->token_id)), "kind",
                          lic_kind_to_string(rec->kind), "state", lic_state_to_string(rec->state), "pack",
                          rec->pack_id[0] ? json_string(rec->pack_id) : json_null(), "product_version",
                          rec->product_version, "issued_usec", (json_int_t)rec->issued, "expires_usec",
                          (json_int_t)rec->expires);
        if (!reply)
                return -ENOMEM;
        if (rec->renewed &&
            json_object_set_new(reply, "renewed_from",
                                json_hex(rec->renewed_from, sizeof(rec->renewed_from))) < 0) {
                json_decref(reply);
                return -ENOMEM;
        }
        *ret_reply = reply;
        return 200;
}

/* After any write: every write may also have expired CALs back into the
 * pools (the store expires what is due first). */
static void changed(struct licensing *l) {
        l->counts.valid = false;
}

/* ---- routes for terminal servers (mutual TLS) and the socket -------------- */

static int on_temporary(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer,
                        json_t **ret_reply, void *userdata) {
        struct licensing *l = userdata;
        struct device_fields d;
        struct lic_token rec;
        const char *version;
        char who[TSF_API_NODE_MAX + 64], id[TOKEN_ID_HEX + 1];
        int r;

        if ((r = require_body(body, ret_reply)) || (r = field_device(body, false, &d, ret_reply)) ||
            (r = field_version(body, "product_version", &version, ret_reply)))
                return r;
        r = lic_temporary_issue(l->store, &d.dev, version, NULL, &rec);
        if (r < 0)
                return store_refusal(r, NULL, "issue a temporary token", ret_reply);
        changed(l);
        if (r == 0) {
                l->n_temporary++;
                tsf_hex_encode(rec.token_id, sizeof(rec.token_id), id);
                log_debug("Temporary token %s issued (asked by %s).", id, peer_name(peer, who, sizeof(who)));
        }
        return token_answer(l, &rec, ret_reply);
}

static int on_validate(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer,
                       json_t **ret_reply, void *userdata) {
        struct licensing *l = userdata;
        uint8_t token_id[LIC_TOKEN_ID_SIZE], hwid[LIC_HARDWARE_ID_MAX];
        const char *reason = NULL, *user;
        size_t hwid_len;
        int r;

        if ((r = require_body(body, ret_reply)) ||
            (r = field_token_id(body, "token_id", token_id, ret_reply)) ||
            (r = field_hex(body, "hardware_id", LIC_HARDWARE_ID_MIN, LIC_HARDWARE_ID_MAX, hwid, &hwid_len,
                           ret_reply)) ||
            (r = tsf_api_field_string(body, "user_name", false, 0, LIC_USER_NAME_MAX, &user, ret_reply)))
                return r;
        r = lic_temporary_validate_user(l->store, token_id, hwid, hwid_len, user, &reason);
        if (r < 0)
                return store_refusal(r, reason, "validate a temporary token", ret_reply);
        changed(l);
        *ret_reply = json_pack("{s:o, s:s, s:b}", "token_id", json_hex(token_id, sizeof(token_id)), "state",
                               lic_state_to_string(LIC_STATE_TEMPORARY_VALIDATED), "already", r > 0);
        return *ret_reply ? 200 : -ENOMEM;
}

/* The usual refusal when neither we nor a peer have a CAL. */
static int no_inventory(struct licensing *l, const char *version, json_t **ret_reply) {
        l->n_no_inventory++;
        *ret_reply = tsf_api_error(
                "no-inventory",
                "no key pack%s%s has a Device CAL available; the device keeps its temporary "
                "token",
                version && *version ? " of product version " : "", version && *version ? version : "");
        return *ret_reply ? 409 : -ENOMEM;
}

/* A CAL request waiting for a peer to lend one. */
struct pending_borrow {
        struct licensing *l;
        struct tsf_api_request *req;
        struct lic_borrow *borrow;
        char version[LIC_PRODUCT_VERSION_MAX + 1];
        char device[LIC_DEVICE_NAME_MAX + 1];
        char user[LIC_USER_NAME_MAX + 1];
        char who[TSF_API_NODE_MAX + 64];
};

static void on_borrowed(int r, json_t *answer, const char *lender, const char *why, void *userdata) {
        struct pending_borrow *pb = userdata;
        struct licensing *l = pb->l;
        json_t *reply = NULL;
        int status;

        if (r < 0) {
                log_info("No Device CAL for %s (asked by %s): none here and none lent by a peer (%s).",
                         pb->device, pb->who, why);
                status = no_inventory(l, pb->version, &reply);
        } else {
                const char *id = json_string_value(json_object_get(answer, "token_id")),
                           *pack = json_string_value(json_object_get(answer, "pack"));
                uint8_t token_id[LIC_TOKEN_ID_SIZE];
                char detail[sizeof(pb->who) + 8];

                snprintf(detail, sizeof(detail), "for %s", pb->who);
                if (tsf_hex_decode(id, strlen(id), token_id, sizeof(token_id), NULL) !=
                    (ssize_t)sizeof(token_id))
                        r = -EBADMSG; /* peers.c checked it; cannot happen */
                else
                        r = lic_audit_borrow(l->store, token_id, pack, pb->device, pb->user, lender, detail);
                if (r < 0)
                        log_warning_errno(r,
                                          "Failed to audit the Device CAL %s borrowed from %s, relaying it "
                                          "anyway: %m",
                                          id, lender);
                l->n_borrowed++;
                log_info("Device CAL %s borrowed from %s (pack %s) for %s (asked by %s).", id, lender, pack,
                         pb->device, pb->who);
                reply = json_incref(answer);
                status = 200;
        }
        pb->borrow = NULL;
        if (!reply)
                status = 500;
        (void)tsf_api_request_resume(pb->req, status, reply);
        free(pb);
}

static void on_borrow_cancel(struct tsf_api_request *req, void *userdata) {
        struct pending_borrow *pb = userdata;

        lic_borrow_cancel(pb->borrow);
        free(pb);
}

/* No local pack has a CAL: ask the peers whose last inventory shows one
 * (peers.c), relaying the lender's signed answer with "lender" added.
 * -ENOSPC when no peer qualifies; else the request waits. Never called for
 * a lend request: a CAL we are asked to lend is ours or none (no loops). */
static int borrow_from_peer(struct licensing *l, struct tsf_api_request *req,
                            const struct tsf_api_peer *peer, const struct lic_device *dev,
                            const char *product_version) {
        _cleanup_(json_decrefp) json_t *request = NULL;
        _cleanup_free_ struct pending_borrow *pb = NULL;
        char hwid[2 * LIC_HARDWARE_ID_MAX + 1];
        usec_t deadline = 0;
        int r;

        if (!l->peers)
                return -ENOSPC;
        tsf_hex_encode(dev->hardware_id, dev->hardware_id_len, hwid);
        request = json_pack("{s:s, s:s, s:s}", "hardware_id", hwid, "device_name", dev->device_name,
                            "user_name", dev->user_name ?: "");
        pb = calloc(1, sizeof(*pb));
        if (!request || !pb)
                return -ENOMEM;
        if (product_version && *product_version &&
            json_object_set_new(request, "product_version", json_string(product_version)) < 0)
                return -ENOMEM;
        pb->l = l;
        pb->req = req;
        snprintf(pb->version, sizeof(pb->version), "%s", product_version ?: "");
        snprintf(pb->device, sizeof(pb->device), "%s", dev->device_name);
        snprintf(pb->user, sizeof(pb->user), "%s", dev->user_name ?: "");
        peer_name(peer, pb->who, sizeof(pb->who));
        r = lic_peers_borrow(l->peers, request, dev->hardware_id, dev->hardware_id_len, product_version,
                             on_borrowed, pb, &pb->borrow, &deadline);
        if (r < 0)
                return r;
        /* The borrow ends by itself within its deadline; the request's own
         * is a backstop. */
        r = tsf_api_request_suspend(req, deadline + USEC_PER_SEC, on_borrow_cancel, pb);
        if (r < 0) {
                lic_borrow_cancel(pb->borrow);
                return r;
        }
        TAKE_PTR(pb);
        return TSF_API_SUSPENDED;
}

static int on_cal(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer,
                  json_t **ret_reply, void *userdata) {
        struct licensing *l = userdata;
        uint8_t presented[LIC_TOKEN_ID_SIZE];
        struct device_fields d;
        struct lic_token rec;
        const char *version, *reason = NULL;
        char who[TSF_API_NODE_MAX + 64], id[TOKEN_ID_HEX + 1];
        int r;

        if ((r = require_body(body, ret_reply)) || (r = field_device(body, true, &d, ret_reply)) ||
            (r = field_token_id(body, "presented_token_id", presented, ret_reply)) ||
            (r = field_version(body, "product_version", &version, ret_reply)))
                return r;
        r = lic_cal_issue(l->store, &d.dev, version, presented, NULL, &rec, &reason);
        if (r == -ENOSPC) {
                r = borrow_from_peer(l, req, peer, &d.dev, version);
                if (r == -ENOSPC)
                        return no_inventory(l, version, ret_reply);
                return r;
        }
        if (r < 0)
                return store_refusal(r, reason, "issue a Device CAL", ret_reply);
        changed(l);
        if (r == 0) {
                bool renewal = rec.renewed && memcmp(rec.renewed_from, presented, sizeof(presented)) == 0;

                if (renewal)
                        l->n_renewed++;
                else
                        l->n_cal++;
                tsf_hex_encode(rec.token_id, sizeof(rec.token_id), id);
                log_info("Device CAL %s %s from pack %s (asked by %s).", id, renewal ? "renewed" : "issued",
                         rec.pack_id, peer_name(peer, who, sizeof(who)));
        }
        return token_answer(l, &rec, ret_reply);
}

/* POST /v1/licenses/lend: a peer license server relays a CAL request of
 * its own terminal server, having none itself. Only a known peer may ask
 * (its certificate's CN, see peers.h); we lend from our packs or answer
 * no-inventory, never asking further peers ourselves (no loops). */
static int on_lend(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer,
                   json_t **ret_reply, void *userdata) {
        struct licensing *l = userdata;
        struct device_fields d;
        struct lic_token rec;
        const char *version, *reason = NULL;
        char id[TOKEN_ID_HEX + 1];
        int r;

        if (peer->transport != TSF_API_TRANSPORT_TLS || !lic_peers_is_peer(l->peers, peer->node)) {
                *ret_reply = tsf_api_error(
                        "not-a-peer", "only a peer license server (configured or announced) may borrow");
                return 403;
        }
        if ((r = require_body(body, ret_reply)) || (r = field_device(body, true, &d, ret_reply)) ||
            (r = field_version(body, "product_version", &version, ret_reply)))
                return r;
        r = lic_cal_lend(l->store, &d.dev, version, peer->node, NULL, &rec, &reason);
        if (r == -ENOSPC) {
                *ret_reply =
                        tsf_api_error("no-inventory", "no key pack%s%s has a Device CAL available to lend",
                                      version && *version ? " of product version " : "",
                                      version && *version ? version : "");
                return 409;
        }
        if (r < 0)
                return store_refusal(r, reason, "lend a Device CAL", ret_reply);
        changed(l);
        if (r == 0) {
                l->n_lent++;
                tsf_hex_encode(rec.token_id, sizeof(rec.token_id), id);
                log_info("Device CAL %s lent from pack %s to peer license server %s.", id, rec.pack_id,
                         peer->node);
        }
        r = token_answer(l, &rec, ret_reply);
        if (r == 200 && rec.lent_to[0] &&
            json_object_set_new(*ret_reply, "lent_to", json_string(rec.lent_to)) < 0)
                return -ENOMEM;
        return r;
}

static int on_peers(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer,
                    json_t **ret_reply, void *userdata) {
        struct licensing *l = userdata;

        *ret_reply = l->peers ? lic_peers_to_json(l->peers) : json_pack("{s:[]}", "peers");
        return *ret_reply ? 200 : -ENOMEM;
}

struct inventory {
        json_t *packs;
};

static int inventory_pack(const struct lic_pack *p, void *userdata) {
        struct inventory *k = userdata;

        return json_array_append_new(k->packs,
                                     json_pack("{s:s, s:s, s:I, s:I}", "id", p->id, "product_version",
                                               p->product_version, "count", (json_int_t)p->count,
                                               "available", (json_int_t)p->available)) < 0
                       ? -ENOMEM
                       : 0;
}

static int on_inventory(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer,
                        json_t **ret_reply, void *userdata) {
        struct licensing *l = userdata;
        _cleanup_(json_decrefp) json_t *packs = json_array();
        struct inventory k = {.packs = packs};
        int r;

        if (!packs)
                return -ENOMEM;
        r = lic_packs_list(l->store, inventory_pack, &k);
        if (r < 0)
                return store_refusal(r, NULL, "list the packs", ret_reply);
        *ret_reply = json_pack("{s:s, s:s, s:O}", "server", l->manager->config->node_name, "key_id",
                               l->key_id, "packs", packs);
        return *ret_reply ? 200 : -ENOMEM;
}

/* ---- routes for operators (the UNIX socket only) -------------------------- */

static int on_pack_install(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer,
                           json_t **ret_reply, void *userdata) {
        struct licensing *l = userdata;
        const char *id, *version;
        struct lic_pack p;
        json_t *count;
        char when[TSF_TIMESTAMP_MAX];
        int r;

        if ((r = require_body(body, ret_reply)) ||
            (r = tsf_api_field_string(body, "id", true, 1, LIC_PACK_ID_MAX, &id, ret_reply)) ||
            (r = tsf_api_field_string(body, "product_version", true, 1, LIC_PRODUCT_VERSION_MAX, &version,
                                      ret_reply)))
                return r;
        if (!valid_ident(id, LIC_PACK_ID_MAX) || !valid_ident(version, LIC_PRODUCT_VERSION_MAX)) {
                *ret_reply = tsf_api_error("invalid-request",
                                           "'id' and 'product_version' may hold only letters, digits, '.', "
                                           "'-' and '_'");
                return 400;
        }
        count = json_object_get(body, "count");
        if (!json_is_integer(count) || json_integer_value(count) < 1 ||
            json_integer_value(count) > (json_int_t)LIC_PACK_COUNT_MAX) {
                *ret_reply = tsf_api_error("invalid-request", "'count' must be an integer in 1..%u",
                                           LIC_PACK_COUNT_MAX);
                return 400;
        }
        r = lic_pack_install(l->store, id, version, (uint32_t)json_integer_value(count));
        if (r == -EEXIST) {
                *ret_reply =
                        tsf_api_error("pack-exists", "a key pack with id '%s' is installed already", id);
                return 409;
        }
        if (r < 0)
                return store_refusal(r, NULL, "install a key pack", ret_reply);
        changed(l);
        log_info("Key pack %s installed: %" JSON_INTEGER_FORMAT " Device CALs for product version %s.", id,
                 json_integer_value(count), version);
        r = lic_pack_get(l->store, id, &p);
        if (r < 0)
                return store_refusal(r, NULL, "read the new key pack", ret_reply);
        *ret_reply = json_pack(
                "{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "id", p.id, "product_version",
                p.product_version, "installed", tsf_format_timestamp(p.installed, when, sizeof(when)),
                "installed_usec", (json_int_t)p.installed, "count", (json_int_t)p.count, "available",
                (json_int_t)p.available, "issued", (json_int_t)p.issued, "revoked", (json_int_t)p.revoked,
                "expired", (json_int_t)p.expired, "revocable", (json_int_t)p.revocable);
        return *ret_reply ? 200 : -ENOMEM;
}

/* The filter of GET /v1/issued and /v1/report: state=S[,S...], device=NAME
 * (exact), hardware_id=HEX, pack=ID. */
struct filter_args {
        struct lic_token_filter f;
        uint8_t hardware_id[LIC_HARDWARE_ID_MAX];
};

static int parse_filter(struct tsf_api_request *req, struct filter_args *a, json_t **ret_reply) {
        const char *states = tsf_api_request_query(req, "state"),
                   *device = tsf_api_request_query(req, "device"),
                   *hwid = tsf_api_request_query(req, "hardware_id"),
                   *pack = tsf_api_request_query(req, "pack");

        *a = (struct filter_args){};
        if (states) {
                for (const char *p = states;;) {
                        size_t n = strcspn(p, ",");
                        char name[32];
                        int st = -EINVAL;

                        if (n < sizeof(name)) {
                                memcpy(name, p, n);
                                name[n] = '\0';
                                st = lic_state_from_string(name);
                        }
                        if (st < 0) {
                                *ret_reply = tsf_api_error("invalid-request",
                                                           "'state' is a comma-separated list of temporary, "
                                                           "temporary-validated, active, revoked, expired");
                                return 400;
                        }
                        a->f.states |= 1u << st;
                        if (!p[n])
                                break;
                        p += n + 1;
                }
        }
        if (device) {
                if (!*device || strlen(device) > LIC_DEVICE_NAME_MAX) {
                        *ret_reply = tsf_api_error("invalid-request", "'device' must have 1 to %d bytes",
                                                   LIC_DEVICE_NAME_MAX);
                        return 400;
                }
                a->f.device_name = device;
        }
        if (hwid) {
                if (parse_hex(hwid, LIC_HARDWARE_ID_MIN, LIC_HARDWARE_ID_MAX, a->hardware_id,
                              &a->f.hardware_id_len) < 0) {
                        *ret_reply =
                                tsf_api_error("invalid-request", "'hardware_id' must be %d to %d hex digits",
                                              2 * LIC_HARDWARE_ID_MIN, 2 * LIC_HARDWARE_ID_MAX);
                        return 400;
                }
                a->f.hardware_id = a->hardware_id;
        }
        if (pack) {
                if (!valid_ident(pack, LIC_PACK_ID_MAX)) {
                        *ret_reply = tsf_api_error("invalid-request", "'pack' is not a key pack id");
                        return 400;
                }
                a->f.pack_id = pack;
        }
        return 0;
}

/* The store's report in `format`, as text (NUL-terminated). */
static int report_text(struct licensing *l, enum lic_format format, unsigned what,
                       const struct lic_token_filter *filter, char **ret, size_t *ret_size) {
        _cleanup_free_ char *buf = NULL;
        size_t size = 0;
        FILE *f;
        int r;

        f = open_memstream(&buf, &size);
        if (!f)
                return -ENOMEM;
        r = lic_report_write(l->store, f, format, what, filter);
        if (fclose(f) != 0 && r >= 0)
                r = -ENOMEM;
        if (r < 0)
                return r;
        *ret = TAKE_PTR(buf);
        *ret_size = size;
        return 0;
}

/* The JSON report (docs/licensing.md, "Queries and reports") as the answer. */
static int report_answer(struct licensing *l, unsigned what, const struct lic_token_filter *filter,
                         json_t **ret_reply) {
        _cleanup_free_ char *text = NULL;
        json_error_t error;
        size_t size;
        int r;

        r = report_text(l, LIC_FORMAT_JSON, what, filter, &text, &size);
        if (r < 0)
                return store_refusal(r, NULL, "write a report", ret_reply);
        *ret_reply = json_loadb(text, size, JSON_REJECT_DUPLICATES, &error);
        if (!*ret_reply)
                return log_error_errno(-EBADMSG, "The license store's JSON report does not parse: %s",
                                       error.text);
        return 200;
}

static int on_packs(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer,
                    json_t **ret_reply, void *userdata) {
        return report_answer(userdata, LIC_REPORT_PACKS, NULL, ret_reply);
}

static int on_issued(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer,
                     json_t **ret_reply, void *userdata) {
        struct filter_args a;
        int r;

        r = parse_filter(req, &a, ret_reply);
        if (r != 0)
                return r;
        return report_answer(userdata, LIC_REPORT_TOKENS, &a.f, ret_reply);
}

static int on_report(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer,
                     json_t **ret_reply, void *userdata) {
        static const char *const formats[_LIC_FORMAT_MAX] = {
                [LIC_FORMAT_TABLE] = "table",
                [LIC_FORMAT_CSV] = "csv",
                [LIC_FORMAT_JSON] = "json",
        };
        struct licensing *l = userdata;
        const char *name = tsf_api_request_query(req, "format");
        _cleanup_free_ char *text = NULL;
        enum lic_format format = LIC_FORMAT_TABLE;
        struct filter_args a;
        size_t size;
        int r;

        if (name) {
                for (format = 0; format < _LIC_FORMAT_MAX; format++)
                        if (strcmp(name, formats[format]) == 0)
                                break;
                if (format == _LIC_FORMAT_MAX) {
                        *ret_reply = tsf_api_error("invalid-request", "'format' is table, csv or json");
                        return 400;
                }
        }
        r = parse_filter(req, &a, ret_reply);
        if (r != 0)
                return r;
        if (format == LIC_FORMAT_JSON)
                return report_answer(l, LIC_REPORT_PACKS | LIC_REPORT_TOKENS, &a.f, ret_reply);
        /* The API answers JSON: text reports travel as one string. */
        r = report_text(l, format, LIC_REPORT_PACKS | LIC_REPORT_TOKENS, &a.f, &text, &size);
        if (r < 0)
                return store_refusal(r, NULL, "write a report", ret_reply);
        *ret_reply = json_pack("{s:s, s:s%}", "format", formats[format], "report", text, size);
        return *ret_reply ? 200 : -ENOMEM;
}

static int on_revoke(struct tsf_api_request *req, json_t *body, const struct tsf_api_peer *peer,
                     json_t **ret_reply, void *userdata) {
        struct licensing *l = userdata;
        uint8_t token_id[LIC_TOKEN_ID_SIZE];
        const char *reason = NULL;
        usec_t possible_at = 0;
        struct lic_token rec;
        struct lic_pack p;
        char id[TOKEN_ID_HEX + 1], when[TSF_TIMESTAMP_MAX];
        int r;

        if ((r = require_body(body, ret_reply)) ||
            (r = field_token_id(body, "token_id", token_id, ret_reply)))
                return r;
        r = lic_revoke(l->store, token_id, &possible_at, &reason);
        if (r == -EDQUOT) {
                json_t *reply;

                if (possible_at == USEC_INFINITY)
                        reply = tsf_api_error(
                                "revocation-limit",
                                "%s: revocation is not possible from this pack; the CAL lapses "
                                "by itself when it expires",
                                reason ? reason : "pack too small");
                else
                        reply = tsf_api_error("revocation-limit",
                                              "%s; the next revocation from this pack is "
                                              "possible at %s",
                                              reason ? reason : "revocation limit reached",
                                              tsf_format_timestamp(possible_at, when, sizeof(when)));
                if (!reply ||
                    json_object_set_new(reply, "possible_at_usec",
                                        possible_at == USEC_INFINITY
                                                ? json_null()
                                                : json_integer((json_int_t)possible_at)) < 0 ||
                    json_object_set_new(reply, "possible_at",
                                        possible_at == USEC_INFINITY ? json_null() : json_string(when)) <
                            0) {
                        json_decref(reply);
                        return -ENOMEM;
                }
                *ret_reply = reply;
                return 409;
        }
        if (r < 0)
                return store_refusal(r, reason, "revoke a Device CAL", ret_reply);
        changed(l);
        l->n_revoked++;
        tsf_hex_encode(token_id, sizeof(token_id), id);
        r = lic_token_get(l->store, token_id, &rec);
        if (r >= 0)
                r = lic_pack_get(l->store, rec.pack_id, &p);
        if (r < 0)
                return store_refusal(r, NULL, "read the revoked CAL", ret_reply);
        log_notice("Device CAL %s of pack %s revoked by uid %u; %" PRIu32 " of %" PRIu32 " now available.",
                   id, p.id, (unsigned)peer->uid, p.available, p.count);
        *ret_reply = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "token_id", id, "state",
                               lic_state_to_string(rec.state), "pack", p.id, "device_name", rec.device_name,
                               "available", (json_int_t)p.available, "count", (json_int_t)p.count,
                               "revocable", (json_int_t)p.revocable);
        return *ret_reply ? 200 : -ENOMEM;
}

static const struct tsf_api_route licensing_routes[] = {
        {"POST", "/v1/licenses/temporary", TSF_API_BODY, on_temporary},
        {"POST", "/v1/licenses/validate", TSF_API_BODY, on_validate},
        {"POST", "/v1/licenses/cal", TSF_API_BODY, on_cal},
        {"POST", "/v1/licenses/lend", TSF_API_BODY, on_lend},
        {"GET", "/v1/peers", TSF_API_LOCAL, on_peers},
        {"GET", "/v1/inventory", 0, on_inventory},
        {"POST", "/v1/packs", TSF_API_BODY | TSF_API_LOCAL, on_pack_install},
        {"GET", "/v1/packs", TSF_API_LOCAL, on_packs},
        {"GET", "/v1/issued", TSF_API_LOCAL, on_issued},
        {"GET", "/v1/report", TSF_API_LOCAL, on_report},
        {"POST", "/v1/revoke", TSF_API_BODY | TSF_API_LOCAL, on_revoke},
        {},
};

/* ---- metrics ---------------------------------------------------------------- */

static int count_pack(const struct lic_pack *p, void *userdata) {
        struct counts *k = userdata;

        k->packs++;
        k->count += p->count;
        k->available += p->available;
        k->issued += p->issued;
        return 0;
}

static const struct counts *licensing_counts(struct licensing *l) {
        struct counts k = {};

        if (l->counts.valid)
                return &l->counts;
        if (lic_packs_list(l->store, count_pack, &k) >= 0) {
                k.valid = true;
                l->counts = k;
        }
        return &l->counts;
}

static double metric_packs(void *userdata) {
        return (double)licensing_counts(userdata)->packs;
}
static double metric_installed(void *userdata) {
        return (double)licensing_counts(userdata)->count;
}
static double metric_available(void *userdata) {
        return (double)licensing_counts(userdata)->available;
}
static double metric_issued(void *userdata) {
        return (double)licensing_counts(userdata)->issued;
}
static double metric_n_temporary(void *userdata) {
        return (double)((struct licensing *)userdata)->n_temporary;
}
static double metric_n_cal(void *userdata) {
        return (double)((struct licensing *)userdata)->n_cal;
}
static double metric_n_renewed(void *userdata) {
        return (double)((struct licensing *)userdata)->n_renewed;
}
static double metric_n_revoked(void *userdata) {
        return (double)((struct licensing *)userdata)->n_revoked;
}
static double metric_n_no_inventory(void *userdata) {
        return (double)((struct licensing *)userdata)->n_no_inventory;
}
static double metric_n_borrowed(void *userdata) {
        return (double)((struct licensing *)userdata)->n_borrowed;
}
static double metric_n_lent(void *userdata) {
        return (double)((struct licensing *)userdata)->n_lent;
}
static double metric_peers_known(void *userdata) {
        return (double)lic_peers_known(((struct licensing *)userdata)->peers);
}
static double metric_peers_reachable(void *userdata) {
        return (double)lic_peers_reachable(((struct licensing *)userdata)->peers);
}

static const struct service_metric licensing_metrics[] = {
        {"tsfarm_licensing_packs_installed", "Key packs installed.", TSF_METRIC_GAUGE, metric_packs},
        {"tsfarm_licensing_cals_installed", "Device CALs in all installed key packs.", TSF_METRIC_GAUGE,
         metric_installed},
        {"tsfarm_licensing_cals_available", "Device CALs in the pools, available to issue.",
         TSF_METRIC_GAUGE, metric_available},
        {"tsfarm_licensing_cals_issued", "Device CALs issued and active.", TSF_METRIC_GAUGE, metric_issued},
        {"tsfarm_licensing_temporary_issued_total", "Temporary tokens issued since start.",
         TSF_METRIC_COUNTER, metric_n_temporary},
        {"tsfarm_licensing_cals_issued_total", "Device CALs issued since start (renewals not counted).",
         TSF_METRIC_COUNTER, metric_n_cal},
        {"tsfarm_licensing_cals_renewed_total", "Device CALs renewed since start.", TSF_METRIC_COUNTER,
         metric_n_renewed},
        {"tsfarm_licensing_cals_revoked_total", "Device CALs revoked since start.", TSF_METRIC_COUNTER,
         metric_n_revoked},
        {"tsfarm_licensing_no_inventory_total",
         "CAL requests refused since start: no pack had one available, here or at a peer.",
         TSF_METRIC_COUNTER, metric_n_no_inventory},
        {"tsfarm_licensing_cals_borrowed_total",
         "Device CALs borrowed from peer license servers since start.", TSF_METRIC_COUNTER,
         metric_n_borrowed},
        {"tsfarm_licensing_cals_lent_total", "Device CALs lent to peer license servers since start.",
         TSF_METRIC_COUNTER, metric_n_lent},
        {"tsfarm_licensing_peers_known", "Peer license servers known (configured or announced).",
         TSF_METRIC_GAUGE, metric_peers_known},
        {"tsfarm_licensing_peers_reachable", "Peer license servers whose last inventory call succeeded.",
         TSF_METRIC_GAUGE, metric_peers_reachable},
};

/* ---- the signing key -------------------------------------------------------- */

/* license-signing.key -> license-signing.pub; anything else: PATH.pub. */
static char *public_key_path(const char *private_path) {
        size_t n = strlen(private_path);
        char *p;

        if (n > 4 && strcmp(private_path + n - 4, ".key") == 0) {
                if (asprintf(&p, "%.*s.pub", (int)(n - 4), private_path) < 0)
                        return NULL;
        } else if (asprintf(&p, "%s.pub", private_path) < 0)
                return NULL;
        return p;
}

/* Writes the public key beside the private one if it is missing; one that
 * is there and names another key is left alone, with a warning. */
static void public_key_ensure(struct licensing *l, const char *path) {
        _cleanup_(tsf_lic_key_freep) struct tsf_lic_key *old = NULL;
        int r;

        r = tsf_lic_key_load_public(path, &old);
        if (r >= 0) {
                if (memcmp(tsf_lic_key_id(old), tsf_lic_key_id(l->key), TSF_LIC_KEY_ID_SIZE) != 0)
                        log_warning("%s is not the public key of the signing key (key id %s); not replacing "
                                    "it. Remove it and restart to have it written again.",
                                    path, l->key_id);
                return;
        }
        if (r != -ENOENT) {
                log_warning_errno(r, "Cannot read the public signing key %s, not replacing it: %m", path);
                return;
        }
        r = tsf_lic_key_write(l->key, NULL, path, false);
        if (r < 0)
                log_warning_errno(r, "Failed to write the public signing key %s, ignoring: %m", path);
        else
                log_info("Wrote the public signing key to %s.", path);
}

static int signing_key_setup(struct licensing *l, const char *path) {
        _cleanup_free_ char *pub = public_key_path(path);
        bool created = false;
        struct stat st;
        int r;

        if (!pub)
                return log_oom();
        r = tsf_lic_key_load_private(path, &l->key);
        if (r == -ENOENT) {
                r = tsf_mkdir_parent(path, 0700);
                if (r < 0)
                        return log_error_errno(r, "Failed to create the directory for %s: %m", path);
                r = tsf_lic_key_generate(&l->key);
                if (r < 0)
                        return log_error_errno(r, "Failed to generate a license signing key: %m");
                r = tsf_lic_key_write(l->key, path, NULL, false);
                if (r == -EEXIST) {
                        /* Someone else made one meanwhile: use theirs. */
                        l->key = tsf_lic_key_free(l->key);
                        r = tsf_lic_key_load_private(path, &l->key);
                } else if (r < 0)
                        return log_error_errno(r, "Failed to write the license signing key %s: %m", path);
                else
                        created = true;
        }
        if (r == -EKEYREJECTED || r == -EBADMSG)
                return log_error_errno(r, "%s is not an unencrypted Ed25519 private key (PKCS#8 PEM).",
                                       path);
        if (r < 0)
                return log_error_errno(r, "Failed to load the license signing key %s: %m", path);
        if (stat(path, &st) >= 0 && (st.st_mode & 0077))
                log_warning("%s is accessible to others (mode %04o): whoever reads it can sign licenses. "
                            "chmod 0600 it.",
                            path, (unsigned)(st.st_mode & 07777));

        tsf_hex_encode(tsf_lic_key_id(l->key), TSF_LIC_KEY_ID_SIZE, l->key_id);
        if (created)
                log_notice("Generated the license signing key %s (key id %s).", path, l->key_id);
        public_key_ensure(l, pub);
        log_info("License signing key %s, key id %s; terminal servers trust it through %s (copy it into "
                 "their "
                 "trusted-keys directory as NAME.pem).",
                 path, l->key_id, pub);
        return 0;
}

/* ---- the role --------------------------------------------------------------- */

static int on_expire(sd_event_source *s, uint64_t usec, void *userdata) {
        struct licensing *l = userdata;
        int r;

        r = lic_expire(l->store);
        if (r < 0)
                log_warning_errno(r, "Failed to expire lapsed licenses, retrying in a minute: %m");
        else if (r > 0) {
                log_info("%d license record(s) expired; their Device CALs returned to the pools.", r);
                changed(l);
        }
        r = sd_event_source_set_time_relative(s, LICENSING_EXPIRE_INTERVAL);
        if (r >= 0)
                r = sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        if (r < 0)
                return log_error_errno(r, "Failed to re-arm the license expiry timer: %m");
        return 0;
}

static int licensing_new(struct manager *m, void **ret) {
        struct licensing *l = calloc(1, sizeof(*l));

        if (!l)
                return log_oom();
        l->manager = m;
        *ret = l;
        return 0;
}

static int store_setup(struct licensing *l, const char *database) {
        char bad[LIC_PACK_ID_MAX + 1] = "";
        int r;

        r = tsf_mkdir_parent(database, 0700);
        if (r < 0)
                return log_error_errno(r, "Failed to create the directory for %s: %m", database);
        r = lic_store_open(database, &l->store);
        if (r == -EPROTONOSUPPORT)
                return log_error_errno(r, "%s was written by a newer tsfarm; refusing to touch it.",
                                       database);
        if (r == -EMEDIUMTYPE)
                return log_error_errno(r, "%s is not a license database.", database);
        if (r < 0)
                return log_error_errno(r, "Failed to open the license database %s: %m", database);
        r = lic_store_check(l->store, bad, sizeof(bad));
        if (r == -EUCLEAN)
                return log_error_errno(r,
                                       "%s: key pack '%s' breaks available + issued = count; refusing to "
                                       "issue licenses from it. Restore the database from a backup.",
                                       database, bad);
        if (r < 0)
                return log_error_errno(r, "Failed to check the license database %s: %m", database);
        r = lic_expire(l->store);
        if (r < 0)
                return log_error_errno(r, "Failed to expire lapsed licenses in %s: %m", database);
        return 0;
}

static int licensing_start(void *userdata) {
        struct licensing *l = userdata;
        const struct licensing_config *lc = &l->manager->config->licensing;
        const struct service_config *c = &lc->service;
        const struct service_spec spec = {
                .section = "licensing",
                .unreachable = "terminal servers cannot reach this license server",
                .routes = licensing_routes,
                .metrics = licensing_metrics,
                .n_metrics = ELEMENTSOF(licensing_metrics),
                .userdata = l,
        };
        char endpoints[PATH_MAX + 64];
        int r;

        r = store_setup(l, c->database);
        if (r < 0)
                return r;
        r = signing_key_setup(l, lc->signing_key);
        if (r < 0)
                return r;
        r = service_api_start(l->manager->event, c, &spec, &l->api);
        if (r < 0)
                return r;

        r = sd_event_add_time_relative(l->manager->event, &l->expire_timer, CLOCK_MONOTONIC,
                                       LICENSING_EXPIRE_INTERVAL, 0, on_expire, l);
        if (r < 0)
                return log_error_errno(r, "Failed to set up the license expiry timer: %m");

        {
                const struct lic_peers_setup ps = {
                        .event = l->manager->event,
                        .config = lc,
                        .node_name = l->manager->config->node_name,
                        .key_id = tsf_lic_key_id(l->key),
                        .port = c->certificate ? tsf_api_server_port(l->api) : 0,
                };

                r = lic_peers_new(&ps, &l->peers);
                if (r < 0)
                        return log_error_errno(r, "Failed to set up the peer license servers: %m");
                r = lic_peers_start(l->peers);
                if (r < 0)
                        return r;
        }

        service_endpoints(c, l->api, endpoints, sizeof(endpoints));
        log_info("License server serving %s on %s.", c->database, endpoints);
        return 0;
}

static bool strv_equal(char *const *a, char *const *b) {
        for (; a && *a && b && *b; a++, b++)
                if (strcmp(*a, *b) != 0)
                        return false;
        return !(a && *a) && !(b && *b);
}

static bool peers_config_changed(const struct licensing_config *a, const struct licensing_config *b) {
        return !strv_equal(a->peers, b->peers) || a->discover_peers != b->discover_peers ||
               a->announce != b->announce || !streq_ptr(a->announce_endpoint, b->announce_endpoint) ||
               a->announce_interval != b->announce_interval || !streq_ptr(a->site, b->site) ||
               memcmp(&a->discovery_group, &b->discovery_group, sizeof(a->discovery_group)) != 0 ||
               !streq_ptr(a->discovery_interface, b->discovery_interface) ||
               a->peer_timeout != b->peer_timeout || a->inventory_refresh != b->inventory_refresh;
}

static int licensing_reload(void *userdata, const struct tsagent_config *c) {
        struct licensing *l = userdata;
        const struct licensing_config *old = &l->manager->config->licensing;
        const struct licensing_config *new = &c->licensing;

        if (service_config_changed(&old->service, &new->service) ||
            !streq_ptr(old->signing_key, new->signing_key) || peers_config_changed(old, new))
                log_warning("[licensing] settings change only on restart, ignoring the new values.");
        return 0;
}

static void licensing_free(void *userdata) {
        struct licensing *l = userdata;

        if (!l)
                return;
        sd_event_source_disable_unref(l->expire_timer);
        /* The server first: its suspended requests cancel their borrows. */
        tsf_api_server_free(l->api);
        lic_peers_free(l->peers);
        tsf_lic_key_free(l->key);
        lic_store_close(l->store);
        free(l);
}

const struct tsagent_role_ops licensing_role_ops = {
        .name = "licensing",
        .new = licensing_new,
        .start = licensing_start,
        .reload = licensing_reload,
        .free = licensing_free,
};
