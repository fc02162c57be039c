"""Sends windows to a visdom server and records every call in the run directory.

Each call is written to `<run>/visdom.log` in visdom's own log format (what `Visdom.replay_log` reads, so
`python main.py replay --run=<run>` pushes it to a server later), whether or not a server answers. Without a
server, or when it goes away mid-run: one warning, then calls are only recorded -- no tracebacks, no retries.
"""
import logging

LOG_NAME = 'visdom.log'
TIMEOUT = (2, 10)  # seconds to connect, to answer: a hung server costs one wait, then we stop sending


def client_class():
    """visdom.Visdom with request timeouts and without its notices ("Setting up a new session...")."""
    import visdom
    logging.getLogger('visdom').setLevel(logging.ERROR)

    class Client(visdom.Visdom):
        """visdom's client with a timeout on every request; errors raise (raise_exceptions) instead of printing."""

        def _handle_post(self, url, data=None):
            return self.session.post(url, data=data, timeout=TIMEOUT).text

        def win_exists(self, win, env=None):
            # every window is created before it is appended to, so skip the extra request per append
            # (the offline client and replay_log skip it too, so the log replays exactly as sent)
            return True

    return Client


def server_up(server, port, timeout=1.0):
    """True when a visdom server answers at server:port (one short HTTP request, no traceback when none does)."""
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(f'{server}:{port}', timeout=timeout):
            return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


class Visualizer:
    """visdom calls (line, bar, heatmap, images, text) into the environment `env`, recorded in `log_path`."""

    def __init__(self, env='default', server='http://127.0.0.1', port=8097, enabled=True, log_path=None):
        self.env, self.vis, self.started, self.log_path = env, None, set(), log_path
        self.address = f'{server}:{port}'
        if not enabled:
            return
        client = client_class()
        options = dict(env=env, use_incoming_socket=False, raise_exceptions=True, log_to_filename=log_path)
        try:
            self.vis = client(server=server, port=port, **options)
        except ConnectionError:
            print(f'warning: no visdom server at {self.address} ({self._fallback()}); training goes on')
            self.vis = client(offline=True, **options) if log_path else None

    def _fallback(self):
        if not self.log_path:
            return 'nothing is plotted; start one with `python main.py dashboard`'
        return f'windows are recorded in {self.log_path}; `python main.py replay` shows them later'

    @property
    def active(self):
        """True while calls reach a server or the log file."""
        return self.vis is not None

    @property
    def connected(self):
        return self.vis is not None and not self.vis.offline

    def call(self, method, *args, **kwargs):
        """visdom's `method` in our env; when the server stops answering, warn once and only record from then on."""
        if self.vis is None:
            return
        try:
            getattr(self.vis, method)(*args, env=self.env, **kwargs)
        except ConnectionError:  # the message was logged before the send failed, so the record stays complete
            print(f'warning: the visdom server at {self.address} stopped answering ({self._fallback()})')
            self.vis.offline = True
            if not self.log_path:
                self.vis = None

    def plot(self, name, y, x, xlabel='epoch', legend=None, **opts):
        """Append point(s) y at x to the line window `name`; the first call of a run replaces an old window.
        With `legend`, y is one value per trace; `opts` are visdom's (e.g. ytype='log')."""
        import numpy as np
        first = name not in self.started
        self.started.add(name)
        y = np.atleast_2d(np.asarray(y, dtype=float))
        opts = dict(title=name, xlabel=xlabel, ylabel=name, **({'legend': legend} if legend else {}), **opts)
        self.call('line', Y=y, X=np.full_like(y, x), win=name, update=None if first else 'append',
                  opts=opts if first else None)

    def text(self, text, win='log', title=None, **opts):
        self.call('text', text, win=win, opts=dict(title=title or win, **opts))

    def heatmap(self, name, matrix, rownames, columnnames, title=None):
        """Draw `matrix` (rows x columns) as a heatmap in the window `name`, replacing an older one."""
        # visdom draws row 0 at the bottom: flip so the first class is on top, as in the printed matrix
        self.call('heatmap', X=[list(map(float, r)) for r in matrix][::-1], win=name,
                  opts=dict(title=title or name, rownames=list(map(str, rownames))[::-1],
                            columnnames=list(map(str, columnnames))))

    def bar(self, name, values, rownames, legend=None):
        """A grouped bar chart in window `name`: one group per row name, one bar per legend entry (values is
        rows x legend), replacing an older window of that name."""
        import numpy as np
        values = np.asarray(values, dtype=float).reshape(len(rownames), -1)
        if values.size < 2:  # visdom cannot draw a single bar
            return
        opts = dict(title=name, rownames=list(rownames))
        if values.shape[1] > 1 and len(rownames) > 1:
            opts['legend'] = list(legend)
        elif values.shape[1] > 1:  # visdom refuses row names on one row: the legend names the bars
            opts = dict(title=f'{name}: {rownames[0]}', legend=list(legend))
        self.call('bar', X=values, win=name, opts=opts)
