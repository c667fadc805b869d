"""Installed, Sinal is one import name: a wheel holds the package `sinal` (its parts as
sub-packages, the SQL migrations and the browser app in web/ as package data) and nothing
else at the top level, and the `sinal` command points into it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("actors", "api", "client", "domain", "engine", "node", "protocol", "sql", "websocket")


def test_the_wheel_holds_sinal_and_nothing_else(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path), str(ROOT)],
        check=True, cwd=tmp_path, capture_output=True)
    (wheel,) = tmp_path.glob("sinal-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    assert tops == {"sinal"}
    for part in PARTS:
        assert f"sinal/{part}/__init__.py" in names, part
    shipped = sorted(p.name for p in (ROOT / "sql").glob("*.sql"))
    assert sorted(n.split("/")[-1] for n in names if n.endswith(".sql")) == shipped
    # the browser app: every file of web/ (data, no Python), where api/pages.py serves it from
    web = sorted(p.relative_to(ROOT / "web").as_posix()
                 for p in (ROOT / "web").rglob("*") if p.is_file())
    assert "sinal-client.js" in web and "solicitacoes.html" in web
    assert sorted(n.removeprefix("sinal/web/") for n in names if n.startswith("sinal/web/")) == web
    assert not [n for n in names if n.startswith("sinal/web/") and n.endswith(".py")]
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "sinal = sinal.node.cli:main" in text


def test_the_repository_imports_only_the_installed_names() -> None:
    """No module imports a part by its folder name (`import engine`): only `sinal.*`."""
    offenders = []
    for folder in (*PARTS, "tests", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                words = line.split()
                if len(words) >= 2 and words[0] in ("import", "from") \
                        and words[1].split(".")[0] in PARTS:
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def test_no_module_of_the_product_is_over_600_lines() -> None:
    """A module does one thing; past 600 lines it is two."""
    long = [f"{path.relative_to(ROOT)}: {count}" for part in PARTS
            for path in (ROOT / part).rglob("*.py")
            if (count := len(path.read_text().splitlines())) > 600]
    assert long == []
