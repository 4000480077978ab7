/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A farm CA for small farms: one ECDSA P-256 CA, and node certificates it
 * signs (CN = node name, SANs, serverAuth + clientAuth), as PEM files in one
 * directory. `tsctl pki` and the unit tests use this; farms with a CA of
 * their own never need it (docs/api.md says what their certificates need).
 *
 * Files: DIR/ca.crt, DIR/ca.key, DIR/NODE.crt, DIR/NODE.key. Keys are 0600,
 * certificates 0644. Nothing is overwritten unless `force`; without it the
 * files are linked into place with RENAME_NOREPLACE, so two runs racing
 * cannot replace each other's key either.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#define TSF_PKI_ERROR_MAX 256
#define TSF_PKI_NAME_MAX 63
#define TSF_PKI_CA_DAYS_DEFAULT 3650
#define TSF_PKI_NODE_DAYS_DEFAULT 825

/* Whether `name` may be a node name, hence a certificate's CN: 1..63
 * characters, [A-Za-z0-9] first, then [A-Za-z0-9._-]. Narrow on purpose:
 * the name ends up in logs, URLs and SQL. */
bool tsf_pki_node_name_valid(const char *name);

/* Creates DIR/ca.key and DIR/ca.crt (CN "<farm> farm CA"), valid `days`
 * days (0: TSF_PKI_CA_DAYS_DEFAULT). DIR must exist. Returns 0, or a
 * negative errno with a reason in err: -EEXIST (a file exists and !force),
 * -EINVAL (bad argument), -EIO (OpenSSL failed), or the errno of a failed
 * system call. */
int tsf_pki_init_ca(const char *dir, const char *farm, unsigned days, bool force, char *err,
                    size_t err_size);

/* Issues DIR/NODE.key and DIR/NODE.crt signed by DIR/ca.{crt,key}: CN = node,
 * subjectAltName = DNS:node (when node is a valid DNS name), the `dns`
 * names and the `ips` addresses (IPv4 or IPv6 text); EKU serverAuth and
 * clientAuth. Valid `days` days (0: TSF_PKI_NODE_DAYS_DEFAULT), never past
 * the CA's own expiry. Errors as tsf_pki_init_ca(), and -ENOENT when the CA
 * is missing, -EINVAL for a bad node name, DNS name or address. */
int tsf_pki_issue(const char *dir, const char *node, char *const *ips, size_t n_ips, char *const *dns,
                  size_t n_dns, unsigned days, bool force, char *err, size_t err_size);
