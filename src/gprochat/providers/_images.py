"""A call's ``images=`` (g4f's convention) as checked images on the new user message.

g4f's providers take ``media=[(image, name), ...]`` (``MediaListType``; older ones
``images=``): each image is bytes, a file path, a data URL or a file object, with an
optional name. Both keywords are accepted, with or without the names, and a
``gprochat.images.Image`` too. Every image is checked here, before any request, so a
bad one raises ``ImageError`` naming it and nothing is sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

from ..errors import ConfigurationError, ImageError
from ..images import Image, load_image

__all__ = ["call_images", "attach_images"]


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
