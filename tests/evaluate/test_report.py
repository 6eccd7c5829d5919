"""The evaluation job end to end on synthetic faces: a teacher and a student, every condition."""

import json

import numpy as np
import pytest

from aikd.config import EvaluateConfig, FIQASpec, Resources
from aikd.data.synth import SynthConfig, write_synthetic
from aikd.evaluate.run import run_evaluate
from aikd.models.student import create_student
from aikd.models.weights import card_for, save_model
from aikd.storage import resolve


@pytest.fixture(scope="module")
def report(fr_run, tmp_path_factory):
    cfg_fr, _ = fr_run
    root = tmp_path_factory.mktemp("eval")
    faces = str(root / "faces")
    write_synthetic(faces, SynthConfig(identities=12, samples_per_identity=8, seed=99))
    student = create_student("iresnet_tiny")
    save_model(student, str(root / "student"), card_for(student, "student"))
    cfg = EvaluateConfig(shards=[faces], out=str(root / "report"), fr_model=cfg_fr.out,
                         models=[FIQASpec(name="norm", teacher="norm", options={"model": cfg_fr.out}),
                                 FIQASpec(name="student", student=str(root / "student"))],
                         misalignment=[3.0], fmr=[1e-2], non_mated=5000,
                         ci_resamples=200, compare=[("student", "norm")],
                         resources=Resources(workers=2, cpus_per_worker=0.5))
    return cfg, run_evaluate(cfg)


def test_report_renders_pngs_and_an_html_page_that_references_them(report):
    cfg, result = report
    out = resolve(cfg.out)
    page = out.join("index.html").read_text()
    for condition in ("aligned", "misaligned_3", "box"):
        png = out.join(f"edc_{condition}_fmr0.01.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
        assert f'src="edc_{condition}_fmr0.01.png"' in page
    table = out.join("pauc.md").read_text()
    assert "| norm | misaligned_3 |" in table and "| student | box |" in table


def test_report_numbers_are_consistent(report):
    cfg, result = report
    data = json.loads(resolve(cfg.out).join("report.json").read_text())
    assert data["faces"] == 96 and data["mated_pairs"] == 12 * 28 and data["non_mated_pairs"] == 5000
    assert {r["condition"] for r in data["pauc"]} == {"aligned", "misaligned_3", "box"}
    for row in data["pauc"]:
        assert 0 <= row["pauc_0.2"] <= row["pauc_0.3"] <= 0.3
        assert row["pauc_0.2_minus_best"] <= row["pauc_0.2"]
    starts = {r["condition"]: r["start_fnmr"] for r in data["pauc"]}
    assert starts["misaligned_3"] >= starts["aligned"]  # misalignment hurts recognition
    inv = {(r["model"], r["condition"]): r["spearman_vs_aligned"] for r in data["invariance"]}
    assert set(inv) == {("norm", "misaligned_3"), ("norm", "box"), ("student", "misaligned_3"), ("student", "box")}
    assert all(np.isfinite(v) for v in inv.values())


def test_every_pauc_has_an_interval_and_compared_models_a_verdict(report):
    cfg, _ = report
    out = resolve(cfg.out)
    data = json.loads(out.join("report.json").read_text())
    assert data["bootstrap"] == {"resamples": 200, "unit": "identity", "identities": 12, "level": 0.95}
    inside = 0
    for row in data["pauc"]:
        lo, hi = row["pauc_0.2_ci"]
        assert 0 <= lo <= hi <= 0.2
        inside += lo <= row["pauc_0.2"] <= hi
    assert inside >= 0.8 * len(data["pauc"])  # a percentile interval need not hold the estimate, but mostly does
    diffs = data["differences"]
    assert {(d["condition"], d["limit"]) for d in diffs} == {(c, lim) for c in ("aligned", "misaligned_3", "box")
                                                             for lim in (0.2, 0.3)}
    for d in diffs:
        assert (d["a"], d["b"]) == ("student", "norm") and d["low"] <= d["high"]
        assert d["verdict"] in ("better", "worse", "no detectable difference")
    page = out.join("index.html").read_text()
    assert "200 resamples of the 12 identities" in page and diffs[0]["verdict"] in page
    assert "| student | norm | aligned | 0.01 | 0.2 |" in out.join("pauc.md").read_text()


@pytest.mark.parametrize("change, message", [
    ({"compare": [("student", "nobody")]}, "'nobody' is not a model name"),
    ({"compare": [("student", "student")]}, "compares a model with itself"),
    ({"compare": [("student", "norm")], "ci_resamples": 0}, "compare needs intervals"),
    ({"mode": "reestimated"}, "intervals are computed for mode: fixed"),
])
def test_comparisons_are_checked_against_the_spec(change, message):
    spec = {"shards": ["x"], "out": "y", "fr_model": "m", "models": [
        {"name": "norm", "teacher": "norm"}, {"name": "student", "student": "s"}]} | change
    with pytest.raises(ValueError, match=message):
        EvaluateConfig(**spec)


def test_model_specs_need_exactly_one_source():
    with pytest.raises(ValueError, match="exactly one of 'teacher' or 'student'"):
        FIQASpec(name="x")
