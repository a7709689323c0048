//! The embedded backend's write-ahead log: one record per committed batch, the batch's final
//! effect (the ranges it cleared, then every key it wrote with its final value), made durable with
//! an `fdatasync` (by the committer's syncer thread, one for every record written meanwhile)
//! before the batch is answered.
//!
//! Why a log in front of redb: a durable redb commit writes every B-tree page the batch touched,
//! with the branch pages above them and redb's own allocator pages, and syncs them all. That was
//! about 20 scattered 4 KiB pages and one sync per batch of a dozen single-document inserts. The
//! log appends a few hundred bytes per transaction to a file that never changes size, so the sync
//! flushes only those bytes. redb still receives every batch, as a non-durable commit (pages
//! written, nothing synced), and a durable redb commit (a checkpoint) now and then makes the log's
//! records up to it unnecessary.
//!
//! The log is two files (`meta.wal` and `meta.wal.1`), written one at a time, so that a
//! checkpoint of the records in one runs in the background while commits are logged in the other
//! (`Wal::switch`).
//!
//! Invariants:
//! * Records are written in increasing version order from the start of a file after every
//!   checkpoint or switch to it; each file is zero-filled to its size once, so appends never
//!   change its size.
//! * A file is written again only once a durable redb commit holds every record in it, so the
//!   records left in it then, and in the stale part of either file, are never newer than redb's
//!   durable version.
//! * The committer switches to the other file only once every record of the one it leaves is
//!   synced: records are written before they are synced, and a replay, which reads both files,
//!   must not find a record in one without the records before it in the other.
//! * A record is valid when its length is in bounds, its CRC-32 matches, and its version is above
//!   the previous valid record's. Reading stops at the first record that is not: a torn tail, the
//!   zeros after the end, or a record of an earlier cycle (whose version is lower, because every
//!   cycle starts after a checkpoint that covered all the records before it).
//! * Replaying records whose batches redb already holds changes nothing: a record holds final
//!   values, not operations (atomic mutations and versionstamps are resolved before it is written).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes before a record's payload: its length (u64), its CRC-32 (u32, over the version and the
/// payload), its version (i64).
const HEADER: usize = 20;

/// The largest record accepted when reading: a batch holds at most `MAX_BATCH` (4096)
/// transactions of at most 10 MB each (FoundationDB's transaction size limit), so 64 GiB bounds
/// any record that was really written; anything larger is a torn or stale length.
const MAX_RECORD: u64 = 64 << 30;

/// Zero-filling is written in pieces of this size, so opening never holds more than 1 MiB.
const FILL_CHUNK: usize = 1 << 20;

/// What a batch did, as a log record holds it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Record {
    pub version: i64,
    /// Ranges cleared, in the order they were cleared.
    pub ranges: Vec<(Vec<u8>, Vec<u8>)>,
    /// Keys written with their final values (`None`: removed); applied after the ranges.
    pub keys: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Keys are at most 10 KB and values 100 KB (FoundationDB's limits), so u32 lengths suffice.
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(b);
}

/// Encodes a record: header, then the ranges and the keys, each list preceded by its count.
pub(super) fn encode<'a>(
    version: i64,
    ranges: impl ExactSizeIterator<Item = (&'a [u8], &'a [u8])>,
    keys: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
) -> Vec<u8> {
    let mut out = vec![0u8; HEADER];
    out[12..20].copy_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&u32::try_from(ranges.len()).unwrap_or(u32::MAX).to_le_bytes());
    for (b, e) in ranges {
        put_bytes(&mut out, b);
        put_bytes(&mut out, e);
    }
    // The count goes before the keys and is known after them.
    let count_at = out.len();
    out.extend_from_slice(&[0u8; 4]);
    let mut count = 0u32;
    for (k, v) in keys {
        count = count.saturating_add(1);
        put_bytes(&mut out, k);
        match v {
            Some(v) => {
                out.push(1);
                put_bytes(&mut out, v);
            }
            None => out.push(0),
        }
    }
    out[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
    let len = (out.len() - HEADER) as u64;
    out[0..8].copy_from_slice(&len.to_le_bytes());
    let crc = crc32fast::hash(&out[12..]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    out
}

/// A cursor over a record's payload; every read is bounds-checked, since the bytes come from disk.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = usize::try_from(self.u32()?).ok()?;
        Some(self.take(n)?.to_vec())
    }
}

/// Decodes the payload of a record whose CRC matched; `None` if it does not parse.
fn decode(version: i64, payload: &[u8]) -> Option<Record> {
    let mut c = Cursor(payload);
    let mut record = Record { version, ..Record::default() };
    for _ in 0..c.u32()? {
        let b = c.bytes()?;
        let e = c.bytes()?;
        record.ranges.push((b, e));
    }
    for _ in 0..c.u32()? {
        let k = c.bytes()?;
        let v = match c.take(1)?[0] {
            0 => None,
            1 => Some(c.bytes()?),
            _ => return None,
        };
        record.keys.push((k, v));
    }
    c.0.is_empty().then_some(record)
}

/// The valid records at the start of `log`, in order (see the module's invariants). Reads only
/// as far as the last of them and the header after it, not the zeros or stale records behind.
pub(super) fn read_records(mut log: impl Read) -> std::io::Result<Vec<Record>> {
    let mut out: Vec<Record> = Vec::new();
    let mut header = [0u8; HEADER];
    loop {
        match log.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        let mut word = [0u8; 8];
        word.copy_from_slice(&header[0..8]);
        let len = u64::from_le_bytes(word);
        let crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        word.copy_from_slice(&header[12..20]);
        let version = i64::from_le_bytes(word);
        if len == 0 || len > MAX_RECORD || out.last().is_some_and(|last| last.version >= version) {
            break;
        }
        // `take` bounds the read by what the file holds, so a damaged length allocates nothing
        // beyond it.
        let mut payload = Vec::new();
        (&mut log).take(len).read_to_end(&mut payload)?;
        if payload.len() as u64 != len {
            break;
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header[12..20]);
        hasher.update(&payload);
        if hasher.finalize() != crc {
            break;
        }
        let Some(record) = decode(version, &payload) else { break };
        out.push(record);
    }
    Ok(out)
}

/// One of the two log files and where its next record goes.
#[derive(Debug)]
struct Log {
    file: File,
    end: u64,
    size: u64,
}

impl Log {
    /// Opens (creating and zero-filling to `size` bytes if needed) the log file at `path`, with
    /// the valid records it holds.
    fn open(path: &Path, size: u64) -> std::io::Result<(Log, Vec<Record>)> {
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let records = read_records(std::io::BufReader::new(&file))?;
        let have = file.metadata()?.len();
        if have < size {
            // Real zeros, not a sparse tail: writing into holes allocates blocks, and then every
            // sync must also commit the file system's metadata.
            file.seek(SeekFrom::Start(have))?;
            let zeros = vec![0u8; FILL_CHUNK];
            let mut left = size - have;
            while left > 0 {
                let n = usize::try_from(left).map_or(FILL_CHUNK, |l| l.min(FILL_CHUNK));
                file.write_all(&zeros[..n])?;
                left -= n as u64;
            }
            file.sync_all()?;
            if let Some(parent) = path.parent() {
                File::open(parent)?.sync_all()?;
            }
        }
        Ok((Log { file, end: 0, size: size.max(have) }, records))
    }
}

/// The write-ahead log: two files, one written at a time. When the one being written fills up,
/// the committer switches to the other, which a finished checkpoint has made free, and a
/// checkpoint of the full one runs in the background (`switch`, `other_checkpointed`), so commits
/// go on meanwhile instead of waiting for the checkpoint's syncs. Only when the file being written
/// is full and the other one's checkpoint has still not finished does a commit wait for one.
#[derive(Debug)]
pub(super) struct Wal {
    logs: [Log; 2],
    /// The file being written.
    active: usize,
    /// Whether the other file holds records that no durable redb commit covers yet: the records
    /// logged before the last switch, whose checkpoint has not finished.
    other_pending: bool,
    /// When the first record of the file being written was written (since the last checkpoint
    /// or switch).
    first_record: Option<std::time::Instant>,
    /// Longest time a record waits for a checkpoint.
    checkpoint_after: std::time::Duration,
    #[cfg(test)]
    path: std::path::PathBuf,
}

/// Logs whose appends fail, for the tests of what a failed log does to commits.
#[cfg(test)]
pub(super) static FAILING: std::sync::Mutex<Vec<std::path::PathBuf>> =
    std::sync::Mutex::new(Vec::new());

/// A log file as the thread that syncs it holds it.
#[derive(Debug)]
pub(super) struct SyncHandle {
    file: File,
    #[cfg(test)]
    path: std::path::PathBuf,
}

impl SyncHandle {
    /// Makes everything written into the file durable.
    pub(super) fn sync(&self) -> std::io::Result<()> {
        #[cfg(test)]
        {
            let failing = FAILING_SYNCS.lock().is_ok_and(|f| f.contains(&self.path));
            if let Ok(mut counted) = COUNTED_SYNCS.lock()
                && let Some(c) = counted.iter_mut().find(|c| c.path == self.path)
            {
                c.tried += 1;
                c.failed += usize::from(failing);
            }
            while BLOCKED_SYNCS.lock().is_ok_and(|b| b.contains(&self.path)) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            if failing {
                return Err(std::io::Error::other("injected log sync failure"));
            }
        }
        self.file.sync_data()
    }
}

/// Log files whose syncs fail, and whose syncs wait while listed, for the tests of what a failed
/// or slow sync does to commits.
#[cfg(test)]
pub(super) static FAILING_SYNCS: std::sync::Mutex<Vec<std::path::PathBuf>> =
    std::sync::Mutex::new(Vec::new());
#[cfg(test)]
pub(super) static BLOCKED_SYNCS: std::sync::Mutex<Vec<std::path::PathBuf>> =
    std::sync::Mutex::new(Vec::new());
/// Log files whose syncs are counted, for the tests of when the syncer syncs.
#[cfg(test)]
pub(super) static COUNTED_SYNCS: std::sync::Mutex<Vec<SyncCount>> =
    std::sync::Mutex::new(Vec::new());

/// The syncs of one log file: those tried, and among them those failed through `FAILING_SYNCS`
/// (a sync fails when the file is listed there as it starts).
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SyncCount {
    pub path: std::path::PathBuf,
    pub tried: usize,
    pub failed: usize,
}

/// The second log file's path: the first one's with `.1` after it.
fn second_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    name.into()
}

impl Wal {
    /// Opens (creating and zero-filling to `size` bytes each if needed) the log files at `path`
    /// and `second_path(path)` and returns the log with the valid records both hold, in version
    /// order. The next record is written at the start of the first file: call it after those
    /// records are durable in redb.
    ///
    /// Records of both files can be newer than redb's durable state (a crash while the
    /// checkpoint of the older file ran); records that a finished checkpoint covered can be left
    /// in either, and the caller skips them by version as it does within one file.
    pub(super) fn open(
        path: &Path,
        size: u64,
        checkpoint_after: std::time::Duration,
    ) -> std::io::Result<(Wal, Vec<Record>)> {
        let (first, mut records) = Log::open(path, size)?;
        let (second, more) = Log::open(&second_path(path), size)?;
        records.extend(more);
        // Each file's records are in version order, and the records a replay needs are in
        // disjoint version ranges (the older file's end where the newer one's begin).
        records.sort_by_key(|r| r.version);
        Ok((
            Wal {
                logs: [first, second],
                active: 0,
                other_pending: false,
                first_record: None,
                checkpoint_after,
                #[cfg(test)]
                path: path.to_path_buf(),
            },
            records,
        ))
    }

    /// Writes `record` (from `encode`) after the previous one, without syncing it, and returns
    /// which file holds it: the committer's syncer syncs that file (`sync_handles`) before the
    /// record's batch counts as committed.
    pub(super) fn write(&mut self, record: &[u8]) -> std::io::Result<usize> {
        #[cfg(test)]
        if FAILING.lock().is_ok_and(|f| f.contains(&self.path)) {
            return Err(std::io::Error::other("injected log failure"));
        }
        let log = &mut self.logs[self.active];
        log.file.write_all_at(record, log.end)?;
        if log.end == 0 {
            self.first_record = Some(std::time::Instant::now());
        }
        log.end += record.len() as u64;
        // A record that ran past the end grew the file; the new size is the file's size from now.
        log.size = log.size.max(log.end);
        Ok(self.active)
    }

    /// Handles of the two files (indexed as `write` names them) for the thread that syncs them.
    pub(super) fn sync_handles(&self) -> std::io::Result<[SyncHandle; 2]> {
        let handle = |i: usize| -> std::io::Result<SyncHandle> {
            Ok(SyncHandle {
                file: self.logs[i].file.try_clone()?,
                #[cfg(test)]
                path: if i == 0 { self.path.clone() } else { second_path(&self.path) },
            })
        };
        Ok([handle(0)?, handle(1)?])
    }

    /// Whether a checkpoint should follow: the file being written is three quarters full (so
    /// the next batch most likely fits without growing it), or its oldest record is
    /// `checkpoint_after` old.
    pub(super) fn wants_checkpoint(&self) -> bool {
        let log = &self.logs[self.active];
        log.end >= log.size / 4 * 3
            || self.first_record.is_some_and(|t| t.elapsed() >= self.checkpoint_after)
    }

    /// Whether the file being written is full, so that the next record would grow it: then a
    /// checkpoint must not wait for the background any more.
    pub(super) fn full(&self) -> bool {
        let log = &self.logs[self.active];
        log.end >= log.size
    }

    /// How long until the oldest record since the last checkpoint or switch is
    /// `checkpoint_after` old; `None` when there is no such record.
    pub(super) fn checkpoint_due_in(&self) -> Option<std::time::Duration> {
        self.first_record.map(|t| self.checkpoint_after.saturating_sub(t.elapsed()))
    }

    /// Goes on in the other file, from its start, if a checkpoint has covered its records;
    /// returns whether it switched. The records of the file left behind stay needed until a
    /// durable redb commit covers them (`other_checkpointed`).
    pub(super) fn switch(&mut self) -> bool {
        if self.other_pending {
            return false;
        }
        self.active = 1 - self.active;
        self.logs[self.active].end = 0;
        self.other_pending = true;
        self.first_record = None;
        true
    }

    /// Whether the other file holds records no durable redb commit covers yet.
    pub(super) fn other_pending(&self) -> bool {
        self.other_pending
    }

    /// A durable redb commit holds every record written before the last switch.
    pub(super) fn other_checkpointed(&mut self) {
        self.other_pending = false;
    }

    /// Starts writing at the beginning again, once a durable redb commit holds every record of
    /// both files.
    pub(super) fn reset(&mut self) {
        self.logs[self.active].end = 0;
        self.other_pending = false;
        self.first_record = None;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn record(version: i64, n: u8) -> Vec<u8> {
        let ranges = [(vec![n], vec![n, 0xff])];
        let keys = [(vec![n, 1], Some(vec![n; 3])), (vec![n, 2], None)];
        encode(
            version,
            ranges.iter().map(|(b, e)| (b.as_slice(), e.as_slice())),
            keys.iter().map(|(k, v)| (k.as_slice(), v.as_deref())),
        )
    }

    #[test]
    fn records_round_trip_in_order() {
        let mut bytes = record(5, 1);
        bytes.extend(record(9, 2));
        bytes.extend(vec![0u8; 100]);
        let got = read_records(&bytes[..]).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].version, 5);
        assert_eq!(got[1].version, 9);
        assert_eq!(got[1].ranges, vec![(vec![2], vec![2, 0xff])]);
        assert_eq!(got[1].keys, vec![(vec![2, 1], Some(vec![2; 3])), (vec![2, 2], None)]);
    }

    #[test]
    fn reading_stops_at_a_torn_or_damaged_record() {
        let first = record(5, 1);
        let second = record(9, 2);
        let mut bytes = first.clone();
        bytes.extend(&second[..second.len() - 1]);
        assert_eq!(read_records(&bytes[..]).unwrap().len(), 1, "a torn tail is not a record");
        let mut bytes = first.clone();
        let mut damaged = second.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        bytes.extend(damaged);
        bytes.extend(record(10, 3));
        assert_eq!(
            read_records(&bytes[..]).unwrap().len(),
            1,
            "nothing after a damaged record counts"
        );
    }

    #[test]
    fn records_of_an_earlier_cycle_end_the_log() {
        // The previous cycle wrote versions 5, 9 and 12; after a checkpoint the new cycle wrote
        // 20 over the start, which left the tail of the old records behind it.
        let mut old = record(5, 1);
        old.extend(record(9, 2));
        old.extend(record(12, 3));
        let new = record(20, 4);
        let mut bytes = old.clone();
        bytes[..new.len()].copy_from_slice(&new);
        let got = read_records(&bytes[..]).unwrap();
        assert_eq!(got.iter().map(|r| r.version).collect::<Vec<_>>(), vec![20]);
        // A record of an earlier cycle that lines up exactly is refused by its lower version.
        let mut bytes = record(20, 4);
        bytes.extend(record(12, 3));
        assert_eq!(read_records(&bytes[..]).unwrap().len(), 1);
    }

    #[test]
    fn the_log_is_written_from_the_start_after_open_and_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, records) =
            Wal::open(&path, 4096, std::time::Duration::from_secs(60)).unwrap();
        assert!(records.is_empty());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096);
        wal.write(&record(5, 1)).unwrap();
        wal.write(&record(9, 2)).unwrap();
        drop(wal);
        let (mut wal, records) =
            Wal::open(&path, 4096, std::time::Duration::from_secs(60)).unwrap();
        assert_eq!(records.iter().map(|r| r.version).collect::<Vec<_>>(), vec![5, 9]);
        wal.write(&record(30, 3)).unwrap();
        drop(wal);
        let (_, records) = Wal::open(&path, 4096, std::time::Duration::from_secs(60)).unwrap();
        assert_eq!(records.iter().map(|r| r.version).collect::<Vec<_>>(), vec![30]);
        // A record larger than the file grows it.
        let (mut wal, _) = Wal::open(&path, 64, std::time::Duration::from_secs(60)).unwrap();
        let big = encode(40, std::iter::empty(), [(&b"k"[..], Some(&[7u8; 5000][..]))].into_iter());
        wal.write(&big).unwrap();
        assert!(wal.wants_checkpoint());
        assert!(wal.checkpoint_due_in().is_some());
        wal.reset();
        assert!(!wal.wants_checkpoint());
        assert_eq!(wal.checkpoint_due_in(), None);
        let (_, records) = Wal::open(&path, 64, std::time::Duration::from_secs(60)).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].keys[0].1.as_deref(), Some(&[7u8; 5000][..]));
    }

    #[test]
    fn open_returns_the_records_of_both_files_in_version_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let after = std::time::Duration::from_secs(60);
        let (mut wal, _) = Wal::open(&path, 4096, after).unwrap();
        assert_eq!(std::fs::metadata(second_path(&path)).unwrap().len(), 4096);
        wal.write(&record(5, 1)).unwrap();
        wal.write(&record(9, 2)).unwrap();
        assert!(wal.switch());
        assert!(!wal.switch(), "the first file is not free before its checkpoint");
        wal.write(&record(12, 3)).unwrap();
        assert!(!wal.full());
        wal.other_checkpointed();
        assert!(wal.switch(), "a checkpointed file is free");
        // Back in the first file, from its start: what is left of its earlier records ends it.
        wal.write(&record(20, 4)).unwrap();
        drop(wal);
        let (_, records) = Wal::open(&path, 4096, after).unwrap();
        assert_eq!(records.iter().map(|r| r.version).collect::<Vec<_>>(), vec![12, 20]);
    }
}
