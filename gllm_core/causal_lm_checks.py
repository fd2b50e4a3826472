"""Checks of any ``CausalLM``, for architecture plugins' tests.

The ``check_*`` functions over a model alone run it against itself (with and without the cache,
alone and batched, in one chunk and in several) and raise ``AssertionError`` naming what
differed. ``greedy`` is the plain argmax loop the tests compare with transformers' greedy
``generate``.

The ``check_*_reference`` functions compare a model with what tools/make_decoder_fixtures.py
saved from transformers in a fixture's ``reference.npz`` (``gllm_core.testing.load_reference``):
for prompt ``i``, ``prompt_ids_{i}`` (the ids), ``logits_{i}`` (float32 logits of every
position), ``greedy_{i}`` (16 greedy tokens) and, for weights rounded to f16/bf16,
``argmax_{i}`` (the argmax of every position).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def greedy(lm, prompt: Sequence[int], n: int) -> list[int]:
    """``n`` tokens by argmax, one forward per token, with a KV cache."""
    cache = lm.new_cache()
    try:
        logits = lm.forward([list(prompt)], [cache])[0]
        out = []
        for _ in range(n):
            out.append(int(np.argmax(logits)))
            if len(out) < n:
                logits = lm.forward([[out[-1]]], [cache])[0]
        return out
    finally:
        cache.free()


def prompt_logits(lm, prompt: Sequence[int]) -> np.ndarray:
    """``[len(prompt), vocab]`` logits of a whole prompt run on an empty cache."""
    cache = lm.new_cache()
    try:
        return lm.forward([list(prompt)], [cache], all_logits=True)[0]
    finally:
        cache.free()


def check_cache_matches_recompute(lm, prompt: Sequence[int], steps: int = 8, atol: float = 2e-5) -> None:
    """Decoding token by token with the cache gives the logits of recomputing the whole sequence."""
    cache = lm.new_cache()
    try:
        seq = list(prompt)
        logits = lm.forward([seq], [cache])[0]
        for step in range(steps):
            full = prompt_logits(lm, seq)[-1]
            np.testing.assert_allclose(logits, full, atol=atol, rtol=0,
                                       err_msg=f"cached decode differs from recomputing at step {step}")
            assert cache.length == len(seq), (cache.length, len(seq))
            seq.append(int(np.argmax(logits)))
            logits = lm.forward([[seq[-1]]], [cache])[0]
    finally:
        cache.free()


def check_chunked_prefill(lm, prompt: Sequence[int], chunks: Sequence[int], atol: float = 2e-5) -> None:
    """A prompt fed in chunks of the given sizes gives the logits of feeding it at once."""
    whole = prompt_logits(lm, prompt)
    cache = lm.new_cache()
    try:
        parts, start = [], 0
        for size in list(chunks) + [len(prompt)]:
            stop = min(len(prompt), start + size)
            if stop > start:
                parts.append(lm.forward([list(prompt[start:stop])], [cache], all_logits=True)[0])
            start = stop
        np.testing.assert_allclose(np.concatenate(parts), whole, atol=atol, rtol=0,
                                   err_msg=f"prefill in chunks {list(chunks)} differs from one chunk")
    finally:
        cache.free()


def check_batch_matches_alone(lm, prompts: Sequence[Sequence[int]], steps: int = 16,
                              atol: float = 2e-5) -> list[list[int]]:
    """Prompts of different lengths prefilled and greedily decoded together give each one's
    tokens (exactly) and logits (within ``atol``) alone. Returns the greedy tokens."""
    alone = [prompt_logits(lm, p) for p in prompts]
    caches = [lm.new_cache() for _ in prompts]
    try:
        together = lm.forward([list(p) for p in prompts], caches, all_logits=True)
        for i, (t, a) in enumerate(zip(together, alone)):
            np.testing.assert_allclose(t, a, atol=atol, rtol=0, err_msg=f"prompt {i} prefilled in a batch")
        last = np.stack([t[-1] for t in together])
        tokens: list[list[int]] = [[] for _ in prompts]
        for _ in range(steps):
            for i in range(len(prompts)):
                tokens[i].append(int(np.argmax(last[i])))
            if len(tokens[0]) < steps:
                last = lm.forward([[t[-1]] for t in tokens], caches)
    finally:
        for c in caches:
            c.free()
    for i, p in enumerate(prompts):
        expected = greedy(lm, p, steps)
        assert tokens[i] == expected, f"prompt {i}: batched greedy {tokens[i]} != alone {expected}"
    return tokens


def reference_prompt(ref, i: int) -> list[int]:
    """The ids of prompt ``i`` of a reference."""
    return ref[f"prompt_ids_{i}"].tolist()


def check_logits_reference(lm, ref, n_prompts: int, atol: float = 1e-4, label: str = "") -> None:
    """Each prompt's logits at every position equal transformers' within ``atol``."""
    for i in range(n_prompts):
        np.testing.assert_allclose(prompt_logits(lm, reference_prompt(ref, i)), ref[f"logits_{i}"], atol=atol,
                                   rtol=0, err_msg=f"{label} prompt {i}")


def check_greedy_reference(lm, ref, n_prompts: int, steps: int = 16, label: str = "") -> None:
    """Each prompt's greedy continuation is transformers' token for token."""
    for i in range(n_prompts):
        assert greedy(lm, reference_prompt(ref, i), steps) == ref[f"greedy_{i}"].tolist(), f"{label} prompt {i}"


def check_rounded_reference(lm, ref, ref32, n_prompts: int, margin: float = 0.5) -> None:
    """Weights rounded to f16/bf16 (``ref``) give transformers' argmax at every position; rounding
    moved transformers' logits from the float32 model's (``ref32``) by less than ``margin``, far
    less than that model's margins."""
    for i in range(n_prompts):
        argmax = prompt_logits(lm, reference_prompt(ref, i)).argmax(-1)
        assert argmax.tolist() == ref[f"argmax_{i}"].tolist()
        assert np.abs(ref[f"logits_{i}"] - ref32[f"logits_{i}"]).max() < margin


def check_kv_cache(lm, prompts: Sequence[Sequence[int]], steps: int = 8, chunks: Sequence[int] = (5, 1, 7)) -> None:
    """``check_cache_matches_recompute`` and ``check_chunked_prefill`` on each prompt."""
    for prompt in prompts:
        check_cache_matches_recompute(lm, prompt, steps=steps)
        check_chunked_prefill(lm, prompt, chunks=list(chunks))


def check_batch_reference(lm, ref, order: Sequence[int], steps: int = 16) -> None:
    """The reference prompts in ``order``, batched, decode as each does alone and as transformers did."""
    tokens = check_batch_matches_alone(lm, [reference_prompt(ref, i) for i in order], steps=steps)
    assert tokens == [ref[f"greedy_{i}"].tolist() for i in order]
