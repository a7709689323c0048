//! The directory layer: maps paths such as `["kronotop", "development", "metadata"]` to short
//! key prefixes, allocated transactionally.
//!
//! Written once over our `Transaction`, so it behaves the same on every backend, with
//! FoundationDB's own layout (the Python/Java bindings' `DirectoryLayer`): nodes under the
//! `\xfe` node subspace, the root node at `\xfe` packed inside it, a node's children under
//! `(0, name)` holding the child's prefix, its layer under `("layer",)`, the format version
//! `(1, 0, 0)` under the root's `("version",)`, and prefixes allocated by the high-contention
//! allocator under the root's `("hca",)` and packed as one-integer tuples in the content subspace.
//! Directories made by FoundationDB's bindings can therefore be opened here, and the reverse.

use bytes::Bytes;
use foundationdb_tuple::Subspace;

use crate::error::MetaError;
use crate::types::{MutationType, RangeOption, strinc};
use crate::{ConflictRangeType, Transaction};

/// Key of a node's children: `(SUBDIRS, name) -> child prefix`.
const SUBDIRS: i64 = 0;

/// The directory layer's format version (FoundationDB's `_VERSION`).
const VERSION: (u32, u32, u32) = (1, 0, 0);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    #[error("the directory already exists")]
    AlreadyExists,
    #[error("the directory does not exist")]
    NotFound,
    #[error("the directory was created with an incompatible layer")]
    IncompatibleLayer,
    #[error("the root directory cannot be moved or removed")]
    Root,
    #[error("the destination directory cannot be a subdirectory of the source directory")]
    MoveIntoItself,
    #[error("the parent of the destination directory does not exist")]
    ParentMissing,
    #[error("the directory layer holds data of an unknown version or shape: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// An opened directory: its path, layer and the prefix its keys live under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectorySubspace {
    pub path: Vec<String>,
    pub layer: Vec<u8>,
    subspace: Subspace,
}

impl DirectorySubspace {
    /// The subspace of the directory's contents.
    pub fn subspace(&self) -> &Subspace {
        &self.subspace
    }

    pub fn bytes(&self) -> &[u8] {
        self.subspace.bytes()
    }
}

/// The directory layer.
#[derive(Debug, Clone)]
pub struct DirectoryLayer {
    node: Subspace,
    content: Subspace,
    root: Subspace,
}

impl Default for DirectoryLayer {
    fn default() -> Self {
        let node = Subspace::from_bytes(b"\xfe".to_vec());
        let root = node.subspace(&node.bytes());
        DirectoryLayer { node, content: Subspace::all(), root }
    }
}

type DirResult<T> = Result<T, DirectoryError>;

impl DirectoryLayer {
    fn node_for_prefix(&self, prefix: &[u8]) -> Subspace {
        self.node.subspace(&prefix)
    }

    fn prefix_of_node(&self, node: &Subspace) -> DirResult<Vec<u8>> {
        self.node
            .unpack::<Vec<u8>>(node.bytes())
            .map_err(|e| DirectoryError::Corrupt(e.to_string()))
    }

    async fn check_version(&self, tx: &Transaction, write: bool) -> DirResult<()> {
        let key = self.root.pack(&b"version".as_slice());
        match tx.get(&key, false).await? {
            Some(v) if v.len() == 12 => {
                let major = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
                if major > VERSION.0 {
                    return Err(DirectoryError::Corrupt(format!("directory version {major}")));
                }
                Ok(())
            }
            Some(_) => Err(DirectoryError::Corrupt("malformed version".into())),
            None => {
                if write {
                    let mut v = Vec::with_capacity(12);
                    v.extend(VERSION.0.to_le_bytes());
                    v.extend(VERSION.1.to_le_bytes());
                    v.extend(VERSION.2.to_le_bytes());
                    tx.set(&key, &v);
                }
                Ok(())
            }
        }
    }

    /// The node of `path`, if it exists.
    async fn find(&self, tx: &Transaction, path: &[String]) -> DirResult<Option<Subspace>> {
        let mut node = self.root.clone();
        for name in path {
            let key = node.subspace(&SUBDIRS).pack(&name.as_str());
            match tx.get(&key, false).await? {
                Some(prefix) => node = self.node_for_prefix(&prefix),
                None => return Ok(None),
            }
        }
        Ok(Some(node))
    }

    async fn layer_of(&self, tx: &Transaction, node: &Subspace) -> DirResult<Vec<u8>> {
        Ok(tx
            .get(&node.pack(&b"layer".as_slice()), false)
            .await?
            .map(|b| b.to_vec())
            .unwrap_or_default())
    }

    fn contents(
        &self,
        node: &Subspace,
        path: &[String],
        layer: Vec<u8>,
    ) -> DirResult<DirectorySubspace> {
        let prefix = self.prefix_of_node(node)?;
        Ok(DirectorySubspace { path: path.to_vec(), layer, subspace: Subspace::from_bytes(prefix) })
    }

    /// Opens the directory at `path`, creating it (and missing parents) if needed.
    ///
    /// # Errors
    ///
    /// `IncompatibleLayer` when it exists with another layer; metadata errors.
    pub async fn create_or_open(
        &self,
        tx: &Transaction,
        path: &[String],
        layer: Option<&[u8]>,
    ) -> DirResult<DirectorySubspace> {
        self.create_or_open_inner(tx, path, layer, true, true).await
    }

    /// Creates the directory at `path`.
    ///
    /// # Errors
    ///
    /// `AlreadyExists`; metadata errors.
    pub async fn create(
        &self,
        tx: &Transaction,
        path: &[String],
        layer: Option<&[u8]>,
    ) -> DirResult<DirectorySubspace> {
        self.create_or_open_inner(tx, path, layer, true, false).await
    }

    /// Opens the directory at `path`.
    ///
    /// # Errors
    ///
    /// `NotFound`, `IncompatibleLayer`; metadata errors.
    pub async fn open(
        &self,
        tx: &Transaction,
        path: &[String],
        layer: Option<&[u8]>,
    ) -> DirResult<DirectorySubspace> {
        self.create_or_open_inner(tx, path, layer, false, true).await
    }

    async fn create_or_open_inner(
        &self,
        tx: &Transaction,
        path: &[String],
        layer: Option<&[u8]>,
        allow_create: bool,
        allow_open: bool,
    ) -> DirResult<DirectorySubspace> {
        if path.is_empty() {
            return Err(DirectoryError::Root);
        }
        self.check_version(tx, false).await?;
        if let Some(node) = self.find(tx, path).await? {
            if !allow_open {
                return Err(DirectoryError::AlreadyExists);
            }
            let existing = self.layer_of(tx, &node).await?;
            if let Some(want) = layer
                && !want.is_empty()
                && want != existing.as_slice()
            {
                return Err(DirectoryError::IncompatibleLayer);
            }
            return self.contents(&node, path, existing);
        }
        if !allow_create {
            return Err(DirectoryError::NotFound);
        }
        self.check_version(tx, true).await?;
        let parent = match path.split_last() {
            Some((_, [])) | None => self.root.clone(),
            Some((_, parent_path)) => {
                let dir =
                    Box::pin(self.create_or_open_inner(tx, parent_path, None, true, true)).await?;
                self.node_for_prefix(dir.bytes())
            }
        };
        let id = allocate(tx, &self.root.subspace(&b"hca".as_slice())).await?;
        let prefix = self.content.pack(&id);
        let (begin, end) = (prefix.clone(), strinc(&prefix));
        let used = tx.get_range(&RangeOption::new(Bytes::from(begin), end).limit(1), true).await?;
        if !used.kvs.is_empty() {
            return Err(DirectoryError::Corrupt("allocated prefix already holds keys".into()));
        }
        let node = self.node_for_prefix(&prefix);
        let name = path.last().map(String::as_str).unwrap_or_default();
        tx.set(&parent.subspace(&SUBDIRS).pack(&name), &prefix);
        let layer = layer.unwrap_or_default().to_vec();
        tx.set(&node.pack(&b"layer".as_slice()), &layer);
        self.contents(&node, path, layer)
    }

    /// Whether a directory exists at `path`.
    ///
    /// # Errors
    ///
    /// Metadata errors.
    pub async fn exists(&self, tx: &Transaction, path: &[String]) -> DirResult<bool> {
        self.check_version(tx, false).await?;
        Ok(self.find(tx, path).await?.is_some())
    }

    /// Names of the directory's children, in order.
    ///
    /// # Errors
    ///
    /// `NotFound`; metadata errors.
    pub async fn list(&self, tx: &Transaction, path: &[String]) -> DirResult<Vec<String>> {
        self.check_version(tx, false).await?;
        let node = self.find(tx, path).await?.ok_or(DirectoryError::NotFound)?;
        let subdirs = node.subspace(&SUBDIRS);
        let (b, e) = subdirs.range();
        let kvs = tx.get_range(&RangeOption::new(b, e), false).await?;
        kvs.kvs
            .iter()
            .map(|kv| {
                subdirs
                    .unpack::<String>(&kv.key)
                    .map_err(|e| DirectoryError::Corrupt(e.to_string()))
            })
            .collect()
    }

    /// Moves the directory at `old` to `new`; its prefix, and so its contents, stay.
    ///
    /// # Errors
    ///
    /// `NotFound`, `AlreadyExists`, `ParentMissing`, `MoveIntoItself`, `Root`; metadata errors.
    pub async fn move_to(
        &self,
        tx: &Transaction,
        old: &[String],
        new: &[String],
    ) -> DirResult<DirectorySubspace> {
        if old.is_empty() || new.is_empty() {
            return Err(DirectoryError::Root);
        }
        if new.starts_with(old) {
            return Err(DirectoryError::MoveIntoItself);
        }
        self.check_version(tx, true).await?;
        let node = self.find(tx, old).await?.ok_or(DirectoryError::NotFound)?;
        if self.find(tx, new).await?.is_some() {
            return Err(DirectoryError::AlreadyExists);
        }
        let (new_name, new_parent) = new.split_last().ok_or(DirectoryError::Root)?;
        let parent = self.find(tx, new_parent).await?.ok_or(DirectoryError::ParentMissing)?;
        let prefix = self.prefix_of_node(&node)?;
        tx.set(&parent.subspace(&SUBDIRS).pack(&new_name.as_str()), &prefix);
        let (old_name, old_parent) = old.split_last().ok_or(DirectoryError::Root)?;
        let old_parent = self.find(tx, old_parent).await?.ok_or(DirectoryError::NotFound)?;
        tx.clear(&old_parent.subspace(&SUBDIRS).pack(&old_name.as_str()));
        let layer = self.layer_of(tx, &node).await?;
        self.contents(&node, new, layer)
    }

    /// Removes the directory at `path`, its subdirectories and all their contents.
    ///
    /// # Errors
    ///
    /// `NotFound`, `Root`; metadata errors.
    pub async fn remove(&self, tx: &Transaction, path: &[String]) -> DirResult<()> {
        if !self.remove_if_exists(tx, path).await? {
            return Err(DirectoryError::NotFound);
        }
        Ok(())
    }

    /// Removes the directory at `path` if it exists; returns whether it did.
    ///
    /// # Errors
    ///
    /// `Root`; metadata errors.
    pub async fn remove_if_exists(&self, tx: &Transaction, path: &[String]) -> DirResult<bool> {
        let (name, parent_path) = path.split_last().ok_or(DirectoryError::Root)?;
        self.check_version(tx, true).await?;
        let Some(node) = self.find(tx, path).await? else { return Ok(false) };
        self.remove_recursive(tx, &node).await?;
        let parent = self.find(tx, parent_path).await?.ok_or(DirectoryError::NotFound)?;
        tx.clear(&parent.subspace(&SUBDIRS).pack(&name.as_str()));
        Ok(true)
    }

    async fn remove_recursive(&self, tx: &Transaction, node: &Subspace) -> DirResult<()> {
        let subdirs = node.subspace(&SUBDIRS);
        let (b, e) = subdirs.range();
        let children = tx.get_range(&RangeOption::new(b, e), false).await?;
        for kv in children.kvs {
            Box::pin(self.remove_recursive(tx, &self.node_for_prefix(&kv.value))).await?;
        }
        let prefix = self.prefix_of_node(node)?;
        tx.clear_range(&prefix, &strinc(&prefix));
        let (nb, ne) = node.range();
        tx.clear_range(&nb, &ne);
        tx.clear(node.bytes());
        Ok(())
    }
}

/// Size of the allocation window that starts at `start` (FoundationDB's `windowSize`).
fn window_size(start: i64) -> i64 {
    if start < 255 {
        64
    } else if start < 65_535 {
        1024
    } else {
        8192
    }
}

fn random_below(n: i64) -> i64 {
    let mut b = [0u8; 8];
    let r = if getrandom::fill(&mut b).is_ok() { u64::from_le_bytes(b) } else { 0 };
    i64::try_from(r % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
}

/// The high-contention allocator (FoundationDB's `HighContentionAllocator.allocate`): claims a
/// small integer unused so far, mostly without conflicting with concurrent allocations.
async fn allocate(tx: &Transaction, hca: &Subspace) -> Result<i64, MetaError> {
    let counters = hca.subspace(&0i64);
    let recent = hca.subspace(&1i64);
    let (cb, ce) = counters.range();
    let latest_start = async |tx: &Transaction| -> Result<i64, MetaError> {
        let last = tx
            .get_range(&RangeOption::new(cb.clone(), ce.clone()).limit(1).reverse(true), true)
            .await?;
        Ok(match last.kvs.first() {
            Some(kv) => counters.unpack::<i64>(&kv.key).unwrap_or(0),
            None => 0,
        })
    };
    loop {
        let mut start = latest_start(tx).await?;
        let mut advanced = false;
        let window = loop {
            if advanced {
                tx.clear_range(&cb, &counters.pack(&start));
                tx.clear_range(recent.range().0.as_slice(), &recent.pack(&start));
            }
            let key = counters.pack(&start);
            tx.atomic_op(&key, &1i64.to_le_bytes(), MutationType::Add);
            let count = crate::atomic::le_i64(tx.get(&key, true).await?.as_deref());
            let window = window_size(start);
            if count * 2 < window {
                break window;
            }
            start += window;
            advanced = true;
        };
        loop {
            let candidate = start + random_below(window);
            if latest_start(tx).await? > start {
                break;
            }
            let key = recent.pack(&candidate);
            if tx.get(&key, false).await?.is_none() {
                tx.set(&key, b"");
                tx.add_conflict_range(
                    &key,
                    &crate::types::key_after(&key),
                    ConflictRangeType::Write,
                )?;
                return Ok(candidate);
            }
        }
    }
}
