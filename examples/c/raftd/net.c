#define _POSIX_C_SOURCE 200809L
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api.h"
#include "transport.h"


static int set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL, 0);
    return flags < 0 ? -1 : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

static struct addrinfo *resolve(const char *host, unsigned port, int passive) {
    struct addrinfo hints, *found = NULL;
    char service[16];
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = passive ? AI_PASSIVE : 0;
    snprintf(service, sizeof service, "%u", port);
    return getaddrinfo(host, service, &hints, &found) == 0 ? found : NULL;
}

int net_listen(const char *host, unsigned port) {
    struct addrinfo *found = resolve(host, port, 1);
    int fd = -1;
    for (struct addrinfo *a = found; a != NULL && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        int one = 1;
        if (fd >= 0 && (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
                        bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, 128) != 0 ||
                        set_nonblocking(fd) != 0)) {
            close(fd);
            fd = -1;
        }
    }
    if (found != NULL) {
        freeaddrinfo(found);
    }
    return fd;
}

static int connect_to(const char *addr) {
    char host[MAX_HOST + 1];
    unsigned port = 0;
    if (split_host_port(addr, host, sizeof host, &port) != 0) {
        return -1;
    }
    struct addrinfo *found = resolve(host, port, 0);
    int fd = -1;
    for (struct addrinfo *a = found; a != NULL && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
        if (fd < 0) {
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (set_nonblocking(fd) != 0 ||
            (connect(fd, a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS)) {
            close(fd);
            fd = -1;
        }
    }
    if (found != NULL) {
        freeaddrinfo(found);
    }
    return fd;
}

int net_connect(const char *addr) {
    return connect_to(addr);
}

int net_connect_blocking(const char *addr, int timeout_ms) {
    int fd = connect_to(addr);
    if (fd < 0) {
        return -1;
    }
    struct pollfd waiter = {fd, POLLOUT, 0};
    int error = 0;
    socklen_t error_len = sizeof error;
    if (poll(&waiter, 1, timeout_ms) != 1 ||
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &error_len) != 0 || error != 0) {
        close(fd);
        return -1;
    }
    int flags = fcntl(fd, F_GETFL, 0);
    fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    return fd;
}

int conn_open(struct raftd *r, int fd, enum conn_kind kind, int connecting) {
    for (int i = 0; i < MAX_CONNS; i++) {
        struct conn *c = &r->conns[i];
        if (c->kind != CONN_FREE) {
            continue;
        }
        memset(c, 0, sizeof *c);
        c->fd = fd;
        c->kind = kind;
        c->serial = ++r->next_serial;
        c->connecting = connecting;
        c->client = -1;
        c->caller = -1;
        buffer_init(&c->in, kind == CONN_PEER_OUT ? 64 : HTTP_IN_LIMIT);
        buffer_init(&c->out, OUT_LIMIT);
        set_nonblocking(fd);
        return i;
    }
    close(fd);
    return -1;
}

void conn_close(struct raftd *r, int index, const char *why) {
    struct conn *c = &r->conns[index];
    if (c->kind == CONN_FREE) {
        return;
    }
    /* Owners look at the connection (and what it received) first. */
    switch (c->kind) {
    case CONN_PEER_OUT:
        transport_on_outbound_closed(r, index, why);
        break;
    case CONN_PEER_IN:
        if (why != NULL) {
            log_verbose_line("stream from %llu closed: %s", (unsigned long long)c->peer_id, why);
        }
        break;
    case CONN_PROXY:
        api_on_proxy_closed(r, c, why);
        break;
    default:
        break;
    }
    c->kind = CONN_FREE;
    close(c->fd);
    c->fd = -1;
    buffer_free(&c->in);
    buffer_free(&c->out);
}

struct conn *conn_get(struct raftd *r, int index, uint64_t serial) {
    if (index < 0 || index >= MAX_CONNS) {
        return NULL;
    }
    struct conn *c = &r->conns[index];
    return c->kind != CONN_FREE && c->serial == serial ? c : NULL;
}

int conn_read(struct conn *c) {
    /* One chunk per call: poll is level-triggered, so the rest comes on the
     * next turn, after the owner has looked at (and bounded) what came. */
    uint8_t chunk[65536];
    size_t room = c->in.limit - c->in.len;
    if (room == 0) {
        return -1;
    }
    for (;;) {
        ssize_t n = recv(c->fd, chunk, room < sizeof chunk ? room : sizeof chunk, 0);
        if (n > 0) {
            return buffer_append(&c->in, chunk, (size_t)n) == 0 ? 1 : -1;
        }
        if (n == 0) {
            return 0;
        }
        if (errno == EINTR) {
            continue;
        }
        return errno == EAGAIN || errno == EWOULDBLOCK ? 1 : -1;
    }
}

int conn_flush(struct conn *c) {
    while (c->out.len > 0) {
        ssize_t n = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL);
        if (n > 0) {
            buffer_consume(&c->out, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
    }
    return 0;
}
