"""Sparse labels end to end: known pairs in the builders, label_arrays(sparse=True), the engine, the metrics and
sharding give what the dense path gives."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from hf_cft.data import label_arrays, load_partial_dataset, partial_info
from hf_cft.engine import CFTConfig, fit_cft
from hf_cft.engine.views import Rows, Split, as_features
from hf_cft.metrics import partial_auroc, partial_average_precision
from hf_cft.metrics.pairs import scores_at_known
from hf_cft.metrics.partial import compute_partial_metric
from hf_cft.sparse import known_labels


def _sparse_problem(n=2400, d=16, c=7, known=0.06, seed=0, dense_cats=()):
    """Planted data with few known labels per category (a few categories mostly known, when asked)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w_true = rng.normal(size=(c, d)).astype(np.float32)
    y = (x @ w_true.T + rng.normal(size=(n, c)) > 1.0).astype(np.int8)
    share = np.full(c, known)
    share[list(dense_cats)] = 0.8
    m = rng.random((n, c)) < share
    w0 = (w_true + 2.0 * rng.normal(size=(c, d))).astype(np.float32)
    b0 = (0.5 * rng.normal(size=c)).astype(np.float32)
    return x, y, m, w0, b0


def _assert_same(a, b):
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert [json.dumps(vars(r), sort_keys=True, default=str) for r in a.report] == \
        [json.dumps(vars(r), sort_keys=True, default=str) for r in b.report]


# -- the known-pair form ------------------------------------------------------------------------------------
def test_known_labels_from_sparse_equals_dense_and_checks():
    x, y, m, *_ = _sparse_problem()
    y_noise = np.where(m, y, 7)  # unknown entries may hold anything
    dense = known_labels(y_noise, m)
    sparse = known_labels(sp.csr_matrix(y * m), sp.csr_matrix(m))
    for k in ("indptr", "rows", "values"):
        assert np.array_equal(getattr(dense, k), getattr(sparse, k))
    ly, lm = dense.to_dense()
    assert np.array_equal(lm, m) and np.array_equal(ly, y * m)
    sy, sm = dense.to_scipy()
    assert np.array_equal(sm.toarray(), m) and np.array_equal(sy.toarray(), y * m)
    rows = np.array([5, 3, 100, 7, 2000])
    sub = dense.take_rows(rows).to_dense()
    assert np.array_equal(sub[1], m[rows]) and np.array_equal(sub[0], (y * m)[rows])
    with pytest.raises(ValueError, match="must hold 1 .* or 0"):
        known_labels(sp.csr_matrix(np.where(m, 2, 0)), sp.csr_matrix(m))
    with pytest.raises(ValueError, match="same shape"):
        known_labels(sp.csr_matrix(y), sp.csr_matrix(m[:, :3]))


def test_read_only_memmap_is_shared_not_copied(tmp_path):
    z = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float16)
    np.save(tmp_path / "z.npy", z)
    mm = np.load(tmp_path / "z.npy", mmap_mode="r")
    t = as_features(mm)
    assert t.dtype == torch.float16 and t.data_ptr() == mm.ctypes.data  # the map itself, no N×d copy
    split = Split.from_arrays(Rows(mm, [4, 1, 9]), sp.csr_matrix(np.eye(3, 2)), sp.csr_matrix(np.ones((3, 2))),
                              "training")
    assert split.n == 3 and torch.equal(split.take(), torch.from_numpy(z[[4, 1, 9]]))


# -- the engine ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant,rule", [("refit", "crossfit"), ("bp", "strict"), ("ga", "strict")])
def test_engine_sparse_equals_dense(variant, rule):
    x, y, m, w0, b0 = _sparse_problem(dense_cats=(2,))
    cfg = CFTConfig(variant=variant, selection_rule=rule, epochs=40, generations=15, population_size=8,
                    patience=None, show_progress=False, device="cpu", refit_l2=[1e-3, 1e-1], block_memory_mb=0.05)
    dense = fit_cft(x, y, m, w0, b0, cfg)
    sparse = fit_cft(x, sp.csr_matrix(y * m), sp.csr_matrix(m), w0, b0, cfg)
    _assert_same(dense, sparse)
    assert dense.n_changed > 0


def test_engine_sparse_selection_split_rows_and_float16_memmap(tmp_path):
    x, y, m, w0, b0 = _sparse_problem(n=3000, seed=1)
    np.save(tmp_path / "z.npy", x.astype(np.float16))
    mm = np.load(tmp_path / "z.npy", mmap_mode="r")
    fit_rows, sel_rows = np.arange(0, 2500), np.arange(2500, 3000)
    cfg = CFTConfig(variant="refit", show_progress=False, device="cpu", refit_l2=[1e-3, 1e-2])
    z16 = x.astype(np.float16)
    dense = fit_cft(z16[fit_rows], y[fit_rows], m[fit_rows], w0, b0, cfg,
                    selection=(z16[sel_rows], y[sel_rows], m[sel_rows]))
    ys, ms = sp.csr_matrix(y * m), sp.csr_matrix(m)
    sparse = fit_cft(Rows(mm, fit_rows), ys[fit_rows], ms[fit_rows], w0, b0, cfg,
                     selection=(Rows(mm, sel_rows), ys[sel_rows], ms[sel_rows]))
    _assert_same(dense, sparse)
    with pytest.raises(ValueError, match="2500 rows but its `labels` have 3000"):
        fit_cft(Rows(mm, fit_rows), ys, ms, w0, b0, cfg)


SHARD_SCRIPT = r"""
import sys
import numpy as np
import scipy.sparse as sp
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from safetensors.numpy import save_file
from hf_cft.engine import CFTConfig, CFTEngine
from hf_cft.engine.decide import merge_shards

folder = sys.argv[1]
acc = Accelerator(cpu=True)
z = np.load(f"{folder}/z.npy", mmap_mode="r")
with np.load(f"{folder}/labels.npz", allow_pickle=False) as f:
    y, m = sp.load_npz(f"{folder}/y.npz"), sp.load_npz(f"{folder}/m.npz")
    w0, b0 = f["w0"], f["b0"]
cfg = CFTConfig(variant="refit", show_progress=False, device="cpu", refit_l2=[1e-3, 1e-1], block_memory_mb=0.05)
shard = (acc.process_index, acc.num_processes) if acc.num_processes > 1 else None
part = CFTEngine(cfg).fit(z, y, m, w0, b0, shard=shard)
parts = gather_object([part]) if acc.num_processes > 1 else [part]
if acc.is_main_process:
    res = merge_shards(parts, torch.from_numpy(w0), torch.from_numpy(b0))
    save_file({"weight": res.weight.numpy(), "bias": res.bias.numpy()}, f"{folder}/out{acc.num_processes}.safetensors")
acc.wait_for_everyone()
acc.end_training()  # destroys the process group: no rank exits while its peer still talks to it
"""


def test_category_sharding_on_sparse_labels_two_processes_same_bytes(tmp_path):
    x, y, m, w0, b0 = _sparse_problem(n=1500, c=9, known=0.1, seed=3)
    np.save(tmp_path / "z.npy", x.astype(np.float16))
    sp.save_npz(tmp_path / "y.npz", sp.csr_matrix(y * m))
    sp.save_npz(tmp_path / "m.npz", sp.csr_matrix(m))
    np.savez(tmp_path / "labels.npz", w0=w0, b0=b0)
    (tmp_path / "shard.py").write_text(SHARD_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, str(tmp_path / "shard.py"), str(tmp_path)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          str(tmp_path / "shard.py"), str(tmp_path)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert (tmp_path / "out1.safetensors").read_bytes() == (tmp_path / "out2.safetensors").read_bytes()


# -- metrics ------------------------------------------------------------------------------------------------
def test_sparse_metrics_equal_dense_and_sklearn():
    rng = np.random.default_rng(4)
    n, c = 400, 12
    s = rng.normal(size=(n, c)).astype(np.float32)
    s[:, 3] = np.round(s[:, 3])  # ties
    y = (rng.random((n, c)) < 0.3).astype(np.int8)
    m = rng.random((n, c)) < rng.uniform(0.01, 0.5, size=c)
    m[:, 5] = False  # a category with no known label: excluded
    ys, ms = sp.csr_matrix(y * m), sp.csr_matrix(m)
    for fn, ref in ((partial_average_precision, average_precision_score), (partial_auroc, roc_auc_score)):
        dense, sparse = fn(s, y, m), fn(s, ys, ms)
        assert sparse.per_category == pytest.approx(dense.per_category, nan_ok=True, abs=1e-12)
        assert sparse.value == pytest.approx(dense.value, abs=1e-12) and sparse.excluded == dense.excluded
        for j in range(c):
            yy = y[m[:, j], j]
            if 0 < yy.sum() < yy.size:
                assert sparse.per_category[j] == pytest.approx(ref(yy, s[m[:, j], j]), abs=1e-9)
    # 1-D scores at the known pairs give the same
    known = known_labels(ys, ms)
    pair_scores = s[known.rows, known.columns()]
    assert partial_average_precision(pair_scores, ys, ms).per_category == \
        pytest.approx(partial_average_precision(s, y, m).per_category, nan_ok=True)


def test_metric_pair_form_with_groups_equals_dense_and_module(tmp_path):
    import evaluate

    from hf_cft.labels import to_code
    from hf_cft.metrics import PARTIAL_MAP_PATH

    rng = np.random.default_rng(5)
    n, c, d = 300, 10, 6
    z = rng.normal(size=(n, d)).astype(np.float32)
    w, b = rng.normal(size=(c, d)).astype(np.float32), rng.normal(size=c).astype(np.float32)
    y = (rng.random((n, c)) < 0.4).astype(np.int8)
    m = rng.random((n, c)) < rng.uniform(0.05, 0.9, size=c)
    known = known_labels(y, m)
    ps = scores_at_known(z, w, b, known)
    np.testing.assert_allclose(ps, (z @ w.T + b)[known.rows, known.columns()], rtol=1e-5, atol=1e-5)
    counts = rng.integers(1, 1000, size=c)
    scores = np.zeros((n, c), dtype=np.float32)
    scores[known.rows, known.columns()] = ps
    dense = compute_partial_metric("ap", scores, to_code(y, m), groups=5, known_counts=counts)
    pairs = compute_partial_metric("ap", ps, known.values, groups=5, known_counts=counts,
                                   pair_categories=known.columns(), num_categories=c)
    assert pairs.pop("per_category") == pytest.approx(dense.pop("per_category"), abs=1e-12)
    assert pairs == pytest.approx(dense, abs=1e-12)
    assert {f"G{g}" for g in range(1, 6)} <= set(pairs)
    module = evaluate.load(PARTIAL_MAP_PATH)
    res = module.compute(predictions=ps, references=known.values, groups=5, known_counts=counts,
                         pair_categories=known.columns(), num_categories=c)
    assert res["map"] == pytest.approx(dense["map"], abs=1e-6) and res["G5"] == pytest.approx(dense["G5"], abs=1e-6)


# -- builders and label_arrays ------------------------------------------------------------------------------
def _oi_layout(root, n_train=40, c=30, seed=0, n_test=20):
    """A tiny Open Images V3 release: the real file names and headers, rows sorted by ImageID."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    mids = [f"/m/0{i:04d}" for i in range(c)]
    root.mkdir()
    (root / "classes-trainable.txt").write_text("\n".join(mids) + "\n")
    with open(root / "class-descriptions.csv", "w", newline="") as f:
        csv.writer(f).writerows([[mm, f"Class {i}"] for i, mm in enumerate(mids)])
    for split, n in (("train", n_train), ("test", n_test)):
        (root / split).mkdir()
        (root / "images" / split).mkdir(parents=True)
        with open(root / split / "annotations-human.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["ImageID", "Source", "LabelName", "Confidence"])
            for i in range(n):
                for k in sorted(rng.choice(c, size=int(rng.integers(1, 6)), replace=False)):
                    w.writerow([f"{i:016x}", "verification", mids[k], rng.choice(["1", "0"])])
        with open(root / split / "images.csv", "w", newline="") as f:
            csv.writer(f).writerow(["ImageID", "Subset", "OriginalURL"])
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, size=(24, 24, 3), dtype=np.uint8)).save(
                root / "images" / split / f"{i:016x}.jpg")
    return mids


def test_openimages_pairs_label_arrays_sparse_equals_dense_and_csv(tmp_path):
    mids = _oi_layout(tmp_path / "oi")
    ds = load_partial_dataset("openimages_v3", data_dir=str(tmp_path / "oi"), cache_dir=str(tmp_path / "c"))
    train = ds["train"]
    assert partial_info(train)["label_storage"] == "pairs"
    y, m = label_arrays(train)
    ys, ms = label_arrays(train, sparse=True, chunk_size=7)
    assert sp.isspmatrix_csr(ys) and sp.isspmatrix_csr(ms) and ys.shape == (40, 30)
    assert np.array_equal(ys.toarray(), y) and np.array_equal(ms.toarray(), m)
    assert label_arrays(train, sparse=None)[1].nnz == m.sum()
    # against the CSV itself
    expect = np.zeros((40, 30), dtype=np.int8) - 1
    with open(tmp_path / "oi" / "train" / "annotations-human.csv") as f:
        for image, _, mid, conf in list(csv.reader(f))[1:]:
            expect[int(image, 16), mids.index(mid)] = int(conf)
    assert np.array_equal(m, expect >= 0) and np.array_equal(y, (expect == 1).astype(np.int8))
    sub = train.select([3, 1, 30])
    assert np.array_equal(label_arrays(sub, sparse=True)[1].toarray(), m[[3, 1, 30]])


def test_partial_csv_pairs_and_dense_builder_sparse_read(tmp_path, digits):
    from PIL import Image

    root = tmp_path / "mine"
    (root / "img").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8, 8)).save(root / "img" / f"{i}.jpg")
    (root / "train.csv").write_text("image,cat,dog,owl\nimg/0.jpg,1,,-1\nimg/1.jpg,-1,0,1\nimg/2.jpg,0,1.0,\n")
    ds = load_partial_dataset("partial_csv", data_dir=str(root), cache_dir=str(tmp_path / "c"))
    y, m, u = label_arrays(ds["train"], ("labels", "label_mask", "uncertain_mask"), sparse=True)
    assert y.toarray().tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0]]
    assert m.toarray().tolist() == [[True, False, False], [False, True, True], [True, True, False]]
    assert u.toarray().tolist() == [[False, False, True], [True, False, False], [False, False, False]]
    dy, dm = label_arrays(digits["train"])  # a dense-stored builder answers the same API
    sy, sm = label_arrays(digits["train"], sparse=True, chunk_size=16)
    assert np.array_equal(sy.toarray(), dy) and np.array_equal(sm.toarray(), dm)
    with pytest.raises(ValueError, match="unknown label column"):
        label_arrays(ds["train"], ("label",))


def test_openimages_csv_to_calibrated_model_sparse_equals_dense(tmp_path):
    """The sparse path end to end: V3 CSVs → pairs → CFTHead.fit / evaluate → calibrated model, as dense."""
    import transformers

    from hf_cft.head import CFTHead

    _oi_layout(tmp_path / "oi", n_train=160, c=6, seed=2, n_test=60)
    ds = load_partial_dataset("openimages_v3", data_dir=str(tmp_path / "oi"), cache_dir=str(tmp_path / "c"))
    names = partial_info(ds["train"])["categories"]
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(image_size=24, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32, num_labels=len(names),
                                 id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    transformers.ViTForImageClassification(cfg).save_pretrained(tmp_path / "base")
    transformers.ViTImageProcessor(size={"height": 24, "width": 24}).save_pretrained(tmp_path / "base")
    head = CFTHead.from_pretrained(str(tmp_path / "base"), category_names=names)
    kw = dict(cache_dir=str(tmp_path / "cache"), show_progress=False)
    config = CFTConfig(variant="refit", selection_rule="strict", show_progress=False, refit_l2=[1e-3, 1e-1])
    result = head.fit(ds["train"], config, **kw)  # pair-stored split: sparse labels all the way
    z = head.extract(ds["train"], **kw).features
    y, m = label_arrays(ds["train"])
    dense = fit_cft(np.asarray(z), y, m, head.weight, head.bias, config, category_names=names)
    _assert_same(result, dense)
    assert result.n_changed > 0
    ev = head.evaluate(ds["test"], result, groups=2, **kw)
    zt = np.asarray(head.extract(ds["test"], **kw).features, dtype=np.float32)
    yt, mt = label_arrays(ds["test"])
    want = partial_average_precision(zt @ result.weight.numpy().T + result.bias.numpy(), yt, mt)
    assert ev["after"]["map"] == pytest.approx(want.value, abs=1e-6)
    assert {"map_G1", "map_G2", "mauc_G1", "per_category_ap"} <= set(ev["after"])
    head.apply(result)
    out = head.save_pretrained(tmp_path / "out", dataset_name="openimages_v3", evaluation={"test": ev})
    model = transformers.AutoModelForImageClassification.from_pretrained(out)
    assert torch.allclose(model.classifier.weight, result.weight.float())


def test_blocks_bound_padding_and_count_solver_state():
    from hf_cft.engine.blocks import PAD_RATIO, PAD_SLACK, make_blocks
    from hf_cft.engine.views import ViewFactory

    rng = np.random.default_rng(6)
    n, c = 20000, 300
    counts = np.minimum((2000 / np.arange(1, c + 1) ** 0.9).astype(int) + 2, n)  # Zipf-like known counts
    rows = [rng.choice(n, size=k, replace=False) for k in counts]
    m = sp.csr_matrix((np.ones(counts.sum(), dtype=bool), (np.concatenate(rows), np.repeat(np.arange(c), counts))),
                      shape=(n, c))
    split = Split.from_arrays(np.zeros((n, 4), dtype=np.float32), m, m, "training")
    f = ViewFactory(split, torch.device("cpu"), torch.float32, 0.5)
    blocks = make_blocks(list(range(c)), f, f, 4, 7, 64 * 2**20)
    assert sorted(x for b in blocks for x in b) == list(range(c))
    for b in blocks:
        lengths = [int(counts[x]) for x in b]
        assert max(lengths) <= PAD_RATIO * min(lengths) + PAD_SLACK
    # the solver's state counts: with d large, a small budget gives small blocks even for tiny categories
    tiny = make_blocks(list(range(c)), f, f, 100_000, 7, 64 * 2**20)
    assert max(len(b) for b in tiny) <= 64 * 2**20 / (4 * 24 * 7 * 100_001) + 1


def test_dense_labels_of_a_huge_pair_split_are_refused(tmp_path, monkeypatch):
    import hf_cft.data.columns as columns

    _oi_layout(tmp_path / "oi", n_train=10, c=8, n_test=2)
    ds = load_partial_dataset("openimages_v3", data_dir=str(tmp_path / "oi"), cache_dir=str(tmp_path / "c"))
    monkeypatch.setattr(columns, "DENSE_LIMIT", 50)
    with pytest.raises(ValueError, match="sparse=True"):
        label_arrays(ds["train"])
    assert label_arrays(ds["train"], sparse=True)[1].shape == (10, 8)


# -- messy scipy matrices (issue 27) ------------------------------------------------------------------------
def _messy(dense: np.ndarray, rng, fmt: str):
    """``dense`` as a scipy matrix storing explicit zeros, repeated entries and unsorted indices.

    A repeated entry adds nothing to what ``toarray()`` shows: a True of a boolean mask repeated, or a label
    repeated as an explicit 0.
    """
    rows, cols, data = [], [], []
    for i in range(dense.shape[0]):
        entries = [(j, dense[i, j]) for j in np.flatnonzero(dense[i])]
        zeros = rng.choice(dense.shape[1], size=2, replace=False)
        entries += [(j, dense.dtype.type(0)) for j in zeros if not dense[i, j]]  # explicit zeros
        entries += [(j, v if dense.dtype == np.bool_ else dense.dtype.type(0)) for j, v in entries[:2]]  # repeats
        for k in rng.permutation(len(entries)):  # unsorted
            rows.append(i)
            cols.append(entries[k][0])
            data.append(entries[k][1])
    rows, cols, data = np.array(rows), np.array(cols, dtype=np.int32), np.array(data, dtype=dense.dtype)
    if fmt == "coo":
        return sp.coo_matrix((data, (rows, cols)), shape=dense.shape)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=dense.shape[0]))])
    out = sp.csr_matrix((data, cols, indptr), shape=dense.shape)  # kept as given: not canonical
    assert not out.has_canonical_format
    return out if fmt == "csr" else out.tocsc()


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_sparse_masks_with_explicit_zeros_repeats_and_unsorted_indices_equal_the_dense_mask(fmt):
    x, y, m, w0, b0 = _sparse_problem(n=500, d=8, c=5, known=0.3, seed=3)
    rng = np.random.default_rng(0)
    ys, ms = _messy((y * m).astype(np.int8), rng, fmt), _messy(m, rng, fmt)
    assert np.array_equal(ms.toarray(), m) and np.array_equal(ys.toarray(), y * m)
    assert (ms.data == 0).any()  # explicit False entries are stored
    before = [(a.data.copy(), getattr(a, "indices", getattr(a, "col", None)).copy()) for a in (ys, ms)]
    dense = known_labels(y, m)
    messy = known_labels(ys, ms)
    for k in ("indptr", "rows", "values"):
        assert np.array_equal(getattr(dense, k), getattr(messy, k)), k
    for a, (data, idx) in zip((ys, ms), before):  # the caller's matrices are left as they were
        assert np.array_equal(a.data, data) and np.array_equal(getattr(a, "indices", getattr(a, "col", None)), idx)
    s = x @ w0.T + b0
    for fn in (partial_average_precision, partial_auroc):  # exactly the clean sparse path, and the dense one
        d, c, q = fn(s, y, m), fn(s, sp.csr_matrix(y * m), sp.csr_matrix(m)), fn(s, ys, ms)
        assert q.per_category == pytest.approx(c.per_category, nan_ok=True, abs=0) and q.excluded == d.excluded
        assert q.per_category == pytest.approx(d.per_category, nan_ok=True, abs=1e-12)
    cfg = CFTConfig(variant="refit", selection_rule="strict", patience=None, show_progress=False, device="cpu",
                    refit_l2=[1e-3, 1e-1])
    _assert_same(fit_cft(x, y, m, w0, b0, cfg), fit_cft(x, ys, ms, w0, b0, cfg))


def test_a_pair_split_listing_a_category_twice_reads_like_its_dense_lists():
    import datasets

    from hf_cft.data import with_dense_labels

    info = datasets.DatasetInfo(description=json.dumps({"categories": ["a", "b", "c", "d"]}))
    ds = datasets.Dataset.from_dict({"image": ["x", "y", "z"],
                                     "positive_categories": [[2, 0, 2], [], [1]],
                                     "negative_categories": [[3, 3], [1, 0], [1, 2]]}, info=info)
    dense = with_dense_labels(ds)[:]
    y, m = label_arrays(ds, sparse=True, chunk_size=2)
    assert np.array_equal(y.toarray(), dense["labels"]) and np.array_equal(m.toarray(), dense["label_mask"])
    assert m.has_canonical_format and m.nnz == np.sum(dense["label_mask"]) and set(y.data) == {1}
    assert np.array_equal(label_arrays(ds)[1], dense["label_mask"])
