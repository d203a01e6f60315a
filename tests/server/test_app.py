"""What ``create_app`` builds once per process rather than per app: the page's
compressed assets and the gateway's OpenAPI document."""

from __future__ import annotations

import gzip
import json
import os
import urllib.request
from pathlib import Path

import pytest

from gprochat.server import ServerConfig, create_app, web
from gprochat.server.gateway.openapi import openapi_json, openapi_schema

from ..conftest import ServerFactory


def test_every_app_of_the_process_shares_the_compressed_assets() -> None:
    first, second = web._load_assets(), web._load_assets()
    assert first.keys() == second.keys() and "js/main.js" in first
    for name, asset in first.items():
        assert second[name] is asset  # not read, hashed or compressed again
    assert first["js/main.js"].gzipped is not None
    assert gzip.decompress(first["js/main.js"].gzipped) == first["js/main.js"].body


def test_a_file_changed_on_disk_is_read_again_by_the_next_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(web, "WEB_ROOT", tmp_path)
    script = tmp_path / "js" / "app.js"
    script.parent.mkdir()
    script.write_text("let a = 1;\n")
    before = web._load_assets()["js/app.js"]
    assert web._load_assets()["js/app.js"] is before
    read_at = script.stat().st_mtime_ns
    script.write_text("let a = 22;\n")
    os.utime(script, ns=(read_at, read_at + 1_000_000))  # changed, however coarse the clock
    after = web._load_assets()["js/app.js"]
    assert after.body == b"let a = 22;\n" and after.etag != before.etag
    assert after.gzipped is not None and gzip.decompress(after.gzipped) == after.body
    (tmp_path / "js" / "new.js").write_text("export {};\n")
    assert set(web._load_assets()) == {"js/app.js", "js/new.js"}


def test_the_openapi_document_is_generated_on_first_request_then_kept(
    make_server: ServerFactory,
) -> None:
    openapi_json.cache_clear()
    server = make_server()
    create_app(ServerConfig())
    assert openapi_json.cache_info().currsize == 0  # building apps generates nothing
    documents = []
    for _ in range(2):
        with urllib.request.urlopen(server.base_url + "/openapi.json", timeout=30) as response:
            assert response.headers["Content-Type"] == "application/json"
            documents.append(json.loads(response.read()))
    assert documents[0] == documents[1] == openapi_schema()
    assert openapi_json.cache_info().misses == 1 and openapi_json.cache_info().hits == 1
