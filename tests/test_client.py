"""The terminal client, driven through a real pseudo-terminal against a
real server process; its screen is rendered by a VT100 emulator."""

import socket
import subprocess
import sys

import pytest

import chat_protocol as protocol
from chat_client import LineEditor, QUIT, WindowsConsole
from support import CLIENT, ROOT, Peer, TerminalClient, piped_output

posix_only = pytest.mark.skipif(sys.platform == "win32",
                                reason="pseudo-terminals are POSIX")

HEADER = ["Pls enter commands", ""]


@pytest.fixture
def terminal(server):
    """terminal() -> a client on a pseudo-terminal; all closed after."""
    clients = []

    def make(*arguments):
        client = TerminalClient(server.port, *arguments)
        clients.append(client)
        client.wait_for("Pls enter commands")
        return client

    try:
        yield make
    finally:
        for client in clients:
            client.close()


def enter(client, line, reply=None):
    """Type a line and Enter; wait for ``reply`` on the screen."""
    client.type(line + "\r")
    if reply is not None:
        client.wait_for(reply)


@posix_only
def test_example_run(server, terminal):
    """SPEC section 3, screen for screen, with three client processes."""
    a = terminal()
    enter(a, "NAME A", "Server sent: Hello A")
    first_b = terminal()
    enter(first_b, "NAME B", "Server sent: Hello B")
    enter(a, "GET_NAMES", "Server sent: A B")
    enter(first_b, "EXIT")
    assert first_b.wait_exit() == 0
    enter(a, "GET_NAMES")
    a.wait_for_last_line("Server sent: A")
    second_b = terminal()
    enter(second_b, "NAME B", "Server sent: Hello B")
    enter(a, "GET_NAMES")
    a.wait_for_last_line("Server sent: A B")
    enter(a, "MSG B HELLO")
    second_b.wait_for("Server sent: A sent HELLO")
    enter(second_b, "MSG A HELLO")
    a.wait_for("Server sent: B sent HELLO")
    enter(second_b, "EXIT")
    assert second_b.wait_exit() == 0
    enter(a, "EXIT")
    assert a.wait_exit() == 0

    assert a.lines() == HEADER + [
        "NAME A",
        "Server sent: Hello A",
        "GET_NAMES",
        "Server sent: A B",
        "GET_NAMES",
        "Server sent: A",
        "GET_NAMES",
        "Server sent: A B",
        "MSG B HELLO",
        "Server sent: B sent HELLO",
        "EXIT",
    ]
    assert first_b.lines() == HEADER + [
        "NAME B",
        "Server sent: Hello B",
        "EXIT",
    ]
    assert second_b.lines() == HEADER + [
        "NAME B",
        "Server sent: Hello B",
        "Server sent: A sent HELLO",
        "MSG A HELLO",
        "EXIT",
    ]


@posix_only
def test_half_typed_line_survives_a_message(server, terminal):
    a = terminal()
    enter(a, "NAME A", "Hello A")
    b = Peer(server.port).name("B")
    a.type("MSG B half")
    a.wait_for("MSG B half")
    b.send("MSG A interrupting you")
    a.wait_for("Server sent: B sent interrupting you")
    assert a.lines() == HEADER + [
        "NAME A",
        "Server sent: Hello A",
        "Server sent: B sent interrupting you",
        "MSG B half",
    ]
    enter(a, " done")
    assert b.receive() == "A sent half done"
    b.close()


@posix_only
def test_backspace_over_ascii_and_hebrew(server, terminal):
    a = terminal()
    a.type("NAME Abcx\x7f\x7f")
    a.wait_for("NAME Ab")
    enter(a, "", "Server sent: Hello Ab")
    a.type("NAME דניאל\x7f\x7f\x7f")
    enter(a, "", "Server sent: Hello דנ")
    assert a.lines() == HEADER + [
        "NAME Ab",
        "Server sent: Hello Ab",
        "NAME דנ",
        "Server sent: Hello דנ",
    ]


@posix_only
@pytest.mark.parametrize("keys", ["EXIT\r", "exit\r", "\x03", "\x04",
                                  "NAME X\x03"])
def test_leaving_exits_0_and_restores_the_terminal(server, terminal, keys):
    watcher = Peer(server.port).name("W")
    a = terminal()
    enter(a, "NAME Leaver", "Hello Leaver")
    a.type(keys)
    assert a.wait_exit() == 0
    assert a.attributes() == a.attributes_before
    assert "Traceback" not in a.text()
    assert watcher.request("GET_NAMES") == "W"
    watcher.close()


@posix_only
def test_server_killed_mid_session(server, terminal):
    a = terminal()
    enter(a, "NAME A", "Hello A")
    server.process.kill()
    assert a.wait_exit() == 1
    assert a.lines() == HEADER + [
        "NAME A",
        "Server sent: Hello A",
        "Connection to the server was lost.",
    ]
    assert a.attributes() == a.attributes_before


@posix_only
def test_server_shutting_down(server, terminal):
    a = terminal()
    a.type("GET_NA")
    a.wait_for("GET_NA")
    assert server.stop() == 0
    assert a.wait_exit() == 1
    assert a.lines() == HEADER + [
        "Server sent: SERVER: the server is shutting down",
        "Connection to the server was lost.",
    ]


def free_port():
    """A port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_no_server_at_start():
    port = free_port()
    result = subprocess.run(
        [sys.executable, CLIENT, "--port", str(port)], cwd=ROOT,
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"Cannot connect to 127.0.0.1:{port} (connection refused): "
        "is the server running?\n")


@posix_only
def test_control_characters_from_others_never_reach_the_terminal(
        server, terminal):
    a = terminal()
    enter(a, "NAME A", "Hello A")
    b = Peer(server.port).name("B")
    b.send("MSG A look \x1b[2J\x07 \x9b\rhere")
    a.wait_for("Server sent: B sent look")
    assert a.lines()[-1] == (
        "Server sent: B sent look \\x1b[2J\\x07 \\x9b\\rhere")
    assert b"\x1b" not in a.raw
    assert b"\x07" not in a.raw
    assert "\x9b".encode() not in a.raw
    b.close()


def run_piped(port, stdin, *arguments):
    return subprocess.run(
        [sys.executable, CLIENT, "--port", str(port), *arguments],
        cwd=ROOT, input=stdin.encode(), capture_output=True, timeout=20)


def test_piped_input(server):
    result = run_piped(server.port, "NAME A\nGET_NAMES\nEXIT\n")
    assert result.returncode == 0
    assert result.stderr == b""
    assert result.stdout == piped_output("Pls enter commands\n\n"
                                         "Server sent: Hello A\n"
                                         "Server sent: A\n")


def test_piped_input_ends_with_exit_at_end_of_input(server):
    watcher = Peer(server.port).name("W")
    result = run_piped(server.port, "name Pipe\n\n   \nMSG W hi from a pipe")
    assert result.returncode == 0
    assert result.stdout == piped_output(
        "Pls enter commands\n\nServer sent: Hello Pipe\n")
    assert watcher.receive() == "Pipe sent hi from a pipe"
    assert watcher.request("GET_NAMES") == "W"
    watcher.close()


def test_a_line_over_the_limit_is_not_sent(server):
    line = "MSG A " + "x" * 9994
    result = run_piped(server.port, f"{line}\nNAME A\nGET_NAMES\nEXIT\n")
    assert result.returncode == 0
    assert result.stdout.decode().splitlines() == [
        "Pls enter commands",
        "",
        "ERROR: not sent: a message is at most 9999 bytes, this one is "
        "10000",
        "Server sent: Hello A",
        "Server sent: A",
    ]


@posix_only
def test_show_frames_prints_the_exact_frames(server, terminal):
    a = terminal("--show-frames")
    enter(a, "NAME שי", "Server sent: Hello שי")
    enter(a, "EXIT")
    assert a.wait_exit() == 0
    assert a.lines() == HEADER + [
        "NAME שי",
        "Frame sent: 0009NAME שי",
        "Frame received: 0010Hello שי",
        "Server sent: Hello שי",
        "EXIT",
        "Frame sent: 0004EXIT",
        "Frame received: 0004EXIT",
    ]


def test_help_explains_the_commands():
    result = subprocess.run([sys.executable, CLIENT, "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=10)
    assert result.returncode == 0
    for usage in protocol.COMMAND_USAGE.values():
        assert usage in result.stdout


class ReplayedConsole:
    """A stand-in for msvcrt that replays a key sequence."""

    def __init__(self, keys):
        self.keys = list(keys)

    def kbhit(self):
        return bool(self.keys)

    def getwch(self):
        return self.keys.pop(0)


class Screen:
    def __init__(self):
        self.written = []

    def write(self, text):
        self.written.append(text)


def test_windows_keyboard_backend():
    keys = (list("NAME שלוםx") + ["\b", "\r"]
            + ["\xe0", "H"]                 # an arrow key: ignored
            + list("MSG B hi") + ["\b", "\b"] + list("yo!\r")
            + list("half") + ["\x03"])
    console = WindowsConsole(ReplayedConsole(keys))
    screen = Screen()
    editor = LineEditor(screen)
    assert editor.feed(console.read()) == ["NAME שלום", "MSG B yo!", QUIT]
    assert "".join(screen.written) == (
        "NAME שלוםx\b \b\nMSG B hi\b \b\b \byo!\nhalf")


def test_line_editor_swallows_escape_sequences():
    editor = LineEditor(Screen())
    assert editor.feed("ab\x1b[Ac\x1b[1;5Dd\x1bOPe\r") == ["abcde"]


def test_line_editor_erases_wide_characters():
    screen = Screen()
    editor = LineEditor(screen)
    assert editor.feed("名\x7f\r") == [""]
    assert "".join(screen.written) == "名\b\b  \b\b\n"
