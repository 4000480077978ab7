/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The farm CA, with OpenSSL 3's EVP/X509 APIs. OpenSSL rather than GnuTLS
 * (which the API server links too) because its X509V3 extension helpers
 * make the extensions a few fixed strings, and because `openssl` is what
 * operators will inspect the result with. Keys are ECDSA P-256: GnuTLS
 * (libmicrohttpd's TLS), OpenSSL (libcurl's) and every CA an operator may
 * bring accept it; Ed25519 certificates are still refused by some.
 *
 * Nothing from the command line is ever spliced into an extension string:
 * SANs are built as GENERAL_NAMEs from validated names and parsed
 * addresses, so "a,IP:0.0.0.0" cannot smuggle in a second SAN.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "tsfarm/cleanup.h"
#include "tsfarm/fs.h"
#include "tsfarm/log.h"
#include "tsfarm/macro.h"
#include "tsfarm/pki.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(EVP_PKEY *, EVP_PKEY_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509 *, X509_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(BIO *, BIO_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(BIGNUM *, BN_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(GENERAL_NAMES *, GENERAL_NAMES_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(GENERAL_NAME *, GENERAL_NAME_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(ASN1_IA5STRING *, ASN1_IA5STRING_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(ASN1_OCTET_STRING *, ASN1_OCTET_STRING_free);

/* A certificate may start 5 minutes in the past: a node whose clock is a
 * little behind the CA's must not see "not yet valid". */
#define NOT_BEFORE_SKEW_SEC (5 * 60)

/* Formats the reason into err, with OpenSSL's first queued error for -EIO,
 * logs it at debug level and returns r. */
_printf_(4, 5) static int pki_error(char *err, size_t err_size, int r, const char *format, ...) {
        char buf[TSF_PKI_ERROR_MAX], ossl[160] = "";
        unsigned long e;
        va_list ap;

        va_start(ap, format);
        vsnprintf(buf, sizeof(buf), format, ap);
        va_end(ap);
        e = ERR_get_error();
        if (r == -EIO && e != 0) {
                ERR_error_string_n(e, ossl, sizeof(ossl));
        }
        ERR_clear_error();
        if (err && err_size > 0)
                snprintf(err, err_size, "%s%s%s", buf, ossl[0] ? ": " : "", ossl);
        return log_debug_errno(r, "pki: %s%s%s", buf, ossl[0] ? ": " : "", ossl);
}

bool tsf_pki_node_name_valid(const char *name) {
        size_t n;

        if (!name)
                return false;
        n = strlen(name);
        if (n == 0 || n > TSF_PKI_NAME_MAX)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = name[i];
                bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');

                if (!alnum && (i == 0 || (c != '.' && c != '-' && c != '_')))
                        return false;
        }
        return true;
}

/* A host name as RFC 1123 has it: labels of [A-Za-z0-9-], 1..63 bytes, not
 * starting or ending with '-', 253 bytes in all. No wildcards: a node
 * certificate names one node. */
static bool dns_name_valid(const char *name) {
        size_t n = strlen(name), label = 0;

        if (n == 0 || n > 253)
                return false;
        for (size_t i = 0; i <= n; i++) {
                char c = name[i];

                if (c == '.' || c == '\0') {
                        if (label == 0 || name[i - 1] == '-')
                                return false;
                        label = 0;
                        continue;
                }
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '-'))
                        return false;
                if (label == 0 && c == '-')
                        return false;
                if (++label > 63)
                        return false;
        }
        return true;
}

/* ---- files ------------------------------------------------------------- */

static int path_join(char *buf, size_t size, const char *dir, const char *name, const char *suffix) {
        int n = snprintf(buf, size, "%s/%s%s", dir, name, suffix);

        return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* PEM of a key or certificate into a file; the key's PEM is wiped from
 * memory afterwards. */
static int write_pem(const char *path, EVP_PKEY *key, X509 *crt, bool force) {
        _cleanup_(BIO_freep) BIO *bio = BIO_new(BIO_s_mem());
        char *data;
        long len;
        int r;

        if (!bio)
                return -ENOMEM;
        if (key ? !PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL)
                : !PEM_write_bio_X509(bio, crt))
                return -EIO;
        len = BIO_get_mem_data(bio, &data);
        if (len <= 0)
                return -EIO;
        r = tsf_write_file_atomic(path, data, (size_t)len, key ? 0600 : 0644, force);
        if (key)
                OPENSSL_cleanse(data, (size_t)len);
        return r;
}

static int read_pem(const char *path, EVP_PKEY **ret_key, X509 **ret_crt) {
        _cleanup_(BIO_freep) BIO *bio = BIO_new_file(path, "r");

        if (!bio) {
                int r = negative_errno(); /* fopen's, for "No such file" */

                ERR_clear_error();
                return r;
        }
        if (ret_key)
                *ret_key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
        else
                *ret_crt = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        return (ret_key ? (void *)*ret_key : (void *)*ret_crt) ? 0 : -EIO;
}

/* -EEXIST unless `force` or none of the paths exists. */
static int check_absent(bool force, const char *a, const char *b, char *err, size_t err_size) {
        const char *paths[] = {a, b};

        if (force)
                return 0;
        for (size_t i = 0; i < ELEMENTSOF(paths); i++)
                if (access(paths[i], F_OK) == 0 || errno != ENOENT)
                        return pki_error(err, err_size, -EEXIST, "%s already exists (--force replaces it)",
                                         paths[i]);
        return 0;
}

/* ---- certificates ------------------------------------------------------ */

static int set_random_serial(X509 *x) {
        unsigned char buf[16];
        _cleanup_(BN_freep) BIGNUM *bn = NULL;

        if (RAND_bytes(buf, sizeof(buf)) != 1)
                return -EIO;
        /* Positive and 16 bytes at most, as RFC 5280 4.1.2.2 wants; a
         * random serial also keeps two CAs made with the same name apart. */
        buf[0] = (buf[0] & 0x7f) | 0x01;
        bn = BN_bin2bn(buf, sizeof(buf), NULL);
        if (!bn || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)))
                return -EIO;
        return 0;
}

/* Only constant strings from this file reach here. */
static int add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value) {
        X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
        int ok;

        if (!ext)
                return -EIO;
        ok = X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
        return ok ? 0 : -EIO;
}

static int add_san(GENERAL_NAMES *gens, int type, const char *value) {
        _cleanup_(GENERAL_NAME_freep) GENERAL_NAME *g = GENERAL_NAME_new();

        if (!g)
                return -ENOMEM;
        if (type == GEN_DNS) {
                _cleanup_(ASN1_IA5STRING_freep) ASN1_IA5STRING *s = ASN1_IA5STRING_new();

                if (!s || !ASN1_STRING_set(s, value, -1))
                        return -ENOMEM;
                GENERAL_NAME_set0_value(g, GEN_DNS, TAKE_PTR(s));
        } else {
                /* a2i_IPADDRESS takes IPv4 and IPv6 text, nothing else. */
                _cleanup_(ASN1_OCTET_STRING_freep) ASN1_OCTET_STRING *o = a2i_IPADDRESS(value);

                if (!o)
                        return -EINVAL;
                GENERAL_NAME_set0_value(g, GEN_IPADD, TAKE_PTR(o));
        }
        if (!sk_GENERAL_NAME_push(gens, g))
                return -ENOMEM;
        TAKE_PTR(g);
        return 0;
}

/* A certificate for `key` named CN=cn (plus O=tsfarm, OU=farm for the CA),
 * signed by issuer/issuer_key, or self-signed when issuer is NULL. */
static int make_cert(EVP_PKEY *key, const char *cn, const char *farm, X509 *issuer, EVP_PKEY *issuer_key,
                     unsigned days, GENERAL_NAMES *sans, X509 **ret) {
        _cleanup_(X509_freep) X509 *x = X509_new();
        X509_NAME *name;
        X509V3_CTX ctx;
        int r;

        if (!x)
                return -ENOMEM;
        if (!X509_set_version(x, X509_VERSION_3))
                return -EIO;
        r = set_random_serial(x);
        if (r < 0)
                return r;
        if (!X509_gmtime_adj(X509_getm_notBefore(x), -NOT_BEFORE_SKEW_SEC) ||
            !X509_time_adj_ex(X509_getm_notAfter(x), (int)days, 0, NULL))
                return -EIO;
        /* A node certificate must not outlive its CA: a chain that is valid
         * today and silently dead after the CA expires helps nobody. */
        if (issuer && ASN1_TIME_compare(X509_get0_notAfter(x), X509_get0_notAfter(issuer)) > 0 &&
            !X509_set1_notAfter(x, X509_get0_notAfter(issuer)))
                return -EIO;

        name = X509_get_subject_name(x);
        if (farm &&
            (!X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)"tsfarm", -1, -1,
                                         0) ||
             !X509_NAME_add_entry_by_txt(name, "OU", MBSTRING_UTF8, (const unsigned char *)farm, -1, -1, 0)))
                return -EIO;
        if (!X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0))
                return -EIO;
        if (!X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name) ||
            !X509_set_pubkey(x, key))
                return -EIO;

        X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
        if (!issuer) {
                /* pathlen:0: the farm CA signs nodes, never another CA. */
                r = add_ext(x, &ctx, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
                if (r >= 0)
                        r = add_ext(x, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
        } else {
                r = add_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE");
                if (r >= 0)
                        r = add_ext(x, &ctx, NID_key_usage, "critical,digitalSignature");
                /* Every node is both: it serves the API and calls its peers. */
                if (r >= 0)
                        r = add_ext(x, &ctx, NID_ext_key_usage, "serverAuth,clientAuth");
        }
        if (r >= 0)
                r = add_ext(x, &ctx, NID_subject_key_identifier, "hash");
        if (r >= 0)
                r = add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always");
        if (r < 0)
                return r;
        if (sans && sk_GENERAL_NAME_num(sans) > 0 && !X509_add1_ext_i2d(x, NID_subject_alt_name, sans, 0, 0))
                return -EIO;

        if (X509_sign(x, issuer ? issuer_key : key, EVP_sha256()) <= 0)
                return -EIO;
        *ret = TAKE_PTR(x);
        return 0;
}

int tsf_pki_init_ca(const char *dir, const char *farm, unsigned days, bool force, char *err,
                    size_t err_size) {
        char key_path[PATH_MAX], crt_path[PATH_MAX], cn[TSF_PKI_NAME_MAX + 16];
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL;
        _cleanup_(X509_freep) X509 *crt = NULL;
        int r;

        farm = farm ? farm : "tsfarm";
        if (!tsf_pki_node_name_valid(farm))
                return pki_error(
                        err, err_size, -EINVAL,
                        "invalid farm name '%s' (1-63 of A-Z a-z 0-9 . _ -, a letter or digit first)", farm);
        if (path_join(key_path, sizeof(key_path), dir, "ca", ".key") < 0 ||
            path_join(crt_path, sizeof(crt_path), dir, "ca", ".crt") < 0)
                return pki_error(err, err_size, -ENAMETOOLONG, "directory name too long: %s", dir);
        r = check_absent(force, key_path, crt_path, err, err_size);
        if (r < 0)
                return r;

        key = EVP_EC_gen("P-256");
        if (!key)
                return pki_error(err, err_size, -EIO, "failed to generate the CA key");
        snprintf(cn, sizeof(cn), "%s farm CA", farm);
        r = make_cert(key, cn, farm, NULL, NULL, days ? days : TSF_PKI_CA_DAYS_DEFAULT, NULL, &crt);
        if (r < 0)
                return pki_error(err, err_size, r, "failed to make the CA certificate");

        r = write_pem(key_path, key, NULL, force);
        if (r < 0)
                return pki_error(err, err_size, r, "failed to write %s: %s", key_path, strerror(-r));
        r = write_pem(crt_path, NULL, crt, force);
        if (r < 0) {
                if (!force)
                        (void)unlink(key_path); /* ours: a key without its certificate is no use */
                return pki_error(err, err_size, r, "failed to write %s: %s", crt_path, strerror(-r));
        }
        return 0;
}

int tsf_pki_issue(const char *dir, const char *node, char *const *ips, size_t n_ips, char *const *dns,
                  size_t n_dns, unsigned days, bool force, char *err, size_t err_size) {
        char path[PATH_MAX], key_path[PATH_MAX], crt_path[PATH_MAX];
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *ca_key = NULL, *key = NULL;
        _cleanup_(X509_freep) X509 *ca = NULL, *crt = NULL;
        _cleanup_(GENERAL_NAMES_freep) GENERAL_NAMES *sans = NULL;
        int r;

        if (!tsf_pki_node_name_valid(node))
                return pki_error(
                        err, err_size, -EINVAL,
                        "invalid node name '%s' (1-63 of A-Z a-z 0-9 . _ -, a letter or digit first)",
                        node ? node : "");
        /* "ca" would overwrite the CA's own files. */
        if (strcmp(node, "ca") == 0)
                return pki_error(err, err_size, -EINVAL, "'ca' is reserved for the CA's files");

        sans = sk_GENERAL_NAME_new_null();
        if (!sans)
                return pki_error(err, err_size, -ENOMEM, "out of memory");
        if (dns_name_valid(node)) {
                r = add_san(sans, GEN_DNS, node);
                if (r < 0)
                        return pki_error(err, err_size, r, "out of memory");
        }
        for (size_t i = 0; i < n_dns; i++) {
                if (!dns_name_valid(dns[i]))
                        return pki_error(err, err_size, -EINVAL, "invalid DNS name '%s'", dns[i]);
                if (strcasecmp(dns[i], node) == 0)
                        continue; /* already there */
                r = add_san(sans, GEN_DNS, dns[i]);
                if (r < 0)
                        return pki_error(err, err_size, r, "out of memory");
        }
        for (size_t i = 0; i < n_ips; i++) {
                r = add_san(sans, GEN_IPADD, ips[i]);
                if (r < 0)
                        return pki_error(err, err_size, r, "invalid IP address '%s'", ips[i]);
        }

        if (path_join(key_path, sizeof(key_path), dir, node, ".key") < 0 ||
            path_join(crt_path, sizeof(crt_path), dir, node, ".crt") < 0)
                return pki_error(err, err_size, -ENAMETOOLONG, "directory name too long: %s", dir);
        r = check_absent(force, key_path, crt_path, err, err_size);
        if (r < 0)
                return r;

        if (path_join(path, sizeof(path), dir, "ca", ".crt") < 0)
                return pki_error(err, err_size, -ENAMETOOLONG, "directory name too long: %s", dir);
        r = read_pem(path, NULL, &ca);
        if (r < 0)
                return pki_error(err, err_size, r, "cannot read the CA certificate %s: %s%s", path,
                                 strerror(-r), r == -ENOENT ? " (run 'tsctl pki init' first)" : "");
        if (path_join(path, sizeof(path), dir, "ca", ".key") < 0)
                return pki_error(err, err_size, -ENAMETOOLONG, "directory name too long: %s", dir);
        r = read_pem(path, &ca_key, NULL);
        if (r < 0)
                return pki_error(err, err_size, r, "cannot read the CA key %s: %s", path, strerror(-r));
        if (X509_check_private_key(ca, ca_key) != 1)
                return pki_error(err, err_size, -EINVAL, "%s/ca.key does not belong to %s/ca.crt", dir, dir);
        if (X509_check_ca(ca) == 0)
                return pki_error(err, err_size, -EINVAL, "%s/ca.crt is not a CA certificate", dir);

        key = EVP_EC_gen("P-256");
        if (!key)
                return pki_error(err, err_size, -EIO, "failed to generate the key of %s", node);
        r = make_cert(key, node, NULL, ca, ca_key, days ? days : TSF_PKI_NODE_DAYS_DEFAULT, sans, &crt);
        if (r < 0)
                return pki_error(err, err_size, r, "failed to make the certificate of %s", node);

        r = write_pem(key_path, key, NULL, force);
        if (r < 0)
                return pki_error(err, err_size, r, "failed to write %s: %s", key_path, strerror(-r));
        r = write_pem(crt_path, NULL, crt, force);
        if (r < 0) {
                if (!force)
                        (void)unlink(key_path);
                return pki_error(err, err_size, r, "failed to write %s: %s", crt_path, strerror(-r));
        }
        return 0;
}
