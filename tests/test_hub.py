"""The Hub side of a head: card data filled by apply / evaluate, a calibrated folder that loads back with its
config and report, and CFTResult's JSON round trip."""

import json
import os

import numpy as np
import pytest
import torch
import transformers
from conftest import PROC

from hf_cft import CFTConfig, CFTResult, fit_cft
from hf_cft.head import CFTHead


def _result(c=3, d=16, variant="refit", **kw):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, d)).astype(np.float32)
    y = (z @ rng.normal(size=(d, c)) > 0).astype(np.int8)
    m = rng.random((500, c)) < 0.6
    w0, b0 = rng.normal(size=(c, d)).astype(np.float32), np.zeros(c, np.float32)
    return fit_cft(z, y, m, w0, b0, CFTConfig(variant=variant, show_progress=False, **kw),
                   category_names=["a", "b", "c"][:c])


def _vit(num_labels=3, names=("a", "b", "c")):
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(image_size=24, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32, num_labels=num_labels,
                                 id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    return transformers.ViTForImageClassification(cfg).eval()


def test_result_json_round_trip(tmp_path):
    res = _result(variant="auto", auto_variants=["refit", "bp"], epochs=30)  # crossfit: candidates and evidence
    assert any(r.candidates for r in res.report)
    res.extra["note"] = "kept"
    res.to_json(tmp_path / "cft_report.json")
    back = CFTResult.from_json(tmp_path / "cft_report.json", weight=res.weight, bias=res.bias)
    assert back.to_dict() == res.to_dict()  # config, protocol, summary, every report field, extra keys
    assert back.report == res.report
    assert back.config == res.config and back.n_changed == res.n_changed
    assert back.to_markdown() == res.to_markdown()
    no_rows = CFTResult.from_json(tmp_path)  # the folder; rows not given
    assert no_rows.weight.shape == (3, 0) and no_rows.to_dict() == res.to_dict()
    with pytest.raises(ValueError, match="3 categories"):
        CFTResult.from_json(tmp_path, weight=res.weight[:2], bias=res.bias[:2])


def test_a_calibrated_folder_gives_back_its_config_and_report(tmp_path):
    head = CFTHead(_vit())
    head.image_processor = PROC
    assert head.cft_config is None and head.cft_report is None
    result = fit_cft(*_features(head), head.weight, head.bias, CFTConfig(variant="refit", show_progress=False))
    head.apply(result).save_pretrained(tmp_path / "cal")
    back = CFTHead.from_pretrained(tmp_path / "cal")
    assert back.cft_config == result.config
    assert back.cft_report.to_dict() == result.to_dict()
    torch.testing.assert_close(back.cft_report.weight, result.weight)  # its rows are the model's
    assert back.cft_result is None  # nothing applied in this session
    head2 = CFTHead(_vit())
    head2.save_pretrained(tmp_path / "plain")
    plain = CFTHead.from_pretrained(tmp_path / "plain")
    assert plain.cft_config is None and plain.cft_report is None
    assert not os.path.exists(tmp_path / "plain" / "cft_config.json")


def _features(head):
    rng = np.random.default_rng(1)
    z = rng.normal(size=(400, head.hidden_size)).astype(np.float32)
    y = (z @ rng.normal(size=(head.hidden_size, head.num_labels)) > 0).astype(np.int8)
    return z, y, rng.random(y.shape) < 0.7


def test_card_data_is_filled_by_apply_and_evaluate(tmp_path, digits):
    from hf_cft.data import partial_info

    names = partial_info(digits["train"])["categories"]
    head = CFTHead(_vit(len(names), names))
    head.image_processor = PROC
    declared = set(vars(head))
    kw = dict(cache_dir=str(tmp_path / "cache"), show_progress=False)
    result = head.fit(digits["train"], CFTConfig(variant="refit", show_progress=False, selection_fraction=0.3), **kw)
    ev = head.evaluate(digits["test"], result, **kw)
    assert head.card_data.evaluation == {"test": ev}  # the split's own name
    head.apply(result)
    assert head.card_data.result is result and head.cft_result is result
    assert set(vars(head)) == declared  # every attribute was declared in __init__
    out = head.save_pretrained(tmp_path / "out", repo_id="me/cft")
    card = open(os.path.join(out, "README.md"), encoding="utf-8").read()
    assert "| test | mAP |" in card and 'model="me/cft"' in card and "model-index" in card
    assert head.card_data.repo_id is None  # the keywords update a copy for this save only
    out = head.save_pretrained(tmp_path / "given", evaluation={"val": ev})  # given figures replace collected ones
    card = open(os.path.join(out, "README.md"), encoding="utf-8").read()
    assert "| val | mAP |" in card and "| test | mAP |" not in card
    with pytest.raises(TypeError, match="dataset"):
        head.save_pretrained(tmp_path / "bad", datset_name="typo")


def test_card_lists_only_the_settings_of_its_variant(tmp_path):
    head = CFTHead(_vit())
    head.apply(fit_cft(*_features(head), head.weight, head.bias,
                       CFTConfig(variant="ga", generations=5, population_size=4, show_progress=False)))
    out = head.save_pretrained(tmp_path / "ga")
    card = open(os.path.join(out, "README.md"), encoding="utf-8").read()
    assert "| `generations` | `5` |" in card and "| `population_size` | `4` |" in card
    assert "`refit_l2`" not in card and "`epochs`" not in card
    with open(os.path.join(out, "cft_config.json"), encoding="utf-8") as f:
        assert json.load(f)["variant"] == "ga"


def test_save_keeps_every_other_file_and_subfolder_of_the_target(tmp_path):
    out = tmp_path / "outputs"
    (out / "cache" / "features").mkdir(parents=True)
    (out / "cache" / "features" / "big.npy").write_text("hours of features")
    (out / "train_log.txt").write_text("log")
    (out / "config.json").write_text("{}")  # an older model's file: hf_cft writes this name, so it is replaced
    head = CFTHead(_vit())
    head.apply(fit_cft(*_features(head), head.weight, head.bias, CFTConfig(variant="refit", show_progress=False)))
    head.save_pretrained(out)
    assert (out / "cache" / "features" / "big.npy").read_text() == "hours of features"
    assert (out / "train_log.txt").read_text() == "log"
    assert {"config.json", "model.safetensors", "cft_config.json", "cft_report.json", "README.md"} <= set(
        os.listdir(out))
    assert sorted(os.listdir(tmp_path)) == ["outputs"]  # no temporary folder left beside it
    back = transformers.AutoModelForImageClassification.from_pretrained(out).eval()
    x = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(back(x).logits, head.model(x).logits)
    # a plain save over a calibrated one: the user's files stay, the old calibration does not describe it
    CFTHead(_vit()).save_pretrained(out)
    assert (out / "train_log.txt").read_text() == "log" and (out / "cache" / "features" / "big.npy").exists()
    assert not (out / "cft_config.json").exists() and not (out / "cft_report.json").exists()
    assert CFTHead.from_pretrained(out).cft_report is None


def test_save_into_the_working_directory_keeps_the_project(tmp_path, monkeypatch):
    (tmp_path / "train.py").write_text("code")
    monkeypatch.chdir(tmp_path)
    CFTHead(_vit()).save_pretrained(".")
    assert (tmp_path / "train.py").read_text() == "code"
    assert transformers.AutoModelForImageClassification.from_pretrained(str(tmp_path)).config.num_labels == 3


def test_category_names_are_checked_and_the_model_config_is_not_changed(tmp_path):
    model = _vit(3, ("a", "b", "c"))
    head = CFTHead(model)
    before = model.config.to_dict()
    with pytest.raises(ValueError, match="2 names but the model has 3 labels"):
        head.save_pretrained(tmp_path / "short", category_names=["x", "y"])
    with pytest.raises(ValueError, match=r"unique.*\['x'\]"):
        head.save_pretrained(tmp_path / "dupes", category_names=["x", "x", "y"])
    assert not (tmp_path / "short").exists() and not (tmp_path / "dupes").exists()
    out = head.save_pretrained(tmp_path / "named", category_names=["x", "y", "z"])
    assert model.config.to_dict() == before  # labels and problem_type of the in-memory model unchanged
    assert head.label_names() == ["a", "b", "c"]
    back = transformers.AutoModelForImageClassification.from_pretrained(out)
    assert back.config.id2label == {0: "x", 1: "y", 2: "z"} and back.config.label2id == {"x": 0, "y": 1, "z": 2}
    assert back.config.problem_type == "multi_label_classification"


def test_timm_category_names_leave_the_in_memory_model_unchanged(tmp_path):
    import timm

    model = timm.create_model("test_resnet", num_classes=3, pretrained=False).eval()
    head = CFTHead(model)
    out = head.save_pretrained(tmp_path / "t", category_names=["x", "y", "z"])
    assert "label_names" not in model.pretrained_cfg and head.label_names() is None
    assert CFTHead.from_pretrained(out).label_names() == ["x", "y", "z"]


def test_an_interrupted_save_is_finished_or_removed_by_recovery(tmp_path, monkeypatch):
    import hf_cft.io as atomic_io

    out = str(tmp_path / "model")
    CFTHead(_vit()).save_pretrained(out)
    (tmp_path / "model" / "notes.txt").write_text("mine")
    new = CFTHead(_vit(names=("p", "q", "r")))

    def killed_while_moving(src, dst):  # moves the weights, then dies before the config
        os.replace(os.path.join(src, "model.safetensors"), os.path.join(dst, "model.safetensors"))
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic_io, "move_in", killed_while_moving)
    with pytest.raises(KeyboardInterrupt):
        new.save_pretrained(out)
    monkeypatch.undo()
    assert os.path.isdir(out + ".tmp")
    back = CFTHead.from_pretrained(out)  # loading finishes the save first
    assert back.label_names() == ["p", "q", "r"] and not os.path.exists(out + ".tmp")
    torch.testing.assert_close(back.weight, new.weight)
    assert (tmp_path / "model" / "notes.txt").read_text() == "mine"
    # killed while writing (not marked complete), and the mkdtemp folders of earlier versions: removed
    os.makedirs(out + ".tmp")
    (tmp_path / "model.tmp" / "model.safetensors").write_bytes(b"half")
    os.makedirs(tmp_path / ".tmp-model-sxm113ve")
    (tmp_path / ".tmp-model-sxm113ve" / "model.safetensors").write_bytes(b"full copy")
    assert atomic_io.recover_model_dir(out) is False
    assert sorted(os.listdir(tmp_path)) == ["model"]
    assert CFTHead.from_pretrained(out).label_names() == ["p", "q", "r"]


def test_card_names_the_actual_skip_reasons(tmp_path):
    head = CFTHead(_vit())
    z, y, m = _features(head)
    m[:, 2] = False  # category 2 has no known label
    result = fit_cft(z, y, m, head.weight, head.bias, CFTConfig(variant="refit", show_progress=False),
                     categories=[0, 2])
    assert [r.skipped for r in result.report][1:] == ["not requested", "no known positive in the fit split"]
    out = head.apply(result).save_pretrained(tmp_path / "card")
    card = " ".join(open(os.path.join(out, "README.md"), encoding="utf-8").read().split())
    assert "2 were skipped and kept as they were (1: not requested; 1: no known positive in the fit split)" in card
    assert "no known positive or negative to fit or select on" not in card
    from hf_cft.card import CFTModelCardData, render_card

    full = fit_cft(z, y, np.ones_like(m), head.weight, head.bias, CFTConfig(variant="refit", show_progress=False))
    assert full.n_skipped == 0
    card = " ".join(str(render_card(CFTModelCardData(result=full), "m")).split())
    assert f"{full.n_changed} of 3 category rows changed." in card and "skipped" not in card


def test_save_model_writes_a_folder_once_keeping_or_replacing_its_other_files(tmp_path):
    from hf_cft.modeling.save import SaveOptions, save_model

    model = _vit()
    out = str(tmp_path / "m")
    os.makedirs(out)
    (tmp_path / "m" / "notes.txt").write_text("mine")
    written = []
    save_model(model, out, SaveOptions(label_names=["x", "y", "z"], preprocessing=(24, [0.5] * 3, [0.25] * 3),
                                       extra_files={"a/b.txt": "hé", "c.bin": b"\x00", "d.txt": written.append}))
    assert sorted(os.listdir(out)) == ["a", "c.bin", "config.json", "model.safetensors", "notes.txt",
                                       "preprocessor_config.json"]  # d.txt: the callable wrote nothing
    assert written == [os.path.join(out + ".tmp", "d.txt")]  # a callable writes into the temporary folder
    assert (tmp_path / "m" / "a" / "b.txt").read_text(encoding="utf-8") == "hé"
    assert (tmp_path / "m" / "notes.txt").read_text() == "mine"  # kept
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["id2label"] == {"0": "x", "1": "y", "2": "z"} and cfg["problem_type"] == "multi_label_classification"
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"}  # the in-memory model is left as it was
    assert json.load(open(os.path.join(out, "preprocessor_config.json")))["image_std"] == [0.25] * 3
    save_model(model, out, SaveOptions(problem_type=None, replace=True))  # the folder becomes the new files only
    assert sorted(os.listdir(tmp_path)) == ["m"]
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]
    assert json.load(open(os.path.join(out, "config.json")))["id2label"] == {"0": "a", "1": "b", "2": "c"}
    with pytest.raises(ValueError, match="relative"):
        save_model(model, out, SaveOptions(extra_files={"../x": "no"}))


def test_io_json_and_folder_writes(tmp_path):
    from hf_cft.io import read_json, write_folder, write_json

    path = write_json(tmp_path / "a.json", {"b": [1, 2]}, indent=2, end="\n")
    assert open(path).read() == '{\n  "b": [\n    1,\n    2\n  ]\n}\n' and read_json(path) == {"b": [1, 2]}

    def dies(folder):
        write_json(os.path.join(folder, "x.json"), 1)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_folder(tmp_path / "f", dies)
    assert sorted(os.listdir(tmp_path)) == ["a.json"]  # nothing half-written is left
    out = write_folder(tmp_path / "f", lambda folder: write_json(os.path.join(folder, "x.json"), 2))
    assert read_json(os.path.join(out, "x.json")) == 2 and sorted(os.listdir(out)) == ["x.json"]


def test_card_data_is_a_model_card_data_whose_metadata_are_the_plain_ones():
    from huggingface_hub import ModelCardData

    from hf_cft.card import CFTModelCardData

    data = CFTModelCardData(base_model="org/base", dataset_name="coco", tags=["t"], result=_result())
    assert isinstance(data, ModelCardData)
    plain = ModelCardData(model_name="m", base_model="org/base", datasets=["coco"], library_name="transformers",
                          pipeline_tag="image-classification",
                          tags=["hf_cft", "multi-label-classification", "partial-labels", "t"])
    assert data.updated(repo_id="me/m").to_yaml() == plain.to_yaml()
    assert data.to_dict()["repo_id"] == "model" and data.updated(repo_id="me/m").to_dict()["model_name"] == "m"
    with pytest.raises(TypeError, match="unknown model card field"):
        data.updated(licence="mit")


def _many(c, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(300, 8)).astype(np.float32)
    y = (z @ rng.normal(size=(8, c)) + rng.normal(size=(300, c)) > 0).astype(np.int8)
    m = rng.random((300, c)) < 0.6
    w0, b0 = rng.normal(size=(c, 8)).astype(np.float32), np.zeros(c, np.float32)
    return fit_cft(z, y, m, w0, b0, CFTConfig(variant="refit", show_progress=False),
                   category_names=[f"cat{i}" for i in range(c)])


def _evaluation(c, seed=1):
    rng = np.random.default_rng(seed)
    before, after = rng.random(c).tolist(), rng.random(c).tolist()
    return {"test": {"before": {"map": 0.4784, "mauc": 0.61, "per_category_ap": before, "per_category_auroc": before},
                     "after": {"map": 0.5372, "mauc": 0.6543, "per_category_ap": after,
                               "per_category_auroc": after}}}


def _table_rows(card: str) -> list[str]:
    section = card.split("## Per category", 1)[1].split("\n## ", 1)[0]
    return [ln for ln in section.splitlines() if ln.startswith("| ") and not ln.startswith("| # |")]


def test_model_index_holds_only_this_models_results_and_the_card_shows_the_plot(tmp_path):
    from huggingface_hub import ModelCard, metadata_load

    from hf_cft.card import CFTModelCardData, render_card

    data = CFTModelCardData(dataset_name="digits_mosaic", evaluation=_evaluation(3), result=_result())
    card = render_card(data, "m")
    card.save(tmp_path / "README.md")
    index = metadata_load(tmp_path / "README.md")["model-index"]
    metrics = [m for entry in index for r in entry["results"] for m in r["metrics"]]
    assert len(metrics) == 2 and not any("before" in m["name"].lower() for m in metrics)
    assert {m["type"]: m["value"] for m in metrics} == {"map": 53.72, "mauc": 65.43}  # the after-CFT figures
    results = ModelCard.load(tmp_path / "README.md").data.eval_results
    assert sorted(r.metric_value for r in results) == [53.72, 65.43]
    text = str(card)
    assert "| test | mAP | 47.84 | 53.72 | +5.88 |" in text  # the comparison stays in the text
    assert "![Per-category gains](cft_gains.png)" in text
    caption = " ".join(text.split("](cft_gains.png)", 1)[1].split("##", 1)[0].split())
    assert "AP per category (points) on the test split" in caption and "sorted by gain" in caption
    assert "chosen by AUROC on the selection split" in caption  # crossfit selects by AUROC
    no_eval = " ".join(str(render_card(CFTModelCardData(result=_result()), "m")).split())
    assert "AUROC per category (points) on the selection split" in no_eval and "model-index" not in no_eval


def test_card_table_lists_every_category_up_to_50_else_the_extremes(tmp_path):
    from hf_cft.card import CFTModelCardData, render_card

    small = _many(10)
    card = str(render_card(CFTModelCardData(result=small), "m"))
    assert len(_table_rows(card)) == 10 and "largest losses" not in card
    big = _many(60)
    card = str(render_card(CFTModelCardData(result=big), "m"))
    rows = _table_rows(card)
    assert len(rows) == 40
    assert "The 20 largest gains and the 20 largest losses of the 60" in card
    assert "every category is in `per_category.csv` (a table to open) and `cft_report.json`" in " ".join(card.split())
    gains = [r.gain or 0.0 for r in big.report]
    order = sorted(range(60), key=lambda i: (-gains[i], i))
    listed = [int(row.split("|")[1]) for row in rows]
    assert listed == [big.report[i].index for i in order[:20] + order[-20:]]


def test_gains_plot_bars_are_sorted_by_gain(monkeypatch):
    import matplotlib.axes

    from hf_cft.card import gains_plot_png, plotted_gains

    drawn = {}
    bar = matplotlib.axes.Axes.bar

    def spy(self, x, height, *args, **kw):
        drawn["heights"] = list(height)
        return bar(self, x, height, *args, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "bar", spy)
    res, ev = _many(10), _evaluation(10)["test"]
    after, before = ev["after"]["per_category_ap"], ev["before"]["per_category_ap"]
    assert gains_plot_png(res, after, before)[:4] == b"\x89PNG"
    want = sorted((100 * (a - b) for a, b in zip(after, before)), reverse=True)
    assert drawn["heights"] == pytest.approx(want)
    assert plotted_gains(res, after, before)[1:] == ("ap", "evaluation")
    gains_plot_png(res)
    assert drawn["heights"] == sorted(drawn["heights"], reverse=True)
