//! The serving stage's handlers.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use flowstage::stage::{GraphStageLogic, Inlet, InletId, Outlet, OutletId, StageContext};
use flowstage::StreamError;
use flowstage_model::pb::ModelDescriptor;
use flowstage_model::{Model, ModelError, ModelType, Record};

use super::chunks::{Outcome, Pending, Pool, ResultChunk};
use super::stats::{
    nanos, now_ms, BufferState, HistoryEntry, LiveStats, LoadFailure, ServingSnapshot,
    ServingState, Totals, TypeCounters,
};
use super::{ModelLoader, ModelMessage, ServingConfig, ServingRecord};

const BATCH_TIMER: u64 = 2;

/// The stage's ports. Records arrive and results leave in chunks (what the
/// data source had ready, up to [`ServingConfig::data_buffer`]): the stage's
/// per-element protocol (pull, push, hand-off) is paid once per chunk, not
/// once per record.
pub(crate) struct Ports<R> {
    pub(crate) models: Inlet<ModelMessage>,
    pub(crate) data: Inlet<VecDeque<R>>,
    pub(crate) out: Outlet<ResultChunk>,
}

/// What comes in through the stage's async callback.
pub(crate) enum Event {
    /// A model load finished.
    Loaded(Loaded),
    /// Time to publish statistics (from a ticker task: cheaper per record than
    /// a stage timer, which is polled on every round).
    Tick,
}

/// A model load finished (on the blocking pool).
pub(crate) struct Loaded {
    data_type: String,
    seq: u64,
    name: String,
    description: String,
    model_type: ModelType,
    offered_at: Instant,
    load_ns: u64,
    result: Result<Arc<dyn Model>, ModelError>,
}

struct Current {
    model: Arc<dyn Model>,
    /// The model's name, shared by its results.
    name: Arc<str>,
    stats: LiveStats,
}

/// The dataTypes, in a vector: there are few, and a string compare against
/// the last one used is cheaper per record than hashing.
#[derive(Default)]
struct Types {
    list: Vec<(Arc<str>, TypeState)>,
    last: usize,
}

impl Types {
    #[inline]
    fn get_mut(&mut self, dt: &str) -> Option<&mut TypeState> {
        if self.list.get(self.last).is_none_or(|(n, _)| &**n != dt) {
            self.last = self.list.iter().position(|(n, _)| &**n == dt)?;
        }
        self.list.get_mut(self.last).map(|(_, t)| t)
    }

    /// The index of `dt`'s state (the last one used first).
    #[inline]
    fn find(&mut self, dt: &str) -> Option<usize> {
        if self.list.get(self.last).is_none_or(|(n, _)| &**n != dt) {
            self.last = self.list.iter().position(|(n, _)| &**n == dt)?;
        }
        Some(self.last)
    }

    /// The current model of the dataType at `i`, its counters and its name.
    #[inline]
    fn current_at(&mut self, i: usize) -> Option<(&mut Current, &mut TypeCounters, &Arc<str>)> {
        let (dt, ts) = self.list.get_mut(i)?;
        let TypeState {
            current, counters, ..
        } = ts;
        current.as_mut().map(|c| (c, counters, &*dt))
    }

    fn entry(&mut self, dt: &str) -> &mut TypeState {
        let i = match self.list.iter().position(|(n, _)| &**n == dt) {
            Some(i) => i,
            None => {
                self.list.push((Arc::from(dt), TypeState::default()));
                self.list.len() - 1
            }
        };
        &mut self.list[i].1
    }
}

#[derive(Default)]
struct TypeState {
    current: Option<Current>,
    /// Sequence number of the installed model (models offered later win).
    installed_seq: u64,
    next_seq: u64,
    counters: TypeCounters,
}

pub(crate) struct ServingLogic<R> {
    ports: Ports<R>,
    loader: Arc<dyn ModelLoader>,
    config: ServingConfig,
    state: ServingState,
    types: Types,
    totals: Totals,
    /// Records waiting for their batch (batch_size > 1).
    pending: Vec<R>,
    /// Results waiting for downstream demand (pushed as one chunk).
    results: ResultChunk,
    /// Where the data chunks' buffers go back to once drained.
    record_pool: Pool<VecDeque<R>>,
    /// Where the buffers for results come from.
    result_pool: Pool<ResultChunk>,
    /// A record whose dataType has no model yet while one is loading, and the
    /// records after it: the first waits for that load (instead of a "no
    /// model" answer), the others behind it (their order is kept), and no
    /// record is pulled meanwhile.
    held: VecDeque<R>,
    loads_in_flight: usize,
    data_done: bool,
    dirty: bool,
}

impl<R: ServingRecord> ServingLogic<R> {
    pub(crate) fn new(
        ports: Ports<R>,
        loader: Arc<dyn ModelLoader>,
        config: ServingConfig,
        state: ServingState,
        (record_pool, result_pool): (Pool<VecDeque<R>>, Pool<ResultChunk>),
    ) -> Self {
        ServingLogic {
            ports,
            loader,
            config,
            state,
            types: Types::default(),
            totals: Totals::default(),
            pending: Vec::new(),
            results: result_pool.take(),
            record_pool,
            result_pool,
            held: VecDeque::new(),
            loads_in_flight: 0,
            data_done: false,
            dirty: true,
        }
    }

    fn publish(&mut self, running: bool) {
        let data_types = self
            .types
            .list
            .iter_mut()
            .map(|(dt, ts)| {
                let current = ts.current.as_mut().map(|c| c.stats.snapshot());
                (dt.to_string(), ts.counters.to_state(dt, current))
            })
            .collect();
        self.state.publish(ServingSnapshot {
            published_ms: now_ms(),
            data_types,
            totals: self.totals.clone(),
            buffer: BufferState {
                fill: (self.pending.len() + self.results.len() + self.held.len()) as u64,
                capacity: (self.config.batch_size + self.config.data_buffer) as u64,
            },
            running,
        });
        self.dirty = false;
    }

    // ---- models -------------------------------------------------------------

    fn pull_models_if_room(
        &mut self,
        ctx: &mut StageContext<'_, Event>,
    ) -> Result<(), StreamError> {
        let m = self.ports.models;
        if self.loads_in_flight < self.config.max_pending_loads
            && !ctx.is_closed(m)
            && !ctx.has_been_pulled(m)
            && !ctx.is_available(m)
        {
            ctx.pull(m)?;
        }
        Ok(())
    }

    fn offer(&mut self, ctx: &mut StageContext<'_, Event>, msg: ModelMessage) {
        let offered_at = Instant::now();
        self.totals.models_offered += 1;
        match msg {
            ModelMessage::Built(b) => {
                let ts = self.types.entry(&b.data_type);
                ts.next_seq += 1;
                let seq = ts.next_seq;
                let model_type = b.model.model_type();
                self.install(Loaded {
                    data_type: b.data_type,
                    seq,
                    name: b.name,
                    description: b.description,
                    model_type,
                    offered_at,
                    load_ns: 0,
                    result: Ok(b.model),
                });
            }
            ModelMessage::Descriptor(d) => {
                let ts = self.types.entry(&d.data_type);
                ts.next_seq += 1;
                ts.counters.loading += 1;
                let seq = ts.next_seq;
                self.loads_in_flight += 1;
                self.dirty = true;
                let loader = self.loader.clone();
                let job = move || load(&*loader, d, seq, offered_at);
                match tokio::runtime::Handle::try_current() {
                    Ok(handle) => {
                        let callback = ctx.async_callback();
                        handle.spawn_blocking(move || {
                            // If the stage stopped meanwhile, the model is dropped.
                            let _ = callback.invoke(Event::Loaded(job()));
                        });
                    }
                    // Not on a runtime (cannot happen when the stage is run by
                    // tokio): load in place.
                    Err(_) => {
                        let loaded = job();
                        self.loaded(loaded);
                    }
                }
            }
        }
    }

    /// A load finished: install the model or record the failure.
    fn loaded(&mut self, loaded: Loaded) {
        self.loads_in_flight = self.loads_in_flight.saturating_sub(1);
        if let Some(ts) = self.types.get_mut(&loaded.data_type) {
            ts.counters.loading = ts.counters.loading.saturating_sub(1);
        }
        self.install(loaded);
    }

    fn install(&mut self, loaded: Loaded) {
        let ts = self.types.entry(&loaded.data_type);
        self.dirty = true;
        let model = match loaded.result {
            Ok(m) => m,
            Err(e) => {
                let meanwhile = if ts.current.is_some() {
                    "the current model keeps serving"
                } else {
                    "no model serves this dataType yet"
                };
                tracing::warn!(
                    model = %loaded.name, data_type = %loaded.data_type, error = %e,
                    "model failed to load; {meanwhile}"
                );
                ts.counters.load_failures += 1;
                self.totals.load_failures += 1;
                ts.counters.last_error = Some(LoadFailure {
                    model_name: loaded.name,
                    error: e.to_string(),
                    at_ms: now_ms(),
                });
                self.publish(true);
                return;
            }
        };
        if loaded.seq < ts.installed_seq {
            // A model offered later is already serving: this one is stale.
            tracing::info!(
                model = %loaded.name, data_type = %loaded.data_type,
                "model loaded after a newer one was installed; dropped"
            );
            return;
        }
        ts.installed_seq = loaded.seq;
        let stats = LiveStats::new(
            loaded.name.clone(),
            loaded.description,
            loaded.model_type.to_string(),
            loaded.offered_at,
            loaded.load_ns,
        );
        let name = Arc::from(loaded.name.as_str());
        let old = ts.current.replace(Current { model, name, stats });
        ts.counters.swaps += 1;
        self.totals.swaps += 1;
        if let Some(mut old) = old {
            ts.counters.history.push_back(HistoryEntry {
                stats: old.stats.snapshot(),
                replaced_ms: now_ms(),
                replaced_by: loaded.name.clone(),
            });
            // `old.model` is dropped here (unless a caller still holds it).
        }
        // Restore hook (model stores): stored statistics and history.
        if let Some(cur) = ts.current.as_mut() {
            self.state
                .restore_into(&loaded.data_type, &mut cur.stats, &mut ts.counters);
        }
        // The history, replaced or restored, kept to its limit.
        while ts.counters.history.len() > self.config.history_limit {
            ts.counters.history.pop_front();
        }
        tracing::info!(model = %loaded.name, data_type = %loaded.data_type, "model installed");
        self.publish(true);
    }

    // ---- data ---------------------------------------------------------------

    /// Whether `rec` must wait: its dataType has no model yet and one is loading.
    fn must_wait(&mut self, rec: &R) -> bool {
        self.types
            .get_mut(rec.data_type())
            .is_some_and(|ts| ts.current.is_none() && ts.counters.loading > 0)
    }

    /// Takes in a chunk from the data inlet, then delivers and asks for more.
    fn take_chunk(
        &mut self,
        ctx: &mut StageContext<'_, Event>,
        mut chunk: VecDeque<R>,
    ) -> Result<(), StreamError> {
        while let Some(rec) = chunk.pop_front() {
            if self.held.is_empty() {
                self.accept(ctx, rec);
            } else {
                self.hold(rec);
            }
        }
        self.record_pool.give(chunk);
        self.deliver(ctx)?;
        self.pull_data(ctx)
    }

    /// Takes in a record: holds it while its first model loads, else scores it
    /// (or adds it to the batch).
    fn accept(&mut self, ctx: &mut StageContext<'_, Event>, rec: R) {
        // One dataType lookup for both the wait check and the scoring.
        let ty = self.types.find(rec.data_type());
        let wait = ty
            .and_then(|i| self.types.list.get(i))
            .is_some_and(|(_, ts)| ts.current.is_none() && ts.counters.loading > 0);
        if wait {
            // Records before it are answered first (their order is kept).
            ctx.cancel_timer(BATCH_TIMER);
            self.score_pending();
            self.hold(rec);
            return;
        }
        if self.config.batch_size <= 1 {
            self.score_at(ty, rec);
        } else {
            self.pending.push(rec);
            if self.pending.len() >= self.config.batch_size {
                ctx.cancel_timer(BATCH_TIMER);
                self.score_pending();
            } else if self.pending.len() == 1 {
                ctx.schedule_once(BATCH_TIMER, self.config.batch_timeout);
            }
        }
    }

    /// Holds `rec` until its dataType's first model is in. The buffer's fill
    /// changed: published with the next tick.
    fn hold(&mut self, rec: R) {
        self.held.push_back(rec);
        self.dirty = true;
    }

    /// After a load finished: lets the held records go on, up to one that
    /// must still wait.
    fn release_held(&mut self, ctx: &mut StageContext<'_, Event>) -> Result<(), StreamError> {
        if self.held.is_empty() {
            return Ok(());
        }
        while let Some(rec) = self.held.pop_front() {
            if self.must_wait(&rec) {
                self.held.push_front(rec);
                break;
            }
            self.accept(ctx, rec);
        }
        self.deliver(ctx)?;
        self.pull_data(ctx)
    }

    /// Scores `rec`, whose dataType's state is at `ty` in `self.types`, into
    /// the results.
    #[inline(always)]
    fn score_at(&mut self, ty: Option<usize>, rec: R) {
        self.totals.records += 1;
        let Some((cur, counters, dt)) = ty.and_then(|i| self.types.current_at(i)) else {
            return self.no_model(&rec);
        };
        let record = rec.to_record();
        let start = Instant::now();
        let scored = cur.model.score(&record);
        let end = Instant::now();
        let ns = nanos(end - start);
        let ok = scored.is_ok();
        let label = self.results.label(&cur.name, dt);
        self.results
            .items
            .push(Pending::scored(&rec, label, ns, scored));
        if cur.stats.swap_latency_ns.is_none() {
            cur.stats.swap_latency_ns = Some(nanos(end - cur.stats.offered_at));
        }
        cur.stats.record(ns, ok);
        counters.record_duration(ns);
        count(ok, counters, &mut self.totals);
        // Published by the ticker's next `Tick` (every `publish_interval`).
        self.dirty = true;
    }

    /// A record of a dataType without a model: answered "no model".
    fn no_model(&mut self, rec: &R) {
        let p = self.no_model_pending(rec);
        self.results.items.push(p);
    }

    /// The "no model" answer to `rec`, counted.
    fn no_model_pending(&mut self, rec: &R) -> Pending {
        self.totals.no_model += 1;
        if let Some(ts) = self.types.get_mut(rec.data_type()) {
            ts.counters.no_model += 1;
        }
        self.dirty = true;
        Pending {
            label: self.results.no_model_label(rec.data_type()),
            ns: 0,
            record_ts: rec.record_ts(),
            record_ts_micros: rec.record_ts_micros(),
            record_key: rec.record_key(),
            outcome: Outcome::NoModel,
        }
    }

    /// Scores the pending batch: records of one dataType together through
    /// `score_batch`, results in record order.
    fn score_pending(&mut self) {
        let batch = std::mem::take(&mut self.pending);
        if batch.is_empty() {
            return;
        }
        if batch.len() == 1 {
            for rec in batch {
                let ty = self.types.find(rec.data_type());
                self.score_at(ty, rec);
            }
            return;
        }
        let mut out: Vec<Option<Pending>> = (0..batch.len()).map(|_| None).collect();
        // Group indices by dataType, in order of first appearance.
        let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, rec) in batch.iter().enumerate() {
            match groups.iter_mut().find(|(dt, _)| *dt == rec.data_type()) {
                Some((_, idx)) => idx.push(i),
                None => groups.push((rec.data_type(), vec![i])),
            }
        }
        for (dt, idx) in groups {
            self.totals.records += idx.len() as u64;
            let current = self.types.find(dt).and_then(|i| self.types.current_at(i));
            let Some((cur, counters, dt)) = current else {
                for i in idx {
                    out[i] = Some(self.no_model_pending(&batch[i]));
                }
                continue;
            };
            let label = self.results.label(&cur.name, dt);
            let records: Vec<Record> = idx.iter().map(|&i| batch[i].to_record()).collect();
            let start = Instant::now();
            let scores = cur.model.score_batch(&records);
            let end = Instant::now();
            let per = nanos(end - start) / idx.len() as u64;
            if cur.stats.swap_latency_ns.is_none() {
                cur.stats.swap_latency_ns = Some(nanos(end - cur.stats.offered_at));
            }
            let mut scores = scores.into_iter();
            for &i in &idx {
                let scored = scores.next().unwrap_or_else(|| {
                    Err(ModelError::Scoring(
                        "score_batch gave too few results".into(),
                    ))
                });
                cur.stats.record(per, scored.is_ok());
                counters.record_duration(per);
                out[i] = Some(finish(
                    &batch[i],
                    label,
                    per,
                    scored,
                    counters,
                    &mut self.totals,
                ));
            }
        }
        self.dirty = true;
        self.results.items.extend(out.into_iter().flatten());
    }

    /// Pushes the waiting results, as one chunk, if downstream wants them;
    /// completes when done.
    fn deliver(&mut self, ctx: &mut StageContext<'_, Event>) -> Result<(), StreamError> {
        let out = self.ports.out;
        if !self.results.is_empty() && ctx.has_demand(out) {
            let next = self.result_pool.take();
            ctx.push(out, std::mem::replace(&mut self.results, next))?;
            // The buffer's fill changed.
            self.dirty = true;
        }
        if self.data_done
            && self.results.is_empty()
            && self.pending.is_empty()
            && self.held.is_empty()
        {
            self.publish(false);
            ctx.complete_stage();
        }
        Ok(())
    }

    /// Pulls a chunk of records while no results wait: when downstream wants
    /// results, or to fill a started batch (a batch that cannot be filled is
    /// scored at its timeout). So the stage holds at most `batch_size +
    /// data_buffer` records.
    fn pull_data(&mut self, ctx: &mut StageContext<'_, Event>) -> Result<(), StreamError> {
        let d = self.ports.data;
        if !self.held.is_empty()
            || self.data_done
            || ctx.is_closed(d)
            || ctx.has_been_pulled(d)
            || ctx.is_available(d)
        {
            return Ok(());
        }
        let wanted =
            self.results.is_empty() && (ctx.has_demand(self.ports.out) || !self.pending.is_empty());
        if self.pending.len() < self.config.batch_size && wanted {
            ctx.pull(d)?;
        }
        Ok(())
    }
}

fn load(loader: &dyn ModelLoader, d: ModelDescriptor, seq: u64, offered_at: Instant) -> Loaded {
    let start = Instant::now();
    let result = loader.load(&d).map(Arc::from);
    Loaded {
        model_type: ModelType::from_wire(d.modeltype),
        data_type: d.data_type,
        seq,
        name: d.name,
        description: d.description,
        offered_at,
        load_ns: nanos(start.elapsed()),
        result,
    }
}

/// The pending result for a scored (or failed) record, counted.
fn finish<R: ServingRecord>(
    rec: &R,
    label: u32,
    ns: u64,
    scored: Result<flowstage_model::Score, ModelError>,
    counters: &mut TypeCounters,
    totals: &mut Totals,
) -> Pending {
    count(scored.is_ok(), counters, totals);
    Pending::scored(rec, label, ns, scored)
}

/// Counts a scored (`ok`) or failed record.
#[inline]
fn count(ok: bool, counters: &mut TypeCounters, totals: &mut Totals) {
    if ok {
        counters.scored += 1;
        totals.scored += 1;
    } else {
        counters.scoring_errors += 1;
        totals.errors += 1;
    }
}

impl<R: ServingRecord> GraphStageLogic for ServingLogic<R> {
    type Event = Event;

    fn pre_start(&mut self, ctx: &mut StageContext<'_, Event>) -> Result<(), StreamError> {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let callback = ctx.async_callback();
            let every = self
                .config
                .publish_interval
                .max(std::time::Duration::from_millis(1));
            // Ends at the first tick after the stage stopped.
            handle.spawn(async move {
                let mut ticks = tokio::time::interval(every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    if callback.invoke(Event::Tick).is_err() {
                        break;
                    }
                }
            });
        }
        self.publish(true);
        ctx.pull(self.ports.models)
    }

    fn on_push(
        &mut self,
        ctx: &mut StageContext<'_, Event>,
        inlet: InletId,
    ) -> Result<(), StreamError> {
        if self.ports.models == inlet {
            let msg = ctx.grab(self.ports.models)?;
            self.offer(ctx, msg);
            // A model offered built is installed at once: records held for a
            // load of its dataType go on with it.
            self.release_held(ctx)?;
            return self.pull_models_if_room(ctx);
        }
        let chunk = ctx.grab(self.ports.data)?;
        self.take_chunk(ctx, chunk)
    }

    fn on_upstream_finish(
        &mut self,
        ctx: &mut StageContext<'_, Event>,
        inlet: InletId,
    ) -> Result<(), StreamError> {
        if self.ports.data == inlet {
            ctx.cancel_timer(BATCH_TIMER);
            self.score_pending();
            self.data_done = true;
            self.deliver(ctx)?;
        }
        // The model stream may end: the current models keep serving.
        Ok(())
    }

    fn on_upstream_failure(
        &mut self,
        _ctx: &mut StageContext<'_, Event>,
        inlet: InletId,
        error: StreamError,
    ) -> Result<(), StreamError> {
        if self.ports.models == inlet {
            // Losing the model stream must not stop serving: the current models
            // keep scoring (no more swaps).
            tracing::error!(error = %error, "model stream failed; current models keep serving");
            return Ok(());
        }
        Err(error)
    }

    fn on_pull(
        &mut self,
        ctx: &mut StageContext<'_, Event>,
        _outlet: OutletId,
    ) -> Result<(), StreamError> {
        self.deliver(ctx)?;
        self.pull_data(ctx)
    }

    fn on_timer(&mut self, ctx: &mut StageContext<'_, Event>, key: u64) -> Result<(), StreamError> {
        if key == BATCH_TIMER {
            self.score_pending();
            self.deliver(ctx)?;
            self.pull_data(ctx)?;
        }
        Ok(())
    }

    fn on_event(
        &mut self,
        ctx: &mut StageContext<'_, Event>,
        event: Event,
    ) -> Result<(), StreamError> {
        match event {
            Event::Loaded(loaded) => {
                self.loaded(loaded);
                self.release_held(ctx)?;
                self.pull_models_if_room(ctx)
            }
            Event::Tick => {
                if self.dirty {
                    self.publish(true);
                }
                Ok(())
            }
        }
    }

    fn post_stop(&mut self) {
        self.publish(false);
    }
}
