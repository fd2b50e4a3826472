"""``gllm generate`` and ``gllm chat`` on the tiny Llama fixture, driven through click's runner."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

import gllm
from gllm.cli import cli

MODEL = str(Path(__file__).resolve().parents[2] / "plugins" / "arch_llama" / "tests" / "fixtures" / "tiny-llama-untied")
FLAGS = ["--backend", "numpy", "--seed", "4", "--temperature", "1.3", "--max-tokens", "12"]


def test_generate_streams_the_completion_text():
    client = gllm.Client(backend="numpy")
    expected = client.completions.create(model=MODEL, prompt="Once", max_tokens=12, temperature=1.3, seed=4)
    result = CliRunner().invoke(cli, ["generate", MODEL, "Once", *FLAGS])
    assert result.exit_code == 0, result.output
    assert result.output == expected.choices[0].text + "\n"
    as_json = CliRunner().invoke(cli, ["generate", MODEL, "Once", "--json", *FLAGS])
    assert json.loads(as_json.output)["choices"][0]["text"] == expected.choices[0].text
    chat = CliRunner().invoke(cli, ["generate", MODEL, "Hi", "--chat", "--system", "Be brief.", *FLAGS])
    answer = client.chat.completions.create(model=MODEL, messages=[{"role": "system", "content": "Be brief."},
                                                                    {"role": "user", "content": "Hi"}],
                                            max_tokens=12, temperature=1.3, seed=4)
    assert chat.exit_code == 0 and chat.output == answer.choices[0].message.content + "\n"


def test_chat_keeps_the_conversation_and_ends_on_exit_or_eof():
    client = gllm.Client(backend="numpy")
    kw = dict(model=MODEL, max_tokens=12, temperature=1.3, seed=4)
    first = client.chat.completions.create(messages=[{"role": "user", "content": "hello"}], **kw)
    a1 = first.choices[0].message.content
    second = client.chat.completions.create(messages=[{"role": "user", "content": "hello"},
                                                      {"role": "assistant", "content": a1},
                                                      {"role": "user", "content": "more"}], **kw)
    result = CliRunner().invoke(cli, ["chat", MODEL, *FLAGS], input="hello\n\nmore\n/exit\nnever sent\n")
    assert result.exit_code == 0, result.output
    assert result.output == a1 + "\n" + second.choices[0].message.content + "\n"
    cleared = CliRunner().invoke(cli, ["chat", MODEL, *FLAGS], input="hello\n/clear\nhello")  # EOF, no newline
    assert cleared.exit_code == 0 and cleared.output == (a1 + "\n") * 2


def test_bad_arguments_fail_with_a_message_not_a_traceback():
    result = CliRunner().invoke(cli, ["generate", MODEL, "x", "--backend", "numpy", "--max-tokens", "-3"])
    assert result.exit_code == 1 and "max_tokens" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(cli, ["chat", MODEL, "--backend", "numpy", "--top-p", "0"], input="hi\n/exit\n")
    assert result.exit_code == 0 and "top_p" in result.output
