"""Sinal: PostgreSQL changes to WebSocket (MessagePack) and REST deltas, on Trio.

Installed, every part of Sinal lives under this one import name: `sinal.protocol`,
`sinal.websocket`, `sinal.engine` (bottom), `sinal.domain`, `sinal.actors` and `sinal.api`,
`sinal.node` (the composition root), `sinal.client`. In the repository each part is a
top-level folder; `sinal/` holds links to them (docs/architecture.md, "The house").
"""

from __future__ import annotations


def __getattr__(name: str) -> str:
    """`sinal.__version__`: the installed distribution's version (pyproject.toml is its one
    source), read from the package metadata when first asked for (`sinal --version`)."""
    if name != "__version__":
        raise AttributeError(f"module 'sinal' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sinal")
    except PackageNotFoundError:  # imported from a folder that was never installed
        return "0+unknown"
