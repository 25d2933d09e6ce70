"""Work per input byte of the sans-I/O cores, from 1x to 8x the input: flat means linear.

Each core gets its worst realistic shape of input: one long SSE ``data`` line read 1 KiB at a
time; one long sentence (no end) coalesced with no time bound, fed 4 characters at a time; a
lagging ``coalesce`` cursor merging a long run of deltas; a long string inside tool arguments fed
in 8-character fragments to ``PartialJSON``; a long turn of deltas folded into a ``Snapshot``. Prints CPU ns per input character at 1x, 2x, 4x and
8x, and the 8x/1x ratio (1.0 is linear; a quadratic core shows ~8).

    python bench/linear.py [--base N]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from tokenwire.consumers.chunking import sentences
from tokenwire.core.snapshot import Snapshot
from tokenwire.events import Event, Start, TextDelta
from tokenwire.log.coalescing import coalesced
from tokenwire.wire.partial_json import PartialJSON
from tokenwire.wire.sse import SSEDecoder


def sse(n: int) -> None:
    body = b"data: " + b"x" * n + b"\n\n"
    d = SSEDecoder()
    for i in range(0, len(body), 1024):
        d.feed(body[i : i + 1024])


def coalescer(n: int) -> None:
    c = sentences(max_delay_s=None)
    text = ("lorem ipsum dolor sit amet " * (n // 27 + 1))[:n]
    for i in range(0, n, 4):
        c.feed(text[i : i + 4], 0.0)
    c.flush()


def cursor_coalesce(n: int) -> None:
    events = [TextDelta("tok ", stream_id="s", seq=i) for i in range(n // 4)]
    coalesced(events)


def partial_json(n: int) -> None:
    p = PartialJSON()
    text = '{"text": "' + "y" * n + '"}'
    for i in range(0, len(text), 8):
        p.feed(text[i : i + 8])


def snapshot(n: int) -> None:
    events: list[Event] = [Start(model="m", stream_id="s", seq=0)]
    events += [TextDelta("tok ", stream_id="s", seq=i) for i in range(1, n // 4)]
    Snapshot.of(events).to_json()


def cost(fn: Callable[[int], None], n: int) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        fn(n)
        best = min(best, time.process_time() - t0)
    return best / n * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=int, default=100_000, help="input size at 1x (characters)")
    args = parser.parse_args()
    print("| core | 1x ns/char | 2x | 4x | 8x | 8x / 1x |\n|---|---:|---:|---:|---:|---:|")
    cores: list[tuple[str, Callable[[int], None], int]] = [
        ("SSEDecoder, one long line in 1 KiB reads", sse, args.base * 10),
        ("sentences coalescer, one long sentence, 4-char feeds", coalescer, args.base),
        ("coalesce cursor, one run of deltas", cursor_coalesce, args.base * 4),
        ("PartialJSON, one long string, 8-char fragments", partial_json, args.base // 10),
        ("Snapshot, one long turn of deltas, folded and serialised", snapshot, args.base * 4),
    ]
    for name, fn, base in cores:
        row = [cost(fn, base * k) for k in (1, 2, 4, 8)]
        print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in row) + f" | {row[3] / row[0]:.2f} |")


if __name__ == "__main__":
    main()
