"""The incremental SSE decoder: any chunking of the bytes gives the same events."""

from __future__ import annotations

import pytest

from gprochat.server.backends._sse import ServerSentEvent, SSEDecoder, SSEError

STREAM = (
    ": comment, then a BOM-free stream\r\n"
    "event: delta\r\n"
    "id: 7\r\n"
    'data: {"text": "Grüße 世界 🙂"}\r\n'
    "\r\n"
    "data:first line\n"
    "data: second line\n"
    "retry: 1000\n"
    "\n"
    "data: cr only\r"
    "\r"
    "data\n"
    "\n"
    "data: [DONE]\n\n"
).encode()

EXPECTED = [
    ServerSentEvent("delta", '{"text": "Grüße 世界 🙂"}', "7"),
    ServerSentEvent("message", "first line\nsecond line", "7"),
    ServerSentEvent("message", "cr only", "7"),
    ServerSentEvent("message", "", "7"),
    ServerSentEvent("message", "[DONE]", "7"),
]


def decode(pieces: list[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events = [event for piece in pieces for event in decoder.feed(piece)]
    return events + decoder.close()


def test_whole_stream():
    assert decode([STREAM]) == EXPECTED


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_every_two_way_split(cut):
    assert decode([STREAM[:cut], STREAM[cut:]]) == EXPECTED


def test_one_byte_at_a_time():
    assert decode([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


def test_events_are_returned_as_soon_as_complete():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n") == []
    assert decoder.feed(b"\ndata: b") == [ServerSentEvent("message", "a")]


def test_end_of_stream_keeps_a_complete_last_event_and_drops_a_cut_line():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: whole\n") == []
    assert decoder.close() == [ServerSentEvent("message", "whole")]

    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"cut') == []
    assert decoder.close() == []


def test_line_limit():
    decoder = SSEDecoder(max_line=16)
    with pytest.raises(SSEError):
        decoder.feed(b"data: " + b"x" * 32)
