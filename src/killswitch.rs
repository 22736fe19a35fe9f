//! Kill switches and termination watching.
//!
//! A kill switch stops a running stream from the outside:
//! [`shutdown`](UniqueKillSwitch::shutdown) completes downstream and cancels
//! upstream; [`abort`](UniqueKillSwitch::abort) fails downstream with an
//! error. A [`UniqueKillSwitch`] controls one stream (materialized by
//! [`KillSwitches::single`]); a [`SharedKillSwitch`] controls every stream it
//! was put into.
//!
//! ```
//! use flowstage::prelude::*;
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let (switch, done) = Source::repeat(1u64)
//!     .via_mat(KillSwitches::single(), Keep::right)
//!     .to_mat(Sink::fold(0u64, |n, _| n + 1), Keep::both)
//!     .run();
//! tokio::task::yield_now().await; // the stream runs meanwhile (one thread here)
//! switch.shutdown();
//! let counted = done.await.unwrap(); // completed, not failed
//! assert!(counted > 0);
//! # }
//! ```

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use futures::{Stream, StreamExt};
use pin_project_lite::pin_project;

use crate::error::{Item, StreamError};
use crate::flow::Flow;
use crate::mat::{completion, Completer, Completion, NotUsed};

#[derive(Clone)]
enum Signal {
    Shutdown,
    Abort(StreamError),
}

#[derive(Default)]
struct SwitchCore {
    fired: AtomicBool,
    next_id: AtomicU64,
    inner: Mutex<SwitchInner>,
}

#[derive(Default)]
struct SwitchInner {
    signal: Option<Signal>,
    wakers: HashMap<u64, Waker>,
}

impl SwitchCore {
    fn fire(&self, signal: Signal) {
        let wakers = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if inner.signal.is_some() {
                return;
            }
            inner.signal = Some(signal);
            self.fired.store(true, Ordering::Release);
            std::mem::take(&mut inner.wakers)
        };
        for (_, w) in wakers {
            w.wake();
        }
    }

    fn signal(&self) -> Option<Signal> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .signal
            .clone()
    }
}

/// Controls one materialized stream. See the [module docs](self).
#[derive(Clone)]
pub struct UniqueKillSwitch {
    core: Arc<SwitchCore>,
}

impl std::fmt::Debug for UniqueKillSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UniqueKillSwitch")
            .field("fired", &self.core.fired.load(Ordering::Relaxed))
            .finish()
    }
}

impl UniqueKillSwitch {
    /// Completes downstream and cancels upstream.
    pub fn shutdown(&self) {
        self.core.fire(Signal::Shutdown);
    }

    /// Fails downstream with `err` and cancels upstream.
    pub fn abort(&self, err: StreamError) {
        self.core.fire(Signal::Abort(err));
    }
}

/// Controls every stream its [`flow`](SharedKillSwitch::flow) was put into.
#[derive(Clone)]
pub struct SharedKillSwitch {
    name: Arc<str>,
    core: Arc<SwitchCore>,
}

impl std::fmt::Debug for SharedKillSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedKillSwitch")
            .field("name", &self.name)
            .field("fired", &self.core.fired.load(Ordering::Relaxed))
            .finish()
    }
}

impl SharedKillSwitch {
    /// A new switch; `name` appears in logs.
    pub fn new(name: impl Into<String>) -> Self {
        SharedKillSwitch {
            name: Arc::from(name.into()),
            core: Arc::default(),
        }
    }

    /// A pass-through flow controlled by this switch.
    pub fn flow<T: Send + 'static>(&self) -> Flow<T, T, NotUsed> {
        let core = self.core.clone();
        Flow::from_stream_fn(move |s| KillSwitched::new(s, core))
    }

    /// Completes every controlled stream.
    pub fn shutdown(&self) {
        tracing::debug!(switch = %self.name, "shared kill switch: shutdown");
        self.core.fire(Signal::Shutdown);
    }

    /// Fails every controlled stream with `err`.
    pub fn abort(&self, err: StreamError) {
        tracing::debug!(switch = %self.name, error = %err, "shared kill switch: abort");
        self.core.fire(Signal::Abort(err));
    }
}

/// Factories for kill-switch flows (Akka's `KillSwitches`).
#[derive(Debug, Clone, Copy)]
pub struct KillSwitches;

impl KillSwitches {
    /// A pass-through flow that materializes a [`UniqueKillSwitch`].
    pub fn single<T: Send + 'static>() -> Flow<T, T, UniqueKillSwitch> {
        let core = Arc::new(SwitchCore::default());
        let switch = UniqueKillSwitch { core: core.clone() };
        Flow::from_stream_fn(move |s| KillSwitched::new(s, core)).map_materialized_value(|_| switch)
    }

    /// A new [`SharedKillSwitch`].
    pub fn shared(name: impl Into<String>) -> SharedKillSwitch {
        SharedKillSwitch::new(name)
    }
}

pin_project! {
    /// The stream inside kill-switch flows.
    #[must_use = "streams do nothing unless polled"]
    pub struct KillSwitched<S> {
        // Dropped (cancelling upstream) as soon as the switch fires, even if
        // downstream goes on (a kill-switched branch of a merge, say).
        stream: Option<S>,
        core: Arc<SwitchCore>,
        id: u64,
        done: bool,
    }
    impl<S> PinnedDrop for KillSwitched<S> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let mut inner = this.core.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.wakers.remove(this.id);
        }
    }
}

impl<S> KillSwitched<S> {
    fn new(stream: S, core: Arc<SwitchCore>) -> Self {
        let id = core.next_id.fetch_add(1, Ordering::Relaxed);
        KillSwitched {
            stream: Some(stream),
            core,
            id,
            done: false,
        }
    }
}

impl<S, T> Stream for KillSwitched<S>
where
    S: Stream<Item = Item<T>> + Unpin,
{
    type Item = Item<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<T>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        let fired = |done: &mut bool, stream: &mut Option<S>, core: &SwitchCore| {
            *done = true;
            // Cancel upstream now.
            *stream = None;
            match core.signal() {
                Some(Signal::Abort(e)) => Poll::Ready(Some(Err(e))),
                _ => Poll::Ready(None),
            }
        };
        if this.core.fired.load(Ordering::Acquire) {
            return fired(this.done, this.stream, this.core);
        }
        let Some(stream) = this.stream.as_mut() else {
            *this.done = true;
            return Poll::Ready(None);
        };
        match stream.poll_next_unpin(cx) {
            Poll::Ready(next) => {
                if !matches!(next, Some(Ok(_))) {
                    *this.done = true;
                    *this.stream = None;
                }
                Poll::Ready(next)
            }
            Poll::Pending => {
                {
                    let mut inner = this.core.inner.lock().unwrap_or_else(|e| e.into_inner());
                    if inner.signal.is_none() {
                        match inner.wakers.get(this.id) {
                            Some(w) if w.will_wake(cx.waker()) => {}
                            _ => {
                                inner.wakers.insert(*this.id, cx.waker().clone());
                            }
                        }
                        return Poll::Pending;
                    }
                }
                fired(this.done, this.stream, this.core)
            }
        }
    }
}

pin_project! {
    /// The stream behind [`Source::watch_termination`](crate::Source::watch_termination).
    #[must_use = "streams do nothing unless polled"]
    pub struct WatchTermination<S> {
        #[pin]
        stream: S,
        completer: Completer<()>,
    }
    impl<S> PinnedDrop for WatchTermination<S> {
        fn drop(this: Pin<&mut Self>) {
            // Cancelled by downstream (or dropped unfinished): that is a normal end.
            this.project().completer.complete(Ok(()));
        }
    }
}

impl<S> WatchTermination<S> {
    pub(crate) fn new(stream: S) -> (Self, Completion<()>) {
        let (completer, done) = completion();
        (WatchTermination { stream, completer }, done)
    }
}

impl<S, T> Stream for WatchTermination<S>
where
    S: Stream<Item = Item<T>>,
{
    type Item = Item<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<T>>> {
        let this = self.project();
        let next = futures::ready!(this.stream.poll_next(cx));
        match &next {
            Some(Ok(_)) => {}
            Some(Err(e)) => this.completer.complete(Err(e.clone())),
            None => this.completer.complete(Ok(())),
        }
        Poll::Ready(next)
    }
}
