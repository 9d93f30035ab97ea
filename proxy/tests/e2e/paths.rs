//! Routing by path prefix: the longest prefix of a host wins, its service's rules apply, the
//! prefix can be stripped, and paths that would reach a prefix by another spelling are either
//! normalised (and sent upstream normalised) or refused.

use crate::harness::*;

fn yaml(site: &Upstream, admin: &Upstream, api: &Upstream) -> String {
    format!(
        "services:
  - id: site
    protocol: http
    hosts: [web.test]
    upstream: {}
  - id: admin
    protocol: http
    hosts: [web.test]
    path_prefix: /admin
    upstream: {}
    restrictions:
      cidr_allow: [127.0.0.1]
  - id: api
    protocol: http
    hosts: [web.test]
    path_prefix: /api/v1/
    strip_path_prefix: true
    upstream: {}
",
        site.url(),
        admin.url(),
        api.url()
    )
}

#[tokio::test]
async fn the_longest_prefix_routes_and_its_rules_apply() {
    let (site, admin, api) = (
        Upstream::start("site").await,
        Upstream::start("admin").await,
        Upstream::start("api").await,
    );
    let proxy = ProxyBuilder::new(&yaml(&site, &admin, &api)).start().await;
    let go = |source: &'static str, path: &'static str| {
        let proxy = &proxy;
        async move { get_from(proxy, source, "web.test", path).await }
    };

    for (path, upstream, seen_path) in [
        ("/", "site", "/"),
        ("/administrator", "site", "/administrator"),
        ("/admin", "admin", "/admin"),
        ("/admin/users?page=2", "admin", "/admin/users?page=2"),
        ("/api/v1/items?x=1", "api", "/items?x=1"),
        ("/api/v1", "api", "/"),
        ("/api/v2", "site", "/api/v2"),
    ] {
        let r = go("127.0.0.1", path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_eq!(r.json()["upstream"], upstream, "{path}");
        assert_eq!(r.json()["path"], seen_path, "{path}");
    }
    // /admin is stricter than the rest of the host.
    assert_eq!(go("127.0.0.9", "/admin/users").await.status, 403);
    assert_eq!(go("127.0.0.9", "/").await.status, 200);

    // Other spellings of /admin reach /admin's service, and its rules, in one spelling.
    for sneaky in [
        "/%61dmin/users",
        "//admin/users",
        "/admin//users",
        "/ADMIN%2fx",
    ] {
        let r = go("127.0.0.9", sneaky).await;
        if sneaky.contains("%2f") {
            // No prefix matches case-sensitively, but an encoded slash is refused outright.
            assert_eq!(r.status, 400, "{sneaky}");
        } else {
            assert_eq!(r.status, 403, "{sneaky}: the admin rules apply");
        }
        let r = go("127.0.0.1", sneaky).await;
        if !sneaky.contains("%2f") {
            assert_eq!(r.json()["upstream"], "admin", "{sneaky}");
            assert_eq!(
                r.json()["path"],
                "/admin/users",
                "{sneaky}: sent normalised"
            );
        }
    }
    for refused in [
        "/x/../admin/users",
        "/%2e%2e/admin",
        "/public%2F..%2Fadmin",
        "/admin%5cx",
    ] {
        assert_eq!(go("127.0.0.1", refused).await.status, 400, "{refused}");
    }
    // 7 routed, 2 by rule, 4 spellings twice, 4 refused.
    let entries = proxy.wait_entries(21).await;
    let refused = entries
        .iter()
        .find(|e| e["status"] == 400 && e["service_id"] == "")
        .expect("a refused path is logged");
    assert_eq!(
        refused["metadata"]["client_error"],
        "the path has dot segments or encoded slashes"
    );
}

#[tokio::test]
async fn a_host_without_prefixes_keeps_its_paths_exactly() {
    let site = Upstream::start("site").await;
    let proxy = ProxyBuilder::new(&format!(
        "services:\n  - id: site\n    protocol: http\n    hosts: [web.test]\n    upstream: {}\n",
        site.url()
    ))
    .start()
    .await;
    // Not routed by path: nothing is normalised or refused, the upstream decides.
    let r = get_from(&proxy, "127.0.0.1", "web.test", "/a//b/%2e%2e/%61").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/a//b/%2e%2e/%61");
}
