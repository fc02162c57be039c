"""Checkpoints are plain dicts, written atomically and read with weights_only=True; a run's files are written so
that a full or read-only disk is one line naming the folder, never a traceback or a damaged file."""
import contextlib
import functools
import os
import pickle
import shutil
import tempfile
import zipfile

import torch

from config import UserError

VERSION = 1
TMP_PREFIX = '.tmp-'  # temporary checkpoints; a kill during a save can leave one, a resume removes it
# how torch reports a failed write of its zip container (a full disk gives "unexpected pos ..." or "file write failed")
TORCH_WRITE_ERRORS = ('inline_container', 'PytorchStreamWriter')


def save(obj, path):
    """torch.save to a temporary file beside `path`, then rename: a crash never leaves a half-written file, and a
    failed write (disk full, read-only) leaves the previous `path` as it was."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    with writing(path):
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=TMP_PREFIX, suffix='.pth')
        try:
            with os.fdopen(fd, 'wb') as f:
                torch.save(obj, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise


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
    """The settings a weights file was trained with when it is a checkpoint of this toolkit, else {} (a plain
    state_dict, or no such file: loading it later says what is wrong)."""
    if not os.path.isfile(path):
        return {}
    return dict(_stored_settings(os.path.abspath(path), os.path.getmtime(path)))


@functools.lru_cache(maxsize=8)
def _stored_settings(path, mtime):
    state = load(path)
    return tuple(state['config'].items()) if isinstance(state, dict) and isinstance(state.get('config'), dict) else ()


def load(path, map_location='cpu'):
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
