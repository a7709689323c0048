//! A REDIS shard on a real Volume and embedded metadata store: what is flushed is what a reload
//! finds, a clear is one record, and a log rewrite keeps the keyspace while dropping old entries.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use kronotop_meta::tuple::Subspace;
use kronotop_meta::{Database, embedded};
use kronotop_redis::shard::now_ms;
use kronotop_redis::{Durability, Op, Out, Shard, execute};
use kronotop_volume::{Volume, VolumeConfig};

async fn open(dir: &Path) -> (Database, Arc<Volume>) {
    let db = Database::open_embedded(&dir.join("meta"), embedded::Options::default()).unwrap();
    let volume = Volume::open(
        &db,
        "redis-shard-0",
        &dir.join("vol"),
        Subspace::from_bytes(b"vol/".to_vec()),
        VolumeConfig::default(),
    )
    .await
    .unwrap();
    (db, Arc::new(volume))
}

fn run(shard: &Shard, op: Op, args: &[&str]) -> Out {
    let args: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
    execute(&mut shard.lock(), op, &args, now_ms()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_changes_come_back_and_a_rewrite_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let (db, volume) = open(dir.path()).await;
    let r = Shard::load(0, db.clone(), Arc::clone(&volume), Durability::Always).await.unwrap();
    let shard = Arc::clone(&r.shard);
    // Several flushes, so the log holds several transactions.
    for i in 0..500 {
        run(&shard, Op::Set, &[&format!("k{i}"), &format!("v{i}")]);
        if i % 100 == 99 {
            let seq = shard.lock().seq();
            shard.wait_durable(seq).await.unwrap();
        }
    }
    run(&shard, Op::HSet, &["h", "a", "1", "b", "2"]);
    run(&shard, Op::HSet, &["h", "b", "3"]);
    run(&shard, Op::HDel, &["h", "a"]);
    run(&shard, Op::Set, &["t", "x", "EX", "100"]);
    run(&shard, Op::Del, &["k0"]);
    let seq = shard.lock().seq();
    shard.wait_durable(seq).await.unwrap();
    assert_eq!(shard.pending(), 0);
    r.stop().await;

    let r = Shard::load(0, db.clone(), Arc::clone(&volume), Durability::Always).await.unwrap();
    let shard = Arc::clone(&r.shard);
    assert_eq!(shard.lock().len(), 499 + 2);
    assert_eq!(run(&shard, Op::Get, &["k1"]), Out::bulk(b"v1"));
    assert_eq!(run(&shard, Op::Get, &["k0"]), Out::Nil);
    assert_eq!(run(&shard, Op::HGet, &["h", "b"]), Out::bulk(b"3"));
    assert_eq!(run(&shard, Op::HExists, &["h", "a"]), Out::Int(0));
    assert!(matches!(run(&shard, Op::Ttl, &["t"]), Out::Int(99 | 100)));

    // Field-level and expiry-only changes of a hash that was already written.
    run(&shard, Op::HSet, &["h", "c", "4"]);
    run(&shard, Op::HDel, &["h", "b"]);
    run(&shard, Op::Expire, &["h", "1000"]);
    let seq = shard.lock().seq();
    shard.wait_durable(seq).await.unwrap();
    r.stop().await;
    let r = Shard::load(0, db.clone(), Arc::clone(&volume), Durability::Always).await.unwrap();
    let shard = Arc::clone(&r.shard);
    assert_eq!(run(&shard, Op::HGet, &["h", "c"]), Out::bulk(b"4"));
    assert_eq!(run(&shard, Op::HExists, &["h", "b"]), Out::Int(0));
    assert!(matches!(run(&shard, Op::Ttl, &["h"]), Out::Int(999 | 1000)));

    // A rewrite leaves one transaction's worth of entries and the same keys.
    let before =
        volume.list(&db.create_trx().unwrap(), kronotop_redis::shard::PREFIX).await.unwrap();
    shard.rewrite().await.unwrap();
    let after =
        volume.list(&db.create_trx().unwrap(), kronotop_redis::shard::PREFIX).await.unwrap();
    assert!(after.len() < before.len(), "{} entries before, {} after", before.len(), after.len());
    r.stop().await;
    let r = Shard::load(0, db.clone(), Arc::clone(&volume), Durability::Always).await.unwrap();
    assert_eq!(r.shard.lock().len(), 501);
    assert_eq!(run(&r.shard, Op::HGet, &["h", "c"]), Out::bulk(b"4"));
    assert_eq!(run(&r.shard, Op::Get, &["k499"]), Out::bulk(b"v499"));

    // FLUSHALL is one record; keys written after it survive it.
    r.shard.lock().clear();
    run(&r.shard, Op::Set, &["after", "1"]);
    let seq = r.shard.lock().seq();
    r.shard.wait_durable(seq).await.unwrap();
    r.stop().await;
    let r = Shard::load(0, db, volume, Durability::Always).await.unwrap();
    assert_eq!(r.shard.lock().len(), 1);
    assert_eq!(run(&r.shard, Op::Get, &["after"]), Out::bulk(b"1"));
}
