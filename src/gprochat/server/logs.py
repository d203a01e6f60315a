"""The server's logs on stderr: readable lines on a terminal, JSON lines otherwise; no secrets.

``configure_logging(level, "auto")`` picks the format as uvicorn, llama-server and
ollama do: plain text when stderr is a terminal (a person reads it), one JSON object
per line when it is not (a collector parses it); ``"json"`` or ``"text"`` force one.
The access log (logger ``gprochat.access``) records method, route, status, duration,
bytes and the client's address; never bodies, passwords, signatures or message texts.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

__all__ = [
    "LOG_FORMATS", "ExpectedAbortFilter", "JsonFormatter", "TextFormatter", "access_logger",
    "configure_logging", "log_access", "resolve_log_format",
]

#: ``--log-format``'s choices; ``auto`` is text on a terminal, JSON otherwise.
LOG_FORMATS = ("auto", "text", "json")

access_logger = logging.getLogger("gprochat.access")

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "color_message",  # uvicorn's copy with terminal colours
}


def log_access(
    method: str, route: str, status: int | None, *, duration: float, sent: int, client: str,
    outcome: str, first_byte: float | None = None, **more: Any,
) -> None:
    """One access-log line: every request's has this shape (``more``: ``reason``, ``error``).

    ``duration`` and ``first_byte`` are in seconds; the line has them in milliseconds.
    """
    if not access_logger.isEnabledFor(logging.INFO):
        return
    extra: dict[str, Any] = {
        "method": method,
        "route": route,
        "status": status or None,
        "duration_ms": round(duration * 1000, 1),
        "bytes": sent,
        "client": client,
        "outcome": outcome,
    }
    if first_byte is not None:
        extra["ttfb_ms"] = round(first_byte * 1000, 1)
    extra.update(more)
    access_logger.info("%s %s %s", method or "-", route, status or "-", extra=extra)


class JsonFormatter(logging.Formatter):
    """``{"ts": ..., "level": ..., "logger": ..., "message": ..., **extra}`` per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message``; an access line adds its duration, size, client, outcome.

    ``2026-01-05 10:00:00,123 INFO gprochat.access: POST /api/generate 200 in 35.1 ms
    (first byte 3.2 ms), 512 B to 127.0.0.1``
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if record.name == "uvicorn.error":  # uvicorn's general log, not only errors
            record = logging.makeLogRecord({**record.__dict__, "name": "uvicorn"})
        return super().format(record)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        if record.name != access_logger.name or not hasattr(record, "duration_ms"):
            return line
        fields = record.__dict__
        line += f" in {fields['duration_ms']} ms"
        if fields.get("ttfb_ms") is not None:
            line += f" (first byte {fields['ttfb_ms']} ms)"
        line += f", {fields.get('bytes', 0)} B to {fields.get('client', 'unknown')}"
        outcome = fields.get("outcome", "complete")
        if outcome == "refused":
            line += f", refused: {fields.get('reason')} ({fields.get('error')})"
        elif outcome != "complete":
            line += f", {outcome}"
        return line


class ExpectedAbortFilter(logging.Filter):
    """Drops uvicorn's traceback for a stream cut on purpose.

    ``StreamAborted``: cutting the connection is how the protocol tells a client that
    an answer is incomplete; the route has already logged one line about it.
    ``CancelledError``: past ``--shutdown-timeout`` uvicorn cancels the answers still
    running and logs one line saying how many; a traceback each adds nothing.
    """

    def __init__(self, *exception_types: type[BaseException]) -> None:
        super().__init__()
        self.exception_types = exception_types

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (exc is not None and _contains(exc, self.exception_types))


def _contains(exc: BaseException, types: tuple[type[BaseException], ...]) -> bool:
    if isinstance(exc, types):
        return True
    grouped = getattr(exc, "exceptions", None)  # an ExceptionGroup from anyio's task group
    if isinstance(grouped, (list, tuple)):
        return any(_contains(inner, types) for inner in grouped)
    return False


def install_abort_filter(*exception_types: type[BaseException]) -> None:
    """Add ``ExpectedAbortFilter`` to uvicorn's error logger (once), or these types to it."""
    target = logging.getLogger("uvicorn.error")
    for existing in target.filters:
        if isinstance(existing, ExpectedAbortFilter):
            missing = tuple(t for t in exception_types if t not in existing.exception_types)
            existing.exception_types += missing
            return
    target.addFilter(ExpectedAbortFilter(*exception_types))


def resolve_log_format(fmt: str) -> str:
    """``"text"`` or ``"json"``: ``"auto"`` is text when stderr is a terminal."""
    if fmt == "auto":
        isatty = getattr(sys.stderr, "isatty", None)
        return "text" if isatty is not None and isatty() else "json"
    return fmt


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Root logging to stderr, as JSON lines (``fmt="json"``) or plain text (``"text"``).

    ``"auto"``: text when stderr is a terminal, JSON otherwise.
    """
    handler = logging.StreamHandler(sys.stderr)
    if resolve_log_format(fmt) == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's loggers propagate to ours (uvicorn runs with log_config=None); its
    # access log is replaced by gprochat.access, which has the route and the timings.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
