"""The optimiser and learning-rate schedule of ``OptimSettings``, with the learning rate scaled for torchrun.

kd-edge keeps its own small optimiser and schedules, which apply torch's update rules (AdamW and
Adam through the fused kernel ``torch.optim`` runs with ``fused=True``, SGD operation for operation as
its single-tensor code; the one-cycle and cosine schedules as ``torch.optim.lr_scheduler``'s:
``tests/test_optimizers.py`` compares the weights with ``torch.optim``'s step by step). Why not
``torch.optim`` itself: every ``torch.optim.Optimizer`` imports ``torch._dynamo`` when it is built and at
its first step, which took 2 s and about 150 MB of resident memory in every training process, for a
compiler that kd-edge does not use (benchmarks/results/training-speed.md).

The objects keep the names ``torch.optim``'s have (``param_groups``, ``state_dict``, ``step``,
``zero_grad``) so that the training state saved for ``--resume`` reads the same way.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kd_edge.settings.training import OptimSettings
from kd_edge.training import distributed

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
SGD_MOMENTUM = 0.9
ONE_CYCLE_WARMUP = 0.3  # the fraction of the steps the learning rate rises for
ONE_CYCLE_MOMENTA = (0.85, 0.95)  # the momentum's (Adam's beta1) low and high


class Optimizer:
    """One parameter group: the parameters that train, their state, and the hyperparameters a schedule moves
    (``lr``; ``betas`` or ``momentum``, as torch names them)."""

    def __init__(self, model: nn.Module, rule: str, lr: float, weight_decay: float):
        self.rule = rule  # "adamw" (decoupled weight decay), "adam" (L2 in the gradient) or "sgd" (Nesterov)
        self.params = [p for p in model.parameters() if p.requires_grad]
        group = {"lr": lr, "weight_decay": weight_decay}
        group.update({"momentum": SGD_MOMENTUM} if rule == "sgd" else {"betas": ADAM_BETAS})
        self.param_groups = [group]
        self.state: list[dict] = [{} for _ in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param in self.params:
            if set_to_none:
                param.grad = None
            elif param.grad is not None:
                param.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        # a parameter the loss did not reach keeps its value, as in torch
        reached = [
            (param, state) for param, state in zip(self.params, self.state, strict=True) if param.grad is not None
        ]
        if self.rule == "sgd":
            for param, state in reached:
                sgd_update(param, param.grad, state, group)
        elif reached:
            fused_adam_update(reached, group, decoupled=self.rule == "adamw")

    def state_dict(self) -> dict:
        return {
            "rule": self.rule,
            "param_groups": [dict(self.param_groups[0])],
            "state": {index: dict(state) for index, state in enumerate(self.state) if state},
        }

    def load_state_dict(self, saved: dict, moments_only: bool = False) -> None:
        """The saved state; with ``moments_only`` the per-parameter state alone (Adam's moments, SGD's
        momentum), keeping this optimiser's hyperparameters."""
        if saved.get("rule") != self.rule or max(saved["state"], default=-1) >= len(self.params):
            raise ValueError(
                f"the saved optimiser state ({saved.get('rule')}) does not fit this {self.rule} optimiser of "
                f"{len(self.params)} parameters"
            )
        if not moments_only:
            self.param_groups[0].update(saved["param_groups"][0])
        # A training state is read onto the CPU (checkpoint.py); each tensor goes where its parameter is.
        self.state = [on_device(saved["state"].get(i, {}), param.device) for i, param in enumerate(self.params)]


def on_device(state: dict, device: torch.device) -> dict:
    return {key: value.to(device) if torch.is_tensor(value) else value for key, value in state.items()}


def fused_adam_update(reached: list[tuple[torch.Tensor, dict]], group: dict, decoupled: bool) -> None:
    """Adam's step (no amsgrad, not maximising) for every parameter in one call of torch's fused kernel, as
    ``torch.optim.AdamW(fused=True)`` takes it. Applied one operation at a time, as torch's single-tensor code
    does, the update took 1.37 ms of a 44 ms float32 cnn-base step against 0.54 ms fused, 3.1 ms against 1.7 ms for
    pooled-base at 64 px (benchmarks/results/fused-adam.md)."""
    for param, state in reached:
        if not state:  # the kernel reads the step count, too, on the parameter's device
            state["step"] = torch.zeros((), device=param.device)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    params = [param for param, _ in reached]
    states = [state for _, state in reached]
    steps = [state["step"] for state in states]
    torch._foreach_add_(steps, 1)
    (beta1, beta2), lr, weight_decay = group["betas"], group["lr"], group["weight_decay"]
    kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
    kernel(
        params,
        [param.grad for param in params],
        [state["exp_avg"] for state in states],
        [state["exp_avg_sq"] for state in states],
        [],  # amsgrad's maxima: none
        steps,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        weight_decay=weight_decay,
        eps=ADAM_EPS,
        amsgrad=False,
        maximize=False,
    )


def sgd_update(param, grad, state: dict, group: dict) -> None:
    """torch's ``_single_tensor_sgd`` with Nesterov momentum and no dampening."""
    momentum, lr, weight_decay = group["momentum"], group["lr"], group["weight_decay"]
    if weight_decay != 0:
        grad = grad.add(param, alpha=weight_decay)
    if "momentum_buffer" not in state:
        state["momentum_buffer"] = grad.detach().clone()
    else:
        state["momentum_buffer"].mul_(momentum).add_(grad)
    param.add_(grad.add(state["momentum_buffer"], alpha=momentum), alpha=-lr)


def make_optimizer(model: nn.Module, config: OptimSettings) -> Optimizer:
    lr = distributed.scaled_lr(config.lr, config.lr_scaling)
    return Optimizer(model, config.optimizer, lr, config.weight_decay)


class Schedule:
    """A per-step learning rate (and, for one-cycle, momentum) set on the optimiser's group before each step."""

    def __init__(self, optimizer: Optimizer, values, total_steps: int):
        self.optimizer, self.values, self.total_steps = optimizer, values, total_steps
        self.steps = 0
        self.apply()

    def step(self) -> None:
        self.steps += 1
        self.apply()

    def apply(self) -> None:
        lr, momentum = self.values(min(self.steps, self.total_steps))
        group = self.optimizer.param_groups[0]
        group["lr"] = lr
        if momentum is not None:
            if "betas" in group:
                group["betas"] = (momentum, group["betas"][1])
            else:
                group["momentum"] = momentum

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, saved: dict) -> None:
        self.steps = saved["steps"]
        self.apply()


def annealed(start: float, end: float, fraction: float) -> float:
    """Cosine annealing from ``start`` to ``end`` as ``fraction`` goes from 0 to 1."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * fraction) + 1)


def one_cycle(max_lr: float, total_steps: int):
    """torch's ``OneCycleLR`` with its defaults: from max_lr/25 up to max_lr over the first 30 % of the steps, then
    down to max_lr/25/1e4, both cosine; momentum (Adam's beta1) the other way, 0.95 -> 0.85 -> 0.95."""
    low, high = ONE_CYCLE_MOMENTA
    initial = max_lr / 25.0
    peak = float(ONE_CYCLE_WARMUP * total_steps) - 1  # the step the learning rate peaks at

    def values(step: int):
        if step <= peak:
            fraction = step / peak
            return annealed(initial, max_lr, fraction), annealed(high, low, fraction)
        fraction = (step - peak) / (total_steps - 1 - peak)
        return annealed(max_lr, initial / 1e4, fraction), annealed(low, high, fraction)

    return values


def make_scheduler(optimizer: Optimizer, config: OptimSettings, total_steps: int) -> Schedule | None:
    """A per-step learning-rate schedule, or None for a constant rate."""
    lr = optimizer.param_groups[0]["lr"]
    if config.schedule == "onecycle":
        return Schedule(optimizer, one_cycle(lr, total_steps), total_steps)
    if config.schedule == "cosine":
        return Schedule(optimizer, lambda step: (annealed(lr, 0.0, step / total_steps), None), total_steps)
    return None
