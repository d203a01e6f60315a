"""The GPROChat provider: sign a request, post it, stream the answer back as text."""

from __future__ import annotations

import json
import os
import time
from typing import Any, ClassVar, Optional

import aiohttp

from .. import protocol
from ..errors import ProtocolError
from ..typing import AsyncResult, Messages
from ._http import stream_text
from .base import AsyncGeneratorProvider, ProviderModelMixin
from .helper import format_prompt

__all__ = ["GPROChat"]

USER_AGENT = "gprochat/0.1 (+aiohttp)"


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
        docstring). Raises the exceptions in ``gprochat.errors``.
        """
        cls.get_model(model)
        if not messages:
            raise ProtocolError("messages is empty: pass at least one user message")
        endpoint = cls._endpoint(kwargs.get("base_url"))
        prompt = format_prompt(messages)
        body = protocol.build_generate_request(
            [{"role": "user", "parts": [{"text": prompt}]}],
            timestamp=int(time.time() * 1000),
            secret_key=cls._secret_key(kwargs.get("secret_key")),
            password=cls._password(kwargs.get("password")),
        )
        async with aiohttp.ClientSession() as session:
            async for text in stream_text(
                session,
                endpoint,
                json.dumps(body, ensure_ascii=False).encode(),
                headers=cls._headers(endpoint),
                proxy=proxy,
            ):
                yield text

    # -- where a call's settings come from: keyword, environment, class ----------------

    @classmethod
    def _endpoint(cls, base_url: Optional[str]) -> str:
        base_url = base_url or os.environ.get("GPROCHAT_BASE_URL")
        if base_url:
            return base_url.rstrip("/") + protocol.GENERATE_PATH
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
