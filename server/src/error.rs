//! Command errors and the one function that turns them into RESP error lines.
//!
//! Three layers, as in mini-redis: incomplete input is not an error; a protocol error
//! (`protocol::request::ProtocolError`) closes the connection; a `CommandError` becomes an error
//! reply and the connection goes on. Every error line a client sees is built by
//! `CommandError::to_reply`, so the prefix (`ERR`, `NOAUTH`, `WRONGPASS`, …) of each error is
//! decided in one place.

use std::borrow::Cow;

use kronotop_cluster::ClusterError;
use kronotop_meta::MetaError;

use crate::protocol::reply::Reply;

/// An error a command answers with. The connection stays open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// `ERR <text>`: the generic error, with Redis's or Kronotop's text.
    #[error("{0}")]
    Err(Cow<'static, str>),
    #[error("unknown command '{0}'")]
    UnknownCommand(String),
    #[error("wrong number of arguments for '{0}' command")]
    WrongArity(String),
    /// A command served on the other listener only.
    #[error("command '{name}' is served on the {port} port only")]
    WrongPort { name: String, port: &'static str },
    #[error("cluster has not been initialized yet")]
    ClusterNotInitialized,
    #[error("Authentication required.")]
    NoAuth,
    #[error(
        "HELLO must be called with the client already authenticated, otherwise the HELLO <proto> \
         AUTH <user> <pass> option can be used to authenticate the client and select the RESP \
         protocol version at the same time"
    )]
    HelloNoAuth,
    #[error("invalid username-password pair or user is disabled.")]
    WrongPass,
    #[error("unsupported protocol version")]
    NoProto,
    #[error("syntax error")]
    Syntax,
    #[error("value is not an integer or out of range")]
    NotInteger,
    /// A metadata-store error: the client sees `NAME text`, such as `NOT_COMMITTED Transaction
    /// not committed due to conflict with another transaction` (reference section 3.2).
    #[error("{}", .0.message())]
    Meta(MetaError),
    /// An error whose prefix a domain crate chose, such as `NOSUCHNAMESPACE`.
    #[error("{message}")]
    Prefixed { prefix: &'static str, message: String },
}

impl From<MetaError> for CommandError {
    fn from(e: MetaError) -> Self {
        CommandError::Meta(e)
    }
}

impl From<ClusterError> for CommandError {
    /// Metadata errors keep their code; every other cluster error is an `ERR` with its text.
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::Meta(m) => CommandError::Meta(m),
            ClusterError::Namespace(n) => {
                CommandError::Prefixed { prefix: n.prefix(), message: n.to_string() }
            }
            other => CommandError::err_owned(other.to_string()),
        }
    }
}

impl CommandError {
    /// A generic `ERR` error with a fixed text.
    pub const fn err(text: &'static str) -> Self {
        CommandError::Err(Cow::Borrowed(text))
    }

    /// A generic `ERR` error with a computed text.
    pub fn err_owned(text: String) -> Self {
        CommandError::Err(Cow::Owned(text))
    }

    /// The RESP error prefix of this error.
    pub fn prefix(&self) -> String {
        match self {
            CommandError::Meta(m) => m.name().to_ascii_uppercase(),
            CommandError::Prefixed { prefix, .. } => (*prefix).to_owned(),
            other => other.static_prefix().to_owned(),
        }
    }

    fn static_prefix(&self) -> &'static str {
        match self {
            CommandError::Meta(_) | CommandError::Prefixed { .. } => "ERR",
            CommandError::NoAuth | CommandError::HelloNoAuth => "NOAUTH",
            CommandError::WrongPass => "WRONGPASS",
            CommandError::NoProto => "NOPROTO",
            CommandError::Err(_)
            | CommandError::UnknownCommand(_)
            | CommandError::WrongArity(_)
            | CommandError::WrongPort { .. }
            | CommandError::ClusterNotInitialized
            | CommandError::Syntax
            | CommandError::NotInteger => "ERR",
        }
    }

    /// The error line a client receives: `PREFIX message`.
    pub fn to_reply(&self) -> Reply {
        Reply::Error(Cow::Owned(sanitize(format!("{} {}", self.prefix(), self))))
    }
}

/// Error lines are simple strings: a CR or LF inside one would desynchronise the client, so they
/// become spaces (Redis does the same in `addReplyErrorLength`).
fn sanitize(mut line: String) -> String {
    if line.contains(['\r', '\n']) {
        line = line.replace(['\r', '\n'], " ");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_carry_their_prefix() {
        let line = |e: CommandError| match e.to_reply() {
            Reply::Error(s) => s.into_owned(),
            other => panic!("not an error: {other:?}"),
        };
        assert_eq!(
            line(CommandError::UnknownCommand("FOOBAR".into())),
            "ERR unknown command 'FOOBAR'"
        );
        assert_eq!(
            line(CommandError::WrongArity("TICK".into())),
            "ERR wrong number of arguments for 'TICK' command"
        );
        assert_eq!(line(CommandError::NoAuth), "NOAUTH Authentication required.");
        assert_eq!(
            line(CommandError::WrongPass),
            "WRONGPASS invalid username-password pair or user is disabled."
        );
        assert_eq!(line(CommandError::NoProto), "NOPROTO unsupported protocol version");
        assert_eq!(line(CommandError::err_owned("a\r\nb".into())), "ERR a  b");
        assert_eq!(
            line(CommandError::Meta(MetaError::NOT_COMMITTED)),
            "NOT_COMMITTED Transaction not committed due to conflict with another transaction"
        );
        assert_eq!(
            line(CommandError::from(ClusterError::Meta(MetaError::TRANSACTION_TOO_OLD))),
            "TRANSACTION_TOO_OLD Transaction is too old to perform reads or be committed"
        );
        assert_eq!(line(ClusterError::NoPrimary.into()), "ERR no primary member assigned yet");
    }
}
