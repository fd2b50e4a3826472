"""Record llama.cpp's greedy tokens for the real GGUF models, as committed test fixtures.

llama.cpp runs through llama-cpp-python built from source (never a dependency of gllm): build it
once in a throwaway environment, then point this tool at that interpreter::

    python3 -m venv /tmp/llvenv && /tmp/llvenv/bin/pip install numpy jinja2 diskcache typing-extensions
    CMAKE_ARGS="-DGGML_NATIVE=ON" /tmp/llvenv/bin/pip install --no-deps llama_cpp_python-0.3.36.tar.gz
    python tools/record_llamacpp.py --llama-python /tmp/llvenv/bin/python

For each model and candidate prompt the tool renders the chat template stored in the GGUF (sandboxed
Jinja, ``add_generation_prompt``), tokenizes the text with llama.cpp (special tokens parsed),
and decodes greedily (argmax of the logits, one token at a time, 2 threads) for up to 32 tokens,
stopping early at an end-of-generation token. It writes
``plugins/format_gguf/tests/fixtures/llamacpp_greedy.json`` with the prompt text, llama.cpp's
prompt ids, the generated ids and text, the margin between the two best logits at each step, and
the llama-cpp-python version, and marks the ``KEEP`` prompts per model with the widest margins
as ``selected`` (the ones the tests hold gllm to).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tools import fetch_models  # noqa: E402
OUT = ROOT / "plugins" / "format_gguf" / "tests" / "fixtures" / "llamacpp_greedy.json"
N_TOKENS = 32

def _chat(text, system=None):
    messages = [{"role": "system", "content": system}] if system else []
    return {"messages": messages + [{"role": "user", "content": text}]}


# Candidates, chosen to have one clear answer; the tool keeps the KEEP of each model whose
# greedy path (as llama.cpp computes it) has the widest smallest gap between its two best logits:
# a gap of a few tenths is within the numeric noise two correct implementations differ by.
CANDIDATES = {
    "smollm2:135m": [
        _chat("What is the capital of France?", "You are a helpful assistant."),
        _chat("What is the capital of France?", "You are a geography expert. Answer in one sentence."),
        _chat("What is the capital of France?"),
        _chat("Count from 1 to 10."),
        _chat("List the days of the week."),
        _chat("Name the planets of the solar system."),
        _chat("Write the English alphabet in capital letters."),
        _chat("Who wrote Romeo and Juliet?"),
        _chat("What is the largest ocean on Earth?"),
        _chat("How many days are in a week?"),
        _chat("What is the boiling point of water in Celsius?"),
        _chat("Translate 'thank you' into French."),
        _chat("List the first five prime numbers."),
        _chat("What are the three states of matter?"),
        {"text": "1, 2, 3, 4, 5, 6,"},
        {"text": "Monday, Tuesday, Wednesday,"},
        {"text": "The capital of France is"},
        {"text": "Once upon a time, in a small village,"},
        {"text": "A, B, C, D, E, F,"},
        {"text": "January, February, March, April,"},
        {"text": "10, 20, 30, 40,"},
        {"text": "2, 4, 6, 8, 10,"},
        {"text": "The days of the week are Monday, Tuesday,"},
        {"text": "Question: What is the capital of France?\nAnswer:"},
        _chat("Count from 1 to 20."),
        _chat("Count backwards from 10 to 1."),
        _chat("What is 2 + 2?"),
        _chat("Repeat the word 'hello' five times."),
        _chat("How many legs does a cat have?"),
    ],
    "qwen2.5-coder:0.5b": [
        _chat("Write a Python function is_prime(n) that returns True when n is a prime number. "
              "Reply with only the code."),
        _chat("Write a Python function factorial(n) that returns n!. Reply with only the code."),
        _chat("Write a Python function add(a, b) that returns a + b. Reply with only the code."),
        _chat("Write a Python function is_palindrome(s) that checks whether a string is a palindrome. "
              "Reply with only the code."),
        _chat("Write a Python function that returns the largest number in a list. Reply with only the code."),
        _chat("Write a SQL query that selects all rows from the table users."),
        _chat("Write a bash command that lists all files in the current directory."),
        _chat("What is the time complexity of binary search?"),
        _chat("Write a JavaScript function that adds two numbers."),
        _chat("Write a Python function that reverses a string."),
        _chat("What does the SQL keyword JOIN do?"),
        _chat("Explain recursion in one sentence."),
        {"text": "def fibonacci(n):\n"},
        {"text": "import numpy as np\n\n# create a 3x3 identity matrix\n"},
        {"text": "# print the numbers from 1 to 10\nfor i in range("},
        {"text": "def is_even(n):\n    return"},
    ],
}
KEEP = 6
MIN_TOKENS = 16  # a prompt answered in a token or two tests little


def select(results: list[dict]) -> None:
    """Mark the KEEP results of at least MIN_TOKENS tokens with the widest smallest margin."""
    ranked = sorted((i for i, r in enumerate(results) if len(r["generated_ids"]) >= MIN_TOKENS),
                    key=lambda i: -min(results[i]["top2_margins"]))
    keep = set(ranked[:KEEP])
    for i, r in enumerate(results):
        r["selected"] = i in keep


def _render(template: str, messages, bos: str, eos: str) -> str:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, add_generation_prompt=True,
                                            bos_token=bos, eos_token=eos)


def worker(model_path: str, prompts: list[dict], threads: int) -> dict:
    """Runs under the interpreter that has llama_cpp: greedy tokens for each prompt."""
    import time

    import llama_cpp
    import numpy as np

    llm = llama_cpp.Llama(model_path=model_path, n_ctx=1024, n_batch=512, n_threads=threads,
                          n_threads_batch=threads, logits_all=False, verbose=False)
    vocab = llm._model.vocab if hasattr(llm._model, "vocab") else None
    n_vocab = llm.n_vocab()
    template = llm.metadata.get("tokenizer.chat_template")
    bos = llm.detokenize([llm.token_bos()], special=True).decode() if llm.token_bos() >= 0 else ""
    eos = llm.detokenize([llm.token_eos()], special=True).decode() if llm.token_eos() >= 0 else ""
    add_bos = llm.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"
    results = []
    for prompt in prompts:
        text = prompt["text"] if "text" in prompt else _render(template, prompt["messages"], bos, eos)
        ids = llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
        llm.reset()
        out, margins = [], []
        start = time.perf_counter()
        llm.eval(ids)
        for _ in range(N_TOKENS):
            logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,)).astype(np.float64)
            top2 = np.argsort(logits)[-2:]
            token = int(np.argmax(logits))
            margins.append(round(float(logits[top2[1]] - logits[top2[0]]), 4))
            out.append(token)
            if llama_cpp.llama_vocab_is_eog(vocab, token) if vocab is not None else llm.token_eos() == token:
                break
            llm.eval([token])
        seconds = time.perf_counter() - start
        results.append({**prompt, "prompt_text": text, "prompt_ids": list(ids), "generated_ids": out,
                        "generated_text": llm.detokenize(out).decode("utf-8", errors="replace"),
                        "top2_margins": margins, "seconds": round(seconds, 3)})
    return {"llama_cpp_python": llama_cpp.__version__, "threads": threads, "n_tokens": N_TOKENS,
            "results": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llama-python", default=sys.executable,
                        help="the Python that has llama_cpp installed (default: this one)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", action="append", default=[], metavar="ALIAS",
                        help="re-record only this model (repeatable); the others are kept from the file")
    parser.add_argument("--reselect", action="store_true", help="only re-mark the selected prompts in the file")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL_PATH", "PROMPTS_JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        model_path, prompts = args.worker
        print(json.dumps(worker(model_path, json.loads(prompts), args.threads)))
        return 0
    if args.reselect:
        record = json.loads(OUT.read_text())
        for model in record["models"].values():
            select(model["results"])
        OUT.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
        return 0
    record = {"tool": "tools/record_llamacpp.py", "models": {}}
    if args.only and OUT.exists():
        record = json.loads(OUT.read_text())
    for alias, prompts in CANDIDATES.items():
        if args.only and alias not in args.only:
            continue
        path = fetch_models.model_path(alias)
        cmd = [args.llama_python, __file__, "--threads", str(args.threads), "--worker", path, json.dumps(prompts)]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        record["llama_cpp_python"] = result.pop("llama_cpp_python")
        select(result["results"])
        record["models"][alias] = {"file": Path(path).name, "sha256": fetch_models.row_for(alias).sha256, **result}
        for r in result["results"]:
            mark = "*" if r["selected"] else " "
            print(f"{mark} {alias}: {r['generated_text']!r} (min margin {min(r['top2_margins']):.3f})")
    OUT.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
