/* The embraft node driver: creates the node, ticks it, and handles its
 * ready batches (send messages, apply entries, hand outcomes and read
 * results to the API). */
#ifndef RAFTD_NODE_H
#define RAFTD_NODE_H

#include "raftd.h"

/* Creates the node on DATA-DIR/wal: a founder configures itself as the
 * only voter; a joiner or a restarted node configures no peers. */
int node_start(struct raftd *r, int founding);
void node_stop(struct raftd *r);
void node_tick(struct raftd *r);
/* Handles every batch waiting; returns -1 once the node has failed. */
int node_drain(struct raftd *r);

/* Appends the status JSON of RAFTD.md. */
int node_status_json(struct raftd *r, struct buffer *out);
/* Whether `id` is a voter of the membership in force here. */
int node_is_voter(struct raftd *r, uint64_t id);
/* One field of a fresh status report (0 if it cannot be had). */
uint64_t node_status_field(struct raftd *r, uint32_t field);

/* Appends the peer address book as a JSON object {"<id>": "host:port"}. */
int peers_json(struct buffer *out, const struct kv_store *kv);

const char *role_name(uint32_t role);
/* Logs a failed embraft call with the node's last error. */
void log_embraft_error(struct raftd *r, const char *what, embraft_status status);

#endif
