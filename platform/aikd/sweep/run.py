"""The sweep's driver: checks, the work trials share, Ray Tune (Optuna + ASHA), outcome, registration.

A sweep lives at ``<storage>/<name>/``: ``sweep.json`` (the spec it was started with),
Ray Tune's experiment in ``tune/``, one distill run per trial in ``trials/<trial id>/``,
and when it ends the trial table (``trials.csv``, ``trials.md``), ``trials.png``,
``importances.json`` and ``_summary.json``. The sweep is an MLflow run; every trial is
a run nested under it, in the same experiment.

Rerun contract: resume. Starting the same sweep again restores Tune's experiment
(``Tuner.restore``): finished and stopped trials are kept, interrupted ones continue
their distill runs from their latest checkpoints, and the search goes on to
``trials``. A finished sweep (its summary written) is not run again. A changed spec is
refused: a different search is a new sweep name.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from aikd.config import Dimension, DistillConfig, SweepConfig
from aikd.console import verbose
from aikd.data.schema import SUBJECT_ID
from aikd.data.split import held_out
from aikd.distill.run import SharedWork, register_student
from aikd.errors import ConfigError, JobFailed
from aikd.job import SUMMARY_FILE, Job, Outcome, Shape, run_job
from aikd.jobs import JobKind
from aikd.redact import redact
from aikd.spec import validate
from aikd.storage import Location, resolve
from aikd.sweep.outcome import collect, write_outcome
from aikd.sweep.space import (
    check_space,
    default_space,
    fit_concurrency,
    load_base,
    quality_columns,
    trial_config,
    trial_resources,
    tune_space,
)
from aikd.sweep.trial import TRIALS, TrialLines, run_trial
from aikd.tracking import Tracker, tracking_uri

SPEC_FILE = "sweep.json"
TUNE_DIR = "tune"


def validation_coverage(base: DistillConfig, labels: list[str]) -> dict[str, tuple[int, int]]:
    """Per teacher column: the validation faces the trials will hold out (whole identities) that it
    labels, and the mated pairs among them (unlabelled rows never reach validation)."""
    import numpy as np
    import pyarrow.parquet as pq

    from aikd.data.shards import shard_files

    counts: dict[str, dict[str, int]] = {label: {} for label in labels}
    for uri in base.data.shards:
        for f in shard_files(uri):
            t = pq.read_table(f.path, filesystem=f.fs, columns=[SUBJECT_ID, *labels])
            subjects = t.column(SUBJECT_ID).to_pylist()
            out = held_out({SUBJECT_ID: subjects}, base.data)
            for label in labels:
                finite = np.isfinite(t.column(label).to_numpy(zero_copy_only=False).astype(np.float64))
                for s in np.asarray(subjects, dtype=object)[out & finite]:
                    counts[label][s] = counts[label].get(s, 0) + 1
    return {label: (sum(c.values()), sum(n * (n - 1) // 2 for n in c.values())) for label, c in counts.items()}


def _unusable(cfg: SweepConfig, base: DistillConfig, faces: int, pairs: int) -> str | None:
    """Why a teacher's labelled validation faces cannot give the sweep's metric (None: they can)."""
    if faces == 0:
        return (f"labels none of the held-out identities (data.val_fraction {base.data.val_fraction}; a "
                f"teacher needing an FR head's classes labels only identities that head was trained on)")
    if base.validation.needs_pauc and pairs < base.validation.min_mated_pairs:
        return (f"gives {pairs} mated pairs among the held-out identities it labels, fewer than "
                f"validation.min_mated_pairs = {base.validation.min_mated_pairs} that {cfg.metric} needs: raise "
                f"data.val_fraction or use data with more images per identity")
    return None


def trial_base(cfg: SweepConfig, data: dict, home: Location) -> tuple[dict, DistillConfig]:
    """The spec every trial starts from: the sweep's base, validated on held-out identities, selected by
    the sweep's metric, recorded under the sweep's MLflow run (nothing of the embedded default left to build)."""
    base = validate(DistillConfig, {"name": "base", "storage": home.uri} | data, source="sweep base")
    if base.bootstrap is not None:  # its inputs are read to plan the trials: built first
        from aikd.defaults import ensure_default_inputs
        from aikd.jobs import run_config
        from aikd.runtime import ensure_ray

        ensure_ray(dashboard=True)  # the Ray the sweep then runs on
        ensure_default_inputs(base.bootstrap, run=run_config, upto="distill")
    tracking = {"enabled": cfg.tracking.enabled, "uri": tracking_uri(cfg.tracking) if cfg.tracking.enabled else None,
                "experiment": cfg.tracking.experiment or f"aikd-{cfg.kind}"}
    fixed = base.model_dump(mode="json") | {"bootstrap": None, "tracking": tracking}
    fixed["data"]["split_by"] = "subject_id"  # the pAUC needs mated pairs: hold out whole identities
    fixed["validation"]["select"] = cfg.metric
    return fixed, validate(DistillConfig, fixed | {"name": "check", "storage": home.uri}, source="sweep base")


def _check_validation(cfg: SweepConfig, base: DistillConfig, coverage: dict, labels: list[str]) -> None:
    """Every trial must measure the metric: labelled validation faces, and mated pairs among them for a pAUC."""
    for label in labels:
        why = _unusable(cfg, base, *coverage[label])
        if why is not None:
            raise ConfigError(f"teacher {label} {why}")


def _concurrency(cfg: SweepConfig, base: DistillConfig) -> int:
    import ray

    need = trial_resources(base, cfg.resources)
    cluster = {k: float(v) for k, v in ray.cluster_resources().items() if k in need}
    fits = fit_concurrency(need, cluster)
    what = ", ".join(f"{v:g} {k}" for k, v in need.items() if v > 0)
    if cfg.concurrency is None:
        if fits == 0:
            raise ConfigError(f"one trial needs {what} (its driver, Train workers and decode actors) but the "
                              f"cluster has {', '.join(f'{cluster.get(k, 0):g} {k}' for k in need)}: lower the "
                              f"base's resources or data.resources")
        return min(fits, cfg.trials)
    if cfg.concurrency > fits:
        print(f"sweep: warning: concurrency {cfg.concurrency} but the cluster holds {fits} trials of {what} now: "
              f"trials wait for resources (an autoscaling cluster adds them)", flush=True)
    return cfg.concurrency


def _check_same_spec(cfg: SweepConfig, home: Location, base: dict) -> None:
    """A restarted sweep must be the same search; its spec (with the base's content) is kept beside Tune's state."""
    spec = redact(cfg.model_dump(mode="json") | {"base": base})
    saved = home.join(SPEC_FILE)
    if saved.exists():
        before = saved.read_json()
        if before != spec:
            changed = sorted(k for k in set(before) | set(spec) if before.get(k) != spec.get(k))
            raise ConfigError(f"sweep {home.uri} was started with another spec (changed: {', '.join(changed)}): "
                              f"a different search needs a new name")
    else:
        saved.write_json(spec)


def _tuner(cfg: SweepConfig, space: dict, trainable, home: Location, concurrency: int):
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    if not verbose():  # optuna sets its own logger to INFO on first use: "A new study created in memory ..."
        optuna.logging.set_verbosity(optuna.logging.WARNING)

    tune_path = home.join(TUNE_DIR)
    if tune.Tuner.can_restore(tune_path.path, storage_filesystem=tune_path.fs):
        print(f"sweep: continuing {home.uri} (finished trials are kept)", flush=True)
        return tune.Tuner.restore(tune_path.path, trainable, resume_unfinished=True, resume_errored=True,
                                  storage_filesystem=tune_path.fs)
    search = OptunaSearch(metric=cfg.metric, mode=cfg.direction, seed=cfg.seed,
                          points_to_evaluate=[dict(p) for p in cfg.start_with] or None)
    scheduler = None
    if cfg.early_stop is not None:
        scheduler = ASHAScheduler(metric=cfg.metric, mode=cfg.direction, grace_period=cfg.early_stop.grace,
                                  reduction_factor=cfg.early_stop.reduction_factor, max_t=10_000)
    return tune.Tuner(
        trainable, param_space=tune_space(space),
        # A trial's process is reused for the next one (no new Python, no imports again) only without
        # early stopping: Tune caches a stopped trial's process too, and its Train run would go on inside it.
        tune_config=tune.TuneConfig(search_alg=search, scheduler=scheduler, num_samples=cfg.trials,
                                    max_concurrent_trials=concurrency, reuse_actors=scheduler is None,
                                    trial_dirname_creator=lambda trial: trial.trial_id),
        run_config=tune.RunConfig(name=TUNE_DIR, storage_path=home.path, storage_filesystem=home.fs, verbose=0,
                                  callbacks=[TrialLines(cfg.metric)]))


@dataclass(frozen=True)
class SweepPlan:
    """What the checks settled before any Ray work: the trials' base spec, the space, the teachers."""

    home: Location
    data: dict  # the base as loaded, with `fixed` set
    fixed: dict  # the spec every trial starts from
    base: DistillConfig
    space: dict[str, Dimension]
    labels: list[str]


def plan_sweep(cfg: SweepConfig) -> SweepPlan:
    """Load the base, pick the space and check it all, each failure one line, before any trial."""
    home = resolve(cfg.storage).join(cfg.name)
    data = load_base(cfg)
    fixed, base = trial_base(cfg, data, home)
    columns = quality_columns(base.data.shards)
    coverage = validation_coverage(base, columns)
    space = cfg.space
    if space is None:  # the default searches the teachers whose labels can validate a trial
        usable = [c for c in columns if _unusable(cfg, base, *coverage[c]) is None]
        for c in sorted(set(columns) - set(usable)):
            print(f"sweep: note: not searching teacher {c}: it {_unusable(cfg, base, *coverage[c])}", flush=True)
        space = default_space(base, usable or [base.data.label])
    check_space(fixed, space, columns, cfg.start_with)
    labels = list(space["data.label"].values) if "data.label" in space else [base.data.label]
    _check_validation(cfg, base, coverage, labels)
    return SweepPlan(home, data, fixed, base, space, labels)


def run_sweep(cfg: SweepConfig) -> dict:
    plan = plan_sweep(cfg)
    _check_same_spec(cfg, plan.home, plan.data)
    inputs = {"base": cfg.base if isinstance(cfg.base, str) else "inline", "shards": plan.base.data.shards}
    # a local Ray instance runs its dashboard: Ray Train frees a stopped trial's workers through the State API
    shape = Shape(plan.home, cfg.name, inputs=inputs, outputs={"sweep": plan.home.uri}, rerun="resume",
                  skip_finished=True, dashboard=True)
    summary = run_job(cfg, shape, lambda job: _work(job, plan))
    if summary["best"] is None:
        raise JobFailed(f"sweep {plan.home.uri}: no trial reached {cfg.metric} (trials: {summary['counts']}); "
                        f"see {plan.home.join('trials.md').uri}")
    return summary


def _work(job: Job, plan: SweepPlan) -> Outcome:
    from ray import tune

    cfg, home, fixed, space = job.cfg, plan.home, plan.fixed, plan.space
    concurrency = _concurrency(cfg, plan.base)
    shared = SharedWork.make(plan.base, plan.labels)
    job.log(f"{cfg.trials} trials of {len(shared.units)} row groups, {concurrency} at a time, "
            f"ranked by {cfg.metric} ({cfg.direction}); searching {', '.join(space)}")
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")  # trials read relative paths as the sweep does
    tags = {"aikd.sweep": cfg.name, "aikd.sweep_uri": home.uri}
    if job.tracker is not None:
        tags["mlflow.parentRunId"] = job.tracker.run_id
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=fixed, shared=shared, home=home.uri, tags=tags),
        {"cpu": cfg.resources.cpus_per_worker} | cfg.resources.custom)
    grid = _tuner(cfg, space, trainable, home, concurrency).fit()
    rows = collect(grid, space, cfg.metric, cfg.direction, home.join(TRIALS))
    outcome = write_outcome(home, rows, space, cfg.metric, cfg.direction)
    counts, fields = _summary(cfg, home, rows, outcome, concurrency)
    if job.tracker is not None:
        _close_trial_runs(job.tracker, rows)
    if cfg.register is not None and fields["best"] is not None:
        fields["registered"] = _register_best(cfg, fields, fixed, job.tracker)
    metrics = {f"best.{cfg.metric}": fields["best"]["metric"]} if fields["best"] else {}
    return Outcome(counts=counts, fields=fields, metrics=metrics, files=[*outcome["files"], SPEC_FILE])


def _summary(cfg: SweepConfig, home: Location, rows, outcome: dict, concurrency: int) -> tuple[dict, dict]:
    """The sweep's counts (trials by status) and its own summary fields (the best trial)."""
    best = outcome["best"]
    counts = {"trials": len(rows), "concurrency": concurrency}
    counts |= {s: sum(r.status == s for r in rows) for s in ("completed", "stopped", "failed")}
    summary = {"sweep": home.uri, "metric": cfg.metric, "mode": cfg.direction, "importances": outcome["importances"],
               "files": [home.join(f).uri for f in outcome["files"]], "best": None}
    if best is not None:
        config = resolve(best.run).join("config.json")
        summary["best"] = {"trial": best.trial, "metric": best.metric, "status": best.status, "steps": best.steps,
                           "params": best.params, "run": best.run, "student": resolve(best.run).join("best").uri,
                           "mlflow_run": best.mlflow_run,
                           "config": json.loads(config.read_text()) if config.exists() else None}
        print(f"sweep: best trial {best.trial}: {cfg.metric} {best.metric:.4g} with "
              + ", ".join(f"{k}={v}" for k, v in best.params.items()), flush=True)
    return counts, summary


def _close_trial_runs(tracker: Tracker, rows) -> None:
    """Trial runs the scheduler stopped never closed themselves: mark them KILLED, every trial with its status."""
    for r in rows:
        if r.mlflow_run is None:
            continue
        trial = Tracker(tracker.uri, r.mlflow_run)
        trial.set_tags({"aikd.trial_status": r.status})
        if r.status == "stopped":
            trial.end("KILLED")


def _register_best(cfg: SweepConfig, summary: dict, fixed: dict, tracker: Tracker) -> dict:
    """The best trial's student as a registered version, tagged with the sweep and the trial's parameters."""
    best = summary["best"]
    trial_cfg = trial_config(fixed, best["params"], name=best["trial"], storage=summary["sweep"] + "/" + TRIALS)
    trial_cfg = trial_cfg.model_copy(update={"register": cfg.register})
    trial = Tracker(tracker.uri, best["mlflow_run"])
    trial_summary = {"steps": best["steps"], "models": []}
    run = resolve(best["run"])
    if run.join(SUMMARY_FILE).exists():
        trial_summary = run.join(SUMMARY_FILE).read_json()
    registered = register_student(trial_cfg, run, trial, trial_summary, extra_tags={
        "aikd.sweep": cfg.name, "aikd.sweep_uri": summary["sweep"], "aikd.sweep_run": tracker.run_id,
        "aikd.trial": best["trial"], f"sweep.{cfg.metric}": best["metric"],
        **{f"sweep.param.{k}": v for k, v in best["params"].items()}})
    print(f"sweep: registered {registered['uri']} (aliases: {', '.join(cfg.register.aliases) or 'none'})",
          flush=True)
    return registered


JOB = JobKind("sweep", SweepConfig, run_sweep)
