import os
import select
import shutil
import subprocess
import time

import pytest

from support import TIMEOUT, Peer, ServerProcess, mount_tmpfs, unmount


@pytest.fixture
def server():
    """A real server process on a free port, stopped after the test."""
    process = ServerProcess()
    try:
        yield process
    finally:
        process.cleanup()


@pytest.fixture
def start_server():
    """start_server(*arguments, preexec_fn=None) -> a server process.

    After the test each one is stopped; one that the test did not stop or
    wait for must still be running, and no log may hold a traceback."""
    servers = []

    def start(*arguments, preexec_fn=None):
        server = ServerProcess(*arguments, preexec_fn=preexec_fn)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            # returncode is set only once the test has waited for it.
            ended_by_the_test = server.process.returncode is not None
            running = server.running()
            log = server.log()
            server.cleanup()
            assert running or ended_by_the_test, "the server died:\n" + log
            assert "Traceback" not in log, log


@pytest.fixture
def connect(server):
    """connect() -> a Peer on the server; every Peer is closed after."""
    peers = []

    def make(port=None):
        peer = Peer(port or server.port)
        peers.append(peer)
        return peer

    try:
        yield make
    finally:
        for peer in peers:
            peer.close()


@pytest.fixture
def small_disk(tmp_path):
    """A folder on a file system of its own of 1 MiB (a real tmpfs)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mount_tmpfs(folder)
    try:
        yield folder
    finally:
        unmount(folder)


@pytest.fixture(scope="module")
def display():
    """A real X server (Xvfb) on a free display; DISPLAY names it."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (Debian: apt-get install xvfb)")
    # -displayfd: Xvfb picks a free display and writes its number to us.
    reader, writer = os.pipe()
    xvfb = subprocess.Popen(
        ["Xvfb", "-displayfd", str(writer), "-screen", "0", "1024x768x24",
         "-nolisten", "tcp"],
        pass_fds=(writer,), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    os.close(writer)
    number = b""
    try:
        deadline = time.monotonic() + TIMEOUT
        while not number.endswith(b"\n") and time.monotonic() < deadline:
            if select.select([reader], [], [], 0.1)[0]:
                chunk = os.read(reader, 16)
                if not chunk:
                    break
                number += chunk
        if not number.strip().isdigit():
            pytest.skip("Xvfb did not start")
        saved = os.environ.get("DISPLAY")
        os.environ["DISPLAY"] = ":" + number.decode().strip()
        yield os.environ["DISPLAY"]
    finally:
        os.close(reader)
        xvfb.terminate()
        xvfb.wait(TIMEOUT)
        if number.strip().isdigit():
            if saved is None:
                del os.environ["DISPLAY"]
            else:
                os.environ["DISPLAY"] = saved
