"""The embedded model's side of a generation, in its worker thread: the hand-off of parts to the
stream (bounded credits, thread-safe), the sampler settings, and one exclusive generation (text,
or a tool call under a JSON-schema grammar) run with the model lock held. :class:`LlamaCpp`
(:mod:`tokenwire.providers.llama`) drives it; nothing here touches the event loop but the hand-off.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import random
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

from tokenwire.core.provider import Part
from tokenwire.core.request import Request, ToolSpec
from tokenwire.errors import ProviderError
from tokenwire.events import Done, ToolCall, ToolCallDelta, ToolCallStart, Usage
from tokenwire.providers.chat_format import TOOL_CALL_PREFIX
from tokenwire.providers.stop import StopMatcher

__all__ = [
    "END",
    "EXITING",
    "TOKEN_WINDOW",
    "Emit",
    "End",
    "Failure",
    "Generation",
    "GenerationHost",
    "Handoff",
    "end_of_generation",
    "sampling",
]

Emit = Callable[[Part], None]

# Set when the interpreter starts to exit: generations stop within a token and their streams end
# with error(code="shutdown"), so exiting never waits for a whole answer (the worker thread is
# joined at exit, like every ThreadPoolExecutor thread).
EXITING = threading.Event()


class GenerationHost(Protocol):
    """What a generation needs of its provider (:class:`~tokenwire.providers.llama.LlamaCpp`)."""

    n_ctx: int
    repeat_penalty: float
    max_tokens: int | None

    @property
    def stops(self) -> tuple[str, ...]: ...

    def format_prompt(self, request: Request) -> str: ...


class Handoff:
    """One generation's parts, from the worker thread to its stream: a queue fed thread-safely,
    ``credits`` bounding how far the worker may run ahead of the reader."""

    def __init__(self, credits: threading.Semaphore):
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.cancelled = threading.Event()
        self.credits = credits
        self.finished = False
        """True once the end (or a failure) was read."""

    def post(self, item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening any more
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def end(self, exc: BaseException | None) -> None:
        self.post(END if exc is None else Failure(exc))

    async def parts(self) -> AsyncIterator[Any]:
        """The parts, a credit returned for each, until the end (a failure is raised)."""
        while True:
            item = await self.queue.get()
            if item is END:
                self.finished = True
                return
            if isinstance(item, Failure):
                self.finished = True
                raise item.exc
            self.credits.release()
            yield item


def sampling(request: Request, provider: GenerationHost) -> tuple[dict[str, Any], int]:
    """The sampler settings and seed of a request (the same on both paths)."""
    extra = request.extra
    sampling: dict[str, Any] = {
        "temp": 0.8 if request.temperature is None else request.temperature,
        "top_k": extra.get("top_k", 40),
        "top_p": extra.get("top_p", 0.95),
        "min_p": extra.get("min_p", 0.05),
        "repeat_penalty": extra.get("repeat_penalty", provider.repeat_penalty),
    }
    return sampling, request.seed if request.seed is not None else random.randrange(2**31)


def end_of_generation(llm: Any) -> Callable[[int], bool]:
    """Whether a token ends the generation (any end-of-generation token of the vocabulary)."""
    import llama_cpp

    vocab = getattr(getattr(llm, "_model", None), "vocab", None)
    is_eog = getattr(llama_cpp, "llama_vocab_is_eog", None)
    eos = llm.token_eos()
    if vocab is not None and is_eog is not None:
        return lambda t: bool(is_eog(vocab, t))
    return lambda t: bool(t == eos)


TOKEN_WINDOW = 256
"""Tokens a generation may run ahead of its reader before the worker waits."""


class End:
    pass


END = End()


class Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class Generation:
    """One request's generation, run in the worker thread with the model lock held."""

    def __init__(self, provider: GenerationHost, llm: Any, request: Request, emit: Emit, cancelled: threading.Event):
        import llama_cpp

        self.llama_cpp: Any = llama_cpp
        self.provider = provider
        self.llm = llm
        self.request = request
        self.emit = emit
        self.cancelled = cancelled
        self.prompt = provider.format_prompt(request)
        self.output_tokens = 0
        self.sampling, self.seed = sampling(request, provider)
        self.is_eog = end_of_generation(llm)

    def tokenize(self, text: str) -> list[int]:
        tokens: list[int] = self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        return tokens

    def run(self) -> None:
        # Same seed, same text: start from an empty KV cache. Reusing a previous prompt's cache
        # changes the batch shapes, and with them the logits' last bits and the sampled tokens.
        self.llm.reset()
        request = self.request
        prompt_tokens = self.tokenize(self.prompt)
        # llama.cpp may pad the context it allocates; llama-cpp-python's buffers keep the size asked for.
        n_ctx = min(self.llm.n_ctx(), self.provider.n_ctx)
        if len(prompt_tokens) >= n_ctx:
            raise ProviderError(
                f"the prompt is {len(prompt_tokens)} tokens and the context window is {n_ctx}; "
                "shorten the conversation or create the provider with a larger n_ctx",
                code="context_length_exceeded",
            )
        self.budget = min(request.max_tokens or self.provider.max_tokens or n_ctx, n_ctx - len(prompt_tokens))
        tools = request.tools if request.tool_choice != "none" else []
        finish = "stop"
        if tools and request.tool_choice != "auto":
            self.tool_call(tools, request.tool_choice)
        elif tools:
            first, _ = self.generate(self.prompt, grammar=self.grammar('root ::= "{" | [^{]'), budget=1)
            if first.startswith("{"):
                self.tool_call(tools, "required")
            else:
                if first:
                    self.emit(first)
                finish = self.answer(self.prompt + first)
        else:
            finish = self.answer(self.prompt, prompt_tokens)
        self.emit(Usage(input_tokens=len(prompt_tokens), output_tokens=self.output_tokens))
        if finish == "length":
            self.emit(Done(finish_reason="length"))

    def answer(self, prompt: str, tokens: list[int] | None = None) -> str:
        stops = (*self.request.stop, *self.provider.stops)
        _, finish = self.generate(prompt, tokens=tokens, stops=stops, on_text=self.emit)
        return finish

    def tool_call(self, tools: Sequence[ToolSpec], choice: str) -> None:
        by_name = {t.name: t for t in tools}
        if choice not in ("auto", "required") and choice not in by_name:
            raise ProviderError(
                f"tool_choice names tool {choice!r}, which is not among the request's tools {sorted(by_name)}",
                code="invalid_request",
            )
        prefix = self.prompt + TOOL_CALL_PREFIX
        if choice in by_name:
            name = choice
        elif len(by_name) == 1:
            name = next(iter(by_name))
        else:
            alternatives = " | ".join(json.dumps(n) for n in by_name)
            name, _ = self.generate(prefix, grammar=self.grammar(f"root ::= {alternatives}"), budget=64)
            if name not in by_name:
                raise ProviderError(f"the model named no known tool (got {name!r})", code="invalid_tool_call")
        call_id = f"call_{uuid.uuid4().hex[:12]}"
        self.emit(ToolCallStart(call_id=call_id, name=name))
        schema = by_name[name].parameters
        try:
            grammar = self.llama_cpp.LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        except Exception:  # a schema llama.cpp's converter does not support: any JSON object, validated later
            grammar = self.grammar(self.llama_cpp.llama_grammar.JSON_GBNF)
        parts: list[str] = []

        def on_args(text: str) -> None:
            parts.append(text)
            self.emit(ToolCallDelta(call_id=call_id, args_delta=text))

        args_prompt = f'{prefix}{name}", "arguments": '
        self.generate(args_prompt, grammar=grammar, on_text=on_args)
        if self.cancelled.is_set() or EXITING.is_set():
            return
        raw = "".join(parts)
        try:
            args = json.loads(raw)
        except ValueError:
            raise ProviderError(
                f"the model's arguments for tool {name!r} are not complete JSON ({raw[:80]!r}); "
                "raise max_tokens or use a larger model",
                code="invalid_tool_call",
            ) from None
        if not isinstance(args, dict):
            raise ProviderError(
                f"tool {name!r} arguments must be a JSON object, got {raw[:80]!r}", code="invalid_tool_call"
            )
        self.emit(ToolCall(call_id=call_id, name=name, args=args))

    def grammar(self, gbnf: str) -> Any:
        return self.llama_cpp.LlamaGrammar.from_string(gbnf, verbose=False)

    def generate(
        self,
        prompt: str,
        *,
        tokens: list[int] | None = None,
        grammar: Any = None,
        stops: Sequence[str] = (),
        budget: int | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> tuple[str, str]:
        """Generate from ``prompt`` (or its ``tokens``, when already tokenized); returns (all text,
        finish reason ``stop``/``length``/``cancelled``)."""
        llm = self.llm
        limit = (
            min(budget, self.budget - self.output_tokens) if budget is not None else self.budget - self.output_tokens
        )
        if limit <= 0:
            return "", "length"
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        matcher = StopMatcher(stops)
        out: list[str] = []

        def push(piece: str) -> bool:
            text, hit = matcher.feed(piece)
            if text:
                out.append(text)
                if on_text is not None:
                    on_text(text)
            return hit

        llm.set_seed(self.seed)
        finish = "stop"
        n = 0
        for token in llm.generate(tokens or self.tokenize(prompt), grammar=grammar, **self.sampling):
            if self.is_eog(token):
                break
            n += 1
            piece = decoder.decode(llm.detokenize([token]))
            if piece and push(piece):
                break
            if self.cancelled.is_set() or EXITING.is_set():
                finish = "cancelled"
                break
            if n >= limit:
                finish = "length"
                break
        self.output_tokens += n
        tail = decoder.decode(b"", final=True)
        if tail:
            push(tail)
        rest = matcher.flush()
        if rest:
            out.append(rest)
            if on_text is not None:
                on_text(rest)
        return "".join(out), finish
