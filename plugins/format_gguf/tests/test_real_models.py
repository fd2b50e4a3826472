"""The real GGUF models on the cpu backend: greedy tokens equal llama.cpp's, and useful answers.

``fixtures/llamacpp_greedy.json`` was recorded by tools/record_llamacpp.py with llama.cpp
(llama-cpp-python built from source): for each candidate prompt, llama.cpp's prompt ids and its
first greedy tokens. The tests hold gllm to the prompts marked ``selected`` (those whose greedy
path never has its two best logits within a few tenths of each other; closer than that, two
correct float32 implementations may pick differently), and check the tokenizer and chat template
on every candidate.
"""

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import gllm
from gllm_core.chat_template import ChatTemplate
from gllm_core.plugins import get_registry
from gllm_core.store import ModelStore

RECORD = json.loads((Path(__file__).parent / "fixtures" / "llamacpp_greedy.json").read_text())
MODELS = list(RECORD["models"])


@pytest.fixture(scope="module")
def client(fetch):
    store = ModelStore(aliases=get_registry().aliases)
    for alias in MODELS:
        fetch.import_model(alias, store=store)  # as a user brings in a downloaded file
    return gllm.Client(backend="cpu")


def _cases(alias, selected=None):
    results = RECORD["models"][alias]["results"]
    return [r for r in results if selected is None or r["selected"] == selected]


def _greedy(loaded, prompts, limits):
    """Greedy tokens for several prompts, decoded together as one batch (each stops on its own)."""
    lm, stops = loaded.model, set(loaded.tokenizer.stop_token_ids)
    caches = [lm.new_cache() for _ in prompts]
    outs = [[] for _ in prompts]
    try:
        logits = lm.forward([list(p) for p in prompts], caches)
        live = list(range(len(prompts)))
        while live:
            step = []
            for row, i in enumerate(live):
                token = int(np.argmax(logits[row]))
                outs[i].append(token)
                if token not in stops and len(outs[i]) < limits[i]:
                    step.append(i)
            live = step
            if live:
                logits = lm.forward([[outs[i][-1]] for i in live], [caches[i] for i in live])
        return outs
    finally:
        for cache in caches:
            cache.free()


@pytest.mark.parametrize("alias", MODELS)
def test_prompts_tokenize_as_llama_cpp_does(client, alias):
    loaded = client.load(alias)
    tok = loaded.tokenizer
    template = ChatTemplate(tok.chat_template, special_tokens={"bos_token": tok.bos_token or "",
                                                                "eos_token": tok.eos_token or ""})
    for case in _cases(alias):
        if "messages" in case:
            assert template.render(case["messages"]) == case["prompt_text"]
        assert tok.encode_prompt(case["prompt_text"]) == case["prompt_ids"]


@pytest.mark.parametrize("alias", MODELS)
def test_greedy_tokens_equal_llama_cpp(client, alias):
    loaded = client.load(alias)
    cases = _cases(alias, selected=True)
    assert len(cases) >= 5
    outs = _greedy(loaded, [c["prompt_ids"] for c in cases], [len(c["generated_ids"]) for c in cases])
    for case, got in zip(cases, outs):
        assert got == case["generated_ids"], (f"{alias} {case.get('messages') or case.get('text')!r}: gllm "
                                              f"{loaded.tokenizer.decode(got)!r} vs llama.cpp "
                                              f"{case['generated_text']!r}")
    assert RECORD["llama_cpp_python"] == "0.3.36" and RECORD["models"][alias]["n_tokens"] == 32


def test_smollm2_knows_the_capital_of_france(client):
    answer = client.chat.completions.create(
        model="smollm2:135m", temperature=0, max_tokens=24,
        messages=[{"role": "system", "content": "You are a helpful assistant."},
                  {"role": "user", "content": "What is the capital of France?"}])
    assert "Paris" in answer.choices[0].message.content


TASK = "Write a Python function is_prime(n) that returns True when n is a prime number. Reply with only the code."
CHECK = textwrap.dedent("""
    primes = [n for n in range(-5, 200) if is_prime(n)]
    assert primes[:10] == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29], primes[:10]
    assert len(primes) == 46 and is_prime(7919) and not is_prime(7917)
    print("ok")
""")


def test_qwen_coder_writes_code_that_passes_its_task(client, tmp_path):
    answer = client.chat.completions.create(model="qwen2.5-coder:0.5b", temperature=0, max_tokens=200,
                                            messages=[{"role": "user", "content": TASK}])
    text = answer.choices[0].message.content
    blocks = re.findall(r"```(?:python)?\n(.*?)```", text, re.S)
    code = blocks[0] if blocks else text
    script = tmp_path / "solution.py"
    script.write_text(code + "\n" + CHECK)
    run = subprocess.run([sys.executable, "-I", str(script)], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), f"{text}\n---\n{run.stderr}"
