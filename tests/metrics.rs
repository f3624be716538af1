//! Prometheus metrics: after a known sequence of successes, refusals,
//! expirations and errors, the scraped counters and histogram counts match
//! exactly.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, copy_model, temp_dir};
use serde_json::{Value, json};

/// The value of the sample `name` whose labels include every pair of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, rest) = series.split_once('{').unwrap_or((series, "}"));
            if series_name != name {
                return None;
            }
            let all = labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            all.then(|| value.parse().unwrap())
        })
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?} in\n{text}");
    found[0]
}

fn slow_request(x: f64, timeout_us: Option<u64>) -> Value {
    let mut body =
        json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [x]}]});
    if let Some(t) = timeout_us {
        body["parameters"] = json!({"timeout": t});
    }
    body
}

fn rows(n: usize) -> Value {
    json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [n, 4], "data": vec![0.5; n * 4]}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_metrics_match_what_happened() {
    let repo = temp_dir("metrics");
    copy_model(&repo, "dyn_batch", "dyn_batch");
    copy_model(&repo, "slow", "slow");
    std::fs::write(
        repo.join("slow/config.toml"),
        "[instance_group]\ncount = 1\nintra_op_threads = 1\n[dynamic_batching]\nmax_queue_size = 2\n",
    )
    .unwrap();
    let server = Arc::new(TestServer::start(Some(repo.clone())).await);
    let dyn_labels = [("model", "dyn_batch"), ("version", "1")];
    let slow_labels = [("model", "slow"), ("version", "1")];

    // dyn_batch: three requests of 1, 2 and 3 rows, one after another, and
    // one that does not fit the model.
    for n in 1..=3 {
        assert_eq!(server.post_json("/v2/models/dyn_batch/infer", &rows(n)).await.0, 200);
    }
    let bad = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]});
    assert_eq!(server.post_json("/v2/models/dyn_batch/infer", &bad).await.0, 400);

    // slow: a burst against a queue of two, then a deadline that passes.
    let mut burst = Vec::new();
    for i in 0..10 {
        let server = Arc::clone(&server);
        burst.push(tokio::spawn(async move {
            server.post_json("/v2/models/slow/infer", &slow_request(i as f64, None)).await.0
        }));
    }
    let mut statuses = Vec::new();
    for task in burst {
        statuses.push(task.await.unwrap());
    }
    let ok = statuses.iter().filter(|&&s| s == 200).count() as f64;
    let refused = statuses.iter().filter(|&&s| s == 503).count() as f64;
    assert_eq!(ok + refused, 10.0, "{statuses:?}");
    assert!(refused > 0.0, "{statuses:?}");
    // Two slow calls, the most the queue of two lets in besides the one
    // computing, keep the instance busy past the 5 ms deadline even where
    // one call alone takes hardly longer.
    let mut busy = Vec::new();
    for i in 0..2 {
        let server = Arc::clone(&server);
        busy.push(tokio::spawn(async move {
            server.post_json("/v2/models/slow/infer", &slow_request(i as f64, None)).await.0
        }));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let expired = server.post_json("/v2/models/slow/infer", &slow_request(2.0, Some(5_000))).await;
    assert_eq!(expired.0, 504);
    for call in busy {
        assert_eq!(call.await.unwrap(), 200);
    }

    // The expired request leaves the queue when the instance reaches it.
    let queue_empty = std::time::Instant::now() + Duration::from_secs(5);
    while server.state.registry.load().resolve("slow", None).unwrap().queued() > 0 {
        assert!(std::time::Instant::now() < queue_empty, "the queue did not drain");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let url = format!("{}/metrics", server.metrics.as_ref().expect("metrics are on by default"));
    let response = server.client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();

    assert_eq!(sample(&text, "nv_inference_request_success", &dyn_labels), 3.0);
    assert_eq!(sample(&text, "nv_inference_count", &dyn_labels), 6.0);
    assert_eq!(sample(&text, "nv_inference_exec_count", &dyn_labels), 3.0);
    let failure = |labels: &[(&str, &str)], reason: &str| {
        let mut labels = labels.to_vec();
        labels.push(("reason", reason));
        sample(&text, "nv_inference_request_failure", &labels)
    };
    assert_eq!(failure(&dyn_labels, "OTHER"), 1.0);
    assert_eq!(failure(&dyn_labels, "REJECTED"), 0.0);
    assert_eq!(sample(&text, "inferd_batch_size_count", &dyn_labels), 3.0);
    assert_eq!(sample(&text, "inferd_batch_size_sum", &dyn_labels), 6.0);
    let mut le1 = dyn_labels.to_vec();
    le1.push(("le", "1"));
    assert_eq!(sample(&text, "inferd_batch_size_bucket", &le1), 1.0);
    assert_eq!(sample(&text, "inferd_request_duration_seconds_count", &dyn_labels), 3.0);
    let mut inf = dyn_labels.to_vec();
    inf.push(("le", "+Inf"));
    assert_eq!(sample(&text, "inferd_request_duration_seconds_bucket", &inf), 3.0);
    assert!(sample(&text, "nv_inference_compute_infer_duration_us", &dyn_labels) > 0.0);
    assert!(
        sample(&text, "nv_inference_request_duration_us", &dyn_labels)
            >= sample(&text, "nv_inference_compute_infer_duration_us", &dyn_labels)
    );

    assert_eq!(sample(&text, "nv_inference_request_success", &slow_labels), ok + 2.0);
    assert_eq!(sample(&text, "inferd_requests_refused_total", &slow_labels), refused);
    assert_eq!(sample(&text, "inferd_requests_expired_total", &slow_labels), 1.0);
    assert_eq!(failure(&slow_labels, "REJECTED"), refused + 1.0);
    assert_eq!(failure(&slow_labels, "OTHER"), 0.0);
    assert_eq!(failure(&slow_labels, "CANCELED"), 0.0, "an expired request is not also canceled");
    assert_eq!(sample(&text, "nv_inference_pending_request_count", &slow_labels), 0.0);
    assert_eq!(sample(&text, "inferd_queue_capacity", &slow_labels), 2.0);

    assert!(sample(&text, "process_resident_memory_bytes", &[]) > 1e6);
    assert!(sample(&text, "process_open_fds", &[]) > 0.0);
    assert!(sample(&text, "process_cpu_seconds_total", &[]) >= 0.0);

    let server = Arc::into_inner(server).unwrap();
    server.stop().await;
    std::fs::remove_dir_all(repo).unwrap();
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let mut config = inferd::cli::ServerConfig::local(None);
    config.metrics_addr = None;
    let server = TestServer::start_with(config).await;
    assert!(server.metrics.is_none());
    server.stop().await;
}
