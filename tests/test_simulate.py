"""`sinal simulate`'s traffic walks the whole workflow and every topic sees changes; the
command shows its progress while it runs (issue #10, 12)."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import psycopg

from sinal.domain.changes import read_changes, sequence_changes
from sinal.node.demo import seed_demo
from sinal.node.simulate import Progress, one_action, simulate
from tests.cli_support import clean_env, run_sinal


def test_simulated_traffic_reaches_every_stage(db_url: str) -> None:
    rnd = random.Random(7)
    actions: Counter[str] = Counter()
    with psycopg.connect(db_url, autocommit=True) as conn:
        users = seed_demo(conn)
        suppliers = [r[0] for r in conn.execute("SELECT id::text FROM suppliers")]
        for _ in range(400):
            actions[one_action(conn, users, suppliers, rnd)] += 1
        statuses = {r[0] for r in conn.execute("SELECT DISTINCT status FROM purchase_requests")}
        sequence_changes(conn)
        topics = {c.topic for c in read_changes(conn, 0, limit=100000)}
    assert {"create", "quotation", "order", "delivered"} <= set(actions)
    assert any(a.startswith("approved_a3") for a in actions)
    assert any(a.startswith("rejected") for a in actions)
    assert {"pending_a1", "delivered", "rejected"} <= statuses
    assert {"purchase_request_changed", "approval_changed", "quotation_changed",
            "purchase_order_changed"} <= topics


class FakeTime:
    """The run's clock: only `sleep` moves it, so the test does not wait."""

    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_simulate_reports_progress_every_few_seconds(db_url: str) -> None:
    fake = FakeTime()
    reports: list[Progress] = []
    result = simulate(db_url, rate=10, duration=12, seed=3, progress=reports.append,
                      progress_every=5, clock=fake.clock, sleep=fake.sleep)
    total = sum(result.actions.values())
    assert 110 <= total <= 121
    assert [round(r.seconds) for r in reports] == [5, 10]
    assert reports[0].actions < reports[1].actions < total
    assert all(9 <= r.rate <= 11 for r in reports)
    assert reports[-1].errors <= result.errors


def test_simulate_command_prints_progress_lines_then_the_summary(db_url: str,
                                                                 tmp_path: Path) -> None:
    result = run_sinal("simulate", "--rate", "200", "--duration", "0.6", "--progress", "0.2",
                       "--seed", "1", env=clean_env(DATABASE_URL=db_url, LOG_LEVEL="warning"),
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    progress = [line for line in result.stderr.splitlines()
                if line.startswith("sinal simulate:")]
    assert progress, result.stderr
    for line in progress:
        assert re.fullmatch(r"sinal simulate: \d+ actions in \d+\.\d s \(\d+\.\d/s\), "
                            r"\d+ refused", line), line
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["total"] >= int(progress[-1].split()[2])
