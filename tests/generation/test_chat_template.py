"""Chat templates: the real templates llama.cpp collects, rendered as transformers renders them
(tools/make_chat_template_fixtures.py), and the sandbox that refuses templates reaching Python."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path

import pytest

import gllm_core.chat_template as ct
from gllm_core.chat_template import ChatTemplate, check_messages, template_for
from gllm_core.errors import BadRequestError, CorruptFileError, GllmError, UnsafeTemplateError

REF = json.loads((Path(__file__).parent / "fixtures" / "chat_templates.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def template_dir(vocab_dir) -> Path:
    """llama.cpp's models/templates from the llama-cpp-python source archive (sha256-checked)."""
    return vocab_dir / "templates"


@pytest.fixture
def pinned_clock(monkeypatch):
    monkeypatch.setattr(ct, "_now", lambda: datetime.fromisoformat(REF["now"]))


def test_real_templates_render_as_transformers_renders_them(template_dir, pinned_clock):
    assert len(REF["templates"]) >= 60
    rendered_ok = 0
    for name, entry in REF["templates"].items():
        source = (template_dir / name).read_text(encoding="utf-8")
        assert hashlib.sha256(source.encode("utf-8")).hexdigest() == entry["sha256"], name
        template = ChatTemplate(source, special_tokens=REF["special_tokens"], origin=name)
        for case_name, expected in entry["rendered"].items():
            case = json.loads(json.dumps(REF["cases"][case_name]))
            if isinstance(expected, str):
                got = template.render(case["messages"], tools=case.get("tools"),
                                      add_generation_prompt=case["add_generation_prompt"])
                assert got == expected, (name, case_name)
                rendered_ok += 1
            else:
                wanted = UnsafeTemplateError if expected["error"] == "SecurityError" else BadRequestError
                with pytest.raises(wanted):
                    template.render(case["messages"], tools=case.get("tools"),
                                    add_generation_prompt=case["add_generation_prompt"])
    assert rendered_ok >= 240


def test_openai_shaped_messages_reach_the_template_as_plain_data(template_dir, pinned_clock):
    source = (template_dir / "Qwen-Qwen2.5-7B-Instruct.jinja").read_text(encoding="utf-8")
    template = ChatTemplate(source, special_tokens=REF["special_tokens"])
    case = REF["cases"]["tools"]
    openai_style = json.loads(json.dumps(case["messages"]))
    call = openai_style[1]["tool_calls"][0]["function"]
    call["arguments"] = json.dumps(call["arguments"])  # the OpenAI API sends a JSON string
    openai_style[0]["content"] = [{"type": "text", "text": "Weather in Paris?"}]
    openai_style[1]["content"] = None
    expected = REF["templates"]["Qwen-Qwen2.5-7B-Instruct.jinja"]["rendered"]["tools"]
    assert template.render(openai_style, tools=case["tools"]) == expected


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__['os'] }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{% set ns = namespace(_x=1) %}",
    "{{ messages.__class__ }}",
    "{{ messages[0].__class__.__base__ }}",
    "{{ raise_exception.__globals__ }}",
    "{{ (messages|first).items.__self__.__class__ }}",
    "{{ messages.append(1) }}",
])
def test_templates_that_reach_python_internals_are_refused(source):
    with pytest.raises(UnsafeTemplateError, match="Python internals"):
        ChatTemplate(source, origin="evil/model").render([{"role": "user", "content": "hi"}])


def test_template_errors_are_clear():
    with pytest.raises(CorruptFileError, match="does not parse"):
        ChatTemplate("{% for m in messages %}")
    with pytest.raises(BadRequestError, match="roles must alternate"):
        ChatTemplate("{{ raise_exception('roles must alternate') }}").render([{"role": "user", "content": "x"}])
    with pytest.raises(BadRequestError, match="no chat template"):
        template_for(object())


@pytest.mark.parametrize("messages, match", [
    ([], "non-empty"), ("hi", "non-empty"), ([{"content": "x"}], "role"),
    ([{"role": "wizard", "content": "x"}], "role"),
    ([{"role": "user"}], "content"), ([{"role": "user", "content": 5}], "content"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "image_url"),
    (["just a string"], "object"), ([{"role": "user", "content": object()}], "JSON-like"),
])
def test_bad_messages_are_refused_by_name(messages, match):
    with pytest.raises(BadRequestError, match=match):
        check_messages(messages)


def test_globals_and_kwargs(pinned_clock):
    source = ("{{ bos_token }}|{{ strftime_now('%Y-%m-%d') }}|{{ tools | tojson }}|{{ flag }}|"
              "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.content }}{% endfor %}|"
              "{% generation %}{{ eos_token }}{% endgeneration %}|{{ add_generation_prompt }}")
    t = ChatTemplate(source, special_tokens={"bos_token": "<s>", "eos_token": "</s>", "unk_token": None})
    out = t.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
                   tools=[{"name": "é"}], flag=True, add_generation_prompt=False)
    assert out == '<s>|2024-07-26|[{"name": "é"}]|True|a|</s>|False'
    assert isinstance(UnsafeTemplateError("x"), GllmError)
