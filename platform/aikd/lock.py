"""One writer per output: a lock file under the output prefix, held for the whole job.

Label and scoring jobs resume file by file. Two of them writing one output at once
could pair one job's shard with the other's progress record, so the first job to
create ``_lock.json`` owns the output until it ends and any other refuses with one line
naming the owner. The file is created exclusively (``O_EXCL`` on disk, a conditional
PUT on S3), so two jobs started in the same instant cannot both win.

A crashed job leaves its lock behind; the next job takes it over when the owner is
gone: at once on the same host when the owner's process no longer exists (a rerun
after a killed driver), on any host when the owner's heartbeat, rewritten every
``HEARTBEAT_S``, is older than ``STALE_S``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator

from aikd.errors import AikdError
from aikd.storage import Location

LOCK_FILE = "_lock.json"
HEARTBEAT_S = 15.0
STALE_S = 90.0


class OutputInUse(AikdError):
    """Another job is writing the same output."""


def _owner(job: str) -> dict:
    now = time.time()
    return {"id": uuid.uuid4().hex, "job": job, "host": socket.gethostname(), "pid": os.getpid(),
            "since": now, "heartbeat": now}


def _read(lock: Location) -> dict | None:
    try:
        return json.loads(lock.read_text())
    except FileNotFoundError:
        return None
    except ValueError:  # a torn or foreign file: treat it as a lock without an owner
        return {"id": None, "job": "unknown", "host": None, "pid": None, "since": 0.0, "heartbeat": 0.0}


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def gone_because(record: dict, now: float) -> str | None:
    """Why the lock's owner is gone, or None while it may still be writing."""
    if record.get("host") == socket.gethostname() and record.get("pid") and not _process_exists(record["pid"]):
        return f"its process {record['pid']} on this host has ended"
    age = now - float(record.get("heartbeat") or 0.0)
    if age > STALE_S:
        return f"no heartbeat for {age:.0f} s"
    return None


def _acquire(lock: Location, me: dict) -> None:
    for _ in range(3):
        if lock.create_exclusive(json.dumps(me).encode()):
            return
        record = _read(lock)
        if record is None:  # released between our write and our read: try again
            continue
        if record["id"] == me["id"]:  # our own PUT, retried after its answer was lost
            return
        now = time.time()
        why = gone_because(record, now)
        if why is None:
            raise OutputInUse(
                f"{lock.parent().uri} is being written by another {record['job']} job (pid {record['pid']} on "
                f"{record['host']}, started {now - record['since']:.0f} s ago): wait for it to end, or write "
                f"elsewhere; if that job is dead, delete {lock.uri} or wait {STALE_S:.0f} s for its lock to expire")
        print(f"{me['job']}: taking over {lock.uri} from a {record['job']} job: {why}", flush=True)
        lock.delete()
    raise OutputInUse(f"{lock.uri}: other jobs keep taking this output's lock; run one job at a time")


def _heartbeat(lock: Location, me: dict, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        try:
            record = _read(lock)
            if record is None or record["id"] != me["id"]:
                print(f"{me['job']}: warning: lost {lock.uri} to another job", flush=True)
                return
            lock.write_text(json.dumps(me | {"heartbeat": time.time()}))
        except OSError as err:  # storage hiccup: the next beat tries again
            print(f"{me['job']}: warning: lock heartbeat failed ({err})", flush=True)


@contextlib.contextmanager
def output_lock(out: Location, job: str) -> Iterator[None]:
    """Hold ``out``'s lock for the block; refuse with :class:`OutputInUse` if another job holds it."""
    lock = out.join(LOCK_FILE)
    me = _owner(job)
    _acquire(lock, me)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(lock, me, stop), daemon=True, name="aikd-lock")
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        record = _read(lock)
        if record is not None and record["id"] == me["id"]:
            lock.delete()
