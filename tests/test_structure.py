"""The package's shape: layers that import only downwards, stages that never call each other, one job a file,
no import cycles, no process-wide side effects."""

import ast
import subprocess
import sys
from pathlib import Path

import torch

PACKAGE = Path(__file__).resolve().parent.parent / "kd_edge"
# Layers, lowest first: a module may import its own layer and the ones below, never one above.
LAYERS = (
    ("kd_edge", "kd_edge.errors", "kd_edge.io", "kd_edge.log", "kd_edge.interrupt"),  # standard library only
    ("kd_edge.settings",),  # every option's owner: standard library only
    ("kd_edge.data",),  # numpy: datasets as arrays
    ("kd_edge.runtime",),  # numpy and onnxruntime: what the board installs
    ("kd_edge.training",),  # torch
    ("kd_edge.deploy",),  # torch -> ONNX, INT8, bundles
    ("kd_edge.search", "kd_edge.pipeline"),  # orchestrators, side by side: neither imports the other
    ("kd_edge.cli",),
)
# The stages: entry points that never import one another (only kd_edge.pipeline and kd_edge.search chain them).
STAGES = (
    "kd_edge.training.distill",
    "kd_edge.deploy.export",
    "kd_edge.deploy.quantize",
    "kd_edge.deploy.qat",
    "kd_edge.deploy.bundle",
    "kd_edge.deploy.verify_arm",
    "kd_edge.pipeline.report",
)
MAX_LINES = 600


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
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py") if path.name != "__main__.py"}
    return {name: imports_of(path, set(paths)) - {name} for name, path in paths.items()}


def layer_of(module: str) -> int:
    for number, layer in reversed(list(enumerate(LAYERS))):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in layer if prefix != "kd_edge"):
            return number
    return 0


def group_of(module: str) -> str:
    return ".".join(module.split(".")[:2])


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


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
    assert "kd_edge.deploy.quantize" in graph["kd_edge.cli.deploy_commands"]  # imports inside functions count
    assert layer_of("kd_edge.runtime.bench.harness") == 3 and layer_of("kd_edge.errors") == 0


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None


def test_every_layer_imports_only_itself_and_the_layers_below():
    """The runtime never reaches training (nor torch: see below); data never reaches the runtime; the settings
    depend on nothing but the standard library's layer; search and pipeline do not import each other."""
    upward = [
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        for target in targets
        if layer_of(target) > layer_of(module)
        or (layer_of(target) == layer_of(module) == 6 and group_of(target) != group_of(module))
    ]
    assert not upward, upward


def test_no_stage_imports_another_stage():
    graph = import_graph()
    for stage in STAGES:
        others = sorted(reachable(graph, stage) & (set(STAGES) - {stage}))
        assert not others, f"{stage} reaches {others}: chain stages in kd_edge.pipeline"


def test_every_file_is_short_and_no_two_share_a_name():
    files = [path for path in PACKAGE.rglob("*.py") if path.name not in ("__init__.py", "__main__.py")]
    long = {
        str(path.relative_to(PACKAGE)): n for path in files if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, long
    names = [path.name for path in files]
    assert not {name for name in names if names.count(name) > 1}


def test_importing_the_package_runtime_settings_and_cli_pulls_in_no_torch_or_onnx():
    code = (
        "import sys, kd_edge, kd_edge.runtime, kd_edge.data, kd_edge.settings.commands, kd_edge.cli\n"
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
        run=RunSettings(seed=7, threads=threads + 1),  # a change the test can see undone
    )
    train_teacher(settings, tmp_path / "run")
    assert torch.equal(torch.rand(3), expected_next_draw)  # the caller's RNG stream is untouched
    assert torch.get_num_threads() == threads
