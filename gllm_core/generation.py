"""The generation engine: requests, a continuous-batching scheduler, stop handling, streaming.

One ``Engine`` serves one ``CausalLM`` (gllm_core.causal_lm). Each ``step()`` runs one packed
forward pass: every running sequence that is decoding adds its one new token, and sequences still
reading their prompt add a chunk of it (chunked prefill) within a token budget. New requests join
between steps, so a sequence can start while others are half way through their answers; a
finished or cancelled sequence gives its KV cache back at once.

Two ways to drive it:

- a serving loop calls ``add_request`` / ``cancel`` from any thread and ``step()`` in its own loop
  (the outputs are returned and also queued on each request);
- ``engine.stream(requests)`` iterates one caller's outputs and steps the engine itself while no
  other thread does, so callers on several threads end up batched together without a thread of
  the engine's own.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import threading
import uuid
import weakref
from typing import Iterable, Iterator, Sequence

import attrs
import numpy as np

from .detokenizer import IncrementalDetokenizer, StopStrings
from .errors import BadRequestError, GllmError
from .sampling import SamplingParams, TokenHistory, log_softmax, new_generator, sample_token, top_logprobs

DEFAULT_MAX_BATCH_TOKENS = 512  # tokens per forward pass: decode tokens first, then prefill chunks
DEFAULT_MAX_RUNNING = 64  # sequences decoding at once; more wait their turn


class GenerationError(GllmError):
    """The model failed while generating (for example non-finite logits)."""


@attrs.frozen
class TokenLogprob:
    """One generated token with its log-probability and the most likely alternatives (best first)."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()
    text_offset: int = 0  # where its text starts in the choice's output text


@attrs.frozen
class SequenceOutput:
    """What one step brought for one sequence: new text, new tokens, and the finish if it ended."""

    request_id: str
    index: int  # choice index within the request (0 … n-1)
    text: str
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" | "error"
    num_prompt_tokens: int = 0
    num_generated_tokens: int = 0  # sampled so far, end-of-sequence token included
    error: BaseException | None = None


class _Sequence:
    """One choice of a request while it runs: cache, pending input, sampler state, text state."""

    def __init__(self, request: "GenerationRequest", index: int, tokenizer):
        params = request.params
        self.request = request
        self.index = index
        self.rng = new_generator(params.seed, index)
        self.history = TokenHistory(request.prompt_ids if params.repetition_penalty != 1 else ())
        self.cache = None
        self.pending: list[int] = list(request.prompt_ids)  # tokens not yet fed to the model
        self.prefilling = True
        self.generated: list[int] = []
        self.finish_reason: str | None = None
        self.error: BaseException | None = None
        self.detok = IncrementalDetokenizer(tokenizer, request.prompt_ids, params.skip_special_tokens) \
            if tokenizer is not None else None
        self.stops = StopStrings(params.stop)
        self.decoded = 0  # characters decoded so far, before stop strings hold any back
        self.held: list[TokenLogprob] = []  # tokens whose text is not out yet
        self.step_text = ""  # what this step produced, collected by Engine._collect
        self.step_tokens: list[int] = []

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@attrs.define(eq=False)
class GenerationRequest:
    """A prompt (token ids) with its parameters; ``n`` choices run as ``n`` sequences."""

    id: str
    prompt_ids: list[int]
    params: SamplingParams
    max_tokens: int
    stop_token_ids: frozenset[int]
    outputs: collections.deque = attrs.Factory(collections.deque)  # SequenceOutputs not yet read
    unfinished: int = 0  # sequences still running

    @property
    def finished(self) -> bool:
        return self.unfinished == 0


class Engine:
    """Continuous batching over one causal LM. Thread-safe: ``add_request`` and ``cancel`` from any
    thread; one ``step()`` runs at a time (a concurrent caller waits for it)."""

    def __init__(self, model, tokenizer=None, *, stop_token_ids: Iterable[int] = (), lock=None,
                 max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS, max_running: int = DEFAULT_MAX_RUNNING,
                 context_length: int | None = None):
        if max_batch_tokens < 1 or max_running < 1:
            raise BadRequestError("max_batch_tokens and max_running must be at least 1")
        self.model = model
        self.tokenizer = tokenizer
        self.stop_token_ids = frozenset(int(t) for t in stop_token_ids)
        self.context_length = int(context_length or getattr(model, "max_position_embeddings", 0) or 0) or None
        self.max_batch_tokens = max_batch_tokens
        self.max_running = min(max_running, max_batch_tokens)
        self._model_lock = lock  # held around forward passes (shared with other users of the model)
        self._step_lock = threading.Lock()
        self._cond = threading.Condition(threading.Lock())  # guards the inbox and request outputs
        self._inbox: collections.deque = collections.deque()  # ("add" | "cancel", payload), any thread
        self._waiting: collections.deque[_Sequence] = collections.deque()
        self._running: list[_Sequence] = []
        self._requests: dict[str, GenerationRequest] = {}

    # -- requests -----------------------------------------------------------------------------
    def make_request(self, prompt_ids: Sequence[int], params: SamplingParams | None = None,
                     request_id: str | None = None) -> GenerationRequest:
        """Check a request against the model (vocabulary, context length) without queueing it."""
        params = (params if params is not None else SamplingParams()).validate()
        if not isinstance(prompt_ids, (list, tuple, np.ndarray)) or len(prompt_ids) == 0:
            raise BadRequestError("the prompt must have at least one token")
        vocab = getattr(self.model, "vocab_size", 0)
        ids = []
        for t in prompt_ids:
            if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 0 or (vocab and t >= vocab):
                raise BadRequestError(f"prompt token {t!r} is not a token id of this model "
                                      f"(vocabulary of {vocab})")
            ids.append(int(t))
        if vocab and params.logit_bias and max(params.logit_bias) >= vocab:
            raise BadRequestError(f"logit_bias names token {max(params.logit_bias)}, outside the vocabulary of {vocab}")
        max_tokens = params.max_tokens
        if self.context_length:
            room = self.context_length - len(ids)
            if room < 1:
                raise BadRequestError(f"the prompt has {len(ids)} tokens; the model's context length is "
                                      f"{self.context_length}")
            if max_tokens is None:
                max_tokens = room
            elif max_tokens > room:
                raise BadRequestError(f"the prompt ({len(ids)} tokens) plus max_tokens ({max_tokens}) is over "
                                      f"the model's context length of {self.context_length} tokens")
        elif max_tokens is None:
            raise BadRequestError("max_tokens is required: the model does not state its context length")
        if params.stop and self.tokenizer is None:
            raise BadRequestError("stop strings need a tokenizer and this model has none; use stop_token_ids")
        stop_ids = (frozenset() if params.ignore_eos else self.stop_token_ids) | frozenset(params.stop_token_ids)
        return GenerationRequest(id=request_id or f"gen-{uuid.uuid4().hex}", prompt_ids=ids, params=params,
                                 max_tokens=max_tokens, stop_token_ids=stop_ids)

    def add_request(self, prompt_ids: Sequence[int] | GenerationRequest, params: SamplingParams | None = None,
                    request_id: str | None = None) -> GenerationRequest:
        """Queue a request (token ids and parameters, or one from ``make_request``); it joins the
        running batch at the next step."""
        request = prompt_ids if isinstance(prompt_ids, GenerationRequest) else \
            self.make_request(prompt_ids, params, request_id)
        with self._cond:
            if request.id in self._requests or request.unfinished:
                raise BadRequestError(f"request id {request.id!r} is already running")
            request.unfinished = request.params.n
            self._requests[request.id] = request
            self._inbox.append(("add", request))
        return request

    def cancel(self, request_id: str) -> None:
        """Stop a request: its sequences end with finish_reason "cancelled" and give their caches
        back now, or right after the step that is running."""
        with self._cond:
            self._inbox.append(("cancel", request_id))
        if self._step_lock.acquire(blocking=False):
            try:
                self._drain_inbox()
            finally:
                self._release_step_lock()
        # else the thread holding the lock applies it as it lets go (_release_step_lock)

    def has_unfinished(self) -> bool:
        with self._cond:
            return bool(self._requests) or bool(self._inbox)

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    # -- the scheduler -------------------------------------------------------------------------
    def step(self) -> list[SequenceOutput]:
        """One forward pass over the running batch; returns (and queues) what it produced."""
        self._step_lock.acquire()
        try:
            return self._step_locked()
        finally:
            self._release_step_lock()

    def _release_step_lock(self) -> None:
        """Let go of the engine, first applying cancels that came meanwhile: a cancelled request
        must free its cache even if no step ever follows (a server shutting down, say)."""
        while True:
            self._step_lock.release()
            self._notify()
            with self._cond:
                pending = any(kind == "cancel" for kind, _ in self._inbox)
            if not pending or not self._step_lock.acquire(blocking=False):
                return  # nothing to do, or the new holder does it when it lets go
            try:
                self._drain_inbox()
            except BaseException:
                self._step_lock.release()
                raise

    def _drain_inbox(self) -> None:
        with self._cond:
            items = list(self._inbox)
            self._inbox.clear()
        for kind, payload in items:
            if kind == "add":
                self._waiting.extend(_Sequence(payload, i, self.tokenizer) for i in range(payload.params.n))
            else:
                self._cancel_now(payload)

    def _cancel_now(self, request_id: str) -> None:
        with self._cond:
            request = self._requests.get(request_id)
        if request is None:
            return
        seqs = [s for s in itertools.chain(self._running, self._waiting) if s.request is request]
        for seq in seqs:
            self._finish(seq, "cancelled")
        self._running = [s for s in self._running if not s.finished]
        self._waiting = collections.deque(s for s in self._waiting if not s.finished)
        self._collect(seqs)

    def _schedule(self) -> list[tuple[_Sequence, list[int]]]:
        while self._waiting and len(self._running) < self.max_running:
            seq = self._waiting.popleft()
            seq.cache = self.model.new_cache()
            self._running.append(seq)
        budget = self.max_batch_tokens
        batch = []
        for seq in self._running:  # decoding sequences first: one token each
            if not seq.prefilling:
                batch.append((seq, seq.pending))
                budget -= 1
        for seq in self._running:  # then prompt chunks, oldest first
            if seq.prefilling and budget > 0:
                chunk = seq.pending[:budget]
                batch.append((seq, chunk))
                budget -= len(chunk)
        return batch

    def _step_locked(self) -> list[SequenceOutput]:
        self._drain_inbox()
        batch = self._schedule()
        if not batch:
            return []
        tokens = [chunk for _, chunk in batch]
        caches = [seq.cache for seq, _ in batch]
        try:
            if self._model_lock is not None:
                with self._model_lock:
                    logits = self.model.forward(tokens, caches)
            else:
                logits = self.model.forward(tokens, caches)
            logits = np.asarray(logits)
            if logits.ndim != 2 or logits.shape[0] != len(batch):
                raise GenerationError(f"the model returned logits of shape {logits.shape}, expected "
                                      f"({len(batch)}, vocab)")
        except BaseException as exc:
            for seq, _ in batch:
                self._fail(seq, exc)
            self._running = [s for s in self._running if not s.finished]
            outputs = self._collect([s for s, _ in batch])
            if not isinstance(exc, Exception):
                raise
            return outputs
        touched = []
        for row, (seq, chunk) in enumerate(batch):
            seq.pending = seq.pending[len(chunk):]
            if seq.pending:  # more of the prompt to read: these logits are not wanted
                continue
            seq.prefilling = False
            try:
                self._advance(seq, logits[row])
            except Exception as exc:  # noqa: BLE001 - one bad row fails its sequence, not the batch
                self._fail(seq, exc)
            touched.append(seq)
        self._running = [s for s in self._running if not s.finished]
        return self._collect(touched)

    # -- one sampled token ---------------------------------------------------------------------
    def _advance(self, seq: _Sequence, row: np.ndarray) -> None:
        request, params = seq.request, seq.request.params
        if not np.all(np.isfinite(row)):
            raise GenerationError("the model produced non-finite logits (NaN or inf)")
        token = sample_token(row, params, seq.history, seq.rng)
        seq.generated.append(token)
        seq.history.add(token)
        seq.step_tokens.append(token)
        if token in request.stop_token_ids:
            self._finish(seq, "stop")
            return
        if params.logprobs is not None:
            lp = log_softmax(row)
            seq.held.append(TokenLogprob(token, float(lp[token]), tuple(top_logprobs(lp, params.logprobs)),
                                         seq.decoded))
        else:
            seq.held.append(TokenLogprob(token, 0.0, (), seq.decoded))
        if seq.detok is not None:
            piece = seq.detok.add(token)
            seq.decoded += len(piece)
            seq.step_text += seq.stops.feed(piece)
            if seq.stops.stopped:
                self._finish(seq, "stop")
                return
        total = len(request.prompt_ids) + len(seq.generated)
        if len(seq.generated) >= request.max_tokens or (self.context_length and total >= self.context_length):
            self._finish(seq, "length")
            return
        seq.pending = [token]

    def _finish(self, seq: _Sequence, reason: str) -> None:
        if seq.finished:
            return
        seq.finish_reason = reason
        if reason in ("stop", "length") and seq.detok is not None:
            if not seq.stops.stopped:
                piece = seq.detok.flush()
                seq.decoded += len(piece)
                seq.step_text += seq.stops.feed(piece)
            seq.step_text += seq.stops.flush()
        if seq.cache is not None:
            seq.cache.free()
            seq.cache = None
        seq.pending = []  # the request counts it finished when _collect queues its last output

    def _fail(self, seq: _Sequence, exc: BaseException) -> None:
        seq.error = exc
        self._finish(seq, "error")

    def _collect(self, seqs: Iterable[_Sequence]) -> list[SequenceOutput]:
        outputs = []
        for seq in seqs:
            text, seq.step_text = seq.step_text, ""
            new_tokens, seq.step_tokens = tuple(seq.step_tokens), []
            if seq.detok is None:  # no tokenizer, no text: every token goes out at once
                released, seq.held = seq.held, []
            elif seq.finished:
                # tokens wholly inside a cut-off stop string are not part of the answer
                released = [t for t in seq.held if t.text_offset < seq.stops.emitted] if seq.stops.stopped \
                    else seq.held
                seq.held = []
            else:  # a token goes out with its first characters, so a stream adds up to the whole
                n = 0
                while n < len(seq.held) and seq.held[n].text_offset < seq.stops.emitted:
                    n += 1
                released, seq.held = seq.held[:n], seq.held[n:]
            if not (text or new_tokens or released or seq.finished):
                continue
            outputs.append((seq, SequenceOutput(
                request_id=seq.request.id, index=seq.index, text=text, token_ids=new_tokens,
                logprobs=tuple(released) if seq.request.params.logprobs is not None else (),
                finish_reason=seq.finish_reason, num_prompt_tokens=len(seq.request.prompt_ids),
                num_generated_tokens=len(seq.generated), error=seq.error)))
        with self._cond:  # a reader sees a request finished only with all its outputs queued
            for seq, out in outputs:
                request = seq.request
                request.outputs.append(out)
                if out.finish_reason is not None:
                    request.unfinished -= 1
                    if request.unfinished == 0:
                        self._requests.pop(request.id, None)
        return [out for _, out in outputs]

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # -- a caller's view -----------------------------------------------------------------------
    def stream(self, requests: GenerationRequest | Sequence[GenerationRequest]) -> Iterator[SequenceOutput]:
        """The outputs of ``requests`` as they happen, stepping the engine whenever no other thread
        is. Leaving the loop early (break, close, an exception) cancels what is still running."""
        group = [requests] if isinstance(requests, GenerationRequest) else list(requests)
        try:
            while True:
                out = self._next_output(group)
                if out is None:
                    return
                if out.error is not None:
                    raise out.error
                yield out
        finally:
            for request in group:
                if not request.finished:
                    self.cancel(request.id)

    def _next_output(self, group: list[GenerationRequest]) -> SequenceOutput | None:
        while True:
            with self._cond:
                for request in group:
                    if request.outputs:
                        return request.outputs.popleft()
                if all(r.finished for r in group):
                    return None
            if self._step_lock.acquire(blocking=False):
                try:
                    self._step_locked()
                finally:
                    self._release_step_lock()
            else:
                with self._cond:
                    self._cond.wait_for(lambda: any(r.outputs for r in group) or not self._step_lock.locked(),
                                        timeout=0.5)


# -- an engine per loaded model ----------------------------------------------------------------
_engines: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_engines_lock = threading.Lock()


def _as_ids(value) -> list[int]:
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []


def model_stop_token_ids(loaded) -> list[int]:
    """End-of-sequence ids from generation_config.json, config.json and the tokenizer, together."""
    ids: list[int] = []
    folder = loaded.path if os.path.isdir(loaded.path) else os.path.dirname(loaded.path)
    gen_file = os.path.join(folder, "generation_config.json")
    if os.path.isfile(gen_file):
        try:
            with open(gen_file, encoding="utf-8") as f:
                data = json.load(f)
            if isinstance(data, dict):
                ids += _as_ids(data.get("eos_token_id"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            pass  # a broken optional file only loses its extra stop ids
    ids += _as_ids(getattr(loaded.config, "eos_token_id", None))
    tok = loaded.tokenizer
    if tok is not None:
        ids += _as_ids(list(getattr(tok, "stop_token_ids", ()) or ()))
        ids += _as_ids(getattr(tok, "eos_token_id", None))
    return sorted(set(ids))


def engine_for(loaded) -> Engine:
    """The one engine of a loaded model (made on first use), so all its callers batch together."""
    if "generate" not in loaded.tasks:
        raise BadRequestError(f"model {loaded.name!r} ({loaded.architecture}) does not generate text")
    with _engines_lock:
        engine = _engines.get(loaded)
        if engine is None:
            engine = Engine(loaded.model, loaded.tokenizer, stop_token_ids=model_stop_token_ids(loaded),
                            lock=loaded.lock)
            _engines[loaded] = engine
        return engine
