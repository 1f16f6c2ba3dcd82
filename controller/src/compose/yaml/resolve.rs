//! How a scalar gets its type, as go-yaml v3 (Compose's parser) decides it.
//!
//! Plain scalars use the YAML 1.2 core schema (`yes`/`no`/`on` stay strings), with
//! go-yaml's extensions for integers: Go's base prefixes (`0x`, `0o`, `0b`), the YAML 1.1
//! octal `0755`, and `_` digit separators. An integer's text is rewritten to its decimal
//! value, because Compose sees the number and not its spelling: `0755` in an
//! `environment:` value reaches the container as `493`. Floats keep their text.

use super::ScalarKind;

/// YAML 1.2 core schema resolution of a plain scalar, with go-yaml v3's integers.
pub fn resolve_plain(s: &str) -> ScalarKind {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return ScalarKind::Null,
        "true" | "True" | "TRUE" | "false" | "False" | "FALSE" => return ScalarKind::Bool,
        ".inf" | "-.inf" | "+.inf" | ".Inf" | "-.Inf" | "+.Inf" | ".INF" | "-.INF" | "+.INF"
        | ".nan" | ".NaN" | ".NAN" => return ScalarKind::Float,
        _ => {}
    }
    if int_value(s).is_some() {
        return ScalarKind::Int;
    }
    // go-yaml only tries numbers for text that starts with a digit, a sign or a dot.
    let starts_numeric = s
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.'));
    if starts_numeric && is_yaml_float(&s.replace('_', "")) {
        return ScalarKind::Float;
    }
    ScalarKind::Str
}

/// The value of an integer as go-yaml reads it (Go's `ParseInt(s, 0, 64)`, then
/// `ParseUint`, after removing `_`; then `0b`/`0o`), as decimal text.
pub fn int_value(s: &str) -> Option<String> {
    let first = s.bytes().next()?;
    if !(first.is_ascii_digit() || first == b'-' || first == b'+') {
        return None;
    }
    let plain = s.replace('_', "");
    let (neg, body) = match plain.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, plain.strip_prefix('+').unwrap_or(&plain)),
    };
    let (radix, digits) = if let Some(d) = body.strip_prefix("0x").or(body.strip_prefix("0X")) {
        (16, d)
    } else if let Some(d) = body.strip_prefix("0o").or(body.strip_prefix("0O")) {
        (8, d)
    } else if let Some(d) = body.strip_prefix("0b").or(body.strip_prefix("0B")) {
        (2, d)
    } else if body.len() > 1 && body.starts_with('0') {
        (8, &body[1..])
    } else {
        (10, body)
    };
    // `from_str_radix` would take a second sign; Go does not.
    if digits.is_empty() || !digits.bytes().all(|b| (b as char).is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(digits, radix).ok()?;
    if neg {
        // i64::MIN is the one negative value whose magnitude does not fit in i64.
        if magnitude > i64::MAX as u64 + 1 {
            return None;
        }
        if magnitude == 0 {
            return Some("0".into());
        }
        return Some(format!("-{magnitude}"));
    }
    Some(magnitude.to_string())
}

/// `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`, go-yaml's float syntax.
fn is_yaml_float(s: &str) -> bool {
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mant, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let digits = |t: &str| t.bytes().all(|c| c.is_ascii_digit());
    let mant_ok = match mant.split_once('.') {
        Some((a, b)) => digits(a) && digits(b) && !(a.is_empty() && b.is_empty()),
        None => !mant.is_empty() && digits(mant),
    };
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mant_ok && exp_ok
}

/// The type of a scalar and its text as Compose sees it, or why it cannot have the
/// type its tag asks for (go-yaml: "cannot decode !!str `yes` as a !!bool").
pub fn typed(
    text: String,
    plain: bool,
    core: Option<&str>,
) -> Result<(String, ScalarKind), String> {
    let natural = if plain || core.is_some() {
        resolve_plain(&text)
    } else {
        ScalarKind::Str
    };
    let kind = match core {
        None => natural,
        Some("str") => ScalarKind::Str,
        Some(want) => {
            let ok = match want {
                "int" => natural == ScalarKind::Int,
                "float" => matches!(natural, ScalarKind::Int | ScalarKind::Float),
                "bool" => natural == ScalarKind::Bool,
                "null" => natural == ScalarKind::Null,
                _ => true,
            };
            if !ok {
                return Err(format!(
                    "cannot decode !!{} `{text}` as a !!{want}",
                    short_tag(natural)
                ));
            }
            match want {
                "int" => ScalarKind::Int,
                "float" => ScalarKind::Float,
                "bool" => ScalarKind::Bool,
                "null" => ScalarKind::Null,
                _ => ScalarKind::Str,
            }
        }
    };
    let text = match kind {
        ScalarKind::Int => int_value(&text).unwrap_or(text),
        _ => text,
    };
    Ok((text, kind))
}

fn short_tag(k: ScalarKind) -> &'static str {
    match k {
        ScalarKind::Null => "null",
        ScalarKind::Bool => "bool",
        ScalarKind::Int => "int",
        ScalarKind::Float => "float",
        ScalarKind::Str => "str",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_scalars_use_the_core_schema() {
        assert_eq!(resolve_plain("no"), ScalarKind::Str);
        assert_eq!(resolve_plain("yes"), ScalarKind::Str);
        assert_eq!(resolve_plain("true"), ScalarKind::Bool);
        assert_eq!(resolve_plain("~"), ScalarKind::Null);
        assert_eq!(resolve_plain("-12"), ScalarKind::Int);
        assert_eq!(resolve_plain("0x1F"), ScalarKind::Int);
        assert_eq!(resolve_plain("1.5"), ScalarKind::Float);
        assert_eq!(resolve_plain("1e3"), ScalarKind::Float);
        assert_eq!(resolve_plain("8080:80"), ScalarKind::Str);
        assert_eq!(resolve_plain("1.2.3"), ScalarKind::Str);
        assert_eq!(resolve_plain("0x"), ScalarKind::Str);
        assert_eq!(resolve_plain("+-1"), ScalarKind::Str);
    }

    #[test]
    fn integers_read_as_go_yaml_reads_them() {
        assert_eq!(int_value("0x1F").as_deref(), Some("31"));
        assert_eq!(int_value("0o17").as_deref(), Some("15"));
        assert_eq!(int_value("0755").as_deref(), Some("493"));
        assert_eq!(int_value("0b101").as_deref(), Some("5"));
        assert_eq!(int_value("1_000").as_deref(), Some("1000"));
        assert_eq!(int_value("+12").as_deref(), Some("12"));
        assert_eq!(int_value("-0x10").as_deref(), Some("-16"));
        assert_eq!(int_value("-0").as_deref(), Some("0"));
        assert_eq!(
            int_value("18446744073709551615").as_deref(),
            Some("18446744073709551615")
        );
        // Not an octal: go-yaml falls through to its float syntax.
        assert_eq!(int_value("08"), None);
        assert_eq!(resolve_plain("08"), ScalarKind::Float);
        // Too large for 64 bits: a float, as in go-yaml.
        assert_eq!(resolve_plain("18446744073709551616"), ScalarKind::Float);
    }

    #[test]
    fn tags_must_fit_the_text() {
        assert_eq!(
            typed("12".into(), false, Some("int")),
            Ok(("12".into(), ScalarKind::Int))
        );
        assert_eq!(
            typed("12".into(), true, Some("str")),
            Ok(("12".into(), ScalarKind::Str))
        );
        assert_eq!(
            typed("3".into(), true, Some("float")),
            Ok(("3".into(), ScalarKind::Float))
        );
        assert_eq!(
            typed("yes".into(), true, Some("bool")),
            Err("cannot decode !!str `yes` as a !!bool".into())
        );
        assert_eq!(
            typed("0x1F".into(), false, None),
            Ok(("0x1F".into(), ScalarKind::Str))
        );
    }
}
