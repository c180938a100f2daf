"""README.md as a newcomer meets it on a fresh clone: its shape, its tables, its commands.

Every `python ...` command README shows (in code blocks and in inline code) must name a
program that exists and flags that program defines, and name files that are in the
repository. The cheap ones (no training) are run as written, after a short real run
stands in for the first command's `runs/latest`.
"""

import concurrent.futures
import glob
import json
import os
import re
import shlex
import subprocess
import sys

import pytest
import results_table

from graph_mnist import runs
from graph_mnist import training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, 'README.md'), encoding='utf-8').read()
DOCS = {path: open(path, encoding='utf-8').read()
        for path in sorted(glob.glob(os.path.join(ROOT, 'docs', '*.md')))}

# run as written (seconds each); the others train for minutes and are only checked
CHEAP = ('graph_mnist.data', 'graph_mnist.export', 'graph_mnist.predict',
         'graph_mnist.dashboard', 'scripts/results_table.py', 'scripts/check_export.py')


def commands():
    """Every python command of README and the docs pages: code-block lines and inline
    code spans."""
    found = []
    for text in (README, *DOCS.values()):
        for line in text.splitlines():
            line = line.strip().removeprefix('$ ')
            if line.startswith('python '):
                found.append(line)
        for span in re.findall(r'`(python [^`]+)`', text):
            found.append(' '.join(span.split()))
    result = []
    for command in found:
        command = command.split('  #')[0].strip()
        for part in command.split(' && '):
            if '...' in part:  # a sketch ("python -m graph_mnist.cluster ..."), not a command
                continue
            if part.startswith('python ') and part not in result:
                result.append(part)
    return result


def program(argv):
    """('graph_mnist.train' or 'scripts/x.py', its arguments) of a python command."""
    if argv[1] == '-m':
        return argv[2], argv[3:]
    return argv[1], argv[2:]


def test_readme_opens_with_title_paragraph_and_the_command_and_ends_with_the_tests_one():
    title, paragraph, block = README.split('\n\n')[:3]
    assert title == '# graph_mnist'
    assert not paragraph.startswith(('#', '`', '|')) and len(paragraph.split()) > 30
    lines = block.splitlines()
    assert lines[0] == '```sh' and lines[-1] == '```' and len(lines) == 3
    assert lines[1].startswith('python -m pip install -e . && python -m graph_mnist.train')
    developers = README.split('\n## For developers\n')[1]
    test = developers.split('```sh\n')[1].split('\n```')[0]
    assert ' && python -m ruff check . && python -m pytest -q' in test  # the linter first
    ci = open(os.path.join(ROOT, '.ci', 'run')).read().splitlines()
    assert ci[-1] == test, 'the test command of README is exactly what CI runs'


def test_the_network_tables_are_the_ones_models_py_prints():
    from graph_mnist import talk
    page = DOCS[os.path.join(ROOT, 'docs', 'networks.md')]
    assert results_table.networks_table(talk.TALK) in page
    assert results_table.networks_table(talk.BEYOND, results_table.BEYOND_SOURCE) in page


def test_readme_follow_the_talk_table_is_what_the_comparison_prints():
    """README's table is the committed comparison's, rendered by compare_with_talk from
    its results and the talk's words in talk.NETWORKS: one row per step of the talk,
    each with its command and a result over 3 seeds."""
    import compare_with_talk

    from graph_mnist import talk
    with open(os.path.join(ROOT, 'results', 'talk_comparison', 'comparison.json')) as f:
        rows = [r for r in json.load(f)['rows'] if r['model'] in talk.TALK]
    assert [r['model'] for r in rows] == talk.TALK and len(rows) == 8
    assert all(r['seeds'] == 3 for r in rows)
    table = compare_with_talk.follow_the_talk(rows)
    assert table in README
    assert compare_with_talk.follow_note(rows) in README
    with open(os.path.join(ROOT, 'results', 'talk_comparison', 'comparison.md')) as f:
        assert table in f.read(), 'README and the committed comparison.md differ'


def test_readme_is_short_and_links_every_docs_page():
    assert len(README.encode()) <= 15 * 1024
    linked = set(re.findall(r'\]\((docs/[^)#]+)', README))
    pages = {os.path.relpath(p, ROOT) for p in DOCS}
    assert pages <= linked, f'not linked from README: {sorted(pages - linked)}'
    for text in (README, *DOCS.values()):
        assert not re.search(r'\bissue \d|last session', text, re.I)


def test_every_docs_page_links_back_and_says_where_it_comes_from_in_one_line():
    # the page's sources (the talk, its code, our measurements: where, when) once, at the
    # top, rather than in every paragraph
    for path, text in DOCS.items():
        head = text.split('\n')[:6]
        assert '[README](../README.md)' in head, path
        sources = [line for line in head if line.startswith('*Sources:* ')]
        assert len(sources) == 1 and len(sources[0]) <= 400, path


def test_readme_and_docs_refer_to_nothing_outside_the_repository():
    for path, text in (('README.md', README), *DOCS.items()):
        assert 'shared/' not in text and 'REFERENCE.md' not in text, path
        for link in re.findall(r'\]\(([^)#]+)', text):
            if not link.startswith('http'):
                here = ROOT if path == 'README.md' else os.path.dirname(path)
                assert os.path.exists(os.path.join(here, link)), f'{path}: {link}'


def helpfull(name):
    """A process printing the program's --helpfull (read for the flags it defines)."""
    argv = [sys.executable] + (['-m', name] if name.startswith('graph_mnist') else
                               [os.path.join(ROOT, name)])
    return subprocess.Popen(argv + ['--helpfull'], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.mark.slow  # starts every program README names (--helpfull)
def test_every_readme_command_names_a_real_program_flags_and_files():
    pythons = [shlex.split(c) for c in commands()
               if not c.startswith(('python -m pip', 'python -m pytest', 'python -m ruff'))]
    names = sorted({program(argv)[0] for argv in pythons})
    assert 'graph_mnist.train' in names and 'scripts/compare_with_talk.py' in names
    helps = {name: helpfull(name) for name in names}  # all at once: both cores
    flags = {}
    for name, process in helps.items():
        out, _ = process.communicate(timeout=300)
        flags[name] = set(re.findall(r'^\s+--(?:\[no\])?(\w+):', out, re.M))
        assert flags[name], f'{name} --helpfull:\n{out}'
    for argv in pythons:
        name, args = program(argv)
        if '--' in args:  # the launchers pass what follows -- to graph_mnist.train
            cut = args.index('--')
            args, passed = args[:cut], args[cut + 1:]
            assert name in ('graph_mnist.cluster', 'scripts/rehearse_kubernetes.py'), \
                f'{" ".join(argv)}: -- is a launcher\'s'
            pythons.append([sys.executable, '-m', 'graph_mnist.train', *passed])
            assert 'graph_mnist.train' in flags
        for arg in args:
            if arg.startswith('--'):
                flag = arg[2:].split('=')[0]
                assert flag in flags[name] or flag.removeprefix('no') in flags[name], \
                    f'{" ".join(argv)}: {name} has no --{flag}'
            else:  # a file of the repository
                assert glob.glob(os.path.join(ROOT, arg)), f'{" ".join(argv)}: no {arg}'
        for path in (a.split('=', 1)[1] for a in args if a.startswith('--') and '=' in a):
            if path.startswith(('results/', 'tests/')):
                assert glob.glob(os.path.join(ROOT, path)), f'{" ".join(argv)}: no {path}'


@pytest.fixture
def clone_after_first_command(tmp_path, mnist_dir, monkeypatch):
    """A directory that looks like a fresh clone after README's first command: the
    repository's committed folders, and runs/latest pointing to a (short) real run."""
    from graph_mnist import data
    for folder in ('results', 'tests', 'scripts'):
        os.symlink(os.path.join(ROOT, folder), tmp_path / folder)
    monkeypatch.chdir(tmp_path)
    workdir = runs.prepare_workdir(None, 'conv_dropout')  # and runs/latest, as main does
    config = training.Config('conv_dropout', iterations=30, eval_every=30, log_every=10,
                             vis='none')
    training.train(data.load(mnist_dir, log=lambda m: None), config, workdir)
    assert os.path.realpath('runs/latest') == os.path.realpath(workdir)
    return tmp_path


def test_cheap_readme_commands_run_as_written(clone_after_first_command):
    cwd = clone_after_first_command

    def run_all(chain):  # in README's order: export before predict and the export check
        for command in chain:
            argv = shlex.split(command)
            expanded = [sys.executable]
            for arg in argv[1:]:
                expanded += sorted(glob.glob(str(cwd / arg))) if '*' in arg else [arg]
            result = subprocess.run(expanded, cwd=cwd, capture_output=True, text=True,
                                    timeout=300)
            assert result.returncode == 0, f'{command}\n{result.stderr}'
            assert 'Traceback' not in result.stderr

    cheap = [c for c in commands() if program(shlex.split(c))[0] in CHEAP]
    assert sorted({program(shlex.split(c))[0] for c in cheap}) == sorted(CHEAP)
    exported = [c for c in cheap if '--export_dir' in c]
    others = [c for c in cheap if c not in exported]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # two cores, two chains
        for done in [pool.submit(run_all, exported), pool.submit(run_all, others)]:
            done.result()
