"""The ingest job's driver: plan partitions, skip the done ones, run the rest on an actor pool, summarise.

Output under ``out``: face shards ``part-NNNNN.parquet`` (one per partition of
``images_per_shard`` images, in sorted path order), ``_parts/part-NNNNN.json`` per
partition (images in, faces out, rejects with reasons, a digest of its inputs), and at
the end ``_rejects.parquet`` and ``_summary.json`` (the job shell's). While the job runs,
``_plan/part-NNNNN.json`` holds the records of each partition still to do (the plan is
made on the driver's disk, :mod:`aikd.ingest.plan`; the actors read their partitions
from here, so the driver never holds them all).

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
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from aikd.actor_pool import map_actors
from aikd.config.ingest import IngestConfig
from aikd.data.schema import label_column
from aikd.data.shards import write_rejects
from aikd.ingest.faces import PARTS_DIR, PLAN_DIR, IngestActor, done_before, plan_of
from aikd.ingest.plan import Partition, Plan, planned
from aikd.job import Job, Outcome, Shape, count_reasons, run_job
from aikd.jobs import JobKind
from aikd.progress import Progress
from aikd.storage import Location, resolve

IN_FLIGHT = 4  # partitions whose manifest is read and plan written at once (object storage round trips)


def sort_out(out: Location, part: Partition) -> tuple[dict | None, dict | None]:
    """(the manifest entry of a partition done before with the same inputs, None), or else (None, its work
    item), its plan written to ``out`` for the actor."""
    if manifest := done_before(out, part.name, part.inputs):
        return manifest, None
    plan_of(out, part.name).write_text(json.dumps(part.records))
    return None, {"name": part.name, "inputs": part.inputs, "images": len(part.records)}


def split_done(out: Location, plan: Plan) -> tuple[list[dict], list[dict], list[str]]:
    """(work items of the partitions to do, manifest entries of those done before, every partition's name), the
    plan read once: a few partitions in flight at a time, in order."""
    todo, done, names = [], [], []

    def collect(sorted_out: tuple[dict | None, dict | None]) -> None:
        manifest, item = sorted_out
        if manifest:
            done.append(manifest)
        else:
            todo.append(item)

    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        pending: deque = deque()
        for part in plan.partitions():
            names.append(part.name)
            pending.append(pool.submit(sort_out, out, part))
            while len(pending) > IN_FLIGHT or (pending and pending[0].done()):
                collect(pending.popleft().result())
        for future in pending:
            collect(future.result())
    return todo, done, names


def remove_orphans(out: Location, names: list[str], todo: list[dict]) -> int:
    """Delete the shards and manifest entries of partitions an earlier run had and this plan has not, and the
    plans of partitions that are not to do."""
    names, doing = set(names), {item["name"] for item in todo}
    orphans = [f for f in out.list_files(".parquet") if posixpath.basename(f.path).startswith("part-")
               and posixpath.basename(f.path) not in names]
    for folder, keep in ((PARTS_DIR, names), (PLAN_DIR, doing)):
        if out.join(folder).exists():
            orphans += [f for f in out.join(folder).list_files(".json")
                        if posixpath.basename(f.path).removesuffix(".json") + ".parquet" not in keep]
    for f in orphans:
        f.delete()
    return len(orphans)


def run_ingest(cfg: IngestConfig) -> dict:
    out = resolve(cfg.out)
    inputs = {"images": cfg.images} | {k: v for k, v in (("landmarks", cfg.landmarks), ("quality", cfg.quality)) if v}
    shape = Shape(out, out.name, inputs=inputs, outputs={"faces": out.uri}, rerun="resume", lock=True)
    with planned(cfg) as plan:  # reads only the inputs: a bad table or pickle is refused before Ray starts
        return run_job(cfg, shape, lambda job: _work(job, plan))


def _work(job: Job, plan: Plan) -> Outcome:
    cfg, out = job.cfg, job.out
    todo, done, names = split_done(out, plan)
    removed = remove_orphans(out, names, todo)
    planned_rejects = plan.rejects
    images_planned = sum(item["images"] for item in todo) + sum(m["images"] for m in done)
    how = f"detecting faces with {cfg.detector.name}" if cfg.detect else "landmarks from " + str(cfg.landmarks)
    job.log(f"{len(names)} partitions ({images_planned} images, {how}), {len(done)} done before, "
            f"{len(todo)} to do")
    new, images, faces, start = [], 0, 0, time.perf_counter()
    with Progress("ingest", "images", sum(item["images"] for item in todo), every_s=cfg.progress_every_s) as progress:
        if todo:
            items = [{k: item[k] for k in ("name", "inputs")} for item in todo]
            for batch in map_actors(items, IngestActor, {"cfg": cfg}, cfg.resources).iter_batches(
                    batch_size=None, batch_format="numpy"):
                for text in batch["manifest"]:
                    new.append(json.loads(str(text)))
                    images, faces = images + new[-1]["images"], faces + new[-1]["faces"]
                    progress.update(images, f"{faces} faces, {len(new)}/{len(todo)} shards")
    order = {name: i for i, name in enumerate(names)}
    manifests = sorted(done + new, key=lambda m: order[m["shard"]])
    rejects = list(planned_rejects) + [(i, why) for m in manifests for i, why in m["rejects"]]
    write_rejects(out.uri, rejects)
    counts = {"images": sum(m["images"] for m in manifests) + len(planned_rejects),
              "faces": sum(m["faces"] for m in manifests),
              "rejected": len(rejects), "shards": sum(1 for m in manifests if m["faces"]),
              "partitions_done_now": len(new), "partitions_done_before": len(done), "orphans_removed": removed}
    rate = round(faces / (time.perf_counter() - start), 1) if new else None  # the faces found now
    fields = {"out": out.uri, "rows": counts["faces"], "detected": cfg.detect, "faces_per_s": rate,
              "labels": [label_column(cfg.label)] if cfg.quality else []}
    return Outcome(counts=counts, rejects=count_reasons(rejects), fields=fields,
                   metrics=counts | ({"faces_per_s": rate} if rate else {}))


JOB = JobKind("ingest", IngestConfig, run_ingest)
