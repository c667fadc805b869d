// @ts-check
/** The numbers of the dashboard and the board's column counters.
 *
 * Two sources, one shape (`Aggregates`):
 * - `localAggregates(rows)`: computed in the browser from the purchase requests the user can
 *   see (the store of `purchase_request_changed`);
 * - `topicAggregates(rows)`: read from the server's `dashboard` topic, when the server has it
 *   (the client's `topicStatus.get('dashboard') === 'subscribed'`): its rows are taken to be
 *   maps with any of `byStatus`, `pendingByLevel`, `amountByDepartment`, `total`,
 *   `totalAmount` (snake_case accepted too). What a row lacks is computed locally.
 * `pickAggregates` prefers the topic's numbers and says where each came from.
 */

import { STATUSES } from './labels.js';

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

/**
 * @param {Iterable<Record<string, any>>} rows  purchase requests
 * @returns {Aggregates}
 */
export function localAggregates(rows) {
  /** @type {Record<string, number>} */
  const byStatus = Object.fromEntries(STATUSES.map((s) => [s, 0]));
  /** @type {Record<string, number>} */
  const pendingByLevel = { 1: 0, 2: 0, 3: 0 };
  /** @type {Record<string, number>} */
  const amountByDepartment = {};
  /** @type {Record<string, number>} */
  const countByDepartment = {};
  let total = 0;
  let totalAmount = 0;
  for (const row of rows) {
    total += 1;
    const status = String(row.status);
    byStatus[status] = (byStatus[status] ?? 0) + 1;
    const level = /^pending_a([123])$/.exec(status);
    if (level) pendingByLevel[level[1]] += 1;
    if (CLOSED.has(status)) continue;
    const amount = Number(row.amount) || 0;
    const department = String(row.department_id ?? '');
    amountByDepartment[department] = (amountByDepartment[department] ?? 0) + amount;
    countByDepartment[department] = (countByDepartment[department] ?? 0) + 1;
    totalAmount += amount;
  }
  return { byStatus, pendingByLevel, amountByDepartment, countByDepartment, total, totalAmount };
}

/**
 * What the `dashboard` topic's rows say, or null when they say nothing usable.
 * @param {Iterable<Record<string, any>>} rows
 * @returns {Partial<Aggregates> | null}
 */
export function topicAggregates(rows) {
  /** @type {Partial<Aggregates>} */
  const found = {};
  for (const row of rows) {
    for (const [key, alias] of [['byStatus', 'by_status'], ['pendingByLevel', 'pending_by_level'],
      ['amountByDepartment', 'amount_by_department'],
      ['countByDepartment', 'count_by_department']]) {
      const value = row[key] ?? row[alias];
      if (value && typeof value === 'object') {
        /** @type {any} */ (found)[key] = numbers(value);
      }
    }
    for (const [key, alias] of [['total', 'total'], ['totalAmount', 'total_amount']]) {
      const value = Number(row[key] ?? row[alias]);
      if (Number.isFinite(value)) /** @type {any} */ (found)[key] = value;
    }
  }
  return Object.keys(found).length ? found : null;
}

/**
 * @param {Record<string, any>} map
 * @returns {Record<string, number>}
 */
function numbers(map) {
  return Object.fromEntries(Object.entries(map).map(([k, v]) => [k, Number(v) || 0]));
}

/**
 * The topic's numbers where it has them, the local ones elsewhere.
 * @param {Iterable<Record<string, any>>} requests
 * @param {Iterable<Record<string, any>> | null} dashboardRows  null: no `dashboard` topic
 * @returns {{aggregates: Aggregates, source: 'dashboard' | 'local'}}
 */
export function pickAggregates(requests, dashboardRows) {
  const local = localAggregates(requests);
  const remote = dashboardRows ? topicAggregates(dashboardRows) : null;
  if (!remote) return { aggregates: local, source: 'local' };
  return { aggregates: { ...local, ...remote }, source: 'dashboard' };
}
