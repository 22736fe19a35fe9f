//! The same guarantees on a multi-threaded runtime, where producers and
//! consumers really run in parallel: nothing lost, nothing duplicated, order
//! kept where it is promised, and no lost wake-ups (a hang fails the test via
//! the outer timeout).

use std::time::Duration;

use flowstage::prelude::*;

const N: u64 = 100_000;

/// Fails instead of hanging if a wake-up is lost.
async fn guarded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("the stream stalled")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_boundaries_keep_order_and_everything() {
    let got = guarded(
        Source::from_iter(0..N)
            .async_boundary_with(16)
            .map(|x| x * 2)
            .async_boundary_with(1)
            .buffer(7, OverflowStrategy::Backpressure)
            .run_with(Sink::collect()),
    )
    .await
    .unwrap();
    assert_eq!(got, (0..N).map(|x| x * 2).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_boundaries_keep_order_and_everything() {
    let got = guarded(
        Source::from_iter(0..N)
            .async_boundary_pinned(16, "flowstage-test-a")
            .map(|x| x * 2)
            .async_boundary_pinned(1, "flowstage-test-b")
            .async_boundary_with(3)
            .run_with(Sink::collect()),
    )
    .await
    .unwrap();
    assert_eq!(got, (0..N).map(|x| x * 2).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balance_across_tasks_delivers_each_element_once() {
    let outs = Source::from_iter(0..N).async_boundary_with(64).balance(4);
    let dones: Vec<_> = outs
        .into_iter()
        .map(|o| o.async_boundary_with(8).run_with(Sink::collect()))
        .collect();
    let mut all = Vec::new();
    for d in dones {
        all.extend(guarded(d).await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (0..N).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_across_tasks_delivers_everything_to_each() {
    let outs = Source::from_iter(0..N / 4).broadcast(3);
    let dones: Vec<_> = outs
        .into_iter()
        .map(|o| {
            o.async_boundary_with(4)
                .run_with(Sink::fold(0u64, |a, x| a + x))
        })
        .collect();
    let expected: u64 = (0..N / 4).sum();
    for d in dones {
        assert_eq!(guarded(d).await.unwrap(), expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_and_unzip_across_tasks() {
    let outs = Source::from_iter(0..N / 4).partition(3, |x| (x % 3) as usize);
    let dones: Vec<_> = outs
        .into_iter()
        .map(|o| o.run_with(Sink::collect()))
        .collect();
    for (k, d) in dones.into_iter().enumerate() {
        let got: Vec<u64> = guarded(d).await.unwrap();
        assert_eq!(
            got,
            (0..N / 4)
                .filter(|x| (x % 3) as usize == k)
                .collect::<Vec<_>>()
        );
    }
    let (l, r) = Source::from_iter((0..N / 4).map(|x| (x, x + 1))).unzip();
    let (dl, dr) = (l.run_with(Sink::collect()), r.run_with(Sink::collect()));
    assert_eq!(guarded(dl).await.unwrap(), (0..N / 4).collect::<Vec<_>>());
    assert_eq!(guarded(dr).await.unwrap(), (1..=N / 4).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_queue_with_concurrent_producers() {
    let (queue, done) = Source::queue::<u64>(8, OverflowStrategy::Backpressure)
        .async_boundary_with(4)
        .to_mat(Sink::collect(), Keep::both)
        .run();
    let producers: Vec<_> = (0..4u64)
        .map(|p| {
            let q = queue.clone();
            tokio::spawn(async move {
                for i in 0..5_000u64 {
                    assert!(q.offer(p * 1_000_000 + i).await.is_enqueued());
                }
            })
        })
        .collect();
    drop(queue);
    for p in producers {
        guarded(p).await.unwrap();
    }
    let got = guarded(done).await.unwrap();
    assert_eq!(got.len(), 20_000);
    for p in 0..4u64 {
        let mine: Vec<u64> = got.iter().copied().filter(|x| x / 1_000_000 == p).collect();
        assert_eq!(
            mine,
            (0..5_000).map(|i| p * 1_000_000 + i).collect::<Vec<_>>(),
            "each producer's order is kept"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflate_and_batch_conserve_elements() {
    let sum = guarded(
        Source::from_iter(0..N)
            .conflate(|a, b| a + b)
            .run_with(Sink::fold(0u64, |a, x| a + x)),
    )
    .await
    .unwrap();
    assert_eq!(sum, (0..N).sum::<u64>());
    let batches = guarded(
        Source::from_iter(0..N)
            .batch(
                100,
                |x| vec![x],
                |mut v, x| {
                    v.push(x);
                    v
                },
            )
            .run_with(Sink::collect()),
    )
    .await
    .unwrap();
    assert!(batches.iter().all(|b| b.len() <= 100));
    assert_eq!(batches.concat(), (0..N).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_async_across_threads_keeps_order() {
    let got = guarded(
        Source::from_iter(0..N / 10)
            .map_async(8, |x| async move {
                tokio::task::yield_now().await;
                x + 1
            })
            .run_with(Sink::collect()),
    )
    .await
    .unwrap();
    assert_eq!(got, (1..=N / 10).collect::<Vec<_>>());
}
