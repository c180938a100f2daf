"""The networks with one of the talk's idioms written another way, made from their own
source: what the talk's literal lines cost, measured against what a library would write.

    --bias=bias_add         every `... + B` of a network (B, B1, Bi, B[-1]: a bias) is
                            written `tf.nn.bias_add(..., B)`, an op whose gradient
                            (BiasAddGrad) oneDNN can fuse into the filter gradient; the
                            talk's `+` is an AddV2 whose bias gradient is a separate Sum
    --batch_norm=fused      batch norm's `tf.nn.moments` and `batch_normalization`
                            (models.batchnorm, as the published code wrote them) replaced by
                            one `tf.nn.fused_batch_norm` (models.batchnorm_fused)

graph_mnist.models is parsed (ast), the chosen lines rewritten, and the result compiled
into a module of its own, once per choice: the same functions, the same variables in
the same order (a seed gives the same initial weights), only those lines changed. The
defaults are the talk's; `python -m graph_mnist.explain --code --model=conv --bias=bias_add`
prints the lines that change.
"""

import ast
import functools
import importlib.util
import inspect

from graph_mnist import models

BIAS = ('plus', 'bias_add')         # the talk's `+ B`, or tf.nn.bias_add
BATCH_NORM = ('moments', 'fused')   # the published code's tf.nn.moments, or fused


def is_bias(node):
    """B, B1, Bi or B[...]: the names the talk's code gives its biases."""
    if isinstance(node, ast.Subscript):
        node = node.value
    return isinstance(node, ast.Name) and node.id[:1] == 'B' and (
        node.id[1:].isdigit() or node.id[1:] in ('', 'i'))


class Rewriter(ast.NodeTransformer):
    def __init__(self, bias, batch_norm):
        self.bias, self.batch_norm = bias, batch_norm

    def visit_BinOp(self, node):
        self.generic_visit(node)
        if self.bias == 'bias_add' and isinstance(node.op, ast.Add) and is_bias(node.right):
            call = ast.parse('tf.nn.bias_add(a, b)', mode='eval').body
            call.args = [node.left, node.right]
            return ast.copy_location(call, node)
        return node

    def visit_Call(self, node):
        self.generic_visit(node)
        if self.batch_norm == 'fused' and isinstance(node.func, ast.Name) and \
                node.func.id == 'batchnorm':
            node.func = ast.copy_location(ast.Name('batchnorm_fused', ast.Load()), node.func)
        return node


@functools.lru_cache(maxsize=None)
def networks(bias='plus', batch_norm='moments'):
    """graph_mnist.models, or a module of the same functions with those lines rewritten."""
    if (bias, batch_norm) == (BIAS[0], BATCH_NORM[0]):
        return models
    tree = Rewriter(bias, batch_norm).visit(ast.parse(inspect.getsource(models)))
    spec = importlib.util.spec_from_loader(f'{models.__name__}_{bias}_{batch_norm}',
                                           loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(ast.fix_missing_locations(tree), models.__file__, 'exec'), module.__dict__)
    return module


def source(function, bias='plus', batch_norm='moments'):
    """A network's function as the rewritten module writes it (ast.unparse: comments and
    layout are not kept, so compare it with the literal module's `source` alike)."""
    tree = ast.parse(inspect.getsource(models))
    Rewriter(bias, batch_norm).visit(tree)
    found = next(node for node in tree.body if isinstance(node, ast.FunctionDef)
                 and node.name == function.__name__)
    return ast.unparse(found)
