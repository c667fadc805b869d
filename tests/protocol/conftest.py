"""Make ``import protocol`` find the package, not this test directory.

pytest puts ``tests/`` on sys.path (for tests/conftest.py); ``tests/protocol`` then
looks like a namespace package called ``protocol`` and would shadow the real one,
which the editable install only offers after the path-based finders. Putting the
repository root on sys.path lets the regular package win. (A project-wide
``pythonpath = ["."]`` in the pytest settings would do the same for every test.)
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
_imported = sys.modules.get("protocol")
if _imported is not None and getattr(_imported, "__file__", None) is None:
    del sys.modules["protocol"]  # the namespace stand-in; import the real one afresh
