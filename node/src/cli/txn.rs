//! `petkv txn`: a transaction read from a file or stdin and turned into a [`TxnRequest`].
//!
//! Two forms, told apart by the first non-blank character (`{`: JSON).
//!
//! The **text form** is `etcdctl txn`'s: three blocks, each ended by a blank line — the
//! compares, the operations run when they all hold (success), the operations run otherwise
//! (failure). Blocks at the end may be left out; a transaction without compares starts with a
//! blank line, and two blank lines in a row leave the block between them empty.
//!
//! ```text
//! version("config") = 0
//! value("mode") != "frozen"
//!
//! put config "first version"
//! get --prefix config
//!
//! get config
//! ```
//!
//! - Compares: `TARGET("KEY") OP OPERAND`, targets `version`, `create` (create revision),
//!   `mod` (mod revision), `lease` and `value`, operators `=`, `!=`, `>`, `<`. The operand is a
//!   whole number (bare, or quoted as etcdctl writes it), for `value` a quoted string.
//! - Operations: `put KEY VALUE [--prev-kv]`; `del KEY [END]`, `del --prefix KEY` (with
//!   `--prev-kv`); `get KEY [END]`, `get --prefix KEY` (with `--limit N`). `END` makes the
//!   range `[KEY, END)`.
//! - Keys and values are bare words or double-quoted strings with the escapes `\"`, `\\`,
//!   `\n`, `\t` and `\xHH` (any byte). A quoted word is never a flag: `"--prefix"` is a key.
//!
//! The **JSON form** holds the same (every list optional, unknown fields refused):
//!
//! ```json
//! {"compare": [{"key": "config", "target": "version", "op": "=", "number": 0}],
//!  "success": [{"put": {"key": "config", "value": "v", "prev_kv": true}},
//!              {"delete": {"key": "old/", "prefix": true}},
//!              {"get": {"key": "a", "range_end": "z", "limit": 5}}],
//!  "failure": []}
//! ```
//!
//! Errors name the line (text form) or carry serde's message and the entry's place (JSON form);
//! an input with nothing in it is refused. Limits (keys, values, 128 operations per list, a key
//! written twice) are the server's to check.

use petkv_client::pb::v1::compare::{Op as CompareOp, Target};
use petkv_client::pb::v1::txn_op::Op;
use petkv_client::pb::v1::{Compare, TxnDelete, TxnOp, TxnPut, TxnRange, TxnRequest};
use serde::Deserialize;

/// Why a transaction could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A line of the text form (numbered from 1).
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
    /// The JSON form.
    #[error("JSON: {0}")]
    Json(String),
    /// Nothing but blanks.
    #[error(
        "the transaction is empty: give compares, a blank line, the success operations, a blank line and the \
         failure operations (or the JSON form)"
    )]
    Empty,
}

/// Reads a transaction in either form (JSON when the first non-blank character is `{`).
pub fn parse(input: &str) -> Result<TxnRequest, ParseError> {
    let input = input.strip_prefix('\u{feff}').unwrap_or(input);
    if input.trim_start().starts_with('{') {
        parse_json(input)
    } else {
        parse_text(input)
    }
}

// ---------------------------------------------------------------------------------------------
// The text form

/// Reads the text form.
pub fn parse_text(input: &str) -> Result<TxnRequest, ParseError> {
    let lines: Vec<&str> = input.lines().collect();
    // Blank lines at the end close the last block; they open none.
    let end = lines.iter().rposition(|l| !l.trim().is_empty()).map_or(0, |i| i + 1);
    if end == 0 {
        return Err(ParseError::Empty);
    }
    let mut request = TxnRequest::default();
    let mut block = 0;
    for (i, raw) in lines[..end].iter().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            block += 1;
            continue;
        }
        let at = |message: String| ParseError::Line { line: i + 1, message };
        match block {
            0 => request.compare.push(parse_compare(line).map_err(at)?),
            1 => request.success.push(parse_op(line).map_err(at)?),
            2 => request.failure.push(parse_op(line).map_err(at)?),
            _ => {
                return Err(at(format!(
                    "`{line}` starts a fourth block; a transaction has three (compares, success operations, \
                     failure operations), each ended by one blank line"
                )))
            }
        }
    }
    Ok(request)
}

/// A place in one line.
struct Cursor<'a> {
    line: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(line: &'a str) -> Self {
        Cursor { line, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.line[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.line.len()
    }

    fn skip_whitespace(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    /// Consumes `c` if it comes next.
    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    /// The longest run of characters matching `f`.
    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let rest = self.rest();
        let n = rest.find(|c: char| !f(c)).unwrap_or(rest.len());
        self.pos += n;
        &rest[..n]
    }

    /// A double-quoted string (the cursor is on its opening quote), escapes resolved.
    fn quoted(&mut self) -> Result<Vec<u8>, String> {
        let column = self.line[..self.pos].chars().count() + 1;
        if !self.eat('"') {
            return Err("expected a double-quoted string".into());
        }
        let mut out = Vec::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, '"')) => out.push(b'"'),
                    Some((_, '\\')) => out.push(b'\\'),
                    Some((_, 'n')) => out.push(b'\n'),
                    Some((_, 't')) => out.push(b'\t'),
                    Some((_, 'x')) => {
                        let hex: String = chars.by_ref().take(2).map(|(_, c)| c).collect();
                        match (hex.len(), u8::from_str_radix(&hex, 16)) {
                            (2, Ok(b)) if hex.chars().all(|c| c.is_ascii_hexdigit()) => out.push(b),
                            _ => {
                                return Err(format!("bad escape `\\x{hex}`: \\x takes two hex digits (\\x00 to \\xff)"))
                            }
                        }
                    }
                    Some((_, other)) => {
                        return Err(format!("unknown escape `\\{other}` (use \\\", \\\\, \\n, \\t or \\xHH)"))
                    }
                    None => break,
                },
                c => {
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        Err(format!("missing closing quote for the string that starts at column {column}"))
    }
}

/// A word of an operation line.
#[derive(Debug)]
enum Token {
    /// Unquoted: a flag when it starts with `--`.
    Bare(String),
    Quoted(Vec<u8>),
}

fn tokens(line: &str) -> Result<Vec<Token>, String> {
    let mut cursor = Cursor::new(line);
    let mut out = Vec::new();
    loop {
        cursor.skip_whitespace();
        if cursor.at_end() {
            return Ok(out);
        }
        if cursor.peek() == Some('"') {
            out.push(Token::Quoted(cursor.quoted()?));
            if !(cursor.at_end() || cursor.peek().is_some_and(char::is_whitespace)) {
                return Err(format!("expected a space after the quoted string, found `{}`", cursor.rest()));
            }
        } else {
            let word = cursor.take_while(|c| !c.is_whitespace());
            if word.contains('"') {
                return Err(format!("`{word}`: a quote inside a word (quote the whole word: \"…\")"));
            }
            out.push(Token::Bare(word.to_string()));
        }
    }
}

const TARGETS: &str = "version, create, mod, value or lease";
const OPERATORS: &str = "=, !=, > or <";

fn parse_compare(line: &str) -> Result<Compare, String> {
    let mut c = Cursor::new(line);
    let name = c.take_while(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-');
    let target = match name {
        "version" => Target::Version,
        "create" => Target::CreateRevision,
        "mod" => Target::ModRevision,
        "value" => Target::Value,
        "lease" => Target::Lease,
        "put" | "del" | "delete" | "get" => {
            return Err(format!(
                "`{name}` is an operation, not a compare: operations go in the second and third blocks (a \
                 transaction without compares starts with a blank line)"
            ))
        }
        "" => return Err(format!("expected a compare like `version(\"key\") = 3`, found `{line}`")),
        other => return Err(format!("unknown compare target `{other}` (use {TARGETS})")),
    };
    c.skip_whitespace();
    if !c.eat('(') {
        return Err(format!("expected `(` after `{name}`, as in `{name}(\"key\")`"));
    }
    c.skip_whitespace();
    if c.peek() != Some('"') {
        return Err(format!("expected a quoted key after `{name}(`, as in `{name}(\"key\")`"));
    }
    let key = c.quoted()?;
    c.skip_whitespace();
    if !c.eat(')') {
        return Err(format!("expected `)` after the key of `{name}(…)`"));
    }
    c.skip_whitespace();
    let op = match c.take_while(|ch| matches!(ch, '=' | '!' | '<' | '>')) {
        "=" => CompareOp::Equal,
        "!=" => CompareOp::NotEqual,
        ">" => CompareOp::Greater,
        "<" => CompareOp::Less,
        "" => return Err(format!("expected an operator ({OPERATORS}) after `{name}(…)`")),
        other => return Err(format!("unknown operator `{other}` (use {OPERATORS})")),
    };
    c.skip_whitespace();
    let mut compare =
        Compare { key: key.into(), target: target as i32, op: op as i32, number: 0, value: Default::default() };
    if target == Target::Value {
        if c.peek() != Some('"') {
            return Err(format!(
                "value compares with a quoted string, as in `value(\"key\") = \"v\"`; found `{}`",
                c.rest()
            ));
        }
        compare.value = c.quoted()?.into();
    } else {
        let word = if c.peek() == Some('"') {
            String::from_utf8_lossy(&c.quoted()?).into_owned()
        } else {
            c.take_while(|ch| !ch.is_whitespace()).to_string()
        };
        if word.is_empty() {
            return Err(format!("expected a number after the operator of `{name}(…)`"));
        }
        compare.number = number(&word).map_err(|e| format!("{e} for {name}"))?;
    }
    c.skip_whitespace();
    if !c.at_end() {
        return Err(format!("unexpected `{}` after the compare", c.rest()));
    }
    Ok(compare)
}

fn number<T: std::str::FromStr>(word: &str) -> Result<T, String> {
    word.parse().map_err(|_| format!("bad number `{word}`: expected a whole number, 0 or more"))
}

fn parse_op(line: &str) -> Result<TxnOp, String> {
    let mut c = Cursor::new(line);
    let name = c.take_while(|ch| ch.is_ascii_alphanumeric() || ch == '_');
    c.skip_whitespace();
    if c.peek() == Some('(') {
        return Err(format!("`{name}(…)` is a compare, not an operation: compares go in the first block"));
    }
    let mut tokens = tokens(line)?.into_iter();
    let verb = match tokens.next() {
        Some(Token::Bare(verb)) => verb,
        Some(Token::Quoted(_)) | None => {
            return Err(format!("expected an operation (put, del or get), found `{line}`"));
        }
    };
    let (usage, flags): (&str, &[&str]) = match verb.as_str() {
        "put" => ("put KEY VALUE [--prev-kv]", &["--prev-kv"]),
        "del" | "delete" => ("del KEY [END] | del --prefix KEY, with [--prev-kv]", &["--prefix", "--prev-kv"]),
        "get" => ("get KEY [END] | get --prefix KEY, with [--limit N]", &["--prefix", "--limit"]),
        other => return Err(format!("unknown operation `{other}` (use put, del or get)")),
    };
    let mut args: Vec<Vec<u8>> = Vec::new();
    let (mut prefix, mut prev_kv, mut limit) = (false, false, None);
    while let Some(token) = tokens.next() {
        let flag = match token {
            Token::Quoted(word) => {
                args.push(word);
                continue;
            }
            Token::Bare(word) if !word.starts_with("--") => {
                args.push(word.into_bytes());
                continue;
            }
            Token::Bare(flag) => flag,
        };
        if !flags.contains(&flag.as_str()) {
            return Err(format!("unknown flag `{flag}` for {verb} (usage: {usage})"));
        }
        let repeated = match flag.as_str() {
            "--prefix" => std::mem::replace(&mut prefix, true),
            "--prev-kv" => std::mem::replace(&mut prev_kv, true),
            _ => {
                let n = match tokens.next() {
                    Some(Token::Bare(n)) => number::<u32>(&n).map_err(|e| format!("{e} for --limit"))?,
                    Some(Token::Quoted(n)) => {
                        number::<u32>(&String::from_utf8_lossy(&n)).map_err(|e| format!("{e} for --limit"))?
                    }
                    None => return Err("--limit needs a number".into()),
                };
                limit.replace(n).is_some()
            }
        };
        if repeated {
            return Err(format!("{flag} given twice"));
        }
    }
    let mut args = args.into_iter();
    let (key, end) = match (args.next(), args.next(), args.next()) {
        (Some(key), end, None) if verb != "put" => (key, end),
        (Some(key), Some(value), None) if verb == "put" => {
            let put = TxnPut { key: key.into(), value: value.into(), lease: 0, prev_kv };
            return Ok(TxnOp { op: Some(Op::Put(put)) });
        }
        (None, ..) => return Err(format!("{verb} needs a key (usage: {usage})")),
        _ => return Err(format!("wrong number of arguments to {verb} (usage: {usage})")),
    };
    if prefix && end.is_some() {
        return Err(format!("{verb}: --prefix and a range end together; give one (usage: {usage})"));
    }
    let range_end = end.unwrap_or_default().into();
    let op = if verb == "get" {
        Op::Range(TxnRange { key: key.into(), range_end, prefix, limit: limit.unwrap_or(0) })
    } else {
        Op::Delete(TxnDelete { key: key.into(), range_end, prefix, prev_kv })
    };
    Ok(TxnOp { op: Some(op) })
}

// ---------------------------------------------------------------------------------------------
// The JSON form

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonTxn {
    #[serde(default)]
    compare: Vec<JsonCompare>,
    #[serde(default)]
    success: Vec<JsonOp>,
    #[serde(default)]
    failure: Vec<JsonOp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonCompare {
    key: String,
    target: JsonTarget,
    op: JsonCompareOp,
    #[serde(default)]
    number: Option<u64>,
    #[serde(default)]
    value: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum JsonTarget {
    Version,
    Create,
    Mod,
    Value,
    Lease,
}

impl JsonTarget {
    fn name(self) -> &'static str {
        match self {
            JsonTarget::Version => "version",
            JsonTarget::Create => "create",
            JsonTarget::Mod => "mod",
            JsonTarget::Value => "value",
            JsonTarget::Lease => "lease",
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
enum JsonCompareOp {
    #[serde(rename = "=")]
    Equal,
    #[serde(rename = "!=")]
    NotEqual,
    #[serde(rename = ">")]
    Greater,
    #[serde(rename = "<")]
    Less,
}

/// One operation: exactly one of its fields is set (checked after parsing, for a message that
/// names the entry; serde's own for an externally tagged enum with two keys does not).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonOp {
    #[serde(default)]
    put: Option<JsonPut>,
    #[serde(default)]
    delete: Option<JsonDelete>,
    #[serde(default)]
    get: Option<JsonGet>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonPut {
    key: String,
    value: String,
    #[serde(default)]
    prev_kv: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonDelete {
    key: String,
    #[serde(default)]
    range_end: String,
    #[serde(default)]
    prefix: bool,
    #[serde(default)]
    prev_kv: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonGet {
    key: String,
    #[serde(default)]
    range_end: String,
    #[serde(default)]
    prefix: bool,
    #[serde(default)]
    limit: u32,
}

/// Reads the JSON form.
pub fn parse_json(input: &str) -> Result<TxnRequest, ParseError> {
    let txn: JsonTxn = serde_json::from_str(input).map_err(|e| ParseError::Json(e.to_string()))?;
    if txn.compare.is_empty() && txn.success.is_empty() && txn.failure.is_empty() {
        return Err(ParseError::Empty);
    }
    let compare = txn.compare.into_iter().enumerate().map(|(i, c)| json_compare(i, c)).collect::<Result<_, _>>()?;
    let ops = |list: &str, ops: Vec<JsonOp>| {
        ops.into_iter().enumerate().map(|(i, op)| json_op(&format!("{list}[{i}]"), op)).collect::<Result<_, _>>()
    };
    Ok(TxnRequest {
        compare,
        success: ops("success", txn.success)?,
        failure: ops("failure", txn.failure)?,
        write_id: None,
    })
}

fn json_compare(i: usize, c: JsonCompare) -> Result<Compare, ParseError> {
    let place = format!("compare[{i}]");
    let target = match c.target {
        JsonTarget::Version => Target::Version,
        JsonTarget::Create => Target::CreateRevision,
        JsonTarget::Mod => Target::ModRevision,
        JsonTarget::Value => Target::Value,
        JsonTarget::Lease => Target::Lease,
    };
    let op = match c.op {
        JsonCompareOp::Equal => CompareOp::Equal,
        JsonCompareOp::NotEqual => CompareOp::NotEqual,
        JsonCompareOp::Greater => CompareOp::Greater,
        JsonCompareOp::Less => CompareOp::Less,
    };
    let (number, value) = match (target, c.number, c.value) {
        (Target::Value, None, Some(value)) => (0, value.into_bytes()),
        (Target::Value, ..) => {
            return Err(ParseError::Json(format!(
                "{place}: target \"value\" takes a string \"value\" and no \"number\""
            )))
        }
        (_, Some(number), None) => (number, Vec::new()),
        _ => {
            return Err(ParseError::Json(format!(
                "{place}: target \"{}\" takes a \"number\" and no \"value\"",
                c.target.name()
            )))
        }
    };
    Ok(Compare { key: c.key.into_bytes().into(), target: target as i32, op: op as i32, number, value: value.into() })
}

fn json_op(place: &str, op: JsonOp) -> Result<TxnOp, ParseError> {
    let both = |what: &str| ParseError::Json(format!("{place}.{what}: set \"prefix\" or \"range_end\", not both"));
    let op = match (op.put, op.delete, op.get) {
        (Some(p), None, None) => Op::Put(TxnPut {
            key: p.key.into_bytes().into(),
            value: p.value.into_bytes().into(),
            lease: 0,
            prev_kv: p.prev_kv,
        }),
        (None, Some(d), None) if d.prefix && !d.range_end.is_empty() => return Err(both("delete")),
        (None, Some(d), None) => Op::Delete(TxnDelete {
            key: d.key.into_bytes().into(),
            range_end: d.range_end.into_bytes().into(),
            prefix: d.prefix,
            prev_kv: d.prev_kv,
        }),
        (None, None, Some(g)) if g.prefix && !g.range_end.is_empty() => return Err(both("get")),
        (None, None, Some(g)) => Op::Range(TxnRange {
            key: g.key.into_bytes().into(),
            range_end: g.range_end.into_bytes().into(),
            prefix: g.prefix,
            limit: g.limit,
        }),
        (None, None, None) => {
            return Err(ParseError::Json(format!("{place}: no operation; give one of \"put\", \"delete\" or \"get\"")))
        }
        _ => {
            return Err(ParseError::Json(format!(
                "{place}: more than one operation in one entry; give one of \"put\", \"delete\" or \"get\" each"
            )))
        }
    };
    Ok(TxnOp { op: Some(op) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> TxnRequest {
        match parse(input) {
            Ok(r) => r,
            Err(e) => panic!("{input:?} should parse: {e}"),
        }
    }

    /// The error `input` gets, as printed.
    fn err(input: &str) -> String {
        match parse(input) {
            Ok(r) => panic!("{input:?} should be refused, parsed as {r:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn compare(line: &str) -> Compare {
        let r = ok(line);
        assert_eq!(r.compare.len(), 1, "{line}");
        r.compare[0].clone()
    }

    /// The operation `line` is, as a success operation.
    fn op(line: &str) -> Op {
        let r = ok(&format!("\n{line}\n"));
        assert_eq!(r.success.len(), 1, "{line}");
        r.success[0].op.clone().expect("an op")
    }

    fn num(key: &str, target: Target, op: CompareOp, number: u64) -> Compare {
        Compare {
            key: key.as_bytes().to_vec().into(),
            target: target as i32,
            op: op as i32,
            number,
            value: Default::default(),
        }
    }

    fn val(key: &str, op: CompareOp, value: &[u8]) -> Compare {
        Compare {
            key: key.as_bytes().to_vec().into(),
            target: Target::Value as i32,
            op: op as i32,
            number: 0,
            value: value.to_vec().into(),
        }
    }

    fn put(key: &str, value: &[u8], prev_kv: bool) -> Op {
        Op::Put(TxnPut { key: key.as_bytes().to_vec().into(), value: value.to_vec().into(), lease: 0, prev_kv })
    }

    fn del(key: &str, end: &str, prefix: bool, prev_kv: bool) -> Op {
        Op::Delete(TxnDelete {
            key: key.as_bytes().to_vec().into(),
            range_end: end.as_bytes().to_vec().into(),
            prefix,
            prev_kv,
        })
    }

    fn get(key: &str, end: &str, prefix: bool, limit: u32) -> Op {
        Op::Range(TxnRange {
            key: key.as_bytes().to_vec().into(),
            range_end: end.as_bytes().to_vec().into(),
            prefix,
            limit,
        })
    }

    #[test]
    fn every_compare_target_and_operator() {
        use CompareOp::*;
        assert_eq!(compare(r#"version("k") = 3"#), num("k", Target::Version, Equal, 3));
        assert_eq!(compare(r#"create("k") > 0"#), num("k", Target::CreateRevision, Greater, 0));
        assert_eq!(compare(r#"mod("k") < 10"#), num("k", Target::ModRevision, Less, 10));
        assert_eq!(compare(r#"lease("k") != 0"#), num("k", Target::Lease, NotEqual, 0));
        assert_eq!(compare(r#"value("k") = "v""#), val("k", Equal, b"v"));
        assert_eq!(compare(r#"value("k") != """#), val("k", NotEqual, b""));
        assert_eq!(compare(r#"value("k") > "a b""#), val("k", Greater, b"a b"));
        assert_eq!(compare(r#"value("k") < "z""#), val("k", Less, b"z"));
        // Spacing is free, and etcdctl's quoted numbers are numbers.
        assert_eq!(compare(r#"  mod ( "k" )>"0"  "#), num("k", Target::ModRevision, Greater, 0));
        assert_eq!(compare(&format!(r#"version("k")={}"#, u64::MAX)), num("k", Target::Version, Equal, u64::MAX));
    }

    #[test]
    fn every_operation_form() {
        assert_eq!(op("put k v"), put("k", b"v", false));
        assert_eq!(op(r#"put "a key" "a value" --prev-kv"#), put("a key", b"a value", true));
        assert_eq!(op("put --prev-kv k v"), put("k", b"v", true));
        assert_eq!(op("del k"), del("k", "", false, false));
        assert_eq!(op("delete k"), del("k", "", false, false));
        assert_eq!(op("del --prefix k"), del("k", "", true, false));
        assert_eq!(op("del a z --prev-kv"), del("a", "z", false, true));
        assert_eq!(op(r#"del --prefix "" --prev-kv"#), del("", "", true, true));
        assert_eq!(op("get k"), get("k", "", false, 0));
        assert_eq!(op("get --prefix k"), get("k", "", true, 0));
        assert_eq!(op("get a z --limit 5"), get("a", "z", false, 5));
        assert_eq!(op("get --limit 2 --prefix k"), get("k", "", true, 2));
        // A quoted word is never a flag.
        assert_eq!(op(r#"put "--prefix" "--prev-kv""#), put("--prefix", b"--prev-kv", false));
    }

    #[test]
    fn escapes_in_quoted_strings() {
        assert_eq!(op(r#"put "q\"uote" "back\\slash""#), put("q\"uote", b"back\\slash", false));
        assert_eq!(op(r#"put k "line\nbreak\ttab""#), put("k", b"line\nbreak\ttab", false));
        assert_eq!(op(r#"put k "\x00\xff\x41""#), put("k", &[0, 0xff, b'A'], false));
        assert_eq!(op(r#"put k "héllo""#), put("k", "héllo".as_bytes(), false));
        assert_eq!(compare(r#"value("a\"b") = "\x7f""#), val("a\"b", CompareOp::Equal, &[0x7f]));
    }

    #[test]
    fn the_three_blocks() {
        let r = ok("version(\"k\") = 0\nmod(\"j\") > 1\n\nput k v\nget j\n\nget k\n\n\n");
        assert_eq!(r.compare.len(), 2);
        assert_eq!(
            r.success.iter().map(|o| o.op.clone().expect("op")).collect::<Vec<_>>(),
            [put("k", b"v", false), get("j", "", false, 0)]
        );
        assert_eq!(r.failure.len(), 1);
        assert_eq!(r.write_id, None);

        // Trailing blocks left out; CRLF line ends; whitespace-only lines are blank.
        let r = ok("value(\"k\") = \"v\"\r\n  \r\ndel k\r\n");
        assert_eq!((r.compare.len(), r.success.len(), r.failure.len()), (1, 1, 0));
        let r = ok("version(\"k\") = 1\n");
        assert_eq!((r.compare.len(), r.success.len(), r.failure.len()), (1, 0, 0));
        // No compares: a leading blank line; an empty success block: two blank lines.
        let r = ok("\nput k v\n");
        assert_eq!((r.compare.len(), r.success.len(), r.failure.len()), (0, 1, 0));
        let r = ok("version(\"k\") = 1\n\n\nput k v\n");
        assert_eq!((r.compare.len(), r.success.len(), r.failure.len()), (1, 0, 1));
    }

    #[test]
    fn bad_lines_are_named() {
        // An unknown operation, and a compare in an operation block.
        assert_eq!(
            err("version(\"k\") = 0\n\nput k v\nfrobnicate k\n"),
            "line 4: unknown operation `frobnicate` (use put, del or get)"
        );
        assert_eq!(
            err("\nversion(\"k\") = 0\n"),
            "line 2: `version(…)` is a compare, not an operation: compares go in the first block"
        );
        // An operation in the compare block.
        let e = err("put k v\n");
        assert!(e.starts_with("line 1: `put` is an operation, not a compare"), "{e}");
        // Missing quotes.
        assert_eq!(err("\nput \"k v\n"), "line 2: missing closing quote for the string that starts at column 5");
        assert!(err("version(\"k) = 3").starts_with("line 1: missing closing quote"));
        assert!(err("version(k) = 3").starts_with("line 1: expected a quoted key after `version(`"));
        assert!(err("value(\"k\") = v").starts_with("line 1: value compares with a quoted string"));
        assert!(err("\nput k\"x v\n").contains("a quote inside a word"));
        assert!(err("\nput \"k\"x v\n").contains("expected a space after the quoted string"));
        // Bad numbers.
        assert_eq!(
            err("version(\"k\") = three"),
            "line 1: bad number `three`: expected a whole number, 0 or more for version"
        );
        assert!(err("mod(\"k\") > -1").contains("bad number `-1`"));
        assert!(err("mod(\"k\") > 18446744073709551616").contains("bad number"));
        assert!(err("\nget k --limit x\n").contains("bad number `x`"));
        assert!(err("\nget k --limit\n").contains("--limit needs a number"));
        assert!(err("mod(\"k\") >").contains("expected a number"));
        // Unknown targets and operators.
        assert_eq!(
            err("size(\"k\") = 3"),
            "line 1: unknown compare target `size` (use version, create, mod, value or lease)"
        );
        assert_eq!(err("version(\"k\") == 3"), "line 1: unknown operator `==` (use =, !=, > or <)");
        assert!(err("version(\"k\") 3").contains("expected an operator"));
        assert!(err("version(\"k\") = 3 4").contains("unexpected `4` after the compare"));
        assert!(err("version \"k\" = 3").contains("expected `(`"));
        assert!(err("version(\"k\" = 3").contains("expected `)`"));
        // Bad escapes.
        assert!(err("\nput k \"\\q\"\n").contains("unknown escape `\\q`"));
        assert!(err("\nput k \"\\x4\"\n").contains("bad escape"));
        assert!(err("\nput k \"\\xzz\"\n").contains("bad escape `\\xzz`"));
        // A fourth block.
        assert!(err("version(\"k\") = 0\n\nput k v\n\nget k\n\nget j\n")
            .starts_with("line 7: `get j` starts a fourth block"));
        // Wrong arguments and flags.
        assert!(err("\nput k\n").contains("wrong number of arguments to put"));
        assert!(err("\nput k v w\n").contains("wrong number of arguments to put"));
        assert!(err("\nget\n").contains("get needs a key"));
        assert!(err("\ndel a b c\n").contains("wrong number of arguments to del"));
        assert!(err("\nget --prefix a z\n").contains("--prefix and a range end together"));
        assert!(err("\nget k --prev-kv\n").contains("unknown flag `--prev-kv` for get"));
        assert!(err("\nput k v --limit 3\n").contains("unknown flag `--limit` for put"));
        assert!(err("\ndel k --prefix --prefix\n").contains("--prefix given twice"));
        assert!(err("\n\"put\" k v\n").contains("expected an operation"));
        // Nothing at all.
        assert_eq!(parse(" \n\n  \n"), Err(ParseError::Empty));
        assert_eq!(parse(""), Err(ParseError::Empty));
    }

    #[test]
    fn the_json_form() {
        let r = ok(r#"
            {"compare": [
                {"key": "k", "target": "version", "op": "=", "number": 3},
                {"key": "k", "target": "create", "op": ">", "number": 0},
                {"key": "k", "target": "mod", "op": "<", "number": 10},
                {"key": "k", "target": "lease", "op": "!=", "number": 0},
                {"key": "k", "target": "value", "op": "=", "value": "v"}],
             "success": [
                {"put": {"key": "k", "value": "v", "prev_kv": true}},
                {"delete": {"key": "p", "prefix": true}},
                {"delete": {"key": "a", "range_end": "b", "prev_kv": true}},
                {"get": {"key": "k", "range_end": "z", "limit": 5}}],
             "failure": [{"get": {"key": "k", "prefix": true}}]}"#);
        use CompareOp::*;
        assert_eq!(
            r.compare,
            [
                num("k", Target::Version, Equal, 3),
                num("k", Target::CreateRevision, Greater, 0),
                num("k", Target::ModRevision, Less, 10),
                num("k", Target::Lease, NotEqual, 0),
                val("k", Equal, b"v"),
            ]
        );
        let ops = |list: &[TxnOp]| list.iter().map(|o| o.op.clone().expect("op")).collect::<Vec<_>>();
        assert_eq!(
            ops(&r.success),
            [put("k", b"v", true), del("p", "", true, false), del("a", "b", false, true), get("k", "z", false, 5)]
        );
        assert_eq!(ops(&r.failure), [get("k", "", true, 0)]);
        // Every list may be left out.
        let r = ok(r#"{"success": [{"put": {"key": "k", "value": "v"}}]}"#);
        assert_eq!((r.compare.len(), r.success.len(), r.failure.len()), (0, 1, 0));
    }

    #[test]
    fn bad_json_is_explained() {
        let e = err(r#"{"compare": [], "sucess": []}"#);
        assert!(e.starts_with("JSON: unknown field `sucess`"), "{e}");
        let e = err(r#"{"success": [{"put": {"key": "k", "value": "v", "lease": 1}}]}"#);
        assert!(e.contains("unknown field `lease`"), "{e}");
        let e = err(r#"{"success": [{"range": {"key": "k"}}]}"#);
        assert!(e.contains("unknown field `range`, expected one of `put`, `delete`, `get`"), "{e}");
        let e = err(r#"{"success": [{}]}"#);
        assert_eq!(e, r#"JSON: success[0]: no operation; give one of "put", "delete" or "get""#);
        let e = err(r#"{"compare": [{"key": "k", "target": "size", "op": "=", "number": 1}]}"#);
        assert!(e.contains("unknown variant `size`"), "{e}");
        let e = err(r#"{"compare": [{"key": "k", "target": "mod", "op": "==", "number": 1}]}"#);
        assert!(e.contains("unknown variant `==`"), "{e}");
        let e = err(r#"{"compare": [{"key": "k", "target": "mod", "op": "=", "number": -1}]}"#);
        assert!(e.contains("invalid value"), "{e}");
        let e = err(r#"{"compare": [{"key": "k", "target": "mod", "op": "=", "value": "1"}]}"#);
        assert_eq!(e, r#"JSON: compare[0]: target "mod" takes a "number" and no "value""#);
        let e = err(r#"{"compare": [{"key": "k", "target": "value", "op": "=", "number": 1}]}"#);
        assert_eq!(e, r#"JSON: compare[0]: target "value" takes a string "value" and no "number""#);
        let e =
            err(r#"{"failure": [{"get": {"key": "k"}}, {"delete": {"key": "a", "range_end": "b", "prefix": true}}]}"#);
        assert_eq!(e, r#"JSON: failure[1].delete: set "prefix" or "range_end", not both"#);
        let e = err(r#"{"success": [{"put": {"key": "k", "value": "v"}, "get": {"key": "k"}}]}"#);
        assert_eq!(
            e,
            r#"JSON: success[0]: more than one operation in one entry; give one of "put", "delete" or "get" each"#
        );
        let e = err("{\"success\": [\n{\"put\": {\"key\": \"k\"}}]}");
        assert!(e.contains("missing field `value`") && e.contains("line 2"), "{e}");
        assert!(err("{\"success\": [").starts_with("JSON: EOF"));
        assert_eq!(parse("  {}"), Err(ParseError::Empty));
    }
}
