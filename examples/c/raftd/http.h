/* HTTP/1.1 requests in, responses out: a bounded, defensive parser of one
 * request, and response formatting. Every answer closes the connection
 * (`Connection: close`), which keeps the server simple and is valid
 * HTTP/1.1. */
#ifndef RAFTD_HTTP_H
#define RAFTD_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define HTTP_MAX_HEADER_BYTES (16 * 1024)
#define HTTP_MAX_TARGET 4096

struct http_request {
    char method[8];
    char target[HTTP_MAX_TARGET + 1]; /* path and query, as sent */
    size_t header_len;                /* bytes up to and including the blank line */
    size_t content_length;
    int forwarded; /* X-Raftd-Forwarded: sent by a follower to its leader */
};

enum http_parse_result {
    HTTP_INCOMPLETE = 0, /* the headers are not all here yet */
    HTTP_HEADERS_DONE = 1,
    HTTP_BAD = -1, /* `error_code` and `error_text` say why */
};

/* Parses the request line and headers at the start of `data`. */
enum http_parse_result http_parse(const uint8_t *data, size_t len, struct http_request *req,
                                  int *error_code, const char **error_text);

/* Appends a whole response (status line, headers, body). `extra_headers`
 * is NULL or lines each ending in "\r\n". */
int http_format_response(struct buffer *out, int code, const char *content_type,
                         const char *extra_headers, const void *body, size_t body_len);

/* Reads a response's status line ("HTTP/1.x NNN ..."): the code, or 0 if
 * `data` does not start with one. */
int http_response_code(const uint8_t *data, size_t len);
/* The offset of a message's body (after the blank line), or 0 if the
 * headers are incomplete. */
size_t http_body_offset(const uint8_t *data, size_t len);

/* The reason phrase of a status code. */
const char *http_reason(int code);

/* Decodes %XX escapes of `in[0..len)` into `out`; returns the decoded
 * length, or -1 on a bad escape or when it does not fit. */
long http_percent_decode(const char *in, size_t len, char *out, size_t out_cap);

#endif
