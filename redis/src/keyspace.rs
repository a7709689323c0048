//! One shard's keys in memory: values, absolute expiry times, versions for `WATCH`, and the set of
//! keys changed since the last flush to the Volume.
//!
//! Keys live in one small map per hash slot, so `CLUSTER COUNTKEYSINSLOT` is a length,
//! `GETKEYSINSLOT` walks one map, `SCAN` walks slot by slot with the slot number as its cursor (a
//! key present for a whole scan is returned exactly once), and growing one map never stalls the
//! others. Keys, string values and hash fields are boxed slices: 16 bytes each instead of the 32 of
//! `Bytes`, and no buffer of a request is kept alive by a stored key.
//!
//! Expiry is lazy (a read of an expired key removes it) and active (`expire_cycle`, driven by the
//! shard's owner, removes keys from an index ordered by expiry time).

use std::collections::{BTreeSet, HashMap, HashSet};

/// The hasher of every map here: foldhash, seeded at random per process (as Redis seeds its
/// SipHash), several times faster than std's SipHash on short keys, which every command hashes.
pub type RandomState = foldhash::fast::RandomState;

use crate::key::Key;
use crate::slots::{SLOTS, slot};

/// A key, a string value, a hash field or a hash value.
pub type Blob = Box<[u8]>;

/// A hash value: field to value.
pub type HashValue = HashMap<Blob, Blob, RandomState>;

/// A stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(Blob),
    Hash(Box<HashValue>),
}

impl Value {
    /// `TYPE`'s name for it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Hash(_) => "hash",
        }
    }

    /// Approximate bytes it takes, for deciding when to rewrite the persistence log.
    pub fn approx_len(&self) -> usize {
        match self {
            Value::Str(s) => s.len(),
            Value::Hash(h) => h.iter().map(|(f, v)| f.len() + v.len() + 16).sum(),
        }
    }
}

/// A key's value and metadata.
#[derive(Debug, Clone)]
pub struct Entry {
    pub value: Value,
    /// Absolute expiry in Unix milliseconds; 0 when the key does not expire.
    pub expire_at: u64,
    /// The key's version (changes with every write; `WATCH` compares it), and in its top bit
    /// whether the whole key waits to be written by the persister. Versions count up from 1 and
    /// never reach 2^63, so the bit is free; keeping the flag here costs no memory and lets a
    /// write that finds it set skip all bookkeeping.
    stamp: u64,
}

/// The "whole key waits for the persister" bit of `Entry::stamp`.
const DIRTY: u64 = 1 << 63;

impl Entry {
    /// Changes with every write to the key; `WATCH` compares it.
    pub fn version(&self) -> u64 {
        self.stamp & !DIRTY
    }

    fn dirty(&self) -> bool {
        self.stamp & DIRTY != 0
    }

    /// Takes the "write me whole" flag: whether it was set, and it is cleared.
    pub fn take_dirty(&mut self) -> bool {
        let was = self.dirty();
        self.stamp &= !DIRTY;
        was
    }
}

/// Changes to parts of a hash (fields, expiry) whose whole key is not waiting to be written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parts {
    pub fields: HashSet<Blob, RandomState>,
    pub ttl: bool,
}

type SlotMap = HashMap<Key, Entry, RandomState>;

/// What changed since the persister last looked.
#[derive(Debug, Default)]
pub struct Changes {
    /// Every key was removed first.
    pub cleared: bool,
    /// Keys to write whole or delete (after the clear, if any); see `Keyspace::dirty`.
    pub keys: Vec<Key>,
    /// Hash keys with some fields or the expiry changed.
    pub parts: HashMap<Blob, Parts, RandomState>,
    /// The change count these bring the store up to.
    pub seq: u64,
}

/// Counters `INFO stats` shows.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub hits: u64,
    pub misses: u64,
    pub expired: u64,
}

/// The keys of one shard.
#[derive(Debug)]
pub struct Keyspace {
    /// One map per slot, inline: the map's header shares a cache line with its neighbours', so a
    /// lookup costs one dependent cache miss less than with boxed maps (16384 x 48 bytes per
    /// shard, allocated once).
    slots: Vec<SlotMap>,
    len: usize,
    /// Keys with an expiry, by expiry time.
    expires: BTreeSet<(u64, Blob)>,
    next_version: u64,
    /// Keys to write whole (their entries carry the dirty bit) or to delete (no entry), since
    /// the persister last took them. A key may appear more than once; the bit tells the
    /// persister which occurrence still has work.
    dirty: Vec<Key>,
    /// Hash keys with only some fields (or the expiry) changed.
    parts: HashMap<Blob, Parts, RandomState>,
    /// Every key was removed (`FLUSHALL`) since the persister last took the changes.
    cleared: bool,
    /// Number of changes made so far; the persister reports how far it has made them durable.
    seq: u64,
    /// Approximate bytes of keys and values, to size the persistence log against.
    approx_bytes: usize,
    pub counters: Counters,
}

impl Default for Keyspace {
    fn default() -> Self {
        Keyspace {
            slots: (0..SLOTS).map(|_| SlotMap::default()).collect(),
            len: 0,
            expires: BTreeSet::new(),
            next_version: 1,
            dirty: Vec::new(),
            parts: HashMap::default(),
            cleared: false,
            seq: 0,
            approx_bytes: 0,
            counters: Counters::default(),
        }
    }
}

fn expired(e: &Entry, now: u64) -> bool {
    e.expire_at != 0 && e.expire_at <= now
}

impl Keyspace {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keys with an expiry.
    pub fn expires_len(&self) -> usize {
        self.expires.len()
    }

    /// Changes made so far.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn approx_bytes(&self) -> usize {
        self.approx_bytes
    }

    /// The changes since the last call, and the change count they bring the store up to.
    pub fn take_dirty(&mut self) -> Changes {
        Changes {
            cleared: std::mem::take(&mut self.cleared),
            keys: std::mem::take(&mut self.dirty),
            parts: std::mem::take(&mut self.parts),
            seq: self.seq,
        }
    }

    /// Puts back changes a failed flush could not write, merged with those made since (which came
    /// after them, so a clear among the failed ones still comes first).
    pub fn restore_dirty(&mut self, failed: Changes) {
        self.cleared |= failed.cleared;
        // Whole keys are simpler to retry than their parts, and a failed flush is rare.
        let keys = failed.keys.iter().map(|k| k.as_bytes());
        for key in keys.chain(failed.parts.keys().map(|k| &k[..])) {
            self.mark_whole(key);
        }
    }

    /// Whether any change waits for the persister.
    pub fn has_dirty(&self) -> bool {
        self.cleared || !self.dirty.is_empty() || !self.parts.is_empty()
    }

    fn map(&self, key: &[u8]) -> &SlotMap {
        &self.slots[usize::from(slot(key))]
    }

    fn map_mut(&mut self, key: &[u8]) -> &mut SlotMap {
        &mut self.slots[usize::from(slot(key))]
    }

    /// Records that the whole of `key` changed (call it after the change): its entry gets the
    /// dirty bit, or, deleted, its name is queued for a deletion record.
    fn mark_whole(&mut self, key: &[u8]) {
        self.seq += 1;
        let idx = usize::from(slot(key));
        match self.slots[idx].get_mut(key) {
            Some(e) if e.dirty() => {}
            Some(e) => {
                e.stamp |= DIRTY;
                self.dirty.push(key.into());
            }
            None => self.dirty.push(key.into()),
        }
        if !self.parts.is_empty() {
            self.parts.remove(key);
        }
    }

    fn bump(&mut self) -> u64 {
        self.next_version += 1;
        self.next_version
    }

    /// Removes `key` (in slot map `idx`) if it has expired. Returns whether it is (still) present.
    fn live(&mut self, idx: usize, key: &[u8], now: u64) -> bool {
        let Some(e) = self.slots[idx].get(key) else { return false };
        if expired(e, now) {
            self.remove(key);
            self.counters.expired += 1;
            false
        } else {
            true
        }
    }

    /// The live entry of `key`, counting a hit or a miss.
    pub fn get(&mut self, key: &[u8], now: u64) -> Option<&Entry> {
        // The slot is computed once; the second lookup finds the entry already in cache.
        let idx = usize::from(slot(key));
        if self.live(idx, key, now) {
            self.counters.hits += 1;
            self.slots[idx].get(key)
        } else {
            self.counters.misses += 1;
            None
        }
    }

    /// The live entry of `key` without counting (for `EXISTS`, `TYPE`, `WATCH`).
    pub fn peek(&mut self, key: &[u8], now: u64) -> Option<&Entry> {
        let idx = usize::from(slot(key));
        if self.live(idx, key, now) { self.slots[idx].get(key) } else { None }
    }

    /// The live entry of `key` for changing in place; `field` says what changes (a hash field, or
    /// the whole value when `None`). Marks the key changed, so call it only once the change is
    /// certain to happen.
    pub fn modify(&mut self, key: &[u8], field: Option<&[u8]>, now: u64) -> Option<&mut Entry> {
        let idx = usize::from(slot(key));
        if !self.live(idx, key, now) {
            return None;
        }
        self.seq += 1;
        self.next_version += 1;
        let e = self.slots[idx].get_mut(key)?;
        let pending = e.dirty();
        e.stamp = self.next_version | (e.stamp & DIRTY);
        if !pending {
            match field {
                None => {
                    e.stamp |= DIRTY;
                    self.dirty.push(key.into());
                    if !self.parts.is_empty() {
                        self.parts.remove(key);
                    }
                }
                Some(f) => match self.parts.get_mut(key) {
                    Some(p) => {
                        p.fields.insert(f.into());
                    }
                    None => {
                        let mut p = Parts::default();
                        p.fields.insert(f.into());
                        self.parts.insert(key.into(), p);
                    }
                },
            }
        }
        Some(e)
    }

    /// Adjusts the byte estimate after an in-place change.
    pub fn grew(&mut self, delta: isize) {
        self.approx_bytes = self.approx_bytes.saturating_add_signed(delta);
    }

    /// Stores `value` under `key`, replacing any value, with expiry `expire_at` (0 for none).
    pub fn insert(&mut self, key: &[u8], value: Value, expire_at: u64) {
        let stamp = self.bump();
        self.put(key, Entry { value, expire_at, stamp });
        self.mark_whole(key);
    }

    /// Puts `entry` under `key` with one lookup when the key exists (its stored key is kept, so
    /// no allocation), keeping the length, byte estimate and expiry index right.
    fn put(&mut self, key: &[u8], entry: Entry) {
        let idx = usize::from(slot(key));
        let (new_expire, new_len) = (entry.expire_at, key.len() + entry.value.approx_len() + 64);
        let old_expire = match self.slots[idx].get_mut(key) {
            Some(e) => {
                let old = std::mem::replace(e, entry);
                // A key already waiting to be written keeps waiting (and is queued once).
                e.stamp |= old.stamp & DIRTY;
                self.approx_bytes =
                    self.approx_bytes.saturating_sub(key.len() + old.value.approx_len() + 64);
                old.expire_at
            }
            None => {
                self.slots[idx].insert(key.into(), entry);
                self.len += 1;
                0
            }
        };
        self.approx_bytes += new_len;
        if old_expire != new_expire {
            if old_expire != 0 {
                self.expires.remove(&(old_expire, Blob::from(key)));
            }
            if new_expire != 0 {
                self.expires.insert((new_expire, key.into()));
            }
        }
    }

    fn remove_quietly(&mut self, key: &[u8]) -> Option<Entry> {
        let idx = usize::from(slot(key));
        let map = &mut self.slots[idx];
        let e = map.remove(key)?;
        if map.is_empty() {
            // Give the emptied map's memory back.
            self.slots[idx] = SlotMap::default();
        }
        self.len -= 1;
        self.approx_bytes = self.approx_bytes.saturating_sub(key.len() + e.value.approx_len() + 64);
        if e.expire_at != 0 {
            self.expires.remove(&(e.expire_at, Blob::from(key)));
        }
        Some(e)
    }

    /// Deletes `key`, returning its entry (expired or not).
    pub fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let e = self.remove_quietly(key)?;
        self.bump();
        self.mark_whole(key);
        Some(e)
    }

    /// Sets or clears (`0`) the expiry of a live key. Returns whether the key exists.
    pub fn set_expire(&mut self, key: &[u8], expire_at: u64, now: u64) -> bool {
        let Some(old) = self.peek(key, now).map(|e| e.expire_at) else { return false };
        if old == expire_at {
            return true;
        }
        if old != 0 {
            self.expires.remove(&(old, Blob::from(key)));
        }
        if expire_at != 0 {
            self.expires.insert((expire_at, key.into()));
        }
        self.seq += 1;
        self.next_version += 1;
        let idx = usize::from(slot(key));
        if let Some(e) = self.slots[idx].get_mut(key) {
            e.expire_at = expire_at;
            let pending = e.dirty();
            e.stamp = self.next_version | (e.stamp & DIRTY);
            if !pending {
                match self.parts.get_mut(key) {
                    Some(p) => p.ttl = true,
                    None => {
                        self.parts.insert(key.into(), Parts { ttl: true, ..Parts::default() });
                    }
                }
            }
        }
        true
    }

    /// Removes up to `budget` expired keys, oldest expiry first. Returns how many it removed.
    pub fn expire_cycle(&mut self, now: u64, budget: usize) -> usize {
        let mut removed = 0;
        while removed < budget {
            let Some((at, key)) = self.expires.first().cloned() else { break };
            if at > now {
                break;
            }
            self.remove(&key);
            self.counters.expired += 1;
            removed += 1;
        }
        removed
    }

    /// Removes every key. Returns how many there were.
    pub fn clear(&mut self) -> usize {
        let n = self.len;
        self.unload_all();
        // One "everything is gone" record replaces a deletion record per key; changes to the
        // keys made before the clear no longer matter.
        self.cleared = true;
        self.dirty.clear();
        self.parts.clear();
        self.seq += 1;
        self.bump();
        n
    }

    /// Removes every key without marking anything (a clear read back from the Volume).
    pub fn unload_all(&mut self) {
        for map in &mut self.slots {
            if !map.is_empty() {
                *map = SlotMap::default();
            }
        }
        self.len = 0;
        self.expires.clear();
        self.approx_bytes = 0;
    }

    /// Live keys in `slot`.
    pub fn count_in_slot(&self, slot: u16) -> usize {
        self.slots.get(usize::from(slot)).map_or(0, HashMap::len)
    }

    /// Live keys of `slot` with their entries (expired ones are skipped, not removed).
    pub fn slot_entries(&self, slot: u16, now: u64) -> impl Iterator<Item = (&Key, &Entry)> {
        self.slots
            .get(usize::from(slot))
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(move |(_, e)| !expired(e, now))
    }

    /// The first slot at or after `from` that holds keys.
    pub fn next_nonempty_slot(&self, from: u16) -> Option<u16> {
        (from..SLOTS).find(|s| !self.slots[usize::from(*s)].is_empty())
    }

    /// A key picked at random among the live ones, starting the search at slot `start` and
    /// taking the `pick`-th key of the slot found (modulo its size).
    pub fn random_key(&self, start: u16, pick: usize, now: u64) -> Option<Blob> {
        let start = start % SLOTS;
        let order = (start..SLOTS).chain(0..start);
        for s in order {
            let live: Vec<&Key> = self.slot_entries(s, now).map(|(k, _)| k).collect();
            if !live.is_empty() {
                return Some(Blob::from(live[pick % live.len()].as_bytes()));
            }
        }
        None
    }

    /// The entry of `key`, expired or not, for the persister.
    pub fn raw(&self, key: &[u8]) -> Option<&Entry> {
        self.map(key).get(key)
    }

    /// The entry of `key`, expired or not, for the persister to take its dirty bit.
    pub fn raw_mut(&mut self, key: &[u8]) -> Option<&mut Entry> {
        self.map_mut(key).get_mut(key)
    }

    /// Puts an entry read back from the Volume, without marking it changed.
    pub fn load(&mut self, key: &[u8], value: Value, expire_at: u64) {
        let stamp = self.bump();
        self.put(key, Entry { value, expire_at, stamp });
    }

    /// Removes an entry while loading, without marking it changed.
    pub fn unload(&mut self, key: &[u8]) {
        self.remove_quietly(key);
    }

    /// The loaded entry of `key` for changes while loading; nothing is marked.
    pub fn load_mut(&mut self, key: &[u8]) -> Option<&mut Entry> {
        self.map_mut(key).get_mut(key)
    }

    /// Sets an expiry while loading, without marking it changed.
    pub fn load_expire(&mut self, key: &[u8], expire_at: u64) {
        let Some(old) = self.raw(key).map(|e| e.expire_at) else { return };
        if old != 0 {
            self.expires.remove(&(old, Blob::from(key)));
        }
        if expire_at != 0 {
            self.expires.insert((expire_at, key.into()));
        }
        if let Some(e) = self.map_mut(key).get_mut(key) {
            e.expire_at = expire_at;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::Str(v.as_bytes().into())
    }

    #[test]
    fn expiry_is_lazy_and_active() {
        let mut ks = Keyspace::default();
        ks.insert(b"a", s("1"), 100);
        ks.insert(b"b", s("2"), 0);
        ks.insert(b"c", s("3"), 300);
        assert!(ks.get(b"a", 50).is_some());
        assert!(ks.get(b"a", 100).is_none(), "expired at its deadline");
        assert_eq!(ks.len(), 2);
        assert_eq!(ks.expire_cycle(1000, 10), 1);
        assert_eq!(ks.len(), 1);
        assert_eq!(ks.counters.expired, 2);
        assert_eq!(ks.expires_len(), 0);
    }

    #[test]
    fn dirty_tracking_merges() {
        let mut ks = Keyspace::default();
        ks.insert(b"h", Value::Hash(Box::default()), 0);
        let first = ks.take_dirty();
        assert_eq!(first.keys.len(), 1);
        assert!(ks.raw_mut(b"h").is_some_and(Entry::take_dirty), "the entry carries the bit");
        assert!(ks.modify(b"h", Some(b"f1"), 0).is_some());
        assert!(ks.modify(b"h", Some(b"f2"), 0).is_some());
        assert!(ks.set_expire(b"h", 500, 0));
        let changes = ks.take_dirty();
        assert_eq!(changes.seq, ks.seq());
        assert!(changes.keys.is_empty());
        let p = changes.parts.get(&Blob::from(&b"h"[..])).expect("parts");
        assert_eq!(p.fields.len(), 2);
        assert!(p.ttl);
        // A whole change supersedes parts, and repeated writes queue the key once.
        ks.modify(b"h", Some(b"f1"), 0);
        ks.insert(b"h", s("x"), 0);
        ks.insert(b"h", s("y"), 0);
        let changes = ks.take_dirty();
        assert_eq!(changes.keys.len(), 1);
        assert!(changes.parts.is_empty());
        ks.remove(b"h");
        assert_eq!(ks.take_dirty().keys, vec![Key::from(&b"h"[..])], "a deletion is queued");
        ks.insert(b"a", s("1"), 0);
        ks.clear();
        ks.insert(b"b", s("2"), 0);
        let changes = ks.take_dirty();
        assert!(changes.cleared, "a clear is one change");
        assert_eq!(changes.keys.len(), 1, "only keys written after the clear");
    }

    #[test]
    fn versions_change_on_every_write() {
        let mut ks = Keyspace::default();
        ks.insert(b"k", s("1"), 0);
        let v1 = ks.peek(b"k", 0).map(Entry::version);
        ks.modify(b"k", None, 0);
        let v2 = ks.peek(b"k", 0).map(Entry::version);
        assert_ne!(v1, v2);
    }

    #[test]
    fn slots_hold_their_keys() {
        let mut ks = Keyspace::default();
        ks.insert(b"{x}1", s("1"), 0);
        ks.insert(b"{x}2", s("2"), 0);
        let sl = slot(b"x");
        assert_eq!(ks.count_in_slot(sl), 2);
        assert_eq!(ks.next_nonempty_slot(0), Some(sl));
        assert_eq!(ks.next_nonempty_slot(sl + 1), None);
        assert!(ks.random_key(0, 7, 0).is_some());
        assert_eq!(ks.clear(), 2);
        assert_eq!(ks.count_in_slot(sl), 0);
    }
}
