"""OpenAI image parts on ``/v1/chat/completions``: found, refused where they cannot be, checked.

A user message's content may hold, beside text parts, image parts::

    {"type": "image_url", "image_url": {"url": "data:image/png;base64,...", "detail": "auto"}}

``detail`` is accepted and ignored. The URL is a ``data:`` URL with base64 bytes, or,
when the server runs with ``--fetch-image-urls``, an ``http(s)`` URL it fetches
(``fetch.py`` says how, safely). Images are only accepted in user messages, as OpenAI
accepts them. The guard counts them (``--max-images``); each is checked as every image
is (``gprochat.images``: the data URL read by ``parse_data_url``, the type from the
bytes' magic numbers, ``--max-image-bytes``), and each ``ImageError`` becomes OpenAI's
400 or 413 whose ``param`` names the part (``messages[0].content[1]``), or its URL
(``messages[0].content[1].image_url.url``) when that is not a usable data URL.

Two steps, so that every cheap check runs before any network is used:
``split_images`` (the shape: roles, URLs) and ``check_images`` (the bytes).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from ...errors import ImageError
from ...images import Base64Run, Image, parse_data_url
from ..guard import RequestGuard
from ..refusals import Refusal
from .fetch import ImageFetcher, shown_url

__all__ = ["IMAGE_URL_PATH", "ImagePart", "check_images", "split_images"]

#: Where an image's data URL is in a request body (``int``: any list index).
IMAGE_URL_PATH: tuple[str | type[int], ...] = ("messages", int, "content", int, "image_url", "url")


@dataclass(frozen=True, eq=False)  # compared (and hashed) by identity, not by a URL of megabytes
class ImagePart:
    """One image part of a message: where it is, and its URL (data or remote)."""

    message: int
    part: int
    url: str

    @property
    def where(self) -> str:
        return f"messages[{self.message}].content[{self.part}]"

    @property
    def remote(self) -> bool:
        return self.url[:5].lower() != "data:"


def split_images(
    messages: Sequence[dict[str, Any]], *, fetching: bool
) -> tuple[list[dict[str, Any]], list[list[ImagePart]]]:
    """The messages without their image parts, and each message's image parts.

    Refuses (400, naming the part) an image outside a user message, an image part
    without a URL string, a URL that is neither ``data:`` nor ``http(s)``, a remote
    URL when ``fetching`` is off, and a part of any other type than text or image.
    """
    texts: list[dict[str, Any]] = []
    images: list[list[ImagePart]] = []
    for index, message in enumerate(messages):
        content = message.get("content")
        found: list[ImagePart] = []
        if isinstance(content, list):
            kept = []
            for number, part in enumerate(content):
                kind = part.get("type") if isinstance(part, Mapping) else None
                if kind == "image_url":
                    found.append(_image_part(message, index, number, part, fetching=fetching))
                elif kind == "text":
                    kept.append(part)
                else:
                    shown = repr(kind) if kind is not None else f"no 'type' ({type(part).__name__})"
                    raise Refusal(
                        400,
                        f"messages[{index}].content[{number}] has type {shown}: only text parts "
                        "({'type': 'text', 'text': ...}) and image parts ({'type': 'image_url', "
                        "'image_url': {'url': 'data:image/png;base64,...'}}) are accepted",
                        param=f"messages[{index}].content[{number}].type",
                    )
            message = {**message, "content": kept}
        texts.append(message)
        images.append(found)
    return texts, images


def _image_part(
    message: Mapping[str, Any], index: int, number: int, part: Mapping[str, Any], *, fetching: bool
) -> ImagePart:
    where = f"messages[{index}].content[{number}]"
    role = message.get("role")
    if role != "user":
        raise Refusal(
            400,
            f"{where} is an image, but messages[{index}] has role {role!r}: images are "
            "accepted in user messages only (as OpenAI accepts them); move it to a user message",
            param=where,
        )
    image_url = part.get("image_url")
    if not isinstance(image_url, Mapping):
        raise Refusal(
            400,
            f"{where}.image_url must be an object {{'url': 'data:image/png;base64,...'}}, "
            f"not {_kind(image_url)}",
            param=f"{where}.image_url",
        )
    url = image_url.get("url")
    if not isinstance(url, str) or not url:
        shown = "missing" if url is None else ("empty" if url == "" else _kind(url))
        raise Refusal(
            400,
            f"{where}.image_url.url is {shown}: give the image as a data URL "
            "('data:image/png;base64,...')",
            param=f"{where}.image_url.url",
        )
    head, colon, _ = url[:16].partition(":")  # not the whole URL: it may be megabytes
    scheme = head.lower() if colon else ""
    if scheme in ("http", "https"):
        if not fetching:
            raise Refusal(
                400,
                f"{where}.image_url.url is a remote URL ({shown_url(url)}), and this server does "
                "not fetch image URLs (a server that fetches what its clients name can be made "
                "to reach private addresses). Send the image as a data URL "
                "('data:image/png;base64,...'), or start the server with --fetch-image-urls",
                param=f"{where}.image_url.url",
            )
    elif scheme != "data":
        raise Refusal(
            400,
            f"{where}.image_url.url must be a data URL ('data:image/png;base64,...')"
            f"{' or an http(s) URL' if fetching else ''}, not "
            f"{(scheme + ':') if scheme else repr(url[:40])}",
            param=f"{where}.image_url.url",
        )
    return ImagePart(index, number, url)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


async def check_images(
    parts: Sequence[Sequence[ImagePart]],
    guard: RequestGuard,
    fetcher: Optional[ImageFetcher],
    kept: Optional[Mapping[str, Base64Run]] = None,
) -> list[tuple[Image, ...]]:
    """Each message's images, checked; remote ones fetched (concurrently).

    The count first (nothing decoded, nothing fetched beyond ``--max-images``), then the
    data URLs (checked where they are in the request: the ``Image`` keeps the URL, or
    the body's bytes for a URL that is a placeholder of ``kept``, and where its base64
    starts; nothing is copied out of it), then the fetches.
    """
    kept = kept or {}
    guard.check_image_count(sum(len(found) for found in parts), param="messages")
    limit = guard.max_image_bytes or None
    checked: dict[ImagePart, Image] = {}
    for found in parts:
        for part in found:
            if not part.remote:
                with _refused():
                    declared, start = parse_data_url(part.url, where=f"{part.where}.image_url.url")
                    checked[part] = Image.from_base64(
                        kept.get(part.url, part.url), declared, start=start, where=part.where,
                        max_bytes=limit,
                    )
    remote = [part for found in parts for part in found if part.remote]
    if remote:
        assert fetcher is not None  # split_images refused remote URLs otherwise
        for part, raw in zip(remote, await _fetch_all(remote, fetcher), strict=True):
            with _refused():
                checked[part] = Image.from_base64(
                    base64.b64encode(raw).decode("ascii"), where=part.where, max_bytes=limit
                )
    return [tuple(checked[part] for part in found) for found in parts]


@contextlib.contextmanager
def _refused() -> Iterator[None]:
    """An ``ImageError`` as OpenAI's 400 (413 for a size) whose ``param`` is what it names."""
    try:
        yield
    except ImageError as exc:
        limit = " (--max-image-bytes)" if exc.status == 413 else ""
        raise Refusal(exc.status, exc.message + limit, param=exc.where) from None


async def _fetch_all(parts: Sequence[ImagePart], fetcher: ImageFetcher) -> list[bytes]:
    tasks = [asyncio.ensure_future(_fetch(part, fetcher)) for part in parts]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()  # the others, when one failed: no fetch outlives the request


async def _fetch(part: ImagePart, fetcher: ImageFetcher) -> bytes:
    try:
        return await fetcher.fetch(part.url, where=part.where)
    except ImageError as exc:
        raise Refusal(exc.status, exc.message, param=part.where) from None
