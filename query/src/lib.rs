//! BQL, the bucket query language: input decoding (BSON or relaxed JSON with MongoDB extended
//! JSON), the filter AST and its parser, the evaluator with the type rules of reference sections
//! 5.2 to 5.4, update operators (5.5) and projection (5.11). Still to come with the index issue:
//! the logical and physical plans.
//!
//! It is pure: no I/O, and it depends on no other crate of ours, so every rule can be unit-tested
//! on plain values.

pub mod error;
pub mod eval;
pub mod filter;
pub mod input;
pub mod projection;
pub mod update;
pub mod value;

pub use error::ParseError;
pub use eval::matches;
pub use filter::{Filter, Pred, parse_filter};
pub use input::{decode_document, is_bson};
