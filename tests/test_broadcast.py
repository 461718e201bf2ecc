"""BROADCAST and HISTORY (issue 10) against a real server process, with its
history in a real SQLite file in a temporary directory."""

import os
import selectors
import subprocess
import sys
import time

import pytest

import chat_protocol as protocol
from support import (SERVER, Peer, ServerProcess, fill, needs_console_events,
                     wait_for)

# What "[History] YYYY-MM-DD HH:MM " adds to a delivered broadcast.
HISTORY_PREFIX_LENGTH = 27


def minutes_around(action):
    """Run action(); return the local times (to the minute) it may have
    happened in."""
    before = time.time()
    action()
    after = time.time()
    return {time.strftime("%Y-%m-%d %H:%M", time.localtime(moment))
            for moment in (before, after)}


def broadcast_all(sender, messages):
    """Broadcast every message in one packet, and wait until the server
    has handled them (it answers in order)."""
    sender.send_raw(b"".join(protocol.encode(f"BROADCAST {message}")
                             for message in messages))
    assert sender.request("GET_NAMES")


def history(client, argument=""):
    """The [History] lines a HISTORY command returns (one request, then
    every frame that follows before a GET_NAMES answer)."""
    client.send_raw(protocol.encode(f"HISTORY {argument}".strip())
                    + protocol.encode("HELP EXIT"))
    lines = []
    while True:
        line = client.receive()
        if line == protocol.help_lines(["EXIT"])[0]:
            return lines
        lines.append(line)


# ------------------------------------------------------------- BROADCAST

def test_broadcast_reaches_every_other_client_with_a_name(connect):
    a, b, c = (connect().name(name) for name in "ABC")
    anonymous = connect()
    a.send("BROADCAST hello  everyone ")
    assert b.receive() == "A sent to everyone: hello  everyone "
    assert c.receive() == "A sent to everyone: hello  everyone "
    a.expect_silence()
    anonymous.expect_silence()


@pytest.mark.parametrize("message", ["שלום לכולם", "🎉 party 👩‍👩‍👧",
                                     "ERROR: not an error"])
def test_broadcast_and_history_keep_the_text_exactly(connect, message):
    a, b = connect().name("אבי"), connect().name("B")
    minutes = minutes_around(lambda: a.send(f"BROADCAST {message}"))
    assert b.receive() == f"אבי sent to everyone: {message}"
    [line] = history(b)
    assert line in {f"[History] {minute} אבי sent to everyone: {message}"
                    for minute in minutes}


@pytest.mark.parametrize("command, error", [
    ("BROADCAST", "ERROR: missing message; usage: BROADCAST <message>"),
    ("BROADCAST    ", "ERROR: missing message; usage: BROADCAST <message>"),
    ("broadcast hi", "ERROR: set your name first with NAME <name>"),
])
def test_broadcast_errors(connect, command, error):
    connect().name("Listener")
    client = connect()
    assert client.request(command) == error


def test_the_longest_broadcast_and_one_byte_more(connect):
    """The limit leaves room for the history line, which must fit one
    frame too."""
    sender, receiver = connect().name("S" * 20), connect().name("R")
    prefix = "S" * 20 + " sent to everyone: "
    room = protocol.MAX_MSG_LENGTH - HISTORY_PREFIX_LENGTH - len(prefix)
    message = "ש" * (room // 2) + "x" * (room % 2)
    sender.send(f"BROADCAST {message}")
    assert receiver.receive() == prefix + message
    [line] = history(receiver)
    assert len(line.encode()) == protocol.MAX_MSG_LENGTH
    assert sender.request(f"BROADCAST {message}x") == (
        f"ERROR: too long: your broadcasts may be at most {room} bytes")
    receiver.expect_silence()


def test_help_lists_broadcast_and_history(connect):
    client = connect()
    assert client.request("HELP BROADCAST") == (
        protocol.help_lines(["BROADCAST"])[0])
    assert client.request("help history") == (
        protocol.help_lines(["HISTORY"])[0])


# --------------------------------------------------------------- HISTORY

@pytest.mark.parametrize("stored", [0, 1, 20, 150])
def test_history_gives_the_last_broadcasts_oldest_first(connect, stored):
    sender, reader = connect().name("A"), connect().name("R")
    messages = [f"m{number}" for number in range(stored)]
    if messages:
        broadcast_all(sender, messages)

    def texts(lines):
        return [line.split(" sent to everyone: ")[1] for line in lines]

    if stored == 0:
        assert history(reader) == ["[History] no broadcasts yet"]
    else:
        for message in messages:
            assert reader.receive() == f"A sent to everyone: {message}"
        assert texts(history(reader)) == messages[-20:]
        assert texts(history(reader, "1")) == messages[-1:]
        assert texts(history(reader, "100")) == messages[-100:]


@pytest.mark.parametrize("argument", ["0", "101", "-1", "x", "1 2", "٣"])
def test_history_refuses_a_bad_count(connect, argument):
    assert connect().request(f"HISTORY {argument}") == (
        "ERROR: usage: HISTORY [n], where n is 1 to 100")


def test_a_client_taking_a_name_receives_no_history_it_did_not_ask_for(
        connect):
    sender = connect().name("A")
    broadcast_all(sender, ["before you came"])
    newcomer = connect()
    assert newcomer.request("NAME New") == "Hello New"
    newcomer.expect_silence(0.5)


def test_private_messages_are_never_stored(connect):
    a, b = connect().name("A"), connect().name("B")
    a.send("MSG B a secret")
    assert b.receive() == "A sent a secret"
    assert history(b) == ["[History] no broadcasts yet"]


@needs_console_events
def test_history_survives_a_restart(start_server, tmp_path):
    path = str(tmp_path / "kept.sqlite3")
    first = start_server("--history", path)
    sender = Peer(first.port).name("A")
    broadcast_all(sender, ["one", "two", "three"])
    sender.close()
    assert first.stop() == 0
    second = start_server("--history", path)
    reader = Peer(second.port)
    assert [line.split(": ", 1)[1] for line in history(reader)] == [
        "one", "two", "three"]
    reader.close()
    assert f"history: {path}; the last 10000 broadcasts are kept" in (
        second.log())


def test_the_history_limit_keeps_the_newest(start_server):
    server = start_server("--history-limit", "5")
    sender = Peer(server.port).name("A")
    messages = [f"m{number}" for number in range(12)]
    for number in range(0, 12, 3):
        broadcast_all(sender, messages[number:number + 3])
    assert [line.split(": ", 1)[1] for line in history(sender, "100")] == (
        messages[-5:])
    sender.close()


def test_no_history(start_server):
    server = start_server("--no-history")
    client = Peer(server.port).name("A")
    broadcast_all(client, ["not kept"])
    assert history(client) == ["SERVER: this server keeps no history"]
    client.close()
    assert "history: off" in server.log()
    assert os.listdir(server.directory) == ["server.log"]


def test_history_in_memory(start_server):
    server = start_server("--history", ":memory:")
    client = Peer(server.port).name("A")
    broadcast_all(client, ["kept while it runs"])
    assert [line.split(": ", 1)[1] for line in history(client)] == [
        "kept while it runs"]
    client.close()
    assert "history: in memory, until the server stops" in server.log()
    assert os.listdir(server.directory) == ["server.log"]


def test_the_default_history_file_is_in_the_working_directory(
        start_server):
    server = start_server()
    client = Peer(server.port).name("A")
    broadcast_all(client, ["kept"])
    client.close()
    path = os.path.join(server.directory, "chat_history.sqlite3")
    assert os.path.exists(path)
    assert f"history: {path}; the last 10000 broadcasts are kept" in (
        server.log())


def test_kill_9_loses_nothing_a_client_has_received(start_server, tmp_path):
    """A turn's broadcasts are committed before they are sent, so every
    broadcast a client received survives a kill -9."""
    path = str(tmp_path / "crash.sqlite3")
    server = start_server("--history", path)
    sender = Peer(server.port).name("A")
    receiver = Peer(server.port).name("R")
    messages = [f"m{number}" for number in range(40)]
    for message in messages:
        sender.send(f"BROADCAST {message}")
        assert receiver.receive() == f"A sent to everyone: {message}"
    server.process.kill()  # SIGKILL; TerminateProcess on Windows
    server.process.wait(10)
    sender.close()
    receiver.close()
    restarted = start_server("--history", path)
    reader = Peer(restarted.port)
    assert [line.split(": ", 1)[1] for line in history(reader, "100")] == (
        messages)
    reader.close()


# ------------------------------------------------------------------ faults

def start_failing(tmp_path, *arguments):
    """Run a server that must not start; return (status, stderr)."""
    result = subprocess.run(
        [sys.executable, SERVER, "--port", "0", *arguments], cwd=tmp_path,
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)
    return result.returncode, result.stderr


def test_a_file_that_is_not_sqlite_stops_the_start(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("my notes\n" * 200)
    assert start_failing(tmp_path, "--history", str(path)) == (
        1, f"chat_server: cannot open the history file {path}: it is not "
        "an SQLite database\n")
    assert path.read_text() == "my notes\n" * 200


def test_a_file_in_use_by_another_server_stops_the_start(
        start_server, tmp_path):
    path = str(tmp_path / "shared.sqlite3")
    start_server("--history", path)
    assert start_failing(tmp_path, "--history", path) == (
        1, f"chat_server: cannot open the history file {path}: it is in "
        "use by another program (another chat server?)\n")


def test_a_bad_file_is_no_matter_with_no_history(start_server, tmp_path):
    (tmp_path / "chat_history.sqlite3").write_text("not a database")
    server = start_server("--no-history")
    assert Peer(server.port).request("NAME A") == "Hello A"


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0,
                    reason="permissions do not stop root, nor anyone on "
                    "Windows; the history store's tests cover a read-only "
                    "file system")
def test_a_read_only_file_stops_the_start(tmp_path):
    path = tmp_path / "kept.sqlite3"
    server = ServerProcess("--history", str(path))
    server.stop()
    server.cleanup()
    os.chmod(path, 0o444)
    assert start_failing(tmp_path, "--history", str(path)) == (
        1, f"chat_server: cannot open the history file {path}: no "
        "permission to write to it\n")


def test_a_full_disk_stops_the_start(small_disk):
    filler = fill(small_disk)
    path = small_disk / "history.sqlite3"
    status, error = start_failing(small_disk, "--history", str(path))
    os.unlink(filler)
    assert (status, error) == (
        1, f"chat_server: cannot open the history file {path}: the disk is "
        "full\n")


def test_a_disk_that_fills_while_running_switches_history_off(
        start_server, small_disk):
    path = small_disk / "history.sqlite3"
    server = start_server("--history", str(path))
    sender, reader = Peer(server.port).name("A"), Peer(server.port).name("R")
    broadcast_all(sender, ["kept"])
    assert reader.receive() == "A sent to everyone: kept"
    filler = fill(small_disk)
    try:
        big = "b" * 9000
        for number in range(20):
            sender.send(f"BROADCAST {big}{number}")
            assert reader.receive() == f"A sent to everyone: {big}{number}"
        assert wait_for(lambda: "history switched off" in server.log())
        # The chat goes on; history says it is off, once asked.
        sender.send("MSG R still here")
        assert reader.receive() == "A sent still here"
        assert history(reader) == [
            "SERVER: history is off after an error with its file"]
        log = server.log()
        assert log.count("history switched off") == 1
        assert (f"history switched off: cannot write to the history file "
                f"{path}: the disk is full") in log
    finally:
        sender.close()
        reader.close()
        server.stop()
        os.unlink(filler)


# ------------------------------------------- many clients, one not reading

def test_100_clients_broadcasting_while_one_stops_reading(start_server):
    """Each reader gets every broadcast of the others, while the one that
    stopped reading is dropped at its outbox limit."""
    server = start_server("--max-outbox", "300000")
    stuck = Peer(server.port).name("Stuck")
    clients = [Peer(server.port).name(f"c{number}") for number in range(99)]
    message = "x" * 3000
    rounds = 3
    selector = selectors.DefaultSelector()
    received = {}
    for client in clients:
        selector.register(client.sock, selectors.EVENT_READ, client)
        received[client] = (protocol.FrameDecoder(), [])

    def read(timeout):
        for key, _ in selector.select(timeout):
            decoder, frames = received[key.data]
            frames += decoder.feed(key.data.sock.recv(1 << 20))

    try:
        for _ in range(rounds):
            for client in clients:
                client.send(f"BROADCAST {message}")
                read(0)
        expected = rounds * (len(clients) - 1)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(
                len(frames) >= expected for _, frames in received.values()):
            read(0.5)
        for client, (_, frames) in received.items():
            assert len(frames) == expected
            assert all(frame.endswith(b" sent to everyone: "
                                      + message.encode())
                       for frame in frames)
        # Broadcasts alone fit in the kernel's buffers; a flood of private
        # messages takes the one that stopped reading over its limit.
        flooder = clients[0]
        flood = protocol.encode("MSG Stuck " + "f" * 9000)
        for number in range(2000):
            flooder.send_raw(flood)
            if number % 50 == 49 and "Stuck" not in (
                    flooder.request("GET_NAMES").split()):
                break
        stuck.drain_until_closed()
        assert wait_for(lambda: "(Stuck) not reading" in server.log())
        clients[1].send("BROADCAST after")
        frames = received[clients[2]][1]
        assert wait_for(lambda: read(0.1) or frames[-1:] == [
            b"c1 sent to everyone: after"])
    finally:
        selector.close()
        for client in clients:
            client.close()
        stuck.close()
