"""The streaming training pipeline: face shards -> Ray Dataset of aligned/misaligned pairs.

    shard URIs (one dataset row each)
      -> map_batches(PairMaker, actor pool): stream each shard's record batches; per batch
         (make_pairs) split by a stable hash of image_id, decode, estimate every
         transform of the batch at once, warp the aligned view and (training only) the
         misaligned view with fresh landmark noise per sample and epoch
      -> batches {aligned, misaligned, quality, image_id, subject_id, epoch}, views uint8 NHWC RGB

One call per shard is what spreads the work: Ray's Parquet reader packs small files
into one read task, which left a whole epoch's decoding to one core. Long-lived actors,
each with calls queued, avoid the gap between short tasks that Ray's scheduler leaves
on a busy machine (measured: ~0.2 s per task on 2 cores).

Noise is keyed by (seed, epoch, image_id), never by the order rows arrive in, so a run
is reproducible however Ray schedules the blocks. Rows that cannot be decoded or
aligned leave the stream with a reason, collected by a small actor (:class:`RejectLog`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import pyarrow.parquet as pq
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from aikd.actor_pool import map_actors
from aikd.align import degenerate_reason, outside_image, perturb, similarity_batch, template, warp_rgb
from aikd.config import DataConfig
from aikd.data.decode import decode_image
from aikd.data.schema import IMAGE, IMAGE_ID, LANDMARKS, SUBJECT_ID, ShardSchemaError, validate_schema
from aikd.data.shards import shard_files
from aikd.data.split import held_out, stable_hash
from aikd.errors import AikdError
from aikd.storage import Location, resolve

Split = Literal["train", "val", "all"]
VAL_NOISE_EPOCH = 2**31 - 1


@ray.remote(num_cpus=0)
class RejectLog:
    """Collects (image_id, reason) from map tasks anywhere in the cluster."""

    def __init__(self) -> None:
        self.rows: dict[str, str] = {}

    def add(self, rejects: list[tuple[str, str]]) -> None:
        self.rows.update(rejects)  # keyed by id: re-executed blocks do not double count

    def get(self) -> list[tuple[str, str]]:
        return sorted(self.rows.items())


def _on_this_node(actor):
    """The actor placed on the caller's node (the job's driver): it lives as long as the one reading it.

    Left to Ray, a 0-CPU actor may land on any node, and a worker node lost mid-run
    would take the log (and the run's summary) with it.
    """
    here = ray.get_runtime_context().get_node_id()
    return actor.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False))


def _noise_rngs(hashes: np.ndarray, seed: int, epoch: int):
    for h in hashes:
        yield np.random.default_rng([seed, epoch, int(h)])


def decode_rows(batch: dict, rows: np.ndarray, label: str | None = None):
    """Decode the given rows; bad landmarks, labels and images get a reason instead.

    Returns (kept row indices, BGR images, all landmarks as (N, 10) float64,
    {row index: reason} of the rejected rows).
    """
    ids = batch[IMAGE_ID]
    landmarks = np.stack([np.asarray(v, np.float64) for v in batch[LANDMARKS]]) if len(ids) else np.zeros((0, 10))
    reasons = degenerate_reason(landmarks) if len(ids) else np.array([], object)
    labels = np.asarray(batch[label], np.float64) if label else None
    images: list[np.ndarray] = []
    good: list[int] = []
    rejected: dict[int, str] = {}
    for i in rows:
        i = int(i)
        if reasons[i]:
            rejected[i] = str(reasons[i])
            continue
        if labels is not None and not np.isfinite(labels[i]):
            rejected[i] = f"non-finite label {label}"
            continue
        image, why = decode_image(batch[IMAGE][i])
        if image is None:
            rejected[i] = why
            continue
        if outside_image(landmarks[i], np.array([image.shape[1], image.shape[0]])).any():
            rejected[i] = "landmarks outside the image"
            continue
        images.append(image)
        good.append(i)
    return np.array(good, dtype=np.int64), images, landmarks, rejected


def decode_valid(batch: dict, rows: np.ndarray, label: str | None = None):
    """Decode the given rows, rejecting bad landmarks, labels and images with a reason.

    Returns (kept row indices, BGR images, all landmarks as (N, 10) float64, rejects as
    (image_id, reason) in row order).
    """
    good, images, landmarks, rejected = decode_rows(batch, rows, label)
    ids = batch[IMAGE_ID]
    return good, images, landmarks, [(str(ids[i]), why) for i, why in rejected.items()]


def aligned_views(images: list[np.ndarray], landmarks: np.ndarray, size: int) -> np.ndarray:
    """Properly aligned RGB crops of decoded BGR images."""
    return warp_rgb(images, similarity_batch(landmarks, template(size)), size)


def make_pairs(batch: dict, *, cfg: DataConfig, split: Split, epoch: int) -> tuple[dict, list[tuple[str, str]]]:
    """One batch of shard rows: select the split, decode, align, misalign (training only).

    Returns the output batch and the rejected rows (image_id, reason).
    """
    ids = batch[IMAGE_ID]
    hashes = stable_hash(ids, cfg.seed)  # keys the noise: per image, whatever the split
    keep = np.ones(len(ids), bool)
    if split != "all":
        in_val = held_out(batch, cfg)
        keep = in_val if split == "val" else ~in_val
    good_idx, images, landmarks, rejects = decode_valid(batch, np.flatnonzero(keep), cfg.label)

    size = cfg.image_size
    good = len(good_idx) > 0
    out = {IMAGE_ID: np.asarray(ids)[good_idx].astype(str),
           SUBJECT_ID: np.array([str(s) if s is not None else "" for s in np.asarray(batch[SUBJECT_ID])[good_idx]])}
    aligned = aligned_views(images, landmarks[good_idx], size)
    out["aligned"] = aligned
    if cfg.misaligned_view and (split == "train" or (split == "val" and cfg.val_misaligned)):
        noise_epoch = epoch if split == "train" else VAL_NOISE_EPOCH  # validation: the same views every time
        noisy = np.stack([perturb(landmarks[i], cfg.misalignment, rng, cfg.misalignment_relative)
                          for i, rng in zip(good_idx, _noise_rngs(hashes[good_idx], cfg.seed, noise_epoch),
                                            strict=True)]) if good else np.zeros((0, 10))
        if good:
            # Noise can make landmarks coincide only at absurd strengths; then reuse the clean crop.
            ok = degenerate_reason(noisy) == ""
            noisy[~ok] = landmarks[good_idx][~ok]
        out["misaligned"] = warp_rgb(images, similarity_batch(noisy, template(size)), size)
    if cfg.label is not None:
        out["quality"] = np.asarray(batch[cfg.label], np.float32)[good_idx]
    return out, rejects


def unit_batches(uri: str, row_group: int, columns: list[str], batch_size: int):
    """The rows of one work unit as dicts of numpy columns, ``batch_size`` rows at a time."""
    location = resolve(str(uri))
    shard = pq.ParquetFile(location.fs.open_input_file(location.path))
    for record_batch in shard.iter_batches(batch_size=batch_size, columns=columns, row_groups=[int(row_group)]):
        yield {name: record_batch.column(name).to_numpy(zero_copy_only=False) for name in columns}


class PairMaker:
    """Actor body for map_batches over work units (epoch, shard URI, row group)."""

    def __init__(self, cfg: DataConfig, split: Split, reject_log=None):
        cv2.setNumThreads(1)  # Ray already runs one worker per core
        self.cfg, self.split, self.reject_log = cfg, split, reject_log
        self.columns = [IMAGE_ID, SUBJECT_ID, IMAGE, LANDMARKS] + ([cfg.label] if cfg.label else [])

    def __call__(self, units: dict):
        for epoch, uri, row_group in zip(units["epoch"], units["uri"], units["row_group"], strict=True):
            for batch in unit_batches(uri, row_group, self.columns, self.cfg.batch_size):
                out, rejects = make_pairs(batch, cfg=self.cfg, split=self.split, epoch=int(epoch))
                if rejects and self.reject_log is not None:
                    self.reject_log.add.remote(rejects)
                if len(out[IMAGE_ID]):
                    out["epoch"] = np.full(len(out[IMAGE_ID]), epoch, np.int32)
                    yield out


@dataclass(frozen=True)
class WorkUnit:
    """One row group of one shard: the grain of work and of load balance."""

    uri: str
    row_group: int
    rows: int


@dataclass
class FacePipeline:
    """A lazily executed Ray Dataset plus the log of rows it rejected."""

    dataset: ray.data.Dataset
    reject_log: ray.actor.ActorHandle
    units: list[WorkUnit]
    skipped_rows: int = 0  # rows of whole work units left out at the start (resume)

    @property
    def rows_per_epoch(self) -> int:
        """Rows of all splits per epoch (the split is only known once ids are hashed)."""
        return sum(u.rows for u in self.units)

    def rejects(self) -> list[tuple[str, str]]:
        """Rows rejected so far (complete once the dataset has been consumed)."""
        return logged_rejects(self.reject_log)


def plan_units(cfg: DataConfig) -> list[WorkUnit]:
    """Every row group of every shard, each shard's schema checked before any work starts."""
    files = [f for uri in cfg.shards for f in shard_files(uri)]
    if len({type(f.fs) for f in files}) > 1:
        raise AikdError(f"all shards of one dataset must be on one kind of storage, got {cfg.shards}")
    labels = (cfg.label,) if cfg.label else ()

    def inspect(f: Location) -> list[WorkUnit]:
        try:
            meta = pq.read_metadata(f.path, filesystem=f.fs)
        except (OSError, ValueError) as err:
            raise ShardSchemaError(f"{f.uri}: not a readable Parquet file ({err})") from None
        validate_schema(meta.schema.to_arrow_schema(), f.uri, labels)
        return [WorkUnit(f.uri, i, meta.row_group(i).num_rows) for i in range(meta.num_row_groups)]

    with ThreadPoolExecutor(16) as pool:  # metadata reads are round trips to storage
        return [unit for units in pool.map(inspect, files) for unit in units]


def _epoch_order(units: list[WorkUnit], cfg: DataConfig, epoch: int, shuffle: bool) -> list[WorkUnit]:
    if not shuffle:
        return units
    order = np.random.default_rng([cfg.seed, epoch, 0x5EED]).permutation(len(units))
    return [units[i] for i in order]


def face_pipeline(cfg: DataConfig, split: Split = "train", epochs: int | range = 1,
                  units: list[WorkUnit] | None = None, skip_rows: int = 0) -> FacePipeline:
    """Build the lazy dataset of ``split`` for ``epochs`` (a count, or a range to resume from).

    All epochs run through one dataset, so the actor pool starts once; batches carry an
    ``epoch`` column. Training visits row groups in a seeded order per epoch (shuffle
    rows within batches downstream with a local shuffle buffer). ``skip_rows`` leaves
    out the leading work units that fit in it (a resumed run's consumed rows, counted
    over all splits' rows as units hold them).
    """
    if split not in ("train", "val", "all"):
        raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
    epoch_range = range(epochs) if isinstance(epochs, int) else epochs
    units = units if units is not None else plan_units(cfg)
    ordered = [(epoch, u) for epoch in epoch_range for u in _epoch_order(units, cfg, epoch, shuffle=split == "train")]
    skipped = 0
    share = 1.0 - cfg.val_fraction if split == "train" else 1.0  # a unit yields about this share of its rows
    while ordered and skipped + ordered[0][1].rows * share <= skip_rows:
        skipped += int(ordered.pop(0)[1].rows * share)
    items = [{"epoch": epoch, "uri": u.uri, "row_group": u.row_group} for epoch, u in ordered]
    if not items:
        raise AikdError(f"nothing to read: {len(units)} row groups, epochs {epoch_range}")
    log = reject_log()
    ds = map_actors(items, PairMaker, {"cfg": cfg, "split": split, "reject_log": log}, cfg.resources)
    return FacePipeline(ds, log, units, skipped)


def reject_log() -> ray.actor.ActorHandle:
    """A new log of rejected rows, on this (the driver's) node."""
    return _on_this_node(RejectLog).remote()


def logged_rejects(log: ray.actor.ActorHandle) -> list[tuple[str, str]]:
    """The (image_id, reason) rows a :func:`reject_log` holds, sorted by id."""
    return ray.get(log.get.remote())


def split_batches(cfg: DataConfig, split: Split, units: list[WorkUnit], log=None, limit: int | None = None):
    """``split``'s rows made in this process (epoch 0), unit by unit in plan order, until ``limit`` rows.

    For the small validation set a training worker keeps in memory: a Ray Data stream of its own
    would start an actor pool (seconds on every run) to read what one process reads in well under
    a second. The rows, views and rejects are the stream's (:func:`make_pairs` and the same log).
    """
    maker, rows = PairMaker(cfg, split, log), 0
    for unit in units:
        for out in maker({"epoch": [0], "uri": [unit.uri], "row_group": [unit.row_group]}):
            yield out
            rows += len(out[IMAGE_ID])
            if limit is not None and rows >= limit:
                return
