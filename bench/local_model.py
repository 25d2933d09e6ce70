"""The embedded model through raw llama-cpp-python and through tokenwire, in the same run.

Same model instance, prompt, seed and sampling; runs interleaved (raw, tokenwire, raw, …) so
drift hits both alike. Raw is ``Llama.create_completion(stream=True)``, the way most code
streams from llama-cpp-python; tokenwire is ``LlamaCpp`` through the engine with 3 inline
observers (a timing counter, a transcript, a UI-like text buffer). Prints median TTFT and tokens/s and
the tokenwire/raw ratios. Target: within 2% on both.

    python bench/local_model.py [--reps N] [--tokens N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import tokenwire
from tokenwire.providers import LlamaCpp
from tokenwire.providers.chat_format import gemma_prompt
from tokenwire.request import Message, Request
from tokenwire.testing import Transcript

PROMPT = "Write a long story about a lighthouse keeper."
SEED = 1234


def raw(llm: Any, n: int) -> tuple[float, float, int]:
    prompt = gemma_prompt([Message("user", PROMPT)])
    llm.reset()
    t0 = time.perf_counter()
    first = last = 0.0
    count = 0
    for chunk in llm.create_completion(prompt, max_tokens=n, temperature=0.8, seed=SEED, stream=True, stop=[]):
        if chunk["choices"][0]["text"]:
            last = time.perf_counter()
            first = first or last
            count += 1
    return first - t0, (count - 1) / (last - first), count


async def engine(provider: LlamaCpp, n: int) -> tuple[float, float, int]:
    stamps: list[float] = []

    class Counter:
        def on_delta(self, event: Any) -> None:
            stamps.append(time.perf_counter())

    shown: list[str] = []

    def ui(event: Any) -> None:
        if event.type == "text.delta":
            shown.append(event.text)

    request = Request([Message("user", PROMPT)], max_tokens=n, temperature=0.8, seed=SEED)
    t0 = time.perf_counter()
    await tokenwire.generate(provider, request, observers=[Counter(), Transcript(), ui]).wait()
    return stamps[0] - t0, (len(stamps) - 1) / (stamps[-1] - stamps[0]), len(stamps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    provider = LlamaCpp.default()
    llm = provider.load()
    raw(llm, 8)  # warm-up both paths
    asyncio.run(engine(provider, 8))
    results: dict[str, list[tuple[float, float, int]]] = {"raw": [], "tokenwire": []}
    for _ in range(args.reps):
        results["raw"].append(raw(llm, args.tokens))
        results["tokenwire"].append(asyncio.run(engine(provider, args.tokens)))
    med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in results.items()}
    counts = {k: sorted({r[2] for r in v}) for k, v in results.items()}
    print(f"# {args.reps} interleaved reps, {args.tokens} tokens, threads={provider.n_threads}, deltas seen {counts}")
    print("| path | median TTFT ms | median tokens/s |")
    print("|---|---:|---:|")
    for k, (ttft, rate) in med.items():
        print(f"| {k} | {ttft * 1000:.1f} | {rate:.1f} |")
    (rt, rr), (tt, tr) = med["raw"], med["tokenwire"]
    print(f"| tokenwire / raw | {tt / rt:.3f} | {tr / rr:.3f} |")
    provider.close()


if __name__ == "__main__":
    main()
