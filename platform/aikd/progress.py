"""Progress of a stage's long work: a live bar for a person, a few lines for a log.

On a terminal (stderr is one) a rich bar shows the count, rate and ETA as the work goes.
Anywhere else (a pipe, a file, the log of a ``ray job submit`` run) the same facts come as
one line each time a quarter of the work is done, and at least every ``every_s`` seconds
of a long stage (60 unless ``AIKD_PROGRESS_EVERY_S`` says otherwise), so a short stage's
log holds four lines and a long one's a line a minute.

Training runs on Ray Train workers, whose output reaches the driver only as log lines.
Their rank 0 posts its step to a :class:`Board` (a small Ray actor the driver made), and
the driver :func:`watch`-es the board into a :class:`Progress`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import ray
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

from aikd.console import say, terminal

QUARTERS = (0.25, 0.5, 0.75, 1.0)
EVERY_ENV = "AIKD_PROGRESS_EVERY_S"


def default_every_s() -> float:
    """Most seconds between two progress lines in a log: ``AIKD_PROGRESS_EVERY_S``, else 60."""
    return float(os.environ.get(EVERY_ENV, "60"))


class Progress:
    """``done`` of ``total`` ``unit`` of one stage; ``note`` is shown beside them (the best metric so far)."""

    def __init__(self, stage: str, unit: str, total: int | None, *, live: bool | None = None,
                 every_s: float | None = None):
        self.stage, self.unit, self.total = stage, unit, total
        self.every_s = default_every_s() if every_s is None else every_s
        self.done, self.note, self.end = 0, "", None
        self.last_said: tuple[int, str] | None = None
        self.start = self.last_line = time.perf_counter()
        self.lines_due = list(QUARTERS)
        live = terminal().isatty() if live is None else live
        self._bar = self._task = None
        if live:
            columns = (TextColumn(f"{stage}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
                       TimeRemainingColumn(), TextColumn("{task.fields[note]}"))
            self._bar = RichProgress(*columns, console=Console(file=terminal()), transient=True)
            self._bar.start()
            self._task = self._bar.add_task(stage, total=total, note="")

    def update(self, done: int, note: str | None = None) -> None:
        """The work done so far (a count, not an increment)."""
        self.done = done
        self.note = self.note if note is None else note
        if self._bar is not None:
            self._bar.update(self._task, completed=done, note=self.note)
            return
        now = time.perf_counter()
        crossed = [q for q in self.lines_due if self.total and done >= q * self.total]
        moved = (done, self.note) != self.last_said  # the same counts again would say nothing new
        if crossed or (moved and now - self.last_line >= self.every_s):
            self.lines_due = [q for q in self.lines_due if q not in crossed]
            self.last_line, self.last_said = now, (done, self.note)
            say(self.line())

    def advance(self, n: int = 1, note: str | None = None) -> None:
        self.update(self.done + n, note)

    @property
    def rate(self) -> float:
        """Units per second from the stage's start to now, or to its close."""
        return self.done / max((self.end or time.perf_counter()) - self.start, 1e-9)

    def line(self) -> str:
        rate = self.rate
        if self.total:
            eta = f"ETA {(self.total - self.done) / rate:.0f} s" if rate > 0 else "ETA unknown"
            head = f"{self.done / self.total:.0%} ({self.done}/{self.total} {self.unit}, {rate:.3g}/s, {eta})"
        else:
            head = f"{self.done} {self.unit} ({rate:.3g}/s)"
        return f"{self.stage}: {head}" + (f", {self.note}" if self.note else "")

    def close(self) -> None:
        self.end = self.end or time.perf_counter()
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@ray.remote(num_cpus=0)
class Board:
    """Where a training worker posts its progress for the driver to show: the latest post wins."""

    def __init__(self):
        self.state: tuple[int, str | None] = (0, None)

    def post(self, done: int, note: str | None = None) -> None:
        self.state = (done, note if note is not None else self.state[1])

    def read(self) -> tuple[int, str | None]:
        return self.state


class Poster:
    """A worker's side of a board: posts at most every ``every_s`` seconds, a new note at once, never waits.
    Nothing happens when the job made no board (a sweep's trial shows its progress another way). A worker
    calls :meth:`flush` when its loop ends, so the driver's last read of the board shows where it ended."""

    def __init__(self, board, every_s: float = 0.5):
        self.board, self.every_s, self.last = board, every_s, float("-inf")
        self.held: int | None = None  # a count the throttle held back
        self.sent = None  # the last post on its way

    def __call__(self, done: int, note: str | None = None) -> None:
        if self.board is None:
            return
        now = time.perf_counter()
        if note is not None or now - self.last >= self.every_s:
            self.last, self.held = now, None
            self.sent = self.board.post.remote(done, note)
        else:
            self.held = done

    def flush(self, timeout_s: float = 10.0) -> None:
        """Post what the throttle held back, and wait until the board has the last post (posts from a worker and
        the driver's reads are not ordered otherwise)."""
        if self.board is None:
            return
        if self.held is not None:
            self.sent, self.held = self.board.post.remote(self.held, None), None
        if self.sent is not None:
            try:
                ray.get(self.sent, timeout=timeout_s)
            except Exception:  # a board that cannot answer costs the display, never the job
                pass


@contextmanager
def watch(stage: str, unit: str, total: int, every_s: float = 1.0, **kwargs) -> Iterator:
    """A :class:`Board` for the workers (pass it in their config), shown as a :class:`Progress` while the
    block runs; it is read once more at the end, so the last post is shown."""
    board = Board.remote()
    stop = threading.Event()

    with Progress(stage, unit, total, **kwargs) as shown:
        def refresh() -> None:
            try:
                shown.update(*ray.get(board.read.remote(), timeout=10))
            except Exception:  # a board that cannot answer costs the display, never the job
                pass

        def poll() -> None:
            while not stop.wait(every_s):
                refresh()

        thread = threading.Thread(target=poll, name=f"{stage}-progress", daemon=True)
        thread.start()
        try:
            yield board
        finally:
            stop.set()
            thread.join()
            refresh()
            ray.kill(board)
