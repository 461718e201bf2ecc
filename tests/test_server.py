"""The server over real sockets: every command of SPEC section 2, the
example run of section 3, and the behaviour of section 5."""

import glob
import os
import re
import signal
import socket
import subprocess
import sys
import time
import unicodedata

import psutil
import pytest

import chat_protocol as protocol
from support import (ROOT, SERVER, TIMEOUT, Peer, ServerProcess,
                     needs_console_events, wait_for)

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
    # 480 names of 20 characters: 10080 bytes, and with the asker 481
    # clients, within the 500 a server on Windows takes.
    names = ["n%019d" % number for number in range(480)]
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


# What stops a server: Ctrl+C and SIGTERM; on Windows, Ctrl+Break (Ctrl+C
# cannot be sent to one process group there).
STOP_SIGNALS = ([signal.CTRL_BREAK_EVENT] if sys.platform == "win32"
                else [signal.SIGINT, signal.SIGTERM])


@needs_console_events
@pytest.mark.parametrize("signum", STOP_SIGNALS)
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


# ------------------------------------------------------ HELP (issue 8, 11)

def test_help_lists_every_command_from_the_table(connect):
    client = connect()
    client.send("HELP")
    assert [client.receive() for _ in protocol.COMMANDS] == (
        protocol.help_lines())
    assert client.request("help msg") == (
        "MSG <name> <message>  send <message> to <name> only")
    assert client.request("HELP NOPE") == (
        "ERROR: no such command; HELP lists the commands")


def test_help_matches_the_server_handlers():
    """HELP is built from the server's command table: a command the
    server handles is in the protocol's list, and nothing else is."""
    import chat_server
    server = chat_server.ChatServer(port=0, log=chat_server.EventLog(
        open(os.devnull, "w")))
    try:
        assert list(server.handlers) == list(protocol.COMMANDS)
    finally:
        server.close()
        server.log.stream.close()


# ------------------------------------------------------- names (issue 8)

@pytest.mark.parametrize("name", ["प्रिया", "שָׁלוֹם", "山田たろう"])
def test_names_in_scripts_with_marks(connect, name):
    client = connect()
    assert client.request(f"NAME {name}") == f"Hello {name}"
    assert client.request(f"MSG {name} hi") == f"{name} sent hi"


@pytest.mark.parametrize("name, error", [
    ("\u0410lice", "ERROR: invalid name: it mixes Cyrillic and Latin "
     "letters"),
    ("-", "ERROR: invalid name: a name needs at least one letter or digit"),
    ("x" * 21, "ERROR: invalid name: a name is at most 20 characters"),
])
def test_names_refused_with_the_reason(connect, name, error):
    assert connect().request(f"NAME {name}") == error


def test_names_compared_under_nfkc_and_case(connect):
    wide = connect().name("Ｂｏｂ")
    assert connect().request("NAME bob") == "ERROR: the name 'bob' is taken"
    sender = connect().name("Al")
    sender.send("MSG BOB hi")
    assert wide.receive() == "Al sent hi"


# ------------------------------------------- errors fit 80 columns (issue 8)

def columns(text):
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1
               for char in text)


def test_every_error_fits_80_columns_as_the_client_shows_it(connect):
    """'Server sent: ' plus the error, with the longest names (20 wide
    characters take 40 columns)."""
    wide = "名" * 20
    holder = connect().name(wide)
    named = connect().name("N" * 20)
    anonymous = connect()
    requests = [
        (anonymous, "NAME"), (anonymous, "NAME a b"),
        (anonymous, "NAME " + "x" * 21), (anonymous, "NAME -"),
        (anonymous, "NAME \u0410lice"), (anonymous, "NAME Ωжa"),
        (anonymous, f"NAME {wide}"), (anonymous, "GET_NAMES x"),
        (anonymous, "MSG"), (anonymous, f"MSG {wide} hi"),
        (named, "MSG " + "文" * 20 + " hi"), (named, "MSG a:b hi"),
        (named, "MSG " + "N" * 20 + " " + "m" * 9974),
        (anonymous, "BROADCAST"), (anonymous, "BROADCAST hi"),
        (named, "BROADCAST " + "m" * 9989),
        (anonymous, "HISTORY 0"), (anonymous, "HELP nope"),
        (anonymous, "NOPE"), (anonymous, ""),
    ]
    replies = [client.request(text) for client, text in requests]
    anonymous.send_raw(b"0002\xff\xfe")
    replies.append(anonymous.receive())
    anonymous.send_raw(b"\xff\xff\xff\xff")
    replies.append(anonymous.receive())
    assert all(reply.startswith("ERROR: ") for reply in replies), replies
    too_wide = [reply for reply in replies
                if columns("Server sent: " + reply) > 80]
    assert too_wide == []
    holder.close()


# ---------------------------------------------- the teacher's log (issue 8)

def test_log_shows_renames_refusals_and_deliveries_but_no_text(
        server, connect):
    witness = connect().name("W")
    client = connect().name("B")
    assert client.request("NAME Bee") == "Hello Bee"
    assert client.request("MSG C hi") == "ERROR: no client named 'C'"
    client.send("MSG W a secret")
    assert witness.receive() == "Bee sent a secret"
    assert client.request("EXIT") == "EXIT"
    assert wait_for(lambda: "(Bee) left" in server.log())
    port = client.sock.getsockname()[1]
    log = [line.split(" ", 1)[1] for line in server.log().splitlines()]
    assert log[-4:] == [
        f"127.0.0.1:{port} (B) renamed to Bee",
        f"127.0.0.1:{port} (Bee): ERROR: no client named 'C'",
        f"127.0.0.1:{port} (Bee) sent 17 bytes to W",
        f"127.0.0.1:{port} (Bee) left",
    ]
    assert "secret" not in server.log()


def test_a_flood_of_messages_is_counted_in_the_log_not_shown(
        server, connect):
    receiver = connect().name("R")
    sender = connect().name("S")
    count = 1000
    sender.send_raw(protocol.encode("MSG R x") * count)
    for _ in range(count):
        assert receiver.receive() == "S sent x"

    def accounted():
        log = server.log()
        shown = log.count(" (S) sent 8 bytes to R\n")
        held = sum(int(number) for number in re.findall(
            r"\((\d+) more lines about messages in that second not shown; "
            r"-v shows them all\)", log))
        return shown + held == count and held > 0

    assert wait_for(accounted, timeout=5)


def test_verbose_logs_message_texts():
    server = ServerProcess("-v")
    try:
        client = Peer(server.port).name("Chatty")
        assert client.request("MSG chatty a secret") == "Chatty sent a secret"
        assert wait_for(lambda: "(Chatty): MSG chatty a secret"
                        in server.log())
        client.close()
    finally:
        server.cleanup()


# --------------------------------------------- starting up (issue 8, 7)

@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_a_port_out_of_range_is_refused_by_argument_parsing(port):
    result = subprocess.run([sys.executable, SERVER, "--port", port],
                            capture_output=True, text=True, timeout=10)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"chat_server.py: error: argument --port: '{port}' is not a port "
        "number (0 to 65535)")


def old_pythons():
    """The CPython 3.6 and 3.7 that pyenv has here, if any."""
    found = []
    for version in ("3.6", "3.7"):
        for path in sorted(glob.glob(os.path.expanduser(
                f"~/.pyenv/versions/{version}.*/bin/python"))):
            found.append(path)
            break
    return found


def programs():
    """The chat_*.py files that run as programs."""
    found = []
    for path in sorted(glob.glob(os.path.join(ROOT, "chat_*.py"))):
        with open(path, encoding="utf-8") as source:
            if 'if __name__ == "__main__":' in source.read():
                found.append(os.path.basename(path))
    return found


@pytest.mark.parametrize("program", programs())
def test_an_old_python_gets_one_line_not_a_traceback(program):
    pythons = old_pythons()
    if not pythons:
        pytest.skip("no CPython 3.6 or 3.7 installed with pyenv")
    for python in pythons:
        result = subprocess.run(
            [python, program, "--help"], cwd=ROOT, capture_output=True,
            text=True, timeout=30, stdin=subprocess.DEVNULL)
        version = subprocess.run(
            [python, "-c", "import platform; "
             "print(platform.python_version())"],
            capture_output=True, text=True, timeout=30).stdout.strip()
        assert (result.returncode, result.stdout, result.stderr) == (
            1, "", "This chat needs Python 3.8 or newer; this is Python "
            f"{version}.\n")


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
def test_ipv6_host():
    server = ServerProcess("--host", "::1")
    try:
        assert f"listening on [::1]:{server.port}" in server.log()
        sock = socket.create_connection(("::1", server.port), TIMEOUT)
        sock.settimeout(TIMEOUT)
        protocol.send_message(sock, "NAME Six")
        assert protocol.receive_message(sock) == "Hello Six"
        sock.close()
    finally:
        server.cleanup()


@pytest.mark.skipif(not (ipv6_loopback() and socket.has_dualstack_ipv6()),
                    reason="no dual-stack IPv6 here")
def test_ipv6_any_also_takes_ipv4():
    server = ServerProcess("--host", "::")
    try:
        client = Peer(server.port)
        assert client.request("NAME Four") == "Hello Four"
        client.close()
    finally:
        server.cleanup()


def test_open_to_the_network_says_what_students_type():
    server = ServerProcess("--host", "0.0.0.0")
    try:
        log = server.log()
        commands = re.findall(r"  python chat_client\.py --host (\S+) "
                              rf"--port {server.port}\n", log)
        if commands:
            assert "students connect with:" in log
            assert all(not address.startswith("127.")
                       for address in commands)
            for address in commands:
                socket.inet_aton(address)
        else:
            assert "no network address found" in log
    finally:
        server.cleanup()
