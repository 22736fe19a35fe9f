//! Wine records and model files: the UCI wine CSV (and headered CSV) as
//! [`WineRecord`]s, model files and directories as [`ModelDescriptor`]s, and
//! records and models the project generates itself for machines without the
//! reference data.
//!
//! ```no_run
//! use std::path::PathBuf;
//! use flowstage_stages::wine::{files, WINE};
//! # fn main() -> Result<(), flowstage_stages::wine::WineError> {
//! let records = files::read_wine_csv("../shared/data/wine/winequality_red.csv")?;
//! let models = files::model_descriptors(&[PathBuf::from("../shared/data/wine")], WINE, false)?;
//! println!("{} records, {} models", records.len(), models.len());
//! # Ok(()) }
//! ```

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use flowstage_model::pb::model_descriptor::MessageContent;
use flowstage_model::pb::{ModelDescriptor, SavedModelArchive, WineRecord};
use flowstage_model::{detect_type, ModelType};
use prost::Message;

use super::{WineError, WINE};

/// The eleven measurements as named in the UCI data set (and the tutorial's
/// PMML files), in [`WineRecord`] field order — the column order of the UCI
/// CSV.
pub const WINE_COLUMNS: [&str; 11] = [
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

/// Sets the `i`-th measurement (in [`WINE_COLUMNS`] order) of a record.
fn set_field(r: &mut WineRecord, i: usize, v: f64) {
    match i {
        0 => r.fixed_acidity = v,
        1 => r.volatile_acidity = v,
        2 => r.citric_acid = v,
        3 => r.residual_sugar = v,
        4 => r.chlorides = v,
        5 => r.free_sulfur_dioxide = v,
        6 => r.total_sulfur_dioxide = v,
        7 => r.density = v,
        8 => r.p_h = v,
        9 => r.sulphates = v,
        _ => r.alcohol = v,
    }
}

/// A column name reduced to lower-case letters and digits: "Fixed Acidity",
/// "fixed_acidity" and `"fixed acidity"` all become `fixedacidity`, "pH" and
/// "p_h" become `ph`.
fn normalize(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// The measurement a (normalized) header name stands for.
fn column_index(normalized: &str) -> Option<usize> {
    match normalized {
        "sulfates" => Some(9),
        n => WINE_COLUMNS.iter().position(|c| normalize(c) == n),
    }
}

/// The largest wine CSV [`read_wine_csv`] reads: 2 GiB, about 20 million
/// records, all held in memory (a device such as `/dev/zero` would otherwise
/// be read until memory runs out).
pub const MAX_CSV_BYTES: u64 = 2 << 30;

/// The longest line of a wine CSV (16 MiB; a wine record takes about 60
/// bytes): a longer one is not CSV, and is refused as soon as it is read.
pub const MAX_CSV_LINE_BYTES: usize = 16 << 20;

/// Reads a wine CSV file into [`WineRecord`]s (dataType [`WINE`], `ts` 0).
///
/// Two layouts are accepted, told apart by the first line:
/// - **UCI** (`winequality-red.csv` as distributed with the tutorial): no
///   header, `;`-separated (`,` also accepted), the eleven measurements in
///   [`WINE_COLUMNS`] order and optionally a twelfth column (the quality
///   label, ignored).
/// - **Headered**: a first line of column names, `;`- or `,`-separated
///   (whichever the header uses), names possibly quoted. Names are matched to
///   the measurements ignoring case, spaces, underscores and punctuation
///   ("fixed acidity", "fixed_acidity", "Fixed Acidity", "pH", …); other
///   columns (quality, an id, …) are ignored; a missing measurement is an
///   error naming it.
///
/// Blank lines are skipped. A row with a missing or non-numeric value, or a
/// wrong number of columns, is a [`WineError::Parse`] naming the file, the
/// 1-based line and the column. An empty file gives no records; one longer
/// than [`MAX_CSV_BYTES`] is refused.
pub fn read_wine_csv(path: impl AsRef<Path>) -> Result<Vec<WineRecord>, WineError> {
    let path = path.as_ref();
    parse_wine_csv(
        &read_at_most(path, MAX_CSV_BYTES, MAX_CSV_LINE_BYTES)?,
        path,
    )
}

/// The whole of `path`, refused when longer than `limit` bytes or when one of
/// its lines is longer than `line_limit` (read at most one chunk past either:
/// a device such as `/dev/zero` reports its size as 0, and is refused after
/// its first `line_limit` bytes).
fn read_at_most(path: &Path, limit: u64, line_limit: usize) -> Result<Vec<u8>, WineError> {
    let io_err = |source| WineError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    let mut text = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    // Where the line being read starts, and its number.
    let (mut line_start, mut line) = (0usize, 1u64);
    loop {
        let n = match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(e)),
        };
        let new = &chunk[..n];
        if let Some(last) = new.iter().rposition(|&b| b == b'\n') {
            line += new.iter().filter(|&&b| b == b'\n').count() as u64;
            line_start = text.len() + last + 1;
        }
        text.extend_from_slice(new);
        if text.len() - line_start > line_limit {
            return Err(WineError::Parse {
                path: path.to_path_buf(),
                line,
                reason: format!("a line longer than {line_limit} bytes: is this a CSV file?"),
            });
        }
        if text.len() as u64 > limit {
            return Err(io_err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("longer than {limit} bytes (the records are held in memory)"),
            )));
        }
    }
    Ok(text)
}

/// Whether a file's first row is data rather than a header: at least half of
/// its cells are numbers. The UCI wine format has no header, and a first row of
/// numbers with one bad cell is still data, so that the bad cell is what gets
/// reported (not a header "missing every column"). An empty row is not data.
///
/// ```
/// use flowstage_stages::wine::files::is_data_row;
/// assert!(is_data_row(["7.4", "0.7", " 0 "]));
/// assert!(is_data_row(["7.4", "", "0"]));
/// assert!(!is_data_row(["fixed acidity", "volatile acidity", "7"]));
/// assert!(!is_data_row::<[&str; 0], _>([]));
/// ```
pub fn is_data_row<I, S>(cells: I) -> bool
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let (mut cells_seen, mut numbers) = (0usize, 0usize);
    for cell in cells {
        cells_seen += 1;
        numbers += usize::from(cell.as_ref().trim().parse::<f64>().is_ok());
    }
    cells_seen > 0 && numbers >= cells_seen.div_ceil(2)
}

/// Parses wine CSV text (see [`read_wine_csv`]); `origin` names the source in
/// errors.
pub fn parse_wine_csv(text: &[u8], origin: &Path) -> Result<Vec<WineRecord>, WineError> {
    let text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
    let parse_err = |line: u64, reason: String| WineError::Parse {
        path: origin.to_path_buf(),
        line,
        reason,
    };
    // The first non-blank line decides the delimiter and whether there is a header.
    let Some((first_no, first)) = text
        .split(|b| *b == b'\n')
        .enumerate()
        .find(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
    else {
        return Ok(Vec::new());
    };
    let first_no = first_no as u64 + 1;
    let delimiter = if first.contains(&b';') {
        b';'
    } else if first.contains(&b',') {
        b','
    } else {
        return Err(parse_err(
            first_no,
            "expected `;`- or `,`-separated columns".into(),
        ));
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text);

    // columns[i] = the CSV column holding measurement i.
    let mut columns: [usize; 11] = std::array::from_fn(|i| i);
    let mut min_width = 11usize;
    let mut max_width = Some(12usize);
    let mut out = Vec::new();
    let mut row = csv::StringRecord::new();
    let mut first_row = true;
    loop {
        let line_of = |r: &csv::StringRecord| r.position().map_or(0, csv::Position::line);
        match reader.read_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(0, csv::Position::line);
                return Err(parse_err(line, format!("malformed CSV: {e}")));
            }
        }
        let line = line_of(&row);
        if row.iter().all(str::is_empty) {
            continue;
        }
        // The UCI layout with a trailing delimiter (`…;9.4;5;`): one empty cell more.
        if max_width.is_some_and(|m| row.len() == m + 1) && row.iter().next_back() == Some("") {
            row.truncate(row.len() - 1);
        }
        // A first row of numbers with a bad cell is data (that cell is reported below).
        if std::mem::take(&mut first_row) && !is_data_row(&row) {
            // A header.
            let mut found: [Option<usize>; 11] = [None; 11];
            for (col, name) in row.iter().enumerate() {
                if let Some(i) = column_index(&normalize(name)) {
                    if let Some(prev) = found[i] {
                        return Err(parse_err(
                            line,
                            format!(
                                "columns {} and {} both name `{}`",
                                prev + 1,
                                col + 1,
                                WINE_COLUMNS[i]
                            ),
                        ));
                    }
                    found[i] = Some(col);
                }
            }
            let missing: Vec<&str> = WINE_COLUMNS
                .iter()
                .zip(found)
                .filter(|(_, f)| f.is_none())
                .map(|(n, _)| *n)
                .collect();
            if !missing.is_empty() {
                return Err(parse_err(
                    line,
                    format!(
                        "the header has no column for {} (expected the UCI names: {})",
                        missing
                            .iter()
                            .map(|m| format!("`{m}`"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        WINE_COLUMNS.join(", ")
                    ),
                ));
            }
            for (i, f) in found.iter().enumerate() {
                columns[i] = f.unwrap_or(i);
            }
            min_width = columns.iter().max().map_or(11, |m| m + 1);
            max_width = None;
            continue;
        }
        if row.len() < min_width || max_width.is_some_and(|m| row.len() > m) {
            let expected = match max_width {
                Some(m) => format!("{min_width} or {m}"),
                None => format!("at least {min_width}"),
            };
            return Err(parse_err(
                line,
                format!("expected {expected} columns, found {}", row.len()),
            ));
        }
        let mut rec = WineRecord {
            data_type: WINE.into(),
            ..Default::default()
        };
        for (i, &col) in columns.iter().enumerate() {
            let cell = row.get(col).unwrap_or("");
            let v: f64 = cell.parse().map_err(|_| {
                let what = if cell.is_empty() {
                    "empty value".to_string()
                } else {
                    format!("`{cell}` is not a number")
                };
                parse_err(
                    line,
                    format!("column {} ({}): {what}", col + 1, WINE_COLUMNS[i]),
                )
            })?;
            if !v.is_finite() {
                return Err(parse_err(
                    line,
                    format!(
                        "column {} ({}): `{cell}` is not finite",
                        col + 1,
                        WINE_COLUMNS[i]
                    ),
                ));
            }
            set_field(&mut rec, i, v);
        }
        out.push(rec);
    }
    Ok(out)
}

/// A model found on disk.
#[derive(Debug)]
struct Found {
    /// Where it is.
    path: PathBuf,
    /// Its path relative to the argument it was found in (the location).
    rel: PathBuf,
    model_type: ModelType,
}

fn is_saved_model(dir: &Path) -> bool {
    dir.join("saved_model.pb").is_file()
}

fn not_a_model(path: &Path, reason: &str) -> WineError {
    WineError::Io {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, reason.to_string()),
    }
}

/// The entries of a directory, sorted by name, hidden ones left out.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, WineError> {
    let io_err = |source| WineError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io_err)? {
        let e = e.map_err(io_err)?;
        if !e.file_name().to_string_lossy().starts_with('.') {
            v.push(e.path());
        }
    }
    v.sort();
    Ok(v)
}

/// The last component of `p` (empty if none).
fn file_name(p: &Path) -> PathBuf {
    p.file_name().map(PathBuf::from).unwrap_or_default()
}

/// A SavedModel directory's location relative to itself given as an argument:
/// its name, with its parent's when the name is a version number (`saved/1`).
fn saved_model_rel(dir: &Path) -> PathBuf {
    let name = file_name(dir);
    let is_version = name
        .to_str()
        .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    match dir.parent().and_then(Path::file_name) {
        Some(parent) if is_version => Path::new(parent).join(name),
        _ => name,
    }
}

/// Finds the models one argument names.
fn find_models(arg: &Path, out: &mut Vec<Found>) -> Result<(), WineError> {
    let meta = std::fs::metadata(arg).map_err(|source| WineError::Io {
        path: arg.to_path_buf(),
        source,
    })?;
    if meta.is_file() {
        let model_type = detect_type(arg).ok_or_else(|| {
            not_a_model(
                arg,
                "not a model file: expected .pmml, .xml, .pb, .onnx or a SavedModel directory",
            )
        })?;
        out.push(Found {
            path: arg.to_path_buf(),
            rel: file_name(arg),
            model_type,
        });
        return Ok(());
    }
    if is_saved_model(arg) {
        // (Canonical, so that `.` or `..` still has a name.)
        let named = arg.canonicalize().unwrap_or_else(|_| arg.to_path_buf());
        out.push(Found {
            rel: saved_model_rel(&named),
            path: named,
            model_type: ModelType::TensorFlowSaved,
        });
        return Ok(());
    }
    let before = out.len();
    for p in sorted_entries(arg)? {
        let rel = file_name(&p);
        if p.is_dir() {
            if is_saved_model(&p) {
                out.push(Found {
                    path: p,
                    rel,
                    model_type: ModelType::TensorFlowSaved,
                });
            } else {
                // Versioned SavedModels one level down (`saved/1`), not deeper.
                for v in sorted_entries(&p)? {
                    if v.is_dir() && is_saved_model(&v) {
                        out.push(Found {
                            rel: rel.join(file_name(&v)),
                            path: v,
                            model_type: ModelType::TensorFlowSaved,
                        });
                    }
                }
            }
        } else if let Some(model_type) = detect_type(&p) {
            out.push(Found {
                path: p,
                rel,
                model_type,
            });
        }
    }
    if out.len() == before {
        return Err(not_a_model(
            arg,
            "no model in this directory (.pmml, .xml, .pb, .onnx files or SavedModel directories)",
        ));
    }
    Ok(())
}

/// The model name of a found model: the file stem (the tutorial's
/// convention), for a SavedModel its directory's name, or its parent's when
/// the directory is a version number (`saved/1` is `saved`).
fn model_name(f: &Found) -> String {
    let p = if f.model_type == ModelType::TensorFlowSaved {
        saved_model_rel(&f.path)
    } else {
        f.path.clone()
    };
    let stem = if f.model_type == ModelType::TensorFlowSaved {
        p.components()
            .next()
            .map(|c| c.as_os_str().to_owned())
            .unwrap_or_default()
    } else {
        p.file_stem().map(|s| s.to_owned()).unwrap_or_default()
    };
    stem.to_string_lossy().into_owned()
}

/// Packs a SavedModel directory into a [`SavedModelArchive`], with
/// flowstage-model's reader (which checks the variables' index).
#[cfg(feature = "tensorflow")]
fn pack_saved_model(dir: &Path) -> Result<SavedModelArchive, WineError> {
    flowstage_model::savedmodel::read_dir(dir).map_err(|e| match e {
        flowstage_model::ModelError::Io { path, source } => WineError::Io { path, source },
        other => WineError::Io {
            path: dir.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        },
    })
}

/// Packs a SavedModel directory into a [`SavedModelArchive`]: `saved_model.pb`,
/// `variables/variables.index` and the data shards in shard order (without
/// feature `tensorflow`, flowstage-model's reader is not compiled in; the
/// server checks the archive when it loads it).
#[cfg(not(feature = "tensorflow"))]
fn pack_saved_model(dir: &Path) -> Result<SavedModelArchive, WineError> {
    let read = |p: PathBuf| {
        std::fs::read(&p).map_err(|source| WineError::Io {
            path: p.clone(),
            source,
        })
    };
    let mut archive = SavedModelArchive {
        saved_model: read(dir.join("saved_model.pb"))?,
        ..Default::default()
    };
    let vars = dir.join("variables");
    let index = vars.join("variables.index");
    if index.is_file() {
        archive.variables_index = read(index)?;
        let shards: Vec<PathBuf> = sorted_entries(&vars)?
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("variables.data-"))
            })
            .collect();
        for s in shards {
            archive.variables_data.push(read(s)?);
        }
    }
    Ok(archive)
}

/// Model descriptors for model files and directories, in argument order.
///
/// - A file is a model by its extension: `.pmml`/`.xml` PMML, `.pb` a
///   TensorFlow frozen graph, `.onnx` ONNX; any other extension is an error.
/// - A directory holding `saved_model.pb` is a TensorFlow SavedModel.
/// - Any other directory is scanned, sorted by name, not recursively: its
///   model files and SavedModel subdirectories, and versioned SavedModels one
///   level down (`saved/1`); other files are skipped. A directory without any
///   model is an error.
///
/// Each descriptor has dataType `data_type`, the file stem as name (the
/// tutorial's convention; a SavedModel is named after its directory, or its
/// parent's when the directory is a version number), and description
/// `from <location>`.
///
/// By value (`by_location` false) a descriptor carries the file's bytes, a
/// SavedModel packed as a [`SavedModelArchive`]. By location it carries the
/// path relative to the directory argument it was found in — the file name
/// (or `saved/1`) for a file (or SavedModel) argument — because a server
/// resolves locations inside its own models directory: point its
/// `--models-dir` at the directory given here.
pub fn model_descriptors(
    paths: &[PathBuf],
    data_type: &str,
    by_location: bool,
) -> Result<Vec<ModelDescriptor>, WineError> {
    scan(paths)?
        .iter()
        .map(|f| descriptor(f, data_type, by_location))
        .collect()
}

/// The models of `paths` as [`model_descriptors`] finds them, by location,
/// each with its descriptor by value beside it, from one scan: what a
/// provider publishing by location checks before it publishes (a server will
/// load the files found here), without a second scan that could find other
/// files.
pub fn model_descriptors_by_location_with_values(
    paths: &[PathBuf],
    data_type: &str,
) -> Result<Vec<(ModelDescriptor, ModelDescriptor)>, WineError> {
    scan(paths)?
        .iter()
        .map(|f| {
            Ok((
                descriptor(f, data_type, true)?,
                descriptor(f, data_type, false)?,
            ))
        })
        .collect()
}

/// The model files and SavedModels of `paths`, in order (see
/// [`model_descriptors`]).
fn scan(paths: &[PathBuf]) -> Result<Vec<Found>, WineError> {
    let mut found = Vec::new();
    for p in paths {
        find_models(p, &mut found)?;
    }
    Ok(found)
}

/// The descriptor of one model found by [`scan`].
fn descriptor(f: &Found, data_type: &str, by_location: bool) -> Result<ModelDescriptor, WineError> {
    // An empty model file is a mistake wherever the model goes (a SavedModel is a directory).
    if f.model_type != ModelType::TensorFlowSaved
        && std::fs::metadata(&f.path).is_ok_and(|m| m.len() == 0)
    {
        return Err(WineError::Io {
            path: f.path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "an empty model file"),
        });
    }
    let location = f.rel.to_string_lossy().replace('\\', "/");
    let content = if by_location {
        MessageContent::Location(location.clone())
    } else if f.model_type == ModelType::TensorFlowSaved {
        MessageContent::Data(pack_saved_model(&f.path)?.encode_to_vec())
    } else {
        MessageContent::Data(std::fs::read(&f.path).map_err(|source| WineError::Io {
            path: f.path.clone(),
            source,
        })?)
    };
    Ok(ModelDescriptor {
        name: model_name(f),
        description: format!("from {location}"),
        data_type: data_type.to_string(),
        modeltype: f.model_type.to_wire(),
        message_content: Some(content),
    })
}

/// A small deterministic PRNG (SplitMix64): reproducible data without a
/// dependency.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

/// Per measurement: mean, standard deviation, minimum, maximum and decimals,
/// as in the UCI red-wine data.
const WINE_STATS: [(f64, f64, f64, f64, i32); 11] = [
    (8.32, 1.74, 4.6, 15.9, 1),              // fixed acidity
    (0.528, 0.179, 0.12, 1.58, 3),           // volatile acidity
    (0.271, 0.195, 0.0, 1.0, 2),             // citric acid
    (2.54, 1.41, 0.9, 15.5, 1),              // residual sugar
    (0.0875, 0.047, 0.012, 0.611, 3),        // chlorides
    (15.9, 10.5, 1.0, 72.0, 0),              // free sulfur dioxide
    (46.5, 32.9, 6.0, 289.0, 0),             // total sulfur dioxide
    (0.99675, 0.00189, 0.99007, 1.00369, 5), // density
    (3.311, 0.154, 2.74, 4.01, 2),           // pH
    (0.658, 0.170, 0.33, 2.0, 2),            // sulphates
    (10.42, 1.07, 8.4, 14.9, 1),             // alcohol
];

/// `n` synthetic wine records (dataType [`WINE`], `ts` 0) from `seed`: each
/// measurement drawn from a normal distribution with the UCI red-wine data's
/// mean and spread, clamped to its observed range and rounded to its
/// precision (total sulfur dioxide is never below free sulfur dioxide). The
/// same `(n, seed)` always gives the same records. For machines without the
/// reference data (`flowstage demo` on a fresh clone) and for tests.
pub fn generated_wine_records(n: usize, seed: u64) -> Vec<WineRecord> {
    let mut rng = SplitMix64(seed);
    (0..n)
        .map(|_| {
            let mut r = WineRecord {
                data_type: WINE.into(),
                ..Default::default()
            };
            let mut v = [0.0f64; 11];
            for (i, (mean, sd, lo, hi, decimals)) in WINE_STATS.iter().enumerate() {
                let x = (mean + sd * rng.normal()).clamp(*lo, *hi);
                let scale = 10f64.powi(*decimals);
                v[i] = (x * scale).round() / scale;
            }
            v[6] = v[6].max(v[5]);
            for (i, x) in v.into_iter().enumerate() {
                set_field(&mut r, i, x);
            }
            r
        })
        .collect()
}

/// The PMML `DataDictionary` fields of the eleven measurements.
fn pmml_data_fields() -> String {
    WINE_COLUMNS
        .iter()
        .map(|c| {
            format!("    <DataField name=\"{c}\" optype=\"continuous\" dataType=\"double\"/>\n")
        })
        .collect()
}

/// An ordinary-least-squares regression of quality on all eleven measurements
/// (the classic coefficients of the UCI red-wine data).
fn linear_regression_pmml() -> String {
    const COEFFICIENTS: [f64; 11] = [
        0.02499, -1.08359, -0.18256, 0.01633, -1.87423, 0.00436, -0.00326, -17.88116, -0.41365,
        0.91633, 0.27620,
    ];
    let mining: String = WINE_COLUMNS
        .iter()
        .map(|c| format!("      <MiningField name=\"{c}\"/>\n"))
        .collect();
    let predictors: String = WINE_COLUMNS
        .iter()
        .zip(COEFFICIENTS)
        .map(|(c, k)| format!("      <NumericPredictor name=\"{c}\" coefficient=\"{k}\"/>\n"))
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4">
  <Header description="Wine quality, linear regression on the 11 UCI measurements (generated by flowstage)"/>
  <DataDictionary numberOfFields="12">
{fields}    <DataField name="quality" optype="continuous" dataType="double"/>
  </DataDictionary>
  <RegressionModel modelName="generatedLinearRegression" functionName="regression">
    <MiningSchema>
{mining}      <MiningField name="quality" usageType="target"/>
    </MiningSchema>
    <RegressionTable intercept="21.96521">
{predictors}    </RegressionTable>
  </RegressionModel>
</PMML>
"#,
        fields = pmml_data_fields()
    )
}

/// A small regression tree on alcohol, sulphates and volatile acidity.
fn tree_regression_pmml() -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4">
  <Header description="Wine quality, a small regression tree (generated by flowstage)"/>
  <DataDictionary numberOfFields="12">
{fields}    <DataField name="quality" optype="continuous" dataType="double"/>
  </DataDictionary>
  <TreeModel modelName="generatedTreeRegression" functionName="regression" splitCharacteristic="binarySplit">
    <MiningSchema>
      <MiningField name="alcohol"/>
      <MiningField name="sulphates"/>
      <MiningField name="volatile acidity"/>
      <MiningField name="quality" usageType="target"/>
    </MiningSchema>
    <Node id="1" score="5.64">
      <True/>
      <Node id="2" score="5.37">
        <SimplePredicate field="alcohol" operator="lessOrEqual" value="10.25"/>
        <Node id="4" score="5.21">
          <SimplePredicate field="sulphates" operator="lessOrEqual" value="0.575"/>
        </Node>
        <Node id="5" score="5.58">
          <True/>
        </Node>
      </Node>
      <Node id="3" score="6.04">
        <True/>
        <Node id="6" score="5.11">
          <SimplePredicate field="volatile acidity" operator="greaterThan" value="0.865"/>
        </Node>
        <Node id="7" score="5.83">
          <SimplePredicate field="sulphates" operator="lessOrEqual" value="0.645"/>
        </Node>
        <Node id="8" score="6.42">
          <True/>
        </Node>
      </Node>
    </Node>
  </TreeModel>
</PMML>
"#,
        fields = pmml_data_fields()
    )
}

/// A small classification tree: quality label 5, 6 or 7 with probabilities.
fn tree_classification_pmml() -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<PMML xmlns="http://www.dmg.org/PMML-4_4" version="4.4">
  <Header description="Wine quality, a small classification tree (generated by flowstage)"/>
  <DataDictionary numberOfFields="12">
{fields}    <DataField name="quality" optype="categorical" dataType="string">
      <Value value="5"/>
      <Value value="6"/>
      <Value value="7"/>
    </DataField>
  </DataDictionary>
  <TreeModel modelName="generatedTreeClassification" functionName="classification" splitCharacteristic="binarySplit">
    <MiningSchema>
      <MiningField name="alcohol"/>
      <MiningField name="sulphates"/>
      <MiningField name="total sulfur dioxide"/>
      <MiningField name="quality" usageType="target"/>
    </MiningSchema>
    <Output>
      <OutputField name="probability(5)" optype="continuous" dataType="double" feature="probability" value="5"/>
      <OutputField name="probability(6)" optype="continuous" dataType="double" feature="probability" value="6"/>
      <OutputField name="probability(7)" optype="continuous" dataType="double" feature="probability" value="7"/>
    </Output>
    <Node id="1" score="5" recordCount="1000">
      <True/>
      <ScoreDistribution value="5" recordCount="430"/>
      <ScoreDistribution value="6" recordCount="400"/>
      <ScoreDistribution value="7" recordCount="170"/>
      <Node id="2" score="5" recordCount="560">
        <SimplePredicate field="alcohol" operator="lessOrEqual" value="10.25"/>
        <ScoreDistribution value="5" recordCount="370"/>
        <ScoreDistribution value="6" recordCount="160"/>
        <ScoreDistribution value="7" recordCount="30"/>
      </Node>
      <Node id="3" score="6" recordCount="300">
        <SimplePredicate field="sulphates" operator="lessOrEqual" value="0.685"/>
        <ScoreDistribution value="5" recordCount="50"/>
        <ScoreDistribution value="6" recordCount="190"/>
        <ScoreDistribution value="7" recordCount="60"/>
      </Node>
      <Node id="4" score="7" recordCount="140">
        <True/>
        <ScoreDistribution value="5" recordCount="10"/>
        <ScoreDistribution value="6" recordCount="50"/>
        <ScoreDistribution value="7" recordCount="80"/>
      </Node>
    </Node>
  </TreeModel>
</PMML>
"#,
        fields = pmml_data_fields()
    )
}

/// PMML models the project generates itself, by value, for dataType
/// [`WINE`]: `generatedLinearRegression` (a RegressionModel over the eleven
/// UCI measurements), `generatedTreeRegression` (a small regression
/// TreeModel) and `generatedTreeClassification` (a classification TreeModel
/// with class probabilities). Their input fields carry the UCI names, so they
/// read [`WineRecord`]s through [`FieldMapping::wine`]. For machines without
/// the tutorial's models (`flowstage demo` on a fresh clone) and for tests.
///
/// [`FieldMapping::wine`]: flowstage_model::FieldMapping::wine
pub fn generated_models() -> Vec<ModelDescriptor> {
    [
        ("generatedLinearRegression", linear_regression_pmml()),
        ("generatedTreeRegression", tree_regression_pmml()),
        ("generatedTreeClassification", tree_classification_pmml()),
    ]
    .into_iter()
    .map(|(name, pmml)| ModelDescriptor {
        name: name.into(),
        description: "generated by flowstage (PMML)".into(),
        data_type: WINE.into(),
        modeltype: ModelType::Pmml.to_wire(),
        message_content: Some(MessageContent::Data(pmml.into_bytes())),
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_device_without_end_is_read_only_up_to_the_limit() {
        let err = read_at_most(Path::new("/dev/zero"), 1 << 20, 1 << 30).unwrap_err();
        assert!(
            err.to_string().contains("longer than 1048576 bytes"),
            "{err}"
        );
        // With the default limits: refused at its first line, 16 MiB in.
        let err = read_wine_csv("/dev/zero").unwrap_err();
        assert!(
            matches!(&err, WineError::Parse { line: 1, reason, .. } if reason.contains("longer than 16777216")),
            "{err}"
        );
    }

    #[test]
    fn a_long_line_is_refused_with_its_number() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("long.csv");
        let mut text = b"7.4;0.7;0;1.9;0.076;11;34;0.9978;3.51;0.56;9.4;5\n\n".repeat(2);
        text.extend(std::iter::repeat_n(b'7', 200_000));
        std::fs::write(&path, &text).expect("write");
        let err = read_at_most(&path, 1 << 30, 100_000).unwrap_err();
        assert!(matches!(&err, WineError::Parse { line: 5, .. }), "{err}");
        // Under the limits, the whole text.
        assert_eq!(read_at_most(&path, 1 << 30, 200_000).expect("reads"), text);
        assert!(read_at_most(&path, 100, 1 << 20).is_err());
    }

    fn parse(text: &str) -> Result<Vec<WineRecord>, WineError> {
        parse_wine_csv(text.as_bytes(), Path::new("t.csv"))
    }

    fn parse_error(text: &str) -> (u64, String) {
        match parse(text) {
            Err(WineError::Parse { line, reason, .. }) => (line, reason),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    const UCI_ROW: &str = "7.4;0.7;0;1.9;0.076;11;34;0.9978;3.51;0.56;9.4";

    fn uci_record() -> WineRecord {
        WineRecord {
            fixed_acidity: 7.4,
            volatile_acidity: 0.7,
            citric_acid: 0.0,
            residual_sugar: 1.9,
            chlorides: 0.076,
            free_sulfur_dioxide: 11.0,
            total_sulfur_dioxide: 34.0,
            density: 0.9978,
            p_h: 3.51,
            sulphates: 0.56,
            alcohol: 9.4,
            data_type: WINE.into(),
            ts: 0,
            ts_micros: 0,
        }
    }

    #[test]
    fn uci_format_with_and_without_quality() {
        let text = format!("{UCI_ROW};5\n\n{UCI_ROW}\r\n");
        let r = parse(&text).expect("parses");
        assert_eq!(r, vec![uci_record(), uci_record()]);
        // Comma-separated, no header.
        let r = parse(&UCI_ROW.replace(';', ",")).expect("parses");
        assert_eq!(r, vec![uci_record()]);
        assert!(parse("").expect("empty").is_empty());
        assert!(parse("\n \n").expect("blank").is_empty());
    }

    #[test]
    fn a_bad_first_row_is_data_with_its_cell_named_and_a_trailing_delimiter_is_accepted() {
        // One bad cell in the first row of a headerless file: that cell is the error.
        let (line, reason) = parse_error(&UCI_ROW.replacen("0.7", "x", 1));
        assert_eq!(line, 1);
        assert!(reason.contains("column 2 (volatile acidity)"), "{reason}");
        let (_, reason) = parse_error(&UCI_ROW.replacen("0.7", "", 1));
        assert!(
            reason.contains("column 2 (volatile acidity): empty value"),
            "{reason}"
        );
        // Rows ending with the delimiter (a common export).
        let text = format!("{UCI_ROW};5;\n{UCI_ROW};\n");
        assert_eq!(
            parse(&text).expect("parses"),
            vec![uci_record(), uci_record()]
        );
    }

    #[test]
    fn headered_csv_by_normalized_names_in_any_order() {
        // Quoted names, another order, an extra column, `,`-separated.
        let text = "\u{feff}\"quality\",\"Alcohol\",\"fixed_acidity\",\"Volatile Acidity\",\"citric acid\",\
                    \"residual-sugar\",\"chlorides\",\"free sulfur dioxide\",\"total_sulfur_dioxide\",\
                    \"density\",\"PH\",\"sulphates\"\n\
                    5,9.4,7.4,0.7,0,1.9,0.076,11,34,0.9978,3.51,0.56\n";
        assert_eq!(parse(text).expect("parses"), vec![uci_record()]);
        // `;`-separated, the UCI header as distributed by UCI.
        let header = WINE_COLUMNS
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(";");
        let text = format!("{header};\"quality\"\n{UCI_ROW};5\n");
        assert_eq!(parse(&text).expect("parses"), vec![uci_record()]);
    }

    #[test]
    fn errors_name_line_and_column() {
        let (line, reason) = parse_error(&format!(
            "{UCI_ROW}\n{UCI_ROW}\n7.4;x;0;1.9;0.076;11;34;0.9978;3.51;0.56;9.4\n"
        ));
        assert_eq!(line, 3);
        assert!(reason.contains("column 2 (volatile acidity)"), "{reason}");
        assert!(reason.contains("`x` is not a number"), "{reason}");

        let (line, reason) = parse_error(&format!("{UCI_ROW}\n7.4;0.7;0\n"));
        assert_eq!(line, 2);
        assert!(
            reason.contains("expected 11 or 12 columns, found 3"),
            "{reason}"
        );

        let (line, reason) = parse_error(&format!("{UCI_ROW}\n{UCI_ROW};5;6\n"));
        assert_eq!(line, 2);
        assert!(reason.contains("found 13"), "{reason}");

        let (line, reason) = parse_error(&format!(
            "{UCI_ROW}\n7.4;;0;1.9;0.076;11;34;0.9978;3.51;0.56;9.4\n"
        ));
        assert_eq!(line, 2);
        assert!(reason.contains("empty value"), "{reason}");

        let (_, reason) = parse_error(&format!(
            "{UCI_ROW}\n7.4;NaN;0;1.9;0.076;11;34;0.9978;3.51;0.56;9.4\n"
        ));
        assert!(reason.contains("not finite"), "{reason}");

        // A header without pH and alcohol.
        let (line, reason) = parse_error(
            "fixed acidity,volatile acidity,citric acid,residual sugar,chlorides,free sulfur dioxide,total sulfur dioxide,density,sulphates\n1,2,3,4,5,6,7,8,9\n",
        );
        assert_eq!(line, 1);
        assert!(
            reason.contains("`pH`") && reason.contains("`alcohol`"),
            "{reason}"
        );

        let (_, reason) = parse_error("a b c\n");
        assert!(reason.contains("separated"), "{reason}");

        // The file's name is in the message.
        let e = parse(&format!("{UCI_ROW}\n1;2\n")).expect_err("fails");
        assert!(e.to_string().starts_with("t.csv:2: "), "{e}");
        let e = read_wine_csv("/nonexistent/wine.csv").expect_err("fails");
        assert!(matches!(e, WineError::Io { .. }), "{e}");
    }

    #[test]
    fn reads_the_tutorial_csv_when_present() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data/wine/winequality_red.csv");
        if !path.exists() {
            eprintln!("SKIPPED: {} is absent", path.display());
            return;
        }
        let r = read_wine_csv(&path).expect("reads");
        assert_eq!(r.len(), 1599);
        assert_eq!(r[0], uci_record());
    }

    #[test]
    fn model_descriptors_of_files_and_directories() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = tmp.path();
        std::fs::write(d.join("b.pmml"), b"<PMML/>").expect("write");
        std::fs::write(d.join("a.onnx"), b"onnx").expect("write");
        std::fs::write(d.join("c.pb"), b"graph").expect("write");
        std::fs::write(d.join("notes.md"), b"skipped").expect("write");
        std::fs::create_dir_all(d.join("saved/1/variables")).expect("mkdir");
        std::fs::write(d.join("saved/1/saved_model.pb"), b"sm").expect("write");
        std::fs::create_dir_all(d.join("other/deeper/2")).expect("mkdir");
        std::fs::write(d.join("other/deeper/2/saved_model.pb"), b"x").expect("write");

        let by_loc = model_descriptors(&[d.to_path_buf()], "wine", true).expect("scan");
        let summary: Vec<_> = by_loc
            .iter()
            .map(|m| {
                let Some(MessageContent::Location(l)) = &m.message_content else {
                    panic!("by location")
                };
                (
                    m.name.as_str(),
                    ModelType::from_wire(m.modeltype),
                    l.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("a", ModelType::Onnx, "a.onnx"),
                ("b", ModelType::Pmml, "b.pmml"),
                ("c", ModelType::TensorFlow, "c.pb"),
                ("saved", ModelType::TensorFlowSaved, "saved/1"),
            ]
        );
        assert!(by_loc.iter().all(|m| m.data_type == "wine"));
        assert_eq!(by_loc[0].description, "from a.onnx");

        // By value; a file and a SavedModel given directly.
        let by_val = model_descriptors(&[d.join("b.pmml"), d.join("saved/1")], "other", false)
            .expect("by value");
        assert_eq!(by_val.len(), 2);
        assert_eq!(
            by_val[0].message_content,
            Some(MessageContent::Data(b"<PMML/>".to_vec()))
        );
        assert_eq!(by_val[0].data_type, "other");
        assert_eq!(by_val[1].name, "saved");
        #[cfg(not(feature = "tensorflow"))]
        {
            let Some(MessageContent::Data(bytes)) = &by_val[1].message_content else {
                panic!("by value")
            };
            let archive = SavedModelArchive::decode(bytes.as_slice()).expect("archive");
            assert_eq!(archive.saved_model, b"sm");
        }
        let loc = model_descriptors(&[d.join("saved/1")], "wine", true).expect("loc");
        assert_eq!(
            loc[0].message_content,
            Some(MessageContent::Location("saved/1".into()))
        );

        // By location with the values beside, from one scan: the same models,
        // each pair the same but for its content.
        let pairs =
            model_descriptors_by_location_with_values(&[d.to_path_buf()], "wine").expect("pairs");
        let (locations, values): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
        assert_eq!(locations, by_loc);
        assert_eq!(
            values,
            model_descriptors(&[d.to_path_buf()], "wine", false).expect("by value")
        );

        // Errors: unknown extension, missing path, a directory without models.
        for bad in [
            d.join("notes.md"),
            d.join("missing.pmml"),
            d.join("saved/1/variables"),
        ] {
            let e =
                model_descriptors(std::slice::from_ref(&bad), "wine", false).expect_err("fails");
            assert!(matches!(e, WineError::Io { .. }), "{bad:?}: {e}");
        }
    }

    #[test]
    fn tutorial_models_when_present() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/wine");
        if !dir.exists() {
            eprintln!("SKIPPED: {} is absent", dir.display());
            return;
        }
        let m = model_descriptors(std::slice::from_ref(&dir), WINE, true).expect("scan");
        let names: Vec<_> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names.len(), 9, "{names:?}");
        assert_eq!(names[0], "optimized_WineQuality");
        assert_eq!(names[1], "saved");
        assert!(names.contains(&"winequalityLinearRegression"));
    }

    #[test]
    fn generated_records_are_deterministic_and_in_range() {
        let a = generated_wine_records(500, 7);
        assert_eq!(a, generated_wine_records(500, 7));
        assert_ne!(a, generated_wine_records(500, 8));
        for r in &a {
            assert_eq!(r.data_type, WINE);
            assert!((4.6..=15.9).contains(&r.fixed_acidity), "{r:?}");
            assert!((0.99..=1.004).contains(&r.density), "{r:?}");
            assert!((2.74..=4.01).contains(&r.p_h), "{r:?}");
            assert!((8.4..=14.9).contains(&r.alcohol), "{r:?}");
            assert!(r.total_sulfur_dioxide >= r.free_sulfur_dioxide, "{r:?}");
        }
        let mean = a.iter().map(|r| r.alcohol).sum::<f64>() / a.len() as f64;
        assert!((10.0..10.9).contains(&mean), "mean alcohol {mean}");
    }

    /// Every generated model loads and scores wine records the way the
    /// serving stage loads them (registry with defaults, wine field mapping).
    #[test]
    fn generated_models_load_and_score() {
        use crate::serving::{ModelLoader, RegistryLoader};
        use flowstage_model::{FieldMapping, ModelRegistry, Record, Value};

        let loader =
            RegistryLoader::new(ModelRegistry::with_defaults()).with_mapping(FieldMapping::wine());
        let models = generated_models();
        assert!(models.len() >= 2);
        let records = generated_wine_records(200, 1);
        for d in &models {
            assert_eq!(d.data_type, WINE);
            let model = loader
                .load(d)
                .unwrap_or_else(|e| panic!("{} loads: {e}", d.name));
            for r in &records {
                let s = model
                    .score(&Record::from(r))
                    .unwrap_or_else(|e| panic!("{} scores: {e}", d.name));
                match &s.value {
                    Value::Number(q) => assert!((3.0..=8.5).contains(q), "{}: {q}", d.name),
                    Value::Text(l) => assert!(["5", "6", "7"].contains(&l.as_str()), "{l}"),
                    Value::Missing => panic!("{}: no score for {r:?}", d.name),
                }
            }
        }
        // The regression is exactly its formula.
        let r = uci_record();
        let lr = loader.load(&models[0]).expect("loads");
        let expected = 21.96521 + 0.02499 * 7.4 - 1.08359 * 0.7 - 0.18256 * 0.0 + 0.01633 * 1.9
            - 1.87423 * 0.076
            + 0.00436 * 11.0
            - 0.00326 * 34.0
            - 17.88116 * 0.9978
            - 0.41365 * 3.51
            + 0.91633 * 0.56
            + 0.27620 * 9.4;
        let Value::Number(q) = lr.score(&Record::from(&r)).expect("scores").value else {
            panic!("a number")
        };
        assert!((q - expected).abs() < 1e-9, "{q} vs {expected}");
        // The classification tree: alcohol 9.4 → node 2, label 5.
        let ct = loader.load(&models[2]).expect("loads");
        let s = ct.score(&Record::from(&r)).expect("scores");
        assert_eq!(s.value, Value::Text("5".into()));
    }
}
