//! Connection commands: `PING`, `ECHO`, `TIME`, `AUTH`, `HELLO` (and `QUIT`, handled in dispatch).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::args::Args;
use super::client::validate_name;
use super::{Command, Ctx};
use crate::error::CommandError;
use crate::protocol::reply::{Protocol, Reply};

/// `PING [message]`
pub fn parse_ping(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let msg = args.next_opt().cloned();
    if !args.is_empty() {
        return Err(args.arity_error());
    }
    Ok(Command::Ping(msg))
}

pub fn ping(msg: Option<Bytes>, _ctx: &Ctx<'_>) -> Reply {
    match msg {
        Some(m) => Reply::Bulk(m),
        None => Reply::simple("PONG"),
    }
}

/// `ECHO message`
pub fn parse_echo(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let msg = args.next_bytes()?.clone();
    args.finish()?;
    Ok(Command::Echo(msg))
}

/// `TIME`: wall-clock seconds and microseconds since the Unix epoch, as two bulk strings.
pub fn time() -> Reply {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    Reply::Array(vec![
        Reply::bulk(now.as_secs().to_string()),
        Reply::bulk(now.subsec_micros().to_string()),
    ])
}

/// `AUTH [username] password`
pub fn parse_auth(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let first = args.next_bytes()?.clone();
    let Some(second) = args.next_opt().cloned() else {
        return Ok(Command::Auth { user: None, pass: first });
    };
    args.finish()?;
    Ok(Command::Auth { user: Some(first), pass: second })
}

pub fn auth(user: Option<Bytes>, pass: Bytes, ctx: &mut Ctx<'_>) -> Result<Reply, CommandError> {
    authenticate(user.as_deref(), &pass, ctx)?;
    Ok(Reply::ok())
}

fn authenticate(user: Option<&[u8]>, pass: &[u8], ctx: &mut Ctx<'_>) -> Result<(), CommandError> {
    let ip = ctx.session.client.addr.ip();
    let acl = &ctx.node.auth.acl;
    // A client address that failed too often is not even checked until its window ends, so a
    // password cannot be guessed at the speed of the network.
    if let Some(wait) = acl.locked_out(ip) {
        return Err(CommandError::err_owned(format!(
            "too many failed authentication attempts from this address; retry in {} s",
            wait.as_secs().max(1)
        )));
    }
    let name = match ctx.node.auth.check(user, pass) {
        Ok(name) => name,
        Err(err) => {
            // An empty password is one guess, and what members without `auth.masterauth` send
            // each other, so it does not count towards the limit.
            if matches!(err, CommandError::WrongPass) && !pass.is_empty() {
                acl.failed(ip);
            }
            return Err(err);
        }
    };
    acl.succeeded(ip);
    ctx.session.authenticated = true;
    ctx.session.client.info().user.clone_from(&name);
    ctx.session.user = name;
    ctx.session.acl_version = u64::MAX;
    Ok(())
}

/// A parsed `HELLO`.
#[derive(Debug)]
pub struct Hello {
    protocol: Option<Protocol>,
    auth: Option<(Bytes, Bytes)>,
    setname: Option<Bytes>,
}

/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`
pub fn parse_hello(args: &mut Args<'_>) -> Result<Command, CommandError> {
    let mut hello = Hello { protocol: None, auth: None, setname: None };
    let Some(ver) = args.next_opt() else {
        // Reference section 2.1: HELLO without arguments means protocol 3.
        hello.protocol = Some(Protocol::Resp3);
        return Ok(Command::Hello(hello));
    };
    let ver = crate::protocol::request::parse_i64(ver)
        .ok_or_else(|| CommandError::err("Protocol version is not an integer or out of range"))?;
    hello.protocol = Some(match ver {
        2 => Protocol::Resp2,
        3 => Protocol::Resp3,
        _ => return Err(CommandError::NoProto),
    });
    while let Some(opt) = args.next_opt() {
        let syntax = || {
            CommandError::err_owned(format!(
                "Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(opt)
            ))
        };
        if opt.eq_ignore_ascii_case(b"AUTH") {
            let user = args.next_opt().ok_or_else(syntax)?.clone();
            let pass = args.next_opt().ok_or_else(syntax)?.clone();
            hello.auth = Some((user, pass));
        } else if opt.eq_ignore_ascii_case(b"SETNAME") {
            hello.setname = Some(args.next_opt().ok_or_else(syntax)?.clone());
        } else {
            return Err(syntax());
        }
    }
    Ok(Command::Hello(hello))
}

pub fn hello(hello: Hello, ctx: &mut Ctx<'_>) -> Result<Reply, CommandError> {
    if let Some((user, pass)) = &hello.auth {
        authenticate(Some(user), pass, ctx)?;
    }
    if !ctx.session.authenticated {
        return Err(CommandError::HelloNoAuth);
    }
    if let Some(name) = &hello.setname {
        validate_name(name)?;
    }
    if let Some(name) = hello.setname {
        ctx.session.client.info().name = (!name.is_empty()).then_some(name);
    }
    if let Some(protocol) = hello.protocol {
        ctx.session.protocol = protocol;
        ctx.session.client.info().resp = protocol.version();
    }
    // Reference section 2.3: in RESP2 the keys and string values are simple strings; in RESP3 the
    // reply is a map of bulk strings.
    let text = |s: &str| match ctx.session.protocol {
        Protocol::Resp2 => Reply::Simple(s.to_owned().into()),
        Protocol::Resp3 => Reply::bulk_str(s),
    };
    Ok(Reply::Map(vec![
        (text("server"), text("Kronotop")),
        (text("version"), text(env!("CARGO_PKG_VERSION"))),
        (text("proto"), Reply::Integer(ctx.session.protocol.version())),
        (text("id"), Reply::Integer(i64::try_from(ctx.session.client.id).unwrap_or(i64::MAX))),
        (text("mode"), text("cluster")),
        (text("role"), text("master")),
        (text("modules"), Reply::Array(Vec::new())),
    ]))
}
