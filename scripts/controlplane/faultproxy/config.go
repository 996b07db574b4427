package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Config is the fault configuration: PUT /faults, GET /faults, --config FILE.
type Config struct {
	Rules []Rule `json:"rules"`
}

// Rule matches requests by verb, resource, namespace and user agent; the first matching
// rule of a Config decides the request's faults (a request no rule matches is forwarded).
// Rates are probabilities in [0, 1]; ranges are [min, max] in milliseconds (or [n]).
type Rule struct {
	Verb              string `json:"verb,omitempty"`      // a Kubernetes verb, or "*" (also when empty)
	Resource          string `json:"resource,omitempty"`  // "pods", "pods/eviction", or "*" (also when empty)
	Namespace         string `json:"namespace,omitempty"` // exact; any when empty or "*"
	UserAgentContains string `json:"user_agent_contains,omitempty"`

	ErrorRate         float64 `json:"error_rate,omitempty"`
	ErrorCodes        []int   `json:"error_codes,omitempty"`         // one picked at random; [500] when empty
	RetryAfterSeconds int     `json:"retry_after_seconds,omitempty"` // for 429 (1 when unset); other codes only when set

	LatencyMS   []int    `json:"latency_ms,omitempty"`
	LatencyRate *float64 `json:"latency_rate,omitempty"` // 1 when latency_ms is set and this is not

	ResetRate float64 `json:"reset_rate,omitempty"`

	WatchCutAfterMS []int    `json:"watch_cut_after_ms,omitempty"`
	WatchCutRate    *float64 `json:"watch_cut_rate,omitempty"` // 1 when watch_cut_after_ms is set and this is not
	WatchCutMode    string   `json:"watch_cut_mode,omitempty"` // "end" (default): a clean end of the stream; "abort": broken
}

var knownVerbs = map[string]bool{
	"get": true, "list": true, "watch": true, "create": true, "update": true, "patch": true,
	"delete": true, "deletecollection": true, "proxy": true, "*": true, "": true,
}

// parseConfig decodes and validates a Config; unknown fields are errors, so that a typo in
// a soak test's rules does not silently disable a fault.
func parseConfig(data []byte) (Config, error) {
	var c Config
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("fault config: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Config{}, errors.New("fault config: trailing data after the JSON object")
	}
	if c.Rules == nil {
		c.Rules = []Rule{}
	}
	for i, r := range c.Rules {
		if err := r.validate(); err != nil {
			return Config{}, fmt.Errorf("fault config: rule %d: %w", i, err)
		}
	}
	return c, nil
}

func (r Rule) validate() error {
	if !knownVerbs[r.Verb] {
		return fmt.Errorf("unknown verb %q", r.Verb)
	}
	if strings.Count(r.Resource, "/") > 1 {
		return fmt.Errorf("resource %q: want RESOURCE or RESOURCE/SUBRESOURCE", r.Resource)
	}
	rates := map[string]*float64{"error_rate": &r.ErrorRate, "reset_rate": &r.ResetRate,
		"latency_rate": r.LatencyRate, "watch_cut_rate": r.WatchCutRate}
	for name, p := range rates {
		if p != nil && !(*p >= 0 && *p <= 1) {
			return fmt.Errorf("%s %v is not in [0, 1]", name, *p)
		}
	}
	for _, c := range r.ErrorCodes {
		if c < 400 || c > 599 {
			return fmt.Errorf("error code %d is not in 400..599", c)
		}
	}
	if r.RetryAfterSeconds < 0 {
		return errors.New("retry_after_seconds is negative")
	}
	if err := validRange("latency_ms", r.LatencyMS); err != nil {
		return err
	}
	if r.LatencyRate != nil && *r.LatencyRate > 0 && len(r.LatencyMS) == 0 {
		return errors.New("latency_rate needs latency_ms")
	}
	if err := validRange("watch_cut_after_ms", r.WatchCutAfterMS); err != nil {
		return err
	}
	if r.WatchCutRate != nil && *r.WatchCutRate > 0 && len(r.WatchCutAfterMS) == 0 {
		return errors.New("watch_cut_rate needs watch_cut_after_ms")
	}
	if r.WatchCutMode != "" && r.WatchCutMode != "end" && r.WatchCutMode != "abort" {
		return fmt.Errorf("watch_cut_mode %q: want \"end\" or \"abort\"", r.WatchCutMode)
	}
	return nil
}

func validRange(name string, v []int) error {
	switch {
	case len(v) == 0:
		return nil
	case len(v) > 2:
		return fmt.Errorf("%s: want [min, max] or [n]", name)
	case v[0] < 0 || v[len(v)-1] < v[0]:
		return fmt.Errorf("%s %v: want 0 <= min <= max", name, v)
	}
	return nil
}

// matches reports whether the rule applies to a resource request.
func (r Rule) matches(ri requestInfo, userAgent string) bool {
	return (r.Verb == "" || r.Verb == "*" || r.Verb == ri.Verb) &&
		(r.Resource == "" || r.Resource == "*" || r.Resource == ri.ResourcePath()) &&
		(r.Namespace == "" || r.Namespace == "*" || r.Namespace == ri.Namespace) &&
		(r.UserAgentContains == "" || strings.Contains(userAgent, r.UserAgentContains))
}
