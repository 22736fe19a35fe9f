//! Custom stages: operators with several inputs and outputs, written as
//! explicit push/pull handlers — the analogue of Akka's `GraphStage`.
//!
//! Most pipelines need only the [`FlowOps`](crate::FlowOps) operators and the
//! junctions. When an operator must coordinate several inputs with its own
//! rules — a model stream and a data stream, say — write a stage:
//!
//! 1. Create a [`GraphStageBuilder`]; add an [`Inlet`] for each upstream
//!    source with [`add_inlet`](GraphStageBuilder::add_inlet) and an
//!    [`Outlet`] for each output with [`add_outlet`](GraphStageBuilder::add_outlet).
//! 2. Write a struct that keeps the port handles and its state, and implement
//!    [`GraphStageLogic`] for it. Handlers receive a [`StageContext`] to
//!    [`pull`](StageContext::pull), [`grab`](StageContext::grab),
//!    [`push`](StageContext::push), complete, fail, schedule timers and create
//!    [async callbacks](StageContext::async_callback).
//! 3. [`build`](GraphStageBuilder::build) it and take each outlet's
//!    [`Source`] from the returned [`StageOutlets`].
//!
//! The protocol is Akka's: an inlet delivers an element only after the stage
//! pulled it (`on_push` follows a `pull`), and the stage may push to an
//! outlet only after `on_pull` signalled demand. **Pushing without demand is
//! an error** ([`StreamError::Protocol`]) — never a hidden buffer — so a stage
//! cannot break backpressure by accident. Returning an `Err` from any handler
//! fails the stage: every outlet emits that error and every inlet is cancelled.
//!
//! A stage runs wherever its outlets are polled ("passive"), or, built with
//! [`build_active`](GraphStageBuilder::build_active), also on a task of its
//! own, so that inlet pushes, timers and callbacks are handled even while
//! downstream is not asking for anything.
//!
//! # Example: a two-input stage
//!
//! `Latest` passes on the elements of its data input, each paired with the
//! latest value seen on its control input (which it always pulls, so control
//! messages never wait behind data):
//!
//! ```
//! use flowstage::prelude::*;
//! use flowstage::stage::*;
//!
//! struct Latest {
//!     control: Inlet<u32>,
//!     data: Inlet<char>,
//!     out: Outlet<(u32, char)>,
//!     current: u32,
//! }
//!
//! impl GraphStageLogic for Latest {
//!     type Event = ();
//!
//!     fn pre_start(&mut self, ctx: &mut StageContext<'_, ()>) -> Result<(), StreamError> {
//!         ctx.pull(self.control)
//!     }
//!
//!     fn on_push(&mut self, ctx: &mut StageContext<'_, ()>, inlet: InletId) -> Result<(), StreamError> {
//!         if inlet == self.control.id() {
//!             self.current = ctx.grab(self.control)?;
//!             ctx.pull(self.control)
//!         } else {
//!             let c = ctx.grab(self.data)?;
//!             ctx.push(self.out, (self.current, c))
//!         }
//!     }
//!
//!     fn on_pull(&mut self, ctx: &mut StageContext<'_, ()>, _outlet: OutletId) -> Result<(), StreamError> {
//!         ctx.pull(self.data)
//!     }
//!
//!     fn on_upstream_finish(&mut self, ctx: &mut StageContext<'_, ()>, inlet: InletId) -> Result<(), StreamError> {
//!         // The control input may end; the stage ends with its data.
//!         if inlet == self.data.id() {
//!             ctx.complete_stage();
//!         }
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let mut b = GraphStageBuilder::new();
//! let control = b.add_inlet(Source::single(7));
//! let data = b.add_inlet(Source::from_iter(['a', 'b']));
//! let out = b.add_outlet();
//! let mut outlets = b.build(Latest { control, data, out, current: 0 });
//! let results = outlets.source(out).unwrap().run_with(Sink::collect()).await.unwrap();
//! assert_eq!(results.len(), 2);
//! # }
//! ```

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::task::{waker_ref, ArcWake};
use futures::Stream;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use crate::error::{Item, StreamError};
use crate::mat::NotUsed;
use crate::source::Source;

/// The identity of an inlet, as handlers receive it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InletId(usize);

/// The identity of an outlet, as handlers receive it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OutletId(usize);

/// A typed input port of a stage.
pub struct Inlet<T> {
    id: usize,
    _t: PhantomData<fn() -> T>,
}

/// A typed output port of a stage.
pub struct Outlet<T> {
    id: usize,
    _t: PhantomData<fn(T)>,
}

macro_rules! port_impls {
    ($port:ident, $id:ident) => {
        impl<T> Clone for $port<T> {
            fn clone(&self) -> Self {
                *self
            }
        }
        impl<T> Copy for $port<T> {}
        impl<T> fmt::Debug for $port<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($port), self.id)
            }
        }
        impl<T> $port<T> {
            /// This port's identity, to compare with what handlers receive.
            pub fn id(&self) -> $id {
                $id(self.id)
            }
        }
        impl<T> PartialEq<$id> for $port<T> {
            fn eq(&self, other: &$id) -> bool {
                self.id == other.0
            }
        }
    };
}
port_impls!(Inlet, InletId);
port_impls!(Outlet, OutletId);

/// The handlers of a custom stage. See the [module docs](self).
///
/// Every handler may return an `Err` to fail the stage.
pub trait GraphStageLogic: Send + 'static {
    /// The type of events sent in through [`AsyncCallback`]s (use `()` for none).
    type Event: Send + 'static;

    /// Called once before any other handler.
    fn pre_start(&mut self, ctx: &mut StageContext<'_, Self::Event>) -> Result<(), StreamError> {
        let _ = ctx;
        Ok(())
    }

    /// An element is available on `inlet` (grab it with [`StageContext::grab`]).
    fn on_push(
        &mut self,
        ctx: &mut StageContext<'_, Self::Event>,
        inlet: InletId,
    ) -> Result<(), StreamError>;

    /// `inlet`'s upstream completed. Default: complete the stage.
    fn on_upstream_finish(
        &mut self,
        ctx: &mut StageContext<'_, Self::Event>,
        inlet: InletId,
    ) -> Result<(), StreamError> {
        let _ = inlet;
        ctx.complete_stage();
        Ok(())
    }

    /// `inlet`'s upstream failed. Default: fail the stage with the same error.
    fn on_upstream_failure(
        &mut self,
        ctx: &mut StageContext<'_, Self::Event>,
        inlet: InletId,
        error: StreamError,
    ) -> Result<(), StreamError> {
        let _ = (ctx, inlet);
        Err(error)
    }

    /// Downstream of `outlet` asks for an element: you may now push one.
    fn on_pull(
        &mut self,
        ctx: &mut StageContext<'_, Self::Event>,
        outlet: OutletId,
    ) -> Result<(), StreamError>;

    /// Downstream of `outlet` cancelled. Default: complete the stage.
    fn on_downstream_finish(
        &mut self,
        ctx: &mut StageContext<'_, Self::Event>,
        outlet: OutletId,
    ) -> Result<(), StreamError> {
        let _ = outlet;
        ctx.complete_stage();
        Ok(())
    }

    /// A timer scheduled with `key` fired.
    fn on_timer(
        &mut self,
        ctx: &mut StageContext<'_, Self::Event>,
        key: u64,
    ) -> Result<(), StreamError> {
        let _ = (ctx, key);
        Ok(())
    }

    /// An event arrived through an [`AsyncCallback`].
    fn on_event(
        &mut self,
        ctx: &mut StageContext<'_, Self::Event>,
        event: Self::Event,
    ) -> Result<(), StreamError> {
        let _ = (ctx, event);
        Ok(())
    }

    /// Called once when the stage has stopped (completed, failed or cancelled).
    fn post_stop(&mut self) {}
}

/// A handle that other tasks use to send events into a running stage; they
/// arrive in [`GraphStageLogic::on_event`]. Cheap to clone.
pub struct AsyncCallback<E> {
    tx: mpsc::UnboundedSender<E>,
}

impl<E> Clone for AsyncCallback<E> {
    fn clone(&self) -> Self {
        AsyncCallback {
            tx: self.tx.clone(),
        }
    }
}

impl<E> fmt::Debug for AsyncCallback<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsyncCallback").finish_non_exhaustive()
    }
}

impl<E> AsyncCallback<E> {
    /// Sends `event` to the stage. Gives it back if the stage has stopped.
    pub fn invoke(&self, event: E) -> Result<(), E> {
        self.tx.send(event).map_err(|e| e.0)
    }

    /// Whether the stage has stopped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

// ---------------------------------------------------------------------------
// Ports, type-erased.

trait InletPoller: Send {
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        slot: &mut (dyn Any + Send),
    ) -> Poll<Option<Result<(), StreamError>>>;
}

struct Poller<S, T> {
    stream: Pin<Box<S>>,
    _t: PhantomData<fn() -> T>,
}

impl<S, T> InletPoller for Poller<S, T>
where
    S: Stream<Item = Item<T>> + Send,
    T: Send + 'static,
{
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        slot: &mut (dyn Any + Send),
    ) -> Poll<Option<Result<(), StreamError>>> {
        match self.stream.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(x))) => match slot.downcast_mut::<Option<T>>() {
                Some(s) => {
                    *s = Some(x);
                    Poll::Ready(Some(Ok(())))
                }
                None => Poll::Ready(Some(Err(StreamError::Protocol(
                    "inlet slot type mismatch".into(),
                )))),
            },
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

struct InletState {
    poller: Option<Box<dyn InletPoller>>,
    slot: Box<dyn Any + Send>,
    pulled: bool,
    available: bool,
    closed: bool,
}

#[derive(Clone)]
enum OutletEnd {
    Completed,
    Failed(StreamError),
}

struct OutletState {
    slot: Box<dyn Any + Send>,
    has_elem: bool,
    pulled: bool,
    /// Downstream cancelled.
    cancelled: bool,
    /// The stage completed or failed this outlet.
    end: Option<OutletEnd>,
    /// The end was reported downstream.
    end_delivered: bool,
}

struct Timer {
    key: u64,
    sleep: Pin<Box<Sleep>>,
    period: Option<Duration>,
}

#[derive(Clone)]
enum Status {
    Running,
    Stopped,
}

/// What handlers use to act on the stage's ports, timers and lifecycle.
pub struct StageContext<'a, E> {
    ports: &'a mut Ports<E>,
}

struct Ports<E> {
    inlets: Vec<InletState>,
    outlets: Vec<OutletState>,
    timers: Vec<Timer>,
    events_tx: mpsc::UnboundedSender<E>,
    status: Status,
    /// Outlets whose state changed while another outlet's task drove the stage.
    dirty: Vec<usize>,
}

fn protocol(msg: impl Into<String>) -> StreamError {
    StreamError::Protocol(msg.into())
}

impl<E> StageContext<'_, E> {
    fn inlet(&mut self, id: usize) -> Result<&mut InletState, StreamError> {
        self.ports
            .inlets
            .get_mut(id)
            .ok_or_else(|| protocol(format!("no inlet {id} in this stage")))
    }

    fn outlet(&mut self, id: usize) -> Result<&mut OutletState, StreamError> {
        self.ports
            .outlets
            .get_mut(id)
            .ok_or_else(|| protocol(format!("no outlet {id} in this stage")))
    }

    /// Asks `inlet`'s upstream for one element; `on_push` follows when it arrives.
    /// Pulling twice, pulling a closed inlet, or pulling while an element waits
    /// to be grabbed is an error.
    pub fn pull<T>(&mut self, inlet: Inlet<T>) -> Result<(), StreamError> {
        let st = self.inlet(inlet.id)?;
        if st.closed {
            return Err(protocol(format!("pull of closed inlet {}", inlet.id)));
        }
        if st.pulled {
            return Err(protocol(format!("inlet {} pulled twice", inlet.id)));
        }
        if st.available {
            return Err(protocol(format!(
                "pull of inlet {} before grabbing its element",
                inlet.id
            )));
        }
        st.pulled = true;
        Ok(())
    }

    /// Takes the element that arrived on `inlet`.
    pub fn grab<T: 'static>(&mut self, inlet: Inlet<T>) -> Result<T, StreamError> {
        let st = self.inlet(inlet.id)?;
        if !st.available {
            return Err(protocol(format!(
                "grab of inlet {} with no element",
                inlet.id
            )));
        }
        st.available = false;
        st.slot
            .downcast_mut::<Option<T>>()
            .and_then(Option::take)
            .ok_or_else(|| protocol(format!("inlet {} slot type mismatch", inlet.id)))
    }

    /// Whether an element waits on `inlet`.
    pub fn is_available<T>(&self, inlet: Inlet<T>) -> bool {
        self.ports.inlets.get(inlet.id).is_some_and(|s| s.available)
    }

    /// Whether `inlet` was pulled and its element has not arrived yet.
    pub fn has_been_pulled<T>(&self, inlet: Inlet<T>) -> bool {
        self.ports.inlets.get(inlet.id).is_some_and(|s| s.pulled)
    }

    /// Whether `inlet`'s upstream has finished (or was cancelled).
    pub fn is_closed<T>(&self, inlet: Inlet<T>) -> bool {
        self.ports.inlets.get(inlet.id).is_none_or(|s| s.closed)
    }

    /// Cancels `inlet`'s upstream.
    pub fn cancel<T>(&mut self, inlet: Inlet<T>) {
        if let Some(st) = self.ports.inlets.get_mut(inlet.id) {
            st.poller = None;
            st.closed = true;
            st.pulled = false;
        }
    }

    /// Pushes `elem` to `outlet`. Only allowed after `on_pull` signalled demand
    /// and before the next push; otherwise an error ([`StreamError::Protocol`]).
    pub fn push<T: 'static>(&mut self, outlet: Outlet<T>, elem: T) -> Result<(), StreamError> {
        let id = outlet.id;
        let st = self.outlet(id)?;
        if st.cancelled || st.end.is_some() {
            return Err(protocol(format!("push to closed outlet {id}")));
        }
        if !st.pulled {
            return Err(protocol(format!(
                "push to outlet {id} without demand (backpressure violated)"
            )));
        }
        let slot = st
            .slot
            .downcast_mut::<Option<T>>()
            .ok_or_else(|| protocol(format!("outlet {id} slot type mismatch")))?;
        *slot = Some(elem);
        st.has_elem = true;
        st.pulled = false;
        self.ports.dirty.push(id);
        Ok(())
    }

    /// Whether `outlet` has demand (a push is allowed now).
    pub fn has_demand<T>(&self, outlet: Outlet<T>) -> bool {
        self.ports.outlets.get(outlet.id).is_some_and(|s| s.pulled)
    }

    /// Whether `outlet` is closed (cancelled downstream, or completed/failed).
    pub fn is_outlet_closed<T>(&self, outlet: Outlet<T>) -> bool {
        self.ports
            .outlets
            .get(outlet.id)
            .is_none_or(|s| s.cancelled || s.end.is_some())
    }

    /// Completes `outlet` (after an element already pushed to it).
    pub fn complete<T>(&mut self, outlet: Outlet<T>) {
        if let Some(st) = self.ports.outlets.get_mut(outlet.id) {
            if st.end.is_none() {
                st.end = Some(OutletEnd::Completed);
                st.pulled = false;
                self.ports.dirty.push(outlet.id);
            }
        }
    }

    /// Fails `outlet` with `err`.
    pub fn fail<T>(&mut self, outlet: Outlet<T>, err: StreamError) {
        if let Some(st) = self.ports.outlets.get_mut(outlet.id) {
            if st.end.is_none() {
                st.end = Some(OutletEnd::Failed(err));
                st.pulled = false;
                self.ports.dirty.push(outlet.id);
            }
        }
    }

    /// Completes every outlet, cancels every inlet and stops the stage.
    pub fn complete_stage(&mut self) {
        self.ports.stop(OutletEnd::Completed);
    }

    /// Fails every outlet with `err`, cancels every inlet and stops the stage.
    pub fn fail_stage(&mut self, err: StreamError) {
        self.ports.stop(OutletEnd::Failed(err));
    }

    /// Fires [`on_timer`](GraphStageLogic::on_timer) with `key` once after `delay`
    /// (replacing a timer with the same key).
    pub fn schedule_once(&mut self, key: u64, delay: Duration) {
        self.cancel_timer(key);
        self.ports.timers.push(Timer {
            key,
            sleep: Box::pin(tokio::time::sleep(delay)),
            period: None,
        });
    }

    /// Fires [`on_timer`](GraphStageLogic::on_timer) with `key` every `interval`
    /// (replacing a timer with the same key).
    pub fn schedule_periodically(&mut self, key: u64, interval: Duration) {
        self.cancel_timer(key);
        let interval = interval.max(Duration::from_micros(1));
        self.ports.timers.push(Timer {
            key,
            sleep: Box::pin(tokio::time::sleep(interval)),
            period: Some(interval),
        });
    }

    /// Cancels the timer with `key`, if any.
    pub fn cancel_timer(&mut self, key: u64) {
        self.ports.timers.retain(|t| t.key != key);
    }

    /// Whether a timer with `key` is scheduled.
    pub fn is_timer_active(&self, key: u64) -> bool {
        self.ports.timers.iter().any(|t| t.key == key)
    }

    /// A handle for other tasks to send events into this stage.
    pub fn async_callback(&self) -> AsyncCallback<E> {
        AsyncCallback {
            tx: self.ports.events_tx.clone(),
        }
    }
}

impl<E> Ports<E> {
    fn stop(&mut self, end: OutletEnd) {
        if matches!(self.status, Status::Stopped) {
            return;
        }
        self.status = Status::Stopped;
        for (i, o) in self.outlets.iter_mut().enumerate() {
            if o.end.is_none() {
                o.end = Some(end.clone());
            }
            o.pulled = false;
            self.dirty.push(i);
        }
        for i in self.inlets.iter_mut() {
            i.poller = None;
            i.closed = true;
            i.pulled = false;
        }
        self.timers.clear();
    }

    fn all_outlets_closed(&self) -> bool {
        self.outlets.iter().all(|o| o.cancelled || o.end.is_some())
    }
}

// ---------------------------------------------------------------------------
// The interpreter.

/// Wakes every task waiting on one of the stage's outlets (and its driver).
struct WakerSet {
    wakers: Mutex<Vec<Option<Waker>>>,
}

impl ArcWake for WakerSet {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        let wakers: Vec<Waker> = {
            let mut g = arc_self.wakers.lock().unwrap_or_else(|e| e.into_inner());
            g.iter_mut().filter_map(Option::take).collect()
        };
        for w in wakers {
            w.wake();
        }
    }
}

impl WakerSet {
    fn register(&self, slot: usize, waker: &Waker) {
        let mut g = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        match &g[slot] {
            Some(w) if w.will_wake(waker) => {}
            _ => g[slot] = Some(waker.clone()),
        }
    }

    fn wake_slot(&self, slot: usize) {
        let w = {
            let mut g = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
            g.get_mut(slot).and_then(Option::take)
        };
        if let Some(w) = w {
            w.wake();
        }
    }
}

struct Core<L: GraphStageLogic> {
    logic: L,
    ports: Ports<L::Event>,
    events_rx: mpsc::UnboundedReceiver<L::Event>,
    started: bool,
    post_stopped: bool,
    wakers: Arc<WakerSet>,
    driver_slot: usize,
}

/// How many rounds of handler calls one poll may run before yielding.
const ROUND_BUDGET: usize = 256;

impl<L: GraphStageLogic> Core<L> {
    fn handle(&mut self, r: Result<(), StreamError>) {
        if let Err(e) = r {
            tracing::debug!(error = %e, "custom stage failed");
            self.ports.stop(OutletEnd::Failed(e));
        }
    }

    fn ctx(ports: &mut Ports<L::Event>) -> StageContext<'_, L::Event> {
        StageContext { ports }
    }

    fn start(&mut self) {
        if !self.started {
            self.started = true;
            let r = self.logic.pre_start(&mut Self::ctx(&mut self.ports));
            self.handle(r);
        }
    }

    fn running(&self) -> bool {
        matches!(self.ports.status, Status::Running)
    }

    /// Runs handlers until nothing more can happen without new input. Returns
    /// `false` if it stopped because the budget ran out.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        self.start();
        let wakers = self.wakers.clone();
        let waker = waker_ref(&wakers);
        let mut icx = Context::from_waker(&waker);
        for _ in 0..ROUND_BUDGET {
            if !self.running() {
                break;
            }
            let mut progress = false;
            // Events from async callbacks.
            while self.running() {
                match self.events_rx.poll_recv(&mut icx) {
                    Poll::Ready(Some(ev)) => {
                        let r = self.logic.on_event(&mut Self::ctx(&mut self.ports), ev);
                        self.handle(r);
                        progress = true;
                    }
                    _ => break,
                }
            }
            // Timers.
            let mut t = 0;
            while self.running() && t < self.ports.timers.len() {
                let timer = &mut self.ports.timers[t];
                if timer.sleep.as_mut().poll(&mut icx).is_ready() {
                    let key = timer.key;
                    match timer.period {
                        Some(p) => {
                            let next = timer.sleep.deadline() + p;
                            timer.sleep.as_mut().reset(next.max(Instant::now()));
                            t += 1;
                        }
                        None => {
                            self.ports.timers.remove(t);
                        }
                    }
                    let r = self.logic.on_timer(&mut Self::ctx(&mut self.ports), key);
                    self.handle(r);
                    progress = true;
                } else {
                    t += 1;
                }
            }
            // Inlets that were pulled.
            for i in 0..self.ports.inlets.len() {
                if !self.running() {
                    break;
                }
                let st = &mut self.ports.inlets[i];
                if !st.pulled || st.available || st.closed {
                    continue;
                }
                let Some(poller) = st.poller.as_mut() else {
                    continue;
                };
                let r = match poller.poll(&mut icx, st.slot.as_mut()) {
                    Poll::Pending => continue,
                    Poll::Ready(Some(Ok(()))) => {
                        st.pulled = false;
                        st.available = true;
                        self.logic
                            .on_push(&mut Self::ctx(&mut self.ports), InletId(i))
                    }
                    Poll::Ready(Some(Err(e))) => {
                        st.pulled = false;
                        st.closed = true;
                        st.poller = None;
                        self.logic.on_upstream_failure(
                            &mut Self::ctx(&mut self.ports),
                            InletId(i),
                            e,
                        )
                    }
                    Poll::Ready(None) => {
                        st.pulled = false;
                        st.closed = true;
                        st.poller = None;
                        self.logic
                            .on_upstream_finish(&mut Self::ctx(&mut self.ports), InletId(i))
                    }
                };
                self.handle(r);
                progress = true;
            }
            if self.running() && self.ports.all_outlets_closed() {
                self.ports.stop(OutletEnd::Completed);
            }
            if !progress {
                self.finish_if_stopped();
                return true;
            }
        }
        self.finish_if_stopped();
        if self.running() {
            // Out of budget: let other tasks run, then continue.
            cx.waker().wake_by_ref();
            return false;
        }
        true
    }

    fn finish_if_stopped(&mut self) {
        if !self.running() && !self.post_stopped {
            self.post_stopped = true;
            self.events_rx.close();
            self.logic.post_stop();
        }
    }

    fn wake_dirty(&mut self, except: Option<usize>) {
        // Drained, not taken: the buffer is reused, no allocation per push.
        for j in self.ports.dirty.drain(..) {
            if Some(j) != except {
                self.wakers.wake_slot(j);
            }
        }
    }
}

/// The type-erased interface the outlet streams use.
trait ErasedStage: Send {
    fn poll_outlet(
        &mut self,
        k: usize,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<(), StreamError>>>;
    fn slot(&mut self, k: usize) -> &mut (dyn Any + Send);
    fn cancel_outlet(&mut self, k: usize);
    fn poll_driver(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

impl<L: GraphStageLogic> ErasedStage for Core<L> {
    fn poll_outlet(
        &mut self,
        k: usize,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<(), StreamError>>> {
        self.wakers.register(k, cx.waker());
        self.start();
        if !self.ports.outlets[k].has_elem && self.ports.outlets[k].end.is_none() && self.running()
        {
            let o = &mut self.ports.outlets[k];
            if !o.pulled && !o.cancelled {
                o.pulled = true;
                let r = self
                    .logic
                    .on_pull(&mut Self::ctx(&mut self.ports), OutletId(k));
                self.handle(r);
            }
            self.drive(cx);
        }
        self.finish_if_stopped();
        self.wake_dirty(Some(k));
        let o = &mut self.ports.outlets[k];
        if o.has_elem {
            o.has_elem = false;
            return Poll::Ready(Some(Ok(())));
        }
        match (&o.end, o.end_delivered) {
            (Some(_), true) => Poll::Ready(None),
            (Some(OutletEnd::Completed), false) => {
                o.end_delivered = true;
                Poll::Ready(None)
            }
            (Some(OutletEnd::Failed(e)), false) => {
                o.end_delivered = true;
                Poll::Ready(Some(Err(e.clone())))
            }
            (None, _) => Poll::Pending,
        }
    }

    fn slot(&mut self, k: usize) -> &mut (dyn Any + Send) {
        self.ports.outlets[k].slot.as_mut()
    }

    fn cancel_outlet(&mut self, k: usize) {
        let o = &mut self.ports.outlets[k];
        if o.cancelled {
            return;
        }
        o.cancelled = true;
        o.pulled = false;
        let open = o.end.is_none();
        if self.running() && open {
            self.start();
            let r = self
                .logic
                .on_downstream_finish(&mut Self::ctx(&mut self.ports), OutletId(k));
            self.handle(r);
            if self.running() && self.ports.all_outlets_closed() {
                self.ports.stop(OutletEnd::Completed);
            }
        }
        self.finish_if_stopped();
        self.wake_dirty(Some(k));
    }

    fn poll_driver(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.wakers.register(self.driver_slot, cx.waker());
        if self.running() {
            self.drive(cx);
        }
        self.finish_if_stopped();
        self.wake_dirty(None);
        if self.running() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}

type SharedStage = Arc<Mutex<dyn ErasedStage>>;

fn lock(stage: &SharedStage) -> MutexGuard<'_, dyn ErasedStage + 'static> {
    stage.lock().unwrap_or_else(|e| e.into_inner())
}

/// The stream of one outlet of a built stage.
#[must_use = "streams do nothing unless polled"]
pub struct StageOutlet<T> {
    stage: SharedStage,
    id: usize,
    /// An active stage's driver, shared by all its outlets: whichever is polled
    /// first spawns it (each outlet looks only on its first poll).
    driver: Option<DriverSlot>,
    _t: PhantomData<fn() -> T>,
}

type DriverSlot = Arc<Mutex<Option<SharedStage>>>;

impl<T> Unpin for StageOutlet<T> {}

impl<T: Send + 'static> Stream for StageOutlet<T> {
    type Item = Item<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item<T>>> {
        if let Some(slot) = self.driver.take() {
            let stage = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(stage) = stage {
                tokio::spawn(StageDriver { stage });
            }
        }
        let mut stage = lock(&self.stage);
        match stage.poll_outlet(self.id, cx) {
            Poll::Ready(Some(Ok(()))) => {
                let x = stage
                    .slot(self.id)
                    .downcast_mut::<Option<T>>()
                    .and_then(Option::take);
                match x {
                    Some(x) => Poll::Ready(Some(Ok(x))),
                    None => Poll::Ready(Some(Err(protocol("outlet slot type mismatch")))),
                }
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T> Drop for StageOutlet<T> {
    fn drop(&mut self) {
        lock(&self.stage).cancel_outlet(self.id);
    }
}

/// Runs an active stage on its own task.
struct StageDriver {
    stage: SharedStage,
}

impl Future for StageDriver {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        lock(&self.stage).poll_driver(cx)
    }
}

/// Assembles a custom stage: its inlets (each connected to a source), its
/// outlets, and its logic. See the [module docs](self).
pub struct GraphStageBuilder {
    inlets: Vec<InletState>,
    outlet_slots: Vec<Box<dyn Any + Send>>,
}

impl Default for GraphStageBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for GraphStageBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphStageBuilder")
            .field("inlets", &self.inlets.len())
            .field("outlets", &self.outlet_slots.len())
            .finish()
    }
}

impl GraphStageBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        GraphStageBuilder {
            inlets: Vec::new(),
            outlet_slots: Vec::new(),
        }
    }

    /// Adds an inlet fed by `source` (its materialized value is dropped; take
    /// it first with [`Source::pre_materialize`] if you need it).
    pub fn add_inlet<S, T, M>(&mut self, source: Source<S, M>) -> Inlet<T>
    where
        S: Stream<Item = Item<T>> + Send + 'static,
        T: Send + 'static,
    {
        let id = self.inlets.len();
        self.inlets.push(InletState {
            poller: Some(Box::new(Poller {
                stream: Box::pin(source.into_stream()),
                _t: PhantomData,
            })),
            slot: Box::new(None::<T>),
            pulled: false,
            available: false,
            closed: false,
        });
        Inlet {
            id,
            _t: PhantomData,
        }
    }

    /// Adds an outlet.
    pub fn add_outlet<T: Send + 'static>(&mut self) -> Outlet<T> {
        let id = self.outlet_slots.len();
        self.outlet_slots.push(Box::new(None::<T>));
        Outlet {
            id,
            _t: PhantomData,
        }
    }

    /// Builds a passive stage: it runs whenever one of its outlets is polled.
    pub fn build<L: GraphStageLogic>(self, logic: L) -> StageOutlets {
        self.build_inner(logic, false)
    }

    /// Builds an active stage: besides running when its outlets are polled, it
    /// runs on a tokio task of its own (spawned when an outlet is first polled),
    /// so inlet pushes, timers and callbacks are handled without downstream demand.
    pub fn build_active<L: GraphStageLogic>(self, logic: L) -> StageOutlets {
        self.build_inner(logic, true)
    }

    fn build_inner<L: GraphStageLogic>(self, logic: L, active: bool) -> StageOutlets {
        let n_out = self.outlet_slots.len();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let outlets = self
            .outlet_slots
            .into_iter()
            .map(|slot| OutletState {
                slot,
                has_elem: false,
                pulled: false,
                cancelled: false,
                end: None,
                end_delivered: false,
            })
            .collect();
        let core = Core {
            logic,
            ports: Ports {
                inlets: self.inlets,
                outlets,
                timers: Vec::new(),
                events_tx,
                status: Status::Running,
                dirty: Vec::new(),
            },
            events_rx,
            started: false,
            post_stopped: false,
            wakers: Arc::new(WakerSet {
                wakers: Mutex::new(vec![None; n_out + 1]),
            }),
            driver_slot: n_out,
        };
        let stage: SharedStage = Arc::new(Mutex::new(core));
        StageOutlets {
            taken: vec![false; n_out],
            driver: active.then(|| Arc::new(Mutex::new(Some(stage.clone())))),
            stage,
        }
    }
}

/// The outlets of a built stage; take each one's [`Source`] once.
pub struct StageOutlets {
    stage: SharedStage,
    taken: Vec<bool>,
    driver: Option<DriverSlot>,
}

impl fmt::Debug for StageOutlets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageOutlets")
            .field("outlets", &self.taken.len())
            .finish()
    }
}

impl Drop for StageOutlets {
    /// Outlets never taken count as cancelled by downstream.
    fn drop(&mut self) {
        for (k, taken) in self.taken.iter().enumerate() {
            if !taken {
                lock(&self.stage).cancel_outlet(k);
            }
        }
    }
}

impl StageOutlets {
    /// The source of `outlet`'s elements. Errors if it was taken already.
    pub fn source<T: Send + 'static>(
        &mut self,
        outlet: Outlet<T>,
    ) -> Result<Source<StageOutlet<T>, NotUsed>, StreamError> {
        match self.taken.get_mut(outlet.id) {
            Some(t) if !*t => *t = true,
            Some(_) => return Err(protocol(format!("outlet {} taken twice", outlet.id))),
            None => return Err(protocol(format!("no outlet {} in this stage", outlet.id))),
        }
        Ok(Source::from_items(StageOutlet {
            stage: self.stage.clone(),
            id: outlet.id,
            driver: self.driver.clone(),
            _t: PhantomData,
        }))
    }
}
