"""``gprochat.__all__`` is the public surface: every name exists, every public class is listed."""

import inspect

import gprochat
from gprochat import errors


def test_all_names_exist() -> None:
    missing = [name for name in gprochat.__all__ if not hasattr(gprochat, name)]
    assert missing == []


def test_every_exception_is_exported_and_under_one_root() -> None:
    for name, obj in vars(errors).items():
        if inspect.isclass(obj) and issubclass(obj, Exception) and obj.__module__ == errors.__name__:
            assert issubclass(obj, gprochat.GPROChatError), name
            assert name in gprochat.__all__, f"{name} is not exported"


def test_exception_tree_is_drawn_in_the_docstring() -> None:
    doc = errors.__doc__ or ""
    for name in errors.__all__:
        if name[0].isupper():
            assert name in doc, f"{name} is missing from the tree in errors.py's docstring"


def test_timeout_and_connect_errors_are_also_builtins() -> None:
    assert issubclass(gprochat.TimeoutError, TimeoutError)
    assert issubclass(gprochat.ConnectError, ConnectionError)
