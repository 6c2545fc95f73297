/* The replicated state machine: keys and values, and the peer address
 * book, both changed only by applying committed commands (RAFTD.md,
 * "Replicated commands"). */
#ifndef RAFTD_KV_H
#define RAFTD_KV_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "util.h"

#define KV_MAX_KEY 1024
#define KV_MAX_VALUE (1024 * 1024)
#define KV_MAX_ADDR 255

enum kv_command { KV_SET = 1, KV_DELETE = 2, KV_PEER = 3, KV_REMOVE_PEER = 4 };

struct kv_peer {
    uint64_t id;
    char addr[KV_MAX_ADDR + 1];
};

struct kv_entry;

struct kv_store {
    struct kv_entry **slots; /* open hashing: one chain per slot */
    size_t slot_count;
    size_t key_count;
    struct kv_peer *peers;
    size_t peer_count;
};

void kv_init(struct kv_store *kv);
void kv_free(struct kv_store *kv);

/* Encoders of the commands (into an empty or partial buffer). */
int kv_encode_set(struct buffer *out, const char *key, size_t key_len, const uint8_t *value,
                  size_t value_len);
int kv_encode_delete(struct buffer *out, const char *key, size_t key_len);
int kv_encode_peer(struct buffer *out, uint64_t id, const char *addr);
int kv_encode_remove_peer(struct buffer *out, uint64_t id);

/* Applies one committed normal entry. An entry that is not exactly one
 * well-formed command changes nothing (every node ignores it alike);
 * returns the command applied, or 0. */
int kv_apply(struct kv_store *kv, const uint8_t *data, size_t len);

/* Looks a key up; the value view stays valid until the next apply. */
int kv_get(const struct kv_store *kv, const char *key, size_t key_len, const uint8_t **value,
           size_t *value_len);

/* Empties the address book (the keys stay). */
void kv_forget_peers(struct kv_store *kv);

/* The address of a peer, or NULL. */
const char *kv_peer_addr(const struct kv_store *kv, uint64_t id);
/* Records an address outside the log (from a join answer), so a new node
 * can answer its leader before it has applied the peer commands. */
void kv_hint_peer(struct kv_store *kv, uint64_t id, const char *addr);

/* FNV-1a-64 of the bytes (RAFTD.md "Shards"). */
uint64_t kv_fnv1a64(const void *data, size_t len);
/* The group 1..shard_count that holds a key: 1 + FNV-1a-64(key) mod N. */
uint64_t kv_group_of(const char *key, size_t len, uint64_t shard_count);

/* Snapshots (RAFTD.md "Snapshots", format version 1): the peers by id,
 * then the keys by their bytes, so equal states give equal bytes on every
 * raftd. */
#define KV_SNAPSHOT_MAGIC "RDKV"
#define KV_SNAPSHOT_VERSION 1

/* Where kv_snapshot_write sends its bytes: 0, or non-zero to give up. */
typedef int (*kv_sink)(void *context, const void *data, size_t len);

/* Writes the whole state to `sink` in pieces of at most 64 KiB. Returns 0,
 * or -1 when the sink failed or memory ran out. */
int kv_snapshot_write(const struct kv_store *kv, kv_sink sink, void *context);

/* Decodes a whole snapshot from `in` into `out` (initialized here). Returns
 * 0, or -1 with `out` empty and the broken rule in `why` (NUL-terminated,
 * at most `why_cap` bytes). Reads no field longer than the limits allow,
 * whatever lengths the file claims. */
int kv_snapshot_read(FILE *in, struct kv_store *out, char *why, size_t why_cap);

#endif
