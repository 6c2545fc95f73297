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
    size_t len;
    unsigned char data[CLUSTER_PAYLOAD_MAX];
};

/* What the host learned about a proposal of this node. */
enum proposal_state { PROPOSAL_NONE = 0, PROPOSAL_PENDING, PROPOSAL_COMMITTED, PROPOSAL_DROPPED };

/* A snapshot of the host's state machine: the applied entries 1..index,
 * copied as they are (struct applied_entry each). */
struct snapshot_store {
    uint64_t index;
    uint64_t term;
    unsigned char *data;
    size_t len;
    size_t received; /* while arriving from the leader in chunks */
    uint32_t checksum;
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
    /* The latest snapshot this host saved or installed, and one arriving. */
    struct snapshot_store snapshot;
    struct snapshot_store incoming;
    /* The last read result delivered (embraft_ready_read). */
    uint64_t read_context;
    uint32_t read_result;
    uint64_t read_index;
};

struct cluster {
    size_t count;
    /* Nodes 0..founders-1 found the cluster; later ones start empty and
     * join through a membership change. */
    size_t founders;
    uint64_t peers[CLUSTER_MAX_NODES];
    struct cluster_node nodes[CLUSTER_MAX_NODES];
    unsigned long long last_tick_ms;
    /* embraft_config_set_compact_keep_entries for every node (0: default). */
    uint64_t compact_keep_entries;
    /* Set (with a message on stderr) when the host loop saw something wrong. */
    int broken;
};

/* Milliseconds between ticks: EMBRAFT_TEST_TICK_MS, default 10 (the run
 * script raises it under valgrind, where everything is ~50 times slower). */
unsigned cluster_tick_ms(void);

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

/* The host of node `i` saves a snapshot of everything it applied and
 * tells its node to compact through it. */
embraft_status cluster_take_snapshot(struct cluster *c, size_t i);

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

/* The index of the node every running node agrees is the leader, or -1. */
int cluster_agreed_leader(const struct cluster *c);
int cluster_has_leader(struct cluster *c, const void *unused);

/* Every running node has applied through *(const uint64_t *)index. */
int cluster_all_applied(struct cluster *c, const void *index);

/* Checks that the running nodes applied identical entries at every index
 * they have in common; prints the first difference. */
int cluster_logs_agree(const struct cluster *c);

#endif /* EMBRAFT_TEST_CLUSTER_H */
