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
