"""The shape of the code, as facts anyone can check: who imports whom, no module handed
to another, no private name used across modules, no file too long to read, no path
hacks in the tests. Read from the source with `ast`; nothing is imported or run."""

import ast
import glob
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, 'graph_mnist')

# module: what it must never import (who may use whom, as docs/layout.md draws it)
NEVER = {
    'data': {'*'},  # numpy and the standard library (and cli, as a command of its own)
    'models': {'*'},  # the networks alone: TensorFlow, nothing of ours
    'talk': {'data', 'training', 'training_graph', 'graph_loop', 'train', 'dashboard',
             'distributed', 'runs', 'serving'},
    'training_graph': {'data', 'training', 'train', 'dashboard', 'distributed', 'runs',
                       'serving'},
    'dashboard': {'training', 'train', 'models', 'distributed'},
    'animation': {'*'},  # numpy frames in, files out
    'pictures': {'training', 'train', 'distributed', 'serving', 'dashboard'},
    'training': {'train', 'distributed', 'cluster', 'serve', 'serving'},
    'bookkeeping': {'training', 'train', 'distributed', 'cluster', 'serving', 'data'},
    'distributed': {'train', 'cluster'},
    'predict': {'models', 'training', 'train'},
    'serving': {'models', 'training', 'train', 'distributed'},
    'styles': {'training', 'train', 'distributed', 'serving'},
}
ENTRY_POINTS = {'train', 'serve', 'cluster'}  # run as __main__: nothing imports them


def modules():
    """{dotted name under graph_mnist: path} of every module of the package."""
    found = {}
    for path in glob.glob(os.path.join(PACKAGE, '**', '*.py'), recursive=True):
        name = os.path.relpath(path, PACKAGE)[:-3].replace(os.sep, '.')
        found[name.removesuffix('.__init__')] = path
    return found


def our_imports(path):
    """The graph_mnist modules a file imports (dotted under graph_mnist), anywhere in it."""
    tree = ast.parse(open(path, encoding='utf-8').read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and \
                node.module.startswith('graph_mnist'):
            base = node.module.removeprefix('graph_mnist').lstrip('.')
            for alias in node.names:
                found.add(f'{base}.{alias.name}'.lstrip('.') if base else alias.name)
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix('graph_mnist.') for a in node.names
                      if a.name.startswith('graph_mnist.')}
    known = modules()
    # `from graph_mnist.serving.errors import ServingError` names a module's member
    return {name if name in known else name.rpartition('.')[0] for name in found} & set(known)


def test_no_module_imports_what_it_must_not():
    for name, path in modules().items():
        top = name.split('.')[0]
        imported = {m.split('.')[0] for m in our_imports(path)} - {top}
        forbidden = NEVER.get(top, set())
        if '*' in forbidden:
            assert not imported - {'errors', 'files', 'cli'}, f'{name} imports {imported}'
        assert not imported & forbidden, f'{name} imports {imported & forbidden}'
        assert not imported & ENTRY_POINTS, f'{name} imports an entry point'


def test_the_package_imports_form_no_circle():
    graph = {name: our_imports(path) - {name} for name, path in modules().items()}
    state = {}

    def visit(name, trail):
        if state.get(name) == 'done':
            return
        assert state.get(name) != 'open', 'import circle: ' + ' -> '.join(trail + [name])
        state[name] = 'open'
        for other in graph[name]:
            visit(other, trail + [name])
        state[name] = 'done'
    for name in graph:
        visit(name, [])


def test_the_package_never_imports_scripts_or_tests():
    for name, path in modules().items():
        tree = ast.parse(open(path, encoding='utf-8').read())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ''] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split('.')[0] in ('scripts', 'tests', 'conftest') or
                           n.startswith('bench') for n in names), (name, names)


def python_files():
    return [p for p in glob.glob(os.path.join(ROOT, '**', '*.py'), recursive=True)
            if '/build/' not in p and '.egg' not in p]


def test_no_module_is_passed_around_and_no_private_name_crosses_modules():
    for path in python_files():
        tree = ast.parse(open(path, encoding='utf-8').read())
        imported = {alias.asname or alias.name for node in ast.walk(tree)
                    if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
        for node in ast.walk(tree):
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute):
                assert not (node.value.attr == 'modules' and
                            getattr(node.value.value, 'id', None) == 'sys'), \
                    f'{path}:{node.lineno}: sys.modules[...] hands a module around'
            if isinstance(node, ast.arg):
                assert not node.arg.endswith('_module'), f'{path}:{node.lineno}: {node.arg}'
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                    node.value.id in imported and node.attr.startswith('_') and \
                    not node.attr.startswith('__') and node.value.id not in ('os', 'sys'):
                pytest.fail(f'{path}:{node.lineno}: {node.value.id}.{node.attr} is private '
                            'to its module')
        for node in ast.walk(tree):
            if isinstance(node, (ast.ImportFrom)):
                assert not any(a.name.startswith('_') for a in node.names), \
                    f'{path}:{node.lineno}: imports a private name'


def lines(path):
    with open(path, encoding='utf-8') as f:
        return sum(1 for _ in f)


def test_no_file_of_the_package_is_too_long_to_read():
    long = {os.path.relpath(p, ROOT): lines(p) for p in modules().values()
            if lines(p) > 450}
    assert not long, long
    assert lines(os.path.join(ROOT, 'scripts', 'benchmark.py')) < 400


def test_tests_and_scripts_change_no_import_path():
    for path in python_files():
        source = open(path, encoding='utf-8').read()
        if path == os.path.abspath(__file__):
            continue
        assert 'sys.path.insert' not in source and 'sys.path.append' not in source, path
