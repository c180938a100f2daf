"""JSON tensors: TensorFlow Serving's request formats (row "instances", columnar
"inputs", {"b64": ...} for bytes) to arrays, and outputs back to its responses."""

import base64
import binascii
import itertools
import re

import numpy as np

from graph_mnist.serving.errors import bad_request


def decode_binary(value, where):
    """A DT_STRING value: {"b64": "..."} (decoded) or a plain string."""
    if isinstance(value, dict):
        if set(value) != {'b64'} or not isinstance(value['b64'], str):
            raise bad_request(f'{where}: a binary value is {{"b64": "<base64>"}}')
        # as TensorFlow Serving reads it: line breaks and other whitespace skipped, the
        # final padding optional
        text = ''.join(value['b64'].split())
        try:
            return base64.b64decode(text + '=' * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise bad_request(f'{where}: "b64" holds no valid base64') from None
    if isinstance(value, str):
        return value.encode('utf-8')
    raise bad_request(f'{where}: expected {{"b64": "<base64>"}} or a string, '
                      f'got {type(value).__name__}')


def binaries(values, where):
    """Nested lists of binary values -> an object array of bytes, of their shape."""
    def decoded(value, at):
        if isinstance(value, list):
            return [decoded(v, f'{at}[{i}]') for i, v in enumerate(value)]
        return decode_binary(value, at)
    try:
        array = np.array(decoded(values, where), dtype=object)
    except ValueError:  # ragged
        array = None
    if array is None or any(isinstance(x, list) for x in array.flat):
        raise bad_request(f'{where}: every example must have the same shape')
    return array


def to_array(values, dtype, dims, name):
    """JSON values of one input (a list of examples) -> numpy array,
    checked against the signature's dtype and shape."""
    example = dims[1:] if dims else None
    if dtype.name == 'string':
        if not isinstance(values, list):
            raise bad_request(f"'{name}' expects a list of binary values")
        array = binaries(values, f"'{name}'")
    else:
        try:
            array = numbers(values, dims, dtype.as_numpy_dtype)
        except (ValueError, TypeError, OverflowError):
            raise bad_request(f"'{name}' expects {dtype.name} numbers, every example of "
                              f"shape {format_shape(example)}") from None
    check_shape(array, dims, name)
    return array


def check_shape(array, dims, name):
    """400 unless the array's examples (axis 0 on) have the signature's shape."""
    example = dims[1:] if dims else None
    if example is not None and (array.ndim != len(dims) or any(
            want is not None and want != got for want, got in zip(example, array.shape[1:]))):
        raise bad_request(f"'{name}' expects examples of shape {format_shape(example)}, got "
                          f"{format_shape(array.shape[1:])}")


def numbers(values, dims, numpy_dtype):
    """Nested JSON lists of numbers -> array. When the signature's shape is known, the
    lists are checked level by level and flattened, and numpy converts one flat list:
    twice as fast as np.asarray on the nested lists (28 x 28 lists of one number each),
    which was a fifth of a single-image request's time. Otherwise np.asarray."""
    if not dims or None in dims[1:]:
        return np.asarray(values, dtype=numpy_dtype)
    try:
        flat = values
        for size in dims[1:]:
            if set(map(len, flat)) != {size}:  # TypeError where a number stands for a list
                raise ValueError('not of the signature\'s shape')
            flat = list(itertools.chain.from_iterable(flat))
        return np.array(flat, dtype=numpy_dtype).reshape(len(values), *dims[1:])
    except (ValueError, TypeError):  # wrong: np.asarray says how (or raises)
        return np.asarray(values, dtype=numpy_dtype)


def format_shape(dims):
    return '[' + ', '.join('?' if d is None else str(d) for d in dims) + ']' if dims \
        is not None else 'any'


def parse_predict(body, signature):
    """A :predict request body -> ({input: array}, examples, row format?)."""
    if not isinstance(body, dict):
        raise bad_request('the request body must be a JSON object')
    has_instances, has_inputs = 'instances' in body, 'inputs' in body
    if has_instances and has_inputs:
        raise bad_request("Not formatted correctly expecting only one of 'inputs' or "
                          "'instances' keys to exist")
    if not (has_instances or has_inputs):
        raise bad_request("Missing 'inputs' or 'instances' key")
    names = list(signature.inputs)
    if has_instances:
        instances = body['instances']
        if not isinstance(instances, list):
            raise bad_request("'instances' must be a list, one element per example")
        if not instances:
            raise bad_request("No values in 'instances' array")
        if len(names) == 1 and not (isinstance(instances[0], dict) and
                                    set(instances[0]) == {names[0]}):
            columns = {names[0]: instances}
        else:
            if not all(isinstance(x, dict) and set(x) == set(names) for x in instances):
                raise bad_request(f"every element of 'instances' must be an object with "
                                  f"the keys {names}")
            columns = {name: [x[name] for x in instances] for name in names}
    else:
        given = body['inputs']
        if len(names) == 1 and not (isinstance(given, dict) and names[0] in given):
            given = {names[0]: given}
        if not isinstance(given, dict) or not set(names) <= set(given):
            raise bad_request(f"'inputs' must hold the inputs {names}")
        columns = {name: given[name] for name in names}  # other keys ignored, as TF does
        for name, value in columns.items():
            if not isinstance(value, list) or not value:
                raise bad_request(f"No values in 'inputs' for '{name}'")
    arrays = {name: to_array(columns[name], *signature.inputs[name], name)
              for name in names}
    sizes = {len(a) for a in arrays.values()}
    if len(sizes) != 1:
        raise bad_request('every input must hold the same number of examples')
    return arrays, sizes.pop(), has_instances


def to_json(value, name=''):
    """An output as orjson writes it (to_json_bytes): a numeric array stays an array,
    which orjson's OPT_SERIALIZE_NUMPY writes as nested lists, float32 in its shortest
    form (0.1, not float64's 0.10000000149011612), as TensorFlow Serving writes them;
    strings as text, or as {"b64": ...} when the output's name ends in _bytes, as
    TensorFlow Serving writes them."""
    if value.dtype == object:
        if name.endswith('_bytes'):
            convert = lambda b: {'b64': base64.b64encode(b).decode()}  # noqa: E731
        else:
            convert = lambda b: b.decode('utf-8', 'replace')  # noqa: E731
        return np.vectorize(convert, otypes=[object])(value).tolist() if value.size else []
    return np.ascontiguousarray(value)


def plain(answer):
    """The answer with its arrays as lists of Python numbers, float32 in shortest form:
    for Python's json, where orjson cannot write (NaN and the infinities)."""
    if isinstance(answer, dict):
        return {key: plain(value) for key, value in answer.items()}
    if isinstance(answer, list):
        return [plain(value) for value in answer]
    if isinstance(answer, (np.ndarray, np.generic)):
        if answer.dtype != np.float32:
            return answer.tolist()
        shortest = np.array([float(str(x)) for x in np.ravel(answer)], dtype=object)
        return shortest.reshape(np.shape(answer)).tolist()
    return answer


def format_predict(outputs, row):
    lists = {name: to_json(value, name) for name, value in outputs.items()}
    only = next(iter(lists.values())) if len(lists) == 1 else None
    if row:
        if only is not None:
            return {'predictions': only}
        n = len(next(iter(lists.values())))
        return {'predictions': [{name: lists[name][i] for name in lists} for i in range(n)]}
    return {'outputs': only if only is not None else lists}


def read_json(raw):
    """A request body's JSON, read by orjson; where orjson refuses it, TensorFlow
    Serving's reader takes the NaN, Infinity and -Infinity tokens as numbers, so a body
    holding them is read again by Python's json (which takes them too); any other fault
    is a 400 with orjson's reason."""
    import orjson
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        if re.search(rb'\bNaN\b|\bInfinity\b', raw):
            import json
            try:
                return json.loads(raw)
            except ValueError:
                pass
        raise bad_request(f'JSON Parse error: {error}') from None


def to_json_bytes(answer):
    """orjson, numpy arrays and all (OPT_SERIALIZE_NUMPY), except where an output holds
    NaN or an infinity, which orjson writes as null: there TF Serving's NaN, Infinity and
    -Infinity, as Python's json writes them."""
    import orjson
    raw = orjson.dumps(answer, option=orjson.OPT_SERIALIZE_NUMPY)
    if b'null' in raw:
        import json
        return json.dumps(plain(answer), separators=(',', ':')).encode()
    return raw
