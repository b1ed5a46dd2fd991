"""The ``kd-edge`` command line. Each command parses options, builds a config, calls one function, renders the result.

Heavy libraries (torch, torchvision, onnx) are imported inside the commands, so
``kd-edge --help`` is instant and works without the ``train`` extra.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from kd_edge.config import PRESETS
from kd_edge.errors import KdEdgeError, MissingDependencyError, TrainingInterrupted

app = typer.Typer(
    help="Distil image classifiers into small students for drone-class CPUs, export them and prove how they run.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def show_version(value: bool) -> None:
    if value:
        from kd_edge import __version__

        typer.echo(f"kd-edge {__version__}")
        raise typer.Exit()


@app.callback()
def kd_edge_options(
    version: Annotated[
        bool,
        typer.Option("--version", metavar="", callback=show_version, is_eager=True, help="Print the version and exit."),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", metavar="", help="Let ONNX Runtime print its own logging (quiet by default).")
    ] = False,
):
    """Distil image classifiers into small students for drone-class CPUs, export them and prove how they run."""
    if verbose:
        import os

        from kd_edge.log import VERBOSE_ENV_VAR

        os.environ[VERBOSE_ENV_VAR] = "1"


# --- options shared by several commands ----------------------------------------------------------
# Help shows the effective defaults: the default preset's values (and the reference preset's where they differ).
_DEFAULT, _REFERENCE = PRESETS["default"], PRESETS["reference"]


def preset_default(name: str) -> str:
    mine, theirs = getattr(_DEFAULT.student, name), getattr(_REFERENCE.student, name)
    return f"default: {mine}" + (f"; --preset reference: {theirs}" if theirs != mine else "")


DatasetOpt = Annotated[
    str,
    typer.Option(
        "--dataset", "-d", help="mnist-5k (built in), mnist, fashion-mnist, cifar10, folder:PATH or npz:PATH."
    ),
]
TeacherDatasetOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        "-d",
        help="mnist-5k, mnist, fashion-mnist, cifar10, folder:PATH or npz:PATH (default: the dataset the first "
        "--teacher was trained on, else mnist-5k).",
    ),
]
DataDirOpt = Annotated[Path | None, typer.Option(help="Folder holding dataset files (default: $KD_EDGE_DATA).")]
ImageSizeOpt = Annotated[int | None, typer.Option(help="Resize folder: images to this side length.")]
NormalizationOpt = Annotated[
    str | None,
    typer.Option(help="'dataset' (train-split mean/std, the default) or 'half' (0.5/0.5, --preset reference's)."),
]
AugmentOpt = Annotated[
    bool,
    typer.Option(
        "--augment/--no-augment", metavar="", help="Shift training images by up to 2 px. Disables cached soft labels."
    ),
]
EpochsOpt = Annotated[
    int | None,
    typer.Option(
        "--epochs",
        "-e",
        help=f"Training epochs (default: enough for {_DEFAULT.student.steps} optimiser steps for a student, "
        f"{_DEFAULT.teacher.steps} for a teacher: 3 and 2 epochs on Fashion-MNIST, 30 and 17 on mnist-5k; "
        f"--preset reference: {_REFERENCE.student.epochs}).",
    ),
]
TeacherEpochsOpt = Annotated[
    int | None,
    typer.Option(
        help=f"Teacher epochs (default: --epochs if given, else enough for {_DEFAULT.teacher.steps} optimiser "
        f"steps; --preset reference: {_REFERENCE.teacher.epochs})."
    ),
]
BatchSizeOpt = Annotated[int | None, typer.Option(help=f"Training batch size ({preset_default('batch_size')}).")]
LrOpt = Annotated[float | None, typer.Option(help=f"Peak learning rate ({preset_default('lr')}).")]
OptimizerOpt = Annotated[str | None, typer.Option(help=f"adamw, adam or sgd ({preset_default('optimizer')}).")]
ScheduleOpt = Annotated[str | None, typer.Option(help=f"onecycle, cosine or constant ({preset_default('schedule')}).")]
WeightDecayOpt = Annotated[float | None, typer.Option(help=f"Weight decay ({preset_default('weight_decay')}).")]
PresetOpt = Annotated[
    str,
    typer.Option(help="Recipe to start from: 'default' (kd-edge's) or 'reference' (the reference script's, exactly)."),
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Run folder for checkpoints, metrics.json and config.json.")]
SeedOpt = Annotated[int, typer.Option(help="Random seed for initialisation and shuffling.")]
DeviceOpt = Annotated[str, typer.Option(help="cpu, cuda or auto.")]
ThreadsOpt = Annotated[int | None, typer.Option(help="Torch CPU threads (default: torch's choice).")]
PrecisionOpt = Annotated[
    str | None,
    typer.Option(
        help="auto (the default: bf16 where the hardware has it natively, else fp32), fp32 or bf16 "
        "(autocast; weights stay fp32); --preset reference: fp32."
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", metavar="", help="Replace the results of an earlier run in --out.")]
NprocOpt = Annotated[
    int,
    typer.Option(
        help="Train in N processes on this machine (torch.distributed.run, gloo on CPU, nccl on CUDA); for "
        "several machines run `torchrun ... -m kd_edge` yourself (README)."
    ),
]
LrScalingOpt = Annotated[
    str | None,
    typer.Option(
        help="With several processes (each taking --batch-size images a step), the learning rate: none (as given, "
        "the default), linear (times the number of processes) or sqrt."
    ),
]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume",
        metavar="",
        help="Continue the interrupted run in --out from its saved state (same settings; a finished teacher is kept).",
    ),
]
DeterministicOpt = Annotated[
    bool,
    typer.Option(
        "--deterministic", metavar="", help="Only deterministic torch kernels: the same --seed gives the same metrics."
    ),
]
ReduceRangeOpt = Annotated[
    bool,
    typer.Option(
        "--reduce-range/--full-range",
        metavar="",
        help="7-bit INT8 weights, so that x86 CPUs without VNNI (AVX2) compute what an ARM board does; "
        "--full-range uses all 8 bits where only VNNI and ARM hosts matter.",
    ),
]
OptimizeLatencyOpt = Annotated[
    bool,
    typer.Option(
        "--optimize-latency/--no-optimize-latency",
        metavar="",
        help="Keep in FP32 the nodes whose INT8 version is measured to be slower.",
    ),
]
CompareLatencyOpt = Annotated[
    bool,
    typer.Option(
        "--compare-latency/--no-compare-latency",
        metavar="",
        help="Time FP32 against INT8 at the end (a fresh process per measurement).",
    ),
]


def user_errors(command):
    """Turn a KdEdgeError into a one-paragraph message and exit code 1, and Ctrl-C into exit 130.
    While the command runs, every step the library announces is printed (no silent minutes)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from kd_edge.log import steps_shown

        def show(message: str) -> None:
            if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
                console().print(f"[dim]{message}[/]", soft_wrap=True, highlight=False)

        try:
            with steps_shown(show):
                return command(*args, **kwargs)
        except TrainingInterrupted as exc:
            typer.echo(f"Stopped: {exc}", err=True)
            raise typer.Exit(128 + exc.signum) from None
        except KdEdgeError as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("Interrupted. Checkpoints already written in the run folder are complete and kept.", err=True)
            raise typer.Exit(130) from None

    return wrapper


ExporterOpt = Annotated[
    str | None,
    typer.Option(
        help="dynamo (torch.export, PyTorch's maintained exporter, opset 18) or torchscript (deprecated by torch, "
        "opset 17). Default: dynamo, falling back to torchscript for a model torch.export cannot capture."
    ),
]
OpsetOpt = Annotated[
    int | None,
    typer.Option(help="ONNX opset (default: 18 with dynamo, 17 with torchscript); both load in ONNX Runtime 1.14+."),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="A kd-edge.toml: options under this command's [table], named as on the command line. "
        "Options given here win over the file, the file over the preset.",
    ),
]


def config_file(table: str):
    """Fill the options the user did not type from ``--config FILE``'s ``[table]``.

    The command must take ``ctx: typer.Context`` and ``config_path: ConfigOpt``. Values are
    checked against the option's type; an unknown key names the closest valid one.
    """

    def decorator(command):
        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            if kwargs.get("config_path") is not None:
                kwargs = {**kwargs, **options_from_file(command, table, kwargs)}
            return command(*args, **kwargs)

        return wrapper

    return decorator


def options_from_file(command, table: str, given: dict) -> dict:
    """The file's values for the options the user did not type."""
    ctx = given["ctx"]
    values = file_options(given["config_path"], command, table)
    return {
        name: value
        for name, value in values.items()
        if getattr(ctx.get_parameter_source(name), "name", None) != "COMMANDLINE"
    }


def file_options(path: Path, command, table: str) -> dict:
    """``[table]`` of a config file, checked against ``command``'s options and converted to their types."""
    import inspect
    import typing

    from kd_edge.config import config_table

    command = inspect.unwrap(command)
    hints = typing.get_type_hints(command, include_extras=True)
    names = {name for name in inspect.signature(command).parameters if name not in ("ctx", "config_path")}
    values = {}
    for name, value in config_table(path, table, names).items():
        hint = hints[name]
        values[name] = coerce(name, value, typing.get_args(hint)[0] if typing.get_origin(hint) is Annotated else hint)
    return values


def coerce(name: str, value, annotation):
    """A TOML value as the option's type (Path, int, float, str, bool, or a list of them)."""
    import types
    import typing

    from kd_edge.errors import ConfigError

    kinds = (
        [a for a in typing.get_args(annotation) if a is not type(None)]
        if isinstance(annotation, types.UnionType)
        else [annotation]
    )
    kind = kinds[0]
    if typing.get_origin(kind) is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key {name.replace('_', '-')!r} must be a list, got {value!r}")
        return [coerce(name, item, typing.get_args(kind)[0]) for item in value]
    if kind is Path and isinstance(value, str):
        return Path(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"config key {name.replace('_', '-')!r} must be {getattr(kind, '__name__', kind)}, got {value!r}")


def require_training_extra(
    modules: tuple[str, ...] = ("torch", "torchvision", "onnx", "onnxscript", "torchao"), extra: str = "train"
) -> None:
    """The host-side commands need an extra (`train`, or `quantize` for onnx alone); the runtime (bench) does not."""
    import importlib.util

    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingDependencyError(
            f"this command needs {' and '.join(missing)}, which the base install leaves out; install them with: "
            f"pip install 'kd-edge[{extra}]'"
        )


@app.command()
@user_errors
@config_file("teacher")
def teacher(
    ctx: typer.Context,
    dataset: DatasetOpt = "mnist-5k",
    epochs: EpochsOpt = None,
    out: OutOpt = Path("runs/teacher"),
    model: Annotated[str | None, typer.Option(help="Teacher architecture (see `kd-edge models`).")] = None,
    batch_size: BatchSizeOpt = None,
    lr: LrOpt = None,
    optimizer: OptimizerOpt = None,
    schedule: ScheduleOpt = None,
    weight_decay: WeightDecayOpt = None,
    preset: PresetOpt = "default",
    data_dir: DataDirOpt = None,
    image_size: ImageSizeOpt = None,
    normalization: NormalizationOpt = None,
    augment: AugmentOpt = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = "cpu",
    threads: ThreadsOpt = None,
    precision: PrecisionOpt = None,
    force: ForceOpt = False,
    resume: ResumeOpt = False,
    deterministic: DeterministicOpt = False,
    nproc: NprocOpt = 1,
    lr_scaling: LrScalingOpt = None,
    config_path: ConfigOpt = None,
):
    """Train a teacher with cross-entropy: writes OUT/teacher.pt, metrics.json and config.json."""
    from kd_edge import config as cfg

    require_training_extra()
    recipe = cfg.get_preset(preset)
    config = cfg.TeacherConfig(
        data=cfg.DataConfig(
            dataset=dataset,
            data_dir=optional_str(data_dir),
            image_size=image_size,
            normalization=normalization or recipe.normalization,
            augment=augment,
        ),
        teacher=cfg.override(
            recipe.teacher,
            model=model,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            optimizer=optimizer,
            schedule=schedule,
            weight_decay=weight_decay,
            lr_scaling=lr_scaling,
        ),
        run=run_config(out, seed, device, threads, force, precision or recipe.precision, resume, deterministic),
    )
    from kd_edge.training.distill import train_teacher

    relaunch_under_torchrun(nproc)
    with training_process(device):
        metrics = train_teacher(config, progress=make_progress())
    print_summary(metrics, out)
    next_step(f"kd-edge distill --dataset {dataset} --teacher {out / 'teacher.pt'} --out RUN_DIR")


@app.command()
@user_errors
@config_file("distill")
def distill(
    ctx: typer.Context,
    dataset: TeacherDatasetOpt = None,
    epochs: EpochsOpt = None,
    out: OutOpt = Path("runs/distill"),
    teacher: Annotated[
        list[Path] | None,
        typer.Option(
            "--teacher",
            metavar="PATH",
            help="A teacher.pt to distil from (repeat it for --mode multi); without it a teacher is trained first.",
        ),
    ] = None,
    mode: Annotated[
        str,
        typer.Option(
            help="offline (a frozen teacher), online (teacher and student learn together, from each other) or "
            "multi (two or more --teacher files, their soft labels mixed)."
        ),
    ] = "offline",
    teacher_weights: Annotated[
        str,
        typer.Option(
            help="How --mode multi mixes its teachers: equal, confidence (per image, each teacher's top-class "
            "probability) or one weight per teacher, e.g. 0.7,0.3."
        ),
    ] = "equal",
    init: Annotated[
        str,
        typer.Option(
            help="Student start: scratch, or a checkpoint or PyTorch weights file whose tensors matching the "
            "student's by name and shape are loaded (what was and was not is in metrics.json)."
        ),
    ] = "scratch",
    teacher_model: Annotated[
        str | None, typer.Option(help=f"Teacher architecture when training one (default: {_DEFAULT.teacher.model}).")
    ] = None,
    student_model: Annotated[
        str | None,
        typer.Option(help=f"Student architecture, see `kd-edge models` (default: {_DEFAULT.student.model})."),
    ] = None,
    teacher_epochs: TeacherEpochsOpt = None,
    temperature: Annotated[
        float | None,
        typer.Option(
            "--temperature",
            "-T",
            help=f"Softmax temperature T of the soft labels (default: {_DEFAULT.kd.temperature:g}).",
        ),
    ] = None,
    alpha: Annotated[
        float | None,
        typer.Option(
            help=f"Weight of the hard-label CE term; 1 trains the student alone (default: {_DEFAULT.kd.alpha:g})."
        ),
    ] = None,
    kd_loss: Annotated[
        str | None, typer.Option(help="Soft-label term: 'kl' (T^2 * KL, the default) or 'mse' (logit matching).")
    ] = None,
    temperature_schedule: Annotated[
        str | None,
        typer.Option(
            help="How T moves from --temperature during training: constant (the default), linear:END, cosine:END, "
            "step:END[:AT] or adaptive:END (half-way to END after each epoch that does not improve validation)."
        ),
    ] = None,
    alpha_schedule: Annotated[
        str | None, typer.Option(help="How alpha moves from --alpha; the same forms as --temperature-schedule.")
    ] = None,
    min_teacher_accuracy: Annotated[
        float | None,
        typer.Option(
            help="Stop unless the teacher reaches this validation accuracy, 0-1 (default: 0, only above chance)."
        ),
    ] = None,
    batch_size: BatchSizeOpt = None,
    lr: LrOpt = None,
    optimizer: OptimizerOpt = None,
    schedule: ScheduleOpt = None,
    weight_decay: WeightDecayOpt = None,
    preset: PresetOpt = "default",
    data_dir: DataDirOpt = None,
    image_size: ImageSizeOpt = None,
    normalization: NormalizationOpt = None,
    augment: AugmentOpt = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = "cpu",
    threads: ThreadsOpt = None,
    precision: PrecisionOpt = None,
    force: ForceOpt = False,
    resume: ResumeOpt = False,
    deterministic: DeterministicOpt = False,
    nproc: NprocOpt = 1,
    lr_scaling: LrScalingOpt = None,
    config_path: ConfigOpt = None,
):
    """Distil a student: writes OUT/student.pt (+ teacher.pt when it trains one) and metrics.json.

    The loss is alpha * CE(y, s) + (1 - alpha) * T^2 * KL(softmax(t/T) || softmax(s/T)), from one
    frozen teacher (--mode offline), several (--mode multi) or a teacher learning alongside
    (--mode online). Frozen teachers' soft labels are computed once unless --augment is on.
    """
    from kd_edge.config import distill_config

    require_training_extra()
    config = distill_config(
        preset=preset,
        dataset=dataset or dataset_of_teacher(teacher),
        data_dir=optional_str(data_dir),
        image_size=image_size,
        normalization=normalization,
        augment=augment,
        teacher_model=teacher_model,
        student_model=student_model,
        epochs=epochs,
        teacher_epochs=teacher_epochs,
        temperature=temperature,
        alpha=alpha,
        kd_loss=kd_loss,
        min_teacher_accuracy=min_teacher_accuracy,
        out=str(out),
        seed=seed,
        device=device,
        threads=threads,
        precision=precision,
        force=force,
        resume=resume,
        deterministic=deterministic,
        teacher_paths=[str(path) for path in teacher or []],
        mode=mode,
        teacher_weights=teacher_weights,
        init=init,
        temperature_schedule=temperature_schedule,
        alpha_schedule=alpha_schedule,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        schedule=schedule,
        weight_decay=weight_decay,
        lr_scaling=lr_scaling,
    )
    from kd_edge.training.distill import distill as distill_student

    relaunch_under_torchrun(nproc)
    with training_process(device):
        metrics = distill_student(config, progress=make_progress())
    print_summary(metrics, out)
    next_step(f"kd-edge export {out} --onnx --int8 --out exports (or kd-edge bundle {out} --out bundle)")


def number_list(text: str, option: str, kind=float) -> tuple:
    try:
        return tuple(kind(value) for value in text.split(",") if value.strip())
    except ValueError:
        from kd_edge.errors import ConfigError

        raise ConfigError(f"{option} {text!r}: write numbers separated by commas, e.g. 1,2,4,8") from None


@app.command()
@user_errors
@config_file("sweep")
def sweep(
    ctx: typer.Context,
    temperature: Annotated[str, typer.Option("--temperature", "-T", help="Temperatures, comma-separated.")] = "1,2,4,8",
    alpha: Annotated[
        str, typer.Option(help="Alphas (hard-label weights), comma-separated; 1 is the student alone.")
    ] = ("0.1,0.5,0.9"),
    seeds: Annotated[int, typer.Option(help="Seeds per cell (--seed, --seed+1, ...): mean and std over them.")] = 3,
    dataset: TeacherDatasetOpt = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Sweep folder; run again to resume (finished cells are kept).")
    ] = Path("runs/sweep"),
    mode: Annotated[str, typer.Option(help="offline, online or multi, as `kd-edge distill --mode`.")] = "offline",
    teacher: Annotated[
        list[Path] | None,
        typer.Option(
            "--teacher",
            metavar="PATH",
            help="Teacher(s) for every cell; without it (offline) one teacher per seed is trained and shared.",
        ),
    ] = None,
    teacher_weights: Annotated[str, typer.Option(help="As `kd-edge distill --teacher-weights`.")] = "equal",
    epochs: EpochsOpt = None,
    teacher_epochs: TeacherEpochsOpt = None,
    teacher_model: Annotated[str | None, typer.Option(help="Teacher architecture when training one.")] = None,
    student_model: Annotated[str | None, typer.Option(help="Student architecture (see `kd-edge models`).")] = None,
    kd_loss: Annotated[str | None, typer.Option(help="'kl' (the default) or 'mse'.")] = None,
    batch_size: BatchSizeOpt = None,
    lr: LrOpt = None,
    preset: PresetOpt = "default",
    data_dir: DataDirOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "cpu",
    threads: ThreadsOpt = None,
    precision: PrecisionOpt = None,
    config_path: ConfigOpt = None,
):
    """Distil over a grid of temperatures and alphas, several seeds per cell, resumably.

    Writes OUT/sweep.md and sweep.json (mean and std per cell) and sweep.png (a heat map), and
    names the best cell on the validation split (the test split is only reported).
    """
    from kd_edge.config import distill_config
    from kd_edge.search.sweep import SweepConfig
    from kd_edge.search.sweep import sweep as run_sweep

    require_training_extra()
    base = distill_config(
        preset=preset,
        dataset=dataset or dataset_of_teacher(teacher),
        data_dir=optional_str(data_dir),
        teacher_model=teacher_model,
        student_model=student_model,
        epochs=epochs,
        teacher_epochs=teacher_epochs,
        kd_loss=kd_loss,
        out=str(out),
        seed=seed,
        device=device,
        threads=threads,
        precision=precision,
        teacher_paths=[str(path) for path in teacher or []],
        mode=mode,
        teacher_weights=teacher_weights,
        batch_size=batch_size,
        lr=lr,
    )
    config = SweepConfig(
        base=base,
        temperatures=number_list(temperature, "--temperature"),
        alphas=number_list(alpha, "--alpha"),
        seeds=tuple(range(seed, seed + seeds)),
        out=str(out),
    )

    def on_cell(name: str, cell_seed: int, ran: bool) -> None:
        console().print(f"{name} seed {cell_seed}: {'done' if ran else 'finished earlier, kept'}")

    with training_process():
        summary = run_sweep(config, progress_factory=make_progress, on_cell=on_cell)
    console().print((out / "sweep.md").read_text())
    best = summary["best"]
    console().print(
        f"best on validation: {best['cell']} ({100 * best['val_mean']:.2f} % val, {100 * best['test_mean']:.2f} "
        f"± {100 * best['test_std']:.2f} % test); table in {out / 'sweep.md'}, heat map in {out / 'sweep.png'}"
    )


@app.command()
@user_errors
@config_file("search")
def search(
    ctx: typer.Context,
    teacher: Annotated[Path, typer.Option("--teacher", help="The teacher.pt every candidate learns from.")],
    latency_budget: Annotated[
        str, typer.Option(help="Latency the student may take on the board at --batch-size: 2ms, 500us...")
    ],
    profile: Annotated[
        str, typer.Option(help="Device profile (`kd-edge profiles`): its cores, quota and memory, its projection.")
    ] = "rpi4",
    memory: Annotated[
        str | None, typer.Option(help="Memory the model may take: weights of its form plus peak activations (64M).")
    ] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Default: the teacher's dataset.")] = None,
    batch_size: Annotated[int, typer.Option(help="Batch size the latency budget is for.")] = 1,
    time_limit: Annotated[
        str, typer.Option(help="Time for the whole search (20m, 1h, 90s); halving stops when it is up.")
    ] = "20m",
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Search folder; run again to resume (nothing is retrained).")
    ] = Path("runs/search"),
    space: Annotated[
        str | None,
        typer.Option(
            help="Candidates, comma-separated: registry names or family members FAMILY@wWIDTHdDEPTH (default: "
            "cnn@w0.25d1 ... cnn@w2d3, mobile@w0.5d1 ... mobile@w2d2, seed@w0.5, seed@w1, seed@w2)."
        ),
    ] = None,
    rung_steps: Annotated[
        int,
        typer.Option(help="Optimiser steps of the first halving rung (whole epochs, rounded up); each next doubles."),
    ] = 200,
    rungs: Annotated[int, typer.Option(help="Successive-halving rungs.")] = 3,
    finalists: Annotated[
        int, typer.Option(help="Halving keeps at least this many, so that the front compares several.")
    ] = 4,
    latency_margin: Annotated[
        float,
        typer.Option(
            help="Untrained candidates up to this fraction over the budget still train (sub-0.1 ms timings vary "
            "10-25 %); the chosen student must fit the budget itself, timed again once trained."
        ),
    ] = 0.25,
    data_dir: DataDirOpt = None,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
    config_path: ConfigOpt = None,
):
    """Find the most accurate student within a board's latency (and memory) budget, then bundle it.

    Times every candidate untrained on the emulated board and drops those over budget, distils the rest
    from --teacher with successive halving, times the finalists again and writes the Pareto front
    (OUT/search.md, search.json, search.png) and a bundle of the chosen student (OUT/bundle).
    """
    from kd_edge.search.search import DEFAULT_SPACE, SearchConfig, parse_quantity
    from kd_edge.search.search import search as run_search

    require_training_extra()
    config = SearchConfig(
        teacher=str(teacher),
        latency_budget_ms=parse_quantity(latency_budget, "time", "--latency-budget"),
        profile=profile,
        memory_mb=parse_quantity(memory, "memory", "--memory") if memory else None,
        batch_size=batch_size,
        time_limit_s=parse_quantity(time_limit, "duration", "--time-limit"),
        dataset=dataset,
        data_dir=optional_str(data_dir),
        out=str(out),
        space=tuple(name.strip() for name in space.split(",")) if space else DEFAULT_SPACE,
        rung_steps=rung_steps,
        rungs=rungs,
        finalists=finalists,
        latency_margin=latency_margin,
        seed=seed,
        threads=threads,
    )
    with training_process():
        result = run_search(config, progress_factory=make_progress)
    console().print((out / "search.md").read_text())
    if result["chosen"] is None:
        raise typer.Exit(1)
    next_step(f"kd-edge verify-arm {result['chosen']['bundle']}  (then copy it to the board)")


@app.command()
@user_errors
@config_file("export")
def export(
    ctx: typer.Context,
    source: Annotated[
        Path,
        typer.Argument(
            metavar="CHECKPOINT_OR_RUN_DIR", help="A checkpoint (.pt) or a run folder (its student.pt is exported)."
        ),
    ],
    onnx: Annotated[
        bool,
        typer.Option(
            "--onnx", metavar="", help="Write ONNX (the only format for now; kept for the documented command line)."
        ),
    ] = True,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for NAME.onnx (and NAME.int8.onnx).")] = Path(
        "exports"
    ),
    name: Annotated[
        str | None,
        typer.Option(
            help="The files' name; default: the run folder's (RUN.onnx), or RUN-CHECKPOINT for another checkpoint."
        ),
    ] = None,
    int8: Annotated[
        bool, typer.Option("--int8", metavar="", help="Also write an INT8 model through `kd-edge quantize`'s defaults.")
    ] = False,
    bundle: Annotated[
        Path | None, typer.Option(help="Also write a deployable bundle folder (and .tar.gz) here; implies --int8.")
    ] = None,
    exporter: ExporterOpt = None,
    opset: OpsetOpt = None,
    optimize_latency: OptimizeLatencyOpt = True,
    compare_latency: CompareLatencyOpt = True,
    data_dir: DataDirOpt = None,
    force: ForceOpt = False,
    config_path: ConfigOpt = None,
):
    """Export to ONNX with a dynamic batch axis, check it, and verify it against PyTorch on validation images."""
    require_training_extra()
    from kd_edge.deploy.export import ExportConfig, export_onnx

    result = export_onnx(
        ExportConfig(
            source=str(source),
            out_dir=str(out),
            exporter=exporter,
            opset=opset,
            name=name,
            data_dir=optional_str(data_dir),
            force=force,
        )
    )
    parity, versions = result.parity, result.card.versions
    console().print(
        f"wrote {result.path} ({result.path.stat().st_size:,} bytes, opset {versions['opset']}, "
        f"{versions['exporter']}); parity on {parity.samples} "
        "validation images: "
        f"max |diff| {parity.max_abs_diff:.2e} (batch 1: {parity.max_abs_diff_batch1:.2e}, tolerance {parity.atol:g}), "
        f"top-1 agreement {parity.top1_agreement:.0%}"
    )
    quantized = None
    if int8 or bundle:
        from kd_edge.deploy.quantize import QuantizeConfig
        from kd_edge.deploy.quantize import quantize as quantize_model

        # Calibrates on the data the export verified with (the run's own folder, unless --data-dir).
        config = QuantizeConfig(
            model=str(result.path),
            data_dir=result.data_dir,
            optimize_latency=optimize_latency,
            compare_latency=compare_latency and not bundle,  # the bundle compares them itself
            force=force,
        )
        quantized = quantize_model(config)
        print_quantize_result(quantized)
    if bundle:
        from kd_edge.deploy.bundle import BundleConfig, write_bundle

        config = BundleConfig(out=str(bundle), data_dir=result.data_dir, force=force)
        print_bundle_result(write_bundle(config, fp32=result.path, int8=quantized.path))
    else:
        both = f"{result.path} {quantized.path}" if quantized else str(result.path)
        next_step(f"kd-edge bench {both} --threads 2 (or kd-edge bundle {source} --out bundle)")


@app.command()
@user_errors
@config_file("quantize")
def quantize(
    ctx: typer.Context,
    model: Annotated[
        Path, typer.Argument(metavar="MODEL.onnx", help="An FP32 ONNX model written by `kd-edge export`.")
    ],
    calibration: Annotated[
        str | None,
        typer.Option(
            help="Dataset for calibration (validation split) and evaluation (test split); default: the model's own."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output path (default: MODEL with .int8.onnx).")
    ] = None,
    calibration_size: Annotated[
        int, typer.Option(help="Validation images used for calibration, stratified by class.")
    ] = 500,
    method: Annotated[str, typer.Option(help="Calibration: minmax, entropy or percentile.")] = "minmax",
    per_channel: Annotated[
        bool,
        typer.Option("--per-channel/--per-tensor", metavar="", help="Weight scales per output channel or per tensor."),
    ] = True,
    quant_format: Annotated[
        str, typer.Option("--format", help="qdq (QuantizeLinear/DequantizeLinear pairs) or qoperator (QLinearConv...).")
    ] = "qdq",
    dynamic: Annotated[
        bool,
        typer.Option(
            "--dynamic",
            metavar="",
            help="Dynamic quantization (weights only, activations at run time) instead of static.",
        ),
    ] = False,
    max_accuracy_drop: Annotated[
        float,
        typer.Option(
            help="Largest accuracy drop allowed on the validation split, in points; nodes stay FP32 until it fits."
        ),
    ] = 0.5,
    exclude: Annotated[
        list[str] | None, typer.Option(metavar="NODE", help="Node names to keep in FP32 from the start (repeatable).")
    ] = None,
    reduce_range: ReduceRangeOpt = True,
    optimize_latency: OptimizeLatencyOpt = True,
    compare_latency: CompareLatencyOpt = True,
    threads: Annotated[int, typer.Option(help="Threads for the FP32-versus-INT8 latency comparison.")] = 2,
    data_dir: DataDirOpt = None,
    force: ForceOpt = False,
    config_path: ConfigOpt = None,
):
    """Quantize to INT8 with ONNX Runtime, calibrated on validation data, within an accuracy budget."""
    require_training_extra(("onnx",), extra="quantize")
    from kd_edge.deploy.quantize import QuantizeConfig
    from kd_edge.deploy.quantize import quantize as quantize_model

    config = QuantizeConfig(
        model=str(model),
        out=optional_str(out),
        calibration=calibration,
        data_dir=optional_str(data_dir),
        calibration_size=calibration_size,
        method=method,
        per_channel=per_channel,
        format=quant_format,
        mode="dynamic" if dynamic else "static",
        max_accuracy_drop=max_accuracy_drop,
        exclude=tuple(exclude or ()),
        reduce_range=reduce_range,
        optimize_latency=optimize_latency,
        compare_latency=compare_latency,
        latency_threads=threads,
        force=force,
    )
    result = quantize_model(config)
    print_quantize_result(result)
    next_step(f"kd-edge bench {model} {result.path} --threads 2 (or kd-edge bundle {result.path} --out bundle)")


@app.command()
@user_errors
@config_file("qat")
def qat(
    ctx: typer.Context,
    run_dir: Annotated[
        Path,
        typer.Argument(
            metavar="RUN_DIR",
            help="A run folder of `kd-edge distill` (student.pt, and teacher.pt for the soft labels).",
        ),
    ],
    epochs: Annotated[int, typer.Option("--epochs", "-e", help="Fine-tuning epochs with fake quantization.")] = 2,
    lr: Annotated[float, typer.Option(help="Peak learning rate (cosine schedule).")] = 5e-4,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for <run>.qat.onnx.")] = Path("exports"),
    data_dir: DataDirOpt = None,
    seed: SeedOpt = 0,
    reduce_range: ReduceRangeOpt = True,
    optimize_latency: OptimizeLatencyOpt = True,
    compare_latency: CompareLatencyOpt = True,
    force: ForceOpt = False,
    config_path: ConfigOpt = None,
):
    """Quantization-aware training: fine-tune the distilled student with fake INT8 quantization, export QDQ ONNX."""
    require_training_extra()
    from kd_edge.deploy.qat import QATConfig, quantization_aware_training

    config = QATConfig(
        run_dir=str(run_dir),
        out_dir=str(out),
        epochs=epochs,
        lr=lr,
        data_dir=optional_str(data_dir),
        seed=seed,
        reduce_range=reduce_range,
        optimize_latency=optimize_latency,
        compare_latency=compare_latency,
        force=force,
    )
    with training_process():
        result = quantization_aware_training(config, progress=make_progress())
    console().print(
        f"wrote {result.path}: test accuracy FP32 {result.fp32_test_accuracy:.2%}, after QAT "
        f"{result.qat_test_accuracy:.2%} "
        f"(ONNX Runtime {result.onnx_test_accuracy:.2%}, top-1 agreement {result.top1_agreement:.1%}); "
        f"nodes kept in FP32: {', '.join(result.fp32_layers) or 'none'}"
    )
    if result.latency is not None:
        print_latency_comparison(result.latency, "QAT")
    next_step(f"kd-edge bundle {result.path} --out bundle")


def print_quantize_result(result) -> None:
    from rich.table import Table

    table = Table(title=f"INT8 model {result.path}")
    batches = list(result.latency.fp32_ms) if result.latency else []
    for column in ["model", "size (bytes)", "val acc", "test acc", *(f"batch {b} (ms)" for b in batches)]:
        table.add_column(column, justify="left" if column == "model" else "right")
    for name in ("fp32", "int8"):
        latency = (
            [] if result.latency is None else [f"{ms:.4f}" for ms in getattr(result.latency, f"{name}_ms").values()]
        )
        sizes, val, test = (
            getattr(result, f"{name}_bytes"),
            getattr(result, f"{name}_val_accuracy"),
            getattr(result, f"{name}_test_accuracy"),
        )
        table.add_row(name, f"{sizes:,}", f"{val:.2%}", f"{test:.2%}", *latency)
    out = console()
    out.print(table)
    out.print(
        f"accuracy drop {result.val_drop_points:.2f} points on the validation split (the budget's), "
        f"{result.test_drop_points:.2f} on test; nodes kept in FP32: {', '.join(result.excluded_nodes) or 'none'}; "
        f"calibration: {result.calibration['size']} validation images ({result.calibration['method']})"
    )
    if result.latency is not None:
        print_latency_comparison(result.latency, "INT8")


@app.command("bundle")
@user_errors
@config_file("bundle")
def bundle_command(
    ctx: typer.Context,
    source: Annotated[
        Path,
        typer.Argument(
            metavar="RUN_DIR_OR_MODEL", help="A run folder, a checkpoint (.pt) or an ONNX model (FP32 or INT8)."
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="The bundle folder; DIR.tar.gz is written beside it.")
    ] = Path("bundle"),
    int8: Annotated[
        bool, typer.Option("--int8/--no-int8", metavar="", help="Try an INT8 model (shipped only if not slower).")
    ] = True,
    samples: Annotated[int, typer.Option(help="Labelled test images in samples.npz, the same number per class.")] = 300,
    threads: Annotated[
        list[int],
        typer.Option("--threads", "-t", metavar="N", help="Thread counts of the FP32-against-INT8 latency check."),
    ] = [1, 2],  # noqa: B006 - typer needs a literal
    max_accuracy_drop: Annotated[
        float, typer.Option(help="INT8 accuracy budget, in points on the validation split.")
    ] = 0.5,
    compare_latency: Annotated[
        bool,
        typer.Option(
            "--compare-latency/--no-compare-latency",
            metavar="",
            help="Ship INT8 only if it is not slower than FP32 here (measured); "
            "without, whenever it met its accuracy budget.",
        ),
    ] = True,
    optimize_latency: OptimizeLatencyOpt = True,
    data_dir: DataDirOpt = None,
    force: ForceOpt = False,
    config_path: ConfigOpt = None,
):
    """Write a deployable bundle: the model a board should run (INT8 only where it is not slower), its card,
    labelled samples, a README with the board's commands, SHA256SUMS, and a .tar.gz of it all."""
    from kd_edge.deploy.bundle import BundleConfig
    from kd_edge.pipeline.runner import DeployConfig, deploy

    if source.suffix != ".onnx":
        require_training_extra()  # a checkpoint is exported first
    config = DeployConfig(
        source=str(source),
        bundle=BundleConfig(
            out=str(out),
            samples=samples,
            threads=tuple(threads),
            compare_latency=compare_latency,
            data_dir=optional_str(data_dir),
            force=force,
        ),
        int8=int8,
        quantize_options={"max_accuracy_drop": max_accuracy_drop, "optimize_latency": optimize_latency},
    )
    print_bundle_result(deploy(config))


@app.command("verify-arm")
@user_errors
@config_file("verify-arm")
def verify_arm_command(
    ctx: typer.Context,
    source: Annotated[
        Path, typer.Argument(metavar="BUNDLE_OR_MODEL", help="A bundle (folder or .tar.gz) or an .onnx model.")
    ],
    cpu: Annotated[
        str,
        typer.Option("--cpu", help="Emulated CPUs, comma-separated: cortex-a53, cortex-a72, cortex-a76, neoverse-n1."),
    ] = "cortex-a53,cortex-a72,cortex-a76,neoverse-n1",
    samples: Annotated[int, typer.Option(help="At most this many labelled samples are compared.")] = 300,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Where the aarch64 userland is kept (default ~/.cache/kd-edge/arm).")
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the comparison as JSON.")] = None,
    data_dir: DataDirOpt = None,
    config_path: ConfigOpt = None,
):
    """Run the model on aarch64 ONNX Runtime under QEMU for each CPU, compare with this host; exit 0 when they agree."""
    from kd_edge.deploy.verify_arm import ArmConfig, verify_arm

    config = ArmConfig(
        source=str(source),
        cpus=tuple(c.strip() for c in cpu.split(",") if c.strip()),
        samples=samples,
        cache_dir=optional_str(cache_dir),
        data_dir=optional_str(data_dir),
    )
    result = verify_arm(config, progress=lambda message: console().print(f"[dim]{message}[/]"))
    print_arm_result(result)
    if json_path:
        from kd_edge.io import atomic_write_json

        atomic_write_json(json_path, result.to_dict())
    if not result.passed:
        raise typer.Exit(1)


def print_arm_result(result) -> None:
    from rich.table import Table

    arm = result.emulated
    table = Table(
        title=f"aarch64 (QEMU user mode, ONNX Runtime {arm.get('onnxruntime')}) against {result.host['machine']} "
        f"(ONNX Runtime {result.host['onnxruntime']})"
    )
    for column in (
        "emulated CPU",
        "form",
        "samples",
        "top-1 agreement",
        "max |logit diff|",
        "accuracy host",
        "accuracy aarch64",
        "verdict",
    ):
        table.add_column(column, justify="left" if column in ("emulated CPU", "form", "verdict") else "right")
    for check in result.checks:
        accuracy = ["n/a" if a is None else f"{a:.2%}" for a in (check.host_accuracy, check.arm_accuracy)]
        verdict = "agrees" if check.passed else "[bold red]DIFFERS[/]"
        table.add_row(
            check.cpu,
            check.form,
            str(check.samples),
            f"{check.top1_agreement:.2%}",
            f"{check.max_abs_logit_diff:.2e}",
            *accuracy,
            verdict,
        )
    out = console()
    out.print(table)
    for check in result.checks:
        for item in check.disagreements:
            out.print(
                f"{check.cpu} {check.form}: sample {item['sample']} is class {item['aarch64_class']} on aarch64, "
                f"{item['host_class']} on the host (host's top-2 margin {item['host_margin']:.3g})"
            )
    out.print(
        f"{'all agree' if result.passed else 'NOT all agree'} (FP32 must agree on every sample, INT8 on 99.9 %); "
        f"emulated timings are not latencies and are not shown. Userland: {result.userland}"
    )


def print_bundle_result(result) -> None:
    out = console()
    out.print(f"wrote {result.folder}/ and {result.archive}: model.onnx is {result.form.upper()}. Why: {result.reason}")
    out.print(
        f"next: copy {result.archive.name} to the board and run `kd-edge bench {result.archive.name} --threads 2`; "
        f"check it under aarch64 emulation here with `kd-edge verify-arm {result.folder}`"
    )


def print_latency_comparison(latency, name: str) -> None:
    ratios = ", ".join(
        f"batch {b} {latency.int8_ms[b] / latency.fp32_ms[b]:.2f}x (rounds within {100 * latency.spread[b]:.0f} %)"
        for b in latency.fp32_ms
    )
    console().print(
        f"{name}/FP32 latency with {latency.threads} threads, `kd-edge bench`'s harness and defaults: {ratios}"
    )
    slower = latency.slower_batches()
    if slower:
        batches = " and ".join(f"batch {b}" for b in slower)
        console().print(
            f"[bold yellow]warning:[/] the {name} model is slower than FP32 at {batches} on this machine, beyond the "
            "spread of the rounds; `kd-edge bundle` ships FP32 in that case"
        )


@app.command()
@user_errors
@config_file("bench")
def bench(
    ctx: typer.Context,
    models: Annotated[
        list[Path],
        typer.Argument(metavar="MODEL...", help="ONNX models or bundles (folders or .tar.gz), compared side by side."),
    ],
    threads: Annotated[
        list[int], typer.Option("--threads", "-t", metavar="N", help="ONNX Runtime intra-op threads (repeatable).")
    ] = [2],  # noqa: B006 - typer needs a literal
    batch_size: Annotated[
        list[int], typer.Option("--batch-size", "-b", metavar="N", help="Batch sizes (repeatable).")
    ] = [1],  # noqa: B006
    warmup: Annotated[int, typer.Option(help="Untimed runs before timing, in each process.")] = 20,
    runs: Annotated[int, typer.Option(help="Timed runs per model and setting, spread over the rounds.")] = 300,
    duration: Annotated[float | None, typer.Option(help="Seconds per model and setting instead of --runs.")] = None,
    rounds: Annotated[
        int, typer.Option(help="Interleaved rounds; each round measures every model once, in a fresh process.")
    ] = 3,
    cores: Annotated[str | None, typer.Option(help="Pin to these cores, e.g. 0,1 (sched_setaffinity).")] = None,
    memory: Annotated[
        str | None, typer.Option(help="Memory cap, e.g. 512M (cgroup memory limit, else RLIMIT_AS).")
    ] = None,
    cpu_quota: Annotated[
        float | None,
        typer.Option(help="CPU bandwidth in CPUs, e.g. 0.5 (cgroup cpu.max / cfs_quota_us where writable)."),
    ] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", help="Labelled data for accuracy: its test split.")
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Labelled data for accuracy: an .npz with images (and labels).")
    ] = None,
    data_dir: DataDirOpt = None,
    profile: Annotated[
        str,
        typer.Option(help="Device profile (see `kd-edge profiles`): enforces its cores and RAM, projects its latency."),
    ] = "host",
    rate: Annotated[
        float | None, typer.Option(help="Drone loop: frames per second; reports deadline misses and jitter.")
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON.")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the results as a Markdown table.")] = None,
    plot: Annotated[
        Path | None,
        typer.Option(help="Write a PNG: accuracy against latency, and latency distributions (needs matplotlib)."),
    ] = None,
    config_path: ConfigOpt = None,
):
    """Benchmark ONNX models under an emulated drone target: latency, throughput, accuracy, memory. Needs no torch."""
    from kd_edge.runtime.bench.emulate import parse_cores, parse_memory
    from kd_edge.runtime.bench.harness import BenchConfig, run_benchmark
    from kd_edge.runtime.bench.render import markdown_table
    from kd_edge.runtime.bench.render import plot as draw

    config = BenchConfig(
        models=tuple(str(m) for m in models),
        threads=tuple(threads),
        batch_sizes=tuple(batch_size),
        warmup=warmup,
        runs=runs,
        duration=duration,
        rounds=rounds,
        cores=parse_cores(cores),
        memory_bytes=parse_memory(memory),
        cpu_quota=cpu_quota,
        dataset=dataset,
        data=optional_str(data),
        data_dir=optional_str(data_dir),
        profile=profile,
        rate=rate,
    )
    report = run_benchmark(config)
    out = console()
    for warning in report.warnings:
        out.print(f"[bold yellow]warning:[/] {warning}")
    print_bench_table(report)
    if not any(r.model.endswith(".tar.gz") or Path(r.model).is_dir() for r in report.results):
        next_step(f"kd-edge bundle {report.results[0].model} --out bundle (a deployable folder for the board)")
    if json_path:
        from kd_edge.io import atomic_write_json

        atomic_write_json(json_path, report.to_dict())
    if markdown:
        from kd_edge.io import atomic_write

        text = markdown_table(report)
        atomic_write(markdown, lambda handle: handle.write(text.encode()))
    if plot and not draw(report, plot):
        out.print("[bold yellow]warning:[/] no plot written: matplotlib is not installed (pip install matplotlib)")


def print_bench_table(report) -> None:
    from rich.table import Table

    table = Table(title=f"kd-edge bench (profile {report.environment['profile']['name']}; data: {report.data})")
    columns = (
        "model",
        "thr",
        "batch",
        "p50 ms",
        "p99 ms",
        "rounds' spread",
        "img/s",
        "accuracy",
        "size",
        "RSS MB",
        "stable",
        "projected p50 ms",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right", overflow="fold")
    for r in report.results:
        projected = r.projected_p50_ms
        table.add_row(
            r.label,
            str(r.threads),
            str(r.batch_size),
            f"{r.latency_ms.p50:.4f}",
            f"{r.latency_ms.p99:.4f}",
            f"{100 * r.round_spread:.1f} %",
            f"{r.throughput_ips:,.0f}",
            "n/a" if r.accuracy is None else f"{r.accuracy:.2%}",
            f"{r.size_bytes:,}",
            f"{r.peak_rss_mb:.0f}",
            "yes" if r.stable else "[bold red]NO[/]",
            "n/a" if projected is None else f"{projected:.4f}",
        )
    out = console()
    out.print(table)
    for r in report.results:
        for name, item in r.emulation.items():
            if name != "projection" and item.get("requested") is not None and not item.get("enforced"):
                out.print(f"[bold yellow]not enforced:[/] {name} for {r.label}: {item.get('reason')}")
        if r.drone_loop is not None:
            loop = r.drone_loop
            out.print(
                f"drone loop {r.label} at {loop['rate_hz']:g} Hz: "
                f"{loop['deadline_misses']}/{loop['frames']} deadlines missed, jitter {loop['jitter_ms']:.3f} ms"
            )
    if not all(r.stable for r in report.results):
        out.print(
            "[bold yellow]unstable:[/] a result whose rounds (each a fresh process) differ by more than 10 % may "
            "not repeat; add --rounds"
        )
    if any(r.projected_p50_ms is not None for r in report.results):
        out.print(
            "projected latencies are estimates (host 1-thread latency x host/board per-core throughput of the model's "
            "data type), not measurements; see the JSON's emulation.projection.method"
        )


@app.command()
@user_errors
def predict(
    model: Annotated[
        Path, typer.Argument(metavar="MODEL_OR_BUNDLE", help="An .onnx model, or a bundle folder or .tar.gz.")
    ],
    inputs: Annotated[
        list[Path],
        typer.Argument(
            metavar="INPUT...", help="Image files (PNG, JPEG...), folders of them, or .npz files of uint8 images."
        ),
    ],
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Classes shown per input.")] = 3,
    threads: Annotated[int, typer.Option(help="ONNX Runtime intra-op threads.")] = 1,
    json_output: Annotated[
        bool, typer.Option("--json", metavar="", help="Print JSON (one object per input) instead of a table.")
    ] = False,
):
    """The model's top classes, with probabilities, for each input. Needs no torch (runs on the board)."""
    from kd_edge.runtime import OnnxModel
    from kd_edge.runtime.predict import predict_files

    if top_k < 1:
        from kd_edge.errors import ConfigError

        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    onnx_model = OnnxModel(model, threads=threads)
    rows = predict_files(onnx_model, inputs, top_k=min(top_k, len(onnx_model.classes)))
    if json_output:
        import json

        typer.echo(json.dumps([row.to_dict() for row in rows], indent=2))
        return
    from rich.table import Table

    table = Table(title=f"kd-edge predict with {model}")
    for column in ["input", *(f"#{i + 1}" for i in range(len(rows[0].top))), "note"]:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row.input, *(f"{name} {p:.1%}" for name, p in row.top), row.note or "")
    console().print(table)


@app.command()
@user_errors
@config_file("pipeline")
def pipeline(
    ctx: typer.Context,
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset",
            "-d",
            help="mnist-5k (built in, the default), mnist, fashion-mnist, cifar10, folder:PATH, npz:PATH.",
        ),
    ] = None,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="The run folder; run again to resume, or with changed settings to rerun what they affect.",
        ),
    ] = Path("runs/pipeline"),
    profile: Annotated[
        str | None, typer.Option(help="Device profile of the benchmark stage (default rpi4; see `kd-edge profiles`).")
    ] = None,
    epochs: EpochsOpt = None,
    teacher_epochs: TeacherEpochsOpt = None,
    teacher_model: Annotated[str | None, typer.Option(help="Teacher architecture (see `kd-edge models`).")] = None,
    student_model: Annotated[str | None, typer.Option(help="Student architecture (see `kd-edge models`).")] = None,
    preset: Annotated[str | None, typer.Option(help="Recipe to start from: 'default' or 'reference'.")] = None,
    data_dir: DataDirOpt = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default 0).")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or auto (default cpu).")] = None,
    force: Annotated[
        bool,
        typer.Option("--force", metavar="", help="Run in a folder that holds files of something else than a pipeline."),
    ] = False,
    config_path: ConfigOpt = None,
):
    """Teacher, distillation, export, INT8, bundle, benchmark and report in one run folder, resumable.

    Settings of each stage come from --config's tables ([distill], [export], [quantize], [bundle], [bench], as
    the commands of the same names take them); the options here win over the file. The resolved settings are
    written to OUT/kd-edge.toml: `kd-edge pipeline --config OUT/kd-edge.toml --out NEW` repeats the run.
    """
    require_training_extra()
    from kd_edge.config import distill_config
    from kd_edge.pipeline.runner import PipelineConfig, run_pipeline

    tables = (
        {name: file_options(config_path, command, name) for name, command in STAGE_COMMANDS.items()}
        if config_path
        else {}
    )
    chosen = dict(
        dataset=dataset,
        teacher_epochs=teacher_epochs,
        epochs=epochs,
        teacher_model=teacher_model,
        student_model=student_model,
        preset=preset,
        data_dir=data_dir,
        seed=seed,
        device=device,
    )
    training = {**tables.get("distill", {}), **{k: v for k, v in chosen.items() if v is not None}}
    if "teacher" in training or "out" in training:
        from kd_edge.errors import ConfigError

        raise ConfigError("the pipeline trains its own teacher into --out: remove 'teacher' and 'out' from [distill]")
    training = {k: str(v) if isinstance(v, Path) else v for k, v in training.items() if k != "force"}
    bench = {**PipelineConfig.__dataclass_fields__["bench"].default_factory(), **tables.get("bench", {})}
    if profile:
        bench["profile"] = profile
    bundle = tables.get("bundle", {})
    config = PipelineConfig(
        out=str(out),
        distill=distill_config(**training, out=str(out)),
        exporter=tables.get("export", {}).get("exporter"),
        opset=tables.get("export", {}).get("opset"),
        quantize=tables.get("quantize", {}),
        bundle_samples=bundle.get("samples", 300),
        bundle_threads=tuple(bundle.get("threads", (1, 2))),
        bundle_compare_latency=bundle.get("compare_latency", True),
        bench=bench,
        force=force,
    )
    from kd_edge.training.distributed import is_main
    from kd_edge.training.progress import RichProgress, SilentProgress, new_display

    if not is_main():  # another torchrun rank: it trains, rank 0 shows and writes
        with training_process(config.distill.run.device):
            run_pipeline(config, progress_factory=SilentProgress)
        return
    display = new_display(console(), transient=False)
    with training_process(config.distill.run.device), display:
        result = run_pipeline(config, display=display, progress_factory=lambda: RichProgress(display=display))
    print_pipeline_summary(result)


@app.command()
@user_errors
def report(run_dir: Annotated[Path, typer.Argument(help="A run folder of `kd-edge pipeline`.")]):
    """Rebuild RUN_DIR/report.md and report.html from the files of a run folder."""
    from kd_edge.pipeline.report import write_report

    if not (run_dir / "metrics.json").is_file():
        from kd_edge.errors import OutputError

        raise OutputError(f"{str(run_dir)!r} has no metrics.json: give the run folder of `kd-edge pipeline`")
    paths = write_report(run_dir)
    console().print(f"wrote {paths['markdown']} and {paths['html']}")


def print_pipeline_summary(result) -> None:
    from rich.table import Table

    metrics = result.metrics
    export = metrics.get("export", {})
    table = Table(title=f"kd-edge pipeline in {result.run_dir}")
    for column in ("stage", "this run", "seconds", "result"):
        table.add_column(column, justify="right" if column == "seconds" else "left")
    outcome = {
        "teacher": f"test accuracy {metrics.get('teacher', {}).get('test_accuracy', 0):.2%}",
        "student": f"test accuracy {metrics.get('student', {}).get('test_accuracy', 0):.2%}",
        "export": f"{export.get('bytes', 0):,} bytes, parity {export.get('parity', {}).get('max_abs_diff', 0):.1e}",
        "quantize": "refused: " + metrics["quantize"]["refused"][:60]
        if "refused" in metrics.get("quantize", {})
        else f"INT8 test accuracy {metrics.get('quantize', {}).get('int8_test_accuracy', 0):.2%}",
        "bundle": f"deployable: {metrics.get('bundle', {}).get('form', '?').upper()}",
        "bench": ", ".join(
            f"{r['model']} t{r['threads']} {1e3 * r['p50_ms']:.1f} us"
            for r in metrics.get("bench", {}).get("results", [])
            if r["batch_size"] == 1
        ),
        "report": "report.md, report.html",
    }
    for name, seconds in metrics["wall_time_s"].items():
        if name in outcome:
            table.add_row(name, "ran" if name in result.ran else "kept (unchanged)", f"{seconds:.1f}", outcome[name])
    out = console()
    out.print(table)
    out.print(
        f"report: {result.run_dir / 'report.html'} (and report.md); bundle: {result.run_dir / 'bundle'} and "
        "bundle.tar.gz"
    )
    out.print(
        f"next: `kd-edge bench {result.run_dir / 'bundle'} --threads 2` here or on the board; `kd-edge verify-arm "
        f"{result.run_dir / 'bundle'}`"
    )


@app.command()
def profiles():
    """List the device profiles that `kd-edge bench --profile` accepts."""
    from kd_edge.runtime.bench.profiles import PROFILES

    for profile in PROFILES.values():
        peaks = (profile.peak_gops_per_core("fp32"), profile.peak_gops_per_core("int8"))
        peak = "measured" if peaks[0] is None else f"{peaks[0]:g} GFLOPS fp32, {peaks[1]:g} GOPS int8 per core"
        typer.echo(f"{profile.name:16} {profile.description}; {peak}")


@app.command()
@user_errors
def models(
    dataset: DatasetOpt = "mnist-5k",
    data_dir: DataDirOpt = None,
    image_size: ImageSizeOpt = None,
):
    """List the registered models with their parameters, MACs and peak activation memory (batch 1) at the
    dataset's input size, and the families `kd-edge search` explores (any member: cnn@w0.5d2)."""
    require_training_extra()
    from rich.table import Table

    from kd_edge.data import load_dataset
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

    data = load_dataset(dataset, optional_str(data_dir), image_size)
    channels, size, _ = data.input_shape
    table = Table(title=f"models at input {data.input_shape} ({data.name})")
    for column in ("model", "parameters", "MACs", "peak activations", "description"):
        table.add_column(column, justify="left" if column in ("model", "description") else "right")
    for name in list_models():
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


@app.command()
def datasets():
    """List the dataset names that --dataset accepts."""
    from kd_edge.data import list_datasets

    for name, description in list_datasets().items():
        typer.echo(f"{name:16} {description}")


# --- rendering -----------------------------------------------------------------------------------


def next_step(command: str) -> None:
    from kd_edge.training.distributed import is_main

    if is_main():
        console().print(f"next: {command}", soft_wrap=True)


@functools.cache
def console():
    """One console for every message, so that lines printed during a live progress display land above it."""
    from rich.console import Console

    out = Console()
    return out if out.is_terminal else Console(width=160)  # logs and pipes: wide enough for the tables


def make_progress():
    from kd_edge.training.distributed import is_main
    from kd_edge.training.progress import RichProgress, SilentProgress

    return RichProgress(console=console()) if is_main() else SilentProgress()  # one bar, rank 0's


def run_config(
    out: Path,
    seed: int,
    device: str,
    threads: int | None,
    force: bool,
    precision: str,
    resume: bool,
    deterministic: bool,
):
    from kd_edge.config import RunConfig

    return RunConfig(
        out=str(out),
        seed=seed,
        device=device,
        threads=threads,
        force=force,
        precision=precision,
        resume=resume,
        deterministic=deterministic,
    )


@contextlib.contextmanager
def training_process(device: str = "cpu"):
    """Process-wide settings for a training command (never set by the library itself): the allocator's,
    SIGINT/SIGTERM asking training to save its state and stop at the next step, and, under torchrun, the
    process group (gloo on CPU, nccl on CUDA)."""
    from kd_edge.training.distributed import process_group
    from kd_edge.interrupt import stop_on_signals
    from kd_edge.training.fit import keep_freed_memory

    keep_freed_memory()
    with stop_on_signals(), process_group(device):
        yield


def relaunch_under_torchrun(nproc: int) -> None:
    """``--nproc N``: run this same command as N processes through torchrun's own launcher (then exit)."""
    from kd_edge.training.distributed import launched_by_torchrun

    if nproc <= 1 or launched_by_torchrun():
        return
    import subprocess

    argv, skip = [], False
    for arg in sys.argv[1:]:
        if skip or arg.startswith("--nproc="):
            skip = False
            continue
        if arg == "--nproc":
            skip = True
            continue
        argv.append(arg)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    raise typer.Exit(subprocess.run([*launcher, "-m", "kd_edge", *argv]).returncode)


def dataset_of_teacher(teachers: list[Path] | None) -> str:
    """The dataset the first --teacher was trained on (distilling from it means its data), else mnist-5k."""
    if not teachers:
        return "mnist-5k"
    from kd_edge.training.checkpoint import load_checkpoint

    card = load_checkpoint(teachers[0]).card
    return card.data.dataset if card.data else "mnist-5k"


def optional_str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def print_summary(metrics: dict, out: Path) -> None:
    from rich.table import Table

    from kd_edge.training.distributed import is_main

    if not is_main():
        return

    table = Table(title=f"kd-edge results in {out}")
    for column in ("stage", "model", "parameters", "MACs", "val acc", "test acc", "time (s)"):
        table.add_column(column, justify="left" if column in ("stage", "model") else "right")
    rows = []
    for stage in ("teacher", "student"):
        info = metrics.get(stage)
        if info:
            members = info.get("members", [])
            rows += [(f"teacher {number}", member, None) for number, member in enumerate(members, start=1)]
            rows.append(("ensemble" if members else stage, info, metrics["wall_time_s"].get(stage, 0.0)))
    for stage, info, seconds in rows:
        table.add_row(
            stage,
            info["model"],
            f"{info['parameters']:,}" if "parameters" in info else "",
            f"{info['macs']:,}" if "macs" in info else "",
            f"{info['val_accuracy']:.2%}",
            f"{info['test_accuracy']:.2%}",
            "" if seconds is None else f"{seconds:.1f}",
        )
    console().print(table)
    init = metrics.get("student", {}).get("init")
    if init:
        console().print(
            f"student started from {init['source']}: {len(init['loaded'])} tensors loaded, "
            f"{len(init['shape_mismatch'])} of another shape and {len(init['not_in_source'])} absent there kept as "
            "initialised (the names are in metrics.json)"
        )
    console().print(f"total wall time {metrics['wall_time_s']['total']:.1f}s; metrics in {out / 'metrics.json'}")


# The tables of a pipeline's config file, and the commands whose options they hold.
STAGE_COMMANDS = {"distill": distill, "export": export, "quantize": quantize, "bundle": bundle_command, "bench": bench}


def main() -> None:
    app(prog_name="kd-edge")


if __name__ == "__main__":
    sys.exit(main())
