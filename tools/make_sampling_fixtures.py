"""Reference for gllm_core.sampling: transformers' logits processors on random logits, float32.

For each case: random logits over a small vocabulary, some earlier token ids, and a set of
sampling parameters; the output is what ``generate`` hands to ``multinomial`` — the scores after
RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper and
MinPLogitsWarper, in that order, with ``-inf`` for removed tokens.

    python tools/make_sampling_fixtures.py   # writes tests/generation/fixtures/sampling_reference.npz
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from transformers.generation.logits_process import (LogitsProcessorList, MinPLogitsWarper,
                                                    RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                                                    TopKLogitsWarper, TopPLogitsWarper)

OUT = Path(__file__).resolve().parents[1] / "tests" / "generation" / "fixtures" / "sampling_reference.npz"
VOCAB = 300

CASES = [
    dict(temperature=1.0),
    dict(temperature=0.7, top_k=10),
    dict(temperature=1.3, top_p=0.9),
    dict(temperature=1.0, top_p=0.5, top_k=40),
    dict(temperature=0.5, min_p=0.05),
    dict(temperature=1.0, min_p=0.2, top_p=0.95),
    dict(temperature=1.0, repetition_penalty=1.3),
    dict(temperature=0.9, repetition_penalty=0.8, top_k=25, top_p=0.8, min_p=0.01),
    dict(temperature=2.0, top_k=1),
    dict(temperature=1.0, top_p=0.999),
    dict(temperature=1.2, top_p=0.9, vocab=6000),  # large vocabularies: nucleus of 517 found among the best 1024
    dict(temperature=1.5, top_p=0.95, min_p=0.001, vocab=6000),  # ... and one that is not (the full sort)
]


def main() -> None:
    rng = np.random.default_rng(20240605)
    arrays: dict[str, np.ndarray] = {}
    for i, case in enumerate(CASES):
        vocab = case.pop("vocab", VOCAB)
        logits = (rng.standard_normal(vocab) * 3).astype(np.float32)
        history = rng.integers(0, vocab, size=30)
        procs = LogitsProcessorList()
        if case.get("repetition_penalty", 1.0) != 1.0:
            procs.append(RepetitionPenaltyLogitsProcessor(case["repetition_penalty"]))
        procs.append(TemperatureLogitsWarper(case["temperature"]))
        if case.get("top_k"):
            procs.append(TopKLogitsWarper(case["top_k"]))
        if case.get("top_p", 1.0) < 1.0:
            procs.append(TopPLogitsWarper(case["top_p"]))
        if case.get("min_p"):
            procs.append(MinPLogitsWarper(case["min_p"]))
        scores = procs(torch.tensor(history[None]), torch.tensor(logits[None]))[0].numpy()
        arrays[f"logits_{i}"] = logits
        arrays[f"history_{i}"] = history
        arrays[f"scores_{i}"] = scores.astype(np.float32)
    arrays["cases"] = np.array(json.dumps(CASES))  # (without "vocab": the logits say it)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({len(CASES)} cases)")


if __name__ == "__main__":
    main()
