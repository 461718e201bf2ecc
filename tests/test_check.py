"""chat_check.py grades correctly: against our own server every check
passes (default, --strict, both widths), and each deliberately faulty
student server (tests/student_server.py) fails exactly the checks its
fault breaks and no others.  Real processes, real sockets."""

import json
import os
import re
import socket
import subprocess
import sys

import pytest

from support import ROOT, UNDER_WINE, ServerProcess

CHECKER = os.path.join(ROOT, "chat_check.py")
STUDENT_SERVER = os.path.join(ROOT, "tests", "student_server.py")
# Short, so that a check that waits for a reply that never comes (or for
# silence) costs little; long enough for a loaded machine.
TIMEOUT = "0.5"
CHECKS = [
    "name_reply", "get_names", "msg_delivery", "duplicate_name",
    "msg_to_missing", "msg_before_name", "unknown_command", "two_commands",
    "byte_at_a_time", "hebrew", "names_after_close", "abrupt_close",
    "idle_cpu", "exit", "names_after_exit", "example_run",
    "names_after_reset", "reset",
]
# The checks that compare this project's exact replies under --strict.
WORDED = [
    "name_reply", "get_names", "msg_delivery", "duplicate_name",
    "msg_to_missing", "msg_before_name", "unknown_command", "two_commands",
    "byte_at_a_time", "hebrew", "exit", "example_run",
]
# The idle-CPU check reads /proc: elsewhere it is skipped, with its reason.
IDLE_CPU_MEASURED = sys.platform.startswith("linux")
STATUS_LINE = re.compile(r"^(PASS|FAIL|SKIP|BLOCKED) +(\w+) ", re.MULTILINE)


def grade(server, *arguments):
    """Run the checker on ``server`` (with its --pid); return the finished
    process and {check: status}."""
    finished = subprocess.run(
        [sys.executable, CHECKER, "--port", str(server.port), "--timeout",
         TIMEOUT, "--pid", str(server.pid), *arguments],
        capture_output=True, text=True, encoding="utf-8", timeout=60,
        env=dict(os.environ, PYTHONIOENCODING="utf-8"))
    assert "Traceback" not in finished.stderr, finished.stderr
    statuses = dict((name, status) for status, name
                    in STATUS_LINE.findall(finished.stdout))
    return finished, statuses


def with_status(statuses, wanted):
    return {name for name, status in statuses.items() if status == wanted}


@pytest.fixture
def start():
    """start(*arguments, script=...) -> a running server, ended after."""
    servers = []

    def make(*arguments, script=None):
        server = (ServerProcess(*arguments) if script is None
                  else ServerProcess(*arguments, script=script))
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.cleanup()


@pytest.mark.parametrize("server_arguments, checker_arguments, dialect", [
    ([], [], "4 digits (detected)"),
    ([], ["--strict"], "4 digits (detected)"),
    ([], ["--length-field", "4", "--strict"], "4 digits (as told)"),
    ([], ["--length-field", "2"], "2 digits (as told)"),
    (["--length-field", "2"], ["--strict"], "2 digits (detected)"),
    (["--length-field", "2"], ["--length-field", "2"], "2 digits (as told)"),
])
def test_our_server_passes_every_check(start, server_arguments,
                                       checker_arguments, dialect):
    server = start(*server_arguments)
    finished, statuses = grade(server, *checker_arguments)
    expected = list(CHECKS)
    if "--strict" in checker_arguments:
        expected += [name + "_wording" for name in WORDED]
    wanted = {name: "PASS" for name in expected}
    score = f"score: {len(expected)}/{len(expected)}"
    if not IDLE_CPU_MEASURED:
        wanted["idle_cpu"] = "SKIP"
        score = f"score: {len(expected) - 1}/{len(expected) - 1} (1 skipped)"
    assert statuses == wanted, finished.stdout
    lines = finished.stdout.splitlines()
    assert lines[:2] == [
        f"Grading the chat server at 127.0.0.1:{server.port}",
        f"length fields: {dialect}"]
    assert lines[-1] == score
    assert finished.returncode == 0
    assert finished.stderr == ""


# Each fault of tests/student_server.py, and the checks it must fail and
# the checks left BLOCKED behind them (everything else passes).
FAULTS = [
    ("none", [], set(), set()),
    ("departed", [], {"names_after_close", "names_after_exit",
                      "example_run", "names_after_reset"}, set()),
    # A socket never removed after a close or a reset: its name stays,
    # and select() spins.
    ("spin", [], {"names_after_close", "idle_cpu", "names_after_reset"},
     set()),
    ("msg-before-name", [], {"msg_before_name"}, set()),
    # The checks that make clients leave run last, so a crash there costs
    # only what follows it.
    ("crash-on-exit", [], {"exit"},
     {"names_after_exit", "example_run", "names_after_reset", "reset"}),
    pytest.param("crash-on-reset", [], {"names_after_reset"}, {"reset"},
                 marks=pytest.mark.skipif(
                     UNDER_WINE, reason="under Wine the student server's "
                     "recv() does not raise on a reset")),
    ("char-count", [], {"hebrew"}, set()),
    ("one-recv", [], {"two_commands", "byte_at_a_time"}, set()),
    ("unknown-silent", [], {"unknown_command"}, set()),
    ("two-digit", [], set(), set()),
    ("two-digit", ["--length-field", "2"], set(), set()),
]


@pytest.mark.parametrize("fault, checker_arguments, failed, blocked", FAULTS)
def test_a_faulty_server_fails_exactly_its_checks(
        start, fault, checker_arguments, failed, blocked):
    server = start("--fault", fault, script=STUDENT_SERVER)
    finished, statuses = grade(server, *checker_arguments)
    assert set(statuses) == set(CHECKS), finished.stdout
    skipped = set() if IDLE_CPU_MEASURED else {"idle_cpu"}
    assert with_status(statuses, "FAIL") == failed - skipped, finished.stdout
    assert with_status(statuses, "BLOCKED") == blocked, finished.stdout
    assert with_status(statuses, "SKIP") == skipped
    assert finished.returncode == (1 if failed else 0)
    dialect = "2 digits" if fault == "two-digit" else "4 digits"
    assert f"length fields: {dialect}" in finished.stdout


def test_a_failure_quotes_what_was_sent_expected_and_got(start):
    server = start("--fault", "unknown-silent", script=STUDENT_SERVER)
    finished, _ = grade(server)
    assert re.search(
        r"^FAIL     unknown_command          no reply to "
        r"'FROBNICATE (t\w{8})'\n"
        r"         sent:     FROBNICATE \1\n"
        r"         expected: an error reply\n"
        r"         got:      nothing within 0\.5 s\n",
        finished.stdout, re.MULTILINE), finished.stdout


def test_a_crash_is_told_apart_from_a_wrong_answer(start):
    server = start("--fault", "crash-on-exit", script=STUDENT_SERVER)
    finished, _ = grade(server)
    assert re.search(r"^FAIL     exit +the server crashed: it no longer ",
                     finished.stdout, re.MULTILINE), finished.stdout
    assert ("BLOCKED  reset                    the server stopped answering "
            "in exit\n") in finished.stdout


def test_json_in_the_shape_gradescope_reads(start, tmp_path):
    server = start("--fault", "unknown-silent", script=STUDENT_SERVER)
    results = tmp_path / "results.json"
    # Without --pid: idle_cpu is skipped, and counts for nothing.
    finished = subprocess.run(
        [sys.executable, CHECKER, "--port", str(server.port), "--timeout",
         TIMEOUT, "--json", str(results)],
        capture_output=True, text=True, timeout=60)
    assert finished.returncode == 1
    report = json.loads(results.read_text(encoding="utf-8"))
    assert set(report) == {"score", "output", "tests"}
    assert report["score"] == 16
    assert report["output"] == (
        f"Grading the chat server at 127.0.0.1:{server.port}\n"
        "length fields: 4 digits (detected)")
    assert [test["name"] for test in report["tests"]] == CHECKS
    for test in report["tests"]:
        assert set(test) == {"name", "score", "max_score", "status",
                             "output"}
    by_name = {test["name"]: test for test in report["tests"]}
    assert by_name["name_reply"] == {
        "name": "name_reply", "score": 1, "max_score": 1,
        "status": "passed",
        "output": "PASS     name_reply               NAME gets a reply"}
    failed = by_name["unknown_command"]
    assert (failed["score"], failed["max_score"], failed["status"]) == (
        0, 1, "failed")
    assert failed["output"].splitlines()[1:] == [
        "         sent:     " + failed["output"].split("'")[1],
        "         expected: an error reply",
        "         got:      nothing within 0.5 s"]
    skipped = by_name["idle_cpu"]
    assert (skipped["score"], skipped["max_score"], skipped["status"]) == (
        0, 0, "passed")
    assert skipped["output"].startswith("SKIP     idle_cpu ")
    assert "score: 16/17 (1 skipped)" in finished.stdout


def run_checker(*arguments):
    return subprocess.run([sys.executable, CHECKER, *arguments],
                          capture_output=True, text=True, timeout=30)


def test_no_server_is_one_line_and_status_2(tmp_path):
    with socket.socket() as placeholder:   # a port nobody listens on
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
        results = tmp_path / "results.json"
        finished = run_checker("--port", str(port), "--json", str(results))
    assert finished.returncode == 2
    assert finished.stdout == ""
    assert finished.stderr == (f"chat_check: cannot connect to 127.0.0.1:"
                               f"{port}: connection refused\n")
    assert json.loads(results.read_text()) == {
        "score": 0, "tests": [], "output": finished.stderr[12:-1]}


def test_a_server_that_never_answers_is_one_line_and_status_2():
    with socket.socket() as mute:   # accepts (in the kernel), never reads
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        port = mute.getsockname()[1]
        finished = run_checker("--port", str(port), "--timeout", TIMEOUT)
    assert finished.returncode == 2
    assert finished.stdout == ""
    assert re.fullmatch(
        f"chat_check: the server at 127.0.0.1:{port} answered neither a "
        r"4-digit nor a 2-digit 'NAME ck\w{6}' \(last: nothing within "
        r"0\.5 s\)\n", finished.stderr), finished.stderr


def test_a_2_digit_server_graded_as_4_digit_is_one_line(start):
    server = start("--fault", "two-digit", script=STUDENT_SERVER)
    finished = run_checker("--port", str(server.port), "--length-field",
                           "4")
    assert finished.returncode == 2
    assert finished.stdout == ""
    assert finished.stderr == (
        f"chat_check: the server at 127.0.0.1:{server.port} answered in "
        "2-digit length fields; try --length-field 2 or auto\n")


@pytest.mark.parametrize("arguments, error", [
    (["--timeout", "0"], "argument --timeout: '0' is not a number of "
     "seconds above 0"),
    (["--length-field", "3"], "argument --length-field: '3' is not 4, "
     "2 or auto"),
    (["--port", "0"], "argument --port: '0' is not a port number "
     "(1 to 65535)"),
    pytest.param(["--pid", "999999999"], "no process has the id 999999999",
                 marks=pytest.mark.skipif(
                     not IDLE_CPU_MEASURED, reason="process ids are "
                     "checked where they are read: Linux's /proc")),
])
def test_bad_arguments_are_one_clear_error(arguments, error):
    finished = run_checker(*arguments)
    assert finished.returncode == 2
    assert finished.stderr.splitlines()[-1] == ("chat_check.py: error: "
                                                + error)
    assert "Traceback" not in finished.stderr
