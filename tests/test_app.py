"""The page of a calibrated model, without a browser (tests/test_app_browser.py drives it in Chromium): the saved
original rows, the before / after probabilities against a direct torch computation, the messages for models it
cannot show, the report tab's rows, and the Space folder (written, and pushed to the local Hub server)."""

import io
import json
import os
import shutil

import numpy as np
import pytest
import torch
import transformers
from conftest import PROC
from hub_server import HubServer
from safetensors.torch import load_file, save_file
from test_push import _run

from hf_cft import CFTConfig
from hf_cft.app import (
    AppModelError,
    SpaceOptions,
    build_app,
    category_table,
    load_app_model,
    main,
    probabilities,
    read_run_report,
    score_files,
    space_files,
    write_space,
)
from hf_cft.app.report import category_headers, category_rows
from hf_cft.constants import CFT_REPORT_NAME, CFT_RESULTS_NAME, ORIGINAL_HEAD_NAME
from hf_cft.data import partial_info
from hf_cft.engine import CFTResult
from hf_cft.head import CFTHead


def _digits_vit(names, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.ViTConfig(image_size=24, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32, num_labels=len(names),
                                 id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    head = CFTHead(transformers.ViTForImageClassification(cfg).eval())
    head.image_processor = PROC
    return head


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def calibrated_folder(folder, digits, cache_dir, examples: int = 0) -> tuple[str, torch.Tensor, torch.Tensor]:
    """A tiny calibrated model (a ViT on digits_mosaic, refit + decisions, the recipe's results table), saved by
    ``CFTHead.save_pretrained``; ``examples`` test images in its ``examples/``. Returns the folder and the trained
    rows (before CFT)."""
    names = partial_info(digits["train"])["categories"]
    head = _digits_vit(names)
    w0, b0 = head.weight.clone(), head.bias.clone()
    kw = dict(cache_dir=str(cache_dir), show_progress=False)
    result = head.fit(digits["train"], CFTConfig(variant="refit", show_progress=False, selection_fraction=0.3), **kw)
    ev = head.evaluate(digits["test"], result, **kw)
    table = [{"method": "baseline", "map": ev["before"]["map"], "mauc": ev["before"]["mauc"], "improved": 0,
              "degraded": 0},
             {"method": "CFT-refit", "map": ev["after"]["map"], "mauc": ev["after"]["mauc"],
              "changed": result.n_changed, "improved": 0, "degraded": 0}]
    extra = {CFT_RESULTS_NAME: json.dumps({"eval_split": "test", "kept": "refit", "table": table})}
    extra.update({f"examples/test_{i}.png": _png(digits["test"][i]["image"]) for i in range(examples)})
    head.apply(result).save_pretrained(folder, extra_files=extra)
    return str(folder), w0, b0


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, digits):
    root = tmp_path_factory.mktemp("app")
    return calibrated_folder(root / "cal", digits, root / "cache", examples=2)


def direct_probabilities(folder: str, images) -> tuple[np.ndarray, np.ndarray]:
    """Before and after CFT with plain transformers and safetensors: σ(logits) of the saved model, and σ of the
    saved original rows on the ViT's classifier input (the final layer-normed [CLS] token)."""
    model = transformers.AutoModelForImageClassification.from_pretrained(folder).eval()
    pixels = transformers.AutoImageProcessor.from_pretrained(folder)(images, return_tensors="pt")["pixel_values"]
    original = load_file(os.path.join(folder, ORIGINAL_HEAD_NAME))
    with torch.no_grad():
        after = torch.sigmoid(model(pixels).logits)
        cls = model.vit(pixels).last_hidden_state[:, 0]
        before = torch.sigmoid(cls @ original["weight"].T + original["bias"])
    return before.numpy(), after.numpy()


# -- the original rows ---------------------------------------------------------------------------------------------
def test_the_trained_rows_are_saved_beside_the_calibrated_model_and_plain_loading_ignores_them(calibrated,
                                                                                                 tmp_path, caplog):
    folder, w0, b0 = calibrated
    saved = load_file(os.path.join(folder, ORIGINAL_HEAD_NAME))
    assert set(saved) == {"weight", "bias"} and saved["weight"].dtype == torch.float32
    torch.testing.assert_close(saved["weight"], w0, rtol=0, atol=0)
    torch.testing.assert_close(saved["bias"], b0, rtol=0, atol=0)
    head = CFTHead.from_pretrained(folder)
    torch.testing.assert_close(head.original_rows[0], w0, rtol=0, atol=0)
    assert not torch.allclose(head.weight, w0)  # the model's own rows are the calibrated ones
    plain, info = transformers.AutoModelForImageClassification.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    x = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x).logits, head.model(x).logits)
    again = tmp_path / "again"  # loaded, re-calibrated and saved: the rows before any CFT stay the original
    head.apply(head.cft_report).save_pretrained(again)
    torch.testing.assert_close(load_file(os.path.join(again, ORIGINAL_HEAD_NAME))["weight"], w0, rtol=0, atol=0)
    uncalibrated = tmp_path / "plain"
    _digits_vit([str(d) for d in range(10)]).save_pretrained(uncalibrated)
    assert not os.path.exists(uncalibrated / ORIGINAL_HEAD_NAME)
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    save_file({"weight": torch.zeros(3, 16), "bias": torch.zeros(3)}, str(broken / ORIGINAL_HEAD_NAME))
    with caplog.at_level("WARNING"):
        assert CFTHead.from_pretrained(broken).original_rows is None  # does not fit: ignored, the model loads
    assert "do not fit" in caplog.text


# -- what the first tab computes -------------------------------------------------------------------------------------
def test_before_and_after_equal_a_direct_torch_computation(calibrated, digits):
    folder, _, _ = calibrated
    model = load_app_model(folder)
    images = [digits["test"][i]["image"].convert("RGB") for i in range(4)]
    probs = probabilities(model, images)
    before, after = direct_probabilities(folder, images)
    np.testing.assert_allclose(probs.after, after, atol=1e-5)
    np.testing.assert_allclose(probs.before, before, atol=1e-5)
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        thresholds = json.load(f)["cft_thresholds"]
    assert model.thresholds == pytest.approx(thresholds) and len(thresholds) == 10
    rows = category_table(model, probabilities(model, images[:1]))
    change = np.abs(after[0] - before[0])
    assert [r[0] for r in rows] == [model.names[j] for j in np.argsort(-change, kind="stable")]
    for name, b, a, delta, answer in rows:
        j = model.names.index(name)
        assert abs(b - before[0, j]) <= 5.1e-5 and abs(a - after[0, j]) <= 5.1e-5  # shown to 4 decimals
        assert delta == pytest.approx(float(after[0, j] - before[0, j]), abs=5.1e-5)
        assert answer.split()[0] == ("yes" if after[0, j] >= thresholds[j] else "no")
    several = category_table(model, probs, ["a.png", "b.png", "c.png", "d.png"])
    assert len(several) == 40 and several[10][0] == "b.png"


def test_a_model_without_its_original_rows_shows_after_only(calibrated, tmp_path, digits):
    folder = tmp_path / "no_original"
    shutil.copytree(calibrated[0], folder)
    os.remove(folder / ORIGINAL_HEAD_NAME)
    model = load_app_model(folder)
    assert not model.has_before
    image = tmp_path / "x.png"
    digits["test"][0]["image"].save(image)
    _, table, status = score_files(model, [str(image)])
    assert table["headers"] == ["category", "after CFT", "answer (threshold)"]
    assert "after CFT only" in status
    afters = [r[1] for r in table["data"]]
    assert afters == sorted(afters, reverse=True)


def test_a_model_the_page_cannot_show_gets_a_message(calibrated, tmp_path):
    plain = tmp_path / "plain"
    _digits_vit([str(d) for d in range(10)]).save_pretrained(plain)
    with pytest.raises(AppModelError, match=r"not a calibrated model: it has no cft_report\.json.*recipes/cft\.py"):
        load_app_model(plain)
    with pytest.raises(AppModelError, match="neither an existing folder nor a Hub model id"):
        load_app_model(tmp_path / "missing" / "model")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(AppModelError, match="is a file, not a model folder"):
        load_app_model(tmp_path / "file.txt")
    not_classifier = tmp_path / "not_classifier"
    not_classifier.mkdir()
    shutil.copy(os.path.join(calibrated[0], CFT_REPORT_NAME), not_classifier)
    (not_classifier / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(AppModelError, match="no image classifier hf_cft can load"):
        load_app_model(not_classifier)
    demo = build_app(plain)  # the page says it, no traceback
    texts = [getattr(b, "value", None) for b in demo.blocks.values()]
    assert any(isinstance(t, str) and "cannot show" in t and "not a calibrated model" in t for t in texts)
    assert not any(type(b).__name__ == "Tabs" for b in demo.blocks.values())
    image = tmp_path / "bad.png"
    image.write_bytes(b"not an image")
    _, table, status = score_files(load_app_model(calibrated[0]), [str(image)])
    assert "bad.png is not an image that can be read" in status and table["data"] == []


# -- the report tab --------------------------------------------------------------------------------------------------
def test_the_report_tab_lists_every_category_with_its_evidence(calibrated):
    model = load_app_model(calibrated[0])
    report = read_run_report(model)
    assert "**10 categories**" in report.summary
    assert "| baseline |" in report.table and "CFT-refit (kept)" in report.table  # the recipe's table
    assert [os.path.basename(p) for p, _ in report.plots][:1] == ["cft_gains.png"]
    assert report.headers[:6] == ["#", "category", "kept row", "test AP before", "test AP after", "test AP gain"]
    assert {"n_sel", "n_sel_pos", "oof_gain", "p_gain", "threshold", "reason"} <= set(report.headers)
    assert sorted(r[0] for r in report.rows) == list(range(10))
    gains = [r[5] for r in report.rows if r[5] is not None]
    assert gains == sorted(gains, reverse=True)
    by = dict(zip(report.headers, report.rows[0]))
    cat = model.head.cft_report.report[by["#"]]
    assert by["n_sel"] == cat.n_sel and by["reason"] == (cat.reason or f"skipped: {cat.skipped}")
    assert by["threshold"] == round(model.thresholds[by["#"]], 4)
    assert len(report.headers) == len(report.rows[0])


def test_the_report_table_holds_5000_categories(calibrated):
    data = load_app_model(calibrated[0]).head.cft_report.to_dict()
    rng = np.random.default_rng(0)
    data["categories"] = [{"index": i, "name": f"category {i}", "n_sel": 9, "n_sel_pos": 2,
                           "original_score": float(s), "best_score": float(s + g), "variant": "refit"}
                          for i, (s, g) in enumerate(zip(rng.random(5000), rng.normal(0, 0.01, 5000)))]
    data["categories"][7]["name"] = None  # unnamed in the report: the model's label names it
    rows = category_rows(CFTResult.from_dict(data), names=[f"label {i}" for i in range(5000)])
    assert {r[0]: r[1] for r in rows}[7] == "label 7" and {r[0]: r[1] for r in rows}[8] == "category 8"
    headers = category_headers("auroc")
    assert len(rows) == 5000 and len(headers) == len(rows[0]) and headers[5] == "selection AUROC gain"
    assert [r[5] for r in rows] == sorted((r[5] for r in rows), reverse=True)


# -- the Space -------------------------------------------------------------------------------------------------------
def test_the_space_folder_loads_the_model_by_its_hub_id(tmp_path):
    from huggingface_hub import SpaceCard

    out = write_space("me/cft-digits", tmp_path / "space", SpaceOptions(revision="v1"))
    assert sorted(os.listdir(out)) == ["README.md", "app.py", "requirements.txt"]
    card = SpaceCard.load(os.path.join(out, "README.md"))
    assert card.data.sdk == "gradio" and card.data.app_file == "app.py" and card.data.models == ["me/cft-digits"]
    app = open(os.path.join(out, "app.py"), encoding="utf-8").read()
    compile(app, "app.py", "exec")
    assert "MODEL_ID = 'me/cft-digits'" in app and "REVISION = 'v1'" in app and 'host="0.0.0.0"' in app
    assert open(os.path.join(out, "requirements.txt")).read().startswith("hf_cft[app]")
    with pytest.raises(ValueError, match="Hub id"):
        space_files(str(tmp_path))  # a folder: the Space could not read it
    assert main(["space", "me/other", "--output_dir", str(tmp_path / "cli")]) == 0
    assert "MODEL_ID = 'me/other'" in open(tmp_path / "cli" / "app.py").read()


SPACE_SCRIPT = r'''
import json, os, runpy
from hf_cft.app import push_space, load_app_model
from hf_cft.app.page import example_images
from huggingface_hub import HfApi, hf_hub_download
folder = {folder!r}
api = HfApi(token="hf_x")
api.create_repo("user/cft-digits")
api.upload_folder(folder_path=folder, repo_id="user/cft-digits")  # the calibrated folder as saved
url = push_space("user/cft-digits", "user/cft-space", token="hf_x")
files = {{name: open(hf_hub_download("user/cft-space", name, repo_type="space"), encoding="utf-8").read()
         for name in ("app.py", "requirements.txt", "README.md")}}
with open("app.py", "w") as f:
    f.write(files["app.py"])
space = runpy.run_path("app.py", run_name="space")  # the Space's app, as the Space imports it (no launch)
values = [getattr(b, "value", None) for b in space["demo"].blocks.values()]
model = load_app_model("user/cft-digits")
print(json.dumps({{"url": url, "examples": [os.path.basename(p) for p in example_images(model)], "files": files,
                  "has_before": model.has_before,
                  "thresholds": model.thresholds is not None,
                  "error": any(isinstance(v, str) and "cannot show" in v for v in values),
                  "tabs": sum(type(b).__name__ == "Tab" for b in space["demo"].blocks.values())}}))
'''


def test_hf_cft_app_and_space_take_the_model_first(tmp_path, capsys):
    from hf_cft.app import AppArguments
    from hf_cft.cli import COMMANDS, run_command

    (args,) = COMMANDS["app"].parse(["outputs/run", "--port", "7999"])
    assert args == AppArguments(model_name_or_path="outputs/run", port=7999)
    (args,) = COMMANDS["space"].parse(["me/m", "me/s", "--private", "true"])
    assert (args.model_id, args.space_id, args.private) == ("me/m", "me/s", True)
    config = tmp_path / "space.yaml"
    config.write_text("revision: v2\nrequirement: hf_cft[app]==9.9\n")
    (args,) = COMMANDS["space"].parse([str(config), "me/m", "--output_dir", "o"])  # a configuration file first
    assert (args.model_id, args.space_id, args.revision, args.requirement) == ("me/m", None, "v2", "hf_cft[app]==9.9")
    with pytest.raises(SystemExit):
        COMMANDS["app"].parse([])
    assert "--model_name_or_path" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        COMMANDS["app"].parse(["--help"])
    assert "hf-cft app MODEL [--option value ...]" in capsys.readouterr().out
    out = tmp_path / "space"
    assert run_command(["space", "me/cft-digits", "--output_dir", str(out), "--revision", "v1"]) == str(out)
    assert "REVISION = 'v1'" in (out / "app.py").read_text() and f"Space written: {out}" in capsys.readouterr().out


def test_a_space_is_pushed_and_its_app_loads_the_model_from_the_hub(calibrated, tmp_path):
    script = SPACE_SCRIPT.format(folder=calibrated[0])
    with HubServer() as hub:
        out, _ = _run(hub, script, tmp_path)
        space = hub.state.repos["spaces/user/cft-space"]
        assert ORIGINAL_HEAD_NAME in hub.state.repos["user/cft-digits"]
    assert set(space) == {"app.py", "requirements.txt", "README.md"}
    assert "/spaces/user/cft-space/commit/" in out["url"]
    assert "sdk: gradio" in out["files"]["README.md"] and "app_file: app.py" in out["files"]["README.md"]
    assert "MODEL_ID = 'user/cft-digits'" in out["files"]["app.py"]
    assert out["has_before"] and out["thresholds"] and not out["error"] and out["tabs"] == 2
    assert out["examples"] == ["test_0.png", "test_1.png"]  # the model repo's examples/, downloaded
