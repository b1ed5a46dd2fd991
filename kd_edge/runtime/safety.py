"""Refuse an ONNX file that would make a reader open files outside its folder, before any reader opens it.

A tensor of an ONNX model may keep its bytes in another file ("external data": a location,
an offset, a length, relative to the model's folder). A model from a colleague or the
internet can name ``../../home/user/.ssh/id_rsa``, an absolute path, or a symbolic link
that leads out of its folder, and ONNX and ONNX Runtime have had CVEs for following such
names (CVE-2022-25882, CVE-2024-27318, CVE-2026-27489). kd-edge reads the protobuf wire
format itself (standard library only, no onnx, nothing loaded) and checks every external
reference before onnx or ONNX Runtime sees the file:

* the location is relative, has no ``..`` and resolves inside the model's folder, and is not
  ONNX Runtime's in-memory marker (``*/_ORT_MEM_ADDR_/*``: the offset is then read as an address);
* no part of the way there is a symbolic link, and the file has no other hard link;
* offset and length are non-negative integers that stay within the file.

The file itself must be a well-formed protobuf of at most 2 GiB (protobuf's own limit).
Everything the check reads is in memory-mapped pages: a truncated or hostile file costs
no more memory than its size, and nesting is bounded.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

from kd_edge.errors import ModelFileError

MAX_MODEL_BYTES = 2**31 - 1  # protobuf cannot hold more; larger models keep their tensors in external data
ORT_MEMORY_MARKER = "_ORT_MEM_ADDR_"  # ONNX Runtime's name for tensor data already in memory
MAX_DEPTH = 24  # graphs inside attributes inside graphs... (protobuf itself parses at most 100 message levels)

# The ONNX messages that can hold a TensorProto, and the fields that lead there (onnx.proto3).
MODEL, GRAPH, NODE, ATTRIBUTE, TENSOR, SPARSE, FUNCTION, TRAINING, ENTRY = range(9)
SUBMESSAGES = {
    MODEL: {7: GRAPH, 20: TRAINING, 25: FUNCTION},
    TRAINING: {1: GRAPH, 2: GRAPH},
    GRAPH: {1: NODE, 5: TENSOR, 15: SPARSE},
    FUNCTION: {7: NODE, 11: ATTRIBUTE},  # a function's nodes, and its attributes' default values
    NODE: {5: ATTRIBUTE},
    ATTRIBUTE: {5: TENSOR, 6: GRAPH, 10: TENSOR, 11: GRAPH, 22: SPARSE, 23: SPARSE},
    SPARSE: {1: TENSOR, 2: TENSOR},
    TENSOR: {13: ENTRY},  # external_data: repeated StringStringEntryProto
    ENTRY: {},
}


class Malformed(Exception):
    pass


def varint(data, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise Malformed("a number runs past the end of its message")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def fields(data, start: int, end: int):
    """(field number, (start, end) of its bytes) for every length-delimited field of a message."""
    pos = start
    while pos < end:
        key, pos = varint(data, pos, end)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, pos = varint(data, pos, end)
        elif wire_type in (1, 5):
            pos += 8 if wire_type == 1 else 4
        elif wire_type == 2:
            length, pos = varint(data, pos, end)
            if pos + length > end:
                raise Malformed("a field is longer than what is left of the file")
            yield number, (pos, pos + length)
            pos += length
        else:
            raise Malformed(f"wire type {wire_type} does not occur in ONNX files")
    if pos != end:
        raise Malformed("a field runs past the end of its message")


def external_references(data, start: int, end: int, kind: int = MODEL, depth: int = 0):
    """Every tensor's external_data, as {key: value} dicts, anywhere in the message."""
    depth += kind == GRAPH
    if depth > MAX_DEPTH:
        raise Malformed(f"graphs nested more than {MAX_DEPTH} deep")
    entries = {}
    for number, (first, last) in fields(data, start, end):
        if kind == ENTRY:
            if number in (1, 2):
                entries[number] = bytes(data[first:last]).decode("utf-8", errors="replace")
            continue
        child = SUBMESSAGES[kind].get(number)
        if child == ENTRY:
            entry = next(external_references(data, first, last, ENTRY, depth))
            entries[entry.get(1, "")] = entry.get(2, "")
        elif child is not None:
            yield from external_references(data, first, last, child, depth)
    if kind == ENTRY:
        yield entries
    elif kind == TENSOR and entries:
        yield entries


def check_model_file(path: str | Path) -> None:
    """Raise ``ModelFileError`` unless ``path`` is a protobuf whose external data stays safely in its folder."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise ModelFileError(f"{str(path)!r} is {size:,} bytes, over protobuf's 2 GiB limit: it is not an ONNX model")
    if size == 0:
        raise ModelFileError(f"{str(path)!r} is empty; is it a complete .onnx file?")
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        try:
            references = list(external_references(data, 0, size))
        except Malformed as exc:
            raise ModelFileError(
                f"{str(path)!r} is not a well-formed ONNX file ({exc}); it is truncated or not a model"
            ) from None
    for reference in references:
        check_reference(path, reference)


def check_reference(model: Path, reference: dict) -> None:
    location = reference.get("location", "")
    refuse = f"{str(model)!r} keeps tensor data in {location!r}"
    if not location or os.path.isabs(location) or ".." in Path(location).parts or "\\" in location:
        raise ModelFileError(
            f"{refuse}: external data must be a relative path inside the model's folder; the model is refused "
            "unread (a model from an untrusted source can point anywhere)"
        )
    if ORT_MEMORY_MARKER in location:
        raise ModelFileError(
            f"{refuse}: ONNX Runtime reads that name as a memory address, not a file; the model is refused unread"
        )
    folder = model.parent
    current = folder
    for part in Path(location).parts:
        current = current / part
        if current.is_symlink():
            raise ModelFileError(f"{refuse}: {str(current)!r} is a symbolic link; the model is refused unread")
    target = folder / location
    if not target.resolve().is_relative_to(folder.resolve()):
        raise ModelFileError(f"{refuse}: it resolves outside the model's folder; the model is refused unread")
    if not target.is_file():
        raise ModelFileError(f"{refuse}, which does not exist beside it; copy the data file with the model")
    stat = target.stat()
    if stat.st_nlink > 1:
        raise ModelFileError(f"{refuse}, a file with other hard links; the model is refused unread")
    try:
        offset, length = int(reference.get("offset", 0)), int(reference.get("length", stat.st_size))
    except ValueError:
        raise ModelFileError(f"{refuse} with an offset or length that is not a number") from None
    if offset < 0 or length < 0 or offset + length > stat.st_size:
        raise ModelFileError(
            f"{refuse} at bytes {offset}..{offset + length}, beyond its {stat.st_size:,} bytes; the data file is "
            "truncated or the model is damaged"
        )
