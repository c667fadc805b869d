"""The README lists what the project holds (issue #10, 12): every migration in sql/ and
every demo user of node/demo.py."""

from __future__ import annotations

from pathlib import Path

from sinal.node.demo import USERS

REPOSITORY = Path(__file__).resolve().parent.parent
README = (REPOSITORY / "README.md").read_text(encoding="utf-8")


def test_readme_lists_every_migration() -> None:
    database = README.split("## Database", 1)[1].split("\n## ", 1)[0]
    migrations = sorted(p.name for p in (REPOSITORY / "sql").glob("*.sql"))
    assert len(migrations) >= 6
    for name in migrations:
        assert f"- `{name}`:" in database, f"{name} is not described under ## Database"


def test_readme_lists_the_demo_users() -> None:
    for email, name, role, department in USERS:
        assert f"| `{email}` ({name}) | {role} | {department} |" in README, email
