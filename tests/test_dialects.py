"""The server's two length fields (issue 9): clients of the course
templates, with 2-digit fields counting characters, and 4-digit clients,
on one server, over real sockets."""

import socket

import pytest

import chat_protocol as protocol
from support import Peer, ServerProcess, TemplateClient


@pytest.fixture
def template(server):
    """template() -> a 2-digit client on the server; all closed after."""
    clients = []

    def make():
        client = TemplateClient(server.port)
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            client.close()


def test_example_run_with_template_clients(template):
    """SPEC section 3, frame by frame, with 2-digit clients."""
    a = template()
    a.send("NAME A")
    assert a.receive_frame() == b"07Hello A"
    b = template()
    assert b.request("NAME B") == "Hello B"
    assert a.request("GET_NAMES") == "A B"
    assert b.request("EXIT") == "EXIT"
    assert b.sock.recv(1) == b""
    assert a.request("GET_NAMES") == "A"
    b = template()
    assert b.request("NAME B") == "Hello B"
    assert a.request("GET_NAMES") == "A B"
    a.send("MSG B HELLO")
    assert b.receive_frame() == b"12A sent HELLO"
    b.send("MSG A HELLO")
    assert a.receive() == "B sent HELLO"
    assert b.request("EXIT") == "EXIT"
    assert a.request("EXIT") == "EXIT"


def test_a_four_digit_client_is_answered_in_four_digits(connect):
    client = connect()
    client.send_raw(b"0006NAME A")
    assert client.sock.recv(100) == b"0007Hello A"


def test_hebrew_from_a_template_client_arrives_intact(connect, template):
    """The template counts characters: 'MSG B שלום עולם' is 15 characters
    and 24 bytes."""
    receiver = connect().name("B")
    sender = template()
    assert sender.request("NAME דני") == "Hello דני"
    sender.sock.sendall(b"15" + "MSG B שלום עולם".encode())
    assert receiver.receive() == "דני sent שלום עולם"
    receiver.send("MSG דני תודה")
    assert sender.receive_frame() == b"15" + "B sent תודה".encode()


def test_a_long_delivery_is_split_between_characters(connect, template):
    reader = template()
    assert reader.request("NAME R") == "Hello R"
    writer = connect().name("W")
    # 268 bytes delivered; 99 would end inside a Hebrew letter twice.
    message = "x" + "אב" * 60 + "x" * 20
    writer.send(f"MSG R {message}")
    delivered = f"W sent {message}".encode()
    frames = [reader.receive_frame() for _ in range(3)]
    assert [len(frame) - 2 for frame in frames] == [98, 98, 72]
    assert all(frame[:2] == b"%02d" % (len(frame) - 2) for frame in frames)
    assert b"".join(frame[2:] for frame in frames) == delivered
    writer.send("MSG R next")
    assert reader.receive() == "W sent next"


def test_get_names_for_a_template_client_is_split_between_names(
        connect, template):
    names = [f"name{number:02d}" for number in range(30)]
    for name in names:
        connect().name(name)
    asker = template()
    asker.send("GET_NAMES")
    expected = protocol.split_names(names, 99)
    assert len(expected) == 3
    assert [asker.receive() for _ in expected] == expected


def test_broadcast_reaches_each_client_in_its_own_width(connect, template):
    four = connect().name("Four")
    two = template()
    assert two.request("NAME Two") == "Hello Two"
    sender = connect().name("S")
    sender.send("BROADCAST " + "b" * 100)
    delivered = b"S sent to everyone: " + b"b" * 100
    assert four.sock.recv(200) == protocol.frame(delivered)
    assert two.receive_frame() + two.receive_frame() == (
        b"99" + delivered[:99] + b"21" + delivered[99:])


def test_a_template_client_typing_one_byte_at_a_time(template):
    client = template()
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for data in ["07NAME שי".encode(), b"09GET_NAMES"]:
        for index in range(len(data)):
            client.sock.sendall(data[index:index + 1])
    assert client.receive() == "Hello שי"
    assert client.receive() == "שי"


def test_after_a_two_digit_frame_digits_begin_the_text(template):
    """Once 2-digit, '0512345' is the text '12345', not a 4-digit header
    announcing 512 bytes."""
    client = template()
    assert client.request("NAME A") == "Hello A"
    assert client.request("12345") == (
        "ERROR: unknown command; HELP lists the commands")
    assert client.request("GET_NAMES") == "A"


def test_four_digits_only():
    server = ServerProcess("--length-field", "4")
    try:
        client = TemplateClient(server.port)
        client.send("NAME A")
        assert client.sock.recv(100) == protocol.encode(
            "ERROR: bad length field b'06NA': not 4 digits")
        assert client.sock.recv(100) == b""
        client.close()
    finally:
        server.cleanup()


def test_two_digits_only():
    """With --length-field 2 even a 4-digit header is read as two 2-digit
    fields, and replies are 2-digit from the first."""
    server = ServerProcess("--length-field", "2")
    try:
        client = Peer(server.port)
        client.send_raw(b"0006NAME A")
        assert client.sock.recv(100) == (
            b"45ERROR: empty command; HELP lists the commands" b"07Hello A")
        client.close()
    finally:
        server.cleanup()
