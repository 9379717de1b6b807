//! Build information for `csoc_*_build_info` and `/api/v1/status/buildinfo`:
//! the git revision and branch when the source is a git checkout (or when
//! `CSOC_BUILD_REVISION` / `CSOC_BUILD_BRANCH` say so, e.g. in a container
//! build without `.git`), "unknown" otherwise, and the rustc version. A build
//! from a tarball, without git, must not fail: every step falls back.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").current_dir(dir).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CSOC_BUILD_REVISION");
    println!("cargo:rerun-if-env-changed=CSOC_BUILD_BRANCH");
    let revision = std::env::var("CSOC_BUILD_REVISION")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| git(&dir, &["rev-parse", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let branch = std::env::var("CSOC_BUILD_BRANCH")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| git(&dir, &["rev-parse", "--abbrev-ref", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    // Rebuild when HEAD moves: HEAD itself (a branch switch) and the file of
    // the branch it points at (a commit). Only files that exist are named
    // (a missing one would make cargo rerun this script on every build).
    if let (Some(git_dir), Some(common_dir)) = (
        git(&dir, &["rev-parse", "--absolute-git-dir"]),
        git(&dir, &["rev-parse", "--git-common-dir"]),
    ) {
        let common = {
            let p = PathBuf::from(&common_dir);
            if p.is_absolute() { p } else { dir.join(p) }
        };
        let mut watch = vec![PathBuf::from(&git_dir).join("HEAD"), common.join("packed-refs")];
        if let Some(r) = git(&dir, &["symbolic-ref", "-q", "HEAD"]) {
            watch.push(common.join(r));
        }
        for p in watch.into_iter().filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=CSOC_BUILD_REVISION={revision}");
    println!("cargo:rustc-env=CSOC_BUILD_BRANCH={branch}");
    println!("cargo:rustc-env=CSOC_BUILD_RUSTC_VERSION={rustc_version}");
}
