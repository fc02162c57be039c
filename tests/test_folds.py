import numpy as np
import pytest

from data.folds import kfold_indices

LABELS = np.array([0] * 13 + [1] * 7 + [2] * 10)


def test_train_and_val_of_a_fold_are_disjoint_and_complete():
    for fold in range(3):
        train, val = kfold_indices(LABELS, 3, fold)
        assert not set(train) & set(val)
        assert sorted(np.concatenate([train, val])) == list(range(len(LABELS)))


def test_val_parts_cover_every_sample_exactly_once():
    vals = np.concatenate([kfold_indices(LABELS, 3, f)[1] for f in range(3)])
    assert sorted(vals) == list(range(len(LABELS)))


def test_each_val_part_is_stratified():
    counts = np.array([np.bincount(LABELS[kfold_indices(LABELS, 3, f)[1]], minlength=3)
                       for f in range(3)])
    assert (counts.max(axis=0) - counts.min(axis=0) <= 1).all()
    assert (counts.sum(axis=0) == np.bincount(LABELS)).all()


def test_same_seed_gives_same_split_and_other_seed_differs():
    a = kfold_indices(LABELS, 3, 1, seed=0)[1]
    assert (a == kfold_indices(LABELS, 3, 1, seed=0)[1]).all()
    assert set(a) != set(kfold_indices(LABELS, 3, 1, seed=1)[1])


@pytest.mark.parametrize("fold", [-1, 3])
def test_fold_out_of_range_is_rejected(fold):
    with pytest.raises(ValueError, match=r"fold must be in \[0, 3\)"):
        kfold_indices(LABELS, 3, fold)


def test_class_smaller_than_k_is_named_with_its_count():
    with pytest.raises(ValueError, match="class 1 has only 7 samples"):
        kfold_indices(LABELS, 8, 0)
