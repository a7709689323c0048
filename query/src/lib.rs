//! BQL, the bucket query language: parse -> AST -> logical plan -> physical plan, the evaluator,
//! projection and update operators.
//!
//! It is pure: no I/O, and it depends on no other crate of ours, so every rule can be unit-tested
//! on plain values.
