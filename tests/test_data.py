"""Builders on tiny fixtures written in the datasets' real file formats."""

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from hf_cft.data import (
    CHEXPERT_COMPETITION,
    category_names,
    label_arrays,
    load_partial_dataset,
    partial_info,
    simulate_known,
    with_dense_labels,
)
from hf_cft.data.chexpert import OBSERVATIONS


def _jpg(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (8, 8), (120, 30, 200)).save(path)


@pytest.fixture
def coco_dir(tmp_path):
    root = tmp_path / "coco"
    cats = [{"id": i, "name": f"c{i}", "supercategory": "x"} for i in (1, 2, 3, 5, 7, 9)]  # ids with gaps
    rng = np.random.default_rng(0)
    for subset, n in (("train2014", 400), ("val2014", 30)):
        images, anns = [], []
        for i in range(n):
            file = f"COCO_{subset}_{i:012d}.jpg"
            images.append({"id": 1000 + i, "file_name": file, "height": 8, "width": 8})
            _jpg(str(root / subset / file))
            if i % 10 == 9:
                continue  # an image without annotations
            for c in rng.choice([1, 2, 3, 5, 7, 9], size=2, replace=False):
                anns.append({"id": len(anns), "image_id": 1000 + i, "category_id": int(c), "bbox": [0, 0, 1, 1]})
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        with open(root / "annotations" / f"instances_{subset}.json", "w") as f:
            json.dump({"images": images, "annotations": anns, "categories": cats[::-1]}, f)
    return root


def test_coco_uniform_protocol_order_masks_and_inclusion(coco_dir, tmp_path):
    ds = load_partial_dataset("coco2014", data_dir=str(coco_dir), cache_dir=str(tmp_path / "c"), known_ratio=0.3)
    info = partial_info(ds["train"])
    assert info["categories"] == ["c1", "c2", "c3", "c5", "c7", "c9"]  # COCO category-id order
    assert info["images"] == 400 and info["unannotated"] == 40 and info["annotated"] == 360  # rule: both kinds
    assert abs(info["achieved_known_ratio"] - 0.3) < 0.04
    labels, mask, full = label_arrays(ds["train"], ("labels", "label_mask", "full_labels"))
    assert labels.shape == (400, 6) and mask.dtype == bool
    assert (labels == full * mask).all()  # the partial labels hold the known ones only; the truth apart
    assert (full.sum(1)[np.arange(400) % 10 == 9] == 0).all()
    assert abs(mask[full == 1].mean() - mask[full == 0].mean()) < 0.1  # positives and negatives alike
    assert label_arrays(ds["validation"])[1].all()
    assert ds["train"][0]["image"].size == (8, 8)
    again = load_partial_dataset("coco2014", data_dir=str(coco_dir), cache_dir=str(tmp_path / "d"), known_ratio=0.3)
    assert (label_arrays(again["train"])[1] == mask).all()  # deterministic by seed
    other = load_partial_dataset("coco2014", data_dir=str(coco_dir), cache_dir=str(tmp_path / "c"),
                                 known_ratio=0.3, seed=1)
    assert not (label_arrays(other["train"])[1] == mask).all()
    without = load_partial_dataset("coco2014", data_dir=str(coco_dir), cache_dir=str(tmp_path / "c"),
                                   known_ratio=0.3, include_unannotated=False)
    assert without["train"].num_rows == 360 and partial_info(without["train"])["skipped"] == {"no annotation": 40}


def test_protocols_known_ratio_over_many_labels():
    rng = np.random.default_rng(0)
    full = (rng.random((4000, 20)) < 0.2).astype(np.int8)
    for protocol in ("uniform", "per_image_fixed"):
        m = np.stack([simulate_known(y, protocol, 0.3, np.random.default_rng(i)) for i, y in enumerate(full)])
        assert abs(m.mean() - 0.3) < 0.01
    fixed = np.stack([simulate_known(y, "per_image_fixed", 0.3, np.random.default_rng(i)) for i, y in enumerate(full)])
    assert (fixed.sum(1) == 6).all()
    pos_only = np.stack([simulate_known(y, "positives_only", 0.5, np.random.default_rng(i))
                         for i, y in enumerate(full)])
    assert not pos_only[full == 0].any() and abs(pos_only[full == 1].mean() - 0.5) < 0.03


def test_missing_data_dir_names_files_and_source(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)instances_train2014.json.*cocodataset.org"):
        load_partial_dataset("coco2014", data_dir=str(tmp_path), cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match="needs `data_dir`"):
        load_partial_dataset("chexpert", cache_dir=str(tmp_path / "c"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_partial_dataset("coco2014", data_dir=str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="unknown dataset"):
        load_partial_dataset("imagenet")


def _chexpert(root, rows_train, rows_valid):
    folder = root / "CheXpert-v1.0-small"
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *OBSERVATIONS]
    for name, rows in (("train.csv", rows_train), ("valid.csv", rows_valid)):
        split = name.split(".")[0]
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            for i, (view, values) in enumerate(rows):
                rel = f"CheXpert-v1.0-small/{split}/patient{i:05d}/study1/view1_{view.lower()}.jpg"
                _jpg(str(root / rel))
                w.writerow([rel, "Female", "68", view, "AP" if view == "Frontal" else "", *values])
    return folder


def test_chexpert_policies_uncertain_and_frontal(tmp_path):
    vals = ["1.0", "", "-1.0", "0.0"] + [""] * 10
    train = [("Frontal", vals), ("Lateral", ["0.0"] * 14), ("Frontal", ["", "1.0"] + ["-1.0"] * 12)]
    valid = [("Frontal", ["1.0"] * 7 + ["0.0"] * 7)]
    _chexpert(tmp_path / "d", train, valid)
    ds = load_partial_dataset("chexpert", data_dir=str(tmp_path / "d"), cache_dir=str(tmp_path / "c"))
    ex = ds["train"][0]
    assert ex["labels"][:4] == [1, 0, 0, 0]
    assert ex["label_mask"][:5] == [True, False, False, True, False]  # blank unknown (the paper)
    assert ex["uncertain_mask"][:4] == [False, False, True, False]
    info = partial_info(ds["train"])
    assert info["competition_categories"] == CHEXPERT_COMPETITION and info["categories"] == OBSERVATIONS
    assert all(ds["validation"][0]["label_mask"])
    neg = load_partial_dataset("chexpert", data_dir=str(tmp_path / "d"), cache_dir=str(tmp_path / "c"),
                               blank_policy="negative", frontal_only=True, uncertain_policy="u_ones")
    assert neg["train"].num_rows == 2 and partial_info(neg["train"])["skipped"] == {"lateral view": 1}
    ex = neg["train"][0]
    assert ex["label_mask"][:5] == [True, True, True, True, True]
    assert ex["labels"][:4] == [1, 0, 1, 0]  # uncertain → positive under U-Ones


def test_chexpert_malformed_row_names_file_and_line(tmp_path):
    folder = _chexpert(tmp_path / "d", [("Frontal", ["1.0"] * 14), ("Frontal", ["2.0"] + ["1.0"] * 13)],
                       [("Frontal", ["1.0"] * 14)])
    with pytest.raises(ValueError, match=r"train.csv, line 3, column 'No Finding': '2.0'"):
        load_partial_dataset("chexpert", data_dir=str(folder), cache_dir=str(tmp_path / "c"))


@pytest.fixture
def oi_dir(tmp_path):
    root = tmp_path / "oi"
    root.mkdir()
    mids = [f"/m/0{i:03d}" for i in range(8)]
    (root / "classes-trainable.txt").write_text("\n".join(mids) + "\n")
    with open(root / "class-descriptions.csv", "w", newline="") as f:
        csv.writer(f).writerows([[m, f"Class {i}"] for i, m in enumerate(mids)] + [["/m/zzz", "Other"]])
    rng = np.random.default_rng(0)
    for split, n in (("train", 60), ("validation", 10), ("test", 10)):
        (root / split).mkdir()
        with open(root / split / "images.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["ImageID", "Subset", "OriginalURL", "OriginalLandingURL", "License", "AuthorProfileURL",
                        "Author", "Title", "OriginalSize", "OriginalMD5", "Thumbnail300KURL"])
            for i in range(n):
                w.writerow([f"{split}{i:06x}", split, "", "", "", "", "", "", "", "", ""])
        with open(root / split / "annotations-human.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["ImageID", "Source", "LabelName", "Confidence"])
            for i in range(n):
                for k in rng.choice(8, size=3, replace=False):
                    w.writerow([f"{split}{i:06x}", "verification", mids[k], rng.choice(["1", "0"])])
                if i == 0:
                    w.writerow([f"{split}{i:06x}", "verification", "/m/zzz", "1"])  # not trainable: ignored
        for i in range(n):
            if not (split == "train" and i % 7 == 3):  # some images never downloaded
                _jpg(str(root / "images" / split / f"{split}{i:06x}.jpg"))
    return root


def test_openimages_generates_per_image_and_counts_missing(oi_dir, tmp_path):
    ds = load_partial_dataset("openimages_v3", data_dir=str(oi_dir), cache_dir=str(tmp_path / "c"))
    assert set(ds) == {"train", "validation", "test"}
    info = partial_info(ds["train"])
    assert info["categories"][:2] == ["Class 0", "Class 1"] and info["mids"][0] == "/m/0000"
    assert info["skipped"] == {"missing image file": 9} and ds["train"].num_rows == 51
    _, train_mask = label_arrays(ds["train"])
    assert (train_mask.sum(1) == 3).all()
    assert sum(info["known_per_category"]) == 51 * 3
    assert info["known_per_category"] == train_mask.sum(0).tolist()
    with open(oi_dir / "train" / "annotations-human.csv") as f:
        rows = list(csv.reader(f))[1:]
    first = [r for r in rows if r[0] == "train000000" and r[2] != "/m/zzz"]
    ex = with_dense_labels(ds["train"])[0]
    raw = ds["train"][0]
    for _, _, mid, conf in first:
        k = int(mid[-3:])
        assert ex["label_mask"][k] and ex["labels"][k] == int(conf)
        assert k in (raw["positive_categories"] if conf == "1" else raw["negative_categories"])
    assert "labels" not in ds["train"].features  # stored by known pair, never C values per image


def test_openimages_unsorted_annotations_error(oi_dir, tmp_path):
    path = oi_dir / "train" / "annotations-human.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], *lines[1:][::-1]]) + "\n")
    with pytest.raises(ValueError, match="not sorted by ImageID"):
        load_partial_dataset("openimages_v3", data_dir=str(oi_dir), cache_dir=str(tmp_path / "c"))


def test_digits_mosaic_deterministic_disjoint_and_salient(tmp_path):
    a = load_partial_dataset("digits_mosaic", cache_dir=str(tmp_path / "a"), n_train=600, n_test=200,
                             known_ratio=0.3, protocol="salient")
    b = load_partial_dataset("digits_mosaic", cache_dir=str(tmp_path / "b"), n_train=600, n_test=200,
                             known_ratio=0.3, protocol="salient")
    (la, ma), (lb, mb) = label_arrays(a["train"]), label_arrays(b["train"])
    assert (la == lb).all() and (ma == mb).all()
    assert a["train"][0]["image"].size == (24, 24)
    assert label_arrays(a["test"])[1].all()
    info = partial_info(a["train"])
    assert abs(info["achieved_known_ratio"] - 0.3) < 0.08
    # salient: known positives are brighter than unknown ones
    imgs = np.stack([np.asarray(a["train"][i]["image"], dtype=float) for i in range(600)])
    lab, msk = label_arrays(a["train"], ("full_labels", "label_mask"))
    assert (la == lab * msk).all()
    bright = imgs.reshape(600, -1).max(1)
    known_pos = (lab == 1) & msk
    assert bright[known_pos.any(1)].mean() > bright[((lab == 1) & ~msk).any(1) & ~known_pos.any(1)].mean()


def test_partial_csv_meanings_and_errors(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    for i in range(3):
        _jpg(str(root / "img" / f"{i}.jpg"))
    (root / "train.csv").write_text("image,cat,dog,notes\nimg/0.jpg,1,,x\nimg/1.jpg,-1,0,y\nimg/2.jpg,0,1.0,z\n"
                                    "img/9.jpg,1,1,gone\n")
    ds = load_partial_dataset("partial_csv", data_dir=str(root), cache_dir=str(tmp_path / "c"),
                              ignore_columns=("notes",))
    assert partial_info(ds["train"])["categories"] == ["cat", "dog"]
    labels, mask, unc = label_arrays(ds["train"], ("labels", "label_mask", "uncertain_mask"))
    assert labels.tolist() == [[1, 0], [0, 0], [0, 1]]
    assert mask.tolist() == [[True, False], [False, True], [True, True]]
    assert unc.tolist() == [[False, False], [True, False], [False, False]]
    assert partial_info(ds["train"])["skipped"] == {"missing image file": 1}
    neg = load_partial_dataset("partial_csv", data_dir=str(root), cache_dir=str(tmp_path / "c"),
                               ignore_columns=("notes",), minus_one="negative", blank="negative")
    assert label_arrays(neg["train"])[1].all()
    (root / "train.csv").write_text("image,cat\nimg/0.jpg,yes\n")
    with pytest.raises(ValueError, match=r"train.csv, line 2, column 'cat': 'yes'"):
        load_partial_dataset("partial_csv", data_dir=str(root), cache_dir=str(tmp_path / "d"))


def test_cache_key_follows_code_and_config(tmp_path, monkeypatch):
    import hf_cft.data.load
    from hf_cft.data import DigitsMosaic

    def cache(**kw):
        return DigitsMosaic(cache_dir=str(tmp_path), dataset_name="digits_mosaic", **kw).cache_dir

    assert cache(code_hash="aaa") != cache(code_hash="bbb")
    assert cache(code_hash="aaa", seed=1) != cache(code_hash="aaa", seed=2)
    ds = load_partial_dataset("digits_mosaic", cache_dir=str(tmp_path), n_train=20, n_test=5)
    monkeypatch.setattr(hf_cft.data.load, "code_hash", lambda builder=None: "changed-code")
    changed = load_partial_dataset("digits_mosaic", cache_dir=str(tmp_path), n_train=20, n_test=5)
    assert ds["train"].cache_files[0]["filename"] != changed["train"].cache_files[0]["filename"]


def test_salient_protocol_depends_on_conspicuousness(tmp_path):
    # the rule itself: a positive's chance to be known follows its weight; negatives keep known_ratio
    full = np.ones(20000, dtype=np.int8)
    full[::2] = 0
    dim = simulate_known(full, "salient", 0.3, np.random.default_rng(0), weights=np.full(20000, 0.2))
    bright = simulate_known(full, "salient", 0.3, np.random.default_rng(0), weights=np.full(20000, 0.9))
    assert abs(dim[full == 1].mean() - 0.12) < 0.02 and abs(bright[full == 1].mean() - 0.54) < 0.02
    assert abs(dim[full == 0].mean() - 0.3) < 0.02 and abs(bright[full == 0].mean() - 0.3) < 0.02
    # end to end: one digit per mosaic (grid=1), drawn with contrast U(0.25, 1); its brightness is its salience
    ds = load_partial_dataset("digits_mosaic", cache_dir=str(tmp_path), grid=1, n_train=1000, n_test=1,
                              known_ratio=0.3, protocol="salient")
    labels, mask = label_arrays(ds["train"], ("full_labels", "label_mask"))
    assert (labels.sum(1) == 1).all()
    known = mask[labels == 1]  # one positive per image, in image order
    brightness = np.array([np.asarray(im).max() for im in ds["train"]["image"]], dtype=float)
    bright_half = brightness > np.median(brightness)
    # expected known share of the positive: 0.6 · 0.75 · contrast, about 0.20 (dim half) vs 0.37 (bright half)
    assert known[bright_half].mean() - known[~bright_half].mean() > 0.08
    assert abs(mask[labels == 0].mean() - 0.3) < 0.03


def _csv_set(root, text, images=(0, 1)):
    root.mkdir(exist_ok=True)
    for i in images:
        _jpg(str(root / "img" / f"{i}.jpg"))
    (root / "train.csv").write_bytes(text.encode("utf-8") if isinstance(text, str) else text)


def test_a_split_without_examples_says_why_and_is_not_cached(tmp_path):
    root = tmp_path / "mine"
    _csv_set(root, "image,cat\nimg/0.jpg,1\n", images=())
    with pytest.raises(ValueError, match=r"(?s)the train split has no examples \(1 × missing image file\)"
                                         r".*First missing image file: .*img/0.jpg"):
        load_partial_dataset("partial_csv", data_dir=str(root), cache_dir=str(tmp_path / "c"))
    _jpg(str(root / "img" / "0.jpg"))  # the images arrive: the same call builds
    ds = load_partial_dataset("partial_csv", data_dir=str(root), cache_dir=str(tmp_path / "c"))
    assert ds["train"].num_rows == 1 and partial_info(ds["train"])["skipped"] == {}


def test_edited_inputs_are_read_again_and_rebuild_forces_it(tmp_path):
    root = tmp_path / "mine"
    _csv_set(root, "image,cat,dog\nimg/0.jpg,1,0\n")
    first = load_partial_dataset("partial_csv", data_dir=str(root), cache_dir=str(tmp_path / "c"))
    assert label_arrays(first["train"])[0].tolist() == [[1, 0]]
    (root / "train.csv").write_text("image,cat,dog\nimg/0.jpg,0,1\nimg/1.jpg,0,1\n")
    os.utime(root / "train.csv", ns=(1, 1))  # even at an old time: the size changed
    again = load_partial_dataset("partial_csv", data_dir=str(root), cache_dir=str(tmp_path / "c"))
    assert label_arrays(again["train"])[0].tolist() == [[0, 1], [0, 1]]
    forced = load_partial_dataset("partial_csv", data_dir=str(root), cache_dir=str(tmp_path / "c"), rebuild=True)
    assert forced["train"].num_rows == 2


def test_text_inputs_with_a_byte_order_mark_or_another_encoding(tmp_path):
    root = tmp_path / "bom"
    _csv_set(root, "\ufeffimage,cat,dog\nimg/0.jpg,1,0\n")
    ds = load_partial_dataset("partial_csv", data_dir=str(root), cache_dir=str(tmp_path / "c"))
    assert partial_info(ds["train"])["categories"] == ["cat", "dog"]
    latin = tmp_path / "latin"
    _csv_set(latin, "image,caf\xe9\nimg/0.jpg,1\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin/train.csv is not UTF-8 text"):
        load_partial_dataset("partial_csv", data_dir=str(latin), cache_dir=str(tmp_path / "c"))


def test_csv_options_checked_and_image_dir_expanded(tmp_path, monkeypatch):
    root = tmp_path / "mine"
    _csv_set(root, "image,cat,cat\nimg/0.jpg,0,1\n")
    with pytest.raises(ValueError, match=r"column\(s\) \['cat'\] appear more than once"):
        load_partial_dataset("partial_csv", data_dir=str(root), cache_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match=r"partial_csv holds real partial labels: `known_ratio`"):
        load_partial_dataset("partial_csv", data_dir=str(root), cache_dir=str(tmp_path / "c"), known_ratio=0.1)
    (root / "train.csv").write_text("image,cat\n0.jpg,1\n")
    monkeypatch.setenv("HOME", str(root))
    ds = load_partial_dataset("partial_csv", data_dir=str(root), cache_dir=str(tmp_path / "c"), image_dir="~/img")
    assert ds["train"][0]["image"].size == (8, 8)


def test_coco_missing_images_are_counted_wherever_they_are(coco_dir, tmp_path):
    os.remove(coco_dir / "train2014" / f"COCO_train2014_{0:012d}.jpg")  # the lowest id
    ds = load_partial_dataset("coco2014", data_dir=str(coco_dir), cache_dir=str(tmp_path / "c"), known_ratio=0.3)
    assert ds["train"].num_rows == 399 and partial_info(ds["train"])["skipped"] == {"missing image file": 1}


def test_a_registered_builder_of_your_own_loads_like_the_shipped_ones(tmp_path):
    """The docs' "where to add a dataset" example: one PartialBuilder subclass, registered by name."""
    import io

    import datasets

    from hf_cft.data import BUILDERS, DigitsMosaic, PartialBuilder, code_hash, register_builder

    buf = io.BytesIO()
    Image.new("L", (4, 4), 128).save(buf, format="PNG")

    @register_builder("two_squares")
    class TwoSquares(PartialBuilder):
        """Two categories, generated: no `data_dir` (DATA_LAYOUT stays None)."""

        CATEGORIES = ["red", "blue"]

        def _split_generators(self, dl_manager):
            return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"split": "train"})]

        def _generate_examples(self, split):
            for i in range(4):
                labels, mask = np.array([i % 2, 1 - i % 2], np.int8), np.array([True, i < 2])
                self._count(split, labels, mask)
                yield i, {"image": {"bytes": buf.getvalue(), "path": None}, "labels": (labels * mask).tolist(),
                          "label_mask": mask.tolist()}

    try:
        ds = load_partial_dataset("two_squares", cache_dir=str(tmp_path))
        y, m = label_arrays(ds["train"])
        assert y.tolist() == [[0, 1], [1, 0], [0, 0], [1, 0]] and m.sum() == 6
        info = partial_info(ds["train"])
        assert info["categories"] == ["red", "blue"] and info["known_per_category"] == [4, 2]
        assert code_hash(TwoSquares) != code_hash() == code_hash(DigitsMosaic)  # its own source keys its cache
        assert register_builder("two_squares")(TwoSquares) is TwoSquares  # the same class again: no change
        with pytest.raises(ValueError, match="already registered"):
            register_builder("two_squares")(type("Other", (PartialBuilder,), {}))
        with pytest.raises(TypeError, match="PartialBuilder subclass"):
            register_builder("not_a_builder")(dict)
    finally:
        BUILDERS.pop("two_squares", None)
    with pytest.raises(ValueError, match="unknown dataset 'two_squares'"):
        load_partial_dataset("two_squares")


def _without_description(split):
    """The split as pushed to the Hub gives it back: features and rows, no info description."""
    import datasets

    return datasets.Dataset(split.data, info=datasets.DatasetInfo(features=split.features))


def test_category_names_travel_in_the_features(tmp_path):
    """Pair columns (partial_csv) and dense columns (digits_mosaic) keep their names through save_to_disk /
    load_from_disk and through parquet (what push_to_hub writes and load_dataset reads), without the description."""
    import datasets

    root = tmp_path / "mine"
    _csv_set(root, "image,cat,dog,bird\nimg/0.jpg,1,0,\nimg/1.jpg,,1,-1\n")
    pairs = load_partial_dataset("partial_csv", data_dir=str(root), cache_dir=str(tmp_path / "c"))["train"]
    dense = load_partial_dataset("digits_mosaic", cache_dir=str(tmp_path / "d"), n_train=12, n_test=4)["train"]
    assert pairs.features["positive_categories"].feature.names == ["cat", "dog", "bird"]
    assert dense.features["positive_categories"].feature.names == [str(i) for i in range(10)]
    labels, mask = label_arrays(dense)
    assert [sorted(p) for p in dense["positive_categories"]] == [list(np.flatnonzero(r)) for r in labels & mask]
    for name, split in (("pairs", pairs), ("dense", dense)):
        expected = partial_info(split)["categories"]
        bare = _without_description(split)
        assert bare.info.description in (None, "") and category_names(bare) == expected
        bare.save_to_disk(str(tmp_path / name))
        back = datasets.load_from_disk(str(tmp_path / name))
        assert category_names(back) == partial_info(back)["categories"] == expected
        bare.to_parquet(str(tmp_path / f"{name}.parquet"))
        hub = datasets.load_dataset("parquet", data_files=str(tmp_path / f"{name}.parquet"), split="train",
                                    cache_dir=str(tmp_path / "pq"))
        assert category_names(hub) == expected
        for a, b in zip(label_arrays(hub, sparse=False), label_arrays(split, sparse=False)):
            np.testing.assert_array_equal(a, b)  # pair splits: C from the names in the features
    old = datasets.Dataset.from_dict({"labels": [[1, 0]], "label_mask": [[True, True]]},
                                     info=datasets.DatasetInfo(description=json.dumps({"categories": ["a", "b"]})))
    assert category_names(old) == ["a", "b"]  # a split built before: from its description
