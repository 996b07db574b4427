package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	cases := []struct {
		method, target string
		want           requestInfo // IsResource is implied by a non-empty Verb
	}{
		{"GET", "/healthz", requestInfo{}},
		{"GET", "/readyz?verbose", requestInfo{}},
		{"GET", "/version", requestInfo{}},
		{"GET", "/api", requestInfo{}},
		{"GET", "/api/v1", requestInfo{}},
		{"GET", "/apis", requestInfo{}},
		{"GET", "/apis/apps", requestInfo{}},
		{"GET", "/apis/apps/v1", requestInfo{}},
		{"GET", "/openapi/v3/api/v1", requestInfo{}},
		{"GET", "/openapi/v2", requestInfo{}},
		{"GET", "/api/v1/nodes", requestInfo{Verb: "list", APIVersion: "v1", Resource: "nodes"}},
		{"GET", "/api/v1/nodes?watch=true&resourceVersion=1", requestInfo{Verb: "watch", APIVersion: "v1", Resource: "nodes"}},
		{"GET", "/api/v1/nodes?watch=1", requestInfo{Verb: "watch", APIVersion: "v1", Resource: "nodes"}},
		{"GET", "/api/v1/nodes?watch=false", requestInfo{Verb: "list", APIVersion: "v1", Resource: "nodes"}},
		{"GET", "/api/v1/nodes/n1", requestInfo{Verb: "get", APIVersion: "v1", Resource: "nodes", Name: "n1"}},
		{"HEAD", "/api/v1/nodes/n1", requestInfo{Verb: "get", APIVersion: "v1", Resource: "nodes", Name: "n1"}},
		{"PATCH", "/api/v1/nodes/n1", requestInfo{Verb: "patch", APIVersion: "v1", Resource: "nodes", Name: "n1"}},
		{"PATCH", "/api/v1/nodes/n1/status", requestInfo{Verb: "patch", APIVersion: "v1", Resource: "nodes", Subresource: "status", Name: "n1"}},
		{"PUT", "/api/v1/nodes/n1", requestInfo{Verb: "update", APIVersion: "v1", Resource: "nodes", Name: "n1"}},
		{"DELETE", "/api/v1/nodes/n1", requestInfo{Verb: "delete", APIVersion: "v1", Resource: "nodes", Name: "n1"}},
		{"DELETE", "/api/v1/nodes", requestInfo{Verb: "deletecollection", APIVersion: "v1", Resource: "nodes"}},
		{"GET", "/api/v1/pods", requestInfo{Verb: "list", APIVersion: "v1", Resource: "pods"}},
		{"GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1&watch=true", requestInfo{Verb: "watch", APIVersion: "v1", Resource: "pods"}},
		{"GET", "/api/v1/namespaces/ns1/pods", requestInfo{Verb: "list", APIVersion: "v1", Namespace: "ns1", Resource: "pods"}},
		{"GET", "/api/v1/namespaces/ns1/pods/p1", requestInfo{Verb: "get", APIVersion: "v1", Namespace: "ns1", Resource: "pods", Name: "p1"}},
		{"POST", "/api/v1/namespaces/ns1/pods", requestInfo{Verb: "create", APIVersion: "v1", Namespace: "ns1", Resource: "pods"}},
		{"POST", "/api/v1/namespaces/ns1/pods/p1/eviction", requestInfo{Verb: "create", APIVersion: "v1", Namespace: "ns1", Resource: "pods", Subresource: "eviction", Name: "p1"}},
		{"PATCH", "/api/v1/namespaces/ns1/pods/p1/status", requestInfo{Verb: "patch", APIVersion: "v1", Namespace: "ns1", Resource: "pods", Subresource: "status", Name: "p1"}},
		{"DELETE", "/api/v1/namespaces/ns1/pods/p1", requestInfo{Verb: "delete", APIVersion: "v1", Namespace: "ns1", Resource: "pods", Name: "p1"}},
		{"DELETE", "/api/v1/namespaces/ns1/pods", requestInfo{Verb: "deletecollection", APIVersion: "v1", Namespace: "ns1", Resource: "pods"}},
		{"GET", "/api/v1/namespaces/ns1/events", requestInfo{Verb: "list", APIVersion: "v1", Namespace: "ns1", Resource: "events"}},
		// The namespace object itself, and its own subresources.
		{"GET", "/api/v1/namespaces", requestInfo{Verb: "list", APIVersion: "v1", Resource: "namespaces"}},
		{"GET", "/api/v1/namespaces/ns1", requestInfo{Verb: "get", APIVersion: "v1", Namespace: "ns1", Resource: "namespaces", Name: "ns1"}},
		{"PUT", "/api/v1/namespaces/ns1/finalize", requestInfo{Verb: "update", APIVersion: "v1", Namespace: "ns1", Resource: "namespaces", Subresource: "finalize", Name: "ns1"}},
		// The deprecated /watch/ prefix.
		{"GET", "/api/v1/watch/pods", requestInfo{Verb: "watch", APIVersion: "v1", Resource: "pods"}},
		{"GET", "/api/v1/watch/namespaces/ns1/pods/p1", requestInfo{Verb: "watch", APIVersion: "v1", Namespace: "ns1", Resource: "pods", Name: "p1"}},
		{"GET", "/api/v1/namespaces/ns1/pods/p1/proxy/metrics", requestInfo{Verb: "get", APIVersion: "v1", Namespace: "ns1", Resource: "pods", Subresource: "proxy", Name: "p1"}},
		// Named groups.
		{"GET", "/apis/apps/v1/daemonsets", requestInfo{Verb: "list", APIGroup: "apps", APIVersion: "v1", Resource: "daemonsets"}},
		{"GET", "/apis/apps/v1/namespaces/kube-system/daemonsets/ds1", requestInfo{Verb: "get", APIGroup: "apps", APIVersion: "v1", Namespace: "kube-system", Resource: "daemonsets", Name: "ds1"}},
		{"PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1", requestInfo{Verb: "update", APIGroup: "coordination.k8s.io", APIVersion: "v1", Namespace: "kube-node-lease", Resource: "leases", Name: "n1"}},
		{"GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases?watch=true", requestInfo{Verb: "watch", APIGroup: "coordination.k8s.io", APIVersion: "v1", Namespace: "kube-node-lease", Resource: "leases"}},
		{"POST", "/apis/events.k8s.io/v1/namespaces/default/events", requestInfo{Verb: "create", APIGroup: "events.k8s.io", APIVersion: "v1", Namespace: "default", Resource: "events"}},
		{"DELETE", "/apis/policy/v1/namespaces/ns1/poddisruptionbudgets", requestInfo{Verb: "deletecollection", APIGroup: "policy", APIVersion: "v1", Namespace: "ns1", Resource: "poddisruptionbudgets"}},
		{"GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x.example.com", requestInfo{Verb: "get", APIGroup: "apiextensions.k8s.io", APIVersion: "v1", Resource: "customresourcedefinitions", Name: "x.example.com"}},
	}
	for _, c := range cases {
		r := httptest.NewRequest(c.method, c.target, nil)
		want := c.want
		want.IsResource = want.Verb != ""
		if got := classify(r); got != want {
			t.Errorf("%s %s:\n got  %+v\n want %+v", c.method, c.target, got, want)
		}
	}
	r := httptest.NewRequest("POST", "/api/v1/namespaces/ns1/pods/p1/eviction", nil)
	if got := classify(r).ResourcePath(); got != "pods/eviction" {
		t.Errorf("ResourcePath = %q, want pods/eviction", got)
	}
}

func ri(method, target string) requestInfo { return classify(httptest.NewRequest(method, target, nil)) }

func mustConfig(t *testing.T, s string) Config {
	t.Helper()
	c, err := parseConfig([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestParseConfig(t *testing.T) {
	c := mustConfig(t, `{"rules":[{"verb":"patch","resource":"pods","error_rate":0.5,"error_codes":[500,503,429],
		"retry_after_seconds":2,"latency_ms":[10,20],"latency_rate":0.1,"reset_rate":0.01,
		"watch_cut_after_ms":[100,200],"watch_cut_rate":0,"watch_cut_mode":"abort","namespace":"x","user_agent_contains":"kube-rs"}]}`)
	if len(c.Rules) != 1 || c.Rules[0].WatchCutRate == nil || *c.Rules[0].WatchCutRate != 0 {
		t.Fatalf("parsed %+v", c)
	}
	if c := mustConfig(t, `{}`); c.Rules == nil {
		t.Error("an empty config must have an empty (not null) rule list")
	}
	for _, bad := range []string{
		`{"rules":[{"verb":"gett"}]}`,
		`{"rules":[{"error_rate":1.5}]}`,
		`{"rules":[{"error_rate":-0.1}]}`,
		`{"rules":[{"error_codes":[200]}]}`,
		`{"rules":[{"latency_ms":[20,10]}]}`,
		`{"rules":[{"latency_ms":[1,2,3]}]}`,
		`{"rules":[{"latency_rate":0.5}]}`,
		`{"rules":[{"watch_cut_rate":0.5}]}`,
		`{"rules":[{"watch_cut_after_ms":[5],"watch_cut_mode":"snip"}]}`,
		`{"rules":[{"resource":"a/b/c"}]}`,
		`{"rules":[{"eror_rate":0.1}]}`, // a typo is an error, not a rule without faults
		`{"rules":[]} {}`,
		`not json`,
	} {
		if _, err := parseConfig([]byte(bad)); err == nil {
			t.Errorf("parseConfig(%s) accepted it", bad)
		}
	}
}

func TestDecide(t *testing.T) {
	cfg := mustConfig(t, `{"rules":[
		{"verb":"create","resource":"pods/eviction","user_agent_contains":"termguard","error_rate":1,"error_codes":[429]},
		{"verb":"patch","resource":"pods","namespace":"ns1","error_rate":1,"error_codes":[503],"retry_after_seconds":3},
		{"verb":"*","resource":"pods","error_rate":0.3,"error_codes":[500,503],"latency_ms":[5,9],"latency_rate":0.5},
		{"verb":"watch","resource":"*","watch_cut_after_ms":[100,200]},
		{"verb":"delete","resource":"nodes","reset_rate":1,"error_rate":1}
	]}`)
	f := newFaults(1, cfg)
	eviction := ri("POST", "/api/v1/namespaces/ns1/pods/p1/eviction")

	d := f.decide(eviction, "termguard/0.1")
	if d.Rule != 0 || d.ErrorCode != 429 || d.RetryAfter != 1 {
		t.Errorf("eviction by termguard: %+v, want rule 0, 429, Retry-After 1", d)
	}
	// Not termguard's user agent: rule 0 does not match, and neither does 1 (a create);
	// rule 2 matches pods only, not pods/eviction; rules 3, 4 no more.
	if d := f.decide(eviction, "kubectl/v1.32"); d.Rule != -1 {
		t.Errorf("eviction by kubectl: %+v, want no rule", d)
	}
	if d := f.decide(ri("PATCH", "/api/v1/namespaces/ns1/pods/p1"), ""); d.Rule != 1 || d.ErrorCode != 503 || d.RetryAfter != 3 {
		t.Errorf("patch in ns1: %+v, want rule 1, 503, Retry-After 3", d)
	}
	if d := f.decide(ri("GET", "/healthz"), ""); d.Rule != -1 {
		t.Errorf("/healthz: %+v; non-resource requests are never faulted", d)
	}
	if d := f.decide(ri("DELETE", "/api/v1/nodes/n1"), ""); !d.Reset || d.ErrorCode != 0 {
		t.Errorf("delete node: %+v, want a reset (and so no error response)", d)
	}
	// A watch of pods matches rule 2 first (verb *), which has no cut; of nodes, rule 3.
	if d := f.decide(ri("GET", "/api/v1/nodes?watch=true"), ""); d.Rule != 3 || d.CutAfter < 100*time.Millisecond || d.CutAfter > 200*time.Millisecond || d.CutAbort {
		t.Errorf("watch nodes: %+v, want rule 3, a clean cut in [100ms, 200ms]", d)
	}
	if d := f.decide(ri("GET", "/api/v1/nodes"), ""); d.Rule != -1 || d.CutAfter != 0 {
		t.Errorf("list nodes: %+v, want no rule (a cut is for watches only)", d)
	}

	// Rates, and the same decisions for the same seed and order.
	run := func(seed uint64) (string, map[int]int, int) {
		f := newFaults(seed, cfg)
		var trace strings.Builder
		codes, slow := map[int]int{}, 0
		for i := range 2000 {
			d := f.decide(ri("GET", fmt.Sprintf("/api/v1/namespaces/ns%d/pods/p%d", i%3, i)), "")
			if d.Rule != 2 {
				t.Fatalf("get pod: %+v, want rule 2", d)
			}
			if d.Latency != 0 {
				slow++
				if d.Latency < 5*time.Millisecond || d.Latency > 9*time.Millisecond {
					t.Fatalf("latency %v not in [5ms, 9ms]", d.Latency)
				}
			}
			codes[d.ErrorCode]++
			fmt.Fprintf(&trace, "%d/%v ", d.ErrorCode, d.Latency)
		}
		return trace.String(), codes, slow
	}
	t1, codes, slow := run(7)
	t2, _, _ := run(7)
	t3, _, _ := run(8)
	if t1 != t2 {
		t.Error("the same seed drew different faults for the same requests")
	}
	if t1 == t3 {
		t.Error("seeds 7 and 8 drew the same faults")
	}
	if errs := codes[500] + codes[503]; errs < 500 || errs > 700 || codes[500] < 200 || codes[503] < 200 {
		t.Errorf("error_rate 0.3 over 2000 requests gave %v", codes)
	}
	if slow < 900 || slow > 1100 {
		t.Errorf("latency_rate 0.5 over 2000 requests delayed %d", slow)
	}

	s := f.snapshot(true)
	want := Stats{Requests: 7, Forwarded: 4, Faults: 3, Errors: map[string]int64{"429": 1, "503": 1}, Resets: 1}
	if fmt.Sprint(s) != fmt.Sprint(want) {
		t.Errorf("stats %+v, want %+v", s, want)
	}
	if s := f.snapshot(false); s.Requests != 0 || len(s.Errors) != 0 {
		t.Errorf("stats after reset: %+v", s)
	}
}

// upstream is a stand-in for kube-apiserver: it records what reaches it and serves a list
// of nodes and a watch of pods that sends one event at once and then one every 50 ms.
type upstream struct {
	srv        *httptest.Server
	mu         sync.Mutex
	seen       []string // METHOD PATH Authorization
	watchEnded chan struct{}
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{watchEnded: make(chan struct{}, 10)}
	u.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen = append(u.seen, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization"))
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Query().Get("watch") != "true" {
			fmt.Fprintf(w, `{"kind":"NodeList","apiVersion":"v1","items":[{"metadata":{"name":"n1"}}]}`)
			return
		}
		defer func() { u.watchEnded <- struct{}{} }()
		rc := http.NewResponseController(w)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			fmt.Fprintf(w, `{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"p%d"}}}`+"\n", i)
			if err := rc.Flush(); err != nil {
				return
			}
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
			}
		}
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) requests() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.seen...)
}

func TestProxy(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "HTTP/1.1", true: "HTTP/2"}[h2], func(t *testing.T) { testProxy(t, h2) })
	}
}

func testProxy(t *testing.T, h2 bool) {
	up := newUpstream(t)
	upURL, _ := url.Parse(up.srv.URL)
	f := newFaults(1, Config{Rules: []Rule{}})
	var logs strings.Builder
	var logMu sync.Mutex
	logger := log.New(writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logs.Write(p)
	}), "", 0)
	transport := upstreamTransport(nil)
	transport.TLSClientConfig = up.srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	px := httptest.NewUnstartedServer(newProxy(upURL, transport, f, logger))
	px.EnableHTTP2 = h2
	px.StartTLS()
	t.Cleanup(px.Close)
	client := px.Client()
	wantProto := map[bool]int{false: 1, true: 2}[h2]
	ctl := httptest.NewServer(controlHandler(f))
	t.Cleanup(ctl.Close)

	do := func(method, path string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, px.URL+path, strings.NewReader(`{}`))
		req.Header.Set("Authorization", "Bearer secret-token")
		res, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		if res.ProtoMajor != wantProto {
			t.Fatalf("%s %s answered over %s", method, path, res.Proto)
		}
		return res
	}
	setFaults := func(cfg string) {
		t.Helper()
		req, _ := http.NewRequest("PUT", ctl.URL+"/faults", strings.NewReader(cfg))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("PUT /faults %s: %s %s", cfg, res.Status, body)
		}
	}

	// Forwarding, with the bearer token.
	res := do("GET", "/api/v1/nodes")
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(body), `"NodeList"`) {
		t.Fatalf("GET nodes: %s %s", res.Status, body)
	}
	if got := up.requests(); len(got) != 1 || got[0] != "GET /api/v1/nodes Bearer secret-token" {
		t.Fatalf("upstream saw %q", got)
	}

	// A 429 Status, which never reaches upstream.
	setFaults(`{"rules":[{"verb":"patch","resource":"pods","error_rate":1,"error_codes":[429],"retry_after_seconds":2}]}`)
	res = do("PATCH", "/api/v1/namespaces/default/pods/p1")
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	var st struct {
		Kind, APIVersion, Status, Message, Reason string
		Code                                      int
		Details                                   struct{ RetryAfterSeconds int }
	}
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("429 body %s: %v", body, err)
	}
	if res.StatusCode != 429 || res.Header.Get("Retry-After") != "2" || res.Header.Get("Content-Type") != "application/json" ||
		st.Kind != "Status" || st.APIVersion != "v1" || st.Status != "Failure" || st.Reason != "TooManyRequests" ||
		st.Code != 429 || st.Details.RetryAfterSeconds != 2 || st.Message == "" {
		t.Fatalf("429: %s %v %s", res.Status, res.Header, body)
	}
	if got := up.requests(); len(got) != 1 {
		t.Fatalf("the faulted PATCH reached upstream: %q", got)
	}
	// Other requests still pass.
	res = do("GET", "/api/v1/namespaces/default/pods/p1")
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("GET pod: %s", res.Status)
	}

	// A watch cut: the first event arrives at once (no buffering), the stream ends cleanly
	// after the cut, and upstream's watch is closed.
	setFaults(`{"rules":[{"verb":"watch","resource":"pods","watch_cut_after_ms":[300,300]}]}`)
	t0 := time.Now()
	res = do("GET", "/api/v1/pods?watch=true")
	sc := bufio.NewScanner(res.Body)
	events := 0
	for sc.Scan() {
		if events == 0 && time.Since(t0) > 200*time.Millisecond {
			t.Errorf("the first watch event took %v to arrive", time.Since(t0))
		}
		events++
	}
	res.Body.Close()
	if err := sc.Err(); err != nil {
		t.Fatalf("the cut watch ended with %v, want a clean end", err)
	}
	if el := time.Since(t0); el < 300*time.Millisecond || el > 2*time.Second || events < 3 {
		t.Fatalf("watch ended after %v with %d events; want a cut at 300ms", el, events)
	}
	select {
	case <-up.watchEnded:
	case <-time.After(2 * time.Second):
		t.Fatal("upstream's watch was not closed by the cut")
	}

	// An aborted watch: the client sees an error, not an end.
	setFaults(`{"rules":[{"verb":"watch","resource":"pods","watch_cut_after_ms":[100],"watch_cut_mode":"abort"}]}`)
	res = do("GET", "/api/v1/pods?watch=true")
	_, err := io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if err == nil {
		t.Fatal("the aborted watch ended cleanly")
	}
	<-up.watchEnded

	// A reset: no response at all.
	setFaults(`{"rules":[{"verb":"delete","resource":"nodes","reset_rate":1}]}`)
	req, _ := http.NewRequest("DELETE", px.URL+"/api/v1/nodes/n1", nil)
	if res, err := client.Do(req); err == nil {
		res.Body.Close()
		t.Fatalf("reset request got %s", res.Status)
	}

	// A 500 on a cluster-scoped GET, and /healthz never faulted.
	setFaults(`{"rules":[{"verb":"*","resource":"*","error_rate":1}]}`)
	res = do("GET", "/api/v1/nodes/n1")
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 500 || !strings.Contains(string(body), `"reason":"InternalError"`) ||
		!strings.Contains(string(body), `"message":"Internal error occurred: injected by faultproxy (rule 0)"`) {
		t.Fatalf("500: %s %s", res.Status, body)
	}
	res = do("GET", "/healthz")
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("/healthz: %s", res.Status)
	}

	sres, err := http.Post(ctl.URL+"/reset-stats", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	var s Stats
	if err := json.NewDecoder(sres.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	sres.Body.Close()
	want := Stats{Requests: 8, Forwarded: 5, Faults: 5, WatchCuts: 2, Resets: 1, Errors: map[string]int64{"429": 1, "500": 1}}
	if fmt.Sprint(s) != fmt.Sprint(want) {
		t.Errorf("stats %+v, want %+v", s, want)
	}
	logMu.Lock()
	defer logMu.Unlock()
	for _, w := range []string{`fault="error 429" rule=0 verb=patch resource=pods namespace=default name="p1"`,
		`fault="watch cut (end) after 300ms"`, `fault="watch cut (abort) after 100ms"`, `fault="reset"`, `fault="error 500"`} {
		if !strings.Contains(logs.String(), w) {
			t.Errorf("the log has no %s:\n%s", w, logs.String())
		}
	}
	if strings.Contains(logs.String(), "ReverseProxy") {
		t.Errorf("the log has more than the faults:\n%s", logs.String())
	}
}

func TestLatency(t *testing.T) {
	up := newUpstream(t)
	upURL, _ := url.Parse(up.srv.URL)
	f := newFaults(1, mustConfig(t, `{"rules":[{"verb":"list","resource":"nodes","latency_ms":[150,150]}]}`))
	transport := upstreamTransport(nil)
	transport.TLSClientConfig = up.srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	px := httptest.NewTLSServer(newProxy(upURL, transport, f, log.New(io.Discard, "", 0)))
	t.Cleanup(px.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", px.URL+"/api/v1/nodes", nil)
	t0 := time.Now()
	res, err := px.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if el := time.Since(t0); res.StatusCode != 200 || el < 150*time.Millisecond {
		t.Fatalf("%s after %v, want 200 after >= 150ms", res.Status, el)
	}
	if s := f.snapshot(false); s.Latency != 1 || s.Forwarded != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestControl(t *testing.T) {
	f := newFaults(1, Config{Rules: []Rule{}})
	ctl := httptest.NewServer(controlHandler(f))
	defer ctl.Close()
	put := func(body string) int {
		req, _ := http.NewRequest("PUT", ctl.URL+"/faults", strings.NewReader(body))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if c := put(`{"rules":[{"verb":"nope"}]}`); c != 400 {
		t.Errorf("an invalid config: %d, want 400", c)
	}
	cfg := `{"rules":[{"verb":"get","resource":"pods","error_rate":0.1,"error_codes":[500]}]}`
	if c := put(cfg); c != 200 {
		t.Fatalf("PUT: %d", c)
	}
	res, err := http.Get(ctl.URL + "/faults")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if strings.TrimSpace(string(body)) != cfg {
		t.Errorf("GET /faults = %s, want %s", body, cfg)
	}
	if res, _ := http.Get(ctl.URL + "/reset-stats"); res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /reset-stats: %s", res.Status)
	}
}

type writerFunc func([]byte) (int, error)

func (w writerFunc) Write(p []byte) (int, error) { return w(p) }
