/* The event loop: one thread polls the listener, every connection, the
 * node's readiness fd and the tick timer. */
#ifndef RAFTD_SERVER_H
#define RAFTD_SERVER_H

#include <signal.h>

#include "raftd.h"

/* Runs until `*stop` is set (by a signal handler, which touches nothing
 * else) or the node fails. Returns 0 on a requested stop. */
int server_run(struct raftd *r, volatile sig_atomic_t *stop);

#endif
