"""The benchmark suite's datasets (benchmarks/datasets) and the suite script (benchmarks/suite.py)."""
import csv
import hashlib
import json
import os
import subprocess
import sys

import pytest

from benchmarks import datasets
from benchmarks.datasets import glyphs, photos
from config import UserError
from tests.conftest import ROOT

NEEDS = {'photos': photos.PHOTOS, 'scenes96': photos.SCENES}


def available(name):
    """Skip a dataset whose packaged sources are not installed here (.ci/suite-data.sh installs them)."""
    if name == 'glyphs':
        try:
            glyphs.installed_fonts()
        except UserError as e:
            pytest.skip(str(e))
    missing = [path for path, _ in NEEDS.get(name, {}).values() if not os.path.exists(path)]
    if missing:
        pytest.skip(f'not installed: {missing[0]}')


def hashes(folder):
    """{relative path: sha256} of every file under folder."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for file in files:
            with open(os.path.join(dirpath, file), 'rb') as f:
                out[os.path.relpath(os.path.join(dirpath, file), folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    """Each dataset built once into a module-wide folder: {name: folder}."""
    root, cache = tmp_path_factory.mktemp('suite-data'), {}

    def get(name):
        available(name)
        if name not in cache:
            cache[name] = datasets.build(name, str(root))
        return cache[name]
    return get


@pytest.mark.parametrize('name', list(datasets.DATASETS))
def test_builder_is_deterministic(name, built, tmp_path):
    first = built(name)
    second = datasets.build(name, str(tmp_path))
    assert hashes(first) == hashes(second)
    assert datasets.class_counts(first)['test']  # a test split with classes
    assert sum(f.endswith('.png') for f in hashes(first)) > 100


def test_another_seed_builds_other_data_in_place(built, tmp_path):
    folder = datasets.build('digits', str(tmp_path))
    before = hashes(folder)
    assert datasets.build('digits', str(tmp_path), seed=1) == folder
    assert hashes(folder) != before
    assert json.load(open(os.path.join(folder, '.complete')))['seed'] == 1


def test_a_foreign_folder_is_refused_untouched(tmp_path):
    (tmp_path / 'digits').mkdir()
    (tmp_path / 'digits' / 'mine.txt').write_text('user data')
    with pytest.raises(UserError, match='not a dataset of this suite'):
        datasets.build('digits', str(tmp_path))
    assert os.listdir(tmp_path / 'digits') == ['mine.txt']


def test_photos_counts_are_long_tailed(built):
    counts = datasets.class_counts(built('photos'))
    train = sorted(counts['train'].values())
    assert len(train) == 10 and train[0] == 12 and train[-1] == 120 and len(set(train)) == 10
    assert set(counts['val'].values()) == {10} and set(counts['test'].values()) == {30}


@pytest.mark.parametrize('name', ['photos', 'scenes96'])
def test_patches_of_val_and_test_never_overlap_training_regions(name, built):
    folder = built(name)
    with open(os.path.join(folder, 'patches.csv')) as f:
        rows = list(csv.DictReader(f))
    boxes = {}
    for r in rows:
        assert os.path.exists(os.path.join(folder, r['split'], r['class'], r['file']))
        boxes.setdefault((r['class'], r['split']), []).append([int(r[k]) for k in ('left', 'top', 'right', 'bottom')])

    def overlap(a, b):
        return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
    classes = {c for c, _ in boxes}
    assert len(classes) == 10
    for c in classes:
        for split in ('val', 'test'):
            assert not any(overlap(a, b) for a in boxes[c, split] for b in boxes[c, 'train'])
        assert not any(overlap(a, b) for a in boxes[c, 'val'] for b in boxes[c, 'test'])


def test_glyphs_are_split_by_design(built):
    folder = built('glyphs')
    with open(os.path.join(folder, 'fonts.csv')) as f:
        fonts = list(csv.DictReader(f))
    for key in ('design', 'family'):
        members = {s: {r[key] for r in fonts if r['split'] == s} for s in datasets.SPLITS}
        assert all(members.values())
        assert not members['train'] & members['test'] and not members['train'] & members['val'] \
            and not members['val'] & members['test']
    counts = datasets.class_counts(folder)
    for split in datasets.SPLITS:
        assert len(counts[split]) == 62
        assert set(counts[split].values()) == {sum(r['split'] == split for r in fonts)}


def test_digits_lt_noisy_is_long_tailed_beside_the_demo(built):
    noisy, demo = datasets.class_counts(built('digits-lt-noisy')), datasets.class_counts(built('digits'))
    assert noisy['test'] == demo['test'] and noisy['val'] == demo['val']
    assert sum(noisy['train'].values()) < sum(demo['train'].values()) / 2
    assert max(noisy['train'].values()) >= 5 * min(noisy['train'].values())


def test_datasets_cli_lists_every_dataset():
    listed = subprocess.run([sys.executable, '-m', 'benchmarks.datasets', '--list'], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout
    assert [line.split()[0] for line in listed.splitlines()] == list(datasets.DATASETS)


def test_quick_suite_prints_the_table_and_the_ablation_table_then_adds_tta_to_its_runs(tmp_path):
    out = tmp_path / 'suite.json'
    done = subprocess.run([sys.executable, 'benchmarks/suite.py', '--quick', '--datasets=digits',
                           '--rows=rbf-svm,defaults,defaults+loss=ce', f'--out={out}', f'--data-root={tmp_path / "data"}',
                           f'--work={tmp_path / "work"}'], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = json.load(open(out))['runs']
    assert [(r['dataset'], r['row']) for r in runs] == [('digits', 'rbf-svm'), ('digits', 'defaults'),
                                                        ('digits', 'defaults+loss=ce')]
    assert runs[0]['test_acc'] > 0.5  # 8 digits a class are plenty for an SVM (chance: 0.1)
    assert os.path.exists(tmp_path / 'work' / 'digits-defaults-seed0' / 'test_metrics.json')
    table = done.stdout[done.stdout.index('| dataset |'):]
    assert '| digits | rbf-svm |' in table and '| digits | defaults |' in table
    assert 'digits: defaults ' in table  # the verdict line against rbf-svm
    with open(tmp_path / 'work' / 'digits-defaults+loss=ce-seed0' / 'config.json') as f:
        assert json.load(f)['used']['loss'] == 'ce'  # the variant trained with its setting changed
    assert '| loss=ce | ' in table[table.index('Ablations'):]
    again = subprocess.run([sys.executable, 'benchmarks/suite.py', '--quick', '--datasets=digits',
                            '--rows=rbf-svm,defaults', '--tta=hflip', '--resume', f'--out={out}',
                            f'--data-root={tmp_path / "data"}', f'--work={tmp_path / "work"}'],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    runs = {r['row']: r for r in json.load(open(out))['runs']}
    with open(tmp_path / 'work' / 'digits-defaults-seed0' / 'test_tta-hflip_metrics.json') as f:
        assert runs['defaults']['tta'] == 'hflip' and runs['defaults']['tta_acc'] == json.load(f)['top1']
    assert 'tta' not in runs['rbf-svm'] and 'tta' not in runs['defaults+loss=ce']  # no network / not asked for
    d = runs['defaults']
    assert '| test top-1 % | with TTA |' in again.stdout
    assert f'| digits | defaults | {100 * d["test_acc"]:.1f} | {100 * d["tta_acc"]:.1f} |' in again.stdout
    assert f'| digits | rbf-svm | {100 * runs["rbf-svm"]["test_acc"]:.1f} | -- |' in again.stdout


def test_verdicts_compare_the_means_and_count_the_seeds_won():
    from benchmarks import suite
    runs = [dict(dataset='photos', row=row, seed=seed, test_acc=acc, macro_f1=acc, val_acc=None, seconds=1.0)
            for row, seed, acc in [('defaults', 0, 0.80), ('defaults', 1, 0.70), ('plain', 0, 0.75),
                                   ('plain', 1, 0.72), ('rbf-svm', 0, 0.60), ('tune', 0, 0.78)]]
    [line] = suite.verdicts(suite.summarize(runs), runs)
    assert line == ('photos: defaults beat plain (+1.5, at 1 of 2 seeds); defaults beat rbf-svm (+15.0); '
                    'tune beats the defaults (+3.0)')


def test_near_chance_is_a_quarter_of_the_way_from_guessing_to_perfect():
    from benchmarks.zoo import near_chance
    assert near_chance(0.32, 10) and not near_chance(0.33, 10)  # 10 digits: chance 10 %, the line at 32.5 %
    assert near_chance(0.26, 62) and not near_chance(0.27, 62)  # 62 glyphs: chance 1.6 %, the line at 26.2 %


def test_zoo_trains_each_model_and_stem_marks_near_chance_and_drops_the_checkpoints(tmp_path):
    out, work = tmp_path / 'zoo.json', tmp_path / 'work'
    done = subprocess.run([sys.executable, 'benchmarks/zoo.py', '--models=SqueezeNet', '--stems=imagenet,small',
                           '--datasets=digits', '--epochs=1', f'--out={out}', f'--data-root={tmp_path / "data"}',
                           f'--work={work}'], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = json.load(open(out))['runs']
    assert [(r['model'], r['stem'], r['classes'], r['epochs']) for r in runs] == [
        ('SqueezeNet', 'imagenet', 10, 1), ('SqueezeNet', 'small', 10, 1)]
    from benchmarks.zoo import near_chance
    for r in runs:
        run_dir = work / f'digits-SqueezeNet-{r["stem"]}-1ep-seed0'
        assert json.load(open(run_dir / 'config.json'))['used']['stem'] == r['stem']
        assert (run_dir / 'test_metrics.json').exists() and not list(run_dir.glob('*.pth'))
        cell = f'{100 * r["test_acc"]:.1f}' + (' *' if near_chance(r['test_acc'], 10) else '')
        assert f'| SqueezeNet | {r["stem"]} | {cell} |' in done.stdout


def test_a_variant_row_is_the_defaults_with_its_settings_changed_and_checked_like_the_command_line():
    from benchmarks import suite
    assert suite.row_settings('defaults+loss=ce+mixup_prob=0') == {'loss': 'ce', 'mixup_prob': '0'}
    assert suite.row_settings('defaults') == {}
    for row, message in [('defaults+losss=ce', 'did you mean --loss'), ('defaults+loss=cee', 'choose one of'),
                         ('defaults+loss', 'a variant row is')]:
        with pytest.raises(UserError, match=message):
            suite.row_settings(row)
    done = subprocess.run([sys.executable, 'benchmarks/suite.py', '--rows=defaults,defaults+losss=ce'], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.splitlines()[-1] == (
        "suite.py: error: row 'defaults+losss=ce': unknown setting --losss; did you mean --loss?")


def test_the_ablation_table_gives_each_variant_its_difference_from_the_defaults_and_the_mean_rank():
    from benchmarks import suite
    runs = [dict(dataset=d, row=row, seed=seed, test_acc=acc, macro_f1=acc, val_acc=None, seconds=1.0)
            for d, row, seed, acc in [('digits', 'defaults', 0, 0.98), ('digits', 'defaults', 1, 0.96),
                                      ('digits', 'defaults+loss=ce', 0, 0.95), ('digits', 'defaults+loss=ce', 1, 0.95),
                                      ('digits', 'defaults+hflip=True', 0, 0.50),
                                      ('photos', 'defaults', 0, 0.70), ('photos', 'defaults+loss=ce', 0, 0.72),
                                      ('photos', 'defaults+hflip=True', 0, 0.80), ('photos', 'plain', 0, 0.9)]]
    lines = suite.ablation(runs).splitlines()
    assert lines[0] == '| row | digits | photos | mean diff | datasets won | mean rank |'
    # digits: defaults 0.97 over seeds 0-1 against loss=ce's 0.95; hflip=True only at seed 0, against 0.98
    assert lines[2] == '| defaults (test top-1 %) | 97.0 | 70.0 | | | 2.0 |'
    assert lines[3] == '| hflip=True | -48.0 | +10.0 | -19.0 | 1 of 2 | 2.0 |'
    assert lines[4] == '| loss=ce | -2.0 | +2.0 | +0.0 | 1 of 2 | 2.0 |'
    assert suite.ablation([r for r in runs if '+' not in r['row']]) == ''
    # a variant asked for without the defaults (suite.py --rows=defaults+hflip=True): nothing to subtract from
    alone = suite.ablation([r for r in runs if r['row'] == 'defaults+hflip=True']).splitlines()
    assert alone[2:] == ['| defaults (test top-1 %) | -- | -- | | | -- |', '| hflip=True | -- | -- | -- | 0 of 0 | 1.0 |']


def test_an_out_file_is_refused_without_resume_and_keeps_every_run_with_it(tmp_path):
    """A --quick --resume run used to rewrite --out with the quick runs alone, and any run without --resume
    rewrote it from nothing: the full runs it held were lost."""
    out, work = tmp_path / 'suite.json', tmp_path / 'work'
    full = dict(dataset='digits', row='defaults', seed=0, quick=False, test_acc=0.99, macro_f1=0.99, val_acc=0.99,
                seconds=90.0)
    out.write_text(json.dumps({'runs': [full]}))
    before = out.read_bytes()
    args = [sys.executable, 'benchmarks/suite.py', '--quick', '--datasets=digits', '--rows=rbf-svm', f'--out={out}',
            f'--data-root={tmp_path / "data"}', f'--work={work}']
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and done.stderr.splitlines()[-1] == (
        f'suite.py: error: {out} already holds runs; give --resume to add to them, or another --out')
    assert out.read_bytes() == before and not work.exists() and not (tmp_path / 'data').exists()
    done = subprocess.run(args + ['--resume'], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = json.load(open(out))['runs']
    assert runs[0] == full and [(r['row'], r['quick']) for r in runs[1:]] == [('rbf-svm', True)]
    assert '| digits | defaults |' not in done.stdout  # the table is of --quick runs only
