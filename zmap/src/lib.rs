//! ZMap: the ordered key/value commands of Kronotop, scoped by namespace and proxied to the
//! metadata store's transactional API (reference section 4.5).
//!
//! A ZMap is the `__internal__/zmap` directory of a namespace: a user key `k` is stored at
//! `subspace.pack((k,))` (one tuple byte string), its value raw. Range reads resolve key selectors
//! and then clamp the result into the ZMap's own subspace, so a selector can never reach another
//! namespace's keys. The typed helpers (`i64`, `f64`) fix the byte encodings clients rely on.
//! This crate depends on `kronotop-meta` only; it knows nothing of sessions or RESP.

pub mod decimal;
pub mod typed;

use bytes::Bytes;
use kronotop_meta::tuple::{Bytes as TupleBytes, Subspace};
use kronotop_meta::{KeySelector, MetaError, MutationType, RangeOption, Transaction};

/// Default number of pairs `ZGETRANGE` returns (reference section 4.5).
pub const DEFAULT_RANGE_LIMIT: usize = 100;

/// The four key selectors, by their ZMap names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selector {
    FirstGreaterOrEqual,
    FirstGreaterThan,
    LastLessThan,
    LastLessOrEqual,
}

impl Selector {
    /// Parses a selector name, ignoring case.
    pub fn parse(s: &str) -> Option<Selector> {
        match s.to_ascii_lowercase().as_str() {
            "first_greater_or_equal" => Some(Selector::FirstGreaterOrEqual),
            "first_greater_than" => Some(Selector::FirstGreaterThan),
            "last_less_than" => Some(Selector::LastLessThan),
            "last_less_or_equal" => Some(Selector::LastLessOrEqual),
            _ => None,
        }
    }

    fn at(self, key: Vec<u8>) -> KeySelector {
        match self {
            Selector::FirstGreaterOrEqual => KeySelector::first_greater_or_equal(key),
            Selector::FirstGreaterThan => KeySelector::first_greater_than(key),
            Selector::LastLessThan => KeySelector::last_less_than(key),
            Selector::LastLessOrEqual => KeySelector::last_less_or_equal(key),
        }
    }
}

/// A range boundary: a user key, or `*` (the start or end of the ZMap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    Key(Bytes),
    Edge,
}

impl Bound {
    /// `*` (exactly that single byte) is the edge; anything else a key.
    pub fn parse(raw: &Bytes) -> Bound {
        if raw.as_ref() == b"*" { Bound::Edge } else { Bound::Key(raw.clone()) }
    }
}

/// A range read's options.
#[derive(Debug, Clone)]
pub struct RangeQuery {
    pub begin: Bound,
    pub end: Bound,
    pub limit: usize,
    pub reverse: bool,
    pub begin_selector: Selector,
    pub end_selector: Selector,
}

/// The ZMap of one namespace.
#[derive(Debug, Clone)]
pub struct ZMap {
    subspace: Subspace,
}

impl ZMap {
    pub fn new(subspace: Subspace) -> ZMap {
        ZMap { subspace }
    }

    /// The stored key of user key `key`.
    pub fn key(&self, key: &[u8]) -> Vec<u8> {
        self.subspace.pack(&(TupleBytes::from(key),))
    }

    /// The user key of a stored key, if it is one of this ZMap's.
    pub fn user_key(&self, stored: &[u8]) -> Option<Bytes> {
        self.subspace
            .unpack::<(TupleBytes<'_>,)>(stored)
            .ok()
            .map(|(k,)| Bytes::copy_from_slice(&k.0))
    }

    fn edges(&self) -> (Vec<u8>, Vec<u8>) {
        self.subspace.range()
    }

    /// # Errors
    ///
    /// Metadata errors (key too large…).
    pub async fn get(
        &self,
        tx: &Transaction,
        key: &[u8],
        snapshot: bool,
    ) -> Result<Option<Bytes>, MetaError> {
        tx.get(&self.key(key), snapshot).await
    }

    pub fn set(&self, tx: &Transaction, key: &[u8], value: &[u8]) {
        tx.set(&self.key(key), value);
    }

    pub fn delete(&self, tx: &Transaction, key: &[u8]) {
        tx.clear(&self.key(key));
    }

    pub fn mutate(&self, tx: &Transaction, key: &[u8], param: &[u8], op: MutationType) {
        tx.atomic_op(&self.key(key), param, op);
    }

    fn bound_key(&self, b: &Bound, begin: bool) -> Vec<u8> {
        match b {
            Bound::Key(k) => self.key(k),
            Bound::Edge if begin => self.edges().0,
            Bound::Edge => self.edges().1,
        }
    }

    /// Deletes `[begin, end)`.
    pub fn delete_range(&self, tx: &Transaction, begin: &Bound, end: &Bound) {
        let (b, e) = (self.bound_key(begin, true), self.bound_key(end, false));
        if b < e {
            tx.clear_range(&b, &e);
        }
    }

    /// Resolves a selector and clamps the result into this ZMap's keys.
    async fn resolve(
        &self,
        tx: &Transaction,
        bound: &Bound,
        sel: Selector,
        begin: bool,
        snapshot: bool,
    ) -> Result<Vec<u8>, MetaError> {
        let (lo, hi) = self.edges();
        let key = match bound {
            Bound::Edge => return Ok(if begin { lo } else { hi }),
            Bound::Key(k) => self.key(k),
        };
        let resolved = tx.get_key(&sel.at(key), snapshot).await?.to_vec();
        Ok(resolved.clamp(lo, hi))
    }

    /// `ZGETRANGE`: pairs between two selector-resolved keys, end exclusive of the resolved end
    /// key (with the default `first_greater_than` end selector, the end key itself is included).
    ///
    /// # Errors
    ///
    /// Metadata errors.
    pub async fn range(
        &self,
        tx: &Transaction,
        q: &RangeQuery,
        snapshot: bool,
    ) -> Result<Vec<(Bytes, Bytes)>, MetaError> {
        let begin = self.resolve(tx, &q.begin, q.begin_selector, true, snapshot).await?;
        let end = self.resolve(tx, &q.end, q.end_selector, false, snapshot).await?;
        if begin >= end {
            return Ok(Vec::new());
        }
        let opt = RangeOption::new(begin, end).limit(q.limit).reverse(q.reverse);
        let kvs = tx.get_range(&opt, snapshot).await?.kvs;
        Ok(kvs.into_iter().filter_map(|kv| self.user_key(&kv.key).map(|k| (k, kv.value))).collect())
    }

    /// `ZGETKEY`: the user key a selector resolves to, if it lies in this ZMap.
    ///
    /// # Errors
    ///
    /// Metadata errors.
    pub async fn get_key(
        &self,
        tx: &Transaction,
        key: &[u8],
        sel: Selector,
        snapshot: bool,
    ) -> Result<Option<Bytes>, MetaError> {
        let resolved = tx.get_key(&sel.at(self.key(key)), snapshot).await?;
        Ok(self.user_key(&resolved))
    }

    /// `ZGETRANGESIZE`: the estimated bytes of `[begin, end)`.
    ///
    /// # Errors
    ///
    /// Metadata errors.
    pub async fn range_size(
        &self,
        tx: &Transaction,
        begin: &Bound,
        end: &Bound,
    ) -> Result<i64, MetaError> {
        let (b, e) = (self.bound_key(begin, true), self.bound_key(end, false));
        if b >= e {
            return Ok(0);
        }
        tx.get_estimated_range_size_bytes(&b, &e).await
    }
}
