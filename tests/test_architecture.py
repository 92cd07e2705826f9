"""The shape of the code: one variant registry, named constants, no ad-hoc state (sizes and layers: test_layout.py)."""

import ast
import dataclasses
import os
import re

import pytest
import torch

from hf_cft import CFTConfig, CFTEngine, fit_cft
from hf_cft.engine.config import RUNTIME_FIELDS, keyword_fields
from hf_cft.engine.variants import AUTO, COMMON_FIELDS, VARIANTS, Variant, get_variant, register_variant

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = dict(show_progress=False, patience=None, selection_rule="strict")


def _docs_example() -> str:
    """The worked example of docs/architecture.md: the python block after 'Adding a variant'."""
    text = open(os.path.join(ROOT, "docs", "architecture.md"), encoding="utf-8").read()
    section = text.split("## Adding a variant", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def example_variant():
    """Registers the docs' example variant for one test, and removes it after."""
    before = dict(VARIANTS)
    namespace: dict = {}
    exec(compile(_docs_example(), "docs/architecture.md", "exec"), namespace)  # noqa: S102 - our own docs
    yield namespace
    VARIANTS.clear()
    VARIANTS.update(before)


def test_the_docs_example_adds_a_variant_everywhere(example_variant, planted, tmp_path):
    from hf_cft.card import card_hyperparameters
    from hf_cft.recipe import RecipeArguments

    x, y, m, w0, b0 = planted(n=800, d=8, c=4)  # a trained head with noisy rows: random moves can help
    cfg = CFTConfig(variant="random_search", **FAST)
    assert cfg.random_search_draws == 20 and CFTConfig(random_search_draws=5).random_search_draws == 5
    with pytest.raises(ValueError, match="random_search_draws"):  # its options dataclass checks its fields
        CFTConfig(variant="random_search", random_search_draws=0)
    res = fit_cft(x, y, m, w0, b0, cfg)
    changed = [r for r in res.report if r.changed]
    assert changed and all(r.variant == "random_search" and r.detail == f"draw {r.best_step}" for r in changed)
    assert all(r.best_score > r.original_score for r in changed)
    torch.testing.assert_close(res.bias, torch.as_tensor(b0))  # the example moves weights only
    assert not torch.equal(res.weight, torch.as_tensor(w0))
    again = fit_cft(x, y, m, w0, b0, cfg)  # seeded per block by the engine: the same rows
    assert torch.equal(again.weight, res.weight)
    fewer = fit_cft(x, y, m, w0, b0, CFTConfig(variant="random_search", random_search_draws=3, **FAST))
    assert max(r.best_step for r in fewer.report) <= 3  # its options reach its runner
    hyper = card_hyperparameters(res.config)
    assert hyper["variant"] == "random_search" and not {"epochs", "generations", "refit_l2"} & set(hyper)
    assert hyper["random_search_draws"] == 20  # its options are saved and shown as its settings
    assert CFTConfig.from_dict(res.config.to_dict()) == res.config
    assert RecipeArguments(variant=["random_search", "refit", "auto"]).variant[0] == "random_search"
    # auto combines it with the built-in variants, and the default crossfit rule judges it like them
    auto = fit_cft(x, y, m, w0, b0, CFTConfig(variant="auto", auto_variants=["random_search", "bp"], epochs=10,
                                              selection_bootstrap=20, show_progress=False))
    assert all(set(r.candidates) >= {"random_search", "bp"} for r in auto.report if r.skipped is None)


def test_unknown_variants_are_refused_everywhere():
    from hf_cft.engine.variants.bp import BPOptions
    from hf_cft.recipe import RecipeArguments

    with pytest.raises(ValueError, match="random_search"):
        CFTConfig(variant="random_search")
    with pytest.raises(ValueError, match="auto_variants"):
        CFTConfig(variant="auto", auto_variants=["random_search"])
    with pytest.raises(ValueError, match="--variant"):
        RecipeArguments(variant=["random_search"])
    with pytest.raises(ValueError, match="registered"):
        get_variant("random_search")
    with pytest.raises(ValueError, match="not 'auto'"):
        register_variant(Variant(AUTO, lambda task: None, lambda o: 1, lambda o: 1))
    with pytest.raises(ValueError, match="do not have"):
        register_variant(Variant("x", lambda task: None, lambda o: 1, lambda o: 1, card_fields=("no_such_field",)))
    with pytest.raises(ValueError, match="named like settings of others"):  # an option belongs to one variant
        register_variant(Variant("x", lambda task: None, lambda o: 1, lambda o: 1, options=BPOptions))

    @dataclasses.dataclass
    class Seeded:
        seed: int = 0  # a shared setting's name

    with pytest.raises(ValueError, match="named like settings of others"):
        register_variant(Variant("x", lambda task: None, lambda o: 1, lambda o: 1, options=Seeded))
    assert "x" not in VARIANTS


def test_every_config_keyword_is_common_or_owned_by_one_variant():
    """A CFTConfig keyword says who reads it: the shared settings, or one variant's options (with its help text:
    every keyword is a recipe flag)."""
    owners: dict[str, list[str]] = {}
    for v in VARIANTS.values():
        for f in v.fields:
            owners.setdefault(f, []).append(v.name)
        assert set(v.hyperparameters()) <= set(v.fields)
    names = [f.name for f, _ in keyword_fields()]
    assert len(names) == len(set(names)) and set(names) == set(COMMON_FIELDS) | set(owners)
    assert not [f for f in names if f in COMMON_FIELDS and f in owners]  # claimed twice
    assert not {f: o for f, o in owners.items() if len(o) > 1}
    assert all(f.metadata.get("help") for f, _ in keyword_fields())
    assert [f.name for f, _ in keyword_fields()][-len(RUNTIME_FIELDS):] == list(RUNTIME_FIELDS)  # --help: last


def test_the_engine_layers_import_downward():
    """The registry imports no variant; a variant imports neither the config, the engine nor another variant."""
    engine = os.path.join(ROOT, "hf_cft", "engine")

    def own_imports(path: str) -> set[str]:
        tree = ast.parse(open(path, encoding="utf-8").read())
        found = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]
        return {("." * n.level) + (n.module or "") for n in found}

    assert own_imports(os.path.join(engine, "registry.py")) <= {".selection"}  # annotations only
    for name in ("bp", "ga", "pygad", "refit"):
        got = own_imports(os.path.join(engine, "variants", f"{name}.py"))
        assert not {i for i in got if i.split(".")[-1] in ("config", "engine", "blocks", "decide", "bp", "ga",
                                                           "pygad", "refit")}, (name, got)


def test_card_lists_the_settings_of_the_variants_that_ran():
    from hf_cft.card import card_hyperparameters

    ga = card_hyperparameters(CFTConfig(variant="ga", selection_rule="strict"))
    assert {"generations", "population_size", "variant", "metric"} <= set(ga)
    assert not {"epochs", "refit_l2", "selection_folds"} & set(ga)
    auto = card_hyperparameters(CFTConfig(variant="auto", auto_variants=["pygad", "bp"]))
    assert {"pygad_generations", "epochs", "auto_variants", "selection_metric"} <= set(auto)
    assert auto["selection_metric"] == "auroc" and "selection_folds" not in auto  # what rows were selected by
    assert "refit_l2" not in auto and "wmw_gamma" not in auto  # bp's card shows its main settings only


def test_the_engine_keeps_no_per_call_state(planted, tmp_path):
    x, y, m, w0, b0 = planted(n=300, d=6, c=4)
    cfg = CFTConfig(variant="bp", epochs=3, block_memory_mb=0.005, **FAST)  # several blocks: two shards
    engine = CFTEngine(cfg)
    part = engine.fit(x, y, m, w0, b0, shard=(0, 2), checkpoint_dir=str(tmp_path))
    assert vars(engine) == {"config": cfg}
    whole = engine.fit(x, y, m, w0, b0)  # the shard and the folder of the call before do not leak into this one
    assert not [r for r in whole.report if r.skipped == "in another shard"]
    assert [r for r in part.report if r.skipped == "in another shard"]
    assert len(os.listdir(tmp_path)) > 0


def test_shared_names_are_defined_once():
    """Skip reasons and output file names are matched across modules: they must come from hf_cft.constants."""
    from hf_cft import constants

    names = [v for k, v in vars(constants).items() if k.isupper() and isinstance(v, str)]
    for dirpath, _, files in os.walk(os.path.join(ROOT, "hf_cft")):
        for f in files:
            if not f.endswith(".py") or f == "constants.py":
                continue
            source = open(os.path.join(dirpath, f), encoding="utf-8").read()
            for name in names:
                assert f'"{name}"' not in source, f"{f} spells {name!r}: use hf_cft.constants"


def test_writes_are_atomic(tmp_path):
    from hf_cft.io import atomic_path, write_atomic

    path = tmp_path / "a.json"
    write_atomic(path, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("killed")
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["a.json"]
    write_atomic(path, b"\x00new")
    assert path.read_bytes() == b"\x00new"
