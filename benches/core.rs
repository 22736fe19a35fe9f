//! Core benchmarks of flowstage, each measured against a baseline in the same run.
//!
//! ```text
//! cargo bench -p flowstage --bench core            # ITEMS=10000000 WARMUP=2 ITERS=5
//! ITEMS=100000 cargo bench -p flowstage --bench core
//! ```
//!
//! A custom harness (no criterion): every implementation of every scenario runs
//! `WARMUP` unreported times, then `ITERS` measured times; the median wall time
//! (graph construction to completion) is reported. The implementations that are
//! compared with each other run interleaved (one run of each per round), so
//! load from other processes on a shared machine hits them alike and the
//! ratios stay meaningful even when the absolute numbers are noisy. Every run's result is
//! checked against a reference value, so an implementation that loses or
//! duplicates elements fails loudly (exit status 2) instead of looking fast.
//!
//! Scenarios (the same as the Pekko peer harness in `benches/peers/pekko/`):
//!
//! | scenario | flowstage | baseline(s) |
//! |---|---|---|
//! | `chain` | `from_iter` → map(x*3) → filter(even) → scan(0, +) → `Sink::fold(0, ^)` | futures-util `StreamExt`; a hand-written loop |
//! | `async_boundary` | `from_iter` → `async_boundary()` (buffer 1024) → `Sink::fold` count | tokio `mpsc::channel(1024)`, one item per send, two tasks |
//! | `async_boundary_buf16` | same with `async_boundary_with(16)` | same |
//! | `broadcast_zip` | `broadcast2()` → map(x+1) / map(x*2) → `zip` → fold sum of a+b | hand loop |
//! | `balance_merge` | `balance(2)` → map(x+1) each → `merge` → fold count | hand loop |
//!
//! Everything runs inside one multi-thread tokio runtime with 2 worker threads.
//!
//! Output on stdout: a `#` header, one machine-readable line per measurement,
//!
//! ```text
//! RESULT <scenario> <impl> <items_per_second> <median_seconds> <items>
//! ```
//!
//! then a human-readable table of ratios and targets. `scripts/bench.sh` adds
//! the Pekko peer and a combined table.
//!
//! Environment: `ITEMS` (default 10000000), `WARMUP` (2), `ITERS` (5),
//! `SCENARIOS` (comma list, default all; positional arguments work too),
//! `IMPLS` (comma list of implementations to run, e.g. `flowstage`; default all —
//! handy for profiling one implementation with `perf`),
//! `VERBOSE=1` (per-run times on stderr).

use std::hint::black_box;
use std::time::Instant;

use flowstage::prelude::*;
use tokio::runtime::Runtime;

const ALL_SCENARIOS: &[&str] = &[
    "chain",
    "async_boundary",
    "async_boundary_buf16",
    "broadcast_zip",
    "balance_merge",
];

/// Targets from issue 2.
const CHAIN_VS_FUTURES_MAX: f64 = 1.10;
const CHAIN_VS_HAND_MAX: f64 = 2.0;
const ASYNC_BOUNDARY_MIN_IPS: f64 = 30e6;

struct Config {
    items: i64,
    warmup: usize,
    iters: usize,
    verbose: bool,
    scenarios: Vec<String>,
    impls: Vec<String>,
}

/// One measured implementation of one scenario.
struct Measured {
    scenario: &'static str,
    imp: &'static str,
    median_s: f64,
    items: i64,
}

impl Measured {
    fn ips(&self) -> f64 {
        self.items as f64 / self.median_s
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("core bench: {msg}");
    std::process::exit(2);
}

fn env_num(key: &str, default: i64) -> i64 {
    match std::env::var(key) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .replace(['_', ','], "")
            .parse()
            .unwrap_or_else(|_| fail(&format!("{key} is not an integer: {v}"))),
        _ => default,
    }
}

fn config() -> Config {
    let items = env_num("ITEMS", 10_000_000);
    let warmup = env_num("WARMUP", 2);
    let iters = env_num("ITERS", 5);
    if items < 1 || warmup < 0 || iters < 1 {
        fail(&format!(
            "need ITEMS >= 1, WARMUP >= 0, ITERS >= 1; got {items}, {warmup}, {iters}"
        ));
    }
    // Scenario selection: SCENARIOS=a,b or positional arguments (cargo bench -- chain).
    // Flags cargo passes to harness=false benches (`--bench`) are ignored.
    let mut wanted: Vec<String> = std::env::var("SCENARIOS")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    wanted.extend(std::env::args().skip(1).filter(|a| !a.starts_with('-')));
    for s in &wanted {
        if !ALL_SCENARIOS.contains(&s.as_str()) {
            fail(&format!("unknown scenario {s:?}; known: {ALL_SCENARIOS:?}"));
        }
    }
    if wanted.is_empty() {
        wanted = ALL_SCENARIOS.iter().map(|s| s.to_string()).collect();
    }
    Config {
        items,
        warmup: warmup as usize,
        iters: iters as usize,
        verbose: std::env::var("VERBOSE").is_ok_and(|v| v == "1"),
        scenarios: wanted,
        impls: std::env::var("IMPLS")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
    }
}

/// One implementation of one scenario: a closure doing one full run and
/// returning its checksum.
struct Case<'a> {
    scenario: &'static str,
    imp: &'static str,
    expected: i64,
    run: Box<dyn FnMut() -> i64 + 'a>,
}

fn case<'a>(
    scenario: &'static str,
    imp: &'static str,
    expected: i64,
    run: impl FnMut() -> i64 + 'a,
) -> Case<'a> {
    Case {
        scenario,
        imp,
        expected,
        run: Box::new(run),
    }
}

/// Runs a group of cases that are compared with each other: first WARMUP
/// unreported runs of each, then ITERS rounds in which every case runs once
/// (interleaved, so a burst of load from other processes hits all of them
/// alike). Checks every result, prints one RESULT line per case and returns
/// the medians.
fn bench_group(cfg: &Config, mut cases: Vec<Case<'_>>) -> Vec<Measured> {
    if !cfg.impls.is_empty() {
        cases.retain(|c| cfg.impls.iter().any(|i| i == c.imp));
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(cfg.iters); cases.len()];
    let once = |c: &mut Case<'_>, what: &str, i: usize| -> f64 {
        let t0 = Instant::now();
        let got = black_box((c.run)());
        let dt = t0.elapsed().as_secs_f64();
        if got != c.expected {
            fail(&format!(
                "{}/{} {what} {i}: checksum {got} != expected {}",
                c.scenario, c.imp, c.expected
            ));
        }
        if cfg.verbose {
            eprintln!("[flowstage] {} {} {what} {i}: {dt:.6} s", c.scenario, c.imp);
        }
        dt
    };
    for c in cases.iter_mut() {
        for i in 0..cfg.warmup {
            once(c, "warm-up", i);
        }
    }
    for i in 0..cfg.iters {
        for (k, c) in cases.iter_mut().enumerate() {
            times[k].push(once(c, "run", i));
        }
    }
    cases
        .iter()
        .zip(times)
        .map(|(c, mut t)| {
            t.sort_by(f64::total_cmp);
            let k = t.len();
            let median_s = if k % 2 == 1 {
                t[k / 2]
            } else {
                (t[k / 2 - 1] + t[k / 2]) / 2.0
            };
            let m = Measured {
                scenario: c.scenario,
                imp: c.imp,
                median_s,
                items: cfg.items,
            };
            println!(
                "RESULT {} {} {:.0} {:.9} {}",
                m.scenario,
                m.imp,
                m.ips(),
                m.median_s,
                m.items
            );
            m
        })
        .collect()
}

// -------------------------------------------------------------------------------------------
// chain: map(x*3) -> filter(even) -> scan(0, acc+x) -> fold(0, acc^x), over i64.

fn chain_flowstage(rt: &Runtime, n: i64) -> i64 {
    rt.block_on(async move {
        Source::from_iter(0..n)
            .map(|x| x * 3)
            .filter(|x| x % 2 == 0)
            .scan(0i64, |acc, x| acc + x)
            .run_with(Sink::fold(0i64, |acc, x| acc ^ x))
            .await
            .unwrap_or_else(|e| fail(&format!("chain/flowstage failed: {e}")))
    })
}

/// The same chain in futures-util. Kept in its own module: `Source` is a
/// `Stream`, so `StreamExt` and `FlowOps` in one scope would make `.map` ambiguous.
mod with_futures {
    use futures::future::ready;
    use futures::stream::{self, StreamExt};
    use tokio::runtime::Runtime;

    /// futures' `filter`/`scan`/`fold` take closures returning futures;
    /// `future::ready` is the cheapest such future (no allocation, ready on first poll).
    pub fn chain(rt: &Runtime, n: i64) -> i64 {
        rt.block_on(
            stream::iter(0..n)
                .map(|x| x * 3)
                .filter(|x| ready(x % 2 == 0))
                // futures' scan does not emit the zero first; fold(^) is unaffected (0 ^ 0 = 0).
                .scan(0i64, |acc, x| {
                    *acc += x;
                    ready(Some(*acc))
                })
                .fold(0i64, |acc, x| ready(acc ^ x)),
        )
    }
}

fn chain_hand(n: i64) -> i64 {
    let mut acc = 0i64;
    let mut out = 0i64;
    for x in 0..n {
        let y = x * 3;
        if y % 2 == 0 {
            acc += y;
            out ^= acc;
        }
    }
    out
}

// -------------------------------------------------------------------------------------------
// async_boundary: range -> boundary -> fold(count), on the 2-worker runtime.

fn async_flowstage(rt: &Runtime, n: i64, capacity: Option<usize>) -> i64 {
    rt.block_on(async move {
        let src = Source::from_iter(0..n);
        let count = Sink::fold(0i64, |acc, _x: i64| acc + 1);
        let done = match capacity {
            None => src.async_boundary().run_with(count),
            Some(c) => src.async_boundary_with(c).run_with(count),
        };
        done.await
            .unwrap_or_else(|e| fail(&format!("async_boundary/flowstage failed: {e}")))
    })
}

/// Baseline: a bounded tokio mpsc channel carrying single items between two tasks.
fn async_tokio_mpsc(rt: &Runtime, n: i64) -> i64 {
    rt.block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<i64>(1024);
        let producer = tokio::spawn(async move {
            for x in 0..n {
                if tx.send(x).await.is_err() {
                    break;
                }
            }
        });
        let consumer = tokio::spawn(async move {
            let mut count = 0i64;
            while let Some(x) = rx.recv().await {
                black_box(x);
                count += 1;
            }
            count
        });
        producer
            .await
            .unwrap_or_else(|e| fail(&format!("mpsc producer: {e}")));
        consumer
            .await
            .unwrap_or_else(|e| fail(&format!("mpsc consumer: {e}")))
    })
}

// -------------------------------------------------------------------------------------------
// broadcast_zip: broadcast(2) -> map(x+1) / map(x*2) -> zip -> fold(sum a+b).

fn broadcast_zip_flowstage(rt: &Runtime, n: i64) -> i64 {
    rt.block_on(async move {
        let [a, b] = Source::from_iter(0..n).broadcast2();
        a.map(|x| x + 1)
            .zip(b.map(|x| x * 2))
            .run_with(Sink::fold(0i64, |acc, (p, q)| acc + p + q))
            .await
            .unwrap_or_else(|e| fail(&format!("broadcast_zip/flowstage failed: {e}")))
    })
}

/// `black_box` on each element keeps LLVM from turning the loop into a closed
/// form or vectorizing it: the baseline is one element at a time, like the graph.
fn broadcast_zip_hand(n: i64) -> i64 {
    let mut sum = 0i64;
    for x in 0..n {
        let x = black_box(x);
        sum += (x + 1) + (x * 2);
    }
    sum
}

// -------------------------------------------------------------------------------------------
// balance_merge: balance(2) -> map(x+1) on each output -> merge -> fold(count).

fn balance_merge_flowstage(rt: &Runtime, n: i64) -> i64 {
    rt.block_on(async move {
        let mut outs = Source::from_iter(0..n).balance(2).into_iter();
        let (Some(a), Some(b)) = (outs.next(), outs.next()) else {
            fail("balance(2) did not give two outputs")
        };
        a.map(|x| x + 1)
            .merge(b.map(|x| x + 1))
            .run_with(Sink::fold(0i64, |acc, _x| acc + 1))
            .await
            .unwrap_or_else(|e| fail(&format!("balance_merge/flowstage failed: {e}")))
    })
}

/// Per element: `black_box(x + 1)` stands for the two map stages, then count.
fn balance_merge_hand(n: i64) -> i64 {
    let mut count = 0i64;
    for x in 0..n {
        black_box(black_box(x) + 1);
        count += 1;
    }
    count
}

// -------------------------------------------------------------------------------------------

fn fmt_ips(ips: f64) -> String {
    if ips >= 1e9 {
        format!("{:.2} G/s", ips / 1e9)
    } else if ips >= 1e6 {
        format!("{:.2} M/s", ips / 1e6)
    } else if ips >= 1e3 {
        format!("{:.2} k/s", ips / 1e3)
    } else {
        format!("{ips:.0} /s")
    }
}

fn main() {
    let cfg = config();
    let n: i64 = cfg.items;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("tokio runtime: {e}")));

    println!(
        "# bench=flowstage-core items={} warmup={} iters={} stat=median runtime=tokio-multi-thread workers=2 cpus={}",
        cfg.items,
        cfg.warmup,
        cfg.iters,
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );

    let on = |s: &str| cfg.scenarios.iter().any(|x| x == s);
    let mut results: Vec<Measured> = Vec::new();

    if on("chain") {
        let expected = chain_hand(n);
        results.extend(bench_group(
            &cfg,
            vec![
                case("chain", "flowstage", expected, || {
                    chain_flowstage(&rt, black_box(n))
                }),
                case("chain", "futures_util", expected, || {
                    with_futures::chain(&rt, black_box(n))
                }),
                case("chain", "hand_loop", expected, || chain_hand(black_box(n))),
            ],
        ));
    }
    if on("async_boundary") || on("async_boundary_buf16") {
        let mut cases = Vec::new();
        if on("async_boundary") {
            cases.push(case("async_boundary", "flowstage", n, || {
                async_flowstage(&rt, black_box(n), None)
            }));
        }
        if on("async_boundary_buf16") {
            cases.push(case("async_boundary_buf16", "flowstage", n, || {
                async_flowstage(&rt, black_box(n), Some(16))
            }));
        }
        // One baseline for both boundary sizes (reported under async_boundary).
        cases.push(case("async_boundary", "tokio_mpsc", n, || {
            async_tokio_mpsc(&rt, black_box(n))
        }));
        results.extend(bench_group(&cfg, cases));
    }
    if on("broadcast_zip") {
        let expected = 3 * (n * (n - 1) / 2) + n;
        results.extend(bench_group(
            &cfg,
            vec![
                case("broadcast_zip", "flowstage", expected, || {
                    broadcast_zip_flowstage(&rt, black_box(n))
                }),
                case("broadcast_zip", "hand_loop", expected, || {
                    broadcast_zip_hand(black_box(n))
                }),
            ],
        ));
    }
    if on("balance_merge") {
        results.extend(bench_group(
            &cfg,
            vec![
                case("balance_merge", "flowstage", n, || {
                    balance_merge_flowstage(&rt, black_box(n))
                }),
                case("balance_merge", "hand_loop", n, || {
                    balance_merge_hand(black_box(n))
                }),
            ],
        ));
    }

    print_table(&results);
}

fn find<'a>(rs: &'a [Measured], scenario: &str, imp: &str) -> Option<&'a Measured> {
    rs.iter().find(|m| m.scenario == scenario && m.imp == imp)
}

fn print_table(rs: &[Measured]) {
    println!();
    println!("flowstage vs baselines (median of runs; ratio = flowstage time / baseline time, < 1 means flowstage is faster)");
    println!(
        "{:<22} {:>12} {:<14} {:>12} {:>8}  {:<26} status",
        "scenario", "flowstage", "baseline", "baseline", "ratio", "target"
    );
    // (scenario, baseline impl, target text, check on (ratio, flowstage ips))
    type Check = fn(f64, f64) -> bool;
    let rows: &[(&str, &str, &str, Option<Check>)] = &[
        (
            "chain",
            "futures_util",
            "ratio <= 1.10",
            Some(|r, _| r <= CHAIN_VS_FUTURES_MAX),
        ),
        (
            "chain",
            "hand_loop",
            "ratio <= 2.00",
            Some(|r, _| r <= CHAIN_VS_HAND_MAX),
        ),
        (
            "async_boundary",
            "tokio_mpsc",
            ">= 30 M/s (buffer 1024)",
            Some(|_, ips| ips >= ASYNC_BOUNDARY_MIN_IPS),
        ),
        (
            "async_boundary_buf16",
            "tokio_mpsc",
            "(info: buffer 16)",
            None,
        ),
        ("broadcast_zip", "hand_loop", "faster than Pekko", None),
        ("balance_merge", "hand_loop", "faster than Pekko", None),
    ];
    for (scenario, base, target, check) in rows {
        let Some(fs) = find(rs, scenario, "flowstage") else {
            continue;
        };
        // The buf16 row shares the mpsc baseline, reported under async_boundary.
        let b = find(rs, scenario, base).or_else(|| find(rs, "async_boundary", base));
        let (b_ips, ratio) = match b {
            Some(b) => (fmt_ips(b.ips()), fs.median_s / b.median_s),
            None => ("-".to_string(), f64::NAN),
        };
        let status = match check {
            Some(c) if c(ratio, fs.ips()) => "PASS",
            Some(_) => "MISS",
            None => "-",
        };
        println!(
            "{:<22} {:>12} {:<14} {:>12} {:>8.2}  {:<26} {}",
            scenario,
            fmt_ips(fs.ips()),
            base,
            b_ips,
            ratio,
            target,
            status
        );
    }
    println!("(\"faster than Pekko\" is checked by scripts/bench.sh, which runs the Pekko peer in the same run.)");
}
