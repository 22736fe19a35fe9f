//! `flowstage score`: CSV in, JSON Lines out.
//!
//! The CSV's first row is the header; header names are the input field names; an empty cell is
//! a missing value, a number is a number, anything else a string. A file whose first row is all
//! numbers, with 11 or 12 columns, is read as the UCI wine format (the provider's input): the
//! columns are the eleven measurements (`fixed acidity` … `alcohol`) and the quality, which a
//! tensor model does not take. The delimiter is `;` when the first line has one, else `,` (or
//! `--delimiter`). A PMML model none of whose inputs is a column is an error; the inputs that
//! are missing are named on stderr. For ONNX and TensorFlow the columns, in order, form the
//! model's one input tensor (float32 `[rows, columns]`, missing →
//! NaN). Each output line has one key per model output: a rank-1 tensor's element as a scalar,
//! a rank-2 tensor's row as a list, a ZipMap as an object with string keys; numbers as JSON
//! numbers (integers for integer tensors), non-finite values as "NaN", "Infinity",
//! "-Infinity"; a missing output as null. A row that cannot be scored gives
//! `{"__error__": "<why>"}` and scoring goes on; a model that cannot be loaded is an error.

use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::rc::Rc;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use flowstage_model::{
    detect_type, DataKind, LoadOptions, Model, ModelError, ModelRegistry, ModelType, OutputValue,
    Record, Score, Value,
};
use flowstage_stages::wine::files::{is_data_row, MAX_CSV_LINE_BYTES, WINE_COLUMNS};
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
    /// The model: a file, or a SavedModel directory (or one holding numbered versions of it:
    /// the latest is scored).
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,
    /// The model type (default: from the extension; a directory with saved_model.pb is a
    /// SavedModel).
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    pub model_type: Option<TypeArg>,
    /// The CSV to score (first row: header naming the inputs; or the UCI wine format: no
    /// header, 11 or 12 numeric columns).
    #[arg(long, value_name = "CSV")]
    pub input: PathBuf,
    /// Where to write the JSON Lines (default: standard output).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The CSV field delimiter, one ASCII character (default: `;` when the first line has
    /// one, else `,`).
    #[arg(long, value_name = "C")]
    pub delimiter: Option<char>,
    /// SavedModel signature (default: the only one, or serving_default).
    #[arg(long)]
    pub signature: Option<String>,
    /// Rows scored per batch (at most 1,000,000).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub batch_size: u32,
}

/// Runs `flowstage score`.
pub fn run(args: &ScoreArgs) -> Result<()> {
    let delimiter =
        match args.delimiter {
            Some(d) => Some(u8::try_from(d).ok().filter(u8::is_ascii).with_context(|| {
                format!("the delimiter must be one ASCII character, not {d:?}")
            })?),
            None => None,
        };
    // A versioned SavedModel given by its parent (`saved` for `saved/1`).
    let model_path = match latest_saved_model_version(&args.model) {
        Some(version) => {
            eprintln!(
                "flowstage score: {} holds SavedModel versions: scoring the latest, {}",
                args.model.display(),
                version.display()
            );
            version
        }
        None => args.model.clone(),
    };
    let model_type = match args.model_type {
        Some(t) => t.into(),
        None => match detect_type(&model_path) {
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
        .load_path(model_type, &model_path, &options)
        .with_context(|| format!("cannot load {model_type} model {}", model_path.display()))?;

    let input = File::open(&args.input)
        .with_context(|| format!("cannot open input {}", args.input.display()))?;
    let breaks = Rc::new(RefCell::new(LineBreaks::default()));
    let mut input = io::BufReader::new(LineReader::new(input, MAX_LINE_BYTES, breaks.clone()));
    let delimiter = match delimiter {
        Some(d) => d,
        None => sniff_delimiter(&mut input)
            .with_context(|| format!("cannot read {}", args.input.display()))?,
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(true)
        .from_reader(input);
    let headers = reader
        .byte_headers()
        .with_context(|| format!("cannot read the header of {}", args.input.display()))?
        .clone();
    // The line of the first row (after any blank lines), should it be data.
    let first_line = breaks
        .borrow_mut()
        .row_line(reader.position().byte(), &headers);
    let first: Vec<String> = headers
        .iter()
        .map(|h| String::from_utf8_lossy(h).trim().to_string())
        .collect();
    if first.is_empty() || first.iter().all(String::is_empty) {
        bail!("{} has no header row", args.input.display());
    }
    // A first row of (mostly) numbers is data: the UCI wine format has no header.
    let headerless = is_data_row(&first);
    let header = if headerless {
        let Some(names) = wine_header(first.len()) else {
            bail!(
                "{}: the first row is numbers, not a header; add a header row naming the \
                 model's inputs (or use the UCI wine format: 11 or 12 columns)",
                args.input.display()
            );
        };
        // A tensor model takes the columns in order: the eleven measurements, not the quality.
        let names = if model.model_type() == ModelType::Pmml {
            names
        } else {
            names[..WINE_COLUMNS.len()].to_vec()
        };
        eprintln!(
            "flowstage score: {} has no header: reading it as the UCI wine format ({})",
            args.input.display(),
            names.join(", ")
        );
        names
    } else {
        first.clone()
    };
    // Columns beyond the header's (the UCI quality, for a tensor model) are left out.
    let width = if headerless { Some(header.len()) } else { None };
    check_inputs(model.as_ref(), &header, &args.input)?;

    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(BufWriter::new(
            File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(BufWriter::new(io::stdout().lock())),
    };
    let writer = JsonWriter::new(model.as_ref());
    let batch_size = args.batch_size as usize;
    let mut batch: Vec<(usize, Result<Record, String>)> = Vec::with_capacity(batch_size);
    let mut tally = Tally::default();
    // The header row, read as data when there is none.
    let mut pending = headerless.then(|| (first_line, csv::ByteRecord::from(first)));
    let mut buf = csv::ByteRecord::new();
    loop {
        let (line, mut row) = match pending.take() {
            Some(first) => first,
            None => match reader.read_byte_record(&mut buf) {
                Ok(true) => {
                    let line = breaks.borrow_mut().row_line(reader.position().byte(), &buf);
                    (line, buf.clone())
                }
                Ok(false) => break,
                Err(e) => {
                    // Reading failed (not one row's content): score what was read, then stop.
                    score_batch(model.as_ref(), &writer, &mut batch, &mut out, &mut tally)?;
                    out.flush().context("cannot write the output")?;
                    let line = breaks.borrow_mut().row_line(reader.position().byte(), &buf);
                    return Err(e).with_context(|| {
                        format!("cannot read {} after line {line}", args.input.display())
                    });
                }
            },
        };
        if let Some(w) = width.filter(|w| row.len() > *w) {
            row.truncate(w);
        }
        batch.push((line, to_record(&header, &row)));
        if batch.len() == batch_size {
            score_batch(model.as_ref(), &writer, &mut batch, &mut out, &mut tally)?;
        }
    }
    score_batch(model.as_ref(), &writer, &mut batch, &mut out, &mut tally)?;
    out.flush().context("cannot write the output")?;
    if let Some(first) = &tally.first_error {
        eprintln!(
            "flowstage score: {} of {} rows could not be scored (first: {first})",
            tally.failed,
            tally.failed + tally.scored
        );
        if tally.scored == 0 {
            bail!("no row of {} could be scored", args.input.display());
        }
    }
    Ok(())
}

/// The highest numbered subdirectory of `dir` holding `saved_model.pb`, as TensorFlow Serving
/// picks a version, when `dir` is a directory without one of its own; `None` otherwise.
fn latest_saved_model_version(dir: &std::path::Path) -> Option<PathBuf> {
    if !dir.is_dir() || dir.join("saved_model.pb").is_file() {
        return None;
    }
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version: u64 = e.file_name().to_str()?.parse().ok()?;
            e.path()
                .join("saved_model.pb")
                .is_file()
                .then(|| (version, e.path()))
        })
        .max_by_key(|(v, _)| *v)
        .map(|(_, p)| p)
}

/// The longest line `score` reads, as for `provide`'s CSV: a file without line breaks (such as
/// `/dev/zero`) would otherwise grow one row until memory runs out.
const MAX_LINE_BYTES: u64 = MAX_CSV_LINE_BYTES as u64;

/// Where the line breaks read so far are, to give each row the line it starts on (blank lines
/// and line breaks inside quoted fields counted).
#[derive(Debug, Default)]
struct LineBreaks {
    /// Line breaks before the offsets asked about so far.
    passed: usize,
    /// Offsets of the line breaks read and not yet passed, in order.
    ahead: VecDeque<u64>,
}

impl LineBreaks {
    /// The 1-based line on which a row read up to byte `end` (its terminator included, if any)
    /// starts. Rows are asked about in order.
    fn row_line(&mut self, end: u64, row: &csv::ByteRecord) -> usize {
        // The row's last byte: its terminator's line break is not one of its own.
        let last = end.saturating_sub(1);
        while self.ahead.front().is_some_and(|&b| b < last) {
            self.ahead.pop_front();
            self.passed += 1;
        }
        let inside = row
            .iter()
            .map(|f| f.iter().filter(|b| **b == b'\n').count())
            .sum::<usize>();
        (self.passed + 1).saturating_sub(inside).max(1)
    }
}

/// A reader that notes where its line breaks are and fails once a line grows longer than its
/// cap.
struct LineReader<R> {
    inner: R,
    /// Bytes read so far.
    offset: u64,
    /// Bytes of the current line read so far.
    line: u64,
    max: u64,
    breaks: Rc<RefCell<LineBreaks>>,
}

impl<R> LineReader<R> {
    fn new(inner: R, max: u64, breaks: Rc<RefCell<LineBreaks>>) -> Self {
        LineReader {
            inner,
            offset: 0,
            line: 0,
            max,
            breaks,
        }
    }
}

impl<R: io::Read> io::Read for LineReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut breaks = self.breaks.borrow_mut();
        let mut start = 0;
        for (i, _) in buf[..n].iter().enumerate().filter(|(_, b)| **b == b'\n') {
            self.line += (i - start) as u64;
            if self.line > self.max {
                break;
            }
            breaks.ahead.push_back(self.offset + i as u64);
            self.line = 0;
            start = i + 1;
        }
        if self.line <= self.max {
            self.line += (n - start) as u64;
        }
        if self.line > self.max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a line longer than {} MiB (is this a CSV file?)",
                    self.max >> 20
                ),
            ));
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// `;` when the first line that is not blank has one, else `,` (as `flowstage provide` reads
/// wine CSVs), without consuming anything.
fn sniff_delimiter(input: &mut impl io::BufRead) -> io::Result<u8> {
    let buf = input.fill_buf()?;
    let line = buf
        .split(|b| *b == b'\n')
        .find(|l| !l.iter().all(u8::is_ascii_whitespace))
        .unwrap_or_default();
    Ok(if line.contains(&b';') { b';' } else { b',' })
}

/// The columns of the UCI wine format with `n` columns: the eleven measurements, then the
/// quality; `None` for another width.
fn wine_header(n: usize) -> Option<Vec<String>> {
    let mut names: Vec<String> = WINE_COLUMNS.iter().map(|c| c.to_string()).collect();
    match n {
        11 => Some(names),
        12 => {
            names.push("quality".into());
            Some(names)
        }
        _ => None,
    }
}

/// A PMML model's inputs (its active fields) against the columns: none of them a column is an
/// error (every score would be of missing values); the missing ones are named on stderr. Tensor
/// models take the columns in order, by position.
fn check_inputs(model: &dyn Model, header: &[String], input: &std::path::Path) -> Result<()> {
    if model.model_type() != ModelType::Pmml || model.inputs().is_empty() {
        return Ok(());
    }
    let columns: HashSet<&str> = header.iter().map(String::as_str).collect();
    let missing: Vec<&str> = model
        .inputs()
        .iter()
        .map(|f| f.name.as_str())
        .filter(|n| !columns.contains(n))
        .collect();
    if missing.len() == model.inputs().len() {
        bail!(
            "none of the model's inputs ({}) is a column of {} (its columns: {}); is the \
             delimiter right (--delimiter)?",
            missing.join(", "),
            input.display(),
            header.join(", ")
        );
    }
    if !missing.is_empty() {
        eprintln!(
            "flowstage score: not columns of {}, so scored as missing: {}",
            input.display(),
            missing.join(", ")
        );
    }
    Ok(())
}

/// Rows scored and rows that failed, with the first failure.
#[derive(Default)]
struct Tally {
    scored: u64,
    failed: u64,
    first_error: Option<String>,
}

impl Tally {
    fn failed(&mut self, why: &str) {
        self.failed += 1;
        self.first_error.get_or_insert_with(|| why.to_string());
    }
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
    batch: &mut Vec<(usize, Result<Record, String>)>,
    out: &mut dyn Write,
    tally: &mut Tally,
) -> Result<()> {
    let records: Vec<Record> = batch
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok().cloned())
        .collect();
    let mut scores = model.score_batch(&records).into_iter();
    for (n, row) in batch.drain(..) {
        let scored = match row {
            Ok(_) => match scores.next() {
                Some(Ok(score)) => Ok(score),
                Some(Err(e)) => Err(e.to_string()),
                None => Err(ModelError::Scoring("no result".into()).to_string()),
            },
            Err(e) => Err(e),
        };
        let line = match scored {
            Ok(score) => {
                tally.scored += 1;
                writer.score(&score)
            }
            Err(why) => {
                let why = format!("line {n}: {why}");
                tally.failed(&why);
                error_line(&why)
            }
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
