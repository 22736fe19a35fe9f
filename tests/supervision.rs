//! Supervision (stop / resume / restart with counters), RestartSource and
//! RestartFlow backoff and limits, kill switches and watch_termination.

mod common;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::settle;
use flowstage::prelude::*;
use flowstage::testkit::{TestSink, TestSource};
use tokio::time::Instant;

#[derive(Debug)]
struct Bad(u32);
impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad {}", self.0)
    }
}
impl std::error::Error for Bad {}

fn check(x: u32) -> Result<u32, Bad> {
    if x % 4 == 3 {
        Err(Bad(x))
    } else {
        Ok(x * 10)
    }
}

#[tokio::test]
async fn try_map_resume_skips_and_counts() {
    let v: Vec<u32> = (0..40).collect();
    let sup = Supervisor::resuming();
    let got = Source::from_iter(v.clone())
        .try_map_supervised(check, sup.clone())
        .run_with(Sink::collect())
        .await
        .unwrap();
    assert_eq!(
        got,
        v.iter().filter_map(|&x| check(x).ok()).collect::<Vec<_>>()
    );
    let failures = v.iter().filter(|&&x| check(x).is_err()).count() as u64;
    assert_eq!(sup.resumed(), failures);
    assert_eq!(sup.restarted(), 0);
    assert_eq!(sup.stopped(), 0);
    assert_eq!(sup.dropped(), failures);
}

#[tokio::test]
async fn try_map_stop_fails_with_the_error() {
    let sup = Supervisor::stopping();
    let mut sub = Source::from_iter(0..10u32)
        .try_map_supervised(check, sup.clone())
        .run_with(TestSink::probe());
    assert_eq!(sub.expect_next_n(3).await, [0, 10, 20]);
    let e = sub.expect_error().await;
    assert_eq!(e.downcast_ref::<Bad>().map(|b| b.0), Some(3));
    sub.expect_complete().await;
    assert_eq!((sup.stopped(), sup.dropped()), (1, 0));
    // The default supervisor of try_map stops as well.
    assert_eq!(
        Supervisor::default().decide("t", &StreamError::msg("x")),
        Directive::Stop
    );
}

#[tokio::test]
async fn try_map_restart_skips_and_counts_restarts() {
    let sup = Supervisor::restarting();
    let got = Source::from_iter(0..8u32)
        .try_map_supervised(check, sup.clone())
        .run_with(Sink::collect())
        .await
        .unwrap();
    assert_eq!(
        got,
        (0..8).filter_map(|x| check(x).ok()).collect::<Vec<_>>()
    );
    assert_eq!((sup.restarted(), sup.resumed()), (2, 0));
}

#[tokio::test]
async fn custom_decider_by_error_type() {
    // Resume on Bad, stop on anything else.
    let sup = Supervisor::new(|e| {
        if e.downcast_ref::<Bad>().is_some() {
            Directive::Resume
        } else {
            Directive::Stop
        }
    });
    let f = |x: u32| -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
        match x {
            13 => Err("fatal".into()),
            x if x % 4 == 3 => Err(Box::new(Bad(x))),
            x => Ok(x),
        }
    };
    let mut sub = Source::from_iter(0..20u32)
        .try_map_supervised(f, sup.clone())
        .run_with(TestSink::probe());
    let expected: Vec<u32> = (0..13).filter(|x| x % 4 != 3).collect();
    assert_eq!(sub.expect_next_n(expected.len()).await, expected);
    assert_eq!(sub.expect_error().await.to_string(), "fatal");
    assert_eq!((sup.resumed(), sup.stopped()), (3, 1));
}

#[tokio::test]
async fn try_filter_supervised() {
    let sup = Supervisor::resuming();
    let pred = |x: &u32| {
        if *x % 5 == 4 {
            Err(Bad(*x))
        } else {
            Ok(x.is_multiple_of(2))
        }
    };
    let got = Source::from_iter(0..30u32)
        .try_filter_supervised(pred, sup.clone())
        .run_with(Sink::collect())
        .await
        .unwrap();
    assert_eq!(
        got,
        (0..30)
            .filter(|x| pred(x).unwrap_or(false))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        sup.resumed(),
        (0..30u32).filter(|x| pred(x).is_err()).count() as u64
    );

    let e = Source::from_iter(0..30u32)
        .try_filter_supervised(pred, Supervisor::stopping())
        .run_with(Sink::collect())
        .await
        .unwrap_err();
    assert_eq!(e.downcast_ref::<Bad>().map(|b| b.0), Some(4));
}

/// Reference for try_scan under a directive: the running sums, where a
/// failing element is skipped (Resume) or also resets the sum (Restart).
fn scan_reference(v: &[i32], restart: bool) -> Vec<i32> {
    let mut acc = 0;
    let mut out = vec![0];
    for &x in v {
        if x < 0 {
            if restart {
                acc = 0;
            }
            continue;
        }
        acc += x;
        out.push(acc);
    }
    out
}

#[tokio::test]
async fn try_scan_resume_keeps_and_restart_resets_the_state() {
    let v = vec![1, 2, -1, 3, 4, -2, -3, 5];
    let step = |acc: &i32, x: i32| {
        if x < 0 {
            Err(Bad(x.unsigned_abs()))
        } else {
            Ok(acc + x)
        }
    };
    let failures = v.iter().filter(|x| **x < 0).count() as u64;
    let resume = Supervisor::resuming();
    let got = Source::from_iter(v.clone())
        .try_scan_supervised(0, step, resume.clone())
        .run_with(Sink::collect())
        .await
        .unwrap();
    assert_eq!(got, scan_reference(&v, false));
    assert_eq!(resume.resumed(), failures);
    let restart = Supervisor::restarting();
    let got = Source::from_iter(v.clone())
        .try_scan_supervised(0, step, restart.clone())
        .run_with(Sink::collect())
        .await
        .unwrap();
    assert_eq!(got, scan_reference(&v, true));
    assert_eq!(restart.restarted(), failures);
    assert_ne!(scan_reference(&v, true), scan_reference(&v, false));
    let stop = Supervisor::stopping();
    let e = Source::from_iter(v.clone())
        .try_scan_supervised(0, step, stop.clone())
        .run_with(Sink::collect())
        .await
        .unwrap_err();
    assert_eq!(e.downcast_ref::<Bad>().map(|b| b.0), Some(1));
    assert_eq!(stop.stopped(), 1);
}

#[tokio::test]
async fn supervision_does_not_swallow_upstream_failures() {
    let sup = Supervisor::resuming();
    let e = Source::from_iter([1u32, 2])
        .concat(Source::failed(StreamError::msg("upstream")))
        .try_map_supervised(check, sup.clone())
        .run_with(Sink::collect())
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "upstream");
    assert_eq!(sup.dropped(), 0);
}

// ---------------------------------------------------------------------------
// RestartSource / RestartFlow.

fn settings(min: u64, max: u64) -> RestartSettings {
    RestartSettings::new(Duration::from_millis(min), Duration::from_millis(max), 0.0)
}

#[tokio::test(start_paused = true)]
async fn restart_source_backs_off_exponentially_up_to_the_cap() {
    let starts = Arc::new(Mutex::new(Vec::new()));
    let s = starts.clone();
    let t0 = Instant::now();
    let v = RestartSource::on_failures_with_backoff(
        settings(100, 500).with_max_restarts(5, Duration::from_secs(3600)),
        move || {
            s.lock().unwrap().push(Instant::now() - t0);
            Source::failed::<u32>(StreamError::msg("always")).boxed()
        },
    )
    .run_with(Sink::collect())
    .await;
    assert_eq!(
        v.unwrap_err().to_string(),
        "always",
        "after max restarts the failure goes downstream"
    );
    let starts = starts.lock().unwrap().clone();
    assert_eq!(starts.len(), 1 + 5, "the first run and five restarts");
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    let expected: Vec<Duration> = (0..5u32)
        .map(|k| Duration::from_millis((100u64 << k).min(500)))
        .collect();
    assert_eq!(gaps, expected);
}

#[tokio::test(start_paused = true)]
async fn restart_source_with_backoff_restarts_on_completion_too() {
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let got = RestartSource::with_backoff(settings(10, 10), move || {
        let n = r.fetch_add(1, Ordering::SeqCst);
        Source::from_iter([n * 10, n * 10 + 1]).boxed()
    })
    .take(7)
    .run_with(Sink::collect())
    .await
    .unwrap();
    let expected: Vec<u32> = (0..).flat_map(|n| [n * 10, n * 10 + 1]).take(7).collect();
    assert_eq!(got, expected);
    assert_eq!(runs.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn restart_source_on_failures_ends_on_completion_and_keeps_elements() {
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let got = RestartSource::on_failures_with_backoff(settings(10, 100), move || {
        let n = r.fetch_add(1, Ordering::SeqCst);
        if n < 2 {
            Source::from_iter([n])
                .concat(Source::failed(StreamError::msg("flaky")))
                .boxed()
        } else {
            Source::from_iter([100]).boxed()
        }
    })
    .run_with(Sink::collect())
    .await
    .unwrap();
    assert_eq!(got, [0, 1, 100]);
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn restart_source_max_restarts_window_resets() {
    // At most one restart per 50 ms; a failure every 100 ms never hits the limit.
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let got = RestartSource::on_failures_with_backoff(
        settings(100, 100).with_max_restarts(1, Duration::from_millis(50)),
        move || {
            let n = r.fetch_add(1, Ordering::SeqCst);
            if n < 4 {
                Source::failed(StreamError::msg("again")).boxed()
            } else {
                Source::single(n).boxed()
            }
        },
    )
    .run_with(Sink::collect())
    .await
    .unwrap();
    assert_eq!(got, [4]);

    // Two restarts allowed per hour: the third failure is final.
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let e = RestartSource::on_failures_with_backoff(
        settings(100, 100).with_max_restarts(2, Duration::from_secs(3600)),
        move || {
            r.fetch_add(1, Ordering::SeqCst);
            Source::failed::<u32>(StreamError::msg("again")).boxed()
        },
    )
    .run_with(Sink::collect())
    .await
    .unwrap_err();
    assert_eq!(e.to_string(), "again");
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn restart_source_cancellation_reaches_the_inner_source() {
    let (publisher, src) = TestSource::probe::<u32>();
    let mut src = Some(src);
    let mut sub = RestartSource::with_backoff(settings(10, 10), move || match src.take() {
        Some(s) => s.boxed(),
        None => Source::never().boxed(),
    })
    .run_with(TestSink::probe());
    publisher.send_next(1);
    assert_eq!(sub.expect_next().await, 1);
    sub.cancel();
    publisher.expect_cancellation().await;
}

#[tokio::test(start_paused = true)]
async fn restart_flow_continues_with_the_next_element() {
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let v: Vec<u32> = (0..12).collect();
    let flow = RestartFlow::on_failures_with_backoff(settings(10, 100), move || {
        r.fetch_add(1, Ordering::SeqCst);
        Flow::new().try_map(check)
    });
    let got = Source::from_iter(v.clone())
        .via(flow)
        .run_with(Sink::collect())
        .await
        .unwrap();
    assert_eq!(
        got,
        v.iter().filter_map(|&x| check(x).ok()).collect::<Vec<_>>()
    );
    let failures = v.iter().filter(|&&x| check(x).is_err()).count() as u32;
    assert_eq!(runs.load(Ordering::SeqCst), 1 + failures);
}

#[tokio::test(start_paused = true)]
async fn restart_flow_gives_up_after_max_restarts_and_passes_upstream_failure() {
    let flow = RestartFlow::on_failures_with_backoff(
        settings(10, 100).with_max_restarts(1, Duration::from_secs(3600)),
        || Flow::new().try_map(check),
    );
    let mut sub = Source::from_iter(0..12u32)
        .via(flow)
        .run_with(TestSink::probe());
    // 3 fails and is restarted once; 7 fails for good.
    let expected: Vec<u32> = (0..7).filter_map(|x| check(x).ok()).collect();
    assert_eq!(sub.expect_next_n(expected.len()).await, expected);
    assert_eq!(
        sub.expect_error().await.downcast_ref::<Bad>().map(|b| b.0),
        Some(7)
    );

    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    let flow = RestartFlow::on_failures_with_backoff(settings(10, 100), move || {
        r.fetch_add(1, Ordering::SeqCst);
        Flow::new().map(|x: u32| x)
    });
    let e = Source::from_iter([1u32])
        .concat(Source::failed(StreamError::msg("up")))
        .via(flow)
        .run_with(Sink::collect())
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "up", "an upstream failure is not restarted");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------
// Kill switches and watch_termination.

#[tokio::test(start_paused = true)]
async fn unique_kill_switch_shutdown_completes_and_cancels_upstream() {
    let (publisher, src) = TestSource::probe::<u32>();
    let (switch, done) = src
        .via_mat(KillSwitches::single(), Keep::right)
        .to_mat(Sink::collect(), Keep::both)
        .run();
    publisher.send_next(1);
    publisher.send_next(2);
    settle().await;
    switch.shutdown();
    assert_eq!(done.await.unwrap(), [1, 2]);
    publisher.expect_cancellation().await;
}

#[tokio::test(start_paused = true)]
async fn unique_kill_switch_abort_fails() {
    let (publisher, src) = TestSource::probe::<u32>();
    let (switch, mut sub) = src
        .via_mat(KillSwitches::single(), Keep::right)
        .to_mat(TestSink::probe(), Keep::both)
        .run();
    publisher.send_next(1);
    assert_eq!(sub.expect_next().await, 1);
    switch.abort(StreamError::msg("killed"));
    switch.shutdown(); // the first signal wins
    assert_eq!(sub.expect_error().await.to_string(), "killed");
    sub.expect_complete().await;
}

#[tokio::test(start_paused = true)]
async fn kill_switch_stops_an_endless_source() {
    let (switch, done) = Source::repeat(1u64)
        .via_mat(KillSwitches::single(), Keep::right)
        .to_mat(Sink::fold(0u64, |n, _| n + 1), Keep::both)
        .run();
    // (The endless source never lets the runtime idle, so no settle() here.)
    tokio::task::yield_now().await;
    switch.shutdown();
    assert!(done.await.unwrap() > 0);
}

#[tokio::test(start_paused = true)]
async fn shared_kill_switch_controls_every_stream() {
    let shared = KillSwitches::shared("both");
    let (p1, s1) = TestSource::probe::<u32>();
    let (p2, s2) = TestSource::probe::<u32>();
    let d1 = s1.via(shared.flow()).run_with(Sink::collect());
    let mut sub2 = s2.via(shared.flow()).run_with(TestSink::probe());
    p1.send_next(1);
    p2.send_next(2);
    assert_eq!(sub2.expect_next().await, 2);
    settle().await;
    shared.shutdown();
    assert_eq!(d1.await.unwrap(), [1]);
    sub2.expect_complete().await;
    p1.expect_cancellation().await;

    let shared = SharedKillSwitch::new("abort");
    let (_p, s) = TestSource::probe::<u32>();
    let d = s.via(shared.flow()).run_with(Sink::ignore());
    let d2 = Source::never::<u32>()
        .via(shared.flow())
        .run_with(Sink::ignore());
    shared.abort(StreamError::msg("shared abort"));
    assert_eq!(d.await.unwrap_err().to_string(), "shared abort");
    assert_eq!(d2.await.unwrap_err().to_string(), "shared abort");
}

#[tokio::test(start_paused = true)]
async fn kill_switch_after_completion_has_no_effect() {
    let (switch, done) = Source::from_iter(0..3)
        .via_mat(KillSwitches::single(), Keep::right)
        .to_mat(Sink::collect(), Keep::both)
        .run();
    assert_eq!(done.await.unwrap(), [0, 1, 2]);
    switch.abort(StreamError::msg("late"));
}

#[tokio::test(start_paused = true)]
async fn watch_termination_reports_completion_failure_and_cancellation() {
    let ((_, term), done) = Source::from_iter(0..5)
        .watch_termination()
        .to_mat(Sink::collect(), Keep::both)
        .run();
    assert_eq!(done.await.unwrap().len(), 5);
    term.await.unwrap();

    let ((_, term), done) = Source::failed::<u8>(StreamError::msg("w"))
        .watch_termination()
        .to_mat(Sink::ignore(), Keep::both)
        .run();
    assert_eq!(done.await.unwrap_err().to_string(), "w");
    assert_eq!(term.await.unwrap_err().to_string(), "w");

    let (publisher, src) = TestSource::probe::<u32>();
    let ((_, term), mut sub) = src
        .watch_termination()
        .to_mat(TestSink::probe(), Keep::both)
        .run();
    publisher.send_next(1);
    assert_eq!(sub.expect_next().await, 1);
    sub.cancel();
    term.await.unwrap();
    publisher.expect_cancellation().await;
}

#[tokio::test(start_paused = true)]
async fn restart_backoff_resets_after_an_element_and_random_factor_stays_in_range() {
    // A source that emits one element and then fails: elements reset the backoff.
    let starts = Arc::new(Mutex::new(Vec::new()));
    let s = starts.clone();
    let t0 = Instant::now();
    let got = RestartSource::on_failures_with_backoff(settings(100, 1000), move || {
        s.lock().unwrap().push(Instant::now() - t0);
        Source::single(1u8)
            .concat(Source::failed(StreamError::msg("x")))
            .boxed()
    })
    .take(5)
    .run_with(Sink::collect())
    .await
    .unwrap();
    assert_eq!(got, [1; 5]);
    let starts = starts.lock().unwrap().clone();
    assert!(
        starts
            .windows(2)
            .all(|w| w[1] - w[0] == Duration::from_millis(100)),
        "{starts:?}"
    );

    // With a random factor, each backoff is within [exp, exp * (1 + factor)].
    let starts = Arc::new(Mutex::new(Vec::new()));
    let s = starts.clone();
    let t0 = Instant::now();
    let settings = RestartSettings::new(Duration::from_millis(100), Duration::from_secs(10), 0.5)
        .with_max_restarts(4, Duration::from_secs(3600));
    let _ = RestartSource::on_failures_with_backoff(settings, move || {
        s.lock().unwrap().push(Instant::now() - t0);
        Source::failed::<u8>(StreamError::msg("x")).boxed()
    })
    .run_with(Sink::ignore())
    .await;
    let starts = starts.lock().unwrap().clone();
    assert_eq!(starts.len(), 5);
    for (k, w) in starts.windows(2).enumerate() {
        let exp = Duration::from_millis(100 << k);
        let gap = w[1] - w[0];
        assert!(
            gap >= exp && gap <= exp.mul_f64(1.5) + Duration::from_millis(1),
            "restart {k}: {gap:?}"
        );
    }
}

/// Absurd settings (the fields are public) neither panic nor lose the failure: an infinite
/// random factor adds nothing, a backoff of `Duration::MAX` is waited.
#[tokio::test(start_paused = true)]
async fn extreme_restart_settings_restart_and_then_pass_the_failure_on() {
    let limited = |s: RestartSettings| s.with_max_restarts(2, Duration::from_secs(60));
    for settings in [
        limited(RestartSettings::new(
            Duration::from_millis(1),
            Duration::from_millis(5),
            f64::INFINITY,
        )),
        limited(RestartSettings {
            random_factor: f64::NAN,
            ..RestartSettings::new(Duration::from_millis(1), Duration::from_millis(5), 0.0)
        }),
    ] {
        let starts = Arc::new(AtomicUsize::new(0));
        let s = starts.clone();
        let r = RestartSource::on_failures_with_backoff(settings, move || {
            s.fetch_add(1, Ordering::SeqCst);
            Source::failed::<u32>(StreamError::msg("flaky")).boxed()
        })
        .run_with(Sink::ignore())
        .await;
        assert!(
            matches!(&r, Err(StreamError::Message(m)) if &**m == "flaky"),
            "{settings:?}: {r:?}"
        );
        assert_eq!(starts.load(Ordering::SeqCst), 3, "{settings:?}");
    }
    // A backoff of `Duration::MAX` is waited (for good), not a panic.
    let starts = Arc::new(AtomicUsize::new(0));
    let s = starts.clone();
    let run = RestartSource::on_failures_with_backoff(
        limited(RestartSettings::new(Duration::MAX, Duration::MAX, 1.0)),
        move || {
            s.fetch_add(1, Ordering::SeqCst);
            Source::failed::<u32>(StreamError::msg("flaky")).boxed()
        },
    )
    .run_with(Sink::ignore());
    let waited = tokio::time::timeout(Duration::from_secs(3600), run).await;
    assert!(waited.is_err(), "{waited:?}");
    assert_eq!(starts.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn kill_switch_cancels_its_upstream_even_when_downstream_goes_on() {
    let shared = KillSwitches::shared("one branch");
    let (pa, a) = TestSource::probe::<u32>();
    let (pb, b) = TestSource::probe::<u32>();
    let done = a.via(shared.flow()).merge(b).run_with(Sink::collect());
    pa.send_next(1);
    settle().await;
    shared.shutdown();
    // The switch wakes the graph, which drops (cancels) the switched branch's upstream
    // while the merge goes on with the other branch.
    pa.expect_cancellation().await;
    assert!(!pb.is_cancelled());
    pb.send_next(2);
    pb.send_complete();
    assert_eq!(done.await.unwrap(), [1, 2]);
}

#[tokio::test(start_paused = true)]
async fn restart_flow_propagates_cancellation_upstream() {
    let (publisher, src) = TestSource::probe::<u32>();
    let flow =
        RestartFlow::on_failures_with_backoff(settings(10, 100), || Flow::new().try_map(check));
    let mut sub = src.via(flow).run_with(TestSink::probe());
    publisher.send_next(1);
    assert_eq!(sub.expect_next().await, 10);
    sub.cancel();
    publisher.expect_cancellation().await;
}

#[tokio::test(start_paused = true)]
async fn restart_flow_backs_off_exponentially_while_nothing_passes() {
    // Every element fails: no element resets the backoff between restarts.
    let starts = Arc::new(Mutex::new(Vec::new()));
    let s = starts.clone();
    let t0 = Instant::now();
    let flow = RestartFlow::on_failures_with_backoff(settings(10, 40), move || {
        s.lock().unwrap().push(Instant::now() - t0);
        Flow::new().try_map(|_: u32| Err::<u32, _>(Bad(0)))
    });
    let got = Source::from_iter(0..6u32)
        .via(flow)
        .run_with(Sink::collect())
        .await;
    // Each element fails its incarnation and is lost (logged); the seventh
    // incarnation finds upstream complete and completes.
    assert_eq!(got.unwrap(), Vec::<u32>::new());
    let starts = starts.lock().unwrap().clone();
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    let expected: Vec<Duration> = (0..gaps.len() as u32)
        .map(|k| Duration::from_millis((10u64 << k).min(40)))
        .collect();
    assert!(
        gaps.len() >= 5,
        "one restart per failing element: {starts:?}"
    );
    assert_eq!(gaps, expected);
}
