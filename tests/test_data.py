"""Dataset loaders on the built-in data and on small IDX, npz, CIFAR and ImageFolder data made here."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from kd_edge.data import dataset, load_dataset, stratified_split
from kd_edge.errors import DatasetError
from kd_edge.training.models import create_model
from tests.conftest import easy_images


def test_builtin_mnist_5k_split():
    ds = load_dataset("mnist-5k")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (4000, 500, 500)
    assert ds.input_shape == (1, 28, 28) and ds.classes == tuple("0123456789")
    for split, per_class in ((ds.train, 400), (ds.val, 50), (ds.test, 50)):
        assert np.bincount(split.labels).tolist() == [per_class] * 10
    # fixed: the same on every load
    again = load_dataset("mnist-5k")
    assert np.array_equal(ds.test.images, again.test.images)
    # disjoint: no test image also sits in train
    train_keys = {img.tobytes() for img in ds.train.images}
    assert not any(img.tobytes() in train_keys for img in ds.test.images)
    assert 0.05 < ds.mean[0] < 0.3 and 0.2 < ds.std[0] < 0.5


def test_channel_stats_are_the_float_mean_and_std_whatever_the_block_size(monkeypatch):
    images = np.random.default_rng(0).integers(0, 256, (50, 3, 9, 7), dtype=np.uint8)
    images[:, 1] //= 4  # channels that differ
    pixels = images.astype(np.float64) / 255
    expected = pixels.mean(axis=(0, 2, 3)), pixels.std(axis=(0, 2, 3))
    for block_pixels in (1, 100, 1 << 20):  # one image a block, several, all at once
        monkeypatch.setattr(dataset, "HISTOGRAM_PIXELS", block_pixels)
        means, stds = dataset.channel_stats(images)
        np.testing.assert_allclose(means, expected[0], atol=1e-4)
        np.testing.assert_allclose(stds, expected[1], atol=1e-4)


def test_stratified_split_holds_out_each_class():
    labels = np.repeat(np.arange(4), [100, 50, 20, 10])
    keep, held = stratified_split(labels, 0.1)
    assert np.bincount(labels[held]).tolist() == [10, 5, 2, 1]
    assert len(np.intersect1d(keep, held)) == 0 and len(keep) + len(held) == len(labels)


def test_a_class_of_one_or_two_images_keeps_one_for_training():
    """Held out first, a rare class would leave training without it: the model could never learn it."""
    from kd_edge.data.dataset import three_way_split

    labels = np.repeat(np.arange(3), [40, 2, 1])
    parts = three_way_split(labels, (0.8, 0.1, 0.1))
    assert np.bincount(labels[parts["train"]], minlength=3).tolist() == [32, 1, 1]
    assert np.bincount(labels[parts["test"]], minlength=3).tolist() == [4, 1, 0]


def test_a_class_folder_without_images_is_named(tmp_path):
    root = make_plain_tree(tmp_path / "aerial", per_class=5)
    (root / "harbour").mkdir()  # created, never filled
    with pytest.raises(DatasetError, match=r"'harbour' in .* hold no images: add images to them, or remove them"):
        load_dataset(f"folder:{root}")


def test_a_class_too_rare_for_every_split_is_named(tmp_path, caplog):
    """A class of two images cannot give training, validation and test one each: where validation would be left
    with one class (nothing could be chosen on it), the tree is refused; otherwise the split that goes without the
    class says so."""
    two = make_plain_tree(tmp_path / "two", per_class=30, classes=("field", "roof"))
    for extra in sorted((two / "roof").iterdir())[2:]:
        extra.unlink()
    with pytest.raises(DatasetError, match=r"validation split .* one class only: class\(es\) 'roof' \(2\) have fewer"):
        load_dataset(f"folder:{two}")
    three = make_plain_tree(tmp_path / "three", per_class=30)
    for extra in sorted((three / "river").iterdir())[2:]:
        extra.unlink()
    with caplog.at_level("INFO", logger="kd_edge"):
        dataset = load_dataset(f"folder:{three}")
    assert 2 not in dataset.val.labels.tolist()
    assert "'river' have too few images (fewer than 3) for the val split" in caplog.text
    one = make_plain_tree(tmp_path / "one", per_class=5, classes=("field",))
    with pytest.raises(DatasetError, match=r"one class folder \('field'\): a classifier needs two or more"):
        load_dataset(f"folder:{one}")
    # an .npz pool is split the same way, and refused the same way
    images = np.zeros((32, 8, 8), np.uint8)
    np.savez(tmp_path / "pool.npz", images=images, labels=np.repeat([0, 1], [30, 2]), classes=np.array(["a", "b"]))
    with pytest.raises(DatasetError, match=r"one class only: class\(es\) 'b' \(2\) have fewer than 3 images"):
        load_dataset(f"npz:{tmp_path / 'pool.npz'}")


def write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)


def make_idx_folder(folder, gz, n_train=200, n_test=50):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", rng.integers(0, 255, (n_train, 28, 28)))
    write_idx(folder / f"train-labels-idx1-ubyte{suffix}", np.arange(n_train) % 10)
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", rng.integers(0, 255, (n_test, 28, 28)))
    write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", np.arange(n_test) % 10)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("layout", ["", "FashionMNIST/raw", "fashion-mnist"])
def test_idx_loader_finds_files_in_each_layout(tmp_path, gz, layout):
    make_idx_folder(tmp_path / layout if layout else tmp_path / "data", gz)
    ds = load_dataset("fashion-mnist", data_dir=tmp_path if layout else tmp_path / "data")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (180, 20, 50)
    assert ds.classes[0] == "T-shirt/top" and ds.input_shape == (1, 28, 28)


def test_idx_loader_reads_env_var(tmp_path, monkeypatch):
    make_idx_folder(tmp_path / "MNIST" / "raw", gz=True)
    monkeypatch.setenv("KD_EDGE_DATA", str(tmp_path))
    assert len(load_dataset("mnist").test) == 50


def test_missing_idx_says_which_files_where(tmp_path):
    with pytest.raises(DatasetError) as info:
        load_dataset("mnist", data_dir=tmp_path)
    message = str(info.value)
    assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert "--data-dir" in message and str(tmp_path) in message


def test_truncated_idx_is_reported(tmp_path):
    make_idx_folder(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="truncated"):
        load_dataset("mnist", data_dir=tmp_path)


def test_npz_dataset(easy_npz):
    ds = load_dataset(f"npz:{easy_npz}")
    assert ds.classes == ("a", "b", "c") and ds.input_shape == (1, 16, 16)
    assert len(ds.train) + len(ds.val) + len(ds.test) == 300
    assert np.bincount(ds.test.labels).tolist() == [10, 10, 10]


def test_npz_with_bad_labels_lists_offending_indices(tmp_path):
    images, labels = easy_images(20)
    labels[[3, 7]] = -1
    np.savez(tmp_path / "bad.npz", images=images, labels=labels, classes=np.array(["a", "b", "c"]))
    with pytest.raises(DatasetError, match=r"2 labels are negative \(first at indices \[3, 7\]\)"):
        load_dataset(f"npz:{tmp_path / 'bad.npz'}")
    labels[[3, 7]] = 5  # beyond the 3 classes
    np.savez(tmp_path / "bad.npz", images=images, labels=labels, classes=np.array(["a", "b", "c"]))
    with pytest.raises(DatasetError, match=r"outside 0\.\.2"):
        load_dataset(f"npz:{tmp_path / 'bad.npz'}")


def test_npz_with_zero_pixel_images_names_the_cause(tmp_path):
    images = np.zeros((30, 0, 0), np.uint8)
    labels = np.arange(30) % 3
    np.savez(tmp_path / "empty.npz", images=images, labels=labels, classes=np.array(["a", "b", "c"]))
    with pytest.raises(DatasetError, match="training split holds no pixels"):
        load_dataset(f"npz:{tmp_path / 'empty.npz'}")


def test_npz_missing_arrays(tmp_path):
    np.savez(tmp_path / "x.npz", pixels=np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(DatasetError, match="lacks the arrays"):
        load_dataset(f"npz:{tmp_path / 'x.npz'}")


def test_cifar10_binary_version(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}.bin", 20) for i in range(1, 6)] + [("test_batch.bin", 10)]:
        records = np.concatenate(
            [np.arange(n, dtype=np.uint8)[:, None] % 10, rng.integers(0, 255, (n, 3072), dtype=np.uint8)], axis=1
        )
        records.tofile(folder / name)
    ds = load_dataset("cifar10", data_dir=tmp_path)
    assert ds.input_shape == (3, 32, 32) and len(ds.test) == 10 and len(ds.train) + len(ds.val) == 100
    assert len(ds.mean) == 3 and ds.classes[0] == "airplane"


def test_cifar10_missing_says_what_to_unpack(tmp_path):
    with pytest.raises(DatasetError, match="cifar-10-batches-py"):
        load_dataset("cifar10", data_dir=tmp_path)


def make_image_folder(root, splits=("train", "val"), size=12, mode="L"):
    from PIL import Image

    for split in splits:
        for label, cls in enumerate(["cat", "dog"]):
            (root / split / cls).mkdir(parents=True)
            for i in range(10):
                pixels = np.full((size, size), 40 + 150 * label + i, np.uint8)
                Image.fromarray(pixels).convert(mode).save(root / split / cls / f"{i}.png")


def test_image_folder_grayscale_resized(tmp_path):
    make_image_folder(tmp_path)
    ds = load_dataset(f"folder:{tmp_path}", image_size=16)
    assert ds.classes == ("cat", "dog") and ds.input_shape == (1, 16, 16)
    # no test/: val/ is what is reported, validation is carved from train/
    assert len(ds.test) == 20 and len(ds.train) + len(ds.val) == 20


def test_image_folder_rgb_with_test(tmp_path):
    make_image_folder(tmp_path, splits=("train", "val", "test"), mode="RGB")
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()  # Jupyter's: not a class
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.input_shape == (3, 12, 12) and len(ds.val) == 20 and len(ds.test) == 20 and ds.classes == ("cat", "dog")


def test_image_folder_without_train(tmp_path):
    with pytest.raises(DatasetError, match="train/"):
        load_dataset(f"folder:{tmp_path}")


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(DatasetError, match=r"unknown dataset 'imagenet'.*mnist-5k.*fashion-mnist"):
        load_dataset("imagenet")


# --- a plain class-folder tree, split here ------------------------------------------------------------------


def make_plain_tree(root, per_class=20, classes=("field", "forest", "river"), size=12):
    """root/<class>/<n>.jpg, the layout users have; class k is a brightness band, each image a little apart."""
    from PIL import Image

    for label, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((size, size, 3), 30 + 80 * label + i, np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i:03d}.jpg", quality=95)
    return root


def test_a_plain_class_tree_is_split_stratified_and_the_same_every_time(tmp_path):
    root = make_plain_tree(tmp_path / "aerial")
    first = load_dataset(f"folder:{root}")
    assert first.classes == ("field", "forest", "river") and first.input_shape == (3, 12, 12)
    for name, per_class in (("train", 16), ("val", 2), ("test", 2)):  # 0.8, 0.1, 0.1 of each class
        assert np.bincount(getattr(first, name).labels).tolist() == [per_class] * 3, name
    files = first.files
    named = [file for name in ("train", "val", "test") for file in files[name]]
    assert len(named) == len(set(named)) == 60 and files["skipped"] == []  # every image in one split only
    test = zip(files["test"], first.test.labels, strict=True)
    assert all(file.split("/")[0] == first.classes[label] for file, label in test)  # a file keeps its class
    again = load_dataset(f"folder:{root}")
    assert again.files == files and again.sha256() == first.sha256()
    other = load_dataset(f"folder:{root}", split=(0.6, 0.2, 0.2))
    assert np.bincount(other.test.labels).tolist() == [4, 4, 4]


def make_textured_tree(root, per_class=6, size=32):
    """root/<class>/<n>.png of ``size`` px, each image different noise (so any mix-up of order shows)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("field", "forest"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), np.uint8)).save(root / cls / f"{i:03d}.png")
    return root


@pytest.mark.parametrize("layout", ["plain", "split"])
def test_training_gets_the_train_photos_again_at_up_to_twice_the_side(tmp_path, folder_cache, layout, monkeypatch):
    from kd_edge.data import folders

    if layout == "plain":
        root = make_textured_tree(tmp_path / "tree")
    else:  # train/ alone with val/: validation carved from train/ by index, the copy carved alike
        root = tmp_path / "given"
        for split in ("train", "val"):
            make_textured_tree(root / split)
    small = load_dataset(f"folder:{root}", image_size=12, train_sources=True)
    sources = small.train_sources
    assert sources is not None and sources.images.shape == (len(small.train), 3, 24, 24)  # twice 12
    at_24 = load_dataset(f"folder:{root}", image_size=24)
    assert np.array_equal(sources.images, at_24.train.images) and np.array_equal(sources.labels, small.train.labels)
    # the photos' own 32 px caps the copy; no copy where the photos are no larger than the input, or not asked
    assert load_dataset(f"folder:{root}", image_size=20, train_sources=True).train_sources.images.shape[-1] == 32
    assert load_dataset(f"folder:{root}", image_size=32, train_sources=True).train_sources is None
    assert load_dataset(f"folder:{root}", image_size=12).train_sources is None
    monkeypatch.setattr(folders, "SOURCES_MAX_BYTES", len(small.train) * 3 * 24 * 24 - 1)  # over the memory cap
    assert load_dataset(f"folder:{root}", image_size=12, train_sources=True).train_sources is None


def test_a_folder_is_decoded_once_then_read_from_the_cache(tmp_path, monkeypatch, folder_cache):
    from kd_edge.data import folders

    root = make_plain_tree(tmp_path / "aerial", per_class=6)
    decodes = []
    original = folders.decode
    monkeypatch.setattr(folders, "decode", lambda *a: decodes.append(a[0]) or original(*a))
    first = load_dataset(f"folder:{root}", image_size=8)
    assert len(decodes) == 1 and len(list(folder_cache.glob("*.npz"))) == 1
    cached = load_dataset(f"folder:{root}", image_size=8)
    assert len(decodes) == 1 and cached.sha256() == first.sha256() and cached.files == first.files
    load_dataset(f"folder:{root}", image_size=10)  # another size: another entry
    (root / "field" / "000.jpg").write_bytes((root / "field" / "001.jpg").read_bytes())  # a file's content changes
    load_dataset(f"folder:{root}", image_size=8)
    assert len(decodes) == 3


def test_a_cached_folder_of_the_default_size_and_a_split_layout_load_without_reading_a_header(
    tmp_path, monkeypatch, folder_cache
):
    """The default size and colour come from the images' headers, a third of a cached RSSCN7 load's time when read:
    a cache entry is keyed by the options as given, so a hit reads no header; a split layout is one entry."""
    from kd_edge.data import folders

    make_image_folder(tmp_path / "given", splits=("train", "val", "test"))
    (tmp_path / "given" / "val" / "dog" / "9.png").write_bytes(b"")  # unreadable: left out of val only
    first = load_dataset(f"folder:{tmp_path / 'given'}", bad_images="skip")
    assert len(first.val) == 19 and [bad["file"] for bad in first.files["skipped"]] == ["val/dog/9.png"]
    monkeypatch.setattr(folders, "surveyed", lambda *a: pytest.fail("a cached load read the headers"))
    again = load_dataset(f"folder:{tmp_path / 'given'}", bad_images="skip")
    assert again.sha256() == first.sha256() and again.files == first.files
    assert len(list(folder_cache.glob("*.npz"))) == 1


def test_unreadable_images_are_named_and_refused_or_skipped_as_asked(tmp_path):
    root = make_plain_tree(tmp_path / "aerial", per_class=6)
    (root / "forest" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg at all")
    (root / "river" / "empty.png").write_bytes(b"")
    with pytest.raises(DatasetError) as refused:
        load_dataset(f"folder:{root}")
    message = str(refused.value)
    assert "2 image(s)" in message and "forest/broken.jpg" in message and "river/empty.png" in message
    assert "--bad-images skip" in message
    skipped = load_dataset(f"folder:{root}", bad_images="skip")
    assert sorted(s["file"] for s in skipped.files["skipped"]) == ["forest/broken.jpg", "river/empty.png"]
    assert all(s["reason"] for s in skipped.files["skipped"])
    assert len(skipped.train) + len(skipped.val) + len(skipped.test) == 18


def test_a_folder_without_class_folders_says_what_layout_is_expected(tmp_path):
    (tmp_path / "loose.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"no class sub-folders.*<class>/"):
        load_dataset(f"folder:{tmp_path}")


def test_channels_reads_a_colour_folder_as_grey_and_a_grey_one_as_colour(tmp_path):
    colour = make_plain_tree(tmp_path / "colour", per_class=5)
    grey = load_dataset(f"folder:{colour}", channels=1)
    assert grey.input_shape == (1, 12, 12) and load_dataset(f"folder:{colour}").input_shape == (3, 12, 12)
    make_image_folder(tmp_path / "digits")  # grey PNGs in train/ and val/
    assert load_dataset(f"folder:{tmp_path / 'digits'}", channels=3).input_shape == (3, 12, 12)


def test_a_photo_reaches_the_deployed_model_as_it_reached_training(tmp_path):
    """`kd-edge predict` and `bench --frames` resize a photo with the filter the card names, the one training used:
    the pixels are the same to the last bit (a bilinear deployment of a bicubic training differs by several levels)."""
    from PIL import Image

    from kd_edge.data.pixels import model_pixels
    from kd_edge.runtime.card import ModelCard  # as training writes it (kd_edge.training.splits.InputView)
    from kd_edge.settings.data import FOLDER_RESIZE

    rng = np.random.default_rng(1)
    smooth = np.asarray(Image.fromarray(rng.integers(0, 255, (8, 8, 3), np.uint8)).resize((300, 300)))
    for cls in ("field", "forest"):  # camera-sized JPEGs: decoded at a quarter of their size, for 32 px
        (tmp_path / "photos" / cls).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.roll(smooth, 20 * i, axis=1)).save(tmp_path / "photos" / cls / f"{i}.jpg", quality=95)
    ds = load_dataset(f"folder:{tmp_path / 'photos'}", image_size=32)
    card = ModelCard(classes=ds.classes, input_shape=ds.input_shape, mean=ds.mean, std=ds.std, resize=FOLDER_RESIZE)
    with Image.open(tmp_path / "photos" / ds.files["test"][0]) as photo:
        deployed = model_pixels(photo, card.input_shape, card.resize_filter)
    np.testing.assert_array_equal(deployed.transpose(2, 0, 1), ds.test.images[0])
    with Image.open(tmp_path / "photos" / ds.files["test"][0]) as photo:  # decoded in full, then resized
        full = np.asarray(photo.convert("RGB").resize((32, 32), Image.BICUBIC)).transpose(2, 0, 1)
    assert np.abs(full.astype(int) - ds.test.images[0]).mean() < 1.0


def save_sideways(upright: np.ndarray, path: Path) -> None:
    """``upright`` as a phone held upright stores it: the pixels turned a quarter, EXIF orientation 6 (a viewer
    turns them back)."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif)


def test_a_photo_stored_sideways_is_read_upright_as_a_viewer_shows_it(tmp_path):
    """Training, `kd-edge predict` and `bench --frames` read a JPEG with an EXIF orientation as it is shown (and as
    a labelling tool drew its boxes), not as its pixels are stored; decoded at a reduced scale all the same."""
    from PIL import Image

    from kd_edge.data.pixels import model_pixels, shown_size

    upright = np.full((200, 300, 3), 40, np.uint8)
    upright[20:80, 200:280] = (230, 20, 20)  # a red block top right
    Image.fromarray(upright).save(tmp_path / "upright.jpg", quality=95)
    save_sideways(upright, tmp_path / "sideways.jpg")
    with Image.open(tmp_path / "sideways.jpg") as photo:
        assert photo.size == (200, 300) and shown_size(photo) == (300, 200)
        sideways = model_pixels(photo, (3, 20, 30), "bicubic")
    with Image.open(tmp_path / "upright.jpg") as photo:
        expected = model_pixels(photo, (3, 20, 30), "bicubic")
    assert np.abs(sideways.astype(int) - expected).mean() < 2.0
    assert sideways[5, 24, 0] > 200 and sideways[15, 5, 0] < 60  # the block where a viewer shows it


def test_a_16_bit_grey_photo_is_read_by_its_top_byte_not_clipped_to_white(tmp_path):
    """A thermal or multispectral camera's 16-bit PNG: read as a viewer shows it (Pillow's own conversion made
    every level above 255 white); floating-point pixels are refused by name, with what to do."""
    from PIL import Image

    from kd_edge.data.pixels import model_pixels

    levels = np.linspace(0, 65535, 32 * 48).reshape(32, 48).astype(np.uint16)
    Image.fromarray(levels).save(tmp_path / "thermal.png")
    for channels in (1, 3):
        with Image.open(tmp_path / "thermal.png") as photo:
            pixels = model_pixels(photo, (channels, 32, 48), "bicubic")
        expected = (levels >> 8).astype(np.uint8)[..., None]
        np.testing.assert_array_equal(pixels, np.repeat(expected, channels, axis=2))
    Image.fromarray(levels.astype(np.float32) / 65535).save(tmp_path / "reflectance.tif")
    with Image.open(tmp_path / "reflectance.tif") as photo, pytest.raises(ValueError, match="8 or 16 bits"):
        model_pixels(photo, (1, 32, 48), "bicubic")


def test_splits_whose_images_differ_are_read_alike_at_the_median_size(tmp_path):
    make_image_folder(tmp_path / "mixed", splits=("train",), size=12)  # 20 images
    make_image_folder(tmp_path / "mixed", splits=("val", "test"), size=16)  # 40
    assert load_dataset(f"folder:{tmp_path / 'mixed'}").input_shape == (1, 16, 16)
    assert load_dataset(f"folder:{tmp_path / 'mixed'}", image_size=12).input_shape == (1, 12, 12)


def test_a_folder_of_large_or_oblong_photos_is_read_at_most_64_px_square_unless_asked(tmp_path):
    """The default keeps a 2-core machine's training in minutes: the images' median shorter side, at most 64;
    --image-size asks for any other size."""
    from PIL import Image

    for cls in ("cars", "roads"):
        (tmp_path / "big" / cls).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (300, 200), (40 * i, 90, 10)).save(tmp_path / "big" / cls / f"{i}.jpg")
    assert load_dataset(f"folder:{tmp_path / 'big'}", split=(0.5, 0.25, 0.25)).input_shape == (3, 64, 64)
    asked = load_dataset(f"folder:{tmp_path / 'big'}", split=(0.5, 0.25, 0.25), image_size=128)
    assert asked.input_shape == (3, 128, 128)
    small = make_plain_tree(tmp_path / "small", size=12)
    assert load_dataset(f"folder:{small}").input_shape == (3, 12, 12)


def test_a_folder_of_odd_sizes_and_modes_is_read_as_the_default_models_take_it(tmp_path):
    """A user's photos vary: the size comes from the median image, not the first one, rounded down to a multiple
    of 4 (each default classifier halves the image twice), and one grey image among colour ones leaves them all
    in colour; the default models then train on it."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, cls in enumerate(("a", "b")):
        (tmp_path / "odd" / cls).mkdir(parents=True)
        for i in range(12):
            size = (40 + i, 30 + i % 3) if i else (20, 18)  # the first file of each class is small and grey
            tint = rng.integers(0, 20, (1, 1, 3), np.uint8)
            image = Image.fromarray(np.full((size[1], size[0], 3), 60 + 100 * label, np.uint8) + tint)
            image.convert("L" if i == 0 else ("P" if i == 1 else "RGB")).save(tmp_path / "odd" / cls / f"{i:02d}.png")
    (tmp_path / "odd" / "a" / "2019").mkdir()  # a class's sub-folders are its images too, as in ImageFolder
    Image.new("RGB", (40, 31)).save(tmp_path / "odd" / "a" / "2019" / "late.png")
    (tmp_path / "odd" / "a" / ".ipynb_checkpoints").mkdir()  # hidden: not images of the class
    Image.new("RGB", (40, 31)).save(tmp_path / "odd" / "a" / ".ipynb_checkpoints" / "late-checkpoint.png")
    ds = load_dataset(f"folder:{tmp_path / 'odd'}")
    assert ds.input_shape == (3, 28, 28)  # median shorter side 31, not the first image's 18 (or its grey)
    listed = ds.files["train"] + ds.files["val"] + ds.files["test"]
    assert len(listed) == 25 and "a/2019/late.png" in listed
    create_model("cnn-base", num_classes=2, in_channels=3, image_size=ds.input_shape[-1])
