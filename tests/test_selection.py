"""The cross-fitted selection rule: noise is never taken for a gain, a clear gain always is, and its numbers."""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from hf_cft import CFTConfig, CFTEngine, CFTResult, choose_per_category, fit_cft
from hf_cft.engine.crossfit import choose_crossfit, posterior_gains
from hf_cft.engine.decide import merge_shards
from hf_cft.engine.selection import SelectionFolds
from hf_cft.engine.views import Split, ViewFactory
from hf_cft.metrics import average_precision

FAST = dict(show_progress=False, epochs=150, lr=0.02, patience=None)


def _world(seed, n=1500, d=12, c=6, known=0.4, noise=0.0):
    """Labels drawn from true logistic rows; the trained rows are the truth plus ``noise``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w_true = rng.normal(size=(c, d)).astype(np.float32)
    b_true = np.full(c, -1.0, dtype=np.float32)
    p = 1 / (1 + np.exp(-(x @ w_true.T + b_true)))
    y = (rng.random(p.shape) < p).astype(np.int8)
    m = rng.random((n, c)) < known
    w0 = (w_true + noise * rng.normal(size=w_true.shape)).astype(np.float32)
    return x, y, m, w0, b_true.copy()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_row_with_nothing_to_fix_is_never_replaced(seed):
    """The trained rows are the true rows: every candidate's apparent gain is noise, so nothing is replaced
    (the paper's strict rule replaces rows in this world)."""
    x, y, m, w0, b0 = _world(seed)
    for variant in ("refit", "bp"):
        res = fit_cft(x, y, m, w0, b0, CFTConfig(variant=variant, seed=seed, **FAST))
        assert res.n_changed == 0, res.to_markdown()
        assert torch.equal(res.weight, torch.from_numpy(w0))
        assert all(r.reason.startswith("kept") for r in res.report)
    joint = choose_per_category({v: fit_cft(x, y, m, w0, b0, CFTConfig(variant=v, seed=seed, **FAST))
                                 for v in ("refit", "bp")}, w0, b0)
    assert joint.n_changed == 0 and all(r.reason.startswith("kept") for r in joint.report)
    strict = fit_cft(x, y, m, w0, b0, CFTConfig(variant="bp", seed=seed, selection_rule="strict", **FAST))
    assert strict.n_changed > 0


def test_a_clearly_better_row_is_always_replaced():
    x, y, m, w0, b0 = _world(0, noise=2.0)
    res = fit_cft(x, y, m, w0, b0, CFTConfig(variant="refit", **FAST))
    assert res.n_changed == 6
    for r in res.report:
        assert r.oof_gain > 1.5 * r.gain_se > 0 and r.p_gain > 0.99 and 0 < r.alpha <= 1
        assert r.reason.startswith("replaced by refit") and "cross-fitted gain +" in r.reason


def test_several_runs_are_decided_by_one_joint_choice():
    """`auto`: one crossfit choice over every run's candidates; each replaced row is the trained row moved by α
    toward the chosen run's recorded candidate, and the report lists every run's own evidence."""
    x, y, m, w0, b0 = _world(0, noise=2.0)
    runs = {v: fit_cft(x, y, m, w0, b0, CFTConfig(variant=v, **FAST)) for v in ("refit", "bp")}
    res = choose_per_category(runs, w0, b0)
    assert res.n_changed == 6 and "joint" in res.extra["crossfit"]
    for r in res.report:
        record = runs[r.variant].runs[r.variant].records[r.index]
        g = record["grid_step"].tolist().index(r.best_step)
        expected = torch.from_numpy(w0[r.index]).double() + r.alpha * (record["grid_weight"][g].double()
                                                                        - torch.from_numpy(w0[r.index]).double())
        torch.testing.assert_close(res.weight[r.index].double(), expected, atol=1e-5, rtol=1e-5)
        assert r.reason.startswith(f"replaced by {r.variant}") and "chosen among refit, bp" in r.reason
        assert set(r.candidates) == {"refit", "bp"} and r.p_gain >= 0.9


def test_determinism_by_seed():
    x, y, m, w0, b0 = _world(3, noise=0.7)
    cfg = dict(variant="bp", **FAST)
    a = fit_cft(x, y, m, w0, b0, CFTConfig(**cfg))
    b = fit_cft(x, y, m, w0, b0, CFTConfig(**cfg))
    assert torch.equal(a.weight, b.weight) and a.to_dict() == b.to_dict()
    c = fit_cft(x, y, m, w0, b0, CFTConfig(seed=1, **cfg))
    assert [r.oof_gain for r in a.report] != [r.oof_gain for r in c.report]


def test_shards_decided_again_together_equal_one_run():
    x, y, m, w0, b0 = _world(4, c=7, noise=0.8)
    cfg = CFTConfig(variant="refit", block_memory_mb=0.02, **FAST)
    one = fit_cft(x, y, m, w0, b0, cfg)
    parts = [CFTEngine(cfg).fit(x, y, m, w0, b0, shard=(r, 3)) for r in range(3)]
    merged = merge_shards(parts, torch.from_numpy(w0), torch.from_numpy(b0))
    assert torch.equal(merged.weight, one.weight) and merged.to_dict() == one.to_dict()


def test_the_plan_is_stratified_and_does_not_depend_on_the_block():
    x, y, m, w0, b0 = _world(5, c=4)
    split = Split.from_arrays(x, y, m, "selection")
    for threshold in (0.0, 1.0):  # dense and gathered views
        factory = ViewFactory(split, torch.device("cpu"), torch.float32, threshold)
        full = SelectionFolds.build(factory.view([0, 1, 2, 3]), [0, 1, 2, 3], 5, seed=0)
        alone = SelectionFolds.build(factory.view([2]), [2], 5, seed=0)
        n = int(alone.n_known[0])
        assert torch.equal(full.folds[2, :n], alone.folds[0, :n])
        for i in range(4):
            n_pos, n_known = int(full.n_pos[i]), int(full.n_known[i])
            assert n_pos == int((y[:, i][m[:, i]] > 0).sum()) and n_known == int(m[:, i].sum())
            for part in (full.folds[i, :n_pos], full.folds[i, n_pos:n_known]):  # dealt round-robin per class
                counts = torch.bincount(part, minlength=5)
                assert int(counts.max() - counts.min()) <= 1
            labels = factory.view([i]).labels.squeeze()
            listed = full.order[i, :n_known]
            if threshold == 0.0:  # dense: positions are images; positives first
                assert bool((labels[listed[:n_pos]] > 0).all()) and bool((labels[listed[n_pos:]] <= 0).all())


def _reference_records(seed: int, n_cat: int, k: int, n_steps: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    records = []
    for c in range(n_cat):
        n_pos, n_neg = int(rng.integers(4, 9)), int(rng.integers(15, 30))
        n = n_pos + n_neg
        listed = torch.from_numpy(rng.normal(size=(n_steps + 1, n)))
        listed[:, :n_pos] += torch.linspace(0.0, 1.5, n_steps + 1).view(-1, 1)  # later steps separate better
        folds = torch.cat([torch.arange(n_pos) % k, torch.arange(n_neg) % k])
        records.append({"index": c, "weight": torch.zeros(3), "bias": torch.tensor(0.0),
                        "grid_weight": torch.randn(n_steps, 3), "grid_bias": torch.randn(n_steps),
                        "grid_step": torch.tensor([1, 3, 10, 30]), "listed": listed, "n_pos": n_pos, "folds": folds})
    return records


def _mixed(r, g, a):
    s0 = r["listed"][0].numpy()
    return s0 + a * (r["listed"][g].numpy() - s0)


def _y(r):
    return (np.arange(r["listed"].shape[1]) < r["n_pos"]).astype(int)


def _best(records, grid, keep):
    """The shared choice: the mean AP over ``records`` on the kept labels; ties to the trained row."""
    means = [np.mean([average_precision_score(_y(r)[keep(r)], _mixed(r, g, a)[keep(r)]) for r in records])
             for g, a in grid]
    return grid[int(np.argmax(means))]


def test_crossfit_leaves_categories_out_like_a_plain_reference():
    """From 3 categories on, each category's (step, α) is chosen on the others' labels and its gain scored on all
    its own labels with that choice — recomputed with scikit-learn."""
    alphas, n_steps = [0.5, 1.0], 4
    records = _reference_records(6, 5, 3, n_steps)
    out = choose_crossfit(records, average_precision, alphas, 3, 50, seed=0)
    grid = [(0, 0.0)] + [(g, a) for g in range(1, n_steps + 1) for a in alphas]
    every = lambda r: np.ones(r["listed"].shape[1], bool)  # noqa: E731
    for i, r in enumerate(records):
        g, a = _best(records[:i] + records[i + 1:], grid, every)
        assert (out.step[i], out.alpha[i]) == ((0, 0.0) if g == 0 else (int(r["grid_step"][g - 1]), a))
        gain = average_precision_score(_y(r), _mixed(r, g, a)) - average_precision_score(_y(r), _mixed(r, 0, 0.0))
        assert float(out.oof_gain[i]) == pytest.approx(gain, abs=1e-9)
        assert float(out.gain_se[i]) > 0 or gain == 0
        if g:
            torch.testing.assert_close(out.weight[i], a * r["grid_weight"][g - 1])


def test_crossfit_image_folds_like_a_plain_reference():
    """Below 3 categories: the shared (step, α), each fold's choice and the mean of per-fold gains, recomputed
    with scikit-learn."""
    k, alphas, n_steps = 3, [0.5, 1.0], 4
    records = _reference_records(6, 2, k, n_steps)
    out = choose_crossfit(records, average_precision, alphas, k, 50, seed=0)
    grid = [(0, 0.0)] + [(g, a) for g in range(1, n_steps + 1) for a in alphas]
    g0, a0 = _best(records, grid, lambda r: np.ones(r["listed"].shape[1], bool))
    expected = (0, 0.0) if g0 == 0 else (int(records[0]["grid_step"][g0 - 1]), a0)
    assert all((s, a) == expected for s, a in zip(out.step, out.alpha))  # shared by every category
    fold_choice = [_best(records, grid, lambda r, j=j: r["folds"].numpy() != j) for j in range(k)]
    for i, r in enumerate(records):
        gains = []
        for j, (g, a) in enumerate(fold_choice):  # each fold alone, with the choice made without it
            here = r["folds"].numpy() == j
            if _y(r)[here].any():
                gains.append(average_precision_score(_y(r)[here], _mixed(r, g, a)[here])
                             - average_precision_score(_y(r)[here], _mixed(r, 0, 0.0)[here]))
        assert float(out.oof_gain[i]) == pytest.approx(np.mean(gains), abs=1e-9)
        assert float(out.gain_se[i]) > 0 or all(gn == 0 for gn in gains)
        if g0:
            torch.testing.assert_close(out.weight[i], a0 * r["grid_weight"][g0 - 1])


def test_posterior_pools_like_the_normal_normal_model():
    se = np.full(8, 0.02)
    # no spread beyond the noise: every category gets the pooled mean, with the mean's own uncertainty
    flat = posterior_gains(np.array([0.01, -0.01, 0.02, 0.0, 0.01, 0.0, 0.015, -0.005]), se)
    assert np.allclose(flat.mean, flat.prior_mean) and flat.prior_sd == 0.0
    assert np.allclose(flat.sd, 0.02 / np.sqrt(8))
    # a real spread: each gain is shrunk toward the mean by se² / (se² + τ²)
    g = np.array([0.3, -0.2, 0.1, 0.0, 0.25, -0.1])
    post = posterior_gains(g, np.full(6, 0.05))
    tau2 = g.var(ddof=1) - 0.0025
    shrink = 0.0025 / (0.0025 + tau2)
    assert np.allclose(post.mean, g.mean() + (1 - shrink) * (g - g.mean()))
    assert post.prob_positive[0] > 0.99 and post.prob_positive[1] < 0.01
    # fewer than three categories: nothing to pool from
    alone = posterior_gains(np.array([0.05, -0.05]), np.array([0.05, 0.05]))
    assert np.allclose(alone.mean, [0.05, -0.05]) and alone.prob_positive[0] == pytest.approx(0.8413, abs=1e-4)


def test_the_report_explains_each_decision():
    x, y, m, w0, b0 = _world(7, c=4, noise=1.5)
    w0[0] = _world(7, c=4)[3][0]  # category 0: the true row, nothing to fix
    res = fit_cft(x, y, m, w0, b0, CFTConfig(variant="auto", auto_variants=["refit", "bp"], **FAST),
                  category_names=["a", "b", "c", "d"])
    data = res.to_dict()
    assert data["summary"]["rule"] == "crossfit"
    for r in data["categories"]:
        assert r["reason"] and set(r["candidates"]) == {"refit", "bp"}
        assert {"crossfit_gain", "gain_se", "alpha", "p_gain"} <= set(r["candidates"]["refit"])
    assert res.report[0].variant == "original" and res.report[0].reason.startswith("kept")
    md = res.to_markdown()
    assert "cross-fitted gain (95%)" in md and "P(gain > 0)" in md


def test_crossfit_blocks_are_checkpointed_and_reused(tmp_path):
    x, y, m, w0, b0 = _world(8, c=5, noise=1.0)
    cfg = CFTConfig(variant="ga", generations=30, population_size=6, mutation_range=0.05, block_memory_mb=0.02,
                    **{k: v for k, v in FAST.items() if k != "epochs"})
    first = CFTEngine(cfg).fit(x, y, m, w0, b0, checkpoint_dir=str(tmp_path))
    assert len(list(tmp_path.glob("*.safetensors"))) > 1
    again = CFTEngine(cfg).fit(x, y, m, w0, b0, checkpoint_dir=str(tmp_path))
    assert torch.equal(first.weight, again.weight) and first.to_dict() == again.to_dict()


def test_the_selection_metric_defaults_by_rule_and_is_checked():
    assert CFTConfig().judged_by == "auroc"  # crossfit: the pairwise statistic
    assert CFTConfig(selection_rule="strict").judged_by == "ap"  # the paper's: the metric itself
    assert CFTConfig(metric="auroc", selection_rule="strict").judged_by == "auroc"
    assert CFTConfig(selection_metric="ap").judged_by == "ap"
    with pytest.raises(ValueError, match="`selection_metric` must be one of"):
        CFTConfig(selection_metric="f1")


def test_the_ga_evolves_on_metric_whatever_rows_are_selected_by():
    """The GA's fitness is `metric`; `selection_metric` only judges the recorded generations."""
    x, y, m, w0, b0 = _world(9, c=3, noise=1.0)
    runs = [fit_cft(x, y, m, w0, b0, CFTConfig(variant="ga", generations=30, selection_metric=s, **FAST))
            for s in ("ap", "auroc")]
    for c in range(3):
        a, b = (r.runs["ga"].records[c] for r in runs)
        assert torch.equal(a["grid_weight"], b["grid_weight"]) and torch.equal(a["grid_bias"], b["grid_bias"])
    other = fit_cft(x, y, m, w0, b0, CFTConfig(variant="ga", generations=30, metric="auroc", **FAST))
    assert not torch.equal(other.runs["ga"].records[0]["grid_weight"], runs[0].runs["ga"].records[0]["grid_weight"])


def test_a_config_saved_before_selection_metric_reads_as_selected_by_its_metric():
    old = {k: v for k, v in CFTConfig().to_dict().items() if k != "selection_metric"}
    assert CFTConfig.from_dict(old).judged_by == "ap"


def test_sharded_auto_decided_again_together_equals_one_run():
    x, y, m, w0, b0 = _world(4, c=7, noise=0.8)
    cfg = CFTConfig(variant="auto", auto_variants=["refit", "bp"], block_memory_mb=0.02, **FAST)
    one = fit_cft(x, y, m, w0, b0, cfg)
    parts = [CFTEngine(cfg).fit(x, y, m, w0, b0, shard=(r, 3)) for r in range(3)]
    merged = merge_shards(parts, torch.from_numpy(w0), torch.from_numpy(b0))
    assert "joint" in one.extra["crossfit"]
    assert torch.equal(merged.weight, one.weight) and merged.to_dict() == one.to_dict()


def test_joint_choice_with_two_categories_reports_runs_and_steps():
    x, y, m, w0, b0 = _world(5, c=2, noise=2.0)
    runs = {v: fit_cft(x, y, m, w0, b0, CFTConfig(variant=v, **FAST)) for v in ("refit", "bp")}
    joint = choose_per_category(runs, w0, b0).extra["crossfit"]["joint"]
    assert joint["held_out"] == "image folds" and joint["run"] in {"refit", "bp"}
    assert all(c["step"] == 0 or c["run"] in {"refit", "bp"} for c in joint["fold_choices"])


def test_a_run_rebuilt_from_json_keeps_its_rows_beside_the_others():
    x, y, m, w0, b0 = _world(0, noise=2.0)
    refit = fit_cft(x, y, m, w0, b0, CFTConfig(variant="refit", **FAST))
    bp = fit_cft(x, y, m, w0, b0, CFTConfig(variant="bp", **FAST))
    rebuilt = CFTResult.from_dict(refit.to_dict(), weight=refit.weight, bias=refit.bias)
    res = choose_per_category({"refit": rebuilt, "bp": bp}, w0, b0)
    assert "joint" not in res.extra.get("crossfit", {})  # no candidates to choose among: each run as decided
    assert res.n_changed == 6


def test_a_category_its_selection_labels_cannot_judge_is_kept():
    x, y, m, w0, b0 = _world(0, noise=2.0)
    sel = (x[:300], y[:300].copy(), m[:300].copy())
    sel[1][:, 0] = 1  # every known selection label of category 0 positive: AUROC undefined, nothing to pool
    for variant in ("refit", "auto"):
        res = fit_cft(x[300:], y[300:], m[300:], w0, b0,
                      CFTConfig(variant=variant, auto_variants=["refit", "bp"], **FAST), selection=sel)
        assert not res.report[0].changed and res.report[0].reason == "kept: no known negative in the selection split"
        assert res.n_changed == 5  # the others still pooled and decided


def test_the_guard_scores_the_chosen_candidates_in_the_reported_metric():
    """Rows chosen and judged by AUROC; the guard's gains are the same candidates' AP gains (scikit-learn)."""
    from sklearn.metrics import roc_auc_score

    from hf_cft.metrics import auroc

    alphas, n_steps = [0.5, 1.0], 4
    records = _reference_records(7, 5, 3, n_steps)
    out = choose_crossfit(records, auroc, alphas, 3, 50, seed=0, guard=average_precision)
    grid = [(0, 0.0)] + [(g, a) for g in range(1, n_steps + 1) for a in alphas]
    for i, r in enumerate(records):
        others = records[:i] + records[i + 1:]
        means = [np.mean([roc_auc_score(_y(o), _mixed(o, g, a)) for o in others]) for g, a in grid]
        g, a = grid[int(np.argmax(means))]
        auc_gain = roc_auc_score(_y(r), _mixed(r, g, a)) - roc_auc_score(_y(r), _mixed(r, 0, 0.0))
        ap_gain = average_precision_score(_y(r), _mixed(r, g, a)) - average_precision_score(_y(r), _mixed(r, 0, 0.0))
        assert float(out.oof_gain[i]) == pytest.approx(auc_gain, abs=1e-9)
        assert float(out.guard_gain[i]) == pytest.approx(ap_gain, abs=1e-9)
    assert choose_crossfit(records, auroc, alphas, 3, 50, seed=0).guard_gain is None


def test_thin_selection_evidence_is_warned_about_with_its_fix(caplog):
    """A selection split with few known positives per category gets a warning that names the counts and what to
    change (the fraction, or a validation split when one was given); enough evidence gets none."""
    from hf_cft.engine import inputs

    inputs._WARNED.clear()
    x, y, m, w0, b0 = _world(0, n=1500, known=0.4)
    cfg = dict(variant="refit", show_progress=False, refit_l2=[1.0])
    with caplog.at_level("WARNING", logger="hf_cft.engine.inputs"):
        fit_cft(x, y, m, w0, b0, CFTConfig(selection_fraction=0.03, **cfg))
        fit_cft(x, y, m, w0, b0, CFTConfig(selection_fraction=0.03, **{**cfg, "variant": "bp", "epochs": 5}))
    thin = [r.getMessage() for r in caplog.records if "selection split has a median" in r.getMessage()]
    assert len(thin) == 1 and "`selection_fraction` (now 0.03)" in thin[0]  # once, not once per variant
    pos = ((y > 0) & m).sum(0)  # the warning's counts are the selection split's: below the threshold here
    assert "of 6 categories have fewer than 10" in thin[0] and pos.min() > 10
    caplog.clear()
    with caplog.at_level("WARNING", logger="hf_cft.engine.inputs"):
        fit_cft(x, y, m, w0, b0, CFTConfig(selection_fraction=0.5, **cfg))
        fit_cft(x[:1000], y[:1000], m[:1000], w0, b0, CFTConfig(**cfg), selection=(x[1000:1050], y[1000:1050],
                                                                                   m[1000:1050]))
    msgs = [r.getMessage() for r in caplog.records if "selection split has a median" in r.getMessage()]
    assert len(msgs) == 1 and "a larger validation split (`selection`;" in msgs[0]


@pytest.mark.parametrize("noise", [0.0, 2.0])
def test_the_judged_rows_are_the_rows_the_evidence_is_about(noise):
    """`result.judged`: each category's cross-fitted gain is its judged row's AUROC gain over the trained row on
    the selection labels (scikit-learn), replaced or kept, one run or a joint choice; none under the strict rule."""
    from sklearn.metrics import roc_auc_score

    x, y, m, w0, b0 = _world(1, n=2400, noise=noise)
    sel = (x[1500:], y[1500:], m[1500:])
    fit = (x[:1500], y[:1500], m[:1500])
    runs = {v: fit_cft(*fit, w0, b0, CFTConfig(variant=v, **FAST), selection=sel) for v in ("refit", "bp")}
    for res in (runs["refit"], choose_per_category(runs, w0, b0)):
        w, b = (t.numpy() for t in res.judged)
        moved = 0
        for r in res.report:
            c, known = r.index, sel[2][:, r.index]
            before = roc_auc_score(sel[1][known, c], sel[0][known] @ w0[c] + b0[c])
            after = roc_auc_score(sel[1][known, c], sel[0][known] @ w[c] + b[c])
            assert after - before == pytest.approx(r.oof_gain, abs=1e-5)
            if r.changed:
                np.testing.assert_array_equal(w[c], res.weight[c].numpy())
            moved += not np.array_equal(w[c], w0[c])
        assert moved > 0  # kept or not, a candidate other than the trained row was judged
    strict = fit_cft(*fit, w0, b0, CFTConfig(variant="refit", selection_rule="strict", **FAST), selection=sel)
    assert strict.judged is None
