//! Standalone mode: services from a YAML file.

use std::path::Path;

use serde_yaml_ng::Value;

use super::compile::{compile, CompileOptions, Routes};
use super::error::{ConfigError, Problem};
use nb_api::ServiceSpec;

/// Reads, validates and compiles a services file. Any problem rejects the whole file.
pub fn load_file(path: &Path, opts: &CompileOptions) -> Result<Routes, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| whole_file(&name, format!("cannot read: {e}")))?;
    let specs = parse_services(&name, &text)?;
    compile(&name, specs, opts)
}

/// Parses the YAML text into service descriptions. Each service is decoded on its own so that
/// an error names the service it belongs to.
pub fn parse_services(name: &str, text: &str) -> Result<Vec<ServiceSpec>, ConfigError> {
    let doc: Value = serde_yaml_ng::from_str(text)
        .map_err(|e| whole_file(name, format!("not valid YAML: {e}")))?;
    let Value::Mapping(top) = doc else {
        return Err(whole_file(
            name,
            "expected a mapping with a `services` list".into(),
        ));
    };
    let mut problems = Vec::new();
    for key in top.keys() {
        if key.as_str() != Some("services") {
            problems.push(Problem {
                service: None,
                field: None,
                message: format!("unknown top-level key {}", show(key)),
            });
        }
    }
    let services = match top.get("services") {
        Some(Value::Sequence(s)) => s.clone(),
        Some(Value::Null) | None => Vec::new(),
        Some(_) => {
            return Err(whole_file(name, "`services` must be a list".into()));
        }
    };
    let mut specs = Vec::with_capacity(services.len());
    for (index, item) in services.into_iter().enumerate() {
        let label = item
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("#{}", index + 1));
        match serde_yaml_ng::from_value::<ServiceSpec>(item) {
            Ok(spec) => specs.push(spec),
            Err(e) => problems.push(Problem {
                service: Some(label),
                field: None,
                message: e.to_string(),
            }),
        }
    }
    if problems.is_empty() {
        Ok(specs)
    } else {
        Err(ConfigError {
            source_name: name.to_owned(),
            problems,
        })
    }
}

fn show(v: &Value) -> String {
    serde_yaml_ng::to_string(v)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}

fn whole_file(name: &str, message: String) -> ConfigError {
    ConfigError {
        source_name: name.to_owned(),
        problems: vec![Problem {
            service: None,
            field: None,
            message,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reject(yaml: &str) -> String {
        let specs = parse_services("t.yaml", yaml);
        let err = match specs {
            Err(e) => e,
            Ok(specs) => compile("t.yaml", specs, &CompileOptions::default()).unwrap_err(),
        };
        err.to_string()
    }

    #[test]
    fn accepts_the_design_example() {
        let yaml = r#"
services:
  - id: whoami
    protocol: http
    hosts: [whoami.localhost]
    upstream: http://127.0.0.1:8080
    restrictions:
      cidr_allow: []
      cidr_deny: []
      country_allow: []
      country_deny: []
      crowdsec_mode: enforce
  - id: db
    protocol: tcp
    listen: 127.0.0.1:9000
    upstream: 127.0.0.1:5432
"#;
        let specs = parse_services("t.yaml", yaml).unwrap();
        let routes = compile("t.yaml", specs, &CompileOptions::default()).unwrap();
        assert_eq!(routes.services.len(), 2);
        assert!(routes.http_host("WhoAmI.localhost:8080").is_some());
        assert!(routes.http_host("other.localhost").is_none());
        assert_eq!(routes.tcp.len(), 1);
    }

    #[test]
    fn errors_name_the_file_service_and_problem() {
        let e = reject(
            "services:\n  - id: a\n    protocol: http\n    hosts: [a.test]\n    upstream: http://127.0.0.1:1\n    restrictions:\n      cidr_allow: [10.0.0.0/33]\n",
        );
        assert!(e.contains("t.yaml"), "{e}");
        assert!(e.contains("service \"a\""), "{e}");
        assert!(e.contains("restrictions.cidr_allow"), "{e}");
        assert!(e.contains("10.0.0.0/33"), "{e}");

        let e = reject("services:\n  - id: a\n    protocol: http\n    hosts: [a.test]\n    upstream: http://x:1\n    restrictions:\n      country_deny: [ZZ]\n");
        assert!(e.contains("\"ZZ\" is not an ISO 3166-1"), "{e}");

        let e = reject("services:\n  - id: a\n    protocol: http\n    hosts: [a.test]\n    upstream: http://x:1\n    colour: blue\n");
        assert!(e.contains("service \"a\"") && e.contains("colour"), "{e}");

        let e = reject("services:\n  - id: a\n    protocol: http\n    hosts: [a.test]\n    upstream: http://x:1\n  - id: b\n    protocol: http\n    hosts: [A.test]\n    upstream: http://x:1\n");
        assert!(
            e.contains("service \"b\"") && e.contains("already served by service \"a\""),
            "{e}"
        );

        let e = reject("services:\n  - id: a\n    protocol: tcp\n    listen: 127.0.0.1:1\n    upstream: nowhere\n");
        assert!(e.contains("upstream") && e.contains("host:port"), "{e}");

        let e = reject("services:\n  - id: a\n    protocol: http\n    hosts: [a.test]\n    upstream: http://x:1\n    restrictions:\n      crowdsec_mode: maybe\n");
        assert!(e.contains("maybe"), "{e}");

        let e = reject("servics: []\n");
        assert!(e.contains("unknown top-level key servics"), "{e}");
    }

    #[test]
    fn reports_every_problem_at_once() {
        let e = reject("services:\n  - id: a\n    protocol: http\n    hosts: []\n    upstream: ftp://x\n    restrictions:\n      cidr_deny: [nope]\n");
        assert!(e.contains("at least one host"), "{e}");
        assert!(e.contains("ftp://x"), "{e}");
        assert!(e.contains("nope"), "{e}");
    }
}
