"""The chat's wire protocol, shared by the server and its clients.

Every message, in both directions, is one frame: the payload's length in
bytes as exactly four ASCII digits, then the payload, UTF-8 text of at most
9999 bytes.  ``NAME A`` travels as ``b"0006NAME A"``.

Many course templates use a 2-digit length field instead (``06NAME A``).
In that dialect a client's length field counts the characters of its text
(the templates send ``len(text)``), and a server's frames carry at most 99
bytes, their length field counting bytes (the templates' clients read them
with ``recv(length)``), so a longer reply is split into several frames.

The framing itself is "sans-I/O": ``encode`` and ``reply_frames`` build
frames and ``FrameDecoder`` is fed bytes however they arrive and hands back
whole payloads.  ``send_message`` and ``receive_message`` are thin blocking
helpers built on them.  Command parsing and name rules live here too, so
every program agrees on them, and so do the few helpers that every program
needs to show text and read its command line the same way.
"""

import argparse
import errno
import socket
import sys
import unicodedata

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
# The course templates' dialect: a 2-digit length field.
SHORT_LENGTH_FIELD_SIZE = 2
MAX_SHORT_MSG_LENGTH = 99
# A decoder's length field: 4, 2, or told apart frame by frame.
AUTO = "auto"

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
# The notice every client gets when the server stops; a client that sees it
# knows the close that follows is an orderly one.
SHUTDOWN_NOTICE = "SERVER: the server is shutting down"


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


# Length fields are read and written through tables: HEADERS[n] is the
# 4-digit field for n (the server's fast path uses it too), and a dictionary
# lookup both checks that a 4-byte header is four ASCII digits and gives its
# value.
HEADERS = [b"%04d" % length for length in range(MAX_MSG_LENGTH + 1)]
_HEADER_LENGTHS = {header: length for length, header in enumerate(HEADERS)}
_SHORT_HEADERS = [b"%02d" % length
                  for length in range(MAX_SHORT_MSG_LENGTH + 1)]
_DIGITS = frozenset(b"0123456789")


def frame(payload):
    """Return the frame carrying ``payload`` (bytes).

    Raises MessageTooLongError if it is longer than MAX_MSG_LENGTH bytes.
    """
    if len(payload) > MAX_MSG_LENGTH:
        raise MessageTooLongError(
            f"a message is at most {MAX_MSG_LENGTH} bytes, "
            f"this one is {len(payload)}")
    return HEADERS[len(payload)] + payload


def encode(text, length_field=LENGTH_FIELD_SIZE):
    """Return the frame a client sends to carry ``text``.

    With a 2-digit length field the length counts characters, as the course
    templates' clients count it.  Raises MessageTooLongError if the text
    does not fit in one frame.
    """
    if length_field == LENGTH_FIELD_SIZE:
        return frame(text.encode(ENCODING))
    if len(text) > MAX_SHORT_MSG_LENGTH:
        raise MessageTooLongError(
            f"a message is at most {MAX_SHORT_MSG_LENGTH} characters with "
            f"2-digit length fields, this one is {len(text)}")
    return _SHORT_HEADERS[len(text)] + text.encode(ENCODING)


def reply_frames(payload, length_field=LENGTH_FIELD_SIZE):
    """Return the frames a server sends to carry ``payload`` (UTF-8 bytes)
    to a client that reads ``length_field`` digits.

    With 2 digits, a payload over 99 bytes is split between characters into
    several frames of at most 99 bytes each.
    """
    if length_field == LENGTH_FIELD_SIZE:
        return frame(payload)
    frames = []
    start = 0
    while True:
        stop = start + MAX_SHORT_MSG_LENGTH
        if stop >= len(payload):
            stop = len(payload)
        else:
            while payload[stop] & 0xC0 == 0x80:  # not inside a character
                stop -= 1
        frames.append(_SHORT_HEADERS[stop - start] + payload[start:stop])
        if stop == len(payload):
            return b"".join(frames)
        start = stop


def decode(payload):
    """Return the text of a payload; invalid UTF-8 becomes U+FFFD."""
    return payload.decode(ENCODING, errors="replace")


def _end_of_characters(data, start, count):
    """Where ``count`` UTF-8 characters that begin at ``start`` end, judged
    by their lead bytes; may be beyond len(data) if they are not all there.
    (Invalid UTF-8 ends somewhere too, and is refused once decoded.)"""
    stop = start + count
    if stop <= len(data) and data[start:stop].isascii():
        return stop
    position = start
    for _ in range(count):
        if position >= len(data):
            return position + count  # a lower bound: one byte a character
        lead = data[position]
        position += (1 if lead < 0xC0 else 2 if lead < 0xE0
                     else 3 if lead < 0xF0 else 4)
        count -= 1
    return position


class FrameDecoder:
    """Turns a byte stream into payloads.

    ``feed(data)`` returns the payloads (bytes) of every frame completed by
    ``data``, in order, and keeps any incomplete frame for the next call.
    Each byte is copied a bounded number of times, however the stream is
    split, so the work is proportional to the bytes received.

    ``length_field`` is 4, 2 or AUTO.  With AUTO each frame's first bytes
    tell its kind: four digits begin a 4-digit frame; two digits and then a
    non-digit, or three digits and then a non-digit, a 2-digit frame (the
    first digit after the length field, if any, begins the text).  After a
    2-digit frame, every later frame is read as 2-digit.  ``width`` is the
    length field the peer has shown: 4 until it sends a 2-digit frame.

    A 2-digit length counts characters in what a client sends and bytes in
    what a server sends: ``from_server=True`` for a client's decoder.
    """

    def __init__(self, length_field=LENGTH_FIELD_SIZE, from_server=False):
        if length_field not in (LENGTH_FIELD_SIZE, SHORT_LENGTH_FIELD_SIZE,
                                AUTO):
            raise ValueError(f"length_field must be 4, 2 or {AUTO!r}")
        self._pending = bytearray()
        # How many pending bytes are needed before a frame can complete.
        self._wanted = 1
        self._auto = length_field == AUTO
        self._counts_characters = not from_server
        self.width = (SHORT_LENGTH_FIELD_SIZE
                      if length_field == SHORT_LENGTH_FIELD_SIZE
                      else LENGTH_FIELD_SIZE)

    @property
    def pending(self):
        """The number of bytes held of an incomplete frame."""
        return len(self._pending)

    def feed(self, data):
        """Add ``data``; return the list of payloads it completes.

        Raises ProtocolError on a length field that is not made of digits;
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
        lengths = _HEADER_LENGTHS
        append = payloads.append
        width = self.width
        while position < end:
            if width == LENGTH_FIELD_SIZE:
                # The common case, kept tight: a run of 4-digit frames.  At
                # the end of the data the header is b"", which is no length.
                length = lengths.get(data[position:position + 4])
                while length is not None:
                    start = position + 4
                    stop = start + length
                    if stop > end:
                        break
                    append(data[start:stop])
                    position = stop
                    length = lengths.get(data[position:position + 4])
                if length is not None:
                    break
                if position == end:
                    stop = end + 1
                    break
                if not self._auto:
                    if end - position < 4:
                        stop = position + 4
                        break
                    raise self._bad_length_field(data[position:position + 4])
            start = self._short_header(data, position)
            width = self.width
            if start is None:
                stop = end + 1  # one more byte may tell
                break
            length = int(data[position:start])
            if self._counts_characters:
                stop = _end_of_characters(data, start, length)
            else:
                stop = start + length
            if stop > end:
                break
            payloads.append(data[start:stop])
            position = stop
        else:
            stop = end + 1
        self._wanted = stop - position
        if position < end:
            pending += data[position:]
        return payloads

    def _short_header(self, data, position):
        """Where the text of the 2-digit frame at ``position`` starts, or
        None if more bytes must come to tell; with AUTO, the first such
        frame makes the decoder read 2-digit frames from then on."""
        header = data[position:position + 4]
        digits = 0
        while digits < len(header) and header[digits] in _DIGITS:
            digits += 1
        if digits < SHORT_LENGTH_FIELD_SIZE:
            if digits < len(header):
                raise self._bad_length_field(header)
            return None
        if self.width != SHORT_LENGTH_FIELD_SIZE:
            if digits == len(header):  # only digits so far: cannot tell
                return None
            self.width = SHORT_LENGTH_FIELD_SIZE
        return position + SHORT_LENGTH_FIELD_SIZE

    def _bad_length_field(self, header):
        expected = "2 or 4" if self._auto else str(self.width)
        return ProtocolError(
            f"bad length field {bytes(header)!r}: not {expected} digits")


def send_message(sock, text, length_field=LENGTH_FIELD_SIZE):
    """Send ``text`` as one frame on a blocking socket."""
    sock.sendall(encode(text, length_field))


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


def receive_frame(sock, length_field=LENGTH_FIELD_SIZE):
    """Read one frame that a server sent from a blocking socket and return
    its payload (bytes).

    Returns None if the peer closed the connection between frames.  Raises
    IncompleteFrameError if it closed part-way through one, ProtocolError on
    a bad length field, and OSError (such as ConnectionResetError) as the
    socket does.
    """
    header = _receive_exactly(sock, length_field)
    if not header:
        return None
    if len(header) < length_field:
        raise IncompleteFrameError(header, length_field)
    if not header.isdigit():
        raise ProtocolError(f"bad length field {header!r}")
    length = int(header)
    payload = _receive_exactly(sock, length)
    if len(payload) < length:
        raise IncompleteFrameError(header + payload, length_field + length)
    return payload


def receive_message(sock, length_field=LENGTH_FIELD_SIZE):
    """Read one frame that a server sent from a blocking socket and return
    its text.

    Returns None if the peer closed between frames; raises as receive_frame.
    """
    payload = receive_frame(sock, length_field)
    return None if payload is None else decode(payload)


# Scripts that one name may mix: Japanese writes Han (CJK), Hiragana and
# Katakana together, Korean Hangul and Han.
_SCRIPT_FAMILIES = (frozenset({"CJK", "HIRAGANA", "KATAKANA"}),
                    frozenset({"CJK", "HANGUL"}))


def _script(letter):
    """The script of a letter, from its Unicode name: "LATIN", "CYRILLIC",
    "CJK" (Han), "KATAKANA" (also for KATAKANA-HIRAGANA ...)."""
    return unicodedata.name(letter, "").split(" ", 1)[0].split("-", 1)[0]


def name_problem(name):
    """Why ``name`` cannot be a client's name, or None if it can.

    A name is 1 to 20 letters of one alphabet, digits, '_' or '-', with
    at least one letter or digit; the marks a script writes on its letters
    (Hindi's vowel signs, Hebrew's points) are part of the letters.  The
    check is made on the name's NFKC form, under which names are compared.
    """
    if len(name) > MAX_NAME_LENGTH:
        return f"a name is at most {MAX_NAME_LENGTH} characters"
    scripts = set()
    has_letter_or_digit = after_letter_or_digit = False
    for char in unicodedata.normalize("NFKC", name):
        kind = unicodedata.category(char)
        if kind[0] == "L" or kind == "Nd":
            if kind[0] == "L":
                scripts.add(_script(char))
            has_letter_or_digit = after_letter_or_digit = True
        elif kind[0] == "M" and after_letter_or_digit:
            pass  # a mark on the letter before it
        elif char in _NAME_PUNCTUATION:
            after_letter_or_digit = False
        else:
            return NAME_RULE
    if not has_letter_or_digit:
        return "a name needs at least one letter or digit"
    if len(scripts) > 1 and not any(scripts <= family
                                    for family in _SCRIPT_FAMILIES):
        if len(scripts) > 2:
            return f"it mixes letters of {len(scripts)} alphabets"
        one, other = sorted("Han" if script == "CJK" else script.title()
                            for script in scripts)
        return f"it mixes {one} and {other} letters"
    return None


def is_valid_name(name):
    """Whether ``name`` may be a client's name (see name_problem)."""
    return name_problem(name) is None


def name_key(name):
    """The form under which names are compared, so that "Bob", "bob" and
    the full-width "Ｂｏｂ" clash: NFKC, case-folded."""
    return unicodedata.normalize(
        "NFKC", unicodedata.normalize("NFKC", name).casefold())


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


_NAMED_CONTROLS = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def safe_text(text):
    """``text`` with every control character in a visible escaped form, so
    that text from other users cannot drive a terminal or a widget."""
    if text.isprintable():
        return text
    shown = []
    for char in text:
        if char.isprintable() or unicodedata.category(char) in (
                "Cf", "Zs", "Mn", "Mc", "Me"):
            shown.append(char)
        elif char in _NAMED_CONTROLS:
            shown.append(_NAMED_CONTROLS[char])
        elif ord(char) < 0x100:
            shown.append(f"\\x{ord(char):02x}")
        else:
            shown.append(f"\\u{ord(char):04x}")
    return "".join(shown)


def _whole_number(text, lowest, highest, what):
    """``text`` as an int from ``lowest`` to ``highest``, or an argparse
    error naming ``what`` it should have been."""
    try:
        number = int(text)
    except ValueError:
        number = lowest - 1
    if not lowest <= number <= highest:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return number


def listening_port(text):
    """An argparse type: a port to listen on, 0 (any free port) to 65535."""
    return _whole_number(text, 0, 65535, "a port number (0 to 65535)")


def port_number(text):
    """An argparse type: a port to connect to, 1 to 65535."""
    return _whole_number(text, 1, 65535, "a port number (1 to 65535)")


def seconds(text):
    """An argparse type: a number of seconds above 0 (and below a day)."""
    try:
        number = float(text)
    except ValueError:
        number = 0.0
    if not 0 < number < 86400:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds above 0")
    return number


def length_field(text):
    """An argparse type: a length field of 4 or 2 digits, or AUTO."""
    if text == AUTO:
        return AUTO
    if text in ("2", "4"):
        return int(text)
    raise argparse.ArgumentTypeError(f"{text!r} is not 4, 2 or {AUTO}")


def add_server_arguments(parser):
    """Give a program that connects to a server its --host and --port."""
    parser.add_argument("--host", default=SERVER_IP,
                        help="the server's address (default %(default)s)")
    parser.add_argument("--port", type=port_number, default=SERVER_PORT,
                        help="the server's port (default %(default)s)")


def at_least_one(text):
    """An argparse type: a whole number from 1."""
    return _whole_number(text, 1, sys.maxsize, "a whole number from 1")
