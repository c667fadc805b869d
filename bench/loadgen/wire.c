/* WebSocket framing of the load client, base64 and SHA-1 (for the handshake); see
 * wire.h. Written from RFC 6455 (WebSocket), RFC 4648 (base64), FIPS 180-4 (SHA-1). */
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

/* ------------------------------------------------------------------ WebSocket */

int ws_header(const uint8_t *p, size_t avail, int *fin, int *opcode, uint64_t *len,
              int *masked)
{
    uint64_t n;
    int head = 2, op;
    if (avail < 2)
        return 0;
    if (p[0] & 0x70)
        return -1; /* no extension was negotiated */
    op = p[0] & 0x0f;
    if ((op > 2 && op < 8) || op > 10)
        return -1;
    *fin = p[0] >> 7;
    *opcode = op;
    *masked = p[1] >> 7;
    n = p[1] & 0x7f;
    if (n == 126) {
        if (avail < 4)
            return 0;
        n = be16(p + 2);
        head = 4;
    } else if (n == 127) {
        if (avail < 10)
            return 0;
        n = be64(p + 2);
        if (n >> 63)
            return -1;
        head = 10;
    }
    if (op >= 8 && (!*fin || n > 125))
        return -1;
    if (*masked) {
        head += 4;
        if (avail < (size_t)head)
            return 0;
    }
    *len = n;
    return head;
}

size_t ws_client_frame(uint8_t *out, int opcode, const uint8_t *payload, size_t n,
                       uint32_t mask)
{
    uint8_t *o = out, key[4];
    *o++ = (uint8_t)(0x80 | opcode);
    if (n < 126) {
        *o++ = (uint8_t)(0x80 | n);
    } else if (n < 65536) {
        *o++ = 0x80 | 126;
        o = put_be(o, n, 2);
    } else {
        *o++ = 0x80 | 127;
        o = put_be(o, n, 8);
    }
    put_be(key, mask, 4);
    memcpy(o, key, 4);
    o += 4;
    for (size_t i = 0; i < n; i++)
        o[i] = payload[i] ^ key[i & 3];
    return (size_t)(o - out) + n;
}

size_t b64_encode(char *out, const uint8_t *in, size_t n)
{
    static const char abc[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *o = out;
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *o++ = abc[v >> 18];
        *o++ = abc[(v >> 12) & 63];
        *o++ = abc[(v >> 6) & 63];
        *o++ = abc[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
        *o++ = abc[v >> 18];
        *o++ = abc[(v >> 12) & 63];
        *o++ = i + 1 < n ? abc[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    *o = '\0';
    return (size_t)(o - out);
}

static uint32_t rol(uint32_t x, int k) { return x << k | x >> (32 - k); }

static void sha1_block(uint32_t h[5], const uint8_t *b)
{
    uint32_t w[80], a = h[0], bb = h[1], c = h[2], d = h[3], e = h[4];
    for (int t = 0; t < 16; t++)
        w[t] = be32(b + 4 * t);
    for (int t = 16; t < 80; t++)
        w[t] = rol(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1);
    for (int t = 0; t < 80; t++) {
        uint32_t f, k, tmp;
        if (t < 20) { f = (bb & c) | (~bb & d); k = 0x5a827999; }
        else if (t < 40) { f = bb ^ c ^ d; k = 0x6ed9eba1; }
        else if (t < 60) { f = (bb & c) | (bb & d) | (c & d); k = 0x8f1bbcdc; }
        else { f = bb ^ c ^ d; k = 0xca62c1d6; }
        tmp = rol(a, 5) + f + e + k + w[t];
        e = d; d = c; c = rol(bb, 30); bb = a; a = tmp;
    }
    h[0] += a; h[1] += bb; h[2] += c; h[3] += d; h[4] += e;
}

void sha1(const uint8_t *data, size_t n, uint8_t out[20])
{
    uint32_t h[5] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0};
    uint8_t tail[128];
    size_t full = n / 64 * 64, rest = n - full, tail_len;
    for (size_t i = 0; i < full; i += 64)
        sha1_block(h, data + i);
    memset(tail, 0, sizeof tail);
    memcpy(tail, data + full, rest);
    tail[rest] = 0x80;
    tail_len = rest + 1 + 8 <= 64 ? 64 : 128;
    put_be(tail + tail_len - 8, (uint64_t)n * 8, 8);
    for (size_t i = 0; i < tail_len; i += 64)
        sha1_block(h, tail + i);
    for (int i = 0; i < 5; i++)
        put_be(out + 4 * i, h[i], 4);
}

void ws_accept(const char *key, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    uint8_t buf[128], digest[20];
    size_t kn = strlen(key);
    if (kn > sizeof buf - sizeof guid)
        kn = sizeof buf - sizeof guid;
    memcpy(buf, key, kn);
    memcpy(buf + kn, guid, sizeof guid - 1);
    sha1(buf, kn + sizeof guid - 1, digest);
    b64_encode(out, digest, 20);
}
