#include "api.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "json.h"
#include "net.h"
#include "node.h"

#define RETRY_MS 100
#define CONF_RETRY_MS 200
#define CONTROL_BODY_LIMIT 4096
#define RETRY_AFTER "Retry-After: 1\r\n"
/* RAFTD.md "Shards": a joining node asks for each group for up to 60 s. */
#define JOIN_GROUP_TIMEOUT_MS 60000
#define CALL_RETRY_MS 500

/* ---- answering ---- */

static int method_slot(const char *method) {
    if (strcmp(method, "GET") == 0) return 0;
    if (strcmp(method, "POST") == 0) return 1;
    if (strcmp(method, "DELETE") == 0) return 2;
    return 3;
}

static const char *const method_names[METRIC_METHODS] = {"GET", "POST", "DELETE", "other"};

static void count_request(struct raftd *r, const struct conn *c, int code) {
    if (code >= 0 && code < METRIC_CODES) {
        r->requests[method_slot(c->method)][code]++;
    }
}

static void respond(struct raftd *r, struct conn *c, int code, const char *content_type,
                    const char *extra_headers, const void *body, size_t len) {
    if (c == NULL || c->answered) {
        return;
    }
    c->answered = 1;
    c->close_after_write = 1;
    count_request(r, c, code);
    if (http_format_response(&c->out, code, content_type, extra_headers, body, len) != 0) {
        log_line("no room for a response; closing the connection");
        c->out.len = 0;
    }
}

/* Errors carry a short plain-text body saying what went wrong. */
static void respond_text(struct raftd *r, struct conn *c, int code, const char *extra_headers,
                         const char *text) {
    char body[512];
    int len = snprintf(body, sizeof body, "%s\n", text);
    respond(r, c, code, "text/plain; charset=utf-8", extra_headers, body,
            len < 0 ? 0 : (size_t)len >= sizeof body ? sizeof body - 1 : (size_t)len);
}

static void respond_ok(struct raftd *r, struct conn *c) {
    respond(r, c, 200, "text/plain; charset=utf-8", NULL, "", 0);
}

static void respond_buffer(struct raftd *r, struct conn *c, int code, const char *content_type,
                           struct buffer *body) {
    respond(r, c, code, content_type, NULL, body->data ? body->data : (const uint8_t *)"", body->len);
    buffer_free(body);
}

/* ---- pending requests ---- */

static struct pending *pending_new(struct raftd *r, enum pending_kind kind, struct conn *c,
                                   uint64_t timeout_ms) {
    for (size_t i = 0; i < MAX_PENDING; i++) {
        struct pending *p = &r->pending[i];
        if (p->kind == PENDING_FREE) {
            memset(p, 0, sizeof *p);
            p->kind = kind;
            p->serial = ++r->next_pending_serial;
            p->group = 1;
            p->conn = c ? (int)(c - r->conns) : -1;
            p->conn_serial = c ? c->serial : 0;
            p->deadline = now_ms() + timeout_ms;
            return p;
        }
    }
    respond_text(r, c, 503, RETRY_AFTER, "too many requests in flight");
    return NULL;
}

static struct conn *pending_client(struct raftd *r, struct pending *p) {
    return conn_get(r, p->conn, p->conn_serial);
}

static struct shard *pending_shard(struct raftd *r, const struct pending *p) {
    return &r->shards[p->group - 1];
}

static void pending_finish(struct raftd *r, struct pending *p, int code, const char *text) {
    if (text != NULL) {
        respond_text(r, pending_client(r, p), code, code == 503 ? RETRY_AFTER : NULL, text);
    }
    p->kind = PENDING_FREE;
}

/* Submits a command to the log for `p`. */
static void propose_command(struct raftd *r, struct pending *p, struct buffer *command) {
    embraft_status status = command->data == NULL ? EMBRAFT_ERR_RESOURCE
                                                  : engine_propose(r, pending_shard(r, p), command->data,
                                                                   command->len, &p->proposal);
    buffer_free(command);
    if (status == EMBRAFT_ERR_BUSY) {
        p->retry_at = now_ms() + RETRY_MS;
    } else if (status == EMBRAFT_ERR_TOO_LARGE) {
        pending_finish(r, p, 413, "value too large for a log entry");
    } else if (status != EMBRAFT_OK) {
        log_embraft_error(r, "propose", status);
        pending_finish(r, p, 500, "the node refused the proposal");
    }
}

static void propose_conf_change(struct raftd *r, struct pending *p, uint32_t change) {
    embraft_status status =
        engine_conf_change(r, pending_shard(r, p), change, p->target, &p->proposal);
    if (status == EMBRAFT_ERR_BUSY) {
        p->retry_at = now_ms() + RETRY_MS;
    } else if (status != EMBRAFT_OK) {
        log_embraft_error(r, "propose_conf_change", status);
        pending_finish(r, p, 500, "the node refused the membership change");
    }
}

static void ask_read_index(struct raftd *r, struct pending *p) {
    p->read_context = ++r->next_read_context;
    p->read_index = 0;
    if (engine_read_index(r, pending_shard(r, p), p->read_context) != EMBRAFT_OK) {
        p->retry_at = now_ms() + RETRY_MS;
    }
}

/* ---- requests of this node's own to other nodes ---- */

/* POSTs `body` to `path` on `addr`; the answer comes back to `p`
 * (on_call_answer). `forwarded` marks a request already routed to the
 * node that must serve it, so it is not forwarded again. */
static int call_start(struct raftd *r, struct pending *p, const char *addr, const char *path,
                      const char *body, int forwarded) {
    int fd = net_connect(addr);
    int index = fd >= 0 ? conn_open(r, fd, CONN_PROXY, 1) : -1;
    if (index < 0) {
        return -1;
    }
    struct conn *call = &r->conns[index];
    call->caller = (int)(p - r->pending);
    call->caller_serial = p->serial;
    call->deadline = now_ms() + WRITE_TIMEOUT_MS + 2000;
    if (buffer_printf(&call->out,
                      "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\n%sConnection: close\r\n\r\n%s",
                      path, addr, strlen(body), forwarded ? "X-Raftd-Forwarded: 1\r\n" : "",
                      body) != 0) {
        conn_close(r, index, NULL);
        return -1;
    }
    p->calling = 1;
    return 0;
}

/* Another node to ask, for requests any node forwards where they belong:
 * the -join address or a peer of the address book, another one at each
 * attempt of `p`; NULL when none is known. */
static const char *any_other_node(struct raftd *r, struct pending *p) {
    const struct kv_store *book = address_book(r);
    size_t count = (r->join_addr != NULL) + book->peer_count;
    for (size_t tries = 0; tries < count; tries++) {
        size_t pick = p->attempt++ % count;
        if (r->join_addr != NULL && pick-- == 0) {
            return r->join_addr;
        }
        if (book->peers[pick].id != r->id && book->peers[pick].id != p->target) {
            return book->peers[pick].addr;
        }
    }
    return NULL;
}

/* Joining step 3 for group p->group, through any other node. */
static void ask_to_join_group(struct raftd *r, struct pending *p) {
    const char *addr = any_other_node(r, p);
    char body[KV_MAX_ADDR + 128];
    snprintf(body, sizeof body, "{\"id\": \"%llu\", \"addr\": \"%s\", \"group\": %llu}",
             (unsigned long long)r->id, r->advertise, (unsigned long long)p->group);
    if (addr == NULL || call_start(r, p, addr, "/join", body, 0) != 0) {
        p->retry_at = now_ms() + CALL_RETRY_MS;
    }
}

/* A leader that removed itself from group 1 can no longer propose the
 * address's removal: it asks another node to run the whole /leave again,
 * which finds the node in no group and removes the address. */
static void leave_through_other_node(struct raftd *r, struct pending *p) {
    const char *addr = any_other_node(r, p);
    char body[64];
    snprintf(body, sizeof body, "{\"id\": \"%llu\"}", (unsigned long long)p->target);
    if (addr == NULL || call_start(r, p, addr, "/leave", body, 0) != 0) {
        p->retry_at = now_ms() + CALL_RETRY_MS;
    }
}

/* Removal from a group this node does not lead: asked of its leader. */
static void leave_through_leader(struct raftd *r, struct pending *p) {
    const struct shard *s = pending_shard(r, p);
    const char *addr = s->leader != 0 ? kv_peer_addr(address_book(r), s->leader) : NULL;
    char body[128];
    snprintf(body, sizeof body, "{\"id\": \"%llu\", \"group\": %llu}",
             (unsigned long long)p->target, (unsigned long long)p->group);
    if (addr == NULL || call_start(r, p, addr, "/leave", body, 1) != 0) {
        p->retry_at = now_ms() + CALL_RETRY_MS;
    }
}

/* (Re)issues what `p` waits for. A plain write keeps no copy of its
 * command, so it is never re-proposed: its client gets an answer instead. */
static void pending_issue(struct raftd *r, struct pending *p) {
    struct buffer command;
    buffer_init(&command, KV_MAX_ADDR + 32);
    p->proposal = 0;
    switch (p->kind) {
    case PENDING_READ:
        ask_read_index(r, p);
        break;
    case PENDING_JOIN_PEER:
        kv_encode_peer(&command, p->target, p->addr);
        propose_command(r, p, &command);
        break;
    case PENDING_SELF_ADDR:
        kv_encode_peer(&command, r->id, r->advertise);
        propose_command(r, p, &command);
        break;
    case PENDING_LEAVE_PEER:
        if (p->elsewhere) {
            leave_through_other_node(r, p);
            break;
        }
        kv_encode_remove_peer(&command, p->target);
        propose_command(r, p, &command);
        break;
    case PENDING_JOIN_VOTER:
        propose_conf_change(r, p, EMBRAFT_CONF_ADD_VOTER);
        break;
    case PENDING_LEAVE_REMOVE:
        if (pending_shard(r, p)->role == EMBRAFT_ROLE_LEADER) {
            propose_conf_change(r, p, EMBRAFT_CONF_REMOVE_NODE);
        } else {
            leave_through_leader(r, p);
        }
        break;
    case PENDING_JOIN_GROUP:
        ask_to_join_group(r, p);
        break;
    default:
        break;
    }
}

static void answer_cluster_description(struct raftd *r, struct pending *p) {
    struct buffer body;
    buffer_init(&body, 1024 * 1024);
    buffer_printf(&body, "{\"cluster_id\": \"%llu\", \"leader\": \"%llu\", \"peers\": ",
                  (unsigned long long)r->cluster_id, (unsigned long long)r->id);
    peers_json(&body, address_book(r));
    if (r->runtime != NULL) {
        buffer_printf(&body, ", \"shards\": %llu", (unsigned long long)r->shard_count);
    }
    buffer_printf(&body, "}\n");
    respond_buffer(r, pending_client(r, p), 200, "application/json", &body);
    p->kind = PENDING_FREE;
    if (r->runtime != NULL) {
        log_verbose_line("node %llu joined group %llu", (unsigned long long)p->target,
                         (unsigned long long)p->group);
    } else {
        log_verbose_line("node %llu (%s) joined", (unsigned long long)p->target, p->addr);
    }
}

/* The next stage of a request once its proposal committed. */
static void on_committed(struct raftd *r, struct pending *p) {
    switch (p->kind) {
    case PENDING_JOIN_PEER:
        p->kind = PENDING_JOIN_VOTER;
        if (node_is_voter(r, pending_shard(r, p), p->target)) {
            answer_cluster_description(r, p);
        } else {
            pending_issue(r, p);
        }
        break;
    case PENDING_JOIN_VOTER:
        answer_cluster_description(r, p);
        break;
    case PENDING_LEAVE_REMOVE:
        /* Without a group: from groups N down to 2, then group 1, then
         * the address (RAFTD.md "Shards"); with one: that group only. */
        if (p->all_groups && p->group > 1) {
            p->group--;
            pending_issue(r, p);
        } else if (p->all_groups) {
            p->kind = PENDING_LEAVE_PEER;
            pending_issue(r, p);
        } else {
            respond_ok(r, pending_client(r, p));
            p->kind = PENDING_FREE;
        }
        break;
    case PENDING_WRITE:
    case PENDING_LEAVE_PEER: {
        struct conn *c = pending_client(r, p);
        respond_ok(r, c);
        p->kind = PENDING_FREE;
        break;
    }
    default:
        p->kind = PENDING_FREE;
        break;
    }
}

void api_on_outcome(struct raftd *r, const struct shard *s, uint64_t proposal, uint32_t outcome,
                    uint64_t index) {
    (void)index;
    for (size_t i = 0; i < MAX_PENDING; i++) {
        struct pending *p = &r->pending[i];
        if (p->kind == PENDING_FREE || p->kind == PENDING_READ || p->proposal != proposal ||
            p->group != s->group || p->calling) {
            continue;
        }
        switch (outcome) {
        case EMBRAFT_PROPOSAL_COMMITTED:
            on_committed(r, p);
            break;
        case EMBRAFT_PROPOSAL_DROPPED_CONF_CHANGE_PENDING:
            /* An earlier change is still being applied: ask again soon. */
            p->retry_at = now_ms() + CONF_RETRY_MS;
            break;
        case EMBRAFT_PROPOSAL_DROPPED_CONF_CHANGE_INVALID:
            if (p->kind == PENDING_JOIN_VOTER && node_is_voter(r, s, p->target)) {
                answer_cluster_description(r, p); /* a repeated join */
            } else if (p->kind == PENDING_LEAVE_REMOVE) {
                on_committed(r, p); /* not a member any more: drop its address */
            } else {
                pending_finish(r, p, 409, "membership change refused by the cluster");
            }
            break;
        case EMBRAFT_PROPOSAL_DROPPED_LEARNER_BEHIND:
            p->retry_at = now_ms() + CONF_RETRY_MS;
            break;
        case EMBRAFT_PROPOSAL_DROPPED_TOO_LARGE:
            pending_finish(r, p, 413, "value too large for a log entry");
            break;
        case EMBRAFT_PROPOSAL_DROPPED_NOT_LEADER:
        case EMBRAFT_PROPOSAL_DROPPED_TRANSFER:
            if (p->kind == PENDING_LEAVE_PEER && !p->elsewhere) {
                p->elsewhere = 1; /* a leader that removed itself */
                pending_issue(r, p);
            } else if (p->kind == PENDING_LEAVE_REMOVE && p->all_groups && p->group > 1) {
                p->retry_at = now_ms() + CONF_RETRY_MS; /* asks the group's new leader */
            } else {
                pending_finish(r, p, 503, "this node is no longer the leader; retry");
            }
            break;
        case EMBRAFT_PROPOSAL_DROPPED_SUPERSEDED:
            pending_finish(r, p, 503, "a new leader replaced the entry; retry");
            break;
        default:
            pending_finish(r, p, 500, "outcome unknown");
            break;
        }
        return;
    }
}

static void serve_read(struct raftd *r, struct conn *c, const struct shard *s, const char *key,
                       size_t key_len) {
    const uint8_t *value = NULL;
    size_t value_len = 0;
    if (kv_get(&s->kv, key, key_len, &value, &value_len) == 0) {
        respond(r, c, 200, "application/octet-stream", NULL, value, value_len);
    } else {
        respond_text(r, c, 404, NULL, "no such key");
    }
}

void api_on_read(struct raftd *r, const struct shard *s, uint64_t context, uint32_t result,
                 uint64_t index) {
    for (size_t i = 0; i < MAX_PENDING; i++) {
        struct pending *p = &r->pending[i];
        if (p->kind != PENDING_READ || p->read_context != context || p->group != s->group) {
            continue;
        }
        if (result == EMBRAFT_READ_OK) {
            p->read_index = index > 0 ? index : 1;
            api_after_apply(r);
        } else {
            p->retry_at = now_ms() + RETRY_MS; /* no leader yet, or it changed */
        }
        return;
    }
}

void api_after_apply(struct raftd *r) {
    for (size_t i = 0; i < MAX_PENDING; i++) {
        struct pending *p = &r->pending[i];
        if (p->kind == PENDING_READ && p->read_index != 0 &&
            pending_shard(r, p)->applied >= p->read_index) {
            serve_read(r, pending_client(r, p), pending_shard(r, p), p->key, p->key_len);
            p->kind = PENDING_FREE;
        }
    }
}

void api_on_timer(struct raftd *r, uint64_t now) {
    for (size_t i = 0; i < MAX_PENDING; i++) {
        struct pending *p = &r->pending[i];
        if (p->kind == PENDING_FREE) {
            continue;
        }
        if (now >= p->deadline) {
            if (p->kind == PENDING_JOIN_GROUP) {
                log_line("could not join group %llu within 60 s; stopping",
                         (unsigned long long)p->group);
                r->fatal = 1;
                p->kind = PENDING_FREE;
            } else if (p->kind == PENDING_READ) {
                pending_finish(r, p, 503, "no read index within 5 s (no leader?)");
            } else {
                pending_finish(r, p, 504, "not committed within 10 s; the outcome is unknown");
            }
        } else if (p->retry_at != 0 && now >= p->retry_at) {
            p->retry_at = 0;
            if (p->kind == PENDING_WRITE) {
                pending_finish(r, p, 503, "the node is busy; retry");
            } else {
                pending_issue(r, p);
            }
        }
    }
}

int api_pending_self_address(struct raftd *r) {
    for (size_t i = 0; i < MAX_PENDING; i++) {
        if (r->pending[i].kind == PENDING_SELF_ADDR) {
            return 1;
        }
    }
    return 0;
}

void api_join_groups(struct raftd *r) {
    uint64_t group = 0;
    for (size_t i = 0; i < MAX_PENDING; i++) {
        if (r->pending[i].kind == PENDING_JOIN_GROUP) {
            return;
        }
    }
    for (uint64_t g = 2; g <= r->shard_count && group == 0; g++) {
        group = r->shards[g - 1].needs_join ? g : 0;
    }
    struct pending *p = group ? pending_new(r, PENDING_JOIN_GROUP, NULL, JOIN_GROUP_TIMEOUT_MS) : NULL;
    if (p != NULL) {
        p->group = group;
        log_verbose_line("asking to join group %llu", (unsigned long long)group);
        pending_issue(r, p);
    }
}

/* The answer to a request of this node's own (code 0: none came). */
static void on_call_answer(struct raftd *r, struct pending *p, int code) {
    p->calling = 0;
    if (code == 200 && p->kind == PENDING_JOIN_GROUP) {
        pending_shard(r, p)->needs_join = 0;
        r->groups_to_join--;
        log_verbose_line("joined group %llu", (unsigned long long)p->group);
        p->kind = PENDING_FREE;
        api_join_groups(r); /* the next one, if any */
    } else if (code == 200) {
        on_committed(r, p); /* a removal by another group's leader */
    } else if (code == 0 || code == 503 || code == 504) {
        p->retry_at = now_ms() + CALL_RETRY_MS;
    } else if (p->kind == PENDING_JOIN_GROUP) {
        log_line("the cluster refused to add this node to group %llu (status %d); stopping",
                 (unsigned long long)p->group, code);
        r->fatal = 1;
        p->kind = PENDING_FREE;
    } else {
        char text[128];
        snprintf(text, sizeof text, "removal from group %llu failed with status %d",
                 (unsigned long long)p->group, code);
        pending_finish(r, p, code, text);
    }
}

void api_record_self_address(struct raftd *r) {
    struct pending *p = pending_new(r, PENDING_SELF_ADDR, NULL, WRITE_TIMEOUT_MS);
    if (p != NULL) {
        log_verbose_line("recording this node's address %s", r->advertise);
        pending_issue(r, p);
    }
}

/* ---- forwarding to the leader ---- */

/* To the leader of group `s` (RAFTD.md: by the group's leader and group
 * 1's address book). */
static void forward(struct raftd *r, struct conn *c, const struct http_request *req,
                    const struct shard *s, const void *body, size_t body_len) {
    const char *addr = s->leader ? kv_peer_addr(address_book(r), s->leader) : NULL;
    if (req->forwarded) {
        /* It came from a follower that thought we lead: never forward twice. */
        respond_text(r, c, 503, RETRY_AFTER, "this node is not the leader");
        return;
    }
    if (addr == NULL) {
        respond_text(r, c, 503, RETRY_AFTER, "no leader known; retry");
        return;
    }
    int fd = net_connect(addr);
    int index = fd >= 0 ? conn_open(r, fd, CONN_PROXY, 1) : -1;
    if (index < 0) {
        respond_text(r, c, 503, RETRY_AFTER, "cannot reach the leader");
        return;
    }
    struct conn *proxy = &r->conns[index];
    proxy->client = (int)(c - r->conns);
    proxy->client_serial = c->serial;
    proxy->deadline = now_ms() + WRITE_TIMEOUT_MS + 2000;
    if (buffer_printf(&proxy->out,
                      "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %zu\r\n"
                      "X-Raftd-Forwarded: 1\r\nConnection: close\r\n\r\n",
                      req->method, req->target, addr, body_len) != 0 ||
        buffer_append(&proxy->out, body, body_len) != 0) {
        conn_close(r, index, "request too large to forward");
    }
}

void api_on_proxy_closed(struct raftd *r, struct conn *proxy, const char *why) {
    if (proxy->caller >= 0 && proxy->caller < MAX_PENDING) {
        struct pending *p = &r->pending[proxy->caller];
        if (p->kind != PENDING_FREE && p->serial == proxy->caller_serial && p->calling) {
            on_call_answer(r, p, why == NULL ? http_response_code(proxy->in.data, proxy->in.len) : 0);
        }
        return;
    }
    struct conn *client = conn_get(r, proxy->client, proxy->client_serial);
    if (client == NULL || client->answered) {
        return;
    }
    int code = why == NULL ? http_response_code(proxy->in.data, proxy->in.len) : 0;
    if (code != 0) {
        /* Relay the leader's answer byte for byte. */
        client->answered = 1;
        client->close_after_write = 1;
        count_request(r, client, code);
        if (buffer_append(&client->out, proxy->in.data, proxy->in.len) != 0) {
            client->out.len = 0;
        }
        return;
    }
    char text[256];
    snprintf(text, sizeof text, "forwarding to the leader failed: %s",
             why ? why : "no valid answer");
    respond_text(r, client, 503, RETRY_AFTER, text);
}

/* ---- endpoints ---- */

/* Structural UTF-8 check (lead byte, length, continuation bytes). */
static int is_valid_utf8(const unsigned char *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        unsigned char lead = s[i];
        size_t extra;
        if (lead < 0x80) {
            extra = 0;
        } else if (lead >= 0xc2 && lead <= 0xdf) {
            extra = 1;
        } else if (lead >= 0xe0 && lead <= 0xef) {
            extra = 2;
        } else if (lead >= 0xf0 && lead <= 0xf4) {
            extra = 3;
        } else {
            return 0;
        }
        if (len - i <= extra) {
            return 0;
        }
        for (size_t k = 1; k <= extra; k++) {
            if ((s[i + k] & 0xc0) != 0x80) {
                return 0;
            }
        }
        i += extra + 1;
    }
    return 1;
}

static int query_has(const char *query, const char *param) {
    size_t len = strlen(param);
    for (const char *at = query; at != NULL && *at;) {
        if (strncmp(at, param, len) == 0 && (at[len] == '\0' || at[len] == '&')) {
            return 1;
        }
        at = strchr(at, '&');
        at = at ? at + 1 : NULL;
    }
    return 0;
}

static void handle_db(struct raftd *r, struct conn *c, const struct http_request *req,
                      const char *raw_key, size_t raw_len, const char *query, const uint8_t *body,
                      size_t body_len) {
    char key[KV_MAX_KEY];
    long key_len = http_percent_decode(raw_key, raw_len, key, sizeof key);
    if (raw_len == 0 || key_len == 0) {
        respond_text(r, c, 400, NULL, "empty key");
        return;
    }
    if (memchr(raw_key, '/', raw_len) != NULL) {
        respond_text(r, c, 400, NULL, "a key is one path segment (no '/')");
        return;
    }
    if (key_len < 0) {
        respond_text(r, c, 400, NULL, "key longer than 1024 bytes, or a bad %-escape");
        return;
    }
    if (!is_valid_utf8((const unsigned char *)key, (size_t)key_len)) {
        respond_text(r, c, 400, NULL, "the key is not UTF-8");
        return;
    }
    int is_get = strcmp(req->method, "GET") == 0;
    int is_post = strcmp(req->method, "POST") == 0;
    int is_delete = strcmp(req->method, "DELETE") == 0;
    struct shard *s = shard_of(r, kv_group_of(key, (size_t)key_len, r->shard_count));
    if (is_get && query_has(query, "stale=true")) {
        serve_read(r, c, s, key, (size_t)key_len);
        return;
    }
    if (is_get) {
        struct pending *p = pending_new(r, PENDING_READ, c, READ_TIMEOUT_MS);
        if (p != NULL) {
            p->group = s->group;
            memcpy(p->key, key, (size_t)key_len);
            p->key_len = (size_t)key_len;
            pending_issue(r, p);
        }
        return;
    }
    if (!is_post && !is_delete) {
        respond_text(r, c, 405, "Allow: GET, POST, DELETE\r\n", "use GET, POST or DELETE on /db/<key>");
        return;
    }
    if (s->role != EMBRAFT_ROLE_LEADER) {
        forward(r, c, req, s, body, body_len);
        return;
    }
    struct buffer command;
    buffer_init(&command, KV_MAX_VALUE + KV_MAX_KEY + 16);
    int failed = is_post ? kv_encode_set(&command, key, (size_t)key_len, body, body_len)
                         : kv_encode_delete(&command, key, (size_t)key_len);
    struct pending *p = failed ? NULL : pending_new(r, PENDING_WRITE, c, WRITE_TIMEOUT_MS);
    if (p != NULL) {
        p->group = s->group;
        propose_command(r, p, &command);
    } else {
        buffer_free(&command);
        respond_text(r, c, 500, NULL, "cannot encode the command");
    }
}

/* The optional "group" of a /join or /leave body (RAFTD.md "Shards"): 0
 * when absent, the group when it runs here, -1 (answered 400) otherwise. */
static int64_t requested_group(struct raftd *r, struct conn *c, const uint8_t *body,
                               size_t body_len) {
    uint64_t group = 0;
    if (!json_has_member((const char *)body, body_len, "group")) {
        return 0;
    }
    if (json_get_id((const char *)body, body_len, "group", &group) != 0 ||
        group > r->shard_count) {
        char text[128];
        snprintf(text, sizeof text, "\"group\" must be a number from 1 to %llu",
                 (unsigned long long)r->shard_count);
        respond_text(r, c, 400, NULL, text);
        return -1;
    }
    return (int64_t)group;
}

static void handle_join(struct raftd *r, struct conn *c, const struct http_request *req,
                        const uint8_t *body, size_t body_len) {
    uint64_t id = 0;
    char addr[KV_MAX_ADDR + 1], host[MAX_HOST + 1];
    unsigned port = 0;
    if (json_get_id((const char *)body, body_len, "id", &id) != 0 ||
        json_get_string((const char *)body, body_len, "addr", addr, sizeof addr) != 0 ||
        split_host_port(addr, host, sizeof host, &port) != 0) {
        respond_text(r, c, 400, NULL,
                     "malformed join request: expected {\"id\": \"<id>\", \"addr\": \"host:port\"}");
        return;
    }
    int64_t group = requested_group(r, c, body, body_len);
    if (group < 0) {
        return;
    }
    struct shard *s = shard_of(r, group > 0 ? (uint64_t)group : 1);
    if (s->role != EMBRAFT_ROLE_LEADER) {
        forward(r, c, req, s, body, body_len);
        return;
    }
    /* Group 1 records the address first; the others only add the voter. */
    enum pending_kind first = s->group == 1 ? PENDING_JOIN_PEER : PENDING_JOIN_VOTER;
    struct pending *p = pending_new(r, first, c, WRITE_TIMEOUT_MS);
    if (p != NULL) {
        p->group = s->group;
        p->target = id;
        snprintf(p->addr, sizeof p->addr, "%s", addr);
        if (first == PENDING_JOIN_VOTER && node_is_voter(r, s, id)) {
            answer_cluster_description(r, p); /* a repeated join */
        } else {
            pending_issue(r, p);
        }
    }
}

static void handle_leave(struct raftd *r, struct conn *c, const struct http_request *req,
                         const uint8_t *body, size_t body_len) {
    uint64_t id = r->id;
    int has_body = body_len > 0;
    if (has_body && json_get_id((const char *)body, body_len, "id", &id) != 0) {
        respond_text(r, c, 400, NULL, "malformed leave request: expected {\"id\": \"<id>\"}");
        return;
    }
    int64_t group = has_body ? requested_group(r, c, body, body_len) : 0;
    if (group < 0) {
        return;
    }
    if (r->runtime == NULL) {
        group = 0; /* one group: naming it changes nothing */
    }
    /* Leaving every group is run by group 1's leader. */
    struct shard *s = shard_of(r, group > 0 ? (uint64_t)group : 1);
    if (s->role != EMBRAFT_ROLE_LEADER) {
        /* Name the node explicitly: an empty body means the receiver. */
        char named[96];
        int len = group > 0 ? snprintf(named, sizeof named, "{\"id\": \"%llu\", \"group\": %lld}",
                                       (unsigned long long)id, (long long)group)
                            : snprintf(named, sizeof named, "{\"id\": \"%llu\"}",
                                       (unsigned long long)id);
        forward(r, c, req, s, named, (size_t)len);
        return;
    }
    int all = group == 0;
    struct pending *p = pending_new(r, PENDING_LEAVE_REMOVE, c,
                                    WRITE_TIMEOUT_MS * (all ? r->shard_count : 1));
    if (p != NULL) {
        p->target = id;
        p->all_groups = all;
        p->group = all ? r->shard_count : (uint64_t)group;
        pending_issue(r, p);
    }
}

static void handle_status(struct raftd *r, struct conn *c) {
    struct buffer body;
    /* Room for every group's object too. */
    buffer_init(&body, 1024 * 1024 + r->shard_count * 4096);
    if (node_status_json(r, &body) != 0) {
        buffer_free(&body);
        respond_text(r, c, 500, NULL, "status unavailable");
        return;
    }
    respond_buffer(r, c, 200, "application/json", &body);
}

/* ---- /metrics (RAFTD.md "Metrics"), in the Prometheus text format 0.0.4 ---- */

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* The `le` of each histogram bucket, in seconds, written as Go writes
 * floats: bucket i holds observations of at most 32 us << i; the last one
 * everything beyond. */
_Static_assert(EMBRAFT_HISTOGRAM_BUCKETS == 20 && EMBRAFT_HISTOGRAM_FIRST_BOUND_US == 32,
               "the bucket bounds below are 32 us doubling, 20 buckets");
static const char *const bucket_bounds[EMBRAFT_HISTOGRAM_BUCKETS] = {
    "3.2e-05",  "6.4e-05",  "0.000128", "0.000256", "0.000512", "0.001024", "0.002048",
    "0.004096", "0.008192", "0.016384", "0.032768", "0.065536", "0.131072", "0.262144",
    "0.524288", "1.048576", "2.097152", "4.194304", "8.388608", "+Inf"};

/* The text being written; `failed` sticks once the buffer refused data.
 * `group`, when set, is the value of a label group="..." put first on
 * every sample (RAFTD.md "Shards": per-group series). */
struct exposition {
    struct buffer out;
    int failed;
    const char *group;
};

static void emit(struct exposition *e, const char *text, size_t len) {
    if (!e->failed && buffer_append(&e->out, text, len) != 0) {
        e->failed = 1;
    }
}

static void emit_str(struct exposition *e, const char *text) {
    emit(e, text, strlen(text));
}

/* Escapes backslash and newline (in help texts), and double quote too (in
 * label values). */
static void emit_escaped(struct exposition *e, const char *text, int is_label_value) {
    for (const char *p = text; *p != '\0'; p++) {
        if (*p == '\\') {
            emit_str(e, "\\\\");
        } else if (*p == '\n') {
            emit_str(e, "\\n");
        } else if (*p == '"' && is_label_value) {
            emit_str(e, "\\\"");
        } else {
            emit(e, p, 1);
        }
    }
}

static void family(struct exposition *e, const char *name, const char *type, const char *help) {
    emit_str(e, "# HELP ");
    emit_str(e, name);
    emit_str(e, " ");
    emit_escaped(e, help, 0);
    emit_str(e, "\n# TYPE ");
    emit_str(e, name);
    emit_str(e, " ");
    emit_str(e, type);
    emit_str(e, "\n");
}

/* NAME{LABEL="VALUE",...} VALUE: `labels` holds `pairs` names and values,
 * alternating, after the group label if any. */
static void sample_text(struct exposition *e, const char *name, const char *const *labels,
                        size_t pairs, const char *value) {
    int open = 0;
    emit_str(e, name);
    if (e->group != NULL) {
        emit_str(e, "{group=\"");
        emit_str(e, e->group);
        emit_str(e, "\"");
        open = 1;
    }
    for (size_t i = 0; i < pairs; i++) {
        emit_str(e, open ? "," : "{");
        open = 1;
        emit_str(e, labels[2 * i]);
        emit_str(e, "=\"");
        emit_escaped(e, labels[2 * i + 1], 1);
        emit_str(e, "\"");
    }
    emit_str(e, open ? "} " : " ");
    emit_str(e, value);
    emit_str(e, "\n");
}

static void sample(struct exposition *e, const char *name, const char *const *labels,
                   size_t pairs, uint64_t value) {
    char digits[24];
    snprintf(digits, sizeof digits, "%llu", (unsigned long long)value);
    sample_text(e, name, labels, pairs, digits);
}

/* NAME_bucket{le=...} cumulative, NAME_sum in seconds, NAME_count. */
static void histogram_samples(struct exposition *e, const char *name, const embraft_histogram *h) {
    char series[128], sum[48];
    snprintf(series, sizeof series, "%s_bucket", name);
    uint64_t cumulative = 0;
    for (size_t i = 0; i < EMBRAFT_HISTOGRAM_BUCKETS; i++) {
        cumulative += h->buckets[i];
        const char *labels[2] = {"le", bucket_bounds[i]};
        sample(e, series, labels, 1, cumulative);
    }
    /* Microseconds as exact decimal seconds. */
    snprintf(series, sizeof series, "%s_sum", name);
    snprintf(sum, sizeof sum, "%llu.%06llu", (unsigned long long)(h->sum_us / 1000000),
             (unsigned long long)(h->sum_us % 1000000));
    sample_text(e, series, NULL, 0, sum);
    snprintf(series, sizeof series, "%s_count", name);
    sample(e, series, NULL, 0, h->count);
}

/* What one group exports, read at the scrape. */
struct figures {
    embraft_metrics m;
    uint64_t term, commit, applied, last, is_leader;
};

/* Where a family's value sits in struct figures: a uint64_t, an array of
 * them (one series per label value), or an embraft_histogram. */
enum field_kind { FIELD_VALUE, FIELD_LABELLED, FIELD_HISTOGRAM };

struct field {
    enum field_kind kind;
    size_t offset;
    const char *label;
    size_t count;
    const char *(*label_value)(size_t);
};

/* A family with the series of every group, each labelled with its group
 * on a sharded node; a one-group node's series carry no group label. */
static void per_group(struct exposition *e, const struct raftd *r, const struct figures *figures,
                      const char *name, const char *type, const char *help, struct field field) {
    family(e, name, type, help);
    for (uint64_t g = 0; g < r->shard_count; g++) {
        char group[24];
        snprintf(group, sizeof group, "%llu", (unsigned long long)(g + 1));
        e->group = r->runtime != NULL ? group : NULL;
        const char *at = (const char *)&figures[g] + field.offset;
        if (field.kind == FIELD_HISTOGRAM) {
            histogram_samples(e, name, (const embraft_histogram *)(const void *)at);
        } else if (field.kind == FIELD_LABELLED) {
            /* Every value, zeros included, so each series exists at once. */
            const uint64_t *values = (const uint64_t *)(const void *)at;
            for (size_t i = 0; i < field.count; i++) {
                const char *value_name = field.label_value(i);
                const char *labels[2] = {field.label, value_name != NULL ? value_name : "unknown"};
                sample(e, name, labels, 1, values[i]);
            }
        } else {
            sample(e, name, NULL, 0, *(const uint64_t *)(const void *)at);
        }
    }
    e->group = NULL;
}

#define VALUE(member) ((struct field){FIELD_VALUE, offsetof(struct figures, member), NULL, 0, NULL})
#define HISTOGRAM(member) \
    ((struct field){FIELD_HISTOGRAM, offsetof(struct figures, member), NULL, 0, NULL})
#define LABELLED(member, label, count, names) \
    ((struct field){FIELD_LABELLED, offsetof(struct figures, member), label, count, names})

static int read_figures(struct raftd *r, const struct shard *s, struct figures *f) {
    embraft_status_report *report = NULL;
    embraft_status status = engine_metrics(r, s, &f->m);
    if (status == EMBRAFT_OK) {
        status = engine_status(r, s, &report);
    }
    if (status != EMBRAFT_OK) {
        log_embraft_error(r, "reading the node's metrics", status);
        return -1;
    }
    embraft_status_report_get(report, EMBRAFT_FIELD_TERM, &f->term);
    embraft_status_report_get(report, EMBRAFT_FIELD_COMMIT, &f->commit);
    embraft_status_report_get(report, EMBRAFT_FIELD_LAST_INDEX, &f->last);
    embraft_status_report_free(report);
    f->applied = s->applied;
    f->is_leader = s->role == EMBRAFT_ROLE_LEADER;
    return 0;
}

static void handle_metrics(struct raftd *r, struct conn *c) {
    struct figures *f = calloc(r->shard_count, sizeof *f);
    int failed = f == NULL;
    for (uint64_t g = 0; g < r->shard_count && !failed; g++) {
        failed = read_figures(r, &r->shards[g], &f[g]) != 0;
    }
    if (failed) {
        free(f);
        respond_text(r, c, 500, NULL, "metrics unavailable");
        return;
    }
    /* The shared WAL's series are the runtime's: the same in every group. */
    const embraft_metrics *wal = &f[0].m;

    struct exposition e = {.failed = 0, .group = NULL};
    buffer_init(&e.out, 1024 * 1024 + r->shard_count * 64 * 1024);
    per_group(&e, r, f, "embraft_term", "gauge", "The node's current term.", VALUE(term));
    per_group(&e, r, f, "embraft_commit_index", "gauge", "The highest log index known committed.",
              VALUE(commit));
    per_group(&e, r, f, "embraft_applied_index", "gauge",
              "The highest log index applied to the key/value store.", VALUE(applied));
    per_group(&e, r, f, "embraft_last_index", "gauge",
              "The index of the last entry in the node's log.", VALUE(last));
    per_group(&e, r, f, "embraft_is_leader", "gauge", "1 if this node is the leader, else 0.",
              VALUE(is_leader));
    family(&e, "embraft_disk_wal_fsync_duration_seconds", "histogram",
           "The latency distributions of the WAL's syncs (fdatasync or msync).");
    histogram_samples(&e, "embraft_disk_wal_fsync_duration_seconds", &wal->wal_sync_duration);
    family(&e, "embraft_disk_wal_write_bytes_total", "counter",
           "Bytes of records written to the WAL.");
    sample(&e, "embraft_disk_wal_write_bytes_total", NULL, 0, wal->wal_bytes_written);
    family(&e, "embraft_disk_wal_write_batches_total", "counter", "Batches written to the WAL.");
    sample(&e, "embraft_disk_wal_write_batches_total", NULL, 0, wal->wal_batches_written);
    per_group(&e, r, f, "embraft_server_proposals_committed_total", "counter",
              "Proposals made on this node that committed.", VALUE(m.proposals_committed));
    per_group(&e, r, f, "embraft_server_proposals_failed_total", "counter",
              "Proposals made on this node that were dropped, by reason (not_leader, "
              "transfer_in_progress, too_large, superseded, conf_change_pending, "
              "conf_change_invalid, learner_behind, unknown).",
              LABELLED(m.proposals_dropped, "reason", EMBRAFT_DROP_REASONS,
                       embraft_metrics_drop_reason));
    per_group(&e, r, f, "embraft_server_proposal_commit_duration_seconds", "histogram",
              "The latency distributions from a proposal's append on the leader to its commit.",
              HISTOGRAM(m.proposal_commit_latency));
    per_group(&e, r, f, "embraft_server_leader_changes_seen_total", "counter",
              "Times the known leader changed.", VALUE(m.leader_changes));
    per_group(&e, r, f, "embraft_server_elections_started_total", "counter",
              "Elections this node started as a candidate.", VALUE(m.elections_started));
    per_group(&e, r, f, "embraft_server_pre_votes_started_total", "counter",
              "Pre-vote rounds this node started.", VALUE(m.pre_votes_started));
    /* U+2212 MINUS SIGN, as in RAFTD.md. */
    per_group(&e, r, f, "embraft_server_apply_lag_entries", "gauge",
              "Committed entries not yet applied (commit index \xe2\x88\x92 applied index).",
              VALUE(m.apply_lag));
    per_group(&e, r, f, "embraft_network_messages_sent_total", "counter",
              "Raft messages sent, by type (PreVote, Append, Heartbeat, ...: "
              "embraft_metrics_message_kind).",
              LABELLED(m.messages_sent, "type", EMBRAFT_MESSAGE_KINDS,
                       embraft_metrics_message_kind));
    per_group(&e, r, f, "embraft_network_messages_received_total", "counter",
              "Raft messages received, by type.",
              LABELLED(m.messages_received, "type", EMBRAFT_MESSAGE_KINDS,
                       embraft_metrics_message_kind));
    per_group(&e, r, f, "embraft_snapshot_sends_total", "counter",
              "Snapshot transfers completed to followers.", VALUE(m.snapshots_sent));
    per_group(&e, r, f, "embraft_snapshot_sent_bytes_total", "counter",
              "Snapshot chunk bytes sent (resends included).", VALUE(m.snapshot_bytes_sent));
    per_group(&e, r, f, "embraft_snapshot_receives_total", "counter",
              "Snapshots received and installed.", VALUE(m.snapshots_received));
    per_group(&e, r, f, "embraft_snapshot_received_bytes_total", "counter",
              "Snapshot chunk bytes received.", VALUE(m.snapshot_bytes_received));
    per_group(&e, r, f, "embraft_entry_cache_hits_total", "counter",
              "Log entries read from the entry cache.", VALUE(m.cache_hit_entries));
    per_group(&e, r, f, "embraft_entry_cache_misses_total", "counter",
              "Log entries read back from the WAL because they had left the cache.",
              VALUE(m.cache_miss_entries));
    per_group(&e, r, f, "embraft_entry_cache_bytes", "gauge",
              "Bytes of log entries in the entry cache.", VALUE(m.cached_entry_bytes));
    free(f);
    family(&e, "raftd_requests_total", "counter",
           "HTTP requests served, by method and status code.");
    /* This request is counted once answered, so it shows up next time. */
    for (int method = 0; method < METRIC_METHODS; method++) {
        for (int code = 0; code < METRIC_CODES; code++) {
            if (r->requests[method][code] != 0) {
                char code_text[12];
                snprintf(code_text, sizeof code_text, "%d", code);
                const char *labels[4] = {"method", method_names[method], "code", code_text};
                sample(&e, "raftd_requests_total", labels, 2, r->requests[method][code]);
            }
        }
    }
    if (e.failed) {
        buffer_free(&e.out);
        respond_text(r, c, 500, NULL, "metrics too large");
        return;
    }
    respond_buffer(r, c, 200, METRICS_CONTENT_TYPE, &e.out);
}

static void dispatch(struct raftd *r, struct conn *c, const struct http_request *req,
                     const uint8_t *body, size_t body_len) {
    char path[HTTP_MAX_TARGET + 1];
    snprintf(path, sizeof path, "%s", req->target);
    char *query = strchr(path, '?');
    if (query != NULL) {
        *query++ = '\0';
    }
    int is_get = strcmp(req->method, "GET") == 0, is_post = strcmp(req->method, "POST") == 0;
    if (strncmp(path, "/db/", 4) == 0) {
        handle_db(r, c, req, path + 4, strlen(path + 4), query, body, body_len);
    } else if (strcmp(path, "/db") == 0) {
        respond_text(r, c, 400, NULL, "empty key");
    } else if (strcmp(path, "/status") == 0 && is_get) {
        handle_status(r, c);
    } else if (strcmp(path, "/metrics") == 0 && is_get) {
        handle_metrics(r, c);
    } else if (strcmp(path, "/join") == 0 && is_post) {
        handle_join(r, c, req, body, body_len);
    } else if (strcmp(path, "/leave") == 0 && is_post) {
        handle_leave(r, c, req, body, body_len);
    } else if (strcmp(path, "/status") == 0 || strcmp(path, "/metrics") == 0 ||
               strcmp(path, "/join") == 0 || strcmp(path, "/leave") == 0) {
        respond_text(r, c, 405, NULL, "method not allowed here");
    } else {
        respond_text(r, c, 404, NULL, "no such endpoint");
    }
}

void api_on_http(struct raftd *r, int index) {
    struct conn *c = &r->conns[index];
    static struct http_request req; /* 4 KiB: kept off the stack; one thread */
    int code = 0;
    const char *error = NULL;
    if (c->dispatched || c->answered) {
        return; /* one request per connection; the rest is ignored */
    }
    enum http_parse_result parsed = http_parse(c->in.data, c->in.len, &req, &code, &error);
    if (parsed == HTTP_INCOMPLETE) {
        return;
    }
    snprintf(c->method, sizeof c->method, "%s", parsed == HTTP_BAD ? "other" : req.method);
    if (parsed == HTTP_BAD) {
        respond_text(r, c, code, NULL, error);
        return;
    }
    int is_db = strncmp(req.target, "/db/", 4) == 0;
    size_t limit = is_db ? KV_MAX_VALUE : CONTROL_BODY_LIMIT;
    if (req.content_length > limit) {
        respond_text(r, c, 413, NULL, is_db ? "values are at most 1 MiB" : "body too large");
        return;
    }
    if (c->in.len - req.header_len < req.content_length) {
        return; /* the body is still coming */
    }
    c->dispatched = 1;
    dispatch(r, c, &req, c->in.data + req.header_len, req.content_length);
}
