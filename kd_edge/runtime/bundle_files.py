"""A deployable bundle: one folder (or its .tar.gz) with everything a board needs, checked before use.

    bundle/
      model.onnx        the deployable model (INT8 where it met its budgets, else FP32)
      model.fp32.onnx   the other form, when there is one (model.int8.onnx when model.onnx is FP32):
                        the host's speed verdict may not hold on the board, so both can be measured there
      model.json        the model card, plus the bundle's own section (which form, and why)
      samples.npz       a class-stratified labelled sample of the test split, for on-board checks
      README.md         the commands to run on the board
      kd_edge-*.whl     kd-edge itself (pure Python, no torch), to install on the board offline
      SHA256SUMS        a digest of every other file (``sha256sum -c SHA256SUMS`` checks it)

Opening a bundle verifies every checksum before any model is loaded. An archive is
refused before anything is written when a member is not a plain file or folder, has
an absolute path or ``..``, or would unpack to more than a bounded size.

Numpy and the standard library only.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from kd_edge.errors import BundleError
from kd_edge.runtime.card import ModelCard

MODEL_FILE = "model.onnx"
OTHER_FORM_FILES = {"fp32": "model.fp32.onnx", "int8": "model.int8.onnx"}
CARD_FILE = "model.json"
SAMPLES_FILE = "samples.npz"
README_FILE = "README.md"
CONSUMER_FILE = "consumer.c"  # a C program that runs model.onnx through ONNX Runtime's C API, as the README says
CONSUMER_SOURCE = Path(__file__).with_name(CONSUMER_FILE)
SUMS_FILE = "SHA256SUMS"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
MAX_UNPACKED_BYTES = 2 << 30  # a drone model and its samples are megabytes; this bounds a hostile archive


@dataclass(frozen=True)
class Bundle:
    """An opened, verified bundle folder."""

    folder: Path
    card: ModelCard
    info: dict  # model.json's "bundle" section: deployable form, why, the other forms, budgets

    @property
    def model_path(self) -> Path:
        return self.folder / MODEL_FILE

    def forms(self) -> dict[str, Path]:
        """{"int8" or "fp32": .onnx path} for the deployable model and the other form, if bundled."""
        forms = {self.info["deployable"]["form"]: self.model_path}
        forms.update({other["form"]: self.folder / other["file"] for other in self.info.get("other_forms", [])})
        return forms

    @property
    def samples_path(self) -> Path | None:
        path = self.folder / SAMPLES_FILE
        return path if path.is_file() else None


def is_archive(path: str | Path) -> bool:
    return str(path).endswith(ARCHIVE_SUFFIXES)


def is_bundle(path: str | Path) -> bool:
    """A bundle folder (it has model.json) or a bundle archive (by its suffix)."""
    path = Path(path)
    return (path.is_dir() and (path / CARD_FILE).is_file()) or (path.is_file() and is_archive(path))


def open_bundle(path: str | Path, unpack_to: str | Path | None = None) -> Bundle:
    """Verify and open a bundle folder, or unpack an archive into ``unpack_to`` (a new or empty folder) first."""
    path = Path(path)
    if is_archive(path):
        if unpack_to is None:
            raise BundleError(f"{str(path)!r} is an archive: give a folder to unpack it into")
        folder = unpack(path, Path(unpack_to))
    elif path.is_dir():
        folder = path
    else:
        raise BundleError(
            f"{str(path)!r} is neither a bundle folder nor a .tar.gz bundle; make one with `kd-edge bundle`"
        )
    verify_checksums(folder)
    try:
        data = json.loads((folder / CARD_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{str(folder / CARD_FILE)!r} is not readable JSON ({exc})") from exc
    card = ModelCard.from_dict(data, repr(str(folder / CARD_FILE)))
    return Bundle(folder=folder, card=card, info=data.get("bundle", {}))


# --- checksums ------------------------------------------------------------------------------------------


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksums_text(folder: Path, names: list[str]) -> str:
    """``sha256sum``'s format: the digest, two spaces, the file name."""
    return "".join(f"{file_sha256(folder / name)}  {name}\n" for name in sorted(names))


def verify_checksums(folder: Path) -> None:
    """Every file SHA256SUMS lists exists and matches; every other file in the folder is listed."""
    sums = folder / SUMS_FILE
    if not sums.is_file():
        raise BundleError(f"{str(folder)!r} has no {SUMS_FILE}: it is not a kd-edge bundle, or it is incomplete")
    listed = {}
    for number, line in enumerate(sums.read_text().splitlines(), start=1):
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name or "/" in name or name.startswith("."):
            raise BundleError(f"{str(sums)!r} line {number} is not '<sha256>  <file name>': {line[:80]!r}")
        listed[name] = digest
    present = {p.name for p in folder.iterdir() if p.name != SUMS_FILE}
    problems = [f"{name} is missing" for name in sorted(set(listed) - present)]
    problems += [f"{name} is not listed" for name in sorted(present - set(listed))]
    problems += [
        f"{name} does not match" for name in sorted(set(listed) & present) if file_sha256(folder / name) != listed[name]
    ]
    if problems:
        raise BundleError(
            f"bundle {str(folder)!r} fails its checksums ({'; '.join(problems)}): it was changed or damaged after it "
            "was made. Nothing was loaded; copy the bundle again or re-create it with `kd-edge bundle`."
        )


def amend_card(folder: Path, section: str, values: dict) -> None:
    """Set ``model.json``'s ``bundle.<section>`` (what a later check found, such as verify-arm's verdict) and
    rewrite SHA256SUMS, so that the folder verifies again; the folder's checksums are checked first."""
    from kd_edge.io import atomic_write_text

    verify_checksums(folder)
    card = json.loads((folder / CARD_FILE).read_text())
    card.setdefault("bundle", {})[section] = values
    atomic_write_text(folder / CARD_FILE, json.dumps(card, indent=2) + "\n")
    names = [p.name for p in folder.iterdir() if p.name != SUMS_FILE and not p.name.startswith(".")]
    atomic_write_text(folder / SUMS_FILE, checksums_text(folder, names))


# --- archives ---------------------------------------------------------------------------------------------


def write_archive(folder: Path, archive: Path) -> None:
    """``folder`` as a .tar.gz holding one top-level folder of plain files, written atomically. The same files give
    the same bytes: no time, owner or permission of this machine goes into the archive (a bundle made twice is
    one artifact, its digest comparable)."""
    import gzip
    import io

    from kd_edge.io import atomic_write

    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as packed, tarfile.open(fileobj=packed, mode="w") as tar:
        for path in sorted(folder.iterdir()):
            member = tarfile.TarInfo(f"{folder.name}/{path.name}")
            member.size, member.mode = path.stat().st_size, 0o644
            with open(path, "rb") as handle:
                tar.addfile(member, handle)
    atomic_write(archive, lambda handle: handle.write(buffer.getvalue()))


def unpack(archive: Path, target: Path) -> Path:
    """Unpack a bundle archive into ``target`` after checking every member; returns the bundle folder."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            check_members(archive, members)
            if target.exists() and any(target.iterdir()):
                raise BundleError(f"cannot unpack {str(archive)!r} into {str(target)!r}: the folder is not empty")
            target.mkdir(parents=True, exist_ok=True)
            # Python's own "data" filter (3.10.12+, 3.11.4+) re-checks each member as it is written.
            extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(target, members=members, **extra)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BundleError(f"cannot read {str(archive)!r} as a .tar.gz bundle ({exc}); copy it again") from exc
    candidates = (
        [target] if (target / CARD_FILE).is_file() else [p for p in target.iterdir() if (p / CARD_FILE).is_file()]
    )
    if len(candidates) != 1:
        raise BundleError(f"{str(archive)!r} holds no bundle folder (no {CARD_FILE})")
    return candidates[0]


def check_members(archive: Path, members: list[tarfile.TarInfo]) -> None:
    """Refuse the whole archive when any member could write outside the target or is not a plain file."""
    total = 0
    for member in members:
        name = PurePosixPath(member.name)
        if name.is_absolute() or ".." in name.parts or member.name.startswith(("/", "\\")):
            raise BundleError(
                f"{str(archive)!r} is unsafe: member {member.name!r} would be written outside the folder. Nothing "
                "was unpacked."
            )
        if not (member.isfile() or member.isdir()):
            kind = "a link" if member.issym() or member.islnk() else "a device or special file"
            raise BundleError(f"{str(archive)!r} is unsafe: member {member.name!r} is {kind}. Nothing was unpacked.")
        total += member.size
    if total > MAX_UNPACKED_BYTES:
        raise BundleError(f"{str(archive)!r} would unpack to {total:,} bytes, more than a bundle holds; refused")
