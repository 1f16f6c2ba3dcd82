//! Variable interpolation, as Compose does it: `$VAR`, `${VAR}`, `${VAR:-default}`,
//! `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`, `${VAR:+alt}`, `${VAR+alt}`, `$$`.
//! Defaults, alternatives and error texts may themselves hold `${...}`; they are
//! interpolated only when used.

/// Why a string could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterpError {
    /// `${VAR:?msg}` / `${VAR?msg}` with the variable unset (or empty, for `:?`).
    Required { var: String, message: String },
    /// A `$` that starts nothing Compose understands, or an unclosed `${`.
    Syntax(String),
}

impl std::fmt::Display for InterpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InterpError::Required { var, message } if message.is_empty() => {
                write!(f, "required variable {var} is not set")
            }
            InterpError::Required { var, message } => {
                write!(f, "required variable {var} is not set: {message}")
            }
            InterpError::Syntax(s) => write!(f, "{s}"),
        }
    }
}

/// The result of interpolating one string.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interpolated {
    pub value: String,
    /// Variables that were used with no value and no default (they became "").
    pub unset: Vec<String>,
}

fn is_name_start(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn is_name_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

/// Interpolate `input`, looking variables up with `lookup`.
pub fn interpolate(
    input: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Interpolated, InterpError> {
    let mut out = Interpolated::default();
    expand(input, lookup, &mut out)?;
    Ok(out)
}

fn expand(
    input: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut Interpolated,
) -> Result<(), InterpError> {
    let chars: Vec<char> = input.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '$' {
            out.value.push(c);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('$') => {
                out.value.push('$');
                i += 2;
            }
            Some('{') => {
                let close = matching_brace(&chars, i + 2).ok_or_else(|| {
                    InterpError::Syntax(format!(
                        "invalid interpolation: `{}` has no closing `}}`",
                        chars[i..].iter().collect::<String>()
                    ))
                })?;
                let inner: String = chars[i + 2..close].iter().collect();
                braced(&inner, lookup, out)?;
                i = close + 1;
            }
            Some(&n) if is_name_start(n) => {
                let start = i + 1;
                let mut end = start;
                while end < chars.len() && is_name_char(chars[end]) {
                    end += 1;
                }
                let name: String = chars[start..end].iter().collect();
                match lookup(&name) {
                    Some(v) => out.value.push_str(&v),
                    None => out.unset.push(name),
                }
                i = end;
            }
            _ => {
                return Err(InterpError::Syntax(format!(
                    "invalid interpolation: `{}`; write `$$` for a literal `$`",
                    chars[i..].iter().take(8).collect::<String>()
                )))
            }
        }
    }
    Ok(())
}

/// Index of the `}` closing a `${` whose body starts at `from`.
fn matching_brace(chars: &[char], from: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = from;
    while i < chars.len() {
        match chars[i] {
            '$' if chars.get(i + 1) == Some(&'$') => i += 1,
            '$' if chars.get(i + 1) == Some(&'{') => {
                depth += 1;
                i += 1;
            }
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

fn braced(
    inner: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut Interpolated,
) -> Result<(), InterpError> {
    let name_len = inner
        .find(|c: char| !is_name_char(c))
        .unwrap_or(inner.len());
    let name = &inner[..name_len];
    if name.is_empty() || !name.starts_with(is_name_start) {
        return Err(InterpError::Syntax(format!(
            "invalid interpolation: `${{{inner}}}` does not name a variable"
        )));
    }
    let rest = &inner[name_len..];
    let value = lookup(name);
    let (op, arg) = [":-", ":?", ":+", "-", "?", "+"]
        .iter()
        .find_map(|op| rest.strip_prefix(op).map(|a| (*op, a)))
        .unwrap_or(("", rest));
    if op.is_empty() && !rest.is_empty() {
        return Err(InterpError::Syntax(format!(
            "invalid interpolation: `${{{inner}}}`: unknown modifier `{rest}`"
        )));
    }
    let set = value.is_some();
    let non_empty = value.as_deref().is_some_and(|v| !v.is_empty());
    match op {
        "" => match value {
            Some(v) => out.value.push_str(&v),
            None => out.unset.push(name.to_string()),
        },
        ":-" | "-" => {
            let use_value = if op == ":-" { non_empty } else { set };
            if use_value {
                out.value.push_str(value.as_deref().unwrap_or_default());
            } else {
                expand(arg, lookup, out)?;
            }
        }
        ":?" | "?" => {
            let ok = if op == ":?" { non_empty } else { set };
            if ok {
                out.value.push_str(value.as_deref().unwrap_or_default());
            } else {
                let mut msg = Interpolated::default();
                expand(arg, lookup, &mut msg)?;
                return Err(InterpError::Required {
                    var: name.to_string(),
                    message: msg.value,
                });
            }
        }
        _ => {
            // ":+" / "+": the alternative when set (and non-empty for ":+"), else "".
            let use_alt = if op == ":+" { non_empty } else { set };
            if use_alt {
                expand(arg, lookup, out)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn run(s: &str) -> Result<Interpolated, InterpError> {
        let env: BTreeMap<&str, &str> = [("A", "a"), ("EMPTY", ""), ("B", "b")].into();
        interpolate(s, &|k| env.get(k).map(|v| v.to_string()))
    }

    fn val(s: &str) -> String {
        run(s).expect("interpolates").value
    }

    #[test]
    fn plain_and_braced_variables() {
        assert_eq!(val("x-$A-${B}-$A_"), "x-a-b-");
        assert_eq!(
            run("$NOPE and ${NOPE2}").expect("ok").unset,
            vec!["NOPE", "NOPE2"]
        );
    }

    #[test]
    fn defaults_distinguish_unset_from_empty() {
        assert_eq!(val("${EMPTY:-d}"), "d");
        assert_eq!(val("${EMPTY-d}"), "");
        assert_eq!(val("${NOPE-d}"), "d");
        assert_eq!(val("${A:-d}"), "a");
    }

    #[test]
    fn alternatives() {
        assert_eq!(val("${A:+x}"), "x");
        assert_eq!(val("${EMPTY:+x}"), "");
        assert_eq!(val("${EMPTY+x}"), "x");
        assert_eq!(val("${NOPE+x}"), "");
    }

    #[test]
    fn nested_defaults_are_lazy() {
        assert_eq!(val("${NOPE:-${B}}"), "b");
        assert_eq!(val("${NOPE:-${NOPE2:-deep}}"), "deep");
        assert_eq!(val("${A:-${NOPE:?never}}"), "a");
    }

    #[test]
    fn required_variables() {
        assert_eq!(
            run("${NOPE:?set NOPE to the db url}"),
            Err(InterpError::Required {
                var: "NOPE".into(),
                message: "set NOPE to the db url".into()
            })
        );
        assert!(matches!(
            run("${EMPTY:?x}"),
            Err(InterpError::Required { .. })
        ));
        assert_eq!(val("${EMPTY?x}"), "");
    }

    #[test]
    fn dollar_escape_and_bad_syntax() {
        assert_eq!(val("$$HOME $${A}"), "$HOME ${A}");
        assert!(matches!(run("cost $5"), Err(InterpError::Syntax(_))));
        assert!(matches!(run("${A"), Err(InterpError::Syntax(_))));
        assert!(matches!(run("${A!x}"), Err(InterpError::Syntax(_))));
    }
}
