"""The experiment spec and its tables: seed-averaged paired differences with intervals."""

import numpy as np
import pytest

from aikd.config import ExperimentConfig
from aikd.experiment.results import markdown, run_name, summarise, teacher_model
from aikd.experiment.run import distill_spec
from aikd.spec import load_spec


def _cfg(**fields) -> ExperimentConfig:
    return ExperimentConfig(**({"name": "x", "root": "/tmp/x", "default": {"root": "/tmp/d"}, "seeds": [0, 1],
                                "teachers": ["norm"], "fmr": [1e-2], "variants": {"ai-kd": {}, "plain-kd": {
                                    "data.misalignment": 0.0, "objective.consistency_weight": 0.0}}} | fields))


def test_each_run_is_the_default_distillation_with_its_teacher_variant_and_seed():
    cfg = _cfg(distill={"epochs": 3})
    spec = distill_spec(cfg, "norm", cfg.variants["plain-kd"], 7, run_name("norm", "plain-kd", 7))
    assert (spec.name, spec.data.label, spec.data.seed, spec.epochs) == ("norm-plain-kd-s7", "q_norm", 7, 3)
    assert spec.data.misalignment == 0.0 and spec.objective.consistency_weight == 0.0
    assert spec.student.weights == "/tmp/d/fr_model" and spec.register is None


def test_the_shipped_experiment_validates():
    cfg = load_spec("experiments/claim.yaml", ExperimentConfig, {})
    assert cfg.teachers == ["serfiq", "crfiqa", "norm"] and len(cfg.seeds) >= 3
    assert {"ai-kd", "shared-target", "no-consistency", "plain-kd"} <= set(cfg.variants) and cfg.sweep


@pytest.mark.parametrize("fields, message", [
    ({"teachers": ["diffiqa"]}, "not labelled by the default"),
    ({"sweep": {"teacher": "norm"}, "variants": {"sweep-best": {}}}, "sweep-best is the sweep's"),
])
def test_bad_experiments_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        _cfg(**fields)


def test_the_difference_is_averaged_over_seeds_resample_by_resample():
    cfg = _cfg()
    t, a0, a1 = teacher_model("norm"), run_name("norm", "ai-kd", 0), run_name("norm", "ai-kd", 1)
    p0, p1 = run_name("norm", "plain-kd", 0), run_name("norm", "plain-kd", 1)
    rng = np.random.default_rng(0)
    base = rng.normal(0.10, 0.01, 500)  # what all models share on a resample (the identities drawn)
    samples = {(t, "aligned", 1e-2, 0.2): base,
               (a0, "aligned", 1e-2, 0.2): base - 0.020 + rng.normal(0, 0.002, 500),  # clearly better
               (a1, "aligned", 1e-2, 0.2): base - 0.010 + rng.normal(0, 0.002, 500),
               (p0, "aligned", 1e-2, 0.2): base + rng.normal(0, 0.002, 500),  # the same as the teacher
               (p1, "aligned", 1e-2, 0.2): base + rng.normal(0, 0.002, 500)}
    report = {"conditions": ["aligned"], "pauc": [
        {"model": m, "condition": "aligned", "fmr": 1e-2, "pauc_0.2": float(np.mean(v))}
        for (m, *_), v in samples.items()]}
    rows = summarise(cfg, ["ai-kd", "plain-kd"], report, samples)
    ai, plain = rows
    assert ai["difference"] == pytest.approx(-0.015, abs=0.001) and ai["verdict"] == "better"
    assert ai["low"] < ai["difference"] < ai["high"] < 0
    assert ai["seed_range"][0] == pytest.approx(-0.020, abs=0.001)
    assert plain["verdict"] == "no detectable difference" and plain["low"] < 0 < plain["high"]
    table = markdown({"rows": rows, "seeds": [0, 1], "teachers": ["norm"], "variants": ["ai-kd", "plain-kd"],
                      "bootstrap": {"level": 0.95, "resamples": 500, "identities": 100}})
    assert "| norm | ai-kd | -0.0150" in table and "**better**" in table


def _row(variant: str, condition: str, fmr: float, difference: float, low: float, high: float, verdict: str) -> dict:
    return {"teacher": "norm", "variant": variant, "condition": condition, "fmr": fmr, "limit": 0.2,
            "difference": difference, "low": low, "high": high, "verdict": verdict}


# the cells and formats the tables have always had (signed 4 decimals, verdict marks, FMR ascending); only the
# separator rows now span the column widths
EXPECTED_TABLES = """\
Student minus teacher in pAUC@0.2 (lower is better), mean over seeds [0, 1]; in brackets the 95% interval \
from 500 resamples of 100 evaluation identities; a verdict only where the interval excludes 0.

FMR 0.001:

| teacher | variant | aligned | box |
|-----------|-----------|----------------------------|---------------------------------------|
| norm | ai-kd | -0.1000 [-0.2000, +0.0500] | +0.2000 [+0.1000, +0.3000] *worse* |
| norm | plain-kd | +0.0000 [-0.0040, +0.0040] | +0.0000 [-0.0010, +0.0200] **better** |

FMR 0.01:

| teacher | variant | aligned | box |
|-----------|-----------|---------------------------------------|------------------------------------|
| norm | ai-kd | -0.0150 [-0.0200, -0.0100] **better** | +0.0030 [+0.0010, +0.0050] *worse* |
| norm | plain-kd | +0.0000 [-0.0040, +0.0040] | +0.0123 [-0.0010, +0.0200] |
"""


def test_the_markdown_tables_keep_their_columns_values_and_formats():
    same = "no detectable difference"
    rows = [_row("ai-kd", "aligned", 0.01, -0.015, -0.02, -0.01, "better"),
            _row("ai-kd", "box", 0.01, 0.003, 0.001, 0.005, "worse"),
            _row("plain-kd", "aligned", 0.01, 0.0, -0.004, 0.004, same),
            _row("plain-kd", "box", 0.01, 0.01234, -0.001, 0.02, same),
            _row("ai-kd", "aligned", 0.001, -0.1, -0.2, 0.05, same),
            _row("ai-kd", "box", 0.001, 0.2, 0.1, 0.3, "worse"),
            _row("plain-kd", "aligned", 0.001, 0.0, -0.004, 0.004, same),
            _row("plain-kd", "box", 0.001, 0.0, -0.001, 0.02, "better")]
    results = {"rows": rows, "seeds": [0, 1], "teachers": ["norm"], "variants": ["ai-kd", "plain-kd"],
               "bootstrap": {"level": 0.95, "resamples": 500, "identities": 100}}
    assert markdown(results) == EXPECTED_TABLES
