//! Every bad input the public API can receive, as one table: the request, the gRPC status it
//! must get and a piece of the message. Afterwards no pod's log or key count moved, and the
//! cluster still serves. Inputs that reach the state machine on purpose (any bytes as a key, a
//! compare that cannot match, a stale write id, a write id reused for another command) follow,
//! each with what it must do.

use petkv_client::pb::v1::cluster_client::ClusterClient;
use petkv_client::pb::v1::kv_client::KvClient;
use petkv_client::pb::v1::{Consistency, DeleteRequest, GetRequest, PutRequest, ScaleRequest, ScanRequest, WriteId};
use petkv_e2e::{healthy_cluster, wait_quiescent};
use petkv_harness::Cluster;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

/// Sends bytes as they are, to reach the server's decoding with what no generated client sends.
#[derive(Clone, Default)]
struct RawCodec;
struct RawBytes;

impl Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n).to_vec()))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;
    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }
    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

async fn raw_call(channel: &Channel, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.map_err(|e| Status::unknown(e.to_string()))?;
    grpc.unary(Request::new(body), PathAndQuery::from_static(path), RawCodec).await.map(|r| r.into_inner())
}

async fn channel(cluster: &Cluster, ordinal: u32) -> anyhow::Result<Channel> {
    Ok(tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.client_addr(ordinal)))?.connect().await?)
}

fn key(k: &[u8]) -> tonic::codegen::Bytes {
    k.to_vec().into()
}

/// (what, status, expected code, piece of the message)
type Case = (&'static str, Status, Code, &'static str);

async fn refused<T: std::fmt::Debug>(call: impl std::future::Future<Output = Result<T, Status>>) -> Status {
    match call.await {
        Ok(reply) => Status::ok(format!("accepted: {reply:?}")),
        Err(status) => status,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_status_and_changes_nothing() -> anyhow::Result<()> {
    let cluster =
        healthy_cluster(3, 3, &["--max-key-bytes", "16", "--max-value-bytes", "64", "--max-scan-limit", "100"]).await?;
    let leader = cluster.wait_leader(petkv_e2e::SETTLE).await?;
    let follower = (leader + 1) % 3;
    let ch = channel(&cluster, follower).await?;
    let mut kv = KvClient::new(ch.clone());
    let mut admin = ClusterClient::new(ch.clone());
    cluster.client()?.put(b"present", b"1", None).await?;
    // A follower may not have the last entries (promotions, the declared count) yet.
    wait_quiescent(&cluster).await?;
    let mut before = Vec::new();
    for o in cluster.ordinals() {
        let s = cluster.status(o).await?;
        before.push((s.last_log_index, s.key_count));
    }
    let long = [b'k'; 17];
    let ia = Code::InvalidArgument;
    let put = |k: &[u8], v: &[u8]| PutRequest { key: key(k), value: v.to_vec().into(), ..Default::default() };
    let scan = |prefix: &[u8], start: &[u8], end: &[u8]| ScanRequest {
        prefix: key(prefix),
        start_key: key(start),
        end_key: key(end),
        ..Default::default()
    };
    let mut forwarded = Request::new(put(b"spoofed", b"x"));
    forwarded.metadata_mut().insert("x-petkv-forwarded", tonic::metadata::MetadataValue::from_static("1"));
    let cases: Vec<Case> = vec![
        ("put: empty key", refused(kv.put(put(b"", b"v"))).await, ia, "key must not be empty"),
        (
            "put: key over --max-key-bytes",
            refused(kv.put(put(&long, b"v"))).await,
            ia,
            "key is 17 bytes, over the limit of 16 bytes (--max-key-bytes)",
        ),
        (
            "put: value over --max-value-bytes",
            refused(kv.put(put(b"k", &[0; 65]))).await,
            ia,
            "value is 65 bytes, over the limit of 64 bytes (--max-value-bytes)",
        ),
        (
            "put: empty key with a write id",
            refused(kv.put(PutRequest { write_id: Some(WriteId { client_id: 1, sequence: 1 }), ..put(b"", b"v") }))
                .await,
            ia,
            "key must not be empty",
        ),
        (
            "get: empty key",
            refused(kv.get(GetRequest { key: key(b""), consistency: 0, revision: 0 })).await,
            ia,
            "key must not be empty",
        ),
        (
            "get: key over the limit",
            refused(kv.get(GetRequest { key: key(&long), consistency: 0, revision: 0 })).await,
            ia,
            "--max-key-bytes",
        ),
        (
            "get: unknown consistency 9",
            refused(kv.get(GetRequest { key: key(b"k"), consistency: 9, revision: 0 })).await,
            ia,
            "unknown consistency 9",
        ),
        (
            "get: negative consistency",
            refused(kv.get(GetRequest { key: key(b"k"), consistency: -1, revision: 0 })).await,
            ia,
            "unknown consistency -1",
        ),
        (
            "delete: empty key",
            refused(kv.delete(DeleteRequest { key: key(b""), ..Default::default() })).await,
            ia,
            "key must not be empty",
        ),
        (
            "delete: key over the limit",
            refused(kv.delete(DeleteRequest { key: key(&long), ..Default::default() })).await,
            ia,
            "--max-key-bytes",
        ),
        ("scan: inverted range", refused(kv.scan(scan(b"", b"z", b"a"))).await, ia, "empty or inverted range"),
        (
            "scan: empty range (start = end)",
            refused(kv.scan(scan(b"", b"m", b"m"))).await,
            ia,
            "empty or inverted range",
        ),
        (
            "scan: prefix and start_key",
            refused(kv.scan(scan(b"p", b"a", b""))).await,
            ia,
            "set either prefix or start_key/end_key, not both",
        ),
        ("scan: prefix and end_key", refused(kv.scan(scan(b"p", b"", b"z"))).await, ia, "not both"),
        (
            "scan: prefix over the key limit",
            refused(kv.scan(scan(&long, b"", b""))).await,
            ia,
            "scan bound is 17 bytes, over the key limit of 16 bytes",
        ),
        (
            "scan: start_key over the key limit",
            refused(kv.scan(scan(b"", &long, b""))).await,
            ia,
            "scan bound is 17 bytes",
        ),
        (
            "scan: end_key over the key limit",
            refused(kv.scan(scan(b"", b"", &long))).await,
            ia,
            "scan bound is 17 bytes",
        ),
        (
            "scan: limit over --max-scan-limit",
            refused(kv.scan(ScanRequest { limit: 101, ..Default::default() })).await,
            ia,
            "scan limit 101 is over the maximum of 100 (--max-scan-limit)",
        ),
        (
            "scan: limit u32::MAX",
            refused(kv.scan(ScanRequest { limit: u32::MAX, ..Default::default() })).await,
            ia,
            "scan limit 4294967295 is over the maximum",
        ),
        (
            "scan: page_token outside the range",
            refused(kv.scan(ScanRequest { page_token: key(b"q"), ..scan(b"p", b"", b"") })).await,
            ia,
            "page_token does not belong to this scan's range",
        ),
        (
            "scan: page_token over the key limit",
            refused(kv.scan(ScanRequest { page_token: key(&long), ..Default::default() })).await,
            ia,
            "scan bound is 17 bytes",
        ),
        (
            "scan: unknown consistency",
            refused(kv.scan(ScanRequest { consistency: 3, ..Default::default() })).await,
            ia,
            "unknown consistency 3",
        ),
        (
            "scale: 0 replicas",
            refused(admin.scale(ScaleRequest { replicas: 0 })).await,
            ia,
            "replicas must be between 1 and 1000, got 0",
        ),
        (
            "scale: 1001 replicas",
            refused(admin.scale(ScaleRequest { replicas: 1001 })).await,
            ia,
            "replicas must be between 1 and 1000, got 1001",
        ),
        (
            "scale: u32::MAX replicas",
            refused(admin.scale(ScaleRequest { replicas: u32::MAX })).await,
            ia,
            "got 4294967295",
        ),
        (
            "a write claiming to be forwarded, sent to a follower",
            refused(kv.put(forwarded)).await,
            Code::Unavailable,
            "leadership moved while the request was forwarded",
        ),
        (
            "bytes that are not protobuf (put)",
            refused(raw_call(&ch, "/petkv.v1.KV/Put", vec![0xff; 7])).await,
            Code::Internal,
            "failed to decode Protobuf message",
        ),
        (
            "a field with the wrong wire type (get.key as varint)",
            refused(raw_call(&ch, "/petkv.v1.KV/Get", vec![0x08, 0x01])).await,
            Code::Internal,
            "failed to decode Protobuf message",
        ),
        (
            "a length prefix past the end (scan.prefix)",
            refused(raw_call(&ch, "/petkv.v1.KV/Scan", vec![0x0a, 0x7f, b'a'])).await,
            Code::Internal,
            "failed to decode Protobuf message",
        ),
        (
            "a message over the client port's decoding limit (key + value limits + 64 KiB)",
            refused(raw_call(&ch, "/petkv.v1.Cluster/Scale", {
                // An unknown bytes field (number 15) of 5 MiB.
                let mut body = vec![0x7a, 0x80, 0x80, 0xc0, 0x02];
                body.resize(body.len() + 5 * 1024 * 1024, 0);
                body
            }))
            .await,
            Code::ResourceExhausted,
            "request too large for the client port (Error, decoded message length too large: found 5242885 bytes, the \
             limit is: 65616 bytes)",
        ),
        (
            "a compaction without a revision",
            refused(raw_call(&ch, "/petkv.v1.KV/Compact", Vec::new())).await,
            Code::InvalidArgument,
            "revision must be set",
        ),
        (
            "an unknown method",
            refused(raw_call(&ch, "/petkv.v1.KV/Defragment", Vec::new())).await,
            Code::Unimplemented,
            "",
        ),
        (
            "an unknown service",
            refused(raw_call(&ch, "/etcdserverpb.KV/Range", Vec::new())).await,
            Code::Unimplemented,
            "",
        ),
    ];
    let mut failures = Vec::new();
    for (what, status, code, needle) in &cases {
        if status.code() != *code || !status.message().contains(needle) {
            failures.push(format!(
                "{what}: expected {code:?} with {needle:?}, got {:?} {:?}",
                status.code(),
                status.message()
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases wrong:\n{}", failures.len(), cases.len(), failures.join("\n"));
    for (o, expected) in cluster.ordinals().into_iter().zip(before) {
        let s = cluster.status(o).await?;
        assert_eq!((s.last_log_index, s.key_count), expected, "pod {o}: nothing may be proposed or written");
    }

    // Accepted on purpose. Keys are bytes: invalid UTF-8 is a key like any other.
    let odd = key(&[0xff, 0xfe, 0x00, b'k']);
    let r = kv.put(PutRequest { key: odd.clone(), value: key(&[0x80]), ..Default::default() }).await?.into_inner();
    assert!(r.succeeded);
    let got =
        kv.get(GetRequest { key: odd, consistency: Consistency::Linearizable as i32, revision: 0 }).await?.into_inner();
    assert_eq!(got.kv.map(|kv| kv.value.to_vec()), Some(vec![0x80]));
    // A compare that cannot match is answered "not written", and writes nothing.
    let r = kv.put(PutRequest { if_mod_revision: Some(u64::MAX), ..put(b"present", b"2") }).await?.into_inner();
    assert!(!r.succeeded);
    assert_eq!(r.kv.map(|kv| kv.value.to_vec()), Some(b"1".to_vec()));
    // An older sequence of a client id is refused, not applied.
    let id = |sequence| Some(WriteId { client_id: 77, sequence });
    kv.put(PutRequest { write_id: id(5), ..put(b"dedup", b"new") }).await?;
    let stale = kv.put(PutRequest { write_id: id(4), ..put(b"dedup", b"old") }).await.expect_err("stale");
    assert_eq!(stale.code(), Code::FailedPrecondition);
    assert!(stale.message().contains("older than this client id's last applied sequence 5"), "{}", stale.message());
    // The same write id on another command is refused, not answered with the first one's reply.
    let reused = kv.put(PutRequest { write_id: id(5), ..put(b"dedup", b"other") }).await.expect_err("reused id");
    assert_eq!(reused.code(), Code::FailedPrecondition);
    assert!(reused.message().contains("was already used for another command"), "{}", reused.message());
    let reused = kv
        .delete(DeleteRequest { key: key(b"dedup"), write_id: id(5), if_mod_revision: None })
        .await
        .expect_err("reused id");
    assert_eq!(reused.code(), Code::FailedPrecondition);
    let now = kv.get(GetRequest { key: key(b"dedup"), consistency: 0, revision: 0 }).await?.into_inner();
    assert_eq!(now.kv.map(|kv| (kv.value.to_vec(), kv.version)), Some((b"new".to_vec(), 1)));
    // The node still serves.
    assert!(cluster.client()?.put(b"ok", b"fine", None).await?.succeeded);
    Ok(())
}
