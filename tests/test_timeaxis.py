"""One rule for matching times across runs, one trapezoid, one way to check bounded arguments (Param.check)."""
import numpy as np
import pytest

import gfbench
from gfbench.params import AT_LEAST_ONE, Param
from gfbench.timeaxis import common_time_labels, cumulative_integral, match_times


def test_times_of_different_step_sizes_match_within_rounding():
    coarse, fine = np.arange(11) * 0.001 * 3, np.arange(61) * 0.0005
    assert not np.isin(coarse, fine).all()  # k·η differs in the last bit for some k
    i_coarse, i_fine = match_times(coarse, fine)
    assert list(i_coarse) == list(range(11)) and list(i_fine) == list(range(0, 61, 6))
    assert [len(part) for part in match_times(coarse, np.array([0.0105, 0.04]))] == [0, 0]
    assert [len(part) for part in match_times(coarse, np.zeros(0))] == [0, 0]


def test_common_time_labels_put_every_step_size_on_one_axis():
    grids = [np.arange(5) * 0.3, np.arange(16) * 0.1, np.arange(3) * 0.7]
    labels = common_time_labels(grids)
    assert labels[0][1] == labels[1][3] == 0.3 and labels[0][3] == labels[1][9]  # 3·0.1 != 0.3 in floats
    assert labels[2][2] == labels[1][14] == 1.4
    for grid, label in zip(grids, labels):
        np.testing.assert_allclose(label, grid, rtol=1e-12)
    assert len(np.unique(np.concatenate(labels))) == len(set(np.round(np.concatenate(grids), 9)))


def test_cumulative_integral_at_nodes_is_the_trapezoid_rule():
    times, values = np.array([0.0, 0.5, 2.0, 2.25]), np.array([1.0, -2.0, 3.0, 0.5])
    expected = np.concatenate([[0.0], np.cumsum(0.5 * np.diff(times) * (values[1:] + values[:-1]))])
    np.testing.assert_array_equal(cumulative_integral(times, values), expected)
    np.testing.assert_allclose(cumulative_integral(times, values, times), expected, rtol=0, atol=1e-15)
    assert cumulative_integral(np.zeros(0), np.zeros(0)).shape == (0,)


def test_param_check_takes_numpy_numbers_and_refuses_text_and_bools():
    every = Param("every", int, 1, "stride", bounds=AT_LEAST_ONE)
    assert every.check(np.int64(3)) == 3 and type(every.check(np.int64(3))) is int
    for bad in ("3", True, np.bool_(True), 0, 2.0, None):
        with pytest.raises(gfbench.ConfigError, match="every must be an integer >= 1, got"):
            every.check(bad)
    assert Param("cap", int, None, "auto").check(None) is None
