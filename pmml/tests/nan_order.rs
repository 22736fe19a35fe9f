//! Sorting scores or distances that hold a NaN never panics (Rust's sort panics on an order that
//! is not total, and `partial_cmp` is not one once a NaN is among numbers): a median of segment
//! scores and a nearest-neighbour search, each fed values that make NaNs among numbers.

use flowstage_pmml::{Pmml, Value};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// A MiningModel taking `method` over 61 regression segments: the even ones score `x - z`
/// (NaN when both are infinite), the odd ones a constant, `k` for the k-th, in a scrambled
/// order (a sort notices a broken order only on some layouts, and not on short slices).
fn median_doc(method: &str) -> String {
    let mut segments = String::new();
    for k in (0..61).map(|i| (i * 37) % 61) {
        let (intercept, body) = if k % 2 == 0 {
            (
                0,
                r#"<NumericPredictor name="x" coefficient="1"/><NumericPredictor name="z" coefficient="-1"/>"#,
            )
        } else {
            (k, "")
        };
        segments += &format!(
            r#"<Segment id="s{k}" weight="{w}"><True/>
  <RegressionModel functionName="regression">
    <MiningSchema><MiningField name="y" usageType="target"/><MiningField name="x"/><MiningField name="z"/></MiningSchema>
    <RegressionTable intercept="{intercept}">{body}</RegressionTable>
  </RegressionModel></Segment>
"#,
            w = 1 + k % 3
        );
    }
    format!(
        r#"<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4">
  <DataDictionary>
    <DataField name="x" optype="continuous" dataType="double"/>
    <DataField name="z" optype="continuous" dataType="double"/>
    <DataField name="y" optype="continuous" dataType="double"/>
  </DataDictionary>
  <MiningModel functionName="regression">
    <MiningSchema><MiningField name="y" usageType="target"/><MiningField name="x"/><MiningField name="z"/></MiningSchema>
    <Segmentation multipleModelMethod="{method}">
{segments}    </Segmentation>
  </MiningModel>
</PMML>"#
    )
}

#[test]
fn a_median_over_nan_scores_is_a_result_not_a_panic() {
    for method in ["median", "weightedMedian"] {
        let m = Pmml::from_str(&median_doc(method)).expect("loads");
        // Finite inputs: x - z = 0 on the 31 even segments (weights 61 of 121), 1, 3, … 59 on
        // the 30 odd ones: the median and the weighted one are 0.
        let finite = m
            .evaluate(&[Value::Double(2.0), Value::Double(2.0)])
            .expect("scores");
        assert_eq!(
            finite.get("y"),
            Some(&Value::Double(0.0)),
            "{method}: {finite:?}"
        );
        // Infinite inputs: 31 NaNs among 30 numbers.
        let inf = [Value::Double(f64::INFINITY), Value::Double(f64::INFINITY)];
        let scored = catch_unwind(AssertUnwindSafe(|| m.evaluate(&inf)));
        assert!(
            scored.is_ok(),
            "{method}: scoring NaN segment scores panicked"
        );
    }
}

#[test]
fn a_nearest_neighbour_search_over_nan_distances_is_a_result_not_a_panic() {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/conformance/nyoka_knn_clf_iris");
    let doc = std::fs::read_to_string(dir.join("model.pmml")).expect("fixture");
    // A negative weight makes some squared distances negative: their square roots are NaN.
    let doc = doc.replacen(r#"fieldWeight="1""#, r#"fieldWeight="-1""#, 1);
    assert!(doc.contains(r#"fieldWeight="-1""#));
    let m = Pmml::from_str(&doc).expect("loads");
    let csv = std::fs::read_to_string(dir.join("input.csv")).expect("fixture input");
    let mut rows = 0;
    for line in csv.lines().skip(1) {
        let inputs: Vec<Value> = line
            .split(',')
            .map(|c| c.trim().parse().map_or(Value::Missing, Value::Double))
            .collect();
        let scored = catch_unwind(AssertUnwindSafe(|| m.evaluate(&inputs)));
        assert!(scored.is_ok(), "scoring {line:?} panicked");
        rows += 1;
    }
    assert!(rows > 10, "{rows} rows");
}
