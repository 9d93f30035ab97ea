//! The server-sent-events parser: never panics, and gives the same events however the stream
//! is cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nb_api::sse::SseParser;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let mut whole = SseParser::new(1 << 16);
    let a = whole.push(body);
    let mut split = SseParser::new(1 << 16);
    let at = usize::from(cut).min(body.len());
    let b = split.push(&body[..at]).and_then(|mut first| {
        first.extend(split.push(&body[at..])?);
        Ok(first)
    });
    match (a, b) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("whole {a:?}, split {b:?}"),
    }
});
