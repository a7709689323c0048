//! The FoundationDB backend: a thin adapter from our API to the `foundationdb` crate (API 730).
//!
//! FoundationDB already has the semantics the rest of the crate reproduces, so this module only
//! converts types and errors (codes pass through unchanged). The client's network thread is
//! started once per process and kept for its lifetime.

use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use foundationdb::options;

use crate::MetaFuture;
use crate::error::{MetaError, MetaResult};
use crate::types::{
    ConflictRangeType, KeySelector, KeyValue, MutationType, RangeOption, RangeResult,
};

fn conv(e: foundationdb::FdbError) -> MetaError {
    MetaError::from_code(e.code())
}

/// The client network, started once. FoundationDB allows one per process; it is never stopped
/// because the process may open databases until it exits.
static NETWORK: OnceLock<Result<foundationdb::api::NetworkAutoStop, i32>> = OnceLock::new();

fn network() -> MetaResult<()> {
    let started = NETWORK.get_or_init(|| {
        let builder = foundationdb::api::FdbApiBuilder::default().build().map_err(|e| e.code())?;
        // SAFETY: `boot` must run at most once per process and its guard must outlive every
        // database; the `OnceLock` guarantees the first, and keeping the guard in a static for the
        // whole process guarantees the second.
        #[allow(unsafe_code)]
        let guard = unsafe { builder.boot() }.map_err(|e| e.code())?;
        Ok(guard)
    });
    started.as_ref().map(|_| ()).map_err(|code| MetaError::from_code(*code))
}

#[derive(Clone)]
pub struct Database {
    db: Arc<foundationdb::Database>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fdb::Database")
    }
}

impl Database {
    pub fn open(cluster_file: Option<&str>) -> MetaResult<Database> {
        network()?;
        Ok(Database { db: Arc::new(foundationdb::Database::new(cluster_file).map_err(conv)?) })
    }

    pub fn create_trx(&self) -> MetaResult<Transaction> {
        Ok(Transaction { tx: Mutex::new(Some(self.db.create_trx().map_err(conv)?)) })
    }
}

/// A FoundationDB transaction; `None` once committed or cancelled.
pub struct Transaction {
    tx: Mutex<Option<foundationdb::Transaction>>,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fdb::Transaction")
    }
}

fn selector(s: &KeySelector) -> foundationdb::KeySelector<'static> {
    foundationdb::KeySelector::new(s.key.to_vec().into(), s.or_equal, s.offset)
}

fn mutation(op: MutationType) -> options::MutationType {
    match op {
        MutationType::Add => options::MutationType::Add,
        MutationType::BitAnd => options::MutationType::BitAnd,
        MutationType::BitOr => options::MutationType::BitOr,
        MutationType::BitXor => options::MutationType::BitXor,
        MutationType::AppendIfFits => options::MutationType::AppendIfFits,
        MutationType::Max => options::MutationType::Max,
        MutationType::Min => options::MutationType::Min,
        MutationType::ByteMin => options::MutationType::ByteMin,
        MutationType::ByteMax => options::MutationType::ByteMax,
        MutationType::CompareAndClear => options::MutationType::CompareAndClear,
        MutationType::SetVersionstampedKey => options::MutationType::SetVersionstampedKey,
        MutationType::SetVersionstampedValue => options::MutationType::SetVersionstampedValue,
    }
}

impl Transaction {
    /// Runs `f` on the live transaction, or fails with `transaction_cancelled`.
    fn with<T>(&self, f: impl FnOnce(&foundationdb::Transaction) -> T) -> MetaResult<T> {
        let guard = self.tx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.as_ref().map(f).ok_or(MetaError::TRANSACTION_CANCELLED)
    }

    pub async fn get(&self, key: &[u8], snapshot: bool) -> MetaResult<Option<Bytes>> {
        let fut = self.with(|t| t.get(key, snapshot))?;
        Ok(fut.await.map_err(conv)?.map(|v| Bytes::copy_from_slice(&v)))
    }

    pub async fn get_key(&self, sel: &KeySelector, snapshot: bool) -> MetaResult<Bytes> {
        let fut = self.with(|t| t.get_key(&selector(sel), snapshot))?;
        Ok(Bytes::copy_from_slice(&fut.await.map_err(conv)?))
    }

    pub async fn get_range(&self, opt: &RangeOption, snapshot: bool) -> MetaResult<RangeResult> {
        let mut range = foundationdb::RangeOption {
            begin: selector(&opt.begin),
            end: selector(&opt.end),
            limit: (opt.limit > 0).then_some(opt.limit),
            reverse: opt.reverse,
            mode: options::StreamingMode::WantAll,
            ..foundationdb::RangeOption::default()
        };
        let mut out = RangeResult::default();
        let mut iteration = 1;
        loop {
            let fut = self.with(|t| t.get_range(&range, iteration, snapshot))?;
            let values = fut.await.map_err(conv)?;
            for kv in values.iter() {
                out.kvs.push(KeyValue {
                    key: Bytes::copy_from_slice(kv.key()),
                    value: Bytes::copy_from_slice(kv.value()),
                });
            }
            let reached = opt.limit > 0 && out.kvs.len() >= opt.limit;
            if reached {
                out.more = values.more();
                return Ok(out);
            }
            if let Some(limit) = range.limit.as_mut() {
                *limit = opt.limit - out.kvs.len();
            }
            match range.next_range(&values) {
                Some(next) => range = next,
                None => return Ok(out),
            }
            iteration += 1;
        }
    }

    pub fn set(&self, key: &[u8], value: &[u8]) {
        let _ = self.with(|t| t.set(key, value));
    }

    pub fn clear(&self, key: &[u8]) {
        let _ = self.with(|t| t.clear(key));
    }

    pub fn clear_range(&self, begin: &[u8], end: &[u8]) {
        let _ = self.with(|t| t.clear_range(begin, end));
    }

    pub fn atomic_op(&self, key: &[u8], param: &[u8], op: MutationType) {
        let _ = self.with(|t| t.atomic_op(key, param, mutation(op)));
    }

    pub fn add_conflict_range(
        &self,
        begin: &[u8],
        end: &[u8],
        ty: ConflictRangeType,
    ) -> MetaResult<()> {
        let ty = match ty {
            ConflictRangeType::Read => options::ConflictRangeType::Read,
            ConflictRangeType::Write => options::ConflictRangeType::Write,
        };
        self.with(|t| t.add_conflict_range(begin, end, ty))?.map_err(conv)
    }

    pub async fn get_read_version(&self) -> MetaResult<i64> {
        self.with(|t| t.get_read_version())?.await.map_err(conv)
    }

    pub async fn get_estimated_range_size_bytes(
        &self,
        begin: &[u8],
        end: &[u8],
    ) -> MetaResult<i64> {
        self.with(|t| t.get_estimated_range_size_bytes(begin, end))?.await.map_err(conv)
    }

    pub async fn get_approximate_size(&self) -> MetaResult<i64> {
        self.with(|t| t.get_approximate_size())?.await.map_err(conv)
    }

    pub fn watch(&self, key: &[u8]) -> MetaFuture<()> {
        match self.with(|t| t.watch(key)) {
            Ok(fut) => Box::pin(async move { fut.await.map_err(conv) }),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    pub fn get_versionstamp(&self) -> MetaFuture<Bytes> {
        match self.with(|t| t.get_versionstamp()) {
            Ok(fut) => {
                Box::pin(async move { fut.await.map(|s| Bytes::copy_from_slice(&s)).map_err(conv) })
            }
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    pub fn cancel(&self) {
        let taken = self.tx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(t) = taken {
            drop(t.cancel());
        }
    }

    pub async fn commit(&self, hooks: crate::Hooks) -> MetaResult<i64> {
        let taken = self.tx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let t = taken.ok_or(MetaError::TRANSACTION_CANCELLED)?;
        if !hooks.is_empty() {
            // The hooks block (they sync files), so they run off the async workers.
            tokio::task::spawn_blocking(move || crate::run_hooks(&hooks))
                .await
                .map_err(|_| MetaError::OPERATION_FAILED)??;
        }
        match t.commit().await {
            Ok(done) => done.committed_version().map_err(conv),
            Err(e) => Err(conv(*e)),
        }
    }
}
