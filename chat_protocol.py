"""The chat's wire protocol, shared by the server and the client.

Every message, in both directions, is one frame: the payload's length in
bytes as exactly four ASCII digits, then the payload, UTF-8 text of at most
9999 bytes.  ``NAME A`` travels as ``b"0006NAME A"``.

The framing itself is "sans-I/O": ``encode`` builds a frame and
``FrameDecoder`` is fed bytes however they arrive and hands back whole
payloads.  ``send_message`` and ``receive_message`` are thin blocking
helpers built on them.  Command parsing and name rules live here too, so the
server and the client agree on them.
"""

import errno
import socket
import sys

# Checked before anything else can fail on an older Python (this module
# keeps to syntax that Python 3.6 can read, so that this line is reached).
if sys.version_info < (3, 8):
    sys.exit("This chat needs Python 3.8 or newer; this is Python "
             + sys.version.split()[0] + ".")

SERVER_IP = "127.0.0.1"
SERVER_PORT = 8820
LENGTH_FIELD_SIZE = 4
MAX_MSG_LENGTH = 9999
ENCODING = "utf-8"

COMMAND_NAME = "NAME"
COMMAND_GET_NAMES = "GET_NAMES"
COMMAND_MSG = "MSG"
COMMAND_BROADCAST = "BROADCAST"
COMMAND_HISTORY = "HISTORY"
COMMAND_HELP = "HELP"
COMMAND_EXIT = "EXIT"
# Every command: its usage and what it does.  The server's HELP, the
# client's --help and the README's table are all this one list.
COMMANDS = {
    COMMAND_NAME: ("NAME <name>", "take a name, or change yours"),
    COMMAND_GET_NAMES: ("GET_NAMES", "list the names of everyone here"),
    COMMAND_MSG: ("MSG <name> <message>", "send <message> to <name> only"),
    COMMAND_BROADCAST: ("BROADCAST <message>",
                        "send <message> to everyone else"),
    COMMAND_HISTORY: ("HISTORY [n]", "show the last n broadcasts (20)"),
    COMMAND_HELP: ("HELP [command]", "list the commands, or show one"),
    COMMAND_EXIT: ("EXIT", "leave the chat"),
}
COMMAND_USAGE = {word: usage for word, (usage, _) in COMMANDS.items()}


def help_lines(words=None):
    """One line per command (of ``words``, or all): usage, then what it
    does, in aligned columns."""
    width = max(len(usage) for usage, _ in COMMANDS.values())
    return [f"{COMMANDS[word][0]:<{width}}  {COMMANDS[word][1]}"
            for word in (words or COMMANDS)]


MAX_NAME_LENGTH = 20
NAME_RULE = "a name is 1 to 20 letters, digits, '_' or '-'"
_NAME_PUNCTUATION = frozenset("_-")


class ProtocolError(Exception):
    """The byte stream cannot be framed; nothing after this can be trusted."""


class IncompleteFrameError(ProtocolError):
    """The connection closed part-way through a frame."""

    def __init__(self, partial, expected):
        super().__init__(
            f"connection closed after {len(partial)} of {expected} bytes "
            "of a frame")
        self.partial = partial
        self.expected = expected


class MessageTooLongError(ValueError):
    """A payload does not fit in one frame."""


def frame(payload):
    """Return the frame carrying ``payload`` (bytes).

    Raises MessageTooLongError if it is longer than MAX_MSG_LENGTH bytes.
    """
    if len(payload) > MAX_MSG_LENGTH:
        raise MessageTooLongError(
            f"a message is at most {MAX_MSG_LENGTH} bytes, "
            f"this one is {len(payload)}")
    return b"%04d" % len(payload) + payload


def encode(text):
    """Return the frame carrying ``text``, encoded as UTF-8."""
    return frame(text.encode(ENCODING))


def decode(payload):
    """Return the text of a payload; invalid UTF-8 becomes U+FFFD."""
    return payload.decode(ENCODING, errors="replace")


class FrameDecoder:
    """Turns a byte stream into payloads.

    ``feed(data)`` returns the payloads (bytes) of every frame completed by
    ``data``, in order, and keeps any incomplete frame for the next call.
    Each byte is copied a bounded number of times, however the stream is
    split, so the work is proportional to the bytes received.
    """

    def __init__(self):
        self._pending = bytearray()
        # How many pending bytes are needed before a frame can complete.
        self._wanted = LENGTH_FIELD_SIZE

    @property
    def pending(self):
        """The number of bytes held of an incomplete frame."""
        return len(self._pending)

    def feed(self, data):
        """Add ``data``; return the list of payloads it completes.

        Raises ProtocolError on a length field that is not four ASCII digits;
        the decoder must not be used after that.
        """
        pending = self._pending
        if pending:
            pending += data
            if len(pending) < self._wanted:
                return []
            data = bytes(pending)
            pending.clear()
        payloads = []
        position = 0
        end = len(data)
        while end - position >= LENGTH_FIELD_SIZE:
            header = data[position:position + LENGTH_FIELD_SIZE]
            # bytes.isdigit() is true for ASCII digits only; int() alone
            # would also accept " 12", "+12" and "1_2".
            if not header.isdigit():
                raise ProtocolError(
                    f"bad length field {bytes(header)!r}: a frame starts "
                    f"with {LENGTH_FIELD_SIZE} digits giving the "
                    "payload's length")
            start = position + LENGTH_FIELD_SIZE
            stop = start + int(header)
            if stop > end:
                self._wanted = stop - position
                break
            payloads.append(data[start:stop])
            position = stop
        else:
            self._wanted = LENGTH_FIELD_SIZE
        if position < end:
            pending += data[position:]
        return payloads


def send_message(sock, text):
    """Send ``text`` as one frame on a blocking socket."""
    sock.sendall(encode(text))


def _receive_exactly(sock, size):
    """Read exactly ``size`` bytes, or fewer only if the peer closed."""
    chunks = []
    received = 0
    while received < size:
        chunk = sock.recv(size - received)
        if not chunk:
            break
        chunks.append(chunk)
        received += len(chunk)
    return b"".join(chunks)


def receive_frame(sock):
    """Read one frame from a blocking socket and return its payload (bytes).

    Returns None if the peer closed the connection between frames.  Raises
    IncompleteFrameError if it closed part-way through one, ProtocolError on
    a bad length field, and OSError (such as ConnectionResetError) as the
    socket does.
    """
    header = _receive_exactly(sock, LENGTH_FIELD_SIZE)
    if not header:
        return None
    if len(header) < LENGTH_FIELD_SIZE:
        raise IncompleteFrameError(header, LENGTH_FIELD_SIZE)
    if not header.isdigit():
        raise ProtocolError(f"bad length field {header!r}")
    length = int(header)
    payload = _receive_exactly(sock, length)
    if len(payload) < length:
        raise IncompleteFrameError(
            header + payload, LENGTH_FIELD_SIZE + length)
    return payload


def receive_message(sock):
    """Read one frame from a blocking socket and return its text.

    Returns None if the peer closed between frames; raises as receive_frame.
    """
    payload = receive_frame(sock)
    return None if payload is None else decode(payload)


def is_valid_name(name):
    """Whether ``name`` may be a client's name (see NAME_RULE)."""
    return 0 < len(name) <= MAX_NAME_LENGTH and all(
        char.isalpha() or char.isdecimal() or char in _NAME_PUNCTUATION
        for char in name)


# The form under which names are compared, so that "Bob" and "bob" clash.
# A C method rather than a Python function: the server calls it per message.
name_key = str.casefold


def parse_command(text):
    """Split a command line into (COMMAND, argument).

    The command word is upper-cased so that ``name A`` works like ``NAME A``;
    the argument is the rest of the line after the white space that follows
    the command word, as typed ("" if there is none).
    """
    parts = text.split(None, 1)
    if len(parts) == 2:
        return parts[0].upper(), parts[1]
    return (parts[0].upper() if parts else ""), ""


def split_names(names, limit=MAX_MSG_LENGTH):
    """Join ``names`` with single spaces into payloads of at most ``limit``
    bytes, splitting only between names.  Returns a list of strings (one
    empty string when there are no names)."""
    payloads = []
    current = []
    size = 0
    for name in names:
        length = len(name.encode(ENCODING))
        if current and size + 1 + length > limit:
            payloads.append(" ".join(current))
            current = []
            size = 0
        size += length + (1 if current else 0)
        current.append(name)
    payloads.append(" ".join(current))
    return payloads


def _codes(module, table):
    """{code: words} for every (words, names) pair of ``table``, for the
    names that ``module`` defines on this system."""
    return {getattr(module, name): words for words, names in table
            for name in names if hasattr(module, name)}


# Socket errors in words that read the same on every system: os.strerror()
# knows neither Windows socket codes (10061) nor getaddrinfo's (-2).
_ERROR_WORDS = _codes(errno, [
    ("connection refused", ["ECONNREFUSED", "WSAECONNREFUSED"]),
    ("address already in use", ["EADDRINUSE", "WSAEADDRINUSE"]),
    ("that address is not one of this machine's",
     ["EADDRNOTAVAIL", "WSAEADDRNOTAVAIL"]),
    ("permission denied", ["EACCES", "WSAEACCES"]),
    ("connection reset", ["ECONNRESET", "WSAECONNRESET"]),
    ("connection aborted", ["ECONNABORTED", "WSAECONNABORTED"]),
    ("connection closed", ["EPIPE", "ESHUTDOWN", "WSAESHUTDOWN"]),
    ("timed out", ["ETIMEDOUT", "WSAETIMEDOUT"]),
    ("host unreachable", ["EHOSTUNREACH", "WSAEHOSTUNREACH"]),
    ("network unreachable", ["ENETUNREACH", "WSAENETUNREACH"]),
    ("address family not supported", ["EAFNOSUPPORT", "WSAEAFNOSUPPORT"]),
    ("too many open files", ["EMFILE", "WSAEMFILE"]),
])
_LOOKUP_ERROR_WORDS = _codes(socket, [
    ("no such host", ["EAI_NONAME", "EAI_NODATA"]),
    ("the host name could not be looked up", ["EAI_AGAIN", "EAI_FAIL"]),
    ("that host has no address of this kind",
     ["EAI_ADDRFAMILY", "EAI_FAMILY"]),
])


def describe_error(error):
    """An OSError in a few words that mean the same on every system:
    "connection refused", "no such host", "address already in use"."""
    if isinstance(error, socket.gaierror):
        return _LOOKUP_ERROR_WORDS.get(
            error.errno, "the host name could not be looked up")
    if isinstance(error, socket.timeout):
        return "timed out"
    words = _ERROR_WORDS.get(error.errno)
    if words is None:
        words = error.strerror or str(error) or type(error).__name__
    return words
