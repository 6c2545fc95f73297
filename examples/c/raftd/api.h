/* The HTTP API of RAFTD.md: the endpoints, forwarding to the leader, and
 * the requests that wait for the node (proposals, read indexes, /join and
 * /leave stages). */
#ifndef RAFTD_API_H
#define RAFTD_API_H

#include "raftd.h"

/* New data on a CONN_HTTP connection. */
void api_on_http(struct raftd *r, int index);
/* A forwarded request's connection closed (why == NULL: the leader's
 * answer is complete); relay the answer to the waiting client. */
void api_on_proxy_closed(struct raftd *r, struct conn *proxy, const char *why);

/* Results from the node's ready batches. */
void api_on_outcome(struct raftd *r, const struct shard *s, uint64_t proposal, uint32_t outcome,
                    uint64_t index);
void api_on_read(struct raftd *r, const struct shard *s, uint64_t context, uint32_t result,
                 uint64_t index);
/* Entries were applied: serve the reads that waited for them. */
void api_after_apply(struct raftd *r);
/* Deadlines and retries. */
void api_on_timer(struct raftd *r, uint64_t now);

int api_pending_self_address(struct raftd *r);
void api_record_self_address(struct raftd *r);
/* Asks the cluster to add this node to the groups whose `needs_join` is
 * set, one after the other (RAFTD.md "Shards", joining step 3), unless
 * that is under way. */
void api_join_groups(struct raftd *r);

#endif
