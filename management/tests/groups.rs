//! Proxy groups: a proxy is sent only the services of its group, moving it changes what it is
//! sent, and CrowdSec is decided over the proxies of a service's groups, on both stores.

mod common;

use serde_json::{json, Value};

use common::{both, server_with};

fn web(id: &str, groups: &[&str]) -> Value {
    json!({"id": id, "protocol": "http", "hosts": [format!("{id}.test")],
           "upstream": "http://127.0.0.1:8080", "groups": groups})
}

#[tokio::test]
async fn proxies_get_their_groups_services_and_crowdsec_is_decided_per_group() {
    for backend in both().await {
        let name = backend.name;
        let s = server_with(backend, Default::default()).await;
        let create = |name: &str, group: Option<&str>| {
            let mut body = json!({ "name": name });
            if let Some(g) = group {
                body["group"] = json!(g);
            }
            body
        };
        let (status, eu) = s
            .api
            .call("POST", "/api/v1/proxies", Some(&create("eu-1", Some("eu"))))
            .await;
        assert_eq!(status, 201, "{name}: {eu}");
        assert_eq!(eu["proxy"]["group"], "eu");
        let (_, us) = s
            .api
            .call("POST", "/api/v1/proxies", Some(&create("us-1", Some("us"))))
            .await;
        let (_, plain) = s
            .api
            .call("POST", "/api/v1/proxies", Some(&create("plain-1", None)))
            .await;
        assert_eq!(plain["proxy"]["group"], "default");
        let token = |v: &Value| v["token"].as_str().unwrap().to_owned();

        for (id, groups) in [
            ("shop", vec!["eu"]),
            ("blog", vec!["eu", "us"]),
            ("wiki", vec![]),
        ] {
            let mut body = web(id, &groups);
            if groups.is_empty() {
                body.as_object_mut().unwrap().remove("groups");
            }
            let (status, v) = s.api.call("POST", "/api/v1/services", Some(&body)).await;
            assert_eq!(status, 201, "{name}: {v}");
        }
        let (_, wiki) = s.api.call("GET", "/api/v1/services/wiki", None).await;
        assert_eq!(wiki["groups"], json!(["default"]), "the default group");

        let mut eu_stream = s.updates(&token(&eu)).await;
        let mut us_stream = s.updates(&token(&us)).await;
        let mut plain_stream = s.updates(&token(&plain)).await;
        assert_eq!(eu_stream.next_ids().await, ["blog", "shop"], "{name}");
        assert_eq!(us_stream.next_ids().await, ["blog"]);
        assert_eq!(plain_stream.next_ids().await, ["wiki"]);
        s.report(&token(&eu), true).await;
        s.report(&token(&us), false).await;
        s.report(&token(&plain), false).await;

        // CrowdSec for a service of "eu" only asks the proxies of "eu"; one that also
        // targets "us" needs us-1 too.
        let mut shop = web("shop", &["eu"]);
        shop["restrictions"] = json!({"crowdsec_mode": "enforce"});
        let (status, v) = s
            .api
            .call("PUT", "/api/v1/services/shop", Some(&shop))
            .await;
        assert_eq!(status, 200, "{name}: {v}");
        let mut blog = web("blog", &["eu", "us"]);
        blog["restrictions"] = json!({"crowdsec_mode": "observe"});
        let (status, v) = s
            .api
            .call("PUT", "/api/v1/services/blog", Some(&blog))
            .await;
        assert_eq!(status, 422, "{name}: {v}");
        let why = v["problems"][0]["message"].as_str().unwrap();
        assert!(
            why.contains(
                "not every live proxy of groups \"eu\", \"us\" supports CrowdSec: \"us-1\""
            ),
            "{why}"
        );
        let (_, caps) = s
            .api
            .call("GET", "/api/v1/capabilities?groups=eu", None)
            .await;
        assert_eq!(caps["crowdsec"]["supported"], true, "{caps}");
        let (_, caps) = s
            .api
            .call("GET", "/api/v1/capabilities?groups=eu,us", None)
            .await;
        assert_eq!(caps["crowdsec"]["supported"], false, "{caps}");
        // Moving a CrowdSec service to a group without the support is refused too.
        shop["groups"] = json!(["us"]);
        let (status, v) = s
            .api
            .call("PUT", "/api/v1/services/shop", Some(&shop))
            .await;
        assert_eq!(status, 422, "{name}: {v}");
        assert_eq!(v["problems"][0]["field"], "restrictions.crowdsec_mode");

        // Moving us-1 to "eu": its stream sends eu's services at once.
        let us_id = us["proxy"]["id"].as_str().unwrap();
        let (status, v) = s
            .api
            .call(
                "PUT",
                &format!("/api/v1/proxies/{us_id}"),
                Some(&json!({"group": "eu"})),
            )
            .await;
        assert_eq!(status, 200, "{name}: {v}");
        assert_eq!(v["group"], "eu");
        us_stream.until_ids(&["blog", "shop"]).await;
        let (_, audit) = s.api.call("GET", "/api/v1/audit?kind=proxy", None).await;
        let moved = audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == "update")
            .unwrap_or_else(|| panic!("{audit}"));
        assert!(moved.to_string().contains("\"us\""), "{moved}");

        // Names are checked; a service must target at least one group, each problem said.
        let (status, v) = s
            .api
            .call(
                "POST",
                "/api/v1/proxies",
                Some(&create("bad", Some("Edge EU"))),
            )
            .await;
        assert_eq!(status, 422);
        assert_eq!(v["problems"][0]["field"], "group");
        let (status, v) = s
            .api
            .call(
                "PUT",
                &format!("/api/v1/proxies/{us_id}"),
                Some(&json!({"group": ""})),
            )
            .await;
        assert_eq!(status, 422, "{v}");
        let (status, v) = s
            .api
            .call("POST", "/api/v1/services", Some(&web("none", &[])))
            .await;
        assert_eq!(status, 422);
        assert_eq!(v["problems"][0]["field"], "groups");
        let (status, v) = s
            .api
            .call(
                "POST",
                "/api/v1/services",
                Some(&web("dup", &["eu", "eu", "EU"])),
            )
            .await;
        assert_eq!(status, 422);
        let fields: Vec<&str> = v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, ["groups[1]", "groups[2]"], "{v}");
        let (status, _) = s
            .api
            .call("PUT", "/api/v1/proxies/nope", Some(&json!({"group": "eu"})))
            .await;
        assert_eq!(status, 404);
    }
}
