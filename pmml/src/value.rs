//! Field values and PMML data/operational types.

use std::cmp::Ordering;
use std::fmt;

/// A field value: an input argument or a result.
///
/// A value of a PMML field of `dataType="float"` is carried as [`Value::Float`] and computed in
/// 32-bit floating point, as JPMML-Evaluator does.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// No value (a missing input, or a model that produced no result).
    #[default]
    Missing,
    /// A 64-bit floating point number (`dataType="double"`).
    Double(f64),
    /// A 32-bit floating point number (`dataType="float"`).
    Float(f32),
    /// An integer (`dataType="integer"`).
    Integer(i64),
    /// A string (`dataType="string"`), e.g. a class label.
    String(String),
    /// A boolean (`dataType="boolean"`).
    Boolean(bool),
}

impl Value {
    /// This value for an error message: the value and its type
    /// (`9.4E300 (double)`, `"abc" (string)`, `a missing value`).
    pub fn shown(&self) -> Shown<'_> {
        Shown(self)
    }

    /// `true` for [`Value::Missing`].
    pub fn is_missing(&self) -> bool {
        matches!(self, Value::Missing)
    }

    /// The value as a number, if it is numeric (booleans count as 0/1).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Double(v) => Some(*v),
            Value::Float(v) => Some(f64::from(*v)),
            Value::Integer(v) => Some(*v as f64),
            Value::Boolean(b) => Some(if *b { 1.0 } else { 0.0 }),
            Value::String(_) | Value::Missing => None,
        }
    }

    /// The value as a string slice, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The data type of this value, `None` for missing.
    pub fn data_type(&self) -> Option<DataType> {
        Some(match self {
            Value::Missing => return None,
            Value::Double(_) => DataType::Double,
            Value::Float(_) => DataType::Float,
            Value::Integer(_) => DataType::Integer,
            Value::String(_) => DataType::String,
            Value::Boolean(_) => DataType::Boolean,
        })
    }

    /// Converts this value to `data_type` the way JPMML converts user input: strings are parsed,
    /// numbers are widened/narrowed (an integer field accepts only integral numbers).
    /// `None` when the value cannot be represented (an invalid value). Missing stays missing.
    pub fn cast(&self, data_type: DataType) -> Option<Value> {
        Some(match (self, data_type) {
            (Value::Missing, _) => Value::Missing,
            (Value::String(s), dt) => return parse_as(s, dt),
            (v, DataType::String) => Value::String(v.to_string()),
            (Value::Double(v), DataType::Double) => Value::Double(*v),
            (v, DataType::Double) => Value::Double(v.as_f64()?),
            (Value::Float(v), DataType::Float) => Value::Float(*v),
            (v, DataType::Float) => Value::Float(v.as_f64()? as f32),
            (Value::Integer(v), DataType::Integer) => Value::Integer(*v),
            (Value::Boolean(b), DataType::Integer) => Value::Integer(i64::from(*b)),
            (v, DataType::Integer) => {
                let f = v.as_f64()?;
                if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 {
                    Value::Integer(f as i64)
                } else {
                    return None;
                }
            }
            (Value::Boolean(b), DataType::Boolean) => Value::Boolean(*b),
            (v, DataType::Boolean) => {
                let f = v.as_f64()?;
                if f == 1.0 {
                    Value::Boolean(true)
                } else if f == 0.0 {
                    Value::Boolean(false)
                } else {
                    return None;
                }
            }
        })
    }

    /// Compares two non-missing values: numerically when both are numeric, otherwise as strings
    /// when both are strings. Mixed kinds do not compare.
    pub(crate) fn compare(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Float(a), Value::Float(b)) => a.partial_cmp(b),
            (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
            (Value::Integer(a), Value::Integer(b)) => Some(a.cmp(b)),
            (Value::String(_), _) | (_, Value::String(_)) => None,
            (a, b) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        }
    }

    /// Equality used by predicates and category look-ups (numbers compare numerically).
    #[inline]
    pub(crate) fn equals(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::String(a), Value::String(b)) => str_eq(a, b),
            (Value::Missing, _) | (_, Value::Missing) => false,
            _ => self.compare(other) == Some(Ordering::Equal),
        }
    }
}

/// Java's `Double.compare` order, a total one: `-0.0 < 0.0`, and every NaN equal and above
/// all numbers. Sorting with a partial order panics (Rust 1.81+) when a NaN meets numbers, and
/// JPMML sorts by this one.
pub(crate) fn java_cmp(a: f64, b: f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        (false, false) => a.total_cmp(&b),
    }
}

/// `x.powi(e)`, out of line: next to an `e == 1` shortcut, an inlined `powi` lets the optimiser
/// fold the shortcut away (`powi(x, 1) == x`) and call `powi` for every term.
#[inline(never)]
pub(crate) fn powi(x: f64, e: i32) -> f64 {
    x.powi(e)
}

/// `x.powf(e)`, out of line (see [`powi`]).
#[inline(never)]
pub(crate) fn powf(x: f64, e: f64) -> f64 {
    x.powf(e)
}

/// String equality with short strings (class labels) compared inline rather than by a call.
#[inline]
pub(crate) fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    if a.len() <= 16 {
        a.iter().zip(b).all(|(x, y)| x == y)
    } else {
        a == b
    }
}

/// Parses `s` as `data_type` (PMML/Java lexical rules, surrounding whitespace ignored for numbers).
pub(crate) fn parse_as(s: &str, data_type: DataType) -> Option<Value> {
    Some(match data_type {
        DataType::String => Value::String(s.to_string()),
        DataType::Double => Value::Double(parse_f64(s)?),
        DataType::Float => Value::Float(parse_f32(s)?),
        DataType::Integer => Value::Integer(parse_i32(s)?),
        DataType::Boolean => match java_trim(s) {
            t if t.eq_ignore_ascii_case("true") => Value::Boolean(true),
            t if t.eq_ignore_ascii_case("false") => Value::Boolean(false),
            t => match parse_f64(t)? {
                1.0 => Value::Boolean(true),
                0.0 => Value::Boolean(false),
                _ => return None,
            },
        },
    })
}

/// Trims the way Java's `String.trim` does (every char `<= ' '` at either end).
fn java_trim(s: &str) -> &str {
    s.trim_matches(|c: char| c <= ' ')
}

/// The non-finite spellings: Java's `NaN` / `Infinity` (exact case, optional sign) and the
/// `INF` / `inf` forms (any case, optional sign) that JPMML-Evaluator also accepts for input
/// values (XML Schema's lexical form of infinity).
fn java_special(t: &str) -> Option<f64> {
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let v = if body == "NaN" {
        f64::NAN
    } else if body == "Infinity" || body.eq_ignore_ascii_case("inf") {
        f64::INFINITY
    } else {
        return None;
    };
    Some(if neg { -v } else { v })
}

/// The decimal text of a Java floating-point literal (`Double.parseDouble` grammar): optional
/// sign, digits with an optional `.` (at least one digit), an optional exponent, an optional
/// `f`/`F`/`d`/`D` type suffix — which is dropped. `None` for anything else (hexadecimal
/// floating-point text is not accepted).
fn java_decimal(t: &str) -> Option<&str> {
    let b = t.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let mut digits = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
        digits += 1;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
            digits += 1;
        }
    }
    if digits == 0 {
        return None;
    }
    if i < b.len() && matches!(b[i], b'e' | b'E') {
        i += 1;
        if i < b.len() && matches!(b[i], b'+' | b'-') {
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let end = i;
    if i < b.len() && matches!(b[i], b'f' | b'F' | b'd' | b'D') {
        i += 1;
    }
    (i == b.len()).then(|| &t[..end])
}

/// Parses a double the way Java's `Double.parseDouble` does (as JPMML-Evaluator parses input
/// text): blanks trimmed, `1e3`, `+5`, `.5`, `5.`, `1d`, `NaN`, `Infinity` accepted, plus `inf` /
/// `INF`; `0x10`, `1_000`, `1,5` rejected. A numeric `NaN` parses (to NaN); input preparation
/// then treats it as an invalid value, as JPMML does.
pub(crate) fn parse_f64(s: &str) -> Option<f64> {
    let t = java_trim(s);
    if let Some(v) = java_special(t) {
        return Some(v);
    }
    java_decimal(t)?.parse::<f64>().ok()
}

/// Parses a float the way Java's `Float.parseFloat` does (correctly rounded to 32 bits; the same
/// grammar as [`parse_f64`]).
pub(crate) fn parse_f32(s: &str) -> Option<f32> {
    let t = java_trim(s);
    if let Some(v) = java_special(t) {
        return Some(v as f32);
    }
    java_decimal(t)?.parse::<f32>().ok()
}

/// Parses an integer as JPMML does: a (32-bit) `Long.parseLong` text, else a double that is a
/// mathematical integer; out of the 32-bit range is `None`.
fn parse_i32(s: &str) -> Option<i64> {
    let t = java_trim(s);
    let v = match t.parse::<i64>() {
        Ok(v) => v,
        Err(_) => {
            let f = parse_f64(t)?;
            if f.fract() != 0.0 || !f.is_finite() || f.abs() > 9.007_199_254_740_992e15 {
                return None;
            }
            f as i64
        }
    };
    i32::try_from(v).ok().map(i64::from)
}

/// Formats a double like Java's `Double.toString` for the common cases (used when a number
/// becomes a string, e.g. a numeric category label).
fn java_double_string(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e7).contains(&a) {
        let s = format!("{v:e}");
        // Rust: 1.5e10 / 1e-5 ; Java: 1.5E10 / 1.0E-5
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let m = if m.contains('.') {
            m.to_string()
        } else {
            format!("{m}.0")
        };
        return format!("{m}E{e}");
    }
    let s = format!("{v}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

/// A [`Value`] as error messages show it: the value and its type
/// (`9.4E300 (double)`, `"abc" (string)`, `a missing value`).
#[derive(Debug, Clone, Copy)]
pub struct Shown<'a>(&'a Value);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Value::Missing => f.write_str("a missing value"),
            Value::String(s) => write!(f, "{s:?} (string)"),
            v => match v.data_type() {
                Some(t) => write!(f, "{v} ({t})"),
                None => write!(f, "{v}"),
            },
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Missing => f.write_str(""),
            Value::Double(v) => f.write_str(&java_double_string(*v)),
            Value::Float(v) => {
                // Java's Float.toString: shortest repr that round-trips in f32.
                let s = java_double_string(f64::from(*v));
                let short = format!("{v}");
                if (1e-3..1e7).contains(&v.abs()) || *v == 0.0 {
                    if short.contains('.') || short.contains("inf") || short.contains("NaN") {
                        f.write_str(&short)
                    } else {
                        write!(f, "{short}.0")
                    }
                } else {
                    f.write_str(&s)
                }
            }
            Value::Integer(v) => write!(f, "{v}"),
            Value::String(s) => f.write_str(s),
            Value::Boolean(b) => write!(f, "{b}"),
        }
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Double(v)
    }
}
impl From<f32> for Value {
    fn from(v: f32) -> Self {
        Value::Float(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Integer(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Integer(i64::from(v))
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Boolean(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::String(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::String(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Missing, Into::into)
    }
}

/// A PMML `dataType`. Temporal types are not supported (rejected at load time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// `string`
    String,
    /// `integer`
    Integer,
    /// `float` (computed in 32 bits)
    Float,
    /// `double`
    Double,
    /// `boolean`
    Boolean,
}

impl DataType {
    pub(crate) fn parse(s: &str) -> Option<DataType> {
        use DataType::*;
        [String, Integer, Float, Double, Boolean]
            .into_iter()
            .find(|t| t.name() == s)
    }

    /// `true` for integer, float and double.
    pub fn is_numeric(self) -> bool {
        matches!(self, DataType::Integer | DataType::Float | DataType::Double)
    }

    /// The PMML name (`double`, `string`, …).
    pub fn name(self) -> &'static str {
        match self {
            DataType::String => "string",
            DataType::Integer => "integer",
            DataType::Float => "float",
            DataType::Double => "double",
            DataType::Boolean => "boolean",
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A PMML `optype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpType {
    /// `categorical`
    Categorical,
    /// `ordinal`
    Ordinal,
    /// `continuous`
    Continuous,
}

impl OpType {
    pub(crate) fn parse(s: &str) -> Option<OpType> {
        Some(match s {
            "categorical" => OpType::Categorical,
            "ordinal" => OpType::Ordinal,
            "continuous" => OpType::Continuous,
            _ => return None,
        })
    }

    pub(crate) fn default_for(dt: DataType) -> OpType {
        match dt {
            DataType::Integer | DataType::Float | DataType::Double => OpType::Continuous,
            _ => OpType::Categorical,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_fields_parse_in_32_bits() {
        assert_eq!(
            parse_as("0.57", DataType::Float),
            Some(Value::Float(0.57f32))
        );
        assert_ne!(f64::from(0.57f32), 0.57f64);
    }

    #[test]
    fn casts() {
        assert_eq!(
            Value::Double(5.0).cast(DataType::Integer),
            Some(Value::Integer(5))
        );
        assert_eq!(Value::Double(5.5).cast(DataType::Integer), None);
        assert_eq!(
            Value::Integer(5).cast(DataType::String),
            Some(Value::String("5".into()))
        );
        assert_eq!(
            Value::Double(5.0).cast(DataType::String),
            Some(Value::String("5.0".into()))
        );
        assert_eq!(Value::from("x").cast(DataType::Double), None);
        assert_eq!(
            Value::from(" 7.4 ").cast(DataType::Double),
            Some(Value::Double(7.4))
        );
    }
}
