"""The bot as a real process against a real server process; its language
model is a local HTTP server that speaks the chat-completions shapes."""

import datetime
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading

import pytest

import chat_bot
from support import ROOT, TIMEOUT, Peer, ServerProcess, wait_for

BOT = os.path.join(ROOT, "chat_bot.py")
HELP = ("I answer: help (this list), time (the time here), names (who is "
        "connected), echo <text> (I send the text back); anything else {}. "
        "Upper or lower case, as you like.")
FRIENDLY = "Hello {}! I am a bot. Send me help to see what I can do."
APOLOGY = ("Sorry, my language model is not answering just now. "
           "Send help to see what else I can do.")
SYSTEM = ("You are Bot, a friendly bot in the chat room of a networking "
          "class. Answer briefly, in plain text, on one line.")
HANG = "hang"

posix_only = pytest.mark.skipif(sys.platform == "win32",
                                reason="signals are POSIX")


class BotProcess:
    """``python chat_bot.py --port P ...`` in a child process, with short
    reconnection delays; its output goes to a file."""

    def __init__(self, port, *arguments):
        self.log_file = tempfile.NamedTemporaryFile(
            "w+", prefix="chat_bot_", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [sys.executable, BOT, "--port", str(port), "--retry-delay",
             "0.05", "--max-retry-delay", "0.2", *arguments],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self.log_file,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONIOENCODING="utf-8"))

    def log(self):
        with open(self.log_file.name, encoding="utf-8") as log:
            return log.read()

    def lines(self):
        return self.log().splitlines()

    def wait_for(self, text, count=1, timeout=TIMEOUT):
        """Wait until ``text`` is in ``count`` lines of the output."""
        assert wait_for(lambda: sum(text in line for line in self.lines())
                        >= count, timeout), (
            f"{text!r} not in the output:\n{self.log()}")

    def stop(self, signum):
        self.process.send_signal(signum)
        return self.process.wait(TIMEOUT)

    def cleanup(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(TIMEOUT)
        self.log_file.close()
        os.unlink(self.log_file.name)


@pytest.fixture
def start_bot(server):
    """start_bot(*arguments) -> a BotProcess that has taken its name."""
    bots = []

    def start(*arguments, port=None, connected=True):
        bot = BotProcess(port or server.port, *arguments)
        bots.append(bot)
        if connected:
            bot.wait_for(f"Connected to 127.0.0.1:{port or server.port} as ")
        return bot

    try:
        yield start
    finally:
        for bot in bots:
            bot.cleanup()


def completion(content):
    """A chat-completions response body carrying ``content``."""
    return json.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0,
        "model": "tiny",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 9,
                  "total_tokens": 18},
    }).encode("utf-8")


class ChatCompletionsStub:
    """A chat-completions endpoint on a free port, in a thread.  Records
    every request; answers each with the next of ``replies``: (status,
    body), or HANG to say nothing until the test ends."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.requests = []
        self.released = threading.Event()
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                stub.requests.append((self.path, self.headers["Content-Type"],
                                      json.loads(body)))
                reply = stub.replies.pop(0)
                if reply == HANG:
                    stub.released.wait(TIMEOUT)
                    return
                status, body = reply
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *arguments):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                      Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       args=(0.02,))
        self.thread.start()
        port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{port}/v1/chat/completions"

    def close(self):
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(TIMEOUT)


@pytest.fixture
def llm():
    """llm(replies) -> a ChatCompletionsStub, closed after the test."""
    stubs = []

    def make(replies):
        stubs.append(ChatCompletionsStub(replies))
        return stubs[-1]

    try:
        yield make
    finally:
        for stub in stubs:
            stub.close()


def closed_port():
    """A port on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_every_command(start_bot, connect):
    start_bot("--rate-limit", "100")
    # The names list 'Bot sent Ann' reads like a message 'Ann' from Bot:
    # the bot must not mistake one for the other.
    connect().name("sent")
    ann = connect().name("Ann")

    def ask(text):
        return ann.request(f"MSG Bot {text}")

    assert ask("help") == "Bot sent " + HELP.format("gets a friendly hello")
    assert ask("HeLP") == "Bot sent " + HELP.format("gets a friendly hello")
    before = datetime.datetime.now().replace(microsecond=0)
    moment = datetime.datetime.strptime(
        ask("time"), "Bot sent It is %H:%M:%S on %Y-%m-%d here.")
    assert before <= moment <= datetime.datetime.now()
    assert ask("TIME").startswith("Bot sent It is ")
    assert ask("names") == "Bot sent Connected: Bot sent Ann"
    assert ask("Names") == "Bot sent Connected: Bot sent Ann"
    assert ask("echo  Hello,  world! ") == "Bot sent Hello,  world! "
    assert ask("EcHo שלום 👋🏽") == "Bot sent שלום 👋🏽"
    assert ask("echo") == "Bot sent Echo what? Send: echo <text>"
    assert ask("echo   ") == "Bot sent Echo what? Send: echo <text>"
    assert ask("how are you?") == "Bot sent " + FRIENDLY.format("Ann")
    # A command word with more after it is free text.
    assert ask("time flies") == "Bot sent " + FRIENDLY.format("Ann")
    assert ask("help me") == "Bot sent " + FRIENDLY.format("Ann")


def test_name_taken_takes_the_next_free_one(server, start_bot, connect):
    connect().name("Bot")
    connect().name("bot2")
    bot = start_bot()
    assert bot.lines() == [
        "Server sent: \"ERROR: the name 'Bot' is taken\"",
        "Server sent: \"ERROR: the name 'Bot2' is taken\"",
        f"Connected to 127.0.0.1:{server.port} as Bot3."]
    ann = connect().name("Ann")
    assert ann.request("MSG Bot3 names") == (
        "Bot3 sent Connected: Bot bot2 Bot3 Ann")


def test_a_long_name_stays_valid_when_numbered(start_bot, connect):
    connect().name("A" * 20)
    bot = start_bot("--name", "A" * 20)
    bot.wait_for("as " + "A" * 19 + "2.")


def test_a_loop_with_another_bot_is_cut_by_the_rate_limit(start_bot,
                                                          connect):
    """A peer that answers everything it receives, as a naive bot would:
    the bot answers 5 of its messages, then no more; others still get
    answers."""
    bot = start_bot()
    parrot = connect().name("Parrot")
    parrot.send("MSG Bot hello")
    for _ in range(5):
        received = parrot.receive()
        assert received == "Bot sent " + FRIENDLY.format("Parrot")
        parrot.send(f"MSG Bot {received}")
    # The bot logs a refusal after it would have sent the answer.
    bot.wait_for(f"Parrot: {received!r} (over 5 messages in 10 s: "
                 "not answered)")
    parrot.expect_silence()
    ann = connect().name("Ann")
    assert ann.request("MSG Bot echo hi") == "Bot sent hi"


def test_the_bot_never_answers_itself():
    bot = chat_bot.ChatBot("127.0.0.1", 1, name="Bot")
    bot.name = "Bot"
    assert bot.should_answer("Ann", "hi")
    assert not bot.should_answer("Bot", "hi")
    assert not bot.should_answer("bOT", "hi")


def test_a_broadcast_is_not_answered(start_bot, connect):
    """BROADCAST arrives as '<sender> sent to everyone: ...'."""
    bot = start_bot()
    ann = connect().name("Ann")
    ann.send("MSG Bot to everyone: class starts at ten")
    assert ann.request("MSG Bot echo next") == "Bot sent next"
    bot.wait_for("Ann: 'to everyone: class starts at ten' (a broadcast: "
                 "not answered)")


def test_free_text_goes_to_the_language_model(start_bot, connect, llm):
    stub = llm([(200, completion("Paris, of course."))])
    start_bot("--llm", stub.url, "--llm-model", "tiny")
    ann = connect().name("Ann")
    assert ann.request("MSG Bot What is the capital of France?") == (
        "Bot sent Paris, of course.")
    assert stub.requests == [("/v1/chat/completions", "application/json", {
        "model": "tiny",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "What is the capital of France?"},
        ]})]
    # Commands are still the bot's own.
    assert ann.request("MSG Bot help") == "Bot sent " + HELP.format(
        "goes to a language model")
    assert ann.request("MSG Bot echo hi") == "Bot sent hi"
    assert len(stub.requests) == 1


def test_language_model_failures_get_an_apology(start_bot, connect, llm):
    stub = llm([
        HANG,
        (500, b'{"error": {"message": "model \\"tiny\\" not found"}}'),
        (502, b"<html>Bad gateway</html>"),
        (200, b"this is not JSON"),
        (200, b'{"choices": []}'),
        (200, completion("   ")),
        (200, completion("Still \ud800here,\n\n  after all.")),
    ])
    bot = start_bot("--llm", stub.url, "--llm-timeout", "0.3",
                    "--rate-limit", "100")
    ann = connect().name("Ann")
    for _ in range(6):
        assert ann.request("MSG Bot hi") == "Bot sent " + APOLOGY
    assert ann.request("MSG Bot hi") == "Bot sent Still ?here, after all."
    errors = [line for line in bot.lines()
              if line.startswith("Language model error: ")]
    assert errors == ["Language model error: " + words for words in [
        "timed out",
        'HTTP error 500: model "tiny" not found',
        "HTTP error 502",
        "Expecting value: line 1 column 1 (char 0)",
        "list index out of range",
        "the reply holds no answer",
    ]]
    assert bot.process.poll() is None


def test_an_unreachable_language_model_gets_an_apology(start_bot, connect):
    port = closed_port()
    bot = start_bot("--llm", f"http://127.0.0.1:{port}/v1/chat/completions")
    ann = connect().name("Ann")
    assert ann.request("MSG Bot hi") == "Bot sent " + APOLOGY
    assert "Language model error: connection refused" in bot.lines()


def test_a_long_answer_is_cut_to_fit_one_frame_and_line(start_bot,
                                                        connect, llm):
    stub = llm([(200, completion("line one\n\tline two " + "é" * 20000))])
    start_bot("--llm", stub.url)
    p = connect().name("P")
    delivered = p.request("MSG Bot tell me a long story")
    # 'Bot sent ' takes 9 bytes of the 9999: the answer gets 9990, of which
    # the ellipsis takes 3 and 'line one line two ' 18, leaving 9969 bytes:
    # 4984 two-byte characters, the half of the next one dropped.
    assert delivered == "Bot sent line one line two " + "é" * 4984 + "…"
    assert len(delivered.encode("utf-8")) == 9998


def test_reconnects_when_the_server_comes_back(server, start_bot, connect):
    bot = start_bot()
    port = server.port
    assert connect().name("Ann").request("MSG Bot echo 1") == "Bot sent 1"
    server.process.kill()
    server.process.wait(TIMEOUT)
    # Long enough for Windows, which tries a refused connection for 2 s.
    bot.wait_for("Cannot reach", count=3, timeout=30)
    lost, *retries = [line for line in bot.lines()
                      if line.endswith(" s.")][:4]
    assert re.fullmatch(r"Lost the connection to the server at 127\.0\.0\.1:"
                        rf"{port} \(.+\); trying again in 0\.05 s\.", lost)
    assert retries == [f"Cannot reach the server at 127.0.0.1:{port} "
                       f"(connection refused); trying again in {delay} s."
                       for delay in ("0.1", "0.2", "0.2")]
    again = ServerProcess("--port", str(port))
    try:
        bot.wait_for(f"Connected to 127.0.0.1:{port} as Bot.", count=2)
        ann = Peer(port).name("Ann")
        assert ann.request("MSG Bot echo 2") == "Bot sent 2"
        ann.close()
    finally:
        again.cleanup()


@posix_only
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_sends_exit(server, start_bot, signum):
    bot = start_bot()
    assert bot.stop(signum) == 0
    assert wait_for(lambda: "(Bot) left" in server.log()), server.log()
    assert bot.lines()[-1] == "Left the chat."
    assert "Traceback" not in bot.log()


@posix_only
def test_ctrl_c_while_the_server_is_away(start_bot):
    bot = start_bot(port=closed_port(), connected=False)
    bot.wait_for("Cannot reach the server")
    assert bot.stop(signal.SIGINT) == 0
    assert bot.lines()[-1] == "Left the chat."
    assert "Traceback" not in bot.log()


@pytest.mark.parametrize("arguments, error", [
    (["--name", "a b"], "argument --name: a name is 1 to 20 letters, "
     "digits, '_' or '-'"),
    (["--llm", "localhost:11434"], "argument --llm: give the whole "
     "address, such as http://localhost:11434/v1/chat/completions"),
    (["--port", "70000"], "argument --port: '70000' is not a port number "
     "(1 to 65535)"),
])
def test_bad_arguments_get_one_line(arguments, error):
    result = subprocess.run([sys.executable, BOT, *arguments], cwd=ROOT,
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"chat_bot.py: error: {error}"
    assert "Traceback" not in result.stderr
