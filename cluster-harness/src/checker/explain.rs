//! Describing operations, reports and violations for people.

use std::fmt::{self, Display, Formatter, Write};

use super::{Input, KeyReport, Operation, Outcome, Output, Report, Verdict, Violation};

/// The most characters (or bytes, for binary data) of a key or value shown.
const SHOWN_LENGTH: usize = 32;

/// The most operations of a linearized prefix listed; earlier ones are only counted.
const SHOWN_PREFIX: usize = 10;

/// Explains a violation; `violation` indexes into `history`.
pub(super) fn violation(history: &[Operation], violation: &Violation) -> String {
    let mut text = format!("the longest linearizable prefix found has {} operations", violation.linearized.len());
    let hidden = violation.linearized.len().saturating_sub(SHOWN_PREFIX);
    if hidden > 0 {
        let _ = write!(text, " (the first {hidden} not shown)");
    }
    text.push(':');
    list_operations(&mut text, history, &violation.linearized[hidden..]);
    let _ = write!(
        text,
        "\nafter which the key {}, and none of these operations can come next:",
        Holding(violation.register.as_deref())
    );
    list_operations(&mut text, history, &violation.unplaceable);
    text
}

fn list_operations(text: &mut String, history: &[Operation], indices: &[usize]) {
    for &index in indices {
        if let Some(operation) = history.get(index) {
            let _ = write!(text, "\n  #{index} {operation}");
        }
    }
}

impl Input {
    /// The kind of input, for error messages.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Input::Put(_) => "put",
            Input::Delete => "delete",
            Input::Get => "get",
            Input::CompareAndPut { .. } => "compare-and-put",
        }
    }
}

impl Output {
    /// The kind of output, for error messages.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Output::Ok => "ok",
            Output::Value(_) => "a value",
            Output::Cas(_) => "a compare-and-put result",
        }
    }
}

impl Display for Operation {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "client {}: {} on {} -> ", self.client, self.input, Bytes(&self.key))?;
        match &self.outcome {
            Outcome::Completed { at_ns, output } => {
                write!(f, "{output}, invoked at {} ns, completed at {at_ns} ns", self.invoked_ns)?;
                match &self.served {
                    Some(s) => write!(
                        f,
                        " (node {} at raft index {}, revision {}, term {})",
                        s.node, s.raft_index, s.revision, s.term
                    ),
                    None => Ok(()),
                }
            }
            Outcome::Unknown => write!(f, "unknown, invoked at {} ns, never completed", self.invoked_ns),
        }
    }
}

impl Display for Input {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Input::Put(value) => write!(f, "put {}", Bytes(value)),
            Input::Delete => f.write_str("delete"),
            Input::Get => f.write_str("get"),
            Input::CompareAndPut { expected, new } => {
                write!(f, "compare-and-put {} if {}", Bytes(new), Value(expected.as_deref()))
            }
        }
    }
}

impl Display for Output {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Output::Ok => f.write_str("ok"),
            Output::Value(value) => Value(value.as_deref()).fmt(f),
            Output::Cas(true) => f.write_str("stored"),
            Output::Cas(false) => f.write_str("not stored"),
        }
    }
}

impl Display for Verdict {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Linearizable => "linearizable",
            Verdict::NotLinearizable => "not linearizable",
            Verdict::Inconclusive => "inconclusive",
        })
    }
}

/// The overall verdict, then each key that is not linearizable with its explanation.
impl Display for Report {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} keys)", self.verdict, self.keys.len())?;
        for key in self.keys.iter().filter(|key| key.verdict != Verdict::Linearizable) {
            write!(f, "\n{key}")?;
        }
        Ok(())
    }
}

impl Display for KeyReport {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "key {} ({} operations): {}", Bytes(&self.key), self.operations, self.verdict)?;
        match &self.explanation {
            Some(explanation) => write!(f, ": {explanation}"),
            None => Ok(()),
        }
    }
}

/// A value, or "absent".
struct Value<'a>(Option<&'a [u8]>);

impl Display for Value<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(bytes) => Bytes(bytes).fmt(f),
            None => f.write_str("absent"),
        }
    }
}

/// "is absent" or "holds <value>".
struct Holding<'a>(Option<&'a [u8]>);

impl Display for Holding<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(bytes) => write!(f, "holds {}", Bytes(bytes)),
            None => f.write_str("is absent"),
        }
    }
}

/// A key or value: quoted if it is printable text, in hex otherwise, cut if long.
struct Bytes<'a>(&'a [u8]);

impl Display for Bytes<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok(text) if !text.chars().any(char::is_control) => write_text(f, text),
            _ => write_hex(f, self.0),
        }
    }
}

fn write_text(f: &mut Formatter<'_>, text: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in text.chars().take(SHOWN_LENGTH) {
        write!(f, "{}", c.escape_debug())?;
    }
    f.write_char('"')?;
    if text.chars().count() > SHOWN_LENGTH {
        f.write_str("...")?;
    }
    Ok(())
}

fn write_hex(f: &mut Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    f.write_str("0x")?;
    for byte in bytes.iter().take(SHOWN_LENGTH) {
        write!(f, "{byte:02x}")?;
    }
    if bytes.len() > SHOWN_LENGTH {
        f.write_str("...")?;
    }
    Ok(())
}
