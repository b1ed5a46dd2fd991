"""Centroid detection: YOLO labels and their errors, the split by source, tiles whose labels follow the pixels,
the decoder, the metric, the losses, and a detector that learns squares."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from kd_edge.data.yolo import Scene, group_of, read_yolo, split_by_group
from kd_edge.errors import DatasetError
from kd_edge.runtime.detections import Detection, decode, local_maxima, match, summarise
from kd_edge.training.detection_tiles import centre_map, draw_tiles
from kd_edge.training.detectors import centre_loss, create_detector, heatmap_distillation_loss, object_cells

CLASSES = ["car", "bus"]


def write_scene(root: Path, name: str, squares: list[tuple[int, int, int, int]], size=(96, 64)) -> None:
    """An image ``size`` (width, height) with grey noise and, per (class, x, y, side), a square centred at
    (x, y): red for class 0, blue for class 1; its YOLO label file."""
    from PIL import Image

    width, height = size
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    pixels = rng.integers(90, 110, (height, width, 3), dtype=np.uint8)
    lines = []
    for label, x, y, side in squares:
        colour = (230, 20, 20) if label == 0 else (20, 20, 230)
        pixels[y - side // 2 : y + side // 2, x - side // 2 : x + side // 2] = colour
        lines.append(f"{label} {x / width} {y / height} {side / width} {side / height}")
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    Image.fromarray(pixels).save(root / "images" / f"{name}.png")
    (root / "labels" / f"{name}.txt").write_text("\n".join(lines) + "\n")


def squares_dataset(root: Path, groups=("alpha", "beta", "gamma", "delta"), frames=6) -> Path:
    rng = np.random.default_rng(0)
    for group in groups:
        for frame in range(frames):
            squares = [(int(rng.integers(2)), int(rng.integers(10, 86)), int(rng.integers(10, 54)), 8)
                       for _ in range(int(rng.integers(1, 4)))]  # fmt: skip
            write_scene(root, f"{group}-{frame:04d}", squares)
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def test_labels_are_read_and_images_scaled_to_the_working_size(tmp_path):
    write_scene(tmp_path, "one-0001", [(1, 48, 32, 8)])
    (tmp_path / "classes.txt").write_text("car\nbus\n")
    (scene,) = read_yolo(tmp_path, longest_side=48)
    assert scene.image.shape == (32, 48, 3) and scene.group == "one"
    assert scene.labels.tolist() == [1] and scene.boxes[0].tolist() == pytest.approx([0.5, 0.5, 8 / 96, 8 / 64])


def test_a_frame_stored_sideways_is_read_upright_so_its_labels_fit(tmp_path):
    """A phone's or drone app's JPEG with an EXIF orientation: its YOLO labels were drawn on the image as shown, so
    the frame is read as shown (the stored pixels turned back), and the object is where its label says."""
    from PIL import Image

    from tests.test_data import save_sideways

    write_scene(tmp_path / "flat", "one-0001", [(0, 72, 16, 12)])
    with Image.open(tmp_path / "flat" / "images" / "one-0001.png") as image:
        upright = np.asarray(image.convert("RGB"))
    (tmp_path / "images").mkdir()
    save_sideways(upright, tmp_path / "images" / "one-0001.jpg")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "one-0001.txt").write_text((tmp_path / "flat" / "labels" / "one-0001.txt").read_text())
    (tmp_path / "classes.txt").write_text("car\nbus\n")
    (scene,) = read_yolo(tmp_path, longest_side=96)
    assert scene.image.shape == (64, 96, 3)
    x, y = scene.boxes[0, 0] * 96, scene.boxes[0, 1] * 64
    assert scene.image[round(y), round(x), 0] > 200 and scene.image[round(y), round(x), 2] < 60  # red, under it


@pytest.mark.parametrize(
    "line, problem",
    [
        ("7 0.5 0.5 0.1 0.1", "labels/bad-0001.txt line 2: class 7 unknown"),
        ("0 1.5 0.5 0.1 0.1", "line 2: centre (1.5, 0.5) outside the image"),
        ("0 0.5 0.5 0 0.1", "line 2: box of size 0.0 x 0.1"),
        ("0 0.5 0.5 0.1", "line 2: 4 fields, expected 5"),
        ("0 0.5 0.5 0.1 0.1 0.2", "line 2: 6 fields, expected 5"),
        ("0 0.9 0.5 1.2 0.5 1.0 0.7", "line 2: centre (1.05, 0.6) outside the image"),  # a polygon's box
        ("car 0.5 0.5 0.1 0.1", "line 2: not numbers"),
        ("0 nan 0.5 0.1 0.1", "line 2: not finite"),
    ],
)
def test_each_bad_label_line_is_named_with_its_file_and_line(tmp_path, line, problem):
    squares_dataset(tmp_path, groups=("ok",), frames=1)
    write_scene(tmp_path, "bad-0001", [(0, 48, 32, 8)])
    with (tmp_path / "labels" / "bad-0001.txt").open("a") as handle:
        handle.write(line + "\n")
    with pytest.raises(DatasetError, match="1 problem") as error:
        read_yolo(tmp_path, 96)
    assert problem in str(error.value)


def test_a_segmentation_exports_polygon_is_read_as_the_box_around_it(tmp_path):
    """Roboflow and Ultralytics write a segmentation project's labels as `class x1 y1 x2 y2 ...`: the object's box."""
    write_scene(tmp_path, "one-0001", [])
    polygons = "1 0.25 0.5 0.75 0.25 0.5 0.75\n0 0.1 0.1 0.2 0.1 0.2 0.3 0.1 0.3\n"  # a triangle, a rectangle
    (tmp_path / "labels" / "one-0001.txt").write_text(polygons)
    (tmp_path / "classes.txt").write_text("car\nbus\n")
    (scene,) = read_yolo(tmp_path, longest_side=96)
    assert scene.labels.tolist() == [1, 0]
    np.testing.assert_allclose(scene.boxes, [[0.5, 0.5, 0.5, 0.5], [0.15, 0.2, 0.1, 0.2]], rtol=1e-6)


def test_empty_and_missing_label_files_and_unreadable_images_are_named_together(tmp_path):
    squares_dataset(tmp_path, groups=("ok",), frames=1)
    write_scene(tmp_path, "empty-0001", [])
    (tmp_path / "labels" / "empty-0001.txt").write_text("\n")
    write_scene(tmp_path, "lost-0001", [(0, 48, 32, 8)])
    (tmp_path / "labels" / "lost-0001.txt").unlink()
    (tmp_path / "images" / "broken-0001.png").write_bytes(b"not a png")
    (tmp_path / "labels" / "broken-0001.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DatasetError, match="3 problem") as error:
        read_yolo(tmp_path, 96)
    message = str(error.value)
    assert "labels/empty-0001.txt: empty" in message and "images/lost-0001.png: no label file" in message
    assert "images/broken-0001.png: cannot be read" in message


def test_frames_without_objects_are_kept_as_negatives_when_asked(tmp_path):
    """--empty-frames keep: an empty or missing label file is a frame with no object; a bad line still stops."""
    squares_dataset(tmp_path, groups=("ok",), frames=1)
    write_scene(tmp_path, "empty-0001", [])
    write_scene(tmp_path, "lost-0001", [])
    (tmp_path / "labels" / "lost-0001.txt").unlink()
    with pytest.raises(DatasetError, match=r"2 problem.*--empty-frames keep"):
        read_yolo(tmp_path, 96)
    scenes = {scene.file: scene for scene in read_yolo(tmp_path, 96, keep_empty=True)}
    assert len(scenes) == 3 and len(scenes["ok-0000.png"].labels) > 0
    for name in ("empty-0001.png", "lost-0001.png"):
        assert scenes[name].truths().shape == (0, 5) and scenes[name].image.shape == (64, 96, 3)
    (tmp_path / "labels" / "empty-0001.txt").write_text("0 0.5 0.5 0 0.1\n")
    with pytest.raises(DatasetError, match=r"1 problem.*box of size"):
        read_yolo(tmp_path, 96, keep_empty=True)


def test_a_dataset_without_classes_or_images_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="is not a folder"):
        read_yolo(tmp_path / "nowhere", 96)
    with pytest.raises(DatasetError, match=r"no classes\.txt"):
        read_yolo(tmp_path, 96)
    (tmp_path / "classes.txt").write_text("car\n")
    with pytest.raises(DatasetError, match="holds no image"):
        read_yolo(tmp_path, 96)


def exported_dataset(root: Path, splits: dict[str, tuple[str, ...]], kind_first: bool = False) -> Path:
    """A YOLO export as Ultralytics or Roboflow write it: class names in data.yaml, each split's frames (2 a group)
    in SPLIT/images and SPLIT/labels, or with ``kind_first`` in images/SPLIT and labels/SPLIT."""
    for split, groups in splits.items():
        for group in groups:
            for frame in range(2):
                write_scene(root / split, f"{group}-{frame:04d}", [(frame % 2, 30 + 10 * frame, 30, 8)])
        if kind_first:
            for kind in ("images", "labels"):
                (root / kind).mkdir(exist_ok=True)
                (root / split / kind).rename(root / kind / split)
    (root / "data.yaml").write_text("path: .\ntrain: train/images\nnc: 2\nnames:\n  0: car\n  1: bus\n")
    return root


def rule(given_splits: str) -> dict:
    """The split rule of seed 0 and kd-edge detect's defaults, with ``given_splits``."""
    from kd_edge.settings.detection import DetectSettings

    return {**DetectSettings().split_rule(), "given_splits": given_splits}


def test_an_ultralytics_or_roboflow_export_keeps_its_splits_and_names(tmp_path):
    """data.yaml's names and the given train/valid/test folders are used as they are; the splits are what every
    later stage reads again (card_splits calls the same function)."""
    from kd_edge.data.yolo import detection_splits, read_classes

    given = {"train": ("a", "b", "c"), "valid": ("d",), "test": ("e",)}
    root = exported_dataset(tmp_path / "roboflow", given)
    assert read_classes(root) == ["car", "bus"]
    splits = detection_splits(root, 96, (0.8, 0.1, 0.1), rule("keep"))
    assert {name: sorted({s.group for s in scenes}) for name, scenes in splits.items()} == {
        "train": ["a", "b", "c"], "val": ["d"], "test": ["e"]}  # fmt: skip
    assert splits["train"][0].image.shape == (64, 96, 3) and splits["test"][1].labels.tolist() == [1]
    (root / "data.yaml").write_text("names: [lorry]\n")  # a list; classes.txt, where there is one, comes first
    assert read_classes(root) == ["lorry"]
    (root / "classes.txt").write_text("car\nbus\n")
    assert read_classes(root) == ["car", "bus"]


def test_a_given_split_without_validation_has_it_carved_from_train_by_source(tmp_path, caplog):
    """images/train and images/val only (Ultralytics' own layout): val is the reported split, as for class folders,
    and selection gets sources of train's own; a source on two given sides is named."""
    from kd_edge.data.yolo import detection_splits

    root = exported_dataset(tmp_path / "coco", {"train": ("a", "b", "c", "d", "e"), "val": ("f", "a")}, True)
    with caplog.at_level("INFO", logger="kd_edge"):
        splits = detection_splits(root, 96, (0.8, 0.1, 0.1), rule("keep"))
    groups = {name: {s.group for s in scenes} for name, scenes in splits.items()}
    assert groups["test"] == {"f", "a"} and groups["train"] | groups["val"] == {"a", "b", "c", "d", "e"}
    assert groups["val"] and not groups["train"] & groups["val"]
    assert "1 source(s) have frames in more than one given split (a)" in caplog.text
    (root / "labels" / "val" / "f-0000.txt").write_text("0 1.5 0.5 0.1 0.1\n")
    with pytest.raises(DatasetError, match=r"labels/val/f-0000\.txt line 1: centre"):
        detection_splits(root, 96, (0.8, 0.1, 0.1), rule("keep"))
    only_train = exported_dataset(tmp_path / "only", {"train": ("a", "b", "c")})
    with pytest.raises(DatasetError, match=r"gives the split train only.*--given-splits pool"):
        detection_splits(only_train, 96, (0.8, 0.1, 0.1), rule("keep"))
    (only_train / "data.yaml").write_text("nc: 2\n")
    with pytest.raises(DatasetError, match="no list of class names"):
        detection_splits(only_train, 96, (0.8, 0.1, 0.1), rule("keep"))


def test_an_exports_splits_pooled_are_split_here_by_source(tmp_path):
    """--given-splits pool: an export that put one video's frames on several sides is split again, whole sources to
    each side, as a plain YOLO folder is; a train-only export too."""
    from kd_edge.data.yolo import detection_splits

    root = exported_dataset(tmp_path / "rf", {"train": ("a", "b", "c", "d"), "valid": ("a", "e"), "test": ("b", "f")})
    splits = detection_splits(root, 96, (0.5, 0.25, 0.25), rule("pool"))
    groups = {name: {s.group for s in scenes} for name, scenes in splits.items()}
    assert set().union(*groups.values()) == set("abcdef") and sum(map(len, splits.values())) == 16
    assert all(groups.values()) and not (groups["train"] & groups["val"] or groups["train"] & groups["test"])
    assert not groups["val"] & groups["test"] and len([s for s in splits["train"] if s.group == "a"]) in (0, 4)
    only_train = exported_dataset(tmp_path / "only", {"train": ("a", "b", "c")})
    assert sum(map(len, detection_splits(only_train, 96, (0.8, 0.1, 0.1), rule("pool")).values())) == 6


def test_frames_and_labels_side_by_side_are_read_as_labelimg_and_cvat_save_them(tmp_path):
    """LabelImg saves each frame's .txt beside it, with classes.txt (CVAT and darknet: obj.names) in the same folder."""
    write_scene(tmp_path / "apart", "one-0001", [(1, 48, 32, 8)])
    for kind in ("images", "labels"):
        for file in (tmp_path / "apart" / kind).iterdir():
            file.rename(tmp_path / file.name)
    (tmp_path / "obj.names").write_text("car\nbus\n")
    (scene,) = read_yolo(tmp_path, longest_side=48)
    assert scene.labels.tolist() == [1] and scene.image.shape == (32, 48, 3)
    (tmp_path / "one-0001.txt").write_text("2 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DatasetError, match=r"in '.*': one-0001\.txt line 1: class 2 unknown"):
        read_yolo(tmp_path, longest_side=48)


@pytest.mark.slow
def test_detect_and_export_read_a_roboflow_export_as_given(tmp_path):
    """The user's path on a Roboflow export: `kd-edge detect` trains on its given splits, and `export`'s parity
    check reads the same validation frames again from the card."""
    import json

    from typer.testing import CliRunner

    from kd_edge.cli import app

    data = exported_dataset(tmp_path / "rf", {"train": tuple("abcdef"), "valid": ("g",), "test": ("h",)})
    args = ["detect", "--dataset", f"yolo:{data}", "--frame-size", "96", "--tile", "48", "--batch-size", "8"]
    result = CliRunner().invoke(app, [*args, "--teacher-steps", "10", "--steps", "10", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r" / "split.json").read_text())["groups"] == {
        "train": list("abcdef"), "val": ["g"], "test": ["h"]}  # fmt: skip
    result = CliRunner().invoke(app, ["export", str(tmp_path / "r"), "--onnx", "--out", str(tmp_path / "x")])
    assert result.exit_code == 0 and "on 2 validation images" in result.output, result.output
    pooled = ["--given-splits", "pool", "--split", "0.5,0.25,0.25", "--teacher-steps", "2", "--steps", "2"]
    result = CliRunner().invoke(app, [*args, *pooled, "--out", str(tmp_path / "p")])  # split again, by source
    assert result.exit_code == 0, result.output
    groups = json.loads((tmp_path / "p" / "split.json").read_text())["groups"]
    assert sorted(g for side in groups.values() for g in side) == list("abcdefgh") and len(groups["val"]) == 2
    result = CliRunner().invoke(app, ["export", str(tmp_path / "p"), "--onnx", "--out", str(tmp_path / "y")])
    assert result.exit_code == 0 and "on 4 validation images" in result.output, result.output  # the card's split


@pytest.mark.parametrize(
    "file, group",
    [("DJI_0005-0019.jpg", "DJI_0005"), ("DJI-00760-00001.jpg", "DJI-00760"), ("MOS155.jpg", "MOS"),
     ("MunichStreet02-MOS74.jpg", "MunichStreet02-MOS"), ("DJI_0031.jpg", "DJI"), ("street.png", "street"),
     ("DJI_0005-0019_jpg.rf.3f2a9c0d1e8b7a6f5c4d3e2f1a0b9c8d.jpg", "DJI_0005"),  # Roboflow's export names
     ("MOS155_JPG.rf.0123456789abcdef0123456789abcdef.jpg", "MOS")],
)  # fmt: skip
def test_the_group_is_the_name_without_its_frame_number(file, group):
    assert group_of(file) == group


def test_the_split_keeps_each_group_on_one_side_and_is_seeded(tmp_path):
    scenes = read_yolo(squares_dataset(tmp_path, groups=("a", "b", "c", "d", "e", "f", "g", "h")), 96)
    splits = split_by_group(scenes, (0.8, 0.1, 0.1), seed=3, group_by="prefix")
    groups = {name: {s.group for s in part} for name, part in splits.items()}
    assert all(groups.values()) and sum(len(part) for part in splits.values()) == len(scenes)
    assert not (groups["train"] & groups["val"] or groups["train"] & groups["test"] or groups["val"] & groups["test"])
    again = split_by_group(scenes, (0.8, 0.1, 0.1), seed=3, group_by="prefix")
    assert [[s.file for s in again[name]] for name in again] == [[s.file for s in splits[name]] for name in splits]
    assert len(splits["train"]) >= 5 * 6  # about 0.8 of 8 groups
    with pytest.raises(DatasetError, match=r"needs at least 3.*--group-by file"):
        split_by_group([s for s in scenes if s.group in ("a", "b")], (0.8, 0.1, 0.1), seed=0, group_by="prefix")
    # --group-by file: independent photos, each its own group; near the fractions of the images, still seeded
    two_sources = [s for s in scenes if s.group in ("a", "b")]
    photos = split_by_group(two_sources, (0.5, 0.25, 0.25), seed=0, group_by="file")
    assert [len(photos[name]) for name in ("train", "val", "test")] == [6, 3, 3]
    assert {s.group for s in photos["train"]} & {s.group for s in photos["test"]}  # a source on two sides now
    assert photos == split_by_group(two_sources, (0.5, 0.25, 0.25), seed=0, group_by="file")


@pytest.mark.parametrize("stride", [8, 4])
def test_an_objects_label_follows_it_through_crops_scales_flips_and_turns(stride):
    """One white 4x4 mark on a black image: in every augmented tile, the cell the label names is the cell holding
    the mark's centre as the tile's pixels show it (the mean of its bright pixels)."""
    image = np.zeros((80, 100, 3), dtype=np.uint8)
    image[38:42, 58:62] = 255  # pixels 58-61 and 38-41: centre (60, 40)
    scene = Scene("mark-0001.png", "mark", image, np.array([[60 / 100, 40 / 80, 4 / 100, 4 / 80]], np.float32),
                  np.array([1]))  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    checked = 0
    for _ in range(30):
        images, targets = draw_tiles([scene], 8, 64, stride, generator, "aerial", scales=(0.5, 2.0))
        for tile, target in zip(images, targets, strict=True):
            brightness = tile.float().mean(0)
            if brightness.max() < 100:  # the mark is outside this crop, and no label may say otherwise
                assert target.sum() == 0
                continue
            bright = brightness >= brightness.max() * 0.5
            if bright[[0, -1]].any() or bright[:, [0, -1]].any():
                continue  # cut by the tile's edge: its centre may lie outside
            rows, cols = torch.nonzero(bright, as_tuple=True)
            centre = (rows.float().mean().item() + 0.5, cols.float().mean().item() + 0.5)  # pixel i spans [i, i + 1)
            if any(abs(c - round(c / stride) * stride) < 0.75 for c in centre):
                continue  # on a cell border: either cell is right within the resize's rounding
            cell = (int(centre[0] // stride), int(centre[1] // stride))
            assert torch.nonzero(target).tolist() == [list(cell)] and target[cell] == 2  # class 1 is 2 (0: none)
            checked += 1
    assert checked > 80  # of 240 tiles


def test_centre_map_marks_each_centre_cell_and_drops_centres_outside():
    target = centre_map(np.array([[3.0, 3.0], [20.0, 9.0], [40.0, 5.0]]), np.array([0, 1, 0]), 32, 8)
    assert target.shape == (4, 4) and target[0, 0] == 1 and target[1, 2] == 2 and target.sum() == 3


def logits_with_peaks(peaks: dict[tuple[int, int], tuple[int, float]], shape=(3, 6, 8)) -> np.ndarray:
    """Logits whose softmax gives ``probability`` to class ``label`` at the cells named, background elsewhere."""
    logits = np.zeros(shape, np.float32)
    logits[0] = 5.0
    for (row, col), (label, probability) in peaks.items():
        logits[:, row, col] = 0.0
        logits[label + 1, row, col] = np.log(probability / (1 - probability) * (shape[0] - 1))
    return logits


def test_the_decoder_finds_known_centres_once_above_the_threshold():
    logits = logits_with_peaks({(1, 2): (0, 0.9), (1, 3): (0, 0.7), (4, 6): (1, 0.8), (5, 0): (0, 0.4)})
    found = decode(logits, stride=8, threshold=0.5, scale=(2.0, 1.0))
    # (1, 3) is next to the stronger (1, 2): one object; (5, 0) is under the threshold
    assert [(d.label, d.x, d.y) for d in found] == [(0, 2.5 * 8 * 2, 1.5 * 8), (1, 6.5 * 8 * 2, 4.5 * 8)]
    assert found[0].score == pytest.approx(0.9, abs=1e-4)
    assert local_maxima(np.array([[1.0, 1.0], [0.0, 0.5]])).tolist() == [[True, True], [False, False]]


def test_the_four_neighbour_rule_keeps_diagonal_neighbours_apart():
    # two cars parked corner to corner: diagonal cells, each the peak of its own object
    logits = logits_with_peaks({(2, 2): (0, 0.9), (3, 3): (0, 0.8), (3, 4): (0, 0.7)})
    eight, four = (decode(logits, 8, 0.5, neighbours=n) for n in (8, 4))
    assert [(d.x, d.y) for d in eight] == [(2.5 * 8, 2.5 * 8)]
    # (3, 4) beats no edge neighbour of its own ((3, 3) is stronger): one object fewer than cells
    assert [(d.x, d.y) for d in four] == [(2.5 * 8, 2.5 * 8), (3.5 * 8, 3.5 * 8)]


def test_the_metric_on_hand_made_cases():
    truths = np.array([[0, 10, 10, 8, 8], [0, 30, 10, 8, 8], [1, 50, 50, 10, 10]])
    found = [
        Detection(0, 12, 11, 0.9),  # inside the first car: correct
        Detection(0, 13, 9, 0.8),  # the first car again: taken already, a false positive
        Detection(0, 30, 20, 0.7),  # 10 px below the second car's centre, outside its 8 px box: wrong
        Detection(0, 50, 50, 0.6),  # a car where a bus is: wrong class
        Detection(1, 54, 46, 0.5),  # inside the bus: correct
    ]
    score = match(found, truths, classes=2)
    assert score.true_positives.tolist() == [1, 1] and score.false_positives.tolist() == [3, 0]
    assert score.false_negatives.tolist() == [1, 0] and (score.found, score.present) == (5, 3)
    summary = summarise([score, match([], truths[:1], classes=2)], CLASSES)
    car = summary.per_class["car"]
    assert (car["precision"], car["recall"]) == (pytest.approx(1 / 4), pytest.approx(1 / 3))
    assert car["f1"] == pytest.approx(2 * (1 / 4) * (1 / 3) / (1 / 4 + 1 / 3))
    assert summary.per_class["bus"]["f1"] == 1.0 and summary.counting_error == pytest.approx((2 + 1) / 2)
    assert summary.overall["true_positives"] == 2 and summary.overall["false_negatives"] == 2
    thin = np.array([[0, 20, 20, 12, 4]])  # a car 4 px tall: its centre cell's centre can be 4 px off
    off = [Detection(0, 21, 23.5, 0.9)]
    assert match(off, thin, 1).true_positives[0] == 0 and match(off, thin, 1, min_distance=4).true_positives[0] == 1
    assert match([Detection(0, 21, 25, 0.9)], thin, 1, min_distance=4).true_positives[0] == 0


def test_bundled_frames_keep_each_frames_objects_and_score_as_the_scenes_do():
    """samples.npz's arrays (frames, boxes with their frame index, image sizes) give the same F1 as the scenes."""
    from kd_edge.runtime.detections import frame_samples, score_frames, score_samples

    scenes = [
        Scene("a-1.png", "a", np.zeros((40, 48, 3), np.uint8), np.array([[0.25, 0.3, 0.1, 0.1]], np.float32),
              np.array([0])),
        Scene("b-1.png", "b", np.zeros((48, 32, 3), np.uint8),
              np.array([[0.5, 0.5, 0.2, 0.2], [0.25, 0.75, 0.2, 0.2]], np.float32), np.array([1, 0])),
    ]  # fmt: skip
    samples = frame_samples(scenes, 48)
    assert samples["images"].shape == (2, 48, 48, 3) and samples["sizes"].tolist() == [[48, 40], [32, 48]]
    assert samples["boxes"][:, :2].tolist() == [[0, 0], [1, 1], [1, 0]]
    assert samples["boxes"][0, 2:4].tolist() == [12, 12]  # 0.25 of 48 px wide, 0.3 of 40 px high
    # Frame 0: its car found (cell (1, 1): centre 12, 12); frame 1: its bus found, its car missed, and one object
    # in the padding beyond its 32 px width, which is not looked for.
    logits = np.stack([logits_with_peaks({(1, 1): (0, 0.9)}, (3, 6, 6)),
                       logits_with_peaks({(2, 2): (1, 0.9), (2, 5): (0, 0.9)}, (3, 6, 6))])  # fmt: skip
    rule = {"stride": 8, "threshold": 0.5}
    summary = score_samples(logits, samples, CLASSES, rule)
    assert summary.to_dict() == score_frames(list(logits), scenes, CLASSES, 0.5, 8).to_dict()
    assert summary.overall["true_positives"] == 2 and summary.overall["false_negatives"] == 1
    assert summary.overall["false_positives"] == 0


def test_verify_arm_compares_a_detectors_cells_and_decoded_objects():
    from kd_edge.deploy.verify_arm import compare_detections
    from kd_edge.runtime.card import ModelCard

    card = ModelCard(classes=tuple(CLASSES), input_shape=(3, 48, 64), mean=(0.5,) * 3, std=(0.2,) * 3,
                     task="detect", detection={"stride": 8, "threshold": 0.5})  # fmt: skip
    samples = {"sizes": np.array([[64, 48], [64, 48]]), "boxes": np.array([[0, 0, 20, 12, 8, 8]], np.float32)}
    host = np.stack([logits_with_peaks({(1, 2): (0, 0.9)}), logits_with_peaks({(4, 6): (1, 0.8)})])
    alike = compare_detections("cortex-a72", "1.16.3", "fp32", "aarch64", host, host + 5e-5, samples, card)
    assert alike.passed and alike.object_agreement == 1.0 and alike.top1_agreement == 1.0
    assert alike.host_accuracy == alike.arm_accuracy == pytest.approx(2 / 3)  # 1 found, 1 false: F1 2/3
    moved = host.copy()
    moved[1] = logits_with_peaks({(4, 5): (1, 0.8)})  # the bus one cell to the left on aarch64
    for form in ("fp32", "int8"):
        check = compare_detections("cortex-a72", "1.16.3", form, "aarch64", host, moved, samples, card)
        assert not check.passed and check.object_agreement == pytest.approx(1 / 3)  # 1 alike of 3 found
        assert check.disagreements == [
            {"sample": 1, "what": "frame 1: 1 object(s) found only on the host, 1 only on aarch64"}
        ]
    assert not compare_detections("cortex-a72", "1.16.3", "fp32", "x86_64", host, host, samples, card).passed


def test_the_pipeline_refuses_classifier_options_for_detection_data(tmp_path):
    from typer.testing import CliRunner

    from kd_edge.cli import app

    data = squares_dataset(tmp_path / "squares", frames=1)
    args = ["pipeline", "--dataset", f"yolo:{data}", "--student-model", "resnet18", "--epochs", "3"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert result.exit_code != 0 and "--student-model, --epochs: for classifiers only" in result.output
    assert "[detect] table" in result.output and not (tmp_path / "run").exists()


def test_cutmix_is_no_detect_option_and_a_detect_config_asking_for_it_is_refused(tmp_path):
    from typer.testing import CliRunner

    from kd_edge.cli import app
    from kd_edge.errors import ConfigError
    from kd_edge.settings.detection import DetectSettings
    from kd_edge.settings.training import OptimSettings

    data = squares_dataset(tmp_path / "squares", frames=1)
    result = CliRunner().invoke(app, ["detect", "--dataset", f"yolo:{data}", "--cutmix", "0.5", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "--cutmix" in result.output
    with pytest.raises(ConfigError, match="a detector's tiles do not take it"):
        DetectSettings(dataset=f"yolo:{data}", optim=OptimSettings(batch_size=32, cutmix=0.5))
    with pytest.raises(ConfigError, match="give one batch size"):  # a classifier's A|B, by image size
        DetectSettings(dataset=f"yolo:{data}", optim=OptimSettings(batch_size="16|32"))


def test_losses_weight_objects_and_vanish_when_student_matches_teacher():
    targets = torch.zeros(1, 4, 4, dtype=torch.int64)
    targets[0, 1, 1] = 1
    logits = torch.zeros(1, 3, 4, 4)
    ce = torch.log(torch.tensor(3.0))  # uniform logits: every cell's CE is log 3
    assert centre_loss(logits, targets, object_weight=10.0) == pytest.approx(ce.item())
    logits[0, 0] = 4.0  # confident background everywhere: the object cell's error now weighs 10 of 25
    plain, weighted = centre_loss(logits, targets, 1.0), centre_loss(logits, targets, 10.0)
    assert weighted > 3 * plain
    assert heatmap_distillation_loss(logits, logits.clone(), 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert heatmap_distillation_loss(logits, torch.zeros_like(logits), 2.0) > 0
    # --kd-cells objects: the cells the label or the teacher calls an object weigh object_weight
    teacher = torch.zeros(1, 3, 4, 4)
    teacher[0, 2, 3, 3] = 5.0  # the teacher sees an object where the label has none
    cells = object_cells(targets, teacher, 10.0)
    assert cells[0, 1, 1] == cells[0, 3, 3] == 10.0 and cells.sum() == 14 + 20
    student = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    even = heatmap_distillation_loss(student, teacher, 2.0)
    assert heatmap_distillation_loss(student, teacher, 2.0, torch.ones(1, 4, 4)).item() == pytest.approx(even.item())
    assert heatmap_distillation_loss(student, teacher, 2.0, cells).item() != pytest.approx(even.item())


@pytest.mark.parametrize("name", ["fomo-small", "fomo-lite-s4", "fomo-lite-q4"])
def test_a_detector_learns_squares_and_its_output_is_per_cell(tmp_path, name):
    from kd_edge.runtime.detections import score_frames
    from kd_edge.settings.detection import DetectSettings
    from kd_edge.settings.training import OptimSettings
    from kd_edge.training.batches import Normalizer
    from kd_edge.training.detection_fit import DetectorPlan, fit_detector, scene_logits

    scenes = read_yolo(squares_dataset(tmp_path, groups=("a", "b", "c"), frames=8), 96)
    splits = split_by_group(scenes, (0.34, 0.33, 0.33), seed=0, group_by="prefix")
    torch.manual_seed(0)
    model = create_detector(name, classes=2)
    assert model(torch.zeros(1, 3, 64, 96)).shape == (1, 3, 64 // model.stride, 96 // model.stride)
    settings = DetectSettings(dataset="yolo:squares", frame_size=96, tile=48, optim=OptimSettings(batch_size=16))
    plan = DetectorPlan(model=model, train=splits["train"], val=splits["val"], classes=tuple(CLASSES), steps=150,
                        settings=settings, mean=(0.5,) * 3, std=(0.25,) * 3, evaluate_every=50)  # fmt: skip
    result = fit_detector(plan)
    logits = scene_logits(model, splits["test"], Normalizer(plan.mean, plan.std, "cpu"))
    summary = score_frames(logits, splits["test"], CLASSES, result.threshold, model.stride)
    assert result.best_val_f1 > 0.8 and summary.overall["f1"] > 0.8, (result, summary)


def test_every_detector_gives_a_cell_per_stride_and_the_cheaper_ones_cost_less():
    from kd_edge.training.batches import Normalizer
    from kd_edge.training.detection_fit import scene_logits
    from kd_edge.training.detectors import DETECTORS
    from kd_edge.training.models import count_macs

    odd = Scene("odd-0001.png", "odd", np.zeros((45, 83, 3), np.uint8), np.zeros((0, 4), np.float32), np.zeros(0))
    for name in DETECTORS:
        model = create_detector(name, classes=2)
        assert model(torch.zeros(1, 3, 40, 72)).shape == (1, 3, 40 // model.stride, 72 // model.stride)
        assert model.stride == (4 if name.endswith(("-s4", "-q4")) else 8)
        # a frame of any size is padded to sides every network takes (multiples of 8, stride 8's)
        (logits,) = scene_logits(model, [odd], Normalizer((0.5,) * 3, (0.25,) * 3, "cpu"))
        assert logits.shape == (3, 48 // model.stride, 88 // model.stride)
    macs = {name: count_macs(create_detector(name, 2), (3, 512, 512)) for name in DETECTORS}
    assert macs["fomo-sep"] < macs["fomo-lite"] < macs["fomo-small"] < macs["fomo-base"]
    for coarse in ("fomo-lite", "fomo-base"):  # 4 px cells: the fuse and head at stride 4 add under a sixth
        assert macs[coarse] < macs[f"{coarse}-s4"] < 1.16 * macs[coarse]
    depthwise = [m for m in create_detector("fomo-sep", 2).modules() if getattr(m, "groups", 1) > 1]
    assert [m.groups for m in depthwise] == [32, 32, 32]  # the three context convs, at stride 8's 32 channels


def test_a_student_of_other_cells_than_its_teacher_is_refused_before_anything_trains(tmp_path):
    """Distillation compares heatmaps cell by cell: a stride-4 student from a stride-8 teacher is named as the
    problem before the teacher trains; alone (--alpha 1) the stride-4 student trains and its card says 4 px."""
    from kd_edge.errors import ConfigError
    from kd_edge.settings.detection import DetectorNetwork, DetectSettings
    from kd_edge.training.checkpoint import load_checkpoint
    from kd_edge.training.detect_run import train_detectors

    data = squares_dataset(tmp_path / "squares", groups=("a", "b", "c"), frames=2)
    networks = {"teacher": DetectorNetwork(model="fomo-base", steps=2),
                "student": DetectorNetwork(model="fomo-lite-s4", steps=2)}  # fmt: skip
    settings = DetectSettings(dataset=f"yolo:{data}", frame_size=96, tile=48, **networks)
    with pytest.raises(ConfigError, match="teacher fomo-base has 8 px cells and the student fomo-lite-s4 4 px"):
        train_detectors(settings, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    # cells alike, features not: fomo-lite-q4's stride-8 features against fomo-base-s4's stride-4 ones
    quarters = replace(settings, teacher=DetectorNetwork(model="fomo-base-s4", steps=2),
                       student=DetectorNetwork(model="fomo-lite-q4", steps=2), feature_weight=1.0)  # fmt: skip
    with pytest.raises(ConfigError, match="fomo-base-s4 has 4 px feature cells and the student fomo-lite-q4 8 px"):
        train_detectors(quarters, tmp_path / "run")
    train_detectors(replace(settings, alpha=1.0), tmp_path / "alone")
    assert load_checkpoint(tmp_path / "alone" / "student.pt").card.detection["stride"] == 4


def test_the_feature_term_changes_what_the_student_learns_and_nothing_it_exports(tmp_path):
    """--feature-weight: the student's features, through a 1x1 projector, learn the teacher's; the projector is the
    fit's own (the student's weights keep their names and shapes: nothing more is exported)."""
    from kd_edge.errors import ConfigError
    from kd_edge.settings.detection import DetectSettings
    from kd_edge.settings.training import OptimSettings
    from kd_edge.training.detection_fit import DetectorPlan, fit_detector
    from kd_edge.training.detectors import feature_distillation_loss, feature_projector

    torch.manual_seed(0)
    teacher, student = create_detector("fomo-base", 2), create_detector("fomo-small", 2)
    projector = feature_projector(student, teacher)
    features, _ = student.features_and_logits(torch.zeros(1, 3, 32, 32))
    assert projector(features).shape == (1, teacher.feature_channels, 4, 4) == (1, 64, 4, 4)
    same = torch.randn(1, 64, 4, 4)
    assert feature_distillation_loss(same, same.clone()).item() == 0.0 and feature_distillation_loss(same, 0 * same) > 0
    with pytest.raises(ConfigError, match="--feature-weight cannot be negative"):
        DetectSettings(dataset="yolo:x", feature_weight=-1.0)

    scenes = read_yolo(squares_dataset(tmp_path, groups=("a", "b", "c"), frames=3), 96)
    splits = split_by_group(scenes, (0.34, 0.33, 0.33), seed=0, group_by="prefix")
    trained = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(1)
        model = create_detector("fomo-small", 2)
        settings = DetectSettings(dataset="yolo:squares", frame_size=96, tile=48, feature_weight=weight,
                                  optim=OptimSettings(batch_size=8))  # fmt: skip
        plan = DetectorPlan(model=model, train=splits["train"], val=splits["val"], classes=tuple(CLASSES), steps=5,
                            settings=settings, mean=(0.5,) * 3, std=(0.25,) * 3, evaluate_every=5)  # fmt: skip
        fit_detector(plan, teacher)
        trained[weight] = model.state_dict()
    assert trained[0.0].keys() == trained[1.0].keys() == student.state_dict().keys()
    assert not torch.equal(trained[0.0]["features.0.weight"], trained[1.0]["features.0.weight"])


def test_the_moving_average_is_what_validation_scores_and_the_network_keeps(tmp_path):
    """--ema-decay d: after two steps the network holds d * (weights after step 1) + (1 - d) * (after step 2), its
    BatchNorm statistics too, while training itself follows the same steps as without it."""
    from kd_edge.errors import ConfigError
    from kd_edge.settings.detection import DetectSettings
    from kd_edge.settings.training import OptimSettings
    from kd_edge.training.detection_fit import DetectorPlan, fit_detector

    scenes = read_yolo(squares_dataset(tmp_path, groups=("a", "b", "c"), frames=3), 96)
    splits = split_by_group(scenes, (0.34, 0.33, 0.33), seed=0, group_by="prefix")

    def trained(steps: int, decay: float) -> dict:
        torch.manual_seed(1)
        model = create_detector("fomo-small", 2)
        optim = OptimSettings(batch_size=8, schedule="constant")  # step 1 alike however many steps follow
        settings = DetectSettings(dataset="yolo:squares", frame_size=96, tile=48, ema_decay=decay, optim=optim)
        plan = DetectorPlan(model=model, train=splits["train"], val=splits["val"], classes=tuple(CLASSES),
                            steps=steps, settings=settings, mean=(0.5,) * 3, std=(0.25,) * 3,
                            evaluate_every=steps)  # fmt: skip
        fit_detector(plan)
        return model.state_dict()

    first, second, averaged = trained(1, 0.0), trained(2, 0.0), trained(2, 0.75)
    for name in ("features.0.weight", "features.1.running_mean"):
        assert not torch.allclose(first[name], second[name])
        torch.testing.assert_close(averaged[name], 0.75 * first[name] + 0.25 * second[name])
    with pytest.raises(ConfigError, match=r"--ema-decay must be in \[0, 1\)"):
        DetectSettings(dataset="yolo:x", ema_decay=1.0)


def test_a_detect_run_stopped_in_the_student_resumes_with_its_finished_teacher(tmp_path, monkeypatch):
    """SIGTERM while the student trains: the teacher and its metrics are kept; a rerun without --resume says how to
    continue, and --resume trains only the student."""
    import signal

    from kd_edge import interrupt
    from kd_edge.errors import Interrupted, OutputError
    from kd_edge.settings.detection import DetectorNetwork, DetectSettings
    from kd_edge.settings.training import OptimSettings
    from kd_edge.training import detect_run, detection_fit

    data = squares_dataset(tmp_path / "squares", groups=("a", "b", "c"), frames=2)
    settings = DetectSettings(dataset=f"yolo:{data}", frame_size=48, tile=24, optim=OptimSettings(batch_size=4),
                              teacher=DetectorNetwork(model="fomo-base", steps=3),
                              student=DetectorNetwork(model="fomo-small", steps=3))  # fmt: skip
    original = detection_fit.fit_detector

    def stop_in_the_student(plan, teacher=None):
        if plan.stage == "student":
            monkeypatch.setattr(interrupt, "_requested", signal.SIGTERM)
        return original(plan, teacher)

    monkeypatch.setattr(detect_run, "fit_detector", stop_in_the_student)
    with pytest.raises(Interrupted):
        detect_run.train_detectors(settings, tmp_path / "run")
    monkeypatch.setattr(interrupt, "_requested", None)
    assert (tmp_path / "run" / "teacher.pt").is_file() and not (tmp_path / "run" / "student.pt").exists()
    with pytest.raises(OutputError, match="--resume continues this run"):
        detect_run.train_detectors(settings, tmp_path / "run")
    stages = []
    monkeypatch.setattr(detect_run, "fit_detector", lambda plan, teacher=None: stages.append(plan.stage) or
                        original(plan, teacher))  # fmt: skip
    metrics = detect_run.train_detectors(settings, tmp_path / "run", resume=True)
    assert stages == ["student"] and metrics["student"]["distilled"] and metrics["resumed"] == 1
    assert "teacher" in metrics and (tmp_path / "run" / "student.pt").is_file()


def test_the_detector_teachers_pace_counts_the_student_after_it(tmp_path, monkeypatch):
    """The teacher's plan carries the student's steps, each differing from the teacher's own by the networks'
    timed part (a distilled step: the student's forward and backward passes and the teacher's forward pass); the
    student has nothing after it."""
    from kd_edge.settings.detection import DetectorNetwork, DetectSettings
    from kd_edge.settings.training import OptimSettings
    from kd_edge.training import detect_run
    from kd_edge.training.detection_fit import step_seconds

    data = squares_dataset(tmp_path / "squares", groups=("a", "b", "c"), frames=2)
    settings = DetectSettings(dataset=f"yolo:{data}", frame_size=48, tile=24, optim=OptimSettings(batch_size=4),
                              teacher=DetectorNetwork(model="fomo-base", steps=2),
                              student=DetectorNetwork(model="fomo-small", steps=5))  # fmt: skip
    plans, timed = {}, {64: (0.030, 0.010), 32: (0.012, 0.004)}  # (step, forward) s by width: fomo-base, fomo-small
    original = detect_run.fit_detector
    monkeypatch.setattr(detect_run, "fit_detector", lambda plan, teacher=None: plans.setdefault(plan.stage, plan) and
                        original(plan, teacher))  # fmt: skip
    monkeypatch.setattr(detect_run, "step_seconds", lambda model, tiles, precision: timed[model.feature_channels])
    detect_run.train_detectors(settings, tmp_path / "run")
    (later,) = plans["teacher"].later
    assert later.stage == "student" and later.step_equivalents == 5
    assert later.extra_seconds == pytest.approx(5 * (0.012 + 0.010 - 0.030))
    assert later.seconds(0.050) == pytest.approx(5 * (0.050 - 0.008))  # a teacher's step of 50 ms: 42 ms a step
    assert plans["student"].later == ()

    # the timing itself: fomo-base's step takes longer than fomo-sep's (14x the MACs) and its own forward pass
    tiles = torch.zeros(8, 3, 64, 64)
    big_step, big_forward = step_seconds(create_detector("fomo-base", 1), tiles, "fp32")
    small_step, _ = step_seconds(create_detector("fomo-sep", 1), tiles, "fp32")
    assert big_step > max(small_step, big_forward) > 0


def test_detectors_train_in_the_precision_asked_and_auto_keeps_depthwise_ones_in_float32(tmp_path, monkeypatch):
    """--precision bf16 runs the networks' forward passes (the student's and its teacher's in the student's step)
    under bf16 autocast, fp32 in float32; auto resolves per network as the classifiers do: bf16 only on a CPU with
    native bf16, never for a depthwise network. The run's metrics say which; the pipeline takes [detect]'s."""
    from typer.testing import CliRunner

    from kd_edge.cli import app
    from kd_edge.settings.detection import DetectorNetwork, DetectSettings
    from kd_edge.settings.pipeline import PipelineSettings
    from kd_edge.settings.training import DataSettings, DistillSettings, OptimSettings, RunSettings
    from kd_edge.training import detect_run, detection_fit, device

    data = squares_dataset(tmp_path / "squares", groups=("a", "b", "c"), frames=2)
    seen = []
    original = detection_fit.detector_loss

    def recording(model, teacher, projector, inputs, targets, knobs):
        seen.append(tuple(str(n.features_and_logits(inputs)[1].dtype) for n in (model, teacher) if n is not None))
        return original(model, teacher, projector, inputs, targets, knobs)

    monkeypatch.setattr(detection_fit, "detector_loss", recording)

    def run(precision: str, student: str) -> dict:
        seen.clear()
        settings = DetectSettings(dataset=f"yolo:{data}", frame_size=48, tile=24, optim=OptimSettings(batch_size=4),
                                  teacher=DetectorNetwork(model="fomo-base", steps=2),
                                  student=DetectorNetwork(model=student, steps=2),
                                  run=RunSettings(precision=precision))  # fmt: skip
        metrics = detect_run.train_detectors(settings, tmp_path / f"{precision}-{student}", force=True)
        return {"teacher": metrics["teacher"]["precision"], "student": metrics["student"]["precision"], "seen": seen}

    bf16, fp32 = "torch.bfloat16", "torch.float32"
    assert run("bf16", "fomo-lite") == {"teacher": "bf16", "student": "bf16", "seen": [(bf16,)] * 2 + [(bf16,) * 2] * 2}
    assert run("fp32", "fomo-lite") == {"teacher": "fp32", "student": "fp32", "seen": [(fp32,)] * 2 + [(fp32,) * 2] * 2}
    monkeypatch.setattr(device, "has_native_bf16", lambda: True)
    monkeypatch.setattr(device, "onednn_may_use_bf16", lambda: True)  # whatever cap the tests run under
    assert run("auto", "fomo-sep") == {"teacher": "bf16", "student": "fp32", "seen": [(bf16,)] * 2 + [(fp32,) * 2] * 2}
    monkeypatch.setattr(device, "has_native_bf16", lambda: False)
    assert run("auto", "fomo-lite")["student"] == "fp32"

    pipeline = PipelineSettings(
        distill=DistillSettings(data=DataSettings(dataset=f"yolo:{data}")),
        detect=DetectSettings(run=RunSettings(precision="fp32")),
    )
    assert pipeline.detection().run.precision == "fp32"  # [detect]'s own
    (tmp_path / "bad.toml").write_text('[detect]\nprecision = "fp16"\n')
    args = [
        "pipeline",
        "--dataset",
        f"yolo:{data}",
        "--config",
        str(tmp_path / "bad.toml"),
        "--out",
        str(tmp_path / "p"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0 and "--precision must be one of auto, fp32, bf16" in result.output


@pytest.mark.slow
def test_detect_export_predict_from_the_command_line(tmp_path):
    """A user's path: `kd-edge detect` on YOLO frames, `export --onnx`, then `predict` finds the squares where they
    are in the original image's pixels; `quantize` and `bundle` take the run; what does not apply says so."""
    import json

    import onnxruntime as ort
    from typer.testing import CliRunner

    from kd_edge.cli import app
    from kd_edge.runtime import OnnxModel
    from kd_edge.settings.detection import DetectSettings
    from kd_edge.training.checkpoint import load_checkpoint
    from tests.test_data import save_sideways

    data = squares_dataset(tmp_path / "squares", groups=("a", "b", "c", "d"), frames=8)
    for name in ("a-0100", "c-0100"):  # frames without objects, kept as negatives (and so read by every stage)
        write_scene(data, name, [])
    run, runner = tmp_path / "run", CliRunner()
    common = ["--dataset", f"yolo:{data}", "--frame-size", "96", "--tile", "48", "--batch-size", "16"]
    common += ["--empty-frames", "keep"]
    result = runner.invoke(app, ["detect", *common, "--teacher-steps", "150", "--steps", "150", "--out", str(run)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["student"]["distilled"] and metrics["student"]["test"]["overall"]["f1"] > 0.8, metrics["student"]
    for stage in ("teacher", "student"):  # beside each other, as a classifier's test_accuracy
        assert metrics[stage]["test_f1"] == metrics[stage]["test"]["overall"]["f1"]
    groups = json.loads((run / "split.json").read_text())["groups"]
    assert sum(map(len, groups.values())) == 4 and not set(groups["train"]) & set(groups["test"])
    student = load_checkpoint(run / "student.pt")  # weights_only: plain numbers in its metrics
    stride = create_detector(DetectSettings.student.model, 2).stride  # the default student's cells
    assert student.card.task == "detect" and student.card.detection["stride"] == stride
    assert student.card.detection["group_by"] == "prefix"  # later stages split the frames as training did
    assert student.card.detection["empty_frames"] == "keep" and sum(metrics["data"]["without_objects"].values()) == 2

    result = runner.invoke(app, ["export", str(run), "--onnx", "--out", str(tmp_path / "exports")])
    assert result.exit_code == 0, result.output
    onnx_file = tmp_path / "exports" / "run.onnx"
    session = ort.InferenceSession(str(onnx_file))  # a plain session, fed a uint8 NHWC frame
    assert session.run(None, {"input": np.zeros((1, 96, 96, 3), np.uint8)})[0].shape == (1, 3, *[96 // stride] * 2)

    write_scene(tmp_path / "new", "frame-0001", [(0, 60, 20, 8), (1, 150, 90, 8)], size=(192, 128))  # twice the size
    image = tmp_path / "new" / "images" / "frame-0001.png"
    result = runner.invoke(app, ["predict", str(onnx_file), str(image), "--json", "--draw", str(tmp_path / "d.png")])
    assert result.exit_code == 0, result.output
    (frame,) = json.loads(result.output)
    assert (frame["width"], frame["height"]) == (192, 128) and (tmp_path / "d.png").stat().st_size > 0
    for name, x, y in (("car", 60, 20), ("bus", 150, 90)):  # a cell is 16 px here: its centre within 11.3 px
        assert min(np.hypot(d["x"] - x, d["y"] - y) for d in frame["detections"] if d["class"] == name) <= 11.4
    from PIL import Image  # a camera's JPEG 4x the frame: decoded at half scale, its objects still where they are

    write_scene(tmp_path / "big", "frame-0001", [(0, 120, 40, 32), (1, 300, 180, 32)], size=(384, 256))
    Image.open(tmp_path / "big" / "images" / "frame-0001.png").save(tmp_path / "big.jpg", quality=95)
    (frame,) = json.loads(runner.invoke(app, ["predict", str(onnx_file), str(tmp_path / "big.jpg"), "--json"]).output)
    assert (frame["width"], frame["height"]) == (384, 256)
    for name, x, y in (("car", 120, 40), ("bus", 300, 180)):  # a cell is 32 px here
        assert min(np.hypot(d["x"] - x, d["y"] - y) for d in frame["detections"] if d["class"] == name) <= 22.7

    with Image.open(tmp_path / "big" / "images" / "frame-0001.png") as image:  # a phone's JPEG, stored sideways
        save_sideways(np.asarray(image.convert("RGB")), tmp_path / "sideways.jpg")
    args = ["predict", str(onnx_file), str(tmp_path / "sideways.jpg"), "--json", "--draw", str(tmp_path / "s.png")]
    (frame,) = json.loads(runner.invoke(app, args).output)
    assert (frame["width"], frame["height"]) == (384, 256) == Image.open(tmp_path / "s.png").size  # as shown
    for name, x, y in (("car", 120, 40), ("bus", 300, 180)):  # where a viewer shows them
        assert min(np.hypot(d["x"] - x, d["y"] - y) for d in frame["detections"] if d["class"] == name) <= 22.7

    result = runner.invoke(app, ["quantize", str(onnx_file)])  # calibrated on training frames, judged by F1
    assert result.exit_code == 0, result.output
    int8 = OnnxModel(tmp_path / "exports" / "run.int8.onnx")
    budget = int8.card.quantization["f1_budget"]
    assert budget["split"] == "val" and budget["drop"] <= 0.02 and int8.card.detection["test_f1"] > 0.7
    assert int8.card.calibration["split"] == "train"
    result = runner.invoke(app, ["bundle", str(run), "--out", str(tmp_path / "bundle")])  # export, INT8, bundle
    assert result.exit_code == 0, result.output
    bundled = OnnxModel(tmp_path / "bundle")  # its checksums hold
    assert bundled.card.task == "detect" and bundled.card.detection["threshold"] == student.card.detection["threshold"]
    result = runner.invoke(app, ["detect", *common, "--student-model", "fomo-huge", "--out", str(tmp_path / "y")])
    assert result.exit_code != 0 and "unknown detector 'fomo-huge'" in result.output
    assert not (tmp_path / "y").exists()  # refused before the run folder or the teacher
    result = runner.invoke(app, ["distill", "--dataset", f"yolo:{data}", "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "train a detector on it with `kd-edge detect" in result.output
