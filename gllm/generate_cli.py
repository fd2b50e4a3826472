"""``gllm generate MODEL PROMPT`` and ``gllm chat MODEL``: text generation from the command line,
streamed to the terminal as it is produced."""

from __future__ import annotations

import sys

import click

from gllm_core.errors import GllmError


def _sampling_options(command):
    for option in reversed([
        click.option("--backend", default="auto", show_default=True, help="backend name or auto"),
        click.option("--max-tokens", type=int, default=None, help="longest answer in tokens (default: 256 for "
                                                                  "generate, the rest of the context for chat)"),
        click.option("--temperature", type=float, default=0.7, show_default=True, help="0 is greedy"),
        click.option("--top-p", type=float, default=1.0, show_default=True),
        click.option("--top-k", type=int, default=0, show_default=True, help="0: no limit"),
        click.option("--min-p", type=float, default=0.0, show_default=True),
        click.option("--repetition-penalty", type=float, default=1.0, show_default=True),
        click.option("--seed", type=int, default=None, help="makes sampling reproducible"),
        click.option("--stop", multiple=True, help="stop before this text (repeatable)"),
    ]):
        command = option(command)
    return command


def _params(max_tokens, temperature, top_p, top_k, min_p, repetition_penalty, seed, stop) -> dict:
    return dict(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
                repetition_penalty=repetition_penalty, seed=seed, stop=list(stop) or None)


def _write(text: str) -> None:
    click.echo(text, nl=False)
    sys.stdout.flush()


@click.command()
@click.argument("model")
@click.argument("prompt")
@click.option("--chat", "as_chat", is_flag=True, help="send PROMPT as a user message through the chat template")
@click.option("--system", default=None, help="a system message (with --chat)")
@click.option("--json", "as_json", is_flag=True, help="print the OpenAI-shaped response as JSON instead of streaming")
@_sampling_options
def generate(model, prompt, as_chat, system, as_json, backend, **sampling):
    """Continue PROMPT with MODEL (or answer it, with --chat), streaming the text."""
    from gllm import Client

    client = Client(backend=backend)
    params = _params(**sampling)
    if params["max_tokens"] is None:
        params["max_tokens"] = 256
    if as_chat or system:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        if as_json:
            click.echo(client.chat.completions.create(model=model, messages=messages, **params).model_dump_json())
            return
        with client.chat.completions.create(model=model, messages=messages, stream=True, **params) as stream:
            for chunk in stream:
                _write(chunk.choices[0].delta.content or "")
    else:
        if as_json:
            click.echo(client.completions.create(model=model, prompt=prompt, **params).model_dump_json())
            return
        with client.completions.create(model=model, prompt=prompt, stream=True, **params) as stream:
            for chunk in stream:
                _write(chunk.choices[0].text)
    click.echo()


@click.command()
@click.argument("model")
@click.option("--system", default=None, help="a system message that opens the conversation")
@_sampling_options
def chat(model, system, backend, **sampling):
    """Talk with MODEL: each line you type is a message; the answer streams back and the whole
    conversation is kept. /clear starts over; /exit (or end of input) ends."""
    from gllm import Client

    client = Client(backend=backend)
    params = _params(**sampling)
    client.load(model)  # fail now, not after the first message
    opening = [{"role": "system", "content": system}] if system else []
    messages = list(opening)
    stdin = sys.stdin
    interactive = stdin.isatty()
    if interactive:
        click.echo(f"chatting with {model}: /clear starts over, /exit or Ctrl-D ends", err=True)
    while True:
        if interactive:
            click.echo(">>> ", nl=False)
        try:
            line = stdin.readline()
        except KeyboardInterrupt:
            click.echo()
            break
        if not line:  # end of input
            break
        text = line.rstrip("\n")
        if text.strip() in ("/exit", "/quit", "/bye"):
            break
        if text.strip() == "/clear":
            messages = list(opening)
            continue
        if not text.strip():
            continue
        messages.append({"role": "user", "content": text})
        answer = []
        try:
            with client.chat.completions.create(model=model, messages=messages, stream=True, **params) as stream:
                for chunk in stream:
                    piece = chunk.choices[0].delta.content or ""
                    answer.append(piece)
                    _write(piece)
        except KeyboardInterrupt:  # stop this answer, keep the conversation
            click.echo(" [interrupted]", nl=False)
        except GllmError as exc:  # e.g. the conversation outgrew the context: say so and go on
            messages.pop()
            click.echo(f"error: {exc}", err=True)
            continue
        click.echo()
        messages.append({"role": "assistant", "content": "".join(answer)})
