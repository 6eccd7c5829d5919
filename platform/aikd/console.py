"""What a job prints: aikd's own lines on the console, Ray's output in its session's log files.

Ray forwards every line its workers and actors print to the driver: Ray Data's execution
plans, Ray Train's internals, placement-group cleaners, each prefixed with the process
that printed it. A job's console keeps only aikd's lines (they start with a job kind or
stage name, ``distill: resumed at step 8 ...``) and drops the rest; nothing is lost, since
Ray writes every worker's output to ``<session>/logs`` on its node, and the job prints
that path once. Training workers' step and validation lines stay in those files too: the
driver's progress (:mod:`aikd.progress`) stands for them. Errors still reach the console:
an exception in a worker is raised in the driver, which prints a user error as one line
and a bug with its traceback.

Ray's C++ core also writes to the driver's stderr directly, below Python. Of its lines,
one asks for no action and came with every job: Ray Data puts each actor pool's arguments
in the object store and restarts its actors without limit (aikd's worker-loss guarantees
rest on that), and the core worker flags that once per driver at error level. The driver's
stderr runs through a filter that drops that line alone (:func:`filter_native_stderr`); it
stays in ``<session>/logs/python-core-driver-*.log``, like all the core's lines.

``aikd --verbose`` (or ``AIKD_VERBOSE=1`` in the environment, for ``ray job submit``)
forwards everything, as Ray does by default.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading
from typing import TextIO

VERBOSE_ENV = "AIKD_VERBOSE"
# the first word of every line aikd prints, in a driver or a worker
OURS = re.compile(r"^(fr-train|label|distill|evaluate|score|sweep|experiment|registry|ingest|demo|synth|bootstrap)\b")
# a training worker's line per logged step and per validation: the driver's progress bar stands for them on
# the console, and they stay in the workers' log files (and the metrics in MLflow)
DETAIL = re.compile(r"^(fr-train|distill): (step|validation) ")
# loggers of this driver's libraries -> the level the console shows of them: Ray Data's and Ray's own notes
# (execution plans, "progress bars disabled", the local instance's token authentication) and MLflow's
# database set-up are no news to a user; Ray Data also writes its log to the session's logs folder
QUIET_LOGGERS = {"ray": logging.WARNING, "ray.train": logging.WARNING, "ray.tune": logging.WARNING,
                 "ray.data": logging.ERROR, "ray._private.authentication": logging.ERROR, "mlflow": logging.WARNING}

# the core worker's lines on the driver's stderr that need no action (see the module's note)
NATIVE_NOTED = re.compile(rb"^\[[^\]]*\] core_worker\.cc:\d+: Actor .*has constructor arguments in the object store "
                          rb"and max_restarts > 0")
_terminal: TextIO | None = None  # the process's own stderr once fd 2 runs through the filter


def say(line: str) -> None:
    """Print one line, once. In a Ray Train worker ``print`` is patched to copy each line to Train's logger,
    whose console handler prints it a second time; writing to the stream directly does not go through it."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes")


def ours(line: str) -> bool:
    return OURS.match(line) is not None


def shown(line: str) -> bool:
    """Whether a line forwarded from a Ray process is on the console: aikd's, less the training details."""
    return ours(line) and DETAIL.match(line) is None


def quiet_libraries() -> None:
    """Before Ray starts: the libraries' loggers at the levels above (nothing changes in verbose mode)."""
    if verbose():
        return
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # MLflow sets its level from this when imported
    # Tune's newer console printer writes its experiment table and result paths even when told to be silent
    # (verbose=0); its older one honours the setting, and a sweep prints its own line per trial
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


def quiet_ray(session_dir: str | None) -> None:
    """Once Ray runs: forward only aikd's lines from Ray's processes and say once where the rest is.
    Does nothing in verbose mode."""
    if verbose():
        return
    from ray._private import worker as ray_worker
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    def forward(data: dict) -> None:
        kept = [line for line in data.get("lines", []) if shown(line)]
        if kept:
            ray_worker.print_to_stdstream(data | {"lines": kept}, ignore_prefix=True)

    # Ray's own handler has this name (ray._private.worker.connect); ours takes its place. Should a
    # Ray release rename it, both would print and the console test fails on the doubled lines.
    dispatcher.remove_handler("ray_print_logs")
    dispatcher.remove_handler("aikd_console")
    dispatcher.add_handler("aikd_console", forward)
    quiet_libraries()  # again: Ray's start-up may have configured its loggers
    if session_dir:
        say(f"ray: its own output is in {session_dir}/logs (aikd --verbose shows it here)")


def terminal() -> TextIO:
    """Where live progress bars draw: the process's own stderr, past the filter (a pipe is no terminal)."""
    return _terminal or sys.stderr


def filter_native_stderr() -> None:
    """Run file descriptor 2 through a pipe whose reader forwards every line to the real stderr but the
    :data:`NATIVE_NOTED` ones. Once per process, before Ray starts; nothing in verbose mode. At exit the real
    stderr is put back and what is in the pipe is forwarded first (a traceback printed at exit included)."""
    global _terminal
    if verbose() or _terminal is not None:
        return
    sys.stderr.flush()
    real = os.dup(2)
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)
    _terminal = os.fdopen(os.dup(real), "w", buffering=1, encoding=sys.stderr.encoding, errors="replace")
    reader = threading.Thread(target=_forward_lines, args=(read, real), name="aikd-stderr", daemon=True)
    reader.start()

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(real, 2)  # the pipe's last writer in this process goes: the reader sees its end
        reader.join(timeout=2.0)  # a child still holding the pipe must not hold up the exit

    atexit.register(restore)


def _forward_lines(read: int, real: int) -> None:
    pending = b""
    while chunk := os.read(read, 65536):
        *lines, pending = (pending + chunk).split(b"\n")
        out = b"".join(line + b"\n" for line in lines if not NATIVE_NOTED.match(line))
        if pending and not pending.startswith(b"["):  # a partial line (a prompt) shows now; a core line waits
            out, pending = out + pending, b""
        if out:
            os.write(real, out)
    if pending:
        os.write(real, pending)
    os.close(read)
