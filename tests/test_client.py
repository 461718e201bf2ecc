"""The terminal client, driven through a real pseudo-terminal against a
real server process; its screen is rendered by a VT100 emulator."""

import io
import os
import socket
import subprocess
import sys
import threading

import pytest

import chat_protocol as protocol
from chat_client import (DELETE, DOWN, END, ESCAPE, HOME, LEFT, RIGHT, UP,
                         ChatClient, EscapeSequences, LineEditor,
                         WindowsConsole, columns, configure_output, connect,
                         split_clusters)
from support import (CLIENT, ROOT, Peer, ServerProcess, TerminalClient,
                     piped_output)

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
    """Issue 8.10: after the notice, the close is an orderly end (status
    0), and the half-typed line stays on the screen as it was."""
    a = terminal()
    a.type("GET_NA")
    a.wait_for("GET_NA")
    assert server.stop() == 0
    assert a.wait_exit() == 0
    assert a.lines() == HEADER + [
        "Server sent: SERVER: the server is shutting down",
        "GET_NA",
        "The server has shut down.",
    ]
    assert a.attributes() == a.attributes_before


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


HELP_EPILOG = """\
commands:
  NAME <name>           take a name, or change yours
  GET_NAMES             list the names of everyone here
  MSG <name> <message>  send <message> to <name> only
  BROADCAST <message>   send <message> to everyone else
  HISTORY [n]           show the last n broadcasts (20)
  HELP [command]        list the commands, or show one
  EXIT                  leave the chat

keys: Enter sends the line; Backspace and Delete erase; Left, Right, Home
and End move; Ctrl+U erases to the start of the line, Ctrl+W the word
before the cursor; Up and Down recall this session's lines.  Esc alone
does nothing, and Alt+X types X.  Lines pasted together are sent one by
one, each after the reply to the one before (or 0.3 s).  Ctrl+C leaves;
so does Ctrl+D on an empty line (Linux and macOS); Ctrl+Z suspends (Linux
and macOS) and `fg` brings the client back.

length fields: 4 digits (the default) or 2, as the course templates
write them (counting characters).  With auto, the first line goes with 4
digits, the next waits for a reply (or 0.3 s), and from the first 2-digit
frame the server sends, lines go with 2.

Exit status: 0 after EXIT, Ctrl+C, the end of piped input or the server's
shutdown; 1 if the server cannot be reached, the connection is lost or
what the server sends cannot be read.
"""


def test_help_explains_the_commands_and_keys():
    """Issue 8.11 and 8.13: --help lists the commands from the protocol's
    table and the editing keys, word for word."""
    result = subprocess.run([sys.executable, CLIENT, "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=10,
                            env=dict(os.environ, COLUMNS="80"))
    assert result.returncode == 0
    assert result.stderr == ""
    for line in protocol.help_lines():
        assert f"  {line}\n" in HELP_EPILOG
    assert result.stdout.endswith("\n\n" + HELP_EPILOG)
    assert "  --length-field {4,2,auto}\n" in result.stdout


# ------------------------------------------------- the line editor, alone

class EmulatedScreen:
    """An output stream shown on a VT100 emulator; a newline reaches it as
    the terminal driver (and the Windows console) sends it, CR LF."""

    def __init__(self, columns=40, rows=12):
        import pyte
        self.screen = pyte.Screen(columns, rows)
        self.stream = pyte.Stream(self.screen)
        self.written = []

    def write(self, text):
        self.written.append(text)
        self.stream.feed(text.replace("\n", "\r\n"))

    def flush(self):
        pass

    def lines(self):
        lines = [line.rstrip() for line in self.screen.display]
        while lines and not lines[-1]:
            lines.pop()
        return lines

    def cursor(self):
        return self.screen.cursor.y, self.screen.cursor.x


def editor_on(screen, ansi=True):
    return LineEditor(screen, ansi=ansi,
                      width=lambda: screen.screen.columns)


@pytest.mark.parametrize("text, clusters", [
    ("abc", ["a", "b", "c"]),
    ("e\u0301x", ["e\u0301", "x"]),                       # a mark
    ("\u05e9\u05b8\u05c1\u05dc\u05d5\u05b9\u05dd",          # points
     ["\u05e9\u05b8\u05c1", "\u05dc", "\u05d5\u05b9", "\u05dd"]),
    ("👍🏽!", ["👍🏽", "!"]),                                  # skin tone
    ("👨\u200d👩\u200d👧x", ["👨\u200d👩\u200d👧", "x"]),     # ZWJ
    ("❤\ufe0fx", ["❤\ufe0f", "x"]),                       # VS16
    ("🇮🇱🇫🇷🇩", ["🇮🇱", "🇫🇷", "🇩"]),                         # flags
    ("1\ufe0f\u20e3", ["1\ufe0f\u20e3"]),                  # keycap
])
def test_grapheme_clusters(text, clusters):
    assert split_clusters(text) == clusters


@pytest.mark.parametrize("cluster, width", [
    ("a", 1), ("e\u0301", 1), ("名", 2), ("👍🏽", 2), ("❤\ufe0f", 1),
    ("👨\u200d👩\u200d👧", 2), ("🇮🇱", 2), ("\u0301", 0),
])
def test_columns_of_a_cluster(cluster, width):
    """Issue 8.5: joiners, selectors and modifiers take no column."""
    assert columns(cluster) == width


def test_left_then_typing_inserts_at_the_cursor():
    screen = EmulatedScreen()
    editor = editor_on(screen)
    editor.feed(list("NAME Abc") + [LEFT] * 3 + ["Z"])
    assert editor.text() == "NAME ZAbc"
    assert screen.lines() == ["NAME ZAbc"]
    assert screen.cursor() == (0, 6)


def test_home_end_delete_ctrl_u_ctrl_w():
    screen = EmulatedScreen()
    editor = editor_on(screen)
    editor.feed(list("xNAME A") + [HOME, DELETE, END, "b"])
    assert (editor.text(), screen.lines()) == ("NAME Ab", ["NAME Ab"])
    editor.feed(["\x15"])                                  # Ctrl+U
    assert (editor.text(), screen.lines()) == ("", [])
    editor.feed(list("MSG A one  two") + ["\x17"])          # Ctrl+W
    assert (editor.text(), screen.lines()) == ("MSG A one  ",
                                               ["MSG A one"])
    assert screen.cursor() == (0, 11)
    editor.feed([LEFT, LEFT, LEFT, "\x17"])
    assert (editor.text(), screen.lines()) == ("MSG A e  ", ["MSG A e"])
    assert screen.cursor() == (0, 6)


def test_up_and_down_recall_this_sessions_lines():
    screen = EmulatedScreen()
    editor = editor_on(screen)
    assert editor.feed(list("NAME A\rGET_NAMES\r\r") + list("half")
                       + [UP]) == ["NAME A", "GET_NAMES", ""]
    assert editor.text() == "GET_NAMES"
    editor.feed([UP, UP])
    assert editor.text() == "NAME A"
    editor.feed([DOWN])
    assert editor.text() == "GET_NAMES"
    editor.feed([DOWN])
    assert editor.text() == "half"
    assert screen.lines() == ["NAME A", "GET_NAMES", "", "half"]
    assert editor.feed([UP, UP, "\r"]) == ["NAME A"]
    assert editor.history == ["NAME A", "GET_NAMES", "NAME A"]


def test_backspace_erases_one_grapheme_cluster():
    """Issue 8.5: one Backspace, one user-perceived character."""
    screen = EmulatedScreen()
    editor = editor_on(screen)
    editor.feed("MSG B é👍🏽👨\u200d👩\u200d👧🇮🇱❤\ufe0fz")
    editor.feed("\x7f" * 4)
    assert editor.text() == "MSG B é👍🏽"
    editor.feed("\x7f")
    assert editor.text() == "MSG B é"
    assert screen.lines() == ["MSG B é"]
    assert screen.cursor() == (0, 7)


def test_a_long_line_is_lifted_and_redrawn_whole():
    """Issue 8.1, alone: a line of three rows goes and comes back whole,
    also after the terminal is made narrower."""
    screen = EmulatedScreen(columns=20)
    editor = editor_on(screen)
    editor.feed("MSG B " + "0123456789" * 4)      # 46 columns: 3 rows
    assert screen.lines() == ["MSG B 01234567890123", "45678901234567890123",
                              "456789"]
    editor.hide()
    screen.write("Server sent: hi\n")
    editor.show()
    assert screen.lines() == ["Server sent: hi", "MSG B 01234567890123",
                              "45678901234567890123", "456789"]
    screen.screen.resize(12, 16)
    editor.hide()
    screen.write("Server sent: yo\n")
    editor.show()
    assert screen.lines() == ["Server sent: hi", "Server sent: yo",
                              "MSG B 0123456789", "0123456789012345",
                              "67890123456789"]


def test_a_line_that_fills_its_rows_exactly():
    screen = EmulatedScreen(columns=10)
    editor = editor_on(screen)
    editor.feed("0123456789abcdefghij")
    assert screen.cursor() == (2, 0)
    editor.feed([LEFT, HOME])
    assert screen.cursor() == (0, 0)
    editor.hide()
    screen.write("Server sent: x\n")
    editor.show()
    assert editor.feed("\r") == ["0123456789abcdefghij"]
    assert screen.lines() == ["Server sen", "t: x", "0123456789",
                              "abcdefghij"]
    assert screen.cursor() == (4, 0)


def test_without_escape_sequences_a_line_is_redrawn_in_place():
    """An old Windows console: carriage return, spaces and backspaces."""
    screen = EmulatedScreen()
    editor = editor_on(screen, ansi=False)
    editor.feed(list("NAME Abx") + ["\b", LEFT, "Z"])
    assert "\x1b" not in "".join(screen.written)
    assert (editor.text(), screen.lines()) == ("NAME AZb", ["NAME AZb"])
    assert screen.cursor() == (0, 7)
    editor.hide()
    screen.write("Server sent: x\n")
    editor.show()
    assert screen.lines() == ["Server sent: x", "NAME AZb"]
    assert editor.feed("\r") == ["NAME AZb"]


@pytest.mark.parametrize("typed, keys", [
    (["GET_NAMES\x1bXY"], list("GET_NAMESXY")),      # Esc, then keys
    (["GET_NAMES\x1b", "XY"], list("GET_NAMESXY")),  # Esc alone
    (["a\x1b[Ab\x1b[1;5Dc\x1bOPd\x1b[200~e"],
     ["a", UP, "b", LEFT, "c", "d", "e"]),
    (["\x1b[H\x1b[F\x1b[3~\x1b[1~\x1b[4~\x1bOH\x1b[B\x1b[C"],
     [HOME, END, DELETE, HOME, END, HOME, DOWN, RIGHT]),
    (["x\x1b[1;", "5C"], ["x", RIGHT]),                # split sequence
    (["\x1b\x1b[D"], [LEFT]),
])
def test_escape_sequences(typed, keys):
    """Issue 8.4: only real escape sequences are consumed."""
    sequences = EscapeSequences()
    assert [key for text in typed for key in sequences.keys(text)] == keys


# ------------------------------------------------- Windows, with msvcrt

class ReplayedConsole:
    """A stand-in for msvcrt that behaves as the real one does: getwch()
    returns the queued characters in order (a special key is two, its
    prefix and its code, back to back); kbhit() is true while any is
    queued; ungetwch() pushes one back.  getwch() on an empty queue would
    block for ever: here it fails the test."""

    def __init__(self, keys=()):
        self.keys = list(keys)

    def kbhit(self):
        return bool(self.keys)

    def getwch(self):
        assert self.keys, "getwch() would block"
        return self.keys.pop(0)

    def ungetwch(self, char):
        self.keys.insert(0, char)


def test_windows_keys():
    """Issue 7.2 and 8.6: special keys are read whole, "à" is a letter."""
    console = ReplayedConsole(
        list("àb") + ["\xe0", "K", "\x00", "K", "\xe0", "H", "\x00", ";",
                      "\xe0", "S", "\xe0", "G", "\xe0", "O", "\xe0", "P",
                      "\xe0", "M", "\xe0", "R", "\xe0", "s", "\xe0", "u"]
        + list("àà\r"))
    keyboard = WindowsConsole(console)
    assert keyboard.read() == (["à", "b", LEFT, LEFT, UP, DELETE, HOME, END,
                                DOWN, RIGHT, LEFT, END] + list("àà\r"))
    assert console.keys == []
    console.keys = ["\xe0"]              # "à" typed last: nothing waiting
    assert keyboard.read() == ["à"]
    console.keys = ["\x00"]              # half a key: dropped, no block
    assert keyboard.read() == []


def test_windows_typing_a_with_grave_and_arrows(server):
    """Issue 7.2: `MSG D àbc` typed on Windows delivers `àbc`, and arrow
    keys still move the cursor; a real server, the client in this process
    with the stand-in msvcrt."""
    d = Peer(server.port).name("D")
    keys = (list("NAME C\r") + list("MSG D àbc\r")
            + list("MSG D xz") + ["\xe0", "K", "\xe0", "K"] + list("àà")
            + ["\xe0", "M", "y", "\r"] + list("EXIT\r"))
    screen = EmulatedScreen(columns=60)
    sock = socket.create_connection(("127.0.0.1", server.port), 5)
    try:
        client = ChatClient(sock, screen)
        status = client.run(WindowsConsole(ReplayedConsole(keys)))
    finally:
        sock.close()
    assert status == 0
    assert d.receive() == "C sent àbc"
    assert d.receive() == "C sent ààxyz"
    assert screen.lines() == ["NAME C", "Server sent: Hello C", "MSG D àbc",
                              "MSG D ààxyz", "EXIT"]
    d.close()


def test_windows_output_to_a_pipe_is_utf8():
    """Issue 8 (Windows): piped output is UTF-8, so Hebrew is not lost to
    the code page; a console, and every other system, keep theirs."""
    piped = io.TextIOWrapper(io.BytesIO(), encoding="cp1252")
    configure_output(piped, platform="win32")
    piped.write("Server sent: שלום \udcff\n")
    piped.flush()
    assert piped.buffer.getvalue() == piped_output(
        "Server sent: שלום \\udcff\n")
    elsewhere = io.TextIOWrapper(io.BytesIO(), encoding="cp1252")
    configure_output(elsewhere, platform="linux")
    elsewhere.write("שלום\n")
    elsewhere.flush()
    assert elsewhere.buffer.getvalue() == b"????" + os.linesep.encode()


def test_the_socket_sends_small_frames_at_once(server):
    """Issue 12: TCP_NODELAY on the client's socket."""
    sock = connect("127.0.0.1", server.port)
    try:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert sock.gettimeout() is None
    finally:
        sock.close()


# ------------------------------------- the line on a real pseudo-terminal

@posix_only
def test_a_line_wider_than_the_terminal_survives_messages(server, terminal):
    """Issue 8.1: the half line's rows are lifted whole and redrawn whole,
    at the terminal's current width, also after it is made narrower."""
    a = terminal()
    enter(a, "NAME A", "Hello A")
    b = Peer(server.port).name("B")
    digits = "0123456789" * 14
    a.type("MSG B " + digits)
    a.wait_for(digits[-10:])
    b.send("MSG A one")
    a.wait_for("Server sent: B sent one")
    a.pump()
    assert a.lines() == HEADER + [
        "NAME A",
        "Server sent: Hello A",
        "Server sent: B sent one",
        "MSG B " + digits[:94],
        digits[94:],
    ]
    a.resize(40, 60)
    b.send("MSG A two")
    a.wait_for("Server sent: B sent two")
    a.pump()
    assert a.lines() == HEADER + [
        "NAME A",
        "Server sent: Hello A",
        "Server sent: B sent one",
        "Server sent: B sent two",
        "MSG B " + digits[:54],
        digits[54:114],
        digits[114:],
    ]
    enter(a, "")
    assert b.receive() == "A sent " + digits
    b.close()


@posix_only
def test_editing_keys_in_a_terminal(server, terminal):
    """Issue 8.6: arrows, Home, End, Delete, Ctrl+U, Ctrl+W, history."""
    a = terminal()
    a.type("NAME Abc" + "\x1b[D" * 3 + "Z\r")            # Left x3
    a.wait_for("Server sent: Hello ZAbc")
    a.type("xGET_NAMESy\x1b[H\x1b[3~\x1b[F\x7f\r")    # Home Del End BS
    a.wait_for_last_line("Server sent: ZAbc")
    a.type("garbage\x15MSG ZAbc one two\x17three\r")  # Ctrl+U, Ctrl+W
    a.wait_for("Server sent: ZAbc sent one three")
    a.type("\x1b[A\x1b[A\x1b[A\x1b[B\r")             # Up x3, Down
    a.wait_for_last_line("Server sent: ZAbc")
    a.type("\x1bOA\x1bOD\x1bOHx\x1bOF\x7fS\x1bOH\x1b[3~\r")  # SS3 keys
    a.wait_for("Server sent: ZAbc\nGET_NAMES\nServer sent: ZAbc")
    assert a.lines() == HEADER + [
        "NAME ZAbc",
        "Server sent: Hello ZAbc",
        "GET_NAMES",
        "Server sent: ZAbc",
        "MSG ZAbc one three",
        "Server sent: ZAbc sent one three",
        "GET_NAMES",
        "Server sent: ZAbc",
        "GET_NAMES",
        "Server sent: ZAbc",
    ]


@posix_only
@pytest.mark.parametrize("typed", [["GET_NAMES\x1bXY"],
                                   ["GET_NAMES\x1b", "XY"]])
def test_escape_alone_swallows_nothing(server, terminal, typed):
    """Issue 8.4: Esc (or Alt+X) then XY keeps XY."""
    a = terminal()
    for keys in typed:
        a.type(keys)
        a.wait_for("GET_NAMES")
        a.pump(0.1)
    a.wait_for("GET_NAMESXY")
    enter(a, "", "Server sent: ERROR:")
    assert a.lines()[2] == "GET_NAMESXY"


@posix_only
def test_backspace_over_emoji_in_a_terminal(server, terminal):
    """Issue 8.5: each Backspace erases one user-perceived character; the
    screen shows what is sent."""
    a = terminal()
    enter(a, "NAME A", "Hello A")
    b = Peer(server.port).name("B")
    # (The emulator cannot show joiners or variation selectors, which the
    # editor's own tests cover; it shows "e" and a combining accent as "é".)
    a.type("MSG B ée\u0301👍🏽🇮🇱\u05e9\u05b8\u05c1z")
    a.wait_for("z")
    a.type("\x7f" * 4)
    a.wait_for_last_line("MSG B éé")
    enter(a, "!")
    assert b.receive() == "A sent ée\u0301!"
    a.wait_for_last_line("MSG B éé!")
    b.close()


@posix_only
def test_ctrl_c_on_a_half_typed_line_ends_on_a_fresh_line(server, terminal):
    """Issue 8.3: the shell's prompt will not be glued to the text."""
    a = terminal()
    a.type("NAME Half")
    a.wait_for("NAME Half")
    a.type("\x03")
    assert a.wait_exit() == 0
    assert a.lines() == HEADER + ["NAME Half"]
    assert a.cursor() == (3, 0)
    assert a.raw.endswith(b"NAME Half\r\n")


@posix_only
def test_pasted_lines_show_their_replies_under_each(server, terminal):
    """Issue 8.7: three lines pasted at once."""
    a = terminal()
    a.type("NAME A\rGET_NAMES\rMSG A hi\r")
    a.wait_for("Server sent: A sent hi")
    assert a.lines() == HEADER + [
        "NAME A",
        "Server sent: Hello A",
        "GET_NAMES",
        "Server sent: A",
        "MSG A hi",
        "Server sent: A sent hi",
    ]


@posix_only
def test_half_line_is_kept_when_the_connection_is_lost(server, terminal):
    a = terminal()
    a.type("NAME A")
    a.wait_for("NAME A")
    server.process.kill()
    assert a.wait_exit() == 1
    assert a.lines() == HEADER + [
        "NAME A",
        "Connection to the server was lost.",
    ]


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_a_port_out_of_range_is_refused(port):
    """Issue 8.8: one message from argument parsing, status 2."""
    result = subprocess.run([sys.executable, CLIENT, "--port", port],
                            cwd=ROOT, capture_output=True, text=True,
                            timeout=10, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        f"chat_client.py: error: argument --port: '{port}' is not a port "
        "number (1 to 65535)")
    assert "Traceback" not in result.stderr


@posix_only
def test_ctrl_z_then_fg_restores_and_resumes(server):
    """Issue 8.2: the client, a job of an interactive shell, is suspended
    with Ctrl+Z and brought back with `fg`: the shell gets its terminal
    as it was, the client gets its mode back and redraws the half line."""
    import termios
    shell = TerminalClient(
        None, rows=24, command=["bash", "--norc", "--noprofile", "-i"],
        env={"PS1": "$ ", "HISTFILE": "/dev/null", "PY": sys.executable,
             "CLIENT": CLIENT, "PORT": str(server.port)})
    b = None
    try:
        shell.wait_for_last_line("$")
        shell.type('"$PY" "$CLIENT" --port "$PORT"\r')
        shell.wait_for("Pls enter commands")
        enter(shell, "NAME A", "Hello A")
        b = Peer(server.port).name("B")
        shell.type("MSG B half")
        shell.wait_for("MSG B half")
        shell.type("\x1a")
        shell.wait_for("Stopped")
        shell.wait_for_last_line("$")
        shell.type("fg\r")
        shell.wait_for_last_line("MSG B half")
        local_modes = shell.attributes()[3]
        assert local_modes & (termios.ICANON | termios.ECHO) == 0
        b.send("MSG A welcome back")
        shell.wait_for("Server sent: B sent welcome back")
        shell.type(" done")
        shell.wait_for_last_line("MSG B half done")
        shell.type("\r")
        assert b.receive() == "A sent half done"
        shell.type("EXIT\r")
        shell.wait_for_last_line("$")
        command = '"$PY" "$CLIENT" --port "$PORT"'
        assert shell.lines() == [
            "$ " + command,
            "Pls enter commands",
            "",
            "NAME A",
            "Server sent: Hello A",
            "MSG B half",
            "[1]+  Stopped                 " + command,
            "$ fg",
            command,
            "Server sent: B sent welcome back",
            "MSG B half done",
            "EXIT",
            "$",
        ]
    finally:
        if b is not None:
            b.close()
        shell.close()


# ------------------------------------------------ 2-digit length fields

@pytest.fixture
def two_digit_server():
    """A real server process that reads and writes 2-digit frames only."""
    process = ServerProcess("--length-field", "2")
    try:
        yield process
    finally:
        process.cleanup()


def test_length_field_2_against_a_2_digit_server(two_digit_server):
    """Issue 9.2: --length-field 2 speaks the course templates' dialect;
    its length counts characters, the server's replies bytes."""
    result = run_piped(two_digit_server.port,
                       "NAME A\nGET_NAMES\nMSG A שלום\nEXIT\n",
                       "--length-field", "2", "--show-frames")
    assert result.returncode == 0
    assert result.stdout == piped_output(
        "Pls enter commands\n\n"
        "Frame sent: 06NAME A\n"
        "Frame sent: 09GET_NAMES\n"
        "Frame sent: 10MSG A שלום\n"
        "Frame sent: 04EXIT\n"
        "Frame received: 07Hello A\n"
        "Server sent: Hello A\n"
        "Frame received: 01A\n"
        "Server sent: A\n"
        "Frame received: 15A sent שלום\n"
        "Server sent: A sent שלום\n"
        "Frame received: 04EXIT\n")


def test_length_field_auto_follows_the_servers_replies(two_digit_server):
    """In auto, the first frame goes with 4 digits (a 2-digit server reads
    its "00" as an empty message, and says so) and the rest with 2."""
    result = run_piped(two_digit_server.port,
                       "NAME A\nGET_NAMES\nMSG A שלום\n",
                       "--length-field", "auto", "--show-frames")
    assert result.returncode == 0
    assert result.stdout == piped_output(
        "Pls enter commands\n\n"
        "Frame sent: 0006NAME A\n"
        "Frame received: 45ERROR: empty command; HELP lists the commands\n"
        "Server sent: ERROR: empty command; HELP lists the commands\n"
        "Frame received: 07Hello A\n"
        "Server sent: Hello A\n"
        "Frame sent: 09GET_NAMES\n"
        "Frame sent: 10MSG A שלום\n"
        "Frame sent: 04EXIT\n"
        "Frame received: 01A\n"
        "Server sent: A\n"
        "Frame received: 15A sent שלום\n"
        "Server sent: A sent שלום\n"
        "Frame received: 04EXIT\n")


def test_length_field_4_cannot_read_a_2_digit_server(two_digit_server):
    """A reply that cannot be framed is one line and status 1, never a
    silent 0, with piped input too."""
    result = run_piped(two_digit_server.port, "NAME A\n")
    assert result.returncode == 1
    assert result.stdout == piped_output(
        "Pls enter commands\n\n"
        "Cannot read what the server sent (bad length field b'45ER': not "
        "4 digits); try --length-field auto\n")


class TemplateServer:
    """A server written as the course templates are, on a real socket in
    a thread: 2-digit length fields, `Hello <name>` for NAME, EXIT
    answered; it closes the connection on a frame it cannot take (a
    4-digit frame's "00" reads as an empty one)."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(5)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            connection, _ = self.listener.accept()
        except OSError:
            return
        with connection:
            connection.settimeout(5)
            try:
                self._answer(connection)
            except OSError:
                pass

    def _answer(self, connection):
        while True:
            header = connection.recv(2, socket.MSG_WAITALL)
            if len(header) < 2 or not header.isdigit() or header == b"00":
                return
            text = connection.recv(int(header), socket.MSG_WAITALL).decode()
            reply = ("Hello " + text[5:] if text.startswith("NAME ")
                     else text)
            connection.sendall(b"%02d" % len(reply) + reply.encode())
            if text == "EXIT":
                return

    def close(self):
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def template_server():
    server = TemplateServer()
    try:
        yield server
    finally:
        server.close()


CLOSED_AT_FIRST = ("the server closed the connection at our first message: "
                   "it may expect 2-digit length fields; try --length-field "
                   "2")


@pytest.mark.parametrize("arguments", [[], ["--length-field", "auto"]])
def test_a_server_that_closes_at_our_first_message(template_server,
                                                   arguments):
    """Issue 9.2: one line naming the likely cause, status 1."""
    result = run_piped(template_server.port, "NAME A\nGET_NAMES\n",
                       *arguments)
    assert result.returncode == 1
    assert result.stdout == piped_output(
        "Pls enter commands\n\n" + CLOSED_AT_FIRST + "\n")


@posix_only
def test_a_server_that_closes_at_our_first_message_typed(template_server):
    a = TerminalClient(template_server.port)
    try:
        a.wait_for("Pls enter commands")
        enter(a, "NAME A")
        assert a.wait_exit() == 1
        assert a.lines() == HEADER + ["NAME A", CLOSED_AT_FIRST[:100],
                                      CLOSED_AT_FIRST[100:]]
        assert a.attributes() == a.attributes_before
    finally:
        a.close()


def test_length_field_2_with_a_template_server(template_server):
    result = run_piped(template_server.port, "NAME Ann\nEXIT\n",
                       "--length-field", "2")
    assert result.returncode == 0
    assert result.stdout == piped_output(
        "Pls enter commands\n\nServer sent: Hello Ann\n")


def test_each_escape_sequence_can_begin_a_write_of_its_own():
    """For the Windows console under Wine: no write has text before an
    escape sequence, and the screen is the same."""
    screen = EmulatedScreen(columns=10)
    editor = editor_on(screen)
    editor.sequence_per_write = True
    editor.feed(list("0123456789abc") + [LEFT, LEFT, "\x7f", HOME, "Z"])
    assert all(ESCAPE not in piece[1:] for piece in screen.written)
    assert any(piece.startswith(ESCAPE) for piece in screen.written)
    assert screen.lines() == ["Z012345678", "9bc"]
    assert screen.cursor() == (0, 1)


def test_typing_after_the_window_is_resized_redraws_the_line():
    """A character typed at the end after a resize draws the line whole at
    the new width, so the rows the editor counts are the rows on screen."""
    screen = EmulatedScreen(columns=20)
    width = [20]
    editor = LineEditor(screen, width=lambda: width[0])
    screen.write("Server sent: above\n")
    editor.feed("MSG B " + "0123456789" * 2)
    screen.screen.resize(12, 10)
    width[0] = 10
    editor.feed("x")
    editor.hide()
    screen.write("Server sent: new\n")
    editor.show()
    # (The emulator cuts rows when it narrows, as xterm does.)
    assert screen.lines() == ["Server sen", "Server sen", "t: new",
                              "MSG B 0123", "4567890123", "456789x"]


@pytest.mark.parametrize("ansi", [True, False])
def test_enter_with_the_cursor_inside_goes_below_the_whole_line(ansi):
    screen = EmulatedScreen(columns=10 if ansi else 40)
    editor = editor_on(screen, ansi=ansi)
    text = "0123456789abcdefghijKLMNO"
    assert editor.feed(list(text) + [HOME, RIGHT, "\r"]) == [text]
    assert screen.lines() == (["0123456789", "abcdefghij", "KLMNO"] if ansi
                              else [text])
    assert screen.cursor() == ((3, 0) if ansi else (1, 0))


def test_backspace_erases_a_wide_character_whole():
    screen = EmulatedScreen()
    editor = editor_on(screen)
    editor.feed("名字\x7f")
    assert (editor.text(), screen.lines(), screen.cursor()) == (
        "名", ["名"], (0, 2))
    assert editor.feed("\x7f\r") == [""]
    assert screen.lines() == []
    assert screen.cursor() == (1, 0)
