"""Synthetic face generator throughput on one core.

Baseline in the same run: encoding the same canvases to JPEG alone (the floor any
generator that writes JPEG shards pays), so the ratio shows how much drawing costs on
top. Target from the issue: 10,000 images in under 60 s on one core (>= 167 images/s).
Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402

cv2.setNumThreads(1)

from aikd.data.synth import (  # noqa: E402
    SynthConfig,
    _noise_bank,
    encode_jpeg,
    generate_rows,
    make_identity,
    render_sample,
    write_synthetic,
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--per-identity", type=int, default=20)
    args = parser.parse_args()
    cfg = SynthConfig(identities=max(args.images // args.per_identity, 1), samples_per_identity=args.per_identity)

    t0 = time.perf_counter()
    n = sum(1 for _ in generate_rows(cfg))
    gen_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_synthetic(tmp, cfg)
        write_s = time.perf_counter() - t0

    # baseline: JPEG encoding alone of pre-rendered canvases (subset, then scaled per image)
    bank = _noise_bank(0)
    ident = make_identity(0, 0)
    canvases = [render_sample(cfg, ident, 0, i, bank) for i in range(200)]
    t0 = time.perf_counter()
    for s in canvases:
        encode_jpeg(s.image, s.jpeg_quality)
    encode_rate = len(canvases) / (time.perf_counter() - t0)

    result = {
        "bench": "synth",
        "images": n,
        "generate_images_per_s": round(n / gen_s, 1),
        "generate_and_write_shards_images_per_s": round(n / write_s, 1),
        "seconds_for_10k_images": round(10_000 * write_s / n, 2),
        "baseline_jpeg_encode_only_images_per_s": round(encode_rate, 1),
        "ratio": round((n / write_s) / encode_rate, 3),
        "target_images_per_s": round(10_000 / 60, 1),
        "meets_target": n / write_s >= 10_000 / 60,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
