"""The images core: strict base64, the type from the bytes, the size, the lazy SHA-256."""

from __future__ import annotations

import base64
import hashlib

import pytest

from gprochat.errors import ImageError
from gprochat.images import Image, load_image, sniff_image_type

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
SAMPLES = {
    "image/png": PNG,
    "image/jpeg": b"\xff\xd8\xff\xe0" + bytes(100),
    "image/webp": b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(100),
    "image/gif": b"GIF89a" + bytes(100),
}


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize("mime", sorted(SAMPLES))
def test_each_raster_type_is_known_by_its_magic_numbers(mime: str) -> None:
    raw = SAMPLES[mime]
    image = Image.from_base64(b64(raw), mime)
    assert (image.mime_type, image.size) == (mime, len(raw))
    assert image.sha256 == hashlib.sha256(raw).hexdigest()
    assert image.data == b64(raw)  # kept as it came, not decoded and encoded again


@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 100, 1001])
def test_the_size_follows_from_the_length_and_padding(length: int) -> None:
    raw = PNG[:8] + bytes(length)
    assert Image.from_base64(b64(raw)).size == len(raw)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ("", "is empty"),
        ("iVBO", "not an image"),
        ("iVBORw0KGgo", "multiple of 4"),
        ("iVBO Rw0KGgo", "outside A-Z"),
        ("iVBORw0K\nGgo", "outside A-Z"),
        ("iVBORw0KGgo_", "outside A-Z"),
        ("iV=ORw0KGgo=", "outside A-Z"),
        ("iVBORw0KG===", "too much '=' padding"),
        ("iVBORw0KGgoé", "non-ASCII"),
        (b64(b'<svg xmlns="http://www.w3.org/2000/svg"/>'), "SVG"),
        (b64(b"just some text, renamed .png"), "is text"),
    ],
)
def test_what_is_not_strict_base64_of_a_raster_image_is_refused(data: str, says: str) -> None:
    with pytest.raises(ImageError, match=says) as caught:
        Image.from_base64(data, where="messages[0].parts[1]")
    assert caught.value.where == "messages[0].parts[1]"
    assert str(caught.value).startswith("messages[0].parts[1] ")
    assert caught.value.status == 400


def test_the_declared_type_must_be_the_real_one() -> None:
    with pytest.raises(ImageError, match="declared 'image/gif' but its bytes are image/png"):
        Image.from_base64(b64(PNG), "image/gif")
    assert Image.from_base64(b64(SAMPLES["image/jpeg"]), "image/jpg").mime_type == "image/jpeg"


def test_over_the_limit_is_413_naming_the_limit() -> None:
    with pytest.raises(ImageError, match="over the limit of 100 bytes") as caught:
        Image.from_base64(b64(PNG), max_bytes=100)
    assert caught.value.status == 413
    assert Image.from_base64(b64(PNG), max_bytes=len(PNG)).size == len(PNG)


def test_data_urls_bytes_and_paths_give_the_same_image(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "photo.png"
    path.write_bytes(PNG)
    images = [
        load_image(PNG),
        load_image(f"data:image/png;base64,{b64(PNG)}"),
        load_image(str(path)),
        load_image(path),
    ]
    assert all(image == images[0] for image in images)
    assert images[1].data_url == f"data:image/png;base64,{b64(PNG)}"
    with pytest.raises(ImageError, match="not base64"):
        Image.from_data_url("data:image/png,plain")
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "missing.png")


def test_sniffing_knows_only_raster_types() -> None:
    assert sniff_image_type(b"<svg") is None
    assert sniff_image_type(b"RIFF\x00\x00\x00\x00WAVE") is None
    assert sniff_image_type(b"") is None
