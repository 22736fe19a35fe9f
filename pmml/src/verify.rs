//! ModelVerification: score the embedded records and compare with the expected values.

use crate::error::LoadError;
use crate::value::{parse_f64, Value};
use crate::xml::El;
use crate::Evaluator;
use roxmltree::Node;

pub(crate) struct Field {
    name: String,
    precision: f64,
    zero_threshold: f64,
}

pub(crate) struct Records {
    fields: Vec<Field>,
    /// Per record, per field: the cell text (None = absent/empty).
    rows: Vec<Vec<Option<String>>>,
}

pub(crate) fn parse(mv: Node) -> Result<Records, LoadError> {
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for vf in mv
        .req_kid("VerificationFields")?
        .kids_named("VerificationField")
    {
        let name = vf.req_attr("field")?;
        let column = vf.attr("column").unwrap_or(name);
        columns.push(column.rsplit(':').next().unwrap_or(column).to_string());
        fields.push(Field {
            name: name.to_string(),
            precision: vf.f64_attr("precision")?.unwrap_or(1e-6),
            zero_threshold: vf.f64_attr("zeroThreshold")?.unwrap_or(1e-16),
        });
    }
    let table = mv
        .kid("InlineTable")
        .ok_or_else(|| mv.unsupported("ModelVerification without an InlineTable"))?;
    let mut rows = Vec::new();
    for row in table.kids_named("row") {
        let cells = columns
            .iter()
            .map(|c| {
                row.children()
                    .find(|x| x.is_element() && x.tag_name().name() == c)
                    .and_then(|x| x.text())
                    .map(str::to_string)
                    .filter(|t| !t.is_empty())
            })
            .collect();
        rows.push(cells);
    }
    Ok(Records { fields, rows })
}

fn matches(expected: &str, actual: &Value, f: &Field) -> bool {
    match (parse_f64(expected), actual.as_f64()) {
        (Some(e), Some(a)) => {
            if e.abs() <= f.zero_threshold {
                a.abs() <= f.zero_threshold
            } else {
                (a - e).abs() <= f.precision * e.abs()
            }
        }
        _ => actual.to_string() == expected,
    }
}

pub(crate) fn check(ev: &Evaluator, records: &Records) -> Result<(), LoadError> {
    let inputs: Vec<Option<usize>> = ev
        .input_fields()
        .iter()
        .map(|i| records.fields.iter().position(|f| f.name == i.name))
        .collect();
    for (r, row) in records.rows.iter().enumerate() {
        let args: Vec<Value> = inputs
            .iter()
            .map(|i| {
                i.and_then(|i| row[i].clone())
                    .map_or(Value::Missing, Value::String)
            })
            .collect();
        let out = ev.evaluate(&args).map_err(|e| LoadError::Verification {
            record: r,
            field: String::new(),
            expected: "a result".into(),
            actual: e.to_string(),
        })?;
        for (f, cell) in records.fields.iter().zip(row) {
            let Some(actual) = out.get(&f.name) else {
                continue;
            };
            let ok = match cell {
                None => actual.is_missing(),
                Some(e) => matches(e, actual, f),
            };
            if !ok {
                return Err(LoadError::Verification {
                    record: r,
                    field: f.name.clone(),
                    expected: cell.clone().unwrap_or_else(|| "missing".into()),
                    actual: actual.shown().to_string(),
                });
            }
        }
    }
    Ok(())
}
