//! Time-based operators on tokio's paused clock: grouped_within, throttle,
//! idle_timeout, completion_timeout, tick. Virtual time only advances when
//! every task is idle, so the instants below are exact and deterministic.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowstage::prelude::*;
use flowstage::testkit::{TestSink, TestSource};
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);

#[tokio::test(start_paused = true)]
async fn grouped_within_emits_when_full_or_when_time_is_up() {
    let within = 100 * MS;
    let (publisher, src) = TestSource::probe::<u32>();
    let mut sub = src.grouped_within(3, within).run_with(TestSink::probe());
    for x in 1..=4 {
        publisher.send_next(x);
    }
    // Full group at once, without waiting.
    let t0 = Instant::now();
    assert_eq!(sub.expect_next().await, [1, 2, 3]);
    assert_eq!(Instant::now(), t0);
    // A partial group only when `within` has passed since its first element.
    sub.expect_no_message(within - MS).await;
    assert_eq!(sub.expect_next().await, [4]);
    assert_eq!(Instant::now() - t0, within);
    // No empty groups while nothing arrives.
    sub.expect_no_message(3 * within).await;
    publisher.send_next(5);
    publisher.send_complete();
    assert_eq!(
        sub.expect_next().await,
        [5],
        "a partial group is flushed on completion"
    );
    sub.expect_complete().await;
}

/// An upstream that always has an element ready never leaves the operator waiting, so the
/// window is checked as elements arrive: the first element after it starts the next chunk.
#[tokio::test(start_paused = true)]
async fn grouped_within_closes_the_window_when_the_upstream_is_always_ready() {
    use futures::StreamExt;
    let within = 20 * MS;
    // Element 0, then one `Pending` (the window opens), then always ready.
    let mut n = 0u32;
    let mut waited = false;
    let upstream = futures::stream::poll_fn(move |cx| {
        if n == 1 && !waited {
            waited = true;
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        n += 1;
        std::task::Poll::Ready(Some(n - 1))
    });
    let mut chunks = Source::from_stream(upstream)
        .grouped_within(1000, within)
        .into_stream();
    assert!(futures::poll!(chunks.next()).is_pending());
    tokio::time::advance(within + MS).await;
    let first = chunks.next().await;
    assert_eq!(first.map(|c| c.ok()), Some(Some(vec![0])));
}

#[tokio::test(start_paused = true)]
async fn grouped_within_flushes_before_failing() {
    let (publisher, src) = TestSource::probe::<u32>();
    let mut sub = src
        .grouped_within(10, Duration::from_secs(1))
        .run_with(TestSink::probe());
    publisher.send_next(1);
    publisher.send_next(2);
    publisher.send_error(StreamError::msg("late"));
    assert_eq!(sub.expect_next().await, [1, 2]);
    assert_eq!(sub.expect_error().await.to_string(), "late");
    sub.expect_complete().await;
}

#[tokio::test(start_paused = true)]
async fn grouped_within_keeps_everything_in_order() {
    let v: Vec<u32> = (0..50).collect();
    let groups = Source::from_iter(v.clone())
        .throttle(1, 30 * MS, 1)
        .grouped_within(4, 100 * MS)
        .run_with(Sink::collect())
        .await
        .unwrap();
    assert!(groups.iter().all(|g| !g.is_empty() && g.len() <= 4));
    assert!(
        groups.iter().any(|g| g.len() < 4),
        "the timer cut some groups short"
    );
    assert_eq!(groups.concat(), v);
}

async fn arrival_offsets<S, T>(src: Source<S>) -> Vec<Duration>
where
    S: futures::Stream<Item = Item<T>> + Send + 'static,
    T: Send + 'static,
{
    let start = Instant::now();
    let times = Arc::new(Mutex::new(Vec::new()));
    let t = times.clone();
    src.run_with(Sink::foreach(move |_| {
        t.lock().unwrap().push(Instant::now() - start)
    }))
    .await
    .unwrap();
    let v = times.lock().unwrap().clone();
    v
}

#[tokio::test(start_paused = true)]
async fn throttle_shapes_to_the_rate_after_a_burst() {
    let (elements, per, burst) = (2u32, Duration::from_secs(1), 3u32);
    let cost = per / elements;
    let got = arrival_offsets(Source::from_iter(0..10u32).throttle(elements, per, burst)).await;
    assert_eq!(got.len(), 10, "throttle never drops");
    for (k, t) in got.iter().enumerate() {
        // The burst passes at once; after it, one element per `cost`.
        let expected = cost * (k as u32 + 1).saturating_sub(burst);
        assert!(
            *t >= expected && *t < expected + 2 * MS,
            "element {k} at {t:?}, expected {expected:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn throttle_refills_credit_while_idle() {
    let (publisher, src) = TestSource::probe::<u32>();
    let mut sub = src.throttle(1, 100 * MS, 2).run_with(TestSink::probe());
    for x in 0..3 {
        publisher.send_next(x);
    }
    let t0 = Instant::now();
    assert_eq!(sub.expect_next_n(2).await, [0, 1]);
    assert_eq!(Instant::now(), t0, "burst of 2");
    assert_eq!(sub.expect_next().await, 2);
    assert_eq!(Instant::now() - t0, 100 * MS);
    // Idle long enough to earn the whole burst back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    publisher.send_next(3);
    publisher.send_next(4);
    let t1 = Instant::now();
    assert_eq!(sub.expect_next_n(2).await, [3, 4]);
    assert_eq!(Instant::now(), t1);
}

#[tokio::test(start_paused = true)]
async fn throttle_passes_failure_and_completion() {
    let (publisher, src) = TestSource::probe::<u32>();
    let mut sub = src
        .throttle(1, Duration::from_secs(10), 1)
        .run_with(TestSink::probe());
    publisher.send_next(1);
    publisher.send_error(StreamError::msg("t"));
    assert_eq!(sub.expect_next().await, 1);
    assert_eq!(sub.expect_error().await.to_string(), "t");
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_fails_only_after_a_silent_period() {
    let timeout = 200 * MS;
    // Elements every 150 ms keep it alive.
    let got = Source::from_iter(0..5u32)
        .throttle(1, 150 * MS, 1)
        .idle_timeout(timeout)
        .run_with(Sink::collect())
        .await
        .unwrap();
    assert_eq!(got, (0..5).collect::<Vec<_>>());

    let (publisher, src) = TestSource::probe::<u32>();
    let mut sub = src.idle_timeout(timeout).run_with(TestSink::probe());
    publisher.send_next(1);
    assert_eq!(sub.expect_next().await, 1);
    let t0 = Instant::now();
    sub.expect_no_message(timeout - MS).await;
    match sub.expect_error().await {
        StreamError::IdleTimeout(d) => assert_eq!(d, timeout),
        e => panic!("unexpected {e}"),
    }
    assert_eq!(Instant::now() - t0, timeout);

    // With a real sink, the timeout ends the stream and cancels the silent upstream.
    let (publisher, src) = TestSource::probe::<u32>();
    let done = src.idle_timeout(timeout).run_with(Sink::ignore());
    assert!(matches!(done.await, Err(StreamError::IdleTimeout(_))));
    publisher.expect_cancellation().await;
}

#[tokio::test(start_paused = true)]
async fn completion_timeout_fails_a_stream_that_runs_too_long() {
    let ok = Source::from_iter(0..3u32)
        .throttle(1, 100 * MS, 1)
        .completion_timeout(Duration::from_secs(1))
        .run_with(Sink::collect())
        .await
        .unwrap();
    assert_eq!(ok, [0, 1, 2]);

    let timeout = Duration::from_millis(450);
    let mut sub = Source::from_iter(0..10u32)
        .throttle(1, 100 * MS, 1)
        .completion_timeout(timeout)
        .run_with(TestSink::probe());
    let t0 = Instant::now();
    // Elements at 0, 100, ..., 400 ms pass; then the deadline.
    assert_eq!(sub.expect_next_n(5).await, (0..5).collect::<Vec<_>>());
    match sub.expect_error().await {
        StreamError::CompletionTimeout(d) => assert_eq!(d, timeout),
        e => panic!("unexpected {e}"),
    }
    assert_eq!(Instant::now() - t0, timeout);
}

#[tokio::test(start_paused = true)]
async fn tick_emits_after_initial_delay_then_every_interval() {
    let (initial, interval) = (100 * MS, 50 * MS);
    let got = arrival_offsets(Source::tick(initial, interval, "tick").take(4)).await;
    let expected: Vec<Duration> = (0..4).map(|k| initial + interval * k).collect();
    assert_eq!(got, expected);
}

#[tokio::test(start_paused = true)]
async fn tick_skips_ticks_while_downstream_is_busy() {
    let interval = 10 * MS;
    let mut sub = Source::tick(Duration::ZERO, interval, 1u8).run_with(TestSink::probe());
    assert_eq!(sub.expect_next().await, 1);
    // Downstream busy for ten intervals.
    tokio::time::sleep(10 * interval).await;
    let t0 = Instant::now();
    assert_eq!(
        sub.expect_next().await,
        1,
        "one missed tick is delivered at once"
    );
    assert_eq!(Instant::now(), t0);
    // The others are skipped, not queued.
    sub.expect_no_message(interval / 2).await;
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_clock_starts_when_the_stream_runs_not_when_it_is_built() {
    let timeout = 100 * MS;
    let (publisher, src) = TestSource::probe::<u32>();
    let graph = src.idle_timeout(timeout);
    // Built long before it runs.
    tokio::time::sleep(10 * timeout).await;
    let mut sub = graph.run_with(TestSink::probe());
    sub.expect_no_message(timeout - MS).await;
    publisher.send_next(1);
    assert_eq!(sub.expect_next().await, 1);
}

#[test]
fn timed_operators_can_be_built_outside_a_runtime() {
    let graph = Source::from_iter(0..3u32)
        .idle_timeout(Duration::from_secs(1))
        .completion_timeout(Duration::from_secs(1))
        .grouped_within(2, Duration::from_secs(1))
        .throttle(100, Duration::from_secs(1), 10);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let got = rt
        .block_on(async move { graph.run_with(Sink::collect()).await })
        .unwrap();
    assert_eq!(got.concat(), [0, 1, 2]);
}
