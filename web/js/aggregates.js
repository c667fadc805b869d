// @ts-check
/** The numbers of the dashboard and the board's column counters.
 *
 * Two sources, one shape (`Aggregates`):
 * - `serverAggregates(figures)`: the server's `dashboard` figures (`client.dashboard.aggregates`),
 *   read with the names and shapes docs/protocol.md gives them (section 5, "The dashboard
 *   topic"; maps are sparse, an absent key counts 0):
 *     requestsByStatus      {status: count}
 *     pendingByLevel        {"1" | "2" | "3": requests pending at that level}
 *     requestsByDepartment  {department_id: {status: {count: n, amount: "1234.50"}}}
 * - `localAggregates(rows)`: counted in the browser from the purchase requests the user can
 *   see (the store of `purchase_request_changed`), for a server that does not serve
 *   `dashboard` to this user.
 * `pickAggregates` says which one the page shows: the server's as soon as the client holds
 * them; the local count only when the topic is `unavailable`; until then, none ('waiting').
 */

import { STATUSES } from './labels.js';

/** The figures the pages ask the server for (the `aggregates` filter of the subscribe). */
export const SERVER_FIGURES = ['requestsByStatus', 'pendingByLevel', 'requestsByDepartment'];

/**
 * @typedef {object} Aggregates
 * @property {Record<string, number>} byStatus  requests per status
 * @property {Record<string, number>} pendingByLevel  requests waiting at levels '1'..'3'
 * @property {Record<string, number>} amountByDepartment  sum of amounts per department id,
 *   open requests only (not rejected nor cancelled)
 * @property {Record<string, number>} countByDepartment  open requests per department id
 * @property {number} total  requests
 * @property {number} totalAmount  sum of the amounts of open requests
 */

const CLOSED = new Set(['rejected', 'cancelled']);

/** @returns {Aggregates} every count 0 */
function empty() {
  return { byStatus: Object.fromEntries(STATUSES.map((s) => [s, 0])),
    pendingByLevel: { 1: 0, 2: 0, 3: 0 }, amountByDepartment: {}, countByDepartment: {},
    total: 0, totalAmount: 0 };
}

/**
 * @param {Iterable<Record<string, any>>} rows  purchase requests
 * @returns {Aggregates}
 */
export function localAggregates(rows) {
  const out = empty();
  for (const row of rows) {
    out.total += 1;
    const status = String(row.status);
    out.byStatus[status] = (out.byStatus[status] ?? 0) + 1;
    const level = /^pending_a([123])$/.exec(status);
    if (level) out.pendingByLevel[level[1]] += 1;
    if (CLOSED.has(status)) continue;
    const amount = Number(row.amount) || 0;
    const department = String(row.department_id ?? '');
    out.amountByDepartment[department] = (out.amountByDepartment[department] ?? 0) + amount;
    out.countByDepartment[department] = (out.countByDepartment[department] ?? 0) + 1;
    out.totalAmount += amount;
  }
  return out;
}

/**
 * An exact decimal text ("1234.50") as integer cents, so that sums do not drift.
 * @param {unknown} text
 */
function cents(text) {
  return Math.round(Number(text) * 100) || 0;
}

/**
 * The page's numbers from the server's figures (those of SERVER_FIGURES it holds; a figure
 * it does not hold leaves its numbers at 0).
 * @param {Record<string, any>} figures  `client.dashboard.aggregates`
 * @returns {Aggregates}
 */
export function serverAggregates(figures) {
  const out = empty();
  for (const [status, count] of Object.entries(figures.requestsByStatus ?? {})) {
    out.byStatus[status] = Number(count);
    out.total += Number(count);
  }
  for (const [level, count] of Object.entries(figures.pendingByLevel ?? {})) {
    out.pendingByLevel[level] = Number(count);
  }
  let total = 0;
  for (const [department, byStatus] of Object.entries(figures.requestsByDepartment ?? {})) {
    let amount = 0;
    let count = 0;
    for (const [status, cell] of Object.entries(/** @type {Record<string, any>} */ (byStatus))) {
      if (CLOSED.has(status)) continue;
      amount += cents(cell.amount);
      count += Number(cell.count);
    }
    if (count === 0) continue; // only closed requests there, or none any more
    out.amountByDepartment[department] = amount / 100;
    out.countByDepartment[department] = count;
    total += amount;
  }
  out.totalAmount = total / 100;
  return out;
}

/**
 * Which numbers the page shows, and from where.
 * @param {{dashboard: {aggregates: Record<string, any>} | null,
 *   topicStatus: Map<string, string>}} client  a SinalClient following `dashboard`
 * @param {Iterable<Record<string, any>>} requests  the store's purchase requests
 * @returns {{aggregates: Aggregates | null, source: 'dashboard' | 'local' | 'waiting'}}
 *   dashboard: the server's figures; local: counted here, the server does not serve them;
 *   waiting: neither yet (the figures have not arrived)
 */
export function pickAggregates(client, requests) {
  if (client.topicStatus.get('dashboard') === 'unavailable') {
    return { aggregates: localAggregates(requests), source: 'local' };
  }
  if (client.dashboard) {
    return { aggregates: serverAggregates(client.dashboard.aggregates), source: 'dashboard' };
  }
  return { aggregates: null, source: 'waiting' };
}
