//! `SESSION.ATTRIBUTE LIST|SET` (reference section 4.2), with the reference's error texts.

use bytes::Bytes;

use super::args::Args;
use super::{Command, Ctx};
use crate::error::CommandError;
use crate::protocol::reply::Reply;
use crate::session::{DocumentFormat, ObjectIdFormat};

#[derive(Debug)]
pub enum AttributeCmd {
    List,
    Set { name: String, value: Bytes },
}

/// `SESSION.ATTRIBUTE LIST` | `SESSION.ATTRIBUTE SET <attribute> <value>`
pub fn parse_attribute(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let sub = args.next_lossy()?;
    if sub.eq_ignore_ascii_case("LIST") {
        args.finish()?;
        return Ok(Command::SessionAttribute(AttributeCmd::List));
    }
    if !sub.eq_ignore_ascii_case("SET") {
        return Err(CommandError::err_owned(format!("Invalid subcommand status: {sub}")));
    }
    if args.remaining() != 2 {
        return Err(CommandError::err("invalid number of parameters"));
    }
    let name = args.next_lossy()?;
    let value = args.next_bytes()?.clone();
    Ok(Command::SessionAttribute(AttributeCmd::Set { name, value }))
}

pub fn attribute(cmd: AttributeCmd, ctx: &mut Ctx<'_>) -> Result<Reply, CommandError> {
    let attrs = &mut ctx.session.attributes;
    match cmd {
        AttributeCmd::List => Ok(Reply::Map(vec![
            (Reply::bulk_str("reply_type"), Reply::bulk_str(attrs.reply_type.name())),
            (Reply::bulk_str("input_type"), Reply::bulk_str(attrs.input_type.name())),
            (Reply::bulk_str("limit"), Reply::Integer(i64::from(attrs.limit))),
            (Reply::bulk_str("object_id_format"), Reply::bulk_str(attrs.object_id_format.name())),
        ])),
        AttributeCmd::Set { name, value } => {
            let text = String::from_utf8_lossy(&value);
            match name.to_ascii_lowercase().as_str() {
                "reply_type" => {
                    attrs.reply_type = DocumentFormat::parse(&text).ok_or_else(|| {
                        CommandError::err_owned(format!("Invalid reply type: {text}"))
                    })?;
                }
                "input_type" => {
                    attrs.input_type = DocumentFormat::parse(&text).ok_or_else(|| {
                        CommandError::err_owned(format!("Invalid input type: {text}"))
                    })?;
                }
                "limit" => {
                    let limit = crate::protocol::request::parse_i64(&value)
                        .and_then(|n| i32::try_from(n).ok())
                        .ok_or_else(|| CommandError::err("value is not a int or out of range"))?;
                    attrs.limit = u32::try_from(limit)
                        .ok()
                        .filter(|l| *l > 0)
                        .ok_or_else(|| CommandError::err("'limit' must be greater than 0"))?;
                }
                "object_id_format" => {
                    attrs.object_id_format = ObjectIdFormat::parse(&text).ok_or_else(|| {
                        CommandError::err_owned(format!("Invalid versionstamp format: {text}"))
                    })?;
                }
                _ => {
                    return Err(CommandError::err_owned(format!(
                        "Invalid session attribute: '{name}'"
                    )));
                }
            }
            Ok(Reply::ok())
        }
    }
}
