r"""How long the server takes to write one :predict answer of 100 images as JSON: orjson
writing the numpy outputs (what the server does) against Python converting each
float32 through float(str(x)) for the json module (what it did before), side by side
in rounds.

    python scripts/bench_answer_writer.py --rounds=3
"""

if __name__ == '__main__':
    from graph_mnist import cli
    cli.before_tensorflow()

import json
import timeit

from absl import flags
import numpy as np

from graph_mnist.serving.json_tensor import format_predict
from graph_mnist.serving.json_tensor import plain
from graph_mnist.serving.json_tensor import to_json_bytes

FLAGS = flags.FLAGS


def main(argv):
    del argv
    rng = np.random.default_rng(0)
    outputs = {'digit': rng.integers(0, 10, FLAGS.images).astype(np.int64),
               'probabilities': rng.random((FLAGS.images, 10)).astype(np.float32)}
    answer = format_predict(outputs, row=True)

    def before():
        return json.dumps(plain(answer), separators=(',', ':')).encode()

    def now():
        return to_json_bytes(answer)
    assert json.loads(before()) == json.loads(now())
    for r in range(FLAGS.rounds):
        a = min(timeit.repeat(before, number=200, repeat=5)) / 200
        b = min(timeit.repeat(now, number=200, repeat=5)) / 200
        print(f'round {r + 1}: float(str(x)) and json {a * 1e6:,.0f} us, orjson {b * 1e6:,.0f} '
              f'us: {a / b:.1f}x ({len(now()):,} bytes)')
    return 0


if __name__ == '__main__':
    def define_flags():
        flags.DEFINE_integer('images', 100, 'Images in the answer.', lower_bound=1)
        flags.DEFINE_integer('rounds', 3, 'Rounds, each timing both.', lower_bound=1)
    cli.run(main, define_flags)
