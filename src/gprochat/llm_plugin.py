"""A plugin for simonw's ``llm``: ``llm -m gprochat "Hi"`` streams through the provider.

Installed with this package as the ``llm`` entry point ``gprochat``; ``llm models``
lists it. Options (``-o NAME VALUE`` on llm's command line, keyword arguments to
``model.prompt()`` in Python) choose the deployment; unset ones fall back to the
provider's environment variables (``GPROCHAT_BASE_URL``, ``GPROCHAT_SECRET_KEY``,
``GPROCHAT_PASSWORD``, ``GPROCHAT_DEPLOYMENTS``). With no deployment named at all, a
prompt fails at once saying how to name one (gprochat.com, the old default, is gone).
Conversations (``llm -c``, ``llm chat``) go as native turns.

Images attach as in llm (``llm -m gprochat -a photo.jpg "What is this?"``): PNG, JPEG,
WebP and GIF (``attachment_types``), from a file or standard input, sent as they are;
an earlier turn's images go again with it. A URL attachment is refused rather than
fetched (download the image and attach the file).
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Iterator
from typing import Any, Optional

import llm
from pydantic import Field

from .errors import GPROChatError, ImageError
from .images import IMAGE_TYPES, Image, load_image
from .providers import GPROChat
from .typing import Messages

__all__ = ["GPROChatLLM", "AsyncGPROChatLLM", "register_models"]

MODEL_ID = "gprochat"


class GPROChatOptions(llm.Options):
    base_url: Optional[str] = Field(
        default=None, description="The deployment's root URL (default: GPROCHAT_BASE_URL)"
    )
    deployments: Optional[str] = Field(
        default=None,
        description="A TOML file of deployments to fail over across (default: GPROCHAT_DEPLOYMENTS)",
    )
    secret_key: Optional[str] = Field(
        default=None, description="The deployment's public secret key (default: GPROCHAT_SECRET_KEY)"
    )
    password: Optional[str] = Field(
        default=None, description="The deployment's site password (default: GPROCHAT_PASSWORD)"
    )
    timeout: Optional[float] = Field(
        default=None, gt=0, description="Seconds to connect and between two chunks"
    )
    max_retries: Optional[int] = Field(
        default=None, ge=0, description="Retries before the first text (default 2)"
    )
    proxy: Optional[str] = Field(default=None, description="http://, https:// or socks5:// proxy URL")


def _messages(prompt: Any, conversation: Any) -> Messages:
    """The chat messages for this prompt, earlier turns included, images as content parts.

    Newer llm versions hand the whole chain over as ``prompt.messages`` (also for
    ``llm -c``, which rebuilds it from llm's own log); older ones keep the finished
    exchanges on ``conversation.responses``.
    """
    chain = _chain(prompt)
    if chain:
        return chain
    messages: Messages = []
    if prompt.system:
        messages.append({"role": "system", "content": prompt.system})
    for response in conversation.responses if conversation is not None else []:
        answer = response.text_or_raise()
        if answer:
            # A response llm rebuilt from its log (llm -c) keeps them on itself.
            attachments = (getattr(response.prompt, "attachments", None)
                           or getattr(response, "attachments", None) or [])
            messages.append(_user(response.prompt.prompt, attachments))
            messages.append({"role": "assistant", "content": answer})
    messages.append(_user(prompt.prompt, getattr(prompt, "attachments", [])))
    return messages


def _chain(prompt: Any) -> Messages:
    try:
        from llm.parts import AttachmentPart, TextPart
    except ImportError:  # an llm without message chains
        return []
    messages: Messages = []
    for message in getattr(prompt, "messages", None) or []:
        text = "".join(part.text for part in message.parts if isinstance(part, TextPart))
        attachments = [part.attachment for part in message.parts
                       if isinstance(part, AttachmentPart) and part.attachment is not None]
        if message.role == "user" and attachments:
            messages.append(_user(text, attachments))
        elif message.role in ("system", "user", "assistant") and text:
            messages.append({"role": message.role, "content": text})
    return messages if messages and messages[-1]["role"] == "user" else []


def _user(text: str, attachments: list[Any]) -> dict[str, Any]:
    """A user message; with attachments, OpenAI content parts (the provider sends them
    as ``inline_data``, the data URL's base64 as it is)."""
    if not attachments:
        return {"role": "user", "content": text}
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    parts += [_image(attachment, number).openai_part() for number, attachment in enumerate(attachments, 1)]
    return {"role": "user", "content": parts}


def _image(attachment: Any, number: int) -> Image:
    """An llm ``Attachment`` as a checked image, from its bytes or its file; never fetched."""
    where = f"attachment {number}"
    try:
        if attachment.content:
            return Image.from_bytes(attachment.content, where=where)
        if attachment.path:
            return load_image(attachment.path, where=where)
    except ImageError as exc:
        raise llm.ModelError(str(exc)) from exc
    if attachment.url:
        raise llm.ModelError(
            f"{where} is a URL ({attachment.url}): the gprochat model does not fetch images; "
            "download it and attach the file (llm -a photo.jpg)"
        )
    raise llm.ModelError(f"{where} has no content, no path and no URL")


NO_DEPLOYMENT = (
    "no GPROChat deployment chosen (gprochat.com, the old default, is gone): pass "
    "-o base_url URL (with -o secret_key KEY, -o password PW as needed) or -o deployments FILE, "
    "or set GPROCHAT_BASE_URL or GPROCHAT_DEPLOYMENTS; `gprochat serve` runs one locally"
)


def _kwargs(options: GPROChatOptions) -> dict[str, Any]:
    values = {name: getattr(options, name) for name in GPROChatOptions.model_fields}
    kwargs = {k: v for k, v in values.items() if v is not None}
    if not (kwargs.get("base_url") or kwargs.get("deployments")
            or os.environ.get("GPROCHAT_BASE_URL") or os.environ.get("GPROCHAT_DEPLOYMENTS")):
        raise llm.ModelError(NO_DEPLOYMENT)
    return {"history": "native", **kwargs}


class GPROChatLLM(llm.Model):
    """``llm -m gprochat``: a GeminiProChat deployment through the GPROChat provider."""

    model_id = MODEL_ID
    can_stream = True
    attachment_types: set[str] = set(IMAGE_TYPES)  # noqa: RUF012 (llm declares it a set)

    class Options(GPROChatOptions):
        pass

    def execute(
        self, prompt: Any, stream: bool, response: Any, conversation: Any
    ) -> Iterator[str]:
        messages = _messages(prompt, conversation)
        try:
            yield from GPROChat.create_completion("", messages, **_kwargs(prompt.options))
        except GPROChatError as exc:
            raise llm.ModelError(str(exc)) from exc

    def __str__(self) -> str:
        return f"GPROChat: {self.model_id}"


class AsyncGPROChatLLM(llm.AsyncModel):
    """The same for llm's async API (``llm.get_async_model("gprochat")``)."""

    model_id = MODEL_ID
    can_stream = True
    attachment_types: set[str] = set(IMAGE_TYPES)  # noqa: RUF012 (llm declares it a set)

    class Options(GPROChatOptions):
        pass

    async def execute(
        self, prompt: Any, stream: bool, response: Any, conversation: Any
    ) -> AsyncGenerator[str, None]:
        messages = _messages(prompt, conversation)
        try:
            async for chunk in GPROChat.create_async_generator("", messages, **_kwargs(prompt.options)):
                yield chunk
        except GPROChatError as exc:
            raise llm.ModelError(str(exc)) from exc

    def __str__(self) -> str:
        return f"GPROChat: {self.model_id}"


@llm.hookimpl
def register_models(register: Any) -> None:
    register(GPROChatLLM(), AsyncGPROChatLLM())
