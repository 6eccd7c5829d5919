"""Does the student beat its teacher? Teachers x variants x seeds, one paired evaluation.

The experiment runs the project's own jobs: the embedded default's inputs
(:mod:`aikd.defaults`), optionally a sweep whose best setting becomes a variant, one
distill run per (teacher, variant, seed), then one evaluation of every teacher and
student on faces of new identities. Because every model is measured on the same
bootstrap resamples of those identities, a student's pAUC difference to its teacher can
be averaged over seeds resample by resample, and that average gets an interval.

Rerun contract: finished distill runs and a finished sweep are kept (an unfinished run
resumes from its checkpoint); the evaluation and the tables are recomputed. The job
shell builds the embedded default's inputs first (``default``), and the experiment is a
tracked run whose distill runs are nested under it.
"""

from __future__ import annotations

import json

from aikd.config import DistillConfig, EvaluateConfig, ExperimentConfig, FIQASpec, SweepConfig
from aikd.data.synth import SynthConfig, write_synthetic
from aikd.distill.run import run_distill
from aikd.errors import JobFailed
from aikd.evaluate.run import run_evaluate
from aikd.experiment.results import markdown, run_name, summarise, teacher_model, training
from aikd.job import SUMMARY_FILE, Job, Outcome, Shape, finished, run_job
from aikd.jobs import JobKind
from aikd.spec import validate, with_overrides
from aikd.storage import resolve

RESULTS = "results.json"
TABLE = "results.md"


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
    log(f"sweep over {sweep.teacher}'s distillation, {sweep.trials} trials")
    summary = run_sweep(spec)
    if summary.get("best") is None:
        raise JobFailed(f"the experiment's sweep found no best trial: {spec.storage}/{spec.name}")
    return summary["best"]["params"]


def run_experiment(cfg: ExperimentConfig) -> dict:
    root = resolve(cfg.root)
    shape = Shape(root, cfg.name, inputs={"default": cfg.default.root}, outputs={"experiment": root.uri},
                  rerun="recompute", dashboard=cfg.sweep is not None)  # a sweep's early stopping needs the dashboard
    return run_job(cfg, shape, _work)


def _work(job: Job) -> Outcome:
    cfg, root = job.cfg, job.out
    parent = {"mlflow.parentRunId": job.tracker.run_id} if job.tracker is not None else {}
    variants = dict(cfg.variants)
    if cfg.sweep is not None:
        variants["sweep-best"] = sweep_best(cfg, job.log)
    runs = {}
    for seed in cfg.seeds:
        for teacher in cfg.teachers:
            for variant, fields in variants.items():
                name = run_name(teacher, variant, seed)
                run = root.join("distill").join(name)
                if finished(run) is None:
                    job.log(f"distill {name}")
                    run_distill(distill_spec(cfg, teacher, fields, seed, name), tags=parent)
                runs[(teacher, variant, seed)] = finished(run)
    evaluation = evaluation_spec(cfg, runs)
    job.log(f"evaluation of {len(evaluation.models)} models -> {evaluation.out}")
    samples: dict = {}
    result = run_evaluate(evaluation, samples)
    report = json.loads(resolve(result["report"]).parent().join("report.json").read_text())
    rows = summarise(cfg, list(variants), report, samples)
    results = {"experiment": cfg.name, "variants": variants, "seeds": cfg.seeds, "teachers": cfg.teachers,
               "rows": rows, "report": result["report"],
               "training": {run_name(*k): training(s) for k, s in runs.items()},
               "invariance": report["invariance"], "bootstrap": report["bootstrap"]}
    root.join(RESULTS).write_text(json.dumps(results, indent=1) + "\n")
    root.join(TABLE).write_text(markdown(results))
    job.log("\n" + markdown(results))
    return Outcome(counts={"runs": len(runs), "models": len(evaluation.models), "table_rows": len(rows)},
                   fields=results, files=[RESULTS, TABLE])


def evaluation_spec(cfg: ExperimentConfig, runs: dict) -> EvaluateConfig:
    """One evaluation of every teacher and student on faces of new identities (made here when missing)."""
    faces = resolve(cfg.root).join("eval_faces")
    if not faces.join(SUMMARY_FILE).exists():  # new identities: another seed draws other people
        write_synthetic(faces.uri, SynthConfig(identities=cfg.eval_identities,
                                               samples_per_identity=cfg.eval_samples_per_identity,
                                               seed=cfg.default.seed + 1000))
    models = [FIQASpec(name=teacher_model(t), teacher=t, options=cfg.default.teacher_options(t)) for t in cfg.teachers]
    models += [FIQASpec(name=run_name(*key), student=summary["student"]) for key, summary in runs.items()]
    return EvaluateConfig(
        shards=[faces.uri], out=resolve(cfg.root).join("evaluation").uri, fr_model=cfg.default.path("fr_model"),
        models=models, misalignment=cfg.misalignment, box=True, fmr=cfg.fmr, non_mated=cfg.non_mated,
        ci_resamples=cfg.ci_resamples, resources=cfg.resources, tracking=cfg.tracking)


JOB = JobKind("experiment", ExperimentConfig, run_experiment)
