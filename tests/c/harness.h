/*
 * A tiny test harness for the C API suite: checks that report the failing
 * expression and the library's message, temporary data directories, and a
 * runner that prints "N passed, M failed".
 */
#ifndef EMBRAFT_TEST_HARNESS_H
#define EMBRAFT_TEST_HARNESS_H

#include "embraft.h"

#include <stdio.h>
#include <stdlib.h>

/* Set by CHECK when a check fails; the runner reads it after each test. */
extern int harness_test_failed;

#define CHECK(cond)                                                             \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "  %s:%d: check failed: %s\n", __FILE__, __LINE__,  \
                    #cond);                                                     \
            harness_test_failed = 1;                                            \
            return;                                                             \
        }                                                                       \
    } while (0)

/* Checks that `call` returns `expected`, printing both statuses otherwise. */
#define CHECK_STATUS(call, expected)                                            \
    do {                                                                        \
        embraft_status check_status_got_ = (call);                              \
        embraft_status check_status_want_ = (expected);                         \
        if (check_status_got_ != check_status_want_) {                          \
            fprintf(stderr, "  %s:%d: %s returned %d (%s), expected %d (%s)\n", \
                    __FILE__, __LINE__, #call, (int)check_status_got_,          \
                    embraft_status_str(check_status_got_),                      \
                    (int)check_status_want_,                                    \
                    embraft_status_str(check_status_want_));                    \
            harness_test_failed = 1;                                            \
            return;                                                             \
        }                                                                       \
    } while (0)

#define CHECK_OK(call) CHECK_STATUS(call, EMBRAFT_OK)

/* CHECK for the steps of a scenario that returns 1 on success, so that its
 * caller still frees what it holds: reports the failing expression and
 * makes the scenario return 0. */
#define REQUIRE(cond)                                                           \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "  %s:%d: required: %s\n", __FILE__, __LINE__,      \
                    #cond);                                                     \
            return 0;                                                           \
        }                                                                       \
    } while (0)

/* A test case: a name and a function that returns early on failure. */
struct test_case {
    const char *name;
    void (*run)(void);
};

/* Creates a fresh, empty directory for one node; returns a path owned by
 * the harness, removed when the run ends. */
const char *harness_temp_dir(void);

/* Prints the config's or node's last error message to stderr, prefixed. */
void harness_print_config_error(const embraft_config *config);
void harness_print_node_error(const embraft_node *node);

/* Milliseconds from a monotonic clock. */
unsigned long long harness_now_ms(void);
void harness_sleep_ms(unsigned ms);

/* The suites, each a NULL-terminated list (test_api.c, test_args.c,
 * test_cluster.c, test_membership.c, test_snapshot.c, test_runtime.c). */
extern const struct test_case api_tests[];
extern const struct test_case args_tests[];
extern const struct test_case cluster_tests[];
extern const struct test_case membership_tests[];
extern const struct test_case snapshot_tests[];
extern const struct test_case runtime_tests[];

#endif /* EMBRAFT_TEST_HARNESS_H */
