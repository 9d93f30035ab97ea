//! The services file (YAML) and management's services (JSON): parsing and compiling never
//! panic, and whatever compiles can be described again and compiles the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nb_proxy::internals::{compile, parse_services, CompileOptions, ServiceSpec};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let opts = CompileOptions::default();
    if let Ok(specs) = parse_services("fuzz.yaml", text) {
        check(specs, &opts);
    }
    if let Ok(specs) = serde_json::from_str::<Vec<ServiceSpec>>(text) {
        check(specs, &opts);
    }
});

fn check(specs: Vec<ServiceSpec>, opts: &CompileOptions) {
    // Certificate files would be read from disk: not what is being fuzzed.
    let specs: Vec<ServiceSpec> = specs
        .into_iter()
        .map(|s| ServiceSpec { tls: None, ..s })
        .collect();
    if let Ok(routes) = compile("fuzz", specs.clone(), opts) {
        let json = serde_json::to_string(&specs).unwrap();
        let again: Vec<ServiceSpec> = serde_json::from_str(&json).unwrap();
        let routes2 = compile("fuzz", again, opts).expect("a compiled set compiles again");
        assert_eq!(routes.services.len(), routes2.services.len());
    }
}
