"""Sinal: PostgreSQL changes to WebSocket (MessagePack) and REST deltas, on Trio.

Installed, every part of Sinal lives under this one import name: `sinal.protocol`,
`sinal.websocket`, `sinal.engine` (bottom), `sinal.domain`, `sinal.actors` and `sinal.api`,
`sinal.node` (the composition root), `sinal.client`. In the repository each part is a
top-level folder; `sinal/` holds links to them (docs/architecture.md, "The house").
"""

from __future__ import annotations

__version__ = "0.2.0"
