//! The durability promise, tested the hard way: the real binary under concurrent load is
//! `SIGKILL`ed mid-stream, restarted on the same data, and every webhook that got a 202 must be
//! there, over several cycles. A webhook that got no answer may or may not be stored; resending
//! it must then give 202 or a 200 duplicate, never a second copy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::spawn;
use common::{ADMIN_TOKEN, now, std_headers};

const CYCLES: usize = 3;
const SENDERS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_webhook_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, common::config_text(&dir, "")).unwrap();
    let http = reqwest::Client::new();
    // external id -> message id, for every 202 ever received
    let acknowledged: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let mut unanswered: Vec<String> = Vec::new();

    for cycle in 0..CYCLES {
        let mut process = spawn(&config);
        // Everything acknowledged in earlier cycles is still there.
        let so_far = acknowledged.lock().unwrap().clone();
        verify(&http, process.api, &so_far).await;

        let deadline = Instant::now() + Duration::from_millis(400);
        let senders: Vec<_> = (0..SENDERS)
            .map(|sender| {
                let (http, acknowledged) = (http.clone(), Arc::clone(&acknowledged));
                let url = format!("http://{}/webhooks/std", process.ingest);
                tokio::spawn(async move {
                    let mut lost = Vec::new();
                    for n in 0.. {
                        let id = format!("evt_c{cycle}_s{sender}_{n}");
                        let body = format!(r#"{{"type":"crash.test","n":{n}}}"#);
                        let mut req = http.post(&url).body(body.clone());
                        for (k, v) in std_headers(&id, now(), body.as_bytes()) {
                            req = req.header(k, v);
                        }
                        match req.send().await {
                            Ok(resp) if resp.status().as_u16() == 202 => {
                                let json: serde_json::Value = resp.json().await.unwrap_or_default();
                                match json["id"].as_str() {
                                    Some(msg) => {
                                        acknowledged.lock().unwrap().insert(id, msg.to_owned());
                                    }
                                    None => lost.push(id), // killed mid-body: unanswered
                                }
                            }
                            Ok(resp) => panic!("unexpected status {} for {id}", resp.status()),
                            Err(_) => {
                                lost.push(id);
                                break; // the server is gone
                            }
                        }
                    }
                    lost
                })
            })
            .collect();
        tokio::time::sleep_until(deadline.into()).await;
        process.child.kill().unwrap(); // SIGKILL: no shutdown path runs
        process.child.wait().unwrap();
        for sender in senders {
            unanswered.extend(sender.await.unwrap());
        }
    }

    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > SENDERS * CYCLES,
        "the load was too light to mean anything: {} acknowledged",
        acknowledged.len()
    );
    let mut process = spawn(&config);
    verify(&http, process.api, &acknowledged).await;

    // Resending what was acknowledged gives duplicates, never new messages.
    for (id, msg) in acknowledged.iter().take(50) {
        let body = std_headers(id, now(), b"{}"); // different body, same id: still a duplicate
        let mut req = http
            .post(format!("http://{}/webhooks/std", process.ingest))
            .body("{}");
        for (k, v) in body {
            req = req.header(k, v);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{id}");
        let json: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(json["id"], msg.as_str());
    }
    // Unanswered ones are either stored once already or accepted now.
    for id in unanswered.iter().take(50) {
        let mut req = http
            .post(format!("http://{}/webhooks/std", process.ingest))
            .body("{}");
        for (k, v) in std_headers(id, now(), b"{}") {
            req = req.header(k, v);
        }
        let status = req.send().await.unwrap().status().as_u16();
        assert!(status == 200 || status == 202, "{id}: {status}");
    }
    // A graceful stop exits 0.
    let status = Command::new("kill")
        .args(["-TERM", &process.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = process.child.wait().unwrap();
    assert!(exit.success(), "SIGTERM must exit 0, got {exit:?}");
    eprintln!(
        "{} acknowledged over {CYCLES} kills, all present; {} unanswered",
        acknowledged.len(),
        unanswered.len()
    );
}

async fn verify(http: &reqwest::Client, api: SocketAddr, acknowledged: &HashMap<String, String>) {
    for (id, msg) in acknowledged {
        let resp = http
            .get(format!("http://{api}/v1/messages/{msg}"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status().as_u16(),
            200,
            "{id} ({msg}) was acknowledged but is gone"
        );
        let json: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(json["external_id"], id.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_retries_and_open_circuits_survive_sigkill() {
    // A receiver that is down: its port is reserved, then closed.
    let receiver = common::receiver::Receiver::start().await;
    let addr = receiver.addr;
    receiver.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let extra = format!(
        "[delivery]\nallow_private_destinations = true\nmax_attempts = 100\nbackoff_base_ms = 100\nbackoff_max_ms = 400\n\
         [circuit_breaker]\nfailure_threshold = 3\nopen_ms = 3000\n{}",
        common::destination("later", &format!("http://{addr}/hooks"))
    );
    std::fs::write(&config, common::config_text(&dir, &extra)).unwrap();
    let http = reqwest::Client::new();

    let mut process = spawn(&config);
    let mut ids = Vec::new();
    for n in 0..40 {
        let id = format!("evt_later_{n}");
        let body = format!(r#"{{"type":"later","n":{n}}}"#);
        let mut req = http
            .post(format!("http://{}/webhooks/std", process.ingest))
            .body(body.clone());
        for (k, v) in std_headers(&id, now(), body.as_bytes()) {
            req = req.header(k, v);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 202);
        let json: serde_json::Value = resp.json().await.unwrap();
        ids.push(json["id"].as_str().unwrap().to_owned());
    }
    // Let attempts fail and the circuit open, then kill mid-schedule.
    tokio::time::sleep(Duration::from_millis(800)).await;
    process.child.kill().unwrap();
    process.child.wait().unwrap();

    // Back up, receiver first; the circuit's state came through the kill.
    let receiver = common::receiver::Receiver::start_on(&addr.to_string()).await;
    let mut process = spawn(&config);
    let dest: serde_json::Value = http
        .get(format!("http://{}/v1/destinations/later", process.api))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        dest["circuit"]["consecutive_failures"].as_u64().unwrap() >= 3,
        "{dest}"
    );
    assert_ne!(
        dest["circuit"]["state"], "closed",
        "the open circuit survived: {dest}"
    );

    // Every message arrives (at least once) once the circuit lets the probe through.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen: std::collections::HashSet<String> = receiver
            .received()
            .iter()
            .map(|r| r.headers["webhook-id"].to_str().unwrap().to_owned())
            .collect();
        if ids.iter().all(|id| seen.contains(id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "delivered {} of {}",
            seen.len(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...and each is recorded as succeeded.
    for id in &ids {
        loop {
            let msg: serde_json::Value = http
                .get(format!("http://{}/v1/messages/{id}", process.api))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if msg["deliveries"][0]["status"] == "succeeded" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id} not recorded as delivered: {msg}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    process.child.kill().unwrap();
    process.child.wait().unwrap();
}
