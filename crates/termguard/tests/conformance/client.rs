//! Requests and answers over real sockets, and one backend's state (names, UIDs and
//! resourceVersions that differ between the backends).

use super::*;

// ---------------------------------------------------------------------------------------------
// Requests and answers

/// How long to read a watch.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Until {
    /// This many events.
    Events(usize),
    /// The BOOKMARK that ends the initial events (`k8s.io/initial-events-end`).
    InitialEnd,
    /// The server closes the stream (`timeoutSeconds`).
    Closed,
}

/// One request, written once for both backends.
#[derive(Clone)]
pub(crate) struct Req {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) accept: String,
    pub(crate) content_type: Option<String>,
    pub(crate) body: Option<String>,
    /// The part of the body that is compared, by value, instead of the whole body's shape.
    pub(crate) view: Option<fn(&Value) -> Value>,
}

pub(crate) fn req(method: Method, path: &str) -> Req {
    Req {
        method,
        path: path.to_string(),
        accept: "application/json".into(),
        content_type: None,
        body: None,
        view: None,
    }
}

pub(crate) fn get(path: &str) -> Req {
    req(Method::GET, path)
}

impl Req {
    pub(crate) fn accept(mut self, accept: &str) -> Req {
        self.accept = accept.to_string();
        self
    }
    pub(crate) fn body(mut self, content_type: &str, body: &Value) -> Req {
        self.content_type = Some(content_type.to_string());
        self.body = Some(body.to_string());
        self
    }
    pub(crate) fn json(self, body: &Value) -> Req {
        self.body("application/json", body)
    }
    pub(crate) fn raw(mut self, content_type: &str, body: &str) -> Req {
        self.content_type = Some(content_type.to_string());
        self.body = Some(body.to_string());
        self
    }
    pub(crate) fn view(mut self, view: fn(&Value) -> Value) -> Req {
        self.view = Some(view);
        self
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Body {
    Json(Value),
    Events(Vec<Value>),
    Other(String),
}

#[derive(Clone, Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) content_type: String,
    pub(crate) body: Body,
    pub(crate) view: Option<fn(&Value) -> Value>,
}

/// An open watch.
pub(crate) struct Watch {
    pub(crate) status: u16,
    pub(crate) content_type: String,
    pub(crate) body: kube::client::Body,
    pub(crate) buf: Vec<u8>,
    pub(crate) events: Vec<Value>,
}

impl Watch {
    pub(crate) async fn read(mut self, until: Until, limit: Duration) -> Answer {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let done = match until {
                Until::Events(n) => self.events.len() >= n,
                Until::InitialEnd => self.events.iter().any(|e| {
                    e["type"] == "BOOKMARK"
                        && e["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"]
                            == "true"
                }),
                Until::Closed => false,
            };
            if done {
                break;
            }
            let frame = tokio::time::timeout_at(
                deadline,
                std::future::poll_fn(|cx| std::pin::Pin::new(&mut self.body).poll_frame(cx)),
            )
            .await;
            let Ok(Some(Ok(frame))) = frame else { break };
            if let Ok(data) = frame.into_data() {
                self.buf.extend_from_slice(&data);
                while let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = self.buf.drain(..=i).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                        self.events.push(v);
                    }
                }
            }
        }
        Answer {
            status: self.status,
            content_type: self.content_type,
            body: Body::Events(self.events),
            view: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One backend

pub(crate) struct Ctx {
    pub(crate) name: &'static str,
    pub(crate) client: kube::Client,
    /// `<placeholder>` → this backend's value.
    pub(crate) vars: BTreeMap<String, String>,
    pub(crate) answers: Vec<(String, Answer)>,
    pub(crate) sim: Option<kube_sim::Sim>,
    pub(crate) etcd: Option<String>,
}

impl Ctx {
    pub(crate) fn bind(&mut self, key: &str, value: impl Into<String>) {
        self.vars.insert(format!("<{key}>"), value.into());
    }

    pub(crate) fn var(&self, key: &str) -> String {
        self.vars
            .get(&format!("<{key}>"))
            .cloned()
            .unwrap_or_else(|| panic!("{}: <{key}> is not bound", self.name))
    }

    pub(crate) fn fill(&self, s: &str) -> String {
        let mut out = s.to_string();
        for (k, v) in &self.vars {
            out = out.replace(k.as_str(), v);
        }
        out
    }

    /// A backend's value put back to its placeholder (longest values first), and UUIDs
    /// masked, so messages and details compare across backends.
    pub(crate) fn unfill(&self, s: &str) -> String {
        let mut pairs: Vec<(&String, &String)> = self.vars.iter().collect();
        pairs.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        let mut out = s.to_string();
        for (k, v) in pairs {
            if v.len() < 3 {
                continue;
            }
            if v.bytes().all(|b| b.is_ascii_digit()) {
                out = replace_number(&out, v, k);
            } else {
                out = out.replace(v.as_str(), k);
            }
        }
        mask_uuids(&out)
    }

    pub(crate) async fn send(&self, r: &Req) -> axum::http::Response<kube::client::Body> {
        let path = self.fill(&r.path);
        let mut b = Request::builder()
            .method(r.method.clone())
            .uri(path.as_str())
            .header("Accept", r.accept.as_str());
        if let Some(ct) = &r.content_type {
            b = b.header("Content-Type", ct.as_str());
        }
        let body = r.body.as_deref().map(|s| self.fill(s)).unwrap_or_default();
        let request = b
            .body(kube::client::Body::from(body.into_bytes()))
            .expect("request builds");
        self.client
            .send(request)
            .await
            .unwrap_or_else(|e| panic!("{}: {} {path}: {e}", self.name, r.method))
    }

    /// Sends a request and reads the whole answer.
    pub(crate) async fn call(&self, r: &Req) -> Answer {
        let res = self.send(r).await;
        let status = res.status().as_u16();
        let content_type = content_type(&res);
        let bytes = res
            .into_body()
            .collect_bytes()
            .await
            .unwrap_or_else(|e| panic!("{}: reading {}: {e}", self.name, r.path));
        let body = if content_type.contains("json") {
            serde_json::from_slice(&bytes)
                .map(Body::Json)
                .unwrap_or_else(|_| Body::Other(String::from_utf8_lossy(&bytes).into_owned()))
        } else if content_type.starts_with("text/") {
            Body::Other(String::from_utf8_lossy(&bytes).into_owned())
        } else {
            Body::Other(format!("{} bytes", bytes.len()))
        };
        Answer {
            status,
            content_type,
            body,
            view: r.view,
        }
    }

    /// Sends a request and records its answer for comparison under `label`.
    pub(crate) async fn ask(&mut self, label: &str, r: Req) -> Value {
        let a = self.call(&r).await;
        let v = match &a.body {
            Body::Json(v) => v.clone(),
            _ => Value::Null,
        };
        self.answers.push((label.to_string(), a));
        v
    }

    /// Setup: a request whose answer is not compared; panics unless it succeeds.
    pub(crate) async fn must(&self, r: Req) -> Value {
        let a = self.call(&r).await;
        assert!(
            a.status < 300,
            "{}: setup {} {} failed: {} {:?}",
            self.name,
            r.method,
            self.fill(&r.path),
            a.status,
            a.body
        );
        match a.body {
            Body::Json(v) => v,
            _ => Value::Null,
        }
    }

    /// Setup: a request whose answer is not compared, success or not.
    pub(crate) async fn try_send(&self, r: Req) -> u16 {
        self.call(&r).await.status
    }

    pub(crate) async fn watch(&self, r: &Req) -> Watch {
        let res = self.send(r).await;
        Watch {
            status: res.status().as_u16(),
            content_type: content_type(&res),
            body: res.into_body(),
            buf: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Polls `path` until `ok` holds.
    pub(crate) async fn wait_for(
        &self,
        what: &str,
        path: &str,
        ok: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let a = self.call(&get(path)).await;
            if let Body::Json(v) = &a.body {
                if a.status == 200 && ok(v) {
                    return v.clone();
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: waiting for {what}: {:?}",
                self.name,
                a.body
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Binds `<key>` to a Ready, not terminating pod selected by `selector` in `default`.
    pub(crate) async fn pick_pod(&mut self, key: &str, selector: &str) {
        let path = format!("/api/v1/namespaces/default/pods?labelSelector={selector}");
        let list = self
            .wait_for(&format!("a ready pod {selector}"), &path, |l| {
                items(l).iter().any(healthy)
            })
            .await;
        let pod = items(&list)
            .into_iter()
            .filter(healthy)
            .min_by_key(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
            .expect("a healthy pod");
        self.bind(key, pod["metadata"]["name"].as_str().unwrap_or(""));
        self.bind(
            &format!("{key}-uid"),
            pod["metadata"]["uid"].as_str().unwrap_or(""),
        );
    }

    /// Waits until the budget has `allowed` disruptions over `healthy` counted pods.
    pub(crate) async fn wait_budget(&self, name: &str, allowed: i64, healthy: i64) {
        let path = format!("/apis/policy/v1/namespaces/default/poddisruptionbudgets/{name}");
        self.wait_for(&format!("budget {name} at {allowed}"), &path, |p| {
            p["status"]["disruptionsAllowed"] == allowed
                && p["status"]["currentHealthy"] == healthy
                && p["status"]["observedGeneration"] == p["metadata"]["generation"]
        })
        .await;
    }

    /// Waits until a workload's pods are all Ready again and none is terminating.
    pub(crate) async fn wait_pods(&self, selector: &str, n: usize) {
        let path = format!("/api/v1/namespaces/default/pods?labelSelector={selector}");
        self.wait_for(&format!("{n} ready pods {selector}"), &path, |l| {
            let pods = items(l);
            pods.len() == n && pods.iter().all(healthy)
        })
        .await;
    }

    /// The current resourceVersion of a list.
    pub(crate) async fn list_rv(&self, path: &str) -> String {
        let v = self.must(get(path)).await;
        v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Throws away the history older than now: etcd's compaction on the real cluster (what
    /// kube-apiserver's compactor does every five minutes), the store's on the simulator.
    pub(crate) async fn compact(&self) {
        if let Some(sim) = &self.sim {
            sim.store.compact();
            return;
        }
        let etcd = self.etcd.as_deref().expect("etcd address");
        let range = etcd_post(etcd, "/v3/kv/range", r#"{"key":"AA=="}"#).await;
        let rev = range["header"]["revision"]
            .as_str()
            .expect("etcd revision")
            .to_string();
        etcd_post(
            etcd,
            "/v3/kv/compaction",
            &json!({"revision": rev, "physical": true}).to_string(),
        )
        .await;
    }
}

pub(crate) fn content_type<B>(res: &axum::http::Response<B>) -> String {
    res.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

pub(crate) fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

pub(crate) fn healthy(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .is_some_and(|c| c["status"] == "True")
}

/// A POST to etcd's HTTP gateway (plain HTTP on loopback), answered as JSON.
pub(crate) async fn etcd_post(addr: &str, path: &str, body: &str) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("etcd reachable");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("etcd write");
    s.write_all(body.as_bytes()).await.expect("etcd write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("etcd read");
    let text = String::from_utf8_lossy(&out);
    let (head, payload) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    // Compacting again at a revision already compacted is etcd's "required revision has
    // been compacted": the history is gone either way.
    assert!(
        head.contains(" 200 ") || payload.contains("required revision has been compacted"),
        "etcd {path}: {head}\n{payload}"
    );
    // The gateway may answer chunked: the JSON object is between the first `{` and last `}`.
    let json = match (payload.find('{'), payload.rfind('}')) {
        (Some(a), Some(b)) if b > a => &payload[a..=b],
        _ => "null",
    };
    serde_json::from_str(json).expect("etcd answers JSON")
}

/// `s` with every whole number `n` (not part of a longer run of digits) replaced by `with`.
pub(crate) fn replace_number(s: &str, n: &str, with: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(n) {
        let before = rest[..i].bytes().last();
        let after = rest[i + n.len()..].bytes().next();
        let whole = !before.is_some_and(|b| b.is_ascii_digit())
            && !after.is_some_and(|b| b.is_ascii_digit());
        out.push_str(&rest[..i]);
        out.push_str(if whole { with } else { n });
        rest = &rest[i + n.len()..];
    }
    out.push_str(rest);
    out
}

pub(crate) fn mask_uuids(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let is_uuid = |w: &[u8]| {
        w.len() == 36
            && w.iter().enumerate().all(|(j, c)| {
                if [8, 13, 18, 23].contains(&j) {
                    *c == b'-'
                } else {
                    c.is_ascii_hexdigit()
                }
            })
    };
    while i < b.len() {
        if i + 36 <= b.len() && is_uuid(&b[i..i + 36]) {
            out.push_str("<uid>");
            i += 36;
        } else {
            let ch = s[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}
