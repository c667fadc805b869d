"""A Sinal node that can tell where its memory goes: `python -m bench.memprobe`.

The same node as `sinal serve` (settings from the environment, `Node` of node/wiring.py),
started with `tracemalloc` tracing (SINAL_MEMPROBE_FRAMES frames per allocation, 1 by
default). Each SIGUSR1 writes, into SINAL_MEMPROBE_DIR, `snapshot-<k>.pickle` (the
tracemalloc snapshot) and `census-<k>.json` (live GC-tracked objects by type: count and
`sys.getsizeof` bytes, after a full collection), then `done-<k>`. bench/memory.py diffs two
of them to say how many bytes one idle connection costs and where they are.

Tracing costs memory of its own, so RSS is measured on a plain `sinal serve` (the
connections part), never here.
"""

from __future__ import annotations

import gc
import json
import os
import pickle
import signal
import sys
import tracemalloc
from collections import Counter
from pathlib import Path

import trio


def census() -> dict[str, list[int]]:
    """Live GC-tracked objects by type: {qualified type name: [count, bytes]}."""
    gc.collect()
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for obj in gc.get_objects():
        kind = type(obj)
        name = f"{kind.__module__}.{kind.__qualname__}"
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj)
    return {name: [counts[name], sizes[name]] for name in counts}


def write_snapshot(directory: Path, k: int) -> None:
    data = census()
    snapshot = tracemalloc.take_snapshot()
    with (directory / f"snapshot-{k}.pickle").open("wb") as handle:
        pickle.dump(snapshot, handle)
    (directory / f"census-{k}.json").write_text(json.dumps(data))
    (directory / f"done-{k}").write_text("ok")


async def serve() -> None:
    from sinal.node.config import load_config
    from sinal.node.log import setup_logging
    from sinal.node.wiring import Node, prepare_database

    config = load_config(dict(os.environ), env_file=None)
    setup_logging(config)
    prepared = prepare_database(config, seed_demo_data=False)
    directory = Path(os.environ["SINAL_MEMPROBE_DIR"])
    try:
        node = Node(config, prepared.url)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            with trio.open_signal_receiver(signal.SIGUSR1, signal.SIGTERM,
                                           signal.SIGINT) as signals:
                k = 0
                async for signum in signals:
                    if signum != signal.SIGUSR1:
                        break
                    write_snapshot(directory, k)
                    k += 1
            nursery.cancel_scope.cancel()
    finally:
        prepared.stop()


def main() -> None:
    tracemalloc.start(int(os.environ.get("SINAL_MEMPROBE_FRAMES", "1")))
    trio.run(serve)


if __name__ == "__main__":
    main()
