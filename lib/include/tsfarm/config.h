/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * INI-style configuration through inih, table-driven like systemd's
 * ConfigPerfItem: each program declares the keys it knows, each with a
 * parser and where the value goes. Unknown sections or keys, a key set
 * twice, an over-long line or a value out of range is an error naming
 * file, line, section and key; nothing is half-applied, because callers
 * parse into a fresh struct and swap it in only on success.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define TSF_CONFIG_FILE_MAX (1024 * 1024)
/* inih reads lines into a fixed buffer; longer lines are refused up front
 * rather than split into two half-lines. */
#define TSF_CONFIG_LINE_MAX 198
#define TSF_CONFIG_ERROR_MAX 512

struct tsf_config_item;

/* A value parser: stores `value` at `(char *)data + item->offset`. Returns 0
 * or a negative errno and writes a short reason ("must be 1..65535") to err. */
typedef int (*tsf_config_parser)(const struct tsf_config_item *item, const char *value, void *data,
                                 char *err, size_t err_size);

struct tsf_config_item {
        const char *section;
        const char *key;
        tsf_config_parser parse;
        size_t offset;
        uint64_t min, max; /* for numbers; 0/0 means the type's full range */
        /* Lists (tsf_config_parse_strv) may repeat; everything else may not. */
};

/* For sections whose names are data ("[node alpha]"): called for keys no
 * table entry claims. Return -ENOENT for "unknown key". */
typedef int (*tsf_config_fallback)(void *data, const char *section, const char *key, const char *value,
                                   char *err, size_t err_size);

struct tsf_config_spec {
        const struct tsf_config_item *items;
        size_t n_items;
        tsf_config_fallback fallback; /* may be NULL */
};

/* Parses `path` into `data`. On error returns a negative errno and writes
 * "path:line: [section] key: reason" into err (TSF_CONFIG_ERROR_MAX). */
int tsf_config_load_file(const char *path, const struct tsf_config_spec *spec, void *data, char *err,
                         size_t err_size);
/* The same for text in memory; `name` stands in for the path in errors. */
int tsf_config_load_string(const char *text, const char *name, const struct tsf_config_spec *spec,
                           void *data, char *err, size_t err_size);

/* Parsers. Field types: string/path: char *; bool: bool; uint: uint32_t;
 * u64: uint64_t; port: uint16_t; duration: usec_t; log_level: int;
 * strv: char ** (NULL-terminated, each occurrence appends, whitespace-
 * separated words); size: uint64_t bytes. */
int tsf_config_parse_string(const struct tsf_config_item *item, const char *value, void *data, char *err,
                            size_t err_size);
int tsf_config_parse_path(const struct tsf_config_item *item, const char *value, void *data, char *err,
                          size_t err_size);
int tsf_config_parse_bool(const struct tsf_config_item *item, const char *value, void *data, char *err,
                          size_t err_size);
int tsf_config_parse_uint(const struct tsf_config_item *item, const char *value, void *data, char *err,
                          size_t err_size);
int tsf_config_parse_u64(const struct tsf_config_item *item, const char *value, void *data, char *err,
                         size_t err_size);
int tsf_config_parse_port(const struct tsf_config_item *item, const char *value, void *data, char *err,
                          size_t err_size);
int tsf_config_parse_duration(const struct tsf_config_item *item, const char *value, void *data, char *err,
                              size_t err_size);
int tsf_config_parse_log_level(const struct tsf_config_item *item, const char *value, void *data, char *err,
                               size_t err_size);
int tsf_config_parse_strv(const struct tsf_config_item *item, const char *value, void *data, char *err,
                          size_t err_size);

/* IPv4 address (struct in_addr) and "address[:port]" (struct sockaddr_in;
 * without ":port" the field's port stays as preset, so set defaults first). */
int tsf_config_parse_ipv4(const struct tsf_config_item *item, const char *value, void *data, char *err,
                          size_t err_size);
int tsf_config_parse_endpoint(const struct tsf_config_item *item, const char *value, void *data, char *err,
                              size_t err_size);
int tsf_config_parse_size(const struct tsf_config_item *item, const char *value, void *data, char *err,
                          size_t err_size);

/* "a.b.c.d[:port]": 0, or -EINVAL. *port is left alone without ":port". */
int tsf_parse_endpoint(const char *s, uint32_t *addr_be, uint16_t *port);
/* "64K", "256KiB", "1M", "4096": bytes (1024-based). */
int tsf_parse_size(const char *s, uint64_t *ret);

/* Parses "yes/no/true/false/on/off/1/0". Returns 1, 0 or -EINVAL. */
int tsf_parse_boolean(const char *s);
/* Strict unsigned parse: decimal digits only, no sign, no trailing junk. */
int tsf_parse_u64(const char *s, uint64_t *ret);

void tsf_strv_free(char **l);
size_t tsf_strv_length(char *const *l);
