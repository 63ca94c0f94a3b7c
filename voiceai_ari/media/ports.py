"""The UDP port range calls take their RTP ports from."""

from __future__ import annotations


class PortPool:
    """The configured UDP port range, handed out round-robin; a port is in use until released."""

    def __init__(self, ports: range) -> None:
        self._ports = ports
        self._free = list(ports)
        self._used: set[int] = set()

    def take(self) -> int:
        if not self._free:
            raise RuntimeError(f"no free RTP port in {self._ports.start}-{self._ports.stop - 1}")
        port = self._free.pop(0)
        self._used.add(port)
        return port

    def release(self, port: int) -> None:
        if port in self._used:
            self._used.remove(port)
            self._free.append(port)

    @property
    def in_use(self) -> int:
        return len(self._used)
