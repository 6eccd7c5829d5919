"""Evaluation scores its faces with the scoring job's actors, and its numbers are the golden report's.

The golden report (``data/one_scoring_path.json``) was written by evaluation's own scorer
before both jobs shared one path. The input is rebuilt here from seeds: 48 synthetic
faces (8 identities) and a few bad rows (an undecodable image, NaN landmarks, an inverted
box, an id repeated in a second shard), an untrained FR backbone and student (of another
input size), and two FIQA models: the student and the ``norm`` teacher.
Regenerate the file (``python tests/evaluate/test_one_scoring_path.py``) only for a
change that is meant to move evaluation's numbers.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from aikd.config import EvaluateConfig, FIQASpec, Resources, ScoreConfig
from aikd.data.schema import IMAGE_ID, SUBJECT_ID
from aikd.data.shards import write_shard
from aikd.data.synth import SYNTH_SCHEMA, SynthConfig, generate_rows
from aikd.evaluate.results import evaluate, reject_counts
from aikd.evaluate.scoring import score_faces
from aikd.models.registry import create_model
from aikd.models.student import create_student
from aikd.models.weights import card_for, save_model
from aikd.score.actors import Aligner, Scorer
from aikd.score.inputs import plan_shards
from aikd.storage import resolve

GOLDEN = Path(__file__).parent / "data" / "one_scoring_path.json"
TOLERANCE = 1e-6
# the numbers compared: what evaluation computes from the scored faces (the file holds its whole results)
COMPARED = ("faces", "rows", "rejected", "reject_reasons", "mated_pairs", "non_mated_pairs", "pauc", "invariance",
            "start_fnmr", "differences", "bootstrap")


def _shards(root: Path) -> str:
    """Two shards: the good faces and three bad rows, then a later row with an id the first shard has."""
    rows = list(generate_rows(SynthConfig(identities=8, samples_per_identity=6, seed=31)))
    x1, y1, x2, y2 = rows[2]["bbox"]
    bad = [rows[0] | {IMAGE_ID: "bad/undecodable", "image": b"not an image"},
           rows[1] | {IMAGE_ID: "bad/nan_landmarks", "landmarks": [float("nan")] * 10},
           rows[2] | {IMAGE_ID: "bad/inverted_box", "bbox": [x2, y1, x1, y2]}]
    repeated = rows[9] | {SUBJECT_ID: "someone-else", "image": rows[20]["image"], "landmarks": rows[20]["landmarks"]}
    out = resolve(str(root / "faces"))
    for name, part in (("part-00000.parquet", rows + bad), ("part-00001.parquet", [repeated])):
        write_shard(out.join(name), pa.Table.from_pylist([{k: r[k] for k in SYNTH_SCHEMA.names} for r in part],
                                                         schema=SYNTH_SCHEMA))
    return out.uri


def _model(path: Path, make, kind: str, seed: int, **args) -> str:
    torch.manual_seed(seed)
    model = make("iresnet_tiny", **args)
    save_model(model, str(path), card_for(model, kind))
    return str(path)


def build(root: Path) -> EvaluateConfig:
    """The golden evaluation's spec, with its inputs written under ``root``."""
    shards = _shards(root)
    fr = _model(root / "fr", create_model, "backbone", seed=0)
    student = _model(root / "student", create_student, "student", seed=1, input_size=48)  # a second crop size
    return EvaluateConfig(
        shards=[shards], out=str(root / "report"), fr_model=fr,
        models=[FIQASpec(name="student", student=student),
                FIQASpec(name="norm", teacher="norm", options={"model": fr})],
        misalignment=[2.0, 5.0], box_margin=0.1, seed=7, fmr=[0.01, 0.1], non_mated=3000, ci_resamples=20,
        compare=[("student", "norm")], resources=Resources(workers=1, cpus_per_worker=1))


def _plain(value):
    """JSON-ready: numpy scalars and arrays as Python numbers and lists, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def report_numbers(cfg: EvaluateConfig) -> dict:
    """Everything evaluation computes from the scored faces, and a summary of the faces themselves."""
    faces, rejects = score_faces(cfg)
    results, _ = evaluate(cfg, faces)
    results |= reject_counts(faces, rejects)
    per_face = {IMAGE_ID: faces[IMAGE_ID], SUBJECT_ID: faces[SUBJECT_ID]}
    for key, values in sorted(faces.items()):
        if key.startswith("q__"):
            per_face[key] = values
        elif key.startswith("emb__"):  # the first dimensions and the sum of each embedding
            per_face[key] = np.concatenate([values[:, :3], values.sum(1, keepdims=True)], axis=1)
    return _plain({"results": results, "rejects": rejects, "faces": per_face})


def differences(got, want, path: str = "") -> list[str]:
    """Where ``got`` differs from ``want``: numbers by more than TOLERANCE, anything else at all."""
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return [f"{path}: keys {sorted(got) if isinstance(got, dict) else got} != {sorted(want)}"]
        return [d for k in want for d in differences(got[k], want[k], f"{path}.{k}")]
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [f"{path}: {got} != {want}"]
        return [d for i, (g, w) in enumerate(zip(got, want, strict=True)) for d in differences(g, w, f"{path}[{i}]")]
    if isinstance(want, float) or isinstance(got, float):
        same = (math.isnan(got) and math.isnan(want)) or abs(got - want) <= TOLERANCE
        return [] if same else [f"{path}: {got} != {want}"]
    return [] if got == want else [f"{path}: {got!r} != {want!r}"]


def _aligned_units(cfg, sizes: list[int]) -> dict:
    """Every unit of ``cfg.shards`` through an Aligner in this process, as one batch."""
    aligner = Aligner(cfg, sizes)
    outs = [aligner({k: [v] for k, v in u.items()}) for f in plan_shards(cfg.shards) for u in f.units]
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def test_scoring_and_evaluation_cut_the_same_aligned_crop_and_reject_by_what_their_views_need(tmp_path):
    evaluation = build(tmp_path)
    scoring = ScoreConfig(shards=evaluation.shards, out=str(tmp_path / "scores"), models=[{"name": "s", "model": "m"}])
    ev, sc = _aligned_units(evaluation, [48]), _aligned_units(scoring, [48])
    assert list(ev["order"]) == list(sc["order"]) == list(range(52))  # plan order
    reasons = dict(zip(ev[IMAGE_ID][ev["reason"] != ""], ev["reason"][ev["reason"] != ""], strict=True))
    assert reasons == {"bad/undecodable": "undecodable image", "bad/nan_landmarks": "non-finite landmarks",
                       "bad/inverted_box": "invalid box", "id00001/0003.jpg": "duplicate image_id"}
    assert sc["reason"][list(sc[IMAGE_ID]).index("bad/inverted_box")] == ""  # scoring's landmarks need no box
    ok = ev["reason"] == ""
    np.testing.assert_array_equal(ev["crop_48__aligned"][ok], sc["crop_48"][ok])
    assert {k for k in ev if k.startswith("crop_")} == {f"crop_48__{c.name}" for c in evaluation.conditions}


def test_a_teacher_where_lower_is_better_is_flipped_and_one_without_images_is_fed_none(tmp_path):
    cfg = build(tmp_path)
    ids = [r[IMAGE_ID] for r in generate_rows(SynthConfig(identities=8, samples_per_identity=6, seed=31))]
    table = {i: float(k) for k, i in enumerate(ids)}
    (tmp_path / "table.csv").write_text("image_id,score\n" + "".join(f"{i},{v}\n" for i, v in table.items()))
    cfg = cfg.model_copy(update={"models": [FIQASpec(name="table", teacher="external", options={
        "table": str(tmp_path / "table.csv"), "higher_is_better": False})]})
    scorer = Scorer(cfg)
    assert scorer.sizes == [64]  # the FR model's input only: the table reads no images
    out = scorer(_aligned_units(cfg, scorer.sizes))
    ok = out["reason"] == ""
    for condition in cfg.conditions:
        q = out[f"q__table__{condition.name}"]
        np.testing.assert_array_equal(q[ok], [-table[i] for i in out[IMAGE_ID][ok]])
        assert np.isnan(q[~ok]).all() and out[f"emb__{condition.name}"].shape == (52, 512)
    assert not any(k.startswith("crop_") for k in out)


@pytest.mark.slow
def test_evaluation_numbers_equal_the_golden_report(ray_local, tmp_path):
    got = json.loads(json.dumps(report_numbers(build(tmp_path))))  # as the file holds them
    want = json.loads(GOLDEN.read_text())
    assert got["results"]["faces"] == 48 and got["results"]["rejected"] == 4
    for numbers in (got, want):
        numbers["results"] = {k: numbers["results"][k] for k in COMPARED}
    assert differences(got, want) == []


if __name__ == "__main__":  # regenerate the golden report (a local Ray of 2 CPUs)
    import tempfile

    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        numbers = report_numbers(build(Path(tmp)))
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else GOLDEN
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(numbers, indent=1) + "\n")
    print(f"wrote {target}")
