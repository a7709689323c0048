//! The metadata store: an ordered, transactional key/value space with FoundationDB's semantics.
//!
//! Every index, route, member and ZMap key of Kronotop lives here. `Database` and `Transaction`
//! mirror the `foundationdb` crate's API so the real backend is a thin adapter; the backend is
//! chosen when the database is opened and nothing outside this crate can tell which one runs:
//!
//! * **embedded** (default, `Database::open_embedded`): inside the process, persisted with redb;
//!   see `embedded` for how it keeps FoundationDB's guarantees.
//! * **foundationdb** (cargo feature `fdb`, `Database::open_foundationdb`): a real cluster.
//!
//! Semantics, defined by the conformance suite (`conformance`) that runs against every backend:
//! serializable optimistic transactions reading at a snapshot (the read version); a commit fails
//! with `not_committed` (1020) when a read-conflict range intersects a write committed after the
//! read version; snapshot reads and atomic mutations add no read conflicts; reads see the
//! transaction's own writes; FoundationDB's limits and error codes (`error`, `types::limits`).
//! Keys are built with the tuple layer (`tuple`) under directory-layer prefixes (`directory`).
//!
//! This crate depends on no other crate of ours.

pub mod atomic;
pub mod clock;
pub mod conformance;
pub mod directory;
pub mod embedded;
pub mod error;
#[cfg(feature = "fdb")]
pub mod fdb;
pub mod types;

/// The tuple layer and subspaces, byte-identical to FoundationDB's.
pub use foundationdb_tuple as tuple;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use error::{MetaError, MetaResult, RunError};
pub use types::{
    ConflictRangeType, KeySelector, KeyValue, MutationType, RangeOption, RangeResult, limits,
};

/// Something outside the metadata store that must be durable before a transaction's writes
/// commit: the Volume's segment bytes its keys point at (`Transaction::before_commit`).
///
/// The commit calls `run` on a thread where blocking is allowed, after the transaction passed
/// conflict resolution and before its writes are made durable; when `run` fails the transaction
/// does not commit. A hook that is dropped without being run belongs to a transaction that did
/// not commit, so what it guards is referenced by nothing. Every hook of a transaction is dropped
/// by the time its `commit` returns, whatever the outcome.
pub trait BeforeCommit: Send + Sync + std::fmt::Debug {
    /// Makes what the transaction refers to durable.
    ///
    /// # Errors
    ///
    /// The I/O error that kept it from being made durable.
    fn run(&self) -> std::io::Result<()>;
}

/// What an owner of recovery-only writes (`Transaction::set_on_recovery`) makes durable before
/// the embedded backend's log starts over: the Volume's segments, whose newest bytes the log
/// holds until then.
///
/// `run` is called before every checkpoint, after the writes the checkpoint covers were logged:
/// on the flusher thread while commits go on (a checkpoint in the background), or on the committer
/// thread between batches; never on an async worker. While it fails, no checkpoint happens and
/// commits stop (the log holds what it would otherwise lose), and a restart replays the log.
pub trait BeforeCheckpoint: Send + Sync + std::fmt::Debug {
    /// Makes durable everything the log's recovery-only writes would restore.
    ///
    /// # Errors
    ///
    /// The I/O error that kept it from being made durable.
    fn run(&self) -> std::io::Result<()>;
}

/// Hooks of one transaction, in the order they were added.
pub type Hooks = Vec<Arc<dyn BeforeCommit>>;

/// Runs `hooks` in order, stopping at the first failure, which is logged and answered with
/// `operation_failed`: the commit does not happen.
pub(crate) fn run_hooks(hooks: &Hooks) -> MetaResult<()> {
    for h in hooks {
        if let Err(e) = h.run() {
            tracing::error!(error = %e, hook = ?h, "what a transaction refers to could not be made durable; it does not commit");
            return Err(MetaError::OPERATION_FAILED);
        }
    }
    Ok(())
}

/// A boxed future of a metadata result.
pub type MetaFuture<T> = Pin<Box<dyn Future<Output = MetaResult<T>> + Send>>;

/// Whether an earlier attempt of a `run` closure may have committed (after
/// `commit_unknown_result`): an idempotent closure checks before writing again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaybeCommitted(pub bool);

/// Default retry limit of `Database::run`. FoundationDB retries forever by default; a bound turns
/// a livelock into an error a client can see.
pub const DEFAULT_RETRY_LIMIT: u32 = 100;

/// First and largest pause between retries, doubling in between. FoundationDB starts at 10 ms;
/// we start at 1 ms because a conflict is reported only once the conflicting commit is durable and
/// visible, so an early retry already reads the new state, and doubling still spreads out heavy
/// contention. The 1 s ceiling is FoundationDB's.
const INITIAL_BACKOFF: Duration = Duration::from_millis(1);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
enum Backend {
    Embedded(embedded::Database),
    #[cfg(feature = "fdb")]
    Fdb(fdb::Database),
}

/// A metadata database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Database {
    backend: Backend,
    retry_limit: u32,
    stats: Arc<CommitStats>,
}

/// Outcomes of commits through one database (and its clones), for metrics.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Commits that succeeded, read-only ones included.
    pub committed: std::sync::atomic::AtomicU64,
    /// Commits refused with `not_committed` (a read conflicted with a later write).
    pub conflicts: std::sync::atomic::AtomicU64,
    /// Commits that failed otherwise (too old, unknown result, size limits…).
    pub failed: std::sync::atomic::AtomicU64,
}

impl Database {
    /// Opens the embedded backend in directory `dir`.
    ///
    /// # Errors
    ///
    /// `operation_failed` when the files cannot be opened (the cause is logged).
    pub fn open_embedded(dir: &Path, options: embedded::Options) -> MetaResult<Database> {
        Ok(Database {
            backend: Backend::Embedded(embedded::Database::open(dir, options)?),
            retry_limit: DEFAULT_RETRY_LIMIT,
            stats: Arc::default(),
        })
    }

    /// Connects to a FoundationDB cluster through its cluster file (the default one when `None`).
    ///
    /// # Errors
    ///
    /// The client's error when the network cannot start or the cluster file is unusable.
    #[cfg(feature = "fdb")]
    pub fn open_foundationdb(cluster_file: Option<&str>) -> MetaResult<Database> {
        Ok(Database {
            backend: Backend::Fdb(fdb::Database::open(cluster_file)?),
            retry_limit: DEFAULT_RETRY_LIMIT,
            stats: Arc::default(),
        })
    }

    /// Sets how many times `run` retries a retryable error before giving up.
    pub fn set_retry_limit(&mut self, limit: u32) {
        self.retry_limit = limit;
    }

    /// Commit outcomes so far, shared by every clone of this database.
    pub fn commit_stats(&self) -> &CommitStats {
        &self.stats
    }

    /// The name of the backend, for logs and `INFO`.
    pub fn backend_name(&self) -> &'static str {
        match &self.backend {
            Backend::Embedded(_) => "embedded",
            #[cfg(feature = "fdb")]
            Backend::Fdb(_) => "foundationdb",
        }
    }

    /// Starts a transaction.
    ///
    /// # Errors
    ///
    /// When the backend cannot create one (closed database, client failure).
    pub fn create_trx(&self) -> MetaResult<Transaction> {
        Ok(Transaction {
            inner: Arc::new(match &self.backend {
                Backend::Embedded(db) => Tx::Embedded(db.create_trx()?),
                #[cfg(feature = "fdb")]
                Backend::Fdb(db) => Tx::Fdb(db.create_trx()?),
            }),
            user_version: Arc::default(),
            stats: Arc::clone(&self.stats),
            hooks: Arc::default(),
        })
    }

    /// Whether transactions can log recovery-only writes (`Transaction::set_on_recovery`): the
    /// embedded backend can; FoundationDB has no log of ours to put them in.
    pub fn keeps_recovery_log(&self) -> bool {
        match &self.backend {
            Backend::Embedded(_) => true,
            #[cfg(feature = "fdb")]
            Backend::Fdb(_) => false,
        }
    }

    /// Registers `hook` to run before every checkpoint of the embedded backend's log (see
    /// `BeforeCheckpoint`); held weakly, so it is forgotten once its owner drops it. Nothing
    /// happens on FoundationDB, which takes no recovery-only writes.
    pub fn before_checkpoint(&self, hook: std::sync::Weak<dyn BeforeCheckpoint>) {
        match &self.backend {
            Backend::Embedded(db) => db.before_checkpoint(hook),
            #[cfg(feature = "fdb")]
            Backend::Fdb(_) => {}
        }
    }

    /// Closes the embedded backend's files (the FoundationDB client needs nothing).
    pub fn close(&self) {
        match &self.backend {
            Backend::Embedded(db) => db.close(),
            #[cfg(feature = "fdb")]
            Backend::Fdb(_) => {}
        }
    }

    /// Runs `f` in a transaction and commits, retrying retryable errors (conflicts, too old,
    /// unknown result) with exponential backoff up to the retry limit.
    ///
    /// # Warning
    ///
    /// `f` may run several times and must be idempotent; after `commit_unknown_result` it is
    /// called with `MaybeCommitted(true)` and must check whether its earlier attempt landed.
    ///
    /// # Errors
    ///
    /// The closure's error when it holds no retryable `MetaError`, or the last error once the
    /// retry limit is reached.
    pub async fn run<T, F, Fut>(&self, mut f: F) -> Result<T, RunError>
    where
        F: FnMut(Transaction, MaybeCommitted) -> Fut,
        Fut: Future<Output = Result<T, RunError>>,
    {
        let mut maybe_committed = false;
        let mut backoff = INITIAL_BACKOFF;
        let mut attempt = 0u32;
        loop {
            let tx = self.create_trx()?;
            let err = match f(tx.clone(), MaybeCommitted(maybe_committed)).await {
                Ok(value) => match tx.commit().await {
                    Ok(_) => return Ok(value),
                    Err(e) => RunError::Meta(e),
                },
                Err(e) => {
                    tx.cancel();
                    e
                }
            };
            let Some(code) = err.meta() else { return Err(err) };
            if !code.is_retryable() || attempt >= self.retry_limit {
                return Err(err);
            }
            maybe_committed |= code.is_maybe_committed();
            attempt += 1;
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// A random pause between nothing and `d` ("full jitter"), so conflicting retries spread out.
fn jitter(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = if getrandom::fill(&mut b).is_ok() { u16::from_le_bytes(b) } else { u16::MAX };
    d.mul_f64(f64::from(r) / f64::from(u16::MAX))
}

// A transaction lives in one `Arc` allocation whatever its variant, so the size difference between
// the variants costs nothing worth an extra box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Tx {
    Embedded(embedded::Transaction),
    #[cfg(feature = "fdb")]
    Fdb(fdb::Transaction),
}

/// A transaction. Reads see its own writes; nothing is visible to others until `commit`.
/// Clones are handles to the same transaction (the retry loop hands the closure one).
#[derive(Debug, Clone)]
pub struct Transaction {
    inner: Arc<Tx>,
    /// Next 2-byte user version for versionstamps made in this transaction.
    user_version: Arc<std::sync::atomic::AtomicU32>,
    stats: Arc<CommitStats>,
    /// What must be durable before this transaction commits (`before_commit`).
    hooks: Arc<std::sync::Mutex<Hooks>>,
}

impl Transaction {
    /// The next user version (0, 1, 2, …) for a versionstamp made in this transaction, so that
    /// several versionstamped keys of one transaction are distinct and ordered.
    ///
    /// # Errors
    ///
    /// `client_invalid_operation` once the 65,536 user versions are used up.
    pub fn next_user_version(&self) -> MetaResult<u16> {
        let v = self.user_version.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        u16::try_from(v).map_err(|_| MetaError::CLIENT_INVALID_OPERATION)
    }

    /// Reads a key; `snapshot` reads add no read conflict.
    ///
    /// # Errors
    ///
    /// `key_too_large`, `key_outside_legal_range`, `transaction_too_old`, `accessed_unreadable`…
    pub async fn get(&self, key: &[u8], snapshot: bool) -> MetaResult<Option<Bytes>> {
        match self.inner.as_ref() {
            Tx::Embedded(t) => t.get(key, snapshot),
            #[cfg(feature = "fdb")]
            Tx::Fdb(t) => t.get(key, snapshot).await,
        }
    }

    /// Resolves a key selector.
    ///
    /// # Errors
    ///
    /// As `get`.
    pub async fn get_key(&self, selector: &KeySelector, snapshot: bool) -> MetaResult<Bytes> {
        match self.inner.as_ref() {
            Tx::Embedded(t) => t.get_key(selector, snapshot),
            #[cfg(feature = "fdb")]
            Tx::Fdb(t) => t.get_key(selector, snapshot).await,
        }
    }

    /// Reads a range (all of it, up to the option's limit).
    ///
    /// # Errors
    ///
    /// As `get`.
    pub async fn get_range(&self, opt: &RangeOption, snapshot: bool) -> MetaResult<RangeResult> {
        match self.inner.as_ref() {
            Tx::Embedded(t) => t.get_range(opt, snapshot),
            #[cfg(feature = "fdb")]
            Tx::Fdb(t) => t.get_range(opt, snapshot).await,
        }
    }

    /// Sets a key. Size errors are reported by `commit`, as in FoundationDB.
    pub fn set(&self, key: &[u8], value: &[u8]) {
        match self.inner.as_ref() {
            Tx::Embedded(t) => t.set(key, value),
            #[cfg(feature = "fdb")]
            Tx::Fdb(t) => t.set(key, value),
        }
    }

    pub fn clear(&self, key: &[u8]) {
        match self.inner.as_ref() {
            Tx::Embedded(t) => t.clear(key),
            #[cfg(feature = "fdb")]
            Tx::Fdb(t) => t.clear(key),
        }
    }

    /// Writes `key = value` into this transaction's commit record only, where the backend keeps
    /// one (`Database::keeps_recovery_log`): durable with the commit, invisible to reads, and
    /// applied as an ordinary write only if a restart replays the record, after a crash before
    /// the next checkpoint. Returns `false`, writing nothing, on a backend without such a log.
    pub fn set_on_recovery(&self, key: &[u8], value: &[u8]) -> bool {
        match self.inner.as_ref() {
            Tx::Embedded(t) => {
                t.set_on_recovery(key, value);
                true
            }
            #[cfg(feature = "fdb")]
            Tx::Fdb(_) => false,
        }
    }

    /// Clears every key in `[begin, end)`.
    pub fn clear_range(&self, begin: &[u8], end: &[u8]) {
        match self.inner.as_ref() {
            Tx::Embedded(t) => t.clear_range(begin, end),
            #[cfg(feature = "fdb")]
            Tx::Fdb(t) => t.clear_range(begin, end),
        }
    }

    /// An atomic mutation: adds no read conflict.
    pub fn atomic_op(&self, key: &[u8], param: &[u8], op: MutationType) {
        match self.inner.as_ref() {
            Tx::Embedded(t) => t.atomic_op(key, param, op),
            #[cfg(feature = "fdb")]
            Tx::Fdb(t) => t.atomic_op(key, param, op),
        }
    }

    /// Adds an explicit read or write conflict range.
    ///
    /// # Errors
    ///
    /// `inverted_range` when `begin > end`.
    pub fn add_conflict_range(
        &self,
        begin: &[u8],
        end: &[u8],
        ty: ConflictRangeType,
    ) -> MetaResult<()> {
        match self.inner.as_ref() {
            Tx::Embedded(t) => t.add_conflict_range(begin, end, ty),
            #[cfg(feature = "fdb")]
            Tx::Fdb(t) => t.add_conflict_range(begin, end, ty),
        }
    }

    /// The read version, acquiring it if needed (this starts the five-second window).
    ///
    /// # Errors
    ///
    /// `transaction_cancelled`, or the backend's error.
    pub async fn get_read_version(&self) -> MetaResult<i64> {
        match self.inner.as_ref() {
            Tx::Embedded(t) => t.get_read_version(),
            #[cfg(feature = "fdb")]
            Tx::Fdb(t) => t.get_read_version().await,
        }
    }

    /// An estimate of the bytes stored in `[begin, end)`.
    ///
    /// # Errors
    ///
    /// The backend's error.
    pub async fn get_estimated_range_size_bytes(
        &self,
        begin: &[u8],
        end: &[u8],
    ) -> MetaResult<i64> {
        match self.inner.as_ref() {
            Tx::Embedded(t) => t.get_estimated_range_size_bytes(begin, end),
            #[cfg(feature = "fdb")]
            Tx::Fdb(t) => t.get_estimated_range_size_bytes(begin, end).await,
        }
    }

    /// The approximate size of the transaction so far (mutations and conflict ranges).
    ///
    /// # Errors
    ///
    /// `transaction_cancelled`, or the backend's error.
    pub async fn get_approximate_size(&self) -> MetaResult<i64> {
        match self.inner.as_ref() {
            Tx::Embedded(t) => t.get_approximate_size(),
            #[cfg(feature = "fdb")]
            Tx::Fdb(t) => t.get_approximate_size().await,
        }
    }

    /// A watch on `key`: completes when the key's value differs from the one this transaction
    /// sees. It is registered when the transaction commits; dropping it cancels it.
    pub fn watch(&self, key: &[u8]) -> MetaFuture<()> {
        match self.inner.as_ref() {
            Tx::Embedded(t) => {
                let rx = t.watch(key);
                Box::pin(async move { rx.await.unwrap_or(Err(MetaError::OPERATION_CANCELLED)) })
            }
            #[cfg(feature = "fdb")]
            Tx::Fdb(t) => t.watch(key),
        }
    }

    /// The 10-byte versionstamp this transaction commits at, once it has committed.
    /// `no_commit_version` for a read-only transaction.
    pub fn get_versionstamp(&self) -> MetaFuture<Bytes> {
        match self.inner.as_ref() {
            Tx::Embedded(t) => {
                let rx = t.get_versionstamp();
                Box::pin(async move { rx.await.unwrap_or(Err(MetaError::OPERATION_CANCELLED)) })
            }
            #[cfg(feature = "fdb")]
            Tx::Fdb(t) => t.get_versionstamp(),
        }
    }

    /// Cancels the transaction: later operations fail with `transaction_cancelled`.
    pub fn cancel(&self) {
        match self.inner.as_ref() {
            Tx::Embedded(t) => t.cancel(),
            #[cfg(feature = "fdb")]
            Tx::Fdb(t) => t.cancel(),
        }
    }

    /// Adds work that must be durable before this transaction's writes commit (see
    /// `BeforeCommit`). Hooks run in the order they were added, once, at `commit`.
    pub fn before_commit(&self, hook: Arc<dyn BeforeCommit>) {
        self.hooks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(hook);
    }

    /// Commits, returning the committed version, or -1 for a transaction that wrote nothing.
    ///
    /// # Errors
    ///
    /// `not_committed` on a conflict, `transaction_too_old`, the size errors of the mutations,
    /// `commit_unknown_result`…
    pub async fn commit(self) -> MetaResult<i64> {
        let hooks = std::mem::take(
            &mut *self.hooks.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let result = match self.inner.as_ref() {
            // The committer runs the hooks of a whole batch just before it logs the batch, so
            // their syncs and the log's share one stage.
            Tx::Embedded(t) => t.commit(hooks).await,
            #[cfg(feature = "fdb")]
            Tx::Fdb(t) => t.commit(hooks).await,
        };
        let counter = match &result {
            Ok(_) => &self.stats.committed,
            Err(e) if *e == MetaError::NOT_COMMITTED => &self.stats.conflicts,
            Err(_) => &self.stats.failed,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        result
    }
}
