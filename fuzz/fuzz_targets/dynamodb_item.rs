//! Any item the table could hold: a state, a full bucket, or `BadReply`; never a panic.
#![no_main]

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest).into_owned();
    let value = match kind % 5 {
        0 => AttributeValue::N(text),
        1 => AttributeValue::S(text),
        2 => AttributeValue::Bool(rest.first().is_some_and(|b| b & 1 == 1)),
        3 => AttributeValue::Ns(text.split(',').map(str::to_string).collect()),
        _ => AttributeValue::Null(true),
    };
    let item = HashMap::from([("tat".to_string(), value)]);
    match ratelimit_dynamodb::fuzzing::tat_of(&item) {
        // A state is a non-negative integer written in digits only.
        Ok(Some(_)) => assert!(kind % 5 == 0 && rest.iter().all(u8::is_ascii_digit)),
        Ok(None) | Err(_) => {}
    }
});
