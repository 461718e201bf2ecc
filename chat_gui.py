"""The chat in a window (tkinter).

    python chat_gui.py [--host H] [--port P]

Type commands in the entry at the bottom exactly as in the terminal client
(Enter or the Send button sends them); the conversation shows what you
typed and every frame the server sent, as ``Server sent: ...``.  Errors are
shown in red, ``SERVER:`` notices in blue.  Click a name in the list to
start ``MSG <name> `` in the entry.

There are no threads: the socket is served inside Tk's event loop.  Where
Tk can watch a socket (Linux, macOS) it calls us back when the socket is
readable or writable; on Windows, where it cannot, we poll with after().
The socket is non-blocking, and what it does not take at once waits in an
outbox, so the window never freezes on a slow network.

The names list asks the server with GET_NAMES when the window opens, after
each ``Hello <name>`` reply and on the Refresh button.  The replies to these
automatic requests only fill the list; a GET_NAMES you type is shown in the
conversation as usual (and fills the list too).
"""

import argparse
import collections
import signal
import socket
import sys
import tkinter

import chat_protocol as protocol

COMMANDS_HELP = "commands, typed in the entry:\n" + "".join(
    f"  {line}\n" for line in protocol.help_lines()) + """
Enter or Send sends the line; a click on a name starts MSG <name>.  Exit
status: 0 after EXIT, the close button or Ctrl+C; 1 if the server cannot be
reached or the connection was lost.
"""

RECEIVE_SIZE = 65536
MAX_LINES = 5000          # the conversation keeps this many last lines
POLL_MS = 20              # how often Windows polls the socket
EXIT_WAIT_MS = 1000       # how long EXIT waits for the server's EXIT frame
GREETING = "Pls enter commands"
LOST_CONNECTION = "Connection to the server was lost."

ERROR_PREFIX = "ERROR: "
NOTICE_PREFIX = "SERVER: "
HELLO_PREFIX = "Hello "
# The tags of the conversation's lines, and their colours.
TAG_COLOURS = {"error": "#c01c28", "notice": "#1a5fb4", "typed": "#5e5c64"}


class FileHandlerWatch:
    """Tk watches the socket and calls back when it is readable or, while
    asked to, writable (Linux and macOS)."""

    def __init__(self, root, sock, on_readable, on_writable):
        self._tk = root.tk
        self._sock = sock
        self._on_readable = on_readable
        self._on_writable = on_writable
        self._mask = None
        self.want_writable(False)

    def want_writable(self, wanted):
        """Call on_writable while ``wanted``; on_readable always."""
        mask = tkinter.READABLE | (tkinter.WRITABLE if wanted else 0)
        if mask != self._mask:
            if self._mask is not None:
                self._tk.deletefilehandler(self._sock)
            self._tk.createfilehandler(self._sock, mask, self._event)
            self._mask = mask

    def _event(self, sock, mask):
        if mask & tkinter.READABLE:
            self._on_readable()
        if mask & tkinter.WRITABLE and self._mask is not None:
            self._on_writable()

    def stop(self):
        if self._mask is not None:
            self._tk.deletefilehandler(self._sock)
            self._mask = None


class PollingWatch:
    """Windows, where Tk cannot watch sockets: try the socket every
    POLL_MS milliseconds (a non-blocking socket makes each try cheap)."""

    def __init__(self, root, sock, on_readable, on_writable):
        self._root = root
        self._on_readable = on_readable
        self._on_writable = on_writable
        self._writable_wanted = False
        self._timer = root.after(POLL_MS, self._poll)

    def want_writable(self, wanted):
        """Call on_writable while ``wanted``; on_readable always."""
        self._writable_wanted = wanted

    def _poll(self):
        self._timer = None
        self._on_readable()
        if self._writable_wanted:
            self._on_writable()
        if self._timer is None and self._root is not None:
            self._timer = self._root.after(POLL_MS, self._poll)

    def stop(self):
        if self._timer is not None:
            self._root.after_cancel(self._timer)
            self._timer = None
        self._root = None


# How the socket is watched, chosen once for this platform.
SocketWatch = PollingWatch if sys.platform == "win32" else FileHandlerWatch


def is_names_list(text):
    """Whether ``text`` can be a reply to GET_NAMES: names separated by
    single spaces, none twice, or nothing.  A delivered message
    ``<name> sent <words>`` is never taken for one."""
    names = text.split(" ")
    if text == "":
        return True
    if len(names) > 1 and names[1] == "sent":
        return False
    keys = {protocol.name_key(name) for name in names}
    return (len(keys) == len(names)
            and all(protocol.is_valid_name(name) for name in names))


class ChatWindow:
    """The conversation, the names list and the entry, served on one
    connected socket.  ``exit_status`` is 0 until the connection is lost.

    ``on_leave`` is called once the user has left (EXIT or the window
    closed); by default it destroys the window.
    """

    def __init__(self, root, sock, title="Chat", watch=SocketWatch,
                 on_leave=None):
        self.root = root
        self.sock = sock
        self.title = title
        self.on_leave = on_leave or root.destroy
        self.max_lines = MAX_LINES
        self.exit_status = 0
        self.decoder = protocol.FrameDecoder(from_server=True)
        self.outbox = bytearray()
        # One entry per GET_NAMES sent and not yet answered, in order:
        # True if the user typed it (its reply is shown), False if the
        # window sent it for the names list (its reply is not).
        self.names_requests = collections.deque()
        # The names asked for with NAME, not yet greeted with "Hello".
        self.names_asked = collections.deque()
        self.leaving = False
        self._exit_timer = None
        self.connected = True
        self._build()
        sock.setblocking(False)
        self.watch = watch(root, sock, self._receive, self._flush)
        # Tk's watch outlives a window: stop it when the window goes.
        self.conversation.bind("<Destroy>", lambda event: self._disconnect())
        self.show_line(GREETING)
        self.show_line("")
        self.refresh_names()

    # ------------------------------------------------------------- widgets

    def _build(self):
        root = self.root
        root.title(self.title)
        root.protocol("WM_DELETE_WINDOW", self.close)
        root.columnconfigure(0, weight=1)
        root.rowconfigure(0, weight=1)

        self.conversation = tkinter.Text(
            root, width=60, height=20, wrap="word", state="disabled",
            padx=4, pady=4)
        scrollbar = tkinter.Scrollbar(root,
                                      command=self.conversation.yview)
        self.conversation["yscrollcommand"] = scrollbar.set
        for tag, colour in TAG_COLOURS.items():
            self.conversation.tag_configure(tag, foreground=colour)
        self.conversation.grid(row=0, column=0, sticky="nsew")
        scrollbar.grid(row=0, column=1, sticky="ns")

        side = tkinter.Frame(root)
        side.grid(row=0, column=2, sticky="ns", padx=4, pady=4)
        side.rowconfigure(1, weight=1)
        tkinter.Label(side, text="Names").grid(row=0, column=0)
        # exportselection=False: selecting text elsewhere leaves the list
        # alone (and does not send it a selection event).
        self.names = tkinter.Listbox(side, width=20, exportselection=False)
        self.names.grid(row=1, column=0, sticky="ns")
        self.names.bind("<<ListboxSelect>>", self._name_clicked)
        self.refresh_button = tkinter.Button(side, text="Refresh",
                                             command=self.refresh_names)
        self.refresh_button.grid(row=2, column=0, sticky="ew")

        bottom = tkinter.Frame(root)
        bottom.grid(row=1, column=0, columnspan=3, sticky="ew", padx=4,
                    pady=4)
        bottom.columnconfigure(0, weight=1)
        self.entry = tkinter.Entry(bottom)
        self.entry.grid(row=0, column=0, sticky="ew")
        self.entry.bind("<Return>", self.send_typed)
        self.entry.bind("<KP_Enter>", self.send_typed)
        self.send_button = tkinter.Button(bottom, text="Send",
                                          command=self.send_typed)
        self.send_button.grid(row=0, column=1, padx=(4, 0))
        self.entry.focus_set()

    def show_line(self, text, tag=None):
        """Add a line to the conversation; keep the view at the bottom
        if it was there, and keep only the last max_lines lines."""
        conversation = self.conversation
        at_bottom = conversation.yview()[1] >= 1.0
        conversation["state"] = "normal"
        conversation.insert("end", text + "\n", tag or ())
        # The Text always ends with one more newline of its own.
        excess = int(conversation.index("end").split(".")[0]) - 2 \
            - self.max_lines
        if excess > 0:
            conversation.delete("1.0", f"{excess + 1}.0")
        conversation["state"] = "disabled"
        if at_bottom:
            conversation.see("end")

    def show_names(self, text):
        self.names.delete(0, "end")
        for name in text.split():
            self.names.insert("end", name)

    def _name_clicked(self, event=None):
        """Start ``MSG <name> `` in the entry; a message already typed
        after another name is kept."""
        selected = self.names.curselection()
        if not selected:
            return
        name = self.names.get(selected[0])
        # Cleared, so that clicking the same name again is a new event.
        self.names.selection_clear(0, "end")
        if str(self.entry["state"]) == "disabled":
            return
        command, argument = protocol.parse_command(self.entry.get())
        message = ""
        if command == protocol.COMMAND_MSG:
            message = argument.partition(" ")[2]
        self.entry.delete(0, "end")
        self.entry.insert(0, f"{protocol.COMMAND_MSG} {name} {message}")
        self.entry.icursor("end")
        # Later: the list takes the focus itself after this event.
        self.root.after_idle(self.entry.focus_set)

    # ----------------------------------------------------------- commands

    def send_typed(self, event=None):
        """Send the entry's line, as the terminal client sends a line."""
        line = self.entry.get()
        if not line.strip() or not self.connected or self.leaving:
            return "break"
        self.show_line(protocol.safe_text(line), "typed")
        try:
            data = protocol.encode(line)
        except protocol.MessageTooLongError as error:
            # Kept in the entry, so it can be shortened.
            self.show_line(f"ERROR: not sent: {error}", "error")
            return "break"
        self.entry.delete(0, "end")
        command, argument = protocol.parse_command(line)
        if command == protocol.COMMAND_EXIT:
            self.leave()
            return "break"
        if command == protocol.COMMAND_GET_NAMES and not argument.strip():
            self.names_requests.append(True)
        elif command == protocol.COMMAND_NAME:
            self.names_asked.append(argument.strip())
        self._send(data)
        return "break"  # no other binding of Enter

    def refresh_names(self):
        """Ask for the names; the reply fills the list only."""
        if self.connected and not self.leaving:
            self.names_requests.append(False)
            self._send(protocol.encode(protocol.COMMAND_GET_NAMES))

    def leave(self):
        """Send EXIT, and leave when the server answers or closes, or
        after EXIT_WAIT_MS at most."""
        self.leaving = True
        self._disable()
        self._send(protocol.encode(protocol.COMMAND_EXIT))
        self._exit_timer = self.root.after(EXIT_WAIT_MS, self._left)

    def close(self):
        """The window's close button: EXIT if it can go at once, then
        leave."""
        if self.connected and not self.leaving:
            self.leaving = True
            self._send(protocol.encode(protocol.COMMAND_EXIT))
        self._left()

    def _left(self):
        if self._exit_timer is not None:
            self.root.after_cancel(self._exit_timer)
            self._exit_timer = None
        if self.on_leave is not None:
            on_leave, self.on_leave = self.on_leave, None
            self._disconnect()
            on_leave()

    # ------------------------------------------------------------- socket

    def _send(self, data):
        self.outbox += data
        self._flush()

    def _flush(self):
        """Send what the socket takes now; watch for writability while
        anything is left."""
        while self.outbox and self.connected:
            try:
                sent = self.sock.send(self.outbox)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._lost()
                return
            del self.outbox[:sent]
        if self.connected:
            self.watch.want_writable(bool(self.outbox))

    def _receive(self):
        """Read what has arrived and show it.  One read a call: if more
        is waiting, Tk calls again, after the window's own events."""
        if not self.connected:
            return
        try:
            data = self.sock.recv(RECEIVE_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        try:
            payloads = self.decoder.feed(data) if data else None
        except protocol.ProtocolError:
            payloads = None
        for payload in payloads or ():
            self._handle(protocol.decode(payload))
            if not self.connected:
                return  # the user has left: the window may be gone
        if payloads is None:
            if self.leaving:
                self._left()
            else:
                self._lost()

    def _handle(self, text):
        """Show one frame from the server, or give it to the names list."""
        if self.leaving and text == protocol.COMMAND_EXIT:
            self._left()
            return
        greeted = self._greeted(text)
        if (greeted is None and self.names_requests
                and is_names_list(text)):
            shown = self.names_requests.popleft()
            self.show_names(text)
            if not shown:
                return
        tag = None
        if text.startswith(ERROR_PREFIX):
            tag = "error"
        elif text.startswith(NOTICE_PREFIX):
            tag = "notice"
        self.show_line(f"Server sent: {protocol.safe_text(text)}", tag)
        if greeted is not None:
            self.root.title(f"{greeted} - {self.title}")
            self.refresh_names()

    def _greeted(self, text):
        """The name, if ``text`` is the reply "Hello <name>" to a NAME the
        user sent.  ("Hello A" could also be a list of two names.)"""
        name = text[len(HELLO_PREFIX):]
        if not text.startswith(HELLO_PREFIX) or name not in self.names_asked:
            return None
        # Replies come in order: the NAMEs asked before this one were
        # refused.
        while self.names_asked.popleft() != name:
            pass
        return name

    def _lost(self):
        self.show_line(LOST_CONNECTION, "error")
        self.exit_status = 1
        self._disable()
        self._disconnect()

    def _disable(self):
        for widget in (self.entry, self.send_button, self.refresh_button):
            widget["state"] = "disabled"

    def _disconnect(self):
        if self.connected:
            self.connected = False
            self.watch.stop()
            self.sock.close()


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        description="The chat in a window (see README.md).",
        epilog=COMMANDS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    protocol.add_server_arguments(parser)
    return parser.parse_args(argv)


def main(argv=None):
    arguments = parse_arguments(argv)
    address = (arguments.host, arguments.port)
    try:
        sock = socket.create_connection(address, timeout=10)
    except OSError as error:
        print(f"Cannot connect to {arguments.host}:{arguments.port} "
              f"({protocol.describe_error(error)}): is the server running?",
              file=sys.stderr)
        return 1
    return run_window(sock, f"Chat on {arguments.host}:{arguments.port}")


def run_window(sock, title):
    """Open the window on the connected ``sock`` and serve it until the
    user leaves; return the exit status (Ctrl+C leaves too)."""
    window = None
    try:
        root = tkinter.Tk()
        window = ChatWindow(root, sock, title=title)
        # Ctrl+C leaves as the close button does, once Tk is between
        # events (a KeyboardInterrupt inside a Tk callback would only be
        # reported and ignored).
        signal.signal(signal.SIGINT,
                      lambda signum, frame: root.after_idle(window.close))
        root.mainloop()
    except tkinter.TclError as error:
        print(f"Cannot open a window: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if window is not None:
            window.close()
    finally:
        sock.close()
    return window.exit_status if window is not None else 0


if __name__ == "__main__":
    sys.exit(main())
