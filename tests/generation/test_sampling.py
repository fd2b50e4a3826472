"""gllm_core.sampling against transformers' logits processors (tools/make_sampling_fixtures.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gllm_core.sampling import (SamplingParams, TokenHistory, apply_penalties, log_softmax, new_generator,
                                sample_token, top_logprobs, warp)

REF = np.load(Path(__file__).parent / "fixtures" / "sampling_reference.npz")
CASES = json.loads(str(REF["cases"]))


def warped_full(logits, history, case) -> np.ndarray:
    params = SamplingParams(**case).validate()
    ids, x = warp(apply_penalties(logits, params, TokenHistory(history)), params)
    full = np.full(logits.shape[0], -np.inf)
    full[ids] = x
    return full


@pytest.mark.parametrize("i", range(len(CASES)))
def test_warpers_match_transformers(i):
    logits, history, ref = REF[f"logits_{i}"], REF[f"history_{i}"], REF[f"scores_{i}"]
    ours = warped_full(logits, history.tolist(), CASES[i])
    assert (np.isfinite(ours) == np.isfinite(ref)).all(), CASES[i]
    kept = np.isfinite(ref)
    if set(CASES[i]) & {"top_k", "top_p", "min_p"}:
        assert 0 < kept.sum() < len(ref)  # the warper did remove tokens
    np.testing.assert_allclose(ours[kept], ref[kept], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("i", [2, 7])
def test_sample_frequencies_follow_the_warped_distribution(i):
    logits, history, ref = REF[f"logits_{i}"], REF[f"history_{i}"].tolist(), REF[f"scores_{i}"].astype(np.float64)
    p = np.exp(ref - ref[np.isfinite(ref)].max())
    p /= p.sum()
    params = SamplingParams(**CASES[i]).validate()
    rng = new_generator(42)
    draws = 20000
    counts = np.bincount([sample_token(logits, params, TokenHistory(history), rng) for _ in range(draws)],
                         minlength=len(p))
    assert counts[p == 0].sum() == 0  # nothing outside top-k / top-p / min-p is ever drawn
    expected = p * draws
    big = expected > 20
    chi2 = (((counts - expected) ** 2)[big] / expected[big]).sum()
    assert chi2 < 2 * big.sum() + 30, (chi2, big.sum())


def test_presence_and_frequency_penalties_follow_openai():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(50).astype(np.float32)
    history = TokenHistory([1, 2, 3])
    for t in [4, 4, 4, 7, 9, 9]:
        history.add(t)
    params = SamplingParams(presence_penalty=0.5, frequency_penalty=0.25).validate()
    out = apply_penalties(logits, params, history)
    count = np.bincount([4, 4, 4, 7, 9, 9], minlength=50)
    expected = logits - count * 0.25 - (count > 0) * 0.5  # the formula in OpenAI's API reference
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_greedy_is_argmax_after_penalties():
    logits = np.array([0.0, 5.0, 4.9, -1.0], dtype=np.float32)
    history = TokenHistory([1])
    assert sample_token(logits, SamplingParams(temperature=0), TokenHistory(()), new_generator(0)) == 1
    assert sample_token(logits, SamplingParams(temperature=0, repetition_penalty=1.1), history, new_generator(0)) == 2


def test_log_softmax_is_stable_and_top_logprobs_are_ordered():
    x = np.array([1e4, 1e4 - 1, -1e4, 3.0], dtype=np.float32)
    lp = log_softmax(x)
    assert np.isfinite(lp[:2]).all() and abs(np.logaddexp.reduce(lp)) < 1e-12
    assert abs(lp[0] - (-np.log1p(np.exp(-1.0)))) < 1e-12
    assert top_logprobs(lp, 3) == [(0, lp[0]), (1, lp[1]), (3, lp[3])]
    ties = log_softmax(np.zeros(5, dtype=np.float32))
    assert [t for t, _ in top_logprobs(ties, 3)] == [0, 1, 2]


def test_seeded_generators_repeat_and_differ_by_choice():
    a = new_generator(5, 0).random(4)
    assert (a == new_generator(5, 0).random(4)).all()
    assert not (a == new_generator(5, 1).random(4)).any()
    assert not (a == new_generator(6, 0).random(4)).any()
