/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Decodes hex text into bytes. Accepts upper/lower case, whitespace and ':'
 * or '-' between bytes, and an optional "0x" before each run of digits;
 * anything else, or an odd number of digits, is -EINVAL (with *bad_offset
 * set to the offending character when bad_offset is not NULL). Returns the
 * number of bytes, or -ENOBUFS when `size` is too small. */
ssize_t tsf_hex_decode(const char *text, size_t len, uint8_t *buf, size_t size, size_t *bad_offset);

/* Writes 2*len lowercase hex digits and a NUL; `out` must hold 2*len+1. */
void tsf_hex_encode(const uint8_t *buf, size_t len, char *out);

/* Whether the text consists only of what tsf_hex_decode accepts. */
int tsf_hex_looks_like_hex(const uint8_t *buf, size_t len);

/* The one spelling the APIs accept: exactly two hex digits per byte (either
 * case), nothing else, min..max bytes. Returns the number of bytes, or
 * -EINVAL for anything else. */
ssize_t tsf_hex_decode_strict(const char *text, uint8_t *buf, size_t min, size_t max);
