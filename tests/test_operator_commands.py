"""`sinal --version` and `make help` (issue #10, 12)."""

from __future__ import annotations

import re
import subprocess
import tomllib
from importlib.metadata import version
from pathlib import Path

import sinal
from tests.cli_support import clean_env, run_sinal

REPOSITORY = Path(__file__).resolve().parent.parent


def test_version_comes_from_the_package_metadata(tmp_path: Path) -> None:
    result = run_sinal("--version", env=clean_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    pyproject = tomllib.loads((REPOSITORY / "pyproject.toml").read_text(encoding="utf-8"))
    assert result.stdout.strip() == f"sinal {version('sinal')}"
    assert version("sinal") == sinal.__version__ == pyproject["project"]["version"]


def test_make_help_lists_every_target_with_one_line() -> None:
    makefile = (REPOSITORY / "Makefile").read_text(encoding="utf-8")
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.MULTILINE)
    assert phony is not None
    targets = phony.group(1).split()
    result = subprocess.run(["make", "--no-print-directory", "help"], cwd=REPOSITORY,
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    listed = {}
    for line in result.stdout.splitlines():
        match = re.fullmatch(r"  make (\S+)\s+(\S.*)", line)
        assert match, f"not a target line: {line!r}"
        listed[match.group(1)] = match.group(2)
    assert sorted(listed) == sorted(targets)
    assert len(result.stdout.splitlines()) == len(targets)
