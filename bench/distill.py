"""Distillation throughput: the full Ray Train + DeepSpeed loop against two baselines.

Measured in one run, on the same synthetic faces and the same student:

* full loop: ``run_distill`` with N workers (streaming pipeline, DeepSpeed engine, the
  frozen target, EMA/validation); images/s per worker as the loop itself counts them.
* (a) compute bound: the bare step of the same student on ready tensors (target forward
  + student forward + backward + SGD), with the threads one worker has, in as many
  processes at once as there are workers (``compute_bound_alone`` is one process on an
  otherwise idle machine: on 2 vCPUs that share a core the two differ a lot).
* (b) reference-style: one process, a DataLoader over files with the per-sample path
  (PIL open, per-image transform estimate, two warps, ToTensor/Normalize: contiguous
  NCHW batches, as the research code feeds its model), the same step, using the whole
  machine (DataLoader workers = N, torch threads = CPUs).

* (c) DDP gradient layout: two gloo ranks stepping the same student under DDP on
  channels_last input, once with the student in torch's default layout (its weight
  gradients come out channels_last, unlike DDP's buckets: torch warns and copies them
  every step) and once in channels_last, as the DDP strategy and fr-train keep it.

``ratio_vs_compute_bound`` = full loop per worker / (a); ``ratio_vs_reference`` = full
loop, all workers together / (b); ``ddp_channels_last_speedup`` = (c) channels_last /
default layout. With ``--gpu`` the full loop runs on GPUs in the
reference setting (IResNet-100, 112x112, bf16, batch 64) and the JSON names the device.
Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from aikd.config import DataConfig, DistillConfig, EngineConfig, ObjectiveConfig, OptimConfig, Resources, StudentConfig
from aikd.data.shards import shard_files
from aikd.data.synth import SynthConfig, write_synthetic
from aikd.distill.objective import aikd_loss
from aikd.distill.params import freeze_all_but, param_groups
from aikd.models import create_model
from aikd.models.student import Student
from aikd.models.transforms import to_input
from aikd.models.weights import card_for, save_model


def labelled_faces(root: str, images: int) -> str:
    """Synthetic shards plus a label column (its values do not matter for speed)."""
    faces = os.path.join(root, "faces")
    write_synthetic(faces, SynthConfig(identities=max(images // 10, 2), samples_per_identity=10))
    for f in shard_files(faces):
        t = pq.read_table(f.path)
        t = t.append_column("q_bench", pa.array(np.random.default_rng(0).random(t.num_rows), pa.float32()))
        pq.write_table(t, f.path, row_group_size=256)
    return faces


def student_dir(root: str, model: str, size: int) -> str:
    torch.manual_seed(0)
    backbone = create_model(model, input_size=size)
    out = os.path.join(root, "fr_model")
    save_model(backbone, out, card_for(backbone, "backbone"))
    return out


def full_loop(cfg: DistillConfig) -> dict:
    import ray

    from aikd.distill.run import run_distill

    summary = run_distill(cfg)
    ray.shutdown()  # stop log forwarding: the JSON must be the last line
    last = summary["history"][-1]
    return {"images_per_s_per_worker": last["images_per_s_per_worker"], "steps": summary["steps"],
            "data_wait_fraction": last.get("data_wait_fraction")}


def bare_step_rate(model: str, size: int, batch: int, threads: int, steps: int) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    student = Student(create_model(model, input_size=size))
    target = copy.deepcopy(student.feature_extractor).eval()
    groups = param_groups(student, DistillConfig.model_fields["optim"].default)
    freeze_all_but(student, groups)  # as the strategies do: no gradients for the frozen backbone
    opt = torch.optim.SGD(groups)
    # ready tensors as the loop gets them: to_input of uint8 NHWC batches (channels_last layout)
    pixels = np.random.default_rng(0).integers(0, 256, (2, batch, size, size, 3), dtype=np.uint8)
    x_al, x_mis, y = to_input(pixels[0]), to_input(pixels[1]), torch.rand(batch)
    student.train()

    def step():
        with torch.no_grad():
            e_al = target(x_al)
        e_mis, q = student(x_mis)
        loss, _ = aikd_loss(e_mis, e_al, q, y, ObjectiveConfig())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 5.0)
        opt.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def _bound_worker(args) -> float:
    return bare_step_rate(*args)


def concurrent_bound(model: str, size: int, batch: int, threads: int, steps: int, workers: int) -> float:
    """Per-process bare-step rate with ``workers`` processes computing at once, as the workers do.

    On a machine whose cores share execution units (2 vCPUs here), N concurrent workers
    do not each get an idle core's speed: this is the bound the full loop can reach.
    """
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(workers) as pool:
        rates = pool.map(_bound_worker, [(model, size, batch, threads, steps)] * workers)
    return float(np.mean(rates))


def _ddp_rank(rank: int, init: str, model: str, size: int, batch: int, threads: int, steps: int,
              channels_last: bool, out) -> None:
    import torch.distributed as dist

    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    torch.manual_seed(0)
    student = Student(create_model(model, input_size=size))
    if channels_last:
        student = student.to(memory_format=torch.channels_last)
    ddp = torch.nn.parallel.DistributedDataParallel(student)
    opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
    x = to_input(np.random.default_rng(rank).integers(0, 256, (batch, size, size, 3), dtype=np.uint8))

    def step():
        emb, q = ddp(x)
        opt.zero_grad()
        (q.pow(2).mean() + emb.pow(2).mean()).backward()
        opt.step()

    step()
    dist.barrier()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    out.put(steps * batch / (time.perf_counter() - start))
    dist.destroy_process_group()


def ddp_layout_rate(model: str, size: int, batch: int, threads: int, steps: int, channels_last: bool) -> float:
    """Per-rank images/s of two DDP ranks (gloo) on channels_last input, the student in either layout."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    with tempfile.TemporaryDirectory() as tmp:
        init = f"file://{tmp}/rendezvous"
        ranks = [ctx.Process(target=_ddp_rank, args=(r, init, model, size, batch, threads, steps, channels_last, out))
                 for r in range(2)]
        for p in ranks:
            p.start()
        rates = [out.get(timeout=900) for _ in ranks]
        for p in ranks:
            p.join()
    return float(np.mean(rates))


def ddp_layouts(model: str, size: int, batch: int, threads: int, steps: int) -> dict:
    default = ddp_layout_rate(model, size, batch, threads, steps, channels_last=False)
    last = ddp_layout_rate(model, size, batch, threads, steps, channels_last=True)
    return {"ddp_default_layout_images_per_s_per_rank": round(default, 1),
            "ddp_channels_last_images_per_s_per_rank": round(last, 1),
            "ddp_channels_last_speedup": round(last / default, 3)}


def reference_rate(faces: str, model: str, size: int, batch: int, workers: int, steps: int) -> float:
    """The single-process reference loop over image files (bench/pipeline.py's dataset)."""
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from aikd.data.shards import read_shards
    from pipeline import ReferenceDataset  # noqa: E402  (the reference per-sample path)

    table = read_shards(faces, columns=["image_id", "image", "landmarks"])
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for image_id, blob in zip(table.column("image_id").to_pylist(), table.column("image").to_pylist(),
                                  strict=True):
            path = os.path.join(tmp, image_id)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(blob)
            paths.append(path)
        dataset = ReferenceDataset(paths, np.array(table.column("landmarks").to_pylist()), size=size)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                                             drop_last=True)
        torch.set_num_threads(os.cpu_count() or 1)
        torch.manual_seed(0)
        student = Student(create_model(model, input_size=size))
        target = copy.deepcopy(student.feature_extractor).eval()
        groups = param_groups(student, DistillConfig.model_fields["optim"].default)
        freeze_all_but(student, groups)  # the reference trains the head and the last tensors only, too
        opt = torch.optim.SGD(groups)
        student.train()
        n, start, first = 0, None, True
        for i, (x_al, x_mis) in enumerate(loader):
            if i > steps:
                break
            with torch.no_grad():
                e_al = target(x_al)
            e_mis, q = student(x_mis)
            loss, _ = aikd_loss(e_mis, e_al, q, torch.rand(len(q)), ObjectiveConfig())
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 5.0)
            opt.step()
            if first:  # worker start-up excluded, as the full loop's count starts with training
                start, first = time.perf_counter(), False
            else:
                n += len(q)
        return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=None,
                        help="synthetic faces (default: one epoch of --steps, so the run validates once, at the "
                             "end, as a real epoch of millions of faces validates once per thousands of steps)")
    parser.add_argument("--model", default="iresnet_tiny")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32, help="micro batch per worker")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--zero", type=int, default=None,
                        help="ZeRO stage (default: jobs/distill.yaml's 0; 1 with --gpu)")
    parser.add_argument("--strategy", choices=("deepspeed", "ddp"), default="deepspeed")
    parser.add_argument("--buffer-mb", type=int, default=None,
                        help="data_buffer_mb of the run (default 32, 256 with --gpu): small against the run, so "
                             "the decoders work throughout as in a long run instead of buffering most of it early")
    parser.add_argument("--gpu", action="store_true", help="reference GPU setting: iresnet100, 112, bf16, batch 64")
    parser.add_argument("--ddp-layout-only", action="store_true",
                        help="only (c): the DDP step rate with the student in the default layout vs channels_last")
    args = parser.parse_args()
    if args.gpu:
        args.model, args.size, args.batch = "iresnet100", 112, 64
    args.zero = args.zero if args.zero is not None else (1 if args.gpu else 0)
    args.buffer_mb = args.buffer_mb or (256 if args.gpu else 32)

    cpus = os.cpu_count() or 1
    threads = max(1, cpus // 2)  # each of the two ranks
    if args.ddp_layout_only:
        print(json.dumps({"bench": "distill", "device": f"cpu x{cpus}", "model": args.model, "input": args.size,
                          "micro_batch": args.batch, "steps": args.steps, "threads_per_rank": threads}
                         | ddp_layouts(args.model, args.size, args.batch, threads, args.steps)))
        return
    with tempfile.TemporaryDirectory() as root:
        val_fraction = 0.02
        images = args.images or math.ceil(args.steps * args.batch * args.workers / (1 - val_fraction) * 1.05)
        faces = labelled_faces(root, images)
        weights = student_dir(root, args.model, args.size)
        share = cpus / (2 * args.workers)  # half the machine to training workers, half to the data actors
        data = DataConfig(shards=[faces], label="q_bench", image_size=args.size, val_fraction=val_fraction,
                          resources=Resources(workers=args.workers, cpus_per_worker=share))
        cfg = DistillConfig(name="bench", storage=os.path.join(root, "runs"), data=data,
                            student=StudentConfig(weights=weights),
                            engine=EngineConfig(zero_stage=args.zero, micro_batch=args.batch,
                                                precision="bf16" if args.gpu else "fp32"),
                            # validate and checkpoint once, at the end: a real epoch (millions of
                            # faces) validates every ~5,000 steps, not every few steps of this small set
                            optim=OptimConfig(val_every=1.0, pretrain_fraction=1.0),
                            strategy=args.strategy, data_buffer_mb=args.buffer_mb,
                            epochs=1, max_steps=args.steps, val_limit=64,
                            resources=Resources(workers=args.workers, cpus_per_worker=share,
                                                gpus_per_worker=1 if args.gpu else 0))
        loop = full_loop(cfg)
        threads = max(1, int(share))
        bound_alone = bare_step_rate(args.model, args.size, args.batch, threads, steps=max(args.steps // 4, 5))
        bound = concurrent_bound(args.model, args.size, args.batch, threads, max(args.steps // 4, 5), args.workers)
        reference = None if args.gpu else reference_rate(faces, args.model, args.size, args.batch, args.workers,
                                                          steps=max(args.steps // 2, 10))
        layouts = {} if args.gpu else ddp_layouts(args.model, args.size, args.batch, threads, max(args.steps // 4, 5))
    per_worker = loop["images_per_s_per_worker"]
    result = {
        "bench": "distill",
        "device": torch.cuda.get_device_name(0) if args.gpu and torch.cuda.is_available() else f"cpu x{cpus}",
        "model": args.model, "input": args.size, "micro_batch": args.batch, "workers": args.workers, "images": images,
        "strategy": args.strategy, "zero_stage": args.zero, "data_buffer_mb": args.buffer_mb, "steps": loop["steps"],
        "full_loop_images_per_s_per_worker": round(per_worker, 1),
        "full_loop_images_per_s_total": round(per_worker * args.workers, 1),
        "full_loop_data_wait_fraction": round(loop["data_wait_fraction"] or 0.0, 3),
        "compute_bound_images_per_s_per_worker": round(bound, 1),
        "compute_bound_alone_images_per_s": round(bound_alone, 1),
        "compute_bound_threads": threads,
        "reference_loop_images_per_s": None if reference is None else round(reference, 1),
        "ratio_vs_compute_bound": round(per_worker / bound, 3),
        "ratio_vs_reference": None if reference is None else round(per_worker * args.workers / reference, 3),
        "goal": {"ratio_vs_compute_bound": 0.85, "ratio_vs_reference": 1.5},
    } | layouts
    print(json.dumps(result))


if __name__ == "__main__":
    main()
