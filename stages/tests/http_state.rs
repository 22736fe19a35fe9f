//! The HTTP state server against a running serving stage.

mod serving_common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use flowstage::prelude::*;
use flowstage::testkit::{TestSink, TestSource};
use flowstage_stages::http;
use flowstage_stages::serving::*;
use serde_json::Value as Json;
use serving_common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A minimal HTTP/1.1 client: one request per connection.
async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8(buf).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (status, head.to_string(), body.to_string())
}

async fn get_json(addr: SocketAddr, path: &str) -> Json {
    let (status, _, body) = request(addr, "GET", path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).expect("JSON body")
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn guard<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(300), f).await {
        Ok(x) => x,
        Err(_) => panic!("hang guard: still waiting for {what}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_and_errors() {
    let (mpub, models) = TestSource::probe::<ModelMessage>();
    let (dpub, data) = TestSource::probe::<TRec>();
    let (results, state) = ServingStage::new(test_loader)
        .build(models, data)
        .expect("build");
    let server = http::serve(state.clone(), any_port()).await.expect("serve");
    let addr = server.local_addr();
    assert!(addr.ip().is_loopback());
    let mut sub = results.run_with(TestSink::probe());

    // Before any model.
    assert_eq!(get_json(addr, "/models").await, serde_json::json!([]));
    dpub.send_next(TRec::new(0, "a"));
    assert!(!sub.expect_next().await.processed);

    mpub.send_next(built("a1", "a", 1.0));
    mpub.send_next(descriptor("a2", "a", 2.0));
    mpub.send_next(built("b1", "b", 1.0));
    mpub.send_next(descriptor("broken-b", "b", 1.0));
    guard(
        "models",
        state.wait_for(|s| {
            s.current_model("a") == Some("a2")
                && s.data_types.get("b").is_some_and(|b| b.load_failures == 1)
        }),
    )
    .await;
    for i in 1..=100u64 {
        dpub.send_next(TRec {
            seq: i,
            dt: if i % 2 == 0 { "a" } else { "b" },
            bad: i == 7,
        });
    }
    dpub.send_complete();
    sub.expect_next_n(100).await;
    sub.expect_complete().await;
    guard("stop", state.wait_for(|s| !s.running)).await;

    assert_eq!(
        get_json(addr, "/models").await,
        serde_json::json!(["a", "b"])
    );

    let all = get_json(addr, "/state").await;
    assert_eq!(all["totals"]["records"], 101);
    assert_eq!(all["totals"]["no_model"], 1);
    assert_eq!(all["totals"]["errors"], 1);
    let c = ServingConfig::default();
    assert_eq!(
        all["buffer"]["capacity"],
        (c.batch_size + c.data_buffer) as u64
    );
    assert_eq!(all["data_types"]["a"]["current"]["name"], "a2");
    assert!(all["data_types"]["a"].get("history").is_none());

    let a = get_json(addr, "/state/a").await;
    assert_eq!(a["data_type"], "a");
    assert_eq!(a["swaps"], 2);
    let cur = &a["current"];
    assert_eq!(cur["name"], "a2");
    assert_eq!(cur["description"], "test descriptor a2");
    assert_eq!(cur["model_type"], "model type 100");
    assert_eq!(cur["usage"], 50);
    assert_eq!(cur["errors"], 0);
    assert!(cur["since_ms"].as_u64().unwrap_or(0) > 0);
    for k in [
        "min_ns", "max_ns", "p50_ns", "p90_ns", "p99_ns", "p999_ns", "total_ns",
    ] {
        assert!(cur[k].as_u64().is_some(), "{k} in {cur}");
    }
    assert!(cur["min_ns"].as_u64() <= cur["max_ns"].as_u64());
    assert!(cur["swap_latency_ns"].as_u64().is_some());

    let b = get_json(addr, "/state/b").await;
    assert_eq!(b["current"]["name"], "b1");
    assert_eq!(b["current"]["errors"], 1);
    assert_eq!(b["load_failures"], 1);
    assert_eq!(b["last_error"]["model_name"], "broken-b");

    let hist = get_json(addr, "/state/a/history").await;
    let hist = hist.as_array().expect("history array");
    assert_eq!(hist.len(), 1);
    assert_eq!(hist[0]["name"], "a1");
    assert_eq!(hist[0]["replaced_by"], "a2");
    assert_eq!(hist[0]["usage"], 0);
    assert!(
        hist[0]["min_ns"].is_null(),
        "min of an unused model is null (+inf)"
    );
    assert!(hist[0]["replaced_ms"].as_u64().unwrap_or(0) > 0);

    let (status, head, metrics) = request(addr, "GET", "/metrics").await;
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("text/plain"));
    for line in [
        "flowstage_serving_records_total{data_type=\"a\",outcome=\"scored\"} 50",
        "flowstage_serving_records_total{data_type=\"b\",outcome=\"error\"} 1",
        "flowstage_serving_records_total{data_type=\"\",outcome=\"no_model\"} 1",
        "flowstage_serving_errors_total 1",
        "flowstage_serving_model_swaps_total{data_type=\"a\"} 2",
        "flowstage_serving_model_load_failures_total{data_type=\"b\"} 1",
        "flowstage_serving_scoring_duration_seconds_count{data_type=\"a\"} 50",
        "flowstage_serving_scoring_duration_seconds_bucket{data_type=\"b\",le=\"+Inf\"} 50",
        "# TYPE flowstage_serving_scoring_duration_seconds histogram",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }
    let capacity = format!(
        "flowstage_serving_buffer_capacity {}",
        c.batch_size + c.data_buffer
    );
    assert!(metrics.lines().any(|l| l == capacity), "{metrics}");

    // Errors: unknown dataType, unknown paths, wrong methods.
    for path in ["/state/zzz", "/state/zzz/history"] {
        let (status, _, body) = request(addr, "GET", path).await;
        assert_eq!(status, 404, "{path}");
        let j: Json = serde_json::from_str(&body).expect("JSON error");
        assert!(j["error"].as_str().is_some_and(|e| e.contains("zzz")));
    }
    for path in ["/", "/nope", "/state/a/history/x", "/models/a"] {
        assert_eq!(request(addr, "GET", path).await.0, 404, "{path}");
    }
    for (method, path) in [
        ("POST", "/state"),
        ("DELETE", "/models"),
        ("PUT", "/state/a"),
        ("POST", "/metrics"),
        ("PATCH", "/state/a/history"),
    ] {
        let (status, head, body) = request(addr, method, path).await;
        assert_eq!(status, 405, "{method} {path}");
        let j: Json = serde_json::from_str(&body).expect("JSON error");
        assert!(j["error"].is_string(), "{body}");
        assert!(
            head.to_ascii_lowercase().contains("allow: get,head"),
            "{head}"
        );
    }
    // A path that is not UTF-8 once decoded: a JSON 400.
    let (status, _, body) = request(addr, "GET", "/state/%FF%FE").await;
    assert_eq!(status, 400, "{body}");
    assert!(serde_json::from_str::<Json>(&body).is_ok(), "{body}");
    // A long unknown name is not echoed whole.
    let long = "z".repeat(5_000);
    let (status, _, body) = request(addr, "GET", &format!("/state/{long}")).await;
    assert_eq!(status, 404);
    assert!(body.len() < 300, "{} bytes", body.len());
    // A malformed request does not bring the server down.
    {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"garbage\r\n\r\n").await.expect("write");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
    }
    assert_eq!(
        get_json(addr, "/models").await,
        serde_json::json!(["a", "b"])
    );
    server.shutdown().await.expect("shutdown");
}

/// Readers hammer the server while 1M records are scored: every read is a
/// consistent snapshot, usage never goes back, and scoring completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_readers_while_scoring_a_million() {
    const N: u64 = 1_000_000;
    let models = Source::single(built("m", "t", 1.0));
    let data = Source::from_iter((0..N).map(|i| TRec::new(i, "t")));
    let (results, state) = ServingStage::new(test_loader)
        .config(ServingConfig {
            publish_interval: Duration::from_millis(5),
            ..Default::default()
        })
        .build(models, data)
        .expect("build");
    let server = http::serve(state.clone(), any_port()).await.expect("serve");
    let addr = server.local_addr();
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for r in 0..4 {
        let done = done.clone();
        let reads = reads.clone();
        readers.push(tokio::spawn(async move {
            let mut last_usage = 0u64;
            let mut last_records = 0u64;
            // At least a few reads each, then until scoring is done.
            let mut n = 0;
            while n < 5 || !done.load(Ordering::SeqCst) {
                n += 1;
                reads.fetch_add(1, Ordering::Relaxed);
                match r % 2 {
                    0 => {
                        let (status, _, body) = request(addr, "GET", "/state/t").await;
                        if status == 404 {
                            continue; // not published yet
                        }
                        assert_eq!(status, 200);
                        let j: Json = serde_json::from_str(&body).expect("JSON");
                        let usage = j["current"]["usage"].as_u64().unwrap_or(0);
                        assert!(usage >= last_usage, "usage went back");
                        last_usage = usage;
                    }
                    _ => {
                        let (status, _, body) = request(addr, "GET", "/metrics").await;
                        assert_eq!(status, 200);
                        let scored = body
                            .lines()
                            .find(|l| {
                                l.starts_with(
                                    "flowstage_serving_records_total{data_type=\"t\",outcome=\"scored\"}",
                                )
                            })
                            .and_then(|l| l.rsplit(' ').next())
                            .and_then(|v| v.parse::<u64>().ok())
                            .unwrap_or(0);
                        assert!(scored >= last_records, "counter went back");
                        last_records = scored;
                    }
                }
            }
        }));
    }
    let count = guard(
        "a million results",
        results.run_with(Sink::fold(
            0u64,
            |n, r: flowstage_model::pb::ServingResult| {
                assert_eq!(r.record_ts as u64, n);
                n + 1
            },
        )),
    )
    .await
    .expect("results");
    done.store(true, Ordering::SeqCst);
    for r in readers {
        guard("readers", r).await.expect("reader task");
    }
    assert_eq!(count, N);
    let s = guard("stop", state.wait_for(|s| !s.running)).await;
    assert_eq!(s.data_types["t"].current.as_ref().map(|c| c.usage), Some(N));
    let t = get_json(addr, "/state/t").await;
    assert_eq!(t["current"]["usage"], N);
    assert!(reads.load(Ordering::Relaxed) >= 20);
    eprintln!(
        "{} HTTP reads during 1M records",
        reads.load(Ordering::Relaxed)
    );
    server.shutdown().await.expect("shutdown");
}

/// A dataType named "" gets one `no_model` series: its own count and that of the records of
/// dataTypes without state (Prometheus refuses a scrape with a series twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_empty_data_type_has_one_no_model_series() {
    let models = Source::single(built("e", "", 1.0));
    let data = Source::from_iter([TRec::new(1, "x"), TRec::new(2, "")]);
    let (results, state) = ServingStage::new(test_loader)
        .build(models, data)
        .expect("build");
    let server = http::serve(state.clone(), any_port()).await.expect("serve");
    let done = results.run_with(Sink::collect()).await.expect("runs");
    assert_eq!(done.len(), 2);
    guard("stop", state.wait_for(|s| !s.running)).await;
    let (_, _, metrics) = request(server.local_addr(), "GET", "/metrics").await;
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("flowstage_serving_records_total{data_type=\"\",outcome=\"no_model\"}")
        })
        .collect();
    let unrouted = state.snapshot().totals.no_model;
    assert_eq!(
        series,
        vec![format!(
            "flowstage_serving_records_total{{data_type=\"\",outcome=\"no_model\"}} {unrouted}"
        )
        .as_str()],
        "{metrics}"
    );
    server.shutdown().await.expect("shutdown");
}
