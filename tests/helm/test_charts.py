#!/usr/bin/env python3
"""Checks of the Helm charts deploy/helm/csoc-agent and deploy/helm/csoc-collector
with the real Helm engine (helm-python-sdk embeds Helm 4's Go SDK).

For the default values and every documented combination: lint clean, render,
validate every object against Kubernetes' OpenAPI schemas (kubernetes-validate,
strict: unknown fields are errors) and assert what matters:
- the agent's Role and ClusterRole only get, list and watch;
- no ConfigMap, and no object but a Secret, holds a token: every token-ish
  value is given a recognisable canary and every non-Secret object is searched;
  values that would put a token in the config are refused with a clear error;
- every container runs as non-root with a read-only root filesystem, no
  privilege escalation, all capabilities dropped, seccomp RuntimeDefault,
  resources, and liveness and readiness probes;
- the agent's config names the release namespace in the kubernetes source,
  revproxy's logs, the gen3_status probes and the scrape discovery;
- two releases in two namespaces have distinct ClusterRole names;
- the collector chart's copies of the rule pack and dashboards equal the
  repository's, and are what the ConfigMaps carry.
With CSOC_AGENT_BIN / CSOC_COLLECTOR_BIN set, every rendered config is also
checked by the binary itself (`--check-config`), so that the charts can never
ship a config the programs refuse.

Runs as a plain script (prints "N passed, M failed", exits 1 on a failure) or
under pytest. tests/tests/helm.rs runs it in the e2e test binary.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
AGENT = REPO / "deploy" / "helm" / "csoc-agent"
COLLECTOR = REPO / "deploy" / "helm" / "csoc-collector"
# A current Kubernetes release, and the oldest the charts claim (kubeVersion).
K8S_VERSION = "1.33.0"
K8S_OLDEST = "1.25.0"
# A recognisable secret: given to every token-ish value, searched for in
# every object that is not a Secret.
CANARY = "csoc-canary-9f1b7e2d4c6a8b0e"
CANARY_SHA = hashlib.sha256(CANARY.encode()).hexdigest()
# Kinds of CRDs kubernetes-validate has no schema for, checked by hand.
CRD_GROUPS = ("cert-manager.io/", "external-secrets.io/")
VERBS_ALLOWED = {"get", "list", "watch"}

# ---------------------------------------------------------------------------
# Rendering


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def render(chart: Path, values: dict, name: str, namespace: str) -> list[dict]:
    """Every object the chart renders, parsed (NOTES.txt and empty documents left out)."""
    with helm.Chart.load(str(chart)) as c:
        manifests = c.render(values, name=name, namespace=namespace, is_install=True)
    objs = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("_template", path)
                objs.append(doc)
    return objs


def notes(chart: Path, values: dict, name: str, namespace: str) -> str:
    with helm.Chart.load(str(chart)) as c:
        manifests = c.render(values, name=name, namespace=namespace, is_install=True)
    return next((t for p, t in manifests.items() if p.endswith("NOTES.txt")), "")


def clean(obj: dict) -> dict:
    o = dict(obj)
    o.pop("_template", None)
    return o


def by_kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in by_kind(objs, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def pod_specs(objs: list[dict]):
    for o in objs:
        if o["kind"] in ("Deployment", "DaemonSet", "StatefulSet", "Job", "CronJob"):
            spec = o["spec"]["template"]["spec"] if o["kind"] != "CronJob" else o["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            yield o, spec


def agent_config(objs: list[dict], name: str) -> dict:
    cm = one(objs, "ConfigMap", name)
    return yaml.safe_load(cm["data"]["agent.yml"])


def collector_config(objs: list[dict]) -> dict:
    sec = [o for o in by_kind(objs, "Secret") if o["metadata"]["name"].endswith("-config")]
    assert len(sec) == 1, sec
    return yaml.safe_load(sec[0]["stringData"]["collector.yml"])


def render_error(chart: Path, values: dict) -> str:
    try:
        render(chart, values, "r", "ns")
    except helm.HelmError as e:
        return str(e)
    raise AssertionError(f"rendering {chart.name} with {values} should fail")


# ---------------------------------------------------------------------------
# The documented combinations

AGENT_COMBOS: dict[str, dict] = {
    "default": {},
    "gen3-globals": {"global": {"hostname": "data.example.org", "environment": "prod"}},
    "cluster-role": {"rbac": {"clusterRole": {"enabled": True}}},
    "daemonset": {"daemonset": {"enabled": True}},
    "daemonset-host-network": {"daemonset": {"enabled": True, "hostNetwork": True}},
    "pvc-spool": {"spool": {"persistence": {"enabled": True, "storageClass": "gp3", "size": "2Gi"}}},
    "existing-claim": {"spool": {"persistence": {"enabled": True, "existingClaim": "my-spool"}}},
    "external-secret": {
        "token": {
            "externalSecret": {
                "enabled": True,
                "secretStoreRef": {"name": "aws-secrets", "kind": "ClusterSecretStore"},
                "remoteKey": "csoc/agent-token",
                "remoteProperty": "token",
            }
        }
    },
    "mtls": {
        "collector": {
            "address": "https://csoc.example.org:443",
            "tls": {"existingSecret": "csoc-agent-tls", "clientCert": True, "serverName": "csoc.example.org"},
        }
    },
    "network-policy": {
        "networkPolicy": {
            "enabled": True,
            "collectorPeers": [{"ipBlock": {"cidr": "203.0.113.10/32"}}],
            "apiServerPeers": [{"ipBlock": {"cidr": "10.100.0.1/32"}}],
        }
    },
    "sources-off": {
        "sources": {
            "kubernetes": {"enabled": False},
            "gen3Status": {"enabled": False},
            "revproxyLog": {"enabled": False},
            "scrapeAnnotatedPods": {"enabled": False},
        }
    },
    "argo": {"sources": {"argocd": {"enabled": True}, "argoWorkflows": {"enabled": True}}},
    "argo-workflows-only": {"sources": {"argoWorkflows": {"enabled": True}, "scrapeAnnotatedPods": {"enabled": False}}},
    "fixed-uid-and-extras": {
        "securityContext": {"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001},
        "agentName": "commons-a",
        "commonsName": "commons-a",
        "externalLabels": {"region": "us-east-1"},
        "extraEnv": [{"name": "RUST_LOG", "value": "info"}],
        "podLabels": {"internet": "yes"},
        "config": {"interval": "30s", "sources": {"kubernetes": {"job": "kube-state-metrics"}}},
    },
}
AGENT_COMBOS["everything"] = deep_merge(
    deep_merge(
        deep_merge(AGENT_COMBOS["gen3-globals"], AGENT_COMBOS["cluster-role"]),
        deep_merge(AGENT_COMBOS["daemonset"], AGENT_COMBOS["pvc-spool"]),
    ),
    deep_merge(
        deep_merge(AGENT_COMBOS["external-secret"], AGENT_COMBOS["mtls"]),
        AGENT_COMBOS["network-policy"],
    ),
)

SLACK_URL = f"https://hooks.slack.com/services/T000/B000/{CANARY}"
COLLECTOR_COMBOS: dict[str, dict] = {
    "default": {},
    "tokens": {
        "agentTokens": [{"commons": "alpha", "tokenSha256": CANARY_SHA}, {"commons": "beta.prod", "tokenSha256": "ab" * 32}],
        "apiTokens": [
            {"name": "grafana", "role": "read", "tokenSha256": "cd" * 32},
            {"name": "alpha-team", "role": "read", "commons": "alpha", "tokenSha256": "ef" * 32},
            {"name": "ops", "role": "admin", "tokenSha256": "01" * 32},
        ],
    },
    "receivers": {
        "alertmanagers": ["http://alertmanager.monitoring.svc:9093"],
        "receivers": [
            {"name": "ops-slack", "matchers": ['severity="critical"'], "slack": {"api_url": SLACK_URL}},
            {"name": "pager", "pagerduty": {"routing_key": CANARY}},
            {"name": "hook", "webhook": {"url": "https://hooks.example.org/csoc", "bearer_token": CANARY}},
        ],
    },
    "ingress": {
        "grpc": {"ingress": {"enabled": True, "className": "nginx", "host": "csoc-grpc.example.org", "tlsSecretName": "csoc-grpc-tls"}},
        "http": {"ingress": {"enabled": True, "className": "nginx", "host": "csoc.example.org", "tlsSecretName": "csoc-tls"}},
    },
    "cert-manager": {
        "tls": {
            "grpc": {"enabled": True},
            "http": {"enabled": True},
            "certManager": {"enabled": True, "issuerRef": {"name": "letsencrypt", "kind": "ClusterIssuer"}, "dnsNames": ["csoc.internal"]},
        }
    },
    "mtls": {
        "tls": {
            "grpc": {"enabled": True, "clientAuth": "require"},
            "certManager": {
                "enabled": True,
                "issuerRef": {"name": "internal-ca", "kind": "Issuer"},
                "mtls": {"enabled": True, "agentCertificates": [{"commons": "alpha", "name": "agent.alpha"}, {"commons": "Beta_2", "name": "agent.beta"}]},
            },
        },
        "agentCerts": [{"commons": "gamma", "name": "spiffe://csoc/gamma"}],
    },
    "existing-tls": {
        "tls": {
            "grpc": {"enabled": True, "existingSecret": "collector-tls", "clientCASecret": "agents-ca"},
            "http": {"enabled": True, "existingSecret": "collector-tls"},
        }
    },
    "storage-and-rules": {
        "persistence": {"storageClass": "gp3", "size": "100Gi"},
        "retention": "30d",
        "retentionSize": "90GB",
        "externalUrl": "https://csoc.example.org",
        "rules": {
            "extra": {
                "site": {"groups": [{"name": "site", "rules": [{"alert": "SiteDown", "expr": "up == 0", "for": "5m"}]}]},
                "text-rules": "groups:\n  - name: text\n    rules:\n      - record: x:up:sum\n        expr: sum(up)\n",
            }
        },
        "config": {"evaluation_interval": "30s", "limits": {"max_series_per_agent": 500000}},
    },
    "no-dashboards-no-rules": {"dashboards": {"enabled": False}, "rules": {"gen3": False}},
    "fixed-uid": {"securityContext": {"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": ""}},
}
COLLECTOR_COMBOS["everything"] = deep_merge(
    deep_merge(deep_merge(COLLECTOR_COMBOS["tokens"], COLLECTOR_COMBOS["receivers"]), COLLECTOR_COMBOS["ingress"]),
    deep_merge(COLLECTOR_COMBOS["mtls"], COLLECTOR_COMBOS["storage-and-rules"]),
)

# ---------------------------------------------------------------------------
# Shared assertions


def assert_valid(objs: list[dict], version: str = K8S_VERSION) -> None:
    """Every object validates against Kubernetes' schemas (CRDs by hand)."""
    for o in objs:
        what = f"{o['kind']}/{o['metadata'].get('name')} ({o['_template']})"
        assert o["metadata"].get("name"), f"{what}: no name"
        if o["apiVersion"].startswith(CRD_GROUPS):
            assert isinstance(o.get("spec"), dict) and o["spec"], f"{what}: no spec"
            continue
        try:
            kubernetes_validate.validate(clean(o), version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            raise AssertionError(f"{what} is invalid for Kubernetes {version}: {path}: {e.message}") from None


def assert_no_canary_outside_secrets(objs: list[dict]) -> None:
    for o in objs:
        if o["kind"] == "Secret":
            continue
        text = json.dumps(clean(o))
        assert CANARY not in text, f"{o['kind']}/{o['metadata']['name']} carries a secret value"


def assert_container_discipline(objs: list[dict], fixed_uid: bool = False) -> None:
    seen = 0
    for o, spec in pod_specs(objs):
        psc = spec.get("securityContext", {})
        assert psc.get("runAsNonRoot") is True, f"{o['metadata']['name']}: pod runAsNonRoot"
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        for c in spec.get("initContainers", []) + spec["containers"]:
            seen += 1
            what = f"{o['kind']}/{o['metadata']['name']} container {c['name']}"
            sc = c.get("securityContext", {})
            assert sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, f"{what}: runAsNonRoot"
            assert sc.get("readOnlyRootFilesystem") is True, f"{what}: readOnlyRootFilesystem"
            assert sc.get("allowPrivilegeEscalation") is False, f"{what}: allowPrivilegeEscalation"
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{what}: capabilities"
            assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{what}: seccomp"
            assert "privileged" not in sc or sc["privileged"] is False, what
            if not fixed_uid:
                assert "runAsUser" not in sc and "runAsUser" not in psc, f"{what}: a UID is fixed (OpenShift assigns one)"
            res = c.get("resources", {})
            assert res.get("requests", {}).get("cpu") and res.get("requests", {}).get("memory"), f"{what}: requests"
            assert res.get("limits", {}).get("memory"), f"{what}: memory limit"
            for probe, path in (("livenessProbe", "/-/healthy"), ("readinessProbe", "/-/ready")):
                p = c.get(probe)
                assert p and p.get("httpGet", {}).get("path") == path, f"{what}: {probe} on {path}"
                port = p["httpGet"]["port"]
                assert any(cp.get("name") == port or cp.get("containerPort") == port for cp in c.get("ports", [])), f"{what}: {probe} port"
            # Every writable path is a volume: /tmp at least.
            assert any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", [])), f"{what}: /tmp volume"
    assert seen, "no container rendered"


def assert_read_only_rbac(objs: list[dict]) -> None:
    roles = by_kind(objs, "Role") + by_kind(objs, "ClusterRole")
    for r in roles:
        for rule in r["rules"]:
            verbs = set(rule["verbs"])
            assert verbs <= VERBS_ALLOWED, f"{r['kind']}/{r['metadata']['name']} grants {sorted(verbs - VERBS_ALLOWED)}"
            assert "*" not in rule.get("resources", []) and "*" not in rule.get("apiGroups", [])
            assert "secrets" not in rule.get("resources", []), "the agent never reads Secrets"


# ---------------------------------------------------------------------------
# Tests: lint


def test_lint_both_charts_clean():
    for chart in (AGENT, COLLECTOR):
        for kwargs in ({}, {"strict": True, "kube_version": "v" + K8S_VERSION, "namespace": "gen3"}):
            report = helm.lint(str(chart), **kwargs)
            bad = [m for m in report["messages"] if m["severity"] >= 2]
            assert not report["errors"] and not bad, f"helm lint {chart.name} {kwargs}: {report}"
            assert report["total_charts_linted"] == 1


def test_chart_metadata():
    workspace_version = re.search(r'^version = "([^"]+)"', (REPO / "Cargo.toml").read_text(), re.M).group(1)
    for chart in (AGENT, COLLECTOR):
        with helm.Chart.load(str(chart)) as c:
            md = c.metadata
        assert md["apiVersion"] == "v2"
        assert md["appVersion"] == workspace_version, f"{chart.name}: appVersion {md['appVersion']} != workspace {workspace_version}"
        assert md["kubeVersion"].startswith(">=1.25")


# ---------------------------------------------------------------------------
# Tests: csoc-agent


def test_agent_every_combination_renders_valid_and_disciplined():
    for combo, values in AGENT_COMBOS.items():
        try:
            objs = render(AGENT, values, "gen3", "gen3")
            assert_valid(objs)
            assert_read_only_rbac(objs)
            assert_container_discipline(objs, fixed_uid=combo.startswith("fixed-uid"))
            assert_no_canary_outside_secrets(objs)
            # Argo's Roles sit in Argo's namespaces (argocd, argo).
            argo_ns = {"argocd", "argo"} if combo.startswith("argo") else set()
            for o in objs:
                if o["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
                    ns = o["metadata"].get("namespace")
                    ok = ns == "gen3" or (ns in argo_ns and o["kind"] in ("Role", "RoleBinding"))
                    assert ok, f"{o['kind']}/{o['metadata']['name']} not in the release namespace"
        except AssertionError as e:
            raise AssertionError(f"combination {combo!r}: {e}") from None


def test_agent_defaults_validate_against_the_oldest_supported_kubernetes():
    assert_valid(render(AGENT, AGENT_COMBOS["everything"], "gen3", "gen3"), K8S_OLDEST)
    assert_valid(render(AGENT, {}, "gen3", "gen3"), K8S_OLDEST)


def test_agent_default_objects():
    objs = render(AGENT, {}, "gen3", "gen3")
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objs)
    assert kinds == [
        ("ConfigMap", "gen3-csoc-agent-config"),
        ("Deployment", "gen3-csoc-agent"),
        ("Role", "gen3-csoc-agent"),
        ("RoleBinding", "gen3-csoc-agent"),
        ("ServiceAccount", "gen3-csoc-agent"),
    ], kinds
    dep = one(objs, "Deployment")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]
    assert pod["metadata"]["labels"]["app"] == "csoc-agent", "gen3-helm's NetworkPolicies match app"
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "gen3-csoc-agent"
    c = spec["containers"][0]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["CSOC_AGENT_NAME"] == "gen3", "the agent's name is the release's"
    cfg = agent_config(objs, "gen3-csoc-agent-config")
    # The probes reach the agent: it listens on all addresses, on the probed port.
    assert cfg["http_listen"] == "0.0.0.0:9302"
    assert c["ports"][0]["containerPort"] == 9302
    # The token: a file from the Secret, at the path the config names.
    token_vol = next(v for v in spec["volumes"] if v["name"] == "token")
    assert token_vol["secret"]["secretName"] == "csoc-agent-token"
    assert token_vol["secret"]["items"] == [{"key": "token", "path": "token"}]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "token")
    assert cfg["token_file"] == mount["mountPath"] + "/token"
    assert "token" not in cfg
    # The spool: an emptyDir by default, mounted where the config puts it.
    spool = next(v for v in spec["volumes"] if v["name"] == "spool")
    assert "emptyDir" in spool
    spool_mount = next(m for m in c["volumeMounts"] if m["name"] == "spool")
    assert cfg["spool_dir"].startswith(spool_mount["mountPath"] + "/")
    # Without the ClusterRole the agent does not try nodes or the metrics API.
    assert set(cfg["sources"]["kubernetes"]["disable"]) == {"nodes", "metrics", "applications"}
    assert cfg["sources"]["host"]["enabled"] is False
    # The Role: exactly deploy/kubernetes/agent-rbac.yaml's.
    hand = [d for d in yaml.safe_load_all((REPO / "deploy/kubernetes/agent-rbac.yaml").read_text()) if d and d["kind"] == "Role"]
    assert one(objs, "Role")["rules"] == hand[0]["rules"]


def test_agent_config_names_the_release_namespace():
    for ns in ("gen3", "commons-b"):
        objs = render(AGENT, {}, "rel", ns)
        cfg = agent_config(objs, "rel-csoc-agent-config")
        src = cfg["sources"]
        assert src["kubernetes"]["enabled"] is True and src["kubernetes"]["namespaces"] == [ns]
        assert src["revproxy_log"]["enabled"] is True
        assert src["revproxy_log"]["kubernetes"] == {"namespace": ns, "selector": "app=revproxy"}
        assert src["gen3_status"]["enabled"] is True and src["gen3_status"]["namespace"] == ns
        jobs = src["scrape"]["jobs"]
        assert [j["job_name"] for j in jobs] == ["gen3-pods"]
        sd = jobs[0]["kubernetes_sd_configs"]
        assert sd == [{"role": "pod", "namespaces": {"names": [ns]}}]
        keep = jobs[0]["relabel_configs"][0]
        assert keep["action"] == "keep" and keep["source_labels"] == ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"]
        for o in objs:
            assert o["metadata"]["namespace"] == ns
        rb = one(objs, "RoleBinding")
        assert rb["subjects"][0]["namespace"] == ns


def test_agent_gen3_globals():
    objs = render(AGENT, AGENT_COMBOS["gen3-globals"], "gen3", "gen3")
    cfg = agent_config(objs, "gen3-csoc-agent-config")
    assert cfg["external_labels"] == {"environment": "prod"}
    assert cfg["sources"]["gen3_status"]["base_url"] == "https://data.example.org"
    # gen3-helm's default hostname "localhost" is no public URL.
    cfg = agent_config(render(AGENT, {"global": {"hostname": "localhost"}}, "gen3", "gen3"), "gen3-csoc-agent-config")
    assert "base_url" not in cfg["sources"]["gen3_status"]


def test_agent_cluster_roles_are_distinct_per_release_and_namespace():
    values = {"rbac": {"clusterRole": {"enabled": True}}}
    a = render(AGENT, values, "gen3", "commons-a")
    b = render(AGENT, values, "gen3", "commons-b")
    for kind in ("ClusterRole", "ClusterRoleBinding"):
        na, nb = one(a, kind)["metadata"]["name"], one(b, kind)["metadata"]["name"]
        assert na != nb, f"{kind}: both releases named {na}"
    crb = one(a, "ClusterRoleBinding")
    assert crb["roleRef"]["name"] == one(a, "ClusterRole")["metadata"]["name"]
    assert crb["subjects"] == [{"kind": "ServiceAccount", "name": "gen3-csoc-agent", "namespace": "commons-a"}]
    cr = one(a, "ClusterRole")
    assert {r for rule in cr["rules"] for r in rule["resources"]} == {"nodes", "pods"}
    cfg = agent_config(a, "gen3-csoc-agent-config")
    assert cfg["sources"]["kubernetes"]["disable"] == ["applications"], "with the ClusterRole, nodes and metrics are watched"


def test_agent_argo_sources_add_their_roles_and_config():
    values = {"sources": {"argocd": {"enabled": True, "namespace": "argo-cd"}, "argoWorkflows": {"enabled": True}}}
    objs = render(AGENT, values, "gen3", "commons-a")
    cfg = agent_config(objs, "gen3-csoc-agent-config")
    k = cfg["sources"]["kubernetes"]
    assert "applications" not in k["disable"]
    assert k["argocd"] == {"namespaces": ["argo-cd"]}
    jobs = cfg["sources"]["scrape"]["jobs"]
    assert [j["job_name"] for j in jobs] == ["gen3-pods", "argo-workflows"]
    argo = jobs[1]
    assert argo["kubernetes_sd_configs"][0]["namespaces"] == {"names": ["argo"]}
    assert argo["kubernetes_sd_configs"][0]["selectors"][0]["label"] == "app=workflow-controller"
    roles = [o for o in objs if o["kind"] == "Role"]
    by_ns = {r["metadata"]["namespace"]: r for r in roles}
    assert by_ns["argo-cd"]["rules"] == [{"apiGroups": ["argoproj.io"], "resources": ["applications"], "verbs": ["get", "list", "watch"]}]
    assert by_ns["argo"]["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    for rb in (o for o in objs if o["kind"] == "RoleBinding"):
        assert rb["subjects"] == [{"kind": "ServiceAccount", "name": "gen3-csoc-agent", "namespace": "commons-a"}]
    # Only Argo Workflows, without the annotated-pods job.
    values = {"sources": {"argoWorkflows": {"enabled": True}, "scrapeAnnotatedPods": {"enabled": False}}}
    cfg = agent_config(render(AGENT, values, "gen3", "gen3"), "gen3-csoc-agent-config")
    assert [j["job_name"] for j in cfg["sources"]["scrape"]["jobs"]] == ["argo-workflows"]


def test_agent_daemonset_mounts_the_host_read_only():
    objs = render(AGENT, AGENT_COMBOS["daemonset"], "gen3", "gen3")
    ds = one(objs, "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    c = spec["containers"][0]
    host_paths = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    assert host_paths == {"proc": "/proc", "sys": "/sys", "root": "/"}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    for vol, at in (("proc", "/host/proc"), ("sys", "/host/sys"), ("root", "/host/root")):
        assert mounts[vol]["mountPath"] == at and mounts[vol]["readOnly"] is True
    assert mounts["root"]["mountPropagation"] == "HostToContainer"
    args = c["args"]
    for flag, at in (("--path.procfs", "/host/proc"), ("--path.sysfs", "/host/sys"), ("--path.rootfs", "/host/root")):
        assert args[args.index(flag) + 1] == at
    assert spec["automountServiceAccountToken"] is False, "the node agent reads no API"
    assert spec["hostNetwork"] is False
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["CSOC_AGENT_NAME"]["value"] == "gen3-node-$(NODE_NAME)"
    node_cfg = agent_config(objs, "gen3-csoc-agent-node-config")
    assert node_cfg["sources"] == {"host": {"enabled": True, "mount_points_exclude": node_cfg["sources"]["host"]["mount_points_exclude"]}}
    assert "var/lib/kubelet" in node_cfg["sources"]["host"]["mount_points_exclude"]
    assert next(v for v in spec["volumes"] if v["name"] == "config")["configMap"]["name"] == "gen3-csoc-agent-node-config"
    hn = one(render(AGENT, AGENT_COMBOS["daemonset-host-network"], "gen3", "gen3"), "DaemonSet")["spec"]["template"]["spec"]
    assert hn["hostNetwork"] is True and hn["dnsPolicy"] == "ClusterFirstWithHostNet"


def test_agent_pvc_spool():
    objs = render(AGENT, AGENT_COMBOS["pvc-spool"], "gen3", "gen3")
    pvc = one(objs, "PersistentVolumeClaim")
    assert pvc["spec"]["storageClassName"] == "gp3" and pvc["spec"]["resources"]["requests"]["storage"] == "2Gi"
    spool = next(v for v in one(objs, "Deployment")["spec"]["template"]["spec"]["volumes"] if v["name"] == "spool")
    assert spool == {"name": "spool", "persistentVolumeClaim": {"claimName": pvc["metadata"]["name"]}}
    objs = render(AGENT, AGENT_COMBOS["existing-claim"], "gen3", "gen3")
    assert not by_kind(objs, "PersistentVolumeClaim")
    spool = next(v for v in one(objs, "Deployment")["spec"]["template"]["spec"]["volumes"] if v["name"] == "spool")
    assert spool["persistentVolumeClaim"]["claimName"] == "my-spool"


def test_agent_external_secret_feeds_the_token_volume():
    objs = render(AGENT, AGENT_COMBOS["external-secret"], "gen3", "gen3")
    es = one(objs, "ExternalSecret")
    assert es["apiVersion"] == "external-secrets.io/v1beta1"
    assert es["spec"]["secretStoreRef"] == {"name": "aws-secrets", "kind": "ClusterSecretStore"}
    assert es["spec"]["data"] == [{"secretKey": "token", "remoteRef": {"key": "csoc/agent-token", "property": "token"}}]
    vol = next(v for v in one(objs, "Deployment")["spec"]["template"]["spec"]["volumes"] if v["name"] == "token")
    assert vol["secret"]["secretName"] == es["spec"]["target"]["name"]
    v1 = deep_merge(AGENT_COMBOS["external-secret"], {"global": {"externalSecrets": {"apiVersion": "external-secrets.io/v1"}}})
    assert one(render(AGENT, v1, "gen3", "gen3"), "ExternalSecret")["apiVersion"] == "external-secrets.io/v1"


def test_agent_mtls_files():
    objs = render(AGENT, AGENT_COMBOS["mtls"], "gen3", "gen3")
    cfg = agent_config(objs, "gen3-csoc-agent-config")
    spec = one(objs, "Deployment")["spec"]["template"]["spec"]
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "tls")["mountPath"]
    assert cfg["tls"] == {
        "ca_file": f"{mount}/ca.crt",
        "cert_file": f"{mount}/tls.crt",
        "key_file": f"{mount}/tls.key",
        "server_name": "csoc.example.org",
    }
    assert next(v for v in spec["volumes"] if v["name"] == "tls")["secret"]["secretName"] == "csoc-agent-tls"


def test_agent_network_policies():
    objs = render(AGENT, AGENT_COMBOS["network-policy"], "gen3", "gen3")
    egress = one(objs, "NetworkPolicy", "gen3-csoc-agent-egress")
    rules = egress["spec"]["egress"]
    assert {"to": [{"podSelector": {}}]} in rules
    assert any(r.get("to") == [{"ipBlock": {"cidr": "203.0.113.10/32"}}] and r["ports"] == [{"protocol": "TCP", "port": 9301}] for r in rules)
    ingress = one(objs, "NetworkPolicy", "gen3-csoc-agent-ingress-from-agent")
    selector = ingress["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    pod_labels = one(objs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in selector.items()), "the ingress policy selects the agent's pods"
    assert not by_kind(render(AGENT, {}, "gen3", "gen3"), "NetworkPolicy")


def test_agent_values_never_put_a_token_in_plain_text():
    # Every place a token might be slipped in: refused, or ignored and absent.
    for values, field in (
        ({"config": {"token": CANARY}}, "config.token"),
        ({"config": {"token_file": "/tmp/x"}}, "config.token_file"),
        ({"externalLabels": {"commons": "x"}}, "externalLabels.commons"),
    ):
        err = render_error(AGENT, values)
        assert field in err, f"{values}: {err}"
        assert CANARY not in err, "the error message repeats the token"
    # Unknown keys a user might try are not rendered anywhere.
    objs = render(AGENT, {"token": {"value": CANARY, "token": CANARY}, "collector": {"token": CANARY}}, "gen3", "gen3")
    assert_no_canary_outside_secrets(objs)
    assert not by_kind(objs, "Secret"), "the agent chart makes no Secret of its own"
    for o in objs:
        assert CANARY not in json.dumps(clean(o))


def test_agent_bad_values_fail_with_the_value_named():
    for values, needle in (
        ({"collector": {"address": "collector:9301"}}, "collector.address"),
        ({"collector": {"tls": {"existingSecret": "x"}}}, "collector.tls.existingSecret"),
        ({"collector": {"address": "https://c:443", "tls": {"clientCert": True}}}, "collector.tls.clientCert"),
        ({"token": {"existingSecret": ""}}, "token.existingSecret"),
        ({"token": {"externalSecret": {"enabled": True, "remoteKey": "k"}}}, "token.externalSecret.secretStoreRef.name"),
        ({"token": {"externalSecret": {"enabled": True, "secretStoreRef": {"name": "s"}}}}, "token.externalSecret.remoteKey"),
    ):
        err = render_error(AGENT, values)
        assert needle in err, f"{values}: {err}"


def test_agent_as_a_subchart_of_a_gen3_umbrella():
    """As gen3-helm uses it: a dependency with condition csoc-agent.enabled,
    gen3-helm's globals (with keys of their own) reaching the subchart."""
    with tempfile.TemporaryDirectory() as tmp:
        umbrella = Path(tmp) / "gen3"
        (umbrella / "charts").mkdir(parents=True)
        (umbrella / "templates").mkdir()
        (umbrella / "templates" / "_helpers.tpl").write_text("{{/* The umbrella's own templates. */}}\n")
        shutil.copytree(AGENT, umbrella / "charts" / "csoc-agent")
        (umbrella / "Chart.yaml").write_text(
            "apiVersion: v2\nname: gen3\nversion: 0.1.0\ndependencies:\n"
            "  - name: csoc-agent\n    version: \"*\"\n    repository: \"file://../csoc-agent\"\n    condition: csoc-agent.enabled\n"
        )
        # gen3-helm's global values, as in helm/gen3/values.yaml.
        (umbrella / "values.yaml").write_text(
            "global:\n  hostname: localhost\n  environment: default\n  dev: true\n"
            "  netPolicy: {enabled: false, dbSubnet: \"\"}\n"
            "  externalSecrets: {deploy: false, createLocalK8sSecret: false}\n"
            "csoc-agent:\n  enabled: false\n"
        )
        assert render(umbrella, {}, "gen3", "gen3") == [], "condition csoc-agent.enabled false renders nothing"
        values = {"global": {"hostname": "data.example.org", "environment": "prod"}, "csoc-agent": {"enabled": True}}
        objs = render(umbrella, values, "gen3", "gen3")
        assert_valid(objs)
        assert_container_discipline(objs)
        cfg = agent_config(objs, "gen3-csoc-agent-config")
        assert cfg["external_labels"] == {"environment": "prod"}
        assert cfg["sources"]["gen3_status"]["base_url"] == "https://data.example.org"
        env = {e["name"]: e.get("value") for e in one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["CSOC_AGENT_NAME"] == "gen3"
        report = helm.lint(str(umbrella), values, with_subcharts=True)
        assert not report["errors"] and not [m for m in report["messages"] if m["severity"] >= 2], report


def test_agent_notes():
    text = notes(AGENT, {}, "gen3", "gen3")
    assert "create secret generic csoc-agent-token" in text
    assert "netPolicy.ingressApps" in text
    assert "rollout status deployment/gen3-csoc-agent" in text


# ---------------------------------------------------------------------------
# Tests: csoc-collector


def test_collector_every_combination_renders_valid_and_disciplined():
    for combo, values in COLLECTOR_COMBOS.items():
        try:
            objs = render(COLLECTOR, values, "csoc-collector", "csoc")
            assert_valid(objs)
            assert_container_discipline(objs, fixed_uid=combo == "fixed-uid")
            assert_no_canary_outside_secrets(objs)
            for o in objs:
                assert o["metadata"].get("namespace") == "csoc", f"{o['kind']}/{o['metadata']['name']}"
        except AssertionError as e:
            raise AssertionError(f"combination {combo!r}: {e}") from None
    assert_valid(render(COLLECTOR, COLLECTOR_COMBOS["everything"], "csoc-collector", "csoc"), K8S_OLDEST)


def test_collector_default_objects():
    objs = render(COLLECTOR, {}, "csoc-collector", "csoc")
    sts = one(objs, "StatefulSet")
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["serviceName"] == one(objs, "Service", "csoc-collector-headless")["metadata"]["name"]
    vct = sts["spec"]["volumeClaimTemplates"][0]
    assert vct["spec"]["accessModes"] == ["ReadWriteOnce"] and "storageClassName" not in vct["spec"]
    spec = sts["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert next(m for m in c["volumeMounts"] if m["name"] == "data")["mountPath"] == "/var/lib/csoc-collector"
    assert c["startupProbe"]["httpGet"]["path"] == "/-/healthy"
    assert spec["securityContext"]["fsGroup"] == 65532
    cfg = collector_config(objs)
    assert cfg["data_dir"] == "/var/lib/csoc-collector"
    assert cfg["http_listen"] == "0.0.0.0:9300" and cfg["grpc_listen"] == "0.0.0.0:9301"
    assert cfg["rule_files"] == ["/etc/csoc-collector/rules/*.yml"]
    grpc = one(objs, "Service", "csoc-collector-grpc")["spec"]["ports"]
    assert grpc == [{"name": "grpc", "port": 9301, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"}]
    http = one(objs, "Service", "csoc-collector-http")["spec"]["ports"]
    assert http[0]["port"] == 9300
    assert not by_kind(objs, "ConfigMap") == [], "rules and dashboards ConfigMaps"
    # With a given storage class.
    sts = one(render(COLLECTOR, COLLECTOR_COMBOS["storage-and-rules"], "csoc-collector", "csoc"), "StatefulSet")
    vct = sts["spec"]["volumeClaimTemplates"][0]["spec"]
    assert vct["storageClassName"] == "gp3" and vct["resources"]["requests"]["storage"] == "100Gi"


def test_collector_tokens_are_digests_only():
    objs = render(COLLECTOR, COLLECTOR_COMBOS["everything"], "csoc-collector", "csoc")
    cfg = collector_config(objs)
    assert cfg["agent_tokens"][0] == {"commons": "alpha", "token_sha256": CANARY_SHA}
    assert all(set(t) <= {"commons", "token_sha256"} for t in cfg["agent_tokens"])
    assert all("token" not in t for t in cfg["api_tokens"])
    assert {t["name"]: t.get("commons") for t in cfg["api_tokens"]} == {"grafana": None, "alpha-team": "alpha", "ops": None}
    # Receivers' credentials are in the config Secret and nowhere else.
    assert cfg["receivers"][0]["slack"]["api_url"] == SLACK_URL
    for cm in by_kind(objs, "ConfigMap"):
        assert CANARY not in json.dumps(cm) and CANARY_SHA not in json.dumps(cm)
    for values, needle in (
        ({"agentTokens": [{"commons": "a", "token": CANARY}]}, "agentTokens[0].token"),
        ({"agentTokens": [{"commons": "a", "tokenSha256": "xyz"}]}, "agentTokens[0].tokenSha256"),
        ({"agentTokens": [{"commons": "a b", "tokenSha256": CANARY_SHA}]}, "agentTokens[0].commons"),
        ({"apiTokens": [{"name": "g", "role": "read", "token": CANARY}]}, "apiTokens[0].token"),
        ({"apiTokens": [{"name": "g", "role": "write", "tokenSha256": CANARY_SHA}]}, "apiTokens[0].role"),
        ({"config": {"agent_tokens": [{"commons": "a", "token": CANARY}]}}, "config.agent_tokens[0].token"),
        ({"config": {"api_tokens": [{"name": "a", "role": "read", "token": CANARY}]}}, "config.api_tokens[0].token"),
    ):
        err = render_error(COLLECTOR, values)
        assert needle in err, f"{values}: {err}"
        assert CANARY not in err, "the error message repeats the token"


def test_collector_rule_pack_and_dashboards_are_the_repositorys():
    # The chart's copies (files/) equal the sources (sync-files.sh makes them).
    src_rules = (REPO / "deploy/rules/gen3.yml").read_text()
    assert (COLLECTOR / "files/rules/gen3.yml").read_text() == src_rules, "run deploy/helm/sync-files.sh: files/rules/gen3.yml differs from deploy/rules/gen3.yml"
    src_dash = sorted(p.name for p in (REPO / "grafana/dashboards").glob("*.json"))
    copies = sorted(p.name for p in (COLLECTOR / "files/dashboards").glob("*.json"))
    assert src_dash == copies, f"run deploy/helm/sync-files.sh: dashboards {src_dash} vs copies {copies}"
    for name in src_dash:
        assert (COLLECTOR / "files/dashboards" / name).read_text() == (REPO / "grafana/dashboards" / name).read_text(), f"run deploy/helm/sync-files.sh: {name} differs"
    # And the rendered ConfigMaps carry them unchanged.
    objs = render(COLLECTOR, {}, "csoc-collector", "csoc")
    rules = one(objs, "ConfigMap", "csoc-collector-rules")
    assert rules["data"]["gen3.yml"].rstrip("\n") == src_rules.rstrip("\n")
    dashboards = {k: (cm, v) for cm in by_kind(objs, "ConfigMap") for k, v in cm["data"].items() if k.endswith(".json")}
    assert sorted(dashboards) == src_dash
    for name, (cm, text) in dashboards.items():
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1", f"{name}: sidecar label"
        assert json.loads(text) == json.loads((REPO / "grafana/dashboards" / name).read_text())
    objs = render(COLLECTOR, COLLECTOR_COMBOS["no-dashboards-no-rules"], "csoc-collector", "csoc")
    assert [cm["metadata"]["name"] for cm in by_kind(objs, "ConfigMap")] == ["csoc-collector-rules"]
    assert one(objs, "ConfigMap")["data"] in ({}, None)
    extra = one(render(COLLECTOR, COLLECTOR_COMBOS["storage-and-rules"], "csoc-collector", "csoc"), "ConfigMap", "csoc-collector-rules")["data"]
    assert yaml.safe_load(extra["site.yml"])["groups"][0]["rules"][0]["alert"] == "SiteDown"
    assert yaml.safe_load(extra["text-rules.yml"])["groups"][0]["name"] == "text"


def test_collector_ingresses_speak_grpc():
    objs = render(COLLECTOR, COLLECTOR_COMBOS["ingress"], "csoc-collector", "csoc")
    grpc = one(objs, "Ingress", "csoc-collector-grpc")
    assert grpc["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    assert grpc["spec"]["tls"] == [{"hosts": ["csoc-grpc.example.org"], "secretName": "csoc-grpc-tls"}]
    backend = grpc["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "csoc-collector-grpc", "port": {"name": "grpc"}}
    http = one(objs, "Ingress", "csoc-collector-http")
    assert http["spec"]["rules"][0]["host"] == "csoc.example.org"
    assert collector_config(objs)["external_url"] == "https://csoc.example.org"
    # With TLS on the collector's gRPC port: GRPCS to the backend.
    objs = render(COLLECTOR, deep_merge(COLLECTOR_COMBOS["ingress"], COLLECTOR_COMBOS["existing-tls"]), "csoc-collector", "csoc")
    assert one(objs, "Ingress", "csoc-collector-grpc")["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPCS"


def test_collector_cert_manager_tls_and_mtls():
    objs = render(COLLECTOR, COLLECTOR_COMBOS["cert-manager"], "csoc-collector", "csoc")
    cert = one(objs, "Certificate")
    assert cert["spec"]["issuerRef"] == {"name": "letsencrypt", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    assert "csoc-collector-grpc.csoc.svc.cluster.local" in cert["spec"]["dnsNames"] and "csoc.internal" in cert["spec"]["dnsNames"]
    cfg = collector_config(objs)
    sts = one(objs, "StatefulSet")
    spec = sts["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    vols = {v["name"]: v for v in spec["volumes"]}
    assert cfg["grpc_tls"]["cert_file"] == mounts["tls-grpc"] + "/tls.crt"
    assert cfg["http_tls"]["key_file"] == mounts["tls-http"] + "/tls.key"
    assert vols["tls-grpc"]["secret"]["secretName"] == cert["spec"]["secretName"]
    assert spec["containers"][0]["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert "client_ca_file" not in cfg["grpc_tls"]

    objs = render(COLLECTOR, COLLECTOR_COMBOS["mtls"], "csoc-collector", "csoc")
    cfg = collector_config(objs)
    certs = {c["metadata"]["name"]: c for c in by_kind(objs, "Certificate")}
    assert set(certs) == {"csoc-collector-tls", "csoc-collector-agents-ca", "csoc-collector-agent-alpha", "csoc-collector-agent-beta-2"}
    assert certs["csoc-collector-agents-ca"]["spec"]["isCA"] is True
    assert certs["csoc-collector-agent-alpha"]["spec"]["usages"] == ["client auth", "digital signature"]
    assert certs["csoc-collector-agent-alpha"]["spec"]["issuerRef"]["name"] == "csoc-collector-agents-ca"
    issuers = {i["metadata"]["name"]: i["spec"] for i in by_kind(objs, "Issuer")}
    assert issuers["csoc-collector-agents-ca"] == {"ca": {"secretName": "csoc-collector-agents-ca"}}
    assert cfg["grpc_tls"]["client_auth"] == "require"
    spec = one(objs, "StatefulSet")["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    assert cfg["grpc_tls"]["client_ca_file"] == mounts["tls-agents-ca"] + "/ca.crt"
    assert {(c["commons"], c["name"]) for c in cfg["agent_certs"]} == {("gamma", "spiffe://csoc/gamma"), ("alpha", "agent.alpha"), ("Beta_2", "agent.beta")}


def test_collector_bad_values_fail_with_the_value_named():
    for values, needle in (
        ({"tls": {"grpc": {"enabled": True}}}, "tls.grpc.enabled"),
        ({"tls": {"grpc": {"clientAuth": "require"}}}, "tls.grpc.clientAuth"),
        ({"tls": {"grpc": {"clientAuth": "maybe"}}}, "tls.grpc.clientAuth"),
        ({"tls": {"certManager": {"enabled": True}}}, "tls.certManager.issuerRef.name"),
        ({"grpc": {"ingress": {"enabled": True}}}, "grpc.ingress.host"),
        ({"rules": {"extra": {"gen3": "groups: []"}}}, "rules.extra.gen3"),
    ):
        err = render_error(COLLECTOR, values)
        assert needle in err, f"{values}: {err}"


def test_collector_notes():
    text = notes(COLLECTOR, {}, "csoc-collector", "csoc")
    assert "http://csoc-collector-grpc.csoc.svc.cluster.local:9301" in text
    assert "No agent token is configured" in text


def test_agent_default_address_is_the_collector_charts_service():
    agent_cfg = agent_config(render(AGENT, {}, "gen3", "gen3"), "gen3-csoc-agent-config")
    svc = one(render(COLLECTOR, {}, "csoc-collector", "csoc"), "Service", "csoc-collector-grpc")
    want = f"http://{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc.cluster.local:{svc['spec']['ports'][0]['port']}"
    assert agent_cfg["collector"] == want


# ---------------------------------------------------------------------------
# Tests: the binaries accept every rendered config


def _openssl_pki(d: Path) -> dict[str, Path] | None:
    """A CA, a server certificate for csoc.example.org and a client certificate, or None without openssl."""
    openssl = shutil.which("openssl")
    if not openssl:
        return None

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=d, timeout=60)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    for name, eku, cn in (("server", "serverAuth", "csoc.example.org"), ("client", "clientAuth", "agent.alpha")):
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        (d / f"{name}.ext").write_text(f"subjectAltName=DNS:{cn}\nextendedKeyUsage={eku}\nbasicConstraints=CA:FALSE\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")
    return {"ca": d / "ca.crt", "server_crt": d / "server.crt", "server_key": d / "server.key", "client_crt": d / "client.crt", "client_key": d / "client.key"}


def _check(binary: str, config: dict, d: Path, what: str, extra: list[str] | None = None) -> None:
    path = d / "config.yml"
    path.write_text(yaml.safe_dump(config))
    env = dict(os.environ, CSOC_AGENT_NAME="gen3")
    r = subprocess.run([binary, "--check-config", "--config", str(path), *(extra or [])], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, f"{what}: {Path(binary).name} --check-config refused the rendered config:\n{r.stdout}{r.stderr}\n{path.read_text()}"


def test_agent_binary_accepts_every_rendered_config():
    binary = os.environ.get("CSOC_AGENT_BIN")
    if not binary:
        print("SKIPPED: CSOC_AGENT_BIN not set (tests/tests/helm.rs sets it to the built csoc-agent)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "token").write_text("0123456789abcdef0123456789abcdef\n")
        pki = _openssl_pki(d)
        for combo, values in AGENT_COMBOS.items():
            objs = render(AGENT, values, "gen3", "gen3")
            for cm in by_kind(objs, "ConfigMap"):
                cfg = yaml.safe_load(cm["data"]["agent.yml"])
                # The pod's paths, on this machine: the token file, the spool.
                cfg["token_file"] = str(d / "token")
                cfg["spool_dir"] = str(d / "spool")
                if "tls" in cfg:
                    if pki is None:
                        print(f"NOTE: {combo}: openssl missing, the TLS files are not checked")
                        cfg.pop("tls")
                        cfg["collector"] = cfg["collector"].replace("https://", "http://")
                    else:
                        cfg["tls"]["ca_file"] = str(pki["ca"])
                        cfg["tls"]["cert_file"] = str(pki["client_crt"])
                        cfg["tls"]["key_file"] = str(pki["client_key"])
                extra = []
                if cm["metadata"]["name"].endswith("-node-config"):
                    ds = one(objs, "DaemonSet")
                    args = ds["spec"]["template"]["spec"]["containers"][0]["args"]
                    extra = [a for a in args if a.startswith("--path.")]
                    extra = [x for a in extra for x in (a, args[args.index(a) + 1])]
                _check(binary, cfg, d, f"agent {combo} {cm['metadata']['name']}", extra)


def test_collector_binary_accepts_every_rendered_config():
    binary = os.environ.get("CSOC_COLLECTOR_BIN")
    if not binary:
        print("SKIPPED: CSOC_COLLECTOR_BIN not set (tests/tests/helm.rs sets it to the built csoc-collector)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        pki = _openssl_pki(d)
        for combo, values in COLLECTOR_COMBOS.items():
            objs = render(COLLECTOR, values, "csoc-collector", "csoc")
            cfg = collector_config(objs)
            cfg["data_dir"] = str(d / "data")
            rules_dir = d / f"rules-{combo}"
            rules_dir.mkdir()
            for name, text in (one(objs, "ConfigMap", "csoc-collector-rules").get("data") or {}).items():
                (rules_dir / name).write_text(text)
            cfg["rule_files"] = [str(rules_dir / "*.yml")]
            for key, files in (("grpc_tls", ("cert_file", "key_file", "client_ca_file")), ("http_tls", ("cert_file", "key_file"))):
                if key not in cfg:
                    continue
                if pki is None:
                    print(f"NOTE: {combo}: openssl missing, {key} is not checked")
                    cfg.pop(key)
                    continue
                sub = {"cert_file": pki["server_crt"], "key_file": pki["server_key"], "client_ca_file": pki["ca"]}
                for f in files:
                    if f in cfg[key]:
                        cfg[key][f] = str(sub[f])
            _check(binary, cfg, d, f"collector {combo}")


# ---------------------------------------------------------------------------
# Runner


def main() -> int:
    tests = [(n, f) for n, f in globals().items() if n.startswith("test_") and callable(f)]
    only = sys.argv[1:]
    if only:
        tests = [(n, f) for n, f in tests if any(o in n for o in only)]
    print(f"helm-python {helm.__version__} (Helm {helm.helm_sdk_version()}), kubernetes-validate {kubernetes_validate.__version__ if hasattr(kubernetes_validate, '__version__') else ''}, schemas for Kubernetes {K8S_VERSION} and {K8S_OLDEST}")
    passed = failed = 0
    for name, f in tests:
        try:
            f()
        except Exception:  # noqa: BLE001 - a test runner reports every failure
            failed += 1
            print(f"FAIL {name}")
            traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {name}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
