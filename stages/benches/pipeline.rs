//! End-to-end benchmark of the wine pipeline on Kafka, one command:
//!
//! ```text
//! scripts/bench-pipeline.sh      # embedded broker, then Apache Kafka (started by the script)
//! cargo bench -p flowstage-stages --features pmml --bench pipeline   # embedded broker only
//! ```
//!
//! On each broker (the embedded mock cluster; Apache Kafka when
//! `FLOWSTAGE_KAFKA_BOOTSTRAP` names one):
//!
//! 1. **Throughput at full speed**: `N` wine records are published first; then
//!    the server (`wine::server::Server`: consume, decode, score with the
//!    tutorial's linear-regression PMML, encode, produce, commit) runs over
//!    them. Records per second from the first result to the last, as the
//!    results topic's end offsets show them (polled every 5 ms; nothing reads
//!    the results back, see [`results_span`]). Baseline in the same run, same broker,
//!    same measurement: a plain rdkafka loop that consumes each record and
//!    produces its payload unchanged (no decoding, no scoring, no commits).
//! 2. **Latency at a fixed rate** (5,000 and 50,000 records/s): the provider
//!    publishes at that rate while the server runs; latency from each record's
//!    `ts` and `ts_micros` (set by the provider when it sends the record, epoch
//!    milliseconds and the microseconds past them; the result carries both)
//!    to its result reaching the results consumer, HDR histogram
//!    p50/p99/p99.9/max, and its two halves split at the result's Kafka
//!    timestamp (set when the server hands the result to its producer): `ts`
//!    → result produced, result produced → seen. Baseline in the same run,
//!    same rate, same broker: the plain loop above, with the record itself as
//!    its "result". The same latency from `ts` alone (whole milliseconds) is
//!    printed too: it overstates each latency by the creation time's fraction
//!    of a millisecond, 0–1 ms (this was the benchmark's latency until session
//!    22). The halves' split point, a Kafka timestamp, has millisecond
//!    resolution. Each run gets fresh topics (and on
//!    the embedded broker a fresh mock cluster; on Apache Kafka its topics
//!    are deleted after it). Not measured: a warm-up (the
//!    model and 1,000 records, until the server serves and the results
//!    consumer has caught up), then the measured provider's first half second
//!    (while it connects, its first records wait). A second baseline, of the
//!    machine: while the measured records flow, a thread sleeps 1 ms at a time
//!    and how far each sleep overran is printed too (what the scheduler alone
//!    adds on these cores; see [`hiccups`]), and how busy the cores were.
//! 3. **Latency with the low-latency settings** (Apache Kafka only, 50,000
//!    records/s): as 2, with the low-latency settings for every client of
//!    the run ([`Tuning::low_latency`], taken from `ServerConfig::low_latency`,
//!    what `serve --low-latency` sets): one
//!    partition, fetches answered at once, 0.2 ms batches (and the server's
//!    default commit every 10,000 records). Made 3 times
//!    (`BENCH_LOW_LATENCY_RUNS`), each the plain loop then the server, then
//!    each side's p99s, their median and how many were at most 5 ms, and
//!    the share of each run's records over 5 ms (at most 1 % where p99 is at
//!    most 5 ms; it shows how far a run is from the target).
//!
//! On Apache Kafka every run, throughput and latency, is first made once,
//! shorter and unmeasured, to warm the broker up: a JVM that has just started
//! compiles its hot paths during the first minute or so of load, and the
//! runs made meanwhile fell behind by up to seconds.
//!
//! After the runs, a third baseline, of the machine alone: one thread per
//! core spins on the clock for a few seconds (`BENCH_PAUSE_SECS`, default 5,
//! 0 for none), and every gap between two of its readings is a time its core
//! was taken from it while nothing of the benchmark ran (the kernel's own
//! threads, interrupts, the hypervisor; the broker idles, warm); see
//! [`machine_pauses`]. A pause of a few milliseconds on one of two cores
//! delays every record in flight by about as much.
//!
//! Targets (issue 6): ≥ 300k records/s; p99 ≤ 5 ms at 50k/s.
//!
//! The server and the plain loop run on this process's tokio runtime:
//! `TOKIO_WORKER_THREADS` sets its worker threads (one per core without it;
//! `scripts/bench-pipeline.sh` sets 1, as the README recommends for a `serve`
//! that shares a small machine's cores with the broker).
//!
//! Environment: `BENCH_RECORDS` (throughput run, default 500,000),
//! `BENCH_THROUGHPUT_RUNS` (throughput runs, each the plain loop then the
//! server, default 3; the median is printed after them),
//! `BENCH_RATE` (latency rates with the server's defaults, comma-separated,
//! default `5000,50000`, empty for none), `BENCH_LATENCY_RECORDS` (default 10 s
//! worth), `BENCH_SKIP_EMBEDDED`, `BENCH_SKIP_THROUGHPUT`,
//! `BENCH_SKIP_LATENCY`, `BENCH_SKIP_LOW_LATENCY`, `BENCH_LOW_LATENCY_RUNS`
//! (default 3), `BENCH_BROKER_WARMUP_SECS`
//! (records per warm-up run in seconds at its rate, default 8, 0 for no
//! warm-up); for the runs with the
//! server's defaults, extra librdkafka properties `k=v,k=v` of the consumers
//! (server, plain loop, results), the producers (server, plain loop) and the
//! provider: `BENCH_CONSUMER_PROPERTIES`, `BENCH_PRODUCER_PROPERTIES`,
//! `BENCH_PROVIDER_PROPERTIES`, and `BENCH_PARTITIONS`, `BENCH_COMMIT_BATCH`,
//! `BENCH_MAX_IN_FLIGHT` (the server's bound on unacknowledged results)
//! (to compare settings with the same command); `BENCH_LATENCY_TRACE=FILE`
//! writes each measured result (arrival ms, latency ms, `ts` → produced ms,
//! partition) to `FILE.<results topic>`, to see the shape of a tail.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowstage_model::pb::{ModelDescriptor, ServingResult, WineRecord};
use flowstage_stages::kafka::{EmbeddedBroker, EmbeddedBrokerConfig, TopicSpec};
use flowstage_stages::wine::provider::{provide, ProviderConfig};
use flowstage_stages::wine::server::{Server, ServerConfig};
use flowstage_stages::wine::{files, Topics};
use futures::StreamExt;
use hdrhistogram::Histogram;
use prost::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The `flowstage` binary's allocator, so the server is measured as `serve` runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Partitions of the data and results topics on the embedded broker (the mock
/// keeps at most 5 MiB per partition, so a long run needs many).
const MOCK_PARTITIONS: i32 = 32;

/// Partitions of the data and results topics on the embedded broker in the
/// latency runs (the consumers keep up, so the 5 MiB cap only drops records
/// already read). As on Apache Kafka: the mock looks a fetch's offset up by
/// walking the partition's list of produced batches, so many partitions of
/// small batches (a fixed rate, a short `linger.ms`) cost it much more per
/// fetch.
const MOCK_LATENCY_PARTITIONS: i32 = 6;

/// Partitions of the data and results topics on Apache Kafka (the tutorial's
/// layout; many small partitions make librdkafka's batches small).
const KAFKA_PARTITIONS: i32 = 6;

/// The fetch settings of the server's data consumer (`wine::server`), used by
/// the plain loop and the results consumer too: on Apache Kafka fetches
/// return when 64 KiB are there or after 2 ms, so a steady rate does not make
/// each consumer send thousands of small fetches a second (on a 2-core machine
/// the broker then spends a core on them and every latency grows); the mock
/// cluster stalls on a `fetch.min.bytes` above what arrives, so there it is 1.
const FETCH_WAIT_MAX_MS: &str = "2";

/// `name` from the environment, parsed; `None` when unset or unparsable.
fn env_parse<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn env_u64(name: &str, default: u64) -> u64 {
    env_parse(name).unwrap_or(default)
}

/// Where topics live: the embedded broker, or an external cluster.
enum Cluster {
    Embedded(EmbeddedBroker),
    External(String),
}

impl Cluster {
    fn bootstrap(&self) -> &str {
        match self {
            Cluster::Embedded(b) => b.bootstrap_servers(),
            Cluster::External(b) => b,
        }
    }

    /// `fetch.min.bytes` of the consumers (see [`FETCH_WAIT_MAX_MS`]).
    fn fetch_min_bytes(&self) -> &'static str {
        match self {
            Cluster::Embedded(_) => "1",
            Cluster::External(_) => "65536",
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Cluster::Embedded(_) => "embedded",
            Cluster::External(_) => "apache-kafka",
        }
    }

    /// Fresh topics for one scenario.
    async fn topics(&self, tag: &str, latency: bool, tuning: &Tuning) -> Result<Topics, BoxError> {
        let run = std::process::id();
        let t = Topics {
            data: format!("bench-{tag}-{run}-data"),
            models: format!("bench-{tag}-{run}-models"),
            results: format!("bench-{tag}-{run}-results"),
            dlq: format!("bench-{tag}-{run}-dlq"),
        };
        let partitions = match self {
            Cluster::Embedded(_) if latency => MOCK_LATENCY_PARTITIONS,
            Cluster::Embedded(_) => MOCK_PARTITIONS,
            Cluster::External(_) => KAFKA_PARTITIONS,
        };
        let partitions = tuning.partitions.unwrap_or(partitions);
        let specs = [
            (&t.data, partitions),
            (&t.models, 1),
            (&t.results, partitions),
            (&t.dlq, 1),
        ];
        match self {
            Cluster::Embedded(b) => {
                for (name, p) in specs {
                    b.create_topic(TopicSpec::new(name.as_str(), p))?;
                }
            }
            Cluster::External(bootstrap) => {
                let (admin, opts) = admin(bootstrap)?;
                let new: Vec<NewTopic<'_>> = specs
                    .iter()
                    .map(|(n, p)| NewTopic::new(n.as_str(), *p, TopicReplication::Fixed(1)))
                    .collect();
                for r in admin.create_topics(&new, &opts).await? {
                    r.map_err(|(t, e)| format!("cannot create {t}: {e}"))?;
                }
            }
        }
        Ok(t)
    }

    /// Deletes a finished scenario's topics (its data, models, results, dead
    /// letters and the server's instances topic) from an external cluster, so
    /// that a run leaves nothing on it and each scenario finds a broker that
    /// serves only its own partitions. A topic that cannot be deleted is
    /// reported, not an error. The embedded broker goes with its scenario.
    async fn remove_topics(&self, t: &Topics) {
        let Cluster::External(bootstrap) = self else {
            return;
        };
        let instances = format!("{}-instances", t.data);
        let names = [&t.data, &t.models, &t.results, &t.dlq, &instances].map(String::as_str);
        let outcome = match admin(bootstrap) {
            Ok((admin, opts)) => admin.delete_topics(&names, &opts).await.map(|rs| {
                rs.into_iter()
                    .filter_map(Result::err)
                    // The instances topic exists only where a server ran.
                    .filter(|(_, e)| *e != RDKafkaErrorCode::UnknownTopicOrPartition)
                    .map(|(t, e)| format!("{t}: {e}"))
                    .collect::<Vec<_>>()
            }),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(failed) if failed.is_empty() => {}
            Ok(failed) => eprintln!("note: topics not deleted: {}", failed.join(", ")),
            Err(e) => eprintln!("note: the run's topics were not deleted: {e}"),
        }
    }
}

/// An admin client of the cluster at `bootstrap`, and the options of its
/// topic operations.
fn admin(
    bootstrap: &str,
) -> rdkafka::error::KafkaResult<(AdminClient<DefaultClientContext>, AdminOptions)> {
    let admin = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    Ok((admin, opts))
}

/// The model and records: the tutorial's linear regression and wine CSV when
/// `../shared/data/wine` is there, else flowstage's generated ones.
fn material() -> Result<(ModelDescriptor, Vec<WineRecord>, String), BoxError> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/wine");
    let pmml = dir.join("winequalityLinearRegression.pmml");
    if pmml.is_file() {
        let m = files::model_descriptors(&[pmml], "wine", false)?;
        let records = files::read_wine_csv(dir.join("winequality_red.csv"))?;
        let model = m.into_iter().next().ok_or("no model")?;
        let name = model.name.clone();
        return Ok((model, records, name));
    }
    eprintln!(
        "note: {} not found: benchmarking flowstage's generated model and records",
        dir.display()
    );
    let model = files::generated_models()
        .into_iter()
        .next()
        .ok_or("no generated model")?;
    let name = model.name.clone();
    Ok((model, files::generated_wine_records(1_599, 7), name))
}

/// Publishes `n` records (and the model first) at `rate` (0: full speed).
async fn publish(
    bootstrap: &str,
    topics: &Topics,
    model: &ModelDescriptor,
    records: &[WineRecord],
    n: u64,
    rate: u64,
) -> Result<f64, BoxError> {
    let mut c = ProviderConfig::new(bootstrap);
    c.topics = topics.clone();
    c.rate = rate;
    c.count = Some(n);
    c.loop_data = true;
    c.model_interval = Duration::from_secs(3600);
    let s = provide(
        c,
        records.to_vec(),
        vec![model.clone()],
        |_| {},
        futures::future::pending(),
    )
    .await?;
    if s.records != n {
        return Err(format!("published {} of {n} records", s.records).into());
    }
    Ok(s.rate)
}

/// Latency histograms (µs): end to end, and its two halves split at the
/// result's Kafka timestamp (set by the server's producer when it hands the
/// result to librdkafka): record `ts` → result produced (provider delivery,
/// server fetch, decode, score) and result produced → seen by the results
/// consumer (server producer batching, broker, results consumer fetch).
struct Latencies {
    /// From the record's creation time to the microsecond (`ts` and
    /// `ts_micros`).
    total: Histogram<u64>,
    /// The same from `ts` alone (whole milliseconds, as measured until
    /// session 22): overstated by the creation time's fraction of a
    /// millisecond, 0–1 ms.
    total_ms_ts: Histogram<u64>,
    to_produce: Histogram<u64>,
    to_seen: Histogram<u64>,
    /// The machine's own delays over the same span, from a thread of the
    /// benchmark that sleeps 1 ms at a time: how much each sleep overran
    /// ([`hiccups`]).
    hiccups: Histogram<u64>,
    /// How busy the machine's cores were over the same span, from
    /// `/proc/stat` (`None` where it cannot be read).
    cpu: Option<CpuUse>,
}

impl Latencies {
    fn new() -> Result<Self, String> {
        Ok(Latencies {
            total: histogram()?,
            total_ms_ts: histogram()?,
            to_produce: histogram()?,
            to_seen: histogram()?,
            hiccups: histogram()?,
            cpu: None,
        })
    }
}

/// A histogram of microseconds, 1 µs to 60 s, 3 significant digits.
fn histogram() -> Result<Histogram<u64>, String> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())
}

/// The share of the machine's CPU time that was busy, and the share the
/// hypervisor stole, over a span (`/proc/stat`, all cores together).
#[derive(Clone, Copy)]
struct CpuUse {
    busy: f64,
    steal: f64,
}

/// What [`hiccups`] measured: the sleeps' overruns (µs) and the cores' use.
type MachineBaseline = (Histogram<u64>, Option<CpuUse>);

/// The first line of `/proc/stat`: (busy, steal, total) clock ticks of all
/// cores since boot; `None` where there is no such file (not Linux).
fn cpu_ticks() -> Option<(u64, u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let t: Vec<u64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal (guest time is
    // counted in user already).
    let total: u64 = t.iter().take(8).sum();
    let idle = t.get(3)? + t.get(4)?;
    let steal = *t.get(7)?;
    Some((total.saturating_sub(idle + steal), steal, total))
}

/// A baseline of the machine itself, measured while a latency run's records
/// flow: a thread sleeps 1 ms at a time until `stop` is set, and the
/// histogram holds how far each sleep overran (µs). It shows what the
/// scheduler alone adds on these shared cores (a stall of the virtual
/// machine, a busy core), which every latency of the run can include. With
/// it, how busy the cores were over the same span: near 100 % every
/// thread waits for a core, and tails grow with any burst.
fn hiccups(
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Result<MachineBaseline, String>> {
    std::thread::spawn(move || {
        let mut h = histogram()?;
        let before = cpu_ticks();
        let tick = Duration::from_millis(1);
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            std::thread::sleep(tick);
            let over = t.elapsed().saturating_sub(tick);
            h.saturating_record(over.as_micros().max(1) as u64);
        }
        let cpu = before
            .zip(cpu_ticks())
            .and_then(|((b0, s0, t0), (b1, s1, t1))| {
                let total = t1.checked_sub(t0).filter(|&t| t > 0)? as f64;
                Some(CpuUse {
                    busy: b1.saturating_sub(b0) as f64 / total,
                    steal: s1.saturating_sub(s0) as f64 / total,
                })
            });
        Ok((h, cpu))
    })
}

/// Gaps shorter than this between two clock readings of a spinning thread
/// are its own loop, not a pause of its core.
const PAUSE_MIN: Duration = Duration::from_micros(500);

/// What [`machine_pauses`] measured.
struct Pauses {
    /// Spinning threads, one per core.
    cores: usize,
    /// How long each spun.
    secs: f64,
    /// Every pause of at least [`PAUSE_MIN`] of every thread (µs).
    hist: Histogram<u64>,
}

impl Pauses {
    /// Pauses of at least `ms` a second, per core.
    fn rate_over(&self, ms: u64) -> f64 {
        self.hist.count_between(ms * 1000, u64::MAX) as f64 / (self.secs * self.cores as f64)
    }

    /// The share of the cores' time spent in pauses.
    fn share(&self) -> f64 {
        let paused_us: f64 = self
            .hist
            .iter_recorded()
            .map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64)
            .sum();
        paused_us / (self.secs * 1e6 * self.cores as f64)
    }
}

/// The machine alone, after the runs: one thread per core spins on the
/// clock for `secs` and records every gap between two readings of at least
/// [`PAUSE_MIN`]: the times its core was taken from it by something other
/// than the benchmark (the kernel's threads, interrupts, the hypervisor).
/// On the 2-core development machine (session 25) a core was taken for
/// 2–8 ms up to about once a second even so: by the kernel's memory monitor
/// (`kdamond`), its RCU thread, and by nothing the guest's scheduler saw.
fn machine_pauses(secs: f64) -> Result<Pauses, String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let span =
        Duration::try_from_secs_f64(secs).map_err(|e| format!("BENCH_PAUSE_SECS={secs}: {e}"))?;
    let spinners: Vec<_> = (0..cores)
        .map(|_| {
            std::thread::spawn(move || -> Result<Histogram<u64>, String> {
                let mut h = histogram()?;
                let start = Instant::now();
                let mut last = start;
                loop {
                    let now = Instant::now();
                    let gap = now.duration_since(last);
                    if gap >= PAUSE_MIN {
                        h.saturating_record(gap.as_micros() as u64);
                    }
                    last = now;
                    if now.duration_since(start) >= span {
                        return Ok(h);
                    }
                }
            })
        })
        .collect();
    let mut hist = histogram()?;
    for s in spinners {
        let h = s.join().map_err(|_| "a pause meter panicked")??;
        hist.add(&h).map_err(|e| e.to_string())?;
    }
    Ok(Pauses { cores, secs, hist })
}

/// Reads `n` messages of `topic` on a thread of its own and returns their
/// latencies. The first `warm` messages are a warm-up: after them `ready` is
/// signalled. The next `skip` are not measured either (the measured
/// provider's first records, sent while it connects); the latency (µs) from
/// each later message's `ServingResult.record_ts` goes into the histograms.
fn count_results(
    bootstrap: String,
    topic: String,
    n: u64,
    (warm, ready, skip): (u64, std::sync::mpsc::Sender<()>, u64),
    plain: bool,
    min_bytes: &'static str,
    tuning: &Tuning,
) -> std::thread::JoinHandle<Result<Latencies, String>> {
    let consumer = tuning.consumer.clone();
    std::thread::spawn(move || {
        let c: BaseConsumer = with(
            ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", format!("{topic}-counter"))
                .set("auto.offset.reset", "earliest")
                .set("enable.auto.commit", "false")
                .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS)
                .set("fetch.min.bytes", min_bytes)
                .set("socket.nagle.disable", "true"),
            &consumer,
        )
        .create()
        .map_err(|e| e.to_string())?;
        c.subscribe(&[&topic]).map_err(|e| e.to_string())?;
        let mut h = Latencies::new()?;
        let mut seen = 0u64;
        // `BENCH_LATENCY_TRACE=FILE`: one line per measured result, to see
        // the shape of the tail (arrival ms, total ms, ts → produced ms).
        let mut trace = match std::env::var("BENCH_LATENCY_TRACE") {
            Ok(path) => Some(std::io::BufWriter::new(
                std::fs::File::create(format!("{path}.{topic}")).map_err(|e| e.to_string())?,
            )),
            Err(_) => None,
        };
        let deadline = Instant::now() + Duration::from_secs(600);
        while seen < n {
            if Instant::now() > deadline {
                return Err(format!("only {seen} of {n} results after 600 s"));
            }
            let Some(m) = c.poll(Duration::from_millis(100)) else {
                continue;
            };
            let m = m.map_err(|e| e.to_string())?;
            seen += 1;
            if seen == warm {
                let _ = ready.send(());
            }
            if seen <= warm + skip {
                continue;
            }
            let payload = m.payload().unwrap_or_default();
            // The plain loop forwards the record itself.
            let (ts, record_ts) = if plain {
                let r = WineRecord::decode(payload).map_err(|e| e.to_string())?;
                (r.ts, r.created_ms())
            } else {
                let r = ServingResult::decode(payload).map_err(|e| e.to_string())?;
                (r.record_ts, r.record_created_ms())
            };
            let now = flowstage_model::pb::now_ms();
            let us = |ms: f64| (ms * 1e3).max(1.0) as u64;
            h.total.saturating_record(us(now - record_ts));
            h.total_ms_ts.saturating_record(us(now - ts as f64));
            let produced = m.timestamp().to_millis().map(|p| p as f64);
            if let Some(produced) = produced {
                h.to_produce.saturating_record(us(produced - record_ts));
                h.to_seen.saturating_record(us(now - produced));
            }
            if let Some(w) = trace.as_mut() {
                use std::io::Write as _;
                let split = produced.map_or(-1.0, |p| p - record_ts);
                writeln!(
                    w,
                    "{now:.3} {:.3} {split:.0} {}",
                    now - record_ts,
                    m.partition()
                )
                .map_err(|e| e.to_string())?;
            }
        }
        Ok(h)
    })
}

/// The baseline: consume each record, produce its payload unchanged.
async fn pass_through(
    bootstrap: &str,
    from: &str,
    to: &str,
    n: u64,
    min_bytes: &str,
    tuning: &Tuning,
) -> Result<(), BoxError> {
    let consumer: StreamConsumer = with(
        ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", format!("{from}-baseline"))
            .set("socket.nagle.disable", "true")
            .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS)
            .set("fetch.min.bytes", min_bytes)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false"),
        &tuning.consumer,
    )
    .create()?;
    consumer.subscribe(&[from])?;
    let producer: FutureProducer = with(
        ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            // The server's default (`wine::server`).
            .set("linger.ms", "5")
            .set("socket.nagle.disable", "true"),
        &tuning.producer,
    )
    .create()?;
    let acks = Arc::new(AtomicU64::new(0));
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut consumed = 0u64;
    while consumed < n {
        let m = consumer.recv().await?;
        consumed += 1;
        let f = producer.send_result(
            FutureRecord::to(to)
                .payload(m.payload().unwrap_or_default())
                .key(m.key().unwrap_or_default()),
        );
        match f {
            Ok(f) => pending.push(f),
            Err((e, _)) => return Err(e.into()),
        }
        while pending.len() >= 10_000 {
            if let Some(r) = pending.next().await {
                r.map_err(|_| "cancelled")?.map_err(|(e, _)| e)?;
                acks.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    while let Some(r) = pending.next().await {
        r.map_err(|_| "cancelled")?.map_err(|(e, _)| e)?;
    }
    producer.flush(Timeout::After(Duration::from_secs(30)))?;
    Ok(())
}

fn server_config(bootstrap: &str, topics: &Topics, tag: &str, tuning: &Tuning) -> ServerConfig {
    let mut c = ServerConfig::new(bootstrap);
    c.topics = topics.clone();
    c.group_id = format!("bench-{tag}-{}", std::process::id());
    c.instances_topic = format!("{}-instances", topics.data);
    c.http = None;
    c.consumer_properties = tuning.consumer.clone();
    c.producer_properties = tuning.producer.clone();
    if let Some(n) = tuning.commit_batch {
        c.commit = c.commit.max_batch(n);
    }
    if let Some(n) = env_parse::<usize>("BENCH_MAX_IN_FLIGHT") {
        c.max_in_flight = n;
    }
    c
}

/// `config` with `properties` set over it: the baseline and the results
/// consumer take the server's settings too.
fn with(config: &mut ClientConfig, properties: &[(String, String)]) -> ClientConfig {
    for (k, v) in properties {
        config.set(k, v);
    }
    config.clone()
}

/// Extra librdkafka properties from `name`: `k=v,k=v`.
fn env_properties(name: &str) -> Vec<(String, String)> {
    std::env::var(name)
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The client settings of a scenario, over the defaults of each client: the
/// server's, and the same ones for the plain loop and the results consumer.
#[derive(Clone)]
struct Tuning {
    /// In topic names and the printed lines.
    tag: &'static str,
    /// Partitions of the data and results topics; `None`: the cluster's.
    partitions: Option<i32>,
    /// Every consumer of the data and results (server, plain loop, results).
    consumer: Vec<(String, String)>,
    /// The server's and the plain loop's producer.
    producer: Vec<(String, String)>,
    /// The provider's producer.
    provider: Vec<(String, String)>,
    /// The server commits every this many records (`None`: its default).
    commit_batch: Option<usize>,
}

impl Tuning {
    /// The server's defaults, with the `BENCH_*_PROPERTIES` of the
    /// environment over them.
    fn defaults() -> Self {
        Tuning {
            tag: "",
            partitions: env_parse("BENCH_PARTITIONS"),
            consumer: env_properties("BENCH_CONSUMER_PROPERTIES"),
            producer: env_properties("BENCH_PRODUCER_PROPERTIES"),
            provider: env_properties("BENCH_PROVIDER_PROPERTIES"),
            commit_batch: env_parse("BENCH_COMMIT_BATCH"),
        }
    }

    /// Tuned for latency at a rate one partition takes, taken from
    /// [`ServerConfig::low_latency`] (`serve --low-latency`) and
    /// [`ProviderConfig::low_latency`] (`provide --low-latency`), for the
    /// plain loop and the results consumer too: one partition (a
    /// produce request carries one batch, a fetch is answered by one
    /// append); fetches answered as soon as a record is there
    /// (`fetch.min.bytes` 1: affordable with one partition, with six the
    /// broker spends a core on fetches); batches of 0.2 ms (`linger.ms` 0
    /// makes a request per record, more than the broker takes at 50,000/s);
    /// the server's commit batch (10,000 records), printed with the rest.
    fn low_latency() -> Self {
        let server = ServerConfig::new("").low_latency();
        Tuning {
            tag: "lowlat",
            partitions: server.create_topics,
            consumer: server.consumer_properties,
            producer: server.producer_properties,
            provider: ProviderConfig::new("").low_latency().properties,
            commit_batch: Some(server.commit.max_batch),
        }
    }

    /// How the printed lines name these settings.
    fn describe(&self) -> String {
        if self.tag.is_empty() {
            return String::new();
        }
        let mut d = format!(", {} settings (", self.tag);
        if let Some(p) = self.partitions {
            d += &format!("{p} partition(s); ");
        }
        let props = |ps: &[(String, String)]| {
            ps.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        d += &format!(
            "consumers {}; producers {}; commit every {} records)",
            props(&self.consumer),
            props(&self.producer),
            self.commit_batch.unwrap_or(0)
        );
        d
    }
}

/// Seconds from the first result of `topic` to its `n`-th, on a thread of its
/// own, from the topic's end offsets (one request for every partition, every
/// 5 ms): what reaches Kafka, without reading it back. A consumer of the
/// results on the same two cores would take CPU from the server and the broker
/// (about a fifth of what the server spends per record, in librdkafka's
/// fetch parsing alone), which a downstream consumer elsewhere does not.
fn results_span(
    bootstrap: String,
    topic: String,
    n: u64,
) -> std::thread::JoinHandle<Result<f64, String>> {
    std::thread::spawn(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .map_err(|e| e.to_string())?;
        let md = c
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in md.topics().iter().flat_map(|t| t.partitions()) {
            tpl.add_partition_offset(&topic, p.id(), rdkafka::Offset::End)
                .map_err(|e| e.to_string())?;
        }
        if tpl.count() == 0 {
            return Err(format!("{topic}: no partitions"));
        }
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut first = None;
        loop {
            // Offset::End as a timestamp asks for each partition's end offset.
            let ends = c
                .offsets_for_times(tpl.clone(), Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            let total: i64 = ends
                .elements()
                .iter()
                .map(|e| match e.offset() {
                    rdkafka::Offset::Offset(o) => o,
                    _ => 0,
                })
                .sum();
            let now = Instant::now();
            if total > 0 {
                first.get_or_insert(now);
            }
            if total >= n as i64 {
                return Ok(first.map_or(0.0, |f| now.duration_since(f).as_secs_f64()));
            }
            if now > deadline {
                return Err(format!("only {total} of {n} results after 600 s"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

async fn throughput(
    cluster: &Cluster,
    model: &ModelDescriptor,
    records: &[WineRecord],
    n: u64,
    tuning: &Tuning,
    label: &str,
) -> Result<(f64, f64, f64), BoxError> {
    let b = cluster.bootstrap();
    let tag = |t: &str| format!("{label}{t}");
    // Times the results of `n` records, on a thread of its own.
    let count = |t: &Topics| results_span(b.into(), t.results.clone(), n);
    // Baseline: plain consume → produce.
    let t = cluster.topics(&tag("base"), false, tuning).await?;
    let provider_rate = publish(b, &t, model, records, n, 0).await?;
    let counter = count(&t);
    pass_through(b, &t.data, &t.results, n, cluster.fetch_min_bytes(), tuning).await?;
    let base_secs = counter.join().map_err(|_| "counter panicked")??;
    cluster.remove_topics(&t).await;

    // The server.
    let t = cluster.topics(&tag("tput"), false, tuning).await?;
    publish(b, &t, model, records, n, 0).await?;
    let counter = count(&t);
    let server = Server::start(server_config(b, &t, &tag("tput"), tuning)).await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let secs = tokio::task::spawn_blocking(move || counter.join())
        .await?
        .map_err(|_| "counter panicked")??;
    let _ = stop.send(());
    let summary = running.await??;
    cluster.remove_topics(&t).await;
    if summary.results < n {
        return Err(format!("server produced {} of {n} results", summary.results).into());
    }
    Ok((n as f64 / secs, n as f64 / base_secs, provider_rate))
}

async fn latency(
    cluster: &Cluster,
    model: &ModelDescriptor,
    records: &[WineRecord],
    rate: u64,
    n: u64,
    (plain, warm_up, run): (bool, bool, u64),
    tuning: &Tuning,
) -> Result<(Latencies, f64), BoxError> {
    let b = cluster.bootstrap();
    // Topics of their own for each run (of a repeated one: `run` > 1).
    let tag = format!(
        "{}lat{rate}{}{}{}",
        if warm_up { "warm" } else { "" },
        tuning.tag,
        if plain { "plain" } else { "" },
        if run > 1 {
            format!("r{run}")
        } else {
            String::new()
        }
    );
    let t = cluster.topics(&tag, true, tuning).await?;
    let warm = 1_000;
    // The measured provider's first half second: it connects and looks the
    // topics up while its first records are stamped, which a long-running
    // provider does once.
    let skip = rate / 2;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = if plain {
        let (b, from, to) = (b.to_string(), t.data.clone(), t.results.clone());
        let min_bytes = cluster.fetch_min_bytes();
        let tuning = tuning.clone();
        tokio::spawn(async move {
            let _stop = stopped;
            pass_through(&b, &from, &to, warm + skip + n, min_bytes, &tuning)
                .await
                .map_err(|e| e.to_string())
        })
    } else {
        let server = Server::start(server_config(b, &t, &tag, tuning)).await?;
        tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    };
    // Warm-up: the model and a few records, so the server's group has joined,
    // the model serves and the results consumer has caught up before the
    // measured records are sent.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let counter = count_results(
        b.into(),
        t.results.clone(),
        warm + skip + n,
        (warm, ready_tx, skip),
        plain,
        cluster.fetch_min_bytes(),
        tuning,
    );
    publish(b, &t, model, records, warm, 10_000).await?;
    tokio::task::spawn_blocking(move || ready_rx.recv())
        .await?
        .map_err(|_| "the results consumer stopped during the warm-up")?;
    let mut c = ProviderConfig::new(b);
    c.topics = t.clone();
    c.rate = rate;
    c.count = Some(skip + n);
    c.loop_data = true;
    // The provider's default batches of 5 ms matter on the mock cluster too:
    // it appends each produced batch to a list per partition and walks that
    // list from its start for every fetch, so with batches of 1 ms (1–10
    // records per partition) its fetches got slower the longer the run, and
    // after a few seconds at 50,000 records/s latencies grew to seconds.
    c.properties = tuning.provider.clone();
    let stop_meter = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let meter = hiccups(stop_meter.clone());
    // The provider on a runtime of its own (a separate process in production),
    // so its pacing does not share worker threads with the server.
    let rs = records.to_vec();
    let sent = tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?
            .block_on(provide(
                c,
                rs,
                Vec::new(),
                |_| {},
                futures::future::pending(),
            ))
            .map_err(|e| e.to_string())
    })
    .await??;
    let mut hist = tokio::task::spawn_blocking(move || counter.join())
        .await?
        .map_err(|_| "counter panicked")??;
    stop_meter.store(true, Ordering::Relaxed);
    (hist.hiccups, hist.cpu) = tokio::task::spawn_blocking(move || meter.join())
        .await?
        .map_err(|_| "hiccup meter panicked")??;
    let _ = stop.send(());
    running.await??;
    cluster.remove_topics(&t).await;
    Ok((hist, sent.rate))
}

/// Throughput on one cluster, then latency at each rate on a fresh one
/// (`fresh` makes them).
async fn bench(
    mut fresh: impl FnMut() -> Result<Cluster, BoxError>,
    model: &ModelDescriptor,
    records: &[WineRecord],
    name: &str,
) -> Result<(), BoxError> {
    let n = env_u64("BENCH_RECORDS", 500_000);
    let rates: Vec<u64> = match std::env::var("BENCH_RATE") {
        Ok(v) => v
            .split(',')
            .filter(|r| !r.trim().is_empty())
            .map(|r| r.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("BENCH_RATE={v}: {e}"))?,
        Err(_) => vec![5_000, 50_000],
    };
    let cluster = fresh()?;
    let which = cluster.name();
    let external = matches!(cluster, Cluster::External(_));
    let defaults = Tuning::defaults();
    let (skip_throughput, skip_latency) = (
        std::env::var("BENCH_SKIP_THROUGHPUT").is_ok(),
        std::env::var("BENCH_SKIP_LATENCY").is_ok(),
    );
    // The server's defaults at each rate; on Apache Kafka the low-latency
    // settings at 50,000 records/s too (the mock cluster cannot take
    // batches that small: see `latency`).
    // (rate, settings, measured runs): the low-latency runs are made
    // `BENCH_LOW_LATENCY_RUNS` times (default 3), then each side's p99s are
    // printed with their median and how many were at most 5 ms, as one such
    // run's p99 moved between 4.9 and 20 ms within an hour.
    let mut runs: Vec<(u64, Tuning, u64)> =
        rates.iter().map(|&r| (r, defaults.clone(), 1)).collect();
    if external && std::env::var("BENCH_SKIP_LOW_LATENCY").is_err() {
        let repeats = env_u64("BENCH_LOW_LATENCY_RUNS", 3).max(1);
        runs.push((50_000, Tuning::low_latency(), repeats));
    }
    if skip_latency {
        runs.clear();
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e3;
    // A broker that has just started compiles its hot paths while the first
    // runs go (the JIT: on the 2-core machine its compiler threads took
    // 10.9 s of CPU during the first 50,000 records/s pair of runs, 4.9 s
    // during the second, under 0.7 s later), so the first runs measure a
    // young JVM, not Kafka as it serves. Each run is made once unmeasured
    // first, shorter: the throughput run with a fifth of the records, each
    // latency run with `BENCH_BROKER_WARMUP_SECS` of records (default 8, 0
    // for no warm-up). The mock cluster is C and needs none.
    let warm_secs = if external {
        env_u64("BENCH_BROKER_WARMUP_SECS", 8)
    } else {
        0
    };
    if warm_secs > 0 {
        if !skip_throughput {
            let n = (n / 5).max(1);
            let (rps, base, _) = throughput(&cluster, model, records, n, &defaults, "warm").await?;
            println!(
                "{which:>13} warm-up of the broker (not measured): throughput, {n} records: server {rps:.0} records/s, plain loop {base:.0} records/s"
            );
        }
        for (rate, tuning, _) in &runs {
            for plain in [true, false] {
                let n = rate * warm_secs;
                let (l, _) = latency(
                    &fresh()?,
                    model,
                    records,
                    *rate,
                    n,
                    (plain, true, 1),
                    tuning,
                )
                .await?;
                let who = if plain { "plain loop" } else { "server" };
                println!(
                    "{which:>13} warm-up of the broker (not measured): {who} at {rate} records/s{}, {n} records: p50 {:.2} ms, p99 {:.2} ms",
                    tuning.describe(),
                    ms(&l.total, 0.50),
                    ms(&l.total, 0.99)
                );
            }
        }
    }
    if !skip_throughput {
        // Several runs, each the plain loop then the server: one run on a
        // shared machine moves by a fifth either way (215–317 k records/s in
        // 8 runs of one day); the median says more.
        let runs = env_u64("BENCH_THROUGHPUT_RUNS", 3).max(1);
        let mut measured = Vec::new();
        for i in 1..=runs {
            let (rps, base, provider_rate) =
                throughput(&cluster, model, records, n, &defaults, &format!("r{i}")).await?;
            println!(
                "{which:>13} throughput, run {i} of {runs}: {n} records, model {name}: server {rps:.0} records/s, \
                 plain rdkafka pass-through {base:.0} records/s, ratio {:.2}x; provider published at {provider_rate:.0} records/s",
                rps / base,
            );
            measured.push((rps, base));
        }
        let server = median(measured.iter().map(|m| m.0).collect());
        let base = median(measured.iter().map(|m| m.1).collect());
        let ratio = median(measured.iter().map(|m| m.0 / m.1).collect());
        println!(
            "{which:>13} throughput, median of {runs}: server {server:.0} records/s (target >= 300000), \
             plain rdkafka pass-through {base:.0} records/s, ratio {ratio:.2}x of the baseline"
        );
    }
    drop(cluster);
    for (rate, tuning, repeats) in runs {
        let lat_n = env_u64("BENCH_LATENCY_RECORDS", rate * 10);
        let how = tuning.describe();
        // The tails of the plain loop's runs, then the server's.
        let mut tails: [Vec<Tail>; 2] = Default::default();
        for (i, plain) in (1..=repeats).flat_map(|i| [(i, true), (i, false)]) {
            let run = if repeats > 1 {
                format!(", run {i} of {repeats}")
            } else {
                String::new()
            };
            let (l, sent_rate) = latency(
                &fresh()?,
                model,
                records,
                rate,
                lat_n,
                (plain, false, i),
                &tuning,
            )
            .await?;
            let h = &l.total;
            let tail = Tail {
                p99: ms(h, 0.99),
                p99_ms: ms(&l.total_ms_ts, 0.99),
                over_5ms: 100.0 * (1.0 - h.quantile_below(TARGET_P99_US)),
            };
            let who = if plain { "plain loop" } else { "server" };
            println!(
                "{which:>13} {who} latency at {rate} records/s{how}{run} ({lat_n} records, provider achieved {sent_rate:.0}/s): \
                 p50 {:.2} ms, p99 {:.2} ms (target <= 5 ms at 50000/s), p99.9 {:.2} ms, max {:.2} ms; \
                 {:.2} % of the records over 5 ms (p99 <= 5 ms: at most 1 %)",
                ms(h, 0.50),
                tail.p99,
                ms(h, 0.999),
                h.max() as f64 / 1e3,
                tail.over_5ms
            );
            tails[usize::from(!plain)].push(tail);
            println!(
                "{which:>13}   from ts in whole milliseconds (ts_micros ignored, as before session 22): \
                 p50 {:.2} ms, p99 {:.2} ms",
                ms(&l.total_ms_ts, 0.50),
                ms(&l.total_ms_ts, 0.99),
            );
            println!(
                "{which:>13}   of which ts -> result produced: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
                 result produced -> seen: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                ms(&l.to_produce, 0.50),
                ms(&l.to_produce, 0.99),
                l.to_produce.max() as f64 / 1e3,
                ms(&l.to_seen, 0.50),
                ms(&l.to_seen, 0.99),
                l.to_seen.max() as f64 / 1e3
            );
            let cpu = l.cpu.map_or(String::new(), |c| {
                format!(
                    "; cores busy {:.0} % (stolen by the host {:.1} %)",
                    c.busy * 100.0,
                    c.steal * 100.0
                )
            });
            println!(
                "{which:>13}   the machine meanwhile: 1 ms sleeps overran by p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms{cpu}",
                ms(&l.hiccups, 0.50),
                ms(&l.hiccups, 0.99),
                ms(&l.hiccups, 0.999),
                l.hiccups.max() as f64 / 1e3
            );
        }
        if repeats > 1 {
            for (who, runs) in ["plain loop", "server"].iter().zip(tails) {
                let met = runs
                    .iter()
                    .filter(|t| t.p99 <= TARGET_P99_US as f64 / 1e3)
                    .count();
                let each = |f: fn(&Tail) -> f64| -> (String, f64) {
                    let v: Vec<f64> = runs.iter().map(f).collect();
                    let listed: Vec<String> = v.iter().map(|x| format!("{x:.2}")).collect();
                    (listed.join(", "), median(v))
                };
                let (p99, p99_median) = each(|t| t.p99);
                let (p99_ms, p99_ms_median) = each(|t| t.p99_ms);
                let (over, over_median) = each(|t| t.over_5ms);
                println!(
                    "{which:>13} {who} latency at {rate} records/s{how}, {repeats} runs: p99 {p99} ms, \
                     median {p99_median:.2} ms; at most 5 ms in {met} of {repeats}; records over 5 ms {over} %, \
                     median {over_median:.2} % (from ts in whole ms: p99 {p99_ms} ms, median {p99_ms_median:.2})",
                );
            }
        }
    }
    Ok(())
}

/// The latency target at 50,000 records/s (issue 6): p99 at most 5 ms, in µs
/// as the histograms count.
const TARGET_P99_US: u64 = 5_000;

/// One latency run's tail, from each record's creation to the µs.
struct Tail {
    /// p99 (ms).
    p99: f64,
    /// p99 (ms) from `ts` in whole milliseconds, as measured until session 22.
    p99_ms: f64,
    /// The share of the records over 5 ms (%): p99 is at most 5 ms when this
    /// is at most 1 %. It shows how far a run is from that target, where p99
    /// only says on which side.
    over_5ms: f64,
}

/// The median of `v` (the upper one of an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let (model, records, name) = material()?;
    println!(
        "async worker threads of the server and the plain loop: {} (TOKIO_WORKER_THREADS)",
        tokio::runtime::Handle::current().metrics().num_workers()
    );
    if std::env::var("BENCH_SKIP_EMBEDDED").is_err() {
        // A fresh mock cluster per scenario: it slows down as it fills up.
        let fresh = || -> Result<Cluster, BoxError> {
            Ok(Cluster::Embedded(EmbeddedBroker::start(
                EmbeddedBrokerConfig::new(1),
            )?))
        };
        bench(fresh, &model, &records, &name).await?;
    }
    match std::env::var("FLOWSTAGE_KAFKA_BOOTSTRAP") {
        Ok(b) if !b.trim().is_empty() => {
            let external = || Ok(Cluster::External(b.clone()));
            bench(external, &model, &records, &name).await?;
        }
        _ => println!(
            "apache-kafka: SKIPPED (FLOWSTAGE_KAFKA_BOOTSTRAP not set; scripts/bench-pipeline.sh starts Kafka)"
        ),
    }
    let pause_secs = env_parse::<f64>("BENCH_PAUSE_SECS").unwrap_or(5.0);
    if pause_secs > 0.0 {
        let p = tokio::task::spawn_blocking(move || machine_pauses(pause_secs)).await??;
        println!(
            "the machine alone, after the runs ({} threads spinning on the clock for {pause_secs} s, one per core; \
             a broker started for the runs idle): pauses of its cores of >= 1 ms {:.2} a second per core, >= 2 ms {:.2}, >= 5 ms {:.2}; \
             longest {:.2} ms; {:.2} % of the cores' time (BENCH_PAUSE_SECS)",
            p.cores,
            p.rate_over(1),
            p.rate_over(2),
            p.rate_over(5),
            p.hist.max() as f64 / 1e3,
            p.share() * 100.0
        );
    }
    Ok(())
}
