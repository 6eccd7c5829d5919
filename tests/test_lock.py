"""One writer per output: the lock a label or scoring job holds on its output."""

import json
import socket
import subprocess
import sys
import time

import pytest

from aikd.lock import LOCK_FILE, STALE_S, OutputInUse, output_lock
from aikd.storage import resolve


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _plant(out, **fields):
    record = {"id": "someone", "job": "label", "host": socket.gethostname(), "pid": 1, "since": time.time(),
              "heartbeat": time.time()} | fields
    out.join(LOCK_FILE).write_text(json.dumps(record))


def test_the_lock_is_held_during_the_job_and_gone_after(storage_root):
    out = resolve(storage_root)
    with output_lock(out, "score"):
        assert json.loads(out.join(LOCK_FILE).read_text())["job"] == "score"
    assert not out.join(LOCK_FILE).exists()


def test_a_second_job_on_the_same_output_refuses_naming_the_first(storage_root):
    out = resolve(storage_root)
    with output_lock(out, "label"):
        with pytest.raises(OutputInUse, match=r"being written by another label job .*pid \d+"):
            with output_lock(out, "label"):
                pass
        assert out.join(LOCK_FILE).exists()  # the refused job leaves the owner's lock alone


def test_the_lock_is_released_when_the_job_fails(tmp_path):
    out = resolve(str(tmp_path))
    with pytest.raises(RuntimeError), output_lock(out, "label"):
        raise RuntimeError("boom")
    assert not out.join(LOCK_FILE).exists()


def test_a_killed_jobs_lock_is_taken_over_at_once_on_its_host(storage_root, capsys):
    out = resolve(storage_root)
    _plant(out, pid=_dead_pid())
    with output_lock(out, "label"):
        assert json.loads(out.join(LOCK_FILE).read_text())["id"] != "someone"
    assert "has ended" in capsys.readouterr().out


def test_a_lock_from_another_host_expires_with_its_heartbeat(tmp_path):
    out = resolve(str(tmp_path))
    _plant(out, host="elsewhere", pid=12345)
    with pytest.raises(OutputInUse):
        with output_lock(out, "score"):
            pass
    _plant(out, host="elsewhere", pid=12345, heartbeat=time.time() - STALE_S - 1)
    with output_lock(out, "score"):
        pass


def test_exclusive_create_lets_exactly_one_writer_win(storage_root):
    target = resolve(storage_root).join("once.json")
    assert target.create_exclusive(b"first")
    assert not target.create_exclusive(b"second")
    assert target.read_text() == "first"
