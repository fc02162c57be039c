"""Streams training curves to a visdom server; without one, one warning and training goes on."""
import urllib.error
import urllib.request


def server_up(server, port, timeout=1.0):
    """True when a visdom server answers at server:port (checked with a plain HTTP request, so a missing
    server costs one short timeout and no traceback)."""
    try:
        with urllib.request.urlopen(f'{server}:{port}', timeout=timeout):
            return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


class Visualizer:
    """Line plots keyed by name, one window each, in the visdom environment `env`."""

    def __init__(self, env='default', server='http://127.0.0.1', port=8097, enabled=True):
        self.env, self.vis, self.started = env, None, set()
        if not enabled:
            return
        if not server_up(server, port):
            print(f'warning: no visdom server at {server}:{port}; curves are not plotted '
                  f'(start one with `python -m visdom.server`), training goes on')
            return
        import visdom
        self.vis = visdom.Visdom(server=server, port=port, env=env, use_incoming_socket=False,
                                 raise_exceptions=False)

    @property
    def active(self):
        return self.vis is not None

    def plot(self, name, y, x, xlabel='epoch'):
        """Append point (x, y) to the window `name`; the first point of a run replaces an old window."""
        if not self.active:
            return
        first = name not in self.started
        self.started.add(name)
        self.vis.line(Y=[y], X=[x], win=name, update=None if first else 'append',
                      opts=dict(title=name, xlabel=xlabel, ylabel=name))

    def text(self, text, win='log'):
        if self.active:
            self.vis.text(text, win=win, env=self.env)

    def heatmap(self, name, matrix, rownames, columnnames, title=None):
        """Draw `matrix` (rows x columns) as a heatmap in the window `name`, replacing an older one."""
        if not self.active:
            return
        # visdom draws row 0 at the bottom: flip so the first class is on top, as in the printed matrix
        self.vis.heatmap(X=[list(map(float, r)) for r in matrix][::-1], win=name,
                         opts=dict(title=title or name, rownames=list(map(str, rownames))[::-1],
                                   columnnames=list(map(str, columnnames))))
    def bar(self, name, values, rownames, legend=None):
        """A grouped bar chart in window `name`: one group per row name, one bar per legend entry (values is
        rows x legend), replacing an older window of that name."""
        if not self.active:
            return
        import numpy as np
        values = np.asarray(values, dtype=float).reshape(len(rownames), -1)
        if values.size < 2:  # visdom cannot draw a single bar
            return
        opts = dict(title=name, rownames=list(rownames))
        if values.shape[1] > 1 and len(rownames) > 1:
            opts['legend'] = list(legend)
        elif values.shape[1] > 1:  # visdom refuses row names on one row: the legend names the bars
            opts = dict(title=f'{name}: {rownames[0]}', legend=list(legend))
        self.vis.bar(X=values, win=name, opts=opts)
