"""``Client`` and ``AsyncClient``: the OpenAI SDK's shape over the GPROChat provider.

>>> client = Client(base_url="http://127.0.0.1:8000")
>>> answer = client.chat.completions.create(model="", messages=[{"role": "user", "content": "Hi"}])
>>> answer.choices[0].message.content
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, Optional, TypeVar, Union, overload

from .._streams import aclose
from ..errors import ConfigurationError, UnsupportedParameterError
from ..images import Image
from ..openai.builder import CompletionBuilder, estimate_usage, stream_chunks
from ..openai.params import (
    IGNORED_PARAMETERS,
    PASSED_PARAMETERS,
    REFUSED_PARAMETERS,
    check_parameters,
    normalize_messages,
)
from ..openai.types import ChatCompletion, ChatCompletionChunk, Model, SyncPage
from ..providers import GPROChat
from ..providers._deployments import Deployment, DeploymentsSetting, resolve_deployments, select_deployments
from ..providers._failover import AnsweredBy
from ..providers._models import is_stock_model, model_not_offered, offered_models
from ..providers._proxy import resolve_proxy
from ..providers._retry import resolve_max_retries
from ..providers._session import pool
from ..providers._sync import iterate_in_background, run_in_background
from ..providers._timeouts import resolve_timeout
from ..providers.gprochat import USER_AGENT
from ..typing import Messages

__all__ = ["Client", "AsyncClient", "Stream", "AsyncStream"]

# The OpenAI SDK's per-request transport options: accepted, and ``timeout`` is used.
_REQUEST_OPTIONS = frozenset({"timeout", "extra_headers", "extra_query", "extra_body"})
# g4f's client's ways to attach images to the new message, besides image_url parts.
_IMAGE_OPTIONS = frozenset({"image", "image_name", "images", "media"})


class _Settings:
    """What a client was built with; turned into provider keyword arguments per call."""

    def __init__(self, provider: type[GPROChat], **options: Any) -> None:
        self.provider = provider
        self.options = options
        # Settings given here are checked here, as the SDK's constructor does: a URL
        # without a scheme or a bad timeout fails where it is written, not at a later call.
        if options.get("base_url"):
            provider._endpoint(options["base_url"])
        if options.get("deployments") is not None:
            if options.get("base_url"):
                raise ConfigurationError(
                    "pass either base_url= (one deployment) or deployments= (several), not both"
                )
            # Read (and a file parsed) once, here: every request uses the same list.
            options["deployments"] = resolve_deployments(options["deployments"])
        if options.get("timeout") is not None:
            resolve_timeout(options["timeout"])
        if options.get("max_retries") is not None:
            resolve_max_retries(options["max_retries"])
        if options.get("proxy"):
            resolve_proxy(options["proxy"])

    def deployments(self) -> Optional[list[Deployment]]:
        """The client's deployment list, else ``GPROCHAT_DEPLOYMENTS``'s (when no base_url)."""
        if self.options.get("deployments") is not None:
            listed: list[Deployment] = self.options["deployments"]
            return listed
        if self.options.get("base_url"):
            return None
        return self.provider._deployments({})

    def provider_kwargs(self, timeout: Any) -> dict[str, Any]:
        options = dict(self.options)
        if timeout is not None:
            options["timeout"] = timeout
        # Only what was set: a provider without timeouts / retries / history modes
        # (older versions) still works, and its own defaults apply otherwise.
        return {name: value for name, value in options.items() if value is not None}


class _Request:
    """One ``create`` call, checked: refuse what cannot be honoured before any network."""

    def __init__(self, settings: _Settings, model: str, messages: Messages, params: dict[str, Any]):
        unknown = sorted(
            set(params)
            - PASSED_PARAMETERS
            - IGNORED_PARAMETERS
            - _REQUEST_OPTIONS
            - REFUSED_PARAMETERS
            - _IMAGE_OPTIONS
            - {"stream_options"}
        )
        if unknown:
            raise UnsupportedParameterError(
                f"unknown parameter(s) {', '.join(unknown)}: chat.completions.create accepts "
                "OpenAI's chat parameters only", param=unknown[0]
            )
        attached = _attached_images(params)
        params = {name: value for name, value in params.items() if name not in _IMAGE_OPTIONS}
        check_parameters(params)
        texts, with_images = _split_images(messages)
        self.messages = normalize_messages(texts)
        # What the provider is sent: the normalized messages, those with images as parts
        # in their places (the provider checks each image, so an error names the part the
        # caller wrote, before anything is sent, and sends them as inline_data).
        self.sent: Messages = [
            {**message, "content": with_images[index]} if index in with_images else message
            for index, message in enumerate(self.messages)
        ]
        deployments = settings.deployments()
        if deployments is None:
            # Another name is asked of the deployment when the request is sent (a router).
            stock = is_stock_model(settings.provider, model)
            self.model = settings.provider.get_model(model) if stock else model
        else:
            self.model = select_deployments(settings.provider, model, deployments)[0]
        self.requested = model
        options = params.get("stream_options") or {}
        self.include_usage = bool(options.get("include_usage"))
        self.provider = settings.provider
        self.kwargs = settings.provider_kwargs(params.get("timeout"))
        self.kwargs["on_answer"] = self._answered
        if attached is not None:
            self.kwargs["images"] = attached

    def _answered(self, answered: AnsweredBy) -> None:
        # The answer's ``model``: what the deployment that answered declares, else the
        # name asked for (the GeminiProChat protocol does not say which model answered).
        self.model = answered.model

    def texts(self) -> AsyncIterator[str]:
        return self.provider.create_async_generator(self.requested, list(self.sent), **self.kwargs)

    async def completion(self) -> ChatCompletion:
        text = "".join([chunk async for chunk in self.texts()])
        return CompletionBuilder(self.model).completion(text, estimate_usage(self.messages, text))

    async def open_stream(self) -> AsyncIterator[ChatCompletionChunk]:
        """The chunk stream, after the first text arrived, so errors raise at ``create``."""
        texts = self.texts()
        try:
            first = await texts.__anext__()
        except StopAsyncIteration:
            first = ""
        except BaseException:
            await aclose(texts)
            raise
        return stream_chunks(
            CompletionBuilder(self.model),
            texts,
            first=first,
            messages=self.messages if self.include_usage else None,
        )


def _split_images(messages: Any) -> tuple[Any, dict[int, list[Any]]]:
    """``messages`` without their ``image_url`` parts, and the content of those that had
    some, by message index (its text parts as ``normalize_messages`` reads them)."""
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)):
        return messages, {}  # normalize_messages says what is wrong with it
    texts: list[Any] = []
    with_images: dict[int, list[Any]] = {}
    for index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, list) and any(_is_image_part(part) for part in content):
            with_images[index] = [
                part if _is_image_part(part) or not isinstance(part, Mapping)
                else {"type": "text", "text": str(part.get("text", ""))}
                for part in content
            ]
            # An empty text in each image's place: the joined text is the same, and a
            # refusal by normalize_messages names the part at its index in the caller's list.
            message = {**message, "content": [
                _NO_TEXT if _is_image_part(part) else part for part in content
            ]}
        texts.append(message)
    return texts, with_images


_NO_TEXT = {"type": "text", "text": ""}


def _is_image_part(part: Any) -> bool:
    return isinstance(part, Image) or (isinstance(part, Mapping) and part.get("type") == "image_url")


def _attached_images(params: dict[str, Any]) -> Optional[list[Any]]:
    """g4f's client's ``image=`` (with ``image_name=``), ``images=`` or ``media=``, as one list."""
    given = [name for name in ("image", "images", "media") if params.get(name) is not None]
    if len(given) > 1:
        raise ConfigurationError(
            f"pass one of image=, images= or media=, not {' and '.join(n + '=' for n in given)}"
        )
    if not given:
        if params.get("image_name") is not None:
            raise ConfigurationError("image_name= names the image given as image=: pass image= too")
        return None
    if given[0] == "image":
        return [(params["image"], params.get("image_name"))]
    value = params[given[0]]
    return value if isinstance(value, list) else [value]


class Stream:
    """A streamed answer for synchronous code: iterate it for ``ChatCompletionChunk``s.

    Leaving the loop early, ``close()`` or ``with`` releases the connection.
    """

    def __init__(self, chunks: AsyncIterator[ChatCompletionChunk]) -> None:
        self._chunks = chunks
        self._iterator: Generator[ChatCompletionChunk, None, None] = iterate_in_background(
            chunks
        )

    def __iter__(self) -> Iterator[ChatCompletionChunk]:
        return self

    def __next__(self) -> ChatCompletionChunk:
        return next(self._iterator)

    def close(self) -> None:
        self._iterator.close()
        # An iterator never started has no ``finally`` to run: close the source too.
        run_in_background(aclose(self._chunks))

    def __enter__(self) -> Stream:
        return self

    def __exit__(
        self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()


class AsyncStream:
    """A streamed answer: ``async for chunk in stream``; ``await stream.close()`` to stop early."""

    def __init__(self, chunks: AsyncIterator[ChatCompletionChunk]) -> None:
        self._chunks = chunks

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        return await self._chunks.__anext__()

    async def close(self) -> None:
        await aclose(self._chunks)

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(
        self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.close()


class _Models:
    def __init__(self, settings: _Settings) -> None:
        self._settings = settings

    async def _offered(self, wanted: Optional[str] = None) -> tuple[str, ...]:
        """What the client's ``base_url`` offers besides the stock names (``GET /api/models``,
        kept a while, asked again when it lacks ``wanted``); nothing without a ``base_url``
        or from a stock server."""
        options, provider = self._settings.options, self._settings.provider
        if not options.get("base_url"):
            return ()
        via = resolve_proxy(options.get("proxy"))
        offered = await offered_models(
            await pool.session(via), options["base_url"].rstrip("/"),
            password=provider._password(options.get("password")), proxy=via,
            timeout=resolve_timeout(options.get("timeout")), user_agent=USER_AGENT,
            wanted=wanted,
        )
        return offered or ()

    async def _names(self) -> list[str]:
        names = self._settings.provider.get_models()
        declared = [d.model for d in self._settings.deployments() or [] if d.model]
        declared += await self._offered()
        return names + [name for name in dict.fromkeys(declared) if name not in names]

    async def _page(self) -> SyncPage[Model]:
        return SyncPage[Model](
            data=[Model(id=name, created=0, owned_by="gprochat") for name in await self._names()]
        )

    async def _retrieve(self, model: str) -> Model:
        provider = self._settings.provider
        deployments = self._settings.deployments()
        if deployments is not None:
            name = select_deployments(provider, model, deployments)[0]
        elif is_stock_model(provider, model) or not self._settings.options.get("base_url"):
            name = provider.get_model(model)
        else:
            offered = await self._offered(model)
            if model not in offered:
                where = Deployment(self._settings.options["base_url"]).display
                raise model_not_offered(provider, model, where, offered or None)
            name = model
        return Model(id=name, created=0, owned_by="gprochat")


class Models(_Models):
    """``client.models``: the provider's model names, and what the client's ``base_url``
    offers besides (a gprochat server's ``GET /api/models``; a stock server offers none)."""

    def list(self) -> SyncPage[Model]:
        return run_in_background(self._page())

    def retrieve(self, model: str) -> Model:
        """The model ``model`` names (aliases resolve); ``ModelNotSupportedError`` if none."""
        return run_in_background(self._retrieve(model))


class AsyncModels(_Models):
    """``client.models`` for ``AsyncClient``."""

    async def list(self) -> SyncPage[Model]:
        return await self._page()

    async def retrieve(self, model: str) -> Model:
        return await self._retrieve(model)


def _required_model(model: Optional[str]) -> str:
    if model is None:
        # As openai-python: leaving out ``model`` is a programming error, not a default.
        raise TypeError(
            "Missing required argument 'model': pass model=\"gemini-1.5-pro\", or model=\"\" "
            "for the deployment's default"
        )
    return model


class Completions:
    """``client.chat.completions``."""

    def __init__(self, settings: _Settings) -> None:
        self._settings = settings

    @overload
    def create(self, *, model: str, messages: Messages, stream: Literal[False] = False,
               **params: Any) -> ChatCompletion: ...
    @overload
    def create(self, *, model: str, messages: Messages, stream: Literal[True],
               **params: Any) -> Stream: ...
    def create(
        self, *, model: Optional[str] = None, messages: Messages, stream: bool = False, **params: Any
    ) -> Union[ChatCompletion, Stream]:
        """A ``ChatCompletion``, or with ``stream=True`` a ``Stream`` of chunks.

        ``messages`` may hold OpenAI ``image_url`` content parts with data URLs; as in
        g4f's client, ``image=`` (with ``image_name=``), ``images=`` or ``media=``
        attach images to the last message (bytes, file paths, data URLs). Errors
        (connection, status, bad parameters, a bad image) raise here, before iteration.
        """
        request = _Request(self._settings, _required_model(model), messages, params)
        if stream:
            return Stream(run_in_background(request.open_stream()))
        return run_in_background(request.completion())


class AsyncCompletions:
    """``client.chat.completions`` for ``AsyncClient``."""

    def __init__(self, settings: _Settings) -> None:
        self._settings = settings

    @overload
    async def create(self, *, model: str, messages: Messages, stream: Literal[False] = False,
                     **params: Any) -> ChatCompletion: ...
    @overload
    async def create(self, *, model: str, messages: Messages, stream: Literal[True],
                     **params: Any) -> AsyncStream: ...
    async def create(
        self, *, model: Optional[str] = None, messages: Messages, stream: bool = False, **params: Any
    ) -> Union[ChatCompletion, AsyncStream]:
        """A ``ChatCompletion``, or with ``stream=True`` an ``AsyncStream`` of chunks."""
        request = _Request(self._settings, _required_model(model), messages, params)
        if stream:
            return AsyncStream(await request.open_stream())
        return await request.completion()


class _Chat:
    def __init__(self, completions: Any) -> None:
        self.completions = completions


_C = TypeVar("_C", bound="_BaseClient")


class _BaseClient:
    def __init__(
        self,
        *,
        base_url: Optional[str] = None,
        secret_key: Optional[str] = None,
        password: Optional[str] = None,
        deployments: DeploymentsSetting = None,
        proxy: Optional[str] = None,
        timeout: Optional[Any] = None,
        max_retries: Optional[int] = None,
        history: Optional[Literal["flatten", "native"]] = "native",
        provider: type[GPROChat] = GPROChat,
    ) -> None:
        self.base_url = base_url
        self._options: dict[str, Any] = {
            "base_url": base_url,
            "secret_key": secret_key,
            "password": password,
            "deployments": deployments,
            "proxy": proxy,
            "timeout": timeout,
            "max_retries": max_retries,
            "history": history,
            "provider": provider,
        }
        options = dict(self._options)
        self._settings = _Settings(options.pop("provider"), **options)
        self._setup(self._settings)

    def _setup(self, settings: _Settings) -> None:
        raise NotImplementedError

    def with_options(self: _C, **changes: Any) -> _C:
        """A new client with the same settings but ``changes`` (as openai-python's).

        >>> fast = client.with_options(timeout=5, max_retries=0)
        """
        unknown = sorted(set(changes) - set(self._options))
        if unknown:
            raise TypeError(
                f"with_options() got unknown setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(self._options)}"
            )
        return type(self)(**{**self._options, **changes})

    copy = with_options


class Client(_BaseClient):
    """An OpenAI-style client for a GPROChat deployment, for synchronous code.

    ``client.chat.completions.create(model=..., messages=[...], stream=False|True)`` and
    ``client.models.list()``. Settings left ``None`` fall back to the provider's
    (environment variables ``GPROCHAT_BASE_URL``, ``GPROCHAT_SECRET_KEY``,
    ``GPROCHAT_PASSWORD``, ``GPROCHAT_DEPLOYMENTS``, then gprochat.com). Several
    deployments, failed over before the first text:
    ``Client(deployments=[Deployment(base_url=...), {"base_url": ...}])`` or a TOML
    file's path (see docs/router.md). Works in scripts and inside a thread
    whose event loop is running (Jupyter). Conversations go as real turns
    (``history="native"``, as the GeminiProChat web app sends them); pass
    ``history="flatten"`` for g4f's single flattened prompt.
    """

    def _setup(self, settings: _Settings) -> None:
        self.chat = _Chat(Completions(settings))
        self.models = Models(settings)

    def close(self) -> None:
        """Close the pooled connections (the provider's, shared by synchronous clients).

        A later call opens new ones. ``with Client(...) as client:`` closes on exit.
        """
        self._settings.provider.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncClient(_BaseClient):
    """``Client``'s asynchronous twin: ``await client.chat.completions.create(...)``."""

    def _setup(self, settings: _Settings) -> None:
        self.chat = _Chat(AsyncCompletions(settings))
        self.models = AsyncModels(settings)

    async def close(self) -> None:
        """Close the running event loop's pooled connections (``await client.close()``).

        A later call opens new ones. ``async with AsyncClient(...) as client:`` closes on exit.
        """
        await self._settings.provider.aclose()

    aclose = close

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
