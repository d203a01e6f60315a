"""Which OpenAI chat parameters gprochat honours, ignores or refuses; message normalising.

Shared by ``Client`` and the gateway, so both accept and refuse exactly the same
requests. Refusals raise ``UnsupportedParameterError`` / ``InvalidParameterError``
(both also ``ValueError``) naming the parameter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InvalidParameterError, UnsupportedParameterError

__all__ = [
    "PASSED_PARAMETERS",
    "IGNORED_PARAMETERS",
    "REFUSED_PARAMETERS",
    "check_parameters",
    "normalize_messages",
]

PASSED_PARAMETERS = frozenset(
    {"temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed"}
)
"""Handed to the model backend, which honours them when it can (the GPROChat wire has no
field for them: a client talking to a deployment, or a relaying gateway, drops them)."""

IGNORED_PARAMETERS = frozenset(
    {
        "presence_penalty",
        "frequency_penalty",
        "user",
        "logit_bias",
        "parallel_tool_calls",
        "metadata",
        "store",
        "service_tier",
        "reasoning_effort",
        "safety_identifier",
        "prompt_cache_key",
        "verbosity",
    }
)
"""Accepted and ignored: they change sampling or bookkeeping, never the answer's shape."""

REFUSED_PARAMETERS = frozenset(
    {
        "n",
        "tools",
        "tool_choice",
        "functions",
        "function_call",
        "response_format",
        "logprobs",
        "top_logprobs",
        "audio",
        "modalities",
        "prediction",
        "web_search_options",
    }
)
"""Refused unless given their no-op value (``n=1``, ``tools=[]``, ``tool_choice="none"``,
``response_format={"type": "text"}``, ``logprobs=False``, ``modalities=["text"]``)."""

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def _is_noop(name: str, value: Any) -> bool:
    if value is None:
        return True
    if name == "n":
        return bool(value == 1)
    if name in ("tools", "functions"):
        return bool(value == [])
    if name in ("tool_choice", "function_call"):
        return bool(value == "none")
    if name == "response_format":
        return isinstance(value, Mapping) and value.get("type") == "text"
    if name in ("logprobs", "top_logprobs"):
        return value in (False, 0)
    if name == "modalities":
        return list(value) == ["text"] if isinstance(value, (list, tuple)) else False
    return False


def check_parameters(params: Mapping[str, Any]) -> None:
    """Refuse parameters that cannot be honoured; ``params`` maps names to given values."""
    for name, value in params.items():
        if name in REFUSED_PARAMETERS and not _is_noop(name, value):
            raise UnsupportedParameterError(
                f"{name}={value!r} is not supported: GPROChat answers with exactly one "
                f"plain-text message (no tools, JSON modes, log probabilities or several "
                f"choices); remove {name!r} from the request",
                param=name,
            )


def normalize_messages(messages: Any) -> list[dict[str, str]]:
    """OpenAI messages -> ``[{"role": "system"|"user"|"assistant", "content": text}]``.

    ``developer`` becomes ``system``; content given as a list of text parts is joined.
    Tool and function messages and parts of any other type (audio, files) are refused;
    callers take ``image_url`` parts out first (the client and the gateway each keep
    them beside the text), so this message names them as accepted too. The last
    message must be the user's, as the GPROChat protocol requires.
    """
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)) or not messages:
        raise InvalidParameterError(
            "messages must be a non-empty list of {'role': ..., 'content': ...} objects",
            param="messages",
        )
    normalized = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, Mapping):
            raise InvalidParameterError(
                f"{where} must be an object with 'role' and 'content'", param=where
            )
        role = message.get("role")
        if role not in _ROLES:
            detail = (
                "tool and function messages need tool calling, which GPROChat does not support"
                if role in ("tool", "function")
                else "use one of: system, developer, user, assistant"
            )
            raise InvalidParameterError(f"{where}.role {role!r} is not accepted: {detail}",
                                        param=f"{where}.role")
        content = message.get("content")
        if content is None and role != "assistant":
            # OpenAI requires it (only an assistant's message that calls tools may lack it):
            # taking it as "" would answer a question no one asked.
            raise InvalidParameterError(
                f"{where}.content is null or missing: a {role} message needs its content, "
                "a string or a list of text parts",
                param=f"{where}.content",
            )
        normalized.append({"role": _ROLES[role], "content": _text(content, where)})
    if normalized[-1]["role"] != "user":
        raise InvalidParameterError(
            "the last message must be from the user (role 'user'): GPROChat continues a "
            "conversation from the user's newest message",
            param="messages",
        )
    return normalized


def _text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, (str, bytes)):
        texts = []
        for number, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise UnsupportedParameterError(
                    f"{where}.content[{number}] has type {kind!r}: only text parts "
                    "({'type': 'text', 'text': ...}) and image parts ({'type': 'image_url', "
                    "'image_url': {'url': 'data:image/png;base64,...'}}) are supported",
                    param=f"{where}.content",
                )
            text = part.get("text")
            if not isinstance(text, str):  # as OpenAI: never the repr of a null or an object
                shown = "missing" if "text" not in part else f"{type(text).__name__}, not a string"
                raise InvalidParameterError(
                    f"{where}.content[{number}].text is {shown}: a text part is "
                    "{'type': 'text', 'text': '...'}",
                    param=f"{where}.content[{number}].text",
                )
            texts.append(text)
        return "".join(texts)
    raise InvalidParameterError(
        f"{where}.content must be a string or a list of text parts", param=f"{where}.content"
    )
