#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *http_reason(int code) {
    switch (code) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

static const char *find_crlf(const char *at, const char *end) {
    for (; at + 1 < end; at++) {
        if (at[0] == '\r' && at[1] == '\n') {
            return at;
        }
    }
    return NULL;
}

static enum http_parse_result bad(int *error_code, const char **error_text, int code,
                                  const char *text) {
    *error_code = code;
    *error_text = text;
    return HTTP_BAD;
}

enum http_parse_result http_parse(const uint8_t *data, size_t len, struct http_request *req,
                                  int *error_code, const char **error_text) {
    const char *text = (const char *)data;
    size_t scan = len < HTTP_MAX_HEADER_BYTES ? len : HTTP_MAX_HEADER_BYTES;
    const char *blank = NULL;
    for (size_t i = 0; i + 3 < scan; i++) {
        if (memcmp(text + i, "\r\n\r\n", 4) == 0) {
            blank = text + i;
            break;
        }
    }
    if (blank == NULL) {
        return len >= HTTP_MAX_HEADER_BYTES
                   ? bad(error_code, error_text, 431, "request headers larger than 16 KiB")
                   : HTTP_INCOMPLETE;
    }
    const char *end = blank + 2; /* the last header's CRLF */
    memset(req, 0, sizeof *req);
    req->header_len = (size_t)(blank + 4 - text);

    /* Request line: METHOD SP target SP HTTP/1.x */
    const char *line_end = find_crlf(text, end);
    const char *space1 = memchr(text, ' ', (size_t)(line_end - text));
    const char *space2 = space1 ? memchr(space1 + 1, ' ', (size_t)(line_end - space1 - 1)) : NULL;
    if (space1 == NULL || space2 == NULL || space1 == text ||
        (size_t)(space1 - text) >= sizeof req->method || space2 == space1 + 1) {
        return bad(error_code, error_text, 400, "malformed request line");
    }
    if ((size_t)(space2 - space1 - 1) > HTTP_MAX_TARGET) {
        return bad(error_code, error_text, 400, "request target too long");
    }
    size_t version_len = (size_t)(line_end - space2 - 1);
    if (version_len != 8 || memcmp(space2 + 1, "HTTP/1.", 7) != 0) {
        return bad(error_code, error_text, 505, "only HTTP/1.x is served");
    }
    memcpy(req->method, text, (size_t)(space1 - text));
    memcpy(req->target, space1 + 1, (size_t)(space2 - space1 - 1));
    if (req->target[0] != '/') {
        return bad(error_code, error_text, 400, "the request target must start with /");
    }
    for (const char *p = req->target; *p; p++) {
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) {
            return bad(error_code, error_text, 400, "bad character in the request target");
        }
    }

    /* Headers. */
    for (const char *line = line_end + 2; line < end;) {
        const char *next = find_crlf(line, end + 2);
        const char *colon = memchr(line, ':', (size_t)(next - line));
        if (colon == NULL || colon == line) {
            return bad(error_code, error_text, 400, "malformed header line");
        }
        size_t name_len = (size_t)(colon - line);
        const char *value = colon + 1;
        while (value < next && (*value == ' ' || *value == '\t')) {
            value++;
        }
        size_t value_len = (size_t)(next - value);
        if (name_len == 14 && strncasecmp(line, "Content-Length", 14) == 0) {
            char digits[24];
            char *digits_end = NULL;
            if (value_len == 0 || value_len >= sizeof digits) {
                return bad(error_code, error_text, 400, "bad Content-Length");
            }
            memcpy(digits, value, value_len);
            digits[value_len] = '\0';
            while (value_len > 0 && (digits[value_len - 1] == ' ' || digits[value_len - 1] == '\t')) {
                digits[--value_len] = '\0';
            }
            unsigned long long parsed = strtoull(digits, &digits_end, 10);
            if (digits[0] < '0' || digits[0] > '9' || *digits_end != '\0') {
                return bad(error_code, error_text, 400, "bad Content-Length");
            }
            req->content_length = (size_t)parsed;
            if ((unsigned long long)req->content_length != parsed) {
                return bad(error_code, error_text, 413, "body too large");
            }
        } else if (name_len == 17 && strncasecmp(line, "Transfer-Encoding", 17) == 0) {
            return bad(error_code, error_text, 411, "chunked bodies are not served; send Content-Length");
        } else if (name_len == 17 && strncasecmp(line, "X-Raftd-Forwarded", 17) == 0) {
            req->forwarded = 1;
        }
        line = next + 2;
    }
    return HTTP_HEADERS_DONE;
}

int http_response_code(const uint8_t *data, size_t len) {
    if (len < 13 || memcmp(data, "HTTP/1.", 7) != 0 || data[8] != ' ') {
        return 0;
    }
    int code = 0;
    for (size_t i = 9; i < 12; i++) {
        if (data[i] < '0' || data[i] > '9') {
            return 0;
        }
        code = code * 10 + (data[i] - '0');
    }
    return code >= 100 ? code : 0;
}

size_t http_body_offset(const uint8_t *data, size_t len) {
    for (size_t i = 0; i + 3 < len; i++) {
        if (memcmp(data + i, "\r\n\r\n", 4) == 0) {
            return i + 4;
        }
    }
    return 0;
}

int http_format_response(struct buffer *out, int code, const char *content_type,
                         const char *extra_headers, const void *body, size_t body_len) {
    if (buffer_printf(out,
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n%s\r\n",
                      code, http_reason(code), content_type, body_len,
                      extra_headers ? extra_headers : "") != 0) {
        return -1;
    }
    return buffer_append(out, body, body_len);
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

long http_percent_decode(const char *in, size_t len, char *out, size_t out_cap) {
    size_t used = 0;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c == '%') {
            int high = i + 2 < len ? hex_value(in[i + 1]) : -1;
            int low = i + 2 < len ? hex_value(in[i + 2]) : -1;
            if (high < 0 || low < 0) {
                return -1;
            }
            c = (char)(high * 16 + low);
            i += 2;
        }
        if (used >= out_cap) {
            return -1;
        }
        out[used++] = c;
    }
    return (long)used;
}
