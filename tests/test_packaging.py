"""Packaging: every third-party module the package and recipes import is declared; `import hf_cft` stays light."""

import ast
import importlib.metadata as md
import os
import re
import subprocess
import sys

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# import names whose distribution name differs, for modules not installed where the test runs
ALIASES = {"PIL": "pillow", "sklearn": "scikit-learn", "yaml": "pyyaml"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    reqs = [*project.get("dependencies", []), *(r for extra in project.get("optional-dependencies", {}).values()
                                                for r in extra)]
    return {_norm(re.split(r"[ <>=!~;\[]", r, maxsplit=1)[0]) for r in reqs}


def _imports(folder: str):
    for dirpath, _, files in os.walk(folder):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    mods = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    mods = [node.module]
                else:
                    continue
                for mod in mods:
                    yield mod.split(".")[0], f"{os.path.relpath(path, ROOT)}:{node.lineno}"


def _undeclared(folders) -> dict[str, str]:
    declared = _declared()
    dists = md.packages_distributions()
    missing = {}
    for folder in folders:
        for top, where in _imports(folder):
            if top in sys.stdlib_module_names or top in ("hf_cft", "__future__"):
                continue
            names = {_norm(d) for d in dists.get(top, [ALIASES.get(top, top)])}
            if not names & declared:
                missing.setdefault(top, where)
    return missing


def test_every_import_is_declared():
    missing = _undeclared([os.path.join(ROOT, "hf_cft"), os.path.join(ROOT, "recipes")])
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_the_check_sees_an_undeclared_import(tmp_path):
    """The check is not vacuous: an import outside the declared set is reported, declared ones are not."""
    (tmp_path / "mod.py").write_text("import os\nimport yaml\nfrom matplotlib import pyplot\n"
                                     "def f():\n    import pytest_benchmark_nope.sub\n")
    assert list(_undeclared([str(tmp_path)])) == ["pytest_benchmark_nope"]


def test_import_is_light_and_names_resolve():
    code = ("import sys, hf_cft;"
            "heavy = [m for m in ('torch', 'transformers', 'datasets', 'timm') if m in sys.modules];"
            "assert not heavy, heavy;"
            "from hf_cft import CFTHead, CFTConfig, fit_cft, load_partial_dataset;"
            "assert CFTConfig().variant and callable(fit_cft) and callable(load_partial_dataset);"
            "assert CFTHead.__name__ == 'CFTHead' and 'torch' in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_unknown_attribute_is_an_attribute_error():
    import hf_cft

    try:
        hf_cft.not_a_name  # noqa: B018
    except AttributeError as err:
        assert "not_a_name" in str(err)
    else:
        raise AssertionError("expected AttributeError")


def _project() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_pyproject_declares_the_command_every_package_and_the_configurations():
    import fnmatch

    data = _project()
    assert data["project"]["scripts"]["hf-cft"] == "hf_cft.cli:main"
    packages = set(data["tool"]["setuptools"]["packages"])
    found = {os.path.relpath(d, ROOT).replace(os.sep, ".") for d, _, files in os.walk(os.path.join(ROOT, "hf_cft"))
             if "__init__.py" in files}
    assert found <= packages, f"packages missing from [tool.setuptools] packages: {sorted(found - packages)}"
    globs = data["tool"]["setuptools"]["package-data"]["hf_cft"]
    configs = [os.path.relpath(os.path.join(d, f), os.path.join(ROOT, "hf_cft")).replace(os.sep, "/")
               for d, _, files in os.walk(os.path.join(ROOT, "hf_cft", "configs")) for f in files]
    assert len(configs) >= 8 and all(any(fnmatch.fnmatch(c, g) for g in globs) for c in configs), configs
    extras = data["project"]["optional-dependencies"]
    assert all(name in extras for name in ("tracking", "tensorboard", "trackio", "wandb", "mlflow"))


def test_the_wheel_holds_the_command_and_the_configurations(tmp_path):
    """A wheel built from a copy of the tree (setuptools of this environment, no network): the cli package, every
    shipped configuration and the console script."""
    import shutil
    import zipfile

    pytest.importorskip("setuptools", reason="builds the wheel with this environment's setuptools")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    for folder in ("hf_cft", "model_cards"):
        shutil.copytree(os.path.join(ROOT, folder), src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                           "--no-index", "-w", str(tmp_path / "wheel")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "wheel").glob("hf_cft-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(os.path.relpath(os.path.join(d, f), ROOT).replace(os.sep, "/")
                     for d, _, files in os.walk(os.path.join(ROOT, "hf_cft", "configs")) for f in files)
    assert shipped and set(shipped) <= set(names)
    assert {"hf_cft/cli/__main__.py", "hf_cft/tracking.py", "hf_cft/model_cards/cft_model_card.md"} <= set(names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "hf-cft = hf_cft.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
