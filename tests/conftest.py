import os
import tempfile

import numpy as np
import pytest
import torch
import transformers

# metric modules are cached under HF_HOME: keep tests away from the user's cache, and offline
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="hf_cft_test_home_"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def planted():
    """A planted partial-label problem: true rows, a corrupted trained head, 40% known labels."""

    def make(n=1500, d=24, c=5, known=0.4, noise=2.0, seed=0):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(n, d)).astype(np.float32)
        w_true = rng.normal(size=(c, d)).astype(np.float32)
        y = (x @ w_true.T + rng.normal(size=(n, c)) > 1.0).astype(np.int8)
        m = rng.random((n, c)) < known
        w0 = (w_true + noise * rng.normal(size=(c, d))).astype(np.float32)
        b0 = (0.5 * rng.normal(size=c)).astype(np.float32)
        return x, y, m, w0, b0

    return make


# a tiny ViT and the embedded dataset, for feature extraction tests
PROC = transformers.ViTImageProcessor(size={"height": 24, "width": 24})


def tiny_vit_head(seed: int = 0):
    """A random 10-label ViT on 24 px images, wrapped as a CFTHead."""
    from hf_cft.head import CFTHead

    torch.manual_seed(seed)
    cfg = transformers.ViTConfig(image_size=24, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=32, num_labels=10)
    return CFTHead(transformers.ViTForImageClassification(cfg).eval())


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from hf_cft.data import load_partial_dataset

    return load_partial_dataset("digits_mosaic", cache_dir=str(tmp_path_factory.mktemp("d")), n_train=70, n_test=10)
