// @ts-check
/**
 * sinal-client.js: a JavaScript client for Sinal, for browsers and Node.js 20+ (an ES module,
 * no dependencies, no build step).
 *
 *     import { SinalClient } from '/web/sinal-client.js';
 *     const client = new SinalClient({ token, wsUrl: 'ws://127.0.0.1:3001/ws',
 *                                      resources: ['purchase_request_changed'] });
 *     client.store('purchase_request_changed').addEventListener('change', (e) => ...);
 *     await client.start();
 *
 * What it does, in the order of docs/protocol.md (sections 6 and 10):
 * - bootstrap: each resource's list is read by REST first (every page), which gives the rows
 *   and the offset they reflect; the subscription then starts from that offset (`since`);
 * - the socket speaks the JSON subprotocol (`sinal.json.v1`): `connect`, then one `subscribe`
 *   per topic (with `since`), heartbeats every `heartbeatInterval`; a socket silent for
 *   `connectionTimeout` is closed and replaced;
 * - every `data_update` is applied to the topic's local store (a `ResourceStore`, which emits
 *   `change` events); `resync` refetches the list (or, for `slow_consumer`, resumes from the
 *   last offset);
 * - when the socket closes or cannot be opened: reconnects with exponential backoff and
 *   jitter, resuming from the stores' offsets, and meanwhile polls REST with
 *   `?since=<offset>` and the ETag (`304 Not Modified` when nothing changed), so the stores
 *   keep moving; it goes back to the socket as soon as one opens;
 * - optional topics (`topics`, e.g. `dashboard` or `metrics`) are subscribed to one by one:
 *   the `subscribed` answer says the server has them, `unknown_topic` or `forbidden` that it
 *   does not (`topicStatus`, and a `topic` event).
 *
 * Events of the client (`addEventListener` or `on`), each a CustomEvent whose `detail` is:
 *   state         {state, previous}            connection state changed
 *   change        {topic, op, id, row, previous, offset, source}   a row changed
 *   reset         {topic, offset}              a store was replaced by a REST list
 *   topic         {topic, available, code?}    the server has (or has not) a topic
 *   welcome       {welcome}                    a socket session opened
 *   notification  {notification}               a notification for the user (de-duplicated)
 *   metrics       {metrics}                    a `metrics` message (admins)
 *   servererror   {code, message, ref}         an `error` frame that did not end the session
 *   fatal         {error}                      the server refused us for good (bad token...)
 */

/** The subprotocol this client speaks. */
export const SUBPROTOCOL = 'sinal.json.v1';

/** Topics that have a REST list, and its path under /api/. */
export const RESOURCE_OF_TOPIC = Object.freeze({
  purchase_request_changed: 'purchase-requests',
  approval_changed: 'approvals',
  quotation_changed: 'quotations',
  purchase_order_changed: 'purchase-orders',
});

/** Close codes after which reconnecting cannot help (docs/protocol.md section 9). */
const FATAL_CLOSE_CODES = new Set([4000, 4001, 4002, 4003, 4004, 4100, 4102, 4103]);
const FATAL_ERROR_CODES = new Set(['auth_failed', 'token_expired', 'not_authenticated',
  'bad_frame', 'frame_too_large', 'too_deep']);
const SEEN_NOTIFICATIONS = 1000;

/**
 * @typedef {'idle'|'connecting'|'live'|'reconnecting'|'polling'|'stopped'} ConnectionState
 *   idle: not started; connecting: first bootstrap and socket; live: the socket is open and
 *   subscribed; reconnecting: neither the socket nor REST answers; polling: no socket, but REST
 *   polling answers; stopped: `stop()` was called or the server refused us for good.
 */
/** @typedef {Record<string, any>} Row */
/**
 * @typedef {object} SinalClientOptions
 * @property {string} token  the JWT (`connect` and `Authorization: Bearer`)
 * @property {string} wsUrl  the WebSocket URL, e.g. `ws://127.0.0.1:3001/ws`
 * @property {string} [httpUrl]  the REST base URL; '' (the default) is the page's origin
 * @property {string[]} [resources]  topics kept in local stores, bootstrapped by REST
 *   (keys of RESOURCE_OF_TOPIC)
 * @property {string[]} [topics]  further topics to subscribe to when the server has them
 *   (no REST bootstrap; their `data_update`s go to stores too)
 * @property {Record<string, (row: Row) => boolean>} [keep]  per topic: whether a row is
 *   still in view; a row an update takes out of view leaves the store (protocol section 5)
 * @property {number} [pollInterval]  ms between REST polls while there is no socket (3000)
 * @property {number} [backoffBase]  ms before the first reconnection attempt (500)
 * @property {number} [backoffMax]  ms, the longest wait between attempts (30000)
 * @property {number} [connectTimeout]  ms for a socket to open and answer `welcome` (10000)
 * @property {typeof WebSocket} [WebSocket]  the WebSocket class (default: the global one)
 * @property {typeof fetch} [fetch]  the fetch function (default: the global one)
 * @property {() => number} [random]  a source of jitter in [0, 1) (default Math.random)
 */
/**
 * @typedef {object} ClientStats
 * @property {number} connects  socket sessions that became live
 * @property {number} socketFailures  sessions that ended before becoming live
 * @property {number} refetches  REST list reads (bootstrap and resyncs)
 * @property {number} polls  REST polls made while there was no socket
 * @property {number} notModified  polls answered 304
 * @property {number} heartbeatsSent
 * @property {number} resyncs  `resync` messages received
 * @property {number} framesReceived
 */

/** An error from the server (problem details, an `error` frame) or the network. */
export class SinalError extends Error {
  /**
   * @param {string} message
   * @param {{status?: number, code?: string, problem?: any}} [info]
   */
  constructor(message, info = {}) {
    super(message);
    this.name = 'SinalError';
    /** HTTP status; 0 for a network error or a WebSocket error. */
    this.status = info.status ?? 0;
    /** The documented error code (`forbidden`, `invalid_transition`, `auth_failed`...). */
    this.code = info.code ?? '';
    /** The RFC 9457 problem details, when the server sent them. */
    this.problem = info.problem ?? null;
  }

  /** Retrying cannot help: the token or the role was refused. */
  get fatal() {
    return this.status === 401 || this.status === 403 || FATAL_ERROR_CODES.has(this.code);
  }
}

/**
 * The rows of one topic that the user may see, by id, and the offset they reflect.
 * Emits `change` ({topic, op, id, row, previous, offset, source}) and `reset` ({topic, offset}).
 */
export class ResourceStore extends EventTarget {
  /** @param {string} topic */
  constructor(topic) {
    super();
    this.topic = topic;
    /** @type {Map<string, Row>} */
    this.rows = new Map();
    /** @type {number | null} the change-log offset the rows reflect */
    this.offset = null;
    /** true once a REST list (or a subscription) has given the store a starting point */
    this.loaded = false;
  }

  get size() {
    return this.rows.size;
  }

  /** @param {string | number} id */
  get(id) {
    return this.rows.get(String(id));
  }

  /** @returns {Row[]} */
  values() {
    return [...this.rows.values()];
  }

  /**
   * Replace every row (a REST list and the offset it reflects).
   * @param {Row[]} rows
   * @param {number | null} offset
   */
  replace(rows, offset) {
    this.rows = new Map(rows.map((row) => [String(row.id), row]));
    this.offset = offset;
    this.loaded = true;
    this.dispatchEvent(new CustomEvent('reset', { detail: { topic: this.topic, offset } }));
  }

  /**
   * Apply one change. Returns whether the store changed.
   * @param {'insert'|'update'|'delete'} op
   * @param {string | number} id
   * @param {Row | null} row  the whole row after the change (null for a delete)
   * @param {{offset?: number | null, source?: string}} [meta]
   */
  apply(op, id, row, meta = {}) {
    const offset = meta.offset ?? null;
    if (offset !== null && this.offset !== null && offset <= this.offset) {
      return false; // already applied (offsets strictly increase within a topic)
    }
    const key = String(id);
    const previous = this.rows.get(key) ?? null;
    if (offset !== null) this.offset = offset;
    if (op === 'delete' || row === null) {
      if (previous === null) return false;
      this.rows.delete(key);
    } else {
      this.rows.set(key, row);
    }
    const detail = { topic: this.topic, op, id: key, row: op === 'delete' ? null : row,
      previous, offset, source: meta.source ?? '' };
    this.dispatchEvent(new CustomEvent('change', { detail }));
    return true;
  }
}

/** Keeps local stores of Sinal topics current over a WebSocket, or REST polling without one. */
export class SinalClient extends EventTarget {
  /** @param {SinalClientOptions} options */
  constructor(options) {
    super();
    if (!options || !options.token) throw new TypeError('SinalClient: token is required');
    if (!options.wsUrl) throw new TypeError('SinalClient: wsUrl is required');
    this.token = options.token;
    this.wsUrl = options.wsUrl;
    this.httpUrl = (options.httpUrl ?? '').replace(/\/+$/, '');
    /** @type {string[]} */
    this.resources = [...(options.resources ?? [])];
    for (const topic of this.resources) {
      if (!(topic in RESOURCE_OF_TOPIC)) {
        throw new TypeError(`SinalClient: topic ${topic} has no REST list; pass it in topics`);
      }
    }
    /** @type {string[]} */
    this.optionalTopics = (options.topics ?? []).filter((t) => !this.resources.includes(t));
    this.keep = options.keep ?? {};
    this.pollInterval = options.pollInterval ?? 3000;
    this.backoffBase = options.backoffBase ?? 500;
    this.backoffMax = options.backoffMax ?? 30000;
    this.connectTimeout = options.connectTimeout ?? 10000;
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    const fetcher = options.fetch ?? globalThis.fetch;
    this.#fetch = (/** @type {any} */ url, /** @type {any} */ init) => fetcher(url, init);
    this.#random = options.random ?? Math.random;

    /** @type {Map<string, ResourceStore>} */
    this.stores = new Map();
    for (const topic of [...this.resources, ...this.optionalTopics]) {
      const store = new ResourceStore(topic);
      store.addEventListener('change', (e) => this.#emit('change', /** @type {any} */ (e).detail));
      store.addEventListener('reset', (e) => this.#emit('reset', /** @type {any} */ (e).detail));
      this.stores.set(topic, store);
    }
    /** @type {Map<string, 'pending'|'subscribed'|'unavailable'>} */
    this.topicStatus = new Map();
    /** @type {any[]} notifications received, oldest first */
    this.notifications = [];
    /** @type {ConnectionState} */
    this.state = 'idle';
    /** @type {any} the `welcome` of the open socket session, or null */
    this.session = null;
    /** @type {SinalError | null} why the client stopped, when the server refused it */
    this.lastError = null;
    /** Date.now() of the last frame received */
    this.lastMessageAt = 0;
    /** @type {ClientStats} */
    this.stats = { connects: 0, socketFailures: 0, refetches: 0, polls: 0, notModified: 0,
      heartbeatsSent: 0, resyncs: 0, framesReceived: 0 };
  }

  #WebSocket;
  #fetch;
  #random;
  /** @type {Set<string>} */
  #seen = new Set();
  /** @type {Map<string, string>} */
  #etags = new Map();
  /** @type {Set<() => void>} */
  #wakers = new Set();
  /** @type {WebSocket | null} */
  #ws = null;
  #started = false;
  #stopped = false;
  #retryNow = false;
  #nextPollAt = 0;

  // --- public API ---------------------------------------------------------------------------

  /**
   * The local store of a topic (given in `resources` or `topics`).
   * @param {string} topic
   * @returns {ResourceStore}
   */
  store(topic) {
    const store = this.stores.get(topic);
    if (!store) throw new TypeError(`SinalClient: not following topic ${topic}`);
    return store;
  }

  /**
   * addEventListener with the detail as argument; returns a function that removes it.
   * @param {string} type
   * @param {(detail: any) => void} handler
   */
  on(type, handler) {
    const listener = (/** @type {Event} */ event) => handler(/** @type {any} */ (event).detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  /**
   * Load every resource by REST, then open the socket in the background. Resolves once the
   * stores hold their lists (retrying with backoff while the server cannot be reached);
   * rejects when the server refuses the token or the role (401, 403).
   */
  async start() {
    if (this.#started) return;
    this.#started = true;
    this.#setState('connecting');
    let attempt = 0;
    while (!this.#stopped) {
      try {
        for (const topic of this.resources) await this.refetch(topic);
        break;
      } catch (error) {
        const failure = asSinalError(error);
        if (failure.fatal) {
          this.#fail(failure);
          throw failure;
        }
        if (failure.status === 0) this.#setState('reconnecting');
        await this.#sleep(this.#backoff(attempt++));
      }
    }
    if (!this.#stopped) void this.#connectLoop();
  }

  /** Close the socket and stop every timer; the stores keep their rows. */
  stop() {
    this.#stopped = true;
    this.#ws?.close(1000, 'client stopped');
    this.#wakeAll();
    this.#setState('stopped');
  }

  /** Drop the current socket (or cut the current wait) and reconnect at once. */
  reconnect() {
    this.#retryNow = true;
    if (this.#ws) this.#ws.close(1000, 'reconnect');
    this.#wakeAll();
  }

  /** Without a socket: poll REST now rather than at the next interval (e.g. after a write). */
  pollNow() {
    this.#nextPollAt = 0;
    this.#wakeAll();
  }

  /**
   * A REST call with the client's token. Resolves the JSON body (null when empty); rejects
   * with a SinalError carrying the status, the code and the problem details.
   * @param {string} method
   * @param {string} path  e.g. `/api/purchase-requests/<id>/approve`
   * @param {any} [body]  sent as JSON
   */
  async request(method, path, body) {
    return (await this.#http(method, path, { body })).body;
  }

  /**
   * Replace a topic's store with a full REST read (every page); the offset of the first
   * page is where the following changes start.
   * @param {string} topic
   */
  async refetch(topic) {
    const resource = RESOURCE_OF_TOPIC[/** @type {keyof typeof RESOURCE_OF_TOPIC} */ (topic)];
    /** @type {Row[]} */
    const rows = [];
    /** @type {number | null} */
    let offset = null;
    let cursor = null;
    do {
      const query = new URLSearchParams({ limit: '1000' });
      if (cursor) query.set('cursor', cursor);
      const { body } = await this.#http('GET', `/api/${resource}?${query}`);
      rows.push(...body.data);
      if (offset === null) offset = body.offset;
      cursor = body.nextCursor;
    } while (cursor);
    const keep = this.keep[topic];
    this.#etags.delete(topic);
    this.stats.refetches++;
    this.store(topic).replace(keep ? rows.filter(keep) : rows, offset);
  }

  /** One REST poll of every resource: `?since=<offset>` with the ETag (304, a delta, or 410). */
  async pollOnce() {
    if (this.resources.length === 0) {
      await this.#http('GET', '/health/live');
      this.stats.polls++;
      return;
    }
    for (const topic of this.resources) await this.#pollTopic(topic);
  }

  // --- the connection loop --------------------------------------------------------------------

  async #connectLoop() {
    let attempt = 0;
    while (!this.#stopped) {
      const outcome = await this.#session();
      if (this.#stopped) return;
      if (outcome.fatal) {
        this.#fail(outcome.fatal);
        return;
      }
      if (outcome.live) {
        attempt = 0;
        this.#setState('reconnecting');
      } else {
        this.stats.socketFailures++;
      }
      this.#nextPollAt = 0; // poll at once: the socket is gone, REST may still answer
      try {
        await this.#pollFor(this.#retryNow ? 0 : this.#backoff(attempt++));
      } catch (error) {
        this.#fail(asSinalError(error));
        return;
      }
      this.#retryNow = false;
    }
  }

  /** @param {number} attempt */
  #backoff(attempt) {
    const delay = Math.min(this.backoffMax, this.backoffBase * 2 ** Math.min(attempt, 30));
    return delay * (0.5 + this.#random() / 2);
  }

  /**
   * Poll REST every pollInterval for `ms` (the wait before the next socket attempt).
   * @param {number} ms
   */
  async #pollFor(ms) {
    const until = Date.now() + ms;
    while (!this.#stopped && !this.#retryNow && Date.now() < until) {
      if (Date.now() >= this.#nextPollAt) {
        this.#nextPollAt = Date.now() + this.pollInterval;
        try {
          await this.pollOnce();
          if (this.#ws === null && !this.#stopped) this.#setState('polling');
        } catch (error) {
          const failure = asSinalError(error);
          if (failure.fatal) throw failure;
          if (failure.status === 0) this.#setState('reconnecting');
          const wait = Number(failure.problem?.retryAfter ?? 0) * 1000;
          if (failure.status === 429) this.#nextPollAt = Date.now() + Math.max(wait, 1000);
        }
      }
      await this.#sleep(Math.max(0, Math.min(this.#nextPollAt, until) - Date.now()));
    }
  }

  /** @param {string} topic */
  async #pollTopic(topic) {
    const store = this.store(topic);
    const resource = RESOURCE_OF_TOPIC[/** @type {keyof typeof RESOURCE_OF_TOPIC} */ (topic)];
    for (;;) {
      const etag = this.#etags.get(topic);
      const response = await this.#http('GET', `/api/${resource}?since=${store.offset}`,
        { etag, accept: [304, 410] });
      this.stats.polls++;
      if (response.status === 304) {
        this.stats.notModified++;
        return;
      }
      if (response.status === 410) { // resync: older than the log keeps
        await this.refetch(topic);
        return;
      }
      const body = response.body;
      for (const entry of body.data) {
        const { _operation: op = 'update', ...row } = entry;
        this.#apply(topic, op, row.id, op === 'delete' ? null : row, null, 'poll');
      }
      store.offset = body.offset;
      const tag = response.headers.get('ETag');
      if (tag) this.#etags.set(topic, tag);
      else this.#etags.delete(topic);
      if (!body.hasMore) return;
    }
  }

  /**
   * One socket session. Resolves when it ends, with whether it became live and, when the
   * server refused us for good, why.
   * @returns {Promise<{live: boolean, fatal: SinalError | null}>}
   */
  #session() {
    return new Promise((resolve) => {
      const ctx = { live: false, welcomed: false, fatal: /** @type {SinalError|null} */ (null),
        beat: /** @type {any} */ (null) };
      /** @type {WebSocket} */
      let ws;
      try {
        ws = new this.#WebSocket(this.wsUrl, [SUBPROTOCOL]);
      } catch {
        resolve(ctx);
        return;
      }
      this.#ws = ws;
      for (const topic of this.stores.keys()) {
        if (this.topicStatus.get(topic) !== 'unavailable') this.topicStatus.set(topic, 'pending');
      }
      let ended = false;
      /** @param {number} code @param {string} reason */
      const end = (code, reason) => {
        if (ended) return;
        ended = true;
        clearTimeout(openTimer);
        clearInterval(ctx.beat);
        ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
        if (this.#ws === ws) this.#ws = null;
        this.session = null;
        if (!ctx.fatal && FATAL_CLOSE_CODES.has(code)) {
          ctx.fatal = new SinalError(`the server closed the socket: ${reason || code}`,
            { code: reason || String(code) });
        }
        resolve(ctx);
      };
      const openTimer = setTimeout(() => {
        ws.close();
        end(1006, 'timeout');
      }, this.connectTimeout);
      let opened = false;
      ws.onopen = () => {
        opened = true;
        send(ws, { event: 'connect', token: this.token, ref: 'connect' });
      };
      // Browsers follow an error with a close event (which has the close code); Node 20's
      // WebSocket does not when the connection fails before it opens.
      ws.onerror = () => {
        if (!opened) end(1006, 'error');
        else setTimeout(() => end(1006, 'error'), 1000);
      };
      ws.onmessage = (event) => {
        this.lastMessageAt = Date.now();
        this.stats.framesReceived++;
        let message;
        try {
          message = JSON.parse(String(event.data));
        } catch {
          return;
        }
        if (message && message.event === 'welcome') clearTimeout(openTimer);
        this.#onMessage(ws, message, ctx).catch(() => ws.close());
      };
      ws.onclose = (event) => end(event.code, event.reason);
    });
  }

  /**
   * @param {WebSocket} ws
   * @param {any} message
   * @param {{live: boolean, welcomed: boolean, fatal: SinalError | null, beat: any}} ctx
   */
  async #onMessage(ws, message, ctx) {
    switch (message.event) {
      case 'welcome': {
        ctx.welcomed = true;
        this.session = message;
        this.#emit('welcome', { welcome: message });
        const interval = Math.max(100, Number(message.heartbeatInterval) || 30000);
        const timeout = Math.max(interval, Number(message.connectionTimeout) || 60000);
        ctx.beat = setInterval(() => {
          if (Date.now() - this.lastMessageAt > timeout) {
            ws.close(); // silent for connectionTimeout: treat as dead (protocol section 7)
            return;
          }
          send(ws, { event: 'heartbeat', timestamp: Date.now() });
          this.stats.heartbeatsSent++;
        }, interval);
        for (const topic of this.stores.keys()) {
          if (this.topicStatus.get(topic) !== 'unavailable') this.#subscribe(ws, topic);
        }
        this.#maybeLive(ctx);
        break;
      }
      case 'subscribed':
        for (const topic of message.events ?? []) {
          const store = this.stores.get(topic);
          if (!store) continue;
          if (store.offset === null && message.offsets && topic in message.offsets) {
            store.offset = message.offsets[topic];
            store.loaded = true;
          }
          const before = this.topicStatus.get(topic);
          this.topicStatus.set(topic, 'subscribed');
          if (before !== 'subscribed') this.#emit('topic', { topic, available: true });
        }
        this.#maybeLive(ctx);
        break;
      case 'data_update':
        this.#apply(message.type, message.op, message.id,
          message.op === 'delete' ? null : message.data, message.offset, 'socket');
        break;
      case 'notification': {
        const key = String(message.id);
        if (this.#seen.has(key)) break; // the same one can arrive twice around a reconnect
        this.#seen.add(key);
        if (this.#seen.size > SEEN_NOTIFICATIONS) {
          this.#seen.delete(/** @type {string} */ (this.#seen.values().next().value));
        }
        this.notifications.push(message);
        this.#emit('notification', { notification: message });
        break;
      }
      case 'metrics':
        this.#emit('metrics', { metrics: message });
        break;
      case 'resync': {
        const topic = message.topic;
        if (!this.stores.has(topic)) break;
        this.stats.resyncs++;
        this.topicStatus.set(topic, 'pending');
        if (message.reason !== 'slow_consumer') {
          if (this.resources.includes(topic)) await this.refetch(topic);
          else this.store(topic).offset = null;
        }
        this.#subscribe(ws, topic);
        break;
      }
      case 'error':
        this.#onError(ws, message, ctx);
        break;
      default:
        break; // heartbeat, and kinds a newer server may add
    }
  }

  /**
   * @param {WebSocket} ws
   * @param {any} message
   * @param {{live: boolean, welcomed: boolean, fatal: SinalError | null}} ctx
   */
  #onError(ws, message, ctx) {
    const ref = typeof message.ref === 'string' ? message.ref : '';
    if (ref.startsWith('sub:')) {
      const topic = ref.slice(4);
      if (message.code === 'unknown_topic' || message.code === 'forbidden') {
        this.topicStatus.set(topic, 'unavailable');
        this.#emit('topic', { topic, available: false, code: message.code });
        this.#maybeLive(ctx);
        return;
      }
    }
    if (ref === 'connect' || FATAL_ERROR_CODES.has(message.code)) {
      ctx.fatal = new SinalError(message.message || message.code, { code: message.code });
      return; // the server closes the socket next
    }
    this.#emit('servererror', { code: message.code, message: message.message, ref });
  }

  /** @param {{live: boolean, welcomed: boolean}} ctx */
  #maybeLive(ctx) {
    if (ctx.live || !ctx.welcomed) return;
    for (const topic of this.resources) {
      if (this.topicStatus.get(topic) === 'pending') return;
    }
    ctx.live = true;
    this.stats.connects++;
    this.#setState('live');
  }

  /**
   * @param {WebSocket} ws
   * @param {string} topic
   */
  #subscribe(ws, topic) {
    /** @type {Record<string, any>} */
    const message = { event: 'subscribe', events: [topic], ref: `sub:${topic}` };
    const offset = this.stores.get(topic)?.offset;
    if (offset !== null && offset !== undefined) message.since = { [topic]: offset };
    this.topicStatus.set(topic, 'pending');
    send(ws, message);
  }

  /**
   * @param {string} topic
   * @param {'insert'|'update'|'delete'} op
   * @param {string | number} id
   * @param {Row | null} row
   * @param {number | null} offset
   * @param {string} source
   */
  #apply(topic, op, id, row, offset, source) {
    const store = this.stores.get(topic);
    if (!store) return;
    const keep = this.keep[topic];
    if (row !== null && keep && !keep(row)) {
      op = 'delete'; // the row left this user's view (e.g. a card past the approver's level)
      row = null;
    }
    store.apply(op, id, row, { offset, source });
  }

  // --- plumbing ---------------------------------------------------------------------------------

  /**
   * @param {string} method
   * @param {string} path
   * @param {{body?: any, etag?: string, accept?: number[]}} [options]
   * @returns {Promise<{status: number, body: any, headers: Headers}>}
   */
  async #http(method, path, options = {}) {
    /** @type {Record<string, string>} */
    const headers = { Authorization: `Bearer ${this.token}`, Accept: 'application/json' };
    if (options.etag) headers['If-None-Match'] = options.etag;
    /** @type {RequestInit} */
    const init = { method, headers, cache: 'no-store' };
    if (options.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(options.body);
    }
    let response;
    try {
      response = await this.#fetch(this.httpUrl + path, init);
    } catch (error) {
      throw new SinalError(`${method} ${path}: ${/** @type {Error} */ (error).message}`,
        { code: 'network_error' });
    }
    if (response.status === 304) return { status: 304, body: null, headers: response.headers };
    const text = await response.text();
    let body = null;
    if (text) {
      try {
        body = JSON.parse(text);
      } catch {
        body = null;
      }
    }
    if (response.ok || options.accept?.includes(response.status)) {
      return { status: response.status, body, headers: response.headers };
    }
    const problem = body && typeof body === 'object' ? { ...body } : null;
    if (problem && response.headers.get('Retry-After')) {
      problem.retryAfter = Number(response.headers.get('Retry-After'));
    }
    throw new SinalError(problem?.detail || `${method} ${path} answered ${response.status}`,
      { status: response.status, code: problem?.code || 'http_error', problem });
  }

  /** @param {ConnectionState} state */
  #setState(state) {
    if (this.state === state || (this.state === 'stopped' && this.#stopped)) return;
    const previous = this.state;
    this.state = state;
    this.#emit('state', { state, previous });
  }

  /** @param {SinalError} error */
  #fail(error) {
    this.lastError = error;
    this.#stopped = true;
    this.#ws?.close(1000, 'client stopped');
    this.#wakeAll();
    this.#setState('stopped');
    this.#emit('fatal', { error });
  }

  /**
   * @param {string} type
   * @param {any} detail
   */
  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** @param {number} ms */
  #sleep(ms) {
    return new Promise((resolve) => {
      if (this.#stopped) {
        resolve(undefined);
        return;
      }
      const wake = () => {
        clearTimeout(timer);
        this.#wakers.delete(wake);
        resolve(undefined);
      };
      const timer = setTimeout(wake, ms);
      this.#wakers.add(wake);
    });
  }

  #wakeAll() {
    for (const wake of [...this.#wakers]) wake();
  }
}

/**
 * @param {WebSocket} ws
 * @param {any} message
 */
function send(ws, message) {
  if (ws.readyState === 1) ws.send(JSON.stringify(message));
}

/**
 * @param {unknown} error
 * @returns {SinalError}
 */
function asSinalError(error) {
  if (error instanceof SinalError) return error;
  return new SinalError(String(/** @type {any} */ (error)?.message ?? error),
    { code: 'client_error' });
}
