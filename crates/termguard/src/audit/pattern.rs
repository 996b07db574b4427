//! Whether an EventBridge event pattern matches an event
//! ([content filtering](https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-create-pattern-operators.html)):
//! enough of the matching rules to tell whether a rule delivers the events termguard handles.
//!
//! Every field of the pattern must match. A field whose value is an object matches the event's
//! object field by field; a field whose value is an array matches when the event's value (or any
//! element of the event's array) equals one of its values or passes one of its filters: `prefix`,
//! `suffix`, `equals-ignore-case`, `anything-but`, `exists`, `wildcard`, `numeric`. A filter this
//! module does not know makes [`matches`] answer `None`: the audit then says it cannot tell.

use serde_json::Value;

/// Whether `pattern` matches `event`; `None` when the pattern uses a filter not understood here.
pub fn matches(pattern: &Value, event: &Value) -> Option<bool> {
    let Value::Object(fields) = pattern else {
        return Some(false);
    };
    let mut all = Some(true);
    for (key, want) in fields {
        let got = event.get(key);
        let one = match want {
            Value::Object(_) => match got {
                Some(inner @ Value::Object(_)) => matches(want, inner),
                _ => Some(false),
            },
            Value::Array(options) => field_matches(options, got),
            // A scalar where an array belongs: EventBridge rejects such a pattern.
            _ => Some(false),
        };
        all = and(all, one);
        if all == Some(false) {
            return all;
        }
    }
    all
}

fn and(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

fn or(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), Some(false)) => Some(false),
        _ => None,
    }
}

/// One field: any option matching the value (or, for an array value, any of its elements).
fn field_matches(options: &[Value], got: Option<&Value>) -> Option<bool> {
    let values: Vec<&Value> = match got {
        None => Vec::new(),
        Some(Value::Array(items)) => items.iter().collect(),
        Some(v) => vec![v],
    };
    let mut any = Some(false);
    for option in options {
        let one = match option {
            Value::Object(filter) => filter_matches(filter, got.is_some(), &values),
            literal => Some(values.contains(&literal)),
        };
        any = or(any, one);
        if any == Some(true) {
            break;
        }
    }
    any
}

fn filter_matches(
    filter: &serde_json::Map<String, Value>,
    present: bool,
    values: &[&Value],
) -> Option<bool> {
    let (name, arg) = filter.iter().next()?;
    let strings = || values.iter().filter_map(|v| v.as_str());
    match name.as_str() {
        "exists" => Some(arg.as_bool()? == present),
        "prefix" => match arg {
            Value::String(p) => Some(strings().any(|s| s.starts_with(p.as_str()))),
            Value::Object(o) => {
                let p = o.get("equals-ignore-case")?.as_str()?.to_lowercase();
                Some(strings().any(|s| s.to_lowercase().starts_with(&p)))
            }
            _ => None,
        },
        "suffix" => match arg {
            Value::String(p) => Some(strings().any(|s| s.ends_with(p.as_str()))),
            Value::Object(o) => {
                let p = o.get("equals-ignore-case")?.as_str()?.to_lowercase();
                Some(strings().any(|s| s.to_lowercase().ends_with(&p)))
            }
            _ => None,
        },
        "equals-ignore-case" => {
            let p = arg.as_str()?.to_lowercase();
            Some(strings().any(|s| s.to_lowercase() == p))
        }
        "wildcard" => {
            let p = arg.as_str()?;
            Some(strings().any(|s| glob(p, s)))
        }
        "anything-but" => {
            if !present || values.is_empty() {
                return Some(false);
            }
            let excluded = |v: &Value| -> Option<bool> {
                Some(match arg {
                    Value::Array(list) => list.contains(v),
                    Value::Object(o) => {
                        let s = v.as_str();
                        match o.iter().next()? {
                            (k, Value::String(p)) if k == "prefix" => {
                                s.is_some_and(|s| s.starts_with(p.as_str()))
                            }
                            (k, Value::String(p)) if k == "suffix" => {
                                s.is_some_and(|s| s.ends_with(p.as_str()))
                            }
                            _ => return None,
                        }
                    }
                    single => v == single,
                })
            };
            let mut any = Some(false);
            for v in values {
                any = or(any, excluded(v).map(|e| !e));
            }
            any
        }
        // Numeric ranges and CIDR filters: nothing termguard's events route on.
        _ => None,
    }
}

/// `*` matches any run of characters (AWS's `wildcard` filter, and the `*`/`?` of IAM ARN
/// conditions and resources).
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lifecycle() -> Value {
        json!({
            "source": "aws.autoscaling",
            "detail-type": "EC2 Instance-terminate Lifecycle Action",
            "resources": ["arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:1:autoScalingGroupName/web"],
            "detail": {"AutoScalingGroupName": "web", "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING"}
        })
    }

    #[test]
    fn literal_values_and_nested_fields_match_as_eventbridge_does() {
        let e = lifecycle();
        assert_eq!(
            matches(&json!({"source": ["aws.autoscaling"]}), &e),
            Some(true)
        );
        assert_eq!(matches(&json!({"source": ["aws.ec2"]}), &e), Some(false));
        assert_eq!(
            matches(
                &json!({"source": ["aws.autoscaling"], "detail": {"AutoScalingGroupName": ["web", "db"]}}),
                &e
            ),
            Some(true)
        );
        assert_eq!(
            matches(&json!({"detail": {"AutoScalingGroupName": ["db"]}}), &e),
            Some(false),
            "another group's rule"
        );
        // An array in the event matches when any element does.
        assert_eq!(
            matches(
                &json!({"resources": [{"prefix": "arn:aws:autoscaling:"}]}),
                &e
            ),
            Some(true)
        );
        // A field the event lacks matches only `exists: false`.
        assert_eq!(
            matches(&json!({"detail": {"Origin": ["EC2"]}}), &e),
            Some(false)
        );
        assert_eq!(
            matches(&json!({"detail": {"Origin": [{"exists": false}]}}), &e),
            Some(true)
        );
        assert_eq!(
            matches(
                &json!({"detail": {"AutoScalingGroupName": [{"exists": true}]}}),
                &e
            ),
            Some(true)
        );
    }

    #[test]
    fn content_filters_match_and_unknown_ones_say_they_cannot_tell() {
        let e = lifecycle();
        let m = |p: Value| matches(&p, &e);
        assert_eq!(
            m(json!({"detail-type": [{"suffix": "Lifecycle Action"}]})),
            Some(true)
        );
        assert_eq!(
            m(
                json!({"detail-type": [{"equals-ignore-case": "ec2 instance-terminate lifecycle action"}]})
            ),
            Some(true)
        );
        assert_eq!(
            m(json!({"detail": {"AutoScalingGroupName": [{"wildcard": "w*"}]}})),
            Some(true)
        );
        assert_eq!(
            m(json!({"detail": {"AutoScalingGroupName": [{"anything-but": "web"}]}})),
            Some(false)
        );
        assert_eq!(
            m(json!({"detail": {"AutoScalingGroupName": [{"anything-but": ["db"]}]}})),
            Some(true)
        );
        assert_eq!(
            m(json!({"detail": {"AutoScalingGroupName": [{"anything-but": {"prefix": "we"}}]}})),
            Some(false)
        );
        assert_eq!(
            m(json!({"detail": {"AutoScalingGroupName": [{"numeric": [">", 0]}]}})),
            None
        );
        // A known mismatch decides even beside a filter not understood.
        assert_eq!(
            m(
                json!({"source": ["aws.ec2"], "detail": {"AutoScalingGroupName": [{"cidr": "10.0.0.0/24"}]}})
            ),
            Some(false)
        );
    }

    #[test]
    fn globs_match_like_iam_and_eventbridge() {
        assert!(glob(
            "arn:aws:events:*:123456789012:rule/*",
            "arn:aws:events:us-east-1:123456789012:rule/tg"
        ));
        assert!(!glob(
            "arn:aws:events:*:123456789012:rule/tg",
            "arn:aws:events:us-east-1:999999999999:rule/tg"
        ));
        assert!(glob("*", ""));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "ac"));
    }
}
