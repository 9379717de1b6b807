//! Central agent configuration: the rules the collector (which reads
//! `--agent-config-dir` and pushes) and the agent (which merges, validates
//! and applies) share.
//!
//! - A central file is a YAML mapping with at most the keys
//!   [`CENTRAL_KEYS`] (`interval`, `sources`), in the schema of the agent
//!   config file. Everything else is refused with the file's line: the
//!   [`LOCAL_ONLY`] settings (collector address, token, TLS, spool, listen
//!   address, commons name, agent name, kubeconfig, labels, relabelling, log
//!   format) stay in each agent's local file.
//! - Files are merged with [`merge`]: mappings key by key, recursively; any
//!   other value (a list, a scalar) replaces the earlier one whole. The
//!   agent merges the pushed result over its local file the same way.
//! - **Paths.** A pushed config may not make the agent read a file the local
//!   configuration does not already use: every string under a path-like key
//!   ([`is_path_key`]: `path`, `paths`, `file`, `files`, keys ending in `_file`, `_files`,
//!   `_dir` or `_path` except `metrics_path`, and `kubeconfig`) in a pushed
//!   config must be one of the strings under a path-like key of the local
//!   file (or of the flags that set paths). See [`foreign_paths`].
//! - Sizes: a file at most [`MAX_FILE_BYTES`], a pushed body at most
//!   [`MAX_BODY_BYTES`].

use serde_yaml_ng::{Mapping, Value};

/// The top-level keys a central file may set.
pub const CENTRAL_KEYS: &[&str] = &["interval", "sources"];

/// Top-level keys of the agent config that stay local, with why.
pub const LOCAL_ONLY: &[(&str, &str)] = &[
    ("collector", "the collector address"),
    ("token", "the agent's credentials"),
    ("token_file", "the agent's credentials"),
    ("tls", "the TLS settings to the collector"),
    ("spool_dir", "the spool"),
    ("spool_max_bytes", "the spool"),
    ("http_listen", "the agent's listen address"),
    ("commons_name", "the agent's commons"),
    ("agent_name", "the agent's identity"),
    ("kubeconfig", "the agent's Kubernetes credentials"),
    ("external_labels", "the agent's identity labels"),
    ("relabel_configs", "the agent's own relabelling"),
    ("log_format", "the agent's logging"),
];

/// Largest central file.
pub const MAX_FILE_BYTES: usize = 256 * 1024;

/// Largest pushed body (the merged config for one agent).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A problem in a central file or body: where (line, 1-based, when known)
/// and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The line, when known.
    pub line: Option<usize>,
    /// Why.
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

fn problem(line: Option<usize>, reason: impl Into<String>) -> Problem {
    Problem {
        line,
        reason: reason.into(),
    }
}

/// The line of top-level `key:` in `text` (block style), if any.
fn key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let rest = l
                .strip_prefix(key)
                .or_else(|| l.strip_prefix(&format!("\"{key}\"")))
                .or_else(|| l.strip_prefix(&format!("'{key}'")));
            rest.is_some_and(|r| r.trim_start().starts_with(':'))
        })
        .map(|i| i + 1)
        .or_else(|| text.lines().position(|l| l.contains(key)).map(|i| i + 1))
}

/// Parses one central file or pushed body: a mapping (empty text: an empty
/// one) whose top-level keys are [`CENTRAL_KEYS`].
pub fn parse(text: &str, max_bytes: usize) -> Result<Mapping, Problem> {
    if text.len() > max_bytes {
        return Err(problem(None, format!("{} bytes, over the limit of {max_bytes}", text.len())));
    }
    if text.trim().is_empty() {
        return Ok(Mapping::new());
    }
    let v: Value = serde_yaml_ng::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        let msg = e.to_string();
        // The message often ends with " at line L column C"; keep the reason.
        let reason = match msg.find(" at line ") {
            Some(i) if line.is_some() => msg[..i].to_string(),
            _ => msg,
        };
        problem(line, format!("not valid YAML: {reason}"))
    })?;
    let m = match v {
        Value::Null => return Ok(Mapping::new()),
        Value::Mapping(m) => m,
        _ => return Err(problem(Some(1), "expected a mapping (interval:, sources:) at the top level")),
    };
    for (k, v) in &m {
        let Some(k) = k.as_str() else {
            return Err(problem(None, format!("top-level key {k:?} is not a string")));
        };
        if let Some((_, what)) = LOCAL_ONLY.iter().find(|(n, _)| *n == k) {
            return Err(problem(
                key_line(text, k),
                format!("{k:?} is local-only ({what}): it stays in each agent's own config file and cannot be set centrally"),
            ));
        }
        if !CENTRAL_KEYS.contains(&k) {
            return Err(problem(
                key_line(text, k),
                format!("unknown top-level key {k:?}: a central file may set {}", CENTRAL_KEYS.join(" and ")),
            ));
        }
        let ok = match k {
            "sources" => matches!(v, Value::Mapping(_) | Value::Null),
            _ => matches!(v, Value::String(_) | Value::Number(_)),
        };
        if !ok {
            let want = if k == "sources" { "a mapping" } else { "a duration like 15s" };
            return Err(problem(key_line(text, k), format!("{k:?} must be {want}")));
        }
    }
    Ok(m)
}

/// Merges `over` into `base`: mappings key by key (recursively), anything
/// else replaced whole. A null in `over` leaves `base` unchanged.
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (_, Value::Null) => {}
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Whether a key names a file or directory (see the module doc).
pub fn is_path_key(key: &str) -> bool {
    key == "path"
        || key == "paths"
        || key == "file"
        || key == "files"
        || key == "kubeconfig"
        || key.ends_with("_file")
        || key.ends_with("_files")
        || key.ends_with("_dir")
        || (key.ends_with("_path") && key != "metrics_path")
}

/// Every (field, string) under a path-like key of `v`, fields dotted.
pub fn path_values(v: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, field: &str, under_path: bool, out: &mut Vec<(String, String)>) {
        match v {
            Value::Mapping(m) => {
                for (k, v) in m {
                    let k = k.as_str().map(str::to_string).unwrap_or_else(|| format!("{k:?}"));
                    let f = if field.is_empty() { k.clone() } else { format!("{field}.{k}") };
                    walk(v, &f, is_path_key(&k), out);
                }
            }
            Value::Sequence(s) => {
                for (i, v) in s.iter().enumerate() {
                    walk(v, &format!("{field}[{i}]"), under_path, out);
                }
            }
            Value::String(s) if under_path && !s.is_empty() => out.push((field.to_string(), s.clone())),
            Value::Tagged(t) => walk(&t.value, field, under_path, out),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, "", false, &mut out);
    out
}

/// The paths in `pushed` that `allowed` (the local configuration's paths)
/// does not contain, with their fields.
pub fn foreign_paths(pushed: &Value, allowed: &[String]) -> Vec<(String, String)> {
    path_values(pushed)
        .into_iter()
        .filter(|(_, p)| !allowed.iter().any(|a| a == p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_only_keys_are_refused_with_their_line() {
        let e = parse("interval: 5s\nsources: {}\ncollector: http://evil:9301\n", MAX_FILE_BYTES).expect_err("local-only");
        assert_eq!(e.line, Some(3));
        assert!(e.reason.contains("\"collector\" is local-only"), "{e}");
        for (k, _) in LOCAL_ONLY {
            let e = parse(&format!("{k}: x\n"), MAX_FILE_BYTES).expect_err(k);
            assert!(e.reason.contains("local-only"), "{k}: {e}");
        }
        let e = parse("interval: 5s\nsourcez: {}\n", MAX_FILE_BYTES).expect_err("unknown");
        assert_eq!(e.line, Some(2));
        assert!(e.reason.contains("unknown top-level key"), "{e}");
    }

    #[test]
    fn syntax_errors_and_shapes_are_named() {
        let e = parse("sources:\n  host: {enabled: true\n", MAX_FILE_BYTES).expect_err("syntax");
        assert!(e.line.is_some() && e.reason.contains("not valid YAML"), "{e:?}");
        let e = parse("- a\n", MAX_FILE_BYTES).expect_err("list");
        assert!(e.reason.contains("mapping"), "{e}");
        let e = parse("sources: [1]\n", MAX_FILE_BYTES).expect_err("shape");
        assert_eq!(e.line, Some(1));
        let e = parse(&"#".repeat(100), 10).expect_err("size");
        assert!(e.reason.contains("over the limit"), "{e}");
        assert!(parse("", 10).expect("empty").is_empty());
        assert!(parse("# only a comment\n", MAX_FILE_BYTES).expect("comment").is_empty());
    }

    #[test]
    fn merge_is_deep_for_mappings_and_replaces_the_rest() {
        let mut a: Value =
            serde_yaml_ng::from_str("interval: 15s\nsources: {host: {enabled: true, job: h}, scrape: {jobs: [a]}}").expect("a");
        let b: Value = serde_yaml_ng::from_str("sources: {host: {job: node}, scrape: {jobs: [b, c]}}").expect("b");
        merge(&mut a, b);
        let want: Value =
            serde_yaml_ng::from_str("interval: 15s\nsources: {host: {enabled: true, job: node}, scrape: {jobs: [b, c]}}").expect("want");
        assert_eq!(a, want);
    }

    #[test]
    fn pushed_paths_must_be_local_ones() {
        let pushed: Value = serde_yaml_ng::from_str(
            "sources:\n  revproxy_log: {enabled: true, path: /var/log/a.log}\n  scrape:\n    jobs:\n      - job_name: x\n        metrics_path: /metrics\n        basic_auth: {password_file: /etc/shadow}\n",
        )
        .expect("yaml");
        let found = foreign_paths(&pushed, &["/var/log/a.log".to_string()]);
        assert_eq!(
            found,
            vec![(
                "sources.scrape.jobs[0].basic_auth.password_file".to_string(),
                "/etc/shadow".to_string()
            )]
        );
        assert!(foreign_paths(&pushed, &["/var/log/a.log".into(), "/etc/shadow".into()]).is_empty());
        assert!(is_path_key("ca_file") && is_path_key("procfs_path") && !is_path_key("metrics_path"));
    }
}
