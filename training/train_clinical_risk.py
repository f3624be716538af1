"""Train the demonstration clinical-risk model that ships with inferd.

The model is a small scikit-learn MLP trained on the diabetes data set bundled
with scikit-learn (442 patients, ten raw baseline measurements). The target is
whether disease progression one year after baseline is above the median.

The trained network is written out as an ONNX graph built by hand with
onnx.helper (scaling, dense layers, sigmoid), checked against scikit-learn
with onnxruntime, and saved together with its test metrics:

    <out>/1/model.onnx
    <out>/metrics.json

Every step is seeded, so rerunning the script gives byte-identical files.

Usage: python training/train_clinical_risk.py [--out models/clinical-risk]
"""

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import sklearn
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_diabetes
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

REPO_ROOT = Path(__file__).resolve().parents[1]
SEED = 42
TEST_SIZE = 0.25
HIDDEN_LAYERS = (16,)
ALPHAS = (1e-4, 1e-2, 1e-1, 1.0, 3.0, 10.0)  # L2 penalties tried by cross-validation
MAX_ITER = 5000
OPSET = 17
IR_VERSION = 9
TOLERANCE = 1e-5
FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


def load_data():
    """Raw features and the binary target: progression above the median."""
    data = load_diabetes(scaled=False)
    if list(data.feature_names) != FEATURES:
        raise SystemExit(f"unexpected feature order: {data.feature_names}")
    threshold = float(np.median(data.target))
    y = (data.target > threshold).astype(np.int64)
    return data.data, y, threshold


def train(x_train, y_train):
    """Fit scaler + MLP, choosing the L2 penalty by 5-fold CV on the training split."""
    pipeline = Pipeline([
        ("scaler", StandardScaler()),
        ("mlp", MLPClassifier(hidden_layer_sizes=HIDDEN_LAYERS, activation="relu",
                              solver="adam", max_iter=MAX_ITER, random_state=SEED)),
    ])
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=SEED)
    search = GridSearchCV(pipeline, {"mlp__alpha": ALPHAS}, scoring="roc_auc", cv=folds)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        search.fit(x_train, y_train)
    return search.best_estimator_


def dense_layers(mlp):
    """Nodes and initializers for the MLP's layers, input 'scaled', output 'logit'."""
    nodes, inits = [], []
    current = "scaled"
    last = len(mlp.coefs_) - 1
    for i, (w, b) in enumerate(zip(mlp.coefs_, mlp.intercepts_)):
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"W{i}"))
        inits.append(numpy_helper.from_array(b.astype(np.float32), f"B{i}"))
        nodes.append(helper.make_node("MatMul", [current, f"W{i}"], [f"mm{i}"], name=f"matmul{i}"))
        out = "logit" if i == last else f"pre{i}"
        nodes.append(helper.make_node("Add", [f"mm{i}", f"B{i}"], [out], name=f"add{i}"))
        if i != last:
            nodes.append(helper.make_node("Relu", [out], [f"h{i}"], name=f"relu{i}"))
            current = f"h{i}"
    return nodes, inits


def build_onnx(model):
    """Hand-built ONNX graph: Sub(mean) -> Div(scale) -> dense layers -> Sigmoid."""
    scaler, mlp = model.named_steps["scaler"], model.named_steps["mlp"]
    if mlp.out_activation_ != "logistic" or mlp.activation != "relu":
        raise SystemExit("expected a relu MLP with a logistic output")
    inits = [
        numpy_helper.from_array(scaler.mean_.astype(np.float32), "mean"),
        numpy_helper.from_array(scaler.scale_.astype(np.float32), "scale"),
    ]
    nodes = [
        helper.make_node("Sub", ["features", "mean"], ["centered"], name="center"),
        helper.make_node("Div", ["centered", "scale"], ["scaled"], name="scale"),
    ]
    layer_nodes, layer_inits = dense_layers(mlp)
    nodes += layer_nodes + [helper.make_node("Sigmoid", ["logit"], ["risk_score"], name="sigmoid")]
    graph = helper.make_graph(
        nodes, "clinical_risk", [
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", len(FEATURES)]),
        ], [
            helper.make_tensor_value_info("risk_score", TensorProto.FLOAT, ["batch", 1]),
        ], initializer=inits + layer_inits)
    onnx_model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
        producer_name="inferd-training", producer_version="1",
        doc_string="Demonstration model, not a medical device. Input: raw "
                   "age, sex, bmi, bp, s1..s6. Output: probability that disease "
                   "progression after one year is above the median.")
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model


def onnx_scores(model_bytes, x):
    """Run the ONNX model with onnxruntime on CPU and return risk_score[:, 0]."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    (out,) = session.run(["risk_score"], {"features": x.astype(np.float32)})
    return out[:, 0]


def verify(model_bytes, model, x_test):
    """Fail loudly unless onnxruntime agrees with scikit-learn on the test split."""
    expected = model.predict_proba(x_test)[:, 1]
    got = onnx_scores(model_bytes, x_test)
    worst = float(np.max(np.abs(got - expected)))
    if got.shape != expected.shape or worst > TOLERANCE:
        sys.exit(f"FAIL: onnxruntime differs from scikit-learn by {worst:.3g} (> {TOLERANCE})")
    return worst


def write_outputs(out_dir, model_bytes, metrics):
    model_path = out_dir / "1" / "model.onnx"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model_path.write_bytes(model_bytes)
    metrics_path = out_dir / "metrics.json"
    metrics_path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return model_path, metrics_path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "models" / "clinical-risk",
                        help="model directory (default: models/clinical-risk)")
    args = parser.parse_args()

    x, y, threshold = load_data()
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SIZE, stratify=y, random_state=SEED)
    model = train(x_train, y_train)
    proba = model.predict_proba(x_test)[:, 1]
    mlp = model.named_steps["mlp"]

    model_bytes = build_onnx(model).SerializeToString()
    worst = verify(model_bytes, model, x_test)

    metrics = {
        "test_auc": round(float(roc_auc_score(y_test, proba)), 6),
        "test_accuracy": round(float(accuracy_score(y_test, proba > 0.5)), 6),
        "n_train": int(len(y_train)),
        "n_test": int(len(y_test)),
        "seed": SEED,
        "sklearn_version": sklearn.__version__,
        "target_threshold": threshold,
        "hidden_layers": list(HIDDEN_LAYERS),
        "alpha": float(mlp.alpha),
        "n_iter": int(mlp.n_iter_),
    }
    model_path, metrics_path = write_outputs(args.out, model_bytes, metrics)

    print(f"target: progression > {threshold} (median); n_train={metrics['n_train']} "
          f"n_test={metrics['n_test']}")
    print(f"mlp: hidden={HIDDEN_LAYERS} alpha={mlp.alpha} (by 5-fold CV) iterations={mlp.n_iter_}")
    print(f"test AUC={metrics['test_auc']:.4f} accuracy={metrics['test_accuracy']:.4f}")
    print(f"onnxruntime vs scikit-learn max abs diff: {worst:.2e}")
    print(f"wrote {model_path} and {metrics_path}")


if __name__ == "__main__":
    main()
