"""Choosing the next token from a row of logits: penalties, temperature, top-k/top-p/min-p, seeds.

The order follows transformers' ``generate`` (and vLLM): repetition penalty, then presence and
frequency penalties (OpenAI's definition: over the generated tokens), then temperature, top-k,
top-p and min-p; ``temperature == 0`` is greedy (argmax after the penalties). Every sequence owns
a seeded ``numpy.random.Generator`` and draws exactly one uniform number per sampled token, so a
seeded request samples the same tokens whether it runs alone or inside a batch.

Log-probabilities are those of the model's own distribution (the raw logits, before penalties and
temperature), computed in float64 as ``x - max - log(sum(exp(x - max)))``.
"""

from __future__ import annotations

import math
from typing import Sequence

import attrs
import numpy as np

from .errors import BadRequestError

MAX_TOP_LOGPROBS = 20
MAX_STOP_STRINGS = 16
MAX_N = 128
_NEGLIGIBLE_NATS = 40.0
_TOP_P_FIRST_TRY = 1024


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(float(value))


@attrs.define
class SamplingParams:
    """What one generation request asks for. ``validate()`` raises BadRequestError naming the field."""

    max_tokens: int | None = None  # None: up to the model's context length
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: off
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    n: int = 1
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()  # besides the model's end-of-sequence ids
    ignore_eos: bool = False
    logprobs: int | None = None  # None: none; k: the sampled token's log-probability and the top k
    skip_special_tokens: bool = True
    logit_bias: dict[int, float] | None = None  # token id -> added to its logit, in [-100, 100]

    def validate(self) -> "SamplingParams":
        if self.max_tokens is not None and (not _is_int(self.max_tokens) or self.max_tokens < 1):
            raise BadRequestError(f"max_tokens must be a positive integer, got {self.max_tokens!r}")
        if not _is_number(self.temperature) or self.temperature < 0:
            raise BadRequestError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not _is_number(self.top_p) or not 0 < self.top_p <= 1:
            raise BadRequestError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not _is_int(self.top_k) or self.top_k < -1:
            raise BadRequestError(f"top_k must be an integer >= 1, or 0 / -1 for no limit, got {self.top_k!r}")
        if not _is_number(self.min_p) or not 0 <= self.min_p <= 1:
            raise BadRequestError(f"min_p must be in [0, 1], got {self.min_p!r}")
        if not _is_number(self.repetition_penalty) or self.repetition_penalty <= 0:
            raise BadRequestError(f"repetition_penalty must be a number > 0, got {self.repetition_penalty!r}")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if not _is_number(value) or not -2 <= value <= 2:
                raise BadRequestError(f"{name} must be in [-2, 2], got {value!r}")
        if self.seed is not None and not _is_int(self.seed):
            raise BadRequestError(f"seed must be an integer, got {self.seed!r}")
        if not _is_int(self.n) or not 1 <= self.n <= MAX_N:
            raise BadRequestError(f"n must be an integer from 1 to {MAX_N}, got {self.n!r}")
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        if self.stop is None:
            self.stop = ()
        if not isinstance(self.stop, (list, tuple)) or not all(isinstance(s, str) and s for s in self.stop):
            raise BadRequestError(f"stop must be a non-empty string or a list of non-empty strings, got {self.stop!r}")
        if len(self.stop) > MAX_STOP_STRINGS:
            raise BadRequestError(f"stop takes at most {MAX_STOP_STRINGS} strings, got {len(self.stop)}")
        self.stop = tuple(self.stop)
        if not isinstance(self.stop_token_ids, (list, tuple)) or not all(_is_int(t) and t >= 0
                                                                        for t in self.stop_token_ids):
            raise BadRequestError(f"stop_token_ids must be a list of token ids, got {self.stop_token_ids!r}")
        self.stop_token_ids = tuple(int(t) for t in self.stop_token_ids)
        if self.logit_bias:
            if not isinstance(self.logit_bias, dict):
                raise BadRequestError("logit_bias must map token ids to numbers from -100 to 100")
            bias = {}
            for key, value in self.logit_bias.items():
                try:
                    tid = int(key) if not isinstance(key, bool) else None
                except (TypeError, ValueError):
                    tid = None
                if tid is None or tid < 0 or not _is_number(value) or not -100 <= value <= 100:
                    raise BadRequestError(f"logit_bias entry {key!r}: {value!r} must map a token id to a number "
                                          "from -100 to 100")
                bias[tid] = float(value)
            self.logit_bias = bias
        if self.logprobs is not None and (not _is_int(self.logprobs) or not 0 <= self.logprobs <= MAX_TOP_LOGPROBS):
            raise BadRequestError(f"logprobs must be an integer from 0 to {MAX_TOP_LOGPROBS}, got {self.logprobs!r}")
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def new_generator(seed: int | None, index: int = 0) -> np.random.Generator:
    """The random stream of choice ``index`` of a request: reproducible when ``seed`` is set."""
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng(np.random.SeedSequence(int(seed) & ((1 << 128) - 1), spawn_key=(index,)))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """float64 log-probabilities of one row, stable for any logit scale."""
    x = np.asarray(logits, dtype=np.float64)
    m = np.max(x)
    if not np.isfinite(m):
        raise FloatingPointError("logits contain no finite maximum")
    shifted = x - m
    return shifted - np.log(np.sum(np.exp(shifted)))


def top_logprobs(logprobs: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k most likely tokens, best first (ties broken by the lower id)."""
    if k <= 0:
        return []
    k = min(k, logprobs.shape[0])
    part = np.argpartition(-logprobs, k - 1)[:k]
    order = np.lexsort((part, -logprobs[part]))
    return [(int(part[i]), float(logprobs[part[i]])) for i in order]


class TokenHistory:
    """What the penalties look at: the tokens of prompt and output (repetition), output counts."""

    def __init__(self, prompt_ids: Sequence[int]):
        self.seen = set(int(t) for t in prompt_ids)
        self.counts: dict[int, int] = {}

    def add(self, token: int) -> None:
        self.seen.add(token)
        self.counts[token] = self.counts.get(token, 0) + 1


def apply_penalties(logits: np.ndarray, params: SamplingParams, history: TokenHistory) -> np.ndarray:
    """OpenAI's logit_bias, the repetition penalty (CTRL / transformers: prompt and output tokens),
    then OpenAI's presence and frequency penalties (output tokens only). Returns a float64 copy."""
    x = np.array(logits, dtype=np.float64)
    if params.logit_bias:
        ids = np.fromiter(params.logit_bias.keys(), dtype=np.int64, count=len(params.logit_bias))
        x[ids] += np.fromiter(params.logit_bias.values(), dtype=np.float64, count=len(params.logit_bias))
    if params.repetition_penalty != 1 and history.seen:
        ids = np.fromiter(history.seen, dtype=np.int64, count=len(history.seen))
        v = x[ids]
        x[ids] = np.where(v > 0, v / params.repetition_penalty, v * params.repetition_penalty)
    if (params.presence_penalty or params.frequency_penalty) and history.counts:
        ids = np.fromiter(history.counts.keys(), dtype=np.int64, count=len(history.counts))
        counts = np.fromiter(history.counts.values(), dtype=np.float64, count=len(history.counts))
        x[ids] -= params.frequency_penalty * counts + params.presence_penalty
    return x


def warp(scores: np.ndarray, params: SamplingParams) -> tuple[np.ndarray, np.ndarray]:
    """Temperature, top-k, top-p, min-p as transformers' warpers define them.

    Returns the surviving token ids and their scaled scores (everything else has probability 0)."""
    x = scores / params.temperature
    # tokens more than 40 nats below the best weigh < 4e-18 each (< 1e-12 together for any vocabulary):
    # leaving them out changes no probability visibly and spares sorting the whole vocabulary
    ids = np.flatnonzero(x >= x.max() - _NEGLIGIBLE_NATS)
    x = x[ids]
    if params.top_k > 0 and params.top_k < x.shape[0]:
        kth = np.partition(x, x.shape[0] - params.top_k)[x.shape[0] - params.top_k]
        keep = x >= kth  # ties with the k-th score stay, as in TopKLogitsWarper
        ids, x = ids[keep], x[keep]
    if params.top_p < 1:
        p = np.exp(x - x.max())
        total = p.sum()
        sub = np.arange(x.shape[0])
        if x.shape[0] > 2 * _TOP_P_FIRST_TRY:  # the nucleus usually lies in the best few: sort only those
            best = np.argpartition(-x, _TOP_P_FIRST_TRY - 1)[:_TOP_P_FIRST_TRY]
            if p[best].sum() > total * (params.top_p + 1e-9):
                sub = best
        order = sub[np.argsort(x[sub], kind="stable")]  # ascending, as TopPLogitsWarper
        # the mass at or below each token; tokens outside ``sub`` all lie below
        cumulative = (total - p[sub].sum() + np.cumsum(p[order])) / total
        remove = cumulative <= 1 - params.top_p
        remove[-1] = False  # keep at least the best token
        kept = order[~remove]
        ids, x = ids[kept], x[kept]
    if params.min_p > 0:
        p = np.exp(x - x.max())
        keep = p >= params.min_p  # p / p_max >= min_p, as MinPLogitsWarper
        ids, x = ids[keep], x[keep]
    return ids, x


def sample_token(logits: np.ndarray, params: SamplingParams, history: TokenHistory,
                 rng: np.random.Generator) -> int:
    """One token from one row of logits."""
    scores = apply_penalties(logits, params, history)
    if params.greedy:
        return int(np.argmax(scores))
    ids, x = warp(scores, params)
    p = np.exp(x - x.max())
    cumulative = np.cumsum(p)
    u = rng.random()  # one draw per token, whatever the vocabulary or batch
    i = int(np.searchsorted(cumulative, u * cumulative[-1], side="right"))
    return int(ids[min(i, ids.shape[0] - 1)])
