"""TensorFlow Serving's configuration files, read as TensorFlow Serving reads them: protobuf's
text format (google.protobuf.text_format) into its own messages.

    --model_config_file          ModelServerConfig (tensorflow_serving.config, in
                                 tensorflow-serving-api)
    --batching_parameters_file   BatchingParameters   } not in tensorflow-serving-api:
    --monitoring_config_file     MonitoringConfig     } declared below as TF Serving's
                                                        .proto files declare them

Whatever the text format allows is read (hex numbers, `[a, b]` lists, strings written in
parts, comments). A syntax error, or a field the message does not have, is one line with
its line and column; a field TensorFlow Serving accepts and this server does not honour
is refused in one line naming it. Nothing starts before the files are read.
"""

import dataclasses
import re

from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory
from google.protobuf import text_format
from google.protobuf import wrappers_pb2
from tensorflow_serving.config import model_server_config_pb2

from graph_mnist.errors import UserError
from graph_mnist.serving import metrics

FIELD = descriptor_pb2.FieldDescriptorProto
# TF Serving's session_bundle_config.proto and monitoring_config.proto, package
# tensorflow.serving: (message, [(field, number, type or message, repeated)])
DECLARED = [
    ('BatchingParameters', [
        ('max_batch_size', 1, '.google.protobuf.Int64Value', False),
        ('batch_timeout_micros', 2, '.google.protobuf.Int64Value', False),
        ('max_enqueued_batches', 3, '.google.protobuf.Int64Value', False),
        ('num_batch_threads', 4, '.google.protobuf.Int64Value', False),
        ('thread_pool_name', 5, '.google.protobuf.StringValue', False),
        ('allowed_batch_sizes', 6, FIELD.TYPE_INT64, True),
        ('pad_variable_length_inputs', 7, FIELD.TYPE_BOOL, False),
        ('enable_large_batch_splitting', 8, '.google.protobuf.BoolValue', False),
        ('max_execution_batch_size', 9, '.google.protobuf.Int64Value', False)]),
    ('PrometheusConfig', [
        ('enable', 1, FIELD.TYPE_BOOL, False),
        ('path', 2, FIELD.TYPE_STRING, False)]),
    ('MonitoringConfig', [
        ('prometheus_config', 1, '.tensorflow.serving.PrometheusConfig', False)]),
]


def declared_messages():
    """{name: message class} of DECLARED, in a descriptor pool of their own (the
    process's default pool is left alone)."""
    proto = descriptor_pb2.FileDescriptorProto(
        name='graph_mnist/serving/tensorflow_serving_config.proto',
        package='tensorflow.serving', syntax='proto3',
        dependency=['google/protobuf/wrappers.proto'])
    for message, fields in DECLARED:
        declared = proto.message_type.add(name=message)
        for name, number, kind, repeated in fields:
            field = declared.field.add(name=name, number=number, label=(
                FIELD.LABEL_REPEATED if repeated else FIELD.LABEL_OPTIONAL))
            if isinstance(kind, str):
                field.type, field.type_name = FIELD.TYPE_MESSAGE, kind
            else:
                field.type = kind
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(proto)
    return {message: message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f'tensorflow.serving.{message}'))
        for message, _ in DECLARED}


MESSAGES = declared_messages()


def read(path, flag, message):
    """The file at `path` parsed into a new `message`; UserError in one line otherwise."""
    where = f'--{flag}={path}'
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f'{where}: {getattr(e, "strerror", None) or e}') from None
    try:
        return text_format.Parse(text, message())
    except text_format.ParseError as e:
        reason = re.sub(r"^\d+:\d+ : ('.*?': )?", '', str(e)).splitlines()[0]
        raise UserError(f'{where}:{e.GetLine()}:{e.GetColumn()}: {reason}') from None


def refuse_unless_honoured(message, honoured, where):
    """A field set in `message` that this server does not honour: one line naming it."""
    ignored = sorted(field.name for field, _ in message.ListFields()
                     if field.name not in honoured)
    if ignored:
        raise UserError(f'{where}: {", ".join(ignored)} is TensorFlow Serving\'s, not '
                        f'honoured here (honoured: {", ".join(sorted(honoured))})')


BATCHING = ('max_batch_size', 'batch_timeout_micros', 'max_enqueued_batches',
            'num_batch_threads', 'thread_pool_name')


def batching_parameters(path):
    """{max_batch_size, batch_timeout_micros, max_enqueued_batches, num_batch_threads,
    thread_pool_name} of a batching parameters file; absent fields are left out."""
    where = f'--batching_parameters_file={path}'
    parameters = read(path, 'batching_parameters_file', MESSAGES['BatchingParameters'])
    refuse_unless_honoured(parameters, BATCHING, where)
    found = {}
    for name in BATCHING[:4]:
        if parameters.HasField(name):
            value = getattr(parameters, name).value
            least = 0 if name == 'batch_timeout_micros' else 1
            if value < least:
                raise UserError(f'{where}: {name} must be at least {least}, got {value}')
            found[name] = value
    if parameters.HasField('thread_pool_name'):
        found['thread_pool_name'] = parameters.thread_pool_name.value
    return found


def monitoring(path):
    """The Prometheus page's path, or None when the file turns it off."""
    where = f'--monitoring_config_file={path}'
    config = read(path, 'monitoring_config_file', MESSAGES['MonitoringConfig'])
    if not config.prometheus_config.enable:
        return None
    path = config.prometheus_config.path or metrics.PATH
    if not path.startswith('/'):
        raise UserError(f'{where}: path must start with /, got {path!r}')
    return path


MODEL = ('name', 'base_path', 'model_platform', 'model_version_policy', 'version_labels')


@dataclasses.dataclass(frozen=True)
class Model:
    """One model of a model_config_list: where its versions are, which of them are
    served (TF Serving's ServableVersionPolicy), and its version labels."""
    name: str
    base_path: str
    policy: str = 'latest'  # 'latest', 'all' or 'specific'
    versions: tuple = (1,)  # latest: (num_versions,); specific: the versions; all: ()
    labels: tuple = ()      # ((label, version), ...)

    def aspired(self, on_disk):
        """The versions to serve, of those on disk (the policy's choice)."""
        on_disk = sorted(on_disk)
        if self.policy == 'latest':
            return on_disk[-self.versions[0]:] if on_disk else []
        if self.policy == 'specific':
            return [v for v in on_disk if v in self.versions]
        return on_disk


def model_config(path):
    """The models of a model config file, [Model]: every config of its
    model_config_list, with its version policy and labels."""
    where = f'--model_config_file={path}'
    config = read(path, 'model_config_file', model_server_config_pb2.ModelServerConfig)
    refuse_unless_honoured(config, ('model_config_list',), where)
    models, names = [], set()
    for model in config.model_config_list.config:
        here = f'{where}: model {model.name!r}'
        refuse_unless_honoured(model, MODEL, here)
        if not model.name or not model.base_path:
            raise UserError(f'{where}: every model needs a name and a base_path')
        if model.name in names:
            raise UserError(f'{here} is configured twice')
        names.add(model.name)
        if model.model_platform not in ('', 'tensorflow'):
            raise UserError(f'{here}: model_platform "{model.model_platform}": only '
                            f'"tensorflow" here')
        models.append(Model(model.name, model.base_path, *policy(model, here),
                            labels(model, here)))
    if not models:
        raise UserError(f'{where}: model_config_list names no model')
    return models


def policy(model, where):
    """(policy, versions) of a ModelConfig's model_version_policy (default: latest 1)."""
    chosen = model.model_version_policy
    which = chosen.WhichOneof('policy_choice') or 'latest'
    if which == 'latest':
        n = chosen.latest.num_versions or 1
        if n < 1:
            raise UserError(f'{where}: latest {{ num_versions: {n} }} must be at least 1')
        return which, (n,)
    if which == 'specific':
        versions = tuple(sorted(set(chosen.specific.versions)))
        if not versions or min(versions) < 1:
            raise UserError(f'{where}: specific {{ versions: ... }} needs versions of 1 and '
                            f'more, got {list(chosen.specific.versions)}')
        return which, versions
    return which, ()


def labels(model, where):
    """((label, version), ...) of a ModelConfig's version_labels, checked."""
    found = sorted(model.version_labels.items())
    for label, version in found:
        if not re.fullmatch(r'[A-Za-z0-9_-]+', label) or label[0].isdigit():
            raise UserError(f'{where}: version label {label!r}: letters, digits, _ and -, '
                            f'not starting with a digit')
        if version < 1:
            raise UserError(f'{where}: version label {label!r} -> {version}: versions start '
                            f'at 1')
    return tuple(found)
