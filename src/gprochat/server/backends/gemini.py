"""A backend for Google's Gemini API (``streamGenerateContent``), as GeminiProChat used."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from typing import Any
from urllib.parse import quote

from gprochat.errors import BackendError
from gprochat.images import Image

from ._http import InvalidOptionError, StreamingHTTPBackend, ended_early
from ._json_body import JSONBody, Spliced, materialize
from .base import AnswerReport, Conversation

__all__ = ["SAFETY_CATEGORIES", "THRESHOLDS", "GeminiBackend", "safety_settings"]

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"

SAFETY_CATEGORIES = (
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
)
# The thresholds Google documents (HarmBlockThreshold). A typo is refused at start-up;
# a threshold newer than this list can still be sent in the JSON-list form.
THRESHOLDS = (
    "BLOCK_NONE",
    "BLOCK_ONLY_HIGH",
    "BLOCK_MEDIUM_AND_ABOVE",
    "BLOCK_LOW_AND_ABOVE",
    "OFF",
    "HARM_BLOCK_THRESHOLD_UNSPECIFIED",
)
# Reasons a candidate may end normally; anything else means the answer was cut by Google.
_NORMAL_FINISH = frozenset({"STOP", "MAX_TOKENS"})

SafetyOption = str | Sequence[Mapping[str, str]] | None


def safety_settings(safety: SafetyOption) -> list[dict[str, str]] | None:
    """Normalise the ``safety`` option to the API's ``safetySettings`` list.

    A threshold name applies to the four standard categories; a JSON list (or a list
    of dicts) is passed through; ``None`` or ``""`` leaves Google's defaults.

    >>> safety_settings("block_none")[0]
    {'category': 'HARM_CATEGORY_HARASSMENT', 'threshold': 'BLOCK_NONE'}
    """
    if safety is None or (isinstance(safety, str) and not safety.strip()):
        return None
    if isinstance(safety, str) and not safety.lstrip().startswith("["):
        threshold = safety.strip().upper()
        if threshold not in THRESHOLDS:
            raise InvalidOptionError(
                "safety",
                f"Gemini safety threshold {safety!r} is not one of {', '.join(THRESHOLDS)} "
                "(or 'default' for Google's own, or a JSON list of safety settings)",
            )
        return [{"category": category, "threshold": threshold} for category in SAFETY_CATEGORIES]
    if isinstance(safety, str):
        try:
            safety = json.loads(safety)
        except ValueError as exc:
            raise InvalidOptionError("safety", f"Gemini safety settings are not valid JSON: {exc}") from exc
    settings = list(safety or ())
    if not all(isinstance(s, Mapping) and {"category", "threshold"} <= s.keys() for s in settings):
        raise InvalidOptionError(
            "safety",
            "Gemini safety settings must be a threshold such as BLOCK_NONE or a JSON list like "
            '[{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]'
        )
    return [dict(s) for s in settings]


class GeminiBackend(StreamingHTTPBackend):
    """Streams from ``POST {base_url}/{api_version}/models/{model}:streamGenerateContent?alt=sse``.

    Options:

    - ``api_key``: sent as ``x-goog-api-key``; required unless ``base_url`` is a
      proxy that adds it.
    - ``model``: default ``gemini-2.0-flash``; a conversation's own ``model`` overrides it.
    - ``base_url``: default ``https://generativelanguage.googleapis.com`` (or a reverse proxy).
    - ``api_version``: ``v1beta`` (default) or ``v1``.
    - ``safety``: a threshold for the four standard categories (``BLOCK_NONE``, the
      default, as GeminiProChat sent; ``BLOCK_ONLY_HIGH``, ``BLOCK_MEDIUM_AND_ABOVE``,
      ``BLOCK_LOW_AND_ABOVE``, ``OFF``), a JSON list of ``{"category", "threshold"}``
      objects, or ``None``/``""`` for Google's defaults.
    - ``max_output_tokens``: default 8000 (GeminiProChat's); a conversation's
      ``max_tokens`` overrides it; ``None`` leaves Google's default.
    - ``connect_timeout`` / ``read_timeout``: seconds to connect (default 10) and that
      the upstream may stay silent mid-answer (default 300).
    - ``max_connections``: most upstream connections at once (default 100; the server
      sizes it from ``--max-streams``; 0: no limit); ``pool_timeout``: seconds to wait
      for a free one (default: ``connect_timeout``), then 503.
    """

    name = "gemini"
    upstream = "Gemini API"
    accepts_images = True
    key_hint = "set --gemini-api-key or GPROCHAT_GEMINI_API_KEY"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        model: str = "gemini-2.0-flash",
        base_url: str = DEFAULT_BASE_URL,
        api_version: str = "v1beta",
        safety: SafetyOption = "BLOCK_NONE",
        max_output_tokens: int | None = 8000,
        connect_timeout: float = 10.0,
        read_timeout: float = 300.0,
        max_connections: int = 100,
        pool_timeout: float | None = None,
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
                "the gemini backend needs an API key: pass --gemini-api-key or set "
                "GPROCHAT_GEMINI_API_KEY (create one at https://aistudio.google.com/apikey)"
            )
        if not model:
            raise InvalidOptionError("model", "the gemini backend needs a model name: pass --gemini-model")
        self.model = model
        self.api_version = api_version.strip("/") or "v1beta"
        self.safety_settings = safety_settings(safety)
        self.max_output_tokens = max_output_tokens
        self.headers = {"Accept": "text/event-stream"}
        if api_key:
            self.headers["x-goog-api-key"] = api_key

    def models(self) -> list[str]:
        return [self.model]

    def url(self, model: str) -> str:
        """The streaming endpoint for ``model`` (``models/`` prefix optional, as in the SDK)."""
        model = model.removeprefix("models/")
        return (
            f"{self.base_url}/{self.api_version}/models/{quote(model, safe='')}"
            ":streamGenerateContent?alt=sse"
        )

    def request_body(self, conversation: Conversation) -> dict[str, Any]:
        """The JSON body sent upstream for ``conversation``."""
        body: dict[str, Any] = materialize(self._body(conversation))
        return body

    def _body(self, conversation: Conversation) -> dict[str, Any]:
        """``request_body`` with each image's base64 as a ``Spliced`` value."""
        contents: list[dict[str, Any]] = []
        turns = [(turn.role, turn.text, turn.images) for turn in conversation.history]
        for role, text, images in [*turns, ("user", conversation.message, conversation.images)]:
            parts = _parts(text, images)
            # Gemini rejects two consecutive turns of one role; merge them, as the web app did.
            if contents and contents[-1]["role"] == role:
                contents[-1]["parts"].extend(parts)
            else:
                contents.append({"role": role, "parts": parts})
        body: dict[str, Any] = {"contents": contents}
        if conversation.system:
            body["systemInstruction"] = {"parts": [{"text": conversation.system}]}
        config: dict[str, Any] = {}
        max_tokens = conversation.max_tokens or self.max_output_tokens
        if max_tokens is not None:
            config["maxOutputTokens"] = max_tokens
        if conversation.temperature is not None:
            config["temperature"] = conversation.temperature
        if conversation.stop:
            config["stopSequences"] = list(conversation.stop)
        if config:
            body["generationConfig"] = config
        if self.safety_settings is not None:
            body["safetySettings"] = self.safety_settings
        return body

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        url = self.url(conversation.model or self.model)
        body = self._body(conversation)
        payload = JSONBody(body) if conversation.image_count else body
        events = self.post_events(url, payload, self.headers)
        finished = False
        async with aclosing(events):
            async for event in events:
                # Keep reading after finishReason: a last event may carry usage metadata.
                for candidate in _candidates(event.data):
                    text, finish = _candidate_text(candidate), candidate.get("finishReason")
                    if text:
                        yield text
                    if finish is not None and finish not in _NORMAL_FINISH:
                        raise BackendError(_blocked_message(candidate))
                    if finish is not None and conversation.report is not None:
                        conversation.report.finish_reason = (
                            "length" if finish == "MAX_TOKENS" else "stop"
                        )
                    finished = finished or finish is not None
                if conversation.report is not None:
                    _report_usage(event.data, conversation.report)
        if not finished:
            raise ended_early(self.upstream, "connection closed before a finishReason")


def _parts(text: str, images: Sequence[Image]) -> list[dict[str, Any]]:
    """A turn's parts: its images as ``inline_data`` (the base64 text as it arrived, not
    decoded and encoded again), then its text; Google advises the text after the image.
    A turn of images only has no text part (Gemini refuses an empty one beside them)."""
    parts: list[dict[str, Any]] = [
        {"inline_data": {"mime_type": image.mime_type, "data": Spliced("", *image.data_span)}}
        for image in images
    ]
    if text or not parts:
        parts.append({"text": text})
    return parts


def _candidates(data: str) -> list[dict[str, Any]]:
    """The candidates of one GenerateContentResponse event."""
    try:
        response = json.loads(data)
        candidates = response.get("candidates") or []
        feedback = response.get("promptFeedback") or {}
    except (ValueError, AttributeError) as exc:
        raise BackendError(f"Gemini API sent an unexpected event: {data[:200]!r}") from exc
    if isinstance(response.get("error"), dict):
        # Google reports a failure after the 200 (e.g. 503 overloaded) as an error event.
        error = response["error"]
        raise BackendError(f"Gemini API failed mid-answer: {error.get('message', error)!r}")
    if not candidates and feedback.get("blockReason"):
        raise BackendError(f"Gemini blocked the prompt: blockReason {feedback['blockReason']}")
    return [c for c in candidates if isinstance(c, dict)]


def _report_usage(data: str, report: AnswerReport) -> None:
    """Google's ``usageMetadata`` (on the last events) as OpenAI's usage fields."""
    try:
        metadata = json.loads(data).get("usageMetadata")
    except (ValueError, AttributeError):
        return
    if not isinstance(metadata, dict):
        return
    prompt, answer = metadata.get("promptTokenCount"), metadata.get("candidatesTokenCount")
    if isinstance(prompt, int) and isinstance(answer, int):
        report.usage = {"prompt_tokens": prompt, "completion_tokens": answer,
                        "total_tokens": metadata.get("totalTokenCount", prompt + answer)}


def _candidate_text(candidate: Mapping[str, Any]) -> str:
    parts = (candidate.get("content") or {}).get("parts") or []
    # Thought summaries (Gemini 2.5 with includeThoughts) are not part of the answer.
    return "".join(p.get("text", "") for p in parts if isinstance(p, dict) and not p.get("thought"))


def _blocked_message(candidate: Mapping[str, Any]) -> str:
    reason = candidate["finishReason"]
    flagged = [
        f"{rating.get('category')}: {rating.get('probability')}"
        for rating in candidate.get("safetyRatings") or ()
        if isinstance(rating, dict) and rating.get("blocked")
    ]
    detail = f" ({', '.join(flagged)})" if flagged else ""
    hint = (
        "; the server's --gemini-safety setting decides what is blocked"
        if reason == "SAFETY"
        else ""
    )
    return f"Gemini blocked the answer: finishReason {reason}{detail}{hint}"
