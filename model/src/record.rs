//! Records as named values, and field mappings.

use std::sync::Arc;

use crate::pb::WineRecord;

/// A field name: a `'static` string (the names of known record types, such as
/// [`WINE_FIELDS`]) or a shared one, so copying a record or renaming its fields
/// never allocates a name.
#[derive(Clone)]
pub(crate) enum Name {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Name {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Name::Static(s) => s,
            Name::Shared(s) => s,
        }
    }
}

impl Name {
    #[cfg(feature = "pmml")]
    /// For a `'static` name, its address and length: equal keys are the same
    /// text for good (a `'static` string is never freed or changed), unlike
    /// the address of a shared name, which a later name may reuse.
    #[inline]
    pub(crate) fn static_key(&self) -> Option<(usize, usize)> {
        match self {
            Name::Static(s) => Some((s.as_ptr() as usize, s.len())),
            Name::Shared(_) => None,
        }
    }

    /// The same name: the same `'static` string (a pointer compare, as for
    /// records made from [`WINE_FIELDS`] and the wine mapping) or equal text.
    #[inline]
    fn same(&self, other: &Name) -> bool {
        match (self, other) {
            (Name::Static(a), Name::Static(b)) if std::ptr::eq(*a, *b) => true,
            _ => self.as_str() == other.as_str(),
        }
    }
}

impl From<String> for Name {
    fn from(s: String) -> Self {
        Name::Shared(s.into())
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Name {}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// One field value of a record.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A number.
    Number(f64),
    /// A string (categorical value, label).
    Text(String),
    /// No value.
    Missing,
}

impl Value {
    /// The number, if this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(v) => Some(*v),
            _ => None,
        }
    }

    /// True for [`Value::Missing`].
    pub fn is_missing(&self) -> bool {
        matches!(self, Value::Missing)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Number(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Missing, Into::into)
    }
}

/// A record: field values by name, in insertion order. Not tied to any record type: a
/// [`WineRecord`] converts into one, a CSV row is one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Record {
    fields: Vec<(Name, Value)>,
}

impl Record {
    /// An empty record.
    pub fn new() -> Self {
        Record::default()
    }

    /// An empty record with room for `n` fields.
    pub fn with_capacity(n: usize) -> Self {
        Record {
            fields: Vec::with_capacity(n),
        }
    }

    /// Sets `name` to `value` (replacing an earlier value of the same name in place).
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Value>) {
        self.put(Name::from(name.into()), value.into());
    }

    /// [`Record::insert`] under a `'static` name, as records of known types
    /// have them (for tests of what keys on such names).
    #[cfg(test)]
    pub(crate) fn insert_static(&mut self, name: &'static str, value: Value) {
        self.put(Name::Static(name), value);
    }

    /// Sets the field `name` to `value`, in place when it is there.
    fn put(&mut self, name: Name, value: Value) {
        match self
            .fields
            .iter_mut()
            .find(|(n, _)| n.as_str() == name.as_str())
        {
            Some(slot) => slot.1 = value,
            None => self.fields.push((name, value)),
        }
    }

    /// Builder form of [`Record::insert`].
    pub fn with(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.insert(name, value);
        self
    }

    /// The value of `name`, if the record has that field.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, v)| v)
    }

    /// Fields in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.fields.iter().map(|(n, v)| (n.as_str(), v))
    }

    #[cfg(feature = "pmml")]
    /// Fields in order, names as stored (for lookups by position in this crate).
    pub(crate) fn fields(&self) -> &[(Name, Value)] {
        &self.fields
    }

    /// Values in order.
    pub fn values(&self) -> impl Iterator<Item = &Value> {
        self.fields.iter().map(|(_, v)| v)
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True when the record has no field.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

impl<N: Into<String>, V: Into<Value>> FromIterator<(N, V)> for Record {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        let mut r = Record::new();
        for (n, v) in iter {
            r.insert(n, v);
        }
        r
    }
}

/// The protobuf field names of [`WineRecord`]'s eleven measurements, in field-number order.
pub const WINE_FIELDS: [&str; 11] = [
    "fixed_acidity",
    "volatile_acidity",
    "citric_acid",
    "residual_sugar",
    "chlorides",
    "free_sulfur_dioxide",
    "total_sulfur_dioxide",
    "density",
    "pH",
    "sulphates",
    "alcohol",
];

/// The same measurements as named in the UCI data set and the tutorial's PMML files.
pub const WINE_MODEL_FIELDS: [&str; 11] = [
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

impl From<&WineRecord> for Record {
    /// The eleven measurements, named as in the protobuf ([`WINE_FIELDS`]), in order.
    fn from(w: &WineRecord) -> Self {
        let values = [
            w.fixed_acidity,
            w.volatile_acidity,
            w.citric_acid,
            w.residual_sugar,
            w.chlorides,
            w.free_sulfur_dioxide,
            w.total_sulfur_dioxide,
            w.density,
            w.p_h,
            w.sulphates,
            w.alcohol,
        ];
        // The names are distinct: no search for an earlier value.
        Record {
            fields: WINE_FIELDS
                .iter()
                .zip(values)
                .map(|(n, v)| (Name::Static(n), Value::Number(v)))
                .collect(),
        }
    }
}

/// Renames a record type's fields to a model's input names. Fields without a mapping keep
/// their name.
#[derive(Clone, Debug)]
pub struct FieldMapping {
    pairs: Vec<(Name, Name)>,
    /// No two pairs map to the same name and no pair maps to another pair's
    /// source: renaming records whose fields are all mapped keeps names distinct.
    injective: bool,
    /// Unique to these pairs: a new mapping, or one changed by
    /// [`FieldMapping::map`], gets a new id; a clone keeps it. Models key what
    /// they worked out for a mapping by it (never 0, which stands for no
    /// mapping).
    id: u64,
}

/// The next [`FieldMapping`] id.
fn next_mapping_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Default for FieldMapping {
    fn default() -> Self {
        FieldMapping {
            pairs: Vec::new(),
            injective: true,
            id: next_mapping_id(),
        }
    }
}

/// Mappings are equal when they rename alike (whatever their ids).
impl PartialEq for FieldMapping {
    fn eq(&self, other: &Self) -> bool {
        self.pairs == other.pairs
    }
}

impl Eq for FieldMapping {}

impl FieldMapping {
    /// The identity mapping.
    pub fn new() -> Self {
        FieldMapping::default()
    }

    #[cfg(feature = "pmml")]
    /// This mapping's id (see the field).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Maps record field `from` to model input `to` (replacing an earlier mapping of `from`).
    pub fn map(mut self, from: impl Into<String>, to: impl Into<String>) -> Self {
        let from: String = from.into();
        let to = Name::from(to.into());
        match self.pairs.iter_mut().find(|(f, _)| f.as_str() == from) {
            Some(slot) => slot.1 = to,
            None => self.pairs.push((Name::from(from), to)),
        }
        self.injective = injective(&self.pairs);
        self.id = next_mapping_id();
        self
    }

    /// [`WineRecord`]'s protobuf names to the UCI/PMML names ("fixed_acidity" to
    /// "fixed acidity", ...).
    pub fn wine() -> Self {
        let pairs: Vec<_> = WINE_FIELDS
            .iter()
            .zip(WINE_MODEL_FIELDS.iter())
            .map(|(f, t)| (Name::Static(f), Name::Static(t)))
            .collect();
        FieldMapping {
            injective: injective(&pairs),
            pairs,
            id: next_mapping_id(),
        }
    }

    /// The model name for record field `name`.
    pub fn model_name<'a>(&'a self, name: &'a str) -> &'a str {
        self.pairs
            .iter()
            .find(|(f, _)| f.as_str() == name)
            .map_or(name, |(_, t)| t.as_str())
    }

    /// The record field for model input `name` (the reverse mapping).
    pub fn record_name<'a>(&'a self, name: &'a str) -> &'a str {
        self.pairs
            .iter()
            .find(|(_, t)| t.as_str() == name)
            .map_or(name, |(f, _)| f.as_str())
    }

    /// The pair renaming field `i` of a record, named `name`: the pair at the
    /// field's own position first, so that a record made in the mapping's
    /// field order finds each name at once.
    #[inline]
    fn pair_for(&self, i: usize, name: &Name) -> Option<&(Name, Name)> {
        match self.pairs.get(i) {
            Some(p) if p.0.same(name) => Some(p),
            _ => self.pairs.iter().find(|(f, _)| f.same(name)),
        }
    }

    #[cfg(feature = "pmml")]
    /// The name field `i` of a record, named `name`, has after renaming.
    #[inline]
    pub(crate) fn renamed<'a>(&'a self, i: usize, name: &'a Name) -> &'a str {
        self.pair_for(i, name)
            .map_or(name.as_str(), |(_, t)| t.as_str())
    }

    #[cfg(feature = "pmml")]
    /// Whether [`FieldMapping::apply`] renames `record` field by field, each
    /// field keeping its position and value (the name of field `i` becomes
    /// [`FieldMapping::renamed`]): the identity, or an injective mapping with
    /// a pair for every field of `record`. Models can then read the renamed
    /// record through the mapping instead of building it.
    pub(crate) fn renames_in_place(&self, record: &Record) -> bool {
        self.pairs.is_empty()
            || (self.injective
                && record
                    .fields
                    .iter()
                    .enumerate()
                    .all(|(i, (n, _))| self.pair_for(i, n).is_some()))
    }

    /// `record` with its fields renamed, order kept.
    pub fn apply(&self, record: &Record) -> Record {
        if self.pairs.is_empty() {
            return record.clone();
        }
        // Names are shared, not copied. A record's names are distinct; when
        // every field is mapped by an injective mapping the new names are too,
        // and no field needs to replace an earlier one.
        let mut all_mapped = true;
        let fields: Vec<(Name, Value)> = record
            .fields
            .iter()
            .enumerate()
            .map(|(i, (n, v))| {
                let renamed = match self.pair_for(i, n) {
                    Some((_, t)) => t.clone(),
                    None => {
                        all_mapped = false;
                        n.clone()
                    }
                };
                (renamed, v.clone())
            })
            .collect();
        if self.injective && all_mapped {
            return Record { fields };
        }
        let mut renamed = Record::with_capacity(fields.len());
        for (n, v) in fields {
            match renamed.fields.iter_mut().find(|(m, _)| *m == n) {
                Some(slot) => slot.1 = v,
                None => renamed.fields.push((n, v)),
            }
        }
        renamed
    }
}

/// Whether `pairs` map distinct sources to distinct names none of which is
/// another pair's source.
fn injective(pairs: &[(Name, Name)]) -> bool {
    pairs.iter().enumerate().all(|(i, (_, t))| {
        pairs
            .iter()
            .enumerate()
            .all(|(j, (f, u))| i == j || (t != u && t != f))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_in_place_and_keeps_order() {
        let mut r = Record::new().with("a", 1.0).with("b", "x");
        r.insert("a", Value::Missing);
        let names: Vec<_> = r.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(r.get("a"), Some(&Value::Missing));
        assert_eq!(r.get("b"), Some(&Value::Text("x".into())));
        assert_eq!(r.get("c"), None);
    }

    #[test]
    fn wine_record_converts_in_field_order() {
        let w = WineRecord {
            fixed_acidity: 7.4,
            p_h: 3.51,
            alcohol: 9.4,
            ..Default::default()
        };
        let r = Record::from(&w);
        assert_eq!(r.len(), 11);
        let names: Vec<_> = r.iter().map(|(n, _)| n).collect();
        assert_eq!(names, WINE_FIELDS);
        assert_eq!(r.get("pH").and_then(Value::as_f64), Some(3.51));
        assert_eq!(r.get("alcohol").and_then(Value::as_f64), Some(9.4));
    }

    #[test]
    fn wine_mapping_renames_both_ways() {
        let m = FieldMapping::wine();
        assert_eq!(m.model_name("fixed_acidity"), "fixed acidity");
        assert_eq!(m.record_name("free sulfur dioxide"), "free_sulfur_dioxide");
        assert_eq!(m.model_name("unmapped"), "unmapped");
        let r = Record::new().with("citric_acid", 0.5).with("other", "k");
        let mapped = m.apply(&r);
        assert_eq!(mapped.get("citric acid"), Some(&Value::Number(0.5)));
        assert_eq!(mapped.get("other"), Some(&Value::Text("k".into())));
        assert_eq!(mapped.get("citric_acid"), None);
    }

    #[test]
    fn renaming_onto_an_existing_name_replaces_it_in_place() {
        // What inserting the renamed fields one by one gives: a later field of
        // the same name replaces the earlier value, at the earlier position.
        let one_by_one = |m: &FieldMapping, r: &Record| -> Record {
            r.iter()
                .map(|(n, v)| (m.model_name(n).to_string(), v.clone()))
                .collect()
        };
        let r = Record::new().with("a", 1.0).with("x", 2.0).with("b", 3.0);
        for m in [
            FieldMapping::new().map("a", "x"),
            FieldMapping::new().map("a", "c").map("b", "c"),
            FieldMapping::new()
                .map("a", "b")
                .map("b", "a")
                .map("x", "y"),
            FieldMapping::new()
                .map("a", "p")
                .map("x", "q")
                .map("b", "r"),
        ] {
            let mapped = m.apply(&r);
            assert_eq!(mapped, one_by_one(&m, &r), "{m:?}");
            let names: Vec<_> = mapped.iter().map(|(n, _)| n).collect();
            let mut distinct = names.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(names.len(), distinct.len(), "{m:?}: {names:?}");
        }
        let wine = Record::from(&WineRecord::default());
        let w = FieldMapping::wine();
        assert_eq!(w.apply(&wine), one_by_one(&w, &wine));
        let names: Vec<_> = w.apply(&wine).iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(names, WINE_MODEL_FIELDS);
    }

    #[test]
    fn option_converts_to_missing() {
        assert_eq!(Value::from(None::<f64>), Value::Missing);
        assert_eq!(Value::from(Some(2.0)), Value::Number(2.0));
    }
}
