/*
 * The multi-group runtime through the C API: three runtimes in this
 * process host 50 groups; an in-memory transport moves each poll's messages
 * between them as one group frame per destination runtime. Every group elects a leader
 * and commits proposals, every runtime applies the same entries; one
 * runtime is freed, the others go on, and it reopens from its data
 * directory, restarts every stored group and catches up. Then bad input:
 * unknown groups, a group started twice, garbage messages and frames, NULL
 * pointers.
 */
#define _POSIX_C_SOURCE 200809L
#include <poll.h>
#include "cluster.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define RT_COUNT 3
#define RT_GROUPS 50

/* What one runtime's host holds of one group: its state machine (a hash
 * of the entries applied, in order) and the replica's last state. */
struct rt_group {
    uint64_t applied;
    uint64_t hash;
    unsigned normal;
    uint32_t role;
};

struct rt_host {
    embraft_runtime *rt; /* NULL while stopped */
    const char *dir;
    struct rt_group groups[RT_GROUPS + 1]; /* by group id, 1..RT_GROUPS */
};

/* The one proposal of a group in flight, and the count committed. */
struct rt_proposal {
    uint64_t id; /* 0: none in flight */
    size_t at;
    unsigned committed;
    unsigned payloads;
};

struct rt_world {
    struct rt_host hosts[RT_COUNT];
    struct rt_proposal proposals[RT_GROUPS + 1];
    unsigned target; /* committed proposals wanted per group */
    unsigned long long next_tick;
    int broken; /* a check inside the pump failed */
};

static uint64_t fnv(uint64_t hash, const void *data, size_t len) {
    const uint8_t *bytes = data;
    for (size_t i = 0; i < len; i++) {
        hash = (hash ^ bytes[i]) * 1099511628211ull;
    }
    return hash;
}

static void rt_print_error(const embraft_runtime *rt) {
    char message[256] = "";
    embraft_runtime_last_error(rt, message, sizeof message, NULL);
    fprintf(stderr, "  runtime error: %s\n", message);
}

static embraft_runtime *rt_open(uint64_t id, const char *dir) {
    embraft_config *config = NULL;
    embraft_runtime *rt = NULL;
    if (embraft_config_new(&config) != EMBRAFT_OK) {
        return NULL;
    }
    embraft_config_set_id(config, id);
    embraft_config_set_data_dir(config, dir);
    embraft_config_set_segment_size(config, 1u << 20);
    embraft_config_set_max_entry_bytes(config, 1u << 19);
    embraft_config_set_sync_mode(config, EMBRAFT_SYNC_NEVER);
    /* As a Rust runtime's defaults have it: followers learn commits from
     * appends and heartbeats, and every group still commits and catches
     * up below. */
    if (embraft_config_set_skip_commit_broadcast(config, true) != EMBRAFT_OK ||
        embraft_runtime_new(config, 2, &rt) != EMBRAFT_OK) {
        harness_print_config_error(config);
    }
    embraft_config_free(config);
    return rt;
}

/* Handles one batch of host `i`; returns the number of items in it. */
static size_t rt_handle(struct rt_world *w, size_t i, const embraft_runtime_ready *ready) {
    struct rt_host *h = &w->hosts[i];
    const embraft_rt_message *messages = NULL;
    const embraft_rt_entry *entries = NULL;
    const embraft_rt_outcome *outcomes = NULL;
    const embraft_rt_state *states = NULL;
    const embraft_rt_restore *restores = NULL;
    size_t message_count = 0, entry_count = 0, outcome_count = 0, state_count = 0;
    size_t restore_count = 0;
    if (embraft_runtime_ready_messages(ready, &messages, &message_count) != EMBRAFT_OK ||
        embraft_runtime_ready_entries(ready, &entries, &entry_count) != EMBRAFT_OK ||
        embraft_runtime_ready_outcomes(ready, &outcomes, &outcome_count) != EMBRAFT_OK ||
        embraft_runtime_ready_states(ready, &states, &state_count) != EMBRAFT_OK ||
        embraft_runtime_ready_restores(ready, &restores, &restore_count) != EMBRAFT_OK ||
        messages == NULL || entries == NULL || outcomes == NULL || states == NULL) {
        fprintf(stderr, "  runtime %zu: a list getter failed\n", i + 1);
        w->broken = 1;
        return 0;
    }
    if (restore_count != 0) {
        fprintf(stderr, "  runtime %zu: unexpected snapshot restore\n", i + 1);
        w->broken = 1;
    }

    /* Messages, sorted by destination, then group: the array tells how
     * many each peer's group frame must hold. */
    for (size_t m = 0; m < message_count; m++) {
        const embraft_rt_message *msg = &messages[m];
        if (m > 0 && (messages[m - 1].to > msg->to ||
                      (messages[m - 1].to == msg->to && messages[m - 1].group > msg->group))) {
            fprintf(stderr, "  runtime %zu: messages not sorted at %zu\n", i + 1, m);
            w->broken = 1;
        }
        if (msg->to < 1 || msg->to > RT_COUNT || msg->to == i + 1 || msg->data == NULL) {
            fprintf(stderr, "  runtime %zu: bad message to %llu\n", i + 1,
                    (unsigned long long)msg->to);
            w->broken = 1;
        }
    }

    /* The transport: one group frame per destination. */
    const uint64_t *peers = NULL;
    size_t peer_count = 0;
    if (embraft_runtime_ready_peers(ready, &peers, &peer_count) != EMBRAFT_OK || peers == NULL) {
        fprintf(stderr, "  runtime %zu: embraft_runtime_ready_peers failed\n", i + 1);
        w->broken = 1;
        peer_count = 0;
    }
    size_t sent = 0; /* messages of the array covered by the frames so far */
    for (size_t p = 0; p < peer_count; p++) {
        uint64_t peer = peers[p];
        size_t run = 0; /* the peer's messages: the next run of the array */
        while (sent + run < message_count && messages[sent + run].to == peer) {
            run++;
        }
        sent += run;
        const uint8_t *frame = NULL;
        size_t frame_len = 0;
        if ((p > 0 && peers[p - 1] >= peer) || run == 0 || peer < 1 || peer > RT_COUNT ||
            embraft_runtime_ready_frame(ready, peer, &frame, &frame_len) != EMBRAFT_OK ||
            frame == NULL || frame_len < 4) {
            fprintf(stderr, "  runtime %zu: bad frame to %llu\n", i + 1,
                    (unsigned long long)peer);
            w->broken = 1;
            continue;
        }
        embraft_runtime *to = w->hosts[peer - 1].rt;
        if (to == NULL) {
            continue; /* stopped: the frame is lost, as on a network */
        }
        embraft_rt_frame_report report;
        embraft_status status = embraft_runtime_step_frame(to, frame, frame_len, &report);
        if (status != EMBRAFT_OK) {
            fprintf(stderr, "  frame to runtime %llu: %s\n", (unsigned long long)peer,
                    embraft_status_str(status));
            rt_print_error(to);
            w->broken = 1;
        } else if (report.stepped != run || report.unknown_group != 0 || report.busy != 0 ||
                   report.refused != 0) {
            /* Every group runs on every runtime and mailboxes never fill
             * here: each message of the frame must be stepped. */
            fprintf(stderr,
                    "  frame to runtime %llu: %zu messages, stepped %zu, unknown group %zu, "
                    "busy %zu, refused %zu\n",
                    (unsigned long long)peer, run, report.stepped, report.unknown_group,
                    report.busy, report.refused);
            w->broken = 1;
        }
    }
    if (sent != message_count) {
        fprintf(stderr, "  runtime %zu: %zu of %zu messages in the frames\n", i + 1, sent,
                message_count);
        w->broken = 1;
    }

    for (size_t s = 0; s < state_count; s++) {
        if (states[s].group >= 1 && states[s].group <= RT_GROUPS) {
            h->groups[states[s].group].role = states[s].role;
        }
    }

    /* Entries: grouped by group, in log order; apply, then acknowledge
     * each group's last. */
    for (size_t e = 0; e < entry_count; e++) {
        const embraft_rt_entry *entry = &entries[e];
        if (entry->group < 1 || entry->group > RT_GROUPS) {
            w->broken = 1;
            continue;
        }
        struct rt_group *g = &h->groups[entry->group];
        if (entry->index != g->applied + 1) {
            fprintf(stderr, "  runtime %zu group %llu: entry %llu after %llu\n", i + 1,
                    (unsigned long long)entry->group, (unsigned long long)entry->index,
                    (unsigned long long)g->applied);
            w->broken = 1;
        }
        g->applied = entry->index;
        g->hash = fnv(g->hash, &entry->index, sizeof entry->index);
        g->hash = fnv(g->hash, &entry->term, sizeof entry->term);
        g->hash = fnv(g->hash, entry->data, entry->len);
        g->normal += entry->kind == EMBRAFT_ENTRY_NORMAL;
        if (e + 1 == entry_count || entries[e + 1].group != entry->group) {
            embraft_status status = embraft_runtime_ack_applied(h->rt, entry->group, entry->index);
            if (status != EMBRAFT_OK && status != EMBRAFT_ERR_BUSY) {
                rt_print_error(h->rt);
                w->broken = 1;
            }
        }
    }

    for (size_t o = 0; o < outcome_count; o++) {
        const embraft_rt_outcome *outcome = &outcomes[o];
        if (outcome->group < 1 || outcome->group > RT_GROUPS) {
            w->broken = 1;
            continue;
        }
        struct rt_proposal *p = &w->proposals[outcome->group];
        if (p->id == outcome->proposal_id && p->at == i) {
            p->committed += outcome->code == EMBRAFT_PROPOSAL_COMMITTED;
            p->id = 0; /* dropped ones are proposed again */
        }
    }
    return message_count + entry_count + outcome_count + state_count;
}

/* One turn: ticks when due, polls every runtime once, proposes where a
 * group wants more. */
static void rt_turn(struct rt_world *w) {
    unsigned long long now = harness_now_ms();
    if (now >= w->next_tick) {
        w->next_tick = now + cluster_tick_ms();
        for (size_t i = 0; i < RT_COUNT; i++) {
            if (w->hosts[i].rt != NULL && embraft_runtime_tick(w->hosts[i].rt) != EMBRAFT_OK) {
                w->broken = 1;
            }
        }
    }
    size_t items = 0;
    for (size_t i = 0; i < RT_COUNT; i++) {
        embraft_runtime_ready *ready = NULL;
        if (w->hosts[i].rt == NULL) {
            continue;
        }
        embraft_status status = embraft_runtime_poll(w->hosts[i].rt, 0, &ready);
        if (status != EMBRAFT_OK || ready == NULL) {
            fprintf(stderr, "  poll: %s\n", embraft_status_str(status));
            w->broken = 1;
            continue;
        }
        items += rt_handle(w, i, ready);
        embraft_runtime_ready_free(ready);
    }
    for (uint64_t g = 1; g <= RT_GROUPS; g++) {
        struct rt_proposal *p = &w->proposals[g];
        if (p->id != 0 || p->committed >= w->target) {
            continue;
        }
        for (size_t i = 0; i < RT_COUNT; i++) {
            if (w->hosts[i].rt != NULL && w->hosts[i].groups[g].role == EMBRAFT_ROLE_LEADER) {
                char payload[32];
                int len = snprintf(payload, sizeof payload, "g%llu-%u", (unsigned long long)g,
                                   ++p->payloads);
                if (embraft_runtime_propose(w->hosts[i].rt, g, (const uint8_t *)payload,
                                            (size_t)len, &p->id) == EMBRAFT_OK) {
                    p->at = i;
                    items++;
                }
                break;
            }
        }
    }
    if (items == 0) {
        harness_sleep_ms(1);
    }
}

static int rt_every_group_led(const struct rt_world *w) {
    for (uint64_t g = 1; g <= RT_GROUPS; g++) {
        int led = 0;
        for (size_t i = 0; i < RT_COUNT; i++) {
            led |= w->hosts[i].rt != NULL && w->hosts[i].groups[g].role == EMBRAFT_ROLE_LEADER;
        }
        if (!led) {
            return 0;
        }
    }
    return 1;
}

/* Every group has its target committed, and the live runtimes applied the
 * same entries (same last index, same hash) with at least that many
 * proposals among them. */
static int rt_settled(const struct rt_world *w) {
    for (uint64_t g = 1; g <= RT_GROUPS; g++) {
        if (w->proposals[g].committed < w->target) {
            return 0;
        }
        const struct rt_group *first = NULL;
        for (size_t i = 0; i < RT_COUNT; i++) {
            const struct rt_group *mine = &w->hosts[i].groups[g];
            if (w->hosts[i].rt == NULL) {
                continue;
            }
            if (mine->normal < w->target) {
                return 0;
            }
            if (first == NULL) {
                first = mine;
            } else if (mine->applied != first->applied || mine->hash != first->hash) {
                return 0;
            }
        }
    }
    return 1;
}

static int rt_run_until(struct rt_world *w, int (*done)(const struct rt_world *)) {
    unsigned long long deadline = harness_now_ms() + cluster_tick_ms() * 3000u;
    while (!w->broken && harness_now_ms() < deadline) {
        rt_turn(w);
        if (done(w)) {
            return 1;
        }
    }
    return 0;
}

static int rt_start_groups(struct rt_world *w, size_t i, const uint64_t *peers, size_t count) {
    for (uint64_t g = 1; g <= RT_GROUPS; g++) {
        if (embraft_runtime_start_group(w->hosts[i].rt, g, peers, count, 0) != EMBRAFT_OK) {
            rt_print_error(w->hosts[i].rt);
            return 0;
        }
    }
    return 1;
}

/* The scenario; returns 1 on success. The caller frees the runtimes. */
static int rt_scenario(struct rt_world *w) {
    const uint64_t peers[RT_COUNT] = {1, 2, 3};
    for (size_t i = 0; i < RT_COUNT; i++) {
        w->hosts[i].dir = harness_temp_dir();
        w->hosts[i].rt = rt_open(i + 1, w->hosts[i].dir);
        REQUIRE(w->hosts[i].rt != NULL);
        REQUIRE(rt_start_groups(w, i, peers, RT_COUNT));
    }
    REQUIRE(rt_run_until(w, rt_every_group_led));
    w->target = 2;
    REQUIRE(rt_run_until(w, rt_settled));

    /* Runtime 3 stops; the other two go on (new leaders where 3 led). */
    embraft_runtime_free(w->hosts[2].rt);
    w->hosts[2].rt = NULL;
    for (uint64_t g = 1; g <= RT_GROUPS; g++) {
        if (w->proposals[g].id != 0 && w->proposals[g].at == 2) {
            w->proposals[g].id = 0; /* its outcome went with the runtime */
        }
    }
    REQUIRE(embraft_runtime_report_unreachable(w->hosts[0].rt, 3) == EMBRAFT_OK);
    REQUIRE(embraft_runtime_report_unreachable(w->hosts[1].rt, 3) == EMBRAFT_OK);
    w->target = 4;
    REQUIRE(rt_run_until(w, rt_settled));

    /* It reopens from its directory, with an empty state machine: every
     * stored group restarts with no peers and applied 0, and catches up. */
    w->hosts[2].rt = rt_open(3, w->hosts[2].dir);
    REQUIRE(w->hosts[2].rt != NULL);
    memset(w->hosts[2].groups, 0, sizeof w->hosts[2].groups);
    uint64_t stored[RT_GROUPS + 1];
    size_t count = 0;
    REQUIRE(embraft_runtime_stored_groups(w->hosts[2].rt, NULL, 0, &count) == EMBRAFT_OK);
    REQUIRE(count == RT_GROUPS);
    count = 0;
    REQUIRE(embraft_runtime_stored_groups(w->hosts[2].rt, stored, 3, &count) == EMBRAFT_OK);
    REQUIRE(count == RT_GROUPS && stored[0] == 1 && stored[2] == 3);
    REQUIRE(embraft_runtime_stored_groups(w->hosts[2].rt, stored, RT_GROUPS + 1, &count) ==
            EMBRAFT_OK);
    REQUIRE(count == RT_GROUPS);
    REQUIRE(embraft_runtime_running_groups(w->hosts[2].rt, NULL, 0, &count) == EMBRAFT_OK);
    REQUIRE(count == 0);
    for (size_t k = 0; k < RT_GROUPS; k++) {
        REQUIRE(stored[k] == k + 1);
        REQUIRE(embraft_runtime_start_group(w->hosts[2].rt, stored[k], NULL, 0, 0) == EMBRAFT_OK);
    }
    REQUIRE(embraft_runtime_running_groups(w->hosts[2].rt, NULL, 0, &count) == EMBRAFT_OK);
    REQUIRE(count == RT_GROUPS);
    REQUIRE(rt_run_until(w, rt_settled));
    for (uint64_t g = 1; g <= RT_GROUPS; g++) {
        REQUIRE(w->proposals[g].committed == 4);
    }

    /* The reopened runtime's status of a group it caught up. */
    embraft_status_report *report = NULL;
    uint64_t id = 0, commit = 0;
    REQUIRE(embraft_runtime_status(w->hosts[2].rt, 1, &report) == EMBRAFT_OK);
    embraft_status_report_get(report, EMBRAFT_FIELD_ID, &id);
    embraft_status_report_get(report, EMBRAFT_FIELD_COMMIT, &commit);
    embraft_status_report_free(report);
    REQUIRE(id == 3 && commit >= w->hosts[0].groups[1].applied - 1);
    uint64_t rounds = 0, steps = 0, syncs = 0;
    REQUIRE(embraft_runtime_stats(w->hosts[0].rt, &rounds, &steps, &syncs) == EMBRAFT_OK);
    REQUIRE(rounds > 0 && steps >= rounds);
    return 1;
}

static void three_runtimes_run_fifty_groups_and_one_catches_up_after_a_restart(void) {
    struct rt_world *w = calloc(1, sizeof *w);
    CHECK(w != NULL);
    int ok = rt_scenario(w);
    int broken = w->broken;
    for (size_t i = 0; i < RT_COUNT; i++) {
        embraft_runtime_free(w->hosts[i].rt);
    }
    free(w);
    CHECK(ok);
    CHECK(!broken);
}

/* The last error of `rt` holds `needle`. */
static int rt_error_holds(const embraft_runtime *rt, const char *needle) {
    char message[256] = "";
    embraft_runtime_last_error(rt, message, sizeof message, NULL);
    if (strstr(message, needle) == NULL) {
        fprintf(stderr, "  last error \"%s\" lacks \"%s\"\n", message, needle);
        return 0;
    }
    return 1;
}

/* Polls `rt` until `group` leads here and has applied (and acknowledged)
 * an entry; returns the index, 0 on timeout. */
static uint64_t rt_lead_alone(embraft_runtime *rt, uint64_t group) {
    unsigned long long deadline = harness_now_ms() + cluster_tick_ms() * 1000u;
    int leader = 0;
    uint64_t applied = 0;
    while (harness_now_ms() < deadline && !(leader && applied > 0)) {
        embraft_runtime_ready *ready = NULL;
        embraft_runtime_tick(rt);
        if (embraft_runtime_poll(rt, cluster_tick_ms(), &ready) != EMBRAFT_OK) {
            return 0;
        }
        const embraft_rt_state *states = NULL;
        const embraft_rt_entry *entries = NULL;
        size_t state_count = 0, entry_count = 0;
        embraft_runtime_ready_states(ready, &states, &state_count);
        embraft_runtime_ready_entries(ready, &entries, &entry_count);
        for (size_t i = 0; i < state_count; i++) {
            if (states[i].group == group) {
                leader = states[i].role == EMBRAFT_ROLE_LEADER;
            }
        }
        for (size_t i = 0; i < entry_count; i++) {
            if (entries[i].group == group) {
                applied = entries[i].index;
            }
        }
        if (applied > 0) {
            embraft_runtime_ack_applied(rt, group, applied);
        }
        embraft_runtime_ready_free(ready);
    }
    return leader ? applied : 0;
}

/* Waits for a message from runtime 2 (group 5 founded with runtime 1) to
 * runtime 1, and writes it as a one-message group frame to `frame`;
 * returns the frame's length, 0 on failure. */
static size_t rt_frame_from_a_peer(uint8_t *frame, size_t capacity) {
    const uint64_t peers[] = {1, 2};
    embraft_runtime *rt = rt_open(2, harness_temp_dir());
    size_t len = 0;
    if (rt == NULL || embraft_runtime_start_group(rt, 5, peers, 2, 0) != EMBRAFT_OK) {
        embraft_runtime_free(rt);
        return 0;
    }
    unsigned long long deadline = harness_now_ms() + cluster_tick_ms() * 1000u;
    while (len == 0 && harness_now_ms() < deadline) {
        embraft_runtime_ready *ready = NULL;
        embraft_runtime_tick(rt);
        if (embraft_runtime_poll(rt, cluster_tick_ms(), &ready) != EMBRAFT_OK) {
            break;
        }
        const uint8_t *data = NULL;
        size_t data_len = 0;
        /* Count (4 bytes), then the first item: group (8), length (4) and
         * the message; only the first is kept, so the count becomes 1. */
        if (embraft_runtime_ready_frame(ready, 1, &data, &data_len) == EMBRAFT_OK &&
            data_len >= 16 && data[0] > 0) {
            size_t first = 16 + (size_t)(data[12] | data[13] << 8 | data[14] << 16 |
                                         (uint32_t)data[15] << 24);
            if (first <= data_len && first <= capacity) {
                memcpy(frame, data, first);
                frame[0] = 1;
                len = first;
            }
        }
        embraft_runtime_ready_free(ready);
    }
    embraft_runtime_free(rt);
    return len;
}

/* Group frames into `rt`, which runs group 5 and not group 999: malformed
 * ones are refused whole, the messages of a good one are counted. */
static int rt_frames_refused_or_counted(embraft_runtime *rt) {
    const uint8_t truncated[] = {1, 0, 0, 0, 5, 0, 0};
    embraft_rt_frame_report report = {7, 7, 7, 7};
    REQUIRE(embraft_runtime_step_frame(rt, truncated, sizeof truncated, &report) ==
            EMBRAFT_ERR_MALFORMED_MESSAGE);
    REQUIRE(report.stepped == 7 && report.refused == 7); /* untouched */
    REQUIRE(embraft_runtime_step_frame(rt, truncated, 0, &report) ==
            EMBRAFT_ERR_MALFORMED_MESSAGE);
    REQUIRE(embraft_runtime_step_frame(rt, NULL, 4, &report) == EMBRAFT_ERR_NULL_ARGUMENT);
    REQUIRE(rt_error_holds(rt, "frame"));
    REQUIRE(embraft_runtime_step_frame(rt, truncated, 4, NULL) == EMBRAFT_ERR_NULL_ARGUMENT);
    REQUIRE(rt_error_holds(rt, "report_out"));

    /* An empty frame is well formed: nothing to step. */
    const uint8_t empty[] = {0, 0, 0, 0};
    REQUIRE(embraft_runtime_step_frame(rt, empty, sizeof empty, &report) == EMBRAFT_OK);
    REQUIRE(report.stepped == 0 && report.unknown_group == 0 && report.busy == 0 &&
            report.refused == 0);

    /* A real message of group 5 from runtime 2; then the same message
     * for group 999 (bytes 4..11 are the group id, little-endian). */
    uint8_t frame[512];
    size_t len = rt_frame_from_a_peer(frame, sizeof frame);
    REQUIRE(len > 0);
    REQUIRE(embraft_runtime_step_frame(rt, frame, len, &report) == EMBRAFT_OK);
    REQUIRE(report.stepped == 1 && report.unknown_group == 0 && report.refused == 0);
    frame[4] = 999 & 0xff;
    frame[5] = 999 >> 8;
    REQUIRE(embraft_runtime_step_frame(rt, frame, len, &report) == EMBRAFT_OK);
    REQUIRE(report.stepped == 0 && report.unknown_group == 1 && report.busy == 0 &&
            report.refused == 0);
    return 1;
}

static void bad_input_gets_its_own_status_and_message(void) {
    const char *dir = harness_temp_dir();
    embraft_runtime *rt = rt_open(1, dir);
    embraft_runtime *other = NULL;
    embraft_runtime_ready *ready = NULL;
    uint64_t self = 1, proposal = 0;
    const uint8_t garbage[] = {0xde, 0xad, 0xbe, 0xef, 0x00, 0x01};
    embraft_status status;
    CHECK(rt != NULL);

    /* NULL handles and outputs. */
    CHECK_STATUS(embraft_runtime_new(NULL, 1, &other), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_runtime_tick(NULL), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_runtime_poll(rt, 0, NULL), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK(rt_error_holds(rt, "ready_out"));
    CHECK_STATUS(embraft_runtime_start_group(rt, 5, NULL, 1, 0), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK(rt_error_holds(rt, "peers"));
    CHECK(other == NULL);

    CHECK_STATUS(embraft_runtime_readiness_fd(rt, NULL), EMBRAFT_ERR_NULL_ARGUMENT);
    int fd = -1;
    CHECK_OK(embraft_runtime_readiness_fd(rt, &fd));
    CHECK(fd >= 0);
    struct pollfd waiter = {fd, POLLIN, 0};
    CHECK(poll(&waiter, 1, 0) == 0);

    CHECK_OK(embraft_runtime_start_group(rt, 5, &self, 1, 0));
    /* The group's first round hands out its state: the fd signals it, and
     * is quiet again once the output is taken. */
    CHECK(poll(&waiter, 1, 2000) == 1 && (waiter.revents & POLLIN));
    CHECK_OK(embraft_runtime_poll(rt, 0, &ready));
    embraft_runtime_ready_free(ready);
    ready = NULL;
    CHECK(poll(&waiter, 1, 0) == 0);
    CHECK_STATUS(embraft_runtime_start_group(rt, 5, &self, 1, 0), EMBRAFT_ERR_GROUP_EXISTS);
    CHECK(rt_error_holds(rt, "group 5"));
    CHECK_STATUS(embraft_runtime_propose(rt, 999, garbage, 1, &proposal),
                 EMBRAFT_ERR_UNKNOWN_GROUP);
    CHECK(rt_error_holds(rt, "999"));
    CHECK(proposal == 0);
    CHECK_STATUS(embraft_runtime_propose(rt, 5, NULL, 3, &proposal), EMBRAFT_ERR_NULL_ARGUMENT);
    CHECK_STATUS(embraft_runtime_ack_applied(rt, 999, 0), EMBRAFT_ERR_UNKNOWN_GROUP);
    CHECK_STATUS(embraft_runtime_read_index(rt, 999, 1), EMBRAFT_ERR_UNKNOWN_GROUP);
    CHECK_STATUS(embraft_runtime_stop_group(rt, 999), EMBRAFT_ERR_UNKNOWN_GROUP);
    CHECK_STATUS(embraft_runtime_step(rt, 5, garbage, sizeof garbage),
                 EMBRAFT_ERR_MALFORMED_MESSAGE);
    CHECK_STATUS(embraft_runtime_step(rt, 5, garbage, 0), EMBRAFT_ERR_MALFORMED_MESSAGE);
    CHECK_STATUS(embraft_runtime_transfer_leader(rt, 5, 0), EMBRAFT_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(embraft_runtime_report_unreachable(rt, 0), EMBRAFT_ERR_INVALID_ARGUMENT);
    CHECK(strcmp(embraft_status_str(EMBRAFT_ERR_UNKNOWN_GROUP),
                 embraft_status_str(EMBRAFT_ERR_GROUP_EXISTS)) != 0);

    /* A second runtime on the same directory is refused, on the config. */
    embraft_config *config = NULL;
    CHECK_OK(embraft_config_new(&config));
    embraft_config_set_id(config, 2);
    embraft_config_set_data_dir(config, dir);
    status = embraft_runtime_new(config, 1, &other);
    embraft_config_free(config);
    CHECK_STATUS(status, EMBRAFT_ERR_DIRECTORY_LOCKED);
    CHECK(other == NULL);

    /* The group leads alone; a snapshot of it through the shared writer. */
    uint64_t applied = rt_lead_alone(rt, 5);
    CHECK(applied > 0);
    embraft_snapshot_writer *writer = NULL;
    status = EMBRAFT_ERR_NOT_APPLIED;
    unsigned long long deadline = harness_now_ms() + cluster_tick_ms() * 500u;
    /* The acknowledgement reaches the group through its mailbox. */
    while (status == EMBRAFT_ERR_NOT_APPLIED && harness_now_ms() < deadline) {
        status = embraft_runtime_snapshot_begin(rt, 5, applied, &writer);
        if (status == EMBRAFT_ERR_NOT_APPLIED) {
            harness_sleep_ms(1);
        }
    }
    CHECK_OK(status);
    CHECK_OK(embraft_snapshot_writer_write(writer, (const uint8_t *)"state", 5));
    CHECK_OK(embraft_snapshot_writer_finish(writer));
    CHECK_STATUS(embraft_runtime_snapshot_begin(rt, 5, applied, &writer),
                 EMBRAFT_ERR_STALE_SNAPSHOT);

    /* Frames, once the group's leadership no longer matters here. */
    CHECK(rt_frames_refused_or_counted(rt));

    /* Stop, start again from the WAL, remove. */
    CHECK_OK(embraft_runtime_stop_group(rt, 5));
    CHECK_STATUS(embraft_runtime_propose(rt, 5, garbage, 1, &proposal),
                 EMBRAFT_ERR_UNKNOWN_GROUP);
    CHECK_OK(embraft_runtime_start_group(rt, 5, NULL, 0, applied));
    CHECK_OK(embraft_runtime_remove_group(rt, 5));
    CHECK_STATUS(embraft_runtime_remove_group(rt, 5), EMBRAFT_ERR_UNKNOWN_GROUP);

    /* With no group left, a poll hands out what the group left, then
     * empty batches: still valid handles, with non-NULL empty arrays. */
    CHECK_OK(embraft_runtime_poll(rt, 0, &ready));
    embraft_runtime_ready_free(ready);
    ready = NULL;
    CHECK_OK(embraft_runtime_poll(rt, 1, &ready));
    const embraft_rt_log *logs = NULL;
    const embraft_rt_entry *entries = NULL;
    size_t log_count = 1, entry_count = 1;
    status = embraft_runtime_ready_logs(ready, &logs, &log_count);
    if (status == EMBRAFT_OK) {
        status = embraft_runtime_ready_entries(ready, &entries, &entry_count);
    }
    embraft_runtime_ready_free(ready);
    embraft_runtime_free(rt);
    CHECK_OK(status);
    CHECK(logs != NULL && log_count == 0 && entries != NULL && entry_count == 0);
}

const struct test_case runtime_tests[] = {
    {"runtime: three runtimes run 50 groups; one catches up after a restart",
     three_runtimes_run_fifty_groups_and_one_catches_up_after_a_restart},
    {"runtime: bad input gets its own status and message", bad_input_gets_its_own_status_and_message},
    {NULL, NULL},
};
