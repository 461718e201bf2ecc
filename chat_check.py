"""Grade a running chat server against the exercise, whoever wrote it.

    python chat_check.py [--host H] [--port P] [--length-field auto|2|4]
                         [--json FILE] [--strict] [--timeout S] [--pid PID]

The checker talks to the server as clients would, over real sockets, and
prints a report card: one line per check (PASS, FAIL, SKIP or BLOCKED, with
the reason) and a score.  It grades behaviour, not wording: a reply is any
frame, a delivery is a frame that reaches the right socket carrying the
sender's name and a fresh random text, a names list is the words of the
answer to GET_NAMES.  ``--strict`` adds checks of this project's exact
replies.

Every check uses fresh names and connections of its own, and every wait
is bounded by ``--timeout``.  A check whose prerequisite failed is BLOCKED;
after every check the checker makes sure the server still answers, so that
a server that crashed is told apart from one that answered wrongly.  The
checks that make clients leave run last (EXIT before resets), so that a
server that crashes there is graded on everything else first.

The length field is found once, before the checks: with ``auto`` the
checker sends a 4-digit NAME and reads the first reply's width (a 2-digit
server reads that frame as an empty message, then the same NAME); if no
reply comes, it tries a 2-digit NAME on a new connection.  In the 2-digit
dialect the checker's length fields count characters, as the course
templates' clients do, and it reads the server's as bytes.  The Hebrew
check runs in both dialects: its text is short, so that its delivery fits
one 2-digit frame (99 bytes).

Exit status: 0 if every check passed (or was skipped), 1 if some did not,
2 if the checker cannot talk to the server at all.
"""

import argparse
import json
import os
import random
import re
import socket
import string
import struct
import sys
import time
from collections import deque

import chat_protocol as protocol

DEFAULT_TIMEOUT = 2.0
# A server idle for the measuring window may use at most this share of one
# processor; a select() loop that spins uses all of it.
MAX_IDLE_CPU_SHARE = 0.10
# Between the bytes of a command sent one byte at a time.
BYTE_PAUSE = 0.01
# The longest quote of what was sent, expected or got in a failure.
MAX_QUOTE = 300
NAME_CHARACTERS = string.ascii_lowercase + string.digits
# The words of a names list: whatever the server puts between the names
# ("A B", "A, B", "['A', 'B']"), a name is letters, digits, '_' and '-'.
NAME_WORD = re.compile(r"[\w-]+")


def words(text):
    """The name-like words of ``text``."""
    return NAME_WORD.findall(text)


def quoted(text):
    """``text`` in quotes, with control characters made visible."""
    return "'" + protocol.safe_text(text) + "'"


def shorten(text, limit=MAX_QUOTE):
    """``text``, cut to ``limit`` characters if it is longer."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"... ({len(text)} characters)"


class CheckFailed(Exception):
    """A check saw the server do something wrong."""

    def __init__(self, reason, sent=None, expected=None, got=None):
        super().__init__(reason)
        self.reason = reason
        self.sent = sent
        self.expected = expected
        self.got = got


class Skipped(Exception):
    """A check cannot be made here; the message says why."""


class CannotTalk(Exception):
    """The checker cannot talk to the server at all."""


# ------------------------------------------------------------ connections

class Connection:
    """One client connection, speaking the dialect the checker uses."""

    def __init__(self, address, width, timeout):
        self.sock = socket.create_connection(address, timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.width = width
        self.timeout = timeout
        self.decoder = protocol.FrameDecoder(width, from_server=True)
        self.received = deque()
        # How the server ended the connection ("closed the connection"),
        # or None while it is open.
        self.ended = None
        self.name = None
        # The reply to its NAME, and the last message it was expected to
        # receive.
        self.hello = None
        self.last = None

    def send(self, text):
        self.sock.sendall(protocol.encode(text, self.width))

    def send_bytes(self, data):
        self.sock.sendall(data)

    def receive(self, deadline=None):
        """The next frame's text, or None if none came by ``deadline`` (a
        time.monotonic() value; default: the checker's timeout from now)
        or the server ended the connection."""
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        while not self.received and self.ended is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return None
            except ConnectionResetError:
                self.ended = "reset the connection"
                break
            except OSError as error:
                self.ended = ("ended the connection ("
                              + protocol.describe_error(error) + ")")
                break
            if not data:
                self.ended = "closed the connection"
                break
            try:
                payloads = self.decoder.feed(data)
            except protocol.ProtocolError as error:
                self.ended = f"sent something that is not a frame ({error})"
                break
            self.received.extend(protocol.decode(p) for p in payloads)
        return self.received.popleft() if self.received else None

    def nothing(self):
        """Words for what came instead of a frame."""
        if self.ended is not None:
            return f"nothing: the server {self.ended}"
        return f"nothing within {self.timeout:g} s"

    def request(self, text, expected="a reply"):
        """Send ``text`` and return the reply; fail if none comes."""
        self.send(text)
        reply = self.receive()
        if reply is None:
            raise CheckFailed(f"no reply to {quoted(text)}", text, expected,
                              self.nothing())
        return reply

    def collect_names(self, live, sent="GET_NAMES"):
        """Read the answer to a GET_NAMES already sent until every name of
        ``live`` is in it; return its frames and their words."""
        frames = []
        found = []
        # One deadline for the whole answer, however many frames come.
        deadline = time.monotonic() + self.timeout
        while not all(name in found for name in live):
            text = self.receive(deadline)
            if text is None:
                raise CheckFailed(
                    "GET_NAMES does not list every live name", sent,
                    "a list holding " + ", ".join(live),
                    " | ".join(map(quoted, frames)) or self.nothing())
            frames.append(text)
            found += words(text)
        return frames, found

    def names(self, live):
        """Ask GET_NAMES; return its frames and their words (see
        collect_names)."""
        self.send("GET_NAMES")
        return self.collect_names(live)

    def frames_before_names(self, token):
        """Ask GET_NAMES and return the frames that arrived before its
        answer (which holds this client's name but not ``token``, the
        random word of the check): what the server had sent this client
        until now."""
        self.send("GET_NAMES")
        before = []
        deadline = time.monotonic() + self.timeout
        while True:
            text = self.receive(deadline)
            if text is None:
                raise CheckFailed("no answer to GET_NAMES", "GET_NAMES",
                                  "a list holding " + self.name,
                                  self.nothing())
            if self.name in words(text) and token not in text:
                return before
            before.append(text)

    def wait_until_ended(self):
        """Read until the server ends the connection or the time is up;
        return the frames that came."""
        frames = []
        deadline = time.monotonic() + self.timeout
        while True:
            text = self.receive(deadline)
            if text is None:
                return frames
            frames.append(text)

    def close(self):
        """Close in an orderly way; read what is waiting first, since
        closing with unread data resets the connection."""
        try:
            self.sock.setblocking(False)
            while self.sock.recv(65536):
                pass
        except OSError:
            pass
        self.sock.close()

    def reset(self):
        """Close abruptly: the server sees a reset, not an orderly close."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                             struct.pack("ii", 1, 0))
        self.sock.close()


class Trial:
    """One check's own connections and fresh names; ``close`` ends them.

    ``wording`` notes where a reply differs from this project's exact text,
    for the --strict wording checks.
    """

    def __init__(self, grader):
        self.grader = grader
        self.timeout = grader.timeout
        self.connections = []
        self.wording_differences = []

    def connect(self):
        connection = Connection(self.grader.address, self.grader.width,
                                self.timeout)
        self.connections.append(connection)
        return connection

    def named(self, name=None):
        """A new connection that has taken a fresh name."""
        connection = self.connect()
        connection.name = name or self.grader.fresh_name()
        connection.hello = connection.request(f"NAME {connection.name}")
        self.wording(f"NAME {connection.name}", f"Hello {connection.name}",
                     connection.hello)
        return connection

    def fresh_name(self):
        return self.grader.fresh_name()

    def token(self):
        """A random word that no other message carries."""
        return "t" + "".join(random.choices(NAME_CHARACTERS, k=8))

    def wording(self, sent, expected, got):
        if got != expected:
            self.wording_differences.append((sent, expected, got))

    def names_wording(self, frames, live):
        """Note if a names list is not our server's: names separated by
        single spaces, ours among them in the order they were set."""
        listed = " ".join(frames).split(" ")
        ours = [name for name in listed if name in live]
        if "" in listed or ours != list(live):
            self.wording_differences.append(
                ("GET_NAMES", "the names separated by single spaces, in "
                 "the order set: " + " ".join(live), " | ".join(frames)))

    def expect_nothing(self, connection, why, sent, token, only=False):
        """Fail if ``connection`` got any frame (``only``: any frame
        carrying ``token``) before the answer to a GET_NAMES sent now."""
        stray = [frame for frame in connection.frames_before_names(token)
                 if not only or token in frame]
        if stray:
            raise CheckFailed(why, sent, f"nothing for {connection.name}",
                              " | ".join(map(quoted, stray)))

    def close(self):
        for connection in self.connections:
            connection.close()


# ----------------------------------------------------------------- checks
# Each check (described in CHECKS below) returns if the server behaved,
# raises CheckFailed saying how it did not, or Skipped.

def check_name_reply(trial):
    trial.named()


def check_get_names(trial):
    first = trial.named()
    second = trial.named()
    live = [first.name, second.name]
    frames, _ = first.names(live)
    trial.names_wording(frames, live)


def check_msg_delivery(trial):
    sender, recipient, bystander = trial.named(), trial.named(), trial.named()
    text = f"{trial.token()} is a message of several words"
    sent = f"MSG {recipient.name} {text}"
    sender.send(sent)
    expect_delivery(recipient, sender.name, text, sent)
    trial.wording(sent, f"{sender.name} sent {text}", recipient.last)
    token = text.split()[0]
    trial.expect_nothing(bystander, "MSG reached a client it was not for",
                         sent, token)
    # Some servers confirm to the sender; this project's does not.
    if trial.grader.strict:
        trial.expect_nothing(sender, "the sender got a frame", sent, token)
    else:
        trial.expect_nothing(sender, "the sender got the message too", sent,
                             token, only=True)


def expect_delivery(recipient, sender_name, text, sent):
    """Fail unless the next frame ``recipient`` gets carries the sender's
    name and the whole text; keep it as ``recipient.last``."""
    expected = f"a frame carrying {quoted(sender_name)} and {quoted(text)}"
    got = recipient.receive()
    recipient.last = got
    if got is None:
        raise CheckFailed(f"MSG did not reach {recipient.name}", sent,
                          expected, recipient.nothing())
    if text not in got or sender_name not in words(got.replace(text, " ")):
        raise CheckFailed(f"{recipient.name} got the wrong message", sent,
                          expected, quoted(got))


def check_duplicate_name(trial):
    holder = trial.named()
    copycat = trial.connect()
    sent = f"NAME {holder.name}"
    refusal = copycat.request(sent, "a refusal")
    trial.wording(sent, f"ERROR: the name '{holder.name}' is taken", refusal)
    if refusal == holder.hello:
        raise CheckFailed("the name was given twice", sent, "a refusal",
                          f"{quoted(refusal)}, as for its holder")
    other = trial.named()
    frames, found = other.names([holder.name, other.name])
    if found.count(holder.name) != 1:
        raise CheckFailed("GET_NAMES lists the name twice", "GET_NAMES",
                          f"{holder.name} once",
                          " | ".join(map(quoted, frames)))
    text = trial.token()
    sent = f"MSG {holder.name} {text}"
    other.send(sent)
    expect_delivery(holder, other.name, text, sent)
    # Anything the server sent the refused client with the message comes
    # before the answer to a NAME it sends now.
    copycat.name = trial.fresh_name()
    copycat.send(f"NAME {copycat.name}")
    stray = [frame for frame in copycat.frames_before_names(text)
             if text in frame]
    if stray:
        raise CheckFailed("a message for the name's holder reached the "
                          "client that was refused it", sent,
                          f"a frame for {holder.name} only", quoted(stray[0]))


def check_msg_to_missing(trial):
    sender, bystander = trial.named(), trial.named()
    missing = trial.fresh_name()
    token = trial.token()
    sent = f"MSG {missing} {token}"
    reply = sender.request(sent, "an error reply")
    trial.wording(sent, f"ERROR: no client named '{missing}'", reply)
    trial.expect_nothing(bystander, "someone else got a frame", sent, token)


def check_msg_before_name(trial):
    trial.named()
    recipient = trial.named()
    nameless = trial.connect()
    text = trial.token()
    sent = f"MSG {recipient.name} {text}"
    nameless.send(sent)
    reply = nameless.receive()
    trial.wording(sent, "ERROR: set your name first with NAME <name>",
                  reply)
    used = trial.grader.names_used
    for frame in recipient.frames_before_names(text):
        if text in frame and used & set(words(frame.replace(text, " "))):
            raise CheckFailed("MSG from a client without a name was "
                              "delivered under another client's name", sent,
                              "no delivery under a name", quoted(frame))


def check_unknown_command(trial):
    sender, bystander = trial.named(), trial.named()
    token = trial.token()
    sent = f"FROBNICATE {token}"
    reply = sender.request(sent, "an error reply")
    trial.wording(sent, "ERROR: unknown command; HELP lists the commands",
                  reply)
    trial.expect_nothing(bystander, "someone else got a frame", sent, token)


def check_two_commands(trial):
    client = trial.connect()
    client.name = trial.fresh_name()
    sent = f"NAME {client.name}", "GET_NAMES"
    client.send_bytes(b"".join(protocol.encode(text, client.width)
                               for text in sent))
    both = " and ".join(map(quoted, sent)) + " in one packet"
    reply = client.receive()
    if reply is None:
        raise CheckFailed("no reply", both, "two replies", client.nothing())
    trial.wording(sent[0], f"Hello {client.name}", reply)
    try:
        frames, _ = client.collect_names([client.name], both)
    except CheckFailed as failure:
        failure.reason = "the second command got no answer"
        failure.got = f"{quoted(reply)}, then {failure.got}"
        raise
    trial.names_wording(frames, [client.name])


def check_byte_at_a_time(trial):
    client = trial.connect()
    client.name = trial.fresh_name()
    sent = f"NAME {client.name}"
    try:
        for byte in protocol.encode(sent, client.width):
            client.send_bytes(bytes([byte]))
            time.sleep(BYTE_PAUSE)
        client.send("GET_NAMES")
    except OSError:
        pass  # the server ended the connection; what it sent tells why
    reply = client.receive()
    if reply is None:
        got = client.nothing()
    else:
        trial.wording(sent, f"Hello {client.name}", reply)
        try:
            client.collect_names([client.name])
            return
        except CheckFailed as failure:
            got = f"{quoted(reply)}, then {failure.got}"
    raise CheckFailed("the name sent one byte at a time was not taken",
                      f"{quoted(sent)} one byte at a time, then GET_NAMES",
                      f"a reply, then a list holding {client.name}", got)


def check_hebrew(trial):
    sender, recipient = trial.named(), trial.named()
    # Short, so that its delivery fits one 2-digit frame (99 bytes).
    text = f"שלום {trial.token()} עולם"
    sent = f"MSG {recipient.name} {text}"
    sender.send(sent)
    expect_delivery(recipient, sender.name, text, sent)
    trial.wording(sent, f"{sender.name} sent {text}", recipient.last)


def expect_departure(trial, asker, departed, how):
    """Fail unless GET_NAMES soon lists ``asker`` but not ``departed``."""
    deadline = time.monotonic() + trial.timeout
    while True:
        frames, found = asker.names([asker.name])
        if departed not in found:
            return
        if time.monotonic() > deadline:
            raise CheckFailed(f"GET_NAMES still lists a client that {how}",
                              "GET_NAMES", f"a list without {departed}",
                              " | ".join(map(quoted, frames)))
        time.sleep(0.05)


def check_names_after_close(trial):
    leaving, asker = trial.named(), trial.named()
    leaving.close()
    expect_departure(trial, asker, leaving.name, "closed its connection")


def check_names_after_reset(trial):
    leaving, asker = trial.named(), trial.named()
    leaving.reset()
    expect_departure(trial, asker, leaving.name, "reset its connection")


def check_names_after_exit(trial):
    leaving, asker = trial.named(), trial.named()
    leaving.send("EXIT")
    leaving.wait_until_ended()
    expect_departure(trial, asker, leaving.name, "sent EXIT")


def others_still_talk(trial, first, second):
    """Fail unless a message from ``first`` still reaches ``second``."""
    text = trial.token()
    sent = f"MSG {second.name} {text}"
    first.send(sent)
    expect_delivery(second, first.name, text, sent)


def leave_mid_message(trial, leave):
    """A client sends half a MSG and leaves by ``leave(connection)``; the
    others must still talk."""
    first, second, leaving = trial.named(), trial.named(), trial.named()
    frame = protocol.encode(f"MSG {first.name} {trial.token()}",
                            leaving.width)
    leaving.send_bytes(frame[:len(frame) // 2])
    leave(leaving)
    others_still_talk(trial, first, second)


def check_abrupt_close(trial):
    leave_mid_message(trial, Connection.close)


def check_reset(trial):
    leave_mid_message(trial, Connection.reset)


def check_exit(trial):
    leaving = trial.named()
    leaving.send("EXIT")
    frames = leaving.wait_until_ended()
    if not frames and leaving.ended is None:
        raise CheckFailed("EXIT was neither answered nor the connection "
                          "closed", "EXIT", "a reply or the close",
                          leaving.nothing())
    outcome = " | ".join(frames) or "no frame"
    if leaving.ended == "closed the connection":
        outcome += ", then the close"
    else:
        outcome += ", then " + leaving.nothing()
    trial.wording("EXIT", "EXIT, then the close", outcome)


def read_cpu_seconds(pid):
    """The processor time process ``pid`` has used (Linux: /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        # After "pid (command)": state is field 3, utime 14, stime 15.
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def check_idle_cpu(trial):
    pid = trial.grader.pid
    if pid is None:
        raise Skipped("give --pid PID of a server on this machine to "
                      "measure its idle CPU")
    if not sys.platform.startswith("linux"):
        raise Skipped("reading another process's CPU time needs Linux's "
                      "/proc")
    # A client that leaves first: a server that never drops a closed
    # socket spins from then on.
    trial.named().close()
    time.sleep(0.1)
    window = trial.timeout
    before = read_cpu_seconds(pid)
    time.sleep(window)
    share = (read_cpu_seconds(pid) - before) / window
    if share > MAX_IDLE_CPU_SHARE:
        raise CheckFailed(
            "the idle server keeps the processor busy",
            "nothing, after a client closed its connection",
            f"at most {MAX_IDLE_CPU_SHARE:.0%} of a processor",
            f"{share:.0%} over {window:g} s")


def check_example_run(trial):
    """SPEC section 3, with fresh names for A and B."""
    a = trial.named()
    b = trial.named()
    frames, _ = a.names([a.name, b.name])
    trial.names_wording(frames, [a.name, b.name])
    b.send("EXIT")
    b.wait_until_ended()
    expect_departure(trial, a, b.name, "sent EXIT")
    trial.names_wording(a.names([a.name])[0], [a.name])
    b = trial.named(b.name)
    frames, _ = a.names([a.name, b.name])
    trial.names_wording(frames, [a.name, b.name])
    sent = f"MSG {b.name} HELLO"
    a.send(sent)
    expect_delivery(b, a.name, "HELLO", sent)
    trial.wording(sent, f"{a.name} sent HELLO", b.last)
    sent = f"MSG {a.name} HELLO"
    b.send(sent)
    expect_delivery(a, b.name, "HELLO", sent)
    trial.wording(sent, f"{b.name} sent HELLO", a.last)
    for client in (b, a):
        reply = client.request("EXIT", "the frame EXIT")
        trial.wording("EXIT", "EXIT", reply)


class Check:
    """One line of the report card."""

    def __init__(self, name, description, function, needs=(),
                 has_wording=True):
        self.name = name
        self.description = description
        self.function = function
        self.needs = needs
        self.has_wording = has_wording


# In the order they run: the checks that make clients leave come last, the
# ones that use EXIT before the ones that reset a connection, so that a
# server that crashes on one of them is graded on everything else first.
CHECKS = [
    Check("name_reply", "NAME gets a reply", check_name_reply),
    Check("get_names", "GET_NAMES lists every live name", check_get_names,
          ["name_reply"]),
    Check("msg_delivery", "MSG reaches the right client only, with the "
          "sender's name and the whole text", check_msg_delivery,
          ["get_names"]),
    Check("duplicate_name", "a name in use is refused",
          check_duplicate_name, ["msg_delivery"]),
    Check("msg_to_missing", "MSG to a missing client gets an answer",
          check_msg_to_missing, ["get_names"]),
    Check("msg_before_name", "MSG before NAME is not delivered under "
          "another name", check_msg_before_name, ["msg_delivery"]),
    Check("unknown_command", "an unknown command gets an answer",
          check_unknown_command, ["get_names"]),
    Check("two_commands", "two commands in one packet are both answered",
          check_two_commands, ["get_names"]),
    Check("byte_at_a_time", "a command sent one byte at a time is "
          "understood", check_byte_at_a_time, ["get_names"]),
    Check("hebrew", "Hebrew text arrives whole", check_hebrew,
          ["msg_delivery"]),
    Check("names_after_close", "GET_NAMES forgets a client that closed "
          "its connection", check_names_after_close, ["get_names"], False),
    Check("abrupt_close", "a client closing mid-message does not hurt the "
          "others", check_abrupt_close, ["msg_delivery"], False),
    Check("idle_cpu", "the idle server uses next to no CPU (--pid)",
          check_idle_cpu, ["name_reply"], False),
    Check("exit", "EXIT is answered or the connection closed cleanly",
          check_exit, ["name_reply"]),
    Check("names_after_exit", "GET_NAMES forgets a client that sent EXIT",
          check_names_after_exit, ["get_names"], False),
    Check("example_run", "the example run of SPEC section 3",
          check_example_run, ["msg_delivery"]),
    Check("names_after_reset", "GET_NAMES forgets a client that reset its "
          "connection", check_names_after_reset, ["get_names"], False),
    Check("reset", "a client's reset mid-message does not hurt the others",
          check_reset, ["msg_delivery"], False),
]


# ---------------------------------------------------------------- grading

class Result:
    """What became of one check."""

    def __init__(self, name, description, status, reason="", failure=None):
        self.name = name
        self.description = description
        self.status = status          # PASS, FAIL, SKIP or BLOCKED
        self.reason = reason
        self.failure = failure

    def lines(self):
        """The report card's line, and for a failure what was sent,
        expected and got."""
        lines = [f"{self.status:<8} {self.name:<24} "
                 f"{self.reason or self.description}"]
        failure = self.failure
        if failure is not None:
            for label, value in (("sent", failure.sent),
                                 ("expected", failure.expected),
                                 ("got", failure.got)):
                if value is not None:
                    lines.append(f"{'':<9}{label + ':':<10}"
                                 f"{shorten(protocol.safe_text(value))}")
        return lines


def wording_result(check, behaviour, differences):
    """The --strict result for the exact wording of ``check``'s replies."""
    name = check.name + "_wording"
    description = "exact wording of this project's replies"
    if behaviour.status != "PASS":
        return Result(name, description, "BLOCKED",
                      f"needs {check.name}, which did not pass")
    if not differences:
        return Result(name, description, "PASS")
    sent, expected, got = differences[0]
    return Result(name, description, "FAIL", "a reply is worded "
                  "differently", CheckFailed("", sent, quoted(expected),
                                             quoted(got)))


class Grader:
    """Runs the checks against one server."""

    def __init__(self, host, port, width, timeout, strict=False, pid=None):
        self.address = (host, port)
        self.width = width
        self.timeout = timeout
        self.strict = strict
        self.pid = pid
        self.names_used = set()

    def fresh_name(self):
        """A name no client of this or any other run is likely to hold."""
        while True:
            name = "ck" + "".join(random.choices(NAME_CHARACTERS, k=6))
            if name not in self.names_used:
                self.names_used.add(name)
                return name

    def still_answers(self):
        """None if the server accepts a connection and answers a NAME;
        otherwise what it did instead."""
        try:
            connection = Connection(self.address, self.width, self.timeout)
        except OSError as error:
            return ("no longer accepts connections ("
                    + protocol.describe_error(error) + ")")
        try:
            connection.send(f"NAME {self.fresh_name()}")
            if connection.receive() is None:
                return ("no longer answers (NAME on a new connection got "
                        + connection.nothing() + ")")
            return None
        except OSError as error:
            return "no longer answers: " + protocol.describe_error(error)
        finally:
            connection.close()

    def run(self, check):
        """Run one check; return its result and the --strict wording
        differences it noted."""
        trial = Trial(self)
        failure = None
        try:
            check.function(trial)
        except Skipped as skipped:
            return Result(check.name, check.description, "SKIP",
                          str(skipped)), []
        except CheckFailed as failed:
            failure = failed
        except OSError as error:
            failure = CheckFailed("socket error: "
                                  + protocol.describe_error(error))
        finally:
            trial.close()
        if failure is None:
            return (Result(check.name, check.description, "PASS"),
                    trial.wording_differences)
        return (Result(check.name, check.description, "FAIL",
                       failure.reason, failure), [])

    def grade(self, checks=CHECKS):
        """Run every check; yield the results one by one."""
        statuses = {}
        crashed_in = None
        for check in checks:
            blocker = next((name for name in check.needs
                            if statuses.get(name) != "PASS"), None)
            if crashed_in is not None:
                result = Result(check.name, check.description, "BLOCKED",
                                f"the server stopped answering in "
                                f"{crashed_in}")
                differences = []
            elif blocker is not None:
                result = Result(check.name, check.description, "BLOCKED",
                                f"needs {blocker}, which did not pass")
                differences = []
            else:
                result, differences = self.run(check)
                crash = self.still_answers()
                if crash is not None:
                    crashed_in = check.name
                    result.status = "FAIL"
                    result.reason = "the server crashed: it " + crash
                    result.failure = result.failure or CheckFailed("")
            statuses[check.name] = result.status
            yield result
            if self.strict and check.has_wording:
                yield wording_result(check, result, differences)


# -------------------------------------------------------- the server's width

def first_reply(address, text, width, timeout):
    """Send ``text`` with a ``width``-digit length field on a connection of
    its own; return the first frame of the reply (None if none came) and
    the connection, whose decoder (AUTO) has seen which width it had."""
    connection = Connection(address, width, timeout)
    try:
        connection.decoder = protocol.FrameDecoder(
            protocol.AUTO, from_server=True)
        connection.send(text)
        return connection.receive(), connection
    finally:
        connection.close()


def detect_width(address, requested, timeout, name):
    """The length field the server uses (4 or 2) and how it was found;
    CannotTalk if the server does not answer in the one requested, or in
    either with AUTO."""
    where = f"{address[0]}:{address[1]}"
    text = f"NAME {name}"
    try:
        if requested in (protocol.AUTO, protocol.LENGTH_FIELD_SIZE):
            reply, connection = first_reply(
                address, text, protocol.LENGTH_FIELD_SIZE, timeout)
            width = connection.decoder.width
            if reply is not None and requested == protocol.AUTO:
                return width, f"{width} digits (detected)"
            if reply is not None and width == protocol.LENGTH_FIELD_SIZE:
                return width, "4 digits (as told)"
            if reply is not None:
                raise CannotTalk(
                    f"the server at {where} answered in 2-digit length "
                    "fields; try --length-field 2 or auto")
            if requested == protocol.LENGTH_FIELD_SIZE:
                raise CannotTalk(
                    f"the server at {where} did not answer a 4-digit "
                    f"{quoted(text)} ({connection.nothing()}); if it "
                    "expects 2-digit length fields, try --length-field 2")
        reply, connection = first_reply(
            address, text, protocol.SHORT_LENGTH_FIELD_SIZE, timeout)
    except OSError as error:
        raise CannotTalk(f"cannot connect to {where}: "
                         + protocol.describe_error(error))
    if reply is not None and connection.decoder.width == 4:
        raise CannotTalk(
            f"the server at {where} answered a 2-digit {quoted(text)} in a "
            f"4-digit frame: {quoted(reply)}; try --length-field 4")
    if reply is not None:
        if requested == protocol.AUTO:
            return 2, "2 digits (detected: no answer in 4 digits)"
        return 2, "2 digits (as told)"
    if requested == protocol.AUTO:
        raise CannotTalk(
            f"the server at {where} answered neither a 4-digit nor a 2-digit "
            f"{quoted(text)} (last: {connection.nothing()})")
    raise CannotTalk(
        f"the server at {where} did not answer a 2-digit {quoted(text)}: "
        f"{connection.nothing()}; if it expects 4-digit length fields, try "
        "--length-field 4")


# ---------------------------------------------------------------- output

def gradescope_json(results, heading):
    """The results in the shape Gradescope reads from results.json."""
    tests = []
    for result in results:
        counted = result.status != "SKIP"
        tests.append({
            "name": result.name,
            "score": 1 if result.status == "PASS" else 0,
            "max_score": 1 if counted else 0,
            "status": "passed" if result.status in ("PASS", "SKIP")
            else "failed",
            "output": "\n".join(result.lines()),
        })
    return {"score": sum(test["score"] for test in tests),
            "output": heading, "tests": tests}


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        description="Grade a running chat server: one line per check, "
        "and a score.",
        epilog="Exit status: 0 if every check passed, 1 if some did not, "
        "2 if the server cannot be talked to at all.")
    protocol.add_server_arguments(parser)
    parser.add_argument("--length-field", type=protocol.length_field,
                        default=protocol.AUTO, metavar="auto|2|4",
                        help="the server's length field (default: auto, "
                        "found by trying 4 digits, then 2)")
    parser.add_argument("--json", metavar="FILE",
                        type=argparse.FileType("w", encoding="utf-8"),
                        help="also write the results to FILE in the shape "
                        "Gradescope reads")
    parser.add_argument("--strict", action="store_true",
                        help="also check the exact wording of this "
                        "project's replies")
    parser.add_argument("--timeout", type=protocol.seconds,
                        default=DEFAULT_TIMEOUT, metavar="S",
                        help="the longest wait for a reply, in seconds "
                        "(default %(default)g)")
    parser.add_argument("--pid", type=protocol.at_least_one,
                        help="the server's process id, to measure its idle "
                        "CPU (Linux)")
    arguments = parser.parse_args(argv)
    # Only Linux is asked: a Windows program under Wine sees Linux's /proc.
    if (arguments.pid is not None and sys.platform.startswith("linux")
            and not os.path.isdir(f"/proc/{arguments.pid}")):
        parser.error(f"no process has the id {arguments.pid}")
    return arguments


def main(argv=None):
    arguments = parse_arguments(argv)
    address = (arguments.host, arguments.port)
    grader = Grader(arguments.host, arguments.port, None, arguments.timeout,
                    arguments.strict, arguments.pid)
    try:
        try:
            grader.width, how = detect_width(
                address, arguments.length_field, arguments.timeout,
                grader.fresh_name())
        except CannotTalk as problem:
            print(f"chat_check: {problem}", file=sys.stderr)
            if arguments.json:
                json.dump({"score": 0, "output": str(problem), "tests": []},
                          arguments.json, ensure_ascii=False, indent=2)
            return 2
        heading = (f"Grading the chat server at {arguments.host}:"
                   f"{arguments.port}\nlength fields: {how}")
        print(heading, flush=True)
        results = []
        for result in grader.grade():
            results.append(result)
            print("\n".join(result.lines()), flush=True)
    except KeyboardInterrupt:
        print("chat_check: interrupted", file=sys.stderr)
        return 1
    counted = [result for result in results if result.status != "SKIP"]
    passed = sum(result.status == "PASS" for result in counted)
    skipped = len(results) - len(counted)
    print(f"score: {passed}/{len(counted)}"
          + (f" ({skipped} skipped)" if skipped else ""))
    if arguments.json:
        json.dump(gradescope_json(results, heading), arguments.json,
                  ensure_ascii=False, indent=2)
        arguments.json.close()
    return 0 if passed == len(counted) else 1


if __name__ == "__main__":
    sys.exit(main())
