"""The deciding half of the version manager, in the first serving process only: which
versions of which models every process loads, which answer, where the labels point,
and the versions' states (TensorFlow Serving's ServerCore with its
AvailabilityPreservingPolicy: a new version answers once loaded, and the one it
replaces is unloaded after).

Each step: the model config file read again every config_poll_seconds (a model added
is loaded, a model removed unloaded, labels moved; a file that no longer reads is
reported and the last good config kept, as TF Serving keeps it), each base path polled
every poll_seconds, then the decision made from what every running process holds and
published on the board when it changed."""

import time

from absl import logging

from graph_mnist import export
from graph_mnist.errors import UserError
from graph_mnist.serving import config


class Decider:

    def __init__(self, board, models, poll_seconds=1.0, running=None, config_file=None,
                 config_poll_seconds=0.0, labels_for_unavailable=False):
        self.board = board
        self.models = {model.name: model for model in models}  # config.Model
        self.poll_seconds = poll_seconds  # 0: each base path read once
        self.running = running or (lambda: range(board.processes))
        self.config_file, self.config_poll_seconds = config_file, config_poll_seconds
        self.labels_for_unavailable = labels_for_unavailable
        self.on_disk = {}    # name: versions found under its base path
        self.failed = {}     # name: {version: why}, given up by some process
        self.said = set()    # warnings given once
        self.next_poll = self.next_config = 0.0
        self.behind = {}     # process index: since when it has not followed the decision

    def step(self):
        now = time.monotonic()
        if self.config_file and self.config_poll_seconds and now >= self.next_config:
            self.next_config = now + self.config_poll_seconds
            self.reload()
        if now >= self.next_poll and (self.poll_seconds or not self.next_poll):
            self.next_poll = now + (self.poll_seconds or 1)
            for name, model in self.models.items():
                self.poll(name, model)
        self.decide()

    def poll(self, name, model):
        self.on_disk[name] = sorted(export.versions(model.base_path))

    def reload(self):
        try:
            models = config.model_config(self.config_file)
        except UserError as e:
            self.once(f'config {e}', '%s (the config served before stays)', e)
            return
        self.said = {key for key in self.said if not key.startswith('config ')}
        for model in models:
            before = self.models.get(model.name)
            if before is None:
                logging.info('model %s added (%s)', model.name, model.base_path)
            if before is None or before.base_path != model.base_path:
                self.on_disk.pop(model.name, None)
                self.failed.pop(model.name, None)
                self.poll(model.name, model)
        for name in set(self.models) - {m.name for m in models}:
            logging.info('model %s removed: unloading it', name)
        self.models = {model.name: model for model in models}

    def once(self, key, message, *args):
        if key not in self.said:
            self.said.add(key)
            logging.warning(message, *args)

    def settled(self):
        decision = self.board.decision()
        return all(name in decision and
                   sorted(decision[name]['served']) == sorted(decision[name]['aspired'])
                   for name in self.models)

    def decide(self):
        before = self.board.decision()
        running = list(self.running())
        holds = [self.board.holds(i) for i in running]
        # what answers changes only once every process has followed the last decision:
        # a report older than it may still name a version a process has since retired
        generation, now = self.board.generation, time.monotonic()
        current = all(h is not None and h['generation'] == generation for h in holds)
        for index, h in zip(running, holds):
            if h is None or h['generation'] == generation:
                self.behind.pop(index, None)
            else:  # it has reported before: it follows, or it is stuck (server.run_first)
                self.behind.setdefault(index, now)
        decision = {}
        for name in sorted(set(self.models) | set(before)):
            entry = self.entry(name, before.get(name), [
                (h or {'models': {}})['models'].get(name, {'held': [], 'failed': {}})
                for h in holds], current)
            if entry is not None:
                decision[name] = entry
        if decision != before:
            self.board.publish(decision)
            for name, entry in decision.items():
                was = set(before.get(name, {}).get('served', ()))
                for version in sorted(set(entry['served']) - was):
                    logging.info('serving %s version %d (%s, in %d processes)', name, version,
                                 entry['base_path'], len(running))

    def entry(self, name, before, holds, current):
        """The decision for one model (None: removed, and held by no process); what
        answers stays as it was unless every process's report is `current`."""
        before = before or {'served': [], 'labels': {}, 'states': {}}
        held_by_any = set().union(*(h['held'] for h in holds))
        held_by_all = set.intersection(*(set(h['held']) for h in holds)) if holds \
            else set()
        model = self.models.get(name)
        if model is None:  # removed from the config: unloaded
            if not held_by_any and current:
                return None
            return {'base_path': before['base_path'], 'aspired': [], 'served': [],
                    'labels': {}, 'states': self.states(before, [], [], held_by_any, {})}
        failed = self.failed.setdefault(name, {})
        for h in holds:
            for version, why in h['failed'].items():
                if int(version) not in failed:
                    failed[int(version)] = why
                    logging.error('version %s of %s cannot be loaded: %s', version, name, why)
        # the policy chooses among the versions on disk; a chosen one that failed is not
        # replaced by another (TF Serving does not fall back to an older one either)
        aspired = [v for v in model.aspired(self.on_disk.get(name, ())) if v not in failed]
        if not current:
            served = before['served']
        else:  # availability preserved: what answers goes only once something newer can
            served = sorted(set(aspired) & held_by_all) or \
                [v for v in before['served'] if v in held_by_all]
        return {'base_path': model.base_path, 'aspired': aspired, 'served': served,
                'labels': self.labels(model, before['labels'], served),
                'states': self.states(before, aspired, served, held_by_any, failed)}

    def labels(self, model, before, served):
        """Each label on its version once that version answers; until then a label
        that pointed elsewhere stays there, as TF Serving refuses a label on a version
        that is not available (a new label may point at one with
        --allow_version_labels_for_unavailable_models)."""
        labels = {}
        for label, version in model.labels:
            if version in served or (self.labels_for_unavailable and
                                     before.get(label, version) == version):
                labels[label] = version
                continue
            self.once(f'{model.name} {label} {version}', 'model %s: label %s waits for version '
                      '%d to be available', model.name, label, version)
            if before.get(label) in served:
                labels[label] = before[label]
        return labels

    def states(self, before, aspired, served, held_by_any, failed):
        """{version: [state, message]}: TF Serving's LOADING, AVAILABLE, UNLOADING and END."""
        states = {str(v): ['AVAILABLE' if v in served else 'LOADING', ''] for v in aspired}
        states.update({str(v): ['AVAILABLE', ''] for v in served})
        states.update({str(v): ['END', why] for v, why in failed.items()})
        for version, state in before['states'].items():
            if version not in states:
                ending = int(version) in held_by_any and state[0] != 'END'
                states[version] = ['UNLOADING', ''] if ending else ['END', state[1]]
                if not ending and state[0] != 'END':
                    logging.info('version %s unloaded', version)
        return states
