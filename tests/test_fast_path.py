"""The fast path for MSG changes nothing (issue 12): hypothesis plays the
same sequences of commands from several clients into a server with the
fast path and one without, and every client must receive the same bytes,
and both logs must read the same."""

import io
import re
import socket
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chat_protocol as protocol
import chat_server
from support import Peer, ServerProcess, TIMEOUT

# Names clients take (so that messages often find their recipient), and
# other spellings: other cases, full width, too long, mixed scripts.
TAKEN = ["A", "Bob", "שי", "x" * 20]
NAMES = TAKEN + ["a", "bob", "BOB", "Ｂｏｂ", "y" * 21, "\u0410lice", "Al"]
TEXTS = st.one_of(
    st.sampled_from(["hi", "  lead", "trail  ", " ", "   ", "\x1c",
                     "\x1f x", "\t x", " \x0b", "x\ty", "שלום", "🎉 party",
                     "x" * 9990, "y" * 9974, "ERROR: no", "\x7f", "~",
                     "\xa0", "\u3000 ", "\u2003x", "\u2028", "é"]),
    st.text(alphabet="abc XYZ 019.!\t\x1c", min_size=1, max_size=30),
    st.text(max_size=20),
)


@st.composite
def commands(draw):
    """A command line as a client might type it, valid or not."""
    name = draw(st.one_of(st.sampled_from(TAKEN), st.sampled_from(NAMES)))
    kind = draw(st.sampled_from(
        ["name", "msg", "msg", "msg", "msg", "msg_lower", "msg_spaces",
         "get_names", "broadcast", "history", "help", "exit", "other",
         "not_utf8", "longest"]))
    text = draw(TEXTS)
    return {
        "name": f"NAME {name}",
        "msg": f"MSG {name} {text}",
        "msg_lower": f"msg {name} {text}",
        "msg_spaces": f"MSG  {name}  {text}",
        "get_names": "GET_NAMES",
        "broadcast": f"BROADCAST {text}",
        "history": "HISTORY",
        "help": "HELP",
        "exit": "EXIT",
        "other": text,
        # The longest MSG that fits a frame: too long to deliver from a
        # sender whose name is not shorter than the recipient's.
        "longest": f"MSG {name} " + "L" * (9994 - len(name.encode())),
        "not_utf8": f"MSG {name} ".encode() + draw(st.sampled_from(
            [b"\xff", b"ok\xc3\x28", b"\xed\xa0\x80"])),
    }[kind]


def encode(line, width):
    """The frame for a line in the client's width where it fits, else a
    4-digit one, else nothing (a client cannot send it).  A line of bytes
    (not UTF-8) goes as it is, in a 4-digit frame."""
    if isinstance(line, bytes):
        return protocol.frame(line)
    try:
        return protocol.encode(line, width if len(line) <= 99 else 4)
    except protocol.MessageTooLongError:
        return b""


@st.composite
def sessions(draw):
    """Each client's byte stream in chunks, and the order in which the
    chunks of all clients are sent.  Most frames go alone; some are cut
    anywhere, some glued to the next."""
    streams = []
    for _ in range(draw(st.integers(min_value=2, max_value=4))):
        width = draw(st.sampled_from([2, 4]))
        lines = [f"NAME {draw(st.sampled_from(TAKEN))}"] + draw(
            st.lists(commands(), max_size=8))
        chunks = [b""]
        for line in lines:
            frame = encode(line, width)
            how = draw(st.sampled_from(["alone"] * 6 + ["cut", "glue"]))
            if how == "cut" and len(frame) > 1:
                cut = draw(st.integers(min_value=1, max_value=len(frame) - 1))
                chunks[-1] += frame[:cut]
                chunks += [frame[cut:], b""]
            elif how == "glue":
                chunks[-1] += frame
            else:
                chunks += [frame, b""]
        streams.append([chunk for chunk in chunks if chunk])
    order = draw(st.permutations(
        [index for index, chunks in enumerate(streams) for _ in chunks]))
    return streams, order


class Side:
    """One server and the clients of the current example on it."""

    def __init__(self, *arguments):
        self.server = ServerProcess("--no-history", "--log-rate", "0",
                                    *arguments)
        self.observer = socket.create_connection(
            ("127.0.0.1", self.server.port), TIMEOUT)
        self.observer.settimeout(TIMEOUT)
        self.clients = []

    def barrier(self):
        """Return once the server has handled everything sent before, and
        has written what that produced (two round trips: the first one's
        loop turn may still be writing when its answer arrives)."""
        for _ in range(2):
            protocol.send_message(self.observer, "HELP EXIT")
            assert protocol.receive_message(self.observer)

    def connect(self, count):
        self.log_start = len(self.server.log())
        self.clients = [socket.create_connection(
            ("127.0.0.1", self.server.port), TIMEOUT) for _ in range(count)]
        for client in self.clients:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, index, chunk):
        try:
            self.clients[index].sendall(chunk)
        except OSError:
            pass  # the server closed it: it is closed on both sides alike
        self.barrier()

    def transcripts(self):
        """Everything each client received, and the log of the example
        with times dropped and client ports replaced by client numbers."""
        received = [bytearray() for _ in self.clients]
        for client in self.clients:
            client.setblocking(False)
        while True:
            self.barrier()
            got = 0
            for client, data in zip(self.clients, received):
                while True:
                    try:
                        chunk = client.recv(65536)
                    except (BlockingIOError, ConnectionResetError):
                        break
                    if not chunk:
                        break
                    data += chunk
                    got += len(chunk)
            if not got:
                break
        ports = {str(client.getsockname()[1]): f"client{index}"
                 for index, client in enumerate(self.clients)}
        log = []
        for line in self.server.log()[self.log_start:].splitlines():
            line = line.split(" ", 1)[1]
            line = re.sub(r"127\.0\.0\.1:(\d+)",
                          lambda match: ports.get(match.group(1), "other"),
                          line)
            if "other" not in line:
                log.append(line)
        return [bytes(data) for data in received], log

    def disconnect(self):
        """Close the example's clients and wait until their names are
        free, so that the next example starts from an empty chat."""
        for client in self.clients:
            client.close()
        self.clients = []
        for _ in range(200):
            protocol.send_message(self.observer, "GET_NAMES")
            if protocol.receive_message(self.observer) == "":
                return
        raise AssertionError("names not freed")

    def close(self):
        self.observer.close()
        self.server.cleanup()


@pytest.fixture(scope="module")
def sides():
    fast = Side()
    general = Side("--no-fast-path")
    try:
        yield fast, general
    finally:
        fast.close()
        general.close()


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(session=sessions())
def test_fast_path_and_general_path_send_the_same_bytes(sides, session):
    streams, order = session
    for side in sides:
        side.connect(len(streams))
    try:
        positions = [0] * len(streams)
        for index in order:
            chunk = streams[index][positions[index]]
            positions[index] += 1
            for side in sides:
                side.send(index, chunk)
        fast, general = (side.transcripts() for side in sides)
        assert fast == general
    finally:
        for side in sides:
            side.disconnect()


def test_the_fast_path_takes_the_plain_msg_and_only_that():
    """The comparison above means something only if the fast path runs: a
    real server, in a thread, with its general path watched.  With the
    fast path, a plain MSG never reaches it; everything else does."""
    server = chat_server.ChatServer(port=0, log=chat_server.EventLog(
        io.StringIO()))
    dispatched = []
    general = server._dispatch

    def watched(connection, payload):
        dispatched.append(payload)
        general(connection, payload)

    server._dispatch = watched
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        port = server.address[1]
        sender = "S" * 20
        a, b = Peer(port).name(sender), Peer(port).name("Bob")
        lines = ["MSG Bob hi", "MSG bob hi", "MSG Bob שלום", "MSG Bob  two",
                 "MSG Nobody hi", "MSG Bob " + "x" * 9980, "MSG Bob ok"]
        a.send_raw(b"".join(protocol.encode(line) for line in lines))
        for message in ["hi", "hi", "שלום", " two"]:
            assert b.receive() == f"{sender} sent {message}"
        assert a.receive() == "ERROR: no client named 'Nobody'"
        assert a.receive() == (
            "ERROR: too long: your messages may be at most 9973 bytes")
        assert b.receive() == f"{sender} sent ok"
        general_lines = [f"NAME {sender}", "NAME Bob"] + lines[1:6]
        assert dispatched == [line.encode() for line in general_lines]
        a.close()
        b.close()
    finally:
        server.shutdown()
        thread.join(TIMEOUT)
