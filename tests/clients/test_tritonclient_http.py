"""Triton's own Python client, tritonclient.http, against inferd unchanged.

Inference tests run in two modes: "json" puts every tensor in the JSON body
(binary_data=False on inputs and requested outputs), "binary" uses the binary
tensor extension, which is the client's default and what perf_analyzer sends.
Without requested outputs the client always asks for binary outputs
(`binary_data_output`), so JSON-mode tests name their outputs.
"""

import gzip
import http.client
import json
import zlib

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import TWO_IO_CONFIG, reference, wait_until

MODES = ["json", "binary"]


@pytest.fixture
def client(inferd):
    return httpclient.InferenceServerClient(url=inferd["http"])


def infer_input(name, array, datatype, binary):
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def requested(names, binary):
    return [httpclient.InferRequestedOutput(name, binary_data=binary) for name in names]


def expect_error(call, status, text):
    with pytest.raises(InferenceServerException) as caught:
        call()
    assert caught.value.status() == status, caught.value
    assert text in caught.value.message(), caught.value.message()


# Health and metadata.

def test_health_and_readiness(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("two_io")
    assert client.is_model_ready("two_io", "1")
    assert not client.is_model_ready("two_io", "2")
    assert not client.is_model_ready("nope")


def test_server_metadata(client):
    metadata = client.get_server_metadata()
    assert metadata["name"] == "inferd"
    assert metadata["version"]


def test_server_metadata_lists_the_extensions_it_serves(client):
    # perf_analyzer asks for server-side statistics only when "statistics" is
    # listed here; other tools read the list the same way.
    extensions = client.get_server_metadata()["extensions"]
    for extension in ["binary_tensor_data", "model_configuration", "statistics"]:
        assert extension in extensions, extensions


def test_model_metadata(client):
    metadata = client.get_model_metadata("two_io")
    assert metadata["name"] == "two_io"
    assert metadata["platform"] == "onnxruntime_onnx"
    assert metadata["versions"] == ["1"]
    assert metadata["inputs"] == [
        {"name": "x", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "ids", "datatype": "INT64", "shape": [-1, 2]}]
    assert [t["name"] for t in metadata["outputs"]] == ["y", "ids_out"]
    assert client.get_model_metadata("two_io", "1") == metadata


# Model configuration, as perf_analyzer reads it.

@pytest.mark.parametrize("version", ["", "1"])
def test_model_config_of_a_batching_model(client, version):
    config = client.get_model_config("two_io", version)
    assert config["name"] == "two_io"
    assert config["platform"] == "onnxruntime_onnx"
    assert config["backend"] == "onnxruntime"
    assert config["max_batch_size"] == TWO_IO_CONFIG["max_batch_size"]
    for side in ["input", "output"]:
        got = [(t["name"], t["data_type"], t["dims"]) for t in config[side]]
        assert got == TWO_IO_CONFIG[side], config[side]
    assert "dynamic_batching" in config
    assert [(g["count"], g["kind"]) for g in config["instance_group"]] == [(1, "KIND_CPU")]


def test_model_config_of_a_model_that_does_not_batch(client):
    # Without batching, dims are the whole shape, as in the metadata.
    config = client.get_model_config("fixed_shape")
    assert config["max_batch_size"] == 0
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [
        ("input", "TYPE_FP32", [2, 3])]


def test_model_config_marks_a_free_dimension_past_the_batch_with_minus_one(client):
    config = client.get_model_config("identity_int16")
    assert [(t["data_type"], t["dims"]) for t in config["input"]] == [("TYPE_INT16", [-1])]


# Inference.

ELEMENT_TYPES = {"bool": np.bool_, "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32,
                 "uint64": np.uint64, "int8": np.int8, "int16": np.int16, "int32": np.int32,
                 "int64": np.int64, "fp16": np.float16, "fp32": np.float32, "fp64": np.float64}


def extremes(dtype):
    """A 2x3 tensor holding the type's limits, where truncation would show."""
    if dtype is np.bool_:
        return np.array([[True, False, True], [False, False, True]])
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        low, other = info.min, info.max - 1
    else:
        info = np.finfo(dtype)
        low, other = info.tiny, info.min
    return np.array([[0, 1, info.max], [low, other, 100]], dtype=dtype)


@pytest.mark.parametrize("suffix", ELEMENT_TYPES)
@pytest.mark.parametrize("mode", MODES)
def test_every_supported_element_type(client, suffix, mode):
    if suffix == "fp16" and mode == "json":
        pytest.skip("FP16 has no JSON form; test_fp16_as_json_is_refused covers it")
    data = extremes(ELEMENT_TYPES[suffix])
    binary = mode == "binary"
    result = client.infer(f"identity_{suffix}", [infer_input("input", data, suffix.upper(), binary)],
                          outputs=requested(["output"], binary))
    output = result.get_output("output")
    assert (output["datatype"], output["shape"]) == (suffix.upper(), [2, 3])
    assert ("binary_data_size" in output.get("parameters", {})) == binary, output
    got = result.as_numpy("output")
    assert got.dtype == data.dtype
    np.testing.assert_array_equal(got, data)


def two_io_inputs(binary_x, binary_ids):
    ref = reference("two_io.json")
    x = np.array(ref["inputs"]["x"]["data"], dtype=np.float32).reshape(ref["inputs"]["x"]["shape"])
    ids = np.array(ref["inputs"]["ids"]["data"], dtype=np.int64).reshape(ref["inputs"]["ids"]["shape"])
    return ref, [infer_input("x", x, "FP32", binary_x), infer_input("ids", ids, "INT64", binary_ids)]


def assert_two_io_outputs(result, ref):
    y = result.as_numpy("y")
    assert y.dtype == np.float32 and list(y.shape) == ref["outputs"]["y"]["shape"]
    np.testing.assert_allclose(y.ravel(), ref["outputs"]["y"]["data"], atol=1e-5)
    ids_out = result.as_numpy("ids_out")
    assert ids_out.dtype == np.int64 and list(ids_out.shape) == ref["outputs"]["ids_out"]["shape"]
    np.testing.assert_array_equal(ids_out.ravel(), ref["outputs"]["ids_out"]["data"])


# Binary and JSON tensors may be mixed freely within one request and answer.
@pytest.mark.parametrize("binary_x,binary_ids,binary_out", [
    (False, False, False), (True, True, True), (True, False, False), (False, True, True),
    (True, True, False),
], ids=["json", "binary", "mixed-inputs-json-out", "mixed-inputs-binary-out", "binary-in-json-out"])
def test_multi_input_multi_output_matches_python_onnxruntime(client, binary_x, binary_ids, binary_out):
    ref, inputs = two_io_inputs(binary_x, binary_ids)
    result = client.infer("two_io", inputs, outputs=requested(["y", "ids_out"], binary_out),
                          request_id="http-1")
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == (
        "two_io", "1", "http-1")
    assert [o["name"] for o in response["outputs"]] == ["y", "ids_out"]
    assert_two_io_outputs(result, ref)


def test_all_outputs_in_binary_when_none_are_named(client):
    # The client's default: no `outputs`, request parameter binary_data_output.
    ref, inputs = two_io_inputs(True, True)
    result = client.infer("two_io", inputs)
    outputs = result.get_response()["outputs"]
    assert sorted(o["name"] for o in outputs) == ["ids_out", "y"]
    assert all("binary_data_size" in o["parameters"] and "data" not in o for o in outputs), outputs
    assert_two_io_outputs(result, ref)


@pytest.mark.parametrize("mode", MODES)
def test_output_selection(client, mode):
    binary = mode == "binary"
    _, inputs = two_io_inputs(binary, binary)
    result = client.infer("two_io", inputs, outputs=requested(["ids_out"], binary))
    assert [o["name"] for o in result.get_response()["outputs"]] == ["ids_out"]
    assert result.as_numpy("y") is None
    assert result.as_numpy("ids_out").shape == (5, 2)


@pytest.mark.parametrize("mode", MODES)
def test_id_is_echoed_and_absent_when_not_sent(client, mode):
    binary = mode == "binary"
    _, inputs = two_io_inputs(binary, binary)
    outputs = requested(["y"], binary)
    assert client.infer("two_io", inputs, outputs=outputs, request_id="abc-42").get_response()["id"] == "abc-42"
    assert "id" not in client.infer("two_io", inputs, outputs=outputs).get_response()


@pytest.mark.parametrize("request_algorithm,response_algorithm", [
    ("gzip", None), ("deflate", None), (None, "gzip"), (None, "deflate"), ("gzip", "deflate"),
])
@pytest.mark.parametrize("mode", MODES)
def test_compressed_bodies(client, mode, request_algorithm, response_algorithm):
    binary = mode == "binary"
    ref, inputs = two_io_inputs(binary, binary)
    result = client.infer("two_io", inputs, outputs=requested(["y", "ids_out"], binary),
                          request_compression_algorithm=request_algorithm,
                          response_compression_algorithm=response_algorithm)
    assert_two_io_outputs(result, ref)


# The client decompresses only when the answer says it is compressed, so the
# test above would pass against a server that ignored Accept-Encoding; this
# one looks at the answer itself.
@pytest.mark.parametrize("algorithm,decompress", [("gzip", gzip.decompress),
                                                   ("deflate", zlib.decompress)])
def test_answer_is_compressed_when_asked(inferd, algorithm, decompress):
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                                   "data": [1, 2, 3, 4]}]})
    connection = http.client.HTTPConnection(inferd["http"], timeout=10)
    connection.request("POST", "/v2/models/dyn_batch/infer", body=body,
                       headers={"Content-Type": "application/json", "Accept-Encoding": algorithm})
    answer = connection.getresponse()
    raw = answer.read()
    assert answer.status == 200, raw
    assert answer.getheader("Content-Encoding") == algorithm
    assert json.loads(decompress(raw))["outputs"][0]["shape"] == [1, 2]


# Errors, as the client reports them: the HTTP status as a string, and the
# server's message.

@pytest.mark.parametrize("mode", MODES)
def test_unknown_model(client, mode):
    binary = mode == "binary"
    _, inputs = two_io_inputs(binary, binary)
    expect_error(lambda: client.infer("nope", inputs, outputs=requested(["y"], binary)),
                 "404", "unknown model 'nope'")
    expect_error(lambda: client.get_model_metadata("nope"), "404", "unknown model 'nope'")


def test_model_config_of_an_unknown_model(client):
    expect_error(lambda: client.get_model_config("nope"), "404", "unknown model 'nope'")
    expect_error(lambda: client.get_model_config("two_io", "2"), "404", "two_io")


@pytest.mark.parametrize("mode", MODES)
def test_wrong_type(client, mode):
    binary = mode == "binary"
    tensor = infer_input("input", np.zeros((1, 4), dtype=np.float64), "FP64", binary)
    expect_error(lambda: client.infer("dyn_batch", [tensor], outputs=requested(["output"], binary)),
                 "400", "has datatype FP64 but model 'dyn_batch' expects FP32")


@pytest.mark.parametrize("mode", MODES)
def test_wrong_shape(client, mode):
    binary = mode == "binary"
    tensor = infer_input("input", np.zeros((1, 3), dtype=np.float32), "FP32", binary)
    expect_error(lambda: client.infer("dyn_batch", [tensor], outputs=requested(["output"], binary)),
                 "400", "expects [-1, 4]")


def test_binary_data_that_does_not_fit_the_shape(client):
    # 16 bytes of data declared as two rows of four FP32 values (32 bytes).
    tensor = infer_input("input", np.zeros((1, 4), dtype=np.float32), "FP32", True)
    tensor.set_shape([2, 4])
    with pytest.raises(InferenceServerException) as caught:
        client.infer("dyn_batch", [tensor])
    assert caught.value.status() == "400", caught.value


def test_fp16_as_json_is_refused(client):
    tensor = infer_input("input", np.ones((1, 2), dtype=np.float16), "FP16", False)
    expect_error(lambda: client.infer("identity_fp16", [tensor], outputs=requested(["output"], False)),
                 "400", "FP16")


def test_bytes_tensors_are_refused_by_name(client):
    tensor = infer_input("input", np.array([[b"a", b"bc"]], dtype=np.object_), "BYTES", True)
    expect_error(lambda: client.infer("identity_int8", [tensor]), "400", "BYTES")


# Statistics, in Triton's format.

def two_io_stats(client, version=""):
    stats = client.get_inference_statistics("two_io", version)["model_stats"]
    assert [(s["name"], s["version"]) for s in stats] == [("two_io", "1")], stats
    return stats[0]


def test_statistics_count_requests_rows_and_durations(client):
    before = two_io_stats(client)
    _, inputs = two_io_inputs(True, True)
    for _ in range(2):
        client.infer("two_io", inputs)

    after = wait_until(lambda: two_io_stats(client),
                       lambda s: s["inference_stats"]["success"]["count"]
                       >= before["inference_stats"]["success"]["count"] + 2)
    # Two requests of five rows each, run one after the other.
    assert after["inference_count"] - before["inference_count"] == 10
    assert after["execution_count"] - before["execution_count"] == 2
    for step in ["success", "queue", "compute_input", "compute_infer", "compute_output"]:
        got, had = after["inference_stats"][step], before["inference_stats"][step]
        assert got["count"] - had["count"] == 2, (step, got, had)
        # A queue wait or a copy may round to nothing; a whole request and an
        # engine call may not.
        if step in ("success", "compute_infer"):
            assert got["ns"] > had["ns"], (step, got, had)
        else:
            assert got["ns"] >= had["ns"], (step, got, had)
    assert set(after["inference_stats"]["fail"]) >= {"count", "ns"}
    assert two_io_stats(client, "1")["inference_count"] >= after["inference_count"]


def test_statistics_of_every_model(client):
    names = {s["name"] for s in client.get_inference_statistics()["model_stats"]}
    assert {"two_io", "dyn_batch", "identity_fp32"} <= names, names
    expect_error(lambda: client.get_inference_statistics("nope"), "404", "nope")
