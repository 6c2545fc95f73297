/*
 * The C API's contract: lifecycle, versions, status codes, and every kind
 * of bad input (NULL handles and buffers, zero lengths, garbage messages,
 * unknown node ids, oversized proposals, out-of-range accessors, handles
 * used after the handle they came from was freed where that is defined).
 */
#define _POSIX_C_SOURCE 200809L
#include "cluster.h"

#include <poll.h>
#include <pthread.h>
#include <string.h>

/* A deterministic generator for garbage inputs (xorshift64*). */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t next_random(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}

/* A config for a one-node cluster in a fresh directory. */
static embraft_config *single_node_config(void) {
    embraft_config *config = NULL;
    uint64_t self = 1;
    if (embraft_config_new(&config) != EMBRAFT_OK) {
        return NULL;
    }
    embraft_config_set_id(config, 1);
    embraft_config_set_peers(config, &self, 1);
    embraft_config_set_data_dir(config, harness_temp_dir());
    embraft_config_set_segment_size(config, 1u << 20);
    /* A segment must hold the largest entry with its records. */
    embraft_config_set_max_entry_bytes(config, 1u << 19);
    return config;
}

/* Ticks and polls a one-node cluster until it leads; returns whether it does. */
static int lead_alone(embraft_node *node) {
    unsigned long long deadline = harness_now_ms() + cluster_tick_ms() * 1000u;
    while (harness_now_ms() < deadline) {
        embraft_ready *ready = NULL;
        embraft_node_tick(node);
        if (embraft_node_poll_ready(node, cluster_tick_ms(), &ready) == EMBRAFT_OK) {
            uint32_t role = 0;
            uint64_t leader = 0, term = 0;
            embraft_ready_state(ready, &role, &leader, &term);
            embraft_ready_free(ready);
            if (role == EMBRAFT_ROLE_LEADER) {
                return 1;
            }
        }
    }
    return 0;
}

/* Polls until a batch with at least one committed entry arrives; the
 * caller frees it. */
static embraft_ready *poll_entries(embraft_node *node) {
    unsigned long long deadline = harness_now_ms() + cluster_tick_ms() * 1000u;
    while (harness_now_ms() < deadline) {
        embraft_ready *ready = NULL;
        size_t entries = 0;
        if (embraft_node_poll_ready(node, cluster_tick_ms(), &ready) != EMBRAFT_OK) {
            continue;
        }
        embraft_ready_entry_count(ready, &entries);
        if (entries > 0) {
            return ready;
        }
        embraft_ready_free(ready);
    }
    return NULL;
}

static void versions_and_status_strings(void) {
    CHECK(embraft_abi_version() == EMBRAFT_ABI_VERSION);
    CHECK(embraft_version() != NULL && strlen(embraft_version()) > 0);
    for (embraft_status a = EMBRAFT_OK; a <= EMBRAFT_ERR_CORRUPT; a++) {
        CHECK(strcmp(embraft_status_str(a), "unknown status code") != 0);
        for (embraft_status b = EMBRAFT_OK; b < a; b++) {
            CHECK(strcmp(embraft_status_str(a), embraft_status_str(b)) != 0);
        }
    }
    CHECK(strcmp(embraft_status_str(-7), "unknown status code") == 0);
    CHECK(strcmp(embraft_status_str(100000), "unknown status code") == 0);
}

static void config_lifecycle_and_setters(void) {
    embraft_config *config = NULL;
    CHECK_OK(embraft_config_new(&config));
    CHECK(config != NULL);
    uint64_t peers[] = {1, 2, 3};
    CHECK_OK(embraft_config_set_id(config, 1));
    CHECK_OK(embraft_config_set_peers(config, peers, 3));
    CHECK_OK(embraft_config_set_peers(config, NULL, 0));
    CHECK_OK(embraft_config_set_data_dir(config, "/tmp/some/where"));
    CHECK_OK(embraft_config_set_election_ticks(config, 20));
    CHECK_OK(embraft_config_set_heartbeat_ticks(config, 3));
    CHECK_OK(embraft_config_set_pre_vote(config, false));
    CHECK_OK(embraft_config_set_check_quorum(config, true));
    CHECK_OK(embraft_config_set_max_inflight_msgs(config, 8));
    CHECK_OK(embraft_config_set_max_inflight_bytes(config, 1 << 20));
    CHECK_OK(embraft_config_set_max_msg_bytes(config, 1 << 16));
    CHECK_OK(embraft_config_set_max_entry_bytes(config, 1 << 12));
    CHECK_OK(embraft_config_set_max_apply_bytes(config, 1 << 20));
    CHECK_OK(embraft_config_set_sync_mode(config, EMBRAFT_SYNC_ALWAYS));
    CHECK_OK(embraft_config_set_sync_mode(config, EMBRAFT_SYNC_NEVER));
    CHECK_OK(embraft_config_set_wal_write_method(config, EMBRAFT_WAL_WRITE_PWRITE));
    CHECK_OK(embraft_config_set_wal_write_method(config, EMBRAFT_WAL_WRITE_MMAP));
    CHECK_OK(embraft_config_set_threading(config, EMBRAFT_THREADING_INLINE));
    CHECK_OK(embraft_config_set_threading(config, EMBRAFT_THREADING_NODE));
    CHECK_OK(embraft_config_set_segment_size(config, 1 << 20));
    CHECK_OK(embraft_config_set_applied_index(config, 0));
    CHECK_OK(embraft_config_set_input_queue_capacity(config, 16));
    CHECK_OK(embraft_config_set_log_level(config, EMBRAFT_LOG_TRACE));
    CHECK_OK(embraft_config_set_random_seed(config, 42));

    /* Values a setter can judge alone are refused there, with a message. */
    CHECK_STATUS(embraft_config_set_sync_mode(config, 7), EMBRAFT_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(embraft_config_set_threading(config, 2), EMBRAFT_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(embraft_config_set_wal_write_method(config, 2), EMBRAFT_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(embraft_config_set_log_level(config, 4), EMBRAFT_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(embraft_config_set_data_dir(config, ""), EMBRAFT_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(embraft_config_set_peers(config, NULL, 2), EMBRAFT_ERR_NULL_ARGUMENT);

    char message[8];
    size_t message_len = 0;
    CHECK_OK(embraft_config_last_error(config, message, sizeof message, &message_len));
    CHECK(message_len > sizeof message - 1);          /* the full length is reported */
    CHECK(strlen(message) == sizeof message - 1);     /* truncated, NUL-terminated */
    CHECK_OK(embraft_config_last_error(config, NULL, 0, &message_len));
    CHECK_STATUS(embraft_config_last_error(config, NULL, 4, NULL), EMBRAFT_ERR_NULL_ARGUMENT);
    embraft_config_free(config);
}

static void null_handles_are_refused_everywhere(void) {
    uint64_t u64 = 0;
    uint32_t u32 = 0;
    size_t size = 0;
    bool flag = false;
    int fd = 0;
    const uint8_t *bytes = NULL;
    const char *text = NULL;
    embraft_node *node = NULL;
    embraft_ready *ready = NULL;
    embraft_status_report *report = NULL;
    embraft_snapshot_writer *writer = NULL;
    char buf[16];

    CHECK_STATUS(embraft_config_new(NULL), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_config_last_error(NULL, buf, sizeof buf, &size), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_config_set_id(NULL, 1), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_config_set_peers(NULL, &u64, 1), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_config_set_data_dir(NULL, "/tmp"), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_config_set_election_ticks(NULL, 10), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_config_set_heartbeat_ticks(NULL, 1), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_config_set_pre_vote(NULL, true), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_config_set_check_quorum(NULL, true), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_config_set_max_inflight_msgs(NULL, 1), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_config_set_max_inflight_bytes(NULL, 1), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_config_set_max_msg_bytes(NULL, 1), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_config_set_max_entry_bytes(NULL, 1), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_config_set_max_apply_bytes(NULL, 1), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_config_set_sync_mode(NULL, 0), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_config_set_threading(NULL, 0), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_config_set_wal_write_method(NULL, 0), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_config_set_segment_size(NULL, 4096), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_config_set_applied_index(NULL, 0), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_config_set_input_queue_capacity(NULL, 1), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_config_set_log_level(NULL, 0), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_config_set_random_seed(NULL, 1), EMBRAFT_ERR_NULL_ARGUMENT);

    CHECK_STATUS(embraft_node_new(NULL, &node), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK(node == NULL);
    CHECK_STATUS(embraft_node_tick(NULL), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_node_step(NULL, (const uint8_t *)"x", 1), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_node_propose(NULL, (const uint8_t *)"x", 1, &u64), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_node_propose_conf_change(NULL, EMBRAFT_CONF_ADD_VOTER, 2, &u64),
                 EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_node_propose_membership(NULL, &u64, 1, NULL, 0, &u64),
                 EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_node_snapshot_begin(NULL, 1, &writer), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK(writer == NULL);
    CHECK_STATUS(embraft_snapshot_writer_path(NULL, &text), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_snapshot_writer_write(NULL, (const uint8_t *)"x", 1),
                 EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_snapshot_writer_finish(NULL), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_node_read_index(NULL, 1), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_node_transfer_leader(NULL, 2), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_node_report_unreachable(NULL, 2), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_node_poll_ready(NULL, 0, &ready), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK(ready == NULL);
    CHECK_STATUS(embraft_node_ack_applied(NULL, 1), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_node_status(NULL, &report), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK(report == NULL);
    CHECK_STATUS(embraft_node_readiness_fd(NULL, &fd), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_node_set_log_level(NULL, 1), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_node_last_error(NULL, buf, sizeof buf, &size), EMBRAFT_ERR_NULL_ARGUMENT);

    CHECK_STATUS(embraft_ready_state_changed(NULL, &flag), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_ready_state(NULL, &u32, &u64, &u64), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_ready_message_count(NULL, &size), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_ready_message(NULL, 0, &u64, &bytes, &size), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_ready_entry_count(NULL, &size), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_ready_entry(NULL, 0, &u64, &u64, &u32, &bytes, &size, &u64),
                 EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_ready_outcome_count(NULL, &size), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_ready_outcome(NULL, 0, &u64, &u32, &u64), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_ready_read_count(NULL, &size), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_ready_read(NULL, 0, &u64, &u32, &u64), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_ready_snapshot_to_restore(NULL, &flag, &u64, &u64),
                 EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_ready_snapshot_path(NULL, &text), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_ready_snapshot_wanted(NULL, &flag, &u64), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_ready_log_count(NULL, &size), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_ready_log(NULL, 0, &u32, &text), EMBRAFT_ERR_NULL_ARGUMENT);

    CHECK_STATUS(embraft_status_report_get(NULL, EMBRAFT_FIELD_TERM, &u64), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_status_report_peer_count(NULL, &size), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_status_report_peer_get(NULL, 0, EMBRAFT_PEER_ID, &u64),
                 EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_status_report_member_count(NULL, EMBRAFT_MEMBERS_VOTERS, &size),
                 EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_status_report_member(NULL, EMBRAFT_MEMBERS_VOTERS, 0, &u64),
                 EMBRAFT_ERR_NULL_ARGUMENT);

    /* Freeing NULL is a no-op. */
    embraft_config_free(NULL);
    embraft_node_free(NULL);
    embraft_ready_free(NULL);
    embraft_status_report_free(NULL);
    embraft_snapshot_writer_abort(NULL);
}

static void node_lifecycle_status_readiness_fd_and_logs(void) {
    embraft_config *config = single_node_config();
    CHECK(config != NULL);
    embraft_config_set_log_level(config, EMBRAFT_LOG_INFO);
    embraft_node *node = NULL;
    CHECK_OK(embraft_node_new(config, &node));
    /* The node copied the config: freeing it now is allowed. */
    embraft_config_free(config);

    int fd = -1;
    CHECK_OK(embraft_node_readiness_fd(node, &fd));
    CHECK(fd >= 0);

    /* The start-up log line makes a batch: the fd is readable. */
    struct pollfd waiter = {fd, POLLIN, 0};
    CHECK(poll(&waiter, 1, 1000) == 1 && (waiter.revents & POLLIN));
    embraft_ready *ready = NULL;
    CHECK_OK(embraft_node_poll_ready(node, 0, &ready));
    size_t logs = 0;
    CHECK_OK(embraft_ready_log_count(ready, &logs));
    CHECK(logs >= 1);
    uint32_t level = 0;
    const char *line = NULL;
    CHECK_OK(embraft_ready_log(ready, 0, &level, &line));
    CHECK(level == EMBRAFT_LOG_INFO && line != NULL && strlen(line) > 0);
    embraft_ready_free(ready);

    /* Taken, the fd is quiet again and polling times out, writing nothing. */
    CHECK(poll(&waiter, 1, 0) == 0);
    ready = (embraft_ready *)&fd; /* a sentinel that must survive */
    CHECK_STATUS(embraft_node_poll_ready(node, 5, &ready), EMBRAFT_TIMED_OUT);
    CHECK(ready == (embraft_ready *)&fd);

    CHECK(lead_alone(node));
    embraft_status_report *report = NULL;
    CHECK_OK(embraft_node_status(node, &report));
    uint64_t id = 0, role = 99, term = 0, leader = 0, last = 0, unused = 0;
    CHECK_OK(embraft_status_report_get(report, EMBRAFT_FIELD_ID, &id));
    CHECK_OK(embraft_status_report_get(report, EMBRAFT_FIELD_ROLE, &role));
    CHECK_OK(embraft_status_report_get(report, EMBRAFT_FIELD_TERM, &term));
    CHECK_OK(embraft_status_report_get(report, EMBRAFT_FIELD_LEADER, &leader));
    CHECK_OK(embraft_status_report_get(report, EMBRAFT_FIELD_LAST_INDEX, &last));
    CHECK(id == 1 && role == EMBRAFT_ROLE_LEADER && term >= 1 && leader == 1 && last >= 1);
    CHECK_STATUS(embraft_status_report_get(report, 999, &unused), EMBRAFT_ERR_INVALID_ARGUMENT);
    size_t peers = 0;
    CHECK_OK(embraft_status_report_peer_count(report, &peers));
    CHECK_STATUS(embraft_status_report_peer_get(report, peers, EMBRAFT_PEER_ID, &unused),
                 EMBRAFT_ERR_OUT_OF_RANGE);
    if (peers > 0) {
        CHECK_STATUS(embraft_status_report_peer_get(report, 0, 999, &unused),
                     EMBRAFT_ERR_INVALID_ARGUMENT);
    }

    /* The node measured its election and its WAL's syncs; the histogram's
     * buckets add up to its count. */
    embraft_metrics metrics;
    CHECK_STATUS(embraft_node_metrics(node, NULL), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_OK(embraft_node_metrics(node, &metrics));
    CHECK(metrics.elections_started >= 1 && metrics.leader_changes >= 1);
    CHECK(metrics.wal_sync_duration.count >= 1 && metrics.wal_bytes_written > 0);
    uint64_t in_buckets = 0;
    for (size_t i = 0; i < EMBRAFT_HISTOGRAM_BUCKETS; i++) {
        in_buckets += metrics.wal_sync_duration.buckets[i];
    }
    CHECK(in_buckets == metrics.wal_sync_duration.count);
    CHECK(strcmp(embraft_metrics_message_kind(4), "Append") == 0);
    CHECK(embraft_metrics_message_kind(EMBRAFT_MESSAGE_KINDS) == NULL);
    CHECK(strcmp(embraft_metrics_drop_reason(0), "not_leader") == 0);
    CHECK(strcmp(embraft_metrics_drop_reason(EMBRAFT_DROP_REASONS - 1), "unknown") == 0);
    CHECK(embraft_metrics_drop_reason(EMBRAFT_DROP_REASONS) == NULL);

    CHECK_OK(embraft_node_set_log_level(node, EMBRAFT_LOG_TRACE));
    CHECK_STATUS(embraft_node_set_log_level(node, 17), EMBRAFT_ERR_INVALID_ARGUMENT);
    char message[64];
    CHECK_OK(embraft_node_last_error(node, message, sizeof message, NULL));
    CHECK(strstr(message, "17") != NULL);

    embraft_node_free(node);
    /* A report outlives its node. */
    CHECK_OK(embraft_status_report_get(report, EMBRAFT_FIELD_TERM, &unused));
    CHECK(unused == term);
    embraft_status_report_free(report);
}

static void proposals_entries_acks_and_accessor_bounds(void) {
    embraft_config *config = single_node_config();
    CHECK(config != NULL);
    embraft_config_set_max_entry_bytes(config, 64);
    embraft_node *node = NULL;
    CHECK_OK(embraft_node_new(config, &node));
    embraft_config_free(config);
    CHECK(lead_alone(node));

    uint8_t big[65];
    memset(big, 'x', sizeof big);
    uint64_t id = 12345;
    CHECK_STATUS(embraft_node_propose(node, big, sizeof big, &id), EMBRAFT_ERR_TOO_LARGE);
    CHECK(id == 12345); /* outputs are written only on success */
    char message[128];
    CHECK_OK(embraft_node_last_error(node, message, sizeof message, NULL));
    CHECK(strstr(message, "65") != NULL);
    CHECK_STATUS(embraft_node_propose(node, NULL, 3, &id), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_node_propose(node, big, 1, NULL), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_node_ack_applied(node, 1000000), EMBRAFT_ERR_NOT_DELIVERED);
    CHECK_STATUS(embraft_node_propose_conf_change(node, 99, 2, &id), EMBRAFT_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(embraft_node_propose_conf_change(node, EMBRAFT_CONF_ADD_VOTER, 0, &id),
                 EMBRAFT_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(embraft_node_propose_conf_change(node, EMBRAFT_CONF_ADD_VOTER, 2, NULL),
                 EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK(id == 12345);

    /* Removing a node that is not a member is refused by the core: the
     * outcome says so. A single leader answers reads at once. */
    uint64_t bad_change = 0;
    CHECK_OK(embraft_node_propose_conf_change(node, EMBRAFT_CONF_REMOVE_NODE, 9, &bad_change));
    CHECK_OK(embraft_node_read_index(node, 99));
    int refused = 0, read_ok = 0;
    unsigned long long until = harness_now_ms() + cluster_tick_ms() * 1000u;
    while ((!refused || !read_ok) && harness_now_ms() < until) {
        embraft_ready *ready = NULL;
        if (embraft_node_poll_ready(node, cluster_tick_ms(), &ready) != EMBRAFT_OK) {
            continue;
        }
        size_t outcomes = 0, reads = 0;
        embraft_ready_outcome_count(ready, &outcomes);
        for (size_t o = 0; o < outcomes; o++) {
            uint64_t proposal = 0, index = 0;
            uint32_t outcome = 0;
            embraft_ready_outcome(ready, o, &proposal, &outcome, &index);
            refused |= proposal == bad_change &&
                       outcome == EMBRAFT_PROPOSAL_DROPPED_CONF_CHANGE_INVALID;
        }
        embraft_ready_read_count(ready, &reads);
        for (size_t r = 0; r < reads; r++) {
            uint64_t context = 0, read_index = 0;
            uint32_t result = 0;
            embraft_ready_read(ready, r, &context, &result, &read_index);
            read_ok |= context == 99 && result == EMBRAFT_READ_OK && read_index >= 1;
        }
        embraft_ready_free(ready);
    }
    CHECK(refused);
    CHECK(read_ok);

    uint64_t at_limit = 0, empty = 0;
    CHECK_OK(embraft_node_propose(node, big, 64, &at_limit));
    CHECK_OK(embraft_node_propose(node, NULL, 0, &empty)); /* an empty payload is fine */
    CHECK(at_limit != 0 && empty != 0 && at_limit != empty);

    /* Collect batches until both proposals are applied. */
    uint64_t last_index = 0;
    int seen_at_limit = 0, seen_empty = 0;
    unsigned long long deadline = harness_now_ms() + cluster_tick_ms() * 1000u;
    while ((!seen_at_limit || !seen_empty) && harness_now_ms() < deadline) {
        embraft_ready *ready = poll_entries(node);
        if (ready == NULL) {
            continue;
        }
        size_t count = 0;
        embraft_ready_entry_count(ready, &count);
        for (size_t e = 0; e < count; e++) {
            uint64_t index = 0, term = 0, proposal = 0;
            uint32_t kind = 0;
            const uint8_t *data = NULL;
            size_t len = 0;
            CHECK_OK(embraft_ready_entry(ready, e, &index, &term, &kind, &data, &len, &proposal));
            CHECK(data != NULL); /* never NULL, even when empty */
            if (proposal == at_limit) {
                seen_at_limit = len == 64 && memcmp(data, big, 64) == 0;
            }
            if (proposal == empty) {
                seen_empty = len == 0 && kind == EMBRAFT_ENTRY_NORMAL;
            }
            last_index = index;
        }
        uint64_t u64 = 0;
        uint32_t u32 = 0;
        size_t size = 0;
        const uint8_t *bytes = NULL;
        const char *text = NULL;
        size_t messages = 0, outcomes = 0, logs = 0;
        embraft_ready_message_count(ready, &messages);
        embraft_ready_outcome_count(ready, &outcomes);
        embraft_ready_log_count(ready, &logs);
        CHECK_STATUS(embraft_ready_entry(ready, count, &u64, &u64, &u32, &bytes, &size, &u64),
                     EMBRAFT_ERR_OUT_OF_RANGE);
        CHECK_STATUS(embraft_ready_message(ready, messages, &u64, &bytes, &size),
                     EMBRAFT_ERR_OUT_OF_RANGE);
        CHECK_STATUS(embraft_ready_outcome(ready, outcomes, &u64, &u32, &u64),
                     EMBRAFT_ERR_OUT_OF_RANGE);
        CHECK_STATUS(embraft_ready_log(ready, logs, &u32, &text), EMBRAFT_ERR_OUT_OF_RANGE);
        CHECK_STATUS(embraft_ready_log(ready, (size_t)-1, &u32, &text), EMBRAFT_ERR_OUT_OF_RANGE);
        /* NULL outputs are refused and nothing is written. */
        CHECK_STATUS(embraft_ready_entry(ready, 0, &u64, NULL, &u32, &bytes, &size, &u64),
                     EMBRAFT_ERR_NULL_ARGUMENT);
        CHECK_STATUS(embraft_ready_entry_count(ready, NULL), EMBRAFT_ERR_NULL_ARGUMENT);
        CHECK_STATUS(embraft_ready_state(ready, &u32, NULL, &u64), EMBRAFT_ERR_NULL_ARGUMENT);
        CHECK_STATUS(embraft_ready_state_changed(ready, NULL), EMBRAFT_ERR_NULL_ARGUMENT);
        embraft_ready_free(ready);
    }
    CHECK(seen_at_limit && seen_empty);
    CHECK_OK(embraft_node_ack_applied(node, last_index));
    CHECK_OK(embraft_node_ack_applied(node, last_index)); /* repeating is harmless */
    CHECK_OK(embraft_node_ack_applied(node, 1));          /* so is lagging */
    CHECK_STATUS(embraft_node_ack_applied(node, last_index + 1), EMBRAFT_ERR_NOT_DELIVERED);
    embraft_node_free(node);
}

static void invalid_configurations_are_refused_with_a_message(void) {
    embraft_node *node = NULL;
    embraft_config *config = single_node_config();
    CHECK(config != NULL);
    uint64_t others[] = {2, 3};
    uint64_t with_zero[] = {0, 1};
    uint64_t self = 1;
    char message[256];

    CHECK_STATUS(embraft_node_new(config, NULL), EMBRAFT_ERR_NULL_ARGUMENT);

    embraft_config_set_peers(config, others, 2);
    CHECK_STATUS(embraft_node_new(config, &node), EMBRAFT_ERR_INVALID_CONFIG);
    CHECK(node == NULL);
    CHECK_OK(embraft_config_last_error(config, message, sizeof message, NULL));
    CHECK(strstr(message, "peers") != NULL);

    /* Node id 0 is refused at the call, and the config keeps what it had. */
    CHECK_STATUS(embraft_config_set_peers(config, with_zero, 2), EMBRAFT_ERR_INVALID_ARGUMENT);
    CHECK_OK(embraft_config_last_error(config, message, sizeof message, NULL));
    CHECK(strstr(message, "node id 0") != NULL);
    CHECK_STATUS(embraft_node_new(config, &node), EMBRAFT_ERR_INVALID_CONFIG);
    embraft_config_set_peers(config, &self, 1);

    /* An applied index cannot precede the node's first start. */
    embraft_config_set_applied_index(config, 3);
    CHECK_STATUS(embraft_node_new(config, &node), EMBRAFT_ERR_INVALID_CONFIG);
    embraft_config_set_applied_index(config, 0);

    CHECK_STATUS(embraft_config_set_id(config, 0), EMBRAFT_ERR_INVALID_ARGUMENT);
    CHECK_OK(embraft_config_last_error(config, message, sizeof message, NULL));
    CHECK(strstr(message, "node id 0") != NULL);

    embraft_config_set_election_ticks(config, 2);
    embraft_config_set_heartbeat_ticks(config, 2);
    CHECK_STATUS(embraft_node_new(config, &node), EMBRAFT_ERR_INVALID_CONFIG);
    embraft_config_set_election_ticks(config, 10);
    embraft_config_set_heartbeat_ticks(config, 1);

    embraft_config_set_max_entry_bytes(config, 0);
    CHECK_STATUS(embraft_node_new(config, &node), EMBRAFT_ERR_INVALID_CONFIG);
    embraft_config_set_max_entry_bytes(config, 1024);

    embraft_config_set_input_queue_capacity(config, 0);
    CHECK_STATUS(embraft_node_new(config, &node), EMBRAFT_ERR_INVALID_CONFIG);
    embraft_config_set_input_queue_capacity(config, 64);

    embraft_config_set_segment_size(config, 100);
    CHECK_STATUS(embraft_node_new(config, &node), EMBRAFT_ERR_INVALID_CONFIG);
    embraft_config_set_segment_size(config, 1u << 20);
    CHECK(node == NULL);

    /* A segment must hold the largest entry with its records, checked by
     * embraft_node_new whatever order the two setters came in: a proposal
     * of the limit would otherwise stop the node. */
    static const uint64_t pairs[][2] = {
        {4096, 1u << 20}, {1u << 20, 1u << 20}, {64u << 20, 128u << 20}, {4096, 3300}};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        CHECK_OK(embraft_config_set_segment_size(config, pairs[i][0]));
        CHECK_OK(embraft_config_set_max_entry_bytes(config, pairs[i][1]));
        CHECK_STATUS(embraft_node_new(config, &node), EMBRAFT_ERR_INVALID_CONFIG);
        CHECK_OK(embraft_config_last_error(config, message, sizeof message, NULL));
        CHECK(strstr(message, "segment size") != NULL && strstr(message, "max_entry_bytes") != NULL);
    }
    CHECK(node == NULL);
    embraft_config_set_segment_size(config, 1u << 20);
    embraft_config_set_max_entry_bytes(config, 1024);

    /* The input queue's capacity is bounded: nothing is allocated per slot,
     * and what a host may pile up stays reasonable. */
    static const size_t capacities[] = {EMBRAFT_MAX_INPUT_QUEUE_CAPACITY + 1, (size_t)1 << 40,
                                        SIZE_MAX};
    for (size_t i = 0; i < sizeof capacities / sizeof capacities[0]; i++) {
        CHECK_OK(embraft_config_set_input_queue_capacity(config, capacities[i]));
        CHECK_STATUS(embraft_node_new(config, &node), EMBRAFT_ERR_INVALID_CONFIG);
        CHECK_OK(embraft_config_last_error(config, message, sizeof message, NULL));
        CHECK(strstr(message, "input queue capacity") != NULL);
    }
    CHECK(node == NULL);
    CHECK_OK(embraft_config_set_input_queue_capacity(config, EMBRAFT_MAX_INPUT_QUEUE_CAPACITY));
    CHECK_OK(embraft_node_new(config, &node));
    embraft_node_free(node);
    node = NULL;
    embraft_config_set_input_queue_capacity(config, 64);

    /* A node without a data directory. */
    embraft_config *no_dir = NULL;
    CHECK_OK(embraft_config_new(&no_dir));
    embraft_config_set_id(no_dir, 1);
    embraft_config_set_peers(no_dir, &self, 1);
    CHECK_STATUS(embraft_node_new(no_dir, &node), EMBRAFT_ERR_INVALID_CONFIG);
    embraft_config_free(no_dir);

    /* One directory, one node: a second node on it is refused. */
    embraft_node *first = NULL;
    CHECK_OK(embraft_node_new(config, &first));
    CHECK_STATUS(embraft_node_new(config, &node), EMBRAFT_ERR_DIRECTORY_LOCKED);
    CHECK(node == NULL);
    embraft_node_free(first);
    /* Freed, the directory is released at once. */
    CHECK_OK(embraft_node_new(config, &node));
    embraft_node_free(node);
    embraft_config_free(config);
}

static void full_input_queue_answers_busy(void) {
    embraft_config *config = single_node_config();
    CHECK(config != NULL);
    embraft_config_set_input_queue_capacity(config, 1);
    embraft_node *node = NULL;
    CHECK_OK(embraft_node_new(config, &node));
    embraft_config_free(config);
    int busy = 0;
    for (int i = 0; i < 200000 && !busy; i++) {
        uint64_t proposal = 0;
        embraft_status status = embraft_node_propose(node, (const uint8_t *)"x", 1, &proposal);
        CHECK(status == EMBRAFT_OK || status == EMBRAFT_ERR_BUSY);
        busy = status == EMBRAFT_ERR_BUSY;
    }
    CHECK(busy);
    char message[128];
    CHECK_OK(embraft_node_last_error(node, message, sizeof message, NULL));
    CHECK(strstr(message, "full") != NULL);
    embraft_node_free(node);
}

/* Bytes that are not a message, or that are addressed elsewhere, are refused
 * with a status; real messages with flipped bytes either decode or are
 * refused; the cluster keeps working throughout. Random bytes go to a node
 * of its own: now and then they decode into a well-formed append or vote
 * from some node, which a member accepts (a member hears any leader or
 * candidate, since it may lag behind the membership), so they would test
 * Raft against hostile peers, which is outside its fault model. */
static void garbage_and_misaddressed_messages_are_refused(void) {
    struct cluster *lone = cluster_new(1);
    CHECK(lone != NULL);
    embraft_status lone_status = cluster_start(lone, 0, 0);
    if (lone_status != EMBRAFT_OK) {
        cluster_free(lone);
    }
    CHECK_OK(lone_status);
    struct cluster *c = cluster_new(3);
    CHECK(c != NULL);
    for (size_t i = 0; i < 3; i++) {
        embraft_status status = cluster_start(c, i, 0);
        if (status != EMBRAFT_OK) {
            cluster_free(c);
            cluster_free(lone);
        }
        CHECK_OK(status);
    }
    embraft_node *target = lone->nodes[0].node;
    uint8_t buf[512];

    int statuses_ok = 1;
    CHECK_STATUS(embraft_node_step(target, buf, 0), EMBRAFT_ERR_MALFORMED_MESSAGE);
    CHECK_STATUS(embraft_node_step(target, NULL, 0), EMBRAFT_ERR_MALFORMED_MESSAGE);
    CHECK_STATUS(embraft_node_step(target, NULL, 10), EMBRAFT_ERR_NULL_ARGUMENT);
    for (int round = 0; round < 20000; round++) {
        size_t len = (size_t)(next_random() % sizeof buf);
        for (size_t b = 0; b < len; b++) {
            buf[b] = (uint8_t)next_random();
        }
        /* Half of the time, start like a real message (version byte 1). */
        if (len > 0 && round % 2 == 0) {
            buf[0] = 1;
        }
        embraft_status status = embraft_node_step(target, buf, len);
        statuses_ok &= status == EMBRAFT_ERR_MALFORMED_MESSAGE ||
                       status == EMBRAFT_ERR_WRONG_RECIPIENT || status == EMBRAFT_OK ||
                       status == EMBRAFT_ERR_BUSY;
    }

    /* Elect a leader, then mutate its real messages and misaddress them. */
    int elected = cluster_run_until(c, cluster_has_leader, NULL, cluster_tick_ms() * 1000u);
    int misaddressed = 0, mutated = 0;
    unsigned long long deadline = harness_now_ms() + cluster_tick_ms() * 200u;
    while (elected && harness_now_ms() < deadline && mutated < 2000) {
        int leader = cluster_agreed_leader(c);
        embraft_ready *ready = NULL;
        cluster_pump(c);
        if (leader < 0) {
            continue;
        }
        embraft_node_tick(c->nodes[leader].node);
        if (embraft_node_poll_ready(c->nodes[leader].node, cluster_tick_ms(), &ready) !=
            EMBRAFT_OK) {
            continue;
        }
        size_t count = 0;
        embraft_ready_message_count(ready, &count);
        for (size_t m = 0; m < count; m++) {
            uint64_t to = 0;
            const uint8_t *data = NULL;
            size_t len = 0;
            embraft_ready_message(ready, m, &to, &data, &len);
            /* Delivered to a node it is not addressed to: refused. */
            size_t wrong = (size_t)(to % 3); /* the index after `to - 1` */
            if (wrong == (size_t)leader) {
                wrong = (wrong + 1) % 3;
            }
            if (len <= sizeof buf && wrong != to - 1) {
                misaddressed += embraft_node_step(c->nodes[wrong].node, data, len) ==
                                EMBRAFT_ERR_WRONG_RECIPIENT;
            }
            /* Flipped bytes: decoded or refused, never a crash (on the
             * node of its own, for the reason above). */
            for (int k = 0; k < 20 && len <= sizeof buf; k++) {
                memcpy(buf, data, len);
                buf[next_random() % len] ^= (uint8_t)(1u << (next_random() % 8));
                size_t cut = (k % 4 == 0) ? (size_t)(next_random() % len) : len;
                embraft_status status = embraft_node_step(target, buf, cut);
                statuses_ok &= status == EMBRAFT_ERR_MALFORMED_MESSAGE ||
                               status == EMBRAFT_ERR_WRONG_RECIPIENT || status == EMBRAFT_OK ||
                               status == EMBRAFT_ERR_BUSY;
                mutated++;
            }
        }
        /* The batch still carries the leader's real work. */
        cluster_handle_ready(c, (size_t)leader, ready);
        embraft_ready_free(ready);
    }
    /* Whatever the garbage did, the cluster still elects and commits. */
    int leads = cluster_run_until(c, cluster_has_leader, NULL, cluster_tick_ms() * 2000u);
    int broken = c->broken || lone->broken;
    cluster_free(c);
    cluster_free(lone);
    CHECK(statuses_ok);
    CHECK(elected);
    CHECK(misaddressed > 0);
    CHECK(mutated > 0);
    CHECK(leads);
    CHECK(!broken);
}

/* A ready batch is owned by the host: it stays readable after its node is
 * freed. */
/* The proposal's entry in `ready`, if there: its payload must be "kept". */
static int holds_kept_entry(const embraft_ready *ready, uint64_t id) {
    size_t count = 0;
    int found = 0;
    embraft_ready_entry_count(ready, &count);
    for (size_t e = 0; e < count; e++) {
        uint64_t index = 0, term = 0, proposal = 0;
        uint32_t kind = 0;
        const uint8_t *data = NULL;
        size_t len = 0;
        if (embraft_ready_entry(ready, e, &index, &term, &kind, &data, &len, &proposal) ==
                EMBRAFT_OK &&
            proposal == id) {
            found = len == 4 && memcmp(data, "kept", 4) == 0;
        }
    }
    return found;
}

static void ready_batches_outlive_their_node(void) {
    embraft_config *config = single_node_config();
    CHECK(config != NULL);
    embraft_node *node = NULL;
    CHECK_OK(embraft_node_new(config, &node));
    embraft_config_free(config);
    CHECK(lead_alone(node));
    uint64_t id = 0;
    CHECK_OK(embraft_node_propose(node, (const uint8_t *)"kept", 4, &id));
    embraft_ready *ready = NULL;
    for (int tries = 0; tries < 100; tries++) {
        ready = poll_entries(node);
        if (ready == NULL || holds_kept_entry(ready, id)) {
            break;
        }
        embraft_ready_free(ready);
        ready = NULL;
    }
    embraft_node_free(node);
    CHECK(ready != NULL);
    /* Read after the node is gone: the views belong to the batch. */
    int found = holds_kept_entry(ready, id);
    embraft_ready_free(ready);
    CHECK(found);
}

#define PROPOSER_THREADS 4
#define PROPOSALS_PER_THREAD 250

struct proposer {
    embraft_node *node;
    unsigned number;
    uint64_t ids[PROPOSALS_PER_THREAD];
    int failed;
};

static int compare_ids(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Proposes from its own thread, retrying while the input queue is full. */
static void *propose_from_thread(void *arg) {
    struct proposer *p = arg;
    for (unsigned k = 0; k < PROPOSALS_PER_THREAD; k++) {
        char data[32];
        int len = snprintf(data, sizeof data, "t%u-%u", p->number, k);
        embraft_status status;
        do {
            status = embraft_node_propose(p->node, (const uint8_t *)data, (size_t)len, &p->ids[k]);
        } while (status == EMBRAFT_ERR_BUSY);
        if (status != EMBRAFT_OK) {
            p->failed = 1;
            break;
        }
        /* Other threads tick and ask for status meanwhile, too. */
        if (k % 50 == 0) {
            embraft_status_report *report = NULL;
            if (embraft_node_status(p->node, &report) == EMBRAFT_OK) {
                embraft_status_report_free(report);
            }
            embraft_node_tick(p->node);
        }
    }
    return NULL;
}

static void inputs_from_many_threads_while_another_polls(void) {
    embraft_config *config = single_node_config();
    CHECK(config != NULL);
    embraft_config_set_input_queue_capacity(config, 64); /* meet BUSY on the way */
    embraft_node *node = NULL;
    CHECK_OK(embraft_node_new(config, &node));
    embraft_config_free(config);
    int leads = lead_alone(node);
    if (!leads) {
        embraft_node_free(node);
    }
    CHECK(leads);

    static struct proposer proposers[PROPOSER_THREADS];
    pthread_t threads[PROPOSER_THREADS];
    for (unsigned t = 0; t < PROPOSER_THREADS; t++) {
        memset(&proposers[t], 0, sizeof proposers[t]);
        proposers[t].node = node;
        proposers[t].number = t;
        CHECK(pthread_create(&threads[t], NULL, propose_from_thread, &proposers[t]) == 0);
    }

    /* This thread polls, applies and acknowledges until every proposal has
     * an outcome. (Ids are unique but not dense: a call refused as busy
     * may have used one.) */
    static uint64_t committed[PROPOSER_THREADS * PROPOSALS_PER_THREAD];
    size_t outcomes_seen = 0, committed_count = 0;
    unsigned long long deadline = harness_now_ms() + cluster_tick_ms() * 6000u;
    while (outcomes_seen < PROPOSER_THREADS * PROPOSALS_PER_THREAD &&
           harness_now_ms() < deadline) {
        embraft_ready *ready = NULL;
        if (embraft_node_poll_ready(node, cluster_tick_ms(), &ready) != EMBRAFT_OK) {
            continue;
        }
        size_t count = 0;
        embraft_ready_outcome_count(ready, &count);
        for (size_t o = 0; o < count; o++) {
            uint64_t id = 0, index = 0;
            uint32_t outcome = 0;
            embraft_ready_outcome(ready, o, &id, &outcome, &index);
            outcomes_seen++;
            if (outcome == EMBRAFT_PROPOSAL_COMMITTED &&
                committed_count < PROPOSER_THREADS * PROPOSALS_PER_THREAD) {
                committed[committed_count++] = id;
            }
        }
        uint64_t last = 0;
        embraft_ready_entry_count(ready, &count);
        for (size_t e = 0; e < count; e++) {
            uint64_t term = 0, proposal = 0;
            uint32_t kind = 0;
            const uint8_t *data = NULL;
            size_t len = 0;
            embraft_ready_entry(ready, e, &last, &term, &kind, &data, &len, &proposal);
        }
        if (count > 0) {
            embraft_node_ack_applied(node, last);
        }
        embraft_ready_free(ready);
    }
    int threads_ok = 1;
    for (unsigned t = 0; t < PROPOSER_THREADS; t++) {
        pthread_join(threads[t], NULL);
        threads_ok &= !proposers[t].failed;
    }
    embraft_node_free(node);
    CHECK(threads_ok);
    CHECK(outcomes_seen == PROPOSER_THREADS * PROPOSALS_PER_THREAD);
    CHECK(committed_count == PROPOSER_THREADS * PROPOSALS_PER_THREAD);
    /* Every id a thread got was committed exactly once. */
    qsort(committed, committed_count, sizeof committed[0], compare_ids);
    for (size_t i = 1; i < committed_count; i++) {
        CHECK(committed[i] != committed[i - 1]);
    }
    for (unsigned t = 0; t < PROPOSER_THREADS; t++) {
        for (unsigned k = 0; k < PROPOSALS_PER_THREAD; k++) {
            CHECK(bsearch(&proposers[t].ids[k], committed, committed_count, sizeof committed[0],
                          compare_ids) != NULL);
        }
    }
}

const struct test_case api_tests[] = {
    {"api: versions and status strings", versions_and_status_strings},
    {"api: config lifecycle and setters", config_lifecycle_and_setters},
    {"api: NULL handles are refused everywhere", null_handles_are_refused_everywhere},
    {"api: node lifecycle, status, readiness fd and logs",
     node_lifecycle_status_readiness_fd_and_logs},
    {"api: proposals, entries, acks and accessor bounds",
     proposals_entries_acks_and_accessor_bounds},
    {"api: invalid configurations are refused with a message",
     invalid_configurations_are_refused_with_a_message},
    {"api: full input queue answers busy", full_input_queue_answers_busy},
    {"api: garbage and misaddressed messages are refused",
     garbage_and_misaddressed_messages_are_refused},
    {"api: ready batches outlive their node", ready_batches_outlive_their_node},
    {"api: inputs from many threads while another polls",
     inputs_from_many_threads_while_another_polls},
    {NULL, NULL},
};
