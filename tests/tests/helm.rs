//! The Helm charts (deploy/helm/csoc-agent, deploy/helm/csoc-collector)
//! checked with the real Helm engine: runs tests/helm/test_charts.py in the
//! Python environment of tests/helm/venv.sh (helm-python-sdk, which embeds
//! Helm 4's Go SDK; kubernetes-validate; PyYAML; pinned in
//! tests/helm/requirements.txt), with the csoc-agent and csoc-collector just
//! built, so that every rendered config also passes `--check-config`.
//!
//! The script lints both charts, renders them for the default values and
//! every documented combination, validates every object against
//! Kubernetes' schemas and asserts what matters (see its docstring). Without
//! python3 (or its venv module) the test is skipped with a message, and
//! fails under `CSOC_REQUIRE_INTEROP=1` (as in CI, whose .ci/run makes the
//! environment first).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use csoc_tests::{bin, workspace};

fn skip_or_fail(msg: &str) {
    if std::env::var("CSOC_REQUIRE_INTEROP").as_deref() == Ok("1") {
        panic!("{msg}, and CSOC_REQUIRE_INTEROP=1 forbids skipping");
    }
    eprintln!("SKIPPED: {msg}");
}

/// Runs `cmd` to completion within `timeout` (killed by its PID otherwise);
/// returns its exit success and its stdout and stderr together.
fn run_bounded(mut cmd: Command, timeout: Duration) -> anyhow::Result<(bool, String)> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("out");
    let file = std::fs::File::create(&out)?;
    let mut child = cmd.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file).spawn()?;
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("{cmd:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Ok((status.success(), std::fs::read_to_string(&out)?))
}

/// The venv's python, made by tests/helm/venv.sh; `None` when python3 or its
/// venv module is missing.
fn venv_python() -> Option<PathBuf> {
    let python3 = std::env::var("PYTHON3").unwrap_or_else(|_| "python3".into());
    let has_venv = Command::new(&python3)
        .args(["-c", "import venv, ensurepip"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_venv {
        skip_or_fail(&format!(
            "{python3} with the venv module not found (Debian/Ubuntu: apt-get install python3 python3-venv)"
        ));
        return None;
    }
    let mut cmd = Command::new("bash");
    cmd.arg(workspace().join("tests/helm/venv.sh"));
    // Installing the environment the first time downloads ~100 MB from PyPI.
    let (ok, out) = run_bounded(cmd, Duration::from_secs(900)).expect("running tests/helm/venv.sh");
    assert!(ok, "tests/helm/venv.sh failed:\n{out}");
    let python = out.lines().last().map(PathBuf::from).unwrap_or_default();
    assert!(python.is_file(), "tests/helm/venv.sh printed no python: {out}");
    Some(python)
}

#[test]
fn helm_charts_lint_render_validate_and_pass_check_config() {
    let Some(python) = venv_python() else { return };
    let mut cmd = Command::new(&python);
    cmd.arg(workspace().join("tests/helm/test_charts.py"))
        .env("CSOC_AGENT_BIN", bin("csoc-agent"))
        .env("CSOC_COLLECTOR_BIN", bin("csoc-collector"));
    let (ok, out) = run_bounded(cmd, Duration::from_secs(600)).expect("running tests/helm/test_charts.py");
    println!("{out}");
    assert!(ok, "tests/helm/test_charts.py failed:\n{out}");
    // The script's own summary: every check ran and passed, none skipped
    // the binaries' --check-config.
    let summary = out.lines().rev().find(|l| l.contains(" passed, ")).unwrap_or_default();
    assert!(summary.ends_with(" passed, 0 failed"), "summary: {summary:?}");
    assert!(!out.contains("SKIPPED: CSOC_"), "the --check-config tests were skipped:\n{out}");
}
