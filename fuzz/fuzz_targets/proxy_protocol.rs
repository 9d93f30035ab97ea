//! The PROXY protocol reader: never panics; the bytes it hands back after the header, followed
//! by what is still unread, are exactly the rest of the input; and a connection that does not
//! start with a header loses none of its bytes.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use nb_proxy::internals::read_header;

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut unread = data;
    if let Ok(header) = rt.block_on(read_header(&mut unread, Duration::from_secs(1))) {
        let rest = [&header.rest[..], unread].concat();
        assert!(
            data.ends_with(&rest),
            "bytes after the header were lost or changed"
        );
        if header.source.is_none() && header.rest.len() + unread.len() != data.len() {
            // Only a LOCAL/UNKNOWN header may consume bytes without naming a source.
            assert!(
                data.starts_with(b"PROXY ") || data.starts_with(b"\r\n\r\n\0\r\nQUIT\n"),
                "no header, yet bytes were consumed"
            );
        }
    }
});
