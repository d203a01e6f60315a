"""The shipped deploy/ files, run: Debian's nginx and caddy in front of ``gprochat serve``.

Each proxy runs the shipped configuration with only its addresses and certificate
paths substituted (``render``: every substituted text must be found, so the test
fails if the file drifts away from what it substitutes), on free ports of 127.0.0.1,
with TLS from a self-signed certificate made for the test session. gprochat runs the
command line of deploy/gprochat.service. The tests are skipped when nginx, caddy or
openssl is missing, and fail instead when the ``CI`` environment variable is set.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ..processes import free_port, stop_process
from ..server.web.conftest import WebServer

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNIT = DEPLOY / "gprochat.service"
#: The unit runs gprochat on this address; both proxy configurations point at it.
UNIT_BINARY = "/opt/gprochat/venv/bin/gprochat"
UNIT_LISTEN = ("--host", "127.0.0.1", "--port", "8000")
UPSTREAM = "127.0.0.1:8000"
PREFIX = "/chat/"


def require(binary: str, package: str) -> str:
    """The path of ``binary``; skip (fail in CI) when it is missing."""
    found = shutil.which(binary) or next(
        (path for path in (f"/usr/sbin/{binary}", f"/usr/bin/{binary}") if os.path.exists(path)), None
    )
    if found is None:
        message = f"{binary} is not installed (Debian: apt-get install -y {package})"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must install it (.ci/deploy-deps does)")
        pytest.skip(message)
    return found


def render(text: str, replacements: dict[str, str]) -> str:
    """``text`` with each key replaced; a key that is not there fails the test."""
    for old, new in replacements.items():
        assert old in text, f"the shipped configuration no longer contains {old!r}"
        text = text.replace(old, new)
    return text


def unit_command() -> list[str]:
    """The arguments after ``gprochat`` on deploy/gprochat.service's ExecStart line."""
    lines = [line for line in UNIT.read_text().splitlines() if line.startswith("ExecStart=")]
    assert len(lines) == 1, lines
    argv = shlex.split(lines[0].removeprefix("ExecStart="))
    assert argv[0] == UNIT_BINARY, argv
    return argv[1:]


def unit_serve_flags() -> list[str]:
    """The unit's ``gprochat serve`` flags, without ``--host`` and ``--port`` (checked)."""
    args = unit_command()
    assert args[0] == "serve", args
    serve_args = args[1:]
    for index in range(len(serve_args) - len(UNIT_LISTEN) + 1):
        if tuple(serve_args[index:index + len(UNIT_LISTEN)]) == UNIT_LISTEN:
            del serve_args[index:index + len(UNIT_LISTEN)]
            break
    else:
        raise AssertionError(f"the unit no longer listens on {UPSTREAM}: {args}")
    return serve_args


def start_gprochat(*extra: str) -> WebServer:
    """``gprochat serve`` as the unit runs it, on a free port, plus ``extra`` flags."""
    # WebServer gives --host 127.0.0.1 and a free --port itself.
    return WebServer(*unit_serve_flags(), *extra)


@asynccontextmanager
async def tls_session(
    certificate: Certificate, source: str = "127.0.0.1"
) -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp session that trusts ``certificate`` and connects from ``source``; on
    leaving, it waits until every TLS connection it used has closed.

    aiohttp before 3.12.4 closes a TLS connection by starting TLS's closing handshake and
    returning at once. A test that ends then (its event loop closed, the proxy stopped)
    leaves the socket under it open for ever, and the garbage collector reports it later
    in whichever test runs then ("unclosed transport <_SelectorSocketTransport>", seen in
    CI's lowest-versions pass). asyncio ends a handshake the peer never answers after 30 s.
    """
    sockets: list[Any] = []

    class Response(aiohttp.ClientResponse):
        async def start(self, connection: Any) -> aiohttp.ClientResponse:
            if connection.transport is not None:  # the socket under the TLS layer
                sockets.append(connection.transport.get_extra_info("socket"))
            return await super().start(connection)

    connector = aiohttp.TCPConnector(ssl=certificate.client_context(), local_addr=(source, 0))
    try:
        async with aiohttp.ClientSession(connector=connector, response_class=Response) as session:
            yield session
    finally:
        async def closed() -> None:  # a closed socket's file descriptor is -1
            while any(sock is not None and sock.fileno() != -1 for sock in sockets):
                await asyncio.sleep(0.01)

        await asyncio.wait_for(closed(), 60)


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this certificate only (and checks the name)."""
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1, made with openssl."""
    openssl = require("openssl", "openssl")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return Certificate(cert, key)


class Proxy:
    """A reverse proxy process in front of ``backend``, on free loopback ports."""

    name: str

    def __init__(self, backend: Any, certificate: Certificate, changes: dict[str, str] | None = None,
                 prefix: str = PREFIX) -> None:
        """``backend`` has ``port`` and ``base_url``; ``changes`` alter the shipped file further
        (then the site may be at another ``prefix``)."""
        self.backend = backend
        self.certificate = certificate
        self.changes = changes or {}
        self.prefix = prefix
        self.folder = Path(tempfile.mkdtemp(prefix=f"gprochat-{self.name}-"))
        self.http_port = free_port()
        self.https_port = free_port()
        self.url = f"https://127.0.0.1:{self.https_port}"
        self.site_url = self.url + prefix.rstrip("/")
        command = self.command()
        self._output = (self.folder / "output.log").open("wb")
        self.process = subprocess.Popen(command, stdout=self._output, stderr=subprocess.STDOUT,
                                        env=self.environment(), cwd=self.folder)
        try:
            self._wait_listening()
        except Exception as exc:
            logs = self.logs()
            self.stop()
            raise RuntimeError(f"{self.name} did not start ({exc}):\n{logs}") from exc

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def logs(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.folder.glob("*.log")))

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 30
        for port in (self.http_port, self.https_port):
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.process.returncode}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{self.name} does not listen on {port}") from None
                    time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.process)
        self._output.close()
        shutil.rmtree(self.folder, ignore_errors=True)


class Nginx(Proxy):
    """deploy/nginx.conf, included in a minimal main configuration of the test's own."""

    name = "nginx"

    def command(self) -> list[str]:
        binary = require("nginx", "nginx-light")
        site = render((DEPLOY / "nginx.conf").read_text(), {
            f"server {UPSTREAM};": f"server 127.0.0.1:{self.backend.port};",
            "listen 80;": f"listen 127.0.0.1:{self.http_port};",
            "listen [::]:80;": "",
            "listen 443 ssl http2;": f"listen 127.0.0.1:{self.https_port} ssl http2;",
            "listen [::]:443 ssl http2;": "",
            "/etc/letsencrypt/live/chat.example.org/fullchain.pem": str(self.certificate.cert),
            "/etc/letsencrypt/live/chat.example.org/privkey.pem": str(self.certificate.key),
            **self.changes,
        })
        (self.folder / "site.conf").write_text(site)
        temp = "\n".join(f"    {kind}_temp_path {self.folder}/{kind};"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (self.folder / "nginx.conf").write_text(f"""
daemon off;
{"user root;" if os.geteuid() == 0 else ""}
worker_processes 1;
pid {self.folder}/nginx.pid;
error_log {self.folder}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {self.folder}/access.log;
{temp}
    include {self.folder}/site.conf;
}}
""")
        return [binary, "-e", str(self.folder / "error.log"), "-p", str(self.folder),
                "-c", str(self.folder / "nginx.conf")]


class Caddy(Proxy):
    """deploy/Caddyfile, after global options of the test's own (ports, no admin API)."""

    name = "caddy"

    def command(self) -> list[str]:
        binary = require("caddy", "caddy")
        site = render((DEPLOY / "Caddyfile").read_text(), {
            "chat.example.org {": (f"https://127.0.0.1:{self.https_port} {{\n"
                                   f"\ttls {self.certificate.cert} {self.certificate.key}"),
            f"reverse_proxy {UPSTREAM} {{": f"reverse_proxy 127.0.0.1:{self.backend.port} {{",
            **self.changes,
        })
        config = self.folder / "Caddyfile"
        config.write_text(f"""{{
	admin off
	default_bind 127.0.0.1
	http_port {self.http_port}
	https_port {self.https_port}
	storage file_system {self.folder}/storage
	skip_install_trust
}}
{site}""")
        return [binary, "run", "--adapter", "caddyfile", "--config", str(config)]

    def environment(self) -> dict[str, str]:
        # Caddy keeps its data and autosaved configuration under these.
        return {**os.environ, "HOME": str(self.folder), "XDG_DATA_HOME": str(self.folder / "data"),
                "XDG_CONFIG_HOME": str(self.folder / "config")}


PROXIES: dict[str, type[Proxy]] = {"nginx": Nginx, "caddy": Caddy}

#: The edits docs/deploy.md gives for serving the site at the root instead of /chat/.
AT_THE_ROOT = {
    "nginx": {
        "    location = /chat {\n        return 301 /chat/;\n    }\n": "",
        "location /chat/ {": "location / {",
        "proxy_pass http://gprochat/;": "proxy_pass http://gprochat;",
    },
    "caddy": {
        "\tredir /chat /chat/ 301\n": "",
        "handle_path /chat/* {": "handle {",
    },
}


@pytest.fixture(params=sorted(PROXIES))
def proxy_kind(request: pytest.FixtureRequest) -> type[Proxy]:
    kind = PROXIES[request.param]
    require(kind.name, "nginx-light" if kind.name == "nginx" else kind.name)
    return kind


@pytest.fixture
def deployment(proxy_kind: type[Proxy], certificate: Certificate) -> Iterator[Callable[..., Proxy]]:
    """``deployment(*serve_flags, at_the_root=False)`` -> gprochat as the unit runs it, behind
    the proxy (the site under /chat/, or at the root as docs/deploy.md says how)."""
    started: list[Any] = []

    def start(*flags: str, at_the_root: bool = False) -> Proxy:
        backend = start_gprochat(*flags)
        started.append(backend)
        if at_the_root:
            proxy = proxy_kind(backend, certificate, AT_THE_ROOT[proxy_kind.name], prefix="/")
        else:
            proxy = proxy_kind(backend, certificate)
        started.append(proxy)
        return proxy

    yield start
    for process in started:
        # Shown by pytest only when the test failed: what the proxy and gprochat logged.
        name = getattr(process, "name", "gprochat")
        print(f"----- {name} log -----")
        print(process.logs() if isinstance(process, Proxy) else process.output())
    for process in reversed(started):
        process.stop()
