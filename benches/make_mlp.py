"""Build the compute-heavy benchmark models: float32 MLPs with a dynamic batch.

  mlp    10 -> 1024 -> 1024 -> 1024 -> 1   (the batching and engine-limit model)
  wide   10 -> 4096 -> 4096 -> 1          (the overload model: slow per row)

Input `features` float32 [batch, 10], output `score` float32 [batch, 1], ReLU
between layers and a sigmoid at the end. Weights come from a fixed seed, so the
files are the same on every run. They are built here rather than committed
because their weights take 8 to 67 MB.

Usage: python benches/make_mlp.py OUT_DIR   (writes OUT_DIR/{mlp,wide}/1/model.onnx)
"""

import sys
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper, save

MODELS = {"mlp": [10, 1024, 1024, 1024, 1], "wide": [10, 4096, 4096, 1]}


def build(out_dir: Path, name: str, widths: list) -> None:
    rng = np.random.default_rng(7)
    nodes, inits, x = [], [], "features"
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:])):
        w = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
        b = np.zeros(n_out, dtype=np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [f"h{i}"]))
        last = i == len(widths) - 2
        act = "Sigmoid" if last else "Relu"
        y = "score" if last else f"a{i}"
        nodes.append(helper.make_node(act, [f"h{i}"], [y]))
        x = y
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 10])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    path = out_dir / name / "1" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    save(model, str(path))
    print(path)


def main(out_dir: Path) -> None:
    for name, widths in MODELS.items():
        build(out_dir, name, widths)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
