//! The volume's key layout in the metadata store (`docs/design/volume-format.md`, "Metadata").
//! Nothing else packs these keys. Schema version: the format version.

use kronotop_meta::tuple::{Bytes as TupleBytes, Subspace, Versionstamp};
use kronotop_meta::{MetaError, MutationType, RangeOption, Transaction};

const ENTRY: i64 = 1;
const SEGMENT_INDEX: i64 = 2;
const STATS: i64 = 3;
const CHANGELOG: i64 = 4;
const STATUS: i64 = 5;
const VOLUME_ID: i64 = 6;
const SEGMENTS: i64 = 7;
const REDO: i64 = 8;

/// Changelog operations.
const OP_APPEND: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_UPDATE: u8 = 3;

/// Where an entry's bytes are: 20 bytes big-endian in the metadata store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryMetadata {
    pub segment: u64,
    /// Position of the entry's header in the segment file.
    pub position: u64,
    /// Payload length (the header's 16 bytes come on top).
    pub length: u32,
}

impl EntryMetadata {
    pub fn encode(&self) -> [u8; 20] {
        let mut b = [0u8; 20];
        b[..8].copy_from_slice(&self.segment.to_be_bytes());
        b[8..16].copy_from_slice(&self.position.to_be_bytes());
        b[16..].copy_from_slice(&self.length.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<EntryMetadata> {
        Some(EntryMetadata {
            segment: u64::from_be_bytes(b.get(..8)?.try_into().ok()?),
            position: u64::from_be_bytes(b.get(8..16)?.try_into().ok()?),
            length: u32::from_be_bytes(b.get(16..20)?.try_into().ok()?),
        })
    }

    /// Bytes the entry occupies in its segment, header included.
    pub fn stored_len(&self) -> i64 {
        16 + i64::from(self.length)
    }
}

/// A volume's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeStatus {
    ReadWrite,
    ReadOnly,
    Inoperable,
}

impl VolumeStatus {
    pub fn parse(s: &str) -> Option<VolumeStatus> {
        match s.to_ascii_uppercase().as_str() {
            "READWRITE" => Some(VolumeStatus::ReadWrite),
            "READONLY" => Some(VolumeStatus::ReadOnly),
            "INOPERABLE" => Some(VolumeStatus::Inoperable),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            VolumeStatus::ReadWrite => "READWRITE",
            VolumeStatus::ReadOnly => "READONLY",
            VolumeStatus::Inoperable => "INOPERABLE",
        }
    }
}

fn le(v: i64) -> [u8; 8] {
    v.to_le_bytes()
}

fn seg(id: u64) -> i64 {
    i64::try_from(id).unwrap_or(i64::MAX)
}

/// The keys of one volume.
#[derive(Debug, Clone)]
pub struct Keys {
    s: Subspace,
}

impl Keys {
    pub fn new(s: Subspace) -> Keys {
        Keys { s }
    }

    pub fn status(&self) -> Vec<u8> {
        self.s.pack(&(STATUS,))
    }

    pub fn volume_id(&self) -> Vec<u8> {
        self.s.pack(&(VOLUME_ID,))
    }

    pub fn segment(&self, id: u64) -> Vec<u8> {
        self.s.pack(&(SEGMENTS, seg(id)))
    }

    pub fn segments_range(&self) -> (Vec<u8>, Vec<u8>) {
        self.s.subspace(&(SEGMENTS,)).range()
    }

    pub fn parse_segment(&self, key: &[u8]) -> Option<u64> {
        self.s.unpack::<(i64, i64)>(key).ok().and_then(|(_, id)| u64::try_from(id).ok())
    }

    /// The redo record of the entries one append wrote in a row from `segment`/`position`:
    /// their bytes, headers included, logged with the commit that refers to them
    /// (`Transaction::set_on_recovery`). Such keys exist only after a crash, until the volume
    /// opens and writes them back.
    pub fn redo(&self, segment: u64, position: u64) -> Vec<u8> {
        self.s.pack(&(REDO, seg(segment), seg(position)))
    }

    pub fn redo_range(&self) -> (Vec<u8>, Vec<u8>) {
        self.s.subspace(&(REDO,)).range()
    }

    /// Up to `limit` keys of the redo range after `after` (a key of the range), in order: the
    /// records as segment, position and bytes, and the last key read, where the next page starts
    /// (`None` past the end). A key that does not parse is skipped, not a reason to stop.
    ///
    /// # Errors
    ///
    /// Metadata errors.
    pub async fn redo_records(
        &self,
        tx: &Transaction,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<(u64, u64, Vec<u8>)>, Option<Vec<u8>>), MetaError> {
        let (mut b, e) = self.redo_range();
        if let Some(after) = after {
            b = after.to_vec();
            b.push(0);
        }
        let kvs = tx.get_range(&RangeOption::new(b, e).limit(limit), false).await?.kvs;
        let last = kvs.last().map(|kv| kv.key.to_vec());
        let mut out = Vec::with_capacity(kvs.len());
        for kv in kvs {
            let Ok((_, segment, position)) = self.s.unpack::<(i64, i64, i64)>(&kv.key) else {
                continue;
            };
            if let (Ok(segment), Ok(position)) = (u64::try_from(segment), u64::try_from(position)) {
                out.push((segment, position, kv.value.to_vec()));
            }
        }
        Ok((out, last))
    }

    pub fn entry(&self, prefix: &[u8; 8], id: &[u8; 12]) -> Vec<u8> {
        self.s.pack(&(ENTRY, TupleBytes::from(&prefix[..]), Versionstamp::from(*id)))
    }

    pub fn entries_range(&self, prefix: &[u8; 8]) -> (Vec<u8>, Vec<u8>) {
        self.s.subspace(&(ENTRY, TupleBytes::from(&prefix[..]))).range()
    }

    pub fn parse_entry_id(&self, key: &[u8]) -> Option<[u8; 12]> {
        let (_, _, vs) = self.s.unpack::<(i64, TupleBytes<'_>, Versionstamp)>(key).ok()?;
        Some(*vs.as_bytes())
    }

    fn segment_index(&self, segment: u64, position: u64) -> Vec<u8> {
        self.s.pack(&(SEGMENT_INDEX, seg(segment), seg(position)))
    }

    fn stat(&self, segment: u64, field: &str) -> Vec<u8> {
        self.s.pack(&(STATS, seg(segment), field))
    }

    fn changelog(&self, user_version: u16) -> Vec<u8> {
        self.s.pack_with_versionstamp(&(CHANGELOG, Versionstamp::incomplete(user_version)))
    }

    fn adjust_stats(&self, tx: &Transaction, m: &EntryMetadata, sign: i64) {
        self.add_stats(tx, m.segment, sign, sign * m.stored_len());
    }

    /// Adds `entries` live entries of `used` bytes (headers included) to `segment`'s statistics;
    /// negative amounts remove them.
    pub fn add_stats(&self, tx: &Transaction, segment: u64, entries: i64, used: i64) {
        tx.atomic_op(&self.stat(segment, "cardinality"), &le(entries), MutationType::Add);
        tx.atomic_op(&self.stat(segment, "used"), &le(used), MutationType::Add);
    }

    /// An appended entry: its versionstamped key, the segment index back to it, changelog. Its
    /// segment's statistics are the caller's (`add_stats`), once for all the entries of an
    /// append rather than two more mutations per entry.
    pub fn write_entry(
        &self,
        tx: &Transaction,
        prefix: &[u8; 8],
        user_version: u16,
        m: &EntryMetadata,
    ) {
        let key = self.s.pack_with_versionstamp(&(
            ENTRY,
            TupleBytes::from(&prefix[..]),
            Versionstamp::incomplete(user_version),
        ));
        tx.atomic_op(&key, &m.encode(), MutationType::SetVersionstampedKey);
        let mut back = vec![0u8; 10];
        back.extend_from_slice(&user_version.to_be_bytes());
        back.extend_from_slice(prefix);
        back.extend_from_slice(&0u32.to_le_bytes());
        tx.atomic_op(
            &self.segment_index(m.segment, m.position),
            &back,
            MutationType::SetVersionstampedValue,
        );
        let mut record = vec![OP_APPEND];
        record.extend_from_slice(prefix);
        record.extend_from_slice(&m.encode());
        tx.atomic_op(&self.changelog(user_version), &record, MutationType::SetVersionstampedKey);
    }

    /// The id and prefix of the entry whose bytes are at `segment`/`position`, from the segment
    /// index. `accessed_unreadable` when `tx` itself appended that entry (its id is a
    /// versionstamp known only at commit).
    ///
    /// # Errors
    ///
    /// Metadata errors.
    pub async fn entry_at(
        &self,
        tx: &Transaction,
        segment: u64,
        position: u64,
    ) -> Result<Option<([u8; 12], [u8; 8])>, MetaError> {
        let Some(v) = tx.get(&self.segment_index(segment, position), false).await? else {
            return Ok(None);
        };
        Ok(match (v.get(..12), v.get(12..20)) {
            (Some(id), Some(prefix)) => {
                <[u8; 12]>::try_from(id).ok().zip(<[u8; 8]>::try_from(prefix).ok())
            }
            _ => None,
        })
    }

    /// A deleted entry: metadata cleared, stats down, changelog record.
    pub fn delete_entry(
        &self,
        tx: &Transaction,
        prefix: &[u8; 8],
        id: &[u8; 12],
        m: &EntryMetadata,
        user_version: u16,
    ) {
        tx.clear(&self.entry(prefix, id));
        tx.clear(&self.segment_index(m.segment, m.position));
        self.adjust_stats(tx, m, -1);
        let mut record = vec![OP_DELETE];
        record.extend_from_slice(prefix);
        record.extend_from_slice(id);
        record.extend_from_slice(&m.encode());
        tx.atomic_op(&self.changelog(user_version), &record, MutationType::SetVersionstampedKey);
    }

    /// An entry moved to new bytes (update, vacuum): same id, new place.
    pub fn repoint_entry(
        &self,
        tx: &Transaction,
        prefix: &[u8; 8],
        id: &[u8; 12],
        old: &EntryMetadata,
        new: &EntryMetadata,
        user_version: u16,
    ) {
        tx.set(&self.entry(prefix, id), &new.encode());
        tx.clear(&self.segment_index(old.segment, old.position));
        tx.set(&self.segment_index(new.segment, new.position), &[&id[..], &prefix[..]].concat());
        self.adjust_stats(tx, old, -1);
        self.adjust_stats(tx, new, 1);
        let mut record = vec![OP_UPDATE];
        record.extend_from_slice(prefix);
        record.extend_from_slice(id);
        record.extend_from_slice(&new.encode());
        tx.atomic_op(&self.changelog(user_version), &record, MutationType::SetVersionstampedKey);
    }

    /// The newest changelog record's versionstamp.
    ///
    /// # Errors
    ///
    /// Metadata errors.
    pub async fn latest_change(&self, tx: &Transaction) -> Result<Option<[u8; 12]>, MetaError> {
        let (b, e) = self.s.subspace(&(CHANGELOG,)).range();
        let last = tx.get_range(&RangeOption::new(b, e).limit(1).reverse(true), true).await?;
        Ok(last.kvs.first().and_then(|kv| {
            self.s.unpack::<(i64, Versionstamp)>(&kv.key).ok().map(|(_, vs)| *vs.as_bytes())
        }))
    }

    /// Clears changelog records of commit versions below `version`.
    pub fn prune_changelog(&self, tx: &Transaction, version: i64) {
        let mut tr = [0u8; 10];
        tr[..8].copy_from_slice(&version.to_be_bytes());
        let (begin, _) = self.s.subspace(&(CHANGELOG,)).range();
        let end = self.s.pack(&(CHANGELOG, Versionstamp::complete(tr, 0)));
        tx.clear_range(&begin, &end);
    }

    /// Cardinality and used bytes of a segment.
    ///
    /// # Errors
    ///
    /// Metadata errors.
    pub async fn segment_stats(
        &self,
        tx: &Transaction,
        segment: u64,
    ) -> Result<(i64, i64), MetaError> {
        let read = |v: Option<bytes::Bytes>| kronotop_meta::atomic::le_i64(v.as_deref());
        let c = read(tx.get(&self.stat(segment, "cardinality"), true).await?);
        let u = read(tx.get(&self.stat(segment, "used"), true).await?);
        Ok((c, u))
    }

    /// `(position, entry id, prefix)` of the live entries of a segment in position order: from
    /// the first past `after` (from the start when `None`), at most `limit`.
    ///
    /// # Errors
    ///
    /// Metadata errors.
    pub async fn segment_entries(
        &self,
        tx: &Transaction,
        segment: u64,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, [u8; 12], [u8; 8])>, MetaError> {
        let (mut b, e) = self.s.subspace(&(SEGMENT_INDEX, seg(segment))).range();
        if let Some(after) = after {
            // The first key past `after`'s own: its key with a zero byte appended.
            b = self.segment_index(segment, after);
            b.push(0);
        }
        let range = RangeOption::new(b, e).limit(limit);
        let mut out = Vec::new();
        for kv in tx.get_range(&range, false).await?.kvs {
            let Ok((_, _, pos)) = self.s.unpack::<(i64, i64, i64)>(&kv.key) else { continue };
            let (Some(id), Some(prefix)) = (
                kv.value.get(..12).and_then(|v| <[u8; 12]>::try_from(v).ok()),
                kv.value.get(12..20).and_then(|v| <[u8; 8]>::try_from(v).ok()),
            ) else {
                continue;
            };
            out.push((u64::try_from(pos).unwrap_or(0), id, prefix));
        }
        Ok(out)
    }

    /// The metadata of entry `id` under `prefix`, if it exists and decodes.
    ///
    /// # Errors
    ///
    /// Metadata errors.
    pub async fn entry_metadata(
        &self,
        tx: &Transaction,
        prefix: &[u8; 8],
        id: &[u8; 12],
    ) -> Result<Option<EntryMetadata>, MetaError> {
        Ok(tx.get(&self.entry(prefix, id), false).await?.and_then(|v| EntryMetadata::decode(&v)))
    }

    /// The position of the last live entry of a segment, from the segment index.
    ///
    /// # Errors
    ///
    /// Metadata errors.
    pub async fn last_entry_position(
        &self,
        tx: &Transaction,
        segment: u64,
    ) -> Result<Option<u64>, MetaError> {
        let (b, e) = self.s.subspace(&(SEGMENT_INDEX, seg(segment))).range();
        let last = tx.get_range(&RangeOption::new(b, e).limit(1).reverse(true), true).await?;
        Ok(last.kvs.first().and_then(|kv| {
            let (_, _, pos) = self.s.unpack::<(i64, i64, i64)>(&kv.key).ok()?;
            u64::try_from(pos).ok()
        }))
    }

    /// Forgets a segment: its registry entry and stats (its entries must have been moved).
    pub fn retire_segment(&self, tx: &Transaction, segment: u64) {
        tx.clear(&self.segment(segment));
        let (b, e) = self.s.subspace(&(STATS, seg(segment))).range();
        tx.clear_range(&b, &e);
    }
}
