"""Real parts for the tests: a server process on a free port and clients
on real sockets, all bounded by timeouts."""

import errno
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import pytest

import chat_protocol as protocol

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(ROOT, "chat_server.py")
CLIENT = os.path.join(ROOT, "chat_client.py")
TIMEOUT = 5.0


def running_under_wine():
    """Whether this is a Windows Python run by Wine (as CI runs it)."""
    if sys.platform != "win32":
        return False
    import ctypes
    return hasattr(ctypes.WinDLL("ntdll"), "wine_get_version")


UNDER_WINE = running_under_wine()
# How a test stops a server the way a person does: Ctrl+C, or on Windows
# Ctrl+Break, the console event that can be sent to one process group.
if sys.platform == "win32":
    STOP_SIGNAL = signal.CTRL_BREAK_EVENT
    NEW_PROCESS_GROUP = subprocess.CREATE_NEW_PROCESS_GROUP
else:
    STOP_SIGNAL = signal.SIGINT
    NEW_PROCESS_GROUP = 0
needs_console_events = pytest.mark.skipif(
    UNDER_WINE, reason="Wine 8.0 cannot send Ctrl+Break to another process "
    "(GenerateConsoleCtrlEvent fails); .ci/windows_terminals.py stops a "
    "Windows server with Ctrl+C in a terminal instead")


def piped_output(text):
    """The bytes a program writes to a pipe for ``text``: each line ends in
    os.linesep, "\\r\\n" on Windows."""
    return text.replace("\n", os.linesep).encode()


def open_descriptors(process):
    """How many files and sockets a psutil.Process holds open (handles on
    Windows, which has no file descriptors for sockets)."""
    if sys.platform == "win32":
        return process.num_handles()
    return process.num_fds()


def wait_for(predicate, timeout=TIMEOUT, interval=0.02):
    """Poll until predicate() is true; return whether it became true."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# ------------------------------------------------- real file systems, as root

def run(*command):
    return subprocess.run(command, capture_output=True, text=True,
                          timeout=TIMEOUT)


def mount_tmpfs(folder, size="1m"):
    """Mount a tmpfs of ``size`` on ``folder``, or skip the test."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    result = run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                 str(folder))
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {result.stderr.strip()}")


def unmount(folder):
    """Unmount ``folder``; fail if a file on it is still open."""
    if run("umount", str(folder)).returncode != 0:
        run("umount", "--lazy", str(folder))
        raise AssertionError(f"{folder} was still in use: a file was left "
                             "open")


def fill(folder):
    """Fill the file system of ``folder`` to the last byte; return the
    filler's path."""
    filler = os.path.join(folder, "filler")
    with open(filler, "wb", buffering=0) as file:
        size = 65536
        while size:
            try:
                file.write(b"\0" * size)
            except OSError as error:
                assert error.errno == errno.ENOSPC
                size //= 2
    assert os.statvfs(folder).f_bavail == 0
    return filler


class ServerProcess:
    """``python chat_server.py --port 0 ...`` in a child process (or
    another server ``script`` that takes --port and logs the same
    "listening on" line).

    It runs in a temporary directory of its own, where it keeps its history
    file, removed after.  Its log goes to a file (a pipe could fill up and
    block the server); the port it chose is read back from the log's
    "listening on" line.
    """

    def __init__(self, *arguments, script=SERVER, preexec_fn=None):
        self.directory = tempfile.mkdtemp(prefix="chat_server_")
        self.log_file = open(os.path.join(self.directory, "server.log"),
                             "w+")
        self.process = subprocess.Popen(
            [sys.executable, script, "--port", "0", *arguments],
            cwd=self.directory, stdin=subprocess.DEVNULL,
            stdout=self.log_file, stderr=subprocess.STDOUT,
            preexec_fn=preexec_fn, creationflags=NEW_PROCESS_GROUP)
        self.pid = self.process.pid
        match = None

        def listening():
            nonlocal match
            match = re.search(r"listening on \S+:(\d+)", self.log())
            return match is not None or self.process.poll() is not None

        if not wait_for(listening, timeout=10) or match is None:
            self.stop()
            raise RuntimeError("the server did not start:\n" + self.log())
        self.port = int(match.group(1))

    def log(self):
        with open(self.log_file.name, encoding="utf-8",
                  errors="replace") as log:
            return log.read()

    def running(self):
        return self.process.poll() is None

    def stop(self, signum=STOP_SIGNAL, timeout=TIMEOUT):
        """Signal the server, wait for it, return its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self.log_file.close()
        return self.process.returncode

    def cleanup(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(TIMEOUT)
        self.log_file.close()
        shutil.rmtree(self.directory, ignore_errors=True)


class Peer:
    """A test client on a real blocking socket with a timeout."""

    def __init__(self, port, timeout=TIMEOUT):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout)
        self.sock.settimeout(timeout)

    def send(self, text):
        protocol.send_message(self.sock, text)

    def send_raw(self, data):
        self.sock.sendall(data)

    def receive(self):
        """The next payload as text; AssertionError if the server closed."""
        text = protocol.receive_message(self.sock)
        assert text is not None, "the server closed the connection"
        return text

    def request(self, text):
        self.send(text)
        return self.receive()

    def name(self, name):
        assert self.request(f"NAME {name}") == f"Hello {name}"
        return self

    def expect_closed(self):
        """Assert the server closes the connection with nothing more sent."""
        try:
            data = self.sock.recv(1)
        except ConnectionResetError:
            return
        assert data == b"", f"expected the close, got {data!r}"

    def drain_until_closed(self, limit=64 * 1024 * 1024):
        """Read and discard until the server closes; assert it does."""
        received = 0
        while received < limit:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                return
            if not data:
                return
            received += len(data)
        raise AssertionError(f"still open after {received} bytes")

    def expect_silence(self, seconds=0.2):
        """Assert nothing arrives for ``seconds``."""
        self.sock.settimeout(seconds)
        try:
            data = self.sock.recv(1)
        except socket.timeout:
            return
        finally:
            self.sock.settimeout(TIMEOUT)
        raise AssertionError(f"expected silence, got {data!r}")

    def reset(self):
        """Close abruptly: the server sees a reset, not an orderly close."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self):
        self.sock.close()


class TemplateClient:
    """A client written the way most course templates are, independently
    of chat_protocol: a 2-digit length field that counts the characters of
    the text (``str(len(text)).zfill(2)``), and replies read with
    ``recv(length)``, a count of bytes."""

    def __init__(self, port, timeout=TIMEOUT):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout)
        self.sock.settimeout(timeout)

    def send(self, text):
        self.sock.sendall((str(len(text)).zfill(2) + text).encode("utf-8"))

    def _receive_exactly(self, size):
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            assert chunk, f"the server closed the connection after {data!r}"
            data += chunk
        return data

    def receive_frame(self):
        """The next frame, length field included (bytes)."""
        header = self._receive_exactly(2)
        assert header.isdigit(), f"not a 2-digit length field: {header!r}"
        return header + self._receive_exactly(int(header))

    def receive(self):
        return self.receive_frame()[2:].decode("utf-8")

    def request(self, text):
        self.send(text)
        return self.receive()

    def close(self):
        self.sock.close()


class TerminalClient:
    """``python chat_client.py`` on a real pseudo-terminal.

    The output is kept raw (``raw``) and rendered by a VT100 emulator, so
    ``lines()`` is exactly what a person would see on the screen.
    """

    def __init__(self, port, *arguments, rows=40, columns=100, command=None,
                 env=None):
        import fcntl
        import pty
        import termios
        import pyte

        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ,
                    struct.pack("HHHH", rows, columns, 0, 0))
        self.attributes_before = termios.tcgetattr(self.slave)
        slave = self.slave

        def own_terminal():
            # A session of its own with the pty as controlling terminal, so
            # Ctrl+C typed on the pty reaches the client as SIGINT.
            os.setsid()
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

        # ``command`` runs something else on the terminal (a shell).
        self.process = subprocess.Popen(
            command or [sys.executable, CLIENT, "--port", str(port),
                        *arguments],
            cwd=ROOT, stdin=slave, stdout=slave, stderr=slave,
            preexec_fn=own_terminal,
            env=dict(os.environ, PYTHONUTF8="1", **(env or {})))
        self.raw = bytearray()
        self.screen = pyte.Screen(columns, rows)
        self.stream = pyte.ByteStream(self.screen)

    def pump(self, timeout=0.05):
        """Read what the client has written, waiting at most ``timeout``."""
        import select
        while select.select([self.master], [], [], timeout)[0]:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.raw += data
            self.stream.feed(data)
            timeout = 0.01

    def lines(self):
        """The screen's lines, without trailing blanks."""
        lines = [line.rstrip() for line in self.screen.display]
        while lines and not lines[-1]:
            lines.pop()
        return lines

    def text(self):
        return "\n".join(self.lines())

    def wait_for(self, text, timeout=TIMEOUT):
        """Wait until ``text`` is on the screen."""
        def shown():
            self.pump()
            return text in self.text()
        assert wait_for(shown, timeout), (
            f"{text!r} not on the screen:\n{self.text()}")

    def wait_for_last_line(self, line, timeout=TIMEOUT):
        """Wait until the last line on the screen is ``line``."""
        def shown():
            self.pump()
            return self.lines()[-1:] == [line]
        assert wait_for(shown, timeout), (
            f"{line!r} is not the last line:\n{self.text()}")

    def type(self, keys):
        os.write(self.master, keys.encode("utf-8"))

    def wait_exit(self, timeout=TIMEOUT):
        """Wait for the client to end; return its exit status."""
        try:
            status = self.process.wait(timeout)
        finally:
            self.pump()
        return status

    def resize(self, rows, columns):
        """Change the terminal's size, as a window being resized does (the
        emulated screen keeps its text, as xterm does)."""
        import fcntl
        import termios
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ,
                    struct.pack("HHHH", rows, columns, 0, 0))
        self.pump()
        self.screen.resize(rows, columns)

    def cursor(self):
        """Where the cursor is: (row, column), from 0."""
        return self.screen.cursor.y, self.screen.cursor.x

    def attributes(self):
        import termios
        return termios.tcgetattr(self.slave)

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(TIMEOUT)
        os.close(self.master)
        os.close(self.slave)
