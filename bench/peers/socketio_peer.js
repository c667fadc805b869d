// The seed's own stack, as a peer for `python -m bench`: Node.js + socket.io 4 with the
// msgpack parser (socket.io-msgpack-parser) + pg LISTEN, on the same database as Sinal.
//
// Change source (PEER_SOURCE):
//   change_log (default)  LISTEN sinal_changes; on each notification (and on a 1 s poll tick)
//                         call sinal_sequence_changes() and read the new change_log rows
//                         with `position > $last ORDER BY position` -- the same lossless
//                         path Sinal's listener takes, so the two servers are fed alike.
//   notify                the seed's section 6.2: a trigger sends the row itself as the
//                         NOTIFY payload on a channel named after the topic (bench creates
//                         that trigger); no change log, no offsets, nothing read back.
// Every change is broadcast with io.to(topic).emit("data_update", {...}): socket.io encodes
// it once per broadcast and writes the same WebSocket frame to every socket of the room.
//
// Clients: Engine.IO 4 over WebSocket only; CONNECT with auth {token} (an HS256 JWT signed
// with JWT_SECRET; the user must exist and be active, as in Sinal); emit("subscribe",
// {events}, ack) joins one room per topic. Every socket also joins its user's room
// (`user:<id>`), where a new `notifications` row with push = true is emitted as a
// `notification` event (Sinal's notifications topic). GET /health/ready answers 200 once
// listening.
//
// Environment: PORT, DATABASE_URL, JWT_SECRET, PEER_SOURCE.
"use strict";

const http = require("http");
const crypto = require("crypto");
const { Server } = require("socket.io");
const msgpackParser = require("socket.io-msgpack-parser");
const pg = require("pg");

pg.types.setTypeParser(20, (value) => Number(value)); // int8 positions as numbers

const PORT = Number(process.env.PORT || 3002);
const DATABASE_URL = process.env.DATABASE_URL;
const SECRET = process.env.JWT_SECRET || "";
const SOURCE = process.env.PEER_SOURCE || "change_log";
const READ_LIMIT = 2000;
const TOPICS = [
  "purchase_request_changed", "quotation_changed", "approval_changed",
  "purchase_order_changed", "user_changed", "department_changed", "supplier_changed",
];

function base64url(buffer) {
  return buffer.toString("base64").replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
}

// HS256 JWT check (what jsonwebtoken.verify does for this algorithm), without a dependency.
function verifyJwt(token) {
  if (typeof token !== "string") throw new Error("no token");
  const parts = token.split(".");
  if (parts.length !== 3) throw new Error("malformed token");
  const header = JSON.parse(Buffer.from(parts[0], "base64url").toString());
  if (header.alg !== "HS256") throw new Error("unexpected alg");
  const expected = base64url(
    crypto.createHmac("sha256", SECRET).update(`${parts[0]}.${parts[1]}`).digest());
  const given = Buffer.from(parts[2]);
  const want = Buffer.from(expected);
  if (given.length !== want.length || !crypto.timingSafeEqual(given, want)) {
    throw new Error("bad signature");
  }
  const claims = JSON.parse(Buffer.from(parts[1], "base64url").toString());
  if (typeof claims.exp === "number" && claims.exp * 1000 < Date.now()) throw new Error("expired");
  return claims;
}

const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 8 });
let ready = false;
let position = 0;
let framesOut = 0;

const httpServer = http.createServer((req, res) => {
  if (req.url === "/health/ready" || req.url === "/health/live") {
    res.writeHead(ready ? 200 : 503, { "content-type": "application/json" });
    res.end(JSON.stringify({ status: ready ? "ready" : "starting", position, framesOut,
                             connections: io.engine.clientsCount }));
    return;
  }
  res.writeHead(404);
  res.end();
});

const io = new Server(httpServer, {
  parser: msgpackParser,
  transports: ["websocket"],
  serveClient: false,
  pingInterval: 25000,
  pingTimeout: 20000,
  maxHttpBufferSize: 65536,
  perMessageDeflate: false,
});

io.use(async (socket, next) => {
  try {
    const claims = verifyJwt(socket.handshake.auth && socket.handshake.auth.token);
    const { rows } = await pool.query(
      "SELECT id::text AS id, role, is_active FROM users WHERE id = $1", [claims.sub]);
    if (!rows.length || !rows[0].is_active) throw new Error("unknown user");
    socket.data.user = rows[0];
    next();
  } catch (err) {
    next(new Error("auth_failed"));
  }
});

io.on("connection", (socket) => {
  socket.join(`user:${socket.data.user.id}`);
  socket.on("subscribe", (message, ack) => {
    const events = message && Array.isArray(message.events) ? message.events : [];
    const admin = socket.data.user.role === "admin";
    const allowed = events.filter((t) => TOPICS.includes(t) && (admin || t !== "user_changed"));
    for (const topic of allowed) socket.join(topic);
    if (typeof ack === "function") {
      ack({ events: allowed, offsets: Object.fromEntries(allowed.map((t) => [t, position])) });
    }
  });
  socket.on("heartbeat", () => {
    socket.data.lastSeen = Date.now();
  });
});

function notify(row) {
  const note = row.new_row;
  if (row.op !== "insert" || !note || !note.push) return;
  io.to(`user:${note.user_id}`).emit("notification", {
    id: note.id, message: note.message, kind: note.kind, action: note.action,
    timestamp: note.created_at, offset: row.position, sound: note.sound,
  });
  framesOut += 1;
}

function broadcast(row) {
  if (row.topic === "notifications") {
    notify(row);
    return;
  }
  const room = io.to(row.topic);
  room.emit("data_update", {
    type: row.topic,
    op: row.op,
    id: row.row_id,
    data: row.new_row !== null ? row.new_row : row.old_row,
    delta: row.op === "update" ? row.changed || {} : {},
    offset: row.position,
    timestamp: row.changed_at.toISOString(),
  });
  framesOut += 1;
}

async function startChangeLog(client) {
  const head = await client.query("SELECT sinal_sequence_changes() AS head");
  position = head.rows[0].head;
  let reading = false;
  let again = false;
  async function drain() {
    if (reading) {
      again = true;
      return;
    }
    reading = true;
    try {
      do {
        again = false;
        await client.query("SELECT sinal_sequence_changes()");
        for (;;) {
          const { rows } = await client.query(
            "SELECT position, topic, op, row_id, new_row, old_row, changed, changed_at " +
            "FROM change_log WHERE position > $1 ORDER BY position LIMIT $2",
            [position, READ_LIMIT]);
          for (const row of rows) broadcast(row);
          if (rows.length) position = rows[rows.length - 1].position;
          if (rows.length < READ_LIMIT) break;
        }
      } while (again);
    } catch (err) {
      console.error("read failed:", err.message);
      process.exit(1);
    } finally {
      reading = false;
    }
  }
  client.on("notification", () => { drain(); });
  await client.query("LISTEN sinal_changes");
  setInterval(drain, 1000);
  await drain();
}

async function startNotify(client) {
  client.on("notification", (msg) => {
    const payload = JSON.parse(msg.payload);
    const op = String(payload.operation || "").toLowerCase();
    io.to(msg.channel).emit("data_update", {
      type: msg.channel,
      op,
      id: payload.id,
      data: payload.data || {},
      delta: {},
      timestamp: payload.timestamp,
    });
    framesOut += 1;
  });
  for (const topic of TOPICS) await client.query(`LISTEN ${topic}`);
}

async function main() {
  const client = new pg.Client({ connectionString: DATABASE_URL });
  await client.connect();
  client.on("error", (err) => {
    console.error("listen connection lost:", err.message);
    process.exit(1);
  });
  if (SOURCE === "notify") await startNotify(client);
  else await startChangeLog(client);
  await new Promise((resolve) => httpServer.listen(PORT, "127.0.0.1", resolve));
  ready = true;
  console.log(`socket.io peer on ws://127.0.0.1:${PORT}/socket.io/ (source: ${SOURCE})`);
}

function stop() {
  io.close();
  pool.end().finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 3000).unref();
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
