"""The images core: strict base64, the type from the bytes, the size, the lazy SHA-256."""

from __future__ import annotations

import base64
import hashlib

import pytest

from gprochat.errors import ImageError
from gprochat.images import Base64Run, Image, base64_run, load_image, parse_data_url, sniff_image_type

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
    with pytest.raises(ImageError, match="a data URL without ';base64'"):
        Image.from_data_url("data:image/png,plain")
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "missing.png")


def test_sniffing_knows_only_raster_types() -> None:
    assert sniff_image_type(b"<svg") is None
    assert sniff_image_type(b"RIFF\x00\x00\x00\x00WAVE") is None
    assert sniff_image_type(b"") is None


@pytest.mark.parametrize(
    ("url", "declared"),
    [
        ("data:image/png;base64,", "image/png"),
        ("data:;base64,", None),
        ("data:image/png;name=a.png;base64,", "image/png"),
        ("DATA:Image/PNG;BASE64,", "Image/PNG"),
        ("data: image/png ; base64 ,", "image/png"),
    ],
)
def test_a_data_url_is_read_where_it_is(url: str, declared: str | None) -> None:
    assert parse_data_url(url + b64(PNG)) == (declared, len(url))
    image = Image.from_data_url(url + b64(PNG))
    assert (image.mime_type, image.size, image.data) == ("image/png", len(PNG), b64(PNG))
    assert load_image(url + b64(PNG)) == image


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("image/png;base64,iVBO", "is not a data URL: give the image as 'data:image/png;base64,...'"),
        ("https://example.com/a.png", "is not a data URL"),
        ("data:image/png;base64", "is not a valid data URL (no ',' after its type): use "
                                  "'data:image/png;base64,...'"),
        ("data:image/png,plain", "is a data URL without ';base64': send the image's bytes as "
                                 "base64 ('data:image/png;base64,...')"),
        ("data:image/png;base64;x=1,iVBO", "without ';base64'"),
    ],
)
def test_what_is_not_a_base64_data_url_is_refused_in_one_wording(url: str, says: str) -> None:
    for check in (parse_data_url, Image.from_data_url):
        with pytest.raises(ImageError) as caught:
            check(url, where="messages[0].content[1]")
        assert caught.value.message.startswith("messages[0].content[1] ")
        assert says in caught.value.message
        assert caught.value.where == "messages[0].content[1]"
        assert caught.value.status == 400


def test_base64_after_start_is_checked_in_place_and_sliced_out_once() -> None:
    text = "prefix!" + b64(PNG)  # '!' is no base64: only what follows start is checked
    image = Image.from_base64(text, "image/png", start=7)
    assert (image.data, image.size) == (b64(PNG), len(PNG))
    with pytest.raises(ImageError, match="outside A-Z"):
        Image.from_base64(text[:7] + "!" + text[8:], start=7)
    with pytest.raises(ImageError, match="is empty"):
        Image.from_base64(text, start=len(text))


def test_base64_longer_than_a_scan_slice_is_checked_to_its_end() -> None:
    raw = PNG + bytes(100_000)
    good = b64(raw)
    assert Image.from_base64(good).size == len(raw)
    for at in (40_000, 32 * 1024, len(good) - 5):  # a stray character in a later slice
        with pytest.raises(ImageError, match="outside A-Z"):
            Image.from_base64(good[:at] + "-" + good[at + 1 :])
    with pytest.raises(ImageError, match="non-ASCII"):
        Image.from_base64(good[:70_000] + "é" + good[70_001:])


def test_the_size_is_checked_once_exactly_before_the_scan() -> None:
    raw = PNG[:8] + bytes(8)  # 16 bytes: 24 characters ending '=='
    assert Image.from_base64(b64(raw), max_bytes=16).size == 16
    with pytest.raises(ImageError, match=r"is 16 bytes, over the limit of 15 bytes") as caught:
        Image.from_base64(b64(raw), max_bytes=15)
    assert caught.value.status == 413
    # Over the limit is said before the text is scanned: a huge text is not read through.
    with pytest.raises(ImageError, match="is 3000 bytes, over the limit of 100 bytes"):
        Image.from_base64("!!!!" * 1000, max_bytes=100)


def test_an_image_from_a_data_url_keeps_the_url_and_copies_nothing_until_asked() -> None:
    url = "data:image/png;base64," + b64(PNG)
    image = Image.from_data_url(url)
    text, start, end = image.data_span
    assert text is url and start == len("data:image/png;base64,") and end == len(url)
    assert image.data_url is url  # already in the canonical form: the URL itself
    assert image.data == b64(PNG) and image.decode() == PNG
    other = Image.from_data_url("data:image/png;name=x;base64," + b64(PNG))
    assert other.data_url == url and other == image and hash(other) == hash(image)


# Other formats a user may attach, as their first bytes are: each refusal names the format.
OTHER_FORMATS = [
    ("BMP", b"BM" + (1078).to_bytes(4, "little") + bytes(4) + (54).to_bytes(4, "little")
     + (40).to_bytes(4, "little") + bytes(60), "a BMP image"),
    ("TIFF little-endian", b"II*\x00\x08\x00\x00\x00" + bytes(60), "a TIFF image"),
    ("TIFF big-endian", b"MM\x00*\x00\x00\x00\x08" + bytes(60), "a TIFF image"),
    ("ICO", b"\x00\x00\x01\x00\x01\x00\x10\x10" + bytes(60), "an ICO icon"),
    ("AVIF", b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + bytes(60), "an AVIF image"),
    ("HEIC", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(60), "a HEIC image"),
    ("HEIF", b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic" + bytes(60), "a HEIF image"),
    ("WAVE", b"RIFF\x24\x08\x00\x00WAVEfmt \x10\x00\x00\x00" + bytes(60), "a WAVE audio file"),
    ("PDF", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj" + bytes(60), "a PDF document"),
    ("ZIP", b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(60),
     "a ZIP archive (or a document in one: DOCX, ODT, EPUB)"),
]


@pytest.mark.parametrize(("raw", "name"), [(raw, name) for _, raw, name in OTHER_FORMATS],
                         ids=[label for label, _, _ in OTHER_FORMATS])
def test_other_formats_are_named_by_their_magic_numbers(raw: bytes, name: str) -> None:
    expected = f"messages[0].parts[1] is {name}: send PNG, JPEG, WebP or GIF"
    with pytest.raises(ImageError) as caught:
        Image.from_base64(b64(raw), "image/png", where="messages[0].parts[1]")
    assert str(caught.value).startswith(expected), str(caught.value)
    assert caught.value.status == 400
    with pytest.raises(ImageError) as caught:
        Image.from_bytes(raw, where="attachment photo.png")
    assert str(caught.value).startswith(f"attachment photo.png is {name}: send"), str(caught.value)
    assert sniff_image_type(raw) is None


SVG_TEXT = '<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>'


@pytest.mark.parametrize(
    "raw",
    [
        b"\xef\xbb\xbf" + SVG_TEXT.encode(),
        SVG_TEXT.encode("utf-16"),  # with its BOM
        ('<?xml version="1.0" encoding="UTF-16"?>' + SVG_TEXT).encode("utf-16-le"),
        SVG_TEXT.encode("utf-16-be"),
    ],
    ids=["UTF-8 BOM", "UTF-16 BOM", "UTF-16LE", "UTF-16BE"],
)
def test_svg_in_any_unicode_encoding_is_named_svg(raw: bytes) -> None:
    with pytest.raises(ImageError) as caught:
        Image.from_base64(b64(raw), where="messages[0].parts[1]")
    assert str(caught.value).startswith(
        "messages[0].parts[1] is SVG or other markup, not an image this server takes: "
        "send PNG, JPEG, WebP or GIF"
    ), str(caught.value)


@pytest.mark.parametrize(
    ("raw", "what"),
    [
        (b"just text\x00with a NUL" + bytes(40), ""),
        (b"\x00\x01\x02\x03" + bytes(60), ""),
        (b"BMW is a car maker; this file is text, renamed .png", "text"),
        # A character cut by the end of the bytes read is still text.
        (("a" * 511 + "\u00e9" * 300).encode(), "text"),
    ],
    ids=["NUL in text", "zeros", "text starting BM", "UTF-8 cut at the head's end"],
)
def test_nul_bytes_are_binary_and_text_is_text(raw: bytes, what: str) -> None:
    with pytest.raises(ImageError) as caught:
        Image.from_base64(b64(raw), where="messages[0].parts[1]")
    expected = (
        f"messages[0].parts[1] is {what}, not an image this server takes: send PNG, JPEG, WebP or GIF"
        if what else "messages[0].parts[1] is not an image this server takes: its bytes are not a "
        "PNG, JPEG, WebP or GIF image, nor another format it knows; send PNG, JPEG, WebP or GIF"
    )
    assert str(caught.value) == expected


# -- base64_run: a string of a request body's bytes, checked where it is -----------------

LONG = b64(PNG + bytes(100_000))  # longer than a scan slice (32 KiB)


def run_of(text: str) -> Base64Run | None:
    body = b'{"data": "' + text.encode() + b'"}'
    return base64_run(body, 10, len(body) - 2)


def test_a_run_of_bare_base64_is_taken_where_it_is() -> None:
    run = run_of(LONG)
    assert run is not None and (run.data_start, run.prefix) == (run.start, "")
    assert run.text() == LONG
    image = Image.from_base64(run, "image/png")
    assert (image.mime_type, image.size, image.data) == ("image/png", len(PNG) + 100_000, LONG)
    assert image.data_span == (run.buffer, run.start, run.end)  # the body's bytes, not a copy
    assert image.decode() == PNG + bytes(100_000) and image == Image.from_base64(LONG)


def test_a_run_of_a_data_url_knows_its_prefix() -> None:
    url = "DATA:image/png;name=x.png;base64," + LONG
    run = run_of(url)
    assert run is not None and run.prefix == url[: url.index(",") + 1] and run.text() == url
    image = Image.from_base64(run, "image/png")
    assert image.data == LONG and image.data_url == "data:image/png;base64," + LONG


@pytest.mark.parametrize(
    "text",
    [
        LONG[:40_000] + "=" + LONG[40_001:],  # padding in the middle
        LONG[:-4] + "A===",  # three '=' at the end
        "=" + LONG[1:],
        LONG[:50_000] + " " + LONG[50_001:],  # whitespace, in a later slice
        LONG[:50_000] + "\n" + LONG[50_001:],
        LONG[:70_000] + "-" + LONG[70_001:],  # the URL-safe alphabet
        LONG[:70_000] + "_" + LONG[70_001:],
        LONG[:70_000] + "é" + LONG[70_001:],  # non-ASCII
        LONG[:-1] + "!",
        "data:image/png;base64",  # a data URL without its ',' (none within 256 characters)
        "data:image/png;" + "x" * 300 + ";base64," + LONG,
        "data:image/pngé;base64," + LONG,  # a prefix that is not ASCII
        "data:image/png;base64," + LONG[:1000] + "." + LONG[1001:],
        "data:image/png;base64,",
        "AA=",
    ],
    ids=["= inside", "===", "= first", "space", "newline", "-", "_", "non-ASCII", "!",
         "no comma", "long prefix", "non-ASCII prefix", "url with '.'", "empty url", "short"],
)
def test_what_is_not_a_clean_run_stays_text_and_is_refused_as_ever(text: str) -> None:
    assert run_of(text) is None
    if not text.lower().startswith("data:"):
        with pytest.raises(ImageError, match=r"not valid base64|too much '='|multiple of 4"):
            Image.from_base64(text)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (LONG[:-2] + "AAA", "its length (.*) is not a multiple of 4"),
        (LONG[:-2] + "=", "multiple of 4"),
        (b64(b"\x00" * 60_000), "is not an image this server takes"),
        (b64(b'<svg xmlns="http://www.w3.org/2000/svg">' + b" " * 60_000 + b"</svg>"), "SVG"),
        (b64(b"%PDF-1.7" + bytes(60_000)), "a PDF document"),
    ],
)
def test_a_run_is_refused_for_what_a_string_is_refused_for(text: str, says: str) -> None:
    run = run_of(text)
    assert run is not None
    with pytest.raises(ImageError, match=says) as from_run:
        Image.from_base64(run, where="messages[0].parts[1]")
    with pytest.raises(ImageError) as from_text:
        Image.from_base64(text, where="messages[0].parts[1]")
    assert str(from_run.value) == str(from_text.value)


def test_a_run_over_the_limit_and_of_another_type_is_refused_in_the_same_words() -> None:
    run = run_of(LONG)
    assert run is not None
    for call in ({"max_bytes": 1000}, {"declared_type": "image/jpeg"}):
        with pytest.raises(ImageError) as from_run:
            Image.from_base64(run, **call)
        with pytest.raises(ImageError) as from_text:
            Image.from_base64(LONG, **call)
        assert (str(from_run.value), from_run.value.status) == (str(from_text.value), from_text.value.status)
