"""A relay between a rank in the node's container and Slurm's PMI server (srun --mpi=pmi2).

Slurm's mpi/pmi2 talks to each task over an inherited descriptor, PMI_FD, which a rank
started by the engine's exec cannot inherit. The simple PMI client of MPICH (Hydra-built
libraries speak the PMI-1 wire protocol, which mpi/pmi2 answers too) may instead connect
to PMI_PORT: the relay listens there on the node's loopback (the container shares the
host network), answers the client's port handshake with the rank and size Slurm gave the
task, then passes every byte between the rank and PMI_FD unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading

from launcher.errors import NodeFailed

log = logging.getLogger(__name__)
ACCEPT_TIMEOUT = 300.0  # seconds for the rank to connect: its image may still be loading
CHUNK = 65536


def handshake(rank: int, size: int) -> bytes:
    """The server's answer to `cmd=initack pmiid=N`: who the rank is, then no debug."""
    return f"cmd=initack\ncmd=set size={size}\ncmd=set rank={rank}\ncmd=set debug=0\n".encode()


class Relay:
    """Listens on 127.0.0.1; the first connection is the rank's, relayed to PMI_FD."""

    def __init__(self, pmi_fd: int, rank: int, size: int, node: str) -> None:
        self.rank, self.size, self.node = rank, size, node
        try:
            self.server = socket.socket(fileno=pmi_fd)
        except OSError as e:
            raise NodeFailed(f"PMI_FD {pmi_fd} is not Slurm's PMI socket: {e}", node=node) from e
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(ACCEPT_TIMEOUT)
        self.port = int(self.listener.getsockname()[1])
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> Relay:
        self.thread.start()
        return self

    def environment(self) -> tuple[tuple[str, str], ...]:
        """What the rank's PMI client needs to find the relay instead of PMI_FD."""
        return (("PMI_PORT", f"127.0.0.1:{self.port}"), ("PMI_ID", str(self.rank)))

    def close(self) -> None:
        for sock in (self.listener, self.server):
            with contextlib.suppress(OSError):
                sock.close()

    def _serve(self) -> None:
        try:
            rank, _ = self.listener.accept()
        except OSError as e:
            log.warning("%s: rank %d never reached the PMI relay: %s", self.node, self.rank, e)
            return
        with rank:
            first = _line(rank)
            if not first.startswith(b"cmd=initack"):
                log.warning("%s: rank %d: unexpected PMI start %r", self.node, self.rank, first)
                return
            rank.sendall(handshake(self.rank, self.size))
            up = threading.Thread(target=_pump, args=(rank, self.server), daemon=True)
            up.start()
            _pump(self.server, rank)


def _line(sock: socket.socket) -> bytes:
    """One line, read a byte at a time: nothing after it may be taken from the stream."""
    got = bytearray()
    while not got.endswith(b"\n") and len(got) < 1024:
        byte = sock.recv(1)
        if not byte:
            break
        got += byte
    return bytes(got)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(CHUNK):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
