"""The server's history of broadcasts, in SQLite (a first cut: the store
with its fault handling, retention and tests replaces it)."""

import sqlite3


class HistoryError(Exception):
    """The history cannot be used; the message names the file and why."""


class HistoryStore:
    """Broadcasts kept in an SQLite file (or ":memory:")."""

    def __init__(self, path, limit=10000):
        self.path = path
        self.limit = limit
        try:
            self.db = sqlite3.connect(path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS broadcasts (id "
                            "INTEGER PRIMARY KEY, sent_at REAL, sender "
                            "TEXT, message TEXT)")
            self.db.execute("BEGIN")
        except sqlite3.Error as error:
            raise HistoryError(f"{path}: {error}")

    def describe(self):
        return self.path

    def add(self, sender, message, when):
        self.db.execute("INSERT INTO broadcasts (sent_at, sender, message) "
                        "VALUES (?, ?, ?)", (when, sender, message))

    def commit(self):
        self.db.execute("COMMIT")
        self.db.execute("BEGIN")

    def last(self, count):
        rows = self.db.execute(
            "SELECT sent_at, sender, message FROM broadcasts "
            "ORDER BY id DESC LIMIT ?", (count,)).fetchall()
        return rows[::-1]

    def close(self):
        self.db.close()
