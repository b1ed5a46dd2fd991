"""Resuming a fit on another number of processes: where it continues, and with which learning rate.

The process count is what ``distributed.world()`` says; these tests set it, so they need no torchrun (the
torchrun resumes themselves are in test_distributed.py).
"""

import pytest
import torch
from torch import nn

from kd_edge.data import load_dataset
from kd_edge.settings import NetworkSettings, OptimSettings
from kd_edge.training import distributed
from kd_edge.training.batches import DeviceSplit
from kd_edge.training.fit import FitPlan
from kd_edge.training.fit_state import FitState

BATCH = 16
BUDGET = NetworkSettings(model="cnn-tiny", steps=120)  # a step budget: more epochs on more processes


@pytest.fixture(scope="module")
def train_split(easy_npz):
    return DeviceSplit(load_dataset(f"npz:{easy_npz}").train, torch.device("cpu"))


def fit_state(monkeypatch, train_split, processes: int) -> FitState:
    """A fresh fit's state on ``processes`` processes, its epochs planned from the step budget as distill does."""
    monkeypatch.setattr(distributed, "world", lambda: (0, processes))
    epochs = BUDGET.planned_epochs(len(train_split) // processes, BATCH)
    torch.manual_seed(0)
    plan = FitPlan(
        model=nn.Linear(4, 3),
        train=train_split,
        val=train_split,
        normalize=None,
        epochs=epochs,
        optim=OptimSettings(batch_size=BATCH, lr=4e-3, lr_scaling="linear"),
        step_fn=None,
        stage="student",
        seed=0,
    )
    return FitState(plan, None)


def take_steps(state: FitState, steps: int) -> None:
    """``steps`` optimiser steps, as fit takes them: Adam's moments and the schedule move."""
    model = state.model
    for step in range(1, steps + 1):
        loss = model(torch.ones(2, 4)).square().mean()
        state.optimizers[0].zero_grad()
        loss.backward()
        state.optimizers[0].step()
        state.schedulers[0].step()
        state.steps_done = step % state.steps_per_epoch
        state.epoch = step // state.steps_per_epoch + 1


def fraction_done(state: FitState) -> float:
    return ((state.epoch - 1) * state.steps_per_epoch + state.steps_done) / (state.epochs * state.steps_per_epoch)


@pytest.mark.parametrize("saved_on, resumed_on", [(1, 2), (2, 1)])
def test_a_resume_on_another_count_continues_at_the_same_fraction_with_the_new_counts_rate(
    monkeypatch, train_split, saved_on, resumed_on
):
    saved = fit_state(monkeypatch, train_split, saved_on)
    take_steps(saved, saved.epochs * saved.steps_per_epoch // 3 + 2)  # a third of the way, mid-epoch
    snapshot = saved.state()

    resumed = fit_state(monkeypatch, train_split, resumed_on)
    assert resumed.epochs != saved.epochs  # the budget plans other epochs here: the bug this guards against
    resumed.restore(snapshot)
    assert fraction_done(resumed) == pytest.approx(fraction_done(saved), abs=1 / resumed.steps_per_epoch)

    fresh = fit_state(monkeypatch, train_split, resumed_on)  # an uninterrupted run on the new count, moved there
    for _ in range((resumed.epoch - 1) * resumed.steps_per_epoch + resumed.steps_done):
        fresh.schedulers[0].step()
    group, expected = resumed.optimizers[0].param_groups[0], fresh.optimizers[0].param_groups[0]
    assert group["lr"] == pytest.approx(expected["lr"]) and group["betas"] == pytest.approx(expected["betas"])
    schedule = resumed.schedulers[0]
    peak = max(schedule.values(step)[0] for step in range(schedule.total_steps))
    assert peak == pytest.approx(4e-3 * resumed_on, rel=1e-2)  # linear scaling for the new count
    # Adam's moments came across: the saved run's optimiser state, not a fresh one
    moments = resumed.optimizers[0].state_dict()["state"][0]["exp_avg"]
    assert torch.equal(moments, saved.optimizers[0].state_dict()["state"][0]["exp_avg"])


def test_a_resume_past_the_new_plans_end_finishes_instead_of_failing(monkeypatch, train_split):
    saved = fit_state(monkeypatch, train_split, 2)
    take_steps(saved, saved.epochs * saved.steps_per_epoch)  # every step of the plan done, before its last save
    snapshot = saved.state()
    resumed = fit_state(monkeypatch, train_split, 1)
    resumed.restore(snapshot)  # the schedule is moved to its end, not past it
    assert resumed.epoch == resumed.epochs + 1 and resumed.steps_done == 0


@pytest.mark.parametrize("images, processes", [(100, 2), (97, 3), (40, 4), (5, 2)])
def test_each_rank_gets_whole_batches_of_its_own_images(monkeypatch, images, processes):
    order = torch.randperm(images, generator=torch.Generator().manual_seed(0))
    shards = []
    for rank in range(processes):
        monkeypatch.setattr(distributed, "world", lambda rank=rank: (rank, processes))
        shards.append(distributed.shard(order, 4))
    sizes = {len(shard) for shard in shards}
    assert len({-(-size // 4) for size in sizes}) == 1 and 0 not in sizes  # the same steps on every rank: DDP waits
    taken = torch.cat(shards)
    assert len(set(taken.tolist())) == len(taken)  # no image on two ranks: the shards do not overlap
    assert set(taken.tolist()) <= set(order.tolist())
    if images >= 4 * processes:
        assert sizes == {images // (4 * processes) * 4}  # whole batches, as many as all ranks can take
