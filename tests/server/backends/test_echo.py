import pytest

from gprochat.server.backends import Conversation, EchoBackend, create_backend


async def collect(backend: EchoBackend, message: str) -> list[str]:
    return [chunk async for chunk in backend.stream(Conversation(message=message))]


async def test_echo_repeats_the_message_verbatim_in_several_chunks() -> None:
    message = "  spaced   out\ttext\nwith lines "
    chunks = await collect(EchoBackend(), message)
    assert len(chunks) > 3
    assert "".join(chunks) == EchoBackend.PREFIX + message
    assert "built-in echo backend" in "".join(chunks)


async def test_echo_chunk_size_and_repeat() -> None:
    one_word = await collect(EchoBackend(words_per_chunk=1), "a b c")
    four_words = await collect(EchoBackend(words_per_chunk=4), "a b c")
    assert len(one_word) > len(four_words)
    repeated = "".join(await collect(EchoBackend(repeat=3), "ab "))
    assert repeated.endswith("ab ab ab ")


def test_create_backend_names_the_choices() -> None:
    assert isinstance(create_backend("echo", delay=0.5), EchoBackend)
    with pytest.raises(ValueError, match="choose one of: auto, echo, gemini, local, openai"):
        create_backend("gpt")
    with pytest.raises(ValueError):
        EchoBackend(delay=-1)
