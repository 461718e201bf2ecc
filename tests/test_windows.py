"""What differs on Windows, written to hold on every system: the server's
log when it is redirected to a file, and Ctrl+Break.

CI runs these, and the whole suite, under the real Windows CPython with
Wine (.ci/windows); .ci/windows_terminals.py drives the Windows client's
keyboard in real terminals."""

import re
import time

from support import Peer, ServerProcess, needs_console_events, wait_for


def test_a_redirected_log_keeps_names_in_every_alphabet(server):
    """Windows writes a redirected stream in the ANSI code page (cp1252),
    which has no Hebrew: the log must be UTF-8 so the teacher can read
    who came and went."""
    peer = Peer(server.port).name("שלום")
    peer.request("EXIT")
    peer.close()
    assert wait_for(lambda: "(שלום) left" in server.log())
    assert re.search(r"^\S+ \S+ \(שלום\) named$", server.log(), re.M)


@needs_console_events
def test_ctrl_break_stops_an_idle_server_at_once():
    """Idle, select() on Windows is not woken by a console event: the
    server wakes up often enough to stop within a second."""
    server = ServerProcess()
    try:
        assert wait_for(lambda: "listening on" in server.log())
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 1.5
        assert "shutting down" in server.log()
    finally:
        server.cleanup()
