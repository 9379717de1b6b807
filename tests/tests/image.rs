//! The container images (deploy/container/Containerfile) with a real
//! container runtime: podman (its build is buildah's) and runc.
//!
//! No image can be pulled on these machines, so the test builds the final
//! stages (`collector`, `agent`) of the user-facing Containerfile on a base
//! made here by deploy/container/make-local-base.sh (the binaries' shared
//! libraries, CA certificates, a nonroot user), with the Containerfile's
//! `binaries` stage replaced (`--build-context binaries=DIR`) by a directory
//! laid out by deploy/container/stage.sh, the script the Containerfile's own
//! build stage runs; the `build` stage is then skipped. The binaries are
//! the test profile's (`bin()`: debug under `cargo test`), not release
//! ones: building the release profile here would cost minutes of CI per
//! run, and what is tested (the layout, the user, the read-only root, the
//! volumes, the libraries the base must carry) does not depend on the
//! profile. The image sizes printed are therefore those of debug images;
//! deploy/container/README.md gives the release ones.
//!
//! Then: the collector's image runs as an arbitrary UID in group 0 (as
//! OpenShift runs it), the agent's as the image's user 65532, both with a
//! read-only root filesystem on the host network (127.0.0.1 only), and the
//! agent's samples must reach the collector. Both must stop cleanly on
//! SIGTERM as PID 1.
//!
//! podman runs with its own storage, run and tmp directories under a temp
//! dir (vfs driver: nothing of the machine's podman state is touched), runc
//! as the runtime, and a containers.conf with `default_ulimits = []` (crun,
//! and runc with the default ulimits, fail in this sandbox). Every container
//! and image it makes is removed at the end, by name. Skips with a message
//! when podman or runc is missing, or podman cannot run here (rootless
//! without subuids), and fails instead under `CSOC_REQUIRE_INTEROP=1`.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use csoc_tests::*;
use serde_json::Value;

const TOKEN: &str = "image-test-token-0123456789abcdef";
const AGENT_NAME: &str = "image-test-agent";
/// Time limit of one build (vfs copies every layer in full).
const BUILD_TIMEOUT: Duration = Duration::from_secs(300);
/// Time limit of the other podman commands.
const PODMAN_TIMEOUT: Duration = Duration::from_secs(60);
/// What the base adds to the binary at most: glibc, libgcc_s, libm, the
/// loader, the CA bundle, the default config, the rule pack and dashboards.
const MAX_OVERHEAD_BYTES: u64 = 16 << 20;

fn require_interop() -> bool {
    std::env::var("CSOC_REQUIRE_INTEROP").as_deref() == Ok("1")
}

/// Skips (returns None, with a message) or, under CSOC_REQUIRE_INTEROP=1,
/// panics.
fn skip(msg: &str) -> Option<Podman> {
    if require_interop() {
        panic!("{msg}, and CSOC_REQUIRE_INTEROP=1 forbids skipping");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

fn in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|f| f.is_file())
}

/// podman with per-test storage; removes what it started and built on drop.
struct Podman {
    program: PathBuf,
    dir: tempfile::TempDir,
    /// Its global options (storage, runtime...), shared with make-local-base.sh.
    global: Vec<String>,
    containers: RefCell<Vec<String>>,
    images: RefCell<Vec<String>>,
}

impl Podman {
    /// podman and runc from PATH, set up in a fresh temp dir; None when the
    /// test must skip.
    fn new() -> anyhow::Result<Option<Podman>> {
        let Some(program) = in_path("podman") else {
            return Ok(skip(
                "podman not found in PATH (Debian/Ubuntu: apt-get install podman buildah runc)",
            ));
        };
        if in_path("runc").is_none() && !Path::new("/usr/sbin/runc").is_file() {
            return Ok(skip("runc not found (Debian/Ubuntu: apt-get install runc)"));
        }
        // Short names: conmon's attach socket path must fit in 108 bytes.
        let dir = tempfile::Builder::new().prefix("csoc-img").tempdir_in("/tmp")?;
        let d = dir.path();
        std::fs::write(d.join("containers.conf"), "[containers]\ndefault_ulimits = []\n")?;
        let global = vec![
            "--root".into(),
            d.join("s").display().to_string(),
            "--runroot".into(),
            d.join("r").display().to_string(),
            "--tmpdir".into(),
            d.join("t").display().to_string(),
            "--storage-driver".into(),
            "vfs".into(),
            "--runtime".into(),
            "runc".into(),
            "--cgroup-manager".into(),
            "cgroupfs".into(),
            "--events-backend".into(),
            "file".into(),
        ];
        let p = Podman {
            program,
            dir,
            global,
            containers: RefCell::new(Vec::new()),
            images: RefCell::new(Vec::new()),
        };
        let (st, out, err) = p.exec(&["info", "--format", "{{.Host.OCIRuntime.Name}}"], PODMAN_TIMEOUT)?;
        if !st.success() {
            return Ok(skip(&format!(
                "podman cannot run here (rootless podman needs subuid/subgid ranges; this test was written as root): {}",
                err.trim()
            )));
        }
        ensure!(out.trim() == "runc", "podman info: runtime {out:?}, expected runc");
        Ok(Some(p))
    }

    /// The command line `podman GLOBAL...` as one string (for
    /// make-local-base.sh's PODMAN; the temp dir has no spaces).
    fn command_line(&self) -> String {
        std::iter::once(self.program.display().to_string())
            .chain(self.global.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("CONTAINERS_CONF", self.dir.path().join("containers.conf"))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `program args` to completion within `timeout` (killed by its PID
    /// otherwise): exit status, stdout, stderr.
    fn spawn_wait(&self, mut cmd: Command, what: &str, timeout: Duration) -> anyhow::Result<(ExitStatus, String, String)> {
        let out_path = self.dir.path().join("cmd.stdout");
        let err_path = self.dir.path().join("cmd.stderr");
        let mut child = cmd
            .stdout(std::fs::File::create(&out_path)?)
            .stderr(std::fs::File::create(&err_path)?)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{what} did not finish within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Ok((status, std::fs::read_to_string(&out_path)?, std::fs::read_to_string(&err_path)?))
    }

    /// `podman GLOBAL args`: exit status, stdout, stderr.
    fn exec(&self, args: &[&str], timeout: Duration) -> anyhow::Result<(ExitStatus, String, String)> {
        let mut cmd = self.command(&self.program);
        cmd.args(&self.global).args(args);
        self.spawn_wait(cmd, &format!("podman {args:?}"), timeout)
    }

    /// `podman GLOBAL args`, stdout; fails on a non-zero exit.
    fn run(&self, args: &[&str], timeout: Duration) -> anyhow::Result<String> {
        let (st, out, err) = self.exec(args, timeout)?;
        ensure!(st.success(), "podman {args:?}: {st}\nstdout: {out}\nstderr: {err}");
        Ok(out)
    }

    /// Runs a script of deploy/container with podman's settings in its
    /// environment; fails on a non-zero exit.
    fn script(&self, script: &Path, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = self.command(Path::new("bash"));
        cmd.arg(script).args(args).env("PODMAN", self.command_line());
        let (st, out, err) = self.spawn_wait(cmd, &script.display().to_string(), BUILD_TIMEOUT)?;
        ensure!(st.success(), "{} {args:?}: {st}\nstdout: {out}\nstderr: {err}", script.display());
        Ok(out)
    }

    /// `podman build` of one target of the Containerfile, its `binaries`
    /// stage replaced by `binaries` (a stage.sh layout, also the context);
    /// remembered for removal.
    fn build(&self, containerfile: &Path, target: &str, tag: &str, binaries: &Path, build_args: &[String]) -> anyhow::Result<()> {
        self.images.borrow_mut().push(tag.to_string());
        // No intermediate images: vfs stores each as a full copy.
        let mut args: Vec<&str> = vec!["build", "--pull=never", "--layers=false", "--quiet"];
        let file = containerfile.display().to_string();
        let ctx = binaries.display().to_string();
        let named = format!("binaries={ctx}");
        args.extend(["-f", &file, "--target", target, "-t", tag, "--build-context", &named]);
        for a in build_args {
            args.extend(["--build-arg", a]);
        }
        args.push(&ctx);
        self.run(&args, BUILD_TIMEOUT)?;
        Ok(())
    }

    /// `podman run -d --name NAME args...`; remembered for removal.
    fn start(&self, name: &str, args: &[&str]) -> anyhow::Result<()> {
        self.containers.borrow_mut().push(name.to_string());
        let mut all = vec!["run", "-d", "--name", name];
        all.extend(args);
        self.run(&all, PODMAN_TIMEOUT)?;
        Ok(())
    }

    /// `podman image inspect`, the image's JSON object.
    fn inspect_image(&self, tag: &str) -> anyhow::Result<Value> {
        let out = self.run(&["image", "inspect", tag], PODMAN_TIMEOUT)?;
        let v: Value = serde_json::from_str(&out).with_context(|| format!("podman image inspect {tag}: {out}"))?;
        Ok(v[0].clone())
    }

    /// One field of a container, by Go template.
    fn container_field(&self, name: &str, format: &str) -> anyhow::Result<String> {
        Ok(self
            .run(&["container", "inspect", "--format", format, name], PODMAN_TIMEOUT)?
            .trim()
            .to_string())
    }

    /// A container's log (stdout and stderr).
    fn logs(&self, name: &str) -> String {
        match self.exec(&["logs", name], PODMAN_TIMEOUT) {
            Ok((_, out, err)) => format!("{out}{err}"),
            Err(e) => format!("(no log: {e:#})"),
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for c in self.containers.borrow().iter().rev() {
            let _ = self.exec(&["rm", "--force", "--volumes", "--time", "5", c], PODMAN_TIMEOUT);
        }
        for i in self.images.borrow().iter() {
            let _ = self.exec(&["rmi", "--force", i], PODMAN_TIMEOUT);
        }
        // Intermediate images of the builds; the storage goes with the temp dir.
        let _ = self.exec(&["image", "prune", "--all", "--force"], PODMAN_TIMEOUT);
    }
}

fn as_u64(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Checks what every csoc-watch image promises: numeric non-root user, the
/// binary as entrypoint with the default config, its volume and ports, the
/// OCI labels; and a size close to the binary's.
fn check_image(img: &Value, title: &str, binary: &Path, volume: &str, ports: &[&str], version: &str) -> anyhow::Result<u64> {
    let cfg = &img["Config"];
    assert_eq!(cfg["User"], "65532", "{title}: numeric non-root user");
    let bin_path = format!("/usr/bin/{title}");
    assert_eq!(cfg["Entrypoint"], serde_json::json!([bin_path]), "{title}: entrypoint");
    let cmd_config = format!("/etc/csoc-watch/{}.yml", title.trim_start_matches("csoc-"));
    assert_eq!(cfg["Cmd"], serde_json::json!(["--config", cmd_config]), "{title}: cmd");
    assert!(cfg["Volumes"].get(volume).is_some(), "{title}: volume {volume}: {cfg}");
    assert_eq!(cfg["WorkingDir"], volume, "{title}: working dir");
    for p in ports {
        assert!(cfg["ExposedPorts"].get(format!("{p}/tcp")).is_some(), "{title}: port {p}: {cfg}");
    }
    let labels = &cfg["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], title);
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert_eq!(labels["org.opencontainers.image.version"], version);
    assert_eq!(labels["org.opencontainers.image.revision"], "image-test");
    for l in ["description", "source", "created"] {
        let v = labels[format!("org.opencontainers.image.{l}")].as_str().unwrap_or("");
        assert!(!v.is_empty(), "{title}: label {l} is empty: {labels}");
    }
    let size = as_u64(&img["Size"]);
    let bin_size = std::fs::metadata(binary)?.len();
    assert!(
        size >= bin_size && size - bin_size <= MAX_OVERHEAD_BYTES,
        "{title}: image {size} bytes for a {bin_size}-byte binary: the base adds more than {MAX_OVERHEAD_BYTES}"
    );
    Ok(size)
}

#[test]
fn images_run_read_only_as_non_root_and_the_agents_samples_reach_the_collector() -> anyhow::Result<()> {
    let Some(podman) = Podman::new()? else {
        return Ok(());
    };
    let res = scenario(&podman);
    if res.is_err() {
        for c in podman.containers.borrow().iter() {
            eprintln!("---- podman logs {c} ----\n{}", podman.logs(c));
        }
    }
    res
}

fn scenario(p: &Podman) -> anyhow::Result<()> {
    let repo = workspace();
    let scripts = repo.join("deploy/container");
    let dir = p.dir.path();
    let run_id = std::process::id();
    let version = env!("CARGO_PKG_VERSION");

    // The binaries, staged as the Containerfile's build stage stages its own.
    let agent_bin = bin("csoc-agent");
    let bindir = agent_bin.parent().context("binary directory")?.display().to_string();
    let context = dir.join("context");
    p.script(&scripts.join("stage.sh"), &[&context.display().to_string(), &bindir])?;

    let base = format!("localhost/csoc-test-base:{run_id}");
    p.images.borrow_mut().push(base.clone());
    let staged_agent = context.join("usr/bin/csoc-agent");
    let staged_collector = context.join("usr/bin/csoc-collector");
    let made = p.script(
        &scripts.join("make-local-base.sh"),
        &[&base, &staged_agent.display().to_string(), &staged_collector.display().to_string()],
    )?;
    eprintln!("{}", made.trim());

    let build_args = vec![
        format!("BASE_IMAGE={base}"),
        format!("VERSION={version}"),
        "REVISION=image-test".to_string(),
        "CREATED=2026-01-01T00:00:00Z".to_string(),
        "SOURCE=https://example.org/csoc-watch".to_string(),
    ];
    let containerfile = scripts.join("Containerfile");
    let collector_img = format!("localhost/csoc-collector:test-{run_id}");
    let agent_img = format!("localhost/csoc-agent:test-{run_id}");
    let t = Instant::now();
    p.build(&containerfile, "collector", &collector_img, &context, &build_args)?;
    p.build(&containerfile, "agent", &agent_img, &context, &build_args)?;
    eprintln!("both images built in {:.1?}", t.elapsed());

    let collector_size = check_image(
        &p.inspect_image(&collector_img)?,
        "csoc-collector",
        &staged_collector,
        "/var/lib/csoc-watch",
        &["9300", "9301"],
        version,
    )?;
    let agent_size = check_image(
        &p.inspect_image(&agent_img)?,
        "csoc-agent",
        &staged_agent,
        "/var/lib/csoc-agent",
        &["9302"],
        version,
    )?;
    eprintln!("image sizes (test-profile binaries): {collector_img} {collector_size} bytes, {agent_img} {agent_size} bytes");

    // No shell to fall back on.
    let (st, _, err) = p.exec(
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "/bin/sh",
            &agent_img,
            "-c",
            "true",
        ],
        PODMAN_TIMEOUT,
    )?;
    assert!(!st.success() && err.contains("/bin/sh"), "a shell ran in the image: {st} {err}");

    // The collector, as an arbitrary UID in group 0 (OpenShift's restricted
    // policy), its data in the image's volume.
    let (http_port, grpc_port, agent_port) = (free_port(), free_port(), free_port());
    let uid = format!("{}:0", 1_000_650_000 + run_id % 10_000);
    let collector = format!("csoc-img-collector-{run_id}");
    p.start(
        &collector,
        &[
            "--network",
            "host",
            "--read-only",
            "--user",
            &uid,
            &collector_img,
            "--config",
            "/etc/csoc-watch/collector.yml",
            "--http-listen",
            &format!("127.0.0.1:{http_port}"),
            "--grpc-listen",
            &format!("127.0.0.1:{grpc_port}"),
            "--agent-token",
            &format!("image={TOKEN}"),
        ],
    )?;
    let http = format!("http://127.0.0.1:{http_port}");
    wait_for("the collector container's /-/ready", Duration::from_secs(60), || {
        get_text(&format!("{http}/-/ready")).ok().filter(|(code, _)| *code == 200)
    })?;
    let log = p.logs(&collector);
    ensure!(
        log.contains("path=/var/lib/csoc-watch/csoc.db"),
        "the database is not in the volume:\n{log}"
    );
    let mount = p.container_field(&collector, "{{range .Mounts}}{{.Type}} {{.Destination}};{{end}}")?;
    ensure!(mount.contains("volume /var/lib/csoc-watch"), "collector mounts: {mount}");
    assert_eq!(p.container_field(&collector, "{{.HostConfig.ReadonlyRootfs}}")?, "true");
    // The rule pack shipped in the image is loaded by the image's config.
    let rules = api(&http, "/api/v1/rules", &[])?;
    let groups: Vec<&str> = rules["data"]["groups"]
        .as_array()
        .map(|g| g.iter().filter_map(|g| g["name"].as_str()).collect())
        .unwrap_or_default();
    ensure!(groups.contains(&"gen3-services"), "rule groups from the image: {groups:?}");

    // The agent, as the image's user, the token in a mounted file (as a
    // Kubernetes Secret would be), the spool in the image's volume.
    let token_file = dir.join("agent-token");
    std::fs::write(&token_file, TOKEN)?;
    let token_mount = format!("{}:/run/secrets/csoc-agent-token:ro", token_file.display());
    let agent = format!("csoc-img-agent-{run_id}");
    p.start(
        &agent,
        &[
            "--network",
            "host",
            "--read-only",
            "-v",
            &token_mount,
            &agent_img,
            "--config",
            "/etc/csoc-watch/agent.yml",
            "--collector",
            &format!("http://127.0.0.1:{grpc_port}"),
            "--token-file",
            "/run/secrets/csoc-agent-token",
            "--agent-name",
            AGENT_NAME,
            "--http-listen",
            &format!("127.0.0.1:{agent_port}"),
            "--interval",
            "1s",
        ],
    )?;
    let q = format!(r#"node_memory_MemTotal_bytes{{commons="image",instance="{AGENT_NAME}"}}"#);
    let url = format!("{http}/api/v1/query?query={}", urlencode(&q));
    let result = wait_for("the agent container's samples in the collector", Duration::from_secs(60), || {
        get_json(&url)
            .ok()
            .and_then(|(_, v)| v["data"]["result"].as_array().cloned())
            .filter(|r| !r.is_empty())
    })?;
    let value: f64 = result[0]["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(f64::NAN);
    assert_eq!(
        value,
        mem_total_bytes(),
        "the agent in the container reads the host's /proc/meminfo"
    );
    let (code, _) = get_text(&format!("http://127.0.0.1:{agent_port}/-/healthy"))?;
    assert_eq!(code, 200, "agent /-/healthy");
    let log = p.logs(&agent);
    ensure!(log.contains("spool=/var/lib/csoc-agent"), "agent spool:\n{log}");
    ensure!(!log.contains(TOKEN), "the token is in the agent's log");

    // Both stop on SIGTERM as PID 1, cleanly.
    for c in [&agent, &collector] {
        p.run(&["stop", "--time", "20", c], PODMAN_TIMEOUT)?;
        let code = p.container_field(c, "{{.State.ExitCode}}")?;
        ensure!(code == "0", "{c} exited with {code} on SIGTERM:\n{}", p.logs(c));
    }
    Ok(())
}
