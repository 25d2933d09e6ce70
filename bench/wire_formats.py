"""Cost of each wire format's encoder per event, on top of the native SSE frame, and fan-out.

One stream of text deltas (the common event) encoded by the native SSE encoder and by each other
format's encoder through a :class:`~tokenwire.wire.SharedReader` (what the server runs per
reader); CPU µs per event, best of 5. Then one stream read by ``--readers`` readers of one format:
sharing the encoder (the server) against an encoder per reader.

    python bench/wire_formats.py [--events N] [--readers R]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from tokenwire.events import Done, Event, Start, TextDelta
from tokenwire.wire import FrameCache
from tokenwire.wire.agui import AGUIEvents
from tokenwire.wire.ai_sdk import UIMessageStream
from tokenwire.wire.encoder import StreamEncoder
from tokenwire.wire.native import sse_frame
from tokenwire.wire.openai_chat import ChatCompletionChunks
from tokenwire.wire.openai_responses import ResponseEvents

FORMATS: dict[str, Callable[[], StreamEncoder]] = {
    "OpenAI chat.completion.chunk": lambda: ChatCompletionChunks(
        "chatcmpl-1", model="m", created=0, include_usage=True
    ),
    "OpenAI Responses events": lambda: ResponseEvents("resp_1", model="m", created_at=0),
    # As the server makes it: with the request's messages, kept so a turn asked again can be taken back.
    "AG-UI events": lambda: AGUIEvents("thread-1", "run-1", messages=[{"id": "u1", "role": "user", "content": "hi"}]),
    "AI SDK UI message stream": lambda: UIMessageStream("msg-1"),
}


def events(n: int) -> list[Event]:
    deltas: list[Event] = [TextDelta(f"tok{i} ", stream_id="s", seq=i + 1, ts=1.0) for i in range(n)]
    return [Start(model="m", stream_id="s", seq=0), *deltas, Done(stream_id="s", seq=n + 1)]


def cost(encode_all: Callable[[list[Event]], object], stream: list[Event]) -> float:
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        encode_all(stream)
        best = min(best, time.process_time() - t0)
    return best / len(stream) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--readers", type=int, default=100)
    args = parser.parse_args()
    stream = events(args.events)

    def native(evs: list[Event]) -> None:
        for e in evs:
            sse_frame(e)

    def one_reader(make: Callable[[], StreamEncoder]) -> Callable[[list[Event]], None]:
        def run(evs: list[Event]) -> None:
            reader = FrameCache().reader("s", "f", make)
            for e in evs:
                reader.frame(e)

        return run

    base = cost(native, stream)
    print("| encoder (one reader) | µs/event | over native |\n|---|---:|---:|")
    print(f"| native SSE | {base:.2f} | |")
    for name, make in FORMATS.items():
        us = cost(one_reader(make), stream)
        print(f"| {name} | {us:.2f} | {us - base:+.2f} |")

    fanout = stream[: max(2, len(stream) // 10)]
    make = FORMATS["AI SDK UI message stream"]

    def shared(evs: list[Event]) -> None:
        cache = FrameCache()
        readers = [cache.reader("s", "ai_sdk", make) for _ in range(args.readers)]
        for e in evs:
            for r in readers:
                r.frame(e)

    def private(evs: list[Event]) -> None:
        encoders = [make() for _ in range(args.readers)]
        for e in evs:
            for enc in encoders:
                enc.feed(e)

    s, p = cost(shared, fanout), cost(private, fanout)
    print(f"\n| {args.readers} readers of one AI SDK stream | µs per event (all readers) |\n|---|---:|")
    print(f"| shared encoder (the server) | {s:.1f} |\n| an encoder per reader | {p:.1f} ({p / s:.1f}x) |")


if __name__ == "__main__":
    main()
