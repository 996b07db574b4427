//! The Kubernetes client's transport: kube's own layers (base URI, authentication with its
//! token refresh, extra headers) over a hyper client that speaks HTTP/2 where the API server
//! offers it (ALPN), as client-go does. kube-client 5 builds an HTTP/1.1-only client: one
//! connection per request in flight, so a burst of 200 cordons opened 200 TLS connections —
//! handshakes the API server pays for just when it is busiest, and buffers termguard keeps.
//! Over HTTP/2 the requests share a connection.
//!
//! Watches stay on HTTP/1.1, one connection each as before: the API server allows 100 streams
//! per HTTP/2 connection and hyper does not open a second one when they are taken, so a
//! hundred long-lived watches (one per drain's pods) would leave no stream for a cordon.
//!
//! Configurations this does not cover (a proxy, a TLS server name override) get kube's own
//! HTTP/1.1 client.

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Error, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::Body;
use kube::client::ConfigExt;
use kube::{Client, Config};
use std::task::{Context, Poll};
use std::time::Duration;
use tower::ServiceBuilder;

/// An HTTP/2 connection with no answer to a ping within [`PING_TIMEOUT`] of this long a
/// silence is dead: its requests fail and are retried on a new one.
const PING_EVERY: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// A client for `config`, with HTTP/2 when the server offers it.
pub fn client(config: Config) -> Result<Client, kube::Error> {
    if config.proxy_url.is_some() || config.tls_server_name.is_some() {
        return Client::try_from(config);
    }
    let tls = config.rustls_client_config()?;
    let connector = |h2: bool| {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(config.connect_timeout);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_http1();
        if h2 {
            https.enable_http2().wrap_connector(http)
        } else {
            https.wrap_connector(http)
        }
    };
    let transport = Split {
        requests: hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .http2_keep_alive_interval(PING_EVERY)
            .http2_keep_alive_timeout(PING_TIMEOUT)
            .http2_keep_alive_while_idle(true)
            .build(connector(true)),
        watches: hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .build(connector(false)),
    };
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        // Every layer's errors are boxed, as in kube's own stack.
        .map_err(|e: Error| -> tower::BoxError { Box::new(e) })
        .service(transport);
    Ok(Client::new(service, config.default_namespace))
}

type Transport = hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Body>;

/// Watches over HTTP/1.1, everything else over HTTP/2 where the server offers it.
#[derive(Clone)]
struct Split {
    requests: Transport,
    watches: Transport,
}

/// Whether `req` asks for a watch (`watch=true` or `watch=1` in its query).
fn is_watch<B>(req: &Request<B>) -> bool {
    req.uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"))
}

impl tower::Service<Request<Body>> for Split {
    type Response = Response<Incoming>;
    type Error = Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
        // hyper's client is always ready: it queues requests for a connection itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> ResponseFuture {
        if is_watch(&req) {
            self.watches.request(req)
        } else {
            self.requests.request(req)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_watch;

    fn req(uri: &str) -> http::Request<()> {
        http::Request::get(uri).body(()).unwrap_or_default()
    }

    #[test]
    fn only_watches_go_over_http1() {
        assert!(is_watch(&req(
            "https://k/api/v1/pods?fieldSelector=spec.nodeName%3Dn&watch=true&resourceVersion=5"
        )));
        assert!(is_watch(&req("https://k/api/v1/nodes?watch=1")));
        assert!(!is_watch(&req(
            "https://k/api/v1/pods?fieldSelector=spec.nodeName%3Dn"
        )));
        assert!(!is_watch(&req(
            "https://k/api/v1/pods?labelSelector=watch%3Dtrue"
        )));
        assert!(!is_watch(&req("https://k/api/v1/nodes/n")));
    }
}
