"""Raw HTTP/1.1 over a socket, for requests no polite client sends: bodies streamed piece by piece
until the server answers, and the server process's memory as the kernel reports it."""

from __future__ import annotations

import http.client
import select
import socket
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int  # body bytes written before the server answered (or the body ended)


def stream_request(port: int, method: str, path: str, headers: dict[str, str], chunks: Iterable[bytes], *,
                   chunked: bool, timeout: float = 60.0) -> RawResponse:
    """Send `chunks` as the body, stopping as soon as the server answers; then read the answer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        sent = 0
        finished = True
        for chunk in filter(None, chunks):  # an empty chunk would end a chunked body
            if select.select([sock], [], [], 0)[0]:
                finished = False
                break
            try:
                sock.sendall(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            except (BrokenPipeError, ConnectionResetError):
                finished = False
                break
            sent += len(chunk)
        if finished and chunked:
            sock.sendall(b"0\r\n\r\n")
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        body = response.read()
        return RawResponse(response.status, {k.lower(): v for k, v in response.getheaders()}, body, sent)
    finally:
        sock.close()


def repeat(piece: bytes, total: int, head: bytes = b"", tail: bytes = b"") -> Iterable[bytes]:
    """`head`, then `piece` repeated to about `total` bytes, then `tail`."""
    yield head
    for _ in range(total // len(piece)):
        yield piece
    yield tail


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident set) of a process, in KiB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def reset_peak(pid: int) -> None:
    """Start VmHWM afresh from the current resident set (Linux: writing 5 to clear_refs)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
