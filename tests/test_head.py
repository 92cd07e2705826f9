"""CFTHead: the logits layer of every supported architecture, write-back, save and plain reload."""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import transformers
from transformers import AutoModelForImageClassification

from hf_cft import CFTConfig, fit_cft
from hf_cft.head import CFTHead
from hf_cft.modeling.heads import find_head

warnings.filterwarnings("ignore")
C = 3
VIT = dict(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
           intermediate_size=32, num_labels=C)
CONFIGS = {
    "resnet": lambda: transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=C),
    "regnet": lambda: transformers.RegNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                                groups_width=8, num_labels=C),
    "vit": lambda: transformers.ViTConfig(**VIT),
    "beit": lambda: transformers.BeitConfig(**VIT),
    "dinov2": lambda: transformers.Dinov2Config(**VIT),
    "convnext": lambda: transformers.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=C),
    "convnextv2": lambda: transformers.ConvNextV2Config(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2,
                                                        num_labels=C),
    "swin": lambda: transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1],
                                            num_heads=[1, 2], window_size=4, num_labels=C),
    "swinv2": lambda: transformers.Swinv2Config(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1],
                                                num_heads=[1, 2], window_size=4, num_labels=C),
    "efficientnet": lambda: transformers.EfficientNetConfig(image_size=32, width_coefficient=0.1,
                                                            depth_coefficient=0.1, hidden_dim=128, num_labels=C),
    "mobilenet_v2": lambda: transformers.MobileNetV2Config(image_size=32, depth_multiplier=0.25, num_labels=C),
    "timm_wrapper": lambda: transformers.TimmWrapperConfig(architecture="resnet18", num_labels=C),
}


def _model(name):
    torch.manual_seed(0)
    if name == "deit":
        return transformers.DeiTForImageClassification(transformers.DeiTConfig(**VIT)).eval()
    if name == "deit_teacher":
        return transformers.DeiTForImageClassificationWithTeacher(transformers.DeiTConfig(**VIT)).eval()
    if name == "timm":
        import timm

        return timm.create_model("resnet18", num_classes=C, pretrained=False).eval()
    return AutoModelForImageClassification.from_config(CONFIGS[name]()).eval()


ALL = [*CONFIGS, "deit", "deit_teacher", "timm"]


@pytest.mark.parametrize("name", ALL)
def test_features_times_rows_equal_logits_and_write_back(name):
    head = CFTHead(_model(name))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        z, logits = head.forward_with_features(x)
    torch.testing.assert_close(z @ head.weight.T + head.bias, logits, atol=1e-4, rtol=1e-4)
    new_w = torch.randn_like(head.weight)
    new_b = torch.randn_like(head.bias)
    head.set_rows(new_w, new_b)
    with torch.no_grad():
        z2, logits2 = head.forward_with_features(x)
    torch.testing.assert_close(z2, z)  # the backbone never changes
    torch.testing.assert_close(z @ new_w.T + new_b, logits2, atol=1e-4, rtol=1e-4)


def test_other_heads_are_refused_with_the_module_path():
    model = _model("vit")
    model.classifier = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, C))
    with pytest.raises(ValueError, match="ViTForImageClassification.classifier is a Sequential"):
        find_head(model)
    model.classifier = torch.nn.Identity()
    with pytest.raises(ValueError, match=r"classifier is a Identity, not nn.Linear"):
        find_head(model)


def test_category_checks_show_the_difference():
    model = _model("vit")
    model.config.id2label = {0: "cat", 1: "dog", 2: "bird"}
    CFTHead(model, category_names=["cat", "dog", "bird"])
    with pytest.raises(ValueError, match="2: model 'bird' vs dataset 'fish'"):
        CFTHead(model, category_names=["cat", "dog", "fish"])
    with pytest.raises(ValueError, match="3 labels but the dataset has 4"):
        CFTHead(model, category_names=["a", "b", "c", "d"])


def test_random_head_at_load_is_refused(tmp_path):
    _model("vit").save_pretrained(tmp_path / "m")
    CFTHead.from_pretrained(str(tmp_path / "m"))
    with pytest.raises(ValueError, match="initialized at random"):
        CFTHead.from_pretrained(str(tmp_path / "m"), num_labels=5, ignore_mismatched_sizes=True)


@pytest.mark.parametrize("name", ["resnet", "deit_teacher", "timm_wrapper"])
def test_calibrated_model_reloads_without_hf_cft(name, tmp_path):
    head = CFTHead(_model(name))
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, head.hidden_size)).astype(np.float32)
    y = (rng.random((300, C)) < 0.4).astype(np.int8)
    m = rng.random((300, C)) < 0.7
    result = fit_cft(z, y, m, head.weight, head.bias, CFTConfig(variant="refit", show_progress=False))
    head.apply(result)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = head.forward_with_features(x)[1]
    out = head.save_pretrained(tmp_path / "calibrated", category_names=["a", "b", "c"])
    files = set(os.listdir(out))
    assert {"config.json", "model.safetensors", "cft_config.json", "cft_report.json"} <= files
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["problem_type"] == "multi_label_classification"
    assert cfg["id2label"]["2"] == "c" if "id2label" in cfg else cfg["label_names"] == ["a", "b", "c"]  # timm wrapper
    np.save(tmp_path / "x.npy", x.numpy())
    code = (
        "import sys, numpy as np, torch\n"
        "from transformers import AutoModelForImageClassification\n"
        f"m = AutoModelForImageClassification.from_pretrained({out!r}).eval()\n"
        f"x = torch.from_numpy(np.load({str(tmp_path / 'x.npy')!r}))\n"
        "assert m.config.id2label == {0: 'a', 1: 'b', 2: 'c'}\n"
        "with torch.no_grad(): print(m(x).logits.tolist())\n"
        "assert 'hf_cft' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = torch.tensor(json.loads(proc.stdout.strip().splitlines()[-1]))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_timm_native_save_and_reload(tmp_path):
    import timm

    head = CFTHead(_model("timm"))
    head.set_rows(torch.randn_like(head.weight), torch.randn_like(head.bias))
    out = head.save_pretrained(tmp_path / "t", category_names=["a", "b", "c"])
    back = CFTHead.from_pretrained(out)
    assert back.library == "timm" and back.label_names() == ["a", "b", "c"]
    torch.testing.assert_close(back.weight, head.weight)
    reloaded = timm.create_model(f"local-dir:{out}", pretrained=True)
    assert reloaded.pretrained_cfg["label_names"] == ["a", "b", "c"]


def test_end_to_end_fit_evaluate_save_and_pipeline(tmp_path):
    from PIL import Image
    from transformers import pipeline

    from hf_cft.data import load_partial_dataset, partial_info

    ds = load_partial_dataset("digits_mosaic", cache_dir=str(tmp_path / "d"), n_train=150, n_test=40)
    names = partial_info(ds["train"])["categories"]
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(image_size=24, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32, num_labels=10,
                                 id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    transformers.ViTForImageClassification(cfg).save_pretrained(tmp_path / "base")
    transformers.ViTImageProcessor(size={"height": 24, "width": 24}).save_pretrained(tmp_path / "base")
    head = CFTHead.from_pretrained(str(tmp_path / "base"), category_names=names)
    kw = dict(cache_dir=str(tmp_path / "cache"), show_progress=False)
    result = head.fit(ds["train"], CFTConfig(variant="refit", show_progress=False), **kw)
    ev = head.evaluate(ds["test"], result, **kw)
    z = np.asarray(head.extract(ds["test"], **kw).features)
    from hf_cft.data import label_arrays
    from hf_cft.metrics import partial_average_precision

    labels, mask = label_arrays(ds["test"])
    after = partial_average_precision(z @ result.weight.numpy().T + result.bias.numpy(), labels, mask).value
    assert ev["after"]["map"] == pytest.approx(after, abs=1e-6)
    assert set(ev["before"]) >= {"map", "mauc", "per_category_ap", "per_category_auroc"}
    head.apply(result)
    out = head.save_pretrained(tmp_path / "out", repo_id="me/cft-digits", dataset_name="digits_mosaic",
                               evaluation={"test": ev})
    card = open(os.path.join(out, "README.md")).read()
    assert "| test | mAP |" in card and 'model="me/cft-digits"' in card and "Held out 22 of the 150" in card
    assert "model-index" in card and "cft_gains.png" in os.listdir(out)
    with open(os.path.join(out, "cft_gains.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    clf = pipeline("image-classification", model=out, function_to_apply="sigmoid")
    preds = clf(Image.new("RGB", (24, 24), (200, 200, 200)), top_k=10)
    assert len(preds) == 10 and all(0 < p["score"] < 1 for p in preds)
    assert {p["label"] for p in preds} == set(names)


def test_calibrated_timm_model_loads_in_timm_and_transformers_without_hf_cft(tmp_path):
    import timm

    torch.manual_seed(0)
    head = CFTHead(timm.create_model("test_resnet", num_classes=C, pretrained=False).eval())
    rng = np.random.default_rng(0)
    z = rng.normal(size=(600, head.hidden_size)).astype(np.float32)
    y = (z @ rng.normal(size=(head.hidden_size, C)) > 0).astype(np.int8)  # learnable: the refit replaces rows
    m = rng.random((600, C)) < 0.7
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        before = head.forward_with_features(x)[1]
    result = fit_cft(z, y, m, head.weight, head.bias, CFTConfig(variant="refit", show_progress=False))
    assert not torch.equal(result.weight, head.weight)
    head.apply(result)
    with torch.no_grad():
        expected = head.forward_with_features(x)[1]
    assert not torch.allclose(expected, before)
    out = head.save_pretrained(tmp_path / "calibrated", category_names=["a", "b", "c"])
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["num_classes"] == C and "num_classes" not in cfg.get("model_args", {})
    np.save(tmp_path / "x.npy", x.numpy())
    code = (
        "import json, sys, numpy as np, timm, torch\n"
        "from transformers import AutoModelForImageClassification\n"
        f"x = torch.from_numpy(np.load({str(tmp_path / 'x.npy')!r}))\n"
        f"t = timm.create_model('local-dir:{out}', pretrained=True).eval()\n"
        f"m = AutoModelForImageClassification.from_pretrained({out!r}).eval()\n"
        "with torch.no_grad(): a, b = t(x), m(x).logits\n"
        "assert 'hf_cft' not in sys.modules\n"
        "print(json.dumps({'timm': a.tolist(), 'transformers': b.tolist(), 'type': type(m).__name__,\n"
        "                  'id2label': m.config.id2label, 'problem_type': m.config.problem_type,\n"
        "                  'timm_labels': t.pretrained_cfg.get('label_names')}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["type"] == "TimmWrapperForImageClassification"
    assert got["id2label"] == {"0": "a", "1": "b", "2": "c"} and got["timm_labels"] == ["a", "b", "c"]
    assert got["problem_type"] == "multi_label_classification"
    torch.testing.assert_close(torch.tensor(got["timm"]), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.tensor(got["transformers"]), expected, atol=1e-5, rtol=1e-5)


# timm models whose eval logits are the mean of two heads; tiny, built locally (no download)
TWO_HEADS = {
    "deit_tiny_distilled_patch16_224": (dict(img_size=32, depth=1, embed_dim=16, num_heads=2), 32, "average"),
    "levit_128s": (dict(img_size=64), 64, "average"),  # a BatchNorm before each head's linear
    "swiftformer_xs": ({}, 64, "shared"),  # both heads read the same pooled features
}


def _two_heads(name):
    import timm

    kwargs, size, _ = TWO_HEADS[name]
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=C, **kwargs)
    for mod in model.modules():  # BatchNorms with statistics of their own, as after training
        if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            mod.running_mean.normal_()
            mod.running_var.uniform_(0.5, 2.0)
    for path in CFTHead(model).spec.paths:  # two different trained heads
        torch.nn.init.normal_(model.get_submodule(path).weight, std=0.1)
        torch.nn.init.normal_(model.get_submodule(path).bias)
    return model.eval(), torch.randn(2, 3, size, size)


@pytest.mark.parametrize("name", list(TWO_HEADS))
def test_timm_two_heads_give_the_logits_and_take_the_fitted_rows(name):
    model, x = _two_heads(name)
    head = CFTHead(model)
    assert len(head.spec.paths) == 2 and head.spec.kind == TWO_HEADS[name][2]
    with torch.no_grad():
        z, logits = head.forward_with_features(x)
    torch.testing.assert_close(z @ head.weight.T + head.bias, logits, atol=1e-4, rtol=1e-4)
    new_w, new_b = torch.randn_like(head.weight), torch.randn_like(head.bias)
    head.set_rows(new_w, new_b)
    with torch.no_grad():
        logits2 = model(x)  # timm's own forward: the mean of both heads
    torch.testing.assert_close(logits2, z @ new_w.T + new_b, atol=1e-4, rtol=1e-4)


def test_timm_distilled_model_saved_logits_equal_the_fitted_rows(tmp_path):
    import timm

    model, x = _two_heads("deit_tiny_distilled_patch16_224")
    head = CFTHead(model)
    with torch.no_grad():
        z = head.features(x)
    new_w, new_b = torch.randn_like(head.weight), torch.randn_like(head.bias)
    head.set_rows(new_w, new_b)
    out = head.save_pretrained(tmp_path / "deit", category_names=["a", "b", "c"])
    expected = z @ new_w.T + new_b
    with torch.no_grad():
        got_timm = timm.create_model(f"local-dir:{out}", pretrained=True).eval()(x)
        got_tf = AutoModelForImageClassification.from_pretrained(out).eval()(x).logits
    torch.testing.assert_close(got_timm, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got_tf, expected, atol=1e-4, rtol=1e-4)


def test_timm_heads_of_unknown_combination_are_refused():
    model = _model("timm")
    model.fc2 = torch.nn.Linear(model.fc.in_features, C)
    model.pretrained_cfg = {**model.pretrained_cfg, "classifier": ("fc", "fc2")}
    with pytest.raises(ValueError, match=r"timm model ResNet has 2 classifier heads \['fc', 'fc2'\]"):
        CFTHead(model)
    model.pretrained_cfg = {**model.pretrained_cfg, "classifier": ("fc", "fc_dist")}  # built without the second
    assert CFTHead(model).spec.paths == ("fc",)


def test_a_timm_config_that_transformers_cannot_load_names_library_timm(tmp_path):
    import timm

    timm.models.save_for_hf(timm.create_model("test_resnet", num_classes=C, pretrained=False), str(tmp_path),
                            safe_serialization=True)
    with open(tmp_path / "config.json") as f:
        cfg = json.load(f)
    cfg["model_type"] = "timm_wrapper"  # as if for transformers' TimmWrapper, with num_classes in model_args
    with open(tmp_path / "config.json", "w") as f:
        json.dump(cfg, f)
    with pytest.raises(ValueError, match='library="timm"'):
        CFTHead.from_pretrained(str(tmp_path))
    assert CFTHead.from_pretrained(str(tmp_path), library="timm").library == "timm"
