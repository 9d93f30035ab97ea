//! Dynamic SQL with `$n` placeholders, which both SQLite and PostgreSQL accept. (sqlx's
//! `QueryBuilder` writes `?` for the `Any` driver, which PostgreSQL rejects.)

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::Any;

pub(super) enum Value {
    Int(i64),
    OptInt(Option<i64>),
    Real(f64),
    Text(String),
    OptText(Option<String>),
}

#[derive(Default)]
pub(super) struct Sql {
    text: String,
    values: Vec<Value>,
}

impl Sql {
    pub fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            values: Vec::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder for `value`.
    pub fn bind(&mut self, value: Value) -> &mut Self {
        self.values.push(value);
        self.text.push('$');
        self.text.push_str(&self.values.len().to_string());
        self
    }

    /// A placeholder that repeats an earlier one (1-based), for conditions using a value twice.
    pub fn placeholder(&self) -> String {
        format!("${}", self.values.len())
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
