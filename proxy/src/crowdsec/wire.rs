//! The `/v1/decisions/stream` body, parsed as a stream: each decision becomes a compact change
//! as soon as it is read, so memory follows the number of decisions kept, not the body size.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::duration::parse_go_duration;
use super::filter::DecisionFilter;

/// An IPv6 address as four words: 4-byte aligned, so that a [`Change`] is 32 bytes rather
/// than 48 (a million of them are held while a startup answer is read).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct V6Key(pub [u32; 4]);

impl From<u128> for V6Key {
    fn from(v: u128) -> Self {
        Self([
            (v >> 96) as u32,
            (v >> 64) as u32,
            (v >> 32) as u32,
            v as u32,
        ])
    }
}

impl From<std::net::Ipv6Addr> for V6Key {
    fn from(a: std::net::Ipv6Addr) -> Self {
        u128::from(a).into()
    }
}

impl From<V6Key> for u128 {
    fn from(k: V6Key) -> u128 {
        let [a, b, c, d] = k.0;
        (a as u128) << 96 | (b as u128) << 64 | (c as u128) << 32 | d as u128
    }
}

/// What a decision applies to, canonicalised (IPv4-mapped IPv6 ⇒ IPv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    V4(u32),
    V6(V6Key),
    Range(IpNet),
    /// `Country` scope: an ISO 3166-1 alpha-2 code, upper case (needs the GeoIP database).
    Country([u8; 2]),
    /// `AS` scope: an autonomous system number (needs the ASN database).
    As(u32),
}

/// One decision, compact: its target, its type (an index into [`Batch::types`]), its origin
/// (an index into [`Batch::origins`]) and the seconds it has left (0 when already expired or
/// deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub target: Target,
    pub type_index: u8,
    pub origin: u16,
    pub remaining_secs: u32,
}

#[derive(Debug, Default)]
pub struct Batch {
    pub deleted: Vec<Change>,
    pub new: Vec<Change>,
    /// Type names seen in this batch (`ban`, `captcha`, …), indexed by `Change::type_index`.
    pub types: Vec<String>,
    /// Origins seen in this batch, as usage metrics name them (`crowdsec`, `cscli`, `CAPI`, and
    /// `lists:<scenario>` for blocklists), indexed by `Change::origin`.
    pub origins: Vec<String>,
    /// Decisions ignored: unknown scope, unparseable value or duration, filtered out.
    pub skipped: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("the LAPI answer is not valid decision JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the LAPI answer is not valid decision JSON: {0}")]
    Syntax(String),
    #[error("the LAPI answer has more than {0} decisions")]
    TooManyDecisions(usize),
    #[error("the LAPI answer has more than {0} distinct decision types")]
    TooManyTypes(usize),
}

/// At most this many distinct types per batch.
pub const MAX_TYPES: usize = 15;

/// Origins beyond this many in one batch are counted under [`OTHER_ORIGIN`] (never an error:
/// origins only label metrics).
pub const MAX_ORIGINS: usize = 4096;
pub const OTHER_ORIGIN: &str = "other";

/// Parses a whole stream body as it arrives. A small state machine walks the envelope
/// (`{"new": [...], "deleted": [...]}`, either list possibly `null`) and cuts out each decision
/// object, which serde then reads from the slice; nothing but the current object is buffered.
/// `max_decisions` bounds memory whatever the body holds.
pub fn parse_stream<R: Read>(
    reader: R,
    filter: &DecisionFilter,
    max_decisions: usize,
) -> Result<Batch, ParseError> {
    parse_stream_sized(reader, filter, max_decisions, None)
}

/// A decision takes at least this many bytes of the answer (a short one, with a short scenario
/// and an IPv4 address, is about 110).
const MIN_DECISION_BYTES: u64 = 100;

/// [`parse_stream`] for an answer of `body_bytes`, when the LAPI says: room for its decisions
/// is made at once, so that a million of them are not copied over and over while the list
/// grows (a growing list holds the old and the new copy at once, the sync's memory peak).
pub fn parse_stream_sized<R: Read>(
    mut reader: R,
    filter: &DecisionFilter,
    max_decisions: usize,
    body_bytes: Option<u64>,
) -> Result<Batch, ParseError> {
    let mut batch = Batch::default();
    if let Some(bytes) = body_bytes {
        let expected = (bytes / MIN_DECISION_BYTES).min(max_decisions as u64);
        batch.new.reserve_exact(expected as usize);
    }
    let mut ctx = Ctx {
        batch: &mut batch,
        filter,
        max_decisions,
        error: None,
        origin_ids: HashMap::default(),
        last_origin: 0,
        scenario: String::new(),
        label: String::new(),
    };
    let mut buf: Vec<u8> = Vec::with_capacity(128 * 1024);
    let mut pos = 0usize;
    let mut eof = false;
    let mut state = St::Start;
    loop {
        match step(&buf[pos..], state, eof, &mut ctx)? {
            Step::Advance(n, next) => {
                pos += n;
                state = next;
            }
            Step::Done => return Ok(batch),
            Step::NeedMore => {
                if eof {
                    return Err(syntax("the answer ends in the middle"));
                }
                buf.drain(..pos);
                pos = 0;
                if buf.len() > MAX_OBJECT {
                    return Err(too_large());
                }
                let old = buf.len();
                buf.resize(old + 64 * 1024, 0);
                let n = loop {
                    match reader.read(&mut buf[old..]) {
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        r => break r.map_err(serde_json::Error::io)?,
                    }
                };
                buf.truncate(old + n);
                eof = n == 0;
            }
        }
    }
}

const MAX_OBJECT: usize = 64 * 1024;

fn syntax(what: &str) -> ParseError {
    ParseError::Syntax(what.to_owned())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    New,
    Deleted,
    Other,
}

#[derive(Clone, Copy)]
enum St {
    Start,
    TopKey { first: bool },
    TopColon(Section),
    TopValue(Section),
    TopAfterValue,
    ListItem { section: Section, first: bool },
    ListAfterItem(Section),
    End,
}

enum Step {
    Advance(usize, St),
    NeedMore,
    Done,
}

/// One token of the envelope from `b`; `NeedMore` when `b` ends inside it.
fn step(b: &[u8], st: St, eof: bool, ctx: &mut Ctx<'_>) -> Result<Step, ParseError> {
    // Whitespace is a step of its own, so a token always starts the buffer: what is buffered
    // is only ever (part of) one token, and the size bound measures that token alone, however
    // the bytes arrived.
    let ws = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    if ws > 0 {
        return Ok(Step::Advance(ws, st));
    }
    let Some(&c) = b.first() else {
        return Ok(match (st, eof) {
            (St::End, true) => Step::Done,
            _ => Step::NeedMore,
        });
    };
    let rest = b;
    let adv = |n: usize, next: St| Ok(Step::Advance(n, next));
    match st {
        St::Start if c == b'{' => adv(1, St::TopKey { first: true }),
        St::Start => Err(syntax("expected value at the start (not a JSON object)")),
        St::TopKey { first: true } if c == b'}' => adv(1, St::End),
        St::TopKey { .. } if c == b'"' => match bounded(string_end(rest), rest)? {
            None => Ok(Step::NeedMore),
            Some(end) => {
                let section = match &rest[1..end - 1] {
                    b"new" => Section::New,
                    b"deleted" => Section::Deleted,
                    _ => Section::Other,
                };
                adv(end, St::TopColon(section))
            }
        },
        St::TopKey { .. } => Err(syntax("expected a key")),
        St::TopColon(section) if c == b':' => adv(1, St::TopValue(section)),
        St::TopColon(_) => Err(syntax("expected ':'")),
        St::TopValue(Section::Other) => match bounded(value_end(rest), rest)? {
            None => Ok(Step::NeedMore),
            Some(end) => adv(end, St::TopAfterValue),
        },
        St::TopValue(section) if c == b'[' => adv(
            1,
            St::ListItem {
                section,
                first: true,
            },
        ),
        St::TopValue(_) if c == b'n' => {
            if rest.len() < 4 {
                Ok(Step::NeedMore)
            } else if &rest[..4] == b"null" {
                adv(4, St::TopAfterValue)
            } else {
                Err(syntax("expected a list of decisions or null"))
            }
        }
        St::TopValue(_) => Err(syntax("expected a list of decisions or null")),
        St::TopAfterValue if c == b',' => adv(1, St::TopKey { first: false }),
        St::TopAfterValue if c == b'}' => adv(1, St::End),
        St::TopAfterValue => Err(syntax("expected ',' or '}'")),
        St::ListItem { first: true, .. } if c == b']' => adv(1, St::TopAfterValue),
        St::ListItem { section, .. } if c == b'{' => match bounded(value_end(rest), rest)? {
            None => Ok(Step::NeedMore),
            Some(end) => {
                // One UTF-8 check for the whole object rather than one per string.
                let object = std::str::from_utf8(&rest[..end])
                    .map_err(|_| syntax("a decision is not valid UTF-8"))?;
                let mut de = serde_json::Deserializer::from_str(object);
                let fields = DecisionSeed(&mut *ctx).deserialize(&mut de);
                if let Some(e) = ctx.error.take() {
                    return Err(e);
                }
                if ctx.accept(fields?, section == Section::Deleted).is_err() {
                    return Err(ctx
                        .error
                        .take()
                        .unwrap_or_else(|| syntax("decision refused")));
                }
                adv(end, St::ListAfterItem(section))
            }
        },
        St::ListItem { .. } => Err(syntax("expected a decision object")),
        St::ListAfterItem(section) if c == b',' => adv(
            1,
            St::ListItem {
                section,
                first: false,
            },
        ),
        St::ListAfterItem(_) if c == b']' => adv(1, St::TopAfterValue),
        St::ListAfterItem(_) => Err(syntax("expected ',' or ']'")),
        St::End => Err(syntax("trailing characters after the answer")),
    }
}

/// A token's length, refused when over [`MAX_OBJECT`] whether it is complete (`end`) or not
/// yet (`rest` is all there is of it so far).
fn bounded(end: Option<usize>, rest: &[u8]) -> Result<Option<usize>, ParseError> {
    match end {
        Some(n) if n > MAX_OBJECT => Err(too_large()),
        None if rest.len() > MAX_OBJECT => Err(too_large()),
        end => Ok(end),
    }
}

fn too_large() -> ParseError {
    syntax("a decision is larger than 64 KiB")
}

/// Length of the JSON string starting at `b[0] == '"'`, quotes included.
fn string_end(b: &[u8]) -> Option<usize> {
    // memchr skips the plain bytes a word at a time: strings are most of a decision's bytes.
    let mut i = 1;
    loop {
        i += memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
        match b[i] {
            b'\\' => i += 2,
            _ => return Some(i + 1),
        }
    }
}

/// Length of the JSON value starting at `b[0]`: a string, an object or list (matched over
/// nesting and strings), or a scalar up to the next delimiter.
fn value_end(b: &[u8]) -> Option<usize> {
    match b[0] {
        b'"' => string_end(b),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = 0;
            while i < b.len() {
                match b[i] {
                    b'"' => i += string_end(&b[i..])? - 1,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => b
            .iter()
            .position(|c| matches!(c, b',' | b'}' | b']') || c.is_ascii_whitespace()),
    }
}

struct Ctx<'b> {
    batch: &'b mut Batch,
    filter: &'b DecisionFilter,
    max_decisions: usize,
    /// A limit error, kept apart from serde's so it reaches the caller as itself.
    error: Option<ParseError>,
    /// Interned origin labels: a hit allocates nothing.
    origin_ids: HashMap<Box<str>, u16>,
    last_origin: u16,
    /// The current decision's scenario, kept while its origin may still turn out `lists`.
    scenario: String,
    label: String,
}

/// A decision's fields as read, before they are judged.
#[derive(Default)]
struct Fields {
    scope: Option<Scope>,
    value: Option<Value>,
    remaining: Option<f64>,
    type_index: Option<Result<u8, ()>>,
    origin: Origin,
    origin_ok: bool,
    scenario_ok: bool,
    type_ok: bool,
}

/// A decision's origin as read so far.
#[derive(Clone, Copy, Default)]
enum Origin {
    #[default]
    Unread,
    /// `lists`: the label needs the scenario (the blocklist's name).
    Lists,
    Label(u16),
}

#[derive(Clone, Copy)]
enum Scope {
    Ip,
    Range,
    Country,
    As,
    Other,
}

#[derive(Clone, Copy)]
enum Value {
    Addr(IpAddr),
    Net(IpNet),
    /// Two letters: a country code, for the `Country` scope.
    Letters([u8; 2]),
    /// Digits (optionally after `AS`): an AS number, for the `AS` scope.
    Number(u32),
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

    fn origin_id(&mut self, label: &str) -> u16 {
        // Decisions come in runs of one origin (a blocklist, CAPI's community list).
        let last = self.last_origin as usize;
        if self.batch.origins.get(last).is_some_and(|o| o == label) {
            return self.last_origin;
        }
        let i = self.intern_origin(label);
        self.last_origin = i;
        i
    }

    fn intern_origin(&mut self, label: &str) -> u16 {
        if let Some(&i) = self.origin_ids.get(label) {
            return i;
        }
        let origins = &mut self.batch.origins;
        let label = if origins.len() >= MAX_ORIGINS {
            if let Some(&i) = self.origin_ids.get(OTHER_ORIGIN) {
                return i;
            }
            OTHER_ORIGIN
        } else {
            label
        };
        origins.push(label.to_owned());
        let i = (origins.len() - 1) as u16;
        self.origin_ids.insert(label.into(), i);
        i
    }

    /// The origin label of a decision whose fields are all read.
    fn origin_label(&mut self, origin: Origin) -> u16 {
        match origin {
            Origin::Label(i) => i,
            Origin::Lists => {
                let mut label = std::mem::take(&mut self.label);
                label.clear();
                label.push_str("lists:");
                label.push_str(&self.scenario);
                let i = self.origin_id(&label);
                self.label = label;
                i
            }
            Origin::Unread => self.origin_id(""),
        }
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
        // The LAPI decides containment from the value's shape whatever the scope says
        // (`cscli decisions import` stores CIDRs with scope `Ip`), so the bouncer does too.
        let target = match (f.scope, f.value) {
            (Some(Scope::Ip | Scope::Range), Some(Value::Addr(a))) => Some(single(a)),
            (Some(Scope::Ip | Scope::Range), Some(Value::Net(n))) => range(n),
            (Some(Scope::Country), Some(Value::Letters(c))) => Some(Target::Country(c)),
            (Some(Scope::As), Some(Value::Number(n))) => Some(Target::As(n)),
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
            origin: self.origin_label(f.origin),
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

fn scope_of(s: &str) -> Scope {
    if s.eq_ignore_ascii_case("ip") {
        Scope::Ip
    } else if s.eq_ignore_ascii_case("range") {
        Scope::Range
    } else if s.eq_ignore_ascii_case("country") {
        Scope::Country
    } else if s.eq_ignore_ascii_case("as") {
        Scope::As
    } else {
        Scope::Other
    }
}

fn value_of(s: &str) -> Value {
    let s = s.trim();
    if let Ok(a) = s.parse::<IpAddr>() {
        return Value::Addr(a);
    }
    if let Ok(n) = s.parse::<IpNet>() {
        return Value::Net(n);
    }
    if let [a, b] = s.as_bytes() {
        if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() {
            return Value::Letters([a.to_ascii_uppercase(), b.to_ascii_uppercase()]);
        }
    }
    let digits = s
        .strip_prefix("AS")
        .or_else(|| s.strip_prefix("as"))
        .unwrap_or(s);
    match digits.parse::<u32>() {
        Ok(n) if !digits.starts_with('+') => Value::Number(n),
        _ => Value::Bad,
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
        ctx.scenario.clear();
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
                    let (ok, origin) = map.next_value_seed(WithStr(|o: &str| {
                        let origin = if o == "lists" {
                            Origin::Lists
                        } else {
                            Origin::Label(ctx.origin_id(o))
                        };
                        (filter.origin_ok(o), origin)
                    }))?;
                    f.origin_ok = ok;
                    f.origin = origin;
                }
                Key::Scenario => {
                    let keep = !matches!(f.origin, Origin::Label(_));
                    f.scenario_ok = map.next_value_seed(WithStr(|s: &str| {
                        if keep {
                            ctx.scenario.clear();
                            ctx.scenario.push_str(s);
                        }
                        filter.scenario_ok(s)
                    }))?
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
        assert_eq!(b.new.len(), 6);
        assert_eq!(b.skipped, 1, "a bad value");
        assert_eq!(b.new[3].target, Target::Country(*b"FR"));
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
            b.new[5].target,
            Target::Range("203.0.113.0/24".parse().unwrap())
        );
        assert_eq!(b.types, ["ban", "captcha", "throttle", "custom"]);
        assert_eq!(b.new[4].type_index, 3);
        let origin = |c: &Change| b.origins[c.origin as usize].as_str();
        assert_eq!(origin(&b.deleted[0]), "cscli");
        assert_eq!(
            b.new.iter().map(origin).collect::<Vec<_>>(),
            ["crowdsec", "CAPI", "lists:s", "cscli", "cscli", "cscli"]
        );
    }

    #[test]
    fn a_blocklist_origin_is_named_by_its_scenario_in_any_key_order() {
        let b = parse(
            r#"{"new":[
                 {"origin":"lists","scenario":"firehol_l1","type":"ban","scope":"Ip","value":"192.0.2.1","duration":"1h"},
                 {"scenario":"tor_exits","type":"ban","scope":"Ip","value":"192.0.2.2","duration":"1h","origin":"lists"},
                 {"origin":"lists","type":"ban","scope":"Ip","value":"192.0.2.3","duration":"1h"},
                 {"scenario":"ssh-bf","origin":"crowdsec","type":"ban","scope":"Ip","value":"192.0.2.4","duration":"1h"},
                 {"type":"ban","scope":"Ip","value":"192.0.2.5","duration":"1h"}
               ]}"#,
        );
        let names: Vec<&str> = b
            .new
            .iter()
            .map(|c| b.origins[c.origin as usize].as_str())
            .collect();
        assert_eq!(
            names,
            [
                "lists:firehol_l1",
                "lists:tor_exits",
                "lists:",
                "crowdsec",
                ""
            ],
            "a list without a scenario does not inherit the previous decision's"
        );
    }

    #[test]
    fn too_many_origins_fold_into_other_without_failing_the_batch() {
        let body = format!(
            r#"{{"new":[{}]}}"#,
            (0..MAX_ORIGINS + 10)
                .map(|i| format!(
                    r#"{{"origin":"o{i}","type":"ban","scope":"Ip","value":"10.0.{}.{}","duration":"1h"}}"#,
                    i / 256,
                    i % 256
                ))
                .collect::<Vec<_>>()
                .join(",")
        );
        let b = parse_stream(body.as_bytes(), &DecisionFilter::default(), 10_000).unwrap();
        assert_eq!(b.new.len(), MAX_ORIGINS + 10);
        assert_eq!(b.origins.len(), MAX_ORIGINS + 1);
        let last = b.new.last().unwrap();
        assert_eq!(b.origins[last.origin as usize], OTHER_ORIGIN);
    }

    #[test]
    fn the_value_decides_ip_or_range_whatever_the_scope_says() {
        // `cscli decisions import` (1.4) stores every entry with scope `Ip`, CIDRs included.
        let b = parse(
            r#"{"new":[
                 {"type":"ban","scope":"Ip","value":"6.122.0.0/16","duration":"1h"},
                 {"type":"ban","scope":"ip","value":"2001:db8:7::/48","duration":"1h"},
                 {"type":"ban","scope":"Ip","value":"192.0.2.77/32","duration":"1h"},
                 {"type":"ban","scope":"Range","value":"198.51.100.9","duration":"1h"},
                 {"type":"ban","scope":"Ip","value":"6.122.0.0/33","duration":"1h"}
               ]}"#,
        );
        assert_eq!(
            b.skipped, 1,
            "a prefix longer than the address is not a value"
        );
        let targets: Vec<_> = b.new.iter().map(|c| c.target).collect();
        assert_eq!(
            targets,
            [
                Target::Range("6.122.0.0/16".parse().unwrap()),
                Target::Range("2001:db8:7::/48".parse().unwrap()),
                Target::V4(u32::from(std::net::Ipv4Addr::new(192, 0, 2, 77))),
                Target::V4(u32::from(std::net::Ipv4Addr::new(198, 51, 100, 9))),
            ]
        );
    }

    #[test]
    fn country_and_as_scopes() {
        let b = parse(
            r#"{"new":[
                 {"type":"ban","scope":"Country","value":"ru","duration":"1h"},
                 {"type":"captcha","scope":"AS","value":"64500","duration":"1h"},
                 {"type":"ban","scope":"as","value":"AS64501","duration":"1h"},
                 {"type":"ban","scope":"Country","value":"RUS","duration":"1h"},
                 {"type":"ban","scope":"AS","value":"-1","duration":"1h"},
                 {"type":"ban","scope":"Ip","value":"64500","duration":"1h"},
                 {"type":"ban","scope":"Username","value":"bob","duration":"1h"}
               ]}"#,
        );
        let targets: Vec<_> = b.new.iter().map(|c| c.target).collect();
        assert_eq!(
            targets,
            [
                Target::Country(*b"RU"),
                Target::As(64500),
                Target::As(64501)
            ]
        );
        assert_eq!(b.skipped, 4);
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
        // A byte that is not UTF-8 inside a decision names the problem.
        let bad = b"{\"new\":[{\"type\":\"ban\",\"scope\":\"Ip\",\"value\":\"1.2.3.4\xff\",\"duration\":\"1h\"}]}";
        let err = parse_stream(&bad[..], &f, 10).unwrap_err().to_string();
        assert!(err.contains("not valid UTF-8"), "{err}");
    }

    /// Hands out one byte per read, so every token straddles a chunk boundary.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.0[0];
            self.0 = &self.0[1..];
            Ok(1)
        }
    }

    #[test]
    fn chunk_boundaries_escapes_and_unknown_keys() {
        let body = r#" {
          "meta": {"nested": [1, {"x": "]}\"{"}], "s": "a\"b"},
          "deleted" : [ {"type":"ban","scope":"Ip","value":"192.0.2.9","duration":"-1s","scenario":"quote \" and } brace"} ],
          "new": [
            {"uuid":"u-1","type":"ban","scope":"Ip","value":"192.0.2.1","duration":"1h","origin":"cscli","scenario":"a\\b","simulated":false,"id":7},
            {"type":"captcha","scope":"Range","value":"2001:db8::/32","duration":"30m","until":null}
          ],
          "version": 1.5
        } "#;
        let whole = parse_stream(body.as_bytes(), &DecisionFilter::default(), 100).unwrap();
        let trickled =
            parse_stream(Trickle(body.as_bytes()), &DecisionFilter::default(), 100).unwrap();
        assert_eq!(whole.new, trickled.new);
        assert_eq!(whole.deleted, trickled.deleted);
        assert_eq!(whole.new.len(), 2);
        assert_eq!(whole.deleted.len(), 1);
        assert_eq!(whole.types, ["ban", "captcha"]);
    }

    #[test]
    fn envelope_errors() {
        let f = DecisionFilter::default();
        for bad in [
            "",
            "[]",
            r#"{"new":[1]}"#,
            r#"{"new":[{"type":"ban"} {"type":"ban"}]}"#,
            r#"{"new" [] }"#,
            r#"{"new":[],}"#,
            r#"{"new":nul}"#,
            r#"{"new":[]}}"#,
        ] {
            assert!(parse_stream(bad.as_bytes(), &f, 10).is_err(), "{bad:?}");
            assert!(
                parse_stream(Trickle(bad.as_bytes()), &f, 10).is_err(),
                "{bad:?} trickled"
            );
        }
        let huge = format!(
            r#"{{"new":[{{"type":"ban","scenario":"{}"}}]}}"#,
            "x".repeat(100_000)
        );
        let err = parse_stream(huge.as_bytes(), &f, 10).unwrap_err();
        assert!(err.to_string().contains("larger than 64 KiB"), "{err}");
    }

    #[test]
    fn decision_count_is_bounded() {
        let one = r#"{"type":"ban","scope":"Ip","value":"192.0.2.1","duration":"1h"}"#;
        let body = format!(r#"{{"new":[{}]}}"#, [one; 11].join(","));
        let err = parse_stream(body.as_bytes(), &DecisionFilter::default(), 10).unwrap_err();
        assert!(matches!(err, ParseError::TooManyDecisions(10)), "{err}");
    }
}

/// The same answer must parse the same way however TCP cuts it up.
#[cfg(test)]
mod chunking {
    use proptest::prelude::*;

    use super::*;

    /// Hands out the body in the chunk sizes given, cycling through them.
    struct Chunked<'a> {
        rest: &'a [u8],
        sizes: Vec<usize>,
        next: usize,
    }

    impl Read for Chunked<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let want = self.sizes[self.next % self.sizes.len()];
            self.next += 1;
            let n = want.min(buf.len()).min(self.rest.len());
            buf[..n].copy_from_slice(&self.rest[..n]);
            self.rest = &self.rest[n..];
            Ok(n)
        }
    }

    fn decision() -> impl Strategy<Value = String> {
        (
            0u8..=255,
            prop_oneof![Just("Ip"), Just("Range"), Just("range"), Just("Country")],
            prop_oneof![Just("ban"), Just("captcha"), Just("x")],
            // Scenario lengths around the 64 KiB bound, and small ones.
            prop_oneof![0usize..40, 65_400usize..65_600],
            0usize..3,
        )
            .prop_map(|(octet, scope, kind, scenario_len, extra)| {
                let value = if scope == "Ip" {
                    format!("192.0.2.{octet}")
                } else {
                    format!("10.{octet}.0.0/16")
                };
                let extra = match extra {
                    0 => String::new(),
                    1 => r#","meta":{"a":[1,{"b":"}\""}]}"#.into(),
                    _ => r#","until":null,"simulated":false"#.into(),
                };
                format!(
                    r#"{{"type":"{kind}","scope":"{scope}","value":"{value}","duration":"1h","scenario":"{}"{extra}}}"#,
                    "s".repeat(scenario_len)
                )
            })
    }

    fn padding() -> impl Strategy<Value = String> {
        prop_oneof![Just(0usize), 1usize..4, 60_000usize..70_000].prop_map(|n| " ".repeat(n))
    }

    fn body() -> impl Strategy<Value = Vec<u8>> {
        (
            proptest::collection::vec((padding(), decision()), 0..4),
            proptest::collection::vec((padding(), decision()), 0..3),
            padding(),
            // Sometimes cut the answer short or break a byte.
            prop_oneof![Just(None), (0usize..300_000, any::<u8>()).prop_map(Some)],
        )
            .prop_map(|(new, deleted, tail, damage)| {
                let list = |items: Vec<(String, String)>| {
                    items
                        .into_iter()
                        .map(|(pad, d)| format!("{pad}{d}"))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                let mut b = format!(
                    r#"{{"new":[{}],{tail}"deleted":[{}]}}{tail}"#,
                    list(new),
                    list(deleted)
                )
                .into_bytes();
                if let Some((at, byte)) = damage {
                    if !b.is_empty() {
                        let at = at % b.len();
                        if byte % 2 == 0 {
                            b.truncate(at);
                        } else {
                            b[at] = byte;
                        }
                    }
                }
                b
            })
    }

    /// What a parse produced, comparable: (new, deleted, types, skipped) or the error.
    type Summary = Result<(Vec<Change>, Vec<Change>, Vec<String>, u64), String>;

    fn summary(r: Result<Batch, ParseError>) -> Summary {
        r.map(|b| (b.new, b.deleted, b.types, b.skipped))
            .map_err(|e| e.to_string())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        #[test]
        fn whole_and_chunked_answers_parse_alike(
            body in body(),
            sizes in proptest::collection::vec(1usize..100_000, 1..8),
        ) {
            let f = DecisionFilter::default();
            let whole = summary(parse_stream(&body[..], &f, 1000));
            let chunked = summary(parse_stream(
                Chunked { rest: &body, sizes, next: 0 },
                &f,
                1000,
            ));
            prop_assert_eq!(whole, chunked);
        }
    }

    #[test]
    fn padding_before_a_large_decision_does_not_count_against_it() {
        let d = format!(
            r#"{{"type":"ban","scope":"Ip","value":"192.0.2.1","duration":"1h","scenario":"{}"}}"#,
            "s".repeat(60_000)
        );
        let body = format!(r#"{{"new":[{}{d}]}}"#, " ".repeat(10_000));
        let f = DecisionFilter::default();
        let whole = parse_stream(body.as_bytes(), &f, 10).unwrap();
        // Reads of 33,000 bytes: at the second, padding and most of the decision are buffered.
        let chunked = parse_stream(
            Chunked {
                rest: body.as_bytes(),
                sizes: vec![33_000],
                next: 0,
            },
            &f,
            10,
        )
        .unwrap();
        assert_eq!(whole.new.len(), 1);
        assert_eq!(whole.new, chunked.new);
    }
}
