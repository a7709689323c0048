//! `NAMESPACE CREATE|USE|CURRENT|EXISTS|LIST|REMOVE|PURGE|MOVE` (reference section 4.4).
//!
//! Names are dotted paths (`production.users`). `USE` changes only the session's current
//! namespace; the others are isolated metadata transactions of the cluster control plane.

use super::args::Args;
use super::{Command, Ctx};
use crate::error::CommandError;
use crate::protocol::reply::Reply;

#[derive(Debug)]
pub enum NamespaceCmd {
    Create(String),
    Use(String),
    Current,
    Exists(String),
    List(Option<String>),
    Remove(String),
    Purge(String),
    Move(String, String),
}

fn one(args: &mut Args<'_>) -> Result<String, CommandError> {
    let name = args.next_lossy()?;
    args.finish()?;
    Ok(name)
}

pub fn parse_create(args: &mut Args<'_>) -> Result<Command, CommandError> {
    Ok(Command::Namespace(NamespaceCmd::Create(one(args)?)))
}

pub fn parse_use(args: &mut Args<'_>) -> Result<Command, CommandError> {
    Ok(Command::Namespace(NamespaceCmd::Use(one(args)?)))
}

pub fn parse_current(args: &mut Args<'_>) -> Result<Command, CommandError> {
    args.finish().map(|()| Command::Namespace(NamespaceCmd::Current))
}

pub fn parse_exists(args: &mut Args<'_>) -> Result<Command, CommandError> {
    Ok(Command::Namespace(NamespaceCmd::Exists(one(args)?)))
}

pub fn parse_list(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let name = args.next_opt().map(|b| String::from_utf8_lossy(b).into_owned());
    if !args.is_empty() {
        return Err(args.arity_error());
    }
    Ok(Command::Namespace(NamespaceCmd::List(name)))
}

pub fn parse_remove(args: &mut Args<'_>) -> Result<Command, CommandError> {
    Ok(Command::Namespace(NamespaceCmd::Remove(one(args)?)))
}

pub fn parse_purge(args: &mut Args<'_>) -> Result<Command, CommandError> {
    Ok(Command::Namespace(NamespaceCmd::Purge(one(args)?)))
}

pub fn parse_move(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let old = args.next_lossy()?;
    let new = args.next_lossy()?;
    args.finish()?;
    Ok(Command::Namespace(NamespaceCmd::Move(old, new)))
}

pub async fn execute(cmd: NamespaceCmd, ctx: &mut Ctx<'_>) -> Result<Reply, CommandError> {
    let cluster = &ctx.node.cluster;
    match cmd {
        NamespaceCmd::Create(name) => {
            cluster.namespace_create(&name).await?;
            Ok(Reply::ok())
        }
        NamespaceCmd::Use(name) => {
            cluster.namespace_check(&name).await?;
            ctx.session.namespace = name;
            Ok(Reply::ok())
        }
        NamespaceCmd::Current => Ok(Reply::bulk_str(&ctx.session.namespace)),
        NamespaceCmd::Exists(name) => {
            Ok(Reply::Integer(i64::from(cluster.namespace_exists(&name).await?)))
        }
        NamespaceCmd::List(name) => {
            let names = cluster.namespace_list(name.as_deref()).await?;
            Ok(Reply::Array(names.iter().map(|n| Reply::bulk_str(n)).collect()))
        }
        NamespaceCmd::Remove(name) => {
            cluster.namespace_remove(&name).await?;
            Ok(Reply::ok())
        }
        NamespaceCmd::Purge(name) => {
            cluster.namespace_purge(&name).await?;
            Ok(Reply::ok())
        }
        NamespaceCmd::Move(old, new) => {
            cluster.namespace_move(&old, &new).await?;
            Ok(Reply::ok())
        }
    }
}
