//! Bucket names from client data: distinct part lists give distinct names, and every name fits a
//! store.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ratelimit_core::{BucketKey, MAX_KEY_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Split at every NUL into parts, and compare with the same parts split once more.
    let parts: Vec<&str> = text.split('\0').collect();
    let name = parts
        .iter()
        .fold(BucketKey::new("fuzz"), |key, part| key.part(part))
        .finish();
    assert!(!name.is_empty() && name.len() <= MAX_KEY_LEN);
    let joined = BucketKey::new("fuzz").part(&parts.concat()).finish();
    if parts.len() > 1 {
        assert_ne!(name, joined, "{parts:?}");
    }
});
