"""A terminal client for the chat.

    python chat_client.py [--host H] [--port P] [--show-frames]

One loop watches the keyboard and the server together, so a message from
another user appears at once, even while you are typing: your half-typed
line is lifted off the screen, the message printed, and the line put back.
"""

import argparse
import codecs
import os
import queue
import select
import socket
import sys
import threading
import time
import unicodedata

import chat_protocol as protocol

COMMANDS_HELP = "commands:\n" + "".join(
    f"  {line}\n" for line in protocol.help_lines()) + """
keys: Backspace erases, Enter sends the line; Ctrl+D on an empty line
leaves (Linux and macOS). Exit status: 0 after EXIT, Ctrl+C or the end of
piped input; 1 if the server cannot be reached or the connection is lost.
"""

RECEIVE_SIZE = 65536
EXIT_WAIT = 1.0          # seconds to wait for the server's EXIT frame
WINDOWS_POLL = 0.02      # seconds between keyboard polls on Windows
LOST_CONNECTION = "Connection to the server was lost."

CTRL_C = "\x03"
CTRL_D = "\x04"
ESCAPE = "\x1b"
BACKSPACES = frozenset("\b\x7f")
ENTERS = frozenset("\r\n")
QUIT = None              # what LineEditor.feed() gives for Ctrl+C / Ctrl+D


def columns(char):
    """How many terminal columns ``char`` takes."""
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in "WF" else 1


class LineEditor:
    """The line being typed: echo, Backspace, Enter.

    ``feed(keys)`` takes typed characters and returns the lines completed by
    Enter, with QUIT for Ctrl+C, or Ctrl+D on an empty line.  ``hide()`` and
    ``show()`` lift the half-typed line off the screen and put it back.
    """

    def __init__(self, output, echo=True):
        self.output = output
        self.echo = echo
        self.chars = []
        # Where we are in an escape sequence that a special key sends
        # (an arrow key sends ESC [ A): None, "escape" or "sequence".
        self._escape = None

    def feed(self, keys):
        completed = []
        for key in keys:
            if self._escape is not None:
                if self._escape == "escape" and key in "[O":
                    self._escape = "sequence"
                elif self._escape == "sequence" and key in "0123456789;":
                    pass
                else:
                    self._escape = None
                continue
            if key in ENTERS:
                completed.append("".join(self.chars))
                self.chars = []
                self._write("\n")
            elif key in BACKSPACES:
                if self.chars:
                    width = columns(self.chars.pop())
                    self._write("\b" * width + " " * width + "\b" * width)
            elif key == CTRL_C or (key == CTRL_D and not self.chars):
                completed.append(QUIT)
                break
            elif key == ESCAPE:
                self._escape = "escape"
            elif key.isprintable() or unicodedata.category(key) in (
                    "Zs", "Mn", "Mc", "Me", "Cf"):
                self.chars.append(key)
                self._write(key)
            # Other control keys do nothing.
        return completed

    def hide(self):
        if self.chars:
            width = sum(columns(char) for char in self.chars)
            self._write("\r" + " " * width + "\r")

    def show(self):
        if self.chars:
            self._write("".join(self.chars))

    def _write(self, text):
        if self.echo:
            self.output.write(text)


class PosixTerminal:
    """The keyboard on Linux and macOS: the terminal in non-canonical,
    no-echo mode, read a key at a time; restored on the way out."""

    echo = True

    def __init__(self, stream=None):
        self.fileno = (stream or sys.stdin).fileno()
        self._decoder = codecs.getincrementaldecoder(protocol.ENCODING)(
            "replace")
        self._saved = None

    def __enter__(self):
        import termios
        self._saved = termios.tcgetattr(self.fileno)
        attributes = termios.tcgetattr(self.fileno)
        attributes[3] &= ~(termios.ICANON | termios.ECHO)
        attributes[6][termios.VMIN] = 1
        attributes[6][termios.VTIME] = 0
        termios.tcsetattr(self.fileno, termios.TCSADRAIN, attributes)
        return self

    def __exit__(self, *exc_info):
        import termios
        termios.tcsetattr(self.fileno, termios.TCSADRAIN, self._saved)

    def read(self):
        """The keys typed since the last read; None at end of input."""
        data = os.read(self.fileno, 1024)
        return self._decoder.decode(data) if data else None


class WindowsConsole:
    """The keyboard on Windows: msvcrt.kbhit() and getwch(), polled."""

    echo = True
    fileno = None  # select() on Windows takes sockets only: poll instead

    def __init__(self, console=None):
        if console is None:
            import msvcrt as console
        self._console = console

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        pass

    def read(self):
        keys = []
        while self._console.kbhit():
            key = self._console.getwch()
            if key in ("\x00", "\xe0"):
                self._console.getwch()  # the second half of a special key
            else:
                keys.append(key)
        return "".join(keys)


class PipedInput:
    """Standard input that is not a terminal: whole lines, no echo, so the
    client can be scripted.  Read by a helper thread on Windows, where
    select() does not take pipes."""

    echo = False

    def __init__(self, stream=None):
        self._fd = (stream or sys.stdin).fileno()
        self._decoder = codecs.getincrementaldecoder(protocol.ENCODING)(
            "replace")
        if sys.platform == "win32":
            self.fileno = None
            self._chunks = queue.Queue()
            threading.Thread(target=self._pump, daemon=True).start()
        else:
            self.fileno = self._fd

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        pass

    def _pump(self):
        while True:
            data = os.read(self._fd, 65536)
            self._chunks.put(data)
            if not data:
                return

    def read(self):
        """The text read since the last call; None at end of input."""
        if self.fileno is not None:
            data = os.read(self._fd, 65536)
        else:
            try:
                data = self._chunks.get_nowait()
            except queue.Empty:
                return ""
        return self._decoder.decode(data) if data else None


# The keyboard backend, chosen once for this platform.
Keyboard = WindowsConsole if sys.platform == "win32" else PosixTerminal


def open_keyboard():
    """The input for this standard input: the keyboard, or a pipe."""
    return Keyboard() if sys.stdin.isatty() else PipedInput()


class ChatClient:
    """Shows what the server sends and sends what the user types."""

    def __init__(self, sock, output, show_frames=False):
        self.sock = sock
        self.output = output
        self.show_frames = show_frames
        self.decoder = protocol.FrameDecoder()

    def run(self, keyboard):
        """Serve the user until EXIT, Ctrl+C, end of input or a lost
        connection; return the exit status."""
        editor = LineEditor(self.output, echo=keyboard.echo)
        watched = [self.sock]
        if keyboard.fileno is not None:
            watched.append(keyboard.fileno)
            timeout = None
        else:
            timeout = WINDOWS_POLL
        try:
            while True:
                readable = select.select(watched, [], [], timeout)[0]
                if self.sock in readable:
                    editor.hide()
                    payloads = self._receive()
                    for payload in payloads or ():
                        self._show_received(payload)
                    if payloads is None:
                        self._print(LOST_CONNECTION)
                        return 1
                    editor.show()
                    self.output.flush()
                if timeout is not None or keyboard.fileno in readable:
                    keys = keyboard.read()
                    if keys is None:
                        # End of input: send a last line that had no Enter.
                        lines = editor.feed("\n" if editor.chars else "")
                        lines.append(QUIT)
                    else:
                        lines = editor.feed(keys)
                    self.output.flush()
                    for line in lines:
                        if line is QUIT or self._submit(line):
                            return self._leave()
        except KeyboardInterrupt:
            return self._leave()
        except OSError:
            editor.hide()
            self._print(LOST_CONNECTION)
            return 1

    def _submit(self, line):
        """Send a typed line; return True if it was EXIT."""
        if not line.strip():
            return False
        try:
            data = protocol.encode(line)
        except protocol.MessageTooLongError as error:
            self._print(f"ERROR: not sent: {error}")
            return False
        if protocol.parse_command(line)[0] == protocol.COMMAND_EXIT:
            return True
        self._send(data)
        return False

    def _send(self, data):
        self.sock.sendall(data)
        if self.show_frames:
            self._show_frame("sent", data)

    def _leave(self):
        """Send EXIT and wait briefly for the server's EXIT frame or the
        close; the EXIT frame itself is not shown.  Returns 0."""
        try:
            self._send(protocol.encode(protocol.COMMAND_EXIT))
            deadline = time.monotonic() + EXIT_WAIT
            while time.monotonic() < deadline:
                if not select.select([self.sock], [], [],
                                     deadline - time.monotonic())[0]:
                    break
                payloads = self._receive()
                if payloads is None:
                    break
                for payload in payloads:
                    if payload == protocol.COMMAND_EXIT.encode():
                        if self.show_frames:
                            self._show_frame("received",
                                             protocol.frame(payload))
                        return 0
                    self._show_received(payload)
        except OSError:
            pass
        finally:
            self.output.flush()
        return 0

    def _receive(self):
        """The payloads that have arrived; None if the connection ended."""
        try:
            data = self.sock.recv(RECEIVE_SIZE)
        except OSError:
            return None
        if not data:
            return None
        try:
            return self.decoder.feed(data)
        except protocol.ProtocolError:
            return None

    def _show_received(self, payload):
        if self.show_frames:
            self._show_frame("received", protocol.frame(payload))
        text = protocol.safe_text(protocol.decode(payload))
        self._print(f"Server sent: {text}")

    def _show_frame(self, direction, frame):
        """With --show-frames: a frame's bytes, length field included."""
        text = protocol.safe_text(protocol.decode(frame))
        self._print(f"Frame {direction}: {text}")

    def _print(self, line):
        self.output.write(line + "\n")


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        description="A terminal client for the chat (see README.md).",
        epilog=COMMANDS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=protocol.SERVER_IP,
                        help="the server's address (default %(default)s)")
    parser.add_argument("--port", type=protocol.port_number,
                        default=protocol.SERVER_PORT,
                        help="the server's port (default %(default)s)")
    parser.add_argument("--show-frames", action="store_true",
                        help="also print every frame sent and received, "
                        "length field included")
    return parser.parse_args(argv)


def main(argv=None):
    arguments = parse_arguments(argv)
    # Whatever the console's encoding, never fail on a character.
    sys.stdout.reconfigure(errors="replace")
    address = (arguments.host, arguments.port)
    try:
        sock = socket.create_connection(address, timeout=10)
    except OSError as error:
        print(f"Cannot connect to {arguments.host}:{arguments.port} "
              f"({protocol.describe_error(error)}): is the server running?",
              file=sys.stderr)
        return 1
    sock.settimeout(None)
    print("Pls enter commands\n", flush=True)
    client = ChatClient(sock, sys.stdout, arguments.show_frames)
    try:
        with open_keyboard() as keyboard:
            return client.run(keyboard)
    finally:
        sock.close()
        sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
