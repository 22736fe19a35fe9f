//! `flowstage demo`, the README's main job, run as a newcomer runs it: the real binary, its own
//! embedded broker, the tutorial's models (from `../shared/data/wine`) or flowstage's generated
//! ones. Each test waits for events the demo prints (its HTTP address, model swaps, sampled
//! scores), never for a time, then stops it and checks the summary it prints on the way out.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{banner_http, http_get, note, number_before, Proc};

/// Bounds every wait (a guard against hangs only, never a timing assertion).
const HANG_GUARD: Duration = Duration::from_secs(180);

/// The counts in `demo: server: N records consumed, M results produced, D dead letters, …,
/// C offsets committed in K commits`.
#[derive(Debug)]
struct ServerLine {
    consumed: u64,
    results: u64,
    dead_letters: u64,
    committed: u64,
}

/// Checks what a demo that exited prints on the way out, and returns its server counts.
fn check_exit(demo: &mut Proc) -> ServerLine {
    let status = demo.wait_exit("the demo's exit");
    assert!(status.success(), "demo exit: {}", demo.describe());
    let line = |prefix: &str| {
        demo.stdout
            .iter()
            .find(|l| l.starts_with(prefix))
            .cloned()
            .unwrap_or_else(|| panic!("no {prefix:?} line in {:#?}", demo.stdout))
    };
    let provided = number_before(&line("demo: provider:"), "records");
    let served = line("demo: server:");
    let s = ServerLine {
        consumed: number_before(&served, "records"),
        results: number_before(&served, "results"),
        dead_letters: number_before(&served, "dead"),
        committed: number_before(&served, "offsets"),
    };
    // Nothing lost on the way out: every record published was consumed before the server
    // stopped, and every record consumed got a result and its offset committed.
    assert_eq!(s.consumed, provided, "{served} but {provided} published");
    assert_eq!(s.results, s.consumed, "{served}");
    assert_eq!(s.dead_letters, 0, "{served}");
    assert_eq!(s.committed, s.consumed, "{served}");
    // A clean stop: no client outlives the embedded broker, nothing else goes wrong.
    let stderr = demo.stderr();
    let bad: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(" ERROR ") || l.contains(" WARN "))
        .collect();
    assert!(
        bad.is_empty(),
        "the demo logged warnings or errors:\n{}",
        bad.join("\n")
    );
    s
}

/// Starts the demo with `data` and waits for its HTTP banner; returns it and the address.
fn start(name: &str, data: &Path, extra: &[&str], log_dir: &Path) -> (Proc, std::net::SocketAddr) {
    let mut args = vec![
        "demo".to_string(),
        "--http".into(),
        "127.0.0.1:0".into(),
        "--data".into(),
        data.display().to_string(),
        "--rate".into(),
        "1000".into(),
        "--model-interval".into(),
        "0.5".into(),
        "--sample-every".into(),
        "0.2".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut demo = Proc::spawn(name, &args, log_dir);
    let banner = demo.wait_line("the HTTP banner", |l| l.starts_with("demo: HTTP state on"));
    (demo, banner_http(&banner))
}

/// Waits until `n` models were swapped in and a sampled score was printed; returns the names
/// of the models swapped in, in order.
fn wait_for_swaps_and_a_score(demo: &mut Proc, n: usize) -> Vec<String> {
    let swapped = |d: &Proc| -> Vec<String> {
        d.stdout
            .iter()
            .filter_map(|l| l.strip_prefix("swap: wine now served by "))
            .filter_map(|rest| rest.split_whitespace().next())
            .map(str::to_string)
            .collect()
    };
    while swapped(demo).len() < n || !demo.stdout.iter().any(|l| l.starts_with("score: ")) {
        demo.wait_line("a swap or a score", |l| {
            l.starts_with("swap: ") || l.starts_with("score: ")
        });
    }
    swapped(demo)
}

/// The model names the demo plays from `dir`: the PMML files' stems, and the TensorFlow graph's.
fn tutorial_model_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list the tutorial's files")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| {
                x == "pmml"
                    || p.file_name()
                        .is_some_and(|n| n == "optimized_WineQuality.pb")
            })
        })
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    names
}

/// The per-model rows of the summary's table (after `demo: models …` and its header).
fn model_rows(demo: &Proc) -> Vec<String> {
    demo.stdout
        .iter()
        .skip_while(|l| !l.starts_with("demo: models"))
        .skip(2)
        .cloned()
        .collect()
}

#[test]
fn the_demo_swaps_the_tutorial_models_serves_state_and_stops_cleanly_on_sigterm() {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/wine");
    if !data.join("winequality_red.csv").is_file() {
        note(&format!(
            "SKIPPED (the demo with the tutorial's models): {} not found",
            data.display()
        ));
        return;
    }
    let names = tutorial_model_names(&data);
    assert!(
        names.len() >= 2,
        "tutorial models in {}: {names:?}",
        data.display()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut demo, http) = start("demo-tutorial", &data, &[], dir.path());
    let first = demo.stdout.first().cloned().unwrap_or_default();
    assert!(
        first.starts_with("demo: embedded broker")
            && first.contains(&format!("{} models from", names.len()))
            && first.contains("shared/data/wine"),
        "{first}"
    );
    // Models swapped in live, each one of the tutorial's; and a record scored.
    let swapped = wait_for_swaps_and_a_score(&mut demo, 2);
    for s in &swapped {
        assert!(names.contains(s), "swapped in {s}, not one of {names:?}");
    }
    // The HTTP state is up while the stream runs, and names one of those models.
    let (status, state) = http_get(http, "/state/wine");
    assert_eq!(status, 200, "GET /state/wine: {state:#}");
    let current = state["current"]["name"].as_str().unwrap_or_default();
    assert!(names.iter().any(|n| n == current), "{state:#}");

    let status = demo.terminate();
    assert!(status.success(), "{}", demo.describe());
    let s = check_exit(&mut demo);
    assert!(s.consumed > 0, "{s:?}");
    // The summary's table: every model that served (at least the two swapped in), the
    // current one marked, and no more records scored by them than results produced.
    let rows = model_rows(&demo);
    assert!(rows.len() >= 2, "{rows:#?}");
    assert_eq!(
        rows.iter().filter(|l| l.ends_with("(current)")).count(),
        1,
        "{rows:#?}"
    );
    let scored: u64 = rows
        .iter()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter_map(|n| n.parse::<u64>().ok())
        .sum();
    assert!(
        scored > 0 && scored <= s.results,
        "{scored} scored by the models, {s:?}: {rows:#?}"
    );
}

#[test]
fn the_demo_without_the_tutorial_files_plays_generated_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-data");
    let (mut demo, http) = start("demo-generated", &missing, &[], dir.path());
    assert!(
        demo.stdout.iter().any(|l| l.starts_with("demo: ")
            && l.contains(
                "not found (see --data): using wine records and models generated by flowstage \
                 itself"
            )),
        "{:#?}",
        demo.stdout
    );
    wait_for_swaps_and_a_score(&mut demo, 2);
    let (status, state) = http_get(http, "/state/wine");
    assert_eq!(status, 200, "GET /state/wine: {state:#}");
    let status = demo.terminate();
    assert!(status.success(), "{}", demo.describe());
    let s = check_exit(&mut demo);
    assert!(s.consumed > 0, "{s:?}");
}

#[test]
fn the_demo_stops_by_itself_after_its_duration() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-data");
    // No signal is sent: `--duration` alone ends it, through the same clean stop (how much it
    // scored in that second depends on the machine, so only the consistency is checked).
    let (mut demo, _) = start("demo-duration", &missing, &["--duration", "1"], dir.path());
    check_exit(&mut demo);
    assert!(
        demo.stdout
            .iter()
            .any(|l| l.starts_with("demo: stopping after")),
        "{:#?}",
        demo.stdout
    );
}

#[test]
fn bad_demo_settings_fail_before_anything_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-data");
    for (flags, named) in [
        (&["--model-interval", "0"][..], "--model-interval"),
        (&["--rate", "1000000000"][..], "--rate"),
        (&["--partitions", "1001"][..], "--partitions"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flowstage"))
            .args(["demo", "--http", "off", "--duration", "5", "--data"])
            .arg(&missing)
            .args(flags)
            .output()
            .expect("run flowstage demo");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{flags:?}: {stdout}");
        assert!(stderr.contains(named), "{flags:?}: {stderr}");
        // Refused before the broker starts.
        assert!(!stdout.contains("embedded broker"), "{flags:?}: {stdout}");
    }
}

#[test]
fn a_bad_worker_thread_count_is_an_error_not_a_panic() {
    // tokio panics on a TOKIO_WORKER_THREADS it cannot use (exit status 101).
    for command in [
        &["serve", "--brokers", "127.0.0.1:1", "--http", "off"][..],
        &["demo", "--http", "off", "--duration", "1"][..],
    ] {
        for bad in ["0", "two"] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_flowstage"))
                .args(command)
                .env("TOKIO_WORKER_THREADS", bad)
                .output()
                .expect("run flowstage");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{command:?} {bad}: {stderr}");
            assert!(
                stderr.contains(&format!("TOKIO_WORKER_THREADS={bad:?}")),
                "{command:?} {bad}: {stderr}"
            );
            assert!(!stderr.contains("panicked"), "{command:?} {bad}: {stderr}");
        }
    }
}
