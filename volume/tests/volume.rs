//! The Volume against real files and the embedded metadata store: round trips, rollover,
//! concurrent appenders, restarts, injected write and sync failures, torn tails, flipped bytes,
//! and SIGKILL under load.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use kronotop_meta::tuple::Subspace;
use kronotop_meta::{Database, MetaError, Transaction, embedded};
use kronotop_volume::io::{Faulty, FaultyStorage};
use kronotop_volume::{EntryMetadata, Volume, VolumeConfig, VolumeError};

const PREFIX: [u8; 8] = *b"testpref";

fn subspace() -> Subspace {
    Subspace::from_bytes(b"vol/".to_vec())
}

async fn open_with(db: &Database, dir: &Path, config: VolumeConfig) -> Volume {
    Volume::open(db, "bucket-shard-0", dir, subspace(), config).await.unwrap()
}

async fn open(db: &Database, dir: &Path, segment_size: u64) -> Volume {
    open_with(db, dir, VolumeConfig { segment_size, ..VolumeConfig::default() }).await
}

/// A 1 MiB-segment configuration on storage whose faults the returned handle injects.
fn faulty(redo: bool) -> (Arc<FaultyStorage>, VolumeConfig) {
    let faults = Arc::new(FaultyStorage::default());
    let config = VolumeConfig {
        segment_size: 1 << 20,
        storage: Arc::new(Faulty(Arc::clone(&faults))),
        redo,
        ..VolumeConfig::default()
    };
    (faults, config)
}

fn meta(dir: &Path) -> Database {
    Database::open_embedded(&dir.join("meta"), embedded::Options::default()).unwrap()
}

/// Appends `payloads` in one transaction and returns their ids once committed.
async fn put(db: &Database, vol: &Volume, payloads: &[&[u8]]) -> Vec<[u8; 12]> {
    let tx = db.create_trx().unwrap();
    let appended = vol.append(db, &tx, PREFIX, payloads).await.unwrap();
    let stamp = tx.get_versionstamp();
    tx.commit().await.unwrap();
    let stamp = stamp.await.unwrap();
    appended
        .iter()
        .map(|a| {
            let mut id = [0u8; 12];
            id[..10].copy_from_slice(&stamp);
            id[10..].copy_from_slice(&a.user_version.to_be_bytes());
            id
        })
        .collect()
}

async fn get(
    db: &Database,
    vol: &Volume,
    id: &[u8; 12],
) -> Result<Option<bytes::Bytes>, VolumeError> {
    let tx: Transaction = db.create_trx().unwrap();
    vol.get(&tx, PREFIX, id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_get_list_delete_update() {
    let dir = tempfile::tempdir().unwrap();
    let db = meta(dir.path());
    let vol = open(&db, dir.path(), 1 << 20).await;
    let ids = put(&db, &vol, &[b"one", b"two", b"three"]).await;
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids are ordered within a transaction");
    for (id, want) in ids.iter().zip([&b"one"[..], b"two", b"three"]) {
        assert_eq!(get(&db, &vol, id).await.unwrap().as_deref(), Some(want));
    }
    let tx = db.create_trx().unwrap();
    let listed = vol.list(&tx, PREFIX).await.unwrap();
    assert_eq!(listed.iter().map(|(id, _)| *id).collect::<Vec<_>>(), ids);
    assert!(vol.list(&tx, *b"otherpre").await.unwrap().is_empty());

    let tx = db.create_trx().unwrap();
    assert!(vol.delete(&tx, PREFIX, &ids[1]).await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(get(&db, &vol, &ids[1]).await.unwrap(), None);
    let tx = db.create_trx().unwrap();
    assert!(!vol.delete(&tx, PREFIX, &ids[1]).await.unwrap());

    let tx = db.create_trx().unwrap();
    let moved = vol.update(&db, &tx, PREFIX, &ids[0], b"uno, updated").await.unwrap().unwrap();
    tx.commit().await.unwrap();
    assert_eq!(get(&db, &vol, &ids[0]).await.unwrap().as_deref(), Some(&b"uno, updated"[..]));
    let tx = db.create_trx().unwrap();
    let stats = vol.stats(&tx).await.unwrap();
    let s = stats.iter().find(|s| s.segment == moved.segment).unwrap();
    assert_eq!(s.cardinality, 2, "one deleted, one updated in place of itself");
    assert_eq!(s.used, (16 + 5) + (16 + 12));
    assert!(s.garbage() >= (16 + 3) + (16 + 3), "deleted and replaced bytes are garbage: {s:?}");
    let live = vol.live_entries_after(&tx, moved.segment, None, usize::MAX).await.unwrap();
    assert_eq!(live.len(), 2);

    // Bad appends are refused before anything is written.
    let tx = db.create_trx().unwrap();
    assert!(matches!(vol.append(&db, &tx, PREFIX, &[]).await, Err(VolumeError::EntryCount(0))));
    assert!(matches!(vol.append(&db, &tx, PREFIX, &[b""]).await, Err(VolumeError::EntrySize(0))));
    let huge = vec![0u8; (1 << 20) + 1];
    assert!(matches!(vol.append(&db, &tx, PREFIX, &[&huge]).await, Err(VolumeError::EntrySize(_))));
    vol.set_status(&db, "readonly").await.unwrap();
    assert!(matches!(
        vol.append(&db, &tx, PREFIX, &[b"x"]).await,
        Err(VolumeError::NotWritable(..))
    ));
    assert!(matches!(vol.set_status(&db, "sleepy").await, Err(VolumeError::InvalidStatus(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_roll_over_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = meta(dir.path());
    let payloads: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 1000]).collect();
    let ids = {
        let vol = open(&db, dir.path(), 8192).await;
        let mut ids = Vec::new();
        for p in &payloads {
            ids.extend(put(&db, &vol, &[p]).await);
        }
        assert!(vol.segment_ids().len() >= 5, "{:?}", vol.segment_ids());
        ids
    };
    let vol = open(&db, dir.path(), 8192).await;
    for (id, p) in ids.iter().zip(&payloads) {
        assert_eq!(get(&db, &vol, id).await.unwrap().as_deref(), Some(p.as_slice()));
    }
    let before = vol.segment_ids();
    let more = put(&db, &vol, &[b"after restart"]).await;
    let tx = db.create_trx().unwrap();
    let m: EntryMetadata = vol.metadata(&tx, PREFIX, &more[0]).await.unwrap().unwrap();
    assert_eq!(m.segment, *before.last().unwrap(), "appends go to the fresh segment made at open");
}

/// One append larger than what is left of the active segment: its entries are written in one
/// run (one write) per segment, across rollovers, and each segment's statistics count exactly
/// its own entries.
#[tokio::test]
async fn one_append_spans_segments_in_runs_and_counts_each() {
    let dir = tempfile::tempdir().unwrap();
    let db = meta(dir.path());
    let payloads: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 1000]).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    let (ids, segments) = {
        let (faults, config) = faulty(true);
        let vol = open_with(&db, dir.path(), VolumeConfig { segment_size: 8192, ..config }).await;
        // A first entry, so the big append starts in a segment that is partly full.
        let first = put(&db, &vol, &[b"first"]).await;
        let before = faults.writes();
        let ids = put(&db, &vol, &refs).await;
        let writes = faults.writes() - before;
        let tx = db.create_trx().unwrap();
        let mut at = Vec::new();
        for id in first.iter().chain(&ids) {
            at.push(vol.metadata(&tx, PREFIX, id).await.unwrap().unwrap());
        }
        assert_eq!(at[1].segment, at[0].segment, "the run starts where there is room: {at:?}");
        for w in at.windows(2) {
            if w[0].segment == w[1].segment {
                assert_eq!(w[1].position, w[0].position + w[0].stored_len() as u64, "{at:?}");
            }
        }
        let stats = vol.stats(&tx).await.unwrap();
        for s in &stats {
            let mine = at.iter().filter(|m| m.segment == s.segment);
            assert_eq!(s.cardinality, mine.clone().count() as i64, "{s:?}");
            assert_eq!(s.used, mine.map(EntryMetadata::stored_len).sum::<i64>(), "{s:?}");
        }
        let segments: std::collections::BTreeSet<_> = at.iter().map(|m| m.segment).collect();
        // One write per segment the append reached, and the header of each segment it opened.
        assert_eq!(writes, 2 * segments.len() as u64 - 1, "{at:?}");
        (ids, segments)
    };
    assert!(segments.len() >= 3, "{segments:?}");
    let vol = open(&db, dir.path(), 8192).await;
    for (id, p) in ids.iter().zip(&payloads) {
        assert_eq!(get(&db, &vol, id).await.unwrap().as_deref(), Some(p.as_slice()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_share_syncs_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = meta(dir.path());
    let vol = Arc::new(open(&db, dir.path(), 1 << 20).await);
    let mut tasks = Vec::new();
    for t in 0..32u32 {
        let (db, vol) = (db.clone(), Arc::clone(&vol));
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..20u32 {
                let payload = format!("task {t} entry {i}").into_bytes();
                let id = put(&db, &vol, &[&payload]).await[0];
                got.push((id, payload));
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert_eq!(all.len(), 640);
    for (id, payload) in &all {
        assert_eq!(get(&db, &vol, id).await.unwrap().as_deref(), Some(payload.as_slice()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_writes_and_syncs_leave_nothing_referenced() {
    let dir = tempfile::tempdir().unwrap();
    let db = meta(dir.path());
    // Every append synced before its commit, the path of large appends (see
    // `redo_records_replace_the_sync_and_come_back_after_a_crash` for small ones).
    let (faults, config) = faulty(false);
    let vol = open_with(&db, dir.path(), config).await;
    let kept = put(&db, &vol, &[b"before the faults"]).await[0];

    faults.fail_nth_write(1);
    let tx = db.create_trx().unwrap();
    let err = vol.append(&db, &tx, PREFIX, &[b"lost write"]).await.unwrap_err();
    assert!(matches!(err, VolumeError::Io { .. }), "{err}");
    tx.commit().await.unwrap();
    let tx = db.create_trx().unwrap();
    assert_eq!(vol.list(&tx, PREFIX).await.unwrap().len(), 1, "nothing points at the failed write");

    // The append leaves the sync to the commit, so the commit is what fails, and nothing points
    // at the bytes it could not make durable.
    faults.fail_nth_sync(1);
    let tx = db.create_trx().unwrap();
    vol.append(&db, &tx, PREFIX, &[b"unsynced"]).await.unwrap();
    assert_eq!(tx.commit().await.unwrap_err(), MetaError::OPERATION_FAILED);
    let tx = db.create_trx().unwrap();
    assert_eq!(
        vol.list(&tx, PREFIX).await.unwrap().len(),
        1,
        "nothing points at the unsynced write"
    );
    drop(tx);
    // The segment that failed to sync takes no more appends; the next append rolls over.
    let segments_before = vol.segment_ids().len();
    let after = put(&db, &vol, &[b"after the faults"]).await[0];
    assert_eq!(vol.segment_ids().len(), segments_before + 1);
    assert_eq!(get(&db, &vol, &after).await.unwrap().as_deref(), Some(&b"after the faults"[..]));
    assert_eq!(get(&db, &vol, &kept).await.unwrap().as_deref(), Some(&b"before the faults"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_synced_by_the_commit_that_refers_to_them() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let db = meta(dir.path());
    // The path of entries too large for redo records (see `redo_records_replace_the_sync`).
    let config = VolumeConfig { segment_size: 1 << 20, redo: false, ..VolumeConfig::default() };
    let vol = open_with(&db, dir.path(), config).await;
    let syncs = || vol.counters.syncs.load(Ordering::SeqCst);
    let durable = |segment: u64| vol.tails().iter().find(|t| t.segment == segment).unwrap().durable;
    let end = |m: &EntryMetadata| m.position + 16 + u64::from(m.length);
    let before = syncs();

    let tx = db.create_trx().unwrap();
    let a = vol.append(&db, &tx, PREFIX, &[b"one", b"two"]).await.unwrap();
    let last = a[1].metadata;
    assert_eq!(syncs(), before, "the append leaves its sync to the commit");
    assert!(durable(last.segment) < end(&last), "unsynced bytes are not offered to standbys");
    tx.commit().await.unwrap();
    assert_eq!(syncs(), before + 1, "one sync for the transaction's entries");
    assert!(durable(last.segment) >= end(&last));

    // Two transactions committed together share a sync when their batch allows; each is synced
    // by the time its commit returns.
    let (t1, t2) = (db.create_trx().unwrap(), db.create_trx().unwrap());
    let b1 = vol.append(&db, &t1, PREFIX, &[b"three"]).await.unwrap()[0].metadata;
    let b2 = vol.append(&db, &t2, PREFIX, &[b"four"]).await.unwrap()[0].metadata;
    let (r1, r2) = tokio::join!(t1.commit(), t2.commit());
    r1.unwrap();
    r2.unwrap();
    let after = syncs();
    assert!((before + 2..=before + 3).contains(&after), "{after}");
    assert!(durable(b2.segment) >= end(&b1).max(end(&b2)));

    // An open transaction does not hold the watermark back: the sync a later commit runs covers
    // the open one's bytes too.
    let open_tx = db.create_trx().unwrap();
    let c = vol.append(&db, &open_tx, PREFIX, &[b"open"]).await.unwrap()[0].metadata;
    assert!(durable(c.segment) < end(&c));
    let tx = db.create_trx().unwrap();
    let d = vol.append(&db, &tx, PREFIX, &[b"later"]).await.unwrap()[0].metadata;
    tx.commit().await.unwrap();
    assert!(durable(d.segment) >= end(&d) && end(&d) > end(&c));
    let after = syncs();

    // Stopping writes syncs what open transactions wrote, so a standby that has caught up after
    // that holds every byte a late commit could point at.
    let e = vol.append(&db, &open_tx, PREFIX, &[b"open, later"]).await.unwrap()[0].metadata;
    assert!(durable(e.segment) < end(&e));
    vol.set_status(&db, "READONLY").await.unwrap();
    assert!(durable(e.segment) >= end(&e));
    assert_eq!(syncs(), after + 1);
    vol.set_status(&db, "READWRITE").await.unwrap();
    open_tx.commit().await.unwrap();
    assert_eq!(syncs(), after + 1, "the commit finds its bytes synced already");

    // A transaction that never commits: its bytes are referenced by nothing, and the watermark
    // moves over them without a sync, so standbys are not held back.
    let tx = db.create_trx().unwrap();
    let f = vol.append(&db, &tx, PREFIX, &[b"never committed"]).await.unwrap()[0].metadata;
    assert!(durable(f.segment) < end(&f));
    drop(tx);
    assert_eq!(syncs(), after + 1);
    assert!(durable(f.segment) >= end(&f));
    let tx = db.create_trx().unwrap();
    assert_eq!(vol.list(&tx, PREFIX).await.unwrap().len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_transaction_does_not_keep_a_full_segment_from_completing() {
    let dir = tempfile::tempdir().unwrap();
    let db = meta(dir.path());
    let vol = open(&db, dir.path(), 1 << 16).await;
    let big = vec![7u8; 20_000];
    // Three such entries fill a 64 KiB segment; the open transaction writes the last of them.
    put(&db, &vol, &[&big]).await;
    put(&db, &vol, &[&big]).await;
    let open_tx = db.create_trx().unwrap();
    let last = vol.append(&db, &open_tx, PREFIX, &[&big]).await.unwrap()[0].metadata;
    let first = vol.segment_ids()[0];
    assert_eq!(last.segment, first);
    // The next append rolls over to a new segment; nothing will write the old one again.
    put(&db, &vol, &[&big]).await;
    assert!(vol.segment_ids().len() > 1);
    let tail = vol.tails().into_iter().find(|t| t.segment == first).unwrap();
    assert!(tail.durable >= last.position + 16 + 20_000, "{tail:?}");
    assert!(tail.complete, "standbys can move on to the next segment: {tail:?}");
    open_tx.commit().await.unwrap();
    let tx = db.create_trx().unwrap();
    assert_eq!(vol.list(&tx, PREFIX).await.unwrap().len(), 4);
}

fn segment_path(vol: &Volume, segment: u64) -> std::path::PathBuf {
    vol.dir().join(format!("{segment:019}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tails_and_flipped_bytes_are_caught() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let db = meta(dir.path());
    let payload = b"the last entry of the segment".to_vec();
    let (ids, last_meta, path) = {
        let vol = open(&db, dir.path(), 1 << 16).await;
        let ids = put(&db, &vol, &[b"first", b"second", &payload]).await;
        let tx = db.create_trx().unwrap();
        let m = vol.metadata(&tx, PREFIX, &ids[2]).await.unwrap().unwrap();
        let path = segment_path(&vol, m.segment);
        (ids, m, path)
    };
    let end = last_meta.position + 16 + u64::from(last_meta.length);
    // A crash in the middle of an append that was never committed: any prefix of its bytes.
    let mut torn = kronotop_volume::format::entry_header(b"never committed").to_vec();
    torn.extend_from_slice(b"never committed");
    for cut in 0..=torn.len() {
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&torn[..cut], end).unwrap();
        let vol = open(&db, dir.path(), 1 << 16).await;
        assert_eq!(
            get(&db, &vol, &ids[0]).await.unwrap().as_deref(),
            Some(&b"first"[..]),
            "cut {cut}"
        );
        assert_eq!(get(&db, &vol, &ids[2]).await.unwrap().as_deref(), Some(payload.as_slice()));
    }
    // The referenced last entry itself torn (the file cut inside it): a clear error, never bytes.
    let original = std::fs::read(&path).unwrap();
    for cut in last_meta.position..end {
        std::fs::write(&path, &original[..usize::try_from(cut).unwrap()]).unwrap();
        let vol = open(&db, dir.path(), 1 << 16).await;
        let err = get(&db, &vol, &ids[2]).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("bucket-shard-0")
                && text.contains(&format!("segment {}", last_meta.segment))
                && text.contains(&format!("position {}", last_meta.position)),
            "cut {cut}: {text}"
        );
        assert_eq!(
            get(&db, &vol, &ids[1]).await.unwrap().as_deref(),
            Some(&b"second"[..]),
            "cut {cut}"
        );
    }
    std::fs::write(&path, &original).unwrap();
    // One flipped byte anywhere in an entry is detected.
    for offset in last_meta.position..end {
        let mut damaged = original.clone();
        damaged[usize::try_from(offset).unwrap()] ^= 0x20;
        std::fs::write(&path, &damaged).unwrap();
        let vol = open(&db, dir.path(), 1 << 16).await;
        assert!(
            matches!(get(&db, &vol, &ids[2]).await, Err(VolumeError::Corrupted { .. })),
            "offset {offset}"
        );
    }
}

const CHILD_ENV: &str = "KRONOTOP_VOLUME_CRASH_CHILD";

/// The child: appends and commits from 8 tasks forever, printing each acknowledged entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let dir = Path::new(&dir);
    let db = meta(dir);
    let vol = Arc::new(open(&db, dir, 1 << 18).await);
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let (db, vol) = (db.clone(), Arc::clone(&vol));
        tasks.push(tokio::spawn(async move {
            for i in 0u32.. {
                let payload = format!("{t}:{i}:").repeat(1 + (i as usize % 50)).into_bytes();
                let id = put(&db, &vol, &[&payload]).await[0];
                println!(
                    "acked {} {}",
                    hex(&id),
                    String::from_utf8_lossy(&payload[..payload.len().min(20)])
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> [u8; 12] {
    let mut out = [0u8; 12];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_entries_survive_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for round in 0..4 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--nocapture", "--test-threads", "1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut acked = Vec::new();
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let line = line.unwrap();
            let Some(rest) = line.strip_prefix("acked ") else { continue };
            let (id, head) = rest.split_once(' ').unwrap();
            acked.push((unhex(id), head.to_owned()));
            if acked.len() >= 150 + round * 50 {
                break;
            }
        }
        assert_eq!(acked.len(), 150 + round * 50, "round {round}: the child stopped early");
        child.kill().unwrap();
        child.wait().unwrap();
        let db = meta(dir.path());
        let vol = open(&db, dir.path(), 1 << 18).await;
        for (id, head) in &acked {
            let got = get(&db, &vol, id)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("round {round}: entry lost"));
            assert!(String::from_utf8_lossy(&got).starts_with(head.as_str()), "round {round}");
        }
        drop(vol);
        db.close();
    }
}

/// Many appenders filling small segments at once: every rollover makes exactly one new segment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_rollovers_make_one_segment_each() {
    let dir = tempfile::tempdir().unwrap();
    let db = meta(dir.path());
    let vol = Arc::new(open(&db, dir.path(), 16 * 1024).await);
    let mut tasks = Vec::new();
    for t in 0..16u8 {
        let (db, vol) = (db.clone(), Arc::clone(&vol));
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..10 {
                ids.push((put(&db, &vol, &[&vec![t; 3000]]).await[0], t));
            }
            ids
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    for (id, t) in &all {
        assert_eq!(get(&db, &vol, id).await.unwrap().unwrap(), vec![*t; 3000]);
    }
    let ids = vol.segment_ids();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "consecutive segments: {ids:?}");
    assert!(ids.len() >= 160 * 3016 / (16 * 1024), "{} segments", ids.len());
}

/// An evacuator that records the moves it is told of, and says nothing refers to entries whose
/// payload starts with `orphan`.
#[derive(Default)]
struct Recorder {
    orphan: u8,
    #[allow(clippy::type_complexity)]
    moves: std::sync::Mutex<Vec<([u8; 8], [u8; 12], Vec<u8>, EntryMetadata, EntryMetadata)>>,
}

impl kronotop_volume::vacuum::Evacuator for Recorder {
    fn referenced<'a>(
        &'a self,
        _tx: &'a Transaction,
        e: kronotop_volume::vacuum::Entry<'a>,
    ) -> kronotop_volume::vacuum::EvacuatorFuture<'a, bool> {
        let referenced = e.bytes.first() != Some(&self.orphan);
        Box::pin(async move { Ok(referenced) })
    }

    fn moved<'a>(
        &'a self,
        _tx: &'a Transaction,
        e: kronotop_volume::vacuum::Entry<'a>,
        to: EntryMetadata,
    ) -> kronotop_volume::vacuum::EvacuatorFuture<'a, ()> {
        self.moves.lock().unwrap().push((e.prefix, e.id, e.bytes.to_vec(), e.at, to));
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_moves_live_entries_and_deletes_emptied_segments() {
    use kronotop_volume::vacuum::{Outcome, Progress};
    let dir = tempfile::tempdir().unwrap();
    let db = meta(dir.path());
    let config = VolumeConfig {
        segment_size: 16 * 1024,
        retire_grace: std::time::Duration::ZERO,
        ..VolumeConfig::default()
    };
    let vol = Arc::new(open_with(&db, dir.path(), config).await);
    let mut ids = Vec::new();
    for i in 0..60u8 {
        ids.push((put(&db, &vol, &[&vec![i; 1500]]).await[0], i));
    }
    let before = vol.segment_ids();
    assert!(before.len() >= 6, "{before:?}");
    // Delete four of every five entries: most segments become mostly garbage.
    let tx = db.create_trx().unwrap();
    let mut kept = Vec::new();
    for (id, i) in &ids {
        if i % 5 == 0 {
            kept.push((*id, *i));
        } else {
            assert!(vol.delete(&tx, PREFIX, id).await.unwrap());
        }
    }
    tx.commit().await.unwrap();

    // A stop requested before it starts stops it before any segment is touched.
    let stopped = Progress::default();
    stopped.stop.store(true, std::sync::atomic::Ordering::Release);
    assert_eq!(vol.vacuum(&db, 50.0, &stopped, None).await.unwrap(), Outcome::Stopped);
    assert_eq!(vol.segment_ids(), before);

    // The first kept entry (payload 0, in the first segment) is one its owner no longer refers
    // to: the run deletes it instead of moving it.
    let (orphan, _) = kept.remove(0);
    // Reads go on while it runs.
    let reader = {
        let (db, vol, kept) = (db.clone(), Arc::clone(&vol), kept.clone());
        tokio::spawn(async move {
            for _ in 0..20 {
                for (id, i) in &kept {
                    assert_eq!(get(&db, &vol, id).await.unwrap().unwrap(), vec![*i; 1500]);
                }
            }
        })
    };
    let progress = Progress::default();
    let evacuator = Recorder { orphan: 0, ..Recorder::default() };
    assert_eq!(
        vol.vacuum(&db, 50.0, &progress, Some(&evacuator)).await.unwrap(),
        Outcome::Completed
    );
    reader.await.unwrap();
    assert_eq!(get(&db, &vol, &orphan).await.unwrap(), None, "deleted, not moved");
    // The owner heard of every move, with the entry's bytes and its old and new places (the
    // last call per entry is the committed one: a retried transaction calls again).
    let moves: std::collections::BTreeMap<_, _> = evacuator
        .moves
        .lock()
        .unwrap()
        .iter()
        .map(|(p, id, b, from, to)| (*id, (*p, b.clone(), *from, *to)))
        .collect();
    assert!(!moves.is_empty());
    let tx = db.create_trx().unwrap();
    for (id, (prefix, bytes, from, to)) in &moves {
        assert_eq!(*prefix, PREFIX);
        let (_, i) = kept.iter().find(|(k, _)| k == id).expect("a kept entry moved");
        assert_eq!(bytes, &vec![*i; 1500]);
        assert_ne!(from.segment, to.segment);
        assert_eq!(vol.metadata(&tx, PREFIX, id).await.unwrap(), Some(*to));
    }
    drop(tx);
    let after = vol.segment_ids();
    assert!(after.len() < before.len(), "{before:?} -> {after:?}");
    // Retired files go once their grace period (zero here) has passed.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for old in before.iter().filter(|s| !after.contains(s)) {
        assert!(!segment_path(&vol, *old).exists(), "segment {old}'s file is deleted");
    }
    for (id, i) in &kept {
        assert_eq!(
            get(&db, &vol, id).await.unwrap().unwrap(),
            vec![*i; 1500],
            "entry {i} after vacuum"
        );
    }
    let tx = db.create_trx().unwrap();
    assert_eq!(vol.list(&tx, PREFIX).await.unwrap().len(), kept.len());
    let total: i64 = vol.stats(&tx).await.unwrap().iter().map(|s| s.cardinality).sum();
    assert_eq!(total, kept.len() as i64);
    // The segment that was active during the run is a candidate next time; after that, nothing is
    // left to do.
    let mut runs = 0;
    while vol.vacuum(&db, 50.0, &Progress::default(), None).await.unwrap() != Outcome::NoWork {
        runs += 1;
        assert!(runs < 3, "vacuum does not converge");
    }
    for (id, i) in &kept {
        assert_eq!(get(&db, &vol, id).await.unwrap().unwrap(), vec![*i; 1500]);
    }
    // And the entries survive a restart.
    drop(vol);
    let vol = open(&db, dir.path(), 16 * 1024).await;
    for (id, i) in &kept {
        assert_eq!(get(&db, &vol, id).await.unwrap().unwrap(), vec![*i; 1500]);
    }
}

/// An evacuator that fails every call.
struct Refuser;

impl kronotop_volume::vacuum::Evacuator for Refuser {
    fn referenced<'a>(
        &'a self,
        _tx: &'a Transaction,
        _e: kronotop_volume::vacuum::Entry<'a>,
    ) -> kronotop_volume::vacuum::EvacuatorFuture<'a, bool> {
        Box::pin(async {
            Err(kronotop_meta::RunError::Custom("the owner's metadata is damaged".into()))
        })
    }

    fn moved<'a>(
        &'a self,
        _tx: &'a Transaction,
        _e: kronotop_volume::vacuum::Entry<'a>,
        _to: EntryMetadata,
    ) -> kronotop_volume::vacuum::EvacuatorFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
}

/// A run the owner's error ends is recorded as FAILED with the reason, the segment it was in as
/// stopped, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_vacuum_run_says_why_and_loses_nothing() {
    use kronotop_volume::vacuum::{Outcome, Progress, SegmentState};
    let dir = tempfile::tempdir().unwrap();
    let db = meta(dir.path());
    let vol = Arc::new(open(&db, dir.path(), 16 * 1024).await);
    let mut ids = Vec::new();
    for i in 0..30u8 {
        ids.push((put(&db, &vol, &[&vec![i; 1500]]).await[0], i));
    }
    let tx = db.create_trx().unwrap();
    for (id, i) in &ids {
        if i % 3 != 0 {
            assert!(vol.delete(&tx, PREFIX, id).await.unwrap());
        }
    }
    tx.commit().await.unwrap();
    let progress = Progress::default();
    let err = vol.vacuum(&db, 50.0, &progress, Some(&Refuser)).await.unwrap_err();
    assert!(err.to_string().contains("the owner's metadata is damaged"), "{err}");
    let snap = progress.snapshot();
    assert_eq!(snap.outcome, Some(Outcome::Failed));
    assert_eq!(snap.error.as_deref(), Some(err.to_string().as_str()));
    assert!(snap.completed_at_ms.is_some());
    assert_eq!(snap.segments.len(), 1);
    assert_eq!(snap.segments[0].1, SegmentState::Stopped);
    for (id, i) in ids.iter().filter(|(_, i)| i % 3 == 0) {
        assert_eq!(get(&db, &vol, id).await.unwrap().unwrap(), vec![*i; 1500]);
    }
}

/// What standbys see: durable watermarks that cover every synced append, complete segments after
/// a rollover, bytes only below the watermark, and a sync standby that holds writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standbys_see_durable_watermarks_and_sync_writes_wait() {
    use kronotop_volume::replication::{Position, SyncFallback, SyncStandby};
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let db = meta(dir.path());
    let vol = Arc::new(open(&db, dir.path(), 1 << 20).await);
    let first = vol.tails();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].durable, 64, "a fresh segment holds only its header");
    assert!(!first[0].complete);
    let version = *vol.progress().borrow();

    // Concurrent appenders: the watermark ends at the last reservation, with no hole.
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let (db, vol) = (db.clone(), Arc::clone(&vol));
        tasks.push(tokio::spawn(async move {
            let payload = vec![i; 1000 + usize::from(i)];
            put(&db, &vol, &[&payload]).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (segment, next) = vol.cursor();
    let tails = vol.tails();
    assert_eq!(tails.last().unwrap().durable, next);
    assert!(*vol.progress().borrow() > version, "followers were woken");
    assert_eq!(vol.segment_bytes(segment, 0, next).unwrap().len() as u64, next);
    assert!(matches!(vol.segment_bytes(segment, 0, next + 1), Err(VolumeError::NotDurable(..))));

    // Filling the segment rolls over; the old one is complete.
    let big = vec![7u8; 300_000];
    for _ in 0..4 {
        put(&db, &vol, &[&big]).await;
    }
    let tails = vol.tails();
    assert!(tails.len() >= 2);
    assert!(tails[0].complete && !tails.last().unwrap().complete);

    // A sync standby that never acknowledges: the write fails after the timeout.
    vol.replication.set_sync_standby(Some(SyncStandby {
        member: "standby".into(),
        timeout: Duration::from_millis(200),
        fallback: SyncFallback::Fail,
    }));
    let tx = db.create_trx().unwrap();
    let err = vol.append(&db, &tx, PREFIX, &[b"held"]).await.unwrap_err();
    assert!(matches!(err, VolumeError::SyncStandby(..)), "{err}");

    // One that acknowledges as soon as the bytes are durable: the write goes through.
    let acker = {
        let vol = Arc::clone(&vol);
        tokio::spawn(async move {
            let mut progress = vol.progress();
            for _ in 0..50 {
                let _ = tokio::time::timeout(Duration::from_millis(20), progress.changed()).await;
                let last = *vol.tails().last().unwrap();
                vol.replication.record_ack(
                    "standby",
                    Position { segment: last.segment, position: last.durable },
                );
            }
        })
    };
    put(&db, &vol, &[b"acknowledged"]).await;
    acker.await.unwrap();

    // Asynchronous fallback: the write goes on and the volume is degraded until the standby
    // acknowledges what the timed-out write needed.
    vol.replication.set_sync_standby(Some(SyncStandby {
        member: "standby".into(),
        timeout: Duration::from_millis(100),
        fallback: SyncFallback::Async,
    }));
    put(&db, &vol, &[b"degrades"]).await;
    assert!(vol.replication.degraded());
    put(&db, &vol, &[b"does not wait"]).await;
    let last = *vol.tails().last().unwrap();
    vol.replication
        .record_ack("standby", Position { segment: last.segment, position: last.durable });
    assert!(!vol.replication.degraded());
}

/// A segment's live entries read page by page are the whole list, in position order, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_entries_are_read_in_pages() {
    let dir = tempfile::tempdir().unwrap();
    let db = meta(dir.path());
    let vol = open(&db, dir.path(), 1 << 20).await;
    let payloads: Vec<Vec<u8>> = (0..25u8).map(|i| vec![i; 10]).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    put(&db, &vol, &refs).await;
    let tx = db.create_trx().unwrap();
    let all = vol.live_entries_after(&tx, 1, None, usize::MAX).await.unwrap();
    assert_eq!(all.len(), 25);
    let mut paged = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = vol.live_entries_after(&tx, 1, after, 10).await.unwrap();
        let Some(last) = page.last() else { break };
        assert!(page.len() <= 10);
        after = Some(last.0);
        paged.extend(page);
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(paged, all);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "position order");
}

/// A segment with more live entries than one page of its index (10,000) is evacuated page after
/// page: every entry moves, each keeps its bytes, and the segment is retired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_pages_through_a_segment_of_many_entries() {
    use kronotop_volume::vacuum::{Outcome, Progress};
    let dir = tempfile::tempdir().unwrap();
    let db = meta(dir.path());
    let config = VolumeConfig {
        segment_size: 1 << 20,
        retire_grace: std::time::Duration::ZERO,
        ..VolumeConfig::default()
    };
    let vol = Arc::new(open_with(&db, dir.path(), config).await);
    let payloads: Vec<Vec<u8>> = (0..12_000u32).map(|i| i.to_be_bytes().repeat(3)).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    let ids = put(&db, &vol, &refs).await;
    // A large entry that does not fit rolls the volume over, so segment 1 is no longer active.
    put(&db, &vol, &[&vec![7u8; 900 * 1024]]).await;
    assert_eq!(vol.segment_ids(), [1, 2]);
    let tx = db.create_trx().unwrap();
    for id in ids.iter().step_by(12) {
        assert!(vol.delete(&tx, PREFIX, id).await.unwrap());
    }
    tx.commit().await.unwrap();
    let progress = Progress::default();
    assert_eq!(vol.vacuum(&db, 1.0, &progress, None).await.unwrap(), Outcome::Completed);
    assert!(!vol.segment_ids().contains(&1), "{:?}", vol.segment_ids());
    for (i, id) in ids.iter().enumerate() {
        let got = get(&db, &vol, id).await.unwrap();
        if i % 12 == 0 {
            assert_eq!(got, None);
        } else {
            assert_eq!(got.as_deref(), Some(&payloads[i][..]), "entry {i}");
        }
    }
}

/// Copies a directory tree file by file: what a crash of the process leaves (the page cache
/// holds every write), taken while the database is idle.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redo_records_replace_the_sync_and_come_back_after_a_crash() {
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let db = meta(dir.path());
    let vol = open(&db, dir.path(), 1 << 20).await;
    let syncs = || vol.counters.syncs.load(Ordering::SeqCst);
    let before = syncs();
    // 25 entries of some 480 bytes: one append under the redo limit (16 KiB).
    let small: Vec<Vec<u8>> =
        (0..25).map(|i| format!("small entry {i};").repeat(30).into_bytes()).collect();
    let refs: Vec<&[u8]> = small.iter().map(Vec::as_slice).collect();
    let mut ids = put(&db, &vol, &refs).await;
    ids.push(put(&db, &vol, &[b"alone"]).await[0]);
    let mut payloads = small.clone();
    payloads.push(b"alone".to_vec());
    assert_eq!(syncs(), before, "small entries are logged with their commit, not synced");
    let big = vec![9u8; 20_000];
    let big_id = put(&db, &vol, &[&big]).await[0];
    assert_eq!(syncs(), before + 1, "an append past the redo limit is synced before its commit");

    // The crash: the files as they are now, with the small entries' bytes gone from the copy of
    // the segment, as if the page cache had not reached the disk.
    let crash = tempfile::tempdir().unwrap();
    copy_tree(dir.path(), crash.path());
    let tx = db.create_trx().unwrap();
    let relative = vol.dir().strip_prefix(dir.path()).unwrap().to_owned();
    for id in &ids {
        let m = vol.metadata(&tx, PREFIX, id).await.unwrap().unwrap();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(crash.path().join(&relative).join(format!("{:019}", m.segment)))
            .unwrap();
        file.write_all_at(&vec![0u8; 16 + m.length as usize], m.position).unwrap();
    }
    drop(tx);

    let db2 = meta(crash.path());
    let vol2 = open(&db2, crash.path(), 1 << 20).await;
    for (id, payload) in ids.iter().zip(&payloads) {
        assert_eq!(get(&db2, &vol2, id).await.unwrap().as_deref(), Some(payload.as_slice()));
    }
    assert_eq!(get(&db2, &vol2, &big_id).await.unwrap().as_deref(), Some(big.as_slice()));
    // The records are gone once written back, and the restored bytes were synced.
    let keys = kronotop_volume::keys::Keys::new(subspace());
    let (b, e) = keys.redo_range();
    let tx = db2.create_trx().unwrap();
    let left = tx.get_range(&kronotop_meta::RangeOption::new(b, e), false).await.unwrap();
    assert!(left.kvs.is_empty(), "{} redo records left", left.kvs.len());
    // Reads never saw them in the running database either.
    let (b, e) = keys.redo_range();
    let tx = db.create_trx().unwrap();
    assert!(
        tx.get_range(&kronotop_meta::RangeOption::new(b, e), false).await.unwrap().kvs.is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_sync_logged_entries_and_a_failed_sync_keeps_the_log() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let options = embedded::Options {
        checkpoint_after: std::time::Duration::from_millis(100),
        ..embedded::Options::default()
    };
    let db = Database::open_embedded(&dir.path().join("meta"), options.clone()).unwrap();
    let (faults, config) = faulty(true);
    let vol = open_with(&db, dir.path(), config).await;
    let syncs = || vol.counters.syncs.load(Ordering::SeqCst);
    let before = syncs();
    let first = put(&db, &vol, &[b"logged, then synced by a checkpoint"]).await[0];
    assert_eq!(syncs(), before);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while syncs() == before {
        assert!(std::time::Instant::now() < deadline, "no checkpoint synced the segment");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(syncs(), before + 1);

    // A checkpoint whose sync fails must not let the log start over: commits stop instead.
    faults.fail_nth_sync(1);
    let second = put(&db, &vol, &[b"logged, its sync failed"]).await[0];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let tx = db.create_trx().unwrap();
        tx.set(b"probe", b"1");
        match tx.commit().await {
            Ok(_) => {
                assert!(std::time::Instant::now() < deadline, "commits went on after the failure");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => {
                assert_eq!(e, MetaError::OPERATION_FAILED);
                break;
            }
        }
    }
    drop(vol);
    db.close();
    drop(db);
    // A restart replays the log, redo records included.
    let db = Database::open_embedded(&dir.path().join("meta"), options).unwrap();
    let vol = open(&db, dir.path(), 1 << 20).await;
    assert_eq!(
        get(&db, &vol, &first).await.unwrap().as_deref(),
        Some(&b"logged, then synced by a checkpoint"[..])
    );
    assert_eq!(
        get(&db, &vol, &second).await.unwrap().as_deref(),
        Some(&b"logged, its sync failed"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closing_volume_syncs_its_logged_entries() {
    let dir = tempfile::tempdir().unwrap();
    let db = meta(dir.path());
    let (faults, config) = faulty(true);
    let vol = open_with(&db, dir.path(), config.clone()).await;
    put(&db, &vol, &[b"logged"]).await;
    let before = faults.syncs();
    drop(vol);
    // Its checkpoint hook is gone with it: the next checkpoint would drop the redo records.
    assert_eq!(faults.syncs(), before + 1, "the written segment is synced once when it closes");
    let vol = open_with(&db, dir.path(), config).await;
    let before = faults.syncs();
    drop(vol);
    assert_eq!(faults.syncs(), before, "nothing written, nothing to sync");
}
