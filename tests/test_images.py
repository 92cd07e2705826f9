"""Real image folders: every mode made RGB the same way in the trainer and in extraction, and broken files
(truncated, empty, not an image) named with their rows, or skipped and listed."""

import csv
import json
import os

import datasets
import numpy as np
import pytest
import torch
import transformers
from conftest import PROC, tiny_vit_head
from PIL import Image

from hf_cft.data import load_partial_dataset
from hf_cft.data.images import BadImageError, decode_image, read_image, to_rgb
from hf_cft.features import BadImagesError, extract_features


def _reopened(image, path):
    image.save(path)
    return Image.open(path)


def _palette(transparent: bool):
    im = Image.new("P", (2, 1))
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    im.putdata([0, 1])
    if transparent:
        im.info["transparency"] = 0
    return im


# mode -> (image, file suffix, expected RGB pixels of its first row, tolerance)
CASES = {
    "L": (lambda: Image.fromarray(np.array([[0, 100, 255]], np.uint8), "L"), "png",
          [[0, 0, 0], [100, 100, 100], [255, 255, 255]], 0),
    "1": (lambda: Image.fromarray(np.array([[False, True]])), "png", [[0, 0, 0], [255, 255, 255]], 0),
    "CMYK": (lambda: Image.new("CMYK", (8, 8), (255, 0, 0, 0)), "jpg", [[0, 255, 255]] * 8, 12),
    # transparent red -> white, opaque blue -> blue, half-transparent black -> half gray
    "RGBA": (lambda: Image.fromarray(np.array([[[255, 0, 0, 0], [0, 0, 255, 255], [0, 0, 0, 128]]], np.uint8),
                                     "RGBA"), "png", [[255, 255, 255], [0, 0, 255], [127, 127, 127]], 1),
    "LA": (lambda: Image.fromarray(np.array([[[0, 0], [50, 255]]], np.uint8), "LA"), "png",
           [[255, 255, 255], [50, 50, 50]], 0),
    "P-transparent": (lambda: _palette(True), "png", [[255, 255, 255], [0, 255, 0]], 0),
    "P": (lambda: _palette(False), "gif", [[255, 0, 0], [0, 255, 0]], 0),
    "I;16": (lambda: Image.fromarray(np.array([[0, 32768, 65535]], np.uint16)), "png",
             [[0, 0, 0], [128, 128, 128], [255, 255, 255]], 0),
    "I": (lambda: Image.fromarray(np.array([[-5, 65535, 70000, 257]], np.int32), "I"), "tif",
          [[0, 0, 0], [255, 255, 255], [255, 255, 255], [1, 1, 1]], 0),
    "F": (lambda: Image.fromarray(np.array([[-1.0, 0.4, 300.0]], np.float32), "F"), "tif",
          [[0, 0, 0], [0, 0, 0], [255, 255, 255]], 0),
}


@pytest.mark.parametrize("mode", list(CASES))
def test_every_mode_becomes_8_bit_rgb(mode, tmp_path):
    make, suffix, expected, tol = CASES[mode]
    image = _reopened(make(), tmp_path / f"im.{suffix}")  # a real file of that format, read back
    assert image.mode.split(";")[0] in (mode.split("-")[0].split(";")[0], "I")
    rgb = to_rgb(image)
    pixels = np.asarray(rgb)
    assert rgb.mode == "RGB" and pixels.dtype == np.uint8 and pixels.shape == (*image.size[::-1], 3)
    np.testing.assert_allclose(pixels[0, :len(expected)].astype(int), np.array(expected), atol=tol)


def test_trainer_and_extraction_see_the_same_rgb(tmp_path):
    """A transparent PNG: the trainer's rows and the extracted features both come from to_rgb (white behind)."""
    from hf_cft.training.splits import SplitDataset

    rng = np.random.default_rng(0)
    files = []
    for i in range(6):
        rgba = rng.integers(0, 255, (24, 24, 4), dtype=np.uint8)
        rgba[:12, :, 3] = 0  # the top half transparent, its colours random
        files.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(rgba, "RGBA").save(files[-1])
    ds = datasets.Dataset.from_dict({"image": files}, features=datasets.Features({"image": datasets.Image()}))
    head = tiny_vit_head()
    cache = extract_features(head, ds, str(tmp_path / "c"), image_processor=PROC, num_workers=0, show_progress=False)
    rgb = [to_rgb(Image.open(f)) for f in files]
    assert (np.asarray(rgb[0])[:12] == 255).all()
    with torch.no_grad():
        truth = head.features(PROC(rgb, return_tensors="pt")["pixel_values"]).numpy()
        naive = head.features(PROC([Image.open(f).convert("RGB") for f in files], return_tensors="pt")
                              ["pixel_values"]).numpy()
    np.testing.assert_allclose(np.asarray(cache.features), truth, atol=1e-5)
    assert not np.allclose(truth, naive, atol=1e-3)  # dropping the alpha would show the random colours
    transform = transformers.ViTImageProcessor(size={"height": 24, "width": 24})
    rows = SplitDataset(ds, np.arange(6), lambda im: transform(im, return_tensors="pt")["pixel_values"][0],
                        np.zeros((6, 2), np.float32), np.ones((6, 2), bool), np.zeros((6, 2), bool))
    np.testing.assert_array_equal(rows[3]["pixel_values"].numpy(), PROC(rgb[3], return_tensors="np")
                                  ["pixel_values"][0])


def _jpeg(path, size=(32, 24), seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)


def _broken_folder(root, n_good=30):
    """A partial_csv folder: good JPEGs and, in train, a truncated JPEG, an empty file and a text file .jpg."""
    os.makedirs(root / "img")
    good = [f"img/{i:03d}.jpg" for i in range(n_good)]
    for i, rel in enumerate(good):
        _jpeg(root / rel, seed=i)
    _jpeg(root / "img/full.jpg", size=(64, 48), seed=99)
    data = (root / "img/full.jpg").read_bytes()
    (root / "img/truncated.jpg").write_bytes(data[: len(data) * 2 // 3])
    (root / "img/empty.jpg").write_bytes(b"")
    (root / "img/notes.jpg").write_text("these are not pixels\n")
    bad = ["img/truncated.jpg", "img/empty.jpg", "img/notes.jpg"]
    train = good[:4] + bad[:1] + good[4:11] + bad[1:2] + good[11:20] + bad[2:] + good[20:24]
    rng = np.random.default_rng(1)
    for name, files in (("train", train), ("test", good[24:] + good[:10])):
        with open(root / f"{name}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", "cat", "dog"])
            for k, rel in enumerate(files):
                w.writerow([rel, *(["1", "0"] if (k + rng.integers(2)) % 2 else ["0", "1"])])
    return train, bad


def test_unreadable_files_are_named_with_their_rows(tmp_path):
    for i, content in enumerate((b"", b"plain text\n")):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(content)
        with pytest.raises(BadImageError, match=f"row {7 + i}.*{i}.jpg"):
            decode_image({"path": str(path), "bytes": None}, 7 + i, datasets.Image())
    ds = datasets.Dataset.from_dict({"image": [str(tmp_path / "0.jpg")]},
                                    features=datasets.Features({"image": datasets.Image()}))
    with pytest.raises(BadImageError, match=r"row 0 cannot be read: .*0\.jpg: UnidentifiedImageError"):
        read_image(ds, 0)  # the trainer's read


def test_broken_files_stop_the_extraction_naming_all_then_skip_lists_them(tmp_path, monkeypatch):
    train, bad = _broken_folder(tmp_path / "data")
    ds = load_partial_dataset("partial_csv", data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "hf"))
    split = ds["train"]
    bad_rows = [train.index(b) for b in bad]
    head = tiny_vit_head()
    kw = dict(image_processor=PROC, batch_size=8, chunk_size=16, show_progress=False)
    with pytest.raises(BadImagesError) as err:
        extract_features(head, split, str(tmp_path / "c"), **kw)
    message = str(err.value)
    for b, r in zip(bad, bad_rows):
        assert f"row {r}: {tmp_path / 'data' / b}" in message
    assert "--skip_bad_images" in message and "truncated" in message
    assert sorted(b.row for b in err.value.bad["train"]) == bad_rows
    folder = tmp_path / "c" / os.listdir(tmp_path / "c")[0]
    progress = json.loads((folder / "progress.json").read_text())
    assert progress["done"] == len(train) and [b["row"] for b in progress["bad_rows"]] == bad_rows

    seen = []
    real = head.features
    monkeypatch.setattr(head, "features", lambda x: seen.append(len(x)) or real(x))
    cache = extract_features(head, split, str(tmp_path / "c"), skip_bad_images=True, **kw)
    assert seen == []  # nothing computed again: the bad files were only read again, and still fail
    assert [b.row for b in cache.skipped] == bad_rows and list(cache.skipped_rows) == bad_rows
    assert {os.path.basename(b.file) for b in cache.skipped} == {"truncated.jpg", "empty.jpg", "notes.jpg"}
    z = np.asarray(cache.features)
    assert not z[bad_rows].any()
    good = [i for i in range(len(train)) if i not in bad_rows]
    images = [Image.open(tmp_path / "data" / train[i]) for i in good]
    with torch.no_grad():
        np.testing.assert_allclose(z[good], real(PROC([to_rgb(im) for im in images], return_tensors="pt")
                                                 ["pixel_values"]).numpy(), atol=1e-5)
    mask = np.ones((len(train), 2), bool)
    assert not cache.known(mask)[bad_rows].any() and cache.known(mask).sum() == 2 * len(good)

    _jpeg(tmp_path / "data" / "img/truncated.jpg", seed=5)  # the file fixed: read again, extracted now
    fixed = extract_features(head, split, str(tmp_path / "c"), skip_bad_images=True, **kw)
    assert seen == [1] and [b.row for b in fixed.skipped] == bad_rows[1:]
    with torch.no_grad():
        truth = real(PROC([to_rgb(Image.open(tmp_path / "data" / "img/truncated.jpg"))],
                          return_tensors="pt")["pixel_values"]).numpy()
    np.testing.assert_allclose(np.asarray(fixed.features)[bad_rows[0]], truth[0], atol=1e-5)
    fresh = extract_features(head, split, str(tmp_path / "c2"), skip_bad_images=True, num_workers=0, **kw)
    np.testing.assert_array_equal(np.asarray(fixed.features), np.asarray(fresh.features))


@pytest.fixture
def small_model(tmp_path):
    torch.manual_seed(0)
    names = ["cat", "dog"]
    cfg = transformers.ViTConfig(image_size=24, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32, num_labels=2,
                                 id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    path = tmp_path / "model"
    transformers.ViTForImageClassification(cfg).save_pretrained(path)
    PROC.save_pretrained(path)
    return str(path)


def test_recipe_names_every_bad_file_before_fitting_or_skips_and_reports_them(tmp_path, small_model, monkeypatch):
    from hf_cft.recipe import EngineArguments, RecipeArguments, pipeline, run

    train, bad = _broken_folder(tmp_path / "data")
    with open(tmp_path / "data" / "test.csv", "a", newline="") as f:  # a bad file in the evaluation split too
        csv.writer(f).writerow(["img/notes.jpg", "1", "0"])
    args = dict(model_name_or_path=small_model, dataset="partial_csv", data_dir=str(tmp_path / "data"),
                known_ratio=None, protocol=None, variant=["refit"], selection="holdout:0.3", headroom=False,
                output_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"), batch_size=8)
    fitted = []
    real_run_variants = pipeline.run_variants
    monkeypatch.setattr(pipeline, "run_variants", lambda *a, **k: fitted.append(1) or real_run_variants(*a, **k))
    with pytest.raises(BadImagesError) as err:
        run(RecipeArguments(**args), EngineArguments())
    assert fitted == []  # stopped before anything was fitted
    message = str(err.value)
    assert "4 image file(s) cannot be read" in message and "test split" in message
    for b in bad:
        assert os.path.join(str(tmp_path / "data"), b) in message

    out = run(RecipeArguments(**args, skip_bad_images=True), EngineArguments())
    assert fitted == [1] and out["kept"] == "refit"
    results = json.loads((tmp_path / "out" / "cft_results.json").read_text())
    skipped = results["skipped_images"]
    assert skipped["count"] == 4
    assert [os.path.basename(s["file"]) for s in skipped["by_split"]["train"]] == ["truncated.jpg", "empty.jpg",
                                                                                 "notes.jpg"]
    assert [s["row"] for s in skipped["by_split"]["train"]] == [train.index(b) for b in bad]
    assert [os.path.basename(s["file"]) for s in skipped["by_split"]["test"]] == ["notes.jpg"]

