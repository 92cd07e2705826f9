"""CFTHead.from_pretrained / extract on bad input: random heads, corrupt weights, unknown preprocessing."""

import logging
import os
import warnings

import numpy as np
import pytest
import torch
import transformers
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hf_cft.head import CFTHead

warnings.filterwarnings("ignore")
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
