#include "node.h"

#include <errno.h>
#include <stdbool.h>
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
    } else if (r->runtime != NULL) {
        embraft_runtime_last_error(r->runtime, message, sizeof message, NULL);
    }
    log_line("%s: %s%s%s", what, embraft_status_str(status), message[0] ? ": " : "", message);
}

/* "group G: " before a group's log lines on a sharded node, else "". */
static const char *group_tag(const struct raftd *r, const struct shard *s) {
    static char tag[32];
    if (r->runtime == NULL) {
        return "";
    }
    snprintf(tag, sizeof tag, "group %llu: ", (unsigned long long)s->group);
    return tag;
}

int shards_init(struct raftd *r) {
    r->shards = calloc(r->shard_count, sizeof *r->shards);
    if (r->shards == NULL) {
        return -1;
    }
    for (uint64_t g = 1; g <= r->shard_count; g++) {
        r->shards[g - 1].group = g;
        kv_init(&r->shards[g - 1].kv);
    }
    return 0;
}

void shards_free(struct raftd *r) {
    for (uint64_t i = 0; r->shards != NULL && i < r->shard_count; i++) {
        kv_free(&r->shards[i].kv);
    }
    free(r->shards);
    r->shards = NULL;
}

/* ---- the engine: an embraft node, or a runtime with one group per shard ---- */

embraft_status engine_propose(struct raftd *r, const struct shard *s, const uint8_t *data,
                              size_t len, uint64_t *proposal) {
    return r->runtime ? embraft_runtime_propose(r->runtime, s->group, data, len, proposal)
                      : embraft_node_propose(r->node, data, len, proposal);
}

embraft_status engine_conf_change(struct raftd *r, const struct shard *s, uint32_t change,
                                  uint64_t target, uint64_t *proposal) {
    return r->runtime
               ? embraft_runtime_propose_conf_change(r->runtime, s->group, change, target, proposal)
               : embraft_node_propose_conf_change(r->node, change, target, proposal);
}

embraft_status engine_read_index(struct raftd *r, const struct shard *s, uint64_t context) {
    return r->runtime ? embraft_runtime_read_index(r->runtime, s->group, context)
                      : embraft_node_read_index(r->node, context);
}

embraft_status engine_status(struct raftd *r, const struct shard *s,
                             embraft_status_report **report) {
    return r->runtime ? embraft_runtime_status(r->runtime, s->group, report)
                      : embraft_node_status(r->node, report);
}

embraft_status engine_metrics(struct raftd *r, const struct shard *s, embraft_metrics *metrics) {
    return r->runtime ? embraft_runtime_metrics(r->runtime, s->group, metrics)
                      : embraft_node_metrics(r->node, metrics);
}

void engine_report_unreachable(struct raftd *r, uint64_t peer) {
    if (r->runtime) {
        embraft_runtime_report_unreachable(r->runtime, peer);
    } else {
        embraft_node_report_unreachable(r->node, peer);
    }
}

embraft_status engine_step(struct raftd *r, const uint8_t *data, size_t len) {
    if (r->runtime == NULL) {
        return embraft_node_step(r->node, data, len);
    }
    /* Messages left out one by one (an unknown group, a full mailbox) are
     * retransmitted by Raft; only a malformed frame fails. */
    embraft_rt_frame_report report;
    return embraft_runtime_step_frame(r->runtime, data, len, &report);
}

static embraft_status engine_ack(struct raftd *r, const struct shard *s, uint64_t index) {
    return r->runtime ? embraft_runtime_ack_applied(r->runtime, s->group, index)
                      : embraft_node_ack_applied(r->node, index);
}

static embraft_status engine_snapshot_begin(struct raftd *r, const struct shard *s,
                                            uint64_t index, embraft_snapshot_writer **writer) {
    return r->runtime ? embraft_runtime_snapshot_begin(r->runtime, s->group, index, writer)
                      : embraft_node_snapshot_begin(r->node, index, writer);
}

/* Whether a group started here has no voter and no learner: a group's
 * status holds the membership it restarted with from the WAL as soon as it
 * runs. */
static int group_is_empty(struct raftd *r, const struct shard *s) {
    embraft_status_report *report = NULL;
    size_t voters = 0, learners = 0;
    if (engine_status(r, s, &report) != EMBRAFT_OK) {
        return 0;
    }
    embraft_status_report_member_count(report, EMBRAFT_MEMBERS_VOTERS, &voters);
    embraft_status_report_member_count(report, EMBRAFT_MEMBERS_LEARNERS, &learners);
    embraft_status_report_free(report);
    return voters + learners == 0;
}

static int start_runtime_groups(struct raftd *r, int founding) {
    for (uint64_t g = 1; g <= r->shard_count; g++) {
        embraft_status status =
            embraft_runtime_start_group(r->runtime, g, founding ? &r->id : NULL, founding ? 1 : 0, 0);
        if (status != EMBRAFT_OK) {
            char what[64];
            snprintf(what, sizeof what, "cannot start group %llu", (unsigned long long)g);
            log_embraft_error(r, what, status);
            return -1;
        }
    }
    return 0;
}

int node_start(struct raftd *r, int founding, int joining) {
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
    embraft_status status = r->shard_count > 1 ? embraft_runtime_new(config, 0, &r->runtime)
                                               : embraft_node_new(config, &r->node);
    if (status != EMBRAFT_OK) {
        char message[512] = "";
        embraft_config_last_error(config, message, sizeof message, NULL);
        log_line("cannot start the node: %s: %s", embraft_status_str(status), message);
        embraft_config_free(config);
        return -1;
    }
    embraft_config_free(config);
    if (r->runtime == NULL) {
        embraft_node_readiness_fd(r->node, &r->readiness_fd);
        return 0;
    }
    if (start_runtime_groups(r, founding) != 0) {
        node_stop(r);
        return -1;
    }
    for (uint64_t g = 2; g <= r->shard_count; g++) {
        /* A joiner asks for every group after the first (RAFTD.md
         * "Shards", step 3); a restarted node for those it finds with an
         * empty membership (it crashed during step 3). */
        struct shard *s = &r->shards[g - 1];
        s->needs_join = joining || (!founding && group_is_empty(r, s));
        r->groups_to_join += s->needs_join;
        if (s->needs_join && !joining) {
            log_line("group %llu has no members here: joining it again", (unsigned long long)g);
        }
    }
    embraft_runtime_readiness_fd(r->runtime, &r->readiness_fd);
    return 0;
}

void node_stop(struct raftd *r) {
    embraft_node_free(r->node);
    embraft_runtime_free(r->runtime);
    r->node = NULL;
    r->runtime = NULL;
    r->readiness_fd = -1;
}

void node_tick(struct raftd *r) {
    /* BUSY means the node is behind on its inputs; a skipped tick is
     * harmless. */
    if (r->runtime) {
        embraft_runtime_tick(r->runtime);
    } else {
        embraft_node_tick(r->node);
    }
}

/* ---- what a batch holds, for one group ---- */

static void note_state(struct raftd *r, struct shard *s, uint32_t role, uint64_t leader,
                       uint64_t term) {
    if (role != s->role || leader != s->leader || term != s->term) {
        log_verbose_line("%s%s in term %llu, leader %llu", group_tag(r, s), role_name(role),
                         (unsigned long long)term, (unsigned long long)leader);
    }
    s->role = role;
    s->leader = leader;
    s->term = term;
}

static void describe_conf_change(struct raftd *r, const struct shard *s, const uint8_t *data,
                                 size_t len) {
    static const char *const names[] = {"?", "add voter", "promote learner", "add learner",
                                        "remove node"};
    const char *tag = group_tag(r, s);
    if (len == 0) {
        log_verbose_line("%smembership: leave joint configuration", tag);
    } else if (len == 10 && data[0] == 1 && data[1] >= 1 && data[1] <= 4) {
        log_verbose_line("%smembership: %s %llu", tag, names[data[1]],
                         (unsigned long long)get_u64(data + 2));
    } else {
        log_verbose_line("%smembership: joint change", tag);
    }
}

static void apply_entry(struct raftd *r, struct shard *s, uint64_t index, uint32_t kind,
                        const uint8_t *data, size_t len) {
    if (kind == EMBRAFT_ENTRY_NORMAL) {
        /* The address book lives in group 1 only: every node ignores peer
         * commands in the other groups alike, so their snapshots list no
         * peers. */
        int is_peer_command = len > 0 && (data[0] == KV_PEER || data[0] == KV_REMOVE_PEER);
        int command = is_peer_command && s->group != 1 ? 0 : kv_apply(&s->kv, data, len);
        if (command == KV_PEER || command == KV_REMOVE_PEER) {
            log_verbose_line("peer %llu %s", (unsigned long long)get_u64(data + 1),
                             command == KV_PEER ? "recorded" : "removed");
        }
    } else if (kind == EMBRAFT_ENTRY_CONF_CHANGE) {
        describe_conf_change(r, s, data, len);
    }
    s->applied = index;
}

static void ack_applied(struct raftd *r, struct shard *s) {
    embraft_status status = engine_ack(r, s, s->applied);
    if (status != EMBRAFT_OK && status != EMBRAFT_ERR_BUSY) {
        log_embraft_error(r, "ack_applied", status);
    }
}

/* Before the group's entries of a batch: replaces its key/value state (and
 * for group 1 the address book) with the snapshot the batch names
 * (installed from the leader, or this node's own after a restart). The
 * whole file is decoded first; a malformed one is refused and the state
 * kept, and -1 tells the loop to stop: no entry may be applied on top of
 * the wrong state. */
static int restore_shard(struct raftd *r, struct shard *s, uint64_t index, uint64_t term,
                         const char *path) {
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
    if (s->group != 1) {
        kv_forget_peers(&restored); /* as applying ignores peer commands there */
    }
    kv_free(&s->kv);
    s->kv = restored;
    s->applied = index;
    /* Entries through the snapshot count as delivered: acknowledge them
     * (BUSY only delays it to the next ack). */
    engine_ack(r, s, index);
    log_line("%srestored the key/value state from snapshot %s (index %llu, term %llu): %zu keys, "
             "%zu peers",
             group_tag(r, s), path, (unsigned long long)index, (unsigned long long)term,
             s->kv.key_count, s->kv.peer_count);
    return 0;
}

static int write_to_snapshot(void *context, const void *data, size_t len) {
    return embraft_snapshot_writer_write(context, data, len) == EMBRAFT_OK ? 0 : -1;
}

/* Takes the snapshot the group asked for, at the applied index: the state
 * is written and the file finished (synced, checksummed) on this thread,
 * between batches, so it is exactly the state at that index. The loop
 * pauses meanwhile, which an in-memory state of this size allows. */
static void take_snapshot(struct raftd *r, struct shard *s) {
    uint64_t now = now_ms();
    if (!s->snapshot_due || s->applied == 0 || now < s->snapshot_retry_at) {
        return;
    }
    /* The snapshot's index must be acknowledged; acks may repeat. */
    embraft_status status = engine_ack(r, s, s->applied);
    embraft_snapshot_writer *writer = NULL;
    if (status == EMBRAFT_OK) {
        status = engine_snapshot_begin(r, s, s->applied, &writer);
    }
    if (status == EMBRAFT_ERR_BUSY || status == EMBRAFT_ERR_NOT_APPLIED) {
        return; /* the group is behind on its inputs: next turn */
    }
    if (status == EMBRAFT_OK) {
        if (kv_snapshot_write(&s->kv, write_to_snapshot, writer) == 0) {
            status = embraft_snapshot_writer_finish(writer);
        } else {
            log_line("%ssnapshot at index %llu: writing failed", group_tag(r, s),
                     (unsigned long long)s->applied);
            embraft_snapshot_writer_abort(writer);
            status = EMBRAFT_ERR_STORAGE;
        }
    }
    if (status == EMBRAFT_OK) {
        log_verbose_line("%ssnapshot taken at index %llu: %zu keys, %zu peers", group_tag(r, s),
                         (unsigned long long)s->applied, s->kv.key_count, s->kv.peer_count);
    } else if (status == EMBRAFT_ERR_STALE_SNAPSHOT) {
        /* One at least as recent exists (installed from the leader). */
    } else {
        log_embraft_error(r, "snapshot failed; retrying in 5 s", status);
        s->snapshot_retry_at = now + SNAPSHOT_RETRY_MS;
        return;
    }
    s->snapshot_due = 0;
}

static void print_log(struct raftd *r, const struct shard *s, uint32_t level, const char *text) {
    static const char *const levels[] = {"off", "info", "debug", "trace"};
    log_line("embraft %s: %s%s", level < 4 ? levels[level] : "?", s ? group_tag(r, s) : "", text);
}

/* A leader makes sure the replicated address book holds its own address:
 * the founder's first act (RAFTD.md start-up, step 3), and a repair after a
 * restart on another host or port. */
static void record_own_address(struct raftd *r) {
    const struct shard *s = &r->shards[0];
    const char *known = kv_peer_addr(&s->kv, r->id);
    uint64_t now = now_ms();
    if (s->role != EMBRAFT_ROLE_LEADER || (known != NULL && strcmp(known, r->advertise) == 0) ||
        now - r->self_addr_checked_at < 1000 || api_pending_self_address(r)) {
        return;
    }
    r->self_addr_checked_at = now;
    api_record_self_address(r);
}

/* One batch of a one-group node; 1 if it was handled, 0 when none waits,
 * -1 once the node failed or a snapshot was refused. */
static int drain_node_batch(struct raftd *r) {
    struct shard *s = &r->shards[0];
    embraft_ready *ready = NULL;
    embraft_status status = embraft_node_poll_ready(r->node, 0, &ready);
    if (status == EMBRAFT_TIMED_OUT) {
        return 0;
    }
    if (status != EMBRAFT_OK) {
        log_embraft_error(r, "the node stopped", status);
        return -1;
    }
    uint32_t role = 0;
    uint64_t leader = 0, term = 0, index = 0, id = 0, context = 0;
    size_t count = 0;
    embraft_ready_state(ready, &role, &leader, &term);
    note_state(r, s, role, leader, term);
    embraft_ready_message_count(ready, &count);
    for (size_t i = 0; i < count; i++) {
        const uint8_t *data = NULL;
        size_t len = 0;
        if (embraft_ready_message(ready, i, &id, &data, &len) == EMBRAFT_OK) {
            transport_send(r, id, data, len);
        }
    }
    bool restore = false;
    const char *path = NULL;
    embraft_ready_snapshot_to_restore(ready, &restore, &index, &term);
    int result = 1;
    if (restore) {
        status = embraft_ready_snapshot_path(ready, &path);
        if (status != EMBRAFT_OK) {
            log_embraft_error(r, "refusing snapshot: embraft_ready_snapshot_path", status);
            result = -1;
        } else if (restore_shard(r, s, index, term, path) != 0) {
            result = -1;
        }
    }
    if (result == 1) {
        embraft_ready_entry_count(ready, &count);
        for (size_t i = 0; i < count; i++) {
            uint32_t kind = 0;
            const uint8_t *data = NULL;
            size_t len = 0;
            if (embraft_ready_entry(ready, i, &index, &term, &kind, &data, &len, &id) ==
                EMBRAFT_OK) {
                apply_entry(r, s, index, kind, data, len);
            }
        }
        if (count > 0) {
            ack_applied(r, s);
        }
        embraft_ready_outcome_count(ready, &count);
        for (size_t i = 0; i < count; i++) {
            uint32_t outcome = 0;
            if (embraft_ready_outcome(ready, i, &id, &outcome, &index) == EMBRAFT_OK) {
                api_on_outcome(r, s, id, outcome, index);
            }
        }
        embraft_ready_read_count(ready, &count);
        for (size_t i = 0; i < count; i++) {
            uint32_t code = 0;
            if (embraft_ready_read(ready, i, &context, &code, &index) == EMBRAFT_OK) {
                api_on_read(r, s, context, code, index);
            }
        }
        bool wanted = false;
        embraft_ready_snapshot_wanted(ready, &wanted, &index);
        s->snapshot_due |= wanted;
    }
    embraft_ready_log_count(ready, &count);
    for (size_t i = 0; i < count; i++) {
        uint32_t level = 0;
        const char *text = NULL;
        if (embraft_ready_log(ready, i, &level, &text) == EMBRAFT_OK) {
            print_log(r, NULL, level, text);
        }
    }
    embraft_ready_free(ready);
    return result;
}

/* One batch of a runtime, every group's output in it; as drain_node_batch.
 * Each group frame goes to its peer as one stream frame (WIRE.md, "Group
 * frames"). */
static int drain_runtime_batch(struct raftd *r) {
    embraft_runtime_ready *ready = NULL;
    embraft_status status = embraft_runtime_poll(r->runtime, 0, &ready);
    if (status != EMBRAFT_OK) {
        log_embraft_error(r, "the runtime stopped", status);
        return -1;
    }
    const embraft_rt_state *states = NULL;
    const uint64_t *peers = NULL;
    const embraft_rt_restore *restores = NULL;
    const embraft_rt_entry *entries = NULL;
    const embraft_rt_outcome *outcomes = NULL;
    const embraft_rt_read *reads = NULL;
    const embraft_rt_snapshot_wanted *wanted = NULL;
    const embraft_rt_log *logs = NULL;
    size_t n_states = 0, n_peers = 0, n_restores = 0, n_entries = 0, n_outcomes = 0, n_reads = 0,
           n_wanted = 0, n_logs = 0;
    embraft_runtime_ready_states(ready, &states, &n_states);
    embraft_runtime_ready_peers(ready, &peers, &n_peers);
    embraft_runtime_ready_restores(ready, &restores, &n_restores);
    embraft_runtime_ready_entries(ready, &entries, &n_entries);
    embraft_runtime_ready_outcomes(ready, &outcomes, &n_outcomes);
    embraft_runtime_ready_reads(ready, &reads, &n_reads);
    embraft_runtime_ready_snapshots_wanted(ready, &wanted, &n_wanted);
    embraft_runtime_ready_logs(ready, &logs, &n_logs);
    size_t items = n_states + n_peers + n_restores + n_entries + n_outcomes + n_reads + n_wanted +
                   n_logs;
    int result = items > 0 ? 1 : 0; /* an empty batch: nothing was waiting */
    for (size_t i = 0; i < n_states; i++) {
        struct shard *s = shard_of(r, states[i].group);
        if (s != NULL) {
            note_state(r, s, states[i].role, states[i].leader, states[i].term);
        }
    }
    for (size_t i = 0; i < n_peers; i++) {
        const uint8_t *frame = NULL;
        size_t len = 0;
        if (embraft_runtime_ready_frame(ready, peers[i], &frame, &len) == EMBRAFT_OK) {
            transport_send_group_frame(r, peers[i], frame, len);
        }
    }
    for (size_t i = 0; i < n_restores && result >= 0; i++) {
        struct shard *s = shard_of(r, restores[i].group);
        if (s != NULL &&
            restore_shard(r, s, restores[i].index, restores[i].term, restores[i].path) != 0) {
            result = -1;
        }
    }
    for (size_t i = 0; i < n_entries && result >= 0; i++) {
        struct shard *s = shard_of(r, entries[i].group);
        if (s == NULL) {
            continue;
        }
        apply_entry(r, s, entries[i].index, entries[i].kind, entries[i].data, entries[i].len);
        /* Entries come grouped by group: acknowledge at each group's last. */
        if (i + 1 == n_entries || entries[i + 1].group != entries[i].group) {
            ack_applied(r, s);
        }
    }
    for (size_t i = 0; i < n_outcomes && result >= 0; i++) {
        struct shard *s = shard_of(r, outcomes[i].group);
        if (s != NULL) {
            api_on_outcome(r, s, outcomes[i].proposal_id, outcomes[i].code, outcomes[i].index);
        }
    }
    for (size_t i = 0; i < n_reads && result >= 0; i++) {
        struct shard *s = shard_of(r, reads[i].group);
        if (s != NULL) {
            api_on_read(r, s, reads[i].context, reads[i].code, reads[i].index);
        }
    }
    for (size_t i = 0; i < n_wanted; i++) {
        struct shard *s = shard_of(r, wanted[i].group);
        if (s != NULL) {
            s->snapshot_due = 1;
        }
    }
    for (size_t i = 0; i < n_logs; i++) {
        print_log(r, shard_of(r, logs[i].group), logs[i].level, logs[i].text);
    }
    embraft_runtime_ready_free(ready);
    return result;
}

int node_drain(struct raftd *r) {
    for (int turn = 0; turn < MAX_BATCHES_PER_TURN; turn++) {
        int handled = r->runtime ? drain_runtime_batch(r) : drain_node_batch(r);
        if (handled < 0) {
            return -1;
        }
        if (handled == 0) {
            break;
        }
        api_after_apply(r);
    }
    for (uint64_t g = 1; g <= r->shard_count; g++) {
        take_snapshot(r, &r->shards[g - 1]);
    }
    record_own_address(r);
    if (r->groups_to_join > 0) {
        api_join_groups(r);
    }
    return r->fatal ? -1 : 0;
}

int node_is_voter(struct raftd *r, const struct shard *s, uint64_t id) {
    embraft_status_report *report = NULL;
    size_t count = 0;
    int found = 0;
    if (engine_status(r, s, &report) != EMBRAFT_OK) {
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

/* The fields of one group's status shared by the top level (group 1) and
 * the "groups" list: "role" through "learners". */
static int group_status_json(struct raftd *r, const struct shard *s, struct buffer *out) {
    embraft_status_report *report = NULL;
    uint64_t role = 0, term = 0, leader = 0, commit = 0, last = 0;
    if (engine_status(r, s, &report) != EMBRAFT_OK) {
        return -1;
    }
    embraft_status_report_get(report, EMBRAFT_FIELD_ROLE, &role);
    embraft_status_report_get(report, EMBRAFT_FIELD_TERM, &term);
    embraft_status_report_get(report, EMBRAFT_FIELD_LEADER, &leader);
    embraft_status_report_get(report, EMBRAFT_FIELD_COMMIT, &commit);
    embraft_status_report_get(report, EMBRAFT_FIELD_LAST_INDEX, &last);
    int failed = buffer_printf(out,
                               "\"role\": \"%s\", \"term\": %llu, \"leader\": \"%llu\", "
                               "\"commit\": %llu, \"applied\": %llu, \"last_index\": %llu, "
                               "\"voters\": ",
                               role_name((uint32_t)role), (unsigned long long)term,
                               (unsigned long long)leader, (unsigned long long)commit,
                               (unsigned long long)s->applied, (unsigned long long)last) ||
                 append_members(out, report, EMBRAFT_MEMBERS_VOTERS) ||
                 buffer_printf(out, ", \"learners\": ") ||
                 append_members(out, report, EMBRAFT_MEMBERS_LEARNERS);
    embraft_status_report_free(report);
    return failed ? -1 : 0;
}

int node_status_json(struct raftd *r, struct buffer *out) {
    int failed = buffer_printf(out, "{\"id\": \"%llu\", \"cluster_id\": \"%llu\", ",
                               (unsigned long long)r->id, (unsigned long long)r->cluster_id) ||
                 group_status_json(r, &r->shards[0], out) ||
                 buffer_printf(out, ", \"peers\": ") || peers_json(out, address_book(r));
    if (!failed && r->runtime != NULL) {
        failed = buffer_printf(out, ", \"shards\": %llu, \"groups\": [",
                               (unsigned long long)r->shard_count);
        for (uint64_t g = 1; g <= r->shard_count && !failed; g++) {
            failed = buffer_printf(out, "%s{\"group\": %llu, ", g > 1 ? ", " : "",
                                   (unsigned long long)g) ||
                     group_status_json(r, &r->shards[g - 1], out) || buffer_append(out, "}", 1);
        }
        failed = failed || buffer_append(out, "]", 1);
    }
    return failed || buffer_printf(out, "}\n") ? -1 : 0;
}
