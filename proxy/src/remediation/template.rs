//! Ban page templates: `{{name}}` variables, parsed once when the configuration is compiled,
//! rendered with every value HTML-escaped (the host comes from the client).

use nb_api::remediation::TEMPLATE_VARIABLES;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    Reason,
    Reference,
    ClientIp,
    Host,
    Service,
    Status,
}

impl Var {
    fn named(name: &str) -> Option<Self> {
        Some(match name {
            "reason" => Var::Reason,
            "reference" => Var::Reference,
            "client_ip" => Var::ClientIp,
            "host" => Var::Host,
            "service" => Var::Service,
            "status" => Var::Status,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Text(String),
    Var(Var),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown variable {{{{{0}}}}}; the variables are {list}", list = variable_list())]
    UnknownVariable(String),
    #[error("a `{{{{` at byte {0} is never closed with `}}}}`")]
    Unclosed(usize),
}

fn variable_list() -> String {
    TEMPLATE_VARIABLES
        .iter()
        .map(|v| format!("{{{{{v}}}}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The values a page is rendered with.
pub struct Values<'a> {
    pub reason: &'a str,
    pub reference: &'a str,
    pub client_ip: &'a str,
    pub host: &'a str,
    pub service: &'a str,
    pub status: u16,
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut segments = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                segments.push(Segment::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or(TemplateError::Unclosed(offset + open))?;
            let name = after[..close].trim();
            let var =
                Var::named(name).ok_or_else(|| TemplateError::UnknownVariable(name.to_owned()))?;
            segments.push(Segment::Var(var));
            let consumed = open + 2 + close + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Text(rest.to_owned()));
        }
        Ok(Self { segments })
    }

    pub fn render(&self, v: &Values<'_>) -> String {
        let mut out = String::with_capacity(4096);
        for s in &self.segments {
            match s {
                Segment::Text(t) => out.push_str(t),
                Segment::Var(Var::Reason) => escape_into(&mut out, v.reason),
                Segment::Var(Var::Reference) => escape_into(&mut out, v.reference),
                Segment::Var(Var::ClientIp) => escape_into(&mut out, v.client_ip),
                Segment::Var(Var::Host) => escape_into(&mut out, v.host),
                Segment::Var(Var::Service) => escape_into(&mut out, v.service),
                Segment::Var(Var::Status) => out.push_str(&v.status.to_string()),
            }
        }
        out
    }
}

pub(super) fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}
