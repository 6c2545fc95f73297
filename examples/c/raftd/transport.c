#include "transport.h"

#include <stdlib.h>
#include <string.h>

#include "net.h"
#include "node.h"

#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 2000
#define BACKOFF_RESET_AFTER_MS 5000

enum hello_status {
    HELLO_ACCEPTED = 0,
    HELLO_BAD_VERSION = 1,
    HELLO_OTHER_CLUSTER = 2,
    HELLO_NOT_ME = 3,
    HELLO_BAD_SENDER = 4,
    HELLO_FRAME_KIND = 5,
};

/* Bit 0 of the hello's flags (WIRE.md, "Group frames"): the dialer sends
 * group frames. A sharded node sends and expects them; a one-group node
 * single messages. */
#define HELLO_GROUP_FRAMES 0x0001

static struct peer_link *find_link(struct raftd *r, uint64_t id, int create) {
    for (size_t i = 0; i < r->link_count; i++) {
        if (r->links[i].id == id) {
            return &r->links[i];
        }
    }
    if (!create) {
        return NULL;
    }
    struct peer_link *links = realloc(r->links, (r->link_count + 1) * sizeof *links);
    struct buffer *queue = calloc(PEER_QUEUE_CAPACITY, sizeof *queue);
    if (links == NULL || queue == NULL) {
        free(queue);
        if (links != NULL) {
            r->links = links;
        }
        return NULL;
    }
    r->links = links;
    struct peer_link *link = &r->links[r->link_count++];
    memset(link, 0, sizeof *link);
    link->id = id;
    link->conn = -1;
    link->queue = queue;
    link->backoff_ms = BACKOFF_MIN_MS;
    return link;
}

static void report_unreachable(struct raftd *r, struct peer_link *link) {
    if (!link->reported) {
        link->reported = 1;
        engine_report_unreachable(r, link->id);
    }
}

static void drop_queue(struct peer_link *link) {
    for (size_t i = 0; i < link->queue_count; i++) {
        buffer_free(&link->queue[(link->queue_head + i) % PEER_QUEUE_CAPACITY]);
    }
    link->queue_head = 0;
    link->queue_count = 0;
}

/* Moves queued frames into the connection's output once it is up. */
static void flush_queue(struct raftd *r, struct peer_link *link) {
    struct conn *c = conn_get(r, link->conn, link->conn_serial);
    if (c == NULL || !c->handshaken) {
        return;
    }
    while (link->queue_count > 0) {
        struct buffer *frame = &link->queue[link->queue_head];
        if (buffer_append(&c->out, frame->data, frame->len) != 0) {
            break; /* the socket is backed up; the rest waits in the queue */
        }
        buffer_free(frame);
        link->queue_head = (link->queue_head + 1) % PEER_QUEUE_CAPACITY;
        link->queue_count--;
    }
}

static void dial(struct raftd *r, struct peer_link *link, uint64_t now) {
    const char *addr = kv_peer_addr(address_book(r), link->id);
    int fd = addr ? net_connect(addr) : -1;
    int index = fd >= 0 ? conn_open(r, fd, CONN_PEER_OUT, 1) : -1;
    if (index < 0) {
        if (addr == NULL) {
            log_verbose_line("no address known for peer %llu", (unsigned long long)link->id);
        }
        drop_queue(link);
        report_unreachable(r, link);
        link->retry_at = now + link->backoff_ms;
        link->backoff_ms = link->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : link->backoff_ms * 2;
        return;
    }
    struct conn *c = &r->conns[index];
    c->peer_id = link->id;
    link->conn = index;
    link->conn_serial = c->serial;
    uint8_t hello[WIRE_HELLO_LEN];
    memcpy(hello, WIRE_MAGIC, 4);
    hello[4] = WIRE_VERSION;
    hello[5] = 0;
    hello[6] = r->runtime != NULL ? HELLO_GROUP_FRAMES : 0; /* flags, little-endian */
    hello[7] = 0;
    put_u64(hello + 8, r->cluster_id);
    put_u64(hello + 16, r->id);
    put_u64(hello + 24, link->id);
    buffer_append(&c->out, hello, sizeof hello);
    c->deadline = now + HELLO_TIMEOUT_MS;
}

void transport_send(struct raftd *r, uint64_t to, const uint8_t *data, size_t len) {
    struct peer_link *link = find_link(r, to, 1);
    if (link == NULL || len > WIRE_MAX_FRAME) {
        return;
    }
    if (link->queue_count == PEER_QUEUE_CAPACITY) {
        report_unreachable(r, link);
        return;
    }
    struct buffer *frame = &link->queue[(link->queue_head + link->queue_count) % PEER_QUEUE_CAPACITY];
    buffer_init(frame, len + 4);
    uint8_t header[4];
    put_u32(header, (uint32_t)len);
    if (buffer_append(frame, header, 4) != 0 || buffer_append(frame, data, len) != 0) {
        buffer_free(frame);
        return;
    }
    link->queue_count++;
    uint64_t now = now_ms();
    if (link->conn < 0 && now >= link->retry_at) {
        dial(r, link, now);
    }
    flush_queue(r, link);
}

void transport_send_group_frame(struct raftd *r, uint64_t to, const uint8_t *frame, size_t len) {
    if (len <= WIRE_MAX_FRAME || len < 4) {
        transport_send(r, to, frame, len);
        return;
    }
    uint32_t left = get_u32(frame);
    const uint8_t *body = frame + 4;
    size_t body_len = len - 4;
    while (left > 0) {
        size_t run_len = 0;
        uint32_t run_count = 0;
        if (group_frame_run(body, body_len, left, WIRE_MAX_FRAME, &run_len, &run_count) != 0) {
            log_line("dropping a malformed group frame of %zu bytes for %llu", len,
                     (unsigned long long)to);
            return;
        }
        if (run_count == 0) {
            log_line("dropping a message of %zu bytes for %llu: no frame can carry it", run_len,
                     (unsigned long long)to);
            left--;
        } else {
            uint8_t *part = malloc(4 + run_len);
            if (part == NULL) {
                return;
            }
            put_u32(part, run_count);
            memcpy(part + 4, body, run_len);
            transport_send(r, to, part, 4 + run_len);
            free(part);
            left -= run_count;
        }
        body += run_len;
        body_len -= run_len;
    }
}

uint64_t transport_on_timer(struct raftd *r, uint64_t now) {
    uint64_t next = 0;
    for (size_t i = 0; i < r->link_count; i++) {
        struct peer_link *link = &r->links[i];
        if (link->conn < 0 && link->queue_count > 0) {
            if (now >= link->retry_at) {
                dial(r, link, now);
            }
            if (link->conn < 0 && (next == 0 || link->retry_at < next)) {
                next = link->retry_at;
            }
        }
        flush_queue(r, link);
    }
    return next;
}

static struct peer_link *link_of(struct raftd *r, int index) {
    for (size_t i = 0; i < r->link_count; i++) {
        if (r->links[i].conn == index && r->links[i].conn_serial == r->conns[index].serial) {
            return &r->links[i];
        }
    }
    return NULL;
}

void transport_on_outbound_writable(struct raftd *r, int index) {
    struct conn *c = &r->conns[index];
    c->connecting = 0;
    struct peer_link *link = link_of(r, index);
    if (link != NULL) {
        flush_queue(r, link);
    }
}

void transport_on_outbound_readable(struct raftd *r, int index) {
    struct conn *c = &r->conns[index];
    if (c->handshaken) {
        conn_close(r, index, "the peer sent data on a send-only stream");
        return;
    }
    if (c->in.len < WIRE_REPLY_LEN) {
        return;
    }
    const uint8_t *reply = c->in.data;
    uint16_t status = (uint16_t)(reply[6] | reply[7] << 8);
    if (memcmp(reply, WIRE_MAGIC, 4) != 0) {
        conn_close(r, index, "the handshake reply is not EMRF");
        return;
    }
    if (status != HELLO_ACCEPTED) {
        static const char *const reasons[] = {"accepted", "unsupported protocol version",
                                              "cluster id differs", "recipient id is not that node",
                                              "sender not allowed",
                                              "frame kind differs (group frames or not)"};
        conn_close(r, index, status < 6 ? reasons[status] : "handshake refused");
        return;
    }
    buffer_consume(&c->in, WIRE_REPLY_LEN);
    c->handshaken = 1;
    c->deadline = 0;
    struct peer_link *link = link_of(r, index);
    if (link != NULL) {
        link->up_since = now_ms();
        link->reported = 0;
        log_verbose_line("connected to peer %llu", (unsigned long long)link->id);
        flush_queue(r, link);
    }
    if (c->in.len > 0) {
        conn_close(r, index, "the peer sent data on a send-only stream");
    }
}

void transport_on_outbound_closed(struct raftd *r, int index, const char *why) {
    for (size_t i = 0; i < r->link_count; i++) {
        struct peer_link *link = &r->links[i];
        if (link->conn != index || link->conn_serial != r->conns[index].serial) {
            continue;
        }
        uint64_t now = now_ms();
        link->conn = -1;
        if (link->up_since != 0 && now - link->up_since >= BACKOFF_RESET_AFTER_MS) {
            link->backoff_ms = BACKOFF_MIN_MS;
        }
        link->up_since = 0;
        /* Up to 20 % jitter, so peers that failed together retry apart. */
        uint64_t jitter = link->backoff_ms * (random_id() % 21) / 100;
        link->retry_at = now + link->backoff_ms + jitter;
        link->backoff_ms = link->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : link->backoff_ms * 2;
        if (!link->reported && why != NULL) {
            log_verbose_line("stream to peer %llu failed: %s", (unsigned long long)link->id, why);
        }
        drop_queue(link);
        report_unreachable(r, link);
    }
}

static void refuse_hello(struct raftd *r, int index, enum hello_status status, const char *why) {
    struct conn *c = &r->conns[index];
    uint8_t reply[WIRE_REPLY_LEN];
    memcpy(reply, WIRE_MAGIC, 4);
    reply[4] = WIRE_VERSION;
    reply[5] = 0;
    reply[6] = (uint8_t)status;
    reply[7] = 0;
    put_u64(reply + 8, r->id);
    buffer_append(&c->out, reply, sizeof reply);
    if (status != HELLO_ACCEPTED) {
        log_line("refused a peer stream: %s", why);
        c->close_after_write = 1;
    }
}

static void read_hello(struct raftd *r, int index) {
    struct conn *c = &r->conns[index];
    const uint8_t *hello = c->in.data;
    uint16_t version = (uint16_t)(hello[4] | hello[5] << 8);
    uint16_t flags = (uint16_t)(hello[6] | hello[7] << 8);
    int group_frames = (flags & HELLO_GROUP_FRAMES) != 0;
    uint64_t cluster = get_u64(hello + 8), sender = get_u64(hello + 16), recipient = get_u64(hello + 24);
    buffer_consume(&c->in, WIRE_HELLO_LEN);
    if (version != WIRE_VERSION) {
        refuse_hello(r, index, HELLO_BAD_VERSION, "unsupported protocol version");
    } else if (group_frames != (r->runtime != NULL)) {
        refuse_hello(r, index, HELLO_FRAME_KIND,
                     group_frames ? "the peer sends group frames; this node runs one group"
                                  : "the peer sends single messages; this node runs groups");
    } else if (cluster != r->cluster_id) {
        refuse_hello(r, index, HELLO_OTHER_CLUSTER, "cluster id differs");
    } else if (recipient != r->id) {
        refuse_hello(r, index, HELLO_NOT_ME, "the recipient id is not this node");
    } else if (sender == 0 || sender == r->id) {
        refuse_hello(r, index, HELLO_BAD_SENDER, "sender id not allowed");
    } else {
        refuse_hello(r, index, HELLO_ACCEPTED, NULL);
        c->handshaken = 1;
        c->peer_id = sender;
        c->deadline = 0;
    }
}

/* A protocol error: the handshake reply may still be on its way (it came
 * in the same read), so the connection closes once it is flushed. */
static void close_after_reply(struct conn *c) {
    c->in.len = 0;
    c->close_after_write = 1;
}

void transport_on_inbound(struct raftd *r, int index) {
    struct conn *c = &r->conns[index];
    if (!c->handshaken) {
        c->in.limit = PEER_IN_LIMIT;
        if (c->in.len < WIRE_HELLO_LEN || c->close_after_write) {
            return;
        }
        read_hello(r, index);
        if (!c->handshaken) {
            return;
        }
    }
    size_t offset = 0;
    while (c->in.len - offset >= 4) {
        uint32_t len = get_u32(c->in.data + offset);
        if (len > WIRE_MAX_FRAME) {
            log_line("peer %llu sent a frame of %u bytes (limit 64 MiB); closing",
                     (unsigned long long)c->peer_id, len);
            close_after_reply(c);
            return;
        }
        if (c->in.len - offset - 4 < len) {
            break;
        }
        embraft_status status = engine_step(r, c->in.data + offset + 4, len);
        offset += 4 + (size_t)len;
        if (status == EMBRAFT_ERR_MALFORMED_MESSAGE || status == EMBRAFT_ERR_WRONG_RECIPIENT) {
            log_line("peer %llu sent a bad frame (%s); closing", (unsigned long long)c->peer_id,
                     embraft_status_str(status));
            close_after_reply(c);
            return;
        }
        /* EMBRAFT_ERR_BUSY: the message is dropped; Raft retransmits. */
    }
    buffer_consume(&c->in, offset);
}

void transport_free(struct raftd *r) {
    for (size_t i = 0; i < r->link_count; i++) {
        drop_queue(&r->links[i]);
        free(r->links[i].queue);
    }
    free(r->links);
    r->links = NULL;
    r->link_count = 0;
}
