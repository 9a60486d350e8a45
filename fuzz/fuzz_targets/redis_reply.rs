//! Any reply the decision script could be made to return: a verdict or `BadReply`, never a panic,
//! and never "admitted" when a limit's part of the reply says it denied.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ratelimit_core::Policy;

fuzz_target!(|data: &[u8]| {
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let costs: Vec<u32> = (0..count % 4 + 1).map(|i| u32::from(i) + 1).collect();
    let reply: Vec<i64> = rest
        .chunks(8)
        .map(|c| {
            let mut word = [0u8; 8];
            word[..c.len()].copy_from_slice(c);
            i64::from_le_bytes(word)
        })
        .collect();
    let Ok(policy) = Policy::per_second(10) else {
        return;
    };
    if let Ok(true) = ratelimit_redis::fuzzing::parse_reply(&reply, policy, &costs) {
        // Admitted: every limit's flag (the first field of each part) says it admitted.
        for part in reply.get(1..).unwrap_or_default().chunks(6) {
            assert_eq!(part.first(), Some(&1), "admitted over a denial: {reply:?}");
        }
    }
});
