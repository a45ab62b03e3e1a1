//! A bad setting stops start-up with a one-line message naming the variable.

use std::process::Command;

#[test]
fn a_bad_setting_stops_start_naming_the_variable() {
    // A file that is there but holds no certificate.
    let not_pem = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    for (var, value) in [
        ("WF_EXTRA_CA_FILE", "/nonexistent/extra-ca.pem"),
        ("WF_EXTRA_CA_FILE", not_pem),
        ("WF_HTTP_PROXY", "https://proxy.internal:3128"),
        ("WF_HTTP_PROXY", "proxy.internal:3128"),
        ("WF_HTTP_PROXY", "http://proxy.internal:3128/some/path"),
        ("WF_DELIVERY_TIMEOUT", "soon"),
        ("WF_RETRY_SCHEDULE", "10s,forever"),
        ("WF_HTTP_ADDR", "port-eighty"),
        ("WF_SECRET_KEY", "tooshort"),
        ("WF_ROLES", "ingest,bake"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_webhook-fanout"))
            .arg("serve")
            .env(var, value)
            .output()
            .expect("the binary runs");
        assert!(!out.status.success(), "{var}={value} must stop start-up");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(var), "{var} named in: {stderr}");
    }
}

#[test]
fn the_error_never_echoes_a_secret_value() {
    let out = Command::new(env!("CARGO_BIN_EXE_webhook-fanout"))
        .arg("serve")
        .env("WF_AMQP_URL", "http://guest:hunter2-password@localhost")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("WF_AMQP_URL") && !stderr.contains("hunter2"),
        "{stderr}"
    );
}
