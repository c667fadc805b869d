"""Structured logging: one JSON object per line on stderr.

LOG_LEVEL sets the root level; LOG_WEBSOCKET_EVENTS and LOG_PERFORMANCE_METRICS switch
the `sinal.ws` and `sinal.perf` loggers on or off. Extra fields go in `extra={"fields":
{...}}` or through `event(logger, name, **fields)`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from sinal.engine.log import PERF_LOGGER, WS_LOGGER
from sinal.node.config import Config


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def setup_logging(config: Config, stream: Any = None) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(config.log_level.upper())
    logging.getLogger(WS_LOGGER).disabled = not config.log_websocket_events
    logging.getLogger(PERF_LOGGER).disabled = not config.log_performance_metrics
    for noisy in ("hypercorn.access", "psycopg.pool"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))

