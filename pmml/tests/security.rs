//! Hostile and broken documents: each must fail with a clear typed error, never panic,
//! never touch the network. Inputs are generated here (nothing large is committed).

mod common;

use flowstage_pmml::{LoadError, LoadOptions, Pmml};

const HEADER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

fn valid_body(model: &str) -> String {
    common::xy_document(model)
}

#[test]
fn malformed_xml_reports_line() {
    let doc = "<PMML xmlns=\"http://www.dmg.org/PMML-4_4\">\n<DataDictionary>\n<DataField name=\"x\"\n</PMML>";
    match Pmml::from_str(doc) {
        Err(LoadError::Xml { line, message, .. }) => {
            assert!(line >= 3, "line {line}");
            assert!(!message.is_empty());
        }
        other => panic!("expected an XML error, got {other:?}"),
    }
    assert!(matches!(Pmml::from_str(""), Err(LoadError::Xml { .. })));
    assert!(matches!(
        Pmml::from_bytes(&[0xff, 0xfe, 0x00]),
        Err(LoadError::Xml { .. })
    ));
}

#[test]
fn a_truncated_document_is_reported_at_its_end() {
    let whole = valid_body(
        r#"<RegressionModel functionName="regression"><MiningSchema><MiningField name="x"/><MiningField name="y" usageType="target"/></MiningSchema><RegressionTable intercept="1"/></RegressionModel>"#,
    );
    let cut = &whole[..whole.len() - 20];
    let lines = cut.lines().count() as u32;
    match Pmml::from_str(cut) {
        Err(LoadError::Xml { line, message, .. }) => {
            assert_eq!(line, lines, "{message}");
            assert!(message.contains("truncated"), "{message}");
        }
        other => panic!("expected an XML error, got {other:?}"),
    }
    let err = Pmml::from_str(HEADER).unwrap_err();
    assert!(err.to_string().contains("no root element"), "{err}");
}

#[cfg(unix)]
#[test]
fn a_device_without_end_is_read_only_up_to_the_size_limit() {
    let opts = LoadOptions {
        max_bytes: 1 << 20,
        ..LoadOptions::default()
    };
    let err = Pmml::from_path_with("/dev/zero", &opts).unwrap_err();
    assert!(matches!(err, LoadError::TooLarge { .. }), "{err}");
}

#[test]
fn an_element_with_too_many_attributes_is_refused_before_parsing() {
    let attrs: String = (0..100_000).map(|i| format!(" a{i}=\"{i}\"")).collect();
    let doc = valid_body(&format!(
        r#"<RegressionModel functionName="regression"{attrs}><MiningSchema><MiningField name="x"/><MiningField name="y" usageType="target"/></MiningSchema><RegressionTable intercept="1"/></RegressionModel>"#
    ));
    match Pmml::from_str(&doc) {
        Err(LoadError::Xml { line, message, .. }) => {
            assert_eq!(line, 6, "{message}");
            assert!(
                message.contains("<RegressionModel> has more than 1000 attributes (100001)"),
                "{message}"
            );
        }
        other => panic!("expected an XML error, got {other:?}"),
    }
}

#[test]
fn not_pmml_is_rejected() {
    let err = Pmml::from_str("<html><body/></html>").unwrap_err();
    assert!(
        matches!(err, LoadError::NotPmml { ref element, .. } if element == "html"),
        "{err}"
    );
    let err = Pmml::from_str(r#"<PMML xmlns="http://example.com/other"><DataDictionary/></PMML>"#)
        .unwrap_err();
    assert!(matches!(err, LoadError::NotPmml { .. }), "{err}");
    assert!(
        err.to_string()
            .ends_with(r#"<PMML> in namespace "http://example.com/other""#),
        "{err}"
    );
}

#[test]
fn unknown_model_element_is_unsupported() {
    let doc = valid_body(r#"<FancyModel functionName="regression"><MiningSchema/></FancyModel>"#);
    let err = Pmml::from_str(&doc).unwrap_err();
    match &err {
        LoadError::Unsupported { element, line, .. } => {
            assert_eq!(element, "FancyModel");
            assert_eq!(*line, 6);
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    assert!(err.to_string().contains("unsupported"), "{err}");
    // A known but unimplemented model type is also a typed Unsupported error.
    let doc = valid_body(
        r#"<TimeSeriesModel functionName="timeSeries"><MiningSchema/></TimeSeriesModel>"#,
    );
    assert!(matches!(
        Pmml::from_str(&doc),
        Err(LoadError::Unsupported { .. })
    ));
    // No model at all.
    assert!(matches!(
        Pmml::from_str(&valid_body("")),
        Err(LoadError::NoModel)
    ));
}

#[test]
fn billion_laughs_is_refused() {
    let mut doc = String::from(HEADER);
    doc.push_str("\n<!DOCTYPE lolz [\n<!ENTITY lol \"lol\">\n");
    for i in 1..10 {
        let prev = if i == 1 {
            "lol".to_string()
        } else {
            format!("lol{}", i - 1)
        };
        doc.push_str(&format!(
            "<!ENTITY lol{i} \"{}\">\n",
            format!("&{prev};").repeat(10)
        ));
    }
    doc.push_str("]>\n");
    doc.push_str(&valid_body(
        r#"<RegressionModel functionName="regression"><MiningSchema><MiningField name="x"/><MiningField name="y" usageType="target"/></MiningSchema>
<RegressionTable intercept="&lol9;"/></RegressionModel>"#,
    ));
    let err = Pmml::from_str(&doc).unwrap_err();
    assert!(matches!(err, LoadError::Dtd), "{err}");
}

#[test]
fn external_entity_is_refused_without_network() {
    let doc = format!(
        "{HEADER}\n<!DOCTYPE PMML [<!ENTITY xxe SYSTEM \"http://127.0.0.1:9/secret\"> <!ENTITY file SYSTEM \"file:///etc/passwd\">]>\n{}",
        valid_body(
            r#"<RegressionModel functionName="regression" modelName="&xxe;&file;"><MiningSchema><MiningField name="x"/></MiningSchema><RegressionTable intercept="0"/></RegressionModel>"#
        )
    );
    let err = Pmml::from_str(&doc).unwrap_err();
    assert!(matches!(err, LoadError::Dtd), "{err}");
    // Lower-case / oddly spaced doctype is refused too.
    let doc = format!(
        "<!doctype PMML SYSTEM \"http://127.0.0.1:9/pmml.dtd\">{}",
        valid_body("")
    );
    assert!(matches!(Pmml::from_str(&doc), Err(LoadError::Dtd)));
    // An entity reference without any DTD is simply malformed.
    let doc = valid_body(
        r#"<RegressionModel functionName="regression" modelName="&xxe;"><MiningSchema><MiningField name="x"/></MiningSchema><RegressionTable intercept="0"/></RegressionModel>"#,
    );
    assert!(matches!(Pmml::from_str(&doc), Err(LoadError::Xml { .. })));
}

#[test]
fn one_gigabyte_attribute_is_rejected_by_size() {
    // 1 GiB document, almost all of it one attribute value: rejected before any parsing.
    let prefix = br#"<PMML xmlns="http://www.dmg.org/PMML-4_4"><Header description=""#;
    let suffix = br#""/></PMML>"#;
    let total = prefix.len() + (1 << 30) + suffix.len();
    let mut doc = vec![b'a'; total];
    doc[..prefix.len()].copy_from_slice(prefix);
    doc[total - suffix.len()..].copy_from_slice(suffix);
    let err = Pmml::from_bytes(&doc).unwrap_err();
    assert!(
        matches!(err, LoadError::TooLarge { size, limit } if size > limit),
        "{err}"
    );
}

#[test]
fn huge_attribute_over_configured_limit() {
    let opts = LoadOptions {
        max_bytes: 1 << 20,
        ..LoadOptions::default()
    };
    let doc = valid_body(&format!(
        r#"<RegressionModel functionName="regression" modelName="{}"><MiningSchema><MiningField name="x"/></MiningSchema><RegressionTable intercept="0"/></RegressionModel>"#,
        "z".repeat(2 << 20)
    ));
    let err = Pmml::from_bytes_with(doc.as_bytes(), &opts).unwrap_err();
    assert!(matches!(err, LoadError::TooLarge { .. }), "{err}");
    // The same document loads with the default limits.
    assert!(Pmml::from_str(&doc).is_ok());
}

#[test]
fn deep_nesting_is_rejected() {
    let depth = 100_000;
    let mut doc = String::from(r#"<PMML xmlns="http://www.dmg.org/PMML-4_4"><DataDictionary/>"#);
    doc.push_str(&"<Extension>".repeat(depth));
    doc.push_str(&"</Extension>".repeat(depth));
    doc.push_str("</PMML>");
    let err = Pmml::from_str(&doc).unwrap_err();
    assert!(
        matches!(err, LoadError::TooDeep { depth, limit, .. } if depth > limit),
        "{err}"
    );
}

#[test]
fn deep_compound_predicate_within_limits_does_not_overflow() {
    // 120 nested CompoundPredicates inside a tree: within the limits, must compile and run on a
    // 2 MiB stack (debug build); 1,000 of them are a typed TooDeep error.
    let n = 120;
    let mut pred = String::new();
    for _ in 0..n {
        pred.push_str(r#"<CompoundPredicate booleanOperator="and"><True/>"#);
    }
    pred.push_str(r#"<SimplePredicate field="x" operator="greaterThan" value="0"/>"#);
    pred.push_str(&"</CompoundPredicate>".repeat(n));
    let doc = valid_body(&format!(
        r#"<TreeModel functionName="regression"><MiningSchema><MiningField name="x"/><MiningField name="y" usageType="target"/></MiningSchema>
<Node score="0"><True/><Node score="1">{pred}</Node></Node></TreeModel>"#
    ));
    let model = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let m = Pmml::from_str(&doc).map_err(|e| e.to_string())?;
            let a = m.evaluate(&[1.0.into()]).map_err(|e| e.to_string())?;
            let b = m.evaluate(&[(-1.0).into()]).map_err(|e| e.to_string())?;
            Ok::<_, String>((a.values().to_vec(), b.values().to_vec()))
        })
        .expect("spawn")
        .join()
        .expect("no panic");
    let (a, b) = model.expect("loads and evaluates");
    assert_eq!(a, vec![flowstage_pmml::Value::Double(1.0)]);
    assert_eq!(b, vec![flowstage_pmml::Value::Missing]);

    let n = 1_000;
    let mut pred = String::new();
    for _ in 0..n {
        pred.push_str(r#"<CompoundPredicate booleanOperator="or"><False/>"#);
    }
    pred.push_str("<True/>");
    pred.push_str(&"</CompoundPredicate>".repeat(n));
    let doc = valid_body(&format!(
        r#"<TreeModel functionName="regression"><MiningSchema><MiningField name="x"/></MiningSchema><Node score="0">{pred}</Node></TreeModel>"#
    ));
    let err = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || Pmml::from_str(&doc).map(|_| ()).map_err(|e| e.to_string()))
        .expect("spawn")
        .join()
        .expect("no panic")
        .unwrap_err();
    assert!(err.contains("nested"), "{err}");
}

#[test]
fn errors_name_element_attribute_and_line() {
    let doc = valid_body(
        r#"<RegressionModel functionName="regression">
    <MiningSchema><MiningField name="x"/><MiningField name="y" usageType="target"/></MiningSchema>
    <RegressionTable intercept="abc"/>
  </RegressionModel>"#,
    );
    match Pmml::from_str(&doc).unwrap_err() {
        LoadError::InvalidAttribute {
            element,
            attribute,
            value,
            line,
            ..
        } => {
            assert_eq!(
                (element.as_str(), attribute.as_str(), value.as_str(), line),
                ("RegressionTable", "intercept", "abc", 8)
            );
        }
        other => panic!("{other:?}"),
    }
    let doc = valid_body(
        r#"<RegressionModel functionName="regression">
    <MiningSchema><MiningField name="nope"/></MiningSchema>
    <RegressionTable intercept="0"/>
  </RegressionModel>"#,
    );
    match Pmml::from_str(&doc).unwrap_err() {
        LoadError::UnknownField { field, line, .. } => {
            assert_eq!((field.as_str(), line), ("nope", 7))
        }
        other => panic!("{other:?}"),
    }
    let doc = valid_body(
        r#"<MiningModel functionName="regression">
    <MiningSchema><MiningField name="x"/></MiningSchema>
    <Segmentation multipleModelMethod="randomPick"><Segment><True/><RegressionModel functionName="regression"><MiningSchema><MiningField name="x"/></MiningSchema><RegressionTable intercept="1"/></RegressionModel></Segment></Segmentation>
  </MiningModel>"#,
    );
    match Pmml::from_str(&doc).unwrap_err() {
        LoadError::Unsupported {
            element,
            attribute,
            line,
            ..
        } => {
            assert_eq!(element, "Segmentation");
            assert_eq!(attribute.as_deref(), Some("multipleModelMethod"));
            assert_eq!(line, 8);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn pmml3_namespace_is_accepted() {
    let doc = valid_body(
        r#"<RegressionModel functionName="regression"><MiningSchema><MiningField name="x"/><MiningField name="y" usageType="target"/></MiningSchema><RegressionTable intercept="1"><NumericPredictor name="x" coefficient="2"/></RegressionTable></RegressionModel>"#,
    )
    .replace("PMML-4_4", "PMML-3_2");
    let m = Pmml::from_str(&doc).expect("PMML 3.2 loads");
    assert_eq!(
        m.evaluate(&[2.0.into()]).expect("evaluates").get("y"),
        Some(&flowstage_pmml::Value::Double(5.0))
    );
}

#[test]
fn long_derived_field_chain_is_an_error_not_a_crash() {
    // 5,000 derived fields each computed from the previous one.
    let mut td = String::from("<TransformationDictionary>");
    td.push_str(r#"<DerivedField name="d0" optype="continuous" dataType="double"><FieldRef field="x"/></DerivedField>"#);
    for i in 1..5_000 {
        td.push_str(&format!(
            r#"<DerivedField name="d{i}" optype="continuous" dataType="double"><Apply function="+"><FieldRef field="d{}"/><Constant>1</Constant></Apply></DerivedField>"#,
            i - 1
        ));
    }
    td.push_str("</TransformationDictionary>");
    let doc = valid_body(&format!(
        r#"{td}<RegressionModel functionName="regression"><MiningSchema><MiningField name="x"/><MiningField name="y" usageType="target"/></MiningSchema>
<RegressionTable intercept="0"><NumericPredictor name="d4999" coefficient="1"/></RegressionTable></RegressionModel>"#
    ));
    let model = Pmml::from_str(&doc).expect("loads");
    let err = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            model
                .evaluate(&[1.0.into()])
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .expect("spawn")
        .join()
        .expect("no panic or overflow")
        .unwrap_err();
    assert!(err.contains("levels deep"), "{err}");

    // A short chain evaluates normally.
    let doc = valid_body(
        r#"<TransformationDictionary><DerivedField name="d0" optype="continuous" dataType="double"><FieldRef field="x"/></DerivedField>
<DerivedField name="d1" optype="continuous" dataType="double"><Apply function="*"><FieldRef field="d0"/><Constant>3</Constant></Apply></DerivedField></TransformationDictionary>
<RegressionModel functionName="regression"><MiningSchema><MiningField name="x"/><MiningField name="y" usageType="target"/></MiningSchema>
<RegressionTable intercept="0.5"><NumericPredictor name="d1" coefficient="2"/></RegressionTable></RegressionModel>"#,
    );
    let out = Pmml::from_str(&doc)
        .expect("loads")
        .evaluate(&[2.0.into()])
        .expect("evaluates");
    assert_eq!(out.get("y"), Some(&flowstage_pmml::Value::Double(12.5)));
}

#[test]
fn deep_expressions_in_chained_fields_do_not_overflow() {
    // 60 chained derived fields, each a 100-deep nest of Apply: within the load-time limits, so
    // scoring must bound its own recursion.
    let mut td = String::from("<TransformationDictionary>");
    td.push_str(r#"<DerivedField name="d0" optype="continuous" dataType="double"><FieldRef field="x"/></DerivedField>"#);
    for i in 1..60 {
        let mut e = format!(r#"<FieldRef field="d{}"/>"#, i - 1);
        for _ in 0..100 {
            e = format!(r#"<Apply function="abs">{e}</Apply>"#);
        }
        td.push_str(&format!(
            r#"<DerivedField name="d{i}" optype="continuous" dataType="double">{e}</DerivedField>"#
        ));
    }
    td.push_str("</TransformationDictionary>");
    let doc = valid_body(&format!(
        r#"{td}<RegressionModel functionName="regression"><MiningSchema><MiningField name="x"/><MiningField name="y" usageType="target"/></MiningSchema>
<RegressionTable intercept="0"><NumericPredictor name="d59" coefficient="1"/></RegressionTable></RegressionModel>"#
    ));
    let model = Pmml::from_str(&doc).expect("loads");
    let err = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            model
                .evaluate(&[1.0.into()])
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
        .expect("spawn")
        .join()
        .expect("no panic or overflow")
        .unwrap_err();
    assert!(err.contains("deep"), "{err}");
}
