//! Sinks and materialized values: what running a graph gives back, how
//! completion and failure reach it, and how sinks cancel upstream.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::settle;
use flowstage::prelude::*;
use flowstage::testkit::TestSource;

fn input() -> Vec<u64> {
    (1..=37).map(|x| x * x % 101).collect()
}

// ---------------------------------------------------------------------------
// Sinks.

#[tokio::test]
async fn foreach_fold_collect_ignore() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    Source::from_iter(input())
        .run_with(Sink::foreach(move |x| s.lock().unwrap().push(x)))
        .await
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), input());
    let sum = Source::from_iter(input())
        .run_with(Sink::fold(0u64, |a, x| a + x))
        .await
        .unwrap();
    assert_eq!(sum, input().iter().sum::<u64>());
    assert_eq!(
        Source::from_iter(input())
            .run_with(Sink::collect())
            .await
            .unwrap(),
        input()
    );
    Source::from_iter(input())
        .run_with(Sink::ignore())
        .await
        .unwrap();
}

#[tokio::test]
async fn sinks_report_failure() {
    let failing =
        || Source::from_iter([1u64, 2]).concat(Source::failed(StreamError::msg("sink sees it")));
    assert_eq!(
        failing()
            .run_with(Sink::foreach(|_| {}))
            .await
            .unwrap_err()
            .to_string(),
        "sink sees it"
    );
    assert_eq!(
        failing()
            .run_with(Sink::fold(0, |a, x| a + x))
            .await
            .unwrap_err()
            .to_string(),
        "sink sees it"
    );
    assert!(failing().run_with(Sink::collect()).await.is_err());
    assert!(failing().run_with(Sink::ignore()).await.is_err());
    assert!(failing().run_with(Sink::last()).await.is_err());
    assert!(failing().run_with(Sink::last_option()).await.is_err());
    assert!(failing()
        .run_with(Sink::foreach_async(2, |_| async {}))
        .await
        .is_err());
    // head stops at the first element, before the failure.
    assert_eq!(failing().run_with(Sink::head()).await.unwrap(), 1);
}

#[tokio::test]
async fn head_and_last_variants() {
    let v = input();
    assert_eq!(
        Source::from_iter(v.clone())
            .run_with(Sink::head())
            .await
            .unwrap(),
        v[0]
    );
    assert_eq!(
        Source::from_iter(v.clone())
            .run_with(Sink::head_option())
            .await
            .unwrap(),
        v.first().copied()
    );
    assert_eq!(
        Source::from_iter(v.clone())
            .run_with(Sink::last())
            .await
            .unwrap(),
        *v.last().unwrap()
    );
    assert_eq!(
        Source::from_iter(v.clone())
            .run_with(Sink::last_option())
            .await
            .unwrap(),
        v.last().copied()
    );
    assert!(matches!(
        Source::empty::<u8>().run_with(Sink::head()).await,
        Err(StreamError::Empty(_))
    ));
    assert!(matches!(
        Source::empty::<u8>().run_with(Sink::last()).await,
        Err(StreamError::Empty(_))
    ));
    assert_eq!(
        Source::empty::<u8>()
            .run_with(Sink::head_option())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        Source::empty::<u8>()
            .run_with(Sink::last_option())
            .await
            .unwrap(),
        None
    );
}

#[tokio::test(start_paused = true)]
async fn head_cancels_upstream_after_the_first_element() {
    let (publisher, src) = TestSource::probe::<u32>();
    let done = src.run_with(Sink::head());
    publisher.send_next(5);
    publisher.expect_cancellation().await;
    assert_eq!(done.await.unwrap(), 5);
    assert_eq!(publisher.delivered(), 1);

    let (publisher, src) = TestSource::probe::<u32>();
    let done = src.run_with(Sink::head_option());
    publisher.send_next(6);
    publisher.expect_cancellation().await;
    assert_eq!(done.await.unwrap(), Some(6));
}

#[tokio::test(start_paused = true)]
async fn cancelled_sink_cancels_at_once() {
    let (publisher, src) = TestSource::probe::<u32>();
    let NotUsed = src.run_with(Sink::cancelled());
    publisher.expect_cancellation().await;
    assert_eq!(publisher.delivered(), 0);
}

#[tokio::test(start_paused = true)]
async fn foreach_async_runs_everything_with_bounded_parallelism() {
    let in_flight = Arc::new(AtomicU64::new(0));
    let max_seen = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (f, m, s) = (in_flight.clone(), max_seen.clone(), seen.clone());
    Source::from_iter(input())
        .run_with(Sink::foreach_async(3, move |x| {
            let (f, m, s) = (f.clone(), m.clone(), s.clone());
            async move {
                let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(x % 13)).await;
                s.lock().unwrap().push(x);
                f.fetch_sub(1, Ordering::SeqCst);
            }
        }))
        .await
        .unwrap();
    let mut got = seen.lock().unwrap().clone();
    got.sort();
    let mut expected = input();
    expected.sort();
    assert_eq!(got, expected);
    assert_eq!(max_seen.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn to_channel_backpressures_and_delivers_in_order() {
    let (counter, src) = TestSource::counting(0..100u32);
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let done = src.run_with(Sink::to_channel(tx));
    settle().await;
    // Two in the channel, at most one more waiting in `send`.
    assert!(counter.get() <= 3, "pulled {}", counter.get());
    let mut got = Vec::new();
    while let Some(x) = rx.recv().await {
        got.push(x);
        settle().await;
        assert!(counter.get() <= got.len() as u64 + 3);
    }
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    done.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn to_channel_receiver_dropped_cancels_upstream() {
    // While the sink waits to send.
    let (publisher, src) = TestSource::probe::<u32>();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let done = src.run_with(Sink::to_channel(tx));
    publisher.send_next(1);
    publisher.send_next(2);
    settle().await;
    drop(rx);
    publisher.expect_cancellation().await;
    done.await.unwrap();

    // While the sink waits for upstream.
    let (publisher, src) = TestSource::probe::<u32>();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let done = src.run_with(Sink::to_channel(tx));
    settle().await;
    assert!(publisher.has_demand());
    drop(rx);
    publisher.expect_cancellation().await;
    done.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn to_channel_reports_upstream_failure() {
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let done = Source::single(1u8)
        .concat(Source::failed(StreamError::msg("chan")))
        .run_with(Sink::to_channel(tx));
    assert_eq!(done.await.unwrap_err().to_string(), "chan");
    assert_eq!(rx.recv().await, Some(1));
    assert_eq!(rx.recv().await, None);
}

#[tokio::test]
async fn from_fn_sink_consumes_the_stream() {
    use futures::StreamExt;
    let sink = Sink::from_fn(
        |s: futures::stream::BoxStream<'static, Item<u64>>| async move {
            let v: Vec<Item<u64>> = s.collect().await;
            v.into_iter().try_fold(0u64, |n, r| r.map(|x| n + x))
        },
    );
    let total = Source::from_iter(input()).run_with(sink).await.unwrap();
    assert_eq!(total, input().iter().sum::<u64>());
}

// ---------------------------------------------------------------------------
// Materialized values.

#[tokio::test]
async fn keep_left_right_both_none() {
    let (queue, done) = Source::queue::<u32>(4, OverflowStrategy::Backpressure)
        .to_mat(Sink::collect(), Keep::both)
        .run();
    queue.offer(1).await;
    queue.complete();
    assert_eq!(done.await.unwrap(), [1]);

    let queue = Source::queue::<u32>(4, OverflowStrategy::Backpressure)
        .to_mat(Sink::ignore(), Keep::left)
        .run();
    assert!(queue.offer(1).await.is_enqueued());
    let done = Source::queue::<u32>(4, OverflowStrategy::Backpressure)
        .to_mat(Sink::fold(0, |a, x| a + x), Keep::right)
        .run();
    // The queue handle was dropped: the stream completes with nothing.
    assert_eq!(done.await.unwrap(), 0);
    let NotUsed = Source::single(1).to_mat(Sink::ignore(), Keep::none).run();
    // `to` keeps the sink's value.
    let done = Source::single(3).to(Sink::head()).run();
    assert_eq!(done.await.unwrap(), 3);
}

#[tokio::test]
async fn via_mat_and_flow_via_mat_combine_values() {
    let flow = Flow::new()
        .map(|x: u32| x * 2)
        .via_mat(KillSwitches::single(), Keep::right);
    let ((queue, switch), done) = Source::queue::<u32>(4, OverflowStrategy::Backpressure)
        .via_mat(flow, Keep::both)
        .to_mat(Sink::collect(), Keep::both)
        .run();
    queue.offer(1).await;
    queue.offer(2).await;
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
    switch.shutdown();
    let got = done.await.unwrap();
    assert!(
        got.len() <= 2 && got.iter().zip([2, 4]).all(|(a, b)| *a == b),
        "{got:?}"
    );

    let f = Flow::new()
        .map(|x: u32| x + 1)
        .map_materialized_value(|NotUsed| "flow value");
    let (m, done) = Source::from_iter(0..3u32)
        .via_mat(f, Keep::right)
        .to_mat(Sink::collect(), Keep::both)
        .run();
    assert_eq!(m, "flow value");
    assert_eq!(done.await.unwrap(), [1, 2, 3]);
}

#[tokio::test]
async fn map_materialized_value_on_source_and_graph() {
    let (len, done) = Source::queue::<u32>(4, OverflowStrategy::Backpressure)
        .map_materialized_value(|q| {
            let _ = q.try_offer(9);
            q.len()
        })
        .to_mat(Sink::collect(), Keep::both)
        .run();
    assert_eq!(len, 1);
    assert_eq!(done.await.unwrap(), [9]);
    let n = Source::from_iter(0..3)
        .to(Sink::collect())
        .map_materialized_value(|c| (c, 42))
        .run();
    assert_eq!(n.1, 42);
    assert_eq!(n.0.await.unwrap(), [0, 1, 2]);
}

#[tokio::test]
async fn into_parts_drives_inline_and_dropping_the_driver_is_abrupt() {
    let (done, driver) = Source::from_iter(0..5).to(Sink::collect()).into_parts();
    driver.await;
    assert_eq!(done.await.unwrap(), (0..5).collect::<Vec<_>>());

    let (done, driver) = Source::from_iter(0..5).to(Sink::collect()).into_parts();
    drop(driver);
    assert!(matches!(done.await, Err(StreamError::Abrupt(_))));
}

#[tokio::test]
async fn pre_materialize_before_a_junction() {
    let (queue, src) = Source::queue::<u32>(8, OverflowStrategy::Backpressure).pre_materialize();
    let [a, b] = src.broadcast2();
    let da = a.run_with(Sink::collect());
    let db = b.map(|x| x * 10).run_with(Sink::collect());
    for x in 1..=3 {
        queue.offer(x).await;
    }
    queue.complete();
    assert_eq!(da.await.unwrap(), [1, 2, 3]);
    assert_eq!(db.await.unwrap(), [10, 20, 30]);
}

#[tokio::test]
async fn boxed_sources_are_interchangeable() {
    let sources: Vec<flowstage::BoxSource<u32>> = vec![
        Source::from_iter(0..2).boxed(),
        Source::single(5).map(|x| x + 1).boxed(),
        Source::empty().boxed(),
    ];
    let mut all = Vec::new();
    for s in sources {
        all.extend(s.run_with(Sink::collect()).await.unwrap());
    }
    assert_eq!(all, [0, 1, 6]);
}
