/* raftd: a replicated key/value server on embraft (docs/RAFTD.md).
 *
 *   raftd [-h HOST] [-p PORT] [-join HOST:PORT] [-shards N] [-v] [-debug] [-trace] DATA-DIR
 *
 * main.c handles the command line, the node's identity (node.json), the
 * start-up cases (restart, join, found) and signals; server.c runs the
 * event loop. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "http.h"
#include "json.h"
#include "net.h"
#include "node.h"
#include "raftd.h"
#include "server.h"
#include "transport.h"

#define JOIN_ATTEMPTS 30
#define JOIN_TIMEOUT_MS 15000
/* RAFTD.md "Shards": N from 1 to 65536. */
#define MAX_SHARDS 65536
/* node.json: an identity and at most a join answer's addresses. */
#define IDENTITY_MAX (1024 * 1024)

static volatile sig_atomic_t stop_requested = 0;

/* Only sets a flag: the loop notices within one tick. Never calls into the
 * library. */
static void on_signal(int signal_number) {
    (void)signal_number;
    stop_requested = 1;
}

static void usage(void) {
    fprintf(stderr,
            "usage: raftd [-h HOST] [-p PORT] [-join HOST:PORT] [-shards N] [-v] [-debug] [-trace]\n"
            "             DATA-DIR\n"
            "  -h HOST        host name to advertise and listen on (default localhost)\n"
            "  -p PORT        port for HTTP and the Raft transport (default 4001)\n"
            "  -join ADDR     join the cluster of the node at HOST:PORT\n"
            "  -shards N      spread the keys over N Raft groups, 1 to 65536 (default 1); a\n"
            "                 joining or restarting node takes the cluster's number\n"
            "  -v             log role and membership changes\n"
            "  -debug         also log embraft's debug lines\n"
            "  -trace         also log embraft's trace lines\n");
}

struct options {
    const char *host;
    unsigned port;
    const char *join;
    uint64_t shards;
    int shards_given;
    const char *data_dir;
    int verbose;
    uint32_t log_level;
};

static int parse_options(int argc, char **argv, struct options *o) {
    o->host = "localhost";
    o->port = 4001;
    o->join = NULL;
    o->shards = 1;
    o->shards_given = 0;
    o->data_dir = NULL;
    o->verbose = 0;
    o->log_level = EMBRAFT_LOG_OFF;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        int has_value = i + 1 < argc;
        if (strcmp(arg, "-h") == 0 && has_value) {
            o->host = argv[++i];
        } else if (strcmp(arg, "-p") == 0 && has_value) {
            char *end = NULL;
            long port = strtol(argv[++i], &end, 10);
            if (*end != '\0' || port <= 0 || port > 65535) {
                fprintf(stderr, "raftd: bad port %s\n", argv[i]);
                return -1;
            }
            o->port = (unsigned)port;
        } else if (strcmp(arg, "-join") == 0 && has_value) {
            o->join = argv[++i];
        } else if (strcmp(arg, "-shards") == 0 && has_value) {
            if (parse_u64(argv[++i], &o->shards) != 0 || o->shards < 1 || o->shards > MAX_SHARDS) {
                fprintf(stderr, "raftd: bad number of shards %s (1 to %d)\n", argv[i], MAX_SHARDS);
                return -1;
            }
            o->shards_given = 1;
        } else if (strcmp(arg, "-v") == 0) {
            o->verbose = 1;
            if (o->log_level < EMBRAFT_LOG_INFO) o->log_level = EMBRAFT_LOG_INFO;
        } else if (strcmp(arg, "-debug") == 0) {
            if (o->log_level < EMBRAFT_LOG_DEBUG) o->log_level = EMBRAFT_LOG_DEBUG;
        } else if (strcmp(arg, "-trace") == 0) {
            o->log_level = EMBRAFT_LOG_TRACE;
        } else if (arg[0] == '-' && arg[1] != '\0') {
            fprintf(stderr, "raftd: unknown or incomplete option %s\n", arg);
            return -1;
        } else if (o->data_dir == NULL) {
            o->data_dir = arg;
        } else {
            fprintf(stderr, "raftd: more than one data directory given\n");
            return -1;
        }
    }
    if (o->data_dir == NULL) {
        fprintf(stderr, "raftd: the data directory is required\n");
        return -1;
    }
    return 0;
}

static int read_file(const char *path, char *out, size_t cap, size_t *len) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        return -1;
    }
    ssize_t n = read(fd, out, cap - 1);
    close(fd);
    if (n < 0) {
        return -1;
    }
    out[n] = '\0';
    *len = (size_t)n;
    return 0;
}

/* Writes node.json atomically (temporary file, fsync, rename, directory
 * fsync), so a crash never leaves half an identity. */
static int write_identity(const struct raftd *r, const struct kv_store *join_book) {
    char path[4096], temporary[4200];
    snprintf(path, sizeof path, "%s/node.json", r->data_dir);
    snprintf(temporary, sizeof temporary, "%s.tmp", path);
    struct buffer text;
    buffer_init(&text, IDENTITY_MAX);
    int failed = buffer_printf(&text, "{\"id\": \"%llu\", \"cluster_id\": \"%llu\"",
                               (unsigned long long)r->id, (unsigned long long)r->cluster_id);
    /* A one-group node's node.json stays as it always was. A sharded
     * joiner keeps its join answer's addresses: restarted before group 1's
     * log reached it, it still knows whom to answer and whom to ask for
     * the groups it has not joined. */
    if (r->shard_count > 1) {
        failed = failed ||
                 buffer_printf(&text, ", \"shards\": %llu", (unsigned long long)r->shard_count);
        if (join_book->peer_count > 0) {
            failed = failed || buffer_printf(&text, ", \"peers\": ") || peers_json(&text, join_book);
        }
    }
    failed = failed || buffer_printf(&text, "}\n");
    int fd = failed ? -1 : open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        buffer_free(&text);
        return -1;
    }
    int ok = write(fd, text.data, text.len) == (ssize_t)text.len && fsync(fd) == 0;
    buffer_free(&text);
    close(fd);
    if (!ok || rename(temporary, path) != 0) {
        return -1;
    }
    int dir = open(r->data_dir, O_RDONLY);
    if (dir >= 0) {
        fsync(dir);
        close(dir);
    }
    return 0;
}

/* The "shards" of node.json or a join answer: 1 when absent (RAFTD.md
 * "Shards"); -1 unless a number from 1 to MAX_SHARDS. */
static int get_shard_count(const char *text, size_t len, uint64_t *count) {
    *count = 1;
    if (!json_has_member(text, len, "shards")) {
        return 0;
    }
    return json_get_id(text, len, "shards", count) == 0 && *count <= MAX_SHARDS ? 0 : -1;
}

static void remember_peer(void *context, const char *name, const char *value) {
    uint64_t id = 0;
    if (parse_u64(name, &id) == 0) {
        kv_hint_peer(context, id, value);
    }
}

/* 1 if node.json was read (its "peers", if any, into `book`), 0 if absent,
 * -1 if unreadable or malformed. */
static int read_identity(struct raftd *r, struct kv_store *book) {
    static char text[IDENTITY_MAX + 1];
    char path[4096];
    size_t len = 0;
    snprintf(path, sizeof path, "%s/node.json", r->data_dir);
    if (read_file(path, text, sizeof text, &len) != 0) {
        return errno == ENOENT ? 0 : -1;
    }
    if (json_get_id(text, len, "id", &r->id) != 0 ||
        json_get_id(text, len, "cluster_id", &r->cluster_id) != 0 ||
        get_shard_count(text, len, &r->shard_count) != 0 ||
        (json_has_member(text, len, "peers") &&
         json_each_member(text, len, "peers", remember_peer, book) != 0)) {
        fprintf(stderr, "raftd: %s is malformed\n", path);
        return -1;
    }
    return 1;
}

/* One POST /join for group 1; returns 0 with the cluster id, the number of
 * shards and the peers (into `book`) learned, 1 to retry, -1 on a definite
 * refusal. */
static int try_join(struct raftd *r, const char *addr, struct kv_store *book) {
    char body[512];
    int body_len = snprintf(body, sizeof body, "{\"id\": \"%llu\", \"addr\": \"%s\"}",
                            (unsigned long long)r->id, r->advertise);
    int fd = net_connect_blocking(addr, 2000);
    if (fd < 0) {
        return 1;
    }
    struct buffer request, answer;
    buffer_init(&request, 4096);
    buffer_init(&answer, 1024 * 1024);
    buffer_printf(&request,
                  "POST /join HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                  "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                  addr, body_len, body);
    struct timeval timeout = {JOIN_TIMEOUT_MS / 1000, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    int result = send(fd, request.data, request.len, MSG_NOSIGNAL) == (ssize_t)request.len ? 0 : 1;
    char chunk[4096];
    ssize_t n;
    while (result == 0 && (n = recv(fd, chunk, sizeof chunk, 0)) > 0) {
        if (buffer_append(&answer, chunk, (size_t)n) != 0) {
            result = -1;
        }
    }
    close(fd);
    buffer_free(&request);
    int code = result == 0 ? http_response_code(answer.data, answer.len) : 0;
    size_t body_at = result == 0 ? http_body_offset(answer.data, answer.len) : 0;
    if (result == 0 && (code == 0 || body_at == 0)) {
        result = 1; /* no complete answer: try again */
    }
    const char *json = answer.data != NULL ? (const char *)answer.data + body_at : "";
    size_t json_len = answer.len - body_at;
    if (result == 0 && code != 200) {
        fprintf(stderr, "raftd: join through %s: %d: %.*s", addr, code, (int)json_len, json);
        result = code >= 500 ? 1 : -1;
    }
    if (result == 0 && (json_get_id(json, json_len, "cluster_id", &r->cluster_id) != 0 ||
                        get_shard_count(json, json_len, &r->shard_count) != 0 ||
                        json_each_member(json, json_len, "peers", remember_peer, book) != 0)) {
        fprintf(stderr, "raftd: the join answer is malformed\n");
        result = -1;
    }
    buffer_free(&answer);
    return result;
}

static int join_cluster(struct raftd *r, const char *addr, struct kv_store *book) {
    for (int attempt = 0; attempt < JOIN_ATTEMPTS && !stop_requested; attempt++) {
        int result = try_join(r, addr, book);
        if (result <= 0) {
            return result;
        }
        log_line("join through %s: not yet; retrying", addr);
        sleep(1);
    }
    return -1;
}

int main(int argc, char **argv) {
    static struct raftd server; /* large (connection and request tables) */
    struct raftd *r = &server;
    struct options options;
    if (parse_options(argc, argv, &options) != 0) {
        usage();
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_signal;
    sigaction(SIGINT, &action, NULL);
    sigaction(SIGTERM, &action, NULL);

    struct kv_store join_book;
    kv_init(&join_book);
    r->listen_fd = -1;
    r->readiness_fd = -1;
    r->data_dir = options.data_dir;
    r->port = options.port;
    r->log_level = options.log_level;
    log_verbose = options.verbose;
    snprintf(r->host, sizeof r->host, "%s", options.host);
    snprintf(r->advertise, sizeof r->advertise, "%s:%u", options.host, options.port);
    if (mkdir(options.data_dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "raftd: cannot create %s: %s\n", options.data_dir, strerror(errno));
        return 1;
    }

    int known = read_identity(r, &join_book);
    int founding = 0, joining = 0;
    if (known < 0) {
        kv_free(&join_book);
        return 1;
    }
    if (known == 1) {
        log_node_id = r->id;
        if (options.join != NULL) {
            log_line("restarting from %s; -join is ignored", options.data_dir);
        }
    } else {
        r->id = random_id();
        log_node_id = r->id;
        if (options.join != NULL) {
            log_line("joining the cluster through %s as %s", options.join, r->advertise);
            if (join_cluster(r, options.join, &join_book) != 0) {
                log_line("could not join through %s", options.join);
                kv_free(&join_book);
                return 1;
            }
            joining = 1;
            r->join_addr = options.join;
        } else {
            r->cluster_id = random_id();
            r->shard_count = options.shards;
            founding = 1;
        }
        if (write_identity(r, &join_book) != 0) {
            fprintf(stderr, "raftd: cannot write node.json in %s: %s\n", options.data_dir,
                    strerror(errno));
            kv_free(&join_book);
            return 1;
        }
    }
    log_node_id = r->id;
    if (!founding && options.shards_given && options.shards != r->shard_count) {
        log_line("-shards %llu is ignored: the cluster runs %llu", (unsigned long long)options.shards,
                 (unsigned long long)r->shard_count);
    }
    if (shards_init(r) != 0) {
        log_line("out of memory for %llu shards", (unsigned long long)r->shard_count);
        kv_free(&join_book);
        return 1;
    }
    /* The join answer's addresses, until group 1's log replaces them. */
    address_book(r)->peers = join_book.peers;
    address_book(r)->peer_count = join_book.peer_count;
    join_book.peers = NULL;
    join_book.peer_count = 0;
    kv_free(&join_book);
    if (node_start(r, founding, joining) != 0) {
        shards_free(r);
        return 1;
    }
    r->listen_fd = net_listen(options.host, options.port);
    if (r->listen_fd < 0) {
        log_line("cannot listen on %s: %s", r->advertise, strerror(errno));
        node_stop(r);
        shards_free(r);
        return 1;
    }
    char shards[32] = "";
    if (r->shard_count > 1) {
        snprintf(shards, sizeof shards, ", %llu shards", (unsigned long long)r->shard_count);
    }
    log_line("raftd %s serving on %s (cluster %llu, %s%s)", embraft_version(), r->advertise,
             (unsigned long long)r->cluster_id,
             founding ? "founded" : known == 1 ? "restarted" : "joined", shards);

    int status = server_run(r, &stop_requested);

    for (int i = 0; i < MAX_CONNS; i++) {
        conn_close(r, i, NULL);
    }
    close(r->listen_fd);
    node_stop(r);
    transport_free(r);
    shards_free(r);
    log_line("stopped");
    return status == 0 ? 0 : 1;
}
