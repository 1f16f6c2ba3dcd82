//! `.env` and `env_file` parsing, in the dotenv dialect Compose reads.
//!
//! `KEY=VALUE` lines, `export ` allowed, `#` comments; single quotes are literal, double
//! quotes take `\n`-style escapes and may span lines; unquoted values lose a trailing
//! ` #comment`. Unquoted and double-quoted values are interpolated against the variables
//! defined earlier in the file, then `lookup`. A bare `KEY` takes its value from `lookup`
//! and is dropped when that has none.

use super::interpolate::interpolate;

/// A line that could not be read, 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DotenvError {
    pub line: usize,
    pub message: String,
}

pub fn parse(
    src: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, DotenvError> {
    let mut vars: Vec<(String, String)> = Vec::new();
    let lines: Vec<&str> = src.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let lineno = i + 1;
        let line = lines[i].trim_start();
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let (key, raw) = match line.split_once('=') {
            Some((k, v)) => (k.trim_end(), Some(v)),
            None => (line.trim_end(), None),
        };
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(DotenvError {
                line: lineno,
                message: format!("`{}` is not KEY=VALUE", lines[lineno - 1]),
            });
        }
        let Some(raw) = raw else {
            if let Some(v) = lookup(key) {
                vars.push((key.to_string(), v));
            }
            continue;
        };
        let raw = raw.trim_start();
        let (value, expand) = if let Some(body) = raw.strip_prefix('\'') {
            match body.find('\'') {
                Some(end) => (body[..end].to_string(), false),
                None => {
                    return Err(DotenvError {
                        line: lineno,
                        message: "unterminated single quote".into(),
                    })
                }
            }
        } else if let Some(body) = raw.strip_prefix('"') {
            let mut text = body.to_string();
            loop {
                if let Some(end) = closing_quote(&text) {
                    text.truncate(end);
                    break;
                }
                if i >= lines.len() {
                    return Err(DotenvError {
                        line: lineno,
                        message: "unterminated double quote".into(),
                    });
                }
                text.push('\n');
                text.push_str(lines[i]);
                i += 1;
            }
            (unescape(&text), true)
        } else {
            let v = match raw.find(" #") {
                Some(c) => &raw[..c],
                None => raw,
            };
            (v.trim_end().to_string(), true)
        };
        let value = if expand {
            let local = vars.clone();
            let look = |k: &str| {
                local
                    .iter()
                    .rev()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .or_else(|| lookup(k))
            };
            interpolate(&value, &look)
                .map_err(|e| DotenvError {
                    line: lineno,
                    message: e.to_string(),
                })?
                .value
        } else {
            value
        };
        vars.retain(|(k, _)| k != key);
        vars.push((key.to_string(), value));
    }
    Ok(vars)
}

fn closing_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(o) => out.push(o),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_dotenv_dialect() {
        let src = "# comment\nA=1\nexport B = two words # trailing\nC='lit $A'\nD=\"x\\ny $A\"\nE=${A}-${F:-f}\nBARE\nMISSING\n";
        let vars = parse(src, &|k| (k == "BARE").then(|| "from-env".to_string())).expect("parses");
        assert_eq!(
            vars,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "lit $A".into()),
                ("D".into(), "x\ny 1".into()),
                ("E".into(), "1-f".into()),
                ("BARE".into(), "from-env".into()),
            ]
        );
    }

    #[test]
    fn multi_line_double_quotes_and_errors() {
        let vars = parse("K=\"a\nb\"\nL=2\n", &|_| None).expect("parses");
        assert_eq!(
            vars,
            vec![("K".into(), "a\nb".into()), ("L".into(), "2".into())]
        );
        assert_eq!(
            parse("ok=1\nnot a line\n", &|_| None).map_err(|e| e.line),
            Err(2)
        );
    }
}
