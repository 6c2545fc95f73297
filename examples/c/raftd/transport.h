/* The Raft stream transport of WIRE.md: one outbound stream per peer node
 * (handshake, frames, reconnect with backoff) and the inbound streams of
 * peers, whose frames go to the node (embraft_node_step) or, on a sharded
 * node, hold group frames for the runtime (embraft_runtime_step_frame;
 * the hello's group-frames flag tells them apart). */
#ifndef RAFTD_TRANSPORT_H
#define RAFTD_TRANSPORT_H

#include "raftd.h"

#define WIRE_MAGIC "EMRF"
#define WIRE_VERSION 1
#define WIRE_HELLO_LEN 32
#define WIRE_REPLY_LEN 16
#define WIRE_MAX_FRAME (64u * 1024 * 1024)
#define PEER_QUEUE_CAPACITY 1024

/* Queues one frame's payload for `to` (copied): an encoded message, or a
 * group frame on a sharded node; starts a connection when none is up. */
void transport_send(struct raftd *r, uint64_t to, const uint8_t *data, size_t len);
/* Queues a group frame for `to`, cut into several when it is longer than
 * a stream frame may be (group_frame_run); a message no frame can carry
 * is dropped, for Raft to send again. */
void transport_send_group_frame(struct raftd *r, uint64_t to, const uint8_t *frame, size_t len);
/* Dials peers whose backoff has run out; returns the time of the next
 * retry (0: none). */
uint64_t transport_on_timer(struct raftd *r, uint64_t now);
/* Events of CONN_PEER_OUT connections. */
void transport_on_outbound_readable(struct raftd *r, int index);
void transport_on_outbound_writable(struct raftd *r, int index);
void transport_on_outbound_closed(struct raftd *r, int index, const char *why);
/* New data on a CONN_PEER_IN connection: the hello, then frames. */
void transport_on_inbound(struct raftd *r, int index);
void transport_free(struct raftd *r);

#endif
