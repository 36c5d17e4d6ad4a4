//! The binary's commands: check-config, sign, and serve's startup and graceful exit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};

const HERALD: &str = env!("CARGO_BIN_EXE_herald");

#[test]
fn check_config_accepts_the_committed_config() {
    let out = Command::new(HERALD)
        .args([
            "check-config",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_names_every_bad_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\ningest_listen = \"not an address\"\n\n[delivery]\nmax_attempts = 0\n",
    )
    .unwrap();
    let out = Command::new(HERALD)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.ingest_listen"), "{stderr}");
    assert!(stderr.contains("delivery.max_attempts"), "{stderr}");

    std::fs::write(&path, "[server]\ningest_listn = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(HERALD)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ingest_listn"));

    // serve refuses the same file the same way, naming the key.
    let out = Command::new(HERALD)
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ingest_listn"));
}

#[test]
fn check_config_reports_unknown_keys_and_bad_values_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\ningest_listn = \"127.0.0.1:1\"\nmax_body_bytes = 0\n\
         [api]\ntoken = \"test-token\"\n[log]\nlevel = \"nonsense\"\n",
    )
    .unwrap();
    for command in ["check-config", "serve"] {
        let out = Command::new(HERALD)
            .args([command, "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{command}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let keys: Vec<&str> = stderr
            .lines()
            .filter_map(|line| line.split_once(": ").map(|(key, _)| key))
            .collect();
        assert_eq!(
            keys,
            ["server.ingest_listn", "server.max_body_bytes", "log.level"],
            "{command}: {stderr}"
        );
    }
}

#[test]
fn sign_prints_headers_that_verify() {
    let mut child = Command::new(HERALD)
        .args([
            "sign",
            "--secret",
            common::STD_SECRET,
            "--id",
            "msg_1",
            "--timestamp",
            "1614265330",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"test": 2432232314}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let expected = common::std_headers("msg_1", 1_614_265_330, br#"{"test": 2432232314}"#);
    let lines: Vec<String> = expected.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    assert_eq!(text.lines().collect::<Vec<_>>(), lines);
}

#[test]
fn sign_rejects_a_malformed_secret() {
    let out = Command::new(HERALD)
        .args([
            "sign",
            "--secret",
            "not-whsec",
            "--id",
            "x",
            "--file",
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--secret"));
}

#[test]
fn config_goes_before_or_after_the_subcommand_and_serve_is_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\ningest_listn = \"127.0.0.1:1\"\n").unwrap();
    for args in [
        vec!["--config", path.to_str().unwrap(), "check-config"],
        vec!["check-config", "--config", path.to_str().unwrap()],
        // No subcommand: `serve`, on the file given.
        vec!["--config", path.to_str().unwrap()],
    ] {
        let out = Command::new(HERALD).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("ingest_listn"), "{args:?}: {stderr}");
    }
}

#[test]
fn openapi_prints_the_committed_document() {
    let out = Command::new(HERALD).arg("openapi").output().unwrap();
    assert!(out.status.success());
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json")).unwrap();
    assert!(
        String::from_utf8(out.stdout).unwrap() == committed,
        "`herald openapi` differs from docs/openapi.json"
    );
}
