#define _POSIX_C_SOURCE 200809L
#include "server.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api.h"
#include "net.h"
#include "node.h"
#include "transport.h"

/* pollfd slots before the connections: listener, readiness fd. */
#define FIXED_FDS 2

static void accept_all(struct raftd *r) {
    for (;;) {
        int fd = accept(r->listen_fd, NULL, NULL);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                log_line("accept: %s", strerror(errno));
            }
            return;
        }
        int index = conn_open(r, fd, CONN_UNKNOWN, 0);
        if (index < 0) {
            log_line("too many connections; refused one");
            continue;
        }
        r->conns[index].deadline = now_ms() + HTTP_REQUEST_TIMEOUT_MS;
    }
}

/* Hands new input to the connection's owner. */
static void on_input(struct raftd *r, int index) {
    struct conn *c = &r->conns[index];
    if (c->kind == CONN_UNKNOWN) {
        if (c->in.len < 4) {
            return;
        }
        if (memcmp(c->in.data, "EMRF", 4) == 0) {
            c->kind = CONN_PEER_IN;
            c->deadline = now_ms() + HELLO_TIMEOUT_MS;
        } else {
            c->kind = CONN_HTTP;
        }
    }
    switch (c->kind) {
    case CONN_HTTP:
        api_on_http(r, index);
        break;
    case CONN_PEER_IN:
        transport_on_inbound(r, index);
        break;
    case CONN_PEER_OUT:
        transport_on_outbound_readable(r, index);
        break;
    default:
        break; /* CONN_PROXY: the answer is relayed once the leader closes */
    }
}

/* Closing a socket with unread input makes the kernel send a reset, which
 * can destroy the answer before the client reads it (an early 413 or 431
 * while the client still sends). So a connection we accepted shuts its
 * write side and discards input until the client closes, for a bounded
 * time (the "lingering close" of HTTP servers). */
static void finish_connection(struct raftd *r, int index) {
    struct conn *c = &r->conns[index];
    if (c->kind == CONN_PEER_OUT || c->kind == CONN_PROXY || c->draining) {
        conn_close(r, index, NULL);
        return;
    }
    shutdown(c->fd, SHUT_WR);
    c->draining = 1;
    c->in.len = 0;
    c->deadline = now_ms() + LINGER_MS;
}

static void drain(struct raftd *r, int index) {
    struct conn *c = &r->conns[index];
    uint8_t scratch[16384];
    for (;;) {
        ssize_t n = recv(c->fd, scratch, sizeof scratch, 0);
        if (n > 0) {
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            conn_close(r, index, NULL);
        }
        return;
    }
}

static void on_events(struct raftd *r, int index, short events) {
    struct conn *c = &r->conns[index];
    if (c->kind == CONN_FREE) {
        return;
    }
    if (c->draining) {
        drain(r, index);
        return;
    }
    if (c->connecting && (events & (POLLOUT | POLLERR | POLLHUP))) {
        int error = 0;
        socklen_t len = sizeof error;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &len);
        if (error != 0) {
            conn_close(r, index, strerror(error));
            return;
        }
        c->connecting = 0;
        if (c->kind == CONN_PEER_OUT) {
            transport_on_outbound_writable(r, index);
        }
    }
    if (events & (POLLIN | POLLHUP | POLLERR)) {
        int got = conn_read(c);
        if (got < 0) {
            conn_close(r, index, c->in.len >= c->in.limit ? "input too large" : "read error");
            return;
        }
        if (got == 0) {
            /* EOF: for a proxy the leader's answer is complete (NULL). */
            conn_close(r, index, c->kind == CONN_PROXY ? NULL : "closed by the other side");
            return;
        }
        on_input(r, index);
        if (c->kind == CONN_FREE) {
            return;
        }
    }
    if (!c->connecting && c->out.len > 0) {
        if (conn_flush(c) != 0) {
            conn_close(r, index, "write error");
            return;
        }
        if (c->kind == CONN_PEER_OUT) {
            transport_on_outbound_writable(r, index);
        }
    }
    if (c->close_after_write && c->out.len == 0) {
        finish_connection(r, index);
    }
}

static void expire_connections(struct raftd *r, uint64_t now) {
    for (int i = 0; i < MAX_CONNS; i++) {
        struct conn *c = &r->conns[i];
        if (c->kind != CONN_FREE && c->deadline != 0 && now >= c->deadline) {
            conn_close(r, i, c->draining ? NULL
                             : c->kind == CONN_PROXY ? "the leader did not answer in time"
                                                     : "timed out");
        }
    }
}

int server_run(struct raftd *r, volatile sig_atomic_t *stop) {
    static struct pollfd fds[FIXED_FDS + MAX_CONNS];
    static int owner[FIXED_FDS + MAX_CONNS];
    uint64_t next_tick = now_ms() + TICK_MS;
    int failed = 0;
    while (!*stop && !failed) {
        uint64_t now = now_ms();
        uint64_t wake = next_tick;
        uint64_t retry = transport_on_timer(r, now);
        if (retry != 0 && retry < wake) {
            wake = retry;
        }
        nfds_t count = 0;
        fds[count++] = (struct pollfd){r->listen_fd, POLLIN, 0};
        fds[count++] = (struct pollfd){r->readiness_fd, POLLIN, 0};
        for (int i = 0; i < MAX_CONNS; i++) {
            struct conn *c = &r->conns[i];
            if (c->kind == CONN_FREE) {
                continue;
            }
            short want = c->close_after_write && !c->draining ? 0 : POLLIN;
            if (c->connecting || c->out.len > 0) {
                want |= POLLOUT;
            }
            owner[count] = i;
            fds[count++] = (struct pollfd){c->fd, want, 0};
        }
        int timeout = wake > now ? (int)(wake - now) : 0;
        if (poll(fds, count, timeout) < 0 && errno != EINTR) {
            log_line("poll: %s", strerror(errno));
            return -1;
        }
        if (fds[0].revents & POLLIN) {
            accept_all(r);
        }
        for (nfds_t i = FIXED_FDS; i < count; i++) {
            if (fds[i].revents != 0) {
                on_events(r, owner[i], fds[i].revents);
            }
        }
        now = now_ms();
        if (now >= next_tick) {
            node_tick(r);
            next_tick = now + TICK_MS;
            api_on_timer(r, now);
            expire_connections(r, now);
        }
        /* Drain whether or not the fd fired: proposals made above may have
         * batches ready already, and a spare poll_ready costs nothing. */
        failed = node_drain(r) != 0;
    }
    return failed ? -1 : 0;
}
