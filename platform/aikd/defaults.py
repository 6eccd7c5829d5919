"""The embedded default's inputs, built on demand: synthetic faces -> FR model -> teacher labels.

Their numbers live in one place, :class:`aikd.config.EmbeddedDefault`; a job spec that
says ``bootstrap: {root: ...}`` has the inputs it needs built here first. Each stage is
skipped when its output is complete, so the demo, the default job specs and a
resubmitted job share one set of inputs.
"""

from __future__ import annotations

from typing import Literal

from aikd.config import EmbeddedDefault, FRTrainConfig, LabelConfig
from aikd.data.shards import SUMMARY_FILE as SHARDS_SUMMARY
from aikd.job import SUMMARY_FILE
from aikd.spec import validate
from aikd.storage import resolve

STAGES = ("faces", "fr-train", "label", "distill")


def ensure_default_inputs(default: EmbeddedDefault, upto: Literal["fr-train", "label", "distill"] = "distill",
                          log=print) -> None:
    """Build the stages before ``upto`` whose outputs are missing (the job ``upto`` runs them itself)."""
    from aikd.data.synth import SynthConfig, write_synthetic
    from aikd.frtrain import run_fr_train
    from aikd.label import run_label

    needed = STAGES[:STAGES.index(upto)]
    faces = default.path("faces")
    if "faces" in needed and not resolve(faces).join(SHARDS_SUMMARY).exists():
        log(f"bootstrap: synthetic faces -> {faces}")
        write_synthetic(faces, SynthConfig(identities=default.identities,
                                           samples_per_identity=default.samples_per_identity, seed=default.seed))
    fr = validate(FRTrainConfig, default.stage("fr-train"), source="embedded default")
    if "fr-train" in needed and not resolve(fr.out).join(SUMMARY_FILE).exists():
        log(f"bootstrap: FR pretraining -> {fr.out}")
        run_fr_train(fr)
    label = validate(LabelConfig, default.stage("label"), source="embedded default")
    if "label" in needed and not resolve(label.out).join(SHARDS_SUMMARY).exists():
        log(f"bootstrap: teacher labels {default.teachers} -> {label.out}")
        run_label(label)
