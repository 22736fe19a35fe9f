//! Buffers, overflow strategies, Source::queue, async boundaries, conflate,
//! batch, map_async: how far ahead of a slow consumer they pull.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{overflow_model, settle};
use flowstage::prelude::*;
use flowstage::testkit::{TestSink, TestSource};

const DROPPING: [OverflowStrategy; 5] = [
    OverflowStrategy::DropHead,
    OverflowStrategy::DropTail,
    OverflowStrategy::DropBuffer,
    OverflowStrategy::DropNew,
    OverflowStrategy::Fail,
];

// ---------------------------------------------------------------------------
// Pull-ahead bounds.

/// Consumes `total` elements one by one from a counting source behind `build`,
/// checking after each that at most `bound` elements were pulled ahead.
/// Returns the largest lead seen.
async fn max_lead<S>(
    total: u64,
    bound: u64,
    build: impl FnOnce(
        flowstage::Source<flowstage::testkit::CountingStream<std::ops::Range<u64>>>,
    ) -> flowstage::Source<S>,
) -> u64
where
    S: futures::Stream<Item = Item<u64>> + Send + 'static,
{
    let (counter, src) = TestSource::counting(0..10_000u64);
    let mut sub = build(src).run_with(TestSink::probe());
    let mut max = 0;
    for i in 0..total {
        assert_eq!(sub.expect_next().await, i);
        settle().await;
        let consumed = i + 1;
        let pulled = counter.get();
        assert!(pulled >= consumed);
        let lead = pulled - consumed;
        assert!(
            lead <= bound,
            "pulled {pulled} with {consumed} consumed: more than {bound} ahead"
        );
        max = max.max(lead);
    }
    max
}

#[tokio::test(start_paused = true)]
async fn buffer_backpressure_pulls_at_most_capacity_ahead() {
    let lead = max_lead(100, 8, |s| s.buffer(8, OverflowStrategy::Backpressure)).await;
    assert!(
        lead >= 1,
        "a buffer should decouple: it pulled nothing ahead"
    );
}

#[tokio::test(start_paused = true)]
async fn async_boundary_pulls_at_most_capacity_ahead() {
    let lead = max_lead(100, 16, |s| s.async_boundary_with(16)).await;
    assert!(lead >= 1);
}

#[tokio::test(start_paused = true)]
async fn default_async_boundary_pulls_at_most_1024_ahead() {
    let lead = max_lead(1500, 1024, |s| s.async_boundary()).await;
    assert!(lead > 1);
}

#[tokio::test(start_paused = true)]
async fn map_async_pulls_at_most_parallelism_ahead() {
    let lead = max_lead(50, 4, |s| s.map_async(4, |x| async move { x })).await;
    assert!(lead >= 1);
}

#[tokio::test(start_paused = true)]
async fn map_async_with_blocked_futures_pulls_exactly_parallelism() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = gate.clone();
    let (counter, src) = TestSource::counting(0..100u64);
    let mut sub = src
        .map_async(4, move |x| {
            let g = g.clone();
            async move {
                g.acquire().await.unwrap().forget();
                x * 3
            }
        })
        .run_with(TestSink::probe());
    sub.expect_no_message(Duration::from_millis(100)).await;
    assert_eq!(counter.get(), 4, "the window of 4 futures is full");
    gate.add_permits(1);
    assert_eq!(sub.expect_next().await, 0);
    // The freed slot is refilled on the next demand at the latest.
    assert!(counter.get() <= 5);
    gate.add_permits(10);
    let got = sub.expect_next_n(10).await;
    assert_eq!(got, (1..11).map(|x| x * 3).collect::<Vec<u64>>());
    assert!(counter.get() <= 11 + 4);
}

#[tokio::test(start_paused = true)]
async fn batch_pulls_at_most_max_ahead() {
    const MAX: u64 = 5;
    let (counter, src) = TestSource::counting(0..200u64);
    let mut sub = src
        .batch(
            MAX,
            |x| vec![x],
            |mut v, x| {
                v.push(x);
                v
            },
        )
        .run_with(TestSink::probe());
    let mut received: Vec<u64> = Vec::new();
    let mut biggest = 0;
    while received.len() < 100 {
        let b = sub.expect_next().await;
        assert!(
            !b.is_empty() && b.len() as u64 <= MAX,
            "batch of {}",
            b.len()
        );
        biggest = biggest.max(b.len());
        received.extend(b);
        settle().await;
        let lead = counter.get() - received.len() as u64;
        assert!(
            lead <= MAX,
            "{lead} elements pulled ahead of a batch(max = {MAX})"
        );
    }
    assert_eq!(received, (0..received.len() as u64).collect::<Vec<_>>());
    assert!(biggest > 1, "a slow consumer should see batches");
}

#[tokio::test(start_paused = true)]
async fn source_queue_backpressure_offer_waits_for_room() {
    const CAP: usize = 4;
    let (queue, mut sub) = Source::queue::<u32>(CAP, OverflowStrategy::Backpressure)
        .to_mat(TestSink::probe(), Keep::both)
        .run();
    let enqueued = Arc::new(AtomicU64::new(0));
    let e = enqueued.clone();
    let producer = tokio::spawn(async move {
        for i in 0..20 {
            assert!(queue.offer(i).await.is_enqueued());
            e.fetch_add(1, Ordering::SeqCst);
        }
        queue.complete();
    });
    settle().await;
    assert_eq!(
        enqueued.load(Ordering::SeqCst),
        CAP as u64,
        "offer must wait once the queue is full"
    );
    for i in 0..20u32 {
        assert_eq!(sub.expect_next().await, i);
        settle().await;
        let lead = enqueued.load(Ordering::SeqCst) - u64::from(i + 1);
        assert!(lead <= CAP as u64);
    }
    sub.expect_complete().await;
    producer.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn source_queue_try_offer_on_full_backpressured_queue_is_dropped() {
    let (queue, mut sub) = Source::queue::<u32>(2, OverflowStrategy::Backpressure)
        .to_mat(TestSink::probe(), Keep::both)
        .run();
    assert!(queue.try_offer(1).is_enqueued());
    assert!(queue.try_offer(2).is_enqueued());
    assert_eq!(queue.len(), 2);
    assert!(matches!(queue.try_offer(3), QueueOfferResult::Dropped));
    assert_eq!(queue.dropped(), 1);
    assert_eq!(sub.expect_next_n(2).await, [1, 2]);
    queue.complete();
    sub.expect_complete().await;
}

// ---------------------------------------------------------------------------
// Overflow strategies on `buffer`.

async fn check_buffer_strategy(strategy: OverflowStrategy) {
    const CAP: usize = 3;
    let (publisher, src) = TestSource::probe::<u32>();
    let mut sub = src.buffer(CAP, strategy).run_with(TestSink::probe());
    // One element through, so the buffer is running and empty.
    publisher.send_next(0);
    assert_eq!(sub.expect_next().await, 0);
    // A burst while downstream is not asking.
    let burst: Vec<u32> = (1..=10).collect();
    for &x in &burst {
        publisher.send_next(x);
    }
    settle().await;
    let (expected, _dropped, fails) = overflow_model(strategy, CAP, &burst);
    // A drop strategy keeps pulling; `Fail` pulls up to the element that overflows.
    let pulled = if fails { 1 + CAP as u64 + 1 } else { 11 };
    assert_eq!(
        publisher.delivered(),
        pulled,
        "{strategy:?}: what the buffer pulled"
    );
    for x in expected {
        assert_eq!(sub.expect_next().await, x, "{strategy:?}");
    }
    if fails {
        match sub.expect_error().await {
            StreamError::BufferOverflow { capacity } => assert_eq!(capacity, CAP),
            e => panic!("{strategy:?}: unexpected error {e}"),
        }
        publisher.expect_cancellation().await;
    } else {
        publisher.send_complete();
        sub.expect_complete().await;
    }
}

#[tokio::test(start_paused = true)]
async fn buffer_drop_head() {
    check_buffer_strategy(OverflowStrategy::DropHead).await;
}

#[tokio::test(start_paused = true)]
async fn buffer_drop_tail() {
    check_buffer_strategy(OverflowStrategy::DropTail).await;
}

#[tokio::test(start_paused = true)]
async fn buffer_drop_buffer() {
    check_buffer_strategy(OverflowStrategy::DropBuffer).await;
}

#[tokio::test(start_paused = true)]
async fn buffer_drop_new() {
    check_buffer_strategy(OverflowStrategy::DropNew).await;
}

#[tokio::test(start_paused = true)]
async fn buffer_fail() {
    check_buffer_strategy(OverflowStrategy::Fail).await;
}

/// A consumer that keeps up loses nothing, whatever the strategy: the buffer drops only what a
/// slower consumer could not take, not what the upstream had ready at once.
#[tokio::test]
async fn drop_strategies_lose_nothing_while_the_consumer_keeps_up() {
    for strategy in [
        OverflowStrategy::DropHead,
        OverflowStrategy::DropTail,
        OverflowStrategy::DropBuffer,
        OverflowStrategy::DropNew,
        OverflowStrategy::Fail,
    ] {
        let got = Source::from_iter(1..=1000u32)
            .buffer(16, strategy)
            .run_with(Sink::collect())
            .await;
        assert_eq!(
            got.ok(),
            Some((1..=1000).collect::<Vec<_>>()),
            "{strategy:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn buffer_backpressure_loses_nothing_and_stops_pulling() {
    const CAP: usize = 3;
    let (publisher, src) = TestSource::probe::<u32>();
    let mut sub = src
        .buffer(CAP, OverflowStrategy::Backpressure)
        .run_with(TestSink::probe());
    publisher.send_next(0);
    assert_eq!(sub.expect_next().await, 0);
    for x in 1..=10 {
        publisher.send_next(x);
    }
    settle().await;
    assert!(
        publisher.delivered() <= 1 + CAP as u64,
        "pulled {}",
        publisher.delivered()
    );
    assert_eq!(sub.expect_next_n(10).await, (1..=10).collect::<Vec<_>>());
    publisher.send_complete();
    sub.expect_complete().await;
}

// ---------------------------------------------------------------------------
// Overflow strategies on `Source::queue`.

async fn check_queue_strategy(strategy: OverflowStrategy, warm_up: bool) {
    const CAP: usize = 3;
    let (queue, mut sub) = Source::queue::<u32>(CAP, strategy)
        .to_mat(TestSink::probe(), Keep::both)
        .run();
    if warm_up {
        // One element through first: what the consumer took must not count against capacity.
        assert!(queue.offer(0).await.is_enqueued());
        assert_eq!(sub.expect_next().await, 0);
    }
    let burst: Vec<u32> = (1..=10).collect();
    let (expected, dropped, fails) = overflow_model(strategy, CAP, &burst);
    let mut failed = false;
    for (i, &x) in burst.iter().enumerate() {
        let r = queue.offer(x).await;
        match strategy {
            OverflowStrategy::DropNew if i >= CAP => {
                assert!(matches!(r, QueueOfferResult::Dropped), "{r:?}")
            }
            OverflowStrategy::Fail if i == CAP => {
                assert!(
                    matches!(
                        r,
                        QueueOfferResult::Failure(StreamError::BufferOverflow { capacity: CAP })
                    ),
                    "{r:?}"
                );
                failed = true;
            }
            OverflowStrategy::Fail if failed => {
                assert!(matches!(r, QueueOfferResult::QueueClosed), "{r:?}")
            }
            _ => assert!(r.is_enqueued(), "{strategy:?}: offer {x}: {r:?}"),
        }
    }
    assert_eq!(queue.dropped(), dropped, "{strategy:?}");
    assert_eq!(queue.len(), expected.len());
    queue.complete();
    for x in expected {
        assert_eq!(sub.expect_next().await, x, "{strategy:?}");
    }
    if fails {
        assert!(matches!(
            sub.expect_error().await,
            StreamError::BufferOverflow { capacity: CAP }
        ));
    } else {
        sub.expect_complete().await;
    }
}

#[tokio::test(start_paused = true)]
async fn queue_every_dropping_strategy() {
    for strategy in DROPPING {
        check_queue_strategy(strategy, false).await;
    }
}

#[tokio::test(start_paused = true)]
async fn queue_every_dropping_strategy_after_an_element_went_through() {
    for strategy in DROPPING {
        check_queue_strategy(strategy, true).await;
    }
}

#[tokio::test(start_paused = true)]
async fn queue_offer_after_complete_or_cancel_is_closed() {
    let (queue, mut sub) = Source::queue::<u32>(4, OverflowStrategy::Backpressure)
        .to_mat(TestSink::probe(), Keep::both)
        .run();
    assert!(queue.offer(1).await.is_enqueued());
    queue.complete();
    assert!(matches!(
        queue.offer(2).await,
        QueueOfferResult::QueueClosed
    ));
    assert_eq!(sub.expect_next().await, 1);
    sub.expect_complete().await;

    let (queue, mut sub) = Source::queue::<u32>(4, OverflowStrategy::Backpressure)
        .to_mat(TestSink::probe(), Keep::both)
        .run();
    sub.cancel();
    assert!(matches!(
        queue.offer(1).await,
        QueueOfferResult::QueueClosed
    ));
}

#[tokio::test(start_paused = true)]
async fn queue_backpressured_offer_is_released_by_cancellation() {
    let (queue, mut sub) = Source::queue::<u32>(1, OverflowStrategy::Backpressure)
        .to_mat(TestSink::probe(), Keep::both)
        .run();
    assert!(queue.offer(1).await.is_enqueued());
    let q = queue.clone();
    let waiting = tokio::spawn(async move { q.offer(2).await });
    settle().await;
    assert!(!waiting.is_finished(), "offer must wait on a full queue");
    sub.cancel();
    assert!(matches!(
        waiting.await.unwrap(),
        QueueOfferResult::QueueClosed
    ));
}

#[tokio::test(start_paused = true)]
async fn queue_fail_and_drop_of_last_handle() {
    let (queue, mut sub) = Source::queue::<u32>(4, OverflowStrategy::Backpressure)
        .to_mat(TestSink::probe(), Keep::both)
        .run();
    queue.offer(7).await;
    queue.fail(StreamError::msg("producer broke"));
    assert_eq!(sub.expect_next().await, 7);
    assert_eq!(sub.expect_error().await.to_string(), "producer broke");

    // Dropping every handle completes the stream.
    let (queue, mut sub) = Source::queue::<u32>(4, OverflowStrategy::Backpressure)
        .to_mat(TestSink::probe(), Keep::both)
        .run();
    let q2 = queue.clone();
    queue.offer(1).await;
    drop(queue);
    q2.offer(2).await;
    drop(q2);
    assert_eq!(sub.expect_next_n(2).await, [1, 2]);
    sub.expect_complete().await;
}

// ---------------------------------------------------------------------------
// Errors and cancellation across the boundary.

#[tokio::test(start_paused = true)]
async fn async_boundary_propagates_failure() {
    let (publisher, src) = TestSource::probe::<u32>();
    let mut sub = src.async_boundary_with(4).run_with(TestSink::probe());
    publisher.send_next(1);
    publisher.send_error(StreamError::msg("upstream broke"));
    assert_eq!(sub.expect_next().await, 1);
    assert_eq!(sub.expect_error().await.to_string(), "upstream broke");
}

#[tokio::test(start_paused = true)]
async fn async_boundary_propagates_cancellation_while_upstream_is_idle() {
    let (publisher, src) = TestSource::probe::<u32>();
    let mut sub = src.async_boundary_with(4).run_with(TestSink::probe());
    publisher.send_next(1);
    assert_eq!(sub.expect_next().await, 1);
    settle().await;
    assert!(publisher.has_demand(), "the pump waits on upstream");
    sub.cancel();
    publisher.expect_cancellation().await;
}

#[tokio::test(start_paused = true)]
async fn buffer_with_drop_strategy_propagates_cancellation() {
    let (publisher, src) = TestSource::probe::<u32>();
    let mut sub = src
        .buffer(2, OverflowStrategy::DropHead)
        .run_with(TestSink::probe());
    publisher.send_next(1);
    assert_eq!(sub.expect_next().await, 1);
    sub.cancel();
    publisher.expect_cancellation().await;
}

#[tokio::test(start_paused = true)]
async fn conflate_and_batch_propagate_cancellation_while_upstream_is_idle() {
    let (publisher, src) = TestSource::probe::<u32>();
    let mut sub = src.conflate(|a, b| a + b).run_with(TestSink::probe());
    publisher.send_next(1);
    assert_eq!(sub.expect_next().await, 1);
    sub.cancel();
    publisher.expect_cancellation().await;

    let (publisher, src) = TestSource::probe::<u32>();
    let mut sub = src
        .batch(
            4,
            |x| vec![x],
            |mut v, x| {
                v.push(x);
                v
            },
        )
        .run_with(TestSink::probe());
    publisher.send_next(1);
    assert_eq!(sub.expect_next().await, vec![1]);
    sub.cancel();
    publisher.expect_cancellation().await;
}

#[tokio::test(start_paused = true)]
async fn conflate_and_batch_propagate_failure() {
    let (publisher, src) = TestSource::probe::<u32>();
    let mut sub = src.conflate(|a, b| a + b).run_with(TestSink::probe());
    publisher.send_error(StreamError::msg("bad"));
    assert_eq!(sub.expect_error().await.to_string(), "bad");

    let err = Source::from_iter(0..3)
        .concat(Source::failed(StreamError::msg("late")))
        .batch(
            2,
            |x| vec![x],
            |mut v, x| {
                v.push(x);
                v
            },
        )
        .run_with(Sink::ignore())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "late");
}

// ---------------------------------------------------------------------------
// conflate / batch / expand semantics.

#[tokio::test(start_paused = true)]
async fn conflate_aggregates_while_downstream_is_slow() {
    let (publisher, src) = TestSource::probe::<u64>();
    let mut sub = src.conflate(|a, b| a + b).run_with(TestSink::probe());
    publisher.send_next(1);
    assert_eq!(sub.expect_next().await, 1);
    let burst: Vec<u64> = (2..=20).collect();
    for &x in &burst {
        publisher.send_next(x);
    }
    settle().await;
    assert_eq!(publisher.delivered(), 20, "conflate never backpressures");
    assert_eq!(sub.expect_next().await, burst.iter().sum::<u64>());
    publisher.send_complete();
    sub.expect_complete().await;
}

#[tokio::test(start_paused = true)]
async fn conflate_with_seed_changes_type() {
    let (publisher, src) = TestSource::probe::<u32>();
    let mut sub = src
        .conflate_with_seed(
            |x| vec![x],
            |mut v, x| {
                v.push(x);
                v
            },
        )
        .run_with(TestSink::probe());
    publisher.send_next(1);
    assert_eq!(sub.expect_next().await, vec![1]);
    for x in 2..=5 {
        publisher.send_next(x);
    }
    settle().await;
    assert_eq!(sub.expect_next().await, (2..=5).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn conflate_of_an_endless_source_does_not_starve_the_runtime() {
    let sums = Source::repeat(1u64)
        .conflate(|a, b| a + b)
        .take(3)
        .run_with(Sink::collect())
        .await
        .unwrap();
    assert_eq!(sums.len(), 3);
    assert!(sums.iter().all(|&s| s >= 1));
}

#[tokio::test(start_paused = true)]
async fn batch_keeps_every_element_in_order() {
    let input: Vec<u32> = (0..1000).collect();
    let batches: Vec<Vec<u32>> = Source::from_iter(input.clone())
        .batch(
            7,
            |x| vec![x],
            |mut v, x| {
                v.push(x);
                v
            },
        )
        .run_with(Sink::collect())
        .await
        .unwrap();
    assert!(batches.iter().all(|b| !b.is_empty() && b.len() <= 7));
    assert_eq!(batches.concat(), input);
}

#[tokio::test(start_paused = true)]
async fn expand_extrapolates_while_upstream_is_idle() {
    let (publisher, src) = TestSource::probe::<u32>();
    let mut sub = src.expand(std::iter::repeat).run_with(TestSink::probe());
    publisher.send_next(1);
    assert_eq!(sub.expect_next().await, 1);
    assert_eq!(sub.expect_next().await, 1, "repeats the last element");
    assert_eq!(sub.expect_next().await, 1);
    publisher.send_next(2);
    assert_eq!(
        sub.expect_next().await,
        2,
        "a new element wins over extrapolation"
    );
    assert_eq!(sub.expect_next().await, 2);
    publisher.send_complete();
    sub.expect_complete().await;
}

#[tokio::test(start_paused = true)]
async fn expand_with_finite_iterator_then_waits() {
    let (publisher, src) = TestSource::probe::<u32>();
    let mut sub = src.expand(|x| vec![x, x * 10]).run_with(TestSink::probe());
    publisher.send_next(3);
    assert_eq!(sub.expect_next_n(2).await, [3, 30]);
    sub.expect_no_message(Duration::from_millis(50)).await;
    publisher.send_error(StreamError::msg("e"));
    assert_eq!(sub.expect_error().await.to_string(), "e");
}

#[tokio::test(start_paused = true)]
async fn into_buffered_stream_delivers_everything() {
    use futures::StreamExt;
    let s = Source::from_iter(0..500u32).into_buffered_stream(16);
    let v: Vec<u32> = s.map(|r| r.unwrap()).collect().await;
    assert_eq!(v, (0..500).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn async_boundary_fails_the_stream_when_upstream_panics() {
    let src = Source::from_iter(0..10u32).map(|x| {
        assert!(x != 3, "element 3 is poison");
        x
    });
    let done = src.async_boundary_with(2).run_with(Sink::collect());
    let result = tokio::time::timeout(Duration::from_secs(60), done)
        .await
        .expect("downstream waited forever for an upstream that had panicked");
    let err = result.expect_err("a panicked upstream must fail the stream");
    assert!(matches!(err, StreamError::Abrupt(_)), "{err}");
}

#[tokio::test(start_paused = true)]
async fn conflate_fails_the_stream_when_upstream_panics() {
    let src = Source::from_iter(0..10u32).map(|x| {
        assert!(x != 3, "element 3 is poison");
        x
    });
    let done = src.conflate(|a, b| a + b).run_with(Sink::collect());
    let result = tokio::time::timeout(Duration::from_secs(60), done)
        .await
        .expect("downstream waited forever for an upstream that had panicked");
    let err = result.expect_err("a panicked upstream must fail the stream");
    assert!(matches!(err, StreamError::Abrupt(_)), "{err}");
}

// ---------------------------------------------------------------------------
// Pinned async boundaries: upstream on a thread of its own.

#[tokio::test]
async fn pinned_boundary_runs_upstream_on_its_named_thread() {
    let names = Source::from_iter(0..100u32)
        .map(|_| std::thread::current().name().map(str::to_owned))
        .async_boundary_pinned(8, "flowstage-test-up")
        .run_with(Sink::collect())
        .await
        .unwrap();
    assert_eq!(names.len(), 100);
    assert!(
        names
            .iter()
            .all(|n| n.as_deref() == Some("flowstage-test-up")),
        "{names:?}"
    );
}

#[tokio::test]
async fn pinned_boundary_pulls_at_most_capacity_ahead() {
    let (counter, src) = TestSource::counting(0..10_000u64);
    let mut sub = src
        .async_boundary_pinned(16, "flowstage-test-lead")
        .run_with(TestSink::probe());
    for i in 0..100u64 {
        assert_eq!(sub.expect_next().await, i);
        // The thread runs on its own: whatever it pulled, never more than 16 ahead.
        let lead = counter.get() - (i + 1);
        assert!(lead <= 16, "{lead} ahead after {i}");
    }
}

#[tokio::test]
async fn pinned_boundary_propagates_failure_and_cancellation() {
    let (publisher, src) = TestSource::probe::<u32>();
    let mut sub = src
        .async_boundary_pinned(4, "flowstage-test-fail")
        .run_with(TestSink::probe());
    publisher.send_next(1);
    publisher.send_error(StreamError::msg("upstream broke"));
    assert_eq!(sub.expect_next().await, 1);
    assert_eq!(sub.expect_error().await.to_string(), "upstream broke");

    let (publisher, src) = TestSource::probe::<u32>();
    let mut sub = src
        .async_boundary_pinned(4, "flowstage-test-cancel")
        .run_with(TestSink::probe());
    publisher.send_next(1);
    assert_eq!(sub.expect_next().await, 1);
    sub.cancel();
    publisher.expect_cancellation().await;
}

#[tokio::test]
async fn pinned_boundary_fails_the_stream_when_upstream_panics() {
    let src = Source::from_iter(0..10u32).map(|x| {
        assert!(x != 3, "element 3 is poison");
        x
    });
    let err = src
        .async_boundary_pinned(2, "flowstage-test-panic")
        .run_with(Sink::collect())
        .await
        .expect_err("a panicked upstream must fail the stream");
    assert!(matches!(err, StreamError::Abrupt(_)), "{err}");
}

#[test]
fn operators_with_a_task_of_their_own_fail_outside_a_runtime_instead_of_panicking() {
    // Polled as plain streams, where `tokio::spawn` would panic.
    fn outcome<S: futures::Stream<Item = Item<u32>> + Unpin>(s: S) -> Vec<Item<u32>> {
        futures::executor::block_on(futures::StreamExt::collect::<Vec<_>>(s))
    }
    let src = || Source::from_iter(0..10u32);
    let cases = [
        (
            "buffer",
            outcome(src().buffer(4, OverflowStrategy::Backpressure)),
        ),
        ("async_boundary", outcome(src().async_boundary())),
        ("conflate", outcome(src().conflate(|a, b| a + b))),
        ("batch", outcome(src().batch(4, |x| x, |a, b| a + b))),
    ];
    for (name, got) in cases {
        assert_eq!(got.len(), 1, "{name}: {got:?}");
        match &got[0] {
            Err(e @ StreamError::NoRuntime(what)) => {
                assert_eq!(*what, name);
                assert!(e.to_string().contains("outside a tokio runtime"), "{e}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn pinned_boundary_works_outside_a_runtime() {
    // Polled as a plain stream: `run_with` itself needs a runtime.
    let source = Source::from_iter(0..1000u32).async_boundary_pinned(16, "flowstage-test-no-rt");
    let got: Vec<u32> = futures::executor::block_on(futures::StreamExt::collect::<Vec<_>>(source))
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got, (0..1000u32).collect::<Vec<_>>());
}
