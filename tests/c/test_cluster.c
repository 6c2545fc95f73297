/*
 * Clusters in one process, driven through the C API only: election,
 * replication of many proposals, leader failover, restart and catch-up.
 */
#include "cluster.h"

#include <stdio.h>
#include <string.h>

struct peer_progress {
    uint64_t target;
    size_t peers;
    size_t matched;
};

/* The leader's status lists two peers, both matched through the target. */
static int leader_saw_peers_match(struct cluster *c, const void *arg) {
    struct peer_progress *progress = (struct peer_progress *)arg;
    embraft_status_report *report = NULL;
    int leader = cluster_agreed_leader(c);
    if (leader < 0 || embraft_node_status(c->nodes[leader].node, &report) != EMBRAFT_OK) {
        return 0;
    }
    progress->matched = 0;
    embraft_status_report_peer_count(report, &progress->peers);
    for (size_t p = 0; p < progress->peers; p++) {
        uint64_t match = 0;
        embraft_status_report_peer_get(report, p, EMBRAFT_PEER_MATCH_INDEX, &match);
        progress->matched += match >= progress->target;
    }
    embraft_status_report_free(report);
    return progress->peers == 2 && progress->matched == 2;
}

static void elect_and_apply_1000_proposals(uint32_t threading) {
    struct cluster *c = cluster_new(3);
    CHECK(c != NULL);
    c->threading = threading;
    for (size_t i = 0; i < 3; i++) {
        CHECK_OK(cluster_start(c, i, 0));
    }
    int elected = cluster_run_until(c, cluster_has_leader, NULL, ELECTION_TIMEOUT_MS);
    if (!elected) {
        cluster_free(c);
    }
    CHECK(elected);

    int committed = cluster_propose_all(c, 0, 1000);
    uint64_t target = cluster_max_delivered(c);
    int caught_up = committed && cluster_run_until(c, cluster_all_applied, &target, COMMIT_TIMEOUT_MS);
    int agree = cluster_logs_agree(c);
    int complete = 1;
    for (size_t i = 0; i < 3; i++) {
        complete = complete && cluster_applied_each_once(c, i, 0, 1000);
    }

    /* The leader reports every peer's progress (once it has taken their
     * last acknowledgements, which may still be on their way). */
    struct peer_progress progress = {target, 0, 0};
    int reported = cluster_run_until(c, leader_saw_peers_match, &progress, COMMIT_TIMEOUT_MS);
    int broken = c->broken;
    cluster_free(c);
    CHECK(!broken);
    CHECK(committed);
    CHECK(caught_up);
    CHECK(agree);
    CHECK(complete);
    /* The leader's own progress is not a peer's. */
    CHECK(reported);
    CHECK(progress.peers == 2);
    CHECK(progress.matched == 2);
}

static void three_nodes_elect_and_apply_1000_proposals_in_the_same_order(void) {
    elect_and_apply_1000_proposals(EMBRAFT_THREADING_NODE);
}

/* Inline nodes run no threads: every call above did the node's work on
 * the test's thread. */
static void three_inline_nodes_elect_and_apply_1000_proposals_in_the_same_order(void) {
    elect_and_apply_1000_proposals(EMBRAFT_THREADING_INLINE);
}

static int new_leader_other_than(struct cluster *c, const void *old) {
    int leader = cluster_agreed_leader(c);
    return leader >= 0 && (size_t)leader != *(const size_t *)old;
}

/* Nodes start writing their WAL with `first_method`; the freed leader
 * restarts with `restart_method`. */
static void leader_freed_and_restarted_with(uint32_t first_method, uint32_t restart_method) {
    struct cluster *c = cluster_new(3);
    CHECK(c != NULL);
    c->wal_write_method = first_method;
    c->wal_write_method_set = 1;
    int first_leader = cluster_start_elect_and_commit(c, 3, 100);
    if (first_leader < 0) {
        cluster_free(c);
    }
    CHECK(first_leader >= 0);
    size_t old_leader = (size_t)first_leader;
    uint64_t old_leader_applied = c->nodes[old_leader].delivered;

    /* Free the leader: the other two elect a new one and keep committing. */
    cluster_stop(c, old_leader);
    int reelected = cluster_run_until(c, new_leader_other_than, &old_leader,
                                      ELECTION_TIMEOUT_MS * 3);
    int committed_after = reelected && cluster_propose_all(c, 100, 100);

    /* Restart the old leader from its directory with what its host had
     * applied; it catches up with everything committed while it was down. */
    c->wal_write_method = restart_method;
    embraft_status restarted = cluster_start(c, old_leader, old_leader_applied);
    uint64_t target = cluster_max_delivered(c);
    int caught_up = restarted == EMBRAFT_OK && committed_after &&
                    cluster_run_until(c, cluster_all_applied, &target, COMMIT_TIMEOUT_MS);
    int agree = cluster_logs_agree(c);
    int complete = caught_up && cluster_applied_each_once(c, old_leader, 0, 200);
    int broken = c->broken;
    cluster_free(c);
    CHECK(!broken);
    CHECK(reelected);
    CHECK(committed_after);
    CHECK_OK(restarted);
    CHECK(caught_up);
    CHECK(agree);
    CHECK(complete);
}

static void leader_freed_new_one_elected_and_restarted_node_catches_up(void) {
    leader_freed_and_restarted_with(EMBRAFT_WAL_WRITE_MMAP, EMBRAFT_WAL_WRITE_MMAP);
}

/* Both methods write one format: a directory written with pwrite reopens
 * with the mapped method, recovers what it held and catches up. */
static void pwrite_nodes_commit_and_a_restart_with_the_mapped_method_catches_up(void) {
    leader_freed_and_restarted_with(EMBRAFT_WAL_WRITE_PWRITE, EMBRAFT_WAL_WRITE_MMAP);
}

static void single_node_restart_redelivers_after_the_applied_index(void) {
    struct cluster *c = cluster_new(1);
    CHECK(c != NULL);
    CHECK_OK(cluster_start(c, 0, 0));
    int ok = cluster_run_until(c, cluster_has_leader, NULL, ELECTION_TIMEOUT_MS) &&
             cluster_propose_all(c, 0, 20);
    uint64_t last = c->nodes[0].delivered;
    uint64_t term = c->nodes[0].term;

    /* Restart with applied 0: every committed entry comes again, same terms. */
    cluster_stop(c, 0);
    embraft_status restarted = cluster_start(c, 0, 0);
    int redelivered = restarted == EMBRAFT_OK &&
                      cluster_run_until(c, cluster_all_applied, &last, COMMIT_TIMEOUT_MS);
    int recovered_term = c->nodes[0].term >= term;

    /* Restart with applied = last - 5: only the last five come again. */
    cluster_stop(c, 0);
    uint64_t applied = last - 5;
    embraft_status restarted_again = cluster_start(c, 0, applied);
    int tail = restarted_again == EMBRAFT_OK &&
               cluster_run_until(c, cluster_all_applied, &last, COMMIT_TIMEOUT_MS);

    /* Asking to skip beyond the recovered log is a config error. */
    cluster_stop(c, 0);
    embraft_status beyond = cluster_start(c, 0, last + 1000);
    int broken = c->broken;
    cluster_free(c);
    CHECK(!broken);
    CHECK(ok);
    CHECK_OK(restarted);
    CHECK(redelivered);
    CHECK(recovered_term);
    CHECK_OK(restarted_again);
    CHECK(tail);
    CHECK_STATUS(beyond, EMBRAFT_ERR_INVALID_CONFIG);
}

static void fourth_node_joins_through_a_membership_change(void) {
    struct cluster *c = cluster_new(4);
    CHECK(c != NULL);
    c->founders = 3;
    int leader = cluster_start_elect_and_commit(c, 3, 50);
    /* The newcomer starts empty; it knows no leader until it is added (so
     * it starts only now, not to disturb cluster_agreed_leader). */
    embraft_status joined = cluster_start(c, 3, 0);
    uint64_t change_id = 0;
    embraft_status proposed = EMBRAFT_ERR_INVALID_ARGUMENT;
    int committed = 0;
    if (leader >= 0) {
        proposed = embraft_node_propose_conf_change(c->nodes[leader].node, EMBRAFT_CONF_ADD_VOTER,
                                                    4, &change_id);
        committed = proposed == EMBRAFT_OK &&
                    cluster_await_outcome(c, (size_t)leader, change_id, COMMIT_TIMEOUT_MS) ==
                        EMBRAFT_PROPOSAL_COMMITTED;
    }
    /* The new voter counts from now on: everything commits on all four. */
    int more = committed && cluster_propose_all(c, 50, 50);
    uint64_t target = cluster_max_delivered(c);
    int caught_up = more && cluster_run_until(c, cluster_all_applied, &target, COMMIT_TIMEOUT_MS);
    int agree = cluster_logs_agree(c);
    int complete = caught_up && cluster_applied_each_once(c, 3, 0, 100);
    struct membership four_voters = {4, 0};
    int seen_four = caught_up && cluster_run_until(c, cluster_leader_reports_membership, &four_voters,
                                                   COMMIT_TIMEOUT_MS);

    /* Move to voters {1, 2, 3} and learner {4} in one joint change, which
     * the leader leaves by itself once it commits. */
    uint64_t voters[] = {1, 2, 3}, learners[] = {4};
    uint64_t move_id = 0;
    embraft_status moved = EMBRAFT_ERR_INVALID_ARGUMENT;
    int leader_now = cluster_agreed_leader(c);
    if (seen_four && leader_now >= 0) {
        moved = embraft_node_propose_membership(c->nodes[leader_now].node, voters, 3, learners, 1,
                                                &move_id);
    }
    struct membership three_and_one = {3, 1};
    int demoted = moved == EMBRAFT_OK && cluster_run_until(c, cluster_leader_reports_membership,
                                                           &three_and_one, COMMIT_TIMEOUT_MS);
    int broken = c->broken;
    cluster_free(c);
    CHECK(!broken);
    CHECK(leader >= 0);
    CHECK_OK(joined);
    CHECK(seen_four);
    CHECK_OK(moved);
    CHECK(demoted);
    CHECK_OK(proposed);
    CHECK(committed);
    CHECK(more);
    CHECK(caught_up);
    CHECK(agree);
    CHECK(complete);
}

static int leader_is(struct cluster *c, const void *index) {
    return cluster_agreed_leader(c) == (int)*(const size_t *)index;
}

static int read_answered(struct cluster *c, const void *where) {
    const uint64_t *node_and_context = where;
    return c->nodes[node_and_context[0]].read_context == node_and_context[1];
}

static void leadership_transfer_and_read_index(void) {
    struct cluster *c = cluster_new(3);
    CHECK(c != NULL);
    int leader = cluster_start_elect_and_commit(c, 3, 10);
    if (leader < 0) {
        cluster_free(c);
    }
    CHECK(leader >= 0);

    /* Hand leadership to the next node. */
    size_t target = ((size_t)leader + 1) % 3;
    embraft_status transfer = embraft_node_transfer_leader(c->nodes[leader].node, target + 1);
    int transferred = cluster_run_until(c, leader_is, &target, ELECTION_TIMEOUT_MS);

    /* A read on a follower is forwarded to the leader and answered with a
     * read index no lower than what was committed before it was asked. */
    size_t follower = (target + 1) % 3;
    uint64_t committed_before = c->nodes[target].delivered;
    embraft_status asked = embraft_node_read_index(c->nodes[follower].node, 4242);
    uint64_t where[2] = {follower, 4242};
    int answered = cluster_run_until(c, read_answered, where, COMMIT_TIMEOUT_MS);
    uint32_t result = c->nodes[follower].read_result;
    uint64_t read_index = c->nodes[follower].read_index;

    embraft_status unreachable =
        embraft_node_report_unreachable(c->nodes[target].node, follower + 1);
    int broken = c->broken;
    cluster_free(c);
    CHECK(!broken);
    CHECK_OK(transfer);
    CHECK(transferred);
    CHECK_OK(asked);
    CHECK(answered);
    CHECK(result == EMBRAFT_READ_OK);
    CHECK(read_index >= committed_before);
    CHECK_OK(unreachable);
}

static void lagging_node_catches_up_through_a_snapshot_with(uint32_t threading) {
    struct cluster *c = cluster_new(3);
    CHECK(c != NULL);
    c->threading = threading;
    c->compact_keep_entries = 5;
    int leader = cluster_start_elect_and_commit(c, 3, 50);
    if (leader < 0) {
        cluster_free(c);
    }
    CHECK(leader >= 0);

    /* A follower goes down; the others go on, and the leader compacts its
     * log past everything the follower has. */
    size_t lagging = ((size_t)leader + 1) % 3;
    uint64_t lagging_applied = c->nodes[lagging].delivered;
    cluster_stop(c, lagging);
    int more = cluster_propose_all(c, 50, 100);
    uint64_t target = cluster_max_delivered(c);
    int applied = more && cluster_run_until(c, cluster_all_applied, &target, COMMIT_TIMEOUT_MS);
    embraft_status compacted = cluster_take_snapshot(c, (size_t)leader);
    int after = applied && compacted == EMBRAFT_OK && cluster_propose_all(c, 150, 20);

    /* Back, it is sent the snapshot, installs it, then takes the rest. */
    embraft_status restarted = cluster_start(c, lagging, lagging_applied);
    target = cluster_max_delivered(c);
    int caught_up = after && restarted == EMBRAFT_OK &&
                    cluster_run_until(c, cluster_all_applied, &target, COMMIT_TIMEOUT_MS);
    int restored = c->nodes[lagging].snapshot.index > lagging_applied;
    int agree = cluster_logs_agree(c);
    int complete = caught_up && cluster_applied_each_once(c, lagging, 0, 170);
    int broken = c->broken;
    cluster_free(c);
    CHECK(!broken);
    CHECK(more);
    CHECK(applied);
    CHECK_OK(compacted);
    CHECK(after);
    CHECK_OK(restarted);
    CHECK(caught_up);
    CHECK(restored);
    CHECK(agree);
    CHECK(complete);
}

static void lagging_node_catches_up_through_a_snapshot(void) {
    lagging_node_catches_up_through_a_snapshot_with(EMBRAFT_THREADING_NODE);
}

/* The received snapshot is verified on a short-lived thread, which an
 * inline node lets take its result in. */
static void lagging_inline_node_catches_up_through_a_snapshot(void) {
    lagging_node_catches_up_through_a_snapshot_with(EMBRAFT_THREADING_INLINE);
}

static void restart_after_compaction_restores_the_snapshot_first(void) {
    struct cluster *c = cluster_new(1);
    CHECK(c != NULL);
    c->compact_keep_entries = 2;
    CHECK_OK(cluster_start(c, 0, 0));
    int ok = cluster_run_until(c, cluster_has_leader, NULL, ELECTION_TIMEOUT_MS) &&
             cluster_propose_all(c, 0, 30);
    embraft_status compacted = ok ? cluster_take_snapshot(c, 0) : EMBRAFT_ERR_INVALID_ARGUMENT;
    uint64_t snapshot_index = c->nodes[0].snapshot.index;
    int more = compacted == EMBRAFT_OK && cluster_propose_all(c, 30, 10);
    uint64_t last = c->nodes[0].delivered;

    /* The host lost its state machine (applied 0): the node asks it to
     * restore the snapshot, then delivers what follows. */
    cluster_stop(c, 0);
    memset(c->nodes[0].applied, 0, sizeof c->nodes[0].applied);
    embraft_status restarted = cluster_start(c, 0, 0);
    int caught_up = restarted == EMBRAFT_OK &&
                    cluster_run_until(c, cluster_all_applied, &last, COMMIT_TIMEOUT_MS);
    int complete = caught_up && cluster_applied_each_once(c, 0, 0, 40);
    int broken = c->broken;
    cluster_free(c);
    CHECK(!broken);
    CHECK(ok);
    CHECK_OK(compacted);
    CHECK(snapshot_index > 0);
    CHECK(more);
    CHECK_OK(restarted);
    CHECK(caught_up);
    CHECK(complete);
}

static int all_quiescent(struct cluster *c, const void *unused) {
    (void)unused;
    for (size_t i = 0; i < c->count; i++) {
        uint64_t quiescent = 0;
        embraft_status_report *report = NULL;
        if (c->nodes[i].node == NULL || embraft_node_status(c->nodes[i].node, &report) != EMBRAFT_OK) {
            return 0;
        }
        embraft_status status = embraft_status_report_get(report, EMBRAFT_FIELD_QUIESCENT, &quiescent);
        embraft_status_report_free(report);
        if (status != EMBRAFT_OK || quiescent != 1) {
            return 0;
        }
    }
    return 1;
}

/* With embraft_config_set_quiesce_ticks an idle cluster goes quiet (every
 * node reports it), stays quiet for longer than an election timeout (no
 * node campaigns), and a proposal wakes it and commits. */
static void idle_nodes_go_quiet_and_a_proposal_wakes_them(void) {
    struct cluster *c = cluster_new(3);
    CHECK(c != NULL);
    c->quiesce_ticks = 3;
    for (size_t i = 0; i < 3; i++) {
        CHECK_OK(cluster_start(c, i, 0));
    }
    int elected = cluster_run_until(c, cluster_has_leader, NULL, ELECTION_TIMEOUT_MS);
    int committed = elected && cluster_propose_all(c, 0, 10);
    int quiet = committed && cluster_run_until(c, all_quiescent, NULL, COMMIT_TIMEOUT_MS);
    int leader = cluster_agreed_leader(c);
    int stayed = quiet && cluster_run_for(c, 3 * MAX_ELECTION_TIMEOUT_MS) &&
                 all_quiescent(c, NULL) && cluster_agreed_leader(c) == leader;
    int woke = stayed && cluster_propose_all(c, 10, 10);
    uint64_t target = cluster_max_delivered(c);
    int applied = woke && cluster_run_until(c, cluster_all_applied, &target, COMMIT_TIMEOUT_MS) &&
                  cluster_applied_each_once(c, 0, 0, 20);
    int quiet_again = applied && cluster_run_until(c, all_quiescent, NULL, COMMIT_TIMEOUT_MS);
    int broken = c->broken;
    cluster_free(c);
    CHECK(!broken);
    CHECK(elected);
    CHECK(committed);
    CHECK(quiet);
    CHECK(stayed);
    CHECK(woke);
    CHECK(applied);
    CHECK(quiet_again);
}

const struct test_case cluster_tests[] = {
    {"cluster: three nodes elect and apply 1000 proposals in the same order",
     three_nodes_elect_and_apply_1000_proposals_in_the_same_order},
    {"cluster: three inline nodes elect and apply 1000 proposals in the same order",
     three_inline_nodes_elect_and_apply_1000_proposals_in_the_same_order},
    {"cluster: leader freed, new one elected, restarted node catches up",
     leader_freed_new_one_elected_and_restarted_node_catches_up},
    {"cluster: pwrite nodes commit, and a restart with the mapped method catches up",
     pwrite_nodes_commit_and_a_restart_with_the_mapped_method_catches_up},
    {"cluster: single node restart redelivers after the applied index",
     single_node_restart_redelivers_after_the_applied_index},
    {"cluster: a fourth node joins through a membership change",
     fourth_node_joins_through_a_membership_change},
    {"cluster: leadership transfer and read index", leadership_transfer_and_read_index},
    {"cluster: a lagging node catches up through a snapshot",
     lagging_node_catches_up_through_a_snapshot},
    {"cluster: a lagging inline node catches up through a snapshot",
     lagging_inline_node_catches_up_through_a_snapshot},
    {"cluster: restart after compaction restores the snapshot first",
     restart_after_compaction_restores_the_snapshot_first},
    {"cluster: idle nodes go quiet, and a proposal wakes them",
     idle_nodes_go_quiet_and_a_proposal_wakes_them},
    {NULL, NULL},
};
