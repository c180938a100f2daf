"""graph_mnist.serve's gRPC API, called as a client of TensorFlow Serving calls it: with
the `tensorflow-serving-api` package's own stubs and protos (PredictionService's Predict
and GetModelMetadata, ModelService's GetModelStatus), against one server process on free
loopback ports, stopped at the end. Answers are compared with the same SavedModel run in
process; errors with TensorFlow Serving's codes and messages."""

import os

import grpc
import numpy as np
import pytest
import server_process

from graph_mnist import predict

DIGITS = os.path.join(os.path.dirname(__file__), 'fixtures', 'digits')


@pytest.fixture(scope='module')
def server(exported):
    with server_process.Subprocess(exported[1], '--rest_api_num_processes=2') as running:
        yield running
    assert 'Traceback' not in running.log()


@pytest.fixture(scope='module')
def stubs(server):
    from tensorflow_serving.apis import model_service_pb2_grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield (prediction_service_pb2_grpc.PredictionServiceStub(channel),
               model_service_pb2_grpc.ModelServiceStub(channel))


@pytest.fixture(scope='module')
def reference(exported):
    return predict.Predictor(exported[1])


def predict_request(signature=None, version=None, label=None, name='mnist', **inputs):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if signature:
        request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def test_predict_answers_what_the_savedmodel_answers_in_the_fields_clients_read(
        stubs, exported, reference):
    import tensorflow as tf
    images = exported[2][:5]
    want_p, want_digits = reference(images)
    answer = stubs[0].Predict(predict_request(images=images), timeout=30)
    assert answer.model_spec.name == 'mnist' and answer.model_spec.version.value == 1
    assert answer.model_spec.signature_name == 'serving_default'
    assert set(answer.outputs) == {'probabilities', 'digit'}
    # TF Serving's default: the values in the typed fields, which clients read directly
    assert list(answer.outputs['digit'].int64_val) == want_digits.tolist()
    np.testing.assert_allclose(np.reshape(answer.outputs['probabilities'].float_val, (5, 10)),
                               want_p, atol=1e-6)
    assert tf.make_ndarray(answer.outputs['probabilities']).shape == (5, 10)
    by_version = stubs[0].Predict(predict_request(version=1, images=images), timeout=30)
    assert by_version.outputs['digit'] == answer.outputs['digit']


def test_from_image_takes_encoded_pictures_as_a_string_tensor(stubs, reference):
    import tensorflow as tf
    names = ['3_pen.png', '7_font.png', '0_pen.png']
    contents = [predict.read_file(os.path.join(DIGITS, name)) for name in names]
    answer = stubs[0].Predict(predict_request('from_image', image_bytes=contents), timeout=30)
    p, digits, pictures = reference.from_files(contents)
    assert list(answer.outputs['digit'].int64_val) == digits.tolist() == [3, 7, 0]
    np.testing.assert_allclose(tf.make_ndarray(answer.outputs['mnist']), pictures, atol=1e-6)
    np.testing.assert_allclose(tf.make_ndarray(answer.outputs['probabilities']), p, atol=1e-6)
    only = predict_request('from_image', image_bytes=contents[:1])
    only.output_filter.append('digit')
    assert set(stubs[0].Predict(only, timeout=30).outputs) == {'digit'}


def test_metadata_holds_both_signature_defs_packed_as_tf_serving_packs_them(stubs, exported):
    from tensorflow_serving.apis import get_model_metadata_pb2
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=['signature_def'])
    request.model_spec.name = 'mnist'
    answer = stubs[0].GetModelMetadata(request, timeout=30)
    assert answer.model_spec.name == 'mnist' and answer.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert answer.metadata['signature_def'].Unpack(signatures)
    assert set(signatures.signature_def) == {'serving_default', 'from_image'}
    images = signatures.signature_def['serving_default'].inputs['images']
    assert [d.size for d in images.tensor_shape.dim] == [-1, 28, 28, 1]
    assert signatures.signature_def['from_image'].inputs['image_bytes'].dtype == 7  # string


def test_status_lists_the_versions_as_model_service_does(stubs):
    from tensorflow_serving.apis import get_model_status_pb2
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = 'mnist'
    answer = stubs[1].GetModelStatus(request, timeout=30)
    [status] = answer.model_version_status
    assert status.version == 1
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert status.status.error_code == 0 and status.status.error_message == ''


def errors():
    """(call, request, code, message) as TensorFlow Serving answers them."""
    from tensorflow_serving.apis import get_model_metadata_pb2
    from tensorflow_serving.apis import get_model_status_pb2
    zeros = np.zeros((1, 28, 28, 1), np.float32)
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = 'digits'
    version_9 = get_model_status_pb2.GetModelStatusRequest()
    version_9.model_spec.name, version_9.model_spec.version.value = 'mnist', 9
    no_field = get_model_metadata_pb2.GetModelMetadataRequest()
    no_field.model_spec.name = 'mnist'
    other_field = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=['x'])
    other_field.model_spec.name = 'mnist'
    bad_filter = predict_request(images=zeros)
    bad_filter.output_filter.append('logits')
    C = grpc.StatusCode
    return [
        ('Predict', predict_request(name='digits', images=zeros), C.NOT_FOUND,
         'Servable not found for request: Latest(digits)'),
        ('Predict', predict_request(version=9, images=zeros), C.NOT_FOUND,
         'Servable not found for request: Specific(mnist, 9)'),
        ('Predict', predict_request(label='stable', images=zeros), C.INVALID_ARGUMENT,
         'Unrecognized servable version label: stable'),
        ('Predict', predict_request('serving', images=zeros), C.FAILED_PRECONDITION,
         'Serving signature key "serving" not found.'),
        ('Predict', predict_request(pixels=zeros), C.INVALID_ARGUMENT,
         'input size does not match signature: 1!=1 len({pixels}) != len({images}). '
         'Sent extra: {pixels}. Missing but required: {images}.'),
        ('Predict', predict_request(images=np.zeros((1, 28, 28), np.float32)),
         C.INVALID_ARGUMENT, "'images' expects examples of shape [28, 28, 1], got [28, 28]"),
        ('Predict', predict_request(images=zeros.astype(np.float64)), C.INVALID_ARGUMENT,
         "input 'images' expects float32, got float64"),
        ('Predict', predict_request(images=zeros + 3), C.INVALID_ARGUMENT,
         'images must be numbers in [0, 1]'),
        ('Predict', predict_request('from_image', image_bytes=[b'not an image']),
         C.INVALID_ARGUMENT, 'not a PNG or JPEG image'),
        ('Predict', bad_filter, C.INVALID_ARGUMENT,
         'output tensor alias not found in signature: logits'),
        ('GetModelMetadata', no_field, C.INVALID_ARGUMENT,
         'GetModelMetadataRequest must specify at least one metadata_field'),
        ('GetModelMetadata', other_field, C.INVALID_ARGUMENT,
         'Metadata field x is not supported'),
        ('GetModelStatus', status, C.NOT_FOUND, 'Could not find any versions of model digits'),
        ('GetModelStatus', version_9, C.NOT_FOUND, 'Could not find version 9 of model mnist'),
    ]


def test_errors_have_tf_servings_codes_and_the_next_call_is_answered(stubs):
    for method, request, code, message in errors():
        stub = stubs[1] if method == 'GetModelStatus' else stubs[0]
        with pytest.raises(grpc.RpcError) as raised:
            getattr(stub, method)(request, timeout=30)
        assert raised.value.code() == code, (method, raised.value.details())
        assert message in raised.value.details(), (message, raised.value.details())
        assert 'Traceback' not in raised.value.details()
    answer = stubs[0].Predict(predict_request(images=np.zeros((1, 28, 28, 1), np.float32)),
                              timeout=30)
    assert len(answer.outputs['digit'].int64_val) == 1


def test_grpc_and_rest_answer_from_the_same_versions(server, stubs):
    from tensorflow_serving.apis import get_model_status_pb2
    from test_serve import request
    status, answer, _ = request(server.url, 'GET', '/v1/models/mnist')
    rest = [(int(v['version']), v['state']) for v in answer['model_version_status']]
    grpc_answer = stubs[1].GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec={'name': 'mnist'}), timeout=30)
    by_grpc = [(v.version, get_model_status_pb2.ModelVersionStatus.State.Name(v.state))
               for v in grpc_answer.model_version_status]
    assert status == 200 and rest == by_grpc == [(1, 'AVAILABLE')]
