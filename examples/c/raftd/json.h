/* Just enough JSON for raftd's small documents (node.json, /join, /leave,
 * the cluster description): reading string values of a flat object and the
 * members of one nested object, and writing escaped strings. */
#ifndef RAFTD_JSON_H
#define RAFTD_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* Finds the string value of top-level `key` in the object `text[0..len)`
 * and copies it (unescaped, NUL-terminated) into `out`. Returns 0, or -1
 * when the text is not an object, the key is missing, its value is not a
 * string, or it does not fit. */
int json_get_string(const char *text, size_t len, const char *key, char *out, size_t out_cap);

/* 1 if the object has top-level member `key`, else 0. */
int json_has_member(const char *text, size_t len, const char *key);

/* Like json_get_string for a decimal id ("123" or 123); 0 is refused. */
int json_get_id(const char *text, size_t len, const char *key, uint64_t *id);

/* Calls `visit` for each member of the object that is the value of
 * top-level `key` whose value is a string. Returns 0, or -1 if malformed. */
typedef void (*json_member_visitor)(void *context, const char *name, const char *value);
int json_each_member(const char *text, size_t len, const char *key, json_member_visitor visit,
                     void *context);

/* Appends `value` as a JSON string literal. */
int json_append_string(struct buffer *out, const char *value);

/* Parses a decimal u64; returns 0, or -1 unless all of `text` is digits
 * that fit. */
int parse_u64(const char *text, uint64_t *value);

#endif
