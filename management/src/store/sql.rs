//! Dynamic SQL with the placeholders each backend parses fastest: `$n` for PostgreSQL, `?` for
//! SQLite (which resolves each `$n` by name, quadratic in a large multi-row INSERT). sqlx's
//! `QueryBuilder` writes `?` for the `Any` driver whatever the backend, which PostgreSQL rejects.

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::Any;

use super::Backend;

pub(super) enum Value {
    Int(i64),
    OptInt(Option<i64>),
    Real(f64),
    Text(String),
    OptText(Option<String>),
}

pub(super) struct Sql {
    text: String,
    values: Vec<Value>,
    numbered: bool,
}

impl Sql {
    pub fn new(backend: Backend, text: &str) -> Self {
        Self {
            text: text.to_owned(),
            values: Vec::new(),
            numbered: backend == Backend::Postgres,
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder for `value`.
    pub fn bind(&mut self, value: Value) -> &mut Self {
        self.values.push(value);
        if self.numbered {
            self.text.push('$');
            self.text.push_str(&self.values.len().to_string());
        } else {
            self.text.push('?');
        }
        self
    }

    pub fn query(&self) -> Query<'_, Any, AnyArguments<'_>> {
        let mut q = sqlx::query(&self.text);
        for v in &self.values {
            q = match v {
                Value::Int(i) => q.bind(*i),
                Value::OptInt(i) => q.bind(*i),
                Value::Real(f) => q.bind(*f),
                Value::Text(s) => q.bind(s.as_str()),
                Value::OptText(s) => q.bind(s.as_deref()),
            };
        }
        q
    }
}
