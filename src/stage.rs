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
//! A handler that panics fails it the same way, with [`StreamError::Abrupt`]
//! (the logic is not called again, not even `post_stop`); so does dropping an
//! outlet while its consumer's thread unwinds from a panic (a handler that
//! panicked then would abort the process, so none runs).
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

use std::any::{Any, TypeId};
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

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
    signal: Arc<Signal>,
}

impl<E> Clone for AsyncCallback<E> {
    fn clone(&self) -> Self {
        AsyncCallback {
            tx: self.tx.clone(),
            signal: self.signal.clone(),
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
        self.tx.send(event).map_err(|e| e.0)?;
        self.signal.notify();
        Ok(())
    }

    /// Whether the stage has stopped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

// ---------------------------------------------------------------------------
// Ports, type-erased.

/// A type-erased `Option<T>`: the element an inlet delivered or an outlet was
/// pushed. Its type is checked against the `TypeId` it was made with: a
/// compare with a constant, where `dyn Any` downcasting makes a virtual call
/// (four per element, a measurable share of a stage's per-element cost).
struct Slot {
    ty: TypeId,
    value: Box<dyn Any + Send>,
}

impl Slot {
    fn new<T: Send + 'static>() -> Self {
        Slot {
            ty: TypeId::of::<Option<T>>(),
            value: Box::new(None::<T>),
        }
    }

    /// The slot as an `Option<T>`, if that is its type.
    #[inline]
    fn get<T: 'static>(&mut self) -> Option<&mut Option<T>> {
        if self.ty != TypeId::of::<Option<T>>() {
            return None;
        }
        let p: *mut (dyn Any + Send) = &mut *self.value;
        // SAFETY: `value` is only ever written by `new`, which boxes an
        // `Option<T>` and records `TypeId::of::<Option<T>>()` in `ty`; the ids
        // are equal, so the pointee is an `Option<T>` (what `downcast_mut`
        // checks, minus its virtual call). The reference borrows `self`
        // mutably, so it is unique.
        Some(unsafe { &mut *p.cast::<Option<T>>() })
    }
}

trait InletPoller: Send {
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        slot: &mut Slot,
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
        slot: &mut Slot,
    ) -> Poll<Option<Result<(), StreamError>>> {
        match self.stream.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(x))) => match slot.get::<T>() {
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
    slot: Slot,
    pulled: bool,
    /// Must be polled without waiting for a wake-up: pulled, or the stage was
    /// woken, since it was last polled.
    fresh: bool,
    available: bool,
    closed: bool,
}

#[derive(Clone)]
enum OutletEnd {
    Completed,
    Failed(StreamError),
}

struct OutletState {
    slot: Slot,
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
    /// Must be polled without waiting for a wake-up (scheduled, re-armed, or
    /// the stage was woken, since it was last polled).
    fresh: bool,
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

/// No outlet is being polled (the driver or a cancellation runs the stage).
const NO_OUTLET: usize = usize::MAX;

struct Ports<E> {
    inlets: Vec<InletState>,
    outlets: Vec<OutletState>,
    timers: Vec<Timer>,
    /// Some timer is `fresh`.
    fresh_timers: bool,
    /// Some inlet may be `fresh`.
    any_fresh: bool,
    events_tx: mpsc::UnboundedSender<E>,
    signal: Arc<Signal>,
    status: Status,
    /// The outlet whose poll runs the stage now: it sees its own changes on
    /// return, without a wake-up.
    polling: usize,
    /// Outlets whose state changed: their tasks are woken when the stage yields.
    dirty: Vec<usize>,
}

fn protocol(msg: impl Into<String>) -> StreamError {
    StreamError::Protocol(msg.into())
}

#[cold]
#[inline(never)]
fn port_error(what: &str, id: usize, how: &str) -> StreamError {
    if how.is_empty() {
        protocol(format!("{what} {id}"))
    } else {
        protocol(format!("{what} {id} {how}"))
    }
}

#[cold]
#[inline(never)]
fn pull_error(st: Option<&InletState>, id: usize) -> StreamError {
    match st {
        None => port_error("no inlet", id, "in this stage"),
        Some(st) if st.closed => port_error("pull of closed inlet", id, ""),
        Some(st) if st.pulled => port_error("inlet", id, "pulled twice"),
        Some(_) => port_error("pull of inlet", id, "before grabbing its element"),
    }
}

#[cold]
#[inline(never)]
fn push_error(st: Option<&OutletState>, id: usize) -> StreamError {
    match st {
        None => port_error("no outlet", id, "in this stage"),
        Some(st) if st.cancelled || st.end.is_some() => port_error("push to closed outlet", id, ""),
        Some(_) => port_error(
            "push to outlet",
            id,
            "without demand (backpressure violated)",
        ),
    }
}

impl<E> StageContext<'_, E> {
    /// Asks `inlet`'s upstream for one element; `on_push` follows when it arrives.
    /// Pulling twice, pulling a closed inlet, or pulling while an element waits
    /// to be grabbed is an error.
    #[inline]
    pub fn pull<T>(&mut self, inlet: Inlet<T>) -> Result<(), StreamError> {
        match self.ports.inlets.get_mut(inlet.id) {
            Some(st) if !st.closed && !st.pulled && !st.available => {
                st.pulled = true;
                st.fresh = true;
                self.ports.any_fresh = true;
                Ok(())
            }
            st => Err(pull_error(st.map(|s| &*s), inlet.id)),
        }
    }

    /// Takes the element that arrived on `inlet`.
    #[inline]
    pub fn grab<T: 'static>(&mut self, inlet: Inlet<T>) -> Result<T, StreamError> {
        let elem = match self.ports.inlets.get_mut(inlet.id) {
            Some(st) if st.available => {
                st.available = false;
                st.slot.get::<T>().and_then(Option::take)
            }
            Some(_) => return Err(port_error("grab of inlet", inlet.id, "with no element")),
            None => return Err(port_error("no inlet", inlet.id, "in this stage")),
        };
        elem.ok_or_else(|| port_error("inlet", inlet.id, "slot type mismatch"))
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
    #[inline]
    pub fn push<T: 'static>(&mut self, outlet: Outlet<T>, elem: T) -> Result<(), StreamError> {
        let id = outlet.id;
        // `pulled` is false once the outlet is cancelled or ended.
        match self.ports.outlets.get_mut(id) {
            Some(st) if st.pulled => match st.slot.get::<T>() {
                Some(slot) => {
                    *slot = Some(elem);
                    st.has_elem = true;
                    st.pulled = false;
                    self.ports.changed(id);
                    Ok(())
                }
                None => Err(port_error("outlet", id, "slot type mismatch")),
            },
            st => Err(push_error(st.map(|s| &*s), id)),
        }
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
                self.ports.changed(outlet.id);
            }
        }
    }

    /// Fails `outlet` with `err`.
    pub fn fail<T>(&mut self, outlet: Outlet<T>, err: StreamError) {
        if let Some(st) = self.ports.outlets.get_mut(outlet.id) {
            if st.end.is_none() {
                st.end = Some(OutletEnd::Failed(err));
                st.pulled = false;
                self.ports.changed(outlet.id);
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
        self.schedule(key, delay, None);
    }

    /// Fires [`on_timer`](GraphStageLogic::on_timer) with `key` every `interval`
    /// (replacing a timer with the same key).
    pub fn schedule_periodically(&mut self, key: u64, interval: Duration) {
        let interval = interval.max(Duration::from_micros(1));
        self.schedule(key, interval, Some(interval));
    }

    fn schedule(&mut self, key: u64, delay: Duration, period: Option<Duration>) {
        self.cancel_timer(key);
        self.ports.timers.push(Timer {
            key,
            sleep: Box::pin(tokio::time::sleep(delay)),
            period,
            fresh: true,
        });
        self.ports.fresh_timers = true;
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
            signal: self.ports.signal.clone(),
        }
    }
}

impl<E> Ports<E> {
    fn running(&self) -> bool {
        matches!(self.status, Status::Running)
    }

    /// Outlet `id` changed: its task must see it.
    #[inline]
    fn changed(&mut self, id: usize) {
        if id != self.polling {
            self.dirty.push(id);
        }
    }

    /// A handler's result: an `Err` fails the stage.
    #[inline]
    fn handle(&mut self, r: Result<(), StreamError>) {
        if let Err(e) = r {
            self.failed(e);
        }
    }

    #[cold]
    #[inline(never)]
    fn failed(&mut self, e: StreamError) {
        tracing::debug!(error = %e, "custom stage failed");
        self.stop(OutletEnd::Failed(e));
    }

    fn stop(&mut self, end: OutletEnd) {
        if matches!(self.status, Status::Stopped) {
            return;
        }
        self.status = Status::Stopped;
        for i in 0..self.outlets.len() {
            let o = &mut self.outlets[i];
            if o.end.is_none() {
                o.end = Some(end.clone());
            }
            o.pulled = false;
            self.changed(i);
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

    /// Wakes the tasks of the outlets that changed.
    fn wake_dirty(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        // Drained, not taken: the buffer is reused, no allocation per push.
        for j in self.dirty.drain(..) {
            self.signal.wake_slot(j);
        }
    }
}

// ---------------------------------------------------------------------------
// The interpreter.

/// What a stage shares, outside its lock, with the waker it hands to its
/// inlets and timers and with its async callbacks.
///
/// The per-element path touches neither atomics nor wakers: a round polls only
/// the inlets pulled and the timers scheduled since they were last polled,
/// unless `woken` says that something the stage waits on became ready; then it
/// polls everything waiting (and drains the events).
struct Signal {
    /// A source, timer or async callback woke the stage.
    woken: AtomicBool,
    /// The tasks to wake: one slot per outlet, then the driver's. Waking does
    /// not take them out, so a task registers once, not on every poll.
    wakers: Mutex<Vec<Option<Waker>>>,
}

impl Signal {
    fn wakers(&self) -> MutexGuard<'_, Vec<Option<Waker>>> {
        self.wakers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, slot: usize, waker: Option<Waker>) {
        if let Some(w) = self.wakers().get_mut(slot) {
            *w = waker;
        }
    }

    /// Whether the stage was woken since the last call (and clears it).
    #[inline]
    fn take_woken(&self) -> bool {
        self.woken.load(Ordering::Relaxed) && self.woken.swap(false, Ordering::Acquire)
    }

    /// Something the stage waits on is ready: every task of the stage polls it.
    fn notify(&self) {
        self.woken.store(true, Ordering::Release);
        // Woken outside the lock: a waker may be another stage's signal.
        let wakers: Vec<Waker> = self.wakers().iter().flatten().cloned().collect();
        for w in wakers {
            w.wake();
        }
    }

    fn wake_slot(&self, slot: usize) {
        let w = self.wakers().get(slot).cloned().flatten();
        if let Some(w) = w {
            w.wake();
        }
    }
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.notify();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.notify();
    }
}

struct Core<L: GraphStageLogic> {
    logic: L,
    ports: Ports<L::Event>,
    events_rx: mpsc::UnboundedReceiver<L::Event>,
    started: bool,
    post_stopped: bool,
    /// The waker inlets and timers get: it notifies `ports.signal`.
    inner_waker: Waker,
    /// What each slot of the signal's wakers holds, to skip registering the
    /// same waker again.
    registered: Vec<Option<Waker>>,
    /// The driver's slot, if the stage is active.
    driver_slot: Option<usize>,
}

/// How many rounds of handler calls one poll may run before yielding.
const ROUND_BUDGET: usize = 256;

impl<L: GraphStageLogic> Core<L> {
    fn ctx(ports: &mut Ports<L::Event>) -> StageContext<'_, L::Event> {
        StageContext { ports }
    }

    #[inline]
    fn start(&mut self) {
        if !self.started {
            self.started = true;
            let r = self.logic.pre_start(&mut Self::ctx(&mut self.ports));
            self.ports.handle(r);
        }
    }

    #[inline]
    fn register(&mut self, slot: usize, waker: &Waker) {
        let Some(r) = self.registered.get_mut(slot) else {
            return;
        };
        if r.as_ref().is_some_and(|w| w.will_wake(waker)) {
            return;
        }
        *r = Some(waker.clone());
        self.ports.signal.set(slot, Some(waker.clone()));
    }

    fn unregister(&mut self, slot: usize) {
        if let Some(r) = self.registered.get_mut(slot) {
            if r.take().is_some() {
                self.ports.signal.set(slot, None);
            }
        }
    }

    /// Runs handlers until nothing more can happen without new input, or the
    /// budget runs out (then `cx` is woken to continue).
    fn drive(&mut self, cx: &mut Context<'_>) {
        self.start();
        let mut budget = ROUND_BUDGET;
        loop {
            let progress = self.ports.running() && self.round();
            if self.ports.running() && self.ports.all_outlets_closed() {
                self.ports.stop(OutletEnd::Completed);
            }
            if !progress {
                break;
            }
            budget -= 1;
            if budget == 0 {
                if self.ports.running() {
                    // Out of budget: let other tasks run, then poll everything again.
                    self.ports.signal.woken.store(true, Ordering::Release);
                    cx.waker().wake_by_ref();
                }
                break;
            }
        }
        self.finish_if_stopped();
    }

    /// One round of handler calls; whether any ran.
    fn round(&mut self) -> bool {
        let Core {
            logic,
            ports,
            events_rx,
            inner_waker,
            ..
        } = self;
        let woken = ports.signal.take_woken();
        if !woken && !ports.any_fresh && !ports.fresh_timers {
            return false;
        }
        let mut cx = Context::from_waker(inner_waker);
        let mut progress = false;
        if woken {
            for st in ports.inlets.iter_mut() {
                st.fresh = true;
            }
            ports.any_fresh = true;
            for t in ports.timers.iter_mut() {
                t.fresh = true;
            }
            ports.fresh_timers = !ports.timers.is_empty();
            // Events from async callbacks.
            while ports.running() {
                let Ok(ev) = events_rx.try_recv() else {
                    break;
                };
                let r = logic.on_event(&mut Self::ctx(ports), ev);
                ports.handle(r);
                progress = true;
            }
        }
        // Timers.
        if ports.fresh_timers {
            let mut t = 0;
            while ports.running() && t < ports.timers.len() {
                let timer = &mut ports.timers[t];
                if !timer.fresh {
                    t += 1;
                    continue;
                }
                timer.fresh = false;
                if timer.sleep.as_mut().poll(&mut cx).is_pending() {
                    t += 1;
                    continue;
                }
                let key = timer.key;
                match timer.period {
                    Some(p) => {
                        let next = timer.sleep.deadline() + p;
                        timer.sleep.as_mut().reset(next.max(Instant::now()));
                        timer.fresh = true;
                        t += 1;
                    }
                    None => {
                        ports.timers.remove(t);
                    }
                }
                // The handler may add or remove timers: those not reached stay fresh.
                let r = logic.on_timer(&mut Self::ctx(ports), key);
                ports.handle(r);
                progress = true;
            }
            ports.fresh_timers = ports.timers.iter().any(|t| t.fresh);
        }
        // Inlets pulled (since their last poll, or all if woken); a handler
        // that pulls sets `any_fresh` again.
        if !ports.any_fresh {
            return progress;
        }
        ports.any_fresh = false;
        for i in 0..ports.inlets.len() {
            if !ports.running() {
                break;
            }
            let st = &mut ports.inlets[i];
            if !st.fresh || !st.pulled || st.available || st.closed {
                continue;
            }
            st.fresh = false;
            let Some(poller) = st.poller.as_mut() else {
                continue;
            };
            let r = match poller.poll(&mut cx, &mut st.slot) {
                Poll::Pending => continue,
                Poll::Ready(Some(Ok(()))) => {
                    st.pulled = false;
                    st.available = true;
                    logic.on_push(&mut Self::ctx(ports), InletId(i))
                }
                Poll::Ready(Some(Err(e))) => {
                    st.pulled = false;
                    st.closed = true;
                    st.poller = None;
                    logic.on_upstream_failure(&mut Self::ctx(ports), InletId(i), e)
                }
                Poll::Ready(None) => {
                    st.pulled = false;
                    st.closed = true;
                    st.poller = None;
                    logic.on_upstream_finish(&mut Self::ctx(ports), InletId(i))
                }
            };
            ports.handle(r);
            progress = true;
        }
        progress
    }

    fn finish_if_stopped(&mut self) {
        if !self.ports.running() && !self.post_stopped {
            self.close();
            self.logic.post_stop();
        }
    }

    /// The bookkeeping of a stopped stage: no more events, and an active
    /// stage's driver ends now, not at runtime shutdown.
    fn close(&mut self) {
        self.post_stopped = true;
        self.events_rx.close();
        if let Some(d) = self.driver_slot {
            self.ports.signal.wake_slot(d);
        }
    }
}

/// The type-erased interface the outlet streams use.
trait ErasedStage: Send {
    /// Polls outlet `k`; `Ok` gives its slot, holding the element.
    fn poll_outlet(
        &mut self,
        k: usize,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<&mut Slot, StreamError>>>;
    fn cancel_outlet(&mut self, k: usize);
    fn poll_driver(&mut self, cx: &mut Context<'_>) -> Poll<()>;
    /// Fails the stage without calling the logic again (after one of its
    /// handlers panicked, or while a consumer unwinds from a panic).
    fn abort(&mut self, err: StreamError);
}

const HANDLER_PANICKED: &str = "a handler of a custom stage panicked";

/// Runs `poll` on the stage; if a handler panics, fails the stage with
/// [`StreamError::Abrupt`] (every outlet gets it, every inlet is cancelled)
/// and gives `None`, instead of leaving the stage half-updated and its other
/// outlets waiting.
fn guarded<R>(stage: &SharedStage, poll: impl FnOnce(&mut dyn ErasedStage) -> R) -> Option<R> {
    let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut guard = lock(stage);
        poll(&mut *guard)
    }));
    match polled {
        Ok(r) => Some(r),
        Err(_) => {
            tracing::error!("{HANDLER_PANICKED}: the stage failed");
            lock(stage).abort(StreamError::Abrupt(HANDLER_PANICKED));
            None
        }
    }
}

impl<L: GraphStageLogic> ErasedStage for Core<L> {
    fn poll_outlet(
        &mut self,
        k: usize,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<&mut Slot, StreamError>>> {
        self.register(k, cx.waker());
        self.start();
        let running = self.ports.running();
        let o = &mut self.ports.outlets[k];
        if !o.has_elem && o.end.is_none() && running {
            if !o.pulled && !o.cancelled {
                o.pulled = true;
                self.ports.polling = k;
                let r = self
                    .logic
                    .on_pull(&mut Self::ctx(&mut self.ports), OutletId(k));
                self.ports.handle(r);
            }
            self.ports.polling = k;
            self.drive(cx);
            self.ports.polling = NO_OUTLET;
        }
        self.finish_if_stopped();
        self.ports.wake_dirty();
        let o = &mut self.ports.outlets[k];
        if o.has_elem {
            o.has_elem = false;
            return Poll::Ready(Some(Ok(&mut o.slot)));
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

    fn cancel_outlet(&mut self, k: usize) {
        self.unregister(k);
        let o = &mut self.ports.outlets[k];
        if o.cancelled {
            return;
        }
        o.cancelled = true;
        o.pulled = false;
        let open = o.end.is_none();
        if self.ports.running() && open {
            self.start();
            self.ports.polling = k;
            let r = self
                .logic
                .on_downstream_finish(&mut Self::ctx(&mut self.ports), OutletId(k));
            self.ports.handle(r);
            if self.ports.running() && self.ports.all_outlets_closed() {
                self.ports.stop(OutletEnd::Completed);
            }
            self.ports.polling = NO_OUTLET;
        }
        self.finish_if_stopped();
        self.ports.wake_dirty();
    }

    fn abort(&mut self, err: StreamError) {
        self.ports.stop(OutletEnd::Failed(err));
        if !self.post_stopped {
            self.close();
        }
        self.ports.wake_dirty();
    }

    fn poll_driver(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(d) = self.driver_slot {
            self.register(d, cx.waker());
        }
        if self.ports.running() {
            self.drive(cx);
        }
        self.finish_if_stopped();
        self.ports.wake_dirty();
        if self.ports.running() {
            Poll::Pending
        } else {
            if let Some(d) = self.driver_slot {
                self.unregister(d);
            }
            Poll::Ready(())
        }
    }
}

type SharedStage = Arc<Mutex<dyn ErasedStage>>;

#[inline]
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
                let driven = stage.clone();
                if let Err(e) = crate::queue::spawn("an active custom stage", StageDriver { stage })
                {
                    lock(&driven).abort(e);
                }
            }
        }
        let id = self.id;
        let mut take = |stage: &mut dyn ErasedStage| match stage.poll_outlet(id, cx) {
            Poll::Ready(Some(Ok(slot))) => match slot.get::<T>().and_then(Option::take) {
                Some(x) => Poll::Ready(Some(Ok(x))),
                None => Poll::Ready(Some(Err(protocol("outlet slot type mismatch")))),
            },
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        };
        match guarded(&self.stage, &mut take) {
            Some(p) => p,
            // The stage failed: this outlet now reports it (once) and ends.
            None => take(&mut *lock(&self.stage)),
        }
    }
}

impl<T> Drop for StageOutlet<T> {
    fn drop(&mut self) {
        cancel_guarded(&self.stage, self.id);
    }
}

/// Cancels outlet `k` with the panic guard of the other handlers: a panicking
/// `on_downstream_finish` (or `post_stop`) fails the stage. While the thread
/// unwinds already (a consumer panicked), a second panic would abort the
/// process, so no handler runs: the stage fails at once.
fn cancel_guarded(stage: &SharedStage, k: usize) {
    if std::thread::panicking() {
        lock(stage).abort(StreamError::Abrupt(CONSUMER_PANICKED));
        return;
    }
    let _ = guarded(stage, |s| s.cancel_outlet(k));
}

const CONSUMER_PANICKED: &str = "a consumer of a custom stage's outlet panicked";

/// Runs an active stage on its own task.
struct StageDriver {
    stage: SharedStage,
}

impl Future for StageDriver {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        guarded(&self.stage, |stage| stage.poll_driver(cx)).unwrap_or(Poll::Ready(()))
    }
}

/// Assembles a custom stage: its inlets (each connected to a source), its
/// outlets, and its logic. See the [module docs](self).
pub struct GraphStageBuilder {
    inlets: Vec<InletState>,
    outlet_slots: Vec<Slot>,
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
            slot: Slot::new::<T>(),
            pulled: false,
            fresh: false,
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
        self.outlet_slots.push(Slot::new::<T>());
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
        let slots = n_out + usize::from(active);
        let signal = Arc::new(Signal {
            // The first round polls everything.
            woken: AtomicBool::new(true),
            wakers: Mutex::new(vec![None; slots]),
        });
        let core = Core {
            logic,
            ports: Ports {
                inlets: self.inlets,
                outlets,
                timers: Vec::new(),
                fresh_timers: false,
                any_fresh: false,
                events_tx,
                signal: signal.clone(),
                status: Status::Running,
                polling: NO_OUTLET,
                dirty: Vec::new(),
            },
            events_rx,
            started: false,
            post_stopped: false,
            inner_waker: Waker::from(signal),
            registered: vec![None; slots],
            driver_slot: active.then_some(n_out),
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
                cancel_guarded(&self.stage, k);
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
