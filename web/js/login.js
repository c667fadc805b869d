// @ts-check
/** The start page: pick a demo user (development), or paste a token; `#token=` logs in too.
 * Once logged in, it goes on to `?next=` (the page that sent the user here), or shows the
 * pages. */

import { ROLE_LABEL } from './labels.js';
import { clearSession, currentSession, saveSession, sessionFromToken } from './session.js';

const PAGES = [
  { href: '/solicitacoes', label: 'Solicitações', note: 'Quadro Kanban ao vivo' },
  { href: '/dashboard', label: 'Dashboard', note: 'Contadores e gráficos' },
  { href: '/configuracoes', label: 'Configurações', note: 'Conexão, métricas e preferências' },
];

/** @param {string} id */
const byId = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

function next() {
  const wanted = new URLSearchParams(location.search).get('next') ?? '';
  return PAGES.some((page) => page.href === wanted) ? wanted : null;
}

/** @param {import('./session.js').Session} session */
function enter(session) {
  saveSession(session);
  location.assign(next() ?? '/solicitacoes');
}

/** @param {import('./session.js').Session} session */
function showSignedIn(session) {
  byId('signed-in').hidden = false;
  const who = session.name || session.email || session.userId;
  byId('signed-in-as').textContent = `${who} · ${ROLE_LABEL[session.role] ?? session.role}`;
  byId('destinations').replaceChildren(...PAGES.map((page) => {
    const item = document.createElement('li');
    const link = document.createElement('a');
    link.href = page.href;
    link.className = 'button';
    link.textContent = `${page.label} — ${page.note}`;
    item.append(link);
    return item;
  }));
  byId('sign-out').addEventListener('click', () => {
    clearSession();
    location.reload();
  });
}

async function showDemoUsers() {
  let response;
  try {
    response = await fetch('/api/dev/users', { cache: 'no-store' });
  } catch {
    return;
  }
  if (!response.ok) return; // 404 outside development: only the token form
  const { users } = await response.json();
  byId('demo-users').hidden = false;
  byId('users').replaceChildren(...users.map((/** @type {any} */ user) => {
    const item = document.createElement('li');
    const button = document.createElement('button');
    button.type = 'button';
    button.dataset.email = user.email;
    for (const [cls, text] of [['name', user.name], ['role', ROLE_LABEL[user.role] ?? user.role],
      ['dept', user.department ? `Departamento: ${user.department}` : '']]) {
      const span = document.createElement('span');
      span.className = cls;
      span.textContent = text;
      button.append(span);
    }
    button.addEventListener('click', () => {
      const session = sessionFromToken(user.token,
        { name: user.name, email: user.email, department: user.department ?? undefined });
      if (session) enter(session);
    });
    item.append(button);
    return item;
  }));
}

const session = currentSession();
if (session && next()) {
  location.replace(/** @type {string} */ (next()));
} else if (session) {
  showSignedIn(session);
} else {
  byId('token-login').hidden = false;
  byId('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const token = /** @type {HTMLTextAreaElement} */ (byId('token')).value;
    const fresh = sessionFromToken(token);
    if (!fresh) {
      byId('token-error').textContent = 'Este não é um token válido.';
      return;
    }
    if (fresh.exp && fresh.exp * 1000 < Date.now()) {
      byId('token-error').textContent = 'Este token expirou.';
      return;
    }
    enter(fresh);
  });
  await showDemoUsers();
}
