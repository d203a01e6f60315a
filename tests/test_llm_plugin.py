"""The ``llm`` plugin, through llm's own Python API and command line, against our server."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import llm
import pytest
import sqlite_utils
from click.testing import CliRunner
from llm.cli import cli as llm_cli
from llm.migrations import migrate

from gprochat.server import ServerConfig
from gprochat.server.backends import Backend
from gprochat.server.backends.base import Conversation

from .conftest import ServerFactory
from .image_samples import SVG, described, jpeg, png


class TurnCounter(Backend):
    name = "turn-counter"

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        yield f"{len(conversation.history)} earlier turns; "
        yield " | ".join(turn.text for turn in conversation.history) or "none"
        yield f"; now: {conversation.message}"


@pytest.fixture(scope="session")
def migrated_llm_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty logs.db as llm leaves it on first use. llm commits (and syncs) each of
    its migrations apart: seconds on a busy disk, once per session rather than per test."""
    path = tmp_path_factory.mktemp("llm-logs") / "logs.db"
    migrate(sqlite_utils.Database(path))  # type: ignore[no-untyped-call]
    return path


@pytest.fixture(autouse=True)
def llm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, migrated_llm_logs: Path) -> Path:
    """llm keeps its keys, aliases and logs.db here, not in the developer's directory."""
    home = tmp_path / "llm"
    home.mkdir()
    shutil.copyfile(migrated_llm_logs, home / "logs.db")
    monkeypatch.setenv("LLM_USER_PATH", str(home))
    for name in [n for n in os.environ if n.startswith("GPROCHAT_") and n != "GPROCHAT_HOME"]:
        monkeypatch.delenv(name)
    return home


def test_llm_finds_the_model_by_its_id() -> None:
    model = llm.get_model("gprochat")
    assert model.model_id == "gprochat"
    assert model.can_stream
    assert {"base_url", "secret_key", "password"} <= set(model.Options.model_fields)
    assert "gprochat" in {m.model_id for m in llm.get_models()}


def test_python_api_streams_through_our_server(make_server: ServerFactory) -> None:
    # A pause between the echo's chunks, so they cannot arrive merged into one read.
    server = make_server(ServerConfig(secret_key="s3cret", passwords=("pw",), backend="echo",
                                      backend_options={"delay": 0.05}))
    model = llm.get_model("gprochat")
    response = model.prompt("Hello from llm", base_url=server.base_url, secret_key="s3cret", password="pw")
    chunks = list(response)
    assert len(chunks) > 1  # streamed, not one block
    assert "".join(chunks).endswith(": Hello from llm")

    wrong = model.prompt("Hi", base_url=server.base_url, secret_key="s3cret", password="nope")
    with pytest.raises(llm.ModelError, match="Invalid password"):
        wrong.text()


def test_python_api_conversation_sends_native_history(make_server: ServerFactory) -> None:
    server = make_server(backend=TurnCounter())
    conversation = llm.get_model("gprochat").conversation()
    first = conversation.prompt("one", base_url=server.base_url, system="Be brief.").text()
    assert first == "0 earlier turns; none; now: Be brief.\n\none"
    second = conversation.prompt("two", base_url=server.base_url, system="Be brief.").text()
    assert second == f"2 earlier turns; Be brief.\n\none | {first}; now: two"


async def test_async_model(make_server: ServerFactory) -> None:
    server = make_server()
    model = llm.get_async_model("gprochat")
    chunks = [chunk async for chunk in model.prompt("async hello", base_url=server.base_url)]
    assert "".join(chunks).endswith(": async hello")


def test_llm_command_line(make_server: ServerFactory, llm_home: Path) -> None:
    server = make_server(backend=TurnCounter())
    runner = CliRunner()
    listed = runner.invoke(llm_cli, ["models"])
    assert listed.exit_code == 0, listed.output
    assert "GPROChat: gprochat" in listed.output

    first = runner.invoke(llm_cli, ["-m", "gprochat", "-o", "base_url", server.base_url, "first question"])
    assert first.exit_code == 0, first.output
    assert first.output.strip() == "0 earlier turns; none; now: first question"
    # llm -c continues through our plugin: the history reaches our server.
    again = runner.invoke(llm_cli, ["-c", "-o", "base_url", server.base_url, "second question"])
    assert again.exit_code == 0, again.output
    assert again.output.startswith("2 earlier turns; first question | 0 earlier turns")

    logged = runner.invoke(llm_cli, ["logs", "-n", "1", "--json"])
    assert json.loads(logged.output)[0]["model"] == "gprochat"


def test_llm_as_a_process_with_environment_settings(make_server: ServerFactory, llm_home: Path) -> None:
    server = make_server(ServerConfig(secret_key="k2"))
    env = {**os.environ, "LLM_USER_PATH": str(llm_home), "GPROCHAT_BASE_URL": server.base_url,
           "GPROCHAT_SECRET_KEY": "k2"}
    result = subprocess.run([sys.executable, "-m", "llm", "-m", "gprochat", "Hi there"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(": Hi there")

    env["GPROCHAT_SECRET_KEY"] = "wrong"
    failed = subprocess.run([sys.executable, "-m", "llm", "-m", "gprochat", "Hi"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert failed.returncode == 1
    assert "Invalid signature." in failed.stderr and "Traceback" not in failed.stderr


def test_with_no_deployment_a_prompt_fails_at_once_with_advice() -> None:
    """gprochat.com is gone: no request to it, no retries, and what to pass instead."""
    with pytest.raises(llm.ModelError) as info:
        llm.get_model("gprochat").prompt("Hi").text()
    assert "-o base_url" in str(info.value) and "GPROCHAT_DEPLOYMENTS" in str(info.value)


def test_a_deployments_file_is_failed_over(make_server: ServerFactory, tmp_path: Path) -> None:
    server = make_server(ServerConfig(secret_key="k3"))
    file = tmp_path / "deployments.toml"
    dead = "http://127.0.0.1:1"
    file.write_text(f'[[deployment]]\nbase_url = "{dead}"\n\n'
                    f'[[deployment]]\nbase_url = "{server.base_url}"\nsecret_key = "k3"\n')
    text = llm.get_model("gprochat").prompt("Hi", deployments=str(file)).text()
    assert text.endswith(": Hi")


class ImageReporter(Backend):
    """Names the images of each earlier turn and of the new message, by SHA-256."""

    name = "image-reporter"
    accepts_images = True

    async def stream(self, conversation: Conversation) -> AsyncIterator[str]:
        for turn in conversation.history:
            yield f"{turn.role}: {','.join(i.sha256 for i in turn.images) or 'none'}; "
        yield f"new: {','.join(i.sha256 for i in conversation.images) or 'none'}"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_the_model_declares_the_image_types() -> None:
    for model in (llm.get_model("gprochat"), llm.get_async_model("gprochat")):
        assert model.attachment_types == {"image/png", "image/jpeg", "image/webp", "image/gif"}


def test_python_api_sends_attachments_byte_for_byte(make_server: ServerFactory, tmp_path: Path) -> None:
    server = make_server()
    photo, other = png(seed=41), jpeg(seed=3)
    path = tmp_path / "photo.png"
    path.write_bytes(photo)
    response = llm.get_model("gprochat").prompt(
        "What is in these?", attachments=[llm.Attachment(path=str(path)), llm.Attachment(content=other)],
        base_url=server.base_url)
    text = response.text()
    assert "What is in these?" in text
    assert f"[image 1: {described(photo)}]\n[image 2: {described(other, 'image/jpeg')}]" in text


async def test_async_model_sends_attachments(make_server: ServerFactory) -> None:
    server = make_server()
    photo = png(seed=42)
    model = llm.get_async_model("gprochat")
    response = model.prompt("async picture", attachments=[llm.Attachment(content=photo)],
                            base_url=server.base_url)
    chunks = [chunk async for chunk in response]
    assert f"[image 1: {described(photo)}]" in "".join(chunks)


def test_a_url_attachment_is_refused_not_fetched(make_server: ServerFactory) -> None:
    server = make_server(backend=ImageReporter())
    # The type is given, so llm itself does not ask the URL for one either: nothing leaves 127.0.0.1.
    attachment = llm.Attachment(url="https://example.com/cat.png", type="image/png")
    with pytest.raises(llm.ModelError, match=r"attachment 1 is a URL .* does not fetch images; download it"):
        llm.get_model("gprochat").prompt("Hi", attachments=[attachment], base_url=server.base_url).text()


def test_bytes_that_are_not_an_image_are_refused_whatever_their_declared_type(
    make_server: ServerFactory,
) -> None:
    server = make_server(backend=ImageReporter())
    renamed = llm.Attachment(content=b"plain text, called a PNG", type="image/png")
    with pytest.raises(llm.ModelError, match="attachment 1 is text, not an image"):
        llm.get_model("gprochat").prompt("Hi", attachments=[renamed], base_url=server.base_url).text()
    with pytest.raises(ValueError, match="does not support attachments of type 'image/svg"):
        llm.get_model("gprochat").prompt("Hi", attachments=[llm.Attachment(content=SVG)],
                                         base_url=server.base_url).text()


def test_llm_command_line_attaches_and_continues_with_the_images(
    make_server: ServerFactory, tmp_path: Path,
) -> None:
    server = make_server(backend=ImageReporter())
    photo = png(seed=43)
    path = tmp_path / "photo.png"
    path.write_bytes(photo)
    runner = CliRunner()
    first = runner.invoke(llm_cli, ["-m", "gprochat", "-o", "base_url", server.base_url, "-a", str(path),
                                    "What is this?"])
    assert first.exit_code == 0, first.output
    assert first.output.strip() == f"new: {_sha(photo)}"
    # llm -c rebuilds the conversation from its own log: the first turn's image goes again.
    again = runner.invoke(llm_cli, ["-c", "-o", "base_url", server.base_url, "And now?"])
    assert again.exit_code == 0, again.output
    assert again.output.strip() == f"user: {_sha(photo)}; model: none; new: none"


def test_llm_command_line_reads_an_image_on_standard_input(make_server: ServerFactory) -> None:
    server = make_server()
    photo = png(seed=44)
    result = CliRunner().invoke(llm_cli, ["-m", "gprochat", "-o", "base_url", server.base_url, "-a", "-",
                                          "Describe it"], input=photo)
    assert result.exit_code == 0, result.output
    assert f"[image 1: {described(photo)}]" in result.output
