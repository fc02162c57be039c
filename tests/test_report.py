import csv
import json
import warnings

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import classification_report

from utils.evaluate.metrics import classification_summary, confusion_png, format_summary, write_summary

Y_TRUE = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
Y_PRED = np.array([0, 0, 1, 1, 2, 2, 2, 1, 2, 0])
NAMES = ["cat", "dog", "a_rather_long_class_name", "owl"]


def test_per_class_and_averages_match_sklearn_classification_report():
    s = classification_summary(Y_TRUE, Y_PRED, class_names=NAMES)
    ref = classification_report(Y_TRUE, Y_PRED, labels=range(4), output_dict=True, zero_division=0)
    for i, c in enumerate(s["per_class"]):
        r = ref[str(i)]
        assert (c["precision"], c["recall"], c["f1"], c["support"]) == pytest.approx(
            (r["precision"], r["recall"], r["f1-score"], r["support"]))
    for avg in ("macro", "weighted"):
        r = ref[f"{avg} avg"]
        assert (s[avg]["precision"], s[avg]["recall"], s[avg]["f1"]) == pytest.approx(
            (r["precision"], r["recall"], r["f1-score"]))
    assert s["top1"] == pytest.approx(6 / 10)


def test_hand_counted_precision_recall_of_one_class():
    s = classification_summary(Y_TRUE, Y_PRED, class_names=NAMES)
    dog = s["per_class"][1]  # predicted dog 3 times, 1 right; 2 true dogs
    assert (dog["precision"], dog["recall"], dog["support"]) == pytest.approx((1 / 3, 1 / 2, 2))
    owl = s["per_class"][3]  # never predicted: precision 0 by zero_division=0
    assert (owl["precision"], owl["recall"]) == (0, 0)


def test_confusion_and_most_confused_pairs_are_hand_counted():
    s = classification_summary(Y_TRUE, Y_PRED, class_names=NAMES, n_confused=3)
    assert s["confusion"] == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 1, 3, 0], [1, 0, 0, 0]]
    pairs = [(m["true"], m["predicted"], m["count"]) for m in s["most_confused"]]
    assert pairs == [(0, 1, 1), (1, 2, 1), (2, 1, 1)]  # equal counts: (true, predicted) order
    assert s["most_confused"][0]["true_name"] == "cat"


def test_unseen_classes_still_get_rows_and_columns():
    s = classification_summary([0, 1], [1, 0], class_names=list("abcdef"))
    assert np.array(s["confusion"]).shape == (6, 6) and len(s["per_class"]) == 6


def test_top5_only_with_probabilities_and_at_least_five_classes():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(6), size=50)
    y = rng.integers(0, 6, size=50)
    top5_by_hand = np.mean([yi in np.argsort(-p)[:5] for yi, p in zip(y, probs)])
    s = classification_summary(y, probs.argmax(1), probs=probs)
    assert s["top5"] == pytest.approx(top5_by_hand)
    assert classification_summary(y, probs.argmax(1))["top5"] is None
    assert classification_summary(Y_TRUE, Y_PRED, probs=np.full((10, 4), 0.25))["top5"] is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        five = rng.dirichlet(np.ones(5), size=20)
        assert classification_summary(y[:20] % 5, five.argmax(1), probs=five)["top5"] == 1.0


def test_labels_out_of_range_are_rejected():
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        classification_summary([0, 2], [0, 1], class_names=["a", "b"])


def test_format_summary_lists_every_class_averages_and_confusions():
    text = format_summary(classification_summary(Y_TRUE, Y_PRED, class_names=NAMES))
    for word in ["cat", "dog", "owl", "macro avg", "weighted avg", "top-1 accuracy 0.6000", "cat -> dog: 1"]:
        assert word in text
    assert "0.3333" in text  # dog precision
    rows = [l for l in text.splitlines()[:5]]
    assert len({len(l) for l in rows}) == 1  # fixed width


def test_write_summary_files_round_trip(tmp_path):
    s = classification_summary(Y_TRUE, Y_PRED, class_names=NAMES)
    paths = write_summary(s, tmp_path / "out", "val")
    assert sorted(p.split("/")[-1] for p in paths.values()) == sorted(
        ["val_metrics.json", "val_per_class.csv", "val_confusion.csv", "val_confusion.png"])
    assert json.load(open(paths["metrics.json"])) == s
    per_class = list(csv.DictReader(open(paths["per_class.csv"])))
    assert [r["class"] for r in per_class] == NAMES and per_class[1]["support"] == "2"
    rows = list(csv.reader(open(paths["confusion.csv"])))
    assert rows[0][1:] == NAMES and [r[0] for r in rows[1:]] == NAMES
    assert [[int(v) for v in r[1:]] for r in rows[1:]] == s["confusion"]
    assert Image.open(paths["confusion.png"]).format == "PNG"


@pytest.mark.parametrize("n", [2, 7, 31, 100])
def test_confusion_png_draws_2_to_100_classes(tmp_path, n):
    cm = np.eye(n, dtype=int) * 5
    cm[n - 1] = 0  # a class with no samples must not divide by zero
    if n > 2:
        cm[1, 0] = 3
    path = tmp_path / "cm.png"
    confusion_png(cm, [f"class number {i} with a long name" for i in range(n)], path)
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape[0] > 50 and img.shape[1] > 50
    # the fully-recalled cell (0, 0) gets the darkest shade
    dark = np.array([8, 48, 107])
    assert (np.abs(img.astype(int) - dark).sum(axis=2) == 0).any()


def test_confusion_png_rejects_mismatched_names(tmp_path):
    with pytest.raises(ValueError, match="3 x 3"):
        confusion_png(np.eye(2, dtype=int), ["a", "b", "c"], tmp_path / "x.png")


def test_macro_averages_cover_the_classes_present_and_the_report_lists_the_absent_ones():
    # a test folder holding 2 of the 4 training classes, every image predicted right
    s = classification_summary([1, 1, 3, 3, 3], [1, 1, 3, 3, 3], class_names=NAMES)
    assert (s["macro"]["precision"], s["macro"]["recall"], s["macro"]["f1"]) == (1.0, 1.0, 1.0)
    assert s["absent_classes"] == ["cat", "a_rather_long_class_name"]
    assert len(s["per_class"]) == 4 and np.array(s["confusion"]).shape == (4, 4)
    text = format_summary(s)
    assert "2 of 4 classes present" in text
    assert "absent from the data (left out of the macro average): cat, a_rather_long_class_name" in text
    # a wrong prediction into an absent class still costs the recall of the true class
    s = classification_summary([1, 1, 3, 3], [1, 0, 3, 3], class_names=NAMES)
    assert s["macro"]["recall"] == pytest.approx((0.5 + 1.0) / 2)
    assert "absent" not in format_summary(classification_summary(Y_TRUE, Y_PRED, class_names=NAMES))
