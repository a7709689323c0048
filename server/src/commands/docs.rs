//! `COMMAND`, `COMMAND COUNT|INFO|DOCS|LIST` and the `HELP` subcommands, all generated from the
//! command table so they can never disagree with what the server really accepts.

use bytes::Bytes;

use super::args::Args;
use super::{COMMANDS, Command, CommandSpec, flags, lookup};
use crate::error::CommandError;
use crate::protocol::reply::Reply;

#[derive(Debug)]
pub enum CommandCmd {
    All,
    Count,
    Info(Vec<Bytes>),
    Docs(Vec<Bytes>),
    List(ListFilter),
}

#[derive(Debug)]
pub enum ListFilter {
    None,
    Module,
    AclCat(String),
    Pattern(Bytes),
}

pub fn parse_all(args: &mut Args<'_>) -> Result<Command, CommandError> {
    args.finish().map(|()| Command::CommandInfo(CommandCmd::All))
}

pub fn parse_count(args: &mut Args<'_>) -> Result<Command, CommandError> {
    args.finish().map(|()| Command::CommandInfo(CommandCmd::Count))
}

pub fn parse_info(args: &mut Args<'_>) -> Result<Command, CommandError> {
    Ok(Command::CommandInfo(CommandCmd::Info(args.rest().to_vec())))
}

pub fn parse_docs(args: &mut Args<'_>) -> Result<Command, CommandError> {
    Ok(Command::CommandInfo(CommandCmd::Docs(args.rest().to_vec())))
}

/// `COMMAND LIST [FILTERBY MODULE name | ACLCAT category | PATTERN pattern]`
pub fn parse_list(args: &mut Args<'_>) -> Result<Command, CommandError> {
    if args.is_empty() {
        return Ok(Command::CommandInfo(CommandCmd::List(ListFilter::None)));
    }
    if !args.eat("FILTERBY") {
        return Err(CommandError::Syntax);
    }
    let filter = if args.eat("MODULE") {
        args.next_bytes()?;
        ListFilter::Module
    } else if args.eat("ACLCAT") {
        ListFilter::AclCat(args.next_lossy()?.to_ascii_lowercase())
    } else if args.eat("PATTERN") {
        ListFilter::Pattern(args.next_bytes()?.clone())
    } else {
        return Err(CommandError::Syntax);
    };
    args.finish()?;
    Ok(Command::CommandInfo(CommandCmd::List(filter)))
}

/// Finds a command or a `container|sub` subcommand by name.
fn find(name: &[u8]) -> Option<&'static CommandSpec> {
    let mut parts = name.splitn(2, |b| *b == b'|');
    let top = lookup(parts.next()?)?;
    match parts.next() {
        None => Some(top),
        Some(sub) => top.subcommands().iter().find(|s| s.name.as_bytes().eq_ignore_ascii_case(sub)),
    }
}

/// The 10-element array Redis 7 gives for a command in `COMMAND` and `COMMAND INFO`.
fn info_reply(spec: &CommandSpec) -> Reply {
    let flag_names = flags::NAMES
        .iter()
        .filter(|(bit, _)| spec.has_flag(*bit))
        .map(|(_, name)| Reply::simple(name))
        .collect();
    let (first, last, step) = spec.keys;
    Reply::Array(vec![
        Reply::bulk_str(spec.full),
        Reply::Integer(i64::from(spec.arity)),
        Reply::Set(flag_names),
        Reply::Integer(i64::from(first)),
        Reply::Integer(i64::from(last)),
        Reply::Integer(i64::from(step)),
        Reply::Set(spec.categories.iter().map(|c| Reply::simple(c)).collect()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(spec.subcommands().iter().map(info_reply).collect()),
    ])
}

fn docs_reply(spec: &CommandSpec) -> Reply {
    let mut doc = vec![
        (Reply::bulk_str("summary"), Reply::bulk_str(spec.summary)),
        (Reply::bulk_str("since"), Reply::bulk_str(spec.since)),
        (Reply::bulk_str("group"), Reply::bulk_str(spec.group)),
    ];
    let subs = spec.subcommands();
    if !subs.is_empty() {
        doc.push((
            Reply::bulk_str("subcommands"),
            Reply::Map(subs.iter().map(|s| (Reply::bulk_str(s.full), docs_reply(s))).collect()),
        ));
    }
    Reply::Map(doc)
}

pub fn execute(cmd: CommandCmd) -> Reply {
    match cmd {
        CommandCmd::All => Reply::Array(COMMANDS.iter().map(info_reply).collect()),
        CommandCmd::Count => Reply::Integer(i64::try_from(COMMANDS.len()).unwrap_or(i64::MAX)),
        CommandCmd::Info(names) if names.is_empty() => {
            Reply::Array(COMMANDS.iter().map(info_reply).collect())
        }
        CommandCmd::Info(names) => {
            Reply::Array(names.iter().map(|n| find(n).map_or(Reply::Null, info_reply)).collect())
        }
        CommandCmd::Docs(names) => {
            let specs: Vec<&CommandSpec> = if names.is_empty() {
                COMMANDS.iter().collect()
            } else {
                names.iter().filter_map(|n| find(n)).collect()
            };
            Reply::Map(
                specs.into_iter().map(|s| (Reply::bulk_str(s.full), docs_reply(s))).collect(),
            )
        }
        CommandCmd::List(filter) => Reply::Array(
            COMMANDS
                .iter()
                .filter(|spec| match &filter {
                    ListFilter::None => true,
                    ListFilter::Module => false,
                    ListFilter::AclCat(cat) => {
                        spec.categories.iter().any(|c| c.trim_start_matches('@') == cat)
                    }
                    ListFilter::Pattern(p) => {
                        kronotop_redis::glob::matches(p, spec.full.as_bytes(), true)
                    }
                })
                .map(|spec| Reply::bulk_str(spec.full))
                .collect(),
        ),
    }
}

/// `<CONTAINER> HELP`: one line naming the container, then each subcommand and its summary.
pub fn help(container: &'static str) -> Reply {
    let Some(spec) = lookup(container.as_bytes()) else {
        return Reply::Array(Vec::new());
    };
    let mut lines = vec![Reply::Simple(
        format!("{container} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:").into(),
    )];
    for sub in spec.subcommands() {
        lines.push(Reply::simple(sub.name));
        lines.push(Reply::Simple(format!("    {}", sub.summary).into()));
    }
    Reply::Array(lines)
}
