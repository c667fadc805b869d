"""The pages in headless Chromium (Playwright driving Debian's chromium) against a live node.

One node (its own process and database) and one browser for the module; the tests run in
order and share the requester's and the approver's pages, as two people would:

1. the requester creates and submits a request; the approver's board shows the card in
   pending_a1 within 1 s, with the column's counter updated;
2. the approver approves: the card leaves the approver's board and moves on the
   requester's; once the last level approves, the requester's notification center shows it
   (a level-1 approval alone notifies nobody but the level-2 approvers);
3. a 403 and a 409 from the REST writes are shown;
4. with the WebSocket blocked the page falls back to REST polling and still moves cards,
   and goes back to the socket when it can;
5. the node is killed (SIGKILL) and started again: the pages reconnect and resume without
   a reload, and a card written while the node was down appears;
6. the dashboard (the server's `dashboard` figures, moving with a submit) and the settings
   page (supervisor tree, metrics, preferences form).

Waits are Playwright's expectations with timeouts (they poll); screenshots go to
tests/artifacts/.
"""

from __future__ import annotations

import json
import re
import tempfile
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    ViewportSize,
    expect,
    sync_playwright,
)

from sinal.domain.principals import Principal
from sinal.domain.workflow import create_request, decide
from tests.browser.browser_support import (
    ARTIFACTS,
    CHROMIUM_ARGS,
    NodeProcess,
    chromium_path,
    rest,
    shot,
    token,
    wait_for_value,
)
from tests.conftest import drop_database, make_database, with_database
from tests.realtime.realtime_support import users_of

REQUESTER, APPROVER = "ana@sinal.dev", "carla@sinal.dev"
APPROVER_2, APPROVER_3, ADMIN = "diego@sinal.dev", "elisa@sinal.dev", "admin@sinal.dev"
VIEWPORT: ViewportSize = {"width": 1360, "height": 820}
PAGE_KNOBS = "&poll=300&backoff=1000"  # fast polling and reconnects (documented in session.js)
SHARED: dict[str, str] = {}  # what a test leaves for the next one (they run in order)
expect.set_options(timeout=10_000)  # a bound for a loaded machine; the 1 s check is explicit


# --- fixtures (module scope: one node, one browser) ----------------------------------------------


@pytest.fixture(scope="module")
def database(pg_server_url: str, pg_template: str) -> Iterator[str]:
    name = make_database(pg_server_url, pg_template)
    try:
        yield with_database(pg_server_url, name)
    finally:
        drop_database(pg_server_url, name)


@pytest.fixture(scope="module")
def users(database: str) -> dict[str, dict[str, Any]]:
    users = users_of(database)
    seed_board(database, users)
    return users


@pytest.fixture(scope="module")
def spawned(database: str, users: dict[str, Any]) -> Iterator[NodeProcess]:
    ARTIFACTS.mkdir(exist_ok=True)
    running = NodeProcess(database, Path(tempfile.mkdtemp(prefix="sinal-browser-")),
                          ARTIFACTS / "node.log")
    running.log_path.write_bytes(b"")
    running.spawn()
    try:
        yield running
    finally:
        running.kill()  # no graceful stop needed: its database is dropped next


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright, spawned: NodeProcess) -> Iterator[Browser]:
    """Launched while the node starts (both take seconds)."""
    chromium = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture(scope="module")
def node(spawned: NodeProcess, browser: Browser) -> NodeProcess:
    spawned.wait_ready()
    return spawned


def open_page(browser: Browser, node: NodeProcess, user: dict[str, Any], path: str,
              context: BrowserContext | None = None, knobs: str = PAGE_KNOBS) -> Page:
    context = context or browser.new_context(viewport=VIEWPORT, locale="pt-BR")
    page = context.new_page()
    page.goto(f"{node.base_url}{path}#token={token(user)}{knobs}")
    return page


@pytest.fixture(scope="module")
def requester_page(browser: Browser, node: NodeProcess, users: dict[str, Any]) -> Page:
    return open_page(browser, node, users[REQUESTER], "/solicitacoes")


@pytest.fixture(scope="module")
def approver_page(browser: Browser, node: NodeProcess, users: dict[str, Any]) -> Page:
    return open_page(browser, node, users[APPROVER], "/solicitacoes")


ARRIVAL_WATCH = """title => {
  const column = document.querySelector('.column[data-status="pending_a1"]');
  new MutationObserver((_, observer) => {
    if ([...column.querySelectorAll('.card h3')].some(h => h.textContent === title)) {
      window.__arrivedAt = Date.now();
      observer.disconnect();
    }
  }).observe(column, {childList: true, subtree: true});
}"""


def record_timing(name: str, value: float) -> None:
    """Kept in tests/artifacts/timings.json (a record, not a pass/fail claim)."""
    path = ARTIFACTS / "timings.json"
    timings = json.loads(path.read_text()) if path.exists() else {}
    timings[name] = round(value, 1)
    path.write_text(json.dumps(timings, indent=2))


# --- helpers -------------------------------------------------------------------------------------


def seed_board(database: str, users: dict[str, Any]) -> None:
    """A few requests in several statuses, so that the boards are not empty."""
    ana, bruno = users[REQUESTER], users["bruno@sinal.dev"]
    approvers = [users[APPROVER], users[APPROVER_2], users[APPROVER_3]]

    def principal(user: dict[str, Any]) -> Principal:
        return Principal(user["id"], user["role"], user["department_id"])

    plan = [("Monitores 27\" para o suporte", 4500, ana, 0),
            ("Licenças de software de design", 2700, ana, 1),
            ("Cadeiras ergonômicas", 6600, bruno, 2),
            ("Toner para impressoras", 700, ana, 3),
            ("Frete mensal de documentos", 2500, bruno, 1),
            ("Papel A4 (20 caixas)", 3600, ana, -1)]
    with psycopg.connect(database, autocommit=True) as conn:
        for title, amount, who, approved_levels in plan:
            row = create_request(conn, principal(who), title=title, amount=amount,
                                 submit=approved_levels >= 0)
            for level in range(max(approved_levels, 0)):
                decide(conn, principal(approvers[level]), str(row["id"]), "approved")


def card(page: Page, title: str) -> Any:
    return page.locator(".card", has=page.get_by_role("heading", name=title, exact=True))


def column(page: Page, status: str) -> Any:
    return page.locator(f'.column[data-status="{status}"]')


def counter(page: Page, status: str) -> Any:
    return page.locator(f'.count[data-status="{status}"]')


def connection(page: Page) -> Any:
    return page.locator("#connection")


def live(page: Page, timeout: float = 15_000) -> None:
    expect(connection(page)).to_have_attribute("data-state", "live", timeout=timeout)


def unread(page: Page) -> Any:
    return page.locator(".bell")


def unique(title: str) -> str:
    return f"{title} {uuid.uuid4().hex[:6]}"


# --- 1. create, submit, the approver's board within 1 s ------------------------------------------


def test_requester_submits_and_the_approver_board_shows_it_within_a_second(
        requester_page: Page, approver_page: Page) -> None:
    live(requester_page)
    live(approver_page)
    expect(requester_page.locator("h1")).to_have_text("Solicitações de compra")
    # the approver of level 1 sees only the level-1 column; the requester sees every status
    expect(approver_page.locator(".column")).to_have_count(1)
    expect(requester_page.locator(".column")).to_have_count(10)
    before = int(counter(approver_page, "pending_a1").inner_text())
    expect(approver_page.locator('.column[data-status="pending_a1"] .card')).to_have_count(before)
    told_before = int(unread(approver_page).get_attribute("data-unread") or 0)

    title = SHARED["title"] = unique("Notebooks para o time de dados")
    form = requester_page.locator("#new-request")
    form.get_by_label("Título").fill(title)
    form.get_by_label("Valor (R$)").fill("12500")
    form.get_by_role("button", name="Criar solicitação").click()
    draft = column(requester_page, "draft").locator(".card", has_text=title)
    expect(draft).to_be_visible()
    expect(draft).to_contain_text("R$ 12.500,00")

    # measured in the browsers (one clock): the key press on one page, the card on the other
    approver_page.evaluate(ARRIVAL_WATCH, title)
    requester_page.evaluate(
        "document.addEventListener('keydown', () => { window.__pressedAt = Date.now(); },"
        " {capture: true, once: true})")
    submit = requester_page.get_by_role("button", name=f"Enviar: {title}")
    submit.focus()
    requester_page.keyboard.press("Enter")  # the buttons work from the keyboard
    expect(column(approver_page, "pending_a1").locator(".card", has_text=title)) \
        .to_be_visible(timeout=1_000)
    latency = approver_page.evaluate("window.__arrivedAt") - requester_page.evaluate(
        "window.__pressedAt")
    record_timing("submit_key_to_card_on_the_approver_board_ms", latency)
    expect(counter(approver_page, "pending_a1")).to_have_text(str(before + 1), timeout=1_000)
    expect(column(requester_page, "pending_a1").locator(".card", has_text=title)).to_be_visible()
    expect(column(requester_page, "draft").locator(".card", has_text=title)).to_have_count(0)
    # the approver is told (approval_required) in the notification center
    expect(unread(approver_page)).to_have_attribute("data-unread", str(told_before + 1))
    expect(approver_page.locator(".notification").filter(
        has_text=f"Solicitação '{title}' aguarda aprovação no nível 1")).to_have_count(1)
    shot(requester_page, "1-requester-board")
    shot(approver_page, "1-approver-board")


# --- 2. approve: the card moves, the requester is notified ---------------------------------------


def test_approval_moves_the_card_and_reaches_the_requester(
        requester_page: Page, approver_page: Page, node: NodeProcess,
        users: dict[str, Any]) -> None:
    title = SHARED["title"]
    expect(column(approver_page, "pending_a1").locator(".card", has_text=title)).to_be_visible()
    before = int(counter(approver_page, "pending_a1").inner_text())
    notified_before = int(unread(requester_page).get_attribute("data-unread") or 0)
    sounds_before = int(requester_page.locator("body").get_attribute("data-sounds") or 0)

    approver_page.get_by_role("button", name=f"Aprovar: {title}").click()
    expect(approver_page.get_by_role("status").filter(has_text="Solicitação aprovada.")) \
        .to_be_visible()
    expect(card(approver_page, title)).to_have_count(0)  # past level 1: out of this view
    expect(counter(approver_page, "pending_a1")).to_have_text(str(before - 1))
    expect(column(requester_page, "pending_a2").locator(".card", has_text=title)).to_be_visible()

    request_id = requester_page.locator(".card", has_text=title).get_attribute("data-id")
    for approver in (APPROVER_2, APPROVER_3):
        rest(node, users[approver], "POST", f"/api/purchase-requests/{request_id}/approve", {})
    expect(column(requester_page, "approved").locator(".card", has_text=title)).to_be_visible()
    expect(unread(requester_page)).to_have_attribute("data-unread", str(notified_before + 1))
    # the requester's preference (sound on, the default) makes the page chime
    expect(requester_page.locator("body")).to_have_attribute("data-sounds",
                                                             str(sounds_before + 1))
    unread(requester_page).click()
    panel = requester_page.get_by_role("region", name="Central de notificações")
    expect(panel).to_be_visible()
    newest = panel.locator(".notification").first
    expect(newest).to_contain_text(f"Solicitação '{title}' foi aprovada")
    expect(newest).to_contain_text("Solicitação aprovada")
    shot(requester_page, "2-requester-notified")
    panel.get_by_role("button", name="Marcar todas como lidas").click()
    expect(unread(requester_page)).to_have_attribute("data-unread", "0")
    requester_page.keyboard.press("Escape")
    expect(panel).to_be_hidden()


# --- 3. errors from the REST writes are shown ----------------------------------------------------


def test_a_403_and_a_409_are_shown(requester_page: Page, approver_page: Page,
                                   node: NodeProcess, users: dict[str, Any]) -> None:
    # 409: someone submits the draft first (the request is held until then); the page's own
    # submit then meets the server's invalid_transition
    title = unique("Projetor da sala de reuniões")
    draft = rest(node, users[REQUESTER], "POST", "/api/purchase-requests",
                 {"title": title, "amount": 3100})
    expect(column(requester_page, "draft").locator(".card", has_text=title)).to_be_visible()

    def submitted_elsewhere_first(route: Any) -> None:
        rest(node, users[REQUESTER], "POST", f"/api/purchase-requests/{draft['id']}/submit")
        route.continue_()

    requester_page.route(f"**/api/purchase-requests/{draft['id']}/submit",
                         submitted_elsewhere_first)
    requester_page.get_by_role("button", name=f"Enviar: {title}").click()
    alert = requester_page.get_by_role("alert").filter(has_text="Conflito (409)")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("cannot submit a request in status pending_a1")
    shot(requester_page, "3-conflict")
    alert.get_by_role("button", name="Fechar mensagem").click()
    requester_page.unroute(f"**/api/purchase-requests/{draft['id']}/submit")

    # 403: an admin approves level 1 first; the level-1 approver's click then meets a request
    # that waits for level 2
    expect(column(approver_page, "pending_a1").locator(".card", has_text=title)).to_be_visible()

    def approved_elsewhere_first(route: Any) -> None:
        rest(node, users[ADMIN], "POST", f"/api/purchase-requests/{draft['id']}/approve", {})
        route.continue_()

    approver_page.route(f"**/api/purchase-requests/{draft['id']}/approve",
                        approved_elsewhere_first)
    approver_page.get_by_role("button", name=f"Aprovar: {title}").click()
    alert = approver_page.get_by_role("alert").filter(has_text="Sem permissão (403)")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("waits for level 2")
    approver_page.unroute(f"**/api/purchase-requests/{draft['id']}/approve")
    expect(card(approver_page, title)).to_have_count(0)  # and the card has left meanwhile


# --- 4. no WebSocket: polling, then back to the socket -------------------------------------------


def test_without_the_websocket_the_page_polls_and_still_moves_cards(
        browser: Browser, node: NodeProcess, users: dict[str, Any]) -> None:
    blocked = {"on": True}

    def socket_route(ws: Any) -> None:
        if blocked["on"]:
            ws.close()  # the socket never reaches the server
        else:
            ws.connect_to_server()

    context = browser.new_context(viewport=VIEWPORT, locale="pt-BR")
    context.route_web_socket(re.compile(r".*/ws$"), socket_route)
    page = open_page(browser, node, users[REQUESTER], "/solicitacoes", context,
                     knobs="&poll=300&backoff=300")
    expect(connection(page)).to_have_attribute("data-state", "polling")
    expect(connection(page)).to_contain_text("Consultando (polling)")

    title = unique("Cabos de rede")
    row = rest(node, users[REQUESTER], "POST", "/api/purchase-requests",
               {"title": title, "amount": 480, "submit": True})
    expect(column(page, "pending_a1").locator(".card", has_text=title)).to_be_visible()
    rest(node, users[APPROVER], "POST", f"/api/purchase-requests/{row['id']}/approve", {})
    expect(column(page, "pending_a2").locator(".card", has_text=title)).to_be_visible()
    expect(connection(page)).to_have_attribute("data-state", "polling")
    wait_for_value(page, "window.sinal.client.stats.notModified > 0")  # a 304 (ETag)
    polls = page.evaluate("window.sinal.client.stats")
    assert polls["connects"] == 0 and polls["polls"] > polls["notModified"], polls
    shot(page, "4-polling")

    blocked["on"] = False
    live(page)
    rest(node, users[APPROVER_2], "POST", f"/api/purchase-requests/{row['id']}/approve", {})
    expect(column(page, "pending_a3").locator(".card", has_text=title)).to_be_visible()
    context.close()


# --- 5. the node dies and comes back -------------------------------------------------------------


def test_the_pages_reconnect_and_resume_after_the_node_is_killed(
        requester_page: Page, approver_page: Page, node: NodeProcess,
        users: dict[str, Any]) -> None:
    live(requester_page)
    for page in (requester_page, approver_page):
        page.evaluate("window.__sameDocument = true")
    cards_before = requester_page.locator(".card").count()

    node.kill()
    expect(connection(requester_page)).to_have_attribute("data-state", "reconnecting")
    expect(connection(approver_page)).to_have_attribute("data-state", "reconnecting")
    expect(connection(requester_page)).to_contain_text("Reconectando")
    shot(requester_page, "5-reconnecting")

    # written while no node runs: only the change log has it
    title = unique("Headsets para o atendimento")
    ana = users[REQUESTER]
    with psycopg.connect(node.database_url, autocommit=True) as conn:
        create_request(conn, Principal(ana["id"], ana["role"], ana["department_id"]),
                       title=title, amount=1900, submit=True)

    node.start()
    live(requester_page, timeout=30_000)
    live(approver_page, timeout=30_000)
    expect(column(requester_page, "pending_a1").locator(".card", has_text=title)).to_be_visible()
    expect(column(approver_page, "pending_a1").locator(".card", has_text=title)).to_be_visible()
    for page in (requester_page, approver_page):
        assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
    expect(requester_page.locator(".card")).to_have_count(cards_before + 1)
    stats = requester_page.evaluate("window.sinal.client.stats")
    assert stats["refetches"] == 1, stats  # resumed from its offset: the list was read once
    assert stats["connects"] >= 2, stats


# --- 6. dashboard and settings; the README's screenshots -----------------------------------------


DASHBOARD_FIGURES = "requestsByStatus,pendingByLevel,requestsByDepartment"


def brl(amount: Decimal) -> str:
    """R$ as the pages write it (pt-BR: R$ 12.500,00)."""
    units, cents = divmod(int(amount.quantize(Decimal("0.01")) * 100), 100)
    return f"R$ {units:,}".replace(",", ".") + f",{cents:02d}"


def test_dashboard_counts_what_the_board_shows(browser: Browser, node: NodeProcess,
                                               users: dict[str, Any]) -> None:
    admin = users[ADMIN]
    page = open_page(browser, node, admin, "/dashboard")
    live(page)
    rows = rest(node, admin, "GET", "/api/purchase-requests?limit=1000")["data"]
    by_status: dict[str, int] = {}
    for row in rows:
        by_status[row["status"]] = by_status.get(row["status"], 0) + 1
    # the server's figures (the dashboard topic), not a count made in the browser
    expect(page.locator("body")).to_have_attribute("data-source", "dashboard")
    expect(page.locator("#source")).to_contain_text("agregados do servidor")
    figures = rest(node, admin, "GET", f"/api/dashboard?aggregates={DASHBOARD_FIGURES}")
    held = page.evaluate("window.sinal.client.dashboard")
    assert {name: held["aggregates"][name] for name in DASHBOARD_FIGURES.split(",")} == \
        {name: figures[name] for name in DASHBOARD_FIGURES.split(",")}, (held, figures)
    open_amount = sum((Decimal(str(row["amount"])) for row in rows
                       if row["status"] not in ("rejected", "cancelled")), Decimal(0))
    expect(page.locator("#tile-amount")).to_have_text(brl(open_amount))
    expect(page.locator("#tile-total")).to_have_text(str(len(rows)))
    for status in ("pending_a1", "approved", "draft"):
        expect(page.locator(f'#by-status .bar[data-key="{status}"] .bar-value')) \
            .to_have_text(str(by_status.get(status, 0)))
    pending = sum(by_status.get(f"pending_a{level}", 0) for level in (1, 2, 3))
    expect(page.locator("#tile-pending")).to_have_text(str(pending))

    title = unique("Impressora multifuncional")
    row = rest(node, users[REQUESTER], "POST", "/api/purchase-requests",
               {"title": title, "amount": 5200, "submit": True})
    expect(page.locator("#tile-total")).to_have_text(str(len(rows) + 1))
    expect(page.locator("#tile-pending")).to_have_text(str(pending + 1))
    expect(page.locator("#activity li").first).to_contain_text(title)
    level_1 = by_status.get("pending_a1", 0) + 1
    expect(page.locator('#by-level .bar[data-key="1"] .bar-value')).to_have_text(str(level_1))
    expect(page.locator("#tile-amount")).to_have_text(brl(open_amount + 5200))
    source = page.locator("#source")
    assert int(source.get_attribute("data-offset") or 0) > held["offset"]
    expect(source).to_contain_text("agregados do servidor")
    rest(node, users[APPROVER], "POST", f"/api/purchase-requests/{row['id']}/approve", {})
    expect(page.locator('#by-level .bar[data-key="1"] .bar-value')).to_have_text(str(level_1 - 1))
    expect(page.locator("#activity li").first).to_contain_text("Aprovação nível 2")
    shot(page, "dashboard", full_page=True)

    page.goto(f"{node.base_url}/solicitacoes")  # the session is kept per tab
    live(page)
    expect(card(page, title)).to_be_visible()
    shot(page, "solicitacoes")
    page.context.close()


def test_settings_show_the_connection_the_tree_and_save_preferences(
        browser: Browser, node: NodeProcess, users: dict[str, Any]) -> None:
    admin = users[ADMIN]
    page = open_page(browser, node, admin, "/configuracoes")
    live(page)
    expect(page.locator("#connection-state")).to_have_text("Ao vivo")
    expect(page.locator("#connection-facts")).to_contain_text("ms")  # latency measured
    expect(page.locator("#supervisor-tree")).to_contain_text("connections")
    expect(page.locator("#supervisor-tree")).to_contain_text("running")
    expect(page.locator("#metrics-facts")).to_contain_text("Conexões ativas")
    expect(page.locator("#alerts li").first).to_be_visible()
    expect(page.locator("#alerts")).not_to_contain_text("Sem WebSocket")
    form = page.locator("#preferences")
    expect(form).to_have_attribute("data-loaded", "true")
    expect(form.get_by_label("Som ao notificar")).to_be_checked()
    form.get_by_label("Solicitação aprovada").check()
    form.get_by_label("Frequência").select_option("daily")
    form.get_by_label("Som ao notificar").uncheck()
    form.get_by_role("button", name="Salvar preferências").click()
    expect(page.locator("#preferences-status")).to_have_text("Preferências salvas.")
    saved = rest(node, admin, "GET", "/api/user/notification-preferences")
    assert (saved["events"], saved["frequency"], saved["soundEnabled"]) == \
        (["purchase_request_approved"], "daily", False)
    page.reload()
    expect(page.locator("#preferences")).to_have_attribute("data-loaded", "true")
    expect(page.get_by_label("Frequência")).to_have_value("daily")
    expect(page.get_by_label("Som ao notificar")).not_to_be_checked()
    shot(page, "configuracoes", full_page=True)
    page.context.close()


def test_login_by_picking_a_demo_user_or_pasting_a_token(
        browser: Browser, node: NodeProcess, users: dict[str, Any]) -> None:
    context = browser.new_context(viewport=VIEWPORT, locale="pt-BR")
    page = context.new_page()
    page.goto(f"{node.base_url}/dashboard")  # no session: off to the login page, and back
    expect(page).to_have_url(re.compile(r"/\?next=%2Fdashboard$"))
    page.get_by_role("button", name=re.compile("^Carla Dias")).click()
    expect(page).to_have_url(f"{node.base_url}/dashboard")
    expect(page.locator(".user-name")).to_have_text("Carla Dias")
    live(page)
    shot(page, "login-done")
    page.get_by_role("button", name="Sair").click()
    expect(page.get_by_role("heading", name="Entrar com um token")).to_be_visible()
    page.get_by_label("Token de acesso (JWT)").fill(token(users[REQUESTER]))
    page.get_by_role("button", name="Entrar", exact=True).click()
    expect(page).to_have_url(f"{node.base_url}/solicitacoes")
    expect(page.locator(".user-name")).to_have_text("Solicitante")
    live(page)
    context.close()
