//! The `--config` file: precedence flag > environment > file > default,
//! errors that name the file and the key, and `inferd config`, which prints
//! the effective settings with secrets redacted.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_inferd");

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let path =
        std::env::temp_dir().join(format!("inferd-config-{name}-{}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

/// `inferd config` with `args` and `env`, parsed as the TOML it prints.
fn effective(args: &[&str], env: &[(&str, &str)]) -> toml::Table {
    let mut command = Command::new(BIN);
    command.arg("config").args(args);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("INFERD_")) {
        command.env_remove(key);
    }
    command.envs(env.iter().copied());
    let output = command.output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    toml::from_str(&String::from_utf8(output.stdout).unwrap()).unwrap()
}

#[test]
fn flag_beats_environment_beats_file_beats_default() {
    let file = write(
        "precedence",
        "http_port = 9100\ngrpc_port = 9101\nmetrics_port = 9102\nmax_queue_size = 7\n\
         load_model = [\"a\", \"b\"]\nmodel_control_mode = \"explicit\"\nstrict_readiness = false\n",
    );
    let file = file.to_str().unwrap();
    let settings = effective(
        &["--config", file, "--http-port", "7000"],
        &[("INFERD_HTTP_PORT", "7001"), ("INFERD_GRPC_PORT", "7002")],
    );
    assert_eq!(settings["http_port"].as_integer(), Some(7000), "the flag wins");
    assert_eq!(settings["grpc_port"].as_integer(), Some(7002), "then the environment");
    assert_eq!(settings["metrics_port"].as_integer(), Some(9102), "then the file");
    assert_eq!(settings["max_queue_size"].as_integer(), Some(7));
    assert_eq!(settings["strict_readiness"].as_bool(), Some(false));
    assert_eq!(settings["model_control_mode"].as_str(), Some("explicit"));
    assert_eq!(settings["load_model"].as_array().unwrap().len(), 2);
    assert_eq!(settings["exit_timeout_secs"].as_integer(), Some(30), "then the default");

    // What `inferd config` prints is itself a valid configuration file.
    let printed = toml::to_string(&settings).unwrap();
    let again = write("printed", &printed);
    let settings_again = effective(&["--config", again.to_str().unwrap()], &[]);
    assert_eq!(settings_again, settings);
}

#[test]
fn secrets_are_redacted() {
    let file = write("secret", "admin_token = \"hunter2-very-secret\"\n");
    let output = Command::new(BIN)
        .args(["config", "--config", file.to_str().unwrap()])
        .env_remove("INFERD_ADMIN_TOKEN")
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("admin_token = \"<redacted>\""), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn a_bad_file_stops_start_up_naming_the_key() {
    let cases = [
        ("unknown", "http_prot = 8000\n", "unknown key 'http_prot'"),
        ("value", "http_port = \"eighty\"\n", "invalid value 'eighty' for '--http-port"),
        ("syntax", "http_port = \n", "TOML parse error at line 1"),
        ("range", "max_queue_size = 0\n", "--max-queue-size"),
    ];
    for (name, text, want) in cases {
        let file = write(name, text);
        let output =
            Command::new(BIN).args(["serve", "--config", file.to_str().unwrap()]).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(file.to_str().unwrap()), "{name}: the file is named: {stderr}");
        assert!(stderr.contains(want), "{name}: {stderr}");
    }
    let output =
        Command::new(BIN).args(["serve", "--config", "/nonexistent/inferd.toml"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read config file"));
}
