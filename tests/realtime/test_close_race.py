"""A topic that reports a slow consumer while the server is closing that connection (its
close frame sent, the peer's answer awaited) must not turn the close into a crash: once
closing, the connection says nothing more, and ends as it meant to (virtual time)."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from sinal.domain.tokens import mint_token
from sinal.protocol import Connect, Error, Subscribe, Subscribed, Welcome
from tests.realtime.edge_support import USER, edge_config, memory_session, stub_hub
from tests.realtime.realtime_support import SECRET

BUDGET = 2
CONFIG = edge_config(RATE_LIMIT_REQUESTS_PER_MINUTE=str(BUDGET))
TOPIC = "supplier_changed"


async def test_lagged_while_the_server_closes_is_not_a_crash(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    hub = stub_hub(CONFIG)
    topic = hub.topics[TOPIC]
    caplog.set_level(logging.WARNING)
    with trio.fail_after(1000):
        async with memory_session(hub) as (c, actor):
            await c.send(Connect(token=mint_token(SECRET, USER["id"], USER["role"])))
            assert isinstance((await c.receive())[1], Welcome)
            await c.send(Subscribe(events=(TOPIC,), ref="s"))
            assert isinstance((await c.receive())[1], Subscribed)
            assert topic.subscribers == 1
            # Over twice the budget: the server closes (rate_limited) and waits for our
            # close frame, which we do not send yet (we do not read).
            for i in range(2 * BUDGET + 2):
                await c.send(Subscribe(events=(TOPIC,), ref=f"over{i}"))
            while not actor.closing:  # noqa: ASYNC110 - virtual time (autojump_clock)
                await trio.sleep(0.01)
            assert not actor.ws.closed  # still waiting for the peer
            topic.end_all()  # the topic drops the subscription and reports it, mid-close
            assert topic.subscribers == 0
            await trio.sleep(0.5)  # the control loop sees the notice while closing
            got, closed = await c.receive_until_closed()
    assert closed.code == 4300 and closed.reason == "rate_limited"
    assert not any(message.__class__.__name__ == "Resync" for _, message in got), \
        "a closing connection says nothing more"
    assert [m.code for _, m in got if isinstance(m, Error)][-1] == "rate_limited"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert hub.closed_by_code == {4300: 1}
