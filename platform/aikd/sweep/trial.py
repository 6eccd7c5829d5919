"""One trial of a sweep: a Ray Tune function that runs one distillation on Ray Train.

The function builds the trial's distill spec (the base plus the trial's parameters),
names its run after the trial id and starts it with the Ray Train callback that hands
every report of rank 0 (one per validation) to Tune, where the scheduler sees it. The
Train workers and decode actors get their own resources; the function itself holds
only the sweep's small ``resources``.

Restarted trials (a restored sweep) continue their distill run from its latest
checkpoint, because the run's name is the trial id. A trial whose run already finished
reports its last validation again instead of starting Ray Train.
"""

from __future__ import annotations

from ray import tune

from aikd.console import say
from aikd.distill.run import SharedWork, run_distill
from aikd.job import SUMMARY_FILE
from aikd.storage import resolve
from aikd.sweep.space import trial_config

TRIALS = "trials"  # <sweep>/trials/<trial id>/: each trial's distill run


def run_trial(params: dict, *, base: dict, shared: SharedWork, home: str, tags: dict) -> None:
    from ray.data import DataContext
    from ray.tune.integration.ray_train import TuneReportCallback

    DataContext.get_current().enable_progress_bars = False  # the sweep's progress is its line per trial
    trial_id = tune.get_context().get_trial_id()
    cfg = trial_config(base, params, name=trial_id, storage=resolve(home).join(TRIALS).uri)
    summary = resolve(cfg.storage).join(trial_id, SUMMARY_FILE)
    if summary.exists():  # finished before the sweep was stopped: nothing to train again
        tune.report(summary.read_json()["history"][-1])
        return
    run_distill(cfg, shared=shared, callbacks=[TuneReportCallback()],
                tags=tags | {"aikd.trial": trial_id} | {f"aikd.param.{k}": v for k, v in params.items()})


class TrialLines(tune.Callback):
    """The sweep's console: one line per trial that ended, completed or stopped early, with its metric
    (Tune's own status tables are off)."""

    def __init__(self, metric: str):
        self.metric = metric

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        result = trial.last_result or {}
        value = result.get(self.metric)
        shown = f"{value:.4g}" if isinstance(value, float) else "not measured"
        params = ", ".join(f"{k}={v}" for k, v in sorted(trial.config.items()))
        say(f"sweep: trial {trial.trial_id} ended at step {result.get('step', '?')}: {self.metric} {shown} ({params})")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        say(f"sweep: trial {trial.trial_id} failed (its error is in {trial.local_path or 'the trial folder'})")
