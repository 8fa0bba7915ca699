"""The packages' edges: memory_layers knows nothing of open_clip or memclip, memclip nothing of memclip_train, no two
folders import each other, and no module imports itself in a circle (imports inside functions count: a lazy import
that closes a circle still ties the two modules together)."""
import ast
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> Set[str]:
    """Every module ``path`` imports, by absolute name (relative imports resolved; ``from pkg import mod`` counts
    ``pkg.mod`` when that is a module)."""
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    names: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(package: str) -> Dict[str, Set[str]]:
    """Module -> the modules of ``package`` it imports; packages' ``__init__`` files are left out (they re-export
    what their modules define, which is no circle)."""
    files = {module_name(p): p for p in (SRC / package).rglob("*.py") if p.name != "__init__.py"}
    return {name: {m for m in imported_modules(path) if m in files and m != name} for name, path in files.items()}


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Every circle of ``graph`` once, starting from its smallest module name."""
    found = []
    for start in sorted(graph):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph[node]):
                if nxt == start:
                    found.append(path)
                elif nxt not in path and nxt > start:
                    stack.append((nxt, path + [nxt]))
    return found


def folder_of(module: str) -> Optional[str]:
    """The package folder (dotted) that holds ``module``: the package itself, or the folder of a module file; None
    outside src/ (or a name that is no module, such as a class in ``from pkg import Class``)."""
    path = SRC.joinpath(*module.split("."))
    if (path / "__init__.py").exists():
        return module
    return module.rpartition(".")[0] if path.with_suffix(".py").exists() else None


def folder_graph() -> Dict[str, Set[str]]:
    """Package folder -> the other package folders its own modules import (every package and subpackage of src/)."""
    graph: Dict[str, Set[str]] = {}
    for path in SRC.rglob("*.py"):
        folder = folder_of(module_name(path))
        imported = {folder_of(name) for name in imported_modules(path)} - {None, folder}
        graph.setdefault(folder, set()).update(imported)
    return graph


def two_way_ties(graph: Dict[str, Set[str]]) -> List[Tuple[str, str]]:
    """Pairs of folders that import each other (a package and its own subpackage too), each pair once (sorted)."""
    return sorted((a, b) for a in graph for b in graph[a] if a < b and a in graph.get(b, set()))


ALLOWED_TIES = {
    ("memclip_train", "memclip_train.eval"):
        "the sweep at the root checks --eval names and finds the eval program's result files; eval uses the root's "
        "shared modules (error_reporting, flag_types, progress, features, dataset_files, retrieval_metrics)",
    ("memclip_train", "memclip_train.eval.retrieval_sets"):
        "the sweep at the root checks --eval against the retrieval datasets; their readers use dataset_files",
    ("memclip_train", "memclip_train.synth"):
        "the root's training data streams synthetic batches; synth's program uses error_reporting and progress",
    ("memclip_train", "memclip_train.tasks"):
        "main, the trainer and bench_train at the root run the tasks; the tasks use params, distributed, trainable "
        "and retrieval_metrics",
    ("memclip_train", "memclip_train.zeroshot"):
        "training_zeroshot at the root runs zero-shot during training; the zero-shot core uses features, "
        "dataset_files and retrieval_metrics",
    ("memory_layers", "memory_layers.tools"):
        "memory_layers.bench and memory_layers.gpu_check keep `python -m memory_layers.bench|gpu_check` working",
}
"""The two-way ties left: each between a package's root and one of its own subpackages (the programs and shared
library modules at the root of memclip_train use the subpackages, which use those shared modules), with why."""


def unexpected_ties(graph: Dict[str, Set[str]]) -> List[Tuple[str, str]]:
    """The two-way ties of ``graph`` that :data:`ALLOWED_TIES` does not list."""
    return [tie for tie in two_way_ties(graph) if tie not in ALLOWED_TIES]


def test_no_two_folders_import_each_other():
    """Sibling folders (data and synth, eval and synth, ...), the three libraries, and a package and its subpackages
    (eval and eval.segmentation, ...) depend one way; the only exceptions are the package-root ties listed, each
    still there (a tie that goes leaves the list)."""
    graph = folder_graph()
    assert {"memory_layers", "memclip", "memclip_train", "memclip_train.data", "memclip_train.synth"} <= set(graph)
    assert unexpected_ties(graph) == []
    assert sorted(ALLOWED_TIES) == [tie for tie in two_way_ties(graph) if tie in ALLOWED_TIES]
    assert all("." not in root and sub.startswith(root + ".") for root, sub in ALLOWED_TIES)


def test_the_tie_finder_finds_a_tie():
    assert two_way_ties({"p.data": {"p.synth"}, "p.synth": {"p.data"}, "p": {"p.eval"}, "p.eval": {"p"}}) == [
        ("p", "p.eval"), ("p.data", "p.synth")]


def test_a_tie_outside_the_list_is_unexpected():
    """A new tie between a package and its subpackage (eval and eval.segmentation) fails; a listed one does not."""
    graph = {"memclip_train": {"memclip_train.eval"}, "memclip_train.eval": {"memclip_train",
                                                                            "memclip_train.eval.segmentation"},
             "memclip_train.eval.segmentation": {"memclip_train.eval"}}
    assert unexpected_ties(graph) == [("memclip_train.eval", "memclip_train.eval.segmentation")]


def test_memclip_never_imports_memclip_train():
    """The library stands below the programs: memclip (and memory_layers) import nothing of memclip_train."""
    for package in ("memclip", "memory_layers"):
        for path in (SRC / package).rglob("*.py"):
            assert not {m for m in imported_modules(path) if m.split(".")[0] == "memclip_train"}, (
                f"{path.relative_to(SRC)} imports memclip_train")


def test_memory_layers_imports_neither_open_clip_nor_memclip():
    for path in (SRC / "memory_layers").rglob("*.py"):
        outside = {m.split(".")[0] for m in imported_modules(path)} & {"open_clip", "open_clip_train", "memclip",
                                                                        "memclip_train"}
        assert not outside, f"{path.relative_to(SRC)} imports {sorted(outside)}"


@pytest.mark.parametrize("package", ["memory_layers", "memclip", "memclip_train"])
def test_no_import_circles(package):
    assert cycles(import_graph(package)) == []


def test_the_circle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


TRAINER_MUST_NOT_LOAD = ("memclip_train.eval", "memclip_train.synth")


@pytest.mark.slow
def test_importing_the_trainer_loads_neither_the_eval_program_nor_synth():
    """The training loop stands below the programs: importing it (in a fresh interpreter) loads no module of the eval
    program, nor any of the synthetic world."""
    probe = ("import sys, memclip_train.trainer; "
             f"print('\\n'.join(m for m in sys.modules if m.startswith({TRAINER_MUST_NOT_LOAD!r})))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []


def torch_load_calls(path: Path) -> List[ast.Call]:
    """Every call of ``torch.load`` (also ``torch.serialization.load`` and a ``load`` imported from torch) in a file."""
    tree = ast.parse(path.read_text())
    imported = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and node.module in ("torch", "torch.serialization") for alias in node.names if alias.name == "load"}
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        dotted = ast.unparse(func)
        if dotted in ("torch.load", "torch.serialization.load") or (isinstance(func, ast.Name) and func.id in imported):
            calls.append(node)
    return calls


def test_every_torch_load_is_weights_only():
    """A pickle can run code when it is loaded: every torch.load in the project (programs, scripts and tests) passes
    weights_only=True, literally, so no setting of TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD and no torch before 2.6 (whose
    default is False) can turn it off."""
    root = SRC.parent
    files = [p for folder in ("src", "scripts", "tests") for p in (root / folder).rglob("*.py")]
    unsafe, count = [], 0
    for path in files:
        for call in torch_load_calls(path):
            count += 1
            safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                       for k in call.keywords)
            if not safe:
                unsafe.append(f"{path.relative_to(root)}:{call.lineno}: {ast.unparse(call)}")
    assert count >= 3, "the search finds the project's torch.load calls"
    assert not unsafe, "torch.load without weights_only=True:\n" + "\n".join(unsafe)
