//! Namespaces: dotted paths (`production.users`) over the directory layer, under
//! `kronotop/<cluster>/namespaces/<segment>/…`. Every data model keeps its keys in a namespace's
//! internal leaves (`<ns>/__internal__/zmap`, `<ns>/__internal__/bucket`).
//!
//! Removal is two-phase, as in the reference (section 4.4): `REMOVE` marks a namespace (its
//! children inherit the mark) and bumps the cluster's namespace version; every member records the
//! version it has seen; `PURGE` deletes the subtree only once every live member has seen the
//! removal, so no member still serves data from it. `MOVE` leaves a tombstone on the old name that
//! blocks re-creating it until every live member has seen the move.
//!
//! Keys inside a namespace's own directory (its contents live in the internal leaves, under other
//! prefixes, so these cannot collide with data):
//!
//! ```text
//! (0, "namespace")   b"\x01"    this directory is a namespace (not only a path segment)
//! (0, "removed")     i64 LE     namespace version of the REMOVE, when removed
//! ```
//! and in `kronotop/<cluster>/metadata/namespace_tombstones`: `(<dotted name>,)` → i64 LE namespace
//! version of the MOVE that vacated the name.

use kronotop_meta::Transaction;
use kronotop_meta::directory::{DirectoryLayer, DirectorySubspace};
use kronotop_meta::tuple::Subspace;

use crate::ClusterError;
use crate::keys::le_i64;

/// Deepest namespace path (reference section 4.4).
pub const MAX_DEPTH: usize = 10;
/// The segment reserved for the data models' internal leaves.
pub const INTERNAL: &str = "__internal__";

/// Namespace errors, with the prefix each carries on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NamespaceError {
    #[error("Namespace '{0}' is reserved for internal use")]
    Reserved(String),
    #[error("Namespace depth exceeds maximum allowed depth of {MAX_DEPTH}")]
    TooDeep,
    #[error("Invalid namespace name: '{0}'")]
    Invalid(String),
    #[error("Namespace already exists: {0}")]
    AlreadyExists(String),
    #[error("No such namespace: '{0}'")]
    NoSuch(String),
    #[error("Namespace '{0}' is being removed")]
    BeingRemoved(String),
    #[error("Cannot remove the default namespace: '{0}'")]
    RemoveDefault(String),
    #[error("Cannot purge the default namespace: '{0}'")]
    PurgeDefault(String),
    #[error("Namespace '{0}' must be logically removed before purge")]
    NotRemoved(String),
    #[error("Barrier not satisfied: not all members observed version {0}")]
    Barrier(i64),
    #[error("Not all cluster members have observed the tombstone for namespace '{0}'")]
    Tombstone(String),
}

impl NamespaceError {
    /// The RESP error prefix clients see.
    pub fn prefix(&self) -> &'static str {
        match self {
            NamespaceError::AlreadyExists(_) => "NAMESPACEALREADYEXISTS",
            NamespaceError::NoSuch(_) => "NOSUCHNAMESPACE",
            NamespaceError::BeingRemoved(_) => "NAMESPACEBEINGREMOVED",
            NamespaceError::Barrier(_) => "BARRIERNOTSATISFIED",
            _ => "ERR",
        }
    }
}

/// Splits and checks a dotted namespace name.
///
/// # Errors
///
/// `Reserved`, `TooDeep`, `Invalid` (empty segments).
pub fn parse(name: &str) -> Result<Vec<String>, NamespaceError> {
    let segments: Vec<String> = name.split('.').map(str::to_owned).collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(NamespaceError::Invalid(name.to_owned()));
    }
    if segments.iter().any(|s| s == INTERNAL) {
        return Err(NamespaceError::Reserved(name.to_owned()));
    }
    if segments.len() > MAX_DEPTH {
        return Err(NamespaceError::TooDeep);
    }
    Ok(segments)
}

/// The namespace tree of one cluster.
#[derive(Debug, Clone)]
pub struct Namespaces {
    root: Vec<String>,
    tombstones: Subspace,
    version_key: Vec<u8>,
}

fn marker(dir: &DirectorySubspace, field: &str) -> Vec<u8> {
    dir.subspace().pack(&(0i64, field))
}

impl Namespaces {
    pub(crate) fn new(root: Vec<String>, tombstones: Subspace, version_key: Vec<u8>) -> Self {
        Namespaces { root, tombstones, version_key }
    }

    fn path(&self, segments: &[String]) -> Vec<String> {
        self.root.iter().chain(segments).cloned().collect()
    }

    /// The key whose value is the cluster's namespace version (bumped by REMOVE and MOVE).
    pub fn version_key(&self) -> &[u8] {
        &self.version_key
    }

    /// The namespace's directory, if it is a namespace.
    async fn open(
        &self,
        tx: &Transaction,
        segments: &[String],
    ) -> Result<Option<DirectorySubspace>, ClusterError> {
        let dl = DirectoryLayer::default();
        let path = self.path(segments);
        if !dl.exists(tx, &path).await? {
            return Ok(None);
        }
        let dir = dl.open(tx, &path, None).await?;
        Ok(tx.get(&marker(&dir, "namespace"), false).await?.map(|_| dir))
    }

    /// Whether the namespace or one of its ancestors is marked removed.
    async fn removed(&self, tx: &Transaction, segments: &[String]) -> Result<bool, ClusterError> {
        let dl = DirectoryLayer::default();
        for depth in 1..=segments.len() {
            let path = self.path(&segments[..depth]);
            if !dl.exists(tx, &path).await? {
                return Ok(false);
            }
            let dir = dl.open(tx, &path, None).await?;
            if tx.get(&marker(&dir, "removed"), false).await?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The namespace's directory, which must exist and not be (under) a removed namespace.
    async fn open_in_use(
        &self,
        tx: &Transaction,
        segments: &[String],
        name: &str,
    ) -> Result<DirectorySubspace, ClusterError> {
        let dir = self
            .open(tx, segments)
            .await?
            .ok_or_else(|| NamespaceError::NoSuch(name.to_owned()))?;
        self.ensure_not_removed(tx, segments, name).await?;
        Ok(dir)
    }

    async fn ensure_not_removed(
        &self,
        tx: &Transaction,
        segments: &[String],
        name: &str,
    ) -> Result<(), ClusterError> {
        if self.removed(tx, segments).await? {
            return Err(NamespaceError::BeingRemoved(name.to_owned()).into());
        }
        Ok(())
    }

    /// Creates (or opens) the directory of every prefix of `segments` and marks it a namespace.
    async fn create_namespaces(
        &self,
        tx: &Transaction,
        segments: &[String],
    ) -> Result<(), ClusterError> {
        let dl = DirectoryLayer::default();
        for depth in 1..=segments.len() {
            let dir = dl.create_or_open(tx, &self.path(&segments[..depth]), None).await?;
            tx.set(&marker(&dir, "namespace"), b"\x01");
        }
        Ok(())
    }

    fn leaf_path(&self, segments: &[String], leaf: &str) -> Vec<String> {
        let mut path = self.path(segments);
        path.extend([INTERNAL.to_owned(), leaf.to_owned()]);
        path
    }

    /// Opens a namespace for use: it must exist and not be removed.
    ///
    /// # Errors
    ///
    /// `NoSuch`, `BeingRemoved`; metadata errors.
    pub async fn open_for_use(
        &self,
        tx: &Transaction,
        name: &str,
    ) -> Result<DirectorySubspace, ClusterError> {
        self.open_in_use(tx, &parse(name)?, name).await
    }

    /// The subspace of a namespace's internal leaf (`zmap`, `bucket`), for a namespace in use.
    ///
    /// # Errors
    ///
    /// `NoSuch`, `BeingRemoved`; metadata errors.
    pub async fn leaf(
        &self,
        tx: &Transaction,
        name: &str,
        leaf: &str,
    ) -> Result<Subspace, ClusterError> {
        let segments = parse(name)?;
        self.open_in_use(tx, &segments, name).await?;
        let path = self.leaf_path(&segments, leaf);
        Ok(DirectoryLayer::default().create_or_open(tx, &path, None).await?.subspace().clone())
    }

    /// `NAMESPACE CREATE`: the namespace, missing ancestors, and its internal leaves.
    ///
    /// `observed` is the lowest namespace version every live member has seen, for tombstones.
    ///
    /// # Errors
    ///
    /// `AlreadyExists`, `BeingRemoved`, `Tombstone`, name errors; metadata errors.
    pub async fn create(
        &self,
        tx: &Transaction,
        name: &str,
        observed: i64,
    ) -> Result<(), ClusterError> {
        let segments = parse(name)?;
        if let Some(moved_at) = tx.get(&self.tombstones.pack(&(name,)), false).await? {
            if le_i64(Some(&moved_at)) > observed {
                return Err(NamespaceError::Tombstone(name.to_owned()).into());
            }
            tx.clear(&self.tombstones.pack(&(name,)));
        }
        self.ensure_not_removed(tx, &segments, name).await?;
        if self.open(tx, &segments).await?.is_some() {
            return Err(NamespaceError::AlreadyExists(name.to_owned()).into());
        }
        self.create_namespaces(tx, &segments).await?;
        let dl = DirectoryLayer::default();
        for leaf in ["zmap", "bucket"] {
            dl.create_or_open(tx, &self.leaf_path(&segments, leaf), None).await?;
        }
        Ok(())
    }

    /// Creates the namespace if it does not exist (the default namespace at start-up).
    ///
    /// # Errors
    ///
    /// Metadata errors.
    pub async fn ensure(&self, tx: &Transaction, name: &str) -> Result<(), ClusterError> {
        match self.create(tx, name, i64::MAX).await {
            Err(ClusterError::Namespace(NamespaceError::AlreadyExists(_))) | Ok(()) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `NAMESPACE EXISTS`.
    ///
    /// # Errors
    ///
    /// `BeingRemoved` for a removed namespace; name and metadata errors.
    pub async fn exists(&self, tx: &Transaction, name: &str) -> Result<bool, ClusterError> {
        let segments = parse(name)?;
        if self.open(tx, &segments).await?.is_none() {
            return Ok(false);
        }
        self.ensure_not_removed(tx, &segments, name).await?;
        Ok(true)
    }

    /// `NAMESPACE LIST [ns]`: names of the child namespaces.
    ///
    /// # Errors
    ///
    /// `NoSuch`; name and metadata errors.
    pub async fn list(
        &self,
        tx: &Transaction,
        name: Option<&str>,
    ) -> Result<Vec<String>, ClusterError> {
        let segments = match name {
            Some(n) => {
                let s = parse(n)?;
                if self.open(tx, &s).await?.is_none() {
                    return Err(NamespaceError::NoSuch(n.to_owned()).into());
                }
                s
            }
            None => Vec::new(),
        };
        let dl = DirectoryLayer::default();
        let path = self.path(&segments);
        if !dl.exists(tx, &path).await? {
            return Ok(Vec::new());
        }
        Ok(dl.list(tx, &path).await?.into_iter().filter(|c| c != INTERNAL).collect())
    }

    /// `NAMESPACE REMOVE`: marks the namespace removed and bumps the namespace version.
    ///
    /// # Errors
    ///
    /// `RemoveDefault`, `NoSuch`, `BeingRemoved`; metadata errors.
    pub async fn remove(
        &self,
        tx: &Transaction,
        name: &str,
        default: &str,
    ) -> Result<(), ClusterError> {
        let segments = parse(name)?;
        if name == default || parse(default).is_ok_and(|d| d.starts_with(&segments)) {
            return Err(NamespaceError::RemoveDefault(name.to_owned()).into());
        }
        let dir = self.open_in_use(tx, &segments, name).await?;
        let version = self.bump(tx).await?;
        tx.set(&marker(&dir, "removed"), &version.to_le_bytes());
        Ok(())
    }

    async fn bump(&self, tx: &Transaction) -> Result<i64, ClusterError> {
        let version = le_i64(tx.get(&self.version_key, false).await?.as_deref()) + 1;
        tx.set(&self.version_key, &version.to_le_bytes());
        Ok(version)
    }

    /// The namespace version a `PURGE` of `name` must see observed everywhere, checking that it can
    /// be purged at all.
    ///
    /// # Errors
    ///
    /// `PurgeDefault`, `NoSuch`, `NotRemoved`; metadata errors.
    pub async fn purge_version(
        &self,
        tx: &Transaction,
        name: &str,
        default: &str,
    ) -> Result<i64, ClusterError> {
        let segments = parse(name)?;
        if name == default || parse(default).is_ok_and(|d| d.starts_with(&segments)) {
            return Err(NamespaceError::PurgeDefault(name.to_owned()).into());
        }
        let dir = self
            .open(tx, &segments)
            .await?
            .ok_or_else(|| NamespaceError::NoSuch(name.to_owned()))?;
        match tx.get(&marker(&dir, "removed"), false).await? {
            Some(v) => Ok(le_i64(Some(&v))),
            None if self.removed(tx, &segments).await? => {
                Ok(le_i64(tx.get(&self.version_key, false).await?.as_deref()))
            }
            None => Err(NamespaceError::NotRemoved(name.to_owned()).into()),
        }
    }

    /// Deletes the namespace's subtree, contents included.
    ///
    /// # Errors
    ///
    /// Metadata errors.
    pub async fn purge(&self, tx: &Transaction, name: &str) -> Result<(), ClusterError> {
        let segments = parse(name)?;
        DirectoryLayer::default().remove_if_exists(tx, &self.path(&segments)).await?;
        Ok(())
    }

    /// `NAMESPACE MOVE`: moves the subtree and tombstones the old name.
    ///
    /// # Errors
    ///
    /// `NoSuch`, `AlreadyExists`, `BeingRemoved`; metadata errors.
    pub async fn move_to(
        &self,
        tx: &Transaction,
        old: &str,
        new: &str,
        default: &str,
    ) -> Result<(), ClusterError> {
        let (from, to) = (parse(old)?, parse(new)?);
        if old == default {
            return Err(NamespaceError::RemoveDefault(old.to_owned()).into());
        }
        self.open_in_use(tx, &from, old).await?;
        if self.open(tx, &to).await?.is_some() {
            return Err(NamespaceError::AlreadyExists(new.to_owned()).into());
        }
        // Parents of the destination are created as namespaces, as CREATE would.
        self.create_namespaces(tx, &to[..to.len() - 1]).await?;
        DirectoryLayer::default().move_to(tx, &self.path(&from), &self.path(&to)).await?;
        let version = self.bump(tx).await?;
        tx.set(&self.tombstones.pack(&(old,)), &version.to_le_bytes());
        Ok(())
    }
}
