"""Embed a few sentences with the real all-MiniLM-L6-v2 through gllm and print their similarities."""

from __future__ import annotations

import sys
import time

import numpy as np

import gllm

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
]


def main(model: str = "all-minilm:l6") -> None:
    client = gllm.Client(backend="auto")
    start = time.perf_counter()
    response = client.embeddings.create(model=model, input=SENTENCES)
    elapsed = time.perf_counter() - start
    vectors = np.array([d.embedding for d in response.data], dtype=np.float32)
    print(f"gllm {gllm.__version__}, backend {client.backend_name}, model {model}: "
          f"{len(SENTENCES)} sentences → {vectors.shape[1]} dims in {elapsed:.2f} s "
          f"({response.usage.total_tokens} tokens)\n")
    for text, vec in zip(SENTENCES, vectors):
        print(f"  {text:42} [{', '.join(f'{x:+.3f}' for x in vec[:5])}, …]")
    sims = vectors @ vectors.T
    print("\ncosine similarity")
    print(" " * 6 + "".join(f"{j:>7}" for j in range(len(SENTENCES))))
    for i, row in enumerate(sims):
        print(f"  {i:>3} " + "".join(f"{x:7.3f}" for x in row))
    best = max(((i, j) for i in range(len(SENTENCES)) for j in range(i + 1, len(SENTENCES))), key=lambda p: sims[p])
    print(f"\nmost similar pair: {SENTENCES[best[0]]!r} ~ {SENTENCES[best[1]]!r} ({sims[best]:.3f})")


if __name__ == "__main__":
    main(*sys.argv[1:])
