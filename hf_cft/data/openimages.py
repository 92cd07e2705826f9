"""Open Images V3 (5,000 trainable classes, real partial labels) from its CSV files.

Expected files (the V3 release, https://github.com/openimages/dataset/tree/master/dataset_v3)::

    data_dir/
      classes-trainable.txt                 one class MID per line: the category order
      class-descriptions.csv                MID,name (no header)
      train/annotations-human.csv           ImageID,Source,LabelName,Confidence
      train/images.csv                      ImageID,Subset,OriginalURL,... (header)
      validation/...  test/...              the same two files
      images/train/<ImageID>.jpg            the images you downloaded (also images/validation, images/test)

Confidence 1 → positive, 0 → negative, anything else unknown; labels of classes outside the trainable list
are ignored. Examples are generated image by image from the annotations (grouped by ImageID) and store the
image's known labels by pair (``positive_categories``, ``negative_categories``: category indices), so the arrow
and the build's memory grow with the known pairs, never with images × classes; read them with
``label_arrays(split, sparse=True)``. Images missing from ``images/<split>/`` are
skipped and counted (``skipped`` in the split info), never a crash; so are images without any human label
of a trainable class. Per-class known-label counts (for the G1–G5 groups) are in the split info
(``known_per_category``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import datasets
import numpy as np

from .builder import PartialBuilder
from .files import DataLayout, open_text
from .registry import register_builder
from .simulate import PartialConfig

SPLITS = {"train": datasets.Split.TRAIN, "validation": datasets.Split.VALIDATION, "test": datasets.Split.TEST}
LAYOUT = DataLayout(
    required=("classes-trainable.txt", "class-descriptions.csv", "images/"),
    any_of=tuple(f"{s}/annotations-human.csv" for s in SPLITS),
    shown=("train/images.csv  (and validation/, test/ likewise)", "images/train/<ImageID>.jpg ..."),
    how_to_get="Get the Open Images V3 (2017_11) release listed on https://github.com/openimages/dataset "
               "(READMEV3.md): classes_2017_11.tar.gz, annotations_human_2017_11.tar.gz and images_2017_11.tar.gz "
               "from https://storage.googleapis.com/openimages/2017_11/; untar them and pass the 2017_11/ folder "
               "they create as `data_dir`, with the images you download (URLs in <split>/images.csv) under "
               "images/<split>/<ImageID>.jpg.",
)


@dataclasses.dataclass
class OpenImagesConfig(PartialConfig):
    image_extension: str = ".jpg"


@register_builder("openimages_v3")
class OpenImagesV3(PartialBuilder):
    """Open Images V3 with its real partial labels."""

    BUILDER_CONFIG_CLASS = OpenImagesConfig
    HOMEPAGE = "https://storage.googleapis.com/openimages/web/index.html"
    CITATION = "@misc{openimages2017, title={OpenImages: A public dataset for large-scale multi-label and " \
               "multi-class image classification}, year={2017}}"
    DATA_LAYOUT = LAYOUT
    PAIRS = True

    def _mids(self) -> list[str]:
        if not hasattr(self, "_mid_list"):
            root = self.config.data_dir
            path = os.path.join(root, "classes-trainable.txt") if root else None
            if not path or not os.path.exists(path):
                return []
            with open_text(path) as lines:
                mids = [line.strip() for line in lines if line.strip()]
            if len(set(mids)) != len(mids):
                raise ValueError(f"{path} lists a class twice")
            self._mid_list = mids
        return self._mid_list

    def categories(self) -> list[str]:
        mids = self._mids()
        if not mids:
            return []
        names = {}
        path = os.path.join(self.config.data_dir, "class-descriptions.csv")
        if os.path.exists(path):
            with open_text(path, csv_rows=True) as reader:
                for line, row in enumerate(reader, start=1):
                    if len(row) < 2:
                        raise ValueError(f"{path}, line {line}: expected MID,name")
                    names[row[0]] = row[1]
        return [names.get(m, m) for m in mids]

    def metadata(self):
        return {**super().metadata(), "protocol": "real partial labels", "mids": self._mids()}

    @classmethod
    def input_paths(cls, folder: str, config) -> list[str]:
        """The layout's files and each split's image folder."""
        return [*super().input_paths(folder, config), *(os.path.join(folder, "images", s) for s in SPLITS)]

    def _split_generators(self, dl_manager):
        root = self._data_root(dl_manager)
        found = [s for s in SPLITS if os.path.isfile(os.path.join(root, s, "annotations-human.csv"))]
        return [datasets.SplitGenerator(name=SPLITS[s], gen_kwargs={"root": root, "split": s}) for s in found]

    def _generate_examples(self, root: str, split: str):
        index = {m: i for i, m in enumerate(self._mids())}
        folder = os.path.join(root, "images", split)
        ext = self.config.image_extension
        for image_id, rows in _grouped(os.path.join(root, split, "annotations-human.csv")):
            known: dict[int, int] = {}  # category → 1 / 0; a later row of the same class wins
            for mid, conf in rows:
                i = index.get(mid)
                if i is None:
                    continue
                if conf == 1.0:
                    known[i] = 1
                elif conf == 0.0:
                    known[i] = 0
            if not known:
                self._skip(split, "no trainable human label")
                continue
            path = os.path.join(folder, image_id + ext)
            if not os.path.exists(path):
                self._skip(split, "missing image file", path)
                continue
            positives = np.array(sorted(i for i, v in known.items() if v), dtype=np.int32)
            negatives = np.array(sorted(i for i, v in known.items() if not v), dtype=np.int32)
            self._count_pairs(split, positives, negatives)
            yield image_id, {"image": path, "positive_categories": positives, "negative_categories": negatives}


def _grouped(path: str) -> Iterator[tuple[str, list[tuple[str, float]]]]:
    """(ImageID, [(MID, confidence)]) per image, streamed from a file sorted by ImageID (as released)."""
    with open_text(path, csv_rows=True) as reader:
        header = next(reader, None)
        need = ["ImageID", "LabelName", "Confidence"]
        if header is None or any(h not in header for h in need):
            raise ValueError(f"{path}: header must hold ImageID, Source, LabelName, Confidence; got {header}")
        ci, cl, cc = (header.index(h) for h in need)
        current, rows = None, []
        for line, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise ValueError(f"{path}, line {line}: {len(row)} fields, the header has {len(header)}")
            try:
                conf = float(row[cc])
            except ValueError:
                raise ValueError(f"{path}, line {line}: Confidence {row[cc]!r} is not a number") from None
            image = row[ci]
            if image != current:
                if current is not None:
                    if image < current:
                        raise ValueError(
                            f"{path}, line {line}: rows are not sorted by ImageID (the released files are); sort "
                            "it first, e.g. `(head -n1 f; tail -n+2 f | sort) > sorted.csv`"
                        )
                    yield current, rows
                current, rows = image, []
            rows.append((row[cl], conf))
        if current is not None:
            yield current, rows
