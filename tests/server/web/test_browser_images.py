"""Images on the chat page, in a real Chromium against a real server (echo backend).

The echo backend answers with one line per image it received (type, size, SHA-256),
so a test proves the bytes the page sent arrived intact by their hash.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import zlib
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest

from gprochat.errors import ImageError
from gprochat.images import Image
from gprochat.server import BackgroundServer, ServerConfig, create_app

from .test_browser import reload, sent_bodies, wait_answers

Message = MutableMapping[str, Any]
ASGI = Callable[[Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
                Awaitable[None]]

SVG = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><circle r="4"/></svg>'
NOT_A_PNG = b"just some notes, saved with the wrong name\n"
GIF = base64.b64decode("R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==")


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A real PNG of one colour (Chromium draws it, so a thumbnail has a size)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes(rgb) * width
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b""))


def described(index: int, mime_type: str, data: bytes) -> str:
    """The echo backend's line for an image."""
    return f"[image {index}: {mime_type}, {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}]"


def files(*named: tuple[str, str, bytes]) -> list[dict[str, Any]]:
    return [{"name": name, "mimeType": mime, "buffer": data} for name, mime, data in named]


def choose(page: Any, *named: tuple[str, str, bytes]) -> None:
    """Attach through the image button's file chooser, as a person would."""
    with page.expect_file_chooser() as chooser:
        page.click("#attach")
    assert chooser.value.is_multiple()
    chooser.value.set_files(files(*named))


# A DataTransfer holding one file, made in the page (what a paste or a drop carries).
_TRANSFER = """([name, type, b64]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, { type }));
  return transfer;
}"""


def paste(page: Any, name: str, mime: str, data: bytes) -> None:
    page.evaluate(
        f"(args) => {{ const transfer = ({_TRANSFER})(args);"
        " document.getElementById('prompt').dispatchEvent("
        " new ClipboardEvent('paste', { clipboardData: transfer, bubbles: true, cancelable: true })); }",
        [name, mime, base64.b64encode(data).decode()],
    )


def drop(page: Any, name: str, mime: str, data: bytes) -> None:
    page.evaluate(
        f"(args) => {{ const transfer = ({_TRANSFER})(args);"
        " const box = document.querySelector('.composer-box');"
        " const init = { dataTransfer: transfer, bubbles: true, cancelable: true };"
        " box.dispatchEvent(new DragEvent('dragover', init));"
        " box.dispatchEvent(new DragEvent('drop', init)); }",
        [name, mime, base64.b64encode(data).decode()],
    )


def wait_thumbnails(page: Any, count: int) -> None:
    page.wait_for_function("n => document.querySelectorAll('#attachments .attachment').length === n",
                           arg=count)


def stored_images(page: Any) -> list[list[dict[str, Any]]]:
    """Each user message's images as the page keeps them in IndexedDB (read back from it)."""
    images: list[list[dict[str, Any]]] = page.evaluate("""() => new Promise((resolve, reject) => {
      const opening = indexedDB.open("gprochat");
      opening.onerror = () => reject(opening.error);
      opening.onsuccess = () => {
        const all = opening.result.transaction("conversations").objectStore("conversations").getAll();
        all.onsuccess = () => resolve(all.result.flatMap((c) => c.messages)
          .filter((m) => m.role === "user").map((m) => m.images || []));
      };
    })""")
    return images


def loads(page: Any, url: str) -> bool:
    """Whether an image still loads from ``url`` (a revoked blob: URL does not)."""
    loaded: bool = page.evaluate("""url => new Promise((resolve) => {
      const img = new Image(); img.onload = () => resolve(true); img.onerror = () => resolve(false);
      img.src = url; })""", url)
    return loaded


class CountedApp:
    """Our app, with a count of the requests that reached /api/generate."""

    def __init__(self, app: ASGI) -> None:
        self.app = app
        self.generate = 0

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/api/generate":
            self.generate += 1
        await self.app(scope, receive, send)


class Served:
    def __init__(self, server: BackgroundServer, counted: CountedApp) -> None:
        self.server = server
        self.counted = counted
        self.base_url = server.base_url


@pytest.fixture
def counted_server() -> Iterator[Callable[..., Served]]:
    """``counted_server(**settings)`` -> our server (echo backend), counting /api/generate."""
    servers: list[BackgroundServer] = []

    def start(**settings: Any) -> Served:
        counted = CountedApp(create_app(ServerConfig(**settings)))
        server = BackgroundServer(app=counted).start()
        servers.append(server)
        return Served(server, counted)

    yield start
    for server in servers:
        server.stop()


RED = png(40, 30, (220, 40, 40))
BLUE = png(24, 24, (40, 80, 220))


def test_attach_by_chooser_and_paste_send_and_keep_them_across_a_reload(
    counted_server: Callable[..., Served], page_of: Any
) -> None:
    server = counted_server()
    page = page_of(server.base_url)
    bodies = sent_bodies(page)
    choose(page, ("red.png", "image/png", RED))
    paste(page, "image.png", "image/png", BLUE)
    wait_thumbnails(page, 2)
    tray = page.locator("#attachments .attachment")
    assert tray.nth(0).locator("img").get_attribute("alt") == "red.png"
    removes = page.locator("#attachments button.remove")
    assert removes.nth(1).get_attribute("aria-label") == "Remove image 2: image.png"
    # The thumbnails are drawn (decoded by Chromium from blob: URLs the CSP allows).
    page.wait_for_function("() => [...document.querySelectorAll('#attachments img')]"
                           ".every((img) => img.complete && img.naturalWidth > 0)")
    thumbnail_url = tray.nth(0).locator("img").get_attribute("src")
    assert thumbnail_url.startswith("blob:")
    page.fill("#prompt", "What colours are these?")
    page.press("#prompt", "Enter")
    [answer] = wait_answers(page, 1)
    assert described(1, "image/png", RED) in answer
    assert described(2, "image/png", BLUE) in answer
    # Gemini's inline_data parts after the text part, base64 of the very bytes.
    [body] = bodies
    assert body["messages"][0]["parts"] == [
        {"text": "What colours are these?"},
        {"inline_data": {"mime_type": "image/png", "data": base64.b64encode(RED).decode()}},
        {"inline_data": {"mime_type": "image/png", "data": base64.b64encode(BLUE).decode()}},
    ]
    assert page.locator("#attachments .attachment").count() == 0
    # The tray's blob: URL was revoked once the thumbnail was gone.
    assert not loads(page, thumbnail_url)

    reload(page)
    shown = page.locator(".message.user .message-images img")
    assert shown.count() == 2
    page.wait_for_function("() => [...document.querySelectorAll('.message-images img')]"
                           ".every((img) => img.complete && img.naturalWidth > 0)")
    widths = page.evaluate("[...document.querySelectorAll('.message-images img')].map((i) => i.naturalWidth)")
    assert widths == [40, 24]
    [images] = stored_images(page)
    assert [base64.b64decode(image["data"]) for image in images] == [RED, BLUE]
    assert [(image["type"], image["size"], image["name"]) for image in images] == [
        ("image/png", len(RED), "red.png"), ("image/png", len(BLUE), "image.png")]

    # Retry, after the reload, sends the same images again.
    page.click(".message.assistant .retry")
    [answer] = wait_answers(page, 1)
    assert described(2, "image/png", BLUE) in answer
    assert bodies[1]["messages"] == bodies[0]["messages"]
    # A later turn carries the earlier images in its history; its own message has none.
    page.fill("#prompt", "And now?")
    page.press("#prompt", "Enter")
    answers = wait_answers(page, 2)
    assert "[image" not in answers[1]
    history = bodies[2]["messages"]
    assert [part.get("inline_data", {}).get("data") for part in history[0]["parts"][1:]] == [
        base64.b64encode(RED).decode(), base64.b64encode(BLUE).decode()]
    assert history[-1]["parts"] == [{"text": "And now?"}]
    assert server.counted.generate == 3
    assert page.errors == []


def test_a_dropped_gif_is_attached_and_a_thumbnail_can_be_removed_by_keyboard(
    counted_server: Callable[..., Served], page_of: Any
) -> None:
    server = counted_server()
    page = page_of(server.base_url)
    bodies = sent_bodies(page)
    drop(page, "dot.gif", "image/gif", GIF)
    choose(page, ("red.png", "image/png", RED))
    wait_thumbnails(page, 2)
    remove = page.locator("#attachments button.remove").nth(1)
    assert remove.get_attribute("aria-label") == "Remove image 2: red.png"
    remove.focus()
    page.keyboard.press("Enter")
    wait_thumbnails(page, 1)
    # Focus stays in the tray (on the remaining image's button), not lost to the page.
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Remove image 1: dot.gif"
    # An image alone, with no text, is a message too.
    page.click("#send")
    [answer] = wait_answers(page, 1)
    assert described(1, "image/gif", GIF) in answer
    assert bodies[0]["messages"][0]["parts"][0] == {"text": ""}
    assert page.locator("#chat-title").inner_text() == "Image: dot.gif"
    assert server.counted.generate == 1
    assert page.errors == []


def test_refused_files_are_explained_and_nothing_is_sent(
    counted_server: Callable[..., Served], page_of: Any
) -> None:
    server = counted_server(max_images=2, max_image_bytes=4000)
    page = page_of(server.base_url)
    error = page.locator("#attach-error")
    choose(page, ("drawing.svg", "image/svg+xml", SVG), ("notes.png", "image/png", NOT_A_PNG),
           ("empty.png", "image/png", b""))
    error.wait_for()
    text = error.inner_text()
    assert "“drawing.svg” is an SVG drawing" in text
    assert "“notes.png” is text, not an image this server takes" in text
    assert "“empty.png” is empty" in text
    assert "PNG, JPEG, WebP or GIF" in text
    assert error.get_attribute("role") == "alert"
    assert page.locator("#attachments .attachment").count() == 0
    # Sending with nothing attached and nothing typed sends nothing.
    page.click("#send")
    page.keyboard.press("Enter")
    # Over the per-image limit (4000 bytes here), and a third image over max_images (2).
    big = png(200, 200, (1, 2, 3)) + bytes(5000)
    choose(page, ("big.png", "image/png", big))
    page.wait_for_function("() => document.getElementById('attach-error').textContent.includes('big.png')")
    assert "this server takes images up to 3.9 KiB" in error.inner_text()
    choose(page, ("a.png", "image/png", RED), ("b.png", "image/png", BLUE), ("c.gif", "image/gif", GIF))
    wait_thumbnails(page, 2)
    assert "“c.gif” was not attached: this server takes at most 2 images per message" in error.inner_text()
    page.wait_for_timeout(300)  # had anything been sent, it would have reached the server by now
    assert server.counted.generate == 0
    assert page.locator(".message").count() == 0
    assert page.errors == []


def test_a_refused_file_is_named_by_its_bytes_as_the_server_names_it(
    counted_server: Callable[..., Served], page_of: Any
) -> None:
    server = counted_server()
    page = page_of(server.base_url)
    error = page.locator("#attach-error")
    bmp = b"BM" + (70).to_bytes(4, "little") + bytes(4) + (54).to_bytes(4, "little") + bytes(56)
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(40)
    svg16 = '<svg xmlns="http://www.w3.org/2000/svg"/>'.encode("utf-16")
    noise = bytes([0x00, 0x9c, 0x13, 0xfe]) * 16
    # Every one claims to be a PNG by its name and type: the bytes decide.
    pdf = b"%PDF-1.7\n" + bytes(40)
    choose(page, ("scan.png", "image/png", bmp), ("IMG_0001.png", "image/png", heic),
           ("paper.png", "image/png", pdf),
           ("drawing.png", "image/png", svg16), ("noise.png", "image/png", noise))
    page.wait_for_function("() => document.getElementById('attach-error').textContent.includes('noise.png')")
    text = error.inner_text()
    assert "“scan.png” is a BMP image: attach a PNG, JPEG, WebP or GIF image (convert it)." in text
    assert "“IMG_0001.png” is a HEIC image: attach" in text
    assert "“paper.png” is a PDF document: attach" in text
    assert "“drawing.png” is an SVG drawing (SVG can carry scripts), not an image" in text
    assert "“noise.png” is not an image this server takes: its bytes are not" in text
    assert page.locator("#attachments .attachment").count() == 0
    # The server names each the same way, so the page and a refusal from /api/generate agree.
    for data, named in ((bmp, "a BMP image"), (heic, "a HEIC image"), (pdf, "a PDF document")):
        with pytest.raises(ImageError, match=named):
            Image.from_bytes(data)
    assert server.counted.generate == 0
    assert page.errors == []


def test_a_server_refusal_of_an_image_is_shown_like_any_refusal(
    counted_server: Callable[..., Served], page_of: Any
) -> None:
    server = counted_server()
    page = page_of(server.base_url)
    # A conversation stored by an older page, holding an SVG that claimed to be a PNG:
    # the page sends what it stored, the server refuses it with a message naming the part.
    page.evaluate("""svg => new Promise((resolve, reject) => {
      const opening = indexedDB.open("gprochat");
      opening.onsuccess = () => {
        const tx = opening.result.transaction("conversations", "readwrite");
        tx.objectStore("conversations").put({ id: "old", title: "", system: "", updated: Date.now(),
          messages: [{ id: "m1", role: "user", content: "look", images: [{ type: "image/png", data: svg,
          size: 10, name: "old.png" }] }, { id: "m2", role: "assistant", content: "nice" }] });
        tx.oncomplete = resolve; tx.onerror = () => reject(tx.error);
      };
    })""", base64.b64encode(SVG).decode())
    page.evaluate("sessionStorage.setItem('gprochat:current', 'old')")
    reload(page)
    page.fill("#prompt", "and this?")
    page.press("#prompt", "Enter")
    card = page.locator(".error-card")
    card.wait_for()
    assert "messages[0].parts[1] is SVG or other markup" in card.inner_text()
    assert server.counted.generate == 1
    assert page.errors == []


def test_enlarge_an_image_in_an_accessible_dialog_and_export_it(
    counted_server: Callable[..., Served], page_of: Any, tmp_path: Path
) -> None:
    server = counted_server()
    page = page_of(server.base_url, accept_downloads=True)
    choose(page, ("red.png", "image/png", RED))
    wait_thumbnails(page, 1)
    page.fill("#prompt", "Keep this")
    page.press("#prompt", "Enter")
    wait_answers(page, 1)
    thumb = page.locator(".message-images button.image-thumb")
    assert thumb.get_attribute("aria-label") == "Image 1: red.png (enlarge)"
    thumb.focus()
    page.keyboard.press("Enter")
    dialog = page.locator("#image-dialog")
    dialog.wait_for(state="visible")
    assert page.locator("#image-dialog-title").inner_text() == "Image 1: red.png"
    assert page.locator("#image-dialog-picture").get_attribute("alt") == "red.png"
    page.wait_for_function("() => document.getElementById('image-dialog-picture').naturalWidth === 40")
    assert page.evaluate("document.activeElement.closest('dialog')?.id") == "image-dialog"
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")
    # Back where the person was; Escape closed the dialog and nothing else.
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Image 1: red.png (enlarge)"
    assert page.locator(".message").count() == 2

    page.click("#more")
    with page.expect_download() as download:
        page.click("#export-json")
    exported = json.loads(Path(download.value.path()).read_text())
    content = exported["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "Keep this"}
    assert content[1]["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(RED).decode()
    page.click("#more")
    with page.expect_download() as download:
        page.click("#export-md")
    markdown = Path(download.value.path()).read_text()
    assert "*(image 1: red.png, image/png," in markdown
    # Another conversation drawn: the picture's blob: URL is revoked; back: a new one.
    shown = thumb.locator("img").get_attribute("src")
    assert loads(page, shown)
    page.click("#new-chat")
    page.fill("#prompt", "something else")
    page.press("#prompt", "Enter")
    wait_answers(page, 1)
    assert not loads(page, shown)
    page.locator(".conversation", has_text="Keep this").click()
    assert loads(page, thumb.locator("img").get_attribute("src"))
    assert page.errors == []


def test_requests_stay_within_the_limits_the_oldest_images_are_left_out_of_history(
    counted_server: Callable[..., Served], page_of: Any
) -> None:
    server = counted_server(max_images=2, max_body_bytes=6000)
    page = page_of(server.base_url)
    bodies = sent_bodies(page)
    # 5,000 bytes are 6,668 in base64: over this server's 6,000-byte requests.
    choose(page, ("heavy.png", "image/png", png(8, 8, (9, 9, 9)) + bytes(5000)))
    error = page.locator("#attach-error")
    error.wait_for()
    assert "“heavy.png” was not attached" in error.inner_text()
    assert "this server takes requests up to 5.9 KiB" in error.inner_text()
    choose(page, ("red.png", "image/png", RED), ("blue.png", "image/png", BLUE))
    wait_thumbnails(page, 2)
    assert error.is_hidden()  # the last attempt went well: the old refusal is gone
    page.fill("#prompt", "first")
    page.press("#prompt", "Enter")
    wait_answers(page, 1)
    drop(page, "dot.gif", "image/gif", GIF)
    wait_thumbnails(page, 1)
    page.fill("#prompt", "second")
    page.press("#prompt", "Enter")
    answers = wait_answers(page, 2)
    assert described(1, "image/gif", GIF) in answers[1]
    # Three images in the conversation, two allowed per request: the oldest stays home.
    sent = [[part["inline_data"]["data"] for part in message["parts"] if "inline_data" in part]
            for message in bodies[1]["messages"]]
    assert sent == [[base64.b64encode(BLUE).decode()], [], [base64.b64encode(GIF).decode()]]
    # ... and stays in the conversation.
    assert page.locator(".message.user .message-images img").count() == 3
    assert page.locator(".error-card").count() == 0
    assert server.counted.generate == 2
    assert page.errors == []
