//! Safe XML loading (no DTD, no entities, size and depth caps) and element helpers that turn
//! problems into [`LoadError`]s naming the element, attribute and line.

use crate::error::LoadError;
use crate::LoadOptions;
use roxmltree::{Document, Node, ParsingOptions};
use std::str::FromStr;

/// Parses `text` into a DOM, enforcing the limits of `opts`.
pub(crate) fn parse_document<'a>(
    text: &'a str,
    opts: &LoadOptions,
) -> Result<Document<'a>, LoadError> {
    if text.len() as u64 > opts.max_bytes {
        return Err(LoadError::TooLarge {
            size: text.len() as u64,
            limit: opts.max_bytes,
        });
    }
    // Refuse any DOCTYPE before the parser sees it (roxmltree also refuses it with allow_dtd=false).
    if contains_doctype(text) {
        return Err(LoadError::Dtd);
    }
    // Depth and attribute checks before building the DOM (the DOM builder must never see
    // absurd nesting, nor an element with a quadratic number of attribute comparisons).
    prescan(text, opts.max_depth)?;
    let options = ParsingOptions {
        allow_dtd: false,
        nodes_limit: opts.max_nodes,
    };
    let doc = Document::parse_with_options(text, options).map_err(|e| match e {
        roxmltree::Error::DtdDetected => LoadError::Dtd,
        // The parser places these at line 1, column 1; they are about the end.
        roxmltree::Error::UnclosedRootNode
        | roxmltree::Error::UnexpectedEndOfStream
        | roxmltree::Error::NoRootNode => {
            let (line, column) = end_position(text);
            LoadError::Xml {
                line,
                column,
                message: if matches!(e, roxmltree::Error::NoRootNode) {
                    "the document has no root element".to_string()
                } else {
                    "the document ends before its root element is closed (is it truncated?)"
                        .to_string()
                },
            }
        }
        other => {
            let pos = other.pos();
            LoadError::Xml {
                line: pos.row,
                column: pos.col,
                message: other.to_string(),
            }
        }
    })?;
    Ok(doc)
}

/// The line and column (1-based, in characters) just past the end of `text`.
fn end_position(text: &str) -> (u32, u32) {
    let line = text.matches('\n').count() + 1;
    let last = text.rsplit('\n').next().unwrap_or("");
    let column = last.chars().count() + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    )
}

/// The most attributes an element may have. PMML's elements have a few; the
/// XML parser checks each attribute against the ones before it, so an element
/// with 100,000 of them took 23 s to load.
const MAX_ATTRIBUTES: usize = 1_000;

/// Scans the raw text for element nesting deeper than `max_depth` and for elements with more
/// than [`MAX_ATTRIBUTES`] attributes (comments, CDATA, processing instructions and quoted
/// attribute values are skipped). Linear time, constant stack.
fn prescan(text: &str, max_depth: usize) -> Result<(), LoadError> {
    let b = text.as_bytes();
    let n = b.len();
    let find = |from: usize, pat: &[u8]| -> usize {
        b[from.min(n)..]
            .windows(pat.len())
            .position(|w| w == pat)
            .map_or(n, |p| from + p + pat.len())
    };
    let mut i = 0;
    let mut depth = 0usize;
    while i < n {
        if b[i] != b'<' {
            i += 1;
            continue;
        }
        let rest = &b[i..];
        if rest.starts_with(b"<!--") {
            i = find(i + 4, b"-->");
        } else if rest.starts_with(b"<![CDATA[") {
            i = find(i + 9, b"]]>");
        } else if rest.starts_with(b"<?") {
            i = find(i + 2, b"?>");
        } else if rest.starts_with(b"<!") {
            i = find(i + 2, b">");
        } else if rest.starts_with(b"</") {
            depth = depth.saturating_sub(1);
            i = find(i + 2, b">");
        } else {
            let start = i;
            let mut j = i + 1;
            let mut quote = 0u8;
            let mut attributes = 0usize;
            while j < n {
                let c = b[j];
                if quote != 0 {
                    if c == quote {
                        quote = 0;
                    }
                } else if c == b'"' || c == b'\'' {
                    quote = c;
                } else if c == b'=' {
                    attributes += 1;
                } else if c == b'>' {
                    break;
                }
                j += 1;
            }
            // The element's name and line, for an error.
            let locate = || {
                let line = b[..start].iter().filter(|c| **c == b'\n').count() as u32 + 1;
                let before = &text[..start];
                let column = before[before.rfind('\n').map_or(0, |p| p + 1)..]
                    .chars()
                    .count() as u32
                    + 1;
                let name: String = text[start + 1..j.min(n)]
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '/' && *c != '>')
                    .take(100)
                    .collect();
                (name, line, column)
            };
            if attributes > MAX_ATTRIBUTES {
                let (name, line, column) = locate();
                return Err(LoadError::Xml {
                    line,
                    column,
                    message: format!(
                        "<{name}> has more than {MAX_ATTRIBUTES} attributes ({attributes})"
                    ),
                });
            }
            if j < n && b[j - 1] != b'/' {
                depth += 1;
                if depth > max_depth {
                    let (name, line, _) = locate();
                    return Err(LoadError::TooDeep {
                        element: name,
                        line,
                        depth,
                        limit: max_depth,
                    });
                }
            }
            i = j + 1;
        }
    }
    Ok(())
}

fn contains_doctype(text: &str) -> bool {
    let bytes = text.as_bytes();
    let needle = b"<!doctype";
    bytes
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// `true` when `ns` is a PMML namespace (3.x and 4.x) or absent.
pub(crate) fn is_pmml_namespace(ns: Option<&str>) -> bool {
    match ns {
        None => true,
        Some(ns) => {
            let ns = ns.trim_end_matches('/');
            ns.strip_prefix("http://www.dmg.org/PMML-")
                .or_else(|| ns.strip_prefix("https://www.dmg.org/PMML-"))
                .is_some_and(
                    |v| matches!(v.as_bytes(), [b'3' | b'4', b'_', d] if d.is_ascii_digit()),
                )
        }
    }
}

/// 1-based line of an element.
pub(crate) fn line_of(node: Node) -> u32 {
    node.document().text_pos_at(node.range().start).row
}

/// Element helpers.
pub(crate) trait El<'a, 'i> {
    fn name(&self) -> &'a str;
    fn line(&self) -> u32;
    fn kids(&self) -> Vec<Node<'a, 'i>>;
    fn kids_named(&self, name: &str) -> Vec<Node<'a, 'i>>;
    fn kid(&self, name: &str) -> Option<Node<'a, 'i>>;
    fn req_kid(&self, name: &str) -> Result<Node<'a, 'i>, LoadError>;
    fn attr(&self, name: &str) -> Option<&'a str>;
    fn req_attr(&self, name: &str) -> Result<&'a str, LoadError>;
    fn parse_attr<T: FromStr>(&self, name: &str) -> Result<Option<T>, LoadError>;
    fn f64_attr(&self, name: &str) -> Result<Option<f64>, LoadError>;
    fn req_f64(&self, name: &str) -> Result<f64, LoadError>;
    fn bad_attr(&self, name: &str, reason: &str) -> LoadError;
    fn invalid(&self, reason: impl Into<String>) -> LoadError;
    fn unsupported(&self, what: impl Into<String>) -> LoadError;
    fn unsupported_attr(&self, attribute: &str) -> LoadError;
}

impl<'a, 'i> El<'a, 'i> for Node<'a, 'i> {
    fn name(&self) -> &'a str {
        self.tag_name().name()
    }
    fn line(&self) -> u32 {
        line_of(*self)
    }
    fn kids(&self) -> Vec<Node<'a, 'i>> {
        self.children()
            .filter(|c| c.is_element() && c.tag_name().name() != "Extension")
            .collect()
    }
    fn kids_named(&self, name: &str) -> Vec<Node<'a, 'i>> {
        self.children()
            .filter(|c| c.is_element() && c.tag_name().name() == name)
            .collect()
    }
    fn kid(&self, name: &str) -> Option<Node<'a, 'i>> {
        self.children()
            .find(|c| c.is_element() && c.tag_name().name() == name)
    }
    fn req_kid(&self, name: &str) -> Result<Node<'a, 'i>, LoadError> {
        self.kid(name)
            .ok_or_else(|| self.invalid(format!("required child element <{name}> is missing")))
    }
    fn attr(&self, name: &str) -> Option<&'a str> {
        self.attribute(name)
    }
    fn req_attr(&self, name: &str) -> Result<&'a str, LoadError> {
        self.attribute(name)
            .ok_or_else(|| LoadError::MissingAttribute {
                element: self.name().to_string(),
                attribute: name.to_string(),
                line: self.line(),
            })
    }
    fn parse_attr<T: FromStr>(&self, name: &str) -> Result<Option<T>, LoadError> {
        match self.attribute(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<T>()
                .map(Some)
                .map_err(|_| self.bad_attr(name, "cannot be parsed")),
        }
    }
    fn f64_attr(&self, name: &str) -> Result<Option<f64>, LoadError> {
        match self.attribute(name) {
            None => Ok(None),
            Some(v) => crate::value::parse_f64(v)
                .map(Some)
                .ok_or_else(|| self.bad_attr(name, "not a number")),
        }
    }
    fn req_f64(&self, name: &str) -> Result<f64, LoadError> {
        self.f64_attr(name)?
            .ok_or_else(|| LoadError::MissingAttribute {
                element: self.name().to_string(),
                attribute: name.to_string(),
                line: self.line(),
            })
    }
    fn bad_attr(&self, name: &str, reason: &str) -> LoadError {
        LoadError::InvalidAttribute {
            element: self.name().to_string(),
            attribute: name.to_string(),
            value: self
                .attribute(name)
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect(),
            reason: reason.to_string(),
            line: self.line(),
        }
    }
    fn invalid(&self, reason: impl Into<String>) -> LoadError {
        LoadError::InvalidElement {
            element: self.name().to_string(),
            reason: reason.into(),
            line: self.line(),
        }
    }
    fn unsupported(&self, what: impl Into<String>) -> LoadError {
        LoadError::Unsupported {
            element: self.name().to_string(),
            attribute: None,
            what: what.into(),
            line: self.line(),
        }
    }
    fn unsupported_attr(&self, attribute: &str) -> LoadError {
        LoadError::Unsupported {
            element: self.name().to_string(),
            attribute: Some(attribute.to_string()),
            what: format!(
                "{attribute}={:?}",
                self.attribute(attribute).unwrap_or_default()
            ),
            line: self.line(),
        }
    }
}
