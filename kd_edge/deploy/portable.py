"""ONNX files that the runtime a board carries can load, not only the host's.

Exporters and ONNX Runtime's quantizer stamp what the host has: the exporter's IR version, node
metadata (an IR 10 field), and, from ``quant_pre_process``, an opset import for every domain the
host's ONNX Runtime knows (``ai.onnx.ml`` 5, ``com.microsoft.nchwc``...), which runtimes before 1.18
refuse ("official support for domain ai.onnx.ml is till opset 4") although no node uses them. A
portable file keeps the opset imports its nodes use, the oldest IR version that carries them, and
none of the fields later IR versions added.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_DOMAINS = ("", "ai.onnx")


def make_portable(proto):
    """``proto`` (an onnx.ModelProto), changed in place and returned."""
    import onnx

    used = {node.domain for node in all_nodes(proto)} | {f.domain for f in proto.functions}
    kept = [o for o in proto.opset_import if o.domain in DEFAULT_DOMAINS or o.domain in used]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)
    for item in metadata_holders(proto):
        if has_repeated(item, "metadata_props"):
            del item.metadata_props[:]
    proto.ir_version = onnx.helper.find_min_ir_version_for(list(proto.opset_import), ignore_unknown=True)
    return proto


def make_file_portable(path: str | Path) -> None:
    """The ONNX file at ``path``, made portable in place (atomically)."""
    import onnx

    from kd_edge.io import atomic_write

    proto = make_portable(onnx.load(str(path)))
    data = proto.SerializeToString()
    atomic_write(path, lambda handle: handle.write(data))


def all_nodes(proto):
    """Every node of the model: the main graph's, its subgraphs', and its functions'."""
    graphs = [proto.graph]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            yield node
            graphs += [a.g for a in node.attribute if a.HasField("g")] + [g for a in node.attribute for g in a.graphs]
    for function in proto.functions:
        yield from function.node


def metadata_holders(proto):
    """The parts of a model that IR 10 gave ``metadata_props`` (the model's own, the card, is older and kept)."""
    graph = proto.graph
    yield graph
    yield from all_nodes(proto)
    yield from (*graph.input, *graph.output, *graph.value_info, *graph.initializer)
    yield from proto.functions


def has_repeated(message, name: str) -> bool:
    return any(field.name == name for field in message.DESCRIPTOR.fields)
