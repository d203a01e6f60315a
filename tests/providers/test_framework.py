from typing import ClassVar

import pytest

from gprochat import (
    AsyncGeneratorProvider,
    GPROChat,
    ModelNotSupportedError,
    ProviderModelMixin,
    format_prompt,
)
from gprochat.typing import AsyncResult, Messages


class Countdown(AsyncGeneratorProvider, ProviderModelMixin):
    default_model = "count"
    models: ClassVar[list[str]] = ["count", "count-fast"]
    model_aliases: ClassVar[dict[str, str]] = {"c": "count"}

    @classmethod
    async def create_async_generator(
        cls, model: str, messages: Messages, proxy: str | None = None, **kwargs: object
    ) -> AsyncResult:
        for number in range(3, 0, -1):
            yield f"{number} "


def test_format_prompt_single_message_is_its_content() -> None:
    assert format_prompt([{"role": "user", "content": "Hello!"}]) == "Hello!"


def test_format_prompt_several_messages_as_g4f() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "Hi there!"},
    ]
    assert format_prompt(messages) == "System: Be brief.\nUser: Hello!\nAssistant: Hi there!\nAssistant:"


def test_get_model_default_alias_and_unknown() -> None:
    assert Countdown.get_model("") == "count"
    assert Countdown.get_model("count-fast") == "count-fast"
    assert Countdown.get_model("c") == "count"
    with pytest.raises(ModelNotSupportedError) as info:
        Countdown.get_model("gpt-4")
    assert "'gpt-4'" in str(info.value) and "count, count-fast" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_gprochat_models() -> None:
    assert GPROChat.get_model("") == "gemini-1.5-pro"
    assert GPROChat.get_model("gemini-pro") == "gemini-1.5-pro"  # g4f's own name for it


def test_create_completion_is_a_plain_generator() -> None:
    assert list(Countdown.create_completion("", [])) == ["3 ", "2 ", "1 "]


async def test_create_async_returns_whole_text() -> None:
    assert await Countdown.create_async("", []) == "3 2 1 "


async def test_create_completion_works_inside_a_running_loop() -> None:
    # Like a Jupyter cell: synchronous code called from the event loop's own thread.
    assert "".join(Countdown().create_completion("c", [])) == "3 2 1 "
