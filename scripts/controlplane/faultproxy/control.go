package main

import (
	"encoding/json"
	"io"
	"net/http"
)

// controlHandler serves the control API (plain HTTP, on --control):
//
//	GET  /faults       the fault config
//	PUT  /faults       replace it (the body is a config; answers with it, or 400)
//	GET  /stats        counts of requests and injected faults
//	POST /reset-stats  zero the counts (answers with the counts before)
//	GET  /healthz      "ok"
func controlHandler(f *faults) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /faults", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, f.config())
	})
	mux.HandleFunc("PUT /faults", func(w http.ResponseWriter, r *http.Request) {
		data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		c, err := parseConfig(data)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		f.setConfig(c)
		writeJSON(w, http.StatusOK, c)
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, f.snapshot(false))
	})
	mux.HandleFunc("POST /reset-stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, f.snapshot(true))
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}
