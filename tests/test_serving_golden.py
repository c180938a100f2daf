"""Golden request/response pairs from TensorFlow Serving's own tests and documentation
(tensorflow_serving/util/json_tensor_test.cc, g3doc/api_rest.md), replayed against our
JSON tensors and REST handler: what TF Serving reads from a request, what it writes for
an answer. Values compared as TF Serving's tests compare them (NaN and the infinities by
their text)."""

import json

import numpy as np
import pytest
import tensorflow as tf

from graph_mnist.serving.json_tensor import format_predict
from graph_mnist.serving.json_tensor import parse_predict
from graph_mnist.serving.json_tensor import read_json
from graph_mnist.serving.json_tensor import to_json_bytes


class Signature:
    def __init__(self, **inputs):
        self.inputs = {name: (dtype, None) for name, dtype in inputs.items()}


def read(body, **inputs):
    """What parse_predict makes of a JSON body (its text, as sent)."""
    return parse_predict(read_json(body.encode()), Signature(**inputs))


# ------------------------------------------------------------------ requests

def test_single_unnamed_tensor():  # json_tensor_test.cc: SingleUnnamedTensor
    arrays, n, row = read('{"instances": [[1,2],[3,4],[5,6]]}', default=tf.int32)
    assert row and n == 3 and arrays['default'].dtype == np.int32
    np.testing.assert_array_equal(arrays['default'], [[1, 2], [3, 4], [5, 6]])


def test_single_named_tensor_base64():  # SingleNamedTensorBase64
    arrays, n, row = read('{"instances": [{"default": [ [{ "b64" : "aGVsbG8=" }], '
                          '[{ "b64": "d29ybGQ=" }] ]}]}', default=tf.string)
    assert row and n == 1
    assert arrays['default'].shape == (1, 2, 1)  # dim { size: 1 } { size: 2 } { size: 1 }
    assert arrays['default'].ravel().tolist() == [b'hello', b'world']


def test_multiple_named_tensors_with_nan_and_infinity():  # MultipleNamedTensor
    arrays, n, row = read('''{"instances": [
        {"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"],
         "float_tensor": [1.0, NaN], "dbl_tensor": [NaN]},
        {"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"],
         "float_tensor": [2.0, Infinity], "dbl_tensor": [2.0]}]}''',
                          int_tensor=tf.int32, str_tensor=tf.string,
                          float_tensor=tf.float32, dbl_tensor=tf.float64)
    assert row and n == 2
    np.testing.assert_array_equal(arrays['int_tensor'],
                                  [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]])
    assert arrays['str_tensor'].tolist() == [[b'foo', b'bar'], [b'baz', b'bat']]
    assert arrays['float_tensor'].dtype == np.float32
    np.testing.assert_array_equal(arrays['float_tensor'], [[1.0, np.nan], [2.0, np.inf]])
    np.testing.assert_array_equal(arrays['dbl_tensor'], [[np.nan], [2.0]])


def test_single_unnamed_tensor_columnar_format():  # SingleUnnamedTensorColumnarFormat
    arrays, n, row = read('{"inputs": [[[1,2],[3,4],[5,6]], [[7,8],[9,0],[1,2]]]}',
                          default=tf.int32)
    assert not row and n == 2 and arrays['default'].shape == (2, 3, 2)


@pytest.mark.parametrize('body, message', [
    ('{"instances": [[1,2],[3,4],[5,6,7]], "inputs": [[1,2],[3,4],[5,6,7]]}',
     'Not formatted correctly'),  # SingleUnnamedTensorErrors
    ('{"signature_name": "serving_default"}', "Missing 'inputs' or 'instances' key"),
])
def test_request_errors_with_tf_servings_words(body, message):
    from graph_mnist.serving.errors import ServingError
    with pytest.raises(ServingError) as raised:
        read(body, default=tf.int32)
    assert raised.value.status == 400 and message in raised.value.message


# ------------------------------------------------------------------ answers

INTS = np.array([[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]], np.int32)


def written(outputs, row):
    return json.loads(to_json_bytes(format_predict(outputs, row)))


def test_single_tensor_row_and_columnar():  # FromJsonSingleTensor, ...SingleScalarTensor
    assert written({'int_tensor': INTS}, True) == {'predictions': INTS.tolist()}
    assert written({'int_tensor': INTS}, False) == {'outputs': INTS.tolist()}
    five = np.array([1, 2, 3, 4, 5], np.int32)
    assert written({'int_tensor': five}, True) == {'predictions': [1, 2, 3, 4, 5]}
    assert written({'int_tensor': five}, False) == {'outputs': [1, 2, 3, 4, 5]}


def test_bytes_outputs_are_base64_objects():  # FromJsonSingleBytesTensor
    words = np.array([[b'hello', b'world'], [b'tf', b'serving']], dtype=object)
    assert written({'str_tensor_bytes': words}, True) == {'predictions': [
        [{'b64': 'aGVsbG8='}, {'b64': 'd29ybGQ='}],
        [{'b64': 'dGY='}, {'b64': 'c2VydmluZw=='}]]}


def test_non_finite_floats_are_written_as_tf_serving_writes_them():
    # FromJsonSingleFloatTensorNonFinite: [[NaN, Infinity], [3.0, -Infinity]] as text
    values = np.array([[np.nan, np.inf], [3, -np.inf]], np.float32)
    text = to_json_bytes(format_predict({'float_tensor': values}, True))
    assert text == b'{"predictions":[[NaN,Infinity],[3.0,-Infinity]]}'


def test_six_digit_floats_keep_their_values():  # FromJsonSingleFloatTensorSixDigitPrecision
    values = np.array([[9000000, 999999, 0.5], [0.0003, 0.00003, 555557.5]], np.float32)
    assert written({'float_tensor': values}, True) == {
        'predictions': [[9e+06, 999999.0, 0.5], [0.0003, 3e-05, 555557.5]]}


def test_multiple_named_tensors_row_and_columnar():  # FromJsonMultipleNamedTensors
    outputs = {
        'int_tensor': INTS,
        'str_tensor': np.array([[b'foo', b'bar'], [b'baz', b'bat']], dtype=object),
        'float_tensor': np.array([[1.0], [2.0]], np.float32),
        'double_scalar_tensor': np.array([8.0, 9.0]),
        'str_tensor_bytes': np.array([[b'hello', b'world'], [b'tf', b'serving']], object)}
    assert written(outputs, True) == {'predictions': [
        {'double_scalar_tensor': 8.0, 'float_tensor': [1.0],
         'int_tensor': [[1, 2], [3, 4], [5, 6]], 'str_tensor': ['foo', 'bar'],
         'str_tensor_bytes': [{'b64': 'aGVsbG8='}, {'b64': 'd29ybGQ='}]},
        {'double_scalar_tensor': 9.0, 'float_tensor': [2.0],
         'int_tensor': [[7, 8], [9, 0], [1, 2]], 'str_tensor': ['baz', 'bat'],
         'str_tensor_bytes': [{'b64': 'dGY='}, {'b64': 'c2VydmluZw=='}]}]}
    assert written(outputs, False)['outputs']['double_scalar_tensor'] == [8.0, 9.0]
    assert written(outputs, False)['outputs']['float_tensor'] == [[1.0], [2.0]]


def test_api_rest_documents_this_row_answer():  # api_rest.md: "predictions": [3.5, 4.0, 5.5]
    values = np.array([3.5, 4.0, 5.5], np.float32)
    assert to_json_bytes(format_predict({'y': values}, True)) == b'{"predictions":[3.5,4.0,5.5]}'
