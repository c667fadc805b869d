"""CPU cost of decoding a frame, as a ratio to a plain parse of the same size.

A ratio, not a time: both sides are measured in the same run with ``time.process_time``
(the CPU time of this process, so other processes on the machine matter little), each
as the best of several rounds long enough for the clock's resolution.

The denominator is the larger of two plain parses (``json.loads`` / ``msgpack.unpackb``,
no checks): a valid frame of the same size, and the frame itself when the plain parser
takes it. The second matters for frames of many tiny containers, which cost the C
parser itself several times what a frame of short strings does: the ratio is then what
the decoder's checks add to the parser's own work. Either way a check that is quadratic
in the frame's size is thousands of times over at 64 KiB (issue #10's frame: 12 s
against well under a millisecond).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cache

from sinal.protocol import Encoding, ProtocolError, decode
from tests.fuzz.frames import LIMIT, Frame, as_message, baseline_frame, plain_parse

ROUND_SECONDS = 0.002
ROUNDS = 5
MIN_BASELINE = 4096  # below this, fixed per-call costs dominate both sides


def cpu_cost(work: Callable[[], object]) -> float:
    """Seconds of CPU per call of ``work``: the best of ROUNDS rounds of at least
    ROUND_SECONDS each."""
    repeats = 1
    while True:
        started = time.process_time()
        for _ in range(repeats):
            work()
        spent = time.process_time() - started
        if spent >= ROUND_SECONDS:
            break
        repeats *= 2
    best = spent / repeats
    for _ in range(ROUNDS - 1):
        started = time.process_time()
        for _ in range(repeats):
            work()
        best = min(best, (time.process_time() - started) / repeats)
    return best


def size_of(frame: Frame) -> int:
    return len(frame.encode("utf-8", "surrogatepass")) if isinstance(frame, str) else len(frame)


@cache
def baseline_cost(size: int, encoding: Encoding) -> float:
    frame = as_message(baseline_frame(size, encoding), encoding)
    return cpu_cost(lambda: plain_parse(frame))


def _swallowing(work: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        try:
            work()
        except (ProtocolError, ValueError, RecursionError, TypeError, UnicodeError):
            pass
        except Exception:  # msgpack's own exceptions (ExtraData, StackError, ...)
            pass

    return run


def decode_ratio(frame: Frame, encoding: Encoding) -> float:
    """CPU cost of ``decode(frame)`` over that of the larger plain parse (see above)."""
    bucket = max(MIN_BASELINE, min(LIMIT, -(-size_of(frame) // 1024) * 1024))
    decoding = cpu_cost(_swallowing(lambda: decode(frame, encoding)))
    plain = cpu_cost(_swallowing(lambda: plain_parse(frame)))
    return decoding / max(baseline_cost(bucket, encoding), plain)
