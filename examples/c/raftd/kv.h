/* The replicated state machine: keys and values, and the peer address
 * book, both changed only by applying committed commands (RAFTD.md,
 * "Replicated commands"). */
#ifndef RAFTD_KV_H
#define RAFTD_KV_H

#include <stddef.h>
#include <stdint.h>

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

/* The address of a peer, or NULL. */
const char *kv_peer_addr(const struct kv_store *kv, uint64_t id);
/* Records an address outside the log (from a join answer), so a new node
 * can answer its leader before it has applied the peer commands. */
void kv_hint_peer(struct kv_store *kv, uint64_t id, const char *addr);

#endif
