//! The `/v1/decisions/stream` body, parsed as a stream: each decision becomes a compact change
//! as soon as it is read, so memory follows the number of decisions kept, not the body size.

use std::fmt;
use std::io::Read;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::duration::parse_go_duration;
use super::filter::DecisionFilter;

/// What a decision applies to, canonicalised (IPv4-mapped IPv6 ⇒ IPv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    V4(u32),
    V6(u128),
    Range(IpNet),
}

/// One decision, compact: its target, its type (an index into [`Batch::types`]) and the
/// seconds it has left (0 when already expired or deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub target: Target,
    pub type_index: u8,
    pub remaining_secs: u32,
}

#[derive(Debug, Default)]
pub struct Batch {
    pub deleted: Vec<Change>,
    pub new: Vec<Change>,
    /// Type names seen in this batch (`ban`, `captcha`, …), indexed by `Change::type_index`.
    pub types: Vec<String>,
    /// Decisions ignored: unknown scope, unparseable value or duration, filtered out.
    pub skipped: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("the LAPI answer is not valid decision JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the LAPI answer has more than {0} decisions")]
    TooManyDecisions(usize),
    #[error("the LAPI answer has more than {0} distinct decision types")]
    TooManyTypes(usize),
}

/// At most this many distinct types per batch (the store keeps 4 bits per decision).
pub const MAX_TYPES: usize = 15;

/// Parses a whole stream body. `max_decisions` bounds memory whatever the body holds.
pub fn parse_stream<R: Read>(
    reader: R,
    filter: &DecisionFilter,
    max_decisions: usize,
) -> Result<Batch, ParseError> {
    let mut de = serde_json::Deserializer::from_reader(reader);
    let mut batch = Batch::default();
    let mut ctx = Ctx {
        batch: &mut batch,
        filter,
        max_decisions,
        error: None,
    };
    let res = (&mut de).deserialize_map(BodyVisitor(&mut ctx));
    if let Some(e) = ctx.error.take() {
        return Err(e);
    }
    res?;
    de.end()?;
    Ok(batch)
}

struct Ctx<'b> {
    batch: &'b mut Batch,
    filter: &'b DecisionFilter,
    max_decisions: usize,
    /// A limit error, kept apart from serde's so it reaches the caller as itself.
    error: Option<ParseError>,
}

/// A decision's fields as read, before they are judged.
#[derive(Default)]
struct Fields {
    scope: Option<Scope>,
    value: Option<Value>,
    remaining: Option<f64>,
    type_index: Option<Result<u8, ()>>,
    origin_ok: bool,
    scenario_ok: bool,
    type_ok: bool,
}

#[derive(Clone, Copy)]
enum Scope {
    Ip,
    Range,
    Other,
}

#[derive(Clone, Copy)]
enum Value {
    Addr(IpAddr),
    Net(IpNet),
    Bad,
}

impl Ctx<'_> {
    fn intern(&mut self, kind: &str) -> Result<u8, ()> {
        let types = &mut self.batch.types;
        if let Some(i) = types.iter().position(|t| t == kind) {
            return Ok(i as u8);
        }
        if types.len() >= MAX_TYPES {
            self.error = Some(ParseError::TooManyTypes(MAX_TYPES));
            return Err(());
        }
        types.push(kind.to_owned());
        Ok((types.len() - 1) as u8)
    }

    fn accept(&mut self, f: Fields, deleted: bool) -> Result<(), &'static str> {
        let type_index = match f.type_index {
            Some(Ok(i)) => i,
            Some(Err(())) => return Err("too many types"),
            None => {
                self.batch.skipped += 1;
                return Ok(());
            }
        };
        let target = match (f.scope, f.value) {
            (Some(Scope::Ip), Some(Value::Addr(a))) => Some(single(a)),
            (Some(Scope::Range), Some(Value::Net(n))) => range(n),
            (Some(Scope::Range), Some(Value::Addr(a))) => Some(single(a)),
            _ => None,
        };
        let (Some(target), Some(secs), true, true, true) =
            (target, f.remaining, f.origin_ok, f.scenario_ok, f.type_ok)
        else {
            self.batch.skipped += 1;
            return Ok(());
        };
        if self.batch.new.len() + self.batch.deleted.len() >= self.max_decisions {
            self.error = Some(ParseError::TooManyDecisions(self.max_decisions));
            return Err("too many decisions");
        }
        let change = Change {
            target,
            type_index,
            // Never expire early: round up, saturate for decades-long bans.
            remaining_secs: secs.max(0.0).ceil().min(u32::MAX as f64) as u32,
        };
        if deleted {
            self.batch.deleted.push(change);
        } else {
            self.batch.new.push(change);
        }
        Ok(())
    }
}

fn single(a: IpAddr) -> Target {
    match a.to_canonical() {
        IpAddr::V4(a) => Target::V4(a.into()),
        IpAddr::V6(a) => Target::V6(a.into()),
    }
}

fn range(net: IpNet) -> Option<Target> {
    let net = match net {
        // ::ffff:a.b.c.d/n with n >= 96 is an IPv4 range.
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).ok()?,
            None => net,
        },
        _ => net,
    }
    .trunc();
    // A /32 or /128 range is a single address.
    Some(match net {
        IpNet::V4(n) if n.prefix_len() == 32 => Target::V4(n.addr().into()),
        IpNet::V6(n) if n.prefix_len() == 128 => Target::V6(n.addr().into()),
        n => Target::Range(n),
    })
}

/// Parses one `scope` + `value` pair as the LAPI sends it: `Ip` values are bare addresses,
/// `Range` values CIDRs, scope case-insensitive. Other scopes (country, AS, …) give `None`.
pub fn parse_target(scope: &str, value: &str) -> Option<Target> {
    match (scope_of(scope), value_of(value)) {
        (Scope::Ip, Value::Addr(a)) | (Scope::Range, Value::Addr(a)) => Some(single(a)),
        (Scope::Range, Value::Net(n)) => range(n),
        _ => None,
    }
}

fn scope_of(s: &str) -> Scope {
    if s.eq_ignore_ascii_case("ip") {
        Scope::Ip
    } else if s.eq_ignore_ascii_case("range") {
        Scope::Range
    } else {
        Scope::Other
    }
}

fn value_of(s: &str) -> Value {
    let s = s.trim();
    if let Ok(a) = s.parse::<IpAddr>() {
        return Value::Addr(a);
    }
    match s.parse::<IpNet>() {
        Ok(n) => Value::Net(n),
        Err(_) => Value::Bad,
    }
}

struct BodyVisitor<'c, 'b>(&'c mut Ctx<'b>);

impl<'de> Visitor<'de> for BodyVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(r#"an object {"new": [...], "deleted": [...]}"#)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "new" => map.next_value_seed(ListSeed {
                    ctx: &mut *self.0,
                    deleted: false,
                })?,
                "deleted" => map.next_value_seed(ListSeed {
                    ctx: &mut *self.0,
                    deleted: true,
                })?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A list of decisions, or `null` (the LAPI sends null for an empty list up to 1.7.7).
struct ListSeed<'c, 'b> {
    ctx: &'c mut Ctx<'b>,
    deleted: bool,
}

impl<'de> DeserializeSeed<'de> for ListSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for ListSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of decisions or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(fields) = seq.next_element_seed(DecisionSeed(&mut *self.ctx))? {
            self.ctx
                .accept(fields, self.deleted)
                .map_err(de::Error::custom)?;
        }
        Ok(())
    }
}

/// One decision object, read field by field without allocating.
struct DecisionSeed<'c, 'b>(&'c mut Ctx<'b>);

impl<'de> DeserializeSeed<'de> for DecisionSeed<'_, '_> {
    type Value = Fields;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Fields, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DecisionSeed<'_, '_> {
    type Value = Fields;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a decision object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        let ctx = self.0;
        let filter = ctx.filter;
        let mut f = Fields {
            origin_ok: filter.origin_ok(""),
            scenario_ok: filter.scenario_ok(""),
            ..Fields::default()
        };
        while let Some(key) = map.next_key_seed(WithStr(|k: &str| Key::of(k)))? {
            match key {
                Key::Scope => f.scope = Some(map.next_value_seed(WithStr(scope_of))?),
                Key::Value => f.value = Some(map.next_value_seed(WithStr(value_of))?),
                Key::Duration => f.remaining = map.next_value_seed(WithStr(parse_go_duration))?,
                Key::Type => {
                    let (ok, index) =
                        map.next_value_seed(WithStr(|t: &str| (filter.type_ok(t), ctx.intern(t))))?;
                    f.type_ok = ok;
                    f.type_index = Some(index);
                }
                Key::Origin => {
                    f.origin_ok = map.next_value_seed(WithStr(|o: &str| filter.origin_ok(o)))?
                }
                Key::Scenario => {
                    f.scenario_ok = map.next_value_seed(WithStr(|s: &str| filter.scenario_ok(s)))?
                }
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(f)
    }
}

enum Key {
    Scope,
    Value,
    Duration,
    Type,
    Origin,
    Scenario,
    Other,
}

impl Key {
    fn of(k: &str) -> Self {
        match k {
            "scope" => Key::Scope,
            "value" => Key::Value,
            "duration" => Key::Duration,
            "type" => Key::Type,
            "origin" => Key::Origin,
            "scenario" => Key::Scenario,
            _ => Key::Other,
        }
    }
}

/// Hands a JSON string (or `""` for null) to a closure as `&str`, without allocating.
struct WithStr<F>(F);

impl<'de, T, F: FnOnce(&str) -> T> DeserializeSeed<'de> for WithStr<F> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T, F: FnOnce(&str) -> T> Visitor<'de> for WithStr<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Ok((self.0)(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Ok((self.0)(""))
    }

    fn visit_none<E: de::Error>(self) -> Result<T, E> {
        Ok((self.0)(""))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<T, E> {
        Ok((self.0)(""))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<T, E> {
        Ok((self.0)(""))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<T, E> {
        Ok((self.0)(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Batch {
        parse_stream(body.as_bytes(), &DecisionFilter::default(), 1000).unwrap()
    }

    #[test]
    fn null_arrays_and_missing_keys() {
        let b = parse(r#"{"new":null,"deleted":null}"#);
        assert!(b.new.is_empty() && b.deleted.is_empty());
        let b = parse(r#"{}"#);
        assert!(b.new.is_empty());
    }

    #[test]
    fn ips_ranges_durations_and_types() {
        let b = parse(
            r#"{"deleted":[{"id":1,"origin":"cscli","type":"ban","scope":"Ip","value":"192.0.2.1","duration":"-161.797478ms","scenario":"x"}],
               "new":[
                 {"id":2,"origin":"crowdsec","type":"ban","scope":"Ip","value":"::ffff:198.51.100.7","duration":"3h59m59.5s","scenario":"ssh-bf","uuid":"u"},
                 {"id":3,"origin":"CAPI","type":"captcha","scope":"range","value":"2001:db8:1::/48","duration":"4m54.820029999s","scenario":"s"},
                 {"id":4,"origin":"lists","type":"throttle","scope":"RANGE","value":"10.0.0.0/8","duration":"1h","scenario":"s"},
                 {"id":5,"origin":"cscli","type":"ban","scope":"Country","value":"FR","duration":"1h","scenario":"s"},
                 {"id":6,"origin":"cscli","type":"custom","scope":"Ip","value":"2001:db8::9","duration":"87600h","scenario":"s"},
                 {"id":7,"origin":"cscli","type":"ban","scope":"Ip","value":"not-an-ip","duration":"1h","scenario":"s"},
                 {"id":8,"origin":"cscli","type":"ban","scope":"Range","value":"::ffff:203.0.113.0/120","duration":"1h","scenario":"s"}
               ]}"#,
        );
        assert_eq!(b.deleted.len(), 1);
        assert_eq!(b.deleted[0].remaining_secs, 0);
        assert_eq!(b.new.len(), 5);
        assert_eq!(b.skipped, 2, "country scope and a bad value");
        assert_eq!(
            b.new[0].target,
            Target::V4(u32::from(std::net::Ipv4Addr::new(198, 51, 100, 7)))
        );
        assert_eq!(b.new[0].remaining_secs, 14_400);
        assert_eq!(
            b.new[1].target,
            Target::Range("2001:db8:1::/48".parse().unwrap())
        );
        assert_eq!(b.new[1].remaining_secs, 295);
        assert_eq!(
            b.new[2].target,
            Target::Range("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(
            b.new[4].target,
            Target::Range("203.0.113.0/24".parse().unwrap())
        );
        assert_eq!(b.types, ["ban", "captcha", "throttle", "custom"]);
        assert_eq!(b.new[3].type_index, 3);
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        let f = DecisionFilter::default();
        assert!(parse_stream(&b"<html>oops</html>"[..], &f, 10).is_err());
        assert!(parse_stream(
            &br#"{"new":[{"type":"ban","scope":"Ip","value":"1.2.3.4","duration":"1h"}"#[..],
            &f,
            10
        )
        .is_err());
        assert!(parse_stream(&br#"{"new":[]} trailing"#[..], &f, 10).is_err());
        assert!(parse_stream(&br#"{"new":5}"#[..], &f, 10).is_err());
    }

    #[test]
    fn decision_count_is_bounded() {
        let one = r#"{"type":"ban","scope":"Ip","value":"192.0.2.1","duration":"1h"}"#;
        let body = format!(r#"{{"new":[{}]}}"#, [one; 11].join(","));
        let err = parse_stream(body.as_bytes(), &DecisionFilter::default(), 10).unwrap_err();
        assert!(matches!(err, ParseError::TooManyDecisions(10)), "{err}");
    }
}
