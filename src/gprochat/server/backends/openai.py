"""A backend for any OpenAI-compatible chat API (OpenAI, Ollama, vLLM, llama.cpp, ...)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from typing import Any

from gprochat.errors import BackendError
from gprochat.images import Image

from ._http import InvalidOptionError, StreamingHTTPBackend, drain, ended_early
from ._json_body import JSONBody, Spliced, materialize
from .base import AnswerReport, Conversation

__all__ = ["OpenAIBackend"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIBackend(StreamingHTTPBackend):
    """Streams from ``POST {base_url}/chat/completions`` with ``stream: true``.

    Options:

    - ``base_url``: the API root including ``/v1``, as in the openai SDK
      (``http://localhost:11434/v1`` for Ollama). Default ``https://api.openai.com/v1``.
    - ``api_key``: sent as ``Authorization: Bearer ...``; required for api.openai.com,
      optional for local servers.
    - ``model``: the model to ask for; a conversation's own ``model`` overrides it.
    - ``connect_timeout``: seconds to open a connection (default 10).
    - ``read_timeout``: seconds the upstream may stay silent mid-answer (default 300;
      reasoning models can think for minutes before their first token).
    - ``max_connections``: most upstream connections at once (default 100; the server
      sizes it from ``--max-streams``; 0: no limit); ``pool_timeout``: seconds to wait
      for a free one (default: ``connect_timeout``), then 503.
    - ``extra_headers``: more request headers (e.g. OpenRouter's ``HTTP-Referer``).

    >>> backend = OpenAIBackend(base_url="http://localhost:11434/v1", model="llama3.2")
    """

    name = "openai"
    upstream = "OpenAI-compatible API"
    # Given to the model as image_url parts; a model without vision is refused by the
    # upstream itself (its 400 is passed on).
    accepts_images = True
    key_hint = "set --openai-api-key or GPROCHAT_OPENAI_API_KEY"

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        model: str = "gpt-4o-mini",
        connect_timeout: float = 10.0,
        read_timeout: float = 300.0,
        max_connections: int = 100,
        pool_timeout: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            base_url=base_url or DEFAULT_BASE_URL,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_connections=max_connections,
            pool_timeout=pool_timeout,
        )
        if not api_key and self.base_url == DEFAULT_BASE_URL:
            raise InvalidOptionError(
                "api_key",
                "the openai backend needs an API key for api.openai.com: "
                "pass --openai-api-key or set GPROCHAT_OPENAI_API_KEY "
                "(or point --openai-base-url at a local server such as Ollama)"
            )
        if not model:
            raise InvalidOptionError("model", "the openai backend needs a model name: pass --openai-model")
        self.model = model
        self.headers = {"Accept": "text/event-stream", **(extra_headers or {})}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    def models(self) -> list[str]:
        return [self.model]

    def request_body(self, conversation: Conversation) -> dict[str, Any]:
        """The JSON body sent upstream for ``conversation``."""
        body: dict[str, Any] = materialize(self._body(conversation))
        return body

    def _body(self, conversation: Conversation) -> dict[str, Any]:
        """``request_body`` with each image's base64 as a ``Spliced`` value."""
        messages: list[dict[str, Any]] = []
        if conversation.system:
            messages.append({"role": "system", "content": conversation.system})
        for turn in conversation.history:
            role = "assistant" if turn.role == "model" else "user"
            messages.append({"role": role, "content": _content(turn.text, turn.images)})
        messages.append({"role": "user", "content": _content(conversation.message, conversation.images)})
        body: dict[str, Any] = {
            "model": conversation.model or self.model,
            "messages": messages,
            "stream": True,
            # The upstream's own token counts, in a last chunk; the gateway passes them on.
            "stream_options": {"include_usage": True},
        }
        if conversation.temperature is not None:
            body["temperature"] = conversation.temperature
        if conversation.max_tokens is not None:
            body["max_tokens"] = conversation.max_tokens
        if conversation.stop:
            body["stop"] = list(conversation.stop)
        if conversation.top_p is not None:
            body["top_p"] = conversation.top_p
        if conversation.seed is not None:
            body["seed"] = conversation.seed
        return body

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        url = f"{self.base_url}/chat/completions"
        body = self._body(conversation)
        payload = JSONBody(body) if conversation.image_count else body
        events = self.post_events(url, payload, self.headers)
        async with aclosing(events):
            async for event in events:
                if event.data.strip() == "[DONE]":
                    await drain(events)
                    return
                for text in _chunk_texts(event.data, self.upstream, conversation.report):
                    yield text
        raise ended_early(self.upstream, "connection closed before data: [DONE]")


def _content(text: str, images: Sequence[Image]) -> str | list[dict[str, Any]]:
    """A message's ``content``: its text, or with images, OpenAI's content parts (the
    text, then each image as an ``image_url`` part whose data URL holds the base64 text
    as it arrived)."""
    if not images:
        return text
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    return parts + [
        {"type": "image_url",
         "image_url": {"url": Spliced(f"data:{image.mime_type};base64,", *image.data_span)}}
        for image in images
    ]


def _chunk_texts(data: str, upstream: str, report: AnswerReport | None = None) -> list[str]:
    """The content of one ``chat.completion.chunk`` (empty for role-only or usage chunks).

    The chunk's ``id`` and ``usage`` go to ``report`` when given.
    """
    try:
        chunk = json.loads(data)
    except ValueError as exc:
        raise BackendError(f"{upstream} sent an event that is not JSON: {data[:200]!r}") from exc
    if not isinstance(chunk, dict):
        raise BackendError(f"{upstream} sent an unexpected event: {data[:200]!r}")
    if "error" in chunk:
        # vLLM, OpenRouter and others report failures mid-stream as an error event.
        error = chunk["error"]
        message = error.get("message", error) if isinstance(error, dict) else error
        raise BackendError(f"{upstream} failed mid-answer: {message!r}")
    if report is not None:
        if report.id is None and isinstance(chunk.get("id"), str):
            report.id = chunk["id"]
        usage = chunk.get("usage")
        if isinstance(usage, dict) and all(
            isinstance(usage.get(name), int)
            for name in ("prompt_tokens", "completion_tokens", "total_tokens")
        ):
            report.usage = usage
    texts = []
    for choice in chunk.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        content = (choice.get("delta") or {}).get("content")
        if isinstance(content, str) and content:
            texts.append(content)
        finish = choice.get("finish_reason")
        if report is not None and finish in ("stop", "length"):
            report.finish_reason = finish
        if finish == "content_filter":
            # Azure and others cut a filtered answer short; don't pass it off as complete.
            raise BackendError(f"{upstream} blocked the answer: finish_reason content_filter")
    return texts
