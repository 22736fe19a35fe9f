//! Test probes, as in Akka's stream testkit: a [`TestPublisher`] you push
//! elements into (and that tells you about demand), and a [`TestSubscriber`]
//! you pull from with expectations.
//!
//! The `expect_*` methods panic with a clear message when the expectation
//! fails — they are test assertions. They wait at most a default of three
//! seconds for an element, so a broken stream fails a test instead of
//! hanging it; that limit is a guard, not a timing assertion.
//!
//! ```
//! use flowstage::prelude::*;
//! use flowstage::testkit::{TestSink, TestSource};
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let (publisher, source) = TestSource::probe::<u32>();
//! let mut sub = source.map(|x| x + 1).run_with(TestSink::probe());
//! let next = tokio::spawn(async move { sub.expect_next().await; sub });
//! publisher.expect_request().await;      // the map asked for an element
//! publisher.send_next(41);
//! let mut sub = next.await.unwrap();
//! publisher.send_complete();
//! sub.expect_complete().await;
//! assert_eq!(publisher.delivered(), 1);
//! # }
//! ```

use std::collections::VecDeque;
use std::fmt::Debug;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::Notify;

use crate::error::{Item, StreamError};
use crate::mat::NotUsed;
use crate::sink::{Sink, SinkStage};
use crate::source::Source;

/// How long an expectation waits before it fails the test.
pub const DEFAULT_EXPECT_WAIT: Duration = Duration::from_secs(3);

struct PubState<T> {
    queue: VecDeque<Item<T>>,
    complete: bool,
    demand: bool,
    requests: u64,
    delivered: u64,
    cancelled: bool,
    waker: Option<Waker>,
}

struct PubShared<T> {
    state: Mutex<PubState<T>>,
    changed: Notify,
}

impl<T> PubShared<T> {
    fn lock(&self) -> MutexGuard<'_, PubState<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Factory for test sources.
#[derive(Debug, Clone, Copy)]
pub struct TestSource;

impl TestSource {
    /// A source driven by the returned [`TestPublisher`].
    pub fn probe<T>() -> (TestPublisher<T>, Source<ProbeStream<T>, NotUsed>) {
        let shared = Arc::new(PubShared {
            state: Mutex::new(PubState {
                queue: VecDeque::new(),
                complete: false,
                demand: false,
                requests: 0,
                delivered: 0,
                cancelled: false,
                waker: None,
            }),
            changed: Notify::new(),
        });
        (
            TestPublisher {
                shared: shared.clone(),
            },
            Source::from_items(ProbeStream { shared }),
        )
    }

    /// The elements of `iter`, counting how many were pulled.
    pub fn counting<I>(iter: I) -> (PullCounter, Source<CountingStream<I::IntoIter>, NotUsed>)
    where
        I: IntoIterator,
    {
        let counter = PullCounter(Arc::new(AtomicU64::new(0)));
        (
            counter.clone(),
            Source::from_items(CountingStream {
                iter: iter.into_iter(),
                counter,
            }),
        )
    }
}

/// Counts the elements a [`TestSource::counting`] source handed downstream.
#[derive(Debug, Clone)]
pub struct PullCounter(Arc<AtomicU64>);

impl PullCounter {
    /// Elements pulled so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The stream of [`TestSource::counting`].
#[derive(Debug)]
pub struct CountingStream<I> {
    iter: I,
    counter: PullCounter,
}

impl<I> Unpin for CountingStream<I> {}

impl<I: Iterator> Stream for CountingStream<I> {
    type Item = Item<I::Item>;
    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.iter.next();
        if next.is_some() {
            self.counter.0.fetch_add(1, Ordering::SeqCst);
        }
        Poll::Ready(next.map(Ok))
    }
}

/// The stream of [`TestSource::probe`].
pub struct ProbeStream<T> {
    shared: Arc<PubShared<T>>,
}

impl<T> Stream for ProbeStream<T> {
    type Item = Item<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<T>>> {
        let mut st = self.shared.lock();
        if let Some(x) = st.queue.pop_front() {
            st.demand = false;
            st.delivered += 1;
            return Poll::Ready(Some(x));
        }
        if st.complete {
            return Poll::Ready(None);
        }
        if !st.demand {
            st.demand = true;
            st.requests += 1;
            drop(st);
            self.shared.changed.notify_waiters();
            st = self.shared.lock();
        }
        st.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<T> Drop for ProbeStream<T> {
    fn drop(&mut self) {
        self.shared.lock().cancelled = true;
        self.shared.changed.notify_waiters();
    }
}

/// Pushes elements into a [`TestSource::probe`] and observes its demand.
pub struct TestPublisher<T> {
    shared: Arc<PubShared<T>>,
}

impl<T> TestPublisher<T> {
    fn push(&self, item: Option<Item<T>>) {
        let mut st = self.shared.lock();
        match item {
            Some(x) => st.queue.push_back(x),
            None => st.complete = true,
        }
        if let Some(w) = st.waker.take() {
            w.wake();
        }
    }

    /// Queues an element (delivered when downstream asks).
    pub fn send_next(&self, x: T) {
        self.push(Some(Ok(x)));
    }

    /// Queues a failure; the source ends after it (failure is terminal).
    pub fn send_error(&self, e: StreamError) {
        self.push(Some(Err(e)));
        self.push(None);
    }

    /// Completes the source after the queued elements.
    pub fn send_complete(&self) {
        self.push(None);
    }

    /// How many times downstream has asked for an element.
    pub fn requests(&self) -> u64 {
        self.shared.lock().requests
    }

    /// How many elements were handed downstream.
    pub fn delivered(&self) -> u64 {
        self.shared.lock().delivered
    }

    /// Whether downstream is waiting for an element now.
    pub fn has_demand(&self) -> bool {
        self.shared.lock().demand
    }

    /// Whether downstream cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.shared.lock().cancelled
    }

    async fn wait_for(&self, what: &str, cond: impl Fn(&PubState<T>) -> bool) {
        let wait = async {
            loop {
                let notified = self.shared.changed.notified();
                let mut notified = std::pin::pin!(notified);
                notified.as_mut().enable();
                if cond(&self.shared.lock()) {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(DEFAULT_EXPECT_WAIT, wait)
            .await
            .is_err()
        {
            panic!("TestPublisher: expected {what} within {DEFAULT_EXPECT_WAIT:?}");
        }
    }

    /// Waits until downstream asks for an element; returns the total number of requests.
    pub async fn expect_request(&self) -> u64 {
        self.wait_for("a request from downstream", |s| {
            s.demand && s.queue.is_empty()
        })
        .await;
        self.requests()
    }

    /// Waits until downstream cancels.
    pub async fn expect_cancellation(&self) {
        self.wait_for("cancellation", |s| s.cancelled).await;
    }
}

/// Factory for test sinks.
#[derive(Debug, Clone, Copy)]
pub struct TestSink;

impl TestSink {
    /// A sink that materializes a [`TestSubscriber`] to pull elements with expectations.
    pub fn probe<T: Send + 'static>() -> Sink<ProbeSink<T>> {
        Sink::from_stage(ProbeSink(std::marker::PhantomData))
    }
}

/// The sink behind [`TestSink::probe`].
pub struct ProbeSink<T>(std::marker::PhantomData<fn(T)>);

impl<T: Send + 'static> SinkStage<T> for ProbeSink<T> {
    type Mat = TestSubscriber<T>;

    fn attach<S>(self, upstream: S) -> (TestSubscriber<T>, BoxFuture<'static, ()>)
    where
        S: Stream<Item = Item<T>> + Send + 'static,
    {
        (
            TestSubscriber {
                stream: Some(upstream.boxed()),
                wait: DEFAULT_EXPECT_WAIT,
            },
            futures::future::ready(()).boxed(),
        )
    }
}

/// Pulls elements from a stream under test, one request at a time.
pub struct TestSubscriber<T> {
    stream: Option<BoxStream<'static, Item<T>>>,
    wait: Duration,
}

impl<T> TestSubscriber<T> {
    /// A subscriber over any stream of items.
    pub fn new(stream: BoxStream<'static, Item<T>>) -> Self {
        TestSubscriber {
            stream: Some(stream),
            wait: DEFAULT_EXPECT_WAIT,
        }
    }

    /// Changes how long expectations wait.
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Requests one element: `Some(item)`, or `None` on completion. Panics if
    /// nothing happens within the wait.
    pub async fn request_next(&mut self) -> Option<Item<T>> {
        let Some(s) = self.stream.as_mut() else {
            panic!("TestSubscriber: the subscription was cancelled");
        };
        match tokio::time::timeout(self.wait, s.next()).await {
            Ok(x) => x,
            Err(_) => panic!("TestSubscriber: nothing arrived within {:?}", self.wait),
        }
    }

    /// Expects an element and returns it.
    pub async fn expect_next(&mut self) -> T {
        match self.request_next().await {
            Some(Ok(x)) => x,
            Some(Err(e)) => panic!("TestSubscriber: expected an element, got failure: {e}"),
            None => panic!("TestSubscriber: expected an element, got completion"),
        }
    }

    /// Expects `n` elements and returns them.
    pub async fn expect_next_n(&mut self, n: usize) -> Vec<T> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.expect_next().await);
        }
        v
    }

    /// Expects completion.
    pub async fn expect_complete(&mut self) {
        match self.request_next().await {
            None => {}
            Some(Ok(_)) => panic!("TestSubscriber: expected completion, got an element"),
            Some(Err(e)) => panic!("TestSubscriber: expected completion, got failure: {e}"),
        }
    }

    /// Expects a failure and returns it.
    pub async fn expect_error(&mut self) -> StreamError {
        match self.request_next().await {
            Some(Err(e)) => e,
            Some(Ok(_)) => panic!("TestSubscriber: expected a failure, got an element"),
            None => panic!("TestSubscriber: expected a failure, got completion"),
        }
    }

    /// Expects that nothing arrives for `d` (use a paused tokio clock to make
    /// this instantaneous and deterministic).
    pub async fn expect_no_message(&mut self, d: Duration) {
        let Some(s) = self.stream.as_mut() else {
            return;
        };
        match tokio::time::timeout(d, s.next()).await {
            Err(_) => {}
            Ok(Some(Ok(_))) => panic!("TestSubscriber: expected no message, got an element"),
            Ok(Some(Err(e))) => panic!("TestSubscriber: expected no message, got failure: {e}"),
            Ok(None) => panic!("TestSubscriber: expected no message, got completion"),
        }
    }

    /// Cancels the subscription (drops the stream, cancelling upstream).
    pub fn cancel(&mut self) {
        self.stream = None;
    }
}

impl<T: PartialEq + Debug> TestSubscriber<T> {
    /// Expects exactly `expected` next.
    pub async fn expect_next_eq(&mut self, expected: T) {
        let got = self.expect_next().await;
        assert_eq!(got, expected, "TestSubscriber: unexpected element");
    }
}
