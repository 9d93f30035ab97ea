use std::fmt;

/// One thing wrong with a service description, in the operator's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The service id, when the problem belongs to one service.
    pub service: Option<String>,
    /// The field concerned (`restrictions.cidr_allow`, `upstream`, …), if any.
    pub field: Option<&'static str>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(id) = &self.service {
            write!(f, "service \"{id}\": ")?;
        }
        if let Some(field) = self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A rejected configuration: every problem found, with where it came from.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub source_name: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is invalid", self.source_name)?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}
