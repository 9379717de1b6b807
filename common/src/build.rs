//! Build information, set by the crate's build script: the git revision and
//! branch ("unknown" outside a git checkout unless `CSOC_BUILD_REVISION` /
//! `CSOC_BUILD_BRANCH` were set at build time) and the rustc version. Both
//! binaries publish it as `csoc_<binary>_build_info{version, revision,
//! branch, rustc_version}`; the collector also in `/api/v1/status/buildinfo`
//! (`revision`, `branch`, and `goVersion` holding the rustc version, where
//! Prometheus has its Go version).

use prometheus_client::metrics::info::Info;

/// The workspace version (all crates share it).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit the binary was built from, or "unknown".
pub const REVISION: &str = env!("CSOC_BUILD_REVISION");
/// The git branch the binary was built from, or "unknown".
pub const BRANCH: &str = env!("CSOC_BUILD_BRANCH");
/// The rustc version that built it (e.g. `1.85.0`), or "unknown".
pub const RUSTC_VERSION: &str = env!("CSOC_BUILD_RUSTC_VERSION");

/// The labels of a `*_build_info` metric.
pub fn labels() -> Vec<(String, String)> {
    vec![
        ("version".to_string(), VERSION.to_string()),
        ("revision".to_string(), REVISION.to_string()),
        ("branch".to_string(), BRANCH.to_string()),
        ("rustc_version".to_string(), RUSTC_VERSION.to_string()),
    ]
}

/// The `*_build_info` metric (register it as `build`, with a `_info` suffix
/// added by the registry, under the binary's prefix).
pub fn info() -> Info<Vec<(String, String)>> {
    Info::new(labels())
}

#[cfg(test)]
mod tests {
    #[test]
    fn never_empty() {
        for (k, v) in super::labels() {
            assert!(!v.is_empty(), "{k} is empty");
        }
        assert!(super::RUSTC_VERSION.starts_with('1') || super::RUSTC_VERSION == "unknown");
    }
}
