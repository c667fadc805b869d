"""Fixtures for the actor runtime tests (helpers are in engine_testing.py)."""

from __future__ import annotations

import pytest

from tests.engine.engine_testing import Workers


@pytest.fixture
def workers() -> Workers:
    return Workers()
