import json

import pytest

from gprochat import protocol
from gprochat.errors import ProtocolError


def test_signature_check_value_from_protocol() -> None:
    assert protocol.generate_signature(1693631200000, "Hello, world!").startswith("1973b490")


def test_signature_covers_time_text_and_secret() -> None:
    base = protocol.generate_signature(1, "a", "s")
    assert protocol.generate_signature(2, "a", "s") != base
    assert protocol.generate_signature(1, "b", "s") != base
    assert protocol.generate_signature(1, "a", "t") != base
    assert len(base) == 64 and base == base.lower()


def test_build_request_signs_the_last_message_parts_joined() -> None:
    messages = [
        {"role": "user", "parts": [{"text": "old"}]},
        {"role": "model", "parts": [{"text": "reply"}]},
        {"role": "user", "parts": [{"text": "Tell me "}, {"text": "a joke"}]},
    ]
    body = protocol.build_generate_request(messages, timestamp=5, secret_key="k", password="pw")
    assert body["sign"] == protocol.generate_signature(5, "Tell me a joke", "k")
    assert body["pass"] == "pw" and body["time"] == 5
    request = protocol.parse_generate_request(json.dumps(body).encode())
    assert protocol.verify_signature(request, "k")
    assert not protocol.verify_signature(request, "other")
    assert [m.role for m in request.history] == ["user", "model"]


def test_build_request_refuses_a_last_message_not_from_user() -> None:
    with pytest.raises(ProtocolError, match="last message must be from user"):
        protocol.build_generate_request(
            [{"role": "model", "parts": [{"text": "x"}]}], timestamp=1, secret_key="k"
        )


@pytest.mark.parametrize(
    ("body", "message", "field"),
    [
        (b"", "Empty request body", None),
        (b"{nope", "not valid JSON", None),
        (b"[1, 2]", "must be a JSON object", None),
        (b'{"time": 1, "sign": "x"}', protocol.INVALID_HISTORY, "messages"),
        (b'{"messages": [], "time": 1, "sign": "x"}', protocol.INVALID_HISTORY, "messages"),
        (
            b'{"messages": [{"role": "model", "parts": [{"text": "x"}]}], "time": 1, "sign": "x"}',
            protocol.INVALID_HISTORY,
            "messages",
        ),
        (b'{"messages": [{"role": "user"}], "time": 1, "sign": "x"}', "messages.0.parts", "messages.0.parts"),
        (
            b'{"messages": [{"role": "user", "parts": [{"text": "x"}]}], "time": "soon", "sign": "x"}',
            "'time'",
            "time",
        ),
        (b'{"messages": [{"role": "user", "parts": [{"text": "x"}]}], "time": 1}', "'sign'", "sign"),
    ],
)
def test_parse_request_names_the_problem(body: bytes, message: str, field: str | None) -> None:
    with pytest.raises(protocol.InvalidRequest) as info:
        protocol.parse_generate_request(body)
    assert message in str(info.value)
    assert info.value.field == field


def test_parse_request_reads_pass_alias() -> None:
    body = {"messages": [{"role": "user", "parts": [{"text": "x"}]}], "time": 1, "pass": "p", "sign": "s"}
    assert protocol.parse_generate_request(json.dumps(body).encode()).password == "p"


def test_password_matches_any_of_a_list() -> None:
    assert protocol.password_matches("b", ["a", "b"])
    assert not protocol.password_matches("c", ["a", "b"])
    assert not protocol.password_matches(None, ["a"])


def test_error_bodies_round_trip() -> None:
    body = protocol.error_body("boom", "Error").decode()
    assert json.loads(body) == {"error": {"message": "boom", "code": "Error"}}
    assert protocol.parse_error_body(body) == ("boom", "Error")
    assert protocol.parse_error_body("plain text failure") == ("plain text failure", None)
    assert protocol.parse_error_body("") == (None, None)


def test_signing_time_never_repeats_across_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    def take(_: int) -> list[int]:
        return [protocol.signing_time() for _ in range(500)]

    with ThreadPoolExecutor(4) as pool:
        values = [value for batch in pool.map(take, range(4)) for value in batch]
    assert len(set(values)) == len(values) == 2000


def test_signing_time_follows_a_clock_set_back(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [5_000_000.0]
    monkeypatch.setattr(protocol.time, "time", lambda: now[0])
    first = protocol.signing_time()
    assert protocol.signing_time() == first + 1  # the same millisecond: one step ahead
    now[0] -= 3600  # the clock is set back an hour
    assert protocol.signing_time() == int(now[0] * 1000)
