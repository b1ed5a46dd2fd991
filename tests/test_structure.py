"""The package's shape: no import cycles, a runtime below everything else, no process-wide side effects."""

import ast
import subprocess
import sys
from pathlib import Path

import torch

PACKAGE = Path(__file__).resolve().parent.parent / "kd_edge"
# What the torch-free runtime may import from the rest of kd-edge: errors, atomic writes,
# and the numpy-only data readers (for `bench --dataset`).
RUNTIME_MAY_IMPORT = ("kd_edge.runtime", "kd_edge.errors", "kd_edge.io", "kd_edge.log", "kd_edge.data")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Every kd_edge module ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            # `from kd_edge.data import sources` imports a submodule, not a name
            found |= {f"{node.module}.{alias.name}" for alias in node.names if f"{node.module}.{alias.name}" in modules}
    return {name for name in found if name in modules}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: imports_of(path, set(paths)) - {name} for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}

    def visit(node, trail):
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return [*trail[trail.index(target) :], target] if target in trail else [node, target]
            if target not in state and (cycle := visit(target, [*trail, target])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_the_graph_sees_real_imports():
    graph = import_graph()
    assert "kd_edge.runtime.card" in graph["kd_edge.runtime.session"]
    assert "kd_edge.data.sources" in graph["kd_edge.data"]  # a submodule imported by name
    assert "kd_edge.deploy.quantize" in graph["kd_edge.cli"]  # imports inside functions count


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None


def test_runtime_imports_only_the_layers_below_it():
    graph = import_graph()
    for module, targets in graph.items():
        if module.startswith("kd_edge.runtime"):
            outside = sorted(t for t in targets if not t.startswith(RUNTIME_MAY_IMPORT))
            assert not outside, f"{module} reaches up into {outside}"


def test_export_and_quantize_do_not_call_each_other():
    graph = import_graph()
    assert (
        "kd_edge.deploy.quantize" not in graph["kd_edge.deploy.export"]
        and "kd_edge.deploy.export" not in graph["kd_edge.deploy.quantize"]
    )


def test_importing_the_package_and_runtime_pulls_in_no_torch_or_onnx():
    code = (
        "import sys, kd_edge, kd_edge.runtime, kd_edge.data\n"
        "print(sorted(m for m in ('torch', 'onnx', 'torchvision') if m in sys.modules))"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    )


def test_training_leaves_torch_global_state_as_it_was(tmp_path, easy_npz):
    from kd_edge.settings import DataSettings, NetworkSettings, OptimSettings, RunSettings, TeacherSettings
    from kd_edge.training.distill import train_teacher

    torch.manual_seed(1234)
    expected_next_draw = torch.rand(3)
    torch.manual_seed(1234)
    threads = torch.get_num_threads()
    settings = TeacherSettings(
        data=DataSettings(dataset=f"npz:{easy_npz}"),
        teacher=NetworkSettings(model="cnn-tiny", epochs=1, steps=1),
        optim=OptimSettings(batch_size=32),
        run=RunSettings(seed=7, threads=1),
    )
    train_teacher(settings, tmp_path / "run")
    assert torch.equal(torch.rand(3), expected_next_draw)  # the caller's RNG stream is untouched
    assert torch.get_num_threads() == threads
