"""The main job on the embedded default: the whole slice, local, CPU only.

    synthetic faces -> FR pretraining (Ray Train) -> teacher labels (SER-FIQ, CR-FIQA, norm)
    -> AI-KD distillation from SER-FIQ (Ray Train + DeepSpeed, 2 CPU workers)
    -> the student registered in MLflow (models:/aikd-demo-student, alias candidate)
    -> evaluation on new synthetic identities: teachers vs the registered student,
       aligned / misaligned / box

Every stage writes under one run URI and is skipped when its output exists, so a demo
that was interrupted continues where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from aikd.config import DistillConfig, EmbeddedDefault, EvaluateConfig, FIQASpec, RegisterConfig
from aikd.data.shards import SUMMARY_FILE as SHARDS_SUMMARY
from aikd.data.synth import SynthConfig
from aikd.job import SUMMARY_FILE
from aikd.spec import validate
from aikd.storage import resolve
from aikd.tracking import tracking_uri

REGISTERED = "aikd-demo-student"


@dataclass(frozen=True)
class DemoPlan:
    default: EmbeddedDefault
    distill: DistillConfig
    evaluate: EvaluateConfig
    eval_faces: str
    eval_synth: SynthConfig


def demo_plan(out: str, distill_epochs: int = 4, eval_identities: int = 80, **sizes) -> DemoPlan:
    """Every stage's config: the embedded default under ``out`` (``sizes`` override its numbers), then
    distillation from its teacher and an evaluation on new identities."""
    root = resolve(out)
    default = EmbeddedDefault(root=root.uri, **sizes)
    teacher, fr_model = default.teacher, default.path("fr_model")
    register = RegisterConfig(name=REGISTERED, aliases=["candidate"])
    distill = validate(DistillConfig, {"bootstrap": default, "name": f"demo-{teacher}", "register": register,
                                       "storage": root.join("distill").uri, "epochs": distill_epochs}, "demo")
    eval_faces = root.join("eval_faces").uri
    student = f"models:/{REGISTERED}@candidate"  # evaluated as the registry serves it
    evaluate = EvaluateConfig(
        shards=[eval_faces], out=root.join("report").uri, fr_model=fr_model,
        models=[FIQASpec(name=f"teacher {teacher}", teacher=teacher, options=default.teacher_options(teacher)),
                FIQASpec(name="teacher norm", teacher="norm", options=default.teacher_options("norm")),
                FIQASpec(name=f"AI-KD student ({teacher})", student=student)],
        misalignment=[3.0, 6.0], box=True, fmr=[1e-3, 1e-2], non_mated=200_000, resources=default.resources,
        compare=[(f"AI-KD student ({teacher})", f"teacher {teacher}")])
    # new identities: another seed draws other people
    eval_synth = SynthConfig(identities=eval_identities, samples_per_identity=10, seed=default.seed + 1)
    return DemoPlan(default, distill, evaluate, eval_faces, eval_synth)


def verdict(result: dict) -> list[str]:
    """Does the student beat its teacher, per condition and FMR (pAUC@0.2, with the paired difference's interval)?"""
    level = result["bootstrap"]["level"]
    lines = []
    for d in sorted((d for d in result["differences"] if d["limit"] == 0.2), key=lambda d: d["fmr"]):
        lines.append(f"FMR {d['fmr']:g}, {d['condition']}: student vs its teacher: {d['verdict']} (pAUC@0.2 "
                     f"difference {d['difference']:+.4f}, {level:.0%} interval [{d['low']:+.4f}, {d['high']:+.4f}])")
    return lines


def run_demo(out: str = "runs/demo", log=print, **sizes) -> dict:
    from ray.data import DataContext

    from aikd.data.synth import write_synthetic
    from aikd.defaults import ensure_default_inputs
    from aikd.distill.run import run_distill
    from aikd.evaluate.report import pauc_overview, pipe_table
    from aikd.evaluate.run import run_evaluate
    from aikd.jobs import run_config
    from aikd.progress import Progress
    from aikd.runtime import ensure_ray

    start = time.perf_counter()
    plan = demo_plan(out, **sizes)
    distill, evaluate = plan.distill, plan.evaluate
    ensure_ray()
    # each stage shows its own progress (aikd.progress); Ray Data's bars would bury it
    DataContext.get_current().enable_progress_bars = False
    ensure_default_inputs(plan.default, run=run_config, log=log)
    run = resolve(distill.storage).join(distill.name)
    summary = json.loads(run.join(SUMMARY_FILE).read_text()) if run.join(SUMMARY_FILE).exists() else {}
    if "registered" not in summary:  # an unfinished run resumes from its checkpoint, then registers
        log(f"demo: AI-KD distillation from {plan.default.teacher} -> {run.uri}")
        summary = run_distill(distill)
    registered = summary["registered"]
    if not resolve(plan.eval_faces).join(SHARDS_SUMMARY).exists():
        log(f"demo: evaluation faces (new identities) -> {plan.eval_faces}")
        with Progress("synth", "faces", plan.eval_synth.total) as shown:
            write_synthetic(plan.eval_faces, plan.eval_synth, progress=shown.advance)
    log(f"demo: evaluation -> {evaluate.out}")
    result = run_evaluate(evaluate)
    overview = pipe_table(pauc_overview(result["pauc"], 0.2))
    return {"report": result["report"], "table": result["table"], "overview": overview, "verdict": verdict(result),
            "registered": registered, "tracking_uri": tracking_uri(distill.tracking),
            "minutes": round((time.perf_counter() - start) / 60, 1)}
