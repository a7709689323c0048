//! Buckets: collections of BSON documents whose bodies live in a bucket shard's Volume and whose
//! metadata and primary index (`_id` to shard and body location) live in the metadata store,
//! written in the same transaction as the bodies' entries.
//!
//! It owns bucket metadata, the primary index, secondary indexes (definitions and schema errors
//! in `index`, entries, build states), the planner (`plan`), and the document operations queries,
//! cursors, updates and deletes are built on: insert (with `_id` generation, validation and
//! uniqueness), reading a plan's ranges from a position, delete, replace, remove and purge.
//! Invariants: an index entry (primary or secondary) is committed in the transaction that appends
//! its body, after the body's bytes are synced (the Volume's own invariant), so an entry never
//! points at missing bytes; secondary entries change in the transaction that changes the
//! document. It depends on `kronotop-query`, `kronotop-volume` and `kronotop-meta`; never on the
//! server.

use bson::oid::ObjectId;
use bson::{Bson, Document};
use kronotop_meta::tuple::{Bytes as TupleBytes, Subspace};
use kronotop_meta::{MetaError, RangeOption, Transaction};
use kronotop_volume::{Deletion, EntryMetadata, Volume, VolumeError};

pub mod index;
pub mod plan;

pub use index::{IndexDef, PRIMARY};
pub use plan::{Scan, Shape};

/// Errors of bucket operations, with the reference's prefixes and texts.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BucketError {
    #[error("No such bucket: '{0}'")]
    NoSuchBucket(String),
    #[error("Bucket already exists: {0}")]
    AlreadyExists(String),
    #[error("Duplicate key: _id '{0}'")]
    DuplicateKey(String),
    #[error("_id field must be of type ObjectId")]
    IdNotObjectId,
    #[error("No documents provided")]
    NoDocuments,
    #[error("Bucket '{0}' is being removed")]
    BeingRemoved(String),
    #[error("Bucket '{0}' is not removed")]
    NotRemoved(String),
    /// An index schema or definition error, with the reference's text.
    #[error("{0}")]
    Schema(String),
    #[error("No such index: '{0}'")]
    NoSuchIndex(String),
    #[error(
        "Index type mismatch: index '{index}' expects '{expected}', but selector '{selector}' matched a value of type '{actual}'"
    )]
    IndexTypeMismatch {
        index: String,
        expected: &'static str,
        selector: String,
        actual: &'static str,
    },
    #[error("Duplicate key: '{selector}' {value}")]
    UniqueViolation { selector: String, value: String },
    #[error("bucket metadata is damaged: {0}")]
    BadMetadata(String),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// Inside `Database::run`: a metadata error, also one inside a volume error, stays one, so a
/// conflict is retried (the `transparent` variants hide it from `RunError::meta`'s walk through
/// `source()`); any other error is the caller's and ends the run.
impl From<BucketError> for kronotop_meta::RunError {
    fn from(e: BucketError) -> Self {
        match e {
            BucketError::Meta(m) | BucketError::Volume(VolumeError::Meta(m)) => {
                kronotop_meta::RunError::Meta(m)
            }
            other => kronotop_meta::RunError::Custom(Box::new(other)),
        }
    }
}

impl BucketError {
    /// The RESP error prefix.
    pub fn prefix(&self) -> &'static str {
        match self {
            BucketError::NoSuchBucket(_) => "NOSUCHBUCKET",
            BucketError::AlreadyExists(_) => "BUCKETALREADYEXISTS",
            BucketError::DuplicateKey(_) | BucketError::UniqueViolation { .. } => "DUPLICATEKEY",
            BucketError::NoSuchIndex(_) => "NOSUCHINDEX",
            BucketError::IndexTypeMismatch { .. } => "INDEXTYPE_MISMATCH",
            BucketError::BeingRemoved(_) => "BUCKETBEINGREMOVED",
            _ => "ERR",
        }
    }
}

type Result<T, E = BucketError> = std::result::Result<T, E>;

/// A bucket's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketMeta {
    pub name: String,
    /// The Volume entry prefix of its documents: 8 random bytes, fixed at creation.
    pub prefix: [u8; 8],
    /// The bucket shards it lives on, in order; inserts go to the first one hosted locally.
    pub shards: Vec<u32>,
    /// `BUCKET.REMOVE` ran: every access but `PURGE` fails.
    pub removed: bool,
    /// Secondary indexes, whatever their status: writes maintain them all.
    pub indexes: Vec<IndexDef>,
    /// Dropped indexes whose entries are still being cleared in the background.
    pub dropped: Vec<DroppedIndex>,
    /// The id the next index gets.
    pub next_index: u64,
}

impl BucketMeta {
    /// The secondary index named `name`.
    ///
    /// # Errors
    ///
    /// `NoSuchIndex`.
    pub fn index_named(&self, name: &str) -> Result<&IndexDef> {
        self.indexes
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| BucketError::NoSuchIndex(name.to_owned()))
    }
}

/// An index `BUCKET.INDEX DROP` removed: no write maintains it and no query sees it any more, and
/// its entries are cleared in batches (`clear_dropped`) before this record goes too.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DroppedIndex {
    pub id: u64,
    pub name: String,
}

/// How bucket metadata is stored: one JSON value.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    prefix: String,
    #[serde(default)]
    shards: Vec<u32>,
    #[serde(default)]
    removed: bool,
    #[serde(default)]
    indexes: Vec<IndexDef>,
    #[serde(default)]
    next_index: u64,
    #[serde(default)]
    dropped: Vec<DroppedIndex>,
}

/// The build state of a secondary index: BUILDING, READY or FAILED (reference 5.6 also names
/// WAITING, for a build not started yet; here a build starts when its index is created).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IndexState {
    pub status: String,
    /// The last `_id` the build has indexed.
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

pub const BUILDING: &str = "BUILDING";
pub const READY: &str = "READY";
pub const FAILED: &str = "FAILED";

const META: &str = "m";
/// The primary index: `_id` to shard and body location. Nothing else is kept per document: the
/// Volume's segment index leads from a body's location to its entry (what deleting needs), and
/// the body holds its `_id` (what repointing the index after a vacuum move needs).
const INDEX: &str = "i";
/// Secondary index entries: `("x", bucket, index id) + value elements + _id` → shard, body
/// location and `_id` (so a scan needs no other read).
const SECONDARY: &str = "x";
/// Secondary index build states: `("s", bucket, index id)` → JSON `IndexState`. Apart from the
/// bucket's metadata, which every write reads, so a build's progress does not conflict with writes.
const STATUS: &str = "s";

/// Where one document lives: its shard and the place of its body in that shard's Volume, known
/// before the insert commits, so a transaction reads its own inserts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub id: ObjectId,
    pub shard: u32,
    pub body: EntryMetadata,
}

/// The body of a document deleted (or replaced) by the transaction that inserted it: its Volume
/// entry is deleted after that transaction commits (`Buckets::delete_body`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingBody {
    pub shard: u32,
    pub prefix: [u8; 8],
    pub body: EntryMetadata,
}

/// The buckets of one namespace, in that namespace's bucket subspace.
#[derive(Debug, Clone)]
pub struct Buckets {
    pub(crate) s: Subspace,
}

impl Buckets {
    pub fn new(s: Subspace) -> Buckets {
        Buckets { s }
    }

    /// The namespace's bucket subspace.
    pub fn subspace(&self) -> &Subspace {
        &self.s
    }

    fn meta_key(&self, name: &str) -> Vec<u8> {
        self.s.pack(&(META, name))
    }

    fn index_key(&self, name: &str, id: &ObjectId) -> Vec<u8> {
        self.s.pack(&(INDEX, name, TupleBytes::from(&id.bytes()[..])))
    }

    /// Creates a bucket on `shards`. Returns `false` when it exists and `if_not_exists` is set.
    ///
    /// # Errors
    ///
    /// `AlreadyExists`; metadata errors.
    pub async fn create(
        &self,
        tx: &Transaction,
        name: &str,
        shards: &[u32],
        if_not_exists: bool,
    ) -> Result<bool> {
        if let Some(raw) = tx.get(&self.meta_key(name), false).await? {
            // A removed bucket is refused even with IF-NOT-EXISTS (our decision, the original's
            // issue #22): it still holds data until purged.
            if serde_json::from_slice::<serde_json::Value>(&raw)
                .is_ok_and(|v| v["removed"].as_bool() == Some(true))
            {
                return Err(BucketError::BeingRemoved(name.to_owned()));
            }
            return if if_not_exists {
                Ok(false)
            } else {
                Err(BucketError::AlreadyExists(name.to_owned()))
            };
        }
        let mut prefix = [0u8; 8];
        getrandom::fill(&mut prefix).map_err(|e| BucketError::BadMetadata(e.to_string()))?;
        self.put_meta(
            tx,
            &BucketMeta {
                name: name.to_owned(),
                prefix,
                shards: shards.to_vec(),
                removed: false,
                indexes: Vec::new(),
                next_index: 1,
                dropped: Vec::new(),
            },
        )?;
        Ok(true)
    }

    fn put_meta(&self, tx: &Transaction, m: &BucketMeta) -> Result<()> {
        let stored = Stored {
            prefix: hex::encode(m.prefix),
            shards: m.shards.clone(),
            removed: m.removed,
            indexes: m.indexes.clone(),
            next_index: m.next_index,
            dropped: m.dropped.clone(),
        };
        let raw =
            serde_json::to_vec(&stored).map_err(|e| BucketError::BadMetadata(e.to_string()))?;
        tx.set(&self.meta_key(&m.name), &raw);
        Ok(())
    }

    /// The bucket's metadata, refusing a removed bucket.
    ///
    /// # Errors
    ///
    /// `NoSuchBucket`, `BeingRemoved`; metadata errors.
    pub async fn get(&self, tx: &Transaction, name: &str) -> Result<BucketMeta> {
        let meta = self.get_any(tx, name).await?;
        if meta.removed {
            return Err(BucketError::BeingRemoved(name.to_owned()));
        }
        Ok(meta)
    }

    /// The bucket's metadata, removed or not.
    ///
    /// # Errors
    ///
    /// `NoSuchBucket`; metadata errors.
    pub async fn get_any(&self, tx: &Transaction, name: &str) -> Result<BucketMeta> {
        let raw = tx
            .get(&self.meta_key(name), false)
            .await?
            .ok_or_else(|| BucketError::NoSuchBucket(name.to_owned()))?;
        // Read into a typed record: every insert reads it, and a generic JSON tree costs several
        // allocations per field.
        let v: Stored =
            serde_json::from_slice(&raw).map_err(|e| BucketError::BadMetadata(e.to_string()))?;
        let mut prefix = [0u8; 8];
        hex::decode_to_slice(&v.prefix, &mut prefix)
            .map_err(|_| BucketError::BadMetadata("prefix".into()))?;
        Ok(BucketMeta {
            name: name.to_owned(),
            prefix,
            shards: v.shards,
            removed: v.removed,
            indexes: v.indexes,
            next_index: v.next_index.max(1),
            dropped: v.dropped,
        })
    }

    /// Names of the buckets, in order.
    ///
    /// # Errors
    ///
    /// Metadata errors.
    pub async fn list(&self, tx: &Transaction) -> Result<Vec<String>> {
        let (b, e) = self.s.subspace(&(META,)).range();
        let kvs = tx.get_range(&RangeOption::new(b, e), false).await?;
        let mut out = Vec::new();
        for kv in kvs.kvs {
            let (_, name): (String, String) =
                self.s.unpack(&kv.key).map_err(|e| BucketError::BadMetadata(e.to_string()))?;
            out.push(name);
        }
        Ok(out)
    }

    /// Inserts `docs` into `shard`'s `volume` within `tx`: assigns missing `_id`s, checks that
    /// each `_id` is an ObjectId and new, appends the bodies (synced) and writes their index
    /// entries. Returns the ids in order.
    ///
    /// # Errors
    ///
    /// `NoDocuments`, `IdNotObjectId`, `DuplicateKey`; Volume and metadata errors.
    pub async fn insert(
        &self,
        db: &kronotop_meta::Database,
        tx: &Transaction,
        meta: &BucketMeta,
        shard: u32,
        volume: &Volume,
        docs: Vec<Document>,
    ) -> Result<Vec<ObjectId>> {
        if docs.is_empty() {
            return Err(BucketError::NoDocuments);
        }
        let mut ids = Vec::with_capacity(docs.len());
        let mut bodies = Vec::with_capacity(docs.len());
        let mut prepared = Vec::with_capacity(docs.len());
        let mut unique_seen = std::collections::HashSet::new();
        let mut seen_ids = std::collections::HashSet::with_capacity(docs.len());
        for mut d in docs {
            // Whether the client chose the `_id`: only then can it be taken already.
            let (id, chosen) = match d.get("_id") {
                None => {
                    let id = ObjectId::new();
                    // `_id` first, as MongoDB stores it.
                    let mut with_id = Document::new();
                    with_id.insert("_id", id);
                    with_id.extend(d);
                    d = with_id;
                    (id, false)
                }
                Some(Bson::ObjectId(id)) => (*id, true),
                // A 24-hex string (what JSON replies show) is taken as the ObjectId it spells.
                Some(Bson::String(s)) if ObjectId::parse_str(s).is_ok() => {
                    let id = ObjectId::parse_str(s).map_err(|_| BucketError::IdNotObjectId)?;
                    d.insert("_id", id);
                    (id, true)
                }
                Some(_) => return Err(BucketError::IdNotObjectId),
            };
            // A set, not `ids.contains`: one command may insert thousands of documents. An id
            // generated here is not looked up: ObjectId::new() is unique by construction (a
            // process-wide counter behind a random value of the process and the time), and the
            // lookup was a point read and a read-conflict range per inserted document.
            if !seen_ids.insert(id)
                || (chosen && tx.get(&self.index_key(&meta.name, &id), false).await?.is_some())
            {
                return Err(BucketError::DuplicateKey(id.to_hex()));
            }
            prepared.push(
                self.prepare_entries(tx, meta, &meta.indexes, &d, &id, &mut unique_seen).await?,
            );
            // `to_vec` is the bytes `to_writer` would copy into a buffer of ours.
            let body = bson::to_vec(&d).map_err(|e| BucketError::BadMetadata(e.to_string()))?;
            ids.push(id);
            bodies.push(body);
        }
        let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        let appended = volume.append(db, tx, meta.prefix, &refs).await?;
        for ((id, a), entries) in ids.iter().zip(appended).zip(&prepared) {
            self.point(tx, meta, id, shard, &a);
            self.write_entries(tx, meta, entries, id, shard, &a.metadata);
        }
        Ok(ids)
    }

    /// The `_id` of body `bytes` of bucket `name`, its primary index key, and the entry's value
    /// there (none when the document has no entry).
    ///
    /// # Errors
    ///
    /// `BadMetadata` when the bytes are not a document with an ObjectId `_id`.
    async fn body_entry(
        &self,
        tx: &Transaction,
        name: &str,
        bytes: &[u8],
    ) -> Result<(Document, ObjectId, Vec<u8>, Option<Location>)> {
        let doc = Document::from_reader(&mut &bytes[..])
            .map_err(|e| BucketError::BadMetadata(e.to_string()))?;
        let Ok(id) = doc.get_object_id("_id") else {
            return Err(BucketError::BadMetadata(format!("a body in bucket '{name}' has no _id")));
        };
        let key = self.index_key(name, &id);
        let at = match tx.get(&key, false).await? {
            Some(v) => Some(self.primary_location(&key, &v)?),
            None => None,
        };
        Ok((doc, id, key, at))
    }

    /// Whether bucket `name` (if it still exists) refers to body `bytes` at `at` on `shard`: its
    /// document's primary index entry points there. A body nothing refers to is left behind by
    /// design (replaced inside the transaction that inserted it, when the process died before
    /// deleting it; or purged from a member that does not host its shard).
    ///
    /// # Errors
    ///
    /// `BadMetadata` when the bytes are not a document with an ObjectId `_id`; metadata errors.
    pub async fn refers_to(
        &self,
        tx: &Transaction,
        name: &str,
        shard: u32,
        bytes: &[u8],
        at: &EntryMetadata,
    ) -> Result<bool> {
        match self.get_any(tx, name).await {
            Ok(_) => {}
            Err(BucketError::NoSuchBucket(_)) => return Ok(false),
            Err(e) => return Err(e),
        }
        let (_, _, _, pointed) = self.body_entry(tx, name, bytes).await?;
        Ok(pointed.is_some_and(|l| l.shard == shard && l.body == *at))
    }

    /// Repoints document body `bytes` of bucket `name`, which vacuum is moving from `from` to `to`
    /// on `shard`, in the primary index and in every secondary index (whatever its status: a
    /// build that read the old place conflicts with this write and reads again). Meant for the
    /// transaction that moves the body, after `refers_to` said yes in it.
    ///
    /// # Errors
    ///
    /// `BadMetadata` when the bytes are not a document with an ObjectId `_id` or the primary index
    /// does not point at `from`; `NoSuchBucket`; metadata errors.
    pub async fn repoint(
        &self,
        tx: &Transaction,
        name: &str,
        shard: u32,
        bytes: &[u8],
        from: &EntryMetadata,
        to: &EntryMetadata,
    ) -> Result<()> {
        let meta = self.get_any(tx, name).await?;
        let (doc, id, key, pointed) = self.body_entry(tx, name, bytes).await?;
        if !pointed.is_some_and(|l| l.shard == shard && l.body == *from) {
            return Err(BucketError::BadMetadata(format!(
                "document {id} of bucket '{name}' does not point at its moving body"
            )));
        }
        let mut value = shard.to_be_bytes().to_vec();
        value.extend_from_slice(&to.encode());
        tx.set(&key, &value);
        value.extend_from_slice(&id.bytes());
        for def in &meta.indexes {
            // A value that does not fit the index's type has no entry (as in `clear_entries`).
            if let Ok(values) = index::entries(def, &doc) {
                for v in values {
                    tx.set(&self.secondary_key(name, def.id, &v, &id), &value);
                }
            }
        }
        Ok(())
    }

    /// Writes the index entry of document `id` whose body was appended as `a` on `shard`.
    fn point(
        &self,
        tx: &Transaction,
        meta: &BucketMeta,
        id: &ObjectId,
        shard: u32,
        a: &kronotop_volume::Appended,
    ) {
        let mut value = shard.to_be_bytes().to_vec();
        value.extend_from_slice(&a.metadata.encode());
        tx.set(&self.index_key(&meta.name, id), &value);
    }

    /// Deletes the document at `at`: its index entry and its body's Volume entry. Returns the
    /// body when `tx` itself appended it: its Volume entry can only be found once `tx` has
    /// committed, so the caller deletes it then with `delete_body` (until then the index entry is
    /// gone, so nothing sees the document).
    ///
    /// # Errors
    ///
    /// Volume and metadata errors.
    pub async fn delete(
        &self,
        tx: &Transaction,
        meta: &BucketMeta,
        volume: &Volume,
        at: &Location,
        doc: &Document,
    ) -> Result<Option<PendingBody>> {
        self.clear_entries(tx, meta, doc, &at.id);
        self.remove_at(tx, meta, volume, at).await
    }

    /// Removes the document at `at` from the primary index and its body from the Volume, as
    /// `delete` does, leaving secondary index entries to the caller.
    async fn remove_at(
        &self,
        tx: &Transaction,
        meta: &BucketMeta,
        volume: &Volume,
        at: &Location,
    ) -> Result<Option<PendingBody>> {
        tx.clear(&self.index_key(&meta.name, &at.id));
        Ok(match volume.delete_at(tx, meta.prefix, &at.body).await? {
            Deletion::AppendedHere => {
                Some(PendingBody { shard: at.shard, prefix: meta.prefix, body: at.body })
            }
            Deletion::Deleted | Deletion::Missing => None,
        })
    }

    /// Deletes the Volume entry of a body `delete` reported, once the transaction that appended
    /// it has committed. Run in a transaction of its own.
    ///
    /// # Errors
    ///
    /// Volume and metadata errors.
    pub async fn delete_body(tx: &Transaction, volume: &Volume, p: &PendingBody) -> Result<()> {
        volume.delete_at(tx, p.prefix, &p.body).await?;
        Ok(())
    }

    /// Replaces the document at `at`, stored as `old`, with `doc` (same `_id`): a new body, the
    /// old one deleted (returned when `tx` appended it, as `delete` does), and the secondary index
    /// entries moved from the old values to the new ones.
    ///
    /// # Errors
    ///
    /// As `delete`, and the append's errors.
    pub async fn replace(
        &self,
        db: &kronotop_meta::Database,
        tx: &Transaction,
        meta: &BucketMeta,
        volume: &Volume,
        at: &Location,
        (old, doc): (&Document, &Document),
    ) -> Result<Option<PendingBody>> {
        let body = bson::to_vec(doc).map_err(|e| BucketError::BadMetadata(e.to_string()))?;
        self.clear_entries(tx, meta, old, &at.id);
        let prepared = self
            .prepare_entries(tx, meta, &meta.indexes, doc, &at.id, &mut Default::default())
            .await?;
        let pending = self.remove_at(tx, meta, volume, at).await?;
        let appended = volume.append(db, tx, meta.prefix, &[&body]).await?;
        if let Some(a) = appended.first() {
            self.point(tx, meta, &at.id, at.shard, a);
            self.write_entries(tx, meta, &prepared, &at.id, at.shard, &a.metadata);
        }
        Ok(pending)
    }

    /// `BUCKET.REMOVE`: marks the bucket removed.
    ///
    /// # Errors
    ///
    /// `NoSuchBucket`, `BeingRemoved`; metadata errors.
    pub async fn remove(&self, tx: &Transaction, name: &str) -> Result<()> {
        let mut meta = self.get(tx, name).await?;
        meta.removed = true;
        self.put_meta(tx, &meta)
    }

    /// `BUCKET.PURGE`, one step: deletes up to `batch` documents of a removed bucket (bodies in the
    /// `volumes` given by shard), and its metadata once none is left. Returns whether it is gone.
    ///
    /// # Errors
    ///
    /// `NotRemoved`, `NoSuchBucket`; Volume and metadata errors.
    pub async fn purge_step(
        &self,
        tx: &Transaction,
        name: &str,
        volume_of: &(dyn Fn(u32) -> Option<std::sync::Arc<Volume>> + Sync),
        batch: usize,
    ) -> Result<bool> {
        let meta = self.get_any(tx, name).await?;
        if !meta.removed {
            return Err(BucketError::NotRemoved(name.to_owned()));
        }
        let docs = self.scan(tx, &meta, None, batch, false).await?;
        for at in &docs {
            match volume_of(at.shard) {
                // The bucket was removed in an earlier transaction, so no body is pending here.
                Some(v) => {
                    self.remove_at(tx, &meta, &v, at).await?;
                }
                // A shard not hosted here: drop the index entry; the body is garbage for that
                // volume's vacuum.
                None => tx.clear(&self.index_key(&meta.name, &at.id)),
            }
        }
        if docs.len() < batch {
            for sub in [INDEX, SECONDARY, STATUS] {
                let (b, e) = self.s.subspace(&(sub, name)).range();
                tx.clear_range(&b, &e);
            }
            tx.clear(&self.meta_key(name));
            return Ok(true);
        }
        Ok(false)
    }

    /// Up to `limit` documents' locations in `_id` order (descending when `reverse`), past `after`
    /// (exclusive) when given.
    ///
    /// # Errors
    ///
    /// Metadata errors.
    pub async fn scan(
        &self,
        tx: &Transaction,
        meta: &BucketMeta,
        after: Option<&ObjectId>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<Location>> {
        let (mut begin, mut end) = self.s.subspace(&(INDEX, meta.name.as_str())).range();
        // `after` is the last id returned: the scan resumes past it, in either direction.
        match (after, reverse) {
            (Some(id), false) => {
                begin = self.index_key(&meta.name, id);
                begin.push(0);
            }
            (Some(id), true) => end = self.index_key(&meta.name, id),
            (None, _) => {}
        }
        let opt = RangeOption::new(begin, end).limit(limit).reverse(reverse);
        let kvs = tx.get_range(&opt, false).await?;
        let mut out = Vec::with_capacity(kvs.kvs.len());
        for kv in kvs.kvs {
            out.push(self.primary_location(&kv.key, &kv.value)?);
        }
        Ok(out)
    }

    /// Decodes a primary index entry.
    fn primary_location(&self, key: &[u8], v: &[u8]) -> Result<Location> {
        let (_, _, id): (String, String, TupleBytes<'_>) =
            self.s.unpack(key).map_err(|e| BucketError::BadMetadata(e.to_string()))?;
        let id = <[u8; 12]>::try_from(id.as_ref())
            .map(ObjectId::from_bytes)
            .map_err(|_| BucketError::BadMetadata("index key".into()))?;
        let (Some(shard), Some(body)) = (
            v.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
            v.get(4..).and_then(EntryMetadata::decode),
        ) else {
            return Err(BucketError::BadMetadata("index entry".into()));
        };
        Ok(Location { id, shard, body })
    }

    /// Reads a document's body.
    ///
    /// # Errors
    ///
    /// Volume errors (a checksum that fails); `BadMetadata` when the bytes are not a document.
    pub fn read(&self, volume: &Volume, at: &Location) -> Result<Document> {
        let bytes = volume.read(&at.body)?;
        Document::from_reader(&mut &bytes[..]).map_err(|e| BucketError::BadMetadata(e.to_string()))
    }
}

/// One secondary index entry a write is about to make: the index and the encoded value.
pub type Prepared = Vec<(u64, Vec<u8>)>;

/// Secondary indexes.
impl Buckets {
    /// The key prefix of index `id`'s entries.
    pub fn secondary_prefix(&self, bucket: &str, id: u64) -> Vec<u8> {
        self.s.pack(&(SECONDARY, bucket, i64::try_from(id).unwrap_or(i64::MAX)))
    }

    fn status_key(&self, bucket: &str, id: u64) -> Vec<u8> {
        self.s.pack(&(STATUS, bucket, i64::try_from(id).unwrap_or(i64::MAX)))
    }

    fn secondary_key(&self, bucket: &str, index: u64, value: &[u8], id: &ObjectId) -> Vec<u8> {
        let mut k = self.secondary_prefix(bucket, index);
        k.extend_from_slice(value);
        k.extend_from_slice(&kronotop_meta::tuple::pack(&TupleBytes::from(&id.bytes()[..])));
        k
    }

    /// Computes the entries document `id` gives indexes `defs` and checks unique ones against
    /// the stored entries and `seen` (the values earlier documents of the same write take).
    ///
    /// # Errors
    ///
    /// `IndexTypeMismatch`, `UniqueViolation`; metadata errors.
    pub async fn prepare_entries(
        &self,
        tx: &Transaction,
        meta: &BucketMeta,
        defs: &[IndexDef],
        doc: &Document,
        id: &ObjectId,
        seen: &mut std::collections::HashSet<(u64, Vec<u8>)>,
    ) -> Result<Prepared> {
        let mut out = Vec::new();
        for def in defs {
            for value in index::entries(def, doc)? {
                if def.unique {
                    let duplicate = !seen.insert((def.id, value.clone()))
                        || self.holds_other(tx, meta, def.id, &value, id).await?;
                    if duplicate {
                        let shown: Vec<serde_json::Value> = def
                            .fields
                            .iter()
                            .map(|f| {
                                let v = kronotop_query::eval::field_values(doc, &f.selector)
                                    .first()
                                    .map_or(Bson::Null, |v| (*v).clone());
                                v.into_relaxed_extjson()
                            })
                            .collect();
                        let value = match shown.as_slice() {
                            [one] => one.to_string(),
                            many => serde_json::Value::Array(many.to_vec()).to_string(),
                        };
                        return Err(BucketError::UniqueViolation {
                            selector: def.selectors(),
                            value,
                        });
                    }
                }
                out.push((def.id, value));
            }
        }
        Ok(out)
    }

    /// Whether index `index` has an entry with `value` for a document other than `id`.
    async fn holds_other(
        &self,
        tx: &Transaction,
        meta: &BucketMeta,
        index: u64,
        value: &[u8],
        id: &ObjectId,
    ) -> Result<bool> {
        let mut begin = self.secondary_prefix(&meta.name, index);
        begin.extend_from_slice(value);
        let mut end = begin.clone();
        end.push(0xff);
        let kvs = tx.get_range(&RangeOption::new(begin, end).limit(2), false).await?;
        Ok(kvs.kvs.iter().any(|kv| kv.value.get(24..36) != Some(&id.bytes()[..])))
    }

    /// Writes prepared entries of document `id` whose body is at `body` on `shard`.
    pub fn write_entries(
        &self,
        tx: &Transaction,
        meta: &BucketMeta,
        prepared: &Prepared,
        id: &ObjectId,
        shard: u32,
        body: &EntryMetadata,
    ) {
        if prepared.is_empty() {
            return;
        }
        let mut value = shard.to_be_bytes().to_vec();
        value.extend_from_slice(&body.encode());
        value.extend_from_slice(&id.bytes());
        for (index, v) in prepared {
            tx.set(&self.secondary_key(&meta.name, *index, v, id), &value);
        }
    }

    /// Clears the secondary index entries `doc` (document `id` as stored) gave. A value that no
    /// longer fits its index's type had no entry; it is skipped.
    pub fn clear_entries(
        &self,
        tx: &Transaction,
        meta: &BucketMeta,
        doc: &Document,
        id: &ObjectId,
    ) {
        for def in &meta.indexes {
            if let Ok(values) = index::entries(def, doc) {
                for v in values {
                    tx.clear(&self.secondary_key(&meta.name, def.id, &v, id));
                }
            }
        }
    }

    /// Adds indexes to bucket `name`. Each starts `READY` when the bucket holds no document, and
    /// `BUILDING` otherwise. Returns them with their ids.
    ///
    /// # Errors
    ///
    /// `Schema` when a name or field is taken; `NoSuchBucket`, `BeingRemoved`; metadata errors.
    pub async fn create_indexes(
        &self,
        tx: &Transaction,
        name: &str,
        defs: Vec<IndexDef>,
    ) -> Result<Vec<(IndexDef, IndexState)>> {
        let mut meta = self.get(tx, name).await?;
        let empty = self.scan(tx, &meta, None, 1, false).await?.is_empty();
        let mut out = Vec::new();
        for mut def in defs {
            let selectors = def.selectors();
            if def.name == PRIMARY || meta.indexes.iter().any(|d| d.name == def.name) {
                return Err(BucketError::Schema(format!(
                    "An index named '{}' already exists",
                    def.name
                )));
            }
            let taken = selectors == "_id"
                || meta
                    .indexes
                    .iter()
                    .any(|d| d.compound == def.compound && d.selectors() == selectors);
            if taken {
                return Err(BucketError::Schema(format!(
                    "An index on field '{selectors}' already exists"
                )));
            }
            def.id = meta.next_index;
            meta.next_index += 1;
            let state = IndexState {
                status: if empty { READY } else { BUILDING }.to_owned(),
                cursor: None,
                error: None,
            };
            self.set_index_state(tx, name, def.id, &state)?;
            meta.indexes.push(def.clone());
            out.push((def, state));
        }
        self.put_meta(tx, &meta)?;
        Ok(out)
    }

    /// Drops index `index` of bucket `name`: from now on no write maintains it and no query uses
    /// it; its entries stay until `clear_dropped` has cleared them (reference 4.6.8: the index is
    /// DROPPED and a background task cleans it up). Returns its id.
    ///
    /// # Errors
    ///
    /// `Schema` for the primary index and for an index already dropped whose entries are still
    /// being cleared; `NoSuchIndex`; metadata errors.
    pub async fn drop_index(&self, tx: &Transaction, name: &str, index: &str) -> Result<u64> {
        if index == PRIMARY {
            return Err(BucketError::Schema("Cannot drop the primary index".into()));
        }
        let mut meta = self.get(tx, name).await?;
        let Some(pos) = meta.indexes.iter().position(|d| d.name == index) else {
            if meta.dropped.iter().any(|d| d.name == index) {
                return Err(BucketError::Schema(format!(
                    "Index '{index}' is already dropped and its status cannot be modified."
                )));
            }
            return Err(BucketError::NoSuchIndex(index.to_owned()));
        };
        let def = meta.indexes.remove(pos);
        meta.dropped.push(DroppedIndex { id: def.id, name: def.name });
        self.put_meta(tx, &meta)?;
        // A build still running sees the index gone and stops.
        tx.clear(&self.status_key(name, def.id));
        Ok(def.id)
    }

    /// One step of clearing dropped index `id` of bucket `name`: clears up to `limit` of its
    /// entries, or, when none is left, forgets the index. Returns whether it is gone. Writes cannot
    /// add entries meanwhile: a write that read the bucket's metadata before the drop conflicts
    /// with it, and every later one no longer knows the index.
    ///
    /// # Errors
    ///
    /// `NoSuchBucket`, `BeingRemoved` (`PURGE` clears everything); metadata errors.
    pub async fn clear_dropped(
        &self,
        tx: &Transaction,
        name: &str,
        id: u64,
        limit: usize,
    ) -> Result<bool> {
        let mut meta = self.get(tx, name).await?;
        if !meta.dropped.iter().any(|d| d.id == id) {
            return Ok(true);
        }
        let (b, e) = Subspace::from_bytes(self.secondary_prefix(name, id)).range();
        // A snapshot read: nothing else writes these keys any more, and the clear conflicts with
        // nothing it need not.
        let kvs = tx.get_range(&RangeOption::new(b.clone(), e).limit(limit), true).await?;
        match kvs.kvs.last() {
            Some(last) => {
                tx.clear_range(&b, &kronotop_meta::types::key_after(&last.key));
                Ok(false)
            }
            None => {
                meta.dropped.retain(|d| d.id != id);
                self.put_meta(tx, &meta)?;
                Ok(true)
            }
        }
    }

    /// The build state of index `id`; `snapshot` reads add no conflict (what query planning
    /// wants: a build finishing does not abort a query).
    ///
    /// # Errors
    ///
    /// Metadata errors; `BadMetadata`.
    pub async fn index_state(
        &self,
        tx: &Transaction,
        bucket: &str,
        id: u64,
        snapshot: bool,
    ) -> Result<IndexState> {
        match tx.get(&self.status_key(bucket, id), snapshot).await? {
            Some(raw) => {
                serde_json::from_slice(&raw).map_err(|e| BucketError::BadMetadata(e.to_string()))
            }
            None => Ok(IndexState { status: READY.into(), cursor: None, error: None }),
        }
    }

    /// Records index `id`'s build state.
    ///
    /// # Errors
    ///
    /// `BadMetadata` when it cannot be encoded.
    pub fn set_index_state(
        &self,
        tx: &Transaction,
        bucket: &str,
        id: u64,
        state: &IndexState,
    ) -> Result<()> {
        let raw = serde_json::to_vec(state).map_err(|e| BucketError::BadMetadata(e.to_string()))?;
        tx.set(&self.status_key(bucket, id), &raw);
        Ok(())
    }

    /// Up to `limit` entries of a secondary index in `[begin, end)` (whole keys), in key order
    /// (reversed when `reverse`): each key with the document's location.
    ///
    /// # Errors
    ///
    /// Metadata errors; `BadMetadata` for a malformed entry.
    pub async fn scan_secondary(
        &self,
        tx: &Transaction,
        begin: Vec<u8>,
        end: Vec<u8>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, Location)>> {
        let opt = RangeOption::new(begin, end).limit(limit).reverse(reverse);
        let kvs = tx.get_range(&opt, false).await?;
        let mut out = Vec::with_capacity(kvs.kvs.len());
        for kv in kvs.kvs {
            let v = &kv.value;
            let (Some(shard), Some(body), Some(id)) = (
                v.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
                v.get(4..24).and_then(EntryMetadata::decode),
                v.get(24..36).and_then(|b| <[u8; 12]>::try_from(b).ok()),
            ) else {
                return Err(BucketError::BadMetadata("secondary index entry".into()));
            };
            out.push((kv.key.to_vec(), Location { id: ObjectId::from_bytes(id), shard, body }));
        }
        Ok(out)
    }

    /// Secondary index entries a build writes for the document at `at`: like an insert's, and
    /// harmless when a write has made them already.
    ///
    /// # Errors
    ///
    /// As `prepare_entries`, for this one index.
    pub async fn build_entries(
        &self,
        tx: &Transaction,
        meta: &BucketMeta,
        def: &IndexDef,
        doc: &Document,
        at: &Location,
    ) -> Result<()> {
        let prepared = self
            .prepare_entries(
                tx,
                meta,
                std::slice::from_ref(def),
                doc,
                &at.id,
                &mut Default::default(),
            )
            .await?;
        self.write_entries(tx, meta, &prepared, &at.id, at.shard, &at.body);
        Ok(())
    }
}

/// Walking a plan.
impl Buckets {
    /// Up to `limit` entries of `scan`'s index in `[begin, end)`, each key with its document's
    /// location.
    async fn scan_keys(
        &self,
        tx: &Transaction,
        scan: &Scan,
        begin: Vec<u8>,
        end: Vec<u8>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Location)>> {
        if scan.index.is_some() {
            return self.scan_secondary(tx, begin, end, limit, scan.reverse).await;
        }
        let opt = RangeOption::new(begin, end).limit(limit).reverse(scan.reverse);
        let kvs = tx.get_range(&opt, false).await?;
        let mut out = Vec::with_capacity(kvs.kvs.len());
        for kv in kvs.kvs {
            let at = self.primary_location(&kv.key, &kv.value)?;
            out.push((kv.key.to_vec(), at));
        }
        Ok(out)
    }

    /// The next up to `want` entries of `scan` past `position` (the key of the last entry an
    /// earlier call returned), and whether the scan is exhausted.
    ///
    /// # Errors
    ///
    /// Metadata errors; `BadMetadata` for malformed entries.
    pub async fn next_chunk(
        &self,
        tx: &Transaction,
        scan: &Scan,
        position: Option<&[u8]>,
        want: usize,
    ) -> Result<(Vec<(Vec<u8>, Location)>, bool)> {
        let mut out = Vec::new();
        let ranges: Vec<&(Vec<u8>, Vec<u8>)> = if scan.reverse {
            scan.ranges.iter().rev().collect()
        } else {
            scan.ranges.iter().collect()
        };
        for (b, e) in ranges {
            let (mut b, mut e) = (b.clone(), e.clone());
            if let Some(p) = position {
                if scan.reverse {
                    if p < e.as_slice() {
                        e = p.to_vec();
                    }
                } else {
                    let mut next = p.to_vec();
                    next.push(0);
                    if next > b {
                        b = next;
                    }
                }
            }
            if b >= e {
                continue;
            }
            let got = self.scan_keys(tx, scan, b, e, want - out.len()).await?;
            out.extend(got);
            if out.len() >= want {
                return Ok((out, false));
            }
        }
        Ok((out, true))
    }
}
