#include "cluster.h"

#include <string.h>

unsigned cluster_tick_ms(void) {
    const char *text = getenv("EMBRAFT_TEST_TICK_MS");
    int value = text != NULL ? atoi(text) : 0;
    return value > 0 ? (unsigned)value : 10u;
}

static int verbose(void) {
    return getenv("EMBRAFT_TEST_VERBOSE") != NULL;
}

struct cluster *cluster_new(size_t count) {
    struct cluster *c = calloc(1, sizeof *c);
    if (c == NULL || count > CLUSTER_MAX_NODES) {
        free(c);
        return NULL;
    }
    c->count = count;
    c->founders = count;
    for (size_t i = 0; i < count; i++) {
        c->peers[i] = i + 1;
        c->nodes[i].id = i + 1;
        c->nodes[i].dir = harness_temp_dir();
    }
    return c;
}

void cluster_free(struct cluster *c) {
    if (c == NULL) {
        return;
    }
    for (size_t i = 0; i < c->count; i++) {
        cluster_stop(c, i);
    }
    free(c);
}

embraft_status cluster_start(struct cluster *c, size_t i, uint64_t applied) {
    struct cluster_node *n = &c->nodes[i];
    embraft_config *config = NULL;
    embraft_status status = embraft_config_new(&config);
    if (status != EMBRAFT_OK) {
        return status;
    }
    embraft_config_set_id(config, n->id);
    embraft_config_set_peers(config, c->peers, i < c->founders ? c->founders : 0);
    embraft_config_set_data_dir(config, n->dir);
    embraft_config_set_election_ticks(config, 10);
    embraft_config_set_heartbeat_ticks(config, 2);
    embraft_config_set_segment_size(config, 1u << 20);
    /* A segment must hold the largest entry with its records. */
    embraft_config_set_max_entry_bytes(config, 1u << 19);
    embraft_config_set_applied_index(config, applied);
    if (c->compact_keep_entries > 0) {
        embraft_config_set_compact_keep_entries(config, c->compact_keep_entries);
    }
    if (c->snapshot_chunk_size > 0) {
        embraft_config_set_snapshot_chunk_size(config, c->snapshot_chunk_size);
    }
    if (c->snapshot_entries > 0) {
        embraft_config_set_snapshot_entries(config, c->snapshot_entries);
    }
    if (c->threading != EMBRAFT_THREADING_NODE) {
        embraft_config_set_threading(config, c->threading);
    }
    if (c->wal_write_method_set) {
        embraft_config_set_wal_write_method(config, c->wal_write_method);
    }
    if (c->quiesce_ticks > 0) {
        embraft_config_set_quiesce_ticks(config, c->quiesce_ticks);
    }
    embraft_config_set_log_level(config, verbose() ? EMBRAFT_LOG_DEBUG : EMBRAFT_LOG_OFF);
    if (getenv("EMBRAFT_TEST_NO_SYNC") != NULL) {
        embraft_config_set_sync_mode(config, EMBRAFT_SYNC_NEVER);
    }
    status = embraft_node_new(config, &n->node);
    if (status != EMBRAFT_OK) {
        harness_print_config_error(config);
        n->node = NULL;
    } else {
        /* The host restarts from what it had applied. */
        n->delivered = applied;
        n->acked = applied;
    }
    /* The node keeps its own copy: the config can go at once. */
    embraft_config_free(config);
    return status;
}

void cluster_stop(struct cluster *c, size_t i) {
    embraft_node_free(c->nodes[i].node);
    c->nodes[i].node = NULL;
}

static void fail(struct cluster *c, const char *what, size_t i, embraft_status status) {
    fprintf(stderr, "  node %zu: %s: %s\n", i + 1, what, embraft_status_str(status));
    if (c->nodes[i].node != NULL) {
        harness_print_node_error(c->nodes[i].node);
    }
    c->broken = 1;
}

static void deliver_messages(struct cluster *c, size_t from, const embraft_ready *ready) {
    size_t count = 0;
    embraft_ready_message_count(ready, &count);
    for (size_t m = 0; m < count; m++) {
        uint64_t to = 0;
        const uint8_t *data = NULL;
        size_t len = 0;
        embraft_status status = embraft_ready_message(ready, m, &to, &data, &len);
        if (status != EMBRAFT_OK || to == 0 || to > c->count) {
            fail(c, "bad outbound message", from, status);
            return;
        }
        embraft_node *dest = c->nodes[to - 1].node;
        if (dest == NULL) {
            continue; /* a stopped node: the message is lost, as on a network */
        }
        if (c->nodes[from].cut || c->nodes[to - 1].cut) {
            /* A transport that cannot connect drops the message and tells
             * its node. */
            embraft_node_report_unreachable(c->nodes[from].node, to);
            continue;
        }
        status = embraft_node_step(dest, data, len);
        /* A full queue drops the message; Raft retransmits. */
        if (status != EMBRAFT_OK && status != EMBRAFT_ERR_BUSY) {
            fail(c, "step", (size_t)(to - 1), status);
        }
    }
}

static void apply_entries(struct cluster *c, size_t i, const embraft_ready *ready) {
    struct cluster_node *n = &c->nodes[i];
    size_t count = 0;
    embraft_ready_entry_count(ready, &count);
    for (size_t e = 0; e < count; e++) {
        uint64_t index = 0, term = 0, proposal_id = 0;
        uint32_t kind = 0;
        const uint8_t *data = NULL;
        size_t len = 0;
        embraft_status status =
            embraft_ready_entry(ready, e, &index, &term, &kind, &data, &len, &proposal_id);
        if (status != EMBRAFT_OK) {
            fail(c, "entry accessor", i, status);
            return;
        }
        if (index != n->delivered + 1 || index > CLUSTER_MAX_INDEX || len > CLUSTER_PAYLOAD_MAX) {
            fprintf(stderr, "  node %zu: entry %llu delivered after %llu (len %zu)\n", i + 1,
                    (unsigned long long)index, (unsigned long long)n->delivered, len);
            c->broken = 1;
            return;
        }
        struct applied_entry *slot = &n->applied[index];
        slot->term = term;
        slot->kind = kind;
        slot->proposal_id = proposal_id;
        slot->len = len;
        memcpy(slot->data, data, len);
        n->delivered = index;
        if (proposal_id != 0 && proposal_id < CLUSTER_MAX_PROPOSALS &&
            n->proposals[proposal_id] == PROPOSAL_COMMITTED &&
            n->proposal_index[proposal_id] != index) {
            fprintf(stderr, "  node %zu: proposal %llu applied at %llu, committed at %llu\n",
                    i + 1, (unsigned long long)proposal_id, (unsigned long long)index,
                    (unsigned long long)n->proposal_index[proposal_id]);
            c->broken = 1;
        }
    }
}

static void record_outcomes(struct cluster *c, size_t i, const embraft_ready *ready) {
    struct cluster_node *n = &c->nodes[i];
    size_t count = 0;
    embraft_ready_outcome_count(ready, &count);
    for (size_t o = 0; o < count; o++) {
        uint64_t id = 0, index = 0;
        uint32_t outcome = 0;
        embraft_status status = embraft_ready_outcome(ready, o, &id, &outcome, &index);
        if (status != EMBRAFT_OK || id == 0 || id >= CLUSTER_MAX_PROPOSALS) {
            fail(c, "outcome accessor", i, status);
            return;
        }
        n->proposals[id] = outcome == EMBRAFT_PROPOSAL_COMMITTED ? PROPOSAL_COMMITTED
                           : outcome == EMBRAFT_PROPOSAL_UNKNOWN ? PROPOSAL_UNKNOWN
                                                                  : PROPOSAL_DROPPED;
        n->proposal_index[id] = index;
        n->proposal_outcome[id] = outcome;
    }
}

/* Writes the applied entries 1..index into the writer's file, in pieces
 * through the writer, or all at once through the file's path. */
static embraft_status write_state(const struct cluster_node *n, uint64_t index,
                                  embraft_snapshot_writer *writer, int through_path) {
    const unsigned char *state = (const unsigned char *)&n->applied[1];
    size_t len = (size_t)index * sizeof(struct applied_entry);
    if (through_path) {
        const char *path = NULL;
        embraft_status status = embraft_snapshot_writer_path(writer, &path);
        if (status != EMBRAFT_OK) {
            return status;
        }
        FILE *file = fopen(path, "wb");
        int written = file != NULL && fwrite(state, 1, len, file) == len;
        written = file != NULL && fclose(file) == 0 && written;
        return written ? EMBRAFT_OK : EMBRAFT_ERR_STORAGE;
    }
    const size_t piece = 64 * sizeof(struct applied_entry);
    for (size_t done = 0; done < len; done += piece) {
        size_t part = len - done < piece ? len - done : piece;
        embraft_status status = embraft_snapshot_writer_write(writer, state + done, part);
        if (status != EMBRAFT_OK) {
            return status;
        }
    }
    return EMBRAFT_OK;
}

static embraft_status take_snapshot(struct cluster *c, size_t i, int through_path) {
    struct cluster_node *n = &c->nodes[i];
    /* A snapshot covers what the node knows to be applied. */
    uint64_t index = n->acked;
    embraft_snapshot_writer *writer = NULL;
    embraft_status status = embraft_node_snapshot_begin(n->node, index, &writer);
    if (status != EMBRAFT_OK) {
        return status;
    }
    status = write_state(n, index, writer, through_path);
    if (status != EMBRAFT_OK) {
        embraft_snapshot_writer_abort(writer);
        return status;
    }
    status = embraft_snapshot_writer_finish(writer); /* frees the writer */
    if (status == EMBRAFT_OK) {
        n->snapshot.index = index;
        n->snapshot.term = n->applied[index].term;
    }
    return status;
}

embraft_status cluster_take_snapshot(struct cluster *c, size_t i) {
    return take_snapshot(c, i, 0);
}

embraft_status cluster_take_snapshot_through_path(struct cluster *c, size_t i) {
    return take_snapshot(c, i, 1);
}

/* The host replaces its state machine with the snapshot file the node
 * names. */
static void restore_from(struct cluster *c, size_t i, const embraft_ready *ready, uint64_t index,
                         uint64_t term) {
    struct cluster_node *n = &c->nodes[i];
    const char *path = NULL;
    embraft_status status = embraft_ready_snapshot_path(ready, &path);
    if (status != EMBRAFT_OK) {
        fail(c, "snapshot path", i, status);
        return;
    }
    size_t len = (size_t)index * sizeof(struct applied_entry);
    FILE *file = index <= CLUSTER_MAX_INDEX ? fopen(path, "rb") : NULL;
    int whole = file != NULL && fread(&n->applied[1], 1, len, file) == len && fgetc(file) == EOF;
    if (file != NULL) {
        fclose(file);
    }
    if (!whole) {
        fprintf(stderr, "  node %zu: snapshot %llu at %s is not %zu bytes of state\n", i + 1,
                (unsigned long long)index, path, len);
        c->broken = 1;
        return;
    }
    n->delivered = index;
    n->snapshot.index = index;
    n->snapshot.term = term;
    n->snapshot.restores++;
}

void cluster_handle_ready(struct cluster *c, size_t i, const embraft_ready *ready) {
    struct cluster_node *n = &c->nodes[i];
    embraft_ready_state(ready, &n->role, &n->leader, &n->term);
    size_t logs = 0;
    embraft_ready_log_count(ready, &logs);
    for (size_t l = 0; l < logs; l++) {
        uint32_t level = 0;
        const char *text = NULL;
        if (embraft_ready_log(ready, l, &level, &text) == EMBRAFT_OK) {
            fprintf(stderr, "  [node %zu log %u] %s\n", i + 1, level, text);
        }
    }
    bool restore = false;
    uint64_t restore_index = 0, restore_term = 0;
    embraft_ready_snapshot_to_restore(ready, &restore, &restore_index, &restore_term);
    if (restore) {
        restore_from(c, i, ready, restore_index, restore_term);
    }
    bool wanted = false;
    uint64_t wanted_index = 0;
    embraft_ready_snapshot_wanted(ready, &wanted, &wanted_index);
    if (wanted) {
        n->snapshot_wanted = wanted_index;
    }
    deliver_messages(c, i, ready);
    size_t reads = 0;
    embraft_ready_read_count(ready, &reads);
    for (size_t r = 0; r < reads; r++) {
        embraft_ready_read(ready, r, &n->read_context, &n->read_result, &n->read_index);
    }
    apply_entries(c, i, ready);
    record_outcomes(c, i, ready);
    if (n->delivered > n->acked) {
        embraft_status status = embraft_node_ack_applied(n->node, n->delivered);
        if (status == EMBRAFT_OK) {
            n->acked = n->delivered;
        } else if (status != EMBRAFT_ERR_BUSY) {
            fail(c, "ack_applied", i, status);
        }
    }
}

static void stream_propose(struct cluster *c, struct proposal_stream *s);

int cluster_pump(struct cluster *c) {
    unsigned long long now = harness_now_ms();
    if (now - c->last_tick_ms >= cluster_tick_ms()) {
        c->last_tick_ms = now;
        if (c->stream != NULL) {
            c->stream->credit = c->stream->per_tick;
        }
        for (size_t i = 0; i < c->count; i++) {
            if (c->nodes[i].node != NULL) {
                embraft_status status = embraft_node_tick(c->nodes[i].node);
                if (status != EMBRAFT_OK && status != EMBRAFT_ERR_BUSY) {
                    fail(c, "tick", i, status);
                }
            }
        }
    }
    int handled = 0;
    for (size_t i = 0; i < c->count; i++) {
        embraft_ready *ready = NULL;
        if (c->nodes[i].node == NULL) {
            continue;
        }
        embraft_status status = embraft_node_poll_ready(c->nodes[i].node, 0, &ready);
        if (status == EMBRAFT_TIMED_OUT) {
            continue;
        }
        if (status != EMBRAFT_OK) {
            fail(c, "poll_ready", i, status);
            continue;
        }
        cluster_handle_ready(c, i, ready);
        embraft_ready_free(ready);
        handled++;
    }
    if (c->stream != NULL) {
        stream_propose(c, c->stream);
    }
    return handled;
}

int cluster_run_until(struct cluster *c, int (*done)(struct cluster *, const void *),
                      const void *arg, unsigned timeout_ms) {
    unsigned long long deadline = harness_now_ms() + timeout_ms;
    while (!c->broken) {
        if (done(c, arg)) {
            return 1;
        }
        if (harness_now_ms() > deadline) {
            return 0;
        }
        if (cluster_pump(c) == 0) {
            harness_sleep_ms(1);
        }
    }
    return 0;
}

static int never(struct cluster *c, const void *unused) {
    (void)c;
    (void)unused;
    return 0;
}

int cluster_run_for(struct cluster *c, unsigned ms) {
    cluster_run_until(c, never, NULL, ms);
    return !c->broken;
}

/* Running and a member: what agreement and catching up are about. */
static int is_member(const struct cluster_node *n) {
    return n->node != NULL && !n->outsider;
}

int cluster_agreed_leader(const struct cluster *c) {
    int leader = -1;
    for (size_t i = 0; i < c->count; i++) {
        if (c->nodes[i].node != NULL && c->nodes[i].role == EMBRAFT_ROLE_LEADER) {
            if (leader >= 0) {
                return -1; /* two leaders (of different terms) for now */
            }
            leader = (int)i;
        }
    }
    if (leader < 0) {
        return -1;
    }
    for (size_t i = 0; i < c->count; i++) {
        if (is_member(&c->nodes[i]) && c->nodes[i].leader != (uint64_t)leader + 1) {
            return -1;
        }
    }
    return leader;
}

int cluster_has_leader(struct cluster *c, const void *unused) {
    (void)unused;
    return cluster_agreed_leader(c) >= 0;
}

int cluster_start_elect_and_commit(struct cluster *c, size_t count, unsigned total) {
    for (size_t i = 0; i < count; i++) {
        if (cluster_start(c, i, 0) != EMBRAFT_OK) {
            return -1;
        }
    }
    if (!cluster_run_until(c, cluster_has_leader, NULL, ELECTION_TIMEOUT_MS) ||
        !cluster_propose_all(c, 0, total)) {
        return -1;
    }
    return cluster_agreed_leader(c);
}

int cluster_all_applied(struct cluster *c, const void *index) {
    uint64_t target = *(const uint64_t *)index;
    for (size_t i = 0; i < c->count; i++) {
        if (is_member(&c->nodes[i]) && c->nodes[i].delivered < target) {
            return 0;
        }
    }
    return 1;
}

uint64_t cluster_max_delivered(const struct cluster *c) {
    uint64_t max = 0;
    for (size_t i = 0; i < c->count; i++) {
        if (is_member(&c->nodes[i]) && c->nodes[i].delivered > max) {
            max = c->nodes[i].delivered;
        }
    }
    return max;
}

int cluster_logs_agree(const struct cluster *c) {
    for (size_t a = 0; a < c->count; a++) {
        for (size_t b = a + 1; b < c->count; b++) {
            const struct cluster_node *x = &c->nodes[a];
            const struct cluster_node *y = &c->nodes[b];
            uint64_t common = x->delivered < y->delivered ? x->delivered : y->delivered;
            for (uint64_t index = 1; index <= common; index++) {
                const struct applied_entry *p = &x->applied[index];
                const struct applied_entry *q = &y->applied[index];
                if (p->term != q->term || p->kind != q->kind || p->len != q->len ||
                    memcmp(p->data, q->data, p->len) != 0) {
                    fprintf(stderr, "  nodes %zu and %zu differ at index %llu\n", a + 1, b + 1,
                            (unsigned long long)index);
                    return 0;
                }
            }
        }
    }
    return 1;
}

void cluster_payload(unsigned number, char *out, size_t *len) {
    *len = (size_t)snprintf(out, CLUSTER_PAYLOAD_MAX, "payload-%05u", number);
}

int cluster_payload_number(const struct applied_entry *e, unsigned *number) {
    char text[CLUSTER_PAYLOAD_MAX + 1];
    if (e->kind != EMBRAFT_ENTRY_NORMAL || e->len == 0) {
        return 0;
    }
    memcpy(text, e->data, e->len);
    text[e->len] = '\0';
    return sscanf(text, "payload-%u", number) == 1;
}

/* Per payload offset: (node index << 32 | proposal id) of its live
 * proposal, or 0 when it must be proposed (again). */
struct batch_state {
    uint64_t ids[CLUSTER_MAX_PROPOSALS];
    unsigned committed;
};

int cluster_propose_all(struct cluster *c, unsigned first, unsigned total) {
    static struct batch_state s;
    memset(&s, 0, sizeof s);
    const unsigned window = 64;
    unsigned long long deadline = harness_now_ms() + COMMIT_TIMEOUT_MS;
    unsigned in_flight = 0;
    while (!c->broken && harness_now_ms() < deadline) {
        int leader = cluster_agreed_leader(c);
        /* Settle outcomes. */
        s.committed = 0;
        in_flight = 0;
        for (unsigned k = 0; k < total; k++) {
            if (s.ids[k] == 0) {
                continue;
            }
            size_t owner = (size_t)(s.ids[k] >> 32);
            uint64_t id = s.ids[k] & 0xffffffffu;
            enum proposal_state state = c->nodes[owner].proposals[id];
            if (state == PROPOSAL_COMMITTED) {
                s.committed++;
            } else if (state == PROPOSAL_DROPPED || state == PROPOSAL_UNKNOWN ||
                       c->nodes[owner].node == NULL) {
                s.ids[k] = 0; /* propose it again */
            } else {
                in_flight++;
            }
        }
        if (s.committed == total) {
            return 1;
        }
        if (leader >= 0) {
            struct cluster_node *n = &c->nodes[leader];
            for (unsigned k = 0; k < total && in_flight < window; k++) {
                if (s.ids[k] != 0) {
                    continue;
                }
                char data[CLUSTER_PAYLOAD_MAX];
                size_t len = 0;
                uint64_t id = 0;
                cluster_payload(first + k, data, &len);
                embraft_status status =
                    embraft_node_propose(n->node, (const uint8_t *)data, len, &id);
                if (status == EMBRAFT_ERR_BUSY) {
                    break;
                }
                if (status != EMBRAFT_OK || id == 0 || id >= CLUSTER_MAX_PROPOSALS) {
                    fprintf(stderr, "  propose: %s\n", embraft_status_str(status));
                    return 0;
                }
                n->proposals[id] = PROPOSAL_PENDING;
                s.ids[k] = ((uint64_t)leader << 32) | id;
                in_flight++;
            }
        }
        if (cluster_pump(c) == 0) {
            harness_sleep_ms(1);
        }
    }
    fprintf(stderr, "  %u of %u proposals committed before the deadline\n", s.committed, total);
    return 0;
}

int cluster_applied_each_once(const struct cluster *c, size_t i, unsigned first, unsigned total) {
    static unsigned char seen[CLUSTER_MAX_PROPOSALS];
    memset(seen, 0, sizeof seen);
    const struct cluster_node *n = &c->nodes[i];
    for (uint64_t index = 1; index <= n->delivered; index++) {
        unsigned number = 0;
        if (!cluster_payload_number(&n->applied[index], &number) || number < first ||
            number >= first + total) {
            continue;
        }
        if (seen[number - first]++) {
            fprintf(stderr, "  node %zu applied payload %u twice\n", i + 1, number);
            return 0;
        }
    }
    for (unsigned k = 0; k < total; k++) {
        if (!seen[k]) {
            fprintf(stderr, "  node %zu never applied payload %u\n", i + 1, first + k);
            return 0;
        }
    }
    return 1;
}

static int proposal_settled(struct cluster *c, const void *where) {
    const uint64_t *node_and_id = where;
    return c->nodes[node_and_id[0]].proposals[node_and_id[1]] > PROPOSAL_PENDING;
}

uint32_t cluster_await_outcome(struct cluster *c, size_t i, uint64_t id, unsigned timeout_ms) {
    if (id == 0 || id >= CLUSTER_MAX_PROPOSALS) {
        return 0;
    }
    if (c->nodes[i].proposals[id] == PROPOSAL_NONE) {
        c->nodes[i].proposals[id] = PROPOSAL_PENDING;
    }
    uint64_t where[2] = {i, id};
    if (!cluster_run_until(c, proposal_settled, where, timeout_ms)) {
        return 0;
    }
    return c->nodes[i].proposal_outcome[id];
}

int cluster_leader_reports_membership(struct cluster *c, const void *membership) {
    const struct membership *want = membership;
    embraft_status_report *report = NULL;
    int leader = cluster_agreed_leader(c);
    if (leader < 0 || embraft_node_status(c->nodes[leader].node, &report) != EMBRAFT_OK) {
        return 0;
    }
    size_t voters = 0, learners = 0, outgoing = 99;
    uint64_t first_voter = 0;
    embraft_status_report_member_count(report, EMBRAFT_MEMBERS_VOTERS, &voters);
    embraft_status_report_member_count(report, EMBRAFT_MEMBERS_LEARNERS, &learners);
    embraft_status_report_member_count(report, EMBRAFT_MEMBERS_VOTERS_OUTGOING, &outgoing);
    int listed = voters == 0 ||
                 embraft_status_report_member(report, EMBRAFT_MEMBERS_VOTERS, 0, &first_voter) ==
                     EMBRAFT_OK;
    int refused = embraft_status_report_member(report, EMBRAFT_MEMBERS_VOTERS, voters,
                                               &first_voter) == EMBRAFT_ERR_OUT_OF_RANGE &&
                  embraft_status_report_member_count(report, 42, &outgoing) ==
                      EMBRAFT_ERR_INVALID_ARGUMENT;
    embraft_status_report_free(report);
    return listed && refused && voters == want->voters && learners == want->learners &&
           outgoing == 0;
}

static int settled(const struct cluster *c, const struct stream_proposal *p) {
    return c->nodes[p->node].proposals[p->id] > PROPOSAL_PENDING;
}

/* Called by cluster_pump after each round. */
static void stream_propose(struct cluster *c, struct proposal_stream *s) {
    while (s->oldest_pending < s->count && settled(c, &s->made[s->oldest_pending])) {
        s->oldest_pending++;
    }
    int leader = cluster_agreed_leader(c);
    if (s->stopped || leader < 0) {
        return;
    }
    size_t pending = 0;
    for (size_t k = s->oldest_pending; k < s->count; k++) {
        pending += !settled(c, &s->made[k]);
    }
    struct cluster_node *n = &c->nodes[leader];
    while (s->credit > 0 && pending < s->window && s->count < CLUSTER_MAX_STREAM) {
        struct stream_proposal *p = &s->made[s->count];
        char data[CLUSTER_PAYLOAD_MAX];
        size_t len = 0;
        p->node = (size_t)leader;
        p->number = s->first_number + (unsigned)s->count;
        p->id = 0;
        cluster_payload(p->number, data, &len);
        embraft_status status = embraft_node_propose(n->node, (const uint8_t *)data, len, &p->id);
        if (status == EMBRAFT_ERR_BUSY) {
            return; /* the node's queue is full: try again next round */
        }
        if (status != EMBRAFT_OK || p->id == 0 || p->id >= CLUSTER_MAX_PROPOSALS) {
            fail(c, "stream propose", (size_t)leader, status);
            return;
        }
        n->proposals[p->id] = PROPOSAL_PENDING;
        s->count++;
        s->credit--;
        pending++;
    }
}

struct stream_tally cluster_stream_tally(const struct cluster *c, const struct proposal_stream *s) {
    struct stream_tally t = {0, 0, 0, 0};
    for (size_t k = 0; k < s->count; k++) {
        switch (c->nodes[s->made[k].node].proposals[s->made[k].id]) {
        case PROPOSAL_COMMITTED:
            t.committed++;
            break;
        case PROPOSAL_DROPPED:
            t.dropped++;
            break;
        case PROPOSAL_UNKNOWN:
            t.unknown++;
            break;
        default:
            t.pending++;
            break;
        }
    }
    return t;
}

int cluster_stream_settled(struct cluster *c, const void *stream) {
    return cluster_stream_tally(c, stream).pending == 0;
}

/* How many times each payload number of the stream appears in what node
 * `i` applied, and where it last did. */
static void count_stream_payloads(const struct cluster_node *n, const struct proposal_stream *s,
                                  unsigned char *times, uint64_t *where) {
    memset(times, 0, s->count);
    for (uint64_t index = 1; index <= n->delivered; index++) {
        unsigned number = 0;
        if (cluster_payload_number(&n->applied[index], &number) && number >= s->first_number &&
            number - s->first_number < s->count) {
            unsigned k = number - s->first_number;
            times[k] = (unsigned char)(times[k] < 255 ? times[k] + 1 : 255);
            where[k] = index;
        }
    }
}

int cluster_stream_verify(const struct cluster *c, const struct proposal_stream *s) {
    static unsigned char times[CLUSTER_MAX_STREAM];
    static uint64_t where[CLUSTER_MAX_STREAM];
    for (size_t i = 0; i < c->count; i++) {
        const struct cluster_node *n = &c->nodes[i];
        if (!is_member(n)) {
            continue;
        }
        count_stream_payloads(n, s, times, where);
        for (size_t k = 0; k < s->count; k++) {
            const struct stream_proposal *p = &s->made[k];
            const struct cluster_node *owner = &c->nodes[p->node];
            enum proposal_state state = owner->proposals[p->id];
            /* On its own node a committed entry also carries its id. */
            int ok = (state == PROPOSAL_COMMITTED && times[k] == 1 &&
                      where[k] == owner->proposal_index[p->id] &&
                      (owner != n || n->applied[where[k]].proposal_id == p->id)) ||
                     (state == PROPOSAL_DROPPED && times[k] == 0) ||
                     (state == PROPOSAL_UNKNOWN && times[k] <= 1);
            if (!ok) {
                fprintf(stderr,
                        "  payload %u (proposal %llu of node %zu, state %d, index %llu): "
                        "applied %u times on node %zu, last at %llu\n",
                        p->number, (unsigned long long)p->id, p->node + 1, (int)state,
                        (unsigned long long)owner->proposal_index[p->id], times[k], i + 1,
                        (unsigned long long)where[k]);
                return 0;
            }
        }
    }
    return 1;
}
