//! `--pod-selector`: a label selector in kubectl's string syntax, parsed into kube's `Selector`.
//!
//! kubectl validates the flag with `labels.Parse` before draining and sends it to the server as
//! `labelSelector` (`docs/drain-semantics.md#pod-rules`). termguard sends the same string and
//! also applies it locally, so a plan built from any pod list honours it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use kube::core::{Expression, Selector, SelectorExt};
use serde::{Serialize, Serializer};

/// A validated `--pod-selector`; the empty selector matches every pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodSelector {
    raw: String,
    selector: Selector,
}

/// kubectl's error for an invalid `--pod-selector` (its text is literal, placeholder included).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("--pod-selector=<pod_selector> must be a valid label selector")]
pub struct SelectorError {
    /// What exactly is wrong, for logs (kubectl drops this detail).
    pub detail: String,
}

impl PodSelector {
    /// Parses kubectl's selector syntax: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`.
    ///
    /// The numeric `k>n`/`k<n` forms of `labels.Parse` are rejected: kube's `Expression` cannot hold them.
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let mut expressions = Vec::new();
        let trimmed = input.trim();
        if !trimmed.is_empty() {
            for part in split_top_level(trimmed)? {
                expressions.push(parse_requirement(part.trim())?);
            }
        }
        Ok(Self {
            raw: trimmed.to_owned(),
            selector: expressions.into_iter().collect(),
        })
    }

    /// The selector as the user wrote it (trimmed), to send as `labelSelector`.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// True when the selector is empty and so selects every pod.
    pub fn selects_all(&self) -> bool {
        self.selector.selects_all()
    }

    /// Whether a pod with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.matches(labels)
    }
}

impl FromStr for PodSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for PodSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl Serialize for PodSelector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.raw)
    }
}

fn invalid(detail: impl Into<String>) -> SelectorError {
    SelectorError {
        detail: detail.into(),
    }
}

/// Splits on commas outside parentheses, so `a in (x,y),b` gives two requirements.
fn split_top_level(input: &str) -> Result<Vec<&str>, SelectorError> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0u32, 0usize);
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| invalid("unbalanced ')'"))?;
            }
            ',' if depth == 0 => {
                parts.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(invalid("unbalanced '('"));
    }
    parts.push(&input[start..]);
    Ok(parts)
}

fn parse_requirement(part: &str) -> Result<Expression, SelectorError> {
    if part.is_empty() {
        return Err(invalid("empty requirement"));
    }
    if part.contains(['<', '>']) {
        return Err(invalid(format!("unsupported operator in {part:?}")));
    }
    if let Some(rest) = part.strip_prefix('!') {
        let key = rest.trim();
        validate_key(key)?;
        return Ok(Expression::DoesNotExist(key.to_owned()));
    }
    if let Some(i) = part.find(['=', '!']) {
        let key = part[..i].trim();
        let rest = &part[i..];
        let (value, equal) = if let Some(v) = rest.strip_prefix("!=") {
            (v, false)
        } else if let Some(v) = rest.strip_prefix("==") {
            (v, true)
        } else if let Some(v) = rest.strip_prefix('=') {
            (v, true)
        } else {
            return Err(invalid(format!("'!' must be followed by '=' in {part:?}")));
        };
        let value = value.trim();
        validate_key(key)?;
        validate_value(value)?;
        let (key, value) = (key.to_owned(), value.to_owned());
        return Ok(if equal {
            Expression::Equal(key, value)
        } else {
            Expression::NotEqual(key, value)
        });
    }
    let (key, rest) = match part.split_once(char::is_whitespace) {
        Some((key, rest)) => (key, rest.trim_start()),
        None => (part, ""),
    };
    validate_key(key)?;
    if rest.is_empty() {
        return Ok(Expression::Exists(key.to_owned()));
    }
    let (values, negate) = if let Some(v) = rest.strip_prefix("notin") {
        (v, true)
    } else if let Some(v) = rest.strip_prefix("in") {
        (v, false)
    } else {
        return Err(invalid(format!("expected an operator in {part:?}")));
    };
    let inner = values
        .trim()
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(|| invalid(format!("expected '(values)' in {part:?}")))?;
    let mut set = BTreeSet::new();
    for value in inner.split(',').map(str::trim) {
        validate_value(value)?;
        set.insert(value.to_owned());
    }
    // labels.Parse: "for 'in', 'notin' operators, values set can't be empty".
    if inner.trim().is_empty() {
        return Err(invalid(format!("empty value set in {part:?}")));
    }
    let key = key.to_owned();
    Ok(if negate {
        Expression::NotIn(key, set)
    } else {
        Expression::In(key, set)
    })
}

/// A label key is a qualified name: optional DNS-subdomain prefix and `/`, then a name segment.
fn validate_key(key: &str) -> Result<(), SelectorError> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let ok = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|label| {
                !label.is_empty()
                    && label.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && label.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && label
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            });
        if !ok {
            return Err(invalid(format!("invalid label key prefix {prefix:?}")));
        }
    }
    if name.is_empty() || !is_label_segment(name) {
        return Err(invalid(format!("invalid label key {key:?}")));
    }
    Ok(())
}

/// A label value is empty or a name segment.
fn validate_value(value: &str) -> Result<(), SelectorError> {
    if value.is_empty() || is_label_segment(value) {
        Ok(())
    } else {
        Err(invalid(format!("invalid label value {value:?}")))
    }
}

/// At most 63 characters of `[A-Za-z0-9._-]`, beginning and ending with an alphanumeric.
fn is_label_segment(s: &str) -> bool {
    s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::drain::testutil::labels;

    #[test]
    fn empty_selector_selects_every_pod() {
        let s = PodSelector::parse("  ").unwrap();
        assert!(s.selects_all());
        assert!(s.matches(&labels(&[])));
        assert_eq!(s.as_str(), "");
    }

    #[test]
    fn equality_and_inequality_requirements_are_anded() {
        let s = PodSelector::parse("app=web, tier==front,env!=prod").unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "front")])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("tier", "front"),
            ("env", "prod")
        ])));
        assert!(!s.matches(&labels(&[("app", "web")])));
    }

    #[test]
    fn set_requirements_keep_commas_inside_parentheses() {
        let s = PodSelector::parse("app in (web, api),tier notin (db)").unwrap();
        assert!(s.matches(&labels(&[("app", "api")])));
        assert!(!s.matches(&labels(&[("app", "api"), ("tier", "db")])));
        assert!(!s.matches(&labels(&[("app", "worker")])));
    }

    #[test]
    fn existence_requirements_check_only_the_key() {
        let s = PodSelector::parse("example.com/drain,!skip").unwrap();
        assert!(s.matches(&labels(&[("example.com/drain", "")])));
        assert!(!s.matches(&labels(&[("example.com/drain", "x"), ("skip", "1")])));
    }

    #[test]
    fn invalid_selectors_fail_with_kubectls_message() {
        for bad in [
            "=web",
            "app in ()",
            "app in web",
            "app=(web",
            "a,,b",
            "app!web",
            "bad key=1",
            "app=has space",
            "Bad_Prefix.com/app=1",
            "n>3",
            "app=-web",
        ] {
            let err = PodSelector::parse(bad).expect_err(bad);
            assert_eq!(
                err.to_string(),
                "--pod-selector=<pod_selector> must be a valid label selector",
                "{bad}"
            );
        }
    }

    #[test]
    fn empty_value_matches_a_label_set_to_the_empty_string() {
        let s = PodSelector::parse("app=").unwrap();
        assert!(s.matches(&labels(&[("app", "")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
    }

    #[test]
    fn selector_round_trips_as_the_string_the_user_gave() {
        let s: PodSelector = "app in (web,api)".parse().unwrap();
        assert_eq!(s.to_string(), "app in (web,api)");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"app in (web,api)\"");
    }
}
