//! Go durations as the LAPI writes them: never panics, never gives NaN, and a minus sign
//! negates.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nb_proxy::internals::parse_go_duration;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Some(v) = parse_go_duration(s) else {
        return;
    };
    assert!(!v.is_nan(), "{s:?}");
    if !s.starts_with(['-', '+']) {
        assert!(v >= 0.0, "{s:?} gave {v}");
        assert_eq!(parse_go_duration(&format!("-{s}")), Some(-v));
    }
});
