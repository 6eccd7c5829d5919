"""Model speed on this machine: forward and forward+backward images/s at batch 64.

For each small variant (the CPU models of the embedded default), and as the baseline in
the same run the smallest real arcface_torch model (iresnet18 at 112x112): ``ratio_*``
says how much faster a small variant runs. The fwd+bwd rate is the compute bound the
distillation benchmark compares its full training loop against.
Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from aikd.models import create_model, model_info
from aikd.models.student import create_student

SMALL = ("iresnet_tiny", "iresnet_small")
BASELINE = "iresnet18"


def rate(model: torch.nn.Module, size: int, batch: int, backward: bool, seconds: float) -> float:
    x = torch.randn(batch, 3, size, size)
    model.train(backward)

    def step():
        if backward:
            out = model(x)
            out = out[1].sum() + out[0].pow(2).mean() if isinstance(out, tuple) else out.pow(2).mean()
            out.backward()
        else:
            with torch.no_grad():
                model(x)

    step()  # warm-up: allocator, kernels
    n, start = 0, time.perf_counter()
    while True:
        step()
        n += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum timed seconds per measurement")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    result: dict = {"bench": "models", "batch": args.batch, "threads": args.threads, "models": {}}
    base = create_model(BASELINE)
    base_fwd = rate(base, 112, args.batch, False, args.seconds)
    base_bwd = rate(base, 112, args.batch, True, args.seconds)
    result["baseline"] = {"model": BASELINE, "input": 112, "forward_images_per_s": round(base_fwd, 1),
                          "forward_backward_images_per_s": round(base_bwd, 1)}
    for name in SMALL:
        size = model_info(name).input_size
        fwd = rate(create_model(name), size, args.batch, False, args.seconds)
        bwd = rate(create_model(name), size, args.batch, True, args.seconds)
        student_bwd = rate(create_student(name), size, args.batch, True, args.seconds)
        result["models"][name] = {
            "input": size,
            "forward_images_per_s": round(fwd, 1),
            "forward_backward_images_per_s": round(bwd, 1),
            "student_forward_backward_images_per_s": round(student_bwd, 1),
            "ratio_forward_vs_baseline": round(fwd / base_fwd, 2),
            "ratio_forward_backward_vs_baseline": round(bwd / base_bwd, 2),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
