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
