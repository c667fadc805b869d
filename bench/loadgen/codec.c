/* Message formats of the load client; see wire.h. Written from the specifications:
 * the MessagePack spec, RFC 8259 (JSON), Engine.IO 4 and socket.io 5 packet types,
 * docs/protocol.md (Sinal's frames). */
#define _GNU_SOURCE /* memmem */
#include <string.h>

#include "wire.h"

static uint32_t be16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }
static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t be64(const uint8_t *p) { return (uint64_t)be32(p) << 32 | be32(p + 4); }

static uint8_t *put_be(uint8_t *o, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--)
        *o++ = (uint8_t)(v >> (8 * i));
    return o;
}

const char *kind_name(int kind)
{
    static const char *names[] = {
        "bad", "other", "data_update", "subscribed", "welcome", "error", "heartbeat",
        "resync", "eio_open", "eio_ping", "eio_close", "sio_connect", "sio_disconnect",
        "sio_ack", "sio_connect_error"};
    return kind >= 0 && kind <= K_SIO_CONNECT_ERROR ? names[kind] : "?";
}

/* ------------------------------------------------------------------ MessagePack */

const uint8_t *mp_skip(const uint8_t *p, const uint8_t *e, int depth)
{
    uint64_t n;
    uint8_t b;
    if (p >= e || depth > 64)
        return NULL;
    b = *p++;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
        return p;
    if ((b & 0xf0) == 0x80) {
        n = (uint64_t)(b & 0x0f) * 2;
        goto items;
    }
    if ((b & 0xf0) == 0x90) {
        n = b & 0x0f;
        goto items;
    }
    if ((b & 0xe0) == 0xa0) {
        n = b & 0x1f;
        goto bytes;
    }
    switch (b) {
    case 0xc4: case 0xd9: /* bin8, str8 */
        if (e - p < 1) return NULL;
        n = p[0]; p += 1; goto bytes;
    case 0xc5: case 0xda:
        if (e - p < 2) return NULL;
        n = be16(p); p += 2; goto bytes;
    case 0xc6: case 0xdb:
        if (e - p < 4) return NULL;
        n = be32(p); p += 4; goto bytes;
    case 0xc7: /* ext8: length, type, data */
        if (e - p < 1) return NULL;
        n = (uint64_t)p[0] + 1; p += 1; goto bytes;
    case 0xc8:
        if (e - p < 2) return NULL;
        n = (uint64_t)be16(p) + 1; p += 2; goto bytes;
    case 0xc9:
        if (e - p < 4) return NULL;
        n = (uint64_t)be32(p) + 1; p += 4; goto bytes;
    case 0xcc: case 0xd0: n = 1; goto bytes;
    case 0xcd: case 0xd1: n = 2; goto bytes;
    case 0xca: case 0xce: case 0xd2: n = 4; goto bytes;
    case 0xcb: case 0xcf: case 0xd3: n = 8; goto bytes;
    case 0xd4: n = 2; goto bytes; /* fixext 1..16: type + data */
    case 0xd5: n = 3; goto bytes;
    case 0xd6: n = 5; goto bytes;
    case 0xd7: n = 9; goto bytes;
    case 0xd8: n = 17; goto bytes;
    case 0xdc:
        if (e - p < 2) return NULL;
        n = be16(p); p += 2; goto items;
    case 0xdd:
        if (e - p < 4) return NULL;
        n = be32(p); p += 4; goto items;
    case 0xde:
        if (e - p < 2) return NULL;
        n = (uint64_t)be16(p) * 2; p += 2; goto items;
    case 0xdf:
        if (e - p < 4) return NULL;
        n = (uint64_t)be32(p) * 2; p += 4; goto items;
    default: /* 0xc1 is never used */
        return NULL;
    }
bytes:
    if ((uint64_t)(e - p) < n)
        return NULL;
    return p + n;
items:
    while (n--) {
        p = mp_skip(p, e, depth + 1);
        if (p == NULL)
            return NULL;
    }
    return p;
}

int mp_str(const uint8_t **pp, const uint8_t *e, const char **s, size_t *n)
{
    const uint8_t *p = *pp;
    size_t len, head;
    if (p >= e)
        return 0;
    if ((p[0] & 0xe0) == 0xa0) {
        len = p[0] & 0x1f;
        head = 1;
    } else if (p[0] == 0xd9 && e - p >= 2) {
        len = p[1];
        head = 2;
    } else if (p[0] == 0xda && e - p >= 3) {
        len = be16(p + 1);
        head = 3;
    } else if (p[0] == 0xdb && e - p >= 5) {
        len = be32(p + 1);
        head = 5;
    } else {
        return 0;
    }
    if ((size_t)(e - p) - head < len)
        return 0;
    *s = (const char *)p + head;
    *n = len;
    *pp = p + head + len;
    return 1;
}

int mp_int(const uint8_t **pp, const uint8_t *e, int64_t *v)
{
    const uint8_t *p = *pp;
    size_t avail = (size_t)(e - p);
    uint64_t u;
    if (avail < 1)
        return 0;
    if (p[0] <= 0x7f) {
        *v = p[0];
        *pp = p + 1;
        return 1;
    }
    if (p[0] >= 0xe0) {
        *v = (int8_t)p[0];
        *pp = p + 1;
        return 1;
    }
    switch (p[0]) {
    case 0xcc: if (avail < 2) return 0; *v = p[1]; *pp = p + 2; return 1;
    case 0xcd: if (avail < 3) return 0; *v = be16(p + 1); *pp = p + 3; return 1;
    case 0xce: if (avail < 5) return 0; *v = be32(p + 1); *pp = p + 5; return 1;
    case 0xcf:
        if (avail < 9) return 0;
        u = be64(p + 1);
        if (u > (uint64_t)INT64_MAX) return 0;
        *v = (int64_t)u; *pp = p + 9; return 1;
    case 0xd0: if (avail < 2) return 0; *v = (int8_t)p[1]; *pp = p + 2; return 1;
    case 0xd1: if (avail < 3) return 0; *v = (int16_t)be16(p + 1); *pp = p + 3; return 1;
    case 0xd2: if (avail < 5) return 0; *v = (int32_t)be32(p + 1); *pp = p + 5; return 1;
    case 0xd3: if (avail < 9) return 0; *v = (int64_t)be64(p + 1); *pp = p + 9; return 1;
    default: return 0;
    }
}

static int mp_container(const uint8_t **pp, const uint8_t *e, uint32_t *n, uint8_t fix,
                        uint8_t c16, uint8_t c32)
{
    const uint8_t *p = *pp;
    if (p >= e)
        return 0;
    if ((p[0] & 0xf0) == fix) {
        *n = p[0] & 0x0f;
        *pp = p + 1;
    } else if (p[0] == c16 && e - p >= 3) {
        *n = be16(p + 1);
        *pp = p + 3;
    } else if (p[0] == c32 && e - p >= 5) {
        *n = be32(p + 1);
        *pp = p + 5;
    } else {
        return 0;
    }
    return 1;
}

int mp_map(const uint8_t **pp, const uint8_t *e, uint32_t *n)
{
    return mp_container(pp, e, n, 0x80, 0xde, 0xdf);
}

int mp_array(const uint8_t **pp, const uint8_t *e, uint32_t *n)
{
    return mp_container(pp, e, n, 0x90, 0xdc, 0xdd);
}


uint8_t *mpw_map(uint8_t *o, uint32_t n)
{
    if (n < 16) { *o++ = (uint8_t)(0x80 | n); return o; }
    if (n < 65536) { *o++ = 0xde; return put_be(o, n, 2); }
    *o++ = 0xdf;
    return put_be(o, n, 4);
}

uint8_t *mpw_array(uint8_t *o, uint32_t n)
{
    if (n < 16) { *o++ = (uint8_t)(0x90 | n); return o; }
    if (n < 65536) { *o++ = 0xdc; return put_be(o, n, 2); }
    *o++ = 0xdd;
    return put_be(o, n, 4);
}

uint8_t *mpw_str(uint8_t *o, const char *s, size_t n)
{
    if (n < 32) *o++ = (uint8_t)(0xa0 | n);
    else if (n < 256) { *o++ = 0xd9; *o++ = (uint8_t)n; }
    else if (n < 65536) { *o++ = 0xda; o = put_be(o, n, 2); }
    else { *o++ = 0xdb; o = put_be(o, n, 4); }
    memcpy(o, s, n);
    return o + n;
}

uint8_t *mpw_cstr(uint8_t *o, const char *s) { return mpw_str(o, s, strlen(s)); }

uint8_t *mpw_uint(uint8_t *o, uint64_t v)
{
    if (v < 128) { *o++ = (uint8_t)v; return o; }
    if (v < 256) { *o++ = 0xcc; *o++ = (uint8_t)v; return o; }
    if (v < 65536) { *o++ = 0xcd; return put_be(o, v, 2); }
    if (v <= 0xffffffffu) { *o++ = 0xce; return put_be(o, v, 4); }
    *o++ = 0xcf;
    return put_be(o, v, 8);
}

/* ------------------------------------------------------------------ JSON */

char *json_str(char *o, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c < 0x20) {
            memcpy(o, "\\u00", 4);
            o[4] = hex[c >> 4];
            o[5] = hex[c & 15];
            o += 6;
        } else {
            *o++ = (char)c;
        }
    }
    *o++ = '"';
    return o;
}

static const uint8_t *js_ws(const uint8_t *p, const uint8_t *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* p at the opening quote; returns the position after the closing quote. */
static const uint8_t *js_string(const uint8_t *p, const uint8_t *e)
{
    for (p++; p < e; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return NULL;
}

static const uint8_t *js_skip(const uint8_t *p, const uint8_t *e, int depth)
{
    p = js_ws(p, e);
    if (p >= e || depth > 64)
        return NULL;
    if (*p == '"')
        return js_string(p, e);
    if (*p == '{' || *p == '[') {
        uint8_t close = *p == '{' ? '}' : ']';
        int object = *p == '{';
        p = js_ws(p + 1, e);
        if (p < e && *p == close)
            return p + 1;
        for (;;) {
            if (object) {
                p = js_ws(p, e);
                if (p >= e || *p != '"' || (p = js_string(p, e)) == NULL)
                    return NULL;
                p = js_ws(p, e);
                if (p >= e || *p != ':')
                    return NULL;
                p++;
            }
            if ((p = js_skip(p, e, depth + 1)) == NULL)
                return NULL;
            p = js_ws(p, e);
            if (p < e && *p == ',') {
                p++;
                continue;
            }
            if (p < e && *p == close)
                return p + 1;
            return NULL;
        }
    }
    {
        const uint8_t *start = p;
        while (p < e && ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || *p == '-'
                         || *p == '+' || *p == '.' || *p == 'E'))
            p++;
        return p > start ? p : NULL;
    }
}

/* An integer literal (no fraction, no exponent) at p: 1 and *v, or 0. */
static int js_int(const uint8_t *p, const uint8_t *end, int64_t *v)
{
    int neg = 0;
    uint64_t u = 0;
    const uint8_t *start;
    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    start = p;
    while (p < end && *p >= '0' && *p <= '9') {
        if (u > ((uint64_t)INT64_MAX - 9) / 10)
            return 0;
        u = u * 10 + (uint64_t)(*p++ - '0');
    }
    if (p == start || p != end)
        return 0;
    *v = neg ? -(int64_t)u : (int64_t)u;
    return 1;
}

static int key_is(const char *k, size_t kn, const char *want)
{
    size_t wn = strlen(want);
    return kn == wn && memcmp(k, want, wn) == 0;
}

static int event_kind(const char *s, size_t n)
{
    if (key_is(s, n, "data_update")) return K_DATA;
    if (key_is(s, n, "subscribed")) return K_SUBSCRIBED;
    if (key_is(s, n, "welcome")) return K_WELCOME;
    if (key_is(s, n, "error")) return K_ERROR;
    if (key_is(s, n, "heartbeat")) return K_HEARTBEAT;
    if (key_is(s, n, "resync")) return K_RESYNC;
    return K_OTHER;
}

void parse_sinal_json(const uint8_t *p, size_t n, msg_info *m)
{
    const uint8_t *e = p + n, *k, *kend, *v, *vend;
    const char *event = NULL;
    size_t event_len = 0;
    memset(m, 0, sizeof *m);
    m->kind = K_BAD;
    p = js_ws(p, e);
    if (p >= e || *p != '{')
        return;
    p = js_ws(p + 1, e);
    if (p < e && *p == '}') {
        p++;
        goto done;
    }
    for (;;) {
        if (p >= e || *p != '"' || (kend = js_string(p, e)) == NULL)
            return;
        k = p + 1;
        p = js_ws(kend, e);
        if (p >= e || *p != ':')
            return;
        v = js_ws(p + 1, e);
        if ((vend = js_skip(v, e, 1)) == NULL)
            return;
        if (key_is((const char *)k, (size_t)(kend - 1 - k), "event") && *v == '"') {
            event = (const char *)v + 1;
            event_len = (size_t)(vend - v - 2);
        } else if (key_is((const char *)k, (size_t)(kend - 1 - k), "offset")) {
            m->has_offset = js_int(v, vend, &m->offset);
        } else if (key_is((const char *)k, (size_t)(kend - 1 - k), "code") && *v == '"') {
            m->text = (const char *)v + 1;
            m->text_len = (size_t)(vend - v - 2);
        }
        p = js_ws(vend, e);
        if (p < e && *p == ',') {
            p = js_ws(p + 1, e);
            continue;
        }
        if (p < e && *p == '}') {
            p++;
            break;
        }
        return;
    }
done:
    if (js_ws(p, e) != e)
        return;
    m->kind = event ? event_kind(event, event_len) : K_OTHER;
}

void parse_sinal_msgpack(const uint8_t *p, size_t n, msg_info *m)
{
    const uint8_t *e = p + n;
    const char *k, *event = NULL;
    size_t kn, event_len = 0;
    uint32_t count;
    memset(m, 0, sizeof *m);
    m->kind = K_BAD;
    if (!mp_map(&p, e, &count))
        return;
    while (count--) {
        if (!mp_str(&p, e, &k, &kn)) {
            if ((p = mp_skip(p, e, 1)) == NULL || (p = mp_skip(p, e, 1)) == NULL)
                return;
            continue;
        }
        if (key_is(k, kn, "event") && mp_str(&p, e, &event, &event_len))
            continue;
        if (key_is(k, kn, "offset") && mp_int(&p, e, &m->offset)) {
            m->has_offset = 1;
            continue;
        }
        if (key_is(k, kn, "code") && mp_str(&p, e, &m->text, &m->text_len))
            continue;
        if ((p = mp_skip(p, e, 1)) == NULL)
            return;
    }
    if (p != e)
        return;
    m->kind = event ? event_kind(event, event_len) : K_OTHER;
}

/* socket.io packet `data`: an EVENT's [name, arg] or a CONNECT_ERROR's {message}. */
static const uint8_t *sio_data(const uint8_t *p, const uint8_t *e, msg_info *m,
                               const char **event, size_t *event_len)
{
    const uint8_t *q = p, *end = mp_skip(p, e, 1);
    uint32_t count;
    const char *k;
    size_t kn;
    if (end == NULL)
        return NULL;
    if (mp_array(&q, end, &count) && count >= 1 && mp_str(&q, end, event, event_len)
        && count >= 2 && mp_map(&q, end, &count)) {
        while (count--) {
            if (mp_str(&q, end, &k, &kn)) {
                if (key_is(k, kn, "offset") && mp_int(&q, end, &m->offset)) {
                    m->has_offset = 1;
                    continue;
                }
                if (key_is(k, kn, "code") && mp_str(&q, end, &m->text, &m->text_len))
                    continue;
            } else if ((q = mp_skip(q, end, 2)) == NULL) {
                break;
            }
            if ((q = mp_skip(q, end, 2)) == NULL)
                break;
        }
    } else if (q = p, mp_map(&q, end, &count)) {
        while (count--) {
            if (mp_str(&q, end, &k, &kn) && key_is(k, kn, "message")
                && mp_str(&q, end, &m->text, &m->text_len))
                break;
            if ((q = mp_skip(q, end, 2)) == NULL || (q = mp_skip(q, end, 2)) == NULL)
                break;
        }
    }
    return end;
}

void parse_socketio(int opcode, const uint8_t *p, size_t n, msg_info *m)
{
    const uint8_t *e = p + n;
    const char *k, *event = NULL;
    size_t kn, event_len = 0;
    uint32_t count;
    int64_t type = -1;
    memset(m, 0, sizeof *m);
    m->kind = K_BAD;
    if (opcode == 1) { /* Engine.IO text packet */
        if (n < 1)
            return;
        switch (p[0]) {
        case '0': m->kind = K_EIO_OPEN; break;
        case '1': m->kind = K_EIO_CLOSE; break;
        case '2': m->kind = n == 1 ? K_EIO_PING : K_OTHER; break;
        default: m->kind = K_OTHER; break;
        }
        return;
    }
    /* binary: a socket.io packet from socket.io-msgpack-parser, {type, nsp, data, id} */
    if (!mp_map(&p, e, &count))
        return;
    while (count--) {
        if (!mp_str(&p, e, &k, &kn)) {
            if ((p = mp_skip(p, e, 1)) == NULL || (p = mp_skip(p, e, 1)) == NULL)
                return;
            continue;
        }
        if (key_is(k, kn, "type") && mp_int(&p, e, &type))
            continue;
        if (key_is(k, kn, "id") && mp_int(&p, e, &m->id)) {
            m->has_id = 1;
            continue;
        }
        if (key_is(k, kn, "data")) {
            if ((p = sio_data(p, e, m, &event, &event_len)) == NULL)
                return;
            continue;
        }
        if ((p = mp_skip(p, e, 1)) == NULL)
            return;
    }
    if (p != e)
        return;
    switch (type) {
    case 0: m->kind = K_SIO_CONNECT; break;
    case 1: m->kind = K_SIO_DISCONNECT; break;
    case 2: m->kind = event ? event_kind(event, event_len) : K_OTHER; break;
    case 3: m->kind = K_SIO_ACK; break;
    case 4: m->kind = K_SIO_CONNECT_ERROR; break;
    default: m->kind = K_OTHER; break;
    }
}

/* ------------------------------------------------------------------ the marker */

#define MARK_DIGITS 17 /* f"{time.time():.6f}" until the year 2286 */

int find_mark(const uint8_t *p, size_t n, int64_t *us, char *phase)
{
    const uint8_t *e = p + n, *q;
    while (n >= 3 + MARK_DIGITS + 1 && (q = memmem(p, n, "@t=", 3)) != NULL) {
        const uint8_t *d = q + 3;
        int64_t whole = 0, frac = 0;
        int i = 0, fdigits = 0;
        if (e - d < MARK_DIGITS + 1)
            return 0;
        for (; i < MARK_DIGITS && d[i] >= '0' && d[i] <= '9'; i++)
            whole = whole * 10 + (d[i] - '0');
        if (i < MARK_DIGITS && d[i] == '.') {
            for (i++; i < MARK_DIGITS && d[i] >= '0' && d[i] <= '9'; i++, fdigits++)
                frac = frac * 10 + (d[i] - '0');
        }
        if (i == MARK_DIGITS && fdigits == 6) {
            *us = whole * 1000000 + frac;
            *phase = (char)d[MARK_DIGITS];
            return 1;
        }
        p = q + 1; /* not a marker after all: look further */
        n = (size_t)(e - p);
    }
    return 0;
}
