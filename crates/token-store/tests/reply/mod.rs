//! Reading script replies, shared by the script suites (`scripts.rs`, `audit_scripts.rs`).

use deadpool_redis::redis::{RedisError, Value};

/// A script reply flattened to strings: an array becomes its elements, a scalar one element.
pub fn texts(value: Value) -> Vec<String> {
    match value {
        Value::Array(items) => items.into_iter().flat_map(texts).collect(),
        Value::BulkString(bytes) => vec![String::from_utf8(bytes).expect("UTF-8 reply")],
        Value::SimpleString(text) => vec![text],
        Value::Int(n) => vec![n.to_string()],
        Value::Nil => vec![],
        other => panic!("unexpected reply {other:?}"),
    }
}

/// The call failed with an error reply containing `expected`.
pub fn assert_invalid(result: Result<Vec<String>, RedisError>, expected: &str, case: &str) {
    match result {
        Ok(reply) => panic!("{case}: expected an error reply, got {reply:?}"),
        Err(err) => assert!(
            err.to_string().contains(expected),
            "{case}: expected {expected:?} in the error, got {err}"
        ),
    }
}
