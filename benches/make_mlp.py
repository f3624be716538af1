"""Build the compute-heavy benchmark model: a float32 MLP 10 -> 1024 -> 1024 -> 1024 -> 1.

Input `features` float32 [batch, 10], output `score` float32 [batch, 1], ReLU
between layers and a sigmoid at the end. Weights come from a fixed seed, so the
file is the same on every run. It is built here rather than committed because
its weights take about 8 MB.

Usage: python benches/make_mlp.py OUT_DIR   (writes OUT_DIR/mlp/1/model.onnx)
"""

import sys
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper, save

WIDTHS = [10, 1024, 1024, 1024, 1]


def main(out_dir: Path) -> None:
    rng = np.random.default_rng(7)
    nodes, inits, x = [], [], "features"
    for i, (n_in, n_out) in enumerate(zip(WIDTHS, WIDTHS[1:])):
        w = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
        b = np.zeros(n_out, dtype=np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [f"h{i}"]))
        last = i == len(WIDTHS) - 2
        act = "Sigmoid" if last else "Relu"
        y = "score" if last else f"a{i}"
        nodes.append(helper.make_node(act, [f"h{i}"], [y]))
        x = y
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 10])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    path = out_dir / "mlp" / "1" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    save(model, str(path))
    print(path)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
