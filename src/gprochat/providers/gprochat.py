"""The GPROChat provider: sign a request, post it, stream the answer back as text."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Optional

from .. import protocol
from ..errors import (
    ConfigurationError,
    ConnectError,
    IncompleteResponseError,
    ModelNotSupportedError,
    ProtocolError,
    TimeoutError,
)
from ..typing import AsyncResult, Messages
from ._deployments import (
    Deployment,
    check_base_url,
    deployments_from_environment,
    resolve_deployments,
    select_deployments,
)
from ._failover import AnsweredBy, Route, open_with_failover
from ._history import wire_messages
from ._http import TextStream, open_text_stream, translating
from ._images import attach_images, call_images, encode_request
from ._models import is_stock_model, model_not_offered, offered_models
from ._proxy import resolve_proxy
from ._retry import resolve_max_retries, with_retries
from ._session import pool
from ._sync import register_shutdown, run_if_started
from ._timeouts import resolve_timeout
from .base import AsyncGeneratorProvider, ProviderModelMixin

__all__ = ["GPROChat", "DEAD_DEFAULT_ADVICE"]

USER_AGENT = "gprochat/0.1 (+aiohttp)"

# json.dumps(..., ensure_ascii=False) builds a new JSONEncoder on every call (only
# the default arguments have a shared one): made once, the same bytes.
_JSON = json.JSONEncoder(ensure_ascii=False)

DEAD_DEFAULT_ADVICE = (
    "gprochat.com, the default deployment, is gone: pass base_url= or deployments= "
    "(or set GPROCHAT_BASE_URL or GPROCHAT_DEPLOYMENTS) to a GeminiProChat deployment, "
    "or run `gprochat serve` and use its URL"
)


class GPROChat(AsyncGeneratorProvider, ProviderModelMixin):
    """A GeminiProChat deployment (gprochat.com by default) as an async generator provider.

    >>> async for chunk in GPROChat.create_async_generator("", [{"role": "user", "content": "Hi"}]):
    ...     print(chunk, end="")

    Each deployment has its own address, secret key and optional password. Per call,
    ``base_url=``, ``secret_key=`` and ``password=`` choose them; otherwise the
    environment variables ``GPROCHAT_BASE_URL``, ``GPROCHAT_SECRET_KEY`` and
    ``GPROCHAT_PASSWORD``; otherwise the class attributes (a subclass that sets
    ``url`` / ``api_endpoint`` / ``secret_key`` targets its own deployment).
    """

    url: ClassVar[str] = protocol.DEFAULT_BASE_URL
    api_endpoint: ClassVar[str] = protocol.DEFAULT_BASE_URL + protocol.GENERATE_PATH

    working: ClassVar[bool] = True
    supports_stream: ClassVar[bool] = True
    supports_message_history: ClassVar[bool] = True
    supports_system_message: ClassVar[bool] = True
    default_model: ClassVar[str] = "gemini-1.5-pro"
    models: ClassVar[list[str]] = ["gemini-1.5-pro"]
    model_aliases: ClassVar[dict[str, str]] = {"gemini-pro": "gemini-1.5-pro"}

    secret_key: ClassVar[str] = protocol.DEFAULT_SECRET_KEY
    password: ClassVar[Optional[str]] = None

    @classmethod
    def generate_signature(
        cls, timestamp: int, message: str, secret_key: Optional[str] = None
    ) -> str:
        """``sha256_hex(f"{timestamp}:{message}:{secret}")`` with this deployment's secret.

        >>> GPROChat.generate_signature(timestamp=1693631200000, message="Hello, world!")[:8]
        '1973b490'
        """
        return protocol.generate_signature(timestamp, message, cls._secret_key(secret_key))

    @classmethod
    async def create_async_generator(
        cls,
        model: str,
        messages: Messages,
        proxy: Optional[str] = None,
        **kwargs: Any,
    ) -> AsyncResult:
        """Send ``messages`` and yield the answer's text chunks as they arrive.

        Keyword arguments: ``base_url``, ``secret_key``, ``password`` (see the class
        docstring); ``timeout`` (a ``gprochat.Timeout`` or seconds), ``max_retries``,
        ``history`` (``"flatten"`` or ``"native"``) and ``max_history``. ``proxy`` takes
        ``http://``, ``https://`` and ``socks5://`` URLs. ``images=`` (or g4f's
        ``media=``) attaches images to the last user message: bytes, file paths, data
        URLs, ``gprochat.images.Image``, each optionally as ``(image, name)``; messages
        may also hold OpenAI ``image_url`` content parts with data URLs. A bad image
        raises ``ImageError`` before anything is sent. Raises the exceptions in
        ``gprochat.errors``.
        """
        stream, text = await cls._open_answer(model, messages, proxy, kwargs)
        try:
            while text is not None:
                yield text
                text = await stream.next_text()
        finally:
            # Also on break, aclose() and cancellation: an unfinished answer's
            # connection is cut, so the server stops generating at once.
            stream.close()

    @classmethod
    async def create_async(
        cls, model: str, messages: Messages, proxy: Optional[str] = None, **kwargs: Any
    ) -> str:
        """The whole answer as one string (see ``create_async_generator`` for the arguments).

        Reads the stream directly rather than through the async generator: for short
        answers the generator's per-chunk hand-offs are a measurable part of the CPU
        a call costs (benchmark B1). Same errors, same ``partial_text``.
        """
        if cls.create_async_generator.__func__ is not _GENERATOR:  # type: ignore[attr-defined]
            # A subclass that reshapes the chunks must be read through its generator.
            return await super().create_async(model, messages, proxy=proxy, **kwargs)
        stream, text = await cls._open_answer(model, messages, proxy, kwargs)
        chunks: list[str] = []
        try:
            while text is not None:
                chunks.append(text)
                text = await stream.next_text()
        except IncompleteResponseError as exc:
            exc.partial_text = "".join(chunks)
            raise
        finally:
            stream.close()
        return "".join(chunks)

    @classmethod
    async def _open_answer(
        cls, model: str, messages: Messages, proxy: Optional[str], kwargs: dict[str, Any]
    ) -> tuple[TextStream, Optional[str]]:
        """Check the call's settings, post the request; its stream and first text."""
        deployments = cls._deployments(kwargs)
        # A name that is not one of ours is asked of the deployment (GET /api/models) and
        # sent as the body's ``model``: gprochat's extension, for a router of models.
        extension: Optional[str] = None
        if deployments is None:
            if is_stock_model(cls, model):
                cls.get_model(model)
            else:
                extension = model
        else:
            model, deployments = select_deployments(cls, model, deployments)
            if not is_stock_model(cls, model) and not any(d.model == model for d in deployments):
                extension = model
        if not messages:
            raise ProtocolError("messages is empty: pass at least one user message")
        endpoint = cls._endpoint(kwargs.get("base_url")) if deployments is None else ""
        # Checked before anything is sent; every attempt (retry, failover) sends the same.
        images = call_images(kwargs)
        wire = attach_images(
            wire_messages(messages, kwargs.get("history"), kwargs.get("max_history")), images
        )
        images_sent = any("inline_data" in part for message in wire for part in message["parts"])
        timeout = resolve_timeout(kwargs.get("timeout"))
        max_retries = resolve_max_retries(kwargs.get("max_retries"))
        via = resolve_proxy(proxy)
        deadline = time.monotonic() + timeout.total if timeout.total else None
        on_answer = kwargs.get("on_answer")
        session = await pool.session(via)

        async def attempt(
            endpoint: str, secret_key: str, password: Optional[str]
        ) -> tuple[TextStream, Optional[str]]:
            if extension is not None:
                base_url = endpoint.removesuffix(protocol.GENERATE_PATH)
                offered = await offered_models(
                    session, base_url, password=password, proxy=via, timeout=timeout,
                    user_agent=USER_AGENT, wanted=extension,
                )
                if offered is None or extension not in offered:
                    raise model_not_offered(cls, extension, Deployment(base_url).display, offered)
            # Signed afresh on every attempt: the timestamp is part of the signature.
            with translating(endpoint, timeout, via):  # a lone surrogate: ProtocolError
                request = protocol.build_generate_request(
                    wire, timestamp=protocol.signing_time(), secret_key=secret_key, password=password
                )
                if extension is not None:
                    request["model"] = extension  # not signed, as docs/protocol.md says
                body = encode_request(request, _JSON) if images_sent else _JSON.encode(request).encode()
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            stream = await open_text_stream(
                session,
                endpoint,
                body,
                headers=cls._headers(endpoint),
                proxy=via,
                timeout=timeout,
                remaining=remaining,
            )
            try:
                return stream, await stream.next_text()
            except BaseException:
                stream.close()
                raise

        if deployments is not None:
            routes = [
                Route(d, cls._secret_key(d.secret_key or kwargs.get("secret_key")),
                      cls._password(d.password or kwargs.get("password")))
                for d in deployments
            ]
            try:
                route, opened = await open_with_failover(
                    routes,
                    lambda r: attempt(r.deployment.endpoint, r.secret_key, r.password),
                    max_retries=max_retries,
                    deadline=deadline,
                    reg=kwargs.get("registry"),
                )
            except ModelNotSupportedError as exc:
                declared = sorted({d.model for d in deployments if d.model})
                if declared:  # the names they declare route too (as labels)
                    exc.supported += [name for name in declared if name not in exc.supported]
                    exc.args = (f"{exc}; the deployments declare {', '.join(declared)}",)
                raise
        else:
            route = None
            opened = await cls._open_single(endpoint, attempt, kwargs, max_retries, deadline)
        if on_answer is not None:
            try:
                if route is not None:
                    on_answer(AnsweredBy(route.display, route.deployment.model or model, route.deployment))
                else:
                    on_answer(AnsweredBy(endpoint.removesuffix(protocol.GENERATE_PATH),
                                         extension or cls.get_model(model)))
            except BaseException:
                opened[0].close()
                raise
        return opened

    @classmethod
    async def _open_single(
        cls,
        endpoint: str,
        attempt: Callable[[str, str, Optional[str]], Awaitable[tuple[TextStream, Optional[str]]]],
        kwargs: dict[str, Any],
        max_retries: int,
        deadline: Optional[float],
    ) -> tuple[TextStream, Optional[str]]:
        """One deployment (``base_url``, the environment or the class): the seed's behaviour."""
        secret_key = cls._secret_key(kwargs.get("secret_key"))
        password = cls._password(kwargs.get("password"))
        if cls._is_the_dead_default(endpoint, kwargs.get("base_url")):
            # gprochat.com is gone: retrying it only makes the user wait for the same error.
            try:
                return await attempt(endpoint, secret_key, password)
            except (ConnectError, TimeoutError) as exc:
                exc.args = (f"{exc}; {DEAD_DEFAULT_ADVICE}", *exc.args[1:])
                raise
        # Retries cover the request up to its first text; what follows is never retried.
        return await with_retries(
            lambda: attempt(endpoint, secret_key, password), max_retries=max_retries, deadline=deadline
        )

    @classmethod
    def _deployments(cls, kwargs: dict[str, Any]) -> Optional[list[Deployment]]:
        """The call's deployment list: ``deployments=``, else ``GPROCHAT_DEPLOYMENTS`` when
        no ``base_url=`` is given; ``None`` for the single-deployment settings."""
        value = kwargs.get("deployments")
        if value is not None:
            if kwargs.get("base_url"):
                raise ConfigurationError(
                    "pass either base_url= (one deployment) or deployments= (several), not both"
                )
            return resolve_deployments(value)
        if kwargs.get("base_url"):
            return None
        return deployments_from_environment()

    @classmethod
    def _is_the_dead_default(cls, endpoint: str, base_url: Optional[str]) -> bool:
        return (
            not base_url
            and not os.environ.get("GPROCHAT_BASE_URL")
            and cls.api_endpoint == GPROChat.api_endpoint
            and endpoint == GPROChat.api_endpoint
        )

    # -- pooled connections -------------------------------------------------------------

    @classmethod
    async def aclose(cls) -> None:
        """Close the pooled connections of the running event loop.

        Optional: ``asyncio.run`` closes them by itself when it ends. Later calls open
        new ones.
        """
        await pool.aclose()

    @classmethod
    def close(cls) -> None:
        """Close the pooled connections the synchronous methods use."""
        run_if_started(pool.aclose())

    async def __aenter__(self) -> GPROChat:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __enter__(self) -> GPROChat:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- where a call's settings come from: keyword, environment, class ----------------

    @classmethod
    def _endpoint(cls, base_url: Optional[str]) -> str:
        source = "base_url"
        if not base_url and os.environ.get("GPROCHAT_BASE_URL"):
            base_url, source = os.environ["GPROCHAT_BASE_URL"], "GPROCHAT_BASE_URL"
        if base_url:
            return check_base_url(base_url, source)
        if cls.api_endpoint == GPROChat.api_endpoint and cls.url != GPROChat.url:
            # A subclass that set only ``url`` means that deployment's endpoint.
            return cls.url.rstrip("/") + protocol.GENERATE_PATH
        return cls.api_endpoint

    @classmethod
    def _secret_key(cls, secret_key: Optional[str]) -> str:
        return secret_key or os.environ.get("GPROCHAT_SECRET_KEY") or cls.secret_key

    @classmethod
    def _password(cls, password: Optional[str]) -> Optional[str]:
        return password or os.environ.get("GPROCHAT_PASSWORD") or cls.password

    @classmethod
    def _headers(cls, endpoint: str) -> dict[str, str]:
        origin = endpoint[: -len(protocol.GENERATE_PATH)] if endpoint.endswith(
            protocol.GENERATE_PATH
        ) else cls.url
        return {
            "accept": "*/*",
            "origin": origin,
            "referer": origin + "/",
            "user-agent": USER_AGENT,
            "content-type": "text/plain;charset=UTF-8",
        }


_GENERATOR = GPROChat.create_async_generator.__func__  # type: ignore[attr-defined]

# The synchronous methods' loop closes its sessions when the interpreter exits.
register_shutdown(pool.aclose)
