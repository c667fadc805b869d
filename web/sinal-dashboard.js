// @ts-check
/** The `dashboard` topic's figures for sinal-client.js (docs/protocol.md section 5, "The
 * dashboard topic", and the messages `dashboard_snapshot` and `dashboard_update`): one copy,
 * exact at its `offset`, that a snapshot (or a read of GET /api/dashboard, its REST twin)
 * replaces and an update patches figure by figure; and the `since` to resume it with. */

/** The topic's name. */
export const DASHBOARD_TOPIC = 'dashboard';

/** The fields of GET /api/dashboard's answer that are not figures (api/dashboard_routes.py). */
const REST_FIELDS = new Set(['offset', 'today', 'window', 'etag']);

/**
 * @typedef {object} DashboardFigures
 * @property {number} offset  the change-log position the figures are exact at
 * @property {string} today  the UTC date (YYYY-MM-DD) the clock-dependent figures are for
 * @property {string} window  the subscription's window: '1d', '7d' or '30d'
 * @property {Record<string, any>} aggregates  figure name (as the protocol names it:
 *   `requestsByStatus`, `pendingByLevel`, ...) -> its value
 */
/**
 * @typedef {object} DashboardFilters  the `filters` of the `dashboard` subscribe
 * @property {string[]} [aggregates]  the figures wanted (default: every one the user may get)
 * @property {string} [window]  '1d', '7d' or '30d' (default: the server's, 30d)
 */

export class DashboardCopy {
  /** @param {DashboardFilters} [filters] */
  constructor(filters = {}) {
    /** @type {DashboardFilters} */
    this.filters = {};
    if (filters.aggregates) this.filters.aggregates = [...filters.aggregates];
    if (filters.window) this.filters.window = filters.window;
    /** @type {DashboardFigures | null} the figures, or null before the first ones */
    this.figures = null;
    /** whether `figures` are this subscription's, so that `since` may resume them */
    this.resumable = false;
  }

  /** The offset to resubscribe with (`since`), or null: then the server sends a snapshot. */
  get since() {
    return this.resumable && this.figures ? this.figures.offset : null;
  }

  /** The `subscribe` message for the topic (`ref` and `since` included). */
  subscribeMessage() {
    /** @type {Record<string, any>} */
    const message = { event: 'subscribe', events: [DASHBOARD_TOPIC], ref: `sub:${DASHBOARD_TOPIC}` };
    if (Object.keys(this.filters).length) message.filters = { ...this.filters };
    if (this.since !== null) message.since = { [DASHBOARD_TOPIC]: this.since };
    return message;
  }

  /** The query of GET /api/dashboard that asks for the same figures and window. */
  query() {
    const query = new URLSearchParams();
    if (this.filters.aggregates) query.set('aggregates', this.filters.aggregates.join(','));
    if (this.filters.window) query.set('window', this.filters.window);
    const text = query.toString();
    return text ? `?${text}` : '';
  }

  /**
   * A `dashboard_snapshot` or a `dashboard_update` (as `snapshot` and `update` say).
   * @param {any} message
   * @returns {string[] | null}
   */
  receive(message) {
    return message.event === 'dashboard_snapshot' ? this.snapshot(message) : this.update(message);
  }

  /**
   * A `dashboard_snapshot`: replace the copy. Returns the names of its figures.
   * @param {{offset: number, today: string, window: string, aggregates: Record<string, any>}} message
   * @returns {string[]}
   */
  snapshot(message) {
    this.figures = { offset: message.offset, today: message.today, window: message.window,
      aggregates: { ...message.aggregates } };
    this.resumable = true;
    return Object.keys(message.aggregates);
  }

  /**
   * A `dashboard_update`: replace the figures it carries (each whole), keep the others.
   * Returns their names; null when there is no copy to patch (only a snapshot can start
   * one), [] for an update older than the copy (the copy is newer for every figure).
   * @param {{offset: number, today: string, aggregates: Record<string, any>}} message
   * @returns {string[] | null}
   */
  update(message) {
    const held = this.figures;
    if (held === null) return null;
    if (message.offset < held.offset) return [];
    this.figures = { offset: message.offset, today: message.today, window: held.window,
      aggregates: { ...held.aggregates, ...message.aggregates } };
    return Object.keys(message.aggregates);
  }

  /**
   * A 200 of GET /api/dashboard (the same figures as the subscription): replace the copy.
   * @param {Record<string, any>} body
   * @returns {string[]}
   */
  fromRest(body) {
    /** @type {Record<string, any>} */
    const aggregates = {};
    for (const [name, value] of Object.entries(body)) {
      if (!REST_FIELDS.has(name)) aggregates[name] = value;
    }
    return this.snapshot({ offset: body.offset, today: body.today, window: body.window,
      aggregates });
  }

  /** The subscription ended otherwise than as a slow consumer (a `resync` with another
   * reason): keep showing the figures, but resubscribe without `since` (a snapshot). */
  forget() {
    this.resumable = false;
  }
}
