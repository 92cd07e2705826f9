"""hf_cft.evaluation: the one scoring of a split, against scikit-learn, the `evaluate` modules and itself."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from hf_cft.evaluation import SplitScores, evaluate_rows, row_scores, score_rows, score_split
from hf_cft.labels import to_code
from hf_cft.metrics import PARTIAL_MAP_PATH, PARTIAL_MAUC_PATH, partial_auroc, partial_average_precision
from hf_cft.sparse import known_labels

REFERENCE = {"ap": average_precision_score, "auroc": roc_auc_score}


def _split(seed=0, n=300, c=8):
    """Scores (with ties in one column), labels, a mask, and two categories that cannot be scored."""
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n, c)).astype(np.float32)
    s[:, 2] = np.round(s[:, 2])  # ties
    y = (rng.random((n, c)) < 0.3).astype(np.int8)
    m = rng.random((n, c)) < rng.uniform(0.05, 0.9, size=c)
    m[:, 4] = False  # nothing known
    y[:, c - 2] = 1  # no known negative
    return s, y, m


def _same(a, b) -> bool:
    """Two MacroScores equal bit for bit (NaN equal to NaN)."""
    return (np.array_equal(a.per_category, b.per_category, equal_nan=True) and a.excluded == b.excluded
            and np.array_equal([a.value, a.n_included], [b.value, b.n_included], equal_nan=True))


def _assert_same_scores(a: SplitScores, b: SplitScores, abs_tol: float = 0.0):
    for kind in ("ap", "auroc"):
        np.testing.assert_allclose(a.per_category(kind), b.per_category(kind), rtol=0, atol=abs_tol)
        assert a.macro(kind).excluded == b.macro(kind).excluded
        assert a.macro(kind).value == pytest.approx(b.macro(kind).value, abs=abs_tol, rel=0)
    assert a.columns == b.columns
    np.testing.assert_array_equal(a.known_counts, b.known_counts)


def test_equals_sklearn_per_category_on_known_labels_and_nan_where_undefined():
    s, y, m = _split()
    got = score_split(s, y, m)
    assert got.columns == list(range(8)) and got.known_counts.tolist() == m.sum(0).tolist()
    for kind, ref in REFERENCE.items():
        per = got.per_category(kind)
        defined = []
        for j in range(8):
            yy = y[m[:, j], j]
            if 0 < yy.sum() < yy.size:
                assert per[j] == pytest.approx(ref(yy, s[m[:, j], j]), abs=1e-12)
                defined.append(per[j])
            else:  # no known positive or no known negative: NaN, left out of the mean and counted
                assert np.isnan(per[j])
        assert got.macro(kind).excluded == [4, 6] and got.macro(kind).n_included == 6
        assert got.macro(kind).value == pytest.approx(np.mean(defined), abs=1e-12)
    assert got.to_dict()["map"] == got.ap.value and got.to_dict()["per_category_auroc"] == got.auroc.per_category


def test_equals_the_partial_metrics_bit_for_bit_torch_and_numpy_inputs():
    s, y, m = _split(1)
    for inputs in ((s, y, m), (torch.from_numpy(s), torch.from_numpy(y).float(), torch.from_numpy(m))):
        got = score_split(*inputs)
        assert _same(got.ap, partial_average_precision(*inputs))
        assert _same(got.auroc, partial_auroc(*inputs))
    assert _same(score_split(s, y).ap, partial_average_precision(s, y))  # no mask: every label known


@pytest.mark.parametrize("sparse", [False, True])
def test_equals_the_evaluate_modules_with_groups_and_a_subset(sparse):
    evaluate = pytest.importorskip("evaluate")
    rng = np.random.default_rng(2)
    s, y, m = _split(2, n=200, c=6)
    z = rng.normal(size=(200, 5)).astype(np.float32)
    rows = {"before": (torch.from_numpy(rng.normal(size=(6, 5)).astype(np.float32)), torch.zeros(6)),
            "after": (rng.normal(size=(6, 5)), rng.normal(size=6))}
    names = list("abcdef")
    labels = (sp.csr_matrix(y * m), sp.csr_matrix(m)) if sparse else (y, m)
    known = known_labels(y, m)
    for groups, categories in ((None, None), (2, None), (2, ["b", "e", "a"]), (None, [3])):
        got = evaluate_rows(z, rows, *labels, groups=groups, categories=categories, category_names=names)
        for tag, (w, b) in rows.items():
            scores = row_scores(z, w, b)
            for module_path, key, kind in ((PARTIAL_MAP_PATH, "map", "ap"), (PARTIAL_MAUC_PATH, "mauc", "auroc")):
                module = evaluate.load(module_path)
                if sparse:
                    want = module.compute(predictions=row_scores(z, w, b, known), references=known.values,
                                          pair_categories=known.columns(), num_categories=6, groups=groups,
                                          categories=categories, category_names=names)
                else:
                    want = module.compute(predictions=scores, references=to_code(y, m), groups=groups,
                                          categories=categories, category_names=names)
                assert got[tag][key] == want[key]  # the same numbers, bit for bit
                assert got[tag][f"per_category_{kind}"] == want["per_category"]
                assert {k: v for k, v in got[tag].items() if k.startswith(f"{key}_G")} == \
                    {f"{key}_{g}": v for g, v in want.items() if g.startswith("G")}
            assert got[tag]["n_excluded"] == want["n_excluded"]
    assert list(got["after"]) == ["map", "per_category_ap", "n_excluded", "mauc", "per_category_auroc"]


def test_dense_equals_sparse_and_known_pairs():
    s, y, m = _split(3)
    dense = score_split(s, y, m)
    known = known_labels(y, m)
    for labels, mask in ((sp.csr_matrix(y * m), sp.csr_matrix(m)), (sp.csc_matrix(y), sp.coo_matrix(m)),
                         (y, sp.csr_matrix(m)), (known, None)):
        _assert_same_scores(score_split(s, labels, mask), dense, 1e-12)
        _assert_same_scores(score_split(s[known.rows, known.columns()], labels, mask), dense, 1e-12)  # 1-D


def _messy_mask(m: np.ndarray) -> sp.csr_matrix:
    """``m`` as a CSR matrix that also stores explicit False entries, with every row's indices unsorted."""
    rows, cols, data = [], [], []
    for i in range(m.shape[0]):
        known = np.flatnonzero(m[i])[::-1]  # descending: unsorted
        unknown = np.flatnonzero(~m[i])[:2]
        for j, v in [(j, True) for j in known] + [(j, False) for j in unknown]:
            rows.append(i), cols.append(j), data.append(v)
    counts = np.bincount(rows, minlength=m.shape[0])
    indptr = np.concatenate([[0], np.cumsum(counts)])
    out = sp.csr_matrix((np.array(data, dtype=bool), np.array(cols), indptr), shape=m.shape)
    assert not out.has_sorted_indices and (out.data == 0).any()
    return out


def _messy_labels(y: np.ndarray, m: np.ndarray) -> sp.coo_matrix:
    """``y * m`` as COO data with explicit zeros, each positive written as 1 plus an explicit 0, unsorted."""
    r, c = np.nonzero(m)
    v = y[r, c].astype(np.int8)
    rr, cc, vv = np.concatenate([r, r])[::-1], np.concatenate([c, c])[::-1], np.concatenate([v, 0 * v])[::-1]
    return sp.coo_matrix((vv, (rr, cc)), shape=y.shape)


def test_explicit_zeros_and_unsorted_indices_give_the_dense_known_pairs_and_scores():
    s, y, m = _split(4, n=120, c=6)
    labels, mask = _messy_labels(y, m), _messy_mask(m)
    np.testing.assert_array_equal(mask.toarray(), m)
    want, got = known_labels(y, m), known_labels(labels, mask)
    for field in ("indptr", "rows", "values"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
    _assert_same_scores(score_split(s, labels, mask), score_split(s, y, m), 1e-12)


def test_duplicate_mask_entries_are_one_known_pair():
    s, y, m = _split(5, n=120, c=6)
    per_row = [np.repeat(np.flatnonzero(row), 2) for row in m]  # every known entry stored twice
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in per_row])])
    mask = sp.csr_matrix((np.ones(indptr[-1], dtype=bool), np.concatenate(per_row), indptr), shape=m.shape)
    assert not mask.has_canonical_format
    np.testing.assert_array_equal(mask.toarray(), m)  # the dense equivalent: duplicates of True are True
    got = known_labels(sp.csr_matrix(y * m), mask)
    np.testing.assert_array_equal(got.rows, known_labels(y, m).rows)
    _assert_same_scores(score_split(s, sp.csr_matrix(y * m), mask), score_split(s, y, m), 1e-12)


def test_a_subset_of_categories_in_its_order():
    s, y, m = _split(6)
    whole = score_split(s, y, m)
    cols = [5, 0, 4, 2]
    sub = score_split(s, y, m, categories=cols)
    assert sub.columns == cols and sub.known_counts.tolist() == m.sum(0)[cols].tolist()
    _assert_same_scores(sub, whole.select(cols))
    assert _same(sub.ap, partial_average_precision(s[:, cols], y[:, cols], m[:, cols]))  # the trainer's slicing
    labels, mask = sp.csr_matrix(y * m), sp.csr_matrix(m)
    _assert_same_scores(score_split(s, labels, mask, categories=cols), sub, 1e-12)
    only_labels_read = y.astype(float)
    only_labels_read[:, 1] = 7.0  # a column left out is never read
    assert _same(score_split(s, only_labels_read, m, categories=cols).ap, sub.ap)


def test_score_rows_scores_features_dense_or_at_the_known_pairs():
    rng = np.random.default_rng(7)
    s, y, m = _split(7, n=150, c=5)
    z = rng.normal(size=(150, 4)).astype(np.float16)
    w, b = torch.randn(5, 4, dtype=torch.float64), np.zeros(5)
    want = score_split(z.astype(np.float32) @ w.float().numpy().T + b.astype(np.float32), y, m)
    dense = score_rows(z, {"x": (w, b)}, y, m)["x"]
    _assert_same_scores(dense, want)
    _assert_same_scores(score_rows(z, {"x": (w, b)}, sp.csr_matrix(y * m), sp.csr_matrix(m))["x"], want, 1e-6)


def test_refused_inputs():
    s, y, m = _split(8, n=40, c=5)
    with pytest.raises(ValueError, match="sparse `labels` need their `label_mask`"):
        score_split(s, sp.csr_matrix(y))
    with pytest.raises(ValueError, match="must be N×C"):
        score_split(s[:, :2], y, m)
    bad = s.copy()
    bad[m] = np.nan
    with pytest.raises(ValueError, match="NaN value"):
        score_split(bad, y, m)
    with pytest.raises(ValueError, match="category index 5 is outside"):
        score_split(s, y, m).report(categories=[5])
    with pytest.raises(ValueError, match="kind"):
        score_split(s, y, m).macro("f1")
