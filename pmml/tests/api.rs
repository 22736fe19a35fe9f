//! Public API behaviour on small documents written here: field lists, the slice and map entry
//! points, input errors, float (32-bit) semantics, lazy input validation.

mod common;

use flowstage_pmml::{DataType, EvalError, OpType, Pmml, Value};
use std::collections::HashMap;

fn tree_doc(data_type: &str, threshold: &str) -> String {
    format!(
        r#"<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4">
  <DataDictionary>
    <DataField name="x" optype="continuous" dataType="{data_type}"/>
    <DataField name="unused" optype="continuous" dataType="double"/>
    <DataField name="label" optype="categorical" dataType="string"><Value value="lo"/><Value value="hi"/></DataField>
  </DataDictionary>
  <TreeModel functionName="classification">
    <MiningSchema>
      <MiningField name="label" usageType="target"/>
      <MiningField name="x"/>
      <MiningField name="unused"/>
    </MiningSchema>
    <Output>
      <OutputField name="p_lo" optype="continuous" dataType="double" feature="probability" value="lo"/>
      <OutputField name="node" optype="categorical" dataType="string" feature="entityId"/>
    </Output>
    <Node id="root" score="lo"><True/>
      <Node id="left" score="lo"><SimplePredicate field="x" operator="lessOrEqual" value="{threshold}"/>
        <ScoreDistribution value="lo" recordCount="3"/><ScoreDistribution value="hi" recordCount="1"/>
      </Node>
      <Node id="right" score="hi"><True/>
        <ScoreDistribution value="lo" recordCount="1"/><ScoreDistribution value="hi" recordCount="4"/>
      </Node>
    </Node>
  </TreeModel>
</PMML>"#
    )
}

#[test]
fn fields_are_described() {
    let m = Pmml::from_str(&tree_doc("double", "0.5")).expect("loads");
    let inputs: Vec<&str> = m.input_fields().iter().map(|f| f.name.as_str()).collect();
    assert_eq!(inputs, ["x", "unused"]);
    assert_eq!(m.input_fields()[0].data_type, DataType::Double);
    assert_eq!(m.input_fields()[0].op_type, OpType::Continuous);
    assert_eq!(m.target_fields().len(), 1);
    assert_eq!(m.target_fields()[0].name, "label");
    assert_eq!(
        m.target_fields()[0].categories,
        vec![Value::from("lo"), Value::from("hi")]
    );
    let outputs: Vec<&str> = m.output_fields().iter().map(|f| f.name.as_str()).collect();
    assert_eq!(outputs, ["p_lo", "node"]);
    assert_eq!(m.result_fields(), ["label", "p_lo", "node"]);
    assert_eq!(m.model_element(), "TreeModel");
    assert_eq!(m.function_name(), "classification");
}

#[test]
fn slice_and_map_inputs_agree() {
    let m = Pmml::from_str(&tree_doc("double", "0.5")).expect("loads");
    let a = m
        .evaluate(&[Value::Double(0.25), Value::Missing])
        .expect("evaluates");
    let mut map = HashMap::new();
    map.insert("x", Value::from("0.25"));
    let b = m.evaluate_map(&map).expect("evaluates");
    assert_eq!(a, b);
    assert_eq!(a.get("label"), Some(&Value::from("lo")));
    assert_eq!(a.get("p_lo"), Some(&Value::Double(3.0 / 4.0)));
    assert_eq!(a.get("node"), Some(&Value::from("left")));
    let c = m
        .evaluate(&[Value::Integer(1), Value::Missing])
        .expect("evaluates");
    assert_eq!(c.get("label"), Some(&Value::from("hi")));
    assert_eq!(c.get("p_lo"), Some(&Value::Double(1.0 / 5.0)));
    let pairs: Vec<(&str, &Value)> = c.iter().collect();
    assert_eq!(pairs.len(), 3);
    assert_eq!(c.clone().into_map().len(), 3);
}

#[test]
fn input_errors_are_typed() {
    let m = Pmml::from_str(&tree_doc("double", "0.5")).expect("loads");
    assert_eq!(
        m.evaluate(&[Value::Double(1.0)]),
        Err(EvalError::InputCount {
            expected: 2,
            got: 1
        })
    );
    let mut map = HashMap::new();
    map.insert("nope", Value::Double(1.0));
    assert_eq!(
        m.evaluate_map(&map),
        Err(EvalError::UnknownInput("nope".into()))
    );
    // A non-numeric string for a double field used by the record is invalid ...
    assert!(matches!(
        m.evaluate(&[Value::from("abc"), Value::Missing]),
        Err(EvalError::InvalidValue { ref field, .. }) if field == "x"
    ));
    // ... but a field the record never reads is not validated (as JPMML: lazily).
    assert!(m
        .evaluate(&[Value::Double(0.0), Value::from("abc")])
        .is_ok());
}

#[test]
fn missing_value_follows_missing_value_strategy() {
    // Default missingValueStrategy "none": the unknown predicate counts as false, so the next
    // child (True) is chosen.
    let m = Pmml::from_str(&tree_doc("double", "0.5")).expect("loads");
    let out = m
        .evaluate(&[Value::Missing, Value::Missing])
        .expect("evaluates");
    assert_eq!(out.get("node"), Some(&Value::from("right")));
    let nan = m
        .evaluate(&[Value::Double(f64::NAN), Value::Missing])
        .expect("evaluates");
    assert_eq!(nan, out);
}

#[test]
fn float_fields_compare_in_32_bits() {
    // 0.30000002 > 0.30000001 in 64 bits, but both round to the same f32.
    let input = [Value::from("0.30000002"), Value::Missing];
    let as_double = Pmml::from_str(&tree_doc("double", "0.30000001")).expect("loads");
    let as_float = Pmml::from_str(&tree_doc("float", "0.30000001")).expect("loads");
    assert_eq!(
        as_double.evaluate(&input).expect("evaluates").get("node"),
        Some(&Value::from("right"))
    );
    assert_eq!(
        as_float.evaluate(&input).expect("evaluates").get("node"),
        Some(&Value::from("left"))
    );
    assert_eq!("0.30000002".parse::<f32>(), "0.30000001".parse::<f32>());
}

#[test]
fn load_from_bytes_and_path() {
    let doc = tree_doc("double", "0.5");
    let a = Pmml::from_bytes(doc.as_bytes()).expect("loads");
    let dir = std::env::temp_dir().join(format!("flowstage-pmml-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("tree.pmml");
    std::fs::write(&path, &doc).expect("write");
    let b = Pmml::from_path(&path).expect("loads");
    std::fs::remove_dir_all(&dir).ok();
    let input = [Value::Double(0.7), Value::Missing];
    assert_eq!(
        a.evaluate(&input).expect("a"),
        b.evaluate(&input).expect("b")
    );
    assert!(matches!(
        Pmml::from_path(dir.join("absent.pmml")),
        Err(flowstage_pmml::LoadError::Io(_))
    ));
}

fn verified_doc(expected_y: &str) -> String {
    common::xy_document(&format!(
        r#"<RegressionModel functionName="regression">
    <MiningSchema><MiningField name="x"/><MiningField name="y" usageType="target"/></MiningSchema>
    <RegressionTable intercept="1"><NumericPredictor name="x" coefficient="0.5"/></RegressionTable>
    <ModelVerification recordCount="2">
      <VerificationFields>
        <VerificationField field="x" column="data:x"/>
        <VerificationField field="y" column="data:y" precision="1e-9"/>
      </VerificationFields>
      <InlineTable xmlns:data="http://example.com/data">
        <row><data:x>2</data:x><data:y>2</data:y></row>
        <row><data:x>3</data:x><data:y>{expected_y}</data:y></row>
      </InlineTable>
    </ModelVerification>
  </RegressionModel>"#
    ))
}

#[test]
fn model_verification_is_checked_when_asked() {
    let verify = flowstage_pmml::LoadOptions {
        verify: true,
        ..Default::default()
    };
    assert!(Pmml::from_bytes_with(verified_doc("2.5").as_bytes(), &verify).is_ok());
    match Pmml::from_bytes_with(verified_doc("2.6").as_bytes(), &verify) {
        Err(flowstage_pmml::LoadError::Verification { record, field, .. }) => {
            assert_eq!((record, field.as_str()), (1, "y"));
        }
        other => panic!("expected a verification failure, got {other:?}"),
    }
    // Not asked: not checked.
    assert!(Pmml::from_str(&verified_doc("2.6")).is_ok());
}

#[test]
fn evaluate_into_reuses_the_buffer_and_agrees_with_evaluate() {
    let m = Pmml::from_str(&tree_doc("double", "0.5")).expect("loads");
    let mut out = flowstage_pmml::Outputs::default();
    assert!(out.values().is_empty());
    for x in [0.1, 0.9, f64::NAN, 0.5] {
        let args = [Value::Double(x), Value::Missing];
        m.evaluate_into(&args, &mut out).expect("scores");
        assert_eq!(out, m.evaluate(&args).expect("scores"));
        assert_eq!(out.names(), m.result_fields());
    }
    // An error leaves the previous result in place.
    let before = out.clone();
    assert!(m.evaluate_into(&[Value::Double(1.0)], &mut out).is_err());
    assert_eq!(out, before);
}

fn select_all_doc(nested: bool) -> String {
    let segmentation = r#"<Segmentation multipleModelMethod="selectAll">
      <Segment id="a"><True/><RegressionModel functionName="regression"><MiningSchema><MiningField name="y" usageType="target"/><MiningField name="x"/></MiningSchema><RegressionTable intercept="1"><NumericPredictor name="x" coefficient="2"/></RegressionTable></RegressionModel></Segment>
      <Segment id="b"><SimplePredicate field="x" operator="greaterThan" value="0"/><RegressionModel functionName="regression"><MiningSchema><MiningField name="y" usageType="target"/><MiningField name="x"/></MiningSchema><RegressionTable intercept="0"><NumericPredictor name="x" coefficient="1"/></RegressionTable></RegressionModel></Segment>
    </Segmentation>"#;
    let model = if nested {
        format!(
            r#"<MiningModel functionName="regression"><MiningSchema><MiningField name="y" usageType="target"/><MiningField name="x"/></MiningSchema>
    <Segmentation multipleModelMethod="selectFirst"><Segment><True/><MiningModel functionName="regression"><MiningSchema><MiningField name="y" usageType="target"/><MiningField name="x"/></MiningSchema>{segmentation}</MiningModel></Segment></Segmentation></MiningModel>"#
        )
    } else {
        format!(
            r#"<MiningModel functionName="regression"><MiningSchema><MiningField name="y" usageType="target"/><MiningField name="x"/></MiningSchema>{segmentation}</MiningModel>"#
        )
    };
    common::xy_document(&model)
}

#[test]
fn select_all_returns_a_list_per_record() {
    let m = Pmml::from_str(&select_all_doc(false)).expect("loads");
    let out = m.evaluate(&[Value::Double(2.0)]).expect("scores");
    assert_eq!(
        out.get_list("y"),
        Some(&[Value::Double(5.0), Value::Double(2.0)][..])
    );
    assert_eq!(out.list_at(0), out.get_list("y"));
    // The list is not a single value.
    assert_eq!(out.get("y"), Some(&Value::Missing));
    let out = m.evaluate(&[Value::Double(-1.0)]).expect("scores");
    assert_eq!(out.get_list("y"), Some(&[Value::Double(-1.0)][..]));
    // A segment without a prediction contributes a missing value.
    let out = m.evaluate(&[Value::Missing]).expect("scores");
    assert_eq!(out.get_list("y"), Some(&[Value::Missing][..]));
    // A single-valued result has no list.
    let single = Pmml::from_str(&tree_doc("double", "0.5")).expect("loads");
    let out = single
        .evaluate(&[Value::Double(0.1), Value::Missing])
        .expect("scores");
    assert_eq!(out.get_list("label"), None);
}

#[test]
fn nested_select_all_is_refused_at_load_time() {
    match Pmml::from_str(&select_all_doc(true)) {
        Err(flowstage_pmml::LoadError::Unsupported { element, .. }) => {
            assert_eq!(element, "Segmentation")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn input_text_is_parsed_as_java_does() {
    let doc = r#"<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4">
  <DataDictionary>
    <DataField name="x" optype="continuous" dataType="double"/>
    <DataField name="i" optype="continuous" dataType="integer"/>
    <DataField name="y" optype="continuous" dataType="double"/>
  </DataDictionary>
  <RegressionModel functionName="regression">
    <MiningSchema><MiningField name="y" usageType="target"/><MiningField name="x"/><MiningField name="i"/></MiningSchema>
    <RegressionTable intercept="0"><NumericPredictor name="x" coefficient="1"/><NumericPredictor name="i" coefficient="0"/></RegressionTable>
  </RegressionModel>
</PMML>"#;
    let m = Pmml::from_str(doc).expect("loads");
    let y = |x: &str, i: &str| {
        m.evaluate(&[Value::from(x), Value::from(i)])
            .map(|o| o.values()[0].clone())
    };
    for (text, want) in [
        ("1e3", 1000.0),
        (" +5 ", 5.0),
        (".5", 0.5),
        ("5.", 5.0),
        ("1d", 1.0),
        ("2.5F", 2.5),
        ("inf", f64::INFINITY),
        ("-INF", f64::NEG_INFINITY),
        ("Infinity", f64::INFINITY),
        ("1e400", f64::INFINITY),
    ] {
        assert_eq!(y(text, "1").ok(), Some(Value::Double(want)), "{text:?}");
    }
    for text in [
        "NaN", "0x10", "1_000", "1,5", "e5", ".", "1e", "infinity", "1dd",
    ] {
        assert!(
            matches!(y(text, "1"), Err(EvalError::InvalidValue { .. })),
            "{text:?}"
        );
    }
    // An integer field is 32-bit and takes integral doubles.
    assert!(y("1", "2147483647").is_ok());
    assert!(y("1", "1e2").is_ok());
    for text in ["2147483648", "3.5", "0x10"] {
        assert!(
            matches!(y("1", text), Err(EvalError::InvalidValue { .. })),
            "{text:?}"
        );
    }
    // A NaN double (not text) is a missing value, as documented.
    assert_eq!(
        m.evaluate(&[Value::Double(f64::NAN), Value::Integer(1)])
            .expect("scores")
            .values()[0],
        Value::Missing
    );
}

#[test]
fn a_general_regression_parameter_named_twice_is_a_load_error() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/conformance/hw_grm_glm_power/model.pmml");
    let doc = std::fs::read_to_string(path).expect("fixture");
    let once = r#"<Parameter name="p6" label="x1^2"/>"#;
    assert!(doc.contains(once));
    let twice = doc.replacen(
        once,
        &format!(r#"{once}<Parameter name="p6" label="again"/>"#),
        1,
    );
    let err = Pmml::from_str(&twice).expect_err("a duplicate parameter");
    assert!(err.to_string().contains("second Parameter"), "{err}");
}

/// `n` DefineFunctions: `f1(x) = x + 1`, and `fk(x)` the expression `body(k - 1)`, which calls
/// `f(k-1)`; a regression on `fn`.
fn function_chain(n: usize, body: fn(usize) -> String) -> String {
    let mut fs = String::from(
        r#"<DefineFunction name="f1" optype="continuous" dataType="double"><ParameterField name="x"/><Apply function="+"><FieldRef field="x"/><Constant>1</Constant></Apply></DefineFunction>"#,
    );
    for k in 2..=n {
        fs += &format!(
            r#"<DefineFunction name="f{k}" optype="continuous" dataType="double"><ParameterField name="x"/>{}</DefineFunction>"#,
            body(k - 1)
        );
    }
    common::xy_document(&format!(
        r#"<TransformationDictionary>{fs}
    <DerivedField name="fx" optype="continuous" dataType="double"><Apply function="f{n}"><FieldRef field="x"/></Apply></DerivedField>
  </TransformationDictionary>
  <RegressionModel functionName="regression">
    <MiningSchema><MiningField name="y" usageType="target"/><MiningField name="x"/></MiningSchema>
    <RegressionTable intercept="0"><NumericPredictor name="fx" coefficient="1"/></RegressionTable>
  </RegressionModel>"#
    ))
}

/// `f(p)(x) + 1`: a chain of `n` makes `n` calls.
fn plus_one(p: usize) -> String {
    format!(
        r#"<Apply function="+"><Apply function="f{p}"><FieldRef field="x"/></Apply><Constant>1</Constant></Apply>"#
    )
}

/// `f(p)(x) + f(p)(x)`: a chain of `n` makes 2^n - 1 calls.
fn doubled(p: usize) -> String {
    format!(
        r#"<Apply function="+"><Apply function="f{p}"><FieldRef field="x"/></Apply><Apply function="f{p}"><FieldRef field="x"/></Apply></Apply>"#
    )
}

#[test]
fn a_chain_of_functions_scoring_cannot_follow_is_a_load_error() {
    // 100 levels score: x + 100.
    let m = Pmml::from_str(&function_chain(100, plus_one)).expect("loads");
    let out = m.evaluate(&[Value::Double(1.0)]).expect("scores");
    assert_eq!(out.get("y"), Some(&Value::Double(101.0)));
    // 1,000 levels: refused at load. Scoring cannot follow more than 256, and a chain of
    // 100,000 used to load and then overflow the stack when the model was dropped.
    let err = Pmml::from_str(&function_chain(1_000, plus_one)).expect_err("too deep");
    assert!(err.to_string().contains("chain of 257 functions"), "{err}");
}

#[test]
fn a_record_needing_more_applications_than_the_budget_is_an_error() {
    // 10 levels: 2^9 (x + 1) = 1024 for x = 1, in a few thousand applications.
    let m = Pmml::from_str(&function_chain(10, doubled)).expect("loads");
    let out = m.evaluate(&[Value::Double(1.0)]).expect("scores");
    assert_eq!(out.get("y"), Some(&Value::Double(1024.0)));
    // 40 levels: about 2^41 applications, hours a record; stopped at the budget.
    let m = Pmml::from_str(&function_chain(40, doubled)).expect("loads");
    let err = m
        .evaluate(&[Value::Double(1.0)])
        .expect_err("over the budget");
    assert!(err.to_string().contains("function applications"), "{err}");
}

#[test]
fn errors_show_values_and_functions_by_their_pmml_names() {
    let doc = common::xy_document(
        r#"<TransformationDictionary>
    <DerivedField name="d" optype="continuous" dataType="double"><Apply function="formatNumber"><FieldRef field="x"/><Constant>%d</Constant></Apply></DerivedField>
    <DerivedField name="s" optype="continuous" dataType="double"><Apply function="x-sin"><Constant dataType="string">abc</Constant></Apply></DerivedField>
  </TransformationDictionary>
  <RegressionModel functionName="regression">
    <MiningSchema><MiningField name="y" usageType="target"/><MiningField name="x"/></MiningSchema>
    <RegressionTable intercept="0"><NumericPredictor name="d" coefficient="1"/></RegressionTable>
  </RegressionModel>"#,
    );
    let m = Pmml::from_str(&doc).expect("loads");
    let err = m.evaluate(&[Value::Double(2.5)]).unwrap_err().to_string();
    assert!(err.contains("got 2.5 (double)"), "{err}");
    assert!(!err.contains("Double("), "{err}");
    let sin = Pmml::from_str(&doc.replace(r#"name="d" coefficient"#, r#"name="s" coefficient"#))
        .expect("loads");
    let err = sin.evaluate(&[Value::Double(1.0)]).unwrap_err().to_string();
    assert!(
        err.contains(r#"function "sin": unexpected argument "abc" (string)"#),
        "{err}"
    );
}
