"""Structured events: `event(logger, name, **fields)` logs a named event with fields that a
JSON formatter (node/log.py) writes beside the message. Loggers of the realtime side:
`sinal.ws` (every socket's connect, subscribe, close) and `sinal.perf` (metrics samples),
switched by LOG_WEBSOCKET_EVENTS and LOG_PERFORMANCE_METRICS."""

from __future__ import annotations

import logging
from typing import Any

WS_LOGGER = "sinal.ws"
PERF_LOGGER = "sinal.perf"


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log a named event with structured fields."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"fields": {"event": name, **fields}})
