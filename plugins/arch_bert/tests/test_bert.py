"""Tiny random-weight BERT fixtures (made by tools/make_bert_fixtures.py) against transformers."""

import json
from pathlib import Path

import numpy as np
import pytest

import gllm
from gllm_core.embedding import embed_sequences
from gllm_core.testing import backend_fixture, load_folder, load_reference

FIXTURES = Path(__file__).parent / "fixtures"
backend = backend_fixture()


def _load(name, backend):
    return load_folder(FIXTURES / name, backend)


def _reference(name):
    return load_reference(FIXTURES / name)


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-bert-f16", "tiny-bert-bf16"])
def test_last_hidden_state_matches_transformers(name, backend):
    model = _load(name, backend)
    ref = _reference(name)
    n = len(json.loads((FIXTURES / name / "texts.json").read_text()))
    for i in range(n):
        ids = ref[f"input_ids_{i}"].tolist()
        (hidden,) = model.model.hidden_states([ids])
        np.testing.assert_allclose(hidden, ref[f"hidden_{i}"], atol=1e-4, rtol=0)


def test_tokenizer_matches_transformers(backend):
    model = _load("tiny-bert", backend)
    ref = _reference("tiny-bert")
    texts = json.loads((FIXTURES / "tiny-bert" / "texts.json").read_text())
    for i, (ids, _) in enumerate(model.tokenizer.encode_batch(texts)):
        assert ids == ref[f"input_ids_{i}"].tolist()


def test_batch_equals_one_at_a_time_and_padded_reference(backend):
    model = _load("tiny-bert", backend)
    ref = _reference("tiny-bert")
    mask = ref["batch_attention_mask"].astype(bool)
    seqs = [row[m].tolist() for row, m in zip(ref["batch_input_ids"], mask)]
    together = model.model.hidden_states(seqs)
    for i, seq in enumerate(seqs):
        (alone,) = model.model.hidden_states([seq])
        np.testing.assert_allclose(together[i], alone, atol=1e-5, rtol=0)
        np.testing.assert_allclose(together[i], ref["batch_hidden"][i][mask[i]], atol=1e-4, rtol=0)


def test_token_type_ids_are_used(backend):
    model = _load("tiny-bert", backend)
    ref = _reference("tiny-bert")
    (hidden,) = model.model.hidden_states([ref["pair_input_ids"].tolist()], [ref["pair_token_type_ids"].tolist()])
    np.testing.assert_allclose(hidden, ref["pair_hidden"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["tiny-st-mean-norm", "tiny-st-cls", "tiny-st-max", "tiny-st-lasttoken"])
def test_sentence_transformers_pooling(name, backend):
    model = _load(name, backend)
    ref = _reference(name)
    texts = json.loads((FIXTURES / name / "texts.json").read_text())
    seqs = model.tokenizer.encode_batch(texts)
    assert [len(ids) for ids, _ in seqs] == ref["token_counts"].tolist()  # cut at max length 48
    vectors = embed_sequences(model, seqs, batch_size=3)
    np.testing.assert_allclose(vectors, ref["embeddings"], atol=1e-4, rtol=0)


def test_plain_checkpoint_pools_by_mean_without_normalising(backend):
    model = _load("tiny-bert", backend)
    ref = _reference("tiny-bert")
    ids = ref["input_ids_0"].tolist()
    (vector,) = model.model.embed([ids])
    np.testing.assert_allclose(vector, ref["hidden_0"].mean(0), atol=1e-4, rtol=0)


def test_client_on_a_fixture_path(tmp_path):
    client = gllm.Client(backend="numpy", home=tmp_path)
    path = str(FIXTURES / "tiny-st-mean-norm")
    out = client.embeddings.create(model=path, input=["the cat", "one"])
    vectors = np.array([d.embedding for d in out.data])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
