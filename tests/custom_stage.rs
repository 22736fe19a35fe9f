//! Custom stages (GraphStageLogic): the push/pull protocol is enforced,
//! timers and async callbacks work, active stages run without demand, a
//! two-input stage keeps backpressure, and failure/cancellation propagate.

mod common;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::settle;
use flowstage::prelude::*;
use flowstage::stage::*;
use flowstage::testkit::{TestSink, TestSource};
use tokio::time::Instant;

type Shared<T> = Arc<Mutex<T>>;

// ---------------------------------------------------------------------------
// A stage that pushes without demand.

struct EagerPusher {
    out: Outlet<u32>,
    push_result: Shared<Option<Result<(), StreamError>>>,
    stopped: Arc<AtomicU64>,
}

impl GraphStageLogic for EagerPusher {
    type Event = ();

    fn pre_start(&mut self, ctx: &mut StageContext<'_, ()>) -> Result<(), StreamError> {
        assert!(!ctx.has_demand(self.out));
        // No on_pull yet: there is no demand.
        let r = ctx.push(self.out, 1);
        *self.push_result.lock().unwrap() = Some(r.clone());
        r
    }

    fn on_push(
        &mut self,
        _ctx: &mut StageContext<'_, ()>,
        _inlet: InletId,
    ) -> Result<(), StreamError> {
        Ok(())
    }

    fn on_pull(
        &mut self,
        _ctx: &mut StageContext<'_, ()>,
        _outlet: OutletId,
    ) -> Result<(), StreamError> {
        Ok(())
    }

    fn post_stop(&mut self) {
        self.stopped.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn push_without_demand_is_a_protocol_error_that_fails_the_stage() {
    let mut b = GraphStageBuilder::new();
    let out = b.add_outlet();
    let push_result = Arc::new(Mutex::new(None));
    let stopped = Arc::new(AtomicU64::new(0));
    let mut outlets = b.build(EagerPusher {
        out,
        push_result: push_result.clone(),
        stopped: stopped.clone(),
    });
    let mut sub = outlets.source(out).unwrap().run_with(TestSink::probe());
    let e = sub.expect_error().await;
    assert!(matches!(e, StreamError::Protocol(_)), "{e}");
    assert!(matches!(
        push_result.lock().unwrap().clone(),
        Some(Err(StreamError::Protocol(_)))
    ));
    sub.expect_complete().await;
    assert_eq!(stopped.load(Ordering::SeqCst), 1, "post_stop runs once");
}

/// Pushes twice for one pull.
struct DoublePusher {
    out: Outlet<u32>,
    second: Shared<Option<Result<(), StreamError>>>,
}

impl GraphStageLogic for DoublePusher {
    type Event = ();
    fn on_push(
        &mut self,
        _ctx: &mut StageContext<'_, ()>,
        _inlet: InletId,
    ) -> Result<(), StreamError> {
        Ok(())
    }
    fn on_pull(
        &mut self,
        ctx: &mut StageContext<'_, ()>,
        _outlet: OutletId,
    ) -> Result<(), StreamError> {
        ctx.push(self.out, 1)?;
        assert!(!ctx.has_demand(self.out), "a push consumes the demand");
        let r = ctx.push(self.out, 2);
        *self.second.lock().unwrap() = Some(r.clone());
        r
    }
}

#[tokio::test(start_paused = true)]
async fn second_push_for_one_pull_is_refused() {
    let mut b = GraphStageBuilder::new();
    let out = b.add_outlet();
    let second = Arc::new(Mutex::new(None));
    let mut outlets = b.build(DoublePusher {
        out,
        second: second.clone(),
    });
    let mut sub = outlets.source(out).unwrap().run_with(TestSink::probe());
    // The first element was pushed legally and is delivered; then the failure.
    assert_eq!(sub.expect_next().await, 1);
    assert!(matches!(sub.expect_error().await, StreamError::Protocol(_)));
    assert!(matches!(
        second.lock().unwrap().clone(),
        Some(Err(StreamError::Protocol(_)))
    ));
}

// ---------------------------------------------------------------------------
// Pull rules.

struct DoublePuller {
    inp: Inlet<u32>,
    second: Shared<Option<Result<(), StreamError>>>,
}

impl GraphStageLogic for DoublePuller {
    type Event = ();
    fn on_push(
        &mut self,
        _ctx: &mut StageContext<'_, ()>,
        _inlet: InletId,
    ) -> Result<(), StreamError> {
        Ok(())
    }
    fn on_pull(
        &mut self,
        ctx: &mut StageContext<'_, ()>,
        _outlet: OutletId,
    ) -> Result<(), StreamError> {
        ctx.pull(self.inp)?;
        assert!(ctx.has_been_pulled(self.inp));
        let r = ctx.pull(self.inp);
        *self.second.lock().unwrap() = Some(r.clone());
        r
    }
}

#[tokio::test(start_paused = true)]
async fn pulling_twice_is_an_error_and_cancels_the_inlets() {
    let (publisher, src) = TestSource::probe::<u32>();
    let mut b = GraphStageBuilder::new();
    let inp = b.add_inlet(src);
    let out = b.add_outlet::<u32>();
    let second = Arc::new(Mutex::new(None));
    let mut outlets = b.build(DoublePuller {
        inp,
        second: second.clone(),
    });
    let mut sub = outlets.source(out).unwrap().run_with(TestSink::probe());
    assert!(matches!(sub.expect_error().await, StreamError::Protocol(_)));
    assert!(matches!(
        second.lock().unwrap().clone(),
        Some(Err(StreamError::Protocol(_)))
    ));
    publisher.expect_cancellation().await;
    assert_eq!(publisher.delivered(), 0);
}

/// Misuses grab: grabs before anything arrived.
struct EarlyGrab {
    inp: Inlet<u32>,
}

impl GraphStageLogic for EarlyGrab {
    type Event = ();
    fn on_push(
        &mut self,
        _ctx: &mut StageContext<'_, ()>,
        _inlet: InletId,
    ) -> Result<(), StreamError> {
        Ok(())
    }
    fn on_pull(
        &mut self,
        ctx: &mut StageContext<'_, ()>,
        _outlet: OutletId,
    ) -> Result<(), StreamError> {
        assert!(!ctx.is_available(self.inp));
        ctx.grab(self.inp).map(|_| ())
    }
}

#[tokio::test(start_paused = true)]
async fn grab_without_element_is_an_error() {
    let mut b = GraphStageBuilder::new();
    let inp = b.add_inlet(Source::single(1u32));
    let out = b.add_outlet::<u32>();
    let mut outlets = b.build(EarlyGrab { inp });
    let e = outlets
        .source(out)
        .unwrap()
        .run_with(Sink::ignore())
        .await
        .unwrap_err();
    assert!(matches!(e, StreamError::Protocol(_)), "{e}");
}

#[tokio::test]
async fn an_outlet_can_be_taken_once() {
    let mut b = GraphStageBuilder::new();
    let out = b.add_outlet::<u32>();
    let mut outlets = b.build(EarlyGrab {
        inp: GraphStageBuilder::new().add_inlet(Source::empty::<u32>()),
    });
    assert!(outlets.source(out).is_ok());
    assert!(matches!(outlets.source(out), Err(StreamError::Protocol(_))));
}

// ---------------------------------------------------------------------------
// A plain one-to-one stage: inlets are pulled only when the stage asks.

struct MapStage {
    inp: Inlet<u32>,
    out: Outlet<u32>,
    fail_on: Option<u32>,
}

impl GraphStageLogic for MapStage {
    type Event = ();
    fn on_push(
        &mut self,
        ctx: &mut StageContext<'_, ()>,
        _inlet: InletId,
    ) -> Result<(), StreamError> {
        let x = ctx.grab(self.inp)?;
        if Some(x) == self.fail_on {
            return Err(StreamError::msg(format!("stage failed on {x}")));
        }
        ctx.push(self.out, x + 1)
    }
    fn on_pull(
        &mut self,
        ctx: &mut StageContext<'_, ()>,
        _outlet: OutletId,
    ) -> Result<(), StreamError> {
        ctx.pull(self.inp)
    }
}

fn map_stage<S>(src: Source<S>, fail_on: Option<u32>) -> Source<StageOutlet<u32>>
where
    S: futures::Stream<Item = Item<u32>> + Send + 'static,
{
    let mut b = GraphStageBuilder::new();
    let inp = b.add_inlet(src);
    let out = b.add_outlet();
    let mut outlets = b.build(MapStage { inp, out, fail_on });
    outlets.source(out).unwrap()
}

#[tokio::test(start_paused = true)]
async fn stage_pulls_only_on_demand() {
    let (publisher, src) = TestSource::probe::<u32>();
    let mut sub = map_stage(src, None).run_with(TestSink::probe());
    for x in 0..5 {
        publisher.send_next(x);
    }
    assert_eq!(sub.expect_next_n(2).await, [1, 2]);
    settle().await;
    assert_eq!(publisher.delivered(), 2, "nothing pulled beyond demand");
    let rest = sub.expect_next_n(3).await;
    assert_eq!(rest, (2..5).map(|x| x + 1).collect::<Vec<_>>());
    publisher.send_complete();
    sub.expect_complete().await;
    // And with a real sink, every element.
    let v: Vec<u32> = (0..100).collect();
    let got = map_stage(Source::from_iter(v.clone()), None)
        .run_with(Sink::collect())
        .await
        .unwrap();
    assert_eq!(got, v.iter().map(|x| x + 1).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn stage_failure_and_upstream_failure_propagate() {
    let (publisher, src) = TestSource::probe::<u32>();
    let mut sub = map_stage(src, Some(3)).run_with(TestSink::probe());
    for x in 1..=4 {
        publisher.send_next(x);
    }
    assert_eq!(sub.expect_next_n(2).await, [2, 3]);
    assert_eq!(sub.expect_error().await.to_string(), "stage failed on 3");
    publisher.expect_cancellation().await;

    let (publisher, src) = TestSource::probe::<u32>();
    let mut sub = map_stage(src, None).run_with(TestSink::probe());
    publisher.send_error(StreamError::msg("from upstream"));
    assert_eq!(sub.expect_error().await.to_string(), "from upstream");
}

#[tokio::test(start_paused = true)]
async fn stage_cancellation_propagates_upstream() {
    let (publisher, src) = TestSource::probe::<u32>();
    let mut sub = map_stage(src, None).run_with(TestSink::probe());
    publisher.send_next(1);
    assert_eq!(sub.expect_next().await, 2);
    sub.cancel();
    publisher.expect_cancellation().await;
}

// ---------------------------------------------------------------------------
// Timers.

struct Timers {
    out: Outlet<(u64, Duration)>,
    start: Instant,
    fired: VecDeque<(u64, Duration)>,
    periodic_fired: u32,
    once_fired: bool,
}

const ONCE: u64 = 1;
const PERIODIC: u64 = 2;

impl Timers {
    fn flush(&mut self, ctx: &mut StageContext<'_, ()>) -> Result<(), StreamError> {
        if ctx.has_demand(self.out) {
            if let Some(x) = self.fired.pop_front() {
                ctx.push(self.out, x)?;
            }
        }
        if self.fired.is_empty() && self.once_fired && !ctx.is_timer_active(PERIODIC) {
            ctx.complete(self.out);
        }
        Ok(())
    }
}

impl GraphStageLogic for Timers {
    type Event = ();
    fn pre_start(&mut self, ctx: &mut StageContext<'_, ()>) -> Result<(), StreamError> {
        ctx.schedule_once(ONCE, Duration::from_millis(100));
        ctx.schedule_periodically(PERIODIC, Duration::from_millis(30));
        assert!(ctx.is_timer_active(ONCE) && ctx.is_timer_active(PERIODIC));
        Ok(())
    }
    fn on_push(
        &mut self,
        _ctx: &mut StageContext<'_, ()>,
        _inlet: InletId,
    ) -> Result<(), StreamError> {
        Ok(())
    }
    fn on_pull(
        &mut self,
        ctx: &mut StageContext<'_, ()>,
        _outlet: OutletId,
    ) -> Result<(), StreamError> {
        self.flush(ctx)
    }
    fn on_timer(&mut self, ctx: &mut StageContext<'_, ()>, key: u64) -> Result<(), StreamError> {
        self.fired.push_back((key, Instant::now() - self.start));
        match key {
            ONCE => {
                assert!(
                    !ctx.is_timer_active(ONCE),
                    "a once timer is gone after it fired"
                );
                self.once_fired = true;
            }
            _ => {
                self.periodic_fired += 1;
                if self.periodic_fired == 4 {
                    ctx.cancel_timer(PERIODIC);
                }
            }
        }
        self.flush(ctx)
    }
}

#[tokio::test(start_paused = true)]
async fn timers_once_and_periodic() {
    for active in [false, true] {
        let mut b = GraphStageBuilder::new();
        let out = b.add_outlet();
        let logic = Timers {
            out,
            start: Instant::now(),
            fired: VecDeque::new(),
            periodic_fired: 0,
            once_fired: false,
        };
        let mut outlets = if active {
            b.build_active(logic)
        } else {
            b.build(logic)
        };
        let got = outlets
            .source(out)
            .unwrap()
            .run_with(Sink::collect())
            .await
            .unwrap();
        let ms = Duration::from_millis;
        let mut expected: Vec<(u64, Duration)> = (1..=4).map(|k| (PERIODIC, ms(30 * k))).collect();
        expected.push((ONCE, ms(100)));
        expected.sort_by_key(|e| e.1);
        assert_eq!(got, expected, "active: {active}");
    }
}

// ---------------------------------------------------------------------------
// Async callbacks, active vs passive.

struct Events {
    out: Outlet<u32>,
    /// An outlet whose cancellation does not stop the stage.
    extra: Option<Outlet<u32>>,
    callback: Shared<Option<AsyncCallback<u32>>>,
    handled: Arc<AtomicU64>,
    pending: VecDeque<u32>,
}

impl GraphStageLogic for Events {
    type Event = u32;
    fn pre_start(&mut self, ctx: &mut StageContext<'_, u32>) -> Result<(), StreamError> {
        *self.callback.lock().unwrap() = Some(ctx.async_callback());
        Ok(())
    }
    fn on_push(
        &mut self,
        _ctx: &mut StageContext<'_, u32>,
        _inlet: InletId,
    ) -> Result<(), StreamError> {
        Ok(())
    }
    fn on_pull(
        &mut self,
        ctx: &mut StageContext<'_, u32>,
        _outlet: OutletId,
    ) -> Result<(), StreamError> {
        match self.pending.pop_front() {
            Some(x) => ctx.push(self.out, x),
            None => Ok(()),
        }
    }
    fn on_downstream_finish(
        &mut self,
        ctx: &mut StageContext<'_, u32>,
        outlet: OutletId,
    ) -> Result<(), StreamError> {
        if !self.extra.is_some_and(|e| e == outlet) {
            ctx.complete_stage();
        }
        Ok(())
    }
    fn on_event(&mut self, ctx: &mut StageContext<'_, u32>, event: u32) -> Result<(), StreamError> {
        self.handled.fetch_add(1, Ordering::SeqCst);
        if event == 0 {
            ctx.complete_stage();
            return Ok(());
        }
        self.pending.push_back(event);
        if ctx.has_demand(self.out) {
            if let Some(x) = self.pending.pop_front() {
                ctx.push(self.out, x)?;
            }
        }
        Ok(())
    }
}

async fn events_stage(active: bool) {
    let mut b = GraphStageBuilder::new();
    let out = b.add_outlet();
    let callback = Arc::new(Mutex::new(None));
    let handled = Arc::new(AtomicU64::new(0));
    let logic = Events {
        out,
        extra: None,
        callback: callback.clone(),
        handled: handled.clone(),
        pending: VecDeque::new(),
    };
    let mut outlets = if active {
        b.build_active(logic)
    } else {
        b.build(logic)
    };
    let mut sub = outlets.source(out).unwrap().run_with(TestSink::probe());
    // One poll starts the stage (and, if active, its task).
    sub.expect_no_message(Duration::from_millis(10)).await;
    let cb = callback.lock().unwrap().clone().expect("pre_start ran");
    // That poll left a demand: the first event goes straight out.
    cb.invoke(10).unwrap();
    assert_eq!(sub.expect_next().await, 10);
    // Events while nobody asks.
    for x in [11, 12, 13] {
        cb.invoke(x).unwrap();
    }
    settle().await;
    let expected_handled = if active { 4 } else { 1 };
    assert_eq!(
        handled.load(Ordering::SeqCst),
        expected_handled,
        "active: {active}"
    );
    assert_eq!(sub.expect_next_n(3).await, [11, 12, 13]);
    assert_eq!(handled.load(Ordering::SeqCst), 4);
    cb.invoke(0).unwrap();
    sub.expect_complete().await;
    assert!(cb.is_closed(), "the stage has stopped");
    assert_eq!(cb.invoke(5), Err(5));
}

#[tokio::test(start_paused = true)]
async fn async_callbacks_on_an_active_stage_are_handled_without_demand() {
    events_stage(true).await;
}

#[tokio::test(start_paused = true)]
async fn async_callbacks_on_a_passive_stage_wait_for_demand() {
    events_stage(false).await;
}

// ---------------------------------------------------------------------------
// A two-input stage: data paired with the latest control value.

struct Latest {
    control: Inlet<u32>,
    data: Inlet<char>,
    out: Outlet<(u32, char)>,
    current: u32,
}

impl GraphStageLogic for Latest {
    type Event = ();
    fn pre_start(&mut self, ctx: &mut StageContext<'_, ()>) -> Result<(), StreamError> {
        ctx.pull(self.control)
    }
    fn on_push(
        &mut self,
        ctx: &mut StageContext<'_, ()>,
        inlet: InletId,
    ) -> Result<(), StreamError> {
        if self.control == inlet {
            self.current = ctx.grab(self.control)?;
            ctx.pull(self.control)
        } else {
            let c = ctx.grab(self.data)?;
            ctx.push(self.out, (self.current, c))
        }
    }
    fn on_pull(
        &mut self,
        ctx: &mut StageContext<'_, ()>,
        _outlet: OutletId,
    ) -> Result<(), StreamError> {
        ctx.pull(self.data)
    }
    fn on_upstream_finish(
        &mut self,
        ctx: &mut StageContext<'_, ()>,
        inlet: InletId,
    ) -> Result<(), StreamError> {
        if self.data == inlet {
            ctx.complete_stage();
        }
        Ok(())
    }
}

fn latest<C, D>(
    control: Source<C>,
    data: Source<D>,
    active: bool,
) -> Source<StageOutlet<(u32, char)>>
where
    C: futures::Stream<Item = Item<u32>> + Send + 'static,
    D: futures::Stream<Item = Item<char>> + Send + 'static,
{
    let mut b = GraphStageBuilder::new();
    let control = b.add_inlet(control);
    let data = b.add_inlet(data);
    let out = b.add_outlet();
    let logic = Latest {
        control,
        data,
        out,
        current: 0,
    };
    let mut outlets = if active {
        b.build_active(logic)
    } else {
        b.build(logic)
    };
    outlets.source(out).unwrap()
}

#[tokio::test(start_paused = true)]
async fn two_input_stage_keeps_backpressure_on_data_and_drains_control() {
    let (pc, control) = TestSource::probe::<u32>();
    let (pd, data) = TestSource::probe::<char>();
    let mut sub = latest(control, data, true).run_with(TestSink::probe());
    for c in ['a', 'b', 'c', 'd'] {
        pd.send_next(c);
    }
    pc.send_next(1);
    assert_eq!(sub.expect_next().await, (1, 'a'));
    // Control updates are taken at once, without downstream demand (active stage).
    pc.send_next(2);
    pc.send_next(3);
    settle().await;
    assert_eq!(pc.delivered(), 3);
    assert_eq!(
        pd.delivered(),
        1,
        "data is pulled only for downstream demand"
    );
    assert_eq!(sub.expect_next().await, (3, 'b'));
    assert_eq!(pd.delivered(), 2);
    pc.send_complete();
    assert_eq!(sub.expect_next().await, (3, 'c'), "control may end first");
    sub.cancel();
    pd.expect_cancellation().await;
}

#[tokio::test(start_paused = true)]
async fn two_input_stage_with_plain_sources() {
    let data: Vec<char> = "streams".chars().collect();
    let got = latest(Source::single(7), Source::from_iter(data.clone()), false)
        .run_with(Sink::collect())
        .await
        .unwrap();
    assert_eq!(got.iter().map(|p| p.1).collect::<Vec<_>>(), data);
    // Once the single control value arrived, it is used from then on.
    let first_seven = got
        .iter()
        .position(|p| p.0 == 7)
        .expect("the control value is used");
    assert!(got[first_seven..].iter().all(|p| p.0 == 7));
}

#[tokio::test(start_paused = true)]
async fn two_input_stage_failure_on_either_input_fails_it_and_cancels_the_other() {
    let (pc, control) = TestSource::probe::<u32>();
    let (pd, data) = TestSource::probe::<char>();
    let mut sub = latest(control, data, false).run_with(TestSink::probe());
    pd.send_next('x');
    assert_eq!(sub.expect_next().await, (0, 'x'));
    pc.send_error(StreamError::msg("control broke"));
    assert_eq!(sub.expect_error().await.to_string(), "control broke");
    pd.expect_cancellation().await;
}

#[tokio::test(start_paused = true)]
async fn two_input_stage_cancelled_by_downstream_cancels_both_inputs() {
    let (pc, control) = TestSource::probe::<u32>();
    let (pd, data) = TestSource::probe::<char>();
    let mut sub = latest(control, data, true).run_with(TestSink::probe());
    pd.send_next('x');
    assert_eq!(sub.expect_next().await, (0, 'x'));
    sub.cancel();
    pc.expect_cancellation().await;
    pd.expect_cancellation().await;
}

// ---------------------------------------------------------------------------
// Two outlets: route by parity, pulling only when the target has demand.

struct Split {
    inp: Inlet<u32>,
    even: Outlet<u32>,
    odd: Outlet<u32>,
    held: Option<u32>,
}

impl Split {
    fn step(&mut self, ctx: &mut StageContext<'_, ()>) -> Result<(), StreamError> {
        if let Some(x) = self.held {
            let target = if x % 2 == 0 { self.even } else { self.odd };
            if ctx.is_outlet_closed(target) {
                self.held = None;
            } else if ctx.has_demand(target) {
                self.held = None;
                ctx.push(target, x)?;
            } else {
                return Ok(());
            }
        }
        if self.held.is_none() && !ctx.has_been_pulled(self.inp) && !ctx.is_closed(self.inp) {
            ctx.pull(self.inp)?;
        }
        Ok(())
    }
}

impl GraphStageLogic for Split {
    type Event = ();
    fn on_push(
        &mut self,
        ctx: &mut StageContext<'_, ()>,
        _inlet: InletId,
    ) -> Result<(), StreamError> {
        self.held = Some(ctx.grab(self.inp)?);
        self.step(ctx)
    }
    fn on_pull(
        &mut self,
        ctx: &mut StageContext<'_, ()>,
        _outlet: OutletId,
    ) -> Result<(), StreamError> {
        self.step(ctx)
    }
    fn on_downstream_finish(
        &mut self,
        ctx: &mut StageContext<'_, ()>,
        _outlet: OutletId,
    ) -> Result<(), StreamError> {
        // Keep serving the other outlet.
        self.step(ctx)
    }
}

#[tokio::test(start_paused = true)]
async fn two_outlet_stage_routes_and_survives_a_cancelled_outlet() {
    let v: Vec<u32> = (0..40).collect();
    let mut b = GraphStageBuilder::new();
    let inp = b.add_inlet(Source::from_iter(v.clone()));
    let (even, odd) = (b.add_outlet(), b.add_outlet());
    let mut outlets = b.build(Split {
        inp,
        even,
        odd,
        held: None,
    });
    let de = outlets.source(even).unwrap().run_with(Sink::collect());
    let dodd = outlets.source(odd).unwrap().run_with(Sink::collect());
    assert_eq!(
        de.await.unwrap(),
        v.iter().copied().filter(|x| x % 2 == 0).collect::<Vec<_>>()
    );
    assert_eq!(
        dodd.await.unwrap(),
        v.iter().copied().filter(|x| x % 2 == 1).collect::<Vec<_>>()
    );

    let mut b = GraphStageBuilder::new();
    let inp = b.add_inlet(Source::from_iter(v.clone()));
    let (even, odd) = (b.add_outlet::<u32>(), b.add_outlet::<u32>());
    let mut outlets = b.build(Split {
        inp,
        even,
        odd,
        held: None,
    });
    let de = outlets.source(even).unwrap().run_with(Sink::collect());
    drop(outlets); // `odd` never taken: cancelled
    assert_eq!(
        de.await.unwrap(),
        v.iter().copied().filter(|x| x % 2 == 0).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------
// Completing, failing and cancelling ports from inside the stage.

/// Forwards `n` elements, then cancels its inlet and completes or fails its outlet.
struct ForwardN {
    inp: Inlet<u32>,
    out: Outlet<u32>,
    left: u32,
    then_fail: bool,
}

impl GraphStageLogic for ForwardN {
    type Event = ();
    fn on_push(
        &mut self,
        ctx: &mut StageContext<'_, ()>,
        _inlet: InletId,
    ) -> Result<(), StreamError> {
        let x = ctx.grab(self.inp)?;
        ctx.push(self.out, x)?;
        // Pulling again while the element is still being grabbed would be an error:
        assert!(!ctx.is_available(self.inp));
        self.left -= 1;
        if self.left == 0 {
            ctx.cancel(self.inp);
            assert!(ctx.is_closed(self.inp));
            assert!(
                matches!(ctx.pull(self.inp), Err(StreamError::Protocol(_))),
                "pull of a closed inlet"
            );
            if self.then_fail {
                ctx.fail(self.out, StreamError::msg("done with failure"));
            } else {
                ctx.complete(self.out);
            }
            assert!(ctx.is_outlet_closed(self.out));
        }
        Ok(())
    }
    fn on_pull(
        &mut self,
        ctx: &mut StageContext<'_, ()>,
        _outlet: OutletId,
    ) -> Result<(), StreamError> {
        ctx.pull(self.inp)
    }
}

#[tokio::test(start_paused = true)]
async fn stage_cancels_its_inlet_and_completes_or_fails_its_outlet() {
    for then_fail in [false, true] {
        let (publisher, src) = TestSource::probe::<u32>();
        let mut b = GraphStageBuilder::new();
        let inp = b.add_inlet(src);
        let out = b.add_outlet();
        let mut outlets = b.build(ForwardN {
            inp,
            out,
            left: 2,
            then_fail,
        });
        let mut sub = outlets.source(out).unwrap().run_with(TestSink::probe());
        for x in 0..5 {
            publisher.send_next(x);
        }
        assert_eq!(
            sub.expect_next_n(2).await,
            [0, 1],
            "the last element is delivered before the end"
        );
        if then_fail {
            assert_eq!(sub.expect_error().await.to_string(), "done with failure");
        } else {
            sub.expect_complete().await;
        }
        publisher.expect_cancellation().await;
        assert_eq!(publisher.delivered(), 2);
    }
}

/// Pulls and, on push, pulls again before grabbing (an error).
struct PullBeforeGrab {
    inp: Inlet<u32>,
}

impl GraphStageLogic for PullBeforeGrab {
    type Event = ();
    fn on_push(
        &mut self,
        ctx: &mut StageContext<'_, ()>,
        _inlet: InletId,
    ) -> Result<(), StreamError> {
        assert!(ctx.is_available(self.inp));
        ctx.pull(self.inp)
    }
    fn on_pull(
        &mut self,
        ctx: &mut StageContext<'_, ()>,
        _outlet: OutletId,
    ) -> Result<(), StreamError> {
        ctx.pull(self.inp)
    }
}

#[tokio::test(start_paused = true)]
async fn pull_before_grab_is_an_error() {
    let mut b = GraphStageBuilder::new();
    let inp = b.add_inlet(Source::from_iter([1u32, 2]));
    let out = b.add_outlet::<u32>();
    let mut outlets = b.build(PullBeforeGrab { inp });
    let e = outlets
        .source(out)
        .unwrap()
        .run_with(Sink::ignore())
        .await
        .unwrap_err();
    assert!(matches!(e, StreamError::Protocol(_)), "{e}");
}

#[tokio::test(start_paused = true)]
async fn active_stage_starts_from_whichever_outlet_is_polled_first() {
    let mut b = GraphStageBuilder::new();
    let extra = b.add_outlet::<u32>();
    let out = b.add_outlet();
    let callback = Arc::new(Mutex::new(None));
    let handled = Arc::new(AtomicU64::new(0));
    let mut outlets = b.build_active(Events {
        out,
        extra: Some(extra),
        callback: callback.clone(),
        handled: handled.clone(),
        pending: VecDeque::new(),
    });
    // The first outlet taken is dropped without ever being polled.
    drop(outlets.source(extra).unwrap());
    let mut sub = outlets.source(out).unwrap().run_with(TestSink::probe());
    sub.expect_no_message(Duration::from_millis(10)).await;
    let cb = callback.lock().unwrap().clone().expect("pre_start ran");
    cb.invoke(10).unwrap();
    assert_eq!(sub.expect_next().await, 10);
    for x in [11, 12] {
        cb.invoke(x).unwrap();
    }
    settle().await;
    assert_eq!(
        handled.load(Ordering::SeqCst),
        3,
        "the stage runs on its own task"
    );
    assert_eq!(sub.expect_next_n(2).await, [11, 12]);
}

// ---------------------------------------------------------------------------
// A handler that panics fails the stage (Abrupt), wherever it ran.

/// Passes its input on; panics on `poison`, in `on_push` or (events) `on_event`.
struct Poisoned {
    inp: Inlet<u32>,
    out: Outlet<u32>,
    poison: u32,
    callback: Shared<Option<AsyncCallback<u32>>>,
}

impl GraphStageLogic for Poisoned {
    type Event = u32;
    fn pre_start(&mut self, ctx: &mut StageContext<'_, u32>) -> Result<(), StreamError> {
        *self.callback.lock().unwrap() = Some(ctx.async_callback());
        Ok(())
    }
    fn on_push(
        &mut self,
        ctx: &mut StageContext<'_, u32>,
        _inlet: InletId,
    ) -> Result<(), StreamError> {
        let x = ctx.grab(self.inp)?;
        assert!(x != self.poison, "poisoned element {x}");
        ctx.push(self.out, x)
    }
    fn on_pull(
        &mut self,
        ctx: &mut StageContext<'_, u32>,
        _outlet: OutletId,
    ) -> Result<(), StreamError> {
        ctx.pull(self.inp)
    }
    fn on_event(
        &mut self,
        _ctx: &mut StageContext<'_, u32>,
        event: u32,
    ) -> Result<(), StreamError> {
        assert!(event != self.poison, "poisoned event {event}");
        Ok(())
    }
}

fn poisoned_stage<S>(
    src: Source<S>,
    poison: u32,
    active: bool,
) -> (Source<StageOutlet<u32>>, Shared<Option<AsyncCallback<u32>>>)
where
    S: futures::Stream<Item = Item<u32>> + Send + 'static,
{
    let mut b = GraphStageBuilder::new();
    let inp = b.add_inlet(src);
    let out = b.add_outlet();
    let callback = Arc::new(Mutex::new(None));
    let logic = Poisoned {
        inp,
        out,
        poison,
        callback: callback.clone(),
    };
    let mut outlets = if active {
        b.build_active(logic)
    } else {
        b.build(logic)
    };
    (outlets.source(out).unwrap(), callback)
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_fails_the_stage_where_downstream_polls() {
    let (publisher, src) = TestSource::probe::<u32>();
    let (stage, _) = poisoned_stage(src, 3, false);
    let mut sub = stage.run_with(TestSink::probe());
    for x in 1..=4 {
        publisher.send_next(x);
    }
    assert_eq!(sub.expect_next_n(2).await, [1, 2]);
    let err = sub.expect_error().await;
    assert!(matches!(err, StreamError::Abrupt(_)), "{err}");
    publisher.expect_cancellation().await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_fails_an_active_stage_on_its_own_task() {
    let (publisher, src) = TestSource::probe::<u32>();
    let (stage, callback) = poisoned_stage(src, 99, true);
    let mut sub = stage.run_with(TestSink::probe());
    publisher.send_next(1);
    assert_eq!(sub.expect_next().await, 1);
    // Nobody asks: only the stage's own task handles the event, and panics.
    let cb = callback.lock().unwrap().clone().expect("pre_start ran");
    cb.invoke(99).unwrap();
    settle().await;
    let err = sub.expect_error().await;
    assert!(matches!(err, StreamError::Abrupt(_)), "{err}");
    publisher.expect_cancellation().await;
}

/// Two outlets served in turn; `on_downstream_finish` panics.
struct PanicsOnCancel {
    inp: Inlet<u32>,
    outs: [Outlet<u32>; 2],
}

impl GraphStageLogic for PanicsOnCancel {
    type Event = ();
    fn on_push(&mut self, ctx: &mut StageContext<'_, ()>, _: InletId) -> Result<(), StreamError> {
        let x = ctx.grab(self.inp)?;
        match self.outs.iter().find(|o| ctx.has_demand(**o)) {
            Some(o) => ctx.push(*o, x),
            None => Ok(()),
        }
    }
    fn on_pull(&mut self, ctx: &mut StageContext<'_, ()>, _: OutletId) -> Result<(), StreamError> {
        if !ctx.has_been_pulled(self.inp) {
            ctx.pull(self.inp)?;
        }
        Ok(())
    }
    fn on_downstream_finish(
        &mut self,
        _ctx: &mut StageContext<'_, ()>,
        _outlet: OutletId,
    ) -> Result<(), StreamError> {
        panic!("on_downstream_finish panics");
    }
}

#[tokio::test]
async fn a_handler_panicking_on_cancellation_fails_the_stage() {
    let mut b = GraphStageBuilder::new();
    let inp = b.add_inlet(Source::from_iter(1..=1000u32));
    let outs = [b.add_outlet(), b.add_outlet()];
    let mut outlets = b.build(PanicsOnCancel { inp, outs });
    let a = outlets.source(outs[0]).unwrap();
    let rest = outlets.source(outs[1]).unwrap();
    let first = a.take(1).run_with(Sink::collect());
    let others = rest.run_with(Sink::collect());
    let (first, others) = tokio::join!(first, others);
    assert_eq!(first.ok().map(|v| v.len()), Some(1));
    assert!(
        matches!(others, Err(StreamError::Abrupt(_))),
        "{:?}",
        others.map(|v| v.len())
    );
}

// ---------------------------------------------------------------------------
// Outside a tokio runtime: a passive stage runs where it is polled, an active
// one cannot start its task and says so instead of panicking.

#[test]
fn outside_a_runtime_a_passive_stage_runs_and_an_active_one_fails_with_no_runtime() {
    let collect = |active: bool| {
        let (source, _) = poisoned_stage(Source::from_iter(1..=3u32), u32::MAX, active);
        futures::executor::block_on(futures::StreamExt::collect::<Vec<_>>(source))
    };
    let passive: Vec<u32> = collect(false).into_iter().map(Result::unwrap).collect();
    assert_eq!(passive, [1, 2, 3]);
    let active = collect(true);
    assert_eq!(active.len(), 1, "{active:?}");
    assert!(
        matches!(active[0], Err(StreamError::NoRuntime(_))),
        "{active:?}"
    );
}
