"""Reference renderings for gllm_core.chat_template: transformers renders the real chat templates
that llama.cpp collects (models/templates/*.jinja in the llama-cpp-python source archive, fetched
by tools/fetch_models.py) on a few conversations, with the clock pinned.

    python tools/make_chat_template_fixtures.py   # writes tests/generation/fixtures/chat_templates.json

For each template the fixture keeps its sha256 (the test renders the same file) and, per case,
the text transformers produced or the fact that the template refused the case.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import sys
from pathlib import Path

import transformers.utils.chat_template_utils as ctu

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tools import fetch_models  # noqa: E402
OUT = ROOT / "tests" / "generation" / "fixtures" / "chat_templates.json"
NOW = _dt.datetime(2024, 7, 26, 9, 30, 0)
SPECIAL = {"bos_token": "<s>", "eos_token": "</s>"}

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
                   "required": ["city"]}}}

CASES = {
    "one_user": dict(messages=[{"role": "user", "content": "Hello!"}], add_generation_prompt=True),
    "system_multi_turn": dict(messages=[
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And 3+3? Ünïcödé 中文 😀"}], add_generation_prompt=True),
    "ends_with_assistant": dict(messages=[
        {"role": "user", "content": "Say hi."},
        {"role": "assistant", "content": "Hi!"}], add_generation_prompt=False),
    "tools": dict(messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "call12345", "type": "function", "function": {
            "name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "tool_call_id": "call12345", "name": "get_weather", "content": "18C, sunny"}],
        tools=[WEATHER_TOOL], add_generation_prompt=True),
}


class _FixedClock(_dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return NOW


def main() -> None:
    folder = Path(fetch_models.archive_path("llama-cpp-vocab")) / "templates"
    ctu.datetime = _FixedClock  # transformers' strftime_now reads this module global
    out = {"now": NOW.isoformat(), "special_tokens": SPECIAL, "cases": CASES, "templates": {}}
    for path in sorted(folder.glob("*.jinja")):
        source = path.read_text(encoding="utf-8")
        entry = {"sha256": hashlib.sha256(source.encode("utf-8")).hexdigest(), "rendered": {}}
        for name, case in CASES.items():
            case = json.loads(json.dumps(case))
            try:
                rendered, _ = ctu.render_jinja_template(conversations=[case["messages"]], tools=case.get("tools"),
                                                        chat_template=source,
                                                        add_generation_prompt=case["add_generation_prompt"],
                                                        **SPECIAL)
                entry["rendered"][name] = rendered[0]
            except Exception as exc:  # noqa: BLE001 - a template may refuse a case; that is the reference too
                entry["rendered"][name] = {"error": type(exc).__name__, "message": str(exc)[:200]}
        out["templates"][path.name] = entry
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    errors = sum(isinstance(v, dict) for t in out["templates"].values() for v in t["rendered"].values())
    print(f"wrote {OUT}: {len(out['templates'])} templates x {len(CASES)} cases ({errors} refused)")


if __name__ == "__main__":
    main()
