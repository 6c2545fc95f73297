#include "kv.h"

#include <stdarg.h>
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

uint64_t kv_fnv1a64(const void *data, size_t len) {
    const uint8_t *bytes = data;
    uint64_t hash = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        hash = (hash ^ bytes[i]) * 0x100000001b3ull;
    }
    return hash;
}

uint64_t kv_group_of(const char *key, size_t len, uint64_t shard_count) {
    return shard_count <= 1 ? 1 : 1 + kv_fnv1a64(key, len) % shard_count;
}

static size_t hash_key(const char *key, size_t len) {
    return (size_t)kv_fnv1a64(key, len);
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

/* Stores `value` (malloc'ed, owned by the store from now on) under `key`. */
static void put_value(struct kv_store *kv, const char *key, size_t key_len, uint8_t *copy,
                      size_t value_len) {
    if (grow(kv) != 0) {
        /* Out of memory: this node can no longer follow the log faithfully. */
        log_line("out of memory applying a set; stopping");
        abort();
    }
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

static void set_value(struct kv_store *kv, const char *key, size_t key_len, const uint8_t *value,
                      size_t value_len) {
    uint8_t *copy = malloc(value_len ? value_len : 1);
    if (copy == NULL) {
        log_line("out of memory applying a set; stopping");
        abort();
    }
    memcpy(copy, value, value_len);
    put_value(kv, key, key_len, copy, value_len);
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

void kv_forget_peers(struct kv_store *kv) {
    free(kv->peers);
    kv->peers = NULL;
    kv->peer_count = 0;
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
        if (value_len > KV_MAX_VALUE || (size_t)(end - p) != value_len) return 0;
        set_value(kv, key, key_len, p, value_len);
        return KV_SET;
    }
    case KV_DELETE: {
        if (end - p < 4) return 0;
        uint32_t key_len = get_u32(p);
        p += 4;
        if (key_len == 0 || key_len > KV_MAX_KEY || (size_t)(end - p) != key_len) return 0;
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

/* ---- snapshots ------------------------------------------------------------ */

/* Bytes gathered before each call of the sink. */
#define SNAPSHOT_CHUNK (64 * 1024)

struct snapshot_out {
    kv_sink sink;
    void *context;
    uint8_t *data;
    size_t len;
    int failed;
};

static void out_flush(struct snapshot_out *out) {
    if (!out->failed && out->len > 0 && out->sink(out->context, out->data, out->len) != 0) {
        out->failed = 1;
    }
    out->len = 0;
}

static void out_bytes(struct snapshot_out *out, const void *data, size_t len) {
    const uint8_t *p = data;
    while (len > 0 && !out->failed) {
        size_t n = SNAPSHOT_CHUNK - out->len < len ? SNAPSHOT_CHUNK - out->len : len;
        memcpy(out->data + out->len, p, n);
        out->len += n;
        p += n;
        len -= n;
        if (out->len == SNAPSHOT_CHUNK) {
            out_flush(out);
        }
    }
}

static void out_u32(struct snapshot_out *out, uint32_t value) {
    uint8_t bytes[4];
    put_u32(bytes, value);
    out_bytes(out, bytes, 4);
}

static void out_u64(struct snapshot_out *out, uint64_t value) {
    uint8_t bytes[8];
    put_u64(bytes, value);
    out_bytes(out, bytes, 8);
}

static int compare_peers(const void *a, const void *b) {
    uint64_t x = ((const struct kv_peer *)a)->id, y = ((const struct kv_peer *)b)->id;
    return x < y ? -1 : x > y;
}

/* Unsigned bytes; a key that is a prefix of another comes first. */
static int compare_keys(const char *a, size_t a_len, const char *b, size_t b_len) {
    int order = memcmp(a, b, a_len < b_len ? a_len : b_len);
    return order != 0 ? order : a_len < b_len ? -1 : a_len > b_len;
}

static int compare_entries(const void *a, const void *b) {
    const struct kv_entry *x = *(struct kv_entry *const *)a, *y = *(struct kv_entry *const *)b;
    return compare_keys(x->key, x->key_len, y->key, y->key_len);
}

int kv_snapshot_write(const struct kv_store *kv, kv_sink sink, void *context) {
    struct snapshot_out out = {sink, context, malloc(SNAPSHOT_CHUNK), 0, 0};
    struct kv_peer *peers = malloc(kv->peer_count ? kv->peer_count * sizeof *peers : 1);
    struct kv_entry **entries = malloc(kv->key_count ? kv->key_count * sizeof *entries : 1);
    int result = -1;
    if (out.data == NULL || peers == NULL || entries == NULL) {
        goto done;
    }
    if (kv->peer_count > 0) {
        memcpy(peers, kv->peers, kv->peer_count * sizeof *peers);
    }
    qsort(peers, kv->peer_count, sizeof *peers, compare_peers);
    size_t count = 0;
    for (size_t i = 0; i < kv->slot_count; i++) {
        for (struct kv_entry *entry = kv->slots[i]; entry != NULL; entry = entry->next) {
            entries[count++] = entry;
        }
    }
    qsort(entries, count, sizeof *entries, compare_entries);

    out_bytes(&out, KV_SNAPSHOT_MAGIC, 4);
    out_u32(&out, KV_SNAPSHOT_VERSION);
    out_u32(&out, (uint32_t)kv->peer_count);
    for (size_t i = 0; i < kv->peer_count; i++) {
        size_t len = strlen(peers[i].addr);
        out_u64(&out, peers[i].id);
        out_u32(&out, (uint32_t)len);
        out_bytes(&out, peers[i].addr, len);
    }
    out_u32(&out, (uint32_t)count);
    for (size_t i = 0; i < count; i++) {
        out_u32(&out, (uint32_t)entries[i]->key_len);
        out_bytes(&out, entries[i]->key, entries[i]->key_len);
        out_u32(&out, (uint32_t)entries[i]->value_len);
        out_bytes(&out, entries[i]->value, entries[i]->value_len);
    }
    out_flush(&out);
    result = out.failed ? -1 : 0;
done:
    free(out.data);
    free(peers);
    free(entries);
    return result;
}

struct snapshot_in {
    FILE *in;
    char *why;
    size_t why_cap;
    int failed;
};

static void refuse(struct snapshot_in *in, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

/* Records the first broken rule; later ones follow from it. */
static void refuse(struct snapshot_in *in, const char *format, ...) {
    if (in->failed) {
        return;
    }
    in->failed = 1;
    va_list args;
    va_start(args, format);
    vsnprintf(in->why, in->why_cap, format, args);
    va_end(args);
}

static int in_bytes(struct snapshot_in *in, void *data, size_t len, const char *what) {
    if (!in->failed && len > 0 && fread(data, 1, len, in->in) != len) {
        refuse(in, ferror(in->in) ? "cannot read %s" : "truncated in %s", what);
    }
    return in->failed ? -1 : 0;
}

static uint32_t in_u32(struct snapshot_in *in, const char *what) {
    uint8_t bytes[4] = {0};
    in_bytes(in, bytes, 4, what);
    return get_u32(bytes);
}

static uint64_t in_u64(struct snapshot_in *in, const char *what) {
    uint8_t bytes[8] = {0};
    in_bytes(in, bytes, 8, what);
    return get_u64(bytes);
}

/* A length between `low` and `high`, checked before anything is read. */
static uint32_t in_len(struct snapshot_in *in, uint32_t low, uint32_t high, const char *what) {
    uint32_t len = in_u32(in, what);
    if (!in->failed && (len < low || len > high)) {
        refuse(in, "%s of %lu bytes (allowed: %lu to %lu)", what, (unsigned long)len,
               (unsigned long)low, (unsigned long)high);
    }
    return in->failed ? 0 : len;
}

int kv_snapshot_read(FILE *file, struct kv_store *out, char *why, size_t why_cap) {
    struct snapshot_in in = {file, why, why_cap, 0};
    char magic[4] = {0};
    kv_init(out);
    if (why_cap > 0) {
        why[0] = '\0';
    }
    in_bytes(&in, magic, 4, "the magic");
    if (!in.failed && memcmp(magic, KV_SNAPSHOT_MAGIC, 4) != 0) {
        refuse(&in, "not a raftd snapshot (magic %02x%02x%02x%02x, expected 52444b56)",
               (uint8_t)magic[0], (uint8_t)magic[1], (uint8_t)magic[2], (uint8_t)magic[3]);
    }
    uint32_t version = in_u32(&in, "the version");
    if (!in.failed && version != KV_SNAPSHOT_VERSION) {
        refuse(&in, "format version %lu; this raftd reads version %d", (unsigned long)version,
               KV_SNAPSHOT_VERSION);
    }
    uint32_t peers = in_u32(&in, "the peer count");
    uint64_t previous_id = 0;
    for (uint32_t i = 0; i < peers && !in.failed; i++) {
        char addr[KV_MAX_ADDR + 1];
        uint64_t id = in_u64(&in, "a peer id");
        if (!in.failed && id <= previous_id) {
            refuse(&in, "peer %lu: id %llu is 0, repeated or out of order", (unsigned long)i,
                   (unsigned long long)id);
        }
        uint32_t len = in_len(&in, 1, KV_MAX_ADDR, "a peer address");
        in_bytes(&in, addr, len, "a peer address");
        if (!in.failed && memchr(addr, '\0', len) != NULL) {
            refuse(&in, "the address of peer %llu holds a NUL byte", (unsigned long long)id);
        }
        if (!in.failed) {
            size_t before = out->peer_count;
            addr[len] = '\0';
            kv_hint_peer(out, id, addr);
            if (out->peer_count == before) {
                refuse(&in, "out of memory for peer %llu", (unsigned long long)id);
            }
            previous_id = id;
        }
    }
    uint32_t keys = in_u32(&in, "the key count");
    char previous[KV_MAX_KEY];
    size_t previous_len = 0;
    for (uint32_t i = 0; i < keys && !in.failed; i++) {
        char key[KV_MAX_KEY];
        uint32_t key_len = in_len(&in, 1, KV_MAX_KEY, "a key");
        in_bytes(&in, key, key_len, "a key");
        if (!in.failed && i > 0 && compare_keys(key, key_len, previous, previous_len) <= 0) {
            refuse(&in, "key %lu is repeated or out of order", (unsigned long)i);
        }
        uint32_t value_len = in_len(&in, 0, KV_MAX_VALUE, "a value");
        uint8_t *value = in.failed ? NULL : malloc(value_len ? value_len : 1);
        if (!in.failed && value == NULL) {
            refuse(&in, "out of memory for a value of %lu bytes", (unsigned long)value_len);
        }
        if (in_bytes(&in, value, value_len, "a value") != 0) {
            free(value);
            break;
        }
        put_value(out, key, key_len, value, value_len);
        memcpy(previous, key, key_len);
        previous_len = key_len;
    }
    if (!in.failed && fgetc(file) != EOF) {
        refuse(&in, "bytes after the last value");
    }
    if (!in.failed && ferror(file)) {
        refuse(&in, "cannot read the file");
    }
    if (in.failed) {
        kv_free(out);
        return -1;
    }
    return 0;
}
