// Command faultproxy is a fault-injecting HTTPS reverse proxy for kube-apiserver: it
// forwards every request to --upstream and, by the rules of its fault config, answers some
// with the API server's error Statuses instead, delays them, resets their connections or
// cuts their watches. A control API on --control changes the rules and reads the counts.
// See README.md.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "faultproxy:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		upstreamURL = flag.String("upstream", "", "the API server's URL, https://HOST:PORT (required)")
		caFile      = flag.String("ca", "", "CA certificate (PEM) that verifies the upstream's serving certificate (required)")
		certFile    = flag.String("cert", "", "serving certificate (PEM) for --listen (required)")
		keyFile     = flag.String("key", "", "private key (PEM) of --cert (required)")
		listenAddr  = flag.String("listen", "127.0.0.1:0", "address of the proxy (TLS; HTTP/1.1 and HTTP/2)")
		controlAddr = flag.String("control", "127.0.0.1:0", "address of the control API (plain HTTP)")
		seed        = flag.Uint64("seed", 1, "seed of the RNG that draws the faults")
		configFile  = flag.String("config", "", "fault config (JSON) to start with; none: no faults")
	)
	flag.Parse()
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", flag.Arg(0))
	}
	if *upstreamURL == "" || *caFile == "" || *certFile == "" || *keyFile == "" {
		flag.Usage()
		return errors.New("--upstream, --ca, --cert and --key are required")
	}
	upstream, err := url.Parse(*upstreamURL)
	if err != nil || upstream.Scheme != "https" || upstream.Host == "" {
		return fmt.Errorf("--upstream %q: want https://HOST:PORT", *upstreamURL)
	}
	caPEM, err := os.ReadFile(*caFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("--ca %s: no PEM certificate in it", *caFile)
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		return err
	}
	cfg := Config{Rules: []Rule{}}
	if *configFile != "" {
		data, err := os.ReadFile(*configFile)
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(data)) == 0 {
			return fmt.Errorf("--config %s is empty; want a JSON fault config, {\"rules\": []} for none", *configFile)
		}
		if cfg, err = parseConfig(data); err != nil {
			return fmt.Errorf("%s: %w", *configFile, err)
		}
	}

	logger := log.New(os.Stderr, "faultproxy: ", log.LstdFlags|log.Lmicroseconds)
	f := newFaults(*seed, cfg)
	p := newProxy(upstream, upstreamTransport(roots), f, logger)

	ln, err := net.Listen("tcp", *listenAddr)
	if err != nil {
		return err
	}
	cln, err := net.Listen("tcp", *controlAddr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		// ServeTLS offers h2 and http/1.1 by ALPN.
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ErrorLog:  logger,
	}
	csrv := &http.Server{Handler: controlHandler(f), ReadHeaderTimeout: 10 * time.Second, ErrorLog: logger}

	line, _ := json.Marshal(struct {
		Listen  string `json:"listen"`
		Control string `json:"control"`
	}{ln.Addr().String(), cln.Addr().String()})
	if _, err := fmt.Fprintf(os.Stdout, "%s\n", line); err != nil {
		return err
	}
	logger.Printf("proxying to %s (seed %d, %d rules)", upstream, *seed, len(cfg.Rules))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, 2)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	go func() { errc <- csrv.Serve(cln) }()
	select {
	case <-ctx.Done():
		logger.Printf("stopping")
	case err := <-errc:
		return err
	}
	// Watches never go idle: give requests under way a moment, then close what is left.
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = csrv.Shutdown(sctx)
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	return nil
}

// upstreamTransport speaks HTTP/1.1 to the API server, one connection per request under
// way as kube-rs does it (and so upgrades, for exec and port-forward, pass through),
// verifying its certificate by roots; no proxy from the environment, no transparent gzip.
func upstreamTransport(roots *x509.CertPool) *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true,
		ForceAttemptHTTP2:     false,
	}
}
