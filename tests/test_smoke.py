from gprochat import GPROChat
from gprochat.server import BackgroundServer

from .scripted import LAST_CHUNK, ScriptedServer, chunk, head


async def test_echo_server_answers_provider(echo_server: BackgroundServer) -> None:
    messages = [{"role": "user", "content": "Hello!"}]
    chunks = [c async for c in GPROChat.create_async_generator("", messages, base_url=echo_server.base_url)]
    assert len(chunks) > 1
    assert "Hello!" in "".join(chunks)


async def test_scripted_server_records_request() -> None:
    async def script(request, writer):  # type: ignore[no-untyped-def]
        writer.write(head() + chunk("hé".encode()[:2]) + chunk("hé".encode()[2:]) + LAST_CHUNK)

    async with ScriptedServer(script) as server:
        text = await GPROChat.create_async("", [{"role": "user", "content": "x"}], base_url=server.base_url)
    assert text == "hé"
    assert server.requests[0].path == "/api/generate"
