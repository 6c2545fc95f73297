/* Non-blocking sockets and the connection table. */
#ifndef RAFTD_NET_H
#define RAFTD_NET_H

#include "raftd.h"

/* Input limits per kind: an HTTP request is headers plus a 1 MiB value; a
 * peer frame is at most 64 MiB (WIRE.md). */
#define HTTP_IN_LIMIT (KV_MAX_VALUE + 64 * 1024)
#define PEER_IN_LIMIT (64u * 1024 * 1024 + 4)
#define OUT_LIMIT (72u * 1024 * 1024)

/* Listens on host:port (non-blocking); returns the fd or -1. */
int net_listen(const char *host, unsigned port);
/* Starts a non-blocking connect to "host:port"; returns the fd or -1. */
int net_connect(const char *addr);
/* Connects, blocking up to timeout_ms; returns a blocking fd or -1. */
int net_connect_blocking(const char *addr, int timeout_ms);

/* Takes a free slot for `fd`; returns its index, or -1 (fd closed) when
 * the table is full. */
int conn_open(struct raftd *r, int fd, enum conn_kind kind, int connecting);
/* Closes a connection and lets its owner know (transport, api). */
void conn_close(struct raftd *r, int index, const char *why);
/* The connection at `index` if it is still the use `serial` names. */
struct conn *conn_get(struct raftd *r, int index, uint64_t serial);
/* Reads what is available into `in`. Returns 1 if data came, 0 on EOF, -1
 * on error or a full buffer. */
int conn_read(struct conn *c);
/* Writes what it can of `out`. Returns 0, or -1 on error. */
int conn_flush(struct conn *c);

#endif
