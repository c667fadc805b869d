// @ts-check
/** /solicitacoes: the Kanban of purchase requests by status. Cards move when the store
 * changes (socket or polling); column counters are the server's `requestsByStatus` figure
 * (the `dashboard` topic), or count the cards when the server does not serve that topic;
 * workflow buttons call the REST writes. */

import { pickAggregates } from './aggregates.js';
import {
  STATUS_LABEL, actionsFor, canCreate, columnsFor, formatDateTime, formatMoney, shortId,
} from './labels.js';
import { describeError, h, startPage, toast } from './shell.js';

const TOPIC = 'purchase_request_changed';
const DASHBOARD = 'dashboard';
/** @type {Record<string, string>} */
const DONE = {
  approve: 'Solicitação aprovada.',
  reject: 'Solicitação rejeitada.',
  submit: 'Solicitação enviada para aprovação.',
  cancel: 'Solicitação cancelada.',
};

const context = await startPage({ path: '/solicitacoes', resources: [TOPIC], topics: [DASHBOARD],
  dashboard: { aggregates: ['requestsByStatus'] } });
if (context) {
  const { client, session } = context;
  const store = client.store(TOPIC);
  const statuses = columnsFor(session.role);
  const announcer = /** @type {HTMLElement} */ (document.getElementById('board-announcer'));

  // --- columns ----------------------------------------------------------------------------
  /** @type {Map<string, {list: HTMLElement, count: HTMLElement, empty: HTMLElement}>} */
  const columns = new Map();
  const board = /** @type {HTMLElement} */ (document.getElementById('board'));
  board.replaceChildren(...statuses.map((status) => {
    const count = h('span', { class: 'count', dataset: { status } }, '—');
    const list = h('ol', { class: 'cards', 'aria-labelledby': `col-${status}` });
    const empty = h('p', { class: 'column-empty' }, 'Nenhuma solicitação');
    columns.set(status, { list, count, empty });
    return h('section', { class: 'column', dataset: { status }, 'aria-labelledby': `col-${status}` },
      h('h2', { id: `col-${status}`, class: 'column-title' },
        h('span', { class: 'column-name' }, STATUS_LABEL[status]), count),
      list, empty);
  }));

  // --- cards --------------------------------------------------------------------------------
  /** @type {Map<string, HTMLElement>} */
  const cards = new Map();

  /** @param {Record<string, any>} row */
  const sortKey = (row) => Date.parse(row.updated_at ?? row.created_at ?? '') || 0;

  /** @param {Record<string, any>} row */
  function buildCard(row) {
    const id = String(row.id);
    const titleId = `t-${id}`;
    const actions = actionsFor(session, row).map((spec) => h('button', {
      type: 'button', class: `button small ${spec.kind}`, dataset: { action: spec.action },
      'aria-label': `${spec.label}: ${row.title}`, onclick: () => act(row.id, spec.action),
    }, spec.label));
    return h('li', { id: `pr-${id}`, class: 'card', tabindex: '-1',
      dataset: { id, status: row.status } },
    h('article', { 'aria-labelledby': titleId },
      h('h3', { id: titleId, class: 'card-title' }, row.title),
      h('p', { class: 'card-amount' }, formatMoney(row.amount)),
      h('p', { class: 'card-meta' }, h('span', { class: 'ref' }, shortId(id)), ' · ',
        h('time', { datetime: row.updated_at ?? '' }, formatDateTime(row.updated_at))),
      actions.length ? h('div', { class: 'card-actions' }, ...actions) : null));
  }

  /**
   * Put a row's card in its column, in order (newest change first).
   * @param {Record<string, any>} row
   * @param {boolean} moved  animate it: it arrived here just now
   */
  function place(row, moved) {
    const id = String(row.id);
    const old = cards.get(id);
    const column = columns.get(row.status);
    if (!column) { // a status this role has no column for
      old?.remove();
      cards.delete(id);
      return;
    }
    const hadFocus = old?.contains(document.activeElement) ?? false;
    const card = buildCard(row);
    card.dataset.sort = String(sortKey(row));
    old?.remove();
    cards.set(id, card);
    const key = sortKey(row);
    const before = [...column.list.children].find(
      (other) => Number(/** @type {HTMLElement} */ (other).dataset.sort) < key);
    column.list.insertBefore(card, before ?? null);
    if (moved) {
      card.classList.add('arrived');
      card.addEventListener('animationend', () => card.classList.remove('arrived'), { once: true });
    }
    if (hadFocus) card.focus();
  }

  function renderAll() {
    for (const { list } of columns.values()) list.replaceChildren();
    cards.clear();
    const rows = store.values().sort((a, b) => sortKey(b) - sortKey(a));
    for (const row of rows) place(row, false);
    updateCounts();
  }

  let countsQueued = false;
  function updateCounts() {
    if (countsQueued) return;
    countsQueued = true;
    queueMicrotask(() => {
      countsQueued = false;
      const { aggregates, source } = pickAggregates(client, store.values());
      board.dataset.countSource = source;
      for (const [status, column] of columns) {
        column.empty.hidden = column.list.children.length > 0;
        if (!aggregates) { // the server's figures have not arrived yet
          column.count.textContent = '—';
          column.count.setAttribute('aria-label', 'contando');
          continue;
        }
        const value = aggregates.byStatus[status] ?? 0;
        column.count.textContent = String(value);
        column.count.setAttribute('aria-label',
          value === 1 ? '1 solicitação' : `${value} solicitações`);
      }
    });
  }

  store.addEventListener('reset', renderAll);
  store.addEventListener('change', (event) => {
    const { op, id, row, previous } = /** @type {CustomEvent} */ (event).detail;
    if (op === 'delete' || !row) {
      cards.get(id)?.remove();
      cards.delete(id);
      if (previous) announcer.textContent = `Solicitação ${previous.title} saiu do quadro`;
    } else {
      const moved = !previous || previous.status !== row.status;
      place(row, moved);
      if (previous && moved) {
        announcer.textContent =
          `Solicitação ${row.title} movida para ${STATUS_LABEL[row.status] ?? row.status}`;
      }
    }
    updateCounts();
  });
  client.on('topic', updateCounts);
  client.on('dashboard', updateCounts);

  // --- actions ------------------------------------------------------------------------------
  /**
   * @param {string} id
   * @param {string} action
   */
  async function act(id, action) {
    const card = cards.get(String(id));
    const buttons = card ? [...card.querySelectorAll('button')] : [];
    for (const button of buttons) /** @type {HTMLButtonElement} */ (button).disabled = true;
    try {
      await client.request('POST', `/api/purchase-requests/${id}/${action}`, {});
      client.pollNow(); // without a socket, show the change without waiting
      toast(DONE[action] ?? 'Feito.', 'success');
    } catch (error) {
      toast(describeError(error), 'error');
      for (const button of buttons) /** @type {HTMLButtonElement} */ (button).disabled = false;
    }
  }

  // --- new request --------------------------------------------------------------------------
  const form = /** @type {HTMLFormElement} */ (document.getElementById('new-request'));
  if (canCreate(session.role)) {
    form.hidden = false;
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const button = /** @type {HTMLButtonElement} */ (form.querySelector('button[type=submit]'));
      button.disabled = true;
      try {
        const row = await client.request('POST', '/api/purchase-requests', {
          title: String(data.get('title') ?? ''),
          amount: Number(data.get('amount')),
          submit: data.get('submit') === 'on',
        });
        client.pollNow();
        toast(`Solicitação "${row.title}" criada.`, 'success');
        form.reset();
        /** @type {HTMLElement} */ (form.querySelector('input[name=title]')).focus();
      } catch (error) {
        toast(describeError(error), 'error');
      } finally {
        button.disabled = false;
      }
    });
  }

  await client.start().catch(() => {});
  const wanted = /^#pr-([\w-]+)$/.exec(location.hash);
  if (wanted) cards.get(wanted[1])?.focus();
}
