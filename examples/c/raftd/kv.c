#include "kv.h"

#include <stdlib.h>
#include <string.h>

struct kv_entry {
    struct kv_entry *next;
    size_t key_len;
    size_t value_len;
    uint8_t *value;
    char key[]; /* key_len bytes */
};

void kv_init(struct kv_store *kv) {
    memset(kv, 0, sizeof *kv);
}

void kv_free(struct kv_store *kv) {
    for (size_t i = 0; i < kv->slot_count; i++) {
        struct kv_entry *entry = kv->slots[i];
        while (entry != NULL) {
            struct kv_entry *next = entry->next;
            free(entry->value);
            free(entry);
            entry = next;
        }
    }
    free(kv->slots);
    free(kv->peers);
    kv_init(kv);
}

/* FNV-1a. */
static size_t hash_key(const char *key, size_t len) {
    uint64_t hash = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) {
        hash = (hash ^ (uint8_t)key[i]) * 1099511628211ull;
    }
    return (size_t)hash;
}

static struct kv_entry **find_slot(const struct kv_store *kv, const char *key, size_t len) {
    if (kv->slot_count == 0) {
        return NULL;
    }
    struct kv_entry **at = &kv->slots[hash_key(key, len) % kv->slot_count];
    while (*at != NULL && ((*at)->key_len != len || memcmp((*at)->key, key, len) != 0)) {
        at = &(*at)->next;
    }
    return at;
}

/* Keeps chains short: doubles the table when it holds as many keys as
 * slots. Returns -1 when out of memory. */
static int grow(struct kv_store *kv) {
    if (kv->key_count < kv->slot_count) {
        return 0;
    }
    size_t count = kv->slot_count ? kv->slot_count * 2 : 64;
    struct kv_entry **slots = calloc(count, sizeof *slots);
    if (slots == NULL) {
        return -1;
    }
    for (size_t i = 0; i < kv->slot_count; i++) {
        struct kv_entry *entry = kv->slots[i];
        while (entry != NULL) {
            struct kv_entry *next = entry->next;
            size_t slot = hash_key(entry->key, entry->key_len) % count;
            entry->next = slots[slot];
            slots[slot] = entry;
            entry = next;
        }
    }
    free(kv->slots);
    kv->slots = slots;
    kv->slot_count = count;
    return 0;
}

static void set_value(struct kv_store *kv, const char *key, size_t key_len, const uint8_t *value,
                      size_t value_len) {
    uint8_t *copy = malloc(value_len ? value_len : 1);
    if (copy == NULL || grow(kv) != 0) {
        /* Out of memory: this node can no longer follow the log faithfully. */
        log_line("out of memory applying a set; stopping");
        abort();
    }
    memcpy(copy, value, value_len);
    struct kv_entry **at = find_slot(kv, key, key_len);
    if (*at != NULL) {
        free((*at)->value);
        (*at)->value = copy;
        (*at)->value_len = value_len;
        return;
    }
    struct kv_entry *entry = malloc(sizeof *entry + key_len);
    if (entry == NULL) {
        log_line("out of memory applying a set; stopping");
        abort();
    }
    entry->next = NULL;
    entry->key_len = key_len;
    entry->value = copy;
    entry->value_len = value_len;
    memcpy(entry->key, key, key_len);
    *at = entry;
    kv->key_count++;
}

static void delete_key(struct kv_store *kv, const char *key, size_t key_len) {
    struct kv_entry **at = find_slot(kv, key, key_len);
    if (at == NULL || *at == NULL) {
        return;
    }
    struct kv_entry *entry = *at;
    *at = entry->next;
    free(entry->value);
    free(entry);
    kv->key_count--;
}

int kv_get(const struct kv_store *kv, const char *key, size_t key_len, const uint8_t **value,
           size_t *value_len) {
    struct kv_entry **at = find_slot(kv, key, key_len);
    if (at == NULL || *at == NULL) {
        return -1;
    }
    *value = (*at)->value;
    *value_len = (*at)->value_len;
    return 0;
}

static struct kv_peer *find_peer(const struct kv_store *kv, uint64_t id) {
    for (size_t i = 0; i < kv->peer_count; i++) {
        if (kv->peers[i].id == id) {
            return &kv->peers[i];
        }
    }
    return NULL;
}

const char *kv_peer_addr(const struct kv_store *kv, uint64_t id) {
    struct kv_peer *peer = find_peer(kv, id);
    return peer ? peer->addr : NULL;
}

void kv_hint_peer(struct kv_store *kv, uint64_t id, const char *addr) {
    size_t len = strlen(addr);
    if (id == 0 || len == 0 || len > KV_MAX_ADDR) {
        return;
    }
    struct kv_peer *peer = find_peer(kv, id);
    if (peer == NULL) {
        struct kv_peer *peers = realloc(kv->peers, (kv->peer_count + 1) * sizeof *peers);
        if (peers == NULL) {
            return;
        }
        kv->peers = peers;
        peer = &kv->peers[kv->peer_count++];
        peer->id = id;
    }
    memcpy(peer->addr, addr, len + 1);
}

static void remove_peer(struct kv_store *kv, uint64_t id) {
    struct kv_peer *peer = find_peer(kv, id);
    if (peer != NULL) {
        *peer = kv->peers[--kv->peer_count];
    }
}

int kv_apply(struct kv_store *kv, const uint8_t *data, size_t len) {
    if (len < 1) {
        return 0;
    }
    const uint8_t *p = data + 1, *end = data + len;
    switch (data[0]) {
    case KV_SET: {
        if (end - p < 4) return 0;
        uint32_t key_len = get_u32(p);
        p += 4;
        if (key_len == 0 || key_len > KV_MAX_KEY || (size_t)(end - p) < (size_t)key_len + 4) return 0;
        const char *key = (const char *)p;
        p += key_len;
        uint32_t value_len = get_u32(p);
        p += 4;
        if ((size_t)(end - p) != value_len) return 0;
        set_value(kv, key, key_len, p, value_len);
        return KV_SET;
    }
    case KV_DELETE: {
        if (end - p < 4) return 0;
        uint32_t key_len = get_u32(p);
        p += 4;
        if (key_len == 0 || (size_t)(end - p) != key_len) return 0;
        delete_key(kv, (const char *)p, key_len);
        return KV_DELETE;
    }
    case KV_PEER: {
        if (end - p < 12) return 0;
        uint64_t id = get_u64(p);
        uint32_t addr_len = get_u32(p + 8);
        p += 12;
        if (id == 0 || addr_len == 0 || addr_len > KV_MAX_ADDR || (size_t)(end - p) != addr_len ||
            memchr(p, '\0', addr_len) != NULL) {
            return 0;
        }
        char addr[KV_MAX_ADDR + 1];
        memcpy(addr, p, addr_len);
        addr[addr_len] = '\0';
        kv_hint_peer(kv, id, addr);
        return KV_PEER;
    }
    case KV_REMOVE_PEER:
        if (end - p != 8) return 0;
        remove_peer(kv, get_u64(p));
        return KV_REMOVE_PEER;
    default:
        return 0;
    }
}

int kv_encode_set(struct buffer *out, const char *key, size_t key_len, const uint8_t *value,
                  size_t value_len) {
    uint8_t tag = KV_SET;
    return buffer_append(out, &tag, 1) || buffer_append_u32(out, (uint32_t)key_len) ||
                   buffer_append(out, key, key_len) ||
                   buffer_append_u32(out, (uint32_t)value_len) ||
                   buffer_append(out, value, value_len)
               ? -1
               : 0;
}

int kv_encode_delete(struct buffer *out, const char *key, size_t key_len) {
    uint8_t tag = KV_DELETE;
    return buffer_append(out, &tag, 1) || buffer_append_u32(out, (uint32_t)key_len) ||
                   buffer_append(out, key, key_len)
               ? -1
               : 0;
}

int kv_encode_peer(struct buffer *out, uint64_t id, const char *addr) {
    uint8_t tag = KV_PEER;
    size_t len = strlen(addr);
    return buffer_append(out, &tag, 1) || buffer_append_u64(out, id) ||
                   buffer_append_u32(out, (uint32_t)len) || buffer_append(out, addr, len)
               ? -1
               : 0;
}

int kv_encode_remove_peer(struct buffer *out, uint64_t id) {
    uint8_t tag = KV_REMOVE_PEER;
    return buffer_append(out, &tag, 1) || buffer_append_u64(out, id) ? -1 : 0;
}
