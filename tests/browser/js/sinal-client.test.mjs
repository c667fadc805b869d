// web/sinal-client.js against a live Sinal node (started by tests/browser/test_client_js.py,
// which passes its URLs and one token per demo role in the environment).
// Run by Node's own test runner: node --experimental-websocket --test <this file>

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { format } from 'node:util';

import { ResourceStore, SinalClient, SinalError } from '../../../web/sinal-client.js';
import { DashboardCopy } from '../../../web/sinal-dashboard.js';

const HTTP = process.env.SINAL_HTTP_URL ?? '';
const WS = process.env.SINAL_WS_URL ?? '';
const TOKENS = JSON.parse(process.env.SINAL_TOKENS ?? '{}');
const TOPIC = 'purchase_request_changed';
const DEAD_WS = 'ws://127.0.0.1:9/ws'; // the discard port: nothing listens there
const FIGURES = ['requestsByStatus', 'pendingByLevel', 'requestsByDepartment'];

if (!(HTTP && WS && TOKENS.admin)) {
  throw new Error('run through tests/browser/test_client_js.py, which starts a node');
}

// --- helpers ------------------------------------------------------------------------------

/** A REST call as a demo role; resolves the JSON body. */
async function api(role, method, path, body) {
  const response = await fetch(HTTP + path, {
    method,
    headers: { Authorization: `Bearer ${TOKENS[role]}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${path} answered ${response.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}

let serial = 0;
async function createRequest(tag, submit = true) {
  serial += 1;
  return api('requester', 'POST', '/api/purchase-requests',
    { title: `${tag} ${serial}`, amount: 100 + serial, submit });
}

/** What the server shows `role` now: id -> status, every page. */
async function truth(role = 'admin') {
  const rows = new Map();
  let cursor = null;
  do {
    const query = new URLSearchParams({ limit: '1000', fields: 'status' });
    if (cursor) query.set('cursor', cursor);
    const page = await api(role, 'GET', `/api/purchase-requests?${query}`);
    for (const row of page.data) rows.set(String(row.id), row.status);
    cursor = page.nextCursor;
  } while (cursor);
  return rows;
}

function view(client) {
  return new Map(client.store(TOPIC).values().map((row) => [String(row.id), row.status]));
}

/** Resolve once condition() holds: checked on every client event, and every 20 ms. */
function waitFor(client, condition, what, timeout = 15000) {
  return new Promise((resolve, reject) => {
    const events = ['change', 'reset', 'state', 'notification', 'topic', 'welcome', 'broadcast',
      'dashboard'];
    const finish = (error) => {
      clearTimeout(timer);
      clearInterval(ticker);
      for (const type of events) client.removeEventListener(type, check);
      if (error) reject(error);
      else resolve();
    };
    const check = () => {
      try {
        if (condition()) finish();
      } catch (error) {
        finish(error);
      }
    };
    const timer = setTimeout(() => finish(new Error(
      `timed out waiting for ${what} (state ${client.state}, stats ${JSON.stringify(client.stats)})`)),
    timeout);
    const ticker = setInterval(check, 20);
    for (const type of events) client.addEventListener(type, check);
    check();
  });
}

async function convergesToTruth(client, role = 'admin') {
  const expected = await truth(role);
  await waitFor(client, () => sameMap(view(client), expected), 'the store to equal the server');
}

function sameMap(a, b) {
  if (a.size !== b.size) return false;
  for (const [key, value] of a) if (b.get(key) !== value) return false;
  return true;
}

/** A WebSocket class that records its sockets and what they send, and can be blocked. */
function trackedWebSocket() {
  const sockets = [];
  const sent = [];
  const control = { blocked: false, sockets, sent };
  control.WebSocket = class extends WebSocket {
    constructor(url, protocols) {
      super(control.blocked ? DEAD_WS : url, protocols);
      sockets.push(this);
    }

    send(data) {
      sent.push(JSON.parse(data));
      super.send(data);
    }
  };
  return control;
}

/** GET /api/dashboard's figures (the REST twin of the `dashboard` topic), as `role` sees them. */
async function restFigures(role = 'admin', names = FIGURES) {
  const body = await api(role, 'GET', `/api/dashboard?aggregates=${names.join(',')}`);
  return { offset: body.offset, figures: Object.fromEntries(names.map((n) => [n, body[n]])) };
}

function sameFigures(a, b) {
  try {
    assert.deepEqual(a, b);
    return true;
  } catch {
    return false;
  }
}

function client(options = {}) {
  return new SinalClient({ httpUrl: HTTP, wsUrl: WS, token: TOKENS.admin, resources: [TOPIC],
    pollInterval: 100, backoffBase: 50, backoffMax: 400, ...options });
}

// --- the store, without a server --------------------------------------------------------------

test('a store applies changes once, in offset order, and says what changed', () => {
  const store = new ResourceStore(TOPIC);
  const seen = [];
  store.addEventListener('change', (event) => seen.push(event.detail));
  store.replace([{ id: 'a', status: 'draft' }], 10);
  assert.equal(store.apply('update', 'a', { id: 'a', status: 'pending_a1' }, { offset: 11 }), true);
  assert.equal(store.apply('update', 'a', { id: 'a', status: 'draft' }, { offset: 11 }), false);
  assert.equal(store.apply('delete', 'zz', null, { offset: 12 }), false);
  assert.equal(store.apply('insert', 'b', { id: 'b', status: 'draft' }, { offset: 13 }), true);
  assert.equal(store.apply('delete', 'a', null, { offset: 14 }), true);
  assert.deepEqual([...store.rows.keys()], ['b']);
  assert.equal(store.offset, 14);
  assert.deepEqual(seen.map((d) => [d.op, d.id, d.previous?.status ?? null]),
    [['update', 'a', 'draft'], ['insert', 'b', null], ['delete', 'a', 'pending_a1']]);
});

test('dashboard figures: a snapshot replaces, an update patches, a resync forgets the offset',
  () => {
    const copy = new DashboardCopy({ aggregates: ['requestsByStatus', 'lateOrders'] });
    assert.equal(copy.update({ offset: 5, today: '2026-11-30', aggregates: { lateOrders: 1 } }),
      null, 'no copy to patch');
    assert.deepEqual(copy.subscribeMessage(), { event: 'subscribe', events: ['dashboard'],
      ref: 'sub:dashboard', filters: { aggregates: ['requestsByStatus', 'lateOrders'] } });
    copy.receive({ event: 'dashboard_snapshot', offset: 10, today: '2026-11-30', window: '30d',
      aggregates: { requestsByStatus: { draft: 2 }, lateOrders: 0 } });
    assert.deepEqual(copy.receive({ event: 'dashboard_update', offset: 12, today: '2026-12-01',
      aggregates: { requestsByStatus: { draft: 1, pending_a1: 1 } } }), ['requestsByStatus']);
    assert.deepEqual(copy.figures, { offset: 12, today: '2026-12-01', window: '30d',
      aggregates: { requestsByStatus: { draft: 1, pending_a1: 1 }, lateOrders: 0 } });
    assert.deepEqual(copy.update({ offset: 11, today: '2026-12-01',
      aggregates: { lateOrders: 3 } }), [], 'older than the copy: ignored');
    assert.equal(copy.figures.aggregates.lateOrders, 0);
    assert.deepEqual(copy.subscribeMessage().since, { dashboard: 12 });
    copy.forget(); // e.g. resync permissions_changed: the figures were of the old grants
    assert.equal(copy.subscribeMessage().since, undefined);
    assert.equal(copy.figures.offset, 12, 'still shown until the snapshot');
    assert.deepEqual(copy.fromRest({ offset: 20, today: '2026-12-01', window: '30d', etag: 'x',
      requestsByStatus: {}, lateOrders: 4 }), ['requestsByStatus', 'lateOrders']);
    assert.deepEqual(copy.figures.aggregates, { requestsByStatus: {}, lateOrders: 4 });
    assert.equal(copy.since, 20);
    assert.equal(copy.query(), '?aggregates=requestsByStatus%2ClateOrders');
  });

test('options are checked', () => {
  assert.throws(() => new SinalClient({ wsUrl: WS }), /token/);
  assert.throws(() => new SinalClient({ token: 't', wsUrl: WS, resources: ['metrics'] }),
    /no REST list/);
});

// --- against the node ------------------------------------------------------------------------

test("the README's browser example runs as written", async () => {
  const readme = await readFile(new URL('../../../README.md', import.meta.url), 'utf8');
  const example = /```js\n([\s\S]*?)```/.exec(readme)[1];
  assert.ok(example.split('\n').filter(Boolean).length <= 10, 'ten lines');
  const module = `${example}\nexport { client };\n`
    .replace("'/web/sinal-client.js'",
      JSON.stringify(new URL('../../../web/sinal-client.js', import.meta.url).href))
    .replace("'<JWT>'", JSON.stringify(TOKENS.requester))
    .replace("'http://localhost:3000'", JSON.stringify(HTTP))
    .replace("'ws://localhost:3001/ws'", JSON.stringify(WS));
  const printed = [];
  const log = console.log;
  console.log = (...args) => printed.push(format(...args)); // as console.log prints them
  let exampleClient = null;
  try {
    ({ client: exampleClient } = await import(
      `data:text/javascript,${encodeURIComponent(module)}`));
    await waitFor(exampleClient, () => exampleClient.state === 'live', 'live');
    const request = await createRequest('readme');
    await waitFor(exampleClient, () => exampleClient.store(TOPIC).get(request.id),
      'the new request');
  } finally {
    console.log = log;
    exampleClient?.stop();
  }
  assert.ok(printed.includes('connection: live'), printed.join('\n'));
  assert.ok(printed.some((line) => /^insert readme \d+ undefined -> pending_a1$/.test(line)),
    printed.join('\n'));
});

test('bootstrap: the list by REST, then the socket from its offset, misses nothing',
  async () => {
    for (let i = 0; i < 3; i += 1) await createRequest('before');
    let raced = false;
    // A write lands after the list was read and before the socket subscribes: the
    // subscription starts from the list's offset, so the write must still arrive.
    const racingFetch = async (url, init) => {
      const response = await fetch(url, init);
      if (!raced && String(url).includes('/api/purchase-requests?limit=')) {
        raced = true;
        await createRequest('between');
      }
      return response;
    };
    const c = client({ fetch: racingFetch });
    try {
      await c.start();
      assert.equal(c.stats.refetches, 1);
      await waitFor(c, () => c.state === 'live', 'live');
      await convergesToTruth(c);
      await createRequest('live');
      const draft = await createRequest('live', false);
      await api('requester', 'POST', `/api/purchase-requests/${draft.id}/submit`);
      await convergesToTruth(c);
      assert.equal(c.store(TOPIC).get(draft.id).status, 'pending_a1');
      assert.equal(c.stats.polls, 0, 'no REST polling while the socket is live');
      assert.equal(c.stats.refetches, 1);
    } finally {
      c.stop();
    }
  });

test('a dropped socket reconnects and resumes with since: no refetch', async () => {
  const ws = trackedWebSocket();
  const c = client({ WebSocket: ws.WebSocket, pollInterval: 60000 });
  try {
    await c.start();
    await waitFor(c, () => c.state === 'live', 'live');
    ws.sockets.at(-1).close();
    for (let i = 0; i < 3; i += 1) await createRequest('away');
    await waitFor(c, () => c.stats.connects === 2 && c.state === 'live', 'a second session');
    await convergesToTruth(c);
    const resumed = ws.sent.filter((m) => m.event === 'subscribe').at(-1);
    assert.equal(typeof resumed.since?.[TOPIC], 'number', JSON.stringify(resumed));
    assert.equal(c.stats.refetches, 1, 'resumed from its offset, never refetched');
  } finally {
    c.stop();
  }
});

test('no socket: REST polling with ETags keeps the store, then back to the socket',
  async () => {
    const ws = trackedWebSocket();
    ws.blocked = true;
    const c = client({ WebSocket: ws.WebSocket });
    const states = [];
    c.on('state', ({ state }) => states.push(state));
    try {
      await c.start();
      await waitFor(c, () => c.state === 'polling', 'polling');
      await waitFor(c, () => c.stats.notModified > 0, 'a 304');
      const request = await createRequest('polled');
      await api('approver_a1', 'POST', `/api/purchase-requests/${request.id}/approve`, {});
      await convergesToTruth(c);
      assert.equal(c.store(TOPIC).get(request.id).status, 'pending_a2');
      assert.equal(c.stats.connects, 0);
      assert.ok(c.stats.socketFailures > 0);
      ws.blocked = false; // the socket can be opened again
      await waitFor(c, () => c.state === 'live', 'back to live');
      const polls = c.stats.polls;
      await createRequest('after');
      await convergesToTruth(c);
      assert.equal(c.stats.polls, polls, 'no polling once live again');
      assert.deepEqual(states.filter((s, i) => s !== states[i - 1]).slice(0, 2),
        ['connecting', 'polling']);
    } finally {
      c.stop();
    }
  });

test('resync: a since the server never had makes the client refetch the list',
  async () => {
    const c = client();
    try {
      await c.start();
      await waitFor(c, () => c.state === 'live', 'live');
      c.store(TOPIC).offset = 10 ** 12; // ahead of the log: the server answers resync
      c.reconnect();
      await waitFor(c, () => c.stats.resyncs >= 1 && c.stats.refetches >= 2, 'a resync');
      await waitFor(c, () => c.state === 'live' && c.topicStatus.get(TOPIC) === 'subscribed',
        'resubscribed');
      assert.ok(c.store(TOPIC).offset < 10 ** 12);
      await createRequest('after-resync');
      await convergesToTruth(c);
    } finally {
      c.stop();
    }
  });

test('heartbeats keep a quiet session open past the connection timeout', async () => {
  const c = client();
  try {
    await c.start();
    await waitFor(c, () => c.state === 'live', 'live');
    const { connectionTimeout, heartbeatInterval } = c.session;
    const needed = Math.ceil((2 * connectionTimeout) / heartbeatInterval);
    await waitFor(c, () => c.stats.heartbeatsSent >= needed, `${needed} heartbeats`);
    assert.equal(c.stats.connects, 1, 'the server never closed the session');
    assert.equal(c.state, 'live');
  } finally {
    c.stop();
  }
});

test('views, optional topics and notifications', async () => {
  const approver = client({
    token: TOKENS.approver_a1,
    topics: ['dashboard', 'no_such_topic'],
    keep: { [TOPIC]: (row) => row.status === 'pending_a1' },
  });
  try {
    await approver.start();
    await waitFor(approver, () => approver.state === 'live', 'live');
    await waitFor(approver, () => approver.topicStatus.get('no_such_topic') === 'unavailable',
      'unknown_topic');
    assert.equal(approver.topicStatus.get('dashboard'), 'subscribed');
    assert.deepEqual(approver.dashboard.aggregates.pendingByLevel['2'], undefined); // level 1's
    const request = await createRequest('for-a1');
    await waitFor(approver, () => approver.store(TOPIC).get(request.id)?.status === 'pending_a1',
      'the card in pending_a1');
    await waitFor(approver, () => approver.notifications.some(
      (n) => n.type === 'approval_required' && n.action?.id === request.id), 'a notification');
    await approver.request('POST', `/api/purchase-requests/${request.id}/approve`, {});
    await waitFor(approver, () => !approver.store(TOPIC).get(request.id), 'the card leaves');
    const error = await approver.request('POST', `/api/purchase-requests/${request.id}/approve`, {})
      .then(() => null, (e) => e);
    assert.ok(error instanceof SinalError);
    assert.equal(error.status, 403);
    assert.equal(error.code, 'forbidden');
    const ids = approver.notifications.map((n) => String(n.id));
    assert.equal(new Set(ids).size, ids.length, 'no notification twice');
  } finally {
    approver.stop();
  }
});

test('dashboard: a snapshot, an update after a write, equal to GET /api/dashboard; resumed '
  + 'with since', async () => {
  const ws = trackedWebSocket();
  let away = false; // the node unreachable: no socket, and no REST either
  const awayFetch = (url, init) => (away ? Promise.reject(new TypeError('unreachable'))
    : fetch(url, init));
  // orders' figures too: a purchase request does not move them, so updates carry only some
  // figures and the client must keep the others
  const names = [...FIGURES, 'ordersByDeliveryStatus'];
  const c = client({ resources: [], topics: ['dashboard'], dashboard: { aggregates: names },
    WebSocket: ws.WebSocket, fetch: awayFetch });
  const seen = [];
  c.on('dashboard', ({ dashboard, kind, names: moved }) => {
    seen.push({ kind, names: moved, dashboard });
  });
  try {
    assert.equal(c.dashboard, null);
    await c.start();
    await waitFor(c, () => c.state === 'live', 'live');
    assert.equal(c.topicStatus.get('dashboard'), 'subscribed');
    assert.throws(() => c.store('dashboard'), /not following/); // figures, not rows
    const subscribe = ws.sent.find((m) => m.event === 'subscribe');
    assert.deepEqual(subscribe.events, ['dashboard']);
    assert.deepEqual(subscribe.filters, { aggregates: names });
    assert.equal(subscribe.since, undefined);
    assert.deepEqual(seen.map((e) => e.kind), ['snapshot']); // live once the figures are here
    const first = c.dashboard;
    assert.equal(seen[0].dashboard, first);
    assert.deepEqual(Object.keys(first.aggregates).sort(), [...names].sort());
    assert.deepEqual(seen[0].names.sort(), [...names].sort());
    assert.equal(first.window, '30d');
    assert.match(first.today, /^\d{4}-\d{2}-\d{2}$/);
    assert.equal(typeof first.offset, 'number');

    const request = await createRequest('dashboard'); // submitted: pending at level 1
    const after = await restFigures('admin', names);
    const level1 = (figures) => figures.pendingByLevel['1'] ?? 0;
    assert.equal(level1(after.figures), level1(first.aggregates) + 1, 'the write moved them');
    await waitFor(c, () => sameFigures(c.dashboard.aggregates, after.figures),
      'the figures of GET /api/dashboard');
    const updates = seen.filter((e) => e.kind === 'update');
    assert.ok(updates.length >= 1, JSON.stringify(seen.map((e) => e.kind)));
    assert.ok(c.dashboard.offset > first.offset);
    for (const update of updates) {
      assert.ok(update.names.every((n) => FIGURES.includes(n)), update.names); // what moved
    }
    assert.equal(c.dashboard.window, '30d'); // an update keeps what it does not carry
    const department = String(request.department_id);
    assert.equal(c.dashboard.aggregates.requestsByDepartment[department].pending_a1.count,
      after.figures.requestsByDepartment[department].pending_a1.count);

    // a dropped socket: the figures are resumed from their offset, not sent again whole
    const held = c.dashboard.offset;
    const kinds = seen.length;
    away = true;
    ws.blocked = true;
    ws.sockets.at(-1).close();
    await waitFor(c, () => c.state === 'reconnecting', 'the node out of reach');
    await api('approver_a1', 'POST', `/api/purchase-requests/${request.id}/approve`, {});
    const later = await restFigures('admin', names); // once they include the approval
    away = false;
    ws.blocked = false;
    await waitFor(c, () => c.stats.connects === 2 && c.state === 'live', 'a second session');
    const resumed = ws.sent.filter((m) => m.event === 'subscribe').at(-1);
    assert.deepEqual(resumed.since, { dashboard: held });
    assert.deepEqual(resumed.filters, { aggregates: names }); // the same subscription
    await waitFor(c, () => sameFigures(c.dashboard.aggregates, later.figures),
      'the figures after the approval');
    assert.deepEqual(seen.slice(kinds).map((e) => e.kind), ['update']);
    assert.equal(level1(c.dashboard.aggregates), level1(first.aggregates));
  } finally {
    c.stop();
  }
});

test('dashboard without a socket: GET /api/dashboard polled with its ETag, then the socket '
  + 'resumes from that offset', async () => {
  const ws = trackedWebSocket();
  ws.blocked = true;
  const c = client({ resources: [], topics: ['dashboard'], dashboard: { aggregates: FIGURES },
    WebSocket: ws.WebSocket, token: TOKENS.approver_a1 });
  const kinds = [];
  c.on('dashboard', ({ kind }) => kinds.push(kind));
  try {
    await c.start();
    await waitFor(c, () => c.state === 'polling' && c.dashboard !== null, 'polled figures');
    await waitFor(c, () => c.stats.notModified > 0, 'a 304');
    await createRequest('dashboard-polled');
    const after = await restFigures('approver_a1');
    await waitFor(c, () => sameFigures(c.dashboard.aggregates, after.figures),
      'the polled figures after the write');
    assert.deepEqual([...new Set(kinds)], ['rest']);
    assert.equal(c.stats.connects, 0);
    const held = c.dashboard.offset;
    ws.blocked = false;
    await waitFor(c, () => c.state === 'live', 'live');
    const subscribe = ws.sent.find((m) => m.event === 'subscribe');
    assert.deepEqual(subscribe.since, { dashboard: held });
    assert.deepEqual(c.dashboard.aggregates, after.figures);
  } finally {
    c.stop();
  }
});

test("an administrator's broadcast arrives as a `broadcast` event", async () => {
  const buyer = client({ token: TOKENS.buyer });
  const got = [];
  buyer.on('broadcast', ({ broadcast }) => got.push(broadcast));
  try {
    await buyer.start();
    await waitFor(buyer, () => buyer.state === 'live', 'live');
    const sent = await api('admin', 'POST', '/api/admin/broadcasts',
      { message: 'Sistema em manutenção às 22h', level: 'warning', roles: ['buyer'] });
    await waitFor(buyer, () => got.length === 1, 'the broadcast');
    assert.deepEqual(got[0], { event: 'broadcast', id: sent.id, level: 'warning',
      message: 'Sistema em manutenção às 22h', timestamp: sent.timestamp });
  } finally {
    buyer.stop();
  }
});

test('a refused token stops the client with the reason', async () => {
  const c = client({ token: 'not-a-token' });
  const error = await c.start().then(() => null, (e) => e);
  assert.ok(error instanceof SinalError);
  assert.equal(error.status, 401);
  assert.equal(c.state, 'stopped');
  assert.equal(c.lastError, error);
});
