//! Errors with FoundationDB's numeric codes, names and texts.
//!
//! `MetaError` is a code, like `foundationdb::FdbError`, so it crosses backends unchanged and the
//! retry loop can classify it. Callers that wrap it must keep it reachable through `source()`
//! (never stringify it): `RunError` does, and `run` walks the chain to decide whether to retry.

use std::fmt;

/// A metadata-store error: a FoundationDB error code.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MetaError {
    code: i32,
}

/// Result alias for metadata-store operations.
pub type MetaResult<T> = Result<T, MetaError>;

/// The codes we produce or pass through, with FoundationDB's names and texts
/// (`flow/error_definitions.h`).
const TABLE: &[(i32, &str, &str)] = &[
    (1000, "operation_failed", "Operation failed"),
    (1004, "timed_out", "Operation timed out"),
    (1007, "transaction_too_old", "Transaction is too old to perform reads or be committed"),
    (1009, "future_version", "Request for future version"),
    (1020, "not_committed", "Transaction not committed due to conflict with another transaction"),
    (1021, "commit_unknown_result", "Transaction may or may not have committed"),
    (1025, "transaction_cancelled", "Operation aborted because the transaction was cancelled"),
    (1031, "transaction_timed_out", "Operation aborted because the transaction timed out"),
    (1032, "too_many_watches", "Too many watches currently set"),
    (1036, "accessed_unreadable", "Read or wrote an unreadable key"),
    (1037, "process_behind", "Storage process does not have recent mutations"),
    (1038, "database_locked", "Database is locked"),
    (1051, "batch_transaction_throttled", "Batch GRV request rate limit exceeded"),
    (1101, "operation_cancelled", "Asynchronous operation cancelled"),
    (1213, "tag_throttled", "Transaction tag is being throttled"),
    (2000, "client_invalid_operation", "Invalid API call"),
    (2004, "key_outside_legal_range", "Key outside legal range"),
    (2005, "inverted_range", "Range begin key larger than end key"),
    (2006, "invalid_option_value", "Option set with an invalid value"),
    (2017, "used_during_commit", "Operation issued while a commit was outstanding"),
    (
        2021,
        "no_commit_version",
        "Transaction is read-only and therefore does not have a commit version",
    ),
    (2101, "transaction_too_large", "Transaction exceeds byte limit"),
    (2102, "key_too_large", "Key length exceeds limit"),
    (2103, "value_too_large", "Value length exceeds limit"),
    (4100, "unknown_error", "An unknown error occurred"),
];

impl MetaError {
    pub const OPERATION_FAILED: MetaError = MetaError { code: 1000 };
    pub const TRANSACTION_TOO_OLD: MetaError = MetaError { code: 1007 };
    pub const FUTURE_VERSION: MetaError = MetaError { code: 1009 };
    pub const NOT_COMMITTED: MetaError = MetaError { code: 1020 };
    pub const COMMIT_UNKNOWN_RESULT: MetaError = MetaError { code: 1021 };
    pub const TRANSACTION_CANCELLED: MetaError = MetaError { code: 1025 };
    pub const TOO_MANY_WATCHES: MetaError = MetaError { code: 1032 };
    pub const ACCESSED_UNREADABLE: MetaError = MetaError { code: 1036 };
    pub const OPERATION_CANCELLED: MetaError = MetaError { code: 1101 };
    pub const CLIENT_INVALID_OPERATION: MetaError = MetaError { code: 2000 };
    pub const KEY_OUTSIDE_LEGAL_RANGE: MetaError = MetaError { code: 2004 };
    pub const INVERTED_RANGE: MetaError = MetaError { code: 2005 };
    pub const USED_DURING_COMMIT: MetaError = MetaError { code: 2017 };
    pub const NO_COMMIT_VERSION: MetaError = MetaError { code: 2021 };
    pub const TRANSACTION_TOO_LARGE: MetaError = MetaError { code: 2101 };
    pub const KEY_TOO_LARGE: MetaError = MetaError { code: 2102 };
    pub const VALUE_TOO_LARGE: MetaError = MetaError { code: 2103 };

    /// The error with this code (any code; unknown ones keep their number).
    pub const fn from_code(code: i32) -> MetaError {
        MetaError { code }
    }

    pub const fn code(self) -> i32 {
        self.code
    }

    fn entry(self) -> Option<&'static (i32, &'static str, &'static str)> {
        TABLE.iter().find(|(c, _, _)| *c == self.code)
    }

    /// FoundationDB's name, such as `not_committed`.
    pub fn name(self) -> &'static str {
        self.entry().map_or("unknown_error", |e| e.1)
    }

    /// FoundationDB's description, such as "Transaction not committed due to conflict with
    /// another transaction".
    pub fn message(self) -> &'static str {
        self.entry().map_or("An unknown error occurred", |e| e.2)
    }

    /// Whether a fresh attempt of the same transaction may succeed (FoundationDB's
    /// `fdb_error_predicate(FDB_ERROR_PREDICATE_RETRYABLE, …)`).
    pub fn is_retryable(self) -> bool {
        matches!(self.code, 1007 | 1009 | 1020 | 1021 | 1037 | 1051 | 1213)
    }

    /// Whether the transaction may have committed although an error was reported.
    pub fn is_maybe_committed(self) -> bool {
        self.code == 1021
    }
}

impl fmt::Debug for MetaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MetaError({} {})", self.code, self.name())
    }
}

impl fmt::Display for MetaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message(), self.code)
    }
}

impl std::error::Error for MetaError {}

/// The error of a `Database::run` closure: a metadata error, or the caller's own error, which
/// stops the retry loop unless a `MetaError` is found in its `source()` chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// The caller's error. Keep any `MetaError` inside reachable through `source()`.
    #[error(transparent)]
    Custom(Box<dyn std::error::Error + Send + Sync>),
}

impl RunError {
    /// The `MetaError` this error is or wraps, if any.
    pub fn meta(&self) -> Option<MetaError> {
        match self {
            RunError::Meta(e) => Some(*e),
            RunError::Custom(e) => {
                let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e.as_ref());
                while let Some(err) = cur {
                    if let Some(m) = err.downcast_ref::<MetaError>() {
                        return Some(*m);
                    }
                    cur = err.source();
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_names_and_classes() {
        assert_eq!(MetaError::NOT_COMMITTED.name(), "not_committed");
        assert_eq!(
            MetaError::NOT_COMMITTED.message(),
            "Transaction not committed due to conflict with another transaction"
        );
        assert!(MetaError::NOT_COMMITTED.is_retryable());
        assert!(MetaError::TRANSACTION_TOO_OLD.is_retryable());
        assert!(MetaError::COMMIT_UNKNOWN_RESULT.is_maybe_committed());
        assert!(!MetaError::KEY_TOO_LARGE.is_retryable());
        assert_eq!(MetaError::from_code(9999).name(), "unknown_error");
        assert_eq!(MetaError::from_code(9999).code(), 9999);
    }

    #[test]
    fn run_error_finds_the_code_through_source() {
        #[derive(Debug, thiserror::Error)]
        #[error("index update failed")]
        struct Wrapper(#[source] MetaError);
        let e = RunError::Custom(Box::new(Wrapper(MetaError::NOT_COMMITTED)));
        assert_eq!(e.meta(), Some(MetaError::NOT_COMMITTED));
        let e = RunError::Custom("plain".into());
        assert_eq!(e.meta(), None);
    }
}
