// @ts-check
/** What every page has: the header (navigation, connection indicator, notification center,
 * the user), the messages area, and the SinalClient of the page. */

import { SinalClient } from '../sinal-client.js';
import {
  CONNECTION_LABEL, HTTP_ERROR_LABEL, NOTIFICATION_LABEL, ROLE_LABEL, formatTime, viewOf,
} from './labels.js';
import { clearSession, loadConfig, requireSession, tuning, websocketUrl } from './session.js';

const NAV = [
  { href: '/solicitacoes', label: 'Solicitações' },
  { href: '/dashboard', label: 'Dashboard' },
  { href: '/configuracoes', label: 'Configurações' },
];
const KEPT_NOTIFICATIONS = 50;

/**
 * Create an element: h('button', {class: 'x', onclick: f}, 'text', child...).
 * Attributes starting with "on" are listeners; `dataset` is an object; false/null skip.
 * @param {string} tag
 * @param {Record<string, any>} [attributes]
 * @param {...(Node | string | number | null | undefined | false)} children
 * @returns {HTMLElement}
 */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      element.addEventListener(name.slice(2), value);
    } else if (name === 'dataset') {
      Object.assign(element.dataset, value);
    } else if (value === true) {
      element.setAttribute(name, '');
    } else {
      element.setAttribute(name, String(value));
    }
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    element.append(typeof child === 'string' || typeof child === 'number' ? String(child) : child);
  }
  return element;
}

const BELL_SVG = '<svg viewBox="0 0 24 24" width="20" height="20" aria-hidden="true" '
  + 'focusable="false"><path fill="currentColor" d="M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 '
  + '0 0 0 12 22Zm7-6V11a7 7 0 0 0-5.5-6.84V3.5a1.5 1.5 0 0 0-3 0v.66A7 7 0 0 0 5 11v5l-2 '
  + '2v1h18v-1l-2-2Z"/></svg>';

// --- messages ------------------------------------------------------------------------------

/**
 * Show a message for a few seconds (errors stay until dismissed or replaced).
 * @param {string} text
 * @param {'error'|'info'|'success'} [kind]
 */
export function toast(text, kind = 'info') {
  const area = document.getElementById('toasts');
  if (!area) return;
  const item = h('div', { class: `toast toast-${kind}`, role: kind === 'error' ? 'alert' : 'status' },
    h('span', { class: 'toast-text' }, text),
    h('button', { type: 'button', class: 'toast-close', 'aria-label': 'Fechar mensagem',
      onclick: () => item.remove() }, '×'));
  area.append(item);
  while (area.children.length > 4) area.firstElementChild?.remove();
  if (kind !== 'error') setTimeout(() => item.remove(), 6000);
}

/**
 * A failed REST write as words: "Conflito (409): cannot submit a request in status ...".
 * @param {any} error  a SinalError
 */
export function describeError(error) {
  const status = Number(error?.status) || 0;
  const label = HTTP_ERROR_LABEL[status] ?? (status ? 'Erro' : 'Sem conexão com o servidor');
  const detail = error?.problem?.detail ?? error?.message ?? '';
  return status ? `${label} (${status}): ${detail}` : `${label}: ${detail}`;
}

// --- the header ------------------------------------------------------------------------------

/**
 * @param {string} current  the page's path
 * @param {import('./session.js').Session} session
 */
function renderHeader(current, session) {
  const header = /** @type {HTMLElement} */ (document.getElementById('app-header'));
  const role = ROLE_LABEL[session.role] ?? session.role;
  const who = session.name || session.email || role;
  header.replaceChildren(
    h('a', { class: 'brand', href: '/solicitacoes' }, h('span', { class: 'brand-mark' }, 'S'),
      h('span', {}, 'Sinal'), h('span', { class: 'brand-sub' }, 'Gestão de Compras')),
    h('nav', { 'aria-label': 'Principal' }, h('ul', {}, ...NAV.map((item) => h('li', {},
      h('a', { href: item.href, 'aria-current': item.href === current ? 'page' : null },
        item.label))))),
    h('div', { class: 'header-tools' },
      h('span', { id: 'connection', class: 'connection', role: 'status', 'aria-live': 'polite',
        dataset: { state: 'idle' } },
      h('span', { class: 'dot', 'aria-hidden': 'true' }),
      h('span', { class: 'connection-label' }, CONNECTION_LABEL.idle)),
      h('div', { id: 'notification-center', class: 'notification-center' }),
      h('span', { class: 'user', title: session.email ?? '' },
        h('span', { class: 'user-name' }, who),
        who === role ? null : h('span', { class: 'user-role' }, role)),
      h('button', { type: 'button', class: 'button quiet', onclick: () => {
        clearSession();
        location.assign('/');
      } }, 'Sair')),
  );
}

/** @param {SinalClient} client */
function followConnection(client) {
  const element = /** @type {HTMLElement} */ (document.getElementById('connection'));
  const label = /** @type {HTMLElement} */ (element.querySelector('.connection-label'));
  const show = () => {
    element.dataset.state = client.state;
    label.textContent = CONNECTION_LABEL[client.state] ?? client.state;
    element.title = `Conexão: ${label.textContent}`;
  };
  client.on('state', show);
  show();
}

// --- the notification center ----------------------------------------------------------------

/**
 * The bell, its unread count and the list; notifications survive navigation between pages
 * (sessionStorage), a sound plays when the notification says so (the user's preference).
 */
export class NotificationCenter {
  /**
   * @param {HTMLElement} root
   * @param {SinalClient} client
   * @param {import('./session.js').Session} session
   */
  constructor(root, client, session) {
    this.key = `sinal.notifications.${session.userId}`;
    /** @type {{id: string, type: string, message: string, timestamp: string, read: boolean, action: any}[]} */
    this.items = this.#load();
    /** @type {AudioContext | null} */
    this.audio = null;
    this.button = h('button', { type: 'button', class: 'bell', 'aria-expanded': 'false',
      'aria-controls': 'notification-panel', onclick: () => this.toggle() });
    this.button.innerHTML = BELL_SVG;
    this.badge = h('span', { class: 'badge', 'aria-hidden': 'true' });
    this.button.append(this.badge);
    this.list = h('ol', { class: 'notification-list' });
    this.panel = h('section', { id: 'notification-panel', class: 'notification-panel',
      'aria-label': 'Central de notificações', hidden: true },
    h('div', { class: 'panel-head' }, h('h2', {}, 'Notificações'),
      h('button', { type: 'button', class: 'button quiet small',
        onclick: () => this.markAllRead() }, 'Marcar todas como lidas')),
    this.list);
    this.announcer = h('span', { class: 'visually-hidden', 'aria-live': 'polite' });
    root.replaceChildren(this.button, this.panel, this.announcer);
    this.panel.addEventListener('keydown', (event) => {
      if (event.key === 'Escape') this.toggle(false);
    });
    document.addEventListener('click', (event) => {
      if (!root.contains(/** @type {Node} */ (event.target))) this.toggle(false);
    });
    client.on('notification', ({ notification }) => this.add(notification));
    this.render();
  }

  get unread() {
    return this.items.filter((item) => !item.read).length;
  }

  /** @param {any} notification */
  add(notification) {
    const id = String(notification.id);
    if (this.items.some((item) => item.id === id)) return;
    this.items.unshift({ id, type: String(notification.type ?? ''),
      message: String(notification.message ?? ''), timestamp: notification.timestamp,
      read: false, action: notification.action ?? null });
    this.items.length = Math.min(this.items.length, KEPT_NOTIFICATIONS);
    this.#save();
    this.render();
    this.announcer.textContent = `Nova notificação: ${notification.message}`;
    if (notification.sound === true) this.#beep();
  }

  /** @param {boolean} [open] */
  toggle(open = this.panel.hidden) {
    if (open === !this.panel.hidden) return;
    this.panel.hidden = !open;
    this.button.setAttribute('aria-expanded', String(open));
    if (open) {
      /** @type {HTMLElement | null} */ (this.panel.querySelector('button'))?.focus();
    }
  }

  markAllRead() {
    for (const item of this.items) item.read = true;
    this.#save();
    this.render();
  }

  render() {
    const unread = this.unread;
    this.badge.textContent = unread ? String(unread) : '';
    this.badge.hidden = unread === 0;
    this.button.dataset.unread = String(unread);
    this.button.setAttribute('aria-label', unread === 1 ? 'Notificações, 1 não lida'
      : `Notificações, ${unread} não lidas`);
    if (this.items.length === 0) {
      this.list.replaceChildren(h('li', { class: 'empty' }, 'Nenhuma notificação.'));
      return;
    }
    this.list.replaceChildren(...this.items.map((item) => {
      const target = item.action?.resource === 'purchase_request' && item.action.id
        ? `/solicitacoes#pr-${item.action.id}` : null;
      const body = [
        h('span', { class: 'notification-type' }, NOTIFICATION_LABEL[item.type] ?? item.type),
        h('span', { class: 'notification-message' }, item.message),
        h('time', { datetime: item.timestamp }, formatTime(item.timestamp)),
      ];
      return h('li', { class: item.read ? 'notification' : 'notification unread',
        dataset: { type: item.type } },
      target ? h('a', { href: target, onclick: () => this.#markRead(item.id) }, ...body)
        : h('div', {}, ...body));
    }));
  }

  /** @param {string} id */
  #markRead(id) {
    const item = this.items.find((i) => i.id === id);
    if (item) item.read = true;
    this.#save();
  }

  #load() {
    try {
      const items = JSON.parse(sessionStorage.getItem(this.key) ?? '[]');
      return Array.isArray(items) ? items : [];
    } catch {
      return [];
    }
  }

  #save() {
    sessionStorage.setItem(this.key, JSON.stringify(this.items));
  }

  /** A short two-tone chime (Web Audio; no sound file). Counted in body[data-sounds]. */
  #beep() {
    document.body.dataset.sounds = String(Number(document.body.dataset.sounds ?? 0) + 1);
    const Context = window.AudioContext;
    // Browsers let a page play sound only after the user has interacted with it.
    if (!Context || navigator.userActivation?.hasBeenActive === false) return;
    try {
      this.audio ??= new Context();
      const start = this.audio.currentTime;
      for (const [offset, frequency] of [[0, 880], [0.12, 1320]]) {
        const oscillator = this.audio.createOscillator();
        const gain = this.audio.createGain();
        oscillator.frequency.value = frequency;
        gain.gain.setValueAtTime(0.0001, start + offset);
        gain.gain.exponentialRampToValueAtTime(0.15, start + offset + 0.02);
        gain.gain.exponentialRampToValueAtTime(0.0001, start + offset + 0.25);
        oscillator.connect(gain).connect(this.audio.destination);
        oscillator.start(start + offset);
        oscillator.stop(start + offset + 0.3);
      }
    } catch {
      // no audio device, or the browser wants a user gesture first: the badge still counts
    }
  }
}

// --- the page ------------------------------------------------------------------------------

/**
 * Set up a page: session (or off to login), header, client. The page adds its listeners,
 * then calls `client.start()`.
 * @param {{path: string, resources?: string[],
 *   topics?: string[] | ((session: import('./session.js').Session) => string[]),
 *   dashboard?: import('../sinal-dashboard.js').DashboardFilters}} spec  `dashboard`: the
 *   filters of the `dashboard` subscribe (the figures the page shows)
 */
export async function startPage(spec) {
  const session = requireSession();
  if (!session) return null;
  renderHeader(spec.path, session);
  let config;
  try {
    config = await loadConfig();
  } catch (error) {
    toast(`Não foi possível carregar a configuração: ${/** @type {Error} */ (error).message}`,
      'error');
    return null;
  }
  const knobs = tuning();
  const view = viewOf(session.role);
  const client = new SinalClient({
    token: session.token,
    wsUrl: websocketUrl(config),
    resources: spec.resources ?? [],
    topics: typeof spec.topics === 'function' ? spec.topics(session) : spec.topics ?? [],
    keep: view ? { purchase_request_changed: view } : {},
    dashboard: spec.dashboard,
    pollInterval: knobs.poll ?? 3000,
    backoffMax: knobs.backoff ?? 30000,
  });
  followConnection(client);
  const center = new NotificationCenter(
    /** @type {HTMLElement} */ (document.getElementById('notification-center')), client, session);
  // An administrator's broadcast (POST /api/admin/broadcasts): a banner, not a notification;
  // warnings and critical ones stay until dismissed.
  client.on('broadcast', ({ broadcast }) => {
    toast(`Aviso da administração: ${broadcast.message}`,
      broadcast.level === 'info' ? 'info' : 'error');
  });
  client.on('fatal', ({ error }) => {
    const expired = error.status === 401 || error.code === 'token_expired'
      || error.code === 'auth_failed';
    toast(expired ? 'Sua sessão expirou ou o token foi recusado. Entre novamente.'
      : describeError(error), 'error');
    if (expired) {
      clearSession();
      setTimeout(() => location.assign(`/?next=${encodeURIComponent(spec.path)}`), 2500);
    }
  });
  // For automation and support: the page's client and state.
  /** @type {any} */ (window).sinal = { client, session, center, config };
  return { client, session, center, config };
}
