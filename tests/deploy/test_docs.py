"""docs/deploy.md shows the files in deploy/ word for word: what it documents is what is tested."""

from __future__ import annotations

import re

import pytest

from .conftest import DEPLOY

DOC = DEPLOY.parent / "docs" / "deploy.md"


@pytest.mark.parametrize("name", ["gprochat.service", "gprochat.env", "nginx.conf", "Caddyfile"])
def test_the_guide_shows_the_shipped_file_as_it_is(name: str) -> None:
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```$", DOC.read_text(), re.DOTALL | re.MULTILINE)
    assert (DEPLOY / name).read_text() in blocks, f"docs/deploy.md does not show deploy/{name} as it is"


def test_the_guide_is_linked_from_the_readme() -> None:
    assert "(docs/deploy.md)" in (DEPLOY.parent / "README.md").read_text()
