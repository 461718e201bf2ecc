import pytest

from support import Peer, ServerProcess, mount_tmpfs, unmount


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
