"""The talk's steps: how each network was trained (optimizer, learning rate, dropout,
steps) and what the talk said it reached, in its words; then the experiments it
invites (--learning_rate, --pkeep, --layers).

`NETWORKS[name]` is the one place a network's settings and figure live; the networks
themselves are graph_mnist.models, the graph around them graph_mnist.training_graph.
Quotes are the transcript's words (../shared/tools/talk-quotes checks them).
"""

import functools
import math
from typing import Callable
from typing import NamedTuple

import tensorflow as tf

from graph_mnist import models
from graph_mnist import rewrite

v1 = tf.compat.v1


class ConstantRate(NamedTuple):
    """A fixed learning rate."""
    rate: float

    def __call__(self, step):
        return tf.constant(self.rate, tf.float32)

    def __str__(self):
        return f'{self.rate:g}'


class DecayingRate(NamedTuple):
    """floor + start * exp(-step/period): start fast, slow down (the talk's decay)."""
    start: float = 0.003
    period: float = 2000
    floor: float = 0.0001

    def __call__(self, step):
        return self.floor + v1.train.exponential_decay(self.start, step, self.period, 1 / math.e)

    def __str__(self):
        return f'{self.floor:g} + {self.start:g}·e^(−step/{self.period:g})'


class Talk(NamedTuple):
    """One step of the talk: what it changed, why, and what it reached, in its words."""
    accuracy: float    # the talk's figure to check (0.993 for "99.3%"); None: it gives none
    says: str          # its words about the result, verbatim ("..." where words are left out)
    code: float = None  # the published code's note for this network (mnist_*.py) ...
    code_is: str = 'final'  # ... a 'final' accuracy (mnist_2.x) or the 'max' (mnist_3.x)
    change: str = ''   # what this step changes from the one before (our words)
    why: str = ''      # the talk's reason for the change, verbatim
    settings: str = ''  # where each setting comes from: the talk, its published code, or us


class Spec(NamedTuple):
    """How the talk trained one network: the one place its settings and figure live."""
    network: Callable          # X, pkeep -> Ylogits
    optimizer: Callable        # learning rate -> a tf.compat.v1.train optimizer
    learning_rate: Callable    # step tensor -> learning-rate tensor (ConstantRate, DecayingRate)
    pkeep: float               # keep probability fed while training (1.0: no dropout)
    iterations: int            # the talk's number of training steps
    talk: Talk                 # what the talk reports
    batch_norm: bool = False   # beyond the talk: network(X, pkeep, tst, step), see batchnorm
    plain: str = None          # batch norm networks: the talk's network they improve upon
    name: str = None           # its --model name (the key in NETWORKS)
    changes: tuple = ()        # the experiments applied, ((setting, value), ...): with_changes

    @property
    def talk_accuracy(self):
        """The talk's figure as written in history.json and the summary line."""
        return self.talk.says

    @property
    def function(self):
        """The network's function in graph_mnist.models, or in its rewritten copy
        (--bias, --batch_norm: graph_mnist.rewrite); with --layers, `network` is a partial
        of it."""
        network = self.network
        return network.func if isinstance(network, functools.partial) else network

    @property
    def has_dropout(self):
        """Does the network shoot neurons when fed pkeep < 1 (--pkeep means something)?"""
        return self.function.__name__ in ('five_layers_relu_dropout', 'conv_dropout',
                                          'batchnorm_conv')

    @property
    def dense(self):
        """One of the five dense layers networks (--layers means something)?"""
        return self.function.__name__ in ('five_layers_sigmoid', 'five_layers_relu',
                                          'five_layers_relu_dropout')

    def testing_flag(self):
        """Batch norm's placeholder `tst` (default False: training; True: the moving
        averages), None for the talk's eight (one more op would shift their random
        seeds). Call inside the graph being built."""
        return v1.placeholder_with_default(False, [], name='tst') if self.batch_norm else None

    def logits(self, X, pkeep, tst=True, step=0):
        """Ylogits of this network on X: the talk's eight take (X, pkeep); batch norm's
        also take tst (testing: use the moving averages) and step (which moves them),
        tensors or plain values. The one place that knows how a network is called."""
        if not self.batch_norm:
            return self.network(X, pkeep)
        return self.network(X, pkeep, tf.convert_to_tensor(tst), tf.convert_to_tensor(step))


SGD, ADAM = v1.train.GradientDescentOptimizer, v1.train.AdamOptimizer
DECAY = DecayingRate()  # 0.0001 + 0.003·e^(−step/2000)
_ADAM_DECAY = 'code: Adam, the decay 0.0001 + 0.003·e^(−step/2000)'

# The talk's order. Names are the --model values. Quotes are the transcript's words.
NETWORKS = {
    'softmax': Spec(models.softmax, SGD, ConstantRate(0.005), 1.0, 2000, Talk(
        0.92, '"after 2,000 rounds of training ... it\'s already capable of recognizing 92% '
              'of our images"',
        change='one layer of 10 softmax neurons on the 784 pixels',
        why='"from the simplest possible network all the way to 99% accuracy"',
        settings='talk: the layer, cross-entropy, batches of 100, 2,000 steps; '
                 'code: gradient descent at 0.005, weights at 0')),
    'five_layers_sigmoid': Spec(models.five_layers_sigmoid, ADAM, ConstantRate(0.003), 1.0, 10000,
                                Talk(0.979, '"The accuracy got up to 97.9% using five layers."',
                                     code=0.9788,
                                     change='five layers, 200-100-60-30-10, sigmoid',
                                     why='"We\'ll go deep. We can just stack those layers."',
                                     settings='talk: the layers, sigmoid, 10,000 steps; code: '
                                              'Adam at 0.003, weights truncated normal 0.1, '
                                              'biases 0')),
    'five_layers_relu': Spec(models.five_layers_relu, ADAM, ConstantRate(0.003), 1.0, 10000, Talk(
        0.98, '"Let\'s do this for 10,000 iterations, five layers, look at that. 98% '
              'accuracy."', code=0.9825,
        change='ReLU instead of sigmoid, biases 0.1',
        why='"The accuracy shoots up really sharp."',
        settings='talk: ReLU; code: biases 0.1, Adam at 0.003')),
    'five_layers_relu_lrdecay': Spec(models.five_layers_relu, ADAM, DECAY, 1.0, 10000, Talk(
        0.98, '"now we are stable or above 98% accuracy"', code=0.9824,
        change='the learning rate decays from 0.003 to 0.0001',
        why='"when you see noise like that, it means that you are going too fast"',
        settings='talk: an exponential decay; ' + _ADAM_DECAY)),
    'five_layers_relu_lrdecay_dropout': Spec(models.five_layers_relu_dropout, ADAM, DECAY, 0.75,
                                             10000, Talk(
        None, '"Let\'s look at the accuracy. No improvement."', code=0.9817,
        change='dropout after each hidden layer, pkeep 0.75',
        why='"it\'s called overfitting. You look at the solutions, they tell you '
            'overfitting, you need regularization."',
        settings='talk: dropout ("pick a probability, let\'s say 50%"); code: pkeep 0.75')),
    'conv': Spec(models.conv, ADAM, DECAY, 1.0, 10000, Talk(
        0.989, '"We\'ll have to do something more, 98.9."', code=0.9892, code_is='max',
        change='three convolutional layers, 4, 8, 12 patches of 5x5, 4x4, 4x4, strides 1, '
               '2, 2; dense 200',
        why='"So all that shape information is lost."',
        settings='talk: the layers, patches, strides; ' + _ADAM_DECAY)),
    'conv_bigger': Spec(models.conv_dropout, ADAM, DECAY, 1.0, 10000, Talk(
        0.99, '"You see, we are already above 99%."', code=0.9906, code_is='max',
        change='6, 12, 24 patches of 6x6, 5x5, 4x4: conv_dropout\'s layers, no dropout',
        why='"already a little more degrees of freedom. So more patches in each layer."',
        settings='talk: the layers (shown only as curves); ' + _ADAM_DECAY)),
    'conv_dropout': Spec(models.conv_dropout, ADAM, DECAY, 0.75, 10000, Talk(
        0.993, '"I promised you will get above 99 and we are actually quite comfortably '
               'above. We get to 99.3%."', code=0.9931, code_is='max',
        change='dropout on the dense layer, pkeep 0.75',
        why='"there is a lot more neurons in the fully connected layer. So it\'s a lot more '
            'efficient to be shooting them there."',
        settings='talk: dropout on the dense layer; code: pkeep 0.75, the decay, Adam')),
    # beyond the talk: the published code's batch-norm chapter, its settings and notes
    'batchnorm_five_layers_sigmoid': Spec(
        models.batchnorm_five_layers_sigmoid, ADAM, DecayingRate(0.03, 1000), 1.0, 10000,
        Talk(None, 'no figure in its notes (mnist_4.0)'), batch_norm=True,
        plain='five_layers_sigmoid'),
    'batchnorm_five_layers_relu': Spec(
        models.batchnorm_five_layers_relu, ADAM, DecayingRate(0.03, 1000), 1.0, 10000,
        Talk(0.985, '"steady 98.5%", max 0.9859 (mnist_4.1 notes)'), batch_norm=True,
        plain='five_layers_relu_lrdecay'),
    'batchnorm_conv': Spec(
        models.batchnorm_conv, ADAM, DecayingRate(0.02, 1600), 0.75, 10000,
        Talk(0.995, 'max 0.9956, "stable above 0.995" (mnist_4.2 notes)'), batch_norm=True,
        plain='conv_dropout'),
}
NETWORKS = {name: spec._replace(name=name) for name, spec in NETWORKS.items()}
TALK = [name for name, spec in NETWORKS.items() if not spec.batch_norm]  # the talk's eight
BEYOND = [name for name, spec in NETWORKS.items() if spec.batch_norm]

# The experiments the talk invites, one flag each (graph_mnist.train): another learning
# rate, another pkeep ("pick a probability, let's say 50%"), fewer dense layers ("I
# tried, I promise, with four and three and two").
EXPERIMENTS = ('learning_rate', 'pkeep', 'layers', 'bias', 'batch_norm')


def with_changes(name, learning_rate=None, pkeep=None, layers=None, bias=None,
                 batch_norm=None):
    """NETWORKS[name] with the talk's experiments applied (None: the network's own
    setting). learning_rate replaces a constant rate, or the decay's start; pkeep the
    keep probability of a network with dropout; layers (2 to 5) the depth of the dense
    networks; bias and batch_norm write the network's biases or its batch norm another
    way (graph_mnist.rewrite). ValueError, saying why, where a change would change
    nothing."""
    spec = NETWORKS[name]
    if learning_rate is not None:
        if not learning_rate > 0:
            raise ValueError(f'--learning_rate must be above 0, got {learning_rate}')
        rate = spec.learning_rate
        spec = spec._replace(learning_rate=rate._replace(
            **{'rate' if isinstance(rate, ConstantRate) else 'start': learning_rate}))
    if pkeep is not None:
        if not 0 < pkeep <= 1:
            raise ValueError(f'--pkeep is a probability of keeping a neuron, in (0, 1], '
                             f'got {pkeep}')
        if not spec.has_dropout:
            raise ValueError(f'--pkeep changes nothing on {name}: it has no dropout; the '
                             f'networks with dropout: {", ".join(_with(Spec.has_dropout))}')
        spec = spec._replace(pkeep=pkeep)
    if bias not in (None, *rewrite.BIAS) or batch_norm not in (None, *rewrite.BATCH_NORM):
        raise ValueError(f'--bias must be one of {rewrite.BIAS}, --batch_norm one of '
                         f'{rewrite.BATCH_NORM}')
    if batch_norm is not None and not spec.batch_norm:
        raise ValueError(f'--batch_norm is for the batch norm networks '
                         f'({", ".join(n for n, s in NETWORKS.items() if s.batch_norm)}), '
                         f'not {name}')
    if bias or batch_norm:
        written = rewrite.networks(bias or rewrite.BIAS[0], batch_norm or rewrite.BATCH_NORM[0])
        spec = spec._replace(network=getattr(written, spec.function.__name__))
    if layers is not None:
        if not spec.dense:
            raise ValueError(f'--layers is for the dense networks '
                             f'({", ".join(_with(Spec.dense))}), not {name}')
        if not 2 <= layers <= 5:
            raise ValueError(f'--layers must be 2, 3, 4 or 5 (the talk\'s), got {layers}')
        spec = spec._replace(network=functools.partial(spec.network, layers=layers))
    given = (('learning_rate', learning_rate), ('pkeep', pkeep), ('layers', layers),
             ('bias', bias), ('batch_norm', batch_norm))
    return spec._replace(changes=tuple((k, v) for k, v in given if v is not None))


def spec_of(model):
    """A network's name, or its Spec (a run's, with its experiments applied: made once, by
    with_changes, as training.Config.spec), as a Spec."""
    return model if isinstance(model, Spec) else NETWORKS[model]


def _with(prop):
    return [name for name, spec in NETWORKS.items() if prop.fget(spec)]


def describe_changes(run):
    """The experiments of a run (its Spec, from with_changes) as a change from the
    network's settings, in words ('' when there is none): for the dashboard's title."""
    spec, changes, parts = NETWORKS[run.name], dict(run.changes), []
    if changes.get('learning_rate') is not None:
        rate = spec.learning_rate
        was = rate.rate if isinstance(rate, ConstantRate) else rate.start
        kind = 'learning rate' if isinstance(rate, ConstantRate) else 'decay from'
        parts.append(f'{kind} {changes["learning_rate"]:g} (the talk\'s: {was:g})')
    if changes.get('pkeep') is not None:
        parts.append(f'pkeep {changes["pkeep"]:g} (the talk\'s: {spec.pkeep:g})')
    if changes.get('layers') is not None:
        parts.append(f'{changes["layers"]} layers (the talk\'s: 5)')
    if changes.get('bias') == 'bias_add':
        parts.append('biases by tf.nn.bias_add (the talk\'s: + B)')
    if changes.get('batch_norm') == 'fused':
        parts.append('fused batch norm (the code\'s: tf.nn.moments)')
    return ', '.join(parts)
