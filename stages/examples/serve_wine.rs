//! The model-serving stage in-process, without Kafka: the wine CSV as records,
//! the tutorial's models arriving every few seconds, the HTTP state served.
//!
//! ```text
//! cargo run -p flowstage-stages --features tensorflow,pmml --example serve_wine -- \
//!     [--data ../shared/data/wine] [--every-ms 3000] [--rate 2000] [--records 60000] [--port 5500]
//!     [--by-location]
//! ```
//!
//! Records: `winequality_red.csv` read with
//! [`files::read_wine_csv`](flowstage_stages::wine::files::read_wine_csv).
//! Models offered, in turn, every `--every-ms`: every model of the data
//! directory as [`files::model_descriptors`](flowstage_stages::wine::files::model_descriptors)
//! finds them, sorted by name — the tutorial's TensorFlow frozen graph
//! (`optimized_WineQuality.pb`), the SavedModel (`saved/1`, packed by value, or
//! by `location` with `--by-location`), then each PMML file. PMML models load
//! when built with feature `pmml` (flowstage-model's pure-Rust evaluator);
//! without it those offers show up as failed loads in `/state/wine` while the
//! previous model keeps serving — the stage's failure path, working.
//!
//! While it runs: `curl 127.0.0.1:5500/state/wine`, `/models`, `/state`,
//! `/state/wine/history`, `/metrics`.

use std::path::PathBuf;
use std::time::Duration;

use flowstage::prelude::*;
use flowstage_model::{FieldMapping, ModelRegistry, ModelsDir};
use flowstage_stages::http;
use flowstage_stages::serving::{ModelMessage, RegistryLoader, ServingStage};
use flowstage_stages::wine::{files, WINE};

struct Args {
    data: PathBuf,
    every: Duration,
    rate: u32,
    records: usize,
    port: u16,
    by_location: bool,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        data: PathBuf::from("../shared/data/wine"),
        every: Duration::from_millis(3000),
        rate: 2000,
        records: 60_000,
        port: 5500,
        by_location: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--data" => a.data = PathBuf::from(val()?),
            "--every-ms" => a.every = Duration::from_millis(num(&val()?)?),
            "--rate" => a.rate = u32::try_from(num(&val()?)?).map_err(|e| e.to_string())?,
            "--records" => a.records = usize::try_from(num(&val()?)?).map_err(|e| e.to_string())?,
            "--port" => a.port = u16::try_from(num(&val()?)?).map_err(|e| e.to_string())?,
            "--by-location" => a.by_location = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn num(s: &str) -> Result<u64, String> {
    s.parse().map_err(|e| format!("{s}: {e}"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = args()?;
    let wine = files::read_wine_csv(a.data.join("winequality_red.csv"))?;
    let models = files::model_descriptors(std::slice::from_ref(&a.data), WINE, a.by_location)?;
    println!(
        "{} wine records, {} models, one model every {:?}, {} records/s",
        wine.len(),
        models.len(),
        a.every,
        a.rate
    );

    let registry = ModelRegistry::with_defaults().with_models_dir(ModelsDir::new(&a.data)?);
    let loader = RegistryLoader::new(registry).with_mapping(FieldMapping::wine());

    // Models: one every `every` (the first after `every`: records before it are
    // answered "no model"), cycling through the list.
    let n_models = models.len();
    let model_source = Source::tick(Duration::ZERO, a.every, ())
        .zip_with_index()
        .map(move |(_, i)| {
            let i = usize::try_from(i).unwrap_or(0) % n_models;
            ModelMessage::Descriptor(models[i].clone())
        });
    // Records: the CSV cycled, throttled to `rate`/s, `records` in all.
    let n_wine = wine.len();
    let data = Source::from_iter((0..a.records).map(move |i| {
        let mut w = wine[i % n_wine].clone();
        w.ts = i64::try_from(i).unwrap_or(i64::MAX);
        w
    }))
    .throttle(a.rate.max(1), Duration::from_secs(1), a.rate.max(1));

    let (results, state) = ServingStage::new(loader).build(model_source, data)?;
    let server = http::serve(state.clone(), (http::DEFAULT_ADDR.ip(), a.port).into()).await?;
    println!("HTTP state on http://{}/state/wine", server.local_addr());

    // Print every swap and failed load as the state changes.
    let watcher = {
        let state = state.clone();
        tokio::spawn(async move {
            let (mut seen_swaps, mut seen_failures) = (0u64, 0u64);
            loop {
                let s = state
                    .wait_for(|s| {
                        // (published_ms is 0 only before the stage started.)
                        (!s.running && s.published_ms > 0)
                            || s.data_types.get("wine").is_some_and(|w| {
                                w.swaps != seen_swaps || w.load_failures != seen_failures
                            })
                    })
                    .await;
                if let Some(w) = s.data_types.get("wine") {
                    if w.swaps != seen_swaps {
                        if let Some(c) = &w.current {
                            println!(
                                "== swap: now serving {} ({}), loaded in {:.1} ms",
                                c.name,
                                c.model_type,
                                c.load_ns as f64 / 1e6
                            );
                        }
                    }
                    if w.load_failures != seen_failures {
                        if let Some(e) = &w.last_error {
                            println!("!! load failed: {}: {}", e.model_name, e.error);
                        }
                    }
                    seen_swaps = w.swaps;
                    seen_failures = w.load_failures;
                }
                if !s.running && s.published_ms > 0 {
                    break;
                }
            }
        })
    };

    // A throttled sample of results: one in every `rate` (about one a second).
    let every = u64::from(a.rate.max(1));
    let count = results
        .run_with(Sink::fold(
            0u64,
            move |n, r: flowstage_model::pb::ServingResult| {
                if n % every == 0 {
                    match &r.score {
                        Some(s) => println!(
                            "record {:>6}: {} -> {:?} in {} us",
                            r.record_ts,
                            r.model_name,
                            s,
                            r.duration_ns / 1000
                        ),
                        None => println!("record {:>6}: {}", r.record_ts, r.error),
                    }
                }
                n + 1
            },
        ))
        .await?;
    let _ = watcher.await;
    let s = state.snapshot();
    println!("done: {count} results; totals {:?}", s.totals);
    if let Some(w) = s.data_types.get("wine") {
        if let Some(c) = &w.current {
            println!(
                "current {}: usage {} mean {:.1} us p99 {:.1} us",
                c.name,
                c.usage,
                c.mean_ns.unwrap_or(0.0) / 1e3,
                c.p99_ns.unwrap_or(0) as f64 / 1e3
            );
        }
        println!("history: {} earlier models", w.history.len());
    }
    server.shutdown().await?;
    Ok(())
}
