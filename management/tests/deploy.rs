//! `deploy/docker-compose.yml` against the Compose specification. No Docker engine runs on the
//! test machines, so the file is validated rather than run (`scripts/check-deploy.sh` checks
//! the rest of `deploy/`: the systemd units with `systemd-analyze verify`, the Dockerfile).

use std::path::Path;

fn compose_file() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/docker-compose.yml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn check(yaml: &str) -> Result<compose_spec::Compose, String> {
    let compose = compose_spec::Compose::options()
        .from_yaml_str(yaml)
        .map_err(|e| e.to_string())?;
    compose.validate_all().map_err(|e| e.to_string())?;
    Ok(compose)
}

#[test]
fn the_compose_file_follows_the_compose_specification() {
    let compose =
        check(&compose_file()).unwrap_or_else(|e| panic!("deploy/docker-compose.yml: {e}"));
    let names: Vec<&str> = compose.services.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["crowdsec", "management", "proxy"]);
}

/// The validator is strict enough to catch the mistakes a hand-edited file gets: misspelled
/// keys, values outside their enumerations, references to undeclared things.
#[test]
fn mistakes_in_the_compose_file_are_caught() {
    let good = compose_file();
    for (from, to, expected) in [
        ("healthcheck:", "healthchek:", "healthchek"),
        (
            "condition: service_healthy",
            "condition: service_happy",
            "service_happy",
        ),
        ("restart: unless-stopped", "restart: sometimes", "sometimes"),
        ("\nvolumes:\n", "\nvolume:\n", "volume"),
    ] {
        assert!(
            good.contains(from),
            "{from:?} is no longer in the file: update this test"
        );
        let bad = good.replacen(from, to, 1);
        let err = check(&bad)
            .err()
            .unwrap_or_else(|| panic!("{to:?} was accepted"));
        assert!(err.contains(expected), "{to:?}: {err}");
    }
}
