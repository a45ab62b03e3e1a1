//! JSON whitespace removal that keeps everything else byte for byte, so the
//! delivery body carries the producer's `content` unchanged but compact.

/// Removes insignificant whitespace from valid JSON, keeping key order, number
/// spelling and string escapes byte for byte.
pub(crate) fn minify_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\n' | '\r' | '\t') {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minify_keeps_strings_intact() {
        assert_eq!(
            minify_json(" { \"a b\" : [ 1 , 2.50 ] ,\n\"c\":\"\\\\\" } "),
            r#"{"a b":[1,2.50],"c":"\\"}"#
        );
    }

    #[test]
    fn compact_json_is_left_as_it_is() {
        let compact = r#"{"a":{"b":[1,"x y",null,true]},"\u00e9":-1.5e3}"#;
        assert_eq!(minify_json(compact), compact);
    }
}
