"""The package's layout, read from the source: no import cycles, imports only downward through the layers,
short functions, classes and modules, few long parameter lists, no hidden imports of the package's own modules.

``docs/architecture.md`` draws the same layers; change both together.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "hf_cft")

MAX_FUNCTION_LINES = 60
MAX_CLASS_LINES = 250
MAX_MODULE_LINES = 400
MAX_PARAMETERS = 8
MAX_LONG_SIGNATURES = 3  # public entry points only (fit_cft, CFTEngine.fit, ...)

# a module's layer is that of the longest prefix listed; imports go to the same layer or below
LAYERS = {
    "hf_cft": 0,  # the package root: lazy re-exports only
    "hf_cft.io": 0,
    "hf_cft.constants": 0,
    "hf_cft.labels": 0,
    "hf_cft.sparse": 0,
    "hf_cft.losses": 0,
    "hf_cft.metrics": 1,
    "hf_cft.modeling": 2,
    "hf_cft.features": 2,
    "hf_cft.data": 2,
    "hf_cft.engine": 3,
    "hf_cft.evaluation": 4,
    "hf_cft.card": 4,
    "hf_cft.decisions": 4,  # calibration folded into the rows, per-category thresholds
    "hf_cft.tracking": 4,  # experiment trackers (accelerate's log_with) for the trainer and the recipe
    "hf_cft.hub": 4,
    "hf_cft.head": 5,
    "hf_cft.predict": 5,  # predict_labels: label sets at a model's saved thresholds
    "hf_cft.training": 5,
    "hf_cft.launch": 5,
    "hf_cft.recipe": 6,
    "hf_cft.cli": 7,  # the hf-cft command
    "hf_cft.app": 7,  # the Gradio page / Space
}
# heavy or optional third-party modules that may be imported inside a function (to keep `import hf_cft` light)
LAZY_OK = {"torch", "transformers", "datasets", "timm", "matplotlib", "pygad", "sklearn", "scipy", "accelerate",
           "evaluate", "huggingface_hub", "torchvision", "PIL", "safetensors", "gradio", "wandb", "trackio", "mlflow",
           "tensorboard", "yaml", "tqdm", "importlib"}


def _modules() -> dict[str, tuple[str, bool]]:
    """Module name -> (path, is a package's __init__)."""
    out = {}
    for dirpath, _, files in os.walk(PACKAGE):
        for f in sorted(files):
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
                is_pkg = parts[-1] == "__init__"
                out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


MODULES = _modules()


def _tree(path: str) -> ast.Module:
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read())


def _targets(module: str, is_pkg: bool, node: ast.AST) -> Iterator[str]:
    """The hf_cft modules an import statement loads."""
    if isinstance(node, ast.Import):
        yield from (a.name for a in node.names if a.name in MODULES)
        return
    if not isinstance(node, ast.ImportFrom):
        return
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    for alias in node.names:
        for candidate in (f"{target}.{alias.name}", target):
            if candidate in MODULES:
                yield candidate
                break


def _edges() -> dict[str, set[str]]:
    """Module -> the hf_cft modules it imports (inside functions too); a package's ``__init__`` re-exporting its
    own children, and a child importing its package, are not design edges."""
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, (path, is_pkg) in MODULES.items():
        for node in ast.walk(_tree(path)):
            for t in _targets(module, is_pkg, node):
                own_child = is_pkg and t.startswith(module + ".")
                own_parent = MODULES[t][1] and module.startswith(t + ".")
                if t != module and not own_child and not own_parent:
                    edges[module].add(t)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def _layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = _cycles(_edges())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_every_module_has_a_layer():
    assert all(any(m == p or m.startswith(p + ".") for p in LAYERS if p != "hf_cft") or m == "hf_cft"
               for m in MODULES), [m for m in MODULES if _layer(m) == 0 and m.count(".") and
                                   not any(m == p or m.startswith(p + ".") for p in LAYERS if p != "hf_cft")]


def test_imports_go_only_downward():
    up = [f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
          for m, targets in _edges().items() if m != "hf_cft" for t in sorted(targets) if _layer(t) > _layer(m)]
    assert not up, "\n".join(up)


def test_variants_do_not_import_each_other():
    """A variant is one module that plugs into the engine; what two variants share lives in the engine."""
    prefix = "hf_cft.engine.variants."
    crossed = [f"{m} imports {t}" for m, targets in _edges().items() if m.startswith(prefix)
               for t in sorted(targets) if t.startswith(prefix)]
    assert not crossed, "\n".join(crossed)


def _functions() -> Iterator[tuple[str, ast.FunctionDef]]:
    for module, (path, _) in MODULES.items():
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield module, node


def test_functions_are_short():
    long = [f"{m}.{f.name} ({f.end_lineno - f.lineno + 1} lines)" for m, f in _functions()
            if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, "split these into named steps: " + ", ".join(long)


def test_classes_and_modules_are_small():
    big = []
    for module, (path, _) in MODULES.items():
        tree = _tree(path)
        with open(path, encoding="utf-8") as f:
            n = len(f.read().splitlines())
        if n > MAX_MODULE_LINES:
            big.append(f"module {module} ({n} lines)")
        big += [f"class {module}.{c.name} ({c.end_lineno - c.lineno + 1} lines)" for c in ast.walk(tree)
                if isinstance(c, ast.ClassDef) and c.end_lineno - c.lineno + 1 > MAX_CLASS_LINES]
    assert not big, ", ".join(big)


def _parameters(f: ast.FunctionDef) -> int:
    a = f.args
    names = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
    return len(names) - (1 if names and names[0] in ("self", "cls") else 0)


def test_few_long_parameter_lists_and_only_public_ones():
    long = [(m, f) for m, f in _functions() if _parameters(f) > MAX_PARAMETERS]
    names = [f"{m}.{f.name} ({_parameters(f)})" for m, f in long]
    assert len(long) <= MAX_LONG_SIGNATURES, "pass a small object instead: " + ", ".join(names)
    assert all(not f.name.startswith("_") for _, f in long), names


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_hidden_imports_inside_functions(module):
    """An own module imported inside a function hides a dependency (often a cycle); only heavy or optional
    third-party modules are imported late."""
    path, is_pkg = MODULES[module]
    hidden = []
    for _, f in ((module, f) for f in ast.walk(_tree(path)) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))):
        for node in ast.walk(f):
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            hidden += [f"{f.name}:{node.lineno} {n}" for n in names if n.startswith(".") or n.split(".")[0] == "hf_cft"
                       or n.split(".")[0] not in LAZY_OK]
    assert not hidden, f"{module}: import these at the top of the module: {sorted(set(hidden))}"
