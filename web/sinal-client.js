// @ts-check
/**
 * sinal-client.js: a JavaScript client for Sinal, for browsers and Node.js 20+ (ES modules:
 * this file, sinal-rest.js, sinal-socket.js, sinal-store.js, sinal-dashboard.js; no
 * dependencies, no build step). It follows docs/protocol.md sections 6 and 10:
 * - bootstrap: each resource's list is read by REST, then subscribed from its offset (`since`);
 * - JSON subprotocol: `connect`, one `subscribe` per topic, heartbeats; a socket silent for
 *   `connectionTimeout` is replaced; `resync` refetches (or, `slow_consumer`, resumes);
 * - on a lost or refused socket: reconnects with exponential backoff and jitter, resuming with
 *   `since`, and meanwhile polls `?since=<offset>` with the ETag (304 when nothing changed);
 * - optional `topics` (e.g. `metrics`): `subscribed`, or `unknown_topic` / `forbidden`, says
 *   if the server has them for the user (`topicStatus`, and a `topic` event);
 * - `dashboard` in `topics` (protocol section 5): its figures in `client.dashboard`, from
 *   `dashboard_snapshot`/`dashboard_update` (sinal-dashboard.js), resumed with `since`; without
 *   a socket, polled from GET /api/dashboard with the ETag.
 *
 * Events (`addEventListener` or `on`), CustomEvents whose `detail` is:
 *   state         {state, previous}            connection state changed
 *   change        {topic, op, id, row, previous, offset, source}   a row changed
 *   reset         {topic, offset}              a store was replaced by a REST list
 *   topic         {topic, available, code?}    the server has (or has not) a topic
 *   dashboard     {dashboard, kind, names}     `client.dashboard` changed: kind 'snapshot',
 *                                              'update' or 'rest'; names: the figures replaced
 *   welcome       {welcome}                    a socket session opened
 *   notification  {notification}               a notification for the user (de-duplicated)
 *   metrics       {metrics}                    a `metrics` message (admins)
 *   broadcast     {broadcast}                  an administrator's message to everyone (not kept)
 *   servererror   {code, message, ref}         an `error` frame that did not end the session
 *   fatal         {error}                      the server refused us for good (bad token...)
 */

import { DASHBOARD_TOPIC, DashboardCopy } from './sinal-dashboard.js';
import {
  FATAL_ERROR_CODES, RESOURCE_OF_TOPIC, RestApi, SinalError, asSinalError,
} from './sinal-rest.js';
import { SUBPROTOCOL, Session } from './sinal-socket.js';
import { ResourceStore } from './sinal-store.js';

export { DASHBOARD_TOPIC, RESOURCE_OF_TOPIC, ResourceStore, SUBPROTOCOL, SinalError };

const SEEN_NOTIFICATIONS = 1000;

/**
 * @typedef {'idle'|'connecting'|'live'|'reconnecting'|'polling'|'stopped'} ConnectionState
 *   idle: not started; connecting: first bootstrap and socket; live: the socket is open and
 *   subscribed (and holds the dashboard's figures, when `dashboard` is followed and served);
 *   reconnecting: neither the socket nor REST answers; polling: no socket, but REST
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
 *   (no REST bootstrap; their `data_update`s go to stores too; `dashboard`: client.dashboard)
 * @property {import('./sinal-dashboard.js').DashboardFilters} [dashboard]  the `dashboard`
 *   subscribe's filters: `aggregates` (default: all the user may get), `window` (default 30d)
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

/** Keeps local stores of Sinal topics current over a WebSocket, or REST polling without one. */
export class SinalClient extends EventTarget {
  /** @param {SinalClientOptions} options */
  constructor(options) {
    super();
    if (!options?.token || !options.wsUrl) {
      throw new TypeError('SinalClient: token and wsUrl are required');
    }
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
    this.#rest = new RestApi({ httpUrl: this.httpUrl, token: this.token,
      fetch: (/** @type {any} */ url, /** @type {any} */ init) => fetcher(url, init) });
    this.#random = options.random ?? Math.random;

    this.#topics = [...this.resources, ...this.optionalTopics];
    this.#dashboard = this.optionalTopics.includes(DASHBOARD_TOPIC)
      ? new DashboardCopy(options.dashboard) : null;
    /** @type {Map<string, ResourceStore>} */
    this.stores = new Map();
    for (const topic of this.#topics) {
      if (topic === DASHBOARD_TOPIC) continue; // figures, not rows
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
  #rest;
  #random;
  /** @type {Set<string>} */
  #seen = new Set();
  /** @type {Set<() => void>} */
  #wakers = new Set();
  /** @type {Session | null} the open socket session */
  #ws = null;
  #started = false;
  #stopped = false;
  #retryNow = false;
  #nextPollAt = 0;
  /** @type {string[]} every topic followed: resources, then the optional ones */
  #topics;
  /** @type {DashboardCopy | null} */ #dashboard;

  // --- public API ---------------------------------------------------------------------------

  /** The `dashboard` figures, {offset, today, window, aggregates} (protocol section 4), or null
   * before the first ones or without `dashboard` in topics.
   * @returns {import('./sinal-dashboard.js').DashboardFigures | null} */
  get dashboard() {
    return this.#dashboard?.figures ?? null;
  }

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
    this.#ws?.close('client stopped');
    this.#wakeAll();
    this.#setState('stopped');
  }

  /** Drop the current socket (or cut the current wait) and reconnect at once. */
  reconnect() {
    this.#retryNow = true;
    this.#ws?.close('reconnect');
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
    return (await this.#rest.call(method, path, { body })).body;
  }

  /**
   * Replace a topic's store with a full REST read (every page); the offset of the first
   * page is where the following changes start.
   * @param {string} topic
   */
  async refetch(topic) {
    const { rows, offset } = await this.#rest.list(topic);
    const keep = this.keep[topic];
    this.stats.refetches++;
    this.store(topic).replace(keep ? rows.filter(keep) : rows, offset);
  }

  /** One REST poll of every resource: `?since=<offset>` with the ETag (304, a delta, or 410);
   * and of the dashboard's figures, when followed (GET /api/dashboard, 304 or the figures). */
  async pollOnce() {
    for (const topic of this.resources) await this.#pollTopic(topic);
    if (this.#dashboard && this.topicStatus.get(DASHBOARD_TOPIC) !== 'unavailable') {
      await this.#pollDashboard(this.#dashboard);
    } else if (this.resources.length === 0) {
      await this.#rest.call('GET', '/health/live');
      this.stats.polls++;
    }
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
    for (;;) {
      const response = await this.#rest.delta(topic, store.offset);
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
      if (!body.hasMore) return;
    }
  }

  /** @param {DashboardCopy} copy */
  async #pollDashboard(copy) {
    const answer = await this.#rest.dashboard(copy.query());
    this.stats.polls++;
    if (answer.status === 304) this.stats.notModified++;
    else if (answer.status === 200) this.#emitDashboard('rest', copy.fromRest(answer.body));
    else this.#unavailable(DASHBOARD_TOPIC, answer.body?.code ?? `http_${answer.status}`);
  }

  /** @param {string} kind  snapshot, update, rest @param {string[]} names */
  #emitDashboard(kind, names) {
    this.#emit('dashboard', { dashboard: this.dashboard, kind, names });
  }

  /**
   * One socket session; resolves when it ends (`live`: it got that far; `fatal`: refused).
   * @returns {Promise<Session>}
   */
  async #session() {
    for (const topic of this.#topics) {
      if (this.topicStatus.get(topic) !== 'unavailable') this.topicStatus.set(topic, 'pending');
    }
    const session = new Session({ WebSocket: this.#WebSocket, url: this.wsUrl, token: this.token,
      connectTimeout: this.connectTimeout, stats: this.stats,
      onMessage: (current, message) => {
        this.lastMessageAt = current.lastMessageAt;
        this.stats.framesReceived++;
        return this.#onMessage(current, message);
      } });
    this.#ws = session;
    await session.run();
    if (this.#ws === session) this.#ws = null;
    this.session = null;
    return session;
  }

  /**
   * @param {Session} ws
   * @param {any} message
   */
  async #onMessage(ws, message) {
    switch (message.event) {
      case 'welcome': // the session has started its heartbeats
        this.session = message;
        this.#emit('welcome', { welcome: message });
        for (const topic of this.#topics) {
          if (this.topicStatus.get(topic) !== 'unavailable') this.#subscribe(ws, topic);
        }
        this.#maybeLive(ws);
        break;
      case 'subscribed':
        for (const topic of message.events ?? []) {
          if (!this.#topics.includes(topic)) continue;
          const store = this.stores.get(topic);
          if (store && store.offset === null && message.offsets && topic in message.offsets) {
            store.offset = message.offsets[topic];
            store.loaded = true;
          }
          const before = this.topicStatus.get(topic);
          this.topicStatus.set(topic, 'subscribed');
          if (before !== 'subscribed') this.#emit('topic', { topic, available: true });
        }
        this.#maybeLive(ws);
        break;
      case 'data_update':
        this.#apply(message.type, message.op, message.id,
          message.op === 'delete' ? null : message.data, message.offset, 'socket');
        break;
      case 'dashboard_snapshot':
      case 'dashboard_update': {
        const names = this.#dashboard?.receive(message);
        if (names === null) this.#subscribe(ws, DASHBOARD_TOPIC); // no copy to patch: a snapshot
        else if (names?.length) this.#emitDashboard(message.event.slice(10), names);
        this.#maybeLive(ws);
        break;
      }
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
      case 'broadcast':
        this.#emit('broadcast', { broadcast: message });
        break;
      case 'resync': {
        const topic = message.topic;
        if (!this.#topics.includes(topic)) break;
        this.stats.resyncs++;
        this.topicStatus.set(topic, 'pending');
        if (message.reason !== 'slow_consumer') {
          if (this.resources.includes(topic)) await this.refetch(topic);
          else if (topic === DASHBOARD_TOPIC) this.#dashboard?.forget();
          else this.store(topic).offset = null;
        }
        this.#subscribe(ws, topic);
        break;
      }
      case 'error':
        this.#onError(ws, message);
        break;
      default:
        break; // heartbeat, and kinds a newer server may add
    }
  }

  /**
   * @param {Session} ws
   * @param {any} message
   */
  #onError(ws, message) {
    const ref = typeof message.ref === 'string' ? message.ref : '';
    if (ref.startsWith('sub:')) {
      const topic = ref.slice(4);
      if (message.code === 'unknown_topic' || message.code === 'forbidden'
        || (topic === DASHBOARD_TOPIC && message.code === 'invalid_filter')) {
        this.#unavailable(topic, message.code);
        this.#maybeLive(ws);
        return;
      }
    }
    if (ref === 'connect' || FATAL_ERROR_CODES.has(message.code)) {
      ws.fatal = new SinalError(message.message || message.code, { code: message.code });
      return; // the server closes the socket next
    }
    this.#emit('servererror', { code: message.code, message: message.message, ref });
  }

  /** @param {string} topic @param {string} code  unknown_topic, forbidden, ... */
  #unavailable(topic, code) {
    this.topicStatus.set(topic, 'unavailable');
    this.#emit('topic', { topic, available: false, code });
  }

  /** @param {Session} ws */
  #maybeLive(ws) {
    if (ws.live || !ws.welcome) return;
    for (const topic of this.resources) {
      if (this.topicStatus.get(topic) === 'pending') return;
    }
    if (this.#dashboard !== null) { // answered, and its figures held (the snapshot after it)
      const status = this.topicStatus.get(DASHBOARD_TOPIC);
      if (status === 'pending' || (status === 'subscribed' && this.dashboard === null)) return;
    }
    ws.live = true;
    this.stats.connects++;
    this.#setState('live');
  }

  /**
   * @param {Session} ws
   * @param {string} topic
   */
  #subscribe(ws, topic) {
    this.topicStatus.set(topic, 'pending');
    if (topic === DASHBOARD_TOPIC && this.#dashboard !== null) {
      ws.send(this.#dashboard.subscribeMessage()); // its filters, and `since` its offset
      return;
    }
    /** @type {Record<string, any>} */
    const message = { event: 'subscribe', events: [topic], ref: `sub:${topic}` };
    const offset = this.stores.get(topic)?.offset;
    if (offset !== null && offset !== undefined) message.since = { [topic]: offset };
    ws.send(message);
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
    this.#ws?.close('client stopped');
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
