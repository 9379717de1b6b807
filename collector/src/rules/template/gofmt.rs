//! Go's fmt and strconv, as far as templates reach them: `printf` verbs,
//! flags, width and precision, `Sprint`/`Sprintln`, quoting. Float digits
//! come from `csoc_common::gofmt::format_float` (Go's `strconv.FormatFloat`).

use std::fmt::Write as _;

use csoc_common::gofmt::format_float;

use super::exec::Value;
use super::gotime::duration_string;

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Flags {
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
pub(super) fn fmt_v(v: &Value) -> String {
    let mut out = String::new();
    print_arg(&mut out, v, 'v', &Flags::default());
    out
}

/// Go's `strconv.IsPrint` (approximated: Unicode categories L, M, N, P, S and ASCII space).
pub(super) fn is_go_print(c: char) -> bool {
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

pub(super) fn go_quote(s: &str) -> String {
    go_quote_with(s, false)
}

fn can_backquote(s: &str) -> bool {
    s.chars()
        .all(|c| c != '`' && c != '\u{FEFF}' && c != '\u{7F}' && (c >= ' ' || c == '\t'))
}

/// The quoting regexp.MustCompile uses in its panic message.
pub(super) fn go_quote_backquote(s: &str) -> String {
    if can_backquote(s) { format!("`{s}`") } else { go_quote(s) }
}

/// `%#U`: "U+0021 '!'".
pub(super) fn go_unicode_sharp(c: char) -> String {
    if is_go_print(c) {
        format!("U+{:04X} '{c}'", c as u32)
    } else {
        format!("U+{:04X}", c as u32)
    }
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
    let num = format_float(v, verb, prec);
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
pub(super) fn print_arg(out: &mut String, v: &Value, verb: char, f: &Flags) {
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
pub(super) fn sprint(args: &[Value]) -> String {
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
pub(super) fn sprintln(args: &[Value]) -> String {
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
pub(super) fn sprintf(format: &str, args: &[Value]) -> String {
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
            assert_eq!(format_float(*v, *fmt, *prec), *want, "FormatFloat({v}, {fmt}, {prec})");
        }
    }
}
