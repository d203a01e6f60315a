"""The ``gprochat`` command: ``chat`` with a deployment (or ``--local``), ``serve`` one.

Answers go to stdout as they stream; errors are one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import asyncio
import os
import sys
from contextlib import ExitStack
from typing import Any, Optional

import click

from . import __version__
from .errors import GPROChatError
from .protocol import DEFAULT_SECRET_KEY
from .providers import GPROChat
from .typing import Messages

__all__ = ["main"]


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gprochat")
def main() -> None:
    """Talk to GeminiProChat (GPROChat) deployments, or run one."""


@main.command()
@click.argument("prompt", required=False)
@click.option("--base-url", envvar="GPROCHAT_BASE_URL", help="The deployment's root URL.")
@click.option("--secret-key", envvar="GPROCHAT_SECRET_KEY", help="The deployment's public secret key.")
@click.option("--password", envvar="GPROCHAT_PASSWORD", help="The deployment's site password.")
@click.option("-m", "--model", default="", help="Model name (default: the provider's default).")
@click.option("-s", "--system", help="A system prompt sent before yours.")
@click.option("--proxy", envvar="GPROCHAT_PROXY", help="Proxy URL, e.g. http://127.0.0.1:3128.")
@click.option(
    "--local",
    is_flag=True,
    help="Start the bundled server (echo backend) in-process on a free port and talk to it.",
)
def chat(
    prompt: Optional[str],
    base_url: Optional[str],
    secret_key: Optional[str],
    password: Optional[str],
    model: str,
    system: Optional[str],
    proxy: Optional[str],
    local: bool,
) -> None:
    """Send PROMPT (or standard input) and stream the answer to stdout."""
    if prompt is None:
        if sys.stdin.isatty():
            _fail('no prompt: pass one (gprochat chat "Hello") or pipe it on stdin', 2)
        prompt = sys.stdin.read().rstrip("\n")
    if not prompt.strip():
        _fail("the prompt is empty", 2)
    messages: Messages = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": prompt})
    with ExitStack() as stack:
        if local:
            from .server import BackgroundServer, ServerConfig

            server_config = ServerConfig(
                secret_key=secret_key or DEFAULT_SECRET_KEY,
                passwords=(password,) if password else (),
            )
            base_url = stack.enter_context(BackgroundServer(server_config)).base_url
        options: dict[str, Any] = {
            "base_url": base_url,
            "secret_key": secret_key,
            "password": password,
        }
        try:
            asyncio.run(_stream_to_stdout(model, messages, proxy, options))
        except GPROChatError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            _fail("interrupted", 130)


async def _stream_to_stdout(
    model: str, messages: Messages, proxy: Optional[str], options: dict[str, Any]
) -> None:
    out = sys.stdout
    async for chunk in GPROChat.create_async_generator(model, messages, proxy=proxy, **options):
        out.write(chunk)
        out.flush()
    out.write("\n")
    out.flush()


@main.command()
@click.option("--host", default="127.0.0.1", envvar="GPROCHAT_HOST", show_default=True)
@click.option("--port", default=8000, type=int, envvar="GPROCHAT_PORT", show_default=True)
@click.option(
    "--backend",
    default="echo",
    envvar="GPROCHAT_BACKEND",
    show_default=True,
    help="Model backend: echo (offline, built in).",
)
@click.option(
    "--secret-key",
    default=DEFAULT_SECRET_KEY,
    envvar="GPROCHAT_SECRET_KEY",
    help="Secret key clients sign with (default: gprochat.com's public one).",
)
@click.option(
    "--password",
    envvar="GPROCHAT_SITE_PASSWORD",
    help="Site password, or a comma-separated list of them (default: none).",
)
@click.option("--system-prompt", envvar="GPROCHAT_SYSTEM_PROMPT", help="Prepended to every conversation.")
@click.option(
    "--echo-delay",
    default=0.0,
    type=float,
    envvar="GPROCHAT_ECHO_DELAY",
    help="echo backend: seconds between chunks.",
)
@click.option("--log-level", default="info", envvar="GPROCHAT_LOG_LEVEL", show_default=True)
@click.option(
    "--gateway/--no-gateway",
    default=True,
    envvar="GPROCHAT_GATEWAY",
    show_default=True,
    help="Serve the OpenAI-compatible gateway at /v1.",
)
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    help="Gateway API key clients must send as 'Authorization: Bearer KEY' (repeatable; "
    "env GPROCHAT_API_KEYS, comma-separated). Default: no key needed.",
)
@click.option(
    "--relay-url",
    envvar="GPROCHAT_RELAY_URL",
    help="Gateway answers come from this GeminiProChat deployment instead of --backend.",
)
@click.option("--relay-secret-key", envvar="GPROCHAT_RELAY_SECRET_KEY",
              help="The relayed deployment's secret key (default: gprochat.com's).")
@click.option("--relay-password", envvar="GPROCHAT_RELAY_PASSWORD",
              help="The relayed deployment's site password.")
def serve(
    host: str,
    port: int,
    backend: str,
    secret_key: str,
    password: Optional[str],
    system_prompt: Optional[str],
    echo_delay: float,
    log_level: str,
    gateway: bool,
    api_keys: tuple[str, ...],
    relay_url: Optional[str],
    relay_secret_key: Optional[str],
    relay_password: Optional[str],
) -> None:
    """Run a GeminiProChat-compatible server."""
    from .server import ServerConfig
    from .server import serve as run_server
    from .server.backends import BACKENDS

    if backend not in BACKENDS:
        _fail(f"unknown backend {backend!r}; choose one of: {', '.join(sorted(BACKENDS))}", 2)
    options: dict[str, Any] = {}
    if backend == "echo":
        options["delay"] = echo_delay
    config = ServerConfig(
        secret_key=secret_key,
        passwords=ServerConfig.split_passwords(password),
        backend=backend,
        backend_options=options,
        system_prompt=system_prompt,
        gateway=gateway,
        api_keys=api_keys or ServerConfig.split_passwords(os.environ.get("GPROCHAT_API_KEYS")),
        relay_url=relay_url,
        relay_secret_key=relay_secret_key,
        relay_password=relay_password,
    )
    click.echo(f"gprochat {__version__}: serving on http://{host}:{port} ({backend} backend)", err=True)
    try:
        run_server(config, host=host, port=port, log_level=log_level)
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


if __name__ == "__main__":  # pragma: no cover
    main()
