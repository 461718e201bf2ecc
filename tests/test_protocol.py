"""The framing and parsing of chat_protocol, without sockets, then its
blocking helpers over a real socket pair."""

import argparse
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
    "A", "bob", "Bob_2", "x-y", "שלום", "Анна", "名前", "a" * 20, "٣",
    "प्रिया",       # Hindi: vowel signs and the virama are marks
    "שָׁלוֹם",       # Hebrew with its points
    "山田たろう",     # Japanese mixes Han and Hiragana
    "김철수", "Ｂｏｂ", "1_a"])
def test_valid_names(name):
    assert protocol.name_problem(name) is None
    assert protocol.is_valid_name(name)


@pytest.mark.parametrize("name, problem", [
    ("", "a name needs at least one letter or digit"),
    ("-", "a name needs at least one letter or digit"),
    ("_-_", "a name needs at least one letter or digit"),
    ("a" * 21, "a name is at most 20 characters"),
    ("a b", protocol.NAME_RULE),
    ("a:b", protocol.NAME_RULE),
    ("a\x1b", protocol.NAME_RULE),
    ("🎉", protocol.NAME_RULE),
    ("a.b", protocol.NAME_RULE),
    ("a\tb", protocol.NAME_RULE),
    ("a\u200b", protocol.NAME_RULE),
    ("\u0301a", protocol.NAME_RULE),    # a mark with no letter before it
    ("\u0410lice", "it mixes Cyrillic and Latin letters"),  # Cyrillic A
    ("ab-\u03a9c", "it mixes Greek and Latin letters"),
    ("Ωжa", "it mixes letters of 3 alphabets"),
])
def test_invalid_names(name, problem):
    assert protocol.name_problem(name) == problem
    assert not protocol.is_valid_name(name)


@pytest.mark.parametrize("one, other", [
    ("Bob", "bOB"), ("Bob", "Ｂｏｂ"), ("Straße", "STRASSE"),
    ("e\u0301", "\u00e9")])
def test_name_key_folds_case_and_compatibility_forms(one, other):
    assert protocol.name_key(one) == protocol.name_key(other)


def test_name_key_tells_different_names_apart():
    assert protocol.name_key("Bob") != protocol.name_key("Rob")
    assert protocol.name_key("Alice") != protocol.name_key("\u0410lice")


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


# ---------------------------------------------- the 2-digit dialect (issue 9)

def test_encode_with_two_digits_counts_characters():
    assert protocol.encode("NAME A", 2) == b"06NAME A"
    assert protocol.encode("MSG B שלום", 2) == b"10MSG B " + "שלום".encode()
    assert protocol.encode("x" * 99, 2) == b"99" + b"x" * 99
    with pytest.raises(protocol.MessageTooLongError,
                       match="at most 99 characters"):
        protocol.encode("x" * 100, 2)


@pytest.mark.parametrize("payload, wire", [
    (b"", b"00"),
    (b"x" * 99, b"99" + b"x" * 99),
    (b"x" * 100, b"99" + b"x" * 99 + b"01x"),
    ("ש".encode() * 50, b"98" + "ש".encode() * 49 + b"02" + "ש".encode()),
    ("🎉".encode() * 25, b"96" + "🎉".encode() * 24 + b"04" + "🎉".encode()),
])
def test_reply_frames_for_two_digits_split_between_characters(payload, wire):
    assert protocol.reply_frames(payload, 2) == wire


def test_reply_frames_for_four_digits_is_one_frame():
    assert protocol.reply_frames("שלום".encode()) == protocol.encode("שלום")


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=400))
def test_reply_frames_read_back_by_a_two_digit_client(text):
    decoder = FrameDecoder(2, from_server=True)
    payloads = decoder.feed(protocol.reply_frames(text.encode(), 2))
    assert all(len(payload) <= 99 for payload in payloads)
    assert "".join(payload.decode() for payload in payloads) == text
    assert decoder.pending == 0


# Streams a client may send, read with AUTO: the payloads, and the width
# the decoder believes in afterwards.
AUTO_CASES = [
    (b"0006NAME A", [b"NAME A"], 4),
    (b"06NAME A", [b"NAME A"], 2),
    # Three digits, then a non-digit: a 2-digit frame whose text starts
    # with a digit.
    (b"051abcd", [b"1abcd"], 2),
    # An empty 2-digit frame, then "06NAME A", is byte for byte the 4-digit
    # "NAME A": read as 4 digits, the result is the same command.
    (b"00" + b"06NAME A", [b"NAME A"], 4),
    # After one 2-digit frame, every frame is 2-digit, even one that
    # looks like four digits; the text may then begin with digits.
    (b"06NAME A0006NAME B", [b"NAME A", b"", b"NAME B"], 2),
    (b"06NAME A0512345", [b"NAME A", b"12345"], 2),
    # A 2-digit length counts characters: 8 characters, 10 bytes.
    (b"08MSG A " + "שי".encode() + b"04EXIT",
     [b"MSG A " + "שי".encode(), b"EXIT"], 2),
    ("10MSG A 🎉🎉🎉🎉".encode(), ["MSG A 🎉🎉🎉🎉".encode()], 2),
]


@pytest.mark.parametrize("stream, payloads, width", AUTO_CASES)
def test_auto_tells_the_length_fields_apart(stream, payloads, width):
    decoder = FrameDecoder(protocol.AUTO)
    assert decoder.feed(stream) == payloads
    assert decoder.width == width
    assert decoder.pending == 0


@pytest.mark.parametrize("stream, payloads, width", AUTO_CASES)
def test_auto_one_byte_at_a_time(stream, payloads, width):
    decoder = FrameDecoder(protocol.AUTO)
    received = []
    for index in range(len(stream)):
        received += decoder.feed(stream[index:index + 1])
    assert received == payloads
    assert decoder.width == width


def test_auto_waits_until_the_bytes_tell():
    decoder = FrameDecoder(protocol.AUTO)
    assert decoder.feed(b"0") == []
    assert decoder.feed(b"0") == []       # "00": empty 2-digit frame, or?
    assert decoder.feed(b"0") == []
    assert decoder.width == 4
    assert decoder.feed(b"0") == [b""]    # "0000": an empty 4-digit frame
    assert decoder.feed(b"06") == []
    assert decoder.feed(b"N") == []       # "06N": a 2-digit frame
    assert decoder.width == 2
    assert decoder.feed(b"AME A") == [b"NAME A"]


@pytest.mark.parametrize("length_field, stream, message", [
    (protocol.AUTO, b"abcd", "bad length field b'abcd': not 2 or 4 digits"),
    (protocol.AUTO, b"0abc", "bad length field b'0abc': not 2 or 4 digits"),
    (protocol.AUTO, b"a", "bad length field b'a': not 2 or 4 digits"),
    (4, b"06NAME A", "bad length field b'06NA': not 4 digits"),
    (2, b"06NAME Ax1", "bad length field b'x1': not 2 digits"),
])
def test_bad_length_fields(length_field, stream, message):
    decoder = FrameDecoder(length_field)
    with pytest.raises(protocol.ProtocolError) as raised:
        decoder.feed(stream)
    assert str(raised.value) == message


def test_two_digits_fixed():
    decoder = FrameDecoder(2)
    assert decoder.width == 2
    assert decoder.feed(b"0006NAME A") == [b"", b"NAME A"]


def test_two_digits_from_a_server_count_bytes():
    decoder = FrameDecoder(2, from_server=True)
    assert decoder.feed(b"04" + "שי".encode() + b"02hi") == [
        "שי".encode(), b"hi"]


def test_invalid_utf8_in_a_two_digit_frame_still_ends_somewhere():
    """Characters are counted by their lead bytes; bytes that are not
    UTF-8 make a payload that the server refuses once decoded."""
    decoder = FrameDecoder(2)
    assert decoder.feed(b"01\xc3\x28" + b"01x") == [b"\xc3\x28", b"x"]
    assert decoder.feed(b"02\xff") == []
    assert decoder.feed(b"abcd01x") == [b"\xffabcd", b"x"]


@settings(max_examples=100, deadline=None)
@given(texts=st.lists(st.text(max_size=99), max_size=12),
       cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_two_digit_round_trip_over_random_texts_and_splits(texts, cuts):
    """What a template client sends (characters counted) comes back out
    of an AUTO decoder, however it is split, once the first frame has
    shown 2 digits."""
    texts = ["NAME first"] + texts
    stream = b"".join(protocol.encode(text, 2) for text in texts)
    offsets = sorted({cut % (len(stream) + 1) for cut in cuts})
    decoder = FrameDecoder(protocol.AUTO)
    received = []
    start = 0
    for offset in offsets + [len(stream)]:
        received += decoder.feed(stream[start:offset])
        start = offset
    assert [payload.decode() for payload in received] == texts
    assert decoder.width == 2


@pytest.mark.parametrize("text, shown", [
    ("plain שלום 🎉", "plain שלום 🎉"),
    ("\x1b[2J", "\\x1b[2J"),
    ("bell\x07", "bell\\x07"),
    ("a\tb\r\nc", "a\\tb\\r\\nc"),
    ("\x7f\x9b\x85", "\\x7f\\x9b\\x85"),
    ("\u2028", "\\u2028"),
    ("\u200d\u200f", "\u200d\u200f"),
])
def test_safe_text(text, shown):
    assert protocol.safe_text(text) == shown


@pytest.mark.parametrize("argument, text, value", [
    (protocol.listening_port, "0", 0),
    (protocol.listening_port, "65535", 65535),
    (protocol.port_number, "1", 1),
    (protocol.at_least_one, "7", 7),
])
def test_argument_types_accept(argument, text, value):
    assert argument(text) == value


@pytest.mark.parametrize("argument, text, error", [
    (protocol.listening_port, "65536", "'65536' is not a port number "
     "(0 to 65535)"),
    (protocol.listening_port, "-1", "'-1' is not a port number (0 to 65535)"),
    (protocol.port_number, "0", "'0' is not a port number (1 to 65535)"),
    (protocol.port_number, "http", "'http' is not a port number "
     "(1 to 65535)"),
    (protocol.at_least_one, "0", "'0' is not a whole number from 1"),
])
def test_argument_types_refuse_with_a_reason(argument, text, error):
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        argument(text)
    assert str(refused.value) == error


def test_seconds_argument():
    assert protocol.seconds("0.5") == 0.5
    for text in ("0", "-1", "soon", "nan", "86400"):
        with pytest.raises(argparse.ArgumentTypeError) as refused:
            protocol.seconds(text)
        assert str(refused.value) == (f"{text!r} is not a number of "
                                      "seconds above 0")
