"""An HL7 MLLP listener for tests: hl7apy's ``MLLPServer`` in a process of its own.

The node sends with the ``hl7`` package's asyncio client; the listener is
another library's server, so the framing and the ACK are checked by an
independent implementation.  It keeps every message it receives in a folder
(one file each, in arrival order) and answers AA, or AE (a NAK) to the first
``nak_first`` messages.  Given a certificate, it speaks MLLP over TLS.

Run as ``python -m tests.support.mllp PORT FOLDER NAK_FIRST [CERT KEY]``.
"""

from __future__ import annotations

import itertools
import ssl
import sys
import time
from pathlib import Path
from typing import Self

from .certificates import Identity
from .ports import LOOPBACK, free_port, port_is_open
from .processes import BackgroundProcess, ScopedPeer
from .waiting import wait_until


class MllpListener(ScopedPeer):
    """hl7apy's MLLP server on a free loopback port, as a subprocess stopped by PID.

    Parameters
    ----------
    folder:
        Where received messages are written (``0001.hl7``, ...) and the log.
    nak_first:
        How many of the first messages get a NAK (MSA-1 ``AE``).
    tls:
        The listener's certificate and key: MLLP over TLS when given.
    """

    def __init__(self, folder: Path, nak_first: int = 0, tls: Identity | None = None) -> None:
        self.folder = folder
        self.nak_first = nak_first
        self.tls = tls
        self.port = 0
        self._process: BackgroundProcess | None = None

    def start(self) -> Self:
        """Start the listener and wait until its port accepts connections."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        argv = [sys.executable, "-m", "tests.support.mllp", str(self.port), str(self.folder)]
        identity = [str(self.tls.cert), str(self.tls.key)] if self.tls is not None else []
        self._process = BackgroundProcess(
            [*argv, str(self.nak_first), *identity],
            self.folder / "listener.log",
            cwd=Path(__file__).resolve().parents[2],
        )
        self._process.start()
        wait_until(lambda: port_is_open(LOOPBACK, self.port), message=self._process.log_tail)
        return self

    def teardown(self) -> None:
        """Stop the listener by PID."""
        if self._process is not None:
            self._process.stop()
            self._process = None

    def messages(self) -> list[str]:
        """The messages received so far, in order (segments separated by CR)."""
        return [path.read_bytes().decode() for path in sorted(self.folder.glob("*.hl7"))]


def _serve(port: int, folder: Path, nak_first: int, identity: list[str]) -> None:
    from hl7apy.core import Message
    from hl7apy.mllp import AbstractHandler, MLLPServer
    from hl7apy.parser import parse_message

    counter = itertools.count(1)

    class Handler(AbstractHandler):
        def reply(self) -> str:
            number = next(counter)
            (folder / f"{number:04d}.hl7").write_text(self.incoming_message)
            received = parse_message(self.incoming_message, find_groups=False)
            ack = Message("ACK", version="2.5.1")
            ack.msh.msh_3 = "RIS"
            ack.msh.msh_7 = time.strftime("%Y%m%d%H%M%S")
            ack.msh.msh_9 = "ACK^R01^ACK"
            ack.msh.msh_10 = f"ACK{number}"
            ack.msh.msh_11 = "P"
            ack.msa.msa_1 = "AE" if number <= nak_first else "AA"
            ack.msa.msa_2 = received.msh.msh_10.value
            if number <= nak_first:
                ack.msa.msa_3 = "order not found"
            return ack.to_mllp()

    server = MLLPServer(LOOPBACK, port, {"ORU^R01^ORU_R01": (Handler,)})
    if identity:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*identity)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    _serve(int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4:])
