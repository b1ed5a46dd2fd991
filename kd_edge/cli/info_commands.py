"""`kd-edge models` and `kd-edge datasets`: what the registry and the data readers offer."""

from __future__ import annotations

import typer

from kd_edge.cli.console import console
from kd_edge.cli.options import settings_command
from kd_edge.cli.train_commands import require_training_extra
from kd_edge.settings.data import DataSettings


@settings_command("models")
def models(settings: DataSettings, given: set[str]):
    """List the registered models with their parameters, MACs and peak activation memory (batch 1) at the
    dataset's input size, and the families `kd-edge search` explores (any member: cnn@w0.5d2)."""
    require_training_extra()
    from rich.table import Table

    from kd_edge.data import load_dataset
    from kd_edge.log import progress, step
    from kd_edge.training.models import (
        count_macs,
        count_parameters,
        create_model,
        describe_model,
        family_doc,
        list_families,
        list_models,
        peak_activation_bytes,
    )

    step(f"models: loading {settings.dataset} for its input size")
    data = load_dataset(settings.dataset, settings.data_dir, settings.image_size)
    channels, size, _ = data.input_shape
    table = Table(title=f"models at input {data.input_shape} ({data.name})")
    for column in ("model", "parameters", "MACs", "peak activations", "description"):
        table.add_column(column, justify="left" if column in ("model", "description") else "right")
    for name in list_models():
        progress(f"models: building {name} to count its parameters, MACs and activations")
        net = create_model(name, data.num_classes, channels, size)
        table.add_row(
            name,
            f"{count_parameters(net):,}",
            f"{count_macs(net, data.input_shape):,}",
            f"{peak_activation_bytes(net, data.input_shape) / 1024:,.0f} KiB",
            describe_model(name),
        )
    console().print(table)
    console().print("families, any width and depth as FAMILY@wWIDTHdDEPTH (e.g. --student-model cnn@w0.5d2):")
    for family in list_families():
        console().print(f"  {family}: {family_doc(family)}")
    console().print(detectors_table())


def detectors_table():
    """The centroid detectors of `kd-edge detect`, their cost on a frame of the default --frame-size."""
    from rich.table import Table

    from kd_edge.settings.detection import DetectSettings
    from kd_edge.training.detectors import DETECTORS, create_detector
    from kd_edge.training.models import count_macs, count_parameters

    side = DetectSettings().frame_size
    table = Table(title=f"detectors (kd-edge detect) on a {side}x{side} frame, one class")
    for column in ("model", "cell px", "parameters", "MACs", "description"):
        table.add_column(column, justify="left" if column in ("model", "description") else "right")
    for name, (_, description) in DETECTORS.items():
        net = create_detector(name, classes=1)
        macs = f"{count_macs(net, (3, side, side)):,}"
        table.add_row(name, str(net.stride), f"{count_parameters(net):,}", macs, description)
    return table


def datasets():
    """List the dataset names that --dataset accepts."""
    from kd_edge.data import list_datasets

    for name, description in list_datasets().items():
        typer.echo(f"{name:16} {description}")


COMMANDS = {"models": models, "datasets": datasets}
