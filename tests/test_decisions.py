"""Decisions: Platt calibration folded into the rows, per-category thresholds, F1 / ECE / Brier, predict_labels.
Checked against scikit-learn and brute force; the saved thresholds round-trip through plain transformers."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers
from conftest import PROC

from hf_cft.decisions import DecisionConfig, choose_thresholds, fit_platt, fold, make_decisions, parse_objective
from hf_cft.engine import CFTConfig, fit_cft
from hf_cft.engine.views import Split
from hf_cft.evaluation import score_decisions, score_split
from hf_cft.head import CFTHead
from hf_cft.metrics.decision import compute_decision_metric, ece_per_category
from hf_cft.sparse import known_labels

sklearn = pytest.importorskip("sklearn")
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import brier_score_loss, f1_score  # noqa: E402


def _pairs(z, y):
    """Dense N×C logits and labels as (logits, labels, category) of every pair."""
    c = z.shape[1]
    return z.T.ravel(), y.T.ravel(), np.repeat(np.arange(c), z.shape[0])


@pytest.fixture
def miscalibrated():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 4)) * 2.0
    true = 1 / (1 + np.exp(-(np.array([0.4, 0.8, 1.5, 0.6]) * z - np.array([1.0, 0.2, -0.5, 2.0]))))
    return z, (rng.random(z.shape) < true).astype(np.int8)


def test_platt_matches_sklearn_logistic_regression_on_the_logit(miscalibrated):
    z, y = miscalibrated
    fit = fit_platt(*_pairs(z, y), 4, prior=0.0)
    for c in range(4):
        ref = LogisticRegression(C=1e12, tol=1e-12, max_iter=10_000).fit(z[:, c:c + 1], y[:, c])
        assert fit.scale[c] == pytest.approx(ref.coef_[0, 0], abs=1e-6)
        assert fit.shift[c] == pytest.approx(ref.intercept_[0], abs=1e-6)
    assert fit.skipped == [None] * 4


def test_prior_pulls_a_category_with_few_labels_toward_the_pooled_fit(miscalibrated):
    z, y = miscalibrated
    logits, labels, cols = _pairs(z, y)
    in3 = np.flatnonzero(cols == 3)
    six = np.r_[in3[labels[in3] == 1][:3], in3[labels[in3] == 0][:3]]  # category 3: six labels, both classes
    few = np.r_[np.flatnonzero(cols != 3), six]
    loose = fit_platt(logits[few], labels[few], cols[few], 4, prior=0.0)
    tight = fit_platt(logits[few], labels[few], cols[few], 4, prior=5.0)
    pooled = fit_platt(logits[few], labels[few], np.zeros_like(cols[few]), 1, prior=5.0, center="identity")
    assert tight.skipped[3] is None
    assert abs(tight.scale[3] - pooled.scale[0]) < 0.5 * abs(loose.scale[3] - pooled.scale[0])
    # the categories with 500 labels move little
    assert np.allclose(tight.scale[:3], fit_platt(logits, labels, cols, 4, prior=0.0).scale[:3], atol=0.15)


def test_folding_keeps_every_ranking_and_gives_the_calibrated_logits(miscalibrated):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    w, b = torch.from_numpy(rng.normal(size=(4, 6)).astype(np.float32)), torch.zeros(4)
    y = (rng.random((300, 4)) < 0.3).astype(np.int8)
    fit = fit_platt(*_pairs(x @ w.numpy().T, y), 4, prior=1.0)
    w2, b2 = fold(w, b, fit)
    before = score_split(x @ w.numpy().T + b.numpy(), y)
    after = score_split(x @ w2.numpy().T + b2.numpy(), y)
    assert before.per_category("ap") == pytest.approx(after.per_category("ap"), abs=1e-12)
    assert before.per_category("auroc") == pytest.approx(after.per_category("auroc"), abs=1e-12)
    np.testing.assert_allclose(x @ w2.numpy().T + b2.numpy(), fit.scale * (x @ w.numpy().T) + fit.shift, atol=1e-4)
    assert (fit.scale > 0).all()


def test_cross_validation_leaves_a_calibrated_row_about_as_it_is_and_fixes_a_miscalibrated_one(miscalibrated):
    from hf_cft.decisions.platt import choose_calibration

    rng = np.random.default_rng(5)
    z = rng.normal(size=(2000, 3)) * 2
    y = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(np.int8)  # already calibrated
    fit, name, losses = choose_calibration(*_pairs(z, y), 3)
    assert np.allclose(fit.scale, 1.0, atol=0.15) and np.allclose(fit.shift, 0.0, atol=0.15)
    assert set(losses) == {"none", "pooled only", "1", "5", "20", "100"} and losses[name] == min(losses.values())
    z, y = miscalibrated
    fit, name, losses = choose_calibration(*_pairs(z, y), 4)
    assert name not in ("none", "pooled only") and losses[name] < losses["none"] - 0.05


def test_a_reversed_row_is_flattened_not_reversed():
    z = np.linspace(-3, 3, 200)
    y = (z < 0).astype(np.int8)  # the row anti-ranks its labels
    fit = fit_platt(z, y, np.zeros(200, dtype=np.int64), 1, prior=0.0)
    assert fit.scale[0] == pytest.approx(1e-3)


def test_f1_thresholds_reach_the_brute_force_best_f1(miscalibrated):
    z, y = miscalibrated
    p = 1 / (1 + np.exp(-z))
    t, report = choose_thresholds(*_pairs(p, y), 4, "f1", shrinkage=0.0)
    for c in range(4):
        best = max(f1_score(y[:, c], p[:, c] >= s) for s in np.unique(p[:, c]))
        assert f1_score(y[:, c], p[:, c] >= t[c]) == pytest.approx(best, abs=1e-12)
        assert report["unshrunk"][c] == pytest.approx(t[c])


def test_precision_target_is_met_with_the_most_recall(miscalibrated):
    z, y = miscalibrated
    p = 1 / (1 + np.exp(-z))
    t, report = choose_thresholds(*_pairs(p, y), 4, "precision:0.8", shrinkage=0.0)
    for c in range(4):
        ok = [(s, (y[p[:, c] >= s, c] == 1).mean(), (p[y[:, c] == 1, c] >= s).mean()) for s in np.unique(p[:, c])]
        recalls = [r for _, prec, r in ok if prec >= 0.8]
        if not recalls:  # out of reach: said, and the pooled threshold taken
            assert "out of reach" in report["notes"][c] and t[c] == pytest.approx(report["pooled"])
            continue
        best_recall = max(recalls)
        pred = p[:, c] >= t[c]
        assert (y[pred, c] == 1).mean() >= 0.8 and (pred[y[:, c] == 1]).mean() == pytest.approx(best_recall)


def test_shrinkage_and_a_category_without_positives_take_the_pooled_threshold(miscalibrated):
    z, y = miscalibrated
    y = y.copy()
    y[:, 2] = 0
    p = 1 / (1 + np.exp(-z))
    t, report = choose_thresholds(*_pairs(p, y), 4, "f1", shrinkage=5.0)
    assert t[2] == pytest.approx(report["pooled"])
    assert report["notes"][2] == "no held-out positive: pooled threshold"
    huge, _ = choose_thresholds(*_pairs(p, y), 4, "f1", shrinkage=1e9)
    assert huge == pytest.approx(np.full(4, report["pooled"]), abs=1e-6)


def test_bad_objectives_and_thresholds_are_refused():
    for bad in ("f2x", "precision:1.5", "fbeta:0", "recall"):
        with pytest.raises(ValueError, match="threshold objective"):
            parse_objective(bad)
    with pytest.raises(ValueError, match="threshold_objective|threshold objective"):
        DecisionConfig(threshold_objective="accuracy")
    with pytest.raises(ValueError, match="calibration_prior"):
        DecisionConfig(calibration_prior=float("nan"))
    known = known_labels(np.array([[1, 0]]), np.ones((1, 2), bool))
    with pytest.raises(ValueError, match="NaN"):
        score_decisions(np.array([0.5, 0.5]), known, [0.5, float("nan")])
    with pytest.raises(ValueError, match="one threshold per category"):
        score_decisions(np.array([0.5, 0.5]), known, [0.5])


def test_decision_metrics_match_sklearn():
    rng = np.random.default_rng(3)
    p = rng.random((200, 3))
    y = (rng.random((200, 3)) < p).astype(np.int8)
    m = rng.random((200, 3)) < 0.6
    t = np.array([0.3, 0.5, 0.7])
    known = known_labels(y, m)
    out = score_decisions(p[known.rows, known.columns()], known, t)
    for c in range(3):
        k = m[:, c]
        assert out["per_category_f1"][c] == pytest.approx(f1_score(y[k, c], p[k, c] >= t[c]))
        assert out["per_category_brier"][c] == pytest.approx(brier_score_loss(y[k, c], p[k, c]))
        edges = np.linspace(0, 1, 16)
        which = np.clip(np.digitize(p[k, c], edges) - 1, 0, 14)
        ece = sum(abs(y[k, c][which == b].mean() - p[k, c][which == b].mean()) * (which == b).sum()
                  for b in range(15) if (which == b).any()) / k.sum()
        assert out["per_category_ece"][c] == pytest.approx(ece)
    pred = np.concatenate([(p[m[:, c], c] >= t[c]) for c in range(3)])
    assert out["f1_micro"] == pytest.approx(f1_score(np.concatenate([y[m[:, c], c] for c in range(3)]), pred))
    codes = np.where(m, y, -1)
    dense = compute_decision_metric("f1", p, codes, thresholds=t)
    pairs = compute_decision_metric("f1", p[known.rows, known.columns()], known.values,
                                    pair_categories=known.columns(), num_categories=3, thresholds=t)
    assert dense["f1"] == pytest.approx(out["f1_macro"]) and pairs["f1"] == pytest.approx(out["f1_macro"])
    assert compute_decision_metric("ece", p, codes)["per_category"] == pytest.approx(
        list(ece_per_category(p[known.rows, known.columns()], known)))


def test_evaluate_modules_load_offline():
    evaluate = pytest.importorskip("evaluate")
    from hf_cft.metrics import PARTIAL_BRIER_PATH, PARTIAL_ECE_PATH, PARTIAL_F1_PATH

    p = np.array([[0.9, 0.2], [0.1, 0.7], [0.6, 0.4]])
    codes = np.array([[1, 0], [0, -1], [1, 1]])
    f1 = evaluate.load(PARTIAL_F1_PATH).compute(predictions=p, references=codes, thresholds=[0.5, 0.5])
    assert f1["f1"] == pytest.approx(np.mean([1.0, 0.0]))
    brier = evaluate.load(PARTIAL_BRIER_PATH).compute(predictions=p, references=codes)
    assert brier["per_category"][0] == pytest.approx(np.mean([0.01, 0.01, 0.16]))
    assert evaluate.load(PARTIAL_ECE_PATH).compute(predictions=p, references=codes)["n_excluded"] == 0


def test_calibration_skips_are_reported_not_silent(planted):
    x, y, m, w0, b0 = planted(n=400, c=3)
    m[:, 1] = False  # no known label for category 1 anywhere
    cfg = CFTConfig(variant="refit", show_progress=False)
    result = fit_cft(x, y, m, w0, b0, cfg)
    sel = Split.from_arrays(x, y, m, "selection")
    out = make_decisions(result, sel, DecisionConfig(calibration_prior=5.0))
    record = out.extra["decisions"]
    assert "no held-out known labels" in record["calibration_notes"][1]
    assert record["threshold_notes"][1] == "no held-out positive: pooled threshold"
    assert record["scale"][1] == pytest.approx(record["scale"][1])  # a number: the pooled calibration
    assert np.isfinite(record["thresholds"]).all()


@pytest.fixture
def calibrated_folder(tmp_path, digits):
    from hf_cft.data import partial_info

    names = partial_info(digits["train"])["categories"]
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(image_size=24, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32, num_labels=10,
                                 id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    transformers.ViTForImageClassification(cfg).save_pretrained(tmp_path / "base")
    PROC.save_pretrained(tmp_path / "base")
    head = CFTHead.from_pretrained(str(tmp_path / "base"), category_names=names)
    kw = dict(cache_dir=str(tmp_path / "cache"), show_progress=False)
    result = head.fit(digits["train"], CFTConfig(variant="refit", show_progress=False, selection_fraction=0.3), **kw)
    before = head.evaluate(digits["test"], **kw)["before"]
    head.apply(result)
    assert head.evaluate(digits["test"], **kw)["before"]["map"] == pytest.approx(
        head.evaluate(digits["test"], result, **kw)["after"]["map"])
    return head.save_pretrained(tmp_path / "out", category_names=names), result, before


def test_plain_transformers_and_predict_labels_give_the_same_label_sets(calibrated_folder, tmp_path, digits):
    from hf_cft.predict import predict_labels

    out, result, _ = calibrated_folder
    cfg = json.loads(open(os.path.join(out, "config.json")).read())
    assert cfg["cft_thresholds"] == pytest.approx(result.extra["decisions"]["thresholds"])
    paths = []
    for i in range(6):
        path = tmp_path / f"im{i}.png"
        digits["test"][i]["image"].save(path)
        paths.append(str(path))
    got = predict_labels(out, paths)
    with pytest.raises(ValueError, match="must be 10 numbers"):
        predict_labels(out, paths, thresholds=[0.5] * 3)
    code = (
        "import json, sys, torch\nfrom PIL import Image\n"
        "from transformers import AutoImageProcessor, AutoModelForImageClassification\n"
        f"m = AutoModelForImageClassification.from_pretrained({out!r}).eval()\n"
        f"proc = AutoImageProcessor.from_pretrained({out!r})\n"
        "t = torch.tensor(m.config.cft_thresholds)\n"
        f"x = proc(images=[Image.open(p).convert('RGB') for p in {paths!r}], return_tensors='pt')\n"
        "with torch.no_grad(): p = torch.sigmoid(m(**x).logits)\n"
        "print(json.dumps([[m.config.id2label[j] for j in torch.nonzero(r >= t).flatten().tolist()] for r in p]))\n"
        "assert 'hf_cft' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(tmp_path),
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == got
    assert any(got) or all(t > 0 for t in cfg["cft_thresholds"])


def test_a_timm_folder_keeps_its_thresholds_in_config_and_report(tmp_path):
    timm = pytest.importorskip("timm")
    from hf_cft.predict import model_thresholds

    head = CFTHead(timm.create_model("test_resnet", num_classes=3, pretrained=False).eval())
    rng = np.random.default_rng(0)
    z = rng.normal(size=(400, head.hidden_size)).astype(np.float32)
    y = (z @ rng.normal(size=(head.hidden_size, 3)) > 0).astype(np.int8)
    m = rng.random((400, 3)) < 0.6
    cfg = CFTConfig(variant="refit", show_progress=False)
    result = make_decisions(fit_cft(z, y, m, head.weight, head.bias, cfg),
                            Split.from_arrays(z, y, m, "selection"))
    out = head.apply(result).save_pretrained(tmp_path / "t", category_names=["a", "b", "c"])
    saved = json.loads(open(os.path.join(out, "config.json")).read())
    assert saved["cft_thresholds"] == pytest.approx(result.extra["decisions"]["thresholds"])
    back = CFTHead.from_pretrained(out)
    assert back.library == "timm" and model_thresholds(back) == pytest.approx(saved["cft_thresholds"])
    timm.create_model(f"local-dir:{out}", pretrained=True)  # timm still loads the folder


def test_calibrate_false_keeps_the_rows_and_still_chooses_thresholds(planted):
    x, y, m, w0, b0 = planted(n=400, c=3)
    result = fit_cft(x, y, m, w0, b0, CFTConfig(variant="refit", show_progress=False))
    out = make_decisions(result, Split.from_arrays(x, y, m, "selection"), DecisionConfig(calibrate=False))
    assert torch.equal(out.weight, result.weight) and torch.equal(out.bias, result.bias)
    assert len(out.extra["decisions"]["thresholds"]) == 3 and "decisions" not in result.extra


def test_the_card_takes_the_base_models_license(tmp_path, monkeypatch):
    from huggingface_hub import ModelCard, constants

    from hf_cft.hub import base_model_license

    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "README.md").write_text("---\nlicense: apache-2.0\n---\n# a base model\n")
    assert base_model_license(str(tmp_path / "base")) == "apache-2.0"
    (tmp_path / "bare").mkdir()

    def no_hub(*args, **kwargs):
        raise AssertionError(f"the Hub was asked for {args}")

    monkeypatch.setattr(ModelCard, "load", no_hub)
    assert base_model_license(str(tmp_path / "bare")) is None  # a folder without a card: nothing said, Hub not asked
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert base_model_license("org/model") is None  # offline: the Hub is not asked
