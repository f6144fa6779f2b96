"""Progress display for ``wait`` and ``download``: a rich progress bar on stderr when rich is
installed (the ``cli`` extra), else one plain line per change. rich is imported only when a bar
is asked for, so importing the SDK stays fast and needs nothing beyond httpx and pydantic."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Protocol

from unlearn_client.models import Job


class JobReporter(Protocol):
    def update(self, job: Job) -> None: ...
    def close(self) -> None: ...


class ByteReporter(Protocol):
    def update(self, done: int, total: int | None) -> None: ...
    def close(self) -> None: ...


# What ``progress=`` accepts: False (nothing), True (a bar), or a callback of one's own.
JobProgress = bool | Callable[[Job], None]
ByteProgress = bool | Callable[[int, int | None], None]


def _job_label(job: Job) -> str:
    stage = f" · {job.stage}" if job.stage else ""
    return f"job {job.id} {job.status}{stage}"


class _Silent:
    def update(self, *args: Any) -> None:
        pass

    def close(self) -> None:
        pass


class _Callback:
    def __init__(self, callback: Callable[..., None]) -> None:
        self._callback = callback

    def update(self, *args: Any) -> None:
        self._callback(*args)

    def close(self) -> None:
        pass


class _PlainJob:
    def __init__(self) -> None:
        self._last = ""

    def update(self, job: Job) -> None:
        line = f"{_job_label(job)} {job.progress:.0%}"
        if line != self._last:
            self._last = line
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


class _RichBar:
    """One rich task on stderr; ``advance`` sets the description and the completed share."""

    def __init__(self, description: str, total: float | None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            SpinnerColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        bytes_column = [DownloadColumn()] if total is None or total > 1 else []
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            *bytes_column,
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(description, total=total)

    def set(self, completed: float, total: float | None = None, description: str | None = None) -> None:
        self._progress.update(self._task, completed=completed, total=total, description=description)

    def close(self) -> None:
        self._progress.stop()


class _RichJob:
    def __init__(self) -> None:
        self._bar: _RichBar | None = None

    def update(self, job: Job) -> None:
        if self._bar is None:
            self._bar = _RichBar(_job_label(job), 1.0)
        # A job that succeeded is done, whatever its last progress report said.
        completed = 1.0 if job.status == "succeeded" else job.progress
        self._bar.set(completed, 1.0, _job_label(job))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class _RichBytes:
    def __init__(self, label: str) -> None:
        self._label = label
        self._bar: _RichBar | None = None

    def update(self, done: int, total: int | None) -> None:
        if self._bar is None:
            self._bar = _RichBar(self._label, total)
        self._bar.set(done, total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _have_rich() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def job_reporter(progress: JobProgress) -> JobReporter:
    if callable(progress):
        return _Callback(progress)
    if not progress:
        return _Silent()
    return _RichJob() if _have_rich() else _PlainJob()


def byte_reporter(progress: ByteProgress, label: str) -> ByteReporter:
    if callable(progress):
        return _Callback(progress)
    if not progress:
        return _Silent()
    # Without rich a download shows nothing: a line per chunk would flood the terminal.
    return _RichBytes(label) if _have_rich() else _Silent()
