//! Single-thread throughput of the seven tutorial wine models over the wine rows — the Rust side
//! of `scripts/bench-pmml.sh` (the JPMML-Evaluator side is `benches/peers/jpmml`).
//!
//! Per model: load, prepare every row ONCE as a `Vec<Value>` in `input_fields()` order
//! (`Value::Double`), warm up, then time full passes of `evaluate` over all rows. Each of ITERS
//! samples repeats the pass enough times to last at least MIN_SECONDS; the median sample is
//! reported. The outputs are folded into a checksum so that the work cannot be optimised away.
//!
//! stdout (nothing else):
//! ```text
//! # bench=flowstage-pmml ...
//! RESULT flowstage-pmml <model-file-stem> <records_per_second> <median_seconds_per_pass> <rows> <cpu_records_per_second>
//! ```
//! The last column divides by the thread's CPU time (Linux; wall time elsewhere). With `API=into`
//! the passes call `evaluate_into` with one reused `Outputs` instead, and the lines are
//! `RESULT_INTO ...` (not read by `scripts/bench-pmml.sh`).
//!
//! `cargo bench -p flowstage-pmml --bench wine [-- model.pmml ...]`. Env: WINE_DIR (default
//! `<repo>/../shared/data/wine`), ROWS (default all 1,599), ITERS (5), MIN_SECONDS (0.5),
//! WARMUP_SECONDS (1, of thread CPU time), VERBOSE=1 (per-sample times on stderr).
//! Without the wine data the benchmark says so and exits successfully.

use flowstage_pmml::{Evaluator, Outputs, Pmml, Value};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[path = "../tests/common/wine.rs"]
mod wine;
use wine::{COLUMNS, MODELS};

fn env_f64(key: &str, default: f64) -> Result<f64, String> {
    match std::env::var(key) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .replace('_', "")
            .parse::<f64>()
            .map_err(|_| format!("{key} is not a number: {v:?}")),
        _ => Ok(default),
    }
}

/// This thread's CPU time in seconds, from `/proc/thread-self/schedstat` (Linux); `None`
/// elsewhere.
fn thread_cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

struct Clock {
    wall: Instant,
    cpu: Option<f64>,
}

impl Clock {
    fn now() -> Clock {
        Clock {
            cpu: thread_cpu_seconds(),
            wall: Instant::now(),
        }
    }

    /// (wall seconds, cpu seconds) since `self`; cpu falls back to wall.
    fn elapsed(&self) -> (f64, f64) {
        let wall = self.wall.elapsed().as_secs_f64();
        let cpu = match (self.cpu, thread_cpu_seconds()) {
            (Some(a), Some(b)) if b > a => b - a,
            _ => wall,
        };
        (wall, cpu)
    }
}

fn median(xs: &[f64]) -> f64 {
    let mut s = xs.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn read_rows(csv: &Path) -> Result<Vec<Vec<f64>>, String> {
    let text = std::fs::read_to_string(csv).map_err(|e| format!("{}: {e}", csv.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row = line
            .split(';')
            .map(|c| c.trim().parse::<f64>())
            .collect::<Result<Vec<f64>, _>>()
            .map_err(|e| format!("{}:{}: {e}", csv.display(), i + 1))?;
        if row.len() != COLUMNS.len() {
            return Err(format!(
                "{}:{}: expected {} columns, got {}",
                csv.display(),
                i + 1,
                COLUMNS.len(),
                row.len()
            ));
        }
        rows.push(row);
    }
    Ok(rows)
}

/// A cheap checksum step over one record's outputs (each value is read, as a caller would).
#[inline]
fn fold(mut h: u64, out: &Outputs) -> u64 {
    for v in out.values() {
        let x = match v {
            Value::Double(x) => x.to_bits(),
            Value::Float(x) => u64::from(x.to_bits()),
            Value::Integer(x) => *x as u64,
            Value::String(s) => s.len() as u64 ^ u64::from(s.bytes().next().unwrap_or(0)),
            Value::Boolean(b) => u64::from(*b),
            Value::Missing => 7,
        };
        h = h.rotate_left(5).wrapping_add(x);
    }
    h
}

/// One timed pass over all rows; returns a cheap checksum of the outputs. `Api::Evaluate` takes
/// a fresh `Outputs` per record (`evaluate`), `Api::Into` reuses one (`evaluate_into`).
fn pass(model: &Evaluator, inputs: &[Vec<Value>], api: Api) -> Result<u64, String> {
    let mut h = 0u64;
    match api {
        Api::Evaluate => {
            for args in inputs {
                let out = model.evaluate(args).map_err(|e| e.to_string())?;
                h = fold(h, &out);
            }
        }
        Api::Into => {
            let mut out = Outputs::default();
            for args in inputs {
                model
                    .evaluate_into(args, &mut out)
                    .map_err(|e| e.to_string())?;
                h = fold(h, &out);
            }
        }
    }
    Ok(h)
}

/// Which entry point the timed passes call.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Api {
    /// `Evaluator::evaluate` (a fresh `Outputs` per record) — the reported RESULT.
    Evaluate,
    /// `Evaluator::evaluate_into` (one reused `Outputs`) — `API=into`, reported as RESULT_INTO.
    Into,
}

/// One pass over all rows; returns a bit-exact hash of every output value.
fn digest(model: &Evaluator, inputs: &[Vec<Value>]) -> Result<u64, String> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for args in inputs {
        let out = model.evaluate(args).map_err(|e| e.to_string())?;
        for v in out.values() {
            match v {
                Value::Double(x) => x.to_bits().hash(&mut h),
                Value::Float(x) => x.to_bits().hash(&mut h),
                Value::Integer(x) => x.hash(&mut h),
                Value::String(s) => s.hash(&mut h),
                Value::Boolean(b) => b.hash(&mut h),
                Value::Missing => 0u8.hash(&mut h),
            }
        }
    }
    Ok(h.finish())
}

struct Settings {
    iters: usize,
    min_seconds: f64,
    warmup_seconds: f64,
    verbose: bool,
    api: Api,
}

fn bench(path: &Path, rows: &[Vec<f64>], s: &Settings) -> Result<(), String> {
    let stem = path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into(),
    );
    let model = Pmml::from_path(path).map_err(|e| format!("{stem}: {e}"))?;
    let cols: Vec<usize> = model
        .input_fields()
        .iter()
        .map(|f| {
            COLUMNS
                .iter()
                .position(|c| *c == f.name)
                .ok_or_else(|| format!("{stem}: input field {:?} is not a CSV column", f.name))
        })
        .collect::<Result<_, _>>()?;
    // Inputs prepared once.
    let inputs: Vec<Vec<Value>> = rows
        .iter()
        .map(|r| cols.iter().map(|c| Value::Double(r[*c])).collect())
        .collect();

    // Digest of one pass (bit-exact hash of every output value): equal digests before and after
    // a change to the evaluator mean bit-identical results.
    let digest = digest(&model, &inputs)?;
    let mut checksum = digest;
    let warm = Clock::now();
    let mut warm_passes = 0usize;
    loop {
        checksum = checksum.wrapping_add(pass(&model, &inputs, s.api)?);
        warm_passes += 1;
        let (wall, cpu) = warm.elapsed();
        if cpu >= s.warmup_seconds || wall >= 20.0 * s.warmup_seconds {
            break;
        }
    }
    let t = Instant::now();
    checksum = checksum.wrapping_add(pass(&model, &inputs, s.api)?);
    let one = t.elapsed().as_secs_f64().max(1e-9);
    let reps = ((s.min_seconds / one).ceil() as usize).max(1);

    let mut wall = Vec::with_capacity(s.iters);
    let mut cpu = Vec::with_capacity(s.iters);
    for i in 0..s.iters {
        let c = Clock::now();
        for _ in 0..reps {
            checksum = checksum.wrapping_add(pass(&model, &inputs, s.api)?);
        }
        let (w, cp) = c.elapsed();
        wall.push(w / reps as f64);
        cpu.push(cp / reps as f64);
        if s.verbose {
            eprintln!(
                "[flowstage-pmml] {stem} sample {i}: {reps} passes, {:.6} s/pass (cpu {:.6}), {:.0} records/s",
                w / reps as f64,
                cp / reps as f64,
                inputs.len() as f64 * reps as f64 / w
            );
        }
    }
    std::hint::black_box(checksum);
    if s.verbose {
        eprintln!("[flowstage-pmml] {stem}: warm-up {warm_passes} passes, {reps} passes/sample, digest {digest:016x} ({digest})");
    }
    let (mw, mc) = (median(&wall), median(&cpu));
    let n = inputs.len() as f64;
    println!(
        "{} flowstage-pmml {stem} {:.0} {mw:.9} {} {:.0}",
        if s.api == Api::Into {
            "RESULT_INTO"
        } else {
            "RESULT"
        },
        n / mw,
        inputs.len(),
        n / mc
    );
    Ok(())
}

fn run() -> Result<(), String> {
    let wine_dir = match std::env::var("WINE_DIR") {
        Ok(d) if !d.trim().is_empty() => PathBuf::from(d),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/wine"),
    };
    // `cargo bench` passes `--bench`; other flags are ignored too.
    let files: Vec<PathBuf> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .map(PathBuf::from)
        .collect();
    let csv = wine_dir.join("winequality_red.csv");
    if !csv.is_file() {
        println!(
            "# SKIPPED flowstage-pmml wine bench: {} is absent (the wine data lives in ../shared/data/wine next to the repository)",
            csv.display()
        );
        return Ok(());
    }
    let mut rows = read_rows(&csv)?;
    let limit = env_f64("ROWS", rows.len() as f64)?;
    if limit < 1.0 {
        return Err("ROWS must be >= 1".into());
    }
    rows.truncate(limit as usize);
    let s = Settings {
        iters: env_f64("ITERS", 5.0)?.max(1.0) as usize,
        min_seconds: env_f64("MIN_SECONDS", 0.5)?.max(1e-3),
        warmup_seconds: env_f64("WARMUP_SECONDS", 1.0)?.max(0.0),
        verbose: std::env::var("VERBOSE").is_ok_and(|v| v == "1"),
        api: if std::env::var("API").is_ok_and(|v| v == "into") {
            Api::Into
        } else {
            Api::Evaluate
        },
    };
    let files = if files.is_empty() {
        MODELS
            .iter()
            .map(|m| wine_dir.join(format!("{m}.pmml")))
            .collect()
    } else {
        files
    };
    println!(
        "# bench=flowstage-pmml version={} profile={} rows={} iters={} min_seconds={} warmup_seconds={} stat=median threads=1",
        env!("CARGO_PKG_VERSION"),
        if cfg!(debug_assertions) { "debug" } else { "release" },
        rows.len(),
        s.iters,
        s.min_seconds,
        s.warmup_seconds
    );
    for f in &files {
        bench(f, &rows, &s)?;
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("wine bench: {e}");
        std::process::exit(2);
    }
}
