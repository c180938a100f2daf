"""TensorFlow Serving's configuration files, in protobuf's text format, as its flags
take them: --batching_parameters_file (BatchingParameters), --monitoring_config_file
(MonitoringConfig), --model_config_file (ModelServerConfig, one model here). Read with
a small parser of the text format (their messages are not in tensorflow-serving-api),
every field checked: a field we would ignore is refused in one line."""

import ast
import re

from graph_mnist.errors import UserError
from graph_mnist.serving import metrics

TOKEN = re.compile(r'\s*(?:#[^\n]*\n?\s*)*(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)|'
                   r'(?P<string>"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')|'
                   r'(?P<number>[-+]?[0-9][0-9.eE+-]*)|(?P<punct>[{}:<>,;\[\]]))')


def tokens(text, where):
    position, found = 0, []
    while True:
        rest = re.match(r'(?:\s|#[^\n]*)*', text[position:])
        position += rest.end()
        if position >= len(text):
            return found
        match = TOKEN.match(text, position)
        if not match or match.end() == position:
            raise UserError(f'{where}: cannot read the text at "{text[position:position + 20]}"')
        kind = match.lastgroup
        value = match[kind]
        if kind == 'string':  # quoted as in Python (escapes; other text kept as it is)
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise UserError(f'{where}: cannot read the string {value}') from None
        elif kind == 'number':
            value = float(value) if re.search(r'[.eE]', value) else int(value)
        elif kind == 'name' and value in ('true', 'false'):
            kind, value = 'bool', value == 'true'
        found.append((kind, value))
        position = match.end()


def parse(text, where):
    """Text format -> {field: [values]}, a message's value a dict of the same kind."""
    items = tokens(text, where)
    position = 0

    def message(closing):
        nonlocal position
        fields = {}
        while position < len(items):
            kind, value = items[position]
            if kind == 'punct' and value == closing:
                position += 1
                return fields
            if kind == 'punct' and value in ',;':
                position += 1
                continue
            if kind != 'name':
                raise UserError(f'{where}: expected a field name, found {value!r}')
            name = value
            position += 1
            if position < len(items) and items[position] == ('punct', ':'):
                position += 1
            if position >= len(items):
                raise UserError(f'{where}: {name} has no value')
            kind, value = items[position]
            position += 1
            if kind == 'punct' and value in '{<':
                value = message('}' if value == '{' else '>')
            elif kind == 'punct':
                raise UserError(f'{where}: {name} has no value')
            fields.setdefault(name, []).append(value)
        if closing is not None:
            raise UserError(f'{where}: a "{{" is not closed')
        return fields

    return message(None)


def read(path, flag):
    try:
        with open(path, encoding='utf-8') as f:
            return parse(f.read(), f'--{flag}={path}')
    except OSError as e:
        raise UserError(f'--{flag}={path}: {e.strerror}') from None


def only(fields, allowed, where):
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise UserError(f'{where}: {", ".join(unknown)} not supported here (supported: '
                        f'{", ".join(sorted(allowed))})')


def scalar(fields, name, kind, where, wrapped=False):
    """One value of a field (None when absent); wrapped: google.protobuf's wrapper
    messages, written `name { value: N }`."""
    values = fields.get(name)
    if not values:
        return None
    value = values[-1]
    if wrapped:
        if not isinstance(value, dict) or set(value) - {'value'}:
            raise UserError(f'{where}: {name} is written {name} {{ value: ... }}')
        value = value.get('value', [kind()])[-1]
    if kind is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UserError(f'{where}: {name} must be a {kind.__name__}, got {value!r}')
    return value


BATCHING = {'max_batch_size', 'batch_timeout_micros', 'max_enqueued_batches',
            'num_batch_threads', 'thread_pool_name'}


def batching_parameters(path):
    """{max_batch_size, batch_timeout_micros, max_enqueued_batches, num_batch_threads}
    of a batching parameters file; absent fields are left out."""
    where = f'--batching_parameters_file={path}'
    fields = read(path, 'batching_parameters_file')
    only(fields, BATCHING, where)
    found = {}
    for name in BATCHING - {'thread_pool_name'}:
        value = scalar(fields, name, int, where, wrapped=True)
        if value is not None:
            if value < (0 if name == 'batch_timeout_micros' else 1):
                raise UserError(f'{where}: {name} must be at least '
                                f'{0 if name == "batch_timeout_micros" else 1}')
            found[name] = value
    return found


def monitoring(path):
    """The Prometheus page's path, or None when the file turns it off."""
    where = f'--monitoring_config_file={path}'
    fields = read(path, 'monitoring_config_file')
    only(fields, {'prometheus_config'}, where)
    prometheus = (fields.get('prometheus_config') or [{}])[-1]
    only(prometheus, {'enable', 'path'}, where + ' prometheus_config')
    if not scalar(prometheus, 'enable', bool, where):
        return None
    path = scalar(prometheus, 'path', str, where) or metrics.PATH
    if not path.startswith('/'):
        raise UserError(f'{where}: path must start with /')
    return path


def model_config(path):
    """(name, base path) of a model config file's one model."""
    where = f'--model_config_file={path}'
    fields = read(path, 'model_config_file')
    only(fields, {'model_config_list'}, where)
    lists = fields.get('model_config_list') or [{}]
    configs = [c for group in lists for c in group.get('config', [])]
    if len(configs) != 1:
        raise UserError(f'{where}: {len(configs)} models; this server serves one model '
                        f'(start one server per model)')
    config = configs[0]
    only(config, {'name', 'base_path', 'model_platform'}, where + ' config')
    platform = scalar(config, 'model_platform', str, where) or 'tensorflow'
    if platform != 'tensorflow':
        raise UserError(f'{where}: model_platform "{platform}": only "tensorflow" here')
    name, base = scalar(config, 'name', str, where), scalar(config, 'base_path', str, where)
    if not name or not base:
        raise UserError(f'{where}: the model needs a name and a base_path')
    return name, base
