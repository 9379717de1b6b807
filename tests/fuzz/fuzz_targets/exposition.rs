//! The agent's exposition parser (Prometheus text 0.0.4 and OpenMetrics 1.0).
//!
//! Input: the first byte's low bit picks the format (0: 0.0.4, 1:
//! OpenMetrics), the rest is the body. Beyond "no panic":
//! - an error names a line and column inside the body; it is `InvalidUtf8`
//!   exactly when the body is not UTF-8, and then points at the first bad
//!   byte; OpenMetrics-only errors never come from the 0.0.4 parser;
//! - a parsed sample has exactly one valid `__name__`, valid and unique
//!   label names sorted by name;
//! - writing the samples back as 0.0.4 text (escaped label values, values
//!   by `csoc_common::gofmt::format_f`, integer ms timestamps) and parsing
//!   that gives the same samples (values bit for bit, NaN as NaN).
#![no_main]

use csoc_common::exposition::{ErrorKind, Exposition, Format, ParseError, parse, parse_bytes};
use csoc_common::labels::{valid_label_name, valid_metric_name};
use csoc_common::gofmt::format_f as fmt_float;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else { return };
    let fmt = if sel & 1 == 0 { Format::Prometheus } else { Format::OpenMetrics };
    match parse_bytes(body, fmt) {
        Err(e) => check_error(body, fmt, &e),
        Ok(exp) => check_parsed(body, fmt, &exp),
    }
});

fn check_error(body: &[u8], fmt: Format, e: &ParseError) {
    let lines: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
    assert!(
        e.line >= 1 && e.line <= lines.len(),
        "line {} of {} lines: {e}",
        e.line,
        lines.len()
    );
    let line = lines[e.line - 1];
    let chars = String::from_utf8_lossy(line).chars().count();
    assert!(
        e.column >= 1 && e.column <= chars + 1,
        "column {} of a line of {chars} chars: {e}",
        e.column
    );
    let shown = e.to_string();
    assert!(shown.starts_with(&format!("line {} column {}: ", e.line, e.column)), "{shown}");
    match std::str::from_utf8(body) {
        Ok(_) => assert!(e.kind != ErrorKind::InvalidUtf8, "valid UTF-8 reported invalid: {e}"),
        Err(u) => {
            assert_eq!(e.kind, ErrorKind::InvalidUtf8, "{e}");
            // The column is the first bad byte's, counted in characters.
            let good = &body[..u.valid_up_to()];
            let start = good.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
            let want_line = good.iter().filter(|b| **b == b'\n').count() + 1;
            let want_col = std::str::from_utf8(&good[start..]).map_or(0, |s| s.chars().count()) + 1;
            assert_eq!((e.line, e.column), (want_line, want_col), "{e}");
        }
    }
    if fmt == Format::Prometheus {
        assert!(
            !matches!(
                e.kind,
                ErrorKind::MissingEof
                    | ErrorKind::AfterEof
                    | ErrorKind::BlankLine
                    | ErrorKind::NameNotInFamily(_)
                    | ErrorKind::UnitMismatch(_)
            ),
            "OpenMetrics-only error from the 0.0.4 parser: {e}"
        );
    }
}

fn check_parsed(body: &[u8], fmt: Format, exp: &Exposition) {
    let text = std::str::from_utf8(body).expect("parsed, so UTF-8");
    let nlines = text.split('\n').count();
    assert!(exp.samples.len() <= nlines, "{} samples from {nlines} lines", exp.samples.len());
    if fmt == Format::OpenMetrics {
        assert!(text.split('\n').any(|l| l == "# EOF"), "OpenMetrics without # EOF parsed");
    }
    for m in &exp.metadata {
        assert!(valid_metric_name(&m.name), "metadata name {:?}", m.name);
    }
    let mut again = String::new();
    for s in &exp.samples {
        let names: Vec<&str> = s.labels.iter().map(|(k, _)| k.as_str()).collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "labels not sorted and unique: {names:?}");
        let metric: Vec<&str> = s.labels.iter().filter(|(k, _)| k == "__name__").map(|(_, v)| v.as_str()).collect();
        assert!(metric.len() == 1 && valid_metric_name(metric[0]), "__name__ {metric:?}");
        again.push_str(metric[0]);
        again.push('{');
        for (k, v) in s.labels.iter().filter(|(k, _)| k != "__name__") {
            assert!(valid_label_name(k), "label name {k:?}");
            again.push_str(k);
            again.push_str("=\"");
            for ch in v.chars() {
                match ch {
                    '\\' => again.push_str("\\\\"),
                    '"' => again.push_str("\\\""),
                    '\n' => again.push_str("\\n"),
                    c => again.push(c),
                }
            }
            again.push_str("\",");
        }
        again.push_str("} ");
        again.push_str(&fmt_float(s.value));
        if let Some(t) = s.timestamp_ms {
            again.push(' ');
            again.push_str(&t.to_string());
        }
        again.push('\n');
    }
    let back = parse(&again, Format::Prometheus).unwrap_or_else(|e| panic!("re-written exposition does not parse: {e}\n{again}"));
    assert_eq!(back.samples.len(), exp.samples.len());
    for (a, b) in exp.samples.iter().zip(&back.samples) {
        assert_eq!(a.labels, b.labels);
        assert_eq!(a.timestamp_ms, b.timestamp_ms);
        assert!(
            a.value.to_bits() == b.value.to_bits() || (a.value.is_nan() && b.value.is_nan()),
            "value {} written as {} read back as {}",
            a.value,
            fmt_float(a.value),
            b.value
        );
    }
}
