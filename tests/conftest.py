import pytest

from support import Peer, ServerProcess


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
