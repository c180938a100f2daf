"""The notebooks, executed end to end in a real Jupyter kernel with small parameters, and
the kernel's stop button during training."""

import glob
import json
import os
import time

import pytest
import run_notebooks

from graph_mnist import runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, 'notebooks', '*.ipynb')))


def outputs(notebook):
    return [(cell, output) for cell in notebook['cells'] if cell['cell_type'] == 'code'
            for output in cell.get('outputs', [])]


def test_there_are_notebooks_and_each_has_a_parameters_cell_with_iterations():
    assert [os.path.basename(p) for p in NOTEBOOKS] == ['deferred_execution.ipynb',
                                                        'talk.ipynb', 'today.ipynb']
    for path in NOTEBOOKS:
        cells = json.load(open(path))['cells']
        parameters = [c for c in cells if 'parameters' in c['metadata'].get('tags', [])]
        assert len(parameters) == 1 and 'iterations =' in ''.join(parameters[0]['source'])


@pytest.mark.parametrize('path', NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_with_small_parameters(path, tmp_path, mnist_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the trainings write their runs here
    output = str(tmp_path / 'out.ipynb')
    run_notebooks.execute(path, output, iterations=20, data_dir=mnist_dir)
    executed = json.load(open(output))
    found = outputs(executed)
    assert not [o for _, o in found if o['output_type'] == 'error']
    text = ''.join(''.join(o.get('text', '')) + ''.join(o.get('data', {}).get('text/plain', ''))
                   for _, o in found)
    assert 'oneDNN' not in text and 'is deprecated' not in text  # a quiet cell
    if path.endswith('talk.ipynb'):
        trainings = [c for c in executed['cells'] if c['cell_type'] == 'code'
                     and 'notebook.run(' in ''.join(c['source'])]
        assert len(trainings) == 8  # softmax, then each step of the talk
        for cell in trainings:  # each shows the dashboard in its output, and its result
            kinds = [o for o in cell['outputs'] if 'image/png' in o.get('data', {})]
            assert len(kinds) == 1, ''.join(cell['source'])
        assert text.count('final test accuracy') == 8
        assert 'We get to 99.3%.")' not in text  # 20 steps are not judged by the talk's words
        assert text.count('# the network, graph_mnist/models.py') == 8  # each step's code ...
        assert text.count('# what changed in the code from') == 7  # ... and its diff
        assert 'step 19: test accuracy' in text  # the hand-written loop
        assert len(glob.glob(str(tmp_path / 'runs' / '*-*' / runs.HISTORY))) == 8  # + latest
        pictures = [c for c in executed['cells'] if c['cell_type'] == 'code'
                    and 'notebook.curves(' in ''.join(c['source'])]
        assert len(pictures) == 6 and all(  # each point of the talk shown as a picture
            any('image/png' in o.get('data', {}) for o in c['outputs']) for c in pictures)
        assert 'installed graph_mnist' not in text  # the install cell: a no-op here
        assert 'graph_mnist from ' + os.path.join(ROOT, 'graph_mnist') in text
    elif path.endswith('today.ipynb'):  # one network, three styles
        assert "tf.function with the talk's Adam against the Session, largest difference: 0.0" \
            in text
        assert text.count(': final test accuracy') == 6  # 3 styles, twice (and the speed table)
        assert 'function against keras' in text and 'x the graph' in text
        assert any('image/png' in o.get('data', {}) for _, o in found)
    else:
        assert text.count('tracing, for a shape') == 2  # once per shape, not per call
        for chapter in ('3. The state lives in the Session.', '6. TensorFlow rewrites the',
                        '7. What graphs cost', '8. The loop moved into the graph.',
                        "9. Today's answer"):  # the whole lesson, in the order of its ideas
            assert chapter in text, chapter
        assert 'Matrix size-incompatible' in text and 'readers' in text
        assert "Tensor(\"Ylogits:0\", shape=(None, 10), dtype=float32)" in text
        assert 'You must feed a value for placeholder tensor' in text
        assert 'trainable parameters: 7,850' in text
        assert 'step 19: test accuracy' in text


def test_committed_notebooks_carry_the_outputs_of_a_full_run():
    """They read on a repository page without running, and stay small."""
    for path in NOTEBOOKS:
        notebook = json.load(open(path))
        assert os.path.getsize(path) < 4_000_000
        code = [c for c in notebook['cells'] if c['cell_type'] == 'code']
        assert all(c.get('execution_count') for c in code), path
        assert not [o for _, o in outputs(notebook) if o['output_type'] == 'error']
        parameters = notebook['cells'][[i for i, c in enumerate(notebook['cells']) if
                                        'parameters' in c['metadata'].get('tags', [])][0] + 1]
        if path.endswith('talk.ipynb'):  # the talk's full number of steps: no cap injected
            assert 'injected-parameters' not in parameters['metadata'].get('tags', []) or \
                'iterations' not in ''.join(parameters['source'])
            text = ''.join(''.join(o.get('text', '')) for _, o in outputs(notebook))
            assert 'conv_dropout: final test accuracy' in text and '10000 steps in' in text
            assert 'We get to 99.3%.")' in text  # the talk's words beside its own run


def test_the_stop_button_stops_training_cleanly_and_the_kernel_trains_again(tmp_path,
                                                                           mnist_dir):
    from jupyter_client.manager import start_new_kernel
    manager, client = start_new_kernel(kernel_name='python3', cwd=str(tmp_path))
    try:
        def run(code, timeout=120):
            reply = client.execute_interactive(code, timeout=timeout, output_hook=lambda m: None)
            assert reply['content']['status'] == 'ok', reply['content']
            return reply

        run('from graph_mnist import notebook')
        message = client.execute(
            "h = notebook.run('five_layers_relu', iterations=100000, eval_every=50, "
            f"log_every=10, data_dir={mnist_dir!r})")
        deadline = time.time() + 120
        while time.time() < deadline:  # until training is under way
            found = glob.glob(str(tmp_path / 'runs' / 'five_layers_relu-*' / runs.HISTORY))
            if found and len(json.load(open(found[0]))['test']['step']) >= 3:
                break
            time.sleep(0.2)
        else:
            pytest.fail('training did not start')
        manager.interrupt_kernel()
        reply = client.get_shell_msg(timeout=60)
        while reply['parent_header'].get('msg_id') != message:
            reply = client.get_shell_msg(timeout=60)
        assert reply['content']['status'] == 'ok'  # a message, not a KeyboardInterrupt

        workdir = os.path.dirname(found[0])
        history = runs.read_history(workdir)
        assert history['status'] == 'interrupted'
        last = history['train']['step'][-1]
        assert history['train']['step'] == list(range(0, last + 1, 10))  # consistent
        assert os.path.exists(os.path.join(workdir, 'checkpoints', 'checkpoint'))
        run("assert h['status'] == 'interrupted', h['status']")
        run(f"h2 = notebook.run('softmax', iterations=30, data_dir={mnist_dir!r})\n"
            "assert h2['status'] == 'finished', h2['status']")
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


@pytest.mark.slow  # a new virtual environment, TensorFlow installed into it (about a minute)
def test_the_install_cell_installs_the_package_in_a_fresh_kernel(tmp_path, monkeypatch):
    """talk.ipynb's first code cell, in the kernel of a new virtual environment that has
    nothing but ipykernel (as Colab or a new venv would be): it installs graph_mnist from
    the repository the notebook sits in, and the next cell imports it."""
    import subprocess
    import sys

    import nbformat
    venv = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True)
    python = str(venv / 'bin' / 'python')
    subprocess.run([python, '-m', 'pip', 'install', '--quiet', 'ipykernel'], check=True,
                   timeout=600, capture_output=True)
    assert subprocess.run([python, '-c', 'import graph_mnist'], cwd=tmp_path,
                          capture_output=True).returncode != 0  # not there yet
    subprocess.run([python, '-m', 'ipykernel', 'install', '--prefix', str(tmp_path / 'jupyter'),
                    '--name', 'fresh_venv'], check=True, capture_output=True)
    monkeypatch.setenv('JUPYTER_PATH', str(tmp_path / 'jupyter' / 'share' / 'jupyter'))
    talk = json.load(open(os.path.join(ROOT, 'notebooks', 'talk.ipynb')))
    install = next(c for c in talk['cells'] if c['cell_type'] == 'code'
                   and "find_spec('graph_mnist')" in ''.join(c['source']))
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(''.join(install['source'])),
        nbformat.v4.new_code_cell('import sys\nfrom graph_mnist import talk\n'
                                  'print(sys.prefix, len(talk.NETWORKS))')])
    source, output = tmp_path / 'install.ipynb', tmp_path / 'out.ipynb'
    nbformat.write(notebook, str(source))
    import papermill
    papermill.execute_notebook(str(source), str(output), kernel_name='fresh_venv',
                               progress_bar=False, cwd=os.path.join(ROOT, 'notebooks'))
    executed = json.load(open(output))
    text = ''.join(''.join(o.get('text', '')) for _, o in outputs(executed))
    assert 'installed graph_mnist and its dependencies from ' + ROOT in text
    assert f'{venv} 11' in text  # the kernel is the new environment's, and imports it
