"""The toolkit's shared file I/O, the lowest layer (data/ and models/ may import it): every file is written
atomically (`atomic`: a temporary file beside it, synced, then renamed), so a crash leaves the old file or the new
one; a full or read-only disk is one line naming the folder, never a traceback or a damaged file. Checkpoints are
plain dicts read with weights_only=True. Image folders are walked by `image_files`."""
import contextlib
import csv
import functools
import hashlib
import io
import json
import os
import pickle
import shutil
import sys
import tempfile
import time
import zipfile

import numpy as np
import torch

from config import UserError, stored_plan

VERSION = 1
TMP_PREFIX = '.tmp-'  # temporary checkpoints; a kill during a save can leave one, a resume removes it
# how torch reports a failed write of its zip container (a full disk gives "unexpected pos ..." or "file write failed")
TORCH_WRITE_ERRORS = ('inline_container', 'PytorchStreamWriter')
IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.pgm', '.bmp', '.gif', '.tif', '.tiff', '.webp')


@contextlib.contextmanager
def atomic(path, mode='w', **kwargs):
    """Open a temporary file beside `path` for writing; when the block ends it is synced and renamed over `path`,
    so readers see the old file or the new one, never part of one. On any error it is removed and `path` is left
    as it was (a failed write -- disk full, read-only -- is one UserError line, see `writing`)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    with writing(path):
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=TMP_PREFIX, suffix=os.path.splitext(path)[1])
        try:
            with os.fdopen(fd, mode, **kwargs) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise


def save_checkpoint(obj, path):
    """torch.save through `atomic`."""
    with atomic(path, 'wb') as f:
        torch.save(obj, f)


def read_jsonl(path):
    """The rows of a JSON-lines log of the run (metrics.jsonl); [] when it does not exist."""
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def append_line(path, line):
    """Append one line to a log of the run (metrics.jsonl, lr.csv)."""
    with writing(path), open(path, 'a') as f:
        f.write(line + '\n')


@contextlib.contextmanager
def writing(path):
    """A failed write of `path` -- disk full, read-only, over a size limit -- becomes one UserError line naming the
    folder and its free space; other errors keep their traceback."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        if not isinstance(e, OSError) and not any(m in str(e) for m in TORCH_WRITE_ERRORS):
            raise
        folder = os.path.dirname(os.path.abspath(path))
        reason = f'{e.strerror}, ' if isinstance(e, OSError) and e.strerror else ''
        raise UserError(f'could not write {path} ({reason}{mib(free_space(folder))} free in {folder}); the files '
                        f'written before are intact') from None


def mib(n):
    return f'{n / 2 ** 20:.1f} MiB'


def existing_folder(folder):
    """`folder`, or the nearest folder above it that exists (what a new folder would be created in)."""
    folder = os.path.abspath(folder)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    return folder


def free_space(folder):
    return shutil.disk_usage(existing_folder(folder)).free


def estimated_size(parameters, ema):
    """Bytes of a last.pth: float32 weights, two optimizer moments per weight (the Adam family; SGD keeps one or
    none, Ranger three) and, with --ema, the averaged weights."""
    return 4 * parameters * (3 + bool(ema))


def check_room(folder, need):
    """UserError, before any work, when the run folder `folder` (created later when missing) cannot be written or
    has less than `need` bytes free."""
    where = existing_folder(folder)
    if not os.path.isdir(where) or not os.access(where, os.W_OK):
        raise UserError(f'cannot write in {where} (read-only, not a folder, or not yours); give a writable '
                        f'--checkpoint-dir')
    free = free_space(where)
    if free < need:
        raise UserError(f'{where} has {mib(free)} free, but this run needs about {mib(need)} for its checkpoints; '
                        f'make room or give another --checkpoint-dir')


def stored_settings(path):
    """The plan a weights file was trained with (config.stored_plan, as a dict) when it is a checkpoint of this
    toolkit, else {} (a plain state_dict, or no such file: loading it later says what is wrong)."""
    if not os.path.isfile(path):
        return {}
    return dict(_stored_settings(os.path.abspath(path), os.path.getmtime(path)))


@functools.lru_cache(maxsize=8)
def _stored_settings(path, mtime):
    state = load_checkpoint(path)
    if not isinstance(state, dict) or not any(isinstance(state.get(k), dict) for k in ('plan', 'config')):
        return ()
    return tuple(stored_plan(state).to_dict().items())


def load_checkpoint(path, map_location='cpu'):
    """Read a checkpoint without unpickling code. UserError when the file is missing or is not a readable
    checkpoint (empty, truncated, neither a torch archive nor a pickle, or holding objects weights_only refuses);
    any other error, from an intact archive, is not the file's fault and keeps its traceback."""
    if not os.path.isfile(path):
        raise UserError(f'checkpoint {path} does not exist; give the path of a .pth file written by train')
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, EOFError, OSError) as e:  # refused by weights_only, cut short, unreadable
        error = e
    except Exception as e:  # torch reports a damaged or foreign file in many types (RuntimeError, KeyError ...)
        if intact_archive(path):
            raise
        error = e
    detail = ': '.join([type(error).__name__] + str(error).splitlines()[:1])
    raise UserError(f'{path} is not a readable checkpoint ({detail})')


def intact_archive(path):
    """True for a zip archive as torch.save writes it (a data.pkl inside) whose members all match their CRC."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith('data.pkl') for n in archive.namelist()) and archive.testzip() is None
    except (zipfile.BadZipFile, OSError):
        return False


def check_compatible(ckpt, model_name, num_classes=None, path='checkpoint', classes=None):
    """Say exactly what does not match when a checkpoint is loaded into another model or class list."""
    if not isinstance(ckpt, dict) or 'model' not in ckpt:
        raise UserError(f'{path} is not a checkpoint of this toolkit (no "model" entry)')
    if ckpt.get('model_name') and ckpt['model_name'].lower() != model_name.lower():
        raise UserError(f'{path} holds a {ckpt["model_name"]} model, not {model_name}; '
                        f'use --model={ckpt["model_name"]} or another checkpoint')
    if num_classes is not None and ckpt.get('num_classes') not in (None, num_classes):
        raise UserError(f'{path} was trained for {ckpt["num_classes"]} classes, this data has {num_classes}')
    if classes is not None and ckpt.get('classes') and list(ckpt['classes']) != list(classes):
        theirs, ours = list(ckpt['classes']), list(classes)
        only_ckpt = [c for c in theirs if c not in ours][:5]
        only_data = [c for c in ours if c not in theirs][:5]
        detail = (f'only in checkpoint: {only_ckpt}; only in data: {only_data}' if only_ckpt or only_data
                  else 'same names in another order')
        raise UserError(f'{path} was trained on other classes ({detail})')


def write_text(text, path):
    with atomic(path) as f:
        f.write(text)


def write_json(obj, path):
    write_text(json.dumps(obj, indent=1), path)


def write_bytes(data, path):
    with atomic(path, 'wb') as f:
        f.write(data)


def write_csv(path, fields, rows, header=None):
    """A CSV of `rows` (dicts) with the columns `fields` (titled `header`, default the field names)."""
    with atomic(path, newline='') as f:
        w = csv.writer(f)
        w.writerow(header or fields)
        for r in rows:
            w.writerow([r.get(k, '') for k in fields])


def sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def inside(path, folder):
    """Whether the real path of `path` (symbolic links resolved) is `folder`'s or lies under it."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def png_bytes(image):
    """A CHW uint8 array as PNG bytes."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0))).save(buf, format='PNG', optimize=True)
    return buf.getvalue()


def save_png(image, path):
    """Write a CHW uint8 array as a PNG file."""
    write_bytes(png_bytes(image), path)


def is_image_file(name):
    return name.lower().endswith(IMG_EXTENSIONS) and not name.startswith('.')


def walk_files(root, images_only=True):
    """Every file under `root` (any depth, links followed, hidden files and folders skipped), folders and files in
    name order; only image files (IMG_EXTENSIONS) when `images_only`. Nothing when `root` is not a folder."""
    for folder, subfolders, files in os.walk(root, followlinks=True):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith('.'))
        for name in sorted(files):
            if not name.startswith('.') and (not images_only or is_image_file(name)):
                yield os.path.join(folder, name)


PROGRESS_SECONDS = 60  # in a log, a long pass prints one progress line at most this often


def progress(iterable, desc, total=None):
    """`iterable` with a progress display: on a terminal a tqdm bar, redrawn in place and gone when done; when the
    output goes to a file (a log, CI, a cluster job) no redrawing -- one line at most every PROGRESS_SECONDS, so
    a short pass prints nothing. Both take set_postfix(name=value, ...) and close()."""
    if sys.stderr.isatty():
        from tqdm import tqdm
        return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True)
    return LogProgress(iterable, desc, total)


class LogProgress:
    """The progress of a pass as occasional lines on stderr (see `progress`)."""

    def __init__(self, iterable, desc, total=None):
        self.iterable, self.desc, self.postfix = iterable, desc, ''
        self.total = total if total is not None else len(iterable) if hasattr(iterable, '__len__') else None

    def __iter__(self):
        start = last = time.time()
        for i, item in enumerate(self.iterable):
            yield item
            if time.time() - last >= PROGRESS_SECONDS:
                last = time.time()
                print(f'{self.desc}: {i + 1}/{self.total or "?"} ({last - start:.0f} s){self.postfix}',
                      file=sys.stderr, flush=True)

    def set_postfix(self, **values):
        self.postfix = ', ' + ', '.join(f'{k} {v}' for k, v in values.items())

    def close(self):
        pass
