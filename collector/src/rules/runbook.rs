//! Absolute `runbook_url`s. The rule pack (deploy/rules/gen3.yml) writes
//! each alert's `runbook_url` as an absolute link to its section of
//! RUNBOOK.md in the project's repository ([`DEFAULT_RUNBOOK_BASE_URL`]),
//! so the file stays valid for `promtool check rules` and works as it is in
//! a Prometheus. The collector rewrites them, by default onto its own copy
//! of the runbook (`<external URL>/runbook`, the file built into the binary,
//! always the version of the rules that fired); a site that publishes the
//! runbook elsewhere (a wiki, its own fork) sets `runbook_base_url`
//! (`--rules.runbook-base-url`) instead: every
//! alert's `runbook_url` that starts with the default base, or is relative
//! (`deploy/rules/RUNBOOK.md#x` or `#x`), is rewritten onto that base when
//! the alert's annotations are expanded, so the links in Slack, PagerDuty,
//! Alertmanager and the console are absolute and point at the site's copy.
//! Any other URL (a rule file's own absolute link) is left alone.

/// The rule pack's runbook in the project's repository.
pub const DEFAULT_RUNBOOK_BASE_URL: &str = "https://github.com/csoc-watch/csoc-watch/blob/main/deploy/rules/RUNBOOK.md";

/// The path of the runbook relative to the repository root (the pack's
/// links before they were absolute).
const RELATIVE_RUNBOOK: &str = "deploy/rules/RUNBOOK.md";

/// `url` rebased onto `base` (see the module docs); `base` empty: unchanged.
pub fn rebase(url: &str, base: &str) -> String {
    if base.is_empty() {
        return url.to_string();
    }
    let base = base.trim_end_matches('/');
    let rest = if let Some(r) = url.strip_prefix(DEFAULT_RUNBOOK_BASE_URL) {
        r
    } else if let Some(r) = url.strip_prefix(RELATIVE_RUNBOOK) {
        r
    } else if url.starts_with('#') {
        url
    } else {
        return url.to_string();
    };
    if !(rest.is_empty() || rest.starts_with('#')) {
        // e.g. the default base followed by more path: not our runbook.
        return url.to_string();
    }
    format!("{base}{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebases_the_default_and_relative_links_only() {
        let wiki = "https://wiki.example.org/csoc/runbook";
        let d = format!("{DEFAULT_RUNBOOK_BASE_URL}#gen3servicedown");
        assert_eq!(rebase(&d, wiki), format!("{wiki}#gen3servicedown"));
        assert_eq!(rebase(&d, &format!("{wiki}/")), format!("{wiki}#gen3servicedown"));
        assert_eq!(rebase(&d, DEFAULT_RUNBOOK_BASE_URL), d);
        assert_eq!(rebase("deploy/rules/RUNBOOK.md#x", wiki), format!("{wiki}#x"));
        assert_eq!(rebase("#x", wiki), format!("{wiki}#x"));
        assert_eq!(rebase("https://other.example/rb#x", wiki), "https://other.example/rb#x");
        assert_eq!(
            rebase(&format!("{DEFAULT_RUNBOOK_BASE_URL}.bak#x"), wiki),
            format!("{DEFAULT_RUNBOOK_BASE_URL}.bak#x")
        );
        assert_eq!(rebase(&d, ""), d, "no base: unchanged");
    }

    /// The shipped pack links only the default base, and every anchor it
    /// links exists in RUNBOOK.md (GitHub's anchors: lower case).
    #[test]
    fn the_packs_links_are_absolute_and_their_sections_exist() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rules");
        let pack = std::fs::read_to_string(root.join("gen3.yml")).expect("gen3.yml");
        let runbook = std::fs::read_to_string(root.join("RUNBOOK.md")).expect("RUNBOOK.md");
        let anchors: std::collections::HashSet<String> = runbook
            .lines()
            .filter_map(|l| l.strip_prefix("## "))
            .map(|h| h.trim().to_lowercase())
            .collect();
        let mut n = 0;
        for line in pack.lines() {
            let Some(v) = line.trim().strip_prefix("runbook_url:") else {
                continue;
            };
            let v = v.trim().trim_matches('"');
            let anchor = v
                .strip_prefix(DEFAULT_RUNBOOK_BASE_URL)
                .and_then(|r| r.strip_prefix('#'))
                .unwrap_or_else(|| panic!("runbook_url {v} does not start with {DEFAULT_RUNBOOK_BASE_URL}#"));
            assert!(anchors.contains(anchor), "RUNBOOK.md has no section for #{anchor}");
            n += 1;
        }
        assert!(n >= 20, "only {n} runbook_urls found");
    }
}
