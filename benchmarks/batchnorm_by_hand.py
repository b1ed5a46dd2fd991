"""Can BatchNorm's training passes be made cheaper from torch's own operations? A trial for issue 25 (not adopted).

    .venv/bin/python benchmarks/batchnorm_by_hand.py [--isa avx2] [--rounds 5] [--compiled]

BatchNorm's forward and backward are about a quarter of a float32 training step of the default Fashion-MNIST
networks (results/fp32-bound.md), and torch's CPU kernels for them run at several times a copy's time. Here a
BatchNorm for channels-last float32 training is written from operations that run near the memory's pace: the
activations seen as an (images x height x width, channels) matrix (a view, no copy), its per-channel sums (and
sums of squares, and in the backward pass of the gradient and of gradient times input) as a product with a row
of ones (``torch.mm``), the normalisation and the input's gradient as fused multiply-adds (``torch.addcmul``).
Each network's training steps (kd-edge's AdamW, batch 192) are timed with torch's BatchNorm and with this one,
alternating, after checking that both give the same loss and gradients.

``--compiled`` adds a third contender: each BatchNorm-ReLU(-max-pool) region compiled by ``torch.compile``
(inductor writes one C++ kernel for the region's forward and one for its backward), the convolutions left to
oneDNN as in eager mode: the fusion the float32 bound asks for, without kd-edge shipping a kernel of its own.
"""

from __future__ import annotations

import argparse
import os

from core_benchmark import ISA_CAPS


def by_hand_batchnorm():
    """An ``nn.BatchNorm2d`` whose float32 training pass is the matrix form above (running statistics as torch's)."""
    import torch
    from torch import nn

    def as_rows(x):  # channels-last (N, C, H, W) is (N, H, W, C) in memory
        return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])

    def as_image(rows, like):
        return rows.view(like.shape[0], like.shape[2], like.shape[3], like.shape[1]).permute(0, 3, 1, 2)

    class Normalise(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, bias, eps):
            rows = as_rows(x)
            ones = torch.ones(1, rows.shape[0])
            mean = torch.mm(ones, rows)[0] / rows.shape[0]
            var = (torch.mm(ones, rows * rows)[0] / rows.shape[0] - mean * mean).clamp_min(0)
            inverse_std = torch.rsqrt(var + eps)
            scale = weight * inverse_std
            ctx.save_for_backward(x, scale, mean, inverse_std, ones)
            return as_image(torch.addcmul(bias - mean * scale, rows, scale), x), mean, var

        @staticmethod
        def backward(ctx, grad, _mean, _var):
            x, scale, mean, inverse_std, ones = ctx.saved_tensors
            rows, n = as_rows(x), ones.shape[1]
            grad_rows = as_rows(grad.contiguous(memory_format=torch.channels_last))
            grad_bias = torch.mm(ones, grad_rows)[0]
            grad_weight = inverse_std * (torch.mm(ones, grad_rows * rows)[0] - mean * grad_bias)
            slope = -scale * inverse_std * grad_weight / n
            offset = -scale * grad_bias / n - slope * mean
            grad_input = torch.addcmul(offset, rows, slope).addcmul_(grad_rows, scale)
            return as_image(grad_input, x), grad_weight, grad_bias, None

    class ByHand(nn.BatchNorm2d):
        def forward(self, x):
            if not self.training:
                return super().forward(x)
            y, mean, var = Normalise.apply(x, self.weight, self.bias, self.eps)
            with torch.no_grad():
                count = x.numel() / x.shape[1]
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * count / (count - 1), self.momentum)
                self.num_batches_tracked += 1
            return y

    return ByHand


def with_batchnorm_by_hand(model):
    from torch import nn

    by_hand = by_hand_batchnorm()
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            replacement = by_hand(child.num_features, child.eps, child.momentum)
            replacement.load_state_dict(child.state_dict())
            setattr(model, name, replacement)
        else:
            with_batchnorm_by_hand(child)
    return model


def with_compiled_regions(model):
    """``model`` with each BatchNorm, its ReLU and the max-pool after them run as one ``torch.compile``d module (the
    max-pool first, as kd-edge's ConvStages runs it in training)."""
    import torch
    from torch import nn

    layers, regions = list(model.features), []
    while layers:
        layer = layers.pop(0)
        if type(layer) is not nn.BatchNorm2d:
            regions.append(layer)
            continue
        relu = layers.pop(0)
        pool = [layers.pop(0)] if layers and isinstance(layers[0], nn.MaxPool2d) else []
        regions.append(torch.compile(nn.Sequential(layer, *pool, relu)))
    model.features = nn.Sequential(*regions)
    return model


def compare(name: str, rounds: int, steps: int, compiled: bool) -> None:
    import time

    import torch.nn.functional as F
    from training_steps import case_batch, timed_training_steps

    from kd_edge.settings.training import OptimSettings
    from kd_edge.training.optimizers import make_optimizer

    torch_bn, images, labels = case_batch(name, 1, 28, 192)
    contenders = {"by hand": with_batchnorm_by_hand(case_batch(name, 1, 28, 192)[0])}
    if compiled:
        contenders["compiled"] = with_compiled_regions(case_batch(name, 1, 28, 192)[0])
    reference_loss = F.cross_entropy(torch_bn(images), labels)
    reference_loss.backward()
    for key, model in contenders.items():
        started = time.perf_counter()  # a compiled model compiles on its first forward and backward
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        worst = max(
            ((a.grad - b.grad).abs().max() / a.grad.abs().max()).item()
            for a, b in zip(torch_bn.parameters(), model.parameters(), strict=True)
        )
        print(
            f"{name} {key}: loss {loss.item():.6f} against torch's {reference_loss.item():.6f}, gradients within "
            f"{worst:.1e} of the largest; first step {time.perf_counter() - started:.1f} s"
        )
    models = {"torch": torch_bn, **contenders}
    optimizers = {key: make_optimizer(model, OptimSettings()) for key, model in models.items()}
    times = {key: [] for key in models}
    for _ in range(rounds + 1):  # the first round warms every contender up and is not kept
        for key, model in models.items():
            timed = timed_training_steps(model, optimizers[key], images, labels, steps)
            times[key].append(1e3 * timed.wall_s / steps)
    medians = {key: sorted(values[1:])[rounds // 2] for key, values in times.items()}
    print(
        f"{name}: a step {medians['torch']:.1f} ms with torch's BatchNorm, "
        + ", ".join(f"{medians[key]:.1f} ms {key} ({medians[key] / medians['torch']:.3f}x)" for key in contenders)
        + f" (median of {rounds} alternating rounds of {steps} steps)"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isa", choices=sorted(ISA_CAPS), help="cap oneDNN, ATen and MKL at this ISA")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--compiled", action="store_true", help="add the torch.compile'd regions as a contender")
    args = parser.parse_args()
    os.environ.update(ISA_CAPS.get(args.isa, {}))  # before torch loads its libraries

    from kd_edge.training.device import keep_freed_memory

    keep_freed_memory()
    for name in ("cnn-base", "cnn-small"):
        compare(name, args.rounds, args.steps, args.compiled)


if __name__ == "__main__":
    main()
