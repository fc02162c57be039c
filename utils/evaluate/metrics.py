"""Classification metrics: a summary dict, a text table, and files (json, csv, confusion png)."""
import csv
import json
import os
import warnings

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, top_k_accuracy_score


def _n_classes(y_true, y_pred, probs, class_names):
    if class_names is not None:
        return len(class_names)
    if probs is not None:
        return np.asarray(probs).shape[1]
    return int(max(y_true.max(initial=-1), y_pred.max(initial=-1))) + 1


def _most_confused(cm, class_names, k):
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:k]  # ties: row-major (true, predicted) order
    pairs = []
    for t, p in zip(*np.unravel_index(order, cm.shape)):
        if off[t, p] > 0:
            pairs.append(dict(true=int(t), predicted=int(p), true_name=class_names[t],
                              predicted_name=class_names[p], count=int(off[t, p])))
    return pairs


def classification_summary(y_true, y_pred, probs=None, class_names=None, n_confused=5):
    """Metrics of integer predictions against integer labels, as a JSON-ready dict.

    Keys: n_samples, n_classes, class_names, top1, top5 (None unless probs is given and there are
    at least 5 classes), per_class (precision/recall/f1/support per class), macro averages (over the
    classes present in y_true) and weighted averages, absent_classes (names of the classes without a
    sample), confusion (n x n, rows = true, columns = predicted) and most_confused (the largest
    off-diagonal counts, true -> predicted, at most n_confused).
    """
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or len(y_true) == 0:
        raise ValueError(f"y_true and y_pred must be non-empty 1-d label arrays of one length, "
                         f"got shapes {y_true.shape} and {y_pred.shape}")
    n = _n_classes(y_true, y_pred, probs, class_names)
    if min(y_true.min(), y_pred.min()) < 0 or max(y_true.max(), y_pred.max()) >= n:
        raise ValueError(f"labels must be class indices in [0, {n}); pass class_names for every class")
    names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(n)]
    labels = list(range(n))

    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = [dict(name=names[i], precision=float(p[i]), recall=float(r[i]), f1=float(f[i]),
                      support=int(s[i])) for i in labels]
    # A folder may hold a subset of the classes: a class without samples would enter the macro mean as 0.
    present = [i for i in labels if s[i] > 0]
    averages = {}
    for avg in ("macro", "weighted"):
        ap, ar, af, _ = precision_recall_fscore_support(y_true, y_pred, labels=present if avg == "macro" else labels,
                                                        average=avg, zero_division=0)
        averages[avg] = dict(precision=float(ap), recall=float(ar), f1=float(af), support=len(y_true))

    top5 = None
    if probs is not None and n >= 5:
        with warnings.catch_warnings():  # with exactly 5 classes sklearn warns that top-5 is always 1
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            top5 = float(top_k_accuracy_score(y_true, np.asarray(probs), k=5, labels=labels))
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    return dict(n_samples=len(y_true), n_classes=n, class_names=names,
                top1=float((y_true == y_pred).mean()), top5=top5, per_class=per_class,
                macro=averages["macro"], weighted=averages["weighted"],
                absent_classes=[names[i] for i in labels if s[i] == 0],
                confusion=cm.tolist(), most_confused=_most_confused(cm, names, n_confused))


CALIBRATION_BINS = 15  # confidence bins of the expected calibration error and the reliability diagram


def calibration(probs, targets, bins=CALIBRATION_BINS):
    """How well the confidence of the predicted class matches how often it is right, as a JSON-ready dict: `ece`,
    the expected calibration error over `bins` equal-width confidence bins (sum over the bins of |accuracy -
    mean confidence| weighted by their share of the images); `ece_adaptive`, the same over bins of equal counts;
    `nll` (negative log-likelihood of the true class) and `brier` (squared error of the probability vector, summed
    over classes) from scikit-learn; `reliability`: per non-empty equal-width bin its mean confidence, accuracy and
    image count (the reliability diagram)."""
    from sklearn.metrics import brier_score_loss, log_loss
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets, dtype=np.int64)
    probs = probs / probs.sum(1, keepdims=True)  # float32 softmax rows sum to 1 within 1e-7 only
    confidence, correct = probs.max(1), (probs.argmax(1) == targets).astype(np.float64)
    edges = np.linspace(0, 1, bins + 1)
    which = np.searchsorted(edges[1:-1], confidence, side='left')  # bin k holds (k/bins, (k+1)/bins]
    equal_width = [np.flatnonzero(which == k) for k in range(bins)]
    equal_count = np.array_split(np.argsort(confidence, kind='stable'), bins)

    def ece(groups):
        return float(sum(abs(correct[g].mean() - confidence[g].mean()) * len(g) for g in groups if len(g))
                     / len(targets))

    labels = list(range(probs.shape[1]))
    return dict(bins=bins, ece=ece(equal_width), ece_adaptive=ece(equal_count),
                nll=float(log_loss(targets, probs, labels=labels)),
                brier=float(brier_score_loss(targets, probs, labels=labels)),
                reliability=[dict(confidence=float(confidence[g].mean()), accuracy=float(correct[g].mean()),
                                  images=int(len(g))) for g in equal_width if len(g)])


def format_calibration(cal):
    return (f"calibration: ECE {100 * cal['ece']:.2f}% ({cal['bins']} bins; adaptive {100 * cal['ece_adaptive']:.2f}%)"
            f", NLL {cal['nll']:.4f}, Brier {cal['brier']:.4f}")


def reliability_png(cal, path, title='reliability'):
    """PNG into `path` (a file name or a binary file) of the reliability diagram of calibration(): accuracy against
    mean confidence per bin (bar width = bin), the diagonal of perfect calibration, and the share of images per bin
    beneath."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(4.5, 5.4))
    top, bottom = fig.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    width = 1 / cal['bins']
    centers = [min(int(r['confidence'] / width - 1e-9), cal['bins'] - 1) * width + width / 2
               for r in cal['reliability']]
    top.bar(centers, [r['accuracy'] for r in cal['reliability']], width=width * 0.95, color='#3b75af',
            label='accuracy')
    top.plot([0, 1], [0, 1], '--', color='gray', label='perfect calibration')
    top.plot([r['confidence'] for r in cal['reliability']], [r['accuracy'] for r in cal['reliability']], 'o',
             color='#e06c2c', markersize=3, label='bin: mean confidence, accuracy')
    top.set(ylim=(0, 1), ylabel='accuracy', title=f"{title}: ECE {100 * cal['ece']:.2f}%")
    top.legend(loc='upper left', fontsize=8)
    total = sum(r['images'] for r in cal['reliability'])
    bottom.bar(centers, [r['images'] / total for r in cal['reliability']], width=width * 0.95, color='#999999')
    bottom.set(xlim=(0, 1), xlabel='confidence of the predicted class', ylabel='share')
    fig.tight_layout()
    fig.savefig(path, format='png', dpi=100)


def _cut(name, width):
    return name if len(name) <= width else name[: width - 2] + ".."


def format_summary(summary):
    """A fixed-width text table: per-class rows, averages, accuracy and the most confused pairs."""
    w = max(12, min(24, max(len(n) for n in summary["class_names"])))
    row = f"{{:<{w}}} {{:>9}} {{:>9}} {{:>9}} {{:>9}}"
    num = f"{{:<{w}}} {{:>9.4f}} {{:>9.4f}} {{:>9.4f}} {{:>9d}}"
    lines = [row.format("class", "precision", "recall", "f1", "support")]
    for c in summary["per_class"]:
        lines.append(num.format(_cut(c["name"], w), c["precision"], c["recall"], c["f1"], c["support"]))
    lines.append("")
    for avg in ("macro", "weighted"):
        a = summary[avg]
        lines.append(num.format(f"{avg} avg", a["precision"], a["recall"], a["f1"], a["support"]))
    absent = summary["absent_classes"]
    if absent:
        lines.append(f"macro avg over the {summary['n_classes'] - len(absent)} of {summary['n_classes']} classes "
                     f"present; absent from the data (left out of the macro average): {', '.join(absent)}")
    lines.append("")
    top5 = "" if summary["top5"] is None else f"top-5 accuracy {summary['top5']:.4f}   "
    lines.append(f"top-1 accuracy {summary['top1']:.4f}   {top5}"
                 f"({summary['n_samples']} samples, {summary['n_classes']} classes)")
    if summary["most_confused"]:
        lines.append("most confused (true -> predicted: count):")
        for m in summary["most_confused"]:
            lines.append(f"  {_cut(m['true_name'], w)} -> {_cut(m['predicted_name'], w)}: {m['count']}")
    return "\n".join(lines)


def write_summary(summary, out_dir, prefix):
    """Write {prefix}_metrics.json, _per_class.csv, _confusion.csv, _confusion.png and, when the summary has its
    calibration, _reliability.png; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {k: os.path.join(out_dir, f"{prefix}_{k}") for k in
             ("metrics.json", "per_class.csv", "confusion.csv", "confusion.png")}
    with open(paths["metrics.json"], "w") as f:
        json.dump(summary, f, indent=2)
    with open(paths["per_class.csv"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "precision", "recall", "f1", "support"])
        for c in summary["per_class"]:
            writer.writerow([c["name"], c["precision"], c["recall"], c["f1"], c["support"]])
    names = summary["class_names"]
    with open(paths["confusion.csv"], "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true\\predicted"] + names)
        for name, counts in zip(names, summary["confusion"]):
            writer.writerow([name] + counts)
    confusion_png(summary["confusion"], names, paths["confusion.png"])
    if summary.get("calibration"):
        paths["reliability.png"] = os.path.join(out_dir, f"{prefix}_reliability.png")
        reliability_png(summary["calibration"], paths["reliability.png"], prefix)
    return paths


def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _shade(v):
    """White at 0 to dark blue at 1."""
    lo, hi = np.array([255, 255, 255]), np.array([8, 48, 107])
    return tuple(int(c) for c in np.round(lo + (hi - lo) * v))


def confusion_png(cm, class_names, path):
    """Write confusion_image(cm, class_names) to `path` as a PNG."""
    confusion_image(cm, class_names).save(path)


def confusion_image(cm, class_names):
    """The confusion matrix as a PIL heatmap (rows = true, columns = predicted).

    Cells are shaded by the row-normalised value (recall per true class); counts are written in
    the cells when they are big enough; axis labels are class names (cut to 14 characters) up to
    30 classes, class indices beyond that (every few indices when the cells are narrow).
    """
    cm = np.asarray(cm, dtype=np.int64)
    n = cm.shape[0]
    if cm.shape != (n, n) or len(class_names) != n:
        raise ValueError(f"confusion matrix must be {len(class_names)} x {len(class_names)}, got {cm.shape}")
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)

    cell = int(np.clip(640 // n, 6, 48))
    font, small = _font(12), _font(max(8, min(12, cell // 3)))
    labels = [_cut(str(c), 14) for c in class_names] if n <= 30 else [str(i) for i in range(n)]
    line_h = 14
    step = max(1, int(np.ceil(line_h / cell)))  # leave room for one label line every `step` cells
    shown = [labels[i] if i % step == 0 else "" for i in range(n)]
    label_w = max(int(font.getlength(s)) for s in shown) + 8
    title = f"Confusion matrix ({n} classes, row-normalised; rows = true, columns = predicted)"
    title_h, grid = 36, cell * n
    W = max(label_w + grid + 30, int(font.getlength(title)) + 16)
    H = title_h + grid + label_w + 24

    img = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(img)
    draw.text((8, 10), title, fill="black", font=font)
    x0, y0 = label_w, title_h
    show_counts = cell >= 24
    for t in range(n):
        for p in range(n):
            box = (x0 + p * cell, y0 + t * cell, x0 + (p + 1) * cell - 1, y0 + (t + 1) * cell - 1)
            draw.rectangle(box, fill=_shade(norm[t, p]))
            if show_counts and cm[t, p]:
                color = "white" if norm[t, p] > 0.5 else "black"
                draw.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), str(cm[t, p]),
                          fill=color, font=small, anchor="mm")
    draw.rectangle((x0 - 1, y0 - 1, x0 + grid, y0 + grid), outline="gray")
    for i, s in enumerate(shown):
        if not s:
            continue
        draw.text((x0 - 4, y0 + i * cell + cell / 2), s, fill="black", font=font, anchor="rm")
        # column labels: drawn horizontally on their own strip, then turned to read bottom-up
        strip = Image.new("RGB", (label_w, line_h), "white")
        ImageDraw.Draw(strip).text((label_w - 4, line_h / 2), s, fill="black", font=font, anchor="rm")
        img.paste(strip.rotate(90, expand=True), (x0 + i * cell + cell // 2 - line_h // 2, y0 + grid + 4))
    draw.text((x0 + grid / 2, H - 12), "predicted", fill="black", font=font, anchor="mm")
    return img


def confusion(targets, preds, num_classes):
    """cm[true, predicted] counts."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(targets, dtype=np.int64), np.asarray(preds, dtype=np.int64)), 1)
    return cm


def per_class_accuracy(cm):
    """Recall of each class (nan for a class with no samples)."""
    support = cm.sum(axis=1)
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)
