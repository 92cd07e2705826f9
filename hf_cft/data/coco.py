"""MS-COCO 2014 as a partially labeled multi-label dataset (the paper's protocol).

Expected files, as downloaded from the COCO site (https://cocodataset.org/#download)::

    data_dir/
      annotations/instances_train2014.json
      annotations/instances_val2014.json
      train2014/COCO_train2014_000000000009.jpg ...
      val2014/COCO_val2014_000000000042.jpg ...

80 categories in COCO category-id order. ``train`` is partially labeled by the chosen protocol
(``uniform``: each (image, category) label kept with probability ``known_ratio``, positives and negatives
alike — the paper), ``validation`` (val2014) fully labeled. Image-inclusion rule: every image listed in the
json is included; images without annotations are all-negative (``include_unannotated=True``, the default)
or left out; both counts are in the split info (``unannotated``), and images whose file is missing are
skipped and counted.
"""

from __future__ import annotations

import dataclasses
import json
import os

import datasets
import numpy as np

from .builder import PartialBuilder
from .files import DataLayout
from .registry import register_builder
from .simulate import PartialConfig, image_rng, simulate_known

LAYOUT = DataLayout(
    required=("annotations/instances_train2014.json", "annotations/instances_val2014.json", "train2014/",
              "val2014/"),
    shown=("train2014/COCO_train2014_000000000009.jpg ...", "val2014/COCO_val2014_000000000042.jpg ..."),
    how_to_get="Get them from the official COCO download page, https://cocodataset.org/#download: \"2014 Train "
               "images\" (train2014.zip), \"2014 Val images\" (val2014.zip) and \"2014 Train/Val annotations\" "
               "(annotations_trainval2014.zip); unzip all three into one folder and pass it as `data_dir`.",
)


@dataclasses.dataclass
class CocoConfig(PartialConfig):
    include_unannotated: bool = True


@register_builder("coco2014")
class Coco2014(PartialBuilder):
    """Partially labeled MS-COCO 2014."""

    FULL_LABELS_BEHIND_MASK = True  # partial labels are simulated from the full ones

    BUILDER_CONFIG_CLASS = CocoConfig
    HOMEPAGE = "https://cocodataset.org"
    CITATION = "@inproceedings{lin2014coco, title={Microsoft COCO: Common Objects in Context}, year={2014}}"
    DATA_LAYOUT = LAYOUT

    def categories(self) -> list[str]:
        if not hasattr(self, "_categories"):
            root = self.config.data_dir
            path = os.path.join(root, "annotations", "instances_val2014.json") if root else None
            if not path or not os.path.exists(path):
                return []
            self._categories = _categories(_load_json(path))
        return list(self._categories)

    def _split_generators(self, dl_manager):
        self.config.check()
        root = self._data_root(dl_manager)
        return [
            datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={
                "root": root, "subset": "train2014", "partial": True, "split": "train"}),
            datasets.SplitGenerator(name=datasets.Split.VALIDATION, gen_kwargs={
                "root": root, "subset": "val2014", "partial": False, "split": "validation"}),
        ]

    def _generate_examples(self, root: str, subset: str, partial: bool, split: str):
        path = os.path.join(root, "annotations", f"instances_{subset}.json")
        data = _load_json(path)
        cats = _categories(data)
        if cats != self.categories():
            raise ValueError(f"{path} lists other categories than instances_val2014.json")
        index = {c["id"]: i for i, c in enumerate(sorted(data["categories"], key=lambda c: c["id"]))}
        positives: dict[int, set[int]] = {}
        for k, ann in enumerate(data.get("annotations", [])):
            try:
                positives.setdefault(ann["image_id"], set()).add(index[ann["category_id"]])
            except KeyError as err:
                raise ValueError(f"{path}: annotation #{k} has an unknown image or category ({err})") from None
        cfg = self.config
        images = sorted(data["images"], key=lambda im: im["id"])
        del data
        folder = os.path.join(root, subset)
        for im in images:  # missing files are counted (a split with none of its images is an error)
            file = os.path.join(folder, im["file_name"])
            if not os.path.exists(file):
                self._skip(split, "missing image file", file)
                continue
            pos = positives.get(im["id"])
            if pos is None and not cfg.include_unannotated:
                self._skip(split, "no annotation")
                continue
            labels = np.zeros(len(cats), dtype=np.int8)
            if pos:
                labels[list(pos)] = 1
            if partial:
                mask = simulate_known(labels, cfg.protocol, cfg.known_ratio, image_rng(cfg.seed, im["id"]))
            else:
                mask = np.ones(len(cats), dtype=bool)
            self._count(split, labels, mask, annotated=int(pos is not None), unannotated=int(pos is None))
            yield im["id"], {"image": file, "labels": (labels * mask).tolist(), "label_mask": mask.tolist(),
                             "full_labels": labels.tolist()}


def _load_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON (line {err.lineno}): {err.msg}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err.reason}): is it the instances json?") from None


def _categories(data: dict) -> list[str]:
    if "categories" not in data or "images" not in data:
        raise ValueError("a COCO instances json must hold 'images', 'annotations' and 'categories'")
    return [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])]
