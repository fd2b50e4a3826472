"""The real all-MiniLM-L6-v2 through the SDK, against sentence-transformers float32 vectors."""

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

import gllm
from gllm_core.embedding import decode_base64

REF = Path(__file__).parent / "fixtures" / "minilm"


@pytest.fixture(scope="module")
def reference():
    return json.loads((REF / "texts.json").read_text()), np.load(REF / "reference.npz")


def test_minilm_matches_sentence_transformers(client, minilm, reference):
    texts, ref = reference
    assert len(texts) >= 50
    out = client.embeddings.create(model=minilm, input=texts)
    vectors = np.array([d.embedding for d in out.data], dtype=np.float32)
    cos = (vectors * ref["embeddings"]).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(ref["embeddings"], axis=1)
    assert cos.min() >= 0.99999, (cos.min(), texts[int(cos.argmin())][:60])
    assert out.usage.prompt_tokens == out.usage.total_tokens == int(ref["token_counts"].sum())
    assert [d.index for d in out.data] == list(range(len(texts)))
    assert out.object == "list" and out.data[0].object == "embedding" and out.model == minilm


def test_minilm_tokenizer_cuts_at_256_not_128(client, minilm, reference):
    texts, ref = reference
    tokenizer = client.load(minilm).tokenizer
    assert tokenizer.max_length == 256
    for i, (ids, _) in enumerate(tokenizer.encode_batch(texts)):
        assert ids == ref[f"input_ids_{i}"].tolist(), texts[i][:60]
    assert max(ref["token_counts"]) == 256


def test_similar_pair_scores_above_unrelated_pair(client, minilm):
    out = client.embeddings.create(model=minilm, input=["A man is eating food.", "A man is eating a piece of bread.",
                                                        "The stock market fell sharply today."])
    a, b, c = (np.array(d.embedding) for d in out.data)
    assert a @ b > 0.5 > a @ c


def test_input_forms(client, minilm):
    one = client.embeddings.create(model=minilm, input="hello world").data
    assert len(one) == 1 and len(one[0].embedding) == 384
    ids = client.load(minilm).tokenizer.encode("hello world")
    by_ids = client.embeddings.create(model=minilm, input=ids).data[0].embedding
    by_lists = client.embeddings.create(model=minilm, input=[ids, ids[:3]]).data
    np.testing.assert_allclose(by_ids, one[0].embedding, atol=1e-6)
    np.testing.assert_allclose(by_lists[0].embedding, one[0].embedding, atol=1e-6)


def test_base64_and_dimensions(client, minilm):
    full = np.array(client.embeddings.create(model=minilm, input="a sentence").data[0].embedding, dtype=np.float32)
    b64 = client.embeddings.create(model=minilm, input="a sentence", encoding_format="base64").data[0].embedding
    assert isinstance(b64, str)
    np.testing.assert_array_equal(decode_base64(b64), full)
    short = np.array(client.embeddings.create(model=minilm, input="a sentence", dimensions=64).data[0].embedding)
    assert short.shape == (64,)
    np.testing.assert_allclose(np.linalg.norm(short), 1.0, atol=1e-6)
    np.testing.assert_allclose(short, full[:64] / np.linalg.norm(full[:64]), atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(input=[]), "non-empty"),
    (dict(input=None), "non-empty"),
    (dict(input=[1, "a"]), "do not mix"),
    (dict(input=[[1, 2], []]), r"input\[1\]"),
    (dict(input=[10 ** 9]), "outside the vocabulary"),
    (dict(input=[101] * 300), "over the model's limit of 256"),
    (dict(input="x", dimensions=0), "dimensions"),
    (dict(input="x", dimensions=385), "dimensions"),
    (dict(input="x", encoding_format="hex"), "encoding_format"),
])
def test_bad_requests(client, minilm, kwargs, match):
    with pytest.raises(gllm.BadRequestError, match=match):
        client.embeddings.create(model=minilm, **kwargs)


def test_unknown_model_offline_error(client):
    with pytest.raises(gllm.OfflineError, match="gllm import"):
        client.embeddings.create(model="someone/missing-model", input="x")
    with pytest.raises(gllm.InvalidModelNameError):
        client.embeddings.create(model="../escape", input="x")


def test_builder(client, minilm):
    out = client.embeddings.builder().model(minilm).input(["a", "b"]).dimensions(32).generate()
    assert len(out.data) == 2 and len(out.data[1].embedding) == 32
    with pytest.raises(AttributeError):
        client.embeddings.builder().temperature(1.0)


def test_model_is_loaded_once_per_client(client, minilm):
    assert client.load(minilm) is client.load(minilm)


def test_async_concurrent_calls_equal_sync(client, minilm, reference):
    texts, _ = reference
    inputs = [texts[i % len(texts)] if i % 3 else [texts[i % len(texts)], texts[(i + 7) % len(texts)]]
              for i in range(32)]
    expected = [np.array([d.embedding for d in client.embeddings.create(model=minilm, input=x).data]) for x in inputs]

    async def run():
        async with gllm.AsyncClient(backend="numpy") as aclient:
            results = await asyncio.gather(*(aclient.embeddings.create(model=minilm, input=x) for x in inputs))
            built = await aclient.embeddings.builder(model=minilm, input="abc").generate()
            return results, built

    results, built = asyncio.run(run())
    for got, want in zip(results, expected):
        np.testing.assert_allclose(np.array([d.embedding for d in got.data]), want, atol=1e-6)
    assert len(built.data[0].embedding) == 384


def test_cli_embed(minilm):
    from click.testing import CliRunner

    from gllm.cli import cli

    out = CliRunner().invoke(cli, ["embed", minilm, "hello there", "--json", "--backend", "numpy"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert len(data["data"][0]["embedding"]) == 384
    text = CliRunner().invoke(cli, ["embed", minilm, "hello there"]).output
    assert "384 dims" in text
    bad = CliRunner().invoke(cli, ["embed", "no/such-model", "x"])
    assert bad.exit_code == 1 and "gllm import" in bad.output
