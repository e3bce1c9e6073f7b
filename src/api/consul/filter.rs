//! Consul `GET /v1/agent/services?filter=<expr>`: the go-bexpr subset Consul accepts
//! (SPEC-control-api.md §2.4), parsed into a small AST and evaluated against the
//! AgentService JSON object that the endpoint returns.
//!
//! Grammar (go-bexpr `grammar/grammar.peg`, minus `any`/`all` collection expressions and
//! `is nil`):
//!
//! ```text
//! expr     := and ("or" and)*
//! and      := not ("and" not)*
//! not      := "not" not | "(" expr ")" | match
//! match    := selector ("==" | "!=" | ["not"] "contains" | ["not"] "matches") value
//!           | selector "is" ["not"] "empty"
//!           | value ["not"] "in" selector
//! selector := ident ("." ident | "." digits | "[" string "]")*   |   "\"/json/pointer\""
//! value    := string | number | selector (taken literally, as bexpr does: `Service == web`)
//! ```
//!
//! Precedence is bexpr's: `not` binds tighter than `and`, which binds tighter than `or`.
//! Unlike the Go PEG, keywords need no whitespace around them when a parenthesis or a quote
//! already separates them (`not(Service == "web")` is accepted), and `\"` may be used
//! inside a double-quoted string; every expression bexpr accepts means the same here.
//!
//! Selectors are checked against the AgentService type at parse time (as old go-bexpr did
//! with its field configurations): an unknown selector, an operator the selector's type does
//! not support (`Port contains 1`, `Tags == "x"`), a value that does not coerce to the
//! selector's type (`Port == "x"`, parsed with Go's `strconv.ParseInt(v, 0, 64)` /
//! `strconv.ParseBool`) and a bad regular expression are all parse errors, so evaluation
//! cannot fail. `matches` uses the `regex` crate (RE2-like syntax, as Go's `regexp`),
//! unanchored, with a compiled-size limit.
//!
//! Hostile input: the expression is limited to [`MAX_FILTER_LEN`] bytes and to
//! [`MAX_NESTING`] levels of `(` / `not`; `and`/`or` chains are parsed iteratively into
//! n-ary nodes, so neither parsing nor evaluation recurses deeper than the nesting limit.

use std::fmt;
use std::str::FromStr;

use regex::{Regex, RegexBuilder};
use serde_json::{Map, Value};

/// Longest filter expression accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 4096;
/// Deepest nesting of parentheses and `not` accepted.
pub const MAX_NESTING: usize = 64;
/// Compiled-program size limit for a `matches` regular expression.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

const PREFIX: &str = "Failed to create boolean expression evaluator";

/// A place in the filter expression, reported as Consul (pigeon) does: `line:column (offset)`,
/// line and column 1-based (column in characters), offset 0-based in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
    pub offset: usize,
}

impl Position {
    fn at(src: &str, offset: usize) -> Self {
        let offset = offset.min(src.len());
        // Offsets are always taken at ASCII bytes or at the end, i.e. char boundaries; fall
        // back to a byte count rather than panic should that ever not hold.
        let before = src.get(..offset).unwrap_or("");
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Position {
            line: before.matches('\n').count() + 1,
            column: before.get(line_start..).map_or(0, |s| s.chars().count()) + 1,
            offset,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} ({})", self.line, self.column, self.offset)
    }
}

/// Why a filter expression was rejected. Every message starts like Consul's
/// (`Failed to create boolean expression evaluator: `) and says where and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("{PREFIX}: filter expression is {len} bytes long, the limit is {max}")]
    TooLong { len: usize, max: usize },
    #[error("{PREFIX}: {pos}: expression nested more than {max} levels deep")]
    TooDeep { pos: Position, max: usize },
    #[error("{PREFIX}: {pos}: {message}")]
    Syntax { pos: Position, message: String },
    #[error(
        "{PREFIX}: {pos}: unknown selector {selector:?} (known: ID, Service, Kind, Address, \
         Port, Tags, EnableTagOverride, Meta, Meta.<key>, Weights.Passing, Weights.Warning, \
         TaggedAddresses, TaggedAddresses.<tag>.Address, TaggedAddresses.<tag>.Port)"
    )]
    UnknownSelector { pos: Position, selector: String },
    #[error("{PREFIX}: {pos}: operator \"{operator}\" is not supported for selector {selector} of type {kind}")]
    UnsupportedOperator {
        pos: Position,
        selector: String,
        operator: &'static str,
        kind: &'static str,
    },
    #[error("{PREFIX}: {pos}: value {value:?} is not a valid {kind} for selector {selector}")]
    InvalidValue {
        pos: Position,
        selector: String,
        value: String,
        kind: &'static str,
    },
    #[error("{PREFIX}: {pos}: invalid regular expression {pattern:?}: {reason}")]
    InvalidRegex {
        pos: Position,
        pattern: String,
        reason: String,
    },
}

/// A parsed `?filter=` expression.
#[derive(Debug, Clone)]
pub struct Filter {
    source: String,
    expr: Expr,
}

impl Filter {
    /// Whether the AgentService JSON object `service` satisfies the filter.
    ///
    /// Absent top-level fields take their Go zero value (`""`, `0`, `false`, empty list or
    /// map), as they would in Consul's struct; a missing `Meta.<k>` or
    /// `TaggedAddresses.<t>` key follows bexpr's "not present" rule (`==`, `in`, `matches`,
    /// `is not empty` are false; their negations and `is empty` are true).
    pub fn matches(&self, service: &Value) -> bool {
        self.expr.eval(service)
    }

    /// The expression as given.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl FromStr for Filter {
    type Err = FilterError;

    fn from_str(src: &str) -> Result<Self, FilterError> {
        if src.len() > MAX_FILTER_LEN {
            return Err(FilterError::TooLong {
                len: src.len(),
                max: MAX_FILTER_LEN,
            });
        }
        let toks = Lexer { src, pos: 0 }.run()?;
        let mut p = Parser {
            src,
            toks,
            i: 0,
            depth: 0,
        };
        if p.peek().kind == Tok::Eof {
            return Err(p.syntax(0, "empty filter expression".to_string()));
        }
        let expr = p.parse_or()?;
        let t = p.peek();
        if t.kind != Tok::Eof {
            let msg = format!(
                "unexpected {}, expected \"and\", \"or\" or end of input",
                t.kind.describe()
            );
            return Err(p.syntax(t.start, msg));
        }
        Ok(Filter {
            source: src.to_string(),
            expr,
        })
    }
}

// ---------------------------------------------------------------------------------------
// AST and evaluation

#[derive(Debug, Clone)]
enum Expr {
    Or(Vec<Expr>),
    And(Vec<Expr>),
    Not(Box<Expr>),
    Match(Box<Match>),
}

impl Expr {
    fn eval(&self, svc: &Value) -> bool {
        match self {
            Expr::Or(v) => v.iter().any(|e| e.eval(svc)),
            Expr::And(v) => v.iter().all(|e| e.eval(svc)),
            Expr::Not(e) => !e.eval(svc),
            Expr::Match(m) => m.eval(svc),
        }
    }
}

#[derive(Debug, Clone)]
struct Match {
    field: Field,
    test: Test,
    negate: bool,
}

#[derive(Debug, Clone)]
enum Test {
    StrEq(String),
    IntEq(i64),
    BoolEq(bool),
    /// Substring for strings, element for lists, key for maps.
    Contains(String),
    IsEmpty,
    Matches(Regex),
}

impl Match {
    fn eval(&self, svc: &Value) -> bool {
        let r = match (&self.test, self.field.lookup(svc)) {
            // bexpr's NotPresentDisposition: only "is empty" holds for a missing key.
            (t, Datum::Missing) => matches!(t, Test::IsEmpty),
            (Test::StrEq(want), Datum::Str(s)) => s == want,
            (Test::IntEq(want), Datum::Int(n)) => n == Some(*want),
            (Test::BoolEq(want), Datum::Bool(b)) => b == Some(*want),
            (Test::Contains(want), Datum::Str(s)) => s.contains(want.as_str()),
            (Test::Contains(want), Datum::List(items)) => {
                items.iter().any(|i| i.as_str() == Some(want.as_str()))
            }
            (Test::Contains(want), Datum::Map(m)) => m.is_some_and(|m| m.contains_key(want)),
            (Test::IsEmpty, Datum::Str(s)) => s.is_empty(),
            (Test::IsEmpty, Datum::List(items)) => items.is_empty(),
            (Test::IsEmpty, Datum::Map(m)) => m.is_none_or(Map::is_empty),
            (Test::Matches(re), Datum::Str(s)) => re.is_match(s),
            // Operator/type combinations are checked at parse time.
            _ => false,
        };
        r != self.negate
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Str,
    Int,
    Bool,
    List,
    Map,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Str => "string",
            Ty::Int => "int",
            Ty::Bool => "bool",
            Ty::List => "list of strings",
            Ty::Map => "map",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Id,
    Service,
    Kind,
    Address,
    Port,
    Tags,
    EnableTagOverride,
    Meta,
    MetaKey(String),
    WeightsPassing,
    WeightsWarning,
    TaggedAddresses,
    TaggedAddress { tag: String, port: bool },
}

/// A field's value in one service.
enum Datum<'a> {
    /// A map key that is not there.
    Missing,
    Str(&'a str),
    /// `None`: present but not an integer (never equal to anything).
    Int(Option<i64>),
    Bool(Option<bool>),
    List(&'a [Value]),
    Map(Option<&'a Map<String, Value>>),
}

impl Field {
    fn resolve(path: &[String]) -> Option<Field> {
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        Some(match p.as_slice() {
            ["ID"] => Field::Id,
            ["Service"] => Field::Service,
            ["Kind"] => Field::Kind,
            ["Address"] => Field::Address,
            ["Port"] => Field::Port,
            ["Tags"] => Field::Tags,
            ["EnableTagOverride"] => Field::EnableTagOverride,
            ["Meta"] => Field::Meta,
            ["Meta", k] => Field::MetaKey((*k).to_string()),
            ["Weights", "Passing"] => Field::WeightsPassing,
            ["Weights", "Warning"] => Field::WeightsWarning,
            ["TaggedAddresses"] => Field::TaggedAddresses,
            ["TaggedAddresses", t, "Address"] => Field::TaggedAddress {
                tag: (*t).to_string(),
                port: false,
            },
            ["TaggedAddresses", t, "Port"] => Field::TaggedAddress {
                tag: (*t).to_string(),
                port: true,
            },
            _ => return None,
        })
    }

    fn ty(&self) -> Ty {
        match self {
            Field::Id | Field::Service | Field::Kind | Field::Address | Field::MetaKey(_) => {
                Ty::Str
            }
            Field::TaggedAddress { port: false, .. } => Ty::Str,
            Field::Port
            | Field::WeightsPassing
            | Field::WeightsWarning
            | Field::TaggedAddress { port: true, .. } => Ty::Int,
            Field::EnableTagOverride => Ty::Bool,
            Field::Tags => Ty::List,
            Field::Meta | Field::TaggedAddresses => Ty::Map,
        }
    }

    fn lookup<'a>(&self, svc: &'a Value) -> Datum<'a> {
        match self {
            Field::Id => str_datum(svc.get("ID")),
            Field::Service => str_datum(svc.get("Service")),
            Field::Kind => str_datum(svc.get("Kind")),
            Field::Address => str_datum(svc.get("Address")),
            Field::Port => int_datum(svc.get("Port")),
            Field::WeightsPassing => int_datum(svc.get("Weights").and_then(|w| w.get("Passing"))),
            Field::WeightsWarning => int_datum(svc.get("Weights").and_then(|w| w.get("Warning"))),
            Field::EnableTagOverride => match svc.get("EnableTagOverride") {
                None | Some(Value::Null) => Datum::Bool(Some(false)),
                Some(v) => Datum::Bool(v.as_bool()),
            },
            Field::Tags => Datum::List(
                svc.get("Tags")
                    .and_then(Value::as_array)
                    .map_or(&[][..], Vec::as_slice),
            ),
            Field::Meta => Datum::Map(svc.get("Meta").and_then(Value::as_object)),
            Field::TaggedAddresses => {
                Datum::Map(svc.get("TaggedAddresses").and_then(Value::as_object))
            }
            Field::MetaKey(k) => match svc.get("Meta").and_then(|m| m.get(k.as_str())) {
                Some(Value::String(s)) => Datum::Str(s),
                _ => Datum::Missing,
            },
            Field::TaggedAddress { tag, port } => {
                match svc.get("TaggedAddresses").and_then(|t| t.get(tag.as_str())) {
                    Some(v @ Value::Object(_)) if *port => int_datum(v.get("Port")),
                    Some(v @ Value::Object(_)) => str_datum(v.get("Address")),
                    _ => Datum::Missing,
                }
            }
        }
    }
}

fn str_datum(v: Option<&Value>) -> Datum<'_> {
    Datum::Str(v.and_then(Value::as_str).unwrap_or(""))
}

fn int_datum(v: Option<&Value>) -> Datum<'_> {
    match v {
        None | Some(Value::Null) => Datum::Int(Some(0)),
        Some(v) => Datum::Int(v.as_i64().or_else(|| {
            v.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
                .map(|f| f as i64)
        })),
    }
}

// ---------------------------------------------------------------------------------------
// Operators

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    In,
    NotIn,
    Contains,
    NotContains,
    IsEmpty,
    IsNotEmpty,
    Matches,
    NotMatches,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::In => "in",
            Op::NotIn => "not in",
            Op::Contains => "contains",
            Op::NotContains => "not contains",
            Op::IsEmpty => "is empty",
            Op::IsNotEmpty => "is not empty",
            Op::Matches => "matches",
            Op::NotMatches => "not matches",
        }
    }

    fn negated(self) -> bool {
        matches!(
            self,
            Op::Ne | Op::NotIn | Op::NotContains | Op::IsNotEmpty | Op::NotMatches
        )
    }

    fn supports(self, ty: Ty) -> bool {
        match self {
            Op::Eq | Op::Ne => matches!(ty, Ty::Str | Ty::Int | Ty::Bool),
            Op::In | Op::NotIn | Op::Contains | Op::NotContains => {
                matches!(ty, Ty::Str | Ty::List | Ty::Map)
            }
            Op::IsEmpty | Op::IsNotEmpty => matches!(ty, Ty::Str | Ty::List | Ty::Map),
            Op::Matches | Op::NotMatches => ty == Ty::Str,
        }
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)`: optional sign, `0x`/`0o`/`0b`/`0` prefixes,
/// `_` digit separators.
fn go_parse_int(s: &str) -> Option<i64> {
    let (neg, body) = match s.as_bytes().first()? {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    let b = body.as_bytes();
    if b.is_empty() {
        return None;
    }
    let (base, digits): (u32, &[u8]) = if b[0] == b'0' {
        match b.get(1).map(u8::to_ascii_lowercase) {
            Some(b'b') if b.len() >= 3 => (2, &b[2..]),
            Some(b'o') if b.len() >= 3 => (8, &b[2..]),
            Some(b'x') if b.len() >= 3 => (16, &b[2..]),
            _ => (8, &b[1..]),
        }
    } else {
        (10, b)
    };
    let mut n: u64 = 0;
    let mut underscores = false;
    for &c in digits {
        if c == b'_' {
            underscores = true;
            continue;
        }
        let d = (c as char).to_digit(36)?;
        if d >= base {
            return None;
        }
        n = n.checked_mul(u64::from(base))?.checked_add(u64::from(d))?;
    }
    if underscores && !go_underscore_ok(body) {
        return None;
    }
    const CUTOFF: u64 = 1 << 63;
    if neg {
        match n.cmp(&CUTOFF) {
            std::cmp::Ordering::Greater => None,
            std::cmp::Ordering::Equal => Some(i64::MIN),
            std::cmp::Ordering::Less => Some(-(n as i64)),
        }
    } else if n >= CUTOFF {
        None
    } else {
        Some(n as i64)
    }
}

/// Go's `strconv.underscoreOK` (for a string without its sign).
fn go_underscore_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if b.len() >= 2 && b[0] == b'0' && matches!(b[1].to_ascii_lowercase(), b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = b[1].eq_ignore_ascii_case(&b'x');
    }
    while i < b.len() {
        let c = b[i];
        i += 1;
        if c.is_ascii_digit() || (hex && c.is_ascii_hexdigit()) {
            saw = b'0';
            continue;
        }
        if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
            continue;
        }
        if saw == b'_' {
            return false;
        }
        saw = b'!';
    }
    saw != b'_'
}

/// Go's `strconv.ParseBool`.
fn go_parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// `a.b["c"].0`; `bare` when it is a single identifier (a keyword candidate).
    Ident {
        parts: Vec<String>,
        bare: bool,
    },
    /// A string literal; `pointer` holds the JSON-pointer selector path when the literal
    /// is double-quoted and of the form `/seg/seg…`.
    Str {
        value: String,
        pointer: Option<Vec<String>>,
    },
    Num(String),
    LParen,
    RParen,
    Eq,
    Ne,
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident { parts, .. } => format!("{:?}", parts.join(".")),
            Tok::Str { value, .. } => format!("string {value:?}"),
            Tok::Num(n) => format!("number {n}"),
            Tok::LParen => "\"(\"".to_string(),
            Tok::RParen => "\")\"".to_string(),
            Tok::Eq => "\"==\"".to_string(),
            Tok::Ne => "\"!=\"".to_string(),
            Tok::Eof => "end of input".to_string(),
        }
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self, Tok::Ident { parts, bare: true } if parts.len() == 1 && parts[0] == kw)
    }
}

#[derive(Debug, Clone)]
struct Token {
    kind: Tok,
    start: usize,
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

impl Lexer<'_> {
    fn peek_at(&self, i: usize) -> Option<u8> {
        self.src.as_bytes().get(i).copied()
    }

    fn err(&self, offset: usize, message: impl Into<String>) -> FilterError {
        FilterError::Syntax {
            pos: Position::at(self.src, offset),
            message: message.into(),
        }
    }

    fn skip_ws(&mut self) {
        while self.peek_at(self.pos).is_some_and(is_ws) {
            self.pos += 1;
        }
    }

    fn run(mut self) -> Result<Vec<Token>, FilterError> {
        let mut out = Vec::new();
        loop {
            self.skip_ws();
            let start = self.pos;
            let Some(c) = self.peek_at(start) else {
                out.push(Token {
                    kind: Tok::Eof,
                    start,
                });
                return Ok(out);
            };
            let kind = match c {
                b'(' => {
                    self.pos += 1;
                    Tok::LParen
                }
                b')' => {
                    self.pos += 1;
                    Tok::RParen
                }
                b'=' | b'!' => {
                    if self.peek_at(start + 1) != Some(b'=') {
                        let op = if c == b'=' { "==" } else { "!=" };
                        return Err(self.err(start, format!("no match found, expected \"{op}\"")));
                    }
                    self.pos += 2;
                    if c == b'=' {
                        Tok::Eq
                    } else {
                        Tok::Ne
                    }
                }
                b'"' | b'`' => self.string()?,
                b'-' | b'0'..=b'9' => self.number()?,
                c if c.is_ascii_alphabetic() => self.ident()?,
                _ => {
                    let ch = self.src.get(start..).and_then(|s| s.chars().next());
                    let what = ch.map_or_else(|| "byte".to_string(), |ch| format!("{ch:?}"));
                    return Err(self.err(start, format!("unexpected character {what}")));
                }
            };
            out.push(Token { kind, start });
        }
    }

    fn take_ident(&mut self) -> String {
        let start = self.pos;
        self.pos += 1; // first byte checked by the caller: ASCII letter
        while self
            .peek_at(self.pos)
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'/')
        {
            self.pos += 1;
        }
        self.src[start..self.pos].to_string()
    }

    fn ident(&mut self) -> Result<Tok, FilterError> {
        let mut parts = vec![self.take_ident()];
        let mut bare = true;
        loop {
            match (self.peek_at(self.pos), self.peek_at(self.pos + 1)) {
                (Some(b'.'), Some(n)) if n.is_ascii_alphabetic() => {
                    self.pos += 1;
                    parts.push(self.take_ident());
                }
                (Some(b'.'), Some(n)) if n.is_ascii_digit() => {
                    self.pos += 1;
                    let start = self.pos;
                    while self.peek_at(self.pos).is_some_and(|b| b.is_ascii_digit()) {
                        self.pos += 1;
                    }
                    parts.push(self.src[start..self.pos].to_string());
                }
                (Some(b'['), _) => {
                    let open = self.pos;
                    self.pos += 1;
                    self.skip_ws();
                    match self.peek_at(self.pos) {
                        Some(b'"' | b'`') => {}
                        _ => return Err(self.err(self.pos, "invalid index: expected a string")),
                    }
                    let Tok::Str { value, .. } = self.string()? else {
                        return Err(self.err(open, "invalid index"));
                    };
                    self.skip_ws();
                    if self.peek_at(self.pos) != Some(b']') {
                        return Err(self.err(self.pos, "unclosed index expression: expected \"]\""));
                    }
                    self.pos += 1;
                    parts.push(value);
                }
                _ => break,
            }
            bare = false;
        }
        Ok(Tok::Ident { parts, bare })
    }

    fn number(&mut self) -> Result<Tok, FilterError> {
        let start = self.pos;
        let bad = |l: &Self| l.err(start, "invalid number literal");
        if self.peek_at(self.pos) == Some(b'-') {
            self.pos += 1;
        }
        match self.peek_at(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                while self.peek_at(self.pos).is_some_and(|b| b.is_ascii_digit()) {
                    self.pos += 1;
                }
            }
            _ => return Err(bad(self)),
        }
        if self.peek_at(self.pos) == Some(b'.')
            && self
                .peek_at(self.pos + 1)
                .is_some_and(|b| b.is_ascii_digit())
        {
            self.pos += 1;
            while self.peek_at(self.pos).is_some_and(|b| b.is_ascii_digit()) {
                self.pos += 1;
            }
        }
        // bexpr: a number must be followed by whitespace, ")" or the end.
        match self.peek_at(self.pos) {
            None | Some(b')') => {}
            Some(b) if is_ws(b) => {}
            _ => return Err(bad(self)),
        }
        Ok(Tok::Num(self.src[start..self.pos].to_string()))
    }

    fn string(&mut self) -> Result<Tok, FilterError> {
        let start = self.pos;
        let bytes = self.src.as_bytes();
        let quote = bytes[start];
        let mut i = start + 1;
        loop {
            match bytes.get(i) {
                None => return Err(self.err(start, "unterminated string literal")),
                Some(&b) if b == quote => break,
                Some(b'\\') if quote == b'"' => i += 2,
                Some(b'\n') if quote == b'"' => {
                    return Err(self.err(i, "newline in string literal"));
                }
                Some(_) => i += 1,
            }
        }
        // `i` is at the closing quote (ASCII), so both slice ends are char boundaries.
        let body = &self.src[start + 1..i];
        self.pos = i + 1;
        if quote == b'`' {
            return Ok(Tok::Str {
                value: body.replace('\r', ""),
                pointer: None,
            });
        }
        let value = unquote(body).map_err(|(off, msg)| self.err(start + 1 + off, msg))?;
        Ok(Tok::Str {
            pointer: json_pointer(body),
            value,
        })
    }
}

/// The body of a Go double-quoted string literal, unescaped (`strconv.Unquote`, plus `\"`
/// and without `\'`). Errors carry the offset within `body`.
fn unquote(body: &str) -> Result<String, (usize, &'static str)> {
    if !body.contains('\\') {
        return Ok(body.to_string());
    }
    let mut out: Vec<u8> = Vec::with_capacity(body.len());
    let mut it = body.char_indices().peekable();
    while let Some((at, c)) = it.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let bad = (at, "invalid escape sequence in string literal");
        let Some((_, e)) = it.next() else {
            return Err(bad);
        };
        let mut digits = |n: usize, radix: u32| -> Option<u32> {
            let mut v: u32 = 0;
            for _ in 0..n {
                let (_, d) = it.next()?;
                v = v * radix + d.to_digit(radix)?;
            }
            Some(v)
        };
        match e {
            'a' => out.push(0x07),
            'b' => out.push(0x08),
            'f' => out.push(0x0c),
            'n' => out.push(b'\n'),
            'r' => out.push(b'\r'),
            't' => out.push(b'\t'),
            'v' => out.push(0x0b),
            '\\' => out.push(b'\\'),
            '"' => out.push(b'"'),
            '0'..='7' => {
                let first = e.to_digit(8).unwrap_or(0);
                let rest = digits(2, 8).ok_or(bad)?;
                let v = u8::try_from(first * 64 + rest).map_err(|_| bad)?;
                out.push(v);
            }
            'x' => out.push(u8::try_from(digits(2, 16).ok_or(bad)?).map_err(|_| bad)?),
            'u' | 'U' => {
                let n = if e == 'u' { 4 } else { 8 };
                let ch = digits(n, 16).and_then(char::from_u32).ok_or(bad)?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
            _ => return Err(bad),
        }
    }
    String::from_utf8(out).map_err(|_| (0, "string literal is not valid UTF-8"))
}

/// bexpr's JSON-pointer selector `"/a/b"`: segments of letters, digits and `-_.~:|`,
/// with `~1` → `/` and `~0` → `~` decoded.
fn json_pointer(body: &str) -> Option<Vec<String>> {
    let rest = body.strip_prefix('/')?;
    rest.split('/')
        .map(|seg| {
            let ok = !seg.is_empty()
                && seg
                    .chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | ':' | '|'));
            ok.then(|| seg.replace("~1", "/").replace("~0", "~"))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Parser

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token>,
    i: usize,
    depth: usize,
}

/// The left operand of a match: usable as a selector, as a value, or both.
struct Operand {
    start: usize,
    selector: Option<Vec<String>>,
    value: String,
}

impl Parser<'_> {
    fn syntax(&self, offset: usize, message: String) -> FilterError {
        FilterError::Syntax {
            pos: Position::at(self.src, offset),
            message,
        }
    }

    fn pos(&self, offset: usize) -> Position {
        Position::at(self.src, offset)
    }

    fn tok(&self, i: usize) -> &Token {
        // The token list always ends with Eof; clamp to it.
        let last = self.toks.len().saturating_sub(1);
        &self.toks[i.min(last)]
    }

    fn peek(&self) -> &Token {
        self.tok(self.i)
    }

    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if t.kind != Tok::Eof {
            self.i += 1;
        }
        t
    }

    fn enter(&mut self, offset: usize) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(FilterError::TooDeep {
                pos: self.pos(offset),
                max: MAX_NESTING,
            });
        }
        Ok(())
    }

    fn parse_or(&mut self) -> Result<Expr, FilterError> {
        let mut terms = vec![self.parse_and()?];
        while self.peek().kind.is_kw("or") {
            self.bump();
            terms.push(self.parse_and()?);
        }
        Ok(if terms.len() == 1 {
            terms.swap_remove(0)
        } else {
            Expr::Or(terms)
        })
    }

    fn parse_and(&mut self) -> Result<Expr, FilterError> {
        let mut terms = vec![self.parse_not()?];
        while self.peek().kind.is_kw("and") {
            self.bump();
            terms.push(self.parse_not()?);
        }
        Ok(if terms.len() == 1 {
            terms.swap_remove(0)
        } else {
            Expr::And(terms)
        })
    }

    /// Whether the token after the current one starts an operator, i.e. a current `not`
    /// is an operand (`not in Tags` means `"not" in Tags`, as in bexpr).
    fn next_is_operator(&self) -> bool {
        let k = &self.tok(self.i + 1).kind;
        matches!(k, Tok::Eq | Tok::Ne)
            || ["in", "contains", "matches", "is"]
                .iter()
                .any(|kw| k.is_kw(kw))
    }

    fn parse_not(&mut self) -> Result<Expr, FilterError> {
        let t = self.peek();
        if t.kind.is_kw("not") && !self.next_is_operator() {
            let start = t.start;
            self.bump();
            self.enter(start)?;
            let inner = self.parse_not()?;
            self.depth -= 1;
            return Ok(match inner {
                Expr::Not(e) => *e,
                e => Expr::Not(Box::new(e)),
            });
        }
        self.parse_primary()
    }

    fn parse_primary(&mut self) -> Result<Expr, FilterError> {
        if self.peek().kind == Tok::LParen {
            let open = self.bump().start;
            self.enter(open)?;
            let e = self.parse_or()?;
            let t = self.peek();
            if t.kind != Tok::RParen {
                let msg = format!(
                    "unexpected {}, expected \")\" to close the \"(\" at offset {open}",
                    t.kind.describe()
                );
                return Err(self.syntax(t.start, msg));
            }
            self.bump();
            self.depth -= 1;
            return Ok(e);
        }
        self.parse_match()
    }

    fn parse_match(&mut self) -> Result<Expr, FilterError> {
        let t = self.bump();
        let left = match t.kind {
            Tok::Ident { parts, .. } => Operand {
                start: t.start,
                value: parts.join("."),
                selector: Some(parts),
            },
            Tok::Str { value, pointer } => Operand {
                start: t.start,
                selector: pointer,
                value,
            },
            Tok::Num(n) => Operand {
                start: t.start,
                selector: None,
                value: n,
            },
            other => {
                let msg = format!(
                    "unexpected {}, expected a selector, a value, \"not\" or \"(\"",
                    other.describe()
                );
                return Err(self.syntax(t.start, msg));
            }
        };

        let op_tok = self.bump();
        let op = match &op_tok.kind {
            Tok::Eq => Op::Eq,
            Tok::Ne => Op::Ne,
            k if k.is_kw("in") => Op::In,
            k if k.is_kw("contains") => Op::Contains,
            k if k.is_kw("matches") => Op::Matches,
            k if k.is_kw("not") => {
                let n = self.bump();
                match &n.kind {
                    k if k.is_kw("in") => Op::NotIn,
                    k if k.is_kw("contains") => Op::NotContains,
                    k if k.is_kw("matches") => Op::NotMatches,
                    other => {
                        let msg = format!(
                            "unexpected {}, expected \"in\", \"contains\" or \"matches\" after \"not\"",
                            other.describe()
                        );
                        return Err(self.syntax(n.start, msg));
                    }
                }
            }
            k if k.is_kw("is") => {
                let n = self.bump();
                if n.kind.is_kw("empty") {
                    Op::IsEmpty
                } else if n.kind.is_kw("not") && self.peek().kind.is_kw("empty") {
                    self.bump();
                    Op::IsNotEmpty
                } else {
                    let at = if n.kind.is_kw("not") {
                        self.peek().clone()
                    } else {
                        n
                    };
                    let msg = format!(
                        "unexpected {}, expected \"is empty\" or \"is not empty\"",
                        at.kind.describe()
                    );
                    return Err(self.syntax(at.start, msg));
                }
            }
            other => {
                let msg = format!(
                    "unexpected {}, expected an operator (==, !=, in, not in, contains, not contains, \
                     matches, not matches, is empty, is not empty)",
                    other.describe()
                );
                return Err(self.syntax(op_tok.start, msg));
            }
        };

        let (sel_start, selector, value) = match op {
            Op::In | Op::NotIn => {
                let s = self.bump();
                let path = match s.kind {
                    Tok::Ident { parts, .. } => parts,
                    Tok::Str {
                        pointer: Some(p), ..
                    } => p,
                    other => {
                        let msg = format!(
                            "Invalid selector: unexpected {}, expected a selector after \"{}\"",
                            other.describe(),
                            op.name()
                        );
                        return Err(self.syntax(s.start, msg));
                    }
                };
                (s.start, path, Some((left.start, left.value)))
            }
            _ => {
                let Some(path) = left.selector else {
                    let msg = format!(
                        "a value cannot be compared with \"{}\"; only \"<value> in <selector>\" \
                         and \"<value> not in <selector>\" take the value first",
                        op.name()
                    );
                    return Err(self.syntax(left.start, msg));
                };
                let value = if matches!(op, Op::IsEmpty | Op::IsNotEmpty) {
                    None
                } else {
                    let v = self.bump();
                    let text = match v.kind {
                        Tok::Ident { parts, .. } => parts.join("."),
                        Tok::Str { value, .. } => value,
                        Tok::Num(n) => n,
                        other => {
                            let msg = format!(
                                "unexpected {}, expected a value after \"{}\"",
                                other.describe(),
                                op.name()
                            );
                            return Err(self.syntax(v.start, msg));
                        }
                    };
                    Some((v.start, text))
                };
                (left.start, path, value)
            }
        };

        self.build(op, op_tok.start, sel_start, &selector, value)
            .map(|m| Expr::Match(Box::new(m)))
    }

    fn build(
        &self,
        op: Op,
        op_start: usize,
        sel_start: usize,
        path: &[String],
        value: Option<(usize, String)>,
    ) -> Result<Match, FilterError> {
        let sel_text = path.join(".");
        let field = Field::resolve(path).ok_or_else(|| FilterError::UnknownSelector {
            pos: self.pos(sel_start),
            selector: sel_text.clone(),
        })?;
        let ty = field.ty();
        if !op.supports(ty) {
            return Err(FilterError::UnsupportedOperator {
                pos: self.pos(op_start),
                selector: sel_text,
                operator: op.name(),
                kind: ty.name(),
            });
        }
        let (v_start, v) = value.unwrap_or((op_start, String::new()));
        let invalid = |kind: &'static str| FilterError::InvalidValue {
            pos: self.pos(v_start),
            selector: sel_text.clone(),
            value: v.clone(),
            kind,
        };
        let test = match op {
            Op::Eq | Op::Ne => match ty {
                Ty::Int => Test::IntEq(go_parse_int(&v).ok_or_else(|| invalid("integer"))?),
                Ty::Bool => Test::BoolEq(go_parse_bool(&v).ok_or_else(|| invalid("boolean"))?),
                _ => Test::StrEq(v.clone()),
            },
            Op::In | Op::NotIn | Op::Contains | Op::NotContains => Test::Contains(v.clone()),
            Op::IsEmpty | Op::IsNotEmpty => Test::IsEmpty,
            Op::Matches | Op::NotMatches => {
                let re = RegexBuilder::new(&v)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .dfa_size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| FilterError::InvalidRegex {
                        pos: self.pos(v_start),
                        pattern: v.clone(),
                        // regex's syntax errors span several lines (pattern, caret, error).
                        reason: e
                            .to_string()
                            .lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .collect::<Vec<_>>()
                            .join(" "),
                    })?;
                Test::Matches(re)
            }
        };
        Ok(Match {
            field,
            test,
            negate: op.negated(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(s: &str) -> Filter {
        s.parse()
            .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn err(s: &str) -> FilterError {
        match s.parse::<Filter>() {
            Ok(_) => panic!("{s:?} should not parse"),
            Err(e) => e,
        }
    }

    /// The services of the spec's acceptance test (shape of §2.4).
    fn services() -> Vec<Value> {
        vec![
            json!({"ID":"web-1","Service":"web","Tags":["v1","canary"],"Meta":{"zone":"a"},
                   "Port":18081,"Address":"127.0.0.1",
                   "TaggedAddresses":{"lan":{"Address":"127.0.0.2","Port":18082}},
                   "Weights":{"Passing":10,"Warning":1},"EnableTagOverride":false,
                   "Datacenter":"dc1"}),
            json!({"ID":"web-2","Service":"web","Tags":["v2"],"Meta":{"zone":"b","run":"x"},
                   "Port":18083,"Address":"127.0.0.1",
                   "Weights":{"Passing":5,"Warning":1},"EnableTagOverride":true}),
            json!({"ID":"api-1","Service":"api","Tags":[],"Meta":{},"Port":18084,
                   "Address":"","Kind":"connect-proxy",
                   "Weights":{"Passing":1,"Warning":0},"EnableTagOverride":false}),
        ]
    }

    fn ids(s: &str) -> Vec<String> {
        let filter = f(s);
        services()
            .iter()
            .filter(|svc| filter.matches(svc))
            .map(|svc| svc["ID"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn spec_examples() {
        assert_eq!(ids(r#"Service == "web""#), ["web-1", "web-2"]);
        assert_eq!(ids(r#""canary" in Tags"#), ["web-1"]);
        assert_eq!(ids(r#"Meta.zone == "b""#), ["web-2"]);
        assert_eq!(ids("Weights.Passing == 5"), ["web-2"]);
        assert_eq!(ids(r#""v1" not in Tags and Meta.run == "x""#), ["web-2"]);
        assert_eq!(
            ids(r#""v1" not in Tags and Meta.run == "x" or Port == 18083"#),
            ["web-2"]
        );
        assert_eq!(
            ids(r#""canary" in Tags and Meta.run == "x" or Port == 18084"#),
            ["api-1"]
        );
        assert_eq!(ids(r#"not (Service == "web")"#), ["api-1"]);
        // py-consul's form-decoded query `filter=Service+%3D%3D+%22web%22`.
        assert_eq!(ids("Service == \"web\""), ["web-1", "web-2"]);
    }

    #[test]
    fn precedence_not_and_or() {
        // or is lowest: a or (b and c)
        assert_eq!(
            ids(r#"Service == "api" or Service == "web" and Port == 18081"#),
            ["web-1", "api-1"]
        );
        // and binds tighter than or, from either side
        assert_eq!(
            ids(r#"Service == "web" and Port == 18081 or Service == "api""#),
            ["web-1", "api-1"]
        );
        // not binds tighter than and
        assert_eq!(ids(r#"not Service == "api" and Port == 18083"#), ["web-2"]);
        assert_eq!(ids(r#"not (Service == "api" or Port == 18083)"#), ["web-1"]);
        assert_eq!(ids(r#"not not Service == "api""#), ["api-1"]);
        assert_eq!(ids(r#"((Service == "api"))"#), ["api-1"]);
        assert_eq!(
            ids(r#"(Service == "web") and (Port == 18081 or Port == 18084)"#),
            ["web-1"]
        );
    }

    #[test]
    fn operators() {
        assert_eq!(ids(r#"Service != "web""#), ["api-1"]);
        assert_eq!(ids(r#"Tags contains "v2""#), ["web-2"]);
        assert_eq!(ids(r#"Tags not contains "v2""#), ["web-1", "api-1"]);
        assert_eq!(ids("Tags is empty"), ["api-1"]);
        assert_eq!(ids("Tags is not empty"), ["web-1", "web-2"]);
        assert_eq!(ids("Meta is empty"), ["api-1"]);
        assert_eq!(ids("Address is empty"), ["api-1"]);
        assert_eq!(ids(r#""zone" in Meta"#), ["web-1", "web-2"]);
        assert_eq!(ids(r#""run" not in Meta"#), ["web-1", "api-1"]);
        assert_eq!(ids(r#"Meta contains "run""#), ["web-2"]);
        assert_eq!(ids(r#""eb" in Service"#), ["web-1", "web-2"]);
        assert_eq!(ids(r#"Service contains "p""#), ["api-1"]);
        assert_eq!(ids(r#"Service matches "^w.b$""#), ["web-1", "web-2"]);
        assert_eq!(ids(r#"ID matches "-1""#), ["web-1", "api-1"]);
        assert_eq!(ids(r#"ID not matches "^web-\\d$""#), ["api-1"]);
        assert_eq!(ids(r#"Kind == "connect-proxy""#), ["api-1"]);
        assert_eq!(ids(r#"Kind == """#), ["web-1", "web-2"]);
        assert_eq!(ids("EnableTagOverride == true"), ["web-2"]);
        assert_eq!(ids("EnableTagOverride != true"), ["web-1", "api-1"]);
        assert_eq!(ids(r#"EnableTagOverride == "F""#), ["web-1", "api-1"]);
        assert_eq!(ids("Weights.Warning == 0"), ["api-1"]);
        assert_eq!(ids("Port != 18081"), ["web-2", "api-1"]);
        assert_eq!(ids(r#"Port == "18084""#), ["api-1"]);
    }

    #[test]
    fn go_integer_coercion() {
        assert_eq!(ids(r#"Port == "0x46A4""#), ["api-1"]); // 18084
        assert_eq!(ids(r#"Port == "18_084""#), ["api-1"]);
        assert_eq!(ids(r#"Port == "+18084""#), ["api-1"]);
        assert_eq!(go_parse_int("0"), Some(0));
        assert_eq!(go_parse_int("-0"), Some(0));
        assert_eq!(go_parse_int("017"), Some(15));
        assert_eq!(go_parse_int("0b101"), Some(5));
        assert_eq!(go_parse_int("0o17"), Some(15));
        assert_eq!(go_parse_int("0x_1F"), Some(31));
        assert_eq!(go_parse_int("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(go_parse_int("9223372036854775807"), Some(i64::MAX));
        for bad in [
            "",
            "-",
            "+",
            "0x",
            "08",
            "1__0",
            "_1",
            "1_",
            "9223372036854775808",
            "5.0",
            "+-5",
            "1e3",
            " 1",
        ] {
            assert_eq!(go_parse_int(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn missing_keys_follow_bexpr_not_present() {
        // web-1 has no Meta.run, api-1 has no Meta.zone, only web-1 has TaggedAddresses.
        assert_eq!(ids(r#"Meta.zone == "a""#), ["web-1"]);
        assert_eq!(ids(r#"Meta.zone != "a""#), ["web-2", "api-1"]);
        assert_eq!(ids("Meta.zone is empty"), ["api-1"]);
        assert_eq!(ids("Meta.zone is not empty"), ["web-1", "web-2"]);
        assert_eq!(ids(r#"Meta.zone matches ".""#), ["web-1", "web-2"]);
        assert_eq!(ids(r#"Meta.zone not matches "a""#), ["web-2", "api-1"]);
        assert_eq!(ids(r#""a" in Meta.zone"#), ["web-1"]);
        assert_eq!(ids(r#""a" not in Meta.zone"#), ["web-2", "api-1"]);
        assert_eq!(ids(r#"Meta["zone"] == "b""#), ["web-2"]);
        assert_eq!(ids(r#""/Meta/zone" == "b""#), ["web-2"]);
        assert_eq!(ids("TaggedAddresses.lan.Port == 18082"), ["web-1"]);
        assert_eq!(
            ids(r#"TaggedAddresses.lan.Address == "127.0.0.2""#),
            ["web-1"]
        );
        assert_eq!(
            ids(r#"TaggedAddresses.wan.Address != "x""#),
            ["web-1", "web-2", "api-1"]
        );
        assert_eq!(ids(r#""lan" in TaggedAddresses"#), ["web-1"]);
        assert_eq!(ids("TaggedAddresses is empty"), ["web-2", "api-1"]);
        // Absent top-level fields are Go zero values.
        let bare = json!({"ID": "x"});
        assert!(f("Port == 0").matches(&bare));
        assert!(f("Weights.Passing == 0").matches(&bare));
        assert!(f("Tags is empty").matches(&bare));
        assert!(f(r#"Service == """#).matches(&bare));
        assert!(f("EnableTagOverride == false").matches(&bare));
        assert!(!f(r#"Service == "x""#).matches(&json!(null)));
    }

    #[test]
    fn literals() {
        let svc =
            json!({"Service": "a\"b\\c\né€", "Tags": ["x y", "5", "true"], "Meta": {"k-1": "v"}});
        assert!(f(r#"Service == "a\"b\\c\n\u00e9\xe2\x82\xac""#).matches(&svc));
        assert!(f("Service == \"a\\\"b\\\\c\\n\\U000000e9\\342\\202\\254\"").matches(&svc));
        assert!(f("Service == `a\"b\\c\né€`").matches(&svc));
        assert!(f("Service matches `\\\\c\\n`").matches(&svc));
        assert!(f(r#""x y" in Tags"#).matches(&svc));
        assert!(f("5 in Tags").matches(&svc));
        assert!(f("true in Tags").matches(&svc));
        assert!(f("Tags contains 5").matches(&svc));
        assert!(!f("6 in Tags").matches(&svc));
        assert!(f(r#"Meta["k-1"] == v"#).matches(&svc));
        assert!(f(r#"Meta[ `k-1` ] == "v""#).matches(&svc));
        assert!(f(r#""k-1" in Meta"#).matches(&svc));
        // Bare identifiers as values are taken literally, as in bexpr.
        assert!(f("Service == web").matches(&json!({"Service": "web"})));
        assert!(f("Service == web.x").matches(&json!({"Service": "web.x"})));
        assert!(f("Service == -1.5").matches(&json!({"Service": "-1.5"})));
        assert!(f(r#""not" in Tags"#).matches(&json!({"Tags": ["not"]})));
        assert!(f("not in Tags").matches(&json!({"Tags": ["not"]})));
        // Whitespace of all four kinds, keywords next to parentheses.
        assert!(f("\t(Service\n==\r\"web\")and(Port==1)\n")
            .matches(&json!({"Service": "web", "Port": 1})));
        assert!(f(r#"not(Service == "x")"#).matches(&json!({"Service": "web"})));
        assert!(f("Service==\"web\"").matches(&json!({"Service": "web"})));
    }

    #[test]
    fn numbers_compare_numerically() {
        assert!(f("Port == 80").matches(&json!({"Port": 80})));
        assert!(f("Port == 80").matches(&json!({"Port": 80.0})));
        assert!(!f("Port == 80").matches(&json!({"Port": "80"})));
        assert!(f("Port != 80").matches(&json!({"Port": "80"})));
        assert!(f("Port == -1").matches(&json!({"Port": -1})));
        assert!(!f("Port == 1").matches(&json!({"Port": u64::MAX})));
    }

    fn is_syntax(e: &FilterError) -> bool {
        matches!(e, FilterError::Syntax { .. })
    }

    #[test]
    fn malformed() {
        for s in [
            "",
            "   ",
            "Service",
            "Service ==",
            "Service = \"web\"",
            "Service === \"web\"",
            "Service ! \"web\"",
            "== \"web\"",
            "\"web\" == Service",
            "5 == Port",
            "\"canary\" in",
            "\"canary\" in 5",
            "\"canary\" in \"Tags\"",
            "\"canary\" not Tags",
            "Tags is",
            "Tags is not",
            "Tags is nil",
            "Tags not empty",
            "Service == \"web",
            "Service == `web",
            "Service == \"we\nb\"",
            "Service == \"\\q\"",
            "Service == \"\\'\"",
            "Service == \"\\x4\"",
            "Service == \"\\400\"",
            "Service == \"\\uD800\"",
            "Service == \"\\xff\"",
            "Service == \"web\" and",
            "Service == \"web\" or",
            "and Service == \"web\"",
            "Service == \"web\" Port == 1",
            "(Service == \"web\"",
            "Service == \"web\")",
            "()",
            "not",
            "not ()",
            "Port == 01",
            "Port == 1x",
            "Port == 1.",
            "Port == 0x46A4",
            "Port == -",
            "Port < 5",
            "Port >= 5",
            "Service == 'web'",
            "Meta[zone] == \"a\"",
            "Meta[\"zone\" == \"a\"",
            "Meta.zone. == \"a\"",
            "Service == \"web\" && Port == 1",
            "any Tags as t { t == \"x\" }",
            "Service == \"a\" é",
        ] {
            let e = err(s);
            assert!(is_syntax(&e), "{s:?}: {e:?}");
            let msg = e.to_string();
            assert!(
                msg.starts_with("Failed to create boolean expression evaluator: 1:")
                    || msg.starts_with("Failed to create boolean expression evaluator: 2:"),
                "{msg}"
            );
        }
    }

    #[test]
    fn semantic_errors() {
        for s in [
            "Nope == 1",
            "service == \"web\"",
            "Meta.zone.x == 1",
            "Weights == 1",
            "Weights.Critical == 1",
            "TaggedAddresses.lan == \"x\"",
            "TaggedAddresses.lan.Foo == \"x\"",
            "\"x\" in Nope",
            "\"/Nope\" == 1",
            "Datacenter == \"dc1\"",
        ] {
            assert!(
                matches!(err(s), FilterError::UnknownSelector { .. }),
                "{s:?}"
            );
        }
        for s in [
            "Tags == \"x\"",
            "Meta == \"x\"",
            "Port contains 1",
            "1 in Port",
            "Port is empty",
            "EnableTagOverride is empty",
            "Tags matches \"x\"",
            "Port matches \"1\"",
            "Weights.Passing not matches \"1\"",
        ] {
            assert!(
                matches!(err(s), FilterError::UnsupportedOperator { .. }),
                "{s:?}"
            );
        }
        for s in [
            "Port == \"x\"",
            "Port == 5.0",
            "Port == 99999999999999999999",
            "Weights.Passing == true",
            "EnableTagOverride == yes",
            "EnableTagOverride == 2",
        ] {
            assert!(matches!(err(s), FilterError::InvalidValue { .. }), "{s:?}");
        }
        for s in [
            "Service matches \"(\"",
            "Service matches \"a{99999}{99999}\"",
        ] {
            assert!(matches!(err(s), FilterError::InvalidRegex { .. }), "{s:?}");
        }
    }

    #[test]
    fn error_positions() {
        let e = err("Service == \"web\" and Port ==");
        assert_eq!(
            e.to_string(),
            "Failed to create boolean expression evaluator: 1:29 (28): unexpected end of input, \
             expected a value after \"==\""
        );
        match err("Service == \"web\"\n  and Nope == 1") {
            FilterError::UnknownSelector { pos, selector } => {
                assert_eq!(
                    pos,
                    Position {
                        line: 2,
                        column: 7,
                        offset: 23
                    }
                );
                assert_eq!(selector, "Nope");
            }
            other => panic!("{other:?}"),
        }
        // Columns count characters, offsets bytes.
        match err("Service == \"é\" ! x") {
            FilterError::Syntax { pos, .. } => {
                assert_eq!(pos.column, 16);
                assert_eq!(pos.offset, 16);
            }
            other => panic!("{other:?}"),
        }
        let e = err("Port == \"x\"");
        assert!(e.to_string().contains("1:9 (8)"), "{e}");
        assert!(e.to_string().contains("\"x\""), "{e}");
    }

    #[test]
    fn limits() {
        let long = format!("Service == \"{}\"", "a".repeat(MAX_FILTER_LEN));
        assert!(matches!(err(&long), FilterError::TooLong { .. }));

        let nest = |n: usize| format!("{}Port == 1{}", "(".repeat(n), ")".repeat(n));
        assert!(f(&nest(MAX_NESTING)).matches(&json!({"Port": 1})));
        assert!(matches!(
            err(&nest(MAX_NESTING + 1)),
            FilterError::TooDeep { .. }
        ));
        assert!(matches!(
            err(&"(".repeat(4000)),
            FilterError::TooDeep { .. }
        ));

        let nots = |n: usize| format!("{}Port == 1", "not ".repeat(n));
        assert!(f(&nots(MAX_NESTING)).matches(&json!({"Port": 1})));
        assert!(matches!(
            err(&nots(MAX_NESTING + 1)),
            FilterError::TooDeep { .. }
        ));
        assert!(matches!(
            err(&"not ".repeat(1000)),
            FilterError::TooDeep { .. }
        ));

        // Long flat chains are fine: parsed iteratively.
        let chain = vec!["Port == 1"; 250].join(" or ");
        assert!(chain.len() <= MAX_FILTER_LEN);
        assert!(f(&chain).matches(&json!({"Port": 1})));
        let chain = vec!["Port == 1"; 250].join(" and ");
        assert!(f(&chain).matches(&json!({"Port": 1})));
    }

    #[test]
    fn display_round_trips_source() {
        let s = r#"Service == "web""#;
        assert_eq!(f(s).to_string(), s);
        assert_eq!(f(s).as_str(), s);
    }

    /// xorshift64*: tiny deterministic PRNG for the no-panic test.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_inputs_never_panic() {
        const PIECES: &[&str] = &[
            "Service",
            "ID",
            "Kind",
            "Address",
            "Port",
            "Tags",
            "Meta",
            "Meta.zone",
            ".",
            "Weights.Passing",
            "Weights.Warning",
            "Weights",
            "EnableTagOverride",
            "TaggedAddresses",
            "TaggedAddresses.lan.Port",
            "TaggedAddresses.lan.Address",
            " ",
            " ",
            " ",
            "\t",
            "\n",
            "(",
            ")",
            "(",
            ")",
            "\"",
            "`",
            "\\",
            "[",
            "]",
            "==",
            "!=",
            "=",
            "!",
            "<",
            "in",
            "not",
            "and",
            "or",
            "contains",
            "is",
            "empty",
            "matches",
            "nil",
            "\"web\"",
            "\"canary\"",
            "`x`",
            "\"/Meta/zone\"",
            "\"a.*\"",
            "\"(\"",
            "\"\\u00e9\"",
            "\"\\x\"",
            "\"\\377\"",
            "5",
            "0",
            "-",
            "-1",
            "1.5",
            "18083",
            "0x1F",
            "true",
            "false",
            "x",
            "é",
            "€",
            "_",
            "/",
            "~",
            "{",
            "}",
            ",",
            "as",
            "any",
            "\u{0}",
        ];
        let services = services();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut parsed = 0;
        for _ in 0..5000 {
            let n = 1 + rng.below(24);
            let mut s = String::new();
            for _ in 0..n {
                s.push_str(PIECES[rng.below(PIECES.len())]);
                if rng.below(3) == 0 {
                    s.push(' ');
                }
            }
            match s.parse::<Filter>() {
                Ok(filter) => {
                    parsed += 1;
                    for svc in &services {
                        let _ = filter.matches(svc);
                    }
                    let _ = filter.matches(&json!(null));
                    let _ = filter.matches(&json!({"Tags": 5, "Meta": [], "Port": "x"}));
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
        // Raw bytes-ish: arbitrary chars, including multi-byte ones at odd places.
        for _ in 0..3000 {
            let n = rng.below(40);
            let s: String = (0..n)
                .map(|_| {
                    let c = rng.below(0x80 + 8) as u32;
                    if c < 0x80 {
                        char::from_u32(c).unwrap_or(' ')
                    } else {
                        ['é', '€', '𝄞', '\u{85}', '\u{2028}', '\u{feff}', 'ß', '日']
                            [(c - 0x80) as usize]
                    }
                })
                .collect();
            if let Err(e) = s.parse::<Filter>() {
                let _ = e.to_string();
            }
        }
        assert!(
            parsed > 0,
            "the generator should produce some valid filters"
        );
    }
}
