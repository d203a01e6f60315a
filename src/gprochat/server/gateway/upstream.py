"""Where the gateway's answers come from: the server's backend, or a relayed deployment.

``DirectUpstream`` builds a ``Conversation`` and asks ``app.state.backend``.
``RelayUpstream`` sends the conversation through the GPROChat provider to another
GeminiProChat deployment (``ServerConfig.relay_url``) with its secret key and password.
Both take messages already normalised by ``gprochat.openai.params``. ``upstream_for``
gives a request the app's one upstream, made on first use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal, Optional, Protocol

from starlette.requests import Request

from ...providers import GPROChat
from ..backends import AnswerReport, Backend, Conversation, Turn
from ..config import ServerConfig
from .errors import GatewayError

__all__ = [
    "Upstream",
    "DirectUpstream",
    "RelayUpstream",
    "SamplingOptions",
    "create_upstream",
    "upstream_for",
]


class SamplingOptions(Protocol):
    temperature: Optional[float]
    max_tokens: Optional[int]
    max_completion_tokens: Optional[int]
    stop: Any
    top_p: Optional[float]
    seed: Optional[int]


class Upstream(Protocol):
    relay: bool

    def models(self) -> list[str]:
        """The names ``GET /v1/models`` lists; the first is the default."""
        ...

    def resolve(self, model: str) -> str:
        """The listed name ``model`` stands for (``""``: the default), or a 404 naming them."""
        ...

    def stream(
        self, model: str, messages: list[dict[str, str]], options: SamplingOptions,
        report: Optional[AnswerReport] = None,
    ) -> AsyncIterator[str]: ...


def _unknown_model(model: str, known: list[str]) -> GatewayError:
    return GatewayError(
        404,
        f"The model {model!r} does not exist on this gateway; use one of: "
        f"{', '.join(known)} (GET /v1/models lists them), or \"\" for the default ({known[0]})",
        param="model",
        code="model_not_found",
    )


class DirectUpstream:
    """The server's own backend."""

    relay = False

    def __init__(self, backend: Backend, system_prompt: Optional[str] = None) -> None:
        self.backend = backend
        self.system_prompt = system_prompt

    def models(self) -> list[str]:
        return self.backend.models()

    def resolve(self, model: str) -> str:
        names = self.models()
        if not model:
            return names[0]
        if model not in names:
            raise _unknown_model(model, names)
        return model

    def stream(
        self, model: str, messages: list[dict[str, str]], options: SamplingOptions,
        report: Optional[AnswerReport] = None,
    ) -> AsyncIterator[str]:
        return self.backend.stream(self.conversation(model, messages, options, report))

    def conversation(
        self, model: str, messages: list[dict[str, str]], options: SamplingOptions,
        report: Optional[AnswerReport] = None,
    ) -> Conversation:
        """System messages joined (after the server's prompt); the rest as Gemini turns."""
        systems = [self.system_prompt] if self.system_prompt else []
        systems += [m["content"] for m in messages if m["role"] == "system"]
        turns: list[Turn] = []
        for message in messages:
            if message["role"] == "system":
                continue
            role: Literal["user", "model"] = "user" if message["role"] == "user" else "model"
            if turns and turns[-1].role == role:
                # Gemini wants alternating turns: merge a run of one role.
                turns[-1] = Turn(role, turns[-1].text + "\n\n" + message["content"])
            else:
                turns.append(Turn(role, message["content"]))
        stop = options.stop
        return Conversation(
            message=turns[-1].text,
            history=tuple(turns[:-1]),
            system="\n\n".join(systems) or None,
            model=model,
            temperature=options.temperature,
            max_tokens=options.max_completion_tokens or options.max_tokens,
            stop=(stop,) if isinstance(stop, str) else tuple(stop or ()),
            top_p=options.top_p,
            seed=options.seed,
            report=report,
        )


class RelayUpstream:
    """Another GeminiProChat deployment, through the GPROChat provider.

    The GPROChat wire has no sampling fields: temperature, max_tokens and stop are
    dropped. The conversation goes as native history where the provider supports it.
    """

    relay = True

    def __init__(
        self,
        url: str,
        *,
        secret_key: Optional[str] = None,
        password: Optional[str] = None,
        system_prompt: Optional[str] = None,
    ) -> None:
        self.url = url
        self.secret_key = secret_key
        self.password = password
        self.system_prompt = system_prompt

    def models(self) -> list[str]:
        return GPROChat.get_models()

    def resolve(self, model: str) -> str:
        if not model or model in GPROChat.get_models() or model in GPROChat.model_aliases:
            return GPROChat.get_model(model)
        raise _unknown_model(model, self.models())

    def stream(
        self, model: str, messages: list[dict[str, str]], options: SamplingOptions,
        report: Optional[AnswerReport] = None,
    ) -> AsyncIterator[str]:
        # A deployment reports no usage and no id: ``report`` stays empty.
        if self.system_prompt:
            messages = [{"role": "system", "content": self.system_prompt}, *messages]
        kwargs: dict[str, Any] = {"base_url": self.url, "history": "native"}
        if self.secret_key:
            kwargs["secret_key"] = self.secret_key
        if self.password:
            kwargs["password"] = self.password
        return GPROChat.create_async_generator(model, list(messages), **kwargs)


def create_upstream(config: ServerConfig, backend: Backend) -> Upstream:
    """The relay when ``config.relay_url`` is set, else the backend."""
    if config.relay_url:
        return RelayUpstream(
            config.relay_url,
            secret_key=config.relay_secret_key,
            password=config.relay_password,
            system_prompt=config.system_prompt,
        )
    return DirectUpstream(backend, config.system_prompt)


def upstream_for(request: Request) -> Upstream:
    """The app's upstream (``app.state.gateway_upstream``), created on first use."""
    state = request.app.state
    upstream: Optional[Upstream] = getattr(state, "gateway_upstream", None)
    if upstream is None:
        upstream = state.gateway_upstream = create_upstream(state.config, state.backend)
    return upstream
