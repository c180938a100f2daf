r"""The same network trained the way TensorFlow 2 code is written: what replaced Session.

    --style=graph      the talk's code: a tf.compat.v1 graph, Session.run(train_step, feed_dict)
    --style=function   eager TensorFlow 2: the talk's own network function (graph_mnist.models)
                       called in a tf.function, its gradient taken by a tf.GradientTape,
                       applied by a Keras optimizer
    --style=keras      Keras 3 layers (a Sequential built layer by layer from the network,
                       graph_mnist.styles.twins), trained with model.fit, a Keras
                       callback keeping the books

Both start from the initial values the graph of the same seed starts from (read from a
Session of that graph once), see the same batches (the training loop hands them over),
and take the same steps: the same loss (the talk's cross-entropy, the batch mean times
100), the same optimizer and learning rate, TensorFlow 1's Adam epsilon. Without dropout
their losses match the graph's to float rounding; dropout draws its own random masks in
each style.

Each style trains in its own idiom: `train_function`, a plain Python loop over a
tf.function step; `train_keras`, Keras's `fit` with a callback. Both keep the same
books as the talk's loop (graph_mnist.bookkeeping), which read the net as they read a
Session (SessionNet): the accuracy and loss of a batch, the variables' values, a
checkpoint. Checkpoints are TensorFlow 1 checkpoints
with the graph's variable names (W1, B1, ...), so `graph_mnist.export` reads any style's.
"""

import functools

import keras
import numpy as np
import tensorflow as tf

from graph_mnist import checkpoints
from graph_mnist import talk
from graph_mnist import training_graph
from graph_mnist.styles import twins

v1 = tf.compat.v1

STYLES = ('graph', 'function', 'keras')


def initial_values(model, seed):
    """{name: value} of the network's variables (model: its name or a run's Spec) as the
    graph of this seed initialises them, in the order the network function makes them
    (W1, B1, W2, ...)."""
    g = training_graph.build(model, seed=seed)
    with g.graph.as_default():
        created = {op.name for op in g.graph.get_operations()[:g.minimize_ops.start]}
        network = [v for v in v1.global_variables() if v.op.name in created]
    with v1.Session(graph=g.graph, config=g.config) as sess:
        sess.run(g.init)
        return dict(zip([v.op.name for v in network], sess.run(network)))


class _EagerNet:
    """What the function and Keras styles share: measuring, the variables, checkpoints."""

    def __init__(self, model, seed, loss):
        self.spec = talk.spec_of(model)  # a name, or a run's Spec with its experiments
        if self.spec.batch_norm:
            raise ValueError(f'{self.spec.name}: batch norm\'s moving averages are TensorFlow 1 '
                             'graph collections; --style=function and --style=keras train the '
                             f'talk\'s networks ({", ".join(talk.TALK)})')
        self.loss = loss
        self.initial = initial_values(self.spec, seed)
        self.names = list(self.initial)  # W1, B1, ... in the order made
        self.weight_names = [n for n in self.names if n.startswith('W')]
        self.bias_names = [n for n in self.names if n.startswith('B')]
        self.graph = tf.Graph()  # what TensorBoard shows: the traced step's graph if any
        self.loop = None  # the loop in the graph is the graph style's (--steps_per_run)

        @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1]),
                                      tf.TensorSpec([None, 10])])
        def measure(X, Y_):
            Ylogits = self.logits(X)
            prediction = tf.argmax(Ylogits, 1)
            correct = tf.cast(tf.equal(prediction, tf.argmax(Y_, 1)), tf.float32)
            return (tf.reduce_mean(correct), training_graph.cross_entropy(Ylogits, Y_, self.loss),
                    prediction)
        self._measure = measure

    def logits(self, X):
        """Ylogits with every neuron on (testing)."""
        raise NotImplementedError

    @property
    def variables(self):
        raise NotImplementedError  # the network's tf.Variables, in the order of `names`

    @property
    def parameters(self):
        return sum(int(np.prod(v.shape)) for v in self.variables)

    def learning_rate(self, step):
        rate = self.spec.learning_rate
        if isinstance(rate, talk.ConstantRate):
            return rate.rate
        return twins.rate_at({'kind': 'DecayingRate', **rate._asdict()}, step)

    def measure(self, X, Y_, step):
        """(accuracy, cross-entropy, learning rate, predicted digits) on a batch."""
        acc, xent, predicted = self._measure(tf.constant(X), tf.constant(Y_))
        return float(acc), float(xent), self.learning_rate(step), predicted.numpy()

    def test(self, images, labels):
        """(accuracy, cross-entropy, predicted digits, {name: value} of the variables)."""
        acc, xent, predicted = self._measure(tf.constant(images), tf.constant(labels))
        return float(acc), float(xent), predicted.numpy(), self.values()

    def values(self):
        return {name: v.numpy() for name, v in zip(self.names, self.variables)}

    def optimizer_variables(self):
        raise NotImplementedError

    def init(self):
        pass  # made with the graph's initial values already

    @functools.cached_property
    def saver(self):
        """A TensorFlow 1 Saver of the network under the graph's names, and of the
        optimizer's state under `optimizer/<i>` (eager: it is given its variables)."""
        state = {f'optimizer/{i}': v for i, v in enumerate(self.optimizer_variables())}
        return v1.train.Saver(var_list={**dict(zip(self.names, self.variables)), **state},
                              max_to_keep=3)

    def save(self, workdir, step, history):
        return checkpoints.save(None, self.saver, workdir, step, history)

    def restore(self, path):
        checkpoints.restore(None, self.saver, path)


class FunctionNet(_EagerNet):
    """TensorFlow 2 as it is written today: tf.Variables, a tf.function, a GradientTape.

    The network is the talk's own function from graph_mnist.models, the same Python that
    builds the graph: called in a tf.function it is traced once into a graph of its own
    (AutoGraph), called again it runs that graph. Its tf.Variables are made on the first
    call with the graph's initial values and given back to every later call."""

    style = 'function'

    def __init__(self, model, seed=0, loss='stable', optimizer='keras'):
        """optimizer: 'keras', a Keras optimizer as TensorFlow 2 code uses; 'talk', the
        talk's own tf.compat.v1.train optimizer (eager too), whose rounding is the
        graph's: with it, the losses are the graph's to the last bit (the lesson's proof
        that nothing else differs)."""
        super().__init__(model, seed, loss)
        # dropout's masks: TensorFlow 2 seeds a traced op from the global seed, as the graph
        # seeds it from the graph's (a run's one global setting, as Keras's seed is)
        tf.random.set_seed(seed)
        self._made = []
        self.logits(tf.zeros([1, 28, 28, 1]))  # makes the variables, eagerly, once
        self._step = tf.Variable(0, dtype=tf.int32, trainable=False)
        if optimizer == 'talk':
            self.optimizer = self.spec.optimizer(lambda: self.spec.learning_rate(self._step))
        else:
            self.optimizer = twins.keras_optimizer(twins.describe(self.spec), our_loss=True)
            self.optimizer.build(self.trainable)

        @tf.function(input_signature=[tf.TensorSpec([None, 28, 28, 1]),
                                      tf.TensorSpec([None, 10]), tf.TensorSpec([])])
        def train_step(X, Y_, pkeep):
            with tf.GradientTape() as tape:  # records what the forward pass does ...
                Ylogits = self._call(X, pkeep)
                cross_entropy = training_graph.cross_entropy(Ylogits, Y_, self.loss)
            gradients = tape.gradient(cross_entropy, self.trainable)  # ... and differentiates it
            self.optimizer.apply_gradients(zip(gradients, self.trainable))
            return cross_entropy
        self._train_step = train_step
        self.graph = train_step.get_concrete_function().graph  # traced once, here

    def _call(self, X, pkeep):
        """The network function with our variables: each one it makes is ours, in order."""
        made = iter(self._made)

        def ours(next_creator, **kwargs):
            if len(self._made) < len(self.names):  # the first call: make it, graph's value
                kwargs['initial_value'] = self.initial[self.names[len(self._made)]]
                variable = next_creator(**kwargs)
                self._made.append(variable)
                return variable
            return next(made)

        with tf.variable_creator_scope(ours):
            return self.spec.logits(X, pkeep)

    def logits(self, X):
        return self._call(X, 1.0)

    @property
    def variables(self):
        return self._made

    @property
    def trainable(self):
        return self._made

    def optimizer_variables(self):
        found = self.optimizer.variables
        return [getattr(v, 'value', v) for v in (found() if callable(found) else found)]

    def train_step(self, X, Y_, step):
        self._step.assign(step)  # the talk's optimizer reads its decay's step here
        return float(self._train_step(tf.constant(X), tf.constant(Y_),
                                      tf.constant(self.spec.pkeep, tf.float32)))


class KerasNet(_EagerNet):
    """Keras 3, as a Keras user writes it: layers in a Sequential, compiled, trained by
    `model.fit` (train_keras). Built layer by layer from the network
    (styles.twins.keras_model), compiled with our loss, its weights set to the graph's
    initial values. train_step (one train_on_batch) is for comparing losses step by step."""

    style = 'keras'

    def __init__(self, model, seed=0, loss='stable'):
        super().__init__(model, seed, loss)
        self.model = twins.keras_model(twins.describe(self.spec), seed, loss=loss)
        self.model.set_weights([self.initial[name] for name in self.names])
        self.model.optimizer.build(self.model.trainable_variables)

    def logits(self, X):
        return self.model(X, training=False)

    @property
    def variables(self):
        return [w.value for w in self.model.weights]

    def optimizer_variables(self):
        return [v.value for v in self.model.optimizer.variables]

    def train_step(self, X, Y_, step):
        loss = self.model.train_on_batch(X, Y_)
        return float(loss[0] if isinstance(loss, (list, tuple)) else loss)


def make(style, model, seed=0, loss='stable'):
    """The net of a TensorFlow 2 style (model: a name, or a run's Spec)."""
    return {'function': FunctionNet, 'keras': KerasNet}[style](model, seed, loss)


# ------------------------------------------------------------------ the styles' loops


def train_function(net, batches, books, config, step, stop_requested):
    """TensorFlow 2's loop: a plain Python loop over a tf.function step (FunctionNet).
    The talk's loop, with `net.train_step(batch_X, batch_Y)` for Session.run."""
    while step < config.iterations:
        if stop_requested():
            books.stop(step)  # a checkpoint, then Interrupted
        batch_X, batch_Y = batches(step)
        if books.due('log', step):
            books.training_batch(step, batch_X, batch_Y)
        if books.due('eval', step):
            books.evaluate(step)
        if books.due('checkpoint', step):
            books.checkpoint(step)
        xent = net.train_step(batch_X, batch_Y, step)
        books.watch(xent, step, step + 1)
        step += 1
    return step


def train_keras(net, batches, books, config, step, stop_requested):
    """Keras's loop: model.fit on the same batches (data.Batches, from `step` on), the
    books kept by a callback (KeepTheBooks)."""
    first = step
    dataset = tf.data.Dataset.from_generator(
        lambda: (batches(s) for s in range(first, config.iterations)),
        output_signature=(tf.TensorSpec([None, 28, 28, 1]), tf.TensorSpec([None, 10])))
    net.model.fit(dataset, epochs=1, steps_per_epoch=config.iterations - first, shuffle=False,
                  verbose=0, callbacks=[KeepTheBooks(books, batches, first, stop_requested)])
    return config.iterations


class KeepTheBooks(keras.callbacks.Callback):
    """The books of a run trained by Keras's fit: before each batch, a stop request, the
    log line, the evaluation and the checkpoint when due; after it, the NaN watch on the
    loss Keras reports (the epoch's running mean: NaN once any step's loss is)."""

    def __init__(self, books, batches, first, stop_requested):
        super().__init__()
        self.books, self.batches = books, batches
        self.first, self.stop_requested = first, stop_requested

    def on_train_batch_begin(self, batch, logs=None):
        step, books = self.first + batch, self.books
        if self.stop_requested():
            books.stop(step)  # a checkpoint, then Interrupted: fit ends there
        if books.due('log', step):
            books.training_batch(step, *self.batches(step))
        if books.due('eval', step):
            books.evaluate(step)
        if books.due('checkpoint', step):
            books.checkpoint(step)

    def on_train_batch_end(self, batch, logs=None):
        step = self.first + batch
        self.books.watch(float(logs['loss']), step, step + 1)


TRAIN = {'function': train_function, 'keras': train_keras}
