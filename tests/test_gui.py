"""The window (chat_gui.py): a real Tk window on a real X server (Xvfb),
against a real server process.  Events are generated on the real widgets
and the Tk loop is pumped with update() until what is awaited shows."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from support import ROOT, TIMEOUT, Peer, ServerProcess, wait_for

tkinter = pytest.importorskip("tkinter", reason="tkinter is not installed")
import chat_gui  # noqa: E402 (only once tkinter is known to be there)

GUI = os.path.join(ROOT, "chat_gui.py")

# Client A's side of the example run (SPEC section 3), as the terminal
# client shows it.
EXAMPLE_RUN_A = """\
Pls enter commands

NAME A
Server sent: Hello A
GET_NAMES
Server sent: A B
GET_NAMES
Server sent: A
GET_NAMES
Server sent: A B
MSG B HELLO
Server sent: B sent HELLO
EXIT
"""


@pytest.fixture
def root(display):
    """A Tk main window on the test display, destroyed after."""
    window = tkinter.Tk()
    try:
        yield window
    finally:
        try:
            window.destroy()
        except tkinter.TclError:
            pass  # the test destroyed it


@pytest.fixture
def peers():
    """Test clients on real sockets, every one closed after."""
    made = []
    yield made
    for peer in made:
        peer.close()


def pump(root, until, timeout=TIMEOUT):
    """Run Tk's loop until until() is true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out pumping the Tk loop"
        root.update()
        time.sleep(0.005)


class Left:
    """An on_leave that only notes that the user left, so the window can
    still be looked at."""

    def __init__(self):
        self.called = False

    def __call__(self):
        self.called = True


def open_window(root, server, **options):
    """A ChatWindow connected to ``server``; waits for its first names
    list."""
    sock = socket.create_connection(
        ("127.0.0.1", server.port), TIMEOUT)
    window = chat_gui.ChatWindow(root, sock, **options)
    pump(root, lambda: not window.names_requests)
    return window


def conversation(window):
    """The conversation's text, as shown."""
    return window.conversation.get("1.0", "end-1c")


def names(window):
    return list(window.names.get(0, "end"))


def type_line(window, line):
    """Type ``line`` into the real entry and press Enter."""
    window.entry.delete(0, "end")
    window.entry.insert(0, line)
    window.entry.focus_force()
    window.entry.event_generate("<Return>")


def type_and_wait(window, line, shown):
    """Type ``line``; pump until the conversation ends with ``shown``."""
    type_line(window, line)
    pump(window.root, lambda: conversation(window).endswith(shown))


def tagged(window, tag):
    """The text of every range that carries ``tag``."""
    ranges = window.conversation.tag_ranges(tag)
    return [window.conversation.get(start, stop)
            for start, stop in zip(ranges[::2], ranges[1::2])]


def test_example_run_played_in_the_window(root, server, peers):
    """The example run of SPEC section 3, client A being the window:
    the conversation holds exactly A's lines, the list follows the names."""
    left = Left()
    window = open_window(root, server, on_leave=left)
    assert conversation(window) == "Pls enter commands\n\n"
    assert names(window) == []

    type_and_wait(window, "NAME A", "Server sent: Hello A\n")
    pump(root, lambda: names(window) == ["A"])
    peers.append(Peer(server.port).name("B"))
    type_and_wait(window, "GET_NAMES", "Server sent: A B\n")
    assert names(window) == ["A", "B"]
    assert peers[0].request("EXIT") == "EXIT"
    peers[0].expect_closed()
    type_and_wait(window, "GET_NAMES", "Server sent: A\n")
    assert names(window) == ["A"]
    peers.append(Peer(server.port).name("B"))
    type_and_wait(window, "GET_NAMES", "Server sent: A B\n")
    # The Send button works as Enter does.
    window.entry.insert(0, "MSG B HELLO")
    window.send_button.invoke()
    assert peers[1].receive() == "A sent HELLO"
    peers[1].send("MSG A HELLO")
    pump(root, lambda: conversation(window).endswith(
        "Server sent: B sent HELLO\n"))
    assert peers[1].request("EXIT") == "EXIT"
    type_line(window, "EXIT")
    pump(root, lambda: left.called)

    assert conversation(window) == EXAMPLE_RUN_A
    assert tagged(window, "typed") == [
        "NAME A\n", "GET_NAMES\n", "GET_NAMES\n", "GET_NAMES\n",
        "MSG B HELLO\n", "EXIT\n"]
    assert str(window.entry["state"]) == "disabled"
    assert window.exit_status == 0


def test_automatic_names_requests_fill_the_list_only(root, server, peers):
    """GET_NAMES sent by the window (at start, after Hello, on Refresh)
    is never shown; one typed at the same time is shown once."""
    peers.append(Peer(server.port).name("B"))
    window = open_window(root, server)
    assert names(window) == ["B"]
    # Refresh pressed before the reply to NAME has come: "Hello A" looks
    # like a list of two names, but it is the reply to NAME.
    type_line(window, "NAME A")
    window.refresh_button.invoke()
    pump(root, lambda: conversation(window).endswith(
        "Server sent: Hello A\n"))
    pump(root, lambda: not window.names_requests)
    assert names(window) == ["B", "A"]
    peers.append(Peer(server.port).name("C"))
    # An automatic request and a typed one in flight together.
    window.refresh_button.invoke()
    type_and_wait(window, "get_names", "Server sent: B A C\n")
    pump(root, lambda: not window.names_requests)
    peers[0].send("MSG A x y")   # a delivery that looks like names
    window.refresh_button.invoke()
    pump(root, lambda: "B sent x y" in conversation(window))
    pump(root, lambda: not window.names_requests)
    assert conversation(window) == (
        "Pls enter commands\n\nNAME A\nServer sent: Hello A\n"
        "get_names\nServer sent: B A C\nServer sent: B sent x y\n")
    assert names(window) == ["B", "A", "C"]


def test_clicking_a_name_starts_a_message(root, server, peers):
    peers.append(Peer(server.port).name("Bob"))
    window = open_window(root, server)
    type_and_wait(window, "NAME A", "Server sent: Hello A\n")
    pump(root, lambda: names(window) == ["Bob", "A"])
    root.update()

    def click(index):
        x, y, width, height = window.names.bbox(index)
        window.names.event_generate("<Button-1>", x=x + 2, y=y + 2)
        window.names.event_generate("<ButtonRelease-1>", x=x + 2, y=y + 2)
        root.update()

    click(0)
    assert window.entry.get() == "MSG Bob "
    assert root.focus_get() is window.entry   # ready to type the message
    window.entry.insert("end", "see you at 5")
    click(1)   # another name: the message typed is kept
    assert window.entry.get() == "MSG A see you at 5"
    click(1)   # the same name again
    assert window.entry.get() == "MSG A see you at 5"
    window.entry.event_generate("<Return>")
    pump(root, lambda: conversation(window).endswith(
        "Server sent: A sent see you at 5\n"))


def test_control_characters_from_others_are_shown_escaped(root, server,
                                                          peers):
    window = open_window(root, server)
    type_and_wait(window, "NAME A", "Server sent: Hello A\n")
    peers.append(Peer(server.port).name("B"))
    peers[0].send("MSG A \x1b[2J\x07bell\ttab\u202eevil\x00")
    pump(root, lambda: conversation(window).endswith(
        "Server sent: B sent \\x1b[2J\\x07bell\\ttab\u202eevil\\x00\n"))


def test_errors_and_notices_are_coloured(root, server):
    window = open_window(root, server)
    type_and_wait(window, "MSG C hi", "set your name first with NAME "
                  "<name>\n")
    type_and_wait(window, "NAME A", "Server sent: Hello A\n")
    type_and_wait(window, "FOO", "HELP lists the commands\n")
    assert tagged(window, "error") == [
        "Server sent: ERROR: set your name first with NAME <name>\n",
        "Server sent: ERROR: unknown command; HELP lists the commands\n"]
    assert window.conversation.tag_cget("error", "foreground") != \
        window.conversation.tag_cget("notice", "foreground")
    server.stop()   # Ctrl+C: the server tells everyone it is going
    pump(root, lambda: not window.connected)
    assert tagged(window, "notice") == [
        "Server sent: SERVER: the server is shutting down\n"]
    assert conversation(window).endswith(
        "Server sent: SERVER: the server is shutting down\n"
        "Connection to the server was lost.\n")


def test_lost_connection_disables_the_entry(root, server):
    window = open_window(root, server, watch=chat_gui.PollingWatch)
    type_and_wait(window, "NAME A", "Server sent: Hello A\n")
    server.stop(signal.SIGKILL)   # gone without a word
    pump(root, lambda: not window.connected)
    assert conversation(window) == (
        "Pls enter commands\n\nNAME A\nServer sent: Hello A\n"
        "Connection to the server was lost.\n")
    assert tagged(window, "error") == ["Connection to the server was "
                                       "lost.\n"]
    for widget in (window.entry, window.send_button, window.refresh_button):
        assert str(widget["state"]) == "disabled"
    assert window.exit_status == 1
    type_line(window, "GET_NAMES")   # nothing happens, nothing breaks
    root.update()
    assert conversation(window).endswith("lost.\n")


def test_hebrew_and_emoji_travel_both_ways(root, server, peers):
    window = open_window(root, server)
    type_and_wait(window, "NAME A", "Server sent: Hello A\n")
    peers.append(Peer(server.port).name("דנה"))
    type_line(window, "MSG דנה שלום 😀")
    assert peers[0].receive() == "A sent שלום 😀"
    peers[0].send("MSG A תודה 👍")
    pump(root, lambda: conversation(window).endswith(
        "Server sent: דנה sent תודה "
        "👍\n"))


@pytest.mark.parametrize("watch", ["FileHandlerWatch", "PollingWatch"])
def test_writes_never_block_the_window(root, watch):
    """A peer that does not read: what the socket does not take waits in
    the outbox, the window goes on, and every byte arrives in order once
    the peer reads."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sock.connect(listener.getsockname())
    peer, _ = listener.accept()
    listener.close()
    try:
        window = chat_gui.ChatWindow(root, sock,
                                     watch=getattr(chat_gui, watch))
        root.update()
        lines = [f"MSG B {number:04d}" + "x" * 9980 for number in range(12)]
        for line in lines:
            type_line(window, line)
        root.update()
        assert len(window.outbox) > 50000   # queued, not blocked on
        expected = b"0009GET_NAMES" + b"".join(
            b"9990" + line.encode() for line in lines)
        received = bytearray()
        peer.setblocking(False)

        def all_received():
            try:
                received.extend(peer.recv(65536))
            except BlockingIOError:
                pass
            return len(received) >= len(expected)

        pump(root, all_received)
        assert bytes(received) == expected
        assert window.outbox == bytearray()
    finally:
        peer.close()


def test_closing_the_window_says_exit(root, server, connect):
    window = open_window(root, server)
    type_and_wait(window, "NAME A", "Server sent: Hello A\n")
    root.tk.call(root.protocol("WM_DELETE_WINDOW"))   # the close button
    with pytest.raises(tkinter.TclError):
        root.winfo_exists()   # the window is gone
    observer = connect()
    assert wait_for(lambda: observer.request("GET_NAMES") == "")
    assert server.log().count(" left") == 1


def test_a_line_too_long_is_refused_and_kept(root, server):
    window = open_window(root, server)
    line = "MSG B " + "x" * 9994
    type_line(window, line)
    root.update()
    assert conversation(window).endswith(
        "ERROR: not sent: a message is at most 9999 bytes, this one is "
        "10000\n")
    assert window.entry.get() == line


def test_the_conversation_keeps_its_last_lines(root, server):
    window = open_window(root, server)
    window.max_lines = 10
    for number in range(25):
        window.show_line(f"line {number}")
    assert conversation(window) == "".join(
        f"line {number}\n" for number in range(15, 25))


def run_gui(*arguments, **options):
    return subprocess.run([sys.executable, GUI, *arguments],
                          capture_output=True, text=True, timeout=TIMEOUT,
                          **options)


def test_cannot_connect_is_one_line_and_status_1():
    server = ServerProcess()
    port = server.port
    server.cleanup()   # nothing listens on that port now
    result = run_gui("--port", str(port))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (f"Cannot connect to 127.0.0.1:{port} "
                             "(connection refused): is the server "
                             "running?\n")


def test_a_bad_port_is_refused():
    result = run_gui("--port", "99999")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "chat_gui.py: error: argument --port: '99999' is not a port number "
        "(1 to 65535)")


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="Tk needs no X display on Windows and macOS")
def test_no_display_is_one_line_and_status_1(server):
    environment = dict(os.environ)
    environment.pop("DISPLAY", None)
    result = run_gui("--port", str(server.port), env=environment)
    assert result.returncode == 1
    assert result.stderr == ("Cannot open a window: no display name and no "
                             "$DISPLAY environment variable\n")


def test_the_program_runs_and_stops_on_ctrl_c(display):
    """The real program: its window asks for the names, and Ctrl+C
    (SIGINT) makes it say EXIT and end with status 0, without a word."""
    server = ServerProcess("--verbose")
    try:
        program = subprocess.Popen(
            [sys.executable, GUI, "--port", str(server.port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert wait_for(lambda: ": GET_NAMES" in server.log())
            program.send_signal(signal.SIGINT)
            stdout, stderr = program.communicate(timeout=TIMEOUT)
        finally:
            if program.poll() is None:
                program.kill()
                program.communicate(timeout=TIMEOUT)
        assert (program.returncode, stdout, stderr) == (0, "", "")
        assert wait_for(lambda: ": EXIT" in server.log()), server.log()
    finally:
        server.cleanup()


def test_help_lists_the_commands():
    result = run_gui("--help")
    assert result.returncode == 0
    assert "  MSG <name> <message>  send <message> to <name> only\n" in \
        result.stdout
