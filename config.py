"""Every setting of the toolkit, with its default and a one-line help.

`parse(**kwargs)` applies command-line overrides strictly: an unknown key stops with the closest valid
name, and each value is coerced to the type of its default. This module imports nothing heavy, so that
`python main.py help` answers at once.
"""
import dataclasses
import difflib
import importlib.util
import json
import math
from dataclasses import dataclass, field


def opt(default, help, group='general', choices=(), auto=False, kind=None):
    """A setting: its default, a one-line help, the group `help` lists it under, for a setting that names one
    of a few values those `choices` (see `check_choice`), whether it also takes the word 'auto' beside values
    of its type (`auto`, see `parse`), and that type when the default is 'auto' (`kind`)."""
    kw = {'default_factory': lambda: default} if isinstance(default, list) else {'default': default}
    return field(metadata={'help': help, 'group': group, 'choices': tuple(choices), 'auto': auto,
                           'kind': kind or type(default)}, **kw)


# The model registry's names (models.MODELS; a test keeps the two equal), listed here so that parsing and `help`
# need no import of the models package.
MODEL_NAMES = ('AlexNet', 'SqueezeNet', 'ResNet34', 'ResNet101', 'ResNeSt50', 'EfficientNet-B0', 'EfficientNet-B1',
               'EfficientNet-B2', 'EfficientNet-B3', 'EfficientNet-B4', 'EfficientNet-B5', 'ResNeXt101_32x8d',
               'SE-ResNeXt50_32x4d', 'SE-ResNeXt101_32x4d')
TIMM = 'timm/<name>'  # a choice that takes any name timm knows after its prefix
TTA = ('none', 'hflip', 'vflip', 'd4', 'five_crop', 'ten_crop', 'multiscale')


@dataclass(frozen=True)
class DefaultConfig:
    """What the user asked: every setting, 'auto' kept, as `parse` checked it; frozen (a run's decisions go into
    its Plan, below). `given` names the settings the command line or a --config file set."""
    # --- data
    train_data_root: str = opt('./data/train', 'training images, one sub-folder per class (sorted names are the '
                               'class order); when absent and not given, the bundled digits demo is used', 'data')
    val_data_root: str = opt('./data/val', 'validation images; when absent, a stratified split of train by val_ratio',
                             'data')
    test_data_root: str = opt('./data/test', 'labelled test images (class sub-folders) for testforacc', 'data')
    data_root: str = opt('', 'folder that testforacc/val evaluate; empty = test_data_root (testforacc) or the '
                         'validation split (val)', 'data')
    val_ratio: float = opt(0.15, 'share of train held out for validation when val_data_root is absent', 'data')
    allow_empty_classes: bool = opt(False, 'keep class folders without an image (manifest labels without a '
                                    'training row) as output classes instead of refusing them', 'data')
    image_size: int = opt(0, 'side in pixels the images are resized to; 0 = auto: median side of the training '
                          'images rounded to a multiple of 32, within 32..224', 'data')
    num_workers: int = opt(-1, 'data-loading worker processes; -1 = auto (0 with a cache or when training on a '
                           'CPU of 2 cores or fewer, else the CPUs of this process less one, at most 8)', 'data')
    augment: str = opt('basic', 'training augmentation preset: none | basic (pad-and-crop) | affine (RandomAffine '
                       'translate 0.05) | resized (random resized crop) | randaugment | trivialaugment (basic + '
                       'torchvision\'s RandAugment / TrivialAugmentWide)', 'augment',
                       choices=('none', 'basic', 'affine', 'resized', 'randaugment', 'trivialaugment'))
    sampler: str = opt('shuffle', 'how training batches are drawn: shuffle | weighted (WeightedRandomSampler, '
                       '1/count per image) | imbalanced (torchsampler ImbalancedDatasetSampler)', 'balance',
                       choices=('shuffle', 'weighted', 'imbalanced'))

    # --- model
    model: str = opt('ResNet34', 'architecture from the registry, case-insensitive, or timm/<name> for any timm '
                     'model', 'model', choices=MODEL_NAMES + (TIMM,))
    pretrained_path: str = opt('', 'local weights file to start from; the head is replaced when the class '
                               'count differs', 'model')

    # --- optimisation
    max_epoch: int = opt(0, 'number of training epochs; 0 = auto: 15, or more on a small training set -- enough '
                         'epochs to show the model AUTO_IMAGES (18,000) training images, at most 100 (see '
                         'auto_epochs)', 'optim')
    batch_size: int = opt(64, 'images per batch', 'optim')
    loss: str = opt('label_smooth', 'loss function: ce | label_smooth (lb_pos on the true class, lb_neg elsewhere) | joint '
                    '(joint_weights[0] * ce + joint_weights[1] * label_smooth)', 'optim',
                    choices=('ce', 'label_smooth', 'joint'))
    optimizer: str = opt('adamw', 'optimizer: sgd | adam | adamw | radam | ranger (RAdam + Lookahead + gradient '
                         'centralisation) | ranger_adabelief | timm/<name> (any timm optimizer)', 'optim',
                         choices=('sgd', 'adam', 'adamw', 'radam', 'ranger', 'ranger_adabelief', TIMM))
    lr: float = opt(1e-3, 'initial learning rate; auto = the suggestion of the learning-rate range test (lr_find), '
                    'run on this model and data before training and recorded in config.json', 'optim', auto=True)
    lr_find_start: float = opt(1e-7, 'lr_find: learning rate of the first step of the sweep', 'optim')
    lr_find_end: float = opt(10.0, 'lr_find: learning rate of the last step (the sweep stops earlier when the loss '
                             'diverges: 4x its best)', 'optim')
    lr_find_steps: int = opt(100, 'lr_find: training steps of the exponential sweep from lr_find_start to '
                             'lr_find_end (the training data is cycled when it has fewer batches)', 'optim')
    momentum: float = opt(0.9, 'SGD momentum', 'optim')
    weight_decay: float = opt(1e-4, 'weight decay (decoupled for adamw; L2 for the others)', 'optim')
    scheduler: str = opt('onecycle', 'learning-rate schedule: plateau (multiply by lr_decay when the validation '
                         'loss stops improving) | step | multistep | cosine (linear warmup, then cosine to min_lr) | onecycle | '
                         'none', 'optim', choices=('plateau', 'step', 'multistep', 'cosine', 'onecycle', 'none'))
    lr_decay: float = opt(0.5, 'factor the plateau / step / multistep schedules multiply the learning rate by', 'optim')
    lr_patience: int = opt(1, 'epochs without validation-loss improvement before the plateau decay', 'optim')
    seed: int = opt(0, 'random seed (same seed + same data -> same metrics on the CPU)', 'optim')

    # --- runs and checkpoints
    checkpoint_dir: str = opt('./checkpoints', 'where run directories are created', 'run')
    run_name: str = opt('', 'run directory name under checkpoint_dir; empty = <model>-<date>-<time>', 'run')
    load_path: str = opt('', 'the model that val, testforacc, predict, svm, export, pseudo, hard and explain read: '
                         'a checkpoint (.pth) written by train, or for val / testforacc / predict a file written by '
                         'export (.onnx, .torchscript)', 'run')
    resume: str = opt('', 'last.pth of an interrupted run: continue it (epoch, optimizer, scheduler, best metric); '
                      'auto (with --run-name): continue checkpoint_dir/<run-name>/last.pth when there is one, else '
                      'start that run -- one command line for the first start and every restart (a scheduler\'s '
                      'requeue, torchrun --max-restarts)',
                      'run')
    checkpoint_every: int = opt(0, 'also write last.pth every N optimizer steps within an epoch, for jobs that may be '
                                'killed without a signal; 0 = at the end of each epoch only. SIGTERM and SIGINT '
                                'always write it at the current step (docs/runs.md#stopping-and-resuming)', 'run')
    use_gpu: bool = opt(False, 'train on CUDA when available (otherwise one warning and the CPU)', 'run')
    print_freq: int = opt(20, 'log the training loss every N iterations', 'run')
    calibrate: str = opt('none', 'after training: temperature (fit one temperature dividing the logits of '
                         'best_model.pth -- and best_model_ema.pth -- on the validation split; stored in the '
                         'checkpoint, applied by every evaluation and inside exported files) | none. Off by '
                         'default: it calibrates test data like the validation split, and miscalibrates shifted '
                         'test data (docs/evaluation.md#calibration)', 'run', choices=('none', 'temperature'))
    html_report: bool = opt(True, 'at the end of train, write checkpoints/<run>/report.html (curves, confusion, '
                            'per-class table, image mosaics, worst mistakes with Grad-CAM), and testforacc adds its '
                            'test section to it; False: neither', 'run')

    # --- dashboard
    vis: bool = opt(True, 'stream curves to a visdom server when one answers', 'dashboard')
    env: str = opt('default', 'visdom environment (dashboard tab) the curves go to', 'dashboard')
    vis_server: str = opt('http://127.0.0.1', 'visdom server address', 'dashboard')
    vis_port: int = opt(8097, 'visdom server port', 'dashboard')
    tensorboard: bool = opt(False, 'train: also write what the dashboard shows (every scalar, the confusion matrix, '
                            'image grids) as TensorBoard event files in the run directory: tensorboard '
                            '--logdir=checkpoints; replay: write them for a finished run from its metrics.jsonl',
                            'dashboard')

    # --- evaluation and inference
    tta: str = opt('none', 'test-time augmentation in val, testforacc, predict and ensemble; hflip follows the '
                   "run's flip policy (--hflip: pairs swapped, unflipped classes not averaged); the flips of vflip, "
                   'd4 and ten_crop change direction-bearing classes (keep-left / keep-right signs, digits)',
                   'inference', choices=TTA)
    tta_merge: str = opt('mean', 'how the TTA views are merged, as probabilities', 'inference',
                         choices=('mean', 'gmean', 'max', 'tsharpen'))
    head: str = opt('softmax', 'classifier head of testforacc, val and predict: softmax | svm (the head fitted by '
                    'the svm command, <checkpoint>_svm.npz beside the checkpoint)', 'inference',
                    choices=('softmax', 'svm'))
    topk: int = opt(5, 'predict: classes written per image, most likely first', 'inference')
    coverage: float = opt(0.0, 'predict: also write each image\'s prediction set, the classes that hold its true '
                          'class with this probability (e.g. 0.95; split conformal prediction calibrated on the run\'s '
                          'validation split); 0 = off', 'inference')
    output: str = opt('', 'predict / ensemble: CSV the predictions are written to; empty = predictions.csv '
                      '(ensemble: ensemble_predictions.csv) beside the (first) checkpoint; explain: a new or empty '
                      'folder for its pictures, empty = explain-<date>-<time> beside the checkpoint', 'inference')
    load_paths: list = opt([], 'ensemble: the member checkpoints, e.g. [a.pth,b.pth,c.pth] (architectures and '
                           'image sizes may differ)', 'inference')
    ensemble_weights: list = opt([], 'ensemble: soft-voting weights, one per member, e.g. [2,1,1]; empty = equal',
                                 'inference')
    fusion: str = opt('soft', 'ensemble: the method whose predictions --output gets', 'inference',
                      choices=('soft', 'hard', 'stacking'))
    kfold: int = opt(0, 'train on a stratified, seeded k-fold split of train_data_root: K folds (0 = off); the '
                     'held-out fold is the validation split', 'data')
    fold: int = opt(0, 'which fold (0..kfold-1) is held out as the validation split', 'data')
    # --- data quality: analyze, clean, manifests, pseudo-labels, hard examples
    manifest: str = opt('', 'CSV manifest (path,label[,split]; paths relative to its folder) used instead of '
                        'train_data_root; its val rows are the validation split', 'data quality')
    extra_manifest: str = opt('', 'manifest(s), comma-separated, whose rows are added to the training images '
                              '(e.g. accepted pseudo-labels)', 'data quality')
    manifest_out: str = opt('', 'where split writes its manifest; empty = split.csv beside train_data_root',
                            'data quality')
    near_dup_bits: int = opt(4, 'analyze: near duplicates differ in at most this many of 64 difference-hash '
                             'bits (-1 = skip the search)', 'data quality')
    near_dup_diff: float = opt(3.0, 'analyze: ... and their 16 px grayscale thumbnails by at most this many '
                               'grey levels on average', 'data quality')
    clean_categories: list = opt(['zero_byte', 'non_image', 'truncated', 'unreadable', 'exact_dup', 'leak'],
                                 'what clean moves: zero_byte, non_image, truncated, unreadable, other_file, '
                                 'exact_dup, near_dup, leak', 'data quality')
    quarantine_dir: str = opt('', 'where clean moves files; empty = <data root>-quarantine beside the data',
                              'data quality')
    dry_run: bool = opt(False, 'clean: only list what would move', 'data quality')
    undo: bool = opt(False, 'clean: put every quarantined file back', 'data quality')
    upsample_hard: int = opt(0, 'extra region-cropped copies of each training image listed in hard_list',
                             'data quality')
    hard_list: str = opt('', 'manifest of misclassified training images (hard_train.csv written by hard)',
                         'data quality')
    unlabeled_root: str = opt('', 'pseudo: folder of unlabelled images (any layout) to label', 'pseudo')
    pseudo_floor: float = opt(0.9, 'pseudo: global confidence floor; below it nothing is accepted', 'pseudo')
    pseudo_precision: float = opt(0.95, 'pseudo: per-class threshold = lowest confidence at which the class\'s '
                                  'precision on the validation split reaches this', 'pseudo')
    pseudo_min_support: int = opt(5, 'pseudo: validation predictions a class needs above its threshold to '
                                  'estimate precision; classes with fewer accept nothing', 'pseudo')
    pseudo_cap: float = opt(0.0, 'pseudo: at most this many accepted images per training image of the class; '
                            '0 = auto (the median ratio over classes), keeping the merged distribution close '
                            'to training', 'pseudo')
    pseudo_tta: str = opt('none', 'pseudo: test-time augmentation for the predictions', 'pseudo',
                          choices=TTA)
    rounds: int = opt(0, 'pseudo: rounds of train (from the previous best, with the accepted images) -> '
                      'predict -> select after the first selection', 'pseudo')
    # --- dashboard server and replay
    vis_host: str = opt('127.0.0.1', '`dashboard` binds here; visdom has no login, so any non-loopback address '
                        'lets everyone who reaches the port read and change it (a warning says so)', 'dashboard')
    vis_env_path: str = opt('./.visdom', 'folder where `dashboard` keeps the env files (saved tabs) and its log',
                            'dashboard')
    # --- speed and scale
    cache: str = opt('auto', 'auto (gpu when training on CUDA and the images fit comfortably in its free memory, '
                     'else ram when they fit comfortably in the available memory and --augment runs on batches, else '
                     'none; one line says which and why) | none (decode every image every epoch; streams, constant '
                     'memory) | ram (decode and resize once to uint8, augment per batch on the training device; '
                     'refused when it would not fit in the available memory) | gpu (the same, kept on the CUDA device: '
                     'an epoch never touches the host)', 'speed',
                     choices=('auto', 'none', 'ram', 'gpu'))
    prefetch_factor: int = opt(2, 'batches each loading worker prepares ahead', 'speed')
    amp: str = opt('auto', 'mixed precision on CUDA: auto (bf16 where supported, else fp16 with a gradient '
                   'scaler) | bf16 | fp16 | off; the CPU always trains in fp32', 'speed',
                   choices=('auto', 'off', 'bf16', 'fp16'))
    channels_last: str = opt('auto', 'channels_last memory format: auto (on for CUDA) | on | off; CUDA only', 'speed',
                             choices=('auto', 'on', 'off'))
    cudnn_benchmark: bool = opt(True, 'let cuDNN pick the fastest convolution algorithms (CUDA)', 'speed')
    compile: bool = opt(False, 'torch.compile the model (first step compiles for ~20 s or more)', 'speed')
    compile_mode: str = opt('default', 'torch.compile mode with --compile: default | reduce-overhead (CUDA graphs) | '
                            'max-autotune', 'speed',
                            choices=('default', 'reduce-overhead', 'max-autotune'))
    sync_bn: bool = opt(False, 'under torchrun on CUDA: synchronise batch-norm statistics across processes',
                        'speed')
    dist_backend: str = opt('auto', 'torchrun process-group backend: auto (nccl on CUDA, gloo on the CPU) | '
                            'gloo | nccl', 'speed', choices=('auto', 'gloo', 'nccl'))
    # --- tricks: augmentation, mixing, class balance, losses, optimizers, schedules, backbones, EMA
    hflip: bool = opt('auto', 'random horizontal flip of training images: auto (per class, from the training images '
                      '(data/flips.py): flipped where a mirrored image still looks like its class, flipped with the '
                      'label swapped for a mirror pair such as b / d or keep-left / keep-right, never otherwise) | '
                      'true (every class) | false (none)', 'augment', auto=True, kind=bool)
    jitter: float = opt(0.2, 'brightness and contrast jitter strength (0 = off, 0.2 = +-20 %)', 'augment')
    erasing: float = opt(0.25, 'RandomErasing probability per training image (0 = off)', 'augment')
    normalize: str = opt('auto', 'input normalisation: imagenet statistics | dataset (the training images\' own '
                         'mean and std, computed once and cached in the run directory) | auto (dataset when training '
                         'from scratch; with pretrained_path, dataset if that checkpoint of this toolkit used it, '
                         'else imagenet)', 'augment', choices=('auto', 'imagenet', 'dataset'))
    cutmix_prob: float = opt(0.0, 'probability that a training batch gets CutMix (0 = off)', 'mix')
    cutmix_alpha: float = opt(1.0, 'CutMix Beta(alpha, alpha) parameter', 'mix')
    mixup_prob: float = opt(0.5, 'probability that a training batch gets Mixup (0 = off; cutmix_prob + mixup_prob '
                            '<= 1); 0 when only --cutmix-prob is given, so that asking for CutMix gets CutMix', 'mix')
    mixup_alpha: float = opt(0.2, 'Mixup Beta(alpha, alpha) parameter', 'mix')
    class_weight: str = opt('none', 'per-class loss weights: none | inverse | sqrt_inverse | effective_number '
                            '(Cui et al., 2019, with cb_beta)', 'balance',
                            choices=('none', 'inverse', 'sqrt_inverse', 'effective_number'))
    cb_beta: float = opt(0.999, 'beta of the effective_number class weights', 'balance')
    lb_pos: float = opt(0.9, 'label_smooth / joint: target probability of the true class', 'optim')
    lb_neg: float = opt('auto', 'label_smooth / joint: target probability of every other class: auto = (1 - lb_pos) '
                        '/ (classes - 1), a distribution that smooths alike at any class count; or a number (the '
                        'write-up\'s 0.005: with lb_pos 0.9 the target sums to 1 only at 21 classes)', 'optim',
                        auto=True, kind=float)
    joint_weights: list = opt(['0.5', '0.5'], 'joint loss: weights of ce and label_smooth (e.g. 0.3,0.7)', 'optim')
    nesterov: bool = opt(False, 'Nesterov momentum for sgd', 'optim')
    ranger_k: int = opt(6, 'ranger / ranger_adabelief: Lookahead synchronisation period (steps)', 'optim')
    ranger_alpha: float = opt(0.5, 'ranger / ranger_adabelief: Lookahead slow-weight step', 'optim')
    warmup_epochs: float = opt(0.0, 'cosine and onecycle: epochs over which the learning rate rises to lr (cosine: '
                               'linearly from lr/100; onecycle: the rising part of the cycle, from lr/25, at most half '
                               'the epochs); 0 = none for cosine, 30 % of the epochs for onecycle', 'optim')
    min_lr: float = opt(0.0, 'cosine: final learning rate', 'optim')
    lr_step: int = opt(5, 'step: multiply the learning rate by lr_decay every lr_step epochs', 'optim')
    lr_milestones: list = opt([], 'multistep: epochs after which the learning rate is multiplied by lr_decay; '
                              'empty = at 50 % and 75 % of max_epoch', 'optim')
    clip_grad: float = opt(0.0, 'clip the gradient norm to this value (0 = off)', 'optim')
    accum_steps: int = opt(1, 'gradient accumulation: batches summed per optimizer step', 'optim')
    patience: int = opt(0, 'early stopping: end the run when neither the validation accuracy nor the EMA\'s has '
                        'improved for N epochs; 0 = off. The schedule is not shortened: a one-cycle or cosine run '
                        'stopped early ends before its learning rate has annealed, and best_model.pth is its best '
                        'epoch so far', 'optim')
    ema: bool = opt(False, 'keep an exponential moving average of the weights; it is validated and saved '
                    '(best_model_ema.pth) beside the raw weights', 'optim')
    ema_decay: float = opt(0.998, 'EMA decay (with warmup, so short runs average over fewer steps)', 'optim')
    attention: str = opt('auto', 'attention in every residual block of ResNet34 / ResNet101: none | se | cbam | '
                         'auto (cbam for those two trained from scratch; with pretrained_path, what that checkpoint '
                         'of this toolkit used, none for other weights files; none for other models)', 'model',
                         choices=('auto', 'none', 'se', 'cbam'))
    stem: str = opt('auto', 'first layers of the ResNet family (timm resnet* / resnest* too), EfficientNet (timm '
                    'efficientnet module), AlexNet and SqueezeNet: imagenet (as published: ResNet 7x7 stride-2 '
                    'convolution and max-pool, EfficientNet stride 2, AlexNet 11x11 stride 4, SqueezeNet stride 2) | '
                    'small (3x3 stride-1 first convolution, no ResNet max-pool: the CIFAR form) | auto (small for '
                    'AlexNet, SqueezeNet and EfficientNet trained from scratch at image_size <= 96, whose ImageNet '
                    'forms stay near chance there; imagenet for the ResNet family, whose small form costs 5-10x the '
                    'time, above 96 px and with --pretrained; with pretrained_path, what that checkpoint used: '
                    'docs/models.md)', 'model', choices=('auto', 'imagenet', 'small'))
    freeze_backbone: bool = opt(False, 'train only the final layer (fine-tuning local pretrained weights)', 'model')
    pretrained: str = opt('none', 'start from published weights: none | imagenet (the model family\'s ImageNet '
                          'weights: torchvision, resnest or timm) | timm/<model>.<tag> (a timm model\'s Hugging Face '
                          'file); read from the library\'s cache (offline too); the auto settings follow them: '
                          'the statistics, interpolation and image size the weights were trained with, no attention '
                          '(an asked one starts as the identity)', 'model', choices=('none', 'imagenet', TIMM))
    freeze_epochs: int = opt(0, 'fine-tuning: train only the final layer for the first N of max_epoch epochs, then '
                             'everything, the schedule starting again (warmup included)', 'model')
    backbone_lr_mult: float = opt(1.0, 'fine-tuning: the backbone learns at lr times this (e.g. 0.1), the final '
                                  'layer at lr', 'model')
    # --- export
    format: str = opt('all', 'export: onnx | torchscript | all', 'export', choices=('onnx', 'torchscript', 'all'))
    no_verify: bool = opt(False, 'export: skip the parity check against the PyTorch model', 'export')
    int8: bool = opt(False, 'export --format=onnx (or all): also write <checkpoint>.int8.onnx, quantized to 8 bits by '
                     'onnxruntime\'s static quantizer calibrated on 256 training images through the checkpoint\'s '
                     'preprocessing; refused when its top-1 on the validation split falls more than 1 point below '
                     'the float32 file\'s', 'export')
    # --- tune: the recipe search (docs/tune.md)
    search_space: str = opt('quick', 'tune: what is searched: quick (lr, weight decay, epochs, flips, augmentation) '
                            '| tricks (quick + jitter, erasing, mixing, sampler, loss, stem) | full (tricks + the '
                            'model); settings given on the command line stay fixed', 'tune',
                            choices=('quick', 'tricks', 'full'))
    n_trials: int = opt(20, 'tune: trials this process runs (0 = as many as --timeout allows)', 'tune')
    timeout: int = opt(0, 'tune: wall budget in seconds: no trial starts after it (0 = none)', 'tune')
    storage: str = opt('', 'tune: Optuna storage the study lives in, shared by processes and machines '
                       '(sqlite:///study.db, postgresql://...); empty = study.db in the tune run directory', 'tune')
    study_name: str = opt('tune', 'tune: the study in --storage; processes with the same name share it', 'tune')
    pruner: str = opt('median', 'tune: stops unpromising trials from their validation accuracy at the same share of '
                      'their schedule: median (Optuna MedianPruner) | halving (SuccessiveHalvingPruner) | none',
                      'tune', choices=('median', 'halving', 'none'))
    prune_below: float = opt(0.0, 'tune: also stop a trial whose best validation accuracy is below this once 30 % of '
                             'its epochs are done (0 = off)', 'tune')
    keep_trials: str = opt('best', 'tune: whose checkpoints (.pth) stay on disk: best (the trial best_config.json '
                           'takes; the others keep their config, metrics and logs: a trial of ResNet34 leaves '
                           '~0.5 GB) | all',
                           'tune', choices=('best', 'all'))

    given: frozenset = field(default=frozenset(), compare=False, repr=False)  # not a setting: see the docstring

    def asked(self):
        """{setting: value} of the settings that were given (what config.json keeps as `asked`, without what belongs
        to one run only: its name and the checkpoint it resumed)."""
        return {k: plain(getattr(self, k)) for k in sorted(self.given) if k not in ('run_name', 'resume')}


class UserError(ValueError):
    """A mistake the user can fix (a bad setting, a missing folder, a checkpoint of other classes): `main.py` prints
    it as one line. Anything else is a bug and keeps its traceback."""


class ConfigError(UserError):
    """A setting that does not exist or a value that does not fit its type."""


class Interrupted(Exception):
    """Training stopped on SIGTERM / SIGINT with its last.pth written (utils/train/interrupt.py); `main.py` prints
    the message (the resume command) and ends with `status`."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


def setting_fields():
    """The dataclass fields of DefaultConfig that are settings (all but `given`), in declaration order."""
    return [f for f in dataclasses.fields(DefaultConfig) if 'group' in f.metadata]


def settings():
    """(name, default, type, help, group) for every setting, in declaration order."""
    out = []
    for f in setting_fields():
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        out.append((f.name, default, f.metadata['kind'], f.metadata['help'], f.metadata['group']))
    return out


def takes_auto():
    """The settings that accept the word 'auto' beside values of their type (e.g. --lr=auto)."""
    return {f.name for f in setting_fields() if f.metadata['auto']}


def choices():
    """{name: its choices} for every setting that names one of a few values."""
    return {f.name: f.metadata['choices'] for f in setting_fields() if f.metadata['choices']}


def check_choice(name, value, allowed):
    """`value` spelled as in `allowed` (any case is accepted), or ConfigError listing `allowed` with the closest one.
    A choice like 'timm/<name>' accepts its prefix followed by any name timm has (see `timm_name`)."""
    by_lower = {c.lower(): c for c in allowed}
    text = str(value)
    if text.lower() in by_lower:
        return by_lower[text.lower()]
    for pattern in allowed:
        prefix = pattern[:-len('<name>')]
        if pattern.endswith('<name>') and text.lower().startswith(prefix):
            return prefix + timm_name(name, text[len(prefix):])
    guess = difflib.get_close_matches(text.lower(), list(by_lower), n=1, cutoff=0.6)
    hint = f'; did you mean {by_lower[guess[0]]}?' if guess else ''
    raise ConfigError(f'unknown --{flag(name)}={text!r}; choose one of: {", ".join(allowed)}{hint}')


def timm_name(name, part):
    """`part` as timm spells it when timm has a model (for --model), published weights (for --pretrained: a model
    with a tag, or without one for its default weights) or an optimizer (for --optimizer) of that name; otherwise
    ConfigError with the closest."""
    import timm.optim  # only for a timm/<name> value, so that parsing stays light otherwise
    what = {'model': 'model', 'pretrained': 'pretrained weights'}.get(name, 'optimizer')
    names = {'model': timm.list_models, 'optimizer': timm.optim.list_optimizers,
             'pretrained weights': lambda: timm.list_pretrained() + timm.list_models(pretrained=True)}[what]()
    known = {n.lower(): n for n in names}
    if part.lower() in known:
        return known[part.lower()]
    guess = difflib.get_close_matches(part.lower(), list(known), n=1, cutoff=0.6)
    hint = f'; did you mean timm/{known[guess[0]]}?' if guess else ''
    raise ConfigError(f'unknown --{flag(name)}={"timm/" + part!r}: timm has no {what} {part!r}{hint}')


def closest(key, names):
    """The valid name a mistyped key most likely meant, or None."""
    prefixed = [n for n in names if key.startswith(n + '_') or n.startswith(key + '_')]
    if prefixed:
        return max(prefixed, key=len)
    match = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
    return match[0] if match else None


_TRUE, _FALSE = {'true', '1', 'yes', 'y', 'on'}, {'false', '0', 'no', 'n', 'off', ''}


def coerce(name, value, kind, item=str):
    """Convert a command-line value to the type of the setting's default (`item`: the type of a list's items)."""
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE or text in _FALSE:
                return text in _TRUE
            raise ValueError
        if kind is list:
            if not isinstance(value, (list, tuple)):
                text = str(value).strip().strip('[]()')
                value = [v.strip().strip('\'"') for v in text.split(',') if v.strip()]
            return [coerce(name, v, item) for v in value]
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(str(value).strip()) if isinstance(value, str) else int(value)
        if kind is float:
            return float(value)
        return value if isinstance(value, str) else str(value)
    except (TypeError, ValueError):
        raise ConfigError(f'--{flag(name)}={value!r} is not a valid {kind.__name__}') from None


def flag(name):
    return name.replace('_', '-')


def parse(**kwargs):
    """The DefaultConfig of these overrides; unknown keys and ill-typed values raise ConfigError. `config=FILE`
    first applies the settings of a JSON file (any run's config.json, tune's best_config.json, or a file of
    settings) with the same checks; the other overrides go on top of it. Nothing is assigned to the result
    afterwards: what a run decides goes into its Plan."""
    layers = [('', kwargs)]
    if 'config' in kwargs:
        path, rest = kwargs['config'], {k: v for k, v in kwargs.items() if k != 'config'}
        layers = [(path, read_settings(path)), ('', rest)]
    values, given = {}, set()
    for source, layer in layers:
        try:
            values.update(coerced(layer))
        except ConfigError as e:
            raise ConfigError(f'--config={source}: {e}' if source else str(e)) from None
        given |= {key.replace('-', '_') for key in layer}
    cfg = DefaultConfig(**values, given=frozenset(given))
    cfg = dataclasses.replace(cfg, **{name: check_choice(name, getattr(cfg, name), allowed)
                                      for name, allowed in choices().items()})
    check(cfg)
    return cfg


def coerced(values):
    """`values` ({setting: value}) each coerced to its setting's type; unknown names are refused with the closest."""
    types = {name: kind for name, _, kind, _, _ in settings()}
    items = {name: type(default[0]) for name, default, kind, _, _ in settings() if kind is list and default}
    auto, out = takes_auto(), {}
    for key, value in values.items():
        name = key.replace('-', '_')
        if name not in types:
            guess = closest(name, list(types))
            hint = f'; did you mean --{flag(guess)}?' if guess else '; `python main.py help` lists the settings'
            raise ConfigError(f'unknown setting --{flag(name)}{hint}')
        if name in auto and str(value).strip().lower() == 'auto':
            out[name] = 'auto'
            continue
        try:
            out[name] = coerce(name, value, types[name], items.get(name, str))
        except ConfigError:
            if name not in auto:
                raise
            raise ConfigError(f'--{flag(name)}={value!r} is not a valid {types[name].__name__} or auto') from None
    if 'cutmix_prob' in out and 'mixup_prob' not in out:
        out['mixup_prob'] = 0.0  # the default mixing is Mixup; asking for CutMix (here) replaces it
    return out


# What a run of an earlier version recorded beside its settings in a flat config.json: never settings themselves.
RECORDS = ('pretrained_weights', 'lr_find')


def read_settings(path):
    """{setting: value} from the JSON file `path`: the `asked` part of a run's config.json ({"asked", "used"}),
    or a flat object of settings (written by hand, or a config.json / best_config.json of an earlier version).
    A file the toolkit wrote may name settings that no longer exist: they are dropped with a note. A flat file of
    a run also holds what the machine chose (its `cache`): that is decided again here."""
    try:
        with open(path) as f:
            values = json.load(f)
    except OSError as e:
        raise ConfigError(f'--config={path}: cannot read it ({e.strerror})') from None
    except ValueError as e:
        raise ConfigError(f'--config={path} is not valid JSON ({e})') from None
    if not isinstance(values, dict):
        raise ConfigError(f'--config={path} must hold one JSON object of settings, e.g. {{"lr": 0.002}}')
    if isinstance(values.get('asked'), dict) and 'used' in values:
        values, written = dict(values['asked']), True
    else:
        values = {k: v for k, v in values.items() if k not in RECORDS}
        written = len(values) >= WRITTEN_BY_A_RUN
        if written and 'cache' in values:
            values['cache'] = 'auto'
    if written:
        known = {name for name, *_ in settings()}
        gone = sorted(k for k in values if k.replace('-', '_') not in known)
        if gone:
            print(f'note: --config={path} names settings this version does not have: {", ".join(gone)} (ignored)')
        values = {k: v for k, v in values.items() if k not in gone}
    return values


WRITTEN_BY_A_RUN = 40  # a flat file with this many settings was written by a run (every setting), not by hand


def check(cfg):
    """Range checks that the types and choices alone do not catch."""
    if not 0 < cfg.val_ratio < 1:
        raise ConfigError(f'--val-ratio must be between 0 and 1, got {cfg.val_ratio}')
    if cfg.lr_find_end <= cfg.lr_find_start or cfg.lr_find_steps < 10:
        raise ConfigError(f'lr_find sweeps from --lr-find-start up to a larger --lr-find-end over at least 10 '
                          f'--lr-find-steps; got {cfg.lr_find_start} to {cfg.lr_find_end} over {cfg.lr_find_steps}')
    if not 0 <= cfg.coverage < 1:
        raise ConfigError(f'--coverage is a probability below 1, e.g. 0.95 (0 = off); got {cfg.coverage}')
    if cfg.resume == 'auto' and not cfg.run_name:
        raise ConfigError('--resume=auto finds the run by its name: give --run-name=NAME too')
    if cfg.lr == 'auto' and cfg.resume:
        raise ConfigError('--lr=auto finds the learning rate before a run starts; a resumed run keeps its own '
                          '(drop --lr, or give a number)')
    if cfg.tensorboard and importlib.util.find_spec('tensorboard') is None:
        raise ConfigError('--tensorboard needs the tensorboard package: pip install tensorboard')
    for name in ('n_trials', 'timeout', 'patience', 'checkpoint_every'):
        if getattr(cfg, name) < 0:
            raise ConfigError(f'--{flag(name)} must be 0 or more, got {getattr(cfg, name)}')
    if not cfg.n_trials and not cfg.timeout:
        raise ConfigError('--n-trials=0 runs trials until --timeout: give --timeout=SECONDS too')
    if cfg.max_epoch < 0:
        raise ConfigError(f'--max-epoch must be 0 (auto) or at least 1, got {cfg.max_epoch}')
    for name in ('batch_size', 'print_freq', 'accum_steps', 'ranger_k'):
        if getattr(cfg, name) < 1:
            raise ConfigError(f'--{flag(name)} must be at least 1, got {getattr(cfg, name)}')
    if cfg.image_size and cfg.image_size < 32:
        raise ConfigError(f'--image-size must be 0 (auto) or at least 32, got {cfg.image_size}')
    # what torch's optimizers and schedules, Ranger and the mixes would refuse later, after the run directory
    for name in ('lr', 'cutmix_alpha', 'mixup_alpha', 'lr_find_start'):
        if getattr(cfg, name) != 'auto' and getattr(cfg, name) <= 0:
            raise ConfigError(f'--{flag(name)} must be positive, got {getattr(cfg, name)}')
    for name in ('momentum', 'weight_decay'):
        if getattr(cfg, name) < 0:
            raise ConfigError(f'--{flag(name)} must be 0 or more, got {getattr(cfg, name)}')
    if not 0 < cfg.lr_decay < 1 or not 0 < cfg.ranger_alpha <= 1:
        raise ConfigError(f'--lr-decay must be in (0, 1) and --ranger-alpha in (0, 1], got {cfg.lr_decay} and '
                          f'{cfg.ranger_alpha}')
    for m in cfg.lr_milestones:
        coerce('lr_milestones', m, int)
    for w in cfg.joint_weights:
        coerce('joint_weights', w, float)
    if len(cfg.joint_weights) != 2:
        raise ConfigError(f'--joint-weights takes two numbers (ce, label_smooth), e.g. 0.3,0.7; got {cfg.joint_weights}')
    if cfg.lb_neg != 'auto' and not 0 <= cfg.lb_neg < 1:
        raise ConfigError(f'--lb-neg must be auto or a probability in [0, 1), got {cfg.lb_neg!r}')
    epochs = cfg.max_epoch or AUTO_EPOCHS[0]  # auto gives at least that many
    if not 0 <= cfg.freeze_epochs <= epochs:
        raise ConfigError(f'--freeze-epochs must be within 0..{epochs} (--max-epoch), got {cfg.freeze_epochs}')
    if cfg.freeze_epochs and cfg.freeze_backbone:
        raise ConfigError('--freeze-epochs unfreezes the backbone after N epochs, --freeze-backbone never does: '
                          'give one of them')
    if cfg.backbone_lr_mult <= 0:
        raise ConfigError(f'--backbone-lr-mult must be positive, got {cfg.backbone_lr_mult} (--freeze-backbone '
                          f'freezes it)')
    if not (0 <= cfg.cutmix_prob <= 1 and 0 <= cfg.mixup_prob <= 1 and cfg.cutmix_prob + cfg.mixup_prob <= 1):
        raise ConfigError(f'--cutmix-prob and --mixup-prob are per-batch probabilities of one mix each: both in 0..1 '
                          f'and their sum <= 1, got {cfg.cutmix_prob} + {cfg.mixup_prob}')


# --max-epoch=0 (auto): at least AUTO_EPOCHS[0] epochs and at most AUTO_EPOCHS[1], as many as show the model
# AUTO_IMAGES training images (the digits demo's 1,221 images get 15 epochs, as before). Chosen on the
# benchmark suite (docs/suite.md): a fixed 15 epochs under-trains the small sets (a few hundred images).
AUTO_IMAGES, AUTO_EPOCHS = 18000, (15, 100)


def auto_epochs(n_images):
    """The epochs --max-epoch=0 (auto) trains for on `n_images` training images."""
    return min(max(AUTO_EPOCHS[0], math.ceil(AUTO_IMAGES / max(n_images, 1))), AUTO_EPOCHS[1])


def plain(value):
    """A setting's or a record's value as JSON and a weights_only checkpoint keep it: tuples as lists."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


# --- the plan of a run: what it uses -----------------------------------------------------------------------------

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# What a run decides beyond its settings (Plan's fields besides the settings), with the value a checkpoint of an
# earlier version, which did not record it, was made with.
DECIDED = (
    ('classes', (), 'the class names, in label order'),
    ('mean', IMAGENET_MEAN, 'per-channel mean of the input normalisation (--normalize as decided)'),
    ('std', IMAGENET_STD, 'per-channel standard deviation of the input normalisation'),
    ('interpolation', 'bilinear', 'how images are resized: the published weights\' own, else bilinear'),
    ('device', 'cpu', 'the device it ran on: cuda or cpu'),
    ('split', None, 'how many training and validation images, and where the validation split came from'),
    ('lr_find', None, 'the learning-rate range test behind --lr=auto: its suggestions and sweep'),
    ('pretrained_weights', None, 'the published weights it started from: library, name, file, SHA-256'),
    ('machine_chose', (), 'the settings this machine decided (asked as auto): decided again on the next machine'),
    ('flips', (), 'per class (label order) the class a horizontally flipped training image becomes -- itself, or its '
                  'mirror partner -- or -1: never flipped (--hflip as decided)'),
    ('flip_probe', None, 'what --hflip=auto measured on the training images: per class its decision and confidence'),
    ('exported', '', 'evaluation of an exported file: its format (onnx, torchscript)'),
)
# Settings added after checkpoints were written: the value such a checkpoint was trained with, when it lacks the key.
LEGACY = {'stem': 'imagenet'}
# What the stored weights and their preprocessing were made with: evaluation and --resume take them from the
# checkpoint, and a command-line value that contradicts one stops (see `reapply`).
ARCHITECTURE = ('model', 'stem', 'attention', 'image_size', 'normalize')
# Settings the machine decides when they are auto (--cache, --num-workers, --amp, --channels-last): a run records
# what they became, and a rerun or a resume on another machine decides them again.
MACHINE = ('cache', 'num_workers', 'amp', 'channels_last')


def _plan_class():
    settings_fields = [(f.name, f.type, dataclasses.field(default=f.default, default_factory=f.default_factory,
                                                           metadata=f.metadata)) for f in setting_fields()]
    decided = [(name, object, dataclasses.field(default=default, metadata={'help': text}))
               for name, default, text in DECIDED]

    def to_dict(self):
        """The plan as plain values (config.json's `used`, the checkpoints' `plan`)."""
        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def from_dict(cls, values):
        """A Plan from a stored one; names it does not know are dropped (a later version's), names it lacks take
        their default (an earlier version's)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: tuple(v) if k in ('classes', 'mean', 'std', 'machine_chose', 'flips') else v
                  for k, v in values.items() if k in known}
        return cls(**values)

    def of(cls, cfg):
        """The plan of a run before anything is decided: the settings as asked, 'auto' kept."""
        return cls(**{name: getattr(cfg, name) for name, *_ in settings()})

    return dataclasses.make_dataclass(
        'Plan', settings_fields + decided, frozen=True,
        namespace={'to_dict': to_dict, 'from_dict': classmethod(from_dict), 'of': classmethod(of),
                   '__doc__': 'What a run uses: every setting with its auto decided, and the decisions of DECIDED. '
                              'Made once per run (utils/train/plan.py, or from a checkpoint for evaluation), '
                              'frozen: a later stage reads it and never changes it.'})


Plan = _plan_class()
Plan.__module__, Plan.__qualname__ = __name__, 'Plan'  # pickled by name, as a class written here would be


def stored_plan(ckpt):
    """The Plan a checkpoint was trained with: its `plan`, or for a checkpoint of an earlier version, its settings
    (`config`, autos already decided) with the statistics it stored (`normalization`) and its classes."""
    if isinstance(ckpt.get('plan'), dict):
        return Plan.from_dict(ckpt['plan'])
    values = {**LEGACY, **ckpt.get('config', {})}
    stats = ckpt.get('normalization')
    if stats:
        values.update(mean=stats['mean'], std=stats['std'], normalize='dataset')
    if ckpt.get('classes'):
        values['classes'] = ckpt['classes']
    return Plan.from_dict(values)


def asked_of(ckpt):
    """The settings a checkpoint's run was asked for (its `asked`; for an earlier version's checkpoint, its stored
    settings), as parse takes them."""
    if isinstance(ckpt.get('asked'), dict):
        return dict(ckpt['asked'])
    known = {name for name, *_ in settings()}
    return {k: v for k, v in ckpt.get('config', {}).items() if k in known and k not in ('run_name', 'resume')}


def reapply(stored, cfg, path):
    """The plan `stored` (a checkpoint's) with what `cfg` gives on top, for evaluating or resuming it: a given
    setting replaces the stored one, except those of ARCHITECTURE, which the weights were made with -- a given
    value that contradicts one stops with a line naming both --, and MACHINE, which come from `cfg` (given or
    not: this machine decides them)."""
    for name in ARCHITECTURE:
        asked, used = getattr(cfg, name), getattr(stored, name)
        same = str(asked).lower() == str(used).lower() or asked in ('auto', 0)
        if name in cfg.given and not same:
            raise UserError(f'{path} was trained with --{flag(name)}={used}; --{flag(name)}={asked} contradicts it '
                            f'(the architecture and the preprocessing come from the checkpoint): drop it')
    values = {k: getattr(cfg, k) for k in cfg.given if k not in ARCHITECTURE}
    values.update({k: getattr(cfg, k) for k in MACHINE})
    return dataclasses.replace(stored, **values, machine_chose=())


def for_evaluation(stored, cfg, path):
    """The plan an evaluation command runs a checkpoint (or an exported file) `path` with: the plan `stored` it was
    trained with, the settings `cfg` gives on top (`reapply`: the architecture and preprocessing stay), the device
    of this machine, and no cache (one pass over the images: a cache would decode them, and the training set,
    first)."""
    plan = reapply(stored, cfg, path)
    return dataclasses.replace(plan, cache='none', device=str(select_device(plan)))


def select_device(cfg):
    """CUDA when asked for and present; otherwise the CPU (with one warning when CUDA was asked for)."""
    import torch
    if cfg.use_gpu and torch.cuda.is_available():
        return torch.device('cuda')
    if cfg.use_gpu:
        print('warning: --use-gpu given but CUDA is not available; running on the CPU')
    return torch.device('cpu')


def on_cuda(plan):
    """Whether a plan runs on CUDA (its decided device)."""
    return str(plan.device).startswith('cuda')
