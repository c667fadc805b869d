"""Stateful property test: random crashes, exits and starts against a model of OTP.

The tree: ``root`` (one_for_one, never gives up) supervises ``sub`` (a drawn
strategy, intensity and period, with 1-4 scripted children of drawn restart
types) and ``pool`` (a dynamic pool of temporary children, at most 3). Rules
crash or end children at random, start pool children, and let virtual time
pass. After every step the live status tree must equal the model: which
children run, their restart counts, how often ``sub`` escalated (and was
restarted by ``root``), and the pool's counts.

Trio runs in a helper thread for the life of one example (one ``trio.run`` per
example, with an autojump clock); every rule is an async function sent into it
with ``trio.from_thread.run``.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio
import trio.testing
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from sinal.engine.dynamic import DynamicSupervisor, PoolFull
from sinal.engine.supervisor import ChildSpec, Restart, Strategy, Supervisor, SupervisorFlags
from tests.engine.engine_testing import Workers, engine_tasks

T = TypeVar("T")
POOL_MAX = 3


class TrioHost:
    """One ``trio.run`` in a thread; ``call`` runs an async function inside it."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("trio host did not start")

    def _main(self) -> None:
        try:
            trio.run(self._root, clock=trio.testing.MockClock(autojump_threshold=0))
        except BaseException as error:  # reported by close()
            self._error = error
            self._ready.set()

    async def _root(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self._closing = trio.Event()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self._ready.set()
            await self._closing.wait()
            nursery.cancel_scope.cancel()

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return trio.from_thread.run(fn, *args, trio_token=self.token)

    def close(self) -> None:
        try:
            trio.from_thread.run_sync(self._closing.set, trio_token=self.token)
        except trio.RunFinishedError:
            pass
        self._thread.join(10)
        assert not self._thread.is_alive(), "trio host did not stop"
        if self._error is not None:
            raise self._error


@dataclass
class Model:
    strategy: Strategy
    types: list[Restart]
    intensity: int
    period: float
    alive: list[bool] = field(default_factory=list)
    restarts: list[int] = field(default_factory=list)
    window: list[float] = field(default_factory=list)
    escalations: int = 0
    pool_live: int = 0
    pool_refused: int = 0
    pool_crashed: int = 0
    pool_exited: int = 0

    def fresh_sub(self) -> None:
        self.alive = [True] * len(self.types)
        self.restarts = [0] * len(self.types)
        self.window = []

    def child_ended(self, i: int, crashed: bool, now: float) -> None:
        self.alive[i] = False
        kind = self.types[i]
        if kind is Restart.TEMPORARY or (kind is Restart.TRANSIENT and not crashed):
            return
        self.window = [t for t in self.window if now - t < self.period] + [now]
        if len(self.window) > self.intensity:
            self.escalations += 1  # root restarts sub: a fresh run, fresh children
            self.fresh_sub()
            return
        if self.strategy is Strategy.ONE_FOR_ONE:
            group = [i]
        elif self.strategy is Strategy.ONE_FOR_ALL:
            group = list(range(len(self.types)))
        else:
            group = list(range(i, len(self.types)))
        for j in group:
            if j == i or self.types[j] is not Restart.TEMPORARY:
                self.alive[j] = True
                self.restarts[j] += 1
            else:
                self.alive[j] = False


async def pool_child(control_box: list[Any], *, task_status: trio.TaskStatus[None]) -> None:
    send, receive = trio.open_memory_channel[str](1)
    control_box.append(send)
    task_status.started()
    command = await receive.receive()
    if command == "crash":
        raise RuntimeError("pool child crashed")


class SupervisorTreeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.host: TrioHost | None = None
        self.pool_controls: list[Any] = []

    @initialize(
        strategy=st.sampled_from(list(Strategy)),
        types=st.lists(st.sampled_from(list(Restart)), min_size=1, max_size=4),
        intensity=st.integers(0, 3),
        period=st.sampled_from([2.5, 10.0]),
    )
    def start_tree(
        self, strategy: Strategy, types: list[Restart], intensity: int, period: float
    ) -> None:
        self.model = Model(strategy, types, intensity, period)
        self.model.fresh_sub()
        self.workers = Workers()
        self.names = [f"c{i}" for i in range(len(types))]
        self.sub = Supervisor(
            "sub",
            [self.workers.spec(n, t) for n, t in zip(self.names, types, strict=True)],
            SupervisorFlags(
                strategy=strategy,
                intensity=intensity,
                period=period,
                backoff_base=0.0,
                backoff_cap=0.0,
            ),
        )
        self.pool = DynamicSupervisor(
            "pool", pool_child, child_kind="pool_child", max_children=POOL_MAX
        )
        self.root = Supervisor(
            "root",
            [ChildSpec.of(self.sub), ChildSpec.of(self.pool)],
            SupervisorFlags(intensity=1_000_000, period=1.0, backoff_base=0.0, backoff_cap=0.0),
        )
        self.host = TrioHost()
        self.host.call(self._start_root)

    async def _start_root(self) -> None:
        await self.host.nursery.start(self.root.run)  # type: ignore[union-attr]

    # -- rules -----------------------------------------------------------------------

    async def _command_child(self, name: str, command: str) -> float:
        control = self.workers.current[name]
        getattr(control, command)()
        await trio.testing.wait_all_tasks_blocked()
        return trio.current_time()

    def _alive(self) -> list[int]:
        return [i for i, up in enumerate(self.model.alive) if up]

    @precondition(lambda self: any(self.model.alive))
    @rule(data=st.data(), crashed=st.booleans())
    def end_a_child(self, data: st.DataObject, crashed: bool) -> None:
        i = data.draw(st.sampled_from(self._alive()), label="child")
        assert self.host is not None
        now = self.host.call(self._command_child, self.names[i], "crash" if crashed else "exit")
        self.model.child_ended(i, crashed, now)

    async def _start_pool_child(self) -> bool:
        try:
            await self.pool.start_child(self.pool_controls)
        except PoolFull:
            return False
        return True

    @rule()
    def start_a_pool_child(self) -> None:
        assert self.host is not None
        accepted = self.host.call(self._start_pool_child)
        assert accepted == (self.model.pool_live < POOL_MAX)
        if accepted:
            self.model.pool_live += 1
        else:
            self.model.pool_refused += 1

    async def _end_pool_child(self, index: int, command: str) -> None:
        send = self.pool_controls.pop(index)
        send.send_nowait(command)
        await trio.testing.wait_all_tasks_blocked()

    @precondition(lambda self: self.model.pool_live > 0)
    @rule(data=st.data(), crashed=st.booleans())
    def end_a_pool_child(self, data: st.DataObject, crashed: bool) -> None:
        index = data.draw(st.integers(0, len(self.pool_controls) - 1), label="pool child")
        assert self.host is not None
        self.host.call(self._end_pool_child, index, "crash" if crashed else "exit")
        self.model.pool_live -= 1
        if crashed:
            self.model.pool_crashed += 1
        else:
            self.model.pool_exited += 1

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, 11.0]))
    def let_time_pass(self, seconds: float) -> None:
        assert self.host is not None
        self.host.call(trio.sleep, seconds)

    # -- checks ----------------------------------------------------------------------

    async def _status(self) -> dict[str, Any]:
        return self.root.status()

    @invariant()
    def tree_matches_model(self) -> None:
        if self.host is None:
            return
        status = self.host.call(self._status)
        sub, pool = status["children"]
        model = self.model
        assert sub["restarts"] == model.escalations
        assert sub["state"] == "running"
        states = [child["state"] == "running" for child in sub["children"]]
        assert states == model.alive
        assert [child["restarts"] for child in sub["children"]] == model.restarts
        counts = pool["counts"]
        assert counts["live"] == model.pool_live
        assert counts["refused_total"] == model.pool_refused
        assert counts["crashed_total"] == model.pool_crashed
        assert counts["exited_total"] == model.pool_exited
        assert status["state"] == "running"

    async def _stop_root(self) -> list[str]:
        self.root.request_stop()
        await trio.testing.wait_all_tasks_blocked()
        return engine_tasks()

    def teardown(self) -> None:
        if self.host is None:
            return
        try:
            leftover = self.host.call(self._stop_root)
            assert leftover == [], leftover
            assert self.root.state == "stopped"
        finally:
            self.host.close()


SupervisorTreeMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSupervisorTree = SupervisorTreeMachine.TestCase
