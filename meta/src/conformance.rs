//! The conformance suite: FoundationDB's semantics as executable cases, run against every backend.
//!
//! A backend that passes these is a drop-in for FoundationDB as far as Kronotop relies on it. Each
//! case works under its own key prefix, so the suite can run against a shared real cluster; cases
//! that must see the edge of the key space compare against the prefix's bounds. `Harness::advance`
//! moves an injected clock on the embedded backend and really waits on FoundationDB.
//!
//! `conformance_suite!(backend_fn)` in a test file expands to one `#[tokio::test]` per case.

#![allow(clippy::missing_panics_doc)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::clock::ManualClock;
use crate::directory::{DirectoryError, DirectoryLayer};
use crate::types::{key_after, strinc};
use crate::{
    ConflictRangeType, Database, KeySelector, MaybeCommitted, MetaError, MutationType, RangeOption,
    RunError, Transaction,
};

/// A database prepared for one case: a private key prefix and, on the embedded backend, a manual
/// clock.
#[derive(Debug)]
pub struct Harness {
    pub db: Database,
    prefix: Vec<u8>,
    clock: Option<Arc<ManualClock>>,
}

impl Harness {
    /// `prefix` must be unique to the case; its keys are cleared first.
    pub async fn new(db: Database, prefix: &[u8], clock: Option<Arc<ManualClock>>) -> Harness {
        let h = Harness { db, prefix: prefix.to_vec(), clock };
        let tx = h.tx();
        tx.clear_range(&h.prefix, &strinc(&h.prefix));
        tx.commit().await.expect("clearing the case prefix");
        h
    }

    /// A key under the case prefix.
    pub fn k(&self, suffix: &[u8]) -> Vec<u8> {
        [self.prefix.as_slice(), suffix].concat()
    }

    pub fn tx(&self) -> Transaction {
        self.db.create_trx().expect("create transaction")
    }

    /// Lets `d` pass for the metadata store's clock.
    pub async fn advance(&self, d: Duration) {
        match &self.clock {
            Some(c) => c.advance(d),
            None => tokio::time::sleep(d).await,
        }
    }

    async fn put(&self, pairs: &[(&[u8], &[u8])]) {
        let tx = self.tx();
        for (k, v) in pairs {
            tx.set(&self.k(k), v);
        }
        tx.commit().await.expect("put");
    }

    async fn read(&self, k: &[u8]) -> Option<Bytes> {
        self.tx().get(&self.k(k), false).await.expect("read")
    }

    fn range(&self) -> RangeOption {
        RangeOption::new(self.prefix.clone(), strinc(&self.prefix))
    }

    /// Keys of a range result with the prefix removed, as text.
    fn names(&self, kvs: &[crate::KeyValue]) -> Vec<String> {
        kvs.iter()
            .map(|kv| String::from_utf8_lossy(&kv.key[self.prefix.len()..]).into_owned())
            .collect()
    }
}

fn err(r: Result<i64, MetaError>) -> MetaError {
    r.expect_err("expected the commit to fail")
}

pub async fn read_your_writes_point(h: &Harness) {
    h.put(&[(b"a", b"1")]).await;
    let tx = h.tx();
    assert_eq!(tx.get(&h.k(b"a"), false).await.expect("get").as_deref(), Some(&b"1"[..]));
    tx.set(&h.k(b"a"), b"2");
    assert_eq!(tx.get(&h.k(b"a"), false).await.expect("get").as_deref(), Some(&b"2"[..]));
    tx.clear(&h.k(b"a"));
    assert_eq!(tx.get(&h.k(b"a"), false).await.expect("get"), None);
    tx.atomic_op(&h.k(b"n"), &5u64.to_le_bytes(), MutationType::Add);
    tx.atomic_op(&h.k(b"n"), &7u64.to_le_bytes(), MutationType::Add);
    assert_eq!(
        tx.get(&h.k(b"n"), true).await.expect("get").as_deref(),
        Some(&12u64.to_le_bytes()[..])
    );
    // Others see nothing before the commit.
    assert_eq!(h.read(b"a").await.as_deref(), Some(&b"1"[..]));
    tx.commit().await.expect("commit");
    assert_eq!(h.read(b"a").await, None);
    assert_eq!(h.read(b"n").await.as_deref(), Some(&12u64.to_le_bytes()[..]));
}

pub async fn read_your_writes_range(h: &Harness) {
    h.put(&[(b"a", b"1"), (b"c", b"3"), (b"e", b"5")]).await;
    let tx = h.tx();
    tx.set(&h.k(b"b"), b"2");
    tx.clear(&h.k(b"c"));
    tx.set(&h.k(b"d"), b"4");
    tx.clear_range(&h.k(b"e"), &h.k(b"f"));
    tx.set(&h.k(b"e2"), b"x");
    let all = tx.get_range(&h.range(), false).await.expect("range");
    assert_eq!(h.names(&all.kvs), ["a", "b", "d", "e2"]);
    assert!(!all.more);
    let rev = tx.get_range(&h.range().reverse(true).limit(2), false).await.expect("range");
    assert_eq!(h.names(&rev.kvs), ["e2", "d"]);
    assert!(rev.more);
    assert_eq!(rev.kvs[1].value.as_ref(), b"4");
    tx.commit().await.expect("commit");
    let after = h.tx().get_range(&h.range(), false).await.expect("range");
    assert_eq!(h.names(&after.kvs), ["a", "b", "d", "e2"]);
}

pub async fn point_conflict(h: &Harness) {
    h.put(&[(b"k", b"0")]).await;
    let t1 = h.tx();
    t1.get(&h.k(b"k"), false).await.expect("get");
    let t2 = h.tx();
    t2.set(&h.k(b"k"), b"2");
    t2.commit().await.expect("t2 commits");
    t1.set(&h.k(b"other"), b"1");
    assert_eq!(err(t1.commit().await), MetaError::NOT_COMMITTED);
    assert_eq!(h.read(b"other").await, None, "a failed commit writes nothing");
}

pub async fn range_conflict_phantom(h: &Harness) {
    let t1 = h.tx();
    let seen = t1.get_range(&RangeOption::new(h.k(b"a"), h.k(b"z")), false).await.expect("range");
    assert!(seen.kvs.is_empty());
    let t2 = h.tx();
    t2.set(&h.k(b"m"), b"phantom");
    t2.commit().await.expect("t2 commits");
    t1.set(&h.k(b"count"), b"0");
    assert_eq!(err(t1.commit().await), MetaError::NOT_COMMITTED);
    // A write outside the range read does not conflict.
    let t3 = h.tx();
    t3.get_range(&RangeOption::new(h.k(b"a"), h.k(b"c")), false).await.expect("range");
    let t4 = h.tx();
    t4.set(&h.k(b"x"), b"1");
    t4.commit().await.expect("t4");
    t3.set(&h.k(b"count"), b"1");
    t3.commit().await.expect("no conflict outside the range read");
}

pub async fn blind_writes_never_conflict(h: &Harness) {
    let t1 = h.tx();
    let t2 = h.tx();
    t1.get_read_version().await.expect("grv");
    t2.get_read_version().await.expect("grv");
    t1.set(&h.k(b"k"), b"1");
    t2.set(&h.k(b"k"), b"2");
    t1.atomic_op(&h.k(b"n"), &1u64.to_le_bytes(), MutationType::Add);
    t2.atomic_op(&h.k(b"n"), &1u64.to_le_bytes(), MutationType::Add);
    t1.commit().await.expect("t1");
    t2.commit().await.expect("t2: blind writes and atomic ops never conflict");
    assert_eq!(h.read(b"k").await.as_deref(), Some(&b"2"[..]));
    assert_eq!(h.read(b"n").await.as_deref(), Some(&2u64.to_le_bytes()[..]));
}

pub async fn snapshot_reads_never_conflict(h: &Harness) {
    h.put(&[(b"k", b"0")]).await;
    let t1 = h.tx();
    t1.get(&h.k(b"k"), true).await.expect("get");
    t1.get_range(&h.range(), true).await.expect("range");
    t1.get_key(&KeySelector::first_greater_or_equal(h.k(b"a")), true).await.expect("key");
    let t2 = h.tx();
    t2.set(&h.k(b"k"), b"1");
    t2.set(&h.k(b"j"), b"1");
    t2.commit().await.expect("t2");
    t1.set(&h.k(b"out"), b"1");
    t1.commit().await.expect("snapshot reads add no conflicts");
}

pub async fn explicit_conflict_ranges(h: &Harness) {
    let t1 = h.tx();
    t1.get_read_version().await.expect("grv");
    t1.add_conflict_range(&h.k(b"a"), &h.k(b"b"), ConflictRangeType::Read).expect("read range");
    let t2 = h.tx();
    t2.set(&h.k(b"a5"), b"x");
    t2.commit().await.expect("t2");
    t1.set(&h.k(b"z"), b"1");
    assert_eq!(err(t1.commit().await), MetaError::NOT_COMMITTED);

    let t3 = h.tx();
    t3.get(&h.k(b"guard"), false).await.expect("get");
    let t4 = h.tx();
    t4.add_conflict_range(&h.k(b"guard"), &key_after(&h.k(b"guard")), ConflictRangeType::Write)
        .expect("write range");
    t4.commit().await.expect("a write conflict range alone commits");
    t3.set(&h.k(b"y"), b"1");
    assert_eq!(err(t3.commit().await), MetaError::NOT_COMMITTED);
    assert_eq!(
        h.tx().add_conflict_range(b"b", b"a", ConflictRangeType::Read).expect_err("inverted"),
        MetaError::INVERTED_RANGE
    );
}

/// Every mutation on missing, shorter, longer and equal-length existing values, committed and
/// read back: (mutation, existing, operand, expected).
pub async fn atomic_mutations(h: &Harness) {
    use MutationType::*;
    type Case = (MutationType, Option<&'static [u8]>, &'static [u8], Option<&'static [u8]>);
    let cases: &[Case] = &[
        (Add, None, &[1, 0], Some(&[1, 0])),
        (Add, Some(&[0xff]), &[1, 0], Some(&[0, 1])),
        (Add, Some(&[1, 2, 3]), &[1, 0], Some(&[2, 2])),
        (Add, Some(&[0xff, 0xff]), &[1, 0], Some(&[0, 0])),
        (BitAnd, None, &[0x0f], Some(&[0x0f])),
        (BitAnd, Some(&[0xff]), &[0x0f, 0xff], Some(&[0x0f, 0x00])),
        (BitAnd, Some(&[0xff, 0xf0, 0x0f]), &[0x3c, 0x3c], Some(&[0x3c, 0x30])),
        (BitAnd, Some(&[0xf0]), &[0x3c], Some(&[0x30])),
        (BitOr, None, &[0x01], Some(&[0x01])),
        (BitOr, Some(&[0xf0]), &[0x0f, 0x01], Some(&[0xff, 0x01])),
        (BitOr, Some(&[0x01, 0x02, 0x03]), &[0x10], Some(&[0x11])),
        (BitOr, Some(&[0x01]), &[0x10], Some(&[0x11])),
        (BitXor, None, &[0x0f], Some(&[0x0f])),
        (BitXor, Some(&[0xff]), &[0x0f, 0x0f], Some(&[0xf0, 0x0f])),
        (BitXor, Some(&[0xff, 0x01]), &[0x0f], Some(&[0xf0])),
        (BitXor, Some(&[0x0f]), &[0x0f], Some(&[0x00])),
        (AppendIfFits, None, b"cd", Some(b"cd")),
        (AppendIfFits, Some(b"a"), b"bcd", Some(b"abcd")),
        (AppendIfFits, Some(b"abc"), b"d", Some(b"abcd")),
        (AppendIfFits, Some(b"ab"), b"cd", Some(b"abcd")),
        (Max, None, &[7], Some(&[7])),
        (Max, Some(&[9]), &[7, 0], Some(&[9, 0])),
        (Max, Some(&[9, 0, 1]), &[7], Some(&[9])),
        (Max, Some(&[0xff, 0x00]), &[0x00, 0x01], Some(&[0x00, 0x01])),
        (Min, None, &[7], Some(&[7])),
        (Min, Some(&[9]), &[7, 0], Some(&[7, 0])),
        (Min, Some(&[9, 0, 1]), &[7], Some(&[7])),
        (Min, Some(&[0xff, 0x00]), &[0x00, 0x01], Some(&[0xff, 0x00])),
        (ByteMin, None, b"x", Some(b"x")),
        (ByteMin, Some(b"ab"), b"abc", Some(b"ab")),
        (ByteMin, Some(b"abc"), b"ab", Some(b"ab")),
        (ByteMin, Some(b"abd"), b"abc", Some(b"abc")),
        (ByteMax, None, b"x", Some(b"x")),
        (ByteMax, Some(b"ab"), b"abc", Some(b"abc")),
        (ByteMax, Some(b"abc"), b"ab", Some(b"abc")),
        (ByteMax, Some(b"abd"), b"abc", Some(b"abd")),
        (CompareAndClear, None, b"v", None),
        (CompareAndClear, Some(b"v"), b"v", None),
        (CompareAndClear, Some(b"v"), b"w", Some(b"v")),
        (CompareAndClear, Some(b"vv"), b"v", Some(b"vv")),
        (CompareAndClear, Some(b"v"), b"vv", Some(b"v")),
    ];
    for (i, (op, existing, param, want)) in cases.iter().enumerate() {
        let key = h.k(format!("atomic-{i}").as_bytes());
        let tx = h.tx();
        match existing {
            Some(v) => tx.set(&key, v),
            None => tx.clear(&key),
        }
        tx.commit().await.expect("setup");
        let tx = h.tx();
        tx.atomic_op(&key, param, *op);
        tx.commit().await.expect("mutation");
        let got = h.tx().get(&key, false).await.expect("read");
        assert_eq!(got.as_deref(), *want, "case {i}: {op:?} on {existing:?} with {param:?}");
    }
}

fn versionstamped(prefix: &[u8], user_version: u16) -> Vec<u8> {
    let mut k = prefix.to_vec();
    let offset = u32::try_from(k.len()).expect("short key");
    k.extend([0u8; 10]);
    k.extend(user_version.to_be_bytes());
    k.extend(offset.to_le_bytes());
    k
}

pub async fn versionstamps(h: &Harness) {
    let base = h.k(b"vs/");
    let tx = h.tx();
    tx.atomic_op(&versionstamped(&base, 1), b"second", MutationType::SetVersionstampedKey);
    tx.atomic_op(&versionstamped(&base, 0), b"first", MutationType::SetVersionstampedKey);
    let mut value = b"stamp:".to_vec();
    value.extend([0u8; 10]);
    value.extend(6u32.to_le_bytes());
    tx.atomic_op(&h.k(b"vv"), &value, MutationType::SetVersionstampedValue);
    assert_eq!(
        tx.get(&h.k(b"vv"), false).await.expect_err("unreadable"),
        MetaError::ACCESSED_UNREADABLE
    );
    let stamp = tx.get_versionstamp();
    let version = tx.commit().await.expect("commit");
    let stamp = stamp.await.expect("versionstamp");
    assert_eq!(stamp.len(), 10);
    assert_eq!(i64::from_be_bytes(stamp[..8].try_into().expect("8 bytes")), version);
    let kvs = h.tx().get_range(&RangeOption::prefix(&base), false).await.expect("range").kvs;
    assert_eq!(kvs.len(), 2);
    assert_eq!(&kvs[0].key[base.len()..base.len() + 10], stamp.as_ref());
    assert_eq!(&kvs[0].key[base.len() + 10..], &[0, 0], "user version 0 sorts first");
    assert_eq!(kvs[0].value.as_ref(), b"first");
    assert_eq!(&kvs[1].key[base.len() + 10..], &[0, 1]);
    assert_eq!(h.read(b"vv").await.expect("value"), [&b"stamp:"[..], &stamp].concat());

    // Later commits get larger stamps.
    let mut last = stamp;
    for _ in 0..3 {
        let tx = h.tx();
        tx.atomic_op(&versionstamped(&base, 0), b"later", MutationType::SetVersionstampedKey);
        let s = tx.get_versionstamp();
        tx.commit().await.expect("commit");
        let s = s.await.expect("stamp");
        assert!(s > last, "versionstamps must grow");
        last = s;
    }
    let ro = h.tx();
    ro.get(&h.k(b"x"), false).await.expect("get");
    let s = ro.get_versionstamp();
    assert_eq!(ro.commit().await.expect("read-only commit"), -1);
    assert_eq!(s.await.expect_err("read-only"), MetaError::NO_COMMIT_VERSION);
}

pub async fn key_selectors(h: &Harness) {
    h.put(&[(b"a", b""), (b"b", b""), (b"c", b""), (b"d", b"")]).await;
    let tx = h.tx();
    let name = |k: Bytes| String::from_utf8_lossy(&k[h.prefix.len().min(k.len())..]).into_owned();
    let cases = [
        (KeySelector::first_greater_or_equal(h.k(b"b")), "b"),
        (KeySelector::first_greater_than(h.k(b"b")), "c"),
        (KeySelector::last_less_or_equal(h.k(b"b")), "b"),
        (KeySelector::last_less_than(h.k(b"b")), "a"),
        (KeySelector::first_greater_or_equal(h.k(b"bb")), "c"),
        (KeySelector::last_less_or_equal(h.k(b"bb")), "b"),
        (KeySelector::first_greater_or_equal(h.k(b"a")).offset_by(2), "c"),
        (KeySelector::last_less_than(h.k(b"d")).offset_by(-1), "b"),
        (KeySelector::first_greater_than(h.k(b"a")).offset_by(1), "c"),
    ];
    for (s, want) in cases {
        assert_eq!(name(tx.get_key(&s, false).await.expect("get_key")), want, "{s:?}");
    }
    let before = tx.get_key(&KeySelector::last_less_than(h.k(b"a")), false).await.expect("key");
    assert!(before.as_ref() < h.prefix.as_slice(), "before the first key of the prefix");
    let after = tx.get_key(&KeySelector::first_greater_than(h.k(b"d")), false).await.expect("key");
    assert!(after.as_ref() >= strinc(&h.prefix).as_ref(), "after the last key of the prefix");
    // Selectors bound ranges too.
    let opt = RangeOption {
        begin: KeySelector::first_greater_than(h.k(b"a")),
        end: KeySelector::first_greater_or_equal(h.k(b"d")),
        limit: 0,
        reverse: false,
    };
    assert_eq!(h.names(&tx.get_range(&opt, false).await.expect("range").kvs), ["b", "c"]);
    // They see the transaction's own writes.
    tx.set(&h.k(b"bb"), b"");
    tx.clear(&h.k(b"c"));
    let s = KeySelector::first_greater_than(h.k(b"b"));
    assert_eq!(name(tx.get_key(&s, false).await.expect("key")), "bb");
    let s = KeySelector::first_greater_than(h.k(b"bb"));
    assert_eq!(name(tx.get_key(&s, false).await.expect("key")), "d");
}

pub async fn reverse_ranges_with_limits(h: &Harness) {
    let keys: Vec<Vec<u8>> = (0..10).map(|i| format!("k{i}").into_bytes()).collect();
    let pairs: Vec<(&[u8], &[u8])> = keys.iter().map(|k| (k.as_slice(), &b"v"[..])).collect();
    h.put(&pairs).await;
    let tx = h.tx();
    let r = tx.get_range(&h.range().reverse(true).limit(3), false).await.expect("range");
    assert_eq!(h.names(&r.kvs), ["k9", "k8", "k7"]);
    assert!(r.more);
    let r = tx.get_range(&h.range().limit(3), false).await.expect("range");
    assert_eq!(h.names(&r.kvs), ["k0", "k1", "k2"]);
    let r = tx.get_range(&h.range().reverse(true), false).await.expect("range");
    assert_eq!(r.kvs.len(), 10);
    assert_eq!(h.names(&r.kvs[..1]), ["k9"]);
    assert!(!r.more);
    let r = tx
        .get_range(&RangeOption::new(h.k(b"k3"), h.k(b"k6")).reverse(true).limit(2), false)
        .await
        .expect("r");
    assert_eq!(h.names(&r.kvs), ["k5", "k4"]);
    let r = tx.get_range(&RangeOption::new(h.k(b"k6"), h.k(b"k3")), false).await.expect("r");
    assert!(r.kvs.is_empty(), "begin after end reads nothing");
    // Paging through a range, forwards and backwards, visits every key once.
    for reverse in [false, true] {
        let mut opt = Some(h.range().limit(3).reverse(reverse));
        let mut seen = Vec::new();
        while let Some(o) = opt {
            let page = tx.get_range(&o, false).await.expect("page");
            seen.extend(h.names(&page.kvs));
            opt = o.next_range(&page);
        }
        let mut want: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
        if reverse {
            want.reverse();
        }
        assert_eq!(seen, want);
    }
}

pub async fn limits_and_their_errors(h: &Harness) {
    let tx = h.tx();
    let big_key = vec![b'k'; crate::limits::KEY_SIZE + 1];
    assert_eq!(tx.get(&big_key, false).await.expect_err("key"), MetaError::KEY_TOO_LARGE);
    tx.set(&[h.prefix.as_slice(), &big_key].concat(), b"v");
    assert_eq!(err(tx.commit().await), MetaError::KEY_TOO_LARGE);

    let tx = h.tx();
    tx.set(&h.k(b"v"), &vec![0u8; crate::limits::VALUE_SIZE + 1]);
    assert_eq!(err(tx.commit().await), MetaError::VALUE_TOO_LARGE);

    let tx = h.tx();
    tx.set(&h.k(b"max"), &vec![0u8; crate::limits::VALUE_SIZE]);
    tx.set(
        &[h.prefix.as_slice(), &vec![b'k'; crate::limits::KEY_SIZE - h.prefix.len()]].concat(),
        b"",
    );
    tx.commit().await.expect("exactly at the limits");

    let tx = h.tx();
    for i in 0..101 {
        tx.set(&h.k(format!("big{i:03}").as_bytes()), &vec![1u8; crate::limits::VALUE_SIZE]);
    }
    assert_eq!(err(tx.commit().await), MetaError::TRANSACTION_TOO_LARGE);
    assert_eq!(h.read(b"big000").await, None);

    let tx = h.tx();
    tx.clear_range(&h.k(b"b"), &h.k(b"a"));
    assert_eq!(err(tx.commit().await), MetaError::INVERTED_RANGE);

    let tx = h.tx();
    assert_eq!(
        tx.get(b"\xff\x01", false).await.expect_err("system"),
        MetaError::KEY_OUTSIDE_LEGAL_RANGE
    );
    tx.set(b"\xffsystem", b"x");
    assert_eq!(err(tx.commit().await), MetaError::KEY_OUTSIDE_LEGAL_RANGE);
}

pub async fn transaction_too_old(h: &Harness) {
    h.put(&[(b"k", b"v")]).await;
    let tx = h.tx();
    tx.get(&h.k(b"k"), false).await.expect("first read");
    h.advance(Duration::from_secs(6)).await;
    assert_eq!(
        tx.get(&h.k(b"k"), false).await.expect_err("too old"),
        MetaError::TRANSACTION_TOO_OLD
    );
    let tx = h.tx();
    tx.get_read_version().await.expect("grv");
    h.advance(Duration::from_secs(6)).await;
    tx.set(&h.k(b"k"), b"w");
    assert_eq!(err(tx.commit().await), MetaError::TRANSACTION_TOO_OLD);
    assert_eq!(h.read(b"k").await.as_deref(), Some(&b"v"[..]));
}

/// The watch's outcome if it completes within a generous time (a loaded machine may be slow).
async fn fired(w: &mut crate::MetaFuture<()>) -> Option<Result<(), MetaError>> {
    tokio::time::timeout(Duration::from_secs(10), w).await.ok()
}

/// Whether the watch stays pending for a while (it must not have fired).
async fn quiet(w: &mut crate::MetaFuture<()>) -> bool {
    tokio::time::timeout(Duration::from_millis(300), w).await.is_err()
}

pub async fn watches(h: &Harness) {
    h.put(&[(b"w", b"1")]).await;
    let tx = h.tx();
    let mut on_change = tx.watch(&h.k(b"w"));
    tx.commit().await.expect("register");
    h.put(&[(b"w", b"1")]).await;
    assert!(quiet(&mut on_change).await, "same value: no change");
    h.put(&[(b"w", b"2")]).await;
    assert_eq!(fired(&mut on_change).await, Some(Ok(())), "fires on change");

    let tx = h.tx();
    let mut on_clear = tx.watch(&h.k(b"w"));
    tx.commit().await.expect("register");
    let tx = h.tx();
    tx.clear_range(&h.k(b"a"), &h.k(b"z"));
    tx.commit().await.expect("clear");
    assert_eq!(fired(&mut on_clear).await, Some(Ok(())), "fires on clear");

    let tx = h.tx();
    let mut missing = tx.watch(&h.k(b"new"));
    tx.commit().await.expect("register");
    h.put(&[(b"new", b"x")]).await;
    assert_eq!(fired(&mut missing).await, Some(Ok(())), "fires when a missing key appears");

    // A watch whose transaction fails to commit fails with the commit's error.
    let reader = h.tx();
    reader.get(&h.k(b"w"), false).await.expect("get");
    let mut doomed = reader.watch(&h.k(b"w"));
    h.put(&[(b"w", b"3")]).await;
    reader.set(&h.k(b"other"), b"1");
    assert_eq!(err(reader.commit().await), MetaError::NOT_COMMITTED);
    assert_eq!(fired(&mut doomed).await, Some(Err(MetaError::NOT_COMMITTED)));

    let tx = h.tx();
    let mut cancelled = tx.watch(&h.k(b"w"));
    tx.cancel();
    assert_eq!(fired(&mut cancelled).await, Some(Err(MetaError::TRANSACTION_CANCELLED)));
    assert_eq!(
        tx.get(&h.k(b"w"), false).await.expect_err("cancelled"),
        MetaError::TRANSACTION_CANCELLED
    );
}

pub async fn directory_layer(h: &Harness) {
    let dl = DirectoryLayer::default();
    let root = String::from_utf8_lossy(&h.prefix).replace(['\0', '\u{fffd}'], "_");
    let path = |p: &[&str]| -> Vec<String> {
        std::iter::once(root.clone()).chain(p.iter().map(|s| (*s).to_owned())).collect()
    };
    let tx = h.tx();
    let _ = dl.remove_if_exists(&tx, &path(&[])).await;
    tx.commit().await.expect("cleanup");

    let tx = h.tx();
    let users = dl.create_or_open(&tx, &path(&["app", "users"]), None).await.expect("create");
    let again = dl.create_or_open(&tx, &path(&["app", "users"]), None).await.expect("open");
    assert_eq!(users.bytes(), again.bytes());
    let orders = dl.create(&tx, &path(&["app", "orders"]), Some(b"table")).await.expect("create");
    assert_ne!(users.bytes(), orders.bytes());
    assert!(matches!(
        dl.create(&tx, &path(&["app", "orders"]), None).await,
        Err(DirectoryError::AlreadyExists)
    ));
    assert!(matches!(
        dl.open(&tx, &path(&["app", "orders"]), Some(b"other")).await,
        Err(DirectoryError::IncompatibleLayer)
    ));
    tx.set(&users.subspace().pack(&"alice"), b"1");
    tx.commit().await.expect("commit");

    let tx = h.tx();
    assert!(matches!(dl.open(&tx, &path(&["nope"]), None).await, Err(DirectoryError::NotFound)));
    assert!(dl.exists(&tx, &path(&["app"])).await.expect("exists"));
    assert_eq!(dl.list(&tx, &path(&["app"])).await.expect("list"), ["orders", "users"]);
    let moved = dl.move_to(&tx, &path(&["app", "users"]), &path(&["people"])).await.expect("move");
    assert_eq!(moved.bytes(), users.bytes(), "a move keeps the prefix");
    assert!(matches!(
        dl.move_to(&tx, &path(&["app"]), &path(&["app", "inner"])).await,
        Err(DirectoryError::MoveIntoItself)
    ));
    tx.commit().await.expect("commit");

    let tx = h.tx();
    assert!(!dl.exists(&tx, &path(&["app", "users"])).await.expect("exists"));
    assert_eq!(
        tx.get(&moved.subspace().pack(&"alice"), false).await.expect("get").as_deref(),
        Some(&b"1"[..])
    );
    dl.remove(&tx, &path(&["people"])).await.expect("remove");
    assert_eq!(tx.get(&moved.subspace().pack(&"alice"), false).await.expect("get"), None);
    assert!(matches!(dl.remove(&tx, &path(&["people"])).await, Err(DirectoryError::NotFound)));
    tx.commit().await.expect("commit");

    // Prefixes are unique across many concurrent allocations.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let db = h.db.clone();
        let p = path(&[&format!("d{i}")]);
        tasks.push(tokio::spawn(async move {
            db.run(|tx, _| {
                let p = p.clone();
                async move {
                    DirectoryLayer::default()
                        .create_or_open(&tx, &p, None)
                        .await
                        .map(|d| d.bytes().to_vec())
                        .map_err(|e| match e {
                            DirectoryError::Meta(m) => RunError::Meta(m),
                            other => RunError::Custom(Box::new(other)),
                        })
                }
            })
            .await
            .expect("allocate")
        }));
    }
    let mut prefixes = Vec::new();
    for t in tasks {
        prefixes.push(t.await.expect("join"));
    }
    let n = prefixes.len();
    prefixes.sort();
    prefixes.dedup();
    assert_eq!(prefixes.len(), n, "every directory got its own prefix");
    let tx = h.tx();
    dl.remove(&tx, &path(&[])).await.expect("cleanup");
    tx.commit().await.expect("cleanup");
}

/// 16 tasks x 500 read-modify-write increments through `run` end at exactly 8,000.
pub async fn concurrent_increments(h: &Harness) {
    let key = h.k(b"counter");
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let db = h.db.clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..500 {
                db.run(|tx, _maybe: MaybeCommitted| {
                    let key = key.clone();
                    async move {
                        let cur = tx.get(&key, false).await?;
                        let n: u64 =
                            cur.map_or(0, |v| String::from_utf8_lossy(&v).parse().unwrap_or(0));
                        tx.set(&key, (n + 1).to_string().as_bytes());
                        Ok(())
                    }
                })
                .await
                .expect("increment");
            }
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    assert_eq!(h.read(b"counter").await.as_deref(), Some(&b"8000"[..]));
}

pub async fn versions_and_sizes(h: &Harness) {
    let tx = h.tx();
    let rv = tx.get_read_version().await.expect("grv");
    tx.set(&h.k(b"a"), b"12345");
    let size = tx.get_approximate_size().await.expect("size");
    assert!(size >= 5 + h.k(b"a").len() as i64, "size {size}");
    let cv = tx.commit().await.expect("commit");
    assert!(cv > rv, "commit version {cv} after read version {rv}");
    let tx = h.tx();
    assert!(tx.get_read_version().await.expect("grv") >= cv, "read versions see the commit");
    let est = tx.get_estimated_range_size_bytes(&h.prefix, &strinc(&h.prefix)).await.expect("est");
    assert!(est >= 0);
    assert_eq!(tx.commit().await.expect("read-only"), -1);
}

/// A `BeforeCommit` hook that counts its runs and fails when told to.
#[derive(Debug, Default)]
struct CountingHook {
    runs: std::sync::atomic::AtomicU32,
    fail: bool,
}

impl crate::BeforeCommit for CountingHook {
    fn run(&self) -> std::io::Result<()> {
        self.runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.fail { Err(std::io::Error::other("injected hook failure")) } else { Ok(()) }
    }
}

impl CountingHook {
    fn runs(&self) -> u32 {
        self.runs.load(std::sync::atomic::Ordering::SeqCst)
    }
}

pub async fn before_commit_hooks(h: &Harness) {
    // A hook runs once, at the commit, not when it is added.
    let hook = Arc::new(CountingHook::default());
    let tx = h.tx();
    tx.set(&h.k(b"a"), b"1");
    tx.before_commit(hook.clone());
    tx.before_commit(hook.clone());
    assert_eq!(hook.runs(), 0);
    tx.commit().await.expect("commit");
    assert_eq!(hook.runs(), 2, "each hook added runs once");
    // Released by the time the commit returns: what a hook finishes when it is dropped (the
    // Volume's ranges) is finished for whoever the commit answers.
    assert_eq!(Arc::strong_count(&hook), 1, "the committed transaction's hooks were released");
    assert_eq!(h.read(b"a").await.as_deref(), Some(&b"1"[..]));

    // A failing hook fails the commit, and nothing of the transaction is written.
    let failing = Arc::new(CountingHook { fail: true, ..CountingHook::default() });
    let tx = h.tx();
    tx.set(&h.k(b"b"), b"2");
    tx.before_commit(failing.clone());
    assert_eq!(err(tx.commit().await), MetaError::OPERATION_FAILED);
    assert_eq!(failing.runs(), 1);
    assert_eq!(Arc::strong_count(&failing), 1, "the failed transaction's hooks were released");
    assert_eq!(h.read(b"b").await, None);

    // A transaction dropped without a commit drops its hooks unrun; the database goes on.
    let tx = h.tx();
    tx.set(&h.k(b"c"), b"3");
    tx.before_commit(hook.clone());
    drop(tx);
    assert_eq!(Arc::strong_count(&hook), 1, "the hook was released");
    assert_eq!(hook.runs(), 2);
    h.put(&[(b"d", b"4")]).await;
    assert_eq!(h.read(b"d").await.as_deref(), Some(&b"4"[..]));
}

/// Expands to one `#[tokio::test]` per case. `$open` is an async fn of the case name returning a
/// `Harness`, or `None` to skip (it prints why).
#[macro_export]
macro_rules! conformance_suite {
    ($open:path) => {
        $crate::conformance_suite!(@cases $open;
            read_your_writes_point, read_your_writes_range, point_conflict, range_conflict_phantom,
            blind_writes_never_conflict, snapshot_reads_never_conflict, explicit_conflict_ranges,
            atomic_mutations, versionstamps, key_selectors, reverse_ranges_with_limits,
            limits_and_their_errors, transaction_too_old, watches, directory_layer,
            concurrent_increments, versions_and_sizes, before_commit_hooks);
    };
    (@cases $open:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let Some(h) = $open(stringify!($case)).await {
                    $crate::conformance::$case(&h).await;
                }
            }
        )*
    };
}
