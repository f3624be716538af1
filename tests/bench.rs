//! `inferd bench`, the real binary, against a real server started in this
//! process: the CSV, JSON, SVG and PNG it writes, over each protocol, and
//! how it fails on a bad model, shape, input file or address.

mod common;

use std::path::Path;
use std::process::Output;

use common::{TestServer, temp_dir, test_repository};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_inferd");

/// Runs `inferd bench` with `args` (split at spaces; temporary paths have
/// none) against `server`, off the runtime's threads so that the server
/// keeps answering.
async fn bench(server: &TestServer, args: &str) -> Output {
    let mut command = std::process::Command::new(BIN);
    command.arg("bench").args(["--url", &server.base, "--grpc-url", &server.grpc]);
    command.args(args.split_whitespace());
    tokio::task::spawn_blocking(move || command.output().expect("inferd runs")).await.unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The CSV as rows of named fields.
fn read_csv(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), header.len(), "row {line}");
            header.iter().map(|h| h.to_string()).zip(fields.iter().map(|f| f.to_string())).collect()
        })
        .collect()
}

fn number(row: &std::collections::HashMap<String, String>, column: &str) -> f64 {
    row[column].parse().unwrap_or_else(|_| panic!("{column} = '{}'", row[column]))
}

/// Decodes a PNG and returns its size and how many of its pixels are not
/// white, so that an empty image shows.
fn decode_png(path: &Path) -> (u32, u32, usize) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let inked = pixels[..info.buffer_size()].chunks(3).filter(|p| p != &[255, 255, 255]).count();
    (info.width, info.height, inked)
}

#[tokio::test]
async fn a_sweep_over_each_protocol_writes_csv_json_and_charts() {
    let server = TestServer::start(None).await;
    let out = temp_dir("bench-sweep");
    let args = format!(
        "--model clinical-risk --protocol http,http-binary,grpc --concurrency 1,4 \
         --window-secs 1 --warmup-secs 0.2 --output {}",
        out.display()
    );
    let output = bench(&server, &args).await;
    assert!(output.status.success(), "{}", stderr(&output));

    // The table: a header and a row per point.
    let table = String::from_utf8(output.stdout).unwrap();
    assert_eq!(table.lines().count(), 1 + 6, "{table}");
    assert!(table.lines().next().unwrap().contains("p99.9 ms"));

    // Six points, protocol by protocol, each plausible and without errors.
    let rows = read_csv(&out.join("bench.csv"));
    let protocols: Vec<&str> = rows.iter().map(|r| r["protocol"].as_str()).collect();
    assert_eq!(protocols, ["http", "http", "http-binary", "http-binary", "grpc", "grpc"]);
    for row in &rows {
        assert_eq!(row["mode"], "closed");
        assert!(number(row, "throughput_rps") > 0.0, "{row:?}");
        assert!(number(row, "p50_ms") > 0.0);
        assert!(number(row, "p50_ms") <= number(row, "p90_ms"));
        assert!(number(row, "p90_ms") <= number(row, "p99_ms"));
        assert!(number(row, "p99_ms") <= number(row, "p999_ms"));
        assert!(number(row, "p999_ms") <= number(row, "max_ms"));
        assert_eq!(number(row, "errors"), 0.0, "{row:?}");
        assert_eq!(row["errors_by_kind"], "");
        assert!((number(row, "measured_secs") - 1.0).abs() < 0.5, "{row:?}");
    }
    let concurrencies: Vec<&str> = rows.iter().map(|r| r["concurrency"].as_str()).collect();
    assert_eq!(concurrencies, ["1", "4", "1", "4", "1", "4"]);

    // The JSON: the run's settings, read from the model's metadata, and the
    // same points.
    let report = read_json(&out.join("bench.json"));
    assert_eq!(report["run"]["model"], "clinical-risk");
    assert_eq!(report["run"]["inputs"][0]["name"], "features");
    assert_eq!(report["run"]["inputs"][0]["datatype"], "FP32");
    assert_eq!(report["run"]["inputs"][0]["shape"], serde_json::json!([1, 10]));
    let points = report["points"].as_array().unwrap();
    assert_eq!(points.len(), 6);
    for (point, row) in points.iter().zip(&rows) {
        assert_eq!(point["protocol"], row["protocol"].as_str());
        assert_eq!(point["ok"].as_f64().unwrap(), number(row, "ok"));
        assert!(point["ok"].as_u64().unwrap() > 0);
        assert_eq!(point["errors"], 0);
        let latency = &point["latency_ms"];
        assert!(latency["p50"].as_f64().unwrap() <= latency["p99"].as_f64().unwrap());
    }

    // The charts: a PNG of the documented size with something drawn on it,
    // and an SVG that names the model.
    let (width, height, inked) = decode_png(&out.join("bench.png"));
    assert_eq!((width, height), (960, 600));
    assert!(inked > 5_000, "only {inked} pixels drawn");
    let svg = std::fs::read_to_string(out.join("bench.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{}", &svg[..80]);
    assert!(svg.contains("clinical-risk") && svg.contains(">\ngrpc\n<"));
    server.stop().await;
}

#[tokio::test]
async fn a_fixed_rate_sends_exactly_the_requests_due_in_the_window() {
    let server = TestServer::start(None).await;
    let out = temp_dir("bench-rate");
    let (csv, json) = (out.join("rate.csv"), out.join("rate.json"));
    let args = format!(
        "--model clinical-risk --protocol http-binary --rate 100,300 --concurrency 8 \
         --window-secs 1 --warmup-secs 0.2 --csv {} --json {}",
        csv.display(),
        json.display()
    );
    let output = bench(&server, &args).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let rows = read_csv(&csv);
    assert_eq!(rows.len(), 2);
    for (row, rate) in rows.iter().zip([100.0, 300.0]) {
        assert_eq!(row["mode"], "rate");
        assert_eq!(number(row, "offered_rps"), rate);
        assert_eq!(number(row, "concurrency"), 8.0);
        // Every request due in the one-second window is counted, answered
        // or not; the warm-up's are not.
        assert_eq!(number(row, "ok") + number(row, "errors"), rate, "{row:?}");
        assert_eq!(number(row, "errors"), 0.0);
        assert!(number(row, "p50_ms") <= number(row, "p99_ms"));
    }
    assert_eq!(read_json(&json)["points"].as_array().unwrap().len(), 2);
    assert!(!out.join("bench.png").exists(), "no chart was asked for");
    server.stop().await;
}

#[tokio::test]
async fn rows_come_from_npy_and_csv_files_and_every_type_is_generated() {
    let server = TestServer::start(Some(test_repository())).await;
    let out = temp_dir("bench-data");

    // two_io: x (FP32, 3 a row) from a float64 .npy, ids (INT64, 2 a row)
    // from a CSV with a header; two rows a request.
    let x = out.join("x.npy");
    std::fs::write(&x, npy_f64(&[5, 3], &(0..15).map(|i| i as f64 / 10.0).collect::<Vec<_>>()))
        .unwrap();
    let ids = out.join("ids.csv");
    std::fs::write(&ids, "a,b\n1,2\n3,4\n5,6\n").unwrap();
    let json = out.join("two_io.json");
    let args = format!(
        "--model two_io --protocol http,grpc --input-data x={} --input-data ids={} \
         --batch-size 2 --concurrency 2 --window-secs 0.5 --warmup-secs 0 --json {}",
        x.display(),
        ids.display(),
        json.display()
    );
    let output = bench(&server, &args).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let report = read_json(&json);
    let inputs = &report["run"]["inputs"];
    assert_eq!(inputs[0]["data"], x.display().to_string());
    assert_eq!(inputs[1]["datatype"], "INT64");
    assert_eq!(inputs[1]["shape"], serde_json::json!([2, 2]));
    assert_eq!(report["run"]["rows_per_request"], 2);
    for point in report["points"].as_array().unwrap() {
        assert!(point["ok"].as_u64().unwrap() > 0 && point["errors"] == 0, "{point}");
    }

    // Random data of each common type, over all three protocols; FP16 has
    // no JSON form, so goes over the other two.
    for (model, protocols) in [
        ("identity_fp64", "http,http-binary,grpc"),
        ("identity_int32", "http,http-binary,grpc"),
        ("identity_int64", "http,http-binary,grpc"),
        ("identity_fp16", "http-binary,grpc"),
        ("identity_bool", "http,grpc"),
    ] {
        let args = format!(
            "--model {model} --protocol {protocols} --shape input:2,5 --random-range -3,3 \
             --concurrency 1 --window-secs 0.2 --warmup-secs 0"
        );
        let output = bench(&server, &args).await;
        assert!(output.status.success(), "{model}: {}", stderr(&output));
        let table = String::from_utf8(output.stdout).unwrap();
        assert_eq!(table.lines().count(), 1 + protocols.split(',').count(), "{model}: {table}");
    }
    server.stop().await;
}

/// A `.npy` file (format 1.0) of little-endian float64 values.
fn npy_f64(shape: &[usize], values: &[f64]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let mut header =
        format!("{{'descr': '<f8', 'fortran_order': False, 'shape': ({},), }}", dims.join(", "));
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut file = b"\x93NUMPY\x01\x00".to_vec();
    file.extend_from_slice(&(header.len() as u16).to_le_bytes());
    file.extend_from_slice(header.as_bytes());
    file.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    file
}

#[tokio::test]
async fn mistakes_stop_the_run_with_a_clear_message_and_a_failing_status() {
    let server = TestServer::start(Some(test_repository())).await;
    let run = |args: String| {
        let server = &server;
        async move {
            bench(server, &format!("{args} --window-secs 0.2 --warmup-secs 0 --concurrency 1"))
                .await
        }
    };

    // An unknown model, over HTTP and over gRPC: the server's own words.
    for protocol in ["http", "grpc"] {
        let output = run(format!("--model nope --protocol {protocol}")).await;
        assert_eq!(output.status.code(), Some(1), "{protocol}");
        let message = stderr(&output);
        assert!(message.contains("model 'nope' is not served at"), "{message}");
        assert!(message.contains("unknown model"), "{message}");
    }

    // Shapes that do not fit the model, or do not parse.
    let output = run("--model dyn_batch --shape input:1,5".into()).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("has shape [-1, 4]"), "{}", stderr(&output));
    let output = run("--model dyn_batch --shape input1,4".into()).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("is not NAME:D1,D2"), "{}", stderr(&output));
    let output = run("--model dyn_batch --shape other:1,4".into()).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("no such input (its inputs: input)"), "{}", stderr(&output));
    let output = run("--model identity_fp32".into()).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--shape input:1,N"), "{}", stderr(&output));
    let output = run("--model fixed_shape --batch-size 4".into()).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("does not batch"), "{}", stderr(&output));

    // A type that JSON cannot carry, and rows of the wrong width.
    let output = run("--model identity_fp16 --shape input:1,2".into()).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("no JSON form"), "{}", stderr(&output));
    let rows = temp_dir("bench-bad-rows").join("rows.csv");
    std::fs::write(&rows, "1,2,3\n").unwrap();
    let output = run(format!("--model dyn_batch --input-data {}", rows.display())).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("line 1 has 3 values; the input takes 4"),
        "{}",
        stderr(&output)
    );
    server.stop().await;
}

#[tokio::test]
async fn an_address_where_nothing_listens_is_reported() {
    // A port that was free a moment ago: connecting to it is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    for protocol in ["http", "grpc"] {
        let output = std::process::Command::new(BIN)
            .args(["bench", "--url", &format!("http://127.0.0.1:{port}"), "--protocol", protocol])
            .args(["--model", "clinical-risk", "--window-secs", "0.2"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{protocol}");
        assert!(stderr(&output).contains(&format!("cannot reach http://127.0.0.1:{port}")));
    }
    let output = std::process::Command::new(BIN)
        .args(["bench", "--url", "https://127.0.0.1:1", "--model", "m"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("https is not supported"), "{}", stderr(&output));
}
