"""``gprochat deployments check``: is each deployment reachable, are its credentials right?

Each deployment gets one real, signed request ("Reply with OK."), with no retry and
outside the failover registry; the connection is cut as soon as the first text
arrives, so a model stops generating at once. A deployment that answered is also asked
``GET /v1/models`` (a gprochat server's gateway names its model there; the GeminiProChat
protocol cannot).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Optional

import click

from ..errors import (
    APIStatusError,
    AuthenticationError,
    ConnectError,
    GPROChatError,
    RateLimitError,
    TimeoutError,
)
from ..providers import GPROChat
from ..providers._deployments import (
    DEPLOYMENTS_ENV_VAR,
    Deployment,
    load_deployments,
    parse_deployment,
)
from ..providers._http import get_json
from ..providers._proxy import resolve_proxy
from ..providers._session import pool
from ..providers._timeouts import resolve_timeout
from ..typing import Messages
from ._common import fail

__all__ = ["deployments"]

PROBE: Messages = [{"role": "user", "content": "Reply with OK."}]


@dataclass
class Probe:
    """What one deployment answered (one row of the table, one object of ``--json``)."""

    base_url: str
    usable: bool
    status: str
    """``ok``, ``unreachable``, ``timeout``, ``credentials``, ``rate-limited`` or ``error``."""
    latency_ms: Optional[int]
    """Until the first text (``ok``) or the failure."""
    model: Optional[str]
    model_source: Optional[str]
    """``server`` (its ``/v1/models``), ``declared`` (the deployments list), or ``None``."""
    detail: str


@click.group()
def deployments() -> None:
    """Check the deployments chat --deployment / --deployments fail over across."""


@deployments.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--deployment", "specs", multiple=True,
              metavar="URL[,secret=KEY][,password=PW][,model=NAME]",
              help="A deployment to check (repeatable), instead of a file.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Seconds to wait to connect and for the first text.")
@click.option("--proxy", envvar="GPROCHAT_PROXY", show_envvar=True, help="Proxy URL for every probe.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of the table.")
def check(file: Optional[str], specs: tuple[str, ...], timeout: float, proxy: Optional[str],
          as_json: bool) -> None:
    """Probe each deployment of FILE (default: GPROCHAT_DEPLOYMENTS): reachable, latency to
    the first text, signature and password accepted, model. Exits 1 if none is usable."""
    try:
        if file and specs:
            fail("give a FILE or --deployment options, not both", 2)
        if specs:
            listed = [parse_deployment(spec) for spec in specs]
        elif file:
            listed = load_deployments(file)
        elif os.environ.get(DEPLOYMENTS_ENV_VAR, "").strip():
            path = os.environ[DEPLOYMENTS_ENV_VAR].strip()
            listed = load_deployments(path, f"{DEPLOYMENTS_ENV_VAR}={path!r}")
        else:
            fail("no deployments to check: give a FILE, --deployment URL,... "
                 f"or set {DEPLOYMENTS_ENV_VAR}", 2)
        resolve_proxy(proxy)
    except GPROChatError as exc:
        fail(str(exc), 2)
    probes = asyncio.run(_probe_all(listed, timeout, proxy))
    if as_json:
        click.echo(json.dumps([asdict(probe) for probe in probes], indent=2))
    else:
        _print_table(probes)
    if not any(probe.usable for probe in probes):
        click.echo("Error: no deployment is usable", err=True)
        raise SystemExit(1)


async def _probe_all(listed: list[Deployment], timeout: float, proxy: Optional[str]) -> list[Probe]:
    try:
        return list(await asyncio.gather(*(_probe(d, timeout, proxy) for d in listed)))
    finally:
        await pool.aclose()


async def _probe(deployment: Deployment, seconds: float, proxy: Optional[str]) -> Probe:
    secret_key = GPROChat._secret_key(deployment.secret_key)
    password = GPROChat._password(deployment.password)
    started = time.monotonic()
    texts = GPROChat.create_async_generator(
        "", PROBE, proxy=proxy, base_url=deployment.base_url, secret_key=secret_key,
        password=password, max_retries=0, timeout=seconds,
    )
    status, detail = "ok", ""
    try:
        first = await texts.__anext__()
        detail = f"first text: {first[:40]!r}"
    except StopAsyncIteration:
        detail = "an empty answer"
    except GPROChatError as exc:
        status, detail = _status(exc), str(exc)
    finally:
        await texts.aclose()  # cut: the model need not finish the answer
    latency = round((time.monotonic() - started) * 1000)
    model, source = None, None
    if status == "ok":  # a deployment that refused the probe is not asked again
        model, source = await _served_model(deployment, password, seconds, proxy)
    if model is None and deployment.model:
        model, source = deployment.model, "declared"
    return Probe(deployment.display, status == "ok", status, latency, model, source, detail)


def _status(exc: GPROChatError) -> str:
    if isinstance(exc, AuthenticationError) or (
        isinstance(exc, APIStatusError) and exc.status_code == 403
    ):
        return "credentials"
    if isinstance(exc, RateLimitError):
        return "rate-limited"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectError):
        return "unreachable"
    return "error"


async def _served_model(
    deployment: Deployment, password: Optional[str], seconds: float, proxy: Optional[str]
) -> tuple[Optional[str], Optional[str]]:
    """The first model a gprochat server's ``/v1/models`` lists (``None`` elsewhere)."""
    headers = {"accept": "application/json"}
    if password:
        headers["authorization"] = f"Bearer {password}"
    via = resolve_proxy(proxy)
    try:
        page: Any = await get_json(
            await pool.session(via), deployment.base_url.rstrip("/") + "/v1/models",
            headers=headers, proxy=via, timeout=resolve_timeout(seconds),
        )
        name = page["data"][0]["id"]
    except (GPROChatError, LookupError, TypeError):
        return None, None
    return (name, "server") if isinstance(name, str) else (None, None)


def _print_table(probes: list[Probe]) -> None:
    rows = [("DEPLOYMENT", "STATUS", "LATENCY", "MODEL", "DETAIL")]
    for probe in probes:
        latency = f"{probe.latency_ms} ms" if probe.latency_ms is not None else "-"
        model = probe.model or "-"
        if probe.model_source == "declared":
            model += " (declared)"
        rows.append((probe.base_url, probe.status, latency, model, probe.detail))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)]
        click.echo("  ".join([*cells, row[4]]).rstrip())
