r"""Training throughput of the networks: graph_mnist's loop against Keras and PyTorch,
each contender in a fresh process of its own.

    python scripts/benchmark.py --models=conv_dropout --repeats=5
    python scripts/benchmark.py --models=all --time_to_99 --readme_command --json=runs/b.json
    python scripts/benchmark.py --contenders=ours,keras_spe,ours@avx2,keras_spe@avx2,ours@onednn_off

For each network, --repeats rounds; in each round every contender runs once, in a new
process (`scripts/benchmark.py --worker=...`), the order rotated from round to round, so
that machine noise hits all alike and no library can crash or slow another (TensorFlow
and PyTorch in one process have crashed). A process builds its network, trains
--warmup steps, times 50 steps to learn its pace, then times --windows windows of about
--window_seconds each (a whole number of 50 steps): its figure is its median window,
so a stall in one window moves nothing (every window is kept in the JSON). Reported
per contender: the median of its processes' figures in images per second and their
spread, (max - min) / median; a ratio whose either side spreads more than 10% says so.

Contenders:
- ours: graph_mnist.train's own step (train.training_step: a batch from data.Batches,
  Session.run(train_step, feed_dict)); also its evaluation of the 10,000 test images
  (--eval_batches: how many per Session.run, several sizes timed side by side);
- keras, keras_spe, keras_xla: the same network in Keras 3, `model.fit` as a user
  calls it (jit_compile off), with steps_per_execution=50 (Keras' own remedy for small
  steps), and with jit_compile on (XLA); the windows are timed inside one fit call by a
  callback; Keras is reported at the fastest of the three, so that our lead is not a
  weak opponent's;
- torch: the same network in PyTorch, a plain training loop (if torch is installed);
- any of them with a suffix runs with settings of its own: @onednn_off
  (TF_ENABLE_ONEDNN_OPTS=0; --onednn=both adds those for ours and Keras), @avx2
  (ONEDNN_MAX_CPU_ISA=AVX2: oneDNN's code for a CPU without AVX-512, on this one).

The twins are built from the network's description read off its graph in this process
(models.layers: layers, initial values, optimizer, learning rate), so the PyTorch
process never imports TensorFlow; tests/test_benchmark.py checks them layer by layer.
Also: the float32 matrix-multiply peak (numpy, its own process), the achieved GFLOP/s
(models.training_flops_per_image), the start-up of `python -m graph_mnist.train`; with
--time_to_99, wall time to 99% test accuracy (evaluations every 100 steps included) for
ours and Keras per seed (Keras in one fit call over whole epochs, evaluating in a
callback); with --readme_command, the wall time of README's first command; with
--run_parts, the same without the dashboard and without the evaluations. Every result
records the machine: CPU model, vector extensions, cores, the versions of TensorFlow,
Keras, PyTorch, numpy, and the commit.
"""

if __name__ == '__main__':
    from graph_mnist import cli
    cli.before_tensorflow()

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from importlib import metadata

from absl import app
from absl import flags
from absl import logging
import numpy as np

from graph_mnist import data
from graph_mnist import files
from graph_mnist import runs
from graph_mnist.errors import UserError

SPREAD_LIMIT = 0.10
CONTENDERS = ('ours', 'keras', 'keras_spe', 'keras_xla', 'torch')
KERAS_STEPS_PER_EXECUTION = 50
WINDOWS = 5
WINDOW_SECONDS = 0.5
STEP_QUANTUM = KERAS_STEPS_PER_EXECUTION  # steps are timed in whole numbers of this
EVALUATIONS = 5  # timed evaluations of the test set per batch size, in ours' processes
# a contender's suffix, e.g. ours@onednn_off or keras_spe@avx2: what its process runs with
SETTINGS = {
    'onednn_off': {'TF_ENABLE_ONEDNN_OPTS': '0'},  # TensorFlow's own (Eigen) kernels
    'avx2': {'ONEDNN_MAX_CPU_ISA': 'AVX2'},  # oneDNN's code for a CPU without AVX-512
}


# ------------------------------------------------------------------ what a twin builds


def describe(model):
    """Network `model` as its twins need it, read off its graph (models.layers) and its
    Spec: plain data, so that a process without TensorFlow can build a twin."""
    from graph_mnist import models
    spec = models.NETWORKS[model]
    rate = spec.learning_rate
    return {'model': model, 'layers': [layer._asdict() for layer in models.layers(model)],
            'optimizer': 'sgd' if spec.optimizer is models.SGD else 'adam',
            'rate': {'kind': type(rate).__name__, **rate._asdict()},
            'loss_scale': models.LOSS_SCALE, 'weight_stddev': models.WEIGHT_STDDEV,
            'bn_epsilon': models.BN_EPSILON,
            'training_flops_per_image': models.training_flops_per_image(model)}


def _layers(description):
    return [types.SimpleNamespace(**layer, out_size=-(-layer['size'] // layer['stride']))
            for layer in description['layers']]


def rate_at(rate, step):
    """The learning rate of a description at a step, as a number."""
    if rate['kind'] == 'ConstantRate':
        return rate['rate']
    return rate['floor'] + rate['start'] * math.exp(-step / rate['period'])


# --------------------------------------------------------------------------- ours


class Ours:
    def __init__(self, description, mnist, seed=0):
        from graph_mnist import models
        from graph_mnist import train
        self.train, self.models = train, models
        self.g = models.build(description['model'], seed=seed)
        self.sess = train.open_session(self.g)
        self.sess.run(self.g.init)
        self.batches = data.Batches(mnist.train_images, mnist.train_labels, 100, seed)
        self.mnist, self.step = mnist, 0

    def train_steps(self, count):
        for _ in range(count):
            batch_X, batch_Y = self.batches(self.step)
            self.train.training_step(self.sess, self.g, batch_X, batch_Y, self.step)
            self.step += 1

    def evaluate(self, batch=10000):
        """Test accuracy on all 10,000 test images, `batch` per Session.run (the talk's
        one run of all 10,000 unless told; the same accuracy any way, the question being
        what costs less)."""
        g, images, labels = self.g, self.mnist.test_images, self.mnist.test_labels
        correct = 0
        for i in range(0, len(images), batch):
            accuracy = self.sess.run(g.accuracy, g.test_feed(images[i:i + batch],
                                                             labels[i:i + batch]))
            correct += round(float(accuracy) * len(images[i:i + batch]))
        return correct / len(images)

    def parameters(self):
        return self.models.trainable_parameters(self.g)


# --------------------------------------------------------------------------- Keras


def keras_learning_rate(rate):
    """A description's learning rate for Keras: a number, or a schedule."""
    import keras

    if rate['kind'] == 'ConstantRate':
        return rate['rate']

    class Decaying(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step = keras.ops.cast(step, 'float32')
            return rate['floor'] + rate['start'] * keras.ops.exp(-step / rate['period'])

        def get_config(self):
            return dict(rate)

    return Decaying()


def keras_model(description, seed=0, jit_compile=False, steps_per_execution=1):
    """The Keras twin of a network, layer by layer from its description."""
    import keras
    keras.utils.set_random_seed(seed)
    stack = [keras.Input((28, 28, 1))]
    for layer in _layers(description):
        if layer.kind == 'dropout':
            stack.append(keras.layers.Dropout(layer.rate))
            continue
        bias = keras.initializers.Constant(layer.bias)
        settings = dict(
            kernel_initializer=keras.initializers.Zeros() if layer.init == 'zeros' else
            keras.initializers.TruncatedNormal(stddev=description['weight_stddev'], seed=seed))
        settings.update(use_bias=False) if layer.batch_norm else \
            settings.update(activation=layer.activation, bias_initializer=bias)
        if layer.kind == 'conv':
            stack.append(keras.layers.Conv2D(layer.n_out, layer.patch, strides=layer.stride,
                                             padding='same', **settings))
        else:
            if not any(isinstance(l, keras.layers.Flatten) for l in stack[1:]):
                stack.append(keras.layers.Flatten())
            stack.append(keras.layers.Dense(layer.n_out, **settings))
        if layer.batch_norm:  # the offset takes the bias's place; a scale only if ours has one
            stack.append(keras.layers.BatchNormalization(
                epsilon=description['bn_epsilon'], scale=layer.scale, beta_initializer=bias))
            stack.append(keras.layers.Activation(layer.activation))
    net = keras.Sequential(stack)
    rate = keras_learning_rate(description['rate'])
    if description['optimizer'] == 'sgd':
        # our loss is the batch mean x loss_scale; Keras' is the mean: the same steps need
        # a rate loss_scale times larger (Adam does not care about the scale)
        optimizer = keras.optimizers.SGD(rate * description['loss_scale'])
    else:
        optimizer = keras.optimizers.Adam(rate)
    net.compile(optimizer=optimizer, loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                metrics=['accuracy'], jit_compile=jit_compile,
                steps_per_execution=steps_per_execution)
    return net


class Keras:
    jit_compile = False
    steps_per_execution = 1

    def __init__(self, description, mnist, seed=0):
        self.net = keras_model(description, seed, self.jit_compile, self.steps_per_execution)
        self.mnist = mnist
        self.rng = np.random.default_rng(seed)
        self.order = np.empty(0, np.int64)

    def _fit(self, count, callbacks=()):
        # one fit call over the next `count` batches of a shuffled training set (epochs
        # reshuffled): Keras' own loop and data pipeline, as a user would call it
        while len(self.order) < count * 100:
            self.order = np.concatenate([self.order, self.rng.permutation(60000)])
        chosen, self.order = self.order[:count * 100], self.order[count * 100:]
        self.net.fit(self.mnist.train_images[chosen], self.mnist.train_labels[chosen],
                     batch_size=100, epochs=1, shuffle=False, verbose=0,
                     callbacks=list(callbacks))

    def train_steps(self, count):
        self._fit(count)

    def timed_windows(self, per_window, windows):
        """Like timed_windows() below, but inside one fit call (a fit per window would
        charge Keras its per-call set-up once per window): a callback notes the clock
        at the end of every executed group of steps; the first STEP_QUANTUM steps of the
        fit (its data pipeline starting) are left out."""
        import keras
        if per_window % self.steps_per_execution:
            raise ValueError(f'a window of {per_window} steps is not a multiple of '
                             f'{self.steps_per_execution}')
        clock = {}

        class Clock(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                clock[batch + 1] = time.perf_counter()  # steps done so far in this fit

        self._fit(STEP_QUANTUM + per_window * windows, [Clock()])
        ends = [clock[STEP_QUANTUM + per_window * k] for k in range(windows + 1)]
        return [b - a for a, b in zip(ends, ends[1:])]

    def time_to_99(self, limit, every):
        """Like time_to_99() below, but in one fit call with the evaluations in a
        callback that stops the fit at 99% (not a fit call per 100 steps: Keras at its
        best)."""
        import keras
        if every % self.steps_per_execution:
            raise ValueError(f'evaluations every {every} steps: not a multiple of '
                             f'{self.steps_per_execution}')
        evaluate, reached, epoch_steps = self.evaluate, {}, 60000 // 100

        class Stop(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.epoch = epoch

            def on_train_batch_end(self, batch, logs=None):
                step = self.epoch * epoch_steps + batch + 1
                if step % every == 0 and evaluate() >= 0.99:
                    reached.update(seconds=time.perf_counter() - start, step=step)
                    self.model.stop_training = True
                if step >= limit:
                    self.model.stop_training = True

        start = time.perf_counter()
        # whole epochs, shuffled by Keras: what a user writes (and no copy of `limit`
        # batches made beforehand, which took longer than the training)
        self.net.fit(self.mnist.train_images, self.mnist.train_labels, batch_size=100,
                     epochs=-(-limit // epoch_steps), shuffle=True, verbose=0,
                     callbacks=[Stop()])
        return reached.get('seconds'), reached.get('step')

    def evaluate(self):
        # all 10,000 in one call of the compiled test function, as ours does: the
        # fastest of evaluate(batch_size=10000 or 1000), predict_on_batch and this
        # (BUILD_NOTES), and inside a fit callback evaluate() cost ten times more
        return self.net.test_on_batch(self.mnist.test_images, self.mnist.test_labels,
                                      return_dict=True)['accuracy']

    def parameters(self):
        return self.net.count_params()


class KerasXLA(Keras):
    jit_compile = True


class KerasSteps(Keras):
    """Keras' own remedy for small networks: `steps_per_execution` runs that many
    training steps per call of its compiled function (one Python round trip, one
    callback call, per 50 steps)."""
    steps_per_execution = KERAS_STEPS_PER_EXECUTION


# --------------------------------------------------------------------------- PyTorch


def torch_model(description, seed=0):
    """The PyTorch twin of a network, layer by layer from its description."""
    import torch
    from torch import nn
    torch.manual_seed(seed)
    activations = {'relu': nn.ReLU, 'sigmoid': nn.Sigmoid}
    modules, flat = [], False
    for layer in _layers(description):
        if layer.kind == 'dropout':
            modules.append(nn.Dropout(layer.rate))
            continue
        with_bias = not layer.batch_norm  # batch norm's offset takes the bias's place
        if layer.kind == 'conv':
            # TensorFlow's SAME padding: as much as the stride needs, the odd pixel after
            pad = max((layer.out_size - 1) * layer.stride + layer.patch - layer.size, 0)
            modules.append(nn.ZeroPad2d((pad // 2, pad - pad // 2, pad // 2, pad - pad // 2)))
            weighted = nn.Conv2d(layer.n_in, layer.n_out, layer.patch, layer.stride,
                                 bias=with_bias)
            norm = nn.BatchNorm2d
        else:
            if not flat:
                modules.append(nn.Flatten())
                flat = True
            weighted = nn.Linear(layer.n_in, layer.n_out, bias=with_bias)
            norm = nn.BatchNorm1d
        with torch.no_grad():
            if layer.init == 'zeros':
                weighted.weight.zero_()
            else:
                std = description['weight_stddev']
                nn.init.trunc_normal_(weighted.weight, std=std, a=-2 * std, b=2 * std)
            if with_bias:
                weighted.bias.fill_(layer.bias)
        modules.append(weighted)
        if layer.batch_norm:
            normalise = norm(layer.n_out, eps=description['bn_epsilon'])
            with torch.no_grad():
                normalise.bias.fill_(layer.bias)
            normalise.weight.requires_grad_(layer.scale)  # no scale: stays 1, not trained
            modules.append(normalise)
        if layer.activation:
            modules.append(activations[layer.activation]())
    return nn.Sequential(*modules)


class Torch:
    def __init__(self, description, mnist, seed=0):
        import torch
        torch.set_num_threads(os.cpu_count())
        self.torch = torch
        self.net = torch_model(description, seed)
        self.loss_scale = description['loss_scale']
        optimizer = torch.optim.SGD if description['optimizer'] == 'sgd' else torch.optim.Adam
        trained = [p for p in self.net.parameters() if p.requires_grad]
        self.optimizer = optimizer(trained, lr=1.0)  # x the schedule below
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: rate_at(description['rate'], step))
        # NCHW for PyTorch; the conversion is done once, outside the timed loop
        self.images = torch.from_numpy(mnist.train_images.transpose(0, 3, 1, 2).copy())
        self.labels = torch.from_numpy(mnist.train_digits)
        self.test_images = torch.from_numpy(mnist.test_images.transpose(0, 3, 1, 2).copy())
        self.test_labels = torch.from_numpy(mnist.test_digits)
        self.generator = torch.Generator().manual_seed(seed)
        self.order, self.position = None, 600

    def train_steps(self, count):
        torch = self.torch
        self.net.train()
        for _ in range(count):
            if self.position == 600:
                self.order, self.position = torch.randperm(60000, generator=self.generator), 0
            chosen = self.order[self.position * 100:(self.position + 1) * 100]
            self.position += 1
            loss = torch.nn.functional.cross_entropy(self.net(self.images[chosen]),
                                                     self.labels[chosen]) * self.loss_scale
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.schedule.step()

    def evaluate(self):
        self.net.eval()
        with self.torch.no_grad():
            predicted = self.net(self.test_images).argmax(1)
        return float((predicted == self.test_labels).float().mean())

    def parameters(self):
        return sum(p.numel() for p in self.net.parameters() if p.requires_grad)


class Segfault:
    """A contender that crashes as TensorFlow and PyTorch in one process once did: for
    tests/test_benchmark.py, which checks that the others are still measured."""

    def __init__(self, description, mnist, seed=0):
        import signal
        os.kill(os.getpid(), signal.SIGSEGV)


WORKERS = {'ours': Ours, 'keras': Keras, 'keras_spe': KerasSteps, 'keras_xla': KerasXLA,
           'torch': Torch,
           'segfault': Segfault}


# --------------------------------------------------------------------------- a worker


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def matmul_peak_gflops(n=2048, repeats=5):
    """float32 matrix multiply through numpy: the machine's practical peak."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = np.random.default_rng(1).random((n, n), dtype=np.float32)
    a @ b
    return 2 * n ** 3 / min(_timed(lambda: a @ b) for _ in range(repeats)) / 1e9


def time_to_99(contender, limit=10000, every=100):
    """Wall time, evaluations included, until the test accuracy on all 10,000 test
    images first reaches 0.99, evaluating every `every` steps: (seconds, step), or
    (None, None) within `limit` steps."""
    if hasattr(contender, 'time_to_99'):
        return contender.time_to_99(limit, every)
    start = time.perf_counter()
    for step in range(every, limit + 1, every):
        contender.train_steps(every)
        if contender.evaluate() >= 0.99:
            return time.perf_counter() - start, step
    return None, None


def timed_windows(contender, per_window, windows):
    """Seconds of each of `windows` consecutive windows of `per_window` training steps."""
    if hasattr(contender, 'timed_windows'):
        return contender.timed_windows(per_window, windows)
    return [_timed(lambda: contender.train_steps(per_window)) for _ in range(windows)]


def steps_per_window(seconds, pace):
    """Steps that take about `seconds` at `pace` seconds a step: a whole number of
    STEP_QUANTUM (what keras_spe runs per call), at least one."""
    return STEP_QUANTUM * max(1, math.ceil(seconds / pace / STEP_QUANTUM))


def work(name, task, description, seed=0, data_dir=None, warmup=STEP_QUANTUM,
         window_seconds=WINDOW_SECONDS, windows=WINDOWS, eval_batches=(10000,)):
    """What one worker process measures; a JSON-ready dict.

    Throughput: `warmup` steps; STEP_QUANTUM steps timed to learn the pace; then
    `windows` windows of as many steps as take about `window_seconds` (the same
    duration for a 0.3 ms softmax step as for a 10 ms convolutional one). The process's
    figure is its median window: a stall in one window (another tenant of the machine,
    a collection) moves it by nothing, and every window is kept in the result."""
    if name == 'matmul':
        return {'gflops': matmul_peak_gflops()}
    if name == 'torch':
        try:
            import torch  # noqa: F401
        except ImportError:
            return {'unavailable': 'torch is not installed'}
    mnist = data.load(data_dir, log=lambda message: None)
    contender = WORKERS[name.split('@')[0]](description, mnist, seed)
    if task == 'time_to_99':
        seconds, step = time_to_99(contender)
        return {'seconds': seconds, 'step': step}
    contender.train_steps(warmup)
    pace = _timed(lambda: contender.train_steps(STEP_QUANTUM)) / STEP_QUANTUM
    per_window = steps_per_window(window_seconds, pace)
    seconds = timed_windows(contender, per_window, windows)
    result = {'seconds_per_step': statistics.median(seconds) / per_window,
              'windows': seconds, 'steps_per_window': per_window,
              'parameters': contender.parameters()}
    if name.split('@')[0] == 'ours':  # its evaluation of the test set, per batch size
        costs = {batch: [] for batch in eval_batches}
        for _ in range(EVALUATIONS):  # batch sizes interleaved
            for batch in eval_batches:
                costs[batch].append(_timed(lambda: contender.evaluate(batch)))
        result['eval_ms_by_batch'] = {str(b): 1000 * statistics.median(c)
                                      for b, c in costs.items()}
        result['eval_ms'] = result['eval_ms_by_batch'][str(eval_batches[0])]
    return result


# --------------------------------------------------------------------------- the parent


def worker_environment(name, base=None):
    """The environment of contender `name`'s process: this one's, plus its suffixes'."""
    env = dict(os.environ if base is None else base)
    for suffix in name.split('@')[1:]:
        env.update(SETTINGS[suffix])
    return env


def run_worker(name, task, description_path, seed=0, data_dir=None, timeout=3600,
               warmup=STEP_QUANTUM, window_seconds=WINDOW_SECONDS, windows=WINDOWS,
               eval_batches=(10000,)):
    """Runs one contender in a fresh process: its result, or {'crashed': why}."""
    env = worker_environment(name)
    command = [sys.executable, os.path.abspath(__file__), f'--worker={name}', f'--task={task}',
               f'--description={description_path}', f'--warmup={warmup}', f'--seed={seed}',
               f'--window_seconds={window_seconds}', f'--windows={windows}',
               '--eval_batches=' + ','.join(map(str, eval_batches))]
    if data_dir:
        command.append(f'--data_dir={data_dir}')
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {'crashed': f'no answer within {timeout} s'}
    if done.returncode != 0:
        how = f'killed by {_signal_name(-done.returncode)}' if done.returncode < 0 else \
            f'exit {done.returncode}'
        last = (done.stderr.strip().splitlines() or [''])[-1][:200]
        return {'crashed': f'{how}' + (f': {last}' if last else '')}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _signal_name(number):
    import signal
    try:
        return signal.Signals(number).name
    except ValueError:
        return f'signal {number}'


def summarize(seconds_per_step, batch=100):
    """Median images per second of the processes' figures, and their spread: (max -
    min) / median of their seconds per step."""
    median = statistics.median(seconds_per_step)
    spread = (max(seconds_per_step) - min(seconds_per_step)) / median
    return {'seconds_per_step': seconds_per_step, 'images_per_second': batch / median,
            'spread': spread, 'noisy': spread > SPREAD_LIMIT}


def ratio(ours, theirs):
    """ours / theirs in images per second, with a warning when either side is noisy."""
    if not ours or not theirs or 'images_per_second' not in ours or \
            'images_per_second' not in theirs:
        return None
    warning = ''
    if ours['noisy'] or theirs['noisy']:
        widest = max(ours['spread'], theirs['spread'])
        # one decimal where a whole percent would print the limit itself ("10% > 10%")
        warning = (f'spread {widest:.{0 if widest >= SPREAD_LIMIT + 0.005 else 1}%} > '
                   f'{SPREAD_LIMIT:.0%}')
    return {'value': ours['images_per_second'] / theirs['images_per_second'],
            'warning': warning}


def best_keras(measured):
    """The faster of the Keras modes measured (name, result), or (None, None)."""
    modes = [(name, r) for name, r in measured.items()
             if name.split('@')[0].startswith('keras') and 'images_per_second' in r]
    return max(modes, key=lambda m: m[1]['images_per_second'], default=(None, None))


def measure(model, contenders, repeats, data_dir=None, log=print, eval_batches=(10000,),
            **timing):
    """Every contender, `repeats` rounds, one fresh process per timing, order rotated;
    `timing`: warmup, window_seconds, windows (work's)."""
    description = describe(model)
    with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as f:
        json.dump(description, f)
    try:
        timings = {name: [] for name in contenders}
        process_windows = {name: [] for name in contenders}
        evaluations = {}  # ours' evaluation cost per batch size, one dict per process
        extra, failed = {}, {}
        for round_ in range(repeats):
            shift = round_ % len(contenders)
            for name in contenders[shift:] + contenders[:shift]:
                if name in failed:
                    continue  # crashed or unavailable once: reported, not retried
                result = run_worker(name, 'throughput', f.name, data_dir=data_dir,
                                    eval_batches=eval_batches, **timing)
                if 'seconds_per_step' in result:
                    timings[name].append(result['seconds_per_step'])
                    process_windows[name].append(result['windows'])
                    if 'eval_ms_by_batch' in result:
                        evaluations.setdefault(name, []).append(result['eval_ms_by_batch'])
                    extra[name] = result
                else:
                    failed[name] = result
                    log(f'{model}: {name}: {result}')
    finally:
        os.remove(f.name)
    measured = {}
    for name in contenders:
        if name in failed:
            measured[name] = failed[name]
        else:
            measured[name] = {**summarize(timings[name]),
                              'windows': process_windows[name],
                              'steps_per_window': extra[name]['steps_per_window'],
                              'parameters': extra[name]['parameters']}
            if name in evaluations:  # median over the processes of their medians
                by_batch = {batch: statistics.median(e[batch] for e in evaluations[name])
                            for batch in evaluations[name][0]}
                measured[name]['eval_ms_by_batch'] = by_batch
                measured[name]['eval_ms'] = by_batch[str(eval_batches[0])]
    keras_name, keras = best_keras(measured)
    flops = description['training_flops_per_image']
    return {'contenders': measured, 'keras_best': keras_name,
            'ours_over_keras': ratio(measured.get('ours'), keras),
            'ours_over_torch': ratio(measured.get('ours'), measured.get('torch')),
            'training_mflop_per_image': flops / 1e6,
            'achieved_gflops': {name: r['images_per_second'] * flops / 1e9
                                for name, r in measured.items() if 'images_per_second' in r}}


def machine():
    """What the figures were measured on."""
    cpu, extensions = 'unknown', []
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name') and cpu == 'unknown':
                    cpu = line.split(':', 1)[1].strip()
                if line.startswith('flags') and not extensions:
                    extensions = sorted(x for x in line.split(':', 1)[1].split()
                                        if x.startswith(('avx', 'fma', 'amx')))
    except OSError:
        pass
    versions = {}
    for package in ('tensorflow', 'keras', 'torch', 'numpy'):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    here = os.path.dirname(os.path.abspath(__file__))
    git = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True,
                         text=True, cwd=here)
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'],
                           capture_output=True, text=True, cwd=here).stdout.strip()
    return {'cpu': cpu, 'vector_extensions': extensions, 'cores': os.cpu_count(),
            'versions': versions,
            'commit': git.stdout.strip() + ('-dirty' if dirty else '') if git.returncode == 0
            else None}


def startup_seconds(model, data_dir):
    """Process start to training loop start, for `python -m graph_mnist.train`."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = os.path.join(tmp, 'run')
        command = [sys.executable, '-m', 'graph_mnist.train', f'--model={model}',
                   '--iterations=1', '--vis=none', f'--workdir={workdir}']
        if data_dir:
            command.append(f'--data_dir={data_dir}')
        launched = time.time()
        subprocess.run(command, check=True, capture_output=True)
        return runs.read_history(workdir)['loop_started_at'] - launched


# where a whole run's time goes: README's command, then without the dashboard, then
# also without the test evaluations but the first and last (the talk's run has 101)
RUN_PARTS = {'readme_command': [], 'vis_none': ['--vis=none'],
             'vis_none_2_evaluations': ['--vis=none', '--eval_every=10000']}


def readme_command_seconds(data_dir, extra=()):
    """Wall time of README's first command's training (`python -m graph_mnist.train
    --model=conv_dropout`, as a user runs it, headless: the dashboard saved), and the
    run's own figures; `extra`: flags added to it."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, '-m', 'graph_mnist.train', '--model=conv_dropout',
                   *extra]
        if data_dir:
            command.append(f'--data_dir={data_dir}')
        env = {k: v for k, v in os.environ.items() if k not in ('DISPLAY', 'WAYLAND_DISPLAY')}
        seconds = _timed(lambda: subprocess.run(command, check=True, capture_output=True,
                                                cwd=tmp, env=env))
        history = runs.read_history(os.path.join(tmp, runs.RUNS, runs.LATEST))
    return {'seconds': seconds, 'wall_time': history['wall_time'],
            'final_test_accuracy': history['final_test_accuracy']}


# --------------------------------------------------------------------------- the report


def _rate(r):
    if 'images_per_second' in r:
        return f"{r['images_per_second']:,.0f} (±{r['spread'] / 2:.0%})"
    if 'crashed' in r:
        return f"crashed ({r['crashed']})"
    return r.get('unavailable', 'not measured')


def _ratio(r):
    if not r:
        return '–'
    return f"**{r['value']:.2f}**" + (f" ({r['warning']})" if r['warning'] else '')


def markdown(results):
    m = results['machine']
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, {' '.join(m['vector_extensions'])}; "
             + ', '.join(f'{k} {v}' for k, v in m['versions'].items() if v)
             + f"; commit {m['commit']}; {results['date']}; `{results['command']}`", '',
             f"float32 matrix multiply peak (numpy, 2048x2048): {results['peak_gflops']:.0f} "
             'GFLOP/s', '',
             '| network | ours img/s | Keras img/s (mode) | PyTorch img/s | ours / Keras '
             '| ours / PyTorch | ours eval 10k (ms) | start-up (s) | ours GFLOP/s | of peak |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for model, r in results['models'].items():
        c = r['contenders']
        keras = c.get(r['keras_best']) if r['keras_best'] else None
        ours_gflops = r['achieved_gflops'].get('ours')
        lines.append(
            f"| `{model}` | {_rate(c.get('ours', {}))} "
            f"| {_rate(keras) + ' (' + r['keras_best'] + ')' if keras else '–'} "
            f"| {_rate(c['torch']) if 'torch' in c else '–'} "
            f"| {_ratio(r['ours_over_keras'])} | {_ratio(r['ours_over_torch'])} "
            f"| {c.get('ours', {}).get('eval_ms', float('nan')):.0f} "
            f"| {r.get('startup_s', float('nan')):.1f} "
            + (f"| {ours_gflops:.1f} | {ours_gflops / results['peak_gflops']:.1%} |"
               if ours_gflops else '| – | – |'))
    others = sorted({n for r in results['models'].values() for n in r['contenders']
                     if n not in ('ours', 'torch')})
    if others:
        lines += ['', 'Every contender (images per second, median ± half the spread):', '',
                  '| network | ' + ' | '.join(others) + ' |',
                  '|---|' + '---|' * len(others)]
        for model, r in results['models'].items():
            lines.append(f'| `{model}` | ' + ' | '.join(
                _rate(r['contenders'][n]) if n in r['contenders'] else '–' for n in others)
                + ' |')
    costs = [(model, name, c['eval_ms_by_batch']) for model, r in results['models'].items()
             for name, c in r['contenders'].items() if len(c.get('eval_ms_by_batch', {})) > 1]
    if costs:
        lines += ['', 'Evaluation of all 10,000 test images by images per Session.run '
                  '(ms, median):', '']
        for model, name, by_batch in costs:
            lines.append(f'- `{model}`, {name}: ' + ', '.join(
                f'{int(b):,}: {ms:.0f}' for b, ms in by_batch.items()))
    if 'time_to_99' in results:
        lines += ['', 'Time to 99% test accuracy, conv_dropout (evaluations every 100 steps '
                  'included):', '']
        for name, per_seed in results['time_to_99'].items():
            lines.append(f'- {name}: ' + ', '.join(
                f"seed {s['seed']}: " + (f"{s['seconds']:.1f} s (step {s['step']:,})"
                                         if s.get('seconds') else s.get('crashed', 'never'))
                for s in per_seed))
    if 'run_parts' in results:
        p = results['run_parts']
        whole, no_vis, two = (p[k]['seconds'] for k in RUN_PARTS)
        lines += ['', f"Where the README command's time goes (whole processes, one each): "
                  f"{whole:.0f} s as it is, {no_vis:.0f} s with --vis=none (the dashboard: "
                  f"{whole - no_vis:.0f} s), {two:.0f} s with --vis=none --eval_every=10000 "
                  f"(99 test evaluations fewer: {(no_vis - two) / 99 * 1000:.0f} ms each)"]
    if 'readme_command' in results:
        r = results['readme_command']
        lines += ['', f"README command (`python -m graph_mnist.train --model=conv_dropout`): "
                  f"{r['seconds']:.0f} s whole process, {r['wall_time']:.0f} s of training; "
                  f"final test accuracy {r['final_test_accuracy']:.4f}"]
    return '\n'.join(lines)


# --------------------------------------------------------------------------- main

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_list('models', ['conv_dropout'], 'Networks to measure (or "all").')
    flags.DEFINE_list('contenders', list(CONTENDERS), 'Who trains: ' + ', '.join(WORKERS)
                      + '; any with suffixes that set its process\'s environment: '
                      + ', '.join(f'@{k} ({v})' for k, v in SETTINGS.items()) + '.')
    flags.DEFINE_enum('onednn', 'on', ['on', 'off', 'both'], 'oneDNN for the TensorFlow '
                      'contenders (ours, Keras): on (TensorFlow\'s default), off, or both.')
    flags.DEFINE_float('window_seconds', WINDOW_SECONDS, 'About how long each timed '
                       'window lasts (its steps a multiple of %d, from the pace of %d '
                       'steps timed first).' % (STEP_QUANTUM, STEP_QUANTUM), lower_bound=0)
    flags.DEFINE_integer('windows', WINDOWS, 'Timed windows per process; the process\'s '
                         'figure is their median.', lower_bound=1)
    flags.DEFINE_integer('repeats', 5, 'Processes per contender (rounds), each timed '
                         'once.', lower_bound=1)
    flags.DEFINE_integer('warmup', STEP_QUANTUM, 'Steps before timing.', lower_bound=0)
    flags.DEFINE_string('json', None, 'Also write the results here as JSON (a new file).')
    flags.DEFINE_bool('time_to_99', False, 'Also measure conv_dropout\'s time to 99% test '
                      'accuracy, ours against Keras (its faster mode).')
    flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds for --time_to_99.')
    flags.DEFINE_bool('readme_command', False, 'Also time README\'s first command.')
    flags.DEFINE_bool('run_parts', False, 'Also time README\'s first command with '
                      '--vis=none, and with --vis=none --eval_every=10000: what the '
                      'dashboard and the test evaluations cost in a whole run.')
    flags.DEFINE_list('eval_batches', ['10000'], 'Test images per Session.run when ours\' '
                      'processes time an evaluation of all 10,000; several: each is timed.')
    flags.DEFINE_string('data_dir', None, 'MNIST directory.')
    # a worker process (started by this script itself)
    flags.DEFINE_string('worker', None, 'Internal: run one contender and print its result.')
    flags.DEFINE_enum('task', 'throughput', ['throughput', 'time_to_99'], 'Internal.')
    flags.DEFINE_string('description', None, 'Internal: the network, as JSON.')
    flags.DEFINE_integer('seed', 0, 'Internal: the worker\'s seed.')


def timing_from_flags():
    return {'warmup': FLAGS.warmup, 'window_seconds': FLAGS.window_seconds,
            'windows': FLAGS.windows}


def eval_batches():
    try:
        batches = [int(b) for b in FLAGS.eval_batches]
    except ValueError:
        batches = []
    if not batches or min(batches) < 1:
        raise app.UsageError(f'--eval_batches={",".join(FLAGS.eval_batches)}: give positive '
                             'whole numbers, e.g. 10000,1000,500')
    return batches


def contenders_from_flags():
    chosen = list(FLAGS.contenders)
    unknown = [c for c in chosen if c.split('@')[0] not in WORKERS
               or not set(c.split('@')[1:]) <= set(SETTINGS)]
    if unknown:
        raise app.UsageError(f'unknown --contenders {unknown}; choose from {list(WORKERS)}, '
                             f'each with any suffixes of {["@" + s for s in SETTINGS]}')
    tf_side = [c for c in chosen if issubclass(WORKERS[c.split('@')[0]], (Ours, Keras))]
    if FLAGS.onednn == 'off':
        chosen = [c + '@onednn_off' if c in tf_side else c for c in chosen]
    elif FLAGS.onednn == 'both':
        chosen += [c + '@onednn_off' for c in tf_side]
    return chosen


def main(argv):
    del argv
    if FLAGS.worker:  # one contender, in this fresh process
        description = None
        if FLAGS.description:
            with open(FLAGS.description) as f:
                description = json.load(f)
        print(json.dumps(work(FLAGS.worker, FLAGS.task, description, FLAGS.seed,
                              FLAGS.data_dir, **timing_from_flags(),
                              eval_batches=eval_batches())))
        return 0
    from graph_mnist import models
    names = list(models.NETWORKS) if FLAGS.models == ['all'] else FLAGS.models
    unknown = sorted(set(names) - set(models.NETWORKS))
    if unknown:
        raise app.UsageError(f'unknown --models {unknown}; choose from {list(models.NETWORKS)}')
    if FLAGS.json and os.path.exists(FLAGS.json):
        raise UserError(f'{FLAGS.json} already exists; choose another --json')
    contenders = contenders_from_flags()
    eval_batches()  # checked before any timing
    data.load(FLAGS.data_dir, log=logging.info)  # fetched once, before any timing
    results = {'machine': machine(), 'command': ' '.join(['python'] + sys.argv),
               'date': time.strftime('%Y-%m-%d'), 'repeats': FLAGS.repeats,
               **timing_from_flags(), 'models': {}}
    peak = run_worker('matmul', 'throughput', '')
    if 'gflops' not in peak:
        raise UserError(f'the matrix-multiply measurement failed: {peak}')
    results['peak_gflops'] = peak['gflops']
    logging.info('float32 matrix multiply peak: %.0f GFLOP/s', results['peak_gflops'])
    for model in names:
        row = measure(model, contenders, FLAGS.repeats, FLAGS.data_dir, log=logging.warning,
                      eval_batches=eval_batches(), **timing_from_flags())
        row['startup_s'] = startup_seconds(model, FLAGS.data_dir)
        results['models'][model] = row
        logging.info('%s: ours/Keras %s, ours/PyTorch %s', model,
                     _ratio(row['ours_over_keras']), _ratio(row['ours_over_torch']))
    if FLAGS.time_to_99:
        keras_mode = results['models'].get('conv_dropout', {}).get('keras_best') or 'keras'
        description = describe('conv_dropout')
        with tempfile.NamedTemporaryFile('w', suffix='.json', delete=False) as f:
            json.dump(description, f)
        results['time_to_99'] = {}
        for i, seed in enumerate(map(int, FLAGS.seeds)):
            for name in (('ours', keras_mode) if i % 2 == 0 else (keras_mode, 'ours')):
                result = run_worker(name, 'time_to_99', f.name, seed=seed,
                                    data_dir=FLAGS.data_dir)
                results['time_to_99'].setdefault(name, []).append({'seed': seed, **result})
                logging.info('time to 99%%, %s, seed %d: %s', name, seed, result)
        os.remove(f.name)
    if FLAGS.run_parts:
        results['run_parts'] = {name: readme_command_seconds(FLAGS.data_dir, extra)
                                for name, extra in RUN_PARTS.items()}
    if FLAGS.readme_command:  # run once: the first of the parts is the command as it is
        results['readme_command'] = results['run_parts']['readme_command'] \
            if FLAGS.run_parts else readme_command_seconds(FLAGS.data_dir)
    print(markdown(results))
    if FLAGS.json:
        files.write_json(FLAGS.json, results)
    return 0


if __name__ == '__main__':
    cli.run(main, define_flags)
