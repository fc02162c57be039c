"""The layout keeps its architecture: every import points from a later layer to an earlier one, and no module
imports itself back through others (function-level imports count too)."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the layers, earliest first; a module may import its own layer or an earlier one
LAYERS = [('config', 'utils.io'), ('data', 'models'), ('utils.evaluate', 'utils.dashboard'), ('utils.train',),
          ('utils.curate',), ('main',)]


def project_modules():
    """{dotted module name: path} of main.py, config.py and the packages data/, models/, utils/."""
    found = {'main': 'main.py', 'config': 'config.py'}
    for package in ('data', 'models', 'utils'):
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith('.py'):
                    rel = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].replace(os.sep, '.')
                    found[rel.removesuffix('.__init__')] = rel.replace('.', os.sep) + '.py'
    return found


def imports(path, module, known):
    """The project modules that `module` imports anywhere in its file (`from a import b` counts a.b when it is a
    module, else a)."""
    tree = ast.parse(open(os.path.join(ROOT, path)).read())
    package = module if path.endswith('__init__.py') else module.rpartition('.')[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                parent = package.split('.')[:len(package.split('.')) - node.level + 1]
                base = '.'.join(parent + ([base] if base else []))
            names = [f'{base}.{a.name}' if f'{base}.{a.name}' in known else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition('.')[0]
            if name and name != module:
                out.add(name)
    return out


def layer(module):
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + '.') for p in prefixes):
            return rank
    return None


def graph():
    known = project_modules()
    return {m: imports(p, m, known) for m, p in known.items()}


def test_every_module_belongs_to_a_layer():
    assert [m for m in graph() if layer(m) is None and m not in ('utils', 'data', 'models')] == []


def test_imports_point_to_the_same_or_an_earlier_layer():
    upward = sorted(f'{a} -> {b}' for a, targets in graph().items() for b in targets
                    if layer(a) is not None and layer(b) is not None and layer(b) > layer(a))
    assert upward == []


def test_data_and_models_import_nothing_of_utils_but_io():
    reach = sorted(f'{a} -> {b}' for a, targets in graph().items() if a.split('.')[0] in ('data', 'models')
                   for b in targets if b.startswith('utils') and b != 'utils.io')
    assert reach == []


def test_no_import_cycles():
    edges, cycles = graph(), []
    state = {}

    def visit(node, stack):
        state[node] = 'open'
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 'open':
                cycles.append(' -> '.join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 'done'

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_utils_holds_packages_and_io_only():
    entries = sorted(e for e in os.listdir(os.path.join(ROOT, 'utils')) if not e.startswith(('.', '__pycache__')))
    modules = [e for e in entries if e.endswith('.py') and e not in ('__init__.py', 'io.py')]
    packages = [e for e in entries if os.path.isdir(os.path.join(ROOT, 'utils', e))]
    assert modules == [] and packages == ['curate', 'dashboard', 'evaluate', 'train']
    assert all(os.path.isfile(os.path.join(ROOT, 'utils', p, '__init__.py')) for p in packages)
