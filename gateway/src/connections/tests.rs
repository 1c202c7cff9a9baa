use super::*;

#[test]
fn counts_cap_the_listener_and_each_source_and_free_on_drop() {
    let limits = ConnectionLimits {
        max_connections: 3,
        max_connections_per_source: 2,
        ..ConnectionLimits::DEFAULT
    };
    let counts = ConnectionCounts::new(&limits);
    let a: IpAddr = [127, 0, 0, 1].into();
    let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
    let b: IpAddr = [127, 0, 0, 2].into();
    let first = counts.admit(a).unwrap();
    let _second = counts.admit(mapped).unwrap();
    assert_eq!(counts.admit(a).unwrap_err(), Refused::SourceFull);
    let _third = counts.admit(b).unwrap();
    assert_eq!(counts.admit(b).unwrap_err(), Refused::ListenerFull);
    drop(first);
    let _again = counts.admit(a).unwrap();
}

#[test]
fn a_balancers_connection_counts_against_its_carried_source() {
    let limits = ConnectionLimits {
        max_connections: 3,
        max_connections_per_source: 1,
        ..ConnectionLimits::DEFAULT
    };
    let counts = ConnectionCounts::new(&limits);
    let client: IpAddr = [192, 0, 2, 7].into();
    let mut first = counts.admit_unattributed().unwrap();
    let mut second = counts.admit_unattributed().unwrap();
    first.attribute(client).unwrap();
    assert_eq!(second.attribute(client).unwrap_err(), Refused::SourceFull);
    // A refused slot still holds its place under the listener's cap until dropped.
    let _third = counts.admit_unattributed().unwrap();
    assert_eq!(
        counts.admit_unattributed().unwrap_err(),
        Refused::ListenerFull
    );
    drop(second);
    drop(first);
    let mut again = counts.admit_unattributed().unwrap();
    again.attribute(client).unwrap();
    assert_eq!(counts.open.lock().unwrap().1.len(), 1);
}
