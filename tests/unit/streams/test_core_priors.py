import numpy as np

from streams.cores.user_update import combine_priors


def test_either_prior_alone_is_used_as_is():
    taste, group = np.array([3.0, 4.0]), np.array([0.0, 1.0])
    assert combine_priors(None, None) is None
    assert combine_priors(taste, None) is taste
    assert combine_priors(None, group) is group


def test_both_priors_sum_the_unit_taste_and_the_group_prior():
    out = combine_priors(np.array([3.0, 4.0]), np.array([1.0, 0.0]))
    np.testing.assert_allclose(out, [1.6, 0.8])


def test_zero_taste_does_not_divide_by_zero():
    out = combine_priors(np.zeros(2), np.array([0.0, 1.0]))
    np.testing.assert_allclose(out, [0.0, 1.0])
