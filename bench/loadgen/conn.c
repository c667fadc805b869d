/* One connection's life: non-blocking connect from a chosen source address, the
 * WebSocket upgrade, Sinal's connect + subscribe or socket.io's open / CONNECT / subscribe
 * with ack, then frames: data frames are counted and timed, pings answered. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "loadgen.h"

#define MAX_MESSAGE (64u << 20)
#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24 /* linux/in.h, since Linux 4.2 */
#endif
#define ADDRESS_BLOCKS 16 /* blocks of source addresses tried when ports run out */

int64_t now_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t now_real_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Reasons quote what servers sent: keep them printable ASCII for the JSON output. */
static void printable(char out[100], const char *text)
{
    snprintf(out, 100, "%s", text);
    for (char *t = out; *t; t++)
        if (*t < 0x20 || *t > 0x7e)
            *t = '?';
}

void reasons_add(reasons *r, const char *text)
{
    char clean[sizeof r->r[0].text];
    printable(clean, text);
    text = clean;
    for (int i = 0; i < r->n; i++) {
        if (strcmp(r->r[i].text, text) == 0) {
            r->r[i].n++;
            return;
        }
    }
    if (r->n == MAX_REASONS) { /* the last slot collects the rest */
        snprintf(r->r[MAX_REASONS - 1].text, sizeof r->r[0].text, "other reasons");
        r->r[MAX_REASONS - 1].n++;
        return;
    }
    snprintf(r->r[r->n].text, sizeof r->r[0].text, "%s", text);
    r->r[r->n++].n = 1;
}

void hist_add(uint32_t *hist, int64_t us)
{
    int64_t b;
    if (us < 0)
        us = 0;
    b = us < 100000 ? us / 10 : FINE_BUCKETS + us / 1000;
    hist[b < HIST_SIZE ? b : HIST_SIZE - 1]++;
}

void conn_fail_errno(conn *c, const char *what, int err)
{
    char text[100];
    snprintf(text, sizeof text, "%s: %s", what, strerror(err));
    conn_fail(c, text);
}

void conn_fail(conn *c, const char *why)
{
    if (c->state == S_CLOSED)
        return;
    if (c->state == S_READY) {
        G.ready--;
        reasons_add(&G.c.closes, why);
    } else {
        reasons_add(&G.failed, why);
        if (c->state != S_IDLE)
            G.in_flight--;
    }
    if (c->fd >= 0)
        close(c->fd); /* also leaves the epoll set */
    c->fd = -1;
    free(c->pend);
    free(c->msg);
    c->pend = c->msg = NULL;
    c->pend_len = c->pend_cap = c->msg_len = c->msg_cap = 0;
    c->state = S_CLOSED;
    if (G.decode) {
        char clean[100], esc[2 * 100 + 3];
        printable(clean, why);
        *json_str(esc, clean, strlen(clean)) = '\0';
        decode_print("{\"event\":\"fail\",\"reason\":%s}", esc);
    }
}

/* ---------------------------------------------------------------- opening */

void conn_open(conn *c)
{
    struct sockaddr_in dst, src;
    struct epoll_event ev;
    int fd, one = 1;
    c->index = (uint32_t)(G.first_index + (c - G.conns));
    c->opened_ns = now_mono_ns();
    c->state = S_CONNECTING;
    c->last_offset = -1;
    c->fd = -1;
    G.started++;
    G.in_flight++;
    G.c.opened++;
    memset(&dst, 0, sizeof dst);
    dst.sin_family = AF_INET;
    dst.sin_port = htons((uint16_t)G.ports[c->index % (uint32_t)G.nports]);
    inet_pton(AF_INET, G.host, &dst.sin_addr);
    for (;;) {
        fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            conn_fail_errno(c, "socket", errno);
            return;
        }
        c->fd = fd;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (G.source_addrs > 0) {
            /* bind(address, 0) with IP_BIND_ADDRESS_NO_PORT: the port is picked at connect
               time, by the whole 4-tuple, among this address's own ports (each source
               address has the whole ephemeral range). Without the option bind() must find
               a port unused on the address, which takes longer the more are in use (most
               of the client's CPU past 25,000 connections per address). */
            const char *what = "bind";
            setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
            memset(&src, 0, sizeof src);
            src.sin_family = AF_INET;
            src.sin_addr.s_addr = htonl(0x7f000000u + (uint32_t)G.source_base
                                        + c->index % (uint32_t)G.source_addrs
                                        + (uint32_t)(G.source_shift * G.source_addrs));
            if (bind(fd, (struct sockaddr *)&src, sizeof src) == 0) {
                what = "connect";
                if (connect(fd, (struct sockaddr *)&dst, sizeof dst) == 0 || errno == EINPROGRESS)
                    break;
            }
            if ((errno != EADDRINUSE && errno != EADDRNOTAVAIL)
                || G.source_shift + 1 >= ADDRESS_BLOCKS
                || G.source_base + (G.source_shift + 2) * G.source_addrs > 0xffffff) {
                conn_fail_errno(c, what, errno);
                return;
            }
        } else if (connect(fd, (struct sockaddr *)&dst, sizeof dst) == 0
                   || errno == EINPROGRESS) {
            break;
        } else {
            conn_fail_errno(c, "connect", errno);
            return;
        }
        /* no port left on this address (other programs may use 127.0.0.x too): this and
           every later connection move on to the next block of addresses */
        close(fd);
        c->fd = -1;
        G.source_shift++;
        G.c.address_retries++;
    }
    ev.events = EPOLLOUT | EPOLLIN;
    ev.data.u64 = (uint64_t)(c - G.conns) + 1;
    if (epoll_ctl(G.epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        conn_fail_errno(c, "epoll", errno);
}

void conn_connected(conn *c)
{
    char req[1024];
    uint8_t raw[16];
    struct epoll_event ev;
    int err = 0, n;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err) {
        conn_fail_errno(c, "connect", err);
        return;
    }
    for (int i = 0; i < 16; i += 8) {
        uint64_t r = rng_next();
        memcpy(raw + i, &r, 8);
    }
    b64_encode(c->key, raw, 16);
    n = snprintf(req, sizeof req,
                 "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                 "Sec-WebSocket-Version: 13\r\n%s\r\n",
                 G.path, G.host, G.ports[c->index % (uint32_t)G.nports], c->key,
                 G.protocol == P_SOCKETIO ? ""
                 : G.encoding == E_JSON ? "Sec-WebSocket-Protocol: sinal.json.v1\r\n"
                                        : "Sec-WebSocket-Protocol: sinal.msgpack.v1\r\n");
    c->state = S_HTTP;
    if (send_bytes(c, (const uint8_t *)req, (size_t)n) < 0)
        return;
    ev.events = EPOLLIN;
    ev.data.u64 = (uint64_t)(c - G.conns) + 1;
    if (epoll_ctl(G.epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        conn_fail_errno(c, "epoll", errno);
}

/* ---------------------------------------------------------------- buffers */

static int grow(conn *c, uint8_t **buf, uint32_t *len, uint32_t *cap, const uint8_t *p,
                size_t n)
{
    if ((size_t)*len + n > MAX_MESSAGE + 16) {
        conn_fail(c, "protocol: message over 64 MiB");
        return 0;
    }
    if (*len + n > *cap) {
        uint32_t want = *cap ? *cap : 512;
        uint8_t *b;
        while (want < *len + n)
            want *= 2;
        if ((b = realloc(*buf, want)) == NULL) {
            conn_fail(c, "out of memory");
            return 0;
        }
        *buf = b;
        *cap = want;
    }
    memcpy(*buf + *len, p, n);
    *len += (uint32_t)n;
    return 1;
}

/* ---------------------------------------------------------------- messages */

static void parse(int opcode, const uint8_t *p, size_t n, msg_info *m)
{
    if (G.protocol == P_SOCKETIO)
        parse_socketio(opcode, p, n, m);
    else if (G.encoding == E_JSON)
        parse_sinal_json(p, n, m);
    else
        parse_sinal_msgpack(p, n, m);
}

static void become_ready(conn *c)
{
    int64_t us = (now_mono_ns() - c->opened_ns) / 1000;
    c->state = S_READY;
    G.ready++;
    G.in_flight--;
    if (G.ready > G.c.peak_ready)
        G.c.peak_ready = G.ready;
    G.c.connects++;
    hist_add(G.c.connect_hist, us);
    if (us > G.c.connect_max_us)
        G.c.connect_max_us = us;
    if (G.decode)
        decode_print("{\"event\":\"ready\"}");
}

static void fail_with_text(conn *c, const char *what, const msg_info *m)
{
    char text[100];
    snprintf(text, sizeof text, "%s %.*s", what, (int)(m->text_len < 60 ? m->text_len : 60),
             m->text ? m->text : "");
    conn_fail(c, text);
}

static void handshake_message(conn *c, const msg_info *m)
{
    if (m->kind == K_EIO_PING) {
        send_frame(c, 1, (const uint8_t *)"3", 1);
        return;
    }
    if (m->kind == K_EIO_CLOSE || m->kind == K_SIO_DISCONNECT) {
        conn_fail(c, "socket.io disconnect");
        return;
    }
    switch (c->state) {
    case S_AWAIT_SUBSCRIBED:
        if (m->kind == K_SUBSCRIBED)
            become_ready(c);
        else if (m->kind == K_ERROR)
            fail_with_text(c, "error", m);
        else if (m->kind == K_BAD)
            conn_fail(c, "undecodable frame before subscribed");
        break;
    case S_SIO_AWAIT_OPEN:
        if (m->kind == K_EIO_OPEN) {
            c->state = S_SIO_AWAIT_CONNECT;
            send_sio_connect(c);
        }
        break;
    case S_SIO_AWAIT_CONNECT:
        if (m->kind == K_SIO_CONNECT) {
            c->state = S_SIO_AWAIT_ACK;
            send_sio_subscribe(c);
        } else if (m->kind == K_SIO_CONNECT_ERROR) {
            fail_with_text(c, "connect_error", m);
        }
        break;
    case S_SIO_AWAIT_ACK:
        if (m->kind == K_SIO_ACK && m->has_id && m->id == 1)
            become_ready(c);
        break;
    default:
        break;
    }
}

static void message(conn *c, int opcode, const uint8_t *p, size_t n, int64_t now_us)
{
    msg_info m;
    int64_t mark_us = 0;
    char phase = 0;
    int marked = find_mark(p, n, &mark_us, &phase);
    parse(opcode, p, n, &m);
    if (G.decode)
        decode_print("{\"event\":\"message\",\"opcode\":%d,\"kind\":\"%s\",\"offset\":%lld,"
                     "\"mark\":%lld,\"phase\":\"%c\"}", opcode, kind_name(m.kind),
                     m.has_offset ? (long long)m.offset : -1LL,
                     marked ? (long long)mark_us : -1LL, marked ? phase : '-');
    if (c->state != S_READY) {
        handshake_message(c, &m);
        return;
    }
    if (m.kind == K_DATA) {
        G.c.data_updates++;
        if (m.has_offset) {
            if (m.offset <= c->last_offset)
                G.c.regressions++; /* a repeat or a step back: never expected */
            c->last_offset = m.offset;
        }
    }
    if (marked) {
        if (phase != G.phase) {
            G.c.stale++; /* a frame of an earlier phase, still arriving */
        } else {
            int64_t lat = now_us - mark_us;
            G.c.frames++;
            hist_add(G.c.hist, lat);
            if (lat > G.c.max_latency_us)
                G.c.max_latency_us = lat;
            if (!G.c.first_at_us)
                G.c.first_at_us = now_us;
            G.c.last_at_us = now_us;
        }
        return;
    }
    G.c.control++;
    switch (m.kind) {
    case K_RESYNC: G.c.resyncs++; break;
    case K_BAD: G.c.bad++; break;
    case K_EIO_PING: send_frame(c, 1, (const uint8_t *)"3", 1); break;
    case K_EIO_CLOSE: case K_SIO_DISCONNECT: conn_fail(c, "socket.io disconnect"); break;
    default: break;
    }
}

static void control_frame(conn *c, int opcode, const uint8_t *p, size_t n)
{
    char text[100];
    if (c->state == S_READY)
        G.c.control++;
    if (G.decode)
        decode_print("{\"event\":\"control\",\"opcode\":%d,\"length\":%zu}", opcode, n);
    if (opcode == 8) {
        int code = n >= 2 ? (p[0] << 8 | p[1]) : 1005;
        int rn = n > 2 ? (int)(n - 2 < 60 ? n - 2 : 60) : 0;
        snprintf(text, sizeof text, "closed %d %.*s", code, rn, (const char *)p + 2);
        conn_fail(c, text);
    } else if (opcode == 9) {
        send_frame(c, 10, p, n);
    }
}

/* Whole frames of p[0..n): returns the bytes used, or -1 when the connection closed. */
static long frames(conn *c, const uint8_t *p, size_t n, int64_t now_us)
{
    size_t pos = 0;
    while (n - pos >= 2) {
        int fin, opcode, masked, head;
        uint64_t len;
        const uint8_t *payload;
        head = ws_header(p + pos, n - pos, &fin, &opcode, &len, &masked);
        if (head == 0)
            break;
        if (head < 0 || masked) {
            conn_fail(c, head < 0 ? "protocol: bad frame header" : "protocol: masked frame");
            return -1;
        }
        if (len > MAX_MESSAGE) {
            conn_fail(c, "protocol: message over 64 MiB");
            return -1;
        }
        if ((uint64_t)(n - pos - (size_t)head) < len)
            break;
        payload = p + pos + head;
        pos += (size_t)head + (size_t)len;
        if (opcode >= 8) {
            control_frame(c, opcode, payload, (size_t)len);
        } else if (opcode == 0) {
            if (!c->frag_opcode) {
                conn_fail(c, "protocol: continuation without a first fragment");
                return -1;
            }
            if (!grow(c, &c->msg, &c->msg_len, &c->msg_cap, payload, (size_t)len))
                return -1;
            if (fin) {
                int first = c->frag_opcode;
                c->frag_opcode = 0;
                message(c, first, c->msg, c->msg_len, now_us);
                c->msg_len = 0;
            }
        } else if (c->frag_opcode) {
            conn_fail(c, "protocol: new message inside a fragmented one");
            return -1;
        } else if (!fin) {
            c->frag_opcode = (uint8_t)opcode;
            c->msg_len = 0;
            if (!grow(c, &c->msg, &c->msg_len, &c->msg_cap, payload, (size_t)len))
                return -1;
        } else {
            message(c, opcode, payload, (size_t)len, now_us);
        }
        if (c->state == S_CLOSED)
            return -1;
    }
    return (long)pos;
}

static void frames_pending(conn *c, int64_t now_us)
{
    long used = frames(c, c->pend, c->pend_len, now_us);
    if (used < 0)
        return;
    c->pend_len -= (uint32_t)used;
    memmove(c->pend, c->pend + used, c->pend_len);
    if (c->pend_len == 0 && c->pend_cap > 4096) {
        free(c->pend);
        c->pend = NULL;
        c->pend_cap = 0;
    }
}

/* The HTTP answer to the upgrade: 101 and the right Sec-WebSocket-Accept. */
static void http_head(conn *c, int64_t now_us)
{
    const uint8_t *end = memmem(c->pend, c->pend_len, "\r\n\r\n", 4);
    const char *line, *head = (const char *)c->pend, *stop;
    char want[29], text[100];
    int accepted = 0;
    size_t head_len;
    if (end == NULL) {
        if (c->pend_len > 16384)
            conn_fail(c, "upgrade: response head over 16 KiB");
        return;
    }
    head_len = (size_t)(end - c->pend) + 4;
    stop = head + head_len - 2;
    if (strncmp(head, "HTTP/1.1 101", 12) != 0) {
        int n = (int)strcspn(head, "\r");
        snprintf(text, sizeof text, "upgrade refused: %.*s", n < 60 ? n : 60, head);
        conn_fail(c, text);
        return;
    }
    ws_accept(c->key, want);
    for (line = memchr(head, '\n', head_len); line != NULL && line + 1 < stop;
         line = memchr(line + 1, '\n', (size_t)(stop - line - 1))) {
        const char *v = line + 1;
        if ((size_t)(stop - v) > 21 + 28 && strncasecmp(v, "Sec-WebSocket-Accept:", 21) == 0) {
            for (v += 21; *v == ' ' || *v == '\t'; v++)
                ;
            accepted = stop - v >= 28 && strncmp(v, want, 28) == 0
                       && (v[28] == '\r' || v[28] == ' ');
        }
    }
    if (!accepted) {
        conn_fail(c, "upgrade: wrong Sec-WebSocket-Accept");
        return;
    }
    c->pend_len -= (uint32_t)head_len;
    memmove(c->pend, c->pend + head_len, c->pend_len);
    conn_start_handshake(c);
    if (c->state != S_CLOSED && c->pend_len)
        frames_pending(c, now_us);
}

void conn_feed(conn *c, const uint8_t *data, size_t n, int64_t now_us)
{
    long used;
    if (c->state == S_HTTP) {
        if (grow(c, &c->pend, &c->pend_len, &c->pend_cap, data, n))
            http_head(c, now_us);
        return;
    }
    if (c->pend_len) {
        if (grow(c, &c->pend, &c->pend_len, &c->pend_cap, data, n))
            frames_pending(c, now_us);
        return;
    }
    used = frames(c, data, n, now_us);
    if (used >= 0 && (size_t)used < n)
        grow(c, &c->pend, &c->pend_len, &c->pend_cap, data + used, n - (size_t)used);
}
