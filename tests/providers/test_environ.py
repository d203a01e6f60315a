"""The client's environment reads: every call sees the environment as it is now."""

import os

import pytest

from gprochat.providers._environ import getenv


def test_getenv_follows_every_change(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPROCHAT_TEST_VALUE", raising=False)
    assert getenv("GPROCHAT_TEST_VALUE") is None
    monkeypatch.setenv("GPROCHAT_TEST_VALUE", "first")
    assert getenv("GPROCHAT_TEST_VALUE") == "first"
    os.environ["GPROCHAT_TEST_VALUE"] = "sécond ✓"
    assert getenv("GPROCHAT_TEST_VALUE") == "sécond ✓"
    monkeypatch.delenv("GPROCHAT_TEST_VALUE")
    assert getenv("GPROCHAT_TEST_VALUE") is None


def test_getenv_agrees_with_os_environ_for_every_variable() -> None:
    for name, value in os.environ.items():
        assert getenv(name) == value


def test_getenv_reads_a_replaced_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "environ", {"GPROCHAT_TEST_VALUE": "from a plain dict"})
    assert getenv("GPROCHAT_TEST_VALUE") == "from a plain dict"
