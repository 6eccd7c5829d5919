"""The evaluation job (``aikd evaluate``): score every face under every condition, compare, report.

    faces -> score_faces (Ray Data: crops per condition, FR embeddings, FIQA qualities)
          -> results (pairs, EDC, pAUC, intervals, invariance)
          -> report.json, pauc.md, edc_<condition>_fmr<f>.png, index.html under ``out``,
             and _rejects.parquet: the rows not used, with a reason (rows = faces + rejected)

Models may be registered versions (``models:/name@alias``): the report names the
version each resolved to, and each evaluated student version gets its pAUC per
condition as version tags. The job is an MLflow run with the pAUCs as metrics and the
report as artifacts.
"""

from __future__ import annotations

from aikd.config import EvaluateConfig
from aikd.data.shards import write_rejects
from aikd.evaluate.report import write_report
from aikd.evaluate.results import evaluate, reject_counts
from aikd.evaluate.scoring import score_faces
from aikd.job import Job, Outcome, Shape, run_job
from aikd.jobs import JobKind
from aikd.registry import tag_version
from aikd.storage import resolve
from aikd.tracking import Tracker, metric_key, tracking_uri


def pauc_metrics(results: dict, limits: list[float]) -> dict[str, float]:
    """Flat metric names for tracking: ``pauc_<limit>.<model>.<condition>.fmr<f>``, invariance, differences."""
    out = {}
    for r in results["pauc"]:
        for limit in limits:
            out[metric_key(f"pauc_{limit:g}", r["model"], r["condition"], f"fmr{r['fmr']:g}")] = r[f"pauc_{limit:g}"]
    for r in results["invariance"]:
        out[metric_key("spearman_vs_aligned", r["model"], r["condition"])] = r["spearman_vs_aligned"]
    for d in results["differences"]:
        for field in ("difference", "low", "high"):
            out[metric_key(f"pauc_{d['limit']:g}_{field}", f"{d['a']} - {d['b']}", d["condition"],
                           f"fmr{d['fmr']:g}")] = d[field]
    return out


def tag_evaluated_versions(cfg: EvaluateConfig, models: list[dict], results: dict, tracker: Tracker | None) -> None:
    """Each registered student that was evaluated carries its pAUC per condition (first limit) as version tags."""
    limit = cfg.pauc_limits[0]
    for ref in models:
        parts = ref["field"].split(".")
        if parts[0] != "models" or parts[-1] != "student":
            continue
        name = cfg.models[int(parts[1])].name
        tags = {f"eval.pauc_{limit:g}.{r['condition']}.fmr{r['fmr']:g}": f"{r[f'pauc_{limit:g}']:.5f}"
                for r in results["pauc"] if r["model"] == name}
        tags |= {"eval.faces": results["faces"], "eval.shards": ", ".join(cfg.shards), "eval.report": cfg.out,
                 "eval.run": tracker.run_id if tracker else None}
        tag_version(ref, {k: v for k, v in tags.items() if v is not None}, tracking_uri(cfg.tracking))


def run_evaluate(cfg: EvaluateConfig, samples: dict | None = None) -> dict:
    """Score, compare, report.

    Rerun contract: recompute. Scoring every face under every condition is the job's
    whole cost and its inputs (models, faces) may have changed, so a rerun scores again
    and overwrites the report (and records a new MLflow run); nothing partial is kept
    between runs. ``samples``, when given, receives each pAUC per bootstrap resample
    (an experiment compares its students over seeds on them).
    """
    out = resolve(cfg.out)
    shape = Shape(out, out.name, inputs={"shards": cfg.shards, "fr_model": cfg.fr_model},
                  outputs={"report": out.uri}, rerun="recompute")
    return run_job(cfg, shape, lambda job: _work(job, samples))


def _work(job: Job, samples: dict | None) -> Outcome:
    cfg, out = job.cfg, job.out
    faces, rejects = score_faces(cfg)
    results, curves = evaluate(cfg, faces, samples)
    results |= reject_counts(faces, rejects)
    write_rejects(out.uri, rejects)
    results["registered_models"] = [{k: m[k] for k in ("field", "uri", "resolved_uri")} for m in job.models]
    written = write_report(cfg, results, curves)
    tag_evaluated_versions(cfg, job.models, results, job.tracker)
    counts = {k: results[k] for k in ("rows", "faces", "rejected", "mated_pairs", "non_mated_pairs")}
    fields = {"report": written["report"], "table": written["table"], "bootstrap": results.get("bootstrap")}
    fields |= {k: results[k] for k in ("pauc", "invariance", "differences")}
    files = ["report.json", "pauc.md", "index.html"] + [u.rsplit("/", 1)[-1] for u in written["images"]]
    return Outcome(counts=counts, rejects=results["reject_reasons"], fields=fields,
                   metrics=pauc_metrics(results, cfg.pauc_limits), files=files, artifact_path="report")


JOB = JobKind("evaluate", EvaluateConfig, run_evaluate)
