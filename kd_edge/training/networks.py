"""The networks of a run: built from a seed, fitted, tested and saved as ``RUN_DIR/<name>.pt``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn

from kd_edge.errors import CheckpointError
from kd_edge.log import step
from kd_edge.runtime.card import ModelCard
from kd_edge.settings.training import NetworkSettings, OptimSettings
from kd_edge.training.batches import Normalizer
from kd_edge.training.checkpoint import TrainingStateFile, file_sha256, save_checkpoint, transfer_matching
from kd_edge.training.device import build_seeded, to_channels_last
from kd_edge.training.distributed import describe, is_main
from kd_edge.training.evaluate import accuracy
from kd_edge.training.fit import FitHooks, FitPlan, LaterStage, StepFn, cross_entropy_step, fit
from kd_edge.training.models import ModelSpec, count_macs, count_parameters
from kd_edge.training.progress import SilentProgress
from kd_edge.training.run_folder import RunFolder
from kd_edge.training.splits import DeviceDataset, InputView


@dataclass
class Network:
    """A network in training and what its checkpoint, ``RUN_DIR/<name>.pt``, records."""

    name: str
    spec: ModelSpec
    model: nn.Module
    card: ModelCard
    info: dict


@dataclass(kw_only=True)
class RunContext:
    """What every network trained in one run shares: the data, the run folder, how networks learn."""

    splits: DeviceDataset
    run: RunFolder
    optim: OptimSettings
    augment: str  # the --augment policy
    deterministic: bool
    progress: object


def new_network(
    splits: DeviceDataset, view: InputView, model_name: str, name: str, seed: int, init: dict | None = None
) -> Network:
    """Build ``model_name`` with weights from ``seed`` alone, then copy in ``init``'s matching tensors."""
    spec = splits.spec(model_name)
    model = build_seeded(spec, seed)
    info = {
        "model": model_name,
        "parameters": count_parameters(model),
        "macs": count_macs(model, splits.dataset.input_shape),
    }
    if init is not None:
        info["init"] = transfer_matching(model, init["weights"], init["source"])
    card = replace(view.card, model=model_name, parameters=info["parameters"], macs=info["macs"])
    return Network(name, spec, to_channels_last(model.to(splits.device)), card, info)


def save_network(run: RunFolder, network: Network, extra: dict) -> Path:
    path = run.dir / f"{network.name}.pt"
    if is_main():
        save_checkpoint(path, network.model, network.spec, network.card, {**network.info, **extra}, run.config)
    return path


def train_and_save(
    context: RunContext,
    networks: list[Network],
    *,
    epochs: int,
    step_fn: StepFn,
    normalize: Normalizer,
    seed: int,
    trained: nn.Module | None = None,
    before_epoch=None,
    extra_metrics: dict | None = None,
    fingerprint: dict | None = None,
    later: tuple[LaterStage, ...] = (),
) -> list[dict]:
    """Fit, test and save every network; returns each network's metrics.

    ``trained`` (default: the only network) is what ``fit`` trains and selects on: for online
    distillation, the pair, selected on the student. The training state goes to
    ``RUN_DIR/<last network>.state.pt`` as it trains; a resumed run continues from it
    (``fingerprint`` must match), and it is removed once the stage is done. ``later``: the stages that train
    after this one, whose time the pace line estimates too.
    """
    run, splits = context.run, context.splits
    state_file = TrainingStateFile(run.dir, networks[-1].name, fingerprint)
    resume_from = state_file.load() if run.resuming else None
    if resume_from is not None:
        step(f"{networks[-1].name}: resuming at epoch {resume_from['epoch']}, step {resume_from['steps_done']}")

    precision = splits.precision_for(network.model for network in networks)
    for network in networks:
        network.info["precision"] = precision

    def save_best(_, progress_info):
        paths = [save_network(run, network, {**progress_info, "complete": False}) for network in networks]
        return str(paths[-1])

    plan = FitPlan(
        model=trained or networks[0].model,
        train=splits.train,
        val=splits.val,
        normalize=normalize,
        epochs=epochs,
        optim=context.optim,
        step_fn=step_fn,
        stage=networks[-1].name if len(networks) == 1 else "+".join(n.name for n in networks),
        seed=seed,
        augment=context.augment,
        precision=precision,
        deterministic=context.deterministic,
        networks=[network.model for network in networks],
        summary=" + ".join(f"{n.info['model']} ({n.info['macs'] / 1e6:,.1f} M MACs an image)" for n in networks),
        classes=splits.dataset.num_classes,
    )
    hooks = FitHooks(
        save_best=save_best,
        progress=context.progress or SilentProgress(),
        before_epoch=before_epoch,
        state_file=state_file,
        resume_from=resume_from,
        later=later,
    )
    result = fit(plan, hooks)
    history = [
        {
            "epoch": log.epoch,
            **log.values,
            "loss": log.loss,
            **log.terms,
            "train_accuracy": log.train_accuracy,
            "val_accuracy": log.val_accuracy,
        }
        for log in result.history
    ]
    optim = context.optim
    # The network fit selected on holds the weights whose validation accuracy fit measured (an online pair's
    # networks are measured here).
    fitted = trained or networks[0].model
    for network in networks:
        network.info.update(
            epochs=epochs,
            best_epoch=result.best_epoch,
            val_accuracy=result.best_val_accuracy
            if network.model is fitted
            else accuracy(network.model, splits.val, normalize),
            test_accuracy=accuracy(network.model, splits.test, normalize),
            train_seconds=round(result.seconds, 3),
            images_per_second=round(sum(log.images_per_second for log in result.history) / len(result.history), 1),
            distributed=describe(optim.batch_size, optim.lr, optim.lr_scaling, result.images_per_rank),
            history=history,
            **(extra_metrics or {}),
        )
        network.card = replace(network.card, test_accuracy=network.info["test_accuracy"])
        path = save_network(run, network, {"complete": True})
        network.info.update(checkpoint=str(path), sha256=file_sha256(path) if is_main() else None)
    if is_main():
        state_file.remove()
    return [network.info for network in networks]


def cross_entropy_teacher(
    context: RunContext, view: InputView, teacher: NetworkSettings, seed: int, later: tuple[LaterStage, ...] = ()
) -> Network:
    """Train the run's teacher with cross-entropy (``teacher.epochs`` already planned) and save it."""
    network = new_network(context.splits, view, teacher.model, "teacher", seed)
    network.info["source"] = "trained"
    step_fn = cross_entropy_step(view.normalize)
    train_and_save(
        context, [network], epochs=teacher.epochs, step_fn=step_fn, normalize=view.normalize, seed=seed, later=later
    )
    return network


def check_models_build(splits: DeviceDataset, names: list[str]) -> None:
    """Unknown names and arguments that do not fit the data (an image size a model cannot take) fail now."""
    for name in names:
        build_seeded(splits.spec(name), seed=0)  # seeded: a check must not move the caller's RNG


def check_init_fits(init: dict, spec: ModelSpec) -> None:
    """Refuse an --init file of which no tensor fits the student (a typo'd path to the wrong model)."""
    report = transfer_matching(build_seeded(spec, seed=0), init["weights"], init["source"])
    if not report["loaded"]:
        raise CheckpointError(
            f"--init {init['source']!r}: none of its {len(init['weights'])} tensors matches a parameter of "
            f"{spec.name!r} by name and shape (the student has {', '.join(report['not_in_source'][:4])}, ...); "
            "give weights of the same or a related architecture, or --init scratch"
        )
