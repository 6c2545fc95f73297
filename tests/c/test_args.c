/*
 * Every exported function against bad arguments: NULL for each pointer
 * argument in turn, out-of-range enumeration values, ids and indexes 0 and
 * the largest value. Each failed call must return its status and, on a
 * handle that keeps messages (config, node, and a writer's node), leave
 * its own message rather than the previous call's (on a config, a node
 * or a runtime, and a writer's node or runtime).
 *
 * The calls are generated from include/embraft.h by tests/c/gen_args.py
 * (tests/c/run.sh writes args_cases.inc next to the test binaries), so a
 * function added to the header is covered at once, and one the generator
 * cannot cover yet becomes a failing test.
 */
#define _POSIX_C_SOURCE 200809L
#include "cluster.h"

#include <stdint.h>
#include <string.h>

/* The group the fixture's runtime runs; and one no generated call names,
 * whose failure plants a message on the runtime. */
#define ARGS_GROUP 7u
#define ARGS_PLANT_GROUP 424242u

/* Where a call's failure message goes. */
enum args_kind { ARGS_NO_MESSAGE, ARGS_CONFIG, ARGS_NODE, ARGS_RUNTIME };

/* The message planted before the call under test: no generated call
 * leaves it. */
static char args_planted[256];

/* Live handles for the arguments that are not under test. */
static struct {
    int up;
    embraft_config *config;
    embraft_node *node;
    embraft_ready *ready;
    embraft_status_report *report;
    embraft_snapshot_writer *writer;
    embraft_runtime *runtime;
    embraft_runtime_ready *rt_ready;
} fx;

static const uint8_t args_payload[] = "x";
static const uint64_t args_ids[] = {1};
static const uint64_t args_ids_with_zero[] = {0};

/* Output slots and handles a call may produce; released after each call. */
struct args_outs {
    uint64_t u64;
    uint32_t u32;
    size_t size;
    bool flag;
    int fd;
    const uint8_t *bytes;
    const char *text;
    char buf[64];
    embraft_config *config;
    embraft_node *node;
    embraft_ready *ready;
    embraft_status_report *report;
    embraft_snapshot_writer *writer;
    embraft_runtime *runtime;
    embraft_runtime_ready *rt_ready;
    uint64_t ids[4];
    const embraft_rt_message *rt_message;
    const embraft_rt_entry *rt_entry;
    const embraft_rt_outcome *rt_outcome;
    const embraft_rt_read *rt_read;
    const embraft_rt_state *rt_state;
    const embraft_rt_restore *rt_restore;
    const embraft_rt_snapshot_wanted *rt_snapshot_wanted;
    const embraft_rt_log *rt_log;
    embraft_rt_frame_report rt_frame_report;
    embraft_metrics metrics;
    const uint64_t *id_view;
};

static void args_release(struct args_outs *o) {
    embraft_config_free(o->config);
    embraft_node_free(o->node);
    embraft_ready_free(o->ready);
    embraft_status_report_free(o->report);
    embraft_snapshot_writer_abort(o->writer);
    embraft_runtime_free(o->runtime);
    embraft_runtime_ready_free(o->rt_ready);
    memset(o, 0, sizeof *o);
}

/* Acknowledges the batch's entries; returns the last index, or 0. */
static uint64_t args_ack(embraft_ready *ready) {
    size_t count = 0;
    uint64_t index = 0, term = 0, proposal = 0;
    uint32_t kind = 0;
    const uint8_t *data = NULL;
    size_t len = 0;
    embraft_ready_entry_count(ready, &count);
    if (count == 0) {
        return 0;
    }
    embraft_ready_entry(ready, count - 1, &index, &term, &kind, &data, &len, &proposal);
    embraft_node_ack_applied(fx.node, index);
    return index;
}

/* A runtime running group ARGS_GROUP alone, led here, with an applied
 * and acknowledged entry, and a batch holding an entry of it. */
static int args_runtime_fixture(void) {
    uint64_t self = 1;
    embraft_config_set_data_dir(fx.config, harness_temp_dir());
    REQUIRE(embraft_runtime_new(fx.config, 1, &fx.runtime) == EMBRAFT_OK);
    REQUIRE(embraft_runtime_start_group(fx.runtime, ARGS_GROUP, &self, 1, 0) == EMBRAFT_OK);
    unsigned long long deadline = harness_now_ms() + cluster_tick_ms() * 1000u;
    uint64_t proposal = 0;
    int leader = 0;
    while (fx.rt_ready == NULL && harness_now_ms() < deadline) {
        embraft_runtime_ready *ready = NULL;
        embraft_runtime_tick(fx.runtime);
        REQUIRE(embraft_runtime_poll(fx.runtime, cluster_tick_ms(), &ready) == EMBRAFT_OK);
        const embraft_rt_state *states = NULL;
        const embraft_rt_entry *entries = NULL;
        size_t state_count = 0, entry_count = 0;
        embraft_runtime_ready_states(ready, &states, &state_count);
        embraft_runtime_ready_entries(ready, &entries, &entry_count);
        for (size_t i = 0; i < state_count; i++) {
            leader = states[i].role == EMBRAFT_ROLE_LEADER;
        }
        if (entry_count > 0) {
            const embraft_rt_entry *last = &entries[entry_count - 1];
            embraft_runtime_ack_applied(fx.runtime, ARGS_GROUP, last->index);
            if (proposal != 0 && last->proposal_id == proposal) {
                fx.rt_ready = ready;
                break;
            }
        }
        embraft_runtime_ready_free(ready);
        if (leader && proposal == 0) {
            REQUIRE(embraft_runtime_propose(fx.runtime, ARGS_GROUP, args_payload, 1, &proposal) ==
                    EMBRAFT_OK);
        }
    }
    REQUIRE(fx.rt_ready != NULL);
    return 1;
}

/* A leading one-node cluster with an applied entry, a ready batch, a
 * status report and an open snapshot writer. Built once, freed by the last
 * test of the list. */
static int args_fixture(void) {
    if (fx.up) {
        return 1;
    }
    uint64_t self = 1;
    REQUIRE(embraft_config_new(&fx.config) == EMBRAFT_OK);
    embraft_config_set_id(fx.config, 1);
    embraft_config_set_peers(fx.config, &self, 1);
    embraft_config_set_data_dir(fx.config, harness_temp_dir());
    embraft_config_set_segment_size(fx.config, 1u << 20);
    embraft_config_set_max_entry_bytes(fx.config, 1u << 19);
    embraft_config_set_sync_mode(fx.config, EMBRAFT_SYNC_NEVER);
    REQUIRE(embraft_node_new(fx.config, &fx.node) == EMBRAFT_OK);
    fx.up = 1;

    unsigned long long deadline = harness_now_ms() + cluster_tick_ms() * 1000u;
    uint64_t applied = 0;
    uint64_t proposal = 0;
    while (fx.ready == NULL && harness_now_ms() < deadline) {
        embraft_ready *ready = NULL;
        embraft_node_tick(fx.node);
        if (embraft_node_poll_ready(fx.node, cluster_tick_ms(), &ready) != EMBRAFT_OK) {
            continue;
        }
        uint32_t role = 0;
        uint64_t leader = 0, term = 0;
        embraft_ready_state(ready, &role, &leader, &term);
        uint64_t last = args_ack(ready);
        applied = last > applied ? last : applied;
        if (proposal != 0 && last > 0) {
            fx.ready = ready; /* holds the entry just proposed */
            break;
        }
        embraft_ready_free(ready);
        if (role == EMBRAFT_ROLE_LEADER && applied > 0 && proposal == 0) {
            REQUIRE(embraft_node_snapshot_begin(fx.node, applied, &fx.writer) == EMBRAFT_OK);
            REQUIRE(embraft_node_propose(fx.node, args_payload, 1, &proposal) == EMBRAFT_OK);
        }
    }
    REQUIRE(fx.ready != NULL && fx.writer != NULL);
    REQUIRE(embraft_node_status(fx.node, &fx.report) == EMBRAFT_OK);
    return args_runtime_fixture();
}

static void args_teardown(void) {
    embraft_runtime_ready_free(fx.rt_ready);
    embraft_runtime_free(fx.runtime);
    embraft_snapshot_writer_abort(fx.writer);
    embraft_ready_free(fx.ready);
    embraft_status_report_free(fx.report);
    embraft_node_free(fx.node);
    embraft_config_free(fx.config);
    memset(&fx, 0, sizeof fx);
}

/* The last error of the handle of `kind`; 0 if it cannot be read. */
static int args_message(enum args_kind kind, char *message, size_t size, size_t *len) {
    embraft_status status =
        kind == ARGS_CONFIG ? embraft_config_last_error(fx.config, message, size, len)
        : kind == ARGS_NODE ? embraft_node_last_error(fx.node, message, size, len)
                            : embraft_runtime_last_error(fx.runtime, message, size, len);
    return status == EMBRAFT_OK;
}

/* Gives the handle of `kind` a message no call under test leaves, and
 * keeps it in args_planted. */
static void args_plant(enum args_kind kind) {
    args_planted[0] = '\0';
    if (kind == ARGS_CONFIG) {
        embraft_config_set_log_level(fx.config, 99);
    } else if (kind == ARGS_NODE) {
        embraft_node_set_log_level(fx.node, 99);
    } else if (kind == ARGS_RUNTIME) {
        embraft_runtime_stop_group(fx.runtime, ARGS_PLANT_GROUP);
    } else {
        return;
    }
    args_message(kind, args_planted, sizeof args_planted, NULL);
}

/* Checks a call's status (`want`, or `also` unless it is -1) and, for a
 * failure on a handle that keeps messages, that the message is this
 * call's: not empty, not the planted one, and holding `needle` if given. */
static int args_expect(const char *call, enum args_kind kind, embraft_status got,
                       embraft_status want, embraft_status also, const char *needle) {
    if (got != want && (also == -1 || got != also)) {
        fprintf(stderr, "  %s returned %d (%s), expected %d (%s)\n", call, (int)got,
                embraft_status_str(got), (int)want, embraft_status_str(want));
        return 0;
    }
    if (got == EMBRAFT_OK || kind == ARGS_NO_MESSAGE) {
        return 1;
    }
    char message[256];
    size_t len = 0;
    if (!args_message(kind, message, sizeof message, &len)) {
        fprintf(stderr, "  %s: reading the last error failed\n", call);
        return 0;
    }
    if (len == 0 || strcmp(message, args_planted) == 0 ||
        (needle != NULL && strstr(message, needle) == NULL)) {
        fprintf(stderr, "  %s failed with %s but left the message \"%s\" (wanted one with \"%s\")\n",
                call, embraft_status_str(got), message, needle != NULL ? needle : "");
        return 0;
    }
    return 1;
}

/* One generated case: plant a stale message, call, release any output,
 * check. */
#define ARGS_CASE(kind, call, want, also, needle)                               \
    do {                                                                        \
        struct args_outs o;                                                     \
        memset(&o, 0, sizeof o);                                                \
        args_plant(kind);                                                       \
        embraft_status got_ = (call);                                           \
        args_release(&o);                                                       \
        CHECK(args_expect(#call, kind, got_, want, also, needle));              \
    } while (0)

/* A void function given NULL: must return (and not crash). */
#define ARGS_VOID_CASE(call)                                                    \
    do {                                                                        \
        call;                                                                   \
    } while (0)

#include "args_cases.inc"
