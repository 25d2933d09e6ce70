"""Cost of each wire format's encoder per event, on top of the native SSE frame.

One stream of text deltas (the common event) encoded by the native SSE encoder and by each other
format's encoder; CPU µs per event, best of 5.

    python bench/wire_formats.py [--events N]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from tokenwire.events import Done, Event, Start, TextDelta
from tokenwire.wire.native import sse_frame
from tokenwire.wire.openai_chat import ChatCompletionChunks
from tokenwire.wire.openai_responses import ResponseEvents


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
    stream = events(parser.parse_args().events)

    def native(evs: list[Event]) -> None:
        for e in evs:
            sse_frame(e)

    def openai_chat(evs: list[Event]) -> None:
        enc = ChatCompletionChunks("chatcmpl-1", model="m", created=0, include_usage=True)
        for e in evs:
            enc.feed(e)

    base = cost(native, stream)
    print("| encoder | µs/event | over native |\n|---|---:|---:|")
    print(f"| native SSE | {base:.2f} | |")
    def openai_responses(evs: list[Event]) -> None:
        enc = ResponseEvents("resp_1", model="m", created_at=0)
        for e in evs:
            enc.feed(e)

    chat = cost(openai_chat, stream)
    print(f"| OpenAI chat.completion.chunk | {chat:.2f} | {chat - base:+.2f} |")
    responses = cost(openai_responses, stream)
    print(f"| OpenAI Responses events | {responses:.2f} | {responses - base:+.2f} |")


if __name__ == "__main__":
    main()
