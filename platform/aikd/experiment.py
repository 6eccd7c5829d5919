"""Does the student beat its teacher? Teachers x variants x seeds, one paired evaluation.

The experiment runs the project's own jobs: the embedded default's inputs
(:mod:`aikd.defaults`), optionally a sweep whose best setting becomes a variant, one
distill run per (teacher, variant, seed), then one evaluation of every teacher and
student on faces of new identities. Because every model is measured on the same
bootstrap resamples of those identities, a student's pAUC difference to its teacher can
be averaged over seeds resample by resample, and that average gets an interval.

Rerun contract: finished distill runs and a finished sweep are kept (an unfinished run
resumes from its checkpoint); the evaluation and the tables are recomputed.
"""

from __future__ import annotations

import json

import numpy as np

from aikd.config import (
    DistillConfig,
    EvaluateConfig,
    ExperimentConfig,
    FIQASpec,
    SweepConfig,
    validate,
    with_overrides,
)
from aikd.evaluate.bootstrap import interval, verdict
from aikd.job import SUMMARY_FILE
from aikd.storage import resolve

RESULTS = "results.json"
TABLE = "results.md"


def run_name(teacher: str, variant: str, seed: int) -> str:
    return f"{teacher}-{variant}-s{seed}"


def teacher_model(teacher: str) -> str:
    return f"teacher {teacher}"


def distill_spec(cfg: ExperimentConfig, teacher: str, variant: dict, seed: int, name: str) -> DistillConfig:
    base = {"bootstrap": cfg.default.model_copy(update={"teacher": teacher}).model_dump(), "name": name,
            "storage": resolve(cfg.root).join("distill").uri, "tracking": cfg.tracking.model_dump(),
            "data": {"seed": seed}}
    return validate(DistillConfig, with_overrides(base, cfg.distill | variant), source=f"experiment run {name}")


def sweep_best(cfg: ExperimentConfig, log) -> dict:
    """The sweep's best parameters (a finished sweep is read, not rerun)."""
    from aikd.sweep.run import run_sweep
    from aikd.sweep.space import default_space

    sweep = cfg.sweep
    base = distill_spec(cfg, sweep.teacher, {}, cfg.seeds[0], "sweep-base")
    # the default space without the teacher: the experiment varies teachers itself
    space = {k: v.model_dump() for k, v in default_space(base, [base.data.label]).items() if k != "data.label"}
    spec = validate(SweepConfig, {
        "name": f"{cfg.name}-sweep", "storage": resolve(cfg.root).join("sweeps").uri,
        "base": base.model_dump(mode="json", exclude={"register", "bootstrap"}), "space": space,
        "fixed": sweep.fixed, "trials": sweep.trials, "metric": sweep.metric, "mode": sweep.mode, "seed": 0,
        "tracking": cfg.tracking.model_dump()}, source="experiment sweep")
    log(f"experiment: sweep over {sweep.teacher}'s distillation, {sweep.trials} trials")
    summary = run_sweep(spec)
    if summary.get("best") is None:
        raise RuntimeError(f"the experiment's sweep found no best trial: {spec.storage}/{spec.name}")
    return summary["best"]["params"]


def run_experiment(cfg: ExperimentConfig, log=print) -> dict:
    from aikd.data.shards import SUMMARY_FILE as SHARDS_SUMMARY
    from aikd.data.synth import SynthConfig, write_synthetic
    from aikd.defaults import ensure_default_inputs
    from aikd.distill.run import run_distill
    from aikd.evaluate.run import run_evaluate
    from aikd.runtime import ensure_ray

    root = resolve(cfg.root)
    ensure_ray(dashboard=cfg.sweep is not None)  # a sweep's early stopping needs the dashboard
    ensure_default_inputs(cfg.default, log=log)
    variants = dict(cfg.variants)
    if cfg.sweep is not None:
        variants["sweep-best"] = sweep_best(cfg, log)
    runs = {}
    for seed in cfg.seeds:
        for teacher in cfg.teachers:
            for variant, fields in variants.items():
                name = run_name(teacher, variant, seed)
                run = root.join("distill").join(name)
                if not run.join(SUMMARY_FILE).exists():
                    log(f"experiment: distill {name}")
                    run_distill(distill_spec(cfg, teacher, fields, seed, name))
                runs[(teacher, variant, seed)] = json.loads(run.join(SUMMARY_FILE).read_text())

    faces = root.join("eval_faces")
    if not faces.join(SHARDS_SUMMARY).exists():  # new identities: another seed draws other people
        write_synthetic(faces.uri, SynthConfig(identities=cfg.eval_identities,
                                               samples_per_identity=cfg.eval_samples_per_identity,
                                               seed=cfg.default.seed + 1000))
    fr_model = cfg.default.path("fr_model")
    models = [FIQASpec(name=teacher_model(t), teacher=t, options=cfg.default.teacher_options(t)) for t in cfg.teachers]
    models += [FIQASpec(name=run_name(*key), student=summary["student"]) for key, summary in runs.items()]
    evaluation = EvaluateConfig(
        shards=[faces.uri], out=root.join("evaluation").uri, fr_model=fr_model, models=models,
        misalignment=cfg.misalignment, box=True, fmr=cfg.fmr, non_mated=cfg.non_mated,
        ci_resamples=cfg.ci_resamples, resources=cfg.default.resources, tracking=cfg.tracking)
    log(f"experiment: evaluation of {len(models)} models -> {evaluation.out}")
    samples: dict = {}
    result = run_evaluate(evaluation, samples)
    report = json.loads(resolve(result["report"]).parent().join("report.json").read_text())
    rows = summarise(cfg, list(variants), report, samples)
    results = {"experiment": cfg.name, "variants": variants, "seeds": cfg.seeds, "teachers": cfg.teachers,
               "rows": rows, "report": result["report"],
               "training": {run_name(*k): _training(s) for k, s in runs.items()},
               "invariance": report["invariance"], "bootstrap": report["bootstrap"]}
    root.join(RESULTS).write_text(json.dumps(results, indent=1) + "\n")
    root.join(TABLE).write_text(markdown(results))
    log(markdown(results))
    return results


def _training(summary: dict) -> dict:
    """What a run's summary says of its training: steps, selection and the validation curve."""
    keep = ("step", "val_quality_loss", "val_quality_loss_misaligned", "val_spearman", "val_spearman_misaligned",
            "val_pauc_aligned", "val_pauc_misaligned")
    return {"steps": summary["steps"], "selected_by": summary.get("selected_by"),
            "history": [{k: h[k] for k in keep if k in h} for h in summary.get("history", [])]}


def summarise(cfg: ExperimentConfig, variants: list[str], report: dict, samples: dict, limit: float = 0.2,
              level: float = 0.95) -> list[dict]:
    """Per teacher, variant, condition and FMR: the teacher's pAUC, the students' mean over seeds, and
    the seed-averaged difference (student - teacher) with its interval and verdict."""
    point = {(r["model"], r["condition"], r["fmr"]): r[f"pauc_{limit:g}"] for r in report["pauc"]}
    rows = []
    for teacher in cfg.teachers:
        t = teacher_model(teacher)
        for variant in variants:
            for condition in report["conditions"]:
                for fmr in cfg.fmr:
                    students = [run_name(teacher, variant, s) for s in cfg.seeds]
                    per_seed = [point[(s, condition, fmr)] - point[(t, condition, fmr)] for s in students]
                    diff = np.mean([samples[(s, condition, fmr, limit)] for s in students], axis=0) - samples[
                        (t, condition, fmr, limit)]
                    lo, hi = interval(diff, level)
                    rows.append({"teacher": teacher, "variant": variant, "condition": condition, "fmr": fmr,
                                 "limit": limit, "teacher_pauc": point[(t, condition, fmr)],
                                 "student_pauc": float(np.mean([point[(s, condition, fmr)] for s in students])),
                                 "difference": float(np.mean(per_seed)), "low": lo, "high": hi,
                                 "seed_range": [float(min(per_seed)), float(max(per_seed))],
                                 "verdict": verdict(lo, hi)})
    return rows


def markdown(results: dict) -> str:
    """The tables of docs/results.md: one per FMR, rows teacher x variant, columns conditions."""
    rows = results["rows"]
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    level = results["bootstrap"]["level"]
    out = [f"Student minus teacher in pAUC@{rows[0]['limit']:g} (lower is better), mean over seeds "
           f"{results['seeds']}; in brackets the {level:.0%} interval from {results['bootstrap']['resamples']} "
           f"resamples of {results['bootstrap']['identities']} evaluation identities; a verdict only where "
           f"the interval excludes 0.", ""]
    for fmr in sorted({r["fmr"] for r in rows}):
        out += [f"FMR {fmr:g}:", "", "| teacher | variant | " + " | ".join(conditions) + " |",
                "|---|---|" + "---|" * len(conditions)]
        for teacher in results["teachers"]:
            for variant in results["variants"]:
                cells = []
                for c in conditions:
                    r = next(r for r in rows if (r["teacher"], r["variant"], r["condition"], r["fmr"]) ==
                             (teacher, variant, c, fmr))
                    mark = {"better": " **better**", "worse": " *worse*"}.get(r["verdict"], "")
                    cells.append(f"{r['difference']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}]{mark}")
                out.append(f"| {teacher} | {variant} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)
