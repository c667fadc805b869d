from tests.realtime.conftest import node, users  # noqa: F401  (the same fixtures)
