/*
 * Snapshots through the C API: the writer and its errors, a follower cut
 * off while the leader snapshots and compacts that catches up through the
 * snapshot and restores from the file its node names, and restarts from
 * snapshot plus log.
 */
#define _POSIX_C_SOURCE 200809L
#include "cluster.h"

#include <string.h>
#include <unistd.h>

static void cut(struct cluster *c, size_t i, int on) {
    c->nodes[i].cut = on;
    /* Cut off, it cannot agree on a leader: the others go on without it. */
    c->nodes[i].outsider = on;
}

/* The host of node `node` restored a snapshot and applied through
 * `index`. */
struct restored_and_applied {
    size_t node;
    uint64_t index;
};

static int restored_and_applied(struct cluster *c, const void *arg) {
    const struct restored_and_applied *want = arg;
    const struct cluster_node *n = &c->nodes[want->node];
    return n->snapshot.restores > 0 && n->delivered >= want->index;
}

static void a_cut_off_follower_catches_up_through_the_snapshot_file(void) {
    struct cluster *c = cluster_new(3);
    CHECK(c != NULL);
    c->compact_keep_entries = 5;
    c->snapshot_chunk_size = 512; /* many chunks, even for this small state */
    int leader = cluster_start_elect_and_commit(c, 3, 50);
    if (leader < 0) {
        cluster_free(c);
    }
    CHECK(leader >= 0);

    /* A follower is cut off; the leader goes on, snapshots (written
     * through the writer's path) and compacts past everything it has. */
    size_t lagging = ((size_t)leader + 1) % 3;
    cut(c, lagging, 1);
    int more = cluster_propose_all(c, 50, 100);
    uint64_t target = cluster_max_delivered(c);
    int applied = more && cluster_run_until(c, cluster_all_applied, &target, COMMIT_TIMEOUT_MS);
    embraft_status snapshotted = cluster_take_snapshot_through_path(c, (size_t)leader);
    uint64_t snapshot_index = c->nodes[leader].snapshot.index;
    int after = applied && snapshotted == EMBRAFT_OK && cluster_propose_all(c, 150, 20);

    /* Reconnected, it is sent the snapshot, restores from the file its
     * node names, then takes the entries after it. */
    cut(c, lagging, 0);
    struct restored_and_applied want = {lagging, cluster_max_delivered(c)};
    int caught_up = after && cluster_run_until(c, restored_and_applied, &want, COMMIT_TIMEOUT_MS);
    int restored_at = c->nodes[lagging].snapshot.index == snapshot_index;
    int agree = cluster_logs_agree(c);
    int complete = caught_up && cluster_applied_each_once(c, lagging, 0, 170);

    /* It restarts with an empty state machine: restored from its own copy
     * of the snapshot, then the log after it. */
    cluster_stop(c, lagging);
    memset(c->nodes[lagging].applied, 0, sizeof c->nodes[lagging].applied);
    c->nodes[lagging].snapshot.restores = 0;
    embraft_status restarted = cluster_start(c, lagging, 0);
    int again = restarted == EMBRAFT_OK &&
                cluster_run_until(c, restored_and_applied, &want, COMMIT_TIMEOUT_MS);
    int agree_again = cluster_logs_agree(c) && cluster_applied_each_once(c, lagging, 0, 170);
    int broken = c->broken;
    cluster_free(c);
    CHECK(!broken);
    CHECK(more);
    CHECK(applied);
    CHECK_OK(snapshotted);
    CHECK(snapshot_index > 50);
    CHECK(after);
    CHECK(caught_up);
    CHECK(restored_at);
    CHECK(agree);
    CHECK(complete);
    CHECK_OK(restarted);
    CHECK(again);
    CHECK(agree_again);
}

/* Runs a one-node cluster until it applied `count` proposals. */
static struct cluster *one_node_with(unsigned count) {
    struct cluster *c = cluster_new(1);
    if (c == NULL) {
        return NULL;
    }
    if (cluster_start(c, 0, 0) != EMBRAFT_OK ||
        !cluster_run_until(c, cluster_has_leader, NULL, ELECTION_TIMEOUT_MS) ||
        !cluster_propose_all(c, 0, count) || !cluster_run_for(c, 50)) {
        cluster_free(c);
        return NULL;
    }
    return c;
}

static int node_error_mentions(const embraft_node *node, const char *word) {
    char message[256] = "";
    embraft_node_last_error(node, message, sizeof message, NULL);
    return strstr(message, word) != NULL;
}

static void the_writer_refuses_bad_calls_and_abort_leaves_no_file(void) {
    struct cluster *c = one_node_with(10);
    CHECK(c != NULL);
    embraft_node *node = c->nodes[0].node;
    uint64_t acked = c->nodes[0].acked;
    embraft_snapshot_writer *writer = NULL;
    const char *path = NULL;

    CHECK_STATUS(embraft_node_snapshot_begin(node, acked, NULL), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_node_snapshot_begin(node, acked + 100, &writer),
                 EMBRAFT_ERR_NOT_APPLIED);
    CHECK(writer == NULL);
    CHECK(node_error_mentions(node, "acknowledged"));
    CHECK_STATUS(embraft_node_snapshot_begin(node, 0, &writer), EMBRAFT_ERR_STALE_SNAPSHOT);
    CHECK(writer == NULL);

    /* Aborted: its file is gone. */
    CHECK_OK(embraft_node_snapshot_begin(node, acked, &writer));
    CHECK(writer != NULL);
    CHECK_STATUS(embraft_snapshot_writer_path(writer, NULL), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_OK(embraft_snapshot_writer_path(writer, &path));
    char saved[1024];
    snprintf(saved, sizeof saved, "%s", path);
    CHECK(access(saved, F_OK) == 0);
    CHECK_STATUS(embraft_snapshot_writer_write(writer, NULL, 3), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_OK(embraft_snapshot_writer_write(writer, NULL, 0));
    CHECK_OK(embraft_snapshot_writer_write(writer, (const uint8_t *)"abc", 3));
    embraft_snapshot_writer_abort(writer);
    CHECK(access(saved, F_OK) != 0);

    /* Two writers: the later index finishes first; the earlier one is
     * then stale, and freed all the same. */
    embraft_snapshot_writer *early = NULL, *late = NULL;
    CHECK_OK(embraft_node_snapshot_begin(node, acked - 1, &early));
    CHECK_OK(embraft_node_snapshot_begin(node, acked, &late));
    CHECK_OK(embraft_snapshot_writer_write(late, (const uint8_t *)"late", 4));
    CHECK_OK(embraft_snapshot_writer_finish(late));
    CHECK_STATUS(embraft_snapshot_writer_finish(early), EMBRAFT_ERR_STALE_SNAPSHOT);
    CHECK(node_error_mentions(node, "already has a snapshot"));
    CHECK_STATUS(embraft_node_snapshot_begin(node, acked, &writer), EMBRAFT_ERR_STALE_SNAPSHOT);

    /* A batch without a restore names no snapshot file. */
    int ran = cluster_run_for(c, 30);
    embraft_ready *ready = NULL;
    uint64_t proposal = 0;
    CHECK_OK(embraft_node_propose(node, (const uint8_t *)"x", 1, &proposal));
    CHECK_OK(embraft_node_poll_ready(node, 1000, &ready));
    bool wanted = true;
    uint64_t unset = 12345;
    embraft_status path_status = embraft_ready_snapshot_path(ready, &path);
    embraft_status wanted_status = embraft_ready_snapshot_wanted(ready, &wanted, &unset);
    embraft_status null_status = embraft_ready_snapshot_wanted(ready, NULL, &unset);
    embraft_ready_free(ready);
    int broken = c->broken;
    cluster_free(c);
    CHECK(ran);
    CHECK(!broken);
    CHECK_STATUS(path_status, EMBRAFT_ERR_OUT_OF_RANGE);
    CHECK_OK(wanted_status);
    CHECK(!wanted && unset == 12345); /* written only when wanted */
    CHECK_STATUS(null_status, EMBRAFT_ERR_NULL_ARGUMENT);
}

/* Appends `value` little-endian in `size` bytes (docs/WIRE.md). */
static size_t put_le(uint8_t *out, size_t at, uint64_t value, size_t size) {
    for (size_t i = 0; i < size; i++) {
        out[at + i] = (uint8_t)(value >> (8 * i));
    }
    return at + size;
}

/* An InstallSnapshot chunk (tag 0x0C) from node 2 to node 1 for a snapshot
 * at `index`, encoded by hand per docs/WIRE.md; returns its length. */
static size_t install_snapshot_at(uint8_t *out, uint64_t index) {
    static const uint8_t data[] = "abcd";
    size_t at = 0;
    at = put_le(out, at, 0x01, 1); /* version */
    at = put_le(out, at, 0x0C, 1); /* tag */
    at = put_le(out, at, 2, 8);    /* from */
    at = put_le(out, at, 1, 8);    /* to */
    at = put_le(out, at, 1, 8);    /* term */
    at = put_le(out, at, index, 8); /* meta.index */
    at = put_le(out, at, 1, 8);     /* meta.term */
    at = put_le(out, at, 2, 4);     /* voters: 1, 2 */
    at = put_le(out, at, 1, 8);
    at = put_le(out, at, 2, 8);
    at = put_le(out, at, 0, 4); /* learners */
    at = put_le(out, at, 0, 4); /* voters_outgoing */
    at = put_le(out, at, 0, 4); /* learners_next */
    at = put_le(out, at, 0, 1); /* auto_leave */
    at = put_le(out, at, 0, 8); /* offset */
    at = put_le(out, at, 4, 8); /* total_len */
    at = put_le(out, at, 0, 4); /* checksum */
    at = put_le(out, at, 4, 4); /* data */
    memcpy(out + at, data, 4);
    return at + 4;
}

/* A snapshot chunk at index u64::MAX (or anywhere past the largest index a
 * log can reach) is refused by the step call itself, with a message; the
 * node goes on committing and frees cleanly. Its first index would wrap to
 * 0 and the driver spin allocating. */
static void a_snapshot_chunk_at_the_largest_index_is_refused(void) {
    struct cluster *c = one_node_with(3);
    CHECK(c != NULL);
    embraft_node *node = c->nodes[0].node;
    uint8_t message[256];
    static const uint64_t indexes[] = {UINT64_MAX, ((uint64_t)1 << 62) + 1};
    embraft_status statuses[2];
    int mentioned[2];
    for (size_t i = 0; i < 2; i++) {
        size_t len = install_snapshot_at(message, indexes[i]);
        statuses[i] = embraft_node_step(node, message, len);
        mentioned[i] = node_error_mentions(node, "index beyond");
    }
    int healthy = cluster_propose_all(c, 3, 3) && cluster_run_for(c, 50);
    int broken = c->broken;
    cluster_free(c);
    for (size_t i = 0; i < 2; i++) {
        CHECK_STATUS(statuses[i], EMBRAFT_ERR_MALFORMED_MESSAGE);
        CHECK(mentioned[i]);
    }
    CHECK(healthy);
    CHECK(!broken);
}

/* The node asks for a snapshot past the configured threshold. */
static int snapshot_wanted_seen(struct cluster *c, const void *unused) {
    (void)unused;
    return c->nodes[0].snapshot_wanted > 0;
}

static void a_snapshot_is_asked_for_past_the_threshold(void) {
    struct cluster *c = cluster_new(1);
    CHECK(c != NULL);
    c->snapshot_entries = 20;
    int ok = cluster_start(c, 0, 0) == EMBRAFT_OK &&
             cluster_run_until(c, cluster_has_leader, NULL, ELECTION_TIMEOUT_MS) &&
             cluster_propose_all(c, 0, 30);
    int asked = ok && cluster_run_until(c, snapshot_wanted_seen, NULL, COMMIT_TIMEOUT_MS);
    uint64_t wanted = c->nodes[0].snapshot_wanted;
    embraft_status taken = asked ? cluster_take_snapshot(c, 0) : EMBRAFT_ERR_INVALID_ARGUMENT;
    int broken = c->broken;
    cluster_free(c);
    CHECK(!broken);
    CHECK(ok);
    CHECK(asked);
    CHECK(wanted >= 20);
    CHECK_OK(taken);
}

static void snapshot_chunk_sizes_beyond_the_transport_limit_are_refused(void) {
    embraft_config *config = NULL;
    embraft_node *node = NULL;
    uint64_t self = 1;
    CHECK_OK(embraft_config_new(&config));
    embraft_config_set_id(config, 1);
    embraft_config_set_peers(config, &self, 1);
    embraft_config_set_data_dir(config, harness_temp_dir());
    CHECK_STATUS(embraft_config_set_snapshot_chunk_size(NULL, 1), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_OK(embraft_config_set_snapshot_chunk_size(config, (1u << 20) + 1));
    embraft_status too_big = embraft_node_new(config, &node);
    CHECK_OK(embraft_config_set_snapshot_chunk_size(config, 0));
    embraft_status zero = embraft_node_new(config, &node);
    char message[256] = "";
    embraft_config_last_error(config, message, sizeof message, NULL);
    embraft_config_free(config);
    CHECK(node == NULL);
    CHECK_STATUS(too_big, EMBRAFT_ERR_INVALID_CONFIG);
    CHECK_STATUS(zero, EMBRAFT_ERR_INVALID_CONFIG);
    CHECK(strstr(message, "chunk") != NULL);
}

const struct test_case snapshot_tests[] = {
    {"snapshot: a cut-off follower catches up through the snapshot file, then restarts from it",
     a_cut_off_follower_catches_up_through_the_snapshot_file},
    {"snapshot: the writer refuses bad calls and abort leaves no file",
     the_writer_refuses_bad_calls_and_abort_leaves_no_file},
    {"snapshot: a snapshot is asked for past the threshold",
     a_snapshot_is_asked_for_past_the_threshold},
    {"snapshot: a chunk at index u64::MAX is refused at the step call, the node stays healthy",
     a_snapshot_chunk_at_the_largest_index_is_refused},
    {"snapshot: chunk sizes beyond the transport's limit are refused",
     snapshot_chunk_sizes_beyond_the_transport_limit_are_refused},
    {NULL, NULL},
};
