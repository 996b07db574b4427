package main

import (
	"net/http"
	"strconv"
	"strings"
)

// requestInfo is what kube-apiserver's RequestInfoFactory
// (k8s.io/apiserver/pkg/endpoints/request) makes of a request: the verb and the resource
// that RBAC and the audit log see. Non-resource requests (/healthz, /version, /api,
// /apis/GROUP/VERSION discovery, /openapi/...) have IsResource false.
type requestInfo struct {
	IsResource  bool
	Verb        string
	APIGroup    string
	APIVersion  string
	Namespace   string
	Resource    string
	Subresource string
	Name        string
}

// ResourcePath is "pods", or "pods/eviction" for a subresource, as rules name them.
func (ri requestInfo) ResourcePath() string {
	if ri.Subresource != "" {
		return ri.Resource + "/" + ri.Subresource
	}
	return ri.Resource
}

// classify follows RequestInfoFactory.NewRequestInfo for the prefixes /api (the core group)
// and /apis (named groups).
func classify(r *http.Request) requestInfo {
	var ri requestInfo
	parts := splitPath(r.URL.Path)
	if len(parts) < 3 {
		return ri // /api, /api/v1, /apis/GROUP, /healthz, /version, ...
	}
	switch parts[0] {
	case "api":
		parts = parts[1:]
	case "apis":
		parts = parts[1:]
		if len(parts) < 3 {
			return ri // /apis/GROUP/VERSION: discovery
		}
		ri.APIGroup = parts[0]
		parts = parts[1:]
	default:
		return ri // /openapi/v3/..., /livez/etcd, ...
	}
	ri.IsResource = true
	ri.APIVersion = parts[0]
	parts = parts[1:]

	// /watch/... and /proxy/... name the verb in the path.
	if parts[0] == "watch" || parts[0] == "proxy" {
		if len(parts) < 2 {
			return requestInfo{} // the API server rejects these; never fault them
		}
		ri.Verb = parts[0]
		parts = parts[1:]
	} else {
		switch r.Method {
		case http.MethodPost:
			ri.Verb = "create"
		case http.MethodGet, http.MethodHead:
			ri.Verb = "get"
		case http.MethodPut:
			ri.Verb = "update"
		case http.MethodPatch:
			ri.Verb = "patch"
		case http.MethodDelete:
			ri.Verb = "delete"
		}
	}

	// /namespaces/NS/RESOURCE/... is relative to RESOURCE, except the namespace's own
	// subresources (/namespaces/NS/status, /namespaces/NS/finalize).
	if parts[0] == "namespaces" && len(parts) > 1 {
		ri.Namespace = parts[1]
		if len(parts) > 2 && parts[2] != "status" && parts[2] != "finalize" {
			parts = parts[2:]
		}
	}
	ri.Resource = parts[0]
	if len(parts) >= 2 {
		ri.Name = parts[1]
	}
	if len(parts) >= 3 && ri.Verb != "proxy" {
		ri.Subresource = parts[2]
	}

	if ri.Name == "" && ri.Verb == "get" {
		if w, err := strconv.ParseBool(r.URL.Query().Get("watch")); err == nil && w {
			ri.Verb = "watch"
		} else {
			ri.Verb = "list"
		}
	}
	if ri.Name == "" && ri.Verb == "delete" {
		ri.Verb = "deletecollection"
	}
	return ri
}

func splitPath(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}
