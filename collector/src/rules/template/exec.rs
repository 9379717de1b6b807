//! Execution (Go's text/template/exec.go): the values a template meets,
//! the walk over the tree, and the builtins that look into values (`len`,
//! `index`, `slice`, `eq`, `lt`).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::rc::Rc;

use regex::Regex;

use super::funcs::{Callee, Func, Method, Ty};
use super::gofmt::{Flags, fmt_v, go_quote, print_arg};
use super::gotime::GoTime;
use super::parse::{Arg, Branch, Command, Node, Number, Pipe};
use super::{DATA_TYPE, MAX_EXEC_DEPTH, MAX_NESTING, QueryFn, Template, TemplateData, TemplateError};

// Values: the Go types a rule template can meet.

#[derive(Debug)]
pub(super) struct SampleV {
    pub(super) labels: Rc<BTreeMap<String, String>>,
    pub(super) value: f64,
}

#[derive(Debug)]
pub(super) struct DataV {
    pub(super) labels: Rc<BTreeMap<String, String>>,
    pub(super) external_labels: Rc<BTreeMap<String, String>>,
    pub(super) external_url: Rc<str>,
    pub(super) value: f64,
}

#[derive(Debug, Clone)]
pub(super) enum Value {
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
    pub(super) fn str(s: &str) -> Value {
        Value::Str(Rc::from(s))
    }

    /// Go's `%T`.
    pub(super) fn go_type(&self) -> &'static str {
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
    pub(super) fn reflect_type(&self) -> &'static str {
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
pub(super) fn is_true(v: &Value) -> bool {
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

// Execution.

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

pub(super) struct State<'t, 'q> {
    tmpl: &'t Template,
    pub(super) query: Option<QueryFn<'q>>,
    pub(super) eval_time_ms: i64,
    pub(super) external_url: &'q str,
    cur_name: &'t str,
    vars: Vec<(&'t str, Value)>,
    depth: usize,
    nest: usize,
    at: At<'t>,
    out: String,
    pub(super) regexes: HashMap<String, Result<Regex, String>>,
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
}

/// Runs `tmpl` on `data`: see [`Template::execute`].
pub(super) fn execute(
    tmpl: &Template,
    data: &TemplateData<'_>,
    query: Option<QueryFn<'_>>,
    eval_time_ms: i64,
) -> Result<String, TemplateError> {
    let dot = Value::Data(Rc::new(DataV {
        labels: Rc::new(data.labels.clone()),
        external_labels: Rc::new(data.external_labels.clone()),
        external_url: Rc::from(data.external_url),
        value: data.value,
    }));
    let mut st = State {
        tmpl,
        query,
        eval_time_ms,
        external_url: data.external_url,
        cur_name: &tmpl.name,
        vars: vec![("$", dot.clone())],
        depth: 0,
        nest: 0,
        at: At::None,
        out: String::new(),
        regexes: HashMap::new(),
    };
    st.walk_list(&dot, &tmpl.root)?;
    Ok(st.out)
}

// Builtins.

pub(super) fn builtin_len(v: &Value) -> Result<i64, String> {
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

pub(super) fn builtin_index(item: Value, indexes: &[Value]) -> Result<Value, String> {
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

pub(super) fn builtin_slice(item: Value, indexes: &[Value]) -> Result<Value, String> {
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
pub(super) fn builtin_eq(arg1: &Value, arg2: &[Value]) -> Result<bool, String> {
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
pub(super) fn builtin_lt(arg1: &Value, arg2: &Value) -> Result<bool, String> {
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
