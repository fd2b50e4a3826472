"""The engine on a toy causal LM: batching, chunked prefill, joining, cancelling, stopping, logprobs."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from gllm_toy_lm import ToyLM

from gllm_core.errors import BadRequestError
from gllm_core.generation import Engine, GenerationError
from gllm_core.sampling import SamplingParams

V = 97


def greedy_reference(model: ToyLM, prompt: list[int], n: int, eos: set[int] = frozenset()) -> list[int]:
    """Greedy decoding by recomputing every position from scratch (no cache, no batch)."""
    seq = list(prompt)
    out = []
    for _ in range(n):
        t = int(np.argmax(model.logits(seq)))
        out.append(t)
        if t in eos:
            break
        seq.append(t)
    return out


def run(engine: Engine, prompt, **params):
    request = engine.add_request(prompt, SamplingParams(**params))
    tokens, texts, finish = [], [], None
    for out in engine.stream(request):
        tokens += out.token_ids
        texts.append(out.text)
        finish = out.finish_reason or finish
    return tokens, "".join(texts), finish


def prompts(rng, lengths):
    return [rng.integers(0, V, size=n).tolist() for n in lengths]


def test_batch_of_different_lengths_equals_each_alone_and_no_cache_reference():
    rng = np.random.default_rng(1)
    ps = prompts(rng, [1, 5, 17, 40, 3])
    model = ToyLM(V, seed=3)
    engine = Engine(model, max_batch_tokens=8)  # forces chunked prefill mixed with decoding
    requests = [engine.add_request(p, SamplingParams(temperature=0, max_tokens=12)) for p in ps]
    got = {r.id: [] for r in requests}
    finish = {}
    for out in engine.stream(requests):
        got[out.request_id] += out.token_ids
        if out.finish_reason:
            finish[out.request_id] = out.finish_reason
    for r, p in zip(requests, ps):
        alone, _, _ = run(Engine(ToyLM(V, seed=3)), p, temperature=0, max_tokens=12)
        assert got[r.id] == alone == greedy_reference(model, p, 12)
        assert finish[r.id] == "length"
    # decode steps really ran several sequences together, beside prompt chunks
    assert any(sum(1 for n in call if n == 1) >= 2 and any(n > 1 for n in call) for call in model.calls)
    assert max(sum(call) for call in model.calls) <= 8
    assert not model.live  # every cache was given back


def test_new_request_joins_the_running_batch_between_steps():
    rng = np.random.default_rng(2)
    a, b = prompts(rng, [6, 9])
    model = ToyLM(V, seed=4)
    engine = Engine(model)
    ra = engine.add_request(a, SamplingParams(temperature=0, max_tokens=20))
    for _ in range(5):
        engine.step()
    rb = engine.add_request(b, SamplingParams(temperature=0, max_tokens=6))
    joined_at = len(model.calls)
    while engine.has_unfinished():
        engine.step()
    tokens = {r.id: [t for o in r.outputs for t in o.token_ids] for r in (ra, rb)}
    assert tokens[ra.id] == greedy_reference(model, a, 20)
    assert tokens[rb.id] == greedy_reference(model, b, 6)
    assert model.calls[joined_at] == [1, 9]  # a's decode token and b's whole prompt in one pass
    assert model.calls[joined_at + 1] == [1, 1]
    assert not model.live


def test_cancel_frees_the_cache_and_leaves_the_others_alone():
    rng = np.random.default_rng(3)
    a, b = prompts(rng, [4, 7])
    model = ToyLM(V, seed=5)
    engine = Engine(model)
    ra = engine.add_request(a, SamplingParams(temperature=0, max_tokens=30))
    rb = engine.add_request(b, SamplingParams(temperature=0, max_tokens=10))
    for _ in range(3):
        engine.step()
    assert len(model.live) == 2
    engine.cancel(ra.id)
    assert len(model.live) == 1 and ra.finished and ra.outputs[-1].finish_reason == "cancelled"
    while engine.has_unfinished():
        engine.step()
    assert [t for o in rb.outputs for t in o.token_ids] == greedy_reference(model, b, 10)
    assert not model.live


def test_leaving_a_stream_early_cancels_it():
    model = ToyLM(V, seed=6)
    engine = Engine(model)
    request = engine.add_request([1, 2, 3], SamplingParams(temperature=0, max_tokens=50))
    for i, _ in enumerate(engine.stream(request)):
        if i == 3:
            break
    assert request.finished and not model.live and not engine.has_unfinished()


def test_waiting_requests_run_when_a_slot_frees():
    model = ToyLM(V, seed=7)
    engine = Engine(model, max_running=2)
    rng = np.random.default_rng(4)
    ps = prompts(rng, [3, 4, 5, 6, 2])
    requests = [engine.add_request(p, SamplingParams(temperature=0, max_tokens=4 + i)) for i, p in enumerate(ps)]
    outs = {r.id: [] for r in requests}
    for out in engine.stream(requests):
        outs[out.request_id] += out.token_ids
    assert max(len(c) for c in model.calls) == 2
    for i, (r, p) in enumerate(zip(requests, ps)):
        assert outs[r.id] == greedy_reference(model, p, 4 + i)


@pytest.mark.parametrize("jitter", [0.0, 0.003])
def test_threads_streaming_together_are_batched_and_equal_alone(jitter):
    rng = np.random.default_rng(5)
    for _ in range(5):  # a few rounds: every thread must see all of its outputs, whoever steps
        model = ToyLM(V, seed=8)
        engine = Engine(model, max_batch_tokens=16)
        ps = prompts(rng, [5, 11, 2, 8])
        delays = rng.random(len(ps)) * jitter
        barrier = threading.Barrier(len(ps))
        results: dict[int, list[int]] = {}

        def worker(i):
            request = engine.add_request(ps[i], SamplingParams(temperature=0, max_tokens=15))
            barrier.wait()
            time.sleep(delays[i])
            results[i] = [t for out in engine.stream(request) for t in out.token_ids]

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(ps))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert all(not t.is_alive() for t in threads)
        for i, p in enumerate(ps):
            assert results[i] == greedy_reference(model, p, 15)
        assert max(len(c) for c in model.calls) == len(ps)
        assert not model.live and not engine.has_unfinished()


def test_end_of_sequence_token_stops_and_max_tokens_is_exact():
    model = ToyLM(V, seed=9, script=[5, 6, 7, 8, 9, 10], eos_id=96)
    engine = Engine(model, stop_token_ids=[96])
    tokens, _, finish = run(engine, [5, 6], temperature=0, max_tokens=20)
    assert tokens == [7, 8, 9, 10, 96] and finish == "stop"
    tokens, _, finish = run(engine, [5, 6], temperature=0, max_tokens=3)
    assert tokens == [7, 8, 9] and finish == "length"
    tokens, _, finish = run(engine, [5, 6], temperature=0, max_tokens=6, ignore_eos=True)
    assert len(tokens) == 6 and tokens[4] == 96 and finish == "length"
    tokens, _, finish = run(engine, [5, 6], temperature=0, max_tokens=20, stop_token_ids=[9])
    assert tokens == [7, 8, 9] and finish == "stop"


def test_context_length_is_enforced():
    model = ToyLM(V, seed=10, max_position_embeddings=16)
    engine = Engine(model)
    tokens, _, finish = run(engine, list(range(10)), temperature=0)  # no max_tokens: up to the context
    assert len(tokens) == 6 and finish == "length"
    with pytest.raises(BadRequestError, match="context length of 16"):
        engine.add_request(list(range(10)), SamplingParams(max_tokens=7))
    with pytest.raises(BadRequestError, match="16"):
        engine.add_request(list(range(16)), SamplingParams())


@pytest.mark.parametrize("params, field", [
    (dict(max_tokens=-1), "max_tokens"), (dict(max_tokens=0), "max_tokens"), (dict(temperature=-0.1), "temperature"),
    (dict(temperature=float("nan")), "temperature"), (dict(top_p=0), "top_p"), (dict(top_p=1.5), "top_p"),
    (dict(n=0), "n"), (dict(top_k=-2), "top_k"), (dict(min_p=2), "min_p"), (dict(presence_penalty=3), "presence"),
    (dict(frequency_penalty=-2.5), "frequency"), (dict(repetition_penalty=0), "repetition"),
    (dict(seed="x"), "seed"), (dict(stop=[""]), "stop"), (dict(stop=[1]), "stop"), (dict(logprobs=21), "logprobs"),
    (dict(max_tokens=True), "max_tokens"),
])
def test_bad_parameters_are_refused_by_name(params, field):
    engine = Engine(ToyLM(V))
    with pytest.raises(BadRequestError, match=field):
        engine.add_request([1, 2], SamplingParams(**params))


def test_bad_prompts_are_refused():
    engine = Engine(ToyLM(V))
    for prompt in ([], [V], [-1], [1.5], [True], "text"):
        with pytest.raises(BadRequestError):
            engine.add_request(prompt, SamplingParams(max_tokens=2))


def test_seeded_sampling_is_reproducible_alone_or_batched():
    model = ToyLM(V, seed=11, scale=1.0)
    p = dict(temperature=1.3, top_p=0.95, max_tokens=25, seed=1234)
    alone = run(Engine(model), [1, 2, 3], **p)[0]
    again = run(Engine(model), [1, 2, 3], **p)[0]
    other = run(Engine(model), [1, 2, 3], **dict(p, seed=99))[0]
    assert alone == again and alone != other
    engine = Engine(model)
    noise = engine.add_request([4, 5, 6, 7], SamplingParams(temperature=1.0, max_tokens=30))
    mine = engine.add_request([1, 2, 3], SamplingParams(**p))
    got = [t for o in engine.stream([noise, mine]) if o.request_id == mine.id for t in o.token_ids]
    assert got == alone


def test_n_choices_differ_and_each_is_reproducible():
    model = ToyLM(V, seed=12, scale=1.0)
    params = SamplingParams(temperature=1.0, max_tokens=10, seed=7, n=3)
    choices = [[], [], []]
    engine = Engine(model)
    for out in engine.stream(engine.add_request([3, 1], params)):
        choices[out.index] += out.token_ids
    again = [[], [], []]
    for out in engine.stream(engine.add_request([3, 1], SamplingParams(temperature=1.0, max_tokens=10, seed=7, n=3))):
        again[out.index] += out.token_ids
    assert choices == again and len({tuple(c) for c in choices}) == 3


def test_top_k_1_equals_greedy():
    model = ToyLM(V, seed=13, scale=1.0)
    greedy = run(Engine(model), [9, 8, 7], temperature=0, max_tokens=20)[0]
    for seed in (1, 2, 3):
        assert run(Engine(model), [9, 8, 7], temperature=1.5, top_k=1, seed=seed, max_tokens=20)[0] == greedy


def test_logprobs_are_the_models_log_softmax():
    model = ToyLM(V, seed=14, scale=6.0)
    engine = Engine(model)
    prompt = [10, 20, 30]
    request = engine.add_request(prompt, SamplingParams(temperature=0.8, seed=3, max_tokens=8, logprobs=5))
    entries = [e for out in engine.stream(request) for e in out.logprobs]
    assert len(entries) == 8
    seq = list(prompt)
    for e in entries:
        x = model.logits(seq).astype(np.float64)
        ref = x - x.max() - np.log(np.exp(x - x.max()).sum())
        assert abs(e.logprob - ref[e.token_id]) < 1e-9
        order = np.argsort(-ref, kind="stable")[:5]
        assert [t for t, _ in e.top] == order.tolist()
        np.testing.assert_allclose([lp for _, lp in e.top], ref[order], atol=1e-9)
        seq.append(e.token_id)


def test_a_failing_model_fails_its_requests_without_hanging():
    class Broken(ToyLM):
        def forward(self, tokens, caches, all_logits=False):
            if len(self.calls) >= 2:
                self.calls.append([])
                raise RuntimeError("device lost")
            return super().forward(tokens, caches, all_logits)

    model = Broken(V)
    engine = Engine(model)
    request = engine.add_request([1, 2], SamplingParams(temperature=0, max_tokens=10))
    with pytest.raises(RuntimeError, match="device lost"):
        list(engine.stream(request))
    assert request.finished and not model.live and not engine.has_unfinished()

    class NaN(ToyLM):
        def logits(self, prefix):
            return np.full(self.vocab_size, np.nan, dtype=np.float32)

    nan_model = NaN(V)
    with pytest.raises(GenerationError, match="non-finite"):
        run(Engine(nan_model), [1], max_tokens=3)
    assert not nan_model.live


def test_a_cancel_during_a_step_is_applied_when_that_step_ends():
    class Paused(ToyLM):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.entered, self.resume = threading.Event(), threading.Event()

        def forward(self, tokens, caches, all_logits=False):
            if len(self.calls) == 2:
                self.entered.set()
                assert self.resume.wait(30)
            return super().forward(tokens, caches, all_logits)

    model = Paused(V, seed=15)
    engine = Engine(model)
    request = engine.add_request([1, 2, 3], SamplingParams(temperature=0, max_tokens=40))
    engine.step()
    engine.step()
    stepper = threading.Thread(target=engine.step)
    stepper.start()
    assert model.entered.wait(30)
    engine.cancel(request.id)  # the step holds the engine: the cancel waits for it, not for a next step
    model.resume.set()
    stepper.join(30)
    assert request.finished and request.outputs[-1].finish_reason == "cancelled"
    assert not model.live and not engine.has_unfinished()
