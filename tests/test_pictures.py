"""The talk's teaching points in talk.ipynb, drawn from a trained run's own tensors
(graph_mnist.pictures): each picture shows what the checkpoint holds, each count what
the graph holds."""

from conftest import synthetic_mnist
import numpy as np
import pytest
import tensorflow as tf

from graph_mnist import pictures
from graph_mnist import training


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """{model: workdir} of two short runs on generated digits, a checkpoint at the end."""
    mnist, found = synthetic_mnist(), {}
    for model in ('conv', 'five_layers_sigmoid'):
        workdir = str(tmp_path_factory.mktemp(model))
        training.train(mnist, training.Config(model, iterations=30, vis='none'), workdir)
        found[model] = workdir
    return found, mnist


def checkpoint_values(workdir):
    reader = tf.train.load_checkpoint(f'{workdir}/checkpoints')
    return {name: reader.get_tensor(name) for name in ('W1', 'B1')}


def test_the_counts_are_the_graphs_and_put_the_weights_in_the_dense_layer():
    rows = {name: (shape, weights, neurons)
            for name, shape, weights, neurons in pictures.parameters('conv_dropout')}
    assert rows['W1'] == ([6, 6, 1, 6], 6 * 6 * 6 + 6, 28 * 28 * 6)  # stride 1: 28x28
    assert rows['W2'][2] == 14 * 14 * 12 and rows['W3'][2] == 7 * 7 * 24  # stride 2, 2
    assert rows['W4'] == ([7 * 7 * 24, 200], 7 * 7 * 24 * 200 + 200, 200)
    total = sum(weights for _, weights, _ in rows.values())
    assert total == 244_076 and rows['W4'][1] / total > 0.96  # what the notebook says
    # the talk's softmax: "w, the weights, is a variable of almost 8,000 values"
    assert pictures.parameters('softmax') == [('W', [784, 10], 7850, 10)]
    assert '244,076' in pictures.parameter_table('conv_dropout')


def test_filters_are_the_checkpoints_first_layer(trained):
    runs_, mnist = trained
    picture = pictures.filters(runs_['conv'])
    assert picture.data.startswith(b'\x89PNG')
    with pictures.restored(runs_['conv']) as (net, sess):
        W1 = sess.run(pictures.variables(net.graph)['W1'])
    np.testing.assert_array_equal(W1, checkpoint_values(runs_['conv'])['W1'])
    with pytest.raises(pictures.PicturesError, match='no convolutional layer'):
        pictures.filters(runs_['five_layers_sigmoid'])


def test_feature_maps_are_the_convolutions_of_the_trained_filters(trained):
    runs_, mnist = trained
    image = mnist.test_images[0]
    Y1, Y2, Y3 = pictures.layer_maps(runs_['conv'], image)
    assert (Y1.shape, Y2.shape, Y3.shape) == ((1, 28, 28, 4), (1, 14, 14, 8), (1, 7, 7, 12))
    held = checkpoint_values(runs_['conv'])
    expected = tf.nn.relu(tf.nn.conv2d(image.reshape(1, 28, 28, 1), held['W1'], strides=1,
                                       padding='SAME') + held['B1'])
    np.testing.assert_allclose(Y1, expected.numpy(), rtol=1e-5, atol=1e-6)
    assert pictures.feature_maps(runs_['conv'], image).data.startswith(b'\x89PNG')


def test_the_sigmoids_derivative_is_tensorflows_and_at_most_a_quarter(trained):
    runs_, mnist = trained
    x = np.linspace(-6, 6, 121)
    y, dy = pictures.sigmoid_derivative(x)
    np.testing.assert_allclose(dy, y * (1 - y), atol=1e-6)
    assert dy.max() == pytest.approx(0.25) and x[dy.argmax()] == 0
    slopes = pictures.hidden_slopes(runs_['five_layers_sigmoid'], mnist.test_images[:50])
    assert list(slopes) == ['Y1', 'Y2', 'Y3', 'Y4']
    assert [v.size for v in slopes.values()] == [50 * n for n in (200, 100, 60, 30)]
    assert all(0 <= v.min() and v.max() <= 0.25 for v in slopes.values())
    assert pictures.sigmoid_slopes(runs_['five_layers_sigmoid'],
                                   mnist.test_images[:50]).data.startswith(b'\x89PNG')
    with pytest.raises(pictures.PicturesError, match='no sigmoid layer'):
        pictures.hidden_slopes(runs_['conv'], mnist.test_images[:5])
