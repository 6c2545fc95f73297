/* The embraft driver: creates the node (one group) or the runtime (several
 * groups, RAFTD.md "Shards"), ticks it, and handles its ready batches
 * (send messages, apply entries, hand outcomes and read results to the
 * API). The engine_* calls act on one group of either kind, so the API and
 * the transport do not care which one runs. */
#ifndef RAFTD_NODE_H
#define RAFTD_NODE_H

#include "raftd.h"

/* Allocates the shards of `r->shard_count` groups (empty state). */
int shards_init(struct raftd *r);
void shards_free(struct raftd *r);

/* Creates the node or runtime on DATA-DIR/wal: a founder configures itself
 * as the only voter of every group; a joiner or a restarted node
 * configures no peers. */
int node_start(struct raftd *r, int founding, int joining);
void node_stop(struct raftd *r);
void node_tick(struct raftd *r);
/* Handles every batch waiting; returns -1 once the node has failed. */
int node_drain(struct raftd *r);

/* One group of either kind of engine. */
embraft_status engine_propose(struct raftd *r, const struct shard *s, const uint8_t *data,
                              size_t len, uint64_t *proposal);
embraft_status engine_conf_change(struct raftd *r, const struct shard *s, uint32_t change,
                                  uint64_t target, uint64_t *proposal);
embraft_status engine_read_index(struct raftd *r, const struct shard *s, uint64_t context);
embraft_status engine_status(struct raftd *r, const struct shard *s,
                             embraft_status_report **report);
embraft_status engine_metrics(struct raftd *r, const struct shard *s, embraft_metrics *metrics);
/* A peer node could not be reached: every group hears of it. */
void engine_report_unreachable(struct raftd *r, uint64_t peer);
/* A received frame's payload: one message, or a group frame when sharded. */
embraft_status engine_step(struct raftd *r, const uint8_t *data, size_t len);

/* Appends the status JSON of RAFTD.md. */
int node_status_json(struct raftd *r, struct buffer *out);
/* Whether `id` is a voter of the group's membership in force here. */
int node_is_voter(struct raftd *r, const struct shard *s, uint64_t id);

/* Appends the peer address book as a JSON object {"<id>": "host:port"}. */
int peers_json(struct buffer *out, const struct kv_store *kv);

const char *role_name(uint32_t role);
/* Logs a failed embraft call with the node's (runtime's) last error. */
void log_embraft_error(struct raftd *r, const char *what, embraft_status status);

#endif
