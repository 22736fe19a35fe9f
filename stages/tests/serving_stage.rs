//! The serving stage under the testkit: swaps, order, backpressure, failures,
//! several dataTypes, batching.

mod serving_common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use flowstage::prelude::*;
use flowstage::testkit::{TestPublisher, TestSink, TestSource, TestSubscriber};
use flowstage_stages::serving::*;
use serving_common::*;

fn stage() -> ServingStage {
    ServingStage::new(test_loader)
}

/// Waits for a published state (a hang guard, never a timing assertion).
async fn until(
    state: &ServingState,
    what: &str,
    pred: impl Fn(&ServingSnapshot) -> bool,
) -> std::sync::Arc<ServingSnapshot> {
    match tokio::time::timeout(std::time::Duration::from_secs(120), state.wait_for(pred)).await {
        Ok(s) => s,
        Err(_) => panic!("hang guard: still waiting for {what}"),
    }
}

/// 100k records, 20 swaps at positions the test controls: every record is
/// answered once, in order, by the model that was current when it was scored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_records_twenty_swaps() {
    const N: u64 = 100_000;
    // 21 models: m0 first, then 20 swaps. Cut points: where each model starts.
    // Records before the first cut see no model.
    let cuts: Vec<u64> = (0..21u64)
        .map(|i| 1_000 + i * 4_700 + (i * i * 37) % 1_000)
        .collect();
    let (mpub, models) = TestSource::probe::<ModelMessage>();
    let (dpub, data) = TestSource::probe::<TRec>();
    let (results, state) = stage().build(models, data).expect("build");
    let mut sub = results.run_with(TestSink::probe());

    let mut seq = 0u64;
    let mut answered = 0u64;
    for seg in 0..=cuts.len() {
        if seg > 0 {
            let name = format!("m{}", seg - 1);
            mpub.send_next(built(&name, "t", (seg) as f64));
            // The swap marker: wait until the stage installed the model.
            let want = name.clone();
            until(&state, "swap", move |s| {
                s.current_model("t") == Some(want.as_str())
            })
            .await;
        }
        let end = cuts.get(seg).copied().unwrap_or(N);
        let start = seq;
        while seq < end {
            dpub.send_next(TRec::new(seq, "t"));
            seq += 1;
        }
        for r in sub.expect_next_n((end - start) as usize).await {
            assert_eq!(r.record_ts as u64, answered, "results in record order");
            if seg == 0 {
                assert!(!r.processed);
                assert!(r.error.contains("no model"), "{}", r.error);
                assert_eq!(r.model_name, "");
            } else {
                assert!(r.processed, "{r:?}");
                assert_eq!(r.model_name, format!("m{}", seg - 1));
                assert_eq!(value(&r), Some(answered as f64 * seg as f64));
            }
            answered += 1;
        }
    }
    dpub.send_complete();
    sub.expect_complete().await;
    assert_eq!(answered, N);
    let s = until(&state, "stop", |s| !s.running).await;
    let t = &s.data_types["t"];
    assert_eq!(t.swaps, 21);
    assert_eq!(t.history.len(), 20);
    assert_eq!(s.totals.records, N);
    assert_eq!(s.totals.no_model, cuts[0]);
    assert_eq!(s.totals.scored, N - cuts[0]);
    // Each replaced model's final usage is exactly its segment.
    for (i, h) in t.history.iter().enumerate() {
        assert_eq!(h.stats.name, format!("m{i}"));
        assert_eq!(h.replaced_by, format!("m{}", i + 1));
        assert_eq!(h.stats.usage, cuts[i + 1] - cuts[i]);
        let (min, max) = (
            h.stats.min_ns.unwrap_or(u64::MAX),
            h.stats.max_ns.unwrap_or(0),
        );
        assert!(min <= max);
        assert!(h.stats.p50_ns.is_some() && h.stats.p999_ns.is_some());
    }
    let cur = t.current.as_ref().expect("current model");
    assert_eq!(cur.name, "m20");
    assert_eq!(cur.usage, N - cuts[20]);
}

/// Models loaded from descriptors (blocking pool + async callback) while
/// records flow at full speed: one result per record, in order, and models
/// take over in the order offered, each between two records. Both ways the
/// stage runs: on a task of its own and fused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_while_records_flow() {
    for own_task in [true, false] {
        swaps_while_records_flow_in(own_task).await;
    }
}

async fn swaps_while_records_flow_in(own_task: bool) {
    const N: u64 = 200_000;
    let (mpub, models) = TestSource::probe::<ModelMessage>();
    mpub.send_next(descriptor("d0", "t", 1.0));
    let data = Source::from_iter((0..N).map(|i| TRec::new(i, "t")));
    let (results, state) = stage()
        .config(ServingConfig {
            own_task,
            ..Default::default()
        })
        .build(models, data)
        .expect("build");
    let mut sub = results.run_with(TestSink::probe());
    let mut last_model = 0usize;
    let mut offered = 1usize;
    let mut no_model = 0u64;
    for i in 0..N {
        let r = sub.expect_next().await;
        assert_eq!(r.record_ts as u64, i);
        if r.model_name.is_empty() {
            // Records may flow before d0 finished loading.
            assert_eq!(no_model, i, "no-model results only before the first model");
            assert!(r.error.contains("no model"));
            no_model += 1;
            continue;
        }
        let m: usize = r.model_name[1..].parse().expect("model name d<k>");
        assert!(
            m >= last_model,
            "model went back from d{last_model} to d{m}"
        );
        assert!(m < offered, "scored by d{m} before it was offered");
        assert_eq!(value(&r), Some(i as f64 * (m + 1) as f64));
        last_model = m;
        if i % 10_000 == 9_999 && offered < 20 {
            mpub.send_next(descriptor(
                &format!("d{offered}"),
                "t",
                (offered + 1) as f64,
            ));
            offered += 1;
        }
    }
    sub.expect_complete().await;
    let s = until(&state, "stop", |s| !s.running).await;
    assert_eq!(s.totals.records, N);
    assert_eq!(s.totals.scored + s.totals.no_model, N);
    assert_eq!(s.totals.no_model, no_model);
    assert!(last_model > 0, "at least one swap took effect");
}

/// A slow downstream: the stage never holds more records than its buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_downstream_bounds_pulls() {
    // Chunks that do not fill whole batches too (16 + 5 = 21 = 2 × 8 + 5).
    for (batch, data_buffer) in [(1usize, 1usize), (1, 16), (8, 1), (8, 16), (8, 5), (3, 16)] {
        let (dpub, data) = TestSource::probe::<TRec>();
        for i in 0..500 {
            dpub.send_next(TRec::new(i, "t"));
        }
        dpub.send_complete();
        let (results, state) = stage()
            .config(ServingConfig {
                batch_size: batch,
                data_buffer,
                ..Default::default()
            })
            .build(Source::single(built("m", "t", 1.0)), data)
            .expect("build");
        let mut sub = results.run_with(TestSink::probe());
        for k in 1..=500u64 {
            let r = sub.expect_next().await;
            assert_eq!(r.record_ts as u64 + 1, k);
            // What the stage holds (at most a batch and a chunk of records,
            // asserted below) and the rest of the chunk of results being
            // consumed (at most as many).
            let pulled = dpub.delivered();
            let bound = 2 * (batch + data_buffer) as u64;
            assert!(
                pulled <= k + bound,
                "batch {batch}: {pulled} records pulled after {k} results"
            );
            assert!(state.snapshot().buffer.fill <= (batch + data_buffer) as u64);
        }
        sub.expect_complete().await;
        if batch == 1 {
            // Without batching, each record pulled once, none left behind.
            assert_eq!(dpub.delivered(), 500);
        }
    }
}

/// A model that fails to load leaves the current one serving; the failure is
/// in the state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_load_keeps_old_model() {
    let (mpub, models) = TestSource::probe::<ModelMessage>();
    let (dpub, data) = TestSource::probe::<TRec>();
    let (results, state) = stage().build(models, data).expect("build");
    let mut sub = results.run_with(TestSink::probe());
    // The first request starts the stage.
    dpub.send_next(TRec::new(0, "t"));
    assert!(!sub.expect_next().await.processed);
    mpub.send_next(descriptor("good", "t", 2.0));
    until(&state, "good", |s| s.current_model("t") == Some("good")).await;
    dpub.send_next(TRec::new(1, "t"));
    assert_eq!(sub.expect_next().await.model_name, "good");

    mpub.send_next(descriptor("broken-1", "t", 3.0));
    let s = until(&state, "load failure", |s| {
        s.data_types.get("t").is_some_and(|t| t.load_failures == 1)
    })
    .await;
    let t = &s.data_types["t"];
    assert_eq!(s.current_model("t"), Some("good"));
    let err = t.last_error.as_ref().expect("last error");
    assert_eq!(err.model_name, "broken-1");
    assert!(err.error.contains("deliberately broken"), "{}", err.error);
    assert!(err.at_ms > 0);
    assert_eq!(t.swaps, 1);
    assert!(t.history.is_empty());

    for i in 2..=10 {
        dpub.send_next(TRec::new(i, "t"));
        let r = sub.expect_next().await;
        assert!(r.processed);
        assert_eq!(r.model_name, "good");
        assert_eq!(value(&r), Some(i as f64 * 2.0));
    }
    dpub.send_complete();
    sub.expect_complete().await;
}

/// Two dataTypes at once, each scored by its own model; a record of a
/// dataType without a model is answered "no model", not dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_data_types() {
    let models = Source::from_iter([
        built("red-m", "red", 10.0),
        built("white-m", "white", 100.0),
    ]);
    let (dpub, data) = TestSource::probe::<TRec>();
    let (results, state) = stage().build(models, data).expect("build");
    let mut sub = results.run_with(TestSink::probe());
    // The first request starts the stage.
    dpub.send_next(TRec::new(0, "rose"));
    assert!(!sub.expect_next().await.processed);
    until(&state, "two models", |s| s.models().len() == 2).await;
    let dts = ["red", "white", "rose"];
    for i in 1..3_000u64 {
        dpub.send_next(TRec::new(i, dts[(i % 3) as usize]));
    }
    dpub.send_complete();
    for i in 1..3_000u64 {
        let r = sub.expect_next().await;
        assert_eq!(r.record_ts as u64, i);
        match i % 3 {
            0 => {
                assert_eq!(r.model_name, "red-m");
                assert_eq!(value(&r), Some(i as f64 * 10.0));
            }
            1 => {
                assert_eq!(r.model_name, "white-m");
                assert_eq!(value(&r), Some(i as f64 * 100.0));
            }
            _ => {
                assert!(!r.processed);
                assert_eq!(r.data_type, "rose");
                assert!(r.error.contains("no model for dataType rose"));
            }
        }
    }
    sub.expect_complete().await;
    let s = until(&state, "stop", |s| !s.running).await;
    assert_eq!(s.models(), ["red", "white"]);
    assert_eq!(s.data_types["red"].scored, 999);
    assert_eq!(s.data_types["white"].scored, 1_000);
    assert_eq!(s.totals.no_model, 1_001);
}

/// A record the model fails on gives an error result; the stream goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoring_error_is_a_result() {
    let (results, state) = stage()
        .build(
            Source::single(built("m", "t", 1.0)),
            Source::from_iter((0..100u64).map(|i| TRec {
                seq: i,
                dt: "t",
                bad: i % 10 == 5,
            })),
        )
        .expect("build");
    // A built model from a ready source is installed before the first record
    // (the model inlet is always pulled, and polled first).
    let all = results.run_with(Sink::collect()).await.expect("results");
    assert_eq!(all.len(), 100);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.record_ts as usize, i);
        if i % 10 == 5 {
            assert!(!r.processed);
            assert_eq!(r.model_name, "m");
            assert!(r.error.contains("bad record"), "{}", r.error);
        } else {
            assert!(r.processed);
        }
    }
    let s = until(&state, "stop", |s| !s.running).await;
    let cur = s.data_types["t"].current.clone().expect("current");
    assert_eq!(cur.usage, 100);
    assert_eq!(cur.errors, 10);
    assert_eq!(s.totals.errors, 10);
}

/// Micro-batching goes through `score_batch`, keeps order, and flushes a
/// partial batch when the data ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn micro_batching() {
    let model = Arc::new(Trivial::new(3.0));
    let models = Source::single(ModelMessage::Built(BuiltModel::new(
        "b",
        "",
        "t",
        model.clone(),
    )));
    let (results, _state) = stage()
        .config(ServingConfig {
            batch_size: 16,
            batch_timeout: std::time::Duration::from_millis(5),
            ..Default::default()
        })
        .build(
            models,
            Source::from_iter((0..1_000u64).map(|i| TRec::new(i, "t"))),
        )
        .expect("build");
    let all = results.run_with(Sink::collect()).await.expect("results");
    assert_eq!(all.len(), 1_000);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.record_ts as usize, i);
        assert_eq!(value(r), Some(i as f64 * 3.0));
    }
    let calls = model.batches.load(Ordering::SeqCst);
    assert!(calls < 1_000, "records were batched ({calls} batch calls)");
    assert!(
        calls >= 63,
        "batches hold at most 16 records ({calls} calls)"
    );
}

/// Models are installed in offer order; the history keeps the last
/// `history_limit` replaced models, oldest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_bounded_and_ordered() {
    let models = Source::from_iter((0..10).map(|i| built(&format!("h{i}"), "t", 1.0)));
    let (dpub, data) = TestSource::probe::<TRec>();
    let (results, state) = stage()
        .config(ServingConfig {
            history_limit: 3,
            ..Default::default()
        })
        .build(models, data)
        .expect("build");
    let mut sub = results.run_with(TestSink::probe());
    dpub.send_next(TRec::new(0, "t"));
    sub.expect_next().await;
    let s = until(&state, "h9", |s| s.current_model("t") == Some("h9")).await;
    let hist: Vec<_> = s.data_types["t"]
        .history
        .iter()
        .map(|h| h.stats.name.clone())
        .collect();
    assert_eq!(hist, ["h6", "h7", "h8"]);
    assert_eq!(s.data_types["t"].swaps, 10);
    dpub.send_complete();
    sub.expect_complete().await;
}

/// A failing model stream does not stop serving; a failing data stream fails
/// the results.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_stream_failure_keeps_serving() {
    let (mpub, models) = TestSource::probe::<ModelMessage>();
    let (dpub, data) = TestSource::probe::<TRec>();
    let (results, state) = stage().build(models, data).expect("build");
    let mut sub = results.run_with(TestSink::probe());
    dpub.send_next(TRec::new(0, "t"));
    assert!(!sub.expect_next().await.processed);
    mpub.send_next(built("m", "t", 1.0));
    mpub.send_error(StreamError::Protocol("model topic gone".into()));
    until(&state, "m", |s| s.current_model("t") == Some("m")).await;
    dpub.send_next(TRec::new(1, "t"));
    assert_eq!(sub.expect_next().await.model_name, "m");
    dpub.send_error(StreamError::Protocol("data topic gone".into()));
    sub.expect_error().await;
}

/// A record whose dataType has no model yet while its first model loads waits
/// for that load instead of being answered "no model".
/// A stage whose loads wait (on the blocking pool) until the returned sender
/// opens the gate, one load per message; with its model and data publishers.
fn gated_stage() -> (
    std::sync::mpsc::Sender<()>,
    TestPublisher<ModelMessage>,
    TestPublisher<TRec>,
    TestSubscriber<flowstage_model::pb::ServingResult>,
    ServingState,
) {
    let (gate_tx, loader) = gated_loader();
    let (mpub, models) = TestSource::probe::<ModelMessage>();
    let (dpub, data) = TestSource::probe::<TRec>();
    let (results, state) = ServingStage::new(loader)
        .build(models, data)
        .expect("build");
    let sub = results.run_with(TestSink::probe());
    (gate_tx, mpub, dpub, sub, state)
}

/// A loader whose loads wait (on the blocking pool) until the returned sender
/// opens the gate, one load per message.
fn gated_loader() -> (std::sync::mpsc::Sender<()>, impl ModelLoader) {
    let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(gate_rx);
    let loader = move |d: &flowstage_model::pb::ModelDescriptor| {
        let _ = gate.lock().map(|g| g.recv());
        test_loader(d)
    };
    (gate_tx, loader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_wait_for_the_first_model_of_their_data_type() {
    let (gate_tx, mpub, dpub, mut sub, state) = gated_stage();
    mpub.send_next(descriptor("first", "t", 2.0));
    dpub.send_next(TRec::new(1, "t"));
    dpub.send_next(TRec::new(2, "t"));
    // Opens the gate once the load runs and a record is held (the stage runs
    // while the sink below asks for a result).
    let watched = state.clone();
    let opener = tokio::spawn(async move {
        until(&watched, "a record held while the model loads", |s| {
            s.data_types.get("t").is_some_and(|t| t.loading == 1) && s.buffer.fill >= 1
        })
        .await;
        gate_tx.send(()).expect("open the gate");
    });
    for i in 1..=2 {
        let r = sub.expect_next().await;
        assert!(r.processed, "record {i}: {}", r.error);
        assert_eq!(r.model_name, "first");
        assert_eq!(value(&r), Some(i as f64 * 2.0));
    }
    opener.await.expect("opener");
    dpub.send_complete();
    sub.expect_complete().await;
    assert_eq!(state.snapshot().totals.no_model, 0);
}

/// Records held for a first load go on with a model offered built meanwhile,
/// without waiting for that load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_built_model_releases_records_held_for_a_load() {
    let (gate_tx, mpub, dpub, mut sub, state) = gated_stage();
    mpub.send_next(descriptor("slow", "t", 2.0));
    dpub.send_next(TRec::new(1, "t"));
    // Once a record is held for the load, a model arrives built.
    let watched = state.clone();
    let offer = tokio::spawn(async move {
        until(&watched, "a record held while the model loads", |s| {
            s.data_types.get("t").is_some_and(|t| t.loading == 1) && s.buffer.fill >= 1
        })
        .await;
        mpub.send_next(built("built", "t", 3.0));
        mpub
    });
    // Scored by the built model while the load still waits at its gate.
    let r = sub.expect_next().await;
    assert!(r.processed, "{}", r.error);
    assert_eq!(r.model_name, "built");
    assert_eq!(value(&r), Some(3.0));
    assert_eq!(state.snapshot().data_types["t"].loading, 1);
    let _mpub = offer.await.expect("offer");
    gate_tx.send(()).expect("open the gate");
    dpub.send_complete();
    sub.expect_complete().await;
}

/// Loads in flight while records flow, with the stage on a task of its own
/// and fused into the task that polls its results, under a downstream that
/// always asks for more, as the server's producer sink does: records that arrive before the first model are held
/// for its load; records that arrive while a later model loads are scored by
/// the model before it, the ones after the swap by the new one; each record
/// is answered once, in order; and loads, swaps and the periodic statistics
/// come through while that downstream only waits for more records. The
/// published buffer fill counts a held record (it did not: holding one did
/// not mark the statistics for publication).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_in_flight_while_records_flow_on_its_own_task_and_fused() {
    const SWAPS: usize = 5;
    const PER_STEP: u64 = 100;
    for own_task in [true, false] {
        let (gate_tx, loader) = gated_loader();
        let (mpub, models) = TestSource::probe::<ModelMessage>();
        let (dpub, data) = TestSource::probe::<TRec>();
        let (results, state) = ServingStage::new(loader)
            .config(ServingConfig {
                own_task,
                ..Default::default()
            })
            .build(models, data)
            .expect("build");
        let collector = tokio::spawn(results.run_with(Sink::collect()));
        let loading = |s: &ServingSnapshot| s.data_types.get("t").is_some_and(|t| t.loading == 1);
        // (record, index of the model that must score it)
        let mut expected: Vec<(u64, usize)> = Vec::new();
        let mut seq = 0u64;
        for k in 0..=SWAPS {
            mpub.send_next(descriptor(&format!("m{k}"), "t", (k + 1) as f64));
            until(&state, "a load in flight", loading).await;
            for _ in 0..PER_STEP {
                dpub.send_next(TRec::new(seq, "t"));
                // The first model's records wait for it; later ones are
                // scored by the model before the one loading.
                expected.push((seq, k.saturating_sub(1)));
                seq += 1;
            }
            if k == 0 {
                until(&state, "a record held for the first load", |s| {
                    loading(s) && s.buffer.fill >= 1
                })
                .await;
            } else {
                let sent = seq;
                until(&state, "the records scored during the load", move |s| {
                    loading(s) && s.totals.records == sent
                })
                .await;
            }
            gate_tx.send(()).expect("open the gate");
            let name = format!("m{k}");
            until(&state, "the swap", move |s| {
                s.current_model("t") == Some(name.as_str())
            })
            .await;
        }
        for _ in 0..PER_STEP {
            dpub.send_next(TRec::new(seq, "t"));
            expected.push((seq, SWAPS));
            seq += 1;
        }
        dpub.send_complete();
        let all = guard_results(collector).await;
        assert_eq!(all.len(), expected.len(), "own task: {own_task}");
        for (r, (i, m)) in all.iter().zip(&expected) {
            assert_eq!(r.record_ts as u64, *i, "own task: {own_task}");
            assert!(r.processed, "record {i}: {}", r.error);
            assert_eq!(
                r.model_name,
                format!("m{m}"),
                "record {i}, own task: {own_task}"
            );
            assert_eq!(value(r), Some(*i as f64 * (*m + 1) as f64));
        }
        let s = until(&state, "stop", |s| !s.running).await;
        assert_eq!(s.totals.records, seq);
        assert_eq!(s.totals.no_model, 0);
        assert_eq!(s.data_types["t"].swaps, SWAPS as u64 + 1);
    }
}

/// The collected results of a spawned run (a hang guard, never a timing
/// assertion).
async fn guard_results(
    run: tokio::task::JoinHandle<Result<Vec<flowstage_model::pb::ServingResult>, StreamError>>,
) -> Vec<flowstage_model::pb::ServingResult> {
    match tokio::time::timeout(std::time::Duration::from_secs(120), run).await {
        Ok(Ok(Ok(all))) => all,
        Ok(Ok(Err(e))) => panic!("the results failed: {e}"),
        Ok(Err(e)) => panic!("the collector panicked: {e}"),
        Err(_) => panic!("hang guard: the results did not complete"),
    }
}
