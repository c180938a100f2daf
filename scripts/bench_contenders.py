"""The benchmark's contenders and what one worker process measures (scripts/benchmark.py
starts one process per measurement and reads its result).

- ours: graph_mnist's own step, as training.loop runs it (a batch from data.Batches,
  Session.run([train_step, cross_entropy, next_step], feed_dict)); also its evaluation
  of the 10,000 test images;
- keras, keras_spe, keras_xla: the network's Keras 3 twin (graph_mnist.styles.twins),
  `model.fit` as a user calls it (jit_compile off), with steps_per_execution=50, and
  with jit_compile on (XLA); the windows are timed inside one fit call by a callback;
- torch: the PyTorch twin in a plain training loop.

A contender may also be named `module:Class` (a class taking (description, mnist,
seed) with train_steps, evaluate and parameters), importable in the worker's process:
the tests' crash double is one.
"""

import importlib
import math
import os
import statistics
import time

import numpy as np

from graph_mnist import data
from graph_mnist.styles import twins

CONTENDERS = ('ours', 'ours_loop', 'keras', 'keras_spe', 'keras_xla', 'torch')
STEPS_PER_RUN = 100  # ours_loop's steps per Session.run
KERAS_STEPS_PER_EXECUTION = 50
WINDOWS = 5
WINDOW_SECONDS = 0.5
STEP_QUANTUM = KERAS_STEPS_PER_EXECUTION  # steps are timed in whole numbers of this
EVALUATIONS = 5  # timed evaluations of the test set per batch size, in ours' processes


class Ours:
    """The talk's loop: one Session.run with its feed_dict per step."""
    steps_per_run = 1
    precision = 'float32'
    changes = {}  # experiments of talk.with_changes: the literal lines written otherwise

    def __init__(self, description, mnist, seed=0):
        import tensorflow as tf

        from graph_mnist import talk
        from graph_mnist import training_graph
        spec = talk.with_changes(description['model'], **self.changes)
        g = self.g = training_graph.build(spec, seed=seed,
                                          loop=self.steps_per_run > 1,
                                          precision=self.precision)
        self.sess = tf.compat.v1.Session(graph=g.graph, config=g.config)
        self.sess.run(g.init)
        self.batches = data.Batches(mnist.train_images, mnist.train_labels, 100, seed)
        self.mnist, self.step = mnist, 0
        if g.loop:  # the training set, into the graph once (not timed)
            self.sess.run(g.loop.load, {g.loop.images: mnist.train_images,
                                        g.loop.labels: mnist.train_labels})

    def train_steps(self, count):
        g = self.g
        for _ in range(count):  # training.loop's step, its books left out
            batch_X, batch_Y = self.batches(self.step)
            _, _, after = self.sess.run([g.train_step, g.cross_entropy, g.next_step],
                                        {g.X: batch_X, g.Y_: batch_Y, g.pkeep: g.spec.pkeep,
                                         g.step: self.step})
            self.step = int(after)

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
        return self.g.parameters


class OursLoop(Ours):
    """The loop moved into the graph (`--steps_per_run=100`): the training set held in
    the graph, 100 steps per Session.run, as graph_mnist.training runs them."""
    steps_per_run = STEPS_PER_RUN

    def train_steps(self, count):
        g = self.g
        while count:  # training.loop's run of the loop in the graph
            steps = range(self.step, self.step + min(self.steps_per_run, count))
            _, after = self.sess.run([g.loop.cross_entropy, g.loop.next_step],
                                     {g.loop.steps: len(steps), g.loop.first: self.step,
                                      g.loop.orders: self.batches.orders(steps),
                                      g.pkeep: g.spec.pkeep})
            count -= len(steps)
            self.step = int(after)


class Keras:
    jit_compile = False
    steps_per_execution = 1

    def __init__(self, description, mnist, seed=0):
        self.net = twins.keras_model(description, seed, self.jit_compile, self.steps_per_execution)
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


class OursBfloat16(Ours):
    """The talk's loop over the same graph rewritten to bfloat16 (--precision=bfloat16)."""
    precision = 'bfloat16'


class OursBiasAdd(Ours):
    """The talk's loop, its biases added by tf.nn.bias_add (--bias=bias_add)."""
    changes = {'bias': 'bias_add'}


class OursLoopBiasAdd(OursLoop):
    """The loop in the graph, its biases added by tf.nn.bias_add."""
    changes = {'bias': 'bias_add'}


class OursFusedBatchNorm(Ours):
    """The talk's loop, batch norm by tf.nn.fused_batch_norm (--batch_norm=fused)."""
    changes = {'batch_norm': 'fused'}


class KerasXLA(Keras):
    jit_compile = True


class KerasSteps(Keras):
    """Keras' own remedy for small networks: `steps_per_execution` runs that many
    training steps per call of its compiled function (one Python round trip, one
    callback call, per 50 steps)."""
    steps_per_execution = KERAS_STEPS_PER_EXECUTION


class Torch:
    def __init__(self, description, mnist, seed=0):
        import torch
        torch.set_num_threads(os.cpu_count())
        self.torch = torch
        self.net = twins.torch_model(description, seed)
        self.loss_scale = description['loss_scale']
        optimizer = torch.optim.SGD if description['optimizer'] == 'sgd' else torch.optim.Adam
        trained = [p for p in self.net.parameters() if p.requires_grad]
        self.optimizer = optimizer(trained, lr=1.0)  # x the schedule below
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: twins.rate_at(description['rate'], step))
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


class KerasStepsBfloat16(KerasSteps):
    """Keras at its best in bfloat16: its `mixed_bfloat16` policy (layers compute in
    bfloat16, variables stay float32), like for like with ours_bf16. The policy is
    process-wide: each contender runs in a process of its own."""

    def __init__(self, description, mnist, seed=0):
        import keras
        keras.mixed_precision.set_global_policy('mixed_bfloat16')
        super().__init__(description, mnist, seed)


WORKERS = {'ours': Ours, 'ours_loop': OursLoop, 'keras': Keras, 'keras_spe': KerasSteps,
           'keras_xla': KerasXLA, 'torch': Torch, 'ours_bf16': OursBfloat16,
           'keras_spe_bf16': KerasStepsBfloat16, 'ours_bias_add': OursBiasAdd,
           'ours_loop_bias_add': OursLoopBiasAdd, 'ours_fused_bn': OursFusedBatchNorm}


def contender_class(name):
    """The class of contender `name` (its @suffixes aside): one of WORKERS, or
    `module:Class`. KeyError when there is none."""
    base = name.split('@')[0]
    if base in WORKERS:
        return WORKERS[base]
    module, _, attribute = base.partition(':')
    if not attribute:
        raise KeyError(base)
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError):
        raise KeyError(base) from None




def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def matmul_peak_gflops(n=2048, repeats=5):
    """float32 matrix multiply through numpy: the machine's practical peak."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = np.random.default_rng(1).random((n, n), dtype=np.float32)
    a @ b
    return 2 * n ** 3 / min(timed(lambda: a @ b) for _ in range(repeats)) / 1e9


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
    return [timed(lambda: contender.train_steps(per_window)) for _ in range(windows)]


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
    if getattr(contender_class(name), 'changes', {}).get('batch_norm') and \
            'batchnorm' not in description['model']:
        return {'unavailable': 'no batch norm in this network'}
    mnist = data.load(data_dir, log=lambda message: None)
    contender = contender_class(name)(description, mnist, seed)
    if task == 'time_to_99':
        seconds, step = time_to_99(contender)
        return {'seconds': seconds, 'step': step}
    contender.train_steps(warmup)
    pace = timed(lambda: contender.train_steps(STEP_QUANTUM)) / STEP_QUANTUM
    per_window = steps_per_window(window_seconds, pace)
    seconds = timed_windows(contender, per_window, windows)
    result = {'seconds_per_step': statistics.median(seconds) / per_window,
              'windows': seconds, 'steps_per_window': per_window,
              'parameters': contender.parameters()}
    if name.split('@')[0] == 'ours':  # its evaluation of the test set, per batch size
        costs = {batch: [] for batch in eval_batches}
        for _ in range(EVALUATIONS):  # batch sizes interleaved
            for batch in eval_batches:
                costs[batch].append(timed(lambda: contender.evaluate(batch)))
        result['eval_ms_by_batch'] = {str(b): 1000 * statistics.median(c)
                                      for b, c in costs.items()}
        result['eval_ms'] = result['eval_ms_by_batch'][str(eval_batches[0])]
    return result
