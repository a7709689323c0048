//! The Redis string, hash and key commands that run on one shard's `Keyspace`, with Redis 7's
//! semantics and error texts.
//!
//! The server routes a request to the shard of its keys (all in one slot), takes that shard's lock
//! and calls `execute` with the arguments after the command name; arity was checked from the
//! command table already. Commands that span shards (`SCAN`, `DBSIZE`, `FLUSHALL`…) and
//! transactions (`MULTI`, `WATCH`…) live in the server, which sees every shard.

use bytes::Bytes;

use crate::RedisError;
use crate::keyspace::{Blob, HashValue, Keyspace, Value};
use crate::number::{format_f64, parse_f64, parse_i64};
use crate::out::Out;
use crate::rand;

/// Largest string value, Redis's default `proto-max-bulk-len` (512 MB), which `APPEND` and
/// `SETRANGE` must not grow a string past.
pub const MAX_STRING_LEN: usize = 512 * 1024 * 1024;

/// Hashes with at most this many fields are returned whole by one `HSCAN` call, as Redis does for
/// its small (listpack) hashes, whose default limit `hash-max-listpack-entries` is 128.
const HSCAN_WHOLE: usize = 128;

/// A command that runs on one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Op {
    Get,
    Set,
    SetNx,
    SetEx,
    PSetEx,
    MGet,
    MSet,
    MSetNx,
    GetSet,
    GetDel,
    GetEx,
    Append,
    StrLen,
    Incr,
    Decr,
    IncrBy,
    DecrBy,
    IncrByFloat,
    GetRange,
    SetRange,
    Substr,
    HSet,
    HGet,
    HDel,
    HKeys,
    HVals,
    HLen,
    HGetAll,
    HRandField,
    HIncrBy,
    HIncrByFloat,
    HExists,
    HStrLen,
    HSetNx,
    HMGet,
    HMSet,
    HScan,
    Del,
    Unlink,
    Exists,
    Touch,
    Expire,
    PExpire,
    ExpireAt,
    PExpireAt,
    Ttl,
    PTtl,
    ExpireTime,
    PExpireTime,
    Persist,
    Type,
    Rename,
    RenameNx,
}

type Result<T> = std::result::Result<T, RedisError>;

fn int_arg(b: &[u8]) -> Result<i64> {
    parse_i64(b).ok_or(RedisError::NotInteger)
}

fn float_arg(b: &[u8]) -> Result<f64> {
    parse_f64(b).ok_or(RedisError::NotFloat)
}

fn arg(args: &[Bytes], i: usize) -> &[u8] {
    args.get(i).map_or(&[][..], |b| &b[..])
}

/// The string at `key`, `None` when missing.
fn get_str<'a>(ks: &'a mut Keyspace, key: &[u8], now: u64) -> Result<Option<&'a [u8]>> {
    match ks.get(key, now) {
        None => Ok(None),
        Some(e) => match &e.value {
            Value::Str(s) => Ok(Some(s)),
            Value::Hash(_) => Err(RedisError::WrongType),
        },
    }
}

/// The hash at `key`, `None` when missing.
fn get_hash<'a>(ks: &'a mut Keyspace, key: &[u8], now: u64) -> Result<Option<&'a HashValue>> {
    match ks.get(key, now) {
        None => Ok(None),
        Some(e) => match &e.value {
            Value::Hash(h) => Ok(Some(h)),
            Value::Str(_) => Err(RedisError::WrongType),
        },
    }
}

/// Fails with WRONGTYPE when `key` holds something other than a hash.
fn check_hash(ks: &mut Keyspace, key: &[u8], now: u64) -> Result<bool> {
    Ok(get_hash(ks, key, now)?.is_some())
}

/// When an expiry given in `unit_ms` milliseconds per unit, relative to `base` (0 for absolute
/// times), falls; Redis's checks and error text.
fn expire_at(amount: i64, unit_ms: i64, base: u64, cmd: &'static str) -> Result<u64> {
    let invalid = RedisError::InvalidExpire(cmd);
    let ms = amount.checked_mul(unit_ms).ok_or(invalid.clone())?;
    let base = i64::try_from(base).map_err(|_| invalid.clone())?;
    let at = ms.checked_add(base).ok_or(invalid.clone())?;
    Ok(u64::try_from(at).unwrap_or(0))
}

/// The expiry options of `SET` and `GETEX`.
#[derive(Debug, Default, PartialEq, Eq)]
enum Ttl {
    #[default]
    Clear,
    Keep,
    Persist,
    At(u64),
}

struct SetOpts {
    nx: bool,
    xx: bool,
    get: bool,
    ttl: Ttl,
}

fn parse_set_opts(args: &[Bytes], now: u64) -> Result<SetOpts> {
    let mut o = SetOpts { nx: false, xx: false, get: false, ttl: Ttl::Clear };
    let mut has_ttl = false;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].to_ascii_uppercase();
        match a.as_slice() {
            b"NX" if !o.xx => o.nx = true,
            b"XX" if !o.nx => o.xx = true,
            b"GET" => o.get = true,
            b"KEEPTTL" if !has_ttl => {
                has_ttl = true;
                o.ttl = Ttl::Keep;
            }
            b"EX" | b"PX" | b"EXAT" | b"PXAT" if !has_ttl && i + 1 < args.len() => {
                has_ttl = true;
                i += 1;
                let v = int_arg(&args[i])?;
                if v <= 0 {
                    return Err(RedisError::InvalidExpire("set"));
                }
                let at = match a.as_slice() {
                    b"EX" => expire_at(v, 1000, now, "set")?,
                    b"PX" => expire_at(v, 1, now, "set")?,
                    b"EXAT" => expire_at(v, 1000, 0, "set")?,
                    _ => expire_at(v, 1, 0, "set")?,
                };
                o.ttl = Ttl::At(at);
            }
            _ => return Err(RedisError::Syntax),
        }
        i += 1;
    }
    Ok(o)
}

fn parse_getex_opts(args: &[Bytes], now: u64) -> Result<Ttl> {
    let mut ttl = Ttl::Keep;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].to_ascii_uppercase();
        match a.as_slice() {
            b"PERSIST" if ttl == Ttl::Keep => ttl = Ttl::Persist,
            b"EX" | b"PX" | b"EXAT" | b"PXAT" if ttl == Ttl::Keep && i + 1 < args.len() => {
                i += 1;
                let v = int_arg(&args[i])?;
                if v <= 0 {
                    return Err(RedisError::InvalidExpire("getex"));
                }
                ttl = Ttl::At(match a.as_slice() {
                    b"EX" => expire_at(v, 1000, now, "getex")?,
                    b"PX" => expire_at(v, 1, now, "getex")?,
                    b"EXAT" => expire_at(v, 1000, 0, "getex")?,
                    _ => expire_at(v, 1, 0, "getex")?,
                });
            }
            _ => return Err(RedisError::Syntax),
        }
        i += 1;
    }
    Ok(ttl)
}

/// Sets a string, applying an expiry that may already lie in the past (then the key is gone).
fn put_str(ks: &mut Keyspace, key: &[u8], value: Blob, at: u64, now: u64) {
    if at != 0 && at <= now {
        ks.remove(key);
    } else {
        ks.insert(key, Value::Str(value), at);
    }
}

fn current_expire(ks: &mut Keyspace, key: &[u8], now: u64) -> u64 {
    ks.peek(key, now).map_or(0, |e| e.expire_at)
}

fn set(ks: &mut Keyspace, args: &[Bytes], now: u64) -> Result<Out> {
    let (key, value) = (arg(args, 0), arg(args, 1));
    let o = parse_set_opts(&args[2..], now)?;
    let old = if o.get { get_str(ks, key, now)?.map(Bytes::copy_from_slice) } else { None };
    // Only NX and XX need to know whether the key exists.
    let exists = (o.nx || o.xx) && ks.peek(key, now).is_some();
    if (o.nx && exists) || (o.xx && !exists) {
        return Ok(if o.get { old.map_or(Out::Nil, Out::Bulk) } else { Out::Nil });
    }
    let at = match o.ttl {
        Ttl::Keep => current_expire(ks, key, now),
        Ttl::At(at) => at,
        Ttl::Clear | Ttl::Persist => 0,
    };
    put_str(ks, key, value.into(), at, now);
    Ok(if o.get { old.map_or(Out::Nil, Out::Bulk) } else { Out::Ok })
}

fn setex(ks: &mut Keyspace, args: &[Bytes], now: u64, unit: i64, cmd: &'static str) -> Result<Out> {
    let amount = int_arg(arg(args, 1))?;
    if amount <= 0 {
        return Err(RedisError::InvalidExpire(cmd));
    }
    let at = expire_at(amount, unit, now, cmd)?;
    put_str(ks, arg(args, 0), arg(args, 2).into(), at, now);
    Ok(Out::Ok)
}

/// Writes `v` in decimal into `buf` (20 bytes hold any i64) and returns the digits.
fn format_i64(v: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut n = v.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

fn incr_by(ks: &mut Keyspace, key: &[u8], by: i64, now: u64) -> Result<Out> {
    let current = match get_str(ks, key, now)? {
        Some(s) => int_arg(s)?,
        None => 0,
    };
    let new = current.checked_add(by).ok_or(RedisError::Overflow)?;
    // Formatted on the stack, then one exact allocation (a `String` would be allocated and then
    // shrunk into the box).
    let mut buf = [0u8; 20];
    let text: Blob = Blob::from(format_i64(new, &mut buf));
    match ks.modify(key, None, now) {
        Some(e) => e.value = Value::Str(text),
        None => ks.insert(key, Value::Str(text), 0),
    }
    Ok(Out::Int(new))
}

fn incr_by_float(ks: &mut Keyspace, key: &[u8], by: &[u8], now: u64) -> Result<Out> {
    let current = match get_str(ks, key, now)? {
        Some(s) => float_arg(s)?,
        None => 0.0,
    };
    let by = float_arg(by)?;
    let new = current + by;
    if !new.is_finite() {
        return Err(RedisError::NanOrInfinity);
    }
    let text = format_f64(new);
    let out = Out::bulk(text.as_bytes());
    match ks.modify(key, None, now) {
        Some(e) => e.value = Value::Str(text.into_bytes().into()),
        None => ks.insert(key, Value::Str(text.into_bytes().into()), 0),
    }
    Ok(out)
}

/// The byte range `GETRANGE start end` selects, Redis 7's rules for negative and out-of-range
/// indexes.
fn range_of(len: usize, start: i64, end: i64) -> Option<(usize, usize)> {
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    if start < 0 && end < 0 && start > end {
        return None;
    }
    let mut s = if start < 0 { len + start } else { start };
    let mut e = if end < 0 { len + end } else { end };
    s = s.max(0);
    e = e.max(0);
    if e >= len {
        e = len - 1;
    }
    if s > e || len == 0 {
        return None;
    }
    Some((usize::try_from(s).ok()?, usize::try_from(e).ok()?))
}

fn setrange(ks: &mut Keyspace, args: &[Bytes], now: u64) -> Result<Out> {
    let key = arg(args, 0);
    let offset = int_arg(arg(args, 1))?;
    let value = arg(args, 2);
    let offset =
        usize::try_from(offset).map_err(|_| RedisError::Other("offset is out of range".into()))?;
    let current_len = get_str(ks, key, now)?.map(<[u8]>::len);
    if value.is_empty() {
        return Ok(Out::int(current_len.unwrap_or(0)));
    }
    let needed = offset
        .checked_add(value.len())
        .filter(|n| *n <= MAX_STRING_LEN)
        .ok_or(RedisError::TooBig)?;
    let mut buf = match ks.modify(key, None, now) {
        Some(e) => match &mut e.value {
            Value::Str(s) => std::mem::take(s).into_vec(),
            Value::Hash(_) => return Err(RedisError::WrongType),
        },
        None => Vec::new(),
    };
    let before = buf.len();
    if buf.len() < needed {
        buf.resize(needed, 0);
    }
    buf[offset..needed].copy_from_slice(value);
    let len = buf.len();
    match ks.modify(key, None, now) {
        Some(e) => e.value = Value::Str(buf.into()),
        None => ks.insert(key, Value::Str(buf.into()), 0),
    }
    ks.grew(isize::try_from(len - before.min(len)).unwrap_or(0));
    Ok(Out::int(len))
}

fn append(ks: &mut Keyspace, key: &[u8], value: &[u8], now: u64) -> Result<Out> {
    let Some(cur) = get_str(ks, key, now)? else {
        ks.insert(key, Value::Str(value.into()), 0);
        return Ok(Out::int(value.len()));
    };
    let total = cur.len() + value.len();
    if total > MAX_STRING_LEN {
        return Err(RedisError::TooBig);
    }
    if let Some(e) = ks.modify(key, None, now)
        && let Value::Str(s) = &mut e.value
    {
        let mut v = std::mem::take(s).into_vec();
        v.extend_from_slice(value);
        *s = v.into();
    }
    ks.grew(isize::try_from(value.len()).unwrap_or(0));
    Ok(Out::int(total))
}

fn hset(ks: &mut Keyspace, args: &[Bytes], now: u64, cmd: &'static str) -> Result<usize> {
    let key = arg(args, 0);
    let pairs = &args[1..];
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        return Err(RedisError::WrongArity(cmd));
    }
    if !check_hash(ks, key, now)? {
        ks.insert(key, Value::Hash(Box::default()), 0);
    }
    let mut added = 0;
    let mut grown = 0isize;
    for pair in pairs.chunks_exact(2) {
        let (f, v) = (&pair[0][..], &pair[1][..]);
        if let Some(e) = ks.modify(key, Some(f), now)
            && let Value::Hash(h) = &mut e.value
        {
            match h.insert(f.into(), v.into()) {
                None => {
                    added += 1;
                    grown += isize::try_from(f.len() + v.len() + 16).unwrap_or(0);
                }
                Some(old) => {
                    grown += isize::try_from(v.len()).unwrap_or(0)
                        - isize::try_from(old.len()).unwrap_or(0);
                }
            }
        }
    }
    ks.grew(grown);
    Ok(added)
}

fn hincr(ks: &mut Keyspace, args: &[Bytes], now: u64, float: bool) -> Result<Out> {
    let (key, field, by) = (arg(args, 0), arg(args, 1), arg(args, 2));
    let current = get_hash(ks, key, now)?.and_then(|h| h.get(field)).map(|v| v.to_vec());
    let (text, out) = if float {
        let by = float_arg(by)?;
        let cur = match current {
            Some(v) => parse_f64(&v).ok_or(RedisError::HashNotFloat)?,
            None => 0.0,
        };
        let new = cur + by;
        if !new.is_finite() {
            return Err(RedisError::NanOrInfinity);
        }
        let t = format_f64(new);
        let out = Out::bulk(t.as_bytes());
        (t, out)
    } else {
        let by = int_arg(by)?;
        let cur = match current {
            Some(v) => parse_i64(&v).ok_or(RedisError::HashNotInteger)?,
            None => 0,
        };
        let new = cur.checked_add(by).ok_or(RedisError::Overflow)?;
        (new.to_string(), Out::Int(new))
    };
    let pair = [Bytes::copy_from_slice(key), Bytes::copy_from_slice(field), Bytes::from(text)];
    hset(ks, &pair, now, "hincrby")?;
    Ok(out)
}

fn hdel(ks: &mut Keyspace, args: &[Bytes], now: u64) -> Result<Out> {
    let key = arg(args, 0);
    if !check_hash(ks, key, now)? {
        return Ok(Out::Int(0));
    }
    let mut removed = 0;
    let mut empty = false;
    for f in &args[1..] {
        let present = get_hash(ks, key, now)?.is_some_and(|h| h.contains_key(&f[..]));
        if !present {
            continue;
        }
        if let Some(e) = ks.modify(key, Some(f), now)
            && let Value::Hash(h) = &mut e.value
        {
            if let Some(v) = h.remove(&f[..]) {
                removed += 1;
                ks.grew(-isize::try_from(f.len() + v.len() + 16).unwrap_or(0));
            }
            empty = get_hash(ks, key, now)?.is_some_and(|h| h.is_empty());
        }
        if empty {
            ks.remove(key);
            break;
        }
    }
    Ok(Out::Int(removed))
}

fn hrandfield(ks: &mut Keyspace, args: &[Bytes], now: u64) -> Result<Out> {
    let key = arg(args, 0);
    let count = match args.get(1) {
        Some(c) => Some(int_arg(c)?),
        None => None,
    };
    let with_values = match args.get(2) {
        Some(w) if w.eq_ignore_ascii_case(b"WITHVALUES") => true,
        Some(_) => return Err(RedisError::Syntax),
        None => false,
    };
    if args.len() > 3 {
        return Err(RedisError::Syntax);
    }
    let Some(h) = get_hash(ks, key, now)? else {
        return Ok(if count.is_some() { Out::Array(Vec::new()) } else { Out::Nil });
    };
    let items: Vec<(&Blob, &Blob)> = h.iter().collect();
    let Some(count) = count else {
        return Ok(Out::bulk(items[rand::below(items.len())].0));
    };
    if count < -(i64::MAX / 2) {
        return Err(RedisError::Other("value is out of range".into()));
    }
    let picked: Vec<(&Blob, &Blob)> = if count < 0 {
        let n = usize::try_from(count.unsigned_abs()).unwrap_or(usize::MAX);
        (0..n).map(|_| items[rand::below(items.len())]).collect()
    } else {
        let n = usize::try_from(count).unwrap_or(usize::MAX);
        if n >= items.len() {
            items
        } else {
            // A partial Fisher-Yates shuffle: the first n of a random permutation.
            let mut items = items;
            for i in 0..n {
                let j = i + rand::below(items.len() - i);
                items.swap(i, j);
            }
            items.truncate(n);
            items
        }
    };
    Ok(if with_values {
        Out::Pairs(
            picked
                .into_iter()
                .map(|(f, v)| (Bytes::copy_from_slice(f), Bytes::copy_from_slice(v)))
                .collect(),
        )
    } else {
        Out::Array(picked.into_iter().map(|(f, _)| Out::bulk(f)).collect())
    })
}

/// `SCAN`-style options: `MATCH pattern`, `COUNT n`, and for `HSCAN` `NOVALUES`.
#[derive(Debug, Default)]
pub struct ScanOpts {
    pub pattern: Option<Bytes>,
    pub count: usize,
    pub type_name: Option<String>,
    pub novalues: bool,
}

/// Parses the options after a scan cursor; `TYPE` only for `SCAN`, `NOVALUES` only for `HSCAN`.
///
/// # Errors
///
/// `ERR syntax error` for unknown or misplaced options and a `COUNT` below 1, `ERR value is not an
/// integer or out of range` for a bad `COUNT`.
pub fn parse_scan_opts(args: &[Bytes], allow_type: bool, allow_novalues: bool) -> Result<ScanOpts> {
    let mut o = ScanOpts { count: 10, ..ScanOpts::default() };
    let mut i = 0;
    while i < args.len() {
        let a = args[i].to_ascii_uppercase();
        let value = args.get(i + 1);
        match (a.as_slice(), value) {
            (b"MATCH", Some(p)) => {
                o.pattern = Some(p.clone());
                i += 2;
            }
            (b"COUNT", Some(n)) => {
                let n = int_arg(n)?;
                if n < 1 {
                    return Err(RedisError::Syntax);
                }
                o.count = usize::try_from(n).unwrap_or(usize::MAX);
                i += 2;
            }
            (b"TYPE", Some(t)) if allow_type => {
                o.type_name = Some(String::from_utf8_lossy(t).to_ascii_lowercase());
                i += 2;
            }
            (b"NOVALUES", _) if allow_novalues => {
                o.novalues = true;
                i += 1;
            }
            _ => return Err(RedisError::Syntax),
        }
    }
    Ok(o)
}

/// A stable 64-bit position of a hash field for `HSCAN` cursors: FNV-1a, which does not depend
/// on the per-map random seed, so a cursor stays valid while the hash grows or shrinks.
fn field_position(f: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in f {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Position 0 is the cursor that starts and ends a scan, so no field sits there.
    h.max(1)
}

fn hscan(ks: &mut Keyspace, args: &[Bytes], now: u64) -> Result<Out> {
    let key = arg(args, 0);
    let cursor = parse_i64(arg(args, 1))
        .and_then(|c| u64::try_from(c).ok())
        .or_else(|| std::str::from_utf8(arg(args, 1)).ok()?.parse::<u64>().ok())
        .ok_or_else(|| RedisError::Other("invalid cursor".into()))?;
    let o = parse_scan_opts(&args[2..], false, true)?;
    let Some(h) = get_hash(ks, key, now)? else {
        return Ok(Out::Array(vec![Out::bulk(b"0"), Out::Array(Vec::new())]));
    };
    let keep = |f: &[u8]| o.pattern.as_ref().is_none_or(|p| crate::glob::matches(p, f, false));
    let emit = |picked: Vec<(&Blob, &Blob)>| {
        let mut items = Vec::with_capacity(picked.len() * 2);
        for (f, v) in picked {
            if keep(f) {
                items.push(Out::bulk(f));
                if !o.novalues {
                    items.push(Out::bulk(v));
                }
            }
        }
        items
    };
    if h.len() <= HSCAN_WHOLE {
        let items = emit(h.iter().collect());
        return Ok(Out::Array(vec![Out::bulk(b"0"), Out::Array(items)]));
    }
    // Fields in position order from the cursor on: every field present for the whole scan is
    // returned once, whatever happens to the others meanwhile.
    let mut candidates: Vec<(u64, &Blob, &Blob)> =
        h.iter().map(|(f, v)| (field_position(f), f, v)).filter(|(p, _, _)| *p >= cursor).collect();
    candidates.sort_unstable_by_key(|(p, _, _)| *p);
    let mut end = o.count.min(candidates.len());
    // Fields sharing a position go out together, or the next cursor would skip some.
    while end > 0 && end < candidates.len() && candidates[end].0 == candidates[end - 1].0 {
        end += 1;
    }
    let next = match candidates.get(end) {
        Some((p, _, _)) => *p,
        None => 0,
    };
    let items = emit(candidates[..end].iter().map(|(_, f, v)| (*f, *v)).collect());
    Ok(Out::Array(vec![Out::bulk(next.to_string().as_bytes()), Out::Array(items)]))
}

/// The `NX|XX|GT|LT` condition of the `EXPIRE` family.
fn expire(
    ks: &mut Keyspace,
    args: &[Bytes],
    now: u64,
    unit: i64,
    base: u64,
    cmd: &'static str,
) -> Result<Out> {
    let key = arg(args, 0);
    let amount = int_arg(arg(args, 1))?;
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for o in &args[2..] {
        match o.to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            _ => {
                return Err(RedisError::Other(format!(
                    "Unsupported option {}",
                    String::from_utf8_lossy(o)
                )));
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Err(RedisError::Other(
            "NX and XX, GT or LT options at the same time are not compatible".into(),
        ));
    }
    if gt && lt {
        return Err(RedisError::Other(
            "GT and LT options at the same time are not compatible".into(),
        ));
    }
    let base = if base == 0 { 0 } else { now };
    let at = i64::try_from(base)
        .ok()
        .and_then(|b| amount.checked_mul(unit)?.checked_add(b))
        .ok_or(RedisError::InvalidExpire(cmd))?;
    let Some(current) = ks.peek(key, now).map(|e| e.expire_at) else { return Ok(Out::Int(0)) };
    // A key without expiry counts as expiring never, so GT never applies and LT always does.
    let new = u64::try_from(at).unwrap_or(0);
    let allowed = if nx {
        current == 0
    } else if xx {
        current != 0
    } else {
        true
    } && (!gt || (current != 0 && new > current))
        && (!lt || current == 0 || new < current);
    if !allowed {
        return Ok(Out::Int(0));
    }
    if at <= i64::try_from(now).unwrap_or(i64::MAX) {
        ks.remove(key);
    } else {
        ks.set_expire(key, new, now);
    }
    Ok(Out::Int(1))
}

/// `TTL` and friends: -2 for a missing key, -1 without expiry.
fn ttl(ks: &mut Keyspace, key: &[u8], now: u64, f: impl Fn(u64) -> i64) -> Out {
    match ks.peek(key, now) {
        None => Out::Int(-2),
        Some(e) if e.expire_at == 0 => Out::Int(-1),
        Some(e) => Out::Int(f(e.expire_at)),
    }
}

fn rename(ks: &mut Keyspace, args: &[Bytes], now: u64, nx: bool) -> Result<Out> {
    let (src, dst) = (arg(args, 0), arg(args, 1));
    if ks.peek(src, now).is_none() {
        return Err(RedisError::NoSuchKey);
    }
    if src == dst {
        return Ok(if nx { Out::Int(0) } else { Out::Ok });
    }
    if nx && ks.peek(dst, now).is_some() {
        return Ok(Out::Int(0));
    }
    let Some(e) = ks.remove(src) else { return Err(RedisError::NoSuchKey) };
    ks.insert(dst, e.value, e.expire_at);
    Ok(if nx { Out::Int(1) } else { Out::Ok })
}

/// Runs `op` with `args` (the words after the command name) on `ks` at time `now` (Unix ms).
///
/// # Errors
///
/// The command's Redis error; nothing changed in that case.
pub fn execute(ks: &mut Keyspace, op: Op, args: &[Bytes], now: u64) -> Result<Out> {
    let key = arg(args, 0);
    match op {
        Op::Get => Ok(Out::bulk_or_nil(get_str(ks, key, now)?)),
        Op::Set => set(ks, args, now),
        Op::SetNx => {
            if ks.peek(key, now).is_some() {
                return Ok(Out::Int(0));
            }
            ks.insert(key, Value::Str(arg(args, 1).into()), 0);
            Ok(Out::Int(1))
        }
        Op::SetEx => setex(ks, args, now, 1000, "setex"),
        Op::PSetEx => setex(ks, args, now, 1, "psetex"),
        Op::MGet => Ok(Out::Array(
            args.iter()
                .map(|k| match ks.get(k, now).map(|e| &e.value) {
                    Some(Value::Str(s)) => Out::bulk(s),
                    _ => Out::Nil,
                })
                .collect(),
        )),
        Op::MSet | Op::MSetNx => {
            if !args.len().is_multiple_of(2) {
                return Err(RedisError::WrongArity(if op == Op::MSet { "mset" } else { "msetnx" }));
            }
            if op == Op::MSetNx && args.chunks_exact(2).any(|p| ks.peek(&p[0], now).is_some()) {
                return Ok(Out::Int(0));
            }
            for p in args.chunks_exact(2) {
                ks.insert(&p[0], Value::Str(p[1][..].into()), 0);
            }
            Ok(if op == Op::MSet { Out::Ok } else { Out::Int(1) })
        }
        Op::GetSet => {
            let old = get_str(ks, key, now)?.map(Bytes::copy_from_slice);
            ks.insert(key, Value::Str(arg(args, 1).into()), 0);
            Ok(old.map_or(Out::Nil, Out::Bulk))
        }
        Op::GetDel => {
            let old = get_str(ks, key, now)?.map(Bytes::copy_from_slice);
            if old.is_some() {
                ks.remove(key);
            }
            Ok(old.map_or(Out::Nil, Out::Bulk))
        }
        Op::GetEx => {
            let ttl = parse_getex_opts(&args[1..], now)?;
            let Some(v) = get_str(ks, key, now)?.map(Bytes::copy_from_slice) else {
                return Ok(Out::Nil);
            };
            match ttl {
                Ttl::At(at) if at <= now => {
                    ks.remove(key);
                }
                Ttl::At(at) => {
                    ks.set_expire(key, at, now);
                }
                Ttl::Persist => {
                    ks.set_expire(key, 0, now);
                }
                Ttl::Keep | Ttl::Clear => {}
            }
            Ok(Out::Bulk(v))
        }
        Op::Append => append(ks, key, arg(args, 1), now),
        Op::StrLen => Ok(Out::int(get_str(ks, key, now)?.map_or(0, <[u8]>::len))),
        Op::Incr => incr_by(ks, key, 1, now),
        Op::Decr => incr_by(ks, key, -1, now),
        Op::IncrBy => incr_by(ks, key, int_arg(arg(args, 1))?, now),
        Op::DecrBy => {
            let by = int_arg(arg(args, 1))?;
            incr_by(ks, key, by.checked_neg().ok_or(RedisError::Overflow)?, now)
        }
        Op::IncrByFloat => incr_by_float(ks, key, arg(args, 1), now),
        Op::GetRange | Op::Substr => {
            let (start, end) = (int_arg(arg(args, 1))?, int_arg(arg(args, 2))?);
            let s = get_str(ks, key, now)?.unwrap_or_default();
            Ok(match range_of(s.len(), start, end) {
                Some((a, b)) => Out::bulk(&s[a..=b]),
                None => Out::bulk(b""),
            })
        }
        Op::SetRange => setrange(ks, args, now),
        Op::HSet => Ok(Out::int(hset(ks, args, now, "hset")?)),
        Op::HMSet => hset(ks, args, now, "hmset").map(|_| Out::Ok),
        Op::HSetNx => {
            let exists = get_hash(ks, key, now)?.is_some_and(|h| h.contains_key(arg(args, 1)));
            if exists {
                return Ok(Out::Int(0));
            }
            hset(ks, &args[..3], now, "hsetnx")?;
            Ok(Out::Int(1))
        }
        Op::HGet => Ok(Out::bulk_or_nil(
            get_hash(ks, key, now)?.and_then(|h| h.get(arg(args, 1))).map(|v| &v[..]),
        )),
        Op::HMGet => {
            let h = get_hash(ks, key, now)?;
            Ok(Out::Array(
                args[1..]
                    .iter()
                    .map(|f| Out::bulk_or_nil(h.and_then(|h| h.get(&f[..])).map(|v| &v[..])))
                    .collect(),
            ))
        }
        Op::HDel => hdel(ks, args, now),
        Op::HKeys => Ok(Out::Array(
            get_hash(ks, key, now)?
                .map_or_else(Vec::new, |h| h.keys().map(|f| Out::bulk(f)).collect()),
        )),
        Op::HVals => Ok(Out::Array(
            get_hash(ks, key, now)?
                .map_or_else(Vec::new, |h| h.values().map(|v| Out::bulk(v)).collect()),
        )),
        Op::HLen => Ok(Out::int(get_hash(ks, key, now)?.map_or(0, HashValue::len))),
        Op::HGetAll => Ok(Out::Map(get_hash(ks, key, now)?.map_or_else(Vec::new, |h| {
            h.iter().map(|(f, v)| (Out::bulk(f), Out::bulk(v))).collect()
        }))),
        Op::HRandField => hrandfield(ks, args, now),
        Op::HIncrBy => hincr(ks, args, now, false),
        Op::HIncrByFloat => hincr(ks, args, now, true),
        Op::HExists => {
            Ok(Out::bool(get_hash(ks, key, now)?.is_some_and(|h| h.contains_key(arg(args, 1)))))
        }
        Op::HStrLen => Ok(Out::int(
            get_hash(ks, key, now)?.and_then(|h| h.get(arg(args, 1))).map_or(0, |v| v.len()),
        )),
        Op::HScan => hscan(ks, args, now),
        Op::Del | Op::Unlink => {
            let mut n = 0;
            for k in args {
                if ks.peek(k, now).is_some() {
                    ks.remove(k);
                    n += 1;
                }
            }
            Ok(Out::Int(n))
        }
        Op::Exists | Op::Touch => {
            Ok(Out::int(args.iter().filter(|k| ks.peek(k, now).is_some()).count()))
        }
        Op::Expire => expire(ks, args, now, 1000, 1, "expire"),
        Op::PExpire => expire(ks, args, now, 1, 1, "pexpire"),
        Op::ExpireAt => expire(ks, args, now, 1000, 0, "expireat"),
        Op::PExpireAt => expire(ks, args, now, 1, 0, "pexpireat"),
        Op::Ttl => Ok(ttl(ks, key, now, |at| {
            i64::try_from((at.saturating_sub(now) + 500) / 1000).unwrap_or(i64::MAX)
        })),
        Op::PTtl => {
            Ok(ttl(ks, key, now, |at| i64::try_from(at.saturating_sub(now)).unwrap_or(i64::MAX)))
        }
        Op::ExpireTime => Ok(ttl(ks, key, now, |at| i64::try_from(at / 1000).unwrap_or(i64::MAX))),
        Op::PExpireTime => Ok(ttl(ks, key, now, |at| i64::try_from(at).unwrap_or(i64::MAX))),
        Op::Persist => {
            let has = ks.peek(key, now).is_some_and(|e| e.expire_at != 0);
            if has {
                ks.set_expire(key, 0, now);
            }
            Ok(Out::bool(has))
        }
        Op::Type => Ok(Out::Simple(ks.peek(key, now).map_or("none", |e| e.value.type_name()))),
        Op::Rename => rename(ks, args, now, false),
        Op::RenameNx => rename(ks, args, now, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(ks: &mut Keyspace, op: Op, args: &[&str]) -> Result<Out> {
        let args: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
        execute(ks, op, &args, 1_000_000)
    }

    fn b(s: &str) -> Out {
        Out::bulk(s.as_bytes())
    }

    #[test]
    fn strings() {
        let mut ks = Keyspace::default();
        assert_eq!(run(&mut ks, Op::Set, &["k", "v"]), Ok(Out::Ok));
        assert_eq!(run(&mut ks, Op::Get, &["k"]), Ok(b("v")));
        assert_eq!(run(&mut ks, Op::Set, &["k", "w", "NX"]), Ok(Out::Nil));
        assert_eq!(run(&mut ks, Op::Set, &["k", "w", "XX", "GET"]), Ok(b("v")));
        assert_eq!(run(&mut ks, Op::Set, &["k", "w", "NX", "XX"]), Err(RedisError::Syntax));
        assert_eq!(
            run(&mut ks, Op::Set, &["k", "w", "EX", "0"]),
            Err(RedisError::InvalidExpire("set"))
        );
        assert_eq!(run(&mut ks, Op::Set, &["k", "w", "EX", "x"]), Err(RedisError::NotInteger));
        assert_eq!(
            run(&mut ks, Op::Set, &["k", "w", "EX", "9223372036854775807"]),
            Err(RedisError::InvalidExpire("set"))
        );
        assert_eq!(
            run(&mut ks, Op::Set, &["k", "w", "EX", "10", "KEEPTTL"]),
            Err(RedisError::Syntax)
        );
        assert_eq!(run(&mut ks, Op::Set, &["k", "w", "PX", "1500"]), Ok(Out::Ok));
        assert_eq!(run(&mut ks, Op::PTtl, &["k"]), Ok(Out::Int(1500)));
        assert_eq!(run(&mut ks, Op::Ttl, &["k"]), Ok(Out::Int(2)), "rounded like Redis");
        assert_eq!(run(&mut ks, Op::Set, &["k", "x", "KEEPTTL"]), Ok(Out::Ok));
        assert_eq!(run(&mut ks, Op::PTtl, &["k"]), Ok(Out::Int(1500)));
        assert_eq!(run(&mut ks, Op::Append, &["k", "yz"]), Ok(Out::Int(3)));
        assert_eq!(run(&mut ks, Op::GetRange, &["k", "-2", "-1"]), Ok(b("yz")));
        assert_eq!(run(&mut ks, Op::GetRange, &["k", "5", "9"]), Ok(b("")));
        assert_eq!(run(&mut ks, Op::GetRange, &["k", "-1", "-2"]), Ok(b("")));
        assert_eq!(run(&mut ks, Op::SetRange, &["s", "3", "ab"]), Ok(Out::Int(5)));
        assert_eq!(run(&mut ks, Op::Get, &["s"]), Ok(Out::bulk(b"\0\0\0ab")));
        assert_eq!(run(&mut ks, Op::SetRange, &["t", "0", ""]), Ok(Out::Int(0)));
        assert_eq!(run(&mut ks, Op::Exists, &["t"]), Ok(Out::Int(0)));
        assert_eq!(run(&mut ks, Op::StrLen, &["s"]), Ok(Out::Int(5)));
        assert_eq!(run(&mut ks, Op::GetDel, &["s"]), Ok(Out::bulk(b"\0\0\0ab")));
        assert_eq!(run(&mut ks, Op::Get, &["s"]), Ok(Out::Nil));
    }

    #[test]
    fn integers_format_like_to_string() {
        let mut buf = [0u8; 20];
        for v in [0, 7, -7, 10, i64::MAX, i64::MIN, 1_000_000] {
            assert_eq!(format_i64(v, &mut buf), v.to_string().as_bytes());
        }
    }

    #[test]
    fn counters() {
        let mut ks = Keyspace::default();
        assert_eq!(run(&mut ks, Op::Incr, &["n"]), Ok(Out::Int(1)));
        assert_eq!(run(&mut ks, Op::IncrBy, &["n", "-11"]), Ok(Out::Int(-10)));
        assert_eq!(
            run(&mut ks, Op::DecrBy, &["n", "-9223372036854775808"]),
            Err(RedisError::Overflow)
        );
        run(&mut ks, Op::Set, &["m", "9223372036854775807"]).ok();
        assert_eq!(run(&mut ks, Op::Incr, &["m"]), Err(RedisError::Overflow));
        run(&mut ks, Op::Set, &["x", " 1"]).ok();
        assert_eq!(run(&mut ks, Op::Incr, &["x"]), Err(RedisError::NotInteger));
        run(&mut ks, Op::Set, &["f", "10.5"]).ok();
        assert_eq!(run(&mut ks, Op::IncrByFloat, &["f", "0.1"]), Ok(b("10.6")));
        assert_eq!(run(&mut ks, Op::IncrByFloat, &["f", "abc"]), Err(RedisError::NotFloat));
        assert_eq!(run(&mut ks, Op::IncrByFloat, &["f", "inf"]), Err(RedisError::NanOrInfinity));
        assert_eq!(run(&mut ks, Op::Get, &["f"]), Ok(b("10.6")));
    }

    #[test]
    fn hashes() {
        let mut ks = Keyspace::default();
        assert_eq!(run(&mut ks, Op::HSet, &["h", "a", "1", "b", "2"]), Ok(Out::Int(2)));
        assert_eq!(run(&mut ks, Op::HSet, &["h", "a", "3"]), Ok(Out::Int(0)));
        assert_eq!(run(&mut ks, Op::HSet, &["h", "a"]), Err(RedisError::WrongArity("hset")));
        assert_eq!(run(&mut ks, Op::HGet, &["h", "a"]), Ok(b("3")));
        assert_eq!(run(&mut ks, Op::Get, &["h"]), Err(RedisError::WrongType));
        assert_eq!(run(&mut ks, Op::Type, &["h"]), Ok(Out::Simple("hash")));
        assert_eq!(run(&mut ks, Op::HIncrBy, &["h", "a", "2"]), Ok(Out::Int(5)));
        assert_eq!(run(&mut ks, Op::HSet, &["h", "s", "x"]), Ok(Out::Int(1)));
        assert_eq!(run(&mut ks, Op::HIncrBy, &["h", "s", "1"]), Err(RedisError::HashNotInteger));
        assert_eq!(run(&mut ks, Op::HIncrByFloat, &["h", "s", "1"]), Err(RedisError::HashNotFloat));
        assert_eq!(run(&mut ks, Op::HSetNx, &["h", "a", "9"]), Ok(Out::Int(0)));
        assert_eq!(run(&mut ks, Op::HStrLen, &["h", "s"]), Ok(Out::Int(1)));
        assert_eq!(
            run(&mut ks, Op::HMGet, &["h", "a", "zz"]),
            Ok(Out::Array(vec![b("5"), Out::Nil]))
        );
        assert_eq!(run(&mut ks, Op::HDel, &["h", "a", "b", "s", "nope"]), Ok(Out::Int(3)));
        assert_eq!(run(&mut ks, Op::Exists, &["h"]), Ok(Out::Int(0)), "an emptied hash is gone");
        assert_eq!(run(&mut ks, Op::HRandField, &["h"]), Ok(Out::Nil));
        assert_eq!(run(&mut ks, Op::HRandField, &["h", "3"]), Ok(Out::Array(vec![])));
        run(&mut ks, Op::HSet, &["h", "a", "1", "b", "2"]).ok();
        match run(&mut ks, Op::HRandField, &["h", "-5", "WITHVALUES"]) {
            Ok(Out::Pairs(p)) => assert_eq!(p.len(), 5),
            other => panic!("{other:?}"),
        }
        match run(&mut ks, Op::HRandField, &["h", "5"]) {
            Ok(Out::Array(p)) => assert_eq!(p.len(), 2, "distinct fields, at most the hash"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hscan_visits_every_field_once() {
        let mut ks = Keyspace::default();
        for i in 0..1000 {
            run(&mut ks, Op::HSet, &["big", &format!("f{i}"), "v"]).ok();
        }
        let mut seen = std::collections::HashSet::new();
        let mut cursor = "0".to_owned();
        loop {
            let Ok(Out::Array(parts)) = run(&mut ks, Op::HScan, &["big", &cursor, "COUNT", "37"])
            else {
                panic!("bad reply")
            };
            let Out::Bulk(c) = &parts[0] else { panic!() };
            let Out::Array(items) = &parts[1] else { panic!() };
            for pair in items.chunks(2) {
                assert!(seen.insert(format!("{:?}", pair[0])), "field returned twice");
            }
            cursor = String::from_utf8_lossy(c).into_owned();
            if cursor == "0" {
                break;
            }
        }
        assert_eq!(seen.len(), 1000);
    }

    #[test]
    fn expire_options() {
        let mut ks = Keyspace::default();
        run(&mut ks, Op::Set, &["k", "v"]).ok();
        assert_eq!(run(&mut ks, Op::Expire, &["k", "100", "XX"]), Ok(Out::Int(0)));
        assert_eq!(run(&mut ks, Op::Expire, &["k", "100", "GT"]), Ok(Out::Int(0)));
        assert_eq!(run(&mut ks, Op::Expire, &["k", "100", "LT"]), Ok(Out::Int(1)));
        assert_eq!(run(&mut ks, Op::Expire, &["k", "50", "GT"]), Ok(Out::Int(0)));
        assert_eq!(run(&mut ks, Op::Expire, &["k", "200", "GT"]), Ok(Out::Int(1)));
        assert_eq!(run(&mut ks, Op::Ttl, &["k"]), Ok(Out::Int(200)));
        assert_eq!(
            run(&mut ks, Op::Expire, &["k", "1", "NX", "XX"]),
            Err(RedisError::Other(
                "NX and XX, GT or LT options at the same time are not compatible".into()
            ))
        );
        assert_eq!(
            run(&mut ks, Op::Expire, &["k", "1", "FOO"]),
            Err(RedisError::Other("Unsupported option FOO".into()))
        );
        assert_eq!(
            run(&mut ks, Op::Expire, &["k", "9223372036854775807"]),
            Err(RedisError::InvalidExpire("expire"))
        );
        assert_eq!(run(&mut ks, Op::Persist, &["k"]), Ok(Out::Int(1)));
        assert_eq!(run(&mut ks, Op::Ttl, &["k"]), Ok(Out::Int(-1)));
        assert_eq!(run(&mut ks, Op::Ttl, &["nope"]), Ok(Out::Int(-2)));
        assert_eq!(
            run(&mut ks, Op::Expire, &["k", "-1"]),
            Ok(Out::Int(1)),
            "a past expiry deletes"
        );
        assert_eq!(run(&mut ks, Op::Exists, &["k"]), Ok(Out::Int(0)));
    }

    #[test]
    fn renames() {
        let mut ks = Keyspace::default();
        assert_eq!(run(&mut ks, Op::Rename, &["a", "b"]), Err(RedisError::NoSuchKey));
        run(&mut ks, Op::Set, &["a", "1", "EX", "100"]).ok();
        run(&mut ks, Op::Set, &["c", "3"]).ok();
        assert_eq!(run(&mut ks, Op::RenameNx, &["a", "c"]), Ok(Out::Int(0)));
        assert_eq!(run(&mut ks, Op::Rename, &["a", "b"]), Ok(Out::Ok));
        assert_eq!(run(&mut ks, Op::Ttl, &["b"]), Ok(Out::Int(100)), "the expiry moves along");
        assert_eq!(run(&mut ks, Op::Get, &["a"]), Ok(Out::Nil));
    }
}
