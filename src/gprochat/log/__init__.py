"""The conversation log: every exchange in one SQLite database, searchable, continuable.

>>> log = ConversationLog.open()          # GPROCHAT_HOME, else the user's data directory
>>> log.record(Exchange(conversation_id=new_conversation_id(), deployment="local", ...))
>>> log.recent(query="haiku")             # SQLite full-text search (FTS5)

Attachments (images) are stored once each, keyed by their SHA-256, whatever the number
of exchanges that sent them; ``exchange_attachments`` links an exchange to them in order.

The database runs in WAL mode with a busy timeout, so several sessions write at once
without losing a row; its schema version is kept in ``PRAGMA user_version`` and moved
forward by the ordered ``MIGRATIONS``. Problems (locked, damaged, written by a newer
gprochat) raise ``LogError`` with one line saying what to do.
"""

from __future__ import annotations

import datetime
import json
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit, urlunsplit

from ..images import Image

__all__ = [
    "Attachment",
    "ConversationLog",
    "Exchange",
    "LogError",
    "MIGRATIONS",
    "data_dir",
    "new_conversation_id",
    "public_url",
]

DB_NAME = "logs.db"
BUSY_TIMEOUT = 10.0
"""Seconds a write waits for another session's write to finish before giving up."""


class LogError(Exception):
    """The conversation log cannot be used; the message says why and what to do."""


def data_dir() -> Path:
    """``GPROCHAT_HOME``, else the platform's user data directory for gprochat."""
    home = os.environ.get("GPROCHAT_HOME")
    if home:
        return Path(home).expanduser()
    import platformdirs  # loaded only when the log is used

    return Path(platformdirs.user_data_dir("gprochat", appauthor=False))


def new_conversation_id() -> str:
    """A fresh conversation id: 12 hex digits, easy to copy."""
    return uuid.uuid4().hex[:12]


def public_url(url: str) -> str:
    """``url`` without its ``user:password@`` part: logs never hold credentials."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Attachment:
    """An attachment as the log lists it: its type, size and SHA-256 (the bytes stay in
    the database: ``ConversationLog.attachment`` reads them)."""

    sha256: str
    type: str
    size: int

    @classmethod
    def of(cls, image: Image) -> Attachment:
        return cls(sha256=image.sha256, type=image.mime_type, size=image.size)

    def describe(self) -> str:
        """``image/png, 1234 bytes, sha256 0123456789ab`` (the short SHA-256)."""
        return f"{self.type}, {self.size} bytes, sha256 {self.sha256[:12]}"


@dataclass
class Exchange:
    """One prompt and its answer (or its failure); ``attachments`` sent with the prompt."""

    conversation_id: str
    deployment: str
    model: str
    prompt: str
    answer: str = ""
    system: Optional[str] = None
    started: str = field(default_factory=_now)
    finished: Optional[str] = None
    duration_ms: Optional[int] = None
    incomplete: bool = False
    error: Optional[str] = None
    id: Optional[int] = None
    attachments: list[Attachment] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the schema, one migration per step, applied in order ------------------------------


def _m001_exchanges(db: sqlite3.Connection) -> None:
    db.execute(
        """
        CREATE TABLE exchanges (
            id INTEGER PRIMARY KEY,
            conversation_id TEXT NOT NULL,
            deployment TEXT NOT NULL,
            model TEXT NOT NULL,
            system TEXT,
            prompt TEXT NOT NULL,
            answer TEXT NOT NULL DEFAULT '',
            started TEXT NOT NULL,
            finished TEXT,
            duration_ms INTEGER,
            incomplete INTEGER NOT NULL DEFAULT 0,
            error TEXT
        )
        """
    )
    db.execute("CREATE INDEX exchanges_by_conversation ON exchanges (conversation_id, id)")


def _m002_full_text_search(db: sqlite3.Connection) -> None:
    db.execute(
        "CREATE VIRTUAL TABLE exchanges_fts USING fts5("
        "prompt, answer, content='exchanges', content_rowid='id')"
    )
    # One statement per execute(): executescript() would commit the migration's transaction.
    db.execute(
        """
        CREATE TRIGGER exchanges_ai AFTER INSERT ON exchanges BEGIN
            INSERT INTO exchanges_fts (rowid, prompt, answer) VALUES (new.id, new.prompt, new.answer);
        END
        """
    )
    db.execute(
        """
        CREATE TRIGGER exchanges_ad AFTER DELETE ON exchanges BEGIN
            INSERT INTO exchanges_fts (exchanges_fts, rowid, prompt, answer)
            VALUES ('delete', old.id, old.prompt, old.answer);
        END
        """
    )
    db.execute(
        """
        CREATE TRIGGER exchanges_au AFTER UPDATE ON exchanges BEGIN
            INSERT INTO exchanges_fts (exchanges_fts, rowid, prompt, answer)
            VALUES ('delete', old.id, old.prompt, old.answer);
            INSERT INTO exchanges_fts (rowid, prompt, answer) VALUES (new.id, new.prompt, new.answer);
        END
        """
    )
    db.execute("INSERT INTO exchanges_fts (exchanges_fts) VALUES ('rebuild')")


def _m003_attachments(db: sqlite3.Connection) -> None:
    # Content-addressed: an image sent in ten exchanges is stored once.
    db.execute(
        """
        CREATE TABLE attachments (
            sha256 TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            size INTEGER NOT NULL,
            content BLOB NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE exchange_attachments (
            exchange_id INTEGER NOT NULL REFERENCES exchanges (id),
            position INTEGER NOT NULL,
            sha256 TEXT NOT NULL REFERENCES attachments (sha256),
            PRIMARY KEY (exchange_id, position)
        )
        """
    )
    db.execute("CREATE INDEX exchange_attachments_by_sha256 ON exchange_attachments (sha256)")


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _m001_exchanges,
    _m002_full_text_search,
    _m003_attachments,
)
"""Migration N (1-based) takes the schema from version N-1 to N. Only ever append."""


_COLUMNS = (
    "id, conversation_id, deployment, model, system, prompt, answer, started, finished, "
    "duration_ms, incomplete, error"
)


def _exchange(row: sqlite3.Row) -> Exchange:
    values = dict(row)
    values.pop("attachments", None)
    values["incomplete"] = bool(values["incomplete"])
    return Exchange(**values)


class ConversationLog:
    """The log database at ``path`` (created and migrated on open)."""

    def __init__(self, path: Path, *, busy_timeout: float = BUSY_TIMEOUT, reading: bool = False) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        # What an error advises: a chat can go on without its log (--no-log); a reader
        # (gprochat logs) has no such flag, and the log is what it came for.
        self.reading = reading
        with self._errors():
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE below).
            self._db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
            try:
                self._db.row_factory = sqlite3.Row
                self._db.execute("PRAGMA journal_mode=WAL")
                self._migrate()
            except BaseException:
                self._db.close()
                raise

    @classmethod
    def open(cls, directory: Optional[Path] = None, **options: Any) -> ConversationLog:
        """The log in ``directory`` (default: ``data_dir()``)."""
        return cls((directory or data_dir()) / DB_NAME, **options)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ConversationLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        if self.schema_version == len(MIGRATIONS):
            return
        with self._transaction():
            # Read again inside the write lock: another session may have just migrated.
            version = self.schema_version
            if version > len(MIGRATIONS):
                raise LogError(
                    f"the conversation log {self.path} has schema version {version}, newer than "
                    f"this gprochat knows ({len(MIGRATIONS)}): upgrade gprochat, or set "
                    "GPROCHAT_HOME to another directory"
                )
            for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
                migration(self._db)
                self._db.execute(f"PRAGMA user_version = {number}")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")  # take the write lock now, waiting up to the timeout
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """sqlite3's exceptions as one ``LogError`` line saying what to do."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "locked" in text or "busy" in text:
                raise LogError(
                    f"the conversation log {self.path} is locked by another program "
                    f"(waited {self.busy_timeout:g}s): try again"
                    + (" once it is done" if self.reading else ", or pass --no-log")
                ) from exc
            raise self._damaged(exc) from exc
        except sqlite3.DatabaseError as exc:
            raise self._damaged(exc) from exc
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if isinstance(exc, (FileExistsError, NotADirectoryError)):  # mkdir met a file
                reason = f"{exc.filename} must be a directory, and a file is in the way"
            advice = ("set GPROCHAT_HOME to the directory that holds your log; gprochat logs "
                      "--path shows where it is looked for" if self.reading else
                      "set GPROCHAT_HOME to a writable directory, or pass --no-log")
            raise LogError(f"cannot open the conversation log {self.path}: {reason} ({advice})") from exc

    def _damaged(self, exc: Exception) -> LogError:
        if self.reading:
            return LogError(
                f"the conversation log {self.path} cannot be read ({exc}): it is damaged; "
                "restore it from a backup, or move the file away (gprochat chat then starts "
                "a new log)"
            )
        return LogError(
            f"the conversation log {self.path} cannot be used ({exc}): move the file away "
            "(a new log is started) or pass --no-log"
        )

    # -- writing ----------------------------------------------------------------------

    def record(self, exchange: Exchange, images: Sequence[Image] = ()) -> int:
        """Store ``exchange`` (its deployment without credentials) and the ``images`` sent
        with its prompt, in order (each image's bytes once in the whole log); its row id."""
        values = exchange.to_dict()
        values.pop("id")
        values.pop("attachments")
        values["deployment"] = public_url(values["deployment"])
        values["incomplete"] = int(values["incomplete"])
        for name, value in values.items():
            if isinstance(value, str):  # a lone surrogate (undecodable input) cannot be stored
                values[name] = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        names = ", ".join(values)
        marks = ", ".join(f":{name}" for name in values)
        with self._errors(), self._transaction():
            cursor = self._db.execute(f"INSERT INTO exchanges ({names}) VALUES ({marks})", values)
            row_id = int(cursor.lastrowid or 0)
            for position, image in enumerate(images):
                known = self._db.execute(
                    "SELECT 1 FROM attachments WHERE sha256 = ?", (image.sha256,)
                ).fetchone()
                if known is None:  # decoded only when the log does not hold it yet
                    self._db.execute(
                        "INSERT INTO attachments (sha256, type, size, content) VALUES (?, ?, ?, ?)",
                        (image.sha256, image.mime_type, image.size, image.decode()),
                    )
                self._db.execute(
                    "INSERT INTO exchange_attachments (exchange_id, position, sha256) VALUES (?, ?, ?)",
                    (row_id, position, image.sha256),
                )
        exchange.id = row_id
        exchange.attachments = [Attachment.of(image) for image in images]
        return exchange.id

    # -- reading ----------------------------------------------------------------------

    def recent(
        self, limit: Optional[int] = 10, *, conversation_id: Optional[str] = None,
        query: Optional[str] = None,
    ) -> list[Exchange]:
        """The last ``limit`` exchanges (all with ``None``), oldest first.

        ``conversation_id`` keeps one conversation; ``query`` keeps those whose prompt or
        answer holds every word of it (full-text search, whole words, any case).
        """
        where: list[str] = []
        params: dict[str, object] = {"limit": -1 if limit is None else limit}
        source = "exchanges"
        if conversation_id:
            where.append("exchanges.conversation_id = :cid")
            params["cid"] = conversation_id
        if query is not None:
            source = "exchanges JOIN exchanges_fts ON exchanges_fts.rowid = exchanges.id"
            where.append("exchanges_fts MATCH :query")
            params["query"] = _fts_query(query)
        columns = ", ".join(f"exchanges.{name.strip()}" for name in _COLUMNS.split(","))
        sql = (
            f"SELECT {columns} FROM {source}"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY exchanges.id DESC LIMIT :limit"
        )
        with self._errors():
            rows = self._db.execute(sql, params).fetchall()
            exchanges = [_exchange(row) for row in reversed(rows)]
            self._add_attachments(exchanges)
        return exchanges

    def _add_attachments(self, exchanges: list[Exchange]) -> None:
        by_id = {exchange.id: exchange for exchange in exchanges}
        if not by_id:
            return
        marks = ", ".join("?" * len(by_id))
        rows = self._db.execute(
            "SELECT link.exchange_id, a.sha256, a.type, a.size FROM exchange_attachments AS link "
            "JOIN attachments AS a ON a.sha256 = link.sha256 "
            f"WHERE link.exchange_id IN ({marks}) ORDER BY link.exchange_id, link.position",
            list(by_id),
        ).fetchall()
        for exchange_id, sha256, type_, size in rows:
            by_id[exchange_id].attachments.append(Attachment(sha256, type_, size))

    def attachment(self, sha256: str) -> tuple[Attachment, bytes]:
        """The attachment whose SHA-256 is or starts with ``sha256`` (at least 4 hex
        digits, as ``gprochat logs`` shows them), with its bytes."""
        prefix = sha256.strip().lower()
        if len(prefix) < 4 or any(c not in "0123456789abcdef" for c in prefix):
            raise LogError(
                f"{sha256!r} is not a SHA-256 prefix: give at least 4 of the hex digits "
                "gprochat logs shows after 'sha256'"
            )
        with self._errors():
            rows = self._db.execute(
                "SELECT sha256, type, size, content FROM attachments "
                "WHERE sha256 >= ? AND sha256 < ? ORDER BY sha256 LIMIT 2",
                (prefix, prefix + "g"),
            ).fetchall()
        if not rows:
            raise LogError(f"no attachment with SHA-256 {prefix}... in the log ({self.path})")
        if len(rows) > 1:
            raise LogError(f"several attachments have a SHA-256 starting {prefix}: give more digits")
        sha, type_, size, content = rows[0]
        return Attachment(sha, type_, size), bytes(content)

    def images(self, exchange: Exchange) -> list[Image]:
        """The images sent with ``exchange``'s prompt, in order (to send them again)."""
        return [Image.from_bytes(self.attachment(a.sha256)[1], where=f"logged attachment {a.sha256[:12]}")
                for a in exchange.attachments]

    def conversation(self, conversation_id: str) -> list[Exchange]:
        """Every exchange of one conversation, oldest first (empty if there is none)."""
        return self.recent(None, conversation_id=conversation_id)

    def latest_conversation_id(self) -> Optional[str]:
        with self._errors():
            row = self._db.execute(
                "SELECT conversation_id FROM exchanges ORDER BY id DESC LIMIT 1"
            ).fetchone()
        return None if row is None else str(row[0])

    def count(self) -> int:
        with self._errors():
            return int(self._db.execute("SELECT count(*) FROM exchanges").fetchone()[0])


def _fts_query(text: str) -> str:
    """Every word of ``text`` as a quoted FTS5 string: punctuation is never syntax."""
    words = text.split()
    if not words:
        raise LogError("the search text is empty: give at least one word")
    return " ".join('"' + word.replace('"', '""') + '"' for word in words)


def to_json(exchanges: list[Exchange]) -> str:
    """Exchanges as a JSON array (the shape ``gprochat logs --json`` prints)."""
    return json.dumps([e.to_dict() for e in exchanges], ensure_ascii=False, indent=2)
