"""Face detection throughput: the batched mtcnn detector against the same networks run as reference code does.

Measured in one run, on the same photos (scikit-image's astronaut portrait, resized to
each size, slightly shifted from photo to photo):

* batched: ``detector.detect(photos)`` on batches of ``--batch`` photos, the networks and
  their input in channels-last layout (the detector as aikd runs it);
* reference-style: the same networks and code, one photo per call, in torch's default
  (contiguous) layout, as the reference implementation feeds them.

Per size (250x250 and 640x480): faces/s of each, faces/s per core (``--threads`` torch
threads) and ``speedup`` = batched / reference-style. Both find the same faces (checked).
Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np
import torch

from aikd.detect import create_detector

SIZES = {"250x250": (250, 250), "640x480": (640, 480)}


def photos(width: int, height: int, count: int) -> list[np.ndarray]:
    from skimage import data

    base = cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_AREA)
    return [np.ascontiguousarray(np.roll(base, (k % 5, k % 7), axis=(0, 1))) for k in range(count)]


def faces_per_s(run, images: list[np.ndarray], batch: int, repeats: int) -> tuple[float, int]:
    run(images[:batch])  # warm-up: first calls allocate
    found, start = 0, time.perf_counter()
    for _ in range(repeats):
        for k in range(0, len(images), batch):
            found += sum(len(f) for f in run(images[k:k + batch]))
    return found / (time.perf_counter() - start), found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batched = create_detector("mtcnn", device="cpu")
    reference = create_detector("mtcnn", device="cpu")
    reference.use_layout(torch.contiguous_format)
    result = {"threads": args.threads, "photos": args.photos, "batch": args.batch}
    for name, (width, height) in SIZES.items():
        images = photos(width, height, args.photos)
        fast, found_fast = faces_per_s(batched.detect, images, args.batch, args.repeats)
        slow, found_slow = faces_per_s(lambda imgs: [reference.detect([i])[0] for i in imgs], images, 1, args.repeats)
        assert found_fast == found_slow == args.photos * args.repeats, (found_fast, found_slow)
        result[name] = {"batched_faces_per_s": round(fast, 1), "reference_faces_per_s": round(slow, 1),
                        "batched_faces_per_s_per_core": round(fast / args.threads, 1), "speedup": round(fast / slow, 2)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
