"""``/api/generate``'s optional ``temperature`` (our extension) reaches the backend.

A backend that answers with the temperature it was asked for, over real sockets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gprochat.server import BackgroundServer
from gprochat.server.backends import Backend, Conversation

from ..conftest import ServerFactory
from .helpers import error_message, post, signed


class TemperatureBackend(Backend):
    """Answers ``temperature=<what it was asked>`` (``None`` for the default)."""

    name = "temperature"

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        yield f"temperature={conversation.temperature}"


@pytest.fixture
def server(make_server: ServerFactory) -> BackgroundServer:
    return make_server(backend=TemperatureBackend())


@pytest.mark.parametrize(("fields", "answer"), [
    ({}, b"temperature=None"),
    ({"temperature": None}, b"temperature=None"),
    ({"temperature": 0}, b"temperature=0.0"),
    ({"temperature": 0.7}, b"temperature=0.7"),
    ({"temperature": 2}, b"temperature=2.0"),
])
async def test_the_temperature_reaches_the_backend_and_its_absence_the_default(
    server: BackgroundServer, fields: dict[str, Any], answer: bytes
) -> None:
    status, _, raw = await post(server.base_url, {**signed("Hi"), **fields})
    assert (status, raw) == (200, answer)


HINT = " Send a number from 0 to 2, or leave it out for the server's default."


@pytest.mark.parametrize(("temperature", "expected"), [
    (2.5, "Invalid field 'temperature': Input should be less than or equal to 2." + HINT),
    (-0.1, "Invalid field 'temperature': Input should be greater than or equal to 0." + HINT),
    ("0.5", "Invalid field 'temperature': Input should be a valid number." + HINT),
    (True, "Invalid field 'temperature': Input should be a valid number." + HINT),
    (float("nan"), "Request body has NaN, which is not JSON: send numbers only."),
])
async def test_a_temperature_out_of_range_is_a_400_naming_it(
    server: BackgroundServer, temperature: Any, expected: str
) -> None:
    status, _, raw = await post(server.base_url, {**signed("Hi"), "temperature": temperature})
    assert (status, error_message(raw)) == (400, expected)


async def test_the_signature_does_not_cover_the_temperature(server: BackgroundServer) -> None:
    # Signed without it, sent with it: accepted (a stock client's signature stays valid).
    body = signed("Hi")
    body["temperature"] = 1.5
    status, _, raw = await post(server.base_url, body)
    assert (status, raw) == (200, b"temperature=1.5")
