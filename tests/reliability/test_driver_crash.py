"""Drivers killed mid-run, and two jobs on one output: label and scoring end with every id exactly once.

Each job runs on S3 behind the fault-injecting proxy. Its driver is SIGKILLed three
times at three different points, each time started again:

1. once it holds the output's lock, and a twin job started on the same output while it
   runs has refused (one line, exit status 2);
2. as soon as its first output file is complete;
3. after two more output files.

The fourth start runs to the end.
"""

import json
import re

import numpy as np
import pyarrow.compute as pc
import pytest
from harness import BUCKET, delta, s3_keys

from aikd.config import LabelConfig, Resources, TeacherSpec
from aikd.data.shards import read_shards
from aikd.label.run import run_label
from aikd.lock import LOCK_FILE
from aikd.score.run import read_scores
from aikd.storage import resolve
from console_check import noise  # beside the suite's conftest

ONE = {"workers": 1, "cpus_per_worker": 1.0}


def _count(s3_server, prefix: str) -> int:
    return len(s3_keys(s3_server, prefix))


def crash_three_times(start, s3_server, out_key: str, done_dir: str) -> tuple[list, object, str]:
    """Start, kill, start again at the three points, then run out: (killed jobs, the twin, the final output)."""
    killed = []
    job = start()
    job.until(lambda: _count(s3_server, f"{out_key}/{LOCK_FILE}") == 1)
    twin = start()  # the same job on the same output, while the first holds it
    twin.finish(300)
    job.kill_driver()
    killed.append(job)
    for more in (1, 2):
        before = _count(s3_server, f"{out_key}/{done_dir}/")
        job = start()
        job.until(lambda n=before + more: _count(s3_server, f"{out_key}/{done_dir}/") >= n, timeout=300)
        job.kill_driver()
        killed.append(job)
    return killed, twin, start().succeed()


@pytest.fixture(scope="module")
def labelled(faces, fr_run, run_job, proxy, s3_server):
    shards, _, _ = faces
    cfg_fr, _ = fr_run
    out_key = "reliability/labelled"
    spec = {"job": "label", "shards": [shards], "out": f"s3://{BUCKET}/{out_key}", "batch_size": 8,
            "resources": ONE, "teachers": [{"name": "norm", "options": {"model": cfg_fr.out}}]}
    before = proxy.figures()
    killed, twin, last = crash_three_times(lambda: run_job(["label"], spec), s3_server, out_key, "_progress")
    return spec, killed, twin, delta(before, proxy.figures(), "label, 4 starts (3 killed) + a refused twin"), last


@pytest.fixture(scope="module")
def scored(faces, worker_loss_run, run_job, proxy, s3_server):
    shards, _, _ = faces
    out_key = "reliability/scores"
    spec = {"job": "score", "shards": [shards], "out": f"s3://{BUCKET}/{out_key}", "batch_size": 8,
            "models": [{"name": "student", "model": f"s3://{BUCKET}/reliability/runs/worker-loss/best"}],
            "decode": {"workers": 1, "cpus_per_worker": 0.5}, "resources": ONE}
    before = proxy.figures()
    killed, twin, last = crash_three_times(lambda: run_job(["score"], spec), s3_server, out_key, "_manifest")
    return spec, killed, twin, delta(before, proxy.figures(), "score, 4 starts (3 killed) + a refused twin"), last


def test_label_killed_three_times_ends_with_every_face_labelled_exactly_once(labelled, faces):
    spec, killed, *_ = labelled
    _, ids, _ = faces
    table = read_shards(spec["out"], labels=("q_norm",))
    assert sorted(table["image_id"].to_pylist()) == ids  # none lost, none twice
    summary = json.loads(resolve(spec["out"]).join("_summary.json").read_text())
    counts = summary["counts"]
    assert counts["rows"] == len(ids) and counts["rejected"] == 0 and counts["resumed_shards"] > 0
    assert len(killed) == 3 and not resolve(spec["out"]).join(LOCK_FILE).exists()


def test_label_through_faults_and_crashes_equals_an_undisturbed_run(labelled, faces, ray_local, tmp_path):
    spec, _, _, traffic, _ = labelled
    cfg = LabelConfig(shards=[faces[0]], out=str(tmp_path / "ref"), resources=Resources(workers=1),
                      teachers=[TeacherSpec(name="norm", options=spec["teachers"][0]["options"])])
    run_label(cfg)
    got = read_shards(spec["out"], labels=("q_norm",)).sort_by("image_id")
    want = read_shards(cfg.out, labels=("q_norm",)).sort_by("image_id")
    assert got["image_id"].equals(want["image_id"])
    np.testing.assert_allclose(got["q_norm"].to_numpy(), want["q_norm"].to_numpy(), rtol=1e-5)
    assert traffic["faults"] > 0


def test_scoring_killed_three_times_ends_with_every_face_scored_exactly_once(scored, faces):
    spec, killed, _, traffic, _ = scored
    _, ids, _ = faces
    scores = read_scores(spec["out"])
    assert sorted(scores["image_id"].to_pylist()) == ids
    assert pc.all(pc.is_finite(scores["quality"])).as_py()
    summary = json.loads(resolve(spec["out"]).join("_summary.json").read_text())
    counts = summary["counts"]
    assert counts["rows_scored"] == len(ids) and counts["files"] == 8
    assert counts["files_done_before"] > 0  # the last start skipped what the killed ones had written
    assert len(killed) == 3 and traffic["faults"] > 0


@pytest.mark.parametrize("which", ["labelled", "scored"])
def test_a_second_job_on_the_same_output_refuses_in_one_line(which, request):
    _, _, twin, *_ = request.getfixturevalue(which)
    assert twin.proc.returncode == 2
    lines = [line for line in twin.lines if "being written by another" in line]
    assert len(lines) == 1 and ": error: " in lines[0], twin.output[-2000:]
    assert "Traceback" not in twin.output


# what the last start had left to do, and the progress line it prints about it
LEFT = {"labelled": ("resumed_shards", "shards", r"^label: \d+% \(\d+/\d+ shards, .*/s, ETA \d+ s\)$"),
        "scored": ("files_done_before", "files", r"^score: \d+% \(\d+/\d+ faces, .*/s, ETA \d+ s\), \d+/\d+ files")}


@pytest.mark.parametrize("which", ["labelled", "scored"])
def test_the_last_start_prints_its_start_progress_and_result_lines_and_none_of_rays(which, request):
    spec, *_, last = request.getfixturevalue(which)
    kind = spec["job"]
    assert f"{kind}: started, writing {spec['out']}" in last and f"{kind}: done in " in last, last[-3000:]
    assert f"summary: {spec['out']}/_summary.json" in last and "ray: its own output is in " in last
    done_before, files, progress_line = LEFT[which]
    counts = json.loads(resolve(spec["out"]).join("_summary.json").read_text())["counts"]
    assert counts[done_before] < counts[files]  # the three kills left it work, so it showed its progress
    assert re.search(progress_line, last, re.M), last[-3000:]
    assert not noise(last), noise(last)
