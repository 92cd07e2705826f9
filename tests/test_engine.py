import json
import logging
import os

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from hf_cft import CFTConfig, CFTEngine, fit_cft
from hf_cft.engine.blocks import make_blocks
from hf_cft.engine.views import Split, ViewFactory
from hf_cft.losses import asymmetric_loss

FAST = dict(show_progress=False, patience=None, selection_rule="strict")  # the paper's rule: exact equivalences


def _holdout(n, cfg):
    perm = np.random.default_rng(cfg.seed).permutation(n)
    k = int(round(cfg.selection_fraction * n))
    return np.sort(perm[k:]), np.sort(perm[:k])


def _score(metric, w, b, x, y, m):
    s = x @ w + b
    fn = average_precision_score if metric == "ap" else roc_auc_score
    return fn(y[m], s[m])


@pytest.mark.parametrize("optimizer", ["adam", "gd"])
def test_bp_batched_equals_independent_per_row_loop(planted, optimizer):
    x, y, m, w0, b0 = planted(n=400, d=10, c=4, known=0.5)
    x, w0, b0 = x.astype(np.float64), w0.astype(np.float64), b0.astype(np.float64)
    cfg = CFTConfig(variant="bp", epochs=60, lr=0.05 if optimizer == "adam" else 0.002, patience=5,
                    show_progress=False, selection_rule="strict", bp_optimizer=optimizer)
    res = fit_cft(x, y, m, w0, b0, cfg)
    fit_rows, sel_rows = _holdout(len(x), cfg)
    for c in range(4):  # an independent, plain per-row implementation
        rf, rs = fit_rows[m[fit_rows, c]], sel_rows[m[sel_rows, c]]
        xf, yf = torch.from_numpy(x[rf]), torch.from_numpy(y[rf, c])
        w = torch.tensor(w0[c], requires_grad=True)
        b = torch.tensor(b0[c], requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=cfg.lr) if optimizer == "adam" else torch.optim.SGD([w, b], lr=cfg.lr)
        best = _score("ap", w0[c], b0[c], x[rs], y[rs, c], np.ones(len(rs), bool))
        best_w, best_b, best_step, stale = w0[c].copy(), b0[c], 0, 0
        for epoch in range(1, cfg.epochs + 1):
            opt.zero_grad()
            asymmetric_loss(xf @ w + b, yf, None, cfg.gamma_neg, cfg.gamma_pos, cfg.clip).backward()
            opt.step()
            s = _score("ap", w.detach().numpy(), float(b.detach()), x[rs], y[rs, c], np.ones(len(rs), bool))
            if s > best:
                best, best_w, best_b, best_step, stale = s, w.detach().numpy().copy(), float(b.detach()), epoch, 0
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
        r = res.report[c]
        assert r.best_step == best_step
        assert r.best_score == pytest.approx(best, abs=1e-9)
        np.testing.assert_allclose(res.weight[c].numpy(), best_w, atol=1e-9)
        assert float(res.bias[c]) == pytest.approx(best_b, abs=1e-9)
    assert res.n_changed > 0


@pytest.mark.parametrize("metric", ["ap", "auroc"])
def test_ga_raises_fitness_and_never_worsens_selection(planted, metric):
    x, y, m, w0, b0 = planted(n=1200, d=16, c=4, known=0.5, noise=1.5)
    cfg = CFTConfig(variant="ga", metric=metric, generations=150, population_size=20, mutation_range=0.05,
                    **FAST)
    res = fit_cft(x, y, m, w0, b0, cfg)
    fit_rows, sel_rows = _holdout(len(x), cfg)
    w, b = res.weight.numpy(), res.bias.numpy()
    gains = []
    for c, r in enumerate(res.report):
        assert r.skipped is None
        sel = _score(metric, w[c], b[c], x[sel_rows], y[sel_rows, c], m[sel_rows, c])
        orig = _score(metric, w0[c], b0[c], x[sel_rows], y[sel_rows, c], m[sel_rows, c])
        assert r.original_score == pytest.approx(orig, abs=1e-5)
        assert sel == pytest.approx(r.best_score, abs=1e-5)
        assert sel >= orig - 1e-6
        fit_before = _score(metric, w0[c], b0[c], x[fit_rows], y[fit_rows, c], m[fit_rows, c])
        fit_after = _score(metric, w[c], b[c], x[fit_rows], y[fit_rows, c], m[fit_rows, c])
        gains.append(fit_after - fit_before)
        if r.best_step == 0:
            np.testing.assert_array_equal(w[c], w0[c])
    assert res.n_changed >= 2
    assert np.mean(gains) > 0.005  # the GA climbs its fitness on the planted problem
    assert not np.allclose(b, b0)  # the bias evolves too (the reference code's bug is not reproduced)


def test_pygad_backend_selection_rule_and_determinism(planted):
    x, y, m, w0, b0 = planted(n=600, d=8, c=3, known=0.6)
    cfg = CFTConfig(variant="pygad", metric="auroc", pygad_generations=30, pygad_mutation_range=0.05, **FAST)
    res = fit_cft(x, y, m, w0, b0, cfg)
    again = fit_cft(x, y, m, w0, b0, cfg)
    assert torch.equal(res.weight, again.weight) and torch.equal(res.bias, again.bias)
    for r in res.report:
        assert r.best_score >= r.original_score
        assert r.steps_run == 30
    assert res.n_changed >= 1


def test_sparse_labels_are_gathered_and_match_dense(planted):
    x, y, m, w0, b0 = planted(n=3000, d=8, c=6, known=0.02, seed=4)
    x, w0, b0 = x.astype(np.float64), w0.astype(np.float64), b0.astype(np.float64)
    base = dict(variant="bp", epochs=40, lr=0.05, **FAST)
    split = Split.from_arrays(x, y, m, "training")
    factory = ViewFactory(split, torch.device("cpu"), torch.float64, dense_threshold=0.5)
    assert not factory.dense.any()
    blocks = make_blocks(list(range(6)), factory, factory, 8, 1, 1e9)
    views = [factory.view(b) for b in blocks]
    assert all(v.kind == "gathered" for v in views)
    # memory follows the known pairs: padded rows are at most the largest known count per category
    assert sum(v.x.shape[0] * v.x.shape[1] for v in views) <= 6 * int(m.sum(0).max())
    assert sum(v.x.shape[0] * v.x.shape[1] for v in views) < 0.1 * m.size
    sparse = fit_cft(x, y, m, w0, b0, CFTConfig(**base))
    dense = fit_cft(x, y, m, w0, b0, CFTConfig(dense_threshold=0.0, **base))
    np.testing.assert_allclose(sparse.weight.numpy(), dense.weight.numpy(), atol=1e-10)
    assert [r.best_step for r in sparse.report] == [r.best_step for r in dense.report]


def test_ga_is_deterministic_by_seed(planted):
    x, y, m, w0, b0 = planted(n=500, d=8, c=5, known=0.3)
    cfg = dict(variant="ga", generations=20, population_size=8, mutation_range=0.1, **FAST)
    a = fit_cft(x, y, m, w0, b0, CFTConfig(**cfg))
    b = fit_cft(x, y, m, w0, b0, CFTConfig(**cfg))
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert a.n_changed > 0
    c = fit_cft(x, y, m, w0, b0, CFTConfig(**{**cfg, "seed": 1}))
    assert not torch.equal(a.weight, c.weight)


def test_block_partition_does_not_change_bp(planted):
    x, y, m, w0, b0 = planted(n=500, d=8, c=6, known=0.3)
    x, w0, b0 = x.astype(np.float64), w0.astype(np.float64), b0.astype(np.float64)
    cfg = dict(variant="bp", epochs=30, lr=0.05, **FAST)
    one = fit_cft(x, y, m, w0, b0, CFTConfig(**cfg))
    many = fit_cft(x, y, m, w0, b0, CFTConfig(block_memory_mb=0.05, **cfg))
    np.testing.assert_allclose(one.weight.numpy(), many.weight.numpy(), atol=1e-12)
    part = fit_cft(x, y, m, w0, b0, CFTConfig(**cfg), categories=[1, 4])
    np.testing.assert_allclose(part.weight[[1, 4]].numpy(), one.weight[[1, 4]].numpy(), atol=1e-12)
    assert part.report[0].skipped == "not requested"
    np.testing.assert_array_equal(part.weight[0].numpy(), w0[0])


def test_skipped_categories_keep_their_rows(planted):
    x, y, m, w0, b0 = planted(n=300, d=6, c=4)
    y[:, 1] = 0  # no positive anywhere
    y[:, 2] = 1  # no negative anywhere
    m[:, 3] = False
    res = fit_cft(x, y, m, w0, b0, CFTConfig(variant="bp", epochs=5, **FAST))
    assert res.report[1].skipped == "no known positive in the fit split"
    assert res.report[2].skipped == "no known negative in the fit split"
    assert res.report[3].skipped == "no known positive in the fit split"
    for c in (1, 2, 3):
        np.testing.assert_array_equal(res.weight[c].numpy(), w0[c])
    assert res.n_skipped == 3


def test_explicit_selection_split_and_skip_on_selection(planted):
    x, y, m, w0, b0 = planted(n=400, d=6, c=3)
    xs, ys, ms = x[:50], y[:50].copy(), m[:50].copy()
    ys[:, 0] = 0
    res = fit_cft(x, y, m, w0, b0, CFTConfig(variant="bp", epochs=5, **FAST), selection=(xs, ys, ms))
    assert res.report[0].skipped == "no known positive in the selection split"
    assert res.report[1].n_fit == int(m[:, 1].sum())
    assert "given selection split (50 images)" in res.selection


def test_inputs_not_modified_and_memmap_features(planted, tmp_path):
    x, y, m, w0, b0 = planted(n=300, d=6, c=3)
    path = tmp_path / "z.npy"
    np.save(path, x)
    xm = np.load(path, mmap_mode="r")
    w_copy, b_copy, y_copy, m_copy = w0.copy(), b0.copy(), y.copy(), m.copy()
    wt = torch.from_numpy(w0)
    res = fit_cft(xm, y, m, wt, b0, CFTConfig(variant="bp", epochs=20, lr=0.05, **FAST))
    np.testing.assert_array_equal(w0, w_copy)
    np.testing.assert_array_equal(b0, b_copy)
    np.testing.assert_array_equal(y, y_copy)
    np.testing.assert_array_equal(m, m_copy)
    assert res.weight.data_ptr() != wt.data_ptr()
    ref = fit_cft(x, y, m, w0, b0, CFTConfig(variant="bp", epochs=20, lr=0.05, **FAST))
    assert torch.equal(ref.weight, res.weight)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: {**a, "labels": np.full_like(a["labels"], 2)}, "`labels` must hold 1"),
        (lambda a: {**a, "features": np.where(np.arange(6) == 2, np.nan, a["features"])}, "NaN or inf"),
        (lambda a: {**a, "features": np.full_like(a["features"], np.inf)}, "NaN or inf"),
        (lambda a: {**a, "features": a["features"][:-1]}, "rows but its `labels` have"),
        (lambda a: {**a, "weight": a["weight"][:, :-1]}, "`weight` must be C×d"),
        (lambda a: {**a, "weight": a["weight"][:-1]}, "`weight` must be C×d"),
        (lambda a: {**a, "bias": a["bias"][:-1]}, "`bias` must have C=3"),
        (lambda a: {**a, "label_mask": a["label_mask"][:, :-1]}, "same shape"),
        (lambda a: {**a, "selection": (a["features"][:0], a["labels"][:0], a["label_mask"][:0])}, "empty"),
        (lambda a: {**a, "selection": (a["features"][:5, :-1], a["labels"][:5], a["label_mask"][:5])}, "d=5"),
        (lambda a: {**a, "selection": (a["features"][:5],)}, "tuple"),
    ],
)
def test_bad_input_errors(planted, change, match):
    x, y, m, w0, b0 = planted(n=100, d=6, c=3)
    args = dict(features=x, labels=y, label_mask=m, weight=w0, bias=b0, selection=None)
    args = change(args)
    with pytest.raises(ValueError, match=match):
        fit_cft(config=CFTConfig(epochs=1, **FAST), **args)


def test_tiny_dataset_selection_fraction_error(planted):
    x, y, m, w0, b0 = planted(n=3, d=4, c=2)
    with pytest.raises(ValueError, match="selection_fraction"):
        fit_cft(x, y, m, w0, b0, CFTConfig(selection_fraction=0.1, **FAST))


@pytest.mark.parametrize("field, value", [("selection_fraction", 0.0), ("selection_fraction", 1.0),
                                          ("variant", "sgd"), ("metric", "f1"), ("population_size", 1),
                                          ("crossover_rate", 1.5), ("patience", -1)])
def test_config_validation(field, value):
    with pytest.raises(ValueError, match=field):
        CFTConfig(**{field: value})


def test_config_json_round_trip_and_unknown_keys(tmp_path, caplog):
    cfg = CFTConfig(variant="ga", metric="auroc", generations=7, seed=3)
    cfg.save_pretrained(tmp_path)
    assert CFTConfig.from_pretrained(tmp_path) == cfg
    data = json.loads((tmp_path / "cft_config.json").read_text())
    data["from_the_future"] = 1
    with caplog.at_level(logging.WARNING):
        assert CFTConfig.from_dict(data) == cfg
    assert "from_the_future" in caplog.text


def test_config_keeps_flat_keywords_and_saves_result_settings_only(tmp_path):
    """Every variant's options are flat keywords and attributes; the saved config holds the shared result settings
    and the chosen variants' options, never the runtime settings (device, progress bars)."""
    import dataclasses

    cfg = CFTConfig(variant="bp", epochs=10, refit_l2=[0.5], pygad_generations=3, wmw_gamma=0.5, device="cpu",
                    block_memory_mb=64.0, show_progress=False)
    assert (cfg.epochs, cfg.refit_l2, cfg.pygad_generations, cfg.wmw_gamma) == (10, [0.5], 3, 0.5)
    assert cfg.options["bp"].epochs == 10 and cfg.options["refit"].refit_l2 == [0.5]
    saved = cfg.to_dict()
    assert saved["epochs"] == 10 and saved["wmw_gamma"] == 0.5 and saved["selection_rule"] == "crossfit"
    assert not {"device", "show_progress", "refit_l2", "pygad_generations", "options"} & set(saved)
    assert saved["block_memory_mb"] == 64.0  # it decides the blocks, and with them a block's seed and rounding
    cfg.save_pretrained(tmp_path)
    back = CFTConfig.from_pretrained(tmp_path)
    assert back == cfg and back.to_dict() == saved and back.device == "auto"  # runtime: not saved, not compared
    auto = dataclasses.replace(cfg, variant="auto", auto_variants=["refit", "bp"])
    assert auto.refit_l2 == [0.5] and auto.epochs == 10 and auto.to_dict()["refit_l2"] == [0.5]
    assert cfg.options["bp"] is not auto.options["bp"]  # copies: changing one config leaves the other
    auto.epochs = 20
    assert auto.options["bp"].epochs == 20 and cfg.epochs == 10 and "epochs" not in vars(auto)
    import copy

    twin = copy.copy(cfg)
    twin.epochs = 30  # a copy's options are its own
    assert cfg.epochs == 10 and twin.epochs == 30 and twin.device == cfg.device == "cpu"
    with pytest.raises(AttributeError):
        _ = cfg.no_such_setting


def test_an_old_config_with_runtime_settings_still_loads(tmp_path, caplog):
    """cft_config.json written before runtime settings were left out (every field of every variant, the device,
    the memory budget, progress bars) loads without a warning; its result settings are kept."""
    old = {"variant": "auto", "auto_variants": ["refit", "bp"], "epochs": 7, "generations": 9, "device": "cpu",
           "block_memory_mb": 512.0, "show_progress": False, "metric": "ap", "selection_metric": None,
           "refit_l2": [0.1, 1.0], "pygad_keep_parents": 10}
    (tmp_path / "cft_config.json").write_text(json.dumps(old))
    with caplog.at_level(logging.WARNING):
        cfg = CFTConfig.from_pretrained(tmp_path)
    assert not caplog.records
    assert (cfg.epochs, cfg.generations, cfg.refit_l2, cfg.device) == (7, 9, [0.1, 1.0], "auto")
    assert "generations" not in cfg.to_dict() and cfg.to_dict()["refit_l2"] == [0.1, 1.0]


def test_block_keys_hold_result_settings_not_runtime_ones():
    """A finished block's key changes with a setting of every result-affecting kind, never with a runtime one (or an
    option of a variant that does not run)."""
    import dataclasses

    from hf_cft.engine.checkpoint import block_key

    base = CFTConfig(variant="refit", refit_l2=[0.1, 1.0])
    key = block_key(base, "refit", [0, 1], "inputs")
    for runtime in (dict(device="cpu"), dict(show_progress=False), dict(epochs=3)):
        assert block_key(dataclasses.replace(base, **runtime), "refit", [0, 1], "inputs") == key, runtime
    for change in (dict(refit_l2=[1.0]), dict(refit_toward="trained"), dict(selection_rule="strict"), dict(seed=1),
                   dict(metric="auroc"), dict(selection_metric="ap"), dict(dense_threshold=0.2),
                   dict(block_memory_mb=1.0)):
        assert block_key(dataclasses.replace(base, **change), "refit", [0, 1], "inputs") != key, change
    assert block_key(base, "refit", [0, 1], "other inputs") != key and block_key(base, "refit", [0], "inputs") != key


def test_result_report_json_and_markdown(planted, tmp_path):
    x, y, m, w0, b0 = planted(n=300, d=6, c=3)
    y[:, 2] = 0
    res = CFTEngine(CFTConfig(variant="bp", epochs=10, lr=0.05, **FAST)).fit(
        x, y, m, w0, b0, category_names=["cat", "dog", "none"]
    )
    res.to_json(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["config"]["variant"] == "bp"
    assert data["summary"]["categories"] == 3 and data["summary"]["skipped"] == 1
    assert data["categories"][2]["skipped"] == "no known positive in the fit split"
    assert data["categories"][0]["name"] == "cat"
    assert "held out 45 of the 300 training images" in data["selection"]
    md = res.to_markdown()
    assert md.count("\n") == 5 and "| 1 | dog |" in md and "skipped: no known positive" in md


@pytest.mark.parametrize("variant", ["ga", "refit", "bp"])
def test_shards_together_equal_one_run(planted, variant):
    x, y, m, w0, b0 = planted(n=600, d=8, c=7, known=0.3)
    cfg = CFTConfig(variant=variant, generations=15, population_size=6, epochs=15, lr=0.05, block_memory_mb=0.02,
                    mutation_range=0.05, **FAST)
    one = fit_cft(x, y, m, w0, b0, cfg)
    parts = [CFTEngine(cfg).fit(x, y, m, w0, b0, shard=(r, 3)) for r in range(3)]
    owned = [[r.index for r in p.report if r.skipped != "in another shard"] for p in parts]
    assert sorted(c for o in owned for c in o) == list(range(7))  # every category in exactly one shard
    assert all(owned)  # the blocks were dealt out
    for rank, cats in enumerate(owned):
        for c in cats:
            assert torch.equal(parts[rank].weight[c], one.weight[c]) and torch.equal(parts[rank].bias[c], one.bias[c])
            assert parts[rank].report[c] == one.report[c]


def test_checkpointed_blocks_are_reused(planted, tmp_path, monkeypatch):
    from hf_cft.engine import engine as engine_module

    x, y, m, w0, b0 = planted(n=400, d=8, c=5, known=0.4)
    cfg = CFTConfig(variant="ga", generations=10, population_size=6, block_memory_mb=0.02, mutation_range=0.05,
                    **FAST)
    first = CFTEngine(cfg).fit(x, y, m, w0, b0, checkpoint_dir=str(tmp_path))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) > 1 and all(f.endswith(".safetensors") for f in files)
    calls = []
    real = engine_module.run_block
    monkeypatch.setattr(engine_module, "run_block", lambda ps, block: calls.append(block) or real(ps, block))
    (tmp_path / files[0]).unlink()  # as if killed before that block finished
    again = CFTEngine(cfg).fit(x, y, m, w0, b0, checkpoint_dir=str(tmp_path))
    assert len(calls) == 1  # only the missing block was computed again
    assert torch.equal(first.weight, again.weight) and first.to_dict() == again.to_dict()
    y2 = y.copy()
    y2[0, 0] = 1 - y2[0, 0]
    m[0, 0] = True
    calls.clear()
    CFTEngine(cfg).fit(x, y2, m, w0, b0, checkpoint_dir=str(tmp_path))
    assert len(calls) == len(files)  # other labels: nothing stale is reused


def test_block_checkpoints_are_keyed_by_content_not_identity(planted, tmp_path, monkeypatch):
    """An array changed in place (same object, same id) must not reuse the blocks of its old content."""
    import dataclasses

    from hf_cft.engine.variants import VARIANTS

    x, y, m, w0, b0 = planted(n=300, d=6, c=3)
    calls = []
    real = VARIANTS["refit"]
    monkeypatch.setitem(VARIANTS, "refit", dataclasses.replace(
        real, runner=lambda *a, **k: calls.append(1) or real.runner(*a, **k)))
    engine = CFTEngine(CFTConfig(variant="refit", **FAST))
    first = engine.fit(x, y, m, w0, b0, checkpoint_dir=str(tmp_path))
    n_blocks = len(calls)
    again = engine.fit(x, y, m, w0, b0, checkpoint_dir=str(tmp_path))
    assert len(calls) == n_blocks and torch.equal(first.weight, again.weight)  # same content: reused
    x *= 2.0  # in place: same object
    changed = engine.fit(x, y, m, w0, b0, checkpoint_dir=str(tmp_path))
    assert len(calls) == 2 * n_blocks  # recomputed
    assert torch.equal(changed.weight, CFTEngine(CFTConfig(variant="refit", **FAST)).fit(x, y, m, w0, b0).weight)


@pytest.mark.parametrize("rate", [0.2, 0.8])
def test_ga_crossover_and_mutation_rates(rate):
    """Uniform crossover takes a gene from the first parent with `crossover_rate`; mutation hits a child with
    `mutation_probability` and adds U(-r, r) to every gene of it."""
    from hf_cft.engine.variants.ga import _breed, _Random

    n_cat, n_child, d = 8, 49, 63
    pw = torch.zeros(n_cat, 2, n_child, d)
    pw[:, 1] = 1.0  # first parents all 0, second parents all 1
    pb = torch.zeros(n_cat, 2, n_child)
    pb[:, 1] = 1.0
    rng = _Random(0, torch.device("cpu"), torch.float32)
    cfg = CFTConfig(variant="ga", crossover_rate=rate, mutation_probability=0.0)
    cw, cb = _breed(pw.reshape(-1, d), pb.reshape(-1), n_cat, n_child, rng, cfg)
    share_first = float((torch.cat([cw, cb[:, None]], 1) == 0).float().mean())
    assert abs(share_first - rate) < 0.01  # 25,000 genes: sd ≈ 0.003

    cfg = CFTConfig(variant="ga", crossover_rate=rate, mutation_probability=0.3, mutation_range=0.01)
    cw, cb = _breed(torch.zeros(n_cat * 2 * n_child, d), torch.zeros(n_cat * 2 * n_child), n_cat, n_child, rng, cfg)
    mutated = (cw != 0).any(1)
    assert abs(float(mutated.float().mean()) - 0.3) < 0.06  # 392 children
    assert bool((cw[mutated] != 0).all()) and float(cw.abs().max()) <= 0.01 and float(cb.abs().max()) <= 0.01
    assert float(cw[mutated].std()) == pytest.approx(0.01 / 3**0.5, rel=0.05)


def test_ga_random_stream_is_pinned():
    """The GA's CPU stream (docs/engine.md): yes/no draws from single bytes of PCG64's raw output against the
    base-256 digits of p (exact probability), uniforms from ``Generator.random(dtype=float32)``."""
    from fractions import Fraction

    from hf_cft.engine.variants.ga import _base256_digits, _Random

    assert _base256_digits(0.5) == [128]
    assert sum(Fraction(dg, 256 ** (i + 1)) for i, dg in enumerate(_base256_digits(0.2))) == Fraction(0.2)
    rng = _Random(7, torch.device("cpu"), torch.float32)
    got = rng.bernoulli(5, 3, p=0.2)
    u = rng.uniform(2, 2)
    ref = np.random.default_rng(7)
    raw = ref.bit_generator.random_raw(2).astype("<u8").view(np.uint8)[:15]
    digits = _base256_digits(0.2)
    assert not (raw == digits[0]).any()  # no byte of this seed needs a second one
    want = raw < digits[0]
    np.testing.assert_array_equal(got.numpy().reshape(-1), want)
    np.testing.assert_array_equal(u.numpy(), ref.random((2, 2), dtype=np.float32))
    # the probability is exact: 200,000 draws of p = 0.2 within 4 sd, and the tie bytes are resolved
    share = float(_Random(1, torch.device("cpu"), torch.float32).bernoulli(200_000, p=0.2).float().mean())
    assert abs(share - 0.2) < 4 * (0.2 * 0.8 / 200_000) ** 0.5


def test_ga_buffers_equal_the_plain_generation_loop(planted):
    """run_ga (population buffers, elites first) equals a plain generation loop built on ``_breed`` with the
    same stream: the fast path changes no result."""
    from hf_cft.engine.registry import BlockTask
    from hf_cft.engine.selection import BestTracker, Judge
    from hf_cft.engine.variants.ga import _breed, _Random, run_ga
    from hf_cft.engine.views import Split, ViewFactory
    from hf_cft.metrics.ranking import METRICS

    x, y, m, w0, b0 = planted(n=400, d=8, c=4, known=0.5)
    cfg = CFTConfig(variant="ga", generations=12, population_size=7, elitism=2, mutation_range=0.05, **FAST)
    split = Split.from_arrays(x, y, m, "training")
    fit_v = ViewFactory(split, torch.device("cpu"), torch.float32, 0.5).view([0, 1, 2, 3])
    judge = Judge(fit_v, METRICS["ap"])
    w, b = torch.from_numpy(w0), torch.from_numpy(b0)
    fast = BestTracker(w, b, judge(w, b), None)
    run_ga(BlockTask(w, b, fit_v, judge, fast, cfg.options["ga"], cfg, seed=3))

    plain = BestTracker(w, b, judge(w, b), None)
    rng, metric = _Random(3, torch.device("cpu"), torch.float32), METRICS["ap"]
    n_cat, d, pop, n_el = 4, 8, cfg.population_size, cfg.elitism
    k = pop - n_el
    pw, pb = w.unsqueeze(1).repeat(1, pop, 1), b.unsqueeze(1).repeat(1, pop)
    fitness = metric(fit_v.scores(w.unsqueeze(1), b.unsqueeze(1)), fit_v.labels, fit_v.mask).expand(-1, pop)
    off = (torch.arange(n_cat) * pop).unsqueeze(1)
    champs = []
    for _gen in range(1, cfg.generations + 1):
        parents = (rng.roulette(fitness, 2 * k) + off).reshape(-1)
        cw, cb = _breed(pw.reshape(-1, d)[parents], pb.reshape(-1)[parents], n_cat, k, rng, cfg)
        cw, cb = cw.view(n_cat, k, d), cb.view(n_cat, k)
        cf = metric(fit_v.scores(cw, cb), fit_v.labels, fit_v.mask)
        elite = fitness.nan_to_num(-1.0).topk(n_el, dim=1).indices
        pw = torch.cat([pw.gather(1, elite.unsqueeze(-1).expand(-1, -1, d)), cw], 1)
        pb = torch.cat([pb.gather(1, elite), cb], 1)
        fitness = torch.cat([fitness.gather(1, elite), cf], 1)
        best = fitness.nan_to_num(-1.0).argmax(1)
        champs.append((pw[torch.arange(n_cat), best], pb[torch.arange(n_cat), best]))
    cw_, cb_ = torch.stack([c[0] for c in champs], 1), torch.stack([c[1] for c in champs], 1)
    scores = torch.cat([judge(cw_[:, i:i + 8], cb_[:, i:i + 8]) for i in range(0, cfg.generations, 8)], 1)
    for gen in range(1, cfg.generations + 1):  # elites scored 8 generations at a time, as run_ga does
        plain.update(gen, cw_[:, gen - 1], cb_[:, gen - 1], scores[:, gen - 1])
    assert torch.equal(fast.weight, plain.weight) and torch.equal(fast.bias, plain.bias)
    assert torch.equal(fast.step, plain.step) and bool((fast.step > 0).any())


@pytest.mark.parametrize("way", ["grouped", "shared"])
@pytest.mark.parametrize("rule", ["strict", "crossfit"])
def test_bp_ways_of_a_block_equal_the_whole_block(planted, monkeypatch, way, rule):
    """The BP planner's ways (hf_cft.engine.plan): gathered rows run in cache-sized groups one after the other, or
    one shared pass over the union of the block's known rows, give what the whole gathered block gives."""
    from hf_cft.engine import plan

    x, y, m, w0, b0 = planted(n=900, d=12, c=7, known=0.15, seed=2)
    x, w0, b0 = x.astype(np.float64), w0.astype(np.float64), b0.astype(np.float64)
    cfg = CFTConfig(variant="bp", epochs=40, lr=0.05, patience=6, show_progress=False, selection_rule=rule,
                    selection_fraction=0.3)
    never = plan.Cost(flops=1.0, memory=1e30, cache=1e30, epoch=0.0)  # shared pass modelled hopeless
    monkeypatch.setitem(plan.COST, "cpu", never)
    monkeypatch.setattr(plan, "CACHE_BYTES", 0)  # no group fits: one group, the whole block
    whole = fit_cft(x, y, m, w0, b0, cfg)
    if way == "grouped":
        from hf_cft.engine.variants import bp

        monkeypatch.setattr(plan, "CACHE_BYTES", 2 * int(m.sum(0).max()) * 12 * 8)  # groups of 2
        monkeypatch.setitem(plan.COST, "cpu", plan.Cost(flops=1.0, memory=1.0, cache=1e30, epoch=0.0))
        assert plan.bp_groups(7, int(m.sum(0).max()), 12, 8, torch.device("cpu")) == 2
        groups = []
        real = bp.sub_view
        monkeypatch.setattr(bp, "sub_view", lambda v, idx: groups.append(idx.tolist()) or real(v, idx))
    else:
        monkeypatch.setitem(plan.COST, "cpu", plan.Cost(flops=1e30, memory=1e6, cache=1e6, epoch=0.0))
        factory = ViewFactory(Split.from_arrays(x, y, m, "training"), torch.device("cpu"), torch.float64, 0.5)
        assert plan.bp_fit_view(factory, list(range(7))).kind == "dense"
    other = fit_cft(x, y, m, w0, b0, cfg)
    if way == "shared":  # pair-stored (sparse) labels take the same shared pass
        import scipy.sparse as sp

        on_pairs = fit_cft(x, sp.csr_matrix(y * m), sp.csr_matrix(m), w0, b0, cfg)
        np.testing.assert_allclose(on_pairs.weight.numpy(), other.weight.numpy(), atol=1e-12)
        np.testing.assert_allclose(on_pairs.bias.numpy(), other.bias.numpy(), atol=1e-12)
    if way == "grouped":  # fit and selection views of each group, every row in exactly one group
        assert len(groups) >= 4 and sorted(c for g in groups[::2] for c in g) == list(range(7))
    np.testing.assert_allclose(other.weight.numpy(), whole.weight.numpy(), atol=1e-10)
    np.testing.assert_allclose(other.bias.numpy(), whole.bias.numpy(), atol=1e-10)
    assert [(r.best_step, r.steps_run) for r in other.report] == [(r.best_step, r.steps_run) for r in whole.report]
    assert whole.n_changed > 0 or rule == "crossfit"
    assert {r.steps_run for r in whole.report} != {40} or rule == "crossfit"  # rows stopped at their own epochs


def test_bp_plan_prefers_a_shared_pass_when_categories_share_images():
    """The modelled cost: a COCO-shaped block (every image known for some category) is cheapest as one shared
    pass on an accelerator, a sparse one (few shared images) gathered; the choice depends on shapes alone."""
    from hf_cft.engine.plan import bp_plan

    gpu = torch.device("cuda")
    assert bp_plan(80, 8500, 900, 2048, 4, gpu).kind == "shared"  # 10% known, 80 categories
    assert bp_plan(500, 60_000, 150, 2048, 4, gpu).kind == "gathered"  # OpenImages-like: 150 of 60,000 each
    cpu = torch.device("cpu")
    assert bp_plan(80, 8500, 900, 2048, 4, cpu) == bp_plan(80, 8500, 900, 2048, 4, cpu)


@pytest.mark.parametrize("patience", [None, 12])
def test_bp_judge_span_does_not_change_the_result(planted, monkeypatch, patience):
    """Scoring 8 or 32 epochs per selection call gives the same rows, steps and stops: the tracker still sees
    every epoch in order (epochs computed past a stop are discarded)."""
    from hf_cft.engine.variants import bp

    assert [bp.judge_span(5, 12, 4, p) for p in (None, 12, 300)] == [32, 8, 32]
    assert bp.judge_span(1000, 2048, 4, None) == 8  # snapshots of a large block stay small
    x, y, m, w0, b0 = planted(n=900, d=12, c=5, known=0.3, noise=0.3, seed=4)
    cfg = CFTConfig(variant="bp", epochs=150, lr=0.05, patience=patience, show_progress=False,
                    selection_rule="strict")
    runs = []
    for span in (32, 8):
        monkeypatch.setattr(bp, "judge_span", lambda *a, span=span: span)
        runs.append(fit_cft(x, y, m, w0, b0, cfg))
    long, short = runs
    assert torch.equal(long.weight, short.weight) and torch.equal(long.bias, short.bias)
    assert [(r.best_step, r.steps_run) for r in long.report] == [(r.best_step, r.steps_run) for r in short.report]
    assert patience is None or min(r.steps_run for r in long.report) < 150  # early stops were exercised


def test_check_finite_overflowing_sum_and_half_features():
    """The finiteness check sums chunks in float32: a sum that overflows on finite features does not raise (its
    chunk is checked entry by entry), NaN or inf in float16 features does, naming the first bad row."""
    from hf_cft.engine.views import check_finite

    big = torch.full((6, 3), 3e38)
    check_finite(big, "features")  # the float32 sum is inf; every entry is finite
    half = torch.zeros(9, 4, dtype=torch.float16)
    check_finite(half, "features")
    half[7, 2] = float("nan")
    with pytest.raises(ValueError, match="first at row 7"):
        check_finite(half, "features")
    check_finite(torch.full((3, 2), 1e300, dtype=torch.float64), "features")


def test_checkpoints_keep_each_uncertain_policy_apart(tmp_path):
    """With uncertain-label policies, every policy's blocks are its own: a checkpointed run equals one without."""
    rng = np.random.default_rng(0)
    n, d, c = 120, 6, 2
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (rng.random((n, c)) < 0.4).astype(np.int8)
    m = np.ones((n, c), bool)
    unc = rng.random((n, c)) < 0.3
    m[unc] = False
    y[unc & (x[:, [0]] > 0)] = 0
    w0, b0 = (rng.normal(size=(c, d)) * 0.1).astype(np.float32), np.zeros(c, np.float32)
    cfg = CFTConfig(variant="refit", uncertain_policies=["u_ignore", "u_ones"], selection_rule="strict",
                    show_progress=False)
    plain = fit_cft(x, y, m, w0, b0, cfg, uncertain_mask=unc)
    kept = fit_cft(x, y, m, w0, b0, cfg, uncertain_mask=unc, checkpoint_dir=str(tmp_path))
    assert len(os.listdir(tmp_path)) == 2  # one block file per policy
    again = fit_cft(x, y, m, w0, b0, cfg, uncertain_mask=unc, checkpoint_dir=str(tmp_path))
    for res in (kept, again):
        assert torch.equal(res.weight, plain.weight) and res.to_dict() == plain.to_dict()
    assert plain.report[0].candidates["refit/u_ignore"] != plain.report[0].candidates["refit/u_ones"]


def test_pygad_rows_do_not_depend_on_how_categories_are_grouped():
    rng = np.random.default_rng(0)
    n, d, c = 100, 4, 3
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (rng.random((n, c)) < 0.4).astype(np.int8)
    m = rng.random((n, c)) < 0.9
    w0, b0 = (rng.normal(size=(c, d)) * 0.1).astype(np.float32), np.zeros(c, np.float32)
    cfg = dict(variant="pygad", pygad_generations=5, pygad_mutation_range=0.5, **FAST)
    one_block = fit_cft(x, y, m, w0, b0, CFTConfig(**cfg))
    apart = fit_cft(x, y, m, w0, b0, CFTConfig(block_memory_mb=1e-4, **cfg))  # one category per block
    alone = fit_cft(x, y, m, w0, b0, CFTConfig(**cfg), categories=[1])
    assert torch.equal(one_block.weight, apart.weight) and torch.equal(one_block.weight[1], alone.weight[1])
    assert not torch.equal(one_block.weight, torch.from_numpy(w0))


def test_config_values_that_would_be_ignored_or_fail_late_are_refused(caplog):
    for bad, match in ((dict(refit_l2=[float("nan")]), "finite strengths"), (dict(refit_max_iter=0), "refit_max_iter"),
                       (dict(refit_tol=-1.0), "refit_tol"), (dict(pygad_keep_parents=-5), "pygad_keep_parents"),
                       (dict(device="tpu"), "`device` must be 'auto' or a torch device")):
        with pytest.raises(ValueError, match=match):
            CFTConfig(**bad)
    with caplog.at_level(logging.WARNING, logger="hf_cft"):
        cfg = CFTConfig.from_dict({"metric": "ap"})
    assert cfg.judged_by == "ap" and "has no `selection_metric`" in caplog.text
