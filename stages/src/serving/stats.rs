//! Statistics of the serving stage and the snapshots it publishes.
//!
//! The stage owns the live statistics and, from time to time (every
//! [`ServingConfig::publish_interval`](super::ServingConfig::publish_interval),
//! on every model swap or failed load, and when it stops), publishes an
//! immutable [`ServingSnapshot`] through a [`ServingState`]. Readers (the HTTP
//! server, tests, your code) load the latest snapshot without any lock the
//! scoring path could wait on.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::watch;

/// Upper bounds (nanoseconds) of the scoring-duration buckets exported on
/// `/metrics` (`le` labels, in seconds there); a final `+Inf` bucket follows.
pub const DURATION_BUCKETS_NS: [u64; 14] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];

/// The latency histograms' bounds: 1 ns to an hour (larger values
/// saturate), 3 significant digits. Stored histograms are checked against
/// them when restored.
pub(crate) const HISTOGRAM_LOW_NS: u64 = 1;
/// See [`HISTOGRAM_LOW_NS`].
pub(crate) const HISTOGRAM_HIGH_NS: u64 = 3_600_000_000_000;
/// See [`HISTOGRAM_LOW_NS`].
pub(crate) const HISTOGRAM_SIGFIG: u8 = 3;

/// A latency histogram with the serving stage's bounds (`None` only if the
/// bounds were invalid, which they are not).
pub(crate) fn latency_histogram() -> Option<Histogram<u64>> {
    Histogram::new_with_bounds(HISTOGRAM_LOW_NS, HISTOGRAM_HIGH_NS, HISTOGRAM_SIGFIG).ok()
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Statistics of one model while it serves (or when it stopped serving).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelStats {
    /// The model's name (`ModelDescriptor.name`).
    pub name: String,
    /// The model's description.
    pub description: String,
    /// The model's type (`pmml`, `tensorflow`, `tensorflow-saved`, `onnx`, ...).
    pub model_type: String,
    /// When the model became current, epoch milliseconds.
    pub since_ms: u64,
    /// Records given to the model (scored successfully or not).
    pub usage: u64,
    /// Records whose scoring failed.
    pub errors: u64,
    /// Total scoring time, nanoseconds. With micro-batching (a `batch_size`
    /// above one) each record of a batch counts the batch's time divided by its
    /// size, so the minimum, maximum and percentiles are of those shares.
    pub total_ns: u64,
    /// Shortest scoring time, nanoseconds; `None` (JSON `null`) before the first
    /// record: the minimum starts at +infinity.
    pub min_ns: Option<u64>,
    /// Longest scoring time, nanoseconds; `None` before the first record.
    pub max_ns: Option<u64>,
    /// Mean scoring time, nanoseconds; `None` before the first record.
    pub mean_ns: Option<f64>,
    /// Median scoring time (HDR histogram, 3 significant digits), nanoseconds.
    pub p50_ns: Option<u64>,
    /// 90th percentile, nanoseconds.
    pub p90_ns: Option<u64>,
    /// 99th percentile, nanoseconds.
    pub p99_ns: Option<u64>,
    /// 99.9th percentile, nanoseconds.
    pub p999_ns: Option<u64>,
    /// Time spent loading the model off the scoring path, nanoseconds (0 for a
    /// model offered already built).
    pub load_ns: u64,
    /// From the model being offered to the first record scored by it,
    /// nanoseconds; `None` until that record.
    pub swap_latency_ns: Option<u64>,
    /// The scoring-duration histogram itself (not in the JSON): present only
    /// while a model store persists the statistics (see
    /// [`ServingState::set_export_histograms`]); `None` in history entries.
    #[serde(skip)]
    pub histogram: Option<Arc<Histogram<u64>>>,
}

impl ModelStats {
    /// Empty statistics of a model (no record yet), e.g. to build a
    /// [`RestoreSeed`] by hand.
    pub fn new(name: impl Into<String>, model_type: impl Into<String>) -> Self {
        ModelStats {
            name: name.into(),
            description: String::new(),
            model_type: model_type.into(),
            since_ms: now_ms(),
            usage: 0,
            errors: 0,
            total_ns: 0,
            min_ns: None,
            max_ns: None,
            mean_ns: None,
            p50_ns: None,
            p90_ns: None,
            p99_ns: None,
            p999_ns: None,
            load_ns: 0,
            swap_latency_ns: None,
            histogram: None,
        }
    }
}

/// Whether and when the current model of a dataType was restored from a model
/// store (`data_types.{dt}.restored` in the JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RestoredInfo {
    /// The store's kind: `memory`, `local` or `kafka`.
    pub store: String,
    /// When the model was installed from the store, epoch milliseconds.
    pub restored_ms: u64,
    /// When the store last persisted this dataType, epoch milliseconds.
    pub stored_ms: u64,
}

/// What a model store kept of one dataType, handed to the serving stage
/// before the restored model is offered ([`ServingState::seed_restored`]):
/// when that model is installed (the first install of its dataType, with the
/// same name), its statistics continue from `stats` and its history is
/// `history`.
#[derive(Clone, Debug, PartialEq)]
pub struct RestoreSeed {
    /// The dataType.
    pub data_type: String,
    /// The name of the stored current model.
    pub model_name: String,
    /// Its statistics when stored (with the histogram), if any were stored.
    pub stats: Option<ModelStats>,
    /// The earlier models, oldest first.
    pub history: Vec<HistoryEntry>,
    /// The store's kind (reported in [`RestoredInfo::store`]).
    pub store: String,
    /// When it was stored, epoch milliseconds.
    pub stored_ms: u64,
}

/// A model that served earlier, with its final statistics.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HistoryEntry {
    /// Final statistics.
    #[serde(flatten)]
    pub stats: ModelStats,
    /// When it was replaced, epoch milliseconds.
    pub replaced_ms: u64,
    /// The name of the model that replaced it.
    pub replaced_by: String,
}

/// A model load that failed (the previous model kept serving).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LoadFailure {
    /// The name of the model that failed to load.
    pub model_name: String,
    /// The error, as text.
    pub error: String,
    /// When the load failed, epoch milliseconds.
    pub at_ms: u64,
}

/// The published state of one dataType.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DataTypeState {
    /// The dataType.
    pub data_type: String,
    /// The current model and its statistics; `None` before the first model.
    pub current: Option<ModelStats>,
    /// The last failed load, if any.
    pub last_error: Option<LoadFailure>,
    /// Set while the current model is the one restored from the model store
    /// at start-up (its statistics continue from the stored ones); `null`
    /// otherwise.
    pub restored: Option<RestoredInfo>,
    /// Models that became current (the first one included).
    pub swaps: u64,
    /// Failed model loads.
    pub load_failures: u64,
    /// Model loads in progress.
    pub loading: u64,
    /// Records of this dataType scored successfully (all models).
    pub scored: u64,
    /// Records of this dataType whose scoring failed (all models).
    pub scoring_errors: u64,
    /// Records of this dataType answered "not processed: no model".
    pub no_model: u64,
    /// Earlier models, oldest first (served by `/state/{dataType}/history`,
    /// not part of `/state`).
    #[serde(skip)]
    pub history: Vec<HistoryEntry>,
    /// Scoring-duration counts per [`DURATION_BUCKETS_NS`] bucket (not
    /// cumulative; one more entry for `+Inf`), all models.
    #[serde(skip)]
    pub duration_buckets: Vec<u64>,
    /// Sum of all scoring durations, nanoseconds, all models.
    #[serde(skip)]
    pub duration_sum_ns: u64,
}

/// Counters over all dataTypes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Records received.
    pub records: u64,
    /// Records scored successfully.
    pub scored: u64,
    /// Records whose scoring failed.
    pub errors: u64,
    /// Records answered "not processed: no model" (any dataType, also those
    /// no model was ever offered for).
    pub no_model: u64,
    /// Models that became current.
    pub swaps: u64,
    /// Failed model loads.
    pub load_failures: u64,
    /// Models offered to the stage (descriptors and built models), whatever
    /// became of them.
    pub models_offered: u64,
    /// Models installed from the model store at start-up (with their
    /// statistics and history).
    pub models_restored: u64,
}

/// How full the stage's data buffer is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BufferState {
    /// Records held by the stage (waiting for their batch, or scored and waiting
    /// for downstream demand).
    pub fill: u64,
    /// The most records the stage holds: its batch size plus its data buffer
    /// ([`ServingConfig`](super::ServingConfig)).
    pub capacity: u64,
}

/// Everything the stage publishes, at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ServingSnapshot {
    /// When this snapshot was taken, epoch milliseconds.
    pub published_ms: u64,
    /// Per dataType (those a model was ever offered for).
    pub data_types: BTreeMap<String, DataTypeState>,
    /// Counters over all dataTypes.
    pub totals: Totals,
    /// The data buffer.
    pub buffer: BufferState,
    /// Whether the stage is still running.
    pub running: bool,
}

impl ServingSnapshot {
    /// The dataTypes that have a current model, sorted.
    pub fn models(&self) -> Vec<String> {
        self.data_types
            .values()
            .filter(|s| s.current.is_some())
            .map(|s| s.data_type.clone())
            .collect()
    }

    /// The name of the current model of `data_type`.
    pub fn current_model(&self, data_type: &str) -> Option<&str> {
        self.data_types
            .get(data_type)
            .and_then(|s| s.current.as_ref())
            .map(|c| c.name.as_str())
    }
}

/// A handle on the serving stage's published state. Cheap to clone; reading
/// never blocks the stage.
#[derive(Clone, Debug)]
pub struct ServingState {
    inner: Arc<StateInner>,
}

#[derive(Debug)]
struct StateInner {
    current: ArcSwap<ServingSnapshot>,
    version: watch::Sender<u64>,
    /// Whether snapshots carry each current model's histogram.
    export_histograms: AtomicBool,
    restore: Mutex<RestoreBook>,
}

/// Seeds waiting for their model, and the models restored so far.
#[derive(Debug, Default)]
struct RestoreBook {
    seeds: HashMap<String, RestoreSeed>,
    /// dataType → (model name, its `since_ms`, what is reported).
    restored: HashMap<String, (String, u64, RestoredInfo)>,
    count: u64,
}

impl Default for ServingState {
    fn default() -> Self {
        Self::new()
    }
}

impl ServingState {
    /// An empty state (no dataType yet).
    pub fn new() -> Self {
        ServingState {
            inner: Arc::new(StateInner {
                current: ArcSwap::from_pointee(ServingSnapshot::default()),
                version: watch::Sender::new(0),
                export_histograms: AtomicBool::new(false),
                restore: Mutex::new(RestoreBook::default()),
            }),
        }
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<ServingSnapshot> {
        self.inner.current.load_full()
    }

    /// How many snapshots were published.
    pub fn version(&self) -> u64 {
        *self.inner.version.borrow()
    }

    /// Waits until a published snapshot satisfies `pred`, and returns it. This
    /// waits for an event, without polling; it waits forever if no snapshot ever
    /// satisfies `pred` (wrap it in a timeout where that matters). Check
    /// [`ServingSnapshot::running`] to stop waiting for a stage that stopped.
    pub async fn wait_for(&self, pred: impl Fn(&ServingSnapshot) -> bool) -> Arc<ServingSnapshot> {
        let mut rx = self.inner.version.subscribe();
        loop {
            let s = self.snapshot();
            if pred(&s) {
                return s;
            }
            if rx.changed().await.is_err() {
                return self.snapshot();
            }
        }
    }

    /// A receiver of the snapshot version, which changes at every publish.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.version.subscribe()
    }

    /// Makes the snapshots carry each current model's histogram
    /// ([`ModelStats::histogram`]), for a model store to persist; applies to
    /// models installed from now on. Off by default (it copies the histogram
    /// at each publish).
    pub fn set_export_histograms(&self, on: bool) {
        self.inner.export_histograms.store(on, Ordering::Relaxed);
    }

    /// Hands the stage what a model store kept of `seed.data_type`: when the
    /// first model of that dataType is installed and has the seed's model name,
    /// its statistics continue from the seed and its history is the seed's.
    /// Call before the restored model is offered.
    pub fn seed_restored(&self, seed: RestoreSeed) {
        self.book().seeds.insert(seed.data_type.clone(), seed);
    }

    fn book(&self) -> std::sync::MutexGuard<'_, RestoreBook> {
        self.inner
            .restore
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The stage's restore hook, at every install (after the swap was
    /// counted and the replaced model moved to the history): sets the
    /// histogram export and applies a waiting seed of `data_type` (once, at
    /// its first install).
    pub(crate) fn restore_into(
        &self,
        data_type: &str,
        stats: &mut LiveStats,
        counters: &mut TypeCounters,
    ) {
        stats.export_hist = self.inner.export_histograms.load(Ordering::Relaxed);
        // History entries keep percentiles, not histograms.
        for h in counters.history.iter_mut() {
            h.stats.histogram = None;
        }
        let mut book = self.book();
        if book.seeds.is_empty() {
            return;
        }
        let Some(seed) = book.seeds.remove(data_type) else {
            return;
        };
        if seed.model_name != stats.name || counters.swaps > 1 {
            tracing::info!(
                data_type,
                stored = seed.model_name,
                installed = stats.name,
                "the stored model was not the first installed; its statistics are not restored"
            );
            return;
        }
        if let Some(s) = &seed.stats {
            stats.restore_from(s);
            tracing::debug!(
                data_type,
                model = seed.model_name,
                usage = s.usage,
                "statistics restored"
            );
        }
        counters.history = seed.history.into_iter().collect();
        book.count += 1;
        book.restored.insert(
            data_type.to_string(),
            (
                seed.model_name,
                stats.since_ms,
                RestoredInfo {
                    store: seed.store,
                    restored_ms: now_ms(),
                    stored_ms: seed.stored_ms,
                },
            ),
        );
    }

    pub(crate) fn publish(&self, mut snapshot: ServingSnapshot) {
        {
            let book = self.book();
            snapshot.totals.models_restored = book.count;
            for (dt, (name, since, info)) in &book.restored {
                if let Some(d) = snapshot.data_types.get_mut(dt) {
                    if d.current
                        .as_ref()
                        .is_some_and(|c| &c.name == name && c.since_ms == *since)
                    {
                        d.restored = Some(info.clone());
                    }
                }
            }
        }
        self.inner.current.store(Arc::new(snapshot));
        self.inner.version.send_modify(|v| *v += 1);
    }
}

/// Live statistics of the current model of one dataType (owned by the stage).
pub(crate) struct LiveStats {
    name: String,
    description: String,
    model_type: String,
    since_ms: u64,
    usage: u64,
    errors: u64,
    total_ns: u64,
    /// `u64::MAX` stands for +infinity (no record yet).
    min_ns: u64,
    max_ns: u64,
    hist: Option<Histogram<u64>>,
    /// Scoring times recorded since they were last moved into `hist`.
    staged: Staged,
    load_ns: u64,
    pub(crate) offered_at: Instant,
    pub(crate) swap_latency_ns: Option<u64>,
    /// Whether snapshots carry a copy of the histogram.
    export_hist: bool,
}

impl LiveStats {
    pub(crate) fn new(
        name: String,
        description: String,
        model_type: String,
        offered_at: Instant,
        load_ns: u64,
    ) -> Self {
        let hist = latency_histogram();
        LiveStats {
            name,
            description,
            model_type,
            since_ms: now_ms(),
            usage: 0,
            errors: 0,
            total_ns: 0,
            min_ns: u64::MAX,
            max_ns: 0,
            hist,
            staged: Staged::new(),
            load_ns,
            offered_at,
            swap_latency_ns: None,
            export_hist: false,
        }
    }

    /// Continues from stored statistics `s` (a restored model).
    pub(crate) fn restore_from(&mut self, s: &ModelStats) {
        self.since_ms = s.since_ms;
        self.usage = s.usage;
        self.errors = s.errors;
        self.total_ns = s.total_ns;
        // Stored figures come from outside (a store's file or topic): a minimum
        // above the maximum is not restored (the next records set both).
        match (s.min_ns, s.max_ns) {
            (Some(min), Some(max)) if min <= max => (self.min_ns, self.max_ns) = (min, max),
            (None, None) if s.usage == 0 => {}
            (min, max) => tracing::warn!(
                model = %self.name,
                usage = s.usage,
                ?min,
                ?max,
                "stored scoring-time minimum and maximum are inconsistent; not restored"
            ),
        }
        if s.swap_latency_ns.is_some() {
            self.swap_latency_ns = s.swap_latency_ns;
        }
        if let (Some(h), Some(stored)) = (self.hist.as_mut(), s.histogram.as_deref()) {
            if let Err(e) = h.add(stored) {
                tracing::warn!(model = %self.name, error = ?e, "stored histogram not restored");
            }
        }
    }

    #[inline]
    pub(crate) fn record(&mut self, ns: u64, ok: bool) {
        // Saturating: restored counts come from outside.
        self.usage = self.usage.saturating_add(1);
        if !ok {
            self.errors = self.errors.saturating_add(1);
        }
        self.total_ns = self.total_ns.saturating_add(ns);
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
        self.staged.record(ns);
    }

    /// The statistics now (moves the staged scoring times into the histogram).
    pub(crate) fn snapshot(&mut self) -> ModelStats {
        if let Some(h) = self.hist.as_mut() {
            self.staged.drain_into(h);
        }
        let any = self.usage > 0;
        // A time was recorded (or consistently restored) since the minimum started at
        // +infinity.
        let timed = any && self.min_ns <= self.max_ns;
        // The histogram answers with the top of a value's bucket: kept within the exact
        // min and max, so a percentile never exceeds the maximum.
        let q = |p: f64| {
            self.hist
                .as_ref()
                .filter(|h| timed && !h.is_empty())
                .map(|h| h.value_at_quantile(p).clamp(self.min_ns, self.max_ns))
        };
        ModelStats {
            name: self.name.clone(),
            description: self.description.clone(),
            model_type: self.model_type.clone(),
            since_ms: self.since_ms,
            usage: self.usage,
            errors: self.errors,
            total_ns: self.total_ns,
            min_ns: timed.then_some(self.min_ns),
            max_ns: timed.then_some(self.max_ns),
            mean_ns: any.then(|| self.total_ns as f64 / self.usage as f64),
            p50_ns: q(0.5),
            p90_ns: q(0.9),
            p99_ns: q(0.99),
            p999_ns: q(0.999),
            load_ns: self.load_ns,
            swap_latency_ns: self.swap_latency_ns,
            histogram: if self.export_hist {
                self.hist.clone().map(Arc::new)
            } else {
                None
            },
        }
    }
}

/// Scoring times counted in an array laid out like the histogram's own
/// (HDR, lowest 1 ns, 3 significant digits: 2,048 sub-buckets per power of
/// two), so that recording one is an index computation and an increment,
/// several times cheaper than [`Histogram::saturating_record`] on the scoring
/// path. [`drain_into`](Self::drain_into) moves the counts into the
/// histogram, each at the lowest value of its bucket, which lands in the same
/// bucket: the histogram is exactly what recording each time would have made.
struct Staged {
    counts: Box<[u64]>,
    /// The range of indices counted into since the last drain (`lo > hi`: none).
    lo: usize,
    hi: usize,
}

/// The largest scoring time counted apart; larger ones count as this.
const STAGED_MAX_NS: u64 = 3_600_000_000_000;

impl Staged {
    /// Sub-buckets per power of two, halved (3 significant digits: 2,048 / 2).
    const HALF: usize = 1024;
    const HALF_MAGNITUDE: u32 = 10;
    /// `64 - log2(2,048)`: the leading zeros of the first value past bucket 0.
    const LEADING_ZEROS_BASE: u32 = 53;

    fn new() -> Self {
        Staged {
            counts: vec![0; Self::index(STAGED_MAX_NS) + 1].into_boxed_slice(),
            lo: usize::MAX,
            hi: 0,
        }
    }

    /// The bucket of `ns` (clamped to 1 ..= [`STAGED_MAX_NS`]).
    #[inline]
    fn index(ns: u64) -> usize {
        let v = ns.clamp(1, STAGED_MAX_NS);
        let bucket = Self::LEADING_ZEROS_BASE - (v | (2 * Self::HALF as u64 - 1)).leading_zeros();
        let sub = (v >> bucket) as usize;
        ((bucket as usize + 1) << Self::HALF_MAGNITUDE) + sub - Self::HALF
    }

    /// The lowest value in bucket `i`.
    fn value(i: usize) -> u64 {
        let bucket = (i >> Self::HALF_MAGNITUDE) as u32;
        let sub = (i & (Self::HALF - 1)) + Self::HALF;
        if bucket == 0 {
            (sub - Self::HALF) as u64
        } else {
            (sub as u64) << (bucket - 1)
        }
    }

    #[inline]
    fn record(&mut self, ns: u64) {
        let i = Self::index(ns);
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
            self.lo = self.lo.min(i);
            self.hi = self.hi.max(i);
        }
    }

    /// Moves the counts into `h` and clears them.
    fn drain_into(&mut self, h: &mut Histogram<u64>) {
        if self.lo > self.hi {
            return;
        }
        let (lo, hi) = (self.lo, self.hi.min(self.counts.len() - 1));
        for (i, c) in self.counts[lo..=hi].iter_mut().enumerate() {
            if *c > 0 {
                h.saturating_record_n(Self::value(lo + i), *c);
                *c = 0;
            }
        }
        self.lo = usize::MAX;
        self.hi = 0;
    }
}

/// Lifetime counters of one dataType (owned by the stage).
pub(crate) struct TypeCounters {
    pub(crate) swaps: u64,
    pub(crate) load_failures: u64,
    pub(crate) loading: u64,
    pub(crate) scored: u64,
    pub(crate) scoring_errors: u64,
    pub(crate) no_model: u64,
    pub(crate) buckets: [u64; DURATION_BUCKETS_NS.len() + 1],
    pub(crate) sum_ns: u64,
    pub(crate) last_error: Option<LoadFailure>,
    pub(crate) history: VecDeque<HistoryEntry>,
}

impl Default for TypeCounters {
    fn default() -> Self {
        TypeCounters {
            swaps: 0,
            load_failures: 0,
            loading: 0,
            scored: 0,
            scoring_errors: 0,
            no_model: 0,
            buckets: [0; DURATION_BUCKETS_NS.len() + 1],
            sum_ns: 0,
            last_error: None,
            history: VecDeque::new(),
        }
    }
}

impl TypeCounters {
    #[inline]
    pub(crate) fn record_duration(&mut self, ns: u64) {
        let i = DURATION_BUCKETS_NS
            .iter()
            .position(|&b| ns <= b)
            .unwrap_or(DURATION_BUCKETS_NS.len());
        self.buckets[i] += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    pub(crate) fn to_state(&self, data_type: &str, current: Option<ModelStats>) -> DataTypeState {
        DataTypeState {
            data_type: data_type.to_string(),
            current,
            last_error: self.last_error.clone(),
            restored: None,
            swaps: self.swaps,
            load_failures: self.load_failures,
            loading: self.loading,
            scored: self.scored,
            scoring_errors: self.scoring_errors,
            no_model: self.no_model,
            history: self.history.iter().cloned().collect(),
            duration_buckets: self.buckets.to_vec(),
            duration_sum_ns: self.sum_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Staged counts drained into a histogram give the histogram that
    /// recording every value would have given.
    #[test]
    fn staged_counts_equal_direct_recording() {
        let new = || latency_histogram().expect("bounds");
        let (mut direct, mut drained) = (new(), new());
        let mut staged = Staged::new();
        // Values across every magnitude, with bucket edges and the clamps.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut values = vec![0, 1, 2, 1023, 1024, 2047, 2048, 2049, 4095, 4096, 1 << 40];
        values.extend([
            STAGED_MAX_NS - 1,
            STAGED_MAX_NS,
            STAGED_MAX_NS + 1,
            u64::MAX,
        ]);
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(x >> (x % 64));
        }
        for (k, &v) in values.iter().enumerate() {
            direct.saturating_record(v.clamp(1, STAGED_MAX_NS));
            staged.record(v);
            if k % 7_000 == 0 {
                staged.drain_into(&mut drained);
            }
        }
        staged.drain_into(&mut drained);
        assert_eq!(drained.len(), direct.len());
        for q in [0.0, 0.1, 0.25, 0.5, 0.9, 0.99, 0.999, 0.9999, 1.0] {
            assert_eq!(
                drained.value_at_quantile(q),
                direct.value_at_quantile(q),
                "quantile {q}"
            );
        }
        let pairs = |h: &Histogram<u64>| {
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect::<Vec<_>>()
        };
        assert_eq!(pairs(&drained), pairs(&direct));
        // Every bucket's lowest value maps back to that bucket.
        for i in 1..staged.counts.len() {
            assert_eq!(Staged::index(Staged::value(i)), i, "bucket {i}");
        }
    }

    #[test]
    fn min_starts_at_infinity_and_moves() {
        let mut s = LiveStats::new("m".into(), "d".into(), "t".into(), Instant::now(), 0);
        let empty = s.snapshot();
        assert_eq!(empty.min_ns, None);
        assert_eq!(empty.p50_ns, None);
        s.record(500, true);
        s.record(300, false);
        s.record(900, true);
        let snap = s.snapshot();
        assert_eq!(snap.min_ns, Some(300));
        assert_eq!(snap.max_ns, Some(900));
        assert_eq!(snap.usage, 3);
        assert_eq!(snap.errors, 1);
        assert_eq!(snap.total_ns, 1700);
        let p50 = snap.p50_ns.unwrap_or(0);
        assert!((499..=501).contains(&p50), "p50 {p50}");
    }

    #[test]
    fn percentiles_stay_within_min_and_max() {
        // 376,521 ns falls in a bucket whose top is higher: the histogram alone gives a
        // p99.9 above the maximum.
        let mut s = LiveStats::new("m".into(), "d".into(), "t".into(), Instant::now(), 0);
        s.record(376_521, true);
        let snap = s.snapshot();
        assert_eq!(snap.max_ns, Some(376_521));
        for p in [snap.p50_ns, snap.p90_ns, snap.p99_ns, snap.p999_ns] {
            assert_eq!(p, Some(376_521));
        }
    }

    #[test]
    fn inconsistent_stored_times_are_not_restored() {
        // A store entry says 10 records with a minimum above the maximum, or none.
        for (min, max) in [(Some(5_000), Some(10)), (None, None), (Some(1), None)] {
            let mut stored = ModelStats::new("m", "t");
            stored.usage = 10;
            (stored.min_ns, stored.max_ns) = (min, max);
            let mut s = LiveStats::new("m".into(), "d".into(), "t".into(), Instant::now(), 0);
            s.restore_from(&stored);
            let snap = s.snapshot();
            assert_eq!(snap.usage, 10);
            assert_eq!((snap.min_ns, snap.max_ns, snap.p99_ns), (None, None, None));
            s.record(700, true);
            let snap = s.snapshot();
            assert_eq!((snap.min_ns, snap.max_ns), (Some(700), Some(700)));
            assert_eq!(snap.p50_ns, Some(700));
            assert_eq!(snap.usage, 11);
        }
        // Consistent ones are.
        let mut stored = ModelStats::new("m", "t");
        (stored.usage, stored.min_ns, stored.max_ns) = (2, Some(100), Some(900));
        let mut s = LiveStats::new("m".into(), "d".into(), "t".into(), Instant::now(), 0);
        s.restore_from(&stored);
        // No stored histogram: no percentiles made up from the minimum.
        assert_eq!(s.snapshot().p50_ns, None);
        s.record(500, true);
        let snap = s.snapshot();
        assert_eq!((snap.min_ns, snap.max_ns), (Some(100), Some(900)));
        assert_eq!(snap.p50_ns, Some(500));
        // Counts at their limit stay there.
        (stored.usage, stored.errors) = (u64::MAX, u64::MAX);
        let mut s = LiveStats::new("m".into(), "d".into(), "t".into(), Instant::now(), 0);
        s.restore_from(&stored);
        s.record(500, false);
        let snap = s.snapshot();
        assert_eq!((snap.usage, snap.errors), (u64::MAX, u64::MAX));
    }

    #[test]
    fn buckets_are_assigned_by_upper_bound() {
        let mut c = TypeCounters::default();
        c.record_duration(1_000);
        c.record_duration(1_001);
        c.record_duration(u64::MAX);
        assert_eq!(c.buckets[0], 1);
        assert_eq!(c.buckets[1], 1);
        assert_eq!(c.buckets[DURATION_BUCKETS_NS.len()], 1);
    }
}
