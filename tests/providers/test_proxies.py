"""Requests through real HTTP and SOCKS5 proxies on loopback (pproxy, in a subprocess)."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from gprochat import ConfigurationError, GPROChat, ProxyError
from gprochat.server import BackgroundServer

from ..processes import free_port

HELLO = [{"role": "user", "content": "Hello!"}]


@dataclass
class Proxies:
    """One pproxy process serving HTTP and SOCKS5, both requiring ``user:secret``."""

    http_port: int
    socks_port: int
    log: list[str] = field(default_factory=list)

    def url(self, scheme: str, credentials: str = "user:secret") -> str:
        port = self.http_port if scheme == "http" else self.socks_port
        auth = f"{credentials}@" if credentials else ""
        return f"{scheme}://{auth}127.0.0.1:{port}"

    def relayed(self, scheme: str, server: BackgroundServer) -> list[str]:
        """Log lines of connections the proxy relayed to ``server`` over ``scheme``."""
        prefix, suffix = scheme + " ", f":{server.port}"
        return [line for line in self.log if line.startswith(prefix) and line.endswith(suffix)]


PPROXY_WITHOUT_UVLOOP = (
    "import sys, asyncio; sys.modules['uvloop'] = None; "
    "asyncio.set_event_loop(asyncio.new_event_loop()); "
    "sys.argv[0] = 'pproxy'; from pproxy.server import main; main()"
)


@pytest.fixture
def proxies() -> Iterator[Proxies]:
    found = Proxies(http_port=free_port(), socks_port=free_port())
    process = subprocess.Popen(
        [
            # pproxy breaks on uvloop (installed with uvicorn's extras): keep it on asyncio's loop.
            sys.executable, "-c", PPROXY_WITHOUT_UVLOOP, "-v", "--auth", "0",  # check credentials every time
            "-l", f"http://127.0.0.1:{found.http_port}#user:secret",
            "-l", f"socks5://127.0.0.1:{found.socks_port}#user:secret",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )

    def read_log() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            found.log.append(line.strip())

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 20
        for port in (found.http_port, found.socks_port):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"pproxy did not start: {found.log}") from None
                    time.sleep(0.05)
        yield found
    finally:
        process.terminate()
        process.wait(timeout=10)
        reader.join(timeout=5)
        if process.stdout:
            process.stdout.close()


async def wait_for_log(proxies: Proxies, scheme: str, server: BackgroundServer) -> list[str]:
    import asyncio

    for _ in range(200):  # the log comes through a pipe: give it up to two seconds
        if proxies.relayed(scheme, server):
            break
        await asyncio.sleep(0.01)
    return proxies.relayed(scheme, server)


@pytest.mark.parametrize("scheme", ["http", "socks5"])
async def test_request_goes_through_the_proxy(
    scheme: str, proxies: Proxies, echo_server: BackgroundServer
) -> None:
    text = await GPROChat.create_async("", HELLO, base_url=echo_server.base_url, proxy=proxies.url(scheme))
    assert text.endswith("Hello!")
    assert len(await wait_for_log(proxies, scheme, echo_server)) == 1


@pytest.mark.parametrize("scheme", ["http", "socks5"])
async def test_wrong_proxy_password_raises_proxy_error(
    scheme: str, proxies: Proxies, echo_server: BackgroundServer
) -> None:
    with pytest.raises(ProxyError) as info:
        await GPROChat.create_async(
            "", HELLO, base_url=echo_server.base_url, proxy=proxies.url(scheme, "user:hunter2")
        )
    assert "hunter2" not in str(info.value)  # credentials never end up in messages
    assert info.value.attempts == 1  # a refusal is not retried
    assert proxies.relayed(scheme, echo_server) == []


async def test_gprochat_proxy_sets_the_default(
    proxies: Proxies, echo_server: BackgroundServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPROCHAT_PROXY", proxies.url("socks5"))
    assert (await GPROChat.create_async("", HELLO, base_url=echo_server.base_url)).endswith("Hello!")
    assert len(await wait_for_log(proxies, "socks5", echo_server)) == 1


@pytest.mark.parametrize("scheme", ["http", "socks5"])
async def test_proxy_that_is_down_raises_proxy_error(scheme: str, echo_server: BackgroundServer) -> None:
    proxy = f"{scheme}://127.0.0.1:{free_port()}"
    with pytest.raises(ProxyError, match=r"127\.0\.0\.1"):
        await GPROChat.create_async("", HELLO, base_url=echo_server.base_url, proxy=proxy, max_retries=0)


@pytest.mark.parametrize("proxy", ["ftp://127.0.0.1:21", "127.0.0.1:8080", "socks5://127.0.0.1"])
async def test_bad_proxy_urls_are_refused(proxy: str) -> None:
    with pytest.raises(ConfigurationError, match="proxy"):
        await GPROChat.create_async("", HELLO, base_url="http://127.0.0.1:9", proxy=proxy)
