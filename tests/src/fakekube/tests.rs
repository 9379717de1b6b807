//! The fake's own tests, over HTTP as clients see it: paging, selectors,
//! resourceVersion semantics, watches (from a version, synthetic ADDED,
//! selectors, bookmarks, initial events, 410, cuts), logs, 401/403/404/405,
//! the metrics API, apply semantics and TLS.

use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::objects::{self, pod};
use super::selectors::{FieldSelector, LabelSelector};
use super::{FakeKube, Options, resources};

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

fn get(k: &FakeKube, path: &str) -> (u16, Value) {
    let r = client()
        .get(format!("{}{path}", k.url()))
        .bearer_auth(k.token())
        .send()
        .expect("request");
    let code = r.status().as_u16();
    let text = r.text().expect("body");
    (code, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn get_text(k: &FakeKube, path: &str) -> (u16, String) {
    let r = client()
        .get(format!("{}{path}", k.url()))
        .bearer_auth(k.token())
        .send()
        .expect("request");
    (r.status().as_u16(), r.text().expect("body"))
}

/// Opens a stream (watch or log follow).
fn open(k: &FakeKube, path: &str) -> BufReader<reqwest::blocking::Response> {
    let r = client()
        .get(format!("{}{path}", k.url()))
        .bearer_auth(k.token())
        .send()
        .expect("request");
    assert_eq!(r.status().as_u16(), 200, "{path}");
    BufReader::new(r)
}

fn next_event(s: &mut BufReader<reqwest::blocking::Response>) -> Value {
    let mut line = String::new();
    let n = s.read_line(&mut line).expect("read");
    assert!(n > 0, "stream ended");
    serde_json::from_str(&line).expect("event JSON")
}

/// The next event that is not a BOOKMARK.
fn next_change(s: &mut BufReader<reqwest::blocking::Response>) -> Value {
    loop {
        let e = next_event(s);
        if e["type"] != "BOOKMARK" {
            return e;
        }
    }
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["metadata"]["name"].as_str().expect("name").to_string())
        .collect()
}

fn five_pods(k: &FakeKube) {
    for (n, app) in [("a", "fence"), ("b", "indexd"), ("c", "fence"), ("d", "sheepdog"), ("e", "portal")] {
        k.apply(pod("gen3", n, app, "Running"));
    }
    k.apply(pod("other", "z", "fence", "Running"));
}

#[test]
fn apply_sets_uid_rv_and_creation_and_keeps_them_on_replace() {
    let k = FakeKube::start().expect("start");
    let rv0 = k.resource_version();
    let first = k.apply(pod("gen3", "fence-1", "fence", "Running"));
    let uid = first["metadata"]["uid"].as_str().expect("uid").to_string();
    assert_eq!(uid.len(), 36);
    assert_eq!(first["metadata"]["resourceVersion"], (rv0 + 1).to_string());
    let created = first["metadata"]["creationTimestamp"].clone();
    assert!(created.as_str().is_some_and(|c| c.ends_with('Z')));
    // The same object again changes nothing.
    let same = k.apply(pod("gen3", "fence-1", "fence", "Running"));
    assert_eq!(same["metadata"]["resourceVersion"], (rv0 + 1).to_string());
    let mut p = pod("gen3", "fence-1", "fence", "Running");
    objects::set_restarts(&mut p, "fence", 3);
    let second = k.apply(p);
    assert_eq!(second["metadata"]["uid"], uid.as_str());
    assert_eq!(second["metadata"]["creationTimestamp"], created);
    assert_eq!(second["metadata"]["resourceVersion"], (rv0 + 2).to_string());
    // Workloads count spec changes in generation.
    let d = k.apply(objects::deployment("gen3", "fence-deployment", 2, 2));
    assert_eq!(d["metadata"]["generation"], 1);
    let d = k.apply(objects::deployment("gen3", "fence-deployment", 2, 1));
    assert_eq!(d["metadata"]["generation"], 1, "a status change keeps the generation");
    let d = k.apply(objects::deployment("gen3", "fence-deployment", 3, 1));
    assert_eq!(d["metadata"]["generation"], 2);
    assert!(
        k.try_apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}))
            .is_err()
    );
    assert_eq!(k.get("Pod", Some("gen3"), "fence-1").expect("get")["metadata"]["uid"], uid.as_str());
    assert!(k.delete("pods", Some("gen3"), "fence-1"));
    assert!(!k.delete("pods", Some("gen3"), "fence-1"));
    assert!(k.get("pod", Some("gen3"), "fence-1").is_none());
}

#[test]
fn list_pages_with_limit_and_continue_from_a_consistent_snapshot() {
    let k = FakeKube::start().expect("start");
    five_pods(&k);
    let (code, p1) = get(&k, "/api/v1/namespaces/gen3/pods?limit=2");
    assert_eq!(code, 200, "{p1}");
    assert_eq!(p1["kind"], "PodList");
    assert_eq!(p1["apiVersion"], "v1");
    assert_eq!(names(&p1), ["a", "b"]);
    assert!(p1["items"][0].get("kind").is_none(), "list items carry no kind");
    assert_eq!(p1["metadata"]["remainingItemCount"], 3);
    let rv = p1["metadata"]["resourceVersion"].as_str().expect("rv").to_string();
    let cont = p1["metadata"]["continue"].as_str().expect("continue").to_string();
    // Changes between pages do not show in later pages.
    k.delete("Pod", Some("gen3"), "c");
    k.apply(pod("gen3", "bb", "fence", "Running"));
    let (_, p2) = get(&k, &format!("/api/v1/namespaces/gen3/pods?limit=2&continue={cont}"));
    assert_eq!(names(&p2), ["c", "d"]);
    assert_eq!(p2["metadata"]["resourceVersion"], rv.as_str());
    let cont = p2["metadata"]["continue"].as_str().expect("continue").to_string();
    let (_, p3) = get(&k, &format!("/api/v1/namespaces/gen3/pods?limit=2&continue={cont}"));
    assert_eq!(names(&p3), ["e"]);
    assert!(p3["metadata"].get("continue").is_none());
    // All namespaces, current state.
    let (_, all) = get(&k, "/api/v1/pods");
    assert_eq!(names(&all), ["a", "b", "bb", "d", "e", "z"]);
    assert_eq!(all["metadata"]["resourceVersion"], k.resource_version().to_string());
    // resourceVersion with continue is refused; a garbage token too.
    let (code, s) = get(
        &k,
        &format!("/api/v1/namespaces/gen3/pods?limit=2&continue={cont}&resourceVersion=3"),
    );
    assert_eq!((code, s["reason"].as_str()), (400, Some("BadRequest")));
    let (code, _) = get(&k, "/api/v1/namespaces/gen3/pods?limit=2&continue=garbage");
    assert_eq!(code, 400);
}

#[test]
fn continue_token_and_exact_list_from_before_compaction_are_410_expired() {
    let k = FakeKube::start().expect("start");
    five_pods(&k);
    let (_, p1) = get(&k, "/api/v1/namespaces/gen3/pods?limit=2");
    let rv: u64 = p1["metadata"]["resourceVersion"].as_str().expect("rv").parse().expect("number");
    let cont = p1["metadata"]["continue"].as_str().expect("continue").to_string();
    // Before compaction, an exact list at an older version is that state.
    k.apply(pod("gen3", "f", "fence", "Running"));
    let (code, old) = get(
        &k,
        &format!("/api/v1/namespaces/gen3/pods?resourceVersion={rv}&resourceVersionMatch=Exact"),
    );
    assert_eq!(code, 200);
    assert_eq!(names(&old), ["a", "b", "c", "d", "e"]);
    k.compact();
    let (code, s) = get(&k, &format!("/api/v1/namespaces/gen3/pods?limit=2&continue={cont}"));
    assert_eq!(code, 410, "{s}");
    assert_eq!(s["kind"], "Status");
    assert_eq!(s["reason"], "Expired");
    assert_eq!(s["code"], 410);
    let (code, s) = get(
        &k,
        &format!("/api/v1/namespaces/gen3/pods?resourceVersion={rv}&resourceVersionMatch=Exact"),
    );
    assert_eq!((code, s["reason"].as_str()), (410, Some("Expired")));
    // NotOlderThan an old version is the current state.
    let (code, cur) = get(
        &k,
        &format!("/api/v1/namespaces/gen3/pods?resourceVersion={rv}&resourceVersionMatch=NotOlderThan"),
    );
    assert_eq!(code, 200);
    assert_eq!(names(&cur).len(), 6);
    // A version from the future times out as the real server's does.
    let (code, s) = get(
        &k,
        "/api/v1/namespaces/gen3/pods?resourceVersion=999999&resourceVersionMatch=NotOlderThan",
    );
    assert_eq!((code, s["reason"].as_str()), (504, Some("Timeout")));
    assert_eq!(s["details"]["causes"][0]["reason"], "ResourceVersionTooLarge");
    // resourceVersionMatch needs resourceVersion.
    let (code, s) = get(&k, "/api/v1/namespaces/gen3/pods?resourceVersionMatch=Exact");
    assert_eq!((code, s["reason"].as_str()), (422, Some("Invalid")));
}

#[test]
fn label_selectors_parse_and_match_as_the_apiserver() {
    let obj = json!({"metadata": {"labels": {"app": "fence", "tier": "web", "n": "5"}}});
    let none = json!({"metadata": {}});
    let cases: &[(&str, bool, bool)] = &[
        ("", true, true),
        ("app=fence", true, false),
        ("app==fence", true, false),
        ("app!=fence", false, true),
        ("app!=indexd", true, true),
        ("app in (fence, indexd)", true, false),
        ("app notin (fence,indexd)", false, true),
        ("app", true, false),
        ("!app", false, true),
        ("app=fence,tier=web", true, false),
        ("app=fence,tier=db", false, false),
        ("n>4", true, false),
        ("n<5", false, false),
        ("app in (fence),!missing", true, false),
    ];
    for (sel, on_obj, on_none) in cases {
        let s = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
        assert_eq!(s.matches(&obj), *on_obj, "{sel} on labelled object");
        assert_eq!(s.matches(&none), *on_none, "{sel} on unlabelled object");
    }
    for bad in ["app=fence,", "a b", "app in fence", "=x", "app=-x-", "n>x"] {
        assert!(LabelSelector::parse(bad).is_err(), "{bad} should not parse");
    }
}

#[test]
fn field_selectors_know_the_types_fields_and_refuse_others() {
    let pods = &resources::RESOURCES[resources::POD];
    let p = pod("gen3", "a", "fence", "Running");
    assert!(FieldSelector::parse("metadata.name=a", pods).expect("parse").matches(&p));
    assert!(!FieldSelector::parse("metadata.name!=a", pods).expect("parse").matches(&p));
    assert!(
        FieldSelector::parse("status.phase=Running,spec.nodeName=node-1", pods)
            .expect("parse")
            .matches(&p)
    );
    assert_eq!(
        FieldSelector::parse("spec.foo=x", pods).expect_err("unsupported").0,
        "field label not supported: spec.foo"
    );
    let k = FakeKube::start().expect("start");
    five_pods(&k);
    let mut pending = pod("gen3", "p", "fence", "Pending");
    objects::set_labels(&mut pending, &[("tier", "web")]);
    k.apply(pending);
    let (_, l) = get(&k, "/api/v1/namespaces/gen3/pods?fieldSelector=status.phase%3DPending");
    assert_eq!(names(&l), ["p"]);
    let (_, l) = get(&k, "/api/v1/pods?labelSelector=app%20in%20(fence)%2Ctier%21%3Dweb");
    assert_eq!(names(&l), ["a", "c", "z"]);
    let (code, s) = get(&k, "/apis/apps/v1/deployments?fieldSelector=spec.replicas%3D1");
    assert_eq!(code, 400);
    assert_eq!(s["reason"], "BadRequest");
    assert!(
        s["message"].as_str().expect("message").contains("is not a known field selector"),
        "{s}"
    );
    let (code, _) = get(&k, "/api/v1/pods?labelSelector=a%20b");
    assert_eq!(code, 400);
}

#[test]
fn watch_from_a_resource_version_sends_the_changes_after_it_then_ends_at_timeout() {
    let k = FakeKube::start().expect("start");
    k.apply(pod("gen3", "a", "fence", "Running"));
    k.apply(pod("gen3", "b", "fence", "Running"));
    let rv = k.resource_version();
    k.apply(pod("gen3", "c", "fence", "Running"));
    let mut a = pod("gen3", "a", "fence", "Running");
    objects::set_restarts(&mut a, "fence", 1);
    k.apply(a);
    k.delete("Pod", Some("gen3"), "b");
    k.apply(pod("other", "x", "fence", "Running"));
    let start = Instant::now();
    let mut s = open(
        &k,
        &format!("/api/v1/namespaces/gen3/pods?watch=1&resourceVersion={rv}&timeoutSeconds=1"),
    );
    let e = next_event(&mut s);
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("c"))
    );
    assert_eq!(e["object"]["kind"], "Pod", "watch objects carry their kind");
    assert_eq!(e["object"]["apiVersion"], "v1");
    let e = next_event(&mut s);
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("MODIFIED"), Some("a"))
    );
    assert_eq!(e["object"]["status"]["containerStatuses"][0]["restartCount"], 1);
    let e = next_event(&mut s);
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("DELETED"), Some("b"))
    );
    assert_eq!(e["object"]["metadata"]["resourceVersion"], (rv + 3).to_string());
    // Live changes arrive too; the other namespace's never.
    k.apply(pod("gen3", "d", "fence", "Running"));
    let e = next_event(&mut s);
    assert_eq!(e["object"]["metadata"]["name"], "d");
    let mut rest = String::new();
    s.read_to_string(&mut rest).expect("clean end");
    assert_eq!(rest, "", "nothing else");
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn watch_from_zero_sends_synthetic_added_then_changes_and_selector_leavers_as_deleted() {
    let k = FakeKube::start().expect("start");
    five_pods(&k);
    let mut s = open(&k, "/api/v1/pods?watch=true&resourceVersion=0&labelSelector=app%3Dfence");
    let mut got: Vec<String> = (0..3)
        .map(|_| {
            let e = next_event(&mut s);
            assert_eq!(e["type"], "ADDED");
            e["object"]["metadata"]["name"].as_str().expect("name").to_string()
        })
        .collect();
    got.sort();
    assert_eq!(got, ["a", "c", "z"]);
    // "a" stops matching: DELETED at the change's resourceVersion.
    k.apply(pod("gen3", "a", "indexd", "Running"));
    let e = next_change(&mut s);
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("DELETED"), Some("a"))
    );
    assert_eq!(e["object"]["metadata"]["resourceVersion"], k.resource_version().to_string());
    // "b" starts matching: ADDED.
    k.apply(pod("gen3", "b", "fence", "Running"));
    let e = next_change(&mut s);
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("b"))
    );
    // A non-matching change is not sent; the next matching one is.
    k.apply(pod("gen3", "q", "portal", "Running"));
    k.apply(pod("gen3", "r", "fence", "Running"));
    let e = next_change(&mut s);
    assert_eq!(e["object"]["metadata"]["name"], "r");
}

#[test]
fn watch_of_one_object_and_table_events() {
    let k = FakeKube::start().expect("start");
    five_pods(&k);
    let rv = k.resource_version();
    let mut one = open(&k, &format!("/api/v1/namespaces/gen3/pods/b?watch=1&resourceVersion={rv}"));
    let r = client()
        .get(format!("{}/api/v1/namespaces/gen3/pods?watch=1&resourceVersion={rv}", k.url()))
        .bearer_auth(k.token())
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
        .send()
        .expect("request");
    let mut table = BufReader::new(r);
    let mut a = pod("gen3", "a", "fence", "Running");
    objects::set_restarts(&mut a, "fence", 2);
    k.apply(a);
    let mut b = pod("gen3", "b", "indexd", "Running");
    objects::set_waiting(&mut b, "indexd", "CrashLoopBackOff", "back-off");
    k.apply(b);
    let e = next_event(&mut one);
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("MODIFIED"), Some("b"))
    );
    let e = next_event(&mut table);
    assert_eq!(e["object"]["kind"], "Table");
    assert_eq!(
        e["object"]["rows"][0]["cells"],
        json!([
            "a",
            "1/1",
            "Running",
            2,
            e["object"]["rows"][0]["cells"][4],
            objects::pod_ip("a"),
            "node-1"
        ])
    );
    let e = next_event(&mut table);
    assert_eq!(e["object"]["rows"][0]["cells"][2], "CrashLoopBackOff");
    assert_eq!(e["object"]["rows"][0]["object"]["kind"], "PartialObjectMetadata");
}

#[test]
fn watch_bookmarks_carry_the_current_resource_version() {
    let k = FakeKube::start_with(Options {
        bookmark_interval: Duration::from_millis(100),
        ..Options::default()
    })
    .expect("start");
    five_pods(&k);
    let rv = k.resource_version();
    let mut s = open(
        &k,
        &format!("/api/v1/namespaces/gen3/pods?watch=1&resourceVersion={rv}&allowWatchBookmarks=true"),
    );
    k.apply(pod("other", "y", "fence", "Running"));
    // Only bookmarks come (the change is in another namespace), and soon
    // one carries the version after it.
    let mut seen = Vec::new();
    while seen.len() < 20 {
        let e = next_event(&mut s);
        assert_eq!(e["type"], "BOOKMARK", "{e}");
        assert_eq!(e["object"]["kind"], "Pod");
        assert_eq!(e["object"]["apiVersion"], "v1");
        let v = e["object"]["metadata"]["resourceVersion"].as_str().expect("rv").to_string();
        if v == (rv + 1).to_string() {
            break;
        }
        assert_eq!(v, rv.to_string(), "a bookmark from before the change");
        seen.push(v);
    }
    assert!(seen.len() < 20, "no bookmark at {}", rv + 1);
    // Without allowWatchBookmarks there are none.
    let mut s = open(
        &k,
        &format!("/api/v1/namespaces/gen3/pods?watch=1&resourceVersion={rv}&timeoutSeconds=1"),
    );
    let mut rest = String::new();
    s.read_to_string(&mut rest).expect("end");
    assert_eq!(rest, "");
}

#[test]
fn send_initial_events_ends_with_the_annotated_bookmark() {
    let k = FakeKube::start().expect("start");
    five_pods(&k);
    let rv = k.resource_version();
    let mut s = open(
        &k,
        "/api/v1/namespaces/gen3/pods?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&resourceVersion=",
    );
    for _ in 0..5 {
        assert_eq!(next_event(&mut s)["type"], "ADDED");
    }
    let e = next_event(&mut s);
    assert_eq!(e["type"], "BOOKMARK");
    assert_eq!(e["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
    assert_eq!(e["object"]["metadata"]["resourceVersion"], rv.to_string());
    // The required companions are enforced as on the real server.
    let (code, st) = get(
        &k,
        "/api/v1/pods?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan",
    );
    assert_eq!((code, st["reason"].as_str()), (422, Some("Invalid")));
}

#[test]
fn watch_from_a_compacted_version_gets_an_error_event_410_expired() {
    let k = FakeKube::start().expect("start");
    five_pods(&k);
    let rv = k.resource_version();
    let mut live = open(&k, &format!("/api/v1/pods?watch=1&resourceVersion={rv}"));
    k.compact();
    // Open watches end (compaction cuts them): abruptly, or, when the cut
    // races the stream's own end, cleanly; either way well before the
    // client's 20 s timeout, and with no change event after the compaction.
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = live.read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the watch was not ended by the compaction"
    );
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.lines().all(|l| l.contains("\"BOOKMARK\"") || l.contains("\"ERROR\"")),
        "only bookmarks or an error before the end: {rest}"
    );
    let mut s = open(&k, &format!("/api/v1/pods?watch=1&resourceVersion={rv}"));
    let e = next_event(&mut s);
    assert_eq!(e["type"], "ERROR");
    assert_eq!(e["object"]["kind"], "Status");
    assert_eq!(e["object"]["code"], 410);
    assert_eq!(e["object"]["reason"], "Expired");
    assert!(
        e["object"]["message"]
            .as_str()
            .expect("message")
            .starts_with("too old resource version")
    );
    let mut rest = String::new();
    s.read_to_string(&mut rest).expect("then the stream ends");
    assert_eq!(rest, "");
    // From the current version the watch works.
    let now = k.resource_version();
    let mut s = open(&k, &format!("/api/v1/pods?watch=1&resourceVersion={now}"));
    k.apply(pod("gen3", "new", "fence", "Running"));
    assert_eq!(next_event(&mut s)["object"]["metadata"]["name"], "new");
}

#[test]
fn history_is_bounded_and_slow_or_old_watchers_get_410() {
    let k = FakeKube::start_with(Options {
        history: 3,
        ..Options::default()
    })
    .expect("start");
    let rv = k.resource_version();
    for i in 0..5 {
        k.apply(pod("gen3", &format!("p{i}"), "fence", "Running"));
    }
    let mut s = open(&k, &format!("/api/v1/pods?watch=1&resourceVersion={rv}"));
    assert_eq!(next_event(&mut s)["object"]["code"], 410);
    let mut s = open(&k, &format!("/api/v1/pods?watch=1&resourceVersion={}", rv + 2));
    assert_eq!(next_event(&mut s)["object"]["metadata"]["name"], "p2");
}

#[test]
fn cut_watches_drops_the_connection_mid_stream() {
    let k = FakeKube::start().expect("start");
    k.apply(pod("gen3", "a", "fence", "Running"));
    let mut s = open(&k, "/api/v1/namespaces/gen3/pods?watch=1");
    assert_eq!(next_event(&mut s)["type"], "ADDED");
    k.cut_watches();
    let mut rest = Vec::new();
    let r = s.read_to_end(&mut rest);
    assert!(r.is_err(), "an abrupt end, not a clean one: {r:?}");
    let watches = k.requests().iter().filter(|r| r.watch).count();
    assert_eq!(watches, 1);
}

#[test]
fn forbidden_resources_answer_403_with_the_apiservers_message() {
    let k = FakeKube::start().expect("start");
    k.apply(objects::node("node-1", true));
    k.forbid("nodes");
    let (code, s) = get(&k, "/api/v1/nodes");
    assert_eq!(code, 403);
    assert_eq!(s["reason"], "Forbidden");
    assert_eq!(
        s["message"],
        "nodes is forbidden: User \"system:serviceaccount:gen3:csoc-agent\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
    );
    assert_eq!(s["details"], json!({"kind": "nodes"}));
    let (code, s) = get(&k, "/api/v1/nodes/node-1");
    assert_eq!(code, 403);
    assert_eq!(s["details"]["name"], "node-1");
    let (code, s) = get(&k, "/api/v1/nodes?watch=1");
    assert_eq!(code, 403);
    assert!(s["message"].as_str().expect("message").contains("cannot watch resource"));
    k.forbid("cronjobs");
    let (code, s) = get(&k, "/apis/batch/v1/namespaces/gen3/cronjobs");
    assert_eq!(code, 403);
    assert_eq!(
        s["message"],
        "cronjobs.batch is forbidden: User \"system:serviceaccount:gen3:csoc-agent\" cannot list resource \"cronjobs\" in API group \"batch\" in the namespace \"gen3\""
    );
    assert_eq!(s["details"], json!({"group": "batch", "kind": "cronjobs"}));
    k.apply(pod("gen3", "a", "fence", "Running"));
    k.forbid("pods/log");
    let (code, s) = get(&k, "/api/v1/namespaces/gen3/pods/a/log");
    assert_eq!(code, 403);
    assert!(s["message"].as_str().expect("message").contains("cannot get resource \"pods/log\""));
    assert_eq!(get(&k, "/api/v1/namespaces/gen3/pods/a").0, 200, "pods themselves stay readable");
    k.allow("nodes");
    assert_eq!(get(&k, "/api/v1/nodes").0, 200);
}

#[test]
fn unauthenticated_unknown_and_unsupported_requests_get_status_objects() {
    let k = FakeKube::start().expect("start");
    let r = client().get(format!("{}/api/v1/pods", k.url())).send().expect("request");
    assert_eq!(r.status().as_u16(), 401);
    let s: Value = r.json().expect("json");
    assert_eq!((s["kind"].as_str(), s["reason"].as_str()), (Some("Status"), Some("Unauthorized")));
    let r = client().get(format!("{}/version", k.url())).send().expect("request");
    assert_eq!(r.status().as_u16(), 200, "/version is public");
    let (code, s) = get(&k, "/api/v1/secrets");
    assert_eq!((code, s["reason"].as_str()), (404, Some("NotFound")));
    let (code, s) = get(&k, "/api/v1/namespaces/gen3/pods/nope");
    assert_eq!((code, s["message"].as_str()), (404, Some("pods \"nope\" not found")));
    assert_eq!(s["details"], json!({"name": "nope", "kind": "pods"}));
    let (code, _) = get(&k, "/api/v1/namespaces/gen3/nodes");
    assert_eq!(code, 404, "nodes are cluster-scoped");
    let (code, _) = get(&k, "/openapi/v2");
    assert_eq!(code, 404);
    let r = client()
        .post(format!("{}/api/v1/namespaces/gen3/pods", k.url()))
        .bearer_auth(k.token())
        .body("{}")
        .send()
        .expect("request");
    assert_eq!(r.status().as_u16(), 405);
    let s: Value = r.json().expect("json");
    assert_eq!(s["reason"], "MethodNotAllowed");
}

#[test]
fn discovery_lists_the_groups_and_resources_with_their_verbs() {
    let k = FakeKube::start().expect("start");
    let (_, api) = get(&k, "/api");
    assert_eq!(api["versions"], json!(["v1"]));
    let (_, v1) = get(&k, "/api/v1");
    let pods = v1["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["name"] == "pods")
        .expect("pods")
        .clone();
    assert_eq!(pods["verbs"], json!(["get", "list", "watch"]));
    assert_eq!(pods["shortNames"], json!(["po"]));
    assert!(
        v1["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .any(|r| r["name"] == "pods/log")
    );
    let (_, apis) = get(&k, "/apis");
    let groups: Vec<&str> = apis["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert_eq!(groups, ["apps", "batch", "discovery.k8s.io", "metrics.k8s.io"]);
    let (_, apps) = get(&k, "/apis/apps/v1");
    assert_eq!(apps["groupVersion"], "apps/v1");
    let (code, g) = get(&k, "/apis/batch");
    assert_eq!((code, g["kind"].as_str()), (200, Some("APIGroup")));
}

#[test]
fn metrics_api_serves_pod_usage_until_disabled() {
    let k = FakeKube::start().expect("start");
    k.apply(pod("gen3", "a", "fence", "Running"));
    k.set_pod_metrics("gen3", "a", &[("fence", "250m", "64Mi")]);
    k.set_node_metrics("node-1", "1500m", "8Gi");
    let (code, l) = get(&k, "/apis/metrics.k8s.io/v1beta1/namespaces/gen3/pods");
    assert_eq!(code, 200);
    assert_eq!(l["kind"], "PodMetricsList");
    assert_eq!(
        l["items"][0]["containers"][0],
        json!({"name": "fence", "usage": {"cpu": "250m", "memory": "64Mi"}})
    );
    assert_eq!(l["items"][0]["metadata"]["labels"]["app"], "fence");
    let (code, one) = get(&k, "/apis/metrics.k8s.io/v1beta1/namespaces/gen3/pods/a");
    assert_eq!((code, one["kind"].as_str()), (200, Some("PodMetrics")));
    let (_, nodes) = get(&k, "/apis/metrics.k8s.io/v1beta1/nodes");
    assert_eq!(nodes["items"][0]["usage"]["cpu"], "1500m");
    assert_eq!(get(&k, "/apis/metrics.k8s.io/v1beta1/pods?watch=1").0, 405);
    k.disable_metrics_api();
    assert_eq!(get(&k, "/apis/metrics.k8s.io/v1beta1/namespaces/gen3/pods").0, 404);
    assert_eq!(get(&k, "/apis/metrics.k8s.io/v1beta1").0, 404);
    let (_, apis) = get(&k, "/apis");
    assert!(!apis.to_string().contains("metrics.k8s.io"));
}

#[test]
fn logs_have_kubelet_timestamps_since_time_at_second_precision_and_tail() {
    let k = FakeKube::start().expect("start");
    k.apply(pod("gen3", "rp", "revproxy", "Running"));
    k.log_at("gen3", "rp", "revproxy", "2025-09-24T10:00:00.100000000Z", "one");
    k.log_at("gen3", "rp", "revproxy", "2025-09-24T10:00:01.500000000Z", "two");
    k.log_at("gen3", "rp", "revproxy", "2025-09-24T10:00:02.250000000Z", "three");
    let (code, all) = get_text(&k, "/api/v1/namespaces/gen3/pods/rp/log");
    assert_eq!((code, all.as_str()), (200, "one\ntwo\nthree\n"));
    let (_, ts) = get_text(&k, "/api/v1/namespaces/gen3/pods/rp/log?container=revproxy&timestamps=true");
    assert_eq!(
        ts,
        "2025-09-24T10:00:00.100000000Z one\n2025-09-24T10:00:01.500000000Z two\n2025-09-24T10:00:02.250000000Z three\n"
    );
    // 10:00:01.900 counts as 10:00:01: "two" (at .5) is included.
    let (_, since) = get_text(&k, "/api/v1/namespaces/gen3/pods/rp/log?sinceTime=2025-09-24T10%3A00%3A01.900Z");
    assert_eq!(since, "two\nthree\n");
    let (_, since) = get_text(
        &k,
        "/api/v1/namespaces/gen3/pods/rp/log?sinceTime=2025-09-24T12%3A00%3A02%2B02%3A00",
    );
    assert_eq!(since, "three\n", "offsets are honoured");
    let (_, tail) = get_text(&k, "/api/v1/namespaces/gen3/pods/rp/log?tailLines=1");
    assert_eq!(tail, "three\n");
    let (_, limited) = get_text(&k, "/api/v1/namespaces/gen3/pods/rp/log?limitBytes=6");
    assert_eq!(limited, "one\ntw");
    let (code, s) = get(
        &k,
        "/api/v1/namespaces/gen3/pods/rp/log?sinceSeconds=5&sinceTime=2025-09-24T10%3A00%3A00Z",
    );
    assert_eq!((code, s["reason"].as_str()), (422, Some("Invalid")));
    k.log("gen3", "rp", "revproxy", "now");
    let (_, recent) = get_text(&k, "/api/v1/namespaces/gen3/pods/rp/log?sinceSeconds=60&timestamps=true");
    let (stamp, line) = recent.trim_end().split_once(' ').expect("stamp and line");
    assert_eq!(line, "now");
    assert_eq!(
        stamp.len(),
        "2025-09-24T10:00:00.100000000Z".len(),
        "nine fractional digits: {stamp}"
    );
}

#[test]
fn logs_need_a_container_name_when_the_pod_has_several_and_a_known_pod() {
    let k = FakeKube::start().expect("start");
    let mut p = pod("gen3", "fence-1", "fence", "Running");
    objects::add_container(&mut p, "sidecar");
    k.apply(p);
    let (code, s) = get(&k, "/api/v1/namespaces/gen3/pods/fence-1/log");
    assert_eq!(code, 400);
    assert_eq!(
        s["message"],
        "a container name must be specified for pod fence-1, choose one of: [fence sidecar]"
    );
    let (code, s) = get(&k, "/api/v1/namespaces/gen3/pods/fence-1/log?container=nope");
    assert_eq!(
        (code, s["message"].as_str()),
        (400, Some("container nope is not valid for pod fence-1"))
    );
    let (code, s) = get(&k, "/api/v1/namespaces/gen3/pods/ghost/log");
    assert_eq!((code, s["message"].as_str()), (404, Some("pods \"ghost\" not found")));
    assert_eq!(get(&k, "/api/v1/namespaces/gen3/pods/fence-1/log?container=sidecar").0, 200);
}

#[test]
fn log_follow_streams_new_lines_and_ends_when_the_pod_is_deleted() {
    let k = FakeKube::start().expect("start");
    k.apply(pod("gen3", "rp", "revproxy", "Running"));
    k.log("gen3", "rp", "revproxy", "before");
    let mut s = open(&k, "/api/v1/namespaces/gen3/pods/rp/log?follow=true&container=revproxy");
    let mut line = String::new();
    s.read_line(&mut line).expect("read");
    assert_eq!(line, "before\n");
    k.log("gen3", "rp", "revproxy", "after");
    line.clear();
    s.read_line(&mut line).expect("read");
    assert_eq!(line, "after\n");
    // The last line logged just before deletion still arrives.
    k.log("gen3", "rp", "revproxy", "last");
    k.delete("Pod", Some("gen3"), "rp");
    let mut rest = String::new();
    s.read_to_string(&mut rest).expect("clean end");
    assert_eq!(rest, "last\n");
    assert_eq!(get(&k, "/api/v1/namespaces/gen3/pods/rp/log").0, 404);
}

#[test]
fn https_with_the_generated_ca_and_a_kubeconfig_pointing_at_it() {
    let k = FakeKube::start().expect("start");
    let ca = reqwest::Certificate::from_pem(k.ca_pem().as_bytes()).expect("CA");
    let c = reqwest::blocking::Client::builder()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let r = c
        .get(format!("{}/api/v1/namespaces", k.https_url()))
        .bearer_auth(k.token())
        .send()
        .expect("https request");
    assert_eq!(r.status().as_u16(), 200);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    k.write_kubeconfig(&path, "gen3").expect("kubeconfig");
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.contains(&format!("server: {}", k.https_url())));
    assert!(text.contains("certificate-authority-data: "));
    assert!(text.contains("namespace: \"gen3\""));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
