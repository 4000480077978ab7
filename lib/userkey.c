/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * User-key normalization: the one place that decides whether the user
 * identifier in an mstshash cookie names the user a session host reported.
 * The rules, with examples, are in docs/userkey.md; keep the two in step.
 *
 * Folding is ASCII only. Windows compares account names case-insensitively
 * in its own way, but a cookie arrives in the client's ANSI code page while
 * session hosts report UTF-8 (xrdp) or UTF-16 (Windows), so bytes >= 0x80
 * are compared exactly rather than folded wrongly.
 */

#include <errno.h>
#include <string.h>

#include "tsfarm/macro.h"
#include "tsfarm/userkey.h"

static char fold_char(char c) {
        return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

static void fold_copy(char *dst, const char *src, size_t n) {
        for (size_t i = 0; i < n; i++)
                dst[i] = fold_char(src[i]);
        dst[n] = '\0';
}

static bool equal_folded(const char *a, size_t na, const char *b, size_t nb) {
        if (na != nb)
                return false;
        for (size_t i = 0; i < na; i++)
                if (fold_char(a[i]) != fold_char(b[i]))
                        return false;
        return true;
}

static int userkey_parse(const char *s, size_t len, bool cookie, struct tsf_userkey *out) {
        /* Only a cookie of exactly the truncated length can have lost what
         * followed its separator. */
        bool truncated = cookie && len == TSF_USERKEY_TRUNCATED_LEN;
        const char *sep;

        memset(out, 0, sizeof(*out));

        if (len > TSF_USERKEY_INPUT_MAX)
                return -ENAMETOOLONG;
        if (!s || len == 0)
                return -EINVAL;
        for (size_t i = 0; i < len; i++)
                if ((unsigned char)s[i] < 0x20 || s[i] == 0x7F)
                        return -EINVAL;

        sep = memchr(s, '\\', len);
        if (sep) {
                /* DOMAIN\user: the first backslash splits; a user name with
                 * another one is no account name Windows allows. */
                size_t dlen = (size_t)(sep - s), ulen = len - dlen - 1;

                if (memchr(sep + 1, '\\', ulen))
                        return -EINVAL;
                if (dlen == 0 || (ulen == 0 && !truncated))
                        return -EINVAL;
                out->form = TSF_USERKEY_DOWNLEVEL;
                fold_copy(out->domain, s, dlen);
                fold_copy(out->user, sep + 1, ulen);
        } else if ((sep = memrchr(s, '@', len))) {
                /* user@domain: the last '@' splits, since a domain has none
                 * but a user name may ("first@last@corp.example"). */
                size_t ulen = (size_t)(sep - s), dlen = len - ulen - 1;

                if (ulen == 0 || (dlen == 0 && !truncated))
                        return -EINVAL;
                out->form = TSF_USERKEY_UPN;
                fold_copy(out->user, s, ulen);
                fold_copy(out->domain, sep + 1, dlen);
        } else {
                out->form = TSF_USERKEY_PLAIN;
                fold_copy(out->user, s, len);
        }

        fold_copy(out->folded, s, len);
        out->folded_len = len;
        return 0;
}

int tsf_userkey_parse(const char *s, size_t len, struct tsf_userkey *out) {
        return userkey_parse(s, len, false, out);
}

int tsf_userkey_parse_cookie(const char *s, size_t len, struct tsf_userkey *out) {
        return userkey_parse(s, len, true, out);
}

bool tsf_userkey_maybe_truncated(const struct tsf_userkey *cookie) {
        return cookie->folded_len == TSF_USERKEY_TRUNCATED_LEN;
}

bool tsf_userkey_domain_match(const char *a, const char *b) {
        size_t na = strlen(a), nb = strlen(b);
        const char *dot_a, *dot_b;

        /* A name typed without a domain says nothing about it. */
        if (na == 0 || nb == 0)
                return true;
        if (equal_folded(a, na, b, nb))
                return true;

        /* A NetBIOS name (no dot) against a DNS name: compare with the DNS
         * name's first label, the usual way the two are related (CORP and
         * corp.example). Two DNS names or two NetBIOS names must be equal. */
        dot_a = memchr(a, '.', na);
        dot_b = memchr(b, '.', nb);
        if (!dot_a && dot_b)
                return equal_folded(a, na, b, (size_t)(dot_b - b));
        if (dot_a && !dot_b)
                return equal_folded(b, nb, a, (size_t)(dot_a - a));
        return false;
}

/* Whether p[0..n) is a prefix of the concatenation x || y || z. */
static bool prefix_of3(const char *p, size_t n, const char *x, size_t nx, const char *y, size_t ny,
                       const char *z, size_t nz) {
        const char *part[3] = {x, y, z};
        size_t plen[3] = {nx, ny, nz};

        for (size_t i = 0; i < 3 && n > 0; i++) {
                size_t k = MIN(n, plen[i]);

                if (memcmp(p, part[i], k) != 0)
                        return false;
                p += k;
                n -= k;
        }
        return n == 0;
}

bool tsf_userkey_match(const struct tsf_userkey *cookie, const struct tsf_userkey *full) {
        const char *user = full->user, *domain = full->domain, *dot;
        const char *p = cookie->folded;
        size_t n = cookie->folded_len, nu = strlen(user), nd = strlen(domain);

        if (strcmp(cookie->user, full->user) == 0 && tsf_userkey_domain_match(cookie->domain, full->domain))
                return true;

        /* Windows clients cut the cookie to 9 characters, so a 9-byte cookie
         * may be the start of any way the full name can be typed. A shorter
         * one was not cut and must have matched above. */
        if (!tsf_userkey_maybe_truncated(cookie))
                return false;
        if (prefix_of3(p, n, user, nu, "", 0, "", 0))
                return true;
        if (nd == 0)
                return false;
        if (prefix_of3(p, n, domain, nd, "\\", 1, user, nu) ||
            prefix_of3(p, n, user, nu, "@", 1, domain, nd))
                return true;
        /* corp.example\user is rarely typed; CORP\user is. */
        dot = strchr(domain, '.');
        if (dot && prefix_of3(p, n, domain, (size_t)(dot - domain), "\\", 1, user, nu))
                return true;
        return false;
}
