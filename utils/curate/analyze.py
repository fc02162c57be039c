"""Know the data before training on it: per-split class counts, sizes, modes and formats; broken files;
empty or missing classes; exact (content hash) and near (perceptual hash) duplicates within and across splits.

    python main.py analyze --data-root=data        # data/{train,val,test}/<class>/<image>, or one class-folder root

Only numpy and PIL: the report runs without torch.
"""
import hashlib
import io
import json
import os
import statistics
import time
from collections import Counter

import numpy as np
from PIL import Image, UnidentifiedImageError

from data.dataset import require_folder
from utils.io import IMG_EXTENSIONS, is_image_file, walk_files, write_csv, progress as show_progress

SPLIT_ORDER = ('train', 'val', 'test')
# Problems that make a file useless or misleading; clean moves these by default.
BROKEN = ('zero_byte', 'non_image', 'truncated', 'unreadable')
FILE_CATEGORIES = BROKEN + ('other_file', 'exact_dup', 'near_dup', 'leak')
FOLDER_CATEGORIES = ('empty_class', 'missing_class')
DEFAULT_CLEAN = BROKEN + ('exact_dup', 'leak')
CATEGORIES = FILE_CATEGORIES + FOLDER_CATEGORIES
DESCRIBE = {
    'zero_byte': 'zero-byte files',
    'non_image': 'files with an image extension whose content is not an image',
    'truncated': 'truncated images (the header reads, the pixels end early)',
    'unreadable': 'images that fail to decode for another reason',
    'other_file': 'files without an image extension inside class folders (training ignores them)',
    'exact_dup': 'exact duplicates (same bytes) inside one split',
    'near_dup': 'near duplicates (perceptual hash) inside one split',
    'leak': 'copies across splits (exact or near): the same picture in train and val/test',
    'empty_class': 'class folders without a single usable image',
    'missing_class': 'classes that exist in another split but not in this one',
}


def find_splits(root):
    """{split name: folder}: root/train, root/val, root/test (and other folders of class folders) when present,
    otherwise root itself as one split named after it."""
    require_folder(root, 'give --data-root=FOLDER (train/val/test inside, or class folders)')
    named = [s for s in SPLIT_ORDER if os.path.isdir(os.path.join(root, s))]
    if named:
        return {s: os.path.join(root, s) for s in named}
    return {os.path.basename(os.path.normpath(root)) or 'data': root}


def dhash(img, size=8):
    """64-bit difference hash: grayscale (size+1) x size, one bit per left-right brightness step."""
    gray = np.asarray(img.convert('L').resize((size + 1, size), Image.BILINEAR), dtype=np.int16)
    bits = (gray[:, 1:] > gray[:, :-1]).flatten()
    return int(np.packbits(bits).view('>u8')[0])


def thumbnail(img, size=16):
    """size x size grayscale with its mean removed (brightness shifts do not count), float32."""
    t = np.asarray(img.convert('L').resize((size, size), Image.BILINEAR), dtype=np.float32)
    return t - t.mean()


def inspect_file(path):
    """Facts about one file: bytes, sha256, and for a decodable image its format, mode, size, dhash and a
    small `thumb` array; `problem` is one of BROKEN (or None) with `detail` saying why."""
    with open(path, 'rb') as f:
        data = f.read()
    info = {'bytes': len(data), 'sha256': hashlib.sha256(data).hexdigest(), 'format': '', 'mode': '',
            'width': 0, 'height': 0, 'dhash': '', 'thumb': None, 'problem': None, 'detail': ''}
    if not data:
        info.update(problem='zero_byte', detail='0 bytes')
        return info
    try:
        img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, ValueError, SyntaxError):
        head = data[:16].decode('ascii', 'replace').strip()
        info.update(problem='non_image', detail=f'not an image (starts with {head!r})')
        return info
    info.update(format=img.format or '', mode=img.mode, width=img.width, height=img.height)
    try:
        img.load()
    except OSError as e:
        kind = 'truncated' if 'truncat' in str(e).lower() else 'unreadable'
        info.update(problem=kind, detail=f'{type(e).__name__}: {e}')
        return info
    except Exception as e:  # decoders raise many types; all mean the same here
        info.update(problem='unreadable', detail=f'{type(e).__name__}: {e}')
        return info
    info['dhash'] = f'{dhash(img):016x}'
    info['thumb'] = thumbnail(img)
    return info


def list_files(folder):
    """(class name, path) of every file under folder/<class>/ (any depth), classes sorted, hidden skipped."""
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith('.'))
    return classes, [(name, path) for name in classes for path in walk_files(os.path.join(folder, name), False)]


def near_pairs(hashes, max_bits):
    """Index pairs (i, j) whose 64-bit hashes differ in at most max_bits bits. Multi-index hashing: split the
    hash into max_bits + 1 bands; two hashes that close agree on at least one band (pigeonhole), so only
    the members of a band bucket are compared, not all pairs."""
    n = len(hashes)
    if n < 2:
        return set()
    h = np.array(hashes, dtype=np.uint64)
    bands = max_bits + 1
    edges = np.linspace(0, 64, bands + 1).astype(int)
    pairs = set()
    for b in range(bands):
        lo, width = edges[b], edges[b + 1] - edges[b]
        key = (h >> np.uint64(lo)) & np.uint64((1 << width) - 1)
        order = np.argsort(key, kind='stable')
        bounds = np.flatnonzero(np.diff(key[order])) + 1
        for group in np.split(order, bounds):
            if len(group) < 2:
                continue
            sub = h[group]
            dist = np.bitwise_count(sub[:, None] ^ sub[None, :])
            for a, c in zip(*np.nonzero(np.triu(dist <= max_bits, 1))):
                pairs.add((int(group[a]), int(group[c])))
    return pairs


def analyze(root, near_bits=4, near_diff=3.0, progress=True):
    """The full report of a data root as a JSON-ready dict: 'splits' (per-split statistics), 'files' (one
    record per file) and 'problems' (category, split, class, path relative to root, detail).

    Near duplicates: 64-bit difference hashes within `near_bits` bits whose 16 px grayscale thumbnails
    (mean removed) also differ by at most `near_diff` grey levels on average -- on small, plain images
    (digits, icons) the hash alone matches many different pictures. near_bits < 0 skips the search."""
    splits = find_splits(root)
    order = {s: i for i, s in enumerate(list(SPLIT_ORDER) + sorted(set(splits) - set(SPLIT_ORDER)))}
    listing = {s: list_files(folder) for s, folder in sorted(splits.items(), key=lambda kv: order[kv[0]])}
    todo = [(s, cls, p) for s, (_, files) in listing.items() for cls, p in files]
    records, problems, thumbs = [], [], {}
    for split, cls, path in (show_progress(todo, 'analyze') if progress and len(todo) >= 500 else todo):
        rel = os.path.relpath(path, root)
        rec = {'split': split, 'class': cls, 'path': rel}
        if not is_image_file(os.path.basename(path)):
            rec.update(bytes=os.path.getsize(path), sha256='', format='', mode='', width=0, height=0, dhash='',
                       problem='other_file', detail=f'extension {os.path.splitext(path)[1] or "(none)"} is not '
                       f'one of {" ".join(IMG_EXTENSIONS)}')
        else:
            rec.update(inspect_file(path))
            thumbs[rel] = rec.pop('thumb')
        records.append(rec)
        if rec['problem']:
            problems.append(problem(rec['problem'], rec, rec['detail']))

    problems += duplicate_problems(records, order, near_bits, near_diff, thumbs)
    all_classes = sorted({c for classes, _ in listing.values() for c in classes})
    stats = {}
    for split, (classes, _) in listing.items():
        usable = [r for r in records if r['split'] == split and r['dhash']]
        counts = Counter(r['class'] for r in usable)
        per_class = {c: counts.get(c, 0) for c in classes}
        for c in classes:
            if per_class[c] == 0:
                problems.append({'category': 'empty_class', 'split': split, 'class': c,
                                 'path': os.path.relpath(os.path.join(splits[split], c), root),
                                 'detail': 'no usable image in this class folder'})
        for c in all_classes:
            if c not in classes:
                problems.append({'category': 'missing_class', 'split': split, 'class': c, 'path': '',
                                 'detail': f'class {c} is in another split but has no folder here'})
        nonzero = [v for v in per_class.values() if v]
        sides = [(r['width'], r['height']) for r in usable]
        stats[split] = {
            'folder': os.path.relpath(splits[split], root), 'classes': len(classes), 'images': len(usable),
            'files': sum(r['split'] == split for r in records), 'per_class': per_class,
            'imbalance': round(max(nonzero) / min(nonzero), 2) if nonzero else None,
            'largest': max(per_class, key=per_class.get) if nonzero else None,
            'smallest': min((c for c in per_class if per_class[c]), key=per_class.get) if nonzero else None,
            'width': summary([w for w, _ in sides]), 'height': summary([h for _, h in sides]),
            'sizes': dict(Counter(f'{w}x{h}' for w, h in sides).most_common(10)),
            'modes': dict(Counter(r['mode'] for r in usable).most_common()),
            'formats': dict(Counter(r['format'] for r in usable).most_common()),
            'extensions': dict(Counter(os.path.splitext(r['path'])[1].lower() or '(none)'
                                       for r in records if r['split'] == split).most_common()),
        }
    counts = Counter(p['category'] for p in problems)
    return {'root': os.path.abspath(root), 'near_bits': near_bits, 'near_diff': near_diff, 'classes': all_classes,
            'splits': stats,
            'problem_counts': {c: counts.get(c, 0) for c in CATEGORIES}, 'problems': problems, 'files': records}


def problem(category, rec, detail):
    return {'category': category, 'split': rec['split'], 'class': rec['class'], 'path': rec['path'],
            'detail': detail}


def summary(values):
    if not values:
        return None
    return {'min': min(values), 'median': statistics.median(values), 'max': max(values)}


def duplicate_problems(records, order, near_bits, near_diff, thumbs):
    """exact_dup / near_dup / leak entries. Files are taken in split order (train, val, test), then path:
    the first of a picture is kept, and a later file that copies a kept one is flagged -- `leak` when the
    kept one sits in another split, otherwise exact_dup or near_dup. Every flagged file names a kept one."""
    rank = lambda r: (order[r['split']], r['path'])  # noqa: E731
    by_hash = {}
    for r in sorted(records, key=rank):
        if r['dhash']:
            by_hash.setdefault(r['sha256'], []).append(r)
    out = []
    for members in by_hash.values():
        keep = members[0]
        for r in members[1:]:
            label = '' if r['class'] == keep['class'] else f' (labelled {keep["class"]} there)'
            out.append(problem('leak' if r['split'] != keep['split'] else 'exact_dup', r,
                               f'exact copy of {keep["path"]}{label}'))
    if near_bits < 0:
        return out
    reps = [m[0] for m in by_hash.values()]  # one file per distinct content, in rank order
    hashes = [int(r['dhash'], 16) for r in reps]
    neighbours = {}
    for a, b in near_pairs(hashes, near_bits):
        diff = float(np.abs(thumbs[reps[a]['path']] - thumbs[reps[b]['path']]).mean())
        if diff <= near_diff:
            neighbours.setdefault(max(a, b), []).append((min(a, b), diff))
    kept = set()
    for j, r in enumerate(reps):
        match = [(i, d) for i, d in neighbours.get(j, []) if i in kept]
        if not match:
            kept.add(j)
            continue
        i, diff = min(match)
        keep = reps[i]
        label = '' if r['class'] == keep['class'] else f', labelled {keep["class"]} there'
        out.append(problem('leak' if r['split'] != keep['split'] else 'near_dup', r,
                           f'near copy of {keep["path"]} (hash distance {bin(hashes[i] ^ hashes[j]).count("1")}, '
                           f'mean difference {diff:.1f}{label})'))
    return out


# --- writing and printing

def write_report(report, out_dir):
    """report.json, problems.csv, files.csv, class_counts.csv and report.md in out_dir; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {name: os.path.join(out_dir, name) for name in
             ('report.md', 'report.json', 'problems.csv', 'files.csv', 'class_counts.csv')}
    with open(paths['report.json'], 'w') as f:
        json.dump(report, f, indent=1)
    write_csv(paths['problems.csv'], ['category', 'split', 'class', 'path', 'detail'], report['problems'])
    write_csv(paths['files.csv'], ['split', 'class', 'path', 'bytes', 'sha256', 'dhash', 'format', 'mode',
                                   'width', 'height', 'problem', 'detail'], report['files'])
    splits = list(report['splits'])
    rows = [dict(class_=c, **{s: report['splits'][s]['per_class'].get(c, '') for s in splits})
            for c in report['classes']]
    write_csv(paths['class_counts.csv'], ['class_'] + splits, rows, header=['class'] + splits)
    with open(paths['report.md'], 'w') as f:
        f.write(markdown(report))
    return paths


def markdown(report):
    splits = report['splits']
    lines = [f'# Data report: {report["root"]}', '', f'Written {time.strftime("%Y-%m-%d %H:%M")}; near '
             f'duplicates = 64-bit difference hash within {report["near_bits"]} bits and 16 px thumbnails within '
             f'{report["near_diff"]} grey levels.', '', '## Splits', '',
             '| split | images | files | classes | imbalance (largest / smallest) | width min/median/max | '
             'height min/median/max | modes | formats | extensions |', '|---|---|---|---|---|---|---|---|---|---|']
    for name, s in splits.items():
        size = lambda d: '/'.join(f'{d[k]:g}' for k in ('min', 'median', 'max')) if d else '-'  # noqa: E731
        imb = f'{s["imbalance"]} ({s["largest"]} / {s["smallest"]})' if s['imbalance'] else '-'
        fmt = lambda d: ', '.join(f'{k} {v}' for k, v in d.items()) or '-'  # noqa: E731
        lines.append(f'| {name} | {s["images"]} | {s["files"]} | {s["classes"]} | {imb} | {size(s["width"])} | '
                     f'{size(s["height"])} | {fmt(s["modes"])} | {fmt(s["formats"])} | {fmt(s["extensions"])} |')
    lines += ['', '## Images per class', '', '| class | ' + ' | '.join(splits) + ' |',
              '|---|' + '---|' * len(splits)]
    for c in report['classes']:
        lines.append(f'| {c} | ' + ' | '.join(str(s['per_class'].get(c, '-')) for s in splits.values()) + ' |')
    lines += ['', '## Problems', '', '| category | count | meaning |', '|---|---|---|']
    lines += [f'| {c} | {n} | {DESCRIBE[c]} |' for c, n in report['problem_counts'].items()]
    for c in CATEGORIES:
        found = [p for p in report['problems'] if p['category'] == c]
        if found:
            lines += ['', f'### {c} ({len(found)})', '', '| split | path | detail |', '|---|---|---|']
            lines += [f'| {p["split"]} | {p["path"] or p["class"]} | {p["detail"]} |' for p in found]
    return '\n'.join(lines) + '\n'


def format_summary(report, examples=3):
    """A short readable summary for the terminal."""
    lines = []
    for name, s in report['splits'].items():
        imb = f'imbalance {s["imbalance"]} ({s["largest"]}: {s["per_class"][s["largest"]]}, {s["smallest"]}: ' \
              f'{s["per_class"][s["smallest"]]})' if s['imbalance'] else 'no usable images'
        size = (f'{s["width"]["min"]}-{s["width"]["max"]} x {s["height"]["min"]}-{s["height"]["max"]} px'
                if s['width'] else '-')
        lines.append(f'{name:<6} {s["images"]:>6} images  {s["classes"]:>4} classes  {imb}  {size}  '
                     f'modes {dict(s["modes"])}  formats {dict(s["formats"])}')
    total = sum(report['problem_counts'].values())
    lines.append(f'problems: {total}' + ('' if total else ' -- the data looks clean'))
    for c, n in report['problem_counts'].items():
        if n:
            lines.append(f'  {c:<13} {n:>5}  {DESCRIBE[c]}')
            for p in [p for p in report['problems'] if p['category'] == c][:examples]:
                lines.append(f'      {p["path"] or p["split"] + "/" + p["class"]}: {p["detail"]}')
    return '\n'.join(lines)


def plot_class_counts(report, vis):
    """One grouped bar chart of images per class and split on the dashboard (when it is up)."""
    splits = list(report['splits'])
    counts = [[report['splits'][s]['per_class'].get(c, 0) for s in splits] for c in report['classes']]
    if report['classes']:
        vis.bar('class distribution', counts, rownames=report['classes'], legend=splits)
