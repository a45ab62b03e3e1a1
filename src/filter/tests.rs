use serde_json::json;

use super::*;

fn payment(status: &str, amount: serde_json::Value) -> Variables {
    Variables::new(
        "evt_1",
        "app_1",
        "payment.transaction.updated",
        json!(1_764_000_000),
        &json!({"payment_transaction_id": "tr_1", "status": status, "amount": amount,
                "items": [{"status": "ok"}, {"status": "failed"}]}),
    )
}

fn check(source: &str, event: &Variables) -> Result<bool, String> {
    Filter::compile(source)
        .map_err(|e| e.to_string())?
        .matches(event)
}

#[test]
fn filters_see_the_five_variables_and_the_content() {
    let e = payment("ACSC", json!(150));
    for (source, expected) in [
        ("type == 'payment.transaction.updated'", true),
        ("type.startsWith('payment.')", true),
        ("content.status in ['ACSC', 'RJCT']", true),
        ("content.status == 'RJCT'", false),
        ("content.amount > 100", true),
        ("content.amount >= 100.5", true),
        ("has(content.status_reason)", false),
        (
            "!has(content.status_reason) && content.status == 'ACSC'",
            true,
        ),
        ("content.items.exists(i, i.status == 'failed')", true),
        ("content.items.all(i, i.status == 'ok')", false),
        ("size(content.items.filter(i, i.status == 'ok')) == 1", true),
        ("application_id == 'app_1' && id == 'evt_1'", true),
        ("timestamp > 1700000000", true),
        ("content.status.matches('^AC')", true),
    ] {
        assert_eq!(check(source, &e), Ok(expected), "{source}");
    }
}

#[test]
fn a_missing_field_or_a_wrong_type_on_an_event_is_an_error_not_a_match() {
    let e = payment("ACSC", json!("150"));
    let missing = check("content.status_reason == 'AC01'", &e);
    assert!(missing.unwrap_err().contains("status_reason"));
    assert!(
        check("content.amount > 100", &e).is_err(),
        "a string against an int"
    );
}

#[test]
fn filters_that_cannot_run_on_every_event_are_refused_saying_why() {
    let deep = format!("{}true{}", "(".repeat(40), ")".repeat(40));
    let long = format!("type == '{}'", "x".repeat(MAX_FILTER_CHARS));
    let wide = format!("size([{}]) > 0", vec!["1"; 600].join(","));
    for (source, says) in [
        ("type ==", "does not compile"),
        ("type == 'a' &&& true", "does not compile"),
        ("", "empty"),
        ("contnet.status == 'x'", "unknown variable `contnet`"),
        ("content.amount * 2", "must give true or false"),
        ("[content.status]", "must give true or false"),
        ("'payment'", "it gives a string"),
        ("size(content)", "it gives an integer"),
        ("type + 1 == 2", "cannot run"),
        ("nosuch(type)", "cannot run"),
        (deep.as_str(), "levels deep"),
        (long.as_str(), "characters long"),
        (wide.as_str(), "too large"),
        (
            "content.items.exists(a, content.items.exists(b, a == b))",
            "inside another's body",
        ),
        (
            "[1, 2].all(x, x > 0) && [1].exists(x, x == 1) && [2].exists(x, x == 2) \
             && [3].exists(x, x == 3) && [4].exists(x, x == 4)",
            "5 macros",
        ),
    ] {
        let refused = Filter::compile(source).expect_err(source).to_string();
        assert!(refused.contains(says), "{source}: {refused}");
    }
}

#[test]
fn macro_variables_are_bound_and_chained_macros_are_allowed() {
    let e = payment("ACSC", json!(1));
    let chained = "content.items.map(i, i.status).exists(s, s == 'failed')";
    assert_eq!(check(chained, &e), Ok(true));
    assert_eq!(check("type(content.amount) == int", &e), Ok(true));
}

#[test]
fn variables_come_from_the_delivery_body() {
    let body = r#"{"content":{"status":"RJCT"},"timestamp":1764000000,"type":"payment.transaction.updated"}"#;
    let v = Variables::of_body("evt_9", "app_9", "payment.transaction.updated", body);
    let f = Filter::compile("content.status == 'RJCT' && timestamp == 1764000000").unwrap();
    assert_eq!(f.matches(&v), Ok(true));
}

#[test]
fn pathological_filters_are_refused_without_blowing_the_stack() {
    let cases = [
        format!("{}true{}", "(".repeat(1_990 / 2), ")".repeat(1_990 / 2)),
        format!("{}true", "!".repeat(1_990)),
        format!("{}1 > 0", "-".repeat(1_990)),
        format!("content{} == 1", ".a".repeat(990)),
        format!("{}1 == 1", "1 + ".repeat(495)),
        format!("{}true", "true && ".repeat(249)),
        format!("[{}] == []", "[".repeat(900)),
    ];
    for source in &cases {
        // Refused, or (a flat chain within the bounds) accepted: never a crash.
        if let Ok(f) = Filter::compile(source) {
            let _ = f.matches(&payment("ACSC", json!(1)));
        }
    }
    // A raw string's backslash escapes nothing: the brackets after it count.
    let raw = format!(r"id == r'\' || {}true{}", "(".repeat(900), ")".repeat(900));
    assert!(
        Filter::compile(&raw)
            .unwrap_err()
            .to_string()
            .contains("levels deep")
    );
    // Brackets inside a string literal are text, not nesting.
    let quoted = format!("content.status != '{}'", "(".repeat(100));
    assert!(Filter::compile(&quoted).is_ok());
}
