#include "json.h"

#include <string.h>

/* Nesting deeper than this is refused rather than followed. */
#define JSON_MAX_DEPTH 16

struct cursor {
    const char *at;
    const char *end;
};

static void skip_space(struct cursor *c) {
    while (c->at < c->end && (*c->at == ' ' || *c->at == '\t' || *c->at == '\n' || *c->at == '\r')) {
        c->at++;
    }
}

static int expect(struct cursor *c, char ch) {
    skip_space(c);
    if (c->at < c->end && *c->at == ch) {
        c->at++;
        return 0;
    }
    return -1;
}

/* Reads a string literal; copies it into out (if not NULL). Escapes other
 * than \uXXXX are decoded; \u escapes keep only ASCII (ids and addresses
 * never need more). */
static int read_string(struct cursor *c, char *out, size_t out_cap) {
    size_t used = 0;
    if (expect(c, '"') != 0) {
        return -1;
    }
    while (c->at < c->end && *c->at != '"') {
        char ch = *c->at++;
        if ((unsigned char)ch < 0x20) {
            return -1;
        }
        if (ch == '\\') {
            if (c->at >= c->end) {
                return -1;
            }
            char escape = *c->at++;
            switch (escape) {
            case 'n': ch = '\n'; break;
            case 't': ch = '\t'; break;
            case 'r': ch = '\r'; break;
            case 'b': ch = '\b'; break;
            case 'f': ch = '\f'; break;
            case '"': case '\\': case '/': ch = escape; break;
            case 'u': {
                unsigned code = 0;
                for (int i = 0; i < 4; i++) {
                    if (c->at >= c->end) {
                        return -1;
                    }
                    char hex = *c->at++;
                    code <<= 4;
                    if (hex >= '0' && hex <= '9') code |= (unsigned)(hex - '0');
                    else if (hex >= 'a' && hex <= 'f') code |= (unsigned)(hex - 'a' + 10);
                    else if (hex >= 'A' && hex <= 'F') code |= (unsigned)(hex - 'A' + 10);
                    else return -1;
                }
                ch = code < 0x80 ? (char)code : '?';
                break;
            }
            default: return -1;
            }
        }
        if (out != NULL) {
            if (used + 1 >= out_cap) {
                return -1;
            }
            out[used++] = ch;
        }
    }
    if (c->at >= c->end) {
        return -1;
    }
    c->at++;
    if (out != NULL) {
        out[used] = '\0';
    }
    return 0;
}

static int skip_value(struct cursor *c, int depth);

static int skip_container(struct cursor *c, int depth, char close) {
    skip_space(c);
    if (c->at < c->end && *c->at == close) {
        c->at++;
        return 0;
    }
    for (;;) {
        if (close == '}') {
            if (read_string(c, NULL, 0) != 0 || expect(c, ':') != 0) {
                return -1;
            }
        }
        if (skip_value(c, depth + 1) != 0) {
            return -1;
        }
        skip_space(c);
        if (c->at < c->end && *c->at == ',') {
            c->at++;
            continue;
        }
        return expect(c, close);
    }
}

static int skip_value(struct cursor *c, int depth) {
    if (depth > JSON_MAX_DEPTH) {
        return -1;
    }
    skip_space(c);
    if (c->at >= c->end) {
        return -1;
    }
    switch (*c->at) {
    case '"': return read_string(c, NULL, 0);
    case '{': c->at++; return skip_container(c, depth, '}');
    case '[': c->at++; return skip_container(c, depth, ']');
    default: {
        /* A number or a literal: a run of characters that may make one up. */
        const char *start = c->at;
        while (c->at < c->end && strchr("0123456789+-.eEtruefalsn", *c->at) != NULL) {
            c->at++;
        }
        return c->at > start ? 0 : -1;
    }
    }
}

/* Positions the cursor on the value of top-level `key`. */
static int find_member(const char *text, size_t len, const char *key, struct cursor *c) {
    char name[256];
    c->at = text;
    c->end = text + len;
    if (expect(c, '{') != 0) {
        return -1;
    }
    skip_space(c);
    if (c->at < c->end && *c->at == '}') {
        return -1;
    }
    for (;;) {
        if (read_string(c, name, sizeof name) != 0 || expect(c, ':') != 0) {
            return -1;
        }
        if (strcmp(name, key) == 0) {
            skip_space(c);
            return 0;
        }
        if (skip_value(c, 1) != 0) {
            return -1;
        }
        if (expect(c, ',') != 0) {
            return -1;
        }
    }
}

int json_get_string(const char *text, size_t len, const char *key, char *out, size_t out_cap) {
    struct cursor c;
    if (find_member(text, len, key, &c) != 0) {
        return -1;
    }
    return read_string(&c, out, out_cap);
}

int json_has_member(const char *text, size_t len, const char *key) {
    struct cursor c;
    return find_member(text, len, key, &c) == 0;
}

int parse_u64(const char *text, uint64_t *value) {
    uint64_t result = 0;
    if (*text == '\0') {
        return -1;
    }
    for (; *text; text++) {
        if (*text < '0' || *text > '9') {
            return -1;
        }
        unsigned digit = (unsigned)(*text - '0');
        if (result > (UINT64_MAX - digit) / 10) {
            return -1;
        }
        result = result * 10 + digit;
    }
    *value = result;
    return 0;
}

int json_get_id(const char *text, size_t len, const char *key, uint64_t *id) {
    struct cursor c;
    char digits[32];
    if (find_member(text, len, key, &c) != 0) {
        return -1;
    }
    if (c.at < c.end && *c.at == '"') {
        if (read_string(&c, digits, sizeof digits) != 0) {
            return -1;
        }
    } else {
        size_t n = 0;
        while (c.at < c.end && *c.at >= '0' && *c.at <= '9' && n + 1 < sizeof digits) {
            digits[n++] = *c.at++;
        }
        digits[n] = '\0';
    }
    uint64_t value = 0;
    if (parse_u64(digits, &value) != 0 || value == 0) {
        return -1;
    }
    *id = value;
    return 0;
}

int json_each_member(const char *text, size_t len, const char *key, json_member_visitor visit,
                     void *context) {
    struct cursor c;
    char name[256], value[1024];
    if (find_member(text, len, key, &c) != 0 || expect(&c, '{') != 0) {
        return -1;
    }
    skip_space(&c);
    if (c.at < c.end && *c.at == '}') {
        return 0;
    }
    for (;;) {
        if (read_string(&c, name, sizeof name) != 0 || expect(&c, ':') != 0) {
            return -1;
        }
        skip_space(&c);
        if (c.at < c.end && *c.at == '"') {
            if (read_string(&c, value, sizeof value) != 0) {
                return -1;
            }
            visit(context, name, value);
        } else if (skip_value(&c, 2) != 0) {
            return -1;
        }
        skip_space(&c);
        if (c.at < c.end && *c.at == ',') {
            c.at++;
            continue;
        }
        return expect(&c, '}');
    }
}

int json_append_string(struct buffer *out, const char *value) {
    int failed = buffer_append(out, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)value; *p && !failed; p++) {
        if (*p == '"' || *p == '\\') {
            failed = buffer_printf(out, "\\%c", *p);
        } else if (*p < 0x20) {
            failed = buffer_printf(out, "\\u%04x", *p);
        } else {
            failed = buffer_append(out, p, 1);
        }
    }
    return failed ? -1 : buffer_append(out, "\"", 1);
}
