//! Helpers shared by the integration tests: comparing results with JPMML's recorded outputs, and
//! small documents.

#![allow(dead_code)]

pub mod wine;

use flowstage_pmml::Value;
use serde_json::Value as Json;

/// Relative tolerance for doubles.
pub const REL_TOL: f64 = 1e-9;

/// Compares one of our values with JPMML's JSON value; `Err` describes the mismatch.
pub fn compare(ours: &Value, expected: &Json) -> Result<(), String> {
    match (ours, expected) {
        (Value::Missing, Json::Null) => Ok(()),
        (Value::Missing, e) => Err(format!("missing, expected {e}")),
        (o, Json::Null) => Err(format!("{o:?}, expected missing")),
        (o, Json::Number(n)) => {
            let e = n.as_f64().ok_or("bad number")?;
            let x = match o {
                Value::Double(v) => *v,
                Value::Float(v) => f64::from(*v),
                Value::Integer(v) => *v as f64,
                Value::String(s) => s
                    .parse::<f64>()
                    .map_err(|_| format!("{s:?}, expected number {e}"))?,
                Value::Boolean(_) | Value::Missing => {
                    return Err(format!("{o:?}, expected number {e}"))
                }
            };
            if x == e || (x.is_nan() && e.is_nan()) {
                return Ok(());
            }
            let diff = (x - e).abs();
            let scale = x.abs().max(e.abs());
            if diff <= REL_TOL * scale || diff <= 1e-300 {
                Ok(())
            } else {
                Err(format!(
                    "{x:?}, expected {e:?} (relative difference {:e})",
                    diff / scale
                ))
            }
        }
        (o, Json::String(s)) => {
            let text = match o {
                Value::String(v) => v.clone(),
                other => other.to_string(),
            };
            if &text == s {
                Ok(())
            } else {
                // JPMML may render numeric labels as numbers; accept numerically equal labels.
                match (text.parse::<f64>(), s.parse::<f64>()) {
                    (Ok(a), Ok(b)) if a == b && !matches!(o, Value::String(_)) => Ok(()),
                    _ => Err(format!("{o:?}, expected {s:?}")),
                }
            }
        }
        (Value::Boolean(b), Json::Bool(e)) if b == e => Ok(()),
        (o, e) => Err(format!("{o:?}, expected {e}")),
    }
}

/// A PMML 4.4 document with the continuous double fields `x` and `y`, and `body` (a
/// TransformationDictionary, a model) after its DataDictionary.
pub fn xy_document(body: &str) -> String {
    format!(
        r#"<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4">
  <DataDictionary>
    <DataField name="x" optype="continuous" dataType="double"/>
    <DataField name="y" optype="continuous" dataType="double"/>
  </DataDictionary>
  {body}
</PMML>"#
    )
}
