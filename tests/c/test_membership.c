/*
 * Membership changes through the C API while the host keeps proposing:
 * growing a cluster (a learner promoted once caught up, and a joint
 * change), shrinking it with the leader among the removed, and the rules
 * around changes: one at a time, a removed leader steps down, a removed
 * node that keeps running stays harmless.
 */
#include "cluster.h"

#include <string.h>

static uint64_t status_field(const embraft_node *node, uint32_t field) {
    embraft_status_report *report = NULL;
    uint64_t value = 0;
    if (embraft_node_status(node, &report) == EMBRAFT_OK) {
        embraft_status_report_get(report, field, &value);
        embraft_status_report_free(report);
    }
    return value;
}

/* Proposes a single-step change on the agreed leader; returns its outcome
 * (EMBRAFT_PROPOSAL_*), or 0 when there was no leader or no outcome. */
static uint32_t change_on_leader(struct cluster *c, uint32_t change, uint64_t node_id) {
    int leader = cluster_agreed_leader(c);
    uint64_t id = 0;
    if (leader < 0 ||
        embraft_node_propose_conf_change(c->nodes[leader].node, change, node_id, &id) !=
            EMBRAFT_OK) {
        return 0;
    }
    return cluster_await_outcome(c, (size_t)leader, id, COMMIT_TIMEOUT_MS);
}

/* Proposes, on the agreed leader, a joint change to exactly these voters
 * (no learners); returns its outcome as change_on_leader does. */
static uint32_t move_on_leader(struct cluster *c, const uint64_t *voters, size_t count) {
    int leader = cluster_agreed_leader(c);
    uint64_t id = 0;
    if (leader < 0 || embraft_node_propose_membership(c->nodes[leader].node, voters, count,
                                                      NULL, 0, &id) != EMBRAFT_OK) {
        return 0;
    }
    return cluster_await_outcome(c, (size_t)leader, id, COMMIT_TIMEOUT_MS);
}

/* The leader's progress shows peer *(const uint64_t *)peer_id matched
 * through the leader's commit index: a learner there may be promoted. */
static int peer_caught_up(struct cluster *c, const void *peer_id) {
    uint64_t peer = *(const uint64_t *)peer_id;
    embraft_status_report *report = NULL;
    int leader = cluster_agreed_leader(c);
    if (leader < 0 || embraft_node_status(c->nodes[leader].node, &report) != EMBRAFT_OK) {
        return 0;
    }
    uint64_t commit = 0;
    size_t peers = 0;
    int caught_up = 0;
    embraft_status_report_get(report, EMBRAFT_FIELD_COMMIT, &commit);
    embraft_status_report_peer_count(report, &peers);
    for (size_t p = 0; p < peers; p++) {
        uint64_t id = 0, match = 0;
        embraft_status_report_peer_get(report, p, EMBRAFT_PEER_ID, &id);
        embraft_status_report_peer_get(report, p, EMBRAFT_PEER_MATCH_INDEX, &match);
        caught_up |= id == peer && match >= commit;
    }
    embraft_status_report_free(report);
    return caught_up;
}

/* Promotes a learner once it has caught up. While proposals continue the
 * commit index moves on, so the leader may still find it behind
 * (EMBRAFT_PROPOSAL_DROPPED_LEARNER_BEHIND): wait and ask again. */
static uint32_t promote_when_caught_up(struct cluster *c, uint64_t learner) {
    uint32_t outcome = 0;
    for (int attempt = 0; attempt < 20; attempt++) {
        if (!cluster_run_until(c, peer_caught_up, &learner, COMMIT_TIMEOUT_MS)) {
            return 0;
        }
        outcome = change_on_leader(c, EMBRAFT_CONF_PROMOTE_LEARNER, learner);
        if (outcome != EMBRAFT_PROPOSAL_DROPPED_LEARNER_BEHIND) {
            return outcome;
        }
    }
    return outcome;
}

static int leader_other_than(struct cluster *c, const void *old) {
    int leader = cluster_agreed_leader(c);
    return leader >= 0 && (size_t)leader != *(const size_t *)old;
}

/* The stream committed more than *(const size_t *)count proposals. */
static int stream_committed_more(struct cluster *c, const void *count) {
    return cluster_stream_tally(c, c->stream).committed > *(const size_t *)count;
}

/* Load goes on: some proposal made since the last call commits. */
static int load_continues(struct cluster *c, size_t *committed) {
    int more = cluster_run_until(c, stream_committed_more, committed, COMMIT_TIMEOUT_MS);
    *committed = cluster_stream_tally(c, c->stream).committed;
    return more;
}

/* 3 -> 4 (learner, then promoted) -> 5 (joint change) -> 3 (joint change
 * removing the leader and one more), with the stream proposing all along. */
static int grow_and_shrink(struct cluster *c, struct proposal_stream *s) {
    for (size_t i = 0; i < 3; i++) {
        REQUIRE(cluster_start(c, i, 0) == EMBRAFT_OK);
    }
    REQUIRE(cluster_run_until(c, cluster_has_leader, NULL, ELECTION_TIMEOUT_MS));
    c->stream = s;
    size_t committed = 0;
    REQUIRE(load_continues(c, &committed));

    /* Node 4 starts empty, outside the membership, and joins as a learner:
     * it replicates the log without counting toward any quorum. */
    c->nodes[3].outsider = 1;
    REQUIRE(cluster_start(c, 3, 0) == EMBRAFT_OK);
    REQUIRE(change_on_leader(c, EMBRAFT_CONF_ADD_LEARNER, 4) == EMBRAFT_PROPOSAL_COMMITTED);
    struct membership three_and_learner = {3, 1};
    REQUIRE(cluster_run_until(c, cluster_leader_reports_membership, &three_and_learner,
                              COMMIT_TIMEOUT_MS));
    REQUIRE(promote_when_caught_up(c, 4) == EMBRAFT_PROPOSAL_COMMITTED);
    c->nodes[3].outsider = 0;
    struct membership four = {4, 0};
    REQUIRE(cluster_run_until(c, cluster_leader_reports_membership, &four, COMMIT_TIMEOUT_MS));
    REQUIRE(load_continues(c, &committed));

    /* Node 5 joins through a joint change to the five-voter target, which
     * the leader leaves by itself once it commits. */
    c->nodes[4].outsider = 1;
    REQUIRE(cluster_start(c, 4, 0) == EMBRAFT_OK);
    const uint64_t all_five[] = {1, 2, 3, 4, 5};
    REQUIRE(move_on_leader(c, all_five, 5) == EMBRAFT_PROPOSAL_COMMITTED);
    c->nodes[4].outsider = 0;
    struct membership five = {5, 0};
    REQUIRE(cluster_run_until(c, cluster_leader_reports_membership, &five, COMMIT_TIMEOUT_MS));
    REQUIRE(load_continues(c, &committed));
    uint64_t target = cluster_max_delivered(c);
    REQUIRE(cluster_run_until(c, cluster_all_applied, &target, COMMIT_TIMEOUT_MS));

    /* Shrink to three of the four followers: the leader and the last of
     * the others leave, in one joint change. */
    int leader = cluster_agreed_leader(c);
    REQUIRE(leader >= 0);
    size_t old_leader = (size_t)leader, removed_follower = 0;
    uint64_t keep[3];
    size_t kept = 0;
    for (size_t i = 0; i < 5; i++) {
        if (i == old_leader) {
            continue;
        }
        if (kept < 3) {
            keep[kept++] = c->nodes[i].id;
        } else {
            removed_follower = i;
        }
    }
    REQUIRE(move_on_leader(c, keep, 3) == EMBRAFT_PROPOSAL_COMMITTED);
    c->nodes[old_leader].outsider = 1;
    c->nodes[removed_follower].outsider = 1;

    /* The old leader steps down once leaving the joint configuration is in
     * force; the three that remain elect one of their own. */
    REQUIRE(cluster_run_until(c, leader_other_than, &old_leader, ELECTION_TIMEOUT_MS * 3));
    REQUIRE(status_field(c->nodes[old_leader].node, EMBRAFT_FIELD_ROLE) != EMBRAFT_ROLE_LEADER);
    struct membership three = {3, 0};
    REQUIRE(cluster_run_until(c, cluster_leader_reports_membership, &three, COMMIT_TIMEOUT_MS));
    REQUIRE(load_continues(c, &committed));

    /* The two removed nodes keep running (ticking, receiving whatever is
     * sent to them), yet over several election timeouts the leader and
     * the term stay the same: neither disturbs the cluster. */
    leader = cluster_agreed_leader(c);
    REQUIRE(leader >= 0);
    uint64_t term = status_field(c->nodes[leader].node, EMBRAFT_FIELD_TERM);
    REQUIRE(cluster_run_for(c, 4 * MAX_ELECTION_TIMEOUT_MS));
    REQUIRE(cluster_agreed_leader(c) == leader);
    for (size_t i = 0; i < 5; i++) {
        uint64_t node_term = status_field(c->nodes[i].node, EMBRAFT_FIELD_TERM);
        REQUIRE(c->nodes[i].outsider ? node_term <= term : node_term == term);
    }
    REQUIRE(load_continues(c, &committed));

    /* Stop proposing and let everything settle: every proposal has an
     * outcome and the three members applied the same log. */
    s->stopped = 1;
    REQUIRE(cluster_run_until(c, cluster_stream_settled, s, COMMIT_TIMEOUT_MS));
    target = cluster_max_delivered(c);
    REQUIRE(cluster_run_until(c, cluster_all_applied, &target, COMMIT_TIMEOUT_MS));
    REQUIRE(cluster_logs_agree(c));
    REQUIRE(cluster_stream_verify(c, s));
    for (size_t i = 0; i < 5; i++) {
        REQUIRE(c->nodes[i].outsider || c->nodes[i].delivered == target);
    }
    return 1;
}

static void grow_from_three_to_five_and_shrink_to_three_while_proposing(void) {
    static struct proposal_stream stream;
    memset(&stream, 0, sizeof stream);
    /* Enough that proposals are in flight while every change commits,
     * few enough to stay within the harness's log (CLUSTER_MAX_INDEX). */
    stream.per_tick = 5;
    stream.window = 16;
    struct cluster *c = cluster_new(5);
    CHECK(c != NULL);
    c->founders = 3;
    int ok = grow_and_shrink(c, &stream);
    struct stream_tally tally = cluster_stream_tally(c, &stream);
    printf("     %zu proposals: %zu committed, %zu dropped, %zu unknown, %zu pending\n",
           stream.count, tally.committed, tally.dropped, tally.unknown, tally.pending);
    int broken = c->broken;
    cluster_free(c);
    CHECK(!broken);
    CHECK(ok);
}

/* A single-step removal of the leader by itself. */
static int leader_removes_itself(struct cluster *c) {
    for (size_t i = 0; i < 3; i++) {
        REQUIRE(cluster_start(c, i, 0) == EMBRAFT_OK);
    }
    REQUIRE(cluster_run_until(c, cluster_has_leader, NULL, ELECTION_TIMEOUT_MS));
    REQUIRE(cluster_propose_all(c, 0, 20));
    int leader = cluster_agreed_leader(c);
    REQUIRE(leader >= 0);
    size_t old_leader = (size_t)leader;
    REQUIRE(change_on_leader(c, EMBRAFT_CONF_REMOVE_NODE, old_leader + 1) ==
            EMBRAFT_PROPOSAL_COMMITTED);
    c->nodes[old_leader].outsider = 1;

    /* Once the removal is in force it is no leader any more, and the two
     * that remain elect a new one and go on committing. */
    REQUIRE(cluster_run_until(c, leader_other_than, &old_leader, ELECTION_TIMEOUT_MS * 3));
    REQUIRE(status_field(c->nodes[old_leader].node, EMBRAFT_FIELD_ROLE) != EMBRAFT_ROLE_LEADER);
    struct membership two = {2, 0};
    REQUIRE(cluster_run_until(c, cluster_leader_reports_membership, &two, COMMIT_TIMEOUT_MS));
    REQUIRE(cluster_propose_all(c, 20, 20));
    uint64_t target = cluster_max_delivered(c);
    REQUIRE(cluster_run_until(c, cluster_all_applied, &target, COMMIT_TIMEOUT_MS));
    REQUIRE(cluster_logs_agree(c));

    /* The removed node still runs, and refuses proposals: it is no leader. */
    uint64_t id = 0;
    REQUIRE(embraft_node_propose(c->nodes[old_leader].node, (const uint8_t *)"x", 1, &id) ==
            EMBRAFT_OK);
    REQUIRE(cluster_await_outcome(c, old_leader, id, COMMIT_TIMEOUT_MS) ==
            EMBRAFT_PROPOSAL_DROPPED_NOT_LEADER);
    return 1;
}

static void a_leader_that_removes_itself_steps_down_and_the_rest_elect_a_new_one(void) {
    struct cluster *c = cluster_new(3);
    CHECK(c != NULL);
    int ok = leader_removes_itself(c);
    int broken = c->broken;
    cluster_free(c);
    CHECK(!broken);
    CHECK(ok);
}

static int one_change_at_a_time(struct cluster *c) {
    for (size_t i = 0; i < 3; i++) {
        REQUIRE(cluster_start(c, i, 0) == EMBRAFT_OK);
    }
    REQUIRE(cluster_run_until(c, cluster_has_leader, NULL, ELECTION_TIMEOUT_MS));
    int agreed = cluster_agreed_leader(c);
    REQUIRE(agreed >= 0);
    size_t leader = (size_t)agreed;
    const embraft_node *node = c->nodes[leader].node;

    /* Two changes in a row: the second reaches the leader while the first
     * is not in force yet, and is refused. Nodes 4 and 5 never run. */
    uint64_t first = 0, second = 0, joint = 0;
    REQUIRE(embraft_node_propose_conf_change(node, EMBRAFT_CONF_ADD_LEARNER, 4, &first) ==
            EMBRAFT_OK);
    REQUIRE(embraft_node_propose_conf_change(node, EMBRAFT_CONF_ADD_LEARNER, 5, &second) ==
            EMBRAFT_OK);
    const uint64_t voters[] = {1, 2, 3}, learners[] = {4, 5};
    REQUIRE(embraft_node_propose_membership(node, voters, 3, learners, 2, &joint) == EMBRAFT_OK);
    REQUIRE(cluster_await_outcome(c, leader, first, COMMIT_TIMEOUT_MS) ==
            EMBRAFT_PROPOSAL_COMMITTED);
    REQUIRE(cluster_await_outcome(c, leader, second, COMMIT_TIMEOUT_MS) ==
            EMBRAFT_PROPOSAL_DROPPED_CONF_CHANGE_PENDING);
    REQUIRE(cluster_await_outcome(c, leader, joint, COMMIT_TIMEOUT_MS) ==
            EMBRAFT_PROPOSAL_DROPPED_CONF_CHANGE_PENDING);

    /* Once the first is in force, the next one is taken. */
    REQUIRE(change_on_leader(c, EMBRAFT_CONF_ADD_LEARNER, 5) == EMBRAFT_PROPOSAL_COMMITTED);
    struct membership three_and_two = {3, 2};
    REQUIRE(cluster_run_until(c, cluster_leader_reports_membership, &three_and_two,
                              COMMIT_TIMEOUT_MS));

    /* Learner 4 has not replicated anything (it never started): promoting
     * it would make a voter that cannot vote, and is refused. Changes that
     * make no sense from the membership in force are refused too. */
    REQUIRE(change_on_leader(c, EMBRAFT_CONF_PROMOTE_LEARNER, 4) ==
            EMBRAFT_PROPOSAL_DROPPED_LEARNER_BEHIND);
    REQUIRE(change_on_leader(c, EMBRAFT_CONF_REMOVE_NODE, 9) ==
            EMBRAFT_PROPOSAL_DROPPED_CONF_CHANGE_INVALID);
    REQUIRE(change_on_leader(c, EMBRAFT_CONF_PROMOTE_LEARNER, 2) ==
            EMBRAFT_PROPOSAL_DROPPED_CONF_CHANGE_INVALID);
    struct membership unchanged = {3, 2};
    REQUIRE(cluster_leader_reports_membership(c, &unchanged));
    return 1;
}

static void a_second_membership_change_is_refused_while_one_is_pending(void) {
    struct cluster *c = cluster_new(5);
    CHECK(c != NULL);
    c->founders = 3;
    int ok = one_change_at_a_time(c);
    int broken = c->broken;
    cluster_free(c);
    CHECK(!broken);
    CHECK(ok);
}

const struct test_case membership_tests[] = {
    {"membership: grow from three to five and shrink to three while proposing",
     grow_from_three_to_five_and_shrink_to_three_while_proposing},
    {"membership: a leader that removes itself steps down, the rest elect a new one",
     a_leader_that_removes_itself_steps_down_and_the_rest_elect_a_new_one},
    {"membership: a second change is refused while one is pending",
     a_second_membership_change_is_refused_while_one_is_pending},
    {NULL, NULL},
};
