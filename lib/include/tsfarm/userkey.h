/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * User-key normalization: how a user identifier from an mstshash cookie is
 * matched to the user name a session host reported. The rules are written
 * down in docs/userkey.md; this header is their one implementation.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* Longest identifier accepted (bytes, whole "DOMAIN\user" or "user@domain"). */
#define TSF_USERKEY_INPUT_MAX 256
/* Windows clients cut the cookie to this many characters. */
#define TSF_USERKEY_TRUNCATED_LEN 9

enum tsf_userkey_form {
        TSF_USERKEY_PLAIN = 0, /* user */
        TSF_USERKEY_DOWNLEVEL, /* DOMAIN\user */
        TSF_USERKEY_UPN,       /* user@domain */
};

struct tsf_userkey {
        enum tsf_userkey_form form;
        /* Case-folded (ASCII) parts, NUL-terminated. domain is "" for PLAIN. */
        char user[TSF_USERKEY_INPUT_MAX + 1];
        char domain[TSF_USERKEY_INPUT_MAX + 1];
        /* The whole input, case-folded: what a truncated cookie is a prefix of. */
        char folded[TSF_USERKEY_INPUT_MAX + 1];
        size_t folded_len;
};

/* Parses and folds an identifier. Returns 0, -EINVAL (empty, empty user or
 * domain part, control characters, a backslash inside the user part),
 * -ENAMETOOLONG (over TSF_USERKEY_INPUT_MAX). */
int tsf_userkey_parse(const char *s, size_t len, struct tsf_userkey *out);

/* Like tsf_userkey_parse(), for the identifier in an mstshash cookie: a
 * cookie of exactly TSF_USERKEY_TRUNCATED_LEN bytes that a client cut right
 * after the separator ("rdpuser1@" from "rdpuser1@corp.example", "CORPORAT\"
 * from "CORPORAT\bob") is accepted with the empty part left empty, because
 * tsf_userkey_match() can still match it as a prefix. Everything else is
 * refused exactly as tsf_userkey_parse() refuses it. */
int tsf_userkey_parse_cookie(const char *s, size_t len, struct tsf_userkey *out);

/* The directory index key: the folded user part. */
static inline const char *tsf_userkey_index(const struct tsf_userkey *k) {
        return k->user;
}

/* Whether a cookie may have been truncated by a Windows client (exactly
 * TSF_USERKEY_TRUNCATED_LEN bytes long). */
bool tsf_userkey_maybe_truncated(const struct tsf_userkey *cookie);

/* Whether the identifier a client sent (`cookie`) names the user a session
 * host reported (`full`): the same user part and compatible domains, or,
 * for a possibly-truncated cookie, a prefix of one of the forms the full
 * name can be typed in. */
bool tsf_userkey_match(const struct tsf_userkey *cookie, const struct tsf_userkey *full);

/* Whether two domain names refer to the same domain: equal after folding,
 * or a NetBIOS name equal to the first label of a DNS name. An empty domain
 * is compatible with every domain. */
bool tsf_userkey_domain_match(const char *a, const char *b);
