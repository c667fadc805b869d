// @ts-check
/** Who is logged in (a JWT kept in sessionStorage, per tab), where the node's socket is, and
 * the automation knobs of the URL fragment:
 *
 *   /solicitacoes#token=<JWT>             log in with this token (then the fragment is removed)
 *   ...&poll=<ms>&backoff=<ms>            REST polling interval and longest reconnect wait
 */

const SESSION_KEY = 'sinal.session';
const TUNING_KEY = 'sinal.tuning';

/**
 * @typedef {object} Session
 * @property {string} token
 * @property {string} userId
 * @property {string} role
 * @property {number} exp  seconds since the epoch
 * @property {string} [name]
 * @property {string} [email]
 * @property {string} [department]
 */

/**
 * The claims of a JWT (not verified: the server does that; this is for display and routing).
 * @param {string} token
 * @returns {{sub: string, role: string, exp: number} | null}
 */
export function decodeToken(token) {
  const part = String(token).split('.')[1];
  if (!part) return null;
  try {
    const base64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const padded = base64 + '='.repeat((4 - (base64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    if (typeof claims.sub !== 'string' || typeof claims.role !== 'string') return null;
    return { sub: claims.sub, role: claims.role, exp: Number(claims.exp) || 0 };
  } catch {
    return null;
  }
}

/**
 * A session from a token (and what the login page knows of the user).
 * @param {string} token
 * @param {{name?: string, email?: string, department?: string}} [about]
 * @returns {Session | null}
 */
export function sessionFromToken(token, about = {}) {
  const claims = decodeToken(token.trim());
  if (!claims) return null;
  return { token: token.trim(), userId: claims.sub, role: claims.role, exp: claims.exp, ...about };
}

/** @param {Session} session */
export function saveSession(session) {
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
}

export function clearSession() {
  sessionStorage.removeItem(SESSION_KEY);
}

/** Read `#token=...&poll=...&backoff=...`, keep what it says, and take it out of the URL. */
function takeFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get('token');
  /** @type {Record<string, number>} */
  const tuning = {};
  for (const knob of ['poll', 'backoff']) {
    const value = Number(params.get(knob));
    if (params.has(knob) && Number.isFinite(value) && value > 0) tuning[knob] = value;
  }
  if (Object.keys(tuning).length) sessionStorage.setItem(TUNING_KEY, JSON.stringify(tuning));
  if (token) {
    const session = sessionFromToken(token);
    if (session) saveSession(session);
    params.delete('token');
    const rest = params.toString();
    history.replaceState(null, '', location.pathname + location.search + (rest ? `#${rest}` : ''));
  }
}

/** @returns {Session | null} the logged-in user, if the token has not expired */
export function currentSession() {
  if (location.hash.includes('token=')) takeFragment();
  else if (/[#&](poll|backoff)=/.test(location.hash)) takeFragment();
  const raw = sessionStorage.getItem(SESSION_KEY);
  if (!raw) return null;
  try {
    const session = /** @type {Session} */ (JSON.parse(raw));
    if (session.exp && session.exp * 1000 < Date.now()) {
      clearSession();
      return null;
    }
    return session;
  } catch {
    clearSession();
    return null;
  }
}

/** The session, or off to the login page (which comes back here afterwards). */
export function requireSession() {
  const session = currentSession();
  if (!session) {
    location.replace(`/?next=${encodeURIComponent(location.pathname)}`);
    return null;
  }
  return session;
}

/** @returns {{poll?: number, backoff?: number}} */
export function tuning() {
  try {
    return JSON.parse(sessionStorage.getItem(TUNING_KEY) ?? '{}');
  } catch {
    return {};
  }
}

/**
 * @typedef {object} WebConfig
 * @property {number | null} httpPort
 * @property {number | null} websocketPort
 * @property {string} websocketPath
 * @property {boolean} development
 */

/** @returns {Promise<WebConfig>} */
export async function loadConfig() {
  const response = await fetch('/web/config.json', { cache: 'no-store' });
  if (!response.ok) throw new Error(`/web/config.json answered ${response.status}`);
  return response.json();
}

/**
 * The socket's URL: the node's WEBSOCKET_PORT on this host when the page comes straight from
 * the node's HTTP_PORT; behind a proxy (another port), the proxy's /ws on this origin.
 * @param {WebConfig} config
 */
export function websocketUrl(config) {
  const secure = location.protocol === 'https:';
  const scheme = secure ? 'wss:' : 'ws:';
  const pagePort = location.port || (secure ? '443' : '80');
  if (config.websocketPort && String(config.httpPort) === pagePort) {
    return `${scheme}//${location.hostname}:${config.websocketPort}${config.websocketPath}`;
  }
  return `${scheme}//${location.host}${config.websocketPath}`;
}
