"""A multi-user chat server: one thread, one selectors loop.

    python chat_server.py [--host H] [--port P] [--length-field auto|2|4]
                          [--history FILE | --no-history] [-v]

Clients send NAME, GET_NAMES, MSG, BROADCAST, HISTORY, HELP and EXIT in the
frames of chat_protocol, with 4-digit or 2-digit length fields.  Every
socket is non-blocking; replies are queued in the connection's outbox and
written when the socket can take them, so a slow client never holds up the
others.  Nothing a client sends can stop the loop: the worst it can do is
get its own connection closed.
"""

import argparse
import errno
import os
import selectors
import signal
import socket
import sys
import time

import chat_protocol as protocol
import chat_history

RECEIVE_SIZE = 65536
FOUR_DIGITS = protocol.LENGTH_FIELD_SIZE
HEADERS = protocol.HEADERS
DEFAULT_MAX_OUTBOX = 1024 * 1024
DEFAULT_FRAME_TIMEOUT = 30.0
# File descriptors kept for the listener, the selector, the standard
# streams, the wake-up pair, the spare descriptor and the history file.
RESERVED_FDS = 16
# CPython builds select() on Windows for at most 512 sockets.
WINDOWS_MAX_CLIENTS = 500
CLOSE_GRACE = 5.0
SHUTDOWN_FLUSH_SECONDS = 1.0
# select() on Windows is not interrupted by Ctrl+C, and Python runs the
# signal handler only when it returns: wake up this often to let it run.
IDLE_TIMEOUT = 0.5 if sys.platform == "win32" else None
# The log shows at most this many lines a second (a flood is counted, not
# shown, so that the log never slows the chat); -v shows every line.
LOG_LINES_PER_SECOND = 200
HISTORY_DEFAULT_COUNT = 20
HISTORY_MAX_COUNT = 100
# What a history line adds before "<sender> sent to everyone: ...".
HISTORY_PREFIX = "[History] YYYY-MM-DD HH:MM "

SERVER_FULL = "ERROR: server full"
EXIT_REPLY = protocol.COMMAND_EXIT.encode()


def format_address(host, port):
    """``host:port``, with an IPv6 host in brackets: ``[::1]:8820``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class EventLog:
    """The server's log for the teacher: one time-stamped line per event.

    Lines are collected during a loop turn and written together at its end
    (``flush``), so a burst of events costs one write, not one each.  A
    stream that fails (a closed terminal, a full disk) loses the log, never
    the chat.  Lines about single messages (``per_message``) are shown up
    to ``per_second`` a second (None: all); beyond that they are counted,
    and the count is logged when the second is over.
    """

    def __init__(self, stream, per_second=LOG_LINES_PER_SECOND, quiet=False):
        self.stream = stream
        self.per_second = per_second
        # Quiet: only the lines logged with always().
        self.quiet = quiet
        self._lines = []
        self._second = None
        self._stamp = ""
        # How many more lines about messages this second may show; a
        # caller may test it before it makes the values of such a line.
        self.room = 0
        self.held_back = 0

    def tick(self, now):
        """Start a loop turn at ``now`` (time.time()): the lines logged
        during the turn carry its time."""
        second = int(now)
        if second == self._second:
            return
        if self.held_back:
            self._lines.append(
                f"{self._stamp} ({self.held_back} more lines about messages "
                "in that second not shown; -v shows them all)\n")
            self.held_back = 0
        self._second = second
        self._stamp = time.strftime("%H:%M:%S", time.localtime(second))
        self.room = (0 if self.quiet else sys.maxsize
                     if self.per_second is None else self.per_second)

    def __call__(self, text):
        if self.quiet:
            return
        self._lines.append(f"{self._stamp} {text}\n")

    def always(self, text):
        """Log a line even when quiet: the start, the end, failures."""
        self._lines.append(f"{self._stamp} {text}\n")

    def per_message(self, template, *values):
        """Log ``template % values``, a line about one message, if this
        second has room for it; the line is only made if it is shown."""
        if self.room:
            self.room -= 1
            self._lines.append(f"{self._stamp} {template % values}\n")
        elif not self.quiet:
            self.held_back += 1

    def flush(self):
        """Write the lines logged so far."""
        if self._lines:
            text = "".join(self._lines)
            self._lines.clear()
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):
                pass  # no log is better than no chat


class Connection:
    """One client: its socket, its name and its two buffers."""

    __slots__ = ("sock", "address", "name", "sent_prefix", "decoder",
                 "outbox", "waiting_to_write", "closing", "closed",
                 "deadline")

    def __init__(self, sock, address, length_field):
        self.sock = sock
        self.address = format_address(*address[:2])
        self.name = None
        # What a message from this client starts with: b"<name> sent ".
        self.sent_prefix = b""
        self.decoder = protocol.FrameDecoder(length_field)
        self.outbox = bytearray()
        self.waiting_to_write = False
        self.closing = False
        self.closed = False
        # Monotonic time by which an incomplete frame must be completed, or
        # a closing connection must have flushed; None when there is none.
        self.deadline = None

    def __str__(self):
        return self.address + (f" ({self.name})" if self.name else "")


def raise_open_files_limit():
    """Raise the soft limit on open files to the hard limit; return the
    soft limit in force afterwards (None where there is no such limit)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    unlimited = resource.RLIM_INFINITY
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == unlimited or soft == hard:
        return None if soft == unlimited else soft
    # macOS reports an unlimited hard limit yet refuses a soft limit above
    # its per-process maximum: then fall back to that maximum, OPEN_MAX.
    for target in ([hard] if hard != unlimited else [unlimited, 10240]):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue
        return None if target == unlimited else target
    return soft


def listen(host, port):
    """A listening socket on ``host``:``port``, IPv4 or IPv6 as the host
    name says; "::" also takes IPv4 where the system allows.  Raises
    OSError (socket.gaierror for a host name that cannot be looked up)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                flags=socket.AI_PASSIVE)[0][0]
    dual_stack = (family == socket.AF_INET6
                  and socket.has_dualstack_ipv6())
    return socket.create_server((host, port), family=family,
                                backlog=socket.SOMAXCONN,
                                dualstack_ipv6=dual_stack)


def default_max_clients(open_files_limit):
    """How many clients fit within the open-files limit."""
    if sys.platform == "win32":
        return WINDOWS_MAX_CLIENTS
    if open_files_limit is None or open_files_limit < 0:
        return 10000
    return max(1, open_files_limit - RESERVED_FDS)


class ChatServer:
    """The chat: a listening socket, the connections and the command table.

    ``serve_forever()`` runs the loop until ``shutdown()`` is called (from
    any thread or a signal handler), then tells every client that the
    server is shutting down and closes everything.
    """

    def __init__(self, host=protocol.SERVER_IP, port=protocol.SERVER_PORT,
                 max_clients=None, max_outbox=DEFAULT_MAX_OUTBOX,
                 frame_timeout=DEFAULT_FRAME_TIMEOUT,
                 length_field=protocol.AUTO, log=None, verbose=False,
                 fast_path=True):
        self.max_clients = max_clients
        self.max_outbox = max_outbox
        self.frame_timeout = frame_timeout
        self.length_field = length_field
        # A chat_history store for BROADCASTs (see keep_history), or None.
        self.history = None
        self.history_off_reason = "this server keeps no history"
        self.log = log or EventLog(sys.stderr)
        self.verbose = verbose
        # The fast path relays a plain MSG without the general path's
        # decoding; -v logs every command's text, so it takes the general.
        self.fast_path = fast_path and not verbose
        self._serve_frames = (self._relay_plain_msgs if self.fast_path
                              else self._serve_frames)
        self.listener = listen(host, port)
        self.listener.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        # A socket pair wakes the loop for shutdown() and for signals.
        self._wakeup_reader, self._wakeup_writer = socket.socketpair()
        self._wakeup_reader.setblocking(False)
        self._wakeup_writer.setblocking(False)
        self.selector.register(
            self._wakeup_reader, selectors.EVENT_READ, self._wakeup_reader)
        # Closed to free a descriptor when accept() finds none left.
        self._spare_fd = self._open_spare_fd()
        self.connections = set()
        # Name key -> connection, in the order the names were set.
        self.clients_by_name = {}
        # A name exactly as registered (UTF-8) -> connection: the fast path.
        self.clients_by_spelling = {}
        # Connections with queued output not yet tried this loop turn.
        self._unflushed = []
        # Connections with a deadline (see Connection.deadline).
        self._timed = set()
        self._running = True
        self.handlers = {
            protocol.COMMAND_NAME: self.handle_name,
            protocol.COMMAND_GET_NAMES: self.handle_get_names,
            protocol.COMMAND_MSG: self.handle_msg,
            protocol.COMMAND_BROADCAST: self.handle_broadcast,
            protocol.COMMAND_HISTORY: self.handle_history,
            protocol.COMMAND_HELP: self.handle_help,
            protocol.COMMAND_EXIT: self.handle_exit,
        }
        self.log.tick(time.time())
        self.log.always("listening on " + format_address(*self.address))

    @property
    def address(self):
        """The (host, port) the server listens on."""
        return self.listener.getsockname()[:2]

    # ------------------------------------------------------------ the loop

    def serve_forever(self):
        """Serve until shutdown(); then notify and close every client."""
        log = self.log
        log.flush()
        select = self.selector.select
        try:
            while self._running:
                timeout = (1.0 if self._timed or log.held_back
                           else IDLE_TIMEOUT)
                events = select(timeout)
                log.tick(time.time())
                for key, mask in events:
                    connection = key.data
                    if connection is None:
                        self._accept()
                    elif connection is self._wakeup_reader:
                        self._drain_wakeup()
                    else:
                        if mask & selectors.EVENT_READ:
                            self._on_readable(connection)
                        if mask & selectors.EVENT_WRITE and (
                                not connection.closed):
                            self._write(connection)
                # The turn's broadcasts are kept before anyone receives
                # them: a kill -9 loses none that a client has seen.
                if self.history is not None:
                    self._use_history(self.history.commit)
                if self._unflushed:
                    self._flush()
                if self._timed:
                    self._expire(time.monotonic())
                log.flush()
            self._notify_shutdown()
        finally:
            self.close()
            log.flush()

    def shutdown(self):
        """Ask serve_forever() to stop; safe from a thread or a signal."""
        self._running = False
        try:
            self._wakeup_writer.send(b"\0")
        except OSError:
            pass  # already full or closed: the loop is waking anyway

    def close(self):
        """Close every socket the server holds, and the history."""
        for connection in list(self.connections):
            self._close(connection)
        for sock in (self.listener, self._wakeup_reader,
                     self._wakeup_writer):
            sock.close()
        self.selector.close()
        if self._spare_fd is not None:
            os.close(self._spare_fd)
            self._spare_fd = None
        if self.history is not None:
            self._use_history(self.history.close)

    def _drain_wakeup(self):
        try:
            while self._wakeup_reader.recv(4096):
                pass
        except OSError:
            pass

    # ------------------------------------------------ accepting and reading

    @staticmethod
    def _open_spare_fd():
        try:
            return os.open(os.devnull, os.O_RDONLY)
        except OSError:
            return None

    def _accept(self):
        """Accept every pending connection (a bounded number per turn)."""
        for _ in range(256):
            try:
                sock, address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE):
                    self._refuse_without_descriptors()
                    return
                # ECONNABORTED and the like: that attempt is gone, go on.
                self.log(f"accept failed: {protocol.describe_error(error)}")
                continue
            if (self.max_clients is not None
                    and len(self.connections) >= self.max_clients):
                self._refuse(sock, address, "server full")
                continue
            sock.setblocking(False)
            # Small frames go out at once rather than wait for more.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = Connection(sock, address, self.length_field)
            self.connections.add(connection)
            self.selector.register(sock, selectors.EVENT_READ, connection)
            self.log(f"{connection} connected")

    def _refuse(self, sock, address, reason):
        """Tell a connection we cannot take it, and close it."""
        self.log(f"{format_address(*address[:2])} refused: {reason}")
        try:
            sock.setblocking(False)
            sock.send(protocol.encode(SERVER_FULL))
        except OSError:
            pass
        sock.close()

    def _refuse_without_descriptors(self):
        """Out of file descriptors: take the waiting connection with the
        spare one and refuse it, so the listener does not stay readable and
        spin the loop."""
        if self._spare_fd is None:
            self._spare_fd = self._open_spare_fd()
            self.log.always("out of file descriptors; cannot accept")
            return
        os.close(self._spare_fd)
        self._spare_fd = None
        try:
            sock, address = self.listener.accept()
        except OSError:
            pass
        else:
            self._refuse(sock, address, "out of file descriptors")
        self._spare_fd = self._open_spare_fd()

    def _on_readable(self, connection):
        try:
            data = connection.sock.recv(RECEIVE_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            self._drop(connection, "connection error: "
                       + protocol.describe_error(error))
            return
        if not data:
            self._drop(connection, "closed the connection")
            return
        try:
            payloads = connection.decoder.feed(data)
        except protocol.ProtocolError as error:
            self._refuse_command(connection, f"ERROR: {error}")
            self._close_after_flush(connection, f"protocol error: {error}")
            return
        self._serve_frames(connection, payloads)
        if not (connection.closing or connection.closed):
            self._track_partial_frame(connection, bool(payloads))

    def _serve_frames(self, connection, payloads):
        """Carry out each command of a read, in order, until one closes
        the connection."""
        for payload in payloads:
            self._dispatch(connection, payload)
            if connection.closing or connection.closed:
                return

    def _track_partial_frame(self, connection, completed_frames):
        """Start the frame timer when an incomplete frame starts; stop it
        when no incomplete frame is left."""
        if connection.decoder.pending:
            if completed_frames or connection.deadline is None:
                connection.deadline = time.monotonic() + self.frame_timeout
                self._timed.add(connection)
        elif connection.deadline is not None:
            connection.deadline = None
            self._timed.discard(connection)

    def _expire(self, now):
        for connection in [c for c in self._timed if c.deadline <= now]:
            if connection.closing:
                self._drop(connection, "did not take its last replies")
            else:
                self._drop(connection, "sent an incomplete frame and stalled")

    # ------------------------------------------------------------ commands

    def _dispatch(self, connection, payload):
        try:
            text = payload.decode(protocol.ENCODING)
        except UnicodeDecodeError:
            self._refuse_command(
                connection, "ERROR: the message is not valid UTF-8 text")
            return
        if self.verbose:
            self.log(f"{connection}: {text}")
        command, argument = protocol.parse_command(text)
        handler = self.handlers.get(command)
        if handler is None:
            what = "unknown" if command else "empty"
            self._refuse_command(
                connection, f"ERROR: {what} command; HELP lists the commands")
            return
        handler(connection, argument)

    def handle_name(self, connection, argument):
        """NAME <name>: take a free name, or change to one."""
        name = argument.strip()
        if not name:
            self._refuse_command(
                connection, "ERROR: missing name; usage: NAME <name>")
            return
        problem = protocol.name_problem(name)
        if problem is not None:
            self._refuse_command(connection, f"ERROR: invalid name: {problem}")
            return
        key = protocol.name_key(name)
        holder = self.clients_by_name.get(key)
        if holder is not None and holder is not connection:
            self._refuse_command(
                connection, f"ERROR: the name '{name}' is taken")
            return
        old_name = connection.name
        if old_name is not None:
            del self.clients_by_spelling[old_name.encode(protocol.ENCODING)]
            old_key = protocol.name_key(old_name)
            if old_key != key:
                del self.clients_by_name[old_key]
        connection.name = name
        connection.sent_prefix = f"{name} sent ".encode(protocol.ENCODING)
        self.clients_by_name[key] = connection
        self.clients_by_spelling[name.encode(protocol.ENCODING)] = connection
        if old_name is None:
            self.log(f"{connection} named")
        else:
            self.log(f"{connection.address} ({old_name}) renamed to {name}")
        self._queue(connection, f"Hello {name}")

    def handle_get_names(self, connection, argument):
        """GET_NAMES: every name, in the order set, split between names
        into as many frames as the client's length field needs."""
        if argument.strip():
            self._refuse_command(
                connection, "ERROR: GET_NAMES takes nothing after it")
            return
        names = [client.name for client in self.clients_by_name.values()]
        limit = (protocol.MAX_MSG_LENGTH
                 if connection.decoder.width == protocol.LENGTH_FIELD_SIZE
                 else protocol.MAX_SHORT_MSG_LENGTH)
        for payload in protocol.split_names(names, limit):
            self._queue(connection, payload)

    def handle_msg(self, connection, argument):
        """MSG <name> <message>: deliver '<sender> sent <message>'."""
        recipient_name, _, message = argument.partition(" ")
        recipient = self.clients_by_name.get(protocol.name_key(recipient_name))
        if (recipient is None or connection.name is None
                or not message or message.isspace()):
            self._refuse_command(
                connection, self._msg_error(connection, recipient_name,
                                            message))
            return
        delivered = connection.sent_prefix + message.encode(protocol.ENCODING)
        if len(delivered) > protocol.MAX_MSG_LENGTH:
            room = protocol.MAX_MSG_LENGTH - len(connection.sent_prefix)
            self._refuse_command(connection, "ERROR: too long: your messages "
                                 f"may be at most {room} bytes")
            return
        self._deliver(connection, recipient, delivered)

    def _relay_plain_msgs(self, connection, payloads):
        """The fast path of _serve_frames and handle_msg: relay the common
        MSG without decoding it; give every other frame, in its turn, to
        the general path.

        It takes only what it reproduces exactly: ASCII, so that bytes are
        characters and valid UTF-8; a sender with a name; a recipient
        spelled as registered, so that the lookup finds whom name_key
        would; a message that starts with a character above space, so that
        it is neither empty nor all white space; a delivery that fits one
        4-digit frame.  The log line is the one _deliver writes.
        """
        by_spelling = self.clients_by_spelling
        unflushed = self._unflushed
        max_outbox = self.max_outbox
        log = self.log
        prefix = connection.sent_prefix   # b"" without a name
        for payload in payloads:
            if prefix and payload[:4] == b"MSG ":
                recipient_name, _, message = payload[4:].partition(b" ")
                recipient = by_spelling.get(recipient_name)
                size = len(prefix) + len(message)
                if (recipient is not None and message and message[0] > 32
                        and payload.isascii()
                        and size <= protocol.MAX_MSG_LENGTH
                        and recipient.decoder.width == FOUR_DIGITS):
                    if log.room:
                        log.per_message("%s sent %d bytes to %s",
                                        connection, size, recipient.name)
                    else:
                        log.held_back += 1
                    outbox = recipient.outbox
                    if not outbox and not recipient.waiting_to_write:
                        unflushed.append(recipient)
                    outbox += HEADERS[size]
                    outbox += prefix
                    outbox += message
                    if len(outbox) > max_outbox:
                        self._make_room(recipient)
                        if connection.closed:
                            return
                    continue
            self._dispatch(connection, payload)
            if connection.closing or connection.closed:
                return
            prefix = connection.sent_prefix   # a NAME may have set it

    def _deliver(self, connection, recipient, delivered):
        """Queue a delivered message (bytes) to its recipient, and log it:
        who to whom and how long, never what."""
        self.log.per_message("%s sent %d bytes to %s", connection,
                             len(delivered), recipient.name)
        width = recipient.decoder.width
        self._queue_frame(recipient, (
            protocol.frame(delivered) if width == protocol.LENGTH_FIELD_SIZE
            else protocol.reply_frames(delivered, width)))

    @staticmethod
    def _msg_error(connection, recipient_name, message):
        """The error for a MSG that cannot be delivered."""
        if not message or message.isspace():
            return ("ERROR: missing name or message; "
                    "usage: MSG <name> <message>")
        if connection.name is None:
            return "ERROR: set your name first with NAME <name>"
        if protocol.is_valid_name(recipient_name):
            return f"ERROR: no client named '{recipient_name}'"
        return "ERROR: no such client; a name is letters, digits, '_' or '-'"

    def handle_broadcast(self, connection, argument):
        """BROADCAST <message>: deliver '<sender> sent to everyone:
        <message>' to every other client with a name, and keep it in the
        history."""
        if not argument or argument.isspace():
            self._refuse_command(
                connection, "ERROR: missing message; usage: BROADCAST "
                "<message>")
            return
        if connection.name is None:
            self._refuse_command(
                connection, "ERROR: set your name first with NAME <name>")
            return
        prefix = f"{connection.name} sent to everyone: ".encode(
            protocol.ENCODING)
        delivered = prefix + argument.encode(protocol.ENCODING)
        # Room is kept for the history line's "[History] <time> " too.
        room = protocol.MAX_MSG_LENGTH - len(HISTORY_PREFIX) - len(prefix)
        if len(delivered) - len(prefix) > room:
            self._refuse_command(connection, "ERROR: too long: your "
                                 f"broadcasts may be at most {room} bytes")
            return
        # Each frame is built once, whoever and however many receive it.
        frames = {}
        recipients = [client for client in self.clients_by_name.values()
                      if client is not connection]
        self.log.per_message("%s sent %d bytes to everyone (%d clients)",
                             connection, len(delivered), len(recipients))
        for recipient in recipients:
            width = recipient.decoder.width
            data = frames.get(width)
            if data is None:
                data = frames[width] = protocol.reply_frames(delivered, width)
            self._queue_frame(recipient, data)
        if self.history is not None:
            self._use_history(self.history.add, connection.name, argument)

    def handle_history(self, connection, argument):
        """HISTORY [n]: the last n broadcasts, oldest first."""
        argument = argument.strip()
        if not argument:
            count = HISTORY_DEFAULT_COUNT
        elif (argument.isdigit() and argument.isascii()
              and 1 <= int(argument) <= HISTORY_MAX_COUNT):
            count = int(argument)
        else:
            self._refuse_command(
                connection, "ERROR: usage: HISTORY [n], where n is 1 to "
                f"{HISTORY_MAX_COUNT}")
            return
        if self.history is not None:
            entries = self._use_history(self.history.last, count)
        if self.history is None:
            self._queue(connection, f"SERVER: {self.history_off_reason}")
            return
        if not entries:
            self._queue(connection, "[History] no broadcasts yet")
        for broadcast in entries:
            self._queue(connection, f"[History] {broadcast.local_time} "
                        f"{broadcast.sender} sent to everyone: "
                        f"{broadcast.message}")

    def handle_help(self, connection, argument):
        """HELP [command]: the commands' usage, a line each."""
        word = argument.strip().upper()
        if word and word not in self.handlers:
            self._refuse_command(
                connection, "ERROR: no such command; HELP lists the commands")
            return
        for line in protocol.help_lines([word] if word else self.handlers):
            self._queue(connection, line)

    def handle_exit(self, connection, argument):
        """EXIT: answer EXIT, then close."""
        self._queue(connection, protocol.COMMAND_EXIT)
        self._close_after_flush(connection, "left")

    def _refuse_command(self, connection, error):
        """Send an error reply, and log it."""
        self.log.per_message("%s: %s", connection, error)
        self._queue(connection, error)

    # ------------------------------------------------------------- history

    def keep_history(self, store):
        """Keep BROADCASTs in ``store`` (a chat_history.HistoryStore)."""
        self.history = store
        self.history_off_reason = None

    def _use_history(self, method, *arguments):
        """Call a method of the history store; on a failure, log it once,
        switch history off and return None: the chat goes on."""
        try:
            return method(*arguments)
        except chat_history.HistoryError as error:
            self._history_failed(error)
            return None

    def _history_failed(self, error):
        self.log.always(f"history switched off: {error}")
        self.history_off_reason = ("history is off after an error with its "
                                   "file")
        history, self.history = self.history, None
        try:
            history.close()
        except chat_history.HistoryError:
            pass  # it failed already, and close() closes it anyway

    # ------------------------------------------------------------- writing

    def _queue(self, connection, text):
        self._queue_frame(connection, protocol.reply_frames(
            text.encode(protocol.ENCODING), connection.decoder.width))

    def _queue_frame(self, connection, data):
        """Append frames to a connection's outbox; they are written at the
        end of this loop turn, or when the socket becomes writable."""
        outbox = connection.outbox
        if not outbox and not connection.waiting_to_write:
            self._unflushed.append(connection)
        outbox += data
        if len(outbox) > self.max_outbox:
            self._make_room(connection)

    def _make_room(self, connection):
        """An outbox over the limit: write what the socket takes now, and
        drop the client only if that is not enough.  (One loop turn may
        queue a burst from many senders for a client that reads well.)"""
        self._write(connection)
        if not connection.closed and (
                len(connection.outbox) > self.max_outbox):
            self._drop(connection, f"not reading: over {self.max_outbox} "
                       "bytes waiting for it")

    def _flush(self):
        unflushed, self._unflushed = self._unflushed, []
        for connection in unflushed:
            if not connection.closed:
                self._write(connection)

    def _write(self, connection):
        """Send as much of the outbox as the socket takes; watch for
        writability only while something is left."""
        outbox = connection.outbox
        if outbox:
            try:
                sent = connection.sock.send(outbox)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as error:
                self._drop(connection, "connection error: "
                           + protocol.describe_error(error))
                return
            del outbox[:sent]
        if outbox:
            if not connection.waiting_to_write:
                connection.waiting_to_write = True
                events = selectors.EVENT_WRITE
                if not connection.closing:
                    events |= selectors.EVENT_READ
                self.selector.modify(connection.sock, events, connection)
        elif connection.closing:
            self._close(connection)
        elif connection.waiting_to_write:
            connection.waiting_to_write = False
            self.selector.modify(
                connection.sock, selectors.EVENT_READ, connection)

    # ------------------------------------------------------------- leaving

    def _release_name(self, connection, reason):
        if connection.name is not None:
            key = protocol.name_key(connection.name)
            if self.clients_by_name.get(key) is connection:
                del self.clients_by_name[key]
                del self.clients_by_spelling[
                    connection.name.encode(protocol.ENCODING)]
        self.log(f"{connection} {reason}")

    def _close_after_flush(self, connection, reason):
        """Stop reading, free the name, close once the outbox is written."""
        if connection.closed or connection.closing:
            return
        self._release_name(connection, reason)
        if not connection.outbox:
            self._close(connection)
            return
        connection.closing = True
        connection.deadline = time.monotonic() + CLOSE_GRACE
        self._timed.add(connection)
        connection.waiting_to_write = True
        self.selector.modify(
            connection.sock, selectors.EVENT_WRITE, connection)

    def _drop(self, connection, reason):
        """The one way a connection ends without a goodbye."""
        if connection.closed:
            return
        if not connection.closing:
            self._release_name(connection, reason)
        else:
            self.log(f"{connection} {reason}")
        self._close(connection)

    def _close(self, connection):
        if connection.closed:
            return
        connection.closed = True
        self.connections.discard(connection)
        self._timed.discard(connection)
        try:
            self.selector.unregister(connection.sock)
        except (KeyError, ValueError):
            pass
        connection.sock.close()

    # ------------------------------------------------------------ shutdown

    def _notify_shutdown(self):
        """Tell every client the server is going, and give the notices a
        moment to leave."""
        self.log.always("shutting down")
        # Only writes matter now: a new connection or another signal must
        # not make the flush loop below spin.
        self.selector.unregister(self.listener)
        self.selector.unregister(self._wakeup_reader)
        for connection in list(self.connections):
            if not connection.closing:
                self._queue(connection, protocol.SHUTDOWN_NOTICE)
                if not connection.closed:
                    self._close_after_flush(connection, "disconnected")
        self._flush()
        self.log.flush()
        deadline = time.monotonic() + SHUTDOWN_FLUSH_SECONDS
        while self.connections and time.monotonic() < deadline:
            for key, mask in self.selector.select(
                    deadline - time.monotonic()):
                self._write(key.data)


def reachable_addresses():
    """This machine's IPv4 addresses that other machines may reach it on
    (not loopback), best first; empty if none can be found."""
    addresses = []
    # The address of the route to the outside world (UDP: nothing is sent).
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))
        addresses.append(probe.getsockname()[0])
    except OSError:
        pass
    finally:
        probe.close()
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None,
                                   socket.AF_INET)
    except OSError:
        infos = []
    addresses += [info[4][0] for info in infos]
    return [address for index, address in enumerate(addresses)
            if not address.startswith("127.")
            and address not in addresses[:index]]


def classroom_lines(host, port):
    """What the teacher needs to open the server to a class: the commands
    students type, and a word on the firewall (None for a local host)."""
    if host not in ("0.0.0.0", "::", ""):
        return []
    addresses = reachable_addresses()
    if not addresses:
        return ["no network address found: students cannot reach this "
                "machine"]
    lines = ["students connect with:"] + [
        f"  python chat_client.py --host {address} --port {port}"
        for address in addresses]
    if sys.platform == "win32":
        lines.append("if they cannot, allow Python through Windows "
                     "Defender Firewall (private networks)")
    return lines


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        description="A multi-user chat server (see README.md).")
    parser.add_argument("--host", default=protocol.SERVER_IP,
                        help="address to listen on (default %(default)s; "
                        "0.0.0.0 opens it to the network, :: too over "
                        "IPv6)")
    parser.add_argument("--port", type=protocol.listening_port,
                        default=protocol.SERVER_PORT,
                        help="port to listen on (default %(default)s; "
                        "0 picks a free one)")
    parser.add_argument("--length-field", type=protocol.length_field,
                        default=protocol.AUTO, metavar="{auto,2,4}",
                        help="digits in the length field: 4, 2 (the course "
                        "templates' dialect), or auto: each connection "
                        "is read as it writes (default %(default)s)")
    history = parser.add_mutually_exclusive_group()
    history.add_argument("--history", metavar="FILE",
                         default=chat_history.DEFAULT_PATH,
                         help="the SQLite file that keeps the broadcasts "
                         "(default %(default)s; :memory: keeps them "
                         "until the server stops)")
    history.add_argument("--no-history", action="store_true",
                         help="keep no history")
    parser.add_argument("--history-limit", type=protocol.at_least_one,
                        metavar="N",
                        default=chat_history.DEFAULT_LIMIT,
                        help="broadcasts kept; older ones are deleted "
                        "(default %(default)s)")
    parser.add_argument("--max-clients", type=int, default=None,
                        help="connections served at once; the next one "
                        "gets 'ERROR: server full' (default: what the "
                        "open-files limit allows)")
    parser.add_argument("--max-outbox", type=int, default=DEFAULT_MAX_OUTBOX,
                        help="bytes that may wait for a client that is not "
                        "reading before it is disconnected "
                        "(default %(default)s)")
    parser.add_argument("--frame-timeout", type=protocol.seconds,
                        default=DEFAULT_FRAME_TIMEOUT,
                        help="seconds a client may take to finish a frame "
                        "it started (default %(default)s)")
    parser.add_argument("--log-rate", type=int, metavar="N",
                        default=LOG_LINES_PER_SECOND,
                        help="lines about single messages logged a second "
                        "at most; the rest are counted (default "
                        "%(default)s; 0: no limit)")
    parser.add_argument("--no-fast-path", action="store_true",
                        help="relay every MSG by the general path (for "
                        "testing that both give the same; slower)")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true",
                           help="log only the start, the end and failures")
    verbosity.add_argument("-v", "--verbose", action="store_true",
                           help="log every command with its text, messages "
                           "included, and every line however many (slower)")
    return parser.parse_args(argv)


def main(argv=None):
    arguments = parse_arguments(argv)
    if sys.platform == "win32" and not sys.stderr.isatty():
        # Windows writes a redirected stream in its ANSI code page, which
        # has no room for most alphabets: a log file gets UTF-8 instead.
        sys.stderr.reconfigure(encoding="utf-8", errors="backslashreplace")
    log = EventLog(sys.stderr, per_second=(
        None if arguments.verbose or arguments.log_rate <= 0
        else arguments.log_rate), quiet=arguments.quiet)
    log.tick(time.time())
    open_files = raise_open_files_limit()
    max_clients = arguments.max_clients
    if max_clients is None:
        max_clients = default_max_clients(open_files)
    try:
        server = ChatServer(arguments.host, arguments.port,
                            max_clients=max_clients,
                            max_outbox=arguments.max_outbox,
                            frame_timeout=arguments.frame_timeout,
                            length_field=arguments.length_field, log=log,
                            verbose=arguments.verbose,
                            fast_path=not arguments.no_fast_path)
    except OSError as error:
        print(f"chat_server: cannot listen on "
              f"{format_address(arguments.host, arguments.port)}: "
              f"{protocol.describe_error(error)}", file=sys.stderr)
        return 1
    history = None
    if not arguments.no_history:
        try:
            history = chat_history.HistoryStore(arguments.history,
                                                limit=arguments.history_limit)
        except chat_history.HistoryError as error:
            server.close()
            print(f"chat_server: {error}", file=sys.stderr)
            return 1
        server.keep_history(history)
    if history is None:
        log.always("history: off")
    else:
        where = ("in memory, until the server stops"
                 if history.path == chat_history.MEMORY
                 else os.path.abspath(history.path))
        log.always(f"history: {where}; the last {history.limit} broadcasts "
                   "are kept")
    for line in classroom_lines(arguments.host, server.address[1]):
        log.always(line)
    if arguments.verbose:
        log(f"open-files limit {open_files}, at most {max_clients} clients")

    def on_signal(signum, frame):
        server.shutdown()

    signal.signal(signal.SIGINT, on_signal)
    # SIGTERM, and Ctrl+Break in a Windows console (SIGBREAK), stop it too.
    for name in ("SIGTERM", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), on_signal)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
