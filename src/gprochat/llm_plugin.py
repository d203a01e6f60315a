"""A plugin for simonw's ``llm``: ``llm -m gprochat "Hi"`` streams through the provider.

Installed with this package as the ``llm`` entry point ``gprochat``; ``llm models``
lists it. Options (``-o NAME VALUE`` on llm's command line, keyword arguments to
``model.prompt()`` in Python) choose the deployment; unset ones fall back to the
provider's environment variables (``GPROCHAT_BASE_URL``, ``GPROCHAT_SECRET_KEY``,
``GPROCHAT_PASSWORD``, ``GPROCHAT_DEPLOYMENTS``). With no deployment named at all, a
prompt fails at once saying how to name one (gprochat.com, the old default, is gone).
Conversations (``llm -c``, ``llm chat``) go as native turns.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Iterator
from typing import Any, Optional

import llm
from pydantic import Field

from .errors import GPROChatError
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
    """The chat messages for this prompt, earlier turns included.

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
            messages.append({"role": "user", "content": response.prompt.prompt})
            messages.append({"role": "assistant", "content": answer})
    messages.append({"role": "user", "content": prompt.prompt})
    return messages


def _chain(prompt: Any) -> Messages:
    try:
        from llm.parts import TextPart
    except ImportError:  # an llm without message chains
        return []
    messages: Messages = []
    for message in getattr(prompt, "messages", None) or []:
        text = "".join(part.text for part in message.parts if isinstance(part, TextPart))
        if message.role in ("system", "user", "assistant") and text:
            messages.append({"role": message.role, "content": text})
    return messages if messages and messages[-1]["role"] == "user" else []


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
