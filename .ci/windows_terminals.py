"""The chat's example run (SPEC section 3) and more, with Windows-CPython
clients under Wine, each in a real terminal (a tmux session of its own),
typed key by key through the client's msvcrt.kbhit()/getwch() path.

    python3 .ci/windows_terminals.py WINDOWS_PYTHON_EXE

The server is the Windows CPython too.  Run by .ci/windows, which sets up
Wine and the environment (WINEPREFIX, a UTF-8 locale).  Prints one line if
every check passed; otherwise each failed check, with the screens.  Exit
status 1 if a check failed.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A tmux server of our own, its socket in a folder removed at the end.
TMUX_FOLDER = tempfile.mkdtemp(prefix="chat-windows-")
TMUX = ["tmux", "-u", "-S", os.path.join(TMUX_FOLDER, "tmux")]
WAIT = 30.0
# Ctrl+C must stop an idle server within about a second.
IDLE_STOP_SECONDS = 1.0

EXAMPLE_A = """Pls enter commands

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
EXIT_STATUS=0"""

EXAMPLE_FIRST_B = """Pls enter commands

NAME B
Server sent: Hello B
EXIT
EXIT_STATUS=0"""

EXAMPLE_SECOND_B = """Pls enter commands

NAME B
Server sent: Hello B
Server sent: A sent HELLO
MSG A HELLO
EXIT
EXIT_STATUS=0"""


def tmux(*arguments):
    return subprocess.run(TMUX + list(arguments), capture_output=True,
                          text=True, timeout=10).stdout


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Terminal:
    """A program in a 120x40 tmux session; when it ends, the line
    ``EXIT_STATUS=<status>`` is printed and the screen kept."""

    def __init__(self, name, command):
        self.name = name
        tmux("new-session", "-d", "-s", name, "-x", "120", "-y", "40",
             "-c", PROJECT, f"{command}; echo EXIT_STATUS=$?; "
             "exec sleep 3600")

    def screen(self):
        """The screen's text, without trailing blank lines."""
        lines = tmux("capture-pane", "-p", "-t", self.name).split("\n")
        lines = [line.rstrip() for line in lines]
        while lines and not lines[-1]:
            lines.pop()
        return "\n".join(lines)

    def lines(self):
        return self.screen().split("\n")

    def wait_for(self, line, count=1, timeout=WAIT):
        """Wait until ``line`` is a whole line of the screen ``count``
        times; return whether it came."""
        deadline = time.monotonic() + timeout
        while self.lines().count(line) < count:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def type(self, text):
        """Type ``text`` one key at a time."""
        for char in text:
            tmux("send-keys", "-t", self.name, "-l", char)

    def press(self, key):
        """Press a named key: Enter, BSpace, C-c."""
        tmux("send-keys", "-t", self.name, key)

    def enter(self, line):
        self.type(line)
        self.press("Enter")

    def program_pid(self):
        """The Unix pid of the program the pane's shell runs."""
        shell = tmux("display", "-p", "-t", self.name, "#{pane_pid}").strip()
        children = subprocess.run(["pgrep", "-P", shell], capture_output=True,
                                  text=True).stdout.split()
        return int(children[0])


class Checks:
    """Named checks; a failure is shown with the screens it concerns."""

    def __init__(self):
        self.passed = []
        self.failed = []

    def check(self, what, ok, *terminals):
        if ok:
            self.passed.append(what)
            return True
        self.failed.append(what)
        print(f"FAIL  {what}")
        for terminal in terminals:
            print(f"---- {terminal.name}'s screen ----")
            print(terminal.screen())
        return False


def windows_program(python, script, *arguments):
    return f"wine '{python}' {script} " + " ".join(arguments)


def start_server(python):
    port = free_port()
    # No history file: nothing is left behind in the project.
    server = Terminal(f"server{port}", windows_program(
        python, "chat_server.py", "--port", str(port), "--no-history"))
    if not wait_for_text(server, "listening on", WAIT):
        raise SystemExit("the server did not start:\n" + server.screen())
    return server, port


def wait_for_text(terminal, text, timeout):
    """Wait until ``text`` is anywhere on the screen; return whether it
    came."""
    deadline = time.monotonic() + timeout
    while text not in terminal.screen():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def example_run(checks, python):
    """SPEC section 3, then Ctrl+C on the idle server."""
    server, port = start_server(python)

    def client(name):
        terminal = Terminal(name, windows_program(
            python, "chat_client.py", "--port", str(port)))
        terminal.wait_for("Pls enter commands")
        return terminal

    a = client("A")
    a.enter("NAME A")
    a.wait_for("Server sent: Hello A")
    first_b = client("B1")
    first_b.enter("NAME B")
    first_b.wait_for("Server sent: Hello B")
    a.enter("GET_NAMES")
    a.wait_for("Server sent: A B")
    first_b.enter("EXIT")
    first_b.wait_for("EXIT_STATUS=0")
    a.enter("GET_NAMES")
    a.wait_for("Server sent: A")
    second_b = client("B2")
    second_b.enter("NAME B")
    second_b.wait_for("Server sent: Hello B")
    a.enter("GET_NAMES")
    a.wait_for("Server sent: A B", count=2)
    a.enter("MSG B HELLO")
    second_b.wait_for("Server sent: A sent HELLO")
    second_b.enter("MSG A HELLO")
    a.wait_for("Server sent: B sent HELLO")
    second_b.enter("EXIT")
    second_b.wait_for("EXIT_STATUS=0")
    a.enter("EXIT")
    a.wait_for("EXIT_STATUS=0")
    checks.check("example run: A's screen is SPEC section 3's",
                 a.screen() == EXAMPLE_A, a)
    checks.check("example run: the first B's screen",
                 first_b.screen() == EXAMPLE_FIRST_B, first_b)
    checks.check("example run: the second B's screen is SPEC section 3's",
                 second_b.screen() == EXAMPLE_SECOND_B, second_b)

    # Every client has left: the server is idle in select().
    time.sleep(1)
    pressed = time.monotonic()
    server.press("C-c")
    stopping = wait_for_text(server, "shutting down", 5)
    seconds = time.monotonic() - pressed
    checks.check(f"Ctrl+C stops the idle Windows server within "
                 f"{IDLE_STOP_SECONDS} s (took {seconds:.2f} s)",
                 stopping and seconds <= IDLE_STOP_SECONDS, server)
    checks.check("the Windows server exits 0 after Ctrl+C",
                 server.wait_for("EXIT_STATUS=0", timeout=10), server)
    checks.check("no traceback in the server's terminal",
                 "Traceback" not in server.screen(), server)


def more_keys(checks, python):
    """A half-typed line, Backspace, Hebrew, 'à', Ctrl+C, a killed
    server."""
    server, port = start_server(python)
    c, d = (Terminal(name, windows_program(
        python, "chat_client.py", "--port", str(port))) for name in "CD")
    for terminal, name in ((c, "C"), (d, "D")):
        terminal.wait_for("Pls enter commands")
        terminal.enter(f"NAME {name}")
        terminal.wait_for(f"Server sent: Hello {name}")

    c.type("MSG D half")
    c.wait_for("MSG D half")
    time.sleep(0.3)
    d.enter("MSG C arrives while you type")
    c.wait_for("Server sent: D sent arrives while you type")
    time.sleep(0.3)
    checks.check("a half-typed line is redrawn under an arriving message",
                 c.lines()[-2:] == ["Server sent: D sent arrives while you "
                                    "type", "MSG D half"], c)
    c.type(" line")
    for _ in range(3):
        c.press("BSpace")
    time.sleep(0.5)
    checks.check("Backspace erases a character on the screen",
                 c.lines()[-1] == "MSG D half l", c)
    c.press("Enter")
    checks.check("Backspace erases it from the line sent",
                 d.wait_for("Server sent: C sent half l"), d)

    c.enter("MSG D שלום")
    checks.check("Hebrew typed on Windows arrives",
                 d.wait_for("Server sent: C sent שלום"), c, d)
    d.enter("MSG C שלום עולם")
    checks.check("Hebrew received on Windows is shown",
                 c.wait_for("Server sent: D sent שלום עולם"), c)

    # Typing 'à' (U+00E0): msvcrt.getwch() also gives '\xe0' as the first
    # half of an arrow key.  The last line makes sure C is reading again.
    c.enter("MSG D àbc")
    c.enter("MSG D after")
    d.wait_for("Server sent: C sent after", timeout=10)
    checks.check("'à' typed on Windows arrives as 'à'",
                 d.lines().count("Server sent: C sent àbc") == 1, c, d)

    c.type("abc")
    time.sleep(0.3)
    c.press("C-c")
    # The status is printed right after what the client left on the screen:
    # the half-typed line stays, and what follows starts on a fresh line.
    checks.check("Ctrl+C ends the client with status 0",
                 wait_for_text(c, "EXIT_STATUS=0", 10), c)
    checks.check("Ctrl+C on a half-typed line ends on a fresh line",
                 c.lines()[-2:] == ["abc", "EXIT_STATUS=0"], c)
    checks.check("no traceback after Ctrl+C", "Traceback" not in c.screen(),
                 c)

    d.type("half")
    time.sleep(0.3)
    os.kill(server.program_pid(), signal.SIGKILL)
    d.wait_for("EXIT_STATUS=1", timeout=10)
    checks.check("the server killed: the client keeps the half-typed line, "
                 "says so in one line and exits 1",
                 d.lines()[-4:] == ["Server sent: C sent after", "half",
                                    "Connection to the server was lost.",
                                    "EXIT_STATUS=1"], d)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("python", help="the Windows python.exe")
    arguments = parser.parse_args()
    checks = Checks()
    try:
        example_run(checks, arguments.python)
        more_keys(checks, arguments.python)
    finally:
        tmux("kill-server")
        shutil.rmtree(TMUX_FOLDER, ignore_errors=True)
    if checks.failed:
        print(f"{len(checks.failed)} of "
              f"{len(checks.failed) + len(checks.passed)} checks failed")
        return 1
    print(f"{len(checks.passed)} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
