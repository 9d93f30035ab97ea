//! Country lookups from a MaxMind-format database (GeoLite2/GeoIP2 Country or City, or any
//! database with the same `country.iso_code` shape).
//!
//! When a record has no `country` (real GeoLite2 does this for some anycast networks, e.g.
//! 1.1.1.1), we fall back to `registered_country`: the country of the organisation that holds the
//! network is a better answer than "unknown", which an allow list would deny.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::{PathElement, Reader};

use crate::restrict::{CountryCode, CountryLookup};

#[derive(Debug, thiserror::Error)]
#[error("cannot load GeoIP database {path}: {source}")]
pub struct GeoError {
    path: PathBuf,
    #[source]
    source: maxminddb::MaxMindDbError,
}

pub struct GeoDb {
    reader: Reader<Vec<u8>>,
}

const COUNTRY: [PathElement<'static>; 2] =
    [PathElement::Key("country"), PathElement::Key("iso_code")];
const REGISTERED: [PathElement<'static>; 2] = [
    PathElement::Key("registered_country"),
    PathElement::Key("iso_code"),
];

fn open_reader(path: &Path) -> Result<Reader<Vec<u8>>, GeoError> {
    Reader::open_readfile(path).map_err(|source| GeoError {
        path: path.to_owned(),
        source,
    })
}

impl GeoDb {
    pub fn open(path: &Path) -> Result<Self, GeoError> {
        Ok(Self {
            reader: open_reader(path)?,
        })
    }

    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }
}

impl CountryLookup for GeoDb {
    fn country(&self, addr: IpAddr) -> Option<CountryCode> {
        let found = self.reader.lookup(addr.to_canonical()).ok()?;
        if !found.has_data() {
            return None;
        }
        // Borrowed &str: no allocation per lookup.
        let code = match found.decode_path::<&str>(&COUNTRY) {
            Ok(Some(code)) => code,
            _ => found.decode_path::<&str>(&REGISTERED).ok()??,
        };
        CountryCode::from_database(code)
    }
}

/// Autonomous-system lookups from a GeoLite2-ASN-format database
/// (`autonomous_system_number`), for CrowdSec's `AS`-scoped decisions.
pub struct AsnDb {
    reader: Reader<Vec<u8>>,
}

const ASN: [PathElement<'static>; 1] = [PathElement::Key("autonomous_system_number")];

impl AsnDb {
    pub fn open(path: &Path) -> Result<Self, GeoError> {
        Ok(Self {
            reader: open_reader(path)?,
        })
    }

    pub fn asn(&self, addr: IpAddr) -> Option<u32> {
        let found = self.reader.lookup(addr.to_canonical()).ok()?;
        if !found.has_data() {
            return None;
        }
        // GeoLite2-ASN stores a uint32; other writers use a wider integer.
        match found.decode_path::<u32>(&ASN) {
            Ok(n) => n,
            Err(_) => found
                .decode_path::<u64>(&ASN)
                .ok()?
                .and_then(|n| u32::try_from(n).ok()),
        }
    }
}
