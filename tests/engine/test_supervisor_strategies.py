"""Strategies, restart types, start order and spec validation of `Supervisor`."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from sinal.engine import spec as spec_module
from sinal.engine import supervisor as supervisor_module
from sinal.engine.supervisor import (
    ChildSpec,
    ChildStartError,
    InvalidSpec,
    Restart,
    Strategy,
    Supervisor,
    SupervisorFlags,
)
from tests.engine.engine_testing import Boom, Workers, node, settle

NO_BACKOFF = {"backoff_base": 0.0, "backoff_cap": 0.0}


def flags(strategy: Strategy = Strategy.ONE_FOR_ONE, **kw: Any) -> SupervisorFlags:
    return SupervisorFlags(strategy=strategy, **{**NO_BACKOFF, **kw})


async def start_tree(nursery: trio.Nursery, sup: Supervisor) -> Supervisor:
    started: Supervisor = await nursery.start(sup.run)
    return started


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (Strategy.ONE_FOR_ONE, [("end", "b"), ("start", "b")]),
        (
            Strategy.ONE_FOR_ALL,
            [
                ("end", "b"),
                ("end", "c"),
                ("end", "a"),
                ("start", "a"),
                ("start", "b"),
                ("start", "c"),
            ],
        ),
        (Strategy.REST_FOR_ONE, [("end", "b"), ("end", "c"), ("start", "b"), ("start", "c")]),
    ],
)
async def test_strategy_restarts_the_right_children_in_order(
    autojump_clock: MockClock, workers: Workers, strategy: Strategy, expected: list[tuple[str, str]]
) -> None:
    sup = Supervisor(
        "s", [workers.spec("a"), workers.spec("b"), workers.spec("c")], flags(strategy)
    )
    async with trio.open_nursery() as nursery:
        await start_tree(nursery, sup)
        assert workers.starts_and_ends() == [("start", "a"), ("start", "b"), ("start", "c")]
        workers.current["b"].crash()
        await settle()
        assert workers.starts_and_ends() == expected
        restarted = {name for event, name in expected if event == "start"}
        status = sup.status()
        for name in "abc":
            child = node(status, name)
            assert child["state"] == "running"
            assert child["restarts"] == (1 if name in restarted else 0)
        assert node(status, "b")["last_error"]["type"] == "Boom"
        sup.request_stop()
    assert workers.starts_and_ends() == [("end", "c"), ("end", "b"), ("end", "a")]


@pytest.mark.parametrize(
    ("restart", "command", "restarted", "final_state"),
    [
        (Restart.PERMANENT, "exit", True, "running"),
        (Restart.PERMANENT, "crash", True, "running"),
        (Restart.TRANSIENT, "exit", False, "stopped"),
        (Restart.TRANSIENT, "crash", True, "running"),
        (Restart.TEMPORARY, "exit", False, "stopped"),
        (Restart.TEMPORARY, "crash", False, "failed"),
    ],
)
async def test_restart_types_on_normal_exit_and_on_crash(
    autojump_clock: MockClock,
    workers: Workers,
    restart: Restart,
    command: str,
    restarted: bool,
    final_state: str,
) -> None:
    sup = Supervisor("s", [workers.spec("a", restart), workers.spec("b")], flags())
    async with trio.open_nursery() as nursery:
        await start_tree(nursery, sup)
        getattr(workers.current["a"], command)()
        await settle()
        child = node(sup.status(), "a")
        assert workers.starts["a"] == (2 if restarted else 1)
        assert child["restarts"] == (1 if restarted else 0)
        assert child["state"] == final_state
        assert (child["last_error"] is not None) == (command == "crash")
        assert node(sup.status(), "b")["state"] == "running"
        sup.request_stop()


async def test_one_for_all_stops_temporary_siblings_without_restarting_them(
    autojump_clock: MockClock, workers: Workers
) -> None:
    specs = [workers.spec("a"), workers.spec("t", Restart.TEMPORARY), workers.spec("c")]
    sup = Supervisor("s", specs, flags(Strategy.ONE_FOR_ALL))
    async with trio.open_nursery() as nursery:
        await start_tree(nursery, sup)
        workers.starts_and_ends()
        workers.current["c"].crash()
        await settle()
        assert workers.starts_and_ends() == [
            ("end", "c"),
            ("end", "t"),
            ("end", "a"),
            ("start", "a"),
            ("start", "c"),
        ]
        assert node(sup.status(), "t")["state"] == "stopped"
        sup.request_stop()


async def test_group_restart_reruns_transient_children_that_had_ended(
    autojump_clock: MockClock, workers: Workers
) -> None:
    # As in OTP: one_for_all restarts every non-temporary child of the group,
    # including a transient one that had already finished normally.
    specs = [workers.spec("job", Restart.TRANSIENT), workers.spec("b")]
    sup = Supervisor("s", specs, flags(Strategy.ONE_FOR_ALL))
    async with trio.open_nursery() as nursery:
        await start_tree(nursery, sup)
        workers.current["job"].exit()
        await settle()
        assert node(sup.status(), "job")["state"] == "stopped"
        workers.starts_and_ends()
        workers.current["b"].crash()
        await settle()
        assert workers.starts_and_ends() == [("end", "b"), ("start", "job"), ("start", "b")]
        sup.request_stop()


async def test_children_start_in_order_each_after_the_previous_is_ready(
    autojump_clock: MockClock,
) -> None:
    events: list[tuple[str, str, float]] = []

    async def slow(name: str, delay: float, *, task_status: trio.TaskStatus[None]) -> None:
        events.append(("begin", name, trio.current_time()))
        await trio.sleep(delay)
        events.append(("ready", name, trio.current_time()))
        task_status.started()
        await trio.sleep_forever()

    specs = [
        ChildSpec("first", slow, args=("first", 3.0)),
        ChildSpec("second", slow, args=("second", 1.0)),
    ]
    sup = Supervisor("s", specs, flags())
    async with trio.open_nursery() as nursery:
        t0 = trio.current_time()
        await start_tree(nursery, sup)
        assert [(e, n) for e, n, _ in events] == [
            ("begin", "first"),
            ("ready", "first"),
            ("begin", "second"),
            ("ready", "second"),
        ]
        assert events[2][2] - t0 == pytest.approx(3.0)
        assert trio.current_time() - t0 == pytest.approx(4.0)
        assert sup.status()["state"] == "running"
        sup.request_stop()


async def test_child_failing_at_first_start_fails_the_supervisor_start(
    autojump_clock: MockClock, workers: Workers
) -> None:
    workers.fail_next_start.add("c")
    sup = Supervisor("s", [workers.spec("a"), workers.spec("b"), workers.spec("c")], flags())
    async with trio.open_nursery() as nursery:
        with pytest.raises(ChildStartError) as caught:
            await nursery.start(sup.run)
    assert caught.value.child == "c"
    assert isinstance(caught.value.__cause__, Boom)
    assert "could not start child 'c'" in str(caught.value)
    assert workers.starts_and_ends() == [
        ("start", "a"),
        ("start", "b"),
        ("end", "b"),
        ("end", "a"),
    ]
    assert sup.state == "failed"


async def test_a_restart_that_fails_to_start_is_retried_and_counted(
    autojump_clock: MockClock, workers: Workers
) -> None:
    sup = Supervisor("s", [workers.spec("a")], flags(intensity=5))
    async with trio.open_nursery() as nursery:
        await start_tree(nursery, sup)
        workers.fail_next_start.add("a")
        workers.current["a"].crash()
        await settle()
        child = node(sup.status(), "a")
        assert child["state"] == "running"
        assert child["restarts"] == 2  # the failed attempt and the good one
        assert sup.status()["intensity"]["recent_restarts"] == 2
        sup.request_stop()


async def test_outside_cancellation_still_stops_children_in_reverse_order(
    autojump_clock: MockClock, workers: Workers
) -> None:
    sup = Supervisor("s", [workers.spec(n) for n in "abcd"], flags())
    with trio.move_on_after(10) as scope:
        async with trio.open_nursery() as nursery:
            await start_tree(nursery, sup)
            workers.starts_and_ends()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert workers.starts_and_ends() == [("end", n) for n in "dcba"]
    assert sup.state == "stopped"


def _sync_start(*, task_status: Any) -> None:  # not async: rejected
    pass


async def _no_task_status() -> None:
    pass


async def _ok(*, task_status: trio.TaskStatus[None]) -> None:
    task_status.started()


@pytest.mark.parametrize(
    ("spec", "field_name"),
    [
        (ChildSpec("", _ok), "name"),
        (ChildSpec("x", _sync_start), "start"),  # type: ignore[arg-type]
        (ChildSpec("x", _no_task_status), "start"),
        (ChildSpec("x", _ok, restart="perm"), "restart"),  # type: ignore[arg-type]
        (ChildSpec("x", _ok, shutdown=-1), "shutdown"),
        (ChildSpec("x", _ok, shutdown=math.nan), "shutdown"),
        (ChildSpec("x", _ok, kind=""), "kind"),
        (ChildSpec("x", _ok, args=[1]), "args"),  # type: ignore[arg-type]
    ],
)
async def test_bad_child_spec_is_refused_at_start_naming_the_field(
    autojump_clock: MockClock, spec: ChildSpec, field_name: str
) -> None:
    sup = Supervisor("s", [spec])
    async with trio.open_nursery() as nursery:
        with pytest.raises(InvalidSpec) as caught:
            await nursery.start(sup.run)
    assert caught.value.field == field_name
    assert repr(field_name) in str(caught.value)


@pytest.mark.parametrize(
    ("bad", "field_name"),
    [
        ({"intensity": -1}, "intensity"),
        ({"intensity": 1.5}, "intensity"),
        ({"period": 0}, "period"),
        ({"backoff_base": -1.0}, "backoff_base"),
        ({"backoff_base": 2.0, "backoff_cap": 1.0}, "backoff_cap"),
        ({"backoff_jitter": 1.5}, "backoff_jitter"),
        ({"strategy": "one_for_none"}, "strategy"),
    ],
)
async def test_bad_flags_are_refused_at_start_naming_the_field(
    autojump_clock: MockClock, bad: dict[str, Any], field_name: str
) -> None:
    sup = Supervisor("s", [ChildSpec("x", _ok)], SupervisorFlags(**bad))
    with pytest.raises(InvalidSpec) as caught:
        await sup.run()
    assert caught.value.field == field_name


async def test_duplicate_child_names_are_refused(autojump_clock: MockClock) -> None:
    sup = Supervisor("s", [ChildSpec("x", _ok), ChildSpec("x", _ok)])
    with pytest.raises(InvalidSpec, match="two children named 'x'"):
        await sup.run()


async def test_string_enum_values_are_accepted_and_normalised(
    autojump_clock: MockClock, workers: Workers
) -> None:
    spec = ChildSpec("a", workers.run, args=("a",), restart="transient")  # type: ignore[arg-type]
    sup = Supervisor("s", [spec], SupervisorFlags(strategy="rest_for_one"))  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await start_tree(nursery, sup)
        status = sup.status()
        assert status["strategy"] == "rest_for_one"
        assert node(status, "a")["restart"] == "transient"
        sup.request_stop()


async def test_spec_and_flags_are_frozen(autojump_clock: MockClock) -> None:
    spec = ChildSpec("x", _ok)
    with pytest.raises(AttributeError):
        spec.name = "y"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        SupervisorFlags().intensity = 9  # type: ignore[misc]


def test_the_supervisor_module_re_exports_the_spec_names() -> None:
    for name in supervisor_module.__all__:
        if name != "Supervisor":
            assert getattr(supervisor_module, name) is getattr(spec_module, name), name
