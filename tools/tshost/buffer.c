/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tools/tshost/buffer.h"
#include "tsfarm/macro.h"

int scrollback_init(struct scrollback *s, size_t capacity) {
        *s = (struct scrollback){.capacity = capacity};
        if (capacity == 0)
                return 0;
        s->data = malloc(capacity);
        return s->data ? 0 : -ENOMEM;
}

void scrollback_done(struct scrollback *s) {
        free(s->data);
        *s = (struct scrollback){};
}

void scrollback_write(struct scrollback *s, const uint8_t *data, size_t len) {
        if (s->capacity == 0 || len == 0)
                return;
        if (len >= s->capacity) {
                /* Only the tail survives. */
                memcpy(s->data, data + len - s->capacity, s->capacity);
                s->start = 0;
                s->len = s->capacity;
                return;
        }
        while (len > 0) {
                size_t end = (s->start + s->len) % s->capacity;
                size_t n = MIN(len, s->capacity - end);

                memcpy(s->data + end, data, n);
                data += n;
                len -= n;
                s->len += n;
                if (s->len > s->capacity) {
                        /* Overwrote the oldest bytes. */
                        s->start = (s->start + s->len - s->capacity) % s->capacity;
                        s->len = s->capacity;
                }
        }
}

size_t scrollback_read(const struct scrollback *s, size_t offset, uint8_t *buf, size_t size) {
        size_t done = 0;

        while (offset < s->len && done < size) {
                size_t pos = (s->start + offset) % s->capacity;
                size_t n = MIN(MIN(size - done, s->len - offset), s->capacity - pos);

                memcpy(buf + done, s->data + pos, n);
                done += n;
                offset += n;
        }
        return done;
}

void bytequeue_init(struct bytequeue *q, size_t max) {
        *q = (struct bytequeue){.max = max};
}

void bytequeue_done(struct bytequeue *q) {
        if (q->data)
                explicit_bzero(q->data, q->size);
        free(q->data);
        *q = (struct bytequeue){.max = q->max};
}

int bytequeue_append(struct bytequeue *q, const void *data, size_t len) {
        if (len > q->max - q->len)
                return -ENOBUFS;
        if (len == 0)
                return 0;
        if (q->start + q->len + len > q->size) {
                if (q->len + len <= q->size) {
                        /* Room enough once the consumed bytes are gone. */
                        memmove(q->data, q->data + q->start, q->len);
                } else {
                        size_t want = MAX(q->size * 2, q->len + len);
                        uint8_t *n;

                        want = MIN(want, q->max);
                        n = malloc(want);
                        if (!n)
                                return -ENOMEM;
                        if (q->len)
                                memcpy(n, q->data + q->start, q->len);
                        if (q->data)
                                explicit_bzero(q->data, q->size);
                        free(q->data);
                        q->data = n;
                        q->size = want;
                }
                q->start = 0;
        }
        memcpy(q->data + q->start + q->len, data, len);
        q->len += len;
        return 0;
}

void bytequeue_consume(struct bytequeue *q, size_t n) {
        n = MIN(n, q->len);
        q->start += n;
        q->len -= n;
        if (q->len == 0)
                q->start = 0;
}
