//! Which decisions this bouncer enforces: by origin, by scenario substring, by type. Sent to
//! the LAPI as query filters and applied again locally (older LAPIs may ignore some).

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecisionFilter {
    /// Exact origins (`crowdsec`, `cscli`, `CAPI`, `lists`, …); empty = all.
    pub origins: Vec<String>,
    /// Keep a decision only if its scenario contains one of these (case-insensitive).
    pub scenarios_containing: Vec<String>,
    /// Drop a decision whose scenario contains one of these (case-insensitive).
    pub scenarios_not_containing: Vec<String>,
    /// Types enforced (`ban`, `captcha`, …); empty = all.
    pub types: Vec<String>,
}

fn contains_ci(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

impl DecisionFilter {
    pub fn new(
        origins: Vec<String>,
        scenarios_containing: Vec<String>,
        scenarios_not_containing: Vec<String>,
        types: Vec<String>,
    ) -> Self {
        let clean = |v: Vec<String>| -> Vec<String> {
            v.into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        Self {
            origins: clean(origins),
            scenarios_containing: clean(scenarios_containing),
            scenarios_not_containing: clean(scenarios_not_containing),
            types: clean(types),
        }
    }

    pub fn origin_ok(&self, origin: &str) -> bool {
        self.origins.is_empty() || self.origins.iter().any(|o| o == origin)
    }

    pub fn scenario_ok(&self, scenario: &str) -> bool {
        (self.scenarios_containing.is_empty()
            || self
                .scenarios_containing
                .iter()
                .any(|n| contains_ci(scenario, n)))
            && !self
                .scenarios_not_containing
                .iter()
                .any(|n| contains_ci(scenario, n))
    }

    pub fn type_ok(&self, kind: &str) -> bool {
        self.types.is_empty() || self.types.iter().any(|t| t.eq_ignore_ascii_case(kind))
    }

    /// The LAPI query parameters for these filters.
    pub fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if !self.origins.is_empty() {
            q.push(("origins", self.origins.join(",")));
        }
        if !self.scenarios_containing.is_empty() {
            q.push(("scenarios_containing", self.scenarios_containing.join(",")));
        }
        if !self.scenarios_not_containing.is_empty() {
            q.push((
                "scenarios_not_containing",
                self.scenarios_not_containing.join(","),
            ));
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        let f = DecisionFilter::new(
            vec!["crowdsec".into(), " cscli".into()],
            vec![],
            vec!["NB-PROXY".into()],
            vec!["ban".into()],
        );
        assert!(f.origin_ok("cscli"));
        assert!(!f.origin_ok("CAPI"));
        assert!(f.scenario_ok("crowdsecurity/ssh-bf"));
        assert!(
            !f.scenario_ok("custom/nb-proxy-loop"),
            "excluded case-insensitively"
        );
        assert!(f.type_ok("BAN"));
        assert!(!f.type_ok("captcha"));
        let all = DecisionFilter::default();
        assert!(all.origin_ok("anything") && all.scenario_ok("") && all.type_ok("x"));
        let only = DecisionFilter::new(vec![], vec!["ssh".into()], vec![], vec![]);
        assert!(only.scenario_ok("crowdsecurity/SSH-bf"));
        assert!(!only.scenario_ok("http-probing"));
        assert_eq!(f.query().len(), 2);
    }
}
