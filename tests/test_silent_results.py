"""Silent wrong results (issue 27): properties whose violation gives a user a wrong number and no error.

1. A run resumed into the same checkpoint folder with any setting that changes results gives exactly the result
   of a fresh run with the new settings; a setting that does not change results reuses the finished blocks.
2. Every registered variant's candidate trajectory depends on the fit labels only, never on the selection
   labels (only the choice among the candidates may depend on those).
3. A scipy.sparse mask with explicit zeros, duplicate entries and unsorted indices means what its dense form
   means: the same known pairs, metrics and engine results.
4. The recipe's headroom rows equal an independent scikit-learn fit whose C is chosen on the evaluation split.

The only internal hook is :func:`recorded_trajectories` (wraps a registered runner and its tracker); everything
else goes through public APIs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections import defaultdict

import numpy as np
import pytest
import torch

from hf_cft import CFTConfig, CFTEngine, fit_cft
from hf_cft.engine.variants import VARIANTS, get_variant


@contextlib.contextmanager
def recorded_trajectories(name: str):
    """While open, variant ``name`` records every candidate it hands its tracker: ``{category: [(step, w, b)]}``.

    The one internal hook of this file (a runner's :class:`~hf_cft.engine.registry.BlockTask` and the tracker's
    ``update`` / ``update_row``); adapt here if the engine's internals move.
    """
    real = get_variant(name)
    log: dict[int, list] = defaultdict(list)

    def runner(task):
        cats, tracker = list(task.categories), task.tracker
        base = type(tracker)

        class Recording(base):
            def update(self, step, w, b, score):
                assert w.shape[0] == len(cats), "a tracker of part of the block: map its rows to categories here"
                for j, c in enumerate(cats):
                    log[c].append((int(step), w[j].detach().clone(), b[j].detach().clone()))
                return base.update(self, step, w, b, score)

            def update_row(self, i, step, w, b, score):
                log[cats[i]].append((int(step), w.detach().clone(), b.detach().clone()))
                return base.update_row(self, i, step, w, b, score)

        tracker.__class__ = Recording
        real.runner(task)

    VARIANTS[name] = dataclasses.replace(real, runner=runner)
    try:
        yield log
    finally:
        VARIANTS[name] = real


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny problems run fastest on one thread (and unharmed by other processes on a shared machine)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # installed with scikit-learn; without it only torch is limited
        threadpool_limits = contextlib.nullcontext
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):  # numpy's BLAS too
            yield
    finally:
        torch.set_num_threads(before)


# tiny settings of every variant (a variant registered later runs with its defaults)
TINY = dict(epochs=24, lr=1e-2, generations=12, population_size=6, mutation_range=0.05, pygad_generations=5,
            pygad_population_size=6, pygad_num_parents_mating=4, pygad_keep_parents=2,
            pygad_mutation_probability=0.5, pygad_mutation_range=0.2, refit_l2=[1e-2, 1.0], show_progress=False,
            device="cpu")


def _problem(seed=0, n=120, n_sel=60, d=6, c=3, known=0.8):
    """A training split, a selection split (every category with known positives and negatives) and a head."""
    rng = np.random.default_rng(seed)
    w_true = rng.normal(size=(c, d))
    x, xs = rng.normal(size=(n, d)).astype(np.float32), rng.normal(size=(n_sel, d)).astype(np.float32)
    y = (x @ w_true.T + rng.normal(size=(n, c)) > 0.3).astype(np.int8)
    ys = (xs @ w_true.T + rng.normal(size=(n_sel, c)) > 0.3).astype(np.int8)
    m, ms = rng.random((n, c)) < known, rng.random((n_sel, c)) < known
    w0 = (w_true + 1.5 * rng.normal(size=(c, d))).astype(np.float32)
    b0 = (0.3 * rng.normal(size=c)).astype(np.float32)
    return (x, y, m), (xs, ys, ms), w0, b0


def _assert_same_result(a, b):
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert a.to_dict() == b.to_dict()


def _differs(a, b) -> bool:
    return not torch.equal(a.weight, b.weight) or not torch.equal(a.bias, b.bias) or a.to_dict() != b.to_dict()


# --- 1. resume with another setting -----------------------------------------------------------------------

def _flip_fit_labels(train, sel):
    (x, y, m), s = train, sel
    y = y.copy()
    y[::3] = 1 - y[::3]
    return (x, y, m), s


def _flip_selection_labels(train, sel):
    (xs, ys, ms) = sel
    ys = ys.copy()
    ys[::4] = 1 - ys[::4]
    return train, (xs, ys, ms)


# (variant, what changes: config fields or a change of the data); each changes the result
RESULT_CHANGES = [
    ("refit", {"refit_l2": [1e-3, 10.0]}),  # a variant option: the λ grid
    ("refit", {"refit_toward": "trained"}),
    ("bp", {"epochs": 40}),  # a variant option: the epochs
    ("bp", {"lr": 3e-2}),
    ("bp", {"bp_loss": "wmw"}),
    ("ga", {"generations": 20}),
    ("ga", {"seed": 7}),  # the seed (the GA's stream; the selection split is given)
    ("ga", {"metric": "auroc"}),
    ("pygad", {"pygad_generations": 8}),  # the metric (the GA's fitness and, under the strict rule, the selection)
    ("refit", {"selection_rule": "crossfit"}),  # the selection rule
    ("bp", {"selection_metric": "auroc"}),
    ("refit", _flip_fit_labels),  # the data
    ("ga", _flip_selection_labels),
]


def _ids(case):
    variant, change = case
    return f"{variant}-{change.__name__.strip('_') if callable(change) else '-'.join(change)}"


@pytest.mark.parametrize("case", RESULT_CHANGES, ids=[_ids(c) for c in RESULT_CHANGES])
def test_resume_with_a_changed_setting_equals_a_fresh_run(tmp_path, case):
    """A run resumed into the folder of a finished run with another setting gives exactly the fresh run's result
    (a finished block is never reused for settings or data it was not computed with)."""
    variant, change = case
    train, sel, w0, b0 = _problem()
    old_cfg = CFTConfig(variant=variant, selection_rule="strict", patience=None, **TINY)
    old = CFTEngine(old_cfg).fit(*train, w0, b0, selection=sel, checkpoint_dir=str(tmp_path))
    assert os.listdir(tmp_path)  # its blocks are kept
    if callable(change):
        cfg, (train, sel) = old_cfg, change(train, sel)
    else:
        cfg = dataclasses.replace(old_cfg, **change)
    fresh = CFTEngine(cfg).fit(*train, w0, b0, selection=sel)
    assert _differs(fresh, old), "the change must change the result, else this case tests nothing"
    resumed = CFTEngine(cfg).fit(*train, w0, b0, selection=sel, checkpoint_dir=str(tmp_path))
    _assert_same_result(resumed, fresh)


def _block_files(folder) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in os.scandir(folder)}


@pytest.mark.parametrize("variant", ["refit", "ga"])
def test_resume_with_a_setting_that_changes_nothing_reuses_the_blocks(tmp_path, variant):
    """Progress bars change no result: a rerun with them reuses every finished block (no file written). The
    memory budget and the device name ('auto' on a machine without an accelerator is the CPU) give the fresh
    run's result, whether or not their blocks are reused."""
    train, sel, w0, b0 = _problem()
    cfg = CFTConfig(variant=variant, selection_rule="strict", patience=None, **TINY)
    first = CFTEngine(cfg).fit(*train, w0, b0, selection=sel, checkpoint_dir=str(tmp_path))
    files = _block_files(tmp_path)
    with recorded_trajectories(variant) as log:
        again = CFTEngine(dataclasses.replace(cfg, show_progress=True)).fit(
            *train, w0, b0, selection=sel, checkpoint_dir=str(tmp_path))
    assert not log and _block_files(tmp_path) == files  # nothing run, nothing written
    assert torch.equal(again.weight, first.weight) and torch.equal(again.bias, first.bias)
    others = [{"block_memory_mb": 0.002}]  # one category per block: another partition, another GA seed per block
    if not torch.cuda.is_available():
        others.append({"device": "auto"})
    for change in others:
        other = dataclasses.replace(cfg, **change)
        resumed = CFTEngine(other).fit(*train, w0, b0, selection=sel, checkpoint_dir=str(tmp_path))
        _assert_same_result(resumed, CFTEngine(other).fit(*train, w0, b0, selection=sel))


# --- 2. the candidates never see the selection labels -----------------------------------------------------

def _random_labels(split, seed=1):
    """The split with random labels on the same known pairs (each category keeps a known positive and negative,
    so no category is skipped where it was fitted before)."""
    x, y, m = split
    rng = np.random.default_rng(seed)
    r = (rng.random(y.shape) < 0.5).astype(np.int8)
    for c in range(y.shape[1]):
        rows = np.flatnonzero(m[:, c])
        r[rows[0], c], r[rows[1], c] = 1, 0
    return x, r, m


def _trajectories(name, train, sel, w0, b0, cfg):
    with recorded_trajectories(name) as log:
        result = fit_cft(*train, w0, b0, cfg, selection=sel)
    return dict(log), result


def _same_trajectory(a, b) -> bool:
    return [s for s, _, _ in a] == [s for s, _, _ in b] and all(
        torch.equal(wa, wb) and torch.equal(ba, bb) for (_, wa, ba), (_, wb, bb) in zip(a, b))


@pytest.mark.parametrize("known", [0.8, 0.3], ids=["dense", "gathered"])
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_candidates_do_not_depend_on_the_selection_labels(name, known):
    """Every variant's candidate rows, at every recorded step and for every category, are the same when the
    selection split's labels are replaced by random ones: selection labels choose among candidates, never make
    them. (Mostly known labels are scored as masked columns, few known ones gathered per category.)"""
    train, sel, w0, b0 = _problem(known=known)
    cfg = CFTConfig(variant=name, selection_rule="strict", patience=None, **TINY)
    real, kept = _trajectories(name, train, sel, w0, b0, cfg)
    rand, kept_rand = _trajectories(name, train, _random_labels(sel), w0, b0, cfg)
    n_cat = w0.shape[0]
    assert sorted(real) == sorted(rand) == list(range(n_cat)) and all(real[c] for c in real)
    for c in range(n_cat):
        assert _same_trajectory(real[c], rand[c]), f"{name}: category {c}'s candidates follow the selection labels"
    # the selection labels did change, and with them what the selection saw
    assert [r.original_score for r in kept.report] != [r.original_score for r in kept_rand.report]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_candidates_depend_on_the_fit_labels(name):
    """The reverse: other fit labels give other candidates, for every category (the candidates are fitted on them)."""
    train, sel, w0, b0 = _problem()
    cfg = CFTConfig(variant=name, selection_rule="strict", patience=None, **TINY)
    real, _ = _trajectories(name, train, sel, w0, b0, cfg)
    other, _ = _trajectories(name, _random_labels(train), sel, w0, b0, cfg)
    for c in range(w0.shape[0]):
        assert not _same_trajectory(real[c], other[c]), f"{name}: category {c}'s candidates ignore its fit labels"


# --- 3. what a scipy.sparse mask means ---------------------------------------------------------------------

def _messy(dense: np.ndarray, rng, fmt: str, dtype):
    """``dense`` as a scipy matrix holding what scipy allows besides its plain form: explicit zeros (at unknown
    entries, and paired with a stored one at known entries), duplicate entries (summed by scipy, as ``toarray``
    does) and unsorted indices. Its ``toarray()`` is ``dense``."""
    n, c = dense.shape
    rows, cols, data = [], [], []
    for i in range(n):
        entries = []
        for j in range(c):
            if dense[i, j]:
                entries.append((j, 1))
                if rng.random() < 0.3:
                    entries.append((j, 0))  # a stored zero beside the one: still the one
                if dtype == np.bool_ and rng.random() < 0.3:
                    entries.append((j, 1))  # a duplicate: True twice is True
            elif rng.random() < 0.4:
                entries.extend([(j, 0)] * (1 + int(rng.random() < 0.3)))  # explicit zeros, some duplicated
        order = rng.permutation(len(entries))  # unsorted within the row
        for k in order:
            rows.append(i)
            cols.append(entries[k][0])
            data.append(entries[k][1])
    data = np.asarray(data, dtype=dtype)
    import scipy.sparse as sp

    if fmt == "coo":
        out = sp.coo_matrix((data, (rows, cols)), shape=(n, c))
    else:  # CSR (or CSC) built from its arrays, so nothing is summed, sorted or dropped on the way
        major, minor = (np.asarray(rows), np.asarray(cols)) if fmt == "csr" else (np.asarray(cols), np.asarray(rows))
        order = np.argsort(major, kind="stable")
        indptr = np.concatenate([[0], np.cumsum(np.bincount(major, minlength=n if fmt == "csr" else c))])
        cls = sp.csr_matrix if fmt == "csr" else sp.csc_matrix
        out = cls((data[order], minor[order], indptr), shape=(n, c))
        assert not out.has_sorted_indices or fmt == "csc"
    assert np.array_equal(out.toarray().astype(dense.dtype), dense)
    assert (out.data == 0).any()  # explicit zeros are there
    return out


MESSY = [("csr", np.bool_), ("csr", np.int8), ("csc", np.bool_), ("coo", np.bool_), ("coo", np.float32)]


def _messy_problem(fmt, dtype, seed=3, n=160, c=4, known=0.35):
    rng = np.random.default_rng(seed)
    (x, y, m), _, w0, b0 = _problem(seed=seed, n=n, c=c, known=known)
    y = (y * m).astype(np.int8)  # the known positives (a sparse label matrix stores nothing else but zeros)
    return (x, y, m), (_messy(y, rng, fmt, dtype if dtype != np.bool_ else np.int8), _messy(m, rng, fmt, dtype)), \
        w0, b0


@pytest.mark.parametrize("fmt,dtype", MESSY, ids=[f"{f}-{np.dtype(t).name}" for f, t in MESSY])
def test_a_messy_sparse_mask_gives_the_known_pairs_of_its_dense_form(fmt, dtype):
    """Explicit zeros are unknown labels, duplicates one label, unsorted indices the same pairs."""
    from hf_cft.sparse import known_labels

    (_, y, m), (ys, ms), _, _ = _messy_problem(fmt, dtype)
    want, got = known_labels(y, m), known_labels(ys, ms)
    for k in ("indptr", "rows", "values"):
        assert np.array_equal(getattr(got, k), getattr(want, k)), k
    assert int(got.known_counts().sum()) == int(m.sum())


@pytest.mark.parametrize("fmt,dtype", MESSY, ids=[f"{f}-{np.dtype(t).name}" for f, t in MESSY])
def test_a_messy_sparse_mask_gives_the_metrics_of_its_dense_form(fmt, dtype):
    from hf_cft.metrics import partial_auroc, partial_average_precision

    (x, y, m), (ys, ms), w0, b0 = _messy_problem(fmt, dtype)
    s = x @ w0.T + b0
    for fn in (partial_average_precision, partial_auroc):
        want, got = fn(s, y, m), fn(s, ys, ms)
        np.testing.assert_allclose(got.per_category, want.per_category, rtol=0, atol=1e-12)
        assert got.value == pytest.approx(want.value, abs=1e-12) and got.excluded == want.excluded


@pytest.mark.parametrize("variant", ["refit", "ga"])
def test_a_messy_sparse_mask_gives_the_engine_results_of_its_dense_form(variant):
    """fit_cft on a messy sparse training split and selection split equals fit_cft on their dense forms."""
    (x, y, m), (ys, ms), w0, b0 = _messy_problem("csr", np.bool_)
    (xs, sy, sm), (sys_, sms), _, _ = _messy_problem("coo", np.bool_, seed=4)
    cfg = CFTConfig(variant=variant, selection_rule="strict", patience=None, **TINY)
    want = fit_cft(x, y, m, w0, b0, cfg, selection=(xs, sy, sm))
    got = fit_cft(x, ys, ms, w0, b0, cfg, selection=(xs, sys_, sms))
    _assert_same_result(got, want)
    assert want.n_changed > 0


# --- 4. the headroom rows -----------------------------------------------------------------------------------

HEADROOM_TOL = 1e-6  # mAP / mAUC: both fits reach the same optimum to ~1e-6, which moves no rank of the fixture


@functools.lru_cache(maxsize=1)
def _sklearn_fits(seed: int) -> dict:
    """Per row kind, category and λ of :func:`_headroom_problem` (``seed``): the (AP, AUROC) on the evaluation
    split's known labels and on the training split's known labels of a scikit-learn LogisticRegression fitted on
    the training images whose labels are known (all images for the oracle row).

    hf_cft's objective is mean BCE + λ/2·||w||² (bias free), scikit-learn's C·ΣBCE + ½||w||²: C = 1 / (n·λ)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import average_precision_score, roc_auc_score
    from threadpoolctl import threadpool_limits

    from hf_cft.recipe import HEADROOM_L2

    z, full, mask, ze, ye, me = _headroom_problem(seed)

    def scores(clf, x, y, known):
        s = x.astype(np.float64) @ clf.coef_[0] + clf.intercept_[0]
        return average_precision_score(y[known], s[known]), roc_auc_score(y[known], s[known])

    out = {}
    with threadpool_limits(1):  # scikit-learn's and scipy's thread pools (loaded by the imports above)
        for kind, m in (("upper", mask), ("oracle", np.ones_like(mask))):
            for c in range(full.shape[1]):
                rows = m[:, c]
                for lam in HEADROOM_L2:
                    clf = LogisticRegression(C=1.0 / (rows.sum() * lam), tol=1e-10, max_iter=10_000)
                    clf.fit(z[rows].astype(np.float64), full[rows, c])
                    out[kind, c, lam] = {"eval": scores(clf, ze, ye[:, c], me[:, c]),
                                         "train": scores(clf, z, full[:, c], mask[:, c])}
    return out


def _sklearn_headroom(seed: int, metric: str, tuned_on: str = "eval") -> dict:
    """The headroom rows, independently: per category the λ whose ``metric`` is best on the ``tuned_on`` split's
    known labels (the first of equals), and the mean evaluation AP and AUROC at those λ."""
    from hf_cft.recipe import HEADROOM_L2

    fits, at = _sklearn_fits(seed), (0 if metric == "ap" else 1)
    out = {}
    for kind in ("upper", "oracle"):
        picked = []
        for c in range(_headroom_problem(seed)[1].shape[1]):
            key = [fits[kind, c, lam][tuned_on][at] for lam in HEADROOM_L2]
            picked.append(fits[kind, c, HEADROOM_L2[int(np.argmax(key))]]["eval"])
        out[kind] = tuple(float(v) for v in np.mean(picked, axis=0))
    return out


HEADROOM_SEED = 5


def _headroom_problem(seed: int, n=90, n_eval=120, d=30, c=3):
    rng = np.random.default_rng(seed)
    w_true = rng.normal(size=(c, d)) / np.sqrt(d) * 2
    z, ze = rng.normal(size=(n, d)).astype(np.float32), rng.normal(size=(n_eval, d)).astype(np.float32)
    full = (z @ w_true.T + rng.normal(size=(n, c)) > 0).astype(np.int8)
    ye = (ze @ w_true.T + rng.normal(size=(n_eval, c)) > 0).astype(np.int8)
    mask, me = rng.random((n, c)) < 0.5, rng.random((n_eval, c)) < 0.7
    return z, full, mask, ze, ye, me


@pytest.mark.parametrize("metric", ["ap", "auroc"])
def test_headroom_rows_equal_an_independent_sklearn_fit_tuned_on_the_evaluation_split(metric):
    from hf_cft.recipe import ORACLE, UPPER_BOUND, headroom_rows

    rows = {r["method"]: r for r in headroom_rows(*_headroom_problem(HEADROOM_SEED), metric)}
    assert set(rows) == {UPPER_BOUND, ORACLE} and all(r["reporting_only"] for r in rows.values())
    want = _sklearn_headroom(HEADROOM_SEED, metric)
    for name, kind in ((UPPER_BOUND, "upper"), (ORACLE, "oracle")):
        assert rows[name]["map"] == pytest.approx(want[kind][0], abs=HEADROOM_TOL), name
        assert rows[name]["mauc"] == pytest.approx(want[kind][1], abs=HEADROOM_TOL), name
    # the fixture tells the splits apart: λ tuned on the training labels would report other numbers
    wrong = _sklearn_headroom(HEADROOM_SEED, metric, tuned_on="train")
    assert abs(wrong["upper"][0] - want["upper"][0]) + abs(wrong["upper"][1] - want["upper"][1]) > 100 * HEADROOM_TOL
