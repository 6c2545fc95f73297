/* The server's state, shared by the modules of the event loop. Everything
 * runs on one thread: the loop in server.c owns this struct. */
#ifndef RAFTD_RAFTD_H
#define RAFTD_RAFTD_H

#include <embraft.h>
#include <stdint.h>

#include "kv.h"
#include "util.h"

#define MAX_CONNS 512
#define MAX_PENDING 1024
#define MAX_HOST 255

/* Timings (RAFTD.md) in milliseconds. */
#define TICK_MS 100
#define ELECTION_TICKS 10
#define HEARTBEAT_TICKS 1
#define WRITE_TIMEOUT_MS 10000
#define READ_TIMEOUT_MS 5000
#define HELLO_TIMEOUT_MS 5000
#define HTTP_REQUEST_TIMEOUT_MS 30000
#define LINGER_MS 1000

enum conn_kind {
    CONN_FREE,
    CONN_UNKNOWN,  /* accepted; waiting for 4 bytes to tell HTTP from a peer */
    CONN_HTTP,     /* an HTTP client of ours */
    CONN_PEER_IN,  /* a peer's stream to us */
    CONN_PEER_OUT, /* our stream to a peer */
    CONN_PROXY,    /* a forwarded request to the leader */
};

struct conn {
    int fd;
    enum conn_kind kind;
    uint64_t serial; /* tells this use of the slot from earlier ones */
    struct buffer in;
    struct buffer out;
    int connecting;        /* a non-blocking connect is under way */
    int close_after_write; /* close once `out` is flushed */
    int draining;          /* answer sent, write side shut; discarding input */
    uint64_t deadline;     /* close at this time (0: none) */
    /* CONN_HTTP: the request being served, for metrics and forwarding. */
    char method[8];
    int dispatched; /* the request was read and is being served */
    int answered;
    /* CONN_PEER_IN: handshake done; CONN_PEER_OUT: reply received. */
    int handshaken;
    uint64_t peer_id;
    /* CONN_PROXY: the client waiting for the relayed answer (-1: none),
     * or, for a request of this node's own, the pending request that
     * waits for the answer. */
    int client;
    uint64_t client_serial;
    int caller; /* -1: none */
    uint64_t caller_serial;
};

/* The requests waiting for the node: proposals, read indexes, and the
 * stages of /join and /leave. */
enum pending_kind {
    PENDING_FREE,
    PENDING_WRITE,
    PENDING_READ,
    PENDING_JOIN_PEER,    /* the joiner's peer command */
    PENDING_JOIN_VOTER,   /* then its "add voter" */
    PENDING_LEAVE_REMOVE, /* "remove node" */
    PENDING_LEAVE_PEER,   /* then the remove peer command */
    PENDING_SELF_ADDR,    /* the leader records its own address */
    PENDING_JOIN_GROUP,   /* this node asks to join a group (RAFTD.md "Shards", step 3) */
};

struct pending {
    enum pending_kind kind;
    uint64_t serial; /* tells this use of the slot from earlier ones */
    uint64_t group;  /* the Raft group the request concerns */
    int all_groups;  /* /leave without a group: every group, N down to 1 */
    int calling;     /* waiting for the answer of a request to another node */
    int elsewhere;   /* PENDING_LEAVE_PEER: asked of another node */
    unsigned attempt;
    int conn; /* -1: nobody waits for an answer */
    uint64_t conn_serial;
    uint64_t proposal;     /* the proposal whose outcome we wait for */
    uint64_t read_context; /* PENDING_READ */
    uint64_t read_index;   /* PENDING_READ: 0 until the read index arrives */
    uint64_t deadline;
    uint64_t retry_at; /* re-ask the node at this time (0: not needed) */
    uint64_t target;   /* /join, /leave: the node concerned */
    char addr[KV_MAX_ADDR + 1];
    size_t key_len;
    char key[KV_MAX_KEY];
};

/* Outbound stream to one peer (WIRE.md "Reconnecting"). */
struct peer_link {
    uint64_t id;
    int conn; /* -1 when not connected */
    uint64_t conn_serial;
    struct buffer *queue; /* ring of framed messages */
    size_t queue_head;
    size_t queue_count;
    uint64_t backoff_ms;
    uint64_t retry_at;
    uint64_t up_since;
    int reported; /* unreachable already reported for this outage */
};

/* One Raft group of this node and its replicated state: the single group
 * of a one-group node (embraft_node), or one of the groups of a sharded
 * node's runtime (RAFTD.md "Shards"). Group 1's state holds the address
 * book. */
struct shard {
    uint64_t group; /* 1..N */
    uint32_t role;
    uint64_t leader;
    uint64_t term;
    uint64_t applied;
    /* Snapshots (RAFTD.md "Snapshots"): the group asked for one and it is
     * still to be taken, not before snapshot_retry_at. */
    int snapshot_due;
    uint64_t snapshot_retry_at;
    int needs_join; /* RAFTD.md "Shards", joining step 3 is due */
    struct kv_store kv;
};

#define METRIC_METHODS 4
#define METRIC_CODES 600 /* status codes 0..599 */

struct raftd {
    /* Identity and options. */
    uint64_t id;
    uint64_t cluster_id;
    char host[MAX_HOST + 1];
    unsigned port;
    char advertise[KV_MAX_ADDR + 1]; /* host:port */
    const char *data_dir;
    uint32_t log_level;

    /* Exactly one of them: a one-group node, or the runtime of a node
     * with more than one shard. */
    embraft_node *node;
    embraft_runtime *runtime;
    int readiness_fd;
    uint64_t shard_count;
    struct shard *shards; /* shards[g - 1] is group g */
    uint64_t groups_to_join; /* how many have needs_join set */
    const char *join_addr; /* -join, for the joining steps after the first */
    int fatal;             /* stop the loop and exit with status 1 */
    uint64_t next_read_context;
    uint64_t next_pending_serial;
    uint64_t self_addr_checked_at;

    int listen_fd;
    struct conn conns[MAX_CONNS];
    uint64_t next_serial;
    struct peer_link *links;
    size_t link_count;
    struct pending pending[MAX_PENDING];

    uint64_t requests[METRIC_METHODS][METRIC_CODES];
};

/* The address book lives in group 1's state. */
static inline struct kv_store *address_book(struct raftd *r) {
    return &r->shards[0].kv;
}

static inline struct shard *shard_of(struct raftd *r, uint64_t group) {
    return group >= 1 && group <= r->shard_count ? &r->shards[group - 1] : NULL;
}

#endif
