//! Sources and the linear operators of `FlowOps`, on `Source` and on `Flow`:
//! results against plain iterators, errors downstream, cancellation upstream.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowstage::prelude::*;
use flowstage::testkit::{TestSink, TestSource};

fn input() -> Vec<i64> {
    (-20..=30).collect()
}

async fn collect<S, T>(src: Source<S>) -> Vec<T>
where
    S: futures::Stream<Item = Item<T>> + Send + 'static,
    T: Send + 'static,
{
    src.run_with(Sink::collect()).await.unwrap()
}

// ---------------------------------------------------------------------------
// Sources.

#[tokio::test]
async fn source_constructors() {
    assert_eq!(collect(Source::from_iter(input())).await, input());
    assert_eq!(
        collect(Source::from_stream(futures::stream::iter(input()))).await,
        input()
    );
    assert_eq!(collect(Source::single("x")).await, ["x"]);
    assert_eq!(collect(Source::repeat(7u8).take(4)).await, vec![7u8; 4]);
    assert!(collect(Source::empty::<u8>()).await.is_empty());
    assert_eq!(collect(Source::from_future(async { 41 + 1 })).await, [42]);
    let unfolded = collect(Source::unfold(1u64, |s| (s < 1000).then(|| (s * 3, s)))).await;
    let expected: Vec<u64> = std::iter::successors(Some(1u64), |s| Some(s * 3))
        .take_while(|&s| s < 1000)
        .collect();
    assert_eq!(unfolded, expected);
    let unfolded_async = collect(Source::unfold_async(0u32, |s| async move {
        (s < 5).then_some((s * s, s + 1))
    }))
    .await;
    assert_eq!(unfolded_async, (0..5).map(|s| s * s).collect::<Vec<_>>());
    let generated = collect(Source::from_stream(flowstage::async_stream::stream! {
        for i in 0..4u32 {
            tokio::task::yield_now().await;
            yield i + 100;
        }
    }))
    .await;
    assert_eq!(generated, (100..104).collect::<Vec<_>>());
}

#[tokio::test]
async fn failed_and_try_stream_sources_fail() {
    let e = Source::failed::<u8>(StreamError::msg("nope"))
        .run_with(Sink::ignore())
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "nope");
    let items: Vec<Result<u32, std::io::Error>> =
        vec![Ok(1), Ok(2), Err(std::io::Error::other("io")), Ok(3)];
    let mut sub = Source::from_try_stream(futures::stream::iter(items)).run_with(TestSink::probe());
    assert_eq!(sub.expect_next_n(2).await, [1, 2]);
    let e = sub.expect_error().await;
    assert_eq!(
        e.downcast_ref::<std::io::Error>().map(|e| e.to_string()),
        Some("io".to_string())
    );
    sub.expect_complete().await;
}

#[tokio::test(start_paused = true)]
async fn never_source_stays_silent_until_cancelled() {
    let mut sub = Source::never::<u8>().run_with(TestSink::probe());
    sub.expect_no_message(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn merge_all_merges_every_source() {
    let sources = (0..4)
        .map(|k| Source::from_iter((0..10).map(move |i| k * 100 + i)))
        .collect();
    let mut got = collect(Source::merge_all(sources)).await;
    got.sort();
    let mut expected: Vec<i32> = (0..4)
        .flat_map(|k| (0..10).map(move |i| k * 100 + i))
        .collect();
    expected.sort();
    assert_eq!(got, expected);
}

// ---------------------------------------------------------------------------
// Element-wise operators.

#[tokio::test]
async fn map_filter_filter_map() {
    let v = input();
    assert_eq!(
        collect(Source::from_iter(v.clone()).map(|x| x * x - 1)).await,
        v.iter().map(|x| x * x - 1).collect::<Vec<_>>()
    );
    assert_eq!(
        collect(Source::from_iter(v.clone()).filter(|x| x % 3 == 0)).await,
        v.iter().copied().filter(|x| x % 3 == 0).collect::<Vec<_>>()
    );
    let f = |x: i64| (x > 0).then(|| x.to_string());
    assert_eq!(
        collect(Source::from_iter(v.clone()).filter_map(f)).await,
        v.iter().copied().filter_map(f).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn map_concat_flattens() {
    let v: Vec<usize> = (0..8).collect();
    let got = collect(Source::from_iter(v.clone()).map_concat(|x| vec![x; x % 3])).await;
    assert_eq!(
        got,
        v.iter().flat_map(|&x| vec![x; x % 3]).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn scan_fold_reduce() {
    let v = input();
    let mut acc = 0;
    let expected: Vec<i64> = std::iter::once(0)
        .chain(v.iter().map(|x| {
            acc += x;
            acc
        }))
        .collect();
    assert_eq!(
        collect(Source::from_iter(v.clone()).scan(0, |a, x| a + x)).await,
        expected
    );
    let folded =
        collect(Source::from_iter(v.clone()).fold(String::new(), |s, x| s + &x.to_string())).await;
    assert_eq!(
        folded,
        [v.iter().map(|x| x.to_string()).collect::<String>()]
    );
    assert_eq!(
        collect(Source::from_iter(v.clone()).reduce(i64::max)).await,
        [*v.iter().max().unwrap()]
    );
    // fold of nothing is the zero; reduce of nothing fails.
    assert_eq!(
        collect(Source::empty::<i64>().fold(5, |a, x| a + x)).await,
        [5]
    );
    let e = Source::empty::<i64>()
        .reduce(|a, b| a + b)
        .run_with(Sink::ignore())
        .await
        .unwrap_err();
    assert!(matches!(e, StreamError::Empty(_)), "{e}");
}

#[tokio::test]
async fn take_drop_and_whiles() {
    let v = input();
    for n in [0u64, 1, 5, 100] {
        assert_eq!(
            collect(Source::from_iter(v.clone()).take(n)).await,
            v.iter().copied().take(n as usize).collect::<Vec<_>>()
        );
        assert_eq!(
            collect(Source::from_iter(v.clone()).drop(n)).await,
            v.iter().copied().skip(n as usize).collect::<Vec<_>>()
        );
    }
    let p = |x: &i64| *x < 3;
    assert_eq!(
        collect(Source::from_iter(v.clone()).take_while(p)).await,
        v.iter().copied().take_while(p).collect::<Vec<_>>()
    );
    assert_eq!(
        collect(Source::from_iter(v.clone()).drop_while(p)).await,
        v.iter().copied().skip_while(p).collect::<Vec<_>>()
    );
    let mut inclusive: Vec<i64> = v.iter().copied().take_while(p).collect();
    inclusive.push(*v.iter().find(|x| !p(x)).unwrap());
    assert_eq!(
        collect(Source::from_iter(v.clone()).take_while_inclusive(p)).await,
        inclusive
    );
}

#[tokio::test]
async fn take_cancels_upstream_when_done() {
    let (publisher, src) = TestSource::probe::<u32>();
    let done = src.take(2).run_with(Sink::collect());
    publisher.send_next(1);
    publisher.send_next(2);
    publisher.expect_cancellation().await;
    assert_eq!(done.await.unwrap(), [1, 2]);
    assert_eq!(
        publisher.delivered(),
        2,
        "take(2) must not pull a third element"
    );
}

#[tokio::test]
async fn grouped_and_sliding() {
    let v: Vec<u32> = (1..=23).collect();
    for n in [1, 4, 23, 30] {
        let got = collect(Source::from_iter(v.clone()).grouped(n)).await;
        assert_eq!(got, v.chunks(n).map(<[u32]>::to_vec).collect::<Vec<_>>());
    }
    // Reference for sliding: full windows at multiples of `step`, plus a final
    // partial window if elements are left that no full window covered.
    fn reference(v: &[u32], n: usize, step: usize) -> Vec<Vec<u32>> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut covered = 0;
        while start + n <= v.len() {
            out.push(v[start..start + n].to_vec());
            covered = start + n;
            start += step;
        }
        if start < v.len() && covered < v.len() {
            out.push(v[start..].to_vec());
        }
        out
    }
    for (len, n, step) in [
        (5, 3, 2),
        (7, 2, 3),
        (6, 2, 3),
        (2, 3, 1),
        (10, 3, 1),
        (9, 3, 3),
        (0, 2, 1),
    ] {
        let v: Vec<u32> = (1..=len).collect();
        let got = collect(Source::from_iter(v.clone()).sliding(n, step)).await;
        assert_eq!(
            got,
            reference(&v, n, step),
            "sliding({n}, {step}) over {len}"
        );
    }
}

#[tokio::test]
async fn zip_with_index_inspect_log() {
    let v = input();
    let got = collect(Source::from_iter(v.clone()).zip_with_index()).await;
    assert_eq!(got, v.iter().copied().zip(0u64..).collect::<Vec<_>>());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let passed = collect(
        Source::from_iter(v.clone())
            .inspect(move |x| s.lock().unwrap().push(*x))
            .log("test"),
    )
    .await;
    assert_eq!(passed, v);
    assert_eq!(*seen.lock().unwrap(), v);
}

#[tokio::test]
async fn recover_turns_failure_into_last_element_or_passes_it_on() {
    let src = || {
        Source::from_iter([1, 2])
            .concat(Source::failed(StreamError::msg("boom")))
            .concat(Source::single(99))
    };
    assert_eq!(
        collect(src().recover(|e| (e.to_string() == "boom").then_some(-1))).await,
        [1, 2, -1]
    );
    let e = src()
        .recover(|_| None)
        .run_with(Sink::collect())
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "boom");
}

#[tokio::test]
async fn try_map_fails_the_stream() {
    let e = Source::from_iter(["1", "2", "x", "4"])
        .try_map(|s| s.parse::<u8>())
        .run_with(Sink::collect())
        .await
        .unwrap_err();
    assert!(e.downcast_ref::<std::num::ParseIntError>().is_some(), "{e}");
}

// ---------------------------------------------------------------------------
// Async mapping.

#[tokio::test(start_paused = true)]
async fn map_async_keeps_order_and_unordered_does_not_lose_any() {
    let v: Vec<u64> = (0..40).collect();
    // Later elements finish first.
    let delay = |x: u64| Duration::from_millis(100 - 2 * x);
    let ordered = collect(
        Source::from_iter(v.clone()).map_async(8, move |x| async move {
            tokio::time::sleep(delay(x)).await;
            x * 2
        }),
    )
    .await;
    assert_eq!(ordered, v.iter().map(|x| x * 2).collect::<Vec<_>>());
    let mut unordered = collect(Source::from_iter(v.clone()).map_async_unordered(
        8,
        move |x| async move {
            tokio::time::sleep(delay(x)).await;
            x * 2
        },
    ))
    .await;
    assert_ne!(unordered, ordered, "unordered emits as futures complete");
    unordered.sort();
    assert_eq!(unordered, ordered);
}

#[tokio::test(start_paused = true)]
async fn map_async_respects_parallelism() {
    let in_flight = Arc::new(AtomicU64::new(0));
    let max_seen = Arc::new(AtomicU64::new(0));
    let (f, m) = (in_flight.clone(), max_seen.clone());
    let out = collect(
        Source::from_iter(0..50u64).map_async_unordered(3, move |x| {
            let (f, m) = (f.clone(), m.clone());
            async move {
                let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(x % 7)).await;
                f.fetch_sub(1, Ordering::SeqCst);
                x
            }
        }),
    )
    .await;
    assert_eq!(out.len(), 50);
    assert_eq!(max_seen.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn try_map_async_and_upstream_errors_propagate() {
    let e = Source::from_iter(1..=5)
        .try_map_async(2, |x| async move {
            if x == 3 {
                Err("three")
            } else {
                Ok(x)
            }
        })
        .run_with(Sink::collect())
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "three");
    // An upstream failure arrives after the elements before it.
    let mut sub = Source::from_iter([1, 2])
        .concat(Source::failed(StreamError::msg("up")))
        .map_async(4, |x| async move { x * 10 })
        .run_with(TestSink::probe());
    assert_eq!(sub.expect_next_n(2).await, [10, 20]);
    assert_eq!(sub.expect_error().await.to_string(), "up");
}

// ---------------------------------------------------------------------------
// Errors and cancellation through every kind of linear operator.

/// Applies a chain of most operators (each a no-op on the values used).
fn chain(src: flowstage::BoxSource<u32>) -> flowstage::BoxSource<u32> {
    src.map(|x| x)
        .filter(|_| true)
        .filter_map(Some)
        .map_concat(|x| [x])
        .take_while(|_| true)
        .drop_while(|_| false)
        .drop(0)
        .take(u64::MAX)
        .zip_with_index()
        .map(|(x, _)| x)
        .inspect(|_| {})
        .map_async(2, |x| async move { x })
        .map_async_unordered(1, |x| async move { x })
        .try_map(Ok::<u32, std::io::Error>)
        .grouped(1)
        .map_concat(|v| v)
        .sliding(1, 1)
        .map_concat(|v| v)
        .boxed()
}

#[tokio::test]
async fn failure_travels_through_the_operator_chain() {
    let (publisher, src) = TestSource::probe::<u32>();
    let mut sub = chain(src.boxed()).run_with(TestSink::probe());
    publisher.send_next(5);
    assert_eq!(sub.expect_next().await, 5);
    publisher.send_error(StreamError::msg("deep"));
    assert_eq!(sub.expect_error().await.to_string(), "deep");
}

#[tokio::test]
async fn cancellation_travels_through_the_operator_chain() {
    let (publisher, src) = TestSource::probe::<u32>();
    let mut sub = chain(src.boxed()).run_with(TestSink::probe());
    publisher.send_next(5);
    assert_eq!(sub.expect_next().await, 5);
    assert!(!publisher.is_cancelled());
    sub.cancel();
    publisher.expect_cancellation().await;
}

#[tokio::test]
async fn operators_pull_only_on_demand() {
    let (publisher, src) = TestSource::probe::<u32>();
    let mut sub = chain(src.boxed()).run_with(TestSink::probe());
    publisher.send_next(1);
    assert_eq!(sub.expect_next().await, 1);
    // map_async(2) may ask for one element ahead of the window; nothing more.
    assert!(
        publisher.requests() <= 3,
        "{} requests",
        publisher.requests()
    );
    assert_eq!(publisher.delivered(), 1);
}

// ---------------------------------------------------------------------------
// Flows.

#[tokio::test]
async fn operators_on_flows_compose() {
    let parse: Flow<&str, i64> = Flow::new().filter_map(|s: &str| s.parse().ok());
    let stats = Flow::new().scan(0i64, |a, x: i64| a + x).drop(1).grouped(2);
    let words = ["1", "x", "2", "3", "y", "4", "5"];
    let got = collect(Source::from_iter(words).via(parse.via(stats))).await;
    let nums: Vec<i64> = words.iter().filter_map(|s| s.parse().ok()).collect();
    let sums: Vec<i64> = nums
        .iter()
        .scan(0, |a, x| {
            *a += x;
            Some(*a)
        })
        .collect();
    assert_eq!(got, sums.chunks(2).map(<[i64]>::to_vec).collect::<Vec<_>>());
}

#[tokio::test]
async fn flow_from_source_fn_and_from_stream_fn() {
    let evens = Flow::from_source_fn(|s: flowstage::BoxSource<u32>| s.filter(|x| x % 2 == 0));
    let doubled =
        Flow::from_stream_fn(|s| futures::StreamExt::map(s, |r: Item<u32>| r.map(|x| x * 2)));
    let got = collect(Source::from_iter(0..10u32).via(evens.via(doubled))).await;
    assert_eq!(
        got,
        (0..10)
            .filter(|x| x % 2 == 0)
            .map(|x| x * 2)
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn flow_to_sink_makes_a_sink() {
    let sink = Flow::new()
        .map(|x: u32| x + 1)
        .to(Sink::fold(0u32, |a, x| a + x));
    let sum = Source::from_iter(0..10u32).run_with(sink).await.unwrap();
    assert_eq!(sum, (1..=10).sum::<u32>());
}

#[tokio::test]
async fn failure_and_cancellation_through_a_flow() {
    let (publisher, src) = TestSource::probe::<u32>();
    let mut sub = src
        .via(
            Flow::new()
                .map(|x: u32| x * 2)
                .buffer(2, OverflowStrategy::Backpressure),
        )
        .run_with(TestSink::probe());
    publisher.send_next(3);
    assert_eq!(sub.expect_next().await, 6);
    publisher.send_error(StreamError::msg("f"));
    assert_eq!(sub.expect_error().await.to_string(), "f");

    let (publisher, src) = TestSource::probe::<u32>();
    let mut sub = src
        .via(Flow::new().map(|x: u32| x * 2))
        .run_with(TestSink::probe());
    publisher.send_next(1);
    assert_eq!(sub.expect_next().await, 2);
    sub.cancel();
    publisher.expect_cancellation().await;
}

/// `take` and `take_while` cancel their upstream as soon as they are done,
/// not when the whole graph ends.
#[tokio::test(start_paused = true)]
async fn take_and_take_while_cancel_upstream_when_done() {
    use flowstage::testkit::{TestSink, TestSource};

    let (publisher, source) = TestSource::probe::<u32>();
    let (other_pub, other) = TestSource::probe::<u32>();
    let mut sub = source.take(1).merge(other).run_with(TestSink::probe());
    publisher.send_next(1);
    assert_eq!(sub.expect_next().await, 1);
    publisher.expect_cancellation().await;
    assert!(
        !other_pub.is_cancelled(),
        "the other side of the merge keeps running"
    );

    let (publisher, source) = TestSource::probe::<u32>();
    let (_other_pub, other) = TestSource::probe::<u32>();
    let mut sub = source
        .take_while(|x| *x < 5)
        .merge(other)
        .run_with(TestSink::probe());
    publisher.send_next(1);
    publisher.send_next(7);
    assert_eq!(sub.expect_next().await, 1);
    // The next demand sees 7, ends take_while, and must cancel its upstream
    // while the merge goes on waiting for the other side.
    sub.expect_no_message(std::time::Duration::from_millis(10))
        .await;
    publisher.expect_cancellation().await;
}
