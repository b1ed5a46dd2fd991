"""The state of one ``fit``, saved and restored whole: what ``--resume`` continues from."""

from __future__ import annotations

import dataclasses
import signal
import time

import torch

from kd_edge import interrupt
from kd_edge.errors import TrainingInterrupted
from kd_edge.training import distributed
from kd_edge.training.optimizers import make_optimizer, make_scheduler
from kd_edge.training.progress import EpochLog

# CutMix draws from a generator of its own, seeded from the fit's seed plus this, so that the images, their order
# and the augmentation draws are those of the same run without it.
CUTMIX_SEED_OFFSET = 1000

# Mid-epoch, the full training state is saved at most this often (and at every epoch's end),
# so that a killed run loses at most this much work.
STATE_INTERVAL_S = 60.0


class FitState:
    """The state of one ``fit``: optimisers, schedules, RNGs, position, the best so far; saved and restored whole.

    Where an epoch stands is (its data order, drawn from the generator's state at the epoch's
    start; the steps done; the generator's state now, which augmentation draws from), so a
    resumed epoch sees the same batches and the same shifts as an uninterrupted one.
    """

    def __init__(self, plan, state_file):
        self.model, self.stage, self.state_file = plan.model, plan.stage, state_file
        self.generator = torch.Generator().manual_seed(plan.seed)
        self.mix_generator = torch.Generator().manual_seed(plan.seed + CUTMIX_SEED_OFFSET)
        self.world_size, self.epochs = distributed.world()[1], plan.epochs
        self.steps_per_epoch = max(len(plan.train) // (plan.optim.batch_size * self.world_size), 1)
        self.optimizers = [make_optimizer(network, plan.optim) for network in plan.networks]
        self.schedulers = [make_scheduler(o, plan.optim, plan.epochs * self.steps_per_epoch) for o in self.optimizers]
        self.epoch, self.steps_done, self.totals = 1, 0, None
        self.epoch_generator_state = self.generator.get_state()
        self.best_val_accuracy, self.best_epoch, self.best_state, self.last_saved = -1.0, 0, None, None
        self.history: list[EpochLog] = []
        self.seconds_before, self.started = 0.0, time.perf_counter()
        self.last_state_save = time.perf_counter()

    def val_history(self) -> list[float]:
        return [log.val_accuracy for log in self.history]

    def elapsed(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started

    def state(self) -> dict:
        return {
            "stage": self.stage,
            "world_size": self.world_size,
            "epochs": self.epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "epoch": self.epoch,
            "steps_done": self.steps_done,
            "totals": self.totals,
            "model": self.model.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() if s is not None else None for s in self.schedulers],
            "epoch_generator_state": self.epoch_generator_state,
            "generator_state": self.generator.get_state(),
            "mix_generator_state": self.mix_generator.get_state(),
            "torch_rng_state": torch.get_rng_state(),
            "best_val_accuracy": self.best_val_accuracy,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
            "last_saved": self.last_saved,
            "history": [dataclasses.asdict(log) for log in self.history],
            "seconds": self.elapsed(),
        }

    def restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.epoch, self.steps_done, self.totals = state["epoch"], state["steps_done"], state["totals"]
        saved_world = state.get("world_size", 1)
        if saved_world == self.world_size:
            for optimizer, saved in zip(self.optimizers, state["optimizers"], strict=True):
                optimizer.load_state_dict(saved)
            for scheduler, saved in zip(self.schedulers, state["schedulers"], strict=True):
                if scheduler is not None:
                    scheduler.load_state_dict(saved)
        else:  # another number of processes: as far through this run's plan as the saved run was through its own
            (self.epoch, self.steps_done), self.totals = self.position_in_this_plan(state), None
            # The moments, with this run's hyperparameters: the saved learning rates are the old process count's
            # (--lr-scaling); the schedule then moves on to where this run stands.
            for optimizer, saved in zip(self.optimizers, state["optimizers"], strict=True):
                optimizer.load_state_dict(saved, moments_only=True)
            for scheduler in self.schedulers:
                if scheduler is not None:
                    scheduler.load_state_dict({"steps": (self.epoch - 1) * self.steps_per_epoch + self.steps_done})
        self.epoch_generator_state = state["epoch_generator_state"]
        self.resume_generator_state = state["generator_state"]
        if "mix_generator_state" in state:  # saved before CutMix existed: it was not used
            self.mix_generator.set_state(state["mix_generator_state"])
        torch.set_rng_state(state["torch_rng_state"])
        self.best_val_accuracy, self.best_epoch = state["best_val_accuracy"], state["best_epoch"]
        self.best_state, self.last_saved = state["best_state"], state["last_saved"]
        self.history = [EpochLog(**log) for log in state["history"]]
        self.seconds_before = state["seconds"]

    def position_in_this_plan(self, state: dict) -> tuple[int, int]:
        """(epoch, steps done in it) at the fraction of this run's optimiser steps that the saved run had done of
        its own. A step budget plans more epochs on more processes (each takes a share of the images), so the
        fraction, not the epoch number, is what carries over; the learning-rate schedule continues from there."""
        per_epoch = state.get("steps_per_epoch", self.steps_per_epoch * self.world_size // state["world_size"])
        done = ((state["epoch"] - 1) * per_epoch + state["steps_done"]) / (state.get("epochs", self.epochs) * per_epoch)
        total = self.epochs * self.steps_per_epoch
        steps = min(round(done * total), total)
        return steps // self.steps_per_epoch + 1, steps % self.steps_per_epoch

    def save(self) -> None:
        if self.state_file is not None and distributed.is_main():
            self.state_file.save(self.state())
            self.last_state_save = time.perf_counter()

    def after_step(self, steps_done: int, totals: dict) -> None:
        """Save the state when a signal asks to stop (then stop) or when the last save is old."""
        self.steps_done, self.totals = steps_done, totals
        signum = distributed.any_rank(interrupt.requested())  # every rank stops at the same step
        if signum is None and time.perf_counter() - self.last_state_save < STATE_INTERVAL_S:
            return
        self.save()
        if signum is not None:
            where = (
                f"the state is saved in {self.state_file.path}" if self.state_file else "no state file was asked for"
            )
            raise TrainingInterrupted(
                f"{self.stage} training stopped by {signal_name(signum)} at epoch {self.epoch}, step {steps_done}; "
                f"{where}",
                signum,
            )

    def epoch_finished(self) -> None:
        self.epoch += 1
        self.steps_done, self.totals = 0, None
        self.epoch_generator_state = self.generator.get_state()
        self.save()


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name
