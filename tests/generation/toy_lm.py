"""A toy causal LM and a toy byte-level BPE tokenizer for testing the engine on its own.

``ToyLM`` follows gllm_core.causal_lm: each sequence's ``ToyCache`` stores its tokens, and the
logits of a position are a fixed function of the whole prefix (a decaying sum of embeddings), so
anything the engine mixes up between sequences, chunks or cache positions changes the tokens.
``ToyLM.logits(prefix)`` recomputes a position from scratch: the no-cache reference.
With a ``script`` the model strongly prefers ``script[len(prefix)]`` (then end-of-sequence), which
lets a test choose the exact text a greedy run produces.
"""

from __future__ import annotations

import json

import numpy as np

from gllm_core.tokenizer import _GPT2_BYTE_OF, HFTokenizer

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


class ToyCache:
    def __init__(self, model: "ToyLM"):
        self.tokens: list[int] = []
        self.model = model
        self.freed = False
        model.live.add(self)

    @property
    def length(self) -> int:
        return len(self.tokens)

    def truncate(self, length: int) -> None:
        del self.tokens[length:]

    def free(self) -> None:
        assert not self.freed, "cache freed twice"
        self.freed = True
        self.model.live.discard(self)


class ToyLM:
    tasks = ("generate",)

    def __init__(self, vocab_size: int, *, seed: int = 0, hidden: int = 16, max_position_embeddings: int = 256,
                 script: list[int] | None = None, eos_id: int | None = None, scale: float = 4.0):
        rng = np.random.default_rng(seed)
        self.vocab_size = vocab_size
        self.max_position_embeddings = max_position_embeddings
        self.emb = rng.standard_normal((vocab_size, hidden))
        self.pos = 0.5 * rng.standard_normal((max_position_embeddings, hidden))
        self.out = rng.standard_normal((hidden, vocab_size)) * scale / np.sqrt(hidden)
        self.script = script
        self.eos_id = eos_id
        self.calls: list[list[int]] = []  # tokens per sequence, per forward call
        self.live: set[ToyCache] = set()

    def new_cache(self) -> ToyCache:
        return ToyCache(self)

    def logits(self, prefix) -> np.ndarray:
        h = np.zeros(self.emb.shape[1])
        for t in prefix:
            h = 0.6 * h + self.emb[t]
        x = np.tanh(h + self.pos[len(prefix) - 1]) @ self.out
        if self.script is not None:
            if len(prefix) < len(self.script):
                x[self.script[len(prefix)]] += 40.0
            elif self.eos_id is not None:
                x[self.eos_id] += 40.0
        return x.astype(np.float32)

    def forward(self, tokens, caches, all_logits=False):
        assert len(tokens) == len(caches) and len(tokens) > 0
        self.calls.append([len(t) for t in tokens])
        outs = []
        for toks, cache in zip(tokens, caches):
            assert not cache.freed and len(toks) > 0
            rows = []
            for t in toks:
                assert cache.length < self.max_position_embeddings, "ran past the context"
                cache.tokens.append(int(t))
                rows.append(self.logits(cache.tokens))
            outs.append(np.stack(rows))
        return outs if all_logits else np.stack([o[-1] for o in outs])


def make_tokenizer_json() -> str:
    """A byte-level BPE: 256 byte tokens, merges that join ASCII pairs and split UTF-8 characters
    across tokens (2 of the 3 bytes of 中; the last byte of é with an x), and ChatML specials."""
    char_of = {b: c for c, b in _GPT2_BYTE_OF.items()}
    vocab = {char_of[b]: b for b in range(256)}
    merges = []

    def merge(a: str, b: str):
        merges.append([a, b])
        vocab[a + b] = len(vocab)

    def chars(data: bytes) -> list[str]:
        return [char_of[b] for b in data]

    merge("h", "e")
    merge("l", "l")
    merge("Ġ", "w")
    merge("o", "r")
    merge("he", "ll")
    zhong = chars("中".encode())
    merge(zhong[0], zhong[1])
    e_acute = chars("é".encode())
    merge(e_acute[1], "x")
    added = [{"id": len(vocab) + i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, s in enumerate(SPECIALS)]
    return json.dumps({
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    })


def toy_tokenizer() -> HFTokenizer:
    from tokenizers import Tokenizer as RawTokenizer

    return HFTokenizer(RawTokenizer.from_str(make_tokenizer_json()),
                       special={"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"}, chat_template=CHATML)
