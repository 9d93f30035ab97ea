//! Writes a MaxMind-format Country database, for load tests and trying country lists:
//!
//!     cargo run --example make-geo-db -- OUT.mmdb 127.0.0.0/8=DE 2001:db8::/32=FR
//!     cargo run --example make-geo-db -- OUT.mmdb @networks.txt   # one NET=CC a line

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args
        .next()
        .ok_or("usage: make-geo-db OUT.mmdb NET=CC... | @FILE")?;
    let mut pairs: Vec<String> = Vec::new();
    for arg in args {
        match arg.strip_prefix('@') {
            Some(file) => pairs.extend(std::fs::read_to_string(file)?.lines().map(str::to_owned)),
            None => pairs.push(arg),
        }
    }
    let mut w = mmdb_writer::Writer::new("GeoLite2-Country");
    for pair in pairs.iter().filter(|p| !p.trim().is_empty()) {
        let (net, cc) = pair.split_once('=').ok_or("expected NET=CC")?;
        let net: ipnet::IpNet = net.trim().parse()?;
        w.insert(
            net,
            &serde_json::json!({"country": {"iso_code": cc.trim()}}),
        )?;
    }
    std::fs::write(&out, w.to_bytes()?)?;
    Ok(())
}
