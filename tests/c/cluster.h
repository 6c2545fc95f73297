/*
 * An in-process cluster driven only through the C API: an in-memory
 * transport (each ready message is stepped straight into its destination),
 * a host loop that ticks, polls, applies and acknowledges, and a record of
 * what every node applied so tests can compare them.
 */
#ifndef EMBRAFT_TEST_CLUSTER_H
#define EMBRAFT_TEST_CLUSTER_H

#include "harness.h"

#include <stdint.h>

#define CLUSTER_MAX_NODES 5
#define CLUSTER_MAX_INDEX 4096
#define CLUSTER_MAX_PROPOSALS 4096
#define CLUSTER_PAYLOAD_MAX 128

struct applied_entry {
    uint64_t term;
    uint32_t kind;
    uint64_t proposal_id; /* as delivered on this node: 0 unless proposed here */
    size_t len;
    unsigned char data[CLUSTER_PAYLOAD_MAX];
};

/* What the host learned about a proposal of this node. UNKNOWN: it may or
 * may not have committed (EMBRAFT_PROPOSAL_UNKNOWN). */
enum proposal_state {
    PROPOSAL_NONE = 0,
    PROPOSAL_PENDING,
    PROPOSAL_COMMITTED,
    PROPOSAL_DROPPED,
    PROPOSAL_UNKNOWN
};

/* The latest snapshot a host took or restored. Its bytes are the applied
 * entries 1..index, as they are (struct applied_entry each), in the file
 * the node keeps. */
struct snapshot_store {
    uint64_t index;
    uint64_t term;
    unsigned restores; /* restores the node asked for, from the file it named */
};

struct cluster_node {
    uint64_t id;
    const char *dir;
    embraft_node *node; /* NULL while stopped */
    /* Applied entries by log index (the host's state machine). */
    struct applied_entry applied[CLUSTER_MAX_INDEX + 1];
    uint64_t delivered; /* last index delivered and applied */
    uint64_t acked;     /* last index acknowledged to the node */
    uint32_t role;
    uint64_t leader;
    uint64_t term;
    enum proposal_state proposals[CLUSTER_MAX_PROPOSALS];
    uint64_t proposal_index[CLUSTER_MAX_PROPOSALS];
    uint32_t proposal_outcome[CLUSTER_MAX_PROPOSALS]; /* EMBRAFT_PROPOSAL_* */
    /* The latest snapshot this host took or restored. */
    struct snapshot_store snapshot;
    /* Cut off from the others: messages to and from it are lost, and its
     * peers' hosts report it unreachable. */
    int cut;
    /* The last index the node asked to snapshot at (0: never asked). */
    uint64_t snapshot_wanted;
    /* The last read result delivered (embraft_ready_read). */
    uint64_t read_context;
    uint32_t read_result;
    uint64_t read_index;
    /* Not a member (yet, or any more) although running: the cluster's
     * agreement on a leader and on what is applied does not wait for it. */
    int outsider;
};

struct proposal_stream;

struct cluster {
    size_t count;
    /* Nodes 0..founders-1 found the cluster; later ones start empty and
     * join through a membership change. */
    size_t founders;
    uint64_t peers[CLUSTER_MAX_NODES];
    struct cluster_node nodes[CLUSTER_MAX_NODES];
    unsigned long long last_tick_ms;
    /* embraft_config_set_compact_keep_entries, _snapshot_chunk_size and
     * _snapshot_entries for every node (0: default). */
    uint64_t compact_keep_entries;
    uint64_t snapshot_chunk_size;
    uint64_t snapshot_entries;
    /* embraft_config_set_threading for every node (0: the default). */
    uint32_t threading;
    /* embraft_config_set_quiesce_ticks for every node (0: never). */
    uint32_t quiesce_ticks;
    /* embraft_config_set_wal_write_method for nodes started from now on,
     * when wal_write_method_set is nonzero (else the library's default:
     * EMBRAFT_WAL_WRITE_MMAP is 0, so zero cannot mean "unset"). */
    uint32_t wal_write_method;
    int wal_write_method_set;
    /* Set (with a message on stderr) when the host loop saw something wrong. */
    int broken;
    /* When set, the host loop keeps proposing through it (see below). */
    struct proposal_stream *stream;
};

/* Milliseconds between ticks: EMBRAFT_TEST_TICK_MS, default 10 (the run
 * script raises it under valgrind, where everything is ~50 times slower). */
unsigned cluster_tick_ms(void);

/* Generous bounds for waits, in proportion to the tick: an election takes
 * 10 to 20 ticks, a commit a few round trips. */
#define ELECTION_TIMEOUT_MS (cluster_tick_ms() * 1000u)
#define COMMIT_TIMEOUT_MS (cluster_tick_ms() * 6000u)
/* The longest randomized election timeout of the harness's nodes. */
#define MAX_ELECTION_TIMEOUT_MS (cluster_tick_ms() * 20u)

/* Prepares `count` nodes with fresh directories; starts none. The cluster
 * is large, so tests allocate it with cluster_new and free it with
 * cluster_free (which stops every node). */
struct cluster *cluster_new(size_t count);
void cluster_free(struct cluster *c);

/* Starts node `i` (0-based; id i+1) on its directory, telling it the host
 * applied through `applied`; a node past the founders starts with no peers
 * (joining). Returns the status of embraft_node_new. */
embraft_status cluster_start(struct cluster *c, size_t i, uint64_t applied);
void cluster_stop(struct cluster *c, size_t i);

/* The host of node `i` snapshots everything it applied and acknowledged,
 * through an embraft_snapshot_writer: written with
 * embraft_snapshot_writer_write, or (the second) by writing the file at
 * the writer's path. The node then compacts its log. */
embraft_status cluster_take_snapshot(struct cluster *c, size_t i);
embraft_status cluster_take_snapshot_through_path(struct cluster *c, size_t i);

/* One round of the host loop: ticks when due, polls every running node,
 * delivers messages, applies and acknowledges entries. Returns the number
 * of batches handled. */
int cluster_pump(struct cluster *c);

/* What the host loop does with a batch node `i` produced: records state,
 * delivers messages, applies entries, acknowledges, records outcomes. */
void cluster_handle_ready(struct cluster *c, size_t i, const embraft_ready *ready);

/* Runs the host loop until `done(c, arg)` holds or `timeout_ms` passes;
 * returns whether it holds. */
int cluster_run_until(struct cluster *c, int (*done)(struct cluster *, const void *),
                      const void *arg, unsigned timeout_ms);

/* Runs the host loop for `ms` milliseconds; returns 0 if it broke. */
int cluster_run_for(struct cluster *c, unsigned ms);

/* The index of the one running node in the leader role, provided every
 * running member (outsiders aside) knows it as the leader; else -1. */
int cluster_agreed_leader(const struct cluster *c);
int cluster_has_leader(struct cluster *c, const void *unused);

/* Starts nodes 0..count-1 from scratch, waits for a leader and commits
 * proposals 0..total-1 through it. Returns the agreed leader's index, or -1
 * if any step failed. */
int cluster_start_elect_and_commit(struct cluster *c, size_t count, unsigned total);

/* Every running member has applied through *(const uint64_t *)index. */
int cluster_all_applied(struct cluster *c, const void *index);

/* The highest index a running member has applied. */
uint64_t cluster_max_delivered(const struct cluster *c);

/* Checks that the running nodes applied identical entries at every index
 * they have in common; prints the first difference. */
int cluster_logs_agree(const struct cluster *c);

/* The payload of proposal number `number` ("payload-00042"), and back:
 * whether an applied entry is such a payload, and its number. */
void cluster_payload(unsigned number, char *out, size_t *len);
int cluster_payload_number(const struct applied_entry *e, unsigned *number);

/* Proposes payloads first..first+total on the agreed leader, keeping a
 * window in flight, re-proposing any that were dropped (a leader change),
 * until all committed; returns 0 if they did not within the deadline. */
int cluster_propose_all(struct cluster *c, unsigned first, unsigned total);

/* Every payload first..first+total appears exactly once among the normal
 * entries node `i` applied. */
int cluster_applied_each_once(const struct cluster *c, size_t i, unsigned first, unsigned total);

/* Runs the host loop until proposal `id` of node `i` has an outcome (it
 * may have one already); returns it (EMBRAFT_PROPOSAL_*), or 0 on
 * timeout. */
uint32_t cluster_await_outcome(struct cluster *c, size_t i, uint64_t id, unsigned timeout_ms);

/* The membership the leader's status reports. */
struct membership {
    size_t voters;
    size_t learners;
};

/* The leader's status shows that many voters and learners, and no joint
 * configuration. */
int cluster_leader_reports_membership(struct cluster *c, const void *membership);

/*
 * A stream of proposals made by the host loop itself, so that a test can
 * change the cluster while load continues. On every tick it may make
 * `per_tick` more proposals on the agreed leader, keeping at most `window`
 * pending; each is recorded (node, id, payload number) so that its outcome
 * can be checked against what the nodes applied. Payload numbers start at
 * `first_number`.
 */
#define CLUSTER_MAX_STREAM 3000

struct stream_proposal {
    size_t node;
    uint64_t id;
    unsigned number;
};

struct proposal_stream {
    unsigned per_tick;
    unsigned window;
    unsigned first_number;
    int stopped;     /* set to stop proposing; outcomes still arrive */
    unsigned credit; /* proposals allowed until the next tick */
    size_t oldest_pending; /* made[] before it all have outcomes */
    size_t count;
    struct stream_proposal made[CLUSTER_MAX_STREAM];
};

/* How a stream's proposals ended, as far as the host knows. */
struct stream_tally {
    size_t committed;
    size_t dropped;
    size_t unknown;
    size_t pending;
};
struct stream_tally cluster_stream_tally(const struct cluster *c, const struct proposal_stream *s);

/* Waits until every proposal of the stream has an outcome. */
int cluster_stream_settled(struct cluster *c, const void *stream);

/* The stream's proposals against what the running members applied: each
 * has an outcome; a committed one was applied at its index and exactly
 * once on every member (with its proposal id on its own node), a dropped
 * one nowhere, an unknown one at most once. Prints the first violation. */
int cluster_stream_verify(const struct cluster *c, const struct proposal_stream *s);

#endif /* EMBRAFT_TEST_CLUSTER_H */
