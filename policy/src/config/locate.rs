//! Where each node of a YAML document is, so problems found after deserialisation can still
//! point at a line.
//!
//! serde only reports locations for errors it finds itself. This module re-reads the text with
//! an event parser that keeps positions and records, for each node path such as
//! `tenants[0].routes[1].upstream`, where its key and its value start.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, Span};

/// A 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) line: usize,
    pub(crate) column: usize,
}

impl Position {
    fn from_span(span: &Span) -> Position {
        Position {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct NodeLoc {
    /// Where the key naming this node is (None for sequence items and the root).
    key: Option<Position>,
    /// Where the node's value starts.
    value: Position,
}

/// Node path -> position map for one document.
#[derive(Debug, Default)]
pub(crate) struct Locations {
    nodes: HashMap<String, NodeLoc>,
}

enum Frame {
    Mapping {
        path: String,
        /// The key just read and where it was; `None` while a key is expected.
        key: Option<(String, Position)>,
        /// Set while a complex (non-scalar) key is being skipped.
        is_key: bool,
    },
    Sequence {
        path: String,
        next_index: usize,
        is_key: bool,
    },
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

impl Locations {
    /// Reads the positions of `text`'s first document. A document the parser cannot read
    /// yields whatever was gathered before the error: locations are a courtesy, never a reason
    /// to fail.
    pub(crate) fn from_text(text: &str) -> Locations {
        let mut locs = Locations::default();
        let mut stack: Vec<Frame> = Vec::new();
        let mut parser = Parser::new_from_str(text);
        while let Some(Ok((event, span))) = parser.next_event() {
            let pos = Position::from_span(&span);
            match event {
                Event::Scalar(value, ..) => {
                    locs.node(&mut stack, pos, Some(&value));
                }
                Event::Alias(_) => {
                    locs.node(&mut stack, pos, Some("<alias>"));
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let is_mapping = matches!(event, Event::MappingStart(..));
                    let (path, is_key) = match locs.node(&mut stack, pos, None) {
                        Some(path) => (path, false),
                        None => (String::new(), true),
                    };
                    stack.push(if is_mapping {
                        Frame::Mapping {
                            path,
                            key: None,
                            is_key,
                        }
                    } else {
                        Frame::Sequence {
                            path,
                            next_index: 0,
                            is_key,
                        }
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    let was_key = match stack.pop() {
                        Some(Frame::Mapping { is_key, .. } | Frame::Sequence { is_key, .. }) => {
                            is_key
                        }
                        None => false,
                    };
                    if was_key {
                        if let Some(Frame::Mapping { key, .. }) = stack.last_mut() {
                            *key = Some(("<complex key>".to_owned(), pos));
                        }
                    }
                }
                Event::DocumentEnd => break,
                _ => {}
            }
        }
        locs
    }

    /// Records a node starting at `pos`. `scalar` is its text for scalars. Returns the node's
    /// path, or `None` when the node is a mapping key.
    fn node(&mut self, stack: &mut [Frame], pos: Position, scalar: Option<&str>) -> Option<String> {
        let (path, key_pos) = match stack.last_mut() {
            None => (String::new(), None),
            Some(Frame::Sequence {
                path, next_index, ..
            }) => {
                let p = format!("{path}[{next_index}]");
                *next_index += 1;
                (p, None)
            }
            Some(Frame::Mapping { path, key, .. }) => match key.take() {
                Some((k, key_pos)) => (join(path, &k), Some(key_pos)),
                None => {
                    if let Some(s) = scalar {
                        *key = Some((s.to_owned(), pos));
                    }
                    return None;
                }
            },
        };
        self.nodes.entry(path.clone()).or_insert(NodeLoc {
            key: key_pos,
            value: pos,
        });
        Some(path)
    }

    /// Where the value at `path` starts, falling back to the nearest located ancestor.
    pub(crate) fn value(&self, path: &str) -> Option<Position> {
        self.find(path).map(|loc| loc.value)
    }

    /// Where the key naming `path` is (or the value, for sequence items), falling back to the
    /// nearest located ancestor. Used for problems about a whole mapping.
    pub(crate) fn key(&self, path: &str) -> Option<Position> {
        self.find(path).map(|loc| loc.key.unwrap_or(loc.value))
    }

    /// The node at `path` or its nearest located ancestor. The document root only answers for
    /// itself: a missing top-level key has no line worth pointing at.
    fn find(&self, mut path: &str) -> Option<&NodeLoc> {
        if path.is_empty() {
            return self.nodes.get("");
        }
        while !path.is_empty() {
            if let Some(loc) = self.nodes.get(path) {
                return Some(loc);
            }
            let cut = path.rfind(['.', '[']).unwrap_or(0);
            path = &path[..cut];
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
listeners:
  - name: public
    tls:
      certificate: a
    trusted_proxies: [10.0.0.0/8, \"x\"]
  -
    name: b
? [complex, key]
: value
after: 1
";

    fn at(line: usize, column: usize) -> Option<Position> {
        Some(Position { line, column })
    }

    #[test]
    fn records_keys_and_values() {
        let locs = Locations::from_text(DOC);
        assert_eq!(locs.value("listeners[0].name"), at(2, 11));
        assert_eq!(locs.key("listeners[0].name"), at(2, 5));
        assert_eq!(locs.key("listeners[0]"), at(2, 5));
        assert_eq!(locs.key("listeners[0].tls"), at(3, 5));
        assert_eq!(locs.value("listeners[0].tls.certificate"), at(4, 20));
        assert_eq!(locs.value("listeners[0].trusted_proxies[1]"), at(5, 35));
        assert_eq!(locs.value("listeners[1].name"), at(7, 11));
        assert_eq!(locs.value("after"), at(10, 8));
    }

    #[test]
    fn falls_back_to_ancestors() {
        let locs = Locations::from_text(DOC);
        assert_eq!(locs.key("listeners[0].tls.client_ca"), at(3, 5));
        assert_eq!(locs.value("nothing.here"), None);
        assert_eq!(locs.value(""), at(1, 1));
        assert_eq!(Locations::from_text("").value(""), None);
        assert_eq!(Locations::from_text("[1, {").value(""), at(1, 1));
    }
}
