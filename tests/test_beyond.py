"""refit, AUC surrogates, per-category auto choice and CheXpert greedy policies."""

import itertools

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from hf_cft import CFTConfig, fit_cft
from hf_cft.engine.logistic import Solver, example_weights, solve_logistic
from hf_cft.engine.views import Split, ViewFactory
from hf_cft.losses import aucm_loss, wmw_loss

FAST = dict(show_progress=False, selection_rule="strict")  # the paper's rule: exact comparisons


@pytest.mark.parametrize("dense_threshold", [0.0, 1.0])
@pytest.mark.parametrize("balanced", [False, True])
def test_batched_lbfgs_matches_sklearn_logistic_regression(dense_threshold, balanced):
    rng = np.random.default_rng(0)
    n, d, c = 300, 12, 3
    x = rng.normal(size=(n, d))
    y = (x @ rng.normal(size=(c, d)).T + rng.normal(size=(n, c)) > 0.8).astype(np.int8)
    m = rng.random((n, c)) < 0.6
    view = ViewFactory(Split.from_arrays(x, y, m, "training"), torch.device("cpu"), torch.float64,
                       dense_threshold).view([0, 1, 2])
    lams = [1e-3, 1e-1]
    w0 = torch.from_numpy(rng.normal(size=(c, 1, d))).expand(c, 2, d).contiguous()  # warm start anywhere
    w, b, _ = solve_logistic(view, w0, torch.zeros(c, 2, dtype=torch.float64), torch.tensor([lams]),
                             torch.zeros(c, 1, d, dtype=torch.float64), example_weights(view, balanced),
                             Solver(max_iter=500, tol=1e-10))
    for k, (j, lam) in itertools.product(range(c), enumerate(lams)):
        keep = m[:, k]
        # sklearn: C·Σ loss + ½||w||²; ours: mean loss + λ/2 ||w||²  ⇒  C = 1 / (λ n)
        clf = LogisticRegression(C=1 / (lam * keep.sum()), tol=1e-12, max_iter=10_000,
                                 class_weight="balanced" if balanced else None).fit(x[keep], y[keep, k])
        np.testing.assert_allclose(w[k, j].numpy(), clf.coef_[0], atol=1e-4)
        assert float(b[k, j]) == pytest.approx(clf.intercept_[0], abs=1e-4)


def test_refit_chooses_l2_on_selection_and_reports_it(planted):
    x, y, m, w0, b0 = planted(n=1500, d=16, c=4, known=0.3, noise=2.0)
    res = fit_cft(x, y, m, w0, b0, CFTConfig(variant="refit", refit_l2=[1e-3, 1e-1, 10.0], **FAST))
    for r in res.report:
        assert r.best_score >= r.original_score
        if r.changed:
            assert r.variant == "refit" and r.detail in {"l2=0.001", "l2=0.1", "l2=10"}
    assert res.n_changed >= 3
    gain = np.mean([r.best_score - r.original_score for r in res.report])
    assert gain > 0.05  # a badly corrupted row is recovered by a converged fit


def test_refit_toward_trained_with_huge_l2_keeps_row():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 6)).astype(np.float64)
    y = (rng.random((400, 2)) < 0.4).astype(np.int8)
    m = np.ones((400, 2), bool)
    w0 = rng.normal(size=(2, 6))
    cfg = CFTConfig(variant="refit", refit_l2=[1e6], refit_toward="trained", refit_tol=1e-12, **FAST)
    view_res = fit_cft(x, y, m, w0, np.zeros(2), cfg)
    for r in view_res.report:  # the λ=1e6 solution stays at the trained row: never strictly better
        assert not r.changed or abs(r.best_score - r.original_score) < 1e-3


def test_wmw_equals_pairwise_definition_and_gradient():
    torch.manual_seed(0)
    x = torch.randn(2, 30, dtype=torch.float64, requires_grad=True)
    y = (torch.rand(2, 30) < 0.4).long()
    m = torch.rand(2, 30) < 0.8
    fast = wmw_loss(x, y, m, gamma=0.4)
    h = torch.sigmoid(x)
    ref = []
    for r in range(2):
        pos = [i for i in range(30) if m[r, i] and y[r, i]]
        neg = [j for j in range(30) if m[r, j] and not y[r, j]]
        terms = [torch.clamp(0.4 - (h[r, i] - h[r, j]), min=0) ** 2 for i in pos for j in neg]
        ref.append(torch.stack(terms).sum() / (len(pos) * len(neg)))
    ref = torch.stack(ref)
    torch.testing.assert_close(fast, ref)
    g_fast = torch.autograd.grad(fast.sum(), x)[0]
    x2 = x.detach().clone().requires_grad_(True)
    h2 = torch.sigmoid(x2)
    ref2 = sum(
        torch.clamp(0.4 - (h2[r, i] - h2[r, j]), min=0) ** 2 / (
            sum(1 for k in range(30) if m[r, k] and y[r, k]) * sum(1 for k in range(30) if m[r, k] and not y[r, k]))
        for r in range(2) for i in range(30) for j in range(30)
        if m[r, i] and y[r, i] and m[r, j] and not y[r, j]
    )
    g_ref = torch.autograd.grad(ref2, x2)[0]
    torch.testing.assert_close(g_fast, g_ref)


def test_aucm_closed_form_equals_minmax_definition():
    torch.manual_seed(1)
    x = torch.randn(40, dtype=torch.float64)
    y = (torch.rand(40) < 0.5).long()
    h = torch.sigmoid(x)
    hp, hn = h[y == 1], h[y == 0]
    # brute force over a, b (min) and alpha >= 0 (max) on a grid around the optimum
    a, b = hp.mean(), hn.mean()
    alpha = torch.clamp(1.0 - hp.mean() + hn.mean(), min=0)
    obj = ((hp - a) ** 2).mean() + ((hn - b) ** 2).mean() + 2 * alpha * (1.0 - hp.mean() + hn.mean()) - alpha**2
    assert float(aucm_loss(x, y)) == pytest.approx(float(obj))
    for da in (-0.1, 0.1):  # a, b are minimizers
        gap = 1 - hp.mean() + hn.mean()
        worse = ((hp - a - da) ** 2).mean() + ((hn - b) ** 2).mean() + 2 * alpha * gap - alpha**2
        assert float(worse) > float(obj)


@pytest.mark.parametrize("loss", ["wmw", "aucm"])
def test_bp_with_auc_surrogates_improves_selection(planted, loss):
    x, y, m, w0, b0 = planted(n=1200, d=10, c=3, known=0.5, noise=1.5)
    res = fit_cft(x, y, m, w0, b0, CFTConfig(variant="bp", bp_loss=loss, metric="auroc", lr=0.01, epochs=150,
                                             **FAST))
    assert res.n_changed >= 2
    assert all(r.best_score >= r.original_score for r in res.report)


def test_auto_keeps_best_candidate_per_category(planted):
    x, y, m, w0, b0 = planted(n=1200, d=10, c=4, known=0.4, noise=1.5)
    base = dict(lr=0.01, epochs=100, **FAST)
    auto = fit_cft(x, y, m, w0, b0, CFTConfig(variant="auto", auto_variants=["refit", "bp"], **base))
    refit = fit_cft(x, y, m, w0, b0, CFTConfig(variant="refit", **base))
    bp = fit_cft(x, y, m, w0, b0, CFTConfig(variant="bp", **base))
    for c, r in enumerate(auto.report):
        assert set(r.candidates) == {"refit", "bp"}
        best = max(refit.report[c].best_score, bp.report[c].best_score)
        assert r.best_score == pytest.approx(best)
        source = {"refit": refit, "bp": bp}.get(r.variant)
        if source is not None:
            torch.testing.assert_close(auto.weight[c], source.weight[c])
        else:
            np.testing.assert_array_equal(auto.weight[c].numpy(), w0[c])
    assert "refit" in auto.to_markdown() or "bp" in auto.to_markdown()


def test_chexpert_greedy_policy_per_category(planted):
    x, y, m, w0, b0 = planted(n=1500, d=10, c=3, known=0.5, noise=1.5, seed=3)
    rng = np.random.default_rng(0)
    uncertain = (~m) & (rng.random(m.shape) < 0.3)
    y[uncertain & (rng.random(m.shape) < 0.5)] = 1
    cfg = CFTConfig(variant="refit", uncertain_policies=["u_ignore", "u_ones", "u_zeros"], **FAST)
    res = fit_cft(x, y, m, w0, b0, cfg, uncertain_mask=uncertain)
    for r in res.report:
        assert set(r.candidates) == {"refit/u_ignore", "refit/u_ones", "refit/u_zeros"}
        assert r.best_score == pytest.approx(max(v["selection_score"] for v in r.candidates.values()))
        assert (r.policy is None) == (not r.changed)
    with pytest.raises(ValueError, match="uncertain_mask"):
        fit_cft(x, y, m, w0, b0, cfg)
    with pytest.raises(ValueError, match="uncertain_mask` must be N×C"):
        fit_cft(x, y, m, w0, b0, cfg, uncertain_mask=uncertain[:10])


def test_choose_per_category_equals_auto(planted):
    from hf_cft import choose_per_category

    x, y, m, w0, b0 = planted(n=800, d=8, c=3, known=0.4, noise=1.5)
    base = dict(lr=0.01, epochs=60, **FAST)
    runs = {v: fit_cft(x, y, m, w0, b0, CFTConfig(variant=v, **base)) for v in ("refit", "bp")}
    chosen = choose_per_category(runs, w0, b0)
    auto = fit_cft(x, y, m, w0, b0, CFTConfig(variant="auto", auto_variants=["refit", "bp"], **base))
    torch.testing.assert_close(chosen.weight, auto.weight)
    assert [r.variant for r in chosen.report] == [r.variant for r in auto.report]
    assert chosen.config.variant == "auto"
    other = fit_cft(x, y, m, w0, b0, CFTConfig(variant="bp", seed=5, **base))
    with pytest.raises(ValueError, match="different splits"):
        choose_per_category({"a": runs["bp"], "b": other}, w0, b0)


@pytest.mark.parametrize("balanced", [False, True])
def test_row_span_solve_equals_the_full_space_solve(balanced):
    """Few known rows per category (L ≤ d/2): solved in the span of the rows, the same optimum as in all d."""
    from hf_cft.engine.logistic import RowSpanView, solve_in_row_span

    rng = np.random.default_rng(5)
    n, d, c = 120, 64, 4
    x = rng.normal(size=(n, d))
    x[7] = x[3]  # a repeated row: a zero eigenvalue of the Gram matrix
    y = (x @ rng.normal(size=(c, d)).T + rng.normal(size=(n, c)) > 0.5).astype(np.int8)
    m = rng.random((n, c)) < 0.2
    m[3] = m[7] = True
    view = ViewFactory(Split.from_arrays(x, y, m, "training"), torch.device("cpu"), torch.float64,
                       1.0).view(list(range(c)))
    assert view.kind == "gathered" and view.length <= d / 2
    lams = torch.tensor([[1e-3, 1e-1]], dtype=torch.float64)
    w_ref = torch.from_numpy(rng.normal(size=(c, 1, d)) * 0.1)
    b0 = torch.zeros(c, 2, dtype=torch.float64)
    sw = example_weights(view, balanced)
    solver = Solver(max_iter=1000, tol=1e-11)
    full = solve_logistic(view, w_ref.expand(c, 2, d).contiguous(), b0, lams, w_ref, sw, solver)
    span = solve_in_row_span(view, w_ref, b0, lams, sw, solver)
    np.testing.assert_allclose(span[0].numpy(), full[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(span[1].numpy(), full[1].numpy(), atol=1e-6)
    assert not np.allclose(span[0].numpy(), w_ref.numpy())  # it moved
    assert RowSpanView(view, w_ref).x.shape == (c, view.length, view.length)


def test_default_refit_rows_equal_scikit_learn_from_zero_in_the_row_span():
    """The default refit (toward zero, sparse labels: solved in the span of each category's rows from zero)
    records, for every λ, the L2 logistic regression scikit-learn fits on the same known labels."""
    rng = np.random.default_rng(3)
    n, d, c = 400, 96, 3
    x = rng.normal(size=(n, d))
    y = (x @ rng.normal(size=(c, d)).T * 0.3 + rng.normal(size=(n, c)) > 0.8).astype(np.int8)
    m = rng.random((n, c)) < 0.1  # ~40 known rows per category, far below d/2: the row-span path
    cfg = CFTConfig(variant="refit", refit_l2=[1e-2, 1.0], refit_tol=1e-10, refit_max_iter=1000,
                    dense_threshold=1.0, device="cpu", show_progress=False)
    assert cfg.refit_toward == "zero"
    res = fit_cft(x, y, m, rng.normal(size=(c, d)), np.zeros(c), cfg, selection=(x[:200], y[:200], m[:200]))
    for k in range(c):
        rec = res.runs["refit"].records[k]
        known = m[:, k]
        for p, lam in enumerate(cfg.refit_l2):
            ref = LogisticRegression(C=1.0 / (lam * known.sum()), tol=1e-12, max_iter=10000)
            ref.fit(x[known], y[known, k])
            np.testing.assert_allclose(rec["grid_weight"][p].numpy(), ref.coef_[0], atol=1e-4)  # float32 engine
            assert float(rec["grid_bias"][p]) == pytest.approx(ref.intercept_[0], abs=1e-4)
