"""A multi-user chat server: one thread, one selectors loop.

    python chat_server.py [--host H] [--port P] [-v]

Clients send NAME, GET_NAMES, MSG and EXIT in the frames of chat_protocol.
Every socket is non-blocking; replies are queued in the connection's outbox
and written when the socket can take them, so a slow client never holds up
the others.  Nothing a client sends can stop the loop: the worst it can do
is get its own connection closed.
"""

import argparse
import errno
import logging
import os
import selectors
import signal
import socket
import sys
import time

import chat_protocol as protocol

log = logging.getLogger("chat_server")

RECEIVE_SIZE = 65536
DEFAULT_MAX_OUTBOX = 1024 * 1024
DEFAULT_FRAME_TIMEOUT = 30.0
# File descriptors kept for the listener, the selector, the standard
# streams, the wake-up pair, the spare descriptor and the logging handlers.
RESERVED_FDS = 16
# CPython builds select() on Windows for at most 512 sockets.
WINDOWS_MAX_CLIENTS = 500
CLOSE_GRACE = 5.0
SHUTDOWN_FLUSH_SECONDS = 1.0
SHUTDOWN_NOTICE = "SERVER: the server is shutting down"
SERVER_FULL = "ERROR: server full"
# select() on Windows is not interrupted by Ctrl+C, and Python runs the
# signal handler only when it returns: wake up this often to let it run.
IDLE_TIMEOUT = 0.5 if sys.platform == "win32" else None

COMMAND_LIST = ", ".join(protocol.COMMAND_USAGE[word] for word in (
    "NAME", "GET_NAMES", "MSG", "EXIT"))


class Connection:
    """One client: its socket, its name and its two buffers."""

    __slots__ = ("sock", "address", "name", "sent_prefix", "decoder", "outbox",
                 "waiting_to_write", "closing", "closed", "deadline")

    def __init__(self, sock, address):
        self.sock = sock
        self.address = address
        self.name = None
        # What a message from this client starts with: b"<name> sent ".
        self.sent_prefix = b""
        self.decoder = protocol.FrameDecoder()
        self.outbox = bytearray()
        self.waiting_to_write = False
        self.closing = False
        self.closed = False
        # Monotonic time by which an incomplete frame must be completed, or
        # a closing connection must have flushed; None when there is none.
        self.deadline = None

    def __str__(self):
        host, port = self.address[:2]
        return f"{host}:{port}" + (f" ({self.name})" if self.name else "")


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
                 frame_timeout=DEFAULT_FRAME_TIMEOUT):
        self.max_clients = max_clients
        self.max_outbox = max_outbox
        self.frame_timeout = frame_timeout
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
        # Connections with queued output not yet tried this loop turn.
        self._unflushed = []
        # Connections with a deadline (see Connection.deadline).
        self._timed = set()
        self._running = True
        self.trace = log.isEnabledFor(logging.DEBUG)
        self.handlers = {
            protocol.COMMAND_NAME: self.handle_name,
            protocol.COMMAND_GET_NAMES: self.handle_get_names,
            protocol.COMMAND_MSG: self.handle_msg,
            protocol.COMMAND_EXIT: self.handle_exit,
        }

    @property
    def address(self):
        """The (host, port) the server listens on."""
        return self.listener.getsockname()[:2]

    # ------------------------------------------------------------ the loop

    def serve_forever(self):
        """Serve until shutdown(); then notify and close every client."""
        log.info("listening on %s:%d", *self.address)
        select = self.selector.select
        try:
            while self._running:
                timeout = 1.0 if self._timed else IDLE_TIMEOUT
                for key, mask in select(timeout):
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
                if self._unflushed:
                    self._flush()
                if self._timed:
                    self._expire(time.monotonic())
            self._notify_shutdown()
        finally:
            self.close()

    def shutdown(self):
        """Ask serve_forever() to stop; safe from a thread or a signal."""
        self._running = False
        try:
            self._wakeup_writer.send(b"\0")
        except OSError:
            pass  # already full or closed: the loop is waking anyway

    def close(self):
        """Close every socket the server holds."""
        for connection in list(self.connections):
            self._close(connection)
        for sock in (self.listener, self._wakeup_reader,
                     self._wakeup_writer):
            sock.close()
        self.selector.close()
        if self._spare_fd is not None:
            os.close(self._spare_fd)
            self._spare_fd = None

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
                log.warning("accept failed: %s", error)
                continue
            if (self.max_clients is not None
                    and len(self.connections) >= self.max_clients):
                self._refuse(sock, address, "server full")
                continue
            sock.setblocking(False)
            connection = Connection(sock, address)
            self.connections.add(connection)
            self.selector.register(sock, selectors.EVENT_READ, connection)
            log.info("%s connected", connection)

    def _refuse(self, sock, address, reason):
        """Tell a connection we cannot take it, and close it."""
        log.warning("%s:%d refused: %s", address[0], address[1], reason)
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
            log.error("out of file descriptors; cannot accept")
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
            self._drop(connection, f"connection error: {error}")
            return
        if not data:
            self._drop(connection, "closed the connection")
            return
        decoder = connection.decoder
        try:
            payloads = decoder.feed(data)
        except protocol.ProtocolError as error:
            self._queue(connection, f"ERROR: {error}")
            self._close_after_flush(connection, f"protocol error: {error}")
            return
        for payload in payloads:
            self._dispatch(connection, payload)
            if connection.closing or connection.closed:
                return
        self._track_partial_frame(connection, bool(payloads))

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
            self._queue(connection,
                        "ERROR: the message is not valid UTF-8 text")
            return
        if self.trace:
            log.debug("%s: %s", connection, text)
        command, argument = protocol.parse_command(text)
        handler = self.handlers.get(command)
        if handler is None:
            if command:
                self._queue(connection, "ERROR: unknown command; the "
                            f"commands are {COMMAND_LIST}")
            else:
                self._queue(connection, "ERROR: empty command; the "
                            f"commands are {COMMAND_LIST}")
            return
        handler(connection, argument)

    def handle_name(self, connection, argument):
        """NAME <name>: take a free name, or change to one."""
        name = argument.strip()
        if not name:
            self._queue(connection, "ERROR: missing name; usage: NAME <name>")
            return
        if not protocol.is_valid_name(name):
            self._queue(connection, f"ERROR: invalid name: "
                        f"{protocol.NAME_RULE}")
            return
        key = protocol.name_key(name)
        holder = self.clients_by_name.get(key)
        if holder is not None and holder is not connection:
            self._queue(connection, f"ERROR: the name '{name}' is taken")
            return
        if connection.name is not None:
            old_key = protocol.name_key(connection.name)
            if old_key != key:
                del self.clients_by_name[old_key]
        connection.name = name
        connection.sent_prefix = f"{name} sent ".encode(protocol.ENCODING)
        self.clients_by_name[key] = connection
        log.info("%s named", connection)
        self._queue(connection, f"Hello {name}")

    def handle_get_names(self, connection, argument):
        """GET_NAMES: every name, in the order set, split between names
        into frames of at most MAX_MSG_LENGTH bytes."""
        if argument.strip():
            self._queue(connection,
                        "ERROR: GET_NAMES takes nothing after it")
            return
        names = [client.name for client in self.clients_by_name.values()]
        for payload in protocol.split_names(names):
            self._queue(connection, payload)

    def handle_msg(self, connection, argument):
        """MSG <name> <message>: deliver '<sender> sent <message>'."""
        recipient_name, _, message = argument.partition(" ")
        recipient = self.clients_by_name.get(protocol.name_key(recipient_name))
        if (recipient is None or connection.name is None
                or not message or message.isspace()):
            self._queue(connection,
                        self._msg_error(connection, recipient_name, message))
            return
        delivered = connection.sent_prefix + message.encode(protocol.ENCODING)
        try:
            data = protocol.frame(delivered)
        except protocol.MessageTooLongError:
            room = protocol.MAX_MSG_LENGTH - len(connection.sent_prefix)
            self._queue(connection, f"ERROR: message too long: from "
                        f"{connection.name} a message is at most {room} "
                        "bytes of UTF-8")
            return
        self._queue_frame(recipient, data)

    @staticmethod
    def _msg_error(connection, recipient_name, message):
        """The error for a MSG that cannot be delivered."""
        if not message or message.isspace():
            return ("ERROR: missing name or message; "
                    "usage: MSG <name> <message>")
        if connection.name is None:
            return "ERROR: set your name first with NAME <name>"
        if protocol.is_valid_name(recipient_name):
            return f"ERROR: no client named '{recipient_name}' is connected"
        return f"ERROR: no such client: {protocol.NAME_RULE}"

    def handle_exit(self, connection, argument):
        """EXIT: answer EXIT, then close."""
        self._queue(connection, protocol.COMMAND_EXIT)
        self._close_after_flush(connection, "left")

    # ------------------------------------------------------------- writing

    def _queue(self, connection, text):
        self._queue_frame(connection, protocol.encode(text))

    def _queue_frame(self, connection, data):
        """Append a frame to a connection's outbox; it is written at the
        end of this loop turn, or when the socket becomes writable."""
        outbox = connection.outbox
        if not outbox and not connection.waiting_to_write:
            self._unflushed.append(connection)
        outbox += data
        if len(outbox) > self.max_outbox:
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
                self._drop(connection, f"connection error: {error}")
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
        log.info("%s %s", connection, reason)

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
            log.info("%s %s", connection, reason)
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
        log.info("shutting down")
        # Only writes matter now: a new connection or another signal must
        # not make the flush loop below spin.
        self.selector.unregister(self.listener)
        self.selector.unregister(self._wakeup_reader)
        for connection in list(self.connections):
            if not connection.closing:
                self._queue(connection, SHUTDOWN_NOTICE)
                if not connection.closed:
                    self._close_after_flush(connection, "disconnected")
        self._flush()
        deadline = time.monotonic() + SHUTDOWN_FLUSH_SECONDS
        while self.connections and time.monotonic() < deadline:
            for key, mask in self.selector.select(
                    deadline - time.monotonic()):
                self._write(key.data)


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        description="A multi-user chat server (see README.md).")
    parser.add_argument("--host", default=protocol.SERVER_IP,
                        help="address to listen on (default %(default)s; "
                        "0.0.0.0 opens it to the network)")
    parser.add_argument("--port", type=int, default=protocol.SERVER_PORT,
                        help="port to listen on (default %(default)s; "
                        "0 picks a free one)")
    parser.add_argument("--max-clients", type=int, default=None,
                        help="connections served at once; the next one "
                        "gets 'ERROR: server full' (default: what the "
                        "open-files limit allows)")
    parser.add_argument("--max-outbox", type=int, default=DEFAULT_MAX_OUTBOX,
                        help="bytes that may wait for a client that is not "
                        "reading before it is disconnected "
                        "(default %(default)s)")
    parser.add_argument("--frame-timeout", type=float,
                        default=DEFAULT_FRAME_TIMEOUT,
                        help="seconds a client may take to finish a frame "
                        "it started (default %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log more detail")
    return parser.parse_args(argv)


def main(argv=None):
    arguments = parse_arguments(argv)
    logging.basicConfig(
        level=logging.DEBUG if arguments.verbose else logging.INFO,
        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    open_files = raise_open_files_limit()
    max_clients = arguments.max_clients
    if max_clients is None:
        max_clients = default_max_clients(open_files)
    try:
        server = ChatServer(arguments.host, arguments.port,
                            max_clients=max_clients,
                            max_outbox=arguments.max_outbox,
                            frame_timeout=arguments.frame_timeout)
    except OSError as error:
        print(f"chat_server: cannot listen on {arguments.host}:"
              f"{arguments.port}: {protocol.describe_error(error)}",
              file=sys.stderr)
        return 1
    log.debug("open-files limit %s, at most %d clients", open_files,
              max_clients)

    def on_signal(signum, frame):
        server.shutdown()

    signal.signal(signal.SIGINT, on_signal)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, on_signal)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
