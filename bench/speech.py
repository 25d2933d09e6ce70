"""Time to first audio: speaking sentence by sentence while the answer streams, against
synthesising the whole answer once it is complete.

The embedded model answers (seeded, ``--tokens`` at most); :class:`tokenwire.consumers.speech.Speech` with
espeak-ng speaks it. Both times run from the first text delta: streaming, to the first sentence's
audio; at the end, to the end of the stream plus the synthesis of the whole text.

    python bench/speech.py [--tokens 160] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import tokenwire
from tokenwire.consumers.speech import EspeakNG, Speech
from tokenwire.core.request import Message, Request
from tokenwire.events import Event, TextDelta
from tokenwire.providers import LlamaCpp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=160)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    engine = EspeakNG()
    streaming, at_end, sentences = [], [], []
    with LlamaCpp.default() as model:
        model.load()
        for seed in range(args.runs):
            first: list[float] = []

            def on_event(event: Event, first: list[float] = first) -> None:
                if isinstance(event, TextDelta) and not first:
                    first.append(time.monotonic())

            speech = Speech(lambda chunk: None, engine=engine)
            prompt = "Tell me about rivers, in a few short sentences."
            request = Request([Message("user", prompt)], max_tokens=args.tokens, seed=seed)
            response = tokenwire.run_sync(model, request, observers=[on_event, speech])
            ended = time.monotonic()
            speech.wait(60)
            t0 = time.monotonic()
            engine.synthesize(response.text)
            whole_synthesis = time.monotonic() - t0
            if not speech.spoken or not first:
                continue
            streaming.append(speech.spoken[0].latency_s)
            at_end.append(ended - first[0] + whole_synthesis)
            sentences.append(len(speech.spoken))
    s, e = statistics.median(streaming), statistics.median(at_end)
    print(
        f"# embedded model, {args.tokens} tokens at most, {args.runs} answers of {statistics.mean(sentences):.1f} sentences"
    )
    print("| speech | time to first audio (median) |\n|---|---:|")
    print(f"| sentence by sentence while streaming | {s * 1000:.0f} ms |")
    print(f"| the whole answer once complete | {e * 1000:.0f} ms ({e / s:.1f}x) |")


if __name__ == "__main__":
    main()
