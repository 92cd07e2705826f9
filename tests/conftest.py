import os
import tempfile

import numpy as np
import pytest

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
