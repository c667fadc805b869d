// @ts-check
/** The local store of one topic for sinal-client.js: rows by id, the offset they reflect,
 * and `change` / `reset` events. */

/** @typedef {Record<string, any>} Row */

/**
 * The rows of one topic that the user may see, by id, and the offset they reflect.
 * Emits `change` ({topic, op, id, row, previous, offset, source}) and `reset` ({topic, offset}).
 */
export class ResourceStore extends EventTarget {
  /** @param {string} topic */
  constructor(topic) {
    super();
    this.topic = topic;
    /** @type {Map<string, Row>} */
    this.rows = new Map();
    /** @type {number | null} the change-log offset the rows reflect */
    this.offset = null;
    /** true once a REST list (or a subscription) has given the store a starting point */
    this.loaded = false;
  }

  get size() {
    return this.rows.size;
  }

  /** @param {string | number} id */
  get(id) {
    return this.rows.get(String(id));
  }

  /** @returns {Row[]} */
  values() {
    return [...this.rows.values()];
  }

  /**
   * Replace every row (a REST list and the offset it reflects).
   * @param {Row[]} rows
   * @param {number | null} offset
   */
  replace(rows, offset) {
    this.rows = new Map(rows.map((row) => [String(row.id), row]));
    this.offset = offset;
    this.loaded = true;
    this.dispatchEvent(new CustomEvent('reset', { detail: { topic: this.topic, offset } }));
  }

  /**
   * Apply one change. Returns whether the store changed.
   * @param {'insert'|'update'|'delete'} op
   * @param {string | number} id
   * @param {Row | null} row  the whole row after the change (null for a delete)
   * @param {{offset?: number | null, source?: string}} [meta]
   */
  apply(op, id, row, meta = {}) {
    const offset = meta.offset ?? null;
    if (offset !== null && this.offset !== null && offset <= this.offset) {
      return false; // already applied (offsets strictly increase within a topic)
    }
    const key = String(id);
    const previous = this.rows.get(key) ?? null;
    if (offset !== null) this.offset = offset;
    if (op === 'delete' || row === null) {
      if (previous === null) return false;
      this.rows.delete(key);
    } else {
      this.rows.set(key, row);
    }
    const detail = { topic: this.topic, op, id: key, row: op === 'delete' ? null : row,
      previous, offset, source: meta.source ?? '' };
    this.dispatchEvent(new CustomEvent('change', { detail }));
    return true;
  }
}
