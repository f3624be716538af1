//! Instances of one model share one copy of its weights: sessions given the
//! same shared weights compute exactly what a session that loads its own does.

use inferd::engine::{Instance, ModelSource, OptimizationLevel, SessionSettings, SharedWeights};
use inferd::model::repository::BUNDLED_MODEL;
use inferd::tensor::{Tensor, TensorData};

fn settings() -> SessionSettings {
    SessionSettings {
        intra_op_threads: 1,
        optimization: OptimizationLevel::All,
        pool_thread_name: None,
    }
}

/// Outputs of the plain session and of two sessions sharing `source`'s weights.
fn outputs(source: &ModelSource, inputs: &[Tensor]) -> (Vec<Tensor>, Vec<Vec<Tensor>>) {
    let weights = SharedWeights::load(source).unwrap();
    let (count, bytes) = weights.shared();
    assert!(count > 0 && bytes > 0, "no initializer was shared");
    let mut own = Instance::load(source, &settings()).unwrap();
    let shared: Vec<Vec<Tensor>> = (0..2)
        .map(|_| {
            let mut instance = Instance::load_shared(source, &settings(), Some(&weights)).unwrap();
            instance.run(inputs).unwrap()
        })
        .collect();
    (own.run(inputs).unwrap(), shared)
}

#[test]
fn sessions_sharing_the_bundled_models_weights_answer_as_one_with_its_own() {
    let weights = SharedWeights::load(&ModelSource::Embedded(BUNDLED_MODEL)).unwrap();
    // mean, scale and two dense layers: 10 + 10 + 10x16 + 16 + 16x1 + 1 floats.
    assert_eq!(weights.shared(), (6, 4 * 213));
    let features: Vec<f32> = (0..80).map(|i| (i as f32 * 0.37).sin() * 50.0 + 60.0).collect();
    let inputs = [Tensor { shape: vec![8, 10], data: TensorData::Fp32(features) }];
    let (want, shared) = outputs(&ModelSource::Embedded(BUNDLED_MODEL), &inputs);
    for got in shared {
        assert_eq!(got, want, "bit for bit");
    }
}

#[test]
fn integer_and_scalar_initializers_are_shared_too() {
    // two_io holds FP32 weights and INT64 scalars (shape []).
    let model =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/two_io/1/model.onnx");
    let source = ModelSource::File(model);
    let weights = SharedWeights::load(&source).unwrap();
    assert_eq!(weights.shared(), (4, 12 + 4 + 8 + 8));
    let inputs = [
        Tensor { shape: vec![2, 3], data: TensorData::Fp32(vec![0.5, -1.0, 2.0, 3.0, 0.25, -4.0]) },
        Tensor { shape: vec![2, 2], data: TensorData::Int64(vec![1, -2, 30, 400]) },
    ];
    let (want, shared) = outputs(&source, &inputs);
    for got in shared {
        assert_eq!(got, want);
    }
}
