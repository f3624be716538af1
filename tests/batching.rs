//! Dynamic batching, deadlines, queue-full refusal and abandoned requests,
//! against a real server with real ONNX Runtime.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, copy_model, error_of, temp_dir};
use inferd::scheduler::SchedulerStats;
use serde_json::{Value, json};

/// A repository with `model` (copied from tests/models) under its own name,
/// configured by `config`.
fn repository(label: &str, model: &str, config: &str) -> std::path::PathBuf {
    let repo = temp_dir(label);
    copy_model(&repo, model, model);
    std::fs::write(repo.join(model).join("config.toml"), config).unwrap();
    repo
}

fn header(response: &reqwest::Response, name: &str) -> u64 {
    response.headers()[name].to_str().unwrap().parse().unwrap()
}

async fn cleanup(server: TestServer, repo: &Path) {
    server.stop().await;
    std::fs::remove_dir_all(repo).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_answers_equal_single_answers_and_never_mix_rows() {
    // A long queue delay makes concurrent requests gather into batches.
    let config = "max_batch_size = 32\n[dynamic_batching]\nmax_queue_delay_microseconds = 100000\n\
                  [instance_group]\ncount = 1\n";
    let repo = repository("batch", "dyn_batch", config);
    let server = Arc::new(TestServer::start(Some(repo.clone())).await);

    // Requests of 1, 2 and 3 rows, each with values of its own.
    let mut tasks = Vec::new();
    for i in 0..24usize {
        let server = Arc::clone(&server);
        tasks.push(tokio::spawn(async move {
            let rows: Vec<Vec<f32>> = (0..(i % 3 + 1))
                .map(|r| (0..4).map(|k| (i * 10 + r) as f32 * 0.01 + k as f32 * 0.1).collect())
                .collect();
            let data: Vec<f32> = rows.iter().flatten().copied().collect();
            let body = json!({"id": format!("b{i}"), "inputs": [{"name": "input", "datatype": "FP32",
                "shape": [rows.len(), 4], "data": data}]});
            let response =
                server.client.post(server.url("/v2/models/dyn_batch/infer")).json(&body).send().await.unwrap();
            assert_eq!(response.status(), 200);
            let batch_rows = header(&response, "x-batch-rows");
            let answer: Value = response.json().await.unwrap();
            assert_eq!(answer["id"], format!("b{i}"));
            assert_eq!(answer["outputs"][0]["shape"], json!([rows.len(), 2]));
            let got = common::floats(&answer["outputs"][0]["data"]);
            let want: Vec<f64> = common::dyn_batch_expected(&data).iter().map(|&v| v as f64).collect();
            common::assert_close(&got, &want, 1e-6);
            batch_rows
        }));
    }
    let mut largest = 0;
    for task in tasks {
        largest = largest.max(task.await.unwrap());
    }
    assert!(largest > 3, "requests were never batched together (largest batch {largest} rows)");
    assert!(largest <= 32, "a batch exceeded max_batch_size: {largest}");

    let registry = server.state.registry.load();
    let stats = registry.resolve("dyn_batch", None).unwrap().stats();
    let executions = SchedulerStats::get(&stats.executions);
    assert_eq!(SchedulerStats::get(&stats.requests), 24);
    assert_eq!(SchedulerStats::get(&stats.rows), (0..24).map(|i| i % 3 + 1).sum::<u64>());
    assert!(executions < 24, "{executions} engine calls for 24 requests");
    drop(registry);
    let server = Arc::into_inner(server).unwrap();
    cleanup(server, &repo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_of_different_shapes_are_never_merged() {
    let config = "max_batch_size = 16\n[dynamic_batching]\nmax_queue_delay_microseconds = 100000\n\
                  [instance_group]\ncount = 1\n";
    let repo = repository("shapes", "identity_fp32", config);
    let server = Arc::new(TestServer::start(Some(repo.clone())).await);
    let mut tasks = Vec::new();
    for i in 0..12usize {
        let server = Arc::clone(&server);
        tasks.push(tokio::spawn(async move {
            let width = [2usize, 3, 5][i % 3];
            let data: Vec<f32> = (0..width).map(|k| (i * 100 + k) as f32).collect();
            let body = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, width], "data": data}]});
            let response =
                server.client.post(server.url("/v2/models/identity_fp32/infer")).json(&body).send().await.unwrap();
            assert_eq!(response.status(), 200);
            let batch_rows = header(&response, "x-batch-rows");
            let answer: Value = response.json().await.unwrap();
            assert_eq!(answer["outputs"][0]["shape"], json!([1, width]));
            assert_eq!(common::floats(&answer["outputs"][0]["data"]), data.iter().map(|&v| v as f64).collect::<Vec<_>>());
            // Four requests of each width exist; a batch holds only one width.
            assert!(batch_rows <= 4, "a batch of {batch_rows} rows mixed widths");
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let server = Arc::into_inner(server).unwrap();
    cleanup(server, &repo).await;
}

#[tokio::test]
async fn idle_server_adds_no_queue_delay_by_default() {
    let repo = repository("idle", "dyn_batch", "[instance_group]\ncount = 1\n");
    let server = TestServer::start(Some(repo.clone())).await;
    let body = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]});
    for _ in 0..20 {
        let response = server
            .client
            .post(server.url("/v2/models/dyn_batch/infer"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "x-batch-rows"), 1);
        // Sequential requests find an idle instance: a queue time of
        // milliseconds would mean the batcher waited for company.
        assert!(
            header(&response, "x-queue-time-us") < 20_000,
            "queued {} µs",
            header(&response, "x-queue-time-us")
        );
    }
    cleanup(server, &repo).await;
}

#[tokio::test]
async fn a_request_of_more_rows_than_max_batch_size_is_refused() {
    let repo = repository("toolarge", "dyn_batch", "max_batch_size = 4\n");
    let server = TestServer::start(Some(repo.clone())).await;
    let body = json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [5, 4], "data": vec![0.5; 20]}]});
    let (status, answer) = server.post_json("/v2/models/dyn_batch/infer", &body).await;
    assert_eq!(status, 400);
    assert!(error_of(&answer).contains("exceeds the model's max_batch_size of 4"), "{answer}");
    cleanup(server, &repo).await;
}

fn slow_request(x: f64, timeout_us: Option<u64>) -> Value {
    let mut body =
        json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [x]}]});
    if let Some(t) = timeout_us {
        body["parameters"] = json!({"timeout": t});
    }
    body
}

const SLOW_CONFIG: &str = "[instance_group]\ncount = 1\nintra_op_threads = 1\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_is_answered_and_never_computed() {
    let repo = repository("deadline", "slow", SLOW_CONFIG);
    let server = Arc::new(TestServer::start(Some(repo.clone())).await);

    // Occupy the only instance with a few slow calls.
    let mut busy = Vec::new();
    for i in 0..3 {
        let server = Arc::clone(&server);
        busy.push(tokio::spawn(async move {
            server.post_json("/v2/models/slow/infer", &slow_request(i as f64, None)).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;

    let started = std::time::Instant::now();
    let (status, answer) =
        server.post_json("/v2/models/slow/infer", &slow_request(9.0, Some(5_000))).await;
    assert_eq!(status, 504, "{answer}");
    assert!(error_of(&answer).contains("deadline of 5000 µs passed"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_millis(60),
        "answered only after {:?}",
        started.elapsed()
    );

    for task in busy {
        assert_eq!(task.await.unwrap().0, 200);
    }
    let registry = server.state.registry.load();
    let stats = registry.resolve("slow", None).unwrap().stats();
    assert_eq!(SchedulerStats::get(&stats.requests), 3, "the expired request was computed");
    drop(registry);

    // A non-numeric timeout is the client's mistake.
    let mut bad = slow_request(1.0, None);
    bad["parameters"] = json!({"timeout": "soon"});
    let (status, answer) = server.post_json("/v2/models/slow/infer", &bad).await;
    assert_eq!(status, 400);
    assert!(error_of(&answer).contains("timeout"), "{answer}");
    let server = Arc::into_inner(server).unwrap();
    cleanup(server, &repo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_default_timeout_applies_to_requests_without_one() {
    let config = format!("{SLOW_CONFIG}[dynamic_batching]\ndefault_timeout_microseconds = 5000\n");
    let repo = repository("default-timeout", "slow", &config);
    let server = Arc::new(TestServer::start(Some(repo.clone())).await);
    let first = {
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            server.post_json("/v2/models/slow/infer", &slow_request(1.0, Some(10_000_000))).await
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let (status, _) = server.post_json("/v2/models/slow/infer", &slow_request(2.0, None)).await;
    assert_eq!(status, 504);
    assert_eq!(first.await.unwrap().0, 200, "a request's own timeout overrides the default");
    let server = Arc::into_inner(server).unwrap();
    cleanup(server, &repo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once_with_retry_after() {
    let config = format!("{SLOW_CONFIG}[dynamic_batching]\nmax_queue_size = 2\n");
    let repo = repository("queue", "slow", &config);
    let server = Arc::new(TestServer::start(Some(repo.clone())).await);

    let mut tasks = Vec::new();
    for i in 0..12 {
        let server = Arc::clone(&server);
        tasks.push(tokio::spawn(async move {
            let started = std::time::Instant::now();
            let response = server
                .client
                .post(server.url("/v2/models/slow/infer"))
                .json(&slow_request(i as f64, None))
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.headers().get("retry-after").cloned(),
                started.elapsed(),
            )
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for task in tasks {
        let (status, retry_after, took) = task.await.unwrap();
        match status {
            200 => ok += 1,
            503 => {
                refused += 1;
                assert_eq!(retry_after.unwrap(), "1");
                assert!(took < Duration::from_millis(500), "a refusal took {took:?}");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    // The queue holds two: at least those are admitted (three when the
    // instance took the first before the burst arrived); the rest are refused.
    assert!(refused > 0 && ok >= 2, "{ok} answered, {refused} refused");
    let (status, _) = server.post_json("/v2/models/slow/infer", &slow_request(3.0, None)).await;
    assert_eq!(status, 200, "the model serves again once the queue drains");
    let server = Arc::into_inner(server).unwrap();
    cleanup(server, &repo).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_client_left_is_dropped_before_compute() {
    let repo = repository("abandon", "slow", SLOW_CONFIG);
    let server = Arc::new(TestServer::start(Some(repo.clone())).await);
    // Three slow calls, one at a time: the instance is busy for three call
    // times, where one alone (about 15 ms on a fast machine) may end before
    // the impatient client below gives up.
    let mut busy = Vec::new();
    for i in 0..3 {
        let server = Arc::clone(&server);
        busy.push(tokio::spawn(async move {
            server.post_json("/v2/models/slow/infer", &slow_request(i as f64, None)).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;

    // This client gives up long before the instance is free.
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(5)).build().unwrap();
    let gone = impatient
        .post(server.url("/v2/models/slow/infer"))
        .json(&slow_request(2.0, None))
        .send()
        .await;
    assert!(gone.is_err());

    for call in busy {
        assert_eq!(call.await.unwrap().0, 200);
    }
    let (status, _) = server.post_json("/v2/models/slow/infer", &slow_request(3.0, None)).await;
    assert_eq!(status, 200);
    let registry = server.state.registry.load();
    let stats = registry.resolve("slow", None).unwrap().stats();
    assert_eq!(SchedulerStats::get(&stats.abandoned), 1);
    assert_eq!(SchedulerStats::get(&stats.requests), 4, "the abandoned request was computed");
    drop(registry);
    let server = Arc::into_inner(server).unwrap();
    cleanup(server, &repo).await;
}

#[tokio::test]
async fn max_batch_size_on_a_model_that_cannot_batch_fails_its_load() {
    let repo = repository("nobatch", "fixed_shape", "max_batch_size = 8\n");
    let server = TestServer::start(Some(repo.clone())).await;
    let registry = server.state.registry.load();
    let reason =
        registry.iter().find_map(|(_, entry)| entry.reason()).expect("the model failed to load");
    assert!(
        reason.contains("config.toml: max_batch_size is 8, but the model cannot batch"),
        "{reason}"
    );
    assert!(reason.contains("fixed first dimension (2)"), "{reason}");
    drop(registry);
    cleanup(server, &repo).await;
}
