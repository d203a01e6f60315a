"""Reading the client's environment variables on every call, cheaply.

A call reads up to seven ``GPROCHAT_*`` variables, every time (so a change, or a
test's ``monkeypatch.setenv``, takes effect on the next call). ``os.environ.get``
costs ~0.7 µs each (the mapping protocol plus encoding the key), ~5 µs of a short
request's ~300 µs of client CPU (benchmark B1). On POSIX, ``os.environ`` keeps a
dict of the encoded names, updated by every assignment to ``os.environ``; looking
our pre-encoded names up in it gives the same answer for ~0.05 µs. Anywhere else
(or if ``os.environ`` was replaced by something else) it is plain ``os.environ.get``.
"""

from __future__ import annotations

import os
from typing import Any, Optional, cast

__all__ = ["getenv"]

_Environ = type(os.environ)
_KEYS: dict[str, bytes] = {}


def getenv(name: str) -> Optional[str]:
    """``os.environ.get(name)``, read now."""
    environ: Any = os.environ  # _Environ's encode/decode helpers are untyped
    data = getattr(environ, "_data", None)
    if os.name != "posix" or type(environ) is not _Environ or type(data) is not dict:
        return cast(Optional[str], environ.get(name))
    key = _KEYS.get(name)
    if key is None:
        key = _KEYS[name] = cast(bytes, environ.encodekey(name))  # bytes on POSIX
    raw = data.get(key)
    if raw is None:
        return None
    value: str = environ.decodevalue(raw)
    return value
