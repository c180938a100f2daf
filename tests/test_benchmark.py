"""The networks' operation counts, their Keras and PyTorch twins checked against the
graph layer by layer, and scripts/benchmark.py's arithmetic: no timing is asserted here."""

import os
import sys

import bench_contenders as contenders
import bench_report as report
import benchmark
from conftest import require
import numpy as np
import pytest

from graph_mnist import architecture
from graph_mnist import machine
from graph_mnist import models
from graph_mnist import talk
from graph_mnist import training_graph
from graph_mnist.styles import twins

TESTS = os.path.dirname(os.path.abspath(__file__))


def test_softmax_operation_count_by_hand():
    assert architecture.forward_macs('softmax') == 784 * 10
    assert architecture.training_flops_per_image('softmax') == 3 * 2 * 7840


def test_conv_dropout_layers_and_operation_count_by_hand():
    first = architecture.layers('conv_dropout')[0]
    assert (first.kind, first.size, first.patch, first.n_in, first.n_out, first.stride) == \
        ('conv', 28, 6, 1, 6, 1)
    assert first.macs == 28 * 28 * 6 * 6 * 1 * 6
    by_hand = (28 * 28 * 6 * 6 * 1 * 6        # conv 6x6x1 -> 6, stride 1: 28x28 out
               + 14 * 14 * 5 * 5 * 6 * 12     # conv 5x5x6 -> 12, stride 2: 14x14 out
               + 7 * 7 * 4 * 4 * 12 * 24      # conv 4x4x12 -> 24, stride 2: 7x7 out
               + 7 * 7 * 24 * 200 + 200 * 10)  # the two dense layers
    assert architecture.forward_macs('conv_dropout') == by_hand == 985136  # "about 0.99 million"


def test_layers_read_off_the_graph_hold_every_parameter():
    for model in talk.NETWORKS:
        counted = sum(layer.parameters for layer in architecture.layers(model))
        assert counted == training_graph.build(model).parameters, model


def test_layers_are_read_from_the_network_function(monkeypatch):
    """Whatever a network function writes is what architecture.layers reports."""
    tf = models.tf

    def tiny(X, pkeep):  # written as models.py writes its networks
        def normal(shape, name):
            return tf.Variable(tf.random.truncated_normal(shape, stddev=0.1), name=name)

        def constant(n, name, value):
            return tf.Variable(tf.constant(value, tf.float32, [n]), name=name)
        W1 = normal([3, 3, 1, 5], 'W1')
        B1 = constant(5, 'B1', 0.2)
        W2 = normal([10 * 10 * 5, 10], 'W2')
        B2 = constant(10, 'B2', 0.0)
        Y1 = tf.nn.sigmoid(tf.nn.conv2d(X, W1, strides=[1, 3, 3, 1], padding='SAME') + B1)
        return tf.matmul(tf.reshape(tf.nn.dropout(Y1, rate=1 - pkeep), [-1, 500]), W2) + B2

    monkeypatch.setitem(talk.NETWORKS, 'tiny', talk.NETWORKS['conv_dropout']._replace(
        network=tiny))
    conv, dropout, dense = architecture.layers('tiny')
    assert conv == architecture.Layer('conv', n_in=1, n_out=5, size=28, patch=3, stride=3,
                                      activation='sigmoid', init='truncated_normal',
                                      stddev=0.1, bias=0.2)
    assert conv.out_shape == (10, 10, 5) and conv.parameters == 3 * 3 * 5 + 5
    assert dropout.kind == 'dropout' and dropout.rate == 0.25
    assert dense == architecture.Layer('dense', n_in=500, n_out=10, init='truncated_normal',
                                       stddev=0.1, bias=0.0)


@pytest.mark.parametrize('model', list(talk.NETWORKS))
def test_keras_twin_matches_the_graph_layer_by_layer(model):
    import keras
    ours = architecture.layers(model)
    net = twins.keras_model(twins.describe(model))
    kinds = {keras.layers.Conv2D: 'conv', keras.layers.Dense: 'dense',
             keras.layers.Dropout: 'dropout'}
    twin = [made for made in net.layers if type(made) in kinds]
    assert [kinds[type(made)] for made in twin] == [layer.kind for layer in ours]
    for layer, k in zip(ours, twin):
        if layer.kind == 'dropout':
            assert k.rate == pytest.approx(layer.rate)
            continue
        kernel = tuple(k.kernel.shape)
        assert kernel == ((layer.patch, layer.patch, layer.n_in, layer.n_out)
                          if layer.kind == 'conv' else (layer.n_in, layer.n_out))
        assert tuple(k.output.shape[1:]) == layer.out_shape
        if layer.kind == 'conv':
            assert k.strides == (layer.stride, layer.stride) and k.padding == 'same'
        assert (not k.kernel.numpy().any()) == (layer.init == 'zeros')
        after = net.layers[net.layers.index(k) + 1:]
        if layer.batch_norm:  # weighted sum, batch norm (offset, maybe scale), activation
            norm, activation = after[:2]
            assert isinstance(norm, keras.layers.BatchNormalization) and k.bias is None
            assert norm.scale == layer.scale and norm.epsilon == models.BN_EPSILON
            offset, activation = norm.beta, activation.activation
            trained = k.count_params() + sum(int(np.prod(w.shape))
                                             for w in norm.trainable_weights)
        else:
            assert not after or not isinstance(after[0], keras.layers.BatchNormalization)
            offset, activation, trained = k.bias, k.activation, k.count_params()
        assert activation.__name__ == (layer.activation or 'linear')
        assert np.allclose(offset.numpy(), layer.bias)
        assert trained == layer.parameters
    assert sum(int(np.prod(w.shape)) for w in net.trainable_weights) == \
        training_graph.build(model).parameters


@pytest.mark.parametrize('model', list(talk.NETWORKS))
def test_pytorch_twin_matches_the_graph_layer_by_layer(model):
    torch = require('torch')
    from torch import nn
    ours = architecture.layers(model)
    net = twins.torch_model(twins.describe(model))
    kinds = {nn.Conv2d: 'conv', nn.Linear: 'dense', nn.Dropout: 'dropout'}
    shapes, x = [], torch.zeros(2, 1, 28, 28)
    with torch.no_grad():
        for module in net:  # run an image through, noting each layer's output shape
            x = module(x)
            if type(module) in kinds:
                shapes.append((module, tuple(x.shape[1:])))
    assert [kinds[type(m)] for m, _ in shapes] == [layer.kind for layer in ours]
    modules = list(net)
    for layer, (m, shape) in zip(ours, shapes):
        if layer.kind == 'dropout':
            assert m.p == pytest.approx(layer.rate)
            continue
        if layer.kind == 'conv':
            assert m.kernel_size == (layer.patch, layer.patch) and \
                m.stride == (layer.stride, layer.stride)
            assert (m.in_channels, m.out_channels) == (layer.n_in, layer.n_out)
            assert shape == (layer.n_out, layer.out_size, layer.out_size)  # NCHW
        else:
            assert (m.in_features, m.out_features) == (layer.n_in, layer.n_out)
            assert shape == layer.out_shape
        after = modules[modules.index(m) + 1:]
        trained = [p for p in m.parameters() if p.requires_grad]
        if layer.batch_norm:
            norm, after = after[0], after[1:]
            assert isinstance(norm, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.bias is None
            assert norm.eps == models.BN_EPSILON and norm.weight.requires_grad == layer.scale
            offset = norm.bias
            trained += [p for p in norm.parameters() if p.requires_grad]
        else:
            offset = m.bias
        assert torch.allclose(offset, torch.full_like(offset, layer.bias))
        assert sum(p.numel() for p in trained) == layer.parameters
        activation = {nn.ReLU: 'relu', nn.Sigmoid: 'sigmoid'}.get(
            type(after[0]) if after else None)
        assert activation == layer.activation
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == \
        training_graph.build(model).parameters


def test_summary_arithmetic():
    ours = report.summarize([0.020, 0.0205, 0.0195])  # seconds a step of 100 images
    assert ours['images_per_second'] == pytest.approx(100 / 0.02)
    assert ours['spread'] == pytest.approx(0.001 / 0.02) and not ours['noisy']
    keras = report.summarize([0.04, 0.05, 0.04])
    assert keras['spread'] == pytest.approx(0.25) and keras['noisy']


def test_ratios_are_taken_round_by_round_with_an_interval_of_stated_coverage():
    # a slow spell in round 2 hits both: per round ours is always twice as fast
    ours = report.summarize([0.010, 0.020, 0.011, 0.010, 0.012])
    theirs = report.summarize([0.020, 0.040, 0.022, 0.020, 0.024])
    r = report.paired(ours, theirs)
    assert r['median'] == pytest.approx(2.0) and r['rounds'] == pytest.approx([2.0] * 5)
    assert r['low'] == pytest.approx(2.0) and r['high'] == pytest.approx(2.0)
    assert r['coverage'] == pytest.approx(1 - 2 / 2 ** 5)  # 5 rounds: [min, max], 94%
    # the medians of the processes alone would not say it: both spread by 100%
    assert ours['spread'] > 0.9 and theirs['spread'] > 0.9
    mixed = report.paired(report.summarize([0.01] * 5),
                          report.summarize([0.009, 0.011, 0.012, 0.010, 0.013]))
    assert mixed['median'] == pytest.approx(1.1)
    assert mixed['low'] <= 1.0 < mixed['high']  # not ahead: the interval holds 1
    assert report.paired(ours, {'crashed': 'killed by SIGSEGV'}) is None
    assert report.paired(ours, report.summarize([0.01, 0.02])) is None  # rounds missing
    measured = {'ours': ours, 'ours_loop': ours, 'keras': theirs, 'keras_spe': theirs}
    found = report.pairs(measured, 'keras_spe')
    assert found['literal_over_keras_fit']['median'] == pytest.approx(2.0)
    assert found['graph_loop_over_keras_best']['median'] == pytest.approx(2.0)
    assert found['graph_loop_over_torch'] is None


def test_the_median_interval_holds_the_median_as_often_as_it_says():
    assert report.median_interval([3, 1, 2]) == (1, 3, 0.75)  # 3 rounds cannot reach 90%
    low, high, coverage = report.median_interval(list(range(10)))
    assert (low, high) == (1, 8) and coverage == pytest.approx(1 - 2 * 11 / 1024)  # 97.9%
    # checked by drawing: skewed rounds, the true median of the distribution known
    rng = np.random.default_rng(0)
    for n in (3, 5, 10):
        draws = rng.lognormal(0.0, 0.5, (4000, n))  # median exactly 1
        held = np.mean([lo <= 1 <= hi for lo, hi, _ in map(report.median_interval, draws)])
        assert held == pytest.approx(report.median_interval(draws[0])[2], abs=0.025)


def test_what_the_literal_lines_cost_is_the_rewrite_over_the_literal_round_by_round():
    plain, rewritten = report.summarize([0.020] * 5), report.summarize([0.016] * 5)
    found = report.pairs({'ours': plain, 'ours_bias_add': rewritten}, None)
    assert found['bias_add_over_plus']['median'] == pytest.approx(1.25)  # 20 ms against 16
    assert found['fused_batch_norm_over_moments'] is None  # not measured


def test_keras_is_reported_at_its_faster_mode():
    measured = {'ours': report.summarize([1.0]),
                'keras': report.summarize([3.0]),
                'keras_xla': report.summarize([2.0]),
                'keras@onednn_off': {'crashed': 'exit 1'}}
    assert report.best_keras(measured)[0] == 'keras_xla'
    assert report.best_keras({'ours': measured['ours']}) == (None, None)


def test_learning_rates_for_the_twins_are_the_networks():
    d = twins.describe('conv_dropout')
    assert twins.rate_at(d['rate'], 0) == pytest.approx(0.0031)
    assert twins.rate_at(d['rate'], 2000) == pytest.approx(0.0001 + 0.003 / np.e)
    assert twins.rate_at(twins.describe('softmax')['rate'], 500) == 0.005


def test_a_contender_that_crashes_is_reported_and_the_others_are_measured(mnist_dir,
                                                                         monkeypatch):
    # the crash double lives in the tests (doubles.py), found by the worker's process
    monkeypatch.setenv('PYTHONPATH', TESTS + os.pathsep + os.environ.get('PYTHONPATH', ''))
    row = benchmark.measure('softmax', ['doubles:Segfault', 'ours'], repeats=2,
                            data_dir=mnist_dir, log=lambda message: None, warmup=1,
                            window_seconds=0.01, windows=2)
    assert row['contenders']['doubles:Segfault'] == {'crashed': 'killed by SIGSEGV'}
    ours = row['contenders']['ours']
    assert len(ours['seconds_per_step']) == 2 and ours['images_per_second'] > 0
    assert [len(w) for w in ours['windows']] == [2, 2] and ours['steps_per_window'] == 50
    assert ours['parameters'] == 7850 and ours['eval_ms'] > 0
    assert row['literal_over_keras_fit'] is None and row['keras_best'] is None


def test_machine_names_cpu_cores_versions_and_commit():
    m = machine.machine()
    assert m['cpu'] != 'unknown' and m['cores'] >= 1
    assert m['versions']['tensorflow'] and m['versions']['numpy']
    assert m['commit']


class _Clock:
    """A fake clock for the windows' arithmetic: a step costs what `costs` says."""

    def __init__(self, costs):
        self.now, self.costs, self.step = 0.0, costs, 0

    def perf_counter(self):
        return self.now

    def train_steps(self, count):
        for _ in range(count):
            self.now += self.costs(self.step)
            self.step += 1


def test_a_timing_is_the_median_of_its_windows_a_stall_moves_nothing(monkeypatch):
    # 10 ms a step, but 4 steps of the third window stall, 0.5 s more in all
    clock = _Clock(lambda step: 0.01 + (0.125 if 300 <= step < 304 else 0.0))
    monkeypatch.setattr(contenders.time, 'perf_counter', clock.perf_counter)

    class Fake:
        def __init__(self, description, mnist, seed=0):
            pass
        train_steps = clock.train_steps

        def parameters(self):
            return 1

    monkeypatch.setitem(contenders.WORKERS, 'fake', Fake)
    monkeypatch.setattr(contenders.data, 'load', lambda *args, **kwargs: None)
    result = contenders.work('fake', 'throughput', {}, warmup=50, window_seconds=1.0,
                            windows=5)
    # 50 steps of warm-up, 50 timed for the pace (10 ms), so windows of 100 steps (1 s)
    assert clock.step == 50 + 50 + 5 * 100 and result['steps_per_window'] == 100
    assert result['windows'] == pytest.approx([1.0, 1.0, 1.5, 1.0, 1.0])
    assert result['seconds_per_step'] == pytest.approx(0.01)  # the median window's pace


def test_windows_are_whole_numbers_of_50_steps_of_about_the_asked_duration():
    assert contenders.steps_per_window(0.5, pace=0.0003) == 1700   # a softmax step
    assert contenders.steps_per_window(0.5, pace=0.005) == 100     # a convolutional one
    assert contenders.steps_per_window(0.5, pace=0.05) == 50       # never fewer than 50
    assert contenders.steps_per_window(0.0, pace=0.01) == 50


def test_keras_windows_are_timed_inside_one_fit_call(mnist_dir, monkeypatch):
    from graph_mnist import data
    mnist = data.load(mnist_dir, log=lambda message: None)
    keras = contenders.KerasSteps(twins.describe('softmax'), mnist)
    fits = []
    real_fit = keras.net.fit
    monkeypatch.setattr(keras.net, 'fit', lambda *a, **k: fits.append(k) or real_fit(*a, **k))
    windows = contenders.timed_windows(keras, per_window=100, windows=3)
    assert len(fits) == 1 and len(windows) == 3 and all(w > 0 for w in windows)
    assert keras.net.optimizer.iterations.numpy() == 50 + 300  # 50 lead-in steps left out
    with pytest.raises(ValueError, match='not a multiple of 50'):
        keras.timed_windows(per_window=120, windows=1)


def test_keras_time_to_99_counts_steps_across_epochs(mnist_dir, monkeypatch):
    """One fit over whole epochs; the step of an evaluation is counted on from epoch
    to epoch (600 steps each) and the fit stops at the first one at 99%."""
    from graph_mnist import data
    mnist = data.load(mnist_dir, log=lambda message: None)
    keras = contenders.KerasSteps(twins.describe('softmax'), mnist)
    evaluations = []
    monkeypatch.setattr(keras, 'evaluate',
                        lambda: evaluations.append(1) or (0.995 if len(evaluations) == 7
                                                          else 0.9))
    seconds, step = contenders.time_to_99(keras, limit=1200, every=100)
    assert step == 700 and seconds > 0 and len(evaluations) == 7
    assert keras.net.optimizer.iterations.numpy() == 700
    monkeypatch.setattr(keras, 'evaluate', lambda: 0.5)
    assert contenders.time_to_99(keras, limit=100, every=100) == (None, None)
    assert keras.net.optimizer.iterations.numpy() == 700 + 100  # stopped at the limit


def test_suffixes_set_the_workers_environment():
    env = benchmark.worker_environment('keras_spe@onednn_off@avx2', base={'HOME': '/x'})
    assert env == {'HOME': '/x', 'TF_ENABLE_ONEDNN_OPTS': '0', 'ONEDNN_MAX_CPU_ISA': 'AVX2'}
    assert benchmark.worker_environment('ours', base={}) == {}


@pytest.mark.slow  # three processes of the benchmark
@pytest.mark.parametrize('args, message', [
    (['--contenders=ours@fast'], 'unknown --contenders'),
    (['--eval_batches=1000,all'], 'give positive whole numbers'),
    (['--models=resnet'], 'unknown --models'),
])
def test_bad_benchmark_usage_is_one_line_and_exit_1(args, message, tmp_path):
    import subprocess
    done = subprocess.run([sys.executable, benchmark.__file__, *args], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert message in done.stderr and 'Traceback' not in done.stderr


def test_ours_evaluation_is_the_same_whatever_the_batch(mnist_dir):
    from graph_mnist import data
    mnist = data.load(mnist_dir, log=lambda message: None)
    ours = contenders.Ours(twins.describe('softmax'), mnist)
    ours.train_steps(20)
    whole = ours.evaluate()
    assert 0.5 < whole < 1 and whole * 10000 == round(whole * 10000)
    assert ours.evaluate(1000) == ours.evaluate(333) == whole  # 333: a last batch of 10


def test_evaluation_costs_are_timed_per_batch_size(mnist_dir):
    result = contenders.work('ours', 'throughput', twins.describe('softmax'),
                            data_dir=mnist_dir, warmup=0, window_seconds=0, windows=1,
                            eval_batches=(10000, 500))
    assert set(result['eval_ms_by_batch']) == {'10000', '500'}
    assert result['eval_ms'] == result['eval_ms_by_batch']['10000'] > 0


def test_ours_with_the_loop_in_the_graph_trains_what_the_literal_loop_trains():
    from conftest import synthetic_mnist
    mnist = synthetic_mnist(n_train=1000)
    description = twins.describe('five_layers_relu_lrdecay')
    literal, loop = contenders.Ours(description, mnist), contenders.OursLoop(description, mnist)
    literal.train_steps(150)
    loop.train_steps(150)  # a run of 100, then one of 50
    assert loop.step == literal.step == 150
    assert loop.evaluate() == literal.evaluate()


def test_profile_sums_each_kind_of_operation_over_threads_per_step(tmp_path):
    import profile_step
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    space = xplane_pb2.XSpace()
    plane = space.planes.add(name='/host:CPU')
    for key, name in enumerate(['conv/Conv2D:_MklNativeFusedConv2D', 'ExecutorState::Process',
                                'adam/W1:ResourceApplyAdam'], 1):
        plane.event_metadata[key].name = name
    for thread in ('tf_Compute/1', 'tf_Compute/2', 'python'):
        line = plane.lines.add(name=thread)
        for key, ps in ((1, 4_000_000), (2, 9_000_000), (3, 1_000_000)):
            line.events.add(metadata_id=key, duration_ps=ps)
    path = tmp_path / 'trace.xplane.pb'
    path.write_bytes(space.SerializeToString())
    # two compute threads, 2 steps: (4 + 4) us / 2 and (1 + 1) us / 2; the executor's own
    # events and the python thread left out
    assert profile_step.op_times(str(path), steps=2) == {'_MklNativeFusedConv2D': 4.0,
                                                         'ResourceApplyAdam': 1.0}


def test_the_bfloat16_contenders_are_like_for_like_and_never_keras_best():
    from bench_report import best_keras
    assert contenders.contender_class('ours_bf16').precision == 'bfloat16'
    assert issubclass(contenders.contender_class('keras_spe_bf16'), contenders.KerasSteps)
    measured = {'keras_spe': {'images_per_second': 100.0},
                'keras_spe_bf16': {'images_per_second': 150.0}}
    assert best_keras(measured)[0] == 'keras_spe'  # float32 against float32
