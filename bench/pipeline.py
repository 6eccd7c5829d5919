"""Training pipeline throughput: Ray Data pairs vs the reference per-sample path.

Both deliver batches of 64 aligned + misaligned 112x112 views of the same synthetic
faces with the same number of worker processes (2 by default):

* aikd: face shards -> Ray Data ``read_parquet`` -> ``map_batches(make_pairs)``
  (batched transform estimate, OpenCV warps) -> uint8 NHWC batches. Normalisation
  is left to the training step, on the accelerator.
* reference: a torch DataLoader over a map-style dataset of image files, as the AI-KD
  release does it: PIL open, per-image similarity estimate (Umeyama via SVD, as
  skimage's SimilarityTransform), warp, back to PIL, twice (aligned and perturbed),
  then ToTensor/Normalize per sample and the default collate.

Rates: ``steady`` counts from the first delivered batch to the last (what a training
run sees once its workers are up; the aikd pipeline starts its actor pool once for all
epochs), ``end_to_end`` includes start-up (Ray actor processes ~2 s here, DataLoader
forks). ``ratio`` is the steady-state ratio; both are printed.

Memory: peak proportional set size (PSS, shared pages split fairly) of this process
and all its children (Ray's processes included), at 1x and 4x the shards.
Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time

import cv2
import numpy as np
import psutil
import torch
from PIL import Image

from aikd.align import template
from aikd.data.shards import read_shards
from aikd.data.synth import SynthConfig, write_synthetic


# ---------------------------------------------------------------- reference-style path
def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Per-image similarity estimate the way skimage.transform.SimilarityTransform does it."""
    n = src.shape[0]
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_d, dst_d = src - src_mean, dst - dst_mean
    a = dst_d.T @ src_d / n
    d = np.ones(2)
    if np.linalg.det(a) < 0:
        d[1] = -1
    u, s, vt = np.linalg.svd(a)
    t = np.eye(3)
    t[:2, :2] = u @ np.diag(d) @ vt
    scale = 1.0 / src_d.var(0).sum() * (s @ d)
    t[:2, 2] = dst_mean - scale * (t[:2, :2] @ src_mean)
    t[:2, :2] *= scale
    return t[:2]


class ReferenceDataset(torch.utils.data.Dataset):
    def __init__(self, paths, landmarks, size=112, strength=3.0):
        self.paths, self.landmarks, self.size, self.strength = paths, landmarks, size, strength
        self.dst = template(size)

    def __len__(self):
        return len(self.paths)

    def _to_tensor_normalised(self, pil: Image.Image) -> torch.Tensor:
        t = torch.from_numpy(np.asarray(pil, np.float32) / 255.0).permute(2, 0, 1)  # ToTensor
        return (t - 0.5) / 0.5  # Normalize(mean=0.5, std=0.5)

    def _align(self, img: np.ndarray, lm: np.ndarray) -> Image.Image:
        m = umeyama(lm.reshape(5, 2), self.dst)
        return Image.fromarray(cv2.warpAffine(img, m, (self.size, self.size), borderValue=0))

    def __getitem__(self, i):
        img = np.asarray(Image.open(self.paths[i]).convert("RGB"))
        lm = self.landmarks[i]
        noisy = lm + np.random.uniform(-self.strength, self.strength, lm.shape)
        return self._to_tensor_normalised(self._align(img, lm)), self._to_tensor_normalised(self._align(img, noisy))


def reference_rate(shards: str, workdir: str, workers: int, batch: int) -> dict:
    table = read_shards(shards, columns=["image_id", "image", "landmarks"])
    paths = []
    for image_id, blob in zip(table.column("image_id").to_pylist(), table.column("image").to_pylist(), strict=True):
        path = os.path.join(workdir, image_id)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(blob)
        paths.append(path)
    lms = np.array(table.column("landmarks").to_pylist(), np.float64)
    loader = torch.utils.data.DataLoader(ReferenceDataset(paths, lms), batch_size=batch, num_workers=workers,
                                         shuffle=True, persistent_workers=False)
    return _timed((a.shape[0] for a, _ in loader))


def _timed(batch_sizes) -> dict:
    """Consume an iterator of batch sizes; rates end to end and after the first batch."""
    t0 = time.perf_counter()
    n = first_n = 0
    t_first = None
    for size in batch_sizes:
        n += size
        if t_first is None:
            t_first, first_n = time.perf_counter(), size
    t_end = time.perf_counter()
    return {"end_to_end": n / (t_end - t0), "steady": (n - first_n) / (t_end - t_first),
            "first_batch_s": t_first - t0}


# ---------------------------------------------------------------- aikd path
def aikd_rate(shards: str, batch: int, workers: int) -> dict:
    from aikd.config import DataConfig, Resources
    from aikd.data.pipeline import face_pipeline

    cfg = DataConfig(shards=[shards], image_size=112, val_fraction=0.0, resources=Resources(workers=workers))
    batches = face_pipeline(cfg).dataset.iter_batches(batch_size=batch, batch_format="numpy")
    return _timed(len(b["aligned"]) for b in batches)


class PeakPSS:
    """Samples the PSS of this process tree in a thread; ``peak_mb`` after ``stop``."""

    def __init__(self, interval: float = 0.25):
        self.interval, self.peak = interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        me = psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                total += p.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return round(self.peak / 2**20, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=6000, help="images at 1x")
    parser.add_argument("--rows-per-shard", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    import ray
    from ray.data import DataContext

    with tempfile.TemporaryDirectory() as tmp:
        one = os.path.join(tmp, "x1")
        four = os.path.join(tmp, "x4")
        per_id = 20
        write_synthetic(one, SynthConfig(identities=args.images // per_id, samples_per_identity=per_id, seed=0),
                        rows_per_shard=args.rows_per_shard)
        write_synthetic(four, SynthConfig(identities=4 * args.images // per_id, samples_per_identity=per_id,
                                          seed=0), rows_per_shard=args.rows_per_shard)

        ref = reference_rate(one, os.path.join(tmp, "files"), args.workers, args.batch)

        ray.init(num_cpus=args.workers, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        DataContext.get_current().enable_progress_bars = False
        with PeakPSS() as mem1:
            rate = aikd_rate(one, args.batch, args.workers)
        with PeakPSS() as mem4:
            rate4 = aikd_rate(four, args.batch, args.workers)
        ray.shutdown()

    result = {
        "bench": "pipeline",
        "workers": args.workers,
        "images_1x": args.images,
        "aikd_images_per_s": round(rate["steady"], 1),
        "reference_images_per_s": round(ref["steady"], 1),
        "ratio": round(rate["steady"] / ref["steady"], 3),
        "aikd_images_per_s_end_to_end": round(rate["end_to_end"], 1),
        "reference_images_per_s_end_to_end": round(ref["end_to_end"], 1),
        "ratio_end_to_end": round(rate["end_to_end"] / ref["end_to_end"], 3),
        "aikd_first_batch_s": round(rate["first_batch_s"], 2),
        "reference_first_batch_s": round(ref["first_batch_s"], 2),
        "aikd_images_per_s_4x": round(rate4["steady"], 1),
        "peak_pss_mb_1x": mem1.peak_mb,
        "peak_pss_mb_4x": mem4.peak_mb,
        "memory_growth_4x_over_1x": round(mem4.peak / max(mem1.peak, 1), 3),
        "goal_ratio": 1.5,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
