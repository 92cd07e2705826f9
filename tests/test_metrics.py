import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from hf_cft.metrics import (
    PARTIAL_MAP_PATH,
    PARTIAL_MAUC_PATH,
    auroc,
    average_precision,
    partial_auroc,
    partial_average_precision,
)


def _reference(fn, s, y, m):
    out = []
    for i in range(s.shape[0]):
        yy, ss = y[i][m[i]], s[i][m[i]]
        out.append(fn(yy, ss) if yy.sum() > 0 and (yy == 0).sum() > 0 else np.nan)
    return np.array(out)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("ties", [False, True])
def test_ap_and_auroc_match_sklearn_with_ties_and_masks(dtype, ties):
    rng = np.random.default_rng(1 + ties)
    for _ in range(60):
        n = int(rng.integers(2, 80))
        s = rng.integers(-3, 4, size=(4, n)) if ties else rng.normal(size=(4, n))
        s = s.astype(dtype)
        y = rng.integers(0, 2, size=(4, n))
        m = rng.random((4, n)) < 0.7
        ap = average_precision(torch.from_numpy(s), torch.from_numpy(y), torch.from_numpy(m)).numpy()
        au = auroc(torch.from_numpy(s), torch.from_numpy(y), torch.from_numpy(m)).numpy()
        ref_ap = _reference(average_precision_score, s, y, m)
        ref_au = _reference(roc_auc_score, s, y, m)
        ok = ~np.isnan(ref_ap)
        tol = 1e-10 if dtype == np.float64 else 1e-5
        np.testing.assert_allclose(ap[ok], ref_ap[ok], atol=tol)
        np.testing.assert_allclose(au[ok], ref_au[ok], atol=tol)
        assert np.isnan(au[~ok]).all()


def test_signed_zero_and_duplicates_tie():
    s = torch.tensor([[0.0, -0.0, 1.0, 1.0, -2.0]])
    y = torch.tensor([[1, 0, 0, 1, 0]])
    assert float(average_precision(s, y)) == pytest.approx(average_precision_score(y[0], s[0]))
    assert float(auroc(s, y)) == pytest.approx(roc_auc_score(y[0], s[0]))


def test_batched_over_population_leading_shape():
    rng = np.random.default_rng(0)
    s = torch.from_numpy(rng.normal(size=(3, 7, 40)).astype(np.float32))  # B categories × P candidates × L
    y = torch.from_numpy(rng.integers(0, 2, size=(3, 1, 40)))
    m = torch.from_numpy(rng.random((3, 1, 40)) < 0.8)
    ap = average_precision(s, y, m)
    assert ap.shape == (3, 7)
    for b in range(3):
        for p in range(7):
            keep = m[b, 0].numpy()
            ref = average_precision_score(y[b, 0].numpy()[keep], s[b, p].numpy()[keep])
            assert float(ap[b, p]) == pytest.approx(ref, abs=1e-5)


@pytest.mark.parametrize("chunk", [1, 64 * 8, 40 * 8 * 5, 1 << 20])
def test_cpu_fast_path_chunks_equal_sklearn_and_each_other(monkeypatch, chunk):
    """The float32 CPU path works in cache-sized chunks (along the first axis, index by index when one index is
    larger): every chunking gives the same values bit for bit, equal to scikit-learn, ties and broadcast
    labels included, and a single row comes back 0-dimensional."""
    from hf_cft.metrics import ranking

    rng = np.random.default_rng(1)
    s = torch.from_numpy(rng.normal(size=(2, 3, 5, 40)).astype(np.float32))
    s[0, 1, 2, :6] = 0.5  # ties inside one row
    y = torch.from_numpy(rng.integers(0, 2, size=(2, 1, 1, 40)))
    m = torch.from_numpy(rng.random((2, 3, 1, 40)) < 0.7)
    monkeypatch.setattr(ranking, "CHUNK_BYTES", chunk)
    got = {k: f(s, y, m) for k, f in (("ap", average_precision), ("auroc", auroc))}
    monkeypatch.setattr(ranking, "CHUNK_BYTES", 1 << 30)
    for kind, f, ref in (("ap", average_precision, average_precision_score), ("auroc", auroc, roc_auc_score)):
        assert got[kind].shape == (2, 3, 5) and torch.equal(got[kind], f(s, y, m))
        for i, j, k in np.ndindex(2, 3, 5):
            keep = m[i, j, 0].numpy()
            want = ref(y[i, 0, 0].numpy()[keep], s[i, j, k].numpy()[keep])
            assert float(got[kind][i, j, k]) == pytest.approx(want, abs=1e-6)
    one = average_precision(s[0, 0, 0], y[0, 0, 0], m[0, 0, 0])
    assert one.shape == () and float(one) == pytest.approx(float(got["ap"][0, 0, 0]))


def test_cpu_fast_path_infinite_scores_and_empty_batches():
    """Infinite or NaN float32 scores cannot carry the packed label bits: such rows take the exact path and agree
    with float64 (scikit-learn where defined); an empty batch of long rows is an empty result."""
    s = torch.tensor([[float("inf"), 0.5, 0.1, 0.7], [0.2, float("-inf"), 0.1, 0.7]])
    y = torch.tensor([[1, 0, 0, 1], [1, 0, 0, 1]])
    for f in (average_precision, auroc):
        assert torch.equal(f(s, y), f(s.double(), y).float())
    assert float(auroc(s, y)[0]) == 1.0 and float(average_precision(s, y)[1]) == pytest.approx(
        average_precision_score([1, 0, 0, 1], [0.2, -1e30, 0.1, 0.7]))
    assert average_precision(torch.randn(0, 2, 70_000), torch.randint(0, 2, (2, 70_000))).shape == (0, 2)
    s = torch.tensor([[float("nan"), 0.5, 0.1, 0.7], [float("inf"), 0.5, 0.1, 0.7]])  # NaN known; inf unknown
    m = torch.tensor([[True, True, True, True], [False, True, True, True]])
    for f in (average_precision, auroc):
        assert torch.equal(f(s, y, m), f(s.double(), y, m).float())


def test_macro_mean_excludes_and_counts_categories():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(30, 4))
    labels = rng.integers(0, 2, size=(30, 4))
    mask = np.ones((30, 4), dtype=bool)
    labels[:, 1] = 1  # no negative
    mask[:, 3] = False  # nothing known
    res = partial_average_precision(scores, labels, mask)
    assert res.n_excluded == 2 and res.n_included == 2
    assert res.excluded == [1, 3]
    ref = np.mean([average_precision_score(labels[:, c], scores[:, c]) for c in (0, 2)])
    assert res.value == pytest.approx(ref)
    auc = partial_auroc(scores, labels, mask)
    assert auc.value == pytest.approx(np.mean([roc_auc_score(labels[:, c], scores[:, c]) for c in (0, 2)]))


def test_evaluate_modules_offline_with_groups_and_subset():
    evaluate = pytest.importorskip("evaluate")
    rng = np.random.default_rng(0)
    p = rng.random((60, 6)).astype(np.float32)
    codes = rng.integers(-1, 2, size=(60, 6))
    metric = evaluate.load(PARTIAL_MAP_PATH)
    for i in range(0, 60, 20):
        metric.add_batch(predictions=p[i:i + 20], references=codes[i:i + 20])
    names = list("abcdef")
    out = metric.compute(groups=2, category_names=names, known_counts=[6, 5, 4, 3, 2, 1])
    per = [average_precision_score(codes[codes[:, c] >= 0, c], p[codes[:, c] >= 0, c]) for c in range(6)]
    assert out["map"] == pytest.approx(np.mean(per), abs=1e-6)
    assert out["G1"] == pytest.approx(np.mean(per[3:]), abs=1e-6)  # the 3 categories with fewest known
    assert out["G2"] == pytest.approx(np.mean(per[:3]), abs=1e-6)
    mauc = evaluate.load(PARTIAL_MAUC_PATH)
    sub = mauc.compute(predictions=p, references=codes, categories=["b", "e"], category_names=names)
    ref = np.mean([roc_auc_score(codes[codes[:, c] >= 0, c], p[codes[:, c] >= 0, c]) for c in (1, 4)])
    assert sub["mauc"] == pytest.approx(ref, abs=1e-6)
    assert sub["category_names"] == ["b", "e"]
    with pytest.raises(ValueError, match="label codes"):
        mauc.compute(predictions=p, references=codes + 2)


@pytest.mark.parametrize("kind", ["ap", "auroc"])
def test_counted_metric_equals_sklearn_on_the_written_out_multiset(kind):
    from sklearn.metrics import average_precision_score, roc_auc_score

    from hf_cft.metrics.ranking import counted_metric

    rng = np.random.default_rng(11)
    rows, width, draws = 5, 40, 6
    scores = np.round(rng.normal(size=(rows, width)), 1)  # many ties
    pos = rng.random((rows, width)) < 0.3
    pos[:, 0], pos[:, 1] = True, False
    counts = rng.integers(0, 3, size=(rows, draws, width)).astype(np.float64)
    counts[:, :, :2] = 1  # each multiset has both classes
    got = counted_metric(kind, torch.from_numpy(scores), torch.from_numpy(pos), torch.from_numpy(counts))
    ref = average_precision_score if kind == "ap" else roc_auc_score
    for r in range(rows):
        for s in range(draws):
            take = np.repeat(np.arange(width), counts[r, s].astype(int))
            assert float(got[r, s]) == pytest.approx(ref(pos[r, take], scores[r, take]), abs=1e-12)
    with pytest.raises(ValueError, match="kind must be one of"):
        counted_metric("f1", torch.from_numpy(scores), torch.from_numpy(pos), torch.from_numpy(counts))


def test_scores_and_labels_the_metrics_cannot_rank_are_refused():
    scores = np.array([[np.nan], [1.0], [2.0], [0.0]])
    labels = np.array([[1], [0], [1], [0]])
    with pytest.raises(ValueError, match=r"`scores` hold 1 NaN value\(s\) at known labels"):
        partial_average_precision(scores, labels)
    mask = np.array([[False], [True], [True], [True]])  # a NaN where the label is unknown is never read
    assert partial_auroc(scores, labels, mask).value == 1.0
    codes = np.array([[1], [-1], [0], [1]])
    with pytest.raises(ValueError, match=r"must hold 1 \(positive\) or 0 \(negative\) where `label_mask` is True; "
                                         r"found \[-1\].*from_code"):
        partial_average_precision(np.arange(4.0)[:, None], codes)


def test_evaluate_modules_keep_float64_predictions():
    evaluate = pytest.importorskip("evaluate")
    p = np.array([[1 - 1e-9], [1 - 2e-9], [0.5], [0.4]])  # equal in float32
    r = np.array([[0], [1], [1], [0]])
    assert evaluate.load(PARTIAL_MAUC_PATH).compute(predictions=p, references=r)["mauc"] == pytest.approx(
        roc_auc_score(r[:, 0], p[:, 0]))
    assert evaluate.load(PARTIAL_MAP_PATH).compute(predictions=p, references=r)["map"] == pytest.approx(
        average_precision_score(r[:, 0], p[:, 0]))


def test_group_counts_must_match_the_categories():
    evaluate = pytest.importorskip("evaluate")
    p, r = np.random.default_rng(0).random((8, 4)), np.tile([[1, 0, 1, 0]], (8, 1))
    with pytest.raises(ValueError, match="known_counts has 3 values for 4 categories"):
        evaluate.load(PARTIAL_MAP_PATH).compute(predictions=p, references=r, groups=2, known_counts=[1, 2, 3])


def test_sparse_labels_without_their_mask_are_refused_clearly():
    import scipy.sparse as sp

    with pytest.raises(ValueError, match="sparse `labels` need their `label_mask`"):
        partial_auroc(np.zeros((3, 2)), sp.csr_matrix(np.eye(3, 2, dtype=np.int8)))
