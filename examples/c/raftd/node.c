#include "node.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "json.h"
#include "transport.h"

/* Batches handled per loop turn before the loop looks at sockets again. */
#define MAX_BATCHES_PER_TURN 64

/* RAFTD.md "Snapshots". */
#define SNAPSHOT_EVERY_DEFAULT 10000
/* A snapshot that failed is tried again after this long. */
#define SNAPSHOT_RETRY_MS 5000

/* A positive decimal integer from the environment, or `fallback`. */
static uint64_t env_u64(const char *name, uint64_t fallback) {
    const char *text = getenv(name);
    char *end = NULL;
    if (text == NULL || *text < '0' || *text > '9') {
        return fallback;
    }
    unsigned long long value = strtoull(text, &end, 10);
    return *end == '\0' && value > 0 ? (uint64_t)value : fallback;
}

const char *role_name(uint32_t role) {
    switch (role) {
    case EMBRAFT_ROLE_LEADER: return "leader";
    case EMBRAFT_ROLE_CANDIDATE: return "candidate";
    case EMBRAFT_ROLE_PRE_CANDIDATE: return "pre-candidate";
    default: return "follower";
    }
}

void log_embraft_error(struct raftd *r, const char *what, embraft_status status) {
    char message[256] = "";
    if (r->node != NULL) {
        embraft_node_last_error(r->node, message, sizeof message, NULL);
    }
    log_line("%s: %s%s%s", what, embraft_status_str(status), message[0] ? ": " : "", message);
}

int node_start(struct raftd *r, int founding) {
    embraft_config *config = NULL;
    char wal_dir[4096];
    if (embraft_abi_version() != EMBRAFT_ABI_VERSION) {
        log_line("libembraft has ABI %u, raftd was built for %u", embraft_abi_version(),
                 (unsigned)EMBRAFT_ABI_VERSION);
        return -1;
    }
    if (embraft_config_new(&config) != EMBRAFT_OK) {
        return -1;
    }
    snprintf(wal_dir, sizeof wal_dir, "%s/wal", r->data_dir);
    embraft_config_set_id(config, r->id);
    if (founding) {
        embraft_config_set_peers(config, &r->id, 1);
    }
    embraft_config_set_data_dir(config, wal_dir);
    embraft_config_set_election_ticks(config, ELECTION_TICKS);
    embraft_config_set_heartbeat_ticks(config, HEARTBEAT_TICKS);
    embraft_config_set_max_entry_bytes(config, KV_MAX_VALUE + KV_MAX_KEY + 16);
    /* The key/value state lives in memory only: after a restart the node
     * hands over its latest snapshot to restore, then the committed log
     * after it (applied index 0, the default). */
    embraft_config_set_snapshot_entries(config,
                                        env_u64("RAFTD_SNAPSHOT_EVERY", SNAPSHOT_EVERY_DEFAULT));
    uint64_t keep = env_u64("RAFTD_COMPACT_KEEP", 0);
    if (keep > 0) {
        embraft_config_set_compact_keep_entries(config, keep);
    }
    uint64_t quiesce = env_u64("RAFTD_QUIESCE_TICKS", 0);
    if (quiesce > 0 && quiesce <= UINT32_MAX) {
        embraft_config_set_quiesce_ticks(config, (uint32_t)quiesce);
    }
    embraft_config_set_log_level(config, r->log_level);
    embraft_status status = embraft_node_new(config, &r->node);
    if (status != EMBRAFT_OK) {
        char message[512] = "";
        embraft_config_last_error(config, message, sizeof message, NULL);
        log_line("cannot start the node: %s: %s", embraft_status_str(status), message);
        embraft_config_free(config);
        return -1;
    }
    embraft_config_free(config);
    embraft_node_readiness_fd(r->node, &r->readiness_fd);
    return 0;
}

void node_stop(struct raftd *r) {
    embraft_node_free(r->node);
    r->node = NULL;
    r->readiness_fd = -1;
}

void node_tick(struct raftd *r) {
    /* BUSY means the node is behind on its inputs; a skipped tick is
     * harmless. */
    embraft_node_tick(r->node);
}

static void note_state(struct raftd *r, const embraft_ready *ready) {
    uint32_t role = 0;
    uint64_t leader = 0, term = 0;
    embraft_ready_state(ready, &role, &leader, &term);
    if (role != r->role || leader != r->leader || term != r->term) {
        log_verbose_line("%s in term %llu, leader %llu", role_name(role), (unsigned long long)term,
                         (unsigned long long)leader);
    }
    r->role = role;
    r->leader = leader;
    r->term = term;
}

static void send_messages(struct raftd *r, const embraft_ready *ready) {
    size_t count = 0;
    embraft_ready_message_count(ready, &count);
    for (size_t i = 0; i < count; i++) {
        uint64_t to = 0;
        const uint8_t *data = NULL;
        size_t len = 0;
        if (embraft_ready_message(ready, i, &to, &data, &len) == EMBRAFT_OK) {
            transport_send(r, to, data, len);
        }
    }
}

static void describe_conf_change(const uint8_t *data, size_t len) {
    static const char *const names[] = {"?", "add voter", "promote learner", "add learner",
                                        "remove node"};
    if (len == 0) {
        log_verbose_line("membership: leave joint configuration");
    } else if (len == 10 && data[0] == 1 && data[1] >= 1 && data[1] <= 4) {
        log_verbose_line("membership: %s %llu", names[data[1]], (unsigned long long)get_u64(data + 2));
    } else {
        log_verbose_line("membership: joint change");
    }
}

static void apply_entries(struct raftd *r, const embraft_ready *ready) {
    size_t count = 0;
    uint64_t last = 0;
    embraft_ready_entry_count(ready, &count);
    for (size_t i = 0; i < count; i++) {
        uint64_t index = 0, term = 0, proposal = 0;
        uint32_t kind = 0;
        const uint8_t *data = NULL;
        size_t len = 0;
        if (embraft_ready_entry(ready, i, &index, &term, &kind, &data, &len, &proposal) != EMBRAFT_OK) {
            continue;
        }
        if (kind == EMBRAFT_ENTRY_NORMAL) {
            int command = kv_apply(&r->kv, data, len);
            if (command == KV_PEER || command == KV_REMOVE_PEER) {
                log_verbose_line("peer %llu %s", (unsigned long long)get_u64(data + 1),
                                 command == KV_PEER ? "recorded" : "removed");
            }
        } else if (kind == EMBRAFT_ENTRY_CONF_CHANGE) {
            describe_conf_change(data, len);
        }
        last = index;
    }
    if (last > 0) {
        r->applied = last;
        embraft_status status = embraft_node_ack_applied(r->node, last);
        if (status != EMBRAFT_OK && status != EMBRAFT_ERR_BUSY) {
            log_embraft_error(r, "ack_applied", status);
        }
    }
}

static void hand_out_results(struct raftd *r, const embraft_ready *ready) {
    size_t count = 0;
    embraft_ready_outcome_count(ready, &count);
    for (size_t i = 0; i < count; i++) {
        uint64_t id = 0, index = 0;
        uint32_t outcome = 0;
        if (embraft_ready_outcome(ready, i, &id, &outcome, &index) == EMBRAFT_OK) {
            api_on_outcome(r, id, outcome, index);
        }
    }
    embraft_ready_read_count(ready, &count);
    for (size_t i = 0; i < count; i++) {
        uint64_t context = 0, index = 0;
        uint32_t result = 0;
        if (embraft_ready_read(ready, i, &context, &result, &index) == EMBRAFT_OK) {
            api_on_read(r, context, result, index);
        }
    }
}

/* Before the batch's entries: replaces the key/value state and the address
 * book with the snapshot the batch names (installed from the leader, or
 * this node's own after a restart). The whole file is decoded first; a
 * malformed one is refused and the state kept, and -1 tells the loop to
 * stop: no entry may be applied on top of the wrong state. */
static int restore_if_asked(struct raftd *r, const embraft_ready *ready) {
    bool restore = false;
    uint64_t index = 0, term = 0;
    const char *path = NULL;
    embraft_ready_snapshot_to_restore(ready, &restore, &index, &term);
    if (!restore) {
        return 0;
    }
    embraft_status status = embraft_ready_snapshot_path(ready, &path);
    if (status != EMBRAFT_OK) {
        log_embraft_error(r, "refusing snapshot: embraft_ready_snapshot_path", status);
        return -1;
    }
    char why[256] = "";
    struct kv_store restored;
    kv_init(&restored);
    FILE *in = fopen(path, "rb");
    if (in == NULL) {
        snprintf(why, sizeof why, "cannot open it: %s", strerror(errno));
    } else {
        kv_snapshot_read(in, &restored, why, sizeof why);
        fclose(in);
    }
    if (why[0] != '\0') {
        log_line("refusing snapshot %s at index %llu: %s; stopping (no entry is applied on top "
                 "of a state that could not be restored)",
                 path, (unsigned long long)index, why);
        return -1;
    }
    kv_free(&r->kv);
    r->kv = restored;
    r->applied = index;
    /* Entries through the snapshot count as delivered: acknowledge them
     * (BUSY only delays it to the next ack). */
    embraft_node_ack_applied(r->node, index);
    log_line("restored the key/value state from snapshot %s (index %llu, term %llu): %zu keys, "
             "%zu peers",
             path, (unsigned long long)index, (unsigned long long)term, r->kv.key_count,
             r->kv.peer_count);
    return 0;
}

static int write_to_snapshot(void *context, const void *data, size_t len) {
    return embraft_snapshot_writer_write(context, data, len) == EMBRAFT_OK ? 0 : -1;
}

/* Takes the snapshot the node asked for, at the applied index: the state
 * is written and the file finished (synced, checksummed) on this thread,
 * between batches, so it is exactly the state at that index. The loop
 * pauses meanwhile, which an in-memory state of this size allows. */
static void take_snapshot(struct raftd *r) {
    uint64_t now = now_ms();
    if (!r->snapshot_due || r->applied == 0 || now < r->snapshot_retry_at) {
        return;
    }
    /* The snapshot's index must be acknowledged; acks may repeat. */
    embraft_status status = embraft_node_ack_applied(r->node, r->applied);
    embraft_snapshot_writer *writer = NULL;
    if (status == EMBRAFT_OK) {
        status = embraft_node_snapshot_begin(r->node, r->applied, &writer);
    }
    if (status == EMBRAFT_ERR_BUSY || status == EMBRAFT_ERR_NOT_APPLIED) {
        return; /* the node is behind on its inputs: next turn */
    }
    if (status == EMBRAFT_OK) {
        if (kv_snapshot_write(&r->kv, write_to_snapshot, writer) == 0) {
            status = embraft_snapshot_writer_finish(writer);
        } else {
            log_line("snapshot at index %llu: writing failed", (unsigned long long)r->applied);
            embraft_snapshot_writer_abort(writer);
            status = EMBRAFT_ERR_STORAGE;
        }
    }
    if (status == EMBRAFT_OK) {
        log_verbose_line("snapshot taken at index %llu: %zu keys, %zu peers",
                         (unsigned long long)r->applied, r->kv.key_count, r->kv.peer_count);
    } else if (status == EMBRAFT_ERR_STALE_SNAPSHOT) {
        /* One at least as recent exists (installed from the leader). */
    } else {
        log_embraft_error(r, "snapshot failed; retrying in 5 s", status);
        r->snapshot_retry_at = now + SNAPSHOT_RETRY_MS;
        return;
    }
    r->snapshot_due = 0;
}

static void note_snapshot_wanted(struct raftd *r, const embraft_ready *ready) {
    bool wanted = false;
    uint64_t at = 0;
    embraft_ready_snapshot_wanted(ready, &wanted, &at);
    if (wanted) {
        r->snapshot_due = 1;
    }
}

static void print_logs(const embraft_ready *ready) {
    size_t count = 0;
    embraft_ready_log_count(ready, &count);
    for (size_t i = 0; i < count; i++) {
        uint32_t level = 0;
        const char *text = NULL;
        if (embraft_ready_log(ready, i, &level, &text) == EMBRAFT_OK) {
            static const char *const levels[] = {"off", "info", "debug", "trace"};
            log_line("embraft %s: %s", level < 4 ? levels[level] : "?", text);
        }
    }
}

/* A leader makes sure the replicated address book holds its own address:
 * the founder's first act (RAFTD.md start-up, step 3), and a repair after a
 * restart on another host or port. */
static void record_own_address(struct raftd *r) {
    const char *known = kv_peer_addr(&r->kv, r->id);
    uint64_t now = now_ms();
    if (r->role != EMBRAFT_ROLE_LEADER || (known != NULL && strcmp(known, r->advertise) == 0) ||
        now - r->self_addr_checked_at < 1000 || api_pending_self_address(r)) {
        return;
    }
    r->self_addr_checked_at = now;
    api_record_self_address(r);
}

int node_drain(struct raftd *r) {
    for (int turn = 0; turn < MAX_BATCHES_PER_TURN; turn++) {
        embraft_ready *ready = NULL;
        embraft_status status = embraft_node_poll_ready(r->node, 0, &ready);
        if (status == EMBRAFT_TIMED_OUT) {
            break;
        }
        if (status != EMBRAFT_OK) {
            log_embraft_error(r, "the node stopped", status);
            return -1;
        }
        note_state(r, ready);
        send_messages(r, ready);
        if (restore_if_asked(r, ready) != 0) {
            print_logs(ready);
            embraft_ready_free(ready);
            return -1;
        }
        apply_entries(r, ready);
        hand_out_results(r, ready);
        note_snapshot_wanted(r, ready);
        print_logs(ready);
        embraft_ready_free(ready);
        api_after_apply(r);
    }
    take_snapshot(r);
    record_own_address(r);
    return 0;
}

uint64_t node_status_field(struct raftd *r, uint32_t field) {
    embraft_status_report *report = NULL;
    uint64_t value = 0;
    if (embraft_node_status(r->node, &report) == EMBRAFT_OK) {
        embraft_status_report_get(report, field, &value);
        embraft_status_report_free(report);
    }
    return value;
}

int node_is_voter(struct raftd *r, uint64_t id) {
    embraft_status_report *report = NULL;
    size_t count = 0;
    int found = 0;
    if (embraft_node_status(r->node, &report) != EMBRAFT_OK) {
        return 0;
    }
    embraft_status_report_member_count(report, EMBRAFT_MEMBERS_VOTERS, &count);
    for (size_t i = 0; i < count && !found; i++) {
        uint64_t member = 0;
        embraft_status_report_member(report, EMBRAFT_MEMBERS_VOTERS, i, &member);
        found = member == id;
    }
    embraft_status_report_free(report);
    return found;
}

static int append_members(struct buffer *out, const embraft_status_report *report, uint32_t list) {
    size_t count = 0;
    int failed = buffer_append(out, "[", 1);
    embraft_status_report_member_count(report, list, &count);
    for (size_t i = 0; i < count && !failed; i++) {
        uint64_t id = 0;
        embraft_status_report_member(report, list, i, &id);
        failed = buffer_printf(out, "%s\"%llu\"", i ? ", " : "", (unsigned long long)id);
    }
    return failed || buffer_append(out, "]", 1) ? -1 : 0;
}

int peers_json(struct buffer *out, const struct kv_store *kv) {
    int failed = buffer_append(out, "{", 1);
    for (size_t i = 0; i < kv->peer_count && !failed; i++) {
        failed = buffer_printf(out, "%s\"%llu\": ", i ? ", " : "",
                               (unsigned long long)kv->peers[i].id) ||
                 json_append_string(out, kv->peers[i].addr);
    }
    return failed || buffer_append(out, "}", 1) ? -1 : 0;
}

int node_status_json(struct raftd *r, struct buffer *out) {
    embraft_status_report *report = NULL;
    uint64_t role = 0, term = 0, leader = 0, commit = 0, last = 0;
    if (embraft_node_status(r->node, &report) != EMBRAFT_OK) {
        return -1;
    }
    embraft_status_report_get(report, EMBRAFT_FIELD_ROLE, &role);
    embraft_status_report_get(report, EMBRAFT_FIELD_TERM, &term);
    embraft_status_report_get(report, EMBRAFT_FIELD_LEADER, &leader);
    embraft_status_report_get(report, EMBRAFT_FIELD_COMMIT, &commit);
    embraft_status_report_get(report, EMBRAFT_FIELD_LAST_INDEX, &last);
    int failed = buffer_printf(out,
                               "{\"id\": \"%llu\", \"cluster_id\": \"%llu\", \"role\": \"%s\", "
                               "\"term\": %llu, \"leader\": \"%llu\", \"commit\": %llu, "
                               "\"applied\": %llu, \"last_index\": %llu, \"voters\": ",
                               (unsigned long long)r->id, (unsigned long long)r->cluster_id,
                               role_name((uint32_t)role), (unsigned long long)term,
                               (unsigned long long)leader, (unsigned long long)commit,
                               (unsigned long long)r->applied, (unsigned long long)last) ||
                 append_members(out, report, EMBRAFT_MEMBERS_VOTERS) ||
                 buffer_printf(out, ", \"learners\": ") ||
                 append_members(out, report, EMBRAFT_MEMBERS_LEARNERS) ||
                 buffer_printf(out, ", \"peers\": ") || peers_json(out, &r->kv) ||
                 buffer_printf(out, "}\n");
    embraft_status_report_free(report);
    return failed ? -1 : 0;
}
