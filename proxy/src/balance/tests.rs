use std::sync::Arc;

use nb_api::{LoadBalancing, PassiveHealthSpec};

use super::targets::Targets;

fn targets(n: usize, balancing: LoadBalancing, max_failures: u32) -> Targets<()> {
    let list = (0..n).map(|i| (Arc::from(format!("t{i}")), ())).collect();
    let passive = PassiveHealthSpec {
        max_failures,
        eject_secs: 10,
    };
    Targets::new("svc".into(), list, balancing, passive)
}

fn picks(t: &Targets<()>, now: u64, n: usize) -> Vec<usize> {
    (0..n).map(|_| t.pick(now, None).unwrap()).collect()
}

#[test]
fn round_robin_takes_each_target_in_turn() {
    let t = targets(3, LoadBalancing::RoundRobin, 3);
    assert_eq!(picks(&t, 0, 6), [0, 1, 2, 0, 1, 2]);
}

#[test]
fn a_single_target_is_always_chosen_and_never_retried() {
    let t = targets(1, LoadBalancing::RoundRobin, 1);
    assert!(t.failed(0, 0), "one failure ejects at max_failures 1");
    assert_eq!(t.pick(5, None), Some(0), "the only target, even ejected");
    assert_eq!(t.pick(5, Some(0)), None, "no other target to retry on");
}

#[test]
fn failures_in_a_row_eject_until_the_time_is_up() {
    let t = targets(3, LoadBalancing::RoundRobin, 2);
    assert!(!t.failed(1, 100));
    t.succeeded(1);
    assert!(!t.failed(1, 100), "a success ended the first streak");
    assert!(t.failed(1, 100), "two in a row");
    assert_eq!(picks(&t, 200, 4), [0, 2, 0, 2], "target 1 is out");
    let report: Vec<_> = t.report(200).collect();
    assert_eq!(report[1].reason.as_deref(), Some("ejected"));
    assert!(!report[1].healthy && report[0].healthy);
    assert_eq!(report[1].failures, 3);
    // 10 s later it is back.
    assert!(picks(&t, 100 + 10_000, 3).contains(&1));
}

#[test]
fn max_failures_zero_never_ejects() {
    let t = targets(2, LoadBalancing::RoundRobin, 0);
    for _ in 0..100 {
        assert!(!t.failed(0, 0));
    }
    assert_eq!(picks(&t, 1, 4), [0, 1, 0, 1]);
}

#[test]
fn when_every_target_is_out_one_is_tried_anyway() {
    let t = targets(2, LoadBalancing::RoundRobin, 1);
    t.failed(0, 0);
    t.failed(1, 0);
    assert_eq!(picks(&t, 1, 4), [0, 1, 0, 1]);
    assert_eq!(
        t.pick(1, Some(0)),
        None,
        "a retry needs a target in rotation"
    );
    t.succeeded(1);
    assert_eq!(picks(&t, 1, 3), [1, 1, 1], "an answer puts it back");
}

#[test]
fn a_retry_goes_to_another_target() {
    let t = targets(3, LoadBalancing::RoundRobin, 3);
    for _ in 0..6 {
        let first = t.pick(0, None).unwrap();
        let retry = t.pick(0, Some(first)).unwrap();
        assert_ne!(first, retry);
    }
}

#[test]
fn failed_checks_take_a_target_out_until_one_passes() {
    let t = targets(2, LoadBalancing::RoundRobin, 3);
    t.checked(0, false);
    assert_eq!(picks(&t, 0, 3), [1, 1, 1]);
    assert_eq!(
        t.report(0).next().unwrap().reason.as_deref(),
        Some("check failed")
    );
    t.checked(0, true);
    assert!(picks(&t, 0, 2).contains(&0));
}

#[test]
fn least_connections_prefers_the_least_loaded() {
    let t = targets(3, LoadBalancing::LeastConnections, 3);
    let busy = [t.begin(0), t.begin(0), t.begin(1)];
    assert_eq!(picks(&t, 0, 4), [2, 2, 2, 2]);
    let also = t.begin(2);
    let also2 = t.begin(2);
    assert_eq!(picks(&t, 0, 2), [1, 1], "1 has one in flight, 0 and 2 two");
    drop((busy, also, also2));
    let loads: Vec<u64> = t.report(0).map(|r| r.in_flight).collect();
    assert_eq!(loads, [0, 0, 0], "guards count down when dropped");
    let spread = picks(&t, 0, 3);
    assert!(
        spread.contains(&0) && spread.contains(&1) && spread.contains(&2),
        "{spread:?}"
    );
}

#[test]
fn a_reload_keeps_the_state_of_targets_it_keeps() {
    let old = targets(2, LoadBalancing::RoundRobin, 1);
    let _gone = old.begin(0);
    let _guard = old.begin(1);
    old.failed(1, 0);
    let list = vec![(Arc::from("t1"), ()), (Arc::from("t9"), ())];
    let new = Targets::new(
        "svc".into(),
        list,
        LoadBalancing::RoundRobin,
        PassiveHealthSpec::default(),
    );
    new.adopt(&old);
    let report: Vec<_> = new.report(1).collect();
    assert_eq!(report[0].target, "t1");
    assert_eq!(
        report[0].reason.as_deref(),
        Some("ejected"),
        "t1 stays ejected"
    );
    assert_eq!((report[0].requests, report[0].failures), (1, 1));
    assert!(report[1].healthy, "t9 is new");
    let in_flight = |t: &Targets<()>| t.report(1).map(|r| r.in_flight).collect::<Vec<_>>();
    assert_eq!(
        in_flight(&new),
        [1, 0],
        "t1's request in flight still counts"
    );
    // A worker still on the old routes: the new state counts its request too.
    let late = old.begin(1);
    assert_eq!(in_flight(&new), [2, 0]);
    drop((_gone, _guard, late));
    assert_eq!(in_flight(&new), [0, 0], "both released in the new state");
    assert_eq!(in_flight(&old), [0, 0]);
}

#[test]
fn least_connections_sees_requests_in_flight_across_reloads() {
    let old = targets(2, LoadBalancing::LeastConnections, 3);
    let busy: Vec<_> = (0..3).map(|_| old.begin(0)).collect();
    let mut current = old;
    // Two reloads in a row: the count follows the chain.
    for _ in 0..2 {
        let next = targets(2, LoadBalancing::LeastConnections, 3);
        next.adopt(&current);
        current = next;
    }
    for _ in 0..3 {
        assert_eq!(current.pick(0, None), Some(1), "t0 has 3 in flight");
    }
    drop(busy);
    let t0 = current.report(0).next().unwrap();
    assert_eq!(t0.in_flight, 0);
}
