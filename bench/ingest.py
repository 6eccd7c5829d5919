"""The ingest job (Ray Data, a partition of images per actor call) against the same work in one process.

Measured in one run, on ``--images`` synthetic faces written as JPEG files under
``<subject>/<file>`` with a CSV landmarks table (written before, not timed):

* job: :func:`aikd.ingest.run.run_ingest` with a table (Ray started before, not timed:
  planning, actor start-up, reads, the full decode check of every image and the shards'
  writes are). ``--workers`` actors of one CPU each.
* single process: the converter the job replaced, as it worked: the same plan, then
  every partition read, checked and written in turn in this process
  (:func:`aikd.ingest.faces.ingest_partition`, 8 reader threads, no Ray).
  ``ratio_vs_single_process`` = job faces/s / single-process faces/s over the 4N
  images (the same files linked 4 times under other subjects): the job's start-up (a
  second or two) is a fixed cost, so ``ratio_vs_single_process_1x`` over N shows it.
* driver memory: this process's RSS while the job runs over N images and over 4N, peak
  minus the RSS at the call; ``memory_growth_4x_over_1x`` is their ratio (a growth of a
  few MB is noise, so the MB are reported too), ``driver_bytes_per_image`` the slope
  between them. A small warm-up job comes first.
* detection: the job with the detector (mtcnn, default options) over ``--detect-images``
  of the photos: photos/s and faces/s per actor CPU.

Goals (2 vCPUs): ratio_vs_single_process >= 1.0 (the job must not lose on a small box
while it scales out), memory_growth_4x_over_1x <= 1.5. Prints one JSON object as its
last line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import ray

from aikd.config import IngestConfig, Resources
from aikd.data.synth import SynthConfig, generate_rows
from aikd.ingest.faces import ingest_partition
from aikd.ingest.plan import planned
from aikd.ingest.run import run_ingest
from aikd.storage import resolve
from score import PeakRSS  # beside this file


def write_photos(root: Path, n: int) -> Path:
    """``n`` synthetic faces as files, and the landmarks table naming them; returns the table."""
    ids = max(1, n // 10)
    lines = []
    for row in generate_rows(SynthConfig(identities=ids, samples_per_identity=-(-n // ids), seed=3)):
        if len(lines) == n:
            break
        path = root / row["image_id"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(row["image"])
        lines.append(",".join([row["image_id"], *(f"{v:.3f}" for v in row["landmarks"])]))
    table = root.parent / f"{root.name}.csv"
    table.write_text("\n".join(lines) + "\n")
    return table


def copies(root: Path, table: Path, k: int) -> tuple[Path, Path]:
    """The photos ``k`` times (hard links under other subject names) and their table."""
    out = root.parent / f"{root.name}_x{k}"
    lines = []
    for copy in range(k):
        for line in table.read_text().splitlines():
            path = line.split(",", 1)[0]
            target = out / f"c{copy}_{path}"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(root / path, target)
            lines.append(f"c{copy}_{line}")
    copied = out.parent / f"{out.name}.csv"
    copied.write_text("\n".join(lines) + "\n")
    return out, copied


def timed_job(cfg: IngestConfig) -> dict:
    with PeakRSS() as memory:
        start = time.perf_counter()
        summary = run_ingest(cfg)
        seconds = time.perf_counter() - start
    faces = summary["counts"]["faces"]
    return {"faces": faces, "seconds": round(seconds, 2), "faces_per_s": round(faces / seconds, 1),
            "driver_growth_mb": round(memory.growth_mb, 1), "rejected": summary["counts"]["rejected"]}


def single_process(cfg: IngestConfig) -> dict:
    start = time.perf_counter()
    with planned(cfg) as plan:
        faces = sum(ingest_partition(cfg, resolve(cfg.out), p.name, p.records, p.inputs, None)["faces"]
                    for p in plan.partitions())
    seconds = time.perf_counter() - start
    return {"faces": faces, "seconds": round(seconds, 2), "faces_per_s": round(faces / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--per-shard", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--detect-images", type=int, default=200)
    args = parser.parse_args()
    ray.init(num_cpus=args.workers, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    photos = work / "photos"
    table = write_photos(photos, args.images)
    many, many_table = copies(photos, table, 4)
    actors = Resources(workers=args.workers, cpus_per_worker=1.0)

    def spec(images: Path, landmarks: Path | None, out: str, **fields) -> IngestConfig:
        return IngestConfig(images=str(images), landmarks=str(landmarks) if landmarks else None,
                            out=str(work / out), images_per_shard=args.per_shard, resources=actors,
                            tracking={"enabled": False}, **fields)

    warm_photos = work / "warm"
    warm_table = write_photos(warm_photos, 50)
    run_ingest(spec(warm_photos, warm_table, "warm_out"))  # Ray Data's first stream, not counted
    alone = single_process(spec(photos, table, "single_out"))
    alone_4x = single_process(spec(many, many_table, "single_4x_out"))
    job = timed_job(spec(photos, table, "job_out"))
    job_4x = timed_job(spec(many, many_table, "job_4x_out"))
    subset = work / "detect"
    for path in sorted(p for p in photos.rglob("*.jpg"))[:args.detect_images]:
        (subset / path.relative_to(photos)).parent.mkdir(parents=True, exist_ok=True)
        os.link(path, subset / path.relative_to(photos))
    detect = timed_job(spec(subset, None, "detect_out"))
    ratio = job_4x["faces_per_s"] / alone_4x["faces_per_s"]
    growth = job_4x["driver_growth_mb"] / max(job["driver_growth_mb"], 1.0)
    slope = (job_4x["driver_growth_mb"] - job["driver_growth_mb"]) * 2**20 / (3 * args.images)
    result = {
        "bench": "ingest", "images": args.images, "per_shard": args.per_shard, "workers": args.workers,
        "single_process": alone, "single_process_4x": alone_4x, "job": job, "job_4x": job_4x,
        "ratio_vs_single_process": round(ratio, 2),
        "ratio_vs_single_process_1x": round(job["faces_per_s"] / alone["faces_per_s"], 2),
        "memory_growth_4x_over_1x": round(growth, 2), "driver_bytes_per_image": round(slope),
        "detection": detect | {"photos_per_s_per_cpu": round(args.detect_images / detect["seconds"] / args.workers,
                                                              1)},
        "goals_met": {"ratio_vs_single_process>=1.0": ratio >= 1.0, "memory_growth_4x_over_1x<=1.5": growth <= 1.5},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
