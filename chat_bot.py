"""A bot that joins the chat and answers the messages sent to it.

    python chat_bot.py [--host H] [--port P] [--name Bot] [--llm URL]

The simplest client of the protocol: a blocking socket, and the protocol
module's send_message and receive_message (a second, short connection
asks for the names; see ask_names).  The bot takes its name (Bot,
or Bot2, Bot3, ... if that is taken) and answers every message sent to it
with a message back: send it "help" to see what it can do.  With --llm,
free text is answered by a language model behind an OpenAI-compatible
chat-completions endpoint, such as a local Ollama or llama.cpp server.
"""

import argparse
import collections
import http.client
import json
import select
import signal
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import chat_protocol as protocol

DEFAULT_NAME = "Bot"
MAX_NAME_TRIES = 100        # Bot, Bot2, ... Bot100, then give up
RATE_LIMIT = 5              # messages answered per sender ...
RATE_WINDOW = 10.0          # ... in any this many seconds
MAX_SENDERS = 1000          # senders remembered before the quiet are dropped
RETRY_DELAY = 1.0           # seconds before reconnecting, doubled after
MAX_RETRY_DELAY = 30.0      # each failure up to this
CONNECT_TIMEOUT = 10.0
NAMES_TIMEOUT = 5.0
EXIT_WAIT = 1.0             # seconds to wait for the server's EXIT frame
LLM_MODEL = "llama3.2"
LLM_TIMEOUT = 30.0
MAX_LLM_REPLY = 1024 * 1024  # bytes read from the endpoint at most
# select() on Windows is not interrupted by Ctrl+C, and Python acts on it
# only when the call returns: wake up this often there.
WAKE_INTERVAL = 0.5 if sys.platform == "win32" else None
# How the server delivers a BROADCAST: "<sender> sent to everyone: ...".
# The bot answers messages sent to it, not announcements to the room.
BROADCAST_MARK = "to everyone: "
ELLIPSIS = "\u2026"

HELP = ("I answer: help (this list), time (the time here), names (who is "
        "connected), echo <text> (I send the text back); anything else {}. "
        "Upper or lower case, as you like.")
FRIENDLY_HELP = "gets a friendly hello"
LLM_HELP = "goes to a language model"
FRIENDLY = "Hello {}! I am a bot. Send me help to see what I can do."
ECHO_USAGE = "Echo what? Send: echo <text>"
NAMES_FAILED = "Sorry, I could not get the names just now."
LLM_APOLOGY = ("Sorry, my language model is not answering just now. "
               "Send help to see what else I can do.")
LLM_SYSTEM = ("You are {}, a friendly bot in the chat room of a networking "
              "class. Answer briefly, in plain text, on one line.")


class BotError(Exception):
    """A problem that reconnecting cannot solve."""


class LanguageModelError(Exception):
    """The language model gave no answer; the text says why."""


def say(line):
    """Print one line of the bot's log at once."""
    print(line, flush=True)


def reason(error):
    """An error (or urllib's reason, which may be a string) in a few
    words."""
    if isinstance(error, OSError):
        return protocol.describe_error(error)
    return str(error) or type(error).__name__


def parse_delivery(text):
    """(sender, message) for a delivered message, '<sender> sent <message>';
    None for anything else (an ERROR: or a SERVER: notice, whose first word
    ends with a colon, which a name cannot hold)."""
    parts = text.split(" ", 2)
    if (len(parts) == 3 and parts[1] == "sent"
            and protocol.is_valid_name(parts[0])):
        return parts[0], parts[2]
    return None


def numbered(name, number):
    """``name`` for 1, then name2, name3, ..., shortened to stay valid."""
    if number == 1:
        return name
    suffix = str(number)
    return name[:protocol.MAX_NAME_LENGTH - len(suffix)] + suffix


def one_line(text):
    """``text`` with every run of white space, line breaks included, made
    one space."""
    return " ".join(text.split())


def fit(text, sender, name):
    """``text``, cut at a character boundary if need be, so that both the
    command 'MSG <sender> <text>' and its delivery '<name> sent <text>'
    fit in one frame."""
    room = protocol.MAX_MSG_LENGTH - max(
        len(f"MSG {sender} ".encode(protocol.ENCODING)),
        len(f"{name} sent ".encode(protocol.ENCODING)))
    data = text.encode(protocol.ENCODING)
    if len(data) <= room:
        return text
    room -= len(ELLIPSIS.encode(protocol.ENCODING))
    # "ignore" drops the piece of a character that the cut split.
    return data[:room].decode(protocol.ENCODING, "ignore") + ELLIPSIS


def ask_names(address):
    """The names of everyone connected, as the server lists them.

    Asked on a second connection that takes no name: the server delivers
    messages only to named clients, so every frame there is a reply, the
    names and then EXIT.  On the bot's own connection no rule on the text
    can tell the names from a message that arrives meanwhile: with a client
    named "sent", 'A sent B' is both the names A, sent, B and "B" from A.
    """
    with socket.create_connection(address, NAMES_TIMEOUT) as sock:
        protocol.send_message(sock, protocol.COMMAND_GET_NAMES)
        protocol.send_message(sock, protocol.COMMAND_EXIT)
        replies = []
        reply = protocol.receive_message(sock)
        while reply is not None:
            replies.append(reply)
            reply = protocol.receive_message(sock)
    if replies[-1:] != [protocol.COMMAND_EXIT]:
        raise ConnectionError("no names from the server" + (
            f": {replies[0]!r}" if replies else ""))
    return " ".join(replies[:-1])


class RateLimit:
    """Answer a sender only if this is at most its ``limit``-th message in
    the last ``window`` seconds.

    Every message counts, answered or not: a sender that keeps talking
    while it is not answered stays unanswered, so two bots that answer each
    other stop for good instead of trickling on.
    """

    def __init__(self, limit, window=RATE_WINDOW):
        self.limit = limit
        self.window = window
        # Name key -> the times of its last limit + 1 messages.
        self.times = {}

    def allows(self, sender):
        """Count a message from ``sender``; whether to answer it."""
        now = time.monotonic()
        if len(self.times) > MAX_SENDERS:  # forget senders gone quiet
            self.times = {key: times for key, times in self.times.items()
                          if now - times[-1] < self.window}
        times = self.times.setdefault(
            protocol.name_key(sender),
            collections.deque(maxlen=self.limit + 1))
        times.append(now)
        return len(times) <= self.limit or now - times[0] >= self.window


class LanguageModel:
    """An OpenAI-compatible chat-completions endpoint, such as Ollama's
    http://localhost:11434/v1/chat/completions."""

    def __init__(self, url, model=LLM_MODEL, timeout=LLM_TIMEOUT):
        self.url = url
        self.model = model
        self.timeout = timeout

    def ask(self, system, question):
        """The model's answer; LanguageModelError if there is none."""
        body = json.dumps({"model": self.model, "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": question},
        ]}).encode(protocol.ENCODING)
        request = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"})
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)
            with response:
                reply = json.loads(response.read(MAX_LLM_REPLY))
            answer = reply["choices"][0]["message"]["content"]
        except urllib.error.HTTPError as error:
            raise LanguageModelError(http_error_words(error)) from None
        except urllib.error.URLError as error:  # refused, no such host...
            raise LanguageModelError(reason(error.reason)) from None
        except (OSError, http.client.HTTPException, ValueError, LookupError,
                TypeError) as error:  # a timeout, or not the right shape
            raise LanguageModelError(reason(error)) from None
        if not isinstance(answer, str) or not answer.strip():
            raise LanguageModelError("the reply holds no answer")
        # JSON may carry lone surrogates, which UTF-8 cannot encode.
        return answer.encode(protocol.ENCODING, "replace").decode(
            protocol.ENCODING)


def http_error_words(error):
    """'HTTP error 404', with the endpoint's own message when it gives
    one (Ollama and llama.cpp do: {"error": {"message": ...}})."""
    words = f"HTTP error {error.code}"
    try:
        with error:
            message = json.loads(error.read(MAX_LLM_REPLY))["error"]["message"]
    except (OSError, http.client.HTTPException, ValueError, LookupError,
            TypeError):
        return words
    return f"{words}: {one_line(str(message))[:200]}"


class ChatBot:
    """Joins the chat and answers; reconnects when the server goes away."""

    def __init__(self, host, port, name=DEFAULT_NAME, llm=None,
                 rate_limit=RATE_LIMIT, retry_delay=RETRY_DELAY,
                 max_retry_delay=MAX_RETRY_DELAY):
        self.address = (host, port)
        self.wanted_name = name
        self.name = None
        self.llm = llm
        self.rate = RateLimit(rate_limit)
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.sock = None

    def run(self):
        """Serve until Ctrl+C, reconnecting with a growing delay whenever
        the server cannot be reached or goes away; then return 0."""
        where = "{}:{}".format(*self.address)
        delay = self.retry_delay
        try:
            while True:
                try:
                    self.sock = socket.create_connection(
                        self.address, CONNECT_TIMEOUT)
                    self.sock.settimeout(None)
                    self.name = self.take_name()
                    say(f"Connected to {where} as {self.name}.")
                    delay = self.retry_delay
                    self.serve()
                except (OSError, protocol.ProtocolError) as error:
                    what = ("Cannot reach" if self.sock is None
                            else "Lost the connection to")
                    self.close()
                    say(f"{what} the server at {where} ({reason(error)}); "
                        f"trying again in {delay:g} s.")
                time.sleep(delay)
                delay = min(2 * delay, self.max_retry_delay)
        except KeyboardInterrupt:
            self.leave()
            say("Left the chat.")
            return 0

    def take_name(self):
        """Take the wanted name, or the first free one of name2, name3,
        ...; return it."""
        for number in range(1, MAX_NAME_TRIES + 1):
            name = numbered(self.wanted_name, number)
            protocol.send_message(self.sock, f"NAME {name}")
            reply = self.receive()
            if reply == f"Hello {name}":
                return name
            say(f"Server sent: {reply!r}")
        raise BotError(f"no free name from {self.wanted_name} to {name}: "
                       f"the server said {reply!r}")

    def serve(self):
        """Answer every message sent to the bot until the connection
        ends."""
        while True:
            text = self.receive()
            delivery = parse_delivery(text)
            if delivery is None:
                # An error about an answer (its sender left) or a notice.
                say(f"Server sent: {text!r}")
                continue
            sender, message = delivery
            if not self.should_answer(sender, message):
                continue
            answer = fit(self.answer(sender, message), sender, self.name)
            protocol.send_message(self.sock, f"MSG {sender} {answer}")
            say(f"{sender}: {message!r} -> {answer!r}")

    def receive(self):
        """The next message from the server; ConnectionError if it
        closed the connection."""
        # In select() first: on Windows, with a timeout, so that Ctrl+C
        # is acted on (see WAKE_INTERVAL).
        while not select.select([self.sock], [], [], WAKE_INTERVAL)[0]:
            pass
        text = protocol.receive_message(self.sock)
        if text is None:
            raise ConnectionError("the server closed the connection")
        return text

    def should_answer(self, sender, message):
        """Whether to answer: not itself, not a broadcast, and not a sender
        over the rate limit."""
        if protocol.name_key(sender) == protocol.name_key(self.name):
            return False
        if message.startswith(BROADCAST_MARK):
            say(f"{sender}: {message!r} (a broadcast: not answered)")
            return False
        if not self.rate.allows(sender):
            say(f"{sender}: {message!r} (over {self.rate.limit} messages "
                f"in {self.rate.window:g} s: not answered)")
            return False
        return True

    def answer(self, sender, message):
        """The answer to ``message`` from ``sender``."""
        command, argument = protocol.parse_command(message)
        if command == "ECHO":
            return argument if argument.strip() else ECHO_USAGE
        if command == "HELP" and not argument:
            return HELP.format(LLM_HELP if self.llm else FRIENDLY_HELP)
        if command == "TIME" and not argument:
            return time.strftime("It is %H:%M:%S on %Y-%m-%d here.")
        if command == "NAMES" and not argument:
            return self.names()
        if self.llm:
            return self.ask_llm(message)
        return FRIENDLY.format(sender)

    def names(self):
        """'Connected: ' and the names, or an apology."""
        try:
            return "Connected: " + ask_names(self.address)
        except (OSError, protocol.ProtocolError) as error:
            say(f"Cannot get the names: {reason(error)}")
            return NAMES_FAILED

    def ask_llm(self, message):
        """The language model's answer on one line, or an apology."""
        try:
            return one_line(self.llm.ask(LLM_SYSTEM.format(self.name),
                                         message))
        except LanguageModelError as error:
            say(f"Language model error: {error}")
            return LLM_APOLOGY

    def leave(self):
        """Send EXIT and wait briefly for the server's EXIT or close."""
        if self.sock is None:
            return
        try:
            self.sock.settimeout(EXIT_WAIT)
            protocol.send_message(self.sock, protocol.COMMAND_EXIT)
            reply = ""
            while reply not in (None, protocol.COMMAND_EXIT):
                reply = protocol.receive_message(self.sock)
        except (OSError, protocol.ProtocolError, KeyboardInterrupt):
            pass
        finally:
            self.close()

    def close(self):
        """Close the connection to the server, if there is one."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def interrupt(signum, frame):
    """Make a signal stop the bot as Ctrl+C does."""
    raise KeyboardInterrupt


def bot_name(text):
    """argparse type: a valid name."""
    if not protocol.is_valid_name(text):
        raise argparse.ArgumentTypeError(protocol.NAME_RULE)
    return text


def endpoint_url(text):
    """argparse type: an http:// or https:// address."""
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(
            "give the whole address, such as "
            "http://localhost:11434/v1/chat/completions")
    return text


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(
        description="A bot that joins the chat and answers the messages "
        "sent to it: help, time, names, echo <text>, and free text (see "
        "README.md).")
    protocol.add_server_arguments(parser)
    parser.add_argument("--name", type=bot_name, default=DEFAULT_NAME,
                        help="the name to take; if it is taken, the next "
                        "free one of NAME2, NAME3, ... (default %(default)s)")
    parser.add_argument("--llm", metavar="URL", type=endpoint_url,
                        help="answer free text with the language model at "
                        "this OpenAI-compatible chat-completions endpoint, "
                        "such as http://localhost:11434/v1/chat/completions "
                        "(Ollama) or http://localhost:8080/v1/chat/completions"
                        " (llama.cpp)")
    parser.add_argument("--llm-model", default=LLM_MODEL, metavar="MODEL",
                        help="the model to ask for (default %(default)s)")
    parser.add_argument("--llm-timeout", type=protocol.seconds,
                        default=LLM_TIMEOUT, metavar="SECONDS",
                        help="how long to wait for the language model "
                        "(default %(default)g)")
    parser.add_argument("--rate-limit", type=protocol.at_least_one,
                        default=RATE_LIMIT, metavar="N",
                        help="answer a sender only while it sends at most N "
                        f"messages in {RATE_WINDOW:g} seconds (default "
                        "%(default)s)")
    parser.add_argument("--retry-delay", type=protocol.seconds,
                        default=RETRY_DELAY, metavar="SECONDS",
                        help="the first wait before reconnecting "
                        "(default %(default)g)")
    parser.add_argument("--max-retry-delay", type=protocol.seconds,
                        default=MAX_RETRY_DELAY, metavar="SECONDS",
                        help="the wait doubles after each failure up to "
                        "this (default %(default)g)")
    return parser.parse_args(argv)


def main(argv=None):
    arguments = parse_arguments(argv)
    # Whatever the console's encoding, never fail on a character.
    sys.stdout.reconfigure(errors="replace")
    # Ctrl+C and SIGTERM both end the bot cleanly, even where the shell
    # started it with Ctrl+C ignored.
    signal.signal(signal.SIGINT, interrupt)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, interrupt)
    llm = None
    if arguments.llm:
        llm = LanguageModel(arguments.llm, arguments.llm_model,
                            arguments.llm_timeout)
    bot = ChatBot(arguments.host, arguments.port, arguments.name, llm,
                  arguments.rate_limit, arguments.retry_delay,
                  arguments.max_retry_delay)
    try:
        return bot.run()
    except Exception as error:  # BotError, or anything unforeseen
        print(f"chat_bot: {reason(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
