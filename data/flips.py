"""What a horizontal flip means for each class (--hflip=auto), decided from the training images before training.

A flip keeps the label of a photograph of a flower, turns a `b` into a `d` and a keep-left sign into a keep-right
one, and makes a `2` or an `R` into no class at all. Which of these holds is a property of each class, and the
training images tell it: every image is compared (1-nearest neighbour on 16 px thumbnails, each centred on its own
mean and scaled by its own spread) with the other training images as it is and mirrored, leaving itself out. For a
class c of n images, `own` images are nearest to another image of c, `mirrored` mirrored ones are, and `to[d]`
mirrored ones are nearest to an image of class d. Then

- flip-safe: the mirrored images are recognised as c nearly as often as the originals, mirrored / own >= RETAIN,
  with posterior probability >= SURE (uniform Beta priors on both rates);
- a mirror pair c <-> d: most mirrored images of c are nearest to d and most of d's to c (both `to` rates >= 1/2,
  each with probability >= SURE), the flip then turns an image of c into one of d: flipped, its label swaps;
- otherwise never flipped -- what the probe cannot decide (a class of fewer than MIN_IMAGES images, an unclear
  rate) included.

On the suite: digits keep 0 and 8, glyphs find b <-> d and p <-> q, photos flip their textured classes
(docs/suite.md). Seconds: at most PER_CLASS images a class are looked at, as 16 px thumbnails.
"""
import time

import numpy as np

SIDE = 16
PER_CLASS = 200
RETAIN = 0.75
SURE = 0.75
MIN_IMAGES = 8  # a class with fewer training images is never flipped: too few to tell
NEVER, DRAWS = -1, 4000


def thumbnails(paths, side=SIDE):
    """(N, side * side * 3) float32 thumbnails of `paths`, each centred on its mean and scaled by its spread; the
    same of the mirrored images; and the indices of the paths that could be read."""
    from PIL import Image
    from .dataset import load_rgb
    kept, plain, mirrored = [], [], []
    for i, path in enumerate(paths):
        try:
            image = np.asarray(load_rgb(path).resize((side, side), Image.BILINEAR), np.float32) / 255
        except (OSError, ValueError, SyntaxError):
            continue
        kept.append(i)
        plain.append(image)
        mirrored.append(image[:, ::-1])
    return normalised(np.stack(plain)), normalised(np.stack(mirrored)), np.array(kept)


def normalised(images):
    flat = images.reshape(len(images), -1)
    flat = flat - flat.mean(1, keepdims=True)
    return flat / (flat.std(1, keepdims=True) + 1e-3)


def nearest_labels(queries, references, labels, exclude):
    """The label of each query's nearest reference (squared Euclidean), reference `exclude[i]` left out for query
    i (an image is never its own neighbour, nor its mirror's)."""
    out = np.empty(len(queries), dtype=np.int64)
    ref_sq = (references * references).sum(1)
    for start in range(0, len(queries), 512):
        q = queries[start:start + 512]
        d = ref_sq[None] - 2 * q @ references.T
        d[np.arange(len(q)), exclude[start:start + 512]] = np.inf
        out[start:start + 512] = labels[d.argmin(1)]
    return out


def sure_at_least(hits, n, bound, rng):
    """P(rate >= bound) for a rate with `hits` of `n` and a uniform prior (Beta(hits + 1, n - hits + 1))."""
    return float((rng.beta(hits + 1, n - hits + 1, DRAWS) >= bound).mean())


def sure_ratio(hits, base, n, rng):
    """P(mirrored rate >= RETAIN * own rate), both with uniform priors, from `hits` and `base` of `n`."""
    return float((rng.beta(hits + 1, n - hits + 1, DRAWS) >= RETAIN * rng.beta(base + 1, n - base + 1, DRAWS)).mean())


def probe(samples, classes, seed=0):
    """The flip policy of `classes` from the training `samples` [(path, label)]: {'flips': per class the class a
    flipped image becomes (itself, its mirror partner) or -1 (never flipped), 'classes': per class its decision
    (flip | pair | never), n, own, mirrored, partner and confidence, 'seconds'}."""
    start = time.time()
    rng = np.random.default_rng(seed)
    by_class = [[i for i, (_, label) in enumerate(samples) if label == c] for c in range(len(classes))]
    chosen = sorted(i for members in by_class
                    for i in (rng.choice(members, PER_CLASS, replace=False) if len(members) > PER_CLASS else members))
    plain, mirrored, kept = thumbnails([samples[i][0] for i in chosen])
    labels = np.array([samples[chosen[k]][1] for k in kept])
    own = nearest_labels(plain, plain, labels, np.arange(len(labels)))
    flipped = nearest_labels(mirrored, plain, labels, np.arange(len(labels)))
    C = len(classes)
    to = np.zeros((C, C))
    for c, d in zip(labels, flipped):
        to[c, d] += 1
    n = np.bincount(labels, minlength=C)
    hits = np.bincount(labels[own == labels], minlength=C)
    flips, report = [NEVER] * C, []
    for c in range(C):
        others = to[c].copy()
        others[c] = -1
        partner = int(others.argmax()) if C > 1 else c
        entry = {'class': classes[c], 'n': int(n[c]), 'own': int(hits[c]), 'mirrored': int(to[c, c]),
                 'partner': classes[partner], 'to_partner': int(to[c, partner])}
        enough = n[c] >= MIN_IMAGES and n[partner] >= MIN_IMAGES
        safe = sure_ratio(to[c, c], hits[c], n[c], rng) if n[c] >= MIN_IMAGES else 0.0
        pair = min(sure_at_least(to[c, partner], n[c], 0.5, rng),
                   sure_at_least(to[partner, c], n[partner], 0.5, rng)) if enough else 0.0
        back = to[partner].copy()
        back[partner] = -1
        mutual = partner != c and int(back.argmax()) == c
        if safe >= SURE:
            flips[c], decision, sure = c, 'flip', safe
        elif mutual and pair >= SURE:
            flips[c], decision, sure = partner, 'pair', pair
        else:
            decision, sure = 'never', 1 - max(safe, pair if mutual else 0.0)
        report.append({**entry, 'decision': decision, 'confidence': round(sure, 3)})
    return {'flips': flips, 'classes': report, 'images': int(len(labels)), 'seconds': round(time.time() - start, 1)}


def policy(hflip, samples, classes, seed=0):
    """(flips, probe record): per class the class a flipped image becomes, or -1: every class itself for
    --hflip=true, -1 for each with --hflip=false, the probe's decisions (and its record) for auto."""
    if hflip == 'auto':
        found = probe(samples, classes, seed)
        return tuple(found['flips']), found
    return tuple(range(len(classes))) if hflip else (NEVER,) * len(classes), None


def describe(flips, classes):
    """One line: which classes a flip leaves as they are, which pairs it swaps, how many it never flips."""
    safe = [classes[c] for c, a in enumerate(flips) if a == c]
    pairs = sorted({tuple(sorted((classes[c], classes[a]))) for c, a in enumerate(flips) if a not in (c, NEVER)})
    never = sum(a == NEVER for a in flips)
    shown = ', '.join(safe[:12]) + (f' and {len(safe) - 12} more' if len(safe) > 12 else '')
    return (f'{len(safe)} of {len(classes)} classes flipped' + (f' ({shown})' if safe else '')
            + (f', {len(pairs)} mirror pair(s) swapped ({", ".join(f"{a} <-> {b}" for a, b in pairs)})' if pairs
               else '') + f', {never} never flipped')
