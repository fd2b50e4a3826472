"""Make tiny random-weight BERT fixtures and float32 reference outputs for plugins/arch_bert.

Writes under ``plugins/arch_bert/tests/fixtures/``:

* ``tiny-bert/``       BertModel (hidden 32, 2 layers, 4 heads, intermediate 37, max positions 64,
                       type vocab 2, hidden_act "gelu"), float32 safetensors, plain HF checkpoint.
* ``tiny-bert-f16/``   the same weights saved in float16.
* ``tiny-bert-bf16/``  the same weights saved in bfloat16.
  For these two the references are computed by the float32 model run on the *rounded* weights
  (loaded back from the f16/bf16 file and cast to float32).
* ``tiny-st-mean-norm/``  sentence-transformers folder: Transformer(max_seq_length 48) + mean Pooling + Normalize
* ``tiny-st-cls/``        ... + cls Pooling (its BertModel config uses hidden_act "gelu_new", tanh GELU)
* ``tiny-st-max/``        ... + max Pooling
* ``tiny-st-lasttoken/``  ... + lasttoken Pooling
* ``VERSIONS.json``    torch / transformers / sentence-transformers / tokenizers versions and the date.

Each folder holds config.json, model.safetensors, a tiny WordPiece tokenizer (tokenizer.json,
tokenizer_config.json, special_tokens_map.json, vocab.txt), texts.json and reference.npz.

reference.npz keys
  tiny-bert*:  input_ids_<i> (int64 [L_i], with [CLS]/[SEP]), hidden_<i> (float32 [L_i, H],
               last_hidden_state of text i alone), batch_input_ids / batch_attention_mask
               (int64 [N, Lmax], right-padded), batch_hidden (float32 [N, Lmax, H]; values at padded
               positions are whatever HF produced there: compare only where the mask is 1),
               pair_input_ids / pair_token_type_ids (int64 [Lp]) and pair_hidden (float32 [Lp, H])
               for one (text, text) pair, exercising token type 1.
  tiny-st-*:   embeddings (float32 [N, H], model.encode(texts, batch_size=4,
               normalize_embeddings=False) -- the folder's own Normalize module still applies),
               token_counts (int64 [N], tokens after truncation to 48), input_ids_<i> (int64,
               truncated ids the model saw).

Needs (tools only, never gllm itself): pip install torch==2.13.0 transformers sentence-transformers
Run from the repo root:  python tools/make_bert_fixtures.py
"""

from __future__ import annotations

import datetime
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "plugins" / "arch_bert" / "tests" / "fixtures"

SEED = 1234
HIDDEN = 32
ST_MAX_SEQ = 48

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = """
the a an and or but if of to in on at by for with from as is are was were be been being
it this that these those he she they we you i me him her them us my your our their its
cat cats dog dogs bird fish horse cow mouse house home car road tree trees water fire sun moon
star sky sea river city town world people man woman child children day night time year week
red blue green black white small big large old new good bad fast slow happy sad hot cold
run runs ran running walk walked eat eats ate see saw seen go went make made take took
say said know knew think thought come came give gave find found tell told work play read
write book books word words text model token embed vector search query answer question
one two three four five six seven eight nine ten hundred
not no yes very all some many more most other only just also then there here when where why how what who
""".split()
SUFFIXES = ["##s", "##es", "##ed", "##ing", "##er", "##est", "##ly", "##ness", "##tion", "##ment"]
LETTERS = list("abcdefghijklmnopqrstuvwxyz")
DIGITS = list("0123456789")
PUNCT = list(".,;:!?'\"-()[]{}/\\@#$%&*+=<>_~`^|")


def build_vocab() -> list[str]:
    vocab: list[str] = []
    for t in SPECIALS + WORDS + LETTERS + DIGITS + PUNCT + SUFFIXES + ["##" + c for c in LETTERS + DIGITS]:
        if t not in vocab:
            vocab.append(t)
    return vocab


# Texts for the plain BertModel fixtures: all stay below 64 tokens (max_position_embeddings).
BERT_TEXTS = [
    "The cat sat on the mat.",
    "Hello, World! Dogs run fast; birds fly high.",
    "one",
    "Héllo naïve café — ÜBER Straße 42 times?",
    "The quick brown fox jumps over the lazy dog 123 times (maybe).",
    "  lots   of\twhitespace \n here  ",
    "zyxwvut qqq embedding vectors searching books.",
]
PAIR = ("what is the answer to the question?", "the answer is in the book.")

# Texts for the sentence-transformers fixtures. Index 6 is far longer than 48 tokens.
ST_TEXTS = [
    "The cat sat on the mat.",
    "dog",
    "Searching for small vectors in a large world of words.",
    "Héllo naïve café — ÜBER Straße!",
    "What is the answer to the question? Nobody knows.",
    "1 2 3 4 5 6 7 8 9 10",
    " ".join(["the big red dog ran to the old house and ate the small fish"] * 6),
    "  odd\twhitespace\n\nand UPPER case  ",
]


def perturb_(model: torch.nn.Module) -> None:
    """Make LayerNorm weights/biases and all biases non-trivial so they are actually tested."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))


def make_tokenizer(vocab: list[str], model_max_length: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    v = {t: i for i, t in enumerate(vocab)}
    tok = Tokenizer(models.WordPiece(v, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", v["[CLS]"]), ("[SEP]", v["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    return BertTokenizerFast(
        tokenizer_object=tok,
        do_lower_case=True,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
    )


def save_tokenizer(tokenizer, vocab: list[str], d: Path) -> None:
    tokenizer.save_pretrained(str(d))
    # transformers 5 writes only tokenizer.json + tokenizer_config.json; add the classic files.
    if not (d / "vocab.txt").exists():
        (d / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    if not (d / "special_tokens_map.json").exists():
        stm = {"cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]",
               "sep_token": "[SEP]", "unk_token": "[UNK]"}
        (d / "special_tokens_map.json").write_text(json.dumps(stm, indent=2) + "\n", encoding="utf-8")


def write_texts(d: Path, texts: list[str]) -> None:
    (d / "texts.json").write_text(json.dumps(texts, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def load_f32(d: Path):
    from transformers import BertModel

    m = BertModel.from_pretrained(str(d), attn_implementation="eager", dtype=torch.float32)
    return m.float().eval()


@torch.no_grad()
def bert_reference(model, tokenizer, texts: list[str]) -> dict[str, np.ndarray]:
    ref: dict[str, np.ndarray] = {}
    for i, t in enumerate(texts):
        enc = tokenizer(t, return_tensors="pt")
        assert enc["input_ids"].shape[1] <= model.config.max_position_embeddings
        out = model(**enc).last_hidden_state[0]
        ref[f"input_ids_{i}"] = enc["input_ids"][0].numpy().astype(np.int64)
        ref[f"hidden_{i}"] = out.numpy().astype(np.float32)
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    out = model(**enc).last_hidden_state
    ref["batch_input_ids"] = enc["input_ids"].numpy().astype(np.int64)
    ref["batch_attention_mask"] = enc["attention_mask"].numpy().astype(np.int64)
    ref["batch_hidden"] = out.numpy().astype(np.float32)
    # consistency: padded batch matches the single runs where mask == 1
    for i in range(len(texts)):
        n = len(ref[f"input_ids_{i}"])
        np.testing.assert_allclose(ref["batch_hidden"][i, :n], ref[f"hidden_{i}"], atol=1e-5)
    enc = tokenizer(*PAIR, return_tensors="pt")
    ref["pair_input_ids"] = enc["input_ids"][0].numpy().astype(np.int64)
    ref["pair_token_type_ids"] = enc["token_type_ids"][0].numpy().astype(np.int64)
    ref["pair_hidden"] = model(**enc).last_hidden_state[0].numpy().astype(np.float32)
    assert ref["pair_token_type_ids"].max() == 1
    return ref


def make_bert_folder(name: str, model, tokenizer, vocab, texts, dtype=None) -> None:
    d = OUT / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    m = model if dtype is None else model.to(dtype)
    m.save_pretrained(str(d), safe_serialization=True)
    save_tokenizer(tokenizer, vocab, d)
    write_texts(d, texts)
    # Reference from the weights as stored (rounded for f16/bf16), run in float32.
    ref_model = load_f32(d)
    np.savez(d / "reference.npz", **bert_reference(ref_model, tokenizer, texts))


def make_st_folder(name: str, base_dir: Path, pooling: str, normalize: bool, texts) -> np.ndarray:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    d = OUT / name
    if d.exists():
        shutil.rmtree(d)
    tr = Transformer(str(base_dir), max_seq_length=ST_MAX_SEQ, model_kwargs={"attn_implementation": "eager"})
    mods = [tr, Pooling(HIDDEN, pooling_mode=pooling)]
    if normalize:
        mods.append(Normalize())
    st = SentenceTransformer(modules=mods, device="cpu")
    st.save(str(d), safe_serialization=True)
    write_texts(d, texts)
    for f in ("vocab.txt", "special_tokens_map.json"):  # transformers 5 no longer writes these
        if not (d / f).exists():
            shutil.copy(base_dir / f, d / f)

    # Reload from disk exactly as a user would, then encode.
    st2 = SentenceTransformer(str(d), device="cpu", model_kwargs={"attn_implementation": "eager"})
    st2.eval()
    assert st2.max_seq_length == ST_MAX_SEQ, st2.max_seq_length
    with torch.no_grad():
        emb = st2.encode(texts, convert_to_numpy=True, normalize_embeddings=False, batch_size=4)
    emb = np.asarray(emb, dtype=np.float32)
    ref: dict[str, np.ndarray] = {"embeddings": emb}
    counts = []
    for i, t in enumerate(texts):
        ids = st2.tokenize([t])["input_ids"][0].numpy().astype(np.int64)
        ref[f"input_ids_{i}"] = ids
        counts.append(len(ids))
    ref["token_counts"] = np.asarray(counts, dtype=np.int64)
    assert ref["token_counts"].max() == ST_MAX_SEQ, "expected one text truncated to max_seq_length"
    np.savez(d / "reference.npz", **ref)
    return emb


def main() -> int:
    import sentence_transformers
    import tokenizers
    import transformers
    from transformers import BertConfig, BertModel

    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.use_deterministic_algorithms(True)
    OUT.mkdir(parents=True, exist_ok=True)

    vocab = build_vocab()
    tokenizer = make_tokenizer(vocab, model_max_length=64)

    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        type_vocab_size=2,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        initializer_range=0.2,
        layer_norm_eps=1e-12,
        pad_token_id=0,
    )
    cfg._attn_implementation = "eager"
    model = BertModel(cfg)
    perturb_(model)
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}

    make_bert_folder("tiny-bert", model, tokenizer, vocab, BERT_TEXTS)
    for name, dt in (("tiny-bert-f16", torch.float16), ("tiny-bert-bf16", torch.bfloat16)):
        m = BertModel(cfg)
        m.load_state_dict(state)
        m.eval()
        make_bert_folder(name, m, tokenizer, vocab, BERT_TEXTS, dtype=dt)

    # Base for the gelu_new (tanh) variant: same weights, different activation.
    tmp = OUT / "_tmp_gelu_new"
    if tmp.exists():
        shutil.rmtree(tmp)
    cfg_new = BertConfig.from_dict({**cfg.to_dict(), "hidden_act": "gelu_new"})
    m = BertModel(cfg_new)
    m.load_state_dict(state)
    m.save_pretrained(str(tmp), safe_serialization=True)
    save_tokenizer(tokenizer, vocab, tmp)

    # tokenizer_config.json keeps model_max_length 64; sentence_bert_config.json says 48.
    base = OUT / "tiny-bert"
    make_st_folder("tiny-st-mean-norm", base, "mean", True, ST_TEXTS)
    cls_new = make_st_folder("tiny-st-cls", tmp, "cls", False, ST_TEXTS)
    make_st_folder("tiny-st-max", base, "max", False, ST_TEXTS)
    make_st_folder("tiny-st-lasttoken", base, "lasttoken", False, ST_TEXTS)

    # Check that gelu vs gelu_new is actually distinguishable at the tolerance tests will use.
    cls_gelu = make_st_folder("_tmp_cls_gelu", base, "cls", False, ST_TEXTS)
    diff = float(np.abs(cls_new - cls_gelu).max())
    print(f"gelu vs gelu_new max |diff| on tiny-st-cls embeddings: {diff:.3e}")
    assert diff > 3e-4, diff  # tests compare at 1e-4
    shutil.rmtree(OUT / "_tmp_cls_gelu")
    shutil.rmtree(tmp)

    versions = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "date": datetime.date.today().isoformat(),
        "seed": SEED,
        "vocab_size": len(vocab),
    }
    (OUT / "VERSIONS.json").write_text(json.dumps(versions, indent=2) + "\n", encoding="utf-8")

    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT.relative_to(ROOT)} ({total / 1024:.1f} KiB)")
    assert total < 2 * 1024 * 1024, total
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
