//! `flowstage score` end to end: the ONNX fixtures against onnxruntime's outputs, the
//! tutorial's TensorFlow models against TensorFlow's, bad rows and unloadable models.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value as Json;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../model/tests/fixtures")
}

fn wine_dir() -> Option<PathBuf> {
    let shared = std::env::var_os("FLOWSTAGE_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let wine = shared.join("data/wine");
    if wine.join("winequality_red.csv").is_file() {
        Some(wine)
    } else {
        eprintln!("SKIPPED: {} is absent", wine.display());
        None
    }
}

/// Runs `flowstage score ARGS`, returning (success, stdout lines, stderr).
fn score(args: &[&str]) -> (bool, Vec<Json>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flowstage"))
        .arg("score")
        .args(args)
        .output()
        .expect("run flowstage");
    let stdout = String::from_utf8(out.stdout).expect("utf-8 output");
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect();
    (
        out.status.success(),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn as_f64(v: &Json) -> f64 {
    match v {
        Json::Number(n) => n.as_f64().expect("f64"),
        Json::String(s) if s == "NaN" => f64::NAN,
        other => panic!("not a number: {other}"),
    }
}

/// Same keys, same strings, numbers within 1e-5 relative (absolute below 1).
fn assert_close(ctx: &str, got: &Json, want: &Json) {
    match (got, want) {
        (Json::Object(g), Json::Object(w)) => {
            let gk: Vec<_> = g.keys().collect();
            let mut wk: Vec<_> = w.keys().collect();
            let mut gks = gk.clone();
            gks.sort();
            wk.sort();
            assert_eq!(gks, wk, "{ctx}");
            for (k, wv) in w {
                assert_close(&format!("{ctx}.{k}"), &g[k], wv);
            }
        }
        (Json::Array(g), Json::Array(w)) => {
            assert_eq!(g.len(), w.len(), "{ctx}");
            for (i, (g, w)) in g.iter().zip(w).enumerate() {
                assert_close(&format!("{ctx}[{i}]"), g, w);
            }
        }
        (Json::String(g), Json::String(w)) => assert_eq!(g, w, "{ctx}"),
        (g, w) => {
            let (g, w) = (as_f64(g), as_f64(w));
            assert!(
                (g.is_nan() && w.is_nan()) || (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                "{ctx}: got {g}, want {w}"
            );
        }
    }
}

#[test]
fn onnx_fixtures_score_like_onnxruntime() {
    let dir = fixtures().join("onnx");
    let manifest: Json =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).expect("read"))
            .expect("json");
    for m in manifest["models"].as_array().expect("models") {
        let name = m["name"].as_str().expect("name");
        let model = dir.join(format!("{name}.onnx"));
        let input = dir.join(format!("{name}.input.csv"));
        let (ok, lines, stderr) = score(&[
            "--model",
            model.to_str().expect("path"),
            "--input",
            input.to_str().expect("path"),
        ]);
        assert!(ok, "{name}: {stderr}");
        let expected: Vec<Json> =
            std::fs::read_to_string(dir.join(format!("{name}.expected.jsonl")))
                .expect("read")
                .lines()
                .map(|l| serde_json::from_str(l).expect("json"))
                .collect();
        assert_eq!(lines.len(), expected.len(), "{name}");
        for (i, (g, w)) in lines.iter().zip(&expected).enumerate() {
            assert_close(&format!("{name} row {i}"), g, w);
        }
        // Integer labels are written as integers, as onnxruntime gives them.
        if let Some(label) = expected[0].get("label").or(expected[0].get("output_label")) {
            if label.is_i64() {
                let key = if expected[0].get("label").is_some() {
                    "label"
                } else {
                    "output_label"
                };
                assert!(lines[0][key].is_i64(), "{name}: {}", lines[0][key]);
            }
        }
    }
}

#[test]
fn bad_rows_give_error_objects_and_scoring_goes_on() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let csv = tmp.path().join("in.csv");
    let dir = fixtures().join("onnx");
    let first_row = std::fs::read_to_string(dir.join("linear_regressor.input.csv"))
        .expect("read")
        .lines()
        .nth(1)
        .expect("row")
        .to_string();
    std::fs::write(
        &csv,
        format!(
            "f0;f1;f2;f3;f4;f5\n{row}\n1;2;3\n1;2;3;4;5;sweet\n{row}\n",
            row = first_row.replace(',', ";")
        ),
    )
    .expect("write");
    let out = tmp.path().join("out.jsonl");
    let (ok, stdout, stderr) = score(&[
        "--model",
        dir.join("linear_regressor.onnx").to_str().expect("path"),
        "--input",
        csv.to_str().expect("path"),
        "--delimiter",
        ";",
        "--output",
        out.to_str().expect("path"),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.is_empty());
    let lines: Vec<Json> = std::fs::read_to_string(&out)
        .expect("read output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[0].get("variable").is_some(), "{}", lines[0]);
    assert!(lines[1]["__error__"]
        .as_str()
        .is_some_and(|e| e.contains("fields")));
    assert!(lines[2]["__error__"]
        .as_str()
        .is_some_and(|e| e.contains("sweet")));
    assert_eq!(lines[0], lines[3]);
}

#[test]
fn missing_cells_are_nan_inputs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = fixtures().join("onnx");
    let input = dir.join("tree_regressor_nan_inputs.input.csv");
    assert!(std::fs::read_to_string(&input)
        .expect("read")
        .contains(",,"));
    let (ok, lines, stderr) = score(&[
        "--model",
        dir.join("tree_regressor_nan_inputs.onnx")
            .to_str()
            .expect("path"),
        "--type",
        "onnx",
        "--input",
        input.to_str().expect("path"),
    ]);
    assert!(ok, "{stderr}");
    assert!(lines.iter().all(|l| l.get("__error__").is_none()));
    drop(tmp);
}

#[test]
fn unloadable_models_fail_clearly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let csv = tmp.path().join("in.csv");
    std::fs::write(&csv, "a,b\n1,2\n").expect("write");
    let garbage = tmp.path().join("model.onnx");
    std::fs::write(&garbage, b"\x08\x01\x12\x04junk\xff\xff").expect("write");
    let unknown = tmp.path().join("model.bin");
    std::fs::write(&unknown, b"whatever").expect("write");
    let pmml = tmp.path().join("model.pmml");
    std::fs::write(&pmml, b"<PMML/>").expect("write");
    let missing = tmp.path().join("nope.onnx");
    for (model, needle) in [
        (&garbage, "cannot load onnx model"),
        (&unknown, "--type"),
        (&pmml, "cannot load pmml model"),
        (&missing, "cannot load"),
    ] {
        let (ok, lines, stderr) = score(&[
            "--model",
            model.to_str().expect("path"),
            "--input",
            csv.to_str().expect("path"),
        ]);
        assert!(!ok, "{}", model.display());
        assert!(lines.is_empty());
        assert!(stderr.contains(needle), "{}: {stderr}", model.display());
    }
    let (ok, _, stderr) = score(&[
        "--model",
        fixtures()
            .join("onnx/linear_regressor.onnx")
            .to_str()
            .expect("path"),
        "--input",
        tmp.path().join("absent.csv").to_str().expect("path"),
    ]);
    assert!(!ok);
    assert!(stderr.contains("cannot open input"), "{stderr}");
}

/// The wine CSV with a header, `;`-separated, without the quality column.
fn wine_csv(wine: &Path, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(wine.join("winequality_red.csv")).expect("read wine");
    let mut out = String::from(
        "fixed acidity;volatile acidity;citric acid;residual sugar;chlorides;\
         free sulfur dioxide;total sulfur dioxide;density;pH;sulphates;alcohol\n",
    );
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split(';').take(11).collect();
        out.push_str(&cells.join(";"));
        out.push('\n');
    }
    let path = dir.join("wine.csv");
    std::fs::write(&path, out).expect("write");
    path
}

#[test]
fn tutorial_tensorflow_models_score_like_tensorflow() {
    let Some(wine) = wine_dir() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let csv = wine_csv(&wine, tmp.path());
    for (model, fixture, key) in [
        (
            wine.join("optimized_WineQuality.pb"),
            "wine_frozen_tf.csv",
            "dense_3/Sigmoid",
        ),
        (wine.join("saved/1"), "wine_saved_tf.csv", "outputs"),
    ] {
        let (ok, lines, stderr) = score(&[
            "--model",
            model.to_str().expect("path"),
            "--input",
            csv.to_str().expect("path"),
            "--delimiter",
            ";",
        ]);
        assert!(ok, "{stderr}");
        let expected = std::fs::read_to_string(fixtures().join(fixture)).expect("fixture");
        let expected: Vec<Vec<f64>> = expected
            .lines()
            .skip(1)
            .map(|l| l.split(',').map(|v| v.parse().expect("number")).collect())
            .collect();
        assert_eq!(lines.len(), 1599);
        assert_eq!(lines.len(), expected.len());
        for (i, (line, want)) in lines.iter().zip(&expected).enumerate() {
            let got = line[key]
                .as_array()
                .unwrap_or_else(|| panic!("row {i}: {line}"));
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(want) {
                assert!(
                    (as_f64(g) - w).abs() <= 1e-5,
                    "{fixture} row {i}: {g} vs {w}"
                );
            }
        }
    }
}

/// PMML through `flowstage score`: the tutorial's PMML models over the first 200 wine rows
/// (a headered CSV with the PMML's input names), each line's keys and values equal to
/// JPMML-Evaluator's (the PMML crate's fixtures).
#[test]
fn pmml_models_score_like_jpmml() {
    let Some(wine) = wine_dir() else { return };
    let names = [
        "fixed acidity",
        "volatile acidity",
        "citric acid",
        "residual sugar",
        "chlorides",
        "free sulfur dioxide",
        "total sulfur dioxide",
        "density",
        "pH",
        "sulphates",
        "alcohol",
    ];
    let data = std::fs::read_to_string(wine.join("winequality_red.csv")).expect("wine csv");
    let rows: Vec<String> = data
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(200)
        .map(|l| l.split(';').take(11).collect::<Vec<_>>().join(";"))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("wine.csv");
    std::fs::write(&csv, format!("{}\n{}\n", names.join(";"), rows.join("\n"))).expect("write");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pmml/tests/fixtures/wine");
    for stem in [
        "winequalityDecisionTreeClassification",
        "winequalityLinearRegression",
        "winequalityRandonForrestClassification",
    ] {
        let model = wine.join(format!("{stem}.pmml"));
        let (ok, lines, err) = score(&[
            "--model",
            model.to_str().expect("utf-8 path"),
            "--input",
            csv.to_str().expect("utf-8 path"),
            "--delimiter",
            ";",
        ]);
        assert!(ok, "{stem}: {err}");
        let expected = std::fs::read_to_string(fixtures.join(format!("{stem}.expected.jsonl")))
            .expect("fixture");
        assert_eq!(lines.len(), rows.len(), "{stem}: one line per row");
        for (i, (got, want)) in lines.iter().zip(expected.lines()).enumerate() {
            let mut want: Json = serde_json::from_str(want).expect("fixture JSON");
            if let Json::Object(m) = &mut want {
                m.remove("row");
            }
            assert_close(&format!("{stem} row {i}"), got, &want);
        }
    }
}

/// quality = 1 + alcohol / 2.
const ALCOHOL_PMML: &str = r#"<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4">
  <DataDictionary>
    <DataField name="alcohol" optype="continuous" dataType="double"/>
    <DataField name="quality" optype="continuous" dataType="double"/>
  </DataDictionary>
  <RegressionModel functionName="regression">
    <MiningSchema><MiningField name="quality" usageType="target"/><MiningField name="alcohol"/></MiningSchema>
    <RegressionTable intercept="1"><NumericPredictor name="alcohol" coefficient="0.5"/></RegressionTable>
  </RegressionModel>
</PMML>"#;

/// `ALCOHOL_PMML` and `csv` written to a fresh directory: (directory, model, input).
fn alcohol_case(csv: &str) -> (tempfile::TempDir, String, String) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let model = tmp.path().join("alcohol.pmml");
    let input = tmp.path().join("in.csv");
    std::fs::write(&model, ALCOHOL_PMML).expect("write model");
    std::fs::write(&input, csv).expect("write input");
    let s = |p: &Path| p.to_str().expect("path").to_string();
    let (m, i) = (s(&model), s(&input));
    (tmp, m, i)
}

#[test]
fn the_uci_wine_format_is_read_without_a_header() {
    // Two UCI rows (`;`, no header, 12 columns): alcohol, the 11th, is 10 and 12.
    let (_tmp, model, input) = alcohol_case(
        "7.4;0.7;0;1.9;0.076;11;34;0.9978;3.51;0.56;10;5\n\
         7.8;0.88;0;2.6;0.098;25;67;0.9968;3.2;0.68;12;5\n",
    );
    let (ok, lines, stderr) = score(&["--model", &model, "--input", &input]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("UCI wine format"), "{stderr}");
    let got: Vec<f64> = lines.iter().map(|l| as_f64(&l["quality"])).collect();
    assert_eq!(got, vec![6.0, 7.0]);
}

#[test]
fn a_header_naming_none_of_the_inputs_is_an_error() {
    let (_tmp, model, input) = alcohol_case("a,b\n1,2\n");
    let (ok, lines, stderr) = score(&["--model", &model, "--input", &input]);
    assert!(!ok, "{stderr}");
    assert!(lines.is_empty());
    assert!(
        stderr.contains("none of the model's inputs (alcohol)"),
        "{stderr}"
    );
    // Numbers in the first row that are not the UCI format's 11 or 12 columns.
    let (_tmp, model, input) = alcohol_case("1,2\n3,4\n");
    let (ok, _, stderr) = score(&["--model", &model, "--input", &input]);
    assert!(!ok && stderr.contains("not a header"), "{stderr}");
}

#[test]
fn no_row_scored_is_a_failure_and_failures_are_counted() {
    let (_tmp, model, input) = alcohol_case("alcohol\n1,2\n3,4\n");
    let (ok, lines, stderr) = score(&["--model", &model, "--input", &input]);
    assert!(!ok, "{stderr}");
    assert_eq!(lines.len(), 2, "an error object per row");
    assert!(lines.iter().all(|l| l["__error__"]
        .as_str()
        .is_some_and(|e| e.starts_with("line "))));
    assert!(
        stderr.contains("2 of 2 rows could not be scored"),
        "{stderr}"
    );
    // One good row: a success, with the failure counted.
    let (_tmp, model, input) = alcohol_case("alcohol\n1,2\n4\n");
    let (ok, lines, stderr) = score(&["--model", &model, "--input", &input]);
    assert!(ok, "{stderr}");
    assert_eq!(as_f64(&lines[1]["quality"]), 3.0);
    assert!(
        stderr.contains("1 of 2 rows could not be scored (first: line 2:"),
        "{stderr}"
    );
}

#[test]
fn a_line_without_end_stops_the_read_after_scoring_the_rows_before_it() {
    // Two rows, then 17 MiB without a line break (as `/dev/zero` gives, without end).
    let mut csv = String::from("alcohol\n2\n4\n");
    csv.push_str(&"9".repeat(17 << 20));
    let (_tmp, model, input) = alcohol_case(&csv);
    let (ok, lines, stderr) = score(&["--model", &model, "--input", &input]);
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("longer than 16 MiB"), "{stderr}");
    let got: Vec<f64> = lines.iter().map(|l| as_f64(&l["quality"])).collect();
    assert_eq!(got, vec![2.0, 3.0]);
}

#[test]
fn error_lines_count_blank_lines_and_line_breaks_in_quoted_fields() {
    // Line 1 the header, 2 a row, 3 blank, 4–5 one row whose note spans two lines, 6 blank,
    // 7 a bad row, then CRLF line ends: 8 a row, 9 a bad row.
    let (_tmp, model, input) =
        alcohol_case("alcohol,note\n2,a\n\n4,\"two\nlines\"\n\nx,b\r\n6,c\r\ny,d\r\n");
    let (ok, lines, stderr) = score(&["--model", &model, "--input", &input]);
    assert!(ok, "{stderr}");
    let errors: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["__error__"].as_str())
        .collect();
    assert_eq!(errors.len(), 2, "{lines:?}");
    assert!(errors[0].starts_with("line 7:"), "{errors:?}");
    assert!(errors[1].starts_with("line 9:"), "{errors:?}");
    let scored: Vec<f64> = lines
        .iter()
        .filter(|l| l.get("__error__").is_none())
        .map(|l| as_f64(&l["quality"]))
        .collect();
    assert_eq!(scored, vec![2.0, 3.0, 4.0]);
    // Without a header (the UCI format), after a blank first line: the bad row is line 3.
    let (_tmp, model, input) = alcohol_case(
        "\n7.4;0.7;0;1.9;0.076;11;34;0.9978;3.51;0.56;10;5\n\
         7.8;0.88;0;2.6;0.098;25;67;0.9968;3.2;0.68;x;5\n",
    );
    let (_, lines, stderr) = score(&["--model", &model, "--input", &input]);
    assert_eq!(as_f64(&lines[0]["quality"]), 6.0, "{stderr}");
    let error = lines[1]["__error__"].as_str().unwrap_or_default();
    assert!(error.starts_with("line 3:"), "{error}");
    // A bad cell in the first row of such a file is that row's error, not a header.
    let (_tmp, model, input) = alcohol_case(
        "7.4;0.7;0;1.9;0.076;11;34;0.9978;3.51;0.56;x;5\n\
         7.8;0.88;0;2.6;0.098;25;67;0.9968;3.2;0.68;12;5\n",
    );
    let (ok, lines, stderr) = score(&["--model", &model, "--input", &input]);
    assert!(ok, "{stderr}");
    let error = lines[0]["__error__"].as_str().unwrap_or_default();
    assert!(error.starts_with("line 1:"), "{error}");
    assert_eq!(as_f64(&lines[1]["quality"]), 7.0);
}
