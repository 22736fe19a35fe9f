//! Batch scores kept column by column: [`ScoreBatch`], what [`crate::Model::score_columnar`]
//! returns.
//!
//! A tensor model produces one buffer per output for a whole batch; a [`ScoreBatch`] keeps them
//! that way and builds a record's values only when asked, borrowed ([`OutputRef`]) or owned
//! ([`ScoreBatch::score`], [`ScoreBatch::into_scores`]). Output names are stored once per
//! batch, not once per record.

use std::sync::Arc;

use crate::error::ModelError;
use crate::record::Value;
use crate::score::{argmax, OutputValue, Score};

/// The class labels of a classifier output computed natively (an index per row into them).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Classes {
    /// Integer labels.
    Ints(Vec<i64>),
    /// String labels.
    Strings(Vec<String>),
}

impl Classes {
    pub(crate) fn len(&self) -> usize {
        match self {
            Classes::Ints(v) => v.len(),
            Classes::Strings(v) => v.len(),
        }
    }
}

/// The values of one output for every scored row.
#[derive(Clone, Debug)]
pub(crate) enum ColumnData {
    /// `width` numbers per row.
    Numbers(Vec<f64>),
    /// `width` strings per row.
    Texts(Vec<String>),
    /// Label → probability maps: `labels.len()` probabilities per row.
    Map {
        labels: Arc<[String]>,
        values: Vec<f64>,
    },
    /// One class label per row, as an index into `classes` (`as_f32`: integer labels pass
    /// through float32, as after an ONNX `Cast` to float).
    Labels {
        classes: Arc<Classes>,
        index: Vec<u32>,
        as_f32: bool,
    },
}

/// One output of a batch.
#[derive(Clone, Debug)]
pub(crate) struct Column {
    pub name: Arc<str>,
    /// Values per row (1 for labels).
    pub width: usize,
    /// A rank-1 output: one value per row, presented as a number or a text.
    pub scalar: bool,
    pub data: ColumnData,
}

impl Column {
    fn get(&self, row: usize) -> OutputRef<'_> {
        let w = self.width;
        let range = row * w..(row + 1) * w;
        match &self.data {
            ColumnData::Numbers(v) => match v.get(range) {
                Some(s) if self.scalar && w == 1 => OutputRef::Number(s[0]),
                Some(s) => OutputRef::Numbers(s),
                None => OutputRef::Missing,
            },
            ColumnData::Texts(v) => match v.get(range) {
                Some(s) if self.scalar && w == 1 => OutputRef::Text(&s[0]),
                Some(s) => OutputRef::Texts(s),
                None => OutputRef::Missing,
            },
            ColumnData::Map { labels, values } => {
                let w = labels.len();
                match values.get(row * w..(row + 1) * w) {
                    Some(s) => OutputRef::Map(MapRef(MapRepr::Split(labels, s))),
                    None => OutputRef::Missing,
                }
            }
            ColumnData::Labels {
                classes,
                index,
                as_f32,
            } => {
                let Some(&i) = index.get(row) else {
                    return OutputRef::Missing;
                };
                match classes.as_ref() {
                    Classes::Ints(c) => match c.get(i as usize) {
                        Some(&x) if *as_f32 => OutputRef::Number(f64::from(x as f32)),
                        Some(&x) => OutputRef::Number(x as f64),
                        None => OutputRef::Missing,
                    },
                    Classes::Strings(c) => c
                        .get(i as usize)
                        .map_or(OutputRef::Missing, |s| OutputRef::Text(s)),
                }
            }
        }
    }
}

/// A label → probability map borrowed from a [`ScoreBatch`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MapRef<'a>(MapRepr<'a>);

#[derive(Clone, Copy, Debug, PartialEq)]
enum MapRepr<'a> {
    Pairs(&'a [(String, f64)]),
    Split(&'a [String], &'a [f64]),
}

impl<'a> MapRef<'a> {
    /// Number of labels.
    pub fn len(&self) -> usize {
        match self.0 {
            MapRepr::Pairs(p) => p.len(),
            MapRepr::Split(l, v) => l.len().min(v.len()),
        }
    }

    /// True when the map has no label.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (label, probability) pairs in the model's class order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        let map = self.0;
        (0..self.len()).filter_map(move |i| match map {
            MapRepr::Pairs(p) => p.get(i).map(|(l, v)| (l.as_str(), *v)),
            MapRepr::Split(l, v) => l.get(i).zip(v.get(i)).map(|(l, v)| (l.as_str(), *v)),
        })
    }

    /// The probability of `label`.
    pub fn get(&self, label: &str) -> Option<f64> {
        self.iter().find(|(l, _)| *l == label).map(|(_, p)| p)
    }

    /// The most probable label (first on ties); `None` when empty or a probability is NaN.
    pub fn most_probable(&self) -> Option<&'a str> {
        let mut best: Option<(&'a str, f64)> = None;
        for (l, p) in self.iter() {
            if p.is_nan() {
                return None;
            }
            if best.is_none_or(|(_, b)| p > b) {
                best = Some((l, p));
            }
        }
        best.map(|(l, _)| l)
    }

    /// An owned copy.
    pub fn to_vec(&self) -> Vec<(String, f64)> {
        self.iter().map(|(l, p)| (l.to_string(), p)).collect()
    }
}

/// One output value of one record, borrowed from a [`ScoreBatch`]; the borrowed form of
/// [`OutputValue`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OutputRef<'a> {
    /// A number.
    Number(f64),
    /// A string.
    Text(&'a str),
    /// A vector of numbers.
    Numbers(&'a [f64]),
    /// A vector of strings.
    Texts(&'a [String]),
    /// Label to probability.
    Map(MapRef<'a>),
    /// No value.
    Missing,
}

impl<'a> OutputRef<'a> {
    fn of(v: &'a OutputValue) -> Self {
        match v {
            OutputValue::Number(x) => OutputRef::Number(*x),
            OutputValue::Text(t) => OutputRef::Text(t),
            OutputValue::Numbers(xs) => OutputRef::Numbers(xs),
            OutputValue::Texts(ts) => OutputRef::Texts(ts),
            OutputValue::Map(m) => OutputRef::Map(MapRef(MapRepr::Pairs(m))),
            OutputValue::Missing => OutputRef::Missing,
        }
    }

    /// The owned value.
    pub fn to_value(&self) -> OutputValue {
        match *self {
            OutputRef::Number(x) => OutputValue::Number(x),
            OutputRef::Text(t) => OutputValue::Text(t.to_string()),
            OutputRef::Numbers(xs) => OutputValue::Numbers(xs.to_vec()),
            OutputRef::Texts(ts) => OutputValue::Texts(ts.to_vec()),
            OutputRef::Map(m) => OutputValue::Map(m.to_vec()),
            OutputRef::Missing => OutputValue::Missing,
        }
    }

    /// The headline value of this output ([`Score::value`] when it is a score's first
    /// output): a number or text as is, a one-element vector's element, a longer vector's
    /// argmax index, a map's most probable label.
    pub fn headline(&self) -> Value {
        match *self {
            OutputRef::Number(x) => Value::Number(x),
            OutputRef::Text(t) => Value::Text(t.to_string()),
            OutputRef::Numbers([x]) => Value::Number(*x),
            OutputRef::Numbers(xs) => {
                argmax(xs).map_or(Value::Missing, |i| Value::Number(i as f64))
            }
            OutputRef::Texts([t]) => Value::Text(t.clone()),
            OutputRef::Texts(_) | OutputRef::Missing => Value::Missing,
            OutputRef::Map(m) => m
                .most_probable()
                .map_or(Value::Missing, |l| Value::Text(l.to_string())),
        }
    }
}

#[derive(Debug)]
enum Repr {
    /// Per-record scores (models without a columnar form).
    Rows(Vec<Result<Score, ModelError>>),
    /// One column per output; the records in `failed` (sorted by index) have no row.
    Columns {
        len: usize,
        columns: Vec<Column>,
        failed: Vec<(usize, ModelError)>,
    },
}

/// The scores of a batch of records, in record order, as returned by
/// [`crate::Model::score_columnar`]. Tensor models keep their output tensors as columns and
/// build a record's values on demand; other models hold one [`Score`] per record.
#[derive(Debug)]
pub struct ScoreBatch {
    repr: Repr,
}

impl ScoreBatch {
    /// A batch holding per-record results.
    pub fn from_scores(scores: Vec<Result<Score, ModelError>>) -> Self {
        ScoreBatch {
            repr: Repr::Rows(scores),
        }
    }

    /// A columnar batch of `len` records; `failed` sorted by record index, the others are the
    /// columns' rows in order.
    pub(crate) fn from_columns(
        len: usize,
        columns: Vec<Column>,
        failed: Vec<(usize, ModelError)>,
    ) -> Self {
        ScoreBatch {
            repr: Repr::Columns {
                len,
                columns,
                failed,
            },
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::Rows(r) => r.len(),
            Repr::Columns { len, .. } => *len,
        }
    }

    /// True for an empty batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The row of record `i` in the columns, or its error.
    fn row(&self, i: usize) -> Option<Result<usize, &ModelError>> {
        match &self.repr {
            Repr::Rows(_) => None,
            Repr::Columns { len, failed, .. } => {
                if i >= *len {
                    return None;
                }
                Some(match failed.binary_search_by_key(&i, |(j, _)| *j) {
                    Ok(k) => Err(&failed[k].1),
                    Err(before) => Ok(i - before),
                })
            }
        }
    }

    /// Why record `i` could not be scored; `None` when it was scored (or `i` is out of range).
    pub fn error(&self, i: usize) -> Option<&ModelError> {
        match &self.repr {
            Repr::Rows(r) => r.get(i).and_then(|s| s.as_ref().err()),
            Repr::Columns { .. } => self.row(i).and_then(|r| r.err()),
        }
    }

    /// Output `k` (in the order of [`crate::Model::outputs`]) of record `i`: its name and value.
    pub fn output_at(&self, i: usize, k: usize) -> Option<(&str, OutputRef<'_>)> {
        match &self.repr {
            Repr::Rows(r) => {
                let score = r.get(i)?.as_ref().ok()?;
                score
                    .outputs
                    .get(k)
                    .map(|(n, v)| (n.as_str(), OutputRef::of(v)))
            }
            Repr::Columns { columns, .. } => {
                let row = self.row(i)?.ok()?;
                columns.get(k).map(|c| (&*c.name, c.get(row)))
            }
        }
    }

    /// Number of outputs of record `i` (0 when it failed).
    pub fn output_count(&self, i: usize) -> usize {
        match &self.repr {
            Repr::Rows(r) => r
                .get(i)
                .and_then(|s| s.as_ref().ok())
                .map_or(0, |s| s.outputs.len()),
            Repr::Columns { columns, .. } => match self.row(i) {
                Some(Ok(_)) => columns.len(),
                _ => 0,
            },
        }
    }

    /// Record `i`'s outputs, in the order of [`crate::Model::outputs`] (empty when it failed).
    pub fn outputs(&self, i: usize) -> impl Iterator<Item = (&str, OutputRef<'_>)> + '_ {
        (0..self.output_count(i)).filter_map(move |k| self.output_at(i, k))
    }

    /// The output called `name` of record `i`.
    pub fn output(&self, i: usize, name: &str) -> Option<OutputRef<'_>> {
        self.outputs(i).find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Record `i`'s headline value ([`Score::value`]); `None` when it failed.
    pub fn value(&self, i: usize) -> Option<Value> {
        match &self.repr {
            Repr::Rows(r) => r.get(i)?.as_ref().ok().map(|s| s.value.clone()),
            Repr::Columns { .. } => {
                self.row(i)?.ok()?;
                Some(
                    self.output_at(i, 0)
                        .map_or(Value::Missing, |(_, v)| v.headline()),
                )
            }
        }
    }

    /// Record `i` as an owned [`Score`], or its error; `None` when `i` is out of range.
    pub fn score(&self, i: usize) -> Option<Result<Score, &ModelError>> {
        match &self.repr {
            Repr::Rows(r) => r.get(i).map(|s| s.as_ref().cloned()),
            Repr::Columns { columns, .. } => Some(self.row(i)?.map(|row| row_score(columns, row))),
        }
    }

    /// One owned result per record, in order (what [`crate::Model::score_batch`] returns).
    pub fn into_scores(self) -> Vec<Result<Score, ModelError>> {
        match self.repr {
            Repr::Rows(r) => r,
            Repr::Columns {
                len,
                columns,
                failed,
            } => {
                let mut out = Vec::with_capacity(len);
                let mut failed = failed.into_iter().peekable();
                let mut row = 0usize;
                for i in 0..len {
                    match failed.next_if(|(j, _)| *j == i) {
                        Some((_, e)) => out.push(Err(e)),
                        None => {
                            out.push(Ok(row_score(&columns, row)));
                            row += 1;
                        }
                    }
                }
                out
            }
        }
    }
}

fn row_score(columns: &[Column], row: usize) -> Score {
    let outputs: Vec<(String, OutputValue)> = columns
        .iter()
        .map(|c| (c.name.to_string(), c.get(row).to_value()))
        .collect();
    let value = columns
        .first()
        .map_or(Value::Missing, |c| c.get(row).headline());
    Score { value, outputs }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> ScoreBatch {
        let columns = vec![
            Column {
                name: "label".into(),
                width: 1,
                scalar: true,
                data: ColumnData::Labels {
                    classes: Arc::new(Classes::Strings(vec!["a".into(), "b".into()])),
                    index: vec![1, 0],
                    as_f32: false,
                },
            },
            Column {
                name: "p".into(),
                width: 2,
                scalar: false,
                data: ColumnData::Map {
                    labels: vec!["a".to_string(), "b".to_string()].into(),
                    values: vec![0.25, 0.75, 0.5, 0.5],
                },
            },
            Column {
                name: "x".into(),
                width: 2,
                scalar: false,
                data: ColumnData::Numbers(vec![1.0, 2.0, 3.0, 4.0]),
            },
        ];
        let failed = vec![(1, ModelError::Input("bad".into()))];
        ScoreBatch::from_columns(3, columns, failed)
    }

    #[test]
    fn columns_and_rows_agree() {
        let b = batch();
        assert_eq!(b.len(), 3);
        assert!(b.error(1).is_some() && b.error(0).is_none() && b.error(2).is_none());
        assert_eq!(b.value(0), Some(Value::Text("b".into())));
        assert_eq!(b.value(1), None);
        assert_eq!(b.value(2), Some(Value::Text("a".into())));
        assert_eq!(b.output(2, "x"), Some(OutputRef::Numbers(&[3.0, 4.0])));
        let m = match b.output(0, "p") {
            Some(OutputRef::Map(m)) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(m.get("b"), Some(0.75));
        assert_eq!(m.most_probable(), Some("b"));
        assert_eq!(b.outputs(1).count(), 0);
        assert_eq!(b.outputs(0).count(), 3);
        let owned: Vec<Score> = (0..3)
            .filter_map(|i| b.score(i).and_then(|s| s.ok()))
            .collect();
        let scores = b.into_scores();
        assert!(scores[1].is_err());
        let again: Vec<Score> = scores.into_iter().filter_map(Result::ok).collect();
        assert_eq!(owned, again);
        assert_eq!(
            again[0].output("p"),
            Some(&OutputValue::Map(vec![
                ("a".into(), 0.25),
                ("b".into(), 0.75)
            ]))
        );
        assert_eq!(
            again[1].output("label"),
            Some(&OutputValue::Text("a".into()))
        );
        let rows = ScoreBatch::from_scores(vec![Ok(again[0].clone())]);
        assert_eq!(rows.value(0), Some(Value::Text("b".into())));
        assert_eq!(rows.output(0, "x"), Some(OutputRef::Numbers(&[1.0, 2.0])));
    }
}
