/* Small shared helpers: a bounded byte buffer, little-endian codecs, the
 * monotonic clock and logging. */
#ifndef RAFTD_UTIL_H
#define RAFTD_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* A growable byte buffer that refuses to grow past `limit` bytes, so no
 * peer or client can make the server allocate without bound. */
struct buffer {
    uint8_t *data;
    size_t len;
    size_t cap;
    size_t limit;
};

void buffer_init(struct buffer *buf, size_t limit);
void buffer_free(struct buffer *buf);
/* Returns 0, or -1 when the data would exceed the limit (or memory is out). */
int buffer_append(struct buffer *buf, const void *data, size_t len);
int buffer_printf(struct buffer *buf, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
/* Drops the first `len` bytes. */
void buffer_consume(struct buffer *buf, size_t len);

void put_u32(uint8_t *out, uint32_t value);
void put_u64(uint8_t *out, uint64_t value);
uint32_t get_u32(const uint8_t *in);
uint64_t get_u64(const uint8_t *in);
int buffer_append_u16(struct buffer *buf, uint16_t value);
int buffer_append_u32(struct buffer *buf, uint32_t value);
int buffer_append_u64(struct buffer *buf, uint64_t value);

/* Group frames (WIRE.md, "Group frames") longer than a stream frame may
 * be are sent as several, cut between messages. Of the `count` messages
 * in `body` (`len` bytes, the frame after its count), the longest run at
 * the start that fits in a group frame of `limit` bytes: its byte length
 * in *run_len and message count in *run_count. A first message that fits
 * in no frame gives *run_count 0 and its size in *run_len, to be skipped.
 * Returns -1 when the bytes are not `count` well-formed messages. */
int group_frame_run(const uint8_t *body, size_t len, uint32_t count, size_t limit,
                    size_t *run_len, uint32_t *run_count);

uint64_t now_ms(void);
/* A random integer in 1..2^63-1 from /dev/urandom (node and cluster ids). */
uint64_t random_id(void);

/* Logging to stderr, prefixed with the time and this node's id. */
extern int log_verbose;
extern uint64_t log_node_id;
void log_line(const char *format, ...) __attribute__((format(printf, 1, 2)));
/* Only with -v. */
void log_verbose_line(const char *format, ...) __attribute__((format(printf, 1, 2)));

/* Splits "host:port" (the last colon) into `host` and a port. Returns 0, or
 * -1 when malformed. */
int split_host_port(const char *addr, char *host, size_t host_cap, unsigned *port);

#endif
