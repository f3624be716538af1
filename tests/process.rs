//! The `inferd` binary as an operator runs it: start-up errors, and shutdown
//! on SIGTERM while requests are in flight.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{copy_model, temp_dir};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_inferd");

/// Starts `inferd serve` on a free port and returns it with its address,
/// read from the JSON start-up log; the rest of stderr goes to a thread that
/// collects it.
fn spawn_server(args: &[&str]) -> (Child, String, std::sync::mpsc::Receiver<String>) {
    spawn_command(Command::new(BIN), args)
}

/// [`spawn_server`] with a command of one's own, which may run inferd
/// through another program.
fn spawn_command(
    mut command: Command,
    args: &[&str],
) -> (Child, String, std::sync::mpsc::Receiver<String>) {
    let mut child = command
        .args(inferd::cli::LOCAL_SERVE_ARGS)
        .args(["--log-format", "json"])
        .args(args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("inferd starts");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let mut lines = stderr.lines();
    let mut addr = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        let parsed: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        let _ = tx.send(line);
        if parsed["message"] == "http endpoint listening" {
            addr = parsed["addr"].as_str().map(str::to_string);
            break;
        }
    }
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, format!("http://{}", addr.expect("the server logs its address")), rx)
}

async fn wait_ready(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{base}/v2/health/ready")).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "server not ready within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn terminate(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("inferd did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn slow_repository(label: &str) -> std::path::PathBuf {
    let repo = temp_dir(label);
    copy_model(&repo, "slow", "slow");
    std::fs::write(
        repo.join("slow/config.toml"),
        "[instance_group]\ncount = 1\nintra_op_threads = 1\n",
    )
    .unwrap();
    repo
}

#[test]
fn missing_onnx_runtime_names_every_place_tried() {
    let output = Command::new(BIN)
        .args(["serve", "--http-port", "0"])
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so.1.31.1")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot load the ONNX Runtime 1.31.1 library"), "{stderr}");
    assert!(
        stderr.contains("ORT_DYLIB_PATH: /nonexistent/libonnxruntime.so.1.31.1 does not exist"),
        "{stderr}"
    );
    assert!(stderr.contains("scripts/setup.sh"), "{stderr}");

    // A file that exists but is no library is reported as failing to load.
    let output = Command::new(BIN)
        .args(["serve", "--http-port", "0"])
        .env("ORT_DYLIB_PATH", env!("CARGO_MANIFEST_DIR").to_string() + "/Cargo.toml")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("failed to load"));
}

#[test]
fn help_documents_every_flag_with_its_environment_variable() {
    let output = Command::new(BIN).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    use clap::CommandFactory;
    let cli = inferd::cli::Cli::command();
    let serve = cli.find_subcommand("serve").expect("serve subcommand");
    let flags: Vec<String> = serve
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|long| !matches!(*long, "help" | "version"))
        .map(|long| format!("--{long}"))
        .collect();
    assert!(flags.len() >= 10, "{flags:?}");
    for flag in &flags {
        let flag = flag.as_str();
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
        let env =
            format!("INFERD_{}", flag.trim_start_matches("--").replace('-', "_").to_uppercase());
        assert!(help.contains(&env), "{env} missing from:\n{help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_refuses_new_ones() {
    let repo = slow_repository("drain");
    let (mut child, base, logs) = spawn_server(&["--model-repository", repo.to_str().unwrap()]);
    let client = reqwest::Client::new();
    wait_ready(&client, &base).await;

    // Eighty requests at 15-50 ms each on one instance: more than a second of
    // work, most of it queued or running when the signal arrives.
    let mut tasks = Vec::new();
    for i in 0..80 {
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            // One client per request: each request its own connection.
            let client = reqwest::Client::new();
            let x = i as f64 + 1.0;
            let body = json!({"id": format!("r{i}"), "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [x]}]});
            let response = client.post(format!("{base}/v2/models/slow/infer")).json(&body).send().await;
            (i, x, response)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    terminate(&child);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The listener is closed: a new connection is refused.
    let late = reqwest::Client::new().get(format!("{base}/v2/health/live")).send().await;
    assert!(late.is_err(), "a new connection was accepted during the drain");
    assert!(child.try_wait().unwrap().is_none(), "inferd had finished: no drain was under test");

    for task in tasks {
        let (i, x, response) = task.await.unwrap();
        let response = response.unwrap_or_else(|e| panic!("request {i} was lost: {e}"));
        assert_eq!(response.status(), 200, "request {i}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["id"], format!("r{i}"), "answered to the wrong request");
        // The model's float32 reduction over a million terms is not exact.
        let y = body["outputs"][0]["data"][0].as_f64().unwrap();
        assert!((y - x * x).abs() <= 0.01 * x * x, "request {i}: {y} is not {x} squared");
    }
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    let logs: Vec<String> = logs.try_iter().collect();
    assert!(logs.iter().any(|l| l.contains("SIGTERM")), "{logs:?}");
    assert!(logs.iter().any(|l| l.contains("shutdown complete")), "{logs:?}");
    std::fs::remove_dir_all(repo).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_is_bounded_by_the_exit_timeout() {
    let repo = slow_repository("bounded");
    let (mut child, base, logs) =
        spawn_server(&["--model-repository", repo.to_str().unwrap(), "--exit-timeout-secs", "1"]);
    let client = reqwest::Client::new();
    wait_ready(&client, &base).await;

    // Two hundred requests at 15-50 ms each: three seconds or more of queued
    // work against a one-second exit timeout.
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let base = base.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [2.0]}]});
            reqwest::Client::new().post(format!("{base}/v2/models/slow/infer")).json(&body).send().await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    terminate(&child);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(4), "drain took {took:?} with a 1 s exit timeout");

    let mut answered = 0;
    for task in tasks {
        if let Ok(response) = task.await.unwrap()
            && response.status() == 200
        {
            answered += 1;
        }
    }
    assert!(answered < 200, "the drain was not cut short");
    let logs: Vec<String> = logs.try_iter().collect();
    assert!(logs.iter().any(|l| l.contains("exit timeout reached")), "{logs:?}");
    std::fs::remove_dir_all(repo).unwrap();
}

/// Name and nice value of each of a process's threads.
fn thread_priorities(pid: u32) -> Vec<(String, i32)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let stat = std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap();
        let (head, rest) = stat.rsplit_once(')').unwrap();
        let name = head.split_once('(').unwrap().1.to_string();
        // nice is field 19 of the line, the 17th after the name.
        let nice = rest.split_whitespace().nth(16).unwrap().parse().unwrap();
        threads.push((name, nice));
    }
    threads
}

/// Starts inferd (through `command`) on the slow model with two intra-op
/// threads and the given --engine-nice; returns its threads, once it has
/// answered a request, and its log.
async fn serve_at_engine_nice(command: Command, nice: &str) -> (Vec<(String, i32)>, Vec<String>) {
    let repo = temp_dir(&format!("nice{nice}"));
    copy_model(&repo, "slow", "slow");
    std::fs::write(
        repo.join("slow/config.toml"),
        "[instance_group]\ncount = 1\nintra_op_threads = 2\n",
    )
    .unwrap();
    let args = ["--model-repository", repo.to_str().unwrap(), "--engine-nice", nice];
    let (mut child, base, logs) = spawn_command(command, &args);
    let client = reqwest::Client::new();
    wait_ready(&client, &base).await;
    let body =
        json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [3.0]}]});
    let response = client.post(format!("{base}/v2/models/slow/infer")).json(&body).send().await;
    assert_eq!(response.unwrap().status(), 200);
    let threads = thread_priorities(child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_dir_all(repo).unwrap();
    (threads, logs.try_iter().collect())
}

fn nice_of(threads: &[(String, i32)], name: &str) -> Vec<i32> {
    threads.iter().filter(|(n, _)| n == name).map(|(_, nice)| *nice).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_nice_reaches_the_engine_threads_and_no_others() {
    // A higher value needs no privilege, so this holds on every machine.
    let (threads, _) = serve_at_engine_nice(Command::new(BIN), "6").await;
    assert_eq!(nice_of(&threads, "inferd-slow-0"), [6], "{threads:?}");
    // ONNX Runtime's second intra-op thread carries the instance's name, and
    // it and the front end's threads keep the server's priority.
    assert_eq!(nice_of(&threads, "ort-slow-0"), [0], "{threads:?}");
    let others: Vec<_> = threads.iter().filter(|(n, _)| n != "inferd-slow-0").collect();
    assert!(others.iter().any(|(n, _)| n == "tokio-rt-worker"), "{threads:?}");
    assert!(others.len() >= 4, "main, front end and intra-op threads: {threads:?}");
    assert!(others.iter().all(|(_, nice)| *nice == 0), "{threads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negative_engine_nice_applies_with_the_privilege_and_warns_without() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let effective = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim();
    const CAP_SYS_NICE: u32 = 23;
    let privileged = u64::from_str_radix(effective, 16).unwrap() & (1 << CAP_SYS_NICE) != 0;

    let warning = "cannot give the engine threads nice -4";
    let (threads, logs) = serve_at_engine_nice(Command::new(BIN), "-4").await;
    let warned = logs.iter().any(|l| l.contains(warning));
    if privileged {
        assert_eq!(nice_of(&threads, "inferd-slow-0"), [-4], "{threads:?}");
        assert!(!warned, "{logs:?}");
    } else {
        assert_eq!(nice_of(&threads, "inferd-slow-0"), [0], "{threads:?}");
        assert!(warned, "{logs:?}");
    }

    // Without the capability, whatever this machine grants: the server
    // warns, serves, and its engine keeps the default priority.
    let mut unprivileged = Command::new("setpriv");
    unprivileged.args(["--bounding-set=-sys_nice", "--inh-caps=-sys_nice", BIN]);
    let (threads, logs) = serve_at_engine_nice(unprivileged, "-4").await;
    assert_eq!(nice_of(&threads, "inferd-slow-0"), [0], "{threads:?}");
    assert!(logs.iter().any(|l| l.contains(warning)), "{logs:?}");
}

#[test]
fn an_engine_nice_out_of_range_is_refused() {
    for bad in ["20", "-21", "high"] {
        let output = Command::new(BIN)
            .args(inferd::cli::LOCAL_SERVE_ARGS)
            .args(["--engine-nice", bad])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "--engine-nice {bad}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--engine-nice"), "{stderr}");
    }
}
