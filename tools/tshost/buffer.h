/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * tshost's two byte containers, pure logic (tests/unit/test_tshost_buffer.c):
 *
 *  - struct scrollback: the last `capacity` bytes a session's pty wrote,
 *    kept while nobody is attached (and while someone is), replayed on
 *    reattach so the user sees recent output. Writing more than fits
 *    forgets the oldest bytes.
 *  - struct bytequeue: a FIFO with a hard cap, for bytes waiting for a
 *    socket or a pty to take them (TLS output, keyboard input). Appending
 *    past the cap is refused whole (-ENOBUFS), so a caller applies
 *    backpressure instead of buffering without bound.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct scrollback {
        uint8_t *data;
        size_t capacity;
        size_t start; /* offset of the oldest byte */
        size_t len;   /* bytes held, <= capacity */
};

int scrollback_init(struct scrollback *s, size_t capacity);
void scrollback_done(struct scrollback *s);
void scrollback_write(struct scrollback *s, const uint8_t *data, size_t len);
/* Copies up to `size` bytes starting `offset` bytes after the oldest one
 * into buf; returns the number copied (0 at the end). */
size_t scrollback_read(const struct scrollback *s, size_t offset, uint8_t *buf, size_t size);
static inline size_t scrollback_len(const struct scrollback *s) {
        return s->len;
}

struct bytequeue {
        uint8_t *data;
        size_t size;  /* allocated */
        size_t start; /* first unconsumed byte */
        size_t len;   /* unconsumed bytes */
        size_t max;   /* hard cap on len */
};

void bytequeue_init(struct bytequeue *q, size_t max);
/* Frees the storage after zeroing it (it may have held a password). */
void bytequeue_done(struct bytequeue *q);
/* 0, -ENOBUFS (len would pass max; nothing appended) or -ENOMEM. */
int bytequeue_append(struct bytequeue *q, const void *data, size_t len);
static inline const uint8_t *bytequeue_peek(const struct bytequeue *q) {
        return q->data + q->start;
}
static inline size_t bytequeue_len(const struct bytequeue *q) {
        return q->len;
}
static inline size_t bytequeue_room(const struct bytequeue *q) {
        return q->max - q->len;
}
void bytequeue_consume(struct bytequeue *q, size_t n);
