"""A fault-injecting HTTP/1.1 relay for SDK tests: it stands between the client and the real
server and breaks chosen exchanges the way networks do.

- ``Drop()``: the request reaches the server, the answer never reaches the client (the connection
  closes first): the case an Idempotency-Key exists for.
- ``Cut(after)``: the answer's head and its first ``after`` body bytes arrive, then the
  connection breaks: an interrupted download.
- ``Corrupt(at)``: one byte of the answer's body arrives changed: a bad disk or a bad cache.
- ``Answer(status, headers)``: the relay answers itself (a gateway's 503, a 429); the server never
  sees the request.

Every request is recorded (``seen``). The relay asks the server to close each connection after its
answer (``Connection: close``), so one connection carries one exchange and the rules see them all.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Drop:
    pass


@dataclass(frozen=True)
class Cut:
    after: int


@dataclass(frozen=True)
class Corrupt:
    at: int  # the body byte to flip


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, object] | None = None


Fault = Drop | Cut | Corrupt | Answer


@dataclass
class Rule:
    method: str
    path: re.Pattern[str]
    fault: Fault
    times: int


@dataclass(frozen=True)
class Exchange:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes


_REASONS = {429: "Too Many Requests", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


def _read_until(sock: socket.socket, buf: bytes, marker: bytes) -> tuple[bytes, bytes] | None:
    while marker not in buf:
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
    end = buf.index(marker) + len(marker)
    return buf[:end], buf[end:]


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.seen: list[Exchange] = []
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def add(self, method: str, path_pattern: str, fault: Fault, times: int = 1) -> None:
        """Apply ``fault`` to the next ``times`` requests whose path matches the regex."""
        with self._lock:
            self._rules.append(Rule(method, re.compile(path_pattern), fault, times))

    def requests(self, method: str, path_pattern: str) -> list[Exchange]:
        pattern = re.compile(path_pattern)
        with self._lock:
            return [e for e in self.seen if e.method == method and pattern.search(e.path)]

    def close(self) -> None:
        self._listener.close()

    # -- the relay --------------------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for rule in self._rules:
                if rule.times > 0 and rule.method == method and rule.path.search(path):
                    rule.times -= 1
                    return rule.fault
        return None

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            parts = _read_until(conn, b"", b"\r\n\r\n")
            if parts is None:
                return
            head, rest = parts
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            assert "chunked" not in headers.get("transfer-encoding", ""), "the relay reads sized bodies only"
            length = int(headers.get("content-length", "0"))
            body = rest
            while len(body) < length:
                data = conn.recv(65536)
                if not data:
                    return
                body += data
            path = target.split("?", 1)[0]
            with self._lock:
                self.seen.append(Exchange(method, target, headers, body))
            fault = self._take(method, path)
            if isinstance(fault, Answer):
                conn.sendall(self._answer(fault))
                return
            self._relay(conn, lines, body, fault)

    @staticmethod
    def _answer(fault: Answer) -> bytes:
        body = json.dumps(fault.body or {"type": "about:blank", "title": _REASONS.get(fault.status, "Error"),
                                         "status": fault.status}).encode()  # fmt: skip
        head = [f"HTTP/1.1 {fault.status} {_REASONS.get(fault.status, 'Error')}"]
        head += [f"{k}: {v}" for k, v in fault.headers.items()]
        head += [
            "Content-Type: application/problem+json",
            f"Content-Length: {len(body)}",
            "Connection: close",
        ]
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body

    def _relay(self, conn: socket.socket, lines: list[str], body: bytes, fault: Fault | None) -> None:
        kept = [
            line for line in lines[1:] if line and not line.lower().startswith(("connection:", "keep-alive:"))
        ]
        head = "\r\n".join([lines[0], *kept, "Connection: close"]) + "\r\n\r\n"
        with socket.create_connection(self.upstream) as upstream:
            upstream.sendall(head.encode("latin-1") + body)
            if isinstance(fault, Drop):
                while upstream.recv(65536):  # let the server finish; the client gets nothing
                    pass
                return
            parts = _read_until(upstream, b"", b"\r\n\r\n")
            if parts is None:
                return
            answer_head, received = parts
            budget = fault.after if isinstance(fault, Cut) else None
            flip = fault.at if isinstance(fault, Corrupt) else None
            offset = 0  # of ``received`` in the answer's body
            conn.sendall(answer_head)
            while True:
                if budget is not None:
                    received, budget = received[:budget], budget - len(received[:budget])
                if flip is not None and offset <= flip < offset + len(received):
                    i = flip - offset
                    received = received[:i] + bytes([received[i] ^ 0xFF]) + received[i + 1 :]
                if received:
                    conn.sendall(received)
                    offset += len(received)
                if budget == 0:
                    return  # cut: the client's connection closes mid-body
                received = upstream.recv(65536)
                if not received:
                    return
