"""Wakes this process's delivery threads when a committed transaction wrote deliveries.

Only a latency shortcut: the threads also poll (webhook_poll_seconds), which is how they learn
of deliveries another process (a worker) wrote.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_bells: set[threading.Event] = set()


def register() -> threading.Event:
    bell = threading.Event()
    with _lock:
        _bells.add(bell)
    return bell


def unregister(bell: threading.Event) -> None:
    with _lock:
        _bells.discard(bell)


def ring() -> None:
    with _lock:
        bells = list(_bells)
    for bell in bells:
        bell.set()
