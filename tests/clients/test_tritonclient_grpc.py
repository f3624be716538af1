"""Triton's own Python client, tritonclient.grpc, against inferd unchanged."""

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from conftest import reference


@pytest.fixture
def client(inferd):
    return grpcclient.InferenceServerClient(url=inferd["grpc"])


def test_health_and_server_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata.name == "inferd"
    assert client.is_model_ready("two_io")
    assert client.is_model_ready("two_io", "1")
    assert not client.is_model_ready("two_io", "2")


def test_model_metadata(client):
    metadata = client.get_model_metadata("two_io")
    assert metadata.platform == "onnxruntime_onnx"
    assert list(metadata.versions) == ["1"]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("x", "FP32", [-1, 3]), ("ids", "INT64", [-1, 2])]
    assert [t.name for t in metadata.outputs] == ["y", "ids_out"]


def two_io_inputs():
    ref = reference("two_io.json")
    x = np.array(ref["inputs"]["x"]["data"], dtype=np.float32).reshape(ref["inputs"]["x"]["shape"])
    ids = np.array(ref["inputs"]["ids"]["data"], dtype=np.int64).reshape(ref["inputs"]["ids"]["shape"])
    inputs = [grpcclient.InferInput("x", list(x.shape), "FP32"),
              grpcclient.InferInput("ids", list(ids.shape), "INT64")]
    inputs[0].set_data_from_numpy(x)
    inputs[1].set_data_from_numpy(ids)
    return ref, inputs


def test_multi_input_multi_output_matches_python_onnxruntime(client):
    ref, inputs = two_io_inputs()
    result = client.infer("two_io", inputs, request_id="tc-1")
    assert result.get_response().id == "tc-1"
    y = result.as_numpy("y")
    assert y.dtype == np.float32 and list(y.shape) == ref["outputs"]["y"]["shape"]
    np.testing.assert_allclose(y.ravel(), ref["outputs"]["y"]["data"], atol=1e-5)
    np.testing.assert_array_equal(result.as_numpy("ids_out").ravel(), ref["outputs"]["ids_out"]["data"])


def test_output_selection(client):
    _, inputs = two_io_inputs()
    result = client.infer("two_io", inputs, outputs=[grpcclient.InferRequestedOutput("ids_out")])
    assert [o.name for o in result.get_response().outputs] == ["ids_out"]
    assert result.as_numpy("y") is None


@pytest.mark.parametrize("suffix,datatype,dtype", [
    ("bool", "BOOL", np.bool_), ("uint8", "UINT8", np.uint8), ("uint16", "UINT16", np.uint16),
    ("uint32", "UINT32", np.uint32), ("uint64", "UINT64", np.uint64), ("int8", "INT8", np.int8),
    ("int16", "INT16", np.int16), ("int32", "INT32", np.int32), ("int64", "INT64", np.int64),
    ("fp32", "FP32", np.float32), ("fp64", "FP64", np.float64),
])
def test_every_supported_element_type(client, suffix, datatype, dtype):
    data = (np.arange(6).reshape(2, 3) % 2).astype(dtype) if dtype is np.bool_ else \
        np.array([[0, 1, 2], [3, 4, 100]]).astype(dtype)
    tensor = grpcclient.InferInput("input", [2, 3], datatype)
    tensor.set_data_from_numpy(data)
    result = client.infer(f"identity_{suffix}", [tensor])
    np.testing.assert_array_equal(result.as_numpy("output"), data)


def expect_error(call, code, text):
    with pytest.raises(InferenceServerException) as caught:
        call()
    assert caught.value.status() == code, caught.value
    assert text in caught.value.message(), caught.value.message()


def test_unknown_model(client):
    _, inputs = two_io_inputs()
    expect_error(lambda: client.infer("nope", inputs), "StatusCode.NOT_FOUND", "unknown model 'nope'")


def test_wrong_type(client):
    tensor = grpcclient.InferInput("input", [1, 4], "FP64")
    tensor.set_data_from_numpy(np.zeros((1, 4), dtype=np.float64))
    expect_error(lambda: client.infer("dyn_batch", [tensor]), "StatusCode.INVALID_ARGUMENT",
                 "has datatype FP64 but model 'dyn_batch' expects FP32")


def test_wrong_shape(client):
    tensor = grpcclient.InferInput("input", [1, 3], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    expect_error(lambda: client.infer("dyn_batch", [tensor]), "StatusCode.INVALID_ARGUMENT", "expects [-1, 4]")


# ---------------------------------------------------------------------------
# Model configuration and statistics: the ModelConfig and ModelStatistics RPCs
# that perf_analyzer and Triton's tools call.
# ---------------------------------------------------------------------------

from tritonclient.grpc import model_config_pb2 as mc  # noqa: E402

from conftest import TWO_IO_CONFIG, wait_until  # noqa: E402


@pytest.mark.parametrize("version", ["", "1"])
def test_model_config(client, version):
    config = client.get_model_config("two_io", version).config
    assert (config.name, config.platform, config.backend) == ("two_io", "onnxruntime_onnx", "onnxruntime")
    assert config.max_batch_size == TWO_IO_CONFIG["max_batch_size"]
    for side, tensors in [("input", config.input), ("output", config.output)]:
        got = [(t.name, mc.DataType.Name(t.data_type), list(t.dims)) for t in tensors]
        assert got == TWO_IO_CONFIG[side], tensors
    assert config.HasField("dynamic_batching")
    assert [(g.count, mc.ModelInstanceGroup.Kind.Name(g.kind)) for g in config.instance_group] == [
        (1, "KIND_CPU")]


def test_model_config_of_a_model_that_does_not_batch(client):
    config = client.get_model_config("fixed_shape").config
    assert config.max_batch_size == 0
    assert [(t.name, list(t.dims)) for t in config.input] == [("input", [2, 3])]


def test_model_config_of_an_unknown_model(client):
    expect_error(lambda: client.get_model_config("nope"), "StatusCode.NOT_FOUND", "unknown model 'nope'")


def two_io_stats(client, version=""):
    stats = client.get_inference_statistics("two_io", version).model_stats
    assert [(s.name, s.version) for s in stats] == [("two_io", "1")], stats
    return stats[0]


def test_inference_statistics(client):
    before = two_io_stats(client)
    _, inputs = two_io_inputs()
    for _ in range(3):
        client.infer("two_io", inputs)

    after = wait_until(lambda: two_io_stats(client),
                       lambda s: s.inference_stats.success.count >= before.inference_stats.success.count + 3)
    # Three requests of five rows each, run one after the other.
    assert after.inference_count - before.inference_count == 15
    assert after.execution_count - before.execution_count == 3
    for step in ["success", "queue", "compute_input", "compute_infer", "compute_output"]:
        got, had = getattr(after.inference_stats, step), getattr(before.inference_stats, step)
        assert got.count - had.count == 3, (step, got, had)
        assert got.ns >= had.ns, (step, got, had)
    assert after.inference_stats.compute_infer.ns > before.inference_stats.compute_infer.ns
    assert two_io_stats(client, "1").inference_count >= after.inference_count


def test_inference_statistics_of_every_model(client):
    names = {s.name for s in client.get_inference_statistics().model_stats}
    assert {"two_io", "dyn_batch", "identity_fp32"} <= names, names
    expect_error(lambda: client.get_inference_statistics("nope"), "StatusCode.NOT_FOUND", "nope")
