//! Parse tree (Go's text/template/parse/node.go) and parser (parse.go),
//! with Go's literal syntax: numbers (`parse.newNumber`, `strconv.ParseInt`,
//! `strconv.ParseFloat`) and quoted strings (`strconv.Unquote`).

use std::collections::BTreeMap;
use std::fmt;

use super::funcs::Func;
use super::gofmt::go_quote;
use super::lex::{It, Item, Lexer, is_space};
use super::{MAX_PARSE_DEPTH, TemplateError};

// Parse tree (Go's text/template/parse/node.go). `Display` gives Go's
// `Node.String()`, which execution errors quote.

#[derive(Debug, Clone)]
pub(super) enum Node {
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
pub(super) struct Branch {
    pub(super) pos: usize,
    pub(super) pipe: Pipe,
    pub(super) list: Vec<Node>,
    pub(super) else_list: Option<Vec<Node>>,
}

#[derive(Debug, Clone)]
pub(super) struct Pipe {
    pub(super) pos: usize,
    pub(super) is_assign: bool,
    pub(super) decl: Vec<String>,
    pub(super) cmds: Vec<Command>,
}

#[derive(Debug, Clone)]
pub(super) struct Command {
    pub(super) pos: usize,
    pub(super) args: Vec<Arg>,
}

#[derive(Debug, Clone)]
pub(super) struct Number {
    pub(super) pos: usize,
    pub(super) text: String,
    pub(super) is_int: bool,
    pub(super) is_uint: bool,
    pub(super) is_float: bool,
    pub(super) int: i64,
    pub(super) float: f64,
}

#[derive(Debug, Clone)]
pub(super) enum Arg {
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
    pub(super) fn pos(&self) -> usize {
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
    pub(super) fn pos(&self) -> usize {
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

/// The templates a text defines (`{{define}}`, `{{block}}`), by name.
type Defs = BTreeMap<String, Vec<Node>>;

/// Lexes and parses `text` (the preamble and the template) of the template
/// `name`: its tree and the templates it defines (`{{define}}`, `{{block}}`).
pub(super) fn parse(name: &str, text: &str) -> PResult<(Vec<Node>, Defs)> {
    let items = Lexer::lex(text);
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
    Ok((root, p.defs))
}

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
    defs: Defs,
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
pub(super) fn parse_go_float(s: &str) -> Result<f64, String> {
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
