/* The wire formats the load client speaks, without I/O: in codec.c the tiny parts of
 * MessagePack and JSON it reads and writes, Sinal's and socket.io's messages and the
 * bench writer's latency marker; in wire.c WebSocket frames (RFC 6455), base64 and SHA-1
 * (for the handshake).
 * bench/README.md, "The load client", says how the program uses them. */
#ifndef LOADGEN_WIRE_H
#define LOADGEN_WIRE_H

#include <stddef.h>
#include <stdint.h>

enum protocol { P_SINAL = 0, P_SOCKETIO = 1 };
enum encoding { E_MSGPACK = 0, E_JSON = 1 };

/* What a server message is. */
enum msg_kind {
    K_BAD = 0,          /* not decodable */
    K_OTHER,            /* decodable, nothing the client acts on */
    K_DATA,             /* data_update */
    K_SUBSCRIBED,
    K_WELCOME,
    K_ERROR,
    K_HEARTBEAT,
    K_RESYNC,
    K_EIO_OPEN,         /* Engine.IO "0{...}" */
    K_EIO_PING,         /* Engine.IO "2" */
    K_EIO_CLOSE,        /* Engine.IO "1" */
    K_SIO_CONNECT,      /* socket.io CONNECT (0) */
    K_SIO_DISCONNECT,   /* socket.io DISCONNECT (1) */
    K_SIO_ACK,          /* socket.io ACK (3) */
    K_SIO_CONNECT_ERROR /* socket.io CONNECT_ERROR (4) */
};

typedef struct {
    int kind;
    int has_offset;
    int64_t offset;     /* data_update's offset */
    const char *text;   /* error code, connect_error message (not NUL-terminated) */
    size_t text_len;
    int has_id;
    int64_t id;         /* socket.io ack id */
} msg_info;

const char *kind_name(int kind);

/* ---- MessagePack: readers advance *pp only on success (return 1) ---- */
const uint8_t *mp_skip(const uint8_t *p, const uint8_t *end, int depth);
int mp_str(const uint8_t **pp, const uint8_t *end, const char **s, size_t *n);
int mp_int(const uint8_t **pp, const uint8_t *end, int64_t *v);
int mp_map(const uint8_t **pp, const uint8_t *end, uint32_t *n);
int mp_array(const uint8_t **pp, const uint8_t *end, uint32_t *n);
/* writers return the new end of the output */
uint8_t *mpw_map(uint8_t *o, uint32_t n);
uint8_t *mpw_array(uint8_t *o, uint32_t n);
uint8_t *mpw_str(uint8_t *o, const char *s, size_t n);
uint8_t *mpw_cstr(uint8_t *o, const char *s);
uint8_t *mpw_uint(uint8_t *o, uint64_t v);

/* ---- JSON: writes a string literal with escapes; returns the new end ---- */
char *json_str(char *o, const char *s, size_t n);

/* ---- messages ---- */
void parse_sinal_msgpack(const uint8_t *p, size_t n, msg_info *m);
void parse_sinal_json(const uint8_t *p, size_t n, msg_info *m);
void parse_socketio(int opcode, const uint8_t *p, size_t n, msg_info *m);

/* The bench writer's marker "@t=<time.time() with 6 decimals><phase char>" anywhere in
 * the payload: 1 and the time in microseconds and the phase, or 0. */
int find_mark(const uint8_t *p, size_t n, int64_t *us, char *phase);

/* ---- WebSocket ---- */
/* A frame header at p: its length (> 0), 0 when more bytes are needed, -1 when invalid
 * (reserved bits, unknown opcode, fragmented or long control frame, 64-bit length with
 * the top bit set). */
int ws_header(const uint8_t *p, size_t avail, int *fin, int *opcode, uint64_t *len,
              int *masked);
/* A masked client frame with FIN set; out needs n + 14 bytes. Returns its length. */
size_t ws_client_frame(uint8_t *out, int opcode, const uint8_t *payload, size_t n,
                       uint32_t mask);
/* Sec-WebSocket-Accept for a key: base64(SHA-1(key + GUID)), 28 chars + NUL. */
void ws_accept(const char *key, char out[29]);

size_t b64_encode(char *out, const uint8_t *in, size_t n);
void sha1(const uint8_t *data, size_t n, uint8_t out[20]);

#endif
