//! Fan-in (merge, merge_preferred, concat, zip, zip_with) and fan-out
//! (broadcast, balance, partition, unzip) junctions, and diamonds.

mod common;

use std::time::Duration;

use common::settle;
use flowstage::prelude::*;
use flowstage::testkit::{TestSink, TestSource};

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

// ---------------------------------------------------------------------------
// Fan-in.

#[tokio::test(start_paused = true)]
async fn merge_emits_everything_and_is_fair() {
    let a: Vec<u32> = (0..50).collect();
    let b: Vec<u32> = (1000..1030).collect();
    let got = Source::from_iter(a.clone())
        .merge(Source::from_iter(b.clone()))
        .run_with(Sink::collect())
        .await
        .unwrap();
    assert_eq!(
        sorted(got.clone()),
        sorted(a.iter().chain(&b).copied().collect())
    );
    // Each side keeps its own order.
    assert_eq!(
        got.iter()
            .copied()
            .filter(|x| *x < 1000)
            .collect::<Vec<_>>(),
        a
    );
    assert_eq!(
        got.iter()
            .copied()
            .filter(|x| *x >= 1000)
            .collect::<Vec<_>>(),
        b
    );
    // Two always-ready sides: neither starves.
    let first_40 = Source::repeat(0u8)
        .merge(Source::repeat(1u8))
        .take(40)
        .run_with(Sink::collect())
        .await
        .unwrap();
    let ones = first_40.iter().filter(|x| **x == 1).count();
    assert!(
        (10..=30).contains(&ones),
        "{ones} of 40 from the second side"
    );
}

#[tokio::test(start_paused = true)]
async fn merge_completes_when_both_complete() {
    let (pa, a) = TestSource::probe::<u32>();
    let (pb, b) = TestSource::probe::<u32>();
    let mut sub = a.merge(b).run_with(TestSink::probe());
    pa.send_next(1);
    pa.send_complete();
    assert_eq!(sub.expect_next().await, 1);
    pb.send_next(2);
    assert_eq!(
        sub.expect_next().await,
        2,
        "still running after one side completed"
    );
    pb.send_complete();
    sub.expect_complete().await;
}

#[tokio::test(start_paused = true)]
async fn merge_propagates_failure_and_cancellation() {
    let (pa, a) = TestSource::probe::<u32>();
    let (_pb, b) = TestSource::probe::<u32>();
    let mut sub = a.merge(b).run_with(TestSink::probe());
    pa.send_error(StreamError::msg("left"));
    assert_eq!(sub.expect_error().await.to_string(), "left");
    sub.expect_complete().await;

    let (pa, a) = TestSource::probe::<u32>();
    let (pb, b) = TestSource::probe::<u32>();
    let mut sub = a.merge_preferred(b).run_with(TestSink::probe());
    pb.send_next(5);
    assert_eq!(sub.expect_next().await, 5);
    sub.cancel();
    pa.expect_cancellation().await;
    pb.expect_cancellation().await;
}

#[tokio::test(start_paused = true)]
async fn merge_preferred_takes_the_preferred_side_first() {
    let got = Source::from_iter(0..5u32)
        .merge_preferred(Source::from_iter(100..105))
        .run_with(Sink::collect())
        .await
        .unwrap();
    let expected: Vec<u32> = (0..5).chain(100..105).collect();
    assert_eq!(got, expected);
    let (pa, a) = TestSource::probe::<u32>();
    let (pb, b) = TestSource::probe::<u32>();
    let mut sub = a.merge_preferred(b).run_with(TestSink::probe());
    pb.send_next(10);
    pb.send_next(11);
    pa.send_next(1);
    assert_eq!(
        sub.expect_next().await,
        1,
        "preferred side wins when both have an element"
    );
    assert_eq!(sub.expect_next().await, 10);
}

/// After the first input fails, the stream is finished: polled again by hand, it neither
/// moves on to the second input nor yields anything.
#[tokio::test]
async fn concat_ends_at_the_first_error() {
    let mut s = Source::failed::<i32>(StreamError::msg("E"))
        .concat(Source::from_iter([7, 8]))
        .into_stream();
    assert!(matches!(
        futures::StreamExt::next(&mut s).await,
        Some(Err(_))
    ));
    assert!(futures::StreamExt::next(&mut s).await.is_none());
    let mut s = Source::from_iter([1])
        .concat(Source::failed::<i32>(StreamError::msg("E")))
        .into_stream();
    assert!(matches!(
        futures::StreamExt::next(&mut s).await,
        Some(Ok(1))
    ));
    assert!(matches!(
        futures::StreamExt::next(&mut s).await,
        Some(Err(_))
    ));
    assert!(futures::StreamExt::next(&mut s).await.is_none());
}

#[tokio::test(start_paused = true)]
async fn concat_runs_second_only_after_first() {
    let (pa, a) = TestSource::probe::<u32>();
    let (pb, b) = TestSource::probe::<u32>();
    let mut sub = a.concat(b).run_with(TestSink::probe());
    pa.send_next(1);
    pb.send_next(100);
    assert_eq!(sub.expect_next().await, 1);
    pa.send_next(2);
    assert_eq!(sub.expect_next().await, 2);
    assert_eq!(
        pb.requests(),
        0,
        "second source not pulled before the first completes"
    );
    pa.send_complete();
    assert_eq!(sub.expect_next().await, 100);
    pb.send_complete();
    sub.expect_complete().await;

    let v = Source::from_iter(0..3)
        .concat(Source::from_iter(3..6))
        .run_with(Sink::collect())
        .await
        .unwrap();
    assert_eq!(v, (0..6).collect::<Vec<_>>());
    let e = Source::failed::<u8>(StreamError::msg("first"))
        .concat(Source::single(1))
        .run_with(Sink::collect())
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "first");
}

#[tokio::test(start_paused = true)]
async fn zip_and_zip_with_pair_up_and_end_with_the_shorter() {
    let a: Vec<u32> = (0..10).collect();
    let b: Vec<char> = "abcdef".chars().collect();
    let got = Source::from_iter(a.clone())
        .zip(Source::from_iter(b.clone()))
        .run_with(Sink::collect())
        .await
        .unwrap();
    assert_eq!(
        got,
        a.iter().copied().zip(b.iter().copied()).collect::<Vec<_>>()
    );
    let sums = Source::from_iter(a.clone())
        .zip_with(Source::from_iter(a.clone().into_iter().rev()), |x, y| {
            x * 100 + y
        })
        .run_with(Sink::collect())
        .await
        .unwrap();
    assert_eq!(
        sums,
        a.iter()
            .zip(a.iter().rev())
            .map(|(x, y)| x * 100 + y)
            .collect::<Vec<_>>()
    );
}

#[tokio::test(start_paused = true)]
async fn zip_waits_for_both_and_propagates_failure_and_cancellation() {
    let (pa, a) = TestSource::probe::<u32>();
    let (pb, b) = TestSource::probe::<u32>();
    let mut sub = a.zip(b).run_with(TestSink::probe());
    pa.send_next(1);
    pa.send_next(2);
    pb.send_next(10);
    assert_eq!(sub.expect_next().await, (1, 10));
    assert_eq!(pa.delivered(), 1, "zip holds at most one element per side");
    pb.send_error(StreamError::msg("right"));
    assert_eq!(sub.expect_error().await.to_string(), "right");

    let (pa, a) = TestSource::probe::<u32>();
    let (pb, b) = TestSource::probe::<u32>();
    let mut sub = a.zip_with(b, |x, y| x + y).run_with(TestSink::probe());
    pa.send_next(1);
    pb.send_next(2);
    assert_eq!(sub.expect_next().await, 3);
    sub.cancel();
    pa.expect_cancellation().await;
    pb.expect_cancellation().await;
}

// ---------------------------------------------------------------------------
// Broadcast.

#[tokio::test(start_paused = true)]
async fn broadcast_gives_every_output_every_element() {
    let v: Vec<u32> = (0..200).collect();
    let outs = Source::from_iter(v.clone()).broadcast(3);
    assert_eq!(outs.len(), 3);
    let dones: Vec<_> = outs
        .into_iter()
        .enumerate()
        .map(|(i, o)| o.map(move |x| x + i as u32).run_with(Sink::collect()))
        .collect();
    for (i, d) in dones.into_iter().enumerate() {
        assert_eq!(
            d.await.unwrap(),
            v.iter().map(|x| x + i as u32).collect::<Vec<_>>()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn broadcast_is_as_fast_as_the_slowest_output() {
    let (publisher, src) = TestSource::probe::<u32>();
    let [a, b] = src.broadcast2();
    let mut sa = a.run_with(TestSink::probe());
    let mut sb = b.run_with(TestSink::probe());
    for x in 1..=3 {
        publisher.send_next(x);
    }
    assert_eq!(sa.expect_next().await, 1);
    sa.expect_no_message(Duration::from_millis(50)).await;
    assert_eq!(
        publisher.delivered(),
        1,
        "the fast output waits for the slow one"
    );
    assert_eq!(sb.expect_next().await, 1);
    assert_eq!(
        sb.expect_next().await,
        2,
        "the slow output may now pull the next element"
    );
    assert_eq!(publisher.delivered(), 2);
    assert_eq!(sa.expect_next().await, 2);
    assert_eq!(sa.expect_next().await, 3);
    assert_eq!(sb.expect_next().await, 3);
    publisher.send_complete();
    sa.expect_complete().await;
    sb.expect_complete().await;
}

#[tokio::test(start_paused = true)]
async fn broadcast_a_dropped_output_does_not_stop_the_others() {
    let (publisher, src) = TestSource::probe::<u32>();
    let mut outs = src.broadcast(3);
    let c = outs.pop().unwrap();
    let b = outs.pop().unwrap();
    let a = outs.pop().unwrap();
    let mut sa = a.run_with(TestSink::probe());
    let mut sb = b.run_with(TestSink::probe());
    drop(c); // never consumed
    publisher.send_next(1);
    assert_eq!(sa.expect_next().await, 1);
    assert_eq!(sb.expect_next().await, 1);
    sb.cancel();
    for x in 2..=5 {
        publisher.send_next(x);
    }
    assert_eq!(sa.expect_next_n(4).await, [2, 3, 4, 5]);
    assert!(!publisher.is_cancelled());
    sa.cancel();
    publisher.expect_cancellation().await;
}

#[tokio::test(start_paused = true)]
async fn broadcast_failure_reaches_every_output() {
    let (publisher, src) = TestSource::probe::<u32>();
    let [a, b] = src.broadcast2();
    let mut sa = a.run_with(TestSink::probe());
    let mut sb = b.run_with(TestSink::probe());
    publisher.send_error(StreamError::msg("bcast"));
    assert_eq!(sa.expect_error().await.to_string(), "bcast");
    assert_eq!(sb.expect_error().await.to_string(), "bcast");
    sa.expect_complete().await;
    sb.expect_complete().await;
}

// ---------------------------------------------------------------------------
// Balance.

#[tokio::test(start_paused = true)]
async fn balance_goes_to_whichever_output_has_demand() {
    let (publisher, src) = TestSource::probe::<u32>();
    let mut outs = src.balance(2);
    let b = outs.pop().unwrap();
    let a = outs.pop().unwrap();
    let mut sa = a.run_with(TestSink::probe());
    let mut sb = b.run_with(TestSink::probe());
    for x in 0..5 {
        publisher.send_next(x);
    }
    // Only `a` asks: it gets everything, `b` is not waited for.
    assert_eq!(sa.expect_next_n(3).await, [0, 1, 2]);
    assert_eq!(sb.expect_next().await, 3);
    assert_eq!(sa.expect_next().await, 4);
    publisher.send_complete();
    sa.expect_complete().await;
    sb.expect_complete().await;
}

#[tokio::test(start_paused = true)]
async fn balance_delivers_each_element_exactly_once() {
    let v: Vec<u32> = (0..1000).collect();
    let outs = Source::from_iter(v.clone()).balance(4);
    let dones: Vec<_> = outs
        .into_iter()
        .map(|o| o.run_with(Sink::collect()))
        .collect();
    let mut all = Vec::new();
    for d in dones {
        all.extend(d.await.unwrap());
    }
    assert_eq!(sorted(all), v);
}

#[tokio::test(start_paused = true)]
async fn balance_failure_and_cancellation() {
    let (publisher, src) = TestSource::probe::<u32>();
    let mut outs = src.balance(2);
    let b = outs.pop().unwrap();
    let a = outs.pop().unwrap();
    let mut sa = a.run_with(TestSink::probe());
    let mut sb = b.run_with(TestSink::probe());
    publisher.send_next(1);
    assert_eq!(sa.expect_next().await, 1);
    sa.cancel();
    publisher.send_next(2);
    assert_eq!(sb.expect_next().await, 2, "the remaining output goes on");
    publisher.send_error(StreamError::msg("bal"));
    assert_eq!(sb.expect_error().await.to_string(), "bal");
    sb.cancel();
    publisher.expect_cancellation().await;
}

// ---------------------------------------------------------------------------
// Partition.

#[tokio::test(start_paused = true)]
async fn partition_routes_by_index() {
    let v: Vec<u32> = (0..300).collect();
    let outs = Source::from_iter(v.clone()).partition(3, |x| (*x % 3) as usize);
    let dones: Vec<_> = outs
        .into_iter()
        .map(|o| o.run_with(Sink::collect()))
        .collect();
    for (k, d) in dones.into_iter().enumerate() {
        assert_eq!(
            d.await.unwrap(),
            v.iter()
                .copied()
                .filter(|x| *x as usize % 3 == k)
                .collect::<Vec<_>>()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn partition_backpressures_on_the_chosen_output() {
    let (publisher, src) = TestSource::probe::<u32>();
    let mut outs = src.partition(2, |x| (*x % 2) as usize);
    let odd = outs.pop().unwrap();
    let even = outs.pop().unwrap();
    let mut se = even.run_with(TestSink::probe());
    let mut so = odd.run_with(TestSink::probe());
    for x in [0, 1, 2] {
        publisher.send_next(x);
    }
    assert_eq!(se.expect_next().await, 0);
    // 1 is for the odd output, which is not asking: even waits behind it.
    se.expect_no_message(Duration::from_millis(50)).await;
    assert_eq!(publisher.delivered(), 2);
    assert_eq!(so.expect_next().await, 1);
    assert_eq!(se.expect_next().await, 2);
}

#[tokio::test(start_paused = true)]
async fn partition_out_of_range_fails_every_output() {
    let outs = Source::from_iter([0u32, 1, 5, 1]).partition(2, |x| *x as usize);
    let dones: Vec<_> = outs
        .into_iter()
        .map(|o| o.run_with(Sink::collect()))
        .collect();
    for d in dones {
        match d.await {
            Err(StreamError::PartitionOutOfBounds { index, outputs }) => {
                assert_eq!((index, outputs), (5, 2));
            }
            other => panic!("expected PartitionOutOfBounds, got {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn partition_with_a_cancelled_output_keeps_the_others_going() {
    let v: Vec<u32> = (0..20).collect();
    let mut outs = Source::from_iter(v.clone()).partition(2, |x| (*x % 2) as usize);
    drop(outs.pop());
    let even = outs.pop().unwrap().run_with(Sink::collect()).await.unwrap();
    assert_eq!(
        even,
        v.iter().copied().filter(|x| x % 2 == 0).collect::<Vec<_>>()
    );
}

#[tokio::test(start_paused = true)]
async fn partition_cancels_upstream_when_all_outputs_cancel() {
    let (publisher, src) = TestSource::probe::<u32>();
    let outs = src.partition(2, |x| (*x % 2) as usize);
    let mut subs: Vec<_> = outs
        .into_iter()
        .map(|o| o.run_with(TestSink::probe()))
        .collect();
    publisher.send_next(0);
    assert_eq!(subs[0].expect_next().await, 0);
    drop(subs);
    publisher.expect_cancellation().await;
}

// ---------------------------------------------------------------------------
// Unzip.

#[tokio::test(start_paused = true)]
async fn unzip_splits_pairs() {
    let pairs: Vec<(u32, String)> = (0..50).map(|i| (i, format!("#{i}"))).collect();
    let (l, r) = Source::from_iter(pairs.clone()).unzip();
    let dl = l.run_with(Sink::collect());
    let dr = r.run_with(Sink::collect());
    assert_eq!(
        dl.await.unwrap(),
        pairs.iter().map(|p| p.0).collect::<Vec<_>>()
    );
    assert_eq!(
        dr.await.unwrap(),
        pairs.iter().map(|p| p.1.clone()).collect::<Vec<_>>()
    );
}

#[tokio::test(start_paused = true)]
async fn unzip_failure_and_a_dropped_side() {
    let (publisher, src) = TestSource::probe::<(u32, u32)>();
    let (l, r) = src.unzip();
    let mut sl = l.run_with(TestSink::probe());
    drop(r);
    publisher.send_next((1, 2));
    publisher.send_next((3, 4));
    assert_eq!(
        sl.expect_next_n(2).await,
        [1, 3],
        "a dropped right side does not block the left"
    );
    publisher.send_error(StreamError::msg("uz"));
    assert_eq!(sl.expect_error().await.to_string(), "uz");
    sl.cancel();
    publisher.expect_cancellation().await;
}

// ---------------------------------------------------------------------------
// Diamonds.

#[tokio::test(start_paused = true)]
async fn diamond_broadcast_then_zip() {
    let v: Vec<i64> = (1..=100).collect();
    let [a, b] = Source::from_iter(v.clone()).broadcast2();
    let got = a
        .map(|x| x * 2)
        .zip_with(b.filter_map(|x| Some(x - 1)), |p, q| p + q)
        .run_with(Sink::collect())
        .await
        .unwrap();
    assert_eq!(got, v.iter().map(|x| x * 2 + x - 1).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn diamond_broadcast_then_merge_with_async_branch() {
    let v: Vec<u32> = (0..500).collect();
    let [a, b] = Source::from_iter(v.clone()).broadcast2();
    let got = a
        .map(|x| x * 2)
        .async_boundary_with(8)
        .merge(b.map(|x| x * 2 + 1))
        .run_with(Sink::collect())
        .await
        .unwrap();
    assert_eq!(sorted(got), (0..1000).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn diamond_balance_then_merge() {
    let v: Vec<u32> = (0..300).collect();
    let mut outs = Source::from_iter(v.clone()).balance(2);
    let b = outs.pop().unwrap();
    let a = outs.pop().unwrap();
    let got = a
        .map(|x| x + 1)
        .merge(b.map(|x| x + 1))
        .run_with(Sink::collect())
        .await
        .unwrap();
    assert_eq!(sorted(got), v.iter().map(|x| x + 1).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn diamond_failure_and_cancellation() {
    let (publisher, src) = TestSource::probe::<u32>();
    let [a, b] = src.broadcast2();
    let mut sub = a.zip(b.map(|x| x * 10)).run_with(TestSink::probe());
    publisher.send_next(1);
    assert_eq!(sub.expect_next().await, (1, 10));
    publisher.send_error(StreamError::msg("d"));
    assert_eq!(sub.expect_error().await.to_string(), "d");

    let (publisher, src) = TestSource::probe::<u32>();
    let [a, b] = src.broadcast2();
    let mut sub = a.merge(b).run_with(TestSink::probe());
    publisher.send_next(1);
    assert_eq!(sub.expect_next().await, 1);
    assert_eq!(sub.expect_next().await, 1);
    settle().await;
    sub.cancel();
    publisher.expect_cancellation().await;
}

#[tokio::test(start_paused = true)]
async fn concat_cancellation_reaches_both_sources() {
    let (pa, a) = TestSource::probe::<u32>();
    let (pb, b) = TestSource::probe::<u32>();
    let mut sub = a.concat(b).run_with(TestSink::probe());
    pa.send_next(1);
    assert_eq!(sub.expect_next().await, 1);
    sub.cancel();
    pa.expect_cancellation().await;
    pb.expect_cancellation().await;
    assert_eq!(pb.requests(), 0);
}

#[tokio::test(start_paused = true)]
async fn broadcast_with_a_fast_sink_is_held_back_by_a_slow_one() {
    let (counter, src) = TestSource::counting(0..1000u32);
    let [fast, slow] = src.broadcast2();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let s = seen.clone();
    let fast_done = fast.run_with(Sink::foreach(move |_| {
        s.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }));
    let mut slow = slow.run_with(TestSink::probe());
    for i in 0..50u32 {
        assert_eq!(slow.expect_next().await, i);
        settle().await;
        let consumed = u64::from(i) + 1;
        // Nothing is pulled before the slow output has taken the previous element.
        assert!(
            counter.get() <= consumed + 1,
            "pulled {} with the slow output at {consumed}",
            counter.get()
        );
        assert!(seen.load(std::sync::atomic::Ordering::SeqCst) <= consumed + 1);
    }
    slow.cancel();
    fast_done.await.unwrap();
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        1000,
        "the fast output gets everything once the slow one is gone"
    );
}

/// A waker that counts its wake-ups.
struct Counting(std::sync::atomic::AtomicUsize);

impl std::task::Wake for Counting {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Polls `outlets[0]` then `outlets[1]` once each (both wait for the
/// upstream), sends one element meant for output 0 (`0`), and answers
/// whether output 0's task was woken.
fn first_output_woken<S>(
    outlets: &mut [Source<S, NotUsed>],
    tx: &futures::channel::mpsc::UnboundedSender<u32>,
) -> bool
where
    S: futures::Stream + Unpin,
{
    use futures::StreamExt as _;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Waker};
    let counts: Vec<Arc<Counting>> = (0..2)
        .map(|_| Arc::new(Counting(AtomicUsize::new(0))))
        .collect();
    for (outlet, count) in outlets.iter_mut().zip(&counts) {
        let waker = Waker::from(count.clone());
        assert!(outlet
            .poll_next_unpin(&mut Context::from_waker(&waker))
            .is_pending());
    }
    tx.unbounded_send(0).expect("the upstream is open");
    counts[0].0.load(Ordering::SeqCst) > 0
}

/// Every output that waits is woken when the upstream has an element, not
/// only the one that polled the upstream last (an upstream keeps one waker):
/// an output whose task is busy elsewhere, e.g. a sink waiting on its
/// in-flight bound, does not hold up the others.
#[test]
fn every_waiting_output_is_woken_by_the_upstream() {
    let upstream = || {
        let (tx, rx) = futures::channel::mpsc::unbounded::<u32>();
        (tx, Source::from_stream(rx))
    };
    let (tx, src) = upstream();
    let mut outs = src.partition(2, |x| (*x % 2) as usize);
    assert!(first_output_woken(&mut outs, &tx), "partition");
    let (tx, src) = upstream();
    let mut outs = src.balance(2);
    assert!(first_output_woken(&mut outs, &tx), "balance");
    let (tx, src) = upstream();
    let mut outs = src.broadcast(2);
    assert!(first_output_woken(&mut outs, &tx), "broadcast");
}

/// An output that takes an element is not woken for it afterwards: the
/// junction's wake-ups (the others' turn) reach only outputs that wait, not
/// the task that is already running.
#[test]
fn an_output_that_takes_an_element_is_not_woken_again() {
    use futures::StreamExt as _;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};
    let mut outs = Source::from_iter(0..4u32).balance(2);
    let count = Arc::new(Counting(AtomicUsize::new(0)));
    let waker = Waker::from(count.clone());
    let first = outs[0].poll_next_unpin(&mut Context::from_waker(&waker));
    assert!(matches!(first, Poll::Ready(Some(Ok(0)))), "{first:?}");
    assert_eq!(count.0.load(Ordering::SeqCst), 0);
}
