"""The README's commands, run as written: a README that drifts from the
programs is a defect.

Every ``python3 ...`` command in the README, in a ``sh`` block or inline,
is run here exactly as written (``python3`` being the interpreter running
the tests), in a folder holding a copy of the programs; the server's
commands on their default port 8820.  The setup commands of "Running the
tests" are run by ``.ci/run`` itself, and each Windows (``bat``) block must
say what the ``sh`` block before it says.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys

import pytest

import chat_protocol as protocol
from support import ROOT, TIMEOUT, wait_for

README = os.path.join(ROOT, "README.md")
PORT = protocol.SERVER_PORT
# Run with a display, by their own test.
WINDOW_COMMANDS = ("python3 chat_gui.py", "python3 docs/screenshot_gui.py")

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="the README's commands are run on "
    "Linux; its Windows blocks are checked against them")


def read_readme():
    with open(README, encoding="utf-8") as file:
        return file.read()


def fenced_blocks():
    """(language, lines) of each fenced block, in order."""
    blocks = re.findall(r"^( *)```(\w*)\n(.*?)^\1```$", read_readme(),
                        re.M | re.S)
    return [(language, [line[len(indent):] for line in
                        body.strip("\n").split("\n")])
            for indent, language, body in blocks]


def code_blocks(language):
    """The lines of each fenced block of ``language``, in order."""
    return [lines for kind, lines in fenced_blocks() if kind == language]


def ci_setup_lines():
    """The lines .ci/run runs from the README: the block after
    "## Running the tests"."""
    section = read_readme().split("## Running the tests", 1)[1]
    block = re.search(r"^```sh\n(.*?)^```$", section, re.M | re.S)
    return block.group(1).strip("\n").split("\n")


def program_commands():
    """Every ``python3`` command the README shows, in order, once each."""
    text = read_readme()
    commands = [line for block in code_blocks("sh") for line in block
                if line.startswith("python3 ") or " | python3 " in line]
    commands += re.findall(r"`(python3 [^`]+)`", text)
    setup = set(ci_setup_lines())
    return list(dict.fromkeys(c for c in commands if c not in setup))


@pytest.fixture
def folder(tmp_path):
    """A folder with the programs, where README commands run."""
    for name in os.listdir(ROOT):
        if name.startswith("chat_") and name.endswith(".py"):
            shutil.copy(os.path.join(ROOT, name), tmp_path)
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    (bin_folder / "python3").symlink_to(sys.executable)
    return tmp_path


def start(folder, command, **options):
    """``command`` as a shell would run it, in ``folder``."""
    env = dict(os.environ, PATH=f"{folder / 'bin'}{os.pathsep}"
               f"{os.environ['PATH']}", PYTHONUTF8="1")
    options.setdefault("stdout", subprocess.PIPE)
    return subprocess.Popen(
        ["bash", "-c", f"exec {command}"], cwd=folder, env=env,
        stderr=subprocess.STDOUT, text=True, **options)


def port_in_use():
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", PORT)) == 0


class Running:
    """A long-running README command, its output kept in a file."""

    count = 0

    def __init__(self, folder, command):
        Running.count += 1
        self.path = folder / f"output-{Running.count}.txt"
        with open(self.path, "w") as output:
            self.process = start(folder, command, stdin=subprocess.DEVNULL,
                                 stdout=output)

    def text(self):
        with open(self.path, encoding="utf-8", errors="replace") as output:
            return output.read()

    def wait_for(self, text):
        assert wait_for(lambda: text in self.text()), self.text()

    def stop(self):
        """Stop it as Ctrl+C does; return its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(TIMEOUT)
            raise


def run(folder, command, stdin=""):
    process = start(folder, command, stdin=subprocess.PIPE)
    output, _ = process.communicate(stdin, timeout=TIMEOUT * 3)
    return process.returncode, output


def test_the_commands_block_is_the_command_table():
    section = read_readme().split("## The commands", 1)[1]
    block = re.search(r"^```text\n(.*?)^```$", section, re.M | re.S)
    assert block.group(1).rstrip("\n").split("\n") == protocol.help_lines()


def test_each_windows_block_says_what_the_block_before_it_says():
    blocks = fenced_blocks()
    pairs = [(blocks[number - 1][1], lines)
             for number, (kind, lines) in enumerate(blocks) if kind == "bat"]
    assert len(pairs) >= 3
    for posix, windows in pairs:
        translated = [
            r".venv\Scripts\activate" if line == ". .venv/bin/activate"
            else re.sub(r"^python3 ", "py ", line) for line in posix]
        assert windows == translated


def test_the_ci_runs_the_readme_setup_exactly():
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as file:
        script = file.read()
    assert "readme_setup" in script
    assert ci_setup_lines() == [
        "python3 -m venv .venv", ". .venv/bin/activate",
        "pip install -r requirements-dev.txt", "python -m pytest"]


def test_every_program_command_runs_as_written(folder):
    """Start the README's server as written, then every other command of
    the README against it; each must do what the README says."""
    if port_in_use():
        pytest.skip(f"port {PORT} is in use: the README's commands need it")
    commands = [c for c in program_commands() if c not in WINDOW_COMMANDS]
    servers = [c for c in commands if c.startswith("python3 chat_server.py")]
    others = [c for c in commands if c not in servers]
    assert servers[0] == "python3 chat_server.py"
    for command in servers[1:]:
        server = Running(folder, command)
        try:
            server.wait_for("listening on ")
        finally:
            status = server.stop()
        assert status == 0, server.text()
    server = Running(folder, servers[0])
    try:
        server.wait_for(f"listening on 127.0.0.1:{PORT}")
        for command in others:
            run_one(folder, command, server)
    finally:
        status = server.stop()
    assert status == 0, server.text()
    assert "Traceback" not in server.text()


def test_the_window_commands_run_as_written(folder, display):
    assert [c for c in program_commands() if c in WINDOW_COMMANDS] == list(
        WINDOW_COMMANDS)
    if port_in_use():
        pytest.skip(f"port {PORT} is in use: the README's commands need it")
    server = Running(folder, "python3 chat_server.py")
    try:
        server.wait_for(f"listening on 127.0.0.1:{PORT}")
        window = Running(folder, "python3 chat_gui.py")
        try:
            server.wait_for(" connected")
        finally:
            status = window.stop()
        assert status == 0, window.text()
        assert wait_for(lambda: "closed the connection" in server.text()
                        or "left" in server.text())
    finally:
        assert server.stop() == 0, server.text()
    if shutil.which("xwd") is None:
        pytest.skip("xwd is not installed (Debian: apt-get install x11-apps)")
    shutil.copytree(os.path.join(ROOT, "docs"), folder / "docs")
    (folder / "docs" / "chat_gui.png").unlink()
    status, output = run(folder, "python3 docs/screenshot_gui.py")
    assert status == 0, output
    with open(folder / "docs" / "chat_gui.png", "rb") as picture:
        assert picture.read(8) == b"\x89PNG\r\n\x1a\n"


def run_one(folder, command, server):
    """Run one README command against the running server and check it."""
    if command.startswith("printf "):
        status, output = run(folder, command)
        assert status == 0, output
        assert "Server sent: Hello A\n" in output
    elif command == "python3 --version":
        status, output = run(folder, command)
        assert (status, output.split()[0]) == (0, "Python"), output
    elif command.startswith("python3 chat_client.py --help"):
        status, output = run(folder, command)
        assert status == 0
        assert all(f"  {line}\n" in output for line in protocol.help_lines())
    elif command.startswith("python3 chat_client.py"):
        status, output = run(folder, command, "NAME Readme\nGET_NAMES\n")
        assert status == 0, output
        assert "Server sent: Hello Readme" in output
        assert "Server sent: Readme" in output
    elif command.startswith("python3 chat_check.py"):
        status, output = run(folder, command)
        assert status == 0, output
        assert "\nscore: " in output and "FAIL" not in output
    elif command.startswith("python3 chat_bot.py"):
        bot = Running(folder, command)
        try:
            server.wait_for("(Bot) named")
        finally:
            status = bot.stop()
        assert status == 0, bot.text()
    else:
        raise AssertionError(f"no test runs this README command: {command}")
