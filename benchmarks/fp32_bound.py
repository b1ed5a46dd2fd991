"""How fast a float32 training run could be if only its matrix products cost time: a bound for issue 25.

    .venv/bin/python benchmarks/fp32_bound.py [--isa avx2] [--metrics RUN/metrics.json]

For each network of a default Fashion-MNIST run (the run's own, given --metrics; else the cnn-base teacher,
the default until 2026-12-07, and the cnn-small student; 28 px, batch 192, channels-last float32, kd-edge's
fused AdamW update), torch.profiler splits a training step's time into
matrix products (convolutions forward and backward, the linear layers, the optimiser's fused kernel) and the
passes between them (BatchNorm, ReLU, max-pool, zero fills, copies). The matrix products' rate is set
against this host's own float32 matmul rate (a 1,024-square torch.mm on the same threads), to show how close
to the machine they already run. Given a run's metrics.json, it then works out the run's time if every pass
between the products cost nothing (perfect fusion): the training stages scaled by their matrix share, the
soft labels by the forward pass's, the rest (data, evaluations, saving) left as measured. Divide the
reference script's time by that to get the most any kernel work can give at this recipe.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from core_benchmark import ISA_CAPS

MATRIX_OPS = ("convolution_backward", "mkldnn_convolution", "aten::mm", "aten::addmm", "_fused_adamw")
NETWORKS = {"teacher": "cnn-base", "student": "cnn-small"}


def is_matrix(name: str) -> bool:
    return any(op in name for op in MATRIX_OPS)


def matmul_gflops(side: int = 1024, repeats: int = 20) -> float:
    """This host's float32 matmul rate on torch's threads, best of ``repeats``."""
    import torch

    a, b = torch.randn(side, side), torch.randn(side, side)
    best = float("inf")
    for _ in range(repeats + 2):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * side**3 / best / 1e9


def profiled_split(step, steps: int) -> tuple[float, float]:
    """(seconds a step, matrix products' share of it) over ``steps`` profiled calls of ``step``."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        step()  # oneDNN builds its kernels on the first calls
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        for _ in range(steps):
            step()
        wall = time.perf_counter() - started
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    matrix = sum(e.self_cpu_time_total for e in events if is_matrix(e.key))
    return wall / steps, matrix / total


def network_split(name: str, batch: int, steps: int) -> dict:
    import torch
    import torch.nn.functional as F
    from training_steps import case_batch

    from kd_edge.settings.training import OptimSettings
    from kd_edge.training.models import count_macs
    from kd_edge.training.optimizers import make_optimizer

    model, images, labels = case_batch(name, 1, 28, batch)
    optimizer = make_optimizer(model, OptimSettings())

    def train_step():
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def forward():
        with torch.no_grad():
            model(images)

    step_s, step_matrix = profiled_split(train_step, steps)
    model.eval()
    forward_s, forward_matrix = profiled_split(forward, steps)
    macs = count_macs(model, (1, 28, 28))
    # A step's products: forward, then the gradients of inputs and of weights, each about the forward's work.
    rate = 6 * macs * batch / (step_s * step_matrix) / 1e9
    return {
        "network": name,
        "step_ms": 1e3 * step_s,
        "step_matrix": step_matrix,
        "forward_ms": 1e3 * forward_s,
        "forward_matrix": forward_matrix,
        "matrix_gflops": rate,
    }


def run_bound(metrics: dict, splits: dict) -> dict:
    """The run's wall time with every pass between matrix products free, stage by stage."""
    wall = metrics["wall_time_s"]
    trained = {stage: metrics[stage]["train_seconds"] for stage in NETWORKS}
    bound = {stage: trained[stage] * splits[stage]["step_matrix"] for stage in NETWORKS}
    bound["soft_labels"] = wall["soft_labels"] * splits["teacher"]["forward_matrix"]
    rest = wall["total"] - sum(trained.values()) - wall["soft_labels"]
    return {
        "measured_s": wall["total"],
        "bound_s": sum(bound.values()) + rest,
        "rest_s": rest,
        **{f"{stage}_bound_s": seconds for stage, seconds in bound.items()},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isa", choices=sorted(ISA_CAPS), help="cap oneDNN, ATen and MKL at this ISA")
    parser.add_argument("--metrics", help="a default run's metrics.json, to bound its wall time")
    parser.add_argument("--reference-s", type=float, help="the reference script's time, for the best ratio")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=192)
    args = parser.parse_args()
    os.environ.update(ISA_CAPS.get(args.isa, {}))  # before torch loads its libraries

    from kd_edge.training.device import keep_freed_memory

    keep_freed_memory()
    peak = matmul_gflops()
    print(f"host float32 matmul (1,024 square): {peak:.0f} GFLOP/s" + (f" (capped at {args.isa})" if args.isa else ""))
    metrics = json.loads(Path(args.metrics).read_text()) if args.metrics else None
    networks = {stage: metrics[stage]["model"] for stage in NETWORKS} if metrics else NETWORKS
    splits = {stage: network_split(name, args.batch_size, args.steps) for stage, name in networks.items()}
    for stage, s in splits.items():
        print(
            f"{stage} {s['network']}: step {s['step_ms']:.1f} ms, matrix products {100 * s['step_matrix']:.0f} % of it "
            f"at {s['matrix_gflops']:.0f} GFLOP/s ({100 * s['matrix_gflops'] / peak:.0f} % of the matmul's); "
            f"forward {s['forward_ms']:.1f} ms, products {100 * s['forward_matrix']:.0f} %"
        )
    if metrics:
        bound = run_bound(metrics, splits)
        line = f"run: measured {bound['measured_s']:.1f} s, with free passes {bound['bound_s']:.1f} s"
        if args.reference_s:
            line += (
                f"; against the reference's {args.reference_s:.0f} s: {args.reference_s / bound['measured_s']:.2f}x "
                f"now, at most {args.reference_s / bound['bound_s']:.2f}x"
            )
        print(line)
        print(json.dumps(bound, indent=1))


if __name__ == "__main__":
    main()
