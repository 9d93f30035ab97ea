//! The LAPI stream parser: never panics, and gives the same answer however the body is cut.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use nb_proxy::internals::{parse_stream, DecisionFilter};

/// Hands out the body in chunks whose sizes come from the input's first bytes.
struct Chunked<'a> {
    rest: &'a [u8],
    sizes: &'a [u8],
    next: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let size = match self.sizes {
            [] => usize::MAX,
            s => usize::from(s[self.next % s.len()]).max(1),
        };
        self.next += 1;
        let n = size.min(buf.len()).min(self.rest.len());
        buf[..n].copy_from_slice(&self.rest[..n]);
        self.rest = &self.rest[n..];
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    let (sizes, body) = data.split_at(
        data.len()
            .min(usize::from(data.first().copied().unwrap_or(0) % 8)),
    );
    let filter = DecisionFilter::default();
    let whole = parse_stream(body, &filter, 10_000).map(|b| (b.new, b.deleted, b.types, b.skipped));
    let chunked = parse_stream(
        Chunked {
            rest: body,
            sizes,
            next: 0,
        },
        &filter,
        10_000,
    )
    .map(|b| (b.new, b.deleted, b.types, b.skipped));
    match (whole, chunked) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        (a, b) => panic!("whole {:?} but chunked {:?}", a.is_ok(), b.is_ok()),
    }
});
