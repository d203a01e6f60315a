"""The docs' check values and examples are recomputed here, so the docs cannot drift."""

from __future__ import annotations

import json
import re
from pathlib import Path

from gprochat.protocol import DEFAULT_SECRET_KEY, build_generate_request, generate_signature

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_protocol_md_signature_table_is_what_the_code_computes() -> None:
    text = (DOCS / "protocol.md").read_text()
    rows = re.findall(r"^\| `(\d+)` \| `([^`]*)` \| (gprochat.com's|`[^`]*`) \| `([0-9a-f]{64})` \|$",
                      text, re.MULTILINE)
    assert len(rows) == 3
    for time, message, key, sign in rows:
        secret = DEFAULT_SECRET_KEY if key == "gprochat.com's" else key.strip("`")
        assert generate_signature(int(time), message, secret) == sign
    assert DEFAULT_SECRET_KEY in text


def test_protocol_md_example_body_is_what_the_client_sends() -> None:
    text = (DOCS / "protocol.md").read_text()
    example = re.search(r"^(\{\"messages\".*?\})\n```", text, re.MULTILINE | re.DOTALL)
    assert example is not None
    documented = json.loads(example.group(1))
    built = build_generate_request(
        documented["messages"], timestamp=documented["time"], secret_key=DEFAULT_SECRET_KEY
    )
    assert built == documented


def test_no_reference_to_a_missing_protocol_file() -> None:
    root = DOCS.parent
    for path in [root / "README.md", *DOCS.glob("*.md"), root / "src/gprochat/protocol.py"]:
        assert "PROTOCOL.md" not in path.read_text(), path


def test_openai_md_names_the_model_ids_the_default_server_serves() -> None:
    """The LangChain example used model="echo", which the default server (the local model
    since issue 10) answers with 404 model_not_found."""
    from gprochat.server.backends._gguf import _DEFAULT_MODEL_FILE

    text = (DOCS / "openai.md").read_text()
    served = _DEFAULT_MODEL_FILE.removesuffix(".gguf")
    (example,) = re.findall(r'ChatOpenAI\(.*model="([^"]+)"\)', text)
    assert example == served
    assert f"`{served}` for the default local model" in text


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as dashes."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.MULTILINE | re.DOTALL)
    return {_slug(match) for match in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def test_every_relative_link_of_the_readme_and_docs_reaches_its_file_and_heading() -> None:
    # A renamed heading or page leaves links that lead nowhere: each one is checked here.
    pages = [DOCS.parent / "README.md", *sorted(DOCS.glob("*.md"))]
    broken = []
    checked = 0
    for page in pages:
        text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not ours to check offline
            file_part, _, anchor = target.partition("#")
            linked = (page.parent / file_part).resolve() if file_part else page
            checked += 1
            if not linked.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert checked > 50
    assert broken == []
