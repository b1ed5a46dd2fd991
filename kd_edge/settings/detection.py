"""``kd-edge detect``: a centroid detector on YOLO-labelled frames, a teacher and a student distilled from its
heatmaps (``kd_edge.training.detect_run``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kd_edge.settings.data import DEFAULT_SPLIT, check_split
from kd_edge.settings.fields import check_choices, knob, require
from kd_edge.settings.parse import number_list
from kd_edge.settings.training import OptimSettings, RunSettings

DETECTION_AUGMENTATIONS = ("none", "aerial")
SIDE_MULTIPLE = 8  # a detector's input sides are multiples of its deepest stage's stride (kd_edge.training.detectors)


@dataclass(frozen=True, kw_only=True)
class DetectorNetwork:
    """One detector: its architecture (`kd-edge models` lists them) and its optimiser steps."""

    model: str = knob(help="Detector architecture (`kd-edge models`, last table).")
    steps: int = knob(help="Optimiser steps, each on a batch of tiles.")

    def __post_init__(self):
        require(self.steps >= 1, f"--steps must be at least 1, got {self.steps}")


@dataclass(frozen=True, kw_only=True)
class DetectSettings:
    """`kd-edge detect`: the teacher trains on the labels; the student learns
    ``alpha * weighted CE(labels) + (1 - alpha) * T^2 * KL(teacher's cells || student's)``."""

    dataset: str | None = knob(
        None, "yolo:PATH: PATH/images/, PATH/labels/ (one `class x y w h` line a box, 0-1) and PATH/classes.txt; or "
        "an Ultralytics or Roboflow export (data.yaml's names, train/ with valid/ or test/: splits kept as given).",
        short="-d", required=True, none="required",
    )  # fmt: skip
    frame_size: int = knob(
        512, "Frames are read with this longer side (px); the exported model takes frame-size squares."
    )
    tile: int = knob(128, "Side of the square training tiles cut from the frames (px, a multiple of 8).")
    split: tuple[float, ...] = knob(
        DEFAULT_SPLIT,
        "Fractions train,val,test of the images, by group: the file name without its frame number, so that no "
        "video has frames on two sides; seeded by --seed. Given splits are kept; where validation is not given, "
        "train's val share of train+val is carved from train.",
        parse=number_list("--split"),
    )
    group_by: str = knob(
        "prefix",
        "What the split keeps together: prefix (a source: the file name without its trailing frame number, so that "
        "a video's near-duplicate frames never sit on two sides) or file (each image alone: independent photos).",
        choices=("prefix", "file"),
    )
    given_splits: str = knob(
        "keep",
        "An Ultralytics or Roboflow export's own train/valid/test folders: keep them, or pool them and split the "
        "frames here by --group-by (exports split image by image, so one video's frames sit on both sides).",
        choices=("keep", "pool"),
    )
    empty_frames: str = knob(
        "refuse",
        "An image whose label file is empty or missing: refuse (stop, naming each, as a label file lost or left "
        "unfinished looks the same) or keep (a frame with no object in it: a negative the detectors learn from, as in "
        "YOLO's convention).",
        choices=("refuse", "keep"),
    )
    augment: str = knob(
        "aerial",
        "aerial: random scale (--scales), the 8 flips and quarter turns, brightness and contrast jitter, on the "
        "tiles and their labels alike; none.",
        choices=DETECTION_AUGMENTATIONS,
    )
    scales: tuple[float, ...] = knob(
        (0.75, 1.33),
        "Under --augment aerial, a training crop's side is the tile's times a factor drawn uniformly from this "
        "range, min,max (then resized to the tile): objects seen smaller (above 1) and larger (below 1).",
        parse=number_list("--scales"),
    )
    teacher: DetectorNetwork = DetectorNetwork(model="fomo-base", steps=1500)
    # fomo-lite, not fomo-small: a 512x512 frame within 50 ms on a Pi 4's one thread with a margin (fomo-small's is
    # at that edge), and the same validation F1 over aerial-cars' 7 sources, 2 seeds (benchmarks/results/detection.md)
    student: DetectorNetwork = DetectorNetwork(model="fomo-lite", steps=1500)
    alpha: float = knob(0.5, "Weight of the labels' loss for the student; 1 trains it alone (no teacher).")
    temperature: float = knob(2.0, "Softmax temperature of the teacher's per-cell outputs.", short="-T")
    object_weight: float = knob(
        10.0, "Weight of a cell holding an object against a background cell in the labels' loss."
    )
    kd_cells: str = knob(
        "objects",
        "Cells of the distillation term: objects (cells the label or the teacher calls an object weigh "
        "--object-weight, as in the labels' loss), or equal (every cell alike; worse on aerial-cars).",
        choices=("equal", "objects"),
    )
    feature_weight: float = knob(
        0.0,
        "Weight of a feature term for the student: the features its head reads, through a 1x1 projector (trained "
        "with it, not exported) against the teacher's, mean squared error; 0 leaves it out.",
    )
    ema_decay: float = knob(
        0.0,
        "Validation scores, keeps and exports an exponential moving average of each network's weights (and "
        "BatchNorm statistics) with this decay a step, 0.99 averaging over about 100 steps; 0 uses the weights "
        "as trained.",
    )
    optim: OptimSettings = field(default_factory=lambda: OptimSettings(batch_size=32))
    run: RunSettings = field(default_factory=RunSettings)

    def __post_init__(self):
        check_choices(self)
        require(
            self.dataset is None or self.dataset.startswith("yolo:"),
            f"`kd-edge detect` reads YOLO-labelled frames: --dataset yolo:PATH, got {self.dataset!r} (classifiers "
            "train with `kd-edge distill`)",
        )
        require(self.frame_size >= 32, f"--frame-size must be at least 32 px, got {self.frame_size}")
        require(
            self.tile >= SIDE_MULTIPLE and self.tile % SIDE_MULTIPLE == 0,
            f"--tile must be a multiple of {SIDE_MULTIPLE} px, got {self.tile}",
        )
        require(self.tile <= self.frame_size, f"--tile ({self.tile}) must fit in --frame-size ({self.frame_size})")
        require(
            self.frame_size % SIDE_MULTIPLE == 0,
            f"--frame-size must be a multiple of {SIDE_MULTIPLE} px, got {self.frame_size}",
        )
        require(0.0 <= self.alpha <= 1.0, f"--alpha must be in [0, 1], got {self.alpha}")
        require(self.temperature > 0, f"--temperature must be positive, got {self.temperature}")
        require(self.object_weight > 0, f"--object-weight must be positive, got {self.object_weight}")
        require(self.feature_weight >= 0, f"--feature-weight cannot be negative, got {self.feature_weight}")
        require(0.0 <= self.ema_decay < 1.0, f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        check_split(self.split)
        require(
            len(self.scales) == 2 and 0 < self.scales[0] <= self.scales[1],
            f"--scales takes min,max with 0 < min <= max, got {','.join(map(str, self.scales))}",
        )
        require(self.run.device == "cpu", "`kd-edge detect` trains on the CPU for now; drop --device")
        require(
            not self.optim.cutmix,
            "CutMix (optim.cutmix) mixes a classifier's images and labels; a detector's tiles do not take it: drop it",
        )
        require(
            isinstance(self.optim.batch_size, int),
            f"--batch-size: a detector's tiles are all of one size, so give one batch size, not "
            f"{self.optim.batch_size!r}",
        )

    @property
    def root(self) -> str:
        return self.dataset.removeprefix("yolo:")

    def split_rule(self) -> dict:
        """What decides the split of the frames, as the model card records it for every later stage to read."""
        return {"seed": self.run.seed, "group_by": self.group_by, "empty_frames": self.empty_frames,
                "given_splits": self.given_splits}  # fmt: skip
