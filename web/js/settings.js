// @ts-check
/** /configuracoes: the connection (state, latency), /api/metrics/realtime (and the live
 * `metrics` topic for admins), alerts, the supervisor tree (admins) and the notification
 * preferences form (PUT /api/user/notification-preferences). */

import {
  CONNECTION_LABEL, FREQUENCY_LABEL, NOTIFICATION_LABEL, formatDecimal, formatInteger, formatTime,
} from './labels.js';
import { describeError, h, startPage, toast } from './shell.js';

const REFRESH_MS = 5000;
const TREE_CHILDREN_SHOWN = 25;
const PREFERENCE_EVENTS = ['approval_required', 'purchase_request_approved',
  'purchase_request_rejected', 'quotation_received', 'order_issued', 'delivery_late',
  'order_delivered', 'performance_alert'];

/** @param {string} id */
const byId = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

/**
 * @param {HTMLElement} list
 * @param {[string, string | Node][]} facts
 */
function showFacts(list, facts) {
  list.replaceChildren(...facts.flatMap(([term, value]) => [h('dt', {}, term), h('dd', {}, value)]));
}

/** @param {number} seconds */
function duration(seconds) {
  if (!Number.isFinite(seconds)) return '—';
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
  return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
}

const context = await startPage({ path: '/configuracoes', resources: [],
  topics: (session) => (session.role === 'admin' ? ['metrics'] : []) });
if (context) {
  const { client, session, center } = context;
  const admin = session.role === 'admin';
  let stateSince = Date.now();
  /** @type {number | null} */
  let latency = null;
  /** @type {any} */
  let metrics = null;
  /** @type {any} */
  let liveMetrics = null;
  /** @type {any} */
  let health = null;

  // --- connection -------------------------------------------------------------------------
  function renderConnection() {
    const s = client.session;
    const ago = client.lastMessageAt ? (Date.now() - client.lastMessageAt) / 1000 : NaN;
    showFacts(byId('connection-facts'), [
      ['Estado', h('span', { id: 'connection-state', dataset: { state: client.state } },
        CONNECTION_LABEL[client.state] ?? client.state)],
      ['Desde', formatTime(stateSince)],
      ['Latência (HTTP)', latency === null ? '—' : `${formatDecimal(latency)} ms`],
      ['Última mensagem do servidor', Number.isFinite(ago) ? `há ${duration(ago)}` : '—'],
      ['Servidor', client.wsUrl],
      ['Sessão', s ? `${String(s.sessionId).slice(0, 12)}…` : '—'],
      ['Heartbeat', s ? `${s.heartbeatInterval / 1000} s (limite ${s.connectionTimeout / 1000} s)` : '—'],
      ['Conexões nesta página', formatInteger(client.stats.connects)],
      ['Consultas REST (304)', `${formatInteger(client.stats.polls)} (${formatInteger(client.stats.notModified)})`],
    ]);
  }
  client.on('state', ({ state }) => {
    stateSince = Date.now();
    renderConnection();
    renderAlerts();
    if (state === 'live') loadMetrics().then(renderMetrics); // now counting this socket
  });
  client.on('welcome', renderConnection);
  byId('reconnect').addEventListener('click', () => client.reconnect());

  async function measureLatency() {
    const started = performance.now();
    try {
      const response = await fetch('/health/realtime', { cache: 'no-store' });
      latency = performance.now() - started;
      health = await response.json();
    } catch {
      latency = null;
      health = null;
    }
  }

  // --- metrics ----------------------------------------------------------------------------
  function renderMetrics() {
    const m = { ...(metrics ?? {}), ...(liveMetrics?.performance ?? {}) };
    showFacts(byId('metrics-facts'), [
      ['Conexões ativas', formatInteger(m.activeConnections)],
      ['Requisições por minuto', formatInteger(m.requestsPerMinute)],
      ['Taxa de acerto do cache', Number.isFinite(Number(m.cacheHitRate))
        ? `${formatDecimal(100 * Number(m.cacheHitRate))} %` : '—'],
      ['Latência média', Number.isFinite(Number(m.averageLatency))
        ? `${formatDecimal(m.averageLatency)} ms` : '—'],
    ]);
    byId('metrics-note').textContent = liveMetrics
      ? `Ao vivo pelo tópico metrics · ${formatTime(Date.now())}`
      : metrics ? `GET /api/metrics/realtime · ${formatTime(metrics.timestamp ?? Date.now())}` : '';
  }
  client.on('metrics', ({ metrics: message }) => {
    liveMetrics = message;
    renderMetrics();
  });

  async function loadMetrics() {
    try {
      metrics = await client.request('GET', '/api/metrics/realtime');
    } catch (error) {
      byId('metrics-note').textContent = describeError(error);
    }
  }

  // --- alerts -----------------------------------------------------------------------------
  function renderAlerts() {
    const items = [];
    if (client.state === 'polling') {
      items.push('Sem WebSocket: a página consulta o servidor por polling (REST com ETag).');
    } else if (client.state === 'reconnecting') {
      items.push('O servidor não responde: tentando reconectar.');
    }
    if (health && health.healthy === false) {
      items.push(`Saúde do tempo real degradada: ${health.websocketConnections ?? 0} conexões, `
        + `latência média ${formatDecimal(health.averageLatency)} ms, `
        + `atraso do listener ${formatInteger(health.listener?.lag ?? 0)}.`);
    }
    for (const item of center.items.filter((n) => n.type === 'performance_alert').slice(0, 5)) {
      items.push(`${NOTIFICATION_LABEL.performance_alert} (${formatTime(item.timestamp)}): ${item.message}`);
    }
    byId('alerts').replaceChildren(...(items.length
      ? items.map((text) => h('li', {}, text))
      : [h('li', { class: 'ok' }, 'Nenhum alerta ativo.')]));
  }
  client.on('notification', renderAlerts);

  // --- supervisor tree (admins) --------------------------------------------------------------
  /** @param {any} node */
  function treeNode(node) {
    const inbox = node.inbox ? ` · caixa ${node.inbox.depth}/${node.inbox.capacity}` : '';
    const restarts = node.restarts ? ` · ${node.restarts} reinícios` : '';
    const children = Array.isArray(node.children) ? node.children : [];
    const shown = children.slice(0, TREE_CHILDREN_SHOWN);
    return h('li', {},
      h('span', { class: 'node' }, h('strong', {}, node.name),
        h('span', { class: 'state', dataset: { state: node.state } }, node.state),
        h('span', { class: 'meta' }, `${node.kind}${restarts}${inbox}`)),
      node.last_error ? h('div', { class: 'meta' }, `último erro: ${node.last_error}`) : null,
      shown.length ? h('ul', {}, ...shown.map(treeNode),
        children.length > shown.length
          ? h('li', { class: 'meta' }, `… mais ${children.length - shown.length}`) : null) : null);
  }

  async function loadTree() {
    try {
      const status = await client.request('GET', '/api/supervisor');
      byId('supervisor-tree').replaceChildren(status.tree ? treeNode(status.tree) : h('li', {}, '—'));
      const realtime = status.realtime ?? {};
      const listener = status.listener ?? {};
      byId('supervisor-note').textContent = `Nó ${status.node} · ${realtime.connections ?? 0} conexões`
        + ` · listener na posição ${listener.position ?? '—'} (atraso ${listener.lag ?? '—'})`;
    } catch (error) {
      byId('supervisor-note').textContent = describeError(error);
    }
  }

  // --- preferences --------------------------------------------------------------------------
  const form = /** @type {HTMLFormElement} */ (byId('preferences'));
  byId('preference-events').replaceChildren(...PREFERENCE_EVENTS.map((kind) => h('label',
    { class: 'check' }, h('input', { type: 'checkbox', name: 'events', value: kind }),
    NOTIFICATION_LABEL[kind] ?? kind)));
  byId('frequency').replaceChildren(...Object.entries(FREQUENCY_LABEL).map(([value, label]) =>
    h('option', { value }, label)));

  /** @param {any} preferences */
  function fillPreferences(preferences) {
    for (const box of form.querySelectorAll('input[name=events]')) {
      const input = /** @type {HTMLInputElement} */ (box);
      input.checked = preferences.events.includes(input.value);
    }
    /** @type {HTMLSelectElement} */ (byId('frequency')).value = preferences.frequency;
    /** @type {HTMLInputElement} */ (byId('soundEnabled')).checked = preferences.soundEnabled;
    /** @type {HTMLInputElement} */ (byId('emailNotifications')).checked =
      preferences.emailNotifications;
    form.dataset.loaded = 'true';
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const status = byId('preferences-status');
    status.textContent = '';
    const body = {
      events: [...form.querySelectorAll('input[name=events]:checked')]
        .map((box) => /** @type {HTMLInputElement} */ (box).value),
      frequency: /** @type {HTMLSelectElement} */ (byId('frequency')).value,
      soundEnabled: /** @type {HTMLInputElement} */ (byId('soundEnabled')).checked,
      emailNotifications: /** @type {HTMLInputElement} */ (byId('emailNotifications')).checked,
    };
    try {
      fillPreferences(await client.request('PUT', '/api/user/notification-preferences', body));
      status.textContent = 'Preferências salvas.';
    } catch (error) {
      toast(describeError(error), 'error');
    }
  });

  // --- start --------------------------------------------------------------------------------
  renderConnection();
  renderMetrics();
  renderAlerts();
  if (admin) byId('supervisor-panel').hidden = false;
  client.request('GET', '/api/user/notification-preferences').then(fillPreferences,
    (error) => toast(describeError(error), 'error'));
  const refresh = async () => {
    await Promise.all([measureLatency(), loadMetrics(), admin ? loadTree() : null]);
    renderConnection();
    renderMetrics();
    renderAlerts();
  };
  await client.start().catch(() => {});
  await refresh();
  setInterval(refresh, REFRESH_MS);
}
