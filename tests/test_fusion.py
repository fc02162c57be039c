import numpy as np
import pytest

from utils.evaluate.fusion import fit_stacking, hard_vote, soft_vote, stack_predict

A = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
B = np.array([[0.2, 0.7, 0.1], [0.1, 0.5, 0.4]])


def test_soft_vote_is_the_mean_of_member_probabilities():
    assert np.allclose(soft_vote([A, B]), (A + B) / 2)


def test_weighted_soft_vote_uses_normalised_weights():
    assert np.allclose(soft_vote([A, B], weights=[3, 1]), 0.75 * A + 0.25 * B)


def test_soft_vote_rejects_wrong_number_of_weights():
    with pytest.raises(ValueError, match="2 non-negative"):
        soft_vote([A, B], weights=[1, 1, 1])


def test_hard_vote_takes_the_majority_label():
    C = np.array([[0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    # sample 0: votes 0,1,1 -> 1; sample 1: votes 2,1,2 -> 2
    assert hard_vote([A, B, C]).tolist() == [1, 2]


def test_hard_vote_breaks_ties_by_summed_probability_of_tied_classes():
    # one vote for class 0, one for class 1; summed probability: class 0 = 0.70, class 1 = 0.50,
    # class 2 = 0.80 is larger still but got no vote, so it must not win
    P = np.array([[0.45, 0.10, 0.44]])
    Q = np.array([[0.25, 0.40, 0.35]])
    assert P.argmax() == 0 and Q.argmax() == 1
    assert hard_vote([P, Q]).tolist() == [0]
    # the same tie with more mass on class 1
    assert hard_vote([np.array([[0.40, 0.35, 0.25]]), np.array([[0.05, 0.60, 0.35]])]).tolist() == [1]


def _members(n=60, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    right = np.full((n, n_classes), 0.1 / (n_classes - 1))
    right[np.arange(n), y] = 0.9
    wrong = np.roll(right, 1, axis=1)  # always puts its mass on the next class
    noise = rng.dirichlet(np.ones(n_classes), size=n)
    return y, right, wrong, noise


def test_stacking_learns_to_trust_the_member_that_is_always_right():
    y, right, wrong, noise = _members()
    meta, cv_acc = fit_stacking([wrong, noise, right], y)
    assert cv_acc == 1.0
    assert (stack_predict(meta, [wrong, noise, right]).argmax(axis=1) == y).all()
