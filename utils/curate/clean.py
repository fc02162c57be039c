"""Move what `analyze` flags into a quarantine folder beside the data, and put it back. Never deletes or
rewrites a data file: every move is a rename (or copy-verify-remove across file systems) recorded, with its
content hash, in the quarantine's manifest.csv before it happens.

    python main.py clean --data-root=data --dry-run                 # what would move
    python main.py clean --data-root=data --clean-categories=zero_byte,non_image,truncated,leak
    python main.py clean --data-root=data --undo                    # every file back, byte-identical
"""
import csv
import os
import shutil
import time

from config import UserError
from utils.io import inside, sha256
from utils.curate.analyze import DEFAULT_CLEAN, FILE_CATEGORIES, FOLDER_CATEGORIES, analyze

FIELDS = ['original', 'quarantined', 'category', 'detail', 'sha256', 'bytes', 'moved_at']


def quarantine_dir(root, given=''):
    """`given`, or <root>-quarantine beside the data root."""
    return given or os.path.normpath(os.path.abspath(root)) + '-quarantine'


def check_categories(categories):
    bad = [c for c in categories if c not in FILE_CATEGORIES]
    if bad:
        folders = [c for c in bad if c in FOLDER_CATEGORIES]
        why = f'{", ".join(folders)} are folders, clean moves files only; ' if folders else ''
        raise UserError(f'unknown --clean-categories {bad}: {why}choose from {", ".join(FILE_CATEGORIES)}')
    if not categories:
        raise UserError(f'--clean-categories is empty; choose from {", ".join(FILE_CATEGORIES)}')


def plan(report, categories):
    """[(path relative to the root, category, detail)] of the files to move, in report order, each once."""
    check_categories(categories)
    seen, out = set(), []
    for p in report['problems']:
        if p['category'] in categories and p['path'] and p['path'] not in seen:
            seen.add(p['path'])
            out.append((p['path'], p['category'], p['detail']))
    return out


def clean(root, categories=DEFAULT_CLEAN, quarantine='', dry_run=False, near_bits=4, near_diff=3.0,
          report=None):
    """Analyze `root` (or use `report`) and move the flagged files of `categories` to the quarantine,
    keeping their paths relative to root; returns the planned moves. dry_run only returns them."""
    quarantine = quarantine_dir(root, quarantine)
    root_abs = os.path.abspath(root)
    if os.path.commonpath([root_abs, os.path.abspath(quarantine)]) == root_abs:
        raise UserError(f'the quarantine {quarantine} is inside the data root {root}; give --quarantine-dir '
                        f'outside it')
    report = report or analyze(root, near_bits, near_diff)
    moves = plan(report, list(categories))
    if dry_run or not moves:
        return moves
    taken = [rel for rel, _, _ in moves if os.path.lexists(os.path.join(quarantine, rel))]
    if taken:
        raise UserError(f'{len(taken)} file(s) already in the quarantine under the same name (e.g. {taken[0]}); '
                        f'run clean --undo first or give another --quarantine-dir')
    os.makedirs(quarantine, exist_ok=True)
    manifest = os.path.join(quarantine, 'manifest.csv')
    new = not os.path.exists(manifest)
    with open(manifest, 'a', newline='') as f:
        w = csv.DictWriter(f, FIELDS)
        if new:
            w.writeheader()
        for rel, category, detail in moves:
            src, dst = os.path.join(root, rel), os.path.join(quarantine, rel)
            digest = sha256(src)
            # The row is on disk before the file moves: an interrupted clean can always be undone.
            w.writerow({'original': rel, 'quarantined': rel, 'category': category, 'detail': detail,
                        'sha256': digest, 'bytes': os.path.getsize(src), 'moved_at': time.strftime('%F %T')})
            f.flush()
            os.fsync(f.fileno())
            move(src, dst, digest)
    return moves


def move(src, dst, digest):
    """Rename src to dst (never over an existing file); across file systems copy, verify the hash, then
    remove the source."""
    if os.path.lexists(dst):
        raise UserError(f'{dst} already exists; nothing is overwritten')
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    try:
        os.link(src, dst)  # fails when dst exists: no race can overwrite a file
        os.unlink(src)
    except OSError:
        if os.path.lexists(dst):
            raise UserError(f'{dst} already exists; nothing is overwritten') from None
        shutil.copy2(src, dst)
        if sha256(dst) != digest:
            os.unlink(dst)
            raise UserError(f'copy of {src} to {dst} does not match; the original is left in place') from None
        os.unlink(src)


def read_manifest(quarantine):
    path = os.path.join(quarantine, 'manifest.csv')
    if not os.path.isfile(path):
        raise UserError(f'no quarantine manifest at {path}; nothing to undo (was clean run on this --data-root?)')
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def undo(root, quarantine=''):
    """Put every quarantined file back where it was. Checks everything first and moves nothing when a row of
    the manifest points outside the data root or the quarantine, an original path is taken by another file or a
    quarantined file changed; returns the restored paths."""
    quarantine = quarantine_dir(root, quarantine)
    rows = read_manifest(quarantine)
    # The manifest is a plain CSV anyone can edit: a row must not create or take files outside the two folders.
    for line, row in enumerate(rows, start=2):
        for field, folder in (('original', root), ('quarantined', quarantine)):
            path = os.path.join(folder, row[field] or '')
            if not inside(path, folder) or os.path.realpath(path) == os.path.realpath(folder):
                raise UserError(
                    f'{os.path.join(quarantine, "manifest.csv")} line {line}: {field} path {row[field]!r} leads '
                    f'outside {folder}; undo moved nothing: fix or remove that row and run clean --undo again')
    todo, problems = [], []
    for row in rows:
        src, dst = os.path.join(quarantine, row['quarantined']), os.path.join(root, row['original'])
        if os.path.lexists(dst):
            if not os.path.lexists(src) and sha256(dst) == row['sha256']:
                continue  # already back (an interrupted clean or undo)
            problems.append(f'{dst} exists (refusing to overwrite it)')
        elif not os.path.lexists(src):
            problems.append(f'{src} is missing from the quarantine')
        elif sha256(src) != row['sha256']:
            problems.append(f'{src} changed since it was quarantined (hash differs)')
        else:
            todo.append((src, dst, row['sha256']))
    if problems:
        raise UserError(f'undo stopped before moving anything: {len(problems)} problem(s), e.g. {problems[0]}; '
                        f'move those files aside and run clean --undo again')
    for src, dst, digest in todo:
        move(src, dst, digest)
    os.replace(os.path.join(quarantine, 'manifest.csv'),
               os.path.join(quarantine, f'manifest-undone-{time.strftime("%Y%m%d-%H%M%S")}.csv'))
    remove_empty_dirs(quarantine)
    return [dst for _, dst, _ in todo]


def remove_empty_dirs(top):
    """Remove the folders under top (not top) that the restored files left empty."""
    for dirpath, _, _ in sorted(os.walk(top), key=lambda t: -len(t[0])):
        if dirpath != top and not os.listdir(dirpath):
            os.rmdir(dirpath)


def format_moves(moves, quarantine, dry_run):
    if not moves:
        return 'nothing to move: no file falls in the chosen categories'
    verb = 'would move' if dry_run else 'moved'
    lines = [f'  {category:<11} {rel}  ({detail})' for rel, category, detail in moves]
    lines.append(f'{verb} {len(moves)} file(s) to {quarantine}'
                 + ('' if dry_run else '; manifest.csv there lists them; `clean --undo` puts them back'))
    return '\n'.join(lines)
