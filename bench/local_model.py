"""The embedded model through raw llama-cpp-python and through tokenwire, in the same run.

Same model file, prompt, seed and sampling. Raw is ``Llama.create_completion(stream=True)`` in
the calling thread, the way most code streams from llama-cpp-python; tokenwire is ``LlamaCpp``
through the engine with 3 inline observers (a timing counter, a transcript, a UI-like text
buffer). Prints median TTFT and tokens/s and the tokenwire/raw ratios. Target: within 2% on both.

Each path runs in a process of its own, as an application runs it, and the processes alternate
(raw, tokenwire, raw, …) so drift hits both alike. Why not one process: llama.cpp's OpenMP
runtime keeps a thread team per calling thread and, once the teams together outnumber the cores,
makes every team sleep instead of spin between steps; with both paths in one process, each path
runs slower because the other one exists. ``--same-process`` measures that arrangement too.

    python bench/local_model.py [--procs N] [--runs N] [--tokens N] [--same-process]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import tokenwire
from tokenwire.core.request import Message, Request
from tokenwire.providers import LlamaCpp
from tokenwire.providers.chat_format import gemma_prompt
from tokenwire.providers.llama import quiet_stderr
from tokenwire.testing import Transcript

PROMPT = "Write a long story about a lighthouse keeper."
MODEL = "gemma-3-270m"  # a base model writes the whole budget: every run measures as many tokens
SEED = 1234
Sample = tuple[float, float, int]  # TTFT s, tokens/s after the first, deltas


def raw(llm: Any, n: int, repeat_penalty: float) -> Sample:
    prompt = gemma_prompt([Message("user", PROMPT)])
    llm.reset()
    t0 = time.perf_counter()
    first = last = 0.0
    count = 0
    for chunk in llm.create_completion(
        prompt, max_tokens=n, temperature=0.8, seed=SEED, repeat_penalty=repeat_penalty, stream=True, stop=[]
    ):
        if chunk["choices"][0]["text"]:
            last = time.perf_counter()
            first = first or last
            count += 1
    return first - t0, (count - 1) / (last - first), count


async def engine(provider: LlamaCpp, n: int) -> Sample:
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


def raw_model(provider: LlamaCpp) -> Any:
    """A ``llama_cpp.Llama`` of the same file and settings as ``provider``, loaded in this thread."""
    from llama_cpp import Llama

    with quiet_stderr(True):
        return Llama(
            model_path=str(provider.model_path), n_ctx=provider.n_ctx, n_threads=provider.n_threads, verbose=False
        )


def measure(path: str, provider: LlamaCpp, llm: Any, runs: int, tokens: int) -> list[Sample]:
    """``runs`` measured runs of one path after a short warm-up run."""
    if path == "raw":
        raw(llm, 8, provider.repeat_penalty)
        return [raw(llm, tokens, provider.repeat_penalty) for _ in range(runs)]
    asyncio.run(engine(provider, 8))
    return [asyncio.run(engine(provider, tokens)) for _ in range(runs)]


def child(path: str, runs: int, tokens: int) -> None:
    with LlamaCpp.bundled(MODEL) as provider:
        llm = raw_model(provider) if path == "raw" else None
        print(json.dumps(measure(path, provider, llm, runs, tokens)))


def report(title: str, results: dict[str, list[Sample]], threads: int) -> None:
    med = {k: (statistics.median(s[0] for s in v), statistics.median(s[1] for s in v)) for k, v in results.items()}
    counts = {k: sorted({s[2] for s in v}) for k, v in results.items()}
    print(f"# {title}, threads={threads}, deltas seen {counts}")
    print("| path | median TTFT ms | median tokens/s |")
    print("|---|---:|---:|")
    for k, (ttft, rate) in med.items():
        print(f"| {k} | {ttft * 1000:.1f} | {rate:.1f} |")
    (rt, rr), (tt, tr) = med["raw"], med["tokenwire"]
    print(f"| tokenwire / raw | {tt / rt:.3f} | {tr / rr:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--procs", type=int, default=6, help="processes per path")
    parser.add_argument("--runs", type=int, default=3, help="measured runs per process")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--same-process", action="store_true", help="also run both paths in this process")
    parser.add_argument("--child", choices=["raw", "tokenwire"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.runs, args.tokens)
        return
    threads = LlamaCpp.bundled(MODEL).n_threads
    results: dict[str, list[Sample]] = {"raw": [], "tokenwire": []}
    for _ in range(args.procs):
        for path in results:
            cmd = [sys.executable, __file__, "--child", path, "--runs", str(args.runs), "--tokens", str(args.tokens)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results[path] += [tuple(s) for s in json.loads(out.splitlines()[-1])]  # type: ignore[misc]
    report(
        f"{args.procs} processes per path, alternating, {args.runs} runs each, {args.tokens} tokens", results, threads
    )
    if args.same_process:
        with LlamaCpp.bundled(MODEL) as provider:
            llm = raw_model(provider)
            same: dict[str, list[Sample]] = {"raw": [], "tokenwire": []}
            for _ in range(args.procs):
                for path in same:
                    same[path] += measure(path, provider, llm, args.runs, args.tokens)
        print()
        report(f"both paths in one process, {args.procs * args.runs} runs each, {args.tokens} tokens", same, threads)


if __name__ == "__main__":
    main()
