"""`python main.py tune`: a budgeted search of the training recipe on the user's own validation split (Optuna).

Each trial is a normal training run (`engine.fit`) in <tune run>/trial-NNN; its objective is its best validation
accuracy, never a test score. The TPE sampler proposes the settings of a preset search space (SPACES); the pruner
stops a trial whose validation accuracy trails the others at the same share of its schedule (the step reported is
the percent of its epochs done, so that trials of 5 and of 40 epochs are compared at the same point of their
learning-rate schedule). The study lives in an Optuna RDB storage: the tune run's own study.db, or --storage,
which several processes or machines share. Outputs: study.csv (updated after every trial), importances.csv,
best_config.json (what `train --config=` reruns) and, with --vis, dashboard windows. docs/tune.md is the manual.
"""
import json
import math
import os
import time
import warnings

import config
import models
from data import loaders
from data.cache import BATCH_AUGMENTS
from models import pretrained
from utils.train import engine
from utils.io import write_csv, write_json
from utils.dashboard.client import Visualizer

WARMUP = 30  # percent of a trial's epochs before it may be pruned: early accuracy says little
EPOCHS = (0, 5, 10, 20, 40)  # 0 = auto, train's own budget (config.auto_epochs)
STEMS = ('auto', 'imagenet', 'small')  # auto (the default, per model: models.resolve_stem) keeps train's recipe searchable
QUICK = (('lr', 'log', (3e-4, 1e-2)), ('weight_decay', 'log', (1e-5, 0.1)), ('max_epoch', 'choice', EPOCHS),
         ('hflip', 'choice', ('auto', False, True)), ('augment', 'choice', config.choices()['augment']))
TRICKS = QUICK + (('jitter', 'float', (0.0, 0.4)), ('erasing', 'float', (0.0, 0.5)),
                  ('mix', 'choice', ('none', 'mixup', 'cutmix')), ('sampler', 'choice', ('shuffle', 'weighted')),
                  ('loss', 'choice', ('ce', 'label_smooth')), ('stem', 'choice', STEMS))
SPACES = {'quick': QUICK, 'tricks': TRICKS, 'full': TRICKS + (('model', 'choice', None),)}  # None: models that fit
# settings that tune sets for its trials and that best_config.json takes back from the tune command
TRIAL_ONLY = ('checkpoint_dir', 'vis', 'html_report')
PER_RUN = ('run_name', 'resume', 'load_path', 'load_paths', 'output', 'pretrained_weights')


def fitting_models(cfg, num_classes):
    """The registry models with at most as many parameters as --model (ResNet34 by default): those whose trial
    costs no more than a run of the model the user would train; with a fixed --attention (se, cbam), those that
    take it."""
    def size(name):
        return models.parameter_count(name, num_classes, models.resolve_attention(name, cfg.attention))
    budget = size(cfg.model)
    takes = [m for m in models.MODELS if 'attention' not in cfg.given or cfg.attention in ('auto', 'none')
             or m in models.ATTENTION_MODELS]
    return tuple(m for m in takes if size(m) <= budget)


def allowed(name, choices, cfg):
    """The values of the searched choice `name` that can run with the settings the command line fixed: with a fixed
    --cache=ram|gpu the augmentations that run on batches, with --freeze-epochs=N the epochs of at least N (auto
    is at least config.AUTO_EPOCHS[0]), with --pretrained weights no small stem."""
    fixed = cfg.given
    if name == 'augment' and 'cache' in fixed and cfg.cache in ('ram', 'gpu'):
        return tuple(c for c in choices if c in BATCH_AUGMENTS)
    if name == 'max_epoch' and cfg.freeze_epochs:
        return tuple(c for c in choices if (c or config.AUTO_EPOCHS[0]) >= cfg.freeze_epochs)
    if name == 'stem' and cfg.pretrained.lower() != 'none':
        return tuple(c for c in choices if c != 'small')
    return tuple(choices)


def held_fixed(cfg):
    """The searched parameters the command line gave: each trial keeps them (timm/<model>.<tag> weights fix the
    model too)."""
    weights_fix_model = cfg.pretrained.lower().startswith('timm/')
    return set(cfg.given) | ({'mix'} if {'mixup_prob', 'cutmix_prob'} & cfg.given else set()) \
        | ({'model'} if weights_fix_model else set())


def suggest(trial, cfg, model_choices):
    """The settings `trial` tries: the preset's space less the settings given on the command line (held fixed)."""
    fixed = held_fixed(cfg)
    known = {name for name, *_ in config.settings()} | {'mix'}
    out = {}
    for name, kind, args in SPACES[cfg.search_space]:
        if name in fixed or name not in known:
            continue
        if kind == 'choice':
            out[name] = trial.suggest_categorical(name, allowed(name, args or model_choices, cfg))
        else:
            out[name] = trial.suggest_float(name, *args, log=kind == 'log')
    mix = out.pop('mix', None)
    if mix is not None:
        prob = 0.0 if mix == 'none' else trial.suggest_float('mix_prob', 0.2, 1.0)
        out.update(mixup_prob=prob if mix == 'mixup' else 0.0, cutmix_prob=prob if mix == 'cutmix' else 0.0)
    return out


def first_params(cfg, model_choices):
    """The searched parameters as `train` would run them without tune (the defaults): the first trial of a new
    study, so that its best is never below the recipe it is meant to improve."""
    fixed = held_fixed(cfg)
    mix = 'cutmix' if cfg.cutmix_prob else 'mixup' if cfg.mixup_prob else 'none'
    current = {**{name: getattr(cfg, name, None) for name, *_ in SPACES[cfg.search_space]}, 'mix': mix}
    out = {}
    for name, kind, args in SPACES[cfg.search_space]:
        value = current[name]
        if name not in fixed and (kind != 'choice' or value in allowed(name, args or model_choices, cfg)):
            out[name] = value  # (not a timm/ model, which the space does not hold)
    if out.get('mix', 'none') != 'none':
        out['mix_prob'] = cfg.cutmix_prob or cfg.mixup_prob
    return out


def open_study(cfg, url, classes):
    """The study `cfg.study_name` in the storage at `url`, created or joined; a study of other classes or another
    search space is refused."""
    import optuna
    import sqlalchemy.exc
    for attempt in range(4):
        try:  # the heartbeat marks a trial of a killed process failed instead of running forever
            with warnings.catch_warnings(category=optuna.exceptions.ExperimentalWarning, action='ignore'):
                storage = optuna.storages.RDBStorage(url, heartbeat_interval=60, grace_period=180)
            break
        except (sqlalchemy.exc.SQLAlchemyError, ValueError, ImportError) as e:
            # two processes that open a new storage at once race to create its tables: the loser retries
            raced = (isinstance(e, sqlalchemy.exc.OperationalError) and 'already exists' in str(e)
                     or isinstance(e, sqlalchemy.exc.IntegrityError) and 'UNIQUE constraint' in str(e))
            if raced and attempt < 3:  # the tables, or their alembic version row
                time.sleep(0.5 * (attempt + 1))
                continue
            raise config.UserError(f'cannot open --storage={url}: {str(e).splitlines()[0]}') from None
    sampler = optuna.samplers.TPESampler(seed=None if cfg.storage else cfg.seed)  # shared: processes draw apart
    pruner = {'median': lambda: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=WARMUP),
              'halving': lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=WARMUP, reduction_factor=3),
              'none': optuna.pruners.NopPruner}[cfg.pruner]()
    study = optuna.create_study(storage=storage, study_name=cfg.study_name, direction='maximize', sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    mine = {'classes': list(classes), 'search_space': cfg.search_space}
    differ = [k for k in mine if k in study.user_attrs and study.user_attrs[k] != mine[k]]
    if differ:
        raise config.UserError(f'study {cfg.study_name!r} in {url} was made for other {" and another ".join(differ)}; '
                               f'give another --study-name')
    for k, v in mine.items():
        study.set_user_attr(k, v)
    return study


def choose(study, n_val):
    """(chosen, best, standard error), from one reading of the study (other processes may add trials meanwhile):
    the trial best_config.json takes is the best completed trial, unless the first trial -- train's own recipe --
    is within one standard error of its accuracy on the n_val validation images (the one-standard-error rule): a
    lead the validation split cannot tell from chance does not replace the recipe."""
    trials = [t for t in study.trials if t.state.name == 'COMPLETE']
    best = max(trials, key=lambda t: t.value)  # the first of equals
    base = next((t for t in trials if t.user_attrs.get('recipe') == 'train'), None)
    if base is None or base.number == best.number:
        return best, best, None
    se = math.sqrt(base.value * (1 - base.value) / max(n_val, 1))
    return (base if best.value - base.value <= se else best), best, se


def drop_checkpoints(study, tune_dir, n_val):
    """Remove the checkpoints (.pth) of the trials this tune ran (in tune_dir) that ended and are not the one
    `choose` takes; their config.json, metrics and logs stay."""
    done = [t for t in study.trials if t.state.name == 'COMPLETE']
    keep = choose(study, n_val)[0].user_attrs.get('run_dir') if done else None
    for t in study.trials:
        run = t.user_attrs.get('run_dir', '')
        if t.state.is_finished() and run != keep and os.path.dirname(run) == tune_dir and os.path.isdir(run):
            for name in os.listdir(run):
                if name.endswith('.pth'):
                    os.remove(os.path.join(run, name))


def table(study):
    """The study as rows: trial, state, value (the best validation accuracy; a pruned trial's at its stop), best
    so far (over completed trials), seconds, run directory, then one column per searched parameter."""
    names = sorted({p for t in study.trials for p in t.params})
    rows, best = [], None
    for t in sorted(study.trials, key=lambda t: t.number):
        if t.state.name == 'COMPLETE':
            best = t.value if best is None else max(best, t.value)
        rows.append({'trial': t.number, 'state': t.state.name.lower(), 'value': t.value, 'best_so_far': best,
                     'seconds': round(t.duration.total_seconds(), 1) if t.duration else None,
                     'run': t.user_attrs.get('run_dir', ''), 'why': t.user_attrs.get('why', ''),
                     **{n: t.params.get(n, '') for n in names}})
    return rows


def cell(v):
    """A value of the study table as printed."""
    return f'{v:.4g}' if isinstance(v, float) else '' if v is None else str(v)


def format_table(rows):
    """The study table as aligned text, parameters as name=value."""
    head = ('trial', 'state', 'value', 'best_so_far', 'seconds')
    lines = [[*head, 'params']] + [[cell(r[k]) for k in head] + [' '.join(
        f'{k}={cell(v)}' for k, v in r.items() if k not in (*head, 'run', 'why') and v != '')
        + (f' ({r["why"]})' if r['why'] else '')] for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return '\n'.join('  '.join(c.rjust(w) for c, w in zip(line, widths)) + '  ' + line[-1] for line in lines)


def best_config(cfg, trial):
    """What `trial`'s run was asked for (its config.json's `asked`: the tune command's settings and the trial's),
    without what belongs to one run (its name, paths to resume or evaluate) and the tune settings, with the
    checkpoint folder, dashboard and report the tune command gave. What the trial's machine decided is not in it:
    `train --config=` decides it again wherever it runs."""
    group = {name: grp for name, _, _, _, grp in config.settings()}
    values = {k: v for k, v in trial.user_attrs['config']['asked'].items()
              if k not in PER_RUN + TRIAL_ONLY and group.get(k) != 'tune'}
    return {**values, **{k: getattr(cfg, k) for k in TRIAL_ONLY if k in cfg.given}}


def run(cfg):
    """Search the recipe for cfg's data with Optuna: --n-trials trials (or until --timeout), each a training run
    under the tune run directory; writes study.csv, importances.csv and best_config.json there and returns it."""
    import optuna
    if 'model' in held_fixed(cfg) or cfg.search_space != 'full':
        pretrained.find(cfg.model, cfg.pretrained)  # weights that do not fit the model stop here, not in every trial
    classes, _, val = loaders.train_val_samples(loaders.resolve_roots(cfg))  # readable before anything is written
    n_val = len(val)
    model_choices = fitting_models(cfg, len(classes)) if cfg.search_space == 'full' else ()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial of our own instead
    study = open_study(cfg, cfg.storage, classes) if cfg.storage else None
    tune_dir = engine.make_run_dir(cfg, prefix='tune')
    study = study or open_study(cfg, f'sqlite:///{os.path.abspath(os.path.join(tune_dir, "study.db"))}', classes)
    vis = Visualizer(cfg.env, cfg.vis_server, cfg.vis_port, enabled=cfg.vis,
                     log_path=os.path.join(tune_dir, 'visdom.log'))
    base = {k: getattr(cfg, k) for k in cfg.given if k not in ('run_name', 'resume')}

    def objective(trial):
        values = {**base, **suggest(trial, cfg, model_choices), 'checkpoint_dir': tune_dir,
                  'run_name': f'trial-{trial.number:03d}', 'vis': False,
                  'html_report': cfg.html_report and 'html_report' in cfg.given}
        run_dir = os.path.join(tune_dir, values['run_name'])
        trial.set_user_attr('run_dir', run_dir)
        best = []

        def on_epoch(epoch, row, plan):
            best.append(max([row['val_acc'], *best]))
            step = round(100 * (epoch + 1) / plan.max_epoch)  # the percent of its schedule: trials of unlike length
            trial.report(best[-1], step)
            if step >= WARMUP and (best[-1] < cfg.prune_below or trial.should_prune()):
                why = f'validation accuracy {best[-1]:.4f} at {step} % of its epochs'
                trial.set_user_attr('why', why)
                raise optuna.TrialPruned(why)
        try:
            engine.fit(config.parse(**values), on_epoch=on_epoch)
        except optuna.TrialPruned:
            raise
        except config.UserError as e:
            if os.path.exists(run_dir):
                trial.set_user_attr('why', str(e))
                raise  # a failure of the run itself (its disk, its data): recorded, the study goes on
            # refused before its run began: the sampled values cannot run with the settings the user fixed
            trial.set_user_attr('why', f'cannot run: {e}')
            raise optuna.TrialPruned(str(e)) from None
        except Exception as e:
            trial.set_user_attr('why', f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}')
            raise
        with open(os.path.join(run_dir, 'config.json')) as f:
            trial.set_user_attr('config', json.load(f))  # in the storage: another machine's tune can write it out
        return best[-1]

    def after_trial(study, trial):
        if cfg.keep_trials == 'best':
            drop_checkpoints(study, tune_dir, n_val)
        rows = table(study)
        write_csv(os.path.join(tune_dir, 'study.csv'), list(rows[0]) if rows else ['trial'], rows)
        mine = next(r for r in rows if r['trial'] == trial.number)
        print(f'tune: trial {trial.number} {mine["state"]}, validation accuracy {cell(mine["value"])}, best so far '
              f'{cell(mine["best_so_far"])} ({mine["seconds"]} s)')
        if trial.value is not None:
            vis.plot('tune: validation accuracy per trial', [trial.value, mine['best_so_far'] or 0.0], trial.number,
                     xlabel='trial', legend=['trial', 'best so far'], markers=True)

    if not study.trials:  # a new study starts from the recipe train runs; a shared one already has it
        study.enqueue_trial(first_params(cfg, model_choices), user_attrs={'recipe': 'train'}, skip_if_exists=True)
    started = time.time()
    # a trial that fails is recorded (state fail, its error in the table) and the study goes on
    study.optimize(objective, n_trials=cfg.n_trials or None, timeout=cfg.timeout or None, callbacks=[after_trial],
                   catch=(Exception,))
    rows = table(study)
    write_csv(os.path.join(tune_dir, 'study.csv'), list(rows[0]) if rows else ['trial'], rows)
    print(f'study {cfg.study_name!r}: {len(rows)} trials ({time.time() - started:.0f} s in this process)\n'
          + format_table(rows))
    done = [t for t in study.trials if t.state.name == 'COMPLETE']
    if len({t.value for t in done}) >= 2:  # importances explain differences; equal values have none
        # fANOVA: PED-ANOVA, Optuna's default, needs far more trials than a small budget gives
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=cfg.seed)
        found = optuna.importance.get_param_importances(study, evaluator=evaluator)
        importances = {k: float(v) for k, v in found.items()}
        write_csv(os.path.join(tune_dir, 'importances.csv'), ['param', 'importance'],
                  [{'param': k, 'importance': v} for k, v in importances.items()])
        print('parameter importances: ' + ', '.join(f'{k} {v:.2f}' for k, v in importances.items()))
        vis.bar('tune: parameter importances', list(importances.values()), list(importances))
    if not done:
        broken = [r for r in rows if r['state'] == 'fail' or r['why'].startswith('cannot run')]
        if broken and len(broken) == len(rows):
            raise config.UserError(f'no trial could run ({len(rows)} tried), the first: {broken[0]["why"]}; nothing '
                                   f'to select; the study table is {tune_dir}/study.csv')
        print(f'no trial completed; nothing to select. Study table: {tune_dir}/study.csv')
        return tune_dir
    path = os.path.join(tune_dir, 'best_config.json')
    chosen, best, se = choose(study, n_val)
    write_json(best_config(cfg, chosen), path)
    if chosen.number != best.number:
        print(f'best: trial {best.number}, validation accuracy {best.value:.4f}, within one standard error '
              f'({se:.4f} on {n_val} validation images) of trial {chosen.number}, train\'s own recipe '
              f'({chosen.value:.4f}): that recipe is kept')
    print(f'chosen: trial {chosen.number}, validation accuracy {chosen.value:.4f}; its settings: {path}\n'
          f'train with them: python main.py train --config={path}')
    return tune_dir
