// @ts-check
/** /dashboard: live counters and bar charts of the purchase requests the user can see.
 * The numbers are the server's `dashboard` figures (requestsByStatus, pendingByLevel,
 * requestsByDepartment: aggregates.js), exact at the offset they carry; counted in the
 * browser from the store only when the server does not serve that topic. The recent
 * activity is the store's changes. */

import { SERVER_FIGURES, pickAggregates } from './aggregates.js';
import {
  STATUSES, STATUS_LABEL, formatInteger, formatMoney, formatTime, shortId,
} from './labels.js';
import { h, startPage } from './shell.js';

const TOPIC = 'purchase_request_changed';
const DASHBOARD = 'dashboard';

/** @param {string} id */
const byId = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

/**
 * A list of horizontal bars, each as wide as its share of the largest value.
 * @param {HTMLElement} list
 * @param {{key: string, label: string, value: number, text: string, status?: string}[]} items
 */
function bars(list, items) {
  const top = Math.max(1, ...items.map((item) => item.value));
  list.replaceChildren(...items.map((item) => {
    const fill = h('div', { class: 'bar-fill', dataset: { status: item.status ?? '' } });
    fill.style.width = `${(100 * item.value) / top}%`;
    return h('li', { class: 'bar', dataset: { key: item.key } },
      h('span', { class: 'bar-label' }, item.label),
      h('span', { class: 'bar-track', 'aria-hidden': 'true' }, fill),
      h('span', { class: 'bar-value' }, item.text));
  }));
  if (items.length === 0) list.replaceChildren(h('li', { class: 'panel-note' }, 'Sem dados.'));
}

/** Department names, when the development login can tell them (ids otherwise). */
async function departmentNames() {
  /** @type {Map<string, string>} */
  const names = new Map();
  try {
    const response = await fetch('/api/dev/users', { cache: 'no-store' });
    if (!response.ok) return names;
    for (const user of (await response.json()).users) {
      if (user.departmentId && user.department) names.set(user.departmentId, user.department);
    }
  } catch {
    // production: no such endpoint
  }
  return names;
}

const context = await startPage({ path: '/dashboard', resources: [TOPIC], topics: [DASHBOARD],
  dashboard: { aggregates: SERVER_FIGURES } });
if (context) {
  const { client } = context;
  const store = client.store(TOPIC);
  const names = await departmentNames();
  let queued = false;

  const SOURCE_TEXT = {
    dashboard: 'Fonte: agregados do servidor (tópico dashboard)',
    local: 'Fonte: calculado neste navegador a partir das solicitações (o servidor não '
      + 'oferece o tópico dashboard)',
    waiting: 'Fonte: aguardando os agregados do servidor…',
  };

  function render() {
    queued = false;
    const { aggregates: a, source } = pickAggregates(client, store.values());
    document.body.dataset.source = source;
    const shown = byId('source');
    if (shown.textContent !== SOURCE_TEXT[source]) shown.textContent = SOURCE_TEXT[source];
    shown.dataset.offset = source === 'dashboard' ? String(client.dashboard?.offset) : '';
    if (!a) { // the figures have not arrived yet
      for (const tile of ['total', 'pending', 'approved', 'amount']) {
        byId(`tile-${tile}`).textContent = '—';
      }
      return;
    }
    const pending = a.pendingByLevel['1'] + a.pendingByLevel['2'] + a.pendingByLevel['3'];
    const moving = ['approved', 'quoting', 'ordered'].reduce((n, s) => n + (a.byStatus[s] ?? 0), 0);
    byId('tile-total').textContent = formatInteger(a.total);
    byId('tile-pending').textContent = formatInteger(pending);
    byId('tile-approved').textContent = formatInteger(moving);
    byId('tile-amount').textContent = formatMoney(a.totalAmount);
    bars(byId('by-status'), STATUSES.map((status) => ({
      key: status, status, label: STATUS_LABEL[status], value: a.byStatus[status] ?? 0,
      text: formatInteger(a.byStatus[status] ?? 0),
    })));
    bars(byId('by-level'), ['1', '2', '3'].map((level) => ({
      key: level, status: `pending_a${level}`, label: `Nível ${level}`,
      value: a.pendingByLevel[level] ?? 0, text: formatInteger(a.pendingByLevel[level] ?? 0),
    })));
    bars(byId('by-department'), Object.entries(a.amountByDepartment)
      .sort(([, x], [, y]) => y - x)
      .map(([department, amount]) => ({
        key: department, label: names.get(department) ?? `Depto. ${shortId(department)}`,
        value: amount, text: formatMoney(amount),
      })));
  }

  const schedule = () => {
    if (queued) return;
    queued = true;
    setTimeout(render, 30); // one render per burst of changes
  };
  const activity = byId('activity');
  /** @param {Event} event */
  function remember(event) {
    const { row, previous } = /** @type {CustomEvent} */ (event).detail;
    const shown = row ?? previous;
    if (!shown || (row && previous && row.status === previous.status)) return;
    const status = row ? row.status : 'removed';
    activity.prepend(h('li', {},
      h('time', { datetime: new Date().toISOString() }, formatTime(Date.now())),
      h('span', {}, shown.title),
      row ? h('span', { class: 'pill', dataset: { status } }, STATUS_LABEL[status] ?? status)
        : h('span', { class: 'pill' }, 'fora da sua visão')));
    while (activity.children.length > 8) activity.lastElementChild?.remove();
    byId('activity-empty').hidden = true;
  }

  store.addEventListener('reset', schedule);
  store.addEventListener('change', schedule);
  store.addEventListener('change', remember);
  client.on('dashboard', schedule);
  client.on('topic', schedule);
  await client.start().catch(() => {});
  render();
}
