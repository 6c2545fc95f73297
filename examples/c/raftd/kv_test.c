/* Tests of the key/value state machine's snapshot codec (RAFTD.md
 * "Snapshots") and command limits, without a node:
 *
 *   kv_test docs/vectors/raftd-snapshot-v1.bin
 *
 * The shared test vector decodes to its documented state and that state
 * encodes back to the same bytes; damaged variants are refused with the
 * state left empty; a large state round-trips. Prints "N passed, M failed";
 * run-tests.sh runs it under valgrind when installed (no leaks allowed). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv.h"

static int passed = 0, failed = 0;

static void check(int ok, const char *what) {
    if (ok) {
        passed++;
    } else {
        failed++;
        printf("FAIL %s\n", what);
    }
}

static int to_buffer(void *context, const void *data, size_t len) {
    return buffer_append(context, data, len);
}

/* Encodes `kv` into `out` (emptied first). */
static int encode(const struct kv_store *kv, struct buffer *out) {
    out->len = 0;
    return kv_snapshot_write(kv, to_buffer, out);
}

/* Decodes `len` bytes into `kv`; the refusal reason goes to `why`. */
static int decode(const uint8_t *data, size_t len, struct kv_store *kv, char *why, size_t cap) {
    /* fmemopen refuses a zero-length buffer on some libcs: read from a
     * one-byte buffer opened for `len` bytes instead. */
    static const uint8_t empty[1] = {0};
    FILE *in = fmemopen((void *)(len ? data : empty), len ? len : 1, "rb");
    if (in == NULL) {
        snprintf(why, cap, "fmemopen failed");
        kv_init(kv);
        return -1;
    }
    if (len == 0) {
        fgetc(in); /* at EOF from the start */
    }
    int result = kv_snapshot_read(in, kv, why, cap);
    fclose(in);
    return result;
}

static int has_value(const struct kv_store *kv, const char *key, size_t key_len,
                     const void *value, size_t value_len) {
    const uint8_t *got = NULL;
    size_t got_len = 0;
    return kv_get(kv, key, key_len, &got, &got_len) == 0 && got_len == value_len &&
           memcmp(got, value, value_len) == 0;
}

static uint8_t *read_whole(const char *path, size_t *len) {
    FILE *in = fopen(path, "rb");
    if (in == NULL) {
        return NULL;
    }
    uint8_t *data = malloc(4096);
    *len = data ? fread(data, 1, 4096, in) : 0;
    fclose(in);
    return data;
}

static void test_vector(const uint8_t *vector, size_t len) {
    struct kv_store kv;
    struct buffer out;
    char why[256] = "";
    buffer_init(&out, 1 << 20);
    check(len == 118, "the vector is 118 bytes");
    check(decode(vector, len, &kv, why, sizeof why) == 0, "the vector decodes");
    if (why[0]) {
        printf("     reason: %s\n", why);
    }
    check(kv.key_count == 4 && kv.peer_count == 2, "it holds 4 keys and 2 peers");
    check(has_value(&kv, "Z", 1, "upper", 5), "Z = upper");
    check(has_value(&kv, "a", 1, "1", 1), "a = 1");
    check(has_value(&kv, "alpha", 5, "", 0), "alpha = empty");
    check(has_value(&kv, "\xc3\xa9", 2, "\x00\xff\n", 3), "e-acute = 00 ff 0a");
    const char *first = kv_peer_addr(&kv, 1), *second = kv_peer_addr(&kv, 0x0102030405060708ull);
    check(first && strcmp(first, "127.0.0.1:4001") == 0, "peer 1 at 127.0.0.1:4001");
    check(second && strcmp(second, "localhost:4002") == 0, "peer 0x0102030405060708 at localhost:4002");
    check(encode(&kv, &out) == 0 && out.len == len && memcmp(out.data, vector, len) == 0,
          "the decoded state encodes to the vector, byte for byte");
    kv_free(&kv);

    /* The same state built in another order, through commands. */
    struct buffer command;
    buffer_init(&command, 1 << 20);
    kv_init(&kv);
    const char *keys[] = {"\xc3\xa9", "alpha", "a", "Z"};
    const char *values[] = {"\x00\xff\n", "", "1", "upper"};
    size_t value_lens[] = {3, 0, 1, 5};
    for (int i = 0; i < 4; i++) {
        command.len = 0;
        kv_encode_set(&command, keys[i], strlen(keys[i]), (const uint8_t *)values[i], value_lens[i]);
        kv_apply(&kv, command.data, command.len);
    }
    command.len = 0;
    kv_encode_peer(&command, 0x0102030405060708ull, "localhost:4002");
    kv_apply(&kv, command.data, command.len);
    command.len = 0;
    kv_encode_peer(&command, 1, "127.0.0.1:4001");
    kv_apply(&kv, command.data, command.len);
    check(encode(&kv, &out) == 0 && out.len == len && memcmp(out.data, vector, len) == 0,
          "the state built by commands in another order encodes to the vector");
    kv_free(&kv);
    buffer_free(&command);
    buffer_free(&out);
}

/* One damaged variant: `prefix` bytes of the vector, then `insert`, then
 * the vector from `resume` on. */
static void expect_refused(const uint8_t *vector, size_t len, const char *name, size_t prefix,
                           const void *insert, size_t insert_len, size_t resume) {
    struct buffer damaged;
    struct kv_store kv;
    char why[256] = "", label[160];
    buffer_init(&damaged, 4 << 20);
    buffer_append(&damaged, vector, prefix);
    buffer_append(&damaged, insert, insert_len);
    if (resume < len) {
        buffer_append(&damaged, vector + resume, len - resume);
    }
    int result = decode(damaged.data, damaged.len, &kv, why, sizeof why);
    snprintf(label, sizeof label, "refused: %s", name);
    check(result == -1 && why[0] != '\0' && kv.key_count == 0 && kv.peer_count == 0 &&
              kv.slots == NULL && kv.peers == NULL,
          label);
    kv_free(&kv);
    buffer_free(&damaged);
}

static void test_damaged(const uint8_t *v, size_t len) {
    const size_t peers_at = 12, keys_at = 12 + 26 + 26, first_key = keys_at + 4;
    uint8_t zero8[8] = {0}, swapped[64], big[4], buf[2048];
    expect_refused(v, len, "bad magic", 0, "RDKW", 4, 4);
    expect_refused(v, len, "version 2", 4, "\x02", 1, 5);
    expect_refused(v, len, "trailing byte", len, "", 1, len);
    expect_refused(v, len, "peer id 0", peers_at, zero8, 8, peers_at + 8);
    memcpy(swapped, v + peers_at + 26, 26);
    memcpy(swapped + 26, v + peers_at, 26);
    expect_refused(v, len, "peers out of order", peers_at, swapped, 52, keys_at);
    memcpy(swapped + 26, v + peers_at, 26);
    memcpy(swapped, v + peers_at, 26);
    expect_refused(v, len, "repeated peer", peers_at, swapped, 52, keys_at);
    memcpy(swapped, v + first_key + 14, 10);
    memcpy(swapped + 10, v + first_key, 14);
    expect_refused(v, len, "keys out of order", first_key, swapped, 24, first_key + 24);
    expect_refused(v, len, "empty address", peers_at + 8, zero8, 4, peers_at + 26);
    expect_refused(v, len, "address with NUL", peers_at + 12, zero8, 1, peers_at + 13);
    expect_refused(v, len, "empty key", first_key, zero8, 4, first_key + 5);
    put_u32(buf, 1025);
    memset(buf + 4, 'k', 1025);
    expect_refused(v, len, "key of 1025 bytes", first_key, buf, 4 + 1025, first_key + 5);
    put_u32(big, KV_MAX_VALUE + 1);
    expect_refused(v, len, "value over 1 MiB", first_key + 5, big, 4, first_key + 9);
    expect_refused(v, len, "count beyond the data", keys_at, "\xff\xff\xff\xff", 4, keys_at + 4);
    int truncations_refused = 1;
    for (size_t n = 0; n < len; n++) {
        struct kv_store kv;
        char why[256] = "";
        if (decode(v, n, &kv, why, sizeof why) != -1 || strstr(why, "truncated") == NULL) {
            printf("     prefix of %zu bytes: %s\n", n, why);
            truncations_refused = 0;
        }
        kv_free(&kv);
    }
    check(truncations_refused, "refused: every proper prefix, as truncated");
}

static void test_limits(void) {
    struct kv_store kv;
    struct buffer command;
    static uint8_t big[KV_MAX_VALUE + 1];
    char key[KV_MAX_KEY + 1];
    memset(key, 'k', sizeof key);
    kv_init(&kv);
    buffer_init(&command, 4 << 20);
    command.len = 0;
    kv_encode_set(&command, key, KV_MAX_KEY + 1, (const uint8_t *)"v", 1);
    check(kv_apply(&kv, command.data, command.len) == 0, "a set with a 1025-byte key is ignored");
    command.len = 0;
    kv_encode_set(&command, key, 1, big, sizeof big);
    check(kv_apply(&kv, command.data, command.len) == 0, "a set of a value over 1 MiB is ignored");
    command.len = 0;
    kv_encode_set(&command, key, KV_MAX_KEY, big, KV_MAX_VALUE);
    check(kv_apply(&kv, command.data, command.len) == KV_SET, "a 1024-byte key, 1 MiB value is set");
    command.len = 0;
    kv_encode_delete(&command, key, KV_MAX_KEY + 1);
    check(kv_apply(&kv, command.data, command.len) == 0, "a delete of a 1025-byte key is ignored");
    check(kv.key_count == 1, "one key");
    kv_free(&kv);
    buffer_free(&command);
}

/* Many keys, and values that cross the 64 KiB chunks of the writer. */
static void test_round_trip(void) {
    struct kv_store kv, back;
    struct buffer command, first, second;
    static uint8_t value[KV_MAX_VALUE];
    char key[32], why[256] = "";
    for (size_t i = 0; i < sizeof value; i++) {
        value[i] = (uint8_t)(i * 7);
    }
    kv_init(&kv);
    buffer_init(&command, 4 << 20);
    buffer_init(&first, 64 << 20);
    buffer_init(&second, 64 << 20);
    for (int i = 0; i < 3000; i++) {
        int key_len = snprintf(key, sizeof key, "key-%d", (i * 7919) % 3000);
        size_t value_len = i % 1000 == 0 ? KV_MAX_VALUE : (size_t)(i % 97);
        command.len = 0;
        kv_encode_set(&command, key, (size_t)key_len, value, value_len);
        kv_apply(&kv, command.data, command.len);
    }
    for (uint64_t id = 300; id > 0; id -= 3) {
        command.len = 0;
        snprintf(key, sizeof key, "127.0.0.1:%llu", (unsigned long long)id);
        kv_encode_peer(&command, id * 0x9e3779b97f4a7c15ull, key);
        kv_apply(&kv, command.data, command.len);
    }
    check(encode(&kv, &first) == 0, "a large state encodes");
    check(decode(first.data, first.len, &back, why, sizeof why) == 0, "and decodes");
    check(back.key_count == 3000 && back.peer_count == 100, "with every key and peer");
    check(encode(&back, &second) == 0 && second.len == first.len &&
              memcmp(first.data, second.data, first.len) == 0,
          "and encodes to the same bytes again");
    check(has_value(&back, "key-0", 5, value, KV_MAX_VALUE), "a 1 MiB value survives");
    kv_free(&kv);
    kv_free(&back);
    buffer_free(&command);
    buffer_free(&first);
    buffer_free(&second);
}

/* RAFTD.md "Shards": the key hash and the group of a key, which every
 * raftd of a sharded cluster must compute alike. */
static void test_key_groups(void) {
    check(kv_fnv1a64("", 0) == 0xcbf29ce484222325ull, "FNV-1a-64 of nothing is the offset basis");
    check(kv_fnv1a64("a", 1) == 0xaf63dc4c8601ec8cull, "FNV-1a-64 of \"a\"");
    check(kv_fnv1a64("foo", 3) == 0xdcb27518fed9d577ull, "FNV-1a-64 of \"foo\"");
    check(kv_group_of("foo", 3, 8) == 8, "with 8 shards, foo is in group 8");
    check(kv_group_of("a", 1, 8) == 5, "with 8 shards, a is in group 5");
    check(kv_group_of("foo", 3, 1) == 1 && kv_group_of("a", 1, 1) == 1, "one shard: group 1");
    /* Bytes above 0x7f hash as unsigned bytes: "\xc3\xa9" (é) by hand. */
    uint64_t h = 0xcbf29ce484222325ull;
    h = (h ^ 0xc3) * 0x100000001b3ull;
    h = (h ^ 0xa9) * 0x100000001b3ull;
    check(kv_fnv1a64("\xc3\xa9", 2) == h, "FNV-1a-64 takes bytes as unsigned");
    int seen[9] = {0};
    char key[16];
    for (int i = 0; i < 200; i++) {
        int len = snprintf(key, sizeof key, "k%d", i);
        uint64_t g = kv_group_of(key, (size_t)len, 8);
        if (g >= 1 && g <= 8) {
            seen[g] = 1;
        } else {
            seen[0] = 1;
        }
    }
    check(!seen[0] && seen[1] && seen[2] && seen[3] && seen[4] && seen[5] && seen[6] && seen[7] &&
              seen[8],
          "200 keys land in every one of 8 groups, and in no other");
}

/* A group frame's messages (after its count), each a u64 group, a u32
 * length and that many bytes. */
static size_t group_messages(uint8_t *out, const size_t *sizes, size_t n) {
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        put_u64(out + at, i + 1);
        put_u32(out + at + 8, (uint32_t)sizes[i]);
        memset(out + at + 12, (int)i, sizes[i]);
        at += 12 + sizes[i];
    }
    return at;
}

static void test_group_frame_runs(void) {
    uint8_t body[256];
    const size_t sizes[] = {10, 30, 5, 20}; /* 22, 42, 17, 32 bytes with headers */
    size_t len = group_messages(body, sizes, 4);
    size_t run = 0;
    uint32_t n = 0;
    check(group_frame_run(body, len, 4, 4 + len, &run, &n) == 0 && n == 4 && run == len,
          "a group frame within the limit is one run");
    check(group_frame_run(body, len, 4, 64, &run, &n) == 0 && n == 1 && run == 22,
          "a run stops before the message that would overflow the frame");
    check(group_frame_run(body + 22, len - 22, 3, 64, &run, &n) == 0 && n == 2 && run == 59,
          "the next run takes what fits after it");
    check(group_frame_run(body + 22, len - 22, 3, 40, &run, &n) == 0 && n == 0 && run == 42,
          "a message no frame can carry is a run of none, its size to skip");
    check(group_frame_run(body, len - 1, 4, 1000, &run, &n) == -1,
          "a message cut short is malformed");
    check(group_frame_run(body, len, 5, 1000, &run, &n) == -1,
          "a count beyond the messages is malformed");
}

int main(int argc, char **argv) {
    size_t len = 0;
    uint8_t *vector = argc == 2 ? read_whole(argv[1], &len) : NULL;
    if (vector == NULL) {
        fprintf(stderr, "usage: kv_test PATH-OF-raftd-snapshot-v1.bin\n");
        return 2;
    }
    test_vector(vector, len);
    test_damaged(vector, len);
    test_limits();
    test_round_trip();
    test_key_groups();
    test_group_frame_runs();
    free(vector);
    printf("kv_test: %d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
