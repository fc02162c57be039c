"""An SVM classifier head on frozen features, saved as plain arrays and replayed in numpy."""
import numpy as np
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

KINDS = ("rbf", "linear")


def _make_head(kind, C):
    if kind == "rbf":
        return make_pipeline(StandardScaler(), SVC(kernel="rbf", C=C))
    if kind == "linear":
        return make_pipeline(StandardScaler(), LinearSVC(C=C, max_iter=10000))
    raise ValueError(f"unknown svm kind {kind!r}; choose from {', '.join(KINDS)}")


def fit_svm_head(train_feats, train_y, val_feats, val_y, kinds=KINDS, Cs=(0.1, 1, 10)):
    """Fit StandardScaler + SVM heads for every (kind, C) and keep the best on validation accuracy.

    Every candidate, including the one returned, is fitted on the training features only; the
    validation set is used only to choose kind and C (it is not refitted on train+val).
    Returns (head, table) with table a list of (kind, C, val_acc) in the order tried.
    """
    val_y = np.asarray(val_y)
    best, best_acc, table = None, -1.0, []
    for kind in kinds:
        for C in Cs:
            head = _make_head(kind, C).fit(train_feats, train_y)
            acc = float((head.predict(val_feats) == val_y).mean())
            table.append((kind, C, acc))
            if acc > best_acc:  # strict: ties keep the earlier, simpler candidate
                best, best_acc = head, acc
    return best, table


def save_svm_head(head, path):
    """Write a fitted head as an .npz of plain numeric arrays (loadable with allow_pickle=False)."""
    scaler, svm = head[0], head[-1]
    arrays = dict(mean=scaler.mean_, scale=scaler.scale_, classes=np.asarray(svm.classes_))
    if isinstance(svm, SVC) and svm.kernel == "rbf":
        arrays.update(kind=np.array("rbf"), support_vectors=svm.support_vectors_,
                      dual_coef=svm.dual_coef_, intercept=svm.intercept_,
                      # _gamma is the number libsvm used ("scale" resolved on the training data)
                      gamma=np.array(svm._gamma), n_support=svm.n_support_)
    elif isinstance(svm, LinearSVC):
        arrays.update(kind=np.array("linear"), coef=svm.coef_, intercept=svm.intercept_)
    else:
        raise ValueError(f"cannot save {type(svm).__name__}: only SVC(kernel='rbf') and LinearSVC heads")
    np.savez(path, **arrays)


def load_svm_head(path):
    """Read a head written by save_svm_head; returns a NumpySVMHead."""
    with np.load(path, allow_pickle=False) as f:
        return NumpySVMHead({k: f[k] for k in f.files})


class NumpySVMHead:
    """StandardScaler + SVM replayed in numpy from saved arrays; predicts exactly as sklearn does.

    rbf: libsvm one-vs-one; a pair (i, j), i < j, votes for i when its decision value is > 0,
    else for j, and the class with most votes wins, the lowest class index on a tie.
    decision_function follows sklearn's default shape: (n, n_classes) 'ovr' values for more than
    two classes, (n,) for two (positive means classes[1]).
    linear: one-vs-rest scores, argmax (binary: score > 0 means classes[1]).
    """

    def __init__(self, arrays):
        self.kind = str(arrays["kind"])
        self.classes_ = arrays["classes"]
        self._arrays = arrays

    def _scale(self, X):
        return (np.asarray(X, dtype=np.float64) - self._arrays["mean"]) / self._arrays["scale"]

    def _ovo(self, X):
        """libsvm's pairwise decision values (n, n_pairs), pairs in order (0,1), (0,2), ..., (1,2), ..."""
        a = self._arrays
        sv, coef, b, n_sv = a["support_vectors"], a["dual_coef"], a["intercept"], a["n_support"]
        if len(self.classes_) == 2:  # sklearn stores the binary case with flipped signs
            coef, b = -coef, -b
        # same expansion as libsvm's dense rbf kernel: |x|^2 + |y|^2 - 2 x.y
        sq = (X * X).sum(1)[:, None] + (sv * sv).sum(1)[None, :] - 2.0 * X @ sv.T
        K = np.exp(-float(a["gamma"]) * sq)
        start = np.concatenate([[0], np.cumsum(n_sv)])
        n = len(self.classes_)
        dec = []
        for i in range(n):
            for j in range(i + 1, n):
                si, sj = slice(start[i], start[i + 1]), slice(start[j], start[j + 1])
                p = len(dec)
                dec.append(K[:, si] @ coef[j - 1, si] + K[:, sj] @ coef[i, sj] + b[p])
        return np.stack(dec, axis=1)

    def _ovo_votes(self, dec):
        n = len(self.classes_)
        votes = np.zeros((len(dec), n), dtype=np.int64)
        p = 0
        for i in range(n):
            for j in range(i + 1, n):
                win_i = dec[:, p] > 0
                votes[:, i] += win_i
                votes[:, j] += ~win_i
                p += 1
        return votes

    def decision_function(self, X):
        """Decision values in sklearn's default shape (see the class docstring)."""
        X = self._scale(X)
        if self.kind == "linear":
            scores = X @ self._arrays["coef"].T + self._arrays["intercept"]
            return scores.ravel() if scores.shape[1] == 1 else scores
        dec = self._ovo(X)
        if len(self.classes_) == 2:
            return -dec.ravel()
        # sklearn's ovr transform: votes plus summed confidences squashed into (-1/3, 1/3)
        n = len(self.classes_)
        votes, conf = np.zeros((len(X), n)), np.zeros((len(X), n))
        p = 0
        for i in range(n):
            for j in range(i + 1, n):
                conf[:, i] += dec[:, p]
                conf[:, j] -= dec[:, p]
                votes[:, i] += dec[:, p] >= 0
                votes[:, j] += dec[:, p] < 0
                p += 1
        return votes + conf / (3 * (np.abs(conf) + 1))

    def predict(self, X):
        """Class labels, (n,)."""
        if self.kind == "linear":
            scores = self.decision_function(X)
            idx = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        else:
            idx = self._ovo_votes(self._ovo(self._scale(X))).argmax(axis=1)
        return self.classes_[idx]
