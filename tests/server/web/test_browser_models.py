"""The model picker in a real Chromium, against ``gprochat serve --config`` with a router
over two echo models that answer differently (``beta`` repeats the message twice), and
the OpenAI gateway off: the page learns the models from ``/api/models``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .test_browser import PREFIX, reload, send, sent_bodies, wait_answers

ROUTER = """\
[router]
default-model = "alpha"

[models.alpha]
[[models.alpha.deployments]]
backend = "echo"

[models.beta]
[[models.beta.deployments]]
backend = "echo"
repeat = 2
"""
PASSWORD = "open sesame"


def routed_server(web_server: Any, tmp_path: Path, *args: str) -> Any:
    config = tmp_path / "gprochat.toml"
    config.write_text(ROUTER)
    return web_server("--config", str(config), "--no-gateway", *args)


def picker(page: Any) -> Any:
    """The picker, found as a person (or a screen reader) finds it: by its label."""
    return page.get_by_label("Model", exact=True)


def loaded_models(page: Any) -> Any:
    """What the page learnt from /api/models (null if it could not), once it has."""
    return page.evaluate(
        "async () => (await import(document.body.dataset.assets + '/js/models.js')).loadModels()"
    )


def test_the_chosen_model_answers_the_conversation_after_a_reload_and_a_retry(
    web_server: Any, page_of: Any, tmp_path: Path
) -> None:
    server = routed_server(web_server, tmp_path)
    page = page_of(server.base_url)
    bodies = sent_bodies(page)
    select = picker(page)
    select.wait_for()
    assert select.locator("option").all_inner_texts() == ["alpha (default)", "beta"]
    assert select.input_value() == "alpha"
    select.select_option("beta")
    send(page, "Hi B")
    assert wait_answers(page, 1) == [f"{PREFIX} Hi BHi B"]
    assert bodies[-1]["model"] == "beta"
    # Reloaded, the conversation still has beta: shown, and sent.
    reload(page)
    bodies = sent_bodies(page)
    picker(page).wait_for()
    assert picker(page).input_value() == "beta"
    send(page, "Again")
    assert wait_answers(page, 2)[-1] == f"{PREFIX} AgainAgain"
    assert bodies[-1]["model"] == "beta"
    # A retry asks the conversation's model again.
    page.click(".message.assistant .retry")
    page.wait_for_function("() => !document.querySelector('.message.assistant.streaming')"
                           " && document.querySelectorAll('.message.assistant').length === 2")
    assert wait_answers(page, 2)[-1] == f"{PREFIX} AgainAgain"
    assert [body.get("model") for body in bodies] == ["beta", "beta"]
    # A new conversation uses the default and names no model.
    page.click("#new-chat")
    assert picker(page).input_value() == "alpha"
    send(page, "Hi A")
    assert wait_answers(page, 1) == [f"{PREFIX} Hi A"]
    assert "model" not in bodies[-1]
    # Back in the first conversation, beta again.
    page.click("#conversation-list .conversation >> text=Hi B")
    assert picker(page).input_value() == "beta"
    assert page.locator("#model-note").is_hidden()
    assert page.errors == []


def test_a_model_the_server_dropped_falls_back_to_the_default_with_a_note(
    web_server: Any, page_of: Any, tmp_path: Path
) -> None:
    server = routed_server(web_server, tmp_path)
    page = page_of(server.base_url)
    bodies = sent_bodies(page)
    # A conversation stored when the server still offered "gamma".
    page.evaluate("""() => new Promise((resolve, reject) => {
        const opening = indexedDB.open("gprochat", 1);
        opening.onsuccess = () => {
          const transaction = opening.result.transaction("conversations", "readwrite");
          transaction.objectStore("conversations").put({
            id: "old", title: "", system: "", model: "gamma", updated: Date.now(),
            messages: [{id: "m1", role: "user", content: "Old question"},
                       {id: "m2", role: "assistant", content: "Old answer"}]});
          transaction.oncomplete = () => { opening.result.close(); resolve(); };
          transaction.onerror = () => reject(transaction.error);
        };
        opening.onerror = () => reject(opening.error);
    })""")
    reload(page)
    note = page.locator("#model-note")
    note.wait_for()
    assert note.inner_text() == ("gamma, this conversation's model, is no longer offered here: "
                                 "alpha (the default) answers.")
    assert note.get_attribute("role") == "status"
    assert picker(page).input_value() == "alpha"
    send(page, "Still there?")
    assert wait_answers(page, 2)[-1] == f"{PREFIX} Still there?"
    assert "model" not in bodies[-1]
    # Choosing a model the server offers ends the note.
    picker(page).select_option("beta")
    assert note.is_hidden()
    assert page.errors == []


def test_one_model_shows_no_picker(web_server: Any, page_of: Any) -> None:
    server = web_server()
    page = page_of(server.base_url)
    assert loaded_models(page) == {"models": ["echo"], "default": "echo"}
    assert page.locator("#model-picker").is_hidden()
    assert page.locator("#model").count() == 1  # there, but not shown


def test_a_locked_site_shows_its_models_once_the_password_is_given(
    web_server: Any, page_of: Any, tmp_path: Path
) -> None:
    server = routed_server(web_server, tmp_path, "--password", PASSWORD)
    page = page_of(server.base_url)
    page.locator("#password-dialog[open]").wait_for()
    # Asked without the password, the server said nothing: no picker, no model names.
    assert loaded_models(page) is None
    assert page.locator("#model-picker").is_hidden()
    assert "beta" not in page.content()
    page.fill("#password-input", PASSWORD)
    page.press("#password-input", "Enter")
    picker(page).wait_for()
    picker(page).select_option("beta")
    bodies = sent_bodies(page)
    send(page, "Locked B")
    assert wait_answers(page, 1) == [f"{PREFIX} Locked BLocked B"]
    assert bodies[-1]["model"] == "beta" and bodies[-1]["pass"] == PASSWORD
    assert page.errors == []
