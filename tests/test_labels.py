import numpy as np
import pytest

from hf_cft import labels as L


def test_code_and_signed_round_trips():
    y = np.array([[1, 0, 1], [0, 0, 1]], dtype=np.int8)
    m = np.array([[True, True, False], [False, True, True]])
    code = L.to_code(y, m)
    assert code.tolist() == [[1, 0, -1], [-1, 0, 1]]
    y2, m2 = L.from_code(code)
    assert (m2 == m).all() and (y2[m] == y[m]).all() and (y2[~m] == 0).all()
    signed = L.to_signed(y, m)
    assert signed.tolist() == [[1, -1, 0], [0, -1, 1]]
    y3, m3 = L.from_signed(signed)
    assert (m3 == m).all() and (y3[m] == y[m]).all()


def test_bad_labels_name_the_argument():
    with pytest.raises(ValueError, match="`labels` must hold 1"):
        L.check_labels(np.array([[2, 0]]), np.array([[True, True]]))
    with pytest.raises(ValueError, match="same shape"):
        L.check_labels(np.zeros((2, 3)), np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="code"):
        L.from_code(np.array([[3]]))
    # unknown entries may hold anything, NaN included
    y, m = L.check_labels(np.array([[np.nan, 1.0]]), np.array([[False, True]]))
    assert y.tolist() == [[0, 1]]


def test_uncertain_policies():
    y = np.array([[1, 0, 0]], dtype=np.int8)
    m = np.array([[True, False, True]])
    u = np.array([[False, True, False]])
    for policy, (ly, lm) in {
        "u_ignore": ([1, 0, 0], [True, False, True]),
        "u_ones": ([1, 1, 0], [True, True, True]),
        "u_zeros": ([1, 0, 0], [True, True, True]),
    }.items():
        out_y, out_m = L.apply_uncertain_policy(y, m, u, policy)
        assert out_y.tolist() == [ly] and out_m.tolist() == [lm]
    assert m.tolist() == [[True, False, True]]  # inputs untouched
    with pytest.raises(ValueError, match="policy"):
        L.apply_uncertain_policy(y, m, u, "u_maybe")


def test_simulated_partial_labels_ratio_and_seed():
    full = np.random.default_rng(0).integers(0, 2, size=(2000, 20))
    y, m = L.simulate_partial_labels(full, 0.3, seed=5)
    assert abs(m.mean() - 0.3) < 0.01
    assert (L.simulate_partial_labels(full, 0.3, seed=5)[1] == m).all()
    assert not (L.simulate_partial_labels(full, 0.3, seed=6)[1] == m).all()
