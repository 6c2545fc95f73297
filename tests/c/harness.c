/*
 * The runner of the C API suite. Usage: embraft_c_tests [name-substring...]
 * Runs every test whose name contains one of the arguments (all without
 * arguments) and ends with "N passed, M failed"; exits non-zero on failure.
 */
#define _XOPEN_SOURCE 700
#include "harness.h"

#include <ftw.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int harness_test_failed;

static char base_dir[] = "/tmp/embraft-c-tests-XXXXXX";
static int base_dir_made;
static unsigned temp_dir_count;
static char temp_dirs[256][64];

const char *harness_temp_dir(void) {
    if (!base_dir_made) {
        if (mkdtemp(base_dir) == NULL) {
            perror("mkdtemp");
            exit(2);
        }
        base_dir_made = 1;
    }
    if (temp_dir_count >= sizeof temp_dirs / sizeof temp_dirs[0]) {
        fprintf(stderr, "too many temporary directories\n");
        exit(2);
    }
    char *dir = temp_dirs[temp_dir_count];
    snprintf(dir, sizeof temp_dirs[0], "%s/node-%u", base_dir, temp_dir_count);
    temp_dir_count++;
    return dir;
}

static int remove_entry(const char *path, const struct stat *st, int type,
                        struct FTW *ftw) {
    (void)st;
    (void)type;
    (void)ftw;
    return remove(path);
}

static void remove_temp_dirs(void) {
    if (base_dir_made) {
        nftw(base_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
}

void harness_print_config_error(const embraft_config *config) {
    char message[512];
    if (embraft_config_last_error(config, message, sizeof message, NULL) == EMBRAFT_OK) {
        fprintf(stderr, "  config error: %s\n", message);
    }
}

void harness_print_node_error(const embraft_node *node) {
    char message[512];
    if (embraft_node_last_error(node, message, sizeof message, NULL) == EMBRAFT_OK) {
        fprintf(stderr, "  node error: %s\n", message);
    }
}

unsigned long long harness_now_ms(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (unsigned long long)now.tv_sec * 1000u + (unsigned long long)now.tv_nsec / 1000000u;
}

void harness_sleep_ms(unsigned ms) {
    struct timespec pause;
    pause.tv_sec = ms / 1000u;
    pause.tv_nsec = (long)(ms % 1000u) * 1000000L;
    nanosleep(&pause, NULL);
}

static int selected(const char *name, int argc, char **argv) {
    if (argc <= 1) {
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        if (strstr(name, argv[i]) != NULL) {
            return 1;
        }
    }
    return 0;
}

int main(int argc, char **argv) {
    const struct test_case *suites[] = {api_tests, args_tests, cluster_tests, membership_tests,
                                        snapshot_tests, runtime_tests};
    int passed = 0;
    int failed = 0;
    for (size_t s = 0; s < sizeof suites / sizeof suites[0]; s++) {
        for (const struct test_case *test = suites[s]; test->name != NULL; test++) {
            if (!selected(test->name, argc, argv)) {
                continue;
            }
            unsigned long long start = harness_now_ms();
            harness_test_failed = 0;
            test->run();
            unsigned long long elapsed = harness_now_ms() - start;
            if (harness_test_failed) {
                failed++;
                printf("FAIL %s (%llu ms)\n", test->name, elapsed);
            } else {
                passed++;
                printf("ok   %s (%llu ms)\n", test->name, elapsed);
            }
            fflush(stdout);
        }
    }
    remove_temp_dirs();
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
