//! Prometheus rule templates: an interpreter for the part of Go's
//! `text/template` language that alerting and recording rule annotations and
//! labels use, with Prometheus's template functions (`humanize`, `query`, ...).
//!
//! Operators paste their Prometheus rule files, so the output (and, as far as
//! practical, the error messages) follow Go and Prometheus byte for byte:
//!
//! * the template runs as Prometheus runs it: the text is prefixed with
//!   `{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}`,
//!   so line/column numbers in errors match Prometheus's, and executed with
//!   `missingkey=zero` (a missing label is the empty string);
//! * values print like Go's `fmt` (`1e+06`, `0.5`, `+Inf`, `map[a:b]`), `printf`
//!   implements Go's verbs, flags, width and precision (`%!d(float64=1.5)`
//!   included);
//! * comparisons are as strict as Go's (`gt $value 0` is "incompatible types
//!   for comparison": `$value` is a float64, `0` an int).
//!
//! Not supported: complex and hexadecimal floating-point literals, `%x`/`%b` on
//! floats, `%#v` Go syntax, `call` (always an error), iterating channels or
//! functions. Query results print as `&{map[...] value}` where Go prints
//! pointer addresses. Template recursion is limited to 100 levels (Go: 100000)
//! and expressions to 100 nesting levels so that evaluation stays on the stack.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::rc::Rc;

use regex::Regex;

/// One sample returned by the `query` template function.
#[derive(Debug, Clone, PartialEq)]
pub struct QuerySample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Runs a PromQL instant query at the rule's evaluation time.
pub type QueryFn<'a> = &'a (dyn Fn(&str) -> Result<Vec<QuerySample>, String> + 'a);

/// The data a rule template sees.
pub struct TemplateData<'a> {
    pub labels: &'a BTreeMap<String, String>,
    pub external_labels: &'a BTreeMap<String, String>,
    pub external_url: &'a str,
    pub value: f64,
}

/// A parse or execution error, worded like Go's `text/template`
/// (`template: NAME:LINE: ...` when parsing,
/// `template: NAME:LINE:COL: executing "NAME" at <...>: ...` when executing).
/// Prometheus wraps these in "error parsing template NAME: " or
/// "error executing template NAME: "; that is left to the caller.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    pub message: String,
}

/// A parsed template, reusable across evaluations.
#[derive(Debug, Clone)]
pub struct Template {
    name: String,
    /// The preamble followed by the template text: positions index into it.
    text: String,
    root: Vec<Node>,
    defs: BTreeMap<String, Vec<Node>>,
}

/// What Prometheus prepends to every alert template.
const PREAMBLE: &str = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}";
/// Nesting limit for parenthesised pipelines and control structures.
const MAX_PARSE_DEPTH: usize = 100;
/// Nesting limit for `{{template}}` calls.
const MAX_EXEC_DEPTH: usize = 100;
/// Limit for nested evaluation (template calls, control structures and
/// pipelines together), so that recursion cannot exhaust the thread's stack.
const MAX_NESTING: usize = 250;
/// Go's name for the type of the data (`.`).
const DATA_TYPE: &str = "struct { Labels map[string]string; ExternalLabels map[string]string; ExternalURL string; Value interface {} }";

impl Template {
    /// Parses `text`; `name` appears in errors (Prometheus uses "__alert_<AlertName>" and "__rule_<record>").
    pub fn parse(name: &str, text: &str) -> Result<Template, TemplateError> {
        let full = format!("{PREAMBLE}{text}");
        let items = Lexer::lex(&full);
        let mut p = Parser {
            name,
            items,
            i: 0,
            line: 1,
            vars: vec!["$".to_string()],
            range_depth: 0,
            action_line: 0,
            depth: 0,
            defs: BTreeMap::new(),
        };
        let root = p.parse()?;
        if p.defs.contains_key(name) {
            return p.errorf(format!("template: multiple definition of template {}", go_quote(name)));
        }
        Ok(Template {
            name: name.to_string(),
            text: full,
            root,
            defs: p.defs,
        })
    }

    /// The name given at parse time (`__alert_<name>`, `__rule_<name>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Executes with Prometheus's preamble semantics: variables $labels (.Labels), $externalLabels (.ExternalLabels),
    /// $externalURL (.ExternalURL), $value (.Value) are defined, and `.` is the data ({.Labels, .Value, .ExternalLabels, .ExternalURL}).
    /// `query` is None when queries are not allowed (then the query function errors).
    pub fn execute(&self, data: &TemplateData<'_>, query: Option<QueryFn<'_>>, eval_time_ms: i64) -> Result<String, TemplateError> {
        let dot = Value::Data(Rc::new(DataV {
            labels: Rc::new(data.labels.clone()),
            external_labels: Rc::new(data.external_labels.clone()),
            external_url: Rc::from(data.external_url),
            value: data.value,
        }));
        let mut st = State {
            tmpl: self,
            query,
            eval_time_ms,
            external_url: data.external_url,
            cur_name: &self.name,
            vars: vec![("$", dot.clone())],
            depth: 0,
            nest: 0,
            at: At::None,
            out: String::new(),
            regexes: HashMap::new(),
        };
        st.walk_list(&dot, &self.root)?;
        Ok(st.out)
    }
}

/// Convenience: parse + execute.
pub fn expand(
    name: &str,
    text: &str,
    data: &TemplateData<'_>,
    query: Option<QueryFn<'_>>,
    eval_time_ms: i64,
) -> Result<String, TemplateError> {
    Template::parse(name, text)?.execute(data, query, eval_time_ms)
}

// ---------------------------------------------------------------------------
// Lexer (Go's text/template/parse/lex.go, delimiters "{{" and "}}").

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum It {
    Error,
    Bool,
    Char,
    CharConstant,
    Complex,
    Assign,
    Declare,
    Eof,
    Field,
    Identifier,
    LeftDelim,
    LeftParen,
    Number,
    Pipe,
    RawString,
    RightDelim,
    RightParen,
    Space,
    Str,
    Text,
    Variable,
    // Keywords.
    Block,
    Break,
    Continue,
    Dot,
    Define,
    Else,
    End,
    If,
    Nil,
    Range,
    Template,
    With,
}

impl It {
    fn is_keyword(self) -> bool {
        matches!(
            self,
            It::Block
                | It::Break
                | It::Continue
                | It::Dot
                | It::Define
                | It::Else
                | It::End
                | It::If
                | It::Nil
                | It::Range
                | It::Template
                | It::With
        )
    }
}

#[derive(Debug, Clone)]
struct Item {
    typ: It,
    pos: usize,
    line: usize,
    val: String,
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.typ {
            It::Eof => f.write_str("EOF"),
            It::Error => f.write_str(&self.val),
            t if t.is_keyword() => write!(f, "<{}>", self.val),
            _ if self.val.len() > 10 => write!(f, "{}...", go_quote(&self.val.chars().take(10).collect::<String>())),
            _ => f.write_str(&go_quote(&self.val)),
        }
    }
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphabetic() || c.is_numeric()
}

fn has_left_trim_marker(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2 && b[0] == b'-' && is_space(b[1] as char)
}

fn has_right_trim_marker(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2 && is_space(b[0] as char) && b[1] == b'-'
}

fn left_trim_len(s: &str) -> usize {
    s.len() - s.trim_start_matches(is_space).len()
}

fn right_trim_len(s: &str) -> usize {
    s.len() - s.trim_end_matches(is_space).len()
}

struct Lexer<'a> {
    input: &'a str,
    items: Vec<Item>,
    newlines: Vec<usize>,
}

impl<'a> Lexer<'a> {
    fn lex(input: &'a str) -> Vec<Item> {
        let mut lx = Lexer {
            input,
            items: Vec::new(),
            newlines: input.match_indices('\n').map(|(i, _)| i).collect(),
        };
        lx.run();
        lx.items
    }

    fn line_at(&self, pos: usize) -> usize {
        1 + self.newlines.partition_point(|&n| n < pos)
    }

    fn emit(&mut self, typ: It, start: usize, end: usize) {
        let line = self.line_at(start);
        self.items.push(Item {
            typ,
            pos: start,
            line,
            val: self.input[start..end].to_string(),
        });
    }

    /// Records a lexing error; the parser stops there.
    fn error(&mut self, start: usize, msg: String) {
        let line = self.line_at(start);
        self.items.push(Item {
            typ: It::Error,
            pos: start,
            line,
            val: msg,
        });
        let end = self.input.len();
        self.emit(It::Eof, end, end);
    }

    fn char_at(&self, pos: usize) -> Option<char> {
        self.input.get(pos..).and_then(|s| s.chars().next())
    }

    /// Whether a right delimiter (possibly trim-marked) starts at `p`: (delimiter, trim marker).
    fn at_right_delim(&self, p: usize) -> (bool, bool) {
        let rest = &self.input[p..];
        if has_right_trim_marker(rest) && rest[2..].starts_with("}}") {
            return (true, true);
        }
        (rest.starts_with("}}"), false)
    }

    fn at_terminator(&self, p: usize) -> bool {
        match self.char_at(p) {
            None => true,
            Some(c) if is_space(c) => true,
            Some('.' | ',' | '|' | ':' | ')' | '(') => true,
            Some(_) => self.input[p..].starts_with("}}"),
        }
    }

    fn run(&mut self) {
        let input = self.input;
        let mut pos = 0;
        loop {
            let Some(x) = input[pos..].find("{{") else {
                if pos < input.len() {
                    self.emit(It::Text, pos, input.len());
                }
                self.emit(It::Eof, input.len(), input.len());
                return;
            };
            let delim = pos + x;
            let after = delim + 2;
            let trim = has_left_trim_marker(&input[after..]);
            let text_end = if trim { delim - right_trim_len(&input[pos..delim]) } else { delim };
            if text_end > pos {
                self.emit(It::Text, pos, text_end);
            }
            let start = if trim { after + 2 } else { after };
            if input[start..].starts_with("/*") {
                let Some(x) = input[start + 2..].find("*/") else {
                    return self.error(start, "unclosed comment".into());
                };
                let mut p = start + 2 + x + 2;
                let (delim, trim) = self.at_right_delim(p);
                if !delim {
                    return self.error(start, "comment ends before closing delimiter".into());
                }
                if trim {
                    p += 2;
                }
                p += 2;
                if trim {
                    p += left_trim_len(&input[p..]);
                }
                pos = p;
                continue;
            }
            self.emit(It::LeftDelim, delim, after);
            match self.lex_action(start) {
                Some(p) => pos = p,
                None => return,
            }
        }
    }

    /// Lexes inside an action starting at `p`; returns the position after the
    /// right delimiter, or None after recording an error.
    fn lex_action(&mut self, mut p: usize) -> Option<usize> {
        let input = self.input;
        let mut paren_depth: i32 = 0;
        loop {
            let (delim, trim) = self.at_right_delim(p);
            if delim {
                if paren_depth == 0 {
                    let mut q = if trim { p + 2 } else { p };
                    self.emit(It::RightDelim, q, q + 2);
                    q += 2;
                    if trim {
                        q += left_trim_len(&input[q..]);
                    }
                    return Some(q);
                }
                self.error(p, "unclosed left paren".into());
                return None;
            }
            let Some(c) = self.char_at(p) else {
                self.error(p, "unclosed action".into());
                return None;
            };
            let start = p;
            let next = p + c.len_utf8();
            match c {
                c if is_space(c) => {
                    let mut q = p;
                    while self.char_at(q).is_some_and(is_space) {
                        q += 1;
                    }
                    // A trim-marked right delimiter starts with a space: leave it.
                    if has_right_trim_marker(&input[q - 1..]) && input.get(q + 1..).is_some_and(|s| s.starts_with("}}")) {
                        q -= 1;
                    }
                    if q > start {
                        self.emit(It::Space, start, q);
                    }
                    p = q;
                }
                '=' => {
                    self.emit(It::Assign, start, next);
                    p = next;
                }
                ':' => {
                    if self.char_at(next) != Some('=') {
                        self.error(start, "expected :=".into());
                        return None;
                    }
                    self.emit(It::Declare, start, next + 1);
                    p = next + 1;
                }
                '|' => {
                    self.emit(It::Pipe, start, next);
                    p = next;
                }
                '"' | '\'' => {
                    let (typ, what) = if c == '"' {
                        (It::Str, "unterminated quoted string")
                    } else {
                        (It::CharConstant, "unterminated character constant")
                    };
                    let mut q = next;
                    loop {
                        match self.char_at(q) {
                            Some('\\') => match self.char_at(q + 1) {
                                Some(e) if e != '\n' => q += 1 + e.len_utf8(),
                                _ => {
                                    self.error(start, what.into());
                                    return None;
                                }
                            },
                            None | Some('\n') => {
                                self.error(start, what.into());
                                return None;
                            }
                            Some(e) if e == c => {
                                q += 1;
                                break;
                            }
                            Some(e) => q += e.len_utf8(),
                        }
                    }
                    self.emit(typ, start, q);
                    p = q;
                }
                '`' => {
                    let Some(x) = input[next..].find('`') else {
                        self.error(start, "unterminated raw quoted string".into());
                        return None;
                    };
                    self.emit(It::RawString, start, next + x + 1);
                    p = next + x + 1;
                }
                '$' => p = self.lex_field_or_variable(start, It::Variable)?,
                '.' if !self.char_at(next).is_some_and(|d| d.is_ascii_digit()) => p = self.lex_field_or_variable(start, It::Field)?,
                '.' | '+' | '-' | '0'..='9' => p = self.lex_number(start)?,
                c if is_alnum(c) => {
                    let mut q = start;
                    while let Some(d) = self.char_at(q).filter(|&d| is_alnum(d)) {
                        q += d.len_utf8();
                    }
                    if !self.at_terminator(q) {
                        let bad = self.char_at(q).map(go_unicode_sharp).unwrap_or_default();
                        self.error(start, format!("bad character {bad}"));
                        return None;
                    }
                    let typ = match &input[start..q] {
                        "block" => It::Block,
                        "break" => It::Break,
                        "continue" => It::Continue,
                        "define" => It::Define,
                        "else" => It::Else,
                        "end" => It::End,
                        "if" => It::If,
                        "range" => It::Range,
                        "nil" => It::Nil,
                        "template" => It::Template,
                        "with" => It::With,
                        "true" | "false" => It::Bool,
                        _ => It::Identifier,
                    };
                    self.emit(typ, start, q);
                    p = q;
                }
                '(' => {
                    self.emit(It::LeftParen, start, next);
                    paren_depth += 1;
                    p = next;
                }
                ')' => {
                    paren_depth -= 1;
                    if paren_depth < 0 {
                        self.error(start, "unexpected right paren".into());
                        return None;
                    }
                    self.emit(It::RightParen, start, next);
                    p = next;
                }
                c if c.is_ascii() && is_go_print(c) => {
                    self.emit(It::Char, start, next);
                    p = next;
                }
                c => {
                    self.error(start, format!("unrecognized character in action: {}", go_unicode_sharp(c)));
                    return None;
                }
            }
        }
    }

    /// `$x` / `$` or `.Field` / `.`.
    fn lex_field_or_variable(&mut self, start: usize, typ: It) -> Option<usize> {
        let q0 = start + 1;
        if self.at_terminator(q0) {
            self.emit(if typ == It::Variable { It::Variable } else { It::Dot }, start, q0);
            return Some(q0);
        }
        let mut q = q0;
        while let Some(d) = self.char_at(q).filter(|&d| is_alnum(d)) {
            q += d.len_utf8();
        }
        if !self.at_terminator(q) {
            let bad = self.char_at(q).map(go_unicode_sharp).unwrap_or_default();
            self.error(start, format!("bad character {bad}"));
            return None;
        }
        self.emit(typ, start, q);
        Some(q)
    }

    fn scan_number(&self, mut p: usize) -> (usize, bool) {
        let b = self.input.as_bytes();
        let accept = |p: &mut usize, set: &str| -> bool {
            if *p < b.len() && set.as_bytes().contains(&b[*p]) {
                *p += 1;
                true
            } else {
                false
            }
        };
        let accept_run = |p: &mut usize, set: &str| while accept(p, set) {};
        accept(&mut p, "+-");
        let mut digits = "0123456789_";
        if accept(&mut p, "0") {
            if accept(&mut p, "xX") {
                digits = "0123456789abcdefABCDEF_";
            } else if accept(&mut p, "oO") {
                digits = "01234567_";
            } else if accept(&mut p, "bB") {
                digits = "01_";
            }
        }
        accept_run(&mut p, digits);
        if accept(&mut p, ".") {
            accept_run(&mut p, digits);
        }
        if digits.len() == 11 && accept(&mut p, "eE") {
            accept(&mut p, "+-");
            accept_run(&mut p, "0123456789_");
        }
        if digits.len() == 23 && accept(&mut p, "pP") {
            accept(&mut p, "+-");
            accept_run(&mut p, "0123456789_");
        }
        accept(&mut p, "i");
        match self.char_at(p) {
            Some(c) if is_alnum(c) => (p + c.len_utf8(), false),
            _ => (p, true),
        }
    }

    fn lex_number(&mut self, start: usize) -> Option<usize> {
        let (p, ok) = self.scan_number(start);
        if !ok {
            self.error(start, format!("bad number syntax: {}", go_quote(&self.input[start..p])));
            return None;
        }
        if matches!(self.char_at(p), Some('+' | '-')) {
            let (q, ok) = self.scan_number(p);
            if !ok || !self.input[..q].ends_with('i') {
                self.error(start, format!("bad number syntax: {}", go_quote(&self.input[start..q])));
                return None;
            }
            self.emit(It::Complex, start, q);
            return Some(q);
        }
        self.emit(It::Number, start, p);
        Some(p)
    }
}

// ---------------------------------------------------------------------------
// Parse tree (Go's text/template/parse/node.go). `Display` gives Go's
// `Node.String()`, which execution errors quote.

#[derive(Debug, Clone)]
enum Node {
    Text { pos: usize, text: String },
    Action { pos: usize, pipe: Pipe },
    If(Box<Branch>),
    Range(Box<Branch>),
    With(Box<Branch>),
    Template { pos: usize, name: String, pipe: Option<Pipe> },
    Break { pos: usize },
    Continue { pos: usize },
}

#[derive(Debug, Clone)]
struct Branch {
    pos: usize,
    pipe: Pipe,
    list: Vec<Node>,
    else_list: Option<Vec<Node>>,
}

#[derive(Debug, Clone)]
struct Pipe {
    pos: usize,
    is_assign: bool,
    decl: Vec<String>,
    cmds: Vec<Command>,
}

#[derive(Debug, Clone)]
struct Command {
    pos: usize,
    args: Vec<Arg>,
}

#[derive(Debug, Clone)]
struct Number {
    pos: usize,
    text: String,
    is_int: bool,
    is_uint: bool,
    is_float: bool,
    int: i64,
    float: f64,
}

#[derive(Debug, Clone)]
enum Arg {
    Identifier {
        pos: usize,
        name: String,
    },
    Dot {
        pos: usize,
    },
    Nil {
        pos: usize,
    },
    Bool {
        pos: usize,
        val: bool,
    },
    Number(Box<Number>),
    Str {
        pos: usize,
        quoted: String,
        text: String,
    },
    /// `.A.B`: idents without the dots.
    Field {
        pos: usize,
        idents: Vec<String>,
    },
    /// `$x.A.B`: idents[0] is "$x".
    Variable {
        pos: usize,
        idents: Vec<String>,
    },
    /// `(pipeline).A.B` or `fn.A`.
    Chain {
        pos: usize,
        node: Box<Arg>,
        fields: Vec<String>,
    },
    Pipe(Box<Pipe>),
}

impl Node {
    fn pos(&self) -> usize {
        match self {
            Node::Text { pos, .. }
            | Node::Action { pos, .. }
            | Node::Template { pos, .. }
            | Node::Break { pos }
            | Node::Continue { pos } => *pos,
            Node::If(b) | Node::Range(b) | Node::With(b) => b.pos,
        }
    }
}

impl Arg {
    fn pos(&self) -> usize {
        match self {
            Arg::Identifier { pos, .. }
            | Arg::Dot { pos }
            | Arg::Nil { pos }
            | Arg::Bool { pos, .. }
            | Arg::Str { pos, .. }
            | Arg::Field { pos, .. }
            | Arg::Variable { pos, .. }
            | Arg::Chain { pos, .. } => *pos,
            Arg::Number(n) => n.pos,
            Arg::Pipe(p) => p.pos,
        }
    }
}

fn write_list(f: &mut fmt::Formatter<'_>, list: &[Node]) -> fmt::Result {
    list.iter().try_for_each(|n| write!(f, "{n}"))
}

fn write_branch(f: &mut fmt::Formatter<'_>, kw: &str, b: &Branch) -> fmt::Result {
    write!(f, "{{{{{kw} {}}}}}", b.pipe)?;
    write_list(f, &b.list)?;
    if let Some(e) = &b.else_list {
        f.write_str("{{else}}")?;
        write_list(f, e)?;
    }
    f.write_str("{{end}}")
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Text { text, .. } => f.write_str(text),
            Node::Action { pipe, .. } => write!(f, "{{{{{pipe}}}}}"),
            Node::If(b) => write_branch(f, "if", b),
            Node::Range(b) => write_branch(f, "range", b),
            Node::With(b) => write_branch(f, "with", b),
            Node::Template { name, pipe, .. } => match pipe {
                Some(p) => write!(f, "{{{{template {} {p}}}}}", go_quote(name)),
                None => write!(f, "{{{{template {}}}}}", go_quote(name)),
            },
            Node::Break { .. } => f.write_str("{{break}}"),
            Node::Continue { .. } => f.write_str("{{continue}}"),
        }
    }
}

impl fmt::Display for Pipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.decl.is_empty() {
            f.write_str(&self.decl.join(", "))?;
            f.write_str(if self.is_assign { " = " } else { " := " })?;
        }
        for (i, c) in self.cmds.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.args.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            match a {
                Arg::Pipe(p) => write!(f, "({p})")?,
                _ => write!(f, "{a}")?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arg::Identifier { name, .. } => f.write_str(name),
            Arg::Dot { .. } => f.write_str("."),
            Arg::Nil { .. } => f.write_str("nil"),
            Arg::Bool { val, .. } => write!(f, "{val}"),
            Arg::Number(n) => f.write_str(&n.text),
            Arg::Str { quoted, .. } => f.write_str(quoted),
            Arg::Field { idents, .. } => idents.iter().try_for_each(|i| write!(f, ".{i}")),
            Arg::Variable { idents, .. } => f.write_str(&idents.join(".")),
            Arg::Chain { node, fields, .. } => {
                match &**node {
                    Arg::Pipe(p) => write!(f, "({p})")?,
                    n => write!(f, "{n}")?,
                }
                fields.iter().try_for_each(|i| write!(f, ".{i}"))
            }
            Arg::Pipe(p) => write!(f, "{p}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Parser (Go's text/template/parse/parse.go).

/// What `textOrAction` can return: a node, or the `{{end}}`/`{{else}}` that closes a list.
enum Parsed {
    Node(Node),
    End,
    Else,
}

impl Parsed {
    fn describe(&self) -> String {
        match self {
            Parsed::Node(n) => n.to_string(),
            Parsed::End => "{{end}}".into(),
            Parsed::Else => "{{else}}".into(),
        }
    }
}

type PResult<T> = Result<T, TemplateError>;

struct Parser<'a> {
    name: &'a str,
    items: Vec<Item>,
    i: usize,
    /// Line of the most recently read token (Go's `t.token[0].line`).
    line: usize,
    vars: Vec<String>,
    range_depth: usize,
    action_line: usize,
    depth: usize,
    defs: BTreeMap<String, Vec<Node>>,
}

fn is_function(name: &str) -> bool {
    Func::lookup(name).is_some()
}

impl Parser<'_> {
    fn errorf<T>(&self, msg: impl fmt::Display) -> PResult<T> {
        Err(TemplateError {
            message: format!("template: {}:{}: {}", self.name, self.line, msg),
        })
    }

    fn next(&mut self) -> Item {
        let idx = self.i.min(self.items.len().saturating_sub(1));
        let it = self.items.get(idx).cloned().unwrap_or(Item {
            typ: It::Eof,
            pos: 0,
            line: 1,
            val: String::new(),
        });
        self.i += 1;
        self.line = it.line;
        it
    }

    fn backup(&mut self) {
        self.i = self.i.saturating_sub(1);
    }

    fn peek(&mut self) -> Item {
        let it = self.next();
        self.backup();
        it
    }

    fn next_non_space(&mut self) -> Item {
        loop {
            let it = self.next();
            if it.typ != It::Space {
                return it;
            }
        }
    }

    fn peek_non_space(&mut self) -> Item {
        let it = self.next_non_space();
        self.backup();
        it
    }

    fn expect(&mut self, typ: It, context: &str) -> PResult<Item> {
        let it = self.next_non_space();
        if it.typ != typ {
            return self.unexpected(&it, context);
        }
        Ok(it)
    }

    fn unexpected<T>(&self, it: &Item, context: &str) -> PResult<T> {
        if it.typ == It::Error {
            let mut extra = String::new();
            if self.action_line != 0 && self.action_line != it.line {
                extra = format!(" in action started at {}:{}", self.name, self.action_line);
                if it.val.ends_with(" action") {
                    extra = extra[" in action".len()..].to_string();
                }
            }
            return self.errorf(format!("{}{}", it.val, extra));
        }
        self.errorf(format!("unexpected {it} in {context}"))
    }

    fn enter(&mut self) -> PResult<()> {
        self.depth += 1;
        if self.depth > MAX_PARSE_DEPTH {
            return self.errorf("expression nested too deeply");
        }
        Ok(())
    }

    fn parse(&mut self) -> PResult<Vec<Node>> {
        let mut root = Vec::new();
        while self.peek().typ != It::Eof {
            if self.peek().typ == It::LeftDelim {
                let save = self.i;
                self.next();
                if self.next_non_space().typ == It::Define {
                    self.parse_definition()?;
                    continue;
                }
                self.i = save;
            }
            match self.text_or_action()? {
                Parsed::Node(n) => root.push(n),
                p => return self.errorf(format!("unexpected {}", p.describe())),
            }
        }
        Ok(root)
    }

    /// `{{define "name"}}...{{end}}` (the `{{define` is already read): a new
    /// tree with its own variables.
    fn parse_definition(&mut self) -> PResult<()> {
        let context = "define clause";
        let it = self.next_non_space();
        if it.typ != It::Str && it.typ != It::RawString {
            return self.unexpected(&it, context);
        }
        let name = match go_unquote(&it.val) {
            Ok(s) => s,
            Err(e) => return self.errorf(e),
        };
        self.expect(It::RightDelim, context)?;
        let saved_vars = std::mem::replace(&mut self.vars, vec!["$".to_string()]);
        let saved_range = std::mem::replace(&mut self.range_depth, 0);
        let (list, end) = self.item_list()?;
        if !matches!(end, Parsed::End) {
            return self.errorf(format!("unexpected {} in {context}", end.describe()));
        }
        self.add_def(name, list)?;
        self.vars = saved_vars;
        self.range_depth = saved_range;
        Ok(())
    }

    fn add_def(&mut self, name: String, list: Vec<Node>) -> PResult<()> {
        let is_empty = |l: &[Node]| {
            l.iter()
                .all(|n| matches!(n, Node::Text { text, .. } if text.trim_matches(is_space).is_empty()))
        };
        match self.defs.get(&name) {
            Some(old) if !is_empty(old) => {
                if !is_empty(&list) {
                    return self.errorf(format!("template: multiple definition of template {}", go_quote(&name)));
                }
            }
            _ => {
                self.defs.insert(name, list);
            }
        }
        Ok(())
    }

    fn item_list(&mut self) -> PResult<(Vec<Node>, Parsed)> {
        self.enter()?;
        let mut list = Vec::new();
        while self.peek_non_space().typ != It::Eof {
            match self.text_or_action()? {
                Parsed::Node(n) => list.push(n),
                end => {
                    self.depth -= 1;
                    return Ok((list, end));
                }
            }
        }
        self.errorf("unexpected EOF")
    }

    fn text_or_action(&mut self) -> PResult<Parsed> {
        let it = self.next_non_space();
        match it.typ {
            It::Text => Ok(Parsed::Node(Node::Text { pos: it.pos, text: it.val })),
            It::LeftDelim => {
                self.action_line = it.line;
                let r = self.action();
                self.action_line = 0;
                r
            }
            _ => self.unexpected(&it, "input"),
        }
    }

    fn action(&mut self) -> PResult<Parsed> {
        let it = self.next_non_space();
        match it.typ {
            It::Block => return self.block_control().map(Parsed::Node),
            It::Break | It::Continue => return self.break_control(&it).map(Parsed::Node),
            It::Else => return self.else_control(),
            It::End => {
                self.expect(It::RightDelim, "end")?;
                return Ok(Parsed::End);
            }
            It::If => return self.branch_control("if").map(|b| Parsed::Node(Node::If(Box::new(b)))),
            It::Range => return self.branch_control("range").map(|b| Parsed::Node(Node::Range(Box::new(b)))),
            It::Template => return self.template_control().map(Parsed::Node),
            It::With => return self.branch_control("with").map(|b| Parsed::Node(Node::With(Box::new(b)))),
            _ => {}
        }
        self.backup();
        let it = self.peek();
        let pipe = self.pipeline("command", It::RightDelim)?;
        Ok(Parsed::Node(Node::Action { pos: it.pos, pipe }))
    }

    fn break_control(&mut self, kw: &Item) -> PResult<Node> {
        let what = if kw.typ == It::Break { "break" } else { "continue" };
        let it = self.next_non_space();
        if it.typ != It::RightDelim {
            return self.unexpected(&it, &format!("{{{{{what}}}}}"));
        }
        if self.range_depth == 0 {
            return self.errorf(format!("{{{{{what}}}}} outside {{{{range}}}}"));
        }
        Ok(if kw.typ == It::Break {
            Node::Break { pos: kw.pos }
        } else {
            Node::Continue { pos: kw.pos }
        })
    }

    fn else_control(&mut self) -> PResult<Parsed> {
        let peek = self.peek_non_space();
        if peek.typ == It::If || peek.typ == It::With {
            // "{{else if ...": treated as "{{else}}{{if ...".
            return Ok(Parsed::Else);
        }
        self.expect(It::RightDelim, "else")?;
        Ok(Parsed::Else)
    }

    fn branch_control(&mut self, context: &str) -> PResult<Branch> {
        self.enter()?;
        let nvars = self.vars.len();
        let pipe = self.pipeline(context, It::RightDelim)?;
        if context == "range" {
            self.range_depth += 1;
        }
        let (list, next) = self.item_list()?;
        if context == "range" {
            self.range_depth -= 1;
        }
        let mut else_list = None;
        if let Parsed::Else = next {
            if context == "if" && self.peek().typ == It::If {
                self.next();
                let b = self.branch_control("if")?;
                else_list = Some(vec![Node::If(Box::new(b))]);
            } else if context == "with" && self.peek().typ == It::With {
                self.next();
                let b = self.branch_control("with")?;
                else_list = Some(vec![Node::With(Box::new(b))]);
            } else {
                let (l, next) = self.item_list()?;
                if !matches!(next, Parsed::End) {
                    return self.errorf(format!("expected end; found {}", next.describe()));
                }
                else_list = Some(l);
            }
        }
        self.vars.truncate(nvars);
        self.depth -= 1;
        Ok(Branch {
            pos: pipe.pos,
            pipe,
            list,
            else_list,
        })
    }

    fn parse_template_name(&mut self, it: &Item, context: &str) -> PResult<String> {
        match it.typ {
            It::Str | It::RawString => match go_unquote(&it.val) {
                Ok(s) => Ok(s),
                Err(e) => self.errorf(e),
            },
            _ => self.unexpected(it, context),
        }
    }

    fn template_control(&mut self) -> PResult<Node> {
        let context = "template clause";
        let it = self.next_non_space();
        let name = self.parse_template_name(&it, context)?;
        let mut pipe = None;
        if self.next_non_space().typ != It::RightDelim {
            self.backup();
            pipe = Some(self.pipeline(context, It::RightDelim)?);
        }
        Ok(Node::Template { pos: it.pos, name, pipe })
    }

    fn block_control(&mut self) -> PResult<Node> {
        let context = "block clause";
        let it = self.next_non_space();
        let name = self.parse_template_name(&it, context)?;
        let pipe = self.pipeline(context, It::RightDelim)?;
        let saved_vars = std::mem::replace(&mut self.vars, vec!["$".to_string()]);
        let saved_range = std::mem::replace(&mut self.range_depth, 0);
        let (list, end) = self.item_list()?;
        if !matches!(end, Parsed::End) {
            return self.errorf(format!("unexpected {} in {context}", end.describe()));
        }
        self.add_def(name.clone(), list)?;
        self.vars = saved_vars;
        self.range_depth = saved_range;
        Ok(Node::Template {
            pos: it.pos,
            name,
            pipe: Some(pipe),
        })
    }

    fn pipeline(&mut self, context: &str, end: It) -> PResult<Pipe> {
        self.enter()?;
        let start = self.peek_non_space();
        let mut pipe = Pipe {
            pos: start.pos,
            is_assign: false,
            decl: Vec::new(),
            cmds: Vec::new(),
        };
        loop {
            let v = self.peek_non_space();
            if v.typ != It::Variable {
                break;
            }
            let before = self.i;
            self.next();
            let next = self.peek_non_space();
            if next.typ == It::Assign || next.typ == It::Declare {
                pipe.is_assign = next.typ == It::Assign;
                self.next_non_space();
                pipe.decl.push(v.val.clone());
                self.vars.push(v.val);
            } else if next.typ == It::Char && next.val == "," {
                self.next_non_space();
                pipe.decl.push(v.val.clone());
                self.vars.push(v.val);
                if context == "range" && pipe.decl.len() < 2 {
                    match self.peek_non_space().typ {
                        It::Variable | It::RightDelim | It::RightParen => continue,
                        _ => return self.errorf("range can only initialize variables"),
                    }
                }
                return self.errorf(format!("too many declarations in {context}"));
            } else {
                self.i = before;
            }
            break;
        }
        loop {
            let it = self.next_non_space();
            if it.typ == end {
                self.check_pipeline(&pipe, context)?;
                self.depth -= 1;
                return Ok(pipe);
            }
            match it.typ {
                It::Bool
                | It::CharConstant
                | It::Complex
                | It::Dot
                | It::Field
                | It::Identifier
                | It::Number
                | It::Nil
                | It::RawString
                | It::Str
                | It::Variable
                | It::LeftParen => {
                    self.backup();
                    let cmd = self.command()?;
                    pipe.cmds.push(cmd);
                }
                _ => return self.unexpected(&it, context),
            }
        }
    }

    fn check_pipeline(&self, pipe: &Pipe, context: &str) -> PResult<()> {
        if pipe.cmds.is_empty() {
            return self.errorf(format!("missing value for {context}"));
        }
        for (i, c) in pipe.cmds.iter().enumerate().skip(1) {
            if matches!(
                c.args.first(),
                Some(Arg::Bool { .. } | Arg::Dot { .. } | Arg::Nil { .. } | Arg::Number(_) | Arg::Str { .. })
            ) {
                return self.errorf(format!("non executable command in pipeline stage {}", i + 1));
            }
        }
        Ok(())
    }

    fn command(&mut self) -> PResult<Command> {
        let pos = self.peek_non_space().pos;
        let mut args = Vec::new();
        loop {
            self.peek_non_space();
            if let Some(op) = self.operand()? {
                args.push(op);
            }
            let it = self.next();
            match it.typ {
                It::Space => continue,
                It::RightDelim | It::RightParen => self.backup(),
                It::Pipe => {}
                _ => return self.unexpected(&it, "operand"),
            }
            break;
        }
        if args.is_empty() {
            return self.errorf("empty command");
        }
        Ok(Command { pos, args })
    }

    fn operand(&mut self) -> PResult<Option<Arg>> {
        let Some(node) = self.term()? else {
            return Ok(None);
        };
        if self.peek().typ != It::Field {
            return Ok(Some(node));
        }
        let pos = self.peek().pos;
        let mut fields = Vec::new();
        while self.peek().typ == It::Field {
            let f = self.next();
            fields.push(f.val[1..].to_string());
        }
        Ok(Some(match node {
            Arg::Field { mut idents, .. } => {
                idents.extend(fields);
                Arg::Field { pos, idents }
            }
            Arg::Variable { mut idents, .. } => {
                idents.extend(fields);
                Arg::Variable { pos, idents }
            }
            Arg::Bool { .. } | Arg::Str { .. } | Arg::Number(_) | Arg::Nil { .. } | Arg::Dot { .. } => {
                return self.errorf(format!("unexpected . after term {}", go_quote(&node.to_string())));
            }
            node => Arg::Chain {
                pos,
                node: Box::new(node),
                fields,
            },
        }))
    }

    fn term(&mut self) -> PResult<Option<Arg>> {
        let it = self.next_non_space();
        let pos = it.pos;
        Ok(Some(match it.typ {
            It::Identifier => {
                if !is_function(&it.val) {
                    return self.errorf(format!("function {} not defined", go_quote(&it.val)));
                }
                Arg::Identifier { pos, name: it.val }
            }
            It::Dot => Arg::Dot { pos },
            It::Nil => Arg::Nil { pos },
            It::Variable => {
                if !self.vars.contains(&it.val) {
                    return self.errorf(format!("undefined variable {}", go_quote(&it.val)));
                }
                Arg::Variable { pos, idents: vec![it.val] }
            }
            It::Field => Arg::Field {
                pos,
                idents: vec![it.val[1..].to_string()],
            },
            It::Bool => Arg::Bool {
                pos,
                val: it.val == "true",
            },
            It::CharConstant | It::Complex | It::Number => match new_number(pos, &it.val, it.typ) {
                Ok(n) => Arg::Number(Box::new(n)),
                Err(e) => return self.errorf(e),
            },
            It::LeftParen => Arg::Pipe(Box::new(self.pipeline("parenthesized pipeline", It::RightParen)?)),
            It::Str | It::RawString => match go_unquote(&it.val) {
                Ok(text) => Arg::Str { pos, quoted: it.val, text },
                Err(e) => return self.errorf(e),
            },
            _ => {
                self.backup();
                return Ok(None);
            }
        }))
    }
}

/// Go's `parse.newNumber`: which kinds of constant the literal can be.
fn new_number(pos: usize, text: &str, typ: It) -> Result<Number, String> {
    let mut n = Number {
        pos,
        text: text.to_string(),
        is_int: false,
        is_uint: false,
        is_float: false,
        int: 0,
        float: 0.0,
    };
    if typ == It::CharConstant {
        let inner = &text[1..];
        let (c, tail) = unquote_char(inner, '\'').map_err(|_| "invalid syntax".to_string())?;
        if tail != "'" {
            return Err(format!("malformed character constant: {text}"));
        }
        n.int = i64::from(u32::from(c));
        n.float = n.int as f64;
        n.is_int = true;
        n.is_uint = true;
        n.is_float = true;
        return Ok(n);
    }
    if typ == It::Complex || text.ends_with('i') {
        return Err(format!("complex constants are not supported: {}", go_quote(text)));
    }
    if let Some(u) = parse_uint_base0(text) {
        n.is_uint = true;
        if let Ok(i) = i64::try_from(u) {
            n.is_int = true;
            n.int = i;
        }
        n.is_float = true;
        n.float = u as f64;
    } else if let Some(i) = parse_int_base0(text) {
        n.is_int = true;
        n.int = i;
        n.is_float = true;
        n.float = i as f64;
    } else if let Ok(f) = parse_go_float(text) {
        if !text.contains(['.', 'e', 'E', 'p', 'P']) {
            return Err(format!("integer overflow: {}", go_quote(text)));
        }
        n.is_float = true;
        n.float = f;
        if !n.is_int && (f as i64) as f64 == f {
            n.is_int = true;
            n.int = f as i64;
        }
    }
    if !n.is_int && !n.is_uint && !n.is_float {
        return Err(format!("illegal number syntax: {}", go_quote(text)));
    }
    Ok(n)
}

/// Go's `underscoreOK`: underscores only between digits (or after a base prefix).
fn underscore_ok(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
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
        if c.is_ascii_digit() || hex && c.is_ascii_hexdigit() {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
        i += 1;
    }
    saw != b'_'
}

/// `strconv.ParseUint(s, 0, 64)`.
fn parse_uint_base0(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.is_empty() || b[0] == b'+' || b[0] == b'-' {
        return None;
    }
    let (base, digits) = if b[0] == b'0' && b.len() > 1 {
        match b[1] {
            b'x' | b'X' => (16, &s[2..]),
            b'o' | b'O' => (8, &s[2..]),
            b'b' | b'B' => (2, &s[2..]),
            _ => (8, &s[1..]),
        }
    } else {
        (10, s)
    };
    if s.contains('_') && !underscore_ok(s) {
        return None;
    }
    let clean: String = digits.chars().filter(|&c| c != '_').collect();
    if clean.is_empty() || clean.starts_with('+') {
        return None;
    }
    u64::from_str_radix(&clean, base).ok()
}

/// `strconv.ParseInt(s, 0, 64)`.
fn parse_int_base0(s: &str) -> Option<i64> {
    let (neg, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let u = parse_uint_base0(rest)?;
    if neg {
        if u > 1 << 63 {
            return None;
        }
        Some((u as i64).wrapping_neg())
    } else {
        i64::try_from(u).ok()
    }
}

/// `strconv.ParseFloat(s, 64)` with Go's error texts (hexadecimal floats are not supported).
fn parse_go_float(s: &str) -> Result<f64, String> {
    let syntax = || format!("strconv.ParseFloat: parsing {}: invalid syntax", go_quote(s));
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    let lower = unsigned.to_ascii_lowercase();
    if lower == "nan" {
        return if unsigned.len() == s.len() { Ok(f64::NAN) } else { Err(syntax()) };
    }
    if lower == "inf" || lower == "infinity" {
        return Ok(if s.starts_with('-') { f64::NEG_INFINITY } else { f64::INFINITY });
    }
    if lower.starts_with("0x") || lower.contains("inf") || lower.contains("nan") {
        return Err(syntax());
    }
    let clean: String = if s.contains('_') {
        if !underscore_ok(s) {
            return Err(syntax());
        }
        s.chars().filter(|&c| c != '_').collect()
    } else {
        s.to_string()
    };
    match clean.parse::<f64>() {
        Ok(v) if v.is_infinite() => Err(format!("strconv.ParseFloat: parsing {}: value out of range", go_quote(s))),
        Ok(v) => Ok(v),
        Err(_) => Err(syntax()),
    }
}

/// `strconv.UnquoteChar`: one (possibly escaped) character and the rest of `s`.
fn unquote_char(s: &str, quote: char) -> Result<(char, &str), ()> {
    let mut chars = s.chars();
    let c = chars.next().ok_or(())?;
    if c == quote && (quote == '\'' || quote == '"') {
        return Err(());
    }
    if c != '\\' {
        return Ok((c, chars.as_str()));
    }
    let e = chars.next().ok_or(())?;
    let rest = chars.as_str();
    let simple = match e {
        'a' => Some('\x07'),
        'b' => Some('\x08'),
        'f' => Some('\x0c'),
        'n' => Some('\n'),
        'r' => Some('\r'),
        't' => Some('\t'),
        'v' => Some('\x0b'),
        '\\' => Some('\\'),
        '\'' | '"' => {
            if e != quote {
                return Err(());
            }
            Some(e)
        }
        _ => None,
    };
    if let Some(c) = simple {
        return Ok((c, rest));
    }
    let (n, radix) = match e {
        'x' => (2, 16),
        'u' => (4, 16),
        'U' => (8, 16),
        '0'..='7' => (2, 8),
        _ => return Err(()),
    };
    let (digits, rest) = if radix == 8 {
        let d = rest.get(..n).ok_or(())?;
        (format!("{e}{d}"), &rest[n..])
    } else {
        let d = rest.get(..n).ok_or(())?;
        (d.to_string(), &rest[n..])
    };
    let v = u32::from_str_radix(&digits, radix).map_err(|_| ())?;
    if radix == 8 && v > 255 {
        return Err(());
    }
    // \x and octal escapes are bytes; bytes >= 0x80 become U+0080..U+00FF here.
    let c = char::from_u32(v).ok_or(())?;
    Ok((c, rest))
}

/// `strconv.Unquote` for "..." and `...` literals; errors are "invalid syntax".
fn go_unquote(s: &str) -> Result<String, String> {
    let err = || "invalid syntax".to_string();
    if s.len() < 2 {
        return Err(err());
    }
    if let Some(inner) = s.strip_prefix('`').and_then(|r| r.strip_suffix('`')) {
        if inner.contains('`') {
            return Err(err());
        }
        return Ok(inner.replace('\r', ""));
    }
    let Some(mut inner) = s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else {
        return Err(err());
    };
    let mut out = String::with_capacity(inner.len());
    while !inner.is_empty() {
        if inner.starts_with('\n') {
            return Err(err());
        }
        let (c, rest) = unquote_char(inner, '"').map_err(|_| err())?;
        out.push(c);
        inner = rest;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Values: the Go types a rule template can meet.

#[derive(Debug)]
struct SampleV {
    labels: Rc<BTreeMap<String, String>>,
    value: f64,
}

#[derive(Debug)]
struct DataV {
    labels: Rc<BTreeMap<String, String>>,
    external_labels: Rc<BTreeMap<String, String>>,
    external_url: Rc<str>,
    value: f64,
}

#[derive(Debug, Clone)]
enum Value {
    /// Go's invalid `reflect.Value` (prints "<no value>").
    Invalid,
    /// A nil `interface{}`.
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    /// `html/template.HTML` (from `safeHtml`).
    Html(Rc<str>),
    StrMap(Rc<BTreeMap<String, String>>),
    /// `map[string]interface{}` (from `args`).
    AnyMap(Rc<BTreeMap<String, Value>>),
    /// Prometheus's `queryResult` (`[]*sample`).
    Samples(Rc<Vec<Rc<SampleV>>>),
    /// `*sample`, possibly nil.
    Sample(Option<Rc<SampleV>>),
    /// `*time.Time` (UTC).
    Time(GoTime),
    /// `*time.Duration` in nanoseconds.
    Duration(i64),
    /// The template data (`.`).
    Data(Rc<DataV>),
}

impl Value {
    fn str(s: &str) -> Value {
        Value::Str(Rc::from(s))
    }

    /// Go's `%T`.
    fn go_type(&self) -> &'static str {
        match self {
            Value::Invalid | Value::Nil => "<nil>",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::Html(_) => "template.HTML",
            Value::StrMap(_) => "map[string]string",
            Value::AnyMap(_) => "map[string]interface {}",
            Value::Samples(_) => "template.queryResult",
            Value::Sample(_) => "*template.sample",
            Value::Time(_) => "*time.Time",
            Value::Duration(_) => "*time.Duration",
            Value::Data(_) => DATA_TYPE,
        }
    }

    /// The reflect type named in execution errors.
    fn reflect_type(&self) -> &'static str {
        match self {
            Value::Nil => "interface {}",
            v => v.go_type(),
        }
    }

    /// The type after following a pointer (Go's `indirect`).
    fn elem_type(&self) -> &'static str {
        match self {
            Value::Sample(_) => "template.sample",
            Value::Time(_) => "time.Time",
            Value::Duration(_) => "time.Duration",
            v => v.reflect_type(),
        }
    }
}

/// Go's `isTrue`: false, 0, nil and empty strings/maps/slices are false.
fn is_true(v: &Value) -> bool {
    match v {
        Value::Invalid | Value::Nil | Value::Sample(None) => false,
        Value::Bool(b) => *b,
        Value::Int(i) => *i != 0,
        Value::Float(f) => *f != 0.0,
        Value::Str(s) | Value::Html(s) => !s.is_empty(),
        Value::StrMap(m) => !m.is_empty(),
        Value::AnyMap(m) => !m.is_empty(),
        Value::Samples(s) => !s.is_empty(),
        Value::Sample(Some(_)) | Value::Time(_) | Value::Duration(_) | Value::Data(_) => true,
    }
}

// ---------------------------------------------------------------------------
// Functions.

/// Parameter types, as far as argument checking needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    /// `interface{}`.
    Any,
    /// `reflect.Value` (builtins).
    RValue,
    Str,
    Samples,
    Sample,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Any => "interface {}",
            Ty::RValue => "reflect.Value",
            Ty::Str => "string",
            Ty::Samples => "template.queryResult",
            Ty::Sample => "*template.sample",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    // Go builtins.
    And,
    Or,
    Not,
    Len,
    Index,
    Slice,
    Print,
    Printf,
    Println,
    Html,
    Js,
    Urlquery,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Call,
    // Prometheus.
    Query,
    First,
    Label,
    Value,
    Strvalue,
    Args,
    ReReplaceAll,
    SafeHtml,
    Match,
    Title,
    ToUpper,
    ToLower,
    GraphLink,
    TableLink,
    SortByLabel,
    StripPort,
    StripDomain,
    Humanize,
    Humanize1024,
    HumanizeDuration,
    HumanizePercentage,
    HumanizeTimestamp,
    ToTime,
    ToDuration,
    Now,
    PathPrefix,
    ExternalUrl,
    ParseDuration,
}

struct Sig {
    fixed: &'static [Ty],
    variadic: Option<Ty>,
}

const fn sig(fixed: &'static [Ty], variadic: Option<Ty>) -> Sig {
    Sig { fixed, variadic }
}

impl Func {
    fn lookup(name: &str) -> Option<Func> {
        use Func::*;
        Some(match name {
            "and" => And,
            "or" => Or,
            "not" => Not,
            "len" => Len,
            "index" => Index,
            "slice" => Slice,
            "print" => Print,
            "printf" => Printf,
            "println" => Println,
            "html" => Html,
            "js" => Js,
            "urlquery" => Urlquery,
            "eq" => Eq,
            "ne" => Ne,
            "lt" => Lt,
            "le" => Le,
            "gt" => Gt,
            "ge" => Ge,
            "call" => Call,
            "query" => Query,
            "first" => First,
            "label" => Label,
            "value" => Value,
            "strvalue" => Strvalue,
            "args" => Args,
            "reReplaceAll" => ReReplaceAll,
            "safeHtml" => SafeHtml,
            "match" => Match,
            "title" => Title,
            "toUpper" => ToUpper,
            "toLower" => ToLower,
            "graphLink" => GraphLink,
            "tableLink" => TableLink,
            "sortByLabel" => SortByLabel,
            "stripPort" => StripPort,
            "stripDomain" => StripDomain,
            "humanize" => Humanize,
            "humanize1024" => Humanize1024,
            "humanizeDuration" => HumanizeDuration,
            "humanizePercentage" => HumanizePercentage,
            "humanizeTimestamp" => HumanizeTimestamp,
            "toTime" => ToTime,
            "toDuration" => ToDuration,
            "now" => Now,
            "pathPrefix" => PathPrefix,
            "externalURL" => ExternalUrl,
            "parseDuration" => ParseDuration,
            _ => return None,
        })
    }

    fn sig(self) -> Sig {
        use Func::*;
        use Ty::*;
        match self {
            And | Or | Index | Slice | Eq | Call => sig(&[RValue], Some(RValue)),
            Not | Len => sig(&[RValue], None),
            Ne | Lt | Le | Gt | Ge => sig(&[RValue, RValue], None),
            Print | Println | Html | Js | Urlquery | Args => sig(&[], Some(Any)),
            Printf => sig(&[Str], Some(Any)),
            Query | SafeHtml | Title | ToUpper | ToLower | GraphLink | TableLink | StripPort | StripDomain | ParseDuration => {
                sig(&[Str], None)
            }
            First => sig(&[Samples], None),
            Label => sig(&[Str, Sample], None),
            Func::Value | Strvalue => sig(&[Sample], None),
            ReReplaceAll => sig(&[Str, Str, Str], None),
            Match => sig(&[Str, Str], None),
            SortByLabel => sig(&[Str, Samples], None),
            Humanize | Humanize1024 | HumanizeDuration | HumanizePercentage | HumanizeTimestamp | ToTime | ToDuration => sig(&[Any], None),
            Now | PathPrefix | ExternalUrl => sig(&[], None),
        }
    }
}

/// Methods of `*time.Time` and `*time.Duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Format,
    String,
    Unix,
    UnixMilli,
    UnixMicro,
    UnixNano,
    Utc,
    Year,
    YearDay,
    Day,
    Hour,
    Minute,
    Second,
    Nanosecond,
    IsZero,
    Seconds,
    Minutes,
    Hours,
    Milliseconds,
    Microseconds,
    Nanoseconds,
}

impl Method {
    fn for_time(name: &str) -> Option<Method> {
        use Method::*;
        Some(match name {
            "Format" => Format,
            "String" => String,
            "Unix" => Unix,
            "UnixMilli" => UnixMilli,
            "UnixMicro" => UnixMicro,
            "UnixNano" => UnixNano,
            "UTC" => Utc,
            "Year" => Year,
            "YearDay" => YearDay,
            "Day" => Day,
            "Hour" => Hour,
            "Minute" => Minute,
            "Second" => Second,
            "Nanosecond" => Nanosecond,
            "IsZero" => IsZero,
            _ => return None,
        })
    }

    fn for_duration(name: &str) -> Option<Method> {
        use Method::*;
        Some(match name {
            "String" => String,
            "Seconds" => Seconds,
            "Minutes" => Minutes,
            "Hours" => Hours,
            "Milliseconds" => Milliseconds,
            "Microseconds" => Microseconds,
            "Nanoseconds" => Nanoseconds,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
enum Callee {
    Func(Func),
    Time(GoTime, Method),
    Duration(i64, Method),
}

impl Callee {
    fn sig(&self) -> Sig {
        match self {
            Callee::Func(f) => f.sig(),
            Callee::Time(_, Method::Format) => sig(&[Ty::Str], None),
            _ => sig(&[], None),
        }
    }
}

// ---------------------------------------------------------------------------
// Execution (Go's text/template/exec.go).

/// The node execution is at, for error messages (Go's `state.at`).
#[derive(Clone, Copy)]
enum At<'t> {
    None,
    Node(&'t Node),
    Pipe(&'t Pipe),
    Cmd(&'t Command),
    Arg(&'t Arg),
}

impl At<'_> {
    fn pos(&self) -> Option<usize> {
        match self {
            At::None => None,
            At::Node(n) => Some(n.pos()),
            At::Pipe(p) => Some(p.pos),
            At::Cmd(c) => Some(c.pos),
            At::Arg(a) => Some(a.pos()),
        }
    }

    fn context(&self) -> String {
        match self {
            At::None => String::new(),
            At::Node(n) => n.to_string(),
            At::Pipe(p) => p.to_string(),
            At::Cmd(c) => c.to_string(),
            At::Arg(a) => a.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Normal,
    Break,
    Continue,
}

type XResult<T> = Result<T, TemplateError>;

struct State<'t, 'q> {
    tmpl: &'t Template,
    query: Option<QueryFn<'q>>,
    eval_time_ms: i64,
    external_url: &'q str,
    cur_name: &'t str,
    vars: Vec<(&'t str, Value)>,
    depth: usize,
    nest: usize,
    at: At<'t>,
    out: String,
    regexes: HashMap<String, Result<Regex, String>>,
}

impl<'t> State<'t, '_> {
    fn errorf<T>(&self, msg: impl fmt::Display) -> XResult<T> {
        let message = match self.at.pos() {
            None => format!("template: {}: {}", self.cur_name, msg),
            Some(pos) => {
                let text = &self.tmpl.text[..pos.min(self.tmpl.text.len())];
                let (line, col) = match text.rfind('\n') {
                    None => (1, pos),
                    Some(nl) => (1 + text.matches('\n').count(), pos - nl - 1),
                };
                let mut context = self.at.context();
                if context.len() > 20 {
                    context = format!("{}...", context.chars().take(20).collect::<String>());
                }
                format!(
                    "template: {}:{}:{}: executing {} at <{}>: {}",
                    self.tmpl.name,
                    line,
                    col,
                    go_quote(self.cur_name),
                    context,
                    msg
                )
            }
        };
        Err(TemplateError { message })
    }

    fn enter(&mut self) -> XResult<()> {
        self.nest += 1;
        if self.nest > MAX_NESTING {
            return self.errorf("template nested too deeply");
        }
        Ok(())
    }

    fn var_value(&self, name: &str) -> XResult<Value> {
        match self.vars.iter().rev().find(|(n, _)| *n == name) {
            Some((_, v)) => Ok(v.clone()),
            None => self.errorf(format!("undefined variable: {name}")),
        }
    }

    fn set_var(&mut self, name: &str, value: Value) -> XResult<()> {
        match self.vars.iter_mut().rev().find(|(n, _)| *n == name) {
            Some(slot) => {
                slot.1 = value;
                Ok(())
            }
            None => self.errorf(format!("undefined variable: {name}")),
        }
    }

    fn set_top_var(&mut self, n: usize, value: Value) {
        let len = self.vars.len();
        if let Some(slot) = len.checked_sub(n).and_then(|i| self.vars.get_mut(i)) {
            slot.1 = value;
        }
    }

    fn walk_list(&mut self, dot: &Value, list: &'t [Node]) -> XResult<Flow> {
        for n in list {
            let flow = self.walk(dot, n)?;
            if flow != Flow::Normal {
                return Ok(flow);
            }
        }
        Ok(Flow::Normal)
    }

    fn walk(&mut self, dot: &Value, node: &'t Node) -> XResult<Flow> {
        self.at = At::Node(node);
        match node {
            Node::Text { text, .. } => self.out.push_str(text),
            Node::Action { pipe, .. } => {
                let v = self.eval_pipeline(dot, pipe)?;
                if pipe.decl.is_empty() {
                    self.at = At::Node(node);
                    self.print_value(&v);
                }
            }
            Node::Break { .. } => return Ok(Flow::Break),
            Node::Continue { .. } => return Ok(Flow::Continue),
            Node::If(b) => return self.walk_if_or_with(false, dot, b),
            Node::With(b) => return self.walk_if_or_with(true, dot, b),
            Node::Range(b) => return self.walk_range(dot, b),
            Node::Template { name, pipe, .. } => self.walk_template(dot, name, pipe.as_ref())?,
        }
        Ok(Flow::Normal)
    }

    fn print_value(&mut self, v: &Value) {
        match v {
            Value::Invalid => self.out.push_str("<no value>"),
            v => print_arg(&mut self.out, v, 'v', &Flags::default()),
        }
    }

    fn walk_if_or_with(&mut self, with: bool, dot: &Value, b: &'t Branch) -> XResult<Flow> {
        let mark = self.vars.len();
        let val = self.eval_pipeline(dot, &b.pipe)?;
        self.enter()?;
        let flow = if is_true(&val) {
            self.walk_list(if with { &val } else { dot }, &b.list)?
        } else if let Some(e) = &b.else_list {
            self.walk_list(dot, e)?
        } else {
            Flow::Normal
        };
        self.nest -= 1;
        self.vars.truncate(mark);
        Ok(flow)
    }

    fn walk_range(&mut self, dot: &Value, b: &'t Branch) -> XResult<Flow> {
        let outer = self.vars.len();
        let val = self.eval_pipeline(dot, &b.pipe)?;
        let mark = self.vars.len();
        let items: Box<dyn Iterator<Item = (Value, Value)>> = match &val {
            Value::Samples(s) => {
                let s = s.clone();
                Box::new((0..s.len()).map(move |i| (Value::Int(i as i64), Value::Sample(Some(s[i].clone())))))
            }
            Value::StrMap(m) => {
                let m = m.clone();
                let keys: Vec<String> = m.keys().cloned().collect();
                Box::new(keys.into_iter().map(move |k| {
                    let v = Value::str(m.get(&k).map_or("", |v| v.as_str()));
                    (Value::str(&k), v)
                }))
            }
            Value::AnyMap(m) => Box::new(m.iter().map(|(k, v)| (Value::str(k), v.clone())).collect::<Vec<_>>().into_iter()),
            Value::Int(n) => {
                if b.pipe.decl.len() > 1 {
                    return self.errorf(format!("can't use {} to iterate over more than one variable", fmt_v(&val)));
                }
                Box::new((0..*n).map(|i| (Value::Int(i), Value::Int(i))))
            }
            Value::Invalid | Value::Nil => Box::new(std::iter::empty()),
            v => return self.errorf(format!("range can't iterate over {}", fmt_v(v))),
        };
        let mut items = items.peekable();
        if items.peek().is_some() {
            self.enter()?;
            for (key, elem) in items {
                let decl = &b.pipe.decl;
                if !decl.is_empty() {
                    if b.pipe.is_assign {
                        self.set_var(&decl[0], if decl.len() > 1 { key.clone() } else { elem.clone() })?;
                    } else {
                        self.set_top_var(1, elem.clone());
                    }
                }
                if decl.len() > 1 {
                    if b.pipe.is_assign {
                        self.set_var(&decl[1], elem.clone())?;
                    } else {
                        self.set_top_var(2, key);
                    }
                }
                let flow = self.walk_list(&elem, &b.list)?;
                self.vars.truncate(mark);
                if flow == Flow::Break {
                    break;
                }
            }
            self.nest -= 1;
            self.vars.truncate(outer);
            return Ok(Flow::Normal);
        }
        let flow = match &b.else_list {
            Some(e) => self.walk_list(dot, e)?,
            None => Flow::Normal,
        };
        self.vars.truncate(outer);
        Ok(flow)
    }

    fn walk_template(&mut self, dot: &Value, name: &str, pipe: Option<&'t Pipe>) -> XResult<()> {
        let tmpl = self.tmpl;
        let (tname, list): (&'t str, &'t [Node]) = match tmpl.defs.get_key_value(name) {
            Some((k, l)) => (k.as_str(), l.as_slice()),
            None if name == tmpl.name => (tmpl.name.as_str(), tmpl.root.as_slice()),
            None => return self.errorf(format!("template {} not defined", go_quote(name))),
        };
        if self.depth >= MAX_EXEC_DEPTH {
            return self.errorf(format!("exceeded maximum template depth ({MAX_EXEC_DEPTH})"));
        }
        let new_dot = match pipe {
            Some(p) => self.eval_pipeline(dot, p)?,
            None => Value::Invalid,
        };
        let saved_vars = std::mem::replace(&mut self.vars, vec![("$", new_dot.clone())]);
        let saved_name = std::mem::replace(&mut self.cur_name, tname);
        self.depth += 1;
        self.enter()?;
        self.walk_list(&new_dot, list)?;
        self.nest -= 1;
        self.depth -= 1;
        self.cur_name = saved_name;
        self.vars = saved_vars;
        Ok(())
    }

    fn eval_pipeline(&mut self, dot: &Value, pipe: &'t Pipe) -> XResult<Value> {
        self.at = At::Pipe(pipe);
        self.enter()?;
        let mut value: Option<Value> = None;
        for cmd in &pipe.cmds {
            let v = self.eval_command(dot, cmd, value.take())?;
            // A nil interface{} result becomes "no value".
            value = Some(if matches!(v, Value::Nil) { Value::Invalid } else { v });
        }
        self.nest -= 1;
        let value = value.unwrap_or(Value::Invalid);
        for d in &pipe.decl {
            if pipe.is_assign {
                self.set_var(d, value.clone())?;
            } else {
                self.vars.push((d.as_str(), value.clone()));
            }
        }
        Ok(value)
    }

    fn not_a_function(&self, args: Option<&'t [Arg]>, fin: &Option<Value>) -> XResult<()> {
        if let Some(args) = args {
            if args.len() > 1 || fin.is_some() {
                return self.errorf(format!("can't give argument to non-function {}", args[0]));
            }
        } else if fin.is_some() {
            return self.errorf("can't give argument to non-function");
        }
        Ok(())
    }

    fn eval_command(&mut self, dot: &Value, cmd: &'t Command, fin: Option<Value>) -> XResult<Value> {
        let Some(first) = cmd.args.first() else {
            return self.errorf("empty command");
        };
        match first {
            Arg::Field { .. } => return self.eval_field_node(dot, first, Some(&cmd.args), fin),
            Arg::Chain { .. } => return self.eval_chain_node(dot, first, Some(&cmd.args), fin),
            Arg::Identifier { .. } => return self.eval_function(dot, first, At::Cmd(cmd), Some(&cmd.args), fin),
            Arg::Pipe(p) => {
                self.not_a_function(Some(&cmd.args), &fin)?;
                return self.eval_pipeline(dot, p);
            }
            Arg::Variable { .. } => return self.eval_variable_node(dot, first, Some(&cmd.args), fin),
            _ => {}
        }
        self.at = At::Arg(first);
        self.not_a_function(Some(&cmd.args), &fin)?;
        match first {
            Arg::Bool { val, .. } => Ok(Value::Bool(*val)),
            Arg::Dot { .. } => Ok(dot.clone()),
            Arg::Nil { .. } => self.errorf("nil is not a command"),
            Arg::Number(n) => self.ideal_constant(first, n),
            Arg::Str { text, .. } => Ok(Value::str(text)),
            _ => self.errorf(format!("can't evaluate command {}", go_quote(&first.to_string()))),
        }
    }

    fn ideal_constant(&mut self, node: &'t Arg, n: &Number) -> XResult<Value> {
        self.at = At::Arg(node);
        let t = &n.text;
        let is_hex_int =
            t.len() > 2 && t.starts_with('0') && (t.as_bytes()[1] == b'x' || t.as_bytes()[1] == b'X') && !t.contains(['p', 'P']);
        let is_rune = t.starts_with('\'');
        if n.is_float && !is_hex_int && !is_rune && t.contains(['.', 'e', 'E', 'p', 'P']) {
            return Ok(Value::Float(n.float));
        }
        if n.is_int {
            return Ok(Value::Int(n.int));
        }
        if n.is_uint {
            return self.errorf(format!("{t} overflows int"));
        }
        Ok(Value::Invalid)
    }

    fn eval_function(&mut self, dot: &Value, ident: &'t Arg, node: At<'t>, args: Option<&'t [Arg]>, fin: Option<Value>) -> XResult<Value> {
        self.at = At::Arg(ident);
        let name = match ident {
            Arg::Identifier { name, .. } => name.as_str(),
            _ => "",
        };
        let Some(f) = Func::lookup(name) else {
            return self.errorf(format!("{} is not a defined function", go_quote(name)));
        };
        self.eval_call(dot, Callee::Func(f), node, name, args, fin)
    }

    fn eval_call(
        &mut self,
        dot: &Value,
        callee: Callee,
        node: At<'t>,
        name: &str,
        args: Option<&'t [Arg]>,
        fin: Option<Value>,
    ) -> XResult<Value> {
        let args: &'t [Arg] = match args {
            Some(a) if !a.is_empty() => &a[1..],
            _ => &[],
        };
        let sig = callee.sig();
        let num_in = args.len() + usize::from(fin.is_some());
        let num_fixed = if sig.variadic.is_some() {
            if num_in < sig.fixed.len() {
                return self.errorf(format!(
                    "wrong number of args for {name}: want at least {} got {}",
                    sig.fixed.len(),
                    args.len()
                ));
            }
            sig.fixed.len()
        } else {
            if num_in != sig.fixed.len() {
                return self.errorf(format!("wrong number of args for {name}: want {} got {num_in}", sig.fixed.len()));
            }
            args.len()
        };
        if let Callee::Func(f @ (Func::And | Func::Or)) = callee {
            // and/or short-circuit.
            let want = f == Func::Or;
            let mut v = Value::Invalid;
            for a in args {
                v = self.eval_arg(dot, Ty::RValue, a)?;
                if is_true(&v) == want {
                    return Ok(v);
                }
            }
            if let Some(fin) = fin {
                v = self.validate_type(fin, Ty::RValue)?;
            }
            return Ok(v);
        }
        let mut argv = Vec::with_capacity(num_in);
        let mut i = 0;
        while i < num_fixed && i < args.len() {
            argv.push(self.eval_arg(dot, sig.fixed[i], &args[i])?);
            i += 1;
        }
        if let Some(vt) = sig.variadic {
            while i < args.len() {
                argv.push(self.eval_arg(dot, vt, &args[i])?);
                i += 1;
            }
        }
        if let Some(fin) = fin {
            let t = match sig.variadic {
                Some(vt) if num_in > num_fixed => vt,
                _ => sig.fixed[num_in - 1],
            };
            argv.push(self.validate_type(fin, t)?);
        }
        match self.call(&callee, argv) {
            Ok(v) => Ok(v),
            Err(e) => {
                self.at = node;
                self.errorf(format!("error calling {name}: {e}"))
            }
        }
    }

    fn validate_type(&self, v: Value, ty: Ty) -> XResult<Value> {
        let ok = match (&v, ty) {
            (Value::Invalid, _) => {
                return match ty {
                    Ty::Any => Ok(Value::Nil),
                    Ty::RValue => Ok(Value::Invalid),
                    Ty::Samples => Ok(Value::Samples(Rc::new(Vec::new()))),
                    Ty::Sample => Ok(Value::Sample(None)),
                    Ty::Str => self.errorf(format!("invalid value; expected {}", ty.name())),
                };
            }
            (_, Ty::Any | Ty::RValue) => true,
            (Value::Str(_), Ty::Str) | (Value::Samples(_), Ty::Samples) | (Value::Sample(_), Ty::Sample) => true,
            _ => false,
        };
        if ok {
            Ok(v)
        } else {
            self.errorf(format!("wrong type for value; expected {}; got {}", ty.name(), v.reflect_type()))
        }
    }

    fn eval_arg(&mut self, dot: &Value, ty: Ty, n: &'t Arg) -> XResult<Value> {
        self.at = At::Arg(n);
        let v = match n {
            Arg::Dot { .. } => dot.clone(),
            Arg::Nil { .. } => {
                return match ty {
                    Ty::Any => Ok(Value::Nil),
                    Ty::RValue => Ok(Value::Invalid),
                    Ty::Samples => Ok(Value::Samples(Rc::new(Vec::new()))),
                    Ty::Sample => Ok(Value::Sample(None)),
                    Ty::Str => self.errorf(format!("cannot assign nil to {}", ty.name())),
                };
            }
            Arg::Field { .. } => self.eval_field_node(dot, n, None, None)?,
            Arg::Variable { .. } => self.eval_variable_node(dot, n, None, None)?,
            Arg::Pipe(p) => self.eval_pipeline(dot, p)?,
            Arg::Identifier { .. } => self.eval_function(dot, n, At::Arg(n), None, None)?,
            Arg::Chain { .. } => self.eval_chain_node(dot, n, None, None)?,
            Arg::Bool { val, .. } => {
                return match ty {
                    Ty::Any | Ty::RValue => Ok(Value::Bool(*val)),
                    Ty::Str => self.errorf(format!("expected string; found {n}")),
                    _ => self.errorf(format!("can't handle {n} for arg of type {}", ty.name())),
                };
            }
            Arg::Number(num) => {
                return match ty {
                    Ty::Any | Ty::RValue => self.ideal_constant(n, num),
                    Ty::Str => self.errorf(format!("expected string; found {n}")),
                    _ => self.errorf(format!("can't handle {n} for arg of type {}", ty.name())),
                };
            }
            Arg::Str { text, .. } => {
                return match ty {
                    Ty::Any | Ty::RValue | Ty::Str => Ok(Value::str(text)),
                    _ => self.errorf(format!("can't handle {n} for arg of type {}", ty.name())),
                };
            }
        };
        self.validate_type(v, ty)
    }

    fn eval_field_node(&mut self, dot: &Value, field: &'t Arg, args: Option<&'t [Arg]>, fin: Option<Value>) -> XResult<Value> {
        self.at = At::Arg(field);
        let Arg::Field { idents, .. } = field else {
            return self.errorf("internal error: not a field");
        };
        self.eval_field_chain(dot, dot.clone(), field, idents, args, fin)
    }

    fn eval_chain_node(&mut self, dot: &Value, chain: &'t Arg, args: Option<&'t [Arg]>, fin: Option<Value>) -> XResult<Value> {
        self.at = At::Arg(chain);
        let Arg::Chain { node, fields, .. } = chain else {
            return self.errorf("internal error: not a chain");
        };
        if matches!(**node, Arg::Nil { .. }) {
            return self.errorf(format!("indirection through explicit nil in {chain}"));
        }
        let receiver = self.eval_arg(dot, Ty::RValue, node)?;
        self.eval_field_chain(dot, receiver, chain, fields, args, fin)
    }

    fn eval_variable_node(&mut self, dot: &Value, var: &'t Arg, args: Option<&'t [Arg]>, fin: Option<Value>) -> XResult<Value> {
        self.at = At::Arg(var);
        let Arg::Variable { idents, .. } = var else {
            return self.errorf("internal error: not a variable");
        };
        let value = self.var_value(&idents[0])?;
        if idents.len() == 1 {
            self.not_a_function(args, &fin)?;
            return Ok(value);
        }
        self.eval_field_chain(dot, value, var, &idents[1..], args, fin)
    }

    fn eval_field_chain(
        &mut self,
        dot: &Value,
        mut receiver: Value,
        node: &'t Arg,
        idents: &'t [String],
        args: Option<&'t [Arg]>,
        fin: Option<Value>,
    ) -> XResult<Value> {
        let Some((last, init)) = idents.split_last() else {
            return Ok(receiver);
        };
        for id in init {
            receiver = self.eval_field(dot, id, node, None, None, receiver)?;
        }
        self.eval_field(dot, last, node, args, fin, receiver)
    }

    fn eval_field(
        &mut self,
        dot: &Value,
        name: &str,
        node: &'t Arg,
        args: Option<&'t [Arg]>,
        fin: Option<Value>,
        receiver: Value,
    ) -> XResult<Value> {
        let has_args = args.is_some_and(|a| a.len() > 1) || fin.is_some();
        let no_call = |st: &Self, v: Value| {
            if has_args {
                st.errorf(format!("{name} has arguments but cannot be invoked as function"))
            } else {
                Ok(v)
            }
        };
        let map_key = |st: &Self, v: Value| {
            if has_args {
                st.errorf(format!("{name} is not a method but has arguments"))
            } else {
                Ok(v)
            }
        };
        match &receiver {
            Value::Invalid => Ok(Value::Invalid),
            Value::Nil => self.errorf(format!("nil pointer evaluating interface {{}}.{name}")),
            Value::Time(t) => match Method::for_time(name) {
                Some(m) => self.eval_call(dot, Callee::Time(*t, m), At::Arg(node), name, args, fin),
                None => self.errorf(format!("can't evaluate field {name} in type *time.Time")),
            },
            Value::Duration(d) => match Method::for_duration(name) {
                Some(m) => self.eval_call(dot, Callee::Duration(*d, m), At::Arg(node), name, args, fin),
                None => self.errorf(format!("can't evaluate field {name} in type *time.Duration")),
            },
            Value::Data(d) => match name {
                "Labels" => no_call(self, Value::StrMap(d.labels.clone())),
                "ExternalLabels" => no_call(self, Value::StrMap(d.external_labels.clone())),
                "ExternalURL" => no_call(self, Value::Str(d.external_url.clone())),
                "Value" => no_call(self, Value::Float(d.value)),
                _ => self.errorf(format!("can't evaluate field {name} in type {DATA_TYPE}")),
            },
            Value::Sample(Some(s)) => match name {
                "Labels" => no_call(self, Value::StrMap(s.labels.clone())),
                "Value" => no_call(self, Value::Float(s.value)),
                _ => self.errorf(format!("can't evaluate field {name} in type *template.sample")),
            },
            Value::Sample(None) => match name {
                "Labels" | "Value" => self.errorf(format!("nil pointer evaluating *template.sample.{name}")),
                _ => self.errorf(format!("can't evaluate field {name} in type *template.sample")),
            },
            Value::StrMap(m) => map_key(self, Value::str(m.get(name).map_or("", |s| s.as_str()))),
            Value::AnyMap(m) => map_key(self, m.get(name).cloned().unwrap_or(Value::Nil)),
            v => self.errorf(format!("can't evaluate field {name} in type {}", v.reflect_type())),
        }
    }

    fn regex(&mut self, pattern: &str) -> Result<Regex, String> {
        if let Some(r) = self.regexes.get(pattern) {
            return r.clone();
        }
        let r = Regex::new(pattern).map_err(|e| {
            let detail = match &e {
                regex::Error::Syntax(s) => s
                    .lines()
                    .rev()
                    .find_map(|l| l.trim().strip_prefix("error: "))
                    .unwrap_or("invalid syntax")
                    .to_string(),
                regex::Error::CompiledTooBig(_) => "expression too large".to_string(),
                _ => e.to_string(),
            };
            format!("error parsing regexp: {detail}: `{pattern}`")
        });
        self.regexes.insert(pattern.to_string(), r.clone());
        r
    }

    fn call(&mut self, callee: &Callee, argv: Vec<Value>) -> Result<Value, String> {
        match callee {
            Callee::Func(f) => self.call_func(*f, argv),
            Callee::Time(t, m) => Ok(time_method(t, *m, &argv)),
            Callee::Duration(d, m) => Ok(duration_method(*d, *m)),
        }
    }

    fn call_func(&mut self, f: Func, argv: Vec<Value>) -> Result<Value, String> {
        let s = |i: usize| -> &str {
            match argv.get(i) {
                Some(Value::Str(s)) => s,
                _ => "",
            }
        };
        let a0 = || argv.first().cloned().unwrap_or(Value::Invalid);
        Ok(match f {
            Func::And | Func::Or => a0(),
            Func::Not => Value::Bool(!is_true(&a0())),
            Func::Len => Value::Int(builtin_len(&a0())?),
            Func::Index => builtin_index(a0(), &argv[1..])?,
            Func::Slice => builtin_slice(a0(), &argv[1..])?,
            Func::Print => Value::str(&sprint(&argv)),
            Func::Println => Value::str(&sprintln(&argv)),
            Func::Printf => Value::str(&sprintf(s(0), &argv[1..])),
            Func::Html => Value::str(&html_escape(&eval_args(&argv))),
            Func::Js => Value::str(&js_escape(&eval_args(&argv))),
            Func::Urlquery => Value::str(&query_escape(&eval_args(&argv))),
            Func::Eq => Value::Bool(builtin_eq(&a0(), &argv[1..])?),
            Func::Ne => Value::Bool(!builtin_eq(&a0(), &argv[1..])?),
            Func::Lt => Value::Bool(builtin_lt(&argv[0], &argv[1])?),
            Func::Le => Value::Bool(builtin_lt(&argv[0], &argv[1])? || builtin_eq(&argv[0], &argv[1..])?),
            Func::Gt => Value::Bool(!(builtin_lt(&argv[0], &argv[1])? || builtin_eq(&argv[0], &argv[1..])?)),
            Func::Ge => Value::Bool(!builtin_lt(&argv[0], &argv[1])?),
            Func::Call => {
                return Err(match a0() {
                    Value::Invalid | Value::Nil => "call of nil".to_string(),
                    v => format!("non-function of type {}", v.reflect_type()),
                });
            }
            Func::Query => {
                let Some(q) = self.query else {
                    return Err("queries are not allowed in this template".into());
                };
                let res = q(s(0))?;
                Value::Samples(Rc::new(
                    res.into_iter()
                        .map(|r| {
                            Rc::new(SampleV {
                                labels: Rc::new(r.labels),
                                value: r.value,
                            })
                        })
                        .collect(),
                ))
            }
            Func::First => match argv.first() {
                Some(Value::Samples(v)) if !v.is_empty() => Value::Sample(Some(v[0].clone())),
                _ => return Err("first() called on vector with no elements".into()),
            },
            Func::Label => match argv.get(1) {
                Some(Value::Sample(Some(smp))) => Value::str(smp.labels.get(s(0)).map_or("", |v| v.as_str())),
                _ => return Err(NIL_DEREF.into()),
            },
            Func::Value => match argv.first() {
                Some(Value::Sample(Some(smp))) => Value::Float(smp.value),
                _ => return Err(NIL_DEREF.into()),
            },
            Func::Strvalue => match argv.first() {
                Some(Value::Sample(Some(smp))) => Value::str(smp.labels.get("__value__").map_or("", |v| v.as_str())),
                _ => return Err(NIL_DEREF.into()),
            },
            Func::Args => Value::AnyMap(Rc::new(
                argv.iter().enumerate().map(|(i, v)| (format!("arg{i}"), v.clone())).collect(),
            )),
            Func::ReReplaceAll => {
                let re = self
                    .regex(s(0))
                    .map_err(|e| format!("regexp: Compile({}): {e}", go_quote_backquote(s(0))))?;
                Value::str(&re.replace_all(s(2), s(1)))
            }
            Func::SafeHtml => Value::Html(Rc::from(s(0))),
            Func::Match => Value::Bool(self.regex(s(0))?.is_match(s(1))),
            Func::Title => Value::str(&title(s(0))),
            Func::ToUpper => Value::str(&s(0).chars().map(simple_upper).collect::<String>()),
            Func::ToLower => Value::str(&s(0).chars().map(simple_lower).collect::<String>()),
            Func::GraphLink => Value::str(&format!("/graph?g0.expr={}&g0.tab=0", query_escape(s(0)))),
            Func::TableLink => Value::str(&format!("/graph?g0.expr={}&g0.tab=1", query_escape(s(0)))),
            Func::SortByLabel => match argv.get(1) {
                Some(Value::Samples(v)) => {
                    let label = s(0);
                    let mut sorted: Vec<Rc<SampleV>> = v.as_ref().clone();
                    let key = |x: &Rc<SampleV>| x.labels.get(label).cloned().unwrap_or_default();
                    sorted.sort_by_key(key);
                    Value::Samples(Rc::new(sorted))
                }
                _ => Value::Samples(Rc::new(Vec::new())),
            },
            Func::StripPort => Value::str(split_host_port(s(0)).map_or(s(0), |(h, _)| h)),
            Func::StripDomain => Value::str(&strip_domain(s(0))),
            Func::Humanize => Value::str(&humanize(convert_to_float(&a0())?)),
            Func::Humanize1024 => Value::str(&humanize1024(convert_to_float(&a0())?)),
            Func::HumanizeDuration => Value::str(&humanize_duration(convert_to_float(&a0())?)),
            Func::HumanizePercentage => Value::str(&format!("{}%", fmt_g4(convert_to_float(&a0())? * 100.0))),
            Func::HumanizeTimestamp => {
                let v = convert_to_float(&a0())?;
                if v.is_nan() || v.is_infinite() {
                    Value::str(&fmt_g4(v))
                } else {
                    Value::str(&float_to_time(v)?.string())
                }
            }
            Func::ToTime => Value::Time(float_to_time(convert_to_float(&a0())?)?),
            Func::ToDuration => Value::Duration((convert_to_float(&a0())? * 1e9) as i64),
            Func::Now => Value::Float(self.eval_time_ms as f64 / 1000.0),
            Func::PathPrefix => Value::str(&url_path(self.external_url)),
            Func::ExternalUrl => Value::str(self.external_url),
            Func::ParseDuration => Value::Float(parse_prom_duration(s(0))? as f64 / 1e9),
        })
    }
}

const NIL_DEREF: &str = "runtime error: invalid memory address or nil pointer dereference";

fn builtin_len(v: &Value) -> Result<i64, String> {
    Ok(match v {
        Value::Sample(None) => return Err("len of nil pointer".into()),
        Value::Str(s) | Value::Html(s) => s.len() as i64,
        Value::StrMap(m) => m.len() as i64,
        Value::AnyMap(m) => m.len() as i64,
        Value::Samples(s) => s.len() as i64,
        Value::Invalid | Value::Nil => return Err("reflect: call of reflect.Value.Type on zero Value".into()),
        v => return Err(format!("len of type {}", v.elem_type())),
    })
}

/// Go's `indexArg`.
fn index_arg(v: &Value, cap: usize) -> Result<usize, String> {
    match v {
        Value::Int(x) => {
            if *x < 0 || *x as u64 > cap as u64 {
                Err(format!("index out of range: {x}"))
            } else {
                Ok(*x as usize)
            }
        }
        Value::Invalid | Value::Nil => Err("cannot index slice/array with nil".into()),
        v => Err(format!("cannot index slice/array with type {}", v.reflect_type())),
    }
}

fn map_key(v: &Value) -> Result<&str, String> {
    match v {
        Value::Str(s) => Ok(s),
        Value::Invalid | Value::Nil => Err("value is nil; should be of type string".into()),
        v => Err(format!("value has type {}; should be string", v.reflect_type())),
    }
}

fn builtin_index(item: Value, indexes: &[Value]) -> Result<Value, String> {
    let mut item = item;
    if matches!(item, Value::Invalid | Value::Nil) {
        return Err("index of untyped nil".into());
    }
    for idx in indexes {
        item = match &item {
            Value::Sample(None) => return Err("index of nil pointer".into()),
            Value::Samples(v) => {
                let x = index_arg(idx, v.len())?;
                match v.get(x) {
                    Some(s) => Value::Sample(Some(s.clone())),
                    None => return Err("reflect: slice index out of range".into()),
                }
            }
            Value::Str(s) | Value::Html(s) => {
                let x = index_arg(idx, s.len())?;
                match s.as_bytes().get(x) {
                    Some(b) => Value::Int(i64::from(*b)),
                    None => return Err("reflect: string index out of range".into()),
                }
            }
            Value::StrMap(m) => Value::str(m.get(map_key(idx)?).map_or("", |s| s.as_str())),
            Value::AnyMap(m) => m.get(map_key(idx)?).cloned().unwrap_or(Value::Nil),
            v => return Err(format!("can't index item of type {}", v.elem_type())),
        };
    }
    Ok(item)
}

fn builtin_slice(item: Value, indexes: &[Value]) -> Result<Value, String> {
    if matches!(item, Value::Invalid | Value::Nil) {
        return Err("slice of untyped nil".into());
    }
    if indexes.len() > 3 {
        return Err(format!("too many slice indexes: {}", indexes.len()));
    }
    let len = match &item {
        Value::Str(s) | Value::Html(s) => {
            if indexes.len() == 3 {
                return Err("cannot 3-index slice a string".into());
            }
            s.len()
        }
        Value::Samples(v) => v.len(),
        v => return Err(format!("can't slice item of type {}", v.elem_type())),
    };
    let mut idx = [0, len, len];
    for (i, v) in indexes.iter().enumerate() {
        idx[i] = index_arg(v, len)?;
    }
    if idx[0] > idx[1] {
        return Err(format!("invalid slice index: {} > {}", idx[0], idx[1]));
    }
    if indexes.len() == 3 && idx[1] > idx[2] {
        return Err(format!("invalid slice index: {} > {}", idx[1], idx[2]));
    }
    Ok(match &item {
        Value::Str(s) => Value::str(&String::from_utf8_lossy(&s.as_bytes()[idx[0]..idx[1]])),
        Value::Html(s) => Value::Html(Rc::from(String::from_utf8_lossy(&s.as_bytes()[idx[0]..idx[1]]).as_ref())),
        Value::Samples(v) => Value::Samples(Rc::new(v[idx[0]..idx[1]].to_vec())),
        _ => Value::Invalid,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Invalid,
    Bool,
    Int,
    Float,
    Str,
}

fn basic_kind(v: &Value) -> Kind {
    match v {
        Value::Bool(_) => Kind::Bool,
        Value::Int(_) => Kind::Int,
        Value::Float(_) => Kind::Float,
        Value::Str(_) | Value::Html(_) => Kind::Str,
        _ => Kind::Invalid,
    }
}

fn is_nilish(v: &Value) -> bool {
    matches!(v, Value::Invalid | Value::Nil | Value::Sample(None))
}

/// Go's `eq`: arg1 equals any of arg2.
fn builtin_eq(arg1: &Value, arg2: &[Value]) -> Result<bool, String> {
    if arg2.is_empty() {
        return Err("missing argument for comparison".into());
    }
    let k1 = basic_kind(arg1);
    for arg in arg2 {
        let k2 = basic_kind(arg);
        let truth = if k1 != k2 {
            let valid = |v: &Value| !matches!(v, Value::Invalid | Value::Nil);
            if valid(arg1) && valid(arg) {
                return Err("incompatible types for comparison".into());
            }
            false
        } else {
            match (arg1, arg) {
                (Value::Bool(a), Value::Bool(b)) => a == b,
                (Value::Int(a), Value::Int(b)) => a == b,
                (Value::Float(a), Value::Float(b)) => a == b,
                (Value::Str(a) | Value::Html(a), Value::Str(b) | Value::Html(b)) => a == b,
                _ => {
                    if is_nilish(arg1) || is_nilish(arg) {
                        is_nilish(arg1) == is_nilish(arg)
                    } else {
                        match (arg1, arg) {
                            (Value::Sample(Some(a)), Value::Sample(Some(b))) => Rc::ptr_eq(a, b),
                            (Value::Time(a), Value::Time(b)) => a == b,
                            (Value::Duration(a), Value::Duration(b)) => a == b,
                            (a, b) if a.reflect_type() != b.reflect_type() => {
                                return Err(format!(
                                    "non-comparable types {}: {}, {}: {}",
                                    fmt_v(a),
                                    a.reflect_type(),
                                    b.reflect_type(),
                                    fmt_v(b)
                                ));
                            }
                            (_, b) => return Err(format!("non-comparable type {}: {}", fmt_v(b), b.reflect_type())),
                        }
                    }
                }
            }
        };
        if truth {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Go's `lt`.
fn builtin_lt(arg1: &Value, arg2: &Value) -> Result<bool, String> {
    let (k1, k2) = (basic_kind(arg1), basic_kind(arg2));
    if k1 == Kind::Invalid || k2 == Kind::Invalid {
        return Err("invalid type for comparison".into());
    }
    if k1 != k2 {
        return Err("incompatible types for comparison".into());
    }
    match (arg1, arg2) {
        (Value::Int(a), Value::Int(b)) => Ok(a < b),
        (Value::Float(a), Value::Float(b)) => Ok(a < b),
        (Value::Str(a) | Value::Html(a), Value::Str(b) | Value::Html(b)) => Ok(a < b),
        _ => Err("invalid type for comparison".into()),
    }
}

/// Go's `evalArgs` for html/js/urlquery.
fn eval_args(argv: &[Value]) -> String {
    if let [Value::Str(s)] = argv {
        return s.to_string();
    }
    let args: Vec<Value> = argv
        .iter()
        .map(|v| match v {
            Value::Invalid | Value::Nil => Value::str("<no value>"),
            v => v.clone(),
        })
        .collect();
    sprint(&args)
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\0' => out.push('\u{FFFD}'),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

fn js_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c if c.is_ascii() || is_go_print(c) => out.push(c),
            c => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
        }
    }
    out
}

/// Go's `url.QueryEscape`.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// The path of a URL, percent-decoded (Go's `url.URL.Path`).
fn url_path(u: &str) -> String {
    let rest = match u.find("://") {
        Some(i) => {
            let after = &u[i + 3..];
            match after.find(['/', '?', '#']) {
                Some(j) => &after[j..],
                None => "",
            }
        }
        None => u,
    };
    let path = match rest.find(['?', '#']) {
        Some(j) => &rest[..j],
        None => rest,
    };
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if let Some(v) = path
            .get(i + 1..i + 3)
            .filter(|_| b[i] == b'%')
            .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Go's `net.SplitHostPort`.
fn split_host_port(hp: &str) -> Option<(&str, &str)> {
    let i = hp.rfind(':')?;
    let (host, j, k) = if hp.starts_with('[') {
        let end = hp.find(']')?;
        if end + 1 != i {
            return None;
        }
        (&hp[1..end], 1, end + 1)
    } else {
        let host = &hp[..i];
        if host.contains(':') {
            return None;
        }
        (host, 0, 0)
    };
    if hp[j..].contains('[') || hp[k..].contains(']') {
        return None;
    }
    Some((host, &hp[i + 1..]))
}

fn strip_domain(hp: &str) -> String {
    let (host, port) = split_host_port(hp).unwrap_or((hp, ""));
    if host.parse::<std::net::IpAddr>().is_ok() {
        return hp.to_string();
    }
    let host = host.split('.').next().unwrap_or("");
    if port.is_empty() {
        host.to_string()
    } else if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `cases.Title(language.AmericanEnglish, cases.NoLower)`: the first cased
/// letter after a word break is upper-cased, the rest left alone.
fn title(s: &str) -> String {
    let is_mid = |c: char| matches!(c, '\'' | '.' | ':' | '\u{2018}' | '\u{2019}' | '\u{00B7}' | '\u{2024}' | '\u{2027}');
    let is_cased = |c: char| c.is_lowercase() || c.is_uppercase();
    let mut out = String::with_capacity(s.len());
    let mut mid_word = false;
    let mut prev_mid = false;
    for c in s.chars() {
        if prev_mid && is_mid(c) {
            mid_word = false;
        }
        if is_cased(c) {
            if !mid_word {
                let mut up = c.to_uppercase();
                if let Some(first) = up.next() {
                    out.push(first);
                    out.extend(up.flat_map(char::to_lowercase));
                }
                mid_word = true;
            } else {
                out.push(c);
            }
        } else {
            out.push(c);
            let is_word_char = c.is_alphanumeric() || c == '_' || is_mid(c) || c.is_ascii_digit();
            if !is_word_char {
                mid_word = false;
            }
        }
        prev_mid = is_mid(c);
    }
    out
}

/// `unicode.ToUpper` (simple case mapping: characters whose upper case is
/// several characters are kept).
fn simple_upper(c: char) -> char {
    let mut u = c.to_uppercase();
    match (u.next(), u.next()) {
        (Some(x), None) => x,
        _ => c,
    }
}

fn simple_lower(c: char) -> char {
    c.to_lowercase().next().unwrap_or(c)
}

/// Prometheus's `convertToFloat`.
fn convert_to_float(v: &Value) -> Result<f64, String> {
    match v {
        Value::Float(f) => Ok(*f),
        Value::Int(i) => Ok(*i as f64),
        Value::Str(s) => parse_go_float(s),
        v => Err(format!("can't convert {} to float", v.go_type())),
    }
}

/// `fmt.Sprintf("%.4g", v)`.
fn fmt_g4(v: f64) -> String {
    strconv_float(v, 'g', 4)
}

fn humanize(v: f64) -> String {
    if v == 0.0 || v.is_nan() || v.is_infinite() {
        return fmt_g4(v);
    }
    let mut v = v;
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    format!("{}{prefix}", fmt_g4(v))
}

fn humanize1024(v: f64) -> String {
    if v.abs() <= 1.0 || v.is_nan() || v.is_infinite() {
        return fmt_g4(v);
    }
    let mut v = v;
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", fmt_g4(v))
}

fn humanize_duration(v: f64) -> String {
    if v.is_nan() || v.is_infinite() {
        return fmt_g4(v);
    }
    if v == 0.0 {
        return format!("{}s", fmt_g4(v));
    }
    if v.abs() >= 1.0 {
        let (sign, v) = if v < 0.0 { ("-", -v) } else { ("", v) };
        let d = v as i64;
        let (seconds, minutes, hours, days) = (d % 60, (d / 60) % 60, (d / 3600) % 24, d / 86400);
        if days != 0 {
            return format!("{sign}{days}d {hours}h {minutes}m {seconds}s");
        }
        if hours != 0 {
            return format!("{sign}{hours}h {minutes}m {seconds}s");
        }
        if minutes != 0 {
            return format!("{sign}{minutes}m {seconds}s");
        }
        return format!("{sign}{}s", fmt_g4(v));
    }
    let mut v = v;
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}s", fmt_g4(v))
}

/// Prometheus's `floatToTime`: seconds to a millisecond-precision UTC time.
fn float_to_time(v: f64) -> Result<GoTime, String> {
    if v.is_nan() || v.is_infinite() {
        return Err("value is NaN or Inf".into());
    }
    let ts = v * 1e9;
    if ts > i64::MAX as f64 || ts < i64::MIN as f64 {
        return Err(format!(
            "{} cannot be represented as a nanoseconds timestamp since it overflows int64",
            fmt_v(&Value::Float(v))
        ));
    }
    Ok(GoTime::from_millis((ts as i64) / 1_000_000))
}

/// Prometheus's `model.ParseDuration`, in nanoseconds.
fn parse_prom_duration(s: &str) -> Result<i64, String> {
    match s {
        "0" => return Ok(0),
        "" => return Err("empty duration string".into()),
        _ => {}
    }
    let invalid = || format!("not a valid duration string: {}", go_quote(s));
    const MS: u64 = 1_000_000;
    let units: [(&str, u64); 7] = [
        ("y", 365 * 24 * 3600 * 1000 * MS),
        ("w", 7 * 24 * 3600 * 1000 * MS),
        ("d", 24 * 3600 * 1000 * MS),
        ("h", 3600 * 1000 * MS),
        ("m", 60 * 1000 * MS),
        ("s", 1000 * MS),
        ("ms", MS),
    ];
    let mut rest = s;
    let mut total: u64 = 0;
    let mut last_unit = 0;
    while !rest.is_empty() {
        let nd = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if nd == 0 {
            return Err(invalid());
        }
        let v: u64 = rest[..nd].parse().map_err(|_| invalid())?;
        rest = &rest[nd..];
        let nu = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        if nu == 0 {
            return Err(invalid());
        }
        let unit = &rest[..nu];
        rest = &rest[nu..];
        let Some(pos) = units.iter().position(|(u, _)| *u == unit) else {
            return Err(format!("unknown unit {} in duration {}", go_quote(unit), go_quote(s)));
        };
        if pos < last_unit {
            return Err(invalid());
        }
        last_unit = pos + 1;
        let mult = units[pos].1;
        if v > (1u64 << 63) / mult {
            return Err("duration out of range".into());
        }
        total += v * mult;
        if total > i64::MAX as u64 {
            return Err("duration out of range".into());
        }
    }
    Ok(total as i64)
}

fn time_method(t: &GoTime, m: Method, argv: &[Value]) -> Value {
    let c = t.civil();
    match m {
        Method::Format => {
            let layout = match argv.first() {
                Some(Value::Str(s)) => s.to_string(),
                _ => String::new(),
            };
            Value::str(&t.format(&layout))
        }
        Method::String => Value::str(&t.string()),
        Method::Unix => Value::Int(t.secs),
        Method::UnixMilli => Value::Int(t.secs.saturating_mul(1000) + i64::from(t.nanos / 1_000_000)),
        Method::UnixMicro => Value::Int(t.secs.saturating_mul(1_000_000) + i64::from(t.nanos / 1000)),
        Method::UnixNano => Value::Int(t.secs.saturating_mul(1_000_000_000) + i64::from(t.nanos)),
        Method::Utc => Value::Time(*t),
        Method::Year => Value::Int(c.year),
        Method::YearDay => Value::Int(i64::from(c.yday)),
        Method::Day => Value::Int(i64::from(c.day)),
        Method::Hour => Value::Int(i64::from(c.hour)),
        Method::Minute => Value::Int(i64::from(c.min)),
        Method::Second => Value::Int(i64::from(c.sec)),
        Method::Nanosecond => Value::Int(i64::from(t.nanos)),
        Method::IsZero => Value::Bool(t.secs == -62_135_596_800 && t.nanos == 0),
        _ => Value::Invalid,
    }
}

fn duration_method(d: i64, m: Method) -> Value {
    match m {
        Method::String => Value::str(&duration_string(d)),
        Method::Seconds => Value::Float(d as f64 / 1e9),
        Method::Minutes => Value::Float(d as f64 / 6e10),
        Method::Hours => Value::Float(d as f64 / 3.6e12),
        Method::Milliseconds => Value::Int(d / 1_000_000),
        Method::Microseconds => Value::Int(d / 1000),
        Method::Nanoseconds => Value::Int(d),
        _ => Value::Invalid,
    }
}

// ---------------------------------------------------------------------------
// Time (Go's `time.Time` in UTC and `time.Duration`).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GoTime {
    secs: i64,
    nanos: u32,
}

struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    min: u32,
    sec: u32,
    wday: u32,
    yday: u32,
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl GoTime {
    fn from_millis(ms: i64) -> GoTime {
        GoTime {
            secs: ms.div_euclid(1000),
            nanos: (ms.rem_euclid(1000) * 1_000_000) as u32,
        }
    }

    fn civil(&self) -> Civil {
        let days = self.secs.div_euclid(86_400);
        let sod = self.secs.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        Civil {
            year,
            month,
            day,
            hour: sod / 3600,
            min: (sod / 60) % 60,
            sec: sod % 60,
            wday: (days + 4).rem_euclid(7) as u32,
            yday: (days - days_from_civil(year, 1, 1) + 1) as u32,
        }
    }

    /// `Time.String()`.
    fn string(&self) -> String {
        self.format("2006-01-02 15:04:05.999999999 -0700 MST")
    }

    /// `Time.Format(layout)` for a UTC time.
    fn format(&self, layout: &str) -> String {
        let c = self.civil();
        let mut out = String::new();
        let b = layout.as_bytes();
        let mut i = 0;
        let mut lit_start = 0;
        while i < b.len() {
            let rest = &b[i..];
            let lower_after = |n: usize| b.get(i + n).is_some_and(u8::is_ascii_lowercase);
            // (chunk length, replacement)
            let std: Option<(usize, String)> = match b[i] {
                b'J' if rest.starts_with(b"January") => Some((7, MONTHS[c.month as usize - 1].to_string())),
                b'J' if rest.starts_with(b"Jan") && !lower_after(3) => Some((3, MONTHS[c.month as usize - 1][..3].to_string())),
                b'M' if rest.starts_with(b"Monday") => Some((6, DAYS[c.wday as usize].to_string())),
                b'M' if rest.starts_with(b"Mon") && !lower_after(3) => Some((3, DAYS[c.wday as usize][..3].to_string())),
                b'M' if rest.starts_with(b"MST") => Some((3, "UTC".to_string())),
                b'0' if b.get(i + 1).is_some_and(|d| (b'1'..=b'6').contains(d)) => Some((
                    2,
                    match b[i + 1] {
                        b'1' => format!("{:02}", c.month),
                        b'2' => format!("{:02}", c.day),
                        b'3' => format!("{:02}", if c.hour.is_multiple_of(12) { 12 } else { c.hour % 12 }),
                        b'4' => format!("{:02}", c.min),
                        b'5' => format!("{:02}", c.sec),
                        _ => format!("{:02}", c.year.rem_euclid(100)),
                    },
                )),
                b'0' if rest.starts_with(b"002") => Some((3, format!("{:03}", c.yday))),
                b'1' if rest.starts_with(b"15") => Some((2, format!("{:02}", c.hour))),
                b'1' => Some((1, c.month.to_string())),
                b'2' if rest.starts_with(b"2006") => Some((4, format!("{:04}", c.year))),
                b'2' => Some((1, c.day.to_string())),
                b'_' if rest.starts_with(b"_2006") => {
                    // A literal "_" followed by the year.
                    out.push_str(&layout[lit_start..=i]);
                    lit_start = i + 1;
                    i += 1;
                    continue;
                }
                b'_' if rest.starts_with(b"_2") => Some((2, format!("{:>2}", c.day))),
                b'_' if rest.starts_with(b"__2") => Some((3, format!("{:>3}", c.yday))),
                b'3' => Some((1, (if c.hour.is_multiple_of(12) { 12 } else { c.hour % 12 }).to_string())),
                b'4' => Some((1, c.min.to_string())),
                b'5' => Some((1, c.sec.to_string())),
                b'P' if rest.starts_with(b"PM") => Some((2, (if c.hour >= 12 { "PM" } else { "AM" }).to_string())),
                b'p' if rest.starts_with(b"pm") => Some((2, (if c.hour >= 12 { "pm" } else { "am" }).to_string())),
                b'-' | b'Z' => {
                    let z = b[i] == b'Z';
                    let body = &rest[1..];
                    ["070000", "07:00:00", "0700", "07:00", "07"]
                        .iter()
                        .find(|p| body.starts_with(p.as_bytes()))
                        .map(|p| {
                            let text = if z {
                                "Z".to_string()
                            } else {
                                match *p {
                                    "070000" => "+000000",
                                    "07:00:00" => "+00:00:00",
                                    "0700" => "+0000",
                                    "07:00" => "+00:00",
                                    _ => "+00",
                                }
                                .to_string()
                            };
                            (p.len() + 1, text)
                        })
                }
                sep @ (b'.' | b',') if matches!(b.get(i + 1), Some(b'0' | b'9')) => {
                    let ch = b[i + 1];
                    let mut j = i + 1;
                    while b.get(j) == Some(&ch) {
                        j += 1;
                    }
                    if b.get(j).is_some_and(u8::is_ascii_digit) {
                        None
                    } else {
                        let n = (j - i - 1).min(9);
                        let digits = format!("{:09}", self.nanos);
                        let mut frac = &digits[..n];
                        if ch == b'9' {
                            frac = frac.trim_end_matches('0');
                        }
                        let text = if frac.is_empty() {
                            String::new()
                        } else {
                            format!("{}{frac}", sep as char)
                        };
                        Some((j - i, text))
                    }
                }
                _ => None,
            };
            match std {
                Some((len, text)) => {
                    out.push_str(&layout[lit_start..i]);
                    out.push_str(&text);
                    i += len;
                    lit_start = i;
                }
                None => i += 1,
            }
        }
        out.push_str(&layout[lit_start..]);
        out
    }
}

/// `time.Duration.String()`.
fn duration_string(d: i64) -> String {
    let neg = d < 0;
    let mut u = d.unsigned_abs();
    let frac = |u: u64, prec: u32| -> (String, u64) {
        let pow = 10u64.pow(prec);
        let f = u % pow;
        let s = if f == 0 {
            String::new()
        } else {
            let digits = format!("{:0width$}", f, width = prec as usize);
            format!(".{}", digits.trim_end_matches('0'))
        };
        (s, u / pow)
    };
    let body = if u < 1_000_000_000 {
        let (unit, prec) = match u {
            0 => return "0s".to_string(),
            1..=999 => ("ns", 0),
            1000..=999_999 => ("µs", 3),
            _ => ("ms", 6),
        };
        let (f, whole) = frac(u, prec);
        format!("{whole}{f}{unit}")
    } else {
        let (f, secs) = frac(u, 9);
        u = secs;
        let mut s = format!("{}{f}s", u % 60);
        u /= 60;
        if u > 0 {
            s = format!("{}m{s}", u % 60);
            u /= 60;
            if u > 0 {
                s = format!("{u}h{s}");
            }
        }
        s
    };
    if neg { format!("-{body}") } else { body }
}

// ---------------------------------------------------------------------------
// Go's fmt and strconv, as far as templates reach them.

#[derive(Debug, Clone, Copy, Default)]
struct Flags {
    plus: bool,
    minus: bool,
    sharp: bool,
    space: bool,
    zero: bool,
    plus_v: bool,
    sharp_v: bool,
    wid: Option<usize>,
    prec: Option<usize>,
}

/// `%v` of a value.
fn fmt_v(v: &Value) -> String {
    let mut out = String::new();
    print_arg(&mut out, v, 'v', &Flags::default());
    out
}

/// Go's `strconv.IsPrint` (approximated: Unicode categories L, M, N, P, S and ASCII space).
fn is_go_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let u = c as u32;
    !matches!(u,
        0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F
        | 0xD800..=0xDFFF | 0xE000..=0xF8FF | 0xFEFF | 0xFFF9..=0xFFFB | 0xFFFE | 0xFFFF | 0xE0000..=0xE007F | 0xF0000..)
}

fn push_escaped(out: &mut String, c: char, quote: char, ascii_only: bool) {
    if c == quote || c == '\\' {
        out.push('\\');
        out.push(c);
        return;
    }
    if if ascii_only {
        c.is_ascii() && is_go_print(c)
    } else {
        is_go_print(c)
    } {
        out.push(c);
        return;
    }
    match c {
        '\x07' => out.push_str("\\a"),
        '\x08' => out.push_str("\\b"),
        '\x0c' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\x0b' => out.push_str("\\v"),
        c if (c as u32) < 0x20 || c as u32 == 0x7f => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if (c as u32) < 0x10000 => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\U{:08x}", c as u32);
        }
    }
}

/// `strconv.Quote` (or `QuoteToASCII`).
fn go_quote_with(s: &str, ascii_only: bool) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        push_escaped(&mut out, c, '"', ascii_only);
    }
    out.push('"');
    out
}

fn go_quote(s: &str) -> String {
    go_quote_with(s, false)
}

fn can_backquote(s: &str) -> bool {
    s.chars()
        .all(|c| c != '`' && c != '\u{FEFF}' && c != '\u{7F}' && (c >= ' ' || c == '\t'))
}

/// The quoting regexp.MustCompile uses in its panic message.
fn go_quote_backquote(s: &str) -> String {
    if can_backquote(s) { format!("`{s}`") } else { go_quote(s) }
}

/// `%#U`: "U+0021 '!'".
fn go_unicode_sharp(c: char) -> String {
    if is_go_print(c) {
        format!("U+{:04X} '{c}'", c as u32)
    } else {
        format!("U+{:04X}", c as u32)
    }
}

/// Decimal digits (without trailing zeros) and decimal-point position of |v|:
/// `sig` significant digits, or the shortest representation when None.
fn decimal_digits(v: f64, sig: Option<usize>) -> (Vec<u8>, i32) {
    let s = match sig {
        Some(n) => format!("{:.*e}", n.saturating_sub(1), v.abs()),
        None => format!("{:e}", v.abs()),
    };
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut digits: Vec<u8> = mant.bytes().filter(u8::is_ascii_digit).collect();
    while digits.last() == Some(&b'0') {
        digits.pop();
    }
    if digits.is_empty() {
        return (digits, 0);
    }
    (digits, exp + 1)
}

fn fmt_e(out: &mut String, digs: &[u8], dp: i32, prec: usize, e: char) {
    out.push(digs.first().map_or('0', |&d| d as char));
    if prec > 0 {
        out.push('.');
        for i in 1..=prec {
            out.push(digs.get(i).map_or('0', |&d| d as char));
        }
    }
    out.push(e);
    let exp = if digs.is_empty() { 0 } else { dp - 1 };
    out.push(if exp < 0 { '-' } else { '+' });
    let _ = write!(out, "{:02}", exp.unsigned_abs());
}

fn fmt_f(out: &mut String, digs: &[u8], dp: i32, prec: usize) {
    if dp > 0 {
        for i in 0..dp as usize {
            out.push(digs.get(i).map_or('0', |&d| d as char));
        }
    } else {
        out.push('0');
    }
    if prec > 0 {
        out.push('.');
        for i in 1..=prec as i32 {
            let j = dp + i - 1;
            out.push(if j >= 0 {
                digs.get(j as usize).map_or('0', |&d| d as char)
            } else {
                '0'
            });
        }
    }
}

/// `strconv.FormatFloat(v, fmt, prec, 64)` for fmt in e, E, f, g, G (prec -1: shortest).
fn strconv_float(v: f64, fmt: char, prec: i32) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let mut out = String::new();
    if v.is_sign_negative() {
        out.push('-');
    }
    let shortest = prec < 0;
    match fmt {
        'f' if !shortest => {
            let _ = write!(out, "{:.*}", prec as usize, v.abs());
        }
        'f' => {
            let (digs, dp) = decimal_digits(v, None);
            fmt_f(&mut out, &digs, dp, (digs.len() as i32 - dp).max(0) as usize);
        }
        'e' | 'E' => {
            let (digs, dp) = if shortest {
                decimal_digits(v, None)
            } else {
                decimal_digits(v, Some(prec as usize + 1))
            };
            let p = if shortest { digs.len().saturating_sub(1) } else { prec as usize };
            fmt_e(&mut out, &digs, dp, p, fmt);
        }
        _ => {
            // 'g' / 'G'
            let mut prec = if prec == 0 { 1 } else { prec };
            let (digs, dp) = if shortest {
                decimal_digits(v, None)
            } else {
                decimal_digits(v, Some(prec as usize))
            };
            let nd = digs.len() as i32;
            let mut eprec = prec;
            if shortest {
                prec = nd;
            }
            if eprec > nd && nd >= dp {
                eprec = nd;
            }
            if shortest {
                eprec = 6;
            }
            let exp = dp - 1;
            if exp < -4 || exp >= eprec {
                if prec > nd {
                    prec = nd;
                }
                fmt_e(&mut out, &digs, dp, (prec - 1).max(0) as usize, if fmt == 'G' { 'E' } else { 'e' });
            } else {
                if prec > dp {
                    prec = nd;
                }
                fmt_f(&mut out, &digs, dp, (prec - dp).max(0) as usize);
            }
        }
    }
    out
}

fn write_padding(out: &mut String, n: usize, zero: bool) {
    let c = if zero { '0' } else { ' ' };
    out.extend(std::iter::repeat_n(c, n));
}

/// fmt's `pad`: width counts runes; '-' pads on the right.
fn pad(out: &mut String, s: &str, f: &Flags) {
    let n = s.chars().count();
    match f.wid {
        Some(w) if w > n => {
            if f.minus {
                out.push_str(s);
                write_padding(out, w - n, false);
            } else {
                write_padding(out, w - n, f.zero);
                out.push_str(s);
            }
        }
        _ => out.push_str(s),
    }
}

fn bad_verb(out: &mut String, verb: char, v: &Value) {
    out.push_str("%!");
    out.push(verb);
    out.push('(');
    match v {
        Value::Invalid | Value::Nil => out.push_str("<nil>"),
        v => {
            out.push_str(v.go_type());
            out.push('=');
            print_arg(out, v, 'v', &Flags::default());
        }
    }
    out.push(')');
}

fn fmt_float(out: &mut String, v: f64, verb: char, default_prec: i32, f: &Flags) {
    let prec = f.prec.map_or(default_prec, |p| p as i32);
    let num = strconv_float(v, verb, prec);
    let mut num = if num.starts_with(['+', '-']) { num } else { format!("+{num}") };
    if f.space && num.starts_with('+') && !f.plus {
        num.replace_range(0..1, " ");
    }
    if num[1..].starts_with(['I', 'N']) {
        if num[1..].starts_with('N') && !f.space && !f.plus {
            num.remove(0);
        }
        pad(out, &num, &Flags { zero: false, ..*f });
        return;
    }
    if f.plus || !num.starts_with('+') {
        if f.zero && !f.minus && f.wid.is_some_and(|w| w > num.len()) {
            out.push_str(&num[..1]);
            write_padding(out, f.wid.unwrap_or(0) - num.len(), true);
            out.push_str(&num[1..]);
            return;
        }
        pad(out, &num, f);
        return;
    }
    pad(out, &num[1..], f);
}

fn fmt_integer(out: &mut String, i: i64, base: u32, verb: char, upper: bool, f: &Flags) {
    let negative = i < 0;
    let u = i.unsigned_abs();
    if f.prec == Some(0) && u == 0 {
        write_padding(out, f.wid.unwrap_or(0), false);
        return;
    }
    let mut prec = f.prec.unwrap_or(0);
    if let Some(w) = f.wid.filter(|_| f.prec.is_none() && f.zero && !f.minus) {
        prec = w;
        if negative || f.plus || f.space {
            prec = prec.saturating_sub(1);
        }
    }
    let mut digits = match base {
        2 => format!("{u:b}"),
        8 => format!("{u:o}"),
        16 if upper => format!("{u:X}"),
        16 => format!("{u:x}"),
        _ => u.to_string(),
    };
    if digits.len() < prec {
        digits = format!("{}{digits}", "0".repeat(prec - digits.len()));
    }
    if f.sharp {
        match base {
            2 => digits.insert_str(0, "0b"),
            8 if !digits.starts_with('0') => digits.insert(0, '0'),
            16 => digits.insert_str(0, if upper { "0X" } else { "0x" }),
            _ => {}
        }
    }
    if verb == 'O' {
        digits.insert_str(0, "0o");
    }
    if negative {
        digits.insert(0, '-');
    } else if f.plus {
        digits.insert(0, '+');
    } else if f.space {
        digits.insert(0, ' ');
    }
    pad(out, &digits, &Flags { zero: false, ..*f });
}

fn fmt_int_verb(out: &mut String, i: i64, verb: char, f: &Flags, v: &Value) {
    match verb {
        'v' | 'd' => fmt_integer(out, i, 10, verb, false, f),
        'b' => fmt_integer(out, i, 2, verb, false, f),
        'o' | 'O' => fmt_integer(out, i, 8, verb, false, f),
        'x' => fmt_integer(out, i, 16, verb, false, f),
        'X' => fmt_integer(out, i, 16, verb, true, f),
        'c' => {
            let c = u32::try_from(i).ok().and_then(char::from_u32).unwrap_or('\u{FFFD}');
            pad(out, &c.to_string(), &Flags { zero: false, ..*f });
        }
        'q' => {
            let c = u32::try_from(i).ok().and_then(char::from_u32).unwrap_or('\u{FFFD}');
            let mut q = String::from("'");
            push_escaped(&mut q, c, '\'', f.plus);
            q.push('\'');
            pad(out, &q, &Flags { zero: false, ..*f });
        }
        'U' => {
            let prec = f.prec.unwrap_or(4).max(4);
            let mut s = format!("U+{:0prec$X}", i as u64, prec = prec);
            if let Some(c) = u32::try_from(i)
                .ok()
                .and_then(char::from_u32)
                .filter(|&c| f.sharp && is_go_print(c))
            {
                let _ = write!(s, " '{c}'");
            }
            pad(out, &s, &Flags { zero: false, ..*f });
        }
        _ => bad_verb(out, verb, v),
    }
}

fn fmt_string_verb(out: &mut String, s: &str, verb: char, f: &Flags, v: &Value) {
    let truncated: String = match f.prec {
        Some(p) => s.chars().take(p).collect(),
        None => s.to_string(),
    };
    match verb {
        'v' if f.sharp_v => pad(out, &go_quote(&truncated), f),
        'v' | 's' => pad(out, &truncated, f),
        'q' => {
            let q = if f.sharp && can_backquote(&truncated) {
                format!("`{truncated}`")
            } else {
                go_quote_with(&truncated, f.plus)
            };
            pad(out, &q, f);
        }
        'x' | 'X' => {
            let bytes = s.as_bytes();
            let n = f.prec.map_or(bytes.len(), |p| p.min(bytes.len()));
            let mut h = String::new();
            for (i, b) in bytes[..n].iter().enumerate() {
                if f.space && i > 0 {
                    h.push(' ');
                }
                if f.sharp && (f.space || i == 0) {
                    h.push_str(if verb == 'X' { "0X" } else { "0x" });
                }
                let _ = if verb == 'X' { write!(h, "{b:02X}") } else { write!(h, "{b:02x}") };
            }
            pad(out, &h, &Flags { zero: false, ..*f });
        }
        _ => bad_verb(out, verb, v),
    }
}

/// fmt's `printArg`.
fn print_arg(out: &mut String, v: &Value, verb: char, f: &Flags) {
    if matches!(v, Value::Invalid | Value::Nil) {
        match verb {
            'T' | 'v' => pad(out, "<nil>", f),
            _ => bad_verb(out, verb, v),
        }
        return;
    }
    if verb == 'T' {
        pad(out, v.go_type(), f);
        return;
    }
    print_value(out, v, verb, f);
}

/// fmt's `printValue`: composite values print their elements with the same verb.
fn print_value(out: &mut String, v: &Value, verb: char, f: &Flags) {
    match v {
        Value::Invalid | Value::Nil => out.push_str("<nil>"),
        Value::Bool(b) => match verb {
            't' | 'v' => pad(out, if *b { "true" } else { "false" }, f),
            _ => bad_verb(out, verb, v),
        },
        Value::Int(i) => fmt_int_verb(out, *i, verb, f, v),
        Value::Float(x) => match verb {
            'v' | 'g' => fmt_float(out, *x, 'g', -1, f),
            'G' => fmt_float(out, *x, 'G', -1, f),
            'e' | 'E' | 'f' => fmt_float(out, *x, verb, 6, f),
            'F' => fmt_float(out, *x, 'f', 6, f),
            _ => bad_verb(out, verb, v),
        },
        Value::Str(s) | Value::Html(s) => fmt_string_verb(out, s, verb, f, v),
        Value::Time(t) => match verb {
            'v' | 's' | 'x' | 'X' | 'q' => fmt_string_verb(out, &t.string(), verb, f, v),
            _ => bad_verb(out, verb, v),
        },
        Value::Duration(d) => match verb {
            'v' | 's' | 'x' | 'X' | 'q' => fmt_string_verb(out, &duration_string(*d), verb, f, v),
            _ => bad_verb(out, verb, v),
        },
        Value::StrMap(m) => {
            out.push_str("map[");
            for (i, (k, val)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                fmt_string_verb(out, k, verb, f, &Value::str(k));
                out.push(':');
                fmt_string_verb(out, val, verb, f, &Value::str(val));
            }
            out.push(']');
        }
        Value::AnyMap(m) => {
            out.push_str("map[");
            for (i, (k, val)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                fmt_string_verb(out, k, verb, f, &Value::str(k));
                out.push(':');
                print_value(out, val, verb, f);
            }
            out.push(']');
        }
        Value::Samples(s) => {
            out.push('[');
            for (i, smp) in s.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                print_value(out, &Value::Sample(Some(smp.clone())), verb, f);
            }
            out.push(']');
        }
        Value::Sample(None) => match verb {
            'v' => pad(out, "<nil>", f),
            _ => bad_verb(out, verb, v),
        },
        Value::Sample(Some(s)) => {
            out.push_str("&{");
            if f.plus_v {
                out.push_str("Labels:");
            }
            print_value(out, &Value::StrMap(s.labels.clone()), verb, f);
            out.push_str(if f.plus_v { " Value:" } else { " " });
            print_value(out, &Value::Float(s.value), verb, f);
            out.push('}');
        }
        Value::Data(d) => {
            let fields = [
                ("Labels", Value::StrMap(d.labels.clone())),
                ("ExternalLabels", Value::StrMap(d.external_labels.clone())),
                ("ExternalURL", Value::Str(d.external_url.clone())),
                ("Value", Value::Float(d.value)),
            ];
            out.push('{');
            for (i, (name, val)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                if f.plus_v {
                    out.push_str(name);
                    out.push(':');
                }
                print_value(out, val, verb, f);
            }
            out.push('}');
        }
    }
}

/// `fmt.Sprint`: spaces between operands when neither is a string.
fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    let mut prev_string = false;
    for (i, a) in args.iter().enumerate() {
        let is_string = matches!(a, Value::Str(_) | Value::Html(_));
        if i > 0 && !is_string && !prev_string {
            out.push(' ');
        }
        print_arg(&mut out, a, 'v', &Flags::default());
        prev_string = is_string;
    }
    out
}

/// `fmt.Sprintln`.
fn sprintln(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        print_arg(&mut out, a, 'v', &Flags::default());
    }
    out.push('\n');
    out
}

/// Parses a decimal number at `b[i..end]` (fmt's `parsenum`); None if absent or too large.
fn parse_num(b: &[u8], mut i: usize, end: usize) -> (Option<usize>, usize) {
    let start = i;
    let mut n: usize = 0;
    while i < end && b[i].is_ascii_digit() {
        if n > 1_000_000 {
            return (None, end);
        }
        n = n * 10 + usize::from(b[i] - b'0');
        i += 1;
    }
    if i == start { (None, i) } else { (Some(n), i) }
}

/// `fmt.Sprintf`.
fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let b = format.as_bytes();
    let end = b.len();
    let mut arg_num = 0usize;
    let mut reordered = false;
    let mut i = 0;
    while i < end {
        let mut good_arg_num = true;
        let last = i;
        while i < end && b[i] != b'%' {
            i += 1;
        }
        out.push_str(&format[last..i]);
        if i >= end {
            break;
        }
        i += 1;
        let mut f = Flags::default();
        while i < end {
            match b[i] {
                b'#' => f.sharp = true,
                b'0' => f.zero = !f.minus,
                b'+' => f.plus = true,
                b'-' => {
                    f.minus = true;
                    f.zero = false;
                }
                b' ' => f.space = true,
                _ => break,
            }
            i += 1;
        }
        // Explicit argument index "[n]".
        let mut arg_index = |i: &mut usize, arg_num: &mut usize, good: &mut bool| -> bool {
            if *i >= end || b[*i] != b'[' {
                return false;
            }
            reordered = true;
            let Some(close) = b[*i..].iter().position(|&c| c == b']') else {
                *good = false;
                *i += 1;
                return false;
            };
            let (n, ni) = parse_num(b, *i + 1, *i + close);
            let ok = n.is_some() && ni == *i + close;
            *i += close + 1;
            if let Some(n) = n.filter(|&n| ok && n >= 1 && n - 1 < args.len()) {
                *arg_num = n - 1;
                return true;
            }
            *good = false;
            ok
        };
        let mut after_index = arg_index(&mut i, &mut arg_num, &mut good_arg_num);
        if i < end && b[i] == b'*' {
            i += 1;
            match args.get(arg_num) {
                Some(Value::Int(n)) if n.unsigned_abs() <= 1_000_000 => {
                    if *n < 0 {
                        f.minus = true;
                        f.zero = false;
                    }
                    f.wid = Some(n.unsigned_abs() as usize);
                }
                _ => out.push_str("%!(BADWIDTH)"),
            }
            arg_num += 1;
            after_index = false;
        } else {
            let (w, ni) = parse_num(b, i, end);
            f.wid = w;
            i = ni;
            if after_index && f.wid.is_some() {
                good_arg_num = false;
            }
        }
        if i + 1 < end && b[i] == b'.' {
            i += 1;
            if after_index {
                good_arg_num = false;
            }
            after_index = arg_index(&mut i, &mut arg_num, &mut good_arg_num);
            if i < end && b[i] == b'*' {
                i += 1;
                match args.get(arg_num) {
                    Some(Value::Int(n)) if *n >= 0 && *n <= 1_000_000 => f.prec = Some(*n as usize),
                    Some(Value::Int(n)) if *n < 0 && *n >= -1_000_000 => f.prec = None,
                    _ => out.push_str("%!(BADPREC)"),
                }
                arg_num += 1;
                after_index = false;
            } else {
                let (p, ni) = parse_num(b, i, end);
                f.prec = Some(p.unwrap_or(0));
                i = ni;
            }
        }
        if !after_index {
            arg_index(&mut i, &mut arg_num, &mut good_arg_num);
        }
        if i >= end {
            out.push_str("%!(NOVERB)");
            break;
        }
        let verb = format[i..].chars().next().unwrap_or('%');
        i += verb.len_utf8();
        if verb == '%' {
            out.push('%');
        } else if !good_arg_num {
            let _ = write!(out, "%!{verb}(BADINDEX)");
        } else if arg_num >= args.len() {
            let _ = write!(out, "%!{verb}(MISSING)");
        } else {
            if verb == 'v' {
                f.sharp_v = f.sharp;
                f.sharp = false;
                f.plus_v = f.plus;
                f.plus = false;
            }
            print_arg(&mut out, &args[arg_num], verb, &f);
            arg_num += 1;
        }
    }
    if !reordered && arg_num < args.len() {
        out.push_str("%!(EXTRA ");
        for (i, a) in args[arg_num..].iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            match a {
                Value::Invalid | Value::Nil => out.push_str("<nil>"),
                a => {
                    out.push_str(a.go_type());
                    out.push('=');
                    print_arg(&mut out, a, 'v', &Flags::default());
                }
            }
        }
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXT_URL: &str = "http://testhost:9090/path/prefix";

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn sample(pairs: &[(&str, &str)], value: f64) -> QuerySample {
        QuerySample {
            labels: labels(pairs),
            value,
        }
    }

    fn fake_query(expr: &str) -> Result<Vec<QuerySample>, String> {
        match expr {
            "up" => Ok(vec![sample(&[("__name__", "up"), ("instance", "b")], 1234567.0)]),
            "x" => Ok(vec![
                sample(&[("instance", "b")], 21.0),
                sample(&[("instance", "a")], 11.0),
                sample(&[("instance", "d"), ("__value__", "four")], 4.0),
                sample(&[("instance", "c")], 3.0),
            ]),
            "empty" | "missing" => Ok(vec![]),
            "bad" => Err("1:1: parse error: unexpected end of input".into()),
            other => Ok(vec![sample(&[("__name__", "metric")], other.parse().unwrap_or(0.0))]),
        }
    }

    fn exec_full(text: &str, value: f64, ext: &BTreeMap<String, String>, query: Option<QueryFn<'_>>) -> Result<String, TemplateError> {
        let l = labels(&[("instance", "host:9100"), ("job", "node")]);
        let data = TemplateData {
            labels: &l,
            external_labels: ext,
            external_url: EXT_URL,
            value,
        };
        expand("test", text, &data, query, 1_500)
    }

    fn exec(text: &str, value: f64) -> Result<String, TemplateError> {
        let q: QueryFn<'_> = &fake_query;
        exec_full(text, value, &BTreeMap::new(), Some(q))
    }

    fn ok(text: &str) -> String {
        ok_v(text, 1234.5678)
    }

    fn ok_v(text: &str, value: f64) -> String {
        match exec(text, value) {
            Ok(s) => s,
            Err(e) => panic!("{text:?}: unexpected error: {}", e.message),
        }
    }

    fn err(text: &str) -> String {
        match exec(text, 1234.5678) {
            Ok(s) => panic!("{text:?}: expected an error, got {s:?}"),
            Err(e) => e.message,
        }
    }

    /// Column of a byte offset of the template text in an execution error (the preamble comes first).
    fn col(offset: usize) -> usize {
        PREAMBLE.len() + offset
    }

    fn check_all(cases: &[(&str, &str)]) {
        for (text, want) in cases {
            assert_eq!(ok(text), *want, "template {text:?}");
        }
    }

    #[test]
    fn preamble_matches_prometheus() {
        assert_eq!(PREAMBLE.len(), 112);
        assert_eq!(ok("plain text"), "plain text");
        assert_eq!(ok(""), "");
        assert_eq!(ok("{{ 1 }}"), "1");
    }

    #[test]
    fn value_prints_like_go() {
        let cases: &[(f64, &str)] = &[
            (1e6, "1e+06"),
            (0.5, "0.5"),
            (2.75, "2.75"),
            (12345.0, "12345"),
            (123456.0, "123456"),
            (12345678.0, "1.2345678e+07"),
            (1234.5678, "1234.5678"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (100.0, "100"),
            (0.0, "0"),
            (-0.0, "-0"),
            (-2.5, "-2.5"),
            (1e21, "1e+21"),
            (1.0 / 3.0, "0.3333333333333333"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ];
        for (v, want) in cases {
            assert_eq!(ok_v("{{ $value }}", *v), *want, "value {v}");
            assert_eq!(ok_v("{{ .Value }}", *v), *want, "value {v}");
        }
    }

    #[test]
    fn labels_and_data() {
        let mut ext = BTreeMap::new();
        ext.insert("cluster".to_string(), "eu1".to_string());
        let q: QueryFn<'_> = &fake_query;
        let got = exec_full(
            "{{ $labels.instance }}|{{ .Labels.job }}|{{ $externalLabels.cluster }}|{{ .ExternalLabels.cluster }}|{{ $externalURL }}|{{ .ExternalURL }}",
            1.0,
            &ext,
            Some(q),
        );
        assert_eq!(got, Ok(format!("host:9100|node|eu1|eu1|{EXT_URL}|{EXT_URL}")));
        check_all(&[
            // missingkey=zero: a missing label is the empty string.
            ("[{{ $labels.nosuch }}]", "[]"),
            ("[{{ .Labels.nosuch }}]", "[]"),
            ("[{{ index $labels \"nosuch\" }}]", "[]"),
            ("{{ index $labels \"instance\" }}", "host:9100"),
            ("{{ $labels }}", "map[instance:host:9100 job:node]"),
            ("{{ $.Labels.job }}", "node"),
            (
                "{{ . }}",
                "{map[instance:host:9100 job:node] map[] http://testhost:9090/path/prefix 1234.5678}",
            ),
            (
                "{{ printf \"%+v\" . }}",
                "{Labels:map[instance:host:9100 job:node] ExternalLabels:map[] ExternalURL:http://testhost:9090/path/prefix Value:1234.5678}",
            ),
        ]);
    }

    #[test]
    fn printf_verbs_flags_width_precision() {
        check_all(&[
            ("{{ printf \"%.2f\" $value }}", "1234.57"),
            ("{{ $value | printf \"%.2f\" }}", "1234.57"),
            ("{{ printf \"%5.1f%%\" 12.345 }}", " 12.3%"),
            ("{{ printf \"%0.2f\" 3.14159 }}", "3.14"),
            ("{{ printf \"%6.2f|%-8.3e|\" 3.14159 1234.5 }}", "  3.14|1.234e+03|"),
            ("{{ printf \"%08.3f\" -3.14159 }}", "-003.142"),
            ("{{ printf \"%+.1f\" 3.14159 }}", "+3.1"),
            ("{{ printf \"%.1f %.0f %.0f\" 0.25 2.5 3.5 }}", "0.2 2 4"),
            ("{{ printf \"%e\" 123456.789 }}", "1.234568e+05"),
            ("{{ printf \"%E\" 0.000123 }}", "1.230000E-04"),
            ("{{ printf \"%g %g %G\" 100000000.0 0.5 1e-7 }}", "1e+08 0.5 1E-07"),
            (
                "{{ printf \"%.3g|%.4g|%.4g\" 1234.5 1000.0 0.000012345 }}",
                "1.23e+03|1000|1.234e-05",
            ),
            ("{{ printf \"%6.2v|\" 3.14159 }}", "   3.1|"),
            ("{{ printf \"%v\" 1e21 }}", "1e+21"),
            ("{{ printf \"%d\" 42 }}", "42"),
            ("{{ printf \"%05d|%-5d|%5d\" -42 7 7 }}", "-0042|7    |    7"),
            ("{{ printf \"%+d|% d|%.3d\" 5 5 5 }}", "+5| 5|005"),
            ("{{ printf \"%x %X %o %b %O\" 255 255 8 5 8 }}", "ff FF 10 101 0o10"),
            ("{{ printf \"%#x %#o\" 255 8 }}", "0xff 010"),
            ("{{ printf \"%c%c\" 72 105 }}", "Hi"),
            ("{{ printf \"%U %#U\" 65 128512 }}", "U+0041 U+1F600 '😀'"),
            ("{{ printf \"%q\" \"a\\\"b\" }}", "\"a\\\"b\""),
            ("{{ printf \"%q\" 'x' }}", "'x'"),
            (
                "{{ printf \"%s|%-6s|%6s|%.2s\" \"x\" \"ab\" \"cd\" \"xyz\" }}",
                "x|ab    |    cd|xy",
            ),
            ("{{ printf \"%x|% x|%X\" \"hi\" \"hi\" \"hi\" }}", "6869|68 69|6869"),
            ("{{ printf \"%t %7t|\" true false }}", "true   false|"),
            ("{{ printf \"%v %v %v\" 1 \"a\" true }}", "1 a true"),
            (
                "{{ printf \"%T %T %T %T\" 1 1.5 \"s\" $labels }}",
                "int float64 string map[string]string",
            ),
            ("{{ printf \"%*d|%-*d|\" 5 42 4 7 }}", "   42|7   |"),
            ("{{ printf \"%[2]d %[1]d\" 1 2 }}", "2 1"),
            ("{{ printf \"100%%\" }}", "100%"),
            ("{{ printf \"%s\" $labels }}", "map[instance:host:9100 job:node]"),
            // Go's error markers.
            ("{{ printf \"%d\" 1.5 }}", "%!d(float64=1.5)"),
            ("{{ printf \"%.2f\" 2 }}", "%!f(int=2)"),
            ("{{ printf \"%s\" 1.5 }}", "%!s(float64=1.5)"),
            ("{{ printf \"%t\" 1 }}", "%!t(int=1)"),
            ("{{ printf \"%z\" \"a\" }}", "%!z(string=a)"),
            ("{{ printf \"%d %d\" 1 }}", "1 %!d(MISSING)"),
            ("{{ printf \"%d\" 1 2 \"x\" }}", "1%!(EXTRA int=2, string=x)"),
            ("{{ printf \"%v|%s\" nil nil }}", "<nil>|%!s(<nil>)"),
            ("{{ printf \"x%\" }}", "x%!(NOVERB)"),
            ("{{ printf \"%[3]d\" 1 }}", "%!d(BADINDEX)"),
            (
                "{{ printf \"%d\" $labels }}",
                "map[%!d(string=instance):%!d(string=host:9100) %!d(string=job):%!d(string=node)]",
            ),
        ]);
    }

    #[test]
    fn print_println_and_escapers() {
        check_all(&[
            ("{{ print 1 2 \"a\" \"b\" 3 }}", "1 2ab3"),
            ("{{ print 1.5 true }}", "1.5 true"),
            ("{{ println 1 \"a\" }}", "1 a\n"),
            (
                "{{ html \"<a href='x'>&\\\"</a>\" }}",
                "&lt;a href=&#39;x&#39;&gt;&amp;&#34;&lt;/a&gt;",
            ),
            ("{{ js \"it's <b>\\n\" }}", "it\\'s \\u003Cb\\u003E\\u000A"),
            ("{{ urlquery \"a b&c/é\" }}", "a+b%26c%2F%C3%A9"),
            ("{{ html 1 2 }}", "1 2"),
            ("{{ \"<b>\" }}", "<b>"),
            ("{{ \"<b>\" | safeHtml }}", "<b>"),
        ]);
    }

    #[test]
    fn humanize_family() {
        check_all(&[
            (
                "{{ range $x := args 0.0 1.0 1234567.0 0.12 }}{{ humanize $x }}:{{ end }}",
                "0:1:1.235M:120m:",
            ),
            (
                "{{ humanize \"0.0\" }}:{{ humanize \"1.0\" }}:{{ humanize \"1234567.0\" }}:{{ humanize \".12\" }}",
                "0:1:1.235M:120m",
            ),
            (
                "{{ humanize 0 }}:{{ humanize -1 }}:{{ humanize 1 }}:{{ humanize 1234567 }}:{{ humanize 9223372036854775807 }}",
                "0:-1:1:1.235M:9.223E",
            ),
            (
                "{{ humanize 0.000001234 }}:{{ humanize -1500 }}:{{ humanize 999.94 }}:{{ humanize 999.95 }}",
                "1.234u:-1.5k:999.9:1000",
            ),
            (
                "{{ humanize1024 0.0 }}:{{ humanize1024 1.0 }}:{{ humanize1024 1048576.0 }}:{{ humanize1024 0.12 }}",
                "0:1:1Mi:0.12",
            ),
            (
                "{{ humanize1024 -1 }}:{{ humanize1024 1234567 }}:{{ humanize1024 9223372036854775807 }}:{{ humanize1024 2048 }}",
                "-1:1.177Mi:8Ei:2ki",
            ),
            ("{{ humanize1024 \"1048576\" }}", "1Mi"),
            (
                "{{ humanizeDuration 0 }}:{{ humanizeDuration 1 }}:{{ humanizeDuration 60 }}:{{ humanizeDuration 3600 }}:{{ humanizeDuration 86400 }}",
                "0s:1s:1m 0s:1h 0m 0s:1d 0h 0m 0s",
            ),
            (
                "{{ humanizeDuration 90000 }}:{{ humanizeDuration -183845 }}:{{ humanizeDuration 899.99 }}",
                "1d 1h 0m 0s:-2d 3h 4m 5s:14m 59s",
            ),
            (
                "{{ humanizeDuration 3661 }}:{{ humanizeDuration 0.1234 }}:{{ humanizeDuration 1234567 }}",
                "1h 1m 1s:123.4ms:14d 6h 56m 7s",
            ),
            (
                "{{ humanizeDuration .1 }}:{{ humanizeDuration .0001 }}:{{ humanizeDuration .12345 }}:{{ humanizeDuration 60.1 }}:{{ humanizeDuration 60.5 }}:{{ humanizeDuration 1.2345 }}:{{ humanizeDuration 12.345 }}",
                "100ms:100us:123.5ms:1m 0s:1m 0s:1.234s:12.35s",
            ),
            (
                "{{ humanizeDuration \".12345\" }}:{{ humanizeDuration \"3600\" }}",
                "123.5ms:1h 0m 0s",
            ),
            (
                "{{ -0.22222 | humanizePercentage }}:{{ 0.0 | humanizePercentage }}:{{ 0.1234567 | humanizePercentage }}:{{ 1.23456 | humanizePercentage }}",
                "-22.22%:0%:12.35%:123.5%",
            ),
            ("{{ humanizePercentage 0.1234 }}:{{ humanizePercentage \"0.5\" }}", "12.34%:50%"),
            (
                "{{ humanizePercentage 1234567 }}:{{ humanizePercentage 9223372036854775807 }}",
                "1.235e+08%:9.223e+20%",
            ),
            ("{{ humanizeTimestamp 1435065584.128 }}", "2015-06-23 13:19:44.128 +0000 UTC"),
            ("{{ \"1435065584.128\" | humanizeTimestamp }}", "2015-06-23 13:19:44.128 +0000 UTC"),
            (
                "{{ humanizeTimestamp 0 }}|{{ humanizeTimestamp -1 }}|{{ humanizeTimestamp 1 }}",
                "1970-01-01 00:00:00 +0000 UTC|1969-12-31 23:59:59 +0000 UTC|1970-01-01 00:00:01 +0000 UTC",
            ),
            (
                "{{ humanizeTimestamp 1234567 }}|{{ humanizeTimestamp 9223372036 }}",
                "1970-01-15 06:56:07 +0000 UTC|2262-04-11 23:47:16 +0000 UTC",
            ),
            (
                "{{ humanizeTimestamp -1.5 }}|{{ humanizeTimestamp 1600000000.5 }}",
                "1969-12-31 23:59:58.5 +0000 UTC|2020-09-13 12:26:40.5 +0000 UTC",
            ),
        ]);
        for (v, want) in [(f64::INFINITY, "+Inf"), (f64::NEG_INFINITY, "-Inf"), (f64::NAN, "NaN")] {
            let text =
                "{{ humanize . }}:{{ humanize1024 . }}:{{ humanizeDuration . }}:{{ humanizeTimestamp . }}:{{ humanizePercentage . }}";
            assert_eq!(
                ok_v(&format!("{{{{ with $value }}}}{text}{{{{ end }}}}"), v),
                format!("{want}:{want}:{want}:{want}:{want}%")
            );
        }
        assert_eq!(
            ok("{{ humanize \"+Inf\" }}:{{ humanize1024 \"-Inf\" }}:{{ humanizeDuration \"NaN\" }}"),
            "+Inf:-Inf:NaN"
        );
        assert_eq!(
            err("{{ humanize \"one\" }}"),
            format!(
                "template: test:1:{}: executing \"test\" at <humanize \"one\">: error calling humanize: strconv.ParseFloat: parsing \"one\": invalid syntax",
                col(3)
            )
        );
        assert_eq!(
            err("{{ \"one\" | humanizePercentage }}"),
            format!(
                "template: test:1:{}: executing \"test\" at <humanizePercentage>: error calling humanizePercentage: strconv.ParseFloat: parsing \"one\": invalid syntax",
                col(11)
            )
        );
        assert_eq!(
            err("{{ humanizeTimestamp -9223372036854775808 }}"),
            format!(
                "template: test:1:{}: executing \"test\" at <humanizeTimestamp -9...>: error calling humanizeTimestamp: -9.223372036854776e+18 cannot be represented as a nanoseconds timestamp since it overflows int64",
                col(3)
            )
        );
        assert!(err("{{ humanize true }}").ends_with("error calling humanize: can't convert bool to float"));
        assert!(err("{{ humanize $labels }}").ends_with("error calling humanize: can't convert map[string]string to float"));
        assert!(err("{{ humanize \"1e400\" }}").ends_with("strconv.ParseFloat: parsing \"1e400\": value out of range"));
    }

    #[test]
    fn time_and_duration_functions() {
        check_all(&[
            ("{{ (1435065584.128 | toTime).Format \"2006\" }}", "2015"),
            ("{{ (\"1435065584.128\" | toTime).Format \"2006\" }}", "2015"),
            (
                "{{ (toTime 1435065584.128).Format \"Mon Jan _2 15:04:05.000 MST 2006\" }}",
                "Tue Jun 23 13:19:44.128 UTC 2015",
            ),
            (
                "{{ (toTime 1435065584.128).Format \"2006-01-02T15:04:05Z07:00 -0700 3:04PM pm .999 ,000 002 January Monday 06\" }}",
                "2015-06-23T13:19:44Z +0000 1:19PM pm .128 ,128 174 June Tuesday 15",
            ),
            ("{{ toTime 1435065584.128 }}", "2015-06-23 13:19:44.128 +0000 UTC"),
            (
                "{{ (toTime 1435065584).Unix }} {{ (toTime 1435065584.128).UnixMilli }} {{ (toTime 0).Year }}",
                "1435065584 1435065584128 1970",
            ),
            (
                "{{ toDuration 90 }}|{{ toDuration 3600 }}|{{ toDuration 0.0015 }}|{{ toDuration 0 }}|{{ toDuration -1.5 }}",
                "1m30s|1h0m0s|1.5ms|0s|-1.5s",
            ),
            (
                "{{ (toDuration 1.5).Seconds }} {{ (toDuration 90).Minutes }} {{ (toDuration 0.25).Milliseconds }}",
                "1.5 1.5 250",
            ),
            ("{{ now }}", "1.5"),
            ("{{ parseDuration \"1h2m10ms\" }}", "3720.01"),
            ("{{ printf \"%0.2f\" (parseDuration \"1h2m10ms\") }}", "3720.01"),
            (
                "{{ parseDuration \"1w\" }} {{ parseDuration \"0\" }} {{ parseDuration \"1y\" }}",
                "604800 0 3.1536e+07",
            ),
        ]);
        assert!(err("{{ parseDuration \"5x\" }}").ends_with("error calling parseDuration: unknown unit \"x\" in duration \"5x\""));
        assert!(err("{{ parseDuration \"1m1h\" }}").ends_with("error calling parseDuration: not a valid duration string: \"1m1h\""));
        assert!(err("{{ parseDuration \"\" }}").ends_with("error calling parseDuration: empty duration string"));
        assert!(err("{{ toTime \"NaN\" }}").ends_with("error calling toTime: value is NaN or Inf"));
        assert!(err("{{ (toTime 1).Nosuch }}").ends_with("can't evaluate field Nosuch in type *time.Time"));
    }

    #[test]
    fn string_functions() {
        check_all(&[
            ("{{ \"aa bb CC\" | title }}", "Aa Bb CC"),
            (
                "{{ title \"hello-world foo_bar it's 3rd x.y\" }}",
                "Hello-World Foo_bar It's 3Rd X.y",
            ),
            ("{{ \"aa bb CC\" | toUpper }}", "AA BB CC"),
            ("{{ \"aA bB CC\" | toLower }}", "aa bb cc"),
            ("{{ toUpper \"straße\" }}", "STRAßE"),
            (
                "{{ match \"a+\" \"aa\" }} {{ match \"a+\" \"b\" }} {{ match \"^node\" $labels.job }}",
                "true false true",
            ),
            ("{{ reReplaceAll \"(a)b\" \"x$1\" \"ab\" }}", "xa"),
            (
                "{{ reReplaceAll \"localhost:(.*)\" \"my.domain:$1\" \"localhost:3000\" }}",
                "my.domain:3000",
            ),
            ("{{ reReplaceAll \":[0-9]+$\" \"\" $labels.instance }}", "host"),
            (
                "{{ reReplaceAll \"(?P<h>[a-z]+):(\\\\d+)\" \"${2}@$h $$\" $labels.instance }}",
                "9100@host $",
            ),
            ("{{ graphLink \"up\" }}", "/graph?g0.expr=up&g0.tab=0"),
            ("{{ tableLink \"up\" }}", "/graph?g0.expr=up&g0.tab=1"),
            (
                "{{ graphLink \"rate(x[5m]) > 0\" }}",
                "/graph?g0.expr=rate%28x%5B5m%5D%29+%3E+0&g0.tab=0",
            ),
            ("{{ pathPrefix }}", "/path/prefix"),
            ("{{ externalURL }}", "http://testhost:9090/path/prefix"),
            ("{{ $labels.instance | stripPort }}", "host"),
        ]);
        for (input, port, domain) in [
            ("foo.example.com", "foo.example.com", "foo"),
            ("foo.example.com:12345", "foo.example.com", "foo:12345"),
            ("192.0.2.1", "192.0.2.1", "192.0.2.1"),
            ("192.0.2.1:12345", "192.0.2.1", "192.0.2.1:12345"),
            ("2001:0DB8::1", "2001:0DB8::1", "2001:0DB8::1"),
            ("[2001:0DB8::1]:12345", "2001:0DB8::1", "[2001:0DB8::1]:12345"),
            ("[2001:0DB8::1]::12345", "[2001:0DB8::1]::12345", "[2001:0DB8::1]::12345"),
        ] {
            assert_eq!(ok(&format!("{{{{ {:?} | stripPort }}}}", input)), port, "stripPort {input}");
            assert_eq!(ok(&format!("{{{{ {:?} | stripDomain }}}}", input)), domain, "stripDomain {input}");
        }
        assert!(err("{{ match \"(\" \"x\" }}").contains("error calling match: error parsing regexp: "));
        assert!(
            err("{{ reReplaceAll \"(\" \"\" \"x\" }}").contains("error calling reReplaceAll: regexp: Compile(`(`): error parsing regexp: ")
        );
    }

    #[test]
    fn query_functions() {
        check_all(&[
            ("{{ with query \"up\" }}{{ . | first | value | humanize }}{{ end }}", "1.235M"),
            (
                "{{ with query \"empty\" }}{{ . | first | value | humanize }}{{ else }}no data{{ end }}",
                "no data",
            ),
            (
                "{{ range query \"x\" }}{{ .Labels.instance }} {{ .Value }};{{ end }}",
                "b 21;a 11;d 4;c 3;",
            ),
            (
                "{{ range query \"x\" | sortByLabel \"instance\" }}{{ .Labels.instance }}:{{ .Value }}: {{ end }}",
                "a:11: b:21: c:3: d:4: ",
            ),
            ("{{ query \"1.5\" | first | value }}", "1.5"),
            ("{{ query \"x\" | first | label \"instance\" }}", "b"),
            ("[{{ query \"x\" | first | label \"foo\" }}]", "[]"),
            ("{{ $x := query \"x\" | first }}[{{ $x.Labels.foo }}]", "[]"),
            ("{{ range query \"x\" }}{{ strvalue . }},{{ end }}", ",,four,,"),
            ("{{ len (query \"x\") }} {{ (index (query \"x\") 2).Value }}", "4 4"),
            (
                "{{ range $i, $s := query \"x\" }}{{ $i }}={{ $s.Value }} {{ end }}",
                "0=21 1=11 2=4 3=3 ",
            ),
            (
                "{{ with printf \"up{instance=%q}\" $labels.instance | query }}{{ . | first | value }}{{ end }}",
                "0",
            ),
            ("{{ query \"x\" | first }}", "&{map[instance:b] 21}"),
        ]);
        assert_eq!(
            err("{{ query \"missing\" | first }}"),
            format!(
                "template: test:1:{}: executing \"test\" at <first>: error calling first: first() called on vector with no elements",
                col(21)
            )
        );
        assert_eq!(
            err("{{ (query \"missing\").banana }}"),
            format!(
                "template: test:1:{}: executing \"test\" at <\"missing\">: can't evaluate field banana in type template.queryResult",
                col(10)
            )
        );
        assert!(err("{{ query \"bad\" }}").ends_with("error calling query: 1:1: parse error: unexpected end of input"));
        let no_query = exec_full("{{ query \"up\" }}", 1.0, &BTreeMap::new(), None);
        assert!(no_query.is_err_and(|e| e.message.ends_with("error calling query: queries are not allowed in this template")));
        assert_eq!(exec_full("{{ $value }}", 1.0, &BTreeMap::new(), None), Ok("1".to_string()));
    }

    #[test]
    fn control_structures() {
        check_all(&[
            (
                "{{ if gt $value 1000.0 }}big{{ else if gt $value 10.0 }}mid{{ else }}small{{ end }}",
                "big",
            ),
            (
                "{{ if lt $value 1000.0 }}small{{ else if lt $value 2000.0 }}mid{{ else }}big{{ end }}",
                "mid",
            ),
            ("{{ if eq $labels.job \"node\" }}yes{{ else }}no{{ end }}", "yes"),
            ("{{ if eq $labels.job \"a\" \"b\" \"node\" }}any{{ end }}", "any"),
            ("{{ if ne $labels.job \"node\" }}x{{ else }}same{{ end }}", "same"),
            ("{{ if and (ge $value 1.0) (le $value 2000.0) }}in{{ end }}", "in"),
            (
                "{{ if 0 }}a{{ end }}{{ if \"\" }}b{{ end }}{{ if 0.0 }}c{{ end }}{{ if $externalLabels }}d{{ end }}{{ if true }}e{{ end }}{{ if $labels }}f{{ end }}",
                "ef",
            ),
            (
                "{{ range $k, $v := $labels }}{{ $k }}={{ $v }};{{ end }}",
                "instance=host:9100;job=node;",
            ),
            ("{{ range $labels }}{{ . }},{{ end }}", "host:9100,node,"),
            ("{{ range $externalLabels }}x{{ else }}none{{ end }}", "none"),
            (
                "{{ range $i, $e := query \"x\" }}{{ if eq $i 1 }}{{ continue }}{{ end }}{{ if eq $i 3 }}{{ break }}{{ end }}{{ $i }}{{ end }}",
                "02",
            ),
            ("{{ range 3 }}{{ . }}{{ end }}", "012"),
            (
                "{{ with $labels.nosuch }}A{{ else with $labels.job }}B{{ . }}{{ else }}C{{ end }}",
                "Bnode",
            ),
            ("{{ with $labels.nosuch }}A{{ else }}C{{ end }}", "C"),
            ("{{ with $x := $labels.job }}{{ $x }}/{{ . }}{{ end }}", "node/node"),
            (
                "{{ and 1 0 }} {{ and 1 2 }} {{ or 0 \"\" \"x\" }} {{ or 0 \"\" }} {{ not 0 }} {{ not \"a\" }}",
                "0 2 x  true false",
            ),
            // and/or short-circuit: the failing index is never evaluated.
            ("{{ or 1 (index $labels 5) }}", "1"),
            (
                "{{ lt \"a\" \"b\" }} {{ gt 2 1 }} {{ le 2 2 }} {{ ge 1.5 2.5 }} {{ eq 1 1 }} {{ eq true false }}",
                "true true true false true false",
            ),
            (
                "{{ len $labels }} {{ len \"abc\" }} {{ slice \"abcdef\" 1 3 }} {{ index \"abc\" 1 }}",
                "2 3 bc 98",
            ),
        ]);
        assert!(err("{{ if gt $value 0 }}x{{ end }}").ends_with("error calling gt: incompatible types for comparison"));
        assert!(err("{{ if eq $value \"1\" }}x{{ end }}").ends_with("error calling eq: incompatible types for comparison"));
        assert!(err("{{ lt true false }}").ends_with("error calling lt: invalid type for comparison"));
        assert!(err("{{ eq 1 }}").ends_with("error calling eq: missing argument for comparison"));
        assert!(err("{{ index (query \"x\") 5 }}").ends_with("error calling index: index out of range: 5"));
        assert!(err("{{ index (query \"x\") 4 }}").ends_with("error calling index: reflect: slice index out of range"));
        assert!(err("{{ index $labels 1 }}").ends_with("error calling index: value has type int; should be string"));
        assert!(err("{{ range 1.5 }}{{ end }}").ends_with("range can't iterate over 1.5"));
        assert!(err("{{ len 3 }}").ends_with("error calling len: len of type int"));
    }

    #[test]
    fn variables_pipelines_and_literals() {
        check_all(&[
            ("{{ $x := 1 }}{{ $x = 2 }}{{ $x }}", "2"),
            (
                "{{ $x := \"outer\" }}{{ if true }}{{ $x := \"inner\" }}{{ $x }}{{ end }} {{ $x }}",
                "inner outer",
            ),
            ("{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}", "2"),
            ("{{ $v := $value }}{{ $value := 5 }}{{ $value }} {{ $v }}", "5 1234.5678"),
            ("{{ \"hello\" | printf \"%s world\" }}", "hello world"),
            ("{{ $value | printf \"%.1f\" | printf \"[%s]\" }}", "[1234.6]"),
            ("{{ printf \"%s-%s\" (index $labels \"job\") (\"x\" | toUpper) }}", "node-X"),
            ("{{ (printf \"%s\" \"a\") }}", "a"),
            ("{{ `a\\nb` }}", "a\\nb"),
            ("{{ \"a\\tb\\u00e9\\x41\\101\" }}", "a\tbéAA"),
            ("{{ 'a' }} {{ '\\n' }}", "97 10"),
            (
                "{{ 0x1F }} {{ 1_000 }} {{ 1e3 }} {{ -2.50 }} {{ 0o17 }} {{ 017 }} {{ 0b101 }} {{ +7 }} {{ .5 }}",
                "31 1000 1000 -2.5 15 15 5 7 0.5",
            ),
            ("{{ true }} {{ false }}", "true false"),
        ]);
    }

    #[test]
    fn trim_markers_and_comments() {
        check_all(&[
            ("a  {{- 1 -}}  b", "a1b"),
            ("a \n\t{{- 1 }} b", "a1 b"),
            ("a {{ 1 -}} \n b", "a 1b"),
            ("{{ 3 }} {{- 4 }}", "34"),
            ("a{{/* comment */}}b", "ab"),
            ("a {{- /* comment */ -}} \n b", "ab"),
            ("x\n  {{- /* multi\nline */ -}}\n  y", "xy"),
            ("{{- $value -}}", "1234.5678"),
            ("a{{-3}}b", "a-3b"),
            ("{{ if true -}}\n  yes\n{{- end }}", "yes"),
        ]);
    }

    #[test]
    fn define_template_block() {
        check_all(&[
            ("{{ define \"t\" }}[{{ . }}]{{ end }}{{ template \"t\" $labels.job }}", "[node]"),
            ("{{define \"x\"}}{{.arg0}} {{.arg1}}{{end}}{{template \"x\" (args 1 \"2\")}}", "1 2"),
            ("{{ block \"b\" $value }}<{{ . }}>{{ end }}", "<1234.5678>"),
            ("{{ define \"n\" }}{{ . }}{{ end }}{{ template \"n\" }}", "<no value>"),
            ("{{ define \"t\" }}{{ $ }}{{ end }}{{ template \"t\" 5 }}", "5"),
        ]);
        assert_eq!(
            err("{{ define \"x\" }}{{ humanize \"bad\" }}{{ end }}{{ template \"x\" }}"),
            format!(
                "template: test:1:{}: executing \"x\" at <humanize \"bad\">: error calling humanize: strconv.ParseFloat: parsing \"bad\": invalid syntax",
                col(19)
            )
        );
        assert!(err("{{ template \"nosuch\" }}").ends_with("template \"nosuch\" not defined"));
        assert!(
            err("{{ define \"r\" }}{{ template \"r\" . }}{{ end }}{{ template \"r\" }}").ends_with("exceeded maximum template depth (100)")
        );
        // Templates do not see the caller's variables.
        assert_eq!(
            Template::parse("test", "{{ define \"t\" }}{{ $labels }}{{ end }}").map(|_| ()),
            Err(TemplateError {
                message: "template: test:1: undefined variable \"$labels\"".into()
            })
        );
    }

    #[test]
    fn parse_errors_name_the_place() {
        let parse_err = |text: &str| match Template::parse("__alert_HighLatency", text) {
            Ok(_) => panic!("{text:?}: expected a parse error"),
            Err(e) => e.message,
        };
        let cases: &[(&str, &str)] = &[
            ("{{", "template: __alert_HighLatency:1: unclosed action"),
            ("{{ foo }}", "template: __alert_HighLatency:1: function \"foo\" not defined"),
            (
                "a\nb\n{{ nosuch 1 }}",
                "template: __alert_HighLatency:3: function \"nosuch\" not defined",
            ),
            ("line1\n{{ if true }}x", "template: __alert_HighLatency:2: unexpected EOF"),
            ("{{ end }}", "template: __alert_HighLatency:1: unexpected {{end}}"),
            ("{{ else }}", "template: __alert_HighLatency:1: unexpected {{else}}"),
            ("{{ $x }}", "template: __alert_HighLatency:1: undefined variable \"$x\""),
            (
                "{{ 1 | 2 }}",
                "template: __alert_HighLatency:1: non executable command in pipeline stage 2",
            ),
            (
                "{{ \"unterminated }}",
                "template: __alert_HighLatency:1: unterminated quoted string",
            ),
            ("{{/* x }}", "template: __alert_HighLatency:1: unclosed comment"),
            (
                "{{/* x */ 1 }}",
                "template: __alert_HighLatency:1: comment ends before closing delimiter",
            ),
            ("{{ range }}{{ end }}", "template: __alert_HighLatency:1: missing value for range"),
            ("{{ if }}{{ end }}", "template: __alert_HighLatency:1: missing value for if"),
            ("{{ break }}", "template: __alert_HighLatency:1: {{break}} outside {{range}}"),
            ("{{ $labels.foo-bar }}", "template: __alert_HighLatency:1: bad character U+002D '-'"),
            ("{{ 1-2 }}", "template: __alert_HighLatency:1: bad number syntax: \"1-2\""),
            (
                "{{ \u{a0}}}",
                "template: __alert_HighLatency:1: unrecognized character in action: U+00A0",
            ),
            (
                "{{ $value\n",
                "template: __alert_HighLatency:2: unclosed action started at __alert_HighLatency:1",
            ),
            ("{{ (1 }}", "template: __alert_HighLatency:1: unclosed left paren"),
            ("{{ 1) }}", "template: __alert_HighLatency:1: unexpected right paren"),
            ("{{ $x=1 }}", "template: __alert_HighLatency:1: bad character U+003D '='"),
            ("{{ .Labels. }}", "template: __alert_HighLatency:1: unexpected <.> in operand"),
            (
                "{{ if true }}{{ else }}{{ else }}{{ end }}",
                "template: __alert_HighLatency:1: expected end; found {{else}}",
            ),
            (
                "{{ range $a, $b, $c := . }}{{ end }}",
                "template: __alert_HighLatency:1: too many declarations in range",
            ),
            ("{{ \"\\q\" }}", "template: __alert_HighLatency:1: invalid syntax"),
            ("{{ 08 }}", "template: __alert_HighLatency:1: integer overflow: \"08\""),
            (
                "{{ 99999999999999999999 }}",
                "template: __alert_HighLatency:1: integer overflow: \"99999999999999999999\"",
            ),
            (
                "{{ define \"a\" }}x{{ end }}{{ define \"a\" }}y{{ end }}",
                "template: __alert_HighLatency:1: template: multiple definition of template \"a\"",
            ),
            (
                "{{ tmpl \"a\" . }}",
                "template: __alert_HighLatency:1: function \"tmpl\" not defined",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_err(text), *want, "template {text:?}");
        }
        let deep = format!("{}1{}", "(".repeat(200), ")".repeat(200));
        assert!(parse_err(&format!("{{{{ {deep} }}}}")).ends_with("expression nested too deeply"));
    }

    #[test]
    fn execution_errors_name_the_place() {
        assert_eq!(
            err("x\n  {{ humanize \"one\" }}"),
            "template: test:2:5: executing \"test\" at <humanize \"one\">: error calling humanize: strconv.ParseFloat: parsing \"one\": invalid syntax"
        );
        assert_eq!(
            err("{{ humanize 1 2 }}"),
            format!(
                "template: test:1:{}: executing \"test\" at <humanize>: wrong number of args for humanize: want 1 got 2",
                col(3)
            )
        );
        assert!(err("{{ label \"x\" }}").ends_with("at <label>: wrong number of args for label: want 2 got 1"));
        assert!(err("{{ printf }}").ends_with("wrong number of args for printf: want at least 1 got 0"));
        assert!(err("{{ $labels.instance.foo }}").ends_with("can't evaluate field foo in type string"));
        assert_eq!(
            err("{{ .Nosuch }}"),
            format!(
                "template: test:1:{}: executing \"test\" at <.Nosuch>: can't evaluate field Nosuch in type {DATA_TYPE}",
                col(3)
            )
        );
        assert!(err("{{ first \"x\" }}").ends_with("at <\"x\">: can't handle \"x\" for arg of type template.queryResult"));
        assert!(err("{{ toUpper 1 }}").ends_with("at <1>: expected string; found 1"));
        assert!(err("{{ $value | toUpper }}").ends_with("wrong type for value; expected string; got float64"));
        assert!(err("{{ $labels 1 }}").ends_with("can't give argument to non-function $labels"));
        assert!(err("{{ $labels.job 1 }}").ends_with("job is not a method but has arguments"));
        assert!(err("{{ .Value 1 }}").ends_with("Value has arguments but cannot be invoked as function"));
        assert!(err("{{ nil }}").ends_with("nil is not a command"));
        assert!(err("{{ call 1 }}").ends_with("error calling call: non-function of type int"));
        // Long contexts are cut at 20 characters, as Go does.
        assert!(err("{{ humanize \"aaaaaaaaaaaaaaaaaaaaaaaaa\" }}").contains("at <humanize \"aaaaaaaaaa...>"));
    }

    #[test]
    fn deep_nesting_fails_cleanly_on_a_small_stack() {
        let parens = format!("{}1{}", "(".repeat(95), ")".repeat(95));
        let text = format!(
            "{{{{ define \"r\" }}}}{{{{ if true }}}}{{{{ print {parens} }}}}{{{{ template \"r\" . }}}}{{{{ end }}}}{{{{ end }}}}{{{{ template \"r\" . }}}}"
        );
        let handle = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || exec(&text, 1.0).map_err(|e| e.message));
        let res = handle.expect("spawn").join().expect("no stack overflow");
        assert!(res.is_err_and(|e| e.ends_with("template nested too deeply")));
        // A large range does not materialise its elements.
        assert_eq!(
            ok("{{ range $i := 100000000000 }}{{ if eq $i 3 }}{{ break }}{{ end }}{{ $i }}{{ end }}"),
            "012"
        );
    }

    #[test]
    fn parsed_template_is_reusable() {
        let t = match Template::parse("__alert_X", "{{ $labels.instance }} is at {{ $value | humanizePercentage }}") {
            Ok(t) => t,
            Err(e) => panic!("{}", e.message),
        };
        let ext = BTreeMap::new();
        for (inst, v, want) in [("a", 0.5, "a is at 50%"), ("b", 0.1234, "b is at 12.34%")] {
            let l = labels(&[("instance", inst)]);
            let data = TemplateData {
                labels: &l,
                external_labels: &ext,
                external_url: "",
                value: v,
            };
            assert_eq!(t.execute(&data, None, 0), Ok(want.to_string()));
        }
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Template>();
        assert_send_sync::<TemplateError>();
    }

    #[test]
    fn strconv_float_matches_go() {
        let cases: &[(f64, char, i32, &str)] = &[
            (0.0, 'g', 4, "0"),
            (1000.0, 'g', 4, "1000"),
            (10000.0, 'g', 4, "1e+04"),
            (1.5, 'g', 4, "1.5"),
            (0.00012345, 'g', 4, "0.0001234"),
            (0.000012345, 'g', 4, "1.234e-05"),
            (123.456, 'e', 2, "1.23e+02"),
            (1e100, 'e', -1, "1e+100"),
            (-1.5, 'f', 3, "-1.500"),
            (1e-7, 'f', -1, "0.0000001"),
            (5e-324, 'g', -1, "5e-324"),
            (f64::MAX, 'g', -1, "1.7976931348623157e+308"),
            (2.5, 'f', 0, "2"),
            (0.125, 'f', 2, "0.12"),
        ];
        for (v, fmt, prec, want) in cases {
            assert_eq!(strconv_float(*v, *fmt, *prec), *want, "FormatFloat({v}, {fmt}, {prec})");
        }
    }

    #[test]
    fn time_formatting_and_durations() {
        let t = GoTime::from_millis(951_782_400_000); // 2000-02-29 00:00:00 UTC (leap day)
        assert_eq!(t.string(), "2000-02-29 00:00:00 +0000 UTC");
        assert_eq!(t.format("Monday 2 Jan 06 03:04:05 PM __2"), "Tuesday 29 Feb 00 12:00:00 AM  60");
        assert_eq!(GoTime::from_millis(-86_400_000).string(), "1969-12-31 00:00:00 +0000 UTC");
        for (ns, want) in [
            (0, "0s"),
            (1, "1ns"),
            (1_500, "1.5µs"),
            (100_000_000, "100ms"),
            (1_000_000_000, "1s"),
            (61_500_000_000, "1m1.5s"),
            (3_600_000_000_000, "1h0m0s"),
            (-90_000_000_000, "-1m30s"),
        ] {
            assert_eq!(duration_string(ns), want, "{ns}ns");
        }
    }
}
