/* loadgen: the bench's compiled load client. One process, one thread, epoll.
 *
 *   loadgen --protocol sinal|socketio [--encoding msgpack|json] --port P[,P...]
 *           --connections N --token-file F --topics a,b [--heartbeat S] [--phase C]
 *           [--first-index K --total T] [--source-addrs K | --per-address M] [--cpus 1,2]
 *   loadgen --decode ...   self-test: stdin is what a server sent to one connection
 *
 * It opens N connections (at most --window handshakes in flight), each from a source
 * address 127.0.0.<2 + index % K> so that K addresses give K x ~28k ephemeral ports,
 * upgrades, authenticates and subscribes, then reads: frames carrying the bench writer's
 * marker are counted and timed, pings answered, heartbeats sent every --heartbeat s.
 *
 * Control lines on stdin: "stats [brief] [reset] [phase=C]" answers one JSON line
 * {"type":"stats",...} on stdout (the counters since the last reset, then resets them
 * when asked, then counts only frames of phase C); "exit" (or end of stdin) aborts every
 * socket (RST: no TIME_WAIT left on 127.0.0.x) and ends. When every connection has been
 * tried, it writes {"type":"ready",...}.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loadgen.h"

loadgen G;

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "loadgen: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

void decode_print(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    putchar('\n');
    va_end(ap);
}

/* ---------------------------------------------------------------- output */

typedef struct {
    char *p;
    size_t len, cap;
} out;

static void put(out *o, const char *fmt, ...)
{
    va_list ap;
    int n;
    for (;;) {
        size_t room = o->cap - o->len;
        va_start(ap, fmt);
        n = vsnprintf(o->p + o->len, room, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < room)
            break;
        o->cap = o->cap ? o->cap * 2 : 65536;
        if ((o->p = realloc(o->p, o->cap)) == NULL)
            die("out of memory");
    }
    o->len += (size_t)n;
}

static void put_reasons(out *o, const char *name, const reasons *r)
{
    char esc[6 * sizeof r->r[0].text + 3];
    put(o, ",\"%s\":{", name);
    for (int i = 0; i < r->n; i++) {
        *json_str(esc, r->r[i].text, strlen(r->r[i].text)) = '\0';
        put(o, "%s%s:%llu", i ? "," : "", esc, (unsigned long long)r->r[i].n);
    }
    put(o, "}");
}

static void put_hist(out *o, const char *name, const uint32_t *h)
{
    int first = 1;
    put(o, ",\"%s\":{", name);
    for (int i = 0; i < HIST_SIZE; i++) {
        if (h[i]) {
            put(o, "%s\"%d\":%u", first ? "" : ",", i, h[i]);
            first = 0;
        }
    }
    put(o, "}");
}

static void emit(out *o)
{
    put(o, "}\n");
    fwrite(o->p, 1, o->len, stdout);
    fflush(stdout);
    o->len = 0;
}

static int64_t cpu_us(int64_t *user, int64_t *sys)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *user = (int64_t)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec;
    *sys = (int64_t)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec;
    return *user + *sys;
}

static void counters_reset(counters *c)
{
    uint32_t *hist = c->hist, *connect_hist = c->connect_hist;
    memset(hist, 0, sizeof(uint32_t) * HIST_SIZE);
    memset(connect_hist, 0, sizeof(uint32_t) * HIST_SIZE);
    memset(c, 0, sizeof *c);
    c->hist = hist;
    c->connect_hist = connect_hist;
    c->peak_ready = G.ready;
    c->cpu0_us = cpu_us(&c->user0_us, &c->sys0_us);
    c->wall0_ns = now_mono_ns();
}

static void put_cpu(out *o, const counters *c)
{
    int64_t user, sys, cpu = cpu_us(&user, &sys);
    put(o, ",\"cpuSeconds\":%.6f,\"userSeconds\":%.6f,\"systemSeconds\":%.6f,"
        "\"wallSeconds\":%.6f", (double)(cpu - c->cpu0_us) / 1e6,
        (double)(user - c->user0_us) / 1e6, (double)(sys - c->sys0_us) / 1e6,
        (double)(now_mono_ns() - c->wall0_ns) / 1e9);
}

static void print_stats(out *o, int brief)
{
    const counters *c = &G.c;
    put(o, "{\"type\":\"stats\",\"ready\":%d,\"peakReady\":%d,\"opened\":%llu,"
        "\"completed\":0,\"frames\":%llu,\"staleFrames\":%llu,\"bytes\":%llu,"
        "\"controlFrames\":%llu,\"resyncs\":%llu,\"dataUpdates\":%llu,"
        "\"offsetRegressions\":%llu,\"badFrames\":%llu,\"heartbeats\":%llu,"
        "\"recvCalls\":%llu,\"wakeups\":%llu,\"connects\":%llu,\"addressRetries\":%llu,"
        "\"sourceShift\":%d,\"maxLatency\":%.6f,"
        "\"firstAt\":%.6f,\"lastAt\":%.6f,\"connectMaxMs\":%.3f",
        G.ready, c->peak_ready, (unsigned long long)c->opened,
        (unsigned long long)c->frames, (unsigned long long)c->stale,
        (unsigned long long)c->bytes, (unsigned long long)c->control,
        (unsigned long long)c->resyncs, (unsigned long long)c->data_updates,
        (unsigned long long)c->regressions, (unsigned long long)c->bad,
        (unsigned long long)c->heartbeats, (unsigned long long)c->recvs,
        (unsigned long long)c->wakeups, (unsigned long long)c->connects,
        (unsigned long long)c->address_retries, G.source_shift, (double)c->max_latency_us / 1e6,
        (double)c->first_at_us / 1e6, (double)c->last_at_us / 1e6,
        (double)c->connect_max_us / 1e3);
    put_cpu(o, c);
    put_reasons(o, "failed", &G.failed);
    put_reasons(o, "closes", &c->closes);
    if (!brief) {
        put_hist(o, "hist", c->hist);
        put_hist(o, "connectHist", c->connect_hist);
    }
}

static void print_ready(out *o)
{
    put(o, "{\"type\":\"ready\",\"ready\":%d,\"seconds\":%.3f,\"connectMaxMs\":%.3f,"
        "\"sourceAddresses\":%d,\"sourceShift\":%d,\"addressRetries\":%llu,"
        "\"connections\":%d",
        G.ready, (double)(now_mono_ns() - G.c.wall0_ns) / 1e9,
        (double)G.c.connect_max_us / 1e3, G.source_addrs, G.source_shift,
        (unsigned long long)G.c.address_retries, G.connections);
    put_cpu(o, &G.c);
    put_reasons(o, "failed", &G.failed);
    put_hist(o, "connectHist", G.c.connect_hist);
    emit(o);
}

/* ---------------------------------------------------------------- options */

static char **split(const char *s, int *count)
{
    char *copy = strdup(s), *save = NULL, *tok;
    char **items = NULL;
    *count = 0;
    for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        items = realloc(items, sizeof *items * (size_t)(*count + 1));
        items[(*count)++] = tok;
    }
    return items;
}

static void read_tokens(const char *path)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    if (f == NULL)
        die("cannot read the token file %s: %s", path, strerror(errno));
    while ((n = getline(&line, &cap, f)) >= 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' '))
            line[--n] = '\0';
        if (n == 0)
            continue;
        if (n > 16384)
            die("a token over 16 KiB in %s", path);
        G.tokens = realloc(G.tokens, sizeof *G.tokens * (size_t)(G.ntokens + 1));
        G.tokens[G.ntokens++] = strdup(line);
    }
    free(line);
    fclose(f);
}

/* The kernel's ephemeral port range: how many ports one source address offers. */
static int ephemeral_ports(void)
{
    int lo = 32768, hi = 60999;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%d %d", &lo, &hi) != 2) {
            lo = 32768;
            hi = 60999;
        }
        fclose(f);
    }
    return hi - lo + 1;
}

static void pin(const char *list)
{
    cpu_set_t set;
    int n;
    char **cpus = split(list, &n);
    CPU_ZERO(&set);
    for (int i = 0; i < n; i++)
        CPU_SET(atoi(cpus[i]), &set);
    if (n && sched_setaffinity(0, sizeof set, &set) < 0)
        fprintf(stderr, "loadgen: cannot pin to CPUs %s: %s\n", list, strerror(errno));
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen --protocol sinal|socketio [--encoding msgpack|json] "
            "[--host 127.0.0.1] --port P[,P...] --connections N\n"
            "               (--token-file F | --token T) [--topics a,b] [--heartbeat S] "
            "[--phase C] [--window 128]\n"
            "               [--handshake-timeout S] [--first-index K] [--total T] "
            "[--source-base 2] [--source-addrs K]\n"
            "               [--per-address M] [--path P] [--cpus 1,2] [--decode "
            "[--decode-state http|subscribing|open|ready] [--key K] [--chunk B]]\n");
    exit(2);
}

static int decode_state = S_READY, chunk = 0;
static const char *decode_key = "dGhlIHNhbXBsZSBub25jZQ==";

static void options(int argc, char **argv)
{
    static const struct option longs[] = {
        {"protocol", 1, 0, 'p'}, {"encoding", 1, 0, 'e'}, {"host", 1, 0, 'H'},
        {"port", 1, 0, 'P'}, {"path", 1, 0, 'u'}, {"connections", 1, 0, 'n'},
        {"first-index", 1, 0, 'f'}, {"total", 1, 0, 'T'}, {"source-base", 1, 0, 'b'},
        {"source-addrs", 1, 0, 'a'}, {"per-address", 1, 0, 'A'}, {"token-file", 1, 0, 'k'},
        {"token", 1, 0, 't'}, {"topics", 1, 0, 'o'}, {"heartbeat", 1, 0, 'h'},
        {"window", 1, 0, 'w'}, {"handshake-timeout", 1, 0, 'x'}, {"phase", 1, 0, 'z'},
        {"cpus", 1, 0, 'c'}, {"decode", 0, 0, 'd'}, {"decode-state", 1, 0, 's'},
        {"key", 1, 0, 'K'}, {"chunk", 1, 0, 'C'}, {0, 0, 0, 0}};
    const char *ports = "3001", *topics = "supplier_changed", *cpus = NULL;
    char **items;
    int opt, n;
    snprintf(G.host, sizeof G.host, "127.0.0.1");
    G.connections = 1;
    G.total = -1;
    G.source_base = 2;
    G.source_addrs = -1;
    G.window = 128;
    G.handshake_timeout_s = 30;
    G.phase = '0';
    while ((opt = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (opt) {
        case 'p':
            if (strcmp(optarg, "sinal") == 0) G.protocol = P_SINAL;
            else if (strcmp(optarg, "socketio") == 0) G.protocol = P_SOCKETIO;
            else die("--protocol is sinal or socketio");
            break;
        case 'e':
            if (strcmp(optarg, "msgpack") == 0) G.encoding = E_MSGPACK;
            else if (strcmp(optarg, "json") == 0) G.encoding = E_JSON;
            else die("--encoding is msgpack or json");
            break;
        case 'H': snprintf(G.host, sizeof G.host, "%s", optarg); break;
        case 'P': ports = optarg; break;
        case 'u': snprintf(G.path, sizeof G.path, "%s", optarg); break;
        case 'n': G.connections = atoi(optarg); break;
        case 'f': G.first_index = atoi(optarg); break;
        case 'T': G.total = atoi(optarg); break;
        case 'b': G.source_base = atoi(optarg); break;
        case 'a': G.source_addrs = atoi(optarg); break;
        case 'A': G.per_address = atoi(optarg); break;
        case 'k': read_tokens(optarg); break;
        case 't':
            G.tokens = realloc(G.tokens, sizeof *G.tokens * (size_t)(G.ntokens + 1));
            G.tokens[G.ntokens++] = strdup(optarg);
            break;
        case 'o': topics = optarg; break;
        case 'h': G.heartbeat_s = atof(optarg); break;
        case 'w': G.window = atoi(optarg); break;
        case 'x': G.handshake_timeout_s = atof(optarg); break;
        case 'z': G.phase = optarg[0]; break;
        case 'c': cpus = optarg; break;
        case 'd': G.decode = 1; break;
        case 's':
            if (strcmp(optarg, "http") == 0) decode_state = S_HTTP;
            else if (strcmp(optarg, "subscribing") == 0) decode_state = S_AWAIT_SUBSCRIBED;
            else if (strcmp(optarg, "open") == 0) decode_state = S_SIO_AWAIT_OPEN;
            else if (strcmp(optarg, "ready") == 0) decode_state = S_READY;
            else die("--decode-state is http, subscribing, open or ready");
            break;
        case 'K': decode_key = optarg; break;
        case 'C': chunk = atoi(optarg); break;
        default: usage();
        }
    }
    if (optind != argc || G.connections < 0 || G.window < 1)
        usage();
    if (G.ntokens == 0) {
        if (!G.decode)
            die("a token is needed: --token-file F or --token T");
        G.tokens = malloc(sizeof *G.tokens);
        G.tokens[G.ntokens++] = strdup("token");
    }
    {
        struct in_addr probe;
        if (inet_pton(AF_INET, G.host, &probe) != 1)
            die("--host takes an IPv4 address, not %s", G.host);
    }
    items = split(ports, &n);
    if (n < 1 || n > MAX_PORTS)
        die("--port takes 1 to %d ports", MAX_PORTS);
    for (G.nports = 0; G.nports < n; G.nports++)
        G.ports[G.nports] = atoi(items[G.nports]);
    G.topics = split(topics, &G.ntopics);
    if (G.ntopics < 1 || strlen(topics) > 16384)
        die("--topics takes 1 or more topics, 16 KiB in all at most");
    if (!G.path[0])
        snprintf(G.path, sizeof G.path, "%s",
                 G.protocol == P_SOCKETIO ? "/socket.io/?EIO=4&transport=websocket" : "/ws");
    if (G.total < 0)
        G.total = G.first_index + G.connections;
    if (G.per_address <= 0)
        G.per_address = ephemeral_ports() * 9 / 10; /* leave room for the rest */
    if (G.source_addrs < 0) /* auto: as few addresses as the connections need */
        G.source_addrs = (G.total + G.per_address - 1) / G.per_address;
    if (G.source_addrs > 0 && G.source_base + G.source_addrs > 0xffffff)
        die("--source-base + --source-addrs leave 127.0.0.0/8");
    if (cpus)
        pin(cpus);
}

/* ---------------------------------------------------------------- the loop */

static void raise_fd_limit(void)
{
    struct rlimit rl;
    rlim_t want = (rlim_t)G.connections + 64;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < want)
            fprintf(stderr, "loadgen: open files limited to %llu: some of the %d connections "
                    "will fail (run several processes)\n",
                    (unsigned long long)rl.rlim_cur, G.connections);
    }
}

static int decode_main(void)
{
    size_t cap = 1 << 16, len = 0;
    uint8_t *input = malloc(cap);
    ssize_t n;
    conn *c = &G.conns[0];
    out o = {0};
    while ((n = read(0, input + len, cap - len)) > 0) {
        len += (size_t)n;
        if (len == cap)
            input = realloc(input, cap *= 2);
    }
    c->fd = -1;
    c->index = (uint32_t)G.first_index;
    c->opened_ns = now_mono_ns();
    c->last_offset = -1;
    snprintf(c->key, sizeof c->key, "%s", decode_key);
    G.started = 1;
    G.in_flight = 1;
    c->state = (uint8_t)decode_state;
    if (decode_state == S_READY) {
        G.in_flight = 0;
        G.ready = 1;
    }
    for (size_t pos = 0; pos < len && c->state != S_CLOSED;) {
        size_t k = chunk > 0 && (size_t)chunk < len - pos ? (size_t)chunk : len - pos;
        conn_feed(c, input + pos, k, now_real_us());
        pos += k;
    }
    print_stats(&o, 1);
    put(&o, ",\"state\":%d,\"pendingBytes\":%u", c->state, c->pend_len);
    emit(&o);
    return 0;
}

static int control(out *o)
{
    static char line[4096];
    static size_t len;
    ssize_t n = read(0, line + len, sizeof line - 1 - len);
    char *nl;
    if (n <= 0)
        return n < 0 && (errno == EAGAIN || errno == EINTR) ? 0 : -1; /* EOF: stop */
    len += (size_t)n;
    line[len] = '\0';
    while ((nl = strchr(line, '\n')) != NULL) {
        *nl = '\0';
        if (strncmp(line, "stats", 5) == 0) {
            char *phase = strstr(line, "phase=");
            print_stats(o, strstr(line, "brief") != NULL);
            emit(o);
            if (strstr(line, "reset"))
                counters_reset(&G.c);
            if (phase && phase[6])
                G.phase = phase[6];
        } else if (strcmp(line, "exit") == 0) {
            return -1;
        } else if (line[0]) {
            fprintf(stderr, "loadgen: unknown command %s\n", line);
        }
        len -= (size_t)(nl + 1 - line);
        memmove(line, nl + 1, len + 1);
    }
    if (len == sizeof line - 1)
        len = 0; /* a line that long is no command */
    return 0;
}

static void timers(int64_t now, int64_t *next_sweep, int64_t *next_tick, uint64_t *tick)
{
    const int slots = 100;
    if (G.heartbeat_s > 0) { /* connection i beats in slot i % 100 of every interval */
        int64_t step = (int64_t)(G.heartbeat_s * 1e9) / slots;
        for (int k = 0; k < slots && now >= *next_tick; k++) {
            for (int i = (int)(*tick % slots); i < G.started; i += slots)
                if (G.conns[i].state == S_READY)
                    conn_heartbeat(&G.conns[i]);
            (*tick)++;
            *next_tick += step > 0 ? step : 1;
        }
    }
    if (now >= *next_sweep) {
        int64_t limit = (int64_t)(G.handshake_timeout_s * 1e9);
        *next_sweep = now + 250000000;
        for (int i = 0; G.in_flight && limit > 0 && i < G.started; i++) {
            conn *c = &G.conns[i];
            if (c->state > S_IDLE && c->state < S_READY && now - c->opened_ns > limit)
                conn_fail(c, "handshake timeout");
        }
    }
}

int main(int argc, char **argv)
{
    struct epoll_event ev, events[1024];
    int64_t next_sweep = 0, next_tick, now;
    uint64_t tick = 0;
    int reported = 0, stdin_polled;
    out o = {0};
    options(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    G.rng = (uint64_t)now_real_us() * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid() << 32 ^ 1;
    G.c.hist = calloc(HIST_SIZE, sizeof(uint32_t));
    G.c.connect_hist = calloc(HIST_SIZE, sizeof(uint32_t));
    G.conns = calloc(G.connections ? (size_t)G.connections : 1, sizeof(conn));
    G.buf_size = 256 * 1024;
    G.buf = malloc(G.buf_size);
    if (!G.c.hist || !G.c.connect_hist || !G.conns || !G.buf)
        die("out of memory");
    counters_reset(&G.c);
    if (G.decode)
        return decode_main();
    raise_fd_limit();
    if ((G.epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
        die("epoll: %s", strerror(errno));
    ev.events = EPOLLIN;
    ev.data.u64 = 0;
    stdin_polled = epoll_ctl(G.epfd, EPOLL_CTL_ADD, 0, &ev) == 0; /* not for /dev/null */
    next_tick = now_mono_ns();
    for (;;) {
        int n, timeout = 250;
        while (G.started < G.connections && G.in_flight < G.window)
            conn_open(&G.conns[G.started]);
        if (G.started < G.connections && G.in_flight < G.window)
            timeout = 0;
        n = epoll_wait(G.epfd, events, 1024, timeout);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        if (n > 0)
            G.c.wakeups++;
        for (int i = 0; i < n; i++) {
            conn *c;
            ssize_t k;
            if (events[i].data.u64 == 0) {
                if (control(&o) < 0)
                    goto done;
                continue;
            }
            c = &G.conns[events[i].data.u64 - 1];
            if (c->state == S_CLOSED)
                continue; /* closed earlier in this batch */
            if (c->state == S_CONNECTING) {
                conn_connected(c);
                continue;
            }
            k = recv(c->fd, G.buf, G.buf_size, 0);
            G.c.recvs++;
            if (k > 0) {
                G.c.bytes += (uint64_t)k;
                conn_feed(c, G.buf, (size_t)k, now_real_us());
            } else if (k == 0) {
                conn_fail(c, "eof");
            } else if (errno != EAGAIN && errno != EINTR) {
                char text[100];
                snprintf(text, sizeof text, "recv: %s", strerror(errno));
                conn_fail(c, text);
            }
        }
        now = now_mono_ns();
        timers(now, &next_sweep, &next_tick, &tick);
        if (!reported && G.started == G.connections && G.in_flight == 0) {
            reported = 1;
            print_ready(&o);
        }
        if (!stdin_polled && reported && G.ready == 0)
            break; /* no control channel and nothing left to hold */
    }
done:
    /* Abort (RST) rather than close: a client socket that closes first sits in TIME_WAIT
       for 60 s on its 127.0.0.x address and port, and each bind(address, 0) of the next
       run, which the kernel answers by scanning the address's ports, has to step past
       every one of them: after a 10,000-connection run, the next one's binds cost its
       client seconds of kernel CPU. */
    struct linger abort_now = {.l_onoff = 1, .l_linger = 0};
    for (int i = 0; i < G.started; i++)
        if (G.conns[i].fd >= 0) {
            setsockopt(G.conns[i].fd, SOL_SOCKET, SO_LINGER, &abort_now, sizeof abort_now);
            close(G.conns[i].fd);
        }
    return 0;
}
