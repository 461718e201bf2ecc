"""The server over real sockets: every command of SPEC section 2, the
example run of section 3, and the behaviour of section 5."""

import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

import chat_protocol as protocol
from support import SERVER, Peer, ServerProcess, wait_for

NAME_RULE = "a name is 1 to 20 letters, digits, '_' or '-'"


def test_example_run(connect):
    """SPEC section 3, frame by frame."""
    a = connect()
    assert a.request("NAME A") == "Hello A"
    b = connect()
    assert b.request("NAME B") == "Hello B"
    assert a.request("GET_NAMES") == "A B"
    assert b.request("EXIT") == "EXIT"
    b.expect_closed()
    assert a.request("GET_NAMES") == "A"
    b = connect()
    assert b.request("NAME B") == "Hello B"
    assert a.request("GET_NAMES") == "A B"
    a.send("MSG B HELLO")
    assert b.receive() == "A sent HELLO"
    b.send("MSG A HELLO")
    assert a.receive() == "B sent HELLO"
    assert b.request("EXIT") == "EXIT"
    b.expect_closed()
    assert a.request("EXIT") == "EXIT"
    a.expect_closed()


def test_name_replies_hello(connect):
    assert connect().request("NAME Alice") == "Hello Alice"


@pytest.mark.parametrize("command, reply", [
    ("NAME", "ERROR: missing name; usage: NAME <name>"),
    ("NAME   ", "ERROR: missing name; usage: NAME <name>"),
    ("NAME a b", f"ERROR: invalid name: {NAME_RULE}"),
    ("NAME " + "x" * 21,
     "ERROR: invalid name: a name is at most 20 characters"),
    ("NAME a:b", f"ERROR: invalid name: {NAME_RULE}"),
    ("NAME \x1b[2J", f"ERROR: invalid name: {NAME_RULE}"),
    ("GET_NAMES please", "ERROR: GET_NAMES takes nothing after it"),
    ("MSG", "ERROR: missing name or message; usage: MSG <name> <message>"),
    ("MSG A", "ERROR: missing name or message; usage: MSG <name> <message>"),
    ("MSG A ", "ERROR: missing name or message; usage: MSG <name> <message>"),
    ("HELLO", "ERROR: unknown command; HELP lists the commands"),
    ("NAMES A", "ERROR: unknown command; HELP lists the commands"),
    ("", "ERROR: empty command; HELP lists the commands"),
])
def test_errors(connect, command, reply):
    client = connect()
    assert client.request(command) == reply
    # The connection stays usable after every error.
    assert client.request("NAME Z") == "Hello Z"


def test_msg_before_name(connect):
    connect().name("B")
    assert connect().request("MSG B hi") == (
        "ERROR: set your name first with NAME <name>")


def test_msg_to_nobody(connect):
    client = connect().name("A")
    assert client.request("MSG C hi") == "ERROR: no client named 'C'"
    assert client.request("MSG no:such hi") == (
        "ERROR: no such client; a name is letters, digits, '_' or '-'")


def test_name_taken_regardless_of_case(connect):
    connect().name("Bob")
    other = connect()
    assert other.request("NAME Bob") == "ERROR: the name 'Bob' is taken"
    assert other.request("NAME bob") == "ERROR: the name 'bob' is taken"
    assert other.request("NAME BOB") == "ERROR: the name 'BOB' is taken"


def test_commands_ignore_case_and_msg_finds_any_case(connect):
    bob = connect()
    assert bob.request("name Bob") == "Hello Bob"
    sender = connect()
    assert sender.request("nAmE Al") == "Hello Al"
    sender.send("msg bob hi there")
    assert bob.receive() == "Al sent hi there"
    assert sender.request("get_names") == "Bob Al"


def test_msg_keeps_the_message_as_typed(connect):
    bob = connect().name("Bob")
    sender = connect().name("Al")
    for message in ["  two  leading", "inner   spaces  ", "שלום עולם 🎉",
                    "ERROR: not really", "tab\there"]:
        sender.send(f"MSG Bob {message}")
        assert bob.receive() == f"Al sent {message}"


def test_msg_to_oneself(connect):
    client = connect().name("Me")
    assert client.request("MSG me hello me") == "Me sent hello me"


def test_msg_success_sends_nothing_to_the_sender(connect):
    bob = connect().name("Bob")
    sender = connect().name("Al")
    sender.send("MSG Bob hi")
    assert bob.receive() == "Al sent hi"
    sender.expect_silence()


def test_get_names_in_the_order_set(connect):
    first = connect()
    assert first.request("GET_NAMES") == ""
    first.name("Zed")
    connect().name("amy")
    connect().name("Mo")
    assert first.request("GET_NAMES") == "Zed amy Mo"


def test_rename_frees_the_old_name_and_moves_to_the_end(connect):
    client = connect().name("A")
    connect().name("B")
    assert client.request("NAME C") == "Hello C"
    assert client.request("GET_NAMES") == "B C"
    assert connect().request("NAME A") == "Hello A"
    # Changing only the case of one's own name is allowed, in place.
    assert client.request("NAME c") == "Hello c"
    assert client.request("GET_NAMES") == "B c A"
    client.send("MSG C to myself")
    assert client.receive() == "c sent to myself"


@pytest.mark.parametrize("leave", ["exit", "close", "reset"])
def test_name_freed_when_its_client_leaves(connect, leave):
    watcher = connect().name("W")
    leaver = connect().name("Gone")
    if leave == "exit":
        assert leaver.request("EXIT") == "EXIT"
        leaver.expect_closed()
    elif leave == "close":
        leaver.close()
    else:
        leaver.reset()
    assert wait_for(lambda: watcher.request("GET_NAMES") == "W")
    assert connect().request("NAME Gone") == "Hello Gone"
    assert watcher.request("MSG W still here") == "W sent still here"


def test_get_names_split_between_names(connect):
    """Over 9999 bytes of names arrive as several frames, split only
    between names."""
    names = ["n%019d" % number for number in range(500)]
    asker = connect()
    for name in names:
        connect().name(name)
    asker.send("GET_NAMES")
    first = asker.receive()
    second = asker.receive()
    assert len(first.encode()) <= 9999
    assert (first + " " + second).split(" ") == names
    assert len(first) == 9999 - 9999 % 21 - 1


def test_longest_message_arrives_and_one_byte_more_is_refused(connect):
    receiver = connect().name("R")
    sender = connect().name("S" * 20)
    room = 9999 - len("S" * 20 + " sent ")
    sender.send("MSG R " + "m" * room)
    assert receiver.receive() == "S" * 20 + " sent " + "m" * room
    assert sender.request("MSG R " + "m" * (room + 1)) == (
        f"ERROR: too long: your messages may be at most {room} bytes")
    receiver.expect_silence()


def test_invalid_utf8_gets_an_error_and_the_connection_stays(connect):
    client = connect()
    client.send_raw(b"0009NAME \xff\xfeAB")
    assert client.receive() == "ERROR: the message is not valid UTF-8 text"
    assert client.request("NAME A") == "Hello A"


def test_bad_header_closes_only_that_connection(connect):
    witness = connect().name("W")
    bad = connect().name("Bad")
    bad.send_raw(b"abcdNAME X")
    assert bad.receive() == (
        "ERROR: bad length field b'abcd': not 2 or 4 digits")
    bad.expect_closed()
    assert witness.request("GET_NAMES") == "W"


def test_glued_commands_in_one_packet(connect):
    client = connect()
    client.send_raw(protocol.encode("NAME A") + protocol.encode("MSG A hi")
                    + protocol.encode("EXIT") + protocol.encode("EXIT"))
    assert client.receive() == "Hello A"
    assert client.receive() == "A sent hi"
    assert client.receive() == "EXIT"
    client.expect_closed()


def test_client_that_never_reads_does_not_delay_the_others(connect):
    stuck = connect().name("Stuck")
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    flooder = connect().name("Flood")
    talker = connect().name("Talk")
    listener = connect().name("Listen")
    message = "MSG Stuck " + "f" * 9000
    # About 600 KB: more than the socket buffers hold, less than the
    # outbox limit, so the server must queue it and carry on.
    for _ in range(64):
        flooder.send(message)
    # A server blocked on Stuck would never answer: receive() times out.
    for number in range(20):
        talker.send(f"MSG Listen {number}")
        assert listener.receive() == f"Talk sent {number}"
    assert flooder.request("GET_NAMES") == "Stuck Flood Talk Listen"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_notifies_every_client_and_exits_0(signum):
    server = ServerProcess()
    try:
        clients = [Peer(server.port) for _ in range(3)]
        clients[0].name("A")
        assert clients[1].request("GET_NAMES") == "A"
        assert server.stop(signum) == 0
        for client in clients:
            assert client.receive() == "SERVER: the server is shutting down"
            client.expect_closed()
            client.close()
        assert "Traceback" not in server.log()
    finally:
        server.cleanup()


def test_idle_server_uses_no_cpu(server, connect):
    for number in range(20):
        connect().name(f"idle{number}")
    process = psutil.Process(server.pid)
    before = process.cpu_times()
    time.sleep(2)
    after = process.cpu_times()
    used = (after.user + after.system) - (before.user + before.system)
    assert used < 0.1, f"{used:.2f} s of CPU in 2 s idle"


def test_port_in_use_is_one_line_not_a_traceback(server):
    result = subprocess.run(
        [sys.executable, SERVER, "--port", str(server.port)],
        capture_output=True, text=True, timeout=10)
    assert result.returncode == 1
    assert result.stderr == (
        f"chat_server: cannot listen on 127.0.0.1:{server.port}: "
        "address already in use\n")


def test_logs_connections_names_and_departures(server, connect):
    client = connect().name("Logged")
    assert client.request("EXIT") == "EXIT"
    assert wait_for(lambda: "(Logged) left" in server.log())
    log = server.log()
    assert " connected" in log
    assert "(Logged) named" in log


def test_verbose_logs_every_command():
    server = ServerProcess("-v")
    try:
        client = Peer(server.port)
        client.name("Chatty")
        assert client.request("GET_NAMES") == "Chatty"
        assert wait_for(lambda: "(Chatty): GET_NAMES" in server.log())
        assert ": NAME Chatty" in server.log()
        client.close()
    finally:
        server.cleanup()
