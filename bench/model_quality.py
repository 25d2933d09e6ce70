"""Which bundled model answers like an assistant: a fixed prompt set, a scored rubric.

Every bundled model (:mod:`tokenwire.providers.bundled`) answers the same prompts with the same
seeds, through ``LlamaCpp`` at its own settings (repetition penalty, end-of-turn texts), at the
default temperature. Each answer is scored on:

- **follows**: does what the prompt asks (a check per prompt: names a fruit, says Paris, …);
- **stops**: ends by itself (``finish_reason == "stop"``) within 256 tokens;
- **on topic**: mentions what the prompt is about;

and the tool demo's arithmetic (``tokenwire chat --tool-demo``): the calculator call's expression
evaluates to the right number, greedy and sampled, with the demo's schema pattern and without it.
Prints one table; the numbers go to docs/benchmarks.md.

    python bench/model_quality.py [--seeds N] [--models NAME ...]
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import tokenwire
from tokenwire.cli.view import CALCULATOR, calculate
from tokenwire.core.request import Message, Request, ToolSpec
from tokenwire.providers import LlamaCpp
from tokenwire.providers.bundled import MODELS


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def has(*options: str) -> Callable[[str], bool]:
    return lambda text: any(o in words(text) for o in options)


FRUITS = ("apple", "banana", "orange", "mango", "pear", "grape", "cherry", "strawberry", "peach", "kiwi", "lemon")
COLORS = ("red", "blue", "green", "yellow", "orange", "purple", "black", "white", "pink", "brown")


@dataclass(frozen=True)
class Case:
    prompt: str
    follows: Callable[[str], bool]
    topic: Callable[[str], bool]


CASES = [
    Case("Name a fruit.", lambda t: has(*FRUITS)(t) and len(words(t)) <= 25, has(*FRUITS, "fruit")),
    Case("What is the capital of France?", has("paris"), has("paris", "france")),
    Case("Answer with yes or no: is the sky blue?", lambda t: words(t)[:1] == ["yes"], has("yes", "sky", "blue")),
    Case(
        "Write one sentence about rivers.",
        lambda t: len(re.findall(r"[.!?](\s|$)", t.strip())) == 1,
        has("river", "rivers", "water"),
    ),
    Case("List three colors, separated by commas.", lambda t: sum(c in words(t) for c in COLORS) >= 3, has(*COLORS)),
    Case("Translate 'thank you' into French.", has("merci"), has("merci", "french", "thank")),
    Case(
        "Write a haiku about the sea.",
        lambda t: 2 <= len([x for x in t.strip().splitlines() if x.strip()]) <= 5,
        has("sea", "ocean", "waves", "wave", "tide", "shore"),
    ),
    Case("What is 2 + 2? Answer with the number only.", lambda t: t.strip().rstrip(".") == "4", has("4", "four")),
]
# What `chat --tool-demo` is asked, and the answer the calculator must give.
SUMS = {
    "What is 3 plus 4?": 7,
    "What is 12 times 7?": 84,
    "Compute 15 * 3 - 2": 43,
    "How much is 100 divided by 8?": 12.5,
    "What is 12 times (3 + 4)?": 84,
    "What is 2 to the power of 10?": 1024,
}
NO_PATTERN = ToolSpec(
    CALCULATOR.name,
    CALCULATOR.description,
    {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
)


def answers(model: LlamaCpp, seeds: int) -> dict[str, float]:
    follows = stops = topic = 0
    took: list[float] = []
    tokens: list[int] = []
    for case in CASES:
        for seed in range(1, seeds + 1):
            t0 = time.perf_counter()
            r = tokenwire.run_sync(model, Request([Message("user", case.prompt)], max_tokens=256, seed=seed))
            took.append(time.perf_counter() - t0)
            tokens.append(r.usage.output_tokens if r.usage else 0)
            stops += r.finish_reason == "stop"
            follows += case.follows(r.text)
            topic += case.topic(r.text)
    n = len(CASES) * seeds
    return {
        "follows": follows / n,
        "stops": stops / n,
        "topic": topic / n,
        "seconds": statistics.median(took),
        "tokens": statistics.median(tokens),
    }


def arithmetic(model: LlamaCpp, tool: ToolSpec, temperature: float, seeds: int) -> float:
    right = total = 0
    for prompt, value in SUMS.items():
        for seed in range(1, seeds + 1):
            ask = Request(
                [Message("user", prompt)], tools=[tool], tool_choice=tool.name, temperature=temperature, seed=seed
            )
            try:
                call = tokenwire.run_sync(model, ask).tool_calls[0]
                right += abs(calculate(str(call.args.get("expression", ""))) - value) < 1e-9
            except (tokenwire.errors.TokenwireError, IndexError, ValueError, ArithmeticError, SyntaxError):
                pass
            total += 1
            if temperature == 0:
                break  # greedy: one seed says it all
    return right / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    rows = []
    for name in args.models:
        with LlamaCpp.bundled(name) as model:
            model.load()
            row = answers(model, args.seeds)
            row["tool greedy"] = arithmetic(model, CALCULATOR, 0.0, 1)
            row["tool sampled"] = arithmetic(model, CALCULATOR, 0.8, args.seeds)
            row["tool greedy, no pattern"] = arithmetic(model, NO_PATTERN, 0.0, 1)
        rows.append((name, row))
    print(f"# {len(CASES)} prompts x {args.seeds} seeds, {len(SUMS)} sums; share of answers that pass")
    cols = list(rows[0][1])
    print("| model | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for name, row in rows:
        cells = [
            f"{v:.2f}" if k in ("seconds",) else f"{v:.0f}" if k == "tokens" else f"{v:.0%}" for k, v in row.items()
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
