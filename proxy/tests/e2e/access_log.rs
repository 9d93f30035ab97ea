//! The access log never lies: a failed write is counted, never leaves half a line, and writing
//! resumes when it can; the file is reopened for logrotate.

use std::time::Duration;

use crate::harness::*;

const LIMIT: u64 = 32 * 1024;

#[tokio::test]
async fn a_full_disk_drops_whole_lines_counts_them_and_recovers() {
    let up = Upstream::start("u").await;
    let yaml = format!(
        "services:\n  - id: web\n    protocol: http\n    hosts: [web.test]\n    upstream: {}\n",
        up.url()
    );
    // A file-size limit behaves like a full disk for the log: writes past it fail (EFBIG),
    // possibly after writing part of the data.
    let proxy = ProxyBuilder::new(&yaml)
        .metrics()
        .rlimit(libc::RLIMIT_FSIZE, LIMIT)
        .start()
        .await;
    let mut sender = keep_alive_from("127.0.13.1", proxy.http_addr()).await;
    const N: usize = 600;
    for i in 0..N {
        // Paths of varied length, so that lines end at every offset.
        let path = format!("/{i}/{}", "p".repeat(i % 97));
        assert_eq!(
            send(&mut sender, "web.test", &path, &[])
                .await
                .unwrap()
                .status,
            200
        );
    }
    let text = poll(400, || {
        let t = std::fs::read_to_string(&proxy.access_log).unwrap_or_default();
        (t.lines().count() > 10).then_some(t)
    })
    .await
    .unwrap();
    // Give the writer time to try (and fail) the rest.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = std::fs::read_to_string(&proxy.access_log).unwrap_or(text);
    assert!(text.len() as u64 <= LIMIT);
    assert!(text.ends_with('\n'), "no partial line at the end");
    let written = text.lines().count();
    for l in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("corrupt line {l:?}: {e}"));
        assert_eq!(v["status"], 200);
    }
    let dropped = proxy.metric("nb_proxy_access_log_dropped_total").await as usize;
    assert!(written < N, "the limit was reached");
    assert_eq!(written + dropped, N, "every entry is written or counted");
    let errors = proxy
        .stderr_text()
        .matches("cannot write the access log")
        .count();
    assert!(
        (1..=2).contains(&errors),
        "logged at a bounded rate: {errors}"
    );

    // logrotate: move the file away and ask for a new one; writing resumes in it.
    let rotated = proxy.dir.path().join("access.log.1");
    std::fs::rename(&proxy.access_log, &rotated).unwrap();
    proxy.signal(libc::SIGUSR1);
    proxy.wait_log_count("access log reopened", 1).await;
    for i in 0..10 {
        let path = format!("/after/{i}");
        assert_eq!(
            send(&mut sender, "web.test", &path, &[])
                .await
                .unwrap()
                .status,
            200
        );
    }
    let fresh = proxy.wait_entries(10).await;
    assert_eq!(fresh.len(), 10, "{fresh:?}");
    assert_eq!(fresh[0]["path"], "/after/0");
    assert_eq!(
        proxy.metric("nb_proxy_access_log_dropped_total").await as usize,
        dropped,
        "nothing more lost"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&proxy.access_log)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the new log is private");
    assert!(proxy.stderr_text().contains("writable again"));
}

/// `--access-log off` writes no log anywhere, yet every request is still counted; `--workers`
/// sets how many serving threads run.
#[tokio::test]
async fn access_log_off_writes_nothing_and_still_counts() {
    let up = Upstream::start("u").await;
    let yaml = format!(
        "services:\n  - id: web\n    protocol: http\n    hosts: [web.test]\n    upstream: {}\n    \
         restrictions: {{cidr_deny: [127.0.14.2/32]}}\n",
        up.url()
    );
    let proxy = ProxyBuilder::new(&yaml)
        .metrics()
        .access_log_off()
        .workers(3)
        .start()
        .await;
    let workers = std::fs::read_dir(format!("/proc/{}/task", proxy.pid()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.starts_with("nb-worker-"))
        .count();
    assert_eq!(workers, 3, "one serving thread per --workers");
    for _ in 0..7 {
        assert_eq!(
            get_from(&proxy, "127.0.14.1", "web.test", "/").await.status,
            200
        );
    }
    for _ in 0..2 {
        assert_eq!(
            get_from(&proxy, "127.0.14.2", "web.test", "/").await.status,
            403
        );
    }
    let series = "nb_proxy_requests_total{protocol=\"http\",verdict=";
    assert_eq!(proxy.metric(&format!("{series}\"allow\"}}")).await, 7.0);
    assert_eq!(
        proxy.metric(&format!("{series}\"ip_restricted\"}}")).await,
        2.0
    );
    assert_eq!(proxy.metric("nb_proxy_access_log_dropped_total").await, 0.0);
    assert!(!proxy.access_log.exists(), "no log file");
    let cwd = std::fs::read_link(format!("/proc/{}/cwd", proxy.pid())).unwrap();
    assert!(!cwd.join("off").exists(), "`off` is not a file name here");
    assert!(
        !proxy.stderr_text().contains("\"service_id\""),
        "nor on stderr"
    );
}
