"""The history of broadcasts, kept in an SQLite database for the server.

    history = HistoryStore("chat_history.sqlite3")   # or ":memory:"
    history.add(sender, message)        # for each broadcast of a loop turn
    history.commit()                    # once, at the end of the loop turn
    for broadcast in history.last(20):  # oldest first
        ... broadcast.local_time, broadcast.sender, broadcast.message
    history.close()

add() only remembers the broadcast; commit() writes all of a turn's
broadcasts in one transaction, so the loop pays for one write per turn, not
one per message.  The file is in WAL mode with synchronous=NORMAL: a commit
is an append to the write-ahead log without waiting for the disk, and a
crash of the process (kill -9) loses at most what was added since the last
commit.  The store keeps the file locked for as long as it is open, so a
second server cannot use the same file.

Every failure, at opening or later, is a HistoryError whose text is one
line naming the file and the cause.
"""

import errno
import os
import sqlite3
import time
import typing

import chat_protocol as protocol

DEFAULT_PATH = "chat_history.sqlite3"
MEMORY = ":memory:"
DEFAULT_LIMIT = 10000
# Old rows are deleted in batches: when a commit takes the history over its
# limit, it deletes down to TRIM_BATCH (or a tenth of the limit, if less)
# below the limit, so a delete runs about once per TRIM_BATCH broadcasts
# rather than at every commit; and it deletes at most TRIM_BATCH more rows
# than it added, so that lowering the limit never stalls one loop turn.
TRIM_BATCH = 100
TIME_FORMAT = "%Y-%m-%d %H:%M"
# How often commit() checks that the file is still there: a stat() at every
# commit would cost a busy loop more than the check is worth.
FILE_CHECK_SECONDS = 1.0
# One INSERT of many rows costs less per row than an INSERT per row (a
# third less for a turn of 100 broadcasts): a turn's rows go in by
# statements of INSERT_CHUNK rows, and the rest one at a time.
INSERT_CHUNK = 16
# Written into the file's header ("chat" in ASCII) so that another
# program's database is never taken for a chat history.
APPLICATION_ID = 0x63686174
SCHEMA_VERSION = 1

_CREATE_TABLE = """
    CREATE TABLE broadcasts (
        id INTEGER PRIMARY KEY,
        sent_at INTEGER NOT NULL,  -- Unix time in whole seconds (UTC)
        sender TEXT NOT NULL,
        message TEXT NOT NULL
    )"""
_COLUMNS = ["id", "sent_at", "sender", "message"]
_INSERT = "INSERT INTO broadcasts (sent_at, sender, message) VALUES "
_INSERT_ONE = _INSERT + "(?, ?, ?)"
_INSERT_CHUNK = _INSERT + ", ".join(["(?, ?, ?)"] * INSERT_CHUNK)
_DELETE_OLDEST = ("DELETE FROM broadcasts WHERE id IN "
                  "(SELECT id FROM broadcasts ORDER BY id LIMIT ?)")
_SELECT_NEWEST = ("SELECT sent_at, sender, message FROM broadcasts "
                  "ORDER BY id DESC LIMIT ?")

# SQLite's error texts (the same in every version) and what they mean.
_SQLITE_CAUSES = {
    "file is not a database": "it is not an SQLite database",
    "database is locked":
        "it is in use by another program (another chat server?)",
    "database or disk is full": "the disk is full",
    "database disk image is malformed": "the database in it is damaged",
    "attempt to write a readonly database": "it is read-only",
    # Python's own, for a store used after close().
    "Cannot operate on a closed database.": "the history is closed",
}
_OS_CAUSES = {
    errno.ENOENT: "its folder does not exist",
    errno.EISDIR: "it is a directory",
    errno.EROFS: "it is on a read-only file system",
    errno.EACCES: "no permission to write to it",
    errno.EPERM: "no permission to write to it",
    errno.ENOSPC: "the disk is full",
}


class HistoryError(Exception):
    """The history cannot be used; the text is one line that names the
    file and the cause."""


class Broadcast(typing.NamedTuple):
    """One stored broadcast."""

    sent_at: int  # Unix time in whole seconds
    sender: str
    message: str

    @property
    def local_time(self):
        """When it was sent, as YYYY-MM-DD HH:MM in the local time zone."""
        return time.strftime(TIME_FORMAT, time.localtime(self.sent_at))


class HistoryStore:
    """The broadcasts of the chat, at most ``limit`` of them, in the SQLite
    database at ``path`` (created if absent) or in memory (":memory:").

    Opening raises HistoryError if the file cannot be used: not an SQLite
    database, another program's database, read-only, in use by another
    server, or on a full disk.  Later, commit() and last() raise
    HistoryError on any database or disk error; close() is safe after one.
    """

    def __init__(self, path=DEFAULT_PATH, limit=DEFAULT_LIMIT):
        if limit < 1:
            raise ValueError(f"the history limit must be at least 1, "
                             f"not {limit}")
        self.path = os.fspath(path)
        self.limit = limit
        self._trim_to = limit - min(TRIM_BATCH, limit // 10)
        # Broadcasts added since the last commit, as rows.
        self._pending = []
        self._count = 0
        self._connection = None
        self._closed = False
        # The identities of the file and of its write-ahead log, to notice
        # the file being deleted or replaced (None in memory).
        self._file_id = self._wal_id = None
        self._next_file_check = 0.0  # time.monotonic(); 0: at next commit
        try:
            self._open()
        except HistoryError:
            self._close_connection()
            raise
        except (sqlite3.Error, OSError) as error:
            self._close_connection()
            raise HistoryError(self._message(
                "cannot open", error, diagnose=True)) from error

    def _open(self):
        # timeout=0: a file locked by another server fails at once.
        # isolation_level=None: transactions are begun here, explicitly.
        self._connection = database = sqlite3.connect(
            self.path, timeout=0, isolation_level=None)
        # In exclusive locking mode the first write locks the file until
        # close, and the WAL index lives in this process's memory rather
        # than in a shared "-shm" file.
        database.execute("PRAGMA locking_mode = EXCLUSIVE")
        # Checked before anything is written, so that another program's
        # database is left exactly as it was.
        is_new = self._check_schema(database)
        database.execute("PRAGMA journal_mode = WAL")
        database.execute("PRAGMA synchronous = NORMAL")
        database.execute("BEGIN IMMEDIATE")
        if is_new:
            database.execute(_CREATE_TABLE)
            # PRAGMA values cannot be bound; these are constants.
            database.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        # Rewritten at every start, so that a full disk is found now, not
        # at the first broadcast.
        database.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        database.execute("COMMIT")
        self._count = database.execute(
            "SELECT count(*) FROM broadcasts").fetchone()[0]
        if self.path not in (MEMORY, ""):
            self._file_id = _file_identity(self.path)
            self._wal_id = _file_identity(self.path + "-wal")

    def _check_schema(self, database):
        """Whether the database is empty; raise HistoryError if it is not
        one that this module made."""
        application_id = database.execute(
            "PRAGMA application_id").fetchone()[0]
        tables = database.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        if application_id == 0 and not tables:
            return True
        if application_id != APPLICATION_ID:
            raise HistoryError(self._message(
                "cannot open", cause="it is another program's database, "
                "not a chat history"))
        version = database.execute("PRAGMA user_version").fetchone()[0]
        columns = [row[1] for row in database.execute(
            "PRAGMA table_info(broadcasts)")]
        if version != SCHEMA_VERSION or columns != _COLUMNS:
            raise HistoryError(self._message(
                "cannot open", cause=f"its tables are not those of chat "
                f"history version {SCHEMA_VERSION}"))
        return False

    # ------------------------------------------------------------ writing

    def add(self, sender, message, sent_at=None):
        """Remember a broadcast sent at ``sent_at`` (Unix time; now if
        None); the next commit() stores it.

        Raises UnicodeEncodeError (a ValueError) for text with a lone
        surrogate, which UTF-8 cannot hold; nothing is added then.
        """
        if not (sender.isascii() and message.isascii()):
            # Refused here: at commit() it would fail the whole turn.
            sender.encode("utf-8")
            message.encode("utf-8")
        if sent_at is None:
            sent_at = time.time()
        self._pending.append((int(sent_at), sender, message))

    def commit(self):
        """Store the broadcasts added since the last commit in one
        transaction, and delete the oldest if that goes over the limit (see
        TRIM_BATCH).  Does nothing if nothing was added.

        Raises HistoryError if they cannot be stored; they are dropped.
        """
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        database = self._connection
        try:
            self._check_file()
            database.execute("BEGIN")
            self._insert(rows)
            count = self._count + len(rows)
            deleted = 0
            if count > self.limit:
                deleted = database.execute(_DELETE_OLDEST, (min(
                    count - self._trim_to, len(rows) + TRIM_BATCH),)).rowcount
            database.execute("COMMIT")
        except (sqlite3.Error, OSError) as error:
            self._roll_back()
            raise HistoryError(self._message(
                "cannot write to", error)) from error
        self._count += len(rows) - deleted

    def _insert(self, rows):
        chunked = len(rows) - len(rows) % INSERT_CHUNK
        if chunked:
            self._connection.executemany(_INSERT_CHUNK, (
                [value for row in rows[start:start + INSERT_CHUNK]
                 for value in row]
                for start in range(0, chunked, INSERT_CHUNK)))
        self._connection.executemany(_INSERT_ONE, rows[chunked:])

    def _check_file(self):
        """Raise HistoryError if the file was deleted or replaced (SQLite
        would go on writing to a file that no longer has a name); checked
        at most every FILE_CHECK_SECONDS."""
        if self._file_id is None:
            return
        now = time.monotonic()
        if now < self._next_file_check:
            return
        self._next_file_check = now + FILE_CHECK_SECONDS
        file_id = _file_identity(self.path)
        if file_id == self._file_id:
            return
        cause = ("it was deleted" if file_id is None
                 else "it was replaced by another file")
        raise HistoryError(self._message("cannot write to", cause=cause))

    def _roll_back(self):
        # After a failed write SQLite may or may not have rolled back.
        try:
            if self._connection.in_transaction:
                self._connection.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    # ------------------------------------------------------------ reading

    def last(self, n):
        """The last ``n`` broadcasts (at most ``limit``), oldest first, as
        Broadcast tuples; those added since the last commit included.

        Raises HistoryError if the database cannot be read.
        """
        n = min(n, self.limit)
        if n <= 0:
            return []
        newest = self._pending[-n:]
        wanted = n - len(newest)
        rows = []
        if wanted:
            try:
                rows = self._connection.execute(
                    _SELECT_NEWEST, (wanted,)).fetchall()
            except sqlite3.Error as error:
                raise HistoryError(self._message(
                    "cannot read", error)) from error
            rows.reverse()
        return [Broadcast(*row) for row in rows + newest]

    def __len__(self):
        """The number of broadcasts kept, those added since the last commit
        included."""
        return self._count + len(self._pending)

    # ------------------------------------------------------------ closing

    def close(self):
        """Commit what was added since the last commit, then close.  Safe
        to call twice, and after a HistoryError.

        Raises HistoryError if that last commit fails; the store is closed
        all the same.
        """
        if self._closed:
            return
        try:
            self.commit()
        finally:
            self._close_connection()

    def _close_connection(self):
        self._closed = True
        if self._connection is not None:
            try:
                self._connection.close()
            except sqlite3.Error:
                pass  # nothing more can be done about this file
            self._remove_orphaned_log()

    def _remove_orphaned_log(self):
        """If the file was deleted or replaced while open, SQLite leaves
        this store's write-ahead log behind, where it would be taken for
        the log of the next file of that name and overwrite its pages:
        remove it."""
        if self._file_id is None:
            return
        wal = self.path + "-wal"
        try:
            if (_file_identity(self.path) != self._file_id
                    and _file_identity(wal) == self._wal_id):
                os.remove(wal)
        except OSError:
            pass  # closing goes on; the file was gone from under it anyway

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        self.close()

    # ------------------------------------------------------------- errors

    def _message(self, action, error=None, cause=None, diagnose=False):
        """'<action> the history file <path>: <cause>', on one line.

        The cause is given, or found from ``error``; with ``diagnose`` (at
        opening only, once the database is closed) the file is tried with
        the operating system when SQLite's words say little.
        """
        if cause is None:
            if isinstance(error, OSError):
                cause = _os_cause(error)
            else:
                cause = _SQLITE_CAUSES.get(str(error))
                if diagnose and cause in (None, "it is read-only"):
                    cause = self._diagnose() or cause
                if cause is None:
                    cause = " ".join(str(error).split())
        path = self.path if self.path.isprintable() else repr(self.path)
        return f"{action} the history file {path}: {cause}"

    def _diagnose(self):
        """Why the operating system will not let SQLite write the file or
        create its write-ahead log beside it; None if it would."""
        if os.path.isdir(self.path):
            return _OS_CAUSES[errno.EISDIR]
        for name in (self.path, self.path + "-wal"):
            existed = os.path.exists(name)
            try:
                os.close(os.open(name, os.O_RDWR | os.O_CREAT))
            except OSError as error:
                if not existed and error.errno in (errno.EACCES,
                                                   errno.EPERM):
                    return "no permission to create files in its folder"
                return _os_cause(error)
            if not existed:
                os.remove(name)
        return None


def _file_identity(path):
    """What identifies the file at ``path`` on disk; None if there is
    none."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return status.st_dev, status.st_ino


def _os_cause(error):
    """An OSError met on the history file, in a few words."""
    return _OS_CAUSES.get(error.errno) or protocol.describe_error(error)
