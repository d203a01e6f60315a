"""A call's ``images=`` (g4f's convention) as checked images on the new user message.

g4f's providers take ``media=[(image, name), ...]`` (``MediaListType``; older ones
``images=``): each image is bytes, a file path, a data URL or a file object, with an
optional name. Both keywords are accepted, with or without the names, and a
``gprochat.images.Image`` too. Every image is checked here, before any request, so a
bad one raises ``ImageError`` naming it and nothing is sent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Optional

from ..errors import ConfigurationError, ImageError
from ..images import Image, load_image

__all__ = ["call_images", "attach_images", "encode_request"]


def call_images(kwargs: dict[str, Any]) -> list[Image]:
    """The images of a call's ``images=`` or ``media=``, checked, in order."""
    images, media = kwargs.get("images"), kwargs.get("media")
    if images is not None and media is not None:
        raise ConfigurationError("pass either images= or media= (the same thing), not both")
    given = images if images is not None else media
    keyword = "images" if images is not None else "media"
    if given is None:
        return []
    # As g4f: anything but a list is one image (or one (image, name) pair).
    items = given if isinstance(given, list) else [given]
    return [_load(item, f"{keyword}[{number}]") for number, item in enumerate(items)]


def _load(item: Any, where: str) -> Image:
    name: Optional[str] = None
    if isinstance(item, tuple):
        if len(item) != 2:
            raise ImageError(
                f"{where} is a tuple of {len(item)}: give an image, or (image, name)", where=where
            )
        item, name = item
        if name is not None:
            where = f"{where} ({name})"
    if isinstance(item, str) and item.startswith(("http://", "https://")):
        raise ImageError(
            f"{where} is a remote URL: the GPROChat provider sends only bytes, files and "
            "data URLs; download the image and pass its bytes or path",
            where=where,
        )
    read = getattr(item, "read", None)
    if callable(read) and not isinstance(item, (bytes, bytearray, memoryview, str)):
        item = read()  # a file object opened in binary mode
        if not isinstance(item, bytes):
            raise ImageError(f"{where} is a text file object: open it with 'rb'", where=where)
    return load_image(item, where=where)


def attach_images(wire: Sequence[dict[str, Any]], images: Sequence[Image]) -> list[dict[str, Any]]:
    """``wire`` with ``images`` as ``inline_data`` parts after the last message's parts."""
    if not images:
        return list(wire)
    last = wire[-1]
    parts = [part for part in last["parts"] if part != {"text": ""}]
    parts.extend(image.inline_part() for image in images)
    return [*wire[:-1], {**last, "parts": parts}]


_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_STUB = '"data": ""'


def encode_request(body: dict[str, Any], encoder: json.JSONEncoder) -> bytes:
    """``encoder.encode(body)`` as UTF-8, each image's base64 spliced in as it is.

    A JSON encoder scans every character of a string for what to escape; base64 has
    nothing to escape, and for a large image that scan is most of what a request costs
    (docs/images.md). Each image's ``data`` is encoded as ``""`` and put back in
    afterwards: ``"data": ""`` cannot occur inside a JSON string (its quotes would be
    escaped), so every occurrence is one of those stubs, in order.
    """
    spliced: list[bytes] = []
    messages = []
    for message in body["messages"]:
        parts = message.get("parts") or ()
        if any("inline_data" in part for part in parts):
            stubbed = []
            for part in parts:
                inline = part.get("inline_data")
                data = inline.get("data") if isinstance(inline, dict) else None
                encoded = _base64_bytes(data)
                if encoded is not None:
                    spliced.append(encoded)
                    part = {**part, "inline_data": {**inline, "data": ""}}
                stubbed.append(part)
            message = {**message, "parts": stubbed}
        messages.append(message)
    if not spliced:
        return encoder.encode(body).encode()
    pieces = encoder.encode({**body, "messages": messages}).split(_STUB)
    if len(pieces) != len(spliced) + 1:  # not the shape expected: no splicing
        return encoder.encode(body).encode()
    out = [pieces[0].encode()]
    for data, piece in zip(spliced, pieces[1:], strict=True):
        out += [b'"data": "', data, b'"', piece.encode()]
    return b"".join(out)


def _base64_bytes(data: Any) -> Optional[bytes]:
    """``data`` as ASCII bytes when it is base64 text (nothing to escape), else None."""
    if not isinstance(data, str) or not data.isascii():
        return None
    encoded = data.encode("ascii")
    return None if encoded.translate(None, _BASE64_ALPHABET) else encoded
