"""A loopback TCP relay that records what a client sends: what an eavesdropper on the path sees.

Each byte from the client is recorded before it is forwarded, so once the client has the
server's answer to a command, the command is in :attr:`Wiretap.client_bytes`.
"""

from __future__ import annotations

import socket
import threading


class Wiretap:
    """Listens on a free loopback port and relays every connection to ``upstream``."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self._listener.getsockname()[:2]
        self._lock = threading.Lock()
        self._sent = bytearray()
        self.connections = 0
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    @property
    def client_bytes(self) -> bytes:
        """Everything clients sent so far, every connection in order."""
        with self._lock:
            return bytes(self._sent)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(self.upstream)
            with self._lock:
                self.connections += 1
                self._sockets += [client, server]
            for src, dst, record in ((client, server, True), (server, client, False)):
                thread = threading.Thread(target=self._pump, args=(src, dst, record), daemon=True)
                thread.start()
                self._threads.append(thread)

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while chunk := src.recv(65536):
                if record:
                    with self._lock:
                        self._sent += chunk
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        """Stop listening and end every relayed connection."""
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self._accepting.join()
        for thread in self._threads:
            thread.join()
