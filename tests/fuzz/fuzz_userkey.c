/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libFuzzer target for the user-key rules. Invariants:
 *   - parsing never crashes and never reads past `len` (the input is parsed
 *     from a heap copy of exactly its bytes);
 *   - a parsed key is folded: parsing its folded form gives the same key;
 *   - the parts put together again are the folded input;
 *   - every key matches itself, every domain itself, and domain matching
 *     is symmetric;
 *   - tsf_userkey_parse_cookie() accepts everything tsf_userkey_parse()
 *     does, with the same result;
 *   - a cookie that is not 9 bytes long matches only its own user part.
 * The input is also split in two (at a position its first byte picks) to
 * match one half against the other.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tsfarm/macro.h"
#include "tsfarm/userkey.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                  \
        do {                                                                                         \
                if (!(cond)) {                                                                       \
                        fprintf(stderr, "fuzz_userkey: invariant violated at %s:%d: %s\n", __FILE__, \
                                __LINE__, #cond);                                                    \
                        abort();                                                                     \
                }                                                                                    \
        } while (0)

static int parse_copy(const uint8_t *data, size_t len, bool cookie, struct tsf_userkey *k) {
        char *copy = malloc(len > 0 ? len : 1);
        int r;

        CHECK(copy);
        if (len > 0)
                memcpy(copy, data, len);
        r = cookie ? tsf_userkey_parse_cookie(copy, len, k) : tsf_userkey_parse(copy, len, k);
        free(copy);
        return r;
}

static void check_key(const struct tsf_userkey *k, size_t len, bool cookie) {
        struct tsf_userkey again;
        size_t nu = strlen(k->user), nd = strlen(k->domain);

        CHECK(k->folded_len == len && strlen(k->folded) == len);
        for (size_t i = 0; i < len; i++)
                CHECK(!(k->folded[i] >= 'A' && k->folded[i] <= 'Z'));
        CHECK(tsf_userkey_index(k) == k->user);
        CHECK(tsf_userkey_maybe_truncated(k) == (len == TSF_USERKEY_TRUNCATED_LEN));

        /* The parts are the folded input, split at its separator. */
        switch (k->form) {
        case TSF_USERKEY_PLAIN:
                CHECK(nd == 0 && strcmp(k->user, k->folded) == 0);
                CHECK(!strchr(k->folded, '\\') && !strchr(k->folded, '@'));
                CHECK(nu > 0);
                break;
        case TSF_USERKEY_DOWNLEVEL:
                CHECK(nd + 1 + nu == len && memcmp(k->folded, k->domain, nd) == 0 && k->folded[nd] == '\\' &&
                      strcmp(k->folded + nd + 1, k->user) == 0);
                CHECK(nd > 0 && (nu > 0 || (cookie && len == TSF_USERKEY_TRUNCATED_LEN)));
                CHECK(!strchr(k->user, '\\'));
                break;
        case TSF_USERKEY_UPN:
                CHECK(nu + 1 + nd == len && memcmp(k->folded, k->user, nu) == 0 && k->folded[nu] == '@' &&
                      strcmp(k->folded + nu + 1, k->domain) == 0);
                CHECK(nu > 0 && (nd > 0 || (cookie && len == TSF_USERKEY_TRUNCATED_LEN)));
                CHECK(!strchr(k->domain, '@') && !strchr(k->folded, '\\'));
                break;
        default:
                CHECK(!"unknown form");
        }

        /* Idempotent: the folded form is its own key. */
        CHECK((cookie ? tsf_userkey_parse_cookie(k->folded, k->folded_len, &again)
                      : tsf_userkey_parse(k->folded, k->folded_len, &again)) == 0);
        CHECK(memcmp(k, &again, sizeof(again)) == 0);

        CHECK(tsf_userkey_match(k, k));
        CHECK(tsf_userkey_domain_match(k->domain, k->domain));
}

static void check_one(const uint8_t *data, size_t len) {
        struct tsf_userkey k, c;
        int r = parse_copy(data, len, false, &k), rc = parse_copy(data, len, true, &c);

        CHECK(r == 0 || r == -EINVAL || r == -ENAMETOOLONG);
        CHECK(rc == 0 || rc == -EINVAL || rc == -ENAMETOOLONG);
        CHECK((r == -ENAMETOOLONG) == (len > TSF_USERKEY_INPUT_MAX));
        CHECK((rc == -ENAMETOOLONG) == (len > TSF_USERKEY_INPUT_MAX));
        if (r == 0) {
                check_key(&k, len, false);
                CHECK(rc == 0 && memcmp(&k, &c, sizeof(c)) == 0);
        }
        if (rc == 0) {
                check_key(&c, len, true);
                /* Only a 9-byte cookie gets the leniency. */
                CHECK(r == 0 || len == TSF_USERKEY_TRUNCATED_LEN);
        }
}

static void check_pair(const uint8_t *a, size_t na, const uint8_t *b, size_t nb) {
        struct tsf_userkey cookie, full;

        if (parse_copy(a, na, true, &cookie) < 0 || parse_copy(b, nb, false, &full) < 0)
                return;
        CHECK(tsf_userkey_domain_match(cookie.domain, full.domain) ==
              tsf_userkey_domain_match(full.domain, cookie.domain));
        if (tsf_userkey_match(&cookie, &full) && !tsf_userkey_maybe_truncated(&cookie))
                CHECK(strcmp(cookie.user, full.user) == 0);
        if (strcmp(cookie.user, full.user) == 0 && strcmp(cookie.domain, full.domain) == 0)
                CHECK(tsf_userkey_match(&cookie, &full));
        /* A cut cookie that is a prefix of the full plain user name. */
        if (tsf_userkey_maybe_truncated(&cookie) &&
            strncmp(full.user, cookie.folded, cookie.folded_len) == 0)
                CHECK(tsf_userkey_match(&cookie, &full));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        size_t split;

        check_one(data, size);
        if (size < 1)
                return 0;
        split = 1 + data[0] % size;
        check_one(data + 1, split - 1);
        check_one(data + split, size - split);
        check_pair(data + 1, split - 1, data + split, size - split);
        check_pair(data + split, size - split, data + 1, split - 1);
        return 0;
}
