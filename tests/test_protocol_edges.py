"""The wire contract's edges: which password of a list matches, hostile signatures, exact
messages and error-body shapes, native history rules, Retry-After forms.

Written to make mutation testing (docs/mutation.md) bite: each test pins a behaviour
a plausible one-token change to ``protocol.py`` would break.
"""

from __future__ import annotations

import json

import pytest

from gprochat import protocol
from gprochat.errors import ProtocolError


def _request(text: str = "Hi", *, sign: str, time_ms: int = 5) -> protocol.GenerateRequest:
    return protocol.GenerateRequest.model_validate(
        {"messages": [{"role": "user", "parts": [{"text": text}]}], "time": time_ms, "sign": sign}
    )


# --- passwords -----------------------------------------------------------------------

@pytest.mark.parametrize("given", ["first", "second", "third"])
def test_any_entry_of_a_password_list_matches(given: str) -> None:
    assert protocol.password_matches(given, ("first", "second", "third"))


def test_no_entry_matches_a_wrong_prefix_or_suffix() -> None:
    passwords = ("first", "second")
    for given in ("firs", "first ", "secondfirst", "", None):
        assert not protocol.password_matches(given, passwords), given


def test_a_missing_password_is_the_empty_one() -> None:
    assert protocol.password_matches(None, ("",))
    assert not protocol.password_matches(None, ())


def test_passwords_compare_as_utf8() -> None:
    assert protocol.password_matches("pässwörd", ("pässwörd",))
    assert not protocol.password_matches("passwort", ("pässwörd",))


# --- signatures ----------------------------------------------------------------------

def test_signature_accepted_in_upper_case() -> None:
    sign = protocol.generate_signature(5, "Hi", "k")
    assert protocol.verify_signature(_request(sign=sign.upper()), "k")


def test_a_signature_with_a_lone_surrogate_is_simply_wrong() -> None:
    assert not protocol.verify_signature(_request(sign="\ud800" * 64), "k")


def test_a_signature_of_non_ascii_text_is_wrong_not_an_error() -> None:
    assert not protocol.verify_signature(_request(sign="é" * 64), "k")


def test_signature_of_a_text_with_several_parts_covers_them_joined() -> None:
    request = protocol.GenerateRequest.model_validate({
        "messages": [{"role": "user", "parts": [{"text": "a"}, {"text": "b"}]}],
        "time": 7, "sign": protocol.generate_signature(7, "ab", "k"),
    })
    assert protocol.verify_signature(request, "k")
    assert request.text == "ab"


# --- parsing requests -----------------------------------------------------------------

def _invalid(body: bytes) -> protocol.InvalidRequest:
    with pytest.raises(protocol.InvalidRequest) as caught:
        protocol.parse_generate_request(body)
    return caught.value


def test_empty_body_message() -> None:
    error = _invalid(b"  ")
    assert error.message == "Empty request body: send a JSON object with messages, time, pass and sign."
    assert error.field is None and str(error) == error.message


def test_not_utf8_message_names_the_reason() -> None:
    error = _invalid(b'{"messages": "\xff"}')
    assert error.message.startswith("Request body is not UTF-8: ") and "invalid start byte" in error.message


def test_not_json_message_names_the_position() -> None:
    error = _invalid(b'{"messages": [}')
    assert error.message.startswith("Request body is not valid JSON: ")
    assert "at position 14." in error.message


@pytest.mark.parametrize(
    ("body", "kind"), [(b"[]", "list"), (b'"x"', "str"), (b"3", "int"), (b"null", "NoneType")]
)
def test_not_an_object_names_what_it_is(body: bytes, kind: str) -> None:
    assert _invalid(body).message == f"Request body must be a JSON object, not {kind}."


def test_a_field_error_names_the_field() -> None:
    body = {"messages": [{"role": "user", "parts": [{"text": "x"}]}], "time": "soon", "sign": "x"}
    error = _invalid(json.dumps(body).encode())
    assert error.field == "time"
    assert error.message.startswith("Invalid field 'time': ")


def test_the_history_error_names_messages() -> None:
    for messages in ([], "x", [{"role": "model", "parts": []}], [1]):
        error = _invalid(json.dumps({"messages": messages, "time": 1, "sign": "x"}).encode())
        assert (error.message, error.field) == (protocol.INVALID_HISTORY, "messages")


def test_a_valid_request_keeps_pass_history_and_text() -> None:
    body = protocol.build_generate_request(
        [{"role": "user", "parts": [{"text": "a"}]}, {"role": "model", "parts": [{"text": "b"}]},
         {"role": "user", "parts": [{"text": "c"}]}],
        timestamp=9, secret_key="k", password="pw",
    )
    request = protocol.parse_generate_request(json.dumps(body).encode())
    assert (request.password, request.time, request.text) == ("pw", 9, "c")
    assert [m.text for m in request.history] == ["a", "b"]


# --- error bodies ----------------------------------------------------------------------

def test_error_body_is_utf8_not_escaped() -> None:
    assert protocol.error_body("déjà vu") == '{"error": {"message": "déjà vu"}}'.encode()


def test_error_body_with_code_and_extra() -> None:
    assert json.loads(protocol.error_body("m", "Error", type="t")) == {
        "error": {"message": "m", "code": "Error", "type": "t"}
    }
    assert json.loads(protocol.error_body("m")) == {"error": {"message": "m"}}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"error": {"message": "m", "code": "c"}}', ("m", "c")),
        ('{"error": {"message": 5}}', ("5", None)),
        ('{"error": {"code": "c"}}', (None, "c")),
        ('{"error": "plain"}', ("plain", None)),
        ('{"message": "top", "code": 7}', ("top", 7)),
        ('{"message": "top"}', ("top", None)),
        ('{"other": 1}', ('{"other": 1}', None)),
        ("[1]", ("[1]", None)),
        ("  not json  ", ("not json", None)),
        ("", (None, None)),
        ("   ", (None, None)),
    ],
)
def test_parse_error_body(text: str, expected: tuple[object, object]) -> None:
    assert protocol.parse_error_body(text) == expected


# --- native history ---------------------------------------------------------------------

def _native(messages: list[dict[str, object]], max_history: int | None = None) -> list[tuple[str, str]]:
    return [(m["role"], m["parts"][0]["text"]) for m in protocol.native_messages(messages, max_history)]


def test_native_roles_and_merging() -> None:
    messages = [
        {"role": "system", "content": "S1"},
        {"role": "user", "content": "u1"},
        {"role": "user", "content": "u2"},
        {"role": "assistant", "content": "a1"},
        {"role": "model", "content": "a2"},
        {"role": "system", "content": "S2"},
        {"role": "user", "content": "u3"},
    ]
    assert _native(messages) == [("user", "S1\n\nS2\n\nu1\n\nu2"), ("model", "a1\n\na2"), ("user", "u3")]


def test_native_max_history_keeps_the_last_turns_from_a_user_turn() -> None:
    messages = [{"role": ("user", "assistant")[i % 2], "content": str(i)} for i in range(7)]
    assert _native(messages, 2) == [("user", "4"), ("model", "5"), ("user", "6")]
    assert _native(messages, 3) == [("user", "4"), ("model", "5"), ("user", "6")]  # "3" is a model turn
    assert _native(messages, 4) == [
        ("user", "2"), ("model", "3"), ("user", "4"), ("model", "5"), ("user", "6")
    ]
    assert _native(messages, 0) == [("user", "6")]
    assert _native(messages, None) == [(("user", "model")[i % 2], str(i)) for i in range(7)]


def test_native_system_goes_to_the_first_remaining_user_turn() -> None:
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    assert _native(messages, 0) == [("user", "S\n\nc")]


def test_native_content_parts() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert _native([{"role": "user", "content": parts}]) == [("user", "ab")]


@pytest.mark.parametrize(
    ("messages", "max_history", "message"),
    [
        ([{"role": "user", "content": "x"}], -1, "max_history must be 0 or more, not -1"),
        ([{"role": "tool", "content": "x"}], None,
         "messages[0] has role 'tool': use 'system', 'user' or 'assistant'"),
        ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], None,
         "The conversation must end with a user message (the last one is 'model'): "
         "add the user's new message at the end"),
        ([{"role": "system", "content": "x"}], None, "(the last one is 'system')"),
        ([{"role": "assistant", "content": "x"}], None, "(the last one is 'model')"),
        ([], None, "(the last one is 'system')"),
        ([{"role": "user", "content": 5}], None, "messages[0] content must be a string, not int"),
        ([{"role": "user", "content": [{"type": "image_url"}]}], None,
         "messages[0].content[0] is an image_url part without a URL"),
        ([{"role": "user", "content": [{"type": "input_audio"}]}], None,
         "messages[0] has a 'input_audio' content part: GPROChat takes text and image_url parts only"),
        ([{"role": "system", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
          {"role": "user", "content": "x"}], None,
         "messages[0] is a system message with an image: attach images to a user message"),
        ([{"role": "user", "content": ["raw"]}], None, "messages[0] has a 'str' content part"),
        ([{"role": "user", "content": [{"type": "text", "text": 5}]}], None, "has a 'text' content part"),
    ],
)
def test_native_refusals(messages: list[dict[str, object]], max_history: int | None, message: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        protocol.native_messages(messages, max_history)
    assert message in str(caught.value)


# --- Retry-After -----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0), (" 2.5 ", 2.5), ("0", 0.0), ("-4", 0.0), ("", None), ("   ", None), (None, None),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 10.0),
        ("Wed, 21 Oct 2015 07:28:00", 10.0),  # no zone: HTTP dates are GMT
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past
        ("Wed, 21 Oct 2015 09:28:00 +0200", 10.0),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert protocol.parse_retry_after(value, now=1445412470.0) == expected


def test_a_date_without_a_zone_is_gmt_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert protocol.parse_retry_after("Wed, 21 Oct 2015 07:28:00", now=1445412470.0) == 10.0
    finally:
        monkeypatch.undo()
        time.tzset()


def test_parse_retry_after_uses_the_clock_by_default() -> None:
    import email.utils
    import time

    value = email.utils.formatdate(time.time() + 100, usegmt=True)
    seconds = protocol.parse_retry_after(value)
    assert seconds is not None and 90 <= seconds <= 100


# --- strict JSON ------------------------------------------------------------------------

def _json_error(body: bytes) -> str:
    with pytest.raises(protocol.InvalidRequest) as caught:
        protocol.parse_json(body)
    return caught.value.message


def test_integers_up_to_100_digits() -> None:
    assert protocol.parse_json(b"[" + b"9" * 100 + b"]") == [int("9" * 100)]
    assert protocol.parse_json(b"-" + b"9" * 100) == -int("9" * 100)
    assert _json_error(b"1" + b"0" * 100) == (
        "Request body has an integer of 101 digits; no field takes more than 100."
    )
    assert "integer of 102 digits" in _json_error(b"-1" + b"0" * 100)
    assert "integer of 5000 digits" in _json_error(b'{"time": ' + b"7" * 5000 + b"}")


def test_floats_must_be_finite() -> None:
    assert protocol.parse_json(b"[1.5, -2e3, 1e308]") == [1.5, -2000.0, 1e308]
    assert _json_error(b"1e400") == "Request body has the number 1e400, too large for any field."
    assert _json_error(b"-1e400") == "Request body has the number -1e400, too large for any field."
    assert "the number " + "1" * 40 + "," in _json_error(b"1" * 400 + b".5")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(constant: str) -> None:
    assert _json_error(f'{{"time": {constant}}}'.encode()) == (
        f"Request body has {constant}, which is not JSON: send numbers only."
    )


def test_deep_nesting_is_refused() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    assert _json_error(deep) == "Request body is nested too deeply to be a request."
    assert protocol.parse_json(b"[[[]]]") == [[[]]]


LONE = "Request body has a lone UTF-16 surrogate escape (such as \\ud800) in a string: " \
       "it is not a character; send valid Unicode."


@pytest.mark.parametrize(
    "body",
    [b'"\\ud800"', b'["a", "\\uDC00"]', b'{"k": {"deeper": ["\\udbff"]}}', b'{"\\ud800": 1}',
     b'{"a": 1, "b": "x\\uD83Dy"}'],
)
def test_lone_surrogates_anywhere_are_refused(body: bytes) -> None:
    assert _json_error(body) == LONE


def test_surrogate_pairs_and_other_escapes_are_fine() -> None:
    assert protocol.parse_json(b'{"t": "\\ud83d\\ude00", "u": "\\u00e9"}') == {"t": "\U0001f600", "u": "é"}
    assert protocol.parse_json(b'["\\ud83d\\ude00", 1, null, {"a": "\\uD83D\\uDE00"}]')[0] == "\U0001f600"
