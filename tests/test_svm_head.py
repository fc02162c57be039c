import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from utils.evaluate.svm_head import fit_svm_head, load_svm_head, save_svm_head


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    Xtr, Xva, ytr, yva = train_test_split(Xtr, ytr, test_size=0.3, stratify=ytr, random_state=0)
    return Xtr, ytr, Xva, yva, Xte, yte


def test_choice_is_the_best_validation_accuracy_in_the_table(digits):
    Xtr, ytr, Xva, yva, _, _ = digits
    head, table = fit_svm_head(Xtr, ytr, Xva, yva)
    assert [(k, C) for k, C, _ in table] == [(k, C) for k in ("rbf", "linear") for C in (0.1, 1, 10)]
    assert (head.predict(Xva) == yva).mean() == max(acc for _, _, acc in table)


@pytest.mark.parametrize("kind", ["rbf", "linear"])
def test_loaded_head_predicts_exactly_as_sklearn(digits, tmp_path, kind):
    Xtr, ytr, Xva, yva, Xte, yte = digits
    head, _ = fit_svm_head(Xtr, ytr, Xva, yva, kinds=(kind,), Cs=(1,))
    path = tmp_path / "head.npz"
    save_svm_head(head, path)
    with np.load(path, allow_pickle=False) as f:
        assert all(f[k].dtype != object for k in f.files)
    loaded = load_svm_head(path)
    X = np.concatenate([Xte, Xva])
    assert (loaded.predict(X) == head.predict(X)).all()
    assert np.allclose(loaded.decision_function(X), head.decision_function(X), atol=1e-8)
    assert (head.predict(Xte) == yte).mean() > 0.9


@pytest.mark.parametrize("kind", ["rbf", "linear"])
def test_loaded_binary_head_predicts_exactly_as_sklearn(digits, tmp_path, kind):
    Xtr, ytr, Xva, yva, Xte, _ = digits
    # two hard-to-separate digits so some decision values are small and both signs occur
    tr, va = np.isin(ytr, (3, 8)), np.isin(yva, (3, 8))
    head, _ = fit_svm_head(Xtr[tr], ytr[tr], Xva[va], yva[va], kinds=(kind,), Cs=(0.1,))
    save_svm_head(head, tmp_path / "h.npz")
    loaded = load_svm_head(tmp_path / "h.npz")
    assert (loaded.predict(Xte) == head.predict(Xte)).all()
    assert np.allclose(loaded.decision_function(Xte), head.decision_function(Xte), atol=1e-8)


def test_rbf_votes_tie_goes_to_the_lowest_class_index_as_in_libsvm(digits, tmp_path):
    Xtr, ytr, Xva, yva, _, _ = digits
    head, _ = fit_svm_head(Xtr, ytr, Xva, yva, kinds=("rbf",), Cs=(0.1,))
    save_svm_head(head, tmp_path / "h.npz")
    loaded = load_svm_head(tmp_path / "h.npz")
    # blends of two or three training digits sit between classes and give tied vote counts
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(Xtr), size=(3000, 3))
    X = np.einsum("nk,nkd->nd", rng.dirichlet(np.ones(3), size=3000), Xtr[idx])
    votes = loaded._ovo_votes(loaded._ovo(loaded._scale(X)))
    tied = (votes == votes.max(1, keepdims=True)).sum(1) > 1
    assert tied.sum() >= 5
    # libsvm's tie rule is not the argmax of the 'ovr' decision values: the two differ here
    ovr_choice = head.classes_[head.decision_function(X).argmax(1)]
    assert (ovr_choice[tied] != head.predict(X)[tied]).any()
    assert (loaded.predict(X) == head.predict(X)).all()


def test_unknown_kind_is_rejected(digits):
    Xtr, ytr, Xva, yva, _, _ = digits
    with pytest.raises(ValueError, match="rbf, linear"):
        fit_svm_head(Xtr, ytr, Xva, yva, kinds=("poly",))
