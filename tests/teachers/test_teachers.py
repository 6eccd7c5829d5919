"""Teachers on synthetic shards with the small FR model trained once per session (fr_run)."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from mlflow import MlflowClient

from aikd.config import LabelConfig, Resources, TeacherSpec
from aikd.data.shards import read_shards, read_summary
from aikd.errors import ComponentError
from aikd.evaluate.ranks import spearman
from aikd.label.run import rejected, run_label
from aikd.models import create_model
from aikd.teachers import create_teacher, list_teachers
from aikd.teachers.fr_teachers import serfiq_quality


def spearman_t(a, b) -> tuple[float, float]:
    """Rank correlation and its t statistic (n large: |t| > 3.3 is p < 0.001 two-sided)."""
    rho = spearman(a, b)
    return rho, rho * np.sqrt((len(a) - 2) / max(1 - rho**2, 1e-12))


@pytest.fixture(scope="module")
def labelled(labelled_run):
    return labelled_run


def test_every_teacher_writes_a_finite_column(labelled):
    job, summary = labelled
    table = read_shards(job.out, labels=("q_serfiq", "q_crfiqa", "q_norm"))
    assert table.num_rows == summary["counts"]["rows"] == 2000
    for column in ("q_serfiq", "q_norm"):
        assert np.isfinite(table.column(column).to_numpy()).all()
    assert set(summary["teachers"]) == {"serfiq", "crfiqa", "norm"}
    assert all(t["higher_is_better"] for t in summary["teachers"].values())
    assert read_summary(job.out)["teachers"]["norm"]["quantiles"]["q50"] > 0


def test_the_label_job_is_a_tracked_run_with_its_summary_as_metrics(labelled, tracked_in):
    job, summary = labelled
    run = MlflowClient(tracked_in("labelled_run")).get_run(summary["mlflow_run"])
    assert run.data.tags["aikd.job"] == "label" and run.data.tags["aikd.output.shards"] == job.out
    assert run.data.metrics["counts.rows"] == 2000 and run.data.metrics["serfiq.q50"] == summary["teachers"]["serfiq"][
        "quantiles"]["q50"]


def test_crfiqa_reports_identities_its_head_does_not_know(labelled, fr_run):
    job, summary = labelled
    table = read_shards(job.out).to_pandas()
    unknown = ~np.isfinite(table["q_crfiqa"])
    held_out = set(table[unknown]["subject_id"])
    assert summary["teachers"]["crfiqa"]["unscored"] == unknown.sum() > 0
    reasons = rejected(job.out)
    assert all("unknown to the CR-FIQA head" in reasons[i] for i in table[unknown]["image_id"])
    # exactly the identities FR training held out
    from aikd.models.weights import class_centres

    _, classes = class_centres(fr_run[0].out)
    assert held_out.isdisjoint(classes) and set(table[~unknown]["subject_id"]) <= set(classes)


@pytest.mark.parametrize("column", ["q_serfiq", "q_crfiqa", "q_norm"])
def test_teachers_rank_clean_faces_above_degraded_ones(labelled, column):
    job, _ = labelled
    table = read_shards(job.out).to_pandas()
    scored = table[np.isfinite(table[column])]
    rho, t = spearman_t(scored[column].to_numpy(), scored["severity"].to_numpy())
    assert rho < 0 and t < -3.3, (column, rho, t)


def test_relabelling_resumes_from_finished_shards(labelled):
    job, first = labelled
    again = run_label(job)
    counts = again["counts"]
    assert counts["resumed_shards"] == counts["shards"] and counts["rows"] == first["counts"]["rows"]


def test_serfiq_shortcut_equals_full_passes_with_the_same_masks():
    torch.manual_seed(0)
    model = create_model("iresnet_tiny").eval()
    x = torch.randn(6, 3, 64, 64)
    fast = serfiq_quality(model, x, 12, 0.5, torch.Generator().manual_seed(3), shortcut=True)
    full = serfiq_quality(model, x, 12, 0.5, torch.Generator().manual_seed(3), shortcut=False)
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-6)
    other = serfiq_quality(model, x, 12, 0.5, torch.Generator().manual_seed(4))
    assert not torch.allclose(fast, other)


def test_external_table_join_reports_unmatched_ids(storage_root, synth_shards, ray_local):
    table = read_shards(synth_shards)
    ids = table.column("image_id").to_pylist()
    scores = pa.table({"image_id": ids[:-7], "score": np.linspace(0, 1, len(ids) - 7)})
    from aikd.storage import resolve

    target = resolve(storage_root).join("scores.parquet")
    resolve(storage_root).makedirs()
    pq.write_table(scores, target.path, filesystem=target.fs)
    job = LabelConfig(shards=[synth_shards], out=storage_root + "/out", resources=Resources(cpus_per_worker=0.5),
                      teachers=[TeacherSpec(name="external", label="diffiqa", options={"table": target.uri})])
    summary = run_label(job)
    assert summary["teachers"]["external"]["unscored"] == 7
    assert summary["teachers"]["external"]["column"] == "q_diffiqa"
    assert sorted(rejected(job.out)) == sorted(ids[-7:])
    out = read_shards(job.out, labels=("q_diffiqa",))
    assert out.num_rows == len(ids) and np.isnan(out.column("q_diffiqa").to_numpy()).sum() == 7


def test_teacher_registry_names_the_valid_choices():
    with pytest.raises(ComponentError, match=f"unknown teacher 'faceqnet'; valid: {', '.join(list_teachers())}$"):
        create_teacher("faceqnet")
    with pytest.raises(ComponentError, match="exactly one of"):
        create_teacher("external")
