"""What the sweep machinery costs: a sweep's wall time against its trials' own fit times.

Measured in one run, in one process, on the same synthetic faces and student:

* trials alone: each trial's distill spec (built by the sweep's own ``trial_config``:
  same data, same settings, the same validation by identity) run with ``run_distill``,
  one after the other, without Tune; each timed from call to return;
* the sweep: ``run_sweep`` over the same settings (``start_with``, no early stopping,
  one trial at a time), timed from call to return: Tune's controller, the trial
  processes, the shared data plan, the outcome files and MLflow's nested runs included.

``overhead_ratio`` = sweep wall / sum of the trials' times (goal <= 1.15). Both sides
start Ray Train once per trial, so that start-up is in the sum too. A short distill run
comes first, untimed, so one-off costs (DeepSpeed's op build, imports) fall on neither
side. Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

from aikd.config import SweepConfig
from aikd.distill.run import run_distill
from aikd.spec import validate
from aikd.storage import resolve
from aikd.sweep.run import run_sweep, trial_base
from aikd.sweep.space import load_base, trial_config
from distill import labelled_faces, student_dir  # bench/distill.py: shards with a label column, a student


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per trial")
    parser.add_argument("--images", type=int, default=1500)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()

    import ray

    cpus = os.cpu_count() or 1
    # one Ray for both sides, with the dashboard a sweep needs; quiet workers keep the JSON last
    ray.init(num_cpus=cpus, include_dashboard=True, log_to_driver=False, logging_level="ERROR")
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    with tempfile.TemporaryDirectory() as root:
        faces = labelled_faces(root, args.images)
        weights = student_dir(root, "iresnet_tiny", args.size)
        half = {"workers": 2, "cpus_per_worker": cpus / 4}
        base = {"data": {"shards": [faces], "label": "q_bench", "image_size": args.size, "val_fraction": 0.1,
                         "resources": {"workers": 1, "cpus_per_worker": cpus / 4}},
                "student": {"weights": weights}, "engine": {"micro_batch": 32}, "resources": half,
                "max_steps": args.steps, "epochs": 1}
        strengths = [round(1.0 + 4.0 * i / max(args.trials - 1, 1), 3) for i in range(args.trials)]
        points = [{"data.misalignment": s} for s in strengths]
        tracking = {"uri": f"sqlite:///{root}/mlflow.db"}
        cfg = validate(SweepConfig, {
            "name": "bench", "storage": os.path.join(root, "sweeps"), "base": base, "trials": args.trials,
            "space": {"data.misalignment": {"type": "uniform", "low": 0.0, "high": 6.0}}, "start_with": points,
            "early_stop": None, "concurrency": 1, "tracking": tracking})

        # the trials alone: the spec each trial runs, as the sweep builds it
        fixed, _ = trial_base(cfg, load_base(cfg), resolve(cfg.storage).join("alone"))
        # one short run first, not timed: one-off costs (DeepSpeed's op build, imports) count on neither side
        run_distill(trial_config(fixed, points[0], name="warm-up", storage=os.path.join(root, "alone"),
                                 max_steps=2))
        alone = []
        for i, point in enumerate(points):
            trial = trial_config(fixed, point, name=f"alone-{i}", storage=os.path.join(root, "alone"))
            start = time.perf_counter()
            run_distill(trial)
            alone.append(time.perf_counter() - start)

        start = time.perf_counter()
        summary = run_sweep(cfg)
        sweep_wall = time.perf_counter() - start
    ray.shutdown()
    result = {
        "bench": "sweep", "device": f"cpu x{cpus}", "trials": args.trials, "steps_per_trial": args.steps,
        "images": args.images, "input": args.size, "completed": summary["counts"]["completed"],
        "trial_seconds_alone": [round(t, 1) for t in alone], "sum_trial_seconds": round(sum(alone), 1),
        "sweep_seconds": round(sweep_wall, 1), "overhead_ratio": round(sweep_wall / sum(alone), 3),
        "goal": {"overhead_ratio": 1.15},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
