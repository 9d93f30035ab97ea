//! Writes a small MaxMind-format Country database, for load tests and trying country lists:
//!
//!     cargo run --example make-geo-db -- OUT.mmdb 127.0.0.0/8=DE 2001:db8::/32=FR

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args.next().ok_or("usage: make-geo-db OUT.mmdb NET=CC...")?;
    let mut w = mmdb_writer::Writer::new("GeoLite2-Country");
    for pair in args {
        let (net, cc) = pair.split_once('=').ok_or("expected NET=CC")?;
        let net: ipnet::IpNet = net.parse()?;
        w.insert(net, &serde_json::json!({"country": {"iso_code": cc}}))?;
    }
    std::fs::write(&out, w.to_bytes()?)?;
    Ok(())
}
