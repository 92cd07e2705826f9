"""What bad input gets: one test per row of the README's table ("What bad input gets").

Each case gets a clear error that says what is wrong and how to fix it, or a reported skip, and loses
nothing already written.
"""

import json
import logging
import os
import warnings

import numpy as np
import pytest
import torch
import transformers
from accelerate import Accelerator
from conftest import PROC, tiny_vit_head
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hf_cft import CFTConfig, CFTEngine, fit_cft
from hf_cft.data import BUILDERS, Coco2014, load_partial_dataset
from hf_cft.features import extract_features
from hf_cft.head import CFTHead

warnings.filterwarnings("ignore")

# -- data_dir ------------------------------------------------------------------------------------------------


def _touch(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("")


def _error(name, data_dir, tmp_path, exc=FileNotFoundError, **config):
    cache = tmp_path / "cache"
    with pytest.raises(exc) as info:
        load_partial_dataset(name, data_dir=None if data_dir is None else str(data_dir), cache_dir=str(cache),
                             **config)
    assert not cache.exists()  # checked before the builder touches the cache
    return str(info.value)


def test_every_file_reading_builder_declares_its_layout():
    readers = {name for name, cls in BUILDERS.items() if cls.data_layout() is not None}
    assert readers == {"coco2014", "chexpert", "openimages_v3", "partial_csv"}  # digits_mosaic reads no files


def test_coco_wrong_data_dir_names_layout_download_page_and_findings(tmp_path):
    coco_files = ["annotations/instances_train2014.json", "annotations/instances_val2014.json", "train2014/",
                  "val2014/"]
    msg = _error("coco2014", tmp_path / "nope" / "coco", tmp_path)
    assert "does not exist" in msg and f"nearest existing folder, {tmp_path}" in msg
    for expected in [*coco_files, "https://cocodataset.org/#download", "annotations_trainval2014.zip"]:
        assert expected in msg
    # a folder with the captions instead of the instances, and no val2014/
    root = tmp_path / "coco"
    _touch(str(root / "annotations" / "captions_train2014.json"))
    (root / "train2014").mkdir()
    msg = _error("coco2014", root, tmp_path)
    assert "lacks annotations/instances_train2014.json, annotations/instances_val2014.json, val2014/" in msg
    assert "Found in `data_dir`: annotations/, train2014/" in msg
    assert "Found in annotations/: captions_train2014.json" in msg
    assert "cocodataset.org/#download" in msg
    # the layout one level down: the error points there
    for rel in coco_files[:2]:
        _touch(str(root / rel))
    (root / "val2014").mkdir()
    msg = _error("coco2014", tmp_path, tmp_path)
    assert f"pass `data_dir={root}`" in msg
    # a file instead of a folder
    assert "is a file, not a folder" in _error("coco2014", root / "annotations" / "captions_train2014.json",
                                               tmp_path)
    # the builder used directly runs the same check
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"(?s)lacks.*instances_train2014.json.*cocodataset.org"):
        Coco2014(cache_dir=str(tmp_path / "direct"), data_dir=str(tmp_path / "empty")).download_and_prepare()


def test_chexpert_wrong_data_dir_names_layout_and_stanford_page(tmp_path):
    page = "https://stanfordmlgroup.github.io/competitions/chexpert/"
    msg = _error("chexpert", None, tmp_path, exc=ValueError)
    assert "needs `data_dir`" in msg and "CheXpert-v1.0-small/train.csv" in msg and page in msg
    root = tmp_path / "data"
    _touch(str(root / "CheXpert-v1.0-small" / "train.csv"))  # valid.csv missing
    msg = _error("chexpert", root, tmp_path)
    assert "lacks CheXpert-v1.0-small/valid.csv" in msg and "Stanford ML Group" in msg and page in msg
    assert "Found in `data_dir`: CheXpert-v1.0-small/" in msg
    assert "Found in CheXpert-v1.0-small/: train.csv" in msg
    assert "under CheXpert-v1.0/, or directly in `data_dir`" in msg
    # pointed at the images folder inside the dataset: the error names the dataset folder
    _touch(str(root / "CheXpert-v1.0-small" / "valid.csv"))
    (root / "CheXpert-v1.0-small" / "train").mkdir()
    msg = _error("chexpert", root / "CheXpert-v1.0-small" / "train", tmp_path)
    assert f"pass `data_dir={root / 'CheXpert-v1.0-small'}`" in msg


def test_openimages_wrong_data_dir_names_layout_and_download_pages(tmp_path):
    root = tmp_path / "oi"
    _touch(str(root / "classes-trainable.txt"))
    _touch(str(root / "train" / "images.csv"))
    msg = _error("openimages_v3", root, tmp_path)
    assert "lacks class-descriptions.csv, images/, train/annotations-human.csv or " in msg
    for expected in ["classes-trainable.txt", "validation/annotations-human.csv", "images/train/<ImageID>.jpg",
                     "https://storage.googleapis.com/openimages/2017_11/", "https://github.com/openimages/dataset",
                     "Found in `data_dir`: classes-trainable.txt, train/", "Found in train/: images.csv"]:
        assert expected in msg


def test_partial_csv_wrong_data_dir_names_the_csvs_and_how_to_write_them(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    msg = _error("partial_csv", root, tmp_path)
    assert "lacks train.csv or validation.csv or test.csv" in msg and "nothing (empty folder)" in msg
    assert "one column per category holding 1, 0, -1 or blank" in msg
    msg = _error("partial_csv", root, tmp_path, splits={"train": "mine_train.csv"})
    assert "lacks mine_train.csv" in msg
    (root / "train.csv").write_text("image,cat\na.jpg,1\n")
    msg = _error("partial_csv", root, tmp_path, image_dir=str(tmp_path / "no_images"))
    assert "`image_dir`=" in msg and "is not a folder" in msg


def test_digits_mosaic_ignores_data_dir_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="hf_cft.data"):
        ds = load_partial_dataset("digits_mosaic", data_dir=str(tmp_path / "nope"), cache_dir=str(tmp_path / "c"),
                                  n_train=4, n_test=2)
    assert ds["train"].num_rows == 4 and "reads no files" in caplog.text


# -- feature cache -------------------------------------------------------------------------------------------

def _extract(head, ds, cache_dir):
    return extract_features(head, ds, str(cache_dir), image_processor=PROC, batch_size=16, chunk_size=32,
                            accelerator=Accelerator(cpu=True), show_progress=False)


def _counting(head, monkeypatch):
    seen = []
    real = head.features
    monkeypatch.setattr(head, "features", lambda x: seen.append(len(x)) or real(x))
    return seen


def _data_offset(path):
    return np.load(path, mmap_mode="r").offset


@pytest.fixture
def cached(digits, tmp_path):
    """A complete cache (70 rows, chunks 0:32, 32:64, 64:70) and a fresh extraction of the same rows."""
    head = tiny_vit_head()
    cache = _extract(head, digits["train"], tmp_path / "cache")
    fresh = np.array(_extract(tiny_vit_head(), digits["train"], tmp_path / "fresh").features)
    np.testing.assert_array_equal(np.asarray(cache.features), fresh)
    return head, os.path.join(cache.path, "features.npy"), fresh


def test_truncated_feature_cache_is_detected_and_reextracted(digits, tmp_path, cached, monkeypatch, caplog):
    head, path, fresh = cached
    row = 16 * 4
    full_size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(_data_offset(path) + 40 * row + 7)  # cut inside row 40 (the second chunk)
    seen = _counting(head, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="hf_cft.features"):
        again = _extract(head, digits["train"], tmp_path / "cache")
    assert "truncated" in caplog.text
    assert sum(seen) == 70 - 32  # the intact first chunk is kept; from the cut chunk on, extracted again
    assert os.path.getsize(path) == full_size
    np.testing.assert_array_equal(np.asarray(again.features), fresh)
    seen.clear()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hf_cft.features"):  # whatever level an earlier test left
        np.testing.assert_array_equal(np.asarray(_extract(head, digits["train"], tmp_path / "cache").features),
                                      fresh)
    assert seen == [] and "feature cache" not in caplog.text  # repaired: reused as it is, no warning


def test_damaged_feature_cache_rows_fail_their_checksum(digits, tmp_path, cached, monkeypatch, caplog):
    head, path, fresh = cached
    mm = np.load(path, mmap_mode="r+")
    mm[66] = 0.0  # same size, wrong values in the last chunk
    mm.flush()
    del mm
    seen = _counting(head, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="hf_cft.features"):
        again = _extract(head, digits["train"], tmp_path / "cache")
    assert "rows 64:70 do not match their checksum" in caplog.text
    assert sum(seen) == 70 - 64
    np.testing.assert_array_equal(np.asarray(again.features), fresh)


@pytest.mark.parametrize("damage", ["header", "progress"])
def test_unreadable_header_or_progress_starts_over(digits, tmp_path, cached, monkeypatch, caplog, damage):
    head, path, fresh = cached
    if damage == "header":
        with open(path, "r+b") as f:
            f.truncate(5)  # inside the magic string
    else:
        with open(os.path.join(os.path.dirname(path), "progress.json"), "w") as f:
            f.write('{"n": 70, "d": 16, "do')
    seen = _counting(head, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="hf_cft.features"):
        again = _extract(head, digits["train"], tmp_path / "cache")
    assert "extracting again" in caplog.text and sum(seen) == 70
    np.testing.assert_array_equal(np.asarray(again.features), fresh)
    with open(os.path.join(os.path.dirname(path), "progress.json")) as f:
        assert json.load(f)["done"] == 70


# -- the model -------------------------------------------------------------------------------------------------

C = 3
NAMES = ["a", "b", "c"]


def _timm_folder(path) -> str:
    import timm

    torch.manual_seed(0)
    head = CFTHead(timm.create_model("test_resnet", num_classes=C, pretrained=False).eval())
    head.set_rows(torch.randn_like(head.weight), torch.randn_like(head.bias))  # trained rows, not timm's init
    return head.save_pretrained(path, category_names=NAMES)


def _vit_folder(path, processor: bool = False) -> str:
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(image_size=24, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32, num_labels=C)
    transformers.ViTForImageClassification(cfg).save_pretrained(path)
    if processor:
        transformers.ViTImageProcessor(size={"height": 24, "width": 24}).save_pretrained(path)
    return str(path)


def _drop_head(folder: str) -> None:
    path = os.path.join(folder, "model.safetensors")
    state = load_file(path)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    save_file(state, path)


def test_timm_head_made_at_random_when_loading_is_refused(tmp_path):
    folder = _timm_folder(tmp_path / "t")
    head = CFTHead.from_pretrained(folder)  # loaded as trained: accepted
    assert head.library == "timm" and head.num_labels == C
    with pytest.raises(ValueError, match=r"initialized at random.*num_classes=5 differs from the checkpoint's 3"):
        CFTHead.from_pretrained(folder, num_classes=5)
    _drop_head(folder)
    # timm's strict load stops on the missing head: the error names it and says what to do
    with pytest.raises(ValueError, match=r"lacks weights of the model \(missing: fc.weight, fc.bias\)"):
        CFTHead.from_pretrained(folder)
    # a non-strict load would fill the head at random: refused
    with pytest.raises(ValueError, match=r"initialized at random.*fc.weight missing from model.safetensors"):
        CFTHead.from_pretrained(folder, pretrained_strict=False)


@pytest.mark.parametrize("library", ["transformers", "timm"])
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_safetensors_names_the_file_and_the_fix(library, damage, tmp_path):
    folder = _vit_folder(tmp_path / "m") if library == "transformers" else _timm_folder(tmp_path / "m")
    path = os.path.join(folder, "model.safetensors")
    data = open(path, "rb").read()
    data = data[: len(data) // 2] if damage == "truncated" else np.random.default_rng(0).bytes(len(data))
    with open(path, "wb") as f:
        f.write(data)
    with pytest.raises(OSError, match="truncated or corrupt") as info:
        CFTHead.from_pretrained(folder)
    message = str(info.value)
    assert message.startswith(path) and "Re-save it" in message and "download it again" in message
    assert isinstance(info.value.__cause__, SafetensorError)


def _images(n=6):
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (30, 20 + i, 3), dtype=np.uint8)) for i in range(n)]
    return datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))


def test_missing_image_processor_is_refused_with_the_fix(tmp_path, caplog):
    folder = _vit_folder(tmp_path / "m")  # saved without an image processor
    with caplog.at_level(logging.WARNING, logger="hf_cft.head"):
        head = CFTHead.from_pretrained(folder)
    assert head.image_processor is None
    assert any(r.levelno == logging.WARNING and "no image preprocessing is known" in r.getMessage()
               for r in caplog.records)
    ds = _images()
    kw = dict(cache_dir=str(tmp_path / "cache"), show_progress=False)
    with pytest.raises(ValueError, match="no image preprocessing is known") as info:
        head.extract(ds, **kw)
    message = str(info.value)
    assert folder in message and "processor.save_pretrained(<folder>)" in message
    assert "--image_size/--image_mean/--image_std" in message and "set_preprocessing(" in message

    explicit = transformers.ViTImageProcessor(size={"height": 24, "width": 24}, image_mean=[0.4] * 3,
                                              image_std=[0.3] * 3)
    expected = np.asarray(head.extract(ds, image_processor=explicit, **kw).features)
    assert head.set_preprocessing(24, 0.4, [0.3, 0.3, 0.3]) is head
    np.testing.assert_array_equal(np.asarray(head.extract(ds, **kw).features), expected)
    given = CFTHead.from_pretrained(folder, image_processor=explicit)
    assert given.image_processor is explicit
    np.testing.assert_array_equal(np.asarray(given.extract(ds, **kw).features), expected)


def test_saved_image_processor_is_used_and_preprocessing_is_validated(tmp_path):
    head = CFTHead.from_pretrained(_vit_folder(tmp_path / "m", processor=True))
    assert head.image_processor.size == {"height": 24, "width": 24}
    with pytest.raises(ValueError, match="image_size"):
        head.set_preprocessing(0, 0.5, 0.5)
    with pytest.raises(ValueError, match="image_mean` needs 3 values"):
        head.set_preprocessing(24, [0.5, 0.5], 0.5)
    with pytest.raises(ValueError, match="image_std` values must be > 0"):
        head.set_preprocessing(24, 0.5, 0.0)
    head.set_preprocessing((20, 28), 0.5, 0.5)
    assert head.image_processor.size == {"height": 20, "width": 28}


def test_every_attribute_is_declared_in_init():
    head = CFTHead(transformers.ViTForImageClassification(transformers.ViTConfig(
        image_size=24, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=C)))
    assert head.image_processor is None and head.name_or_path is None and head.cft_result is None


# -- the engine ------------------------------------------------------------------------------------------------

FAST = dict(variant="refit", show_progress=False)


def _problem(n=300, d=6, c=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x @ rng.normal(size=(d, c)) > 0.5).astype(np.int8)
    m = rng.random((n, c)) < 0.5
    return x, y, m, rng.normal(size=(c, d)).astype(np.float32), np.zeros(c, np.float32)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_features_are_refused_with_the_row(bad):
    x, y, m, w, b = _problem()
    x[17, 2] = bad
    with pytest.raises(ValueError, match="NaN or inf .first at row 17"):
        fit_cft(x, y, m, w, b, CFTConfig(**FAST))


def test_labels_outside_zero_one_where_known_are_refused():
    x, y, m, w, b = _problem()
    y = y.astype(np.int64)
    m[5, 1] = True
    y[5, 1] = 2
    with pytest.raises(ValueError, match="labels"):
        fit_cft(x, y, m, w, b, CFTConfig(**FAST))


@pytest.mark.parametrize("what", ["labels rows", "mask shape", "weight shape", "bias shape", "selection d"])
def test_shapes_that_disagree_are_refused(what):
    x, y, m, w, b = _problem()
    kwargs = {}
    if what == "labels rows":
        y, m = y[:-1], m[:-1]
        match = "rows but its `labels` have"
    elif what == "mask shape":
        m = m[:, :2]
        match = "mask"
    elif what == "weight shape":
        w = w[:, :-1]
        match = "`weight` must be C×d"
    elif what == "bias shape":
        b = b[:-1]
        match = "`bias` must have C=3"
    else:
        kwargs["selection"] = (x[:50, :-1], y[:50], m[:50])
        match = "selection features have d=5"
    with pytest.raises(ValueError, match=match):
        fit_cft(x, y, m, w, b, CFTConfig(**FAST), **kwargs)


def test_an_empty_split_is_refused():
    x, y, m, w, b = _problem()
    with pytest.raises(ValueError, match="empty"):
        fit_cft(x, y, m, w, b, CFTConfig(**FAST), selection=(x[:0], y[:0], m[:0]))
    with pytest.raises(ValueError, match="training split is empty"):
        fit_cft(x[:0], y[:0], m[:0], w, b, CFTConfig(**FAST))  # the training split itself


def test_a_category_with_no_known_label_is_a_reported_skip():
    x, y, m, w, b = _problem()
    m[:, 1] = False
    res = fit_cft(x, y, m, w, b, CFTConfig(**FAST))
    r = res.report[1]
    assert r.skipped == "no known positive in the fit split" and not r.changed
    assert r.reason == "kept: no known positive in the fit split"
    assert torch.equal(res.weight[1], torch.from_numpy(w[1]))


def test_a_corrupt_block_checkpoint_is_detected_and_recomputed(tmp_path, caplog):
    x, y, m, w, b = _problem()
    cfg = CFTConfig(**FAST)
    first = CFTEngine(cfg).fit(x, y, m, w, b, checkpoint_dir=str(tmp_path))
    path = sorted(tmp_path.glob("*.safetensors"))[0]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated, as by a full disk
    with caplog.at_level(logging.WARNING):
        again = CFTEngine(cfg).fit(x, y, m, w, b, checkpoint_dir=str(tmp_path))
    assert "unreadable" in caplog.text and "recomputing" in caplog.text
    assert torch.equal(first.weight, again.weight) and first.to_dict() == again.to_dict()
    assert path.read_bytes() == data  # rewritten whole


def test_category_names_that_differ_from_the_models_are_refused(tmp_path):
    folder = _vit_folder(tmp_path / "vit")
    model = transformers.ViTForImageClassification.from_pretrained(folder)
    model.config.id2label = {0: "cat", 1: "dog", 2: "bird"}
    model.save_pretrained(folder)
    with pytest.raises(ValueError, match="1: model 'dog' vs dataset 'b'"):
        CFTHead.from_pretrained(folder, category_names=["cat", "b", "bird"])
    with pytest.raises(ValueError, match="the model has 3 labels but the dataset has 2 categories"):
        CFTHead.from_pretrained(folder, category_names=["cat", "dog"])


# -- the recipe ------------------------------------------------------------------------------------------------


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_compute(tmp_path):
    from hf_cft.recipe import RecipeArguments, preflight

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        preflight(RecipeArguments(output_dir=str(blocker / "out"), cache_dir=str(tmp_path / "c")))
    if not os.path.isdir("/proc/self"):
        pytest.skip("needs Linux's /proc, a folder nobody can create files in")
    with pytest.raises(ValueError, match="cannot be written"):  # even as root
        preflight(RecipeArguments(output_dir="/proc/hf_cft_out", cache_dir=str(tmp_path / "c")))


def test_push_to_hub_without_a_token_is_refused_before_any_compute(tmp_path, monkeypatch):
    from hf_cft.recipe import RecipeArguments, preflight

    monkeypatch.setenv("HF_TOKEN", "")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    with pytest.raises(ValueError, match="needs a Hugging Face token"):
        preflight(RecipeArguments(output_dir=str(tmp_path / "o"), cache_dir=str(tmp_path / "c"), push_to_hub=True))


def test_recipe_options_that_would_fail_late_are_refused_first(tmp_path):
    from hf_cft.recipe import EngineArguments, RecipeArguments, preflight

    for bad in ("holdout:abc", "holdout:1.5", "holdout:0"):
        with pytest.raises(ValueError, match=r"held-out share of the training images must be a number in \(0, 1\)"):
            RecipeArguments(selection=bad)
    recipe = RecipeArguments(output_dir=str(tmp_path / "o"), cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match="metric"):
        preflight(recipe, EngineArguments(metric="mAP"))
    preflight(recipe, EngineArguments())  # the defaults pass


def test_a_baseline_trained_on_other_data_is_not_reused(tmp_path):
    from hf_cft.constants import TRAIN_REPORT_NAME
    from hf_cft.recipe import RecipeArguments, load_or_train_model

    best = tmp_path / "base" / "best"
    best.mkdir(parents=True)
    report = {"dataset": "digits_mosaic", "dataset_config": {"known_ratio": 0.1, "protocol": "uniform", "seed": 0}}
    (best / TRAIN_REPORT_NAME).write_text(json.dumps(report))
    same = RecipeArguments(baseline_dir=str(tmp_path / "base"))
    assert load_or_train_model(same, 0, Accelerator(cpu=True)) == str(best)
    other = RecipeArguments(baseline_dir=str(tmp_path / "base"), known_ratio=0.5)
    with pytest.raises(ValueError, match=r"trained on other data \(dataset_config: trained with .*'known_ratio': 0.1"):
        load_or_train_model(other, 0, Accelerator(cpu=True))
    with pytest.raises(ValueError, match="trained on other data"):
        load_or_train_model(same, 1, Accelerator(cpu=True))  # another seed: other simulated labels


def test_a_selection_split_the_dataset_lacks_is_named_before_extraction(tmp_path, monkeypatch):
    from hf_cft.recipe import RecipeArguments, load_data

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    recipe = RecipeArguments(selection="split:valid", dataset_config='{"n_train": 20, "n_test": 5}')
    with pytest.raises(ValueError, match=r"--selection split:valid: digits_mosaic has no split 'valid' \(\['train', "
                                         r"'test'\]\)"):
        load_data(recipe, 0, Accelerator(cpu=True))


def test_the_recipe_loads_with_the_library_asked(tmp_path):
    import timm

    from hf_cft.modeling.save import save_timm_model
    from hf_cft.recipe import RecipeArguments, load_head

    with pytest.raises(ValueError, match="--library must be 'transformers' or 'timm'"):
        RecipeArguments(library="torchvision")
    save_timm_model(timm.create_model("resnet18", num_classes=3, pretrained=False), str(tmp_path / "m"))
    for library in (None, "timm"):  # detected from config.json, or asked
        head = load_head(RecipeArguments(library=library), str(tmp_path / "m"), ["a", "b", "c"])
        assert head.library == "timm"
    head = load_head(RecipeArguments(library="transformers"), str(tmp_path / "m"), ["a", "b", "c"])
    assert head.library == "transformers"  # transformers' timm wrapper
