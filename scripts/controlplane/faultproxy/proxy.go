package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// Stats counts requests and the faults injected into them (GET /stats).
type Stats struct {
	Requests  int64            `json:"requests"`   // every request, faulted or not, resource or not
	Forwarded int64            `json:"forwarded"`  // sent upstream
	Faults    int64            `json:"faults"`     // the sum of the four kinds below
	Errors    map[string]int64 `json:"errors"`     // error responses by status code
	Latency   int64            `json:"latency"`    // requests delayed
	WatchCuts int64            `json:"watch_cuts"` // watch responses ended by the proxy
	Resets    int64            `json:"resets"`     // connections (HTTP/1) or streams (HTTP/2) reset
}

func newStats() Stats { return Stats{Errors: map[string]int64{}} }

// decision is what a request's first matching rule drew for it.
type decision struct {
	Rule       int // index of the matching rule, -1 when none
	Latency    time.Duration
	Reset      bool
	ErrorCode  int // 0: no error response
	RetryAfter int // seconds, for the Retry-After header and details.retryAfterSeconds
	CutAfter   time.Duration
	CutAbort   bool
}

// faults holds the config, the seeded RNG and the stats behind one mutex: the decisions
// are a function of the seed, the config and the order in which requests arrive.
type faults struct {
	mu    sync.Mutex
	rng   *rand.Rand
	cfg   Config
	stats Stats
}

func newFaults(seed uint64, cfg Config) *faults {
	return &faults{rng: rand.New(rand.NewPCG(seed, 0)), cfg: cfg, stats: newStats()}
}

func (f *faults) config() Config {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cfg
}

func (f *faults) setConfig(c Config) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cfg = c
}

func (f *faults) snapshot(reset bool) Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.stats
	s.Errors = make(map[string]int64, len(f.stats.Errors))
	for k, v := range f.stats.Errors {
		s.Errors[k] = v
	}
	if reset {
		f.stats = newStats()
	}
	return s
}

func (f *faults) countWatchCut() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats.WatchCuts++
	f.stats.Faults++
}

// decide counts the request and draws its faults from the first rule that matches it.
// Order within a rule: latency (before anything else), then a reset, else an error
// response, else (for a watch) a cut of the forwarded stream.
func (f *faults) decide(ri requestInfo, userAgent string) decision {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stats.Requests++
	d := decision{Rule: -1}
	if ri.IsResource {
		for i, r := range f.cfg.Rules {
			if r.matches(ri, userAgent) {
				d = f.draw(i, r, ri)
				break
			}
		}
	}
	if d.Latency > 0 {
		f.stats.Latency++
		f.stats.Faults++
	}
	switch {
	case d.Reset:
		f.stats.Resets++
		f.stats.Faults++
	case d.ErrorCode != 0:
		f.stats.Errors[strconv.Itoa(d.ErrorCode)]++
		f.stats.Faults++
	default:
		f.stats.Forwarded++
	}
	return d
}

func (f *faults) draw(i int, r Rule, ri requestInfo) decision {
	d := decision{Rule: i}
	if len(r.LatencyMS) > 0 && f.chance(rateOr1(r.LatencyRate)) {
		d.Latency = f.between(r.LatencyMS)
	}
	if r.ResetRate > 0 && f.chance(r.ResetRate) {
		d.Reset = true
		return d
	}
	if r.ErrorRate > 0 && f.chance(r.ErrorRate) {
		codes := r.ErrorCodes
		if len(codes) == 0 {
			codes = []int{http.StatusInternalServerError}
		}
		d.ErrorCode = codes[f.rng.IntN(len(codes))]
		d.RetryAfter = r.RetryAfterSeconds
		if d.ErrorCode == http.StatusTooManyRequests && d.RetryAfter == 0 {
			d.RetryAfter = 1 // what the API server's max-in-flight filter sends
		}
		return d
	}
	if ri.Verb == "watch" && len(r.WatchCutAfterMS) > 0 && f.chance(rateOr1(r.WatchCutRate)) {
		d.CutAfter = f.between(r.WatchCutAfterMS)
		d.CutAbort = r.WatchCutMode == "abort"
	}
	return d
}

func (f *faults) chance(p float64) bool { return f.rng.Float64() < p }

// between draws a duration in [min, max] milliseconds (both included); [n] is n.
func (f *faults) between(ms []int) time.Duration {
	lo, hi := ms[0], ms[len(ms)-1]
	return time.Duration(lo+f.rng.IntN(hi-lo+1)) * time.Millisecond
}

func rateOr1(p *float64) float64 {
	if p == nil {
		return 1
	}
	return *p
}

// proxy is the fault-injecting reverse proxy: the handler served on --listen.
type proxy struct {
	faults *faults
	rp     *httputil.ReverseProxy
	log    *log.Logger
}

type cutKey struct{}

// cutPlan travels with the outgoing request of a watch that is to be cut.
type cutPlan struct {
	after  time.Duration
	abort  bool
	cancel context.CancelFunc // cancels the upstream request
	onCut  func()
}

func newProxy(upstream *url.URL, transport http.RoundTripper, f *faults, logger *log.Logger) *proxy {
	p := &proxy{faults: f, log: logger}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(upstream) // headers (Authorization in particular) pass through as they came
		},
		Transport:     transport,
		FlushInterval: -1, // every write of a watch reaches the client at once
		ErrorLog:      logger,
		ModifyResponse: func(res *http.Response) error {
			if plan, ok := res.Request.Context().Value(cutKey{}).(*cutPlan); ok && res.StatusCode == http.StatusOK {
				res.Body = newCutBody(res.Body, plan)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the client went away (or a cut watch ended before its headers)
			}
			logger.Printf("upstream error: %s %s: %v", r.Method, r.URL.RequestURI(), err)
			writeStatus(w, http.StatusBadGateway, 0, "faultproxy: upstream: "+err.Error())
		},
	}
	return p
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ri := classify(r)
	d := p.faults.decide(ri, r.UserAgent())
	if d.Rule < 0 {
		p.rp.ServeHTTP(w, r)
		return
	}
	if d.Latency > 0 {
		p.logFault(r, ri, d, fmt.Sprintf("latency %v", d.Latency))
		t := time.NewTimer(d.Latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	switch {
	case d.Reset:
		p.logFault(r, ri, d, "reset")
		resetConnection(w, r)
		return
	case d.ErrorCode != 0:
		p.logFault(r, ri, d, fmt.Sprintf("error %d", d.ErrorCode))
		writeStatus(w, d.ErrorCode, d.RetryAfter, fmt.Sprintf("injected by faultproxy (rule %d)", d.Rule))
		return
	case d.CutAfter > 0:
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		plan := &cutPlan{after: d.CutAfter, abort: d.CutAbort, cancel: cancel}
		plan.onCut = func() {
			p.faults.countWatchCut()
			mode := "end"
			if plan.abort {
				mode = "abort"
			}
			p.logFault(r, ri, d, fmt.Sprintf("watch cut (%s) after %v", mode, plan.after))
		}
		r = r.WithContext(context.WithValue(ctx, cutKey{}, plan))
	}
	p.rp.ServeHTTP(w, r)
}

func (p *proxy) logFault(r *http.Request, ri requestInfo, d decision, what string) {
	ns := ri.Namespace
	if ns == "" {
		ns = "-"
	}
	p.log.Printf("fault=%q rule=%d verb=%s resource=%s namespace=%s name=%q %s %s ua=%q",
		what, d.Rule, ri.Verb, ri.ResourcePath(), ns, ri.Name, r.Method, r.URL.RequestURI(), r.UserAgent())
}

// resetConnection answers nothing: an HTTP/1 connection is closed at the TCP level (the
// client reads ECONNRESET), an HTTP/2 stream is reset (RST_STREAM), as when a load balancer
// or the API server dies mid-request.
func resetConnection(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 {
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			raw := conn
			if tc, ok := conn.(*tls.Conn); ok {
				raw = tc.NetConn()
			}
			if tcp, ok := raw.(*net.TCPConn); ok {
				_ = tcp.SetLinger(0)
			}
			_ = raw.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

// cutBody ends a watch's response body after plan.after: with io.EOF (the client sees the
// stream end cleanly, as when the API server's watch timeout expires) or, with abort, an
// error that makes ReverseProxy break the connection (HTTP/1) or reset the stream (HTTP/2).
type cutBody struct {
	body  io.ReadCloser
	plan  *cutPlan
	timer *time.Timer

	mu     sync.Mutex
	cut    bool
	closed bool
}

func newCutBody(body io.ReadCloser, plan *cutPlan) *cutBody {
	b := &cutBody{body: body, plan: plan}
	b.timer = time.AfterFunc(plan.after, b.fire)
	return b
}

func (b *cutBody) fire() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.cut = true
	b.mu.Unlock()
	b.plan.onCut()
	b.plan.cancel() // unblocks a Read waiting for the next event; upstream sees the watch closed
}

func (b *cutBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	b.mu.Lock()
	cut := b.cut
	b.mu.Unlock()
	if cut {
		if b.plan.abort {
			// Any error makes ReverseProxy abort the response; this one it does not log.
			return n, context.Canceled
		}
		return n, io.EOF
	}
	return n, err
}

func (b *cutBody) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.timer.Stop()
	return b.body.Close()
}

// status is metav1.Status as the API server writes it.
type status struct {
	Kind       string         `json:"kind"`
	APIVersion string         `json:"apiVersion"`
	Metadata   struct{}       `json:"metadata"`
	Status     string         `json:"status"`
	Message    string         `json:"message"`
	Reason     string         `json:"reason,omitempty"`
	Details    *statusDetails `json:"details,omitempty"`
	Code       int            `json:"code"`
}

type statusDetails struct {
	Causes            []statusCause `json:"causes,omitempty"`
	RetryAfterSeconds int           `json:"retryAfterSeconds,omitempty"`
}

type statusCause struct {
	Message string `json:"message"`
}

// reasons are metav1.StatusReason values by code, as k8s.io/apimachinery/pkg/api/errors
// makes them.
var reasons = map[int]string{
	400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
	405: "MethodNotAllowed", 406: "NotAcceptable", 409: "Conflict", 410: "Expired",
	413: "RequestEntityTooLarge", 415: "UnsupportedMediaType", 422: "Invalid",
	429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
}

// writeStatus writes a Failure Status like the API server's for code: 500 as from
// apierrors.NewInternalError, 503 as NewServiceUnavailable, 429 as the max-in-flight
// filter's (with Retry-After), the others as NewGenericServerResponse roughly does.
func writeStatus(w http.ResponseWriter, code, retryAfter int, why string) {
	s := status{Kind: "Status", APIVersion: "v1", Status: "Failure", Reason: reasons[code], Code: code}
	switch code {
	case http.StatusInternalServerError:
		s.Message = "Internal error occurred: " + why
		s.Details = &statusDetails{Causes: []statusCause{{Message: why}}}
	case http.StatusServiceUnavailable:
		s.Message = "the server is currently unable to handle the request: " + why
	case http.StatusTooManyRequests:
		s.Message = "Too many requests, please try again later. (" + why + ")"
	case http.StatusBadGateway:
		s.Message = why
	default:
		s.Message = fmt.Sprintf("%s: %s", http.StatusText(code), why)
	}
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
		if s.Details == nil {
			s.Details = &statusDetails{}
		}
		s.Details.RetryAfterSeconds = retryAfter
	}
	body, _ := json.Marshal(s)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache, private")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}
