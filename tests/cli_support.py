"""Running the `sinal` command as a subprocess, the way an operator does."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sinal.node.config import SETTINGS

SINAL = [sys.executable, "-m", "sinal.node.cli"]


def clean_env(**settings: str) -> dict[str, str]:
    """The caller's environment without any Sinal setting, plus `settings`.

    A command that needs a data folder (the embedded PostgreSQL, a development secret) and
    gets no SINAL_DATA_DIR uses the checkout's `.sinal`: give one (or JWT_SECRET) to keep
    tests out of it."""
    env = {k: v for k, v in os.environ.items() if k not in {s.name for s in SETTINGS}}
    env.update(settings)
    return env


def run_sinal(*args: str, env: dict[str, str], cwd: Path,
              timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SINAL, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    banner: str
    stdout: str = ""
    stderr: str = ""

    def line(self, label: str) -> str:
        """The value of a banner line, e.g. line("http") -> "http://127.0.0.1:..."."""
        for text in self.banner.splitlines():
            parts = text.split()
            if len(parts) >= 2 and parts[0] == label:
                return parts[1]
        raise AssertionError(f"no {label!r} line in the banner:\n{self.banner}")


@contextmanager
def serving(env: dict[str, str], cwd: Path, *args: str, wait: float = 30) -> Iterator[Served]:
    """`sinal serve` until the block ends (then SIGTERM); the banner is read first."""
    proc = subprocess.Popen([*SINAL, *args, "serve"], env=env, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    served = Served(proc, "")
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + wait
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while "token" not in served.banner and time.monotonic() < deadline:
                if sel.select(timeout=deadline - time.monotonic()):
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if not chunk:
                        break
                    served.banner += chunk.decode()
        if "is up" not in served.banner:
            proc.kill()
            _, err = proc.communicate(timeout=30)
            raise AssertionError(f"the node did not come up within {wait} s: "
                                 f"{err.decode()[-3000:]}")
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        served.stdout, served.stderr = served.banner + out.decode(), err.decode()
