"""The small provider framework the GPROChat provider lives in (g4f's shape)."""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Optional

from ..errors import IncompleteResponseError, ModelNotSupportedError
from ..typing import AsyncResult, CreateResult, Messages
from ._sync import iterate_in_background, run_in_background

__all__ = ["BaseProvider", "AsyncGeneratorProvider", "ProviderModelMixin"]


class BaseProvider:
    """What every provider says about itself."""

    url: ClassVar[Optional[str]] = None
    working: ClassVar[bool] = False
    supports_stream: ClassVar[bool] = False
    supports_message_history: ClassVar[bool] = False
    supports_system_message: ClassVar[bool] = False

    @classmethod
    def get_parameters(cls) -> dict[str, Any]:
        """Keyword arguments a call understands, for documentation and CLIs."""
        return {}


class AsyncGeneratorProvider(BaseProvider, abc.ABC):
    """A provider whose one real method streams text chunks asynchronously.

    Implement ``create_async_generator``; ``create_completion`` (synchronous) and
    ``create_async`` (the whole text) come from it. All three are classmethods, so
    they work on the class and on an instance alike.
    """

    supports_stream: ClassVar[bool] = True

    @classmethod
    @abc.abstractmethod
    def create_async_generator(
        cls, model: str, messages: Messages, proxy: Optional[str] = None, **kwargs: Any
    ) -> AsyncResult:
        """Yield the answer's text chunks as they arrive."""

    @classmethod
    def create_completion(
        cls,
        model: str,
        messages: Messages,
        stream: bool = True,
        proxy: Optional[str] = None,
        **kwargs: Any,
    ) -> CreateResult:
        """The same chunks, for synchronous code (scripts, Jupyter cells alike).

        ``stream`` is accepted for g4f compatibility: the result is always a generator.
        """
        return iterate_in_background(
            cls.create_async_generator(model, messages, proxy=proxy, **kwargs)
        )

    @classmethod
    async def create_async(
        cls, model: str, messages: Messages, proxy: Optional[str] = None, **kwargs: Any
    ) -> str:
        """The whole answer as one string.

        If the answer is cut off, the ``IncompleteResponseError`` carries all of the
        text received in ``partial_text`` (a stream keeps only its tail).
        """
        chunks: list[str] = []
        try:
            async for chunk in cls.create_async_generator(model, messages, proxy=proxy, **kwargs):
                chunks.append(chunk)
        except IncompleteResponseError as exc:
            exc.partial_text = "".join(chunks)
            raise
        return "".join(chunks)

    @classmethod
    def create(cls, model: str, messages: Messages, **kwargs: Any) -> str:
        """The whole answer, synchronously."""
        return run_in_background(cls.create_async(model, messages, **kwargs))


class ProviderModelMixin:
    """Model names a provider answers to, and how a requested name resolves.

    An empty name means ``default_model``; an alias resolves to its model; anything
    else raises ``ModelNotSupportedError`` naming the supported ones (g4f's silent
    fallback to the default hides typos).
    """

    default_model: ClassVar[str] = ""
    models: ClassVar[list[str]] = []
    model_aliases: ClassVar[dict[str, str]] = {}

    @classmethod
    def get_models(cls) -> list[str]:
        """Every supported model name, the default first."""
        names = [cls.default_model] if cls.default_model else []
        return names + [name for name in cls.models if name not in names]

    @classmethod
    def get_model(cls, model: Optional[str]) -> str:
        """Resolve ``model`` to a supported model name."""
        if not model:
            return cls.default_model
        if model in cls.get_models():
            return model
        if model in cls.model_aliases:
            return cls.model_aliases[model]
        raise ModelNotSupportedError(
            model, cls.__name__, cls.get_models() + sorted(cls.model_aliases)
        )
