"""The named steps of the trainer (hf_cft.training.train) and of the recipe (hf_cft.recipe.run), one by one."""

import json
import os

import numpy as np
import pytest
import torch

from hf_cft import training as T
from hf_cft.constants import TRAINER_STATE_NAME
from hf_cft.training import TrainArguments, TrainData, checkpoints
from hf_cft.training import pretrain as P


class _Accelerator:
    """The accelerate calls the steps make, for one process, with save_state / load_state recorded."""

    is_main_process = is_local_main_process = True
    num_processes = 1

    def __init__(self):
        self.saved, self.loaded = [], []

    def save_state(self, path):
        os.makedirs(path, exist_ok=True)
        self.saved.append(path)

    def load_state(self, path):
        self.loaded.append(path)

    def wait_for_everyone(self):
        pass

    def print(self, *args):
        pass


def _data(n=40, c=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, c)) < 0.4).astype(np.float32)
    mask = rng.random((n, c)) < 0.5
    return TrainData(ds={"train": list(range(n))}, names=[f"c{i}" for i in range(c)], labels=labels, mask=mask,
                     uncertain=np.zeros_like(mask), dataset_config={})


# -- trainer ------------------------------------------------------------------------------------------------------
def test_prepare_splits_is_seeded_disjoint_and_capped():
    args = TrainArguments(seed=3, val_fraction=0.2, max_train_samples=50)
    fit, val = T.prepare_splits(args, 200)
    again = T.prepare_splits(args, 200)
    assert np.array_equal(fit, again[0]) and np.array_equal(val, again[1])
    assert len(val) == 10 and len(fit) == 40 and not set(fit) & set(val)
    assert list(fit) == sorted(fit) and list(val) == sorted(val)
    other = T.prepare_splits(TrainArguments(seed=4, val_fraction=0.2, max_train_samples=50), 200)
    assert not np.array_equal(val, other[1])
    assert len(T.prepare_splits(TrainArguments(val_fraction=0.01), 20)[1]) == 1  # at least one image


def test_dataset_options_add_the_simulation_only_where_it_applies():
    assert T.dataset_options("digits_mosaic", None, 0.3, "uniform", 7) == {
        "known_ratio": 0.3, "protocol": "uniform", "seed": 7}
    given = T.dataset_options("coco2014", '{"known_ratio": 0.5, "n": 2}', 0.3, "uniform", 7)
    assert given == {"known_ratio": 0.5, "n": 2, "protocol": "uniform", "seed": 7}  # the JSON wins
    assert T.dataset_options("chexpert", '{"frontal_only": true}', 0.3, "uniform", 7) == {"frontal_only": True}


def _batch(data, rows, seed=0):
    torch.manual_seed(seed)
    rows = torch.as_tensor(rows)
    return {"labels": torch.from_numpy(data.labels)[rows], "label_mask": torch.from_numpy(data.mask)[rows],
            "uncertain": torch.zeros(len(rows), data.labels.shape[1], dtype=torch.bool), "index": rows}


@pytest.mark.parametrize("method", T.METHODS)
def test_method_loss_reads_what_each_method_is_defined_to_read(method):
    data = _data()
    state = T.initial_state(data)
    batch = _batch(data, range(12))
    logits = torch.randn(12, 3)
    args = TrainArguments(method=method)
    loss = T.method_loss(args, logits, batch, 1, state)
    assert loss.ndim == 0 and float(loss) > 0
    unknown = ~batch["label_mask"]
    flipped = dict(batch, labels=torch.where(unknown, 1 - batch["labels"], batch["labels"]))
    same = T.method_loss(args, logits, flipped, 1, state)
    if method == "cl":  # reads its pseudo-labels by image index, not the batch's labels
        torch.testing.assert_close(same, loss)
        state.pseudo["labels"][batch["index"]] = 1 - state.pseudo["labels"][batch["index"]]
        assert not torch.allclose(T.method_loss(args, logits, batch, 1, state), loss)
    else:  # the labels behind the mask are never read
        torch.testing.assert_close(same, loss)


def test_method_losses_agree_where_their_definitions_do():
    data = _data()
    batch = _batch(data, range(16))
    logits = torch.randn(16, 3)
    state = T.initial_state(data)

    def loss(method, b=batch, **kw):
        return T.method_loss(TrainArguments(method=method, **kw), logits, b, 1, state)

    all_known = dict(batch, labels=torch.where(batch["label_mask"], batch["labels"], 0.0),
                     label_mask=torch.ones_like(batch["label_mask"]))
    torch.testing.assert_close(loss("an"), loss("ignore", all_known))  # AN: unknowns are known negatives
    torch.testing.assert_close(loss("ll_r"), loss("an"))  # LL-R rejects nothing in the first epoch


def test_a_method_added_to_the_registry_is_trained_with(monkeypatch):
    """The recipe of docs/architecture.md for a new training method: one entry of METHOD_REGISTRY."""
    from hf_cft.losses import asymmetric_loss
    from hf_cft.training.methods import METHOD_REGISTRY, Method

    def half_negatives(x):  # unknown labels count as negatives, at half weight
        return torch.where(x.mask, x.labels, torch.zeros_like(x.labels)), torch.where(x.mask, 1.0, 0.5)

    monkeypatch.setitem(METHOD_REGISTRY, "half_negatives", Method(half_negatives))
    data = _data()
    batch = _batch(data, range(12))
    logits = torch.randn(12, 3)
    got = T.method_loss(TrainArguments(method="half_negatives", loss="bce"), logits, batch, 1, T.initial_state(data))
    known = batch["label_mask"]
    per = asymmetric_loss(logits, torch.where(known, batch["labels"], 0.0), None, 0.0, 0.0, 0.0, reduce_dim=())
    torch.testing.assert_close(got, (per * torch.where(known, 1.0, 0.5)).sum() / 12)
    monkeypatch.delitem(METHOD_REGISTRY, "half_negatives")
    with pytest.raises(ValueError, match="half_negatives"):
        TrainArguments(method="half_negatives")


def test_selective_with_common_classes_is_ignore():
    data = _data()
    batch = _batch(data, range(16))
    logits = torch.randn(16, 3)
    state = T.initial_state(data)
    state.prior.fill_(0.5)  # every class common: Selective ignores every unknown

    def loss(method):
        return T.method_loss(TrainArguments(method=method), logits, batch, 1, state)

    torch.testing.assert_close(loss("selective"), loss("ignore"))
    assert float(loss("ignore")) < float(loss("an"))  # fewer entries counted


def test_initial_state_checkpoint_and_resume_round_trip(tmp_path):
    data = _data()
    state = T.initial_state(data)
    known_pos = np.where(data.mask, data.labels, 0).sum(0) / data.mask.sum(0)
    torch.testing.assert_close(state.prior, torch.from_numpy(known_pos).float())
    acc = _Accelerator()
    root = tmp_path / "checkpoints"
    for epoch in (9, 10):
        state.epoch, state.best_score, state.best_epoch = epoch, 0.5, 9
        state.history.append({"epoch": epoch, "loss": 1.0 / epoch})
        state.pseudo["mask"][0, 0] = bool(epoch % 2)
        T.checkpoint(acc, state, str(root))
    args = TrainArguments(output_dir=str(tmp_path), resume_from_checkpoint="latest")
    back = T.resume(args, acc, T.initial_state(data))
    assert acc.loaded == [str(root / "epoch_10")]  # the newest by number, not by name (epoch_9 sorts after)
    assert back.progress() == state.progress()
    assert torch.equal(back.pseudo["mask"], state.pseudo["mask"]) and torch.equal(back.prior, state.prior)
    assert T.resume(TrainArguments(output_dir=str(tmp_path)), acc, state) is state  # no resume asked
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        T.resume(TrainArguments(output_dir=str(tmp_path / "none"), resume_from_checkpoint="latest"), acc, state)



def test_selective_prior_is_the_known_positive_share_of_the_fit_rows_only():
    data = _data(n=40)
    data.fit_rows, data.val_rows = np.arange(0, 30), np.arange(30, 40)
    data.labels[30:] = 1.0  # the held-out validation rows: all known positives
    data.mask[30:] = True
    fit = data.labels[:30], data.mask[:30]
    expected = np.where(fit[1], fit[0], 0).sum(0) / fit[1].sum(0)
    state = T.initial_state(data)
    torch.testing.assert_close(state.prior, torch.from_numpy(expected).float())
    assert state.pseudo["mask"].shape == (40, 3)  # CL's pseudo-labels still cover every row (by image index)


def test_a_kill_while_checkpointing_leaves_the_previous_epoch_to_resume_from(tmp_path, monkeypatch):
    data = _data()
    state = T.initial_state(data)
    acc = _Accelerator()
    root = tmp_path / "checkpoints"
    state.epoch, state.history = 1, [{"epoch": 1, "loss": 1.0}]
    T.checkpoint(acc, state, str(root))
    real_save = checkpoints.save_file

    def killed(*a, **kw):  # dies after accelerate's state and trainer_state.json, before the pseudo-labels
        raise KeyboardInterrupt("killed")

    state.epoch, state.history = 2, [*state.history, {"epoch": 2, "loss": 0.5}]
    monkeypatch.setattr(checkpoints, "save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        T.checkpoint(acc, state, str(root))
    monkeypatch.setattr(checkpoints, "save_file", real_save)
    assert not (root / "epoch_2").exists()  # only a .tmp, never an incomplete epoch_2
    os.makedirs(root / "epoch_3")  # an incomplete folder of an older layout: no state files
    (root / "epoch_3" / TRAINER_STATE_NAME).write_text("")
    args = TrainArguments(output_dir=str(tmp_path), resume_from_checkpoint="latest")
    back = T.resume(args, acc, T.initial_state(data))
    assert acc.loaded == [str(root / "epoch_1")] and back.epoch == 1 and back.history == [{"epoch": 1, "loss": 1.0}]
    T.checkpoint(acc, state, str(root))  # the rerun epoch 2 replaces the stale .tmp
    assert sorted(os.listdir(root)) == ["epoch_1", "epoch_2", "epoch_3"]
    assert T.complete_checkpoints(str(root)) == [str(root / "epoch_1"), str(root / "epoch_2")]
    assert json.loads((root / "epoch_2" / TRAINER_STATE_NAME).read_text())["epoch"] == 2


class _Processes:
    """The accelerate calls of train_epoch and refresh_after_epoch in one process; reduce averages with another
    process."""

    is_main_process = is_local_main_process = False
    sync_gradients = True
    device = torch.device("cpu")

    def __init__(self, other_loss=None):
        self.other_loss, self.reduced = other_loss, []

    def accumulate(self, model):
        import contextlib

        return contextlib.nullcontext()

    def backward(self, loss):
        loss.backward()

    def reduce(self, t, reduction="sum"):
        assert reduction == "mean"
        self.reduced.append(float(t))
        return (t + self.other_loss) / 2

    def prepare(self, x):
        return x

    def gather_for_metrics(self, x):
        return x


def test_train_epoch_records_the_loss_averaged_over_processes():
    data = _data(n=24)
    state = T.initial_state(data)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    batches = [dict(_batch(data, rows), pixel_values=torch.randn(len(rows), 3, 2, 2))
               for rows in (range(0, 8), range(8, 16), range(16, 24))]
    args = TrainArguments(method="ignore", epochs=1)
    with torch.no_grad():
        local = np.mean([float(T.method_loss(args, model(b["pixel_values"]), b, 1, state)) for b in batches])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the model stays as it is: the local mean is known
    acc = _Processes(other_loss=5.0)
    loss = T.train_epoch(T.Run(args, acc, data, None), T.TrainParts(model, optimizer), batches, state, 1,
                         torch.Generator())
    np.testing.assert_allclose(acc.reduced, [local], rtol=1e-5)
    np.testing.assert_allclose(loss, (local + 5.0) / 2, rtol=1e-5)  # not the main process's own shard


class _RowModel(torch.nn.Module):
    """Probabilities per image row read from the image (its gray level is the row), set per round in ``probs``."""

    def __init__(self, probs):
        super().__init__()
        self.probs = probs

    def forward(self, x):
        rows = torch.round((x[:, 0, 0, 0] * 0.5 + 0.5) * 255).long()
        return torch.logit(self.probs[rows])


def test_cl_pseudo_labels_accumulate_over_epochs():
    from PIL import Image

    n, c = 4, 2
    images = [{"image": Image.new("L", (4, 4), color=r)} for r in range(n)]
    labels = np.zeros((n, c), dtype=np.float32)
    mask = np.zeros((n, c), dtype=bool)
    mask[3] = True
    labels[3, 0] = 1.0  # a known positive that the model scores low: never replaced
    data = TrainData(ds={"train": images}, names=["a", "b"], labels=labels, mask=mask, uncertain=np.zeros_like(mask),
                     dataset_config={})
    state = T.initial_state(data)
    args = TrainArguments(method="cl", batch_size=2, cl_threshold_pos=0.9, cl_threshold_neg=0.1)
    data.fit_rows = np.arange(n)
    run = T.Run(args, _Processes(), data, (4, [0.5] * 3, [0.5] * 3))

    def refresh(probs):
        T.refresh_after_epoch(run, _RowModel(torch.tensor(probs)), state)

    refresh([[0.95, 0.5], [0.5, 0.05], [0.5, 0.5], [0.01, 0.5]])  # round 1: (0, a) positive, (1, b) negative
    assert state.pseudo["mask"].tolist() == [[True, False], [False, True], [False, False], [True, True]]
    refresh([[0.5, 0.5], [0.5, 0.5], [0.97, 0.5], [0.01, 0.5]])  # round 2: scores drift back, (2, a) added
    assert state.pseudo["mask"].tolist() == [[True, False], [False, True], [True, False], [True, True]]
    assert state.pseudo["labels"].tolist() == [[1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 0.0]]
    refresh([[0.02, 0.5], [0.99, 0.5], [0.5, 0.5], [0.5, 0.5]])  # a pseudo-label, once given, is not revised
    assert state.pseudo["labels"][0, 0] == 1.0 and state.pseudo["labels"][1, 0] == 1.0


class _OneProcess:
    is_local_main_process = True

    def main_process_first(self):
        import contextlib

        return contextlib.nullcontext()


def test_digit_pretraining_uses_the_datasets_own_pools(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(P, "pretrain_digits", lambda folder, **kw: calls.append(kw))
    for config, fraction in (({"seed": 3, "test_pool_fraction": 0.5}, 0.5), ({"seed": 3}, 0.3)):
        data = dict(_data().__dict__, dataset_config=config)
        args = TrainArguments(init_from="digits", output_dir=str(tmp_path), seed=1)
        out = P.pretrain_backbone(args, _OneProcess(), TrainData(**data))
        assert out.init_from == str(tmp_path / "pretrained-digits")
        assert calls[-1]["pool_seed"] == 3 and calls[-1]["test_pool_fraction"] == fraction


def test_pretrain_digits_draws_from_the_training_pool_of_its_fraction_and_caches_by_it(tmp_path, monkeypatch):
    from hf_cft.data.digits import digit_pools

    real, fractions = P.single_digit_canvases, []

    def recorded(n, seed, pool_seed=0, grid=3, test_pool_fraction=0.3):
        fractions.append(test_pool_fraction)
        return real(n, seed, pool_seed, grid, test_pool_fraction)

    monkeypatch.setattr(P, "single_digit_canvases", recorded)
    small = dict(n_train=16, n_val=8, epochs=1, batch_size=8, show_progress=False)
    out = str(tmp_path / "pre")
    report = P.pretrain_digits(out, pool_seed=0, test_pool_fraction=0.5, **small)
    assert fractions == [0.5] and report["settings"]["test_pool_fraction"] == 0.5
    P.pretrain_digits(out, pool_seed=0, test_pool_fraction=0.5, **small)
    assert fractions == [0.5]  # reused: same settings
    P.pretrain_digits(out, pool_seed=0, test_pool_fraction=0.3, **small)
    assert fractions == [0.5, 0.3]  # another pool: not reused
    # the pools that fraction makes: a larger test share takes digits the default training pool holds
    test_half = set(digit_pools(0, 0.5)[2]["test"])
    assert test_half & set(digit_pools(0)[2]["train"]) and not test_half & set(digit_pools(0, 0.5)[2]["train"])


def test_build_optimizer_keeps_biases_and_norms_free_of_weight_decay():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    opt = T.build_optimizer(TrainArguments(optimizer="adamw", weight_decay=0.1, learning_rate=0.01), model)
    assert isinstance(opt, torch.optim.AdamW)
    decayed, free = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and all(p.ndim == 2 for p in decayed["params"])
    assert free["weight_decay"] == 0.0 and len(free["params"]) == 4  # 2 biases, the norm's weight and bias
    assert isinstance(T.build_optimizer(TrainArguments(optimizer="adam"), model), torch.optim.Adam)


def test_final_report_is_written_beside_the_best_model(tmp_path):
    data = _data()
    data.fit_rows, data.val_rows = T.prepare_splits(TrainArguments(), 40)
    state = T.initial_state(data)
    state.best_epoch, state.best_score = 2, 0.7
    os.makedirs(tmp_path / "best")
    args = TrainArguments(output_dir=str(tmp_path), report_split=None, dataset="digits_mosaic")
    report = T.final_report(T.Run(args, _Accelerator(), data, (24, [0.5] * 3, [0.5] * 3)), state)
    for folder in (tmp_path, tmp_path / "best"):
        saved = json.loads((folder / "train_report.json").read_text())
        assert saved == report
    assert report["validation_rows"] == data.val_rows.tolist() and report["train_rows"] == 40
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


# -- recipe -------------------------------------------------------------------------------------------------------
def test_resolve_selection_prefers_the_images_the_baseline_never_trained_on(tmp_path, digits):
    from hf_cft.data import label_arrays
    from hf_cft.recipe import RecipeArguments, resolve_selection

    n = len(digits["train"])
    z = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    labels, mask = label_arrays(digits["train"])
    (tmp_path / "train_report.json").write_text(json.dumps(
        {"dataset": "digits_mosaic", "train_rows": n, "validation_rows": [1, 5, 7]}))

    def features_of(split):
        return np.zeros((len(split), 2), np.float32)

    def resolve(selection, folder=tmp_path):
        recipe = RecipeArguments(selection=selection, eval_split="test", allow_selection_on_eval=True)
        return resolve_selection(recipe, str(folder), digits, z, labels, mask, features_of)

    fit_rows, sel, holdout, on_eval = resolve("auto")
    assert list(np.setdiff1d(np.arange(n), fit_rows)) == [1, 5, 7] and holdout is None and not on_eval
    assert np.array_equal(sel[0], z[[1, 5, 7]]) and np.array_equal(sel[1], labels[[1, 5, 7]])
    assert resolve("auto", tmp_path / "elsewhere")[1:3] == (None, 0.15)  # no report: the default hold-out
    assert resolve("holdout:0.3")[1:3] == (None, 0.3)
    fit_rows, sel, holdout, on_eval = resolve("split:test")
    assert len(fit_rows) == n and sel[0].shape == (len(digits["test"]), 2) and on_eval
    with pytest.raises(ValueError, match="no split 'nope'"):
        resolve("split:nope")


def test_final_variant_and_the_selection_statement():
    from hf_cft.recipe import RecipeArguments, final_variant, state_selection_on_eval

    class _R:
        def __init__(self, score):
            self.selection = "held out"
            self.score = score

        def summary(self):
            return {"selection_score_best": self.score}

    recipe = RecipeArguments()
    assert final_variant(recipe, {"bp": _R(0.9), "auto": _R(0.1)}) == "auto"
    assert final_variant(recipe, {"ga": _R(0.1)}) == "ga"
    assert final_variant(recipe, {"bp": _R(0.5), "refit": _R(0.6), "ga": _R(None)}) == "refit"
    r = _R(0.5)
    state_selection_on_eval(r, "test")
    assert r.selection.startswith("held out; SELECTION WAS DONE ON THE EVALUATION SPLIT (test)")


def test_evaluate_results_counts_improved_and_degraded_categories():
    from hf_cft.recipe import evaluate_results

    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 4)).astype(np.float32)
    w_true = rng.normal(size=(3, 4)).astype(np.float32)
    y = (z @ w_true.T > 0).astype(np.int8)
    m = np.ones_like(y, dtype=bool)
    w0 = w_true.copy()
    w0[0] = -w_true[0]  # category 0 is upside down in the baseline

    class _Res:
        n_changed = 2

        def __init__(self, w):
            self.weight, self.bias = torch.from_numpy(w), torch.zeros(3)

    better, worse = w0.copy(), w0.copy()
    better[0] = w_true[0]
    worse[1] = -w_true[1]
    table, scores = evaluate_results(z, y, m, w0, np.zeros(3), {"fix": _Res(better), "break": _Res(worse)})
    rows = {row["method"]: row for row in table}
    assert (rows["CFT-fix"]["improved"], rows["CFT-fix"]["degraded"]) == (1, 0)
    assert (rows["CFT-break"]["improved"], rows["CFT-break"]["degraded"]) == (0, 1)
    assert rows["CFT-fix"]["map"] > rows["baseline"]["map"] > rows["CFT-break"]["map"]
