//! Typed load-time and evaluation-time errors.

use thiserror::Error;

/// Why a PMML document could not be loaded and compiled.
///
/// Every variant that concerns a place in the document carries the element name and the
/// 1-based line of that element.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum LoadError {
    /// Reading the file failed.
    #[error("cannot read PMML file: {0}")]
    Io(#[from] std::io::Error),
    /// The document is larger than [`crate::LoadOptions::max_bytes`].
    #[error("PMML document is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// Size of the document in bytes (or a lower bound).
        size: u64,
        /// The configured limit.
        limit: u64,
    },
    /// Elements are nested deeper than [`crate::LoadOptions::max_depth`].
    #[error(
        "line {line}: element <{element}> is nested {depth} deep, more than the limit of {limit}"
    )]
    TooDeep {
        /// The element that crossed the limit.
        element: String,
        /// Its line.
        line: u32,
        /// Its depth.
        depth: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The document contains a DOCTYPE / DTD (and so possibly entity declarations); refused.
    #[error(
        "PMML document contains a DOCTYPE/DTD, which is refused (no entities are ever expanded)"
    )]
    Dtd,
    /// The document is not well-formed XML (or not UTF-8).
    #[error("malformed XML at line {line}, column {column}: {message}")]
    Xml {
        /// Line of the error.
        line: u32,
        /// Column of the error.
        column: u32,
        /// The parser's message.
        message: String,
    },
    /// The root element is not a PMML element in a known namespace.
    #[error("not a PMML document: root element is <{element}> {}", in_namespace(.namespace.as_deref()))]
    NotPmml {
        /// The root element.
        element: String,
        /// Its namespace.
        namespace: Option<String>,
    },
    /// A required attribute is absent.
    #[error("line {line}: <{element}> lacks the required attribute {attribute:?}")]
    MissingAttribute {
        /// The element.
        element: String,
        /// The attribute.
        attribute: String,
        /// Its line.
        line: u32,
    },
    /// An attribute has a value that cannot be used.
    #[error("line {line}: <{element}> attribute {attribute}={value:?} is invalid: {reason}")]
    InvalidAttribute {
        /// The element.
        element: String,
        /// The attribute.
        attribute: String,
        /// The value found.
        value: String,
        /// What is wrong with it.
        reason: String,
        /// Its line.
        line: u32,
    },
    /// A required child element is absent or an element's content is inconsistent.
    #[error("line {line}: invalid <{element}>: {reason}")]
    InvalidElement {
        /// The element.
        element: String,
        /// What is wrong.
        reason: String,
        /// Its line.
        line: u32,
    },
    /// A field reference names no field visible at that place.
    #[error("line {line}: <{element}> refers to an unknown field {field:?}")]
    UnknownField {
        /// The element holding the reference.
        element: String,
        /// The field name.
        field: String,
        /// Its line.
        line: u32,
    },
    /// A PMML feature this evaluator does not implement. Never silently ignored.
    #[error("line {line}: unsupported: <{element}>{}: {what}", attribute.as_ref().map(|a| format!(" attribute {a}")).unwrap_or_default())]
    Unsupported {
        /// The element.
        element: String,
        /// The attribute, when an attribute value is what is unsupported.
        attribute: Option<String>,
        /// What exactly is unsupported.
        what: String,
        /// Its line.
        line: u32,
    },
    /// A ModelVerification record did not score as expected (only with
    /// [`crate::LoadOptions::verify`]).
    #[error("model verification failed at record {record}, field {field:?}: expected {expected}, got {actual}")]
    Verification {
        /// 0-based record index in the verification table.
        record: usize,
        /// The field that differs.
        field: String,
        /// The expected value, as written.
        expected: String,
        /// What the evaluator produced (or its error).
        actual: String,
    },
    /// The document has no model element that this evaluator knows.
    #[error("the PMML document contains no model element")]
    NoModel,
}

/// Why one record could not be evaluated.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum EvalError {
    /// The slice of inputs does not have one value per input field.
    #[error("expected {expected} input values (one per input field), got {got}")]
    InputCount {
        /// Number of input fields.
        expected: usize,
        /// Number of values given.
        got: usize,
    },
    /// A map of inputs named a field that is not an input field.
    #[error("{0:?} is not an input field of this model")]
    UnknownInput(String),
    /// An input value is invalid for its field and the field's invalidValueTreatment is
    /// `returnInvalid` (the default).
    #[error("field {field:?} cannot accept the value {value:?}")]
    InvalidValue {
        /// The field.
        field: String,
        /// The offending value.
        value: String,
    },
    /// An input value is missing and the field's missingValueTreatment is `returnInvalid`.
    #[error("field {0:?} requires a value (missingValueTreatment=returnInvalid)")]
    MissingValue(String),
    /// A value has the wrong type for an operation (e.g. a string given to `+`).
    #[error("{0}")]
    Type(String),
    /// A computation produced an invalid result (e.g. no category, NaN where forbidden).
    #[error("invalid result: {0}")]
    InvalidResult(String),
}

/// `in namespace "…"`, or `in no namespace`.
fn in_namespace(ns: Option<&str>) -> String {
    match ns {
        Some(ns) => format!("in namespace {ns:?}"),
        None => "in no namespace".to_string(),
    }
}
