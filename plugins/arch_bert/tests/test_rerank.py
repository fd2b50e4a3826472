"""Cross-encoders (made by tools/make_rerank_fixtures.py) against transformers and CrossEncoder."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import gllm
from gllm_core.errors import BadRequestError, CorruptFileError, UnsupportedArchitectureError
from gllm_core.plugins import get_registry
from gllm_core.rerank import score_documents
from gllm_core.selection import create_backend
from gllm_core.testing import backend_fixture, load_folder, load_reference
from tools.model_variants import apply_variant

FIXTURES = Path(__file__).parent / "fixtures"
CROSS_ENCODERS = ["tiny-bert-cls1", "tiny-bert-cls3", "tiny-xlmr-cls1"]
backend = backend_fixture()


def _reference(name):
    return load_reference(FIXTURES / name)


def _pairs(name):
    return [tuple(p) for p in json.loads((FIXTURES / name / "pairs.json").read_text())]


@pytest.mark.parametrize("name", CROSS_ENCODERS)
def test_pairs_are_encoded_as_cross_encoder_did(name, backend):
    model = load_folder(FIXTURES / name, backend)
    ref = _reference(name)
    encoded = model.tokenizer.encode_pairs(_pairs(name))
    assert max(len(ids) for ids, _ in encoded) == 40  # the long document is cut at the model's limit
    for i, (ids, types) in enumerate(encoded):
        assert ids == ref[f"input_ids_{i}"].tolist(), i
        assert types == ref[f"token_type_ids_{i}"].tolist(), i
    if name.startswith("tiny-bert"):
        assert max(max(t) for _, t in encoded) == 1  # the document side has token type 1


@pytest.mark.parametrize("name", CROSS_ENCODERS)
def test_logits_match_transformers(name, backend):
    model = load_folder(FIXTURES / name, backend)
    ref = _reference(name)
    n = len(_pairs(name))
    ids = [ref[f"input_ids_{i}"].tolist() for i in range(n)]
    types = [ref[f"token_type_ids_{i}"].tolist() for i in range(n)]
    together = model.model.score_pairs(ids, types)
    assert together.shape == ref["logits"].shape and together.dtype == np.float32
    np.testing.assert_allclose(together, ref["logits"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(together, ref["batch_logits"], atol=1e-4, rtol=0)
    for i in (0, 3):
        np.testing.assert_allclose(model.model.score_pairs([ids[i]], [types[i]])[0], ref["logits"][i], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name, activation", [("tiny-bert-cls1", "sigmoid"), ("tiny-bert-cls3", "identity"),
                                              ("tiny-xlmr-cls1", "sigmoid")])
def test_scores_match_cross_encoder_predict(name, activation, backend):
    model = load_folder(FIXTURES / name, backend)
    ref = _reference(name)
    assert model.model.activation == activation
    encoded = model.tokenizer.encode_pairs(_pairs(name))
    scores = model.model.activate(model.model.score_pairs([e[0] for e in encoded], [e[1] for e in encoded]))
    np.testing.assert_allclose(scores.reshape(ref["scores"].shape), ref["scores"], atol=1e-4, rtol=0)


VARIANTS = json.loads((FIXTURES / "tiny-bert-cls1" / "variants.json").read_text())


def _variant_copy(tmp_path, variant: dict) -> Path:
    """tiny-bert-cls1 changed as tools/make_rerank_fixtures.py changed it for the variant's reference."""
    folder = tmp_path / "tiny-bert-cls1"
    shutil.copytree(FIXTURES / "tiny-bert-cls1", folder)
    apply_variant(folder, variant)
    return folder


@pytest.mark.parametrize("key", sorted(VARIANTS))
def test_activation_follows_cross_encoder_config(key, tmp_path):
    model = load_folder(_variant_copy(tmp_path, VARIANTS[key]), create_backend(get_registry(), "numpy"))
    ref = _reference("tiny-bert-cls1")
    encoded = model.tokenizer.encode_pairs(_pairs("tiny-bert-cls1"))
    scores = model.model.activate(model.model.score_pairs([e[0] for e in encoded], [e[1] for e in encoded]))[:, 0]
    np.testing.assert_allclose(scores, ref[f"scores_{key}"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("value, error, match", [
    ("torch.nn.modules.activation.GELU", UnsupportedArchitectureError, "GELU.*not supported"),
    (3, CorruptFileError, "activation_fn must be a string"),
])
def test_unknown_activation_is_refused(value, error, match, tmp_path):
    folder = _variant_copy(tmp_path, {"config.json": {"sentence_transformers": {"activation_fn": value}}})
    with pytest.raises(error, match=match):
        load_folder(folder, create_backend(get_registry(), "numpy"))


def test_bert_cross_encoder_without_pooler_is_refused(tmp_path):
    folder = _variant_copy(tmp_path, {})
    from safetensors.numpy import load_file, save_file

    tensors = {k: v for k, v in load_file(folder / "model.safetensors").items() if "pooler" not in k}
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(CorruptFileError, match="pooler"):
        load_folder(folder, create_backend(get_registry(), "numpy"))


def test_batches_give_the_same_scores(backend):
    model = load_folder(FIXTURES / "tiny-bert-cls1", backend)
    ref = _reference("tiny-bert-cls1")
    pairs = _pairs("tiny-bert-cls1")
    query = pairs[2][0]
    rows = [i for i, (q, _) in enumerate(pairs) if q == query]
    for batch_size in (1, 2, 32):
        scores, tokens = score_documents(model, query, [pairs[i][1] for i in rows], batch_size=batch_size)
        np.testing.assert_allclose(scores, ref["scores"][rows], atol=1e-4, rtol=0)
        assert tokens == sum(len(ref[f"input_ids_{i}"]) for i in rows)


def test_xlmr_positions_follow_the_pad_id(backend):
    """XLM-R numbers positions from padding_idx + 1; a pad id inside a sequence keeps padding_idx."""
    model = load_folder(FIXTURES / "tiny-xlmr", backend)
    ref = _reference("tiny-xlmr")
    texts = json.loads((FIXTURES / "tiny-xlmr" / "texts.json").read_text())
    seqs = [ref[f"input_ids_{i}"].tolist() for i in range(len(texts))] + [ref["pad_inside_ids"].tolist()]
    expected = [ref[f"hidden_{i}"] for i in range(len(texts))] + [ref["pad_inside_hidden"]]
    assert [ids for ids, _ in model.tokenizer.encode_batch(texts)] == seqs[:-1]
    for got, want in zip(model.model.hidden_states(seqs), expected):
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    (alone,) = model.model.hidden_states([seqs[-1]])
    np.testing.assert_allclose(alone, expected[-1], atol=1e-4, rtol=0)
    assert model.model.encoder.max_positions == 64  # 66 position rows less padding_idx + 1


def test_xlmr_model_embeds_by_mean_pooling(tmp_path):
    client = gllm.Client(backend="numpy", home=tmp_path)
    ref = _reference("tiny-xlmr")
    texts = json.loads((FIXTURES / "tiny-xlmr" / "texts.json").read_text())
    out = client.embeddings.create(model=str(FIXTURES / "tiny-xlmr"), input=texts)
    for i, item in enumerate(out.data):
        np.testing.assert_allclose(item.embedding, ref[f"hidden_{i}"].mean(0), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["tiny-bert-cls1", "tiny-xlmr-cls1"])
def test_client_reranks_with_a_cross_encoder(name, tmp_path):
    client = gllm.Client(backend="numpy", home=tmp_path)
    ref = _reference(name)
    pairs = _pairs(name)
    query = pairs[2][0]
    rows = [i for i, (q, _) in enumerate(pairs) if q == query]
    docs = [pairs[i][1] for i in rows]
    out = client.rerank.create(model=str(FIXTURES / name), query=query, documents=docs)
    expected = ref["scores"][rows]
    assert [r.index for r in out.results] == list(np.argsort(-expected, kind="stable"))
    for r in out.results:
        assert r.relevance_score == pytest.approx(float(expected[r.index]), abs=1e-4)
        assert r.document == {"text": docs[r.index]}
    assert out.usage.total_tokens == sum(len(ref[f"input_ids_{i}"]) for i in rows)
    raw = client.rerank.create(model=str(FIXTURES / name), query=query, documents=docs, raw_scores=True, top_n=1)
    best = int(np.argmax(ref["logits"][rows, 0]))
    assert [r.index for r in raw.results] == [best]
    assert raw.results[0].relevance_score == pytest.approx(float(ref["logits"][rows[best], 0]), abs=1e-4)


def test_query_is_never_truncated(tmp_path):
    client = gllm.Client(backend="numpy", home=tmp_path)
    path = str(FIXTURES / "tiny-bert-cls1")
    tokenizer = client.load(path).tokenizer
    fits = " ".join(["dog"] * 36)  # 36 tokens + [CLS] [SEP] [SEP] = 39: one token is left for the document
    out = client.rerank.create(model=path, query=fits, documents=["the dog ran", "the cat"])
    assert out.usage.total_tokens == 2 * 40
    assert len(tokenizer.encode_pairs([(fits, "the dog ran")])[0][0]) == 40
    with pytest.raises(BadRequestError, match=r"query is 40 tokens .* limit of 40"):
        client.rerank.create(model=path, query=fits + " dog", documents=["the dog ran"])


def test_multi_label_model_does_not_rerank(tmp_path):
    client = gllm.Client(backend="numpy", home=tmp_path)
    with pytest.raises(BadRequestError, match="3 labels"):
        client.rerank.create(model=str(FIXTURES / "tiny-bert-cls3"), query="q", documents=["d"])


def test_cross_encoder_does_not_embed(tmp_path):
    client = gllm.Client(backend="numpy", home=tmp_path)
    with pytest.raises(BadRequestError, match="does not make embeddings"):
        client.embeddings.create(model=str(FIXTURES / "tiny-bert-cls1"), input="hello")


def test_registered_architectures_and_aliases():
    registry = get_registry()
    served = {n for a in registry.architectures.values() for n in a.hf_architectures}
    assert {"BertForSequenceClassification", "XLMRobertaForSequenceClassification", "XLMRobertaModel"} <= served
    assert registry.aliases["bge-reranker:v2-m3"].repo == "BAAI/bge-reranker-v2-m3"
    assert registry.aliases["ms-marco-minilm:l6"].repo == "cross-encoder/ms-marco-MiniLM-L6-v2"
