"""The experiment's tables: each student against its teacher, averaged over seeds, with intervals."""

from __future__ import annotations

import numpy as np

from aikd.config import ExperimentConfig
from aikd.distill.metrics import DIRECTION
from aikd.evaluate.bootstrap import interval, verdict


def run_name(teacher: str, variant: str, seed: int) -> str:
    return f"{teacher}-{variant}-s{seed}"


def teacher_model(teacher: str) -> str:
    return f"teacher {teacher}"


def training(summary: dict) -> dict:
    """What a run's summary says of its training: steps, selection and the validation curve."""
    keep = ("step", *DIRECTION)  # every validation metric
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
    import pandas as pd

    from aikd.evaluate.report import pipe_table

    rows = results["rows"]
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    level = results["bootstrap"]["level"]
    out = [f"Student minus teacher in pAUC@{rows[0]['limit']:g} (lower is better), mean over seeds "
           f"{results['seeds']}; in brackets the {level:.0%} interval from {results['bootstrap']['resamples']} "
           f"resamples of {results['bootstrap']['identities']} evaluation identities; a verdict only where "
           f"the interval excludes 0.", ""]
    for fmr in sorted({r["fmr"] for r in rows}):
        table = []
        for teacher in results["teachers"]:
            for variant in results["variants"]:
                cells = [teacher, variant]
                for c in conditions:
                    r = next(r for r in rows if (r["teacher"], r["variant"], r["condition"], r["fmr"]) ==
                             (teacher, variant, c, fmr))
                    mark = {"better": " **better**", "worse": " *worse*"}.get(r["verdict"], "")
                    cells.append(f"{r['difference']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}]{mark}")
                table.append(cells)
        out += [f"FMR {fmr:g}:", "", pipe_table(pd.DataFrame(table, columns=["teacher", "variant", *conditions])), ""]
    return "\n".join(out)
