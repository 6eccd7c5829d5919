"""The ingest job's driver: plan partitions, skip the done ones, run the rest on an actor pool, summarise.

Output under ``out``: face shards ``part-NNNNN.parquet`` (one per partition of
``images_per_shard`` images, in sorted path order), ``_parts/part-NNNNN.json`` per
partition (images in, faces out, rejects with reasons, a digest of its inputs), and at
the end ``_rejects.parquet`` and ``_summary.json`` (the job shell's).

Rerun contract: resume per partition. A partition whose manifest entry carries the same
inputs digest (its images' paths, sizes and modification times, their table rows, and
the settings that shape a row: detector, margin, subject, label) is skipped; any other is
done again under the same name, and shards of partitions that no longer exist are
removed, so no face is lost or stored twice. One job writes an output at a time
(:mod:`aikd.lock`).
"""

from __future__ import annotations

import json
import posixpath
import time

from aikd.actor_pool import map_actors
from aikd.config.ingest import IngestConfig
from aikd.data.ingest import (
    OUTSIDE_ROOT,
    IngestError,
    Record,
    aikd_records,
    check_records,
    folder_records,
    image_files,
    linked_outside,
    read_landmarks,
    require_images,
    require_table_names_images,
)
from aikd.data.schema import label_column
from aikd.data.shards import write_rejects
from aikd.ingest.faces import PARTS_DIR, IngestActor, manifest_of
from aikd.job import Job, Outcome, Shape, count_reasons, digest, run_job
from aikd.jobs import JobKind
from aikd.progress import Progress
from aikd.storage import Location, StorageError, resolve


def list_images(cfg: IngestConfig) -> dict[str, tuple[int, int]]:
    """Every image file under ``cfg.images``: path -> size, mtime (none when the folder is not there)."""
    try:
        return image_files(resolve(cfg.images), cfg.suffixes, missing_ok=True)
    except StorageError as err:
        raise IngestError(f"images: {err}") from None


def records_of(cfg: IngestConfig, files: dict) -> list[Record]:
    """What the job knows of each image before reading it: the table's or the pickles' entries, or (detection)
    only the file's path."""
    root = resolve(cfg.images)
    if cfg.reference_pickles:
        return aikd_records(resolve(cfg.landmarks), resolve(cfg.quality) if cfg.quality else None, cfg.label)
    if cfg.landmarks is not None:
        entries = read_landmarks(resolve(cfg.landmarks))  # its own errors first: a table names the images
        require_images(files, root, cfg.suffixes)
        require_table_names_images(cfg.landmarks, [e.image_id for e in entries], files, root)
        return folder_records(sorted(files), entries)
    require_images(files, root, cfg.suffixes)
    return [Record(path, None) for path in sorted(files)]


def plan(cfg: IngestConfig) -> tuple[list[dict], list[tuple[str, str]]]:
    """The partitions (name, records as JSON, inputs digest, images) and the rows rejected before any read."""
    files = list_images(cfg)
    records = records_of(cfg, files)
    # a listed path is under the root by its name; one reached through a link out of it is refused the same way
    linked = linked_outside(resolve(cfg.images), files)
    problems = check_records(records) if not cfg.detect else [None] * len(records)
    problems = [OUTSIDE_ROOT if r.image_id in linked else why for r, why in zip(records, problems, strict=True)]
    planned = [(r.image_id, why) for r, why in zip(records, problems, strict=True) if why]
    todo = [r for r, why in zip(records, problems, strict=True) if not why]
    settings = {"detector": cfg.detector.model_dump() if cfg.detect else None, "margin": cfg.margin,
                "subject": cfg.subject, "label": cfg.label if cfg.quality else None}
    parts = []
    for k, start in enumerate(range(0, len(todo), cfg.images_per_shard)):
        chunk = [{"image_id": r.image_id, "landmarks": r.landmarks, "bbox": r.bbox, "labels": r.labels,
                  "subject": r.subject}
                 for r in todo[start:start + cfg.images_per_shard]]
        stats = [files.get(rec["image_id"]) for rec in chunk]
        parts.append({"name": f"part-{k:05d}.parquet", "records": json.dumps(chunk), "images": len(chunk),
                      "inputs": digest([settings, chunk, stats])})
    return parts, planned


def split_done(out: Location, parts: list[dict]) -> tuple[list[dict], list[dict]]:
    """(partitions to do, manifest entries of the partitions done before with the same inputs)."""
    todo, done = [], []
    for part in parts:
        entry = manifest_of(out, part["name"])
        manifest = entry.read_json() if entry.exists() else None
        if manifest is not None and manifest["inputs"] == part["inputs"]:
            done.append(manifest)
        else:
            todo.append(part)
    return todo, done


def remove_orphans(out: Location, parts: list[dict]) -> int:
    """Delete the shards and manifest entries of partitions an earlier run had and this plan has not."""
    names = {p["name"] for p in parts}
    orphans = [f for f in out.list_files(".parquet") if posixpath.basename(f.path).startswith("part-")
               and posixpath.basename(f.path) not in names]
    if out.join(PARTS_DIR).exists():
        orphans += [f for f in out.join(PARTS_DIR).list_files(".json")
                    if posixpath.basename(f.path).removesuffix(".json") + ".parquet" not in names]
    for f in orphans:
        f.delete()
    return len(orphans)


def run_ingest(cfg: IngestConfig) -> dict:
    out = resolve(cfg.out)
    inputs = {"images": cfg.images} | {k: v for k, v in (("landmarks", cfg.landmarks), ("quality", cfg.quality)) if v}
    shape = Shape(out, out.name, inputs=inputs, outputs={"faces": out.uri}, rerun="resume", lock=True)
    parts, planned = plan(cfg)  # reads only the inputs: a bad table or pickle is refused before Ray starts
    return run_job(cfg, shape, lambda job: _work(job, parts, planned))


def _work(job: Job, parts: list[dict], planned: list[tuple[str, str]]) -> Outcome:
    cfg, out = job.cfg, job.out
    todo, done = split_done(out, parts)
    removed = remove_orphans(out, parts)
    how = f"detecting faces with {cfg.detector.name}" if cfg.detect else "landmarks from " + str(cfg.landmarks)
    job.log(f"{len(parts)} partitions ({sum(p['images'] for p in parts)} images, {how}), {len(done)} done before, "
            f"{len(todo)} to do")
    new, images, faces, start = [], 0, 0, time.perf_counter()
    with Progress("ingest", "images", sum(p["images"] for p in todo), every_s=cfg.progress_every_s) as progress:
        if todo:
            items = [{k: p[k] for k in ("name", "records", "inputs")} for p in todo]
            for batch in map_actors(items, IngestActor, {"cfg": cfg}, cfg.resources).iter_batches(
                    batch_size=None, batch_format="numpy"):
                for text in batch["manifest"]:
                    new.append(json.loads(str(text)))
                    images, faces = images + new[-1]["images"], faces + new[-1]["faces"]
                    progress.update(images, f"{faces} faces, {len(new)}/{len(todo)} shards")
    order = {p["name"]: i for i, p in enumerate(parts)}
    manifests = sorted(done + new, key=lambda m: order[m["shard"]])
    rejects = [(i, why) for i, why in planned] + [(i, why) for m in manifests for i, why in m["rejects"]]
    write_rejects(out.uri, rejects)
    counts = {"images": sum(m["images"] for m in manifests) + len(planned), "faces": sum(m["faces"] for m in manifests),
              "rejected": len(rejects), "shards": sum(1 for m in manifests if m["faces"]),
              "partitions_done_now": len(new), "partitions_done_before": len(done), "orphans_removed": removed}
    rate = round(faces / (time.perf_counter() - start), 1) if new else None  # the faces found now
    fields = {"out": out.uri, "rows": counts["faces"], "detected": cfg.detect, "faces_per_s": rate,
              "labels": [label_column(cfg.label)] if cfg.quality else []}
    return Outcome(counts=counts, rejects=count_reasons(rejects), fields=fields,
                   metrics=counts | ({"faces_per_s": rate} if rate else {}))


JOB = JobKind("ingest", IngestConfig, run_ingest)
