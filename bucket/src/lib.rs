//! Buckets: collections of BSON documents whose bodies live in a bucket shard's Volume and whose
//! metadata and primary index (`_id` to shard and body location) live in the metadata store,
//! written in the same transaction as the bodies' entries.
//!
//! It owns bucket metadata, the primary index, and the document operations queries, cursors,
//! updates and deletes are built on: insert (with `_id` generation, validation and uniqueness),
//! reading in `_id` order from a position, delete, replace, remove and purge. Invariant: an index
//! entry is committed in the transaction that appends its body, after the body's bytes are synced
//! (the Volume's own invariant), so an index entry never points at missing bytes. It depends on
//! `kronotop-query`, `kronotop-volume` and `kronotop-meta`; never on the server.

use bson::oid::ObjectId;
use bson::{Bson, Document};
use kronotop_meta::tuple::{Bytes as TupleBytes, Subspace};
use kronotop_meta::{MetaError, RangeOption, Transaction};
use kronotop_volume::{Deletion, EntryMetadata, Volume, VolumeError};

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
    #[error("bucket metadata is damaged: {0}")]
    BadMetadata(String),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl BucketError {
    /// The RESP error prefix.
    pub fn prefix(&self) -> &'static str {
        match self {
            BucketError::NoSuchBucket(_) => "NOSUCHBUCKET",
            BucketError::AlreadyExists(_) => "BUCKETALREADYEXISTS",
            BucketError::DuplicateKey(_) => "DUPLICATEKEY",
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
}

const META: &str = "m";
/// The primary index: `_id` to shard and body location. Nothing else is kept per document: the
/// Volume's segment index leads from a body's location to its entry (what deleting needs), and
/// the body holds its `_id` (what repointing the index after a vacuum move needs).
const INDEX: &str = "i";

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
    s: Subspace,
}

impl Buckets {
    pub fn new(s: Subspace) -> Buckets {
        Buckets { s }
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
        let meta = serde_json::json!({ "prefix": hex::encode(prefix), "shards": shards });
        tx.set(&self.meta_key(name), meta.to_string().as_bytes());
        Ok(true)
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
        #[derive(serde::Deserialize)]
        struct Stored {
            prefix: String,
            #[serde(default)]
            shards: Vec<u32>,
            #[serde(default)]
            removed: bool,
        }
        let v: Stored =
            serde_json::from_slice(&raw).map_err(|e| BucketError::BadMetadata(e.to_string()))?;
        let mut prefix = [0u8; 8];
        hex::decode_to_slice(&v.prefix, &mut prefix)
            .map_err(|_| BucketError::BadMetadata("prefix".into()))?;
        Ok(BucketMeta { name: name.to_owned(), prefix, shards: v.shards, removed: v.removed })
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
        for mut d in docs {
            let id = match d.get("_id") {
                None => {
                    let id = ObjectId::new();
                    // `_id` first, as MongoDB stores it.
                    let mut with_id = Document::new();
                    with_id.insert("_id", id);
                    with_id.extend(d);
                    d = with_id;
                    id
                }
                Some(Bson::ObjectId(id)) => *id,
                // A 24-hex string (what JSON replies show) is taken as the ObjectId it spells.
                Some(Bson::String(s)) if ObjectId::parse_str(s).is_ok() => {
                    let id = ObjectId::parse_str(s).map_err(|_| BucketError::IdNotObjectId)?;
                    d.insert("_id", id);
                    id
                }
                Some(_) => return Err(BucketError::IdNotObjectId),
            };
            if ids.contains(&id) || tx.get(&self.index_key(&meta.name, &id), false).await?.is_some()
            {
                return Err(BucketError::DuplicateKey(id.to_hex()));
            }
            let mut body = Vec::new();
            d.to_writer(&mut body).map_err(|e| BucketError::BadMetadata(e.to_string()))?;
            ids.push(id);
            bodies.push(body);
        }
        let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
        let appended = volume.append(db, tx, meta.prefix, &refs).await?;
        for (id, a) in ids.iter().zip(appended) {
            self.point(tx, meta, id, shard, &a);
        }
        Ok(ids)
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

    /// Replaces the document at `at` with `doc` (same `_id`): a new body, the old one deleted
    /// (returned when `tx` appended it, as `delete` does).
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
        doc: &Document,
    ) -> Result<Option<PendingBody>> {
        let mut body = Vec::new();
        doc.to_writer(&mut body).map_err(|e| BucketError::BadMetadata(e.to_string()))?;
        let pending = self.delete(tx, meta, volume, at).await?;
        let appended = volume.append(db, tx, meta.prefix, &[&body]).await?;
        if let Some(a) = appended.first() {
            self.point(tx, meta, &at.id, at.shard, a);
        }
        Ok(pending)
    }

    /// `BUCKET.REMOVE`: marks the bucket removed.
    ///
    /// # Errors
    ///
    /// `NoSuchBucket`, `BeingRemoved`; metadata errors.
    pub async fn remove(&self, tx: &Transaction, name: &str) -> Result<()> {
        let meta = self.get(tx, name).await?;
        let v = serde_json::json!({
            "prefix": hex::encode(meta.prefix),
            "shards": meta.shards,
            "removed": true,
        });
        tx.set(&self.meta_key(name), v.to_string().as_bytes());
        Ok(())
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
                    self.delete(tx, &meta, &v, at).await?;
                }
                // A shard not hosted here: drop the index entry; the body is garbage for that
                // volume's vacuum.
                None => tx.clear(&self.index_key(&meta.name, &at.id)),
            }
        }
        if docs.len() < batch {
            let (b, e) = self.s.subspace(&(INDEX, name)).range();
            tx.clear_range(&b, &e);
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
            let (_, _, id): (String, String, TupleBytes<'_>) =
                self.s.unpack(&kv.key).map_err(|e| BucketError::BadMetadata(e.to_string()))?;
            let id = <[u8; 12]>::try_from(id.as_ref())
                .map(ObjectId::from_bytes)
                .map_err(|_| BucketError::BadMetadata("index key".into()))?;
            let v = &kv.value;
            let (Some(shard), Some(body)) = (
                v.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
                v.get(4..).and_then(EntryMetadata::decode),
            ) else {
                return Err(BucketError::BadMetadata("index entry".into()));
            };
            out.push(Location { id, shard, body });
        }
        Ok(out)
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
