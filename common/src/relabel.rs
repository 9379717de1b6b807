//! Prometheus `relabel_configs` semantics, shared by the scrape source (target
//! and metric relabelling) the agent pipeline and the collector's
//! remote-write `write_relabel_configs`.
//!
//! A [`RelabelConfig`] is read from YAML with Prometheus's field names and
//! defaults (`separator: ";"`, `regex: "(.*)"`, `replacement: "$1"`,
//! `action: replace`) and validated when it is read, with errors naming the
//! field. The regex is fully anchored (`^(?s:regex)$`). Replacements expand
//! `$1`, `${1}`, `$name`, `${name}` (and `$$`) like Go's `Regexp.Expand`.
//!
//! Actions: `replace`, `keep`, `drop`, `keepequal`, `dropequal`, `hashmod`
//! (the low 8 bytes, big-endian, of the MD5 of the joined source values,
//! modulo `modulus`, as Prometheus computes it), `labelmap`, `labeldrop`,
//! `labelkeep`, `lowercase`, `uppercase`. A label set to the empty string is
//! removed.

use md5::{Digest, Md5};
use regex::Regex;
use serde::Deserialize;

use crate::labels::{Labels, set_label, valid_label_name};

/// What a relabel step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Sets `target_label` to the expanded replacement when regex matches.
    Replace,
    /// Drops the set unless regex matches the joined source values.
    Keep,
    /// Drops the set when regex matches the joined source values.
    Drop,
    /// Keeps the set only if the joined source values equal `target_label`'s value.
    KeepEqual,
    /// Drops the set if the joined source values equal `target_label`'s value.
    DropEqual,
    /// Sets `target_label` to md5(joined source values) mod `modulus`.
    HashMod,
    /// Copies labels whose name matches regex to the expanded replacement name.
    LabelMap,
    /// Removes labels whose name matches regex.
    LabelDrop,
    /// Removes labels whose name does not match regex.
    LabelKeep,
    /// Sets `target_label` to the lowercased joined source values.
    Lowercase,
    /// Sets `target_label` to the uppercased joined source values.
    Uppercase,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelabelConfig {
    #[serde(default)]
    source_labels: Vec<String>,
    separator: Option<String>,
    regex: Option<String>,
    modulus: Option<u64>,
    target_label: Option<String>,
    replacement: Option<String>,
    action: Option<Action>,
}

/// One validated relabel step.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawRelabelConfig")]
pub struct RelabelConfig {
    /// Labels whose values are joined with `separator`.
    pub source_labels: Vec<String>,
    /// Joins the source values (default `;`).
    pub separator: String,
    /// The anchored regex.
    regex: Regex,
    /// The regex as written (default `(.*)`).
    pub regex_src: String,
    /// For `hashmod`.
    pub modulus: u64,
    /// Label to write (may contain `$1` references for `replace`).
    pub target_label: String,
    /// Template of the new value (default `$1`).
    pub replacement: String,
    /// The action.
    pub action: Action,
}

impl PartialEq for RelabelConfig {
    /// Equal when written the same (a reload keeps what did not change).
    fn eq(&self, o: &Self) -> bool {
        self.source_labels == o.source_labels
            && self.separator == o.separator
            && self.regex_src == o.regex_src
            && self.modulus == o.modulus
            && self.target_label == o.target_label
            && self.replacement == o.replacement
            && self.action == o.action
    }
}

impl TryFrom<RawRelabelConfig> for RelabelConfig {
    type Error = String;

    fn try_from(r: RawRelabelConfig) -> Result<Self, String> {
        let action = r.action.unwrap_or(Action::Replace);
        let regex_src = r.regex.clone().unwrap_or_else(|| "(.*)".to_string());
        let regex = Regex::new(&format!("^(?s:{regex_src})$")).map_err(|e| format!("regex {regex_src:?}: {e}"))?;
        for l in &r.source_labels {
            if !valid_label_name(l) {
                return Err(format!("source_labels: {l:?} is not a valid label name"));
            }
        }
        let target = r.target_label.clone().unwrap_or_default();
        let name = format!("{action:?}").to_lowercase();
        let needs_target = matches!(
            action,
            Action::Replace | Action::HashMod | Action::Lowercase | Action::Uppercase | Action::KeepEqual | Action::DropEqual
        );
        if needs_target && target.is_empty() {
            return Err(format!("target_label is required for action {name}"));
        }
        // For replace, a template like "${1}_x" is checked after expansion.
        let templated = action == Action::Replace && target.contains('$');
        if needs_target && !templated && !valid_label_name(&target) {
            return Err(format!("target_label: {target:?} is not a valid label name"));
        }
        if action == Action::HashMod && r.modulus.unwrap_or(0) == 0 {
            return Err("modulus is required (and non-zero) for action hashmod".into());
        }
        if matches!(action, Action::LabelDrop | Action::LabelKeep)
            && (!r.source_labels.is_empty()
                || r.target_label.is_some()
                || r.modulus.is_some()
                || r.separator.is_some()
                || r.replacement.is_some())
        {
            return Err(format!(
                "action {name} takes only regex (source_labels, target_label, modulus, separator and replacement must be unset)"
            ));
        }
        if matches!(action, Action::KeepEqual | Action::DropEqual)
            && (r.regex.is_some() || r.modulus.is_some() || r.separator.is_some() || r.replacement.is_some())
        {
            return Err(format!("action {name} takes only source_labels and target_label"));
        }
        if matches!(
            action,
            Action::KeepEqual | Action::DropEqual | Action::Keep | Action::Drop | Action::HashMod
        ) && r.source_labels.is_empty()
        {
            return Err(format!("source_labels is required for action {name}"));
        }
        if action == Action::LabelMap {
            let rep = r.replacement.as_deref().unwrap_or("$1");
            if !rep.contains('$') && !valid_label_name(rep) {
                return Err(format!("replacement: {rep:?} is not a valid label name for action labelmap"));
            }
        }
        Ok(RelabelConfig {
            source_labels: r.source_labels,
            separator: r.separator.unwrap_or_else(|| ";".to_string()),
            regex,
            regex_src,
            modulus: r.modulus.unwrap_or(0),
            target_label: target,
            replacement: r.replacement.unwrap_or_else(|| "$1".to_string()),
            action,
        })
    }
}

fn get<'a>(labels: &'a Labels, name: &str) -> &'a str {
    labels
        .binary_search_by(|(k, _)| k.as_str().cmp(name))
        .map_or("", |i| labels[i].1.as_str())
}

fn set_or_delete(labels: &mut Labels, name: &str, value: &str) {
    if value.is_empty() {
        if let Ok(i) = labels.binary_search_by(|(k, _)| k.as_str().cmp(name)) {
            labels.remove(i);
        }
    } else {
        set_label(labels, name, value);
    }
}

/// Prometheus's hashmod: the last 8 bytes of md5(`value`), big-endian, mod `modulus`.
pub fn hashmod(value: &str, modulus: u64) -> u64 {
    let d = Md5::digest(value.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[8..16]);
    u64::from_be_bytes(b) % modulus
}

/// Applies `cfgs` in order to the sorted label set `labels`; false when the
/// set is dropped (then `labels` is left in an unspecified state).
pub fn relabel(labels: &mut Labels, cfgs: &[RelabelConfig]) -> bool {
    for c in cfgs {
        if !relabel_one(labels, c) {
            return false;
        }
    }
    true
}

fn relabel_one(labels: &mut Labels, c: &RelabelConfig) -> bool {
    let joined = || {
        let mut v = String::new();
        for (i, l) in c.source_labels.iter().enumerate() {
            if i > 0 {
                v.push_str(&c.separator);
            }
            v.push_str(get(labels, l));
        }
        v
    };
    match c.action {
        Action::Keep => c.regex.is_match(&joined()),
        Action::Drop => !c.regex.is_match(&joined()),
        Action::KeepEqual => joined() == get(labels, &c.target_label),
        Action::DropEqual => joined() != get(labels, &c.target_label),
        Action::Replace => {
            let val = joined();
            if let Some(caps) = c.regex.captures(&val) {
                let mut target = String::new();
                caps.expand(&c.target_label, &mut target);
                if !valid_label_name(&target) {
                    return true;
                }
                let mut res = String::new();
                caps.expand(&c.replacement, &mut res);
                set_or_delete(labels, &target, &res);
            }
            true
        }
        Action::Lowercase => {
            let v = joined().to_lowercase();
            set_or_delete(labels, &c.target_label, &v);
            true
        }
        Action::Uppercase => {
            let v = joined().to_uppercase();
            set_or_delete(labels, &c.target_label, &v);
            true
        }
        Action::HashMod => {
            let v = hashmod(&joined(), c.modulus).to_string();
            set_label(labels, &c.target_label, &v);
            true
        }
        Action::LabelMap => {
            let mut adds = Vec::new();
            for (k, v) in labels.iter() {
                if let Some(caps) = c.regex.captures(k) {
                    let mut n = String::new();
                    caps.expand(&c.replacement, &mut n);
                    adds.push((n, v.clone()));
                }
            }
            for (k, v) in adds {
                if valid_label_name(&k) {
                    set_or_delete(labels, &k, &v);
                }
            }
            true
        }
        Action::LabelDrop => {
            labels.retain(|(k, _)| !c.regex.is_match(k));
            true
        }
        Action::LabelKeep => {
            labels.retain(|(k, _)| c.regex.is_match(k));
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfgs(y: &str) -> Vec<RelabelConfig> {
        serde_yaml_ng::from_str(y).expect("relabel yaml")
    }

    fn ls(pairs: &[(&str, &str)]) -> Labels {
        crate::labels::from_pairs(pairs)
    }

    fn err(y: &str) -> String {
        serde_yaml_ng::from_str::<Vec<RelabelConfig>>(y)
            .expect_err("should fail")
            .to_string()
    }

    #[test]
    fn replace_defaults_and_expansion() {
        let c = cfgs(
            "- source_labels: [a, b]\n  regex: '(.*);(?P<second>.*)'\n  target_label: c\n  replacement: '${1}-$second-$$'\n- source_labels: [a]\n  target_label: d\n- source_labels: [a]\n  regex: 'x(.*)'\n  target_label: nomatch\n",
        );
        let mut l = ls(&[("a", "foo"), ("b", "bar")]);
        assert!(relabel(&mut l, &c));
        assert_eq!(l, ls(&[("a", "foo"), ("b", "bar"), ("c", "foo-bar-$"), ("d", "foo")]));
        // Anchored: "oo" does not match inside "foo".
        let c = cfgs("- source_labels: [a]\n  regex: oo\n  target_label: x\n  replacement: y\n");
        let mut l = ls(&[("a", "foo")]);
        relabel(&mut l, &c);
        assert!(!has(&l, "x"));
        // Empty replacement deletes; target label templates.
        let c = cfgs(
            "- source_labels: [a]\n  regex: '(.*)'\n  target_label: 'lbl_${1}'\n  replacement: v\n- source_labels: [zz]\n  target_label: a\n",
        );
        let mut l = ls(&[("a", "foo")]);
        relabel(&mut l, &c);
        assert_eq!(l, ls(&[("lbl_foo", "v")]));
    }

    fn has(l: &Labels, k: &str) -> bool {
        l.iter().any(|(n, _)| n == k)
    }

    #[test]
    fn keep_drop_keepequal_dropequal() {
        let keep = cfgs("- source_labels: [job]\n  regex: node|fence\n  action: keep\n");
        assert!(relabel(&mut ls(&[("job", "node")]), &keep));
        assert!(!relabel(&mut ls(&[("job", "nodes")]), &keep));
        assert!(!relabel(&mut ls(&[]), &keep));
        let drop = cfgs("- source_labels: [__name__]\n  regex: go_.*\n  action: drop\n");
        assert!(!relabel(&mut ls(&[("__name__", "go_gc")]), &drop));
        assert!(relabel(&mut ls(&[("__name__", "up")]), &drop));
        let ke = cfgs("- source_labels: [a]\n  target_label: b\n  action: keepequal\n");
        assert!(relabel(&mut ls(&[("a", "1"), ("b", "1")]), &ke));
        assert!(!relabel(&mut ls(&[("a", "1"), ("b", "2")]), &ke));
        let de = cfgs("- source_labels: [a]\n  target_label: b\n  action: dropequal\n");
        assert!(!relabel(&mut ls(&[("a", "1"), ("b", "1")]), &de));
        assert!(relabel(&mut ls(&[("a", "1"), ("b", "2")]), &de));
    }

    #[test]
    fn hashmod_matches_prometheus() {
        // Expected values computed independently (Python):
        // int.from_bytes(hashlib.md5(b"foo").digest()[8:], "big").
        assert_eq!(hashmod("foo", u64::MAX), 0xedef_654f_ccc4_a4d8_u64);
        assert_eq!(hashmod("foo", 10), 0xedef_654f_ccc4_a4d8_u64 % 10);
        assert_eq!(hashmod("foo;bar", 1000), 750);
        let c = cfgs("- source_labels: [a, b]\n  target_label: shard\n  modulus: 1000\n  action: hashmod\n");
        let mut l = ls(&[("a", "foo"), ("b", "bar")]);
        relabel(&mut l, &c);
        let want = hashmod("foo;bar", 1000).to_string();
        assert_eq!(l, ls(&[("a", "foo"), ("b", "bar"), ("shard", &want)]));
    }

    #[test]
    fn labelmap_labeldrop_labelkeep_case() {
        let c = cfgs("- regex: __meta_kubernetes_pod_label_(.+)\n  action: labelmap\n");
        let mut l = ls(&[("__meta_kubernetes_pod_label_app", "fence"), ("x", "1")]);
        relabel(&mut l, &c);
        assert_eq!(l, ls(&[("__meta_kubernetes_pod_label_app", "fence"), ("app", "fence"), ("x", "1")]));
        let c = cfgs("- regex: __meta_.*\n  action: labeldrop\n");
        relabel(&mut l, &c);
        assert_eq!(l, ls(&[("app", "fence"), ("x", "1")]));
        let c = cfgs("- regex: app\n  action: labelkeep\n");
        relabel(&mut l, &c);
        assert_eq!(l, ls(&[("app", "fence")]));
        let c = cfgs(
            "- source_labels: [app]\n  target_label: up\n  action: uppercase\n- source_labels: [up]\n  target_label: low\n  action: lowercase\n",
        );
        relabel(&mut l, &c);
        assert_eq!(l, ls(&[("app", "fence"), ("low", "fence"), ("up", "FENCE")]));
    }

    #[test]
    fn invalid_configs_name_the_field() {
        assert!(err("- source_labels: [a]\n  regex: '('\n  target_label: b\n").contains("regex"));
        assert!(err("- source_labels: [a]\n").contains("target_label is required"));
        assert!(err("- source_labels: [a]\n  target_label: '1x'\n").contains("target_label"));
        assert!(err("- source_labels: ['a-b']\n  action: keep\n").contains("source_labels"));
        assert!(err("- source_labels: [a]\n  target_label: b\n  action: hashmod\n").contains("modulus"));
        assert!(err("- source_labels: [a]\n  regex: x\n  action: labeldrop\n").contains("labeldrop takes only regex"));
        assert!(err("- source_labels: [a]\n  action: frobnicate\n").contains("frobnicate"));
        assert!(err("- source_labels: [a]\n  target: b\n").contains("unknown field"));
        assert!(err("- regex: x\n  action: keep\n").contains("source_labels is required"));
        assert!(err("- regex: (.*)\n  replacement: 'a-b'\n  action: labelmap\n").contains("replacement"));
    }
}
