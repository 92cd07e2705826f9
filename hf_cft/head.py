"""Find, read and write the final linear layer of any transformers or timm image classifier.

``CFTHead`` wraps a classifier: ``features(pixel_values)`` returns the exact input of its logits layer, so
that ``features(x) @ weight.T + bias`` equals the model's logits; ``apply(result)`` writes new rows back in
place (dtype and device kept); ``save_pretrained(dir)`` writes the model in its native format with
``problem_type="multi_label_classification"`` and the label names, atomically.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["CFTHead", "HeadSpec", "find_head"]


@dataclass
class HeadSpec:
    """Where the logits come from: one linear layer, or DeiT's two averaged heads."""

    paths: tuple[str, ...]
    kind: str = "linear"  # "linear" | "average"


def _get(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path)


def _is_timm(model: nn.Module) -> bool:
    return hasattr(model, "forward_head") and hasattr(model, "get_classifier") and hasattr(model, "pretrained_cfg")


def find_head(model: nn.Module) -> HeadSpec:
    """The module path(s) of the layer that produces the logits; a clear error for any other head shape."""
    if _is_timm(model):
        name = model.pretrained_cfg.get("classifier") or "fc"
        path = name if isinstance(name, str) else name[0]
        mod = _get(model, path)
        if isinstance(mod, nn.Linear):
            return HeadSpec((path,))
        raise ValueError(f"timm model head `{path}` is a {type(mod).__name__}, not nn.Linear; CFT needs a linear head")
    if hasattr(model, "timm_model"):  # transformers' TimmWrapperForImageClassification
        inner = find_head(model.timm_model)
        return HeadSpec(tuple(f"timm_model.{p}" for p in inner.paths), inner.kind)
    if hasattr(model, "cls_classifier") and hasattr(model, "distillation_classifier"):
        for p in ("cls_classifier", "distillation_classifier"):
            if not isinstance(_get(model, p), nn.Linear):
                raise ValueError(f"`{p}` of {type(model).__name__} is not nn.Linear; CFT cannot treat it as rows")
        return HeadSpec(("cls_classifier", "distillation_classifier"), "average")
    for path in ("classifier", "head", "fc"):
        try:
            mod = _get(model, path)
        except AttributeError:
            continue
        if isinstance(mod, nn.Sequential):  # ResNet / RegNet: Sequential(Flatten, Linear)
            inner = [i for i, m in enumerate(mod) if isinstance(m, nn.Linear)]
            if len(inner) == 1 and inner[0] == len(mod) - 1:
                return HeadSpec((f"{path}.{inner[0]}",))
            raise ValueError(f"{type(model).__name__}.{path} is a Sequential that does not end in its only "
                             "nn.Linear; CFT needs one linear layer producing the logits")
        if isinstance(mod, nn.Linear):
            return HeadSpec((path,))
        raise ValueError(
            f"{type(model).__name__}.{path} is a {type(mod).__name__}, not nn.Linear (num_labels=0 gives Identity); "
            "CFT needs one linear layer producing the logits"
        )
    raise ValueError(f"no linear logits layer found in {type(model).__name__} (looked for classifier, classifier[-1], "
                     "head, fc, timm's pretrained_cfg['classifier']); CFT needs a linear head")


class CFTHead:
    """A classifier with its final linear layer exposed as C category rows.

    Args:
        model: a transformers image classifier (``*ForImageClassification``, ``TimmWrapper…``) or a timm model.
        category_names: the dataset's category names in order; checked against the model's labels.
    """

    def __init__(self, model: nn.Module, category_names: Sequence[str] | None = None):
        self.model = model
        self.spec = find_head(model)
        self.library = "timm" if _is_timm(model) else "transformers"
        w = self.weight
        self.num_labels, self.hidden_size = w.shape
        if category_names is not None:
            self.check_categories(category_names)

    # -- rows ----------------------------------------------------------------------------------------------
    def _linears(self) -> list[nn.Linear]:
        return [_get(self.model, p) for p in self.spec.paths]

    @property
    def weight(self) -> torch.Tensor:
        """C×d weight of the logits map (a copy, float32, CPU)."""
        mods = self._linears()
        if self.spec.kind == "average":
            return torch.cat([m.weight.detach().float().cpu() / len(mods) for m in mods], dim=1)
        return mods[0].weight.detach().float().cpu().clone()

    @property
    def bias(self) -> torch.Tensor:
        """C bias of the logits map (a copy, float32, CPU; zeros when the layer has none)."""
        mods = self._linears()
        biases = [m.bias.detach().float().cpu() if m.bias is not None else torch.zeros(m.out_features)
                  for m in mods]
        return sum(biases) / len(biases) if self.spec.kind == "average" else biases[0].clone()

    @torch.no_grad()
    def set_rows(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Write a C×d weight and C bias into the head, keeping its dtype and device."""
        weight, bias = torch.as_tensor(weight), torch.as_tensor(bias)
        if tuple(weight.shape) != (self.num_labels, self.hidden_size) or tuple(bias.shape) != (self.num_labels,):
            raise ValueError(f"expected weight {self.num_labels}×{self.hidden_size} and bias {self.num_labels}, got "
                             f"{tuple(weight.shape)} and {tuple(bias.shape)}")
        mods = self._linears()
        if self.spec.kind == "average":
            k = len(mods)
            start = 0
            for m in mods:
                d = m.in_features
                m.weight.copy_((weight[:, start:start + d] * k).to(m.weight))
                start += d
                if m.bias is None:
                    raise ValueError("DeiT heads without bias cannot take a new bias")
                m.bias.copy_(bias.to(m.bias))
            return
        m = mods[0]
        m.weight.copy_(weight.to(m.weight))
        if m.bias is not None:
            m.bias.copy_(bias.to(m.bias))
        elif bool((bias != 0).any()):
            raise ValueError("the head has no bias parameter; a non-zero bias cannot be written")

    def apply(self, result) -> CFTHead:
        """Write a :class:`~hf_cft.engine.CFTResult`'s rows into the model; returns self."""
        self.set_rows(result.weight, result.bias)
        self.cft_result = result
        return self

    # -- features ------------------------------------------------------------------------------------------
    def forward_with_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, logits)`` of a batch; ``features @ weight.T + bias == logits``."""
        captured: list[torch.Tensor] = []
        hooks = [m.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
                 for m in self._linears()]
        try:
            out = self.model(pixel_values)
        finally:
            for h in hooks:
                h.remove()
        logits = out.logits if hasattr(out, "logits") else out
        feats = torch.cat([c.flatten(1) for c in captured], dim=1) if len(captured) > 1 else captured[0].flatten(1)
        return feats, logits

    @torch.no_grad()
    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The classifier inputs of a batch (eval mode is the caller's choice; see :meth:`extract`)."""
        return self.forward_with_features(pixel_values)[0]

    # -- labels --------------------------------------------------------------------------------------------
    def label_names(self) -> list[str] | None:
        if self.library == "timm":
            names = getattr(self.model, "pretrained_cfg", {}).get("label_names")
            return list(names) if names else None
        cfg = getattr(self.model, "config", None)
        if cfg is None or not getattr(cfg, "id2label", None):
            return None
        names = [cfg.id2label[i] for i in range(len(cfg.id2label))]
        if all(n == f"LABEL_{i}" for i, n in enumerate(names)):
            return None  # transformers' placeholders: no names were given
        return names

    def check_categories(self, category_names: Sequence[str]) -> None:
        """Raise when the model's number of labels or label names differ from the dataset's categories."""
        names = [str(n) for n in category_names]
        if len(names) != self.num_labels:
            raise ValueError(f"the model has {self.num_labels} labels but the dataset has {len(names)} categories")
        own = self.label_names()
        if own is not None and own != names:
            diff = [f"{i}: model {a!r} vs dataset {b!r}" for i, (a, b) in enumerate(zip(own, names)) if a != b]
            more = f"; … {len(diff) - 10} more" if len(diff) > 10 else ""
            raise ValueError("the model's labels differ from the dataset's categories (in order): "
                             + "; ".join(diff[:10]) + more)

    # -- save ----------------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike, category_names: Sequence[str] | None = None,
                        extra_files: dict[str, str | bytes] | None = None) -> str:
        """Save the model in its native format, as a multi-label classifier, atomically.

        Everything is written to a temporary folder beside ``directory`` and renamed into place, so a crash
        never leaves a half-written model. ``extra_files`` maps file names to contents written beside it.
        """
        directory = os.path.abspath(os.fspath(directory))
        parent = os.path.dirname(directory)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(directory) + "-", dir=parent)
        try:
            names = [str(n) for n in category_names] if category_names is not None else self.label_names()
            if self.library == "timm":
                from timm.models import save_for_hf

                if names is not None:
                    self.model.pretrained_cfg = {**self.model.pretrained_cfg, "label_names": names}
                save_for_hf(self.model, tmp, model_config={"label_names": names} if names else None,
                            safe_serialization=True)
            else:
                cfg = self.model.config
                cfg.problem_type = "multi_label_classification"
                if names is not None:
                    cfg.id2label = dict(enumerate(names))
                    cfg.label2id = {n: i for i, n in enumerate(names)}
                self.model.save_pretrained(tmp, safe_serialization=True)
            for name, content in (extra_files or {}).items():
                mode = "wb" if isinstance(content, bytes) else "w"
                with open(os.path.join(tmp, name), mode) as f:
                    f.write(content)
            if getattr(self, "cft_result", None) is not None:
                from .engine import CFT_REPORT_NAME

                self.cft_result.config.save_pretrained(tmp)  # writes CFT_CONFIG_NAME
                self.cft_result.to_json(os.path.join(tmp, CFT_REPORT_NAME))
            if os.path.exists(directory):
                old = directory + ".old"
                shutil.rmtree(old, ignore_errors=True)
                os.replace(directory, old)
                os.replace(tmp, directory)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory

    # -- loading -------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str, category_names: Sequence[str] | None = None, **kwargs) -> CFTHead:
        """Load a transformers or timm classifier from the Hub or a local folder and wrap it.

        Refuses a model whose head was (re)initialized at load time (``ignore_mismatched_sizes`` or a changed
        ``num_labels``): its rows are random, not trained, and CFT would calibrate noise.
        """
        library = kwargs.pop("library", None) or _library_of(name_or_path)
        if library == "timm":
            import timm

            src = f"local-dir:{name_or_path}" if os.path.isdir(name_or_path) else f"hf-hub:{name_or_path}"
            model = timm.create_model(src, pretrained=True, **kwargs)
        else:
            from transformers import AutoModelForImageClassification

            model, info = AutoModelForImageClassification.from_pretrained(
                name_or_path, output_loading_info=True, **kwargs
            )
            spec = find_head(model)
            touched = [k for k in (*info.get("missing_keys", []), *(m[0] if isinstance(m, tuple) else m
                                                                      for m in info.get("mismatched_keys", [])))
                       if any(k.startswith(p + ".") or k == p for p in spec.paths)]
            if touched:
                raise ValueError(
                    f"the classifier head of {name_or_path} was initialized at random when loading "
                    f"({', '.join(touched)} missing or resized, e.g. by ignore_mismatched_sizes or a new "
                    "num_labels); CFT re-fits trained rows: load the model as its classifier was trained"
                )
        return cls(model.eval(), category_names=category_names)


def _library_of(name_or_path: str) -> str:
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, "config.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                cfg = json.load(f)
            if "architecture" in cfg and "model_type" not in cfg:
                return "timm"
    return "transformers"
