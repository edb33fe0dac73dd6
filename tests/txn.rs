//! Transactions end to end: compare-then-write as one revision through a follower, the
//! failure branch, a retried transaction applied once, bad transactions refused, and a
//! watcher that sees a transaction's changes in one response.

use petkv_client::pb::v1::compare::{Op as CmpOp, Target};
use petkv_client::pb::v1::kv_client::KvClient;
use petkv_client::pb::v1::txn_op::Op;
use petkv_client::pb::v1::txn_op_result::Result as OpResult;
use petkv_client::pb::v1::{Compare, TxnDelete, TxnOp, TxnPut, TxnRange, TxnRequest, WatchRequest, WriteId};
use petkv_client::Watcher;
use petkv_e2e::{healthy_cluster, refused, SETTLE};
use tonic::Code;

fn put(key: &str, value: &str) -> TxnOp {
    TxnOp {
        op: Some(Op::Put(TxnPut {
            key: key.as_bytes().to_vec().into(),
            value: value.as_bytes().to_vec().into(),
            prev_kv: true,
            ..Default::default()
        })),
    }
}

fn get_prefix(prefix: &str) -> TxnOp {
    TxnOp {
        op: Some(Op::Range(TxnRange { key: prefix.as_bytes().to_vec().into(), prefix: true, ..Default::default() })),
    }
}

fn delete(key: &str) -> TxnOp {
    TxnOp {
        op: Some(Op::Delete(TxnDelete { key: key.as_bytes().to_vec().into(), prev_kv: true, ..Default::default() })),
    }
}

fn version_is(key: &str, version: u64) -> Compare {
    Compare {
        key: key.as_bytes().to_vec().into(),
        target: Target::Version as i32,
        op: CmpOp::Equal as i32,
        number: version,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_is_atomic_one_revision_and_applied_once() -> anyhow::Result<()> {
    let cluster = healthy_cluster(3, 3, &[]).await?;
    let leader = cluster.wait_leader(SETTLE).await?;
    let follower = (leader + 1) % 3;
    let c = cluster.client_of(follower)?;
    c.put(b"acct/a", b"100", None).await?;
    c.put(b"acct/b", b"0", None).await?;

    let mut watcher =
        Watcher::new(&c, WatchRequest { key: b"acct/".to_vec().into(), prefix: true, ..Default::default() });
    assert!(watcher.next().await?.created);

    // A transfer: only if a is still at version 1; both keys change at one revision.
    let transfer = TxnRequest {
        compare: vec![version_is("acct/a", 1)],
        success: vec![put("acct/a", "60"), put("acct/b", "40"), get_prefix("acct/")],
        failure: vec![get_prefix("acct/")],
        ..Default::default()
    };
    let done = c.txn(transfer.clone()).await?;
    assert!(done.succeeded);
    let revision = done.header.expect("header").revision;
    let Some(OpResult::Range(range)) = &done.results[2].result else { panic!("{:?}", done.results) };
    let seen: Vec<(&[u8], &[u8], u64)> =
        range.kvs.iter().map(|kv| (kv.key.as_ref(), kv.value.as_ref(), kv.mod_revision)).collect();
    assert_eq!(seen, [(&b"acct/a"[..], &b"60"[..], revision), (b"acct/b", b"40", revision)]);

    // The watcher gets both changes together, at the transaction's revision.
    let events = tokio::time::timeout(SETTLE, watcher.next()).await??;
    let got: Vec<(u64, &[u8])> = events
        .events
        .iter()
        .map(|e| {
            let kv = e.kv.as_ref().expect("kv");
            (kv.mod_revision, kv.key.as_ref())
        })
        .collect();
    assert_eq!(got, [(revision, &b"acct/a"[..]), (revision, b"acct/b")], "one response, one revision");

    // The same compare fails now: the failure branch reads and nothing changes.
    let again = c.txn(transfer).await?;
    assert!(!again.succeeded);
    assert_eq!(again.header.expect("header").revision, revision, "no revision taken");
    let Some(OpResult::Range(range)) = &again.results[0].result else { panic!("{:?}", again.results) };
    assert_eq!(range.kvs[0].value.as_ref(), b"60");

    // A retried transaction (the same write id) is answered from the session, not applied.
    let mut kv = KvClient::connect(format!("http://{}", cluster.client_addr(leader))).await?;
    let once = TxnRequest {
        compare: vec![],
        success: vec![delete("acct/b")],
        write_id: Some(WriteId { client_id: 77, sequence: 1 }),
        ..Default::default()
    };
    let first = kv.txn(once.clone()).await?.into_inner();
    let retry = kv.txn(once).await?.into_inner();
    assert_eq!(first, retry, "the retry gets the original answer");
    let Some(OpResult::Delete(deleted)) = &first.results[0].result else { panic!() };
    assert_eq!(deleted.deleted, 1);

    // Bad transactions are refused and change nothing.
    let twice = TxnRequest { success: vec![put("k", "1"), put("k", "2")], ..Default::default() };
    assert_eq!(refused("a key written twice", c.txn(twice).await), Code::InvalidArgument);
    let empty_op = TxnRequest { success: vec![TxnOp { op: None }], ..Default::default() };
    assert_eq!(refused("an empty operation", c.txn(empty_op).await), Code::InvalidArgument);
    let bad_target = TxnRequest { compare: vec![Compare { target: 99, ..version_is("k", 0) }], ..Default::default() };
    assert_eq!(refused("an unknown compare target", c.txn(bad_target).await), Code::InvalidArgument);
    assert!(c.get(b"k", petkv_client::pb::v1::Consistency::Linearizable).await?.kv.is_none());
    Ok(())
}
