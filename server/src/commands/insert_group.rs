//! Grouped inserts: auto-commit `BUCKET.INSERT`s into the same bucket that arrive while earlier
//! ones are being built or committed share one metadata transaction.
//!
//! An auto-commit insert in a transaction of its own pays for a read version, the bucket's
//! metadata and the volume's fence read again, the volume's statistics keys updated, one record
//! in the metadata log and one trip through the committer, all for one document: with fifty
//! clients inserting single documents that was most of the server's time, while one command of
//! 100 documents costs a fraction of it per document. So the commands queue per bucket, and one
//! task at a time (the builder) takes what has queued, inserts it all in one transaction, hands
//! the commit to a task of its own and takes the next group (waiting while `MAX_IN_FLIGHT` groups
//! commit): groups form from what arrives meanwhile, as commits batch in a group commit, and a
//! lone insert waits for nothing.
//!
//! What a client sees does not change. Each command is answered only after its group's commit
//! is durable, with its own ids. The commands of a group are independent: when the group's
//! transaction fails (one document's `_id` is taken, say, or the commit conflicts), nothing of it
//! committed, and each command runs again in a transaction of its own, so it gets the answer it
//! would have got alone (`DUPLICATEKEY` for that one, success for the others). Inserts inside
//! `BEGIN`/`COMMIT` never group: they belong to their session's transaction.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use bson::Document;
use bson::oid::ObjectId;
use bytes::Bytes;
use kronotop_bucket::Buckets;
use kronotop_query::decode_document;
use tokio::sync::oneshot;

use super::bucket::local_shard;
use crate::error::CommandError;
use crate::node::Node;

/// Most document bytes (as the client sent them) one group takes, so that its Volume append
/// stays small enough to be logged as redo records in its commit record instead of synced before
/// it (the Volume's `REDO_MAX_APPEND`, 16 KiB with the entry headers; JSON and BSON sizes
/// differ a little, and a group that comes out larger is only synced instead). A command larger
/// than this on its own does not queue at all: it already has a transaction's worth of documents.
const GROUP_BYTES: usize = 15 * 1024;

/// Groups of one bucket whose commits may be under way at once. With one, the builder waits for
/// each commit, and the committer idles while the next group is built. When the metadata store's
/// committer synced each batch itself, more than two only made smaller groups (with 50 clients
/// inserting 1 KiB documents, two alternating runs gave 17.4k and 19.1k inserts/s at 2, 18.6k and
/// 16.5k at 4, 17.8k and 14.6k at 8). Once its syncer synced while the committer logged the next
/// batches, more groups in flight shared each sync (seventeenth session: medians of 35.5k at 2,
/// 40.6k at 8 and 41.2k at 16). Now that the syncer keeps syncing between batches (warm syncs, so
/// a sync costs a fraction of what it did), the cost of each group is what counts again, and fewer,
/// larger groups win: three alternating runs each (docs/benchmarks.md, nineteenth session) gave
/// 57.3k–62.7k at 8, 64.4k–68.3k at 4, 64.0k–71.7k at 3, 70.0k–73.8k at 2 (six runs) and
/// 61.8k–72.5k at 1.
const MAX_IN_FLIGHT: usize = 2;

/// Times an auto-commit insert is run when its commit conflicts: a conflict means another write
/// changed what this one read (a unique index's value, the bucket's metadata), and running it
/// again gives the client the real outcome (`DUPLICATEKEY`, or success) rather than the conflict.
const INSERT_ATTEMPTS: usize = 5;

/// A bucket's queue: the buckets subspace of the namespace (its packed prefix) and the name.
type GroupKey = (Vec<u8>, String);

type Answer = oneshot::Sender<Result<Vec<ObjectId>, CommandError>>;

/// One queued command.
struct Member {
    /// The documents as sent, decoded again if the command must run alone.
    raw: Vec<Bytes>,
    docs: Vec<Document>,
    answer: Answer,
}

/// The size of a command's documents as sent, which `GROUP_BYTES` limits.
fn size(raw: &[Bytes]) -> usize {
    raw.iter().map(Bytes::len).sum()
}

#[derive(Default)]
struct Queue {
    members: VecDeque<Member>,
    /// Whether a builder takes this queue's members.
    building: bool,
    /// Groups of this bucket whose commit has not finished.
    in_flight: usize,
    /// Woken when a commit finishes, for a builder waiting for room.
    room: Arc<tokio::sync::Notify>,
}

/// The insert queues of this member, by bucket. A bucket has an entry while its builder runs or
/// one of its groups commits.
#[derive(Default)]
pub struct InsertGroups {
    queues: Mutex<HashMap<GroupKey, Queue>>,
}

impl std::fmt::Debug for InsertGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InsertGroups").finish_non_exhaustive()
    }
}

/// Inserts `docs` (decoded from `raw`) into bucket `name` of `buckets` in an auto-commit
/// transaction, shared with other commands inserting into the same bucket at the same time.
/// Returns the ids in order once they are durable.
///
/// # Errors
///
/// What the insert would fail with in a transaction of its own.
pub(super) async fn insert(
    node: &Arc<Node>,
    buckets: &Buckets,
    name: &str,
    raw: &[Bytes],
    docs: Vec<Document>,
) -> Result<Vec<ObjectId>, CommandError> {
    if size(raw) > GROUP_BYTES {
        return alone(node, buckets, name, raw, Some(docs)).await;
    }
    let (answer, answered) = oneshot::channel();
    let member = Member { raw: raw.to_vec(), docs, answer };
    let key = (buckets.subspace().bytes().to_vec(), name.to_owned());
    let start = {
        let mut queues = node.insert_groups.queues.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(q) = queues.get_mut(&key) {
            q.members.push_back(member);
            !std::mem::replace(&mut q.building, true)
        } else {
            let members = VecDeque::from([member]);
            queues.insert(key.clone(), Queue { members, building: true, ..Queue::default() });
            true
        }
    };
    if start {
        tokio::spawn(build(Arc::clone(node), buckets.clone(), key));
    }
    answered
        .await
        .map_err(|_| CommandError::err("the insert was dropped before it was answered"))?
}

impl InsertGroups {
    /// Runs `f` on the queue of `key` (if it still has one) and removes the queue once it is
    /// idle: no builder, no commit under way (so no member either).
    fn update<R>(&self, key: &GroupKey, f: impl FnOnce(&mut Queue) -> R) -> Option<R> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        let q = queues.get_mut(key)?;
        let r = f(q);
        if !q.building && q.in_flight == 0 {
            queues.remove(key);
        }
        Some(r)
    }
}

/// A running builder. It ends by finding its queue empty, under the queue's lock, so a command
/// queued meanwhile is either taken by it or starts a new builder. Should its task panic instead,
/// the commands still queued are dropped (they answer with an error) rather than left waiting for
/// a builder nobody starts.
struct Building<'a> {
    node: &'a Node,
    key: &'a GroupKey,
    done: bool,
}

impl Drop for Building<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.node.insert_groups.update(self.key, |q| {
                q.building = false;
                q.members.clear();
            });
        }
    }
}

/// One group's commit under way; over (and room for the builder) when dropped.
struct InFlight {
    node: Arc<Node>,
    key: GroupKey,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.node.insert_groups.update(&self.key, |q| {
            q.in_flight -= 1;
            q.room.notify_one();
        });
    }
}

/// What a builder does next.
enum Next {
    Group(Vec<Member>),
    WaitForRoom(Arc<tokio::sync::Notify>),
    Stop,
}

/// The builder of one bucket's groups: runs while its queue has members.
async fn build(node: Arc<Node>, buckets: Buckets, key: GroupKey) {
    let mut building = Building { node: &node, key: &key, done: false };
    loop {
        let next = node.insert_groups.update(&key, |q| {
            if q.members.is_empty() {
                q.building = false;
                Next::Stop
            } else if q.in_flight >= MAX_IN_FLIGHT {
                Next::WaitForRoom(Arc::clone(&q.room))
            } else {
                q.in_flight += 1;
                let mut group = Vec::new();
                let mut bytes = 0;
                while let Some(m) = q.members.front() {
                    let more = size(&m.raw);
                    if !group.is_empty() && bytes + more > GROUP_BYTES {
                        break;
                    }
                    bytes += more;
                    group.extend(q.members.pop_front());
                }
                Next::Group(group)
            }
        });
        match next.unwrap_or(Next::Stop) {
            Next::Group(group) => {
                let in_flight = InFlight { node: Arc::clone(&node), key: key.clone() };
                run_group(&node, &buckets, &key, group, in_flight).await;
            }
            Next::WaitForRoom(room) => room.notified().await,
            Next::Stop => {
                building.done = true;
                return;
            }
        }
    }
}

/// Builds one group's transaction and leaves its commit (and the answers) to a task of its own.
async fn run_group(
    node: &Arc<Node>,
    buckets: &Buckets,
    key: &GroupKey,
    mut group: Vec<Member>,
    in_flight: InFlight,
) {
    let name = key.1.as_str();
    let mut docs = Vec::with_capacity(group.iter().map(|m| m.docs.len()).sum());
    for m in &mut group {
        docs.append(&mut m.docs);
    }
    let built = uncommitted(node, buckets, name, docs).await;
    let buckets = buckets.clone();
    tokio::spawn(async move {
        let committed = match built {
            Ok((tx, ids)) => tx.commit().await.map(|_| ids).map_err(CommandError::from),
            Err(e) => Err(e),
        };
        let InFlight { node, key } = &in_flight;
        let (node, name) = (Arc::clone(node), key.1.clone());
        // The commit is over: the builder may start the next group while these are answered.
        drop(in_flight);
        let failed = match committed {
            Ok(ids) => {
                node.stats.insert_groups.fetch_add(1, Ordering::Relaxed);
                node.stats.grouped_inserts.fetch_add(group.len() as u64, Ordering::Relaxed);
                let mut ids = ids.into_iter();
                for m in group {
                    let _ = m.answer.send(Ok(ids.by_ref().take(m.raw.len()).collect()));
                }
                return;
            }
            Err(e) => e,
        };
        // A lone command's error is its own, unless a conflict asks for another attempt.
        if let [_] = group.as_slice()
            && !matches!(&failed, CommandError::Meta(e) if e.is_retryable())
        {
            for m in group {
                let _ = m.answer.send(Err(failed.clone()));
            }
            return;
        }
        node.stats.insert_groups_split.fetch_add(1, Ordering::Relaxed);
        for m in group {
            let result = alone(&node, &buckets, &name, &m.raw, None).await;
            let _ = m.answer.send(result);
        }
    });
}

/// Inserts one command's documents in transactions of their own, run again on conflicts. `docs`
/// are `raw` decoded, when the caller has them: an attempt consumes them, and each later attempt
/// decodes `raw` again (new generated ids included).
///
/// # Errors
///
/// The insert's.
async fn alone(
    node: &Arc<Node>,
    buckets: &Buckets,
    name: &str,
    raw: &[Bytes],
    docs: Option<Vec<Document>>,
) -> Result<Vec<ObjectId>, CommandError> {
    let decode = || raw.iter().map(|d| decode_document(d)).collect::<Result<Vec<_>, _>>();
    let mut docs = match docs {
        Some(d) => d,
        None => decode()?,
    };
    let mut attempt = 1;
    loop {
        let (tx, ids) = uncommitted(node, buckets, name, docs).await?;
        match tx.commit().await {
            Ok(_) => return Ok(ids),
            Err(e) if e.is_retryable() && attempt < INSERT_ATTEMPTS => {
                // The bodies the failed attempt appended are unreferenced bytes now.
                attempt += 1;
                docs = decode()?;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Inserts `docs` into bucket `name` in a new transaction, left for the caller to commit.
///
/// # Errors
///
/// The insert's, before its commit.
async fn uncommitted(
    node: &Node,
    buckets: &Buckets,
    name: &str,
    docs: Vec<Document>,
) -> Result<(kronotop_meta::Transaction, Vec<ObjectId>), CommandError> {
    let tx = node.meta.create_trx()?;
    let ids = insert_in(node, buckets, &tx, name, docs).await?;
    Ok((tx, ids))
}

/// Inserts `docs` into bucket `name` within `tx`, on this member's shard of the bucket.
///
/// # Errors
///
/// `REJECT` when this member hosts none of the bucket's shards; the bucket's errors.
pub(super) async fn insert_in(
    node: &Node,
    buckets: &Buckets,
    tx: &kronotop_meta::Transaction,
    name: &str,
    docs: Vec<Document>,
) -> Result<Vec<ObjectId>, CommandError> {
    let meta = buckets.get(tx, name).await?;
    let (shard, volume) = local_shard(node, &meta).await?;
    Ok(buckets.insert(&node.meta, tx, &meta, shard, &volume, docs).await?)
}
