"""The embedded default's inputs, built on demand: synthetic faces -> FR model -> teacher labels.

Each stage is skipped when its output already exists, so the demo, the default
distillation spec and a resubmitted job share one set of inputs.
"""

from __future__ import annotations

from aikd.config import BootstrapConfig, DataConfig, FRTrainConfig, LabelConfig, TeacherSpec
from aikd.storage import resolve


def default_paths(cfg: BootstrapConfig) -> dict[str, str]:
    root = resolve(cfg.root)
    return {name: root.join(name).uri for name in ("faces", "fr_model", "labelled")}


def ensure_default_inputs(cfg: BootstrapConfig, log=print) -> dict[str, str]:
    from aikd.data.synth import SynthConfig, write_synthetic
    from aikd.frtrain import run_fr_train
    from aikd.label import run_label

    paths = default_paths(cfg)
    if not resolve(paths["faces"]).join("_summary.json").exists():
        log(f"bootstrap: synthetic faces -> {paths['faces']}")
        write_synthetic(paths["faces"], SynthConfig(identities=cfg.identities,
                                                    samples_per_identity=cfg.samples_per_identity, seed=cfg.seed))
    if not resolve(paths["fr_model"]).join("card.json").exists():
        log(f"bootstrap: FR pretraining -> {paths['fr_model']}")
        data = DataConfig(shards=[paths["faces"]], image_size=cfg.image_size, split_by="subject_id",
                          val_fraction=0.2, misalignment=0.0, workers=cfg.workers, worker_cpus=cfg.cpus_per_worker,
                          seed=cfg.seed)
        run_fr_train(FRTrainConfig(data=data, out=paths["fr_model"], epochs=cfg.fr_epochs, workers=cfg.workers,
                                   cpus_per_worker=cfg.cpus_per_worker, model_args={"dropout": 0.4}, seed=cfg.seed))
    if not resolve(paths["labelled"]).join("_summary.json").exists():
        log(f"bootstrap: teacher labels {cfg.teachers} -> {paths['labelled']}")
        options = {"serfiq": {"passes": cfg.serfiq_passes}}
        teachers = [TeacherSpec(name=t, options={"model": paths["fr_model"]} | options.get(t, {}))
                    for t in cfg.teachers]
        run_label(LabelConfig(shards=[paths["faces"]], out=paths["labelled"], teachers=teachers,
                              workers=cfg.workers, worker_cpus=cfg.cpus_per_worker))
    return paths
