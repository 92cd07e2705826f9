"""Bad inputs: a missing or wrong `data_dir` for every file-reading builder, a damaged feature cache."""

import json
import logging
import os

import numpy as np
import pytest
import torch
import transformers
from accelerate import Accelerator

from hf_cft.data import BUILDERS, Coco2014, load_partial_dataset
from hf_cft.features import extract_features
from hf_cft.head import CFTHead

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

PROC = transformers.ViTImageProcessor(size={"height": 24, "width": 24})


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return load_partial_dataset("digits_mosaic", cache_dir=str(tmp_path_factory.mktemp("d")), n_train=70, n_test=10)


def _head(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.ViTConfig(image_size=24, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32, num_labels=10)
    return CFTHead(transformers.ViTForImageClassification(cfg).eval())


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
    head = _head()
    cache = _extract(head, digits["train"], tmp_path / "cache")
    fresh = np.array(_extract(_head(), digits["train"], tmp_path / "fresh").features)
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
    np.testing.assert_array_equal(np.asarray(_extract(head, digits["train"], tmp_path / "cache").features), fresh)
    assert seen == [] and "feature cache" not in caplog.text  # repaired: reused as it is


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
