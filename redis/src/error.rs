//! Errors of Redis commands, with Redis 7's texts. The server maps each to its RESP prefix through
//! `RedisError::prefix`.

/// Why a Redis command failed. The connection goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    #[error("Operation against a key holding the wrong kind of value")]
    WrongType,
    #[error("value is not an integer or out of range")]
    NotInteger,
    #[error("value is not a valid float")]
    NotFloat,
    #[error("increment or decrement would overflow")]
    Overflow,
    #[error("increment would produce NaN or Infinity")]
    NanOrInfinity,
    #[error("hash value is not an integer")]
    HashNotInteger,
    #[error("hash value is not a float")]
    HashNotFloat,
    #[error("syntax error")]
    Syntax,
    #[error("no such key")]
    NoSuchKey,
    #[error("invalid expire time in '{0}' command")]
    InvalidExpire(&'static str),
    #[error("wrong number of arguments for '{0}' command")]
    WrongArity(&'static str),
    #[error("string exceeds maximum allowed size (proto-max-bulk-len)")]
    TooBig,
    /// Any other `ERR` text.
    #[error("{0}")]
    Other(String),
}

impl RedisError {
    /// The RESP error prefix.
    pub fn prefix(&self) -> &'static str {
        match self {
            RedisError::WrongType => "WRONGTYPE",
            _ => "ERR",
        }
    }
}
