//! The AWS SDK's shared configuration and the classification of its errors.
//!
//! One `SdkConfig` serves every client (Auto Scaling, SQS). It honours the standard SDK
//! configuration — `AWS_REGION`, `AWS_ENDPOINT_URL` (how tests and users point termguard at a
//! local endpoint), profiles, web identity — with an HTTP client built explicitly on rustls
//! with *ring*, since the SDK crates' default features (and their TLS stack) are trimmed.

use super::LifecycleError;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader};
use aws_sdk_autoscaling::config::http::HttpResponse;
use aws_sdk_autoscaling::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls;
use std::time::Duration;

/// How long one attempt of any call may take. SQS long polls wait up to 20 s, so the HTTP read
/// timeout must be above `WaitTimeSeconds` (`docs/aws-semantics.md#delivery`).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// The loader every client starts from: the standard configuration chain, our HTTP client and
/// timeouts. Callers may still set a region, endpoint or credentials before `load()`.
pub fn config_loader() -> ConfigLoader {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(ATTEMPT_TIMEOUT * 3)
        .build();
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(timeouts)
}

/// How a call failed before (or instead of) an AWS error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The request could not be built (a bug or a bad parameter).
    Construction,
    /// No response: connection refused, DNS, TLS, I/O.
    Dispatch,
    /// No response in time.
    Timeout,
    /// A response that is not a modelled error (e.g. an HTML page).
    Response,
    /// An AWS error response with a code.
    Service,
}

/// Error codes AWS uses for throttling across services.
const THROTTLING: [&str; 6] = [
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
];

/// Classifies a failed lifecycle call (`docs/aws-semantics.md#lifecycle-api-calls`):
/// `ValidationError` "No active Lifecycle Action found…" means the action is over;
/// `ResourceContention`, throttling, 5xx, dispatch failures and timeouts are worth a retry;
/// everything else is not.
pub fn classify(
    kind: FailureKind,
    code: Option<&str>,
    message: Option<&str>,
    status: Option<u16>,
    detail: &str,
) -> LifecycleError {
    let text = match (code, message) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        (None, Some(m)) => m.to_string(),
        (None, None) => detail.to_string(),
    };
    match kind {
        FailureKind::Construction => return LifecycleError::Fatal(text),
        FailureKind::Dispatch | FailureKind::Timeout => return LifecycleError::Retryable(text),
        FailureKind::Response | FailureKind::Service => {}
    }
    let no_action = message.is_some_and(|m| m.contains("No active Lifecycle Action found"));
    if code == Some("ValidationError") && no_action {
        return LifecycleError::NoActiveAction(text);
    }
    let retryable = code.is_some_and(|c| c == "ResourceContention" || THROTTLING.contains(&c))
        || status.is_some_and(|s| s >= 500 || s == 429);
    if retryable || (kind == FailureKind::Response && status.is_none()) {
        LifecycleError::Retryable(text)
    } else {
        LifecycleError::Fatal(text)
    }
}

/// Classifies any SDK error of any operation.
pub fn classify_sdk<E>(err: &SdkError<E, HttpResponse>) -> LifecycleError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let kind = match err {
        SdkError::ConstructionFailure(_) => FailureKind::Construction,
        SdkError::TimeoutError(_) => FailureKind::Timeout,
        SdkError::DispatchFailure(_) => FailureKind::Dispatch,
        SdkError::ResponseError(_) => FailureKind::Response,
        SdkError::ServiceError(_) => FailureKind::Service,
        _ => FailureKind::Response,
    };
    let status = err.raw_response().map(|r| r.status().as_u16());
    let detail = error_chain(err);
    classify(kind, err.code(), err.message(), status, &detail)
}

/// The error and its sources on one line (the SDK's Display alone says "dispatch failure").
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(code: &str, message: &str, status: u16) -> LifecycleError {
        classify(
            FailureKind::Service,
            Some(code),
            Some(message),
            Some(status),
            "",
        )
    }

    #[test]
    fn a_finished_or_unknown_action_is_no_active_action() {
        for m in [
            "No active Lifecycle Action found with instance ID i-0123456789abcdef0",
            "No active Lifecycle Action found with token c0ffee00-1234-4abc-9def-0123456789ab",
        ] {
            assert!(matches!(
                service("ValidationError", m, 400),
                LifecycleError::NoActiveAction(_)
            ));
        }
    }

    #[test]
    fn other_validation_errors_are_fatal() {
        let e = service("ValidationError", "1 validation error detected", 400);
        assert!(matches!(e, LifecycleError::Fatal(_)), "{e:?}");
        let e = service("AccessDenied", "not authorized", 403);
        assert!(matches!(e, LifecycleError::Fatal(_)), "{e:?}");
    }

    #[test]
    fn contention_throttling_and_server_errors_are_retryable() {
        for (code, status) in [
            ("ResourceContention", 500),
            ("Throttling", 400),
            ("InternalFailure", 500),
            ("ServiceUnavailable", 503),
        ] {
            let e = service(code, "x", status);
            assert!(matches!(e, LifecycleError::Retryable(_)), "{code}: {e:?}");
        }
        for kind in [FailureKind::Dispatch, FailureKind::Timeout] {
            let e = classify(kind, None, None, None, "connection refused");
            assert!(matches!(e, LifecycleError::Retryable(ref m) if m == "connection refused"));
        }
        // moto's HTML 500 for an unimplemented action: unparseable, but a server error.
        let e = classify(FailureKind::Response, None, None, Some(500), "html");
        assert!(matches!(e, LifecycleError::Retryable(_)));
        let e = classify(FailureKind::Construction, None, None, None, "bad input");
        assert!(matches!(e, LifecycleError::Fatal(_)));
    }
}
