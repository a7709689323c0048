//! Parse errors: every one reaches the client as `ERR BQL parse error: <message>`.

/// Why a filter, document or update could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("BQL parse error: {0}")]
pub struct ParseError(pub String);

impl ParseError {
    pub fn new(msg: impl Into<String>) -> Self {
        ParseError(msg.into())
    }
}
