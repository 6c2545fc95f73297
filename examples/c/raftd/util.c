#define _POSIX_C_SOURCE 200809L
#include "util.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int log_verbose = 0;
uint64_t log_node_id = 0;

void buffer_init(struct buffer *buf, size_t limit) {
    buf->data = NULL;
    buf->len = 0;
    buf->cap = 0;
    buf->limit = limit;
}

void buffer_free(struct buffer *buf) {
    free(buf->data);
    buffer_init(buf, buf->limit);
}

static int buffer_reserve(struct buffer *buf, size_t extra) {
    if (extra > buf->limit || buf->len > buf->limit - extra) {
        return -1;
    }
    size_t need = buf->len + extra;
    if (need <= buf->cap) {
        return 0;
    }
    size_t cap = buf->cap ? buf->cap : 256;
    while (cap < need) {
        cap *= 2;
    }
    uint8_t *data = realloc(buf->data, cap);
    if (data == NULL) {
        return -1;
    }
    buf->data = data;
    buf->cap = cap;
    return 0;
}

int buffer_append(struct buffer *buf, const void *data, size_t len) {
    if (len == 0) {
        return 0;
    }
    if (buffer_reserve(buf, len) != 0) {
        return -1;
    }
    memcpy(buf->data + buf->len, data, len);
    buf->len += len;
    return 0;
}

int buffer_printf(struct buffer *buf, const char *format, ...) {
    va_list args;
    va_start(args, format);
    int needed = vsnprintf(NULL, 0, format, args);
    va_end(args);
    if (needed < 0 || buffer_reserve(buf, (size_t)needed + 1) != 0) {
        return -1;
    }
    va_start(args, format);
    vsnprintf((char *)buf->data + buf->len, (size_t)needed + 1, format, args);
    va_end(args);
    buf->len += (size_t)needed;
    return 0;
}

void buffer_consume(struct buffer *buf, size_t len) {
    if (len >= buf->len) {
        buf->len = 0;
        return;
    }
    memmove(buf->data, buf->data + len, buf->len - len);
    buf->len -= len;
}

void put_u32(uint8_t *out, uint32_t value) {
    for (int i = 0; i < 4; i++) {
        out[i] = (uint8_t)(value >> (8 * i));
    }
}

void put_u64(uint8_t *out, uint64_t value) {
    for (int i = 0; i < 8; i++) {
        out[i] = (uint8_t)(value >> (8 * i));
    }
}

uint32_t get_u32(const uint8_t *in) {
    uint32_t value = 0;
    for (int i = 3; i >= 0; i--) {
        value = (value << 8) | in[i];
    }
    return value;
}

uint64_t get_u64(const uint8_t *in) {
    uint64_t value = 0;
    for (int i = 7; i >= 0; i--) {
        value = (value << 8) | in[i];
    }
    return value;
}

int buffer_append_u16(struct buffer *buf, uint16_t value) {
    uint8_t bytes[2] = {(uint8_t)value, (uint8_t)(value >> 8)};
    return buffer_append(buf, bytes, 2);
}

int buffer_append_u32(struct buffer *buf, uint32_t value) {
    uint8_t bytes[4];
    put_u32(bytes, value);
    return buffer_append(buf, bytes, 4);
}

int buffer_append_u64(struct buffer *buf, uint64_t value) {
    uint8_t bytes[8];
    put_u64(bytes, value);
    return buffer_append(buf, bytes, 8);
}

uint64_t now_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

uint64_t random_id(void) {
    uint64_t id = 0;
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd >= 0) {
        if (read(fd, &id, sizeof id) != (ssize_t)sizeof id) {
            id = 0;
        }
        close(fd);
    }
    if (id == 0) {
        /* No urandom: mix the clock and pid, still never 0. */
        id = now_ms() * 6364136223846793005ull + (uint64_t)getpid();
    }
    id &= 0x7fffffffffffffffull;
    return id ? id : 1;
}

static void log_vline(const char *format, va_list args) {
    struct timespec now;
    struct tm local;
    char stamp[32];
    clock_gettime(CLOCK_REALTIME, &now);
    localtime_r(&now.tv_sec, &local);
    strftime(stamp, sizeof stamp, "%H:%M:%S", &local);
    fprintf(stderr, "%s.%03ld [%llu] ", stamp, now.tv_nsec / 1000000,
            (unsigned long long)log_node_id);
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
}

void log_line(const char *format, ...) {
    va_list args;
    va_start(args, format);
    log_vline(format, args);
    va_end(args);
}

void log_verbose_line(const char *format, ...) {
    if (!log_verbose) {
        return;
    }
    va_list args;
    va_start(args, format);
    log_vline(format, args);
    va_end(args);
}

int split_host_port(const char *addr, char *host, size_t host_cap, unsigned *port) {
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || colon == addr || (size_t)(colon - addr) >= host_cap) {
        return -1;
    }
    char *end = NULL;
    long value = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end != '\0' || value <= 0 || value > 65535) {
        return -1;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    *port = (unsigned)value;
    return 0;
}

int group_frame_run(const uint8_t *body, size_t len, uint32_t count, size_t limit,
                    size_t *run_len, uint32_t *run_count) {
    enum { COUNT = 4, HEADER = 12 }; /* u32 count; u64 group, u32 length */
    size_t at = 0;
    uint32_t n = 0;
    while (n < count) {
        if (len - at < HEADER || get_u32(body + at + 8) > len - at - HEADER) {
            return -1;
        }
        size_t message = HEADER + (size_t)get_u32(body + at + 8);
        if (COUNT + at + message > limit) {
            if (n == 0) {
                *run_len = message;
                *run_count = 0;
                return 0;
            }
            break;
        }
        at += message;
        n++;
    }
    *run_len = at;
    *run_count = n;
    return 0;
}
