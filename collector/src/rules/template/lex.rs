//! Lexer (Go's text/template/parse/lex.go, delimiters "{{" and "}}").

use std::fmt;

use super::gofmt::{go_quote, go_unicode_sharp, is_go_print};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum It {
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
pub(super) struct Item {
    pub(super) typ: It,
    pub(super) pos: usize,
    pub(super) line: usize,
    pub(super) val: String,
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

pub(super) fn is_space(c: char) -> bool {
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

pub(super) struct Lexer<'a> {
    input: &'a str,
    items: Vec<Item>,
    newlines: Vec<usize>,
}

impl<'a> Lexer<'a> {
    pub(super) fn lex(input: &'a str) -> Vec<Item> {
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
