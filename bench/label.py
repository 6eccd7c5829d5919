"""Teacher throughput, and the SER-FIQ head-only shortcut against m full passes.

Runs in one process on synthetic faces with a small IResNet saved as a model directory
(its weights do not matter for speed): decode + align once, then images/s of each
teacher's scoring. The baseline in the same run is SER-FIQ computed the plain way,
m full forward passes with the same dropout masks; ``serfiq_shortcut_speedup`` is the
ratio. Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch

from aikd.data.pipeline import aligned_views, decode_valid
from aikd.data.synth import SynthConfig, generate_rows
from aikd.models import create_model
from aikd.models.heads import create_head
from aikd.models.transforms import to_input
from aikd.models.weights import card_for, save_model
from aikd.teachers import TeacherBatch, create_teacher
from aikd.teachers.fr_teachers import serfiq_quality


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--model", default="iresnet_tiny")
    parser.add_argument("--passes", type=int, default=100)
    args = parser.parse_args()

    rows = list(generate_rows(SynthConfig(identities=args.images // 8, samples_per_identity=8)))
    batch = {k: np.array([r[k] for r in rows], dtype=object) for k in ("image_id", "subject_id", "image")}
    batch["landmarks"] = np.array([r["landmarks"] for r in rows])
    n = len(rows)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        backbone = create_model(args.model)
        subjects = sorted(set(batch["subject_id"]))
        head = create_head("cosface", 512, len(subjects))
        card = card_for(backbone, "backbone", {"classes": subjects})
        save_model(backbone, tmp, card, extra={"class_centres": head.weight})

        prep = {}
        align_s = timed(lambda: prep.update(zip(("rows", "images", "lm", "rej"),
                                                decode_valid(batch, np.arange(n)), strict=True)))
        size = card.input_size
        aligned = aligned_views(prep["images"], prep["lm"][prep["rows"]], size)
        tb = TeacherBatch(batch["image_id"], batch["subject_id"], aligned, {})
        result = {"bench": "label", "images": n, "model": args.model, "input": size,
                  "decode_align_images_per_s": round(n / align_s, 1), "teachers_images_per_s": {}}
        for name, options in (("serfiq", {"passes": args.passes}), ("crfiqa", {}), ("norm", {})):
            teacher = create_teacher(name, model=tmp, **options)
            teacher.score(TeacherBatch(tb.image_ids[:8], tb.subject_ids[:8], aligned[:8], {}))  # warm-up
            result["teachers_images_per_s"][name] = round(n / timed(lambda t=teacher: t.score(tb)), 1)

        x = to_input(aligned[:64])
        fast = timed(lambda: serfiq_quality(backbone.eval(), x, args.passes, 0.5,
                                            torch.Generator().manual_seed(0), shortcut=True))
        slow = timed(lambda: serfiq_quality(backbone.eval(), x, args.passes, 0.5,
                                            torch.Generator().manual_seed(0), shortcut=False))
        result |= {"serfiq_passes": args.passes, "serfiq_shortcut_images_per_s": round(64 / fast, 1),
                   "serfiq_full_passes_images_per_s": round(64 / slow, 1),
                   "serfiq_shortcut_speedup": round(slow / fast, 2)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
