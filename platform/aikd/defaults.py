"""The embedded default's inputs, built on demand: synthetic faces -> FR model -> teacher labels.

Their numbers live in one place, :class:`aikd.config.EmbeddedDefault`; a job spec that
says ``bootstrap: {root: ...}`` has the inputs it needs built here first (the job shell
asks for them). Each stage is skipped when its output is complete, so the demo, the
default job specs and a resubmitted job share one set of inputs.
"""

from __future__ import annotations

from collections.abc import Callable

from aikd.config import EmbeddedDefault, FRTrainConfig, JobSpec, LabelConfig
from aikd.data.shards import SUMMARY_FILE
from aikd.progress import Progress
from aikd.spec import validate
from aikd.storage import resolve

STAGES = ("faces", "fr-train", "label", "distill")


def ensure_default_inputs(default: EmbeddedDefault, run: Callable[[JobSpec], dict], upto: str = "distill",
                          log=print) -> None:
    """Build the stages before ``upto`` whose outputs are missing; ``run`` runs a job spec (the shell's).

    Stages of a job kind that is not one of them (evaluate, an experiment) are all built.
    """
    from aikd.data.synth import SynthConfig, write_synthetic

    needed = STAGES[:STAGES.index(upto)] if upto in STAGES else STAGES[:-1]
    faces = default.path("faces")
    if "faces" in needed and not resolve(faces).join(SUMMARY_FILE).exists():
        log(f"bootstrap: synthetic faces -> {faces}")
        synth = SynthConfig(identities=default.identities, samples_per_identity=default.samples_per_identity,
                            seed=default.seed)
        with Progress("synth", "faces", synth.total) as shown:
            write_synthetic(faces, synth, progress=shown.advance)
    stages = (("fr-train", FRTrainConfig, "FR pretraining"),
              ("label", LabelConfig, f"teacher labels {default.teachers}"))
    for kind, spec, what in stages:
        cfg = validate(spec, default.stage(kind), source="embedded default")
        if kind in needed and not resolve(cfg.out).join(SUMMARY_FILE).exists():
            log(f"bootstrap: {what} -> {cfg.out}")
            run(cfg)
