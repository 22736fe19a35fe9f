//! `flowstage score`: CSV in, JSON Lines out.
//!
//! The CSV's first row is the header; header names are the input field names; an empty cell is
//! a missing value, a number is a number, anything else a string. For ONNX and TensorFlow the
//! columns, in order, form the model's one input tensor (float32 `[rows, columns]`, missing →
//! NaN). Each output line has one key per model output: a rank-1 tensor's element as a scalar,
//! a rank-2 tensor's row as a list, a ZipMap as an object with string keys; numbers as JSON
//! numbers (integers for integer tensors), non-finite values as "NaN", "Infinity",
//! "-Infinity"; a missing output as null. A row that cannot be scored gives
//! `{"__error__": "<why>"}` and scoring goes on; a model that cannot be loaded is an error.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use flowstage_model::{
    detect_type, DataKind, LoadOptions, Model, ModelError, ModelRegistry, ModelType, OutputValue,
    Record, Score, Value,
};
use serde_json::{Map, Number, Value as Json};

/// Model types on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TypeArg {
    /// PMML (.pmml, .xml).
    Pmml,
    /// ONNX (.onnx).
    Onnx,
    /// TensorFlow frozen graph (.pb).
    Tensorflow,
    /// TensorFlow SavedModel (a directory holding saved_model.pb).
    TensorflowSaved,
}

impl From<TypeArg> for ModelType {
    fn from(t: TypeArg) -> Self {
        match t {
            TypeArg::Pmml => ModelType::Pmml,
            TypeArg::Onnx => ModelType::Onnx,
            TypeArg::Tensorflow => ModelType::TensorFlow,
            TypeArg::TensorflowSaved => ModelType::TensorFlowSaved,
        }
    }
}

/// Arguments of `flowstage score`.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// The model: a file, or a SavedModel directory.
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,
    /// The model type (default: from the extension; a directory with saved_model.pb is a
    /// SavedModel).
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    pub model_type: Option<TypeArg>,
    /// The CSV to score (first row: header).
    #[arg(long, value_name = "CSV")]
    pub input: PathBuf,
    /// Where to write the JSON Lines (default: standard output).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The CSV field delimiter (one ASCII character).
    #[arg(long, default_value_t = ',', value_name = "C")]
    pub delimiter: char,
    /// SavedModel signature (default: the only one, or serving_default).
    #[arg(long)]
    pub signature: Option<String>,
    /// Rows scored per batch.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
}

/// Runs `flowstage score`.
pub fn run(args: &ScoreArgs) -> Result<()> {
    let delimiter = u8::try_from(args.delimiter)
        .ok()
        .filter(|d| d.is_ascii())
        .with_context(|| {
            format!(
                "the delimiter must be one ASCII character, not {:?}",
                args.delimiter
            )
        })?;
    let model_type = match args.model_type {
        Some(t) => t.into(),
        None => match detect_type(&args.model) {
            Some(t) => t,
            None => bail!(
                "cannot tell the type of model {} from its name; use --type",
                args.model.display()
            ),
        },
    };
    let options = LoadOptions {
        signature: args.signature.clone(),
        ..LoadOptions::default()
    };
    let model = ModelRegistry::with_defaults()
        .load_path(model_type, &args.model, &options)
        .with_context(|| format!("cannot load {model_type} model {}", args.model.display()))?;

    let input = File::open(&args.input)
        .with_context(|| format!("cannot open input {}", args.input.display()))?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(true)
        .from_reader(io::BufReader::new(input));
    let header: Vec<String> = reader
        .byte_headers()
        .with_context(|| format!("cannot read the header of {}", args.input.display()))?
        .iter()
        .map(|h| String::from_utf8_lossy(h).trim().to_string())
        .collect();
    if header.is_empty() || header.iter().all(String::is_empty) {
        bail!("{} has no header row", args.input.display());
    }

    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(BufWriter::new(
            File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(BufWriter::new(io::stdout().lock())),
    };
    let writer = JsonWriter::new(model.as_ref());
    let batch_size = args.batch_size as usize;
    let mut batch: Vec<Result<Record, String>> = Vec::with_capacity(batch_size);
    for (i, row) in reader.byte_records().enumerate() {
        let line = i + 2;
        batch.push(match row {
            Ok(row) => to_record(&header, &row).map_err(|e| format!("line {line}: {e}")),
            Err(e) => Err(format!("line {line}: {e}")),
        });
        if batch.len() == batch_size {
            score_batch(model.as_ref(), &writer, &mut batch, &mut out)?;
        }
    }
    score_batch(model.as_ref(), &writer, &mut batch, &mut out)?;
    out.flush().context("cannot write the output")?;
    Ok(())
}

/// A CSV row as a record.
fn to_record(header: &[String], row: &csv::ByteRecord) -> Result<Record, String> {
    if row.len() != header.len() {
        return Err(format!(
            "row has {} fields, the header has {}",
            row.len(),
            header.len()
        ));
    }
    let mut record = Record::with_capacity(header.len());
    for (name, cell) in header.iter().zip(row.iter()) {
        let cell = std::str::from_utf8(cell)
            .map_err(|_| format!("field {name:?} is not valid UTF-8"))?
            .trim();
        let value = if cell.is_empty() {
            Value::Missing
        } else {
            match cell.parse::<f64>() {
                Ok(v) => Value::Number(v),
                Err(_) => Value::Text(cell.to_string()),
            }
        };
        record.insert(name.clone(), value);
    }
    Ok(record)
}

fn score_batch(
    model: &dyn Model,
    writer: &JsonWriter,
    batch: &mut Vec<Result<Record, String>>,
    out: &mut dyn Write,
) -> Result<()> {
    let records: Vec<Record> = batch
        .iter()
        .filter_map(|r| r.as_ref().ok().cloned())
        .collect();
    let mut scores = model.score_batch(&records).into_iter();
    for row in batch.drain(..) {
        let line = match row {
            Ok(_) => match scores.next() {
                Some(Ok(score)) => writer.score(&score),
                Some(Err(e)) => error_line(&e.to_string()),
                None => error_line(&ModelError::Scoring("no result".into()).to_string()),
            },
            Err(e) => error_line(&e),
        };
        serde_json::to_writer(&mut *out, &line).context("cannot write the output")?;
        out.write_all(b"\n").context("cannot write the output")?;
    }
    Ok(())
}

fn error_line(why: &str) -> Json {
    let mut m = Map::new();
    m.insert("__error__".into(), Json::String(why.to_string()));
    Json::Object(m)
}

/// Turns scores into JSON objects.
struct JsonWriter {
    integer_outputs: HashSet<String>,
}

impl JsonWriter {
    fn new(model: &dyn Model) -> Self {
        JsonWriter {
            integer_outputs: model
                .outputs()
                .iter()
                .filter(|o| o.kind == DataKind::Int64)
                .map(|o| o.name.clone())
                .collect(),
        }
    }

    fn score(&self, score: &Score) -> Json {
        let mut m = Map::new();
        for (name, value) in &score.outputs {
            let int = self.integer_outputs.contains(name);
            m.insert(name.clone(), output_json(value, int));
        }
        Json::Object(m)
    }
}

/// A number as JSON: integral values of integer outputs as integers, non-finite as strings.
fn number(v: f64, integer: bool) -> Json {
    if v.is_nan() {
        return Json::String("NaN".into());
    }
    if v.is_infinite() {
        return Json::String(if v > 0.0 { "Infinity" } else { "-Infinity" }.into());
    }
    if integer && v.fract() == 0.0 && v.abs() < 9.0e15 {
        return Json::Number(Number::from(v as i64));
    }
    Number::from_f64(v).map_or(Json::Null, Json::Number)
}

fn output_json(value: &OutputValue, integer: bool) -> Json {
    match value {
        OutputValue::Number(v) => number(*v, integer),
        OutputValue::Text(t) => Json::String(t.clone()),
        OutputValue::Numbers(vs) => Json::Array(vs.iter().map(|v| number(*v, integer)).collect()),
        OutputValue::Texts(ts) => Json::Array(ts.iter().cloned().map(Json::String).collect()),
        OutputValue::Map(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), number(*v, false)))
                .collect(),
        ),
        OutputValue::Missing => Json::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_render_as_specified() {
        assert_eq!(number(f64::NAN, false), Json::String("NaN".into()));
        assert_eq!(
            number(f64::INFINITY, false),
            Json::String("Infinity".into())
        );
        assert_eq!(
            number(f64::NEG_INFINITY, true),
            Json::String("-Infinity".into())
        );
        assert_eq!(number(3.0, true).to_string(), "3");
        assert_eq!(number(3.0, false).to_string(), "3.0");
        assert_eq!(number(0.25, true).to_string(), "0.25");
    }

    #[test]
    fn cells_become_values() {
        let header = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let row = csv::ByteRecord::from(vec!["1.5", "", "red"]);
        let r = to_record(&header, &row).expect("record");
        assert_eq!(r.get("a"), Some(&Value::Number(1.5)));
        assert_eq!(r.get("b"), Some(&Value::Missing));
        assert_eq!(r.get("c"), Some(&Value::Text("red".into())));
        let short = csv::ByteRecord::from(vec!["1"]);
        assert!(to_record(&header, &short).is_err());
    }

    #[test]
    fn maps_and_lists() {
        let m = output_json(
            &OutputValue::Map(vec![("0".into(), 0.25), ("1".into(), 0.75)]),
            false,
        );
        assert_eq!(m.to_string(), r#"{"0":0.25,"1":0.75}"#);
        let l = output_json(&OutputValue::Numbers(vec![1.0, f64::NAN]), false);
        assert_eq!(l.to_string(), r#"[1.0,"NaN"]"#);
        assert_eq!(output_json(&OutputValue::Missing, false), Json::Null);
    }
}
