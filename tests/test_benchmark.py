"""scripts/benchmark.py's arithmetic and its twins: no timing is asserted here."""

import os
import sys

import pytest

from graph_mnist import models

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'scripts'))
import benchmark  # noqa: E402


def test_softmax_operation_count_by_hand():
    assert benchmark.forward_macs('softmax') == 784 * 10
    assert benchmark.training_flops_per_image('softmax') == 3 * 2 * 7840


def test_one_conv_layer_by_hand():
    # conv_dropout's first layer: a 6x6x1 patch for each of 6 channels at each of
    # 28x28 output pixels (stride 1, padding SAME)
    first = ('conv', 28, 6, 1, 6, 1)
    assert benchmark.layers('conv_dropout')[0] == first
    assert benchmark.macs([first]) == 28 * 28 * 6 * 6 * 1 * 6
    assert benchmark.macs([('conv', 28, 5, 6, 12, 2)]) == 14 * 14 * 5 * 5 * 6 * 12
    by_hand = (28 * 28 * 6 * 6 * 1 * 6        # conv 6x6x1 -> 6, stride 1: 28x28 out
               + 14 * 14 * 5 * 5 * 6 * 12     # conv 5x5x6 -> 12, stride 2: 14x14 out
               + 7 * 7 * 4 * 4 * 12 * 24      # conv 4x4x12 -> 24, stride 2: 7x7 out
               + 7 * 7 * 24 * 200 + 200 * 10)  # the two dense layers
    assert benchmark.forward_macs('conv_dropout') == by_hand == 985136  # "about 0.99 million"


def test_layer_lists_match_our_networks():
    for model in models.NETWORKS:
        g = models.build(model)
        ours = models.trainable_parameters(g)
        counted = sum(l[1] * l[2] + l[2] if l[0] == 'dense' else
                      l[2] * l[2] * l[3] * l[4] + l[4] if l[0] == 'conv' else 0
                      for l in benchmark.layers(model))
        assert counted == ours, model


@pytest.mark.parametrize('model', list(models.NETWORKS))
def test_keras_twin_has_our_parameter_count(model):
    ours = models.trainable_parameters(models.build(model))
    assert benchmark.keras_model(model).count_params() == ours


@pytest.mark.parametrize('model', list(models.NETWORKS))
def test_pytorch_twin_has_our_parameter_count(model):
    pytest.importorskip('torch', reason='torch not installed (optional for the benchmark)')
    ours = models.trainable_parameters(models.build(model))
    assert sum(p.numel() for p in benchmark.torch_model(model).parameters()) == ours
