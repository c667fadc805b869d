// @ts-check
/** Words the pages show (Portuguese, as in the procurement system) and the role rules the
 * pages need: which statuses a role sees and which buttons it gets. The server decides; these
 * only keep the screen in step with it (docs/protocol.md section 5). */

export const STATUSES = /** @type {const} */ ([
  'draft', 'pending_a1', 'pending_a2', 'pending_a3', 'approved', 'rejected', 'quoting',
  'ordered', 'delivered', 'cancelled',
]);

/** @type {Record<string, string>} */
export const STATUS_LABEL = {
  draft: 'Rascunho',
  pending_a1: 'Aprovação nível 1',
  pending_a2: 'Aprovação nível 2',
  pending_a3: 'Aprovação nível 3',
  approved: 'Aprovada',
  rejected: 'Rejeitada',
  quoting: 'Em cotação',
  ordered: 'Pedido emitido',
  delivered: 'Entregue',
  cancelled: 'Cancelada',
};

/** @type {Record<string, string>} */
export const ROLE_LABEL = {
  requester: 'Solicitante',
  approver_a1: 'Aprovador nível 1',
  approver_a2: 'Aprovador nível 2',
  approver_a3: 'Aprovador nível 3',
  buyer: 'Comprador',
  admin: 'Administrador',
};

/** Notification kinds (domain/notifications.py) and the seed's preference events. */
/** @type {Record<string, string>} */
export const NOTIFICATION_LABEL = {
  approval_required: 'Aprovação pendente',
  purchase_request_approved: 'Solicitação aprovada',
  purchase_request_rejected: 'Solicitação rejeitada',
  quotation_received: 'Cotação recebida',
  order_issued: 'Pedido emitido',
  delivery_late: 'Entrega atrasada',
  order_delivered: 'Pedido entregue',
  performance_alert: 'Alerta de desempenho',
};

/** @type {Record<string, string>} */
export const FREQUENCY_LABEL = {
  immediate: 'Imediata',
  hourly: 'A cada hora',
  daily: 'Diária',
  off: 'Desligada',
};

/** @type {Record<string, string>} */
export const CONNECTION_LABEL = {
  idle: 'Iniciando…',
  connecting: 'Conectando…',
  live: 'Ao vivo',
  reconnecting: 'Reconectando…',
  polling: 'Consultando (polling)',
  stopped: 'Desconectado',
};

/** @type {Record<number, string>} */
export const HTTP_ERROR_LABEL = {
  400: 'Pedido inválido',
  401: 'Sessão inválida ou expirada',
  403: 'Sem permissão',
  404: 'Não encontrado',
  409: 'Conflito',
  410: 'Dados desatualizados',
  422: 'Dados inválidos',
  429: 'Muitas requisições',
  500: 'Erro no servidor',
  503: 'Serviço indisponível',
};

/**
 * The statuses whose requests a role sees (domain/access.py): the board's columns.
 * @param {string} role
 * @returns {readonly string[]}
 */
export function columnsFor(role) {
  const level = /^approver_a([123])$/.exec(role);
  if (level) return [`pending_a${level[1]}`];
  if (role === 'buyer') return ['approved', 'quoting', 'ordered', 'delivered'];
  return STATUSES;
}

/**
 * Whether a purchase request is in the role's view; rows that leave it leave the store.
 * Requesters see their own and their department's requests whatever the status.
 * @param {string} role
 * @returns {((row: Record<string, any>) => boolean) | undefined}
 */
export function viewOf(role) {
  if (role === 'requester' || role === 'admin') return undefined;
  const visible = new Set(columnsFor(role));
  return (row) => visible.has(row.status);
}

/**
 * The workflow buttons a user gets on a card (api/write_routes.py, domain/workflow.py).
 * @param {{role: string, userId: string}} user
 * @param {Record<string, any>} row
 * @returns {{action: string, label: string, kind: string}[]}
 */
export function actionsFor(user, row) {
  const out = [];
  const status = row.status;
  const own = String(row.requester_id) === String(user.userId);
  const isAdmin = user.role === 'admin';
  const pending = /^pending_a([123])$/.exec(status);
  if (pending && (isAdmin || user.role === `approver_a${pending[1]}`)) {
    out.push({ action: 'approve', label: 'Aprovar', kind: 'primary' });
    out.push({ action: 'reject', label: 'Rejeitar', kind: 'danger' });
  }
  if (status === 'draft' && (own || isAdmin)) {
    out.push({ action: 'submit', label: 'Enviar', kind: 'primary' });
  }
  if (['draft', 'pending_a1', 'pending_a2', 'pending_a3', 'approved', 'quoting'].includes(status)
      && (own || isAdmin)) {
    out.push({ action: 'cancel', label: 'Cancelar', kind: 'quiet' });
  }
  return out;
}

/** @param {string} role */
export function canCreate(role) {
  return role === 'requester' || role === 'buyer' || role === 'admin';
}

const money = new Intl.NumberFormat('pt-BR', { style: 'currency', currency: 'BRL' });
const dateTime = new Intl.DateTimeFormat('pt-BR',
  { day: '2-digit', month: '2-digit', hour: '2-digit', minute: '2-digit' });
const timeOnly = new Intl.DateTimeFormat('pt-BR', { timeStyle: 'medium' });
const integer = new Intl.NumberFormat('pt-BR');
const decimal = new Intl.NumberFormat('pt-BR', { maximumFractionDigits: 1 });

/** @param {unknown} value */
export function formatMoney(value) {
  const number = Number(value);
  return Number.isFinite(number) ? money.format(number) : '—';
}

/** @param {unknown} value */
export function formatInteger(value) {
  const number = Number(value);
  return Number.isFinite(number) ? integer.format(number) : '—';
}

/** @param {unknown} value */
export function formatDecimal(value) {
  const number = Number(value);
  return Number.isFinite(number) ? decimal.format(number) : '—';
}

/** @param {string | number | Date | null | undefined} value */
export function formatDateTime(value) {
  if (value === null || value === undefined || value === '') return '—';
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : dateTime.format(date);
}

/** @param {string | number | Date} value */
export function formatTime(value) {
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : timeOnly.format(date);
}

/** A short, stable reference for a row id (uuid): its first 8 characters. */
export function shortId(/** @type {string} */ id) {
  return `#${String(id).slice(0, 8)}`;
}
