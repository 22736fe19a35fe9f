//! The body of the `pmml` fuzz target, shared with `pmml/tests/fuzz_regressions.rs` (which
//! replays the crash inputs kept in `pmml/tests/fixtures/fuzz/pmml/`).

use flowstage_pmml::{DataType, FieldInfo, LoadOptions, Pmml, Value};

/// One input value: `variant` 0 a typical value, 1 missing, 2+ taken from the input bytes.
fn value(f: &FieldInfo, i: usize, variant: usize, data: &[u8]) -> Value {
    let b = data
        .get((i * 7 + variant) % data.len().max(1))
        .copied()
        .unwrap_or(0);
    match variant {
        0 if !f.categories.is_empty() => f.categories[i % f.categories.len()].clone(),
        0 => match f.data_type {
            DataType::String => Value::String(format!("v{i}")),
            DataType::Integer => Value::Integer(i as i64),
            DataType::Boolean => Value::Boolean(i.is_multiple_of(2)),
            DataType::Float => Value::Float(0.5 + i as f32),
            _ => Value::Double(0.5 + i as f64),
        },
        1 => Value::Missing,
        _ => match b % 10 {
            0 => Value::Double(f64::NAN),
            1 => Value::Double(f64::NEG_INFINITY),
            2 => Value::Double(1e308),
            3 => Value::Integer(i64::MIN),
            4 => Value::String(String::from_utf8_lossy(&data[..data.len().min(8)]).into()),
            5 => Value::Boolean(b & 16 != 0),
            6 if !f.categories.is_empty() => {
                f.categories[usize::from(b) % f.categories.len()].clone()
            }
            7 => Value::Float(f32::from(b) - 100.0),
            _ => Value::Double(f64::from(b) / 7.0 - 10.0),
        },
    }
}

/// Loads `data` as a PMML document (with `ModelVerification` checked when the first byte is
/// odd) and, when it loads, evaluates a few records built from its input fields. Errors are
/// fine; a panic, hang or OOM is a finding.
pub fn run(data: &[u8]) {
    let opts = LoadOptions {
        verify: data.first().is_some_and(|b| b & 1 == 1),
        ..LoadOptions::default()
    };
    let Ok(model) = Pmml::from_bytes_with(data, &opts) else {
        return;
    };
    let fields = model.input_fields();
    for variant in 0..4 {
        let inputs: Vec<Value> = fields
            .iter()
            .enumerate()
            .map(|(i, f)| value(f, i, variant, data))
            .collect();
        let _ = model.evaluate(&inputs);
    }
    // A record of the wrong length is an error, not a panic.
    let _ = model.evaluate(&[Value::Double(1.0)]);
}
