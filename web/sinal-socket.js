// @ts-check
/** One WebSocket session of sinal-client.js, the transport part of docs/protocol.md: the JSON
 * subprotocol, `connect` first, heartbeats at the interval `welcome` gives, a socket silent
 * for `connectionTimeout` closed (section 7), and the close codes after which reconnecting
 * cannot help (section 9). What the frames mean is the client's business (`onMessage`). */

import { SinalError } from './sinal-rest.js';

/** The subprotocol the client speaks. */
export const SUBPROTOCOL = 'sinal.json.v1';

const FATAL_CLOSE_CODES = new Set([4000, 4001, 4002, 4003, 4004, 4100, 4102, 4103]);

/**
 * @typedef {object} SessionOptions
 * @property {typeof WebSocket} WebSocket
 * @property {string} url
 * @property {string} token
 * @property {number} connectTimeout  ms for the socket to open and answer `welcome`
 * @property {{heartbeatsSent: number}} stats  counted here
 * @property {(session: Session, message: any) => Promise<void> | void} onMessage  every frame
 *   (a map); a rejection closes the socket
 */

export class Session {
  /** @param {SessionOptions} options */
  constructor(options) {
    this.options = options;
    /** @type {WebSocket | null} */
    this.ws = null;
    /** @type {any} the `welcome` frame, once it came */
    this.welcome = null;
    /** set by the client once its subscriptions are answered */
    this.live = false;
    /** @type {SinalError | null} why the server refused us for good */
    this.fatal = null;
    this.lastMessageAt = 0;
  }

  /**
   * Open the socket and serve it; resolves with this session when the socket has ended.
   * @returns {Promise<Session>}
   */
  run() {
    return new Promise((resolve) => {
      const { WebSocket: Socket, url, token, connectTimeout, stats, onMessage } = this.options;
      /** @type {WebSocket} */
      let ws;
      try {
        ws = new Socket(url, [SUBPROTOCOL]);
      } catch {
        resolve(this);
        return;
      }
      this.ws = ws;
      /** @type {any} */
      let beat = null;
      let ended = false;
      /** @param {number} code @param {string} reason */
      const end = (code, reason) => {
        if (ended) return;
        ended = true;
        clearTimeout(openTimer);
        clearInterval(beat);
        ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
        if (!this.fatal && FATAL_CLOSE_CODES.has(code)) {
          this.fatal = new SinalError(`the server closed the socket: ${reason || code}`,
            { code: reason || String(code) });
        }
        resolve(this);
      };
      const openTimer = setTimeout(() => {
        ws.close();
        end(1006, 'timeout');
      }, connectTimeout);
      let opened = false;
      ws.onopen = () => {
        opened = true;
        this.send({ event: 'connect', token, ref: 'connect' });
      };
      // Browsers follow an error with a close event (which has the close code); Node 20's
      // WebSocket does not when the connection fails before it opens.
      ws.onerror = () => {
        if (!opened) end(1006, 'error');
        else setTimeout(() => end(1006, 'error'), 1000);
      };
      ws.onmessage = (event) => {
        this.lastMessageAt = Date.now();
        const message = parseFrame(event.data);
        if (!message) return;
        if (message.event === 'welcome' && !this.welcome) {
          clearTimeout(openTimer);
          this.welcome = message;
          const interval = Math.max(100, Number(message.heartbeatInterval) || 30000);
          const timeout = Math.max(interval, Number(message.connectionTimeout) || 60000);
          beat = setInterval(() => {
            if (Date.now() - this.lastMessageAt > timeout) {
              ws.close(); // silent for connectionTimeout: treat it as dead
              return;
            }
            this.send({ event: 'heartbeat', timestamp: Date.now() });
            stats.heartbeatsSent++;
          }, interval);
        }
        Promise.resolve(onMessage(this, message)).catch(() => ws.close());
      };
      ws.onclose = (event) => end(event.code, event.reason);
    });
  }

  /** @param {Record<string, any>} message */
  send(message) {
    if (this.ws?.readyState === 1) this.ws.send(JSON.stringify(message));
  }

  /** @param {string} [reason] */
  close(reason) {
    this.ws?.close(1000, reason);
  }
}

/** @param {unknown} data  a text frame; null when it is not a JSON map */
function parseFrame(data) {
  try {
    const message = JSON.parse(String(data));
    return message && typeof message === 'object' ? message : null;
  } catch {
    return null;
  }
}
