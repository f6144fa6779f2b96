"""Child processes of ``unlearn-service run``: they die with it, and a crashed worker restarts.

* Each child asks the kernel (``PR_SET_PDEATHSIG``) to be killed when its parent dies, so even a
  SIGKILL of the supervisor leaves no orphan holding the port or a job lease.
* Children run in sessions of their own, so a terminal's Ctrl-C reaches only the supervisor,
  which forwards it exactly once (a second SIGINT would make Celery skip its warm shutdown).
* A worker that exits on its own is started again, with a growing delay if it keeps crashing; the
  API is the service's face, so if it exits the supervisor stops everything and exits non-zero.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

PR_SET_PDEATHSIG = 1
# A child that outlived this many seconds is healthy: its next crash restarts it at once again.
HEALTHY_AFTER_SECONDS = 60.0
MAX_RESTART_DELAY_SECONDS = 30.0


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    def preexec() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # The parent may have died between fork and prctl: then nobody would signal us.
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


@dataclass
class Child:
    name: str
    argv: list[str]
    restart: bool
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    crashes: int = 0
    next_start: float = 0.0

    def start(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            self.argv, env=env, start_new_session=True, preexec_fn=_die_with_parent(os.getpid())
        )
        self.started_at = time.monotonic()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Supervisor:
    children: list[Child]
    env: dict[str, str]
    log: Callable[[str], None]
    stopping: bool = field(default=False, init=False)

    def run(self) -> int:
        """Start the children, watch them until a signal or the API's exit; returns an exit code."""
        for child in self.children:
            child.start(self.env)
        signal.signal(signal.SIGINT, self._forward)
        signal.signal(signal.SIGTERM, self._forward)
        try:
            return self._watch()
        finally:
            self._stop_all()

    def _forward(self, signum: int, _frame: object) -> None:
        self.stopping = True
        for child in self.children:
            if child.running():
                assert child.proc is not None
                child.proc.send_signal(signum)

    def _watch(self) -> int:
        while not self.stopping:
            now = time.monotonic()
            for child in self.children:
                if child.proc is None:
                    if now >= child.next_start:
                        self.log(f"restarting {child.name}")
                        child.start(self.env)
                    continue
                code = child.proc.poll()
                if code is None or self.stopping:
                    continue
                if not child.restart:
                    self.log(f"{child.name} exited ({code}); stopping")
                    return 1
                healthy = now - child.started_at >= HEALTHY_AFTER_SECONDS
                child.crashes = 0 if healthy else child.crashes + 1
                delay = min(MAX_RESTART_DELAY_SECONDS, 0.5 * 2**child.crashes) if child.crashes else 0.0
                self.log(f"{child.name} exited ({code}); restarting in {delay:.1f} s")
                child.proc, child.next_start = None, now + delay
            time.sleep(0.2)
        return 0

    def _stop_all(self) -> None:
        for child in self.children:
            if child.running():
                assert child.proc is not None
                child.proc.terminate()
        deadline = time.monotonic() + 20
        for child in self.children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
