"""The framing and parsing of chat_protocol, without sockets, then its
blocking helpers over a real socket pair."""

import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import chat_protocol as protocol
from chat_protocol import FrameDecoder


def frames(*texts):
    return b"".join(protocol.encode(text) for text in texts)


def test_constants():
    assert protocol.SERVER_IP == "127.0.0.1"
    assert protocol.SERVER_PORT == 8820
    assert protocol.LENGTH_FIELD_SIZE == 4
    assert protocol.MAX_MSG_LENGTH == 9999


@pytest.mark.parametrize("text, wire", [
    ("NAME A", b"0006NAME A"),
    ("", b"0000"),
    ("שלום", b"0008" + "שלום".encode()),
    ("🎉", b"0004\xf0\x9f\x8e\x89"),
])
def test_encode_counts_bytes_not_characters(text, wire):
    assert protocol.encode(text) == wire


def test_encode_takes_9999_bytes_and_refuses_10000():
    assert protocol.encode("x" * 9999) == b"9999" + b"x" * 9999
    with pytest.raises(protocol.MessageTooLongError, match="at most 9999"):
        protocol.encode("x" * 10000)
    # 3333 three-byte characters fit; one more does not.
    assert len(protocol.encode("ש" * 4999)) == 4 + 9998
    with pytest.raises(protocol.MessageTooLongError):
        protocol.encode("ש" * 5000)


STREAM = frames("NAME A", "", "MSG B שלום 🎉", "x" * 9999, "GET_NAMES")
PAYLOADS = [b"NAME A", b"", "MSG B שלום 🎉".encode(), b"x" * 9999,
            b"GET_NAMES"]


def test_decoder_whole_stream_at_once():
    decoder = FrameDecoder()
    assert decoder.feed(STREAM) == PAYLOADS
    assert decoder.pending == 0


def test_decoder_one_byte_at_a_time():
    decoder = FrameDecoder()
    received = []
    for index in range(len(STREAM)):
        received += decoder.feed(STREAM[index:index + 1])
    assert received == PAYLOADS
    assert decoder.pending == 0


def test_decoder_split_at_every_offset():
    for offset in range(len(STREAM) + 1):
        decoder = FrameDecoder()
        received = decoder.feed(STREAM[:offset]) + decoder.feed(
            STREAM[offset:])
        assert received == PAYLOADS, offset


def test_decoder_never_returns_half_a_frame():
    decoder = FrameDecoder()
    assert decoder.feed(b"0010NAME") == []
    assert decoder.pending == 8
    assert decoder.feed(b" Bob") == []
    assert decoder.feed(b"by0002") == [b"NAME Bobby"]
    assert decoder.pending == 4
    assert decoder.feed(b"hi") == [b"hi"]


@pytest.mark.parametrize("header", [
    b"abcd", b" 123", b"+123", b"1_23", b"-001", b"12a4", "١٢٣٤".encode(),
])
def test_decoder_refuses_a_length_field_of_non_digits(header):
    decoder = FrameDecoder()
    with pytest.raises(protocol.ProtocolError, match="bad length field"):
        decoder.feed(header + b"rest")


def test_decoder_refuses_a_bad_header_after_good_frames():
    decoder = FrameDecoder()
    assert decoder.feed(b"0002hi00") == [b"hi"]
    with pytest.raises(protocol.ProtocolError):
        decoder.feed(b"x20001a")


def test_decoder_work_is_linear_in_the_bytes():
    """A 9999-byte frame fed one byte at a time is not re-copied per byte:
    the bytes held stay one copy of what was fed."""
    decoder = FrameDecoder()
    data = protocol.encode("y" * 9999)
    for index in range(len(data) - 1):
        assert decoder.feed(data[index:index + 1]) == []
        assert decoder.pending == index + 1
    assert decoder.feed(data[-1:]) == [b"y" * 9999]


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(st.text(max_size=300), max_size=20),
       cuts=st.lists(st.integers(min_value=0), max_size=30))
def test_round_trip_over_random_payloads_and_splits(texts, cuts):
    stream = frames(*texts)
    offsets = sorted({cut % (len(stream) + 1) for cut in cuts})
    decoder = FrameDecoder()
    received = []
    start = 0
    for offset in offsets + [len(stream)]:
        received += decoder.feed(stream[start:offset])
        start = offset
    assert [protocol.decode(payload) for payload in received] == texts
    assert decoder.pending == 0


@pytest.mark.parametrize("name", [
    "A", "bob", "Bob_2", "x-y", "שלום", "Анна", "名前", "a" * 20, "٣"])
def test_valid_names(name):
    assert protocol.is_valid_name(name)


@pytest.mark.parametrize("name", [
    "", "a" * 21, "a b", "a:b", "a\x1b", "🎉", "a.b", "a\tb", "a\u200b"])
def test_invalid_names(name):
    assert not protocol.is_valid_name(name)


def test_name_key_ignores_case():
    assert protocol.name_key("Bob") == protocol.name_key("bOB")
    assert protocol.name_key("Bob") != protocol.name_key("Rob")


@pytest.mark.parametrize("text, parsed", [
    ("NAME A", ("NAME", "A")),
    ("name A", ("NAME", "A")),
    ("GET_NAMES", ("GET_NAMES", "")),
    ("MSG B  two  spaces ", ("MSG", "B  two  spaces ")),
    ("EXIT\r\n", ("EXIT", "")),
    ("", ("", "")),
    ("   ", ("", "")),
])
def test_parse_command(text, parsed):
    assert protocol.parse_command(text) == parsed


def test_split_names_keeps_frames_within_the_limit():
    names = ["n%04d" % number for number in range(3000)]
    payloads = protocol.split_names(names)
    assert len(payloads) == 2
    assert all(len(payload.encode()) <= 9999 for payload in payloads)
    assert " ".join(payloads).split(" ") == names
    assert protocol.split_names([]) == [""]
    assert protocol.split_names(["a", "b"], limit=3) == ["a b"]
    assert protocol.split_names(["a", "b", "c"], limit=3) == ["a b", "c"]


@pytest.fixture
def socket_pair():
    left, right = socket.socketpair()
    left.settimeout(5)
    right.settimeout(5)
    yield left, right
    left.close()
    right.close()


def test_send_and_receive_message(socket_pair):
    left, right = socket_pair
    protocol.send_message(left, "MSG B שלום 🎉")
    protocol.send_message(left, "")
    assert protocol.receive_message(right) == "MSG B שלום 🎉"
    assert protocol.receive_message(right) == ""


def test_receive_message_reads_exactly_however_the_bytes_arrive(socket_pair):
    left, right = socket_pair
    data = frames("first", "second")

    def dribble():
        for index in range(len(data)):
            left.sendall(data[index:index + 1])

    sender = threading.Thread(target=dribble)
    sender.start()
    assert protocol.receive_message(right) == "first"
    assert protocol.receive_message(right) == "second"
    sender.join(5)


def test_receive_message_returns_none_on_a_clean_close(socket_pair):
    left, right = socket_pair
    protocol.send_message(left, "bye")
    left.close()
    assert protocol.receive_message(right) == "bye"
    assert protocol.receive_message(right) is None


@pytest.mark.parametrize("sent", [b"00", b"0010half"])
def test_receive_message_close_in_mid_frame_is_an_error(socket_pair, sent):
    left, right = socket_pair
    left.sendall(sent)
    left.close()
    with pytest.raises(protocol.IncompleteFrameError) as caught:
        protocol.receive_message(right)
    assert caught.value.partial == sent


def test_receive_message_bad_header(socket_pair):
    left, right = socket_pair
    left.sendall(b"xx12abc")
    with pytest.raises(protocol.ProtocolError, match="bad length field"):
        protocol.receive_message(right)
