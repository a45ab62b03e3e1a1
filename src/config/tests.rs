//! Tests of the configuration loader.

use super::*;

fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let map = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::from_map(&map)
}

#[test]
fn defaults_match_the_contract() {
    let s = settings(&[]).unwrap();
    assert_eq!(s.namespace, "webhooks");
    assert_eq!(s.http_addr.to_string(), "127.0.0.1:8080");
    assert_eq!(s.max_event_age, Duration::from_secs(48 * 3600));
    assert_eq!(s.delivery_timeout, Duration::from_secs(10));
    assert_eq!(s.dead_letter_retention, Duration::from_secs(14 * 86400));
    assert_eq!(s.shutdown_timeout, Duration::from_secs(25));
    assert!(!s.allow_http && !s.allow_private_targets);
    assert!(s.admin_token.is_none() && s.secret_key.is_none());
    assert!(s.roles.ingest && s.roles.deliver && s.roles.api);
    assert_eq!(s.endpoint_concurrency, 8);
    assert_eq!(s.host_concurrency, None, "no host cap unless asked for");
    assert!(s.disable_on_gone);
    assert_eq!(s.auto_disable_after, Duration::from_secs(5 * 86400));
    assert_eq!(s.replay_rate, 100);
    assert_eq!(s.backlog_idle, Duration::from_secs(60));
    assert_eq!(s.ingest_partitions, 16);
    for bad in ["0", "257", "x"] {
        let e = settings(&[("WF_INGEST_PARTITIONS", bad)]).unwrap_err();
        assert!(e.to_string().contains("WF_INGEST_PARTITIONS"), "{e}");
    }
    assert_eq!(s.attempt_history, 500);
    assert_eq!(s.attempt_history_age, Duration::from_secs(7 * 86400));
    assert_eq!(
        settings(&[("WF_ATTEMPT_HISTORY", "0")])
            .unwrap()
            .attempt_history,
        0
    );
}

#[test]
fn each_bad_value_names_its_variable() {
    let cases = [
        ("WF_DELIVERY_TIMEOUT", "ten seconds"),
        ("WF_MAX_EVENT_AGE", "0s"),
        ("WF_HTTP_ADDR", "nowhere"),
        ("WF_NAMESPACE", "has space"),
        ("WF_ROLES", "ingest,cook"),
        ("WF_ALLOW_HTTP", "maybe"),
        ("WF_SECRET_KEY", "c2hvcnQ="),
        ("WF_AMQP_URL", "http://localhost"),
        ("WF_AMQP_URL", "amqp://a:5672/%2f,http://b"),
        ("WF_AMQP_URL", "amqp://a:5672/%2f,,amqp://b:5672/%2f"),
        ("WF_RETRY_SCHEDULE", "10s,,30s"),
        ("WF_DELIVERY_CONCURRENCY", "0"),
        ("WF_QUEUE_TYPE", "mirrored"),
        ("WF_HOST_CONCURRENCY", "none"),
        ("WF_DISABLE_ON_GONE", "sometimes"),
        ("WF_AUTO_DISABLE_AFTER", "never"),
        ("WF_REPLAY_RATE", "0"),
        ("WF_ATTEMPT_HISTORY", "-1"),
        ("WF_ATTEMPT_HISTORY_AGE", "0s"),
        ("WF_ATTEMPT_HISTORY", "100001"),
        ("WF_BACKLOG_IDLE", "500ms"),
        ("WF_LOG_FORMAT", "xml"),
    ];
    for (var, value) in cases {
        let e = settings(&[(var, value)]).unwrap_err();
        assert_eq!(e.variable, var, "{value}");
        assert!(e.to_string().contains(var));
    }
}

#[test]
fn a_bad_value_says_what_is_expected() {
    let expected = |var: &str, value: &str| settings(&[(var, value)]).unwrap_err().to_string();
    let cases = [
        ("WF_INGEST_PARTITIONS", "257", "between 1 and 256"),
        ("WF_ATTEMPT_HISTORY", "100001", "from 0 (off) to 100000"),
        ("WF_BACKLOG_IDLE", "500ms", "at least 1s"),
        ("WF_HTTP_ADDR", "nowhere", "host:port"),
        ("WF_QUEUE_TYPE", "mirrored", "`classic` or `quorum`"),
        ("WF_RETRY_SCHEDULE", "10s,,30s", "WF_RETRY_SCHEDULE"),
    ];
    for (var, value, says) in cases {
        let message = expected(var, value);
        assert!(message.contains(says), "{var}={value}: {message}");
    }
    let s = settings(&[("WF_HOST_CONCURRENCY", "12"), ("WF_BACKLOG_IDLE", "1s")]).unwrap();
    assert_eq!(
        (s.host_concurrency, s.backlog_idle),
        (Some(12), Duration::from_secs(1))
    );
}

#[test]
fn the_amqp_url_may_list_the_nodes_of_a_cluster() {
    let s = settings(&[(
        "WF_AMQP_URL",
        "amqp://u:p@rabbit-1:5672/%2f , amqp://u:p@rabbit-2:5672/%2f,amqps://u:p@rabbit-3/%2f",
    )])
    .unwrap();
    assert_eq!(
        s.amqp_url.0,
        "amqp://u:p@rabbit-1:5672/%2f,amqp://u:p@rabbit-2:5672/%2f,amqps://u:p@rabbit-3/%2f"
    );
}

#[test]
fn sentinels_need_a_master_name_and_ports() {
    let s = settings(&[
        ("WF_REDIS_SENTINELS", "10.0.0.1:26379, sentinel-2:26380"),
        ("WF_REDIS_SENTINEL_MASTER", "wf"),
    ])
    .unwrap();
    let sentinel = s.redis_sentinel.unwrap();
    assert_eq!(sentinel.nodes, ["10.0.0.1:26379", "sentinel-2:26380"]);
    assert_eq!(sentinel.master, "wf");
    let e = settings(&[
        ("WF_REDIS_SENTINELS", "10.0.0.1"),
        ("WF_REDIS_SENTINEL_MASTER", "wf"),
    ])
    .unwrap_err();
    assert_eq!(e.variable, "WF_REDIS_SENTINELS");
    // One without the other names the one missing.
    let alone = settings(&[("WF_REDIS_SENTINELS", "127.0.0.1:26379")]).unwrap_err();
    assert_eq!(alone.variable, "WF_REDIS_SENTINEL_MASTER");
    let alone = settings(&[("WF_REDIS_SENTINEL_MASTER", "wf")]).unwrap_err();
    assert_eq!(alone.variable, "WF_REDIS_SENTINELS");
}

#[test]
fn debug_output_hides_secrets() {
    let s = settings(&[("WF_ADMIN_TOKEN", "operator-token-very-secret")]).unwrap();
    let printed = format!("{s:?}");
    assert!(!printed.contains("operator-token-very-secret"));
    assert!(!printed.contains("guest:guest"));
}

#[test]
fn the_loader_reads_exactly_the_variables_of_the_table() {
    let asked = std::sync::Mutex::new(std::collections::BTreeSet::new());
    Settings::from_lookup(|name| {
        asked.lock().unwrap().insert(name.to_string());
        None
    })
    .unwrap();
    let table: std::collections::BTreeSet<String> =
        VARIABLES.iter().map(|v| v.name.to_string()).collect();
    assert_eq!(*asked.lock().unwrap(), table);
    assert_eq!(table.len(), VARIABLES.len(), "a variable is listed twice");
}

#[test]
fn an_extra_ca_bundle_must_hold_usable_certificates() {
    assert!(parse::ca_bundle("").unwrap_err().contains("no CERTIFICATE"));
    let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert!(
        parse::ca_bundle(garbage)
            .unwrap_err()
            .contains("certificate 1")
    );
    let ca = |name: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        params.self_signed(&key).unwrap().pem()
    };
    let bundle = format!("{}{}", ca("ca.example"), ca("ca2.example"));
    assert_eq!(parse::ca_bundle(&bundle).unwrap().len(), 2);
}
