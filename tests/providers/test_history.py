"""History modes: flattened like g4f, or native user/model turns arriving intact at a backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gprochat import ConfigurationError, GPROChat, ProtocolError, format_prompt
from gprochat.protocol import native_messages
from gprochat.server.backends import Backend, Conversation, Turn

from ..conftest import ServerFactory

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "Tell me a joke"},
    {"role": "user", "content": "about cats, né 😀"},
]


class RecordingBackend(Backend):
    """Remembers every conversation it is asked to continue."""

    name = "recording"

    def __init__(self) -> None:
        self.conversations: list[Conversation] = []

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        self.conversations.append(conversation)
        yield "ok"


async def test_native_turns_arrive_intact(make_server: ServerFactory) -> None:
    backend = RecordingBackend()
    server = make_server(backend=backend, secret_key="deployment-secret")
    text = await GPROChat.create_async(
        "", CONVERSATION, base_url=server.base_url, secret_key="deployment-secret", history="native"
    )
    assert text == "ok"  # the server checked the signature over the last turn's text
    (conversation,) = backend.conversations
    assert conversation.history == (
        Turn("user", "You are terse.\n\nHi"),
        Turn("model", "Hello! How can I help?"),
    )
    assert conversation.message == "Tell me a joke\n\nabout cats, né 😀"


async def test_flatten_is_the_default_and_sends_one_prompt(make_server: ServerFactory) -> None:
    backend = RecordingBackend()
    server = make_server(backend=backend)
    await GPROChat.create_async("", CONVERSATION, base_url=server.base_url)
    (conversation,) = backend.conversations
    assert conversation.history == ()
    assert conversation.message == format_prompt(CONVERSATION)


async def test_max_history_caps_the_turns_and_keeps_the_system_message(make_server: ServerFactory) -> None:
    backend = RecordingBackend()
    server = make_server(backend=backend)
    long = [{"role": "system", "content": "Rules."}]
    for n in range(5):
        long += [{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": f"a{n}"}]
    long.append({"role": "user", "content": "last"})
    await GPROChat.create_async("", long, base_url=server.base_url, history="native", max_history=3)
    (conversation,) = backend.conversations
    # Three turns would start with a model turn; the history opens with a user turn.
    assert conversation.history == (Turn("user", "Rules.\n\nq4"), Turn("model", "a4"))
    assert conversation.message == "last"


async def test_max_history_in_flatten_mode(make_server: ServerFactory) -> None:
    backend = RecordingBackend()
    server = make_server(backend=backend)
    await GPROChat.create_async("", CONVERSATION, base_url=server.base_url, max_history=1)
    (conversation,) = backend.conversations
    assert conversation.message == format_prompt(
        [CONVERSATION[0], CONVERSATION[3], CONVERSATION[4]]
    )


def test_native_messages_rules() -> None:
    assert native_messages([{"role": "user", "content": "Hi"}]) == [
        {"role": "user", "parts": [{"text": "Hi"}]}
    ]
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert native_messages([{"role": "user", "content": parts}])[0]["parts"] == [{"text": "ab"}]
    # Only a system message and the new question: the system text leads the question.
    assert native_messages(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}], max_history=0
    ) == [{"role": "user", "parts": [{"text": "S\n\nQ"}]}]


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}], "end with a user"),
        ([{"role": "tool", "content": "{}"}, {"role": "user", "content": "Hi"}], "role 'tool'"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
         "image_url part without a URL"),
        ([{"role": "user", "content": [{"type": "file", "file": {}}]}], "'file' content part"),
        ([{"role": "user", "content": None}], "must be a string"),
    ],
)
async def test_native_history_refuses_what_it_cannot_send(messages: list, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        await GPROChat.create_async("", messages, base_url="http://127.0.0.1:9", history="native")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"history": "tree"}, "history='tree'"),
    ({"max_history": -1}, "max_history=-1"),
])
async def test_bad_history_settings_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        await GPROChat.create_async("", CONVERSATION, base_url="http://127.0.0.1:9", **kwargs)
