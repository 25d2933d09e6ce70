"""RAG with progressive citations, over this project's own documentation, on the embedded model.

    python examples/rag.py "How does a client resume a stream?" [--format jsonl]

The question is ranked against every section of README.md and docs/*.md (BM25, a lexical ranker:
no embedding model to download); the best sections stream out as ``step`` events named
``citation`` — source, heading, score and snippet — before the model writes a word, so a UI shows
them at once. The cited sections are then fetched with the ``read_section`` tool — the agent
loop runs the calls in parallel, and their results join the same stream — and the model answers
from them. ``--format jsonl`` prints every event as one JSON line instead.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec

import tokenwire
from tokenwire.core.provider import Part, Provider
from tokenwire.core.request import Message, Request
from tokenwire.events import Event, Step, ToolCall
from tokenwire.providers import LlamaCpp
from tokenwire.testing import Transcript

ROOT = Path(__file__).resolve().parent.parent
WORD = re.compile(r"[a-z0-9]+")
STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "does",
        "do",
        "for",
        "from",
        "how",
        "i",
        "in",
        "is",
        "it",
        "of",
        "on",
        "or",
        "the",
        "this",
        "to",
        "what",
        "when",
        "with",
    ]
)


class Section(msgspec.Struct, frozen=True):
    source: str
    heading: str
    text: str


def load_corpus() -> list[Section]:
    """README.md and docs/*.md, one section per markdown heading."""
    sections = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        heading, lines, fenced = path.stem, [], False
        for line in [*path.read_text().splitlines(), "# end"]:
            if line.startswith("```"):
                fenced = not fenced
            if line.startswith("#") and not fenced:
                if "".join(lines).strip():
                    sections.append(Section(path.relative_to(ROOT).as_posix(), heading, "\n".join(lines).strip()))
                heading, lines = line.lstrip("# ").strip(), []
            else:
                lines.append(line)
    return sections


class BM25:
    """Okapi BM25 over the sections' words (k1 1.5, b 0.75)."""

    def __init__(self, sections: list[Section]):
        self.sections = sections
        self.docs = [Counter(WORD.findall((s.heading + " " + s.text).lower())) for s in sections]
        self.avg = sum(sum(d.values()) for d in self.docs) / max(len(self.docs), 1)
        df = Counter(w for d in self.docs for w in d)
        self.idf = {w: math.log(1 + (len(self.docs) - n + 0.5) / (n + 0.5)) for w, n in df.items()}

    def top(self, query: str, k: int = 3) -> list[tuple[float, Section]]:
        words = [w for w in WORD.findall(query.lower()) if w not in STOP]
        scored = []
        for doc, section in zip(self.docs, self.sections, strict=True):
            length = sum(doc.values())
            score = sum(
                self.idf.get(w, 0.0) * doc[w] * 2.5 / (doc[w] + 1.5 * (0.25 + 0.75 * length / self.avg))
                for w in words
                if w in doc
            )
            if score > 0:
                scored.append((score, section))
        return sorted(scored, key=lambda pair: -pair[0])[:k]


class Retrieve:
    """A provider that cites before it answers.

    First turn: ``citation`` steps for the best sections, then a ``read_section`` call per cited
    section — the agent loop runs the calls in parallel and their results join the stream. Next
    turn (the results are in the messages): the model answers from them.
    """

    def __init__(self, inner: Provider, index: BM25, k: int = 3):
        self.inner, self.index, self.k = inner, index, k
        self.model = str(getattr(inner, "model", "rag"))  # the model name start reports

    async def stream(self, request: Request) -> AsyncIterator[Part]:
        if any(m.role == "tool" for m in request.messages):  # the sections were fetched: answer
            question = next(m.content for m in request.messages if m.role == "user")
            sources = "\n\n".join(m.content[:700] for m in request.messages if m.role == "tool")
            system = Message("system", f"Answer briefly from these sources:\n\n{sources}")
            async for part in self.inner.stream(
                msgspec.structs.replace(request, messages=[system, Message("user", question)], tools=[])
            ):
                yield part
            return
        question = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        hits = self.index.top(question, self.k)
        for score, section in hits:
            detail = {"source": section.source, "heading": section.heading, "score": round(score, 3)}
            yield Step(name="citation", status="finished", detail={**detail, "snippet": section.text[:240]})
        for i, (_, section) in enumerate(hits):
            yield ToolCall(call_id=f"read-{i}", name="read_section", args={"heading": section.heading})


def read_section_tool(index: BM25) -> tokenwire.Tool:
    @tokenwire.tool
    def read_section(heading: str) -> str:
        """The full text of the documentation section with this heading."""
        for section in index.sections:
            if section.heading.lower() == heading.lower():
                return section.text[:2000]
        return f"no section named {heading!r}"

    return read_section


def show(event: Event) -> None:
    if isinstance(event, Step) and event.name == "citation":
        d = event.detail
        print(f"[{d['source']} § {d['heading']} ({d['score']})]", flush=True)
    elif isinstance(event, tokenwire.events.TextDelta):
        print(event.text, end="", flush=True)
    elif isinstance(event, tokenwire.events.ToolResult):
        print(f"[read_section -> {len(str(event.result))} characters]", flush=True)
    elif isinstance(event, tokenwire.events.Done):
        print()


async def main(question: str, fmt: str) -> None:
    index = BM25(load_corpus())
    observers: list[object] = [Transcript(sys.stdout.buffer)] if fmt == "jsonl" else [show]
    request = Request([Message("user", question)], seed=2, max_tokens=120, temperature=0.2)
    with LlamaCpp.default() as model:
        model.load()  # before the stream: llama.cpp silences stdout while it loads
        await tokenwire.generate(
            Retrieve(model, index),
            request,
            tools=[read_section_tool(index)],
            tool_options=tokenwire.ToolOptions(max_steps=2),
            observers=observers,
        ).wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("question", nargs="?", default="How does a client resume a stream after a disconnect?")
    parser.add_argument("--format", choices=["text", "jsonl"], default="text")
    args = parser.parse_args()
    asyncio.run(main(args.question, args.format))
