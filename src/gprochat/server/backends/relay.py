"""A backend that relays to another GeminiProChat deployment, through the GPROChat provider.

The provider's errors (written for a user of the client) become ``BackendError`` here,
worded for our own clients by ``failures.backend_failure``; a deployment refusing our
secret key or password is ``key_rejected``, so the router retires it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any, Optional

from gprochat.errors import BackendError, GPROChatError
from gprochat.images import Image
from gprochat.typing import Messages

from .base import Backend, Conversation

__all__ = ["RelayBackend"]


def _content(text: str, images: tuple[Image, ...]) -> Any:
    # The checked images themselves, as content parts: the provider sends each one's
    # base64 as it arrived (no decoding, no encoding again), as inline_data after the text.
    return [{"type": "text", "text": text}, *images] if images else text


class RelayBackend(Backend):
    """Answers from the GeminiProChat deployment at ``url`` (``secret_key``, ``password``).

    The GeminiProChat wire has no sampling fields: temperature, max_tokens and stop are
    dropped. Images (the new message's and the history's) go on as ``inline_data``
    parts, byte-identical. The provider does not retry (the router fails over instead);
    ``timeout`` is the provider's (seconds, or a ``gprochat.Timeout``).

    >>> backend = RelayBackend(url="https://chat.example.org", password="site password")
    """

    name = "relay"
    accepts_images = True  # sent on as inline_data; the upstream deployment decides

    def __init__(
        self,
        *,
        url: str,
        secret_key: Optional[str] = None,
        password: Optional[str] = None,
        model: str = "",
        timeout: Any = None,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"the relay backend needs an http:// or https:// url, not {url!r}")
        self.url = url.rstrip("/")
        self.secret_key = secret_key
        self.password = password
        self.model = model
        self.timeout = timeout

    def models(self) -> list[str]:
        from ...providers import GPROChat

        return GPROChat.get_models()

    def resolve(self, model: str) -> Optional[str]:
        from ...providers import GPROChat

        if not model or model in GPROChat.get_models() or model in GPROChat.model_aliases:
            return GPROChat.get_model(model)  # an alias answers as the name it stands for
        return None

    async def aclose(self) -> None:
        # The provider pools its sessions per event loop: close this loop's at shutdown
        # rather than leave a kept-alive connection to the deployment for the GC.
        from ...providers._session import pool

        await pool.aclose()

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        from ...providers import GPROChat
        from ..failures import backend_failure

        messages: Messages = []
        if conversation.system:
            messages.append({"role": "system", "content": conversation.system})
        for turn in conversation.history:
            messages.append({"role": "assistant" if turn.role == "model" else "user",
                             "content": _content(turn.text, turn.images)})
        messages.append({"role": "user", "content": _content(conversation.message, conversation.images)})
        kwargs: dict[str, Any] = {"base_url": self.url, "history": "native", "max_retries": 0}
        for name in ("secret_key", "password", "timeout"):
            if getattr(self, name) is not None:
                kwargs[name] = getattr(self, name)
        chunks = GPROChat.create_async_generator(self.model, messages, **kwargs)
        try:
            async with aclosing(chunks):
                async for text in chunks:
                    yield text
        except GPROChatError as exc:
            if isinstance(exc, BackendError):
                raise
            failure = backend_failure(exc, f"relay to {self.url}")
            raise BackendError(
                failure.message, status=failure.status, retry_after=failure.retry_after,
                key_rejected=failure.code == "upstream_auth_failed", detail=str(exc),
            ) from exc
