"""An incremental Server-Sent Events parser (the WHATWG event-stream format): bytes in, events out.

Chunks may split lines and even UTF-8 characters anywhere, so bytes are buffered until a line
is complete; a blank line dispatches the event. Comment lines (``: keep-alive``) are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServerEvent:
    event: str
    data: str
    id: str | None = None


@dataclass
class SseParser:
    _buffer: bytes = b""
    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _id: str | None = None

    def feed(self, chunk: bytes) -> list[ServerEvent]:
        self._buffer += chunk
        events: list[ServerEvent] = []
        while True:
            line, found = self._next_line()
            if not found:
                return events
            event = self._line(line)
            if event is not None:
                events.append(event)

    def _next_line(self) -> tuple[str, bool]:
        buf = self._buffer
        ends = [i for i in (buf.find(b"\n"), buf.find(b"\r")) if i >= 0]
        if not ends:
            return "", False
        i = min(ends)
        skip = 1
        if buf[i] == 0x0D:  # \r or \r\n: a \r that ends the buffer may have its \n in the next chunk
            if i + 1 == len(buf):
                return "", False
            skip = 2 if buf[i + 1] == 0x0A else 1
        self._buffer = buf[i + skip :]
        return buf[:i].decode("utf-8", "replace"), True

    def _line(self, line: str) -> ServerEvent | None:
        if line == "":
            if not self._data and not self._event:
                return None
            event = ServerEvent(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None
