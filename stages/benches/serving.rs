//! Serving-stage benchmarks, one command:
//!
//! ```text
//! cargo bench -p flowstage-stages --bench serving
//! ```
//!
//! 1. Overhead: records through the serving stage (default configuration)
//!    with a trivial model, against a bare `map` doing the same per-record
//!    work (convert the record, time and score it, build the `ServingResult`).
//!    Runs of 200k records, the two sides interleaved, 15 runs each; the best
//!    run counts (short interleaved runs: on a shared machine some of them are
//!    not preempted). Also the CPU time of all the process's threads per
//!    record (Linux), which preemption by other processes does not inflate,
//!    and, as extra lines, a minimal custom stage (the core's own cost), the
//!    serving stage with micro-batching (`batch_size` 64), and the serving
//!    stage fused into the task that takes its results (`own_task` false).
//! 2. Swap latency: while records flow at full speed, a model descriptor is
//!    offered (loaded on the blocking pool, installed between two records);
//!    the latency is from the offer to the first result scored by the new
//!    model, as seen by the consumer. 200 swaps, HDR histogram p50/p99.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowstage::prelude::*;
use flowstage::stage::{
    GraphStageBuilder, GraphStageLogic, Inlet, InletId, Outlet, OutletId, StageContext,
};
use flowstage_model::pb::model_descriptor::MessageContent;
use flowstage_model::pb::{ModelDescriptor, ServingResult};
use flowstage_model::{FieldDesc, Model, ModelError, ModelType, Record, Score, Value};
use flowstage_stages::serving::{
    BuiltModel, ModelLoader, ModelMessage, ServingConfig, ServingRecord, ServingStage,
};
use hdrhistogram::Histogram;

#[derive(Debug, Clone)]
struct Rec(u64);

impl ServingRecord for Rec {
    fn data_type(&self) -> &str {
        "t"
    }
    fn to_record(&self) -> Record {
        Record::with_capacity(1).with("x", self.0 as f64)
    }
    fn record_ts(&self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }
}

#[derive(Debug)]
struct Trivial(f64);

impl Model for Trivial {
    fn model_type(&self) -> ModelType {
        ModelType::Other(100)
    }
    fn inputs(&self) -> &[FieldDesc] {
        &[]
    }
    fn outputs(&self) -> &[FieldDesc] {
        &[]
    }
    fn score(&self, r: &Record) -> Result<Score, ModelError> {
        let x = r
            .get("x")
            .and_then(Value::as_f64)
            .ok_or_else(|| ModelError::Input("x".into()))?;
        Ok(Score {
            value: Value::Number(x * self.0),
            outputs: vec![],
        })
    }
    fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        Ok(self.0.to_le_bytes().to_vec())
    }
}

fn trivial_loader(d: &ModelDescriptor) -> Result<Box<dyn Model>, ModelError> {
    let f = match &d.message_content {
        Some(MessageContent::Data(b)) if b.len() == 8 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            f64::from_le_bytes(a)
        }
        _ => return Err(ModelError::EmptyDescriptor(d.name.clone())),
    };
    Ok(Box::new(Trivial(f)))
}

/// Records per overhead run.
const N: u64 = 200_000;

async fn bare_map() -> Duration {
    let model: Arc<dyn Model> = Arc::new(Trivial(2.0));
    let start = Instant::now();
    let n = Source::from_iter((0..N).map(Rec))
        .map(move |r| work(&*model, &r))
        .run_with(Sink::fold(0u64, |n, _r: ServingResult| n + 1))
        .await
        .unwrap_or(0);
    assert_eq!(n, N);
    start.elapsed()
}

async fn stage(config: ServingConfig) -> Duration {
    let models = Source::single(ModelMessage::Built(BuiltModel::new(
        "m",
        "",
        "t",
        Arc::new(Trivial(2.0)),
    )));
    let start = Instant::now();
    let (results, _state) = match ServingStage::new(trivial_loader)
        .config(config)
        .build(models, Source::from_iter((0..N).map(Rec)))
    {
        Ok(x) => x,
        Err(e) => panic!("build: {e}"),
    };
    let n = results
        .run_with(Sink::fold(0u64, |n, _r: ServingResult| n + 1))
        .await
        .unwrap_or(0);
    assert_eq!(n, N);
    start.elapsed()
}

/// The same per-record work in the smallest custom stage (one inlet, one
/// outlet, no statistics): the core's own per-element cost, for reference.
struct Minimal {
    data: Inlet<Rec>,
    out: Outlet<ServingResult>,
    model: Arc<dyn Model>,
}

impl GraphStageLogic for Minimal {
    type Event = ();

    fn on_push(&mut self, ctx: &mut StageContext<'_, ()>, _: InletId) -> Result<(), StreamError> {
        let r = ctx.grab(self.data)?;
        ctx.push(self.out, work(&*self.model, &r))
    }

    fn on_pull(&mut self, ctx: &mut StageContext<'_, ()>, _: OutletId) -> Result<(), StreamError> {
        ctx.pull(self.data)
    }
}

fn work(model: &dyn Model, r: &Rec) -> ServingResult {
    let rec = r.to_record();
    let t0 = Instant::now();
    let scored = model.score(&rec);
    let d = t0.elapsed();
    // The result built complete, as the serving stage builds it.
    match scored {
        Ok(s) => s.to_serving_result_for("m", r.data_type(), d, r.record_ts(), r.record_key()),
        Err(e) => ServingResult {
            error: e.to_string(),
            record_ts: r.record_ts(),
            ..Default::default()
        },
    }
}

async fn minimal_stage() -> Duration {
    let start = Instant::now();
    let mut b = GraphStageBuilder::new();
    let data = b.add_inlet(Source::from_iter((0..N).map(Rec)));
    let out = b.add_outlet();
    let mut outlets = b.build_active(Minimal {
        data,
        out,
        model: Arc::new(Trivial(2.0)),
    });
    let n = match outlets.source(out) {
        Ok(s) => s
            .run_with(Sink::fold(0u64, |n, _r: ServingResult| n + 1))
            .await
            .unwrap_or(0),
        Err(e) => panic!("outlet: {e}"),
    };
    assert_eq!(n, N);
    start.elapsed()
}

/// CPU time of all the process's threads so far (Linux: the first field of
/// each `/proc/self/task/*/schedstat`, nanoseconds); `None` elsewhere.
fn cpu_time() -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// The best wall time and the best CPU time (all threads) of one benchmark side.
#[derive(Clone, Copy)]
struct Best {
    wall: Duration,
    cpu: Option<u64>,
}

impl Best {
    const NONE: Best = Best {
        wall: Duration::MAX,
        cpu: Some(u64::MAX),
    };

    async fn run<F: std::future::Future<Output = Duration>>(&mut self, f: F) {
        let c0 = cpu_time();
        let wall = f.await;
        let cpu = c0.zip(cpu_time()).map(|(a, b)| b.saturating_sub(a));
        self.wall = self.wall.min(wall);
        self.cpu = self.cpu.zip(cpu).map(|(a, b)| a.min(b));
    }

    fn per(&self) -> f64 {
        self.wall.as_nanos() as f64 / N as f64
    }

    fn cpu_per(&self) -> Option<f64> {
        self.cpu.map(|c| c as f64 / N as f64)
    }

    fn ratio(&self, base: &Best) -> f64 {
        self.wall.as_secs_f64() / base.wall.as_secs_f64()
    }
}

fn descriptor(k: usize) -> ModelMessage {
    ModelMessage::Descriptor(ModelDescriptor {
        name: format!("s{k}"),
        description: String::new(),
        data_type: "t".into(),
        modeltype: 100,
        message_content: Some(MessageContent::Data((k as f64).to_le_bytes().to_vec())),
    })
}

/// Offers `swaps` models (`descriptor(k)` must be named `s{k}` or
/// `s{k}-...`) while records made by `record` flow at full speed; returns the
/// histogram of offer -> first record scored by the model, and the records served.
async fn swap_latency<R: ServingRecord>(
    swaps: usize,
    loader: Arc<dyn ModelLoader>,
    record: impl Fn(u64) -> R + Send + 'static,
    descriptor: impl Fn(usize) -> ModelMessage,
) -> (Histogram<u64>, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let stop_data = stop.clone();
    let data = Source::from_iter(
        (0u64..).map_while(move |i| (!stop_data.load(Ordering::Relaxed)).then(|| record(i))),
    );
    let (models, queue) = {
        let (q, s) =
            Source::queue::<ModelMessage>(4, OverflowStrategy::Backpressure).pre_materialize();
        (s, q)
    };
    let (results, _state) = match ServingStage::with_loader(loader).build(models, data) {
        Ok(x) => x,
        Err(e) => panic!("build: {e}"),
    };
    // offered[k]: when model k was offered; the consumer reports the first result of each.
    let offered: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; swaps]));
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Duration)>();
    let consumer = {
        let offered = offered.clone();
        let mut last = String::new();
        tokio::spawn(
            results.run_with(Sink::fold(0u64, move |n, r: ServingResult| {
                if r.model_name != last {
                    last.clone_from(&r.model_name);
                    if let Some(k) = r
                        .model_name
                        .strip_prefix('s')
                        .and_then(|k| k.split('-').next())
                        .and_then(|k| k.parse::<usize>().ok())
                    {
                        let at = offered
                            .lock()
                            .ok()
                            .and_then(|o| o.get(k).copied().flatten());
                        if let Some(at) = at {
                            let _ = seen_tx.send((k, at.elapsed()));
                        }
                    }
                }
                n + 1
            })),
        )
    };
    let mut hist = match Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3) {
        Ok(h) => h,
        Err(e) => panic!("histogram: {e}"),
    };
    for k in 0..swaps {
        if let Ok(mut o) = offered.lock() {
            o[k] = Some(Instant::now());
        }
        let _ = queue.offer(descriptor(k)).await;
        // Wait for the first result scored by model k.
        loop {
            match seen_rx.recv().await {
                Some((seen, d)) if seen == k => {
                    hist.saturating_record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
                    break;
                }
                Some(_) => continue,
                None => panic!("consumer ended"),
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    queue.complete();
    let records = match consumer.await {
        Ok(Ok(n)) => n,
        other => panic!("consumer: {other:?}"),
    };
    (hist, records)
}

fn report(what: &str, swaps: usize, records: u64, h: &Histogram<u64>) {
    println!(
        "swap latency, {what} (offer -> first record scored by the new model), {swaps} swaps \
         while {records} records flowed at full speed: p50 {:.1} us, p99 {:.1} us, max {:.1} us \
         (target p99 <= 20 ms)",
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
        h.max() as f64 / 1e3
    );
}

/// Swap latency with the tutorial's models (from `../shared/data/wine`): the
/// TensorFlow frozen graph, the SavedModel (by location), and with feature
/// `pmml` the seven PMML files, in turn, over wine records.
#[cfg(feature = "tensorflow")]
mod tutorial {
    use super::*;
    use flowstage_model::pb::model_descriptor::ModelType as PbType;
    use flowstage_model::pb::WineRecord;
    use flowstage_model::{FieldMapping, ModelRegistry, ModelsDir};
    use flowstage_stages::serving::RegistryLoader;
    use std::path::PathBuf;

    fn dir() -> PathBuf {
        // Benches run in the package directory (stages/).
        ["../../shared/data/wine", "../shared/data/wine"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.join("winequality_red.csv").is_file())
            .unwrap_or_else(|| PathBuf::from("../../shared/data/wine"))
    }

    pub async fn run(swaps: usize) {
        let dir = dir();
        let Ok(csv) = std::fs::read_to_string(dir.join("winequality_red.csv")) else {
            println!(
                "(no wine data at {}: tutorial swap latency skipped)",
                dir.display()
            );
            return;
        };
        let wine: Vec<WineRecord> = csv
            .lines()
            .filter_map(|l| {
                let v: Vec<f64> = l.split(';').filter_map(|c| c.trim().parse().ok()).collect();
                (v.len() >= 11).then(|| WineRecord {
                    fixed_acidity: v[0],
                    volatile_acidity: v[1],
                    citric_acid: v[2],
                    residual_sugar: v[3],
                    chlorides: v[4],
                    free_sulfur_dioxide: v[5],
                    total_sulfur_dioxide: v[6],
                    density: v[7],
                    p_h: v[8],
                    sulphates: v[9],
                    alcohol: v[10],
                    data_type: "wine".into(),
                    ts: 0,
                    ts_micros: 0,
                })
            })
            .collect();
        let mut files: Vec<(String, PbType, MessageContent)> = Vec::new();
        if let Ok(b) = std::fs::read(dir.join("optimized_WineQuality.pb")) {
            files.push(("tf".into(), PbType::Tensorflow, MessageContent::Data(b)));
        }
        files.push((
            "saved".into(),
            PbType::Tensorflowsaved,
            MessageContent::Location("saved/1".into()),
        ));
        if cfg!(feature = "pmml") {
            let mut pmml: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            pmml.retain(|p| p.extension().is_some_and(|x| x == "pmml"));
            pmml.sort();
            for p in pmml {
                if let Ok(b) = std::fs::read(&p) {
                    let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned());
                    files.push((
                        stem.unwrap_or_default(),
                        PbType::Pmml,
                        MessageContent::Data(b),
                    ));
                }
            }
        }
        let models_dir = match ModelsDir::new(&dir) {
            Ok(d) => d,
            Err(e) => panic!("models dir: {e}"),
        };
        let loader =
            RegistryLoader::new(ModelRegistry::with_defaults().with_models_dir(models_dir))
                .with_mapping(FieldMapping::wine());
        let n_files = files.len();
        let n_wine = wine.len().max(1);
        let (h, records) = swap_latency(
            swaps,
            Arc::new(loader),
            move |i| wine[usize::try_from(i).unwrap_or(0) % n_wine].clone(),
            |k| {
                let (name, t, content) = &files[k % n_files];
                ModelMessage::Descriptor(ModelDescriptor {
                    name: format!("s{k}-{name}"),
                    description: String::new(),
                    data_type: "wine".into(),
                    modeltype: *t as i32,
                    message_content: Some(content.clone()),
                })
            },
        )
        .await;
        report(
            &format!("the tutorial's {n_files} models in turn (load included)"),
            swaps,
            records,
            &h,
        );
    }
}

/// The serving stage's default configuration, with the data buffer from
/// `SERVING_BENCH_DATA_BUFFER` if set (to compare buffer sizes).
fn config() -> ServingConfig {
    let mut c = ServingConfig::default();
    if let Some(n) = std::env::var("SERVING_BENCH_DATA_BUFFER")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        c.data_buffer = n;
    }
    c
}

/// One side of the overhead benchmark alone, for a profiler.
async fn profile(side: &str) {
    let runs: usize = std::env::var("SERVING_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(50);
    let mut best = Best::NONE;
    for _ in 0..runs {
        match side {
            "map" => best.run(bare_map()).await,
            "serving" => best.run(stage(config())).await,
            "minimal" => best.run(minimal_stage()).await,
            "batched" => {
                let batched = ServingConfig {
                    batch_size: 64,
                    ..config()
                };
                best.run(stage(batched)).await
            }
            "fused" => {
                let fused = ServingConfig {
                    own_task: false,
                    ..config()
                };
                best.run(stage(fused)).await
            }
            other => {
                println!("SERVING_BENCH_PROFILE: unknown side {other:?} (map, serving, minimal, batched, fused)");
                return;
            }
        }
    }
    println!(
        "{side}: best of {runs} runs {:.1} ns/record, CPU {:.1} ns/record",
        best.per(),
        best.cpu_per().unwrap_or(f64::NAN)
    );
}

fn main() {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    // `cargo bench` passes `--bench`; anything else (e.g. `cargo test --benches`) runs a quick pass.
    let quick = !std::env::args().any(|a| a == "--bench");
    // For profilers (`perf record`, `valgrind`): `SERVING_BENCH_PROFILE=map|serving|minimal|batched|fused`
    // runs only that side, `SERVING_BENCH_RUNS` times (default 50), and prints its best time.
    if let Ok(side) = std::env::var("SERVING_BENCH_PROFILE") {
        rt.block_on(profile(&side));
        return;
    }
    rt.block_on(async {
        let runs = if quick { 1 } else { 15 };
        let batched = ServingConfig {
            batch_size: 64,
            ..config()
        };
        let fused = ServingConfig {
            own_task: false,
            ..config()
        };
        let [mut map, mut serving, mut minimal, mut batch, mut fuse] = [Best::NONE; 5];
        for _ in 0..runs {
            map.run(bare_map()).await;
            serving.run(stage(config())).await;
            minimal.run(minimal_stage()).await;
            batch.run(stage(batched.clone())).await;
            fuse.run(stage(fused.clone())).await;
        }
        println!(
            "overhead: {N} records per run, trivial model, default configuration (best of {runs} \
             interleaved runs): bare map {:.1} ns/record, serving stage {:.1} ns/record, \
             ratio {:.2}x (target <= 1.2x)",
            map.per(),
            serving.per(),
            serving.ratio(&map)
        );
        match (
            map.cpu_per(),
            serving.cpu_per(),
            minimal.cpu_per(),
            batch.cpu_per(),
        ) {
            (Some(m), Some(s), Some(x), Some(b)) => println!(
                "overhead in CPU time (all threads, not inflated by preemption): bare map {m:.1} \
                 ns/record, serving stage {s:.1} ns/record, ratio {:.2}x; minimal stage {x:.1} \
                 ({:.2}x); batched serving stage {b:.1} ({:.2}x)",
                s / m,
                x / m,
                b / m
            ),
            _ => println!("(no per-thread CPU times on this platform: CPU-time ratios skipped)"),
        }
        println!(
            "reference: the same work in a minimal one-inlet custom stage: {:.1} ns/record, \
             ratio {:.2}x to the bare map (the stage core's own per-element cost)",
            minimal.per(),
            minimal.ratio(&map)
        );
        println!(
            "extra: the serving stage with micro-batching (batch_size 64): {:.1} ns/record, \
             ratio {:.2}x to the bare map",
            batch.per(),
            batch.ratio(&map)
        );
        println!(
            "extra: the serving stage fused into the task that takes its results (own_task \
             false): {:.1} ns/record, ratio {:.2}x to the bare map{}",
            fuse.per(),
            fuse.ratio(&map),
            match (map.cpu_per(), fuse.cpu_per()) {
                (Some(m), Some(f)) => format!(", CPU {f:.1} ns/record ({:.2}x)", f / m),
                _ => String::new(),
            }
        );
        let swaps = if quick { 20 } else { 200 };
        let (h, records) = swap_latency(swaps, Arc::new(trivial_loader), Rec, descriptor).await;
        report("trivial model", swaps, records, &h);
        #[cfg(feature = "tensorflow")]
        tutorial::run(if quick { 10 } else { 100 }).await;
        #[cfg(not(feature = "tensorflow"))]
        println!("(swap latency with the tutorial's models: run with --features tensorflow,pmml)");
    });
}
