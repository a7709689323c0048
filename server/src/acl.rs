//! ACL users: Redis's rule syntax (`on`, `>password`, `~pattern`, `+@category`, `-command`, …)
//! plus namespace patterns (`ns~pattern`) for the ZMap and bucket commands, which work inside a
//! namespace rather than on Redis keys.
//!
//! Users live in the metadata store (`["kronotop", <cluster>, "acl"]`: one JSON value per user
//! and a version counter), so every member enforces the same rules. Each member keeps a copy,
//! reloaded when the version changes (a metadata watch) and at least every few seconds. Passwords
//! are kept only as salted SHA-256 digests. Users of the configuration file (`auth.users`,
//! `auth.requirepass`) keep working with every permission unless a stored user of the same name
//! replaces them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kronotop_meta::Database;
use kronotop_meta::directory::DirectoryLayer;
use kronotop_meta::tuple::Subspace;
use serde::{Deserialize, Serialize};

use crate::commands::CommandSpec;
use crate::node::PasswordHash;

/// A stored user. Field order is the order `ACL LIST` describes them in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclUser {
    pub name: String,
    pub enabled: bool,
    /// Any password is accepted.
    pub nopass: bool,
    /// Salted digests, in `PasswordHash::display` form.
    pub passwords: Vec<String>,
    /// Command rules in the order given, the last matching one deciding: `+@all`, `-config`,
    /// `+client|id`.
    pub commands: Vec<String>,
    /// Glob patterns of the Redis keys the user may touch (`*` for all).
    pub keys: Vec<String>,
    /// Glob patterns of the namespaces the user may work in with ZMap, bucket and namespace
    /// commands (`*` for all).
    pub namespaces: Vec<String>,
}

impl AclUser {
    /// A user created by `ACL SETUSER` before any rule: disabled, no password, no permission,
    /// as in Redis.
    pub fn new(name: &str) -> AclUser {
        AclUser {
            name: name.to_owned(),
            enabled: false,
            nopass: false,
            passwords: Vec::new(),
            commands: vec!["-@all".to_owned()],
            keys: Vec::new(),
            namespaces: Vec::new(),
        }
    }

    /// A user of the configuration file: enabled, every permission.
    pub fn full(name: &str, password: Option<&PasswordHash>) -> AclUser {
        AclUser {
            name: name.to_owned(),
            enabled: true,
            nopass: password.is_none(),
            passwords: password.map(PasswordHash::display).into_iter().collect(),
            commands: vec!["+@all".to_owned()],
            keys: vec!["*".to_owned()],
            namespaces: vec!["*".to_owned()],
        }
    }

    /// Applies `ACL SETUSER` rules in order; on an error nothing is applied (the caller keeps
    /// the old user).
    ///
    /// # Errors
    ///
    /// Redis's `Error in ACL SETUSER modifier '<rule>': …` texts.
    pub fn apply(&mut self, rules: &[&str]) -> Result<(), String> {
        let mut next = self.clone();
        for rule in rules {
            next.apply_one(rule)
                .map_err(|why| format!("Error in ACL SETUSER modifier '{rule}': {why}"))?;
        }
        *self = next;
        Ok(())
    }

    fn apply_one(&mut self, rule: &str) -> Result<(), &'static str> {
        let lower = rule.to_ascii_lowercase();
        match lower.as_str() {
            "on" => self.enabled = true,
            "off" => self.enabled = false,
            "nopass" => {
                self.nopass = true;
                self.passwords.clear();
            }
            "resetpass" => {
                self.nopass = false;
                self.passwords.clear();
            }
            "allkeys" => self.keys = vec!["*".to_owned()],
            "resetkeys" => self.keys.clear(),
            "allnamespaces" => self.namespaces = vec!["*".to_owned()],
            "resetnamespaces" => self.namespaces.clear(),
            "allcommands" => self.commands = vec!["+@all".to_owned()],
            "nocommands" => self.commands = vec!["-@all".to_owned()],
            // There are no Pub/Sub channels to protect; clients send these with other rules.
            "allchannels" | "resetchannels" => {}
            "reset" => *self = AclUser::new(&self.name),
            _ => return self.apply_pattern_or_command(rule),
        }
        Ok(())
    }

    fn apply_pattern_or_command(&mut self, rule: &str) -> Result<(), &'static str> {
        if let Some(password) = rule.strip_prefix('>') {
            let hash = PasswordHash::new(password.as_bytes())
                .map_err(|_| "no randomness available for the password salt")?;
            if !self
                .passwords
                .iter()
                .any(|h| PasswordHash::parse(h).is_some_and(|p| p.verify(password.as_bytes())))
            {
                self.passwords.push(hash.display());
            }
            self.nopass = false;
        } else if let Some(password) = rule.strip_prefix('<') {
            let before = self.passwords.len();
            self.passwords
                .retain(|h| !PasswordHash::parse(h).is_some_and(|p| p.verify(password.as_bytes())));
            if self.passwords.len() == before {
                return Err("no such password");
            }
        } else if let Some(pattern) = rule.strip_prefix("ns~") {
            push_pattern(&mut self.namespaces, pattern);
        } else if let Some(pattern) = rule.strip_prefix('~') {
            push_pattern(&mut self.keys, pattern);
        } else if rule.starts_with('#') || rule.starts_with('!') {
            return Err("password digests are not supported: set passwords with >password");
        } else if rule.starts_with('%') || rule.starts_with('&') || rule.starts_with('(') {
            return Err("read/write key permissions, channels and selectors are not supported");
        } else if let Some(name) = rule.strip_prefix('+').or_else(|| rule.strip_prefix('-')) {
            if !known_command_or_category(name) {
                return Err("Unknown command or category name in ACL");
            }
            let rule = rule.to_ascii_lowercase();
            // `+@all` and `-@all` decide every command, so the rules before them are moot.
            if name.eq_ignore_ascii_case("@all") {
                self.commands.clear();
            }
            self.commands.push(rule);
        } else {
            return Err("Syntax error");
        }
        Ok(())
    }

    /// Whether the user may run `spec` (a subcommand's own spec for containers); `container`
    /// is the top-level command of a subcommand.
    pub fn may_run(&self, container: &CommandSpec, spec: &CommandSpec) -> bool {
        let mut allowed = false;
        for rule in &self.commands {
            let (plus, name) = rule.split_at(1);
            let matched = match name.strip_prefix('@') {
                Some("all") => true,
                Some(category) => {
                    spec.categories.iter().any(|c| c.strip_prefix('@') == Some(category))
                }
                None => name == spec.full || name == container.full,
            };
            if matched {
                allowed = plus == "+";
            }
        }
        allowed
    }

    /// Whether the user may touch the Redis key `key`.
    pub fn may_access_key(&self, key: &[u8]) -> bool {
        self.keys
            .iter()
            .any(|p| p == "*" || kronotop_redis::glob::matches(p.as_bytes(), key, false))
    }

    /// Whether the user may work in namespace `ns`.
    pub fn may_use_namespace(&self, ns: &str) -> bool {
        self.namespaces
            .iter()
            .any(|p| p == "*" || kronotop_redis::glob::matches(p.as_bytes(), ns.as_bytes(), false))
    }

    /// Whether a password opens this user.
    pub fn accepts(&self, password: &[u8]) -> bool {
        self.enabled
            && (self.nopass
                || self
                    .passwords
                    .iter()
                    .any(|h| PasswordHash::parse(h).is_some_and(|p| p.verify(password))))
    }

    /// Whether nothing is restricted, so the per-command checks can be skipped.
    pub fn unrestricted(&self) -> bool {
        self.commands == ["+@all"]
            && self.keys.iter().any(|k| k == "*")
            && self.namespaces.iter().any(|n| n == "*")
    }

    /// The rules that rebuild this user, as `ACL LIST` shows them.
    pub fn describe(&self) -> String {
        let mut parts = vec![if self.enabled { "on" } else { "off" }.to_owned()];
        if self.nopass {
            parts.push("nopass".to_owned());
        }
        parts.extend(self.passwords.iter().map(|h| format!("#{h}")));
        if self.keys.is_empty() {
            parts.push("resetkeys".to_owned());
        }
        parts.extend(self.keys.iter().map(|k| format!("~{k}")));
        if self.namespaces.is_empty() {
            parts.push("resetnamespaces".to_owned());
        }
        parts.extend(self.namespaces.iter().map(|n| format!("ns~{n}")));
        parts.extend(self.commands.iter().cloned());
        parts.join(" ")
    }
}

fn push_pattern(list: &mut Vec<String>, pattern: &str) {
    if !list.iter().any(|p| p == pattern) {
        list.push(pattern.to_owned());
    }
}

/// Whether `name` (after `+` or `-`) is a command, a `container|subcommand` or an `@category`.
fn known_command_or_category(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    if let Some(category) = name.strip_prefix('@') {
        return category == "all" || categories().iter().any(|c| c == category);
    }
    let (top, sub) = match name.split_once('|') {
        Some((t, s)) => (t, Some(s)),
        None => (name.as_str(), None),
    };
    crate::commands::COMMANDS.iter().any(|spec| {
        spec.full == top
            && sub.is_none_or(|s| spec.subcommands().iter().any(|x| x.full == format!("{top}|{s}")))
    })
}

/// Every ACL category the command table uses, without `@`, sorted; computed once, since the
/// table is static.
pub fn categories() -> &'static [String] {
    static CATEGORIES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    CATEGORIES.get_or_init(|| {
        let mut all: Vec<String> = crate::commands::COMMANDS
            .iter()
            .flat_map(|s| {
                s.categories.iter().chain(s.subcommands().iter().flat_map(|x| x.categories))
            })
            .map(|c| c.trim_start_matches('@').to_owned())
            .collect();
        all.sort();
        all.dedup();
        all
    })
}

/// Most failed `AUTH` attempts from one client address within `FAILURE_WINDOW` before further
/// attempts are refused until the window ends. Ten tries a minute stop a password guesser (a
/// few million guesses a day become a few thousand) and do not trouble a person who mistypes.
pub const MAX_AUTH_FAILURES: u32 = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at most; past it the oldest windows are forgotten, so a flood of addresses
/// cannot grow the table without bound.
const MAX_TRACKED_ADDRESSES: usize = 10_000;

/// The member's copy of the stored users, and the failed-`AUTH` counters.
#[derive(Debug, Default)]
pub struct Acl {
    users: RwLock<Arc<BTreeMap<String, Arc<AclUser>>>>,
    /// Bumped on every change of the copy; sessions compare it with the one they cached.
    pub version: AtomicU64,
    failures: Mutex<BTreeMap<IpAddr, (u32, Instant)>>,
}

impl Acl {
    /// The stored user `name`, if any.
    pub fn get(&self, name: &str) -> Option<Arc<AclUser>> {
        self.users.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(name).cloned()
    }

    /// Every stored user.
    pub fn all(&self) -> Arc<BTreeMap<String, Arc<AclUser>>> {
        Arc::clone(&self.users.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Replaces the copy.
    pub fn replace(&self, users: BTreeMap<String, Arc<AclUser>>) {
        let mut guard = self.users.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if **guard != users {
            *guard = Arc::new(users);
            self.version.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// How long `ip` must still wait before trying `AUTH` again, if it failed too often.
    pub fn locked_out(&self, ip: IpAddr) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (count, since) = failures.get(&ip)?;
        let elapsed = since.elapsed();
        (*count >= MAX_AUTH_FAILURES && elapsed < FAILURE_WINDOW).then(|| FAILURE_WINDOW - elapsed)
    }

    /// Counts a failed `AUTH` from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if failures.len() >= MAX_TRACKED_ADDRESSES && !failures.contains_key(&ip) {
            failures.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
            if failures.len() >= MAX_TRACKED_ADDRESSES {
                return;
            }
        }
        let entry = failures.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    /// Forgets `ip`'s failures after a successful `AUTH`.
    pub fn succeeded(&self, ip: IpAddr) {
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&ip);
    }
}

/// The stored users of a cluster in the metadata store.
#[derive(Debug, Clone)]
pub struct Store {
    db: Database,
    path: Vec<String>,
}

/// Errors of the store: the metadata store's (codes kept) or a damaged record.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Meta(#[from] kronotop_meta::MetaError),
    #[error("ACL record of user '{0}' is damaged")]
    Damaged(String),
    #[error("directory: {0}")]
    Directory(String),
}

impl Store {
    pub fn new(db: Database, mut root: Vec<String>) -> Store {
        root.push("acl".to_owned());
        Store { db, path: root }
    }

    async fn subspace(&self, tx: &kronotop_meta::Transaction) -> Result<Subspace, StoreError> {
        DirectoryLayer::default()
            .create_or_open(tx, &self.path, None)
            .await
            .map(|d| d.subspace().clone())
            .map_err(|e| StoreError::Directory(e.to_string()))
    }

    /// The users' directory if some user was ever stored: reading must not create it, so a
    /// member that only starts leaves the metadata store as it found it.
    async fn existing(
        &self,
        tx: &kronotop_meta::Transaction,
    ) -> Result<Option<Subspace>, StoreError> {
        let layer = DirectoryLayer::default();
        let dir_err =
            |e: kronotop_meta::directory::DirectoryError| StoreError::Directory(e.to_string());
        if !layer.exists(tx, &self.path).await.map_err(dir_err)? {
            return Ok(None);
        }
        Ok(Some(layer.open(tx, &self.path, None).await.map_err(dir_err)?.subspace().clone()))
    }

    /// Every stored user and the version key, read in one transaction.
    ///
    /// # Errors
    ///
    /// Metadata errors; a record that does not parse.
    pub async fn load(&self) -> Result<BTreeMap<String, Arc<AclUser>>, StoreError> {
        let tx = self.db.create_trx()?;
        let Some(space) = self.existing(&tx).await? else { return Ok(BTreeMap::new()) };
        let users = space.subspace(&("user",));
        let (begin, end) = users.range();
        // Users are few (each a small JSON value), so one read takes them all.
        let rows = tx.get_range(&kronotop_meta::RangeOption::new(begin, end), false).await?;
        let mut out = BTreeMap::new();
        for kv in rows.kvs {
            let name: String = users
                .unpack::<(String,)>(&kv.key)
                .map(|(n,)| n)
                .map_err(|_| StoreError::Damaged(String::from_utf8_lossy(&kv.key).into_owned()))?;
            let user: AclUser =
                serde_json::from_slice(&kv.value).map_err(|_| StoreError::Damaged(name.clone()))?;
            out.insert(name, Arc::new(user));
        }
        Ok(out)
    }

    /// Stores `user` (or deletes the user `name` when `None`) and bumps the version.
    ///
    /// # Errors
    ///
    /// Metadata errors.
    pub async fn save(&self, name: &str, user: Option<&AclUser>) -> Result<(), StoreError> {
        let value = user.map(|u| serde_json::to_vec(u).unwrap_or_default());
        self.db
            .run(|tx, _| {
                let value = value.clone();
                async move {
                    let space = self.subspace(&tx).await.map_err(|e| match e {
                        StoreError::Meta(m) => kronotop_meta::RunError::Meta(m),
                        other => kronotop_meta::RunError::Custom(Box::new(other)),
                    })?;
                    let key = space.pack(&("user", name));
                    match &value {
                        Some(v) => tx.set(&key, v),
                        None => tx.clear(&key),
                    }
                    tx.atomic_op(
                        &space.pack(&("version",)),
                        &1i64.to_le_bytes(),
                        kronotop_meta::MutationType::Add,
                    );
                    Ok(())
                }
            })
            .await
            .map_err(|e| match e {
                kronotop_meta::RunError::Meta(m) => StoreError::Meta(m),
                other => StoreError::Directory(other.to_string()),
            })
    }

    /// Completes when the version changes (or the watch fails).
    ///
    /// # Errors
    ///
    /// Metadata errors setting the watch up.
    pub async fn watch(&self) -> Result<kronotop_meta::MetaFuture<()>, StoreError> {
        let tx = self.db.create_trx()?;
        let Some(space) = self.existing(&tx).await? else {
            // Nothing stored yet: the periodic reload notices the first user.
            return Ok(Box::pin(std::future::pending()));
        };
        let watch = tx.watch(&space.pack(&("version",)));
        tx.commit().await?;
        Ok(watch)
    }
}

/// How often a member reloads the users even without a change notice, in case a watch was lost.
const RELOAD_AT_LEAST_EVERY: Duration = Duration::from_secs(5);

/// Keeps the member's copy equal to the stored users until the member shuts down.
pub async fn follow(node: Arc<crate::node::Node>) {
    loop {
        let watch = node.acl_store.watch().await;
        if let Err(err) = refresh(&node).await {
            tracing::warn!(%err, "cannot load the ACL users");
        }
        tokio::select! {
            () = node.shutdown.cancelled() => return,
            () = async {
                match watch {
                    Ok(w) => { let _ = w.await; }
                    Err(_) => std::future::pending::<()>().await,
                }
            } => {}
            () = tokio::time::sleep(RELOAD_AT_LEAST_EVERY) => {}
        }
    }
}

/// Reloads the stored users now, and closes this member's connections of users that were
/// deleted, as Redis does (a disabled user's open connections keep working, also as in Redis).
///
/// # Errors
///
/// The store's.
pub async fn refresh(node: &crate::node::Node) -> Result<(), StoreError> {
    let users = node.acl_store.load().await?;
    let before = node.auth.acl.all();
    let gone: Vec<&String> = before.keys().filter(|name| !users.contains_key(*name)).collect();
    // Most reloads delete nobody; only then are the connections looked at.
    for client in if gone.is_empty() { Vec::new() } else { node.clients.all() } {
        let user = client.info().user.clone();
        if gone.iter().any(|g| **g == user) && !node.auth.exists_configured(&user) {
            client.kill.cancel();
        }
    }
    node.auth.acl.replace(users);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> (&'static CommandSpec, &'static CommandSpec) {
        let (top, sub) = name.split_once('|').map_or((name, None), |(t, s)| (t, Some(s)));
        let top = crate::commands::COMMANDS.iter().find(|s| s.full == top).unwrap();
        let sub = sub.map_or(top, |s| {
            top.subcommands().iter().find(|x| x.full == format!("{}|{s}", top.full)).unwrap()
        });
        (top, sub)
    }

    fn may(user: &AclUser, name: &str) -> bool {
        let (top, sub) = spec(name);
        user.may_run(top, sub)
    }

    #[test]
    fn rules_apply_in_order_and_the_last_match_decides() {
        let mut u = AclUser::new("alice");
        assert!(!u.enabled && !may(&u, "get"));
        u.apply(&["on", ">secret", "~cache:*", "+@read", "-hget", "+client|id"]).unwrap();
        assert!(u.enabled && u.accepts(b"secret") && !u.accepts(b"wrong"));
        assert!(may(&u, "get") && !may(&u, "hget") && !may(&u, "set"));
        assert!(may(&u, "client|id") && !may(&u, "client|kill"));
        assert!(u.may_access_key(b"cache:1") && !u.may_access_key(b"other"));
        assert!(!u.may_use_namespace("global"));
        u.apply(&["+@all", "-@dangerous", "allnamespaces"]).unwrap();
        assert!(may(&u, "set") && !may(&u, "flushall") && u.may_use_namespace("a.b"));
        u.apply(&["<secret", "nopass"]).unwrap();
        assert!(u.accepts(b"anything"));
        u.apply(&["off"]).unwrap();
        assert!(!u.accepts(b"anything"), "a disabled user cannot log in");
    }

    #[test]
    fn bad_rules_change_nothing() {
        let mut u = AclUser::new("bob");
        u.apply(&["on"]).unwrap();
        let before = u.clone();
        let err = u.apply(&["+get", "+nosuchcommand"]).unwrap_err();
        assert_eq!(
            err,
            "Error in ACL SETUSER modifier '+nosuchcommand': Unknown command or category name in ACL"
        );
        assert_eq!(u, before);
        assert_eq!(
            u.apply(&["bogus"]).unwrap_err(),
            "Error in ACL SETUSER modifier 'bogus': Syntax error"
        );
        assert!(u.apply(&["<never-set"]).unwrap_err().ends_with("no such password"));
        assert!(u.apply(&["%R~x"]).is_err() && u.apply(&["#abc"]).is_err());
    }

    #[test]
    fn describe_rebuilds_the_user() {
        let mut u = AclUser::new("carol");
        u.apply(&["on", "nopass", "~a*", "ns~shop.*", "+@read"]).unwrap();
        assert_eq!(u.describe(), "on nopass ~a* ns~shop.* -@all +@read");
        let mut rebuilt = AclUser::new("carol");
        let described = u.describe();
        let rules: Vec<&str> = described.split(' ').collect();
        rebuilt.apply(&rules).unwrap();
        assert_eq!(rebuilt, u);
    }

    #[test]
    fn auth_failures_lock_an_address_out_for_a_while() {
        let acl = Acl::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..MAX_AUTH_FAILURES - 1 {
            acl.failed(ip);
        }
        assert!(acl.locked_out(ip).is_none());
        acl.failed(ip);
        assert!(acl.locked_out(ip).is_some_and(|d| d <= FAILURE_WINDOW));
        assert!(acl.locked_out("10.0.0.2".parse().unwrap()).is_none());
        acl.succeeded(ip);
        assert!(acl.locked_out(ip).is_none());
    }
}
