"""Feature extraction: exact classifier inputs, on-disk cache keyed by model/data/preprocessing, resume."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers
from accelerate import Accelerator
from conftest import PROC, tiny_vit_head

from hf_cft.data import load_partial_dataset
from hf_cft.features import extract_features


def test_extracted_features_are_the_classifier_inputs(digits, tmp_path):
    head = tiny_vit_head()
    cache = extract_features(head, digits["train"], str(tmp_path), image_processor=PROC, batch_size=16,
                             chunk_size=32, accelerator=Accelerator(cpu=True), show_progress=False)
    assert cache.shape == (70, 16) and isinstance(cache.features, np.memmap)
    images = [digits["train"][i]["image"].convert("RGB") for i in range(5)]
    with torch.no_grad():
        z, logits = head.forward_with_features(PROC(images, return_tensors="pt")["pixel_values"])
    np.testing.assert_allclose(cache.features[:5], z.numpy(), atol=1e-5)
    np.testing.assert_allclose(cache.features[:5] @ head.weight.numpy().T + head.bias.numpy(), logits.numpy(),
                               atol=1e-4)


def test_cache_reused_resumed_and_never_stale(digits, tmp_path, monkeypatch):
    head = tiny_vit_head()
    full = extract_features(head, digits["train"], str(tmp_path / "a"), image_processor=PROC, batch_size=16,
                            chunk_size=32, show_progress=False)
    # an interrupted run: the second chunk dies half-way
    calls = {"n": 0}
    real = head.features

    def dying(x):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(x)

    monkeypatch.setattr(head, "features", dying)
    with pytest.raises(KeyboardInterrupt):
        extract_features(head, digits["train"], str(tmp_path / "b"), image_processor=PROC, batch_size=16,
                         chunk_size=32, show_progress=False)
    folder = os.path.join(tmp_path / "b", os.listdir(tmp_path / "b")[0])
    with open(os.path.join(folder, "progress.json")) as f:
        assert '"done": 32' in f.read()  # the first chunk was finished and recorded
    monkeypatch.setattr(head, "features", real)
    seen = []
    monkeypatch.setattr(head, "features", lambda x: seen.append(len(x)) or real(x))
    resumed = extract_features(head, digits["train"], str(tmp_path / "b"), image_processor=PROC, batch_size=16,
                               chunk_size=32, show_progress=False)
    assert sum(seen) == 70 - 32  # only the unfinished rows were extracted
    np.testing.assert_array_equal(np.asarray(resumed.features), np.asarray(full.features))
    seen.clear()
    again = extract_features(head, digits["train"], str(tmp_path / "b"), image_processor=PROC, show_progress=False)
    assert seen == [] and again.key == resumed.key  # complete cache reused, nothing recomputed
    seen.clear()
    head.set_rows(torch.randn_like(head.weight), torch.randn_like(head.bias))  # as after `apply`
    calibrated = extract_features(head, digits["train"], str(tmp_path / "b"), image_processor=PROC,
                                  show_progress=False)
    assert seen == [] and calibrated.key == again.key  # new rows, same classifier inputs: nothing recomputed
    other_model = tiny_vit_head(seed=1)
    assert extract_features(other_model, digits["train"], str(tmp_path / "b"), image_processor=PROC,
                            show_progress=False).key != again.key
    assert extract_features(head, digits["test"], str(tmp_path / "b"), image_processor=PROC,
                            show_progress=False).key != again.key
    proc2 = transformers.ViTImageProcessor(size={"height": 24, "width": 24}, image_mean=[0.4, 0.4, 0.4])
    assert extract_features(head, digits["train"], str(tmp_path / "b"), image_processor=proc2,
                            show_progress=False).key != again.key
    half = extract_features(head, digits["train"], str(tmp_path / "b"), image_processor=PROC, dtype="float16",
                            show_progress=False)
    assert half.features.dtype == np.float16 and half.key != again.key


def _two_process_job(root):
    head = tiny_vit_head()
    ds = load_partial_dataset("digits_mosaic", cache_dir=os.path.join(root, "d"), n_train=70, n_test=10)
    acc = Accelerator(cpu=True)
    extract_features(head, ds["train"], os.path.join(root, "two"), image_processor=PROC, batch_size=16,
                     chunk_size=40, accelerator=acc, show_progress=False)


def test_two_cpu_processes_match_one(tmp_path, digits):
    # a fresh interpreter: forking a process whose torch thread pools already ran can deadlock
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from test_features import _two_process_job; "
            "from accelerate import debug_launcher; debug_launcher(_two_process_job, args=(sys.argv[2],), "
            "num_processes=2)")
    proc = subprocess.run([sys.executable, "-c", code, os.path.dirname(__file__), str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = extract_features(tiny_vit_head(), digits["train"], str(tmp_path / "one"), image_processor=PROC,
                           batch_size=16, chunk_size=40, show_progress=False)
    folder = tmp_path / "two" / os.listdir(tmp_path / "two")[0]
    two = np.load(folder / "features.npy")
    assert two.shape == (70, 16)  # no padding duplicates
    np.testing.assert_allclose(two, np.asarray(one.features), atol=1e-5)


def test_fingerprint_covers_buffers_and_changes_with_any_weight():
    from hf_cft.features import model_fingerprint

    cfg = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)
    torch.manual_seed(0)
    model = transformers.ResNetForImageClassification(cfg)  # BatchNorm: 0-dim num_batches_tracked buffers
    before = model_fingerprint(model)
    assert before == model_fingerprint(model)
    with torch.no_grad():
        model.resnet.embedder.embedder.convolution.weight[0, 0, 0, 0] += 1e-6
    assert model_fingerprint(model) != before


def test_cache_key_includes_the_dataset_fingerprint(digits, tmp_path):
    # same model, same length, different images: one cache_dir must hold two caches, each the fresh features
    a, b = digits["train"].select(range(0, 20)), digits["train"].select(range(20, 40))
    assert len(a) == len(b) and a._fingerprint != b._fingerprint
    head = tiny_vit_head()

    def run(ds, where):
        return extract_features(head, ds, str(tmp_path / where), image_processor=PROC, batch_size=16,
                                show_progress=False)

    shared_a, shared_b = run(a, "shared"), run(b, "shared")
    assert shared_a.key != shared_b.key and len(os.listdir(tmp_path / "shared")) == 2
    assert not np.allclose(np.asarray(shared_a.features), np.asarray(shared_b.features))
    np.testing.assert_array_equal(np.asarray(shared_a.features), np.asarray(run(a, "fresh_a").features))
    np.testing.assert_array_equal(np.asarray(shared_b.features), np.asarray(run(b, "fresh_b").features))


def test_cache_key_includes_the_image_column(tmp_path):
    import datasets
    from PIL import Image, ImageOps

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)) for _ in range(4)]
    ds = datasets.Dataset.from_dict({"image": images, "inverted": [ImageOps.invert(im) for im in images]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "inverted": datasets.Image()}))
    head = tiny_vit_head()
    kw = dict(image_processor=PROC, show_progress=False)
    plain = extract_features(head, ds, str(tmp_path / "c"), **kw)
    inverted = extract_features(head, ds, str(tmp_path / "c"), image_column="inverted", **kw)
    assert inverted.key != plain.key
    with torch.no_grad():
        truth = head.features(PROC([ImageOps.invert(im) for im in images], return_tensors="pt")["pixel_values"])
    np.testing.assert_allclose(np.asarray(inverted.features), truth.numpy(), atol=1e-5)


def test_cache_key_follows_the_model_settings_not_its_labels(tmp_path):
    import datasets
    import timm
    from PIL import Image

    from hf_cft.head import CFTHead

    rng = np.random.default_rng(0)
    ds = datasets.Dataset.from_dict({"image": [Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
                                               for _ in range(3)]},
                                    features=datasets.Features({"image": datasets.Image()}))
    torch.manual_seed(0)
    base = str(tmp_path / "base")
    timm.models.save_for_hf(timm.create_model("test_resnet", num_classes=3, pretrained=False), base,
                            safe_serialization=True)
    kw = dict(show_progress=False)
    avg = CFTHead.from_pretrained(base, library="timm")
    top = CFTHead.from_pretrained(base, library="timm", global_pool="max")  # same weights, other pooling
    a, m = avg.extract(ds, str(tmp_path / "c"), **kw), top.extract(ds, str(tmp_path / "c"), **kw)
    assert a.key != m.key and not np.allclose(np.asarray(a.features), np.asarray(m.features))
    # a calibrated copy saved with label names keeps the backbone and its settings: the cache is reused
    avg.set_rows(torch.randn_like(avg.weight), torch.randn_like(avg.bias))
    saved = CFTHead.from_pretrained(avg.save_pretrained(tmp_path / "cal", category_names=["x", "y", "z"]))
    assert saved.extract(ds, str(tmp_path / "c"), **kw).key == a.key


def test_features_equal_with_and_without_workers(digits, tmp_path):
    head = tiny_vit_head()
    kw = dict(image_processor=PROC, batch_size=16, accelerator=Accelerator(cpu=True), show_progress=False)
    none = extract_features(head, digits["train"], str(tmp_path / "a"), num_workers=0, chunk_size=32, **kw)
    two = extract_features(head, digits["train"], str(tmp_path / "b"), num_workers=2, chunk_size=40, **kw)
    np.testing.assert_array_equal(np.asarray(none.features), np.asarray(two.features))
    assert none.key == two.key  # how images are read is not part of the cache key

