//! Tests of the Kubernetes API code against a stand-in API server.
//!
//! No Kubernetes control plane can run on this machine, so [`FakeApi`] stands in for the API
//! server: a small HTTP server on 127.0.0.1 (a free port) that speaks the real API's JSON for
//! exactly the calls the node makes: GET, list and watch (`?fieldSelector=metadata.name%3Dpetkv
//! &watch=true`, streaming `{"type":"ADDED"|"MODIFIED","object":{…}}` lines) of the
//! StatefulSet; GET, POST and PUT of the ConfigMap; and errors as `Status` objects (404
//! NotFound, 409 AlreadyExists / Conflict, 500 InternalError) in the API's JSON shape. A real
//! `kube::Client` is pointed at it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::*;
use crate::pod::marker::{BootstrapMarker, MarkerError};

const NS: &str = "shop";
const SET: &str = "petkv";
const CM: &str = "petkv-bootstrap";
const SET_UID: &str = "6f1d3c2e-0000-4000-8000-000000000001";

/// The stand-in API server's state.
struct FakeApi {
    /// spec.replicas of the set after each change; resourceVersion n is entry n-1.
    history: Mutex<Vec<i32>>,
    grew: watch::Sender<usize>,
    configmap: Mutex<Option<Value>>,
    /// Every request, as "METHOD path?query".
    requests: Mutex<Vec<String>>,
    /// Bodies of POSTs and PUTs to the ConfigMap.
    posts: Mutex<Vec<Value>>,
    puts: Mutex<Vec<Value>>,
    /// When set, every call answers 500.
    broken: std::sync::atomic::AtomicBool,
    next_rv: std::sync::atomic::AtomicU64,
}

impl FakeApi {
    fn new(replicas: i32) -> Arc<Self> {
        Arc::new(Self {
            history: Mutex::new(vec![replicas]),
            grew: watch::channel(1).0,
            configmap: Mutex::new(None),
            requests: Mutex::new(Vec::new()),
            posts: Mutex::new(Vec::new()),
            puts: Mutex::new(Vec::new()),
            broken: false.into(),
            next_rv: 1000.into(),
        })
    }

    fn scale(&self, replicas: i32) {
        let len = {
            let mut h = self.history.lock().expect("lock");
            h.push(replicas);
            h.len()
        };
        self.grew.send_replace(len);
    }

    fn break_it(&self) {
        self.broken.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }

    fn rv(&self) -> String {
        self.next_rv.fetch_add(1, std::sync::atomic::Ordering::SeqCst).to_string()
    }
}

fn statefulset(replicas: i32, resource_version: usize) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": SET, "namespace": NS, "uid": SET_UID,
            "resourceVersion": resource_version.to_string(), "generation": resource_version,
        },
        "spec": {
            "replicas": replicas,
            "serviceName": "petkv-peers",
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app.kubernetes.io/name": "petkv"}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "petkv"}},
                "spec": {"containers": [{"name": "petkv", "image": "ghcr.io/petkv/petkv:0.1.0"}]}
            }
        },
        "status": {"replicas": replicas, "availableReplicas": replicas}
    })
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, Json(body)).into_response()
}

fn not_found(kind: &str, name: &str) -> Response {
    status(StatusCode::NOT_FOUND, "NotFound", format!("{kind} \"{name}\" not found"))
}

/// Answers 500 while broken; records every request.
async fn gate(State(api): State<Arc<FakeApi>>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let uri: &Uri = req.uri();
    api.requests.lock().expect("lock").push(format!("{} {}", req.method(), uri));
    if api.broken.load(std::sync::atomic::Ordering::SeqCst) {
        return status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "etcdserver: request timed out".into());
    }
    next.run(req).await
}

async fn get_set(State(api): State<Arc<FakeApi>>, Path((ns, name)): Path<(String, String)>) -> Response {
    if ns != NS || name != SET {
        return not_found("statefulsets.apps", &name);
    }
    let h = api.history.lock().expect("lock");
    Json(statefulset(h[h.len() - 1], h.len())).into_response()
}

/// List, or watch with `watch=true`: replays every change after `resourceVersion`, then streams
/// new ones as they come.
async fn list_or_watch(
    State(api): State<Arc<FakeApi>>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let selected = q.get("fieldSelector").map(String::as_str) == Some("metadata.name=petkv");
    let visible = ns == NS && q.get("fieldSelector").is_none_or(|_| selected);
    if q.get("watch").map(String::as_str) != Some("true") {
        let h = api.history.lock().expect("lock");
        let items = if visible { vec![statefulset(h[h.len() - 1], h.len())] } else { vec![] };
        let list = json!({
            "apiVersion": "apps/v1", "kind": "StatefulSetList",
            "metadata": {"resourceVersion": h.len().to_string()}, "items": items,
        });
        return Json(list).into_response();
    }
    let after: usize = q.get("resourceVersion").and_then(|rv| rv.parse().ok()).unwrap_or(0);
    let rx = api.grew.subscribe();
    let stream = futures::stream::unfold((api, rx, after), move |(api, mut rx, sent)| async move {
        loop {
            let next = {
                let h = api.history.lock().expect("lock");
                (h.len() > sent).then(|| (h[sent], sent + 1))
            };
            if let Some((replicas, rv)) = next {
                let kind = if rv == 1 { "ADDED" } else { "MODIFIED" };
                let line = format!("{}\n", json!({"type": kind, "object": statefulset(replicas, rv)}));
                return Some((Ok::<_, std::convert::Infallible>(Bytes::from(line)), (api, rx, rv)));
            }
            rx.changed().await.ok()?;
        }
    });
    let body = if visible { Body::from_stream(stream) } else { Body::empty() };
    Response::builder()
        .header("content-type", "application/json")
        .body(body)
        .unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
}

async fn get_cm(State(api): State<Arc<FakeApi>>, Path((_, name)): Path<(String, String)>) -> Response {
    match api.configmap.lock().expect("lock").clone() {
        Some(cm) if name == CM => Json(cm).into_response(),
        _ => not_found("configmaps", &name),
    }
}

async fn post_cm(State(api): State<Arc<FakeApi>>, Path(_ns): Path<String>, Json(mut body): Json<Value>) -> Response {
    api.posts.lock().expect("lock").push(body.clone());
    let name = body["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let mut slot = api.configmap.lock().expect("lock");
    if slot.is_some() {
        return status(StatusCode::CONFLICT, "AlreadyExists", format!("configmaps \"{name}\" already exists"));
    }
    body["metadata"]["uid"] = json!("cm-uid");
    body["metadata"]["resourceVersion"] = json!(api.rv());
    *slot = Some(body.clone());
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn put_cm(
    State(api): State<Arc<FakeApi>>,
    Path((_ns, name)): Path<(String, String)>,
    Json(mut body): Json<Value>,
) -> Response {
    api.puts.lock().expect("lock").push(body.clone());
    let mut slot = api.configmap.lock().expect("lock");
    let Some(current) = slot.as_ref() else { return not_found("configmaps", &name) };
    if current["metadata"]["resourceVersion"] != body["metadata"]["resourceVersion"] {
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            format!("Operation cannot be fulfilled on configmaps \"{name}\": the object has been modified"),
        );
    }
    body["metadata"]["resourceVersion"] = json!(api.rv());
    *slot = Some(body.clone());
    Json(body).into_response()
}

/// Starts the stand-in API server; returns a client pointed at it.
async fn serve(api: Arc<FakeApi>) -> Client {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a free port");
    serve_on(api, listener)
}

/// Starts the stand-in API server on `listener`; returns a client pointed at it.
fn serve_on(api: Arc<FakeApi>, listener: tokio::net::TcpListener) -> Client {
    let app = Router::new()
        .route("/apis/apps/v1/namespaces/{ns}/statefulsets", get(list_or_watch))
        .route("/apis/apps/v1/namespaces/{ns}/statefulsets/{name}", get(get_set))
        .route("/api/v1/namespaces/{ns}/configmaps", axum::routing::post(post_cm))
        .route("/api/v1/namespaces/{ns}/configmaps/{name}", get(get_cm).put(put_cm))
        .layer(axum::middleware::from_fn_with_state(api.clone(), gate))
        .with_state(api);
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    client_for(&format!("http://{addr}"))
}

fn client_for(url: &str) -> Client {
    let config = kube::Config::new(url.parse().expect("a valid URL"));
    Client::try_from(config).expect("a client")
}

/// A client for an API server that is down: a port nothing listens on.
async fn down_client() -> Client {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    client_for(&format!("http://{addr}"))
}

fn context(client: Client) -> KubeContext {
    KubeContext::new(client, NS, SET)
}

async fn next_seen(stream: &mut (impl Stream<Item = Option<u32>> + Unpin)) -> Option<u32> {
    tokio::time::timeout(Duration::from_secs(10), stream.next()).await.expect("a watch event in time").expect("open")
}

#[tokio::test]
async fn the_watcher_reports_each_spec_replicas_and_the_leader_follows_all_but_zero() {
    let api = FakeApi::new(3);
    let kube = context(serve(api.clone()).await);
    let mut seen = Box::pin(kube.watch_replicas());
    let mut declared = Some(3);
    let mut proposed = Vec::new();
    let mut actions = Vec::new();
    for next in [None, Some(2), Some(0), Some(4)] {
        if let Some(r) = next {
            api.scale(r);
        }
        let spec = next_seen(&mut seen).await;
        assert_eq!(spec, Some(next.map_or(3, |r| r as u32)), "each value of spec.replicas is reported");
        let action = replica_action(true, declared, spec);
        if let ReplicaAction::Propose(r) = action {
            proposed.push(r);
            declared = Some(r); // what the committed SetReplicas does
        }
        actions.push(action);
    }
    assert_eq!(
        actions,
        [ReplicaAction::Nothing, ReplicaAction::Propose(2), ReplicaAction::FullStop, ReplicaAction::Propose(4)]
    );
    assert_eq!(proposed, [2, 4], "replicas 0 never changes the declared count");
    let requests = api.requests();
    let list = requests.iter().find(|r| !r.contains("watch=true")).expect("a list");
    let watch = requests.iter().find(|r| r.contains("watch=true")).expect("a watch");
    for r in [list, watch] {
        assert!(r.starts_with("GET /apis/apps/v1/namespaces/shop/statefulsets?"), "{r}");
        assert!(r.contains("fieldSelector=metadata.name%3Dpetkv"), "selected by name (RBAC resourceNames): {r}");
    }
}

#[tokio::test]
async fn the_watcher_survives_an_api_error_and_lists_again() {
    let api = FakeApi::new(3);
    api.break_it();
    let kube = context(serve(api.clone()).await);
    let mut seen = Box::pin(kube.watch_replicas());
    let while_broken = tokio::time::timeout(Duration::from_millis(300), seen.next()).await;
    assert!(while_broken.is_err(), "an error is logged, not reported as a value: {while_broken:?}");
    api.broken.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(next_seen(&mut seen).await, Some(3), "the watcher lists again after the back-off");
    assert!(api.requests().len() >= 2, "the failed list was retried");
}

#[test]
fn only_the_leader_acts_and_only_on_a_difference() {
    use ReplicaAction::*;
    assert_eq!(replica_action(false, Some(3), Some(2)), Nothing, "a follower does nothing");
    assert_eq!(replica_action(false, Some(3), Some(0)), Nothing);
    assert_eq!(replica_action(true, Some(3), None), Nothing, "nothing seen yet");
    assert_eq!(replica_action(true, Some(3), Some(3)), Nothing, "already declared");
    assert_eq!(replica_action(true, Some(3), Some(2)), Propose(2));
    assert_eq!(replica_action(true, None, Some(3)), Propose(3), "a set never scaled declares its size");
    assert_eq!(replica_action(true, Some(3), Some(1)), Propose(1), "below a quorum: the reconciler stages it");
    assert_eq!(replica_action(true, Some(3), Some(0)), FullStop, "a full stop keeps the membership");
    assert_eq!(replica_action(true, None, Some(0)), FullStop);
    assert_eq!(replica_action(true, Some(3), Some(MAX_REPLICAS + 1)), TooMany(MAX_REPLICAS + 1));
}

#[tokio::test]
async fn spec_replicas_is_read_now_for_a_pod_at_sigterm() {
    let api = FakeApi::new(3);
    let kube = context(serve(api.clone()).await);
    assert_eq!(kube.spec_replicas().await.expect("read"), Some(3));
    api.scale(1);
    assert_eq!(kube.declared_by_the_set().await, Some(1));
    api.scale(0);
    assert_eq!(kube.declared_by_the_set().await, None, "a full stop is not a scale-down");
    assert_eq!(context(down_client().await).declared_by_the_set().await, None, "no answer: fall back");
}

#[tokio::test]
async fn the_marker_is_absent_then_recorded_without_an_owner_then_read_back() {
    let api = FakeApi::new(3);
    let marker = BootstrapMarker::ConfigMap(ConfigMapMarker::new(context(serve(api.clone()).await), CM));
    assert!(marker.to_string().contains("shop/petkv-bootstrap"), "{marker}");
    assert_eq!(marker.read().await.expect("read"), None, "404: the set was never bootstrapped");
    assert_eq!(marker.record("c0ffee").await.expect("record"), "c0ffee");
    let posts = api.posts.lock().expect("lock").clone();
    assert_eq!(posts.len(), 1);
    let body = &posts[0];
    assert_eq!(body["metadata"]["name"], CM);
    assert_eq!(body["data"]["clusterId"], "c0ffee");
    // No ownerReference: garbage collection must not delete the marker with the set, or
    // applying the set again would let an empty petkv-0 start a second cluster.
    assert!(body["metadata"].get("ownerReferences").is_none(), "{body}");
    assert_eq!(marker.read().await.expect("read"), Some("c0ffee".into()));
}

#[tokio::test]
async fn a_409_on_create_reads_back_the_id_someone_else_recorded() {
    let api = FakeApi::new(3);
    *api.configmap.lock().expect("lock") = Some(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": CM, "namespace": NS, "resourceVersion": "7"},
        "data": {"clusterId": "beef"}
    }));
    let marker = ConfigMapMarker::new(context(serve(api.clone()).await), CM);
    assert_eq!(marker.record("c0ffee").await.expect("record"), "beef", "the recorded id wins");
    assert_eq!(api.posts.lock().expect("lock").len(), 1);
    assert!(api.puts.lock().expect("lock").is_empty(), "an id already recorded is never replaced");
}

#[tokio::test]
async fn a_configmap_created_empty_by_the_manifests_is_absent_and_gets_the_id() {
    let api = FakeApi::new(3);
    // Owned by the set (as an older manifest made it) and by something else.
    *api.configmap.lock().expect("lock") = Some(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": CM, "namespace": NS, "resourceVersion": "7", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": SET, "uid": SET_UID},
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": "1"}
        ]}
    }));
    let marker = ConfigMapMarker::new(context(serve(api.clone()).await), CM);
    assert_eq!(marker.read().await.expect("read"), None, "no clusterId: not bootstrapped");
    assert_eq!(marker.record("c0ffee").await.expect("record"), "c0ffee");
    let puts = api.puts.lock().expect("lock").clone();
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0]["metadata"]["resourceVersion"], "7", "the replace is guarded by the version read");
    let owners = puts[0]["metadata"]["ownerReferences"].as_array().cloned().unwrap_or_default();
    assert_eq!(owners.len(), 1, "the set no longer owns the marker, the other owner stays: {owners:?}");
    assert_eq!(owners[0]["name"], "other");
    assert_eq!(marker.read().await.expect("read"), Some("c0ffee".into()));
}

#[tokio::test]
async fn an_api_that_answers_500_makes_read_an_error_not_absent() {
    let api = FakeApi::new(3);
    api.break_it();
    let marker = BootstrapMarker::ConfigMap(ConfigMapMarker::new(context(serve(api.clone()).await), CM));
    let err = marker.read().await.expect_err("a 500 is not an absent marker");
    assert!(matches!(err, MarkerError::Kube(KubeError::Api { action: "read", .. })), "{err:?}");
    assert!(error_chain(&err).contains("ConfigMap shop/petkv-bootstrap"), "{}", error_chain(&err));
    assert!(marker.record("c0ffee").await.is_err(), "nor can it be recorded");
}

#[tokio::test]
async fn an_api_that_is_down_makes_read_an_error_not_absent() {
    let marker = BootstrapMarker::ConfigMap(ConfigMapMarker::new(context(down_client().await), CM));
    let err = marker.read().await.expect_err("an unreachable API is not an absent marker");
    assert!(matches!(err, MarkerError::Kube(_)), "{err:?}");
}

/// A free port on 127.0.0.1 (bound, then released).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn node_config(data_dir: &std::path::Path, client: u16, peer: u16) -> crate::config::NodeConfig {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: crate::cli::serve::ServeArgs,
    }
    let (client, peer) = (format!("127.0.0.1:{client}"), format!("127.0.0.1:{peer}"));
    // A free HTTP port too: the default 0.0.0.0:7381 cannot be bound while any other process
    // on the machine listens on some address's 7381 (a harness pod), and the node would stop.
    let http = format!("127.0.0.1:{}", free_port());
    let peers = format!("0={peer}");
    let data_dir = data_dir.to_str().expect("utf8");
    let args = ["petkv", "--hostname", "petkv-0", "--data-dir", data_dir, "--peers", &peers];
    let args = args.into_iter().chain(["--client-listen", &client, "--peer-listen", &peer, "--http-listen", &http]);
    Cli::try_parse_from(args).expect("flags").serve.to_config().expect("config")
}

/// Polls the node's status until `cond` holds (10 s at most).
async fn until(
    petkv: &petkv_client::Client,
    what: &str,
    cond: impl Fn(&petkv_client::pb::v1::NodeStatus) -> bool,
) -> petkv_client::pb::v1::NodeStatus {
    for _ in 0..100 {
        if let Ok(s) = petkv.status().await {
            if cond(&s) {
                return s;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within 10 s");
}

/// One real node (ordinal 0, `server::run`) against the stand-in API server: while the API is
/// down it waits instead of bootstrapping; once the API answers it bootstraps, records the
/// marker (owned by nothing), and (as the leader) follows spec.replicas 3 → 2 and ignores 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_waits_for_the_api_then_bootstraps_and_follows_spec_replicas() {
    let api = FakeApi::new(3);
    let api_port = free_port();
    let kube = context(client_for(&format!("http://127.0.0.1:{api_port}")));
    let dir = tempfile::tempdir().expect("tempdir");
    let (client_port, peer_port) = (free_port(), free_port());
    let mut config = node_config(dir.path(), client_port, peer_port);
    config.bootstrap_marker = BootstrapMarker::ConfigMap(ConfigMapMarker::new(kube.clone(), CM));
    config.kube = Some(kube);
    tokio::spawn(crate::pod::server::run(config));
    let petkv =
        petkv_client::Client::new(&[format!("127.0.0.1:{client_port}")], Duration::from_secs(2)).expect("client");
    let status = || async { petkv.status().await.ok() };

    // The node answers while it waits (however long its start takes on a loaded machine), and
    // for 1.5 s more it still does not bootstrap.
    let waiting = until(&petkv, "the node answers", |_| true).await;
    assert_eq!(waiting.role, "joining", "the node answers, and waits");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(crate::pod::identity::load(dir.path()).expect("load").is_none(), "API down: no bootstrap");
    assert_eq!(status().await.map(|s| s.role), Some("joining".into()), "still waiting");

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", api_port)).await.expect("the API's port");
    let _ = serve_on(api.clone(), listener);
    let cluster_id = until(&petkv, "bootstrap", |s| s.role == "leader").await.cluster_id;
    let posts = api.posts.lock().expect("lock").clone();
    assert_eq!(posts.len(), 1, "the marker was recorded once");
    assert_eq!(posts[0]["data"]["clusterId"], cluster_id.as_str());
    assert!(posts[0]["metadata"].get("ownerReferences").is_none(), "{}", posts[0]);

    until(&petkv, "declaring 3", |s| s.declared_replicas == 3).await;
    api.scale(2);
    until(&petkv, "declaring 2", |s| s.declared_replicas == 2).await;
    api.scale(0);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(status().await.map(|s| s.declared_replicas), Some(2), "spec.replicas 0 keeps the declared count");
}
