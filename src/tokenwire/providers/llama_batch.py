"""Continuous batching for the embedded model: concurrent generations share one llama.cpp context.

One :class:`Batcher` per :class:`~tokenwire.providers.llama.LlamaCpp` (``parallel > 1``) drives a
context of ``parallel`` sequences on the provider's worker thread: every step is one
``llama_decode`` carrying the next token of each running sequence plus a chunk of the prompt of
any sequence still reading its prompt. A second user's first token therefore waits for one step
and its own prompt, not for the first user's whole answer; and one decode of several tokens costs
much less than several decodes of one (the weights are read once per step).

Sequences beyond ``parallel`` wait in a bounded queue (the caller learns its position); a reader
that falls behind pauses its own sequence only (the others keep going); a cancelled sequence
leaves at the next step. Text generation only: requests with tools take the provider's exclusive
path (grammar-constrained calls), between batches.
"""

from __future__ import annotations

import codecs
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from tokenwire.errors import ProviderError
from tokenwire.events import Done, Step, Usage
from tokenwire.providers.stop import StopMatcher

__all__ = ["Batcher", "BatchSequence"]


class BatchSequence:
    """One generation in the batch (its state lives on the worker thread once admitted)."""

    def __init__(
        self,
        tokenize: Callable[[], list[int]],
        *,
        max_tokens: int | None,
        stops: tuple[str, ...],
        sampling: dict[str, Any],
        seed: int,
        emit: Callable[[Any, bool], bool],
        finish: Callable[[BaseException | None], None],
        cancelled: threading.Event,
    ):
        self.tokenize = tokenize
        """The prompt's tokens (called on the worker thread, where the model is)."""
        self.prompt: list[int] = []
        self.max_tokens = max_tokens
        self.budget = 0
        self.matcher = StopMatcher(stops)
        self.sampling = sampling
        self.seed = seed
        self.emit = emit
        """``emit(part, force)``: hand a part to the reader; False when the reader is too far behind
        (try again later); ``force`` for the end, which is always accepted."""
        self.queued = False
        self.finish = finish
        self.cancelled = cancelled
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.seq_id = -1
        self.n_past = 0
        self.next: int | None = None  # the sampled token to feed at the next step
        self.held: list[Any] = []  # parts the reader had no room for yet
        self.output_tokens = 0
        self.sampler: Any = None
        self.index = -1  # its logits' row in the current batch


class Batcher:
    """Continuous batching over one llama.cpp context (see the module doc). Thread use: ``submit``
    from any thread; ``run`` on the provider's worker thread only."""

    def __init__(self, llm: Any, *, parallel: int, n_ctx: int, n_threads: int, max_queue: int, n_batch: int = 512):
        self.llm = llm
        self.parallel = parallel
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.max_queue = max_queue
        self.n_batch = n_batch
        self._lock = threading.Lock()
        self._queue: deque[BatchSequence] = deque()
        self._active = 0
        self.running = False
        """True while ``run`` is (or is about to be) on the worker thread."""
        self._ctx: Any = None
        self._batch: Any = None

    # -- any thread ------------------------------------------------------------------------------

    def load(self) -> int:
        """Sequences generating or waiting now."""
        with self._lock:
            return self._active + len(self._queue)

    def full(self) -> bool:
        """True when one more sequence could not even wait (the queue is at ``max_queue``)."""
        with self._lock:
            return self._active + len(self._queue) >= self.parallel + self.max_queue

    def submit(self, seq: BatchSequence) -> tuple[int, bool]:
        """Queue a sequence: (its position among those waiting, 0 when it starts at the next step;
        whether the caller must start :meth:`run` on the worker thread)."""
        with self._lock:
            self._queue.append(seq)
            position = max(0, self._active + len(self._queue) - self.parallel)
            seq.queued = position > 0
            start = not self.running
            self.running = True
            return position, start

    # -- the worker thread -----------------------------------------------------------------------

    def context(self) -> Any:
        """The batching context (made on first use, on the worker thread)."""
        if self._ctx is None:
            import llama_cpp
            from llama_cpp import _internals

            params = llama_cpp.llama_context_default_params()
            params.n_ctx = self.n_ctx * self.parallel
            params.n_batch = params.n_ubatch = self.n_batch
            params.n_seq_max = self.parallel
            params.n_threads = params.n_threads_batch = self.n_threads
            params.no_perf = True
            params.swa_full = False  # a sliding-window cache of the window, not of the whole context
            self._ctx = _internals.LlamaContext(model=self.llm._model, params=params, verbose=False)
            self._batch = _internals.LlamaBatch(n_tokens=self.n_batch, embd=0, n_seq_max=1, verbose=False)
        return self._ctx

    def close(self) -> None:
        """Free the context and the batch (on the worker thread, before the model is freed)."""
        if self._ctx is not None:
            self._ctx.close()
            self._batch.close()
            self._ctx = self._batch = None
        self.llm = None

    def _sampler(self, seq: BatchSequence) -> Any:
        from llama_cpp import _internals

        s = seq.sampling
        internals: Any = _internals  # llama-cpp-python's wrappers are partly untyped
        sampler = internals.LlamaSampler()
        sampler.add_penalties(self.llm.n_vocab(), 64, s["repeat_penalty"], 0.0, 0.0)
        if s["temp"] <= 0:
            sampler.add_greedy()
        else:
            sampler.add_top_k(s["top_k"])
            sampler.add_top_p(s["top_p"], 1)
            sampler.add_min_p(s["min_p"], 1)
            sampler.add_temp(s["temp"])
            sampler.add_dist(seq.seed)
        return sampler

    def run(self, is_eog: Callable[[int], bool], stopping: Callable[[], bool]) -> None:
        """Generate until no sequence is running or waiting (then ``running`` turns False)."""
        import llama_cpp

        ctx = self.context()
        memory = llama_cpp.llama_get_memory(ctx.ctx)
        batch = self._batch
        slots: list[BatchSequence | None] = [None] * self.parallel
        prefill: deque[BatchSequence] = deque()
        try:
            while True:
                admitted = []
                with self._lock:
                    for i, slot in enumerate(slots):
                        if slot is None and self._queue:
                            seq = self._queue.popleft()
                            seq.seq_id = i
                            slots[i] = seq
                            self._active += 1
                            admitted.append(seq)
                    if not any(slots):
                        self.running = False
                        return
                for seq in admitted:
                    self._admit(seq, slots, prefill, memory)
                exiting = stopping()
                for running in list(slots):
                    if running is not None and (running.cancelled.is_set() or exiting):
                        self._end(running, slots, prefill, memory, None)
                batch.reset()
                b = batch.batch
                n = 0
                for running in slots:  # the next token of every running sequence whose reader has room
                    if running is None or running.next is None or not self._flush(running):
                        continue
                    b.token[n], b.pos[n], b.n_seq_id[n], b.logits[n] = running.next, running.n_past, 1, True
                    b.seq_id[n][0] = running.seq_id
                    running.index = n
                    running.n_past += 1
                    running.next = None
                    n += 1
                while prefill and n < self.n_batch:  # then as much prompt as fits
                    seq = prefill[0]
                    take = seq.prompt[seq.n_past : seq.n_past + self.n_batch - n]
                    for t in take:
                        b.token[n], b.pos[n], b.n_seq_id[n], b.logits[n] = t, seq.n_past, 1, False
                        b.seq_id[n][0] = seq.seq_id
                        seq.n_past += 1
                        n += 1
                    if seq.n_past == len(seq.prompt):
                        b.logits[n - 1] = True
                        seq.index = n - 1
                        prefill.popleft()
                if n == 0:
                    threading.Event().wait(0.005)  # every reader is behind: let them catch up
                    continue
                b.n_tokens = n
                ctx.decode(batch)
                for running in list(slots):
                    if running is None or running.index < 0:
                        continue
                    index, running.index = running.index, -1
                    token = running.sampler.sample(ctx, index)
                    self._step(running, token, is_eog, slots, prefill, memory)
        except BaseException as exc:
            for running in slots:
                if running is not None:
                    running.finish(exc)
            with self._lock:
                for seq in self._queue:
                    seq.finish(exc)
                self._queue.clear()
                self._active = 0
                self.running = False
            llama_cpp.llama_memory_clear(memory, True)
            raise

    def _admit(
        self, seq: BatchSequence, slots: list[BatchSequence | None], prefill: deque[BatchSequence], memory: Any
    ) -> None:
        if seq.queued:
            seq.emit(Step(name="queued", status="finished"), True)
        try:
            seq.prompt = seq.tokenize()
        except BaseException as exc:
            self._release(seq, slots, prefill, memory)
            seq.finish(exc)
            return
        if len(seq.prompt) >= self.n_ctx:
            self._release(seq, slots, prefill, memory)
            seq.finish(
                ProviderError(
                    f"the prompt is {len(seq.prompt)} tokens and the context window is {self.n_ctx}; "
                    "shorten the conversation or create the provider with a larger n_ctx",
                    code="context_length_exceeded",
                )
            )
            return
        seq.budget = min(seq.max_tokens or self.n_ctx, self.n_ctx - len(seq.prompt))
        seq.sampler = self._sampler(seq)
        prefill.append(seq)

    def _flush(self, seq: BatchSequence) -> bool:
        """Hand held parts to the reader; True when it took them all (the sequence may go on)."""
        while seq.held:
            if not seq.emit(seq.held[0], False):
                return False
            seq.held.pop(0)
        return True

    def _step(
        self,
        seq: BatchSequence,
        token: int,
        is_eog: Callable[[int], bool],
        slots: list[BatchSequence | None],
        prefill: deque[BatchSequence],
        memory: Any,
    ) -> None:
        if is_eog(token):
            self._end(seq, slots, prefill, memory, "stop")
            return
        seq.output_tokens += 1
        piece = seq.decoder.decode(self.llm.detokenize([token]))
        if piece:
            text, hit = seq.matcher.feed(piece)
            if text:
                seq.held.append(text)
            if hit:
                self._end(seq, slots, prefill, memory, "stop")
                return
        if seq.output_tokens >= seq.budget or seq.n_past + 1 >= self.n_ctx:
            self._end(seq, slots, prefill, memory, "length")
            return
        seq.next = token

    def _end(
        self,
        seq: BatchSequence,
        slots: list[BatchSequence | None],
        prefill: deque[BatchSequence],
        memory: Any,
        finish: str | None,
    ) -> None:
        """Take a sequence out: its KV cells freed, its last parts and the end handed over."""
        self._release(seq, slots, prefill, memory)
        if finish is not None:  # finished (not cancelled): the rest of the text, usage, the reason
            tail = seq.decoder.decode(b"", final=True)
            text, _ = seq.matcher.feed(tail) if tail else ("", False)
            rest = text + seq.matcher.flush()
            if rest:
                seq.held.append(rest)
            seq.held.append(Usage(input_tokens=len(seq.prompt), output_tokens=seq.output_tokens))
            if finish == "length":
                seq.held.append(Done(finish_reason="length"))
            for part in seq.held:
                seq.emit(part, True)  # the end is always accepted, past the bound
        seq.finish(None)

    def _release(
        self, seq: BatchSequence, slots: list[BatchSequence | None], prefill: deque[BatchSequence], memory: Any
    ) -> None:
        import llama_cpp

        slots[seq.seq_id] = None
        if seq in prefill:
            prefill.remove(seq)
        llama_cpp.llama_memory_seq_rm(memory, seq.seq_id, -1, -1)
        if seq.sampler is not None:
            seq.sampler.close()
            seq.sampler = None
        with self._lock:
            self._active -= 1
