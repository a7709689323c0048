//! `CLIENT ID|GETNAME|SETNAME|SETINFO|LIST|INFO|KILL`.

use std::sync::Arc;

use bytes::Bytes;

use super::args::Args;
use super::{Command, Ctx};
use crate::error::CommandError;
use crate::node::{ClientHandle, PeerAddr};
use crate::protocol::reply::Reply;

#[derive(Debug)]
pub enum ClientCmd {
    Id,
    GetName,
    SetName(Bytes),
    SetInfo { lib_name: bool, value: Bytes },
    List { filter: ListFilter },
    Info,
    Kill(KillFilter),
}

#[derive(Debug, Default)]
pub struct ListFilter {
    /// `TYPE` other than `normal`: we have no replica or pub/sub clients, so nothing matches.
    none: bool,
    ids: Option<Vec<u64>>,
}

#[derive(Debug, Default)]
pub struct KillFilter {
    /// The old form `CLIENT KILL ip:port`, answered `+OK` or an error rather than a count.
    legacy: bool,
    id: Option<u64>,
    addr: Option<String>,
    laddr: Option<String>,
    user: Option<String>,
    max_age: Option<u64>,
    /// `TYPE` other than `normal` matches nothing.
    none: bool,
    skip_me: bool,
}

pub fn parse_id(args: &mut Args<'_>) -> Result<Command, CommandError> {
    args.finish().map(|()| Command::Client(ClientCmd::Id))
}

pub fn parse_getname(args: &mut Args<'_>) -> Result<Command, CommandError> {
    args.finish().map(|()| Command::Client(ClientCmd::GetName))
}

pub fn parse_info(args: &mut Args<'_>) -> Result<Command, CommandError> {
    args.finish().map(|()| Command::Client(ClientCmd::Info))
}

pub fn parse_setname(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let name = args.next_bytes()?.clone();
    args.finish()?;
    Ok(Command::Client(ClientCmd::SetName(name)))
}

/// Redis refuses names with spaces, newlines or other characters outside `!`..`~`.
pub fn validate_name(name: &[u8]) -> Result<(), CommandError> {
    if name.iter().all(|c| (b'!'..=b'~').contains(c)) {
        Ok(())
    } else {
        Err(CommandError::err(
            "Client names cannot contain spaces, newlines or special characters.",
        ))
    }
}

pub fn parse_setinfo(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let attr = args.next_bytes()?;
    let lib_name = if attr.eq_ignore_ascii_case(b"LIB-NAME") {
        true
    } else if attr.eq_ignore_ascii_case(b"LIB-VER") {
        false
    } else {
        return Err(CommandError::err_owned(format!(
            "Unrecognized option '{}'",
            String::from_utf8_lossy(attr)
        )));
    };
    let value = args.next_bytes()?.clone();
    args.finish()?;
    if !value.iter().all(|c| (b'!'..=b'~').contains(c)) {
        return Err(CommandError::err_owned(format!(
            "{} cannot contain spaces, newlines or special characters.",
            if lib_name { "lib-name" } else { "lib-ver" }
        )));
    }
    Ok(Command::Client(ClientCmd::SetInfo { lib_name, value }))
}

fn parse_type(args: &mut Args<'_>) -> Result<bool, CommandError> {
    let kind = args.next_bytes()?;
    match kind.to_ascii_lowercase().as_slice() {
        b"normal" => Ok(false),
        b"master" | b"replica" | b"slave" | b"pubsub" => Ok(true),
        _ => Err(CommandError::err_owned(format!(
            "Unknown client type '{}'",
            String::from_utf8_lossy(kind)
        ))),
    }
}

fn parse_id_value(raw: &[u8]) -> Result<u64, CommandError> {
    crate::protocol::request::parse_i64(raw)
        .and_then(|n| u64::try_from(n).ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| CommandError::err("Invalid client ID"))
}

/// `CLIENT LIST [TYPE normal|master|replica|pubsub] [ID id [id ...]]`
pub fn parse_list(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let mut filter = ListFilter::default();
    while !args.is_empty() {
        if args.eat("TYPE") {
            filter.none |= parse_type(args)?;
        } else if args.eat("ID") {
            let ids = args.rest();
            if ids.is_empty() {
                return Err(CommandError::Syntax);
            }
            filter.ids = Some(ids.iter().map(|i| parse_id_value(i)).collect::<Result<_, _>>()?);
        } else {
            return Err(CommandError::Syntax);
        }
    }
    Ok(Command::Client(ClientCmd::List { filter }))
}

/// `CLIENT KILL ip:port` or `CLIENT KILL <filter> <value> [<filter> <value> ...]`
pub fn parse_kill(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let mut filter = KillFilter { skip_me: true, ..KillFilter::default() };
    if args.remaining() == 1 {
        filter.legacy = true;
        filter.skip_me = false;
        filter.addr = Some(args.next_lossy()?);
        return Ok(Command::Client(ClientCmd::Kill(filter)));
    }
    while !args.is_empty() {
        let key = args.next_lossy()?.to_ascii_uppercase();
        if args.is_empty() {
            return Err(CommandError::Syntax);
        }
        match key.as_str() {
            "ID" => filter.id = Some(parse_id_value(args.next_bytes()?)?),
            "ADDR" => filter.addr = Some(args.next_lossy()?),
            "LADDR" => filter.laddr = Some(args.next_lossy()?),
            "USER" => filter.user = Some(args.next_lossy()?),
            "TYPE" => filter.none |= parse_type(args)?,
            "MAXAGE" => {
                let age = args.next_i64()?;
                filter.max_age = Some(u64::try_from(age).map_err(|_| CommandError::NotInteger)?);
            }
            "SKIPME" => {
                let v = args.next_lossy()?.to_ascii_lowercase();
                filter.skip_me = match v.as_str() {
                    "yes" => true,
                    "no" => false,
                    _ => return Err(CommandError::Syntax),
                };
            }
            _ => return Err(CommandError::Syntax),
        }
    }
    Ok(Command::Client(ClientCmd::Kill(filter)))
}

fn addr_matches(addr: &PeerAddr, wanted: &str) -> bool {
    addr.to_string() == wanted
}

fn kill_matches(f: &KillFilter, c: &Arc<ClientHandle>, me: u64) -> bool {
    let skipped = f.skip_me && c.id == me;
    !f.none
        && !skipped
        && f.id.is_none_or(|id| id == c.id)
        && f.addr.as_deref().is_none_or(|a| addr_matches(&c.addr, a))
        && f.laddr.as_deref().is_none_or(|a| addr_matches(&c.laddr, a))
        && f.user.as_deref().is_none_or(|u| c.info().user == u)
        && f.max_age.is_none_or(|age| c.created.elapsed().as_secs() >= age)
}

pub fn execute(cmd: ClientCmd, ctx: &mut Ctx<'_>) -> Result<Reply, CommandError> {
    let me = &ctx.session.client;
    match cmd {
        ClientCmd::Id => Ok(Reply::Integer(i64::try_from(me.id).unwrap_or(i64::MAX))),
        ClientCmd::GetName => Ok(Reply::bulk_or_null(me.info().name.clone())),
        ClientCmd::SetName(name) => {
            validate_name(&name)?;
            me.info().name = (!name.is_empty()).then_some(name);
            Ok(Reply::ok())
        }
        ClientCmd::SetInfo { lib_name, value } => {
            let mut info = me.info();
            let slot = if lib_name { &mut info.lib_name } else { &mut info.lib_ver };
            *slot = (!value.is_empty()).then_some(value);
            Ok(Reply::ok())
        }
        ClientCmd::Info => {
            // The connection records a batch's last command after the batch; a client asking
            // about itself should already see this command, as in Redis.
            me.info().last_command = "client|info";
            Ok(Reply::Verbatim(format!("{}\n", me.describe())))
        }
        ClientCmd::List { filter } => {
            me.info().last_command = "client|list";
            let mut out = String::new();
            if !filter.none {
                for c in ctx.node.clients.all() {
                    if filter.ids.as_ref().is_none_or(|ids| ids.contains(&c.id)) {
                        out.push_str(&c.describe());
                        out.push('\n');
                    }
                }
            }
            Ok(Reply::Verbatim(out))
        }
        ClientCmd::Kill(filter) => {
            let mut killed = 0i64;
            for c in ctx.node.clients.all() {
                if kill_matches(&filter, &c, me.id) {
                    killed += 1;
                    if c.id == me.id {
                        ctx.session.close_after_reply = true;
                    } else {
                        c.kill.cancel();
                    }
                }
            }
            if filter.legacy {
                return if killed > 0 {
                    Ok(Reply::ok())
                } else {
                    Err(CommandError::err("No such client"))
                };
            }
            Ok(Reply::Integer(killed))
        }
    }
}
