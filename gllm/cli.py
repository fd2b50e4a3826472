"""The ``gllm`` command line."""

from __future__ import annotations

import json
import os
import sys

import click

from gllm_core.errors import GllmError


def _fail(exc: GllmError):
    raise click.ClickException(str(exc))


class _Group(click.Group):
    """Turns every GllmError into a one-line message and exit status 1, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except GllmError as exc:
            _fail(exc)


@click.group(cls=_Group)
@click.version_option(package_name="gllm")
def cli():
    """Local embeddings, reranking and text generation without PyTorch."""


def _store():
    from gllm_core.plugins import get_registry
    from gllm_core.store import ModelStore

    return ModelStore(aliases=get_registry().aliases)


@cli.command()
@click.argument("model")
@click.argument("texts", nargs=-1, required=True)
@click.option("--backend", default="auto", show_default=True, help="backend name or auto")
@click.option("--dimensions", type=int, default=None, help="truncate and renormalise to this size")
@click.option("--json", "as_json", is_flag=True, help="print the OpenAI-shaped response as JSON")
def embed(model, texts, backend, dimensions, as_json):
    """Embed TEXTS with MODEL and print the vectors."""
    from gllm import Client

    response = Client(backend=backend).embeddings.create(model=model, input=list(texts), dimensions=dimensions)
    if as_json:
        click.echo(response.model_dump_json())
        return
    for text, item in zip(texts, response.data):
        vec = item.embedding
        head = ", ".join(f"{x:+.4f}" for x in vec[:6])
        click.echo(f"{text[:40]!r:44} [{head}, …] ({len(vec)} dims)")


@cli.command()
@click.argument("model")
@click.argument("query")
@click.argument("documents", nargs=-1, required=True)
@click.option("--backend", default="auto", show_default=True, help="backend name or auto")
@click.option("--top-n", type=int, default=None, help="keep only the N most relevant documents")
@click.option("--raw-scores", is_flag=True, help="a cross-encoder's raw logits instead of its activated scores")
@click.option("--json", "as_json", is_flag=True, help="print the Cohere/Jina-shaped response as JSON")
def rerank(model, query, documents, backend, top_n, raw_scores, as_json):
    """Rank DOCUMENTS by relevance to QUERY with MODEL (a cross-encoder, or any embedding model by cosine)."""
    from gllm import Client

    response = Client(backend=backend).rerank.create(model=model, query=query, documents=list(documents),
                                                     top_n=top_n, raw_scores=raw_scores)
    if as_json:
        click.echo(response.model_dump_json())
        return
    for rank, item in enumerate(response.results, 1):
        click.echo(f"{rank:3}. {item.relevance_score:+.4f}  [{item.index}] {item.document['text'][:60]!r}")


@cli.command()
@click.argument("name")
def pull(name):
    """Download NAME (alias or org/repo) from the Hugging Face hub into the store."""
    entry = _store().pull(name)
    click.echo(f"pulled {name} → {entry.path}")


@cli.command("import")
@click.argument("path", type=click.Path(exists=True))
@click.option("--name", required=True, help="store name or alias to file it under")
def import_(path, name):
    """Bring a local model file or folder into the store (air-gapped use)."""
    entry = _store().import_path(path, name)
    click.echo(f"imported {path} as {name} → {entry.path}")


@cli.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_(as_json):
    """List the models in the store."""
    entries = _store().list()
    if as_json:
        click.echo(json.dumps([_entry_dict(e) for e in entries], indent=2, default=str))
        return
    if not entries:
        click.echo("no models in the store; use gllm pull NAME or gllm import PATH --name NAME")
    for e in entries:
        aliases = f"  ({', '.join(e.aliases)})" if getattr(e, "aliases", None) else ""
        click.echo(f"{e.key:50} {e.size / 1e6:9.1f} MB  {e.source}{aliases}")


def _entry_dict(entry):
    import attrs

    return attrs.asdict(entry, value_serializer=lambda inst, field, value: str(value) if isinstance(value, os.PathLike) else value)


@cli.command()
@click.argument("name")
def rm(name):
    """Remove a model from the store."""
    _store().remove(name)
    click.echo(f"removed {name}")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def plugins(as_json):
    """List plugins: version, hooks implemented, load errors."""
    from gllm_core.plugins import get_host

    infos = get_host().plugin_list()
    if as_json:
        click.echo(json.dumps([i.to_dict() for i in infos], indent=2))
        return
    for i in infos:
        kind = "built-in" if i.builtin else (i.version or "?")
        click.echo(f"{i.name:28} {kind:10} {', '.join(i.hooks) or '-'}")
        for err in i.errors:
            click.echo(f"{'':28} ERROR {err}")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def backends(as_json):
    """List backends with availability and priority, and the one auto picks."""
    from gllm_core.plugins import get_registry
    from gllm_core.selection import backend_statuses, choose_backend

    registry = get_registry()
    rows = backend_statuses(registry)
    try:
        auto = choose_backend(registry, "auto")
    except GllmError:
        auto = None
    if as_json:
        import attrs

        click.echo(json.dumps({"auto": auto, "backends": [attrs.asdict(r) for r in rows]}, indent=2))
        return
    for r in rows:
        mark = "*" if r.name == auto else " "
        state = "available" if r.available else "unavailable"
        click.echo(f"{mark} {r.name:10} {state:12} priority {r.priority:4}  {r.detail}")
    click.echo(f"auto → {auto}")


def _limit_options(command):
    """One option per server limit (``--max-tokens`` …), from the fields of ``gllm.server.Limits``."""
    import attrs

    from gllm.server.limits import Limits

    for f in reversed(attrs.fields(Limits)):
        command = click.option(Limits.option(f.name), f.name, type=click.IntRange(min=1), default=f.default,
                               show_default=True, help=f.metadata["help"])(command)
    return command


@cli.command()
@click.option("--model", "models", multiple=True, required=True,
              help="a model to serve (alias, repository id, store name or path); repeat for several")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind; loopback unless told")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--api-key", envvar="GLLM_API_KEY", default=None,
              help="require 'Authorization: Bearer KEY' on every route but /health [env GLLM_API_KEY]")
@click.option("--backend", default="auto", show_default=True, help="backend name or auto")
@click.option("--graceful-timeout", type=float, default=30.0, show_default=True,
              help="seconds in-flight requests get to finish on shutdown before they are cancelled")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default="info", show_default=True)
@_limit_options
def serve(models, host, port, api_key, backend, graceful_timeout, log_level, **limits):
    """Serve MODELs over an OpenAI-compatible HTTP API (needs gllm[server])."""
    from gllm.server import Limits, create_app
    from gllm.server import serve as run_server

    app = create_app(models, backend=backend, limits=Limits(**limits), api_key=api_key or None)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"serving {', '.join(models)} on http://{shown}:{port}/v1"
               + (" (API key required)" if api_key else ""), err=True)
    if not api_key and host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: listening on {host} without an API key: anyone who can reach it can use it "
                   "(set --api-key or GLLM_API_KEY)", err=True)
    run_server(app, host=host, port=port, log_level=log_level, graceful_timeout=graceful_timeout)


from .generate_cli import chat, generate  # noqa: E402 - click only; the engine loads inside the commands

cli.add_command(generate)
cli.add_command(chat)


def _add_plugin_commands():
    try:
        from gllm_core.plugins import get_host

        get_host().add_commands(cli)
    except Exception as exc:  # noqa: BLE001 - the CLI must still work
        click.echo(f"warning: plugin commands not loaded: {exc}", err=True)


def main(argv=None):
    _add_plugin_commands()
    return cli.main(args=argv, prog_name="gllm")


if __name__ == "__main__":
    sys.exit(main())
