"""Where a training step's time goes: torch.profiler over kd-edge's training steps on Fashion-MNIST-sized batches.

    .venv/bin/python benchmarks/profile_training.py [--model cnn-base] [--steps 40] [--batch-size 256]

Prints the operators that take the most CPU time, for the forward+backward+update
step and for the forward pass alone (as when computing soft labels), in three
settings: plain NCHW float32, channels-last float32, channels-last bfloat16
autocast (kd-edge's default where the CPU has native bf16). The allocator keeps freed memory, as in a
training command (``keep_freed_memory``), so freeing and zeroing are not charged with page faults.
"""

import argparse

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from kd_edge.training.device import keep_freed_memory, to_channels_last
from kd_edge.training.models import create_model


def train_steps(model, images, labels, steps, channels_last, bf16):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(steps):
        batch = images.contiguous(memory_format=torch.channels_last) if channels_last else images
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(batch), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def forward_steps(model, images, steps, channels_last, bf16):
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for _ in range(steps):
            model(images.contiguous(memory_format=torch.channels_last) if channels_last else images)


def report(title, fn, rows):
    fn()  # warm-up: oneDNN builds its kernels on the first call
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    print(f"\n## {title}: {total / 1e6:.2f} s of CPU time\n")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cnn-base")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rows", type=int, default=12)
    args = parser.parse_args()
    keep_freed_memory()
    torch.manual_seed(0)
    images = torch.randn(args.batch_size, 1, 28, 28)
    labels = torch.randint(0, 10, (args.batch_size,))
    for channels_last, bf16 in ((False, False), (True, False), (True, True)):
        setting = ("channels-last" if channels_last else "NCHW") + (" bf16" if bf16 else " fp32")
        model = create_model(args.model)
        if channels_last:
            model = to_channels_last(model)
        report(
            f"{args.model} train step x{args.steps}, {setting}",
            lambda model=model, channels_last=channels_last, bf16=bf16: train_steps(
                model, images, labels, args.steps, channels_last, bf16
            ),
            args.rows,
        )
        report(
            f"{args.model} forward x{args.steps}, {setting}",
            lambda model=model, channels_last=channels_last, bf16=bf16: forward_steps(
                model, images, args.steps, channels_last, bf16
            ),
            args.rows,
        )


if __name__ == "__main__":
    main()
