/* What the load client sends: masked frames, Sinal's connect / subscribe / heartbeat,
 * socket.io's CONNECT / subscribe / heartbeat packets, pongs. In --decode mode frames are
 * printed instead of sent. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "loadgen.h"

#define SCRATCH (64u << 10)

static uint8_t scratch[SCRATCH];      /* payloads being built */
static uint8_t framebuf[2 * SCRATCH]; /* frames being sent */

uint64_t rng_next(void)
{
    uint64_t x = G.rng; /* xorshift64: masks and keys need not be secret here */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return G.rng = x;
}


/* ---------------------------------------------------------------- sending */

int send_bytes(conn *c, const uint8_t *p, size_t n)
{
    ssize_t k;
    if (G.decode || n == 0)
        return 0;
    k = send(c->fd, p, n, MSG_NOSIGNAL);
    if (k == (ssize_t)n)
        return 0;
    if (k < 0)
        conn_fail_errno(c, "send", errno);
    else
        conn_fail(c, "send: short write");
    return -1;
}

/* Append one masked frame to framebuf at *len (decode mode: print it instead). */
static void add_frame(size_t *len, int opcode, const uint8_t *payload, size_t n)
{
    if (G.decode) {
        char hex[2 * 512 + 1];
        size_t k = n < 512 ? n : 512;
        for (size_t i = 0; i < k; i++)
            snprintf(hex + 2 * i, 3, "%02x", payload[i]);
        hex[2 * k] = '\0';
        decode_print("{\"event\":\"sent\",\"opcode\":%d,\"payload\":\"%s\"}", opcode, hex);
        return;
    }
    *len += ws_client_frame(framebuf + *len, opcode, payload, n, (uint32_t)rng_next());
}

int send_frame(conn *c, int opcode, const uint8_t *payload, size_t n)
{
    size_t len = 0;
    add_frame(&len, opcode, payload, n);
    return send_bytes(c, framebuf, len);
}

static const char *token_of(conn *c) { return G.tokens[c->index % (uint32_t)G.ntokens]; }

static int data_opcode(void) { return G.encoding == E_JSON ? 1 : 2; }

/* Sinal: {"event":"connect","token":T} then {"event":"subscribe","events":[...],"ref":1} */
static size_t sinal_connect(uint8_t *o, const char *token)
{
    uint8_t *p = o;
    if (G.encoding == E_JSON) {
        char *q = (char *)o;
        q += sprintf(q, "{\"event\":\"connect\",\"token\":");
        q = json_str(q, token, strlen(token));
        *q++ = '}';
        return (size_t)((uint8_t *)q - o);
    }
    p = mpw_map(p, 2);
    p = mpw_cstr(p, "event");
    p = mpw_cstr(p, "connect");
    p = mpw_cstr(p, "token");
    p = mpw_cstr(p, token);
    return (size_t)(p - o);
}

static size_t topics_msgpack(uint8_t *o)
{
    uint8_t *p = mpw_array(o, (uint32_t)G.ntopics);
    for (int i = 0; i < G.ntopics; i++)
        p = mpw_cstr(p, G.topics[i]);
    return (size_t)(p - o);
}

static size_t sinal_subscribe(uint8_t *o)
{
    uint8_t *p = o;
    if (G.encoding == E_JSON) {
        char *q = (char *)o;
        q += sprintf(q, "{\"event\":\"subscribe\",\"events\":[");
        for (int i = 0; i < G.ntopics; i++) {
            if (i)
                *q++ = ',';
            q = json_str(q, G.topics[i], strlen(G.topics[i]));
        }
        q += sprintf(q, "],\"ref\":1}");
        return (size_t)((uint8_t *)q - o);
    }
    p = mpw_map(p, 3);
    p = mpw_cstr(p, "event");
    p = mpw_cstr(p, "subscribe");
    p = mpw_cstr(p, "events");
    p += topics_msgpack(p);
    p = mpw_cstr(p, "ref");
    p = mpw_uint(p, 1);
    return (size_t)(p - o);
}

/* socket.io packet {type, nsp:"/", data, id?}: the caller writes `data` after it. */
static uint8_t *sio_head(uint8_t *p, int type, int with_id)
{
    p = mpw_map(p, with_id ? 4 : 3);
    p = mpw_cstr(p, "type");
    p = mpw_uint(p, (uint64_t)type);
    p = mpw_cstr(p, "nsp");
    p = mpw_cstr(p, "/");
    if (with_id) {
        p = mpw_cstr(p, "id");
        p = mpw_uint(p, 1);
    }
    return mpw_cstr(p, "data");
}

void conn_start_handshake(conn *c)
{
    size_t len = 0, n;
    if (G.protocol == P_SOCKETIO) {
        c->state = S_SIO_AWAIT_OPEN;
        return;
    }
    c->state = S_AWAIT_SUBSCRIBED;
    /* pipelined: the server answers connect before it reads subscribe */
    n = sinal_connect(scratch, token_of(c));
    add_frame(&len, data_opcode(), scratch, n);
    n = sinal_subscribe(scratch);
    add_frame(&len, data_opcode(), scratch, n);
    send_bytes(c, framebuf, len);
}

void conn_heartbeat(conn *c)
{
    uint8_t *p = scratch;
    uint64_t ms = (uint64_t)(now_real_us() / 1000);
    if (G.protocol == P_SOCKETIO) {
        p = sio_head(p, 2, 0);
        p = mpw_array(p, 2);
        p = mpw_cstr(p, "heartbeat");
        p = mpw_map(p, 1);
        p = mpw_cstr(p, "timestamp");
        p = mpw_uint(p, ms);
    } else if (G.encoding == E_JSON) {
        p += sprintf((char *)p, "{\"event\":\"heartbeat\",\"timestamp\":%llu}",
                     (unsigned long long)ms);
    } else {
        p = mpw_map(p, 2);
        p = mpw_cstr(p, "event");
        p = mpw_cstr(p, "heartbeat");
        p = mpw_cstr(p, "timestamp");
        p = mpw_uint(p, ms);
    }
    if (send_frame(c, G.protocol == P_SOCKETIO ? 2 : data_opcode(), scratch,
                   (size_t)(p - scratch)) == 0)
        G.c.heartbeats++;
}

void send_sio_connect(conn *c)
{
    uint8_t *p = sio_head(scratch, 0, 0);
    p = mpw_map(p, 1);
    p = mpw_cstr(p, "token");
    p = mpw_cstr(p, token_of(c));
    send_frame(c, 2, scratch, (size_t)(p - scratch));
}

void send_sio_subscribe(conn *c)
{
    uint8_t *p = sio_head(scratch, 2, 1);
    p = mpw_array(p, 2);
    p = mpw_cstr(p, "subscribe");
    p = mpw_map(p, 1);
    p = mpw_cstr(p, "events");
    p += topics_msgpack(p);
    send_frame(c, 2, scratch, (size_t)(p - scratch));
}
