"""A stage's progress: a live bar on a terminal, a few lines in a log, and a board training workers post to."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

import ray

from aikd.progress import Poster, Progress, watch


def _lines(capsys) -> list[str]:
    return capsys.readouterr().out.splitlines()


def test_in_a_log_a_stage_prints_a_line_at_each_quarter(capsys):
    with Progress("label", "shards", 8, live=False) as shown:
        for _ in range(8):
            shown.advance(1)
    lines = _lines(capsys)
    assert [line.split(" (")[0] for line in lines] == ["label: 25%", "label: 50%", "label: 75%", "label: 100%"]
    assert "2/8 shards" in lines[0] and "ETA" in lines[0] and "/s" in lines[0]


def test_a_long_stage_also_prints_when_its_period_has_passed(capsys):
    with Progress("score", "faces", 1000, live=False, every_s=0.0) as shown:
        shown.advance(1)
        shown.advance(1, "0/3 files written")
    lines = _lines(capsys)
    assert [line.split(",")[0] for line in lines] == ["score: 0% (1/1000 faces", "score: 0% (2/1000 faces"]
    assert lines[1].endswith(", 0/3 files written")


def test_a_period_without_news_prints_nothing_and_no_rate_means_no_eta(capsys):
    with Progress("distill", "steps", 30, live=False, every_s=0.0) as shown:
        shown.update(0)
        shown.update(0)  # nothing moved: no second line
        shown.update(1)
    lines = _lines(capsys)
    assert len(lines) == 2 and lines[0] == "distill: 0% (0/30 steps, 0/s, ETA unknown)"
    assert lines[1].startswith("distill: 3% (1/30 steps, ")


def test_work_of_unknown_size_counts_without_a_percentage():
    shown = Progress("ingest", "faces", None, live=False)
    shown.update(12)
    assert shown.line().startswith("ingest: 12 faces (")
    shown.close()


def test_on_a_terminal_the_bar_replaces_the_lines(capsys):
    with Progress("synth", "faces", 4, live=True) as shown:
        for _ in range(4):
            shown.advance(1)
    assert _lines(capsys) == []
    assert shown.done == 4 and shown.rate > 0


def test_the_rate_stops_at_the_close():
    import time

    with Progress("evaluate", "faces", 10, live=False) as shown:
        shown.update(10)
    rate = shown.rate
    time.sleep(0.05)
    assert shown.rate == rate  # the stage's rate, however long after it a caller asks


def test_a_worker_posts_to_the_board_and_the_driver_shows_the_last_post(ray_local, capsys):
    @ray.remote(num_cpus=0)
    def train(board) -> None:
        post = Poster(board, every_s=0.0)
        for step in range(1, 21):
            post(step)
        post(20, "best val_pauc_misaligned 0.1885")
        post.flush()

    with watch("distill", "steps", 20, every_s=0.05, live=False) as board:
        ray.get(train.remote(board))
    lines = _lines(capsys)
    assert lines[-1].startswith("distill: 100% (20/20 steps")
    assert lines[-1].endswith("best val_pauc_misaligned 0.1885")


def test_a_flush_posts_what_the_throttle_held_back(ray_local, capsys):
    @ray.remote(num_cpus=0)
    def train(board) -> None:
        post = Poster(board, every_s=3600.0)  # only the first count goes out by itself
        for step in range(1, 21):
            post(step)
        post.flush()

    with watch("fr-train", "steps", 20, every_s=3600.0, live=False) as board:
        ray.get(train.remote(board))
    assert _lines(capsys)[-1].startswith("fr-train: 100% (20/20 steps")


def test_without_a_board_a_worker_posts_nothing():
    Poster(None)(5, "a note")  # a sweep's trial: no board, no error


def _on_a_terminal(args: list[str]) -> tuple[int, str]:
    """Run ``python -m aikd args`` with a pseudo-terminal for its stdout and stderr: what a person sees."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "aikd", *args], stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the terminal closes when the command ends
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return proc.wait(timeout=120), b"".join(chunks).decode(errors="replace")


def test_on_a_terminal_synth_draws_a_live_bar_that_ends_at_the_total(tmp_path):
    code, seen = _on_a_terminal(["synth", "--out", str(tmp_path / "faces"), "--identities", "4",
                                 "--samples-per-identity", "10", "--rows-per-shard", "8"])
    assert code == 0, seen[-2000:]
    assert "\x1b[2K" in seen  # redrawn in place (erase the line, draw it again), not printed line by line
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen)  # the bar as read, colours and cursor moves dropped
    assert re.search(r"synth .* 40/40 faces", text), text[-2000:]
