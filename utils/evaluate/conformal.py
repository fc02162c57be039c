"""Prediction sets with a coverage guarantee (`predict --coverage=0.95`): split conformal prediction by MAPIE
(scikit-learn-contrib), its LAC score, calibrated on the validation split of the checkpoint's run. For a new image
from the distribution of the calibration images, the set holds its true class with probability >= coverage
(marginally, over images and calibration draws); an uncertain image gets more classes, a clear one fewer."""
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


class GivenProbabilities(ClassifierMixin, BaseEstimator):
    """A fitted classifier for MAPIE's prefit mode whose input rows are already the network's class probabilities."""

    def __init__(self, n_classes=2):
        self.n_classes = n_classes

    def fit(self, X, y=None):
        self.classes_ = np.arange(self.n_classes)
        return self

    def predict_proba(self, X):
        return np.asarray(X, dtype=np.float64)

    def predict(self, X):
        return np.asarray(X).argmax(1)


def prediction_sets(cal_probs, cal_targets, probs, coverage):
    """Boolean (N, classes) array: the classes in each row's prediction set at `coverage`, conformalized on the
    calibration rows (cal_probs, cal_targets). Rows of `probs` with NaN (unreadable images) get an empty set."""
    from mapie.classification import SplitConformalClassifier
    probs = np.asarray(probs, dtype=np.float64)
    n = probs.shape[1]
    conformal = SplitConformalClassifier(GivenProbabilities(n).fit(cal_probs), confidence_level=coverage,
                                         conformity_score='lac', prefit=True)
    conformal.conformalize(np.asarray(cal_probs, dtype=np.float64), np.asarray(cal_targets))
    sets = np.zeros(probs.shape, dtype=bool)
    valid = ~np.isnan(probs).any(1)
    if valid.any():
        sets[valid] = conformal.predict_set(probs[valid])[1][:, :, 0]
    return sets
