//! `ACL CAT|DELUSER|GETUSER|LIST|SETUSER|USERS|WHOAMI`: users stored in the metadata store, as
//! `crate::acl` describes, with Redis's replies.

use super::args::Args;
use super::{Command, Ctx};
use crate::acl::AclUser;
use crate::error::CommandError;
use crate::node::DEFAULT_USER;
use crate::protocol::reply::Reply;

/// A parsed `ACL` subcommand.
#[derive(Debug)]
pub enum AclCmd {
    Cat(Option<String>),
    DelUser(Vec<String>),
    GetUser(String),
    List,
    SetUser(String, Vec<String>),
    Users,
    WhoAmI,
}

fn cmd(c: AclCmd) -> Command {
    Command::Acl(c)
}

pub fn parse_cat(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let category = args.next_opt().map(|b| String::from_utf8_lossy(b).to_ascii_lowercase());
    args.finish()?;
    Ok(cmd(AclCmd::Cat(category)))
}

pub fn parse_deluser(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let names = args.rest().iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect();
    Ok(cmd(AclCmd::DelUser(names)))
}

pub fn parse_getuser(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let name = args.next_lossy()?;
    args.finish()?;
    Ok(cmd(AclCmd::GetUser(name)))
}

pub fn parse_list(args: &mut Args<'_>) -> Result<Command, CommandError> {
    args.finish()?;
    Ok(cmd(AclCmd::List))
}

pub fn parse_setuser(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let name = args.next_lossy()?;
    let rules = args.rest().iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect();
    Ok(cmd(AclCmd::SetUser(name, rules)))
}

pub fn parse_users(args: &mut Args<'_>) -> Result<Command, CommandError> {
    args.finish()?;
    Ok(cmd(AclCmd::Users))
}

pub fn parse_whoami(args: &mut Args<'_>) -> Result<Command, CommandError> {
    args.finish()?;
    Ok(cmd(AclCmd::WhoAmI))
}

/// The user `name` as ACL shows it: stored, else configured.
fn effective(ctx: &Ctx<'_>, name: &str) -> Option<AclUser> {
    match ctx.node.auth.acl.get(name) {
        Some(u) => Some((*u).clone()),
        None => ctx.node.auth.configured(name),
    }
}

/// Every user name, stored and configured, sorted.
fn names(ctx: &Ctx<'_>) -> Vec<String> {
    let mut all: Vec<String> = ctx.node.auth.acl.all().keys().cloned().collect();
    all.extend(ctx.node.auth.configured_names());
    all.sort();
    all.dedup();
    all
}

fn store_error(e: crate::acl::StoreError) -> CommandError {
    match e {
        crate::acl::StoreError::Meta(m) => CommandError::Meta(m),
        other => CommandError::err_owned(other.to_string()),
    }
}

/// Runs an `ACL` subcommand.
///
/// # Errors
///
/// Redis's texts for bad rules and the default user; metadata errors.
pub async fn execute(c: AclCmd, ctx: &mut Ctx<'_>) -> Result<Reply, CommandError> {
    match c {
        AclCmd::WhoAmI => Ok(Reply::bulk_str(&ctx.session.user)),
        AclCmd::Users => Ok(Reply::Array(names(ctx).iter().map(|n| Reply::bulk_str(n)).collect())),
        AclCmd::List => Ok(Reply::Array(
            names(ctx)
                .iter()
                .filter_map(|n| effective(ctx, n))
                .map(|u| Reply::bulk_str(&format!("user {} {}", u.name, u.describe())))
                .collect(),
        )),
        AclCmd::Cat(None) => {
            Ok(Reply::Array(crate::acl::categories().iter().map(|c| Reply::bulk_str(c)).collect()))
        }
        AclCmd::Cat(Some(category)) => {
            if !crate::acl::categories().contains(&category) {
                return Err(CommandError::err_owned(format!("Unknown category '{category}'")));
            }
            let tag = format!("@{category}");
            let mut out = Vec::new();
            for spec in super::COMMANDS {
                if spec.categories.contains(&tag.as_str()) {
                    out.push(Reply::bulk_str(spec.full));
                }
                for sub in spec.subcommands() {
                    if sub.categories.contains(&tag.as_str()) {
                        out.push(Reply::bulk_str(sub.full));
                    }
                }
            }
            Ok(Reply::Array(out))
        }
        AclCmd::GetUser(name) => Ok(match effective(ctx, &name) {
            None => Reply::Null,
            Some(u) => {
                let s = Reply::bulk_str;
                let mut flags = vec![s(if u.enabled { "on" } else { "off" })];
                if u.nopass {
                    flags.push(s("nopass"));
                }
                let keys = u.keys.iter().map(|k| format!("~{k}")).collect::<Vec<_>>().join(" ");
                let namespaces =
                    u.namespaces.iter().map(|n| format!("ns~{n}")).collect::<Vec<_>>().join(" ");
                Reply::Map(vec![
                    (s("flags"), Reply::Array(flags)),
                    (s("passwords"), Reply::Array(u.passwords.iter().map(|p| s(p)).collect())),
                    (s("commands"), s(&u.commands.join(" "))),
                    (s("keys"), s(&keys)),
                    (s("channels"), s("")),
                    (s("namespaces"), s(&namespaces)),
                    (s("selectors"), Reply::Array(Vec::new())),
                ])
            }
        }),
        AclCmd::SetUser(name, rules) => {
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(CommandError::err("Usernames can't contain spaces or null characters"));
            }
            let mut user = match ctx.node.auth.acl.get(&name) {
                Some(u) => (*u).clone(),
                // A configured user keeps its password and permissions as the starting point.
                None => ctx.node.auth.configured(&name).unwrap_or_else(|| AclUser::new(&name)),
            };
            let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
            user.apply(&rules).map_err(CommandError::err_owned)?;
            ctx.node.acl_store.save(&name, Some(&user)).await.map_err(store_error)?;
            crate::acl::refresh(ctx.node).await.map_err(store_error)?;
            Ok(Reply::ok())
        }
        AclCmd::DelUser(names) => {
            if names.iter().any(|n| n == DEFAULT_USER) {
                return Err(CommandError::err("The 'default' user cannot be removed"));
            }
            let mut deleted = 0;
            for name in &names {
                if ctx.node.auth.acl.get(name).is_some() {
                    ctx.node.acl_store.save(name, None).await.map_err(store_error)?;
                    deleted += 1;
                }
            }
            crate::acl::refresh(ctx.node).await.map_err(store_error)?;
            Ok(Reply::Integer(deleted))
        }
    }
}
