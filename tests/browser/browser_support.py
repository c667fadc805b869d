"""Support for the browser tests: a node in its own process (so that a test can kill it with
SIGKILL and start it again on the same ports), Debian's chromium under Playwright, and
screenshots kept in tests/artifacts/.

Playwright's own browser download cannot work on these machines: the tests drive the
`chromium` that `make install` installs from Debian's packages (`executable_path`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sinal.domain.tokens import mint_token
from sinal.node.embedded import free_port

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
SECRET = "b" * 40
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    # no traffic off this machine (the network is closed; Chromium would retry lookups)
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--disable-quic", "--disable-features=MediaRouter",
]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, ("Debian's chromium is missing: `make install` installs it "
                  "(apt-get install -y chromium)")
    return path


@dataclass
class NodeProcess:
    """`sinal serve` in a child process, on fixed ports, against a test database."""

    database_url: str
    data_dir: Path
    log_path: Path
    http_port: int = field(default_factory=free_port)
    websocket_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def env(self) -> dict[str, str]:
        return {**os.environ, "DATABASE_URL": self.database_url, "SINAL_ENV": "development",
                "HTTP_PORT": str(self.http_port), "WEBSOCKET_PORT": str(self.websocket_port),
                "SINAL_HOST": "127.0.0.1", "JWT_SECRET": SECRET,
                "WEBSOCKET_CORS_ORIGIN": self.base_url, "SINAL_DATA_DIR": str(self.data_dir),
                "RATE_LIMIT_REQUESTS_PER_MINUTE": "1000000", "LOG_LEVEL": "warning",
                "ENABLE_PERFORMANCE_MONITORING": "false", "REDIS_URL": ""}

    def start(self, timeout: float = 60) -> None:
        self.spawn()
        self.wait_ready(timeout)

    def spawn(self) -> None:
        """Start the process; `wait_ready` waits for it to serve."""
        assert self.process is None
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts}\n".encode())
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sinal.node.cli", "serve"], env=self.env(),
                cwd=self.data_dir, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the node exited; see {self.log_path}"
            try:
                with urllib.request.urlopen(self.base_url + "/health/ready", timeout=2):
                    return
            except (OSError, urllib.error.HTTPError):
                time.sleep(0.05)  # polling the node until it answers, bounded by `deadline`
        raise AssertionError(f"the node was not ready within {timeout} s; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, no close frames."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None


def token(user: dict[str, Any]) -> str:
    return mint_token(SECRET, user["id"], user["role"], ttl_seconds=3600)


def rest(node: NodeProcess, user: dict[str, Any], method: str, path: str,
         body: Any = None) -> Any:
    """A REST call as `user`; returns the JSON body (asserts a 2xx)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(node.base_url + path, data=data, method=method, headers={
        "Authorization": f"Bearer {token(user)}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=20) as response:
        return json.load(response)


def shot(page: Any, name: str, full_page: bool = False) -> Path:
    """A screenshot into tests/artifacts/ (git-ignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def wait_for_value(page: Any, expression: str, timeout: float = 10.0) -> None:
    """Poll `expression` in the page until it is truthy (fails after `timeout` s).

    `page.wait_for_function` evaluates its string with `new Function` in the page, which
    the pages' Content-Security-Policy (script-src 'self') refuses; `page.evaluate` goes
    through the debugging protocol instead."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"{expression} did not hold within {timeout} s")
        page.wait_for_timeout(50)
