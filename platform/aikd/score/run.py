"""The scoring job's driver: plan, skip what is done, stream, write each output file whole, summarise.

Output under ``out``: one Parquet file per input shard (or per ``images_per_file``
images), rows ``image_id, model, model_uri, model_version, quality, alignment`` for
every scored face and model; ``_manifest/<file>.json`` per output file (rows in, rows
scored, rejects with reasons, the models that scored it); at the end ``_manifest.json``
(all of them), ``_rejects.parquet`` and ``_summary.json`` (the job shell's).

Rerun contract: resume per output file. A file is written whole (atomically), then its
manifest entry; a rerun skips every file whose entry names the same models, alignment
and inputs (:attr:`aikd.score.inputs.OutputFile.inputs`: the shard, or the images and
their table rows), and scores the rest again under the same names, so no row is lost or
written twice. A model named by alias that now points at another version, a fixed table
row or an added image makes its files stale: they are scored again, and the summary
says so. One job writes an output at a
time (:mod:`aikd.lock`): a second one refuses.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aikd.actor_pool import map_actors, then_actors
from aikd.config import ScoreConfig
from aikd.data.schema import IMAGE_ID
from aikd.data.shards import write_rejects, write_shard
from aikd.errors import AikdError
from aikd.job import Job, Outcome, Shape, count_reasons, run_job
from aikd.jobs import JobKind
from aikd.models.weights import read_card
from aikd.progress import Progress
from aikd.score.actors import DETECTOR_SCORE, FACE_BOX, FACE_LANDMARKS, Aligner, Scorer
from aikd.score.inputs import ORDER, OutputFile, plan
from aikd.storage import Location, resolve

MANIFEST_DIR = "_manifest"
MANIFEST_FILE = "_manifest.json"  # the output is a prefix of score files: side files start with '_'
QUANTILE_SAMPLE = 100_000  # scores per model kept (spread over files) for the summary's quantiles
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
SCHEMA = pa.schema([("image_id", pa.string()), ("model", pa.string()), ("model_uri", pa.string()),
                    ("model_version", pa.string()), ("quality", pa.float32()), ("alignment", pa.string())])
# alignment: detect adds the face each row scored: its box and landmarks in the photo, the detector's confidence
DETECT_SCHEMA = SCHEMA.append(pa.field(FACE_BOX, pa.list_(pa.float32(), 4))).append(
    pa.field(FACE_LANDMARKS, pa.list_(pa.float32(), 10))).append(pa.field(DETECTOR_SCORE, pa.float32()))


def read_scores(uri: str) -> pa.Table:
    """Every score file under ``uri`` as one table (the side files, ``_*``, left out); with the detected faces'
    columns when the job found its faces (alignment: detect)."""
    files = resolve(uri).list_files(".parquet")
    if not files:
        return SCHEMA.empty_table()
    detect = FACE_BOX in pq.read_schema(files[0].path, filesystem=files[0].fs).names
    schema = DETECT_SCHEMA if detect else SCHEMA
    return pa.concat_tables([pq.read_table(f.path, filesystem=f.fs, schema=schema) for f in files])


def model_list(cfg: ScoreConfig, original: ScoreConfig, refs: list[dict]) -> list[dict]:
    """Each model: its name, the files workers read, what the spec said and the version it resolved to."""
    by_field = {r["field"]: r for r in refs}
    out = []
    for i, (model, asked) in enumerate(zip(cfg.models, original.models, strict=True)):
        ref = by_field.get(f"models.{i}.model")
        out.append({"name": model.name, "files": model.model, "asked": asked.model,
                    "uri": ref["resolved_uri"] if ref else resolve(model.model).uri,
                    "version": ref["version"] if ref else None})
    return out


def signature(cfg: ScoreConfig, models: list[dict]) -> dict:
    """What a finished file was scored with; a file whose manifest says otherwise is scored again."""
    return {"alignment": cfg.alignment, "models": {m["name"]: m["uri"] for m in models}}


def _manifest(out: Location, name: str) -> Location:
    return out.join(MANIFEST_DIR, name.removesuffix(".parquet") + ".json")


def file_signature(sig: dict, f: OutputFile) -> dict:
    """The job's signature with the file's own inputs."""
    return sig | {"inputs": f.inputs}


def split_done(out: Location, files: list[OutputFile], sig: dict) -> tuple[list[OutputFile], list[dict], dict]:
    """(files to score, manifest entries of files done, {file: signature it was scored with} of stale ones)."""
    todo, done, stale = [], [], {}
    for f in files:
        entry = _manifest(out, f.name)
        record = json.loads(entry.read_text()) if entry.exists() else None
        if record is not None and record["signature"] == file_signature(sig, f):
            done.append(record)
        else:
            todo.append(f)
            if record is not None:
                stale[f.name] = record["signature"]
    return todo, done, stale


def score_table(cfg: ScoreConfig, models: list[dict], batch: dict) -> pa.Table:
    """The long table of one file: a row per scored face and model, sorted by image_id then model."""
    ok = batch["reason"] == ""
    order = np.argsort(batch[IMAGE_ID][ok], kind="stable")
    ids = batch[IMAGE_ID][ok][order].astype(str)
    detect = cfg.alignment == "detect"
    parts = []
    for m in models:
        n = len(ids)
        columns = {
            "image_id": pa.array(ids, pa.string()), "model": pa.array([m["name"]] * n, pa.string()),
            "model_uri": pa.array([m["uri"]] * n, pa.string()), "model_version": pa.array([m["version"]] * n,
                                                                                          pa.string()),
            "quality": pa.array(batch[f"q__{m['name']}"][ok][order], pa.float32()),
            "alignment": pa.array([cfg.alignment] * n, pa.string())}
        if detect:
            columns |= {FACE_BOX: list(batch[FACE_BOX][ok][order]),
                        FACE_LANDMARKS: list(batch[FACE_LANDMARKS][ok][order]),
                        DETECTOR_SCORE: pa.array(batch[DETECTOR_SCORE][ok][order], pa.float32())}
        parts.append(pa.table(columns, schema=DETECT_SCHEMA if detect else SCHEMA))
    table = pa.concat_tables(parts)
    return table.sort_by([("image_id", "ascending"), ("model", "ascending")])


def _sample(values: np.ndarray, share: float, seed: int) -> np.ndarray:
    """A deterministic uniform sample of about ``share`` of ``values`` (the quantiles' bounded memory)."""
    values = values[np.isfinite(values)]
    k = min(len(values), int(np.ceil(share * len(values))))
    return np.random.default_rng(seed).choice(values, k, replace=False) if k < len(values) else values


def _empty(models: list[dict]) -> dict:
    """The scored columns of a file without faces (an empty input shard)."""
    return {IMAGE_ID: np.zeros(0, object), "reason": np.zeros(0, object), ORDER: np.zeros(0, np.int64),
            FACE_BOX: np.zeros((0, 4), np.float32), FACE_LANDMARKS: np.zeros((0, 10), np.float32),
            DETECTOR_SCORE: np.zeros(0, np.float32)} | {f"q__{m['name']}": np.zeros(0, np.float32) for m in models}


def write_file(cfg: ScoreConfig, out: Location, f: OutputFile, models: list[dict], sig: dict, parts: list[dict]):
    """One output file, whole, then its manifest entry (an entry means the file is complete)."""
    parts = parts or [_empty(models)]
    batch = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    write_shard(out.join(f.name), score_table(cfg, models, batch))
    bad = batch["reason"] != ""
    # rows in: the file's faces, or with alignment detect its photos (one may hold several faces, or none)
    rows_in = len(np.unique(batch[ORDER]))
    record = {"file": f.name, "sources": f.sources, "rows_in": rows_in, "rows_scored": int((~bad).sum()),
              "rejects": [[str(i), str(r)] for i, r in zip(batch[IMAGE_ID][bad], batch["reason"][bad], strict=True)],
              "signature": file_signature(sig, f)}
    _manifest(out, f.name).write_text(json.dumps(record))
    return record, batch


def stream(cfg: ScoreConfig, out: Location, todo: list[OutputFile], models: list[dict], sig: dict,
           progress: Progress, samples: dict[str, list], share: float) -> list[dict]:
    """Score the files in ``todo``; each is written as soon as its last unit is in."""
    sizes = [read_card(m["files"]).input_size for m in models]
    records = [write_file(cfg, out, f, models, sig, [])[0] for f in todo if f.rows == 0]  # nothing to stream
    todo = [f for f in todo if f.rows > 0]
    n_files = len(records) + len(todo)
    units = [u for f in todo for u in f.units if u["rows"] > 0]
    if not units:
        return records
    crops = map_actors(units, Aligner, {"cfg": cfg, "sizes": sizes}, cfg.decode)
    scored = then_actors(crops, Scorer, {"cfg": cfg, "models": models}, cfg.resources, blocks=len(units))
    by_name = {f.name: f for f in todo}
    # a file is complete when every one of its input rows came back (a photo may come back as several faces)
    arrived: dict[str, set[int]] = {f.name: set() for f in todo}
    parts: dict[str, list[dict]] = {f.name: [] for f in todo}
    for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
        for name in np.unique(batch["file"]):
            mine = batch["file"] == name
            parts[name].append({k: v[mine] for k, v in batch.items() if k != "file"})
            arrived[name].update(batch[ORDER][mine].tolist())
            if len(arrived[name]) == by_name[name].rows:
                record, rows = write_file(cfg, out, by_name[name], models, sig, parts.pop(name))
                records.append(record)
                for m in models:
                    samples[m["name"]].append(_sample(rows[f"q__{m['name']}"], share, len(records)))
            progress.update(sum(len(a) for a in arrived.values()), f"{len(records)}/{n_files} files written")
    if parts:
        raise AikdError(f"score: the stream ended before these files were complete: {sorted(parts)}")
    return records


def _done_samples(out: Location, done: list[dict], models: list[dict], samples: dict, share: float) -> None:
    for k, record in enumerate(done):
        f = out.join(record["file"])
        table = pq.read_table(f.path, filesystem=f.fs, columns=["model", "quality"])
        for m in models:
            q = table.filter(pc.equal(table["model"], m["name"]))["quality"].to_numpy()
            samples[m["name"]].append(_sample(q.astype(np.float32), share, 10_000 + k))


def run_score(cfg: ScoreConfig) -> dict:
    out = resolve(cfg.out)
    shape = Shape(out, out.name, inputs={"faces": cfg.shards or [cfg.images], "models": [m.model for m in cfg.models]},
                  outputs={"scores": out.uri}, rerun="resume", lock=True)
    return run_job(cfg, shape, lambda job: _work(job, asked=cfg))


def _work(job: Job, asked: ScoreConfig) -> Outcome:
    cfg, out = job.cfg, job.out
    models = model_list(cfg, asked, job.models)
    sig = signature(cfg, models)
    files, facts, planned_rejects = plan(cfg)
    todo, done, stale = split_done(out, files, sig)
    total = sum(f.rows for f in files)
    share = min(1.0, QUANTILE_SAMPLE / max(total, 1))
    if stale:
        job.log(f"{len(stale)} files were scored with other inputs, models or alignment: scoring them again")
    job.log(f"{len(files)} files, {len(done)} done before, {len(todo)} to score ({sum(f.rows for f in todo)} faces)")
    samples: dict[str, list] = {m["name"]: [] for m in models}
    _done_samples(out, done, models, samples, share)
    unit = "photos" if cfg.alignment == "detect" else "faces"  # a photo may hold several faces, or none
    with Progress("score", unit, sum(f.rows for f in todo), every_s=cfg.progress_every_s) as progress:
        records = stream(cfg, out, todo, models, sig, progress, samples, share) if todo else []
    counts, rejects, fields = summarise(cfg, out, files, done, records, models, samples, progress, stale, facts,
                                        planned_rejects)
    return Outcome(counts=counts, rejects=rejects, fields=fields, metrics=counts | {"rows_per_s": fields["rows_per_s"]},
                   files=[MANIFEST_FILE])


def summarise(cfg: ScoreConfig, out: Location, files: list[OutputFile], done: list[dict], new: list[dict],
              models: list[dict], samples: dict, progress: Progress, stale: dict,
              facts: dict, planned_rejects: list[tuple[str, str]]) -> tuple[dict, dict, dict]:
    """The whole output's manifest and rejects table (files done before, and the plan's own rejects,
    included); the summary's counts, rejects by reason and the job's own fields."""
    order = {f.name: i for i, f in enumerate(files)}
    records = sorted(done + new, key=lambda r: order[r["file"]])
    out.join(MANIFEST_FILE).write_text(json.dumps(records, indent=1) + "\n")
    rejects = [tuple(r) for rec in records for r in rec["rejects"]] + planned_rejects
    write_rejects(out.uri, rejects)
    quantiles = {}
    for m in models:
        values = np.concatenate(samples[m["name"]]) if samples[m["name"]] else np.zeros(0)
        quantiles[m["name"]] = ({f"q{int(q * 100):02d}": float(v) for q, v in zip(QUANTILES, np.quantile(
            values, QUANTILES), strict=True)} if len(values) else {})
    counts = {"files": len(files), "files_scored_now": len(new), "files_done_before": len(done),
              "rows": sum(r["rows_in"] for r in records), "rows_scored": sum(r["rows_scored"] for r in records),
              "rejected": len(rejects), "rows_read_now": progress.done} | facts
    fields = {"out": out.uri, "alignment": cfg.alignment, "rows_per_s": round(progress.rate, 1) if progress.done
              else None, "scored_with": [{k: m[k] for k in ("name", "asked", "uri", "version")} for m in models],
              "rescored_stale": stale, "quality_quantiles": quantiles}
    return counts, count_reasons(rejects), fields


JOB = JobKind("score", ScoreConfig, run_score)
