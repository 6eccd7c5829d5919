"""The main job on the embedded default: everything local, no GPU, no cloud account.

Today's slice: synthetic faces -> shards -> the streaming pair pipeline (one epoch),
with a preview of aligned/misaligned pairs. Later stages join as they are built.
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from aikd.config import DataConfig
from aikd.data.pipeline import face_pipeline
from aikd.data.shards import read_summary
from aikd.data.synth import SynthConfig, write_synthetic
from aikd.runtime import ensure_ray
from aikd.storage import resolve


def preview(batch: dict, n: int = 8) -> np.ndarray:
    """Aligned views on the top row, their misaligned twins below (BGR for OpenCV)."""
    top = np.hstack(list(batch["aligned"][:n]))
    bottom = np.hstack(list(batch["misaligned"][:n]))
    return np.vstack([top, bottom])[..., ::-1]


def run_demo(out: str, identities: int = 100, samples_per_identity: int = 10, image_size: int = 64,
             misalignment: float = 3.0, progress=None) -> dict:
    root = resolve(out)
    faces = root.join("faces").uri
    if not root.join("faces", "_summary.json").exists():
        write_synthetic(faces, SynthConfig(identities=identities, samples_per_identity=samples_per_identity),
                        progress=progress)
    ensure_ray()
    cfg = DataConfig(shards=[faces], image_size=image_size, misalignment=misalignment, val_fraction=0.05)
    pipeline = face_pipeline(cfg, "train", epochs=1)
    start, n, first = time.perf_counter(), 0, None
    for batch in pipeline.dataset.iter_batches(batch_size=64, batch_format="numpy"):
        n += len(batch["image_id"])
        first = batch if first is None else first
    elapsed = time.perf_counter() - start
    ok, png = cv2.imencode(".png", preview(first))
    root.join("pairs_preview.png").write_bytes(png.tobytes())
    return {
        "faces": faces,
        "synth": read_summary(faces),
        "pipeline": {"train_pairs": n, "seconds": round(elapsed, 2), "pairs_per_s": round(n / elapsed, 1),
                     "rejected": len(pipeline.rejects())},
        "preview": root.join("pairs_preview.png").uri,
    }
