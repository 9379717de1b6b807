//! The series notation of Prometheus's test formats: series descriptions
//! (`name{label="value"}`) and expanding value sequences (`1+2x3`, `_x2`,
//! `stale`). Used by the upstream PromQL test scripts (`load` blocks) and by
//! promtool's rule unit tests (`input_series`), which
//! `csoc-collector --test-rules` runs.

pub use csoc_common::labels::Labels;

/// One value of a series line after expansion.
#[derive(Debug, Clone, Copy)]
pub enum SeqValue {
    /// `_`: no sample at this step.
    Omitted,
    /// A float (`stale` is the StaleNaN bit pattern).
    Float(f64),
    /// A native histogram (`{{…}}`); its content is not parsed.
    Histogram,
}

/// A series line of a `load` block or of an eval's expected result.
#[derive(Debug, Clone)]
pub struct SeriesLine {
    /// The labels.
    pub labels: Labels,
    /// The expanded values.
    pub values: Vec<SeqValue>,
}

/// The StaleNaN staleness marker.
pub fn stale_nan() -> f64 {
    f64::from_bits(csoc_proto::STALE_NAN_BITS)
}

/// Parses a duration as the scripts write them (`0`, `50m`, `1h5m`,
/// `20s500ms`, units `y w d h m s ms` in that order, each at most once) to
/// milliseconds. A leading `-` (used by start-timestamp offsets) negates.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let ms = csoc_common::duration::parse_duration_ms(body).map_err(|_| format!("invalid duration {s:?}"))?;
    Ok(if neg { -ms } else { ms })
}

/// Reads a quoted string at the start of `s` (`"…"` or `'…'` with Go's
/// escapes, or a raw `` `…` ``); returns its value and the rest of `s`.
/// Escapes that produce bytes which are not UTF-8 (`\xff`) are replaced.
pub fn read_quoted(s: &str) -> Result<(String, &str), String> {
    let q = s.chars().next().ok_or("expected a quoted string, found nothing")?;
    if q == '`' {
        let end = s[1..].find('`').ok_or_else(|| format!("unterminated raw string in {s:?}"))?;
        return Ok((s[1..1 + end].replace('\r', ""), &s[2 + end..]));
    }
    if q != '"' && q != '\'' {
        return Err(format!("expected a quoted string at {s:?}"));
    }
    let bytes = s.as_bytes();
    let mut out: Vec<u8> = Vec::new();
    let mut i = 1;
    let hex = |from: usize, n: usize| -> Result<u32, String> {
        s.get(from..from + n)
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| format!("invalid escape in {s:?}"))
    };
    loop {
        let Some(&b) = bytes.get(i) else {
            return Err(format!("unterminated string {s:?}"));
        };
        if b == q as u8 {
            return Ok((String::from_utf8_lossy(&out).into_owned(), &s[i + 1..]));
        }
        if b == b'\n' {
            return Err(format!("newline in string {s:?}"));
        }
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let e = *bytes.get(i + 1).ok_or_else(|| format!("unterminated string {s:?}"))?;
        i += 2;
        match e {
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'\\' | b'"' | b'\'' => out.push(e),
            b'x' => {
                out.push(hex(i, 2)? as u8);
                i += 2;
            }
            b'0'..=b'7' => {
                let v = s
                    .get(i - 1..i + 2)
                    .and_then(|o| u32::from_str_radix(o, 8).ok())
                    .filter(|v| *v <= 255)
                    .ok_or_else(|| format!("invalid octal escape in {s:?}"))?;
                out.push(v as u8);
                i += 2;
            }
            b'u' | b'U' => {
                let n = if e == b'u' { 4 } else { 8 };
                let c = char::from_u32(hex(i, n)?).ok_or_else(|| format!("invalid unicode escape in {s:?}"))?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                i += n;
            }
            _ => return Err(format!("unknown escape \\{} in {s:?}", e as char)),
        }
    }
}

/// Whether `c` may start a metric or label name.
pub fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

/// Whether `c` may continue a metric or label name.
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Parses a series description `name{label="value", …}`, `name`,
/// `{__name__="name", …}`, `{"quoted.name", …}` or `{}` at the start of
/// `s`; returns the labels (sorted, `__name__` included) and the rest.
pub fn parse_series_desc(s: &str) -> Result<(Labels, &str), String> {
    let s = s.trim_start();
    let mut labels: Labels = Vec::new();
    let name_len = s.find(|c: char| !is_name_char(c)).unwrap_or(s.len());
    let mut rest = s;
    if name_len > 0 {
        if !s.starts_with(is_name_start) {
            return Err(format!("invalid metric name in {s:?}"));
        }
        labels.push(("__name__".into(), s[..name_len].to_string()));
        rest = &s[name_len..];
    }
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let quoted = rest.starts_with(['"', '\'', '`']);
            let (name, r) = if quoted {
                read_quoted(rest)?
            } else {
                let n = rest.find(|c: char| !is_name_char(c)).unwrap_or(rest.len());
                if n == 0 || !rest.starts_with(is_name_start) {
                    return Err(format!("expected a label name at {rest:?}"));
                }
                (rest[..n].to_string(), &rest[n..])
            };
            let r = r.trim_start();
            if let Some(r) = r.strip_prefix('=') {
                let (value, r) = read_quoted(r.trim_start())?;
                labels.push((name, value));
                rest = r.trim_start();
            } else if quoted && (r.starts_with(',') || r.starts_with('}')) {
                labels.push(("__name__".into(), name));
                rest = r;
            } else {
                return Err(format!("expected = after label name at {r:?}"));
            }
            if let Some(r) = rest.strip_prefix(',') {
                rest = r;
            } else if !rest.starts_with('}') {
                return Err(format!("expected , or }} at {rest:?}"));
            }
        }
    } else if name_len == 0 {
        return Err(format!("expected a metric name or {{ at {s:?}"));
    }
    labels.sort();
    if labels.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(format!("duplicate label name in {s:?}"));
    }
    Ok((labels, rest))
}

/// Splits the values part of a series line into tokens; `{{…}}` may
/// contain spaces. A `#` starting a token begins a comment.
fn value_tokens(s: &str) -> Result<Vec<&str>, String> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut toks = Vec::new();
    while i < b.len() {
        if b[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if b[i] == b'#' {
            break;
        }
        let start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() {
            if b[i..].starts_with(b"{{") {
                let end = s[i..].find("}}").ok_or_else(|| format!("unterminated {{{{ in {s:?}"))?;
                i += end + 2;
            } else {
                i += 1;
            }
        }
        toks.push(&s[start..i]);
    }
    Ok(toks)
}

/// The `N` of `xN`: a decimal count.
fn parse_times(s: &str) -> Result<usize, String> {
    const MAX: usize = 10_000_000;
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid repetition count {s:?}"));
    }
    s.parse::<usize>()
        .ok()
        .filter(|n| *n <= MAX)
        .ok_or_else(|| format!("repetition count {s:?} too large"))
}

/// A number at the start of `s`: optional sign, then `Inf`/`NaN` (any case)
/// or a decimal with optional fraction and exponent. Returns the value and
/// the rest.
fn lex_number(s: &str) -> Option<(f64, &str)> {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i = 1;
    }
    let neg = b.first() == Some(&b'-');
    for (word, v) in [("inf", f64::INFINITY), ("nan", f64::NAN)] {
        if s.get(i..i + 3).is_some_and(|w| w.eq_ignore_ascii_case(word)) {
            return Some((if neg { -v } else { v }, &s[i + 3..]));
        }
    }
    let digits = |mut j: usize| {
        while b.get(j).is_some_and(|c| c.is_ascii_digit()) {
            j += 1;
        }
        j
    };
    let int_end = digits(i);
    let mut end = int_end;
    let mut has_digits = int_end > i;
    if b.get(end) == Some(&b'.') {
        let frac_end = digits(end + 1);
        has_digits |= frac_end > end + 1;
        end = frac_end;
    }
    if !has_digits {
        return None;
    }
    if matches!(b.get(end), Some(b'e' | b'E')) {
        let mut j = end + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let exp_end = digits(j);
        if exp_end > j {
            end = exp_end;
        }
    }
    s[..end].parse::<f64>().ok().map(|v| (v, &s[end..]))
}

/// `0x1F`-style hex (optionally signed). `0x3` and `0x10` are expanding
/// notation (`0` repeated), not hex: hex needs a digit `a`-`f`.
fn parse_hex_value(tok: &str) -> Option<f64> {
    let (neg, body) = match tok.as_bytes().first() {
        Some(b'-') => (true, &tok[1..]),
        Some(b'+') => (false, &tok[1..]),
        _ => (false, tok),
    };
    let digits = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X"))?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) || digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v = u64::from_str_radix(digits, 16).ok()? as f64;
    Some(if neg { -v } else { v })
}

fn expand_histogram(tok: &str) -> Result<Vec<SeqValue>, String> {
    let bad = || format!("invalid histogram value {tok:?}");
    let end = tok.find("}}").ok_or_else(bad)? + 2;
    let rest = &tok[end..];
    if rest.is_empty() {
        return Ok(vec![SeqValue::Histogram]);
    }
    if let Some(n) = rest.strip_prefix('x') {
        return Ok(vec![SeqValue::Histogram; parse_times(n)? + 1]);
    }
    let inc = rest.strip_prefix("+{{").or_else(|| rest.strip_prefix("-{{")).ok_or_else(bad)?;
    let e2 = inc.find("}}").ok_or_else(bad)? + 2;
    let n = inc[e2..].strip_prefix('x').ok_or_else(bad)?;
    Ok(vec![SeqValue::Histogram; parse_times(n)? + 1])
}

/// Expands one value token: `_`, `_xN`, `stale`, a number, `axN`,
/// `a+bxN`, `a-bxN`, hex, or a histogram `{{…}}` (with `xN` / `+{{…}}xN`).
pub fn expand_value(tok: &str) -> Result<Vec<SeqValue>, String> {
    if tok == "_" {
        return Ok(vec![SeqValue::Omitted]);
    }
    if let Some(n) = tok.strip_prefix("_x") {
        return Ok(vec![SeqValue::Omitted; parse_times(n)?]);
    }
    if tok == "stale" {
        return Ok(vec![SeqValue::Float(stale_nan())]);
    }
    if tok.starts_with("{{") {
        return expand_histogram(tok);
    }
    if let Some(v) = parse_hex_value(tok) {
        return Ok(vec![SeqValue::Float(v)]);
    }
    let bad = || format!("invalid value {tok:?}");
    let (a, rest) = lex_number(tok).ok_or_else(bad)?;
    if rest.is_empty() {
        return Ok(vec![SeqValue::Float(a)]);
    }
    if let Some(n) = rest.strip_prefix('x') {
        return Ok(vec![SeqValue::Float(a); parse_times(n)? + 1]);
    }
    if rest.starts_with(['+', '-']) {
        let (inc, rest) = lex_number(rest).ok_or_else(bad)?;
        let n = parse_times(rest.strip_prefix('x').ok_or_else(bad)?)?;
        // Accumulated, as upstream (so 0.1 steps round the same way).
        let mut v = a;
        let mut out = Vec::with_capacity(n + 1);
        for _ in 0..=n {
            out.push(SeqValue::Float(v));
            v += inc;
        }
        return Ok(out);
    }
    Err(bad())
}

/// Expands the values part of a series line.
pub fn parse_values(s: &str) -> Result<Vec<SeqValue>, String> {
    let mut out = Vec::new();
    for tok in value_tokens(s)? {
        out.extend(expand_value(tok)?);
    }
    Ok(out)
}

/// A series line: `Ok(None)` for a start-timestamp line (`name{…}@st …`).
pub fn parse_series_line(line: &str) -> Result<Option<SeriesLine>, String> {
    let (labels, rest) = parse_series_desc(line)?;
    if rest.starts_with("@st") {
        return Ok(None);
    }
    if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
        return Err(format!("unexpected {rest:?} after the series labels"));
    }
    Ok(Some(SeriesLine {
        labels,
        values: parse_values(rest)?,
    }))
}

/// A bare number as upstream's scalar lines read it: an integer in Go
/// syntax (`0x1F`, `0o17`, `017`, `0b101`, `1_000`) or a float (`1.5`,
/// `1e3`, `Inf`, `NaN`).
pub fn parse_number(s: &str) -> Option<f64> {
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let int = {
        let (radix, digits) = if let Some(d) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
            (16, d)
        } else if let Some(d) = body.strip_prefix("0o").or_else(|| body.strip_prefix("0O")) {
            (8, d)
        } else if let Some(d) = body.strip_prefix("0b").or_else(|| body.strip_prefix("0B")) {
            (2, d)
        } else if body.len() > 1 && body.starts_with('0') {
            (8, &body[1..])
        } else {
            (10, body)
        };
        let clean: String = digits.chars().filter(|c| *c != '_').collect();
        let ok_underscores = !digits.starts_with('_') || radix != 10;
        if clean.is_empty() || !ok_underscores || !digits.chars().all(|c| c == '_' || c.is_digit(radix)) {
            None
        } else {
            i64::from_str_radix(&clean, radix).ok()
        }
    };
    if let Some(i) = int {
        let v = i as f64;
        return Some(if neg { -v } else { v });
    }
    // Rust's float syntax is close to Go's ParseFloat (also Inf/NaN in any
    // case); hex floats with a `p` exponent are not accepted.
    s.parse::<f64>().ok()
}
