"""Make tiny random-weight cross-encoder (and XLM-R encoder) fixtures with float32 references.

Writes under ``plugins/arch_bert/tests/fixtures/``:

* ``tiny-bert-cls1/``   BertForSequenceClassification, num_labels 1 (CrossEncoder default: sigmoid),
                        the tiny WordPiece tokenizer of make_bert_fixtures.py with model_max_length 40.
* ``tiny-bert-cls3/``   the same shape with num_labels 3 (CrossEncoder default: identity).
* ``tiny-xlmr-cls1/``   XLMRobertaForSequenceClassification, num_labels 1, pad_token_id 1 (positions
                        start at 2), type_vocab_size 1, a tiny Unigram tokenizer saved through
                        transformers' XLMRobertaTokenizer (``<s> q </s></s> d </s>``), model_max_length 40.
* ``tiny-xlmr/``        the XLMRobertaModel inside tiny-xlmr-cls1, saved alone (a plain checkpoint:
                        mean pooling) for embeddings.
* ``VERSIONS-rerank.json``  library versions and the date.

Each cross-encoder folder holds config.json, model.safetensors, the tokenizer files, pairs.json
([query, document] pairs), variants.json (for tiny-bert-cls1: JSON merged into config.json /
config_sentence_transformers.json of a copy, to exercise how CrossEncoder picks its activation)
and reference.npz:

  input_ids_<i>, token_type_ids_<i>  int64 [L_i]: pair i as CrossEncoder tokenised it (truncated
                                     to 40 tokens, the document side only: checked below)
  logits                             float32 [N, num_labels]: transformers' logits, each pair alone
  batch_logits                       float32 [N, num_labels]: one right-padded batch of all pairs
  scores                             float32 [N] or [N, num_labels]: CrossEncoder(folder).predict(pairs)
  scores_<variant>                   float32: CrossEncoder.predict on the folder with that variant

tiny-xlmr/reference.npz: input_ids_<i> / hidden_<i> (last_hidden_state of text i alone, with
``<s> … </s>``), pad_inside_ids / pad_inside_hidden (a sequence with the pad id inside it, where
transformers gives that token position padding_idx), texts.json.

Needs (tools only, never gllm itself): torch, transformers, sentence-transformers, tokenizers.
Run from the repo root:  python tools/make_rerank_fixtures.py
"""

from __future__ import annotations

import copy
import datetime
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_bert_fixtures import LETTERS, PUNCT, DIGITS, WORDS, build_vocab, make_tokenizer, perturb_, save_tokenizer  # noqa: E402
from model_variants import apply_variant  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "plugins" / "arch_bert" / "tests" / "fixtures"
SEED = 4321
HIDDEN = 32
MAX_LEN = 40  # tokenizer model_max_length: below the 64 positions, so pairs get truncated

LONG_DOC = " ".join(["the big red dog ran to the old house and ate the small fish"] * 5)
PAIRS = [
    ("what is the answer?", "the answer is in the book."),
    ("what is the answer?", "the cat sat on the mat."),
    ("where is the dog?", "the dog ran to the old house."),
    ("where is the dog?", LONG_DOC),
    ("find a red car", ""),
    ("Cats and DOGS!", "cats, dogs and birds: all very happy."),
    ("one", "two three four"),
    ("how many people live in the city", "many people live in the big city, and some in the small town by the river."),
    ("where is the dog?", "no dog here, only a cat."),
]
XLMR_TEXTS = ["the cat sat on the mat.", "Where is the DOG?", "one", LONG_DOC]

# What CrossEncoder.save writes beside the weights (checked in make_bert_cls). sentence-transformers
# reads config_sentence_transformers.json only in a folder that has modules.json.
ST_SAVED = {
    "modules.json": [{"idx": 0, "name": "0", "path": "",
                      "type": "sentence_transformers.base.modules.transformer.Transformer"}],
    "sentence_bert_config.json": {"transformer_task": "sequence-classification",
                                  "modality_config": {"text": {"method": "forward", "method_output_name": "logits"}},
                                  "module_output_name": "scores"},
}
TANH = "torch.nn.modules.activation.Tanh"
IDENTITY = "torch.nn.modules.linear.Identity"
# Files merged into (objects) or written over (lists) in a copy of tiny-bert-cls1; CrossEncoder picks
# its activation from them.
VARIANTS = {
    "st_config_identity": {"config.json": {"sentence_transformers": {"activation_fn": IDENTITY}}},
    "legacy_identity": {"config.json": {"sbert_ce_default_activation_function": IDENTITY}},
    "st_saved_tanh": {**ST_SAVED, "config_sentence_transformers.json": {"model_type": "CrossEncoder",
                                                                         "activation_fn": TANH}},
    "st_saved_file_beats_config": {**ST_SAVED, "config_sentence_transformers.json": {"model_type": "CrossEncoder",
                                                                                      "activation_fn": IDENTITY},
                                   "config.json": {"sentence_transformers": {"activation_fn": TANH}}},
    "file_without_modules_is_not_read": {"config_sentence_transformers.json": {"model_type": "CrossEncoder",
                                                                               "activation_fn": TANH}},
    "st_saved_without_model_type_is_not_read": {**ST_SAVED, "config_sentence_transformers.json": {"activation_fn": TANH}},
    "untrusted_path_uses_default": {"config.json": {"sentence_transformers": {"activation_fn": "mypkg.acts.Custom"}}},
    "null_uses_default": {"config.json": {"sentence_transformers": {"activation_fn": None},
                                          "sbert_ce_default_activation_function": TANH}},
}
DEFAULT_VARIANTS = ("file_without_modules_is_not_read", "st_saved_without_model_type_is_not_read",
                    "untrusted_path_uses_default", "null_uses_default")


def cross_encoder_scores(folder: Path, pairs) -> np.ndarray:
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(str(folder), device="cpu", model_kwargs={"attn_implementation": "eager"})
    assert ce.max_seq_length == MAX_LEN, ce.max_seq_length
    with torch.no_grad():
        return np.asarray(ce.predict(pairs, batch_size=4, convert_to_numpy=True), dtype=np.float32)


@torch.no_grad()
def cls_reference(folder: Path, model_cls, pairs, has_types: bool) -> dict[str, np.ndarray]:
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer

    model = model_cls.from_pretrained(str(folder), attn_implementation="eager", dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(folder))
    ce = CrossEncoder(str(folder), device="cpu", model_kwargs={"attn_implementation": "eager"})
    raw = copy.deepcopy(tok.backend_tokenizer)
    raw.no_padding()
    raw.enable_truncation(MAX_LEN, strategy="only_second")
    ref: dict[str, np.ndarray] = {}
    logits = []
    for i, (q, d) in enumerate(pairs):
        feats = ce.preprocess([(q, d)])
        ids = feats["input_ids"][0]
        # the policy gllm follows: truncate the document only; the references must agree with it
        # (the tokenizers object: transformers' tok(q, "") would drop an empty document, CrossEncoder does not)
        only_second = raw.encode(q, d)
        assert ids.tolist() == only_second.ids, (i, ids.tolist(), only_second.ids)
        ref[f"input_ids_{i}"] = ids.numpy().astype(np.int64)
        ref[f"token_type_ids_{i}"] = np.asarray(only_second.type_ids, dtype=np.int64)
        if has_types:
            assert ref[f"token_type_ids_{i}"].tolist() == feats["token_type_ids"][0].tolist()
        kwargs = {"token_type_ids": torch.tensor([only_second.type_ids])} if has_types else {}
        logits.append(model(input_ids=ids[None], **kwargs).logits[0].numpy())
    ref["logits"] = np.stack(logits).astype(np.float32)
    n = len(pairs)
    width = max(len(ref[f"input_ids_{i}"]) for i in range(n))
    ids = np.full((n, width), model.config.pad_token_id, dtype=np.int64)
    types = np.zeros((n, width), dtype=np.int64)
    mask = np.zeros((n, width), dtype=np.int64)
    for i in range(n):
        k = len(ref[f"input_ids_{i}"])
        ids[i, :k], types[i, :k], mask[i, :k] = ref[f"input_ids_{i}"], ref[f"token_type_ids_{i}"], 1
    kwargs = {"token_type_ids": torch.from_numpy(types)} if has_types else {}
    ref["batch_logits"] = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                                **kwargs).logits.numpy().astype(np.float32)
    np.testing.assert_allclose(ref["batch_logits"], ref["logits"], atol=1e-5)
    assert max(len(ref[f"input_ids_{i}"]) for i in range(len(pairs))) == MAX_LEN, "no pair was truncated"
    ref["scores"] = cross_encoder_scores(folder, pairs)
    return ref


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def fresh(name: str) -> Path:
    d = OUT / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    return d


def make_bert_cls(name: str, num_labels: int, variants: dict | None = None) -> dict[str, np.ndarray]:
    from transformers import BertConfig, BertForSequenceClassification

    vocab = build_vocab()
    tokenizer = make_tokenizer(vocab, model_max_length=MAX_LEN)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=37, max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu",
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.2,
                     layer_norm_eps=1e-12, pad_token_id=0, num_labels=num_labels)
    model = BertForSequenceClassification(cfg)
    perturb_(model)
    d = fresh(name)
    model.eval().save_pretrained(str(d), safe_serialization=True)
    save_tokenizer(tokenizer, vocab, d)
    write_json(d / "pairs.json", [list(p) for p in PAIRS])
    ref = cls_reference(d, BertForSequenceClassification, PAIRS, has_types=True)
    assert max(int(ref[f"token_type_ids_{i}"].max()) for i in range(len(PAIRS))) == 1
    default = ref["scores"]
    expected = (1 / (1 + np.exp(-ref["logits"][:, 0]))) if num_labels == 1 else ref["logits"]
    np.testing.assert_allclose(default, expected, atol=1e-5)
    if variants:
        from sentence_transformers import CrossEncoder

        with tempfile.TemporaryDirectory() as tmp:
            CrossEncoder(str(d), device="cpu").save(tmp)
            for file, content in ST_SAVED.items():
                assert json.loads((Path(tmp) / file).read_text()) == content, file
        write_json(d / "variants.json", variants)
        for key, variant in variants.items():
            with tempfile.TemporaryDirectory() as tmp:
                copy = Path(tmp) / name
                shutil.copytree(d, copy)
                apply_variant(copy, variant)
                ref[f"scores_{key}"] = cross_encoder_scores(copy, PAIRS)
            print(f"{name} variant {key}: {ref[f'scores_{key}'][:3]}")
        # each variant must be told apart from its alternatives at the tests' tolerance
        for key in variants:
            is_default = key in DEFAULT_VARIANTS
            assert np.allclose(ref[f"scores_{key}"], default, atol=1e-4) == is_default, key
    np.savez(d / "reference.npz", **ref)
    return ref


def xlmr_vocab() -> list[tuple[str, float]]:
    pieces = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    seen = {p for p, _ in pieces}
    for w in WORDS:
        if "▁" + w not in seen:
            pieces.append(("▁" + w, -4.0 - 0.01 * len(pieces)))
            seen.add("▁" + w)
    for c in LETTERS + [c.upper() for c in LETTERS] + DIGITS + PUNCT + ["▁"]:
        if c not in seen:
            pieces.append((c, -9.0))
            seen.add(c)
    for s in ("s", "ing", "ed", "er"):
        if s not in seen:
            pieces.append((s, -6.0))
            seen.add(s)
    pieces.append(("<mask>", 0.0))
    return pieces


def make_xlmr() -> None:
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification, XLMRobertaModel, XLMRobertaTokenizer

    vocab = xlmr_vocab()
    tok = XLMRobertaTokenizer(vocab=vocab, model_max_length=MAX_LEN)
    cfg = XLMRobertaConfig(vocab_size=len(vocab), hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=37, max_position_embeddings=66, type_vocab_size=1, hidden_act="gelu",
                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.2,
                           layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2, num_labels=1)
    model = XLMRobertaForSequenceClassification(cfg)
    perturb_(model)
    model.eval()
    d = fresh("tiny-xlmr-cls1")
    model.save_pretrained(str(d), safe_serialization=True)
    tok.save_pretrained(str(d))
    write_json(d / "pairs.json", [list(p) for p in PAIRS])
    ref = cls_reference(d, XLMRobertaForSequenceClassification, PAIRS, has_types=False)
    tokens = tok.convert_ids_to_tokens(ref["input_ids_0"].tolist())
    assert tokens[0] == "<s>" and tokens.count("</s>") == 3 and tokens[-1] == "</s>", tokens
    np.testing.assert_allclose(ref["scores"], 1 / (1 + np.exp(-ref["logits"][:, 0])), atol=1e-5)
    np.savez(d / "reference.npz", **ref)

    # the encoder alone, as a plain XLMRobertaModel checkpoint (no "roberta." prefix)
    e = fresh("tiny-xlmr")
    enc_cfg = XLMRobertaConfig.from_dict({**cfg.to_dict(), "architectures": ["XLMRobertaModel"]})
    encoder = XLMRobertaModel(enc_cfg, add_pooling_layer=False)
    encoder.load_state_dict(model.roberta.state_dict())
    encoder.eval().save_pretrained(str(e), safe_serialization=True)
    tok.save_pretrained(str(e))
    write_json(e / "texts.json", XLMR_TEXTS)
    eref: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for i, t in enumerate(XLMR_TEXTS):
            ids = tok(t, truncation=True, return_tensors="pt")["input_ids"]
            eref[f"input_ids_{i}"] = ids[0].numpy().astype(np.int64)
            eref[f"hidden_{i}"] = encoder(input_ids=ids).last_hidden_state[0].numpy().astype(np.float32)
        inside = torch.tensor([[0, 5, 1, 6, 7, 2]])  # the pad id inside a sequence keeps position padding_idx
        eref["pad_inside_ids"] = inside[0].numpy().astype(np.int64)
        eref["pad_inside_hidden"] = encoder(input_ids=inside, attention_mask=torch.ones_like(inside)
                                            ).last_hidden_state[0].numpy().astype(np.float32)
    np.savez(e / "reference.npz", **eref)


def main() -> int:
    import sentence_transformers
    import tokenizers
    import transformers

    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.use_deterministic_algorithms(True)
    OUT.mkdir(parents=True, exist_ok=True)
    make_bert_cls("tiny-bert-cls1", 1, VARIANTS)
    make_bert_cls("tiny-bert-cls3", 3)
    make_xlmr()
    versions = {
        "torch": torch.__version__, "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__, "tokenizers": tokenizers.__version__,
        "numpy": np.__version__, "python": sys.version.split()[0], "date": datetime.date.today().isoformat(),
        "seed": SEED,
    }
    (OUT / "VERSIONS-rerank.json").write_text(json.dumps(versions, indent=2) + "\n", encoding="utf-8")
    names = ("tiny-bert-cls1", "tiny-bert-cls3", "tiny-xlmr-cls1", "tiny-xlmr")
    total = sum(p.stat().st_size for n in names for p in (OUT / n).rglob("*") if p.is_file())
    print(f"wrote {', '.join(names)} under {OUT.relative_to(ROOT)} ({total / 1024:.1f} KiB)")
    assert total < 1024 * 1024, total
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
