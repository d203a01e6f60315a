"""A cut-off long answer: memory stays bounded, yet no caller loses text (benchmark B2)."""

import asyncio

import pytest

from gprochat import GPROChat, IncompleteResponseError

from ..scripted import RecordedRequest, ScriptedServer, chunk, head

HELLO = [{"role": "user", "content": "Hello!"}]
PIECE = "0123456789abcdef" * 1024  # 16 Ki characters
PIECES = 10  # 160 Ki characters, well past the 64 Ki tail a stream keeps


async def cut_after_long_answer(request: RecordedRequest, writer: asyncio.StreamWriter) -> None:
    writer.write(head())
    for index in range(PIECES):
        writer.write(chunk(f"{index}:{PIECE}".encode()))
        await writer.drain()
    writer.close()


async def test_stream_keeps_only_the_tail_and_counts_everything() -> None:
    received: list[str] = []
    async with ScriptedServer(cut_after_long_answer) as server:
        with pytest.raises(IncompleteResponseError) as info:
            async for text in GPROChat.create_async_generator("", HELLO, base_url=server.base_url):
                received.append(text)
    whole = "".join(received)
    assert len(whole) > 64 * 1024 * 2
    assert info.value.partial_text == whole[-64 * 1024 :]
    assert f"cut off after {len(whole)} characters" in str(info.value)


async def test_create_async_puts_the_whole_partial_text_back() -> None:
    async with ScriptedServer(cut_after_long_answer) as server:
        with pytest.raises(IncompleteResponseError) as info:
            await GPROChat.create_async("", HELLO, base_url=server.base_url)
    expected = "".join(f"{index}:{PIECE}" for index in range(PIECES))
    assert info.value.partial_text == expected
