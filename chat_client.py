"""A terminal client for the chat.

    python chat_client.py [--host H] [--port P] [--length-field 4|2|auto]
                          [--show-frames]

One loop watches the keyboard and the server together, so a message from
another user appears at once, even while you are typing: your half-typed
line is lifted off the screen (all its rows), the message printed, and the
line put back.

The parts, each small:
- grapheme clusters and columns: what Backspace erases and how wide it is;
- ``LineEditor``: the line being typed, its cursor and history, and how it
  is drawn on the terminal;
- the keyboards: ``PosixTerminal`` (Linux, macOS), ``WindowsConsole``
  (msvcrt) and ``PipedInput`` (a pipe or a file), each turning what is typed
  into keys;
- ``ChatClient``: the loop over the keyboard and the socket.
"""

import argparse
import codecs
import collections
import os
import queue
import select
import signal
import socket
import sys
import threading
import time
import unicodedata

import chat_protocol as protocol

EDITING_KEYS = """\
keys: Enter sends the line; Backspace and Delete erase; Left, Right, Home
and End move; Ctrl+U erases to the start of the line, Ctrl+W the word
before the cursor; Up and Down recall this session's lines.  Esc alone
does nothing, and Alt+X types X.  Lines pasted together are sent one by
one, each after the reply to the one before (or 0.3 s).  Ctrl+C leaves;
so does Ctrl+D on an empty line (Linux and macOS); Ctrl+Z suspends (Linux
and macOS) and `fg` brings the client back.
"""

COMMAND_LINES = "".join(f"  {line}\n" for line in protocol.help_lines())
HELP_EPILOG = "commands:\n" + COMMAND_LINES + "\n" + EDITING_KEYS + """
length fields: 4 digits (the default) or 2, as the course templates
write them (counting characters).  With auto, the first line goes with 4
digits, the next waits for a reply (or 0.3 s), and from the first 2-digit
frame the server sends, lines go with 2.

Exit status: 0 after EXIT, Ctrl+C, the end of piped input or the server's
shutdown; 1 if the server cannot be reached, the connection is lost or
what the server sends cannot be read.
"""

RECEIVE_SIZE = 65536
EXIT_WAIT = 1.0          # seconds to wait for the server's EXIT frame
WINDOWS_POLL = 0.02      # seconds between keyboard polls on Windows
REPLY_WAIT = 0.3         # seconds a typed-ahead line waits for a reply
LOST_CONNECTION = "Connection to the server was lost."
SERVER_SHUT_DOWN = "The server has shut down."
FIRST_MESSAGE_CLOSED = (
    "the server closed the connection at our first message: it may expect "
    "{width}-digit length fields; try --length-field {width}")

CTRL_C = "\x03"
CTRL_D = "\x04"
CTRL_U = "\x15"
CTRL_W = "\x17"
ESCAPE = "\x1b"
BACKSPACES = frozenset("\b\x7f")
ENTERS = frozenset("\r\n")
QUIT = object()          # what LineEditor.feed_key() gives for Ctrl+C / D
END_OF_INPUT = "<end of input>"

# Special keys, as the keyboards name them (a typed character is one
# character long, so a name cannot be mistaken for one).
LEFT, RIGHT, HOME, END = "<left>", "<right>", "<home>", "<end>"
UP, DOWN, DELETE = "<up>", "<down>", "<delete>"


# ------------------------------------------ grapheme clusters and columns

ZERO_WIDTH_JOINER = "\u200d"


def _is_regional_indicator(char):
    """One of the 26 letters that make flags in pairs (🇮🇱)."""
    return "\U0001f1e6" <= char <= "\U0001f1ff"


def _extends(char):
    """Whether ``char`` always belongs to the character before it: a
    combining mark, a variation selector, a skin-tone modifier, a joiner
    or a tag (the letters of subdivision flags)."""
    return (unicodedata.category(char) in ("Mn", "Mc", "Me")
            or char == ZERO_WIDTH_JOINER
            or "\ufe00" <= char <= "\ufe0f"
            or "\U000e0100" <= char <= "\U000e01ef"
            or "\U0001f3fb" <= char <= "\U0001f3ff"
            or "\U000e0020" <= char <= "\U000e007f")


def joins(cluster, char):
    """Whether ``char``, typed after ``cluster``, is part of the same
    user-perceived character: an extender, anything after a zero-width
    joiner, or the second letter of a flag."""
    return (_extends(char) or cluster.endswith(ZERO_WIDTH_JOINER)
            or (_is_regional_indicator(char) and len(cluster) == 1
                and _is_regional_indicator(cluster)))


def split_clusters(text):
    """``text`` as a list of grapheme clusters (user-perceived
    characters), as far as the standard library can tell them."""
    clusters = []
    for char in text:
        if clusters and joins(clusters[-1], char):
            clusters[-1] += char
        else:
            clusters.append(char)
    return clusters


def columns(cluster):
    """How many terminal columns a grapheme cluster takes: 2 for a wide
    character or a flag, 0 for a lone mark, else 1; what follows the
    first character (marks, joiners, modifiers) takes none."""
    first = cluster[0]
    if _is_regional_indicator(first):
        return 2 if len(cluster) > 1 else 1
    if unicodedata.east_asian_width(first) in "WF":
        return 2
    if unicodedata.category(first) in ("Mn", "Me", "Cf"):
        return 0
    return 1


def layout(clusters, width):
    """Where each cluster starts on a terminal ``width`` columns wide, and
    where the line ends, as (row, column) pairs from the line's start.

    A cluster that would not fit on a row starts the next one, as a
    terminal moves a wide character that does not fit; the end of a line
    that fills its last row exactly is the start of the next row.
    """
    positions = []
    row = column = 0
    for cluster in clusters:
        size = columns(cluster)
        if column + size > width:
            row, column = row + 1, 0
        positions.append((row, column))
        column += size
        if column >= width:
            row, column = row + 1, 0
    positions.append((row, column))
    return positions


# ------------------------------------------------------ the line editor

def _cursor_up(rows):
    return f"\x1b[{rows}A" if rows > 0 else ""


def _cursor_down(rows):
    return f"\x1b[{rows}B" if rows > 0 else ""


def _cursor_right(count):
    return f"\x1b[{count}C" if count > 0 else ""


ERASE_BELOW = "\x1b[J"   # from the cursor to the end of the screen


def terminal_width(output):
    """The width of the terminal ``output`` shows on, read now (the window
    may have been resized); 80 if it cannot be told."""
    try:
        return max(os.get_terminal_size(output.fileno()).columns, 2)
    except (AttributeError, OSError, ValueError):
        return 80


class LineEditor:
    """The line being typed: its grapheme clusters, the cursor (an index
    into them), this session's earlier lines, and the line on the screen.

    ``feed_key(key)`` takes one key (a character or a special key's name)
    and returns the line completed by Enter, QUIT for Ctrl+C or for Ctrl+D
    on an empty line, or None.  ``hide()`` lifts the whole line off the
    screen, ``show()`` draws it again, so messages can be printed above it.

    With ``ansi`` the editor moves the cursor with escape sequences and
    handles lines of many rows; without (an old Windows console) it uses
    only carriage return, spaces and backspaces, right for one-row lines.
    With ``sequence_per_write`` every escape sequence begins a write of its
    own (the Windows console under Wine applies a sequence that follows
    text in the same write out of order; real consoles need nothing).
    """

    sequence_per_write = False

    def __init__(self, output, echo=True, ansi=True, width=None):
        self.output = output
        self.echo = echo
        self.ansi = ansi
        self._width = width or (lambda: terminal_width(output))
        self.clusters = []
        self.cursor = 0
        self.history = []
        self._history_index = None   # which history line is shown, if any
        self._draft = ""             # the line that Up replaced
        self._shown = False          # whether the line is on the screen
        self._cursor_row = 0         # the cursor's row below the line start
        self._shown_columns = 0      # the columns drawn (for ansi=False)
        self._end_position = None    # (width, row, column) of its end

    def text(self):
        return "".join(self.clusters)

    def feed(self, keys):
        """Feed every key; return the lines (and QUITs) completed."""
        completed = []
        for key in keys:
            line = self.feed_key(key)
            if line is not None:
                completed.append(line)
                if line is QUIT:
                    break
        return completed

    def feed_key(self, key):
        """Act on one key; return a completed line, QUIT or None."""
        if key in ENTERS:
            line = self.text()
            self.end_line()
            self._remember(line)
            return line
        if key == CTRL_C or (key == CTRL_D and not self.clusters):
            self.end_line(always=False)
            return QUIT
        action = self._ACTIONS.get(key)
        if action is not None:
            action(self)
        elif len(key) == 1 and (key.isprintable() or unicodedata.category(
                key) in ("Zs", "Mn", "Mc", "Me", "Cf")):
            self._insert(key)
        # Other control keys do nothing.
        return None

    # --- editing

    def _insert(self, char):
        at_end = self.cursor == len(self.clusters)
        if self.cursor and joins(self.clusters[self.cursor - 1], char):
            self.clusters[self.cursor - 1] += char
            self._redraw()
            return
        self.clusters.insert(self.cursor, char)
        self.cursor += 1
        if at_end and self._shown_fully():
            self._append_shown(char)
        else:
            self._redraw()

    def _backspace(self):
        if self.cursor:
            self.cursor -= 1
            del self.clusters[self.cursor]
            self._redraw()

    def _delete(self):
        if self.cursor < len(self.clusters):
            del self.clusters[self.cursor]
            self._redraw()

    def _erase_to_start(self):
        del self.clusters[:self.cursor]
        self.cursor = 0
        self._redraw()

    def _erase_word(self):
        """Erase back to the start of the word before the cursor (and the
        spaces after it), as Ctrl+W does in a shell."""
        start = self.cursor
        while start and self.clusters[start - 1].isspace():
            start -= 1
        while start and not self.clusters[start - 1].isspace():
            start -= 1
        del self.clusters[start:self.cursor]
        self.cursor = start
        self._redraw()

    def _move_to(self, cursor):
        if cursor != self.cursor:
            self.cursor = cursor
            self._redraw()

    def _left(self):
        self._move_to(max(self.cursor - 1, 0))

    def _right(self):
        self._move_to(min(self.cursor + 1, len(self.clusters)))

    def _home(self):
        self._move_to(0)

    def _end(self):
        self._move_to(len(self.clusters))

    def _older(self):
        if self._history_index is None:
            if not self.history:
                return
            self._draft = self.text()
            self._history_index = len(self.history)
        if self._history_index > 0:
            self._history_index -= 1
            self._replace(self.history[self._history_index])

    def _newer(self):
        if self._history_index is None:
            return
        self._history_index += 1
        if self._history_index == len(self.history):
            self._history_index = None
            self._replace(self._draft)
        else:
            self._replace(self.history[self._history_index])

    def _replace(self, text):
        self.clusters = split_clusters(text)
        self.cursor = len(self.clusters)
        self._redraw()

    def _remember(self, line):
        self._history_index = None
        if line.strip() and self.history[-1:] != [line]:
            self.history.append(line)

    _ACTIONS = {
        "\b": _backspace, "\x7f": _backspace, DELETE: _delete,
        CTRL_U: _erase_to_start, CTRL_W: _erase_word,
        LEFT: _left, RIGHT: _right, HOME: _home, END: _end,
        UP: _older, DOWN: _newer,
    }

    # --- the line on the screen

    def hide(self):
        """Lift the whole line off the screen; the cursor is left where
        the line started."""
        if self._shown and self.echo:
            if self.ansi:
                self._write(_cursor_up(self._cursor_row) + "\r"
                            + ERASE_BELOW)
            else:
                self._write("\r" + " " * self._shown_columns + "\r")
        self._forget_shown()

    def show(self):
        """Draw the line from the cursor's row and place the cursor."""
        if not self.clusters:
            return
        self._shown = True
        if not self.ansi:
            self._show_plain()
            return
        width = self._width()
        positions = layout(self.clusters, width)
        end_row, end_column = positions[-1]
        self._end_position = (width, end_row, end_column)
        text = self.text()
        if end_column == 0 and end_row > 0:
            # The terminal holds its cursor on the last column of a full
            # row; a new line puts it where the layout says the end is.
            text += "\n"
        row, column = positions[self.cursor]
        if self.cursor < len(self.clusters):
            text += _cursor_up(end_row - row) + "\r" + _cursor_right(column)
        self._write(text)
        self._cursor_row = row

    def end_line(self, always=True):
        """Leave the line on the screen as it is and go to the start of a
        fresh row below it: after Enter (``always``), or when the session
        ends (only if there is a line to leave).  The line is then empty.
        """
        if self._shown:
            self._go_to_end(newline=True)
        elif always:
            self._write("\n")
        self.clusters = []
        self.cursor = 0
        self._forget_shown()

    def set_aside(self):
        """On suspend: put the cursor at the end of the line, which stays
        on the screen (the shell writes its notice below it); the line is
        kept, for show() to draw afresh."""
        if self._shown:
            self._go_to_end(newline=False)
        self._forget_shown()

    def _go_to_end(self, newline):
        """Move the cursor to the end of the line shown (as it was drawn);
        with ``newline`` on to the start of the next row."""
        if not self.ansi:
            rest = "".join(self.clusters[self.cursor:])
            self._write(rest + ("\n" if newline else ""))
            return
        _, end_row, end_column = self._end_position
        if self.cursor < len(self.clusters):
            self._write(_cursor_down(end_row - self._cursor_row) + "\r"
                        + _cursor_right(end_column))
        at_fresh_row = end_column == 0 and end_row > 0
        if newline and not at_fresh_row:
            self._write("\n")

    def _forget_shown(self):
        self._end_position = None
        self._shown = False
        self._cursor_row = 0
        self._shown_columns = 0

    def leave_on_screen(self):
        """Show the half-typed line, if any, as it was, and go below it:
        the session is over."""
        if not self._shown:
            self.show()
        self.end_line(always=False)

    def show_again(self):
        """Draw the line if it is not on the screen (after a resume)."""
        if not self._shown:
            self.show()
            self.output.flush()

    def _shown_fully(self):
        """Whether what is on the screen is the line, cursor at its end
        (before the key just inserted)."""
        return self._shown or len(self.clusters) == 1

    def _append_shown(self, char):
        """The quick way to show a character typed at the end."""
        if not self.ansi:
            self._shown = True
            self._shown_columns += columns(char)
            self._write(char)
            return
        width = self._width()
        if self._end_position is None or self._end_position[0] != width:
            # A first character, or a window resized since the line was
            # drawn: draw it whole.
            self._redraw()
            return
        # Only the last cluster moves the end: no need to lay out the whole
        # line again (a pasted line of thousands of characters).
        _, end_row, end_column = self._end_position
        size = columns(char)
        if end_column + size > width:
            end_row, end_column = end_row + 1, 0
        end_column += size
        if end_column >= width:
            end_row, end_column = end_row + 1, 0
        self._end_position = (width, end_row, end_column)
        self._shown = True
        self._write(char + ("\n" if end_column == 0 and end_row else ""))
        self._cursor_row = end_row

    def _redraw(self):
        self._end_position = None
        if self.ansi:
            self.hide()
            self.show()
        else:
            self._show_plain()

    def _show_plain(self):
        """Redraw a one-row line with carriage return, spaces and
        backspaces only."""
        widths = [columns(cluster) for cluster in self.clusters]
        total = sum(widths)
        padding = max(self._shown_columns - total, 0)
        after_cursor = sum(widths[self.cursor:])
        self._write("\r" + self.text() + " " * padding
                    + "\b" * (padding + after_cursor))
        self._shown_columns = total
        self._shown = bool(self.clusters)

    def _write(self, text):
        if not self.echo:
            return
        if self.sequence_per_write and ESCAPE in text:
            # Each escape sequence starts a write of its own.
            before, *sequences = text.split(ESCAPE)
            for piece in [before] + [ESCAPE + rest for rest in sequences]:
                if piece:
                    self.output.write(piece)
                    self.output.flush()
            return
        self.output.write(text)


# ---------------------------------------------------------- the keyboards

# What the special keys send on Linux and macOS, after ESC [ (CSI) with any
# parameters, or after ESC O (SS3): by final character, or by the first
# parameter of a sequence ending in "~".
_FINAL_KEYS = {"A": UP, "B": DOWN, "C": RIGHT, "D": LEFT, "H": HOME,
               "F": END}
_TILDE_KEYS = {"1": HOME, "7": HOME, "4": END, "8": END, "3": DELETE}
_MAX_SEQUENCE = 32


class EscapeSequences:
    """Turns what a terminal sends into keys: characters, and names for
    the special keys (arrows, Home, End, Delete).

    Only real escape sequences are consumed: CSI (ESC [ parameters final)
    and SS3 (ESC O x), those of unknown keys dropped whole.  An Esc before
    anything else is dropped and the character after it kept (Alt+X gives
    X), and an Esc at the end of what was read is a lone Esc: a terminal
    sends a key's sequence in one piece.
    """

    def __init__(self):
        self._sequence = ""      # the escape sequence read so far

    def keys(self, text):
        """The keys in ``text``, typed after what came before."""
        keys = []
        for char in text:
            key = self._key(char)
            if key:
                keys.append(key)
        if self._sequence == ESCAPE:
            self._sequence = ""
        return keys

    def _key(self, char):
        sequence = self._sequence
        if not sequence:
            if char == ESCAPE:
                self._sequence = ESCAPE
                return None
            return char
        if sequence == ESCAPE:
            if char in "[O":
                self._sequence += char
                return None
            self._sequence = ""
            return self._key(char)
        if sequence == ESCAPE + "O":
            self._sequence = ""
            return _FINAL_KEYS.get(char)
        if "\x40" <= char <= "\x7e":              # a CSI's final character
            self._sequence = ""
            if char == "~":
                return _TILDE_KEYS.get(sequence[2:].split(";")[0])
            return _FINAL_KEYS.get(char)
        if "\x20" <= char <= "\x3f" and len(sequence) < _MAX_SEQUENCE:
            self._sequence += char                # parameters
            return None
        self._sequence = ""                       # not a sequence after all
        return self._key(char)


class PosixTerminal:
    """The keyboard on Linux and macOS: the terminal in non-canonical,
    no-echo mode, read a key at a time; restored on the way out and while
    the client is suspended (Ctrl+Z), and set again when it continues."""

    echo = True
    ansi = True
    sequence_per_write = False

    def __init__(self, stream=None):
        self.fileno = (stream or sys.stdin).fileno()
        self._decoder = codecs.getincrementaldecoder(protocol.ENCODING)(
            "replace")
        self._sequences = EscapeSequences()
        self._saved = None
        self._before_suspend = self._after_resume = lambda: None

    def __enter__(self):
        import termios
        self._saved = termios.tcgetattr(self.fileno)
        self._set_mode()
        signal.signal(signal.SIGTSTP, self._suspend)
        signal.signal(signal.SIGCONT, self._resume)
        return self

    def __exit__(self, *exc_info):
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        signal.signal(signal.SIGCONT, signal.SIG_DFL)
        self._restore_mode()

    def on_suspend(self, before, after):
        """Call ``before()`` when the user suspends the client and
        ``after()`` when it continues (to put the half-typed line away
        and back)."""
        self._before_suspend, self._after_resume = before, after

    def _set_mode(self):
        import termios
        attributes = termios.tcgetattr(self.fileno)
        attributes[3] &= ~(termios.ICANON | termios.ECHO)
        attributes[6][termios.VMIN] = 1
        attributes[6][termios.VTIME] = 0
        termios.tcsetattr(self.fileno, termios.TCSADRAIN, attributes)

    def _restore_mode(self):
        import termios
        termios.tcsetattr(self.fileno, termios.TCSADRAIN, self._saved)

    def _suspend(self, signum, frame):
        """Ctrl+Z: give the shell its terminal back, then stop as the
        default action would."""
        self._before_suspend()
        self._restore_mode()
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)
        # Here the process has been continued (`fg`); SIGCONT's handler
        # has set the terminal again.
        signal.signal(signal.SIGTSTP, self._suspend)

    def _resume(self, signum, frame):
        """Continued (`fg`): the shell has set the terminal its own way."""
        self._set_mode()
        self._after_resume()

    def read(self):
        """The keys typed since the last read; None at end of input."""
        data = os.read(self.fileno, 1024)
        if not data:
            return None
        return self._sequences.keys(self._decoder.decode(data))


# msvcrt.getwch() gives a special key as a prefix, "\x00" or "\xe0", then
# a code.  "\xe0" is also what a typed "à" gives, so after "\xe0" only a
# code waiting at once, and known, makes a special key.
_WINDOWS_KEYS = {"H": UP, "P": DOWN, "K": LEFT, "M": RIGHT, "G": HOME,
                 "O": END, "S": DELETE,
                 # With Ctrl: Left, Right, Home, End, moving as without.
                 "s": LEFT, "t": RIGHT, "w": HOME, "u": END}
# Insert, Page Up and Down, F11, F12, Ctrl+Up and Ctrl+Down: ignored.
_IGNORED_WINDOWS_CODES = frozenset("RIQ\x85\x86\x8d\x91")
_ENABLE_VIRTUAL_TERMINAL_PROCESSING = 0x0004
_STD_OUTPUT_HANDLE = -11


def enable_virtual_terminal():
    """Let the Windows console read escape sequences (cursor moves, erase);
    return the console's previous mode, or None where it cannot (an old
    Windows, or no console)."""
    try:
        import ctypes
        from ctypes import wintypes
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        handle = kernel32.GetStdHandle(_STD_OUTPUT_HANDLE)
        mode = wintypes.DWORD()
        if not kernel32.GetConsoleMode(handle, ctypes.byref(mode)):
            return None
        if not kernel32.SetConsoleMode(
                handle, mode.value | _ENABLE_VIRTUAL_TERMINAL_PROCESSING):
            return None
        return mode.value
    except (ImportError, AttributeError, OSError):
        return None


def restore_console_mode(mode):
    """Put back the console mode that enable_virtual_terminal() changed."""
    try:
        import ctypes
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        kernel32.SetConsoleMode(kernel32.GetStdHandle(_STD_OUTPUT_HANDLE),
                                mode)
    except (ImportError, AttributeError, OSError):
        pass


class WindowsConsole:
    """The keyboard on Windows: msvcrt.kbhit() and getwch(), polled, never
    blocking; escape sequences on the screen where the console takes them.
    """

    echo = True
    fileno = None  # select() on Windows takes sockets only: poll instead
    sequence_per_write = True   # see LineEditor

    def __init__(self, console=None):
        self._real_console = console is None
        if console is None:
            import msvcrt as console
        self._console = console
        self.ansi = True
        self._saved_mode = None

    def __enter__(self):
        if self._real_console:
            self._saved_mode = enable_virtual_terminal()
            self.ansi = self._saved_mode is not None
        return self

    def __exit__(self, *exc_info):
        if self._saved_mode is not None:
            restore_console_mode(self._saved_mode)

    def on_suspend(self, before, after):
        """Windows has no Ctrl+Z suspension: nothing to do."""

    def read(self):
        """The keys typed since the last read."""
        keys = []
        console = self._console
        while console.kbhit():
            key = console.getwch()
            if key in ("\x00", "\xe0"):
                key = self._special_key(key)
            if key:
                keys.append(key)
        return keys

    def _special_key(self, prefix):
        """The key that ``prefix`` begins: a special key's name, "à", or
        None for a key that does nothing."""
        if not self._console.kbhit():
            return "\xe0" if prefix == "\xe0" else None
        code = self._console.getwch()
        if code in _WINDOWS_KEYS:
            return _WINDOWS_KEYS[code]
        if prefix == "\x00" or code in _IGNORED_WINDOWS_CODES:
            return None
        self._console.ungetwch(code)   # a key typed after an "à"
        return "\xe0"


class PipedInput:
    """Standard input that is not a terminal: whole lines, no echo, so the
    client can be scripted.  Read by a helper thread on Windows, where
    select() does not take pipes."""

    echo = False
    ansi = False
    sequence_per_write = False

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

    def on_suspend(self, before, after):
        """Nothing to put away: nothing is shown."""

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


# ------------------------------------------------------------ the chat loop

class ChatClient:
    """Shows what the server sends and sends what the user types.

    ``length_field`` is 4, 2 or protocol.AUTO: with AUTO, frames are sent
    with 4 digits until the server sends a 2-digit frame.
    """

    def __init__(self, sock, output, show_frames=False,
                 length_field=protocol.LENGTH_FIELD_SIZE):
        self.sock = sock
        self.output = output
        self.show_frames = show_frames
        self.length_field = length_field
        self.decoder = protocol.FrameDecoder(length_field, from_server=True)
        self.frames_sent = 0
        self.frames_received = 0
        self.shutting_down = False   # the server has said it is stopping
        self.editor = None
        self.typed_ahead = collections.deque()  # keys not yet edited
        self.hold_until = None       # typed-ahead keys wait for a reply

    def run(self, keyboard):
        """Serve the user until EXIT, Ctrl+C, end of input or a lost
        connection; return the exit status."""
        self.editor = LineEditor(self.output, echo=keyboard.echo,
                                 ansi=keyboard.ansi)
        self.editor.sequence_per_write = keyboard.sequence_per_write
        keyboard.on_suspend(self._set_aside, self.editor.show_again)
        # Lines typed ahead (pasted) wait for the replies to the line
        # before them, where they are shown; a script need not wait.
        self.hold_replies = keyboard.echo
        input_open = True
        try:
            while True:
                watched = [self.sock]
                timeout = WINDOWS_POLL if keyboard.fileno is None else None
                if input_open and keyboard.fileno is not None:
                    watched.append(keyboard.fileno)
                if self.hold_until is not None and self.typed_ahead:
                    wait = max(self.hold_until - time.monotonic(), 0)
                    timeout = wait if timeout is None else min(timeout, wait)
                readable = select.select(watched, [], [], timeout)[0]
                if self.sock in readable:
                    status = self._receive_and_show()
                    if status is not None:
                        return status
                if input_open and (keyboard.fileno is None
                                   or keyboard.fileno in readable):
                    keys = keyboard.read()
                    if keys is None:
                        input_open = False
                        keys = [END_OF_INPUT]
                    self.typed_ahead.extend(keys)
                status = self._use_typed_keys()
                self.output.flush()
                if status is not None:
                    return status
        except KeyboardInterrupt:
            self.editor.end_line(always=False)
            return self._leave()
        except OSError:
            return self._connection_ended()

    def _use_typed_keys(self):
        """Give the typed keys to the editor and send the lines completed,
        until a sent line must wait for its reply; return the exit status
        if the session is over."""
        while self.typed_ahead:
            if self.hold_until is not None:
                if time.monotonic() < self.hold_until:
                    return None
                self.hold_until = None
            key = self.typed_ahead.popleft()
            if key == END_OF_INPUT:
                self._submit(self.editor.text())  # a last line without Enter
                return self._leave()
            line = self.editor.feed_key(key)
            if line is QUIT:
                return self._leave()
            if line is not None:
                outcome = self._submit(line)
                if outcome == "exit":
                    return self._leave()
                if outcome == "sent" and (self.hold_replies
                                          or not self._width_known()):
                    self.hold_until = time.monotonic() + REPLY_WAIT
        return None

    def _width_known(self):
        """Whether we know the length field the server reads: always,
        unless it is to be told from its replies (AUTO) and none came."""
        return (self.length_field != protocol.AUTO
                or self.frames_received > 0)

    def _submit(self, line):
        """Send a typed line: "sent", "exit" for EXIT (not sent yet), or
        None if there was nothing to send or it cannot be sent."""
        if not line.strip():
            return None
        try:
            data = protocol.encode(line, self.decoder.width)
        except protocol.MessageTooLongError as error:
            self._print(f"ERROR: not sent: {error}")
            return None
        if protocol.parse_command(line)[0] == protocol.COMMAND_EXIT:
            return "exit"
        self._send(data)
        return "sent"

    def _send(self, data):
        self.sock.sendall(data)
        self.frames_sent += 1
        if self.show_frames:
            self._show_frame("sent", data)

    def _receive_and_show(self):
        """Show what the server sent above the half-typed line; return
        the exit status if the connection has ended."""
        self.editor.hide()
        try:
            payloads = self._receive()
        except protocol.ProtocolError as error:
            return self._unreadable(error)
        for payload in payloads or ():
            self._show_received(payload)
        if payloads is None:
            return self._connection_ended()
        if payloads:
            self.hold_until = None   # the reply came: the next line may go
        self.editor.show()
        self.output.flush()
        return None

    def _connection_ended(self):
        """The server closed the connection: say why, as far as we can
        tell, and return the exit status."""
        self.editor.leave_on_screen()
        if self.shutting_down:
            self._print(SERVER_SHUT_DOWN)
            return 0
        if self.frames_sent and not self.frames_received:
            self._print(self._first_message_closed())
        else:
            self._print(LOST_CONNECTION)
        return 1

    def _first_message_closed(self):
        other = (protocol.LENGTH_FIELD_SIZE
                 if self.decoder.width == protocol.SHORT_LENGTH_FIELD_SIZE
                 else protocol.SHORT_LENGTH_FIELD_SIZE)
        return FIRST_MESSAGE_CLOSED.format(width=other)

    def _unreadable(self, error):
        """What the server sent cannot be framed: say so; status 1."""
        self.editor.leave_on_screen()
        hint = ("" if self.length_field == protocol.AUTO
                else "; try --length-field auto")
        self._print(f"Cannot read what the server sent ({error}){hint}")
        return 1

    def _leave(self):
        """Send EXIT and wait briefly for the server's EXIT frame or the
        close; the EXIT frame itself is not shown.  Returns the exit
        status: 0, or 1 if what the server sent could not be read or it
        closed at our first message."""
        sent_before = self.frames_sent
        try:
            self._send(protocol.encode(protocol.COMMAND_EXIT,
                                       self.decoder.width))
            deadline = time.monotonic() + EXIT_WAIT
            while time.monotonic() < deadline:
                if not select.select([self.sock], [], [],
                                     deadline - time.monotonic())[0]:
                    return 0
                payloads = self._receive()
                if payloads is None:
                    break
                for payload in payloads:
                    if payload == protocol.COMMAND_EXIT.encode():
                        if self.show_frames:
                            self._show_frame("received",
                                             self._frame_of(payload))
                        return 0
                    self._show_received(payload)
        except protocol.ProtocolError as error:
            return self._unreadable(error)
        except OSError:
            pass
        finally:
            self.output.flush()
        if sent_before and not self.frames_received:
            self._print(self._first_message_closed())
            self.output.flush()
            return 1
        return 0

    def _receive(self):
        """The payloads that have arrived; None if the connection ended.
        Raises ProtocolError if they cannot be framed."""
        try:
            data = self.sock.recv(RECEIVE_SIZE)
        except OSError:
            return None
        if not data:
            return None
        payloads = self.decoder.feed(data)
        self.frames_received += len(payloads)
        return payloads

    def _set_aside(self):
        self.editor.set_aside()
        self.output.flush()

    def _show_received(self, payload):
        if self.show_frames:
            self._show_frame("received", self._frame_of(payload))
        text = protocol.decode(payload)
        if text == protocol.SHUTDOWN_NOTICE:
            self.shutting_down = True
        self._print(f"Server sent: {protocol.safe_text(text)}")

    def _frame_of(self, payload):
        """The frame that carried ``payload``, length field included."""
        if self.decoder.width == protocol.SHORT_LENGTH_FIELD_SIZE:
            return b"%02d" % len(payload) + payload
        return protocol.frame(payload)

    def _show_frame(self, direction, frame):
        """With --show-frames: a frame's bytes, length field included."""
        text = protocol.safe_text(protocol.decode(frame))
        self._print(f"Frame {direction}: {text}")

    def _print(self, line):
        self.output.write(line + "\n")


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        description="A terminal client for the chat (see README.md).",
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    protocol.add_server_arguments(parser)
    parser.add_argument("--length-field", type=protocol.length_field,
                        default=protocol.LENGTH_FIELD_SIZE,
                        metavar="{4,2,auto}",
                        help="digits in the length field of each frame "
                        "(default %(default)s; see below)")
    parser.add_argument("--show-frames", action="store_true",
                        help="also print every frame sent and received, "
                        "length field included")
    return parser.parse_args(argv)


def configure_output(stream, platform=sys.platform):
    """Never fail on a character: on Windows, output that is not a console
    (a pipe, a file) is written in UTF-8 rather than the system's code
    page, which has no Hebrew; elsewhere the terminal's encoding is kept
    and what it cannot show is replaced."""
    if platform == "win32" and not stream.isatty():
        stream.reconfigure(encoding="utf-8", errors="backslashreplace")
    else:
        stream.reconfigure(errors="replace")


def connect(host, port):
    """A socket connected to the server, sending small frames at once
    (TCP_NODELAY: a chat's frames are small and wanted now)."""
    sock = socket.create_connection((host, port), timeout=10)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def main(argv=None):
    arguments = parse_arguments(argv)
    configure_output(sys.stdout)
    try:
        sock = connect(arguments.host, arguments.port)
    except OSError as error:
        print(f"Cannot connect to {arguments.host}:{arguments.port} "
              f"({protocol.describe_error(error)}): is the server running?",
              file=sys.stderr)
        return 1
    print("Pls enter commands\n", flush=True)
    client = ChatClient(sock, sys.stdout, arguments.show_frames,
                        arguments.length_field)
    try:
        with open_keyboard() as keyboard:
            return client.run(keyboard)
    finally:
        sock.close()
        sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
