/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * tsclient's per-device store, the analogue of Windows'
 * HKLM\Software\Microsoft\MSLicensing (docs/protocol.md 9.2,
 * docs/tsclient.md "The device store"):
 *
 *   DIR/salt           32 hex digits and a newline: 16 random bytes, made
 *                      once when the store is created
 *   DIR/farm.<FARM>    the license token the device holds for farm FARM,
 *                      one line (written atomically, mode 0600)
 *
 * The hardware id is not stored: it is derived on every start from the
 * machine id and the salt,
 *
 *   hwid = HMAC-SHA256(key = machine id (16 bytes),
 *                      data = "tsfarm hardware id" || salt)
 *
 * so the machine id itself never leaves the machine, two stores on one
 * machine are two devices, and a store copied onto a machine with another
 * machine id presents another hardware id: its tokens are refused there as
 * other-device.
 *
 * Functions return negative errno: -EBADMSG for a malformed file (refused,
 * never repaired silently), -ENOENT for a missing one, else the system's.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tsfarm/cleanup.h"
#include "tsfarm/tsproto.h"

#define TSC_MACHINE_ID_SIZE 16
#define TSC_SALT_SIZE 16
#define TSC_HWID_SIZE 32 /* within the protocol's 16..64 */
#define TSC_HWID_CONTEXT "tsfarm hardware id"
#define TSC_MACHINE_ID_DEFAULT "/etc/machine-id"
/* A store file is one short line; anything larger is not ours. */
#define TSC_STORE_FILE_MAX (TSF_PROTO_TOKEN_MAX + 2)

struct tsc_store {
        char *dir;
        uint8_t salt[TSC_SALT_SIZE];
        uint8_t hwid[TSC_HWID_SIZE];
};

/* Reads a machine id file (machine-id(5): 32 hex digits, then a newline).
 * -EBADMSG for anything else, -ENOMEDIUM for an empty file (an image not
 * yet booted, "uninitialized" included). */
int tsc_machine_id_read(const char *path, uint8_t ret[TSC_MACHINE_ID_SIZE]);

/* The derivation above; -EIO if OpenSSL fails. */
int tsc_hwid_derive(const uint8_t machine_id[TSC_MACHINE_ID_SIZE], const uint8_t salt[TSC_SALT_SIZE],
                    uint8_t ret[TSC_HWID_SIZE]);

/* Opens the store in `dir` (made, mode 0700, with its parents when
 * `create`), making its salt if it has none, and derives the hardware id
 * from `machine_id_file` (NULL: /etc/machine-id). Refuses a salt file that
 * is malformed, not a regular file, or a symbolic link (-EBADMSG). */
int tsc_store_open(const char *dir, const char *machine_id_file, bool create, struct tsc_store **ret);
struct tsc_store *tsc_store_free(struct tsc_store *s);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct tsc_store *, tsc_store_free);

/* Whether `farm_id` may name a farm (the protocol's ident class, 1..63):
 * then "farm.<id>" is a safe file name. */
bool tsc_farm_id_valid(const char *farm_id);
/* Whether `token` is something the protocol may carry as a token:
 * "tsl" and the token alphabet, at most TSF_PROTO_TOKEN_MAX bytes. */
bool tsc_token_text_valid(const char *token);

/* The token held for `farm_id` into buf (NUL-terminated; size must hold
 * TSF_PROTO_TOKEN_MAX + 1). -ENOENT: none; -EBADMSG: the file is not one
 * valid token line; -EINVAL: a bad farm id. */
int tsc_store_token_load(const struct tsc_store *s, const char *farm_id, char *buf, size_t size);
/* Replaces the token for `farm_id`, atomically, mode 0600. */
int tsc_store_token_save(const struct tsc_store *s, const char *farm_id, const char *token);
/* Forgets it; 0 if there was none. */
int tsc_store_token_remove(const struct tsc_store *s, const char *farm_id);
