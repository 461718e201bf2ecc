"""The adversarial suite: broken and hostile clients against a real server
process.  A well-behaved witness stays connected through every probe and
must get correct replies before, during and after it; the server must still
be running at the end."""

import random
import socket
import sys
import time

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chat_protocol as protocol
from chat_server import WINDOWS_MAX_CLIENTS
from support import (STOP_SIGNAL, Peer, ServerProcess, needs_console_events,
                     open_descriptors, wait_for)

posix_only = pytest.mark.skipif(sys.platform == "win32",
                                reason="resource limits are POSIX")


class Witness(Peer):
    """A well-behaved client that checks the server still serves it."""

    def __init__(self, port):
        super().__init__(port)
        self.name("Witness")

    def check(self):
        assert self.request("MSG witness ping") == "Witness sent ping"


def cpu_seconds(pid):
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def test_exit_twice_in_one_packet(start_server):
    server = start_server()
    witness = Witness(server.port)
    client = Peer(server.port)
    client.send_raw(protocol.encode("EXIT") + protocol.encode("EXIT"))
    assert client.receive() == "EXIT"
    client.expect_closed()
    witness.check()


def test_name_msg_exit_in_one_packet(start_server):
    server = start_server()
    witness = Witness(server.port)
    client = Peer(server.port)
    client.send_raw(protocol.encode("NAME A") + protocol.encode("MSG A hi")
                    + protocol.encode("EXIT"))
    assert client.receive() == "Hello A"
    assert client.receive() == "A sent hi"
    assert client.receive() == "EXIT"
    client.expect_closed()
    witness.check()
    assert witness.request("GET_NAMES") == "Witness"


def test_a_whole_conversation_one_byte_at_a_time(start_server):
    server = start_server()
    witness = Witness(server.port)
    client = Peer(server.port)
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conversation = b"".join(protocol.encode(text) for text in [
        "NAME Slow", "GET_NAMES", "MSG slow שלום byte by byte", "EXIT"])
    for index in range(len(conversation)):
        client.send_raw(conversation[index:index + 1])
        if index % 16 == 0:
            witness.check()
    assert client.receive() == "Hello Slow"
    assert client.receive() == "Witness Slow"
    assert client.receive() == "Slow sent שלום byte by byte"
    assert client.receive() == "EXIT"
    client.expect_closed()
    witness.check()


# Past select()'s 1,024-descriptor limit on Linux and macOS; on Windows,
# where the server uses select() for at most 500 clients, up to that limit.
MANY_CLIENTS = (WINDOWS_MAX_CLIENTS - 1 if sys.platform == "win32"
                else 1100)


def test_many_simultaneous_connections(start_server):
    """Every client is served, up to the most the system allows."""
    server = start_server()
    witness = Witness(server.port)
    names = [f"client_{number:04d}" for number in range(MANY_CLIENTS)]
    clients = [Peer(server.port) for _ in names]
    try:
        # One at a time, so the names are set in this order: the server
        # takes frames that arrive together in whatever order select()
        # gives the sockets (on Windows, not the order they came in).
        for client, name in zip(clients, names):
            assert client.request(f"NAME {name}") == f"Hello {name}"
        expected = protocol.split_names(["Witness"] + names)
        witness.send("GET_NAMES")
        assert [witness.receive() for _ in expected] == expected
        clients[-1].send("MSG Witness from the last one")
        assert witness.receive() == f"{names[-1]} sent from the last one"
        witness.check()
    finally:
        for client in clients:
            client.close()


def low_open_files_limit(limit=64, hard_limit=None):
    """A preexec_fn that gives the server ``limit`` open files (its soft
    limit) and ``hard_limit`` at most (the same if not given)."""
    def apply():
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (limit, hard_limit or limit))
    return apply


def connect_many(port, count):
    """Open ``count`` connections; return those the server kept and the
    number it refused with 'ERROR: server full'."""
    kept, refused = [], 0
    for _ in range(count):
        peer = Peer(port)
        peer.send("GET_NAMES")
        reply = protocol.receive_message(peer.sock)
        if reply == "ERROR: server full":
            peer.expect_closed()
            peer.close()
            refused += 1
        else:
            kept.append(peer)
    return kept, refused


@posix_only
@pytest.mark.parametrize("arguments", [
    (),                         # max clients derived from the limit
    ("--max-clients", "1000"),  # beyond it: accept() runs out of files
])
def test_low_open_files_limit(start_server, arguments):
    server = start_server(*arguments, preexec_fn=low_open_files_limit(64))
    witness = Witness(server.port)
    kept, refused = connect_many(server.port, 100)
    try:
        assert refused > 0 and len(kept) + refused == 100
        witness.check()
        # Refused clients leave nothing behind that keeps the loop busy.
        before = cpu_seconds(server.pid)
        time.sleep(1)
        assert cpu_seconds(server.pid) - before < 0.2
        # Once others leave, new clients are accepted again.
        for peer in kept[:10]:
            peer.close()
        assert wait_for(lambda: witness.request("GET_NAMES") == "Witness")
        newcomers, refused_now = connect_many(server.port, 5)
        kept += newcomers
        assert refused_now == 0
        newcomers[0].name("Late")
        witness.check()
    finally:
        for peer in kept:
            peer.close()


@posix_only
def test_open_files_soft_limit_is_raised_to_the_hard_limit(start_server):
    server = start_server(
        preexec_fn=low_open_files_limit(64, hard_limit=1024))
    witness = Witness(server.port)
    kept, refused = connect_many(server.port, 100)
    try:
        assert (len(kept), refused) == (100, 0)
        witness.check()
    finally:
        for peer in kept:
            peer.close()


@needs_console_events
def test_shutdown_flush_does_not_spin_on_new_connections():
    """While the server gives a slow client its last second, connection
    attempts must not turn the wait into a busy loop."""
    server = ServerProcess("--max-outbox", "100000000")
    peers = []
    try:
        stuck = Peer(server.port).name("Stuck")
        flooder = Peer(server.port).name("Flood")
        peers += [stuck, flooder]
        flood = protocol.encode("MSG Stuck " + "f" * 9980)
        for _ in range(1000):  # about 10 MB: more than the kernel holds
            flooder.send_raw(flood)
        assert flooder.request("GET_NAMES") == "Stuck Flood"
        server.process.send_signal(STOP_SIGNAL)
        assert wait_for(lambda: "shutting down" in server.log())
        peers += [Peer(server.port) for _ in range(3)]
        before = cpu_seconds(server.pid)
        time.sleep(0.5)
        assert cpu_seconds(server.pid) - before < 0.2
        assert server.process.wait(5) == 0
        assert "Traceback" not in server.log()
    finally:
        for peer in peers:
            peer.close()
        server.cleanup()


def test_client_that_stops_reading_is_dropped(start_server):
    server = start_server()
    witness = Witness(server.port)
    stuck = Peer(server.port).name("Stuck")
    flooder = Peer(server.port).name("Flood")
    flood = protocol.encode("MSG Stuck " + "f" * 9980)
    # The outbox limit (1 MiB) plus the kernel's buffers is far below 15 MB.
    for round_number in range(1500):
        flooder.send_raw(flood)
        if round_number % 50 == 0:
            witness.check()
            if witness.request("GET_NAMES") == "Witness Flood":
                break
    else:
        pytest.fail("the client that stopped reading was never dropped")
    stuck.drain_until_closed()
    assert wait_for(lambda: "(Stuck) not reading: over 1048576 bytes "
                    "waiting for it" in server.log())
    talker = Peer(server.port).name("Talk")
    talker.send("MSG Witness still flowing")
    assert witness.receive() == "Talk sent still flowing"


def test_header_then_silence_is_closed_after_the_frame_timeout(start_server):
    server = start_server("--frame-timeout", "1")
    witness = Witness(server.port)
    stalled = Peer(server.port).name("Stalled")
    stalled.send_raw(b"9999NAME")
    started = time.monotonic()
    witness.check()
    stalled.expect_closed()
    assert 0.9 < time.monotonic() - started < 4
    assert wait_for(lambda: "(Stalled) sent an incomplete frame and stalled"
                    in server.log())
    assert witness.request("GET_NAMES") == "Witness"


def test_slow_but_steady_frames_are_not_timed_out(start_server):
    server = start_server("--frame-timeout", "1")
    client = Peer(server.port)
    data = protocol.encode("NAME Patient")
    for index in range(len(data)):
        client.send_raw(data[index:index + 1])
        time.sleep(0.05)
    assert client.receive() == "Hello Patient"
    time.sleep(1.2)
    assert client.request("GET_NAMES") == "Patient"


def test_header_of_non_digits(start_server):
    server = start_server()
    witness = Witness(server.port)
    bad = Peer(server.port)
    bad.send_raw(b"GET_NAMES")
    assert bad.receive().startswith("ERROR: bad length field b'GET_'")
    bad.expect_closed()
    witness.check()


def test_zero_length_frame(start_server):
    server = start_server()
    witness = Witness(server.port)
    client = Peer(server.port)
    client.send_raw(b"0000")
    assert client.receive().startswith("ERROR: empty command")
    assert client.request("NAME Z") == "Hello Z"
    witness.check()


def test_invalid_utf8(start_server):
    server = start_server()
    witness = Witness(server.port)
    client = Peer(server.port).name("U")
    client.send_raw(protocol.frame(b"MSG Witness \xc3\x28 \xed\xa0\x80"))
    assert client.receive() == "ERROR: the message is not valid UTF-8 text"
    witness.expect_silence()
    witness.check()


def test_longest_deliverable_message_and_one_byte_more(start_server):
    server = start_server()
    witness = Witness(server.port)
    sender = Peer(server.port).name("S" * 20)
    # Multi-byte characters: the limit is in bytes of the delivered frame.
    room = protocol.MAX_MSG_LENGTH - len("S" * 20 + " sent ")
    message = "ש" * (room // 2) + "x" * (room % 2)
    sender.send(f"MSG Witness {message}")
    assert witness.receive() == f"{'S' * 20} sent {message}"
    assert sender.request(f"MSG Witness {message}x").startswith(
        "ERROR: too long")
    witness.expect_silence()
    witness.check()


def test_random_bytes_from_several_connections(start_server):
    server = start_server()
    witness = Witness(server.port)

    @settings(max_examples=25, deadline=None)
    @given(streams=st.lists(st.binary(min_size=1, max_size=2000),
                            min_size=1, max_size=4))
    def probe(streams):
        peers = [Peer(server.port) for _ in streams]
        for peer, data in zip(peers, streams):
            try:
                peer.send_raw(data)
            except OSError:
                pass  # the server may have closed it already: allowed
        witness.check()
        for peer in peers:
            peer.close()
        witness.check()

    probe()
    assert witness.request("GET_NAMES") == "Witness"


def test_500_connect_then_reset_cycles(start_server):
    server = start_server()
    witness = Witness(server.port)
    process = psutil.Process(server.pid)
    descriptors_before = open_descriptors(process)
    chooser = random.Random(4)
    for number in range(500):
        peer = Peer(server.port)
        if chooser.random() < 0.5:
            peer.name(f"r{number}")
        peer.reset()
        if number % 100 == 0:
            witness.check()
    assert wait_for(
        lambda: open_descriptors(process) == descriptors_before)
    assert witness.request("GET_NAMES") == "Witness"
    witness.check()


def test_server_full_is_a_clear_answer(start_server):
    server = start_server("--max-clients", "2")
    witness = Witness(server.port)
    second = Peer(server.port).name("Second")
    third = Peer(server.port)
    assert third.receive() == "ERROR: server full"
    third.expect_closed()
    second.close()
    assert wait_for(lambda: witness.request("GET_NAMES") == "Witness")
    third = Peer(server.port)
    assert third.request("NAME Third") == "Hello Third"
    third.close()
