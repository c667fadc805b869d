/* The load client's state, shared by main.c (options, event loop, control lines, output),
 * conn.c (one connection's life: connect, handshake, frames) and send.c (what it sends). */
#ifndef LOADGEN_H
#define LOADGEN_H

#include <stddef.h>
#include <stdint.h>

#include "wire.h"

enum conn_state {
    S_IDLE = 0,         /* not opened yet */
    S_CONNECTING,       /* non-blocking connect in progress */
    S_HTTP,             /* upgrade request sent, waiting for 101 */
    S_AWAIT_SUBSCRIBED, /* Sinal: connect + subscribe sent */
    S_SIO_AWAIT_OPEN,   /* socket.io: waiting for Engine.IO open */
    S_SIO_AWAIT_CONNECT,/* socket.io: CONNECT {token} sent */
    S_SIO_AWAIT_ACK,    /* socket.io: emit("subscribe", ..., ack) sent */
    S_READY,
    S_CLOSED
};

typedef struct {
    int fd;
    uint8_t state;
    uint8_t frag_opcode;     /* opcode of a fragmented message being assembled; 0: none */
    uint32_t index;          /* the connection's number over all processes */
    int64_t opened_ns;       /* CLOCK_MONOTONIC */
    int64_t last_offset;     /* of the last data_update; -1: none yet */
    uint8_t *pend;           /* bytes of an incomplete frame (or HTTP head) */
    uint32_t pend_len, pend_cap;
    uint8_t *msg;            /* the fragments of a message so far */
    uint32_t msg_len, msg_cap;
    char key[25];            /* Sec-WebSocket-Key */
} conn;

#define MAX_REASONS 48
typedef struct {
    char text[100];
    uint64_t n;
} reason;
typedef struct {
    reason r[MAX_REASONS];
    int n;
} reasons;

/* Latency buckets, as bench/loadclient.py: 10 us below 100 ms, then 1 ms up to 600 s. */
#define FINE_BUCKETS 10000
#define COARSE_BUCKETS 600000
#define HIST_SIZE (FINE_BUCKETS + COARSE_BUCKETS)

typedef struct {
    uint64_t frames, stale, bytes, control, resyncs, data_updates, regressions, bad;
    uint64_t heartbeats, opened, recvs, wakeups, connects, address_retries;
    int peak_ready;
    uint32_t *hist;          /* commit-to-client latency */
    uint32_t *connect_hist;  /* open to subscribed */
    int64_t max_latency_us, connect_max_us;
    int64_t first_at_us, last_at_us;
    reasons closes;          /* ready connections that ended */
    int64_t cpu0_us, user0_us, sys0_us, wall0_ns;
} counters;

#define MAX_PORTS 64

typedef struct {
    /* options */
    int protocol, encoding;
    char host[64];
    int ports[MAX_PORTS];
    int nports;
    char path[256];
    int connections;         /* this process's */
    int first_index;         /* the number of its first connection over all processes */
    int total;               /* connections over all processes (source address spread) */
    int source_base;         /* first source address: 127.0.0.0 + base */
    int source_addrs;        /* addresses to spread over; 0: let the kernel choose */
    int source_shift;        /* blocks of source_addrs skipped: their ports ran out */
    int per_address;
    char **tokens;
    int ntokens;
    char **topics;
    int ntopics;
    double heartbeat_s;
    int window;
    double handshake_timeout_s;
    char phase;
    int decode;              /* self-test: feed stdin to one connection, print events */
    /* state */
    conn *conns;
    int started, ready, in_flight;
    int epfd;
    reasons failed;
    counters c;
    uint8_t *buf;
    size_t buf_size;
    uint64_t rng;
} loadgen;

extern loadgen G;

int64_t now_mono_ns(void);
int64_t now_real_us(void);
void reasons_add(reasons *r, const char *text);
void hist_add(uint32_t *hist, int64_t us);

/* conn.c */
void conn_open(conn *c);
void conn_connected(conn *c);
void conn_feed(conn *c, const uint8_t *data, size_t n, int64_t now_us);
void conn_fail(conn *c, const char *reason);
void conn_fail_errno(conn *c, const char *what, int err);

/* send.c: 0, or -1 when the connection failed (and is closed) */
uint64_t rng_next(void);
int send_bytes(conn *c, const uint8_t *p, size_t n);
int send_frame(conn *c, int opcode, const uint8_t *payload, size_t n);
void conn_start_handshake(conn *c); /* after 101: what the protocol sends first */
void conn_heartbeat(conn *c);
void send_sio_connect(conn *c);
void send_sio_subscribe(conn *c);

/* decode mode output (main.c) */
void decode_print(const char *fmt, ...);

#endif
