// @ts-check
/** The REST side of sinal-client.js: authenticated JSON calls with problem details as
 * `SinalError`, every page of a list and the offset it reflects, and delta polls with ETags
 * (docs/protocol.md section 6, README "HTTP API"). */

/** Topics that have a REST list, and its path under /api/. */
export const RESOURCE_OF_TOPIC = Object.freeze({
  purchase_request_changed: 'purchase-requests',
  approval_changed: 'approvals',
  quotation_changed: 'quotations',
  purchase_order_changed: 'purchase-orders',
});

/** Error codes after which retrying cannot help. */
export const FATAL_ERROR_CODES = new Set(['auth_failed', 'token_expired', 'not_authenticated',
  'bad_frame', 'frame_too_large', 'too_deep']);

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
 * @param {unknown} error
 * @returns {SinalError}
 */
export function asSinalError(error) {
  if (error instanceof SinalError) return error;
  return new SinalError(String(/** @type {any} */ (error)?.message ?? error),
    { code: 'client_error' });
}

/** @typedef {{status: number, body: any, headers: Headers}} Answer */

/** REST calls with a bearer token. */
export class RestApi {
  /**
   * @param {{httpUrl: string, token: string, fetch: typeof fetch}} options
   */
  constructor(options) {
    this.httpUrl = options.httpUrl;
    this.token = options.token;
    this.fetch = options.fetch;
    /** @type {Map<string, string>} the ETag of each topic's last delta */
    this.etags = new Map();
  }

  /**
   * One call. Resolves 2xx answers (and the statuses in `accept`, and 304); rejects with a
   * SinalError: status 0 for a network error, else the status, code and problem details.
   * @param {string} method
   * @param {string} path
   * @param {{body?: any, etag?: string, accept?: number[]}} [options]
   * @returns {Promise<{status: number, body: any, headers: Headers}>}
   */
  async call(method, path, options = {}) {
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
      response = await this.fetch(this.httpUrl + path, init);
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

  /**
   * Every page of a topic's list; the offset is the first page's (where changes start).
   * @param {string} topic  a key of RESOURCE_OF_TOPIC
   * @returns {Promise<{rows: Record<string, any>[], offset: number | null}>}
   */
  async list(topic) {
    const resource = RESOURCE_OF_TOPIC[/** @type {keyof typeof RESOURCE_OF_TOPIC} */ (topic)];
    /** @type {Record<string, any>[]} */
    const rows = [];
    /** @type {number | null} */
    let offset = null;
    let cursor = null;
    do {
      const query = new URLSearchParams({ limit: '1000' });
      if (cursor) query.set('cursor', cursor);
      const { body } = await this.call('GET', `/api/${resource}?${query}`);
      rows.push(...body.data);
      if (offset === null) offset = body.offset;
      cursor = body.nextCursor;
    } while (cursor);
    this.etags.delete(topic);
    return { rows, offset };
  }

  /**
   * The changes of a topic's resource after `since`, with the ETag of the last delta (its
   * hash does not depend on `since`): 304 (none), 410 (refetch), or a delta.
   * @param {string} topic
   * @param {number | null} since
   * @returns {Promise<Answer>}
   */
  async delta(topic, since) {
    const resource = RESOURCE_OF_TOPIC[/** @type {keyof typeof RESOURCE_OF_TOPIC} */ (topic)];
    const answer = await this.call('GET', `/api/${resource}?since=${since}`,
      { etag: this.etags.get(topic), accept: [304, 410] });
    const etag = answer.status === 200 ? answer.headers.get('ETag') : null;
    if (etag) this.etags.set(topic, etag);
    else if (answer.status !== 304) this.etags.delete(topic);
    return answer;
  }

  /**
   * GET /api/dashboard (the `dashboard` topic's REST twin) with the ETag of the last answer:
   * 304 (no figure moved) or the figures. A 400, 403 or 404 is answered, not thrown: the
   * server does not serve these figures to this user (the caller decides what that means).
   * @param {string} query  `?aggregates=...&window=...`, or ''
   * @returns {Promise<Answer>}
   */
  async dashboard(query) {
    const answer = await this.call('GET', `/api/dashboard${query}`,
      { etag: this.etags.get('dashboard'), accept: [304, 400, 403, 404] });
    const etag = answer.status === 200 ? answer.headers.get('ETag') : null;
    if (etag) this.etags.set('dashboard', etag);
    else if (answer.status !== 304) this.etags.delete('dashboard');
    return answer;
  }
}
