"""The history store against real SQLite files in a temporary directory:
round trips of hostile text, retention, every fault at opening and while
running (a real full disk, a real read-only file system, a real second
process), and a real process killed with SIGKILL."""

import os
import sqlite3
import subprocess
import sys
import time

import pytest

import chat_protocol as protocol
from chat_history import (FILE_CHECK_SECONDS, TRIM_BATCH, Broadcast,
                          HistoryError, HistoryStore)
from support import ROOT, TIMEOUT, fill, mount_tmpfs, run, unmount

HOSTILE_TEXTS = [
    "it's \"quoted\" `twice`",
    "'); DROP TABLE broadcasts; --",
    "x' OR '1'='1",
    "nul\0inside",
    "? ?1 :name @name $name %s {}",
    "line one\nline two\r\n",
    "שלום לכולם, מה נשמע?",
    "emoji 😀👍🏽 and a family 👨‍👩‍👧",
    "x" * 9000,
    # The length limit of a frame, in bytes of UTF-8: 2,499 emoji and 3.
    "😀" * 2499 + "end",
]
# Like the server, the writer process below opens the store, adds and
# commits in turns; it reports each committed turn on standard output.
WRITER = """
import sys
import chat_history
store = chat_history.HistoryStore(sys.argv[1], limit=10 ** 9)
print("open", flush=True)
if sys.argv[2] == "hold":
    sys.stdin.read()
else:
    turn = 0
    while True:
        turn += 1
        for row in range(10):
            store.add("writer", f"turn {turn} row {row}", sent_at=turn)
        store.commit()
        print(turn, flush=True)
store.close()
"""

posix_only = pytest.mark.skipif(
    sys.platform == "win32", reason="Windows refuses to delete open files")


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "chat_history.sqlite3")


def read_file(path):
    """The rows of a closed history file, read with plain sqlite3 after
    checking that the file is sound."""
    database = sqlite3.connect(path)
    try:
        assert database.execute("PRAGMA integrity_check").fetchall() == [
            ("ok",)]
        return database.execute("SELECT sent_at, sender, message "
                                "FROM broadcasts ORDER BY id").fetchall()
    finally:
        database.close()


def store_with(path, messages, limit=10000, sent_at=1700000000):
    """Open a store, add ``messages`` from A in one turn, commit."""
    store = HistoryStore(path, limit=limit)
    for message in messages:
        store.add("A", message, sent_at=sent_at)
    store.commit()
    return store


def open_error(path, **keywords):
    """The text of the HistoryError that opening ``path`` raises."""
    with pytest.raises(HistoryError) as error:
        HistoryStore(path, **keywords)
    return str(error.value)


def file_bytes(path):
    with open(path, "rb") as file:
        return file.read()


# ---------------------------------------------------------------- real files


@pytest.fixture
def read_only_folder(tmp_path):
    """(folder, causes): a folder that cannot be written, holding a history
    file kept.sqlite3 with one broadcast; ``causes`` are what opening that
    file, and a new file in the folder, must say.  As root, permissions do
    not stop writes: then the folder is a tmpfs remounted read-only."""
    if sys.platform == "win32":
        pytest.skip("a read-only folder does not stop writes on Windows")
    folder = tmp_path / "read-only"
    folder.mkdir()
    as_root = os.geteuid() == 0
    if as_root:
        mount_tmpfs(folder)
    kept = str(folder / "kept.sqlite3")
    try:
        store_with(kept, ["kept"]).close()
        if as_root:
            result = run("mount", "-o", "remount,ro", str(folder))
            assert result.returncode == 0, result.stderr
            causes = ("it is on a read-only file system",) * 2
        else:
            os.chmod(kept, 0o444)
            os.chmod(folder, 0o555)
            causes = ("no permission to write to it",
                      "no permission to create files in its folder")
        yield folder, causes
    finally:
        if as_root:
            unmount(folder)
        else:
            os.chmod(folder, 0o755)


def start_writer(path, mode):
    """The WRITER script in a process of its own, once it has opened
    ``path``; ``mode`` "hold" keeps the store open until its standard input
    closes, "write" commits turns until it is killed."""
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, path, mode], cwd=ROOT,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    if process.stdout.readline() != "open\n":
        process.kill()
        _, errors = process.communicate(timeout=TIMEOUT)
        raise AssertionError(f"the writer did not start:\n{errors}")
    return process


# ---------------------------------------------------------------- round trip


def test_round_trip_keeps_every_text_exactly(path):
    store = HistoryStore(path)
    store.add("A'); DROP TABLE broadcasts; --", "from a hostile sender",
              sent_at=1700000000)
    for second, text in enumerate(HOSTILE_TEXTS, 1700000001):
        store.add("שרה", text, sent_at=second)
    expected = [Broadcast(1700000000, "A'); DROP TABLE broadcasts; --",
                          "from a hostile sender")] + [
        Broadcast(second, "שרה", text)
        for second, text in enumerate(HOSTILE_TEXTS, 1700000001)]
    assert len(HOSTILE_TEXTS[-1].encode()) == protocol.MAX_MSG_LENGTH
    assert store.last(100) == expected  # before the commit
    store.commit()
    assert store.last(100) == expected
    store.close()
    with HistoryStore(path) as store:
        assert store.last(100) == expected
    assert read_file(path) == [tuple(broadcast) for broadcast in expected]
    database = sqlite3.connect(path)
    tables = database.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    database.close()
    assert tables == [("broadcasts",)]


def test_add_refuses_a_lone_surrogate_and_keeps_the_rest(path):
    with HistoryStore(path) as store:
        store.add("A", "before", sent_at=1)
        with pytest.raises(UnicodeEncodeError):
            store.add("A", "half an emoji \ud83d", sent_at=2)
        with pytest.raises(UnicodeEncodeError):
            store.add("\udcff", "from a bad name", sent_at=3)
        store.add("A", "after", sent_at=4)
        assert len(store) == 2
        store.commit()
    assert read_file(path) == [(1, "A", "before"), (4, "A", "after")]


def test_time_is_stored_as_whole_unix_seconds(path):
    before = int(time.time())
    with HistoryStore(path) as store:
        store.add("A", "now")
        store.add("A", "given", sent_at=1700000000.99)
    after = int(time.time())
    (now, _, _), given = read_file(path)
    assert before <= now <= after
    assert given == (1700000000, "A", "given")


@pytest.mark.skipif(not hasattr(time, "tzset"),
                    reason="time.tzset() is Unix only")
def test_local_time_is_shown_in_the_servers_time_zone(monkeypatch):
    broadcast = Broadcast(1700000000, "A", "hi")  # 2023-11-14 22:13:20 UTC
    try:
        monkeypatch.setenv("TZ", "UTC0")
        time.tzset()
        assert broadcast.local_time == "2023-11-14 22:13"
        monkeypatch.setenv("TZ", "EAST-3")  # three hours ahead of UTC
        time.tzset()
        assert broadcast.local_time == "2023-11-15 01:13"
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize("stored", [0, 1, 20, 150])
def test_last_gives_the_newest_oldest_first(path, stored):
    messages = [f"message {number}" for number in range(stored)]
    with store_with(path, messages) as store:
        for n in (1, 20, 100):
            assert store.last(n) == [Broadcast(1700000000, "A", message)
                                     for message in messages[-n:]]
        assert store.last(0) == []
        assert store.last(-1) == []
        assert len(store) == stored


def test_last_merges_what_is_not_committed_yet(path):
    with store_with(path, ["one", "two"]) as store:
        store.add("B", "three", sent_at=5)
        assert [b.message for b in store.last(2)] == ["two", "three"]
        assert [b.message for b in store.last(1)] == ["three"]
        assert len(store) == 3


# ----------------------------------------------------------------- retention


def test_retention_reaches_the_limit_over_several_commits(path):
    store = HistoryStore(path, limit=50)
    lengths = []
    for turn in range(12):
        for row in range(7):
            store.add("A", f"{turn * 7 + row}", sent_at=turn)
        store.commit()
        lengths.append(len(store))
    # Up to the limit nothing is deleted; past it, one batch takes the
    # history a tenth of the limit (here 5) below it.
    assert lengths == [7, 14, 21, 28, 35, 42, 49, 45, 45, 45, 45, 45]
    newest = [str(number) for number in range(84 - 45, 84)]
    assert [b.message for b in store.last(100)] == newest
    store.close()
    assert [message for _, _, message in read_file(path)] == newest


def test_a_lowered_limit_is_reached_in_bounded_batches(path):
    store_with(path, [f"{number}" for number in range(300)]).close()
    store = HistoryStore(path, limit=50)
    assert len(store) == 300
    lengths = []
    for number in range(300, 304):
        store.add("A", f"{number}", sent_at=1)
        store.commit()
        lengths.append(len(store))
        # Never more than the limit is shown, even before the trim is done.
        shown = min(len(store), 50)
        assert [b.message for b in store.last(100)] == [
            f"{n}" for n in range(number + 1 - shown, number + 1)]
    # Each commit deletes at most TRIM_BATCH rows more than it adds.
    assert TRIM_BATCH == 100
    assert lengths == [200, 100, 45, 46]
    store.close()
    assert [int(m) for _, _, m in read_file(path)] == list(range(258, 304))


def test_the_limit_must_be_positive(path):
    with pytest.raises(ValueError):
        HistoryStore(path, limit=0)
    assert not os.path.exists(path)


# ----------------------------------------------------------- files and memory


def test_memory_store_writes_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with store_with(":memory:", ["שלום", "😀"]) as store:
        assert [b.message for b in store.last(20)] == ["שלום", "😀"]
    with HistoryStore(":memory:") as store:
        assert store.last(20) == []
    assert os.listdir(tmp_path) == []


def test_the_default_file_is_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with HistoryStore() as store:
        store.add("A", "hi", sent_at=7)
        store.commit()
        assert sorted(os.listdir(tmp_path)) == [
            "chat_history.sqlite3", "chat_history.sqlite3-wal"]
    # A clean close folds the write-ahead log into the file.
    assert os.listdir(tmp_path) == ["chat_history.sqlite3"]
    assert read_file("chat_history.sqlite3") == [(7, "A", "hi")]


def test_history_survives_reopening(path):
    store_with(path, ["first", "second"]).close()
    with HistoryStore(path) as store:
        assert [b.message for b in store.last(20)] == ["first", "second"]
        store.add("B", "third", sent_at=9)
    # close() committed the last add.
    with HistoryStore(path) as store:
        assert [(b.sender, b.message) for b in store.last(20)] == [
            ("A", "first"), ("A", "second"), ("B", "third")]


def test_a_closed_store_says_so(path):
    store = store_with(path, ["x"])
    store.close()
    store.close()  # harmless
    store.add("A", "late", sent_at=2)
    with pytest.raises(HistoryError) as error:
        store.commit()
    assert str(error.value) == (
        f"cannot write to the history file {path}: the history is closed")
    with pytest.raises(HistoryError) as error:
        store.last(1)
    assert str(error.value) == (
        f"cannot read the history file {path}: the history is closed")
    assert read_file(path) == [(1700000000, "A", "x")]


# ------------------------------------------------------- faults at opening


def test_a_file_that_is_not_sqlite_is_refused_untouched(path):
    text = b"the notes of the lesson, not a database\n" * 100
    with open(path, "wb") as file:
        file.write(text)
    assert open_error(path) == (f"cannot open the history file {path}: "
                                "it is not an SQLite database")
    assert file_bytes(path) == text
    assert not os.path.exists(path + "-wal")


@pytest.mark.parametrize("table", [
    "CREATE TABLE notes (id INTEGER PRIMARY KEY, note TEXT)",
    "CREATE TABLE broadcasts (id INTEGER PRIMARY KEY, text TEXT)",
])
def test_another_programs_database_is_refused_untouched(path, table):
    database = sqlite3.connect(path)
    database.execute(table)
    database.commit()
    database.close()
    before = file_bytes(path)
    assert open_error(path) == (
        f"cannot open the history file {path}: it is another program's "
        "database, not a chat history")
    assert file_bytes(path) == before


def test_a_history_of_another_version_is_refused(path):
    store_with(path, ["x"]).close()
    database = sqlite3.connect(path)
    database.execute("PRAGMA user_version = 2")
    database.close()
    assert open_error(path) == (
        f"cannot open the history file {path}: its tables are not those of "
        "chat history version 1")


def test_a_directory_or_a_missing_folder_is_refused(tmp_path):
    assert open_error(str(tmp_path)) == (
        f"cannot open the history file {tmp_path}: it is a directory")
    missing = str(tmp_path / "no such folder" / "chat_history.sqlite3")
    assert open_error(missing) == (
        f"cannot open the history file {missing}: its folder does not exist")


def test_a_file_in_use_in_this_process_is_refused(path):
    with store_with(path, ["mine"]) as first:
        assert open_error(path) == (
            f"cannot open the history file {path}: it is in use by another "
            "program (another chat server?)")
        # The refusal did not disturb the store that holds the file.
        first.add("A", "still mine", sent_at=2)
        first.commit()
    assert [m for _, _, m in read_file(path)] == ["mine", "still mine"]


def test_a_file_in_use_by_another_process_is_refused(path):
    holder = start_writer(path, "hold")
    try:
        assert open_error(path) == (
            f"cannot open the history file {path}: it is in use by another "
            "program (another chat server?)")
    finally:
        holder.stdin.close()
        holder.wait(TIMEOUT)
        holder.stdout.close()
        holder.stderr.close()
    assert holder.returncode == 0
    HistoryStore(path).close()  # free once the other one closed it


def test_a_read_only_file_or_folder_is_refused(read_only_folder):
    folder, (file_cause, folder_cause) = read_only_folder
    kept = str(folder / "kept.sqlite3")
    assert open_error(kept) == (
        f"cannot open the history file {kept}: {file_cause}")
    new = str(folder / "new.sqlite3")
    assert open_error(new) == (
        f"cannot open the history file {new}: {folder_cause}")
    assert sorted(os.listdir(folder)) == ["kept.sqlite3"]


def test_a_full_disk_is_refused_at_opening(small_disk):
    kept = str(small_disk / "kept.sqlite3")
    store_with(kept, ["kept"]).close()
    filler = fill(small_disk)
    assert open_error(kept) == (
        f"cannot open the history file {kept}: the disk is full")
    new = str(small_disk / "new.sqlite3")
    assert open_error(new) == (
        f"cannot open the history file {new}: the disk is full")
    os.remove(filler)
    assert read_file(kept) == [(1700000000, "A", "kept")]


# ------------------------------------------------------ faults while running


def test_a_disk_that_fills_up_is_an_error_and_drops_that_turn(small_disk):
    path = str(small_disk / "chat_history.sqlite3")
    store = store_with(path, ["before"])
    filler = fill(small_disk)
    store.add("A", "x" * 9000, sent_at=2)
    with pytest.raises(HistoryError) as error:
        store.commit()
    assert str(error.value) == (
        f"cannot write to the history file {path}: the disk is full")
    # The failed turn is dropped, and nothing is left half done: once
    # there is room again, the store works.
    assert len(store) == 1
    os.remove(filler)
    store.add("A", "after", sent_at=3)
    store.commit()
    store.close()
    with HistoryStore(path) as store:
        assert [b.message for b in store.last(20)] == ["before", "after"]
    assert read_file(path) == [(1700000000, "A", "before"), (3, "A", "after")]


def test_close_works_after_a_disk_full_error(small_disk):
    path = str(small_disk / "chat_history.sqlite3")
    store = store_with(path, ["before"])
    fill(small_disk)
    store.add("A", "x" * 9000, sent_at=2)
    with pytest.raises(HistoryError):
        store.commit()
    store.close()  # and the small_disk fixture checks nothing is left open


@posix_only
def test_a_deleted_file_is_noticed_within_a_second(path):
    store = store_with(path, ["before"])
    os.remove(path)
    deadline = time.monotonic() + FILE_CHECK_SECONDS + TIMEOUT
    with pytest.raises(HistoryError) as error:
        while time.monotonic() < deadline:
            store.add("A", "into the void", sent_at=2)
            store.commit()
            time.sleep(0.01)
    assert str(error.value) == (
        f"cannot write to the history file {path}: it was deleted")
    assert time.monotonic() < deadline
    store.close()
    # Its write-ahead log is not left for a new file of that name.
    assert os.listdir(os.path.dirname(path)) == []


@posix_only
def test_a_replaced_file_is_noticed_at_the_first_commit(path):
    store = HistoryStore(path)
    store_with(path + ".other", ["another history"]).close()
    os.replace(path + ".other", path)
    store.add("A", "into the void", sent_at=2)
    with pytest.raises(HistoryError) as error:
        store.commit()
    assert str(error.value) == (
        f"cannot write to the history file {path}: it was replaced by "
        "another file")
    store.close()
    # The store's write-ahead log was not applied to the new file.
    assert os.listdir(os.path.dirname(path)) == ["chat_history.sqlite3"]
    assert read_file(path) == [(1700000000, "A", "another history")]


def test_kill_9_loses_at_most_the_last_turn(path):
    writer = start_writer(path, "write")
    try:
        reported = 0
        while reported < 300:
            line = writer.stdout.readline()
            assert line, writer.stderr.read()
            reported = int(line)
    finally:
        writer.kill()  # SIGKILL; TerminateProcess on Windows
        writer.wait(TIMEOUT)
    # Read through the file objects, whose buffers may already hold some of
    # the lines (communicate() would read past them).
    with writer.stdout, writer.stderr, writer.stdin:
        rest, errors = writer.stdout.read(), writer.stderr.read()
    # Only whole lines were reported; a cut one is not a committed turn.
    complete = rest.split("\n")[:-1]
    if complete:
        reported = int(complete[-1])
    assert errors == ""
    # Killed, not closed: the write-ahead log was not folded in.
    assert os.path.exists(path + "-wal")
    with HistoryStore(path) as store:
        newest = store.last(1)
        store.add("A", "after the crash", sent_at=0)
    turns = newest[0].sent_at
    # Every reported turn is there, whole; at most one more committed turn
    # was not reported yet; a turn being added when killed is lost whole.
    assert turns in (reported, reported + 1)
    assert read_file(path) == [
        (turn, "writer", f"turn {turn} row {row}")
        for turn in range(1, turns + 1) for row in range(10)] + [
        (0, "A", "after the crash")]
