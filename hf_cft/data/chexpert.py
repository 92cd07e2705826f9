"""CheXpert (v1.0 or -small) as a partially labeled dataset with uncertain labels.

Expected files (https://stanfordmlgroup.github.io/competitions/chexpert/)::

    data_dir/                       e.g. the folder that holds CheXpert-v1.0-small/
      CheXpert-v1.0-small/train.csv
      CheXpert-v1.0-small/valid.csv
      CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg ...

``data_dir`` may also be the ``CheXpert-v1.0-small`` folder itself. The CSV columns are ``Path, Sex, Age,
Frontal/Lateral, AP/PA`` and the 14 observations with values ``1.0`` (positive), ``0.0`` (negative),
``-1.0`` (uncertain) or blank (not mentioned). Policies:

* ``blank_policy="unknown"`` (the paper) or ``"negative"`` (the dataset authors' labeler convention);
* uncertain labels are unknown in ``label_mask`` and flagged in ``uncertain_mask``, so that U-Ignore /
  U-Ones / U-Zeros can be applied later (:func:`hf_cft.labels.apply_uncertain_policy`), or at build time
  with ``uncertain_policy``;
* ``frontal_only`` keeps frontal views.

The ``validation`` split (valid.csv, labeled by radiologists) is fully labeled. The 5 competition
categories are in the info (``competition_categories``).
"""

from __future__ import annotations

import dataclasses
import os

import datasets
import numpy as np

from ..labels import apply_uncertain_policy
from .builder import PartialBuilder
from .files import DataLayout, open_text
from .registry import register_builder
from .simulate import PartialConfig

OBSERVATIONS = [
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
]
COMPETITION = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
LAYOUT = DataLayout(
    required=("train.csv", "valid.csv"),
    shown=("train/patient00001/study1/view1_frontal.jpg ...", "valid/patient64541/study1/view1_frontal.jpg ..."),
    roots=("CheXpert-v1.0-small", "CheXpert-v1.0", ""),
    how_to_get="Get CheXpert-v1.0-small (or CheXpert-v1.0) from the Stanford ML Group CheXpert page, "
               "https://stanfordmlgroup.github.io/competitions/chexpert/ (free registration), unzip it and pass the "
               "folder that holds CheXpert-v1.0-small/ as `data_dir`.",
)


@dataclasses.dataclass
class ChexpertConfig(PartialConfig):
    blank_policy: str = "unknown"
    uncertain_policy: str | None = None
    frontal_only: bool = False


@register_builder("chexpert")
class Chexpert(PartialBuilder):
    """CheXpert with labels, known mask and uncertain mask."""

    BUILDER_CONFIG_CLASS = ChexpertConfig
    CATEGORIES = OBSERVATIONS
    UNCERTAIN_MASK = True
    HOMEPAGE = "https://stanfordmlgroup.github.io/competitions/chexpert/"
    CITATION = "@inproceedings{irvin2019chexpert, title={CheXpert}, booktitle={AAAI}, year={2019}}"
    DATA_LAYOUT = LAYOUT

    def metadata(self):
        cfg = self.config
        return {**super().metadata(), "protocol": "real partial labels", "blank_policy": cfg.blank_policy,
                "uncertain_policy": cfg.uncertain_policy, "frontal_only": cfg.frontal_only,
                "competition_categories": COMPETITION}

    def _split_generators(self, dl_manager):
        cfg = self.config
        if cfg.blank_policy not in ("unknown", "negative"):
            raise ValueError(f"`blank_policy` must be 'unknown' or 'negative', got {cfg.blank_policy!r}")
        if cfg.uncertain_policy not in (None, "u_ignore", "u_ones", "u_zeros"):
            raise ValueError(f"`uncertain_policy` must be None, 'u_ignore', 'u_ones' or 'u_zeros', "
                             f"got {cfg.uncertain_policy!r}")
        folder = self._data_root(dl_manager)
        return [
            datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={
                "csv_path": os.path.join(folder, "train.csv"), "folder": folder, "split": "train"}),
            datasets.SplitGenerator(name=datasets.Split.VALIDATION, gen_kwargs={
                "csv_path": os.path.join(folder, "valid.csv"), "folder": folder, "split": "validation"}),
        ]

    def _generate_examples(self, csv_path: str, folder: str, split: str):
        cfg = self.config
        parent = os.path.dirname(folder)
        with open_text(csv_path, csv_rows=True) as reader:
            header = next(reader, None)
            need = ["Path", "Frontal/Lateral", *OBSERVATIONS]
            if header is None or any(h not in header for h in need):
                missing = [h for h in need if header is None or h not in header]
                raise ValueError(f"{csv_path}: header lacks the CheXpert columns {missing}")
            col = {h: header.index(h) for h in need}
            for line, row in enumerate(reader, start=2):
                if len(row) != len(header):
                    raise ValueError(f"{csv_path}, line {line}: {len(row)} fields, the header has {len(header)}")
                if cfg.frontal_only and row[col["Frontal/Lateral"]] != "Frontal":
                    self._skip(split, "lateral view")
                    continue
                labels = np.zeros(len(OBSERVATIONS), dtype=np.int8)
                mask = np.zeros(len(OBSERVATIONS), dtype=bool)
                uncertain = np.zeros(len(OBSERVATIONS), dtype=bool)
                for i, name in enumerate(OBSERVATIONS):
                    value = row[col[name]].strip()
                    if value in ("", "nan"):
                        mask[i] = cfg.blank_policy == "negative"
                    elif value in ("1", "1.0"):
                        labels[i], mask[i] = 1, True
                    elif value in ("0", "0.0"):
                        mask[i] = True
                    elif value in ("-1", "-1.0"):
                        uncertain[i] = True
                    else:
                        raise ValueError(f"{csv_path}, line {line}, column {name!r}: {value!r} is not 1.0, 0.0, "
                                         "-1.0 or blank")
                if cfg.uncertain_policy is not None:
                    y, m = apply_uncertain_policy(labels[None], mask[None], uncertain[None], cfg.uncertain_policy)
                    labels, mask = y[0], m[0]
                rel = row[col["Path"]]
                path = os.path.join(parent, rel)
                if not os.path.exists(path):  # a renamed top folder: paths are relative to its parent
                    path = os.path.join(folder, rel.split("/", 1)[-1])
                if not os.path.exists(path):
                    self._skip(split, "missing image file", path)
                    continue
                self._count(split, labels, mask, uncertain=int(uncertain.sum()))
                yield line, {"image": path, "labels": labels.tolist(), "label_mask": mask.tolist(),
                             "uncertain_mask": uncertain.tolist()}
