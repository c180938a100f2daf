"""Several models, their version policies and labels, the config file read again, and a
load that hangs, in the version manager alone (versions.py and decide.py over a real
board), with versions that load in no time: which versions answer, through which
label, in one process or in two that must agree."""

import threading
import time

import pytest

from graph_mnist.serving import config
from graph_mnist.serving.board import Board
from graph_mnist.serving.decide import Decider
from graph_mnist.serving.errors import ServingError
from graph_mnist.serving.versions import Versions


class Loaded:
    """A servable double: knows its version and whether it was closed."""

    def __init__(self, version, path):
        self.version, self.path, self.closed = version, path, False
        self.signatures, self.batchers = {}, {}

    def close(self):
        self.closed = True

    async def retire(self):
        self.close()


class Loader:
    """load(version, path) -> Loaded; a path in `hang` blocks until released (once),
    a path in `slow` takes that many seconds."""

    def __init__(self, hang=(), slow=None):
        self.hang, self.slow, self.released = set(hang), slow or {}, threading.Event()
        self.made, self.calls = [], []

    def __call__(self, model, version, path):
        self.calls.append(path)
        if path in self.hang:
            self.hang.discard(path)
            self.released.wait(30)
        time.sleep(self.slow.get(path, 0))
        loaded = Loaded(version, path)
        self.made.append(loaded)
        return loaded


def versions_under(root, name, *numbers):
    for v in numbers:
        (root / name / str(v)).mkdir(parents=True, exist_ok=True)
        (root / name / str(v) / 'saved_model.pb').write_bytes(b'')
    return str(root / name)


def write_config(path, text):
    path.write_text('model_config_list { ' + text + ' }')
    return config.model_config(str(path))


def until(condition, step, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        step()
        if condition():
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def board():
    made = Board.create(1)
    yield made
    made.close(remove=True)


def manager(board, models, load, **options):
    decider = Decider(board, models, poll_seconds=0.05, **{
        k: options.pop(k) for k in ('config_file', 'config_poll_seconds',
                                    'labels_for_unavailable') if k in options})
    versions = Versions(board, load, decider=decider, retry_seconds=0.05, **options)
    versions.start()
    return versions, decider


TWO = """config { name: 'a' base_path: '%s'
                  model_version_policy { specific { versions: [1, 2] } }
                  version_labels { key: 'stable' value: 1 }
                  version_labels { key: 'canary' value: 2 } }
         config { name: 'b' base_path: '%s' }"""


def test_two_models_each_its_policy_and_labels(tmp_path, board):
    a, b = versions_under(tmp_path, 'a', 1, 2, 3), versions_under(tmp_path, 'b', 1, 2)
    models = write_config(tmp_path / 'models.config', TWO % (a, b))
    versions, _ = manager(board, models, Loader())
    try:
        assert versions.get('a', label='stable').version == 1
        assert versions.get('a', label='canary').version == 2
        assert versions.get('a').version == 2 and versions.get('a', 1).version == 1
        assert versions.get('b').version == 2  # latest 1, TF Serving's default
        for name, version, status in [('a', 3, 404), ('b', 1, 404), ('c', None, 404)]:
            with pytest.raises(ServingError) as refused:
                versions.get(name, version)
            assert refused.value.status == status
        with pytest.raises(ServingError, match='Unrecognized servable version label: beta'):
            versions.get('a', label='beta')
        assert versions.status('a') == [(2, 'AVAILABLE', ''), (1, 'AVAILABLE', '')]
        assert versions.status('a', label='stable') == [(1, 'AVAILABLE', '')]
        assert versions.status('b') == [(2, 'AVAILABLE', '')]
    finally:
        versions.stop()


def test_the_config_read_again_adds_and_removes_models_and_moves_labels(tmp_path, board):
    a, b = versions_under(tmp_path, 'a', 1, 2, 3), versions_under(tmp_path, 'b', 1)
    c = versions_under(tmp_path, 'c', 4)
    path = tmp_path / 'models.config'
    load = Loader()
    versions, decider = manager(board, write_config(path, TWO % (a, b)), load,
                                config_file=str(path), config_poll_seconds=0.05)
    try:
        b1 = versions.get('b')
        # canary moves to 3 (loaded first: it answers through the label only once
        # available), stable to 2; b removed; c added
        write_config(path, TWO.replace('[1, 2]', '[2, 3]').replace("value: 2", "value: 3")
                     .replace("value: 1", "value: 2").replace("name: 'b'", "name: 'c'")
                     % (a, c))

        def step():
            versions.follow()
            decider.step()
        assert until(lambda: 'b' not in board.decision() and
                     'c' in board.decision() and board.decision()['c']['served'], step)
        assert versions.get('c').version == 4 and b1.closed
        assert versions.get('a', label='canary').version == 3
        assert versions.get('a', label='stable').version == 2
        assert [v for v, _, _ in versions.status('a')] == [3, 2, 1]
        assert dict((v, s) for v, s, _ in versions.status('a'))[1] in ('UNLOADING', 'END')
        with pytest.raises(ServingError) as gone:
            versions.get('b')
        assert gone.value.status == 404
        # a file that no longer reads: said, and the config served before stays
        path.write_text('model_config_list { config { name: ')
        for _ in range(10):
            step()
        assert versions.get('c').version == 4
    finally:
        versions.stop()


def test_a_label_waits_for_its_version_unless_told_otherwise(tmp_path, board):
    a = versions_under(tmp_path, 'a', 1, 2)
    slow = {f'{a}/2': 0.5}
    text = ("config { name: 'a' base_path: '%s' model_version_policy { all {} } "
            "version_labels { key: 'canary' value: 2 } }" % a)
    for allowed in (False, True):
        models = write_config(tmp_path / 'models.config', text)
        decider = Decider(board, models, poll_seconds=0.05, labels_for_unavailable=allowed)
        versions = Versions(board, Loader(slow=slow), decider=decider)
        try:
            decider.step()
            versions.follow()
            assert until(lambda: board.decision()['a']['served'] == [1],
                         lambda: (versions.follow(), decider.step()))
            assert ('canary' in board.decision()['a']['labels']) == allowed
            assert until(lambda: board.decision()['a']['served'] == [1, 2],
                         lambda: (versions.follow(), decider.step()))
            assert versions.get('a', label='canary').version == 2
        finally:
            versions.stop()
            board.publish({})
            versions.follow()


def test_a_hung_load_is_abandoned_at_its_deadline_and_tried_again(tmp_path, board):
    base = versions_under(tmp_path, 'a', 1)
    load = Loader(hang={f'{base}/2'})
    versions, decider = manager(board, [config.Model('a', base)], load, load_seconds=0.3)
    try:
        assert versions.get('a').version == 1
        versions_under(tmp_path, 'a', 2)
        started = time.monotonic()
        assert until(lambda: board.decision()['a']['served'] == [2],
                     lambda: (versions.follow(), decider.step()))
        assert 0.3 <= time.monotonic() - started < 5  # the first attempt hung
        assert load.calls.count(f'{base}/2') == 2 and versions.get('a').version == 2
        load.released.set()  # the hung attempt ends at last: what it made is closed
        assert until(lambda: len(load.made) == 3, lambda: None)
        assert until(lambda: load.made[-1].closed, lambda: None)
    finally:
        load.released.set()
        versions.stop()


def test_two_processes_serve_a_version_only_once_both_hold_it(tmp_path):
    board = Board.create(2)
    other_board = Board(board.path)
    base = versions_under(tmp_path, 'a', 1)
    try:
        decider = Decider(board, [config.Model('a', base)], poll_seconds=0.05)
        first = Versions(board, Loader(), 0, decider=decider)
        second = Versions(other_board, Loader(slow={f'{base}/2': 1.0}), 1)
        assert until(lambda: board.decision().get('a', {}).get('served') == [1],
                     lambda: (decider.step(), first.follow(), second.follow()))
        assert first.get('a').version == 1 and second.get('a').version == 1
        versions_under(tmp_path, 'a', 2)
        seen = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (seen and seen[-1] == (2, 2)):
            decider.step()
            first.follow()
            second.follow()
            seen.append((first.get('a').version, second.get('a').version))
            time.sleep(0.01)
        assert seen[-1] == (2, 2)
        assert all(x == y for x, y in seen)  # the two never disagree
        assert seen.count((1, 1)) > 20  # version 1 answered while the second loaded 2
        assert until(lambda: board.decision()['a']['states']['1'][0] == 'END',
                     lambda: (decider.step(), first.follow(), second.follow()))
        first.stop()
        second.stop()
    finally:
        other_board.close()
        board.close(remove=True)


def test_a_retired_version_is_freed_though_loaded_versions_are_frozen(tmp_path, board):
    """Every load freezes the collector's view (gc.freeze, so a full collection does not
    walk TensorFlow's objects); a retired version, a cycle of objects like a graph, is
    unfrozen and collected, not kept for the server's life."""
    import gc
    import weakref
    base = versions_under(tmp_path, 'a', 1)
    alive = []

    def load(model, version, path):
        loaded = Loaded(version, path)
        loaded.cycle = loaded  # as a graph and its operations point at each other
        alive.append(weakref.ref(loaded))
        return loaded
    versions, decider = manager(board, [config.Model('a', base)], load)
    try:
        versions_under(tmp_path, 'a', 2)
        assert until(lambda: board.decision()['a']['served'] == [2] and
                     not any(v for v in versions.models['a'].servables if v == 1),
                     lambda: (versions.follow(), decider.step()))
        versions.follow()  # the next step frees it
        assert alive[0]() is None and alive[1]() is not None
        assert gc.get_freeze_count() > 0  # the living stay frozen
    finally:
        versions.stop()
