"""The final linear layer of any transformers or timm image classifier, as C category rows.

:func:`find_head` says which module(s) produce the logits (:class:`HeadSpec`); :func:`read_rows` gives the C×d
weight and C bias of the logits map, :func:`write_rows` writes new ones back in place (dtype and device kept);
:func:`forward_with_features` gives the exact input of that map, so that ``features @ weight.T + bias`` equals
the model's logits. :func:`label_names` reads the label names a model was saved with.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["HeadSpec", "check_label_names", "find_head", "forward_with_features", "is_timm", "label_names",
           "read_rows", "write_rows"]


@dataclass
class HeadSpec:
    """Where the logits come from: one linear layer, or two heads whose outputs are averaged.

    ``kind``: ``"linear"`` (one layer); ``"average"`` (DeiT's distilled heads: logits are the mean of two
    linear layers that read different inputs; the features are both inputs side by side); ``"shared"`` (the
    mean of two linear layers that read the same input; the features are that input and both layers get the
    same rows).
    """

    paths: tuple[str, ...]
    kind: str = "linear"  # "linear" | "average" | "shared"


# timm classes whose eval-mode logits are (head(x1) + head_dist(x2)) / 2, and whether x1 is x2
_TIMM_TWO_HEADS = {
    "VisionTransformerDistilled": "average",  # class and distillation tokens
    "PoolingVisionTransformer": "average",  # PiT distilled: the same two tokens
    "LevitDistilled": "average",  # a BatchNorm before each linear: different inputs
    "RepVit": "average",  # likewise
    "EfficientFormer": "shared",
    "EfficientFormerV2": "shared",
    "SwiftFormer": "shared",
}


def is_timm(model: nn.Module) -> bool:
    """Whether ``model`` is a timm model (not transformers' wrapper of one)."""
    return hasattr(model, "forward_head") and hasattr(model, "get_classifier") and hasattr(model, "pretrained_cfg")


# -- finding the head ---------------------------------------------------------------------------------------------
def find_head(model: nn.Module) -> HeadSpec:
    """The module path(s) of the layer that produces the logits; a clear error for any other head shape."""
    if is_timm(model):
        return _timm_head(model)
    if hasattr(model, "timm_model"):  # transformers' TimmWrapperForImageClassification
        inner = find_head(model.timm_model)
        return HeadSpec(tuple(f"timm_model.{p}" for p in inner.paths), inner.kind)
    if hasattr(model, "cls_classifier") and hasattr(model, "distillation_classifier"):
        for p in ("cls_classifier", "distillation_classifier"):
            if not isinstance(model.get_submodule(p), nn.Linear):
                raise ValueError(f"`{p}` of {type(model).__name__} is not nn.Linear; CFT cannot treat it as rows")
        return HeadSpec(("cls_classifier", "distillation_classifier"), "average")
    for path in ("classifier", "head", "fc"):
        try:
            mod = model.get_submodule(path)
        except AttributeError:
            continue
        return _linear_at(model, path, mod)
    raise ValueError(f"no linear logits layer found in {type(model).__name__} (looked for classifier, classifier[-1], "
                     "head, fc, timm's pretrained_cfg['classifier']); CFT needs a linear head")


def _linear_at(model: nn.Module, path: str, mod: nn.Module) -> HeadSpec:
    """The head at ``path`` of a transformers model: an ``nn.Linear``, or a Sequential ending in its only one."""
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


def _present(model: nn.Module, path: str) -> bool:
    try:
        return model.get_submodule(path) is not None
    except AttributeError:
        return False


def _timm_head(model: nn.Module) -> HeadSpec:
    """The head of a timm model from ``pretrained_cfg["classifier"]``: one path, or two (distilled models)."""
    name = model.pretrained_cfg.get("classifier") or "fc"
    paths = (name,) if isinstance(name, str) else tuple(name)
    present = tuple(p for p in paths if _present(model, p))  # a model built without distillation lacks head_dist
    if not present:
        raise ValueError(f"timm model {type(model).__name__} has none of its classifier modules {list(paths)}")
    for p in present:
        mod = model.get_submodule(p)
        if not isinstance(mod, nn.Linear):
            raise ValueError(f"timm model head `{p}` is a {type(mod).__name__}, not nn.Linear; CFT needs a linear "
                             "head")
    if len(present) == 1:
        return HeadSpec(present)
    kind = _TIMM_TWO_HEADS.get(type(model).__name__)
    if kind is None or len(present) != 2:
        raise ValueError(
            f"timm model {type(model).__name__} has {len(present)} classifier heads {list(present)}; CFT supports "
            f"two averaged heads only for {sorted(_TIMM_TWO_HEADS)}, whose logits are known to be their mean: fitting "
            "the rows of one head would leave the others unchanged and the saved model's logits would differ from "
            "the fitted ones"
        )
    if kind == "shared":
        a, b = (model.get_submodule(p) for p in present)
        if a.in_features != b.in_features or (a.bias is None) != (b.bias is None):
            raise ValueError(f"the two heads {list(present)} of {type(model).__name__} differ in shape")
    return HeadSpec(present, kind)


# -- rows ---------------------------------------------------------------------------------------------------------
def _linears(model: nn.Module, spec: HeadSpec) -> list[nn.Linear]:
    return [model.get_submodule(p) for p in spec.paths]


def read_rows(model: nn.Module, spec: HeadSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The C×d weight and C bias of the logits map (copies, float32, CPU; a zero bias when the layer has none)."""
    mods = _linears(model, spec)
    if spec.kind == "average":
        weight = torch.cat([m.weight.detach().float().cpu() / len(mods) for m in mods], dim=1)
    elif spec.kind == "shared":
        weight = sum(m.weight.detach().float().cpu() for m in mods) / len(mods)
    else:
        weight = mods[0].weight.detach().float().cpu().clone()
    biases = [m.bias.detach().float().cpu() if m.bias is not None else torch.zeros(m.out_features) for m in mods]
    bias = sum(biases) / len(biases) if spec.kind in ("average", "shared") else biases[0].clone()
    return weight, bias


@torch.no_grad()
def write_rows(model: nn.Module, spec: HeadSpec, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Write a C×d ``weight`` and C ``bias`` (shapes checked by the caller) into the head, keeping dtype and device."""
    mods = _linears(model, spec)
    if spec.kind == "average":
        k = len(mods)
        start = 0
        for m in mods:
            d = m.in_features
            m.weight.copy_((weight[:, start:start + d] * k).to(m.weight))
            start += d
            if m.bias is None:
                raise ValueError("averaged heads without bias cannot take a new bias")
            m.bias.copy_(bias.to(m.bias))
        return
    if any(m.bias is None for m in mods) and bool((bias != 0).any()):
        raise ValueError("the head has no bias parameter; a non-zero bias cannot be written")
    for m in mods if spec.kind == "shared" else mods[:1]:  # shared: both heads take the rows (their mean)
        m.weight.copy_(weight.to(m.weight))
        if m.bias is not None:
            m.bias.copy_(bias.to(m.bias))


def forward_with_features(model: nn.Module, spec: HeadSpec,
                          pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features, logits)`` of a batch; ``features @ weight.T + bias == logits`` (:func:`read_rows`)."""
    captured: list[torch.Tensor] = []
    mods = _linears(model, spec)
    mods = mods[:1] if spec.kind == "shared" else mods  # "shared": one input
    hooks = [m.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach())) for m in mods]
    try:
        out = model(pixel_values)
    finally:
        for h in hooks:
            h.remove()
    logits = out.logits if hasattr(out, "logits") else out
    feats = torch.cat([c.flatten(1) for c in captured], dim=1) if len(captured) > 1 else captured[0].flatten(1)
    return feats, logits


# -- labels -------------------------------------------------------------------------------------------------------
def label_names(model: nn.Module) -> list[str] | None:
    """The model's label names in order, or None when it has none (transformers' ``LABEL_i``)."""
    if is_timm(model):
        names = model.pretrained_cfg.get("label_names")
        return list(names) if names else None
    cfg = getattr(model, "config", None)
    if cfg is None or not getattr(cfg, "id2label", None):
        return None
    names = [cfg.id2label[i] for i in range(len(cfg.id2label))]
    if all(n == f"LABEL_{i}" for i, n in enumerate(names)):
        return None  # transformers' placeholders: no names were given
    return names


def check_label_names(names: Sequence[str], num_labels: int) -> list[str]:
    """``names`` as strings, checked to name each of ``num_labels`` outputs once (to be saved as the labels)."""
    names = [str(n) for n in names]
    if len(names) != num_labels:
        raise ValueError(f"category_names has {len(names)} names but the model has {num_labels} labels; "
                         "give one name per label, in the order of the model's outputs")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"category_names must be unique (label2id maps a name to one output); repeated: {dupes}")
    return names
