"""`python main.py replay --run=<dir>`: push a run's recorded dashboard to a visdom server."""
import json
import os
import tempfile

from config import UserError
from utils.dashboard.client import LOG_NAME, client_class


def read_log(path, env=None):
    """The (endpoint, message) calls of a visdom log; with `env`, every call is moved to that env."""
    calls = []
    with open(path) as f:
        for line in f:
            if line.strip():
                endpoint, msg = json.loads(line)
                if env:
                    msg['eid'] = env
                calls.append((endpoint, msg))
    return calls


def replay_run(run, cfg):
    """Send every call recorded in <run>/visdom.log to cfg.vis_server:cfg.vis_port (into --env when given,
    else into the env the run used); returns the number of calls. With --tensorboard, write the run's TensorBoard
    events from its metrics.jsonl instead (board.write_run)."""
    if not run:
        raise UserError('give the run directory to replay with --run=checkpoints/<run>')
    if cfg.tensorboard:
        return replay_to_tensorboard(run)
    path = run if os.path.isfile(run) else os.path.join(run, LOG_NAME)
    if not os.path.isfile(path):
        raise UserError(f'{path} does not exist: a run records its dashboard there unless trained with --vis=false')
    env = cfg.env if 'env' in getattr(cfg, 'given', ()) else None
    calls = read_log(path, env)
    try:
        vis = client_class()(server=cfg.vis_server, port=cfg.vis_port, use_incoming_socket=False,
                            raise_exceptions=True)
    except ConnectionError:
        raise UserError(f'no visdom server at {cfg.vis_server}:{cfg.vis_port}: start one with '
                        f'`python main.py dashboard` (or give --vis-port)') from None
    # replay_log is visdom's own reader; a rewritten copy carries the --env override
    with tempfile.NamedTemporaryFile('w', suffix='.log', delete=False) as f:
        f.writelines(json.dumps(call) + '\n' for call in calls)
    try:
        vis.replay_log(f.name)
    finally:
        os.remove(f.name)
    envs = sorted({msg.get('eid') or 'main' for _, msg in calls})
    print(f'replayed {len(calls)} dashboard calls from {path} into '
          + ', '.join(f'{cfg.vis_server}:{cfg.vis_port}/env/{e}' for e in envs))
    return len(calls)


def replay_to_tensorboard(run):
    """TensorBoard event files for the run folder `run` from its metrics.jsonl and lr.csv; refused when it has some."""
    from utils.dashboard.board import has_events, write_run
    if not os.path.isfile(os.path.join(run, 'metrics.jsonl')):
        raise UserError(f'{run} is not a run folder with a finished epoch (no metrics.jsonl): give '
                        f'--run=checkpoints/<run>')
    if has_events(run):
        raise UserError(f'{run} already has TensorBoard event files: tensorboard --logdir={run} shows them')
    epochs = write_run(run)
    print(f'wrote TensorBoard events of {epochs} epochs into {run}: tensorboard --logdir={run}')
    return epochs
