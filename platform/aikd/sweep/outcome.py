"""A finished sweep, written down: the trial table (CSV, Markdown), a plot, parameter importances.

A trial's status is ``completed`` when its distill run wrote its summary, ``failed`` when
it raised, and otherwise ``stopped``: the early-stopping scheduler ended it. Its metric
is the best value over its validations, the one its ``best/`` student was saved at.
"""

from __future__ import annotations

import csv
import io
import math
import posixpath
from dataclasses import asdict, dataclass, field

import pandas as pd

from aikd.config import Dimension
from aikd.evaluate.report import pipe_table
from aikd.job import SUMMARY_FILE
from aikd.storage import Location
from aikd.tracking import RUN_FILE

TABLE_CSV, TABLE_MD, PLOT, IMPORTANCES = "trials.csv", "trials.md", "trials.png", "importances.json"
STATUS_COLOURS = {"completed": "tab:blue", "stopped": "tab:orange", "failed": "tab:red"}


@dataclass
class TrialRow:
    trial: str
    status: str
    metric: float | None  # best over the trial's validations
    last: float | None  # at its last validation
    steps: int | None
    validations: int
    params: dict = field(default_factory=dict)
    run: str = ""
    mlflow_run: str | None = None
    error: str | None = None

    def flat(self) -> dict:
        d = asdict(self)
        return {k: v for k, v in d.items() if k != "params"} | d["params"]


def _error_line(error: BaseException | None) -> str | None:
    if error is None:
        return None
    text = str(error).strip().splitlines()
    return (text[-1] if text else type(error).__name__)[:300]


def collect(grid, space: dict[str, Dimension], metric: str, mode: str, trials: Location) -> list[TrialRow]:
    """One row per trial of Tune's result grid, in the order the trials were created."""
    rows, started = [], {}
    for result in grid:
        trial = posixpath.basename(result.path.rstrip("/"))  # trial dirs are named after trial ids
        frame = result.metrics_dataframe
        values = frame[metric].dropna().tolist() if frame is not None and metric in frame else []
        steps = frame["step"].dropna() if frame is not None and "step" in frame else []
        started[trial] = float(frame["timestamp"].min()) if frame is not None and "timestamp" in frame else math.inf
        run = trials.join(trial)
        if result.error is not None:
            status = "failed"
        else:
            status = "completed" if run.join(SUMMARY_FILE).exists() else "stopped"
        mlflow_run = run.join(RUN_FILE).read_json()["run_id"] if run.join(RUN_FILE).exists() else None
        rows.append(TrialRow(
            trial=trial, status=status, metric=(min if mode == "min" else max)(values) if values else None,
            last=values[-1] if values else None, steps=int(steps.max()) if len(steps) else None,
            validations=len(values), params={k: result.config.get(k) for k in space}, run=run.uri,
            mlflow_run=mlflow_run, error=_error_line(result.error)))
    return sorted(rows, key=lambda r: (started[r.trial], r.trial))  # by first report: the order trials ran in


def best_row(rows: list[TrialRow], mode: str) -> TrialRow | None:
    """The trial with the best metric (failed trials never win; a stopped one may, if it is the best)."""
    scored = [r for r in rows if r.metric is not None and r.status != "failed"]
    if not scored:
        return None
    return (min if mode == "min" else max)(scored, key=lambda r: r.metric)


def table_csv(rows: list[TrialRow]) -> str:
    out = io.StringIO()
    flat = [r.flat() for r in rows]
    writer = csv.DictWriter(out, fieldnames=list(flat[0]) if flat else ["trial"])
    writer.writeheader()
    writer.writerows(flat)
    return out.getvalue()


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def table_md(rows: list[TrialRow], metric: str, best: TrialRow | None) -> str:
    params = list(rows[0].params) if rows else []
    head = ["trial", "status", metric, "last", "steps", "validations", *params]
    cells = []
    for r in rows:
        mark = " **best**" if best is not None and r.trial == best.trial else ""
        cells.append([_cell(c) for c in (r.trial + mark, r.status, r.metric, r.last, r.steps, r.validations,
                                         *r.params.values())])
    return pipe_table(pd.DataFrame(cells, columns=head)) + "\n"


def plot(rows: list[TrialRow], space: dict[str, Dimension], metric: str, path: str) -> None:
    """The metric per trial (coloured by status), then against each searched parameter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if r.metric is not None]
    panels = 1 + len(space)
    cols = min(panels, 3)
    grid_rows = (panels + cols - 1) // cols
    fig, axes = plt.subplots(grid_rows, cols, figsize=(4.2 * cols, 3.4 * grid_rows), squeeze=False)
    axes = axes.ravel()
    ax = axes[0]
    ax.bar(range(len(scored)), [r.metric for r in scored], color=[STATUS_COLOURS[r.status] for r in scored])
    ax.set_xticks(range(len(scored)), [r.trial for r in scored], rotation=90, fontsize=7)
    ax.set_title(f"{metric} per trial")
    for colour_status, colour in STATUS_COLOURS.items():
        ax.bar([], [], color=colour, label=colour_status)
    ax.legend(fontsize=7)
    for ax, (dotted, dim) in zip(axes[1:], space.items(), strict=False):
        xs = [r.params[dotted] for r in scored]
        if dim.type == "choice":
            labels = [str(v) for v in dim.values]
            xs = [labels.index(str(x)) for x in xs]
            ax.set_xticks(range(len(labels)), labels, fontsize=7)
        ax.scatter(xs, [r.metric for r in scored], c=[STATUS_COLOURS[r.status] for r in scored])
        if dim.type == "loguniform":
            ax.set_xscale("log")
        ax.set_xlabel(dotted)
        ax.set_ylabel(metric)
    for ax in axes[panels:]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def importances(rows: list[TrialRow], space: dict[str, Dimension], mode: str) -> dict:
    """Optuna's parameter importances over the trials that reached a metric, or why there are none."""
    import optuna
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    from aikd.sweep.space import optuna_distribution

    scored = [r for r in rows if r.metric is not None and r.status != "failed"]
    varied = [k for k in space if len({repr(r.params[k]) for r in scored}) > 1]
    if len(scored) < 2 or not varied:
        return {"importances": {}, "note": f"{len(scored)} scored trials, {len(varied)} parameters that varied: "
                                           "importances need at least 2 and 1"}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    distributions = {k: optuna_distribution(space[k]) for k in space}
    for r in scored:
        study.add_trial(optuna.trial.create_trial(params=r.params, distributions=distributions, value=r.metric))
    # PED-ANOVA compares the best trials with all: the best share must hold at least two trials
    quantile = min(0.5, max(0.1, 2 / len(scored)))
    evaluator = PedAnovaImportanceEvaluator(target_quantile=quantile)
    try:
        values = get_param_importances(study, evaluator=evaluator, params=varied)
    except (ValueError, RuntimeError) as err:
        return {"importances": {}, "note": f"optuna could not compute importances: {err}"}
    return {"importances": values, "evaluator": f"{type(evaluator).__name__}(target_quantile={quantile:g})",
            "trials": len(scored)}


def write_outcome(home: Location, rows: list[TrialRow], space: dict[str, Dimension], metric: str,
                  mode: str) -> dict:
    """Write the table, the plot and the importances under the sweep; hand back the best trial and the files."""
    import tempfile

    best = best_row(rows, mode)
    home.join(TABLE_CSV).write_text(table_csv(rows))
    home.join(TABLE_MD).write_text(table_md(rows, metric, best))
    with tempfile.TemporaryDirectory() as tmp:
        local = posixpath.join(tmp, PLOT)
        plot(rows, space, metric, local)
        with open(local, "rb") as f:
            home.join(PLOT).write_bytes(f.read())
    weights = importances(rows, space, mode)
    home.join(IMPORTANCES).write_json(weights)
    return {"best": best, "importances": weights, "files": [TABLE_CSV, TABLE_MD, PLOT, IMPORTANCES]}
