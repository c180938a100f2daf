r"""Training throughput of the talk's networks: graph_mnist's loop, Keras, PyTorch.

    python scripts/benchmark.py                                   # all seven
    python scripts/benchmark.py --models=conv_dropout --steps=500 --repeats=3 --json=out.json
    python scripts/benchmark.py --models=conv_dropout --time_to_99

For each network, in one process and interleaved (ours, Keras, PyTorch, ours, Keras,
...: machine noise hits all alike), the steady-state training throughput in images per
second, median over --repeats timings of --steps steps after a warm-up:

- ours: graph_mnist.train's own training step (train.training_step: batch from
  data.Batches, Session.run(train_step, feed_dict)), test evaluation excluded;
- Keras: the same layers, initialisation, optimizer and learning-rate schedule, batch
  100, `model.fit` on the training set;
- PyTorch: the same, in a plain training loop (skipped when torch is not installed).

Also: milliseconds for one evaluation of the 10,000 test images (ours), seconds from
process start to the training loop (`python -m graph_mnist.train`), and the achieved
GFLOP/s against the float32 matrix-multiply peak measured by numpy in the same run.

The operation count is the network's own (models.training_flops_per_image, from the
layers read off its graph), and so are the Keras and PyTorch twins: built layer by
layer from models.layers, checked against the graph by tests/test_benchmark.py.
"""

if __name__ == '__main__':
    from graph_mnist import cli
    cli.before_tensorflow()

import os
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

from graph_mnist import data
from graph_mnist import files
from graph_mnist import models
from graph_mnist import runs
from graph_mnist import train



# --------------------------------------------------------------------------- the machine


def matmul_peak_gflops(n=2048, repeats=5):
    """float32 matrix multiply through numpy: the machine's practical peak."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = np.random.default_rng(1).random((n, n), dtype=np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --------------------------------------------------------------------------- ours


class Ours:
    name = 'graph_mnist'

    def __init__(self, model, mnist, seed=0):
        self.g = models.build(model, seed=seed)
        self.sess = train.open_session(self.g)
        self.sess.run(self.g.init)
        self.batches = data.Batches(mnist.train_images, mnist.train_labels, 100, seed)
        self.mnist, self.step = mnist, 0

    def train_steps(self, count):
        for _ in range(count):
            batch_X, batch_Y = self.batches(self.step)
            train.training_step(self.sess, self.g, batch_X, batch_Y, self.step)
            self.step += 1

    def evaluate(self):
        g = self.g
        return self.sess.run(g.accuracy, g.test_feed(self.mnist.test_images,
                                                     self.mnist.test_labels))

    def parameters(self):
        return models.trainable_parameters(self.g)

    def close(self):
        self.sess.close()


# --------------------------------------------------------------------------- Keras


def keras_learning_rate(rate):
    """The network's learning rate (models.ConstantRate or DecayingRate) for Keras."""
    import keras

    if isinstance(rate, models.ConstantRate):
        return rate.rate

    class Decaying(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step = keras.ops.cast(step, 'float32')
            return rate.floor + rate.start * keras.ops.exp(-step / rate.period)

        def get_config(self):
            return rate._asdict()

    return Decaying()


def keras_model(model, seed=0):
    """The Keras twin of network `model`, layer by layer from models.layers."""
    import keras
    keras.utils.set_random_seed(seed)
    spec = models.NETWORKS[model]
    stack = [keras.Input((28, 28, 1))]
    for layer in models.layers(model):
        if layer.kind == 'dropout':
            stack.append(keras.layers.Dropout(layer.rate))
            continue
        bias = keras.initializers.Constant(layer.bias)
        settings = dict(
            kernel_initializer=keras.initializers.Zeros() if layer.init == 'zeros' else
            keras.initializers.TruncatedNormal(stddev=models.WEIGHT_STDDEV, seed=seed))
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
                epsilon=models.BN_EPSILON, scale=layer.scale, beta_initializer=bias))
            stack.append(keras.layers.Activation(layer.activation))
    net = keras.Sequential(stack)
    rate = keras_learning_rate(spec.learning_rate)
    if spec.optimizer is models.SGD:
        # our loss is the batch mean x LOSS_SCALE; Keras' is the mean: the same steps need
        # a rate LOSS_SCALE times larger (Adam does not care about the scale)
        optimizer = keras.optimizers.SGD(rate * models.LOSS_SCALE)
    else:
        optimizer = keras.optimizers.Adam(rate)
    net.compile(optimizer=optimizer, loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                metrics=['accuracy'])
    return net


class Keras:
    name = 'Keras fit'

    def __init__(self, model, mnist, seed=0):
        self.net = keras_model(model, seed)
        self.mnist = mnist
        self.rng = np.random.default_rng(seed)
        self.order = np.empty(0, np.int64)

    def train_steps(self, count):
        # one fit call over the next `count` batches of a shuffled training set (epochs
        # reshuffled): Keras' own loop and data pipeline, as a user would call it
        while len(self.order) < count * 100:
            self.order = np.concatenate([self.order, self.rng.permutation(60000)])
        chosen, self.order = self.order[:count * 100], self.order[count * 100:]
        self.net.fit(self.mnist.train_images[chosen], self.mnist.train_labels[chosen],
                     batch_size=100, epochs=1, shuffle=False, verbose=0)

    def evaluate(self):
        return self.net.evaluate(self.mnist.test_images, self.mnist.test_labels,
                                 batch_size=10000, verbose=0)[1]

    def parameters(self):
        return self.net.count_params()

    def close(self):
        pass


# --------------------------------------------------------------------------- PyTorch


def torch_model(model, seed=0):
    """The PyTorch twin of network `model`, layer by layer from models.layers."""
    import torch
    from torch import nn
    torch.manual_seed(seed)
    activations = {'relu': nn.ReLU, 'sigmoid': nn.Sigmoid}
    modules, flat = [], False
    for layer in models.layers(model):
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
                std = models.WEIGHT_STDDEV
                nn.init.trunc_normal_(weighted.weight, std=std, a=-2 * std, b=2 * std)
            if with_bias:
                weighted.bias.fill_(layer.bias)
        modules.append(weighted)
        if layer.batch_norm:
            normalise = norm(layer.n_out, eps=models.BN_EPSILON)
            with torch.no_grad():
                normalise.bias.fill_(layer.bias)
            normalise.weight.requires_grad_(layer.scale)  # no scale: stays 1, not trained
            modules.append(normalise)
        if layer.activation:
            modules.append(activations[layer.activation]())
    return nn.Sequential(*modules)


class Torch:
    name = 'PyTorch'

    def __init__(self, model, mnist, seed=0):
        import torch
        torch.set_num_threads(os.cpu_count())
        self.torch = torch
        self.net = torch_model(model, seed)
        spec = models.NETWORKS[model]
        optimizer = torch.optim.SGD if spec.optimizer is models.SGD else torch.optim.Adam
        trained = [p for p in self.net.parameters() if p.requires_grad]
        self.optimizer = optimizer(trained, lr=1.0)  # x the schedule below
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, spec.learning_rate.at)
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
                                                     self.labels[chosen]) * models.LOSS_SCALE
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
        return sum(p.numel() for p in self.net.parameters())

    def close(self):
        pass


def torch_available():
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


# --------------------------------------------------------------------------- measuring


def throughput(contenders, steps, repeats, warmup):
    """{name: images per second}, median of `repeats` interleaved timings."""
    for c in contenders:
        c.train_steps(warmup)
    times = {c.name: [] for c in contenders}
    for _ in range(repeats):
        for c in contenders:
            times[c.name].append(_timed(lambda: c.train_steps(steps)))
    return {name: 100 * steps / statistics.median(t) for name, t in times.items()}, times


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


def time_to_99(contender, limit=10000, every=100):
    """Wall time, evaluations included, until the test accuracy on all 10,000 test
    images first reaches 0.99, evaluating every `every` steps: (seconds, step), or
    (None, None) within `limit` steps."""
    start = time.perf_counter()
    for step in range(every, limit + 1, every):
        contender.train_steps(every)
        if contender.evaluate() >= 0.99:
            return time.perf_counter() - start, step
    return None, None


FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_list('models', list(models.NETWORKS), 'Networks to measure.')
    flags.DEFINE_integer('steps', 300, 'Training steps per timing.', lower_bound=1)
    flags.DEFINE_integer('repeats', 3, 'Timings per contender (median kept).', lower_bound=1)
    flags.DEFINE_integer('warmup', 50, 'Steps before timing.', lower_bound=0)
    flags.DEFINE_string('json', None, 'Also write the results here as JSON.')
    flags.DEFINE_bool('time_to_99', False, 'Also measure conv_dropout\'s time to 99% test '
                      'accuracy, ours against Keras.')
    flags.DEFINE_list('seeds', ['0'], 'Seeds for --time_to_99.')
    flags.DEFINE_string('data_dir', None, 'MNIST directory.')


def main(argv):
    del argv
    unknown = sorted(set(FLAGS.models) - set(models.NETWORKS))
    if unknown:
        raise app.UsageError(f'unknown --models {unknown}; choose from {list(models.NETWORKS)}')
    if FLAGS.json and os.path.exists(FLAGS.json):
        raise runs.WorkdirError(f'{FLAGS.json} already exists; choose another --json')
    mnist = data.load(FLAGS.data_dir, log=logging.info)
    peak = matmul_peak_gflops()
    print(f'float32 matrix multiply peak (numpy, 2048x2048): {peak:.0f} GFLOP/s', flush=True)
    have_torch = torch_available()
    if not have_torch:
        print('PyTorch: skipped: torch not installed')
    results = {'peak_gflops': peak, 'command': ' '.join(sys.argv), 'date': time.strftime(
        '%Y-%m-%d'), 'tensorflow': tf.__version__, 'models': {}}
    for model in FLAGS.models:
        kinds = [Ours, Keras] + ([Torch] if have_torch else [])
        contenders = [kind(model, mnist) for kind in kinds]
        rates, times = throughput(contenders, FLAGS.steps, FLAGS.repeats, FLAGS.warmup)
        ours = contenders[0]
        eval_ms = 1000 * statistics.median(_timed(ours.evaluate) for _ in range(3))
        flops = models.training_flops_per_image(model)
        row = {
            'images_per_second': rates,
            'ratio_to_keras': rates['graph_mnist'] / rates['Keras fit'],
            'ratio_to_torch': rates['graph_mnist'] / rates['PyTorch'] if have_torch else None,
            'ms_per_step': {k: 100_000 / v for k, v in rates.items()},
            'eval_ms': eval_ms,
            'startup_s': startup_seconds(model, FLAGS.data_dir),
            'training_mflop_per_image': flops / 1e6,
            'achieved_gflops': {k: v * flops / 1e9 for k, v in rates.items()},
            'fraction_of_peak': {k: v * flops / 1e9 / peak for k, v in rates.items()},
            'parameters': {c.name: c.parameters() for c in contenders},
            'timings_s': times,
        }
        for c in contenders:
            c.close()
        results['models'][model] = row
        print(f"{model:34} ours {rates['graph_mnist']:8.0f} img/s  Keras {rates['Keras fit']:8.0f}"
              + (f"  PyTorch {rates['PyTorch']:8.0f}" if have_torch else '')
              + f"  ours/Keras {row['ratio_to_keras']:.2f}"
              + (f"  ours/PyTorch {row['ratio_to_torch']:.2f}" if have_torch else '')
              + f"  eval {eval_ms:.0f} ms  start-up {row['startup_s']:.1f} s  "
              f"{row['achieved_gflops']['graph_mnist']:.1f} GFLOP/s "
              f"({row['fraction_of_peak']['graph_mnist']:.1%} of peak)", flush=True)
    if FLAGS.time_to_99:
        results['time_to_99'] = {}
        for seed in map(int, FLAGS.seeds):
            for kind in (Ours, Keras):
                contender = kind('conv_dropout', mnist, seed)
                seconds, step = time_to_99(contender)
                contender.close()
                results['time_to_99'].setdefault(kind.name, []).append(
                    {'seed': seed, 'seconds': seconds, 'step': step})
                print(f'time to 99%, conv_dropout, {kind.name}, seed {seed}: '
                      + (f'{seconds:.1f} s (step {step})' if seconds else 'not within 10,000 steps'),
                      flush=True)
    print(markdown(results))
    if FLAGS.json:
        files.write_json(FLAGS.json, results)


def markdown(results):
    lines = ['| network | ours img/s | Keras img/s | PyTorch img/s | ours/Keras | ours/PyTorch '
             '| eval 10k (ms) | start-up (s) | MFLOP/img (train) | ours GFLOP/s | of peak |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    for model, r in results['models'].items():
        rates = r['images_per_second']
        torch_rate = f"{rates['PyTorch']:.0f}" if 'PyTorch' in rates else 'skipped'
        torch_ratio = f"{r['ratio_to_torch']:.2f}" if r['ratio_to_torch'] else '-'
        lines.append(
            f"| `{model}` | {rates['graph_mnist']:.0f} | {rates['Keras fit']:.0f} | {torch_rate} "
            f"| {r['ratio_to_keras']:.2f} | {torch_ratio} | {r['eval_ms']:.0f} "
            f"| {r['startup_s']:.1f} | {r['training_mflop_per_image']:.2f} "
            f"| {r['achieved_gflops']['graph_mnist']:.1f} "
            f"| {r['fraction_of_peak']['graph_mnist']:.1%} |")
    lines.append(f"\nPeak: {results['peak_gflops']:.0f} GFLOP/s (numpy float32 matmul).")
    return '\n'.join(lines)


if __name__ == '__main__':
    cli.run(main, define_flags)
